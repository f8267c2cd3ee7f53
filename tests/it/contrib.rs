//! contrib/: the example env file stays in step with the variables, the scripts are valid
//! POSIX sh, the dashboard asks only for metrics that exist, and the example exec
//! connectors do their job with jq and with python3.
//!
//! jq, python3 and sqlite3 must be installed (`.ci/run` installs them); shellcheck is used
//! when present and its absence is said, not hidden.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use espfd::config::VARS;
use serde_json::{json, Value};

use crate::harness::{TempDir, Test};

fn contrib(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("contrib")
        .join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(contrib(path)).unwrap_or_else(|e| panic!("contrib/{path}: {e}"))
}

fn need(tool: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "{tool} is not installed; install it (apt-get install {tool}) — .ci/run does"
    );
}

#[test]
fn the_readme_configuration_reference_lists_every_variable() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let reference = readme
        .split("## Configuration reference")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .expect("README has a Configuration reference section");
    let missing: Vec<&str> = VARS
        .iter()
        .map(|v| v.name)
        .filter(|name| !reference.contains(&format!("| `{name}`")))
        .collect();
    assert!(missing.is_empty(), "not in the README's table: {missing:?}");
}

#[test]
fn env_example_lists_every_variable_with_its_default() {
    let text = read("espfd.env.example");
    // NAME=value of every line, commented out or not.
    let assignments: Vec<(String, String, bool)> = text
        .lines()
        .filter_map(|l| {
            let (commented, l) = match l.strip_prefix("# ") {
                Some(rest) => (true, rest),
                None => (false, l),
            };
            let (k, v) = l.split_once('=')?;
            (k.starts_with("ESPFD_") || k == "RUST_LOG")
                .then(|| (k.to_string(), v.trim_matches('"').to_string(), commented))
        })
        .collect();
    for var in VARS {
        let lines: Vec<&(String, String, bool)> = assignments
            .iter()
            .filter(|(k, _, _)| k == var.name || *k == format!("{}_FILE", var.name))
            .collect();
        assert!(
            !lines.is_empty(),
            "{} is not in contrib/espfd.env.example",
            var.name
        );
        // A commented-out line shows the default.
        if let Some(default) = var.default {
            for (k, v, commented) in &lines {
                if *commented && k == var.name {
                    assert_eq!(v, default, "{k}: the example shows another default");
                }
            }
        }
    }
    for (k, _, _) in &assignments {
        let known = VARS
            .iter()
            .any(|v| v.name == k || (v.secret && k.strip_suffix("_FILE") == Some(v.name)));
        assert!(
            known,
            "contrib/espfd.env.example names {k}, which espfd does not read"
        );
    }
}

const SCRIPTS: &[&str] = &[
    "init.d/espfd",
    "openrc/espfd",
    "runit/espfd/run",
    "runit/espfd/finish",
    "runit/espfd/log/run",
    "connectors/freeradius-users.sh",
    "connectors/sqlite-table.sh",
];

#[test]
fn scripts_are_posix_sh_and_pass_shellcheck() {
    let shellcheck = Command::new("shellcheck").arg("--version").output().is_ok();
    if !shellcheck {
        eprintln!("NOTE: shellcheck is not installed; only `sh -n` was run (.ci/run installs it)");
    }
    for script in SCRIPTS {
        let path = contrib(script);
        let out = Command::new("sh").arg("-n").arg(&path).output().unwrap();
        assert!(
            out.status.success(),
            "sh -n {script}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert!(mode & 0o111 != 0, "{script} is not executable");
        if shellcheck {
            let out = Command::new("shellcheck")
                .args(["--shell=sh", "--severity=style"])
                .arg(&path)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "shellcheck {script}:\n{}",
                String::from_utf8_lossy(&out.stdout)
            );
        }
    }
}

#[test]
fn dashboard_uses_only_metrics_espfd_serves() {
    let dash: Value = serde_json::from_str(&read("grafana/espfd-dashboard.json")).unwrap();
    let panels = dash["panels"].as_array().unwrap();
    assert!(panels.len() >= 8);
    let mut seen = std::collections::BTreeSet::new();
    for p in panels {
        for t in p["targets"].as_array().unwrap() {
            let expr = t["expr"].as_str().unwrap();
            for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                if let Some(name) = word.strip_prefix("espfd_") {
                    let name = format!("espfd_{name}");
                    let base = ["_bucket", "_sum", "_count"]
                        .iter()
                        .find_map(|s| name.strip_suffix(s))
                        .unwrap_or(&name);
                    assert!(
                        espfd::metrics::NAMES.contains(&base),
                        "panel {:?} asks for {name}",
                        p["title"]
                    );
                    seen.insert(base.to_string());
                }
            }
        }
    }
    for name in espfd::metrics::NAMES {
        assert!(seen.contains(*name), "no panel shows {name}");
    }
}

