//! How much of the origin's multicast a hub loses, measured from the gaps in
//! the ESIs it hears.
//!
//! A round sends each chunk's symbols in increasing ESI order (wrapping at
//! N_max), so the symbols heard of one chunk in one pass form a run: from the
//! first ESI heard to the last, every ESI was sent, and those not heard were
//! lost. A run ends when the multicast moves to another chunk or an ESI does
//! not increase (a wrap, a reordered datagram, a later round). Losses before a
//! run's first symbol and after its last are not seen, which reads a little
//! low; at a chunk of hundreds of symbols that is a fraction of a percent.
//!
//! Runs are weighed by how many symbols they span, and older ones fade: the
//! weight halves every [`HALF_LIFE`] symbols, so the figure follows a network
//! that gets worse (or better) within a few chunks.
//!
//! The ESIs are read from datagram headers before they are verified: a forger
//! on the multicast can move this figure, and it moves only what this hub
//! asks for (the size of the origin's resends, within N_max, and the FEC the
//! broadcaster chooses, within its `--fec-max`).

use crate::ObjectId;

/// Symbols over which a run's weight halves.
pub const HALF_LIFE: f64 = 2048.0;
/// Symbols a figure must span before it is given.
pub const MIN_SPAN: f64 = 64.0;

#[derive(Clone, Copy, Debug)]
struct Run {
    chunk: (ObjectId, u32),
    first: u32,
    last: u32,
    heard: u32,
}

impl Run {
    fn span(&self) -> f64 {
        f64::from(self.last - self.first + 1)
    }
}

#[derive(Clone, Debug, Default)]
pub struct LossMeter {
    run: Option<Run>,
    /// Decayed sums over finished runs: symbols sent, symbols heard.
    sent: f64,
    heard: f64,
}

impl LossMeter {
    /// A symbol of `chunk` with this ESI came in on the multicast.
    pub fn heard(&mut self, chunk: (ObjectId, u32), esi: u32) {
        if let Some(r) = self.run.as_mut().filter(|r| r.chunk == chunk) {
            if esi == r.last {
                return; // a copy
            }
            if esi > r.last {
                r.last = esi;
                r.heard += 1;
                return;
            }
        }
        self.finish_run();
        self.run = Some(Run { chunk, first: esi, last: esi, heard: 1 });
    }

    fn finish_run(&mut self) {
        if let Some(r) = self.run.take() {
            (self.sent, self.heard) = self.with(&r);
        }
    }

    /// The sums (sent, heard) with `r` added and the older runs faded by its span.
    fn with(&self, r: &Run) -> (f64, f64) {
        let fade = 0.5f64.powf(r.span() / HALF_LIFE);
        (self.sent * fade + r.span(), self.heard * fade + f64::from(r.heard))
    }

    /// The share of symbols lost, 0.0..=1.0, once enough have gone by.
    pub fn loss(&self) -> Option<f64> {
        let (sent, heard) = self.run.as_ref().map_or((self.sent, self.heard), |r| self.with(r));
        (sent >= MIN_SPAN).then(|| (1.0 - heard / sent).clamp(0.0, 1.0))
    }

    /// The loss in whole percent, once it is known.
    pub fn known_percent(&self) -> Option<u8> {
        self.loss().map(|l| (l * 100.0).round() as u8)
    }

    /// The loss in whole percent, for the wire: 0 until it is known.
    pub fn percent(&self) -> u8 {
        self.known_percent().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn meter_at(loss: f64, chunks: u32, k: u32, seed: u64) -> LossMeter {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut m = LossMeter::default();
        for c in 0..chunks {
            for esi in 0..k {
                if !rng.gen_bool(loss) {
                    m.heard((ObjectId([1; 32]), c), esi);
                }
            }
        }
        m
    }

    #[test]
    fn the_figure_follows_independent_loss() {
        for (loss, seed) in [(0.0, 1), (0.05, 2), (0.2, 3), (0.5, 4)] {
            let got = meter_at(loss, 20, 820, seed).loss().unwrap();
            assert!((got - loss).abs() < 0.03, "loss {loss}: measured {got}");
        }
    }

    #[test]
    fn nothing_is_said_before_enough_symbols_went_by() {
        let mut m = LossMeter::default();
        for esi in (0..40).step_by(2) {
            m.heard((ObjectId([1; 32]), 0), esi);
        }
        assert_eq!((m.loss(), m.percent()), (None, 0));
    }

    #[test]
    fn copies_wraps_and_later_rounds_are_not_loss() {
        let mut m = LossMeter::default();
        let c = (ObjectId([2; 32]), 0);
        // A round that wraps at N_max = 100: 80..100 then 0..60, every one heard,
        // one of them twice; then the next chunk, then the first chunk again.
        for esi in (80..100).chain(0..60).chain([59]) {
            m.heard(c, esi);
        }
        for esi in 0..60 {
            m.heard((ObjectId([2; 32]), 1), esi);
        }
        for esi in 60..100 {
            m.heard(c, esi);
        }
        assert_eq!(m.loss(), Some(0.0));
    }

    #[test]
    fn a_network_that_gets_worse_shows_within_a_few_chunks() {
        let mut m = meter_at(0.01, 40, 820, 5);
        let mut rng = rand::rngs::StdRng::seed_from_u64(6);
        for c in 100..110 {
            for esi in 0..820 {
                if rng.gen_bool(0.5) {
                    m.heard((ObjectId([1; 32]), c), esi);
                }
            }
        }
        let got = m.loss().unwrap();
        assert!(got > 0.4, "after 10 chunks at 50%: {got}");
    }
}
