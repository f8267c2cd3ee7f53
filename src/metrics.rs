//! Counters and latency histograms for `GET /metrics`, in Prometheus text format 0.0.4.
//!
//! A registry of atomics per service ([`Metrics`]), no metrics crate: the code that sees a
//! thing happen records it with a one-line call on the registry it was handed
//! ([`Metrics::event_received`], [`Metrics::event_finished`], [`Metrics::retry_scheduled`],
//! [`Metrics::login`], [`Metrics::timer`]), and [`Metrics::render`] writes the text a scrape
//! gets. Recording is a relaxed atomic add, cheap enough for every request.
//!
//! Values that live in the store (backlog, age of the oldest open event) are not kept here:
//! the caller reads them at scrape time and passes them in as [`Gauges`] (see `ingress/health.rs`).
//!
//! Each `Service` owns its registry, so a scrape counts what that service did and nothing
//! else: tests that run several services in one process can assert exact values.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// Every metric name [`render`] writes (the Grafana dashboard in contrib/ uses only these).
pub const NAMES: &[&str] = &[
    "espfd_build_info",
    "espfd_events_received_total",
    "espfd_events_finished_total",
    "espfd_retries_total",
    "espfd_dead_letters_total",
    "espfd_backlog",
    "espfd_oldest_pending_age_seconds",
    "espfd_portabilling_last_answer_age_seconds",
    "espfd_upstream_up",
    "espfd_paused",
    "espfd_logins_total",
    "espfd_call_duration_seconds",
    "espfd_auth_failures_total",
    "espfd_connections_refused_total",
    "espfd_connections_closed_total",
];

/// Reply codes shown even while zero, so that dashboards and alerts find the series.
const USUAL_CODES: [u16; 4] = [200, 400, 401, 503];

/// Upper bounds (seconds) of the latency histogram buckets; `+Inf` is implied.
pub const BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// An outbound call whose duration is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    /// One HTTP call to the PortaBilling JSON API (login and refresh included).
    PortaBilling,
    /// One delivery to the target.
    Target,
    /// One HTTP call to the ESPF status API.
    Espf,
}

impl Call {
    const ALL: [Call; 3] = [Call::PortaBilling, Call::Target, Call::Espf];

    fn label(self) -> &'static str {
        match self {
            Call::PortaBilling => "portabilling",
            Call::Target => "target",
            Call::Espf => "espf",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Where credentials were presented and found wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthEndpoint {
    /// ESPF's POST to the events path.
    Events,
    /// A target's completion callback, `POST /events/<i_event>/status`.
    Callback,
}

impl AuthEndpoint {
    const ALL: [AuthEndpoint; 2] = [AuthEndpoint::Events, AuthEndpoint::Callback];

    fn label(self) -> &'static str {
        match self {
            AuthEndpoint::Events => "events",
            AuthEndpoint::Callback => "callback",
        }
    }
}

/// Why the listener refused a connection (closed it before reading a byte, with a 503 over
/// plain HTTP when the reason is a limit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// `ESPFD_MAX_CONNECTIONS` open and none of them idle.
    MaxConnections,
    /// `ESPFD_MAX_CONNECTIONS_PER_ADDR` open from the peer's address and none of them idle.
    MaxPerAddr,
    /// The peer is not in `ESPFD_ALLOW_FROM`.
    AllowFrom,
}

impl Refused {
    const ALL: [Refused; 3] = [
        Refused::MaxConnections,
        Refused::MaxPerAddr,
        Refused::AllowFrom,
    ];

    fn label(self) -> &'static str {
        match self {
            Refused::MaxConnections => "max_connections",
            Refused::MaxPerAddr => "max_per_addr",
            Refused::AllowFrom => "allow_from",
        }
    }
}

/// Why the listener closed a connection it had accepted, to keep slots for real requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closed {
    /// Nothing arrived within `ESPFD_FIRST_BYTE_TIMEOUT` of the connection (over HTTPS: of
    /// the connection, and of the end of the handshake).
    FirstByteTimeout,
    /// Idle (between requests, or not yet started) and the oldest such when a new
    /// connection needed its slot.
    IdleForRoom,
}

impl Closed {
    const ALL: [Closed; 2] = [Closed::FirstByteTimeout, Closed::IdleForRoom];

