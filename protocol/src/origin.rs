//! The origin's repair, sans IO: NAKs from hubs that no peer could serve,
//! gathered per chunk and answered once, on multicast, with fresh symbols.
//!
//! - **Gather.** The first NAK for a chunk opens a window of
//!   [`OriginConfig::gather`]; NAKs for the same chunk within it merge (the
//!   resend carries the most any of them asked for).
//! - **Sized for the loss.** Each NAK carries its hub's multicast loss; the
//!   resend carries enough symbols that the worst-off asker of the window
//!   receives what it lacks with about 98% odds ([`resend_size`]), so a lossy
//!   island is not repaired one halving at a time.
//! - **Once.** While a resend waits to go out (the owner paces resends, and at
//!   heavy loss many hubs' resends queue for seconds), every NAK for its chunk
//!   is late: the hubs ask again on their retry timer, and each of those
//!   retries had made one more resend of the same chunk (at 50% loss and
//!   256 chunks, the origin sent 12 × the file). Once it is out
//!   ([`OriginRepair::handle_sent`]), NAKs for that chunk that ask for no more
//!   than was sent are late copies (they left before the repair reached
//!   their hub) for [`OriginConfig::holdoff`], and are dropped. A hub whose
//!   copy of the repair was lost asks again after its own retry delay, which
//!   is longer.
//! - **Fresh.** A resend carries ESIs counted down from N_max − 1, below those of
//!   earlier resends of the chunk, so they are new to every hub whatever each one
//!   lost, and a hub that lost symbols of one resend gains from the next. Past
//!   the repair ESIs the count goes on down through the source ESIs (a hub that
//!   lost what it had collected of a chunk, evicted, needs up to K), and wraps
//!   at N_max only then.
//! - **Bounded.** At most [`OriginConfig::max_pending`] chunks wait; NAKs beyond
//!   get [`NakVerdict::Full`] (the hub hears "over a limit" and waits for the
//!   carousel). Chunks resent are remembered for [`OriginConfig::remember`], at
//!   most [`OriginConfig::max_remembered`] of them.
//!
//! The owner validates a NAK against its plans (known object, chunk in range,
//! missing ≤ K) before [`OriginRepair::handle_nak`], takes resends out with
//! [`OriginRepair::poll_resend`] and paces their datagrams at the origin's repair
//! rate.

use crate::ObjectId;
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

type ChunkKey = (ObjectId, u32);

#[derive(Clone, Debug)]
pub struct OriginConfig {
    /// How long NAKs for one chunk are gathered. Default 100 ms.
    pub gather: Duration,
    /// After a resend, NAKs asking for no more are late copies. Default 500 ms
    /// (below the hubs' 2 s NAK retry).
    pub holdoff: Duration,
    /// Symbols sent beyond what the loss calls for (RaptorQ's margin, as
    /// peer repair asks K + 1). Default 1.
    pub extra: u32,
    /// Chunks waiting at once. Default 4096.
    pub max_pending: usize,
    /// How long a resent chunk's fresh-ESI position is kept. Default 60 s.
    pub remember: Duration,
    /// Resent chunks remembered at once. Default 65 536.
    pub max_remembered: usize,
}

impl Default for OriginConfig {
    fn default() -> Self {
        OriginConfig {
            gather: Duration::from_millis(100),
            holdoff: Duration::from_millis(500),
            extra: 1,
            max_pending: 4096,
            remember: Duration::from_secs(60),
            max_remembered: 65_536,
        }
    }
}

/// A hub's NAK, checked against the origin's plans: the chunk exists, K and
/// N_max are the chunk's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OriginNak {
    pub object_id: ObjectId,
    pub index: u32,
    /// Symbols the hub lacks to decode.
    pub missing: u32,
    /// The hub's multicast loss, whole percent (0: not known).
    pub loss: u8,
    pub k: u32,
    pub n_max: u32,
    /// Symbols the carousel sends of the chunk in a round (ESIs from 0 up in
    /// the first): a resend's ESIs below it repeat what hubs may hold. 0:
    /// not known (every resend ESI is taken as fresh).
    pub sent: u32,
    /// The ESIs the hub holds, bit e = ESI e, LSB first: taken when it is
    /// ceil(N_max / 8) bytes long (otherwise, or empty, not known).
    pub held: Vec<u8>,
}

