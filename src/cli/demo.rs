//! `espfd demo`: the whole flow on one machine, with nothing else installed.
//!
//! Starts the simulated PortaBilling, ESPF API and target (`src/sim`) and a real espfd in
//! this process, sends a handful of events the way ESPF would, prints every step, checks
//! what the simulators received, and exits 0 once every event reached its final status.

use std::collections::BTreeSet;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use crossbeam_channel::unbounded;

use crate::config::RawConfig;
use crate::error::Error;
use crate::pipeline::Step;
use crate::service::Service;
use crate::sim::{Sim, SimConfig};
use crate::util::base64_encode;

const DEMO_USER: &str = "espf";
const DEMO_PASSWORD: &str = "demo-password";

/// The events the demo sends: (description, body).
fn events() -> Vec<(&'static str, String)> {
    vec![
        ("a new account", r#"{"event_type":"Subscriber/Created","variables":{"i_account":1000889,"i_event":7615}}"#.into()),
        ("an updated account (ids as strings, as in PortaOne's example)", r#"{"event_type":"Subscriber/Updated","variables":{"i_event":"7616","i_account":"1000889"}}"#.into()),
        ("a customer (the target fails once with 503)", r#"{"event_type":"Customer/Updated","variables":{"i_customer":2543,"i_event":7617}}"#.into()),
        ("a DID", r#"{"event_type":"DID/Updated","variables":{"number":"16045550123","i_event":7618}}"#.into()),
        ("an account PortaBilling no longer knows", r#"{"event_type":"Subscriber/Deleted","variables":{"i_account":999999,"i_event":7619}}"#.into()),
        ("a repeated delivery of i_event 7615", r#"{"event_type":"Subscriber/Created","variables":{"i_account":1000889,"i_event":7615}}"#.into()),
    ]
}

/// Runs the demo.
pub fn run() -> Result<ExitCode, Error> {
    let sim = Sim::start("127.0.0.1:0", SimConfig::default())
        .map_err(|e| Error::io("demo: cannot start the simulators", e))?;
    sim.script_target(7617, &[(503, None)]);

    let state_dir = std::env::temp_dir().join(format!(
        "espfd-demo-{}-{}",
        std::process::id(),
        crate::util::now_ms()
    ));
    let mut raw = RawConfig::from_lookup(|_| None)?;
    for (name, value) in sim.espfd_env() {
        raw.set(name, value);
    }
    raw.set("ESPFD_LISTEN", "127.0.0.1:0")
        .set("ESPFD_AUTH", "basic")
        .set("ESPFD_AUTH_USER", DEMO_USER)
        .set("ESPFD_AUTH_PASSWORD", DEMO_PASSWORD)
        .set("ESPFD_WORKERS", "2")
        .set("ESPFD_RETRY_INITIAL", "300ms")
        .set("ESPFD_STATE_DIR", state_dir.display().to_string());
    let config = raw.validate()?;

    println!("espfd demo");
    println!("  simulated PortaBilling + ESPF API at {}", sim.url());
    println!(
        "  simulated target (your HSS/PCRF/CRM...) at {}",
        sim.target_url()
    );
    println!("  event store in {}", state_dir.display());

    let (tx, rx) = unbounded();
    let service = Service::start(&config, Some(tx))?;
    let url = format!("http://{}{}", service.local_addr(), config.events_path);
    println!("  espfd listening at {url} (basic auth {DEMO_USER}:***)");

    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    let auth = format!(
        "Basic {}",
        base64_encode(format!("{DEMO_USER}:{DEMO_PASSWORD}").as_bytes())
    );
    let mut expected = BTreeSet::new();
    let mut finished = BTreeSet::new();
    let mut ok = true;
    let follow = |until: Instant, finished: &mut BTreeSet<i64>| {
        while let Some(left) = until.checked_duration_since(Instant::now()) {
            let Ok(step) = rx.recv_timeout(left) else {
                break;
            };
            print_step(&step);
            if let Step::Finished { i_event, .. } = step {
                finished.insert(i_event);
            }
        }
    };
    for (what, body) in events() {
        let reply = agent
            .post(&url)
            .header("Content-Type", "application/json")
            .header("Authorization", &auth)
            .header(
                "Date",
                crate::util::format_http_date(crate::util::now_ms() / 1000),
            )
            .send(body.as_str());
        let code = reply.map(|r| r.status().as_u16()).unwrap_or(0);
        println!("\nESPF → espfd: {what}: HTTP {code}");
        ok &= code == 200;
        if let Ok(ev) = crate::event::Event::parse(body.as_bytes()) {
            expected.insert(ev.i_event);
        }
        // Show what happens to this event before sending the next one.
        follow(Instant::now() + Duration::from_millis(250), &mut finished);
    }
    println!();
    let deadline = Instant::now() + Duration::from_secs(30);
    while finished.len() < expected.len() && Instant::now() < deadline {
        follow(Instant::now() + Duration::from_millis(200), &mut finished);
    }
    // Let any late steps print.
    while let Ok(step) = rx.recv_timeout(Duration::from_millis(100)) {
        print_step(&step);
    }
    let logins = service.pb_logins();
    service.shutdown(Duration::from_secs(2));

    let calls = sim.target_calls();
    let statuses = sim.statuses();
    let first_calls = calls.iter().filter(|c| c.doc["i_event"] == 7615).count();
    println!("\nWhat the simulators saw:");
    println!(
        "  target calls: {} (i_event 7615 delivered {first_calls} time(s) despite the repeat)",
        calls.len()
    );
    println!("  ESPF status reports: {}", statuses.len());
    for s in &statuses {
        println!(
            "    i_account {}: {} [{}] {}",
            s.i_account, s.status, s.group, s.message
        );
    }
    println!("  PortaBilling logins: {logins}");
    sim.shutdown();
    let _ = std::fs::remove_dir_all(&state_dir);

    let all_done = finished == expected;
    ok &= all_done && first_calls == 1;
    if ok {
        println!("\ndemo OK: every event reached its final status");
        Ok(ExitCode::SUCCESS)
    } else {
        let missing: Vec<_> = expected.difference(&finished).collect();
        println!("\ndemo FAILED: unfinished events {missing:?}, i_event 7615 delivered {first_calls} times");
        Ok(ExitCode::FAILURE)
    }
}

fn print_step(step: &Step) {
    match step {
        Step::Received {
            i_event,
            event_type,
            entity,
            repeat,
        } => {
            if *repeat {
                println!("[{i_event}] received again: already stored, not processed a second time");
            } else {
                println!("[{i_event}] received {event_type} ({entity}), stored durably");
            }
        }
        Step::LookedUp {
            i_event,
            entity,
            found,
        } => {
            let what = if *found {
                "found"
            } else {
                "not found (sent to the target as null)"
            };
            println!("[{i_event}] looked up {entity} in PortaBilling: {what}");
        }
        Step::Delivered { i_event, outcome } => println!("[{i_event}] sent to target: {outcome}"),
        Step::Reported {
            i_event,
            i_account,
            status,
        } => {
            println!("[{i_event}] reported {status} to ESPF for i_account {i_account}")
        }
        Step::Retrying {
            i_event,
            attempt,
            delay_ms,
            reason,
        } => {
            println!("[{i_event}] attempt {attempt} failed ({reason}); retrying in {delay_ms} ms")
        }
        Step::Finished {
            i_event,
            state,
            message,
        } => println!("[{i_event}] finished: {state} ({message})"),
    }
}
