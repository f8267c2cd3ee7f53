//! Shared set-up: a simulator, an in-process espfd with a private state dir, and helpers to
//! post events and wait for outcomes.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{unbounded, Receiver};
use espfd::config::{Config, RawConfig};
use espfd::pipeline::Step;
use espfd::service::Service;
use espfd::sim::{Sim, SimConfig};
use espfd::store::Reader;
use espfd::util::base64_encode;

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
