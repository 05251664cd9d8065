//! `--rate auto`: the carousel's rate from whether the hubs keep up, sans IO.
//!
//! - **The signal is keeping up, not loss.** FEC and repair absorb loss, and
//!   a lower rate does not lower a link's random loss: a channel of hubs at
//!   20% loss should go as fast as one at 0%. A hub is *behind*
//!   ([`BehindMeter`]) when what it still misses after the carousel passed
//!   (its repair backlog) grew in each of the last [`GROWTH_ROUNDS`] rounds
//!   by at least [`GROWTH_MIN`] bytes (its peers and the origin do not fill
//!   its gaps as fast as they open), or when its own receive path overflows
//!   (the daemon says so: its store queue past half, the kernel dropping).
//!   A slow hub whose peers repair what it misses is not behind, so it does
//!   not drag the channel down to its own speed. A hub is also *congested*
//!   when its loss rose [`LOSS_RISE`] points above its lowest of the last
//!   rounds: what ends slow start a round after the rate passes a path's
//!   width, before any backlog shows. And it reports its lowest loss, not
//!   the round's, for the FEC ([`BehindMeter::fec_loss`]).
//! - **The law.** The broadcaster ([`RateControl`]) works in the rounds of
//!   the loss feedback ([`crate::feedback::ROUND`]). It starts at the start
//!   rate and doubles each round no hub is behind or congested (slow start).
//!   At the first round one is, it goes back to the lowest rate of the last
//!   [`GROWTH_ROUNDS`] + 1 rounds (the hubs' backlog shows a rate that late)
//!   times [`DECREASE`]; from then on a round a hub is behind multiplies the
//!   rate by [`DECREASE`] and a round none is by [`INCREASE`]. After a
//!   change the rate holds for [`HOLD_ROUNDS`] rounds, since its effect
//!   shows in the backlogs a round or two later. Always within the
//!   operator's `--rate-min` and `--rate-max`.
//!
//! Additive increase would settle closer; it also takes minutes to climb
//! from 100 Mbit/s to 1 Gbit/s after a loss of the path. Multiplicative
//! steps of 5% up and 15% down keep the sawtooth within about 20% of its
//! top (figures in docs/DECISIONS.md, from the test below).

use std::collections::VecDeque;

/// Rounds in a row the backlog must grow to count a hub behind.
pub const GROWTH_ROUNDS: usize = 2;
/// Growth of the backlog in a round, bytes, below which it is noise (two
/// full chunks: a chunk more or less waiting is the carousel's grain).
pub const GROWTH_MIN: u64 = 2 << 20;
/// The rate's factor in a round some hub is behind.
pub const DECREASE: f64 = 0.85;
/// The rate's factor in a round none is (past slow start).
pub const INCREASE: f64 = 1.05;
/// Rounds the rate holds after a change.
pub const HOLD_ROUNDS: u32 = 2;

/// Rounds over which a hub's lowest loss is the loss it reports for the FEC.
pub const BASELINE_ROUNDS: usize = 8;
/// Points of loss above that lowest that say the path is too narrow for the
/// rate: what ends slow start (a round's loss wanders by a point or two).
pub const LOSS_RISE: u8 = 3;

/// What a hub says of a round ([`BehindMeter::end_round`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Verdict {
    /// It does not keep up: its backlog grows, or its receive path overflows.
    pub behind: bool,
    /// Its loss rose [`LOSS_RISE`] points or more above its lowest: the rate
    /// is past what its path takes (its peers may still repair the rest).
    pub congested: bool,
}

impl Verdict {
    /// Neither.
    pub fn is_clear(self) -> bool {
        !self.behind && !self.congested
    }

    /// Says nothing `heard` does not already say.
    pub fn covered_by(self, heard: Verdict) -> bool {
        (!self.behind || heard.behind) && (!self.congested || heard.congested)
    }

    /// On the wire: bit 0 behind, bit 1 congested.
    pub fn bits(self) -> u8 {
        u8::from(self.behind) | u8::from(self.congested) << 1
    }

    /// `None` when other bits are set.
    pub fn from_bits(b: u8) -> Option<Verdict> {
        (b & !3 == 0).then_some(Verdict { behind: b & 1 != 0, congested: b & 2 != 0 })
    }
}

/// The hub's side: is it keeping up, and what loss should the FEC cover?
/// Fed once a feedback round.
#[derive(Clone, Debug, Default)]
pub struct BehindMeter {
    last: Option<u64>,
    /// Rounds in a row the backlog grew by at least [`GROWTH_MIN`].
    growing: usize,
    /// The loss of the last rounds, whole percent, newest last.
    losses: VecDeque<u8>,
    /// Rounds left in which this hub's loss is the narrow path's, not the
    /// FEC's: it was congested within the last [`BASELINE_ROUNDS`].
    narrow_rounds: usize,
}

