//! The simulator's outage switches (`/_sim/target`, `/_sim/portabilling`, and
//! `Sim::set_target_mode` / `Sim::set_pb_mode`) as a client sees them over real sockets: a
//! 503, a connection closed without a reply, a request left unanswered until the client gives
//! up; and the counters a benchmark reads.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::{json, Value};

use espfd::sim::{Sim, SimConfig, UpstreamMode};

use crate::harness::agent;

/// How long a client waits for a reply before it gives up, in the blackhole cases.
const GIVE_UP: Duration = Duration::from_millis(400);
/// How long a client waits for a reply that must come.
const PATIENT: Duration = Duration::from_secs(20);

/// What a client saw after sending a request.
#[derive(Debug, PartialEq)]
enum Seen {
    /// An HTTP reply: status and body.
    Reply(u16, String),
    /// The connection ended (closed or reset) before a byte of reply.
    Closed,
    /// Nothing within the client's timeout.
    NoReply,
}

impl Seen {
    fn status(&self) -> u16 {
        match self {
            Seen::Reply(s, _) => *s,
            other => panic!("expected an HTTP reply, saw {other:?}"),
        }
    }
}

fn start() -> Sim {
    Sim::start("127.0.0.1:0", SimConfig::default()).expect("simulator starts")
}

/// Opens a connection and sends one request (closing after it), without reading.
fn send(sim: &Sim, method: &str, path: &str, body: &str) -> TcpStream {
    let mut s = TcpStream::connect(sim.addr()).expect("connects");
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: sim\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).expect("request sent");
    s
}

/// Reads the reply to what [`send`] sent, waiting up to `wait` for its first byte.
fn seen(mut s: TcpStream, wait: Duration) -> Seen {
    s.set_read_timeout(Some(wait)).unwrap();
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => {
                got.extend_from_slice(&chunk[..n]);
                // The rest of a reply that has begun comes without waiting.
                s.set_read_timeout(Some(PATIENT)).unwrap();
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                assert!(got.is_empty(), "a reply stopped half-way: {got:?}");
                return Seen::NoReply;
            }
            // A reset before any byte is a closed connection, as a client sees it.
            Err(_) if got.is_empty() => return Seen::Closed,
            Err(e) => panic!("reply cut off ({e}): {got:?}"),
        }
    }
    if got.is_empty() {
        return Seen::Closed;
    }
    let text = String::from_utf8_lossy(&got).into_owned();
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|r| r.get(..3))
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP reply: {text:?}"));
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    Seen::Reply(status, body.to_string())
}

/// One request, its reply awaited up to `wait`.
fn call(sim: &Sim, method: &str, path: &str, body: &str, wait: Duration) -> Seen {
    seen(send(sim, method, path, body), wait)
}

/// A control request, whose JSON reply must come.
fn control(sim: &Sim, method: &str, path: &str, body: &str) -> (u16, String) {
    match call(sim, method, path, body, PATIENT) {
        Seen::Reply(s, b) => (s, b),
        other => panic!("{method} {path}: {other:?}"),
    }
}

