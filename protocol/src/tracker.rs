//! The tracker, sans IO: which hubs exist, where they listen, and which chunks
//! they hold complete. Hubs register (and refresh) every few seconds and report
//! their holdings; askers get hubs holding a chunk, as a p2pd server answers
//! host lists, bridges, or a random live hub of the stripe forest (a desert
//! hub joins the forest through one).
//!
//! Bounded: at most [`TrackerConfig::max_hubs`] hubs, each with at most
//! [`TrackerConfig::max_objects_per_hub`] objects' bitmaps; a hub not heard for
//! [`TrackerConfig::expiry`] is forgotten. Answers are random subsets, so
//! popular chunks spread their askers over their holders.

use crate::peer_wire::ChunkBitmap;
use crate::ObjectId;
use rand::seq::SliceRandom;
use rand::Rng;
use std::collections::HashMap;
use std::hash::Hash;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

#[derive(Clone, Debug)]
pub struct TrackerConfig {
    /// A hub not heard for this long is forgotten. Default 30 s.
    pub expiry: Duration,
    /// Hubs tracked at once. Default 100 000.
    pub max_hubs: usize,
    /// Objects tracked per hub. Default 256.
    pub max_objects_per_hub: usize,
}

/// Random probes of the hub table per hub asked for, and at least, before
/// [`Tracker`]'s pick falls back to one pass over the table.
const PROBES_PER_ANSWER: usize = 4;
const PROBES_MIN: usize = 32;

