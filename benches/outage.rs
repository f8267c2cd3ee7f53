//! Outage benchmark: how the real `espfd` binary behaves while an upstream is down, against
//! the goals of the resilience contract (/work/shared/resilience.md, README "Resilience").
//!
//! Run with `cargo bench --bench outage` (optimised build). Every scenario starts its own
//! simulators in this process and a fresh espfd as a child process (own state dir,
//! `RUST_LOG=info`, its log kept in a file whose path is printed), and prints:
//! 1. **target outage**: the target's port really closed (its simulator stopped, then started
//!    again on the same port) for BENCH_OUTAGE_SECS (default 120) while 5 000 events for 1 000
//!    accounts arrive at 200/s: the time from the target's return to the last status report,
//!    espfd's CPU over the outage after intake stopped, and the target calls espfd made during
//!    the outage (its own `espfd_call_duration_seconds_count{call="target"}`: a refused
//!    connection cannot be counted on the far side);
//! 2. **PortaBilling down with a backlog**: BENCH_BACKLOG (default 100 000) events posted
//!    over 64 connections while a simulator that serves only PortaBilling and the ESPF API
//!    closes every connection without a reply (`reset`); over the 30 s after the backlog is
//!    stored, the connections it accepted per second and espfd's CPU; then PortaBilling comes
//!    back and the backlog drains for up to BENCH_PB_DRAIN_SECS (default 60; the whole
//!    default backlog takes minutes), with nothing failed or missing;
//! 3. **blackholed target**: the calls espfd has in flight to a target that accepts and never
//!    answers (espfd's established connections to it, from `/proc`: the simulator's held
//!    count also keeps the calls espfd gave up on), sampled for 20 s after the breaker opened
//!    (with a 5 s target timeout, so the breaker opens within seconds);
//! 4. **a burst for one account**: 200 events for one account, 10 ms PortaBilling and target
//!    latency, with `ESPFD_COALESCE=on` and off: target calls and the time from the first POST
//!    to the last status report.
//!
//! It ends with one table, each figure beside its goal. It exits non-zero only when the run
//! itself went wrong (an event not acknowledged, lost or never delivered), never for a missed
//! goal. CPU is utime + stime from `/proc/<pid>/stat`, as a percentage of one core.
//! BENCH_ESPFD_BIN runs another build of espfd. Everything shares the same cores.

mod common;
use common::{cpu_time, env_u64};

use std::collections::{BTreeSet, HashSet};
use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use espfd::cli::load::{self, LoadReport, LoadSpec};
use espfd::sim::{Sim, SimConfig, UpstreamMode};
use espfd::util::{base64_encode, now_ms};

/// Accounts of the target-outage scenario, from this one on.
const FIRST_ACCOUNT: i64 = 700_000;
/// The account of the burst scenario.
const BURST_ACCOUNT: i64 = 800_000;
/// How long attempts and CPU are measured while PortaBilling is down.
const PB_WINDOW: Duration = Duration::from_secs(30);
/// How long calls in flight to the blackholed target are sampled.
const BLACKHOLE_WINDOW: Duration = Duration::from_secs(20);
/// `ESPFD_TARGET_TIMEOUT` of the blackhole scenario: short, so the breaker opens soon, and
/// as long as the longest probe interval, so overlapping probes would show.
const BLACKHOLE_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest wait for a backlog to drain before the run counts as gone wrong.
const DRAIN_CAP: Duration = Duration::from_secs(300);

/// `cpu` over `wall` as a percentage of one core.
fn percent(cpu: Duration, wall: Duration) -> f64 {
    100.0 * cpu.as_secs_f64() / wall.as_secs_f64().max(1e-9)
}

/// TCP connections of process `pid` to port `port` that are established right now: the
/// calls it has in flight there (a call given up is closed, and leaves this state).
fn established_to(pid: u32, port: u16) -> usize {
    let inodes: HashSet<u64> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .filter_map(|l| {
            l.to_str()?
                .strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse()
                .ok()
        })
        .collect();
    let mut n = 0;
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 10 || f[3] != "01" {
                continue;
            }
            let rem_port = f[2]
                .rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            let inode = f[9].parse::<u64>().ok();
            if rem_port == Some(port) && inode.is_some_and(|i| inodes.contains(&i)) {
                n += 1;
            }
        }
    }
    n
}

