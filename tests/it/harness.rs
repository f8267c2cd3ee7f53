//! The espfd under test, one way to write it: [`Test::new()`], then `.env(..)`, `.args(..)`,
//! `.sim_env(..)`, and one of
//! - `.start()` / `.start_on(sim)`: the service in this process against a simulator
//!   ([`Harness`], with the steps it reports and its store);
//! - `.spawn()`: the real binary running on a free loopback port ([`Espfd`], log captured);
//! - `.run()`: the real binary run to its end ([`Run`], checked with `.code(..)`,
//!   `.stdout_has(..)`, `.stderr_has(..)`).
//!
//! Also the helpers to post events and wait for outcomes.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{unbounded, Receiver};
use espfd::config::{Config, RawConfig};
use espfd::pipeline::Step;
use espfd::service::Service;
use espfd::sim::{Sim, SimConfig};
use espfd::store::Reader;
use espfd::util::base64_encode;

/// The real binary, built by cargo for these tests; the one place it is named.
pub const BIN: &str = env!("CARGO_BIN_EXE_espfd");

pub const USER: &str = "espf";
pub const PASSWORD: &str = "test-password";

/// A fresh, empty directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicU64 = AtomicU64::new(0);
        let p = std::env::temp_dir().join(format!(
            "espfd-it-{tag}-{}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed),
            espfd::util::now_ms()
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The variables an espfd needs to run against `sim`, with a private state dir; used for
/// the in-process service and for the real binary alike.
pub fn sim_env(sim: &Sim, state: &TempDir) -> Vec<(&'static str, String)> {
    let mut env = sim.espfd_env();
    env.extend([
        ("ESPFD_LISTEN", "127.0.0.1:0".into()),
        ("ESPFD_AUTH_USER", USER.into()),
        ("ESPFD_AUTH_PASSWORD", PASSWORD.into()),
        ("ESPFD_RETRY_INITIAL", "100ms".into()),
        ("ESPFD_RETRY_MAX_DELAY", "1s".into()),
        ("ESPFD_STATE_DIR", state.0.display().to_string()),
    ]);
    env
}

/// The configuration an espfd needs to run against `sim`, with a private state dir.
pub fn raw_config(sim: &Sim, state: &TempDir) -> RawConfig {
    let mut raw = RawConfig::from_lookup(|_| None).unwrap();
    for (k, v) in sim_env(sim, state) {
        raw.set(k, v);
    }
    raw
}

/// One espfd under test, described fluently and then started, spawned or run (see the
/// module doc). Variables given with [`Test::env`] apply in every case; for the binary the
/// environment is otherwise empty.
#[derive(Debug, Clone, Default)]
pub struct Test {
    env: Vec<(String, String)>,
    unset: Vec<String>,
    args: Vec<String>,
    shell: Option<String>,
    stdin: Vec<u8>,
}

impl Test {
    pub fn new() -> Test {
        Test::default()
    }

    /// Sets `name` (a later value wins).
    pub fn env(mut self, name: &str, value: impl Into<String>) -> Test {
        self.env.retain(|(k, _)| k != name);
        self.unset.retain(|k| k != name);
        self.env.push((name.to_string(), value.into()));
        self
    }

    /// Leaves `name` out (after [`Test::sim_env`], say).
    pub fn unset(mut self, name: &str) -> Test {
        self.env.retain(|(k, _)| k != name);
        self.unset.push(name.to_string());
        self
    }

    /// What the binary reads on its standard input (`.run()`); nothing by default.
    pub fn stdin(mut self, bytes: &[u8]) -> Test {
        self.stdin = bytes.to_vec();
        self
    }

    /// The variables to run against `sim` with the state in `state` ([`sim_env`]).
    pub fn sim_env(mut self, sim: &Sim, state: &TempDir) -> Test {
        for (k, v) in sim_env(sim, state) {
            self = self.env(k, v);
        }
        self
    }

    /// Arguments of the binary (`.spawn()` and `.run()`).
    pub fn args(mut self, args: &[&str]) -> Test {
        self.args.extend(args.iter().map(|a| a.to_string()));
        self
    }

    /// Runs the binary through `sh -c '<pre>; exec espfd'` (e.g. `ulimit -n 64`).
    pub fn shell(mut self, pre: &str) -> Test {
        self.shell = Some(pre.to_string());
        self
    }

    /// The binary's command line as described, to spawn by hand (to kill it half-way, say).
    pub fn command(&self) -> Command {
        let mut cmd = match &self.shell {
            Some(pre) => {
                let mut c = Command::new("sh");
                c.arg("-c")
                    .arg(format!("{pre}; exec \"$0\" \"$@\""))
                    .arg(BIN);
                c
            }
            None => Command::new(BIN),
        };
        cmd.args(&self.args)
            .env_clear()
            .envs(self.env.iter().cloned());
        for name in &self.unset {
            cmd.env_remove(name);
        }
        cmd
    }

    /// Runs the binary to its end.
    pub fn run(&self) -> Run {
        let mut child = self
            .command()
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Written whole before the output is read: the inputs of these tests are small.
        let mut input = child.stdin.take().unwrap();
        input.write_all(&self.stdin).unwrap();
        drop(input);
        Run(child.wait_with_output().unwrap())
    }

    /// Starts the binary on a free loopback port (any ESPFD_LISTEN given is replaced) and
    /// waits until it accepts connections.
    pub fn spawn(&self) -> Espfd {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        self.spawn_at(SocketAddr::from(([127, 0, 0, 1], port)))
    }

    /// Starts the binary listening on `addr` (a restart on the port of an earlier one) and
    /// waits until it accepts connections.
    pub fn spawn_at(&self, addr: SocketAddr) -> Espfd {
        let mut cmd = self.command();
        cmd.env("ESPFD_LISTEN", addr.to_string());
        Espfd::start(cmd, addr)
    }

    /// Starts the service in this process against a new default simulator.
    pub fn start(self) -> Harness {
        let sim = Sim::start("127.0.0.1:0", SimConfig::default()).unwrap();
        self.start_on(sim)
    }

    /// Starts the service in this process against `sim`, with the usual test variables
    /// ([`sim_env`], a private state dir) under those given.
    pub fn start_on(self, sim: Sim) -> Harness {
        assert!(
            self.unset.is_empty() && self.args.is_empty() && self.shell.is_none(),
            "unset, args and shell apply to the binary only"
        );
        Harness::with_sim(sim, |raw| {
            for (k, v) in &self.env {
                raw.set(k, v);
            }
        })
    }
}

/// How a run of the binary ended; the checks return it again so that they chain.
pub struct Run(pub Output);

impl Run {
    /// Asserts the exit code.
    pub fn code(self, code: i32) -> Run {
        assert_eq!(self.0.status.code(), Some(code), "{}", self.describe());
        self
    }

    /// Asserts that standard output contains `text`.
    pub fn stdout_has(self, text: &str) -> Run {
        assert!(
            self.stdout().contains(text),
            "no {text:?} in\n{}",
            self.describe()
        );
        self
    }

    /// Asserts that standard error contains `text`.
    pub fn stderr_has(self, text: &str) -> Run {
        assert!(
            self.stderr().contains(text),
            "no {text:?} in\n{}",
            self.describe()
        );
        self
    }

    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.0.stdout).into_owned()
    }

    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.0.stderr).into_owned()
    }

    fn describe(&self) -> String {
        format!(
            "{}\n--- stdout\n{}--- stderr\n{}",
            self.0.status,
            self.stdout(),
            self.stderr()
        )
    }
}

