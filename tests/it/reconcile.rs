//! `espfd reconcile`, the real binary walking the simulated `Account/get_account_list`
//! (pages of 1000, rows shuffled within each) and queuing into the store of a service that
//! runs in this process, runs as the binary, or is stopped.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use espfd::sim::{Sim, SimConfig};
use espfd::store::{Reader, Source, State, StoredEvent};
use serde_json::json;

use crate::harness::{account_event, eventually, Run, TempDir, Test};

/// The customer whose accounts these tests put in the simulator (the fixtures have others).
const CUSTOMER: i64 = 777;

/// A simulator with `n` accounts of [`CUSTOMER`], i_account 500000.., ID `r<i_account>`,
/// every tenth closed.
fn sim_with(n: i64) -> Sim {
    let sim = Sim::start("127.0.0.1:0", SimConfig::default()).unwrap();
    put_accounts(&sim, n);
    sim
}

fn put_accounts(sim: &Sim, n: i64) {
    for k in 0..n {
        let i_account = 500_000 + k;
        sim.put_account(json!({
            "i_account": i_account,
            "id": format!("r{i_account}"),
            "i_customer": CUSTOMER,
            "bill_status": if k % 10 == 0 { "C" } else { "O" },
        }));
    }
}

/// `espfd reconcile <args>` with the environment of a service on `sim` and `state`.
fn reconcile(sim: &Sim, state: &TempDir, args: &[&str]) -> Run {
    let mut all = vec!["reconcile"];
    all.extend_from_slice(args);
    Test::new().sim_env(sim, state).args(&all).run()
}

fn reconcile_events(r: &Reader) -> Vec<StoredEvent> {
    r.list_from(None, None, Some(Source::Reconcile), 1_000_000)
        .unwrap()
}

fn store(state: &TempDir) -> Reader {
    Reader::open(&state.0.join("espfd.db")).unwrap()
}

/// Accounts of the stored reconcile events, with how many events each has.
fn per_account(rows: &[StoredEvent]) -> HashMap<i64, usize> {
    let mut n = HashMap::new();
    for r in rows {
        let ev = r.event.as_ref().unwrap();
        assert_eq!(ev.event_type, "Reconcile/Account");
        assert!(r.i_event < 0, "{}", r.i_event);
        *n.entry(ev.i_account().unwrap()).or_insert(0) += 1;
    }
    n
}

fn done_count(r: &Reader) -> usize {
    reconcile_events(r)
        .iter()
        .filter(|e| e.state == State::Done)
        .count()
}

#[test]
fn a_walk_over_shuffled_pages_delivers_every_account_once() {
    let h = Test::new().start_on(sim_with(2500));
    let out = reconcile(&h.sim, &h.state, &["--customer", "777", "--rate", "0"])
        .code(0)
        .stderr_has("read 2500 of 2500 accounts")
        .stderr_has("queued 2500 of 2500")
        .stdout_has("2500 reconcile events queued");
    // Three pages of at most 1000, then the empty one that ends the walk.
    let pages: Vec<serde_json::Value> = h
        .sim
        .requests_to("/rest/Account/get_account_list")
        .iter()
        .map(|r| serde_json::from_str::<serde_json::Value>(&r.body).unwrap())
        .collect();
    assert_eq!(pages.len(), 4, "{}", out.stderr());
    for p in &pages {
        assert_eq!(p["params"]["limit"], 1000);
        assert_eq!(p["params"]["i_customer"], CUSTOMER);
    }
    let rows = reconcile_events(&h.reader());
    let accounts = per_account(&rows);
    assert_eq!(accounts.len(), 2500);
    assert!(accounts.values().all(|n| *n == 1));
    assert!(
        accounts.contains_key(&500_000),
        "closed accounts are included"
    );
    let ids: Vec<i64> = rows.iter().map(|r| r.i_event).collect();
    h.wait_finished(&ids, Duration::from_secs(120));
    let delivered: Vec<i64> = h
        .sim
        .target_calls()
        .iter()
        .filter_map(|c| c.i_event)
        .filter(|i| *i < 0)
        .collect();
    let distinct: HashSet<i64> = delivered.iter().copied().collect();
    assert_eq!(delivered.len(), 2500, "one target call per account");
    assert_eq!(distinct, ids.iter().copied().collect());
    assert_eq!(done_count(&h.reader()), 2500);
    // Each is reported to ESPF like a live event.
    let reported: HashSet<i64> = h.sim.statuses().iter().map(|s| s.i_account).collect();
    assert!(accounts.keys().all(|a| reported.contains(a)));
}

