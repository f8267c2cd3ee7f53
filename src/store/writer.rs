//! The group-commit writer: the one thread that applies the service's writes.
//!
//! It takes every write that arrived while the previous commit was running, applies them in
//! one transaction and one fsync, and only then answers each caller. Inserts, a worker's
//! state changes, completion callbacks (kept in `completions` when they come early, see the
//! [store's doc](super)) and the janitor's purges all pass here; only `espfd events replay`
//! writes elsewhere ([`super::Reader::replay`]).

use std::thread::{self, JoinHandle};

use crossbeam_channel::{bounded, Receiver, Sender};
use rusqlite::{params, Connection, OptionalExtension};

use super::{
    db_err, lane_of, Completed, Completion, Early, InFlight, Inserted, NewEvent, State, Update,
    PURGE_BATCH,
};
use crate::error::Error;

/// Most writes applied in one transaction.
const MAX_BATCH: usize = 2048;

pub(super) enum Op {
    /// Store an event; with a reason, as `skipped` (finished at once, for no worker).
    Insert(NewEvent, Option<String>, Sender<Result<Inserted, Error>>),
    Update(Update, Sender<Result<Early, Error>>),
    Complete(Completion, Sender<Result<Completed, Error>>),
    /// Delete finished events that finished before this time (unix ms).
    Purge(i64, Sender<Result<usize, Error>>),
    /// Make due at once the open events whose last failure came from this upstream.
    Resume(&'static str, Sender<Result<usize, Error>>),
    /// Apply what came before, then exit.
    Stop,
}

/// The writer thread; [`WriterThread::join`] stops it.
pub struct WriterThread {
    ops: Sender<Op>,
    handle: JoinHandle<()>,
}

impl WriterThread {
    /// Starts the writer on `conn`, with a queue of `depth` writes; returns the queue's
    /// sending side for the [`super::Store`] and the thread's handle.
    /// Starts the writer on `conn`; it holds `lock` (the state directory's) until it stops.
    pub(super) fn start(
        conn: Connection,
        lock: std::fs::File,
        depth: usize,
        lanes: usize,
        in_flight: InFlight,
    ) -> Result<(Sender<Op>, WriterThread), Error> {
        let (tx, rx) = bounded(depth);
        let handle = thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || {
                writer_loop(conn, rx, lanes, &in_flight);
                drop(lock);
            })
            .map_err(|e| Error::io("cannot start the store writer thread", e))?;
        Ok((tx.clone(), WriterThread { ops: tx, handle }))
    }

    /// Applies every write queued so far, then stops the writer. Later writes through any
    /// [`Store`](super::Store) clone fail with [`Error::Closed`].
    pub fn join(self) {
        let _ = self.ops.send(Op::Stop);
        let _ = self.handle.join();
    }
}

fn writer_loop(conn: Connection, rx: Receiver<Op>, lanes: usize, in_flight: &InFlight) {
    let mut batch: Vec<Op> = Vec::with_capacity(256);
    let mut stopping = false;
    while let Ok(first) = rx.recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        if let Some(i) = batch.iter().position(|op| matches!(op, Op::Stop)) {
            stopping = true;
            batch.truncate(i);
        }
        apply_batch(&conn, &mut batch, lanes, in_flight);
        if stopping {
            // Writes queued behind the stop are answered "closed" as the channel drops.
            return;
        }
        if batch.capacity() > 4096 {
            batch.shrink_to(256);
        }
    }
}