/// A simulator and an in-process espfd running against it.
pub struct Harness {
    pub sim: Sim,
    pub service: Option<Service>,
    pub config: Config,
    pub steps: Receiver<Step>,
    pub state: TempDir,
}

impl Harness {
    pub fn start() -> Harness {
        Harness::with(|_| {})
    }

    /// Starts with configuration tweaks.
    pub fn with(tweak: impl FnOnce(&mut RawConfig)) -> Harness {
        let sim = Sim::start("127.0.0.1:0", SimConfig::default()).unwrap();
        Harness::with_sim(sim, tweak)
    }

    pub fn with_sim(sim: Sim, tweak: impl FnOnce(&mut RawConfig)) -> Harness {
        let state = TempDir::new("h");
        let mut raw = raw_config(&sim, &state);
        tweak(&mut raw);
        let config = raw.validate().unwrap();
        let (tx, steps) = unbounded();
        let service = Service::start(&config, Some(tx)).unwrap();
        Harness {
            sim,
            service: Some(service),
            config,
            steps,
            state,
        }
    }

    pub fn url(&self) -> String {
        format!(
            "http://{}{}",
            self.service.as_ref().unwrap().local_addr(),
            self.config.events_path
        )
    }

    pub fn base(&self) -> String {
        format!("http://{}", self.service.as_ref().unwrap().local_addr())
    }

    /// POSTs an event with the right credentials; returns (status, body).
    pub fn post(&self, body: &str) -> (u16, String) {
        post(&self.url(), Some(&basic(USER, PASSWORD)), body)
    }

