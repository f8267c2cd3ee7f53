//! Reconcile benchmark: `espfd reconcile --all --rate 0` over simulated PortaBilling
//! accounts, through the real `espfd` binary, and what the walk does to a live event.
//!
//! Run with `cargo bench --bench reconcile` (optimised build). It starts the simulators in
//! this process (target latency 10 ms, so one upstream round trip is visible), puts
//! BENCH_ACCOUNTS (default 10 000) accounts into the simulated PortaBilling, starts espfd as
//! a child process, and prints:
//! - a live event's delay (POST to its status report at the simulated ESPF API) while
//!   espfd is idle, median of BENCH_SAMPLES (default 9);
//! - how long the command took to page and queue every account, and how fast the service
//!   then processed the walk (accounts per second, lookup + target call + status report);
//! - a live event's delay sampled while the walk is processed, median and worst, next to
//!   the idle one: the goal is at most one upstream round trip more.
//!
//! It ends by checking that every account got its status report; it asserts nothing about
//! time. BENCH_ESPFD_BIN runs another build of espfd.

mod common;
use common::{env_u64, Espfd};

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use espfd::sim::{Sim, SimConfig};
use espfd::util::base64_encode;

/// The accounts reconcile walks: i_account FIRST.. (no event of ESPF's names them).
const FIRST: i64 = 600_000;
/// The account live events are about (also walked, like any other).
const LIVE_ACCOUNT: i64 = 277_147;
/// Latency of every simulated target call: the upstream round trip that is visible.
const TARGET_LATENCY: Duration = Duration::from_millis(10);

fn free_addr() -> std::net::SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
    l.local_addr().expect("addr")
}

/// The environment of an espfd on `sim` with its store in `state`, listening on `addr`.
fn env(sim: &Sim, state: &std::path::Path, addr: std::net::SocketAddr) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = sim
        .espfd_env()
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    env.extend([
        ("ESPFD_LISTEN".into(), addr.to_string()),
        ("ESPFD_AUTH_USER".into(), "espf".into()),
        ("ESPFD_AUTH_PASSWORD".into(), "bench".into()),
        ("ESPFD_STATE_DIR".into(), state.display().to_string()),
        ("RUST_LOG".into(), "error".into()),
    ]);
    env
}

/// Posts live event `i_event` and waits for its status report; how long that took.
fn live_delay(sim: &Sim, agent: &ureq::Agent, url: &str, i_event: i64) -> Duration {
    let auth = format!("Basic {}", base64_encode(b"espf:bench"));
    let body = json!({"event_type": "Subscriber/Updated",
                      "variables": {"i_event": i_event, "i_account": LIVE_ACCOUNT}})
    .to_string();
    let started = Instant::now();
    let resp = agent
        .post(url)
        .header("Authorization", &auth)
        .header("Content-Type", "application/json")
        .send(body.as_str())
        .expect("post");
    assert_eq!(resp.status().as_u16(), 200, "live event refused");
    let wanted = format!("provisioned {i_event}");
    loop {
        if sim
            .statuses()
            .iter()
            .any(|s| s.i_account == LIVE_ACCOUNT && s.message == wanted)
        {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "live event {i_event} not reported"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn main() {
    let accounts = env_u64("BENCH_ACCOUNTS", 10_000) as i64;
    let samples = env_u64("BENCH_SAMPLES", 9) as i64;
    let sim = Sim::start(
        "127.0.0.1:0",
        SimConfig {
            target_latency: TARGET_LATENCY,
            ..SimConfig::default()
        },
    )
    .expect("start simulators");
    for k in 0..accounts {
        let i_account = FIRST + k;
        sim.put_account(
            json!({"i_account": i_account, "id": format!("b{i_account}"),
                               "i_customer": 888, "bill_status": "O"}),
        );
    }
    let state = std::env::temp_dir().join(format!("espfd-bench-reconcile-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&state);
    let addr = free_addr();
    let bin = std::env::var("BENCH_ESPFD_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_espfd").to_string());
    let env = env(&sim, &state, addr);
    let _espfd = Espfd(
        Command::new(&bin)
            .env_clear()
            .envs(env.iter().cloned())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start espfd"),
    );
    let ready = Instant::now();
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(
            ready.elapsed() < Duration::from_secs(10),
            "espfd did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let url = format!("http://{addr}/events");
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();

    println!(
        "espfd reconcile benchmark ({} cores), {accounts} accounts, target latency {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        ms(TARGET_LATENCY)
    );
    let mut next_live = 1;
    let idle: Vec<Duration> = (0..samples)
        .map(|_| {
            next_live += 1;
            std::thread::sleep(Duration::from_millis(50));
            live_delay(&sim, &agent, &url, next_live)
        })
        .collect();
    let idle = median(idle);
    println!("live event while idle: {} (median of {samples})", ms(idle));

    let walk = Instant::now();
    let out = Command::new(&bin)
        .env_clear()
        .envs(env.iter().cloned())
        .args(["reconcile", "--customer", "888", "--rate", "0"])
        .output()
        .expect("run espfd reconcile");
    assert!(
        out.status.success(),
        "reconcile failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let queued_in = walk.elapsed();
    println!(
        "reconcile paged and queued {accounts} accounts in {:.1} s",
        queued_in.as_secs_f64()
    );

    // Live events while the walk is processed.
    let mut during = Vec::new();
    let reported = |sim: &Sim| {
        sim.statuses()
            .iter()
            .filter(|s| s.i_account >= FIRST && s.i_account < FIRST + accounts)
            .count() as i64
    };
    while reported(&sim) < accounts * 8 / 10 && (during.len() as i64) < samples {
        next_live += 1;
        during.push(live_delay(&sim, &agent, &url, next_live));
        std::thread::sleep(Duration::from_millis(200));
    }
    let deadline = Instant::now() + Duration::from_secs(600);
    while reported(&sim) < accounts && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let processed_in = walk.elapsed();
    let done = reported(&sim);
    let rate = done as f64 / processed_in.as_secs_f64();
    println!(
        "walk processed: {done} of {accounts} accounts reported in {:.1} s from the start of the command: {rate:.0} accounts/s",
        processed_in.as_secs_f64()
    );
    if !during.is_empty() {
        let worst = *during.iter().max().unwrap();
        let n = during.len();
        let mid = median(during);
        println!(
            "live event during the walk: median {}, worst {} ({n} samples; idle {}, one round trip {})",
            ms(mid),
            ms(worst),
            ms(idle),
            ms(TARGET_LATENCY)
        );
        let goal = idle + TARGET_LATENCY;
        println!(
            "goal (median within idle + one round trip = {}): {}",
            ms(goal),
            if mid <= goal { "met" } else { "missed" }
        );
    }
    let _ = std::fs::remove_dir_all(&state);
    if done < accounts {
        eprintln!("only {done} of {accounts} accounts were reported");
        std::process::exit(1);
    }
}
