//! Parsing one request from the bytes received so far on a connection.
//!
//! A pure function over a byte slice, so that the connection loop, the tests and the fuzzer
//! (`fuzz/fuzz_targets/request.rs`) all exercise the same code. It does no I/O and keeps no
//! state: the caller appends what it reads to a buffer and asks again.

use std::net::SocketAddr;

use super::limits::Limits;
use super::Request;

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
    /// 400, 411, 413, 417 or 431.
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
/// the body is read), `Transfer-Encoding` is 411, an `Expect` other than `100-continue` is
/// 417, and 400 is anything httparse refuses, a line of the head not ending in CRLF (RFC 9112
/// allows a bare LF to be taken as a line end; espfd does not, so that it never frames a
/// request differently from a proxy in front of it), a `Content-Length` that is not just
/// ASCII digits (no sign, no whitespace other than spaces and tabs around it), conflicting
/// `Content-Length`s and a header value that is not UTF-8. `peer` is recorded in the request.
pub fn parse_request(input: &[u8], peer: SocketAddr, limits: &Limits) -> Result<Parsed, Rejected> {
    let (mut request, head_len, body_len) = match parse_head(input, peer, limits)? {
        Head::Complete {
            request,
            head_len,
            body_len,
        } => (request, head_len, body_len),
        Head::Incomplete => {
            return Ok(Parsed::Incomplete {
                needed: input.len() + 1,
            })
        }
    };
    let total = head_len + body_len;
    if input.len() < total {
        return Ok(Parsed::Incomplete { needed: total });
    }
    request.body = input[head_len..total].to_vec();
    Ok(Parsed::Complete {
        request,
        len: total,
    })
}

/// The head of the request at the start of `input`, once it is complete and acceptable: a
/// [`Request`] with an empty body. The listener shows it to the handler before it asks the
/// client for the body (`Expect: 100-continue`). `None` while the head is incomplete or when
/// [`parse_request`] would refuse it.
pub fn request_head(input: &[u8], peer: SocketAddr, limits: &Limits) -> Option<Request> {
    match parse_head(input, peer, limits) {
        Ok(Head::Complete { request, .. }) => Some(request),
        _ => None,
    }
}

enum Head {
    /// The head is complete: the request without its body, the head's length and the
    /// announced body length (within the limit).
    Complete {
        request: Request,
        head_len: usize,
        body_len: usize,
    },
    Incomplete,
}

/// Whether every LF in `bytes` is preceded by a CR.
fn crlf_only(bytes: &[u8]) -> bool {
    bytes
        .iter()
        .enumerate()
        .all(|(i, &b)| b != b'\n' || (i > 0 && bytes[i - 1] == b'\r'))
}

