//! The event store: one SQLite file (`espfd.db`) in the state directory.
//!
//! Every write goes through one writer thread that commits in groups: it takes every write
//! that arrived while the previous commit was running, applies them in one transaction and
//! one fsync (WAL, `synchronous=FULL`), and only then answers each caller. So a 200 to ESPF is
//! never sent before its event is on disk, yet the disk's fsync rate does not cap ingest.
//!
//! Reads (workers, the `events` command) use their own connections; WAL lets them run
//! alongside the writer.
//!
//! Event states: `queued` (to process), `retry` (waiting for `next_at`), `report` (the target
//! is done, the status report to ESPF is still owed), and the final `done`, `failed`,
//! `in_progress` (the target accepted and will call back).
//!
//! A target's completion callback can arrive before the event is `in_progress`: while the
//! delivery that the target answers 202 is still in flight, or while the IN_PROGRESS report
//! is owed or under way. It is then kept in the `completions` table, and the writer applies
//! it in the same transaction that records the event as `in_progress` (so the final status
//! is always reported after IN_PROGRESS), or drops it, with a line in the event's attempts,
//! when the delivery ended otherwise. Which deliveries are in flight is known in memory
//! ([`Store::delivering`]); after a restart none is.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};
use rusqlite::{params, Connection, OptionalExtension};

use crate::error::Error;
use crate::util::fnv1a;

/// Most writes applied in one transaction.
const MAX_BATCH: usize = 2048;
/// Most events one purge deletes, so that one transaction never holds the writer long.
pub const PURGE_BATCH: usize = 5_000;
/// Depth of the write queue; beyond it inserts are refused (503) instead of waiting.
const QUEUE_DEPTH: usize = 8192;

/// The file in the state directory that `/readyz` rewrites to see the disk take a write.
pub const PROBE_FILE: &str = "readyz.probe";
/// Least free space on the state directory's filesystem for `/readyz` to say ready.
pub const MIN_FREE: u64 = 4 * 1024 * 1024;

/// Bytes available to this (unprivileged) user on the filesystem holding `dir`.
fn free_bytes(dir: &Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    // SAFETY: statvfs writes into the zeroed struct we own; the path is NUL-terminated.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(path.as_ptr(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
}

/// States that still need a worker.
const OPEN_STATES: &str = "('queued','retry','report')";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS events (
    seq          INTEGER PRIMARY KEY,   -- arrival order
    i_event      INTEGER NOT NULL UNIQUE,
    event_type   TEXT NOT NULL,
    body         TEXT NOT NULL,         -- the JSON as ESPF sent it
    entity       TEXT NOT NULL,         -- ordering key, e.g. account:1000889
    lane         INTEGER NOT NULL,
    state        TEXT NOT NULL,
    received_at  INTEGER NOT NULL,      -- unix ms
    attempts     INTEGER NOT NULL DEFAULT 0,
    next_at      INTEGER NOT NULL DEFAULT 0,
    status       TEXT,                  -- last status decided: OK, IN_PROGRESS, RETRY, FAILED
    message      TEXT,
    retry_reported INTEGER NOT NULL DEFAULT 0,
    finished_at  INTEGER,
    replayed_at  INTEGER                -- unix ms of the last `espfd events replay`
);
CREATE INDEX IF NOT EXISTS events_open_lane ON events(lane, seq)
    WHERE state IN ('queued','retry','report');
CREATE INDEX IF NOT EXISTS events_open_entity ON events(entity, seq)
    WHERE state IN ('queued','retry','report');
CREATE INDEX IF NOT EXISTS events_in_progress ON events(lane, next_at)
    WHERE state = 'in_progress';
CREATE INDEX IF NOT EXISTS events_by_state ON events(state, seq);
CREATE INDEX IF NOT EXISTS events_finished ON events(finished_at)
    WHERE state IN ('done','failed');
