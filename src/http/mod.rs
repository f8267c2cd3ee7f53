//! A small HTTP/1.1 server: the ingress and the simulators both run on it.
//!
//! Why our own: see the README ("How it works", why no tiny_http). This
//! is a std `TcpListener`, one thread per connection up to a fixed maximum, deadlines on every
//! read and write, caps on the request head and body, and `httparse` for the head; optionally
//! TLS (rustls, [`Tls`]) and an IP allow-list ([`AllowList`]). It is not a general web
//! framework: no chunked request bodies, no compression — ESPF does not need them. It does
//! answer `Expect: 100-continue` and leaves the body out of HEAD replies.

mod allow;
mod limits;
mod parse;
mod server;
mod slots;
mod tls;

pub use allow::AllowList;
pub use limits::Limits;
pub use parse::{parse_request, request_head, Parsed, Rejected};
pub use server::{serve, serve_with, Handler, Options, Server};
pub use tls::{Tls, TlsFiles};

use std::net::SocketAddr;

/// The address a client on this machine connects to for a listener bound to `addr`: a
/// wildcard bind (`0.0.0.0`, `::`) becomes loopback (`127.0.0.1`, `::1`), any other address
/// stays as it is. The port is kept.
pub fn local_address(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V4(a) if a.ip().is_unspecified() => {
            SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, a.port()))
        }
        SocketAddr::V6(a) if a.ip().is_unspecified() => {
            SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, a.port()))
        }
        a => a,
    }
}

/// A parsed request with its whole body.
#[derive(Debug, Clone)]
pub struct Request {
    /// `GET`, `POST`, ...
    pub method: String,
    /// The path without the query string.
    pub path: String,
    /// The query string without `?` (empty when there is none).
    pub query: String,
    /// Header names (lower-cased) and values, in arrival order.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
    /// The client's address.
    pub peer: SocketAddr,
    /// Whether the client wants the connection kept open (HTTP/1.1 default).
    pub keep_alive: bool,
    /// The minor HTTP version: 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub version: u8,
}

impl Request {
    /// The first header named `name` (case-insensitive), if any.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// How many headers named `name` arrived.
    pub fn header_count(&self, name: &str) -> usize {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .count()
    }

    /// The body as UTF-8 text (lossy).
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A reply.
#[derive(Debug, Clone)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Headers other than `Content-Length`, `Connection` and `Date`, which the server adds.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
    /// Close the connection after this reply.
    pub close: bool,
    /// Send nothing at all: close the connection instead of writing this reply, so that the
    /// client sees the connection end where it expected a status line. Only the simulator's
    /// outage switches use it ([`Response::no_reply`]).
    pub no_reply: bool,
}

impl Response {
    /// A reply with a `text/plain` body ending in a newline.
    pub fn text(status: u16, body: impl Into<String>) -> Response {
        let mut body = body.into();
        if !body.ends_with('\n') {
            body.push('\n');
        }
        Response {
            status,
            headers: vec![("Content-Type".into(), "text/plain; charset=utf-8".into())],
            body: body.into_bytes(),
            close: false,
            no_reply: false,
        }
    }

    /// A reply with a JSON body.
    pub fn json(status: u16, value: &serde_json::Value) -> Response {
        Response {
            status,
            headers: vec![(
                "Content-Type".into(),
                "application/json; charset=UTF-8".into(),
            )],
            body: value.to_string().into_bytes(),
            close: false,
            no_reply: false,
        }
    }

    /// Adds a header.
    pub fn with_header(mut self, name: &str, value: impl Into<String>) -> Response {
        self.headers.push((name.to_string(), value.into()));
        self
    }

    /// No reply: the connection is closed without a byte written, like a server that crashed
    /// or a firewall that resets the connection after the request was sent.
    pub fn no_reply() -> Response {
        Response {
            status: 0,
            headers: Vec::new(),
            body: Vec::new(),
            close: true,
            no_reply: true,
        }
    }

    /// Marks the connection to be closed after this reply.
    pub fn closing(mut self) -> Response {
        self.close = true;
        self
    }
}

/// The reason phrase of a status code.
pub fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Content Too Large",
        417 => "Expectation Failed",
        422 => "Unprocessable Content",
        425 => "Too Early",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "Status",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_binds_are_reached_on_loopback() {
        let local = |s: &str| local_address(s.parse().unwrap()).to_string();
        assert_eq!(local("0.0.0.0:8080"), "127.0.0.1:8080");
        assert_eq!(local("[::]:8443"), "[::1]:8443");
        assert_eq!(local("10.1.2.3:80"), "10.1.2.3:80");
        assert_eq!(local("[fe80::1]:80"), "[fe80::1]:80");
    }
}
