//! Ingest benchmark: durable event intake of the real `espfd` binary, over loopback.
//!
//! Run with `cargo bench --bench ingest` (optimised build). It starts the simulators in this
//! process, starts `espfd` as a child process against them, and prints:
//! - idle resident memory of espfd;
//! - throughput and latency percentiles at 8 and at 64 keep-alive connections, every 200
//!   sent only after the event was committed and fsync'd;
//! - peak resident memory under that load;
//! - a check that every acknowledged event is in the store, and how fast the workers then
//!   drained the backlog through PortaBilling, the target and ESPF (simulated).
//!
//! The load generator runs on the same cores as espfd, as it would on a small appliance
//! that also runs other things. Sizes: BENCH_EVENTS_8 (default 20000), BENCH_EVENTS_64
//! (default 200000); BENCH_ESPFD_BIN runs another build of espfd (e.g. the static one).

mod common;
use common::{env_u64, Espfd};

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use espfd::cli::load::{self, LoadSpec};
use espfd::sim::{Sim, SimConfig};
use espfd::util::base64_encode;

/// (current RSS, peak RSS) of a process in KiB.
fn rss_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn count_stored(db: &Path) -> i64 {
    let reader = espfd::store::Reader::open(db).expect("open store");
    reader.total_count().expect("count")
}

fn main() {
    let n8 = env_u64("BENCH_EVENTS_8", 20_000);
    let n64 = env_u64("BENCH_EVENTS_64", 200_000);
    let sim = Sim::start("127.0.0.1:0", SimConfig::default()).expect("start simulators");
    // Keep the simulator's memory flat over hundreds of thousands of calls.
    sim.set_record_limit(Some(1000));
    let state = std::env::temp_dir().join(format!("espfd-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&state);
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
        l.local_addr().expect("addr").port()
    };
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    // BENCH_ESPFD_BIN measures another build, e.g. the static musl binary.
    let bin = std::env::var("BENCH_ESPFD_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_espfd").to_string());
    println!("binary: {bin}");
    let child = Command::new(&bin)
        .env_clear()
        .env("ESPFD_LISTEN", addr.to_string())
        .env("ESPFD_AUTH_USER", "espf")
        .env("ESPFD_AUTH_PASSWORD", "bench")
        .envs(sim.espfd_env())
        .env("ESPFD_STATE_DIR", &state)
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start espfd");
    let espfd = Espfd(child);
    let pid = espfd.0.id();
    let ready = Instant::now();
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(
            ready.elapsed() < Duration::from_secs(10),
            "espfd did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(500));
    let (idle_rss, _) = rss_kib(pid);

    let auth = format!("Basic {}", base64_encode(b"espf:bench"));
    let spec = |connections: usize, total: u64, offset: u64| LoadSpec {
        connections,
        headers: load::fixed_header("Authorization", &auth),
        ..LoadSpec::new(addr, "/events", total, move |n| {
            let i = n + offset;
            format!(
                r#"{{"event_type":"Subscriber/Updated","variables":{{"i_event":{},"i_account":{}}}}}"#,
                i + 1,
                100_000 + i % 5000
            )
            .into_bytes()
        })
    };

    println!(
        "espfd ingest benchmark ({} cores)",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!("idle RSS: {:.1} MiB", idle_rss as f64 / 1024.0);

    let r8 = load::run(spec(8, n8, 0));
    println!("8 connections:  {}", r8.summary());
    let r64 = load::run(spec(64, n64, n8));
    println!("64 connections: {}", r64.summary());
    let (_, peak) = rss_kib(pid);
    println!("peak RSS under load: {:.1} MiB", peak as f64 / 1024.0);

    let acked =
        r8.codes.get(&200).copied().unwrap_or(0) + r64.codes.get(&200).copied().unwrap_or(0);
    let stored = count_stored(&state.join("espfd.db"));
    println!("acknowledged: {acked}, stored: {stored}");

    // Drain: how fast the workers push the backlog through PortaBilling, target and ESPF.
    let drain_start = Instant::now();
    let mut last = 0;
    while drain_start.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(500));
        last = sim.target_calls_total();
        if last as i64 >= stored {
            break;
        }
    }
    println!(
        "processing (lookup + target + ESPF status, simulated, same machine): {last} events in the first {:.1} s of drain",
        drain_start.elapsed().as_secs_f64()
    );
    let (rss_end, peak_end) = rss_kib(pid);
    println!(
        "RSS after drain: {:.1} MiB (peak {:.1} MiB)",
        rss_end as f64 / 1024.0,
        peak_end as f64 / 1024.0
    );
    drop(espfd);
    sim.shutdown();
    let _ = std::fs::remove_dir_all(&state);
    if stored < acked as i64 {
        eprintln!("LOST EVENTS: {acked} acknowledged but only {stored} stored");
        std::process::exit(1);
    }
}
