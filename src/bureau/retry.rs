//! The retry policy for bureau calls (bureau-protocol.md section 8: "back off with jitter and
//! retry"), in one place.
//!
//! Owns: how long to wait before the next attempt and when to give up. Must not decide *whether*
//! a failure may be retried (that is `client`'s fault classification) nor touch the network.
//! Wraps the `backoff` crate (unmaintained: RUSTSEC-2025-0012, and its `instant` dependency
//! RUSTSEC-2024-0384), so replacing it touches this file only.

use std::time::{Duration, Instant};

use backoff::backoff::Backoff as _;
use backoff::{ExponentialBackoff, ExponentialBackoffBuilder};

/// Exponential backoff with ±50 % jitter, doubling from `initial` up to `max_interval`, giving up
/// once `max_elapsed` has passed since the first attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub initial: Duration,
    pub max_interval: Duration,
    pub max_elapsed: Duration,
}

impl RetryPolicy {
    /// A fresh schedule, started now (at the first attempt of one logical call).
    pub fn start(&self) -> Schedule {
        let inner = ExponentialBackoffBuilder::new()
            .with_initial_interval(self.initial)
            .with_max_interval(self.max_interval)
            .with_randomization_factor(0.5)
            .with_multiplier(2.0)
            .with_max_elapsed_time(Some(self.max_elapsed))
            .build();
        Schedule {
            inner,
            started: Instant::now(),
            max_elapsed: self.max_elapsed,
            attempts: 1,
        }
    }
}

/// The backoff state of one logical call (an upload with all its resends, a download…).
#[derive(Debug)]
pub struct Schedule {
    inner: ExponentialBackoff,
    started: Instant,
    max_elapsed: Duration,
    attempts: u32,
}

impl Schedule {
    /// The pause before the next attempt, or `None` when the time budget is spent (an attempt's
    /// own duration counts: a pause that would end past the budget is not taken).
    pub fn next_delay(&mut self) -> Option<Duration> {
        let delay = self.inner.next_backoff()?;
        if self.started.elapsed() + delay > self.max_elapsed {
            return None;
        }
        self.attempts += 1;
        Some(delay)
    }

    /// Sleeps before the next attempt; `false` when the budget is spent.
    pub async fn wait(&mut self) -> bool {
        match self.next_delay() {
            Some(delay) => {
                tokio::time::sleep(delay).await;
                true
            }
            None => false,
        }
    }

    /// Attempts started so far (the first one included).
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_with_jitter_and_stop_at_the_budget() {
        let policy = RetryPolicy {
            initial: Duration::from_millis(100),
            max_interval: Duration::from_millis(400),
            max_elapsed: Duration::from_secs(3600),
        };
        let mut s = policy.start();
        let d: Vec<Duration> = (0..6).filter_map(|_| s.next_delay()).collect();
        assert_eq!(d.len(), 6);
        assert!(d[0] >= Duration::from_millis(50) && d[0] <= Duration::from_millis(150));
        assert!(d.iter().all(|x| *x <= Duration::from_millis(600)));
        assert_eq!(s.attempts(), 7);

        let tight = RetryPolicy {
            max_elapsed: Duration::from_millis(10),
            ..policy
        };
        assert_eq!(tight.start().next_delay(), None);
    }
}