/// The document espfd's exec connector gets for an account event (built by the same code).
fn account_doc(i_event: i64, entity: Option<Value>) -> String {
    let variables = json!({"i_event": i_event, "i_account": 1000889});
    let body = json!({"event_type": "Subscriber/Updated", "variables": variables}).to_string();
    let event = espfd::event::Event::parse(body.as_bytes()).unwrap();
    // 2026-11-27T09:49:18.518Z
    espfd::enrich::Context::new(&event, 1_795_772_958_518, 1, "Netaccess", entity).document
}

fn account(password: &str, blocked: &str, bill_status: &str) -> Value {
    json!({"i_account": 1000889, "id": "12065550100", "i_customer": 6392,
           "product_name": "SIP business line", "bill_status": bill_status, "blocked": blocked,
           "firstname": "Sam", "lastname": "O'Kafor", "email": "sam@cascade.example.com",
           "h323_password": password})
}

/// Runs a connector with `doc` on stdin; returns (exit code, last line of output).
fn connector(
    script: &str,
    tool: &str,
    env: &[(&str, &Path)],
    i_event: i64,
    doc: &str,
) -> (i32, String) {
    let mut child = Command::new("sh")
        .arg(contrib(script))
        .env("JSON_TOOL", tool)
        .envs(env.iter().map(|(k, v)| (*k, v.as_os_str())))
        .env("ESPFD_I_EVENT", i_event.to_string())
        .env("ESPFD_EVENT_TYPE", "Subscriber/Updated")
        .env("ESPFD_ENTITY_KIND", "account")
        .env("ESPFD_ENTITY_ID", "1000889")
        .env("ESPFD_I_ACCOUNT", "1000889")
        .env("ESPFD_ATTEMPT", "1")
        .env("ESPFD_GROUP", "Netaccess")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(doc.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.stderr.is_empty(),
        "{script} wrote to stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let last = stdout.lines().last().unwrap_or("").to_string();
    (out.status.code().unwrap(), last)
}

#[test]
fn freeradius_connector_maintains_the_users_file_with_jq() {
    freeradius_connector_maintains_the_users_file("jq");
}

#[test]
fn freeradius_connector_maintains_the_users_file_with_python3() {
    freeradius_connector_maintains_the_users_file("python3");
}

fn freeradius_connector_maintains_the_users_file(tool: &str) {
    need(tool);
    let dir = TempDir::new("radius");
    let users = dir.0.join("authorize");
    let own = "# the operator's own entries stay\nDEFAULT Auth-Type := Reject\n";
    std::fs::write(&users, own).unwrap();
    let env = [
        ("RADIUS_USERS_FILE", users.as_path()),
        ("RADIUS_LOCK_WAIT", Path::new("1")),
        // The file only: the reload is tested against a real FreeRADIUS (freeradius.rs).
        ("RADIUS_RELOAD", Path::new("none")),
    ];
    let run = |i_event, doc: String| {
        connector("connectors/freeradius-users.sh", tool, &env, i_event, &doc)
    };
    let file = || std::fs::read_to_string(&users).unwrap();

    let (code, msg) = run(1, account_doc(1, Some(account(r#"pa"ss\w"#, "N", "O"))));
    assert_eq!(
        (code, msg.as_str()),
        (
            0,
            "freeradius-users: 12065550100 may log in (i_event 1; not reloaded: RADIUS_RELOAD=none)"
        ),
        "{tool}"
    );
    assert_eq!(
        file(),
        format!("{own}# espfd i_account=1000889 begin\n'12065550100' Cleartext-Password := 'pa\"ss\\\\w'\n# espfd i_account=1000889 end\n"),
        "{tool}"
    );

    // A new password replaces the entry; the same state again changes nothing.
    assert_eq!(run(2, account_doc(2, Some(account("new", "N", "O")))).0, 0);
    assert_eq!(
        file().matches("begin").count(),
        1,
        "{tool}: one entry per account"
    );
    assert!(file().contains("Cleartext-Password := 'new'"));
    let (code, msg) = run(3, account_doc(3, Some(account("new", "N", "O"))));
    assert_eq!(code, 0);
    assert!(msg.contains("unchanged"), "{msg}");

    // Blocked: an explicit reject.
    assert_eq!(run(4, account_doc(4, Some(account("new", "Y", "O")))).0, 0);
    assert!(
        file().contains("'12065550100' Auth-Type := Reject"),
        "{tool}"
    );

    // No password in the record: FAILED with the reason.
    let mut nopw = account("", "N", "O");
    nopw.as_object_mut().unwrap().remove("h323_password");
    let (code, msg) = run(5, account_doc(5, Some(nopw)));
    assert_eq!(code, 1, "{tool}");
    assert!(msg.contains("no h323_password"), "{msg}");

    // Deleted in PortaBilling (entity null): the entry goes, the rest stays.
    let (code, msg) = run(6, account_doc(6, None));
    assert_eq!(
        (code, msg.as_str()),
        (
            0,
            "freeradius-users: account 1000889 removed (i_event 6; not reloaded: RADIUS_RELOAD=none)"
        )
    );
    assert_eq!(file(), own, "{tool}");
    let leftovers: Vec<_> = std::fs::read_dir(&dir.0)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "authorize.espfd-lock")
        .collect();
    assert_eq!(leftovers, ["authorize"], "no temporary file left");

    // Another process holding the lock: try again later.
    let lock = dir.0.join("authorize.espfd-lock");
    let mut holder = Command::new("flock")
        .arg(&lock)
        .args(["sleep", "30"])
        .spawn()
        .unwrap();
    let held = || {
        !Command::new("flock")
            .args(["-n"])
            .arg(&lock)
            .arg("true")
            .status()
            .unwrap()
            .success()
    };
    while !held() {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let (code, msg) = run(7, account_doc(7, Some(account("x", "N", "O"))));
    let _ = holder.kill();
    let _ = holder.wait();
    assert_eq!(code, 75, "{tool}: {msg}");
    assert!(msg.contains("another run"), "{msg}");
}

#[test]
fn sqlite_connector_upserts_and_deletes_rows_with_jq() {
    sqlite_connector_upserts_and_deletes_rows("jq");
}

#[test]
fn sqlite_connector_upserts_and_deletes_rows_with_python3() {
    sqlite_connector_upserts_and_deletes_rows("python3");
}

fn sqlite_connector_upserts_and_deletes_rows(tool: &str) {
    need("sqlite3");
    need(tool);
    let dir = TempDir::new("sqlconn");
    let db = dir.0.join("crm").join("subscribers.db");
    let env = [("SQLITE_DB", db.as_path())];
    let run =
        |i_event, doc: String| connector("connectors/sqlite-table.sh", tool, &env, i_event, &doc);
    let rows = || -> Vec<(i64, String, String, String, i64, String)> {
        let conn = rusqlite::Connection::open(&db).unwrap();
        let mut stmt = conn
            .prepare(
                "SELECT i_account, id, lastname, blocked, last_i_event, record FROM subscribers",
            )
            .unwrap();
        stmt.query_map([], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
            ))
        })
        .unwrap()
        .map(Result::unwrap)
        .collect()
    };

    let (code, msg) = run(11, account_doc(11, Some(account("pw", "N", "O"))));
    assert_eq!(
        (code, msg.as_str()),
        (
            0,
            "sqlite-table: account 1000889 stored in subscribers (i_event 11)"
        ),
        "{tool}"
    );
    let r = rows();
    assert_eq!(r.len(), 1);
    assert_eq!(
        (r[0].0, r[0].1.as_str(), r[0].2.as_str()),
        (1000889, "12065550100", "O'Kafor")
    );
    let record: Value = serde_json::from_str(&r[0].5).unwrap();
    assert_eq!(record["email"], "sam@cascade.example.com");
    assert!(
        record.get("h323_password").is_none(),
        "no password in the table"
    );

    // The next event updates the same row.
    assert_eq!(run(12, account_doc(12, Some(account("pw", "Y", "O")))).0, 0);
    let r = rows();
    assert_eq!(r.len(), 1, "{tool}");
    assert_eq!((r[0].3.as_str(), r[0].4), ("Y", 12));

    // Gone from PortaBilling: the row goes.
    let (code, msg) = run(13, account_doc(13, None));
    assert_eq!(code, 0, "{msg}");
    assert!(msg.contains("deleted from subscribers"), "{msg}");
    assert!(rows().is_empty(), "{tool}");

    // Not JSON: FAILED.
    assert_eq!(run(14, "not json".into()).0, 1, "{tool}");
}

/// A NAME=value line as the SysV, OpenRC and runit scripts read it (leading blanks and
/// `export ` dropped, one pair of surrounding quotes removed); `None` for anything else.
fn env_assignment(line: &str) -> Option<(String, String)> {
    let line = line.trim_start();
    let line = line.strip_prefix("export ").unwrap_or(line);
    let (k, v) = line.split_once('=')?;
    let valid = !k.is_empty()
        && !k.starts_with(|c: char| c.is_ascii_digit())
        && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        return None;
    }
    let v = [('"', '"'), ('\'', '\'')]
        .iter()
        .find_map(|(a, b)| v.strip_prefix(*a)?.strip_suffix(*b))
        .unwrap_or(v);
    Some((k.to_string(), v.to_string()))
}

/// NAME=value pairs of an env file, in order.
type Env = Vec<(String, String)>;

/// The example's active assignments and its commented-out ones (`# NAME=value`), in order.
fn env_example() -> (Env, Env) {
    let (mut active, mut commented) = (Vec::new(), Vec::new());
    for line in read("espfd.env.example").lines() {
        match line.strip_prefix("# ") {
            Some(rest) => commented.extend(env_assignment(rest)),
            None if line.starts_with('#') || line.trim().is_empty() => {}
            None => active
                .push(env_assignment(line).unwrap_or_else(|| panic!("not NAME=value: {line:?}"))),
        }
    }
    (active, commented)
}

/// The example with a change: `set` lines uncommented (or changed), `drop` lines taken out.
fn env_variant(
    active: &[(String, String)],
    set: &[(String, String)],
    drop: &[&str],
) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = active
        .iter()
        .filter(|(k, _)| !drop.contains(&k.as_str()) && !set.iter().any(|(s, _)| s == k))
        .cloned()
        .collect();
    env.extend(set.iter().cloned());
    env
}

