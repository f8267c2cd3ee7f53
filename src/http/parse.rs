//! Parsing one request from the bytes received so far on a connection.
//!
//! A pure function over a byte slice, so that the connection loop, the tests and the fuzzer
//! (`fuzz/fuzz_targets/request.rs`) all exercise the same code. It does no I/O and keeps no
//! state: the caller appends what it reads to a buffer and asks again.

use std::net::SocketAddr;

use super::Request;
use crate::config::Limits;

/// What the bytes received so far amount to.
#[derive(Debug)]
pub enum Parsed {
    /// A whole request, which took the first `len` bytes of the input. Bytes after them
    /// belong to the next (pipelined) request.
    Complete { request: Request, len: usize },
    /// The start of a request. Parsing again is worthwhile once the input is at least `needed`
    /// bytes long (the end of the body when the head is complete, one more byte otherwise).
    Incomplete { needed: usize },
}

/// Why a request is refused: the reply status and a one-line reason. The connection is
/// closed after that reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejected {
    /// 400, 411, 413 or 431.
    pub status: u16,
    /// The reply body.
    pub reason: &'static str,
}

fn reject(status: u16, reason: &'static str) -> Rejected {
    Rejected { status, reason }
}

/// Parses the request at the start of `input` under `limits` (head size, body size).
///
/// A head over `limits.max_header` or with more than `limits.max_headers` headers is 431, a body
/// announced over `limits.max_body` is 413 as soon as the head is complete (before any of
/// the body is read), `Transfer-Encoding` is 411, anything httparse refuses, a bad or
/// conflicting `Content-Length` and a header value that is not UTF-8 are 400. `peer` is
/// recorded in the request.
pub fn parse_request(input: &[u8], peer: SocketAddr, limits: &Limits) -> Result<Parsed, Rejected> {
    let mut headers = vec![httparse::EMPTY_HEADER; limits.max_headers.max(1)];
    let mut parsed = httparse::Request::new(&mut headers);
    let head_len = match parsed.parse(input) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            if input.len() > limits.max_header {
                return Err(reject(431, "request head too large"));
            }
            return Ok(Parsed::Incomplete {
                needed: input.len() + 1,
            });
        }
        Err(httparse::Error::TooManyHeaders) => return Err(reject(431, "too many headers")),
        Err(_) => return Err(reject(400, "malformed HTTP request")),
    };
    if head_len > limits.max_header {
        return Err(reject(431, "request head too large"));
    }

    let mut header_list: Vec<(String, String)> = Vec::with_capacity(parsed.headers.len() + 1);
    let mut content_length: Option<usize> = None;
    for h in parsed.headers.iter() {
        let Ok(value) = std::str::from_utf8(h.value) else {
            return Err(reject(400, "header value is not UTF-8"));
        };
        if h.name.eq_ignore_ascii_case("content-length") {
            let n: usize = value
                .trim()
                .parse()
                .map_err(|_| reject(400, "invalid Content-Length"))?;
            if content_length.is_some_and(|c| c != n) {
                return Err(reject(400, "conflicting Content-Length headers"));
            }
            content_length = Some(n);
        }
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(reject(
                411,
                "send the body with Content-Length; Transfer-Encoding is not accepted",
            ));
        }
        header_list.push((h.name.to_ascii_lowercase(), value.to_string()));
    }
    let body_len = content_length.unwrap_or(0);
    if body_len > limits.max_body {
        return Err(reject(413, "request body too large"));
    }
    let total = head_len + body_len;
    if input.len() < total {
        return Ok(Parsed::Incomplete { needed: total });
    }

    let method = parsed.method.unwrap_or("").to_string();
    let target = parsed.path.unwrap_or("/");
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_string(), q.to_string()),
        None => (target.to_string(), String::new()),
    };
    let connection = header_list
        .iter()
        .find(|(k, _)| k == "connection")
        .map(|(_, v)| v.to_ascii_lowercase())
        .unwrap_or_default();
    let keep_alive = if parsed.version == Some(0) {
        connection.contains("keep-alive")
    } else {
        !connection.contains("close")
    };
    Ok(Parsed::Complete {
        request: Request {
            method,
            path,
            query,
            headers: header_list,
            body: input[head_len..total].to_vec(),
            peer,
            keep_alive,
        },
        len: total,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 9))
    }

    fn parse(input: &[u8]) -> Result<Parsed, Rejected> {
        parse_request(input, peer(), &Limits::default())
    }

    #[test]
    fn whole_request_with_a_pipelined_one_behind_it() {
        let input = b"POST /events?x=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\n{}GET /healthz HTTP/1.1\r\n\r\n";
        let Ok(Parsed::Complete { request, len }) = parse(input) else {
            panic!("complete expected")
        };
        assert_eq!(request.method, "POST");
        assert_eq!(
            (request.path.as_str(), request.query.as_str()),
            ("/events", "x=1")
        );
        assert_eq!(request.body, b"{}");
        assert_eq!(request.header("HOST"), Some("a"));
        assert!(request.keep_alive);
        let Ok(Parsed::Complete { request, .. }) = parse(&input[len..]) else {
            panic!("second request expected")
        };
        assert_eq!(request.path, "/healthz");
    }

    #[test]
    fn incomplete_says_how_much_is_needed() {
        let input = b"POST /events HTTP/1.1\r\nContent-Length: 10\r\n\r\n{}";
        let head = input.len() - 2;
        match parse(input) {
            Ok(Parsed::Incomplete { needed }) => assert_eq!(needed, head + 10),
            other => panic!("{other:?}"),
        }
        match parse(b"POST /ev") {
            Ok(Parsed::Incomplete { needed }) => assert_eq!(needed, 9),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn refusals_carry_their_status() {
        let status = |input: &[u8]| parse(input).map(|_| 0).unwrap_or_else(|r| r.status);
        assert_eq!(status(b"\x00\x01 garbage\r\n\r\n"), 400);
        assert_eq!(status(b"POST / HTTP/1.1\r\nContent-Length: x\r\n\r\n"), 400);
        assert_eq!(
            status(b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"),
            400
        );
        assert_eq!(
            status(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"),
            411
        );
        assert_eq!(
            status(b"POST / HTTP/1.1\r\nContent-Length: 9999999\r\n\r\n"),
            413
        );
        let mut many = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..=Limits::default().max_headers {
            many.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert_eq!(status(&many), 431);
        let mut long = b"GET / HTTP/1.1\r\nX: ".to_vec();
        long.resize(Limits::default().max_header + 1, b'a');
        assert_eq!(status(&long), 431);
    }

    #[test]
    fn http_1_0_closes_unless_asked() {
        let Ok(Parsed::Complete { request, .. }) = parse(b"GET / HTTP/1.0\r\n\r\n") else {
            panic!()
        };
        assert!(!request.keep_alive);
        let Ok(Parsed::Complete { request, .. }) =
            parse(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n")
        else {
            panic!()
        };
        assert!(!request.keep_alive);
    }
}
