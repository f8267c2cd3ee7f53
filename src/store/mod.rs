//! The event store: one SQLite file (`espfd.db`) in the state directory.
//!
//! Three rooms: `schema.rs` (the tables, the [`State`] column, the checks made at open),
//! the group-commit writer (`writer.rs`) and the reader's queries (`reader.rs`); this file
//! holds the types they share and [`Store`], the write side the service hands around.
//!
//! The service's writes go through one writer thread that commits in groups: it takes every
//! write that arrived while the previous commit was running, applies them in one transaction
//! and one fsync (WAL, `synchronous=FULL`), and only then answers each caller. So a 200 to
//! ESPF is never sent before its event is on disk, yet the disk's fsync rate does not cap
//! ingest. The writes that do not are [`Reader::replay`] (`espfd events replay`) and
//! [`Reader::pause`] / [`Reader::resume`] (`espfd pause`, `espfd resume`; `control.rs`) and
//! the reconcile walk's inserts ([`Reader::queue_reconcile`], `walk.rs`), which
//! write on their own connection because they must work while the service is stopped;
//! SQLite's write lock orders them with the writer when the service runs.
//!
//! Reads (workers, `/readyz`, the `events` command) use their own connections ([`Reader`]);
//! WAL lets them run alongside the writer.
//!
//! Event states ([`State`]): `queued` (to process), `retry` (waiting for `next_at`), `report`
//! (the target is done, the status report to ESPF is still owed), and the final `done`,
//! `failed`, `in_progress` (the target accepted and will call back), `skipped` (not for this
//! connector: stored so at intake when `ESPFD_EVENT_TYPES` leaves it out, or by a worker).
//!
//! A target's completion callback can arrive before the event is `in_progress`: while the
//! delivery that the target answers 202 is still in flight, or while the IN_PROGRESS report
//! is owed or under way. It is then kept in the `completions` table, and the writer applies
//! it in the same transaction that records the event as `in_progress` (so the final status
//! is always reported after IN_PROGRESS), or drops it, with a line in the event's attempts,
//! when the delivery ended otherwise. Which deliveries are in flight is known in memory
//! ([`Store::delivering`]); after a restart none is.

mod control;
mod reader;
mod schema;
mod walk;
mod writer;

pub use control::{Paused, Resumed};
pub use reader::{Reader, Replay};
pub use schema::State;
pub use walk::{Queued, Source, Walk};
pub use writer::WriterThread;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crossbeam_channel::{bounded, Sender, TrySendError};
use rusqlite::Connection;

use schema::{migrate, quick_check, record_lanes, relane, schema};
use writer::Op;

use crate::error::Error;
use crate::event::Event;
use crate::upstream::Upstream;
use crate::util::fnv1a;

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
    /// Newly stored as `skipped` ([`Store::insert_skipped`]); no worker will see it.
    Skipped,
    /// This `i_event` was already stored; nothing changed.
    Repeat,
}

/// A state change decided by a worker.
#[derive(Debug, Clone)]
pub struct Update {
    pub seq: i64,
    pub i_event: i64,
    /// The new state.
    pub state: State,
    /// The attempt counter after this attempt.
    pub attempts: i64,
    /// When a `retry` or `report` is due (unix ms).
    pub next_at: i64,
    pub status: Option<String>,
    pub message: Option<String>,
    pub retry_reported: bool,
    /// A row for the attempts table: (outcome, detail).
    pub attempt_log: Option<(String, String)>,
    /// The upstream whose failure the event waits out (retry, report): when it comes back,
    /// the event is made due at once ([`Store::resume`]).
    pub upstream: Option<Upstream>,
}

impl Update {
    /// `event` moves to `state`, recording `status` and `message` on it and as a line in its
    /// attempts (outcome `status`); its attempt counter and whether RETRY was reported stay
    /// as they are, and nothing is due (`next_at` 0). Change those with struct update
    /// syntax: `Update { attempts, ..Update::new(..) }`.
    pub fn new(event: &StoredEvent, state: State, status: &str, message: &str) -> Update {
        Update {
            seq: event.seq,
            i_event: event.i_event,
            state,
            attempts: event.attempts,
            next_at: 0,
            status: Some(status.to_string()),
            message: Some(message.to_string()),
            retry_reported: event.retry_reported,
            attempt_log: Some((status.to_string(), message.to_string())),
            upstream: None,
        }
    }
}

/// A stored event as a worker or the CLI sees it: its row, and its body parsed.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    pub seq: i64,
    pub i_event: i64,
    pub event_type: String,
    /// The JSON as ESPF sent it.
    pub body: String,
    /// The body parsed. `Err` (the reason) only for a body that no longer passes the
    /// ingress's checks, say after an upgrade made them stricter: the worker fails it.
    pub event: Result<Event, String>,
    /// The ordering key, e.g. `account:1000889`.
    pub entity: String,
    pub lane: i64,
    pub state: State,
    pub received_at: i64,
    pub attempts: i64,
    pub next_at: i64,
    pub status: Option<String>,
    pub message: Option<String>,
    pub retry_reported: bool,
    pub finished_at: Option<i64>,
    pub replayed_at: Option<i64>,
}

