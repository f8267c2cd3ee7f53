//! Crash test: events keep arriving while espfd is killed with SIGKILL at random moments and
//! restarted on the same state dir. Every event that got a 200 must reach the target and end
//! with a final status at the ESPF API. Prints what it measured; exits non-zero on a loss.
//!
//! It runs twice: as configured by default, and with `ESPFD_COALESCE=on`, where an event may
//! instead be finished as coalesced into a newer event of its account — which then must have
//! reached the target and have its final status.
//!
//! Run alone with `cargo test --release --test crash` (it is part of `cargo test` too).
//! Sizes: CRASH_EVENTS (default 1200), CRASH_KILLS (default 6).

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use espfd::sim::{Sim, SimConfig};
use espfd::util::jitter_u64;

// The integration tests' helper: how espfd is started, and the event bodies.
#[path = "it/harness.rs"]
#[allow(dead_code)]
mod harness;

use harness::{account_event, basic, TempDir, Test, PASSWORD, USER};

const SENDERS: u64 = 4;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Sends one event until espfd answers 200 (ESPF retries too); `false` if it never did.
fn send_until_acked(
    agent: &ureq::Agent,
    url: &str,
    auth: &str,
    i_event: u64,
    stop: &AtomicBool,
) -> bool {
    let body = account_event(
        "Subscriber/Updated",
        i_event as i64,
        200_000 + (i_event % 50) as i64,
    );
    while !stop.load(Ordering::Relaxed) {
        let reply = agent
            .post(url)
            .header("Content-Type", "application/json")
            .header("Authorization", auth)
            .send(body.as_str());
        if let Ok(r) = reply {
            if r.status().as_u16() == 200 {
                return true;
            }
        }
        thread::sleep(Duration::from_millis(20));
    }
    false
}

fn main() {
    let plain = round(false);
    let coalescing = round(true);
    if plain && coalescing {
        println!("crash: 1 passed, 0 failed");
    } else {
        println!("crash: 0 passed, 1 failed");
        std::process::exit(1);
    }
}