    /// Waits until every i_event in `ids` has finished; returns the finished steps seen.
    pub fn wait_finished(&self, ids: &[i64], timeout: Duration) -> Vec<Step> {
        let deadline = Instant::now() + timeout;
        let mut left: Vec<i64> = ids.to_vec();
        let mut seen = Vec::new();
        while !left.is_empty() && Instant::now() < deadline {
            if let Ok(step) = self.steps.recv_timeout(Duration::from_millis(50)) {
                if let Step::Finished { i_event, .. } = &step {
                    left.retain(|x| x != i_event);
                }
                seen.push(step);
            }
        }
        assert!(
            left.is_empty(),
            "events {left:?} did not finish in {timeout:?}; steps: {seen:?}"
        );
        seen
    }

    pub fn reader(&self) -> Reader {
        Reader::open(&self.state.0.join("espfd.db")).unwrap()
    }

    pub fn stop(&mut self) {
        if let Some(s) = self.service.take() {
            s.shutdown(Duration::from_secs(2));
        }
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.stop();
    }
}

pub fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64_encode(format!("{user}:{password}").as_bytes())
    )
}

pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(20)))
        .build()
        .into()
}

/// POSTs `body` to `url`; returns (status, body). A transport error panics.
pub fn post(url: &str, authorization: Option<&str>, body: &str) -> (u16, String) {
    let mut req = agent().post(url).header("Content-Type", "application/json");
    if let Some(a) = authorization {
        req = req.header("Authorization", a);
    }
    let mut resp = req.send(body).unwrap();
    let status = resp.status().as_u16();
    (status, resp.body_mut().read_to_string().unwrap_or_default())
}

pub fn account_event(event_type: &str, i_event: i64, i_account: i64) -> String {
    format!(
        r#"{{"event_type":"{event_type}","variables":{{"i_event":{i_event},"i_account":{i_account}}}}}"#
    )
}

/// Polls `cond` every 10 ms until true or `timeout`.
pub fn eventually(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    cond()
}

/// A running `espfd` child process with its log (stderr) collected. Killed on drop.
pub struct Espfd {
    child: Child,
    pub addr: SocketAddr,
    log: Arc<Mutex<String>>,
    /// Copies stderr into `log`; ends when the process has exited.
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Espfd {
    /// Starts the binary with `env` (any ESPFD_LISTEN is replaced) on a free loopback port
    /// and waits until it accepts connections. `shell` wraps it: `sh -c '<shell>; exec espfd'`.
    /// The same as `Test` with those variables and `.spawn()`.
    pub fn spawn(env: &[(&str, String)], shell: Option<&str>) -> Espfd {
        let mut test = Test::new();
        for (k, v) in env {
            test = test.env(k, v.clone());
        }
        if let Some(pre) = shell {
            test = test.shell(pre);
        }
        test.spawn()
    }

    /// Spawns `cmd`, which listens on `addr`, and waits until it accepts connections.
    fn start(mut cmd: Command, addr: SocketAddr) -> Espfd {
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let sink = log.clone();
        let stderr = child.stderr.take().unwrap();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let mut l = sink.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        let mut d = Espfd {
            child,
            addr,
            log,
            reader: Some(reader),
        };
        let up = eventually(Duration::from_secs(10), || {
            TcpStream::connect(addr).is_ok() || d.child.try_wait().unwrap().is_some()
        });
        assert!(
            up && d.child.try_wait().unwrap().is_none(),
            "espfd did not start:\n{}",
            d.log()
        );
        d
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything it has logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Waits for it to exit (after a signal, say) and returns how it did; [`Espfd::log`]
    /// then holds everything it logged.
    pub fn wait(&mut self) -> ExitStatus {
        let status = self.child.wait().unwrap();
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        status
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    pub fn signal(&self, sig: libc::c_int) {
        // SAFETY: kill(2) on our own child's pid.
        assert_eq!(unsafe { libc::kill(self.pid() as libc::pid_t, sig) }, 0);
    }

    /// CPU time used so far (user + system), from /proc/<pid>/stat.
    pub fn cpu_time(&self) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap();
        // Fields after the command name (which is in parentheses): state is the first, utime
        // the 12th, stime the 13th.
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
        Duration::from_millis(ticks * 1000 / hz)
    }

    /// A `Vm...` line of /proc/<pid>/status in KiB (VmRSS: resident now, VmHWM: peak).
    pub fn vm_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or_else(|| panic!("no {field} in /proc/{}/status", self.pid()))
    }
}

impl Drop for Espfd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The value of `series` in a scrape of `/metrics` at `addr` (a binary is a process of its
/// own, so its counters hold exactly what the test did to it).
pub fn metric(addr: SocketAddr, series: &str) -> f64 {
    let text = agent()
        .get(&format!("http://{addr}/metrics"))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("{series} not in\n{text}"))
        .parse()
        .unwrap()
}

/// The stored state of `i_event`, by name (`queued`, `done`, ...).
pub fn state_of(h: &Harness, i_event: i64) -> String {
    h.reader()
        .get(i_event)
        .unwrap()
        .expect("stored")
        .state
        .to_string()
}