impl StoredEvent {
    /// When the current run of attempts began: arrival, or the last replay. Retries stop
    /// `ESPFD_RETRY_MAX_AGE` after it.
    pub fn attempts_since(&self) -> i64 {
        self.replayed_at.unwrap_or(0).max(self.received_at)
    }
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
    NotInProgress(State),
    /// A completion for this event was already recorded.
    AlreadyRecorded,
    /// The event's completion deadline (`ESPFD_ASYNC_TIMEOUT`) has passed: it is being, or
    /// has been, reported FAILED.
    TooLate,
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

/// The file in the state directory whose lock says a service uses the store.
pub const LOCK_FILE: &str = "espfd.lock";

/// Takes the state directory for this process: an exclusive `flock` on [`LOCK_FILE`], held
/// by the writer thread until it stops (the kernel drops it if the process dies), so that two
/// services — two instances given one `ESPFD_STATE_DIR` by mistake — never work one store
/// and deliver each other's events. The holder's pid is written in the file for the message.
fn lock_dir(dir: &Path) -> Result<std::fs::File, Error> {
    use std::io::{Read, Seek, Write};
    use std::os::unix::io::AsRawFd;
    let path = dir.join(LOCK_FILE);
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| {
            Error::io(
                format!("ESPFD_STATE_DIR: cannot open {}", path.display()),
                e,
            )
        })?;
    // SAFETY: flock on a descriptor this function owns.
    let try_lock = || unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0;
    // A lock released a moment ago can still be held for an instant by a child process
    // forked before its descriptor was closed (close-on-exec takes effect at the exec): try
    // again for a second before calling the directory taken.
    let mut locked = try_lock();
    for _ in 0..10 {
        if locked {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        locked = try_lock();
    }
    if !locked {
        let mut holder = String::new();
        let _ = file.read_to_string(&mut holder);
        let holder = holder.trim();
        let by = if holder.is_empty() {
            "another espfd".to_string()
        } else {
            format!("another espfd (pid {})", crate::redact::printable(holder))
        };
        return Err(Error::Config(crate::error::ConfigError {
            var: "ESPFD_STATE_DIR".into(),
            reason: format!(
                "{} is in use by {by}; every instance needs a state directory of its own",
                dir.display()
            ),
        }));
    }
    let _ = file.set_len(0);
    let _ = file.rewind();
    let _ = writeln!(file, "{}", std::process::id());
    Ok(file)
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
        let lock = lock_dir(dir)?;
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
        conn.execute_batch(&schema())
            .map_err(db_err("create schema"))?;
        migrate(&conn)?;
        relane(&conn, lanes)?;
        record_lanes(&conn, lanes)?;

        let in_flight = InFlight::default();
        let (ops, writer) = WriterThread::start(conn, lock, QUEUE_DEPTH, lanes, in_flight.clone())?;
        Ok((
            Store {
                path,
                lanes,
                ops,
                in_flight,
            },
            writer,
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
        self.insert_as(ev, None)
    }

    /// Stores an event durably as `skipped` (finished, never seen by a worker), with
    /// `reason` as its message and in its attempts, or finds it is a repeat; as
    /// [`Store::insert`] otherwise. Storing it keeps repeats recognised and the event
    /// visible to `espfd events`.
    pub fn insert_skipped(&self, ev: NewEvent, reason: String) -> Result<Inserted, Error> {
        self.insert_as(ev, Some(reason))
    }

    fn insert_as(&self, ev: NewEvent, skipped: Option<String>) -> Result<Inserted, Error> {
        let (tx, rx) = bounded(1);
        match self.ops.try_send(Op::Insert(ev, skipped, tx)) {
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

    /// Deletes events that are finished (done, failed or skipped) since before `before`
    /// (unix ms), with their attempts, at most [`PURGE_BATCH`] per call; returns how many went.
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

    /// Records every update of `ups` in as few transactions as the writer makes of them
    /// (one, usually): the older events a coalesced delivery stands for.
    pub fn update_all(&self, ups: Vec<Update>) -> Result<(), Error> {
        let mut replies = Vec::with_capacity(ups.len());
        for up in ups {
            let (tx, rx) = bounded(1);
            self.ops
                .send(Op::Update(up, tx))
                .map_err(|_| Error::Closed)?;
            replies.push(rx);
        }
        for rx in replies {
            rx.recv().unwrap_or(Err(Error::Closed))?;
        }
        Ok(())
    }

    /// Makes due at once every event waiting because `upstream` failed; returns how many.
    pub fn resume(&self, upstream: Upstream) -> Result<usize, Error> {
        let (tx, rx) = bounded(1);
        self.ops
            .send(Op::Resume(upstream.name(), tx))
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
