//! Upstream health: a circuit breaker per upstream (PortaBilling API, target, ESPF API),
//! shared by every worker.
//!
//! After `ESPFD_BREAKER_FAILURES` consecutive transient failures of an upstream the breaker
//! opens: the upstream is **down**, and calls to it are not made ([`Breaker::admit`] says
//! [`Admit::Down`]) except one probe at a time, at intervals growing from 1 s to 5 s, start
//! to start. The first success closes it; the worker that saw it makes every event whose last
//! failure came from that upstream due at once (see `pipeline/worker.rs`). A permanent failure
//! (the upstream answered, and said no) closes it too and resets the count.
//!
//! The gate sits where the calls are made — [`crate::portabilling::PbClient`],
//! [`crate::espf::EspfClient`], and the connector call in the worker — so a blackholed
//! upstream costs one call in flight once it is down, whichever code path would call it.

use std::fmt;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use crate::util::now_ms;

/// `ESPFD_BREAKER_FAILURES`' default.
pub const DEFAULT_BREAKER_FAILURES: u32 = 5;
/// First wait between two probes of a down upstream.
pub const PROBE_FIRST: Duration = Duration::from_secs(1);
/// Longest wait between two probes.
pub const PROBE_MAX: Duration = Duration::from_secs(5);
/// A probe still unanswered after this long no longer holds back the next one.
const PROBE_STALE: i64 = 120_000;

/// One of the services espfd calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Upstream {
    PortaBilling,
    Target,
    Espf,
}

impl Upstream {
    /// Every upstream.
    pub const ALL: [Upstream; 3] = [Upstream::PortaBilling, Upstream::Target, Upstream::Espf];

    /// The name in log lines, metrics and the store.
    pub fn name(self) -> &'static str {
        match self {
            Upstream::PortaBilling => "portabilling",
            Upstream::Target => "target",
            Upstream::Espf => "espf",
        }
    }

    /// The upstream of that name.
    pub fn parse(name: &str) -> Option<Upstream> {
        Upstream::ALL.into_iter().find(|u| u.name() == name)
    }
}

impl fmt::Display for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Whether a call may be made now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admit {
    /// The upstream is up: call.
    Go,
    /// The upstream is down and this call is its probe: call, then report the result.
    Probe,
    /// The upstream is down: do not call. The reason it went down.
    Down(String),
}

#[derive(Debug, Default)]
struct State {
    /// Transient failures in a row.
    failures: u32,
    /// Since when it is down (unix ms), and why.
    down: Option<(i64, String)>,
    /// A probe is in flight.
    probing: bool,
    /// When it started (unix ms): a probe never reported is given up after [`PROBE_STALE`].
    probing_since: i64,
    /// It closed and no worker has resumed its events yet: how long it was down (ms).
    closed: Option<i64>,
    /// When the next probe may start (unix ms).
    next_probe_at: i64,
    /// The wait after the next probe if it fails (ms).
    interval: i64,
}

/// The breaker of one upstream.
#[derive(Debug)]
pub struct Breaker {
    upstream: Upstream,
    threshold: u32,
    state: Mutex<State>,
}

/// What a result did to a breaker, for the caller to act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Nothing worth saying.
    None,
    /// It just opened.
    Opened,
    /// It just closed after being down this long (ms).
    Closed { down_ms: i64 },
}

