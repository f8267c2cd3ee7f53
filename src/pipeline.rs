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

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use crossbeam_channel::{bounded, Receiver, Sender};

use crate::espf::{EspfClient, Status};
use crate::event::Event;
use crate::metrics::{Call, Metrics};
use crate::outbound::Failure;
use crate::portabilling::PbClient;
use crate::store::{Early, Row, Store, Update};
use crate::target::{self, Delivery, Outcome, Target};
use crate::util::{format_rfc3339, jitter_u64, now_ms};

/// Events fetched per store query.
const BATCH: usize = 64;
/// Longest sleep of an idle worker before it looks at the store again anyway; this is how
/// `espfd events replay`, run from another process, is noticed.
const IDLE_POLL: Duration = Duration::from_secs(1);

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
    /// The event reached a final state (`done`, `failed` or `in_progress`).
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
    pub target: Target,
    pub group: String,
    pub retry_max_age_ms: i64,
    pub retry_initial_ms: i64,
    pub retry_max_delay_ms: i64,
    pub async_timeout_ms: i64,
    pub observer: Option<Sender<Step>>,
    /// The service's registry: finished events, retries, the target's call durations.
    pub metrics: Arc<Metrics>,
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
        for lane in 0..lanes {
            let (tx, rx) = bounded::<()>(1);
            senders.push(tx);
            let ctx = ctx.clone();
            let stop = stop.clone();
            workers.push(
                thread::Builder::new()
                    .name(format!("worker-{lane}"))
                    .spawn(move || worker(lane, &ctx, &rx, &stop))?,
            );
        }
        Ok(Pipeline {
            wakers: Wakers(Arc::new(senders)),
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

fn worker(lane: usize, ctx: &Ctx, wake: &Receiver<()>, stop: &AtomicBool) {
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
    while !stop.load(Ordering::SeqCst) {
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
            if stop.load(Ordering::SeqCst) {
                return;
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
        for row in rows {
            if stop.load(Ordering::SeqCst) {
                return;
            }
            process(ctx, &row);
        }
    }
}

/// Handles one event: a full attempt, or only the status report still owed.
fn process(ctx: &Ctx, row: &Row) {
    let ev = match Event::parse(row.body.as_bytes()) {
        Ok(ev) => ev,
        Err(reason) => {
            // Cannot happen for bodies the ingress accepted; keep it visible if it does.
            let message = format!("stored event no longer parses: {reason}");
            log::error!("i_event={} {message}", row.i_event);
            let _ = save(
                ctx,
                row,
                "failed",
                row.attempts,
                0,
                Status::Failed,
                &message,
                row.retry_reported,
                Some(("FAILED", &message)),
            );
            return;
        }
    };
    if row.state == "report" {
        let status = row
            .status
            .as_deref()
            .and_then(Status::parse)
            .unwrap_or(Status::Failed);
        let message = row.message.clone().unwrap_or_default();
        conclude(ctx, row, &ev, row.attempts, status, message);
        return;
    }

    let attempt = row.attempts + 1;
    // Until the outcome is recorded, a completion callback for this event is kept for it.
    let _delivering = ctx.store.delivering(ev.i_event);
    let outcome = match attempt_once(ctx, row, &ev, attempt) {
        Ok(outcome) => outcome,
        Err(f) => Outcome::Failed(f),
    };
    let outcome_text = match &outcome {
        Outcome::Done(m) => format!("OK: {m}"),
        Outcome::Accepted(m) => format!("IN_PROGRESS: {m}"),
        Outcome::Failed(f) if f.transient => format!("transient failure: {}", f.message),
        Outcome::Failed(f) => format!("permanent failure: {}", f.message),
    };
    ctx.emit(Step::Delivered {
        i_event: ev.i_event,
        outcome: outcome_text,
    });
    match outcome {
        Outcome::Done(m) => conclude(ctx, row, &ev, attempt, Status::Ok, m),
        Outcome::Accepted(m) => conclude(ctx, row, &ev, attempt, Status::InProgress, m),
        Outcome::Failed(f) if !f.transient => {
            conclude(ctx, row, &ev, attempt, Status::Failed, f.message)
        }
        Outcome::Failed(f) => {
            let age = now_ms() - row.attempts_since();
            if age >= ctx.retry_max_age_ms {
                let message = format!(
                    "gave up after {attempt} attempts over {} s: {}",
                    age / 1000,
                    f.message
                );
                conclude(ctx, row, &ev, attempt, Status::Failed, message);
            } else {
                retry_later(ctx, row, &ev, attempt, &f);
            }
        }
    }
}

/// An IN_PROGRESS event whose completion callback did not come in time: FAILED.
fn expire(ctx: &Ctx, row: &Row) {
    let Ok(ev) = Event::parse(row.body.as_bytes()) else {
        return;
    };
    let message = format!(
        "no completion callback within {} s of IN_PROGRESS (ESPFD_ASYNC_TIMEOUT)",
        ctx.async_timeout_ms / 1000
    );
    conclude(ctx, row, &ev, row.attempts, Status::Failed, message);
}

/// Looks the entity up and calls the target.
fn attempt_once(ctx: &Ctx, row: &Row, ev: &Event, attempt: i64) -> Result<Outcome, Failure> {
    let entity = match &ev.entity {
        Some(e) => {
            let found = ctx.pb.lookup(e).map_err(|err| err.into_failure("lookup"))?;
            let key = ev.ordering_key();
            log::debug!(
                "i_event={} looked up {key}: {}",
                ev.i_event,
                if found.is_some() {
                    "found"
                } else {
                    "not found"
                }
            );
            ctx.emit(Step::LookedUp {
                i_event: ev.i_event,
                entity: key,
                found: found.is_some(),
            });
            found
        }
        None => None,
    };
    let doc = target::document(
        ev.i_event,
        &ev.event_type,
        &ev.variables,
        &format_rfc3339(row.received_at),
        attempt,
        &ctx.group,
        ev.entity.as_ref().map(|e| e.kind.name()),
        entity,
    );
    let document = doc.to_string();
    let _timer = ctx.metrics.timer(Call::Target);
    Ok(ctx.target.deliver(&Delivery {
        i_event: ev.i_event,
        event_type: &ev.event_type,
        entity_kind: ev.entity.as_ref().map(|e| e.kind.name()),
        entity_id: ev.entity.as_ref().map(|e| e.id.as_str()),
        i_account: ev.i_account(),
        attempt,
        group: &ctx.group,
        document: document.as_bytes(),
    }))
}

/// Reports the status (for events naming an account) and records the end of the event.
/// A status report that fails transiently is owed: the event stays open in state `report`.
fn conclude(ctx: &Ctx, row: &Row, ev: &Event, attempt: i64, status: Status, mut message: String) {
    let final_state = match status {
        Status::Ok => "done",
        Status::InProgress => "in_progress",
        _ => "failed",
    };
    let mut state = final_state;
    let mut next_at = 0;
    let mut attempts = attempt;
    if let Some(i_account) = ev.i_account() {
        match ctx.espf.report(i_account, status, &message) {
            Ok(()) => {
                log::debug!(
                    "i_event={} reported {} for i_account={i_account}",
                    ev.i_event,
                    status.as_str()
                );
                ctx.emit(Step::Reported {
                    i_event: ev.i_event,
                    i_account,
                    status: status.as_str(),
                });
            }
            Err(f) if f.transient && now_ms() - row.attempts_since() < ctx.retry_max_age_ms => {
                attempts = if row.state == "report" {
                    attempt + 1
                } else {
                    attempt
                };
                let delay = backoff(
                    ctx.retry_initial_ms,
                    ctx.retry_max_delay_ms,
                    attempts,
                    f.retry_after,
                );
                log::warn!(
                    "i_event={} status {} not reported yet ({}); next try in {} ms",
                    ev.i_event,
                    status.as_str(),
                    f.message,
                    delay
                );
                state = "report";
                next_at = now_ms() + delay;
            }
            Err(f) => {
                log::error!(
                    "i_event={} status {} not reported: {}",
                    ev.i_event,
                    status.as_str(),
                    f.message
                );
                message = format!("{message} (status report failed: {})", f.message);
            }
        }
    }
    if state == "in_progress" {
        // The deadline for the completion callback.
        next_at = now_ms() + ctx.async_timeout_ms;
    }
    let log_line = (status.as_str(), message.as_str());
    let early = save(
        ctx,
        row,
        state,
        attempts,
        next_at,
        status,
        &message,
        row.retry_reported,
        Some(log_line),
    );
    if let Early::Applied { status: completed } = &early {
        // The target's callback came before IN_PROGRESS was recorded; the final status is
        // reported next, after IN_PROGRESS.
        log::info!(
            "i_event={} {} IN_PROGRESS: {message}; its completion callback ({completed}) had already arrived",
            ev.i_event,
            ev.event_type,
        );
        return;
    }
    if state == final_state {
        ctx.metrics.event_finished(final_state);
        match status {
            Status::Ok | Status::InProgress => {
                log::info!(
                    "i_event={} {} {}: {}",
                    ev.i_event,
                    ev.event_type,
                    status.as_str(),
                    message
                )
            }
            _ => log::warn!(
                "i_event={} {} FAILED: {}",
                ev.i_event,
                ev.event_type,
                message
            ),
        }
        ctx.emit(Step::Finished {
            i_event: ev.i_event,
            state: final_state,
            message,
        });
    }
}

fn retry_later(ctx: &Ctx, row: &Row, ev: &Event, attempt: i64, f: &Failure) {
    ctx.metrics.retry_scheduled();
    let delay = backoff(
        ctx.retry_initial_ms,
        ctx.retry_max_delay_ms,
        attempt,
        f.retry_after,
    );
    let mut retry_reported = row.retry_reported;
    if !retry_reported {
        if let Some(i_account) = ev.i_account() {
            match ctx.espf.report(i_account, Status::Retry, &f.message) {
                Ok(()) => {
                    retry_reported = true;
                    ctx.emit(Step::Reported {
                        i_event: ev.i_event,
                        i_account,
                        status: "RETRY",
                    });
                }
                Err(e) => log::warn!(
                    "i_event={} RETRY status not reported: {}",
                    ev.i_event,
                    e.message
                ),
            }
        }
    }
    log::warn!(
        "i_event={} attempt {attempt} failed ({}); next try in {} ms",
        ev.i_event,
        f.message,
        delay
    );
    ctx.emit(Step::Retrying {
        i_event: ev.i_event,
        attempt,
        delay_ms: delay,
        reason: f.message.clone(),
    });
    let _ = save(
        ctx,
        row,
        "retry",
        attempt,
        now_ms() + delay,
        Status::Retry,
        &f.message,
        retry_reported,
        Some(("RETRY", &f.message)),
    );
}

/// Delay before try `attempt + 1`: the server's `Retry-After` if it gave one (at least
/// `ESPFD_RETRY_INITIAL`, at most an hour), else exponential from `ESPFD_RETRY_INITIAL`, capped at `ESPFD_RETRY_MAX_DELAY`,
/// with ±25 % jitter so that many failed events do not come back at the same instant.
fn backoff(initial_ms: i64, max_ms: i64, attempt: i64, retry_after: Option<Duration>) -> i64 {
    if let Some(d) = retry_after {
        // Honoured up to an hour, but never below ESPFD_RETRY_INITIAL: "Retry-After: 0" (or
        // a date in the past) must not turn into a tight loop.
        return (d.as_millis() as i64).clamp(initial_ms, 3_600_000.max(initial_ms));
    }
    let exp = (attempt - 1).clamp(0, 30) as u32;
    let base = initial_ms.saturating_mul(1i64 << exp).min(max_ms);
    let spread = base / 2;
    let jitter = if spread > 0 {
        (jitter_u64() % spread as u64) as i64
    } else {
        0
    };
    (base - base / 4 + jitter).max(1)
}

#[allow(clippy::too_many_arguments)]
fn save(
    ctx: &Ctx,
    row: &Row,
    state: &'static str,
    attempts: i64,
    next_at: i64,
    status: Status,
    message: &str,
    retry_reported: bool,
    attempt_log: Option<(&str, &str)>,
) -> Early {
    let update = Update {
        seq: row.seq,
        i_event: row.i_event,
        state,
        attempts,
        next_at,
        status: Some(status.as_str().to_string()),
        message: Some(message.to_string()),
        retry_reported,
        attempt_log: attempt_log.map(|(o, d)| (o.to_string(), d.to_string())),
    };
    match ctx.store.update(update) {
        Ok(Early::Ignored { status: completed }) => {
            log::warn!(
                "i_event={} completion callback ({completed}) ignored: it arrived while the \
                 delivery was in flight, and the delivery ended {} ({message}), not with 202",
                row.i_event,
                status.as_str()
            );
            Early::Ignored { status: completed }
        }
        Ok(early) => early,
        Err(e) => {
            // The event stays in its previous state and will be processed again.
            log::error!("i_event={} cannot record state {state}: {e}", row.i_event);
            thread::sleep(Duration::from_secs(1));
            Early::None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::backoff;
    use std::time::Duration;

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_cap() {
        for attempt in 1..=12 {
            let base = (2_000i64 << (attempt - 1)).min(600_000);
            let mut seen = std::collections::HashSet::new();
            for _ in 0..200 {
                let d = backoff(2_000, 600_000, attempt, None);
                assert!(
                    d >= base * 3 / 4 && d < base * 5 / 4,
                    "attempt {attempt}: {d} vs {base}"
                );
                seen.insert(d);
            }
            assert!(seen.len() > 20, "jitter spreads the delays: {}", seen.len());
        }
    }

    #[test]
    fn retry_after_is_honoured_within_bounds() {
        let s = |secs| Some(Duration::from_secs(secs));
        assert_eq!(backoff(2_000, 600_000, 1, s(30)), 30_000);
        assert_eq!(
            backoff(2_000, 600_000, 1, s(0)),
            2_000,
            "never a tight loop"
        );
        assert_eq!(
            backoff(2_000, 600_000, 1, s(86_400)),
            3_600_000,
            "at most an hour"
        );
    }
}
