//! Asynchronous completion when the target is quick: its callback may come while the
//! delivery is still in flight, while the IN_PROGRESS report is slow, or while the ESPF API
//! is down. Whatever the timing, the callback is accepted once the target has the event, and
//! PortaBilling ends on the final status, reported after IN_PROGRESS.

use std::time::Duration;

use espfd::sim::{CallbackTiming, Sim, SimConfig};

use crate::harness::Espfd;
use crate::harness::{
    account_event, basic, eventually, post, sim_env, state_of, Harness, TempDir, PASSWORD, USER,
};

const TOKEN: &str = "cb-secret";

fn harness() -> Harness {
    Harness::with(|raw| {
        raw.set("ESPFD_CALLBACK_TOKEN", TOKEN);
    })
}

/// The statuses the ESPF API accepted for `i_account`, in order.
fn statuses_of(sim: &Sim, i_account: i64) -> Vec<String> {
    sim.statuses()
        .into_iter()
        .filter(|s| s.i_account == i_account)
        .map(|s| s.status)
        .collect()
}

fn callback(base: &str, i_event: i64, body: &str) -> (u16, String) {
    let url = format!("{base}/events/{i_event}/status");
    post(&url, Some(&format!("Bearer {TOKEN}")), body)
}

#[test]
fn callback_right_after_the_202_while_the_in_progress_report_is_slow() {
    let h = harness();
    // The IN_PROGRESS report takes a second: the target's callback arrives during it.
    h.sim.set_status_delay(Duration::from_secs(1));
    h.sim.script_target(61, &[(202, None)]);
    h.sim.script_callback(
        61,
        &h.base(),
        TOKEN,
        CallbackTiming::AfterReply,
        "OK",
        "HSS profile active",
    );
    assert_eq!(
        h.post(&account_event("Subscriber/Updated", 61, 1000889)).0,
        200
    );
    assert!(
        eventually(Duration::from_secs(20), || state_of(&h, 61) == "done"),
        "state {}",
        state_of(&h, 61)
    );
    assert_eq!(h.sim.callback_replies(), vec![(61, 200)]);
    assert_eq!(statuses_of(&h.sim, 1000889), vec!["IN_PROGRESS", "OK"]);
    let last = h.sim.statuses().last().unwrap().clone();
    assert_eq!(last.message, "HSS profile active");
    let (code, body) = callback(&h.base(), 61, r#"{"status":"OK"}"#);
    assert_eq!(code, 409, "a second callback: {body}");
    assert!(body.contains("done"), "{body}");
}

#[test]
fn callback_while_the_espf_api_is_down_is_reported_once_it_is_back() {
    let h = harness();
    h.sim.set_status_down(true);
    h.sim.script_target(62, &[(202, None)]);
    h.sim.script_callback(
        62,
        &h.base(),
        TOKEN,
        CallbackTiming::AfterReply,
        "FAILED",
        "IMSI unknown",
    );
    assert_eq!(
        h.post(&account_event("Subscriber/Updated", 62, 277147)).0,
        200
    );
    assert!(eventually(Duration::from_secs(20), || !h
        .sim
        .callback_replies()
        .is_empty()));
    assert_eq!(h.sim.callback_replies(), vec![(62, 200)]);
    // Waiting for the IN_PROGRESS report; a second callback is refused.
    assert!(eventually(Duration::from_secs(10), || state_of(&h, 62) == "report"));
    let (code, body) = callback(&h.base(), 62, r#"{"status":"OK"}"#);
    assert_eq!(code, 409, "{body}");
    assert!(body.contains("already recorded"), "{body}");
    assert!(statuses_of(&h.sim, 277147).is_empty());

    h.sim.set_status_down(false);
    assert!(
        eventually(Duration::from_secs(20), || state_of(&h, 62) == "failed"),
        "state {}",
        state_of(&h, 62)
    );
    assert_eq!(statuses_of(&h.sim, 277147), vec!["IN_PROGRESS", "FAILED"]);
    assert_eq!(h.sim.statuses().last().unwrap().message, "IMSI unknown");
}

#[test]
fn callback_before_the_202_reply_is_applied_after_in_progress() {
    let h = harness();
    h.sim.script_target(63, &[(202, None)]);
    h.sim.script_callback(
        63,
        &h.base(),
        TOKEN,
        CallbackTiming::BeforeReply,
        "OK",
        "done before the reply",
    );
    assert_eq!(
        h.post(&account_event("Subscriber/Updated", 63, 1000889)).0,
        200
    );
    assert!(
        eventually(Duration::from_secs(20), || state_of(&h, 63) == "done"),
        "state {}",
        state_of(&h, 63)
    );
    assert_eq!(h.sim.callback_replies(), vec![(63, 200)]);
    assert_eq!(statuses_of(&h.sim, 1000889), vec!["IN_PROGRESS", "OK"]);
    assert_eq!(
        h.sim.statuses().last().unwrap().message,
        "done before the reply"
    );
}

#[test]
fn callback_before_a_reply_that_is_not_202_is_ignored() {
    let h = harness();
    // The target calls back, then answers 503: the delivery failed, so the callback does
    // not count; the retry's own 200 decides.
    h.sim.script_target(64, &[(503, None)]);
    h.sim.script_callback(
        64,
        &h.base(),
        TOKEN,
        CallbackTiming::BeforeReply,
        "OK",
        "from the callback",
    );
    assert_eq!(
        h.post(&account_event("Subscriber/Updated", 64, 1000889)).0,
        200
    );
    assert!(
        eventually(Duration::from_secs(20), || state_of(&h, 64) == "done"),
        "state {}",
        state_of(&h, 64)
    );
    assert_eq!(h.sim.callback_replies(), vec![(64, 200)]);
    assert_eq!(statuses_of(&h.sim, 1000889), vec!["RETRY", "OK"]);
    assert_eq!(h.sim.statuses().last().unwrap().message, "provisioned 64");
    let attempts = h.reader().attempts(64).unwrap();
    assert!(
        attempts
            .iter()
            .any(|(_, _, outcome, detail)| outcome == "CALLBACK" && detail.contains("ignored")),
        "{attempts:?}"
    );
}

#[test]
fn callback_for_an_event_not_yet_delivered_is_refused() {
    let h = harness();
    // Account 1000889's first event is held by a slow target; the second one is queued
    // behind it and has not been sent to the target, so nothing can complete it yet.
    h.sim
        .slow_target("account:1000889", Duration::from_millis(1500));
    assert_eq!(
        h.post(&account_event("Subscriber/Updated", 65, 1000889)).0,
        200
    );
    assert_eq!(
        h.post(&account_event("Subscriber/Updated", 66, 1000889)).0,
        200
    );
    assert!(eventually(Duration::from_secs(10), || !h
        .sim
        .target_calls()
        .is_empty()));
    let (code, body) = callback(&h.base(), 66, r#"{"status":"OK"}"#);
    assert_eq!(code, 409, "{body}");
    assert!(body.contains("event is queued"), "{body}");
}

#[test]
fn a_recorded_completion_survives_kill_9_before_the_final_report() {
    let sim = Sim::start("127.0.0.1:0", SimConfig::default()).unwrap();
    let state = TempDir::new("cb-kill");
    let mut env = sim_env(&sim, &state);
    env.push(("ESPFD_CALLBACK_TOKEN", TOKEN.into()));
    env.retain(|(k, _)| *k != "ESPFD_LISTEN");
    let db = state.0.join("espfd.db");
    let read_state = |i_event| {
        espfd::store::Reader::open(&db)
            .ok()
            .and_then(|r| r.get(i_event).ok().flatten())
            .map(|r| r.state.to_string())
    };

    // ESPF is down: the IN_PROGRESS report is owed when the callback arrives.
    sim.set_status_down(true);
    sim.script_target(67, &[(202, None)]);
    let first = Espfd::spawn(&env, None);
    let base = format!("http://{}", first.addr);
    let (code, _) = post(
        &format!("{base}/events"),
        Some(&basic(USER, PASSWORD)),
        &account_event("Subscriber/Updated", 67, 1000889),
    );
    assert_eq!(code, 200);
    assert!(eventually(Duration::from_secs(20), || read_state(67)
        .as_deref()
        == Some("report")));
    let (code, body) = callback(&base, 67, r#"{"status":"OK","message":"activated"}"#);
    assert_eq!(code, 200, "{body}");
    first.signal(libc::SIGKILL);
    drop(first);
    assert!(statuses_of(&sim, 1000889).is_empty());

    sim.set_status_down(false);
    let second = Espfd::spawn(&env, None);
    assert!(
        eventually(Duration::from_secs(20), || read_state(67).as_deref()
            == Some("done")),
        "state {:?}; log:\n{}",
        read_state(67),
        second.log()
    );
    assert_eq!(statuses_of(&sim, 1000889), vec!["IN_PROGRESS", "OK"]);
    assert_eq!(sim.statuses().last().unwrap().message, "activated");
}

#[test]
fn a_callback_after_the_async_timeout_is_refused_not_lost() {
    let h = Harness::with(|raw| {
        raw.set("ESPFD_CALLBACK_TOKEN", TOKEN)
            .set("ESPFD_ASYNC_TIMEOUT", "1s");
    });
    h.sim.script_target(68, &[(202, None)]);
    assert_eq!(
        h.post(&account_event("Subscriber/Updated", 68, 1000889)).0,
        200
    );
    assert!(eventually(Duration::from_secs(10), || statuses_of(
        &h.sim, 1000889
    ) == ["IN_PROGRESS"]));
    // The FAILED report of the timeout is slow: the callback comes while it is under way.
    h.sim.set_status_delay(Duration::from_millis(1500));
    let reports = || {
        h.sim
            .requests()
            .iter()
            .filter(|r| r.path.ends_with("/status") && r.path.contains("/espf/"))
            .count()
    };
    assert!(eventually(Duration::from_secs(10), || reports() == 2));
    let (code, body) = callback(&h.base(), 68, r#"{"status":"OK","message":"done late"}"#);
    assert_eq!(code, 409, "{body}");
    assert!(
        eventually(Duration::from_secs(10), || state_of(&h, 68) == "failed"),
        "state {}",
        state_of(&h, 68)
    );
    assert_eq!(statuses_of(&h.sim, 1000889), vec!["IN_PROGRESS", "FAILED"]);
}
