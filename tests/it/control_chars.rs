//! Control characters in event data and in a target's reply: refused at intake where they
//! cannot be meant (event types, ids), escaped where they are shown (text log lines,
//! `espfd events list/show`), so that nobody can forge a log line or drive the reader's
//! terminal. And `espfd events show | head` ends quietly.

use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use espfd::http::Limits;
use espfd::http::{serve, Request, Response, Server};
use espfd::sim::{Sim, SimConfig};

use crate::harness::{account_event, basic, eventually, post, sim_env, Harness, TempDir};
use crate::harness::{Espfd, Test, BIN};
use crate::harness::{PASSWORD, USER};

#[test]
fn control_characters_in_event_types_and_ids_are_refused_with_400() {
    let h = Harness::start();
    let cases = [
        (
            r#"{"event_type":"Subscriber/Updated\u0000","variables":{"i_event":71,"i_account":1000889}}"#,
            "event_type contains the control character U+0000",
        ),
        (
            r#"{"event_type":"Subscriber/Updated\n2026-12-01T00:00:00Z INFO  espfd: forged","variables":{"i_event":72,"i_account":1000889}}"#,
            "U+000A",
        ),
        (
            r#"{"event_type":"DID/Updated","variables":{"i_event":73,"number":"12065550123\u0000"}}"#,
            "variables.number contains the control character U+0000",
        ),
    ];
    for (body, reason) in cases {
        let (code, text) = h.post(body);
        assert_eq!(code, 400, "{body}");
        assert!(text.contains(reason), "{text}");
    }
    let reader = h.reader();
    for i_event in [71, 72, 73] {
        assert!(reader.get(i_event).unwrap().is_none(), "{i_event} stored");
    }
}

/// A target that refuses every document with a reply full of control characters: a newline
/// followed by what looks like a log line of its own, ESC sequences and a BEL.
fn hostile_target() -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let handler = |_req: Request| {
        Response::text(
            422,
            "refused\n2026-12-01T00:00:00Z INFO  espfd: forged line\u{1b}[2J\u{1b}]0;owned\u{7}",
        )
    };
    serve(listener, Limits::default(), Arc::new(handler)).unwrap()
}

fn events_cmd(state: &TempDir, args: &[&str]) -> (Option<i32>, String, String) {
    let run = Test::new()
        .env("ESPFD_STATE_DIR", state.0.display().to_string())
        .env("ESPFD_REDACT", "none")
        .args(&["events"])
        .args(args)
        .run();
    (run.0.status.code(), run.stdout(), run.stderr())
}

#[test]
fn a_targets_control_characters_are_escaped_in_text_logs_and_the_events_command() {
    let sim = Sim::start("127.0.0.1:0", SimConfig::default()).unwrap();
    let target = hostile_target();
    let state = TempDir::new("ctl");
    let mut env = sim_env(&sim, &state);
    env.retain(|(k, _)| *k != "ESPFD_LISTEN");
    env.push((
        "ESPFD_TARGET_URL",
        format!("http://{}/provision", target.local_addr()),
    ));
    env.push(("ESPFD_LOG_FORMAT", "text".into()));
    let espfd = Espfd::spawn(&env, None);
    let url = format!("http://{}/events", espfd.addr);
    let body = account_event("Subscriber/Updated", 74, 1000889);
    assert_eq!(post(&url, Some(&basic(USER, PASSWORD)), &body).0, 200);
    assert!(eventually(Duration::from_secs(15), || sim
        .statuses()
        .iter()
        .any(|s| s.status == "FAILED")));
    assert!(eventually(Duration::from_secs(5), || espfd
        .log()
        .contains("i_event=74 Subscriber/Updated FAILED")));

    let log = espfd.log();
    assert!(
        !log.lines().any(|l| l.starts_with("2026-12-01T00:00:00Z")),
        "a forged log line:\n{log}"
    );
    assert!(!log.contains('\u{1b}') && !log.contains('\u{7}'), "{log:?}");
    let failed = log
        .lines()
        .find(|l| l.contains("i_event=74 Subscriber/Updated FAILED"))
        .unwrap();
    assert!(
        failed.contains(r"refused\n2026-12-01T00:00:00Z INFO  espfd: forged line\u{1b}[2J"),
        "{failed}"
    );
    drop(espfd);

    for args in [&["list"][..], &["show", "74"][..]] {
        let (code, out, err) = events_cmd(&state, args);
        assert_eq!(code, Some(0), "{args:?}: {err}");
        assert!(out.contains("74"), "{out}");
        assert!(
            !out.contains('\u{1b}') && !out.contains('\u{7}'),
            "{args:?}: {out:?}"
        );
        assert!(out.contains(r"forged line\u{1b}"), "{args:?}: {out}");
    }
}

#[test]
fn events_show_into_a_closed_pipe_ends_quietly() {
    let h = Harness::start();
    assert_eq!(
        h.post(&account_event("Subscriber/Updated", 75, 1000889)).0,
        200
    );
    h.wait_finished(&[75], Duration::from_secs(10));
    // The reading end is closed before espfd writes a byte, as `| head -0` would.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = Command::new(BIN)
        .args(["events", "show", "75"])
        .env("ESPFD_STATE_DIR", &h.state.0)
        .stdout(Stdio::from(writer))
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.code(), Some(0), "{stderr}");
}