    fn label(self) -> &'static str {
        match self {
            Closed::FirstByteTimeout => "first_byte_timeout",
            Closed::IdleForRoom => "idle_for_room",
        }
    }
}

struct Histogram {
    /// Observations per bucket, not cumulative; the last slot is above the largest bound.
    buckets: [AtomicU64; BUCKETS.len() + 1],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    const fn new() -> Histogram {
        Histogram {
            buckets: [const { AtomicU64::new(0) }; BUCKETS.len() + 1],
            count: AtomicU64::new(0),
            sum_micros: AtomicU64::new(0),
        }
    }

    fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let slot = BUCKETS
            .iter()
            .position(|&b| secs <= b)
            .unwrap_or(BUCKETS.len());
        self.buckets[slot].fetch_add(1, Relaxed);
        self.count.fetch_add(1, Relaxed);
        self.sum_micros
            .fetch_add(d.as_micros().min(u64::MAX as u128) as u64, Relaxed);
    }
}

/// One service's counters and histograms. The service owns it and hands an `Arc` of it to
/// the parts that count: the listener, the ingress, the workers and the clients.
pub struct Metrics {
    /// Events POSTed to the events path, by the reply code (index = code).
    received: [AtomicU64; 600],
    finished_ok: AtomicU64,
    finished_failed: AtomicU64,
    finished_in_progress: AtomicU64,
    finished_skipped: AtomicU64,
    finished_coalesced: AtomicU64,
    retries: AtomicU64,
    logins: AtomicU64,
    calls: [Histogram; 3],
    auth_failures: [AtomicU64; 2],
    refused: [AtomicU64; 3],
    closed: [AtomicU64; 2],
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics { .. }")
    }
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl Metrics {
    /// A registry with every counter at zero.
    pub const fn new() -> Metrics {
        Metrics {
            received: [const { AtomicU64::new(0) }; 600],
            finished_ok: AtomicU64::new(0),
            finished_failed: AtomicU64::new(0),
            finished_in_progress: AtomicU64::new(0),
            finished_skipped: AtomicU64::new(0),
            finished_coalesced: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            logins: AtomicU64::new(0),
            calls: [Histogram::new(), Histogram::new(), Histogram::new()],
            auth_failures: [const { AtomicU64::new(0) }; 2],
            refused: [const { AtomicU64::new(0) }; 3],
            closed: [const { AtomicU64::new(0) }; 2],
        }
    }

    /// A request to `endpoint` was refused for its credentials (401).
    pub fn auth_failed(&self, endpoint: AuthEndpoint) {
        self.auth_failures[endpoint as usize].fetch_add(1, Relaxed);
    }

    /// The listener refused a connection.
    pub fn connection_refused(&self, why: Refused) {
        self.refused[why as usize].fetch_add(1, Relaxed);
    }

    /// The listener closed a connection to keep its slots for real requests.
    pub fn connection_closed(&self, why: Closed) {
        self.closed[why as usize].fetch_add(1, Relaxed);
    }

    /// ESPF's POST to the events path was answered with `status`.
    pub fn event_received(&self, status: u16) {
        if let Some(c) = self.received.get(status as usize) {
            c.fetch_add(1, Relaxed);
        }
    }

    /// An event reached its final state: `done`, `in_progress`, `skipped` (not for this
    /// connector: left out by `ESPFD_EVENT_TYPES`, or nothing to send) or `failed` (a dead
    /// letter).
    pub fn event_finished(&self, state: &str) {
        match state {
            "done" => self.finished_ok.fetch_add(1, Relaxed),
            "in_progress" => self.finished_in_progress.fetch_add(1, Relaxed),
            "skipped" => self.finished_skipped.fetch_add(1, Relaxed),
            "coalesced" => self.finished_coalesced.fetch_add(1, Relaxed),
            _ => self.finished_failed.fetch_add(1, Relaxed),
        };
    }

    /// A failed attempt was scheduled to be tried again.
    pub fn retry_scheduled(&self) {
        self.retries.fetch_add(1, Relaxed);
    }

    /// A PortaBilling `Session/login` succeeded.
    pub fn login(&self) {
        self.logins.fetch_add(1, Relaxed);
    }

    /// Records how long `call` took.
    pub fn observe(&self, call: Call, d: Duration) {
        self.calls[call.index()].observe(d);
    }

    /// Measures a call from now until the returned guard is dropped, whichever way the
    /// caller leaves: `let _timer = metrics.timer(Call::Target);`.
    pub fn timer(&self, call: Call) -> Timer<'_> {
        Timer {
            metrics: self,
            call,
            started: Instant::now(),
        }
    }
}

