//! `espfd simulate` as an operator uses it: start it, take the printed environment, point an
//! espfd (here `espfd check`) at it, stop it with SIGTERM and read the summary.

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};

use crate::harness::{TempDir, Test, BIN};

#[test]
fn prints_its_environment_serves_it_and_sums_up_on_sigterm() {
    let mut sim = Command::new(BIN)
        .args(["simulate", "--listen", "127.0.0.1:0", "--group", "IOT"])
        .env_clear()
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(sim.stdout.take().unwrap());
    let mut exports: Vec<(String, String)> = Vec::new();
    let mut banner = String::new();
    loop {
        let mut line = String::new();
        assert!(
            stdout.read_line(&mut line).unwrap() > 0,
            "simulate ended early"
        );
        banner.push_str(&line);
        if let Some(kv) = line.trim_end().strip_prefix("export ") {
            let (k, v) = kv.split_once('=').unwrap();
            exports.push((k.to_string(), v.to_string()));
        }
        if line.starts_with("# SIGINT") {
            break;
        }
    }
    for control in [
        "/_sim/account/1000889",
        "POST   /_sim/account/<i_account>",
        "DELETE /_sim/account/<i_account>",
        "POST   /_sim/target {\"mode\": M}",
        "POST   /_sim/portabilling {\"mode\": M}",
        "GET    /_sim/target, /_sim/portabilling",
        "up, 503, reset, blackhole",
    ] {
        assert!(banner.contains(control), "{control} missing:\n{banner}");
    }
    let names: Vec<&str> = exports.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        names,
        [
            "ESPFD_PB_URL",
            "ESPFD_PB_LOGIN",
            "ESPFD_PB_PASSWORD",
            "ESPFD_GROUP",
            "ESPFD_TARGET_URL"
        ]
    );

    // An espfd configured from those lines finds everything it needs.
    let state = TempDir::new("simulate");
    let mut check = Test::new().args(&["check"]);
    for (k, v) in &exports {
        check = check.env(k, v.clone());
    }
    check
        .env("ESPFD_AUTH_USER", "espf")
        .env("ESPFD_AUTH_PASSWORD", "x")
        .env("ESPFD_STATE_DIR", state.0.display().to_string())
        .env("ESPFD_GROUP", "IOT")
        .run()
        .code(0);

    let pid = sim.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).unwrap();
    let mut log = String::new();
    sim.stderr.take().unwrap().read_to_string(&mut log).unwrap();
    let status = sim.wait().unwrap();
    assert!(status.success(), "{status:?}");
    for want in [
        "espfd simulate: stopped after",
        "GET /espf/v1/groups",
        "POST /rest/Session/login",
        "OPTIONS /target",
        "PortaBilling logins: 1",
    ] {
        assert!(
            rest.contains(want),
            "{want} missing from the summary:\n{rest}"
        );
    }
    // One log line per request: method, path, reply.
    assert!(log.contains("POST /rest/Session/login → 200"), "{log}");
    assert!(log.contains("GET /espf/v1/groups → 200"), "{log}");
}

#[test]
fn help_and_bad_flags() {
    Test::new()
        .args(&["simulate", "--help"])
        .run()
        .code(0)
        .stdout_has("--target-failure-rate")
        .stdout_has("POST   /_sim/account/<i_account>")
        .stdout_has("DELETE /_sim/account/<i_account>")
        .stdout_has("POST   /_sim/target {\"mode\": M}")
        .stdout_has("POST   /_sim/portabilling {\"mode\": M}")
        .stdout_has("GET    /_sim/target, /_sim/portabilling")
        .stdout_has("\"blackhole\"");
    for bad in [
        &["simulate", "--pb-failure-rate", "7"][..],
        &["simulate", "--nope"][..],
        &["simulate", "--listen"][..],
    ] {
        Test::new()
            .args(bad)
            .run()
            .code(64)
            .stderr_has("espfd simulate --help");
    }
    // An address that cannot be bound.
    Test::new()
        .args(&["simulate", "--listen", "256.0.0.1:1"])
        .run()
        .code(1);
}
