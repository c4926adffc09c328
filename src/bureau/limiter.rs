//! How fast and how many at once one bureau is spoken to (design.md guarantee 4: polite to the
//! bureau): at most `requests_per_minute` requests, evenly spaced, and at most `concurrency` in
//! flight, as `config/provinces.toml` gives them. Every HTTP request a
//! [`BureauClient`](super::client::BureauClient) sends takes a [`Permit`] first — retries and
//! the reconciling `isp_querypreviousupload` included.
//!
//! The rate is a GCRA with a burst of one: the limiter keeps the earliest instant the next
//! request may start. A caller reserves that instant, moves it one interval (60 s ÷ rate) on,
//! and sleeps until its reservation. Reservations are handed out in order, so callers that wait
//! go one interval apart instead of racing when an interval ends; a caller that gives up while
//! waiting leaves its slot unused (the bureau sees a longer gap, never a shorter one). With a
//! burst of one the bound is simple: in any window of length W, at most W × rate + 1 requests
//! start. A concurrency slot is taken before the reservation and held until the answer is read,
//! so a request never waits for a slot after its instant has passed.
//!
//! Across instances, the holder of a bureau's lease is the only one that talks to it, so its
//! limiter is the bureau's limiter. Its memory does not travel with the lease: an instance that
//! takes a bureau (first acquisition or takeover) calls [`Limiter::hold_off`], and its first
//! request waits one interval — two holders back to back stay one interval apart.
//!
//! Time is tokio's, so tests run it paused. Owns: waiting. Must not know about HTTP, leases or
//! the store.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// One bureau's limits (provinces.toml, or a `[bureau.provinces.CODE]` override).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub requests_per_minute: u32,
    pub concurrency: u32,
}

impl Limits {
    /// The spacing of requests: 60 s ÷ rate (a rate of 0 is read as 1).
    pub fn interval(&self) -> Duration {
        Duration::from_secs(60) / self.requests_per_minute.max(1)
    }
}

/// The limiter of one bureau; lives as long as the bureau's client.
#[derive(Debug)]
pub struct Limiter {
    /// For the wait metric only.
    province: String,
    /// `None`: no limits (`bureau.rate_limits = false`).
    rule: Option<Rule>,
}

#[derive(Debug)]
struct Rule {
    interval: Duration,
    /// The earliest instant the next request may start.
    next: Mutex<Instant>,
    slots: Arc<Semaphore>,
}

/// The right to send one request; the concurrency slot is given back when it drops.
#[derive(Debug)]
pub struct Permit {
    _slot: Option<OwnedSemaphorePermit>,
}

impl Limiter {
    /// A limiter with `limits`; the first request may go at once.
    pub fn new(province: &str, limits: Limits) -> Self {
        Self {
            province: province.to_owned(),
            rule: Some(Rule {
                interval: limits.interval(),
                next: Mutex::new(Instant::now()),
                slots: Arc::new(Semaphore::new(limits.concurrency.max(1) as usize)),
            }),
        }
    }

    /// A limiter that never waits.
    pub fn unlimited(province: &str) -> Self {
        Self {
            province: province.to_owned(),
            rule: None,
        }
    }

    /// The spacing of requests; `None` when unlimited.
    pub fn interval(&self) -> Option<Duration> {
        self.rule.as_ref().map(|r| r.interval)
    }

    /// Waits for a concurrency slot and then for this request's instant. The permit must be
    /// held until the answer is read.
    pub async fn acquire(&self) -> Permit {
        let Some(rule) = &self.rule else {
            return Permit { _slot: None };
        };
        let asked = Instant::now();
        // Only fails once the semaphore is closed, which this limiter never does.
        let slot = rule.slots.clone().acquire_owned().await.ok();
        let at = rule.reserve();
        tokio::time::sleep_until(at).await;
        // Woken late (a busy machine): the next slot not yet handed out moves too, so with one
        // request at a time our own scheduling never shows the bureau a shorter gap.
        rule.not_before(Instant::now() + rule.interval);
        crate::telemetry::limiter_wait(&self.province, asked.elapsed());
        Permit { _slot: slot }
    }

    /// After taking the bureau's lease: no credit left, the next request waits one interval
    /// from now (or longer, when one is already reserved further on). Cheap: one lock.
    pub fn hold_off(&self) {
        if let Some(rule) = &self.rule {
            rule.not_before(Instant::now() + rule.interval);
        }
    }
}

impl Rule {
    fn lock_next(&self) -> std::sync::MutexGuard<'_, Instant> {
        self.next.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// No request starts before `at`.
    fn not_before(&self, at: Instant) {
        let mut next = self.lock_next();
        *next = (*next).max(at);
    }

    /// The instant of one request, and the next one an interval later.
    fn reserve(&self) -> Instant {
        let mut next = self.lock_next();
        let at = (*next).max(Instant::now());
        *next = at + self.interval;
        at
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(requests_per_minute: u32, concurrency: u32) -> Limits {
        Limits {
            requests_per_minute,
            concurrency,
        }
    }

    /// Start offsets (from `t0`) of `n` requests taken one after another.
    async fn starts(limiter: &Limiter, n: usize, t0: Instant) -> Vec<Duration> {
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let _permit = limiter.acquire().await;
            out.push(t0.elapsed());
        }
        out
    }

