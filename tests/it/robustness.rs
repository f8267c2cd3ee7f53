//! Bad input never panics and never hangs the listener: malformed JSON, wrong types, huge
//! heads and bodies, truncated requests, clients that connect and say nothing.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use crate::harness::{basic, Harness, Test, PASSWORD, USER};
use crate::support::{peer_state, read_until_closed, Peer};

fn raw_exchange(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = s.write_all(bytes);
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

fn healthy(addr: SocketAddr) -> bool {
    raw_exchange(
        addr,
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .starts_with("HTTP/1.1 200")
}

#[test]
fn hostile_requests_get_4xx_and_the_listener_stays_up() {
    let h = Test::new().env("ESPFD_READ_TIMEOUT", "1s").start();
    let addr = h.service.as_ref().unwrap().local_addr();
    let auth = basic(USER, PASSWORD);
    let post = |body: &str| {
        format!("POST /events HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\nContent-Length: {}\r\n\r\n{body}", body.len())
    };
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"GARBAGE\r\n\r\n".to_vec(), "400"),
        (b"\x00\x01\x02\x03\r\n\r\n".to_vec(), "400"),
        (
            post("{\"event_type\":[1,2],\"variables\":{}}").into_bytes(),
            "400",
        ),
        (
            post("{\"event_type\":\"X\",\"variables\":{\"i_event\":1e400}}").into_bytes(),
            "400",
        ),
        (post(&"[".repeat(10_000)).into_bytes(), "400"),
        (
            post("{\"event_type\":\"X\",\"variables\":{\"i_event\":99999999999999999999999}}")
                .into_bytes(),
            "400",
        ),
        (
            format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(1 << 20)).into_bytes(),
            "431",
        ),
        (
            format!("POST /events HTTP/1.1\r\n{}\r\n", "X-A: b\r\n".repeat(100)).into_bytes(),
            "431",
        ),
        (
            b"POST /events HTTP/1.1\r\nContent-Length: abc\r\n\r\n".to_vec(),
            "400",
        ),
        (
            b"POST /events HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello"
                .to_vec(),
            "400",
        ),
        (
            b"POST /events HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n".to_vec(),
            "400",
        ),
        (
            b"POST /events HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
                .to_vec(),
            "411",
        ),
        (
            b"POST /events HTTP/1.1\r\nContent-Length: 100000000\r\n\r\n".to_vec(),
            "413",
        ),
        (
            b"POST /events HTTP/1.1\r\nX: \xff\xfe\r\nContent-Length: 0\r\n\r\n".to_vec(),
            "400",
        ),
    ];
    for (bytes, want) in cases {
        let reply = raw_exchange(addr, &bytes);
        assert!(
            reply.starts_with(&format!("HTTP/1.1 {want}")),
            "{:?} -> {reply:?}",
            String::from_utf8_lossy(&bytes[..bytes.len().min(80)])
        );
    }
    // Truncated body: the client promises more than it sends and closes.
    let reply = raw_exchange(
        addr,
        b"POST /events HTTP/1.1\r\nContent-Length: 50\r\n\r\n{\"event_",
    );
    assert!(
        reply.is_empty() || reply.starts_with("HTTP/1.1 4"),
        "{reply}"
    );
    assert!(healthy(addr));
    assert_eq!(h.reader().total_count().unwrap(), 0);
}

#[test]
fn silent_and_trickling_clients_are_cut_off_and_do_not_delay_others() {
    let h = Test::new()
        .env("ESPFD_READ_TIMEOUT", "1s")
        .env("ESPFD_IDLE_TIMEOUT", "1s")
        .start();
    let addr = h.service.as_ref().unwrap().local_addr();
    // Connects and says nothing.
    let mut silent = TcpStream::connect(addr).unwrap();
    // Starts a request and then stalls.
    let mut stalled = TcpStream::connect(addr).unwrap();
    stalled
        .write_all(b"POST /events HTTP/1.1\r\nContent-Le")
        .unwrap();

    // Another client is answered while both are still connected.
    assert!(healthy(addr));
    assert_eq!(
        peer_state(&silent),
        Peer::Open,
        "answered before the cut-offs"
    );
    assert_eq!(
        peer_state(&stalled),
        Peer::Open,
        "answered before the cut-offs"
    );

    // The silent one is closed by espfd (end of stream, not the test's read timeout),
    // without a word.
    let (got, closed) = read_until_closed(&mut silent, Duration::from_secs(5));
    assert!(closed, "idle connection not closed");
    assert!(got.is_empty(), "idle close is silent: {got:?}");

    stalled
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut buf = String::new();
    let _ = stalled.read_to_string(&mut buf);
    assert!(buf.starts_with("HTTP/1.1 408"), "{buf}");
}

