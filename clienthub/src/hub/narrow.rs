//! The testing aid `--simulate-narrow`.

use std::time::{Duration, Instant};

/// The testing aid `--simulate-narrow`: a path this many bytes a second
/// wide, with a router's queue of [`NARROW_QUEUE`] of it; beyond, dropped.
pub(super) struct Narrow {
    rate: f64,
    tokens: f64,
    at: Option<Instant>,
}

/// The narrow path's queue, as time at its rate.
const NARROW_QUEUE: Duration = Duration::from_millis(20);

impl Narrow {
    pub(super) fn new(bytes_per_sec: u64) -> Narrow {
        Narrow { rate: bytes_per_sec as f64, tokens: 0.0, at: None }
    }

    /// Whether a datagram of `len` bytes gets through at `now`.
    pub(super) fn passes(&mut self, now: Instant, len: usize) -> bool {
        let cap = self.rate * NARROW_QUEUE.as_secs_f64();
        let dt =
            self.at.map_or(NARROW_QUEUE.as_secs_f64(), |t| now.saturating_duration_since(t).as_secs_f64());
        self.tokens = (self.tokens + dt * self.rate).min(cap);
        self.at = Some(now);
        let ok = self.tokens >= len as f64;
        if ok {
            self.tokens -= len as f64;
        }
        ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn twice_the_width_passes_half() {
        let t0 = Instant::now();
        let mut path = Narrow::new(1_000_000);
        // 2 MB/s offered for a second: 1,000 bytes every 0.5 ms.
        let passed = (0..2000u64).filter(|i| path.passes(t0 + Duration::from_micros(500 * i), 1000)).count();
        // A second at the width, and the queue's 20 ms.
        assert!((1000..=1021).contains(&passed), "{passed}");
    }
}
