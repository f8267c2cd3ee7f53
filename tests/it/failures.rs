//! The bad hours: failure classification, retry schedule, head-of-line freedom, dead
//! letters and replay, asynchronous completion, the exec connector, session trouble and
//! graceful shutdown.

use std::time::Duration;

use espfd::pipeline::Step;
use espfd::sim::{Sim, SimConfig};

use crate::harness::{account_event, eventually, Harness, TempDir, Test};

fn row_state(h: &Harness, i_event: i64) -> (String, Option<String>, Option<String>, i64) {
    let r = h.reader().get(i_event).unwrap().expect("stored");
    (r.state.to_string(), r.status, r.message, r.attempts)
}

#[test]
fn target_replies_are_classified_transient_or_permanent() {
    let h = Harness::start();
    let transient = [408u16, 425, 429, 500, 502, 503, 504];
    let permanent = [400u16, 403, 404, 409, 410, 422];
    let mut ids = Vec::new();
    for (n, code) in transient.iter().chain(permanent.iter()).enumerate() {
        let i_event = 1000 + n as i64;
        h.sim.script_target(i_event, &[(*code, None)]);
        // One account per event: classification, not ordering, is under test.
        assert_eq!(
            h.post(&account_event(
                "Subscriber/Updated",
                i_event,
                5000 + n as i64
            ))
            .0,
            200
        );
        ids.push((i_event, *code));
    }
    let all: Vec<i64> = ids.iter().map(|(i, _)| *i).collect();
    h.wait_finished(&all, Duration::from_secs(20));
    for (i_event, code) in ids {
        let (state, status, message, attempts) = row_state(&h, i_event);
        if transient.contains(&code) {
            assert_eq!(
                (state.as_str(), attempts),
                ("done", 2),
                "HTTP {code} is retried, then OK"
            );
        } else {
            assert_eq!(
                (state.as_str(), attempts),
                ("failed", 1),
                "HTTP {code} is permanent"
            );
            assert_eq!(status.as_deref(), Some("FAILED"));
            assert!(message.unwrap().contains(&code.to_string()));
        }
    }
}

#[test]
fn target_timeout_and_connection_errors_are_transient() {
    let h = Test::new().env("ESPFD_TARGET_TIMEOUT", "300ms").start();
    h.sim
        .slow_target("account:6001", Duration::from_millis(800));
    assert_eq!(h.post(&account_event("Subscriber/Updated", 1, 6001)).0, 200);
    let steps: Vec<Step> = (0..200)
        .filter_map(|_| h.steps.recv_timeout(Duration::from_millis(20)).ok())
        .collect();
    assert!(
        steps.iter().any(
            |s| matches!(s, Step::Retrying { i_event: 1, reason, .. } if reason.contains("target"))
        ),
        "{steps:?}"
    );
    h.sim.slow_target("account:6001", Duration::ZERO);
    h.wait_finished(&[1], Duration::from_secs(10));

    // A target that is not listening at all.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let h = Harness::with(|raw| {
        raw.set("ESPFD_TARGET_URL", format!("http://{dead}/provision"));
    });
    assert_eq!(h.post(&account_event("Subscriber/Updated", 2, 6002)).0, 200);
    assert!(
        eventually(Duration::from_secs(10), || row_state(&h, 2).3 >= 2),
        "retried after connection refused"
    );
    let (state, _, message, _) = row_state(&h, 2);
    assert_eq!(state, "retry");
    assert!(
        message.unwrap().contains("target"),
        "the message says what failed"
    );
}

