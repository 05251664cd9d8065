use std::time::{Duration, Instant};

/// A token bucket: `rate` tokens per second, bursts of one second's worth. For
/// per-peer request limits and upload caps.
pub struct Bucket {
    rate: f64,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    pub fn new(rate: f64) -> Self {
        Bucket { rate, tokens: rate, at: Instant::now() }
    }

    fn refill(&mut self) {
        let now = Instant::now();
        self.tokens = (self.tokens + now.duration_since(self.at).as_secs_f64() * self.rate).min(self.rate);
        self.at = now;
    }

    /// Tokens per second.
    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// How long taking `n` tokens would wait, without taking them.
    pub fn wait_for(&mut self, n: f64) -> Duration {
        self.refill();
        if self.tokens >= n {
            Duration::ZERO
        } else {
            Duration::from_secs_f64((n - self.tokens) / self.rate)
        }
    }

    /// Take `n` tokens; how long to wait first (zero when they are there).
    pub fn take(&mut self, n: f64) -> Duration {
        self.refill();
        self.tokens -= n;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.rate)
        }
    }

    /// Take one token if there is one.
    pub fn try_take(&mut self) -> bool {
        self.refill();
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

    #[test]
    fn the_upload_bucket_paces_at_its_rate() {
        let mut b = Bucket::new(1000.0);
        assert_eq!(b.take(1000.0), Duration::ZERO, "a second's burst");
        let wait = b.take(500.0);
        // 500 tokens short, less what trickled in between the two calls.
        assert!(wait > Duration::ZERO && wait <= Duration::from_millis(500), "{wait:?}");
    }

    #[test]
    fn asking_how_long_takes_nothing() {
        let mut b = Bucket::new(1000.0);
        assert_eq!(b.wait_for(1000.0), Duration::ZERO);
        assert!(b.wait_for(1500.0) > Duration::ZERO);
        assert_eq!(b.take(1000.0), Duration::ZERO, "the burst is still there");
        assert!(b.wait_for(1.0) > Duration::ZERO);
    }
}