/// A `Content-Length` value: 1*DIGIT (RFC 9110, 8.6), optional whitespace around it being
/// spaces and tabs only.
fn parse_content_length(value: &str) -> Option<usize> {
    let digits = value.trim_matches([' ', '\t']);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

fn parse_head(input: &[u8], peer: SocketAddr, limits: &Limits) -> Result<Head, Rejected> {
    const BARE_LF: &str = "malformed HTTP request: lines must end in CRLF";
    let mut headers = vec![httparse::EMPTY_HEADER; limits.max_headers.max(1)];
    let mut parsed = httparse::Request::new(&mut headers);
    let head_len = match parsed.parse(input) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            if input.len() > limits.max_header {
                return Err(reject(431, "request head too large"));
            }
            if !crlf_only(input) {
                return Err(reject(400, BARE_LF));
            }
            return Ok(Head::Incomplete);
        }
        Err(httparse::Error::TooManyHeaders) => return Err(reject(431, "too many headers")),
        Err(_) => return Err(reject(400, "malformed HTTP request")),
    };
    if head_len > limits.max_header {
        return Err(reject(431, "request head too large"));
    }
    if !crlf_only(&input[..head_len]) {
        return Err(reject(400, BARE_LF));
    }

    let mut header_list: Vec<(String, String)> = Vec::with_capacity(parsed.headers.len() + 1);
    let mut content_length: Option<usize> = None;
    for h in parsed.headers.iter() {
        let Ok(value) = std::str::from_utf8(h.value) else {
            return Err(reject(400, "header value is not UTF-8"));
        };
        if h.name.eq_ignore_ascii_case("content-length") {
            let n = parse_content_length(value).ok_or(reject(400, "invalid Content-Length"))?;
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
        if h.name.eq_ignore_ascii_case("expect")
            && !value
                .trim_matches([' ', '\t'])
                .eq_ignore_ascii_case("100-continue")
        {
            return Err(reject(417, "only Expect: 100-continue is supported"));
        }
        header_list.push((h.name.to_ascii_lowercase(), value.to_string()));
    }
    let body_len = content_length.unwrap_or(0);
    if body_len > limits.max_body {
        return Err(reject(413, "request body too large"));
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
    let version = parsed.version.unwrap_or(1);
    let keep_alive = if version == 0 {
        connection.contains("keep-alive")
    } else {
        !connection.contains("close")
    };
    Ok(Head::Complete {
        request: Request {
            method,
            path,
            query,
            headers: header_list,
            body: Vec::new(),
            peer,
            keep_alive,
            version,
        },
        head_len,
        body_len,
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
    fn framing_is_strict() {
        let status = |input: &[u8]| match parse(input) {
            Ok(Parsed::Complete { .. }) => 0,
            Ok(Parsed::Incomplete { .. }) => 1,
            Err(r) => r.status,
        };
        let post = |cl: &str| format!("POST / HTTP/1.1\r\nContent-Length: {cl}\r\n\r\n{{}}");
        // A plain number, with spaces or tabs around it, is fine.
        for ok in ["2", " 2 ", "\t2", "02"] {
            assert_eq!(status(post(ok).as_bytes()), 0, "{ok:?}");
        }
        // A sign, Unicode whitespace, other junk: refused.
        for bad in [
            "+2",
            "-0",
            "2\u{a0}",
            "2\u{3000}",
            "\u{2003}2",
            "",
            "2 2",
            "0x2",
            "2,2",
        ] {
            assert_eq!(status(post(bad).as_bytes()), 400, "{bad:?}");
        }
        // Bare LF anywhere in the head; a bare CR.
        for bad in [
            &b"GET / HTTP/1.1\nHost: x\n\n"[..],
            b"GET / HTTP/1.1\r\nHost: x\n\r\n",
            b"GET / HTTP/1.1\nHost: x\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\n\n",
            b"GET / HTTP/1.1\rHost: x\r\n\r\n",
        ] {
            assert_eq!(status(bad), 400, "{:?}", String::from_utf8_lossy(bad));
        }
        // ... also before the head is complete.
        assert_eq!(status(b"GET / HTTP/1.1\nHost: x"), 400);
        assert_eq!(status(b"GET / HTTP/1.1\r\nHost: x"), 1);
        // A body may hold bare LFs.
        assert_eq!(
            status(b"POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\na\nb"),
            0
        );
    }

    #[test]
    fn only_100_continue_is_an_acceptable_expectation() {
        let status = |expect: &str| {
            let input = format!("POST / HTTP/1.1\r\nExpect: {expect}\r\nContent-Length: 2\r\n\r\n");
            match parse(input.as_bytes()) {
                Ok(Parsed::Incomplete { .. }) => 1,
                Ok(Parsed::Complete { .. }) => 0,
                Err(r) => r.status,
            }
        };
        assert_eq!(status("100-continue"), 1);
        assert_eq!(status("100-Continue"), 1);
        assert_eq!(status("200-ok"), 417);
        assert_eq!(status("100-continue, foo"), 417);
    }

    #[test]
    fn the_head_alone_is_available_before_the_body() {
        let input = b"POST /events HTTP/1.1\r\nAuthorization: x\r\nContent-Length: 10\r\n\r\n";
        let head = request_head(input, peer(), &Limits::default()).unwrap();
        assert_eq!(head.path, "/events");
        assert_eq!(head.header("authorization"), Some("x"));
        assert!(head.body.is_empty());
        assert!(request_head(b"POST /events HTTP/1.1\r\n", peer(), &Limits::default()).is_none());
    }

    #[test]
    fn http_1_0_closes_unless_asked() {
        let Ok(Parsed::Complete { request, .. }) = parse(b"GET / HTTP/1.0\r\n\r\n") else {
            panic!()
        };
        assert!(!request.keep_alive);
        assert_eq!(request.version, 0);
        let Ok(Parsed::Complete { request, .. }) =
            parse(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        else {
            panic!()
        };
        assert!(request.keep_alive);
        let Ok(Parsed::Complete { request, .. }) =
            parse(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n")
        else {
            panic!()
        };
        assert!(!request.keep_alive);
    }
}