#[test]
fn portabilling_faults_are_permanent_and_outages_transient() {
    let h = Harness::start();
    h.sim
        .pb_fault_next("Account/get_account_info", "Server.Account.duplicate_id");
    assert_eq!(
        h.post(&account_event("Subscriber/Updated", 1, 1000889)).0,
        200
    );
    h.wait_finished(&[1], Duration::from_secs(10));
    let (state, _, message, _) = row_state(&h, 1);
    assert_eq!(state, "failed");
    assert!(
        message.unwrap().contains("Server.Account.duplicate_id"),
        "the faultcode is in the message"
    );
    let st = h.sim.statuses();
    assert_eq!(st.last().unwrap().status, "FAILED");
    assert!(st
        .last()
        .unwrap()
        .message
        .contains("Server.Account.duplicate_id"));

    h.sim.set_pb_failure_rate(1.0);
    assert_eq!(
        h.post(&account_event("Subscriber/Updated", 2, 277147)).0,
        200
    );
    assert!(eventually(Duration::from_secs(10), || row_state(&h, 2).0 == "retry"));
    h.sim.set_pb_failure_rate(0.0);
    h.wait_finished(&[2], Duration::from_secs(10));
    assert_eq!(row_state(&h, 2).0, "done");
}

#[test]
fn retry_after_is_honoured() {
    let h = Harness::start();
    h.sim.script_target(7, &[(503, Some("2"))]);
    assert_eq!(
        h.post(&account_event("Subscriber/Updated", 7, 1000889)).0,
        200
    );
    h.wait_finished(&[7], Duration::from_secs(10));
    let calls: Vec<_> = h
        .sim
        .target_calls()
        .into_iter()
        .filter(|c| c.doc["i_event"] == 7)
        .collect();
    assert_eq!(calls.len(), 2);
    let gap = calls[1].started_ms - calls[0].finished_ms;
    assert!(
        gap >= 1900,
        "second try {gap} ms after the first; Retry-After said 2 s (ESPFD_RETRY_INITIAL is 100 ms)"
    );
}

#[test]
fn retry_schedule_survives_a_restart() {
    let mut h = Harness::start();
    h.sim.script_target(8, &[(503, Some("3"))]);
    assert_eq!(
        h.post(&account_event("Subscriber/Updated", 8, 1000889)).0,
        200
    );
    assert!(eventually(Duration::from_secs(5), || row_state(&h, 8).0 == "retry"));
    let due = h.reader().get(8).unwrap().unwrap().next_at;
    h.stop();
    let (tx, rx) = crossbeam_channel::unbounded();
    h.steps = rx;
    h.service = Some(espfd::service::Service::start(&h.config, Some(tx)).unwrap());
    h.wait_finished(&[8], Duration::from_secs(10));
    let calls: Vec<_> = h
        .sim
        .target_calls()
        .into_iter()
        .filter(|c| c.doc["i_event"] == 8)
        .collect();
    assert_eq!(calls.len(), 2);
    assert!(
        calls[1].started_ms >= due,
        "the restarted service kept the stored retry time"
    );
}

#[test]
fn a_waiting_retry_holds_its_entity_but_not_others_on_the_same_lane() {
    // One lane: every entity shares it.
    let h = Test::new().env("ESPFD_WORKERS", "1").start();
    h.sim.script_target(1, &[(503, Some("2"))]);
    assert_eq!(h.post(&account_event("Subscriber/Updated", 1, 7001)).0, 200);
    assert_eq!(h.post(&account_event("Subscriber/Updated", 2, 7001)).0, 200);
    assert_eq!(h.post(&account_event("Subscriber/Updated", 3, 7002)).0, 200);
    h.wait_finished(&[1, 2, 3], Duration::from_secs(15));
    let calls = h.sim.target_calls();
    let t = |i: i64, nth: usize| {
        calls
            .iter()
            .filter(|c| c.doc["i_event"] == i)
            .nth(nth)
            .unwrap()
            .clone()
    };
    assert!(
        t(3, 0).finished_ms < t(1, 1).started_ms,
        "the other entity did not wait for the retry"
    );
    assert!(
        t(2, 0).started_ms >= t(1, 1).finished_ms,
        "the later event of the waiting entity waited"
    );
}

fn events_cmd(state: &TempDir, args: &[&str]) -> (i32, String, String) {
    let run = Test::new()
        .env("ESPFD_STATE_DIR", state.0.display().to_string())
        .args(&["events"])
        .args(args)
        .run();
    (
        run.0.status.code().unwrap_or(-1),
        run.stdout(),
        run.stderr(),
    )
}