/// One crash run; whether nothing acknowledged was lost.
fn round(coalesce: bool) -> bool {
    let events = env_u64("CRASH_EVENTS", 1200);
    let kills_wanted = env_u64("CRASH_KILLS", 6);
    let sim = Sim::start("127.0.0.1:0", SimConfig::default()).expect("simulators");
    let state = TempDir::new("crash");
    let test = Test::new()
        .sim_env(&sim, &state)
        .env("RUST_LOG", "off")
        .env("ESPFD_COALESCE", if coalesce { "on" } else { "off" });
    let first = test.spawn();
    // Every restart listens where the first one did: the senders keep one URL.
    let addr: SocketAddr = first.addr;
    let url = format!("http://{addr}/events");
    let auth = basic(USER, PASSWORD);

    let child = Arc::new(Mutex::new(first));
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(HashSet::new()));
    let started = Instant::now();

    // Senders: events 1..=N split over a few connections, paced to span the kills.
    let senders: Vec<_> = (0..SENDERS)
        .map(|s| {
            let (url, auth, stop, acked) = (url.clone(), auth.clone(), stop.clone(), acked.clone());
            thread::spawn(move || {
                let agent: ureq::Agent = ureq::Agent::config_builder()
                    .http_status_as_error(false)
                    .timeout_global(Some(Duration::from_secs(5)))
                    .build()
                    .into();
                let mut i = s + 1;
                while i <= events {
                    if send_until_acked(&agent, &url, &auth, i, &stop) {
                        acked.lock().unwrap().insert(i);
                    }
                    i += SENDERS;
                    thread::sleep(Duration::from_millis(8));
                }
            })
        })
        .collect();

    // Killer: SIGKILL at random moments while events arrive, restart at once.
    let mut kills = 0;
    while kills < kills_wanted || senders.iter().any(|s| !s.is_finished()) {
        thread::sleep(Duration::from_millis(150 + jitter_u64() % 450));
        if started.elapsed() > Duration::from_secs(120) {
            break;
        }
        let mut c = child.lock().unwrap();
        c.signal(libc::SIGKILL);
        c.wait();
        kills += 1;
        *c = test.spawn_at(addr);
        if kills >= kills_wanted && senders.iter().all(|s| s.is_finished()) {
            break;
        }
    }
    for s in senders {
        let _ = s.join();
    }
    let sent_for = started.elapsed();
    let acked: HashSet<u64> = acked.lock().unwrap().clone();

    // Let the last incarnation finish the backlog.
    let deadline = Instant::now() + Duration::from_secs(120);
    let (mut delivered, mut reported);
    loop {
        delivered = HashSet::new();
        for c in sim.target_calls() {
            if c.status == 200 {
                if let Some(i) = c.i_event {
                    delivered.insert(i as u64);
                }
            }
        }
        reported = HashSet::new();
        for s in sim.statuses() {
            if s.status == "OK" {
                if let Some(i) = s
                    .message
                    .strip_prefix("provisioned ")
                    .and_then(|v| v.trim().parse::<u64>().ok())
                {
                    reported.insert(i);
                }
            }
        }
        let covered = |i: &u64| {
            delivered.contains(i) && reported.contains(i)
                || into(&state, *i).is_some_and(|n| delivered.contains(&n) && reported.contains(&n))
        };
        let done = acked.iter().all(covered);
        if done || Instant::now() > deadline {
            break;
        }
        thread::sleep(Duration::from_millis(200));
    }
    stop.store(true, Ordering::Relaxed);
    {
        let mut c = child.lock().unwrap();
        c.signal(libc::SIGKILL);
        c.wait();
    }

    let mut per_event: HashMap<u64, usize> = HashMap::new();
    for c in sim.target_calls() {
        if let Some(i) = c.i_event {
            *per_event.entry(i as u64).or_default() += 1;
        }
    }
    let total_calls: usize = per_event.values().sum();
    let duplicates = total_calls - per_event.len();
    // A coalesced event counts as delivered and reported through the newer one it names.
    let stand_in: HashMap<u64, u64> = acked
        .iter()
        .filter(|i| !delivered.contains(i))
        .filter_map(|&i| into(&state, i).map(|n| (i, n)))
        .collect();
    let via = |i: &u64| *stand_in.get(i).unwrap_or(i);
    let lost_target: Vec<u64> = acked
        .iter()
        .filter(|i| !delivered.contains(&via(i)))
        .copied()
        .collect();
    let lost_status: Vec<u64> = acked
        .iter()
        .filter(|i| !reported.contains(&via(i)))
        .copied()
        .collect();

    println!(
        "crash test{}: {events} events sent over {:.1} s with {kills} SIGKILLs and restarts",
        if coalesce { " (ESPFD_COALESCE=on)" } else { "" },
        sent_for.as_secs_f64()
    );
    if coalesce {
        println!("  coalesced into a newer event: {}", stand_in.len());
    }
    println!("  acknowledged (200): {}", acked.len());
    println!("  delivered to the target: {} acknowledged events, {total_calls} target calls, {duplicates} duplicate calls", acked.len() - lost_target.len());
    println!(
        "  final status at the ESPF API: {}",
        acked.len() - lost_status.len()
    );
    println!(
        "  lost: {} at the target, {} without a final status",
        lost_target.len(),
        lost_status.len()
    );
    sim.shutdown();
    drop(state);
    kills >= kills_wanted
        && acked.len() as u64 == events
        && lost_target.is_empty()
        && lost_status.is_empty()
}

/// The event that was delivered for `i_event` when it was coalesced, if the store says it
/// was: the newer event it names, or the one that event was coalesced into in turn (a crash
/// before the newer one's delivery can leave it queued behind later events of its account).
fn into(state: &TempDir, i_event: u64) -> Option<u64> {
    let reader = espfd::store::Reader::open(&state.0.join("espfd.db")).ok()?;
    let next = |i: u64| -> Option<u64> {
        let row = reader.get(i as i64).ok()??;
        if row.state != espfd::store::State::Done {
            return None;
        }
        row.message?
            .strip_prefix("coalesced into i_event ")?
            .parse()
            .ok()
    };
    let mut at = next(i_event)?;
    for _ in 0..1000 {
        match next(at) {
            Some(n) => at = n,
            None => return Some(at),
        }
    }
    None
}
