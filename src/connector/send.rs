//! Sending one request to the target: the agent (timeouts, pool, TLS), the outbound
//! authentication, and the reply as the connectors judge it.
//!
//! The URL connector and every template step send through [`Sender::send`], which adds the
//! outbound authentication (see [`super::auth`]); the agent carries the TLS settings
//! (`ESPFD_TARGET_CA_FILE`, the client certificate). A transport
//! failure (connection refused, timeout, TLS) is a transient [`Failure`]; a reply of any
//! status is a [`Reply`], judged by the caller (see [`super::judge`]).

use std::time::Duration;

use ureq::Agent;

use super::auth::Auth;
use super::ConnectorSettings;
use crate::error::Error;
use crate::outbound::{self, Failure};
use crate::util::Secret;

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
    auth: Auth,
}

impl Sender {
    /// The sender the settings describe; `pool` workers call it at once. A CA file or client
    /// certificate that cannot be used is a configuration error naming its variable.
    pub fn new(settings: &ConnectorSettings) -> Result<Sender, Error> {
        let agent = outbound::agent_with(settings.timeout, settings.pool, &settings.tls)?;
        let auth = Auth::new(&settings.auth, &agent);
        Ok(Sender { agent, auth })
    }

    /// Sends `req`, with the configured outbound authentication when `authenticate` (unless
    /// the request sets that header itself). An OAuth 2.0 token the target answers 401 to is
    /// renewed once and the request sent again; a second 401 is the reply. A token that
    /// cannot be had is a transient failure.
    pub fn send(&self, req: &OutRequest, authenticate: bool) -> Result<Reply, Failure> {
        if !authenticate {
            return self.send_once(req, None);
        }
        let Some((name, value, generation)) = self.auth.header_for(req)? else {
            return self.send_once(req, None);
        };
        let reply = self.send_once(req, Some((&name, &value)))?;
        match generation {
            Some(generation) if reply.status == 401 => {
                // The connectors send the event's id as Idempotency-Key; name it when there.
                let event = req
                    .header("Idempotency-Key")
                    .map(|i| format!("i_event={i} "))
                    .unwrap_or_default();
                log::info!(
                    "{event}target {} answered 401 to the OAuth 2.0 token; fetching a new one and sending again",
                    req.url
                );
                let (name, value) = self.auth.reauthorize(generation)?;
                self.send_once(req, Some((&name, &value)))
            }
            _ => Ok(reply),
        }
    }

    /// The header the outbound authentication sets (`Authorization`, or the name of
    /// `ESPFD_TARGET_HEADER`), for `espfd render` to list with its value masked.
    pub fn auth_header(&self) -> Option<String> {
        self.auth.header_name().map(str::to_string)
    }

    /// For `espfd check`: with OAuth 2.0, a token is fetched now and the line says so
    /// (`OAuth 2.0 token fetched from <url> (expires in N s)`); otherwise it says what is
    /// configured. `Err` says why no token could be had.
    pub fn check_auth(&self) -> Result<String, String> {
        self.auth.check()
    }

    fn send_once(&self, req: &OutRequest, auth: Option<(&str, &Secret)>) -> Result<Reply, Failure> {
        let mut builder = ureq::http::Request::builder()
            .method(req.method.as_str())
            .uri(req.url.as_str());
        for (name, value) in &req.headers {
            builder = builder.header(name.as_str(), value.as_str());
        }
        if let Some((name, value)) = auth {
            builder = builder.header(name, value.0.as_str());
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