impl Default for TrackerConfig {
    fn default() -> Self {
        TrackerConfig { expiry: Duration::from_secs(30), max_hubs: 100_000, max_objects_per_hub: 256 }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TrackerError {
    #[error("the tracker is full")]
    Full,
    #[error("report before registering")]
    NotRegistered,
    #[error("too many objects reported")]
    TooManyObjects,
}

/// What a hub registers as.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Role {
    /// It serves the channel's feed to desert hubs.
    pub bridge: bool,
    /// It is in the channel's stripe forest: its root, or a desert hub there.
    pub forest: bool,
    /// Feeds it serves now, as a bridge: the tracker lists the least loaded
    /// bridges first.
    pub feeds: u16,
}

struct Entry<N> {
    node: N,
    addr: SocketAddr,
    role: Role,
    last_seen: Instant,
    holdings: HashMap<ObjectId, ChunkBitmap>,
}

/// A hub as the tracker hands it out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HubAddr<N> {
    pub node: N,
    pub addr: SocketAddr,
    pub bridge: bool,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TrackerStats {
    pub registrations: u64,
    pub reports: u64,
    pub queries: u64,
    pub refused: u64,
    pub expired: u64,
}

pub struct Tracker<N> {
    config: TrackerConfig,
    /// Dense, so a random hub costs O(1); `index` finds a node's slot.
    entries: Vec<Entry<N>>,
    index: HashMap<N, usize>,
    last_expiry: Option<Instant>,
    stats: TrackerStats,
}

/// Silent hubs are looked for at most this often (a scan is O(hubs)).
const EXPIRE_EVERY: Duration = Duration::from_secs(1);

impl<N: Copy + Eq + Hash> Tracker<N> {
    pub fn new(config: TrackerConfig) -> Self {
        Tracker {
            config,
            entries: Vec::new(),
            index: HashMap::new(),
            last_expiry: None,
            stats: TrackerStats::default(),
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn stats(&self) -> TrackerStats {
        self.stats
    }

    /// A hub says it is alive at `addr`.
    pub fn register(
        &mut self,
        now: Instant,
        node: N,
        addr: SocketAddr,
        role: Role,
    ) -> Result<(), TrackerError> {
        self.stats.registrations += 1;
        if let Some(&i) = self.index.get(&node) {
            let e = &mut self.entries[i];
            (e.addr, e.role, e.last_seen) = (addr, role, now);
            return Ok(());
        }
        if self.entries.len() >= self.config.max_hubs {
            self.last_expiry = None; // full: worth a scan now
            self.expire(now);
        }
        if self.entries.len() >= self.config.max_hubs {
            self.stats.refused += 1;
            return Err(TrackerError::Full);
        }
        self.index.insert(node, self.entries.len());
        self.entries.push(Entry { node, addr, role, last_seen: now, holdings: HashMap::new() });
        Ok(())
    }

    /// A registered hub holds these chunks of `object` complete (replacing what
    /// it said before about that object).
    pub fn report(
        &mut self,
        now: Instant,
        node: N,
        object: ObjectId,
        complete: ChunkBitmap,
    ) -> Result<(), TrackerError> {
        self.stats.reports += 1;
        let Some(&i) = self.index.get(&node) else {
            self.stats.refused += 1;
            return Err(TrackerError::NotRegistered);
        };
        let e = &mut self.entries[i];
        if !e.holdings.contains_key(&object) && e.holdings.len() >= self.config.max_objects_per_hub {
            self.stats.refused += 1;
            return Err(TrackerError::TooManyObjects);
        }
        e.last_seen = now;
        e.holdings.insert(object, complete);
        Ok(())
    }

    /// Up to `limit` live hubs holding chunk `chunk` of `object` complete (any
    /// chunk of it when `None`), chosen at random, leaving out `asker`.
    pub fn holders(
        &mut self,
        now: Instant,
        object: ObjectId,
        chunk: Option<u32>,
        asker: Option<N>,
        limit: usize,
        rng: &mut impl Rng,
    ) -> Vec<HubAddr<N>> {
        let holds =
            |e: &Entry<N>| e.holdings.get(&object).is_some_and(|b| chunk.map_or(b.count() > 0, |c| b.get(c)));
        self.pick(now, asker, limit, rng, holds)
    }

    /// Up to `limit` live hubs that pass `keep`, other than `asker`, chosen
    /// uniformly at random, in random order. Random probes find them when
    /// many pass (a popular chunk's holders), at a cost of the answer's size;
    /// when few do (bridges), one pass samples them (reservoir sampling). A
    /// pass from a random start would not do: the first hub after a long run
    /// of others would be listed first nearly every time (with two bridges
    /// registered first among eight hubs, the first one 7 times in 8).
    fn pick(
        &mut self,
        now: Instant,
        asker: Option<N>,
        limit: usize,
        rng: &mut impl Rng,
        keep: impl Fn(&Entry<N>) -> bool,
    ) -> Vec<HubAddr<N>> {
        self.stats.queries += 1;
        self.expire(now);
        let n = self.entries.len();
        if n == 0 || limit == 0 {
            return Vec::new();
        }
        let fits = |e: &Entry<N>| Some(e.node) != asker && keep(e);
        let mut chosen: Vec<usize> = Vec::with_capacity(limit.min(n));
        for _ in 0..PROBES_PER_ANSWER * limit + PROBES_MIN {
            let i = rng.gen_range(0..n);
            if !chosen.contains(&i) && fits(&self.entries[i]) {
                chosen.push(i);
                if chosen.len() == limit {
                    break;
                }
            }
        }
        if chosen.len() < limit {
            chosen.clear();
            // Reservoir sampling: the n-th match takes a random place with
            // odds limit / n.
            let matching = self.entries.iter().enumerate().filter(|(_, e)| fits(e)).map(|(i, _)| i);
            for (n, i) in matching.enumerate() {
                if chosen.len() < limit {
                    chosen.push(i);
                } else if let Some(slot) = chosen.get_mut(rng.gen_range(0..=n)) {
                    *slot = i;
                }
            }
            chosen.shuffle(rng);
        }
        chosen
            .into_iter()
            .map(|i| &self.entries[i])
            .map(|e| HubAddr { node: e.node, addr: e.addr, bridge: e.role.bridge })
            .collect()
    }

    /// Up to `limit` live hubs registered as bridges, other than `asker`,
    /// chosen at random and listed by load, the fewest feeds first: a desert
    /// hub's candidates for the channel's feed, the first its choice. A
    /// bridge's load is the feeds it reported at its last registration and
    /// the askers it was listed first to since; so desert hubs that come
    /// together spread over the bridges (in the lab, all four hubs fed over
    /// QUIC had taken one of the two bridges). An asker fed by `leaving`
    /// counts there as gone: it leaves when another is listed before it, and
    /// that bridge's load drops by one.
    pub fn bridges(
        &mut self,
        now: Instant,
        asker: Option<N>,
        limit: usize,
        rng: &mut impl Rng,
        leaving: Option<N>,
    ) -> Vec<HubAddr<N>> {
        let mut found = self.pick(now, asker, limit, rng, |e| e.role.bridge);
        let load = |t: &Self, h: &HubAddr<N>| {
            let feeds = t.index.get(&h.node).map_or(u16::MAX, |&i| t.entries[i].role.feeds);
            feeds.saturating_sub(u16::from(Some(h.node) == leaving))
        };
        // On a tie the asker stays: moving would only swap the loads.
        found.sort_by_cached_key(|h| (load(self, h), Some(h.node) != leaving));
        let first = found.first().map(|h| h.node);
        if first != leaving {
            for (node, step) in [(first, 1i32), (leaving, -1)] {
                if let Some(&i) = node.and_then(|n| self.index.get(&n)) {
                    let feeds = &mut self.entries[i].role.feeds;
                    *feeds = feeds.saturating_add_signed(step as i16);
                }
            }
        }
        found
    }

    /// A random live hub of the stripe forest other than `asker`: where a
    /// desert hub joining the forest starts its searches.
    pub fn forest_hub(&mut self, now: Instant, asker: Option<N>, rng: &mut impl Rng) -> Option<HubAddr<N>> {
        self.pick(now, asker, 1, rng, |e| e.role.forest).pop()
    }

    /// Forget hubs not heard for the expiry.
    pub fn expire(&mut self, now: Instant) {
        if self.last_expiry.is_some_and(|t| now.saturating_duration_since(t) < EXPIRE_EVERY) {
            return;
        }
        self.last_expiry = Some(now);
        let mut i = 0;
        while i < self.entries.len() {
            if now.saturating_duration_since(self.entries[i].last_seen) < self.config.expiry {
                i += 1;
                continue;
            }
            let gone = self.entries.swap_remove(i);
            self.index.remove(&gone.node);
            if let Some(moved) = self.entries.get(i) {
                self.index.insert(moved.node, i);
            }
            self.stats.expired += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn addr(n: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], n))
    }

    fn bitmap(chunks: u32, held: &[u32]) -> ChunkBitmap {
        let mut b = ChunkBitmap::new(chunks);
        held.iter().for_each(|i| b.set(*i));
        b
    }

    #[test]
    fn holders_of_a_chunk_are_the_hubs_that_reported_it_and_a_forest_hub_is_in_the_forest_and_never_the_asker(
    ) {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let mut t = Tracker::new(TrackerConfig::default());
        let now = Instant::now();
        let obj = ObjectId([1; 32]);
        for n in 1..=4u16 {
            t.register(now, n, addr(n), Role { bridge: n == 4, forest: n != 2, feeds: 0 }).unwrap();
        }
        t.report(now, 1, obj, bitmap(8, &[0, 1])).unwrap();
        t.report(now, 2, obj, bitmap(8, &[1])).unwrap();
        t.report(now, 3, ObjectId([2; 32]), bitmap(8, &[1])).unwrap();
        let mut of_chunk1: Vec<u16> =
            t.holders(now, obj, Some(1), None, 10, &mut rng).iter().map(|h| h.node).collect();
        of_chunk1.sort();
        assert_eq!(of_chunk1, [1, 2]);
        let of_chunk0 = t.holders(now, obj, Some(0), Some(1), 10, &mut rng);
        assert!(of_chunk0.is_empty(), "the asker is left out");
        assert_eq!(t.holders(now, obj, None, None, 1, &mut rng).len(), 1, "limit");
        // A forest hub: never the asker, never a hub outside the forest.
        let mut seen = std::collections::HashSet::new();
        for _ in 0..50 {
            let h = t.forest_hub(now, Some(3), &mut rng).unwrap();
            assert!(h.node == 1 || h.node == 4, "{h:?}");
            assert_eq!(h.bridge, h.node == 4);
            seen.insert(h.node);
        }
        assert_eq!(seen.len(), 2, "either, at random");
        assert_eq!(t.report(now, 9, obj, bitmap(8, &[])), Err(TrackerError::NotRegistered));
        // Bridges: only hubs registered as one, never the asker; a hub that
        // registers again without the flag is no longer listed.
        t.register(now, 5, addr(5), Role { bridge: true, ..Role::default() }).unwrap();
        let mut bridges: Vec<u16> = t.bridges(now, None, 10, &mut rng, None).iter().map(|h| h.node).collect();
        bridges.sort();
        assert_eq!(bridges, [4, 5]);
        assert!(t.bridges(now, Some(4), 10, &mut rng, None).iter().all(|h| h.node == 5 && h.bridge));
        assert_eq!(t.bridges(now, None, 1, &mut rng, None).len(), 1, "limit");
        t.register(now, 5, addr(5), Role::default()).unwrap();
        assert!(t.bridges(now, Some(4), 10, &mut rng, None).is_empty());
    }

    #[test]
    fn every_matching_hub_is_listed_first_as_often_as_any_other() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let mut t = Tracker::new(TrackerConfig::default());
        let now = Instant::now();
        let (few, many) = (ObjectId([1; 32]), ObjectId([2; 32]));
        // Two holders of `few` registered first among 608 hubs (a pass from a
        // random start listed the first one first 998 times in 1,000): the
        // one pass's path. Every other hub holds `many`: the probes' path.
        for n in 1..=608u16 {
            t.register(now, n, addr(n), Role::default()).unwrap();
            t.report(now, n, few, bitmap(1, if n <= 2 { &[0] } else { &[] })).unwrap();
            t.report(now, n, many, bitmap(1, if n % 2 == 0 { &[0] } else { &[] })).unwrap();
        }
        const ASKS: usize = 6000;
        let mut first = HashMap::new();
        let mut listed = HashMap::new();
        for _ in 0..ASKS {
            let of_few = t.holders(now, few, Some(0), None, 8, &mut rng);
            assert_eq!(of_few.len(), 2);
            *first.entry(of_few[0].node).or_insert(0usize) += 1;
            let of_many = t.holders(now, many, Some(0), None, 10, &mut rng);
            let mut distinct: Vec<u16> = of_many.iter().map(|h| h.node).collect();
            distinct.sort();
            distinct.dedup();
            assert_eq!(distinct.len(), 10, "ten hubs, none twice");
            for h in &of_many {
                assert_eq!(h.node % 2, 0, "only holders");
                *listed.entry(h.node).or_insert(0usize) += 1;
            }
        }
        for b in [1, 2] {
            let share = first[&b] as f64 / ASKS as f64;
            assert!((0.45..=0.55).contains(&share), "holder {b} first in {share} of the answers");
        }
        // 304 holders, 10 listed per answer: each expected 197 times.
        assert_eq!(listed.len(), 304, "every holder is listed at some point");
        let (least, most) = (listed.values().min().unwrap(), listed.values().max().unwrap());
        assert!(*least >= 130 && *most <= 270, "holders listed {least} to {most} times, expected 197 each");
    }