fn apply_batch(conn: &Connection, batch: &mut Vec<Op>, lanes: usize, in_flight: &InFlight) {
    let mut results: Vec<Result<Done, Error>> = Vec::with_capacity(batch.len());
    let outcome = (|| -> Result<(), Error> {
        conn.execute_batch("BEGIN IMMEDIATE")
            .map_err(db_err("begin"))?;
        let body = (|| -> Result<(), Error> {
            for op in batch.iter() {
                match op {
                    Op::Insert(ev, skipped, _) => results
                        .push(insert_one(conn, ev, skipped.as_deref(), lanes).map(Done::Inserted)),
                    Op::Update(up, _) => results.push(Ok(Done::Updated(update_one(conn, up)?))),
                    Op::Complete(c, _) => {
                        results.push(complete_one(conn, c, in_flight).map(Done::Completed))
                    }
                    Op::Purge(before, _) => {
                        results.push(purge_some(conn, *before).map(Done::Purged))
                    }
                    Op::Resume(upstream, _) => {
                        results.push(resume(conn, upstream).map(Done::Purged))
                    }
                    Op::Stop => results.push(Ok(Done::Nothing)),
                }
            }
            Ok(())
        })();
        match body {
            Ok(()) => conn.execute_batch("COMMIT").map_err(db_err("commit")),
            Err(e) => {
                let _ = conn.execute_batch("ROLLBACK");
                Err(e)
            }
        }
    })();
    for (i, op) in batch.drain(..).enumerate() {
        let result = match &outcome {
            Ok(()) => match results.get(i) {
                Some(Ok(done)) => Ok(done.clone()),
                Some(Err(e)) => Err(store_err_again(e)),
                None => Err(Error::Closed),
            },
            Err(e) => Err(store_err_again(e)),
        };
        match op {
            Op::Insert(_, _, reply) => {
                let _ = reply.send(result.map(|d| match d {
                    Done::Inserted(i) => i,
                    _ => Inserted::Repeat,
                }));
            }
            Op::Update(_, reply) => {
                let _ = reply.send(result.map(|d| match d {
                    Done::Updated(early) => early,
                    _ => Early::None,
                }));
            }
            Op::Complete(_, reply) => {
                let _ = reply.send(result.map(|d| match d {
                    Done::Completed(c) => c,
                    _ => Completed::NotFound,
                }));
            }
            Op::Purge(_, reply) | Op::Resume(_, reply) => {
                let _ = reply.send(result.map(|d| match d {
                    Done::Purged(n) => n,
                    _ => 0,
                }));
            }
            Op::Stop => {}
        }
    }
    if let Err(e) = outcome {
        log::error!("{e}");
    }
}

/// The result of one write inside a batch, before the commit decides whether it stands.
#[derive(Clone)]
enum Done {
    Inserted(Inserted),
    Updated(Early),
    Completed(Completed),
    Purged(usize),
    Nothing,
}

fn purge_some(conn: &Connection, before: i64) -> Result<usize, Error> {
    let sql = format!(
        "SELECT i_event FROM events WHERE state IN {} AND finished_at < ?1 LIMIT ?2",
        State::sql_in(&State::FINISHED)
    );
    let ids: Vec<i64> = conn
        .prepare_cached(&sql)
        .map_err(db_err("purge"))?
        .query_map(params![before, PURGE_BATCH as i64], |r| r.get(0))
        .map_err(db_err("purge"))?
        .collect::<rusqlite::Result<Vec<i64>>>()
        .map_err(db_err("purge"))?;
    let mut del_attempts = conn
        .prepare_cached("DELETE FROM attempts WHERE i_event = ?1")
        .map_err(db_err("purge"))?;
    let mut del_event = conn
        .prepare_cached("DELETE FROM events WHERE i_event = ?1")
        .map_err(db_err("purge"))?;
    let mut del_completion = conn
        .prepare_cached("DELETE FROM completions WHERE i_event = ?1")
        .map_err(db_err("purge"))?;
    for id in &ids {
        del_attempts.execute(params![id]).map_err(db_err("purge"))?;
        del_completion
            .execute(params![id])
            .map_err(db_err("purge"))?;
        del_event.execute(params![id]).map_err(db_err("purge"))?;
    }
    Ok(ids.len())
}

