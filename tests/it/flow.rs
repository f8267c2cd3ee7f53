//! Events flowing end to end: PortaBilling lookup, target document, ESPF status, order,
//! parallelism, sessions.

use std::time::Duration;

use espfd::pipeline::Step;
use espfd::store::{lane_of, State};

use crate::harness::{account_event, eventually, Harness, Test};

#[test]
fn one_event_of_each_kind_reaches_the_target_and_accounts_get_ok() {
    let h = Harness::start();
    let events = [
        (account_event("Subscriber/Created", 7615, 2984), "account"),
        (r#"{"event_type":"Customer/Updated","variables":{"i_customer":2543,"i_event":7616}}"#.to_string(), "customer"),
        (r#"{"event_type":"Invoice/Created","variables":{"i_customer":2543,"i_invoice":7001,"i_event":7617}}"#.to_string(), "invoice"),
        (r#"{"event_type":"DID/Updated","variables":{"number":"16045550123","i_event":7618}}"#.to_string(), "did"),
    ];
    for (body, _) in &events {
        assert_eq!(h.post(body).0, 200);
    }
    h.wait_finished(&[7615, 7616, 7617, 7618], Duration::from_secs(15));

    let calls = h.sim.target_calls();
    assert_eq!(calls.len(), 4, "one target call per event");
    for (i, (_, kind)) in events.iter().enumerate() {
        let i_event = 7615 + i as i64;
        let call = calls.iter().find(|c| c.doc["i_event"] == i_event).unwrap();
        assert_eq!(call.doc["entity"]["kind"], *kind, "{}", call.doc);
        assert_eq!(call.doc["group"], "HSS");
        assert_eq!(call.doc["attempt"], 1);
        let key = call
            .headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("idempotency-key"))
            .map(|(_, v)| v.clone());
        assert_eq!(key.as_deref(), Some(i_event.to_string().as_str()));
    }
    let account = calls.iter().find(|c| c.doc["i_event"] == 7615).unwrap();
    assert_eq!(
        account.doc["entity"]["id"], "6808881050@msisdn",
        "the PortaBilling record is passed on"
    );
    assert_eq!(account.doc["event_type"], "Subscriber/Created");
    let did = calls.iter().find(|c| c.doc["i_event"] == 7618).unwrap();
    assert_eq!(did.doc["entity"]["number"], "16045550123");

    // Only the account event has a status call, and it says OK for the right group.
    let statuses = h.sim.statuses();
    assert_eq!(statuses.len(), 1, "{statuses:?}");
    assert_eq!(statuses[0].i_account, 2984);
    assert_eq!(statuses[0].status, "OK");
    assert_eq!(statuses[0].group, "HSS");
    assert_eq!(statuses[0].content_type, "form");
    assert_eq!(statuses[0].auth, "bearer");
    assert!(
        statuses[0].message.contains("provisioned"),
        "{}",
        statuses[0].message
    );

    let row = h.reader().get(7615).unwrap().unwrap();
    assert_eq!(row.state, State::Done);
    assert_eq!(row.status.as_deref(), Some("OK"));
}

#[test]
fn unknown_account_goes_to_target_with_null_entity() {
    let h = Harness::start();
    assert_eq!(
        h.post(&account_event("Subscriber/Deleted", 9001, 999_999))
            .0,
        200
    );
    let steps = h.wait_finished(&[9001], Duration::from_secs(10));
    assert!(steps.contains(&Step::LookedUp {
        i_event: 9001,
        entity: "account:999999".into(),
        found: false
    }));
    let call = h
        .sim
        .target_calls()
        .into_iter()
        .find(|c| c.doc["i_event"] == 9001)
        .unwrap();
    assert!(call.doc["entity"].is_null());
    assert_eq!(h.sim.statuses()[0].status, "OK");
}

#[test]
fn repeated_i_event_is_processed_once() {
    let h = Harness::start();
    let body = account_event("Subscriber/Updated", 5000, 1000889);
    assert_eq!(h.post(&body).0, 200);
    h.wait_finished(&[5000], Duration::from_secs(10));
    for _ in 0..3 {
        assert_eq!(h.post(&body).0, 200);
    }
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        h.sim
            .target_calls()
            .iter()
            .filter(|c| c.doc["i_event"] == 5000)
            .count(),
        1
    );
    assert_eq!(h.sim.statuses().len(), 1);
}

/// Three accounts on three different lanes, the first one slow.
fn accounts_on_distinct_lanes(lanes: usize) -> Vec<i64> {
    let mut picked: Vec<(i64, usize)> = Vec::new();
    for acc in 1000..100_000i64 {
        let lane = lane_of(&format!("account:{acc}"), lanes);
        if picked.iter().all(|(_, l)| *l != lane) {
            picked.push((acc, lane));
        }
        if picked.len() == 3 {
            break;
        }
    }
    picked.into_iter().map(|(a, _)| a).collect()
}

#[test]
fn one_entity_in_order_while_others_proceed_in_parallel() {
    let h = Harness::start();
    let accs = accounts_on_distinct_lanes(h.config.workers);
    let slow = accs[0];
    h.sim
        .slow_target(&format!("account:{slow}"), Duration::from_millis(300));
    for i in 0..4 {
        assert_eq!(
            h.post(&account_event("Subscriber/Updated", 100 + i, slow))
                .0,
            200
        );
    }
    assert_eq!(
        h.post(&account_event("Subscriber/Updated", 200, accs[1])).0,
        200
    );
    assert_eq!(
        h.post(&account_event("Subscriber/Updated", 300, accs[2])).0,
        200
    );
    h.wait_finished(&[100, 101, 102, 103, 200, 300], Duration::from_secs(20));

    let calls = h.sim.target_calls();
    let slow_calls: Vec<_> = calls
        .iter()
        .filter(|c| c.doc["variables"]["i_account"] == slow)
        .collect();
    let order: Vec<i64> = slow_calls
        .iter()
        .map(|c| c.doc["i_event"].as_i64().unwrap())
        .collect();
    assert_eq!(order, vec![100, 101, 102, 103], "arrival order kept");
    for pair in slow_calls.windows(2) {
        assert!(
            pair[1].started_ms >= pair[0].finished_ms,
            "one at a time: {} started before {} finished",
            pair[1].doc["i_event"],
            pair[0].doc["i_event"]
        );
    }
    let first_slow_done = slow_calls[0].finished_ms;
    for other in [200, 300] {
        let c = calls.iter().find(|c| c.doc["i_event"] == other).unwrap();
        assert!(
            c.finished_ms <= first_slow_done,
            "i_event {other} waited for the slow entity"
        );
    }
}

#[test]
fn fifty_events_use_one_login() {
    let h = Harness::start();
    let ids: Vec<i64> = (1..=50).collect();
    for &i in &ids {
        assert_eq!(
            h.post(&account_event("Subscriber/Updated", i, 1000889 + i % 7))
                .0,
            200
        );
    }
    h.wait_finished(&ids, Duration::from_secs(30));
    assert_eq!(h.sim.logins(), 1);
    assert_eq!(h.service.as_ref().unwrap().pb_logins(), 1);
}

#[test]
fn revoked_session_leads_to_exactly_one_new_login() {
    let h = Harness::start();
    for i in 1..=5 {
        assert_eq!(
            h.post(&account_event("Subscriber/Updated", i, 1000889 + i))
                .0,
            200
        );
    }
    h.wait_finished(&[1, 2, 3, 4, 5], Duration::from_secs(10));
    assert_eq!(h.sim.logins(), 1);
    h.sim.revoke_sessions();
    let ids: Vec<i64> = (6..=25).collect();
    for &i in &ids {
        assert_eq!(
            h.post(&account_event("Subscriber/Updated", i, 1000889 + i))
                .0,
            200
        );
    }
    h.wait_finished(&ids, Duration::from_secs(20));
    assert_eq!(h.sim.logins(), 2, "one re-login shared by all workers");
    let rows = h.reader().list(Some(State::Done), None, 100).unwrap();
    assert_eq!(
        rows.len(),
        25,
        "every event succeeded despite the revocation"
    );
}

#[test]
fn transient_target_failure_is_retried_with_retry_reported_once() {
    let h = Harness::start();
    h.sim.script_target(42, &[(503, None), (503, None)]);
    assert_eq!(
        h.post(&account_event("Subscriber/Updated", 42, 1000889)).0,
        200
    );
    let steps = h.wait_finished(&[42], Duration::from_secs(15));
    let retries = steps
        .iter()
        .filter(|s| matches!(s, Step::Retrying { i_event: 42, .. }))
        .count();
    assert_eq!(retries, 2);
    let statuses: Vec<String> = h.sim.statuses().into_iter().map(|s| s.status).collect();
    assert_eq!(statuses, vec!["RETRY", "OK"]);
    let row = h.reader().get(42).unwrap().unwrap();
    assert_eq!((row.state.as_str(), row.attempts), ("done", 3));
    assert_eq!(h.reader().attempts(42).unwrap().len(), 3);
}

#[test]
fn permanent_target_failure_is_reported_failed_and_kept() {
    let h = Harness::start();
    h.sim.script_target(43, &[(422, None)]);
    assert_eq!(
        h.post(&account_event("Subscriber/Updated", 43, 1000889)).0,
        200
    );
    h.wait_finished(&[43], Duration::from_secs(10));
    let st = h.sim.statuses();
    assert_eq!(st.len(), 1);
    assert_eq!(st[0].status, "FAILED");
    assert!(st[0].message.contains("422"), "{}", st[0].message);
    let row = h.reader().get(43).unwrap().unwrap();
    assert_eq!(row.state, State::Failed);
}

#[test]
fn json_status_format_and_basic_auth_to_espf() {
    let h = Test::new()
        .env("ESPFD_ESPF_FORMAT", "json")
        .env("ESPFD_ESPF_AUTH", "basic")
        .start();
    assert_eq!(
        h.post(&account_event("Subscriber/Created", 61, 277147)).0,
        200
    );
    h.wait_finished(&[61], Duration::from_secs(10));
    let st = h.sim.statuses();
    assert_eq!(st.len(), 1);
    assert_eq!(
        (
            st[0].content_type.as_str(),
            st[0].auth.as_str(),
            st[0].status.as_str()
        ),
        ("json", "basic", "OK")
    );
}

#[test]
fn api_token_login_works() {
    let h = Harness::with(|raw| {
        raw.set("ESPFD_PB_TOKEN", espfd::sim::SimConfig::default().token);
    });
    assert_eq!(
        h.post(&account_event("Subscriber/Created", 62, 277147)).0,
        200
    );
    h.wait_finished(&[62], Duration::from_secs(10));
    assert_eq!(h.sim.statuses()[0].status, "OK");
    let login = h
        .sim
        .requests()
        .into_iter()
        .find(|r| r.path.starts_with("/rest/Session/login"))
        .unwrap();
    assert!(login.body.contains("\"token\""), "{}", login.body);
}

#[test]
fn pending_events_survive_a_restart_in_process() {
    let mut h = Harness::start();
    h.sim.set_target_failure_rate(1.0);
    for i in 1..=5 {
        assert_eq!(
            h.post(&account_event("Subscriber/Updated", i, 1000889 + i))
                .0,
            200
        );
    }
    assert!(eventually(Duration::from_secs(5), || h
        .sim
        .target_calls()
        .len()
        >= 5));
    h.stop();
    h.sim.set_target_failure_rate(0.0);
    let (tx, rx) = crossbeam_channel::unbounded();
    h.steps = rx;
    h.service = Some(espfd::service::Service::start(&h.config, Some(tx)).unwrap());
    h.wait_finished(&[1, 2, 3, 4, 5], Duration::from_secs(15));
    assert_eq!(
        h.reader().list(Some(State::Done), None, 10).unwrap().len(),
        5
    );
}
