//! `espfd render`: the requests a connector would send for one event, secrets masked, with
//! and without `--send`; nothing stored, nothing reported either way.

use std::path::{Path, PathBuf};
use std::time::Duration;

use espfd::sim::{Sim, SimConfig, PYHSS_PROVISIONING_KEY};

use crate::harness::{account_event, basic, eventually, post, TempDir, Test, PASSWORD, USER};

const ACCOUNT: i64 = 277_147; // has SIM card 250991234567890 in the simulator

fn pyhss() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/templates/pyhss.http")
}

/// `espfd` with the pyhss example against `sim`, state in `state`.
fn with_template(sim: &Sim, state: &TempDir) -> Test {
    Test::new()
        .sim_env(sim, state)
        .unset("ESPFD_TARGET_URL")
        .env("ESPFD_TARGET_TEMPLATE", pyhss().display().to_string())
        .env("ESPFD_SETTING_PYHSS_URL", format!("{}/pyhss", sim.url()))
        .env("ESPFD_SECRET_PYHSS_KEY", PYHSS_PROVISIONING_KEY)
}

fn event_file(state: &TempDir, i_event: i64) -> String {
    let path = state.0.join(format!("event-{i_event}.json"));
    std::fs::create_dir_all(&state.0).unwrap();
    std::fs::write(&path, account_event("Subscriber/Updated", i_event, ACCOUNT)).unwrap();
    path.display().to_string()
}

fn pyhss_calls(sim: &Sim) -> usize {
    sim.requests()
        .iter()
        .filter(|r| r.path.starts_with("/pyhss/"))
        .count()
}

#[test]
fn a_dry_run_shows_the_first_request_masks_the_secret_and_sends_nothing() {
    let sim = Sim::start("127.0.0.1:0", SimConfig::default()).unwrap();
    let state = TempDir::new("render-dry");
    let file = event_file(&state, 41);
    let run = with_template(&sim, &state)
        .args(&["render", "--event", &file])
        .run()
        .code(0);
    let out = run.stdout();
    assert!(out.contains("### step lookup"), "{out}");
    assert!(
        out.contains(&format!(
            "GET {}/pyhss/subscriber/imsi/250991234567890",
            sim.url()
        )),
        "{out}"
    );
    assert!(out.contains("Provisioning-Key: ***"), "{out}");
    assert!(out.contains("Idempotency-Key: 41"), "{out}");
    assert!(
        out.contains("# needs the reply of step lookup; use --send"),
        "{out}"
    );
    assert!(!out.contains(PYHSS_PROVISIONING_KEY), "{out}");
    assert!(!run.stderr().contains(PYHSS_PROVISIONING_KEY));
    assert_eq!(pyhss_calls(&sim), 0, "a dry run sent something");
    assert!(sim.statuses().is_empty());
    assert!(!state.0.join("espfd.db").exists(), "render created a store");
}

#[test]
fn send_sends_shows_the_replies_and_the_outcome_and_reports_nothing() {
    let sim = Sim::start("127.0.0.1:0", SimConfig::default()).unwrap();
    let state = TempDir::new("render-send");
    let file = event_file(&state, 42);
    let run = with_template(&sim, &state)
        .args(&["render", "--event", &file, "--send"])
        .run()
        .code(0);
    let out = run.stdout();
    assert!(out.contains("# -> HTTP 200"), "{out}");
    assert!(
        out.contains(&format!("PUT {}/pyhss/subscriber/", sim.url())),
        "{out}"
    );
    assert!(out.contains("\"imsi\": \"250991234567890\""), "{out}");
    assert!(out.contains("# outcome: OK"), "{out}");
    assert!(!out.contains(PYHSS_PROVISIONING_KEY), "{out}");
    // The lookup and the create reached PyHSS; ESPF heard nothing.
    assert_eq!(pyhss_calls(&sim), 2);
    assert!(sim.statuses().is_empty());
    assert!(!state.0.join("espfd.db").exists());
}

#[test]
fn a_stored_event_is_rendered_by_its_id_and_an_entity_file_replaces_the_lookup() {
    let sim = Sim::start("127.0.0.1:0", SimConfig::default()).unwrap();
    sim.set_target_failure_rate(1.0);
    let state = TempDir::new("render-stored");
    // Store an event with a running service whose target fails, then stop it.
    let mut d = Test::new().sim_env(&sim, &state).spawn();
    let url = format!("http://{}/events", d.addr);
    let body = account_event("Subscriber/Updated", 43, ACCOUNT);
    assert_eq!(post(&url, Some(&basic(USER, PASSWORD)), &body).0, 200);
    assert!(eventually(Duration::from_secs(10), || sim
        .target_calls_total()
        > 0));
    d.signal(libc::SIGTERM);
    d.wait();

    let lookups_before = sim.requests_to("/rest/Account/get_account_info").len();
    let entity = state.0.join("entity.json");
    std::fs::write(&entity, r#"{"i_account": 277147, "bill_status": "C"}"#).unwrap();
    let run = with_template(&sim, &state)
        .args(&["render", "43", "--entity", &entity.display().to_string()])
        .run()
        .code(0);
    let out = run.stdout();
    assert!(out.contains("Idempotency-Key: 43"), "{out}");
    assert_eq!(
        sim.requests_to("/rest/Account/get_account_info").len(),
        lookups_before,
        "--entity must replace the lookup"
    );
}

#[test]
fn a_template_that_does_not_load_is_exit_78_naming_the_file_and_line() {
    let sim = Sim::start("127.0.0.1:0", SimConfig::default()).unwrap();
    let state = TempDir::new("render-bad");
    std::fs::create_dir_all(&state.0).unwrap();
    let bad = state.0.join("bad.http");
    std::fs::write(&bad, "### one\n# @okay 200\nGET http://x/\n").unwrap();
    let file = event_file(&state, 44);
    Test::new()
        .sim_env(&sim, &state)
        .unset("ESPFD_TARGET_URL")
        .env("ESPFD_TARGET_TEMPLATE", bad.display().to_string())
        .args(&["render", "--event", &file])
        .run()
        .code(78)
        .stderr_has("ESPFD_TARGET_TEMPLATE")
        .stderr_has("bad.http line 2: unknown annotation @okay");
}

#[test]
fn the_authentication_header_is_listed_with_its_value_masked() {
    let sim = Sim::start("127.0.0.1:0", SimConfig::default()).unwrap();
    let state = TempDir::new("render-auth");
    let file = event_file(&state, 45);
    let run = with_template(&sim, &state)
        .env("ESPFD_TARGET_AUTH", "bearer")
        .env("ESPFD_TARGET_TOKEN", "tok-SECRET-77")
        .args(&["render", "--event", &file])
        .run()
        .code(0);
    let out = run.stdout();
    assert!(out.contains("Authorization: ***"), "{out}");
    assert!(!out.contains("tok-SECRET-77"), "{out}");
}

#[test]
fn usage_errors_are_exit_64() {
    Test::new().args(&["render"]).run().code(64);
    Test::new()
        .args(&["render", "1", "--event", "x.json"])
        .run()
        .code(64);
    Test::new()
        .args(&["render", "--help"])
        .run()
        .code(0)
        .stdout_has("espfd render I_EVENT");
}