CREATE TABLE IF NOT EXISTS attempts (
    i_event  INTEGER NOT NULL,
    attempt  INTEGER NOT NULL,
    at       INTEGER NOT NULL,          -- unix ms
    outcome  TEXT NOT NULL,
    detail   TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS attempts_event ON attempts(i_event);
-- Completion callbacks that arrived before their event was in_progress.
CREATE TABLE IF NOT EXISTS completions (
    i_event  INTEGER PRIMARY KEY,
    status   TEXT NOT NULL,             -- OK or FAILED
    message  TEXT NOT NULL,
    at       INTEGER NOT NULL           -- unix ms
);
";

/// An event to store.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub i_event: i64,
    pub event_type: String,
    pub body: String,
    pub entity: String,
    pub received_at: i64,
}

/// What an insert did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inserted {
    /// Newly stored, on this lane.
    Stored { lane: usize },
    /// This `i_event` was already stored; nothing changed.
    Repeat,
}

/// A state change decided by a worker.
#[derive(Debug, Clone)]
pub struct Update {
    pub seq: i64,
    pub i_event: i64,
    /// New state: `queued`, `retry`, `report`, `done`, `failed` or `in_progress`.
    pub state: &'static str,
    /// The attempt counter after this attempt.
    pub attempts: i64,
    /// When a `retry` or `report` is due (unix ms).
    pub next_at: i64,
    pub status: Option<String>,
    pub message: Option<String>,
    pub retry_reported: bool,
    /// A row for the attempts table: (outcome, detail).
    pub attempt_log: Option<(String, String)>,
}

/// A stored event as a worker or the CLI sees it.
#[derive(Debug, Clone)]
pub struct Row {
    pub seq: i64,
    pub i_event: i64,
    pub event_type: String,
    pub body: String,
    pub entity: String,
    pub lane: i64,
    pub state: String,
    pub received_at: i64,
    pub attempts: i64,
    pub next_at: i64,
    pub status: Option<String>,
    pub message: Option<String>,
    pub retry_reported: bool,
    pub finished_at: Option<i64>,
    pub replayed_at: Option<i64>,
}

impl Row {
    /// When the current run of attempts began: arrival, or the last replay. Retries stop
    /// `ESPFD_RETRY_MAX_AGE` after it.
    pub fn attempts_since(&self) -> i64 {
        self.replayed_at.unwrap_or(0).max(self.received_at)
    }
}

enum Op {
    Insert(NewEvent, Sender<Result<Inserted, Error>>),
    Update(Update, Sender<Result<Early, Error>>),
    Complete(Completion, Sender<Result<Completed, Error>>),
    /// Delete finished events that finished before this time (unix ms).
    Purge(i64, Sender<Result<usize, Error>>),
    /// Apply what came before, then exit.
    Stop,
}

/// A target's asynchronous completion of an IN_PROGRESS event.
#[derive(Debug, Clone)]
pub struct Completion {
    pub i_event: i64,
    /// `OK` or `FAILED`.
    pub status: String,
    pub message: String,
}

/// What a [`Completion`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Completed {
    /// Recorded; the status report is owed on this lane.
    Applied { lane: usize },
    /// Recorded before the event was `in_progress` (its delivery in flight, or its
    /// IN_PROGRESS report owed); applied once it is.
    Early,
    /// No such event.
    NotFound,
    /// The event is not waiting for a completion; its state is given.
    NotInProgress(String),
    /// A completion for this event was already recorded.
    AlreadyRecorded,
}

/// What became of a completion that arrived early, once the worker recorded the delivery's
/// outcome (the answer of [`Store::update`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Early {
    /// No completion was waiting.
    None,
    /// The event became `in_progress`, and the waiting completion turned it into `report`
    /// of this final status at once.
    Applied { status: String },
    /// The delivery ended otherwise (a 2xx, a failure); its result stands and the waiting
    /// completion with this status was dropped.
    Ignored { status: String },
}