impl Breaker {
    /// A closed breaker that opens after `threshold` transient failures in a row.
    pub fn new(upstream: Upstream, threshold: u32) -> Breaker {
        Breaker {
            upstream,
            threshold: threshold.max(1),
            state: Mutex::new(State::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Which upstream this is.
    pub fn upstream(&self) -> Upstream {
        self.upstream
    }

    /// Whether a call may be made now; [`Admit::Probe`] is given to one caller at a time,
    /// who must then report with [`Breaker::success`] or [`Breaker::failure`].
    pub fn admit(&self) -> Admit {
        let mut st = self.lock();
        let Some((_, why)) = &st.down else {
            return Admit::Go;
        };
        let now = now_ms();
        let probing = st.probing && now - st.probing_since < PROBE_STALE;
        if probing || now < st.next_probe_at {
            return Admit::Down(why.clone());
        }
        st.probing = true;
        st.probing_since = now;
        st.next_probe_at = now + st.interval;
        st.interval = (st.interval * 2).min(PROBE_MAX.as_millis() as i64);
        Admit::Probe
    }

    /// Whether a call now would be refused (down, and no probe may start yet); takes no
    /// probe slot. Workers check it before they start an event.
    pub fn blocked(&self) -> bool {
        let st = self.lock();
        let now = now_ms();
        st.down.is_some()
            && ((st.probing && now - st.probing_since < PROBE_STALE) || now < st.next_probe_at)
    }

    /// Takes the news that the breaker closed (how long it was down, ms), once: the worker
    /// that takes it makes the upstream's waiting events due.
    pub fn take_closed(&self) -> Option<i64> {
        self.lock().closed.take()
    }

    /// Whether the upstream is down (`espfd_upstream_up`, `/readyz`), and why.
    pub fn down(&self) -> Option<(i64, String)> {
        self.lock().down.clone()
    }

    /// How long until a probe may start: `None` while up.
    pub fn until_probe(&self) -> Option<Duration> {
        let st = self.lock();
        st.down.as_ref()?;
        Some(Duration::from_millis(
            (st.next_probe_at - now_ms()).max(0) as u64
        ))
    }

    /// The upstream answered (a permanent refusal counts: it is there).
    pub fn success(&self) -> Change {
        let mut st = self.lock();
        st.failures = 0;
        st.probing = false;
        match st.down.take() {
            Some((since, _)) => {
                let down_ms = now_ms() - since;
                st.closed = Some(down_ms);
                Change::Closed { down_ms }
            }
            None => Change::None,
        }
    }

    /// A transient failure (no answer, a timeout, a 5xx ...), `why` in a few words.
    pub fn failure(&self, why: &str) -> Change {
        let mut st = self.lock();
        st.probing = false;
        st.failures = st.failures.saturating_add(1);
        if st.down.is_some() || st.failures < self.threshold {
            return Change::None;
        }
        let now = now_ms();
        st.down = Some((now, why.to_string()));
        st.interval = PROBE_FIRST.as_millis() as i64;
        st.next_probe_at = now + st.interval;
        st.interval = (st.interval * 2).min(PROBE_MAX.as_millis() as i64);
        log::warn!(
            "{} down after {} failures ({why}); probing every {}-{} s",
            self.upstream,
            st.failures,
            PROBE_FIRST.as_secs(),
            PROBE_MAX.as_secs()
        );
        Change::Opened
    }

    /// Gives back a probe slot whose call was not made after all.
    pub fn release(&self) {
        self.lock().probing = false;
    }
}

/// The three breakers.
#[derive(Debug)]
pub struct Upstreams {
    pub portabilling: Breaker,
    pub target: Breaker,
    pub espf: Breaker,
}

impl Upstreams {
    /// Breakers that open after `threshold` transient failures in a row.
    pub fn new(threshold: u32) -> Upstreams {
        Upstreams {
            portabilling: Breaker::new(Upstream::PortaBilling, threshold),
            target: Breaker::new(Upstream::Target, threshold),
            espf: Breaker::new(Upstream::Espf, threshold),
        }
    }

    /// The breaker of `u`.
    pub fn get(&self, u: Upstream) -> &Breaker {
        match u {
            Upstream::PortaBilling => &self.portabilling,
            Upstream::Target => &self.target,
            Upstream::Espf => &self.espf,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_the_threshold_and_probes_one_at_a_time() {
        let b = Breaker::new(Upstream::Target, 3);
        assert_eq!(b.failure("refused"), Change::None);
        assert_eq!(b.failure("refused"), Change::None);
        assert_eq!(b.admit(), Admit::Go);
        assert_eq!(b.failure("refused"), Change::Opened);
        assert_eq!(b.admit(), Admit::Down("refused".into()));
        assert!(b.blocked());
        // Make the probe due now.
        b.lock().next_probe_at = 0;
        assert!(!b.blocked());
        assert_eq!(b.admit(), Admit::Probe);
        assert!(matches!(b.admit(), Admit::Down(_)), "one probe at a time");
        assert_eq!(b.failure("refused"), Change::None);
        assert!(b.blocked(), "the failed probe sets the next one later");
        b.lock().next_probe_at = 0;
        assert_eq!(b.admit(), Admit::Probe);
        assert!(matches!(b.success(), Change::Closed { .. }));
        assert_eq!(b.admit(), Admit::Go);
    }

    #[test]
    fn probe_intervals_grow_to_five_seconds() {
        let b = Breaker::new(Upstream::Espf, 1);
        b.failure("x");
        let mut seen = vec![];
        for _ in 0..5 {
            seen.push(b.lock().interval);
            b.lock().next_probe_at = 0;
            assert_eq!(b.admit(), Admit::Probe);
            b.failure("x");
        }
        assert_eq!(seen, vec![2000, 4000, 5000, 5000, 5000]);
        assert!(b.until_probe().unwrap() <= PROBE_MAX);
    }

    #[test]
    fn a_success_resets_the_count() {
        let b = Breaker::new(Upstream::PortaBilling, 2);
        b.failure("x");
        b.success();
        assert_eq!(b.failure("x"), Change::None);
        assert_eq!(b.failure("x"), Change::Opened);
    }
}
