//! `espfd check` against the simulators: every check passes on a good configuration, and
//! each broken setting is reported with the variable to fix.

use espfd::sim::{Sim, SimConfig};

use crate::harness::{TempDir, Test};

/// Runs `espfd check` with the simulator's environment changed by `tweak` (name, value;
/// an empty value unsets). Returns (exit code, stdout).
fn check(sim: &Sim, state: &TempDir, tweak: &[(&str, &str)]) -> (i32, String) {
    let mut test = Test::new().args(&["check"]).sim_env(sim, state);
    for (k, v) in tweak {
        test = if v.is_empty() {
            test.unset(k)
        } else {
            test.env(k, *v)
        };
    }
    let run = test.run();
    assert_eq!(run.stderr(), "", "check writes its report on stdout only");
    (run.0.status.code().unwrap(), run.stdout())
}

/// The one FAIL line of the report, checking it names `var`.
fn fail_line<'a>(report: &'a str, var: &str) -> &'a str {
    let fails: Vec<&str> = report.lines().filter(|l| l.starts_with("FAIL ")).collect();
    let line = fails
        .iter()
        .find(|l| l.ends_with(&format!("(fix {var})")))
        .unwrap_or_else(|| panic!("no FAIL line naming {var}:\n{report}"));
    line
}

#[test]
fn every_check_passes_against_the_simulator() {
    let sim = Sim::start("127.0.0.1:0", SimConfig::default()).unwrap();
    let state = TempDir::new("check");
    let (code, report) = check(&sim, &state, &[]);
    assert_eq!(code, 0, "{report}");
    for line in report.lines() {
        assert!(line.starts_with("ok   "), "{report}");
    }
    for what in [
        "ok   configuration",
        "ok   state directory",
        "ok   PortaBilling login as espfd",
        "ok   PortaBilling lookup",
        "service group HSS exists",
        "ok   target",
    ] {
        assert!(report.contains(what), "{what} missing:\n{report}");
    }
    // It really went to each place, and changed nothing there.
    assert!(sim.logins() >= 1);
    assert_eq!(sim.requests_to("/espf/v1/groups").len(), 1);
    assert!(sim
        .requests()
        .iter()
        .any(|r| r.method == "OPTIONS" && r.path == "/target"));
    assert!(sim.target_calls().is_empty(), "no document was sent");
    assert!(sim.statuses().is_empty(), "no status was reported");
    assert!(
        !state.0.join("espfd.db").exists(),
        "a store that did not exist was not created"
    );
    assert_eq!(
        std::fs::read_dir(&state.0).unwrap().count(),
        0,
        "no scratch file left"
    );

    // ESPF basic auth passes too, and an existing store is opened.
    let (code, report) = {
        let (store, writer) = espfd::store::Store::open(&state.0, 1).unwrap();
        drop(store);
        writer.join();
        check(&sim, &state, &[("ESPFD_ESPF_AUTH", "basic")])
    };
    assert_eq!(code, 0, "{report}");
    assert!(
        report.contains("store espfd.db opens: 0 events, 0 open"),
        "{report}"
    );
}

#[test]
fn a_wrong_portabilling_password_names_espfd_pb_password() {
    let sim = Sim::start("127.0.0.1:0", SimConfig::default()).unwrap();
    let state = TempDir::new("check");
    let (code, report) = check(&sim, &state, &[("ESPFD_PB_PASSWORD", "Wr0ng-Passw0rd")]);
    assert_eq!(code, 1, "{report}");
    let line = fail_line(&report, "ESPFD_PB_PASSWORD");
    assert!(line.starts_with("FAIL PortaBilling login"), "{line}");
    assert!(line.contains("refused"), "{line}");
    assert!(
        !report.contains("Wr0ng-Passw0rd"),
        "the password is not printed:\n{report}"
    );
    // The other checks still ran.
    assert!(report.contains("ok   target"), "{report}");
}

#[test]
fn an_unknown_group_names_espfd_group() {
    let sim = Sim::start("127.0.0.1:0", SimConfig::default()).unwrap();
    let state = TempDir::new("check");
    let (code, report) = check(&sim, &state, &[("ESPFD_GROUP", "NoSuchGroup")]);
    assert_eq!(code, 1, "{report}");
    let line = fail_line(&report, "ESPFD_GROUP");
    assert!(
        line.contains("'NoSuchGroup' is not in PortaBilling's list"),
        "{line}"
    );
    assert!(line.contains("HSS"), "the known groups are listed: {line}");
    assert_eq!(report.matches("FAIL").count(), 1, "{report}");
}

