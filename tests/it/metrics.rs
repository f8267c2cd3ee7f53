//! `GET /metrics` and `GET /readyz` on the ingress listener.
//!
//! Each service has its own metrics registry, so a scrape holds exactly what that service did
//! even while other tests run alongside in this process.

use std::collections::HashMap;
use std::time::Duration;

use crate::harness::{account_event, agent, basic, eventually, post, Harness, PASSWORD, USER};

/// GETs `url`; returns (status, content type, body).
pub fn get(url: &str) -> (u16, String, String) {
    let mut resp = agent().get(url).call().unwrap();
    let status = resp.status().as_u16();
    let ct = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    (
        status,
        ct,
        resp.body_mut().read_to_string().unwrap_or_default(),
    )
}

/// A scrape as `series → value`, checking every line on the way.
fn scrape(h: &Harness) -> HashMap<String, f64> {
    let (status, ct, text) = get(&format!("{}/metrics", h.base()));
    assert_eq!(status, 200);
    assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
    let mut out = HashMap::new();
    for line in text.lines() {
        if line.starts_with("# HELP ") || line.starts_with("# TYPE ") {
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("not a sample line: {line:?}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("not a number: {line:?}"));
        assert!(
            out.insert(series.to_string(), value).is_none(),
            "duplicate {series}"
        );
    }
    out
}

fn at(m: &HashMap<String, f64>, series: &str) -> f64 {
    *m.get(series)
        .unwrap_or_else(|| panic!("{series} not scraped; got {:?}", m.keys()))
}

#[test]
fn counters_move_after_events() {
    let h = Harness::start();
    h.sim.script_target(9102, &[(404, None)]);
    h.sim.script_target(9103, &[(503, None)]);

    assert_eq!(
        h.post(&account_event("Subscriber/Created", 9101, 2984)).0,
        200
    );
    assert_eq!(
        h.post(&account_event("Subscriber/Updated", 9102, 1000889))
            .0,
        200
    );
    assert_eq!(
        h.post(&account_event("Subscriber/Updated", 9103, 277147)).0,
        200
    );
    assert_eq!(h.post("not json").0, 400);
    let wrong = basic(USER, "wrong");
    assert_eq!(
        post(&h.url(), Some(&wrong), &account_event("X/Y", 9104, 1)).0,
        401
    );
    assert_eq!(
        post(&h.url(), Some(&basic(USER, PASSWORD)), "{}").0,
        400,
        "an event without event_type"
    );
    h.wait_finished(&[9101, 9102, 9103], Duration::from_secs(20));

    let after = scrape(&h);
    // This service's own registry: exactly what it did, whatever other tests do meanwhile.
    let exactly = |series: &str, n: usize| assert_eq!(at(&after, series), n as f64, "{series}");
    exactly("espfd_events_received_total{code=\"200\"}", 3);
    exactly("espfd_events_received_total{code=\"400\"}", 2);
    exactly("espfd_events_received_total{code=\"401\"}", 1);
    exactly("espfd_events_received_total{code=\"503\"}", 0);
    exactly("espfd_auth_failures_total{endpoint=\"events\"}", 1);
    exactly("espfd_events_finished_total{outcome=\"ok\"}", 2);
    exactly("espfd_events_finished_total{outcome=\"failed\"}", 1);
    exactly("espfd_dead_letters_total", 1);
    exactly("espfd_retries_total", 1);
    exactly("espfd_logins_total", h.sim.logins());
    // One call per request the simulators saw: 3 events and 1 retry at the target, and
    // at PortaBilling the login and one lookup per attempt.
    let pb_calls = h
        .sim
        .requests()
        .iter()
        .filter(|r| r.path.starts_with("/rest/"))
        .count();
    let calls = [
        ("portabilling", pb_calls),
        ("target", h.sim.target_calls().len()),
        ("espf", h.sim.statuses().len()),
    ];
    assert_eq!(calls[1].1, 4);
    for (call, n) in calls {
        let count = format!("espfd_call_duration_seconds_count{{call=\"{call}\"}}");
        let inf = format!("espfd_call_duration_seconds_bucket{{call=\"{call}\",le=\"+Inf\"}}");
        exactly(&count, n);
        assert_eq!(at(&after, &count), at(&after, &inf), "{call}");
    }
    // Every event finished, so this store has nothing open.
    assert_eq!(at(&after, "espfd_backlog"), 0.0);
    assert_eq!(at(&after, "espfd_oldest_pending_age_seconds"), 0.0);
    assert!(at(&after, "espfd_portabilling_last_answer_age_seconds") < 60.0);
}

#[test]
fn backlog_and_oldest_age_come_from_the_store() {
    // The target holds account 2984's events for a while: the first is in flight, the
    // second waits behind it in the store.
    let h = Harness::start();
    h.sim
        .slow_target("account:2984", Duration::from_millis(1500));
    assert_eq!(
        h.post(&account_event("Subscriber/Updated", 9201, 2984)).0,
        200
    );
    assert_eq!(
        h.post(&account_event("Subscriber/Updated", 9202, 2984)).0,
        200
    );
    std::thread::sleep(Duration::from_millis(300));
    let m = scrape(&h);
    assert_eq!(at(&m, "espfd_backlog"), 2.0);
    assert!(at(&m, "espfd_oldest_pending_age_seconds") >= 0.2);
    h.wait_finished(&[9201, 9202], Duration::from_secs(20));
    assert_eq!(at(&scrape(&h), "espfd_backlog"), 0.0);
}

#[test]
fn readyz_waits_for_portabilling_then_is_ready() {
    let h = Harness::start();
    let url = format!("{}/readyz", h.base());
    // Nothing has talked to PortaBilling yet: not ready, and a probe is started.
    let (status, _, body) = get(&url);
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("PortaBilling has not answered yet"), "{body}");
    assert!(
        eventually(Duration::from_secs(10), || get(&url).0 == 200),
        "the probe's answer makes it ready"
    );
    assert_eq!(get(&url).2.trim(), "ready");
    assert!(
        h.sim.logins() >= 1 && !h.sim.requests_to("/rest/Session/ping").is_empty(),
        "the probe logged in and pinged"
    );
    assert_eq!(agent().post(&url).send("").unwrap().status().as_u16(), 405);
}

#[test]
fn readyz_is_503_while_the_store_cannot_be_written() {
    let h = Harness::start();
    let url = format!("{}/readyz", h.base());
    assert!(eventually(Duration::from_secs(10), || get(&url).0 == 200));

    // Another process (here: a connection of the test) holds the write lock.
    let conn = rusqlite::Connection::open(h.state.0.join("espfd.db")).unwrap();
    conn.execute_batch("BEGIN IMMEDIATE").unwrap();
    let (status, _, body) = get(&url);
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("event store not writable"), "{body}");
    conn.execute_batch("ROLLBACK").unwrap();
    assert_eq!(get(&url).0, 200);
}