/// Highest loss a resend is sized for: past it, a resend would be mostly
/// waste, and the hub asks again for what is still missing.
pub const MAX_SIZED_LOSS: f64 = 0.9;
/// How many standard deviations of the binomial loss a resend covers (2:
/// about 98% of askers decode from it).
const RESEND_Z: f64 = 2.0;

/// Symbols to send so that a hub losing `loss` of them still gets `missing`
/// with about 98% odds: the smallest n with n·q − z·√(n·p·q) ≥ missing
/// (q = 1 − p), plus `extra`. With no loss known, `missing + extra`.
pub fn resend_size(missing: u32, loss: f64, extra: u32) -> u32 {
    let p = loss.clamp(0.0, MAX_SIZED_LOSS);
    if p <= 0.0 {
        return missing.saturating_add(extra);
    }
    let q = 1.0 - p;
    let spread = RESEND_Z * (p * q).sqrt() / 2.0;
    // √n solves q·x² − z·√(pq)·x − missing = 0.
    let x = (spread + (spread * spread + q * f64::from(missing)).sqrt()) / q;
    ((x * x).ceil() as u32).saturating_add(extra)
}

/// [`resend_size`] when only the `fresh` ESIs at the top of the resend are
/// new to every hub and the rest repeat symbols the carousel sent, of which
/// the asker lacks the share `new`: a repeated ESI gains it a symbol with
/// odds `new` × (1 − loss), not 1 − loss. (A hub that lost a chunk's every
/// copy lacks them all; one that lost half of a round holding 0.75 K of the
/// 1.5 K sent lacks half.) The smallest n whose gain, less two standard
/// deviations, covers `missing`, plus `extra`; at most `cap`.
pub fn resend_size_over(missing: u32, loss: f64, extra: u32, fresh: u32, new: f64, cap: u32) -> u32 {
    let within = resend_size(missing, loss, extra);
    let p = loss.clamp(0.0, MAX_SIZED_LOSS);
    if within <= fresh || p <= 0.0 {
        return within.min(cap);
    }
    let q = 1.0 - p;
    let r = q * new.clamp(0.0, 1.0);
    let (f, want) = (f64::from(fresh), f64::from(missing));
    for n in fresh..cap {
        let repeats = f64::from(n - fresh);
        let mean = f * q + repeats * r;
        let var = f * p * q + repeats * r * (1.0 - r);
        if mean - RESEND_Z * var.sqrt() >= want {
            return n.saturating_add(extra).min(cap);
        }
    }
    cap
}

/// What became of a NAK.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NakVerdict {
    /// It opened a gather window for its chunk.
    Queued,
    /// Its chunk was already waiting: the resend will carry enough for it.
    Merged,
    /// Its chunk was just resent with at least what it asks: a late copy.
    Late,
    /// Too many chunks are waiting.
    Full,
}

/// Fresh symbols of one chunk to send on multicast.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resend {
    pub object_id: ObjectId,
    pub index: u32,
    /// Increasing, all below N_max.
    pub esis: Vec<u32>,
    /// NAKs this resend answers.
    pub naks: u32,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OriginStats {
    pub naks: u64,
    pub merged: u64,
    pub late: u64,
    pub refused_full: u64,
    /// Chunk resends.
    pub resends: u64,
    /// Resends of a chunk already resent (a hub lost the first): 0 in a clean run.
    pub resent_again: u64,
    pub symbols: u64,
    /// The worst loss the last resend was sized for, whole percent.
    pub last_loss: u8,
}

struct Pending {
    since: Instant,
    missing: u32,
    /// The worst loss among the window's askers, whole percent.
    loss: u8,
    n_max: u32,
    /// What the carousel sends of the chunk in a round (see [`OriginNak::sent`]).
    sent: u32,
    k: u32,
    naks: u32,
    /// Per ESI, how many of the window's askers that said what they hold
    /// lack it (empty: none said).
    lacked: Vec<u8>,
}

