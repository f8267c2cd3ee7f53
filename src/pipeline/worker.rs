//! One event in a worker's hands: an attempt (look the entity up, call the target), or the
//! status report still owed, then what is recorded: [`conclude`] for an end (or a report
//! owed), [`retry_later`] for a transient failure, each through [`save`].

use std::thread;
use std::time::Duration;

use super::{Ctx, Step};
use crate::connector::Outcome;
use crate::enrich::{self, Context};
use crate::espf::Status;
use crate::event::Event;
use crate::metrics::Call;
use crate::outbound::Failure;
use crate::store::{Early, Reader, State, StoredEvent, Update};
use crate::upstream::{Admit, Upstream};
use crate::util::now_ms;

/// How long a status report waits when the ESPF API is down: it is made due as soon as the
/// API answers again, so this is only the fallback.
const PARKED_MS: i64 = 3_600_000;

/// Handles one event: a full attempt, or only the status report still owed. Returns the
/// upstream that is down when the event could not be tried for it: nothing was recorded,
/// and the lane waits for that upstream.
pub(super) fn process(
    ctx: &Ctx,
    row: &StoredEvent,
    coalesced: Vec<(i64, String)>,
) -> Option<Upstream> {
    let ev = match &row.event {
        Ok(ev) => ev,
        Err(reason) => {
            // Cannot happen for bodies the ingress accepted; keep it visible if it does.
            let message = format!("stored event no longer parses: {reason}");
            log::error!("i_event={} {message}", row.i_event);
            let failed = Update::new(row, State::Failed, Status::Failed.as_str(), &message);
            let _ = save(ctx, failed);
            return None;
        }
    };
    if row.state == State::Report {
        let status = row
            .status
            .as_deref()
            .and_then(Status::parse)
            .unwrap_or(Status::Failed);
        let message = row.message.clone().unwrap_or_default();
        conclude(ctx, row, ev, row.attempts, status, message);
        return None;
    }

    let attempt = row.attempts + 1;
    // Until the outcome is recorded, a completion callback for this event is kept for it.
    let _delivering = ctx.store.delivering(ev.i_event);
    let outcome = match attempt_once(ctx, row, ev, attempt, coalesced) {
        Ok(outcome) => outcome,
        Err(f) => Outcome::Failed(f),
    };
    if let Outcome::Failed(f) = &outcome {
        if f.down {
            // Not tried: spends no attempt, keeps its place; the lane waits.
            log::debug!("i_event={} waits: {}", ev.i_event, f.message);
            return f.upstream;
        }
    }
    let outcome_text = match &outcome {
        Outcome::Done(m) => format!("OK: {m}"),
        Outcome::Accepted(m) => format!("IN_PROGRESS: {m}"),
        Outcome::Failed(f) if f.transient => format!("transient failure: {}", f.message),
        Outcome::Failed(f) => format!("permanent failure: {}", f.message),
        Outcome::Skipped(m) => format!("skipped: {m}"),
    };
    ctx.emit(Step::Delivered {
        i_event: ev.i_event,
        outcome: outcome_text,
    });
    match outcome {
        Outcome::Skipped(m) => skip(ctx, row, ev, attempt, m),
        Outcome::Done(m) => conclude(ctx, row, ev, attempt, Status::Ok, m),
        Outcome::Accepted(m) => conclude(ctx, row, ev, attempt, Status::InProgress, m),
        Outcome::Failed(f) if !f.transient => {
            conclude(ctx, row, ev, attempt, Status::Failed, f.message)
        }
        Outcome::Failed(f) => {
            let age = now_ms() - row.attempts_since();
            if ctx.retry.gives_up(age) {
                let message = format!(
                    "gave up after {attempt} attempts over {} s: {}",
                    age / 1000,
                    f.message
                );
                conclude(ctx, row, ev, attempt, Status::Failed, message);
            } else {
                retry_later(ctx, row, ev, attempt, &f);
            }
        }
    }
    None
}

/// An IN_PROGRESS event whose completion callback did not come in time: FAILED.
pub(super) fn expire(ctx: &Ctx, row: &StoredEvent) {
    let Ok(ev) = &row.event else {
        return;
    };
    let message = format!(
        "no completion callback within {} s of IN_PROGRESS (ESPFD_ASYNC_TIMEOUT)",
        ctx.retry.async_timeout.as_secs()
    );
    conclude(ctx, row, ev, row.attempts, Status::Failed, message);
}

