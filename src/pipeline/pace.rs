//! The pace of reconcile work (`espfd reconcile --rate R`): one token bucket shared by every
//! lane, checked before a lane takes a reconcile event, so that a walk of many thousand
//! accounts reaches PortaBilling and the target at R events a second in all, however many
//! lanes there are. ESPF's events never pass here.
//!
//! The rate is the newest walk's, read from the store ([`Reader::latest_walk`]) at most once
//! a second, so that it holds for events a walk queued while the service was stopped, and a
//! new walk's rate applies within a second. The bucket holds one token at most: no burst,
//! at most one event more than R × the seconds elapsed.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::store::Reader;

/// The rate when the store records no walk (the command's default).
pub const DEFAULT_RATE: f64 = 10.0;
/// How often the rate is read from the store; also the longest wait [`Pace::admit`] asks for.
const READ_EVERY: Duration = Duration::from_secs(1);

/// The shared bucket.
#[derive(Debug)]
pub struct Pace(Mutex<Bucket>);

#[derive(Debug)]
struct Bucket {
    /// Events a second; 0 for no limit.
    rate: f64,
    tokens: f64,
    filled_at: Instant,
    read_at: Option<Instant>,
}

impl Default for Pace {
    fn default() -> Self {
        Pace(Mutex::new(Bucket {
            rate: DEFAULT_RATE,
            tokens: 1.0,
            filled_at: Instant::now(),
            read_at: None,
        }))
    }
}

impl Pace {
    /// Takes a token for one reconcile event; when there is none, how long to wait for the
    /// next (at most a second, so that a changed rate is seen). `reader` is the calling
    /// lane's, used when the rate is due to be read again.
    pub fn admit(&self, reader: &Reader) -> Result<(), Duration> {
        let mut b = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if b.read_at
            .is_none_or(|at| now.duration_since(at) >= READ_EVERY)
        {
            b.read_at = Some(now);
            match reader.latest_walk() {
                Ok(walk) => b.rate = walk.map_or(DEFAULT_RATE, |w| w.rate),
                Err(e) => log::warn!("reconcile rate not read, {} per second kept: {e}", b.rate),
            }
        }
        b.take(now)
    }
}

impl Bucket {
    fn take(&mut self, now: Instant) -> Result<(), Duration> {
        if self.rate <= 0.0 {
            return Ok(());
        }
        let elapsed = now.duration_since(self.filled_at).as_secs_f64();
        self.filled_at = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(1.0);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Ok(());
        }
        let wait = Duration::from_secs_f64((1.0 - self.tokens) / self.rate);
        Err(wait.clamp(Duration::from_millis(1), READ_EVERY))
    }
}

#[cfg(test)]
mod tests {
    use super::Bucket;
    use std::time::{Duration, Instant};

    #[test]
    fn the_bucket_lets_one_through_then_paces_and_zero_is_unlimited() {
        let t0 = Instant::now();
        let mut b = Bucket {
            rate: 5.0,
            tokens: 1.0,
            filled_at: t0,
            read_at: Some(t0),
        };
        assert_eq!(b.take(t0), Ok(()));
        let wait = b.take(t0).unwrap_err();
        assert!(
            wait > Duration::from_millis(150) && wait <= Duration::from_millis(200),
            "{wait:?}"
        );
        // Ten seconds idle give one token, not fifty: no burst.
        let later = t0 + Duration::from_secs(10);
        assert_eq!(b.take(later), Ok(()));
        assert!(b.take(later).is_err());
        assert_eq!(b.take(later + Duration::from_millis(200)), Ok(()));
        b.rate = 0.0;
        for _ in 0..1000 {
            assert_eq!(b.take(later), Ok(()));
        }
    }
}
