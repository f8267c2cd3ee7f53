//! The store file's layout: its tables and indexes, the [`State`] column's one mapping, and
//! the checks made when the file is opened.

use std::fmt;
use std::path::Path;

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};
use rusqlite::{params, Connection};

use super::{db_err, lane_of};
use crate::error::Error;

/// Where an event stands; the `state` column holds [`State::as_str`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// To process.
    Queued,
    /// Waiting for `next_at` to try again.
    Retry,
    /// The target is done; the status report to ESPF is still owed (due at `next_at`).
    Report,
    /// Final: provisioned and reported.
    Done,
    /// Final: failed for good (reported if the event names an account).
    Failed,
    /// Final for the worker: the target accepted (202) and calls back; FAILED if it does not
    /// by `next_at`.
    InProgress,
    /// Final: not for this connector (`ESPFD_EVENT_TYPES`, or a template that sent nothing);
    /// never looked up, sent or reported.
    Skipped,
}

impl State {
    /// Every state.
    pub const ALL: [State; 7] = [
        State::Queued,
        State::Retry,
        State::Report,
        State::Done,
        State::Failed,
        State::InProgress,
        State::Skipped,
    ];
    /// The states that still need a worker.
    pub const OPEN: [State; 3] = [State::Queued, State::Retry, State::Report];
    /// The states the janitor deletes once `ESPFD_RETENTION` has passed.
    pub const FINISHED: [State; 3] = [State::Done, State::Failed, State::Skipped];

    /// The name in the `state` column, the `events` command and the logs.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Queued => "queued",
            State::Retry => "retry",
            State::Report => "report",
            State::Done => "done",
            State::Failed => "failed",
            State::InProgress => "in_progress",
            State::Skipped => "skipped",
        }
    }

    /// The state of that name, if any.
    pub fn parse(name: &str) -> Option<State> {
        State::ALL.into_iter().find(|s| s.as_str() == name)
    }

    /// Whether the event still needs a worker (one of [`State::OPEN`]).
    pub fn is_open(self) -> bool {
        State::OPEN.contains(&self)
    }

    /// `'queued'`: the state as an SQL literal.
    ///
    /// The partial indexes' conditions and the queries meant to use them are written from
    /// these literals rather than bound as parameters: SQLite uses a partial index only for
    /// a query whose WHERE clause repeats the index's condition, literally.
    pub(super) fn sql(self) -> String {
        format!("'{}'", self.as_str())
    }

    /// `('queued','retry','report')`: states as an SQL list, for `state IN ...`.
    pub(super) fn sql_in(states: &[State]) -> String {
        let items: Vec<String> = states.iter().map(|s| s.sql()).collect();
        format!("({})", items.join(","))
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl ToSql for State {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.as_str()))
    }
}

impl FromSql for State {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<State> {
        let name = value.as_str()?;
        State::parse(name)
            .ok_or_else(|| FromSqlError::Other(format!("unknown state '{name}'").into()))
    }
}

/// Brings a store file written by an earlier release up to [`schema`]'s columns.
pub(super) fn migrate(conn: &Connection) -> Result<(), Error> {
    let has_upstream: bool = conn
        .prepare("SELECT 1 FROM pragma_table_info('events') WHERE name = 'upstream'")
        .and_then(|mut s| s.exists([]))
        .map_err(db_err("migrate"))?;
    if !has_upstream {
        conn.execute_batch("ALTER TABLE events ADD COLUMN upstream TEXT")
            .map_err(db_err("migrate"))?;
    }
    Ok(())
}