impl BehindMeter {
    /// A round ended with `backlog` bytes missed and not yet repaired, and
    /// `loss` measured in it; `overflowing`: the hub's receive path dropped
    /// or is near its bound.
    pub fn end_round(&mut self, backlog: u64, loss: Option<u8>, overflowing: bool) -> Verdict {
        let grew = self.last.is_some_and(|last| backlog >= last.saturating_add(GROWTH_MIN));
        self.growing = if grew { self.growing + 1 } else { 0 };
        self.last = Some(backlog);
        let congested = match (loss, self.lowest()) {
            (Some(now), Some(low)) => now >= low.saturating_add(LOSS_RISE),
            _ => false,
        };
        self.narrow_rounds = if congested { BASELINE_ROUNDS } else { self.narrow_rounds.saturating_sub(1) };
        if let Some(loss) = loss {
            self.losses.push_back(loss);
            if self.losses.len() > BASELINE_ROUNDS {
                self.losses.pop_front();
            }
        }
        Verdict { behind: overflowing || self.growing >= GROWTH_ROUNDS, congested }
    }

    /// The loss the FEC should cover: the lowest of the last
    /// [`BASELINE_ROUNDS`], and none while the hub was congested within
    /// them. Loss that comes and goes with the rate (a path too narrow for
    /// it) is the rate control's to remove, and its peers' to repair: an FEC
    /// sized for it makes every hub pay for one hub's path (in this module's
    /// model the rate settled at 1.4 × the narrow path with 47% FEC when hubs
    /// reported their loss of the round; in the lab, a host behind 100 Mbit/s
    /// whose first rounds were all above its width held the FEC at its
    /// maximum with the lowest loss alone, and the origin sent 2.08 × the file).
    /// `None` before two rounds: a lowest of one round says nothing.
    pub fn fec_loss(&self) -> Option<u8> {
        if self.losses.len() < 2 {
            return None;
        }
        if self.narrow_rounds > 0 {
            return Some(0);
        }
        self.lowest()
    }

    /// The lowest loss of the last [`BASELINE_ROUNDS`].
    fn lowest(&self) -> Option<u8> {
        self.losses.iter().copied().min()
    }
}

/// The broadcaster's side: the rate, from rounds with and without a hub
/// behind.
#[derive(Clone, Debug)]
pub struct RateControl {
    min: u64,
    max: u64,
    rate: u64,
    slow_start: bool,
    hold: u32,
    /// The rates of the last rounds, newest last.
    recent: VecDeque<u64>,
    /// Some hub said it is behind this round.
    behind: bool,
    /// Some hub said its path is too narrow this round.
    congested: bool,
}

impl RateControl {
    /// Rates in bytes per second; `start` is clamped into `min..=max`.
    pub fn new(start: u64, min: u64, max: u64) -> Self {
        let (min, max) = (min.max(1), max.max(min.max(1)));
        let rate = start.clamp(min, max);
        RateControl {
            min,
            max,
            rate,
            slow_start: true,
            hold: 0,
            recent: VecDeque::from([rate]),
            behind: false,
            congested: false,
        }
    }

    /// The rate to send at now, bytes per second.
    pub fn rate(&self) -> u64 {
        self.rate
    }

    /// Still doubling each round.
    pub fn in_slow_start(&self) -> bool {
        self.slow_start
    }

    /// A hub said what it made of a round.
    pub fn handle_verdict(&mut self, v: Verdict) {
        self.behind |= v.behind;
        self.congested |= v.congested;
    }

    /// What hubs said this round so far: a hub whose verdict this covers
    /// need not report (what the echo tells hubs, to keep them quiet).
    pub fn this_round(&self) -> Verdict {
        Verdict { behind: self.behind, congested: self.congested }
    }

    /// A feedback round ended: set the rate for the next one. In slow start
    /// a congested hub ends it too; past it, only a hub behind lowers the
    /// rate (a congested one whose peers repair it keeps up).
    pub fn end_round(&mut self) -> u64 {
        let congested = std::mem::take(&mut self.congested);
        let behind = std::mem::take(&mut self.behind) || (self.slow_start && congested);
        if self.hold > 0 {
            self.hold -= 1;
        } else if behind {
            let from = if self.slow_start {
                self.slow_start = false;
                self.recent.iter().copied().min().unwrap_or(self.rate)
            } else {
                self.rate
            };
            self.set((from as f64 * DECREASE) as u64);
        } else if self.rate < self.max {
            let factor = if self.slow_start { 2.0 } else { INCREASE };
            self.set((self.rate as f64 * factor).ceil() as u64);
        }
        self.recent.push_back(self.rate);
        if self.recent.len() > GROWTH_ROUNDS + 1 {
            self.recent.pop_front();
        }
        self.rate
    }

    fn set(&mut self, rate: u64) {
        let rate = rate.clamp(self.min, self.max);
        if rate != self.rate {
            self.hold = if self.slow_start { 0 } else { HOLD_ROUNDS };
            self.rate = rate;
        }
    }
}

#[cfg(test)]
mod tests;