/// See [`Metrics::timer`].
pub struct Timer<'a> {
    metrics: &'a Metrics,
    call: Call,
    started: Instant,
}

impl Drop for Timer<'_> {
    fn drop(&mut self) {
        self.metrics.observe(self.call, self.started.elapsed());
    }
}

/// Values read elsewhere at scrape time; `None` leaves the metric out (e.g. the store could
/// not be read).
#[derive(Debug, Clone, Default)]
pub struct Gauges {
    /// Events that still need a worker.
    pub backlog: Option<i64>,
    /// Age of the oldest of them, seconds (0 when there is none).
    pub oldest_pending_age_seconds: Option<f64>,
    /// Seconds since PortaBilling last answered this process.
    pub portabilling_last_answer_age_seconds: Option<f64>,
    /// Each upstream's name and whether it is up (its breaker closed).
    pub upstream_up: Vec<(&'static str, bool)>,
    /// Whether the service is paused (`espfd pause`); always rendered.
    pub paused: bool,
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

impl Metrics {
    /// The whole scrape, Prometheus text format 0.0.4.
    pub fn render(&self, g: &Gauges) -> String {
        let mut out = String::with_capacity(4096);
        header(
            &mut out,
            "espfd_build_info",
            "gauge",
            "Always 1; the version label says which espfd answers.",
        );
        let _ = writeln!(
            out,
            "espfd_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );

        header(
            &mut out,
            "espfd_events_received_total",
            "counter",
            "Events POSTed by ESPF to the events path, by reply code.",
        );
        for (code, c) in self.received.iter().enumerate() {
            let n = c.load(Relaxed);
            if n > 0 || USUAL_CODES.contains(&(code as u16)) {
                let _ = writeln!(out, "espfd_events_received_total{{code=\"{code}\"}} {n}");
            }
        }

        header(
            &mut out,
            "espfd_events_finished_total",
            "counter",
            "Events that reached a final state, by outcome.",
        );
        for (outcome, c) in [
            ("ok", &self.finished_ok),
            ("failed", &self.finished_failed),
            ("in_progress", &self.finished_in_progress),
            ("skipped", &self.finished_skipped),
            ("coalesced", &self.finished_coalesced),
        ] {
            let _ = writeln!(
                out,
                "espfd_events_finished_total{{outcome=\"{outcome}\"}} {}",
                c.load(Relaxed)
            );
        }

        header(
            &mut out,
            "espfd_retries_total",
            "counter",
            "Failed attempts scheduled to be tried again.",
        );
        let _ = writeln!(out, "espfd_retries_total {}", self.retries.load(Relaxed));

        header(
            &mut out,
            "espfd_dead_letters_total",
            "counter",
            "Events that ended FAILED and stay in the store as dead letters.",
        );
        let _ = writeln!(
            out,
            "espfd_dead_letters_total {}",
            self.finished_failed.load(Relaxed)
        );

        if let Some(n) = g.backlog {
            header(
            &mut out,
            "espfd_backlog",
            "gauge",
            "Stored events that still need a worker (queued, waiting for a retry, or owing a status report).",
        );
            let _ = writeln!(out, "espfd_backlog {n}");
        }
        if let Some(age) = g.oldest_pending_age_seconds {
            header(
                &mut out,
                "espfd_oldest_pending_age_seconds",
                "gauge",
                "Age of the oldest event that still needs a worker; 0 when there is none.",
            );
            let _ = writeln!(out, "espfd_oldest_pending_age_seconds {}", fmt_f64(age));
        }
        if let Some(age) = g.portabilling_last_answer_age_seconds {
            header(
                &mut out,
                "espfd_portabilling_last_answer_age_seconds",
                "gauge",
                "Seconds since the PortaBilling API last answered (a result or a fault).",
            );
            let _ = writeln!(
                out,
                "espfd_portabilling_last_answer_age_seconds {}",
                fmt_f64(age)
            );
        }

        if !g.upstream_up.is_empty() {
            header(
                &mut out,
                "espfd_upstream_up",
                "gauge",
                "1 while the upstream (portabilling, target, espf) is up, 0 while its breaker is open (down, probed every 1-5 s).",
            );
            for (name, up) in &g.upstream_up {
                let _ = writeln!(
                    out,
                    "espfd_upstream_up{{upstream=\"{name}\"}} {}",
                    u8::from(*up)
                );
            }
        }

        header(
            &mut out,
            "espfd_paused",
            "gauge",
            "1 while paused by espfd pause (nothing goes upstream; events are still stored), else 0.",
        );
        let _ = writeln!(out, "espfd_paused {}", u8::from(g.paused));

        header(
            &mut out,
            "espfd_logins_total",
            "counter",
            "Successful PortaBilling Session/login calls.",
        );
        let _ = writeln!(out, "espfd_logins_total {}", self.logins.load(Relaxed));

        header(
            &mut out,
            "espfd_auth_failures_total",
            "counter",
            "Requests refused with 401 for wrong or missing credentials, by endpoint.",
        );
        for e in AuthEndpoint::ALL {
            let _ = writeln!(
                out,
                "espfd_auth_failures_total{{endpoint=\"{}\"}} {}",
                e.label(),
                self.auth_failures[e as usize].load(Relaxed)
            );
        }

        header(
            &mut out,
            "espfd_connections_refused_total",
            "counter",
            "Inbound connections refused before a byte was read, by reason.",
        );
        for r in Refused::ALL {
            let _ = writeln!(
                out,
                "espfd_connections_refused_total{{reason=\"{}\"}} {}",
                r.label(),
                self.refused[r as usize].load(Relaxed)
            );
        }

        header(
        &mut out,
        "espfd_connections_closed_total",
        "counter",
        "Inbound connections closed to keep slots for real requests: silent past ESPFD_FIRST_BYTE_TIMEOUT, or idle when a new one needed the slot.",
    );
        for c in Closed::ALL {
            let _ = writeln!(
                out,
                "espfd_connections_closed_total{{reason=\"{}\"}} {}",
                c.label(),
                self.closed[c as usize].load(Relaxed)
            );
        }

        header(
            &mut out,
            "espfd_call_duration_seconds",
            "histogram",
            "Duration of outbound calls: PortaBilling API, target, ESPF status API.",
        );
        for call in Call::ALL {
            let h = &self.calls[call.index()];
            let label = call.label();
            let mut cumulative = 0;
            for (i, bound) in BUCKETS.iter().enumerate() {
                cumulative += h.buckets[i].load(Relaxed);
                let _ = writeln!(
                    out,
                    "espfd_call_duration_seconds_bucket{{call=\"{label}\",le=\"{}\"}} {cumulative}",
                    fmt_f64(*bound)
                );
            }
            cumulative += h.buckets[BUCKETS.len()].load(Relaxed);
            let _ = writeln!(
                out,
                "espfd_call_duration_seconds_bucket{{call=\"{label}\",le=\"+Inf\"}} {cumulative}"
            );
            let _ = writeln!(
                out,
                "espfd_call_duration_seconds_sum{{call=\"{label}\"}} {}",
                fmt_f64(h.sum_micros.load(Relaxed) as f64 / 1e6)
            );
            // The count is the +Inf bucket; reading it again could disagree under load.
            let _ = writeln!(
                out,
                "espfd_call_duration_seconds_count{{call=\"{label}\"}} {cumulative}"
            );
        }
        out
    }
}

/// A float as Prometheus reads it: no exponent, no trailing `.0` noise beyond what is needed.
fn fmt_f64(v: f64) -> String {
    if v.is_finite() {
        let s = format!("{v:.6}");
        let s = s.trim_end_matches('0').trim_end_matches('.');
        if s.is_empty() || s == "-" {
            "0".into()
        } else {
            s.to_string()
        }
    } else {
        "NaN".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value of the series `name{labels}` (labels as written, e.g. `call="target",le="+Inf"`).
    fn value(text: &str, series: &str) -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("{series} missing in\n{text}"))
            .parse()
            .unwrap()
    }

    #[test]
    fn counters_and_histograms_render_as_prometheus_text() {
        let m = Metrics::new();
        m.event_received(200);
        m.event_received(413);
        m.event_finished("failed");
        m.event_finished("skipped");
        m.retry_scheduled();
        m.auth_failed(AuthEndpoint::Callback);
        m.connection_refused(Refused::MaxPerAddr);
        m.connection_closed(Closed::IdleForRoom);
        m.observe(Call::Espf, Duration::from_millis(30));
        m.observe(Call::Espf, Duration::from_secs(60));
        let after = m.render(&Gauges {
            backlog: Some(3),
            oldest_pending_age_seconds: Some(1.5),
            portabilling_last_answer_age_seconds: None,
            upstream_up: vec![("portabilling", true), ("target", false)],
            paused: true,
        });
        let at = |s: &str| value(&after, s);
        assert_eq!(at("espfd_paused"), 1.0);
        // An unusual code appears once it has been seen; a usual one shows while zero.
        assert_eq!(at("espfd_events_received_total{code=\"413\"}"), 1.0);
        assert_eq!(at("espfd_events_received_total{code=\"200\"}"), 1.0);
        assert_eq!(at("espfd_events_received_total{code=\"503\"}"), 0.0);
        assert!(!after.contains("code=\"414\""));
        assert_eq!(at("espfd_dead_letters_total"), 1.0);
        assert_eq!(at("espfd_events_finished_total{outcome=\"failed\"}"), 1.0);
        assert_eq!(at("espfd_events_finished_total{outcome=\"ok\"}"), 0.0);
        // A skipped event is no dead letter.
        assert_eq!(at("espfd_events_finished_total{outcome=\"skipped\"}"), 1.0);
        assert_eq!(at("espfd_retries_total"), 1.0);
        assert_eq!(at("espfd_auth_failures_total{endpoint=\"callback\"}"), 1.0);
        assert_eq!(at("espfd_auth_failures_total{endpoint=\"events\"}"), 0.0);
        assert_eq!(
            at("espfd_connections_refused_total{reason=\"max_per_addr\"}"),
            1.0
        );
        assert_eq!(
            at("espfd_connections_refused_total{reason=\"allow_from\"}"),
            0.0
        );
        assert_eq!(
            at("espfd_connections_closed_total{reason=\"idle_for_room\"}"),
            1.0
        );
        assert_eq!(at("espfd_call_duration_seconds_count{call=\"espf\"}"), 2.0);
        assert_eq!(
            at("espfd_call_duration_seconds_count{call=\"target\"}"),
            0.0
        );
        assert_eq!(at("espfd_call_duration_seconds_sum{call=\"espf\"}"), 60.03);
        // 30 ms is not in the 0.025 bucket but is in the 0.05 one; 60 s only in +Inf.
        let le =
            |b: &str| format!("espfd_call_duration_seconds_bucket{{call=\"espf\",le=\"{b}\"}}");
        assert_eq!(at(&le("0.025")), 0.0);
        assert_eq!(at(&le("0.05")), 1.0);
        assert_eq!(at(&le("30")), 1.0);
        assert_eq!(at(&le("+Inf")), 2.0);
        assert_eq!(at("espfd_upstream_up{upstream=\"portabilling\"}"), 1.0);
        assert_eq!(at("espfd_upstream_up{upstream=\"target\"}"), 0.0);
        assert_eq!(value(&after, "espfd_backlog"), 3.0);
        assert_eq!(value(&after, "espfd_oldest_pending_age_seconds"), 1.5);
        assert!(!after.contains("espfd_portabilling_last_answer_age_seconds "));

        // Every sample line is `name{labels} number`, every name declared by a TYPE line.
        for line in after.lines().filter(|l| !l.starts_with('#')) {
            let (series, v) = line.rsplit_once(' ').unwrap();
            v.parse::<f64>().unwrap();
            let name = series.split('{').next().unwrap();
            let base = name
                .trim_end_matches("_bucket")
                .trim_end_matches("_sum")
                .trim_end_matches("_count");
            assert!(NAMES.contains(&base), "{name} not in NAMES");
            assert!(after.contains(&format!("# TYPE {base} ")), "{base}");
        }
    }

    #[test]
    fn floats_have_no_exponent() {
        assert_eq!(fmt_f64(0.005), "0.005");
        assert_eq!(fmt_f64(30.0), "30");
        assert_eq!(fmt_f64(0.0), "0");
        assert_eq!(fmt_f64(1e-9), "0");
        assert_eq!(fmt_f64(12345.25), "12345.25");
    }
}