/// The events whose delivery a worker has in hand, shared by the workers and the writer.
#[derive(Clone, Default)]
struct InFlight(Arc<Mutex<HashSet<i64>>>);

impl InFlight {
    fn set(&self) -> MutexGuard<'_, HashSet<i64>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Marks an event's delivery as in flight until dropped (see [`Store::delivering`]).
pub struct Delivering {
    in_flight: InFlight,
    i_event: i64,
}

impl Drop for Delivering {
    fn drop(&mut self) {
        self.in_flight.set().remove(&self.i_event);
    }
}

/// The store's write side; clone freely (clones share the writer thread).
#[derive(Clone)]
pub struct Store {
    path: PathBuf,
    lanes: usize,
    ops: Sender<Op>,
    in_flight: InFlight,
}

/// The writer thread; [`WriterThread::join`] stops it.
pub struct WriterThread {
    ops: Sender<Op>,
    handle: JoinHandle<()>,
}

impl WriterThread {
    /// Applies every write queued so far, then stops the writer. Later writes through any
    /// [`Store`] clone fail with [`Error::Closed`].
    pub fn join(self) {
        let _ = self.ops.send(Op::Stop);
        let _ = self.handle.join();
    }
}

fn db_err(op: &'static str) -> impl Fn(rusqlite::Error) -> Error {
    move |e| Error::Store {
        op,
        detail: e.to_string(),
    }
}

/// Maps an ordering key to a lane.
pub fn lane_of(entity: &str, lanes: usize) -> usize {
    (fnv1a(entity.as_bytes()) % lanes as u64) as usize
}

impl Store {
    /// Opens (creating if needed) `<dir>/espfd.db` and starts the writer thread. Unfinished
    /// events are re-assigned to lanes if the lane count changed since the last run.
    pub fn open(dir: &Path, lanes: usize) -> Result<(Store, WriterThread), Error> {
        std::fs::create_dir_all(dir).map_err(|e| {
            Error::io(
                format!("ESPFD_STATE_DIR: cannot create {}", dir.display()),
                e,
            )
        })?;
        let path = dir.join("espfd.db");
        let conn = Connection::open(&path).map_err(|e| Error::Store {
            op: "open",
            detail: format!("{}: {e} (check ESPFD_STATE_DIR)", path.display()),
        })?;
        conn.busy_timeout(Duration::from_secs(10))
            .map_err(db_err("open"))?;
        quick_check(&conn, &path)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(db_err("enable WAL"))?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(db_err("set synchronous"))?;
        conn.execute_batch(SCHEMA)
            .map_err(db_err("create schema"))?;
        relane(&conn, lanes)?;

        let (tx, rx) = bounded(QUEUE_DEPTH);
        let in_flight = InFlight::default();
        let writer_in_flight = in_flight.clone();
        let handle = thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || writer_loop(conn, rx, lanes, &writer_in_flight))
            .map_err(|e| Error::io("cannot start the store writer thread", e))?;
        Ok((
            Store {
                path,
                lanes,
                ops: tx.clone(),
                in_flight,
            },
            WriterThread { ops: tx, handle },
        ))
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the state directory's disk takes a write now: [`PROBE_FILE`] beside the
    /// database is rewritten and fsync'd (a read-only or failing filesystem says no), and the
    /// filesystem must have at least [`MIN_FREE`] bytes free for espfd's user (on a full disk
    /// a rewrite reuses its own blocks and succeeds, while new events cannot be stored).
    pub fn check_disk(&self) -> Result<(), Error> {
        use std::io::Write;
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let probe = dir.join(PROBE_FILE);
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::File::create(&probe)?;
            f.write_all(&crate::util::now_ms().to_le_bytes().repeat(64))?;
            f.sync_all()
        };
        write().map_err(|e| Error::io(format!("cannot write {}", probe.display()), e))?;
        let free = free_bytes(dir).map_err(|e| {
            Error::io(
                format!("cannot read the free space of {}", dir.display()),
                e,
            )
        })?;
        if free < MIN_FREE {
            return Err(Error::Other(format!(
                "{} has {} KiB free, less than the {} KiB espfd keeps in reserve",
                dir.display(),
                free / 1024,
                MIN_FREE / 1024
            )));
        }
        Ok(())
    }

