//! Log lines of the real binary: `ESPFD_LOG_FORMAT=json` lines parse as JSON and carry the
//! `i_event`; `ESPFD_REDACT` hides subscriber data a target quotes back; secrets never show.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use espfd::http::Limits;
use espfd::http::{serve, Request, Response, Server};
use espfd::sim::{Sim, SimConfig};
use serde_json::Value;

use crate::harness::{account_event, basic, eventually, post, TempDir, Test, PASSWORD, USER};

/// A target that refuses every document with 422 and quotes the subscriber record back,
/// as real systems do in their error replies.
fn echoing_target() -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let handler = |req: Request| {
        let doc: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
        let reply =
            serde_json::json!({"error": "subscriber rejected", "subscriber": doc["entity"]});
        Response::json(422, &reply)
    };
    serve(
        listener,
        Limits {
            max_body: 1 << 20,
            ..Limits::default()
        },
        Arc::new(handler),
    )
    .unwrap()
}

/// Runs espfd against `sim` (PortaBilling, ESPF) and `target` with `extra` variables, sends
/// one event for account 2984 (Ana Lopez, subscriber@example.com), waits for its status
/// report, stops espfd with SIGTERM and returns its stderr.
fn run_one_event(sim: &Sim, target: &Server, i_event: i64, extra: &[(&str, &str)]) -> String {
    let state = TempDir::new("logs");
    let mut test = Test::new()
        .sim_env(sim, &state)
        .env(
            "ESPFD_TARGET_URL",
            format!("http://{}/provision", target.local_addr()),
        )
        .env("ESPFD_LOG_FORMAT", "json")
        .env("RUST_LOG", "debug");
    for (k, v) in extra {
        test = test.env(k, *v);
    }
    let mut d = test.spawn();
    let url = format!("http://{}/events", d.addr);
    let body = account_event("Subscriber/Updated", i_event, 2984);
    assert_eq!(post(&url, Some(&basic(USER, PASSWORD)), &body).0, 200);
    let reported = eventually(Duration::from_secs(15), || {
        sim.statuses()
            .iter()
            .any(|s| s.i_account == 2984 && s.status == "FAILED")
    });
    d.signal(libc::SIGTERM);
    let status = d.wait();
    let stderr = d.log();
    assert!(
        reported,
        "the event was not reported FAILED; log:\n{stderr}"
    );
    assert!(status.success(), "espfd exit {status:?}:\n{stderr}");
    stderr
}

fn json_lines(stderr: &str) -> Vec<Value> {
    stderr
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l)
                .unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}"))
        })
        .collect()
}

#[test]
fn json_lines_carry_i_event_and_hide_subscriber_data_and_secrets() {
    let sim = Sim::start("127.0.0.1:0", SimConfig::default()).unwrap();
    let target = echoing_target();
    let stderr = run_one_event(&sim, &target, 8801, &[]);
    let lines = json_lines(&stderr);
    for l in &lines {
        for field in ["ts", "level", "target", "msg"] {
            assert!(l.get(field).is_some(), "{field} missing in {l}");
        }
    }
    let story: Vec<&Value> = lines.iter().filter(|l| l["i_event"] == 8801).collect();
    assert!(
        story.len() >= 2,
        "the event's story is findable by i_event: {story:?}\n{stderr}"
    );
    let failed = story
        .iter()
        .find(|l| {
            l["msg"]
                .as_str()
                .unwrap()
                .contains("FAILED: target answered")
        })
        .unwrap_or_else(|| panic!("no FAILED line quoting the target for 8801:\n{stderr}"));
    let msg = failed["msg"].as_str().unwrap();
    assert!(msg.contains(r#""firstname":"***""#), "{msg}");
    assert!(msg.contains(r#""email":"***""#), "{msg}");
    for hidden in ["Ana", "Lopez", "subscriber@example.com"] {
        assert!(
            !stderr.contains(hidden),
            "{hidden} reached the log:\n{stderr}"
        );
    }
    // Secrets never reach a line, not even at debug level.
    let sc = SimConfig::default();
    for secret in [PASSWORD, sc.password.as_str()] {
        assert!(!stderr.contains(secret), "a secret reached the log");
    }
    assert!(!stderr.contains("eyJ"), "an access token reached the log");
}

#[test]
fn redaction_follows_the_setting() {
    let sim = Sim::start("127.0.0.1:0", SimConfig::default()).unwrap();
    let target = echoing_target();
    // Off: the quoted record shows (which is what the default prevents).
    let stderr = run_one_event(&sim, &target, 8802, &[("ESPFD_REDACT", "none")]);
    assert!(stderr.contains("subscriber@example.com"), "{stderr}");
    // Only the named field.
    sim.clear_records();
    let stderr = run_one_event(&sim, &target, 8803, &[("ESPFD_REDACT", "email")]);
    assert!(!stderr.contains("subscriber@example.com"), "{stderr}");
    assert!(stderr.contains("Lopez"), "{stderr}");
}

#[test]
fn rust_log_trace_writes_no_token_and_no_subscriber_record() {
    let sim = Sim::start("127.0.0.1:0", SimConfig::default()).unwrap();
    let target = echoing_target();
    let stderr = run_one_event(&sim, &target, 8804, &[("RUST_LOG", "trace")]);
    // espfd's own detail is there...
    assert!(
        stderr.contains("PortaBilling Account/get_account_info: 200"),
        "{stderr}"
    );
    // ...but nothing a dependency would dump at trace: the session's tokens (every one the
    // simulator saw in an Authorization header), the login password, the subscriber record.
    let tokens: Vec<String> = sim
        .requests()
        .iter()
        .filter_map(|r| {
            r.header("authorization")?
                .strip_prefix("Bearer ")
                .map(str::to_string)
        })
        .collect();
    assert!(!tokens.is_empty(), "espfd used a session");
    for t in &tokens {
        assert!(
            !stderr.contains(t.as_str()),
            "an access token reached the log"
        );
    }
    let sc = SimConfig::default();
    for secret in [PASSWORD, sc.password.as_str()] {
        assert!(!stderr.contains(secret), "a secret reached the log");
    }
    for hidden in ["Ana", "Lopez", "subscriber@example.com"] {
        assert!(!stderr.contains(hidden), "{hidden} reached the log");
    }
}
