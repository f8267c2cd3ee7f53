//! Connector benchmark: the URL connector and a two-step template connector, end to end
//! through the real `espfd` binary, and the template's render cost alone, in-process.
//!
//! Run with `cargo bench --bench connectors` (optimised build). It starts the simulators in
//! this process with a target that takes 10 ms per call, puts `ACCOUNTS` accounts into the
//! simulated PortaBilling (copies of the documentation's account 2984), and prints:
//! - for the URL connector and for the template, at 4 workers (the default) and at 16:
//!   events per second through the whole pipeline (intake, lookup, target call(s), ESPF
//!   status report), timed from the first POST until the store has no open event, and
//!   espfd's CPU time per event (utime + stime from /proc, intake included);
//! - the template's render cost alone: `TemplateConnector::run` in dry-run mode on the same
//!   account record, in microseconds per event, beside the 20 ms a worker spends waiting on
//!   the two target calls of that event.
//!
//! It ends by checking that every event reached the target (one call per event for the URL
//! connector, two for the template) and got an `OK` status report; it asserts nothing about
//! time. Sizes: BENCH_EVENTS (default 2000) events per run, BENCH_RENDERS (default 20000)
//! dry runs; BENCH_ESPFD_BIN runs another build of espfd.
//!
//! Everything runs on the same cores: the load generator, the simulators and espfd.

mod common;
use common::{cpu_time, env_u64, Espfd};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use espfd::cli::load::{self, LoadSpec};
use espfd::connector::template::Mode;
use espfd::connector::{ConnectorSettings, ConnectorSpec, TemplateConnector};
use espfd::enrich::Context;
use espfd::event::Event;
use espfd::portabilling::{PbClient, PbSecret, PbSettings};
use espfd::sim::{Sim, SimConfig};
use espfd::util::base64_encode;

/// Accounts the events are spread over (each event names one; events of one account are
/// processed in order, by one worker).
const ACCOUNTS: u64 = 500;
/// The first of them; they follow on.
const FIRST_ACCOUNT: u64 = 500_000;
/// Latency of every simulated target call.
const TARGET_LATENCY: Duration = Duration::from_millis(10);
/// How long espfd's idle CPU use is measured before each run.
const IDLE_WINDOW: Duration = Duration::from_secs(1);

/// Step 1 looks the subscriber up with a small JSON body; step 2 provisions it with a body
/// built from the account and from the look-up's reply.
const TEMPLATE: &str = r#"# Benchmark: look up, then provision, against the simulator's /target.
# ESPFD_SETTING_URL=http://127.0.0.1:8090/target

### look the subscriber up
# @name lookup
POST {{ setting("URL") }}
Content-Type: application/json
Accept: application/json

{"i_event": {{ event.i_event }}, "lookup": {{ account.id | tojson }}}

### provision it
POST {{ setting("URL") }}
Accept: application/json

< body.json
"#;

/// The provisioning body (auto-escaped as JSON). The simulated target answers the look-up
/// with text (`provisioned <i_event>`), so `json` is none there and `body` is used instead,
/// as a template for a target that sometimes answers JSON would do.
const BODY: &str = r#"{% set lookup = LOOKUP %}
{
  "i_event": {{ event.i_event }},
  "event_type": {{ event.event_type }},
  "subscriber": {
    "id": {{ account.id }},
    "i_account": {{ account.i_account }},
    "name": {{ account.firstname ~ " " ~ account.lastname }},
    "email": {{ account.email }},
    "product": {{ account.product_name }},
    "enabled": {{ account.blocked != "Y" and account.bill_status != "C" }},
    "balance": {{ account.balance }},
    "currency": {{ account.iso_4217 }},
    "password": {{ account.h323_password }},
    "addons": [{% for a in account.assigned_addons or [] %}{{ a.name }}{% if not loop.last %}, {% endif %}{% endfor %}]
  },
  "target_ref": {{ lookup.json.id if lookup.json else lookup.body }},
  "looked_up": {{ lookup.status == 200 }}
}
"#;