#[test]
fn filters_dry_run_and_a_bare_command() {
    let sim = sim_with(30);
    let state = TempDir::new("rc-filter");
    let run = Test::new().sim_env(&sim, &state).args(&["reconcile"]).run();
    run.code(64).stderr_has("--all").stderr_has("Usage:");

    reconcile(&sim, &state, &["--id", "r50001_", "--dry-run"])
        .code(0)
        .stdout_has("i_account 500010: would be queued")
        .stderr_has("10 of 10 accounts would be queued");
    assert!(
        reconcile_events(&store(&state)).is_empty(),
        "dry run queued"
    );

    reconcile(&sim, &state, &["--id", "r50001_"]).code(0);
    let got: HashSet<i64> = per_account(&reconcile_events(&store(&state)))
        .into_keys()
        .collect();
    assert_eq!(got, (500_010..500_020).collect());
    let sent = &sim.requests_to("/rest/Account/get_account_list")[0];
    assert!(sent.body.contains(r#""id":"r50001_""#), "{}", sent.body);

    // The fixtures' accounts belong to other customers.
    reconcile(&sim, &state, &["--customer", "777"])
        .code(0)
        .stdout_has("20 reconcile events queued, 10 accounts left out");
    assert_eq!(per_account(&reconcile_events(&store(&state))).len(), 30);
    // Run again: every account's event is still open, nothing is queued twice.
    reconcile(&sim, &state, &["--customer", "777", "--dry-run"])
        .code(0)
        .stderr_has("0 of 30 accounts would be queued");
    reconcile(&sim, &state, &["--customer", "777"])
        .code(0)
        .stdout_has("0 reconcile events queued, 30 accounts left out");
    let rows = reconcile_events(&store(&state));
    assert_eq!(rows.len(), 30);
    assert_eq!(rows.iter().map(|r| r.i_event).min(), Some(-30));
}

#[test]
fn a_live_event_does_not_wait_behind_the_walk() {
    let h = Test::new()
        .env("ESPFD_WORKERS", "4")
        .start_on(sim_with(2000));
    for k in 0..2000 {
        h.sim.slow_target(
            &format!("account:{}", 500_000 + k),
            Duration::from_millis(30),
        );
    }
    reconcile(&h.sim, &h.state, &["--customer", "777", "--rate", "0"]).code(0);
    assert!(
        eventually(Duration::from_secs(10), || done_count(&h.reader()) >= 8),
        "the walk did not start"
    );
    assert_eq!(
        h.post(&account_event("Subscriber/Updated", 9101, 1000889))
            .0,
        200
    );
    h.wait_finished(&[9101], Duration::from_secs(10));
    let done_then = done_count(&h.reader());
    assert!(
        done_then < 1000,
        "the live event finished only after {done_then} of 2000 reconcile events"
    );
    let calls = h.sim.target_calls();
    let live_at = calls.iter().position(|c| c.i_event == Some(9101)).unwrap();
    let reconcile_before = calls[..live_at]
        .iter()
        .filter(|c| c.i_event.is_some_and(|i| i < 0))
        .count();
    assert!(
        reconcile_before < 1000,
        "{reconcile_before} reconcile calls went first"
    );
}

#[test]
fn the_rate_is_stored_with_the_walk_and_honoured() {
    let h = Test::new().start_on(sim_with(100));
    let start = Instant::now();
    reconcile(&h.sim, &h.state, &["--customer", "777", "--rate", "5"])
        .code(0)
        .stdout_has("at 5 per second")
        .stderr_has("queued 100 of 100, rate 5 per second, about 20 s left to process");
    assert_eq!(h.reader().latest_walk().unwrap().unwrap().rate, 5.0);
    assert!(eventually(Duration::from_secs(10), || done_count(
        &h.reader()
    ) >= 3));
    std::thread::sleep(Duration::from_secs(2));
    let done = done_count(&h.reader());
    let elapsed = start.elapsed().as_secs_f64();
    // One token up front, then 5 a second; generous slack for scheduling.
    let bound = (1.0 + 5.0 * elapsed).ceil() as usize + 3;
    assert!(
        done <= bound,
        "{done} done after {elapsed:.1} s at 5 per second"
    );
    assert!(
        done < 100,
        "all 100 done after {elapsed:.1} s at 5 per second"
    );
}

#[test]
fn events_list_filters_by_source() {
    let h = Test::new().start_on(sim_with(3));
    assert_eq!(
        h.post(&account_event("Subscriber/Updated", 9201, 1000889))
            .0,
        200
    );
    reconcile(&h.sim, &h.state, &["--customer", "777", "--rate", "0"]).code(0);
    let list = |source: &str| {
        Test::new()
            .env("ESPFD_STATE_DIR", h.state.0.display().to_string())
            .args(&["events", "list", "--source", source])
            .run()
            .code(0)
            .stdout()
    };
    let rec = list("reconcile");
    assert_eq!(rec.matches("Reconcile/Account").count(), 3, "{rec}");
    assert!(!rec.contains("9201"), "{rec}");
    let espf = list("espf");
    assert!(
        espf.contains("9201") && !espf.contains("Reconcile/Account"),
        "{espf}"
    );
    Test::new()
        .env("ESPFD_STATE_DIR", h.state.0.display().to_string())
        .args(&["events", "list", "--source", "other"])
        .run()
        .code(64);
}

#[test]
fn a_walk_killed_half_way_completes_once_when_run_again() {
    // PortaBilling answers slowly, so that the command is still paging when it is killed.
    let sim = Sim::start(
        "127.0.0.1:0",
        SimConfig {
            pb_latency: Duration::from_millis(400),
            ..SimConfig::default()
        },
    )
    .unwrap();
    put_accounts(&sim, 1500);
    let state = TempDir::new("rc-kill");
    // An earlier walk queued a part (r5000__: 100 accounts); they are still open.
    reconcile(&sim, &state, &["--id", "r5000__"])
        .code(0)
        .stdout_has("100 reconcile events queued");
    let mut child = Test::new()
        .sim_env(&sim, &state)
        .args(&["reconcile", "--customer", "777"])
        .command()
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pages = || sim.requests_to("/rest/Account/get_account_list").len();
    assert!(eventually(Duration::from_secs(20), || pages() >= 2));
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGKILL) };
    child.wait().unwrap();
    assert_eq!(
        reconcile_events(&store(&state)).len(),
        100,
        "the killed walk queued some"
    );

    reconcile(&sim, &state, &["--customer", "777"])
        .code(0)
        .stdout_has("1400 reconcile events queued, 100 accounts left out");
    let accounts = per_account(&reconcile_events(&store(&state)));
    assert_eq!(accounts.len(), 1500);
    assert!(
        accounts.values().all(|n| *n == 1),
        "an account queued twice"
    );
}

#[test]
fn a_walk_queued_while_the_service_is_stopped_runs_at_its_next_start() {
    let sim = sim_with(20);
    let state = TempDir::new("rc-stopped");
    let service = Test::new().sim_env(&sim, &state);
    let mut first = service.spawn();
    first.signal(libc::SIGTERM);
    first.wait();
    reconcile(&sim, &state, &["--customer", "777", "--rate", "0"]).code(0);
    assert_eq!(done_count(&store(&state)), 0);
    assert!(sim.target_calls().is_empty());
    let _second = service.spawn();
    assert!(
        eventually(Duration::from_secs(30), || done_count(&store(&state)) == 20),
        "done: {}",
        done_count(&store(&state))
    );
    assert_eq!(
        sim.target_calls()
            .iter()
            .filter(|c| c.i_event.is_some_and(|i| i < 0))
            .count(),
        20
    );
}
