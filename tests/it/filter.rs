//! The event filter, `ESPFD_EVENT_TYPES`: what an operator checks when an instance takes only
//! some event types. A left-out event is answered 200 and stored as `skipped`, and goes
//! nowhere: no PortaBilling lookup, no target call, no ESPF status; the others in the same
//! run go through as usual.

use std::collections::HashMap;
use std::time::Duration;

use espfd::pipeline::Step;
use espfd::sim::{Sim, SimConfig};
use espfd::store::State;

use crate::harness::{account_event, agent, eventually, Harness, TempDir, Test};

/// `espfd events <args>` on the harness's store: (exit code, stdout, stderr).
fn events(h: &Harness, args: &[&str]) -> (i32, String, String) {
    let run = Test::new()
        .env("ESPFD_STATE_DIR", h.state.0.display().to_string())
        .args(&["events"])
        .args(args)
        .run();
    (
        run.0.status.code().unwrap_or(-1),
        run.stdout(),
        run.stderr(),
    )
}

/// The scrape's samples, `series → value`.
fn scrape(h: &Harness) -> HashMap<String, f64> {
    let mut resp = agent()
        .get(&format!("{}/metrics", h.base()))
        .call()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let text = resp.body_mut().read_to_string().unwrap();
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, v) = l.rsplit_once(' ')?;
            Some((series.to_string(), v.parse().ok()?))
        })
        .collect()
}

fn metric(m: &HashMap<String, f64>, series: &str) -> f64 {
    *m.get(series)
        .unwrap_or_else(|| panic!("{series} is not in the scrape"))
}

fn state_of(h: &Harness, i_event: i64) -> State {
    h.reader()
        .get(i_event)
        .unwrap()
        .unwrap_or_else(|| panic!("i_event {i_event} is not in the store"))
        .state
}

/// Lookups PortaBilling received whose request names `id` (an i_account, an i_customer).
fn lookups_naming(sim: &Sim, id: &str) -> usize {
    sim.requests()
        .iter()
        .filter(|r| r.path.starts_with("/rest/") && !r.path.starts_with("/rest/Session/"))
        .filter(|r| r.body.contains(id))
        .count()
}