    #[test]
    fn the_least_loaded_bridge_is_listed_first_counting_the_askers_sent_to_it() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(4);
        let mut t = Tracker::new(TrackerConfig::default());
        let now = Instant::now();
        // Bridge 1 feeds five desert hubs; 2 and 3 none; 4 is a plain hub.
        for (n, bridge, feeds) in [(1u16, true, 5u16), (2, true, 0), (3, true, 0), (4, false, 0)] {
            t.register(now, n, addr(n), Role { bridge, forest: false, feeds }).unwrap();
        }
        let mut firsts = |t: &mut Tracker<u16>, asks: usize| {
            let mut count = [0usize; 5];
            for _ in 0..asks {
                let listed = t.bridges(now, None, 8, &mut rng, None);
                assert_eq!(listed.len(), 3, "every bridge, and only bridges: {listed:?}");
                count[usize::from(listed[0].node)] += 1;
            }
            count
        };
        // Ten desert hubs starting together: five to each idle bridge.
        assert_eq!(firsts(&mut t, 10), [0, 0, 5, 5, 0]);
        // All three at five feeds: the next three go one to each.
        assert_eq!(firsts(&mut t, 3), [0, 1, 1, 1, 0]);
        // A registration says what a bridge feeds now, whatever it was sent.
        t.register(now, 2, addr(2), Role { bridge: true, forest: false, feeds: 0 }).unwrap();
        assert_eq!(firsts(&mut t, 6), [0, 0, 6, 0, 0]);
        // Four hubs on bridge 1, none on 2 or 3 (all just registered): each
        // fed hub asks again, naming the bridge it would leave. Two move; the
        // others then find their own bridge first, and stay.
        for (n, feeds) in [(1u16, 4u16), (2, 0), (3, 0)] {
            t.register(now, n, addr(n), Role { bridge: true, forest: false, feeds }).unwrap();
        }
        let moves: Vec<u16> = (0..4)
            .map(|_| t.bridges(now, Some(10), 8, &mut rng, Some(1))[0].node)
            .filter(|first| *first != 1)
            .collect();
        assert_eq!(moves.len(), 2, "two of the four leave bridge 1: {moves:?}");
        let load = |t: &Tracker<u16>, n: u16| t.entries[t.index[&n]].role.feeds;
        assert_eq!((load(&t, 1), load(&t, 2) + load(&t, 3)), (2, 2));
    }

