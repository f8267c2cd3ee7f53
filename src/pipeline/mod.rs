//! Lanes and workers: from a stored event to the target and back to ESPF.
//!
//! There are `ESPFD_WORKERS` lanes, one worker thread each. An event's lane is fixed by its
//! ordering key (the entity), so one entity's events are handled by one thread. Each worker
//! has a bounded crossbeam channel that only says "your lane has work"; the store is the
//! queue. A full channel already means "wake up", so the listener never waits on a worker,
//! and a backlog of any size lives on disk, not in memory.
//!
//! A worker takes, in arrival order, the events of its lane that are due and first in line
//! for their entity. An event waiting for a retry therefore holds back the later events of
//! its own entity but no one else's. Processing is level-triggered: the entity's current
//! state is read from PortaBilling at the time of processing.
//!
//! Reconcile events (`espfd reconcile`, negative `i_event`) go through the same lanes, but a
//! lane takes them only when none of ESPF's events is due (the store's due query lists
//! ESPF's first), each only with a token of the shared [`Pace`], and after each one looks
//! at the store again if the ingress woke it meanwhile: so a live event waits behind at
//! most the one reconcile call in flight on its lane.
//!
//! While the service is paused (`espfd pause`, [`crate::pause`]) a lane takes no event and
//! makes no call; it finishes the event in hand first.
//!
//! This file holds the lanes: [`Pipeline`] (one worker thread per lane), [`Wakers`] and the
//! lane's loop. One event in a worker's hands (an attempt, its end, a retry) is in
//! `worker.rs`; when to try again and when to give up is [`RetryPolicy`] (`retry.rs`).

mod pace;
mod retry;
mod worker;

pub use pace::{Pace, DEFAULT_RATE};
pub use retry::RetryPolicy;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use crossbeam_channel::{bounded, Receiver, Sender};

use crate::connector::Connector;
use crate::espf::EspfClient;
use crate::metrics::Metrics;
use crate::pause::Pause;
use crate::portabilling::PbClient;
use crate::store::Store;
use crate::upstream::Upstream;
use crate::util::now_ms;
use worker::{blocked_on, coalesce, expire, probe_down, process, resume_closed};

/// Events fetched per store query.
const BATCH: usize = 64;
/// Longest sleep of an idle worker before it looks at the store again anyway; this is how
/// `espfd events replay`, run from another process, is noticed.
const IDLE_POLL: Duration = Duration::from_secs(1);
/// Longest nap of a paused worker before it looks at the flag again.
const PAUSED_NAP: Duration = Duration::from_millis(250);

/// What happened to an event, for `espfd demo` and tests to follow along.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// ESPF's POST was stored (or was a repeat).
    Received {
        i_event: i64,
        event_type: String,
        entity: String,
        repeat: bool,
    },
    /// PortaBilling was asked for the entity.
    LookedUp {
        i_event: i64,
        entity: String,
        found: bool,
    },
    /// The target answered.
    Delivered { i_event: i64, outcome: String },
    /// A status was reported to ESPF.
    Reported {
        i_event: i64,
        i_account: i64,
        status: &'static str,
    },
    /// The event will be tried again.
    Retrying {
        i_event: i64,
        attempt: i64,
        delay_ms: i64,
        reason: String,
    },
    /// The event reached a final state (`done`, `failed`, `in_progress` or `skipped`).
    Finished {
        i_event: i64,
        state: &'static str,
        message: String,
    },
}

/// Everything a worker needs.
pub struct Ctx {
    pub store: Store,
    pub pb: Arc<PbClient>,
    pub espf: EspfClient,
    pub connector: Connector,
    pub group: String,
    /// `ESPFD_COALESCE=on`: an entity's queued events are delivered once, for the newest.
    pub coalesce: bool,
    /// When to try again, when to give up, how long to wait for a completion callback.
    pub retry: RetryPolicy,
    pub observer: Option<Sender<Step>>,
    /// The service's registry: finished events, retries, the target's call durations.
    pub metrics: Arc<Metrics>,
    /// `espfd pause`: while set, the workers take no event and make no call.
    pub pause: Arc<Pause>,
    /// `espfd reconcile --rate`: the lanes' shared allowance of reconcile events.
    pub pace: Arc<Pace>,
}

impl Ctx {
    fn emit(&self, step: Step) {
        if let Some(o) = &self.observer {
            let _ = o.send(step);
        }
    }
}

/// Wakes the worker of a lane; cheap to clone.
#[derive(Clone)]
pub struct Wakers(Arc<Vec<Sender<()>>>);

impl Wakers {
    /// Wakers for `lanes` lanes that have no worker (an ingress on its own, in tests).
    pub fn unconnected(lanes: usize) -> Wakers {
        Wakers(Arc::new((0..lanes).map(|_| bounded(1).0).collect()))
    }

    /// Tells lane `lane` there is work. Never blocks.
    pub fn wake(&self, lane: usize) {
        if let Some(tx) = self.0.get(lane) {
            let _ = tx.try_send(());
        }
    }

    fn wake_all(&self) {
        for lane in 0..self.0.len() {
            self.wake(lane);
        }
    }
}

/// The running workers.
pub struct Pipeline {
    wakers: Wakers,
    stop: Arc<AtomicBool>,
    workers: Vec<JoinHandle<()>>,
}