#[test]
fn a_left_out_event_is_stored_as_skipped_and_goes_nowhere() {
    let h = Test::new()
        .env("ESPFD_EVENT_TYPES", " Subscriber/* ,SIM/*")
        .start();
    let customer =
        r#"{"event_type":"Customer/Created","variables":{"i_customer":2543,"i_event":7004}}"#;
    let bodies = [
        account_event("Subscriber/Created", 7001, 2984),
        account_event("SIM/Updated", 7002, 1000889),
        account_event("Account/Status/Blocked", 7003, 277147),
        customer.to_string(),
    ];
    for body in &bodies {
        let (code, reply) = h.post(body);
        assert_eq!((code, reply.trim()), (200, "OK"), "{body}");
    }
    let steps = h.wait_finished(&[7001, 7002, 7003, 7004], Duration::from_secs(15));
    let finished = |i: i64| {
        steps.iter().find_map(|s| match s {
            Step::Finished { i_event, state, .. } if *i_event == i => Some(*state),
            _ => None,
        })
    };
    assert_eq!(finished(7001), Some("done"));
    assert_eq!(finished(7002), Some("done"));
    assert_eq!(finished(7003), Some("skipped"));
    assert_eq!(finished(7004), Some("skipped"));

    // In the store: skipped, finished, why, and a line in its attempts.
    let row = h.reader().get(7003).unwrap().unwrap();
    assert_eq!(row.state, State::Skipped);
    assert_eq!(row.status, None, "no status was decided, none reported");
    assert_eq!(
        row.message.as_deref(),
        Some("event type Account/Status/Blocked is not in ESPFD_EVENT_TYPES (Subscriber/*, SIM/*)")
    );
    assert!(
        row.finished_at.is_some(),
        "finished, so the janitor purges it"
    );
    assert_eq!(row.attempts, 0, "no attempt was made");
    let attempts = h.reader().attempts(7003).unwrap();
    assert_eq!(attempts.len(), 1, "{attempts:?}");
    assert_eq!(attempts[0].2, "SKIPPED");
    assert!(attempts[0].3.contains("not in ESPFD_EVENT_TYPES"));

    // Nothing went out for the skipped ones; the others went everywhere as usual.
    let target: Vec<i64> = h
        .sim
        .target_calls()
        .iter()
        .filter_map(|c| c.i_event)
        .collect();
    assert_eq!(target.len(), 2, "{target:?}");
    assert!(
        target.contains(&7001) && target.contains(&7002),
        "{target:?}"
    );
    let mut statuses: Vec<(i64, String)> = h
        .sim
        .statuses()
        .iter()
        .map(|s| (s.i_account, s.status.clone()))
        .collect();
    statuses.sort();
    assert_eq!(
        statuses,
        [(2984, "OK".to_string()), (1000889, "OK".to_string())]
    );
    assert_eq!(lookups_naming(&h.sim, "277147"), 0, "no lookup of 277147");
    assert_eq!(
        lookups_naming(&h.sim, "2543"),
        0,
        "no lookup of the customer"
    );
    assert!(
        lookups_naming(&h.sim, "2984") >= 1,
        "the matching ones were looked up"
    );

    // Counted as finished skipped: neither ok nor a dead letter.
    let m = scrape(&h);
    assert_eq!(metric(&m, "espfd_events_received_total{code=\"200\"}"), 4.0);
    assert_eq!(
        metric(&m, "espfd_events_finished_total{outcome=\"skipped\"}"),
        2.0
    );
    assert_eq!(
        metric(&m, "espfd_events_finished_total{outcome=\"ok\"}"),
        2.0
    );
    assert_eq!(
        metric(&m, "espfd_events_finished_total{outcome=\"failed\"}"),
        0.0
    );
    assert_eq!(metric(&m, "espfd_dead_letters_total"), 0.0);
    assert_eq!(metric(&m, "espfd_backlog"), 0.0);

    // A repeat is known as one: 200, nothing new stored, counted or sent.
    assert_eq!(h.post(&bodies[2]).0, 200);
    let repeat = eventually(Duration::from_secs(5), || {
        h.steps.try_iter().any(|s| {
            matches!(
                s,
                Step::Received {
                    i_event: 7003,
                    repeat: true,
                    ..
                }
            )
        })
    });
    assert!(repeat, "the second 7003 was recognised as a repeat");
    assert_eq!(h.reader().attempts(7003).unwrap().len(), 1);
    let m = scrape(&h);
    assert_eq!(metric(&m, "espfd_events_received_total{code=\"200\"}"), 5.0);
    assert_eq!(
        metric(&m, "espfd_events_finished_total{outcome=\"skipped\"}"),
        2.0
    );
    assert_eq!(h.sim.target_calls().len(), 2);

    // What `espfd events` shows.
    let (code, out, _) = events(&h, &["list", "--state", "skipped"]);
    assert_eq!(code, 0, "{out}");
    let listed: Vec<&str> = out.lines().skip(1).collect();
    assert_eq!(listed.len(), 2, "{out}");
    assert!(
        listed[0].starts_with("7004 ") && listed[1].starts_with("7003 "),
        "{out}"
    );
    assert!(listed.iter().all(|l| l.contains(" skipped ")), "{out}");
    let (_, all, _) = events(&h, &["list"]);
    assert_eq!(
        all.lines().count(),
        5,
        "every event, skipped ones too:\n{all}"
    );
    let (code, out, _) = events(&h, &["show", "7003"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("\nstate:        skipped\n"), "{out}");
    assert!(
        out.contains("message:      event type Account/Status/Blocked is not in ESPFD_EVENT_TYPES"),
        "{out}"
    );
    assert!(out.contains("finished_at:  "), "{out}");
    assert!(
        out.contains(" SKIPPED: event type Account/Status/Blocked"),
        "{out}"
    );
}

#[test]
fn a_star_matches_across_slashes() {
    let h = Test::new()
        .env("ESPFD_EVENT_TYPES", "Account/Status/*,*/Created")
        .start();
    let cases = [
        ("Account/Status/Blocked", State::Done),
        ("Account/Status/Changed/Again", State::Done),
        ("Subscriber/Created", State::Done),
        ("Customer/Product/Created", State::Done),
        ("Account/Status", State::Skipped),
        ("Account/Updated", State::Skipped),
        ("Subscriber/Created/Later", State::Skipped),
    ];
    let ids: Vec<i64> = (0..cases.len() as i64).map(|i| 7100 + i).collect();
    for ((event_type, _), i_event) in cases.iter().zip(&ids) {
        assert_eq!(h.post(&account_event(event_type, *i_event, 2984)).0, 200);
    }
    h.wait_finished(&ids, Duration::from_secs(15));
    for ((event_type, want), i_event) in cases.iter().zip(&ids) {
        assert_eq!(state_of(&h, *i_event), *want, "{event_type}");
    }
    let sent = h.sim.target_calls().len();
    assert_eq!(sent, 4, "one target call per matching event");
}

#[test]
fn a_bad_pattern_is_a_configuration_error_naming_the_variable() {
    let sim = Sim::start("127.0.0.1:0", SimConfig::default()).unwrap();
    let state = TempDir::new("filter-bad");
    for bad in ["Subscriber/*,,SIM/*", "Subscriber/?", "SIM/*,"] {
        Test::new()
            .sim_env(&sim, &state)
            .env("ESPFD_EVENT_TYPES", bad)
            .run()
            .code(78)
            .stderr_has("ESPFD_EVENT_TYPES");
        Test::new()
            .sim_env(&sim, &state)
            .env("ESPFD_EVENT_TYPES", bad)
            .args(&["check"])
            .run()
            .code(78)
            .stdout_has("(fix ESPFD_EVENT_TYPES)");
    }
    assert!(sim.target_calls().is_empty());
}

#[test]
fn check_prints_the_filter_in_effect() {
    let sim = Sim::start("127.0.0.1:0", SimConfig::default()).unwrap();
    let state = TempDir::new("filter-check");
    Test::new()
        .sim_env(&sim, &state)
        .env("ESPFD_EVENT_TYPES", "Subscriber/* , SIM/*")
        .args(&["check"])
        .run()
        .code(0)
        .stdout_has("ok   event types: Subscriber/*, SIM/* (others are stored as skipped");
    Test::new()
        .sim_env(&sim, &state)
        .args(&["check"])
        .run()
        .code(0)
        .stdout_has("ok   event types: * (every event is provisioned)");
}

#[test]
fn a_skipped_event_replayed_by_its_id_is_provisioned() {
    let h = Test::new().env("ESPFD_EVENT_TYPES", "Subscriber/*").start();
    assert_eq!(h.post(&account_event("SIM/Updated", 7201, 277147)).0, 200);
    assert_eq!(h.post(&account_event("SIM/Deleted", 7202, 2984)).0, 200);
    h.wait_finished(&[7201, 7202], Duration::from_secs(10));
    assert_eq!(state_of(&h, 7201), State::Skipped);

    // Replaying the dead letters leaves skipped events alone: they are not failures.
    let (code, out, err) = events(&h, &["replay", "--failed"]);
    assert_eq!((code, out.as_str()), (0, ""), "{err}");
    assert!(err.contains("0 event(s) queued again"), "{err}");
    assert_eq!(state_of(&h, 7201), State::Skipped);

    // Named by its id, it goes to the connector whatever ESPFD_EVENT_TYPES says.
    let (code, out, err) = events(&h, &["replay", "7201"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("i_event 7201 was skipped (event type SIM/Updated is not in"),
        "{out}"
    );
    assert!(out.contains("queued again: i_event 7201"), "{out}");
    h.wait_finished(&[7201], Duration::from_secs(10));
    let row = h.reader().get(7201).unwrap().unwrap();
    assert_eq!(row.state, State::Done);
    assert_eq!(row.status.as_deref(), Some("OK"));
    assert!(row.replayed_at.is_some());
    let calls = h.sim.target_calls();
    assert_eq!(calls.len(), 1, "only the replayed one was sent");
    assert_eq!(calls[0].i_event, Some(7201));
    let statuses = h.sim.statuses();
    assert_eq!(statuses.len(), 1, "{statuses:?}");
    assert_eq!(
        (statuses[0].i_account, statuses[0].status.as_str()),
        (277147, "OK")
    );
    assert!(lookups_naming(&h.sim, "277147") >= 1, "it was looked up");
    assert_eq!(
        state_of(&h, 7202),
        State::Skipped,
        "the other stays skipped"
    );
}

#[test]
fn skipped_events_are_deleted_after_the_retention() {
    let h = Test::new()
        .env("ESPFD_EVENT_TYPES", "Subscriber/*")
        .env("ESPFD_RETENTION", "1s")
        .start();
    assert_eq!(h.post(&account_event("SIM/Updated", 7301, 2984)).0, 200);
    h.wait_finished(&[7301], Duration::from_secs(10));
    assert_eq!(state_of(&h, 7301), State::Skipped);
    assert!(
        eventually(Duration::from_secs(10), || h
            .reader()
            .get(7301)
            .unwrap()
            .is_none()),
        "a skipped event older than ESPFD_RETENTION is deleted like a done one"
    );
    assert!(
        h.reader().attempts(7301).unwrap().is_empty(),
        "with its attempts"
    );
}
