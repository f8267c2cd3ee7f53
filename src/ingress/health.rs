//! The bodies of the operator's endpoints `GET /metrics` and `GET /readyz` (the router in
//! `ingress/mod.rs` sends those paths here; counting the reply codes happens there).
//!
//! `/readyz` is 200 only when all hold:
//! - the store is writable: a read connection takes SQLite's write lock and gives it back
//!   (`BEGIN IMMEDIATE; ROLLBACK`), waiting at most [`STORE_WAIT`] for a write in progress;
//! - the state directory's disk takes a real write and has room ([`Store::check_disk`]);
//! - PortaBilling has answered since the start, its last call did not fail without an answer
//!   (refused, timed out, an HTTP error without a fault), and a probe sent to it has not been
//!   waiting for more than [`PROBE_PATIENCE`].
//!
//! An idle espfd makes no PortaBilling calls, so when the last answer is older than
//! [`PB_FRESH`] (or there has been none since the start) `/readyz` starts a probe in the
//! background — a `Session/ping`, which logs in first when there is no session — at most once
//! per [`PROBE_EVERY`]. A probe never makes the request wait. So `/readyz` follows
//! PortaBilling within [`PB_FRESH`] plus [`PROBE_PATIENCE`] even when no event comes; right
//! after the start it is 503 "PortaBilling has not answered yet" until the first probe is
//! answered.
//!
//! While the service is paused (`espfd pause`) `/readyz` sends no probe and the PortaBilling
//! condition does not apply: ready when the store is, with the pause in the body.
//!
//! Neither endpoint needs credentials and neither shows a secret or subscriber data.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;

use crate::http::Response;
use crate::metrics::{Gauges, Metrics};
use crate::pause::Pause;
use crate::portabilling::PbClient;
use crate::store::{Reader, Store};
use crate::upstream::Upstream;
use crate::util::now_ms;

/// Age of PortaBilling's last answer past which `/readyz` probes it.
pub const PB_FRESH: Duration = Duration::from_secs(20);
/// Least time between two readiness probes of PortaBilling.
pub const PROBE_EVERY: Duration = Duration::from_secs(5);
/// How long a probe may go unanswered before `/readyz` says PortaBilling does not answer.
pub const PROBE_PATIENCE: Duration = Duration::from_secs(10);
/// Longest wait for the store's write lock in `/readyz`.
pub const STORE_WAIT: Duration = Duration::from_secs(2);

/// `Content-Type` of a Prometheus text scrape.
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What `/metrics` and `/readyz` read: the store, PortaBilling's last answer, the probe.
pub struct Health {
    store: Store,
    pb: Arc<PbClient>,
    /// One read connection for scrapes and readiness checks, opened on first use and
    /// dropped after an error so that the next request opens a fresh one.
    reader: Mutex<Option<Reader>>,
    probe: Arc<Probe>,
    /// The service's registry, rendered by `/metrics`.
    metrics: Arc<Metrics>,
    /// `espfd pause`: while set, ready without asking PortaBilling.
    pause: Arc<Pause>,
}

#[derive(Default)]
struct Probe {
    running: AtomicBool,
    last_started_ms: AtomicI64,
}

impl Health {
    /// Reads `store` and asks `pb` (probes it when it has been quiet); `/metrics` renders
    /// `metrics`.
    pub fn new(store: Store, pb: Arc<PbClient>, metrics: Arc<Metrics>) -> Health {
        Health {
            store,
            pb,
            reader: Mutex::new(None),
            probe: Arc::new(Probe::default()),
            metrics,
            pause: Pause::never(),
        }
    }

    /// Follows `pause` (the service's): while paused, `/readyz` is ready and says so
    /// without asking PortaBilling, and `espfd_paused` is 1.
    pub fn with_pause(mut self, pause: Arc<Pause>) -> Health {
        self.pause = pause;
        self
    }

    /// Runs `f` on the shared read connection, opening it if needed.
    fn with_reader<T>(
        &self,
        f: impl FnOnce(&Reader) -> Result<T, crate::error::Error>,
    ) -> Result<T, String> {
        let mut slot = self.reader.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_none() {
            *slot = Some(self.store.reader().map_err(|e| e.to_string())?);
        }
        let result = f(slot.as_ref().expect("opened above"));
        if result.is_err() {
            *slot = None;
        }
        result.map_err(|e| e.to_string())
    }