/// Looks the entity up and calls the target with this attempt's [`Context`].
fn attempt_once(
    ctx: &Ctx,
    row: &StoredEvent,
    ev: &Event,
    attempt: i64,
    coalesced: Vec<(i64, String)>,
) -> Result<Outcome, Failure> {
    let record = enrich::lookup(&ctx.pb, ev)?;
    if ev.entity.is_some() {
        ctx.emit(Step::LookedUp {
            i_event: ev.i_event,
            entity: ev.ordering_key(),
            found: record.is_some(),
        });
    }
    let context =
        Context::new(ev, row.received_at, attempt, &ctx.group, record).with_coalesced(coalesced);
    let breaker = &ctx.pb.upstreams().target;
    let admit = breaker.admit();
    if let Admit::Down(why) = &admit {
        return Err(Failure::down(Upstream::Target, why));
    }
    let outcome = {
        let _timer = ctx.metrics.timer(Call::Target);
        ctx.connector.deliver(&context)
    };
    match &outcome {
        // PortaBilling (a template's pb()) failed, not the target.
        Outcome::Failed(f) if f.upstream.is_some_and(|u| u != Upstream::Target) => {
            if admit == Admit::Probe {
                breaker.release();
            }
        }
        Outcome::Failed(f) if f.transient => {
            breaker.failure(crate::util::truncate_chars(&f.message, 200));
        }
        _ => {
            breaker.success();
        }
    }
    Ok(outcome)
}

/// With `ESPFD_COALESCE=on`, when `head` has more events of its entity queued and due
/// behind it: finishes the older ones as done ("coalesced into i_event N", no target call,
/// no status report of their own) and returns the newest, to be delivered for all of them,
/// with the older ones' ids and types. `None` when there is nothing to coalesce.
pub(super) fn coalesce(
    ctx: &Ctx,
    reader: &Reader,
    head: &StoredEvent,
) -> Option<(StoredEvent, Vec<(i64, String)>)> {
    if !ctx.coalesce || head.state != State::Queued {
        return None;
    }
    let mut group = match reader.coalescible(head, now_ms()) {
        Ok(g) if g.len() > 1 => g,
        Ok(_) => return None,
        Err(e) => {
            log::warn!("i_event={} not coalesced: {e}", head.i_event);
            return None;
        }
    };
    let newest = group.pop()?;
    let message = format!("coalesced into i_event {}", newest.i_event);
    let updates = group
        .iter()
        .map(|old| Update {
            status: None,
            attempt_log: Some(("COALESCED".into(), message.clone())),
            ..Update::new(old, State::Done, "", &message)
        })
        .collect();
    // The older ones are finished first: if espfd dies now, the newest is still queued and
    // carries the entity's current state when it runs.
    if let Err(e) = ctx.store.update_all(updates) {
        log::error!("i_event={} not coalesced: {e}", head.i_event);
        return None;
    }
    log::info!(
        "i_event={} {} stands for {} older events of {} (coalesced)",
        newest.i_event,
        newest.event_type,
        group.len(),
        newest.entity
    );
    for old in &group {
        ctx.metrics.event_finished("coalesced");
        ctx.emit(Step::Finished {
            i_event: old.i_event,
            state: State::Done.as_str(),
            message: message.clone(),
        });
    }
    let older = group
        .into_iter()
        .map(|old| (old.i_event, old.event_type))
        .collect();
    Some((newest, older))
}

/// Whether `row` cannot be tried now because an upstream it needs is down (and no probe
/// of it may start yet); which one.
pub(super) fn blocked_on(ctx: &Ctx, row: &StoredEvent) -> Option<Upstream> {
    let up = ctx.pb.upstreams();
    let needs: &[Upstream] = match (&row.event, row.state) {
        // A report owed goes to conclude(), which parks it until the ESPF API is back.
        (Err(_), _) | (_, State::Report) => &[],
        (Ok(ev), _) if ev.entity.is_some() => &[Upstream::PortaBilling, Upstream::Target],
        (Ok(_), _) => &[Upstream::Target],
    };
    needs.iter().copied().find(|u| up.get(*u).blocked())
}

/// Probes PortaBilling (`Session/ping`) and the ESPF API while they are down and a probe is
/// due, so that they are found back even when no event would call them (every status report
/// owed is parked while the ESPF API is down). The target is probed by its next due event.
pub(super) fn probe_down(ctx: &Ctx) {
    let up = ctx.pb.upstreams();
    if up.portabilling.down().is_some() && !up.portabilling.blocked() {
        let _ = ctx.pb.call("Session", "ping", serde_json::json!({}));
    }
    if up.espf.down().is_some() && !up.espf.blocked() {
        ctx.espf.probe();
    }
}

