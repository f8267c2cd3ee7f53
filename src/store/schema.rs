//! The store file's layout: its tables and indexes, and the checks made when it is opened.

use rusqlite::{params, Connection};

use super::{db_err, lane_of};
use crate::error::Error;
use std::path::Path;

/// States that still need a worker.
pub(super) const OPEN_STATES: &str = "('queued','retry','report')";

pub(super) const SCHEMA: &str = "
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
