//! A deterministic network for tests: seeded loss and latency, virtual time.
//!
//! Nodes are numbered. A multicast send delivers one copy to every member, each
//! copy lost or delayed independently; a unicast send delivers to one node.
//! Loss is independent per message, or bursty ([`Network::bursty`]): a
//! Gilbert-Elliott chain per receiving node, with the link's loss rate on
//! average and runs of losses of a given mean length, as access links lose.
//! [`Network::poll_delivery`] pops deliveries in time order (ties in send order), so a run
//! depends only on its seed. Time is an offset from the start of the run.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::Duration;

/// How one path behaves.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Link {
    /// Share of messages lost, independently.
    pub loss: f64,
    /// Fixed one-way delay.
    pub latency: Duration,
    /// Extra delay drawn uniformly from 0..jitter (reorders messages).
    pub jitter: Duration,
}

impl Link {
    pub const PERFECT: Link = Link { loss: 0.0, latency: Duration::ZERO, jitter: Duration::ZERO };
}

/// A message in flight.
#[derive(Debug)]
pub struct Delivery<M> {
    pub at: Duration,
    pub to: usize,
    pub msg: M,
}

struct Entry<M> {
    at: Duration,
    seq: u64,
    to: usize,
    msg: M,
}

impl<M> PartialEq for Entry<M> {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl<M> Eq for Entry<M> {}
impl<M> PartialOrd for Entry<M> {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl<M> Ord for Entry<M> {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(o.at, o.seq))
    }
}

/// Counters of what the network did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetStats {
    pub sent: u64,
    pub delivered: u64,
    pub lost: u64,
}

pub struct Network<M> {
    rng: ChaCha8Rng,
    now: Duration,
    seq: u64,
    queue: BinaryHeap<Reverse<Entry<M>>>,
    stats: NetStats,
    /// Bursty loss: the mean length of a run of losses, and per receiving
    /// node whether its path is in the losing state.
    burst: Option<f64>,
    losing: HashMap<usize, bool>,
}

impl<M: Clone> Network<M> {
    pub fn new(seed: u64) -> Self {
        Network {
            rng: ChaCha8Rng::seed_from_u64(seed),
            now: Duration::ZERO,
            seq: 0,
            queue: BinaryHeap::new(),
            stats: NetStats::default(),
            burst: None,
            losing: HashMap::new(),
        }
    }

    /// Make loss bursty (Gilbert-Elliott): each node's path switches between
    /// a state that delivers everything and one that loses everything, so
    /// that a link's `loss` is still the share lost on average, in runs of
    /// `mean_burst` messages on average (at least 1: 1 is independent loss's
    /// run length at low rates).
    pub fn bursty(mut self, mean_burst: f64) -> Self {
        self.burst = Some(mean_burst.max(1.0));
        self
    }

    /// Whether a message to `to` over a path losing `loss` is lost.
    fn lose(&mut self, to: usize, loss: f64) -> bool {
        let loss = loss.clamp(0.0, 1.0);
        let Some(burst) = self.burst.filter(|_| loss > 0.0 && loss < 1.0) else {
            return loss > 0.0 && self.rng.gen_bool(loss);
        };
        // Leave the losing state with 1/burst; enter it so that the share of
        // time spent there is `loss`: p / (p + r) = loss.
        let leave = 1.0 / burst;
        let enter = (loss * leave / (1.0 - loss)).min(1.0);
        let losing = self.losing.entry(to).or_insert(false);
        *losing = if *losing { !self.rng.gen_bool(leave) } else { self.rng.gen_bool(enter) };
        *losing
    }

    /// Virtual time: the time of the last delivery popped (or set by `advance_to`).
    pub fn now(&self) -> Duration {
        self.now
    }

    /// Move time forward when nothing is delivered before `t` (a sender's pacing).
    pub fn advance_to(&mut self, t: Duration) {
        self.now = self.now.max(t);
    }

    pub fn stats(&self) -> NetStats {
        self.stats
    }

    /// Send `msg` to `to` over `link`, leaving now.
    pub fn unicast(&mut self, to: usize, msg: M, link: Link) {
        self.stats.sent += 1;
        if self.lose(to, link.loss) {
            self.stats.lost += 1;
            return;
        }
        let jitter = if link.jitter.is_zero() {
            Duration::ZERO
        } else {
            self.rng.gen_range(Duration::ZERO..link.jitter)
        };
        let at = self.now + link.latency + jitter;
        self.seq += 1;
        self.queue.push(Reverse(Entry { at, seq: self.seq, to, msg }));
    }

    /// Send one copy of `msg` to each of `members`, each over its own link.
    pub fn multicast(&mut self, members: impl IntoIterator<Item = (usize, Link)>, msg: &M) {
        for (to, link) in members {
            self.unicast(to, msg.clone(), link);
        }
    }

    /// When the next delivery is due, if any.
    pub fn next_at(&self) -> Option<Duration> {
        self.queue.peek().map(|Reverse(e)| e.at)
    }

    /// The next delivery, advancing time to it.
    pub fn poll_delivery(&mut self) -> Option<Delivery<M>> {
        let Reverse(e) = self.queue.pop()?;
        self.now = self.now.max(e.at);
        self.stats.delivered += 1;
        Some(Delivery { at: e.at, to: e.to, msg: e.msg })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_run_and_loss_is_near_its_rate() {
        let run = |seed| {
            let mut net: Network<u32> = Network::new(seed);
            let link =
                Link { loss: 0.1, latency: Duration::from_millis(5), jitter: Duration::from_millis(3) };
            for i in 0..10_000 {
                net.multicast((0..3).map(|n| (n, link)), &i);
            }
            let mut order = Vec::new();
            while let Some(d) = net.poll_delivery() {
                order.push((d.at, d.to, d.msg));
            }
            (order, net.stats())
        };
        let (a, stats) = run(7);
        assert_eq!(a, run(7).0, "deterministic");
        assert_ne!(a, run(8).0);
        let lost = stats.lost as f64 / stats.sent as f64;
        assert!((0.09..0.11).contains(&lost), "{lost}");
        assert!(a.windows(2).all(|w| w[0].0 <= w[1].0), "in time order");
    }

    #[test]
    fn bursty_loss_keeps_its_rate_and_loses_in_runs_of_the_mean_length() {
        let link = Link { loss: 0.2, ..Link::PERFECT };
        for burst in [1.0, 4.0, 10.0] {
            let mut net: Network<u32> = Network::new(3).bursty(burst);
            let mut runs = Vec::new();
            let mut run = 0;
            for i in 0..200_000 {
                let before = net.stats().lost;
                net.unicast(0, i, link);
                if net.stats().lost > before {
                    run += 1;
                } else if run > 0 {
                    runs.push(run);
                    run = 0;
                }
            }
            let lost = net.stats().lost as f64 / net.stats().sent as f64;
            let mean = runs.iter().sum::<u32>() as f64 / runs.len() as f64;
            assert!((0.19..0.21).contains(&lost), "burst {burst}: loss {lost}");
            assert!((mean - burst).abs() < burst * 0.1, "burst {burst}: runs of {mean} on average");
        }
        // Each node's path has its own state.
        let mut net: Network<u32> = Network::new(4).bursty(8.0);
        for i in 0..10_000 {
            net.multicast((0..2).map(|n| (n, link)), &i);
        }
        let mut got = [Vec::new(), Vec::new()];
        while let Some(d) = net.poll_delivery() {
            got[d.to].push(d.msg);
        }
        assert_ne!(got[0], got[1], "the two paths lose different messages");
    }
}