impl Pipeline {
    /// Starts one worker per lane of the store. Each looks at the store at once, so events
    /// left unfinished by an earlier run are picked up.
    pub fn start(ctx: Arc<Ctx>) -> std::io::Result<Pipeline> {
        let lanes = ctx.store.lanes();
        let stop = Arc::new(AtomicBool::new(false));
        let mut senders = Vec::with_capacity(lanes);
        let mut workers = Vec::with_capacity(lanes);
        let mut receivers = Vec::with_capacity(lanes);
        for _ in 0..lanes {
            let (tx, rx) = bounded::<()>(1);
            senders.push(tx);
            receivers.push(rx);
        }
        let wakers = Wakers(Arc::new(senders));
        for (lane, rx) in receivers.into_iter().enumerate() {
            let ctx = ctx.clone();
            let stop = stop.clone();
            let wakers = wakers.clone();
            workers.push(
                thread::Builder::new()
                    .name(format!("worker-{lane}"))
                    .spawn(move || worker(lane, &ctx, &rx, &stop, &wakers))?,
            );
        }
        Ok(Pipeline {
            wakers,
            stop,
            workers,
        })
    }

    /// The lane wakers, for the ingress.
    pub fn wakers(&self) -> Wakers {
        self.wakers.clone()
    }

    /// Lets each worker finish the event in hand, for at most `grace`, then stops. Events
    /// not finished by then stay in the store as they were and are processed again on the
    /// next start. Returns how many workers were still busy when the grace ran out.
    pub fn stop(self, grace: Duration) -> usize {
        self.stop.store(true, Ordering::SeqCst);
        self.wakers.wake_all();
        let deadline = std::time::Instant::now() + grace;
        while self.workers.iter().any(|w| !w.is_finished()) && std::time::Instant::now() < deadline
        {
            thread::sleep(Duration::from_millis(5));
        }
        let mut busy = 0;
        for w in self.workers {
            if w.is_finished() {
                let _ = w.join();
            } else {
                busy += 1;
            }
        }
        busy
    }
}

fn worker(lane: usize, ctx: &Ctx, wake: &Receiver<()>, stop: &AtomicBool, wakers: &Wakers) {
    let reader = loop {
        match ctx.store.reader() {
            Ok(r) => break r,
            Err(e) => {
                log::error!("worker {lane}: {e}; retrying in 1 s");
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                thread::sleep(Duration::from_secs(1));
            }
        }
    };
    // The upstream this lane's next event needs and found down.
    let mut blocked: Option<Upstream> = None;
    while !stop.load(Ordering::SeqCst) {
        if paused(ctx, wake) {
            continue;
        }
        probe_down(ctx);
        resume_closed(ctx, || wakers.wake_all());
        if let Some(u) = blocked {
            let breaker = ctx.pb.upstreams().get(u);
            if breaker.blocked() {
                // Wakes from the ingress cost a look at the breaker, not a store query.
                let wait = breaker.until_probe().unwrap_or(IDLE_POLL).min(IDLE_POLL);
                let _ = wake.recv_timeout(wait.max(Duration::from_millis(10)));
                continue;
            }
            blocked = None;
        }
        let now = now_ms();
        let rows = match reader.due(lane, now, BATCH) {
            Ok(rows) => rows,
            Err(e) => {
                log::error!("worker {lane}: {e}");
                let _ = wake.recv_timeout(Duration::from_secs(1));
                continue;
            }
        };
        let overdue = reader.overdue(lane, now, BATCH).unwrap_or_default();
        for row in &overdue {
            // A pause stops the lane between two events, not only between two batches.
            if stop.load(Ordering::SeqCst) || ctx.pause.is_paused() {
                break;
            }
            expire(ctx, row);
        }
        if rows.is_empty() && overdue.is_empty() {
            let wait = match reader.next_due(lane) {
                Ok(Some(at)) => {
                    Duration::from_millis((at - now).clamp(1, IDLE_POLL.as_millis() as i64) as u64)
                }
                _ => IDLE_POLL,
            };
            let _ = wake.recv_timeout(wait);
            continue;
        }
        let mut paced = None;
        for row in rows {
            if stop.load(Ordering::SeqCst) || ctx.pause.is_paused() {
                break;
            }
            let reconcile = row.i_event < 0;
            if reconcile {
                // The rest of the batch is reconcile work too: ESPF's events come first.
                if let Err(wait) = ctx.pace.admit(&reader) {
                    paced = Some(wait);
                    break;
                }
            }
            blocked = blocked_on(ctx, &row).or_else(|| match coalesce(ctx, &reader, &row) {
                Some((newest, older)) => process(ctx, &newest, older),
                None => process(ctx, &row, Vec::new()),
            });
            if blocked.is_some() {
                // Its entity's later events wait behind it; the rest of the batch is
                // read again once the upstream is back or a probe is due.
                break;
            }
            if reconcile && wake.try_recv().is_ok() {
                // Woken during a reconcile call: an event of ESPF's may be due now, and
                // it goes before the rest of this batch.
                break;
            }
        }
        if let Some(wait) = paced {
            // Out of reconcile allowance: an ESPF event's wake ends the wait early.
            let _ = wake.recv_timeout(wait);
        }
    }
}

/// While the service is paused (`espfd pause`): naps until woken or [`PAUSED_NAP`] has
/// passed and says true, so that the lane takes no event and makes no call (an overdue
/// IN_PROGRESS event's FAILED report waits too). The flag itself is read from the store once
/// a second by one thread for all lanes ([`crate::pause`]); this is an atomic load.
fn paused(ctx: &Ctx, wake: &Receiver<()>) -> bool {
    if !ctx.pause.is_paused() {
        return false;
    }
    let _ = wake.recv_timeout(PAUSED_NAP);
    true
}