fn complete_one(
    conn: &Connection,
    c: &Completion,
    in_flight: &InFlight,
) -> Result<Completed, Error> {
    let current: Option<(State, i64, Option<String>, i64)> = conn
        .prepare_cached("SELECT state, lane, status, next_at FROM events WHERE i_event = ?1")
        .map_err(db_err("complete"))?
        .query_row(params![c.i_event], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })
        .optional()
        .map_err(db_err("complete"))?;
    let Some((state, lane, status, deadline)) = current else {
        return Ok(Completed::NotFound);
    };
    let detail = format!("{}: {}", c.status, c.message);
    let waiting = match state {
        // Past its ESPFD_ASYNC_TIMEOUT deadline a worker may be reporting it FAILED right
        // now: a late callback must not be answered 200 and then lost.
        State::InProgress if deadline <= crate::util::now_ms() => {
            return Ok(Completed::TooLate);
        }
        State::InProgress => {
            conn.prepare_cached(
                "UPDATE events SET state = ?4, status = ?2, message = ?3, next_at = 0,
                     finished_at = NULL WHERE i_event = ?1",
            )
            .map_err(db_err("complete"))?
            .execute(params![c.i_event, c.status, c.message, State::Report])
            .map_err(db_err("complete"))?;
            log_attempt(conn, c.i_event, "CALLBACK", &detail)?;
            return Ok(Completed::Applied {
                lane: lane as usize,
            });
        }
        // The IN_PROGRESS report is owed (or being made right now).
        State::Report => status.as_deref() == Some("IN_PROGRESS"),
        // The target calls back before its 202 has reached the worker.
        State::Queued | State::Retry => in_flight.set().contains(&c.i_event),
        State::Done | State::Failed | State::Skipped => false,
    };
    if !waiting {
        return Ok(Completed::NotInProgress(state));
    }
    let added = conn
        .prepare_cached(
            "INSERT INTO completions (i_event, status, message, at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT(i_event) DO NOTHING",
        )
        .map_err(db_err("complete"))?
        .execute(params![
            c.i_event,
            c.status,
            c.message,
            crate::util::now_ms()
        ])
        .map_err(db_err("complete"))?;
    if added == 0 {
        return Ok(Completed::AlreadyRecorded);
    }
    log_attempt(
        conn,
        c.i_event,
        "CALLBACK",
        &format!(
            "{detail} (arrived while the event was {state}; applied once IN_PROGRESS is reported)"
        ),
    )?;
    Ok(Completed::Early)
}

/// A row in the attempts table at the event's current attempt number.
fn log_attempt(conn: &Connection, i_event: i64, outcome: &str, detail: &str) -> Result<(), Error> {
    conn.prepare_cached(
        "INSERT INTO attempts (i_event, attempt, at, outcome, detail)
         SELECT i_event, attempts, ?2, ?3, ?4 FROM events WHERE i_event = ?1",
    )
    .map_err(db_err("log attempt"))?
    .execute(params![i_event, crate::util::now_ms(), outcome, detail])
    .map_err(db_err("log attempt"))?;
    Ok(())
}