impl Pending {
    /// Count what an asker lacks, from the held-ESI bitmap of its NAK.
    fn note_held(&mut self, held: &[u8]) {
        if held.len() != self.n_max.div_ceil(8) as usize {
            return;
        }
        if self.lacked.is_empty() {
            self.lacked = vec![0; self.n_max as usize];
        }
        for (e, n) in self.lacked.iter_mut().enumerate() {
            if held[e / 8] & (1 << (e % 8)) == 0 {
                *n = n.saturating_add(1);
            }
        }
    }
}

struct Sent {
    /// When it went out; `None` while it waits to.
    at: Option<Instant>,
    count: u32,
    /// ESIs used from the top of the chunk's N_max.
    used: u32,
}

pub struct OriginRepair {
    config: OriginConfig,
    pending: HashMap<ChunkKey, Pending>,
    /// Pending chunks in the order their windows opened.
    order: VecDeque<ChunkKey>,
    sent: HashMap<ChunkKey, Sent>,
    sent_order: VecDeque<(Instant, ChunkKey)>,
    stats: OriginStats,
}

impl OriginRepair {
    pub fn new(config: OriginConfig) -> Self {
        OriginRepair {
            config,
            pending: HashMap::new(),
            order: VecDeque::new(),
            sent: HashMap::new(),
            sent_order: VecDeque::new(),
            stats: OriginStats::default(),
        }
    }

    pub fn stats(&self) -> OriginStats {
        self.stats
    }

    /// A hub lacks `nak.missing` symbols of a chunk.
    pub fn handle_nak(&mut self, now: Instant, nak: OriginNak) -> NakVerdict {
        let OriginNak { object_id, index, missing, loss, k, n_max, sent, held } = nak;
        self.stats.naks += 1;
        let key = (object_id, index);
        let missing = missing.min(k);
        let loss = loss.min(100);
        if let Some(p) = self.pending.get_mut(&key) {
            p.missing = p.missing.max(missing);
            p.loss = p.loss.max(loss);
            p.sent = p.sent.max(sent);
            p.naks += 1;
            p.note_held(&held);
            self.stats.merged += 1;
            return NakVerdict::Merged;
        }
        let just_sent = self.sent.get(&key).is_some_and(|s| match s.at {
            None => true,
            Some(at) => {
                now.saturating_duration_since(at) < self.config.holdoff
                    && missing + self.config.extra <= s.count
            }
        });
        if just_sent {
            self.stats.late += 1;
            return NakVerdict::Late;
        }
        if self.pending.len() >= self.config.max_pending {
            self.stats.refused_full += 1;
            return NakVerdict::Full;
        }
        let mut p = Pending { since: now, missing, loss, n_max, sent, k, naks: 1, lacked: Vec::new() };
        p.note_held(&held);
        self.pending.insert(key, p);
        self.order.push_back(key);
        NakVerdict::Queued
    }

    /// The last datagram of a chunk's resend went out: the holdoff counts
    /// from now. Until then every NAK for the chunk is late.
    pub fn handle_sent(&mut self, now: Instant, object_id: ObjectId, index: u32) {
        if let Some(s) = self.sent.get_mut(&(object_id, index)) {
            s.at = Some(now);
        }
    }