fn set_mode(sim: &Sim, side: &str, mode: &str) -> Value {
    let (status, body) = control(
        sim,
        "POST",
        &format!("/_sim/{side}"),
        &json!({ "mode": mode }).to_string(),
    );
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

fn mode_of(sim: &Sim, side: &str) -> Value {
    let (status, body) = control(sim, "GET", &format!("/_sim/{side}"), "");
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// A request: method, path, body.
type Req = (&'static str, &'static str, &'static str);

/// Requests of each side: (method, path, body). Each answers something other than 503 when
/// its side is up (some refuse the missing credentials, which is an answer too).
const PB: &[Req] = &[
    (
        "POST",
        "/rest/Session/login",
        r#"{"params": {"login": "espfd", "password": "espfd-password"}}"#,
    ),
    ("GET", "/espf/v1/groups", ""),
];
const TARGET: &[Req] = &[
    ("POST", "/target", r#"{"i_event": 7}"#),
    ("GET", "/pyhss/subscriber/imsi/001010000000001", ""),
    ("GET", "/stalker_portal/api/accounts/1", ""),
    ("POST", "/oauth/tenant/oauth2/v2.0/token", ""),
    ("GET", "/dataverse/api/data/v9.2/contacts", ""),
    ("POST", "/CAI3G1.2/services/CAI3G1.2", "<x/>"),
];

/// The requests a switch takes down, and the others.
fn requests_of(side: &str) -> (&'static [Req], &'static [Req]) {
    match side {
        "target" => (TARGET, PB),
        _ => (PB, TARGET),
    }
}

/// Every request of `reqs` answers, and not 503.
fn all_up(sim: &Sim, reqs: &[Req]) {
    for (m, p, b) in reqs {
        let status = call(sim, m, p, b, PATIENT).status();
        assert_ne!(status, 503, "{m} {p}");
    }
}

#[test]
fn mode_503_answers_every_request_of_that_side_503() {
    let sim = start();
    for side in ["target", "portabilling"] {
        let (down, other) = requests_of(side);
        all_up(&sim, down);
        let r = set_mode(&sim, side, "503");
        assert_eq!(r, json!({"mode": "503", "previous": "up", "released": 0}));
        assert_eq!(mode_of(&sim, side), json!({"mode": "503", "held": 0}));
        for (m, p, b) in down {
            match call(&sim, m, p, b, PATIENT) {
                Seen::Reply(503, body) => assert!(body.contains("simulated outage"), "{body}"),
                other => panic!("{side} 503: {m} {p} saw {other:?}"),
            }
        }
        // The other side and the controls carry on.
        all_up(&sim, other);
        assert_eq!(
            control(&sim, "POST", "/_sim/account/1000889", r#"{"blocked": "N"}"#).0,
            200
        );
        set_mode(&sim, side, "up");
        all_up(&sim, down);
    }
}

#[test]
fn mode_reset_closes_every_connection_of_that_side_without_a_reply() {
    let sim = start();
    for side in ["target", "portabilling"] {
        let (down, other) = requests_of(side);
        set_mode(&sim, side, "reset");
        assert_eq!(mode_of(&sim, side)["mode"], "reset");
        for (m, p, b) in down {
            assert_eq!(
                call(&sim, m, p, b, PATIENT),
                Seen::Closed,
                "{side}: {m} {p}"
            );
        }
        all_up(&sim, other);
        set_mode(&sim, side, "up");
        all_up(&sim, down);
    }

    // An HTTP client reports a transport error, not a status.
    sim.set_target_mode(UpstreamMode::Reset);
    let err = agent()
        .post(&sim.target_url())
        .send(r#"{"i_event": 1}"#)
        .expect_err("no reply to read");
    assert!(!matches!(err, ureq::Error::StatusCode(_)), "{err:?}");
    sim.set_target_mode(UpstreamMode::Up);
    let ok = agent().post(&sim.target_url()).send(r#"{"i_event": 1}"#);
    assert_eq!(ok.expect("answers again").status().as_u16(), 200);
}

#[test]
fn blackhole_holds_requests_until_the_side_is_up_again() {
    let sim = start();
    for (side, held) in [
        ("target", Sim::target_held as fn(&Sim) -> usize),
        ("portabilling", Sim::pb_held),
    ] {
        let (down, other) = requests_of(side);
        set_mode(&sim, side, "blackhole");
        // A client that gives up sees nothing; its request stays held (the simulator cannot
        // tell), and so does one from a patient client.
        let (m, p, b) = down[0];
        assert_eq!(call(&sim, m, p, b, GIVE_UP), Seen::NoReply, "{side}");
        let patient = send(&sim, m, p, b);
        assert!(
            sim.wait_for(PATIENT, |s| held(s) == 2),
            "{side}: {}",
            held(&sim)
        );
        for (m, p, b) in &down[1..] {
            assert_eq!(
                call(&sim, m, p, b, GIVE_UP),
                Seen::NoReply,
                "{side}: {m} {p}"
            );
        }
        let n = down.len() + 1;
        assert!(
            sim.wait_for(PATIENT, |s| held(s) == n),
            "{side}: {}",
            held(&sim)
        );

        // Meanwhile the controls and the other side answer.
        assert_eq!(mode_of(&sim, side), json!({"mode": "blackhole", "held": n}));
        assert_eq!(
            control(&sim, "POST", "/_sim/account/4242", r#"{"blocked": "Y"}"#).0,
            200
        );
        assert_eq!(control(&sim, "GET", "/", "").0, 200);
        all_up(&sim, other);

        // Back up: every held request is let go with a 503, new ones are served.
        let r = set_mode(&sim, side, "up");
        assert_eq!(
            r,
            json!({"mode": "up", "previous": "blackhole", "released": n})
        );
        match seen(patient, PATIENT) {
            Seen::Reply(503, body) => assert!(body.contains("held"), "{body}"),
            other => panic!("{side}: the held request saw {other:?}"),
        }
        assert_eq!(held(&sim), 0);
        all_up(&sim, down);
    }
}

#[test]
fn the_rust_switches_and_the_counters() {
    let sim = start();
    assert_eq!(
        (sim.target_mode(), sim.pb_mode()),
        (UpstreamMode::Up, UpstreamMode::Up)
    );

    // Every connection is counted once, whatever it carried.
    let before = sim.connections_accepted();
    for _ in 0..3 {
        drop(TcpStream::connect(sim.addr()).unwrap());
    }
    assert_eq!(call(&sim, "GET", "/", "", PATIENT).status(), 200);
    assert!(
        sim.wait_for(PATIENT, |s| s.connections_accepted() == before + 4),
        "{} after {before}",
        sim.connections_accepted()
    );

    // Calls in flight while PortaBilling is down, side by side.
    sim.set_pb_mode(UpstreamMode::Blackhole);
    assert_eq!(mode_of(&sim, "portabilling")["mode"], "blackhole");
    let held: Vec<TcpStream> = (0..3)
        .map(|_| send(&sim, "POST", "/rest/Session/login", "{}"))
        .collect();
    assert!(
        sim.wait_for(PATIENT, |s| s.pb_held() == 3),
        "{}",
        sim.pb_held()
    );
    assert_eq!(sim.target_held(), 0);
    assert_eq!(mode_of(&sim, "portabilling")["held"], 3);
    // Switching straight to another outage lets them go too, and the new mode applies.
    sim.set_pb_mode(UpstreamMode::Unavailable);
    for s in held {
        assert_eq!(seen(s, PATIENT).status(), 503);
    }
    assert_eq!(sim.pb_held(), 0);
    assert_eq!(sim.pb_mode(), UpstreamMode::Unavailable);
    assert_eq!(mode_of(&sim, "portabilling")["mode"], "503");
    sim.set_pb_mode(UpstreamMode::Up);
    all_up(&sim, PB);

    // Stopping the simulator lets held requests go without a reply.
    sim.set_target_mode(UpstreamMode::Blackhole);
    let s = send(&sim, "POST", "/target", r#"{"i_event": 3}"#);
    assert!(sim.wait_for(PATIENT, |s| s.target_held() == 1));
    sim.shutdown();
    assert_eq!(seen(s, PATIENT), Seen::Closed);
}

#[test]
fn the_switches_refuse_what_they_do_not_understand() {
    let sim = start();
    for side in ["target", "portabilling"] {
        let path = format!("/_sim/{side}");
        for bad in [
            "",
            "not json",
            "[]",
            "{}",
            r#"{"mode": "down"}"#,
            r#"{"mode": 500}"#,
        ] {
            let (status, body) = control(&sim, "POST", &path, bad);
            assert_eq!(status, 400, "{side} {bad:?}: {body}");
            for name in ["\"up\"", "\"503\"", "\"reset\"", "\"blackhole\""] {
                assert!(body.contains(name), "{body}");
            }
        }
        for method in ["PUT", "DELETE", "PATCH"] {
            let (status, body) = control(&sim, method, &path, "");
            assert_eq!(status, 405, "{method} {path}: {body}");
        }
        assert_eq!(control(&sim, "GET", &format!("{path}/more"), "").0, 404);
        assert_eq!(mode_of(&sim, side), json!({"mode": "up", "held": 0}));
        // 503 may be a number.
        assert_eq!(set_mode_raw(&sim, &path, r#"{"mode": 503}"#)["mode"], "503");
    }
    assert_eq!(sim.target_mode(), UpstreamMode::Unavailable);
    assert_eq!(sim.pb_mode(), UpstreamMode::Unavailable);
    // The index and the 404 of an unknown control list the switches.
    let (_, index) = control(&sim, "GET", "/", "");
    let (status, unknown) = control(&sim, "POST", "/_sim/nothing", "{}");
    assert_eq!(status, 404);
    for text in [index, unknown] {
        assert!(text.contains("/_sim/target"), "{text}");
        assert!(text.contains("/_sim/portabilling"), "{text}");
    }
}

fn set_mode_raw(sim: &Sim, path: &str, body: &str) -> Value {
    let (status, body) = control(sim, "POST", path, body);
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// The README's curl lines for the controls ("Rehearse without PortaBilling"), run as written
/// against a simulator: each is understood (200).
#[test]
fn the_readme_controls_work_as_written() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let sim = start();
    let mut ran = Vec::new();
    for line in readme.lines().filter(|l| l.starts_with("curl ")) {
        let Some(at) = line.find("http://127.0.0.1:8090/_sim/") else {
            continue;
        };
        let path = line[at + "http://127.0.0.1:8090".len()..]
            .split_whitespace()
            .next()
            .unwrap();
        let method = match line.split_once("-X ") {
            Some((_, m)) => m.split_whitespace().next().unwrap(),
            None => "GET",
        };
        let body = line
            .split_once("-d '")
            .and_then(|(_, b)| b.split_once('\''))
            .map(|(b, _)| b)
            .unwrap_or("");
        let (status, reply) = control(&sim, method, path, body);
        assert_eq!(status, 200, "{line}: {reply}");
        ran.push(format!("{method} {path}"));
    }
    for want in [
        "POST /_sim/account/1000889",
        "DELETE /_sim/account/1000889",
        "POST /_sim/target",
        "GET /_sim/target",
        "POST /_sim/portabilling",
    ] {
        assert!(ran.iter().any(|r| r == want), "{want} not in {ran:?}");
    }
    // The last lines leave PortaBilling down, as they say.
    assert_eq!(sim.pb_mode(), UpstreamMode::Unavailable);
    assert_eq!(sim.target_mode(), UpstreamMode::Up);
}
