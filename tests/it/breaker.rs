//! A circuit breaker per upstream (PortaBilling, the target, the ESPF API), as an operator
//! sees it: the "down" and "back" log lines, `espfd_upstream_up`, `/readyz`, no attempts
//! spent while an upstream is down, and every waiting event resumed when it is back.

use std::net::SocketAddr;
use std::time::Duration;

use espfd::sim::{Sim, SimConfig};
use espfd::store::{Reader, State};

use crate::harness::{
    account_event, agent, basic, eventually, metric, post, Espfd, TempDir, Test, PASSWORD, USER,
};

fn daemon(sim: &Sim, state: &TempDir) -> Espfd {
    Test::new()
        .sim_env(sim, state)
        .env("ESPFD_BREAKER_FAILURES", "3")
        .env("ESPFD_RETRY_MAX_DELAY", "500ms")
        .env("RUST_LOG", "info")
        .spawn()
}

fn readyz(addr: SocketAddr) -> (u16, String) {
    let mut resp = agent()
        .get(&format!("http://{addr}/readyz"))
        .call()
        .unwrap();
    let code = resp.status().as_u16();
    (code, resp.body_mut().read_to_string().unwrap_or_default())
}

fn post_events(d: &Espfd, ids: impl Iterator<Item = i64>) {
    let url = format!("http://{}/events", d.addr);
    let auth = basic(USER, PASSWORD);
    for i in ids {
        // One account per event: no event waits behind another of its entity.
        let body = account_event("Subscriber/Updated", i, 70_000 + i);
        assert_eq!(post(&url, Some(&auth), &body).0, 200);
    }
}

fn store(state: &TempDir) -> Reader {
    Reader::open(&state.0.join("espfd.db")).unwrap()
}

#[test]
fn a_failing_target_opens_its_breaker_waiting_events_spend_nothing_and_all_resume_when_it_is_back()
{
    let sim = Sim::start("127.0.0.1:0", SimConfig::default()).unwrap();
    let state = TempDir::new("breaker-target");
    let d = daemon(&sim, &state);
    assert_eq!(
        metric(d.addr, "espfd_upstream_up{upstream=\"target\"}"),
        1.0
    );

    sim.set_target_failure_rate(1.0);
    post_events(&d, 1..=40);
    assert!(
        eventually(Duration::from_secs(10), || d
            .log()
            .contains("target down after 3 failures")),
        "no 'down' line:\n{}",
        d.log()
    );
    assert_eq!(
        metric(d.addr, "espfd_upstream_up{upstream=\"target\"}"),
        0.0
    );
    assert_eq!(
        metric(d.addr, "espfd_upstream_up{upstream=\"portabilling\"}"),
        1.0
    );
    assert!(d.log().contains("probing every 1-5 s"), "{}", d.log());

    // While it is down, events wait untried: only the failures that opened it and the
    // probes (one at a time, at most one a second) reach the target.
    let at_open = sim.target_calls_total();
    std::thread::sleep(Duration::from_secs(3));
    let while_down = sim.target_calls_total() - at_open;
    assert!(
        while_down <= 4,
        "{while_down} target calls in 3 s while down"
    );
    let rows = store(&state).list(None, None, 100).unwrap();
    let untried = rows.iter().filter(|r| r.attempts == 0).count();
    assert!(
        untried >= 25,
        "only {untried} of 40 events untried while the target was down"
    );

    sim.set_target_failure_rate(0.0);
    assert!(
        eventually(Duration::from_secs(30), || {
            let rows = store(&state).list(None, None, 100).unwrap();
            rows.len() == 40 && rows.iter().all(|r| r.state == State::Done)
        }),
        "not all events done after the target came back:\n{}",
        d.log()
    );
    let log = d.log();
    let back = log
        .lines()
        .find(|l| l.contains("target back after"))
        .unwrap_or_else(|| panic!("no 'back' line:\n{log}"));
    assert!(back.contains("events resumed"), "{back}");
    assert_eq!(
        metric(d.addr, "espfd_upstream_up{upstream=\"target\"}"),
        1.0
    );
    // Every event reported OK once.
    let oks = sim.statuses().iter().filter(|s| s.status == "OK").count();
    assert_eq!(oks, 40);
    // RETRY was reported only for events that were attempted while the target failed
    // (they took more than one attempt); the ones that waited took one, after its return.
    let rows = store(&state).list(None, None, 100).unwrap();
    for s in sim.statuses().iter().filter(|s| s.status == "RETRY") {
        let row = rows
            .iter()
            .find(|r| r.event.as_ref().unwrap().i_account() == Some(s.i_account))
            .unwrap();
        assert!(
            row.attempts >= 2,
            "RETRY for i_event {} with {} attempts",
            row.i_event,
            row.attempts
        );
    }
    let once = rows.iter().filter(|r| r.attempts == 1).count();
    assert!(once >= 25, "only {once} of 40 events took a single attempt");
}

