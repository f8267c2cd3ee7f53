//! The real `espfd` binary: start-up errors, kill -9 and restart on the same state dir, the
//! demo.

use std::time::Duration;

use espfd::sim::{Sim, SimConfig};

use crate::harness::{account_event, basic, eventually, post, TempDir, Test, PASSWORD, USER};

#[test]
fn configuration_errors_name_the_variable_and_nothing_listens() {
    let port = free_port();
    Test::new()
        .env("ESPFD_LISTEN", format!("127.0.0.1:{port}"))
        .env("ESPFD_AUTH_USER", "u")
        .env("ESPFD_AUTH_PASSWORD", "p")
        .run()
        .code(78)
        .stderr_has("ESPFD_PB_URL");
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());

    Test::new()
        .env("ESPFD_WORKERS", "many")
        .run()
        .code(78)
        .stderr_has("ESPFD_");
}

#[test]
fn help_env_lists_variables_with_defaults() {
    let mut run = Test::new().args(&["help", "env"]).run().code(0);
    for v in [
        "ESPFD_LISTEN",
        "ESPFD_WORKERS",
        "ESPFD_STATE_DIR",
        "ESPFD_PB_PASSWORD*",
        "default: /var/lib/espfd",
        "ESPFD_TARGET_TEMPLATE",
        "ESPFD_SETTING_<NAME>",
        "ESPFD_SECRET_<NAME>*",
    ] {
        run = run.stdout_has(v);
    }
    Test::new().args(&["frobnicate"]).run().code(64);
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The binary against `sim`, retrying quickly.
fn daemon(sim: &Sim, state: &TempDir) -> Test {
    Test::new()
        .sim_env(sim, state)
        .env("ESPFD_RETRY_MAX_DELAY", "500ms")
        .env("RUST_LOG", "warn")
}

#[test]
fn kill_9_with_pending_events_then_restart_completes_them() {
    let sim = Sim::start("127.0.0.1:0", SimConfig::default()).unwrap();
    sim.set_target_failure_rate(1.0);
    let state = TempDir::new("kill");
    let mut first = daemon(&sim, &state).spawn();
    let url = format!("http://{}/events", first.addr);
    let auth = basic(USER, PASSWORD);
    let ids: Vec<i64> = (1..=30).collect();
    for &i in &ids {
        assert_eq!(
            post(
                &url,
                Some(&auth),
                &account_event("Subscriber/Updated", i, 1000 + i % 4)
            )
            .0,
            200
        );
    }
    assert!(eventually(Duration::from_secs(5), || !sim
        .target_calls()
        .is_empty()));
    first.signal(libc::SIGKILL);
    assert_eq!(first.wait().code(), None, "killed by the signal");

    sim.set_target_failure_rate(0.0);
    let _second = daemon(&sim, &state).spawn();
    let all_ok = eventually(Duration::from_secs(30), || {
        let calls = sim.target_calls();
        ids.iter().all(|i| {
            calls
                .iter()
                .any(|c| c.doc["i_event"] == *i && c.status == 200)
        })
    });
    assert!(
        all_ok,
        "every acknowledged event reached the target after the restart"
    );
    assert!(eventually(Duration::from_secs(10), || {
        let ok: std::collections::HashSet<i64> = sim
            .statuses()
            .iter()
            .filter(|s| s.status == "OK")
            .map(|s| s.i_account)
            .collect();
        (1000..1004).all(|a| ok.contains(&a))
    }));
}

#[test]
fn demo_runs_and_exits_zero() {
    Test::new()
        .env("RUST_LOG", "off")
        .args(&["demo"])
        .run()
        .code(0)
        .stdout_has("demo OK")
        .stdout_has("reported OK to ESPF")
        .stdout_has("not processed a second time");
}

#[test]
fn a_second_espfd_on_the_same_state_dir_refuses_to_start() {
    let sim = espfd::sim::Sim::start("127.0.0.1:0", espfd::sim::SimConfig::default()).unwrap();
    let state = crate::harness::TempDir::new("two-on-one");
    let mut env = crate::harness::sim_env(&sim, &state);
    env.retain(|(k, _)| *k != "ESPFD_LISTEN");
    let mut first = crate::harness::Espfd::spawn(&env, None);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = std::process::Command::new(crate::harness::BIN)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .env("ESPFD_LISTEN", format!("127.0.0.1:{port}"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{stderr}");
    assert!(
        stderr.contains("ESPFD_STATE_DIR")
            && stderr.contains(&format!("in use by another espfd (pid {})", first.pid())),
        "{stderr}"
    );
    assert!(first.running(), "the first one goes on");
    // Once the first has stopped, the directory is free again.
    first.signal(libc::SIGTERM);
    assert!(crate::harness::eventually(
        std::time::Duration::from_secs(10),
        || !first.running()
    ));
    let second = crate::harness::Espfd::spawn(&env, None);
    drop(second);
}