/// A dry run renders no step that needs an earlier reply, so the render benchmark's copy of
/// the body reads this stand-in, shaped like the simulator's reply, instead of
/// `steps.lookup`.
const LOOKUP_STAND_IN: &str = r#"{"status": 200, "body": "provisioned 1", "json": none}"#;

/// Writes the template and its body into `dir`; the body reads `lookup` from `LOOKUP`.
fn write_template(dir: &Path, lookup: &str) -> PathBuf {
    std::fs::create_dir_all(dir).expect("template dir");
    let path = dir.join("bench.http");
    std::fs::write(&path, TEMPLATE).expect("write template");
    std::fs::write(dir.join("body.json"), BODY.replace("LOOKUP", lookup)).expect("write body");
    path
}

/// Which connector a run uses.
enum Which<'a> {
    Url,
    Template(&'a Path),
}

/// What one run measured.
struct Figures {
    events: u64,
    elapsed: Duration,
    cpu: Duration,
    /// CPU time used while idle during [`IDLE_WINDOW`] before the run.
    idle: Duration,
    target_calls: u64,
    ok_reports: usize,
}

impl Figures {
    fn per_second(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64()
    }

    fn cpu_us_per_event(&self) -> f64 {
        self.cpu.as_secs_f64() * 1e6 / self.events as f64
    }

    /// Idle CPU in milliseconds per second.
    fn idle_ms_per_s(&self) -> f64 {
        self.idle.as_secs_f64() * 1e3 / IDLE_WINDOW.as_secs_f64()
    }
}

