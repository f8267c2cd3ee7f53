//! `espfd pause` and `espfd resume`, the real binary writing the store of a service that runs
//! (in this process, or as the binary) or is stopped: while paused no request reaches the
//! simulated PortaBilling, ESPF API or target, yet events are answered 200 and stored, and a
//! completion callback is accepted; after resume what waited is delivered.

use std::time::Duration;

use espfd::sim::{Sim, SimConfig};

use crate::harness::{
    account_event, basic, eventually, post, state_of, Harness, Run, TempDir, Test, PASSWORD, USER,
};
use crate::metrics::get;

const TOKEN: &str = "pause-cb-secret";

/// `espfd <args>` (pause, resume, events ...) on the store in `state`, as an operator runs it.
fn espfd_on(state: &TempDir, args: &[&str]) -> Run {
    Test::new()
        .env("ESPFD_STATE_DIR", state.0.display().to_string())
        .args(args)
        .run()
}

/// The value of `espfd_paused` in a scrape of `base`.
fn paused_gauge(base: &str) -> Option<f64> {
    let (status, _, text) = get(&format!("{base}/metrics"));
    assert_eq!(status, 200);
    text.lines()
        .find_map(|l| l.strip_prefix("espfd_paused "))
        .map(|v| v.trim().parse().unwrap())
}

/// Long enough for a worker that ignored the pause to have looked at the store several
/// times (it does at least once a second), short enough for a test.
const QUIET: Duration = Duration::from_secs(3);

#[test]
fn pause_with_the_service_running_holds_every_upstream_call_until_resume() {
    let h = Harness::with(|raw| {
        raw.set("ESPFD_CALLBACK_TOKEN", TOKEN);
    });
    let base = h.base();
    assert_eq!(paused_gauge(&base), Some(0.0), "present from the start");
    // An event the target accepts with 202: its completion comes while paused.
    h.sim.script_target(7001, &[(202, None)]);
    assert_eq!(
        h.post(&account_event("Subscriber/Updated", 7001, 1000889))
            .0,
        200
    );
    h.wait_finished(&[7001], Duration::from_secs(20));
    assert_eq!(state_of(&h, 7001), "in_progress");

    espfd_on(&h.state, &["pause", "--reason", "HSS upgrade"])
        .code(0)
        .stdout_has("paused by ")
        .stdout_has(": HSS upgrade");
    assert!(
        eventually(Duration::from_secs(2), || paused_gauge(&base) == Some(1.0)),
        "espfd_paused did not become 1 within 2 s"
    );
    let before = h.sim.requests().len();

    let ids = [7002, 7003, 7004];
    for (n, id) in ids.iter().enumerate() {
        let (code, body) = h.post(&account_event(
            "Subscriber/Updated",
            *id,
            1000890 + n as i64,
        ));
        assert_eq!(code, 200, "{body}");
    }
    let (code, body) = post(
        &format!("{base}/events/7001/status"),
        Some(&format!("Bearer {TOKEN}")),
        r#"{"status":"OK","message":"HSS profile active"}"#,
    );
    assert_eq!(code, 200, "completion callback while paused: {body}");
    let (code, _, body) = get(&format!("{base}/readyz"));
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("paused by "), "{body}");
    assert!(body.contains("HSS upgrade"), "{body}");
    espfd_on(&h.state, &["events", "list"])
        .code(0)
        .stdout_has("espfd is paused by ");

    std::thread::sleep(QUIET);
    let during: Vec<String> = h.sim.requests()[before..]
        .iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    assert!(
        during.is_empty(),
        "upstream requests while paused: {during:?}"
    );
    for id in ids {
        assert_eq!(state_of(&h, id), "queued", "i_event {id}");
    }
    // Recorded; its report waits.
    assert_eq!(state_of(&h, 7001), "report");

    espfd_on(&h.state, &["pause"])
        .code(0)
        .stdout_has("already paused by ")
        .stdout_has("HSS upgrade");
    espfd_on(&h.state, &["resume"])
        .code(0)
        .stdout_has("resumed by ");
    h.wait_finished(&ids, Duration::from_secs(20));
    assert!(
        eventually(Duration::from_secs(10), || state_of(&h, 7001) == "done"),
        "7001 is {}",
        state_of(&h, 7001)
    );
    let finals: Vec<String> = h
        .sim
        .statuses()
        .into_iter()
        .filter(|s| s.i_account == 1000889)
        .map(|s| s.status)
        .collect();
    assert_eq!(finals, ["IN_PROGRESS", "OK"]);
    assert_eq!(paused_gauge(&base), Some(0.0));
    espfd_on(&h.state, &["resume"])
        .code(0)
        .stdout_has("not paused");
    let listed = espfd_on(&h.state, &["events", "list"]).code(0);
    assert!(!listed.stdout().contains("paused"), "{}", listed.stdout());
}