/// A running espfd child, killed (and its state removed) when dropped; its log is kept.
struct Espfd {
    child: Child,
    addr: SocketAddr,
    state: PathBuf,
    log: PathBuf,
}

impl Espfd {
    /// Starts espfd with the simulators' variables `env` (and the benchmark's own) and waits
    /// until it listens. `name` names its state dir and log file under `dir`.
    fn start(bin: &str, dir: &Path, name: &str, env: Vec<(String, String)>) -> Espfd {
        let state = dir.join(format!("{name}-state"));
        let _ = std::fs::remove_dir_all(&state);
        let log = dir.join(format!("{name}.log"));
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
            l.local_addr().expect("addr").port()
        };
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
        let child = Command::new(bin)
            .env_clear()
            .env("ESPFD_LISTEN", addr.to_string())
            .env("ESPFD_AUTH_USER", "espf")
            .env("ESPFD_AUTH_PASSWORD", "bench")
            .env("ESPFD_STATE_DIR", &state)
            .env("RUST_LOG", "info")
            .envs(env)
            .stdout(Stdio::null())
            .stderr(File::create(&log).expect("log file"))
            .spawn()
            .expect("start espfd");
        let espfd = Espfd {
            child,
            addr,
            state,
            log,
        };
        let ready = Instant::now();
        while TcpStream::connect(addr).is_err() {
            assert!(
                ready.elapsed() < Duration::from_secs(10),
                "espfd did not start; see {}",
                espfd.log.display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(300));
        espfd
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Posts `n` events (`body(k)` for k in 0..n) over `connections` at `rate` per second
    /// (`None`: as fast as it takes them).
    fn post(
        &self,
        n: u64,
        connections: usize,
        rate: Option<f64>,
        body: impl Fn(u64) -> Vec<u8> + Send + Sync + 'static,
    ) -> LoadReport {
        let auth = format!("Basic {}", base64_encode(b"espf:bench"));
        load::run(LoadSpec {
            connections,
            rate,
            headers: load::fixed_header("Authorization", &auth),
            ..LoadSpec::new(self.addr, "/events", n, body)
        })
    }

    /// The value of one series of its `/metrics` (0 when absent).
    fn metric(&self, series: &str) -> f64 {
        let mut text = String::new();
        if let Ok(mut s) = TcpStream::connect(self.addr) {
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let _ = write!(
                s,
                "GET /metrics HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
                self.addr
            );
            let _ = s.read_to_string(&mut text);
        }
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or(0.0)
    }

    /// Target calls made so far (failed ones included).
    fn target_calls(&self) -> u64 {
        self.metric("espfd_call_duration_seconds_count{call=\"target\"}") as u64
    }

    /// Events stored, still open, done and failed.
    fn counts(&self) -> Counts {
        let conn = rusqlite::Connection::open_with_flags(
            self.state.join("espfd.db"),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .expect("open store");
        let _ = conn.busy_timeout(Duration::from_secs(5));
        conn.query_row(
            "SELECT COUNT(*),
                    COALESCE(SUM(state IN ('queued', 'retry', 'report')), 0),
                    COALESCE(SUM(state = 'done'), 0),
                    COALESCE(SUM(state = 'failed'), 0)
             FROM events",
            [],
            |r| {
                Ok(Counts {
                    total: r.get(0)?,
                    open: r.get(1)?,
                    done: r.get(2)?,
                    failed: r.get(3)?,
                })
            },
        )
        .expect("count events")
    }

    /// Waits until `n` events are stored and none is open; false after `cap`.
    fn wait_drained(&self, n: i64, cap: Duration) -> bool {
        let start = Instant::now();
        loop {
            let c = self.counts();
            if c.total == n && c.open == 0 {
                return true;
            }
            if start.elapsed() > cap {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The log lines containing any of `needles`.
    fn log_lines(&self, needles: &[&str]) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| needles.iter().any(|n| l.contains(n)))
            .map(str::to_string)
            .collect()
    }

    /// Waits until a log line contains `needle`; false after `cap`.
    fn wait_log(&self, needle: &str, cap: Duration) -> bool {
        let start = Instant::now();
        while start.elapsed() < cap {
            if !self.log_lines(&[needle]).is_empty() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }
}

/// Events in the store by state.
struct Counts {
    total: i64,
    open: i64,
    done: i64,
    failed: i64,
}

impl Drop for Espfd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.state);
    }
}

/// The variables that point espfd at `pb` for PortaBilling and the ESPF API and at
/// `target` for the target.
fn env_for(pb: &Sim, target: &Sim) -> Vec<(String, String)> {
    pb.espfd_env()
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .filter(|(k, _)| k != "ESPFD_TARGET_URL")
        .chain([("ESPFD_TARGET_URL".to_string(), target.target_url())])
        .collect()
}

fn event(i_event: u64, i_account: i64) -> Vec<u8> {
    format!(
        r#"{{"event_type":"Subscriber/Updated","variables":{{"i_event":{i_event},"i_account":{i_account}}}}}"#
    )
    .into_bytes()
}

fn put_accounts(sim: &Sim, first: i64, n: i64) {
    for a in first..first + n {
        sim.put_account(json!({
            "i_account": a,
            "id": format!("bench-{a}@msisdn"),
            "blocked": "N",
            "bill_status": "O",
        }));
    }
}

/// Problems that make the run itself fail (exit 1).
#[derive(Default)]
struct Problems(Vec<String>);

impl Problems {
    fn check(&mut self, ok: bool, what: impl FnOnce() -> String) {
        if !ok {
            let what = what();
            eprintln!("RUN WENT WRONG: {what}");
            self.0.push(what);
        }
    }