/// The tables and indexes, created if missing.
pub(super) fn schema() -> String {
    let open = State::sql_in(&State::OPEN);
    let in_progress = State::InProgress.sql();
    let finished = State::sql_in(&State::FINISHED);
    format!(
        "
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
    replayed_at  INTEGER,               -- unix ms of the last `espfd events replay`
    upstream     TEXT                   -- portabilling, target, espf: whose failure it waits out
);
-- events_open_lane (lane, seq) became events_open_lane2 when reconcile events came: a lane
-- takes ESPF's events (i_event > 0) before reconcile work, in arrival order within each, and
-- the index gives that order without sorting the lane's backlog.
DROP INDEX IF EXISTS events_open_lane;
CREATE INDEX IF NOT EXISTS events_open_lane2 ON events(lane, i_event < 0, seq)
    WHERE state IN {open};
CREATE INDEX IF NOT EXISTS events_open_entity ON events(entity, seq)
    WHERE state IN {open};
CREATE INDEX IF NOT EXISTS events_in_progress ON events(lane, next_at)
    WHERE state = {in_progress};
CREATE INDEX IF NOT EXISTS events_by_state ON events(state, seq);
-- events_finished (done, failed) became events_finished2 when `skipped` was added: SQLite
-- uses a partial index only for a query that repeats its condition.
DROP INDEX IF EXISTS events_finished;
CREATE INDEX IF NOT EXISTS events_finished2 ON events(finished_at)
    WHERE state IN {finished};
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
-- Settings written by commands while the service may run (`espfd pause`): see control.rs.
CREATE TABLE IF NOT EXISTS control (
    key    TEXT PRIMARY KEY,
    value  TEXT NOT NULL
);
{walks}",
        walks = walk_schema()
    )
}

/// The walks of `espfd reconcile` and the index that finds an account's open reconcile
/// event; created by the service and, for a store an older espfd wrote, by the command.
pub(super) fn walk_schema() -> String {
    let unfinished = State::sql_in(&[
        State::Queued,
        State::Retry,
        State::Report,
        State::InProgress,
    ]);
    format!(
        "
CREATE TABLE IF NOT EXISTS walks (
    id           INTEGER PRIMARY KEY,
    started_at   INTEGER NOT NULL,      -- unix ms
    filter       TEXT NOT NULL,         -- e.g. --customer 6392, --all
    rate         REAL NOT NULL,         -- events per second the service processes; 0: no limit
    total        INTEGER NOT NULL,      -- accounts found
    queued       INTEGER NOT NULL DEFAULT 0,
    finished_at  INTEGER                -- unix ms when all were queued
);
CREATE INDEX IF NOT EXISTS events_reconcile_open ON events(entity)
    WHERE i_event < 0 AND state IN {unfinished};
"
    )
}

/// Records the lane count the service runs with, so that `espfd reconcile` puts its events
/// on the lanes the running workers read.
pub(super) fn record_lanes(conn: &Connection, lanes: usize) -> Result<(), Error> {
    conn.execute(
        "INSERT INTO control (key, value) VALUES ('lanes', ?1)
         ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        params![lanes.to_string()],
    )
    .map_err(db_err("record the lane count"))?;
    Ok(())
}

/// SQLite's quick check of the whole file (`PRAGMA quick_check`: every page and index entry
/// read, without the slower cross-checks of `integrity_check`), so that espfd never starts
/// on a damaged store and loses or repeats events without a word.
pub(super) fn quick_check(conn: &Connection, path: &Path) -> Result<(), Error> {
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

pub(super) fn relane(conn: &Connection, lanes: usize) -> Result<(), Error> {
    let mut stmt = conn
        .prepare(&format!(
            "SELECT seq, entity, lane FROM events WHERE state IN {}",
            State::sql_in(&State::OPEN)
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

#[cfg(test)]
mod tests {
    use super::State;

    #[test]
    fn every_state_reads_back_from_its_name() {
        for state in State::ALL {
            assert_eq!(State::parse(state.as_str()), Some(state));
            assert_eq!(format!("{state:<12}|"), format!("{:<12}|", state.as_str()));
        }
        assert_eq!(State::parse("Queued"), None);
        let open: Vec<State> = State::ALL.into_iter().filter(|s| s.is_open()).collect();
        assert_eq!(open, State::OPEN);
    }
}
