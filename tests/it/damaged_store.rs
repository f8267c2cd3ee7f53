//! A damaged store: espfd refuses to start on it, naming the file and the way out, and the
//! README's recovery steps, run as written, give it a store it starts on.

use std::io::{Seek, SeekFrom, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use espfd::sim::{Sim, SimConfig};
use espfd::store::{NewEvent, Store};

use crate::harness::{eventually, sim_env, TempDir};
use crate::harness::{Espfd, Test, BIN};

/// A store with `n` events, closed cleanly (its WAL folded back into the file).
fn store_with_events(dir: &TempDir, n: i64) {
    let (store, writer) = Store::open(&dir.0, 1).unwrap();
    for i in 1..=n {
        let body = format!(
            r#"{{"event_type":"Subscriber/Updated","variables":{{"i_event":{i},"i_account":{}}},"pad":"{}"}}"#,
            1000 + i,
            "x".repeat(300)
        );
        store
            .insert(NewEvent {
                i_event: i,
                event_type: "Subscriber/Updated".into(),
                body,
                entity: format!("account:{}", 1000 + i),
                received_at: 1,
            })
            .unwrap();
    }
    drop(store);
    writer.join();
}

/// The shell block of the README between `<!-- recover:begin -->` and `<!-- recover:end -->`.
fn readme_recovery_block() -> String {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let start = readme
        .find("<!-- recover:begin -->")
        .expect("README has a recovery block");
    let end = readme[start..].find("<!-- recover:end -->").unwrap() + start;
    let block = &readme[start..end];
    let code_start = block.find("```sh\n").unwrap() + 6;
    let code_end = block[code_start..].find("```").unwrap() + code_start;
    block[code_start..code_end].to_string()
}

#[test]
fn espfd_refuses_a_damaged_store_and_the_readme_recovers_it() {
    let sim = Sim::start("127.0.0.1:0", SimConfig::default()).unwrap();
    let state = TempDir::new("damaged");
    store_with_events(&state, 1000);
    let db = state.0.join("espfd.db");
    assert!(std::fs::metadata(&db).unwrap().len() > 64 * 4096);

    // A disk error: a run of pages in the middle overwritten.
    let mut f = std::fs::OpenOptions::new().write(true).open(&db).unwrap();
    f.seek(SeekFrom::Start(4096 * 20)).unwrap();
    f.write_all(&[0xA5; 4096 * 8]).unwrap();
    f.sync_all().unwrap();
    drop(f);
    let before = std::fs::read(&db).unwrap();

    let mut child = Command::new(BIN)
        .env_clear()
        .envs(sim_env(&sim, &state))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let exited = eventually(Duration::from_secs(20), || {
        child.try_wait().unwrap().is_some()
    });
    if !exited {
        let _ = child.kill();
    }
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(exited, "espfd started on a damaged store: {stderr}");
    assert_eq!(out.status.code(), Some(78), "{stderr}");
    assert!(stderr.contains(&db.display().to_string()), "{stderr}");
    assert!(
        stderr.contains("is damaged") && stderr.contains("quick_check"),
        "{stderr}"
    );
    assert!(stderr.contains("Recovering a damaged store"), "{stderr}");
    assert_eq!(
        std::fs::read(&db).unwrap(),
        before,
        "the file was left as it was"
    );

    // The README's steps, with the state directory of this test.
    let script = readme_recovery_block().replace("/var/lib/espfd", &state.0.display().to_string());
    let out = Command::new("sh").arg("-ec").arg(&script).output().unwrap();
    assert!(
        out.status.success(),
        "the README's recovery steps failed ({}); sqlite3 is needed (apt-get install sqlite3):\n{script}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(state.0.join("espfd.db.damaged").exists());

    let mut env = sim_env(&sim, &state);
    env.retain(|(k, _)| *k != "ESPFD_LISTEN");
    let mut espfd = Espfd::spawn(&env, None);
    assert!(espfd.running(), "{}", espfd.log());
    let listed = Test::new()
        .env("ESPFD_STATE_DIR", state.0.display().to_string())
        .args(&["events", "list", "--limit", "1000"])
        .run()
        .code(0)
        .stdout()
        .lines()
        .count()
        - 1;
    assert!(listed > 800, "most events were recovered: {listed} of 1000");
}
