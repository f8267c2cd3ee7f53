//! `ESPFD_COALESCE=on`: a burst of events for one entity is delivered once, for the newest,
//! the older ones finished as coalesced; never across a retry wait; off by default.

use std::time::Duration;

use espfd::store::State;

use crate::harness::{account_event, eventually, Harness};

const ACCOUNT: i64 = 1_000_889;

/// Posts event 1 for the account while the target is slow for it, then 2..=n behind it, so
/// that 2..=n are queued when the lane is free again.
fn burst(h: &Harness, n: i64) {
    h.sim
        .slow_target(&format!("account:{ACCOUNT}"), Duration::from_millis(800));
    assert_eq!(
        h.post(&account_event("Subscriber/Updated", 1, ACCOUNT)).0,
        200
    );
    assert!(eventually(Duration::from_secs(5), || h
        .sim
        .target_calls()
        .iter()
        .any(|c| c.i_event == Some(1))));
    for i in 2..=n {
        assert_eq!(
            h.post(&account_event("Subscriber/Updated", i, ACCOUNT)).0,
            200
        );
    }
    h.sim
        .slow_target(&format!("account:{ACCOUNT}"), Duration::ZERO);
}

#[test]
fn a_burst_for_one_account_is_delivered_once_for_the_newest() {
    let h = Harness::with(|raw| {
        raw.set("ESPFD_COALESCE", "on");
    });
    burst(&h, 50);
    let ids: Vec<i64> = (1..=50).collect();
    h.wait_finished(&ids, Duration::from_secs(30));

    let calls = h.sim.target_calls();
    let delivered: Vec<Option<i64>> = calls.iter().map(|c| c.i_event).collect();
    assert_eq!(delivered, vec![Some(1), Some(50)], "target calls");
    // The newest one's document names the ones it stands for, in arrival order.
    let doc = &calls[1].doc;
    let coalesced: Vec<i64> = doc["coalesced"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["i_event"].as_i64().unwrap())
        .collect();
    assert_eq!(coalesced, (2..=49).collect::<Vec<_>>());
    assert_eq!(doc["coalesced"][0]["event_type"], "Subscriber/Updated");
    assert_eq!(calls[0].doc["coalesced"], serde_json::json!([]));

    let reader = h.reader();
    for i in 2..=49 {
        let row = reader.get(i).unwrap().unwrap();
        assert_eq!(row.state, State::Done, "event {i}");
        assert_eq!(row.message.as_deref(), Some("coalesced into i_event 50"));
    }
    // One status report per delivery: the newest one's covers the account.
    assert!(eventually(Duration::from_secs(5), || h
        .sim
        .statuses()
        .len()
        == 2));
    assert!(h.sim.statuses().iter().all(|s| s.status == "OK"));
}

#[test]
fn without_coalescing_every_event_is_delivered() {
    let h = Harness::start();
    burst(&h, 20);
    let ids: Vec<i64> = (1..=20).collect();
    h.wait_finished(&ids, Duration::from_secs(30));
    assert_eq!(h.sim.target_calls().len(), 20);
}

#[test]
fn an_event_waiting_for_its_retry_is_not_coalesced_with_the_ones_behind_it() {
    let h = Harness::with(|raw| {
        raw.set("ESPFD_COALESCE", "on")
            .set("ESPFD_RETRY_INITIAL", "1s");
    });
    // Event 1 fails once; 2..=10 queue up behind it while it waits for its retry.
    h.sim.script_target(1, &[(503, None)]);
    assert_eq!(
        h.post(&account_event("Subscriber/Updated", 1, ACCOUNT)).0,
        200
    );
    assert!(eventually(Duration::from_secs(5), || h
        .reader()
        .get(1)
        .unwrap()
        .is_some_and(|r| r.state == State::Retry)));
    for i in 2..=10 {
        assert_eq!(
            h.post(&account_event("Subscriber/Updated", i, ACCOUNT)).0,
            200
        );
    }
    let ids: Vec<i64> = (1..=10).collect();
    h.wait_finished(&ids, Duration::from_secs(30));
    let delivered: Vec<Option<i64>> = h.sim.target_calls().iter().map(|c| c.i_event).collect();
    // Its retry is delivered on its own, then the rest once, for the newest.
    assert_eq!(delivered, vec![Some(1), Some(1), Some(10)]);
    let row = h.reader().get(5).unwrap().unwrap();
    assert_eq!(row.message.as_deref(), Some("coalesced into i_event 10"));
}
