//! The pause as the running service sees it: `espfd pause` sets a flag in the store
//! (`store/control.rs`), and one thread here reads it once a second into a shared [`Pause`]
//! that the workers, `/readyz` and `/metrics` consult for free.
//!
//! While paused nothing goes upstream: the workers take no event and make no call (no
//! lookup, target call, status report, token refresh), and `/readyz` sends no probe. ESPF's
//! events and completion callbacks are still received and stored; their work waits. An event
//! a worker had in hand when the pause came finishes normally. This module only knows
//! whether the service is paused and says so in the log; keeping still is the callers' part.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{bounded, RecvTimeoutError, Sender};

use crate::error::Error;
use crate::store::{Paused, Reader, Store};

/// How often the store's flag is read: a pause or resume takes effect within this (plus
/// the event in hand, and a paused worker's [`crate::pipeline`] nap).
pub const POLL: Duration = Duration::from_secs(1);

/// Whether the service is paused, and by whom; shared by the workers and the health endpoints.
#[derive(Debug, Default)]
pub struct Pause {
    paused: AtomicBool,
    current: Mutex<Option<Paused>>,
}

impl Pause {
    /// A flag that never goes up (an ingress or a pipeline without a store watch, in tests).
    pub fn never() -> Arc<Pause> {
        Arc::new(Pause::default())
    }

    /// Whether nothing may go upstream now. One atomic load.
    pub fn is_paused(&self) -> bool {
        self.paused.load(Ordering::Acquire)
    }

    /// The pause in force: who, since when, why.
    pub fn current(&self) -> Option<Paused> {
        self.current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn set(&self, now: Option<Paused>) {
        self.paused.store(now.is_some(), Ordering::Release);
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = now;
    }
}

/// The thread that reads the flag; [`PauseWatch::stop`] ends it.
pub struct PauseWatch {
    stop: Sender<()>,
    thread: JoinHandle<()>,
}

impl PauseWatch {
    /// Reads the flag now (so that workers started next see it, and the log says at every
    /// start that the service is paused), then once every [`POLL`] in a thread of its own.
    pub fn start(store: &Store) -> Result<(Arc<Pause>, PauseWatch), Error> {
        let reader = store.reader()?;
        let pause = Pause::never();
        if let Some(p) = reader.paused()? {
            log::warn!("{p}; nothing goes upstream until espfd resume");
            pause.set(Some(p));
        }
        let (stop, stopped) = bounded::<()>(0);
        let shared = pause.clone();
        let thread = std::thread::Builder::new()
            .name("pause-watch".into())
            .spawn(move || {
                let mut failing = false;
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(POLL) {
                    match reader.paused() {
                        Ok(now) => {
                            failing = false;
                            notice(&shared, &reader, now);
                        }
                        // The last state read stands; said once per run of failures.
                        Err(e) if !failing => {
                            failing = true;
                            log::error!("cannot read the pause flag: {e}");
                        }
                        Err(_) => {}
                    }
                }
            })
            .map_err(|e| Error::io("cannot start the pause-watch thread", e))?;
        Ok((pause, PauseWatch { stop, thread }))
    }

    pub fn stop(self) {
        drop(self.stop);
        let _ = self.thread.join();
    }
}

/// Takes the flag as read now, logging a change.
fn notice(pause: &Pause, reader: &Reader, now: Option<Paused>) {
    let before = pause.current();
    if before == now {
        return;
    }
    if let Some(ended) = &before {
        match reader.resumed() {
            Ok(Some(r)) => log::info!(
                "resumed by {} after {} s",
                crate::redact::printable(&r.by),
                (r.at - ended.since).max(0) / 1000
            ),
            _ => log::info!("resumed"),
        }
    }
    if let Some(p) = &now {
        log::warn!("{p}; nothing goes upstream until espfd resume");
    }
    pause.set(now);
}