#[test]
fn keep_alive_serves_many_requests_on_one_connection() {
    let h = Harness::start();
    let addr = h.service.as_ref().unwrap().local_addr();
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let auth = basic(USER, PASSWORD);
    // Two requests pipelined in one write, then one more.
    let mk = |i: i64| {
        let body = crate::harness::account_event("Subscriber/Updated", i, 1000889);
        format!("POST /events HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\nContent-Length: {}\r\n\r\n{body}", body.len())
    };
    s.write_all(format!("{}{}", mk(1), mk(2)).as_bytes())
        .unwrap();
    s.write_all(mk(3).as_bytes()).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while got.windows(15).filter(|w| w == b"HTTP/1.1 200 OK").count() < 3 {
        let n = s.read(&mut buf).unwrap();
        assert!(
            n > 0,
            "connection closed early: {}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
    }
    assert_eq!(h.reader().total_count().unwrap(), 3);
}

#[test]
fn head_replies_carry_no_body_and_expect_continue_is_answered() {
    let h = Harness::start();
    let addr = h.service.as_ref().unwrap().local_addr();
    let reply = raw_exchange(
        addr,
        b"HEAD /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(reply.contains("Content-Length: 3"), "{reply}");
    assert!(
        reply.ends_with("\r\n\r\n"),
        "no body after the head: {reply:?}"
    );

    // A client that waits for 100 Continue before sending its body (curl does so for large
    // bodies) is not left waiting.
    let body = crate::harness::account_event("Subscriber/Updated", 88, 1000889);
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let auth = basic(USER, PASSWORD);
    write!(
        s,
        "POST /events HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    let mut buf = [0u8; 256];
    let n = s.read(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 100 Continue"));
    s.write_all(body.as_bytes()).unwrap();
    let n = s.read(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    assert!(h.reader().get(88).unwrap().is_some());
}

/// RFC 9112 framing, strictly: behind a proxy that frames differently, leniency here would
/// be request smuggling. Each is refused with 400 and nothing is stored.
#[test]
fn lenient_framing_is_refused_with_400() {
    let h = Harness::start();
    let addr = h.service.as_ref().unwrap().local_addr();
    let auth = basic(USER, PASSWORD);
    let body = crate::harness::account_event("Subscriber/Updated", 77, 1000889);
    let with_length = |cl: &str| {
        format!(
            "POST /events HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\nContent-Length: {cl}\r\n\r\n{body}"
        )
        .into_bytes()
    };
    let n = body.len();
    // The well-formed request is taken (as a control: the cases below differ from it only
    // in the one detail).
    let control = |i_event: i64| {
        let body = crate::harness::account_event("Subscriber/Updated", i_event, 1000889);
        format!(
            "POST /events HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    };
    let reply = raw_exchange(addr, control(76).as_bytes());
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "Content-Length with a plus sign",
            with_length(&format!("+{n}")),
        ),
        (
            "Content-Length then NO-BREAK SPACE",
            with_length(&format!("{n}\u{a0}")),
        ),
        (
            "Content-Length then IDEOGRAPHIC SPACE",
            with_length(&format!("{n}\u{3000}")),
        ),
        (
            "bare LF line endings",
            control(77).replace("\r\n", "\n").into_bytes(),
        ),
        (
            "one bare LF among CRLFs",
            control(77)
                .replacen("Host: x\r\n", "Host: x\n", 1)
                .into_bytes(),
        ),
    ];
    for (case, bytes) in cases {
        let reply = raw_exchange(addr, &bytes);
        assert!(reply.starts_with("HTTP/1.1 400"), "{case}: {reply:?}");
    }
    assert!(h.reader().get(77).unwrap().is_none());
    assert_eq!(h.reader().total_count().unwrap(), 1);
}

#[test]
fn expect_continue_with_wrong_credentials_gets_401_before_the_body_is_asked_for() {
    let h = Harness::start();
    let addr = h.service.as_ref().unwrap().local_addr();
    let body = crate::harness::account_event("Subscriber/Updated", 89, 1000889);
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let wrong = basic(USER, "not-the-password");
    write!(
        s,
        "POST /events HTTP/1.1\r\nHost: x\r\nAuthorization: {wrong}\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    // The first thing back is the final 401, not an invitation to send the body.
    let (status, head, _) = crate::support::read_reply(&mut s).expect("a reply");
    assert_eq!(status, 401, "{head}");
    assert!(head.contains("WWW-Authenticate: Basic"), "{head}");
    assert!(head.contains("Connection: close"), "{head}");
    // The body was never read, so the connection is not reused.
    let (rest, closed) = crate::support::read_until_closed(&mut s, Duration::from_secs(5));
    assert!(
        closed && rest.is_empty(),
        "{:?}",
        String::from_utf8_lossy(&rest)
    );
    assert!(h.reader().get(89).unwrap().is_none());
}

#[test]
fn an_unsupported_expectation_gets_417() {
    let h = Harness::start();
    let addr = h.service.as_ref().unwrap().local_addr();
    let auth = basic(USER, PASSWORD);
    let body = crate::harness::account_event("Subscriber/Updated", 90, 1000889);
    let reply = raw_exchange(
        addr,
        format!(
            "POST /events HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\nExpect: 200-ok\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    );
    assert!(
        reply.starts_with("HTTP/1.1 417 Expectation Failed"),
        "{reply}"
    );
    assert!(h.reader().get(90).unwrap().is_none());
}

#[test]
fn an_http_1_0_keep_alive_reply_says_keep_alive() {
    let h = Harness::start();
    let addr = h.service.as_ref().unwrap().local_addr();
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    for _ in 0..2 {
        s.write_all(b"GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            .unwrap();
        let (status, head, body) = crate::support::read_reply(&mut s).expect("a reply");
        assert_eq!((status, body.trim()), (200, "ok"));
        assert!(head.contains("\r\nConnection: keep-alive\r\n"), "{head}");
    }
    // Without the header, HTTP/1.0 closes.
    let reply = raw_exchange(addr, b"GET /healthz HTTP/1.0\r\n\r\n");
    assert!(reply.contains("\r\nConnection: close\r\n"), "{reply}");
}