    /// `GET /metrics`: the scrape, with the gauges read now.
    pub fn metrics(&self) -> Response {
        let now = now_ms();
        let store = self.with_reader(|r| Ok((r.open_count()?, r.oldest_open_received_at()?)));
        let (backlog, oldest) = match store {
            Ok((n, oldest)) => (
                Some(n),
                Some(oldest.map_or(0.0, |t| (now - t).max(0) as f64 / 1000.0)),
            ),
            Err(e) => {
                log::warn!("/metrics: cannot read the store: {e}");
                (None, None)
            }
        };
        let gauges = Gauges {
            backlog,
            oldest_pending_age_seconds: oldest,
            portabilling_last_answer_age_seconds: self
                .pb
                .last_answer_ms()
                .map(|t| (now - t).max(0) as f64 / 1000.0),
            upstream_up: Upstream::ALL
                .iter()
                .map(|&u| (u.name(), self.pb.upstreams().get(u).down().is_none()))
                .collect(),
            paused: self.pause.is_paused(),
        };
        let mut resp = Response::text(200, self.metrics.render(&gauges));
        resp.headers = vec![("Content-Type".into(), PROMETHEUS_TEXT.into())];
        resp
    }

    /// `GET /readyz`: 200 "ready" (and who paused it, while paused), or 503 with the reason.
    pub fn readyz(&self) -> Response {
        match (self.not_ready(), self.pause.current()) {
            (Some(reason), _) => Response::text(503, reason),
            (None, Some(p)) => Response::text(
                200,
                format!("ready; {p}; nothing goes upstream until espfd resume"),
            ),
            (None, None) => Response::text(200, "ready"),
        }
    }

    /// `None` when ready, else the reason.
    fn not_ready(&self) -> Option<String> {
        if let Err(e) = self.with_reader(|r| r.check_writable(STORE_WAIT)) {
            return Some(format!("event store not writable: {e}"));
        }
        if let Err(e) = self.store.check_disk() {
            return Some(format!("event store not writable: {e}"));
        }
        if self.pause.is_paused() {
            // Nothing goes upstream while paused, a probe included; PortaBilling's own
            // maintenance may be why.
            return None;
        }
        let now = now_ms();
        if let Some((since, why)) = self.pb.upstreams().portabilling.down() {
            return Some(format!(
                "portabilling down for {} s ({why}); probing every 1-5 s",
                (now - since).max(0) / 1000
            ));
        }
        if let Some((since, why)) = self.pb.unreachable() {
            self.start_probe(now);
            return Some(format!(
                "PortaBilling has not answered for {} s: {why}",
                (now - since).max(0) / 1000
            ));
        }
        let Some(last) = self.pb.last_answer_ms() else {
            self.start_probe(now);
            return Some("PortaBilling has not answered yet (a probe is on its way)".into());
        };
        if now - last > PB_FRESH.as_millis() as i64 {
            self.start_probe(now);
        }
        let probe_started = self.probe.last_started_ms.load(Ordering::Relaxed);
        let waited = now - probe_started;
        if self.probe.running.load(Ordering::Acquire)
            && probe_started > last
            && waited > PROBE_PATIENCE.as_millis() as i64
        {
            return Some(format!(
                "PortaBilling has not answered a probe for {} s",
                waited / 1000
            ));
        }
        None
    }

    /// Starts a `Session/ping` in the background unless one runs or one started recently.
    fn start_probe(&self, now: i64) {
        let probe = &self.probe;
        let last = probe.last_started_ms.load(Ordering::Relaxed);
        if last != 0 && now - last < PROBE_EVERY.as_millis() as i64 {
            return;
        }
        if probe.running.swap(true, Ordering::AcqRel) {
            return;
        }
        probe.last_started_ms.store(now, Ordering::Relaxed);
        let (pb, flag) = (self.pb.clone(), self.probe.clone());
        let spawned = std::thread::Builder::new()
            .name("readyz-probe".into())
            .spawn(move || {
                if let Err(e) = pb.call("Session", "ping", json!({})) {
                    log::warn!("/readyz: PortaBilling probe failed: {e:?}");
                }
                flag.running.store(false, Ordering::Release);
            });
        if spawned.is_err() {
            self.probe.running.store(false, Ordering::Release);
        }
    }
}