#[test]
fn an_unreachable_target_names_espfd_target_url() {
    let sim = Sim::start("127.0.0.1:0", SimConfig::default()).unwrap();
    let state = TempDir::new("check");
    // A port that was free a moment ago: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}/provision");
    let (code, report) = check(&sim, &state, &[("ESPFD_TARGET_URL", &url)]);
    assert_eq!(code, 1, "{report}");
    let line = fail_line(&report, "ESPFD_TARGET_URL");
    assert!(line.contains("unreachable"), "{line}");
}

#[test]
fn an_unwritable_state_dir_names_espfd_state_dir() {
    let sim = Sim::start("127.0.0.1:0", SimConfig::default()).unwrap();
    let state = TempDir::new("check");
    // A regular file where the directory should be: unwritable even for root.
    let file = state.0.join("not-a-dir");
    std::fs::write(&file, "x").unwrap();
    for dir in [file.clone(), file.join("below")] {
        let (code, report) = check(&sim, &state, &[("ESPFD_STATE_DIR", dir.to_str().unwrap())]);
        assert_eq!(code, 1, "{report}");
        fail_line(&report, "ESPFD_STATE_DIR");
    }
}

#[test]
fn unreachable_portabilling_and_bad_tls_files_name_their_variables() {
    let sim = Sim::start("127.0.0.1:0", SimConfig::default()).unwrap();
    let state = TempDir::new("check");
    let junk = state.0.join("cert.pem");
    std::fs::write(&junk, "not a certificate\n").unwrap();
    let (code, report) = check(
        &sim,
        &state,
        &[
            ("ESPFD_PB_URL", "http://127.0.0.1:1"),
            ("ESPFD_TLS_CERT", junk.to_str().unwrap()),
            ("ESPFD_TLS_KEY", "/nonexistent/espfd.key"),
        ],
    );
    assert_eq!(code, 1, "{report}");
    assert!(fail_line(&report, "ESPFD_PB_URL").starts_with("FAIL PortaBilling login"));
    assert!(fail_line(&report, "ESPFD_TLS_CERT").contains("no PEM certificate"));
    assert!(fail_line(&report, "ESPFD_TLS_KEY").contains("cannot read"));
}

#[test]
fn a_configuration_error_exits_78_naming_the_variable() {
    let sim = Sim::start("127.0.0.1:0", SimConfig::default()).unwrap();
    let state = TempDir::new("check");
    let (code, report) = check(&sim, &state, &[("ESPFD_PB_URL", "")]);
    assert_eq!(code, 78, "{report}");
    assert_eq!(
        report.trim(),
        "FAIL configuration: is required but not set (fix ESPFD_PB_URL)"
    );
    assert!(sim.requests().is_empty(), "nothing was tried");
}

#[test]
fn an_exec_target_is_checked_without_running_it() {
    let sim = Sim::start("127.0.0.1:0", SimConfig::default()).unwrap();
    let state = TempDir::new("check");
    let marker = state.0.join("ran");
    let cmd = format!("touch {}", marker.display());
    let (code, report) = check(
        &sim,
        &state,
        &[("ESPFD_TARGET_URL", ""), ("ESPFD_TARGET_EXEC", &cmd)],
    );
    assert_eq!(code, 0, "{report}");
    assert!(report.contains("ok   target command touch"), "{report}");
    assert!(!marker.exists(), "check must not run the connector");

    let (code, report) = check(
        &sim,
        &state,
        &[
            ("ESPFD_TARGET_URL", ""),
            ("ESPFD_TARGET_EXEC", "/nonexistent/connector.sh --x"),
        ],
    );
    assert_eq!(code, 1, "{report}");
    assert!(fail_line(&report, "ESPFD_TARGET_EXEC").contains("not an executable command"));
}

#[test]
fn an_empty_secret_file_is_a_configuration_error_naming_it() {
    let sim = Sim::start("127.0.0.1:0", SimConfig::default()).unwrap();
    let state = TempDir::new("check-empty");
    let empty = state.0.join("empty-secret");
    std::fs::write(&empty, "\n").unwrap();
    let empty = empty.display().to_string();
    // Each of these once let an empty value through: an empty ESPF password accepted, the
    // callback endpoint open without a token, a valid PortaBilling password overridden.
    for (var, unset) in [
        ("ESPFD_AUTH_PASSWORD_FILE", "ESPFD_AUTH_PASSWORD"),
        ("ESPFD_CALLBACK_TOKEN_FILE", "ESPFD_CALLBACK_TOKEN"),
        ("ESPFD_PB_TOKEN_FILE", "ESPFD_PB_TOKEN"),
    ] {
        let (code, report) = check(&sim, &state, &[(var, &empty), (unset, "")]);
        assert_eq!(code, 78, "{var}: {report}");
        let line = fail_line(&report, var);
        assert!(line.contains("is empty"), "{line}");

        Test::new()
            .sim_env(&sim, &state)
            .unset(unset)
            .env(var, empty.clone())
            .run()
            .code(78)
            .stderr_has(var)
            .stderr_has("is empty");
    }
}
