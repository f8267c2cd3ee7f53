//! The retry policy: how long to wait before the next try, how long to keep trying, and how
//! long an accepted (IN_PROGRESS) event waits for its completion callback.

use std::time::Duration;

use crate::util::jitter_u64;

/// When events are tried again and when espfd gives up on them.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Delay before the second try, doubled for each further one (`ESPFD_RETRY_INITIAL`).
    pub initial: Duration,
    /// Longest delay between two tries (`ESPFD_RETRY_MAX_DELAY`).
    pub max_delay: Duration,
    /// How long after its arrival (or its last replay) an event is still tried again
    /// (`ESPFD_RETRY_MAX_AGE`); after that a transient failure is final.
    pub max_age: Duration,
    /// How long an IN_PROGRESS event waits for the target's completion callback before it is
    /// FAILED (`ESPFD_ASYNC_TIMEOUT`).
    pub async_timeout: Duration,
}

impl RetryPolicy {
    /// Whether an event whose run of attempts began `age_ms` ago is past
    /// [`max_age`](Self::max_age): a transient failure is then final.
    pub fn gives_up(&self, age_ms: i64) -> bool {
        age_ms >= ms(self.max_age)
    }

    /// The deadline (unix ms) for the completion callback of an event accepted at `now`.
    pub fn async_deadline(&self, now: i64) -> i64 {
        now + ms(self.async_timeout)
    }

    /// Delay (ms) before try `attempt + 1`: the server's `Retry-After` if it gave one (at
    /// least [`initial`](Self::initial), at most an hour), else exponential from `initial`,
    /// capped at [`max_delay`](Self::max_delay), with ±25 % jitter so that many failed events
    /// do not come back at the same instant.
    pub fn backoff(&self, attempt: i64, retry_after: Option<Duration>) -> i64 {
        let initial_ms = ms(self.initial);
        if let Some(d) = retry_after {
            // Honoured up to an hour, but never below ESPFD_RETRY_INITIAL: "Retry-After: 0"
            // (or a date in the past) must not turn into a tight loop.
            return (d.as_millis() as i64).clamp(initial_ms, 3_600_000.max(initial_ms));
        }
        let exp = (attempt - 1).clamp(0, 30) as u32;
        let base = initial_ms
            .saturating_mul(1i64 << exp)
            .min(ms(self.max_delay));
        let spread = base / 2;
        let jitter = if spread > 0 {
            (jitter_u64() % spread as u64) as i64
        } else {
            0
        };
        (base - base / 4 + jitter).max(1)
    }
}

fn ms(d: Duration) -> i64 {
    d.as_millis() as i64
}

#[cfg(test)]
mod tests {
    use super::RetryPolicy;
    use std::time::Duration;

    /// Two seconds doubling up to ten minutes, as the defaults.
    fn backoff(attempt: i64, retry_after: Option<Duration>) -> i64 {
        let policy = RetryPolicy {
            initial: Duration::from_secs(2),
            max_delay: Duration::from_secs(600),
            max_age: Duration::from_secs(86_400),
            async_timeout: Duration::from_secs(3_600),
        };
        policy.backoff(attempt, retry_after)
    }

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_cap() {
        for attempt in 1..=12 {
            let base = (2_000i64 << (attempt - 1)).min(600_000);
            let mut seen = std::collections::HashSet::new();
            for _ in 0..200 {
                let d = backoff(attempt, None);
                assert!(
                    d >= base * 3 / 4 && d < base * 5 / 4,
                    "attempt {attempt}: {d} vs {base}"
                );
                seen.insert(d);
            }
            assert!(seen.len() > 20, "jitter spreads the delays: {}", seen.len());
        }
    }

    #[test]
    fn retry_after_is_honoured_within_bounds() {
        let s = |secs| Some(Duration::from_secs(secs));
        assert_eq!(backoff(1, s(30)), 30_000);
        assert_eq!(backoff(1, s(0)), 2_000, "never a tight loop");
        assert_eq!(backoff(1, s(86_400)), 3_600_000, "at most an hour");
    }
}