/// After a worker's update: applies or drops a completion that arrived early.
fn settle_early(conn: &Connection, up: &Update) -> Result<Early, Error> {
    let waiting: Option<(String, String)> = conn
        .prepare_cached("SELECT status, message FROM completions WHERE i_event = ?1")
        .map_err(db_err("read completion"))?
        .query_row(params![up.i_event], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()
        .map_err(db_err("read completion"))?;
    let Some((status, message)) = waiting else {
        return Ok(Early::None);
    };
    let reporting_in_progress =
        up.state == State::Report && up.status.as_deref() == Some("IN_PROGRESS");
    if reporting_in_progress {
        // Kept until the IN_PROGRESS report is made.
        return Ok(Early::None);
    }
    conn.prepare_cached("DELETE FROM completions WHERE i_event = ?1")
        .map_err(db_err("drop completion"))?
        .execute(params![up.i_event])
        .map_err(db_err("drop completion"))?;
    if up.state == State::InProgress {
        conn.prepare_cached(
            "UPDATE events SET state = ?4, status = ?2, message = ?3, next_at = 0,
                 finished_at = NULL WHERE seq = ?1",
        )
        .map_err(db_err("complete"))?
        .execute(params![up.seq, status, message, State::Report])
        .map_err(db_err("complete"))?;
        log_attempt(
            conn,
            up.i_event,
            "CALLBACK",
            &format!("{status}: {message} (applied after IN_PROGRESS)"),
        )?;
        return Ok(Early::Applied { status });
    }
    let outcome = up.status.as_deref().unwrap_or(up.state.as_str());
    log_attempt(
        conn,
        up.i_event,
        "CALLBACK",
        &format!(
            "{status} ignored: the delivery ended {outcome}, not accepted with 202, and its result stands"
        ),
    )?;
    Ok(Early::Ignored { status })
}

fn store_err_again(e: &Error) -> Error {
    match e {
        Error::Store { op, detail } => Error::Store {
            op,
            detail: detail.clone(),
        },
        other => Error::Other(other.to_string()),
    }
}

/// Stores `ev` as `queued`, or, with a reason, as `skipped`: finished now (so the janitor
/// purges it like a done one), the reason as its message and as a line in its attempts.
fn insert_one(
    conn: &Connection,
    ev: &NewEvent,
    skipped: Option<&str>,
    lanes: usize,
) -> Result<Inserted, Error> {
    let mut stmt = conn
        .prepare_cached(
            "INSERT INTO events (i_event, event_type, body, entity, lane, state, received_at,
                                 message, finished_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?7, ?6, ?8, ?9) ON CONFLICT(i_event) DO NOTHING",
        )
        .map_err(db_err("insert"))?;
    let lane = lane_of(&ev.entity, lanes);
    let (state, finished_at) = match skipped {
        Some(_) => (State::Skipped, Some(crate::util::now_ms())),
        None => (State::Queued, None),
    };
    let n = stmt
        .execute(params![
            ev.i_event,
            ev.event_type,
            ev.body,
            ev.entity,
            lane as i64,
            ev.received_at,
            state,
            skipped,
            finished_at
        ])
        .map_err(db_err("insert"))?;
    if n == 0 {
        return Ok(Inserted::Repeat);
    }
    let Some(reason) = skipped else {
        return Ok(Inserted::Stored { lane });
    };
    log_attempt(conn, ev.i_event, "SKIPPED", reason)?;
    Ok(Inserted::Skipped)
}

/// Makes due now the events waiting (retry, or a report owed) because of `upstream`.
fn resume(conn: &Connection, upstream: &str) -> Result<usize, Error> {
    let sql = format!(
        "UPDATE events SET next_at = 0 WHERE state IN {} AND upstream = ?1",
        State::sql_in(&[State::Retry, State::Report])
    );
    conn.prepare_cached(&sql)
        .map_err(db_err("resume"))?
        .execute(params![upstream])
        .map_err(db_err("resume"))
}

fn update_one(conn: &Connection, up: &Update) -> Result<Early, Error> {
    let finished = !up.state.is_open();
    let mut stmt = conn
        .prepare_cached(
            "UPDATE events SET state = ?2, attempts = ?3, next_at = ?4, status = ?5, message = ?6,
                 retry_reported = ?7, finished_at = CASE WHEN ?8 THEN ?9 ELSE NULL END,
                 upstream = ?10
             WHERE seq = ?1",
        )
        .map_err(db_err("update"))?;
    let now = crate::util::now_ms();
    stmt.execute(params![
        up.seq,
        up.state,
        up.attempts,
        up.next_at,
        up.status,
        up.message,
        up.retry_reported,
        finished,
        now,
        up.upstream.map(|u| u.name()),
    ])
    .map_err(db_err("update"))?;
    if let Some((outcome, detail)) = &up.attempt_log {
        conn.prepare_cached("INSERT INTO attempts (i_event, attempt, at, outcome, detail) VALUES (?1, ?2, ?3, ?4, ?5)")
            .map_err(db_err("log attempt"))?
            .execute(params![up.i_event, up.attempts, now, outcome, detail])
            .map_err(db_err("log attempt"))?;
    }
    settle_early(conn, up)
}