    /// When the next gather window closes.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let key = self.order.front()?;
        self.pending.get(key).map(|p| p.since + self.config.gather)
    }

    /// The next chunk whose gather window has closed.
    pub fn poll_resend(&mut self, now: Instant) -> Option<Resend> {
        self.forget_old(now);
        let key = *self.order.front()?;
        let p = self.pending.get(&key)?;
        if now < p.since + self.config.gather {
            return None;
        }
        self.order.pop_front();
        let p = self.pending.remove(&key)?;
        // The multicast rounds send from ESI 0 up; fresh symbols come down from
        // the top, below the earlier resends: the repair ESIs, then the source
        // ESIs, wrapping at N_max. (Wrapping at K instead repeated the same
        // repair ESIs forever to a hub that needed more than N_max − K.)
        // Past the carousel's ESIs every symbol is new to every hub; among
        // them, only to the hubs that lost it (a high FEC leaves few fresh).
        let loss = f64::from(p.loss) / 100.0;
        let previous = self.sent.get(&key).map(|s| s.used);
        if !p.lacked.is_empty() {
            // The askers said what they hold: send what most of them lack,
            // each symbol new to them, sized for the loss alone.
            let count = resend_size(p.missing, loss, self.config.extra).min(p.n_max).max(1);
            let mut wanted: Vec<u32> = (0..p.n_max).filter(|e| p.lacked[*e as usize] > 0).collect();
            wanted.sort_by_key(|e| (std::cmp::Reverse(p.lacked[*e as usize]), std::cmp::Reverse(*e)));
            wanted.truncate(count as usize);
            wanted.sort_unstable();
            let count = wanted.len() as u32;
            return Some(self.record(now, key, &p, previous, count, previous.unwrap_or(0), wanted));
        }
        let mut used = previous.unwrap_or(0);
        // The neediest asker holds K + 1 − missing, most of them of the
        // carousel's symbols: it lacks the rest of those.
        let held = (p.k + 1).saturating_sub(p.missing);
        let new = if p.sent == 0 { 1.0 } else { 1.0 - f64::from(held.min(p.sent)) / f64::from(p.sent) };
        let fresh = |used: u32| (p.n_max - used).saturating_sub(p.sent);
        let size =
            |used| resend_size_over(p.missing, loss, self.config.extra, fresh(used), new, p.n_max).max(1);
        // What is left below the earlier resends serves while it holds at
        // least the ask (a resend sized past it is cut to it: the hub asks
        // again for what is still missing); past that, the count wraps.
        let mut count = size(used).min(p.n_max - used);
        if count < p.missing + self.config.extra {
            used = 0;
            count = size(used);
        }
        let top = p.n_max - used; // exclusive
        let esis: Vec<u32> = (top - count..top).collect();
        Some(self.record(now, key, &p, previous, count, used + count, esis))
    }

    /// Remember a resend of `count` symbols (`used` of the top ESIs now
    /// spent), count it, and hand it out.
    #[allow(clippy::too_many_arguments)]
    fn record(
        &mut self,
        now: Instant,
        key: ChunkKey,
        p: &Pending,
        previous: Option<u32>,
        count: u32,
        used: u32,
        esis: Vec<u32>,
    ) -> Resend {
        if previous.is_some() {
            self.stats.resent_again += 1;
        } else {
            while self.sent.len() >= self.config.max_remembered {
                let Some((_, old)) = self.sent_order.pop_front() else { break };
                self.sent.remove(&old);
            }
            self.sent_order.push_back((now, key));
        }
        self.sent.insert(key, Sent { at: None, count, used });
        self.stats.resends += 1;
        self.stats.symbols += u64::from(count);
        self.stats.last_loss = p.loss;
        Resend { object_id: key.0, index: key.1, esis, naks: p.naks }
    }

    fn forget_old(&mut self, now: Instant) {
        while let Some((at, key)) = self.sent_order.front().copied() {
            if now.saturating_duration_since(at) < self.config.remember {
                break;
            }
            self.sent_order.pop_front();
            // A chunk resent again since keeps its place by its first resend;
            // forgetting it only means its next resend may repeat ESIs.
            self.sent.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const K: u32 = 100;
    const N_MAX: u32 = K + K / 2 + 16;

    fn id(n: u8) -> ObjectId {
        ObjectId([n; 32])
    }

    /// A NAK from a hub whose loss is not known yet.
    fn nak(object: u8, index: u32, missing: u32) -> OriginNak {
        OriginNak {
            object_id: id(object),
            index,
            missing,
            loss: 0,
            k: K,
            n_max: N_MAX,
            sent: 0,
            held: Vec::new(),
        }
    }

    #[test]
    fn three_hubs_missing_the_same_chunk_get_one_resend_of_the_largest_ask() {
        let mut o = OriginRepair::new(OriginConfig::default());
        let t0 = Instant::now();
        assert_eq!(o.handle_nak(t0, nak(1, 4, 7)), NakVerdict::Queued);
        assert_eq!(o.handle_nak(t0 + Duration::from_millis(30), nak(1, 4, 12)), NakVerdict::Merged);
        assert_eq!(o.handle_nak(t0 + Duration::from_millis(60), nak(1, 4, 3)), NakVerdict::Merged);
        assert_eq!(o.poll_resend(t0 + Duration::from_millis(99)), None, "still gathering");
        assert_eq!(o.poll_timeout(), Some(t0 + Duration::from_millis(100)));
        let r = o.poll_resend(t0 + Duration::from_millis(100)).unwrap();
        assert_eq!((r.index, r.naks, r.esis.len()), (4, 3, 13), "largest ask plus one");
        assert_eq!(r.esis, (N_MAX - 13..N_MAX).collect::<Vec<_>>(), "fresh, from the top");
        assert_eq!(o.poll_resend(t0 + Duration::from_secs(1)), None);
        // A straggler that left before the repair arrived is a late copy.
        let late = o.handle_nak(t0 + Duration::from_millis(300), nak(1, 4, 12));
        assert_eq!(late, NakVerdict::Late);
        let s = o.stats();
        assert_eq!((s.naks, s.merged, s.late, s.resends, s.resent_again, s.symbols), (4, 2, 1, 1, 0, 13));
    }

    #[test]
    fn while_a_resend_waits_to_go_out_every_nak_for_its_chunk_is_late_and_the_holdoff_runs_from_when_it_went()
    {
        let mut o = OriginRepair::new(OriginConfig::default());
        let t0 = Instant::now();
        o.handle_nak(t0, nak(1, 4, 20));
        let r = o.poll_resend(t0 + Duration::from_millis(100)).unwrap();
        // The pacer's queue holds it for 6 s; the hub retries every 2 s, and
        // asks for more than the resend carries once.
        for (s, missing) in [(2, 20), (4, 60), (6, 20)] {
            let t = t0 + Duration::from_secs(s);
            assert_eq!(o.handle_nak(t, nak(1, 4, missing)), NakVerdict::Late, "{s} s: still queued");
        }
        let out = t0 + Duration::from_millis(6_500);
        o.handle_sent(out, r.object_id, r.index);
        assert_eq!(
            o.handle_nak(out + Duration::from_millis(300), nak(1, 4, 20)),
            NakVerdict::Late,
            "a late copy"
        );
        assert_eq!(
            o.handle_nak(out + Duration::from_millis(300), nak(1, 4, 60)),
            NakVerdict::Queued,
            "asks for more"
        );
        assert_eq!(o.stats().resends, 1, "one resend while it was queued, not four");
        // A chunk never resent, or unknown to the sent log, is not held back.
        o.handle_sent(out, ObjectId([7; 32]), 1);
        assert_eq!(o.handle_nak(out, nak(7, 1, 5)), NakVerdict::Queued);
    }

    #[test]
    fn a_later_ask_gets_fresh_symbols_below_the_earlier_ones_then_source_symbols_then_wraps() {
        let mut o = OriginRepair::new(OriginConfig::default());
        let t0 = Instant::now();
        o.handle_nak(t0, nak(1, 0, 20));
        let first = o.poll_resend(t0 + Duration::from_secs(1)).unwrap();
        o.handle_sent(t0 + Duration::from_secs(1), ObjectId([1; 32]), 0);
        // After the holdoff, the same hub asks again (it lost the first resend).
        let t1 = t0 + Duration::from_secs(3);
        assert_eq!(o.handle_nak(t1, nak(1, 0, 20)), NakVerdict::Queued);
        let second = o.poll_resend(t1 + Duration::from_secs(1)).unwrap();
        o.handle_sent(t1 + Duration::from_secs(1), ObjectId([1; 32]), 0);
        assert_eq!(second.esis.last().map(|e| e + 1), first.esis.first().copied(), "just below");
        assert_eq!(o.stats().resent_again, 1);
        // Asking for more than the holdoff's resend carried is not late.
        o.handle_nak(t1 + Duration::from_secs(2), nak(1, 0, 40));
        let third = o.poll_resend(t1 + Duration::from_secs(3)).unwrap();
        o.handle_sent(t1 + Duration::from_secs(3), ObjectId([1; 32]), 0);
        // 66 repair ESIs: 21 + 21 + 41 goes on into the source ESIs.
        assert_eq!(third.esis, (N_MAX - 83..N_MAX - 42).collect::<Vec<_>>());
        assert!(third.esis.iter().any(|e| *e < K), "{:?}", third.esis);
        // A hub that lost a whole chunk (evicted) asks for K: what is left
        // below does not hold it, so the count wraps to the top.
        o.handle_nak(t1 + Duration::from_secs(5), nak(1, 0, K));
        let fourth = o.poll_resend(t1 + Duration::from_secs(6)).unwrap();
        assert_eq!(fourth.esis, (N_MAX - K - 1..N_MAX).collect::<Vec<_>>());
    }

    #[test]
    fn resends_of_one_chunk_bring_a_hub_that_lost_it_every_esi_before_repeating_one() {
        let mut o = OriginRepair::new(OriginConfig::default());
        let t0 = Instant::now();
        let mut seen = std::collections::HashSet::new();
        for i in 0..4u32 {
            let t = t0 + Duration::from_secs(3 * u64::from(i));
            o.handle_nak(t, nak(1, 0, 40));
            let r = o.poll_resend(t + Duration::from_secs(1)).unwrap();
            o.handle_sent(t + Duration::from_secs(1), r.object_id, r.index);
            assert!(r.esis.iter().all(|e| seen.insert(*e)), "resend {i} repeats an ESI: {:?}", r.esis);
        }
        assert_eq!(seen.len(), 4 * 41);
    }

    #[test]
    fn a_resend_is_sized_for_the_worst_askers_loss() {
        let mut o = OriginRepair::new(OriginConfig::default());
        let t0 = Instant::now();
        o.handle_nak(t0, nak(1, 0, 40));
        o.handle_nak(t0, OriginNak { loss: 50, ..nak(1, 0, 10) });
        o.handle_nak(t0, OriginNak { loss: 5, ..nak(1, 0, 30) });
        let r = o.poll_resend(t0 + Duration::from_secs(1)).unwrap();
        assert_eq!(r.esis.len() as u32, resend_size(40, 0.5, 1), "the largest ask at the worst loss");
        assert!(r.esis.len() >= 2 * 40 + 10, "{}", r.esis.len());
        // A loss past what is worth sizing for is taken as MAX_SIZED_LOSS,
        // and a resend never exceeds N_max.
        o.handle_nak(t0 + Duration::from_secs(5), OriginNak { loss: 100, ..nak(1, 1, K) });
        let r = o.poll_resend(t0 + Duration::from_secs(6)).unwrap();
        assert_eq!(r.esis.len() as u32, N_MAX);
    }

    /// What the sizing promises, checked by drawing the loss: a hub losing
    /// `p` of the resend gets what it lacks at least 95% of the time.
    #[test]
    fn a_sized_resend_arrives_through_its_loss() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(22);
        for (missing, loss) in
            [(1, 0.05), (12, 0.05), (40, 0.2), (130, 0.2), (400, 0.5), (60, 0.5), (800, 0.5)]
        {
            let n = resend_size(missing, loss, 0);
            let trials = 2000;
            let ok = (0..trials)
                .filter(|_| (0..n).filter(|_| !rng.gen_bool(loss)).count() as u32 >= missing)
                .count();
            let share = ok as f64 / f64::from(trials);
            assert!(share >= 0.95, "{missing} missing at {loss}: {n} sent, {share} arrived whole");
            assert!(
                f64::from(n) <= f64::from(missing) / (1.0 - loss) * 1.5 + 8.0,
                "{missing} at {loss}: {n} is waste"
            );
        }
        assert_eq!(resend_size(40, 0.0, 1), 41, "no loss known: the ask and the margin");
    }

    /// A carousel at 50% FEC sends all but 16 of a chunk's N_max ESIs: a hub
    /// losing half holds 0.75 K of them and lacks a quarter. A resend sized
    /// as if every ESI were new to it falls short about half the time; sized
    /// for the repeats, ≥ 95% of such hubs decode from it (drawn: which of
    /// the carousel's ESIs each hub holds, which of the resend it receives).
    #[test]
    fn a_resend_that_repeats_the_carousels_esis_is_sized_for_the_repeats() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(23);
        let (k, loss) = (820u32, 0.5);
        let n_max = crate::wire::n_max(k);
        let sent = k + k / 2;
        let t0 = Instant::now();
        let trials = 400;
        // Per drawn hub (what it holds of the carousel's round): one NAK, told
        // or not what it holds, and whether it decodes from the one resend.
        // Returns the share that decoded and the symbols a resend carried.
        let mut run = |told: bool| {
            let mut o = OriginRepair::new(OriginConfig::default());
            let (mut ok, mut asked) = (0, 0);
            for t in 0..trials {
                let held: Vec<bool> = (0..n_max).map(|e| e < sent && !rng.gen_bool(loss)).collect();
                let have = held.iter().filter(|h| **h).count() as u32;
                let missing = (k + 1).saturating_sub(have);
                if missing == 0 {
                    ok += 1;
                    continue;
                }
                asked += 1;
                let at = t0 + Duration::from_secs(100 * u64::from(t));
                let bits = if told { crate::repair::pack_esis(&held) } else { Vec::new() };
                let nak =
                    OriginNak { object_id: id(9), index: t, missing, loss: 50, k, n_max, sent, held: bits };
                o.handle_nak(at, nak);
                let r = o.poll_resend(at + Duration::from_secs(1)).unwrap();
                assert!(!told || r.esis.iter().all(|e| !held[*e as usize]), "only ESIs the asker lacks");
                let gained =
                    r.esis.iter().filter(|e| !held[**e as usize] && !rng.gen_bool(loss)).count() as u32;
                ok += u32::from(gained >= missing);
            }
            (f64::from(ok) / f64::from(trials), o.stats().symbols as f64 / f64::from(asked.max(1)))
        };
        let (share, blind) = run(false);
        assert!(share >= 0.95, "{share} of hubs decoded from one resend");
        // The same hubs saying what they hold: the resend carries only what
        // the asker lacks, and half as much does.
        let (share, told) = run(true);
        assert!(share >= 0.95, "{share} of hubs decoded from one resend that knew what they hold");
        assert!(told < blind * 0.6, "{told} symbols a resend when told, {blind} blind");

        let naive = resend_size(k / 4 + 1, loss, 1);
        let sized = resend_size_over(k / 4 + 1, loss, 1, n_max - sent, 0.5, n_max);
        assert!(sized > naive * 3 / 2 && sized <= n_max, "naive {naive}, sized {sized}");
    }

    #[test]
    fn pending_chunks_are_bounded() {
        let config = OriginConfig { max_pending: 2, ..OriginConfig::default() };
        let mut o = OriginRepair::new(config);
        let t0 = Instant::now();
        assert_eq!(o.handle_nak(t0, nak(1, 0, 1)), NakVerdict::Queued);
        assert_eq!(o.handle_nak(t0, nak(1, 1, 1)), NakVerdict::Queued);
        assert_eq!(o.handle_nak(t0, nak(1, 2, 1)), NakVerdict::Full);
        assert_eq!(o.handle_nak(t0, nak(1, 1, 5)), NakVerdict::Merged, "a waiting chunk still merges");
        assert_eq!(o.stats().refused_full, 1);
        let order: Vec<u32> =
            std::iter::from_fn(|| o.poll_resend(t0 + Duration::from_secs(1))).map(|r| r.index).collect();
        assert_eq!(order, [0, 1], "in the order the windows opened");
    }

    #[test]
    fn an_absurd_ask_is_capped_at_k_plus_the_extra() {
        let mut o = OriginRepair::new(OriginConfig::default());
        let t0 = Instant::now();
        o.handle_nak(t0, nak(1, 0, u32::MAX));
        let r = o.poll_resend(t0 + Duration::from_secs(1)).unwrap();
        assert_eq!(r.esis, (N_MAX - K - 1..N_MAX).collect::<Vec<_>>());
    }
}
