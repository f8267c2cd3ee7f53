//! The reader's queries: what the workers, `/readyz` and the `events` command read.
//!
//! Each [`Reader`] is its own SQLite connection; WAL lets readers run alongside the writer.
//! One exception to "every write goes through the writer thread": [`Reader::replay`] writes
//! directly, because `espfd events replay` must work while the service is stopped (when it
//! runs, SQLite's write lock orders the replay with the writer's commits).

use std::path::Path;
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension};

use super::{db_err, Source, State, StoredEvent};
use crate::error::Error;
use crate::event::Event;

/// What `espfd events replay` puts back in line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Replay {
    /// One event (any finished state). A skipped one is then processed like any other:
    /// `ESPFD_EVENT_TYPES` is applied at intake only, and naming the event is the operator's
    /// decision to provision it.
    One(i64),
    /// Every failed event, optionally only those of one account (never skipped ones).
    Failed { i_account: Option<i64> },
}

/// A read connection (also used by the `events` command for its few writes).
pub struct Reader {
    pub(super) conn: Connection,
}

const ROW_COLUMNS: &str =
    "seq, i_event, event_type, body, entity, lane, state, received_at, attempts,
     next_at, status, message, retry_reported, finished_at, replayed_at";

/// A row of [`ROW_COLUMNS`], with its body parsed.
fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<StoredEvent> {
    let body: String = r.get(3)?;
    Ok(StoredEvent {
        seq: r.get(0)?,
        i_event: r.get(1)?,
        event_type: r.get(2)?,
        event: Event::parse_stored(body.as_bytes()),
        body,
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

/// [`Reader::due`]'s query: `?1` lane, `?2` now, `?3` limit. ESPF's events (positive
/// `i_event`) come before reconcile events, each in arrival order; the order is the index
/// `events_open_lane2`'s, so no lane's backlog is sorted.
fn due_sql() -> String {
    let open = State::sql_in(&State::OPEN);
    format!(
        "SELECT {ROW_COLUMNS} FROM events e
         WHERE lane = ?1 AND state IN {open} AND next_at <= ?2
           AND NOT EXISTS (SELECT 1 FROM events p WHERE p.entity = e.entity
                           AND p.state IN {open} AND p.seq < e.seq)
         ORDER BY i_event < 0, seq LIMIT ?3"
    )
}

/// [`Reader::overdue`]'s query: `?1` lane, `?2` now, `?3` limit.
fn overdue_sql() -> String {
    let in_progress = State::InProgress.sql();
    format!(
        "SELECT {ROW_COLUMNS} FROM events
         WHERE lane = ?1 AND state = {in_progress} AND next_at <= ?2 ORDER BY next_at LIMIT ?3"
    )
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

    /// Events of `lane` that are due at `now`: ESPF's in arrival order, then reconcile
    /// events (`espfd reconcile`) in arrival order, skipping any whose entity has an earlier
    /// unfinished event (order per entity holds, whatever the source).
    pub fn due(&self, lane: usize, now: i64, limit: usize) -> Result<Vec<StoredEvent>, Error> {
        let mut stmt = self
            .conn
            .prepare_cached(&due_sql())
            .map_err(db_err("read due events"))?;
        let rows = stmt
            .query_map(params![lane as i64, now, limit as i64], row)
            .map_err(db_err("read due events"))?
            .collect::<rusqlite::Result<Vec<StoredEvent>>>()
            .map_err(db_err("read due events"))?;
        Ok(rows)
    }

    /// IN_PROGRESS events of `lane` whose completion callback is overdue at `now`.
    pub fn overdue(&self, lane: usize, now: i64, limit: usize) -> Result<Vec<StoredEvent>, Error> {
        let mut stmt = self
            .conn
            .prepare_cached(&overdue_sql())
            .map_err(db_err("read overdue events"))?;
        let rows = stmt
            .query_map(params![lane as i64, now, limit as i64], row)
            .map_err(db_err("read overdue events"))?
            .collect::<rusqlite::Result<Vec<StoredEvent>>>()
            .map_err(db_err("read overdue events"))?;
        Ok(rows)
    }

    /// When `lane` next has something to do: the earliest `next_at` among the events that
    /// are first in line for their entity (a later event of a waiting entity is not due
    /// before its predecessor), and among IN_PROGRESS deadlines.
    pub fn next_due(&self, lane: usize) -> Result<Option<i64>, Error> {
        let open = State::sql_in(&State::OPEN);
        let in_progress = State::InProgress.sql();
        let sql = format!(
            "SELECT MIN(t) FROM (
               SELECT MIN(next_at) AS t FROM events e WHERE lane = ?1 AND state IN {open}
                 AND NOT EXISTS (SELECT 1 FROM events p WHERE p.entity = e.entity
                                 AND p.state IN {open} AND p.seq < e.seq)
               UNION ALL
               SELECT MIN(next_at) FROM events WHERE lane = ?1 AND state = {in_progress})"
        );
        self.conn
            .prepare_cached(&sql)
            .map_err(db_err("read next due"))?
            .query_row(params![lane as i64], |r| r.get(0))
            .map_err(db_err("read next due"))
    }

    /// One event by `i_event`.
    pub fn get(&self, i_event: i64) -> Result<Option<StoredEvent>, Error> {
        let sql = format!("SELECT {ROW_COLUMNS} FROM events WHERE i_event = ?1");
        self.conn
            .prepare_cached(&sql)
            .map_err(db_err("read event"))?
            .query_row(params![i_event], row)
            .optional()
            .map_err(db_err("read event"))
    }

    /// `head` and the events of its entity queued and due behind it, in arrival order, up
    /// to the first one that is not (a retry wait or a report owed ends the run): what
    /// `ESPFD_COALESCE=on` delivers once, for the last of them.
    pub fn coalescible(&self, head: &StoredEvent, now: i64) -> Result<Vec<StoredEvent>, Error> {
        let open = State::sql_in(&State::OPEN);
        let sql = format!(
            "SELECT {ROW_COLUMNS} FROM events
             WHERE entity = ?1 AND state IN {open} AND seq >= ?2 ORDER BY seq LIMIT 1000"
        );
        let rows = self
            .conn
            .prepare_cached(&sql)
            .map_err(db_err("read events"))?
            .query_map(params![head.entity, head.seq], row)
            .map_err(db_err("read events"))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(db_err("read events"))?;
        Ok(rows
            .into_iter()
            .take_while(|r| r.state == State::Queued && r.next_at <= now && r.event.is_ok())
            .collect())
    }

    /// Events, newest first, optionally only those in `state` and only those of account
    /// `i_account`.
    pub fn list(
        &self,
        state: Option<State>,
        i_account: Option<i64>,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, Error> {
        self.list_from(state, i_account, None, limit)
    }

    /// As [`Reader::list`], optionally only the events from `source`.
    pub fn list_from(
        &self,
        state: Option<State>,
        i_account: Option<i64>,
        source: Option<Source>,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, Error> {
        let sql = format!(
            "SELECT {ROW_COLUMNS} FROM events WHERE (?1 IS NULL OR state = ?1) AND (?2 IS NULL OR entity = ?2)
               AND (?4 IS NULL OR (i_event < 0) = ?4)
             ORDER BY seq DESC LIMIT ?3"
        );
        let entity = i_account.map(|a| format!("account:{a}"));
        let reconcile = source.map(|s| s == Source::Reconcile);
        let mut stmt = self
            .conn
            .prepare_cached(&sql)
            .map_err(db_err("list events"))?;
        let rows = stmt
            .query_map(params![state, entity, limit as i64, reconcile], row)
            .map_err(db_err("list events"))?
            .collect::<rusqlite::Result<Vec<StoredEvent>>>()
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
            let (sql, param): (String, Option<String>) = match &which {
                Replay::One(i) => (
                    format!(
                        "SELECT i_event FROM events WHERE i_event = ?1 AND state IN {}",
                        State::sql_in(&[
                            State::Done,
                            State::Failed,
                            State::InProgress,
                            State::Skipped
                        ])
                    ),
                    Some(i.to_string()),
                ),
                Replay::Failed { i_account } => (
                    format!(
                        "SELECT i_event FROM events WHERE state = {} AND (?1 IS NULL OR entity = ?1) ORDER BY seq",
                        State::Failed.sql()
                    ),
                    i_account.map(|a| format!("account:{a}")),
                ),
            };
            let mut stmt = tx.prepare(&sql).map_err(db_err("replay"))?;
            let ids = stmt
                .query_map(params![param], |r| r.get(0))
                .map_err(db_err("replay"))?
                .collect::<rusqlite::Result<Vec<i64>>>()
                .map_err(db_err("replay"))?;
            ids
        };
        for id in &ids {
            tx.execute(
                "UPDATE events SET state = ?3, next_at = 0, retry_reported = 0, replayed_at = ?2,
                     finished_at = NULL WHERE i_event = ?1",
                params![id, now, State::Queued],
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
                &format!(
                    "SELECT COUNT(*) FROM events WHERE state IN {}",
                    State::sql_in(&State::OPEN)
                ),
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
                &format!(
                    "SELECT MIN(received_at) FROM events WHERE state IN {}",
                    State::sql_in(&State::OPEN)
                ),
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

#[cfg(test)]
mod tests {
    use super::{due_sql, overdue_sql};
    use rusqlite::{params, Connection};

    /// The states in these queries are written from the same [`super::State`] literals as the
    /// partial indexes' conditions; if they drifted apart, SQLite would scan the table.
    #[test]
    fn the_workers_queries_use_the_partial_indexes() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(&super::super::schema::schema()).unwrap();
        let plan = |sql: &str| -> String {
            let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
            let rows = stmt
                .query_map(params![0, 0, 10], |r| r.get::<_, String>(3))
                .unwrap()
                .collect::<rusqlite::Result<Vec<String>>>()
                .unwrap();
            rows.join("; ")
        };
        let due = plan(&due_sql());
        // ESPF's events before reconcile work, in the index's own order: a search of one
        // lane, not a scan of all events and no sort of the lane's backlog.
        assert!(
            due.contains("USING INDEX events_open_lane2 (lane=?)"),
            "{due}"
        );
        assert!(!due.contains("TEMP B-TREE"), "{due}");
        assert!(!due.contains("SCAN e"), "{due}");
        assert!(due.contains("events_open_entity"), "{due}");
        let overdue = plan(&overdue_sql());
        assert!(overdue.contains("events_in_progress"), "{overdue}");
    }
}
