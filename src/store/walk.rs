//! Reconcile walks (`espfd reconcile`): the `walks` table and the synthetic events a walk
//! queues, one per account, with negative `i_event`s.
//!
//! Like [`Reader::replay`], these writes go straight to the file on the command's own
//! connection (the service may run or be stopped); each [`Reader::queue_reconcile`] is one
//! short transaction, so that the service's writer (ESPF's intake) never waits long. The ids
//! come from a store-wide counter in the control table (`reconcile_next`) that only goes
//! down, so that no two walks — even after their events are purged — share an `i_event`
//! (a target may remember an `Idempotency-Key`), and ESPF's ids (positive: intake refuses
//! the rest) never meet one. An account whose earlier reconcile event is still unfinished
//! (queued, retry, report, in_progress) is not queued again, which is also what makes a walk
//! killed half-way resumable: run again, it queues only what is missing.
//!
//! Not here: the pacing (`--rate`), which the service applies ([`crate::pipeline`]); this
//! file only stores the rate with the walk.

use std::collections::HashSet;

use rusqlite::{params, OptionalExtension};

use super::schema::walk_schema;
use super::{db_err, lane_of, Reader, State};
use crate::error::Error;

/// Where an event came from, for `espfd events list --source`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// ESPF posted it (positive `i_event`).
    Espf,
    /// `espfd reconcile` queued it (negative `i_event`).
    Reconcile,
}

impl Source {
    /// The source of that name (`espf`, `reconcile`), if any.
    pub fn parse(name: &str) -> Option<Source> {
        match name {
            "espf" => Some(Source::Espf),
            "reconcile" => Some(Source::Reconcile),
            _ => None,
        }
    }
}

/// A walk as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Walk {
    pub id: i64,
    /// Events per second the service processes; 0 for no limit.
    pub rate: f64,
}

/// What one [`Reader::queue_reconcile`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Queued {
    /// `(i_account, i_event)` of each event queued.
    pub queued: Vec<(i64, i64)>,
    /// Accounts left out because a reconcile event of theirs is still unfinished.
    pub open: Vec<i64>,
}

/// The event type of a reconcile event.
pub const EVENT_TYPE: &str = "Reconcile/Account";

/// The unfinished states, in which an account's reconcile event keeps it from being queued
/// again (the condition of the `events_reconcile_open` index, written the same way).
fn unfinished() -> String {
    State::sql_in(&[
        State::Queued,
        State::Retry,
        State::Report,
        State::InProgress,
    ])
}

impl Reader {
    /// Creates the walks table and its index if an older espfd wrote this store.
    fn walk_tables(&self) -> Result<(), Error> {
        self.conn
            .execute_batch(&walk_schema())
            .map_err(db_err("create the walks table"))
    }

    /// Records a new walk (`filter` as the operator gave it, `total` accounts found, the
    /// service to process them at `rate` per second) and returns its id.
    pub fn begin_walk(
        &self,
        filter: &str,
        rate: f64,
        total: usize,
        now: i64,
    ) -> Result<i64, Error> {
        self.walk_tables()?;
        self.in_write_transaction("begin walk", || {
            self.conn
                .execute(
                    "INSERT INTO walks (started_at, filter, rate, total) VALUES (?1, ?2, ?3, ?4)",
                    params![now, filter, rate, total as i64],
                )
                .map_err(db_err("begin walk"))?;
            Ok(self.conn.last_insert_rowid())
        })
    }

    /// Marks `walk` as fully queued at `now`.
    pub fn finish_walk(&self, walk: i64, now: i64) -> Result<(), Error> {
        self.conn
            .execute(
                "UPDATE walks SET finished_at = ?2 WHERE id = ?1",
                params![walk, now],
            )
            .map_err(db_err("finish walk"))?;
        Ok(())
    }

