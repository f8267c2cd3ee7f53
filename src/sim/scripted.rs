//! A generic HTTP endpoint under `/api/`, for tests of connectors that speak an external
//! system's own API (the template connector): every method, every path, every body.
//!
//! - Each request is recorded like any other (`Sim::requests`, `Sim::requests_to`).
//! - By default the reply is 200 with the request's own body and `Content-Type` (an echo).
//! - [`Sim::script_path`] queues replies for one method and path: each request there takes
//!   the next one (status and body; a body starting with `{`, `[` or `null` is sent as
//!   `application/json`, anything else as `text/plain`); when the queue is empty, the echo.
//!
//! Not a fake of any real system: the fakes of real APIs are `pyhss.rs`, `stalker.rs`,
//! `dataverse.rs` and `cai3g.rs`.

use std::collections::{HashMap, VecDeque};

use super::Inner;
use crate::http::{Request, Response};

/// Scripted replies, by (method, path).
#[derive(Debug, Default)]
pub(super) struct Scripted {
    replies: HashMap<(String, String), VecDeque<(u16, String)>>,
}

/// Answers a request under `/api/`.
pub(super) fn handle(inner: &Inner, req: &Request) -> Response {
    let next = inner
        .state()
        .scripted
        .replies
        .get_mut(&(req.method.clone(), req.path.clone()))
        .and_then(VecDeque::pop_front);
    match next {
        Some((status, body)) => {
            let json = ["{", "[", "null"]
                .iter()
                .any(|p| body.trim_start().starts_with(p));
            let mut r = Response::text(status, body);
            if json {
                r.headers = vec![("Content-Type".into(), "application/json".into())];
            }
            r
        }
        None => {
            let mut r = Response::text(200, req.body_text());
            if let Some(ct) = req.header("content-type") {
                r.headers = vec![("Content-Type".into(), ct.to_string())];
            }
            r
        }
    }
}

impl super::Sim {
    /// The next requests `method path` (e.g. `GET /api/subscriber/1`) under `/api/` answer
    /// `replies` in order — each a status and a body — then the default echo. Adds to any
    /// replies still queued there.
    pub fn script_path(&self, method: &str, path: &str, replies: &[(u16, &str)]) {
        self.inner
            .state()
            .scripted
            .replies
            .entry((method.to_string(), path.to_string()))
            .or_default()
            .extend(replies.iter().map(|(s, b)| (*s, b.to_string())));
    }
}