    #[tokio::test(start_paused = true)]
    async fn requests_are_one_interval_apart_with_a_burst_of_one() {
        let limiter = Limiter::new("110000", limits(30, 1));
        assert_eq!(limiter.interval(), Some(Duration::from_secs(2)));
        let t0 = Instant::now();
        let got = starts(&limiter, 4, t0).await;
        let want: Vec<Duration> = [0, 2, 4, 6].map(Duration::from_secs).into();
        assert_eq!(got, want);

        // After a pause longer than an interval only one request goes at once: no saved credit.
        tokio::time::sleep(Duration::from_secs(60)).await;
        let t1 = Instant::now();
        let got = starts(&limiter, 3, t1).await;
        let want: Vec<Duration> = [0, 2, 4].map(Duration::from_secs).into();
        assert_eq!(got, want);
    }

    #[tokio::test(start_paused = true)]
    async fn parallel_callers_stay_within_the_rate_in_every_window() {
        let rpm = 120; // 500 ms apart
        let limiter = Arc::new(Limiter::new("440000", limits(rpm, 8)));
        let t0 = Instant::now();
        let tasks: Vec<_> = (0..20)
            .map(|_| {
                let limiter = limiter.clone();
                tokio::spawn(async move {
                    let _permit = limiter.acquire().await;
                    t0.elapsed()
                })
            })
            .collect();
        let mut got = Vec::new();
        for t in tasks {
            got.push(t.await.unwrap());
        }
        got.sort();
        for w in got.windows(2) {
            assert!(w[1] - w[0] >= Duration::from_millis(500), "{got:?}");
        }
        // The bound the several-instances test checks: W × rate + 1 in any window W.
        for window in [500, 1000, 3000].map(Duration::from_millis) {
            let bound = (window.as_secs_f64() * f64::from(rpm) / 60.0).floor() as usize + 1;
            for (i, start) in got.iter().enumerate() {
                let inside = got[i..].iter().filter(|t| **t - *start <= window).count();
                assert!(inside <= bound, "{inside} in {window:?} from {start:?}");
            }
        }
        // And no slower than the rate: 20 requests in 19 intervals.
        assert_eq!(got.last().copied(), Some(Duration::from_millis(19 * 500)));
    }

    #[tokio::test(start_paused = true)]
    async fn at_most_concurrency_in_flight() {
        let limiter = Arc::new(Limiter::new("310000", limits(6000, 2))); // 10 ms apart
        let in_flight = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let most = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let tasks: Vec<_> = (0..10)
            .map(|_| {
                let (limiter, in_flight, most) = (limiter.clone(), in_flight.clone(), most.clone());
                tokio::spawn(async move {
                    use std::sync::atomic::Ordering::SeqCst;
                    let _permit = limiter.acquire().await;
                    let now = in_flight.fetch_add(1, SeqCst) + 1;
                    most.fetch_max(now, SeqCst);
                    // A slow bureau: each answer takes 1 s.
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    in_flight.fetch_sub(1, SeqCst);
                })
            })
            .collect();
        let t0 = Instant::now();
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(most.load(std::sync::atomic::Ordering::SeqCst), 2);
        // Ten one-second answers two at a time: five rounds (plus the 10 ms spacing).
        assert!(t0.elapsed() >= Duration::from_secs(5), "{:?}", t0.elapsed());
        assert!(t0.elapsed() < Duration::from_secs(6), "{:?}", t0.elapsed());
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_holder_waits_one_interval_before_its_first_request() {
        let limiter = Limiter::new("650000", limits(10, 1)); // 6 s apart
        // Long idle: a fresh limiter would send at once; after taking the lease it may not.
        tokio::time::sleep(Duration::from_secs(600)).await;
        limiter.hold_off();
        let t0 = Instant::now();
        let got = starts(&limiter, 2, t0).await;
        let want: Vec<Duration> = [6, 12].map(Duration::from_secs).into();
        assert_eq!(got, want);

        // Holding off again right after a request does not shorten the reserved gap.
        limiter.hold_off();
        let t1 = Instant::now();
        let got = starts(&limiter, 1, t1).await;
        assert_eq!(got, vec![Duration::from_secs(6)]);
    }

    #[tokio::test(start_paused = true)]
    async fn two_holders_back_to_back_stay_one_interval_apart() {
        // Instance A sends until its lease ends; B takes the bureau over at once and sends.
        let interval = Duration::from_secs(3);
        let a = Limiter::new("440000", limits(20, 1));
        let b = Limiter::new("440000", limits(20, 1));
        let t0 = Instant::now();
        let mut sent = starts(&a, 3, t0).await; // 0, 3, 6
        b.hold_off(); // B takes over right after A's last request
        sent.extend(starts(&b, 3, t0).await);
        for w in sent.windows(2) {
            assert!(w[1] - w[0] >= interval, "{sent:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn unlimited_never_waits() {
        let limiter = Limiter::unlimited("110000");
        limiter.hold_off();
        let t0 = Instant::now();
        let got = starts(&limiter, 100, t0).await;
        assert!(got.iter().all(|d| d.is_zero()));
        assert_eq!(limiter.interval(), None);
    }
}