    /// The newest walk: its rate paces every reconcile event still queued. `None` when
    /// there has been none (or the table does not exist yet).
    pub fn latest_walk(&self) -> Result<Option<Walk>, Error> {
        let exists: bool = self
            .conn
            .prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'walks')",
            )
            .and_then(|mut s| s.query_row([], |r| r.get(0)))
            .map_err(db_err("read walks"))?;
        if !exists {
            return Ok(None);
        }
        self.conn
            .prepare_cached("SELECT id, rate FROM walks ORDER BY id DESC LIMIT 1")
            .and_then(|mut s| {
                s.query_row([], |r| {
                    Ok(Walk {
                        id: r.get(0)?,
                        rate: r.get(1)?,
                    })
                })
                .optional()
            })
            .map_err(db_err("read walks"))
    }

    /// The lane count of the service that last opened the store, if recorded.
    pub fn recorded_lanes(&self) -> Result<Option<usize>, Error> {
        Ok(self
            .control("lanes")?
            .and_then(|v| v.parse().ok())
            .filter(|n| *n > 0))
    }

    /// The accounts with an unfinished reconcile event (for `--dry-run`).
    pub fn reconcile_open(&self) -> Result<HashSet<i64>, Error> {
        self.walk_tables()?;
        let sql = format!(
            "SELECT entity FROM events WHERE i_event < 0 AND state IN {}",
            unfinished()
        );
        let mut stmt = self.conn.prepare(&sql).map_err(db_err("read open"))?;
        let rows = stmt
            .query_map([], |r| r.get::<_, String>(0))
            .map_err(db_err("read open"))?
            .filter_map(Result::ok)
            .filter_map(|e| e.strip_prefix("account:")?.parse().ok())
            .collect();
        Ok(rows)
    }

    /// Queues one reconcile event for each of `accounts` that has no unfinished one, on
    /// the lane of its entity among `lanes`, in one transaction; counts them on `walk`.
    pub fn queue_reconcile(
        &self,
        walk: i64,
        accounts: &[i64],
        lanes: usize,
        now: i64,
    ) -> Result<Queued, Error> {
        self.walk_tables()?;
        let open_sql = format!(
            "SELECT EXISTS (SELECT 1 FROM events WHERE i_event < 0 AND state IN {} AND entity = ?1)",
            unfinished()
        );
        self.in_write_transaction("queue reconcile events", || {
            let err = db_err("queue reconcile events");
            let lowest: i64 = self
                .conn
                .query_row("SELECT MIN(0, IFNULL(MIN(i_event), 0)) FROM events", [], |r| {
                    r.get(0)
                })
                .map_err(&err)?;
            // Below anything stored, in case the counter was lost with a damaged control row.
            let mut next = self
                .control("reconcile_next")?
                .and_then(|v| v.parse::<i64>().ok())
                .unwrap_or(-1)
                .min(lowest - 1);
            let mut done = Queued::default();
            let mut is_open = self.conn.prepare_cached(&open_sql).map_err(&err)?;
            let mut insert = self
                .conn
                .prepare_cached(
                    "INSERT INTO events (i_event, event_type, body, entity, lane, state, received_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )
                .map_err(&err)?;
            for &i_account in accounts {
                let entity = format!("account:{i_account}");
                if is_open
                    .query_row(params![entity], |r| r.get::<_, bool>(0))
                    .map_err(&err)?
                {
                    done.open.push(i_account);
                    continue;
                }
                let body = serde_json::json!({
                    "event_type": EVENT_TYPE,
                    "variables": {"i_account": i_account, "i_event": next},
                })
                .to_string();
                insert
                    .execute(params![
                        next,
                        EVENT_TYPE,
                        body,
                        entity,
                        lane_of(&entity, lanes) as i64,
                        State::Queued,
                        now
                    ])
                    .map_err(&err)?;
                done.queued.push((i_account, next));
                next -= 1;
            }
            self.set_control("reconcile_next", &next.to_string())?;
            self.conn
                .execute(
                    "UPDATE walks SET queued = queued + ?2 WHERE id = ?1",
                    params![walk, done.queued.len() as i64],
                )
                .map_err(&err)?;
            Ok(done)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::schema::schema;
    use super::*;

    fn reader() -> (Reader, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!(
            "espfd-walk-{}-{}",
            std::process::id(),
            crate::util::now_ms()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("espfd.db");
        rusqlite::Connection::open(&path)
            .unwrap()
            .execute_batch(&schema())
            .unwrap();
        (Reader::open(&path).unwrap(), dir)
    }

    #[test]
    fn ids_go_down_across_walks_and_open_accounts_are_not_queued_twice() {
        let (r, dir) = reader();
        assert_eq!(r.latest_walk().unwrap(), None);
        let w1 = r.begin_walk("--all", 5.0, 3, 1).unwrap();
        let q = r.queue_reconcile(w1, &[10, 11], 4, 1).unwrap();
        assert_eq!(q.queued, vec![(10, -1), (11, -2)]);
        let q = r.queue_reconcile(w1, &[11, 12], 4, 1).unwrap();
        assert_eq!((q.queued, q.open), (vec![(12, -3)], vec![11]));
        // Account 10's event is done: a later walk queues it again, with a new id, even
        // after the old events are gone.
        r.conn
            .execute_batch("UPDATE events SET state = 'done' WHERE i_event = -1; DELETE FROM events WHERE i_event = -1")
            .unwrap();
        let w2 = r.begin_walk("--customer 1", 0.0, 1, 2).unwrap();
        let q = r.queue_reconcile(w2, &[10], 4, 2).unwrap();
        assert_eq!(q.queued, vec![(10, -4)]);
        assert_eq!(r.latest_walk().unwrap(), Some(Walk { id: w2, rate: 0.0 }));
        assert_eq!(r.reconcile_open().unwrap(), HashSet::from([10, 11, 12]));
        let stored = r.get(-4).unwrap().unwrap();
        let ev = stored.event.unwrap();
        assert_eq!(
            (ev.event_type.as_str(), ev.i_account()),
            (EVENT_TYPE, Some(10))
        );
        let _ = std::fs::remove_dir_all(dir);
    }
}