#[test]
fn dead_letters_are_listed_shown_and_replayed_while_running() {
    let h = Harness::start();
    h.sim.script_target(21, &[(422, None)]);
    h.sim.script_target(22, &[(404, None)]);
    assert_eq!(
        h.post(&account_event("Subscriber/Updated", 21, 1000889)).0,
        200
    );
    assert_eq!(
        h.post(&account_event("Subscriber/Updated", 22, 277147)).0,
        200
    );
    assert_eq!(
        h.post(&account_event("Subscriber/Updated", 23, 2984)).0,
        200
    );
    h.wait_finished(&[21, 22, 23], Duration::from_secs(10));

    let (code, out, _) = events_cmd(&h.state, &["list", "--failed"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("21") && out.contains("22") && !out.contains("\n23 "),
        "{out}"
    );
    let (_, out, _) = events_cmd(&h.state, &["list", "--failed", "--account", "277147"]);
    assert!(
        out.contains("22") && !out.lines().any(|l| l.starts_with("21 ")),
        "{out}"
    );
    let (code, out, _) = events_cmd(&h.state, &["show", "21"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("state:        failed") && out.contains("422"),
        "{out}"
    );

    let (code, out, _) = events_cmd(&h.state, &["replay", "21"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("queued again: i_event 21"));
    h.wait_finished(&[21], Duration::from_secs(10));
    assert_eq!(row_state(&h, 21).0, "done");

    let (code, _, _) = events_cmd(&h.state, &["replay", "--failed", "--account", "277147"]);
    assert_eq!(code, 0);
    h.wait_finished(&[22], Duration::from_secs(10));
    assert_eq!(row_state(&h, 22).0, "done");
    let oks: Vec<i64> = h
        .sim
        .statuses()
        .iter()
        .filter(|s| s.status == "OK")
        .map(|s| s.i_account)
        .collect();
    assert!(oks.contains(&1000889) && oks.contains(&277147));

    let (code, _, err) = events_cmd(&h.state, &["replay", "999"]);
    assert_ne!(code, 0);
    assert!(err.contains("no event with i_event 999"), "{err}");
}

#[test]
fn dead_letters_replay_with_the_service_stopped() {
    let mut h = Harness::start();
    h.sim.script_target(31, &[(400, None)]);
    assert_eq!(
        h.post(&account_event("Subscriber/Updated", 31, 1000889)).0,
        200
    );
    h.wait_finished(&[31], Duration::from_secs(10));
    h.stop();
    let (code, out, _) = events_cmd(&h.state, &["replay", "--failed"]);
    assert_eq!(code, 0);
    assert!(out.contains("31"));
    let (tx, rx) = crossbeam_channel::unbounded();
    h.steps = rx;
    h.service = Some(espfd::service::Service::start(&h.config, Some(tx)).unwrap());
    h.wait_finished(&[31], Duration::from_secs(10));
    assert_eq!(row_state(&h, 31).0, "done");
    let (_, out, _) = events_cmd(&h.state, &["show", "31"]);
    assert!(out.contains("REPLAY"), "{out}");
}

fn callback(h: &Harness, i_event: i64, token: &str, body: &str) -> u16 {
    let url = format!("{}/events/{i_event}/status", h.base());
    crate::harness::post(&url, Some(&format!("Bearer {token}")), body).0
}

#[test]
fn asynchronous_completion_by_callback() {
    let h = Test::new().env("ESPFD_CALLBACK_TOKEN", "cb-secret").start();
    h.sim.script_target(41, &[(202, None)]);
    h.sim.script_target(42, &[(202, None)]);
    assert_eq!(
        h.post(&account_event("Subscriber/Updated", 41, 1000889)).0,
        200
    );
    assert_eq!(
        h.post(&account_event("Subscriber/Updated", 42, 277147)).0,
        200
    );
    h.wait_finished(&[41, 42], Duration::from_secs(10));
    assert_eq!(row_state(&h, 41).0, "in_progress");
    let first: Vec<String> = h.sim.statuses().iter().map(|s| s.status.clone()).collect();
    assert_eq!(first, vec!["IN_PROGRESS", "IN_PROGRESS"]);

    assert_eq!(callback(&h, 41, "wrong", r#"{"status":"OK"}"#), 401);
    assert_eq!(callback(&h, 999, "cb-secret", r#"{"status":"OK"}"#), 404);
    assert_eq!(callback(&h, 41, "cb-secret", r#"{"status":"MAYBE"}"#), 400);
    assert_eq!(
        callback(
            &h,
            41,
            "cb-secret",
            r#"{"status":"OK","message":"HSS profile active"}"#
        ),
        200
    );
    assert_eq!(
        callback(
            &h,
            42,
            "cb-secret",
            r#"{"status":"FAILED","message":"IMSI unknown"}"#
        ),
        200
    );
    h.wait_finished(&[41, 42], Duration::from_secs(10));
    assert_eq!(
        callback(&h, 41, "cb-secret", r#"{"status":"OK"}"#),
        409,
        "already final"
    );
    let st = h.sim.statuses();
    let last = |acc: i64| {
        st.iter()
            .rev()
            .find(|s| s.i_account == acc)
            .unwrap()
            .clone()
    };
    assert_eq!(
        (
            last(1000889).status.as_str(),
            last(1000889).message.as_str()
        ),
        ("OK", "HSS profile active")
    );
    assert_eq!(
        (last(277147).status.as_str(), last(277147).message.as_str()),
        ("FAILED", "IMSI unknown")
    );
    assert_eq!(row_state(&h, 41).0, "done");
    assert_eq!(row_state(&h, 42).0, "failed");
}

#[test]
fn missing_callback_fails_after_the_async_timeout() {
    let h = Test::new()
        .env("ESPFD_CALLBACK_TOKEN", "cb-secret")
        .env("ESPFD_ASYNC_TIMEOUT", "1s")
        .start();
    h.sim.script_target(51, &[(202, None)]);
    assert_eq!(
        h.post(&account_event("Subscriber/Updated", 51, 1000889)).0,
        200
    );
    assert!(eventually(Duration::from_secs(10), || row_state(&h, 51).0 == "failed"));
    let (_, status, message, _) = row_state(&h, 51);
    assert_eq!(status.as_deref(), Some("FAILED"));
    assert!(message.unwrap().contains("ESPFD_ASYNC_TIMEOUT"));
    assert_eq!(h.sim.statuses().last().unwrap().status, "FAILED");
}

#[test]
fn callback_endpoint_is_off_without_a_token() {
    let h = Harness::start();
    assert_eq!(callback(&h, 1, "", r#"{"status":"OK"}"#), 404);
}

/// A connector script whose behaviour depends on the i_event.
fn exec_script(dir: &TempDir) -> String {
    let script = dir.0.join("connector.sh");
    std::fs::write(
        &script,
        r#"#!/bin/sh
cat > "$(dirname "$0")/doc-$ESPFD_I_EVENT.json"
env | grep '^ESPFD_' | sort > "$(dirname "$0")/env-$ESPFD_I_EVENT.txt"
case "$ESPFD_I_EVENT" in
  61) echo "noise"; echo "provisioned $ESPFD_ENTITY_KIND $ESPFD_ENTITY_ID"; exit 0 ;;
  62) if [ -f "$(dirname "$0")/62.seen" ]; then echo "ok now"; exit 0; fi
      touch "$(dirname "$0")/62.seen"; echo "HSS busy" >&2; exit 75 ;;
  63) echo "unknown subscriber" >&2; exit 3 ;;
  64) if [ -f "$(dirname "$0")/64.seen" ]; then echo "fast now"; exit 0; fi
      touch "$(dirname "$0")/64.seen"; sleep 30; exit 0 ;;
esac
"#,
    )
    .unwrap();
    format!("sh {}", script.display())
}

#[test]
fn exec_connector_exit_codes_and_timeout() {
    let work = TempDir::new("exec");
    let cmd = exec_script(&work);
    let h = Harness::with(|raw| {
        raw.unset("ESPFD_TARGET_URL")
            .set("ESPFD_TARGET_EXEC", cmd)
            .set("ESPFD_EXEC_TIMEOUT", "1s");
    });
    for (i, account) in [(61, 2984), (62, 1000889), (63, 277147), (64, 5555)] {
        assert_eq!(
            h.post(&account_event("Subscriber/Updated", i, account)).0,
            200
        );
    }
    let steps = h.wait_finished(&[61, 62, 63, 64], Duration::from_secs(20));
    let finished = |id: i64| {
        steps
            .iter()
            .find_map(|s| match s {
                Step::Finished {
                    i_event,
                    state,
                    message,
                } if *i_event == id => Some((*state, message.clone())),
                _ => None,
            })
            .unwrap()
    };
    assert_eq!(
        finished(61),
        ("done", "provisioned account 2984".to_string()),
        "exit 0, last line of output"
    );
    assert_eq!(finished(62).0, "done", "exit 75 is retried");
    assert_eq!(row_state(&h, 62).3, 2);
    let (state, message) = finished(63);
    assert_eq!(state, "failed");
    assert!(
        message.contains("exit 3") && message.contains("unknown subscriber"),
        "{message}"
    );
    assert_eq!(
        finished(64).0,
        "done",
        "killed after the timeout, then retried"
    );
    let attempts = h.reader().attempts(64).unwrap();
    assert!(attempts[0].3.contains("ESPFD_EXEC_TIMEOUT"), "{attempts:?}");

    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(work.0.join("doc-61.json")).unwrap())
            .unwrap();
    assert_eq!(doc["i_event"], 61);
    assert_eq!(doc["entity"]["kind"], "account");
    let env = std::fs::read_to_string(work.0.join("env-61.txt")).unwrap();
    assert!(
        !env.contains("PASSWORD") && !env.contains("ESPFD_PB_"),
        "espfd's secrets are not passed to the connector: {env}"
    );
    for line in [
        "ESPFD_I_EVENT=61",
        "ESPFD_EVENT_TYPE=Subscriber/Updated",
        "ESPFD_ENTITY_KIND=account",
        "ESPFD_ENTITY_ID=2984",
        "ESPFD_I_ACCOUNT=2984",
        "ESPFD_ATTEMPT=1",
        "ESPFD_GROUP=HSS",
    ] {
        assert!(env.contains(line), "{line} missing from {env}");
    }
}

#[test]
fn session_is_refreshed_before_expiry_without_a_new_login() {
    let sim = Sim::start(
        "127.0.0.1:0",
        SimConfig {
            session_ttl: Duration::from_secs(2),
            ..SimConfig::default()
        },
    )
    .unwrap();
    let h = Harness::with_sim(sim, |_| {});
    for i in 1..=4 {
        assert_eq!(
            h.post(&account_event("Subscriber/Updated", i, 1000889)).0,
            200
        );
        h.wait_finished(&[i], Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(900));
    }
    assert_eq!(h.sim.logins(), 1);
    assert!(
        !h.sim
            .requests_to("/rest/Session/refresh_access_token")
            .is_empty(),
        "the token was refreshed"
    );
    assert!(h.sim.statuses().iter().all(|s| s.status == "OK"));
}

#[test]
fn refused_login_backs_off_and_says_so() {
    let h = Test::new()
        .env("ESPFD_PB_PASSWORD", "wrong-password")
        .start();
    for i in 1..=6 {
        assert_eq!(
            h.post(&account_event("Subscriber/Updated", i, 1000 + i)).0,
            200
        );
    }
    assert!(eventually(Duration::from_secs(5), || (1..=6)
        .all(|i| row_state(&h, i).0 == "retry")));
    std::thread::sleep(Duration::from_millis(1500));
    let attempts = h.sim.requests_to("/rest/Session/login").len();
    assert_eq!(
        attempts, 1,
        "one refused login, then a pause (never hammer the brute-force lock)"
    );
    let message = row_state(&h, 1).2.unwrap();
    assert!(
        message.contains("login refused") && message.contains("ESPFD_PB_PASSWORD"),
        "{message}"
    );
}

#[test]
fn sigterm_parks_work_in_flight_and_exits_zero() {
    let sim = Sim::start("127.0.0.1:0", SimConfig::default()).unwrap();
    // Longer than the grace: had espfd waited for the call, it would have reported OK.
    sim.slow_target("account:1000889", Duration::from_secs(5));
    let state = TempDir::new("term");
    let test = Test::new()
        .sim_env(&sim, &state)
        .env("ESPFD_SHUTDOWN_GRACE", "1s");
    let mut d = test.spawn();
    let url = format!("http://{}/events", d.addr);
    let auth = crate::harness::basic(crate::harness::USER, crate::harness::PASSWORD);
    assert_eq!(
        crate::harness::post(
            &url,
            Some(&auth),
            &account_event("Subscriber/Updated", 1, 1000889)
        )
        .0,
        200
    );
    assert!(eventually(Duration::from_secs(5), || !sim
        .target_calls()
        .is_empty()));
    d.signal(libc::SIGTERM);
    let status = d.wait();
    assert_eq!(status.code(), Some(0), "clean exit");
    // It stopped at the grace with the call unanswered, and said so.
    assert!(
        sim.statuses().is_empty(),
        "no status reported before the stop"
    );
    assert!(
        d.log()
            .contains("1 event(s) still in flight after ESPFD_SHUTDOWN_GRACE"),
        "{}",
        d.log()
    );

    sim.slow_target("account:1000889", Duration::ZERO);
    let _d = test.spawn();
    let done = eventually(Duration::from_secs(15), || {
        sim.statuses().iter().any(|s| s.status == "OK")
    });
    assert!(done, "the parked event was processed after the restart");
}

#[test]
fn events_show_hides_subscriber_data() {
    let h = Harness::start();
    let body = r#"{"event_type":"Subscriber/Updated","variables":{"i_event":71,"i_account":1000889,"email":"ana@example.com"}}"#;
    assert_eq!(h.post(body).0, 200);
    h.wait_finished(&[71], Duration::from_secs(10));
    let (code, out, _) = events_cmd(&h.state, &["show", "71"]);
    assert_eq!(code, 0);
    assert!(
        !out.contains("ana@example.com") && out.contains(r#""email":"***""#),
        "{out}"
    );
    Test::new()
        .env("ESPFD_STATE_DIR", h.state.0.display().to_string())
        .env("ESPFD_REDACT", "none")
        .args(&["events", "show", "71"])
        .run()
        .stdout_has("ana@example.com");
}

#[test]
fn retries_stop_at_the_max_age_with_failed() {
    let h = Test::new().env("ESPFD_RETRY_MAX_AGE", "1s").start();
    h.sim.set_target_failure_rate(1.0);
    assert_eq!(
        h.post(&account_event("Subscriber/Updated", 81, 1000889)).0,
        200
    );
    h.wait_finished(&[81], Duration::from_secs(10));
    let (state, status, message, attempts) = row_state(&h, 81);
    assert_eq!(
        (state.as_str(), status.as_deref()),
        ("failed", Some("FAILED"))
    );
    assert!(attempts >= 2, "it was retried before giving up");
    let message = message.unwrap();
    assert!(
        message.starts_with(&format!("gave up after {attempts} attempts")),
        "{message}"
    );
    let last = h.sim.statuses().last().unwrap().clone();
    assert_eq!(last.status, "FAILED");
}

#[test]
fn retry_after_zero_does_not_make_a_tight_loop() {
    let h = Test::new().env("ESPFD_RETRY_INITIAL", "500ms").start();
    h.sim
        .script_target(82, &[(503, Some("0")), (429, Some("0"))]);
    assert_eq!(
        h.post(&account_event("Subscriber/Updated", 82, 1000889)).0,
        200
    );
    h.wait_finished(&[82], Duration::from_secs(10));
    let calls: Vec<_> = h
        .sim
        .target_calls()
        .into_iter()
        .filter(|c| c.doc["i_event"] == 82)
        .collect();
    assert_eq!(calls.len(), 3);
    for pair in calls.windows(2) {
        let gap = pair[1].started_ms - pair[0].finished_ms;
        assert!(
            gap >= 450,
            "Retry-After: 0 waited only {gap} ms (ESPFD_RETRY_INITIAL is 500 ms)"
        );
    }
}

#[test]
fn pending_events_move_lanes_when_the_worker_count_changes() {
    let mut h = Test::new().env("ESPFD_WORKERS", "2").start();
    h.sim.set_target_failure_rate(1.0);
    let ids: Vec<i64> = (101..=120).collect();
    for &i in &ids {
        assert_eq!(
            h.post(&account_event("Subscriber/Updated", i, 8000 + i % 7))
                .0,
            200
        );
    }
    assert!(eventually(Duration::from_secs(10), || h
        .sim
        .target_calls()
        .len()
        >= 7));
    h.stop();
    h.sim.set_target_failure_rate(0.0);
    let mut raw = crate::harness::raw_config(&h.sim, &h.state);
    raw.set("ESPFD_WORKERS", "5");
    h.config = raw.validate().unwrap();
    let (tx, rx) = crossbeam_channel::unbounded();
    h.steps = rx;
    h.service = Some(espfd::service::Service::start(&h.config, Some(tx)).unwrap());
    h.wait_finished(&ids, Duration::from_secs(20));
    let rows = h.reader().list(None, None, 100).unwrap();
    assert!(rows.iter().all(|r| r.state == espfd::store::State::Done));
    assert!(
        rows.iter().any(|r| r.lane >= 2),
        "events were re-assigned to the new lanes"
    );
    for r in &rows {
        assert_eq!(r.lane as usize, espfd::store::lane_of(&r.entity, 5));
    }
}

#[test]
fn sigint_stops_the_binary_cleanly() {
    let sim = Sim::start("127.0.0.1:0", SimConfig::default()).unwrap();
    let state = TempDir::new("int");
    let mut d = Test::new().sim_env(&sim, &state).spawn();
    d.signal(libc::SIGINT);
    assert_eq!(d.wait().code(), Some(0));
}

#[test]
fn exec_output_is_bounded_and_its_last_line_is_the_message() {
    let work = TempDir::new("exec-out");
    let script = work.0.join("chatty.sh");
    // 300 KiB of noise on both streams, then the line that matters.
    std::fs::write(
        &script,
        "#!/bin/sh\ncat >/dev/null\nhead -c 307200 /dev/zero | tr '\\0' 'x'\necho\nhead -c 307200 /dev/zero | tr '\\0' 'y' >&2\necho 'provisioned after a lot of talk'\n",
    )
    .unwrap();
    let h = Harness::with(|raw| {
        raw.unset("ESPFD_TARGET_URL")
            .set("ESPFD_TARGET_EXEC", format!("sh {}", script.display()));
    });
    assert_eq!(
        h.post(&account_event("Subscriber/Updated", 91, 1000889)).0,
        200
    );
    let steps = h.wait_finished(&[91], Duration::from_secs(10));
    assert!(
        steps.contains(&Step::Finished {
            i_event: 91,
            state: "done",
            message: "provisioned after a lot of talk".into()
        }),
        "{steps:?}"
    );
    let last = h.sim.statuses().last().unwrap().clone();
    assert_eq!(last.message, "provisioned after a lot of talk");
}

#[test]
fn finished_events_are_deleted_after_the_retention() {
    let h = Test::new().env("ESPFD_RETENTION", "1s").start();
    h.sim.script_target(302, &[(422, None)]);
    for i in [301, 302] {
        assert_eq!(
            h.post(&account_event("Subscriber/Updated", i, 1000889)).0,
            200
        );
    }
    h.wait_finished(&[301, 302], Duration::from_secs(10));
    // One event still waiting for a retry must stay however old it gets.
    h.sim.script_target(303, &[(503, Some("30"))]);
    assert_eq!(
        h.post(&account_event("Subscriber/Updated", 303, 277147)).0,
        200
    );
    assert!(eventually(Duration::from_secs(5), || row_state(&h, 303).0 == "retry"));
    assert!(row_state(&h, 301).0 == "done");
    assert!(
        eventually(Duration::from_secs(5), || h
            .reader()
            .get(301)
            .unwrap()
            .is_none()
            && h.reader().get(302).unwrap().is_none()),
        "done and failed events older than ESPFD_RETENTION are deleted"
    );
    assert!(
        h.reader().attempts(301).unwrap().is_empty(),
        "with their attempts"
    );
    assert_eq!(row_state(&h, 303).0, "retry", "open events are kept");
}