    #[test]
    fn state_is_bounded_and_silent_hubs_expire() {
        const FOREST: Role = Role { bridge: false, forest: true, feeds: 0 };
        let config = TrackerConfig { max_hubs: 3, max_objects_per_hub: 1, ..TrackerConfig::default() };
        let mut t = Tracker::new(config);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2);
        let t0 = Instant::now();
        for n in 1..=3u16 {
            t.register(t0, n, addr(n), FOREST).unwrap();
        }
        assert_eq!(t.register(t0, 4, addr(4), FOREST), Err(TrackerError::Full));
        t.report(t0, 1, ObjectId([1; 32]), bitmap(1, &[0])).unwrap();
        assert_eq!(t.report(t0, 1, ObjectId([2; 32]), bitmap(1, &[0])), Err(TrackerError::TooManyObjects));
        // Hub 2 keeps refreshing; the others fall silent.
        let t1 = t0 + Duration::from_secs(20);
        t.register(t1, 2, addr(2), FOREST).unwrap();
        let t2 = t0 + Duration::from_secs(31);
        assert_eq!(t.forest_hub(t2, None, &mut rng).map(|h| h.node), Some(2));
        assert_eq!(t.len(), 1);
        assert_eq!(t.stats().expired, 2);
        t.register(t2, 4, addr(4), FOREST).unwrap();
        assert_eq!(t.forest_hub(t2, Some(2), &mut rng).map(|h| h.node), Some(4), "room again");
        assert!(t.forest_hub(t2, Some(9), &mut rng).is_some(), "an unknown asker");
    }
}
