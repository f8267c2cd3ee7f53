//! One shared token, renewed by one thread at a time: the PortaBilling session and the
//! target's OAuth 2.0 access token are both kept in a [`TokenCache`].
//!
//! A token has a refresh time (unix ms; `None`: used until it is rejected) and a generation,
//! bumped every time a new token is stored. [`TokenCache::get`] hands out the current token,
//! renewing it first once its refresh time has passed; [`TokenCache::renew`] replaces a token
//! a server rejected, unless another thread already replaced it since (its generation has
//! moved on). Either way only one thread fetches at a time (single flight); the others wait
//! for it and take what it got.
//!
//! Not here: how a token is fetched, what a failure means, pausing after refusals — the
//! caller's fetch closure decides all of that.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use crate::util::now_ms;

/// A token, its refresh time and generation.
#[derive(Debug, Clone)]
struct Held<T> {
    value: T,
    refresh_at: Option<i64>,
    generation: u64,
}

impl<T> Held<T> {
    fn fresh(&self) -> bool {
        self.refresh_at.is_none_or(|t| now_ms() < t)
    }
}

/// The token being replaced, as a fetch closure sees it.
#[derive(Debug)]
pub struct Previous<T> {
    /// The old token.
    pub value: T,
    /// Its refresh time had passed (it is renewed because it is about to expire, not
    /// because a server rejected it).
    pub expiring: bool,
}

/// A new token from a fetch: the value and its refresh time (unix ms; `None`: until it is
/// rejected).
pub type Fetched<T> = (T, Option<i64>);

/// The shared token. Share the owner behind an `Arc`.
#[derive(Debug)]
pub struct TokenCache<T> {
    current: Mutex<Option<Held<T>>>,
    /// Held while fetching: one fetch at a time.
    fetching: Mutex<()>,
    generation: AtomicU64,
}

impl<T> Default for TokenCache<T> {
    fn default() -> Self {
        TokenCache {
            current: Mutex::new(None),
            fetching: Mutex::new(()),
            generation: AtomicU64::new(0),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl<T: Clone> TokenCache<T> {
    /// An empty cache: the first [`TokenCache::get`] fetches.
    pub fn new() -> TokenCache<T> {
        TokenCache::default()
    }

    /// The current token and its generation, fetched with `fetch` first when there is none
    /// or its refresh time has passed.
    pub fn get<E>(
        &self,
        fetch: impl FnOnce(Option<Previous<T>>) -> Result<Fetched<T>, E>,
    ) -> Result<(T, u64), E> {
        // Bind first: a guard in an `if let` scrutinee would live through the body, and
        // renew() takes the same lock.
        let current = lock(&self.current).clone();
        match current {
            Some(h) if h.fresh() => Ok((h.value, h.generation)),
            Some(h) => self.renew(Some(h.generation), fetch),
            None => self.renew(None, fetch),
        }
    }

    /// Replaces the token unless another thread already did since generation `stale` was
    /// seen (`None`: there was no token). The old token is dropped before `fetch` runs, so
    /// after a failed fetch the next call fetches again.
    pub fn renew<E>(
        &self,
        stale: Option<u64>,
        fetch: impl FnOnce(Option<Previous<T>>) -> Result<Fetched<T>, E>,
    ) -> Result<(T, u64), E> {
        let _one_at_a_time = lock(&self.fetching);
        let current = lock(&self.current).clone();
        if let Some(h) = current {
            if Some(h.generation) != stale && h.fresh() {
                return Ok((h.value, h.generation));
            }
        }
        let previous = lock(&self.current).take().map(|h| Previous {
            expiring: !h.fresh(),
            value: h.value,
        });
        let (value, refresh_at) = fetch(previous)?;
        let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        *lock(&self.current) = Some(Held {
            value: value.clone(),
            refresh_at,
            generation,
        });
        Ok((value, generation))
    }

    /// Tokens stored so far (the current generation).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn one_fetch_serves_everyone_until_its_refresh_time() {
        let cache = TokenCache::<String>::new();
        let fetches = AtomicUsize::new(0);
        let fetch = |_: Option<Previous<String>>| -> Result<Fetched<String>, ()> {
            let n = fetches.fetch_add(1, Ordering::SeqCst) + 1;
            Ok((format!("t{n}"), None))
        };
        assert_eq!(cache.get(fetch).unwrap(), ("t1".into(), 1));
        assert_eq!(cache.get(fetch).unwrap(), ("t1".into(), 1));
        assert_eq!(fetches.load(Ordering::SeqCst), 1);

        // A token past its refresh time is renewed by the next get, which says so.
        let cache = TokenCache::<String>::new();
        cache.get(|_| Ok::<_, ()>(("old".into(), Some(0)))).unwrap();
        let (t, g) = cache
            .get(|p| {
                assert!(p.as_ref().is_some_and(|p| p.expiring && p.value == "old"));
                Ok::<_, ()>(("new".into(), None))
            })
            .unwrap();
        assert_eq!((t.as_str(), g), ("new", 2));
    }

    #[test]
    fn a_stale_renewal_reuses_what_another_thread_fetched() {
        let cache = TokenCache::<String>::new();
        let (_, g1) = cache.get(|_| Ok::<_, ()>(("a".into(), None))).unwrap();
        // The first thread to see generation 1 rejected renews it ...
        let (t, g2) = cache
            .renew(Some(g1), |p| {
                assert!(p.is_some_and(|p| !p.expiring));
                Ok::<_, ()>(("b".into(), None))
            })
            .unwrap();
        assert_eq!((t.as_str(), g2), ("b", 2));
        // ... the second finds it renewed and fetches nothing.
        let (t, g) = cache
            .renew(Some(g1), |_| -> Result<Fetched<String>, ()> {
                panic!("fetched twice")
            })
            .unwrap();
        assert_eq!((t.as_str(), g), ("b", 2));
    }

    #[test]
    fn a_failed_fetch_leaves_no_token_and_the_next_call_fetches() {
        let cache = TokenCache::<String>::new();
        cache.get(|_| Ok::<_, ()>(("a".into(), None))).unwrap();
        assert_eq!(cache.renew(Some(1), |_| Err("down")), Err("down"));
        let (t, _) = cache
            .get(|p| {
                assert!(p.is_none());
                Ok::<_, ()>(("c".into(), None))
            })
            .unwrap();
        assert_eq!(t, "c");
    }

    #[test]
    fn threads_waiting_on_a_fetch_share_its_token() {
        let cache = Arc::new(TokenCache::<String>::new());
        let fetches = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (cache, fetches) = (cache.clone(), fetches.clone());
                std::thread::spawn(move || {
                    cache
                        .get(|_| {
                            fetches.fetch_add(1, Ordering::SeqCst);
                            std::thread::sleep(Duration::from_millis(20));
                            Ok::<_, ()>(("shared".to_string(), None))
                        })
                        .unwrap()
                })
            })
            .collect();
        for t in threads {
            assert_eq!(t.join().unwrap(), ("shared".into(), 1));
        }
        assert_eq!(fetches.load(Ordering::SeqCst), 1);
    }
}