/// Starts a fresh espfd (own state dir) with `workers` and the connector, posts `n` events
/// spread over the accounts, and waits until none is open in the store.
fn pipeline(sim: &Sim, bin: &str, which: Which<'_>, workers: usize, n: u64) -> Figures {
    sim.clear_records();
    let calls_before = sim.target_calls_total();
    let state = std::env::temp_dir().join(format!(
        "espfd-bench-connectors-{}-state",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&state);
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
        l.local_addr().expect("addr").port()
    };
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let mut cmd = Command::new(bin);
    cmd.env_clear()
        .env("ESPFD_LISTEN", addr.to_string())
        .env("ESPFD_AUTH_USER", "espf")
        .env("ESPFD_AUTH_PASSWORD", "bench")
        .env("ESPFD_STATE_DIR", &state)
        .env("ESPFD_WORKERS", workers.to_string())
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    match which {
        Which::Url => {
            cmd.envs(sim.espfd_env());
        }
        Which::Template(path) => {
            cmd.envs(
                sim.espfd_env()
                    .into_iter()
                    .filter(|(k, _)| *k != "ESPFD_TARGET_URL"),
            )
            .env("ESPFD_TARGET_TEMPLATE", path)
            .env("ESPFD_SETTING_URL", sim.target_url());
        }
    }
    let espfd = Espfd(cmd.spawn().expect("start espfd"));
    let pid = espfd.0.id();
    let ready = Instant::now();
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(
            ready.elapsed() < Duration::from_secs(10),
            "espfd did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(200));
    // What espfd spends doing nothing (timers, polls), to tell it apart from the per-event
    // cost over a run's length.
    let idle_start = cpu_time(pid);
    std::thread::sleep(IDLE_WINDOW);
    let idle = cpu_time(pid).saturating_sub(idle_start);

    let auth = format!("Basic {}", base64_encode(b"espf:bench"));
    let spec = LoadSpec {
        connections: 4,
        headers: load::fixed_header("Authorization", &auth),
        ..LoadSpec::new(addr, "/events", n, move |i| {
            format!(
                r#"{{"event_type":"Subscriber/Updated","variables":{{"i_event":{},"i_account":{}}}}}"#,
                i + 1,
                FIRST_ACCOUNT + i % ACCOUNTS
            )
            .into_bytes()
        })
    };
    let cpu_start = cpu_time(pid);
    let start = Instant::now();
    let sent = load::run(spec);
    let acked = sent.codes.get(&200).copied().unwrap_or(0);
    assert_eq!(
        acked, n,
        "espfd acknowledged {acked} of {n} events: {:?} {:?}",
        sent.codes, sent.first_error
    );
    let reader = espfd::store::Reader::open(&state.join("espfd.db")).expect("open store");
    loop {
        let open = reader.open_count().expect("count open events");
        let total = reader.total_count().expect("count events");
        if open == 0 && total as u64 == n {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "{open} of {total} events still open after 300 s"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let elapsed = start.elapsed();
    let cpu = cpu_time(pid).saturating_sub(cpu_start);
    drop(reader);
    drop(espfd);
    let _ = std::fs::remove_dir_all(&state);
    Figures {
        events: n,
        elapsed,
        cpu,
        idle,
        target_calls: sim.target_calls_total() - calls_before,
        ok_reports: sim.statuses().iter().filter(|s| s.status == "OK").count(),
    }
}

/// The looked-up record of account 2984 (the documentation's example, with add-ons and
/// service features), as the workers see it.
fn sample_account(pb: &PbClient) -> Value {
    let event = Event::parse(
        br#"{"event_type":"Subscriber/Updated","variables":{"i_event":1,"i_account":2984}}"#,
    )
    .expect("event");
    pb.lookup(event.entity.as_ref().expect("entity"))
        .expect("look up account 2984")
        .expect("the simulator knows account 2984")
}

/// Microseconds per event of building the context (the document both connectors use) and
/// of a dry run of the template, over `renders` runs.
fn render_cost(sim: &Sim, pb: Arc<PbClient>, template: &Path, renders: u64) -> (f64, f64) {
    let settings = ConnectorSettings {
        spec: ConnectorSpec::Template(template.to_path_buf()),
        timeout: Duration::from_secs(10),
        exec_timeout: Duration::from_secs(10),
        pool: 1,
        hidden_env: Vec::new(),
        settings: BTreeMap::from([("URL".to_string(), sim.target_url())]),
        secrets: BTreeMap::new(),
        auth: Default::default(),
        tls: Default::default(),
    };
    let record = sample_account(&pb);
    let connector = TemplateConnector::load(template, &settings, pb, false).expect("load template");
    let event = Event::parse(
        br#"{"event_type":"Subscriber/Updated","variables":{"i_event":42,"i_account":2984}}"#,
    )
    .expect("event");
    let received_at = espfd::util::now_ms();

    // First check that the dry run renders both requests, and the body is JSON.
    let context = Context::new(&event, received_at, 1, "HSS", Some(record.clone()));
    let run = connector.run(&context, Mode::DryRun);
    assert_eq!(run.steps.len(), 2, "{run:?}");
    for step in &run.steps {
        let req = step.request.as_ref().unwrap_or_else(|| {
            panic!("{} did not render: {:?}", step.label, step.note);
        });
        serde_json::from_slice::<Value>(&req.body)
            .unwrap_or_else(|e| panic!("{}: body is not JSON: {e}", step.label));
    }

    let start = Instant::now();
    for _ in 0..renders {
        let context = Context::new(&event, received_at, 1, "HSS", Some(record.clone()));
        std::hint::black_box(&context);
    }
    let context_us = start.elapsed().as_secs_f64() * 1e6 / renders as f64;

    let start = Instant::now();
    for _ in 0..renders {
        let run = connector.run(&context, Mode::DryRun);
        std::hint::black_box(&run);
    }
    let run_us = start.elapsed().as_secs_f64() * 1e6 / renders as f64;
    (context_us, run_us)
}

fn main() {
    let n = env_u64("BENCH_EVENTS", 2000);
    let renders = env_u64("BENCH_RENDERS", 20_000);
    let sim = Sim::start(
        "127.0.0.1:0",
        SimConfig {
            target_latency: TARGET_LATENCY,
            ..SimConfig::default()
        },
    )
    .expect("start simulators");
    let cfg = sim.config().clone();
    let pb = Arc::new(
        PbClient::new(&PbSettings {
            url: sim.url(),
            login: cfg.login.clone(),
            secret: PbSecret::Password(cfg.password.clone()),
            ca_file: None,
            timeout: Duration::from_secs(10),
            pool: 1,
        })
        .expect("PortaBilling client"),
    );
    let record = sample_account(&pb);
    let record_kib = serde_json::to_string(&record).map_or(0, |s| s.len()) as f64 / 1024.0;
    let msisdn = 6_808_000_000u64;
    for k in 0..ACCOUNTS {
        let mut account = record.clone();
        account["i_account"] = json!(FIRST_ACCOUNT + k);
        account["id"] = json!(format!("{}@msisdn", msisdn + k));
        sim.put_account(account);
    }

    let dir = std::env::temp_dir().join(format!("espfd-bench-connectors-{}", std::process::id()));
    let template = write_template(&dir.join("send"), "steps.lookup");
    let dry = write_template(&dir.join("dry"), LOOKUP_STAND_IN);
    let bin = std::env::var("BENCH_ESPFD_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_espfd").to_string());
    println!("binary: {bin}");
    println!(
        "espfd connector benchmark ({} cores): {n} events over {ACCOUNTS} accounts (copies of account 2984, {record_kib:.1} KiB of JSON each), target latency {} ms",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        TARGET_LATENCY.as_millis()
    );

    let mut rows = Vec::new();
    for workers in [4, 16] {
        for (name, which, calls_per_event) in [
            ("URL", Which::Url, 1),
            ("template (2 steps)", Which::Template(&template), 2),
        ] {
            let f = pipeline(&sim, &bin, which, workers, n);
            println!(
                "{name}, {workers} workers: {:.0} events/s ({:.2} s), CPU {:.0} µs/event (idle before: {:.0} ms CPU/s), {} target calls, {} OK reports",
                f.per_second(),
                f.elapsed.as_secs_f64(),
                f.cpu_us_per_event(),
                f.idle_ms_per_s(),
                f.target_calls,
                f.ok_reports
            );
            rows.push((name, workers, calls_per_event, f));
        }
    }

    let (context_us, run_us) = render_cost(&sim, pb, &dry, renders);
    // A worker waits at least two target latencies per template event.
    let worker_us = 2.0 * TARGET_LATENCY.as_secs_f64() * 1e6;
    println!(
        "render alone ({renders} runs, account 2984): document {context_us:.1} µs/event, template dry run {run_us:.1} µs/event = {:.2} % of a worker's {:.0} ms per event",
        100.0 * run_us / worker_us,
        worker_us / 1000.0
    );

    println!();
    println!("| connector | workers | events/s | espfd CPU per event |");
    println!("|---|---|---|---|");
    for (name, workers, _, f) in &rows {
        println!(
            "| {name} | {workers} | {:.0} | {:.0} µs |",
            f.per_second(),
            f.cpu_us_per_event()
        );
    }
    println!(
        "| template render alone (dry run, in-process, one thread) | - | {:.0} | {run_us:.1} µs |",
        1e6 / run_us
    );

    sim.shutdown();
    let _ = std::fs::remove_dir_all(&dir);
    let mut failed = false;
    for (name, workers, calls_per_event, f) in &rows {
        if f.target_calls != calls_per_event * n || f.ok_reports as u64 != n {
            eprintln!(
                "NOT DELIVERED: {name}, {workers} workers: {} target calls (want {}), {} OK reports (want {n})",
                f.target_calls,
                calls_per_event * n,
                f.ok_reports
            );
            failed = true;
        }
    }
    if failed {
        std::process::exit(1);
    }
}