#[test]
fn every_commented_out_line_of_the_env_example_passes_espfd_check() {
    use espfd::sim::{Sim, SimConfig};

    use crate::support::{Certs, Key};

    let (active, commented) = env_example();
    // The format's own rule: no comment after a value (it would become part of the value).
    for (k, v) in active.iter().chain(&commented) {
        assert!(
            !v.contains(" #") && !v.contains("\t#"),
            "contrib/espfd.env.example: {k}={v}: a comment after the value becomes part of it"
        );
    }
    // Every authentication scheme is named in the comment just above ESPFD_AUTH=.
    let text = read("espfd.env.example");
    let lines: Vec<&str> = text.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.starts_with("ESPFD_AUTH="))
        .expect("ESPFD_AUTH= in the example");
    let auth_comment: Vec<&str> = lines[..at]
        .iter()
        .rev()
        .take_while(|l| l.starts_with('#'))
        .copied()
        .collect();
    let auth_comment = auth_comment.join(" ");
    for scheme in ["basic", "custom", "signature", "none"] {
        assert!(
            auth_comment.contains(scheme),
            "the ESPFD_AUTH comment omits {scheme}: {auth_comment}"
        );
    }

    // The files and URLs the example names, made real on this machine: the files under a
    // scratch directory, PortaBilling, the ESPF API and the target at a simulator (the
    // example's hosts are not ours to call).
    let sim = Sim::start("127.0.0.1:0", SimConfig::default()).unwrap();
    let scratch = TempDir::new("env-example");
    let root = scratch.0.display().to_string();
    let certs = Certs::new();
    let leaf = certs.leaf("server", Key::EcSec1);
    let client = certs.client_leaf("client", Key::EcSec1);
    let cfg = sim.config();
    let files: Vec<(&str, Vec<u8>)> = vec![
        (
            "etc/espfd/auth-password",
            b"eventsender password\n".to_vec(),
        ),
        ("etc/espfd/auth-custom", b"Plain passexample\n".to_vec()),
        ("etc/espfd/auth-key", b"signature key\n".to_vec()),
        (
            "etc/espfd/pb-token",
            format!("{}\n", cfg.token).into_bytes(),
        ),
        (
            "etc/espfd/pb-password",
            format!("{}\n", cfg.password).into_bytes(),
        ),
        ("etc/espfd/callback-token", b"callback token\n".to_vec()),
        ("etc/espfd/target-password", b"target password\n".to_vec()),
        ("etc/espfd/target-token", b"target token\n".to_vec()),
        ("etc/espfd/target-header", b"X-API-Key: abc\n".to_vec()),
        (
            "etc/espfd/target-oauth-secret",
            format!("{}\n", espfd::sim::DATAVERSE_CLIENT_SECRET).into_bytes(),
        ),
        ("etc/espfd/target-ca.pem", std::fs::read(&certs.ca).unwrap()),
        (
            "etc/espfd/target-client.pem",
            std::fs::read(&client.cert).unwrap(),
        ),
        (
            "etc/espfd/target-client.key",
            std::fs::read(&client.key).unwrap(),
        ),
        (
            "etc/espfd/portabilling-ca.pem",
            std::fs::read(&certs.ca).unwrap(),
        ),
        ("etc/espfd/tls/cert.pem", std::fs::read(&leaf.cert).unwrap()),
        ("etc/espfd/tls/key.pem", std::fs::read(&leaf.key).unwrap()),
        (
            "usr/local/lib/espfd/freeradius-users.sh",
            b"#!/bin/sh\nexit 0\n".to_vec(),
        ),
        ("var/lib/espfd/.keep", Vec::new()),
        (
            "etc/espfd/templates/pyhss.http",
            std::fs::read("contrib/templates/pyhss.http").unwrap(),
        ),
        (
            "etc/espfd/templates/pyhss-subscriber.json",
            std::fs::read("contrib/templates/pyhss-subscriber.json").unwrap(),
        ),
    ];
    for (path, content) in &files {
        let p = scratch.0.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, content).unwrap();
    }
    std::fs::remove_file(scratch.0.join("var/lib/espfd/.keep")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    let exec = scratch.0.join("usr/local/lib/espfd/freeradius-users.sh");
    std::fs::set_permissions(&exec, std::fs::Permissions::from_mode(0o755)).unwrap();
    let localize = |(k, v): &(String, String)| -> (String, String) {
        let v = v
            .replace("https://portabilling.example.net", &sim.url())
            .replace("http://127.0.0.1:9000/provision", &sim.target_url())
            .replace(
                "https://login.example.net/tenant/",
                &format!("{}/oauth/tenant/", sim.url()),
            );
        let v = ["/etc/espfd/", "/usr/local/lib/espfd/", "/var/lib/espfd"]
            .iter()
            .fold(v, |v, p| v.replace(p, &format!("{root}{p}")));
        (k.clone(), v)
    };
    let mut active: Vec<(String, String)> = active.iter().map(localize).collect();
    // The example leaves ESPFD_STATE_DIR at its default (the init scripts choose one per
    // instance); check must not create /var/lib/espfd on this machine.
    if !active.iter().any(|(k, _)| k == "ESPFD_STATE_DIR") {
        active.push(("ESPFD_STATE_DIR".into(), format!("{root}/var/lib/espfd")));
    }
    // The example's API user stands for the operator's; the simulator knows its own.
    for (k, v) in active.iter_mut() {
        if k == "ESPFD_PB_LOGIN" {
            *v = cfg.login.clone();
        }
    }
    let commented: Vec<(String, String)> = commented.iter().map(localize).collect();
    let line = |name: &str| -> (String, String) {
        commented
            .iter()
            .find(|(k, _)| k == name)
            .unwrap_or_else(|| panic!("{name} is not commented out in the example"))
            .clone()
    };

    // What each variant changes: one commented-out line uncommented, except where the
    // example says the lines go together (the TLS pair) or one replaces another.
    let target_auth = |s: &str| ("ESPFD_TARGET_AUTH".to_string(), s.to_string());
    let mut variants: Vec<(String, Env, Vec<&str>)> =
        vec![("the example as shipped".into(), vec![], vec![])];
    for (k, v) in &commented {
        let (set, drop) = match k.as_str() {
            "ESPFD_TLS_CERT" | "ESPFD_TLS_KEY" => {
                (vec![line("ESPFD_TLS_CERT"), line("ESPFD_TLS_KEY")], vec![])
            }
            "ESPFD_TARGET_TLS_CERT" | "ESPFD_TARGET_TLS_KEY" => (
                vec![line("ESPFD_TARGET_TLS_CERT"), line("ESPFD_TARGET_TLS_KEY")],
                vec![],
            ),
            // Each outbound scheme's lines go with ESPFD_TARGET_AUTH set to it.
            "ESPFD_TARGET_USER" | "ESPFD_TARGET_PASSWORD_FILE" => (
                vec![
                    target_auth("basic"),
                    line("ESPFD_TARGET_USER"),
                    line("ESPFD_TARGET_PASSWORD_FILE"),
                ],
                vec![],
            ),
            "ESPFD_TARGET_TOKEN_FILE" => {
                (vec![target_auth("bearer"), (k.clone(), v.clone())], vec![])
            }
            "ESPFD_TARGET_HEADER_FILE" => {
                (vec![target_auth("header"), (k.clone(), v.clone())], vec![])
            }
            "ESPFD_TARGET_OAUTH_URL"
            | "ESPFD_TARGET_OAUTH_CLIENT_ID"
            | "ESPFD_TARGET_OAUTH_CLIENT_SECRET_FILE"
            | "ESPFD_TARGET_OAUTH_SCOPE" => (
                vec![
                    target_auth("oauth2"),
                    line("ESPFD_TARGET_OAUTH_URL"),
                    line("ESPFD_TARGET_OAUTH_CLIENT_ID"),
                    line("ESPFD_TARGET_OAUTH_CLIENT_SECRET_FILE"),
                    line("ESPFD_TARGET_OAUTH_SCOPE"),
                ],
                vec![],
            ),
            // "Or, instead of ESPFD_TARGET_URL, a command".
            "ESPFD_TARGET_EXEC" => (vec![(k.clone(), v.clone())], vec!["ESPFD_TARGET_URL"]),
            // "Or, instead of both, a request template", with the settings it lists.
            "ESPFD_TARGET_TEMPLATE" => (
                vec![
                    (k.clone(), v.clone()),
                    (
                        "ESPFD_SETTING_PYHSS_URL".into(),
                        format!("{}/pyhss", sim.url()),
                    ),
                    (
                        "ESPFD_SECRET_PYHSS_KEY".into(),
                        "pyhss-provisioning-key".into(),
                    ),
                ],
                vec!["ESPFD_TARGET_URL"],
            ),
            _ => (vec![(k.clone(), v.clone())], vec![]),
        };
        variants.push((format!("{k}={v} uncommented"), set, drop));
    }
    // Each authentication scheme with the lines of its section.
    let scheme = |s: &str| ("ESPFD_AUTH".to_string(), s.to_string());
    variants.push((
        "ESPFD_AUTH=custom".into(),
        vec![scheme("custom"), line("ESPFD_AUTH_CUSTOM_FILE")],
        vec![],
    ));
    variants.push((
        "ESPFD_AUTH=signature".into(),
        vec![
            scheme("signature"),
            line("ESPFD_AUTH_KEY_ID"),
            line("ESPFD_AUTH_KEY_FILE"),
            line("ESPFD_AUTH_MAX_SKEW"),
        ],
        vec![],
    ));
    variants.push((
        "ESPFD_AUTH=none".into(),
        vec![scheme("none")],
        vec!["ESPFD_AUTH_USER", "ESPFD_AUTH_PASSWORD_FILE"],
    ));

    let (mut tls_checked, mut oauth_checked) = (false, false);
    for (what, set, drop) in &variants {
        let env = env_variant(&active, set, drop);
        let mut test = Test::new().args(&["check"]);
        for (k, v) in &env {
            test = test.env(k, v.clone());
        }
        let run = test.run();
        let report = run.stdout();
        assert_eq!(
            run.0.status.code(),
            Some(0),
            "{what}: espfd check did not pass:\n{report}{}",
            run.stderr()
        );
        assert!(
            report.starts_with("ok   configuration"),
            "{what}:\n{report}"
        );
        assert!(
            report.lines().all(|l| l.starts_with("ok   ")),
            "{what}:\n{report}"
        );
        tls_checked |= report.contains("ok   TLS key matches the certificate");
        oauth_checked |= report.contains("ok   OAuth 2.0 token fetched from");
    }
    assert!(
        oauth_checked,
        "no variant had OAuth 2.0: the token line was not found"
    );
    assert!(
        tls_checked,
        "no variant had HTTPS: the TLS lines were not found"
    );
}