/// Once per breaker that closed: makes that upstream's waiting events due at once, says so,
/// and wakes every lane.
pub(super) fn resume_closed(ctx: &Ctx, wake_all: impl Fn()) {
    for u in Upstream::ALL {
        let Some(down_ms) = ctx.pb.upstreams().get(u).take_closed() else {
            continue;
        };
        match ctx.store.resume(u) {
            Ok(n) => log::info!(
                "{u} back after {} s; {n} events resumed",
                (down_ms + 500) / 1000
            ),
            Err(e) => log::error!(
                "{u} back after {} s; its waiting events stay on their backoff: {e}",
                (down_ms + 500) / 1000
            ),
        }
        wake_all();
    }
}

/// Reports the status (for events naming an account) and records the end of the event.
/// A status report that fails transiently is owed: the event stays open in state `report`.
fn conclude(
    ctx: &Ctx,
    row: &StoredEvent,
    ev: &Event,
    attempt: i64,
    status: Status,
    mut message: String,
) {
    let final_state = match status {
        Status::Ok => State::Done,
        Status::InProgress => State::InProgress,
        _ => State::Failed,
    };
    let mut state = final_state;
    let mut next_at = 0;
    let mut attempts = attempt;
    let mut upstream = None;
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
            Err(f) if f.transient && !ctx.retry.gives_up(now_ms() - row.attempts_since()) => {
                // A report not even tried (the ESPF API is down) spends no attempt.
                attempts = if row.state == State::Report && !f.down {
                    attempt + 1
                } else {
                    attempt
                };
                upstream = Some(f.upstream.unwrap_or(Upstream::Espf));
                let delay = if f.down {
                    // Parked: made due at once when the ESPF API is back (Store::resume).
                    log::info!(
                        "i_event={} status {} waits: {}",
                        ev.i_event,
                        status.as_str(),
                        f.message
                    );
                    PARKED_MS
                } else {
                    let delay = ctx.retry.backoff(attempts, f.retry_after);
                    log::warn!(
                        "i_event={} status {} not reported yet ({}); next try in {} ms",
                        ev.i_event,
                        status.as_str(),
                        f.message,
                        delay
                    );
                    delay
                };
                state = State::Report;
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
    if state == State::InProgress {
        // The deadline for the completion callback.
        next_at = ctx.retry.async_deadline(now_ms());
    }
    let early = save(
        ctx,
        Update {
            attempts,
            next_at,
            upstream,
            ..Update::new(row, state, status.as_str(), &message)
        },
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
        ctx.metrics.event_finished(final_state.as_str());
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
            state: final_state.as_str(),
            message,
        });
    }
}

/// Records an event the connector had nothing to send for: `skipped`, nothing reported.
fn skip(ctx: &Ctx, row: &StoredEvent, ev: &Event, attempt: i64, message: String) {
    let update = Update {
        attempts: attempt,
        status: None,
        attempt_log: Some(("SKIPPED".into(), message.clone())),
        ..Update::new(row, State::Skipped, "", &message)
    };
    save(ctx, update);
    ctx.metrics.event_finished(State::Skipped.as_str());
    log::info!(
        "i_event={} {} skipped: {message}",
        ev.i_event,
        ev.event_type
    );
    ctx.emit(Step::Finished {
        i_event: ev.i_event,
        state: State::Skipped.as_str(),
        message,
    });
}

fn retry_later(ctx: &Ctx, row: &StoredEvent, ev: &Event, attempt: i64, f: &Failure) {
    ctx.metrics.retry_scheduled();
    let delay = ctx.retry.backoff(attempt, f.retry_after);
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
    let retry = Update::new(row, State::Retry, Status::Retry.as_str(), &f.message);
    let _ = save(
        ctx,
        Update {
            attempts: attempt,
            next_at: now_ms() + delay,
            retry_reported,
            upstream: Some(f.upstream.unwrap_or(Upstream::Target)),
            ..retry
        },
    );
}

/// Records `update`; says what became of a completion callback that arrived early. If the
/// store cannot take it, the event stays as it was and is processed again.
fn save(ctx: &Ctx, update: Update) -> Early {
    let (i_event, state) = (update.i_event, update.state);
    let status = update.status.clone().unwrap_or_default();
    let message = update.message.clone().unwrap_or_default();
    match ctx.store.update(update) {
        Ok(Early::Ignored { status: completed }) => {
            log::warn!(
                "i_event={} completion callback ({completed}) ignored: it arrived while the \
                 delivery was in flight, and the delivery ended {status} ({message}), not with 202",
                i_event,
            );
            Early::Ignored { status: completed }
        }
        Ok(early) => early,
        Err(e) => {
            // The event stays in its previous state and will be processed again.
            log::error!("i_event={i_event} cannot record state {state}: {e}");
            thread::sleep(Duration::from_secs(1));
            Early::None
        }
    }
}