#[test]
fn failing_portabilling_opens_its_breaker_and_readyz_says_so_at_once() {
    let sim = Sim::start("127.0.0.1:0", SimConfig::default()).unwrap();
    let state = TempDir::new("breaker-pb");
    let d = daemon(&sim, &state);
    sim.set_pb_failure_rate(1.0);
    post_events(&d, 1..=20);
    assert!(
        eventually(Duration::from_secs(10), || d
            .log()
            .contains("portabilling down after 3 failures")),
        "{}",
        d.log()
    );
    let (code, body) = readyz(d.addr);
    assert_eq!(code, 503, "{body}");
    assert!(body.starts_with("portabilling down for"), "{body}");
    assert_eq!(
        metric(d.addr, "espfd_upstream_up{upstream=\"portabilling\"}"),
        0.0
    );
    // The target got nothing: no event passed its lookup.
    assert_eq!(sim.target_calls_total(), 0);

    sim.set_pb_failure_rate(0.0);
    assert!(
        eventually(Duration::from_secs(30), || {
            let rows = store(&state).list(None, None, 100).unwrap();
            rows.len() == 20 && rows.iter().all(|r| r.state == State::Done)
        }),
        "{}",
        d.log()
    );
    assert!(d.log().contains("portabilling back after"), "{}", d.log());
    assert!(eventually(Duration::from_secs(10), || readyz(d.addr).0 == 200));
}

#[test]
fn a_failing_espf_api_leaves_reports_owed_and_makes_them_all_when_it_is_back() {
    let sim = Sim::start("127.0.0.1:0", SimConfig::default()).unwrap();
    let state = TempDir::new("breaker-espf");
    let d = daemon(&sim, &state);
    sim.set_status_down(true);
    post_events(&d, 1..=20);
    assert!(
        eventually(Duration::from_secs(10), || d
            .log()
            .contains("espf down after 3 failures")),
        "{}",
        d.log()
    );
    // The target still gets its calls; the reports wait.
    assert!(
        eventually(Duration::from_secs(10), || sim.target_calls_total() == 20),
        "{} target calls:\n{}",
        sim.target_calls_total(),
        d.log()
    );
    assert_eq!(metric(d.addr, "espfd_upstream_up{upstream=\"espf\"}"), 0.0);
    // Each one's report is owed (state report) once the worker has recorded it.
    let owed = || {
        store(&state)
            .list(None, None, 100)
            .unwrap()
            .iter()
            .filter(|r| r.state == State::Report)
            .count()
    };
    assert!(
        eventually(Duration::from_secs(10), || owed() == 20),
        "{} reports owed",
        owed()
    );

    sim.set_status_down(false);
    assert!(
        eventually(Duration::from_secs(30), || {
            let rows = store(&state).list(None, None, 100).unwrap();
            rows.iter().all(|r| r.state == State::Done)
        }),
        "{}",
        d.log()
    );
    assert!(d.log().contains("espf back after"), "{}", d.log());
    let oks = sim.statuses().iter().filter(|s| s.status == "OK").count();
    assert_eq!(oks, 20);
    // The target was not called again for them.
    assert_eq!(sim.target_calls_total(), 20);
}