    /// Stores an event durably, or finds it is a repeat. Never waits for queue space: a full
    /// queue is [`Error::Overloaded`].
    pub fn insert(&self, ev: NewEvent) -> Result<Inserted, Error> {
        let (tx, rx) = bounded(1);
        match self.ops.try_send(Op::Insert(ev, tx)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err(Error::Overloaded),
            Err(TrySendError::Disconnected(_)) => return Err(Error::Closed),
        }
        rx.recv().unwrap_or(Err(Error::Closed))
    }

    /// Marks the delivery of `i_event` as in flight until the guard is dropped: a completion
    /// callback that arrives meanwhile is kept until the worker has recorded the outcome.
    /// Hold it from before the target is called until [`Store::update`] has returned.
    pub fn delivering(&self, i_event: i64) -> Delivering {
        self.in_flight.set().insert(i_event);
        Delivering {
            in_flight: self.in_flight.clone(),
            i_event,
        }
    }

    /// Records an asynchronous completion durably: an `in_progress` event moves to `report`
    /// and a worker reports the final status to ESPF; an event whose delivery is in flight
    /// or whose IN_PROGRESS report is owed keeps the completion for later ([`Completed::Early`]).
    pub fn complete(&self, c: Completion) -> Result<Completed, Error> {
        let (tx, rx) = bounded(1);
        self.ops
            .send(Op::Complete(c, tx))
            .map_err(|_| Error::Closed)?;
        rx.recv().unwrap_or(Err(Error::Closed))
    }

    /// Deletes events that are finished (done or failed) since before `before` (unix ms),
    /// with their attempts, at most [`PURGE_BATCH`] per call; returns how many went.
    pub fn purge(&self, before: i64) -> Result<usize, Error> {
        let (tx, rx) = bounded(1);
        self.ops
            .send(Op::Purge(before, tx))
            .map_err(|_| Error::Closed)?;
        rx.recv().unwrap_or(Err(Error::Closed))
    }

    /// Applies a worker's state change durably (waits for queue space), and says what became
    /// of a completion that arrived early.
    pub fn update(&self, up: Update) -> Result<Early, Error> {
        let (tx, rx) = bounded(1);
        self.ops
            .send(Op::Update(up, tx))
            .map_err(|_| Error::Closed)?;
        rx.recv().unwrap_or(Err(Error::Closed))
    }

    /// The lane count this store was opened with.
    pub fn lanes(&self) -> usize {
        self.lanes
    }

    /// A new read connection.
    pub fn reader(&self) -> Result<Reader, Error> {
        Reader::open(&self.path)
    }
}

/// SQLite's quick check of the whole file (`PRAGMA quick_check`: every page and index entry
/// read, without the slower cross-checks of `integrity_check`), so that espfd never starts
/// on a damaged store and loses or repeats events without a word.
fn quick_check(conn: &Connection, path: &Path) -> Result<(), Error> {
    let corrupt = |detail: String| Error::Corrupt {
        path: path.display().to_string(),
        detail,
    };
    let found: Vec<String> = conn
        .prepare("PRAGMA quick_check(5)")
        .and_then(|mut stmt| {
            stmt.query_map([], |r| r.get::<_, String>(0))?
                .collect::<rusqlite::Result<Vec<String>>>()
        })
        .map_err(|e| match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::NotADatabase)
            | Some(rusqlite::ErrorCode::DatabaseCorrupt) => corrupt(e.to_string()),
            _ => Error::Store {
                op: "check",
                detail: format!("{}: {e}", path.display()),
            },
        })?;
    if found.len() == 1 && found[0] == "ok" {
        return Ok(());
    }
    Err(corrupt(format!("SQLite quick_check: {}", found.join("; "))))
}

