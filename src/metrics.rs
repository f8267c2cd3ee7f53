//! Counters and latency histograms for `GET /metrics`, in Prometheus text format 0.0.4.
//!
//! One process-wide registry of atomics, no metrics crate: the code that sees a thing happen
//! records it with a one-line call ([`event_received`], [`event_finished`],
//! [`retry_scheduled`], [`login`], [`timer`]), and [`render`] writes the text a scrape gets.
//! Recording is a relaxed atomic add, cheap enough for every request.
//!
//! Values that live in the store (backlog, age of the oldest open event) are not kept here:
//! the caller reads them at scrape time and passes them in as [`Gauges`] (see `ingress/health.rs`).
//!
//! Being process-wide, the registry counts everything the process does: one espfd service
//! per process in production; in the integration tests several services share it, so tests
//! look at differences, not absolute values.

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

/// Events POSTed to the events path, by the reply code (index = code).
static RECEIVED: [AtomicU64; 600] = [const { AtomicU64::new(0) }; 600];
static FINISHED_OK: AtomicU64 = AtomicU64::new(0);
static FINISHED_FAILED: AtomicU64 = AtomicU64::new(0);
static FINISHED_IN_PROGRESS: AtomicU64 = AtomicU64::new(0);
static RETRIES: AtomicU64 = AtomicU64::new(0);
static LOGINS: AtomicU64 = AtomicU64::new(0);
static CALLS: [Histogram; 3] = [Histogram::new(), Histogram::new(), Histogram::new()];
static AUTH_FAILURES: [AtomicU64; 2] = [const { AtomicU64::new(0) }; 2];
static REFUSED: [AtomicU64; 3] = [const { AtomicU64::new(0) }; 3];
static CLOSED: [AtomicU64; 2] = [const { AtomicU64::new(0) }; 2];

/// A request to `endpoint` was refused for its credentials (401).
pub fn auth_failed(endpoint: AuthEndpoint) {
    AUTH_FAILURES[endpoint as usize].fetch_add(1, Relaxed);
}

/// The listener refused a connection.
pub fn connection_refused(why: Refused) {
    REFUSED[why as usize].fetch_add(1, Relaxed);
}

/// The listener closed a connection to keep its slots for real requests.
pub fn connection_closed(why: Closed) {
    CLOSED[why as usize].fetch_add(1, Relaxed);
}

/// ESPF's POST to the events path was answered with `status`.
pub fn event_received(status: u16) {
    if let Some(c) = RECEIVED.get(status as usize) {
        c.fetch_add(1, Relaxed);
    }
}

/// An event reached its final state: `done`, `in_progress` or `failed` (a dead letter).
pub fn event_finished(state: &str) {
    match state {
        "done" => FINISHED_OK.fetch_add(1, Relaxed),
        "in_progress" => FINISHED_IN_PROGRESS.fetch_add(1, Relaxed),
        _ => FINISHED_FAILED.fetch_add(1, Relaxed),
    };
}

/// A failed attempt was scheduled to be tried again.
pub fn retry_scheduled() {
    RETRIES.fetch_add(1, Relaxed);
}

/// A PortaBilling `Session/login` succeeded.
pub fn login() {
    LOGINS.fetch_add(1, Relaxed);
}

/// Records how long `call` took.
pub fn observe(call: Call, d: Duration) {
    CALLS[call.index()].observe(d);
}

/// Measures a call from now until the returned guard is dropped, whichever way the caller
/// leaves: `let _timer = metrics::timer(Call::Target);`.
pub fn timer(call: Call) -> Timer {
    Timer {
        call,
        started: Instant::now(),
    }
}

/// See [`timer`].
pub struct Timer {
    call: Call,
    started: Instant,
}

impl Drop for Timer {
    fn drop(&mut self) {
        observe(self.call, self.started.elapsed());
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
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// The whole scrape, Prometheus text format 0.0.4.
pub fn render(g: &Gauges) -> String {
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
    for (code, c) in RECEIVED.iter().enumerate() {
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
        ("ok", &FINISHED_OK),
        ("failed", &FINISHED_FAILED),
        ("in_progress", &FINISHED_IN_PROGRESS),
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
    let _ = writeln!(out, "espfd_retries_total {}", RETRIES.load(Relaxed));

    header(
        &mut out,
        "espfd_dead_letters_total",
        "counter",
        "Events that ended FAILED and stay in the store as dead letters.",
    );
    let _ = writeln!(
        out,
        "espfd_dead_letters_total {}",
        FINISHED_FAILED.load(Relaxed)
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

    header(
        &mut out,
        "espfd_logins_total",
        "counter",
        "Successful PortaBilling Session/login calls.",
    );
    let _ = writeln!(out, "espfd_logins_total {}", LOGINS.load(Relaxed));

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
            AUTH_FAILURES[e as usize].load(Relaxed)
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
            REFUSED[r as usize].load(Relaxed)
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
            CLOSED[c as usize].load(Relaxed)
        );
    }

    header(
        &mut out,
        "espfd_call_duration_seconds",
        "histogram",
        "Duration of outbound calls: PortaBilling API, target, ESPF status API.",
    );
    for call in Call::ALL {
        let h = &CALLS[call.index()];
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
        let before = render(&Gauges::default());
        event_received(200);
        event_received(413);
        event_finished("failed");
        retry_scheduled();
        auth_failed(AuthEndpoint::Callback);
        connection_refused(Refused::MaxPerAddr);
        connection_closed(Closed::IdleForRoom);
        observe(Call::Espf, Duration::from_millis(30));
        observe(Call::Espf, Duration::from_secs(60));
        let after = render(&Gauges {
            backlog: Some(3),
            oldest_pending_age_seconds: Some(1.5),
            portabilling_last_answer_age_seconds: None,
        });
        let delta = |s: &str| value(&after, s) - value(&before, s);
        // An unusual code appears once it has been seen.
        assert!(value(&after, "espfd_events_received_total{code=\"413\"}") >= 1.0);
        assert!(delta("espfd_events_received_total{code=\"200\"}") >= 1.0);
        assert!(delta("espfd_dead_letters_total") >= 1.0);
        assert!(delta("espfd_retries_total") >= 1.0);
        assert!(delta("espfd_auth_failures_total{endpoint=\"callback\"}") >= 1.0);
        assert!(value(&after, "espfd_auth_failures_total{endpoint=\"events\"}") >= 0.0);
        assert!(delta("espfd_connections_refused_total{reason=\"max_per_addr\"}") >= 1.0);
        assert!(
            value(
                &after,
                "espfd_connections_refused_total{reason=\"allow_from\"}"
            ) >= 0.0
        );
        assert!(delta("espfd_connections_closed_total{reason=\"idle_for_room\"}") >= 1.0);
        assert!(delta("espfd_call_duration_seconds_count{call=\"espf\"}") >= 2.0);
        // 30 ms is not in the 0.025 bucket but is in the 0.05 one; 60 s only in +Inf.
        let le =
            |b: &str| format!("espfd_call_duration_seconds_bucket{{call=\"espf\",le=\"{b}\"}}");
        assert!(delta(&le("0.05")) - delta(&le("0.025")) >= 1.0);
        assert!(delta(&le("+Inf")) - delta(&le("30")) >= 1.0);
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
