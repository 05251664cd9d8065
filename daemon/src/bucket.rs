use std::time::{Duration, Instant};

/// A token bucket: `rate` tokens per second, bursts of one second's worth. For
/// per-peer request limits and upload caps.
///
/// Time is an argument (`*_at`), so it runs on any clock; the plain methods
/// read [`Instant::now`].
pub struct Bucket {
    rate: f64,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    pub fn new(rate: f64) -> Self {
        Self::new_at(rate, Instant::now())
    }

    /// A full bucket at `now`.
    pub fn new_at(rate: f64, now: Instant) -> Self {
        Bucket { rate, tokens: rate, at: now }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.rate);
        self.at = self.at.max(now);
    }

    /// Tokens per second.
    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// How long taking `n` tokens would wait, without taking them.
    pub fn wait_for(&mut self, n: f64) -> Duration {
        self.wait_for_at(n, Instant::now())
    }

    pub fn wait_for_at(&mut self, n: f64, now: Instant) -> Duration {
        self.refill(now);
        if self.tokens >= n {
            Duration::ZERO
        } else {
            Duration::from_secs_f64((n - self.tokens) / self.rate)
        }
    }

    /// Take `n` tokens; how long to wait first (zero when they are there).
    pub fn take(&mut self, n: f64) -> Duration {
        self.take_at(n, Instant::now())
    }

    pub fn take_at(&mut self, n: f64, now: Instant) -> Duration {
        self.refill(now);
        self.tokens -= n;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.rate)
        }
    }

    /// Take one token if there is one.
    pub fn try_take(&mut self) -> bool {
        self.try_take_at(Instant::now())
    }

    pub fn try_take_at(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Virtual time: every figure is exact, whatever the machine does.
    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn the_upload_bucket_paces_at_its_rate() {
        let t0 = Instant::now();
        let mut b = Bucket::new_at(1000.0, t0);
        assert_eq!(b.take_at(1000.0, t0), Duration::ZERO, "a second's burst");
        // 500 tokens short, less the 100 that trickled in over 100 ms.
        assert_eq!(b.take_at(500.0, t0 + 100 * MS), 400 * MS);
        // The debt is paid at the rate: 400 ms later the bucket is empty, not short.
        assert_eq!(b.wait_for_at(0.0, t0 + 500 * MS), Duration::ZERO);
        assert_eq!(b.wait_for_at(1.0, t0 + 500 * MS), MS);
    }

    #[test]
    fn a_burst_is_one_seconds_worth_however_long_the_bucket_idles() {
        let t0 = Instant::now();
        let mut b = Bucket::new_at(1000.0, t0);
        let later = t0 + Duration::from_secs(3600);
        assert_eq!(b.take_at(1000.0, later), Duration::ZERO);
        assert_eq!(b.take_at(1.0, later), MS);
    }

    #[test]
    fn asking_how_long_takes_nothing() {
        let t0 = Instant::now();
        let mut b = Bucket::new_at(1000.0, t0);
        assert_eq!(b.wait_for_at(1000.0, t0), Duration::ZERO);
        assert_eq!(b.wait_for_at(1500.0, t0), 500 * MS);
        assert_eq!(b.take_at(1000.0, t0), Duration::ZERO, "the burst is still there");
        assert_eq!(b.wait_for_at(1.0, t0), MS);
    }

    #[test]
    fn one_token_at_a_time_at_the_rate() {
        let t0 = Instant::now();
        let mut b = Bucket::new_at(2.0, t0);
        assert!(b.try_take_at(t0) && b.try_take_at(t0));
        assert!(!b.try_take_at(t0), "the burst is spent");
        assert!(!b.try_take_at(t0 + 499 * MS));
        assert!(b.try_take_at(t0 + 500 * MS), "one token per 500 ms");
        // A clock read out of order (an earlier instant) neither adds nor panics.
        assert!(!b.try_take_at(t0));
    }
}