fn relane(conn: &Connection, lanes: usize) -> Result<(), Error> {
    let mut stmt = conn
        .prepare(&format!(
            "SELECT seq, entity, lane FROM events WHERE state IN {OPEN_STATES}"
        ))
        .map_err(db_err("read open events"))?;
    let moves: Vec<(i64, i64)> = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })
        .map_err(db_err("read open events"))?
        .filter_map(Result::ok)
        .filter_map(|(seq, entity, lane)| {
            let want = lane_of(&entity, lanes) as i64;
            (want != lane).then_some((seq, want))
        })
        .collect();
    if !moves.is_empty() {
        let tx = conn.unchecked_transaction().map_err(db_err("re-lane"))?;
        for (seq, lane) in &moves {
            tx.execute(
                "UPDATE events SET lane = ?1 WHERE seq = ?2",
                params![lane, seq],
            )
            .map_err(db_err("re-lane"))?;
        }
        tx.commit().map_err(db_err("re-lane"))?;
        log::info!(
            "re-assigned {} unfinished events to {lanes} lanes",
            moves.len()
        );
    }
    Ok(())
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
                    Op::Insert(ev, _) => {
                        results.push(insert_one(conn, ev, lanes).map(Done::Inserted))
                    }
                    Op::Update(up, _) => results.push(Ok(Done::Updated(update_one(conn, up)?))),
                    Op::Complete(c, _) => {
                        results.push(complete_one(conn, c, in_flight).map(Done::Completed))
                    }
                    Op::Purge(before, _) => {
                        results.push(purge_some(conn, *before).map(Done::Purged))
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
            Op::Insert(_, reply) => {
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
            Op::Purge(_, reply) => {
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
    let ids: Vec<i64> = conn
        .prepare_cached(
            "SELECT i_event FROM events WHERE state IN ('done','failed') AND finished_at < ?1 LIMIT ?2",
        )
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
    let current: Option<(String, i64, Option<String>)> = conn
        .prepare_cached("SELECT state, lane, status FROM events WHERE i_event = ?1")
        .map_err(db_err("complete"))?
        .query_row(params![c.i_event], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .optional()
        .map_err(db_err("complete"))?;
    let Some((state, lane, status)) = current else {
        return Ok(Completed::NotFound);
    };
    let detail = format!("{}: {}", c.status, c.message);
    let waiting = match state.as_str() {
        "in_progress" => {
            conn.prepare_cached(
                "UPDATE events SET state = 'report', status = ?2, message = ?3, next_at = 0,
                     finished_at = NULL WHERE i_event = ?1",
            )
            .map_err(db_err("complete"))?
            .execute(params![c.i_event, c.status, c.message])
            .map_err(db_err("complete"))?;
            log_attempt(conn, c.i_event, "CALLBACK", &detail)?;
            return Ok(Completed::Applied {
                lane: lane as usize,
            });
        }
        // The IN_PROGRESS report is owed (or being made right now).
        "report" => status.as_deref() == Some("IN_PROGRESS"),
        // The target calls back before its 202 has reached the worker.
        "queued" | "retry" => in_flight.set().contains(&c.i_event),
        _ => false,
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
    let reporting_in_progress = up.state == "report" && up.status.as_deref() == Some("IN_PROGRESS");
    if reporting_in_progress {
        // Kept until the IN_PROGRESS report is made.
        return Ok(Early::None);
    }
    conn.prepare_cached("DELETE FROM completions WHERE i_event = ?1")
        .map_err(db_err("drop completion"))?
        .execute(params![up.i_event])
        .map_err(db_err("drop completion"))?;
    if up.state == "in_progress" {
        conn.prepare_cached(
            "UPDATE events SET state = 'report', status = ?2, message = ?3, next_at = 0,
                 finished_at = NULL WHERE seq = ?1",
        )
        .map_err(db_err("complete"))?
        .execute(params![up.seq, status, message])
        .map_err(db_err("complete"))?;
        log_attempt(
            conn,
            up.i_event,
            "CALLBACK",
            &format!("{status}: {message} (applied after IN_PROGRESS)"),
        )?;
        return Ok(Early::Applied { status });
    }
    let outcome = up.status.as_deref().unwrap_or(up.state);
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

fn insert_one(conn: &Connection, ev: &NewEvent, lanes: usize) -> Result<Inserted, Error> {
    let mut stmt = conn
        .prepare_cached(
            "INSERT INTO events (i_event, event_type, body, entity, lane, state, received_at)
             VALUES (?1, ?2, ?3, ?4, ?5, 'queued', ?6) ON CONFLICT(i_event) DO NOTHING",
        )
        .map_err(db_err("insert"))?;
    let lane = lane_of(&ev.entity, lanes);
    let n = stmt
        .execute(params![
            ev.i_event,
            ev.event_type,
            ev.body,
            ev.entity,
            lane as i64,
            ev.received_at
        ])
        .map_err(db_err("insert"))?;
    Ok(if n == 1 {
        Inserted::Stored { lane }
    } else {
        Inserted::Repeat
    })
}

fn update_one(conn: &Connection, up: &Update) -> Result<Early, Error> {
    let finished = matches!(up.state, "done" | "failed" | "in_progress");
    let mut stmt = conn
        .prepare_cached(
            "UPDATE events SET state = ?2, attempts = ?3, next_at = ?4, status = ?5, message = ?6,
                 retry_reported = ?7, finished_at = CASE WHEN ?8 THEN ?9 ELSE NULL END
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
        now
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

/// What `espfd events replay` puts back in line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Replay {
    /// One event (any finished state).
    One(i64),
    /// Every failed event, optionally only those of one account.
    Failed { i_account: Option<i64> },
}

/// A read connection (also used by the `events` command for its few writes).
pub struct Reader {
    conn: Connection,
}

const ROW_COLUMNS: &str =
    "seq, i_event, event_type, body, entity, lane, state, received_at, attempts,
     next_at, status, message, retry_reported, finished_at, replayed_at";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Row> {
    Ok(Row {
        seq: r.get(0)?,
        i_event: r.get(1)?,
        event_type: r.get(2)?,
        body: r.get(3)?,
        entity: r.get(4)?,
        lane: r.get(5)?,
        state: r.get(6)?,
        received_at: r.get(7)?,
        attempts: r.get(8)?,
        next_at: r.get(9)?,
        status: r.get(10)?,
        message: r.get(11)?,
        retry_reported: r.get(12)?,
        finished_at: r.get(13)?,
        replayed_at: r.get(14)?,
    })
}

impl Reader {
    /// Opens a read connection to an existing store file.
    pub fn open(path: &Path) -> Result<Reader, Error> {
        let conn = Connection::open_with_flags(
            path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| Error::Store {
            op: "open for reading",
            detail: format!("{}: {e}", path.display()),
        })?;
        conn.busy_timeout(Duration::from_secs(10))
            .map_err(db_err("open for reading"))?;
        // A small page cache per reader keeps the resident set small.
        conn.pragma_update(None, "cache_size", -512)
            .map_err(db_err("open for reading"))?;
        Ok(Reader { conn })
    }

    /// Events of `lane` that are due at `now`, in arrival order, skipping any whose entity
    /// has an earlier unfinished event (order per entity holds).
    pub fn due(&self, lane: usize, now: i64, limit: usize) -> Result<Vec<Row>, Error> {
        let sql = format!(
            "SELECT {ROW_COLUMNS} FROM events e
             WHERE lane = ?1 AND state IN {OPEN_STATES} AND next_at <= ?2
               AND NOT EXISTS (SELECT 1 FROM events p WHERE p.entity = e.entity
                               AND p.state IN {OPEN_STATES} AND p.seq < e.seq)
             ORDER BY seq LIMIT ?3"
        );
        let mut stmt = self
            .conn
            .prepare_cached(&sql)
            .map_err(db_err("read due events"))?;
        let rows = stmt
            .query_map(params![lane as i64, now, limit as i64], row)
            .map_err(db_err("read due events"))?
            .collect::<rusqlite::Result<Vec<Row>>>()
            .map_err(db_err("read due events"))?;
        Ok(rows)
    }

    /// IN_PROGRESS events of `lane` whose completion callback is overdue at `now`.
    pub fn overdue(&self, lane: usize, now: i64, limit: usize) -> Result<Vec<Row>, Error> {
        let sql = format!(
            "SELECT {ROW_COLUMNS} FROM events
             WHERE lane = ?1 AND state = 'in_progress' AND next_at <= ?2 ORDER BY next_at LIMIT ?3"
        );
        let mut stmt = self
            .conn
            .prepare_cached(&sql)
            .map_err(db_err("read overdue events"))?;
        let rows = stmt
            .query_map(params![lane as i64, now, limit as i64], row)
            .map_err(db_err("read overdue events"))?
            .collect::<rusqlite::Result<Vec<Row>>>()
            .map_err(db_err("read overdue events"))?;
        Ok(rows)
    }

    /// When `lane` next has something to do: the earliest `next_at` among the events that
    /// are first in line for their entity (a later event of a waiting entity is not due
    /// before its predecessor), and among IN_PROGRESS deadlines.
    pub fn next_due(&self, lane: usize) -> Result<Option<i64>, Error> {
        let sql = format!(
            "SELECT MIN(t) FROM (
               SELECT MIN(next_at) AS t FROM events e WHERE lane = ?1 AND state IN {OPEN_STATES}
                 AND NOT EXISTS (SELECT 1 FROM events p WHERE p.entity = e.entity
                                 AND p.state IN {OPEN_STATES} AND p.seq < e.seq)
               UNION ALL
               SELECT MIN(next_at) FROM events WHERE lane = ?1 AND state = 'in_progress')"
        );
        self.conn
            .prepare_cached(&sql)
            .map_err(db_err("read next due"))?
            .query_row(params![lane as i64], |r| r.get(0))
            .map_err(db_err("read next due"))
    }

    /// One event by `i_event`.
    pub fn get(&self, i_event: i64) -> Result<Option<Row>, Error> {
        let sql = format!("SELECT {ROW_COLUMNS} FROM events WHERE i_event = ?1");
        self.conn
            .prepare_cached(&sql)
            .map_err(db_err("read event"))?
            .query_row(params![i_event], row)
            .optional()
            .map_err(db_err("read event"))
    }

    /// Events, newest first, optionally only those in `state` and only those of account
    /// `i_account`.
    pub fn list(
        &self,
        state: Option<&str>,
        i_account: Option<i64>,
        limit: usize,
    ) -> Result<Vec<Row>, Error> {
        let sql = format!(
            "SELECT {ROW_COLUMNS} FROM events WHERE (?1 IS NULL OR state = ?1) AND (?2 IS NULL OR entity = ?2)
             ORDER BY seq DESC LIMIT ?3"
        );
        let entity = i_account.map(|a| format!("account:{a}"));
        let mut stmt = self
            .conn
            .prepare_cached(&sql)
            .map_err(db_err("list events"))?;
        let rows = stmt
            .query_map(params![state, entity, limit as i64], row)
            .map_err(db_err("list events"))?
            .collect::<rusqlite::Result<Vec<Row>>>()
            .map_err(db_err("list events"))?;
        Ok(rows)
    }

    /// Puts finished events back in line: each selected event that is not still open is
    /// queued again with a fresh retry window, keeping its place in arrival order. Works
    /// whether the service runs or not (its workers notice within a second). Returns the
    /// `i_event`s queued.
    pub fn replay(&self, which: Replay) -> Result<Vec<i64>, Error> {
        let now = crate::util::now_ms();
        let tx = self
            .conn
            .unchecked_transaction()
            .map_err(db_err("replay"))?;
        let ids: Vec<i64> = {
            let (sql, param): (&str, Option<String>) = match &which {
                Replay::One(i) => ("SELECT i_event FROM events WHERE i_event = ?1 AND state IN ('done','failed','in_progress')", Some(i.to_string())),
                Replay::Failed { i_account } => (
                    "SELECT i_event FROM events WHERE state = 'failed' AND (?1 IS NULL OR entity = ?1) ORDER BY seq",
                    i_account.map(|a| format!("account:{a}")),
                ),
            };
            let mut stmt = tx.prepare(sql).map_err(db_err("replay"))?;
            let ids = stmt
                .query_map(params![param], |r| r.get(0))
                .map_err(db_err("replay"))?
                .collect::<rusqlite::Result<Vec<i64>>>()
                .map_err(db_err("replay"))?;
            ids
        };
        for id in &ids {
            tx.execute(
                "UPDATE events SET state = 'queued', next_at = 0, retry_reported = 0, replayed_at = ?2,
                     finished_at = NULL WHERE i_event = ?1",
                params![id, now],
            )
            .map_err(db_err("replay"))?;
            tx.execute("DELETE FROM completions WHERE i_event = ?1", params![id])
                .map_err(db_err("replay"))?;
            tx.execute(
                "INSERT INTO attempts (i_event, attempt, at, outcome, detail)
                 SELECT i_event, attempts, ?2, 'REPLAY', 'queued again by espfd events replay' FROM events WHERE i_event = ?1",
                params![id, now],
            )
            .map_err(db_err("replay"))?;
        }
        tx.commit().map_err(db_err("replay"))?;
        Ok(ids)
    }

    /// The attempts logged for an event: (attempt, at, outcome, detail).
    pub fn attempts(&self, i_event: i64) -> Result<Vec<(i64, i64, String, String)>, Error> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT attempt, at, outcome, detail FROM attempts WHERE i_event = ?1 ORDER BY rowid")
            .map_err(db_err("read attempts"))?;
        let rows = stmt
            .query_map(params![i_event], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })
            .map_err(db_err("read attempts"))?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(db_err("read attempts"))?;
        Ok(rows)
    }

    /// How many events still need a worker.
    pub fn open_count(&self) -> Result<i64, Error> {
        self.conn
            .query_row(
                &format!("SELECT COUNT(*) FROM events WHERE state IN {OPEN_STATES}"),
                [],
                |r| r.get(0),
            )
            .map_err(db_err("count open events"))
    }

    /// How many events are stored in all.
    pub fn total_count(&self) -> Result<i64, Error> {
        self.conn
            .query_row("SELECT COUNT(*) FROM events", [], |r| r.get(0))
            .map_err(db_err("count events"))
    }

    /// Arrival time (unix ms) of the oldest event that still needs a worker, if any.
    pub fn oldest_open_received_at(&self) -> Result<Option<i64>, Error> {
        self.conn
            .query_row(
                &format!("SELECT MIN(received_at) FROM events WHERE state IN {OPEN_STATES}"),
                [],
                |r| r.get(0),
            )
            .map_err(db_err("read oldest open event"))
    }

    /// Whether the store can take a write right now: takes the database's write lock and
    /// gives it back at once (`BEGIN IMMEDIATE; ROLLBACK`), writing nothing. Waits at most
    /// `wait` for a write in progress.
    pub fn check_writable(&self, wait: Duration) -> Result<(), Error> {
        self.conn
            .busy_timeout(wait)
            .map_err(db_err("take the write lock"))?;
        let result = self
            .conn
            .execute_batch("BEGIN IMMEDIATE; ROLLBACK;")
            .map_err(db_err("take the write lock"));
        let _ = self.conn.busy_timeout(Duration::from_secs(10));
        result
    }
}
