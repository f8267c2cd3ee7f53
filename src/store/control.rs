//! The `control` table: settings a command changes while the service may be running, read
//! by the service once a second. Today one: the pause (`espfd pause`, `espfd resume`).
//!
//! Rows are `key → value` text, so that a later setting needs no change of layout. While
//! paused, `paused_by`, `paused_since` (unix ms) and `pause_reason` are set; `espfd resume`
//! deletes them and writes `resumed_by` and `resumed_at`, so that the service can say who
//! resumed it. Like [`Reader::replay`], these writes go straight to the file on the
//! command's own connection (the service may be stopped); SQLite's write lock orders them
//! with the service's writer. The table is created here if missing, so that a store written
//! by an older espfd gains it.

use rusqlite::{params, OptionalExtension};

use super::{db_err, Reader};
use crate::error::Error;
use crate::redact::printable;
use crate::util::format_rfc3339;

/// A pause in force: who asked for it, when, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paused {
    /// `user@host` of the command that paused.
    pub by: String,
    /// When (unix ms).
    pub since: i64,
    /// The `--reason` given, or empty.
    pub reason: String,
}

/// The last `espfd resume`: who, and when (unix ms).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resumed {
    pub by: String,
    pub at: i64,
}

impl std::fmt::Display for Paused {
    /// `paused by root@hss1 since 2026-12-02T01:00:00.000Z: HSS upgrade`, escaped for a
    /// log line or a terminal (the values come from whoever ran `espfd pause`).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let reason = match self.reason.trim() {
            "" => "no reason given",
            r => r,
        };
        write!(
            f,
            "paused by {} since {}: {}",
            printable(&self.by),
            format_rfc3339(self.since),
            printable(reason)
        )
    }
}

const CREATE: &str =
    "CREATE TABLE IF NOT EXISTS control (key TEXT PRIMARY KEY, value TEXT NOT NULL)";

impl Reader {
    /// One value of the control table; `None` when unset, or when the table does not exist
    /// yet (a store written by an older espfd, read while no newer one has opened it).
    pub(super) fn control(&self, key: &str) -> Result<Option<String>, Error> {
        let exists: bool = self
            .conn
            .prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'control')",
            )
            .and_then(|mut s| s.query_row([], |r| r.get(0)))
            .map_err(db_err("read control"))?;
        if !exists {
            return Ok(None);
        }
        self.conn
            .prepare_cached("SELECT value FROM control WHERE key = ?1")
            .and_then(|mut s| s.query_row(params![key], |r| r.get(0)).optional())
            .map_err(db_err("read control"))
    }

    /// The pause in force, if any.
    pub fn paused(&self) -> Result<Option<Paused>, Error> {
        let Some(by) = self.control("paused_by")? else {
            return Ok(None);
        };
        let since = self
            .control("paused_since")?
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let reason = self.control("pause_reason")?.unwrap_or_default();
        Ok(Some(Paused { by, since, reason }))
    }

    /// The last resume, if there was one.
    pub fn resumed(&self) -> Result<Option<Resumed>, Error> {
        let Some(by) = self.control("resumed_by")? else {
            return Ok(None);
        };
        let at = self
            .control("resumed_at")?
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        Ok(Some(Resumed { by, at }))
    }

    /// Pauses the service (`espfd pause`): by `by`, at `now`, for `reason`. Returns the pause
    /// in force and whether this call started it (false: it was paused already, and that
    /// pause stands unchanged).
    pub fn pause(&self, by: &str, reason: &str, now: i64) -> Result<(Paused, bool), Error> {
        self.in_write_transaction("pause", || {
            if let Some(already) = self.paused()? {
                return Ok((already, false));
            }
            let since = now.to_string();
            for (key, value) in [
                ("paused_by", by),
                ("paused_since", since.as_str()),
                ("pause_reason", reason),
            ] {
                self.set_control(key, value)?;
            }
            let paused = Paused {
                by: by.to_string(),
                since: now,
                reason: reason.to_string(),
            };
            Ok((paused, true))
        })
    }

    /// Ends the pause (`espfd resume`), recording `by` and `now`; returns the pause that
    /// ended, or `None` when the service was not paused (nothing is written then).
    pub fn resume(&self, by: &str, now: i64) -> Result<Option<Paused>, Error> {
        self.in_write_transaction("resume", || {
            let Some(paused) = self.paused()? else {
                return Ok(None);
            };
            self.conn
                .execute(
                    "DELETE FROM control WHERE key IN ('paused_by', 'paused_since', 'pause_reason')",
                    [],
                )
                .map_err(db_err("resume"))?;
            self.set_control("resumed_by", by)?;
            self.set_control("resumed_at", &now.to_string())?;
            Ok(Some(paused))
        })
    }

    pub(super) fn set_control(&self, key: &str, value: &str) -> Result<(), Error> {
        self.conn
            .execute(
                "INSERT INTO control (key, value) VALUES (?1, ?2)
                 ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                params![key, value],
            )
            .map_err(db_err("write control"))?;
        Ok(())
    }

    /// Runs `f` in a transaction that holds SQLite's write lock from its start (so that what
    /// `f` reads cannot change before it writes), creating the table first if needed.
    pub(super) fn in_write_transaction<T>(
        &self,
        op: &'static str,
        f: impl FnOnce() -> Result<T, Error>,
    ) -> Result<T, Error> {
        self.conn.execute_batch(CREATE).map_err(db_err(op))?;
        self.conn
            .execute_batch("BEGIN IMMEDIATE")
            .map_err(db_err(op))?;
        match f() {
            Ok(v) => {
                self.conn.execute_batch("COMMIT").map_err(db_err(op))?;
                Ok(v)
            }
            Err(e) => {
                let _ = self.conn.execute_batch("ROLLBACK");
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Paused, Reader};

    fn reader() -> (Reader, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!(
            "espfd-control-{}-{}",
            std::process::id(),
            crate::util::now_ms()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("espfd.db");
        // A store without the control table, as an older espfd left it.
        rusqlite::Connection::open(&path)
            .unwrap()
            .execute_batch("CREATE TABLE events (seq INTEGER PRIMARY KEY)")
            .unwrap();
        (Reader::open(&path).unwrap(), dir)
    }

    #[test]
    fn pause_and_resume_once_each_on_a_store_without_the_table() {
        let (r, dir) = reader();
        assert_eq!(r.paused().unwrap(), None);
        assert_eq!(r.resume("ops@a", 5).unwrap(), None, "not paused");
        let first = Paused {
            by: "ops@a".into(),
            since: 10,
            reason: "HSS upgrade".into(),
        };
        assert_eq!(
            r.pause("ops@a", "HSS upgrade", 10).unwrap(),
            (first.clone(), true)
        );
        // A second pause leaves the first as it was.
        assert_eq!(
            r.pause("root@b", "other", 20).unwrap(),
            (first.clone(), false)
        );
        assert_eq!(r.paused().unwrap(), Some(first.clone()));
        assert_eq!(r.resume("root@b", 30).unwrap(), Some(first));
        assert_eq!(r.paused().unwrap(), None);
        let resumed = r.resumed().unwrap().unwrap();
        assert_eq!((resumed.by.as_str(), resumed.at), ("root@b", 30));
        let _ = std::fs::remove_dir_all(dir);
    }
}