#[test]
fn a_service_started_while_paused_says_so_and_delivers_nothing_until_resume() {
    let sim = Sim::start("127.0.0.1:0", SimConfig::default()).unwrap();
    let state = TempDir::new("pause");
    let test = Test::new().sim_env(&sim, &state);
    // A first run creates the store; nothing is paused yet.
    let mut first = test.spawn();
    first.signal(libc::SIGTERM);
    assert!(first.wait().success(), "{}", first.log());
    assert!(!first.log().contains("paused by"), "{}", first.log());

    espfd_on(&state, &["pause", "--reason", "PortaBilling upgrade"])
        .code(0)
        .stdout_has("paused by ");
    let mut d = test.spawn();
    let base = format!("http://{}", d.addr);
    assert!(
        eventually(Duration::from_secs(5), || d
            .log()
            .contains("nothing goes upstream until espfd resume")),
        "{}",
        d.log()
    );
    assert!(d.log().contains("PortaBilling upgrade"), "{}", d.log());
    assert_eq!(paused_gauge(&base), Some(1.0));
    let (code, _, body) = get(&format!("{base}/readyz"));
    assert_eq!((code, body.contains("paused")), (200, true), "{body}");

    let url = format!("{base}/events");
    let auth = basic(USER, PASSWORD);
    for id in [7101, 7102] {
        let (code, body) = post(
            &url,
            Some(&auth),
            &account_event("Subscriber/Updated", id, 1000889),
        );
        assert_eq!(code, 200, "{body}");
    }
    std::thread::sleep(QUIET);
    let seen: Vec<String> = sim
        .requests()
        .iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    assert!(seen.is_empty(), "upstream requests while paused: {seen:?}");
    espfd_on(&state, &["events", "list", "--state", "queued"])
        .code(0)
        .stdout_has("espfd is paused by ")
        .stdout_has("7101")
        .stdout_has("7102");

    espfd_on(&state, &["resume"])
        .code(0)
        .stdout_has("resumed by ");
    assert!(
        sim.wait_for(Duration::from_secs(20), |s| s
            .statuses()
            .iter()
            .filter(|r| r.status == "OK")
            .count()
            == 2),
        "statuses after resume: {:?}\n{}",
        sim.statuses(),
        d.log()
    );
    assert!(
        eventually(Duration::from_secs(5), || d.log().contains("resumed by ")),
        "{}",
        d.log()
    );
    assert_eq!(paused_gauge(&base), Some(0.0));
    d.signal(libc::SIGTERM);
    assert!(d.wait().success(), "{}", d.log());
}

#[test]
fn pause_and_resume_need_a_store_and_say_what_they_did() {
    let state = TempDir::new("pause-none");
    espfd_on(&state, &["pause"])
        .code(1)
        .stderr_has("no event store");
    espfd_on(&state, &["pause", "--bogus"]).code(64);
    espfd_on(&state, &["resume", "--reason", "x"]).code(64);
    Test::new()
        .args(&["pause", "--help"])
        .run()
        .code(0)
        .stdout_has("espfd resume");
}

#[test]
fn the_event_in_flight_finishes_and_an_overdue_in_progress_waits_for_resume() {
    let h = Harness::with(|raw| {
        raw.set("ESPFD_ASYNC_TIMEOUT", "3s");
    });
    let base = h.base();
    // Accepted with 202 and never called back: FAILED once its 3 s have passed, but not
    // while paused (that report is an upstream call too).
    h.sim.script_target(7201, &[(202, None)]);
    assert_eq!(
        h.post(&account_event("Subscriber/Updated", 7201, 1000889))
            .0,
        200
    );
    h.wait_finished(&[7201], Duration::from_secs(20));
    // In the target's hands when the pause comes.
    h.sim
        .slow_target("account:1000894", Duration::from_millis(2500));
    assert_eq!(
        h.post(&account_event("Subscriber/Updated", 7202, 1000894))
            .0,
        200
    );
    assert!(eventually(Duration::from_secs(10), || h
        .sim
        .target_calls()
        .iter()
        .any(|c| c.i_event == Some(7202))));
    espfd_on(&h.state, &["pause", "--reason", "window"]).code(0);
    assert!(eventually(Duration::from_secs(2), || paused_gauge(&base) == Some(1.0)));

    // The delivery in flight ends normally, its status reported.
    h.wait_finished(&[7202], Duration::from_secs(20));
    assert_eq!(state_of(&h, 7202), "done");
    let before = h.sim.requests().len();
    // Well past its deadline for the completion callback.
    let deadline = h.reader().get(7201).unwrap().unwrap().next_at;
    assert!(deadline > 0);
    std::thread::sleep(QUIET);
    while espfd::util::now_ms() < deadline + 1500 {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        h.sim.requests().len(),
        before,
        "upstream requests while paused"
    );
    assert_eq!(state_of(&h, 7201), "in_progress", "its FAILED report waits");

    espfd_on(&h.state, &["resume"]).code(0);
    h.wait_finished(&[7201], Duration::from_secs(20));
    assert_eq!(state_of(&h, 7201), "failed");
    let last = h
        .sim
        .statuses()
        .into_iter()
        .rfind(|s| s.i_account == 1000889);
    assert_eq!(last.map(|s| s.status).as_deref(), Some("FAILED"));
}