    fn acked(&mut self, scenario: &str, r: &LoadReport, n: u64) {
        let acked = r.codes.get(&200).copied().unwrap_or(0);
        self.check(acked == n, || {
            format!(
                "{scenario}: espfd acknowledged {acked} of {n} events: {:?} {:?}",
                r.codes, r.first_error
            )
        });
    }
}

fn print_log(espfd: &Espfd, needles: &[&str]) {
    for l in espfd.log_lines(needles).iter().take(12) {
        println!("    log: {l}");
    }
}

/// Scenario 1's figures.
struct TargetOutage {
    drain: Option<Duration>,
    cpu_percent: f64,
    attempts: u64,
}

fn target_outage(bin: &str, dir: &Path, problems: &mut Problems) -> TargetOutage {
    let outage = Duration::from_secs(env_u64("BENCH_OUTAGE_SECS", 120));
    let (events, accounts, rate) = (5000u64, 1000i64, 200.0);
    println!(
        "\n1. target outage: port closed for {} s while {events} events for {accounts} accounts arrive at {rate}/s",
        outage.as_secs()
    );
    let pb = Sim::start("127.0.0.1:0", SimConfig::default()).expect("start PortaBilling sim");
    put_accounts(&pb, FIRST_ACCOUNT, accounts);
    let target = Sim::start("127.0.0.1:0", SimConfig::default()).expect("start target sim");
    let target_addr = target.addr();
    let espfd = Espfd::start(bin, dir, "target-outage", env_for(&pb, &target));
    println!("    espfd log: {}", espfd.log.display());

    // The outage: the target's simulator stops, its port refuses connections.
    target.shutdown();
    problems.check(TcpStream::connect(target_addr).is_err(), || {
        format!(
            "the target's port {target_addr} still accepts connections after its simulator stopped"
        )
    });
    let down_at = Instant::now();
    let calls_before = espfd.target_calls();
    let sent = espfd.post(events, 4, Some(rate), |k| {
        event(k + 1, FIRST_ACCOUNT + (k % 1000) as i64)
    });
    problems.acked("target outage", &sent, events);
    let intake_done = Instant::now();
    let cpu_start = cpu_time(espfd.pid());
    let rest = outage.saturating_sub(down_at.elapsed());
    println!(
        "    intake took {:.1} s; measuring CPU over the {:.1} s of outage left",
        intake_done.duration_since(down_at).as_secs_f64(),
        rest.as_secs_f64()
    );
    std::thread::sleep(rest);
    let cpu = cpu_time(espfd.pid()).saturating_sub(cpu_start);
    let cpu_window = intake_done.elapsed();
    let attempts = espfd.target_calls().saturating_sub(calls_before);

    // The target returns on the same port.
    let target = {
        let start = Instant::now();
        loop {
            match Sim::start(&target_addr.to_string(), SimConfig::default()) {
                Ok(sim) => break sim,
                Err(e) if start.elapsed() < Duration::from_secs(10) => {
                    eprintln!("rebinding {target_addr}: {e}; again");
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => panic!("cannot restart the target on {target_addr}: {e}"),
            }
        }
    };
    let back_ms = now_ms();
    let drained = espfd.wait_drained(events as i64, DRAIN_CAP);
    let statuses = pb.statuses();
    let last_report = statuses.iter().map(|s| s.at_ms).max().unwrap_or(back_ms);
    let drain = drained.then(|| Duration::from_millis((last_report - back_ms).max(0) as u64));
    let Counts { open, done, .. } = espfd.counts();
    let delivered: BTreeSet<i64> = target
        .target_calls()
        .iter()
        .filter_map(|c| c.i_event)
        .collect();
    let ok = statuses.iter().filter(|s| s.status == "OK").count();
    let retry = statuses.iter().filter(|s| s.status == "RETRY").count();
    problems.check(
        drained && done == events as i64 && delivered.len() as u64 == events,
        || {
            format!(
                "target outage: {done} of {events} events done, {open} open, {} reached the target after {} s",
                delivered.len(),
                DRAIN_CAP.as_secs()
            )
        },
    );
    println!(
        "    drained {} after the target's return; {} target calls after it, {ok} OK and {retry} RETRY reports",
        drain.map_or("NOT".to_string(), |d| format!("{:.1} s", d.as_secs_f64())),
        target.target_calls_total()
    );
    println!(
        "    during the outage: {attempts} target calls; CPU {:.2} % of a core ({:.2} s over {:.1} s after intake)",
        percent(cpu, cpu_window),
        cpu.as_secs_f64(),
        cpu_window.as_secs_f64()
    );
    print_log(&espfd, &["target down", "target back"]);
    drop(espfd);
    target.shutdown();
    pb.shutdown();
    TargetOutage {
        drain,
        cpu_percent: percent(cpu, cpu_window),
        attempts,
    }
}

/// Scenario 2's figures.
struct PbOutage {
    connections_per_s: f64,
    cpu_percent: f64,
}

fn pb_outage(bin: &str, dir: &Path, problems: &mut Problems) -> PbOutage {
    let backlog = env_u64("BENCH_BACKLOG", 100_000);
    println!("\n2. PortaBilling closing every connection (reset) with a {backlog}-event backlog");
    let pb = Sim::start("127.0.0.1:0", SimConfig::default()).expect("start PortaBilling sim");
    pb.set_record_limit(Some(1000));
    let target = Sim::start("127.0.0.1:0", SimConfig::default()).expect("start target sim");
    target.set_record_limit(Some(1000));
    let espfd = Espfd::start(bin, dir, "pb-outage", env_for(&pb, &target));
    println!("    espfd log: {}", espfd.log.display());

    pb.set_pb_mode(UpstreamMode::Reset);
    let sent = espfd.post(backlog, 64, None, |k| {
        event(k + 1, 1_000_000 + (k % 5000) as i64)
    });
    problems.acked("PortaBilling outage", &sent, backlog);
    let stored = espfd.counts().total;
    problems.check(stored as u64 == backlog, || {
        format!("PortaBilling outage: {stored} of {backlog} acknowledged events stored")
    });
    println!(
        "    backlog posted in {:.1} s ({:.0}/s), {stored} stored",
        sent.elapsed.as_secs_f64(),
        sent.throughput()
    );
    let accepted_start = pb.connections_accepted();
    let cpu_start = cpu_time(espfd.pid());
    let start = Instant::now();
    std::thread::sleep(PB_WINDOW);
    let connections = pb.connections_accepted() - accepted_start;
    let cpu = cpu_time(espfd.pid()).saturating_sub(cpu_start);
    let window = start.elapsed();
    let connections_per_s = connections as f64 / window.as_secs_f64();
    println!(
        "    over {:.1} s: {connections} connections to PortaBilling's port ({connections_per_s:.2}/s), CPU {:.2} % of a core",
        window.as_secs_f64(),
        percent(cpu, window)
    );
    print_log(&espfd, &["portabilling down", "espf down"]);

    // A whole default backlog takes minutes to drain on a busy 2-core machine: wait a
    // while, then check that it drains and that nothing failed or went missing.
    let cap = Duration::from_secs(env_u64("BENCH_PB_DRAIN_SECS", 60));
    pb.set_pb_mode(UpstreamMode::Up);
    let back = Instant::now();
    let drained = espfd.wait_drained(backlog as i64, cap);
    let c = espfd.counts();
    let elapsed = back.elapsed().as_secs_f64();
    problems.check(
        c.total as u64 == backlog && c.failed == 0 && c.done > 0 && (!drained || c.done == c.total),
        || {
            format!(
                "PortaBilling outage: of {} events stored, {} done, {} failed, {} open {elapsed:.0} s after PortaBilling's return",
                c.total, c.done, c.failed, c.open
            )
        },
    );
    if drained {
        println!(
            "    after PortaBilling's return: all {} events done in {elapsed:.1} s ({:.0}/s)",
            c.done,
            c.done as f64 / elapsed
        );
    } else {
        println!(
            "    after PortaBilling's return: {} of {} events done in {elapsed:.1} s ({:.0}/s), none failed; not waited for further (BENCH_PB_DRAIN_SECS)",
            c.done,
            c.total,
            c.done as f64 / elapsed
        );
    }
    print_log(&espfd, &["portabilling back", "espf back"]);
    drop(espfd);
    target.shutdown();
    pb.shutdown();
    PbOutage {
        connections_per_s,
        cpu_percent: percent(cpu, window),
    }
}

/// Scenario 3's figures (`None` when the breaker never opened).
struct Blackhole {
    /// The most calls espfd had in flight to the target at once over the whole window.
    in_flight: Option<usize>,
    /// The same from one target timeout after the breaker opened: calls started before it
    /// opened are over by then.
    steady: Option<usize>,
    /// The most requests the target's simulator held at once (calls given up included).
    held: usize,
}

fn blackhole(bin: &str, dir: &Path, problems: &mut Problems) -> Blackhole {
    let events = 200u64;
    println!(
        "\n3. blackholed target ({events} events, 200 accounts, ESPFD_TARGET_TIMEOUT={} s)",
        BLACKHOLE_TIMEOUT.as_secs()
    );
    let pb = Sim::start("127.0.0.1:0", SimConfig::default()).expect("start PortaBilling sim");
    put_accounts(&pb, FIRST_ACCOUNT, 200);
    let target = Sim::start("127.0.0.1:0", SimConfig::default()).expect("start target sim");
    let mut env = env_for(&pb, &target);
    env.push((
        "ESPFD_TARGET_TIMEOUT".into(),
        format!("{}s", BLACKHOLE_TIMEOUT.as_secs()),
    ));
    let espfd = Espfd::start(bin, dir, "blackhole", env);
    println!("    espfd log: {}", espfd.log.display());
    target.set_target_mode(UpstreamMode::Blackhole);
    let start = Instant::now();
    let sent = espfd.post(events, 4, None, |k| event(k + 1, FIRST_ACCOUNT + k as i64));
    problems.acked("blackhole", &sent, events);
    let opened = espfd.wait_log("target down", Duration::from_secs(120));
    let port = target.addr().port();
    // Samples: (time since the breaker was seen open, calls in flight, requests held).
    let mut samples: Vec<(Duration, usize, usize)> = Vec::new();
    let held_start = target.target_held();
    let accepted_start = target.connections_accepted();
    if opened {
        println!(
            "    breaker opened {:.1} s after the first POST; sampling for {} s",
            start.elapsed().as_secs_f64(),
            BLACKHOLE_WINDOW.as_secs()
        );
        let sampling = Instant::now();
        while sampling.elapsed() < BLACKHOLE_WINDOW {
            samples.push((
                sampling.elapsed(),
                established_to(espfd.pid(), port),
                target.target_held(),
            ));
            std::thread::sleep(Duration::from_millis(20));
        }
        let max_all = samples.iter().map(|s| s.1).max().unwrap_or(0);
        let max_steady = samples
            .iter()
            .filter(|s| s.0 >= BLACKHOLE_TIMEOUT)
            .map(|s| s.1)
            .max()
            .unwrap_or(0);
        let last_above_one = samples.iter().filter(|s| s.1 > 1).map(|s| s.0).max();
        println!(
            "    calls in flight (espfd's established connections to the target): at most {max_all}{}; at most {max_steady} from {} s on (when every call started before the breaker opened has timed out)",
            last_above_one.map_or(String::new(), |t| format!(", more than 1 until {:.2} s after the breaker was seen open", t.as_secs_f64())),
            BLACKHOLE_TIMEOUT.as_secs()
        );
        println!(
            "    the simulator held {held_start} → {} requests (it cannot see a call espfd gave up on); {} connections to the target in the window",
            target.target_held(),
            target.connections_accepted() - accepted_start
        );
    } else {
        println!("    the breaker did not open within 120 s");
    }
    print_log(&espfd, &["target down", "target back"]);
    target.set_target_mode(UpstreamMode::Up);
    let drained = espfd.wait_drained(events as i64, DRAIN_CAP);
    let Counts { open, done, .. } = espfd.counts();
    problems.check(drained && done as u64 == events, || {
        format!("blackhole: {done} of {events} events done, {open} open after the target's return")
    });
    drop(espfd);
    target.shutdown();
    pb.shutdown();
    let max_over = |from: Duration| {
        samples
            .iter()
            .filter(|s| s.0 >= from)
            .map(|s| s.1)
            .max()
            .unwrap_or(0)
    };
    Blackhole {
        in_flight: opened.then(|| max_over(Duration::ZERO)),
        steady: opened.then(|| max_over(BLACKHOLE_TIMEOUT)),
        held: samples.iter().map(|s| s.2).max().unwrap_or(0),
    }
}

/// Scenario 4's figures for one setting of `ESPFD_COALESCE`.
struct Burst {
    target_calls: u64,
    drained: Duration,
}

fn burst(bin: &str, dir: &Path, coalesce: &str, problems: &mut Problems) -> Burst {
    let events = 200u64;
    let latency = Duration::from_millis(10);
    let sim = Sim::start(
        "127.0.0.1:0",
        SimConfig {
            pb_latency: latency,
            target_latency: latency,
            ..SimConfig::default()
        },
    )
    .expect("start sim");
    put_accounts(&sim, BURST_ACCOUNT, 1);
    let mut env = env_for(&sim, &sim);
    env.push(("ESPFD_COALESCE".into(), coalesce.into()));
    let espfd = Espfd::start(bin, dir, &format!("burst-coalesce-{coalesce}"), env);
    let start_ms = now_ms();
    let sent = espfd.post(events, 4, None, |k| event(k + 1, BURST_ACCOUNT));
    problems.acked("burst", &sent, events);
    let drained = espfd.wait_drained(events as i64, DRAIN_CAP);
    let last = sim
        .statuses()
        .iter()
        .map(|s| s.at_ms)
        .max()
        .unwrap_or(start_ms);
    let Counts { open, done, .. } = espfd.counts();
    let delivered: BTreeSet<i64> = sim
        .target_calls()
        .iter()
        .filter_map(|c| c.i_event)
        .collect();
    problems.check(
        drained
            && done as u64 == events
            && delivered.contains(&(events as i64))
            && (coalesce == "on" || delivered.len() as u64 == events),
        || {
            format!(
                "burst, ESPFD_COALESCE={coalesce}: {done} of {events} done, {open} open, {} distinct events reached the target",
                delivered.len()
            )
        },
    );
    let figures = Burst {
        target_calls: sim.target_calls_total(),
        drained: Duration::from_millis((last - start_ms).max(0) as u64),
    };
    println!(
        "    ESPFD_COALESCE={coalesce}: {} target calls, drained {:.2} s after the first POST",
        figures.target_calls,
        figures.drained.as_secs_f64()
    );
    drop(espfd);
    sim.shutdown();
    figures
}

fn verdict(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "MISSED"
    }
}

fn main() {
    let bin = std::env::var("BENCH_ESPFD_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_espfd").to_string());
    let dir = std::env::temp_dir().join(format!("espfd-bench-outage-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("bench dir");
    println!("binary: {bin}");
    println!(
        "espfd outage benchmark ({} cores); espfd logs in {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        dir.display()
    );
    let mut problems = Problems::default();

    let t = target_outage(&bin, &dir, &mut problems);
    let p = pb_outage(&bin, &dir, &mut problems);
    let b = blackhole(&bin, &dir, &mut problems);
    println!("\n4. 200 events for one account, 10 ms PortaBilling and target latency");
    let on = burst(&bin, &dir, "on", &mut problems);
    let off = burst(&bin, &dir, "off", &mut problems);

    println!();
    println!("| figure | measured | goal | |");
    println!("|---|---|---|---|");
    let drain_met = t.drain.is_some_and(|d| d <= Duration::from_secs(15));
    println!(
        "| target outage: drained after the target's return | {} | ≤ 15 s | {} |",
        t.drain.map_or("not drained".to_string(), |d| format!(
            "{:.1} s",
            d.as_secs_f64()
        )),
        verdict(drain_met)
    );
    println!(
        "| target outage: espfd CPU after intake | {:.1} % of a core | ≤ 5 % | {} |",
        t.cpu_percent,
        verdict(t.cpu_percent <= 5.0)
    );
    println!(
        "| target outage: target calls during the outage | {} | (was 6 260) | |",
        t.attempts
    );
    println!(
        "| PortaBilling down, backlog: connections to its port | {:.2}/s | ≤ 2/s | {} |",
        p.connections_per_s,
        verdict(p.connections_per_s <= 2.0)
    );
    println!(
        "| PortaBilling down, backlog: espfd CPU | {:.1} % of a core | ≤ 5 % | {} |",
        p.cpu_percent,
        verdict(p.cpu_percent <= 5.0)
    );
    match (b.in_flight, b.steady) {
        (Some(all), Some(steady)) => {
            println!(
                "| blackholed target: calls in flight while down, {} s on | {steady} | ≤ 1 | {} |",
                BLACKHOLE_TIMEOUT.as_secs(),
                verdict(steady <= 1)
            );
            println!(
                "| blackholed target: calls in flight while down, whole window | {all} (simulator held at most {}) | ≤ 1 | {} |",
                b.held,
                verdict(all <= 1)
            );
        }
        _ => println!("| blackholed target: calls in flight while down | breaker never opened | ≤ 1 | MISSED |"),
    }
    println!(
        "| burst, ESPFD_COALESCE=on: target calls, drained | {}, {:.2} s | ≤ 5, < 1 s | {} |",
        on.target_calls,
        on.drained.as_secs_f64(),
        verdict(on.target_calls <= 5 && on.drained < Duration::from_secs(1))
    );
    println!(
        "| burst, ESPFD_COALESCE=off: target calls, drained | {}, {:.2} s | (was 200, 4.9 s) | |",
        off.target_calls,
        off.drained.as_secs_f64()
    );

    if !problems.0.is_empty() {
        eprintln!(
            "the run went wrong ({} problems); logs kept in {}",
            problems.0.len(),
            dir.display()
        );
        std::process::exit(1);
    }
}
