//! Repair, sans IO: which peers to ask for which symbols of the chunks a hub
//! lacks, when to give up on peers and ask the origin, and what it cost.
//!
//! The owner feeds [`Repairer::handle_tick`] with what the receiver lacks
//! ([`Receiver::needs`](crate::receiver::Receiver::needs)) and the peers that may
//! hold each chunk, takes the requests out with [`Repairer::poll_request`], and
//! reports each request's end with [`Repairer::handle_response`] (then ticks again,
//! so the next requests leave at once). The rules:
//!
//! - **When.** A chunk is repaired once its multicast window has closed: the
//!   multicast moved past it (a reorder grace later), or sent nothing new for it
//!   for [`RepairConfig::stall`], or passed it without this hub hearing its
//!   ticket.
//! - **How much.** K + `margin` − held − in flight, so the bytes requested stay
//!   close to the bytes missing; never the whole chunk from one peer when a few
//!   symbols are missing.
//! - **Which.** The lowest ESIs not held and not in flight: missing source
//!   symbols first (with every source symbol held, decoding is a copy), then
//!   repair symbols, which only a peer that decoded the chunk can make.
//! - **From whom.** Up to `max_peers` peers at once, in parallel, with disjoint
//!   ESI sets: peers holding the chunk complete first, then same island, then
//!   lowest RTT, then fewest strikes. Ties are broken at random (seeded), so a
//!   popular chunk does not send every hub to the same peer.
//! - **Again.** A request ends served (ESIs asked but not received are what that
//!   peer lacks: they go to another peer), refused (the peer rests for the chunk;
//!   "not held" is never a strike) or failed/timed out (the peer rests longer).
//! - **Who else.** When no peer at hand holds the chunk complete, a lookup is
//!   queued ([`Repairer::poll_lookup`]): the owner asks the tracker for hubs
//!   that hold it, beyond this island, and offers them as candidates.
//! - **Origin.** When no peer is left to ask and nothing is in flight for
//!   `origin_after`, a NAK is scheduled after a random backoff, and suppressed if
//!   the chunk gained symbols meanwhile (the origin's multicast repair for
//!   another hub's NAK reached this one too). Also when peers are asked but
//!   the chunk gains nothing for `fruitless_after`: a peer that refuses every
//!   request as busy (a bridge whose upload its feeds take) or whose answers
//!   never arrive must not keep a chunk from the origin.

use crate::peer_wire::{EsiRanges, RefuseReason};
use crate::receiver::ChunkNeed;
use crate::ObjectId;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

#[derive(Clone, Debug)]
pub struct RepairConfig {
    /// Symbols asked beyond K. Default 1: RaptorQ fails to decode from K + 1
    /// symbols about once in 10^4; a failure costs one more small request, while each
    /// symbol of margin costs a symbol on every repaired chunk.
    pub margin: u32,
    /// Peers asked at once for one chunk. Default 4.
    pub max_peers: usize,
    /// A request not answered within this fails. Default 2 s.
    pub request_timeout: Duration,
    /// An open multicast window that brought nothing for this long is closed.
    /// Default 500 ms.
    pub stall: Duration,
    /// After the multicast moves past a chunk, its last datagrams may still be
    /// on the way (reordered): repair waits this long. Default 10 ms.
    pub reorder_grace: Duration,
    /// With no peer to ask, wait this long before a NAK. Default 1 s.
    pub origin_after: Duration,
    /// NAKs wait a random delay below this, so hubs that miss the same chunk
    /// hear each other's repair first. Default 200 ms.
    pub nak_backoff: Duration,
    /// Least time between two NAKs for one chunk. Default 2 s.
    pub nak_retry: Duration,
    /// A chunk under repair that gains no symbol for this long, peers asked
    /// or not, is asked of the origin too. Default 4 s: two request
    /// timeouts.
    pub fruitless_after: Duration,
    /// Chunks under repair at once (the rest wait their turn). Default 32,
    /// well within the receiver's `max_active_chunks` (256): each chunk under
    /// repair takes a slot there, and one evicted mid-repair loses the symbols
    /// it had collected and is asked for again whole.
    pub max_chunks: usize,
    /// Least time between two tracker lookups for one chunk. Default 3 s.
    pub lookup_every: Duration,
}

impl Default for RepairConfig {
    fn default() -> Self {
        RepairConfig {
            margin: 1,
            max_peers: 4,
            request_timeout: Duration::from_secs(2),
            stall: Duration::from_millis(500),
            reorder_grace: Duration::from_millis(10),
            origin_after: Duration::from_secs(1),
            nak_backoff: Duration::from_millis(200),
            nak_retry: Duration::from_secs(2),
            fruitless_after: Duration::from_secs(4),
            max_chunks: 32,
            lookup_every: Duration::from_secs(3),
        }
    }
}

/// A peer that may serve a chunk.
#[derive(Clone, Debug, PartialEq)]
pub struct Candidate<P> {
    pub peer: P,
    /// It holds the chunk decoded, so it can make any ESI below N_max.
    pub complete: bool,
    pub same_island: bool,
    pub rtt: Duration,
    /// Digest mismatches charged to this peer.
    pub strikes: u32,
}

/// One request to one peer: send it, then report its end with the same `id`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request<P> {
    pub id: u64,
    pub peer: P,
    pub object_id: ObjectId,
    pub index: u32,
    /// Ask for the ticket and these table pages (bit g = page g) too; `Some`
    /// whenever the ticket is missing.
    pub table: Option<u32>,
    pub esis: EsiRanges,
}

/// How a request ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The peer answered; what it sent went to the receiver.
    Served,
    Refused(RefuseReason),
    /// The connection or stream broke.
    Failed,
}

/// Ask the origin to send `missing` more symbols of a chunk on multicast.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Nak {
    pub object_id: ObjectId,
    pub index: u32,
    pub missing: u32,
    /// The ESIs this hub holds, bit e = ESI e (LSB first), ceil(N_max / 8)
    /// bytes; empty without the chunk's ticket. The origin resends what the
    /// askers lack, not ESIs they hold.
    pub held: Vec<u8>,
}

/// `held[e]` packed as the NAK carries it: bit e of byte e / 8, LSB first.
pub fn pack_esis(held: &[bool]) -> Vec<u8> {
    let mut bits = vec![0u8; held.len().div_ceil(8)];
    for (e, _) in held.iter().enumerate().filter(|(_, h)| **h) {
        bits[e / 8] |= 1 << (e % 8);
    }
    bits
}

/// Ask the tracker which hubs hold this chunk complete.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lookup {
    pub object_id: ObjectId,
    pub index: u32,
}

/// A chunk that was under repair left the needs: it is complete (or dropped by
/// the receiver; the owner can tell).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Repaired {
    pub object_id: ObjectId,
    pub index: u32,
    /// From the start of its repair.
    pub took: Duration,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RepairStats {
    pub requests: u64,
    pub esis_requested: u64,
    /// ESIs a peer was asked for and did not send.
    pub esis_lacked: u64,
    pub refusals: u64,
    pub failures: u64,
    pub timeouts: u64,
    pub naks_sent: u64,
    pub naks_suppressed: u64,
    pub lookups: u64,
    pub repaired: u64,
}

type ChunkKey = (ObjectId, u32);

/// A refused peer is not asked again for the chunk before this.
const REST_REFUSED: Duration = Duration::from_secs(1);
/// Nor a peer whose request failed or timed out.
const REST_FAILED: Duration = Duration::from_secs(5);

struct Asked<P> {
    key: ChunkKey,
    peer: P,
    esis: EsiRanges,
    sent: Instant,
    outcome: Option<Outcome>,
}

struct ChunkRepair<P> {
    last_held: u32,
    last_change: Instant,
    /// The chunk was seen with its window open, and when the multicast was
    /// first seen past it.
    seen_open: bool,
    passed_at: Option<Instant>,
    started: Option<Instant>,
    /// Per peer asked: the ESIs it was asked for and did not send.
    lacks: Vec<(P, Vec<bool>)>,
    /// Peers not to ask again before the time given.
    resting: Vec<(P, Instant)>,
    /// No peer to ask since then.
    stuck_since: Option<Instant>,
    /// A NAK waits until then; `held` when it was scheduled.
    nak_at: Option<(Instant, u32)>,
    nak_sent: Option<Instant>,
    /// The last tracker lookup for the chunk.
    looked_up: Option<Instant>,
    seen: u64,
}

impl<P: PartialEq + Clone> ChunkRepair<P> {
    /// `peer` lacks these ESIs (a peer that decodes the chunk later is asked
    /// again: lacks do not apply to peers holding it complete).
    fn note_lacks(&mut self, peer: &P, esis: impl IntoIterator<Item = u32>, n_max: u32) {
        let n_max = n_max as usize;
        let at = match self.lacks.iter().position(|(p, _)| p == peer) {
            Some(at) => at,
            None => {
                self.lacks.push((peer.clone(), vec![false; n_max]));
                self.lacks.len() - 1
            }
        };
        let lacks = &mut self.lacks[at].1;
        lacks.resize(n_max, false);
        for esi in esis {
            if let Some(l) = lacks.get_mut(esi as usize) {
                *l = true;
            }
        }
    }
}

pub struct Repairer<P> {
    config: RepairConfig,
    rng: ChaCha8Rng,
    chunks: HashMap<ChunkKey, ChunkRepair<P>>,
    asked: HashMap<u64, Asked<P>>,
    next_id: u64,
    generation: u64,
    requests: VecDeque<Request<P>>,
    naks: VecDeque<Nak>,
    lookups: VecDeque<Lookup>,
    repaired: VecDeque<Repaired>,
    stats: RepairStats,
}

impl<P: Clone + PartialEq> Repairer<P> {
    pub fn new(config: RepairConfig, seed: u64) -> Self {
        Repairer {
            config,
            rng: ChaCha8Rng::seed_from_u64(seed),
            chunks: HashMap::new(),
            asked: HashMap::new(),
            next_id: 1,
            generation: 0,
            requests: VecDeque::new(),
            naks: VecDeque::new(),
            lookups: VecDeque::new(),
            repaired: VecDeque::new(),
            stats: RepairStats::default(),
        }
    }

    pub fn stats(&self) -> RepairStats {
        self.stats
    }

    /// Requests asked of peers and not ended yet.
    pub fn in_flight(&self) -> usize {
        self.asked.values().filter(|a| a.outcome.is_none()).count()
    }

    pub fn poll_request(&mut self) -> Option<Request<P>> {
        self.requests.pop_front()
    }

    pub fn poll_nak(&mut self) -> Option<Nak> {
        self.naks.pop_front()
    }

    pub fn poll_lookup(&mut self) -> Option<Lookup> {
        self.lookups.pop_front()
    }

    pub fn poll_repaired(&mut self) -> Option<Repaired> {
        self.repaired.pop_front()
    }

    /// A request ended. Unknown ids (timed out before) are ignored. The datagrams
    /// it brought must reach the receiver before the next tick.
    pub fn handle_response(&mut self, id: u64, outcome: Outcome) {
        if let Some(a) = self.asked.get_mut(&id).filter(|a| a.outcome.is_none()) {
            a.outcome = Some(outcome);
        }
    }

    /// Plan with what the receiver lacks now. `candidates` names the peers that
    /// may hold a chunk (the owner leaves out banned ones).
    pub fn handle_tick(
        &mut self,
        now: Instant,
        needs: &[ChunkNeed],
        mut candidates: impl FnMut(&ChunkNeed) -> Vec<Candidate<P>>,
    ) {
        self.generation += 1;
        let generation = self.generation;
        for a in self.asked.values_mut() {
            if a.outcome.is_none() && now.saturating_duration_since(a.sent) >= self.config.request_timeout {
                a.outcome = Some(Outcome::Failed);
                self.stats.timeouts += 1;
            }
        }
        for need in needs.iter().take(self.config.max_chunks) {
            let key = (need.object_id, need.index);
            let held = need.held_count();
            let c = self.chunks.entry(key).or_insert_with(|| ChunkRepair {
                last_held: held,
                last_change: now,
                seen_open: false,
                passed_at: None,
                started: None,
                lacks: Vec::new(),
                resting: Vec::new(),
                stuck_since: None,
                nak_at: None,
                nak_sent: None,
                looked_up: None,
                seen: generation,
            });
            c.seen = generation;
            if held != c.last_held {
                c.last_held = held;
                c.last_change = now;
            }
        }
        self.forget_finished(now, generation);
        self.settle_answers(now, needs);
        for need in needs.iter().take(self.config.max_chunks) {
            self.plan(now, need, &mut candidates);
        }
    }

    /// Chunks no longer needed are done: report them and forget their requests.
    fn forget_finished(&mut self, now: Instant, generation: u64) {
        let done: Vec<ChunkKey> =
            self.chunks.iter().filter(|(_, c)| c.seen != generation).map(|(k, _)| *k).collect();
        for key in done {
            if let Some(started) = self.chunks.remove(&key).and_then(|c| c.started) {
                self.stats.repaired += 1;
                self.repaired.push_back(Repaired { object_id: key.0, index: key.1, took: now - started });
            }
        }
        self.asked.retain(|_, a| self.chunks.contains_key(&a.key));
    }

    /// Learn from every request that ended (its ESIs are no longer in flight):
    /// note what the peer lacked, rest a peer that refused or failed.
    fn settle_answers(&mut self, now: Instant, needs: &[ChunkNeed]) {
        let ended: Vec<u64> =
            self.asked.iter().filter(|(_, a)| a.outcome.is_some()).map(|(id, _)| *id).collect();
        for id in ended {
            let Some(a) = self.asked.remove(&id) else { continue };
            let Some(c) = self.chunks.get_mut(&a.key) else { continue };
            let Some(need) = needs.iter().find(|n| (n.object_id, n.index) == a.key) else { continue };
            match a.outcome {
                Some(Outcome::Served) => {
                    let missed: Vec<u32> = a
                        .esis
                        .iter()
                        .filter(|e| !need.held.get(*e as usize).copied().unwrap_or(false))
                        .collect();
                    if missed.is_empty() {
                        continue;
                    }
                    self.stats.esis_lacked += missed.len() as u64;
                    c.note_lacks(&a.peer, missed, need.n_max);
                }
                Some(Outcome::Refused(reason)) => {
                    self.stats.refusals += 1;
                    if reason == RefuseReason::NotHeld {
                        // It holds none of what was asked: then likely none of
                        // what is missing (hubs that lost the same datagrams).
                        // Ask it again once it holds the chunk complete.
                        self.stats.esis_lacked += u64::from(a.esis.count());
                        let lacking =
                            (0..need.n_max).filter(|e| !need.held.get(*e as usize).copied().unwrap_or(false));
                        c.note_lacks(&a.peer, lacking, need.n_max);
                    }
                    c.resting.push((a.peer, now + REST_REFUSED));
                }
                Some(Outcome::Failed) | None => {
                    self.stats.failures += 1;
                    c.resting.push((a.peer, now + REST_FAILED));
                }
            }
        }
    }

    fn plan(
        &mut self,
        now: Instant,
        need: &ChunkNeed,
        candidates: &mut impl FnMut(&ChunkNeed) -> Vec<Candidate<P>>,
    ) {
        let key = (need.object_id, need.index);
        let config = &self.config;
        let Some(c) = self.chunks.get_mut(&key) else { return };
        if c.started.is_none() {
            c.seen_open |= need.window_open;
            if !need.window_open {
                c.passed_at.get_or_insert(now);
            }
            let grace = if c.seen_open { config.reorder_grace } else { Duration::ZERO };
            let passed = c.passed_at.is_some_and(|t| now.saturating_duration_since(t) >= grace);
            if !passed && now.saturating_duration_since(c.last_change) < config.stall {
                return;
            }
            c.started = Some(now);
        }
        let held = need.held_count();
        // Every request still listed is in flight: ended ones were settled above.
        let mut in_flight = vec![false; need.n_max as usize];
        for esi in self.asked.values().filter(|a| a.key == key).flat_map(|a| a.esis.iter()) {
            if let Some(f) = in_flight.get_mut(esi as usize) {
                *f = true;
            }
        }
        let in_flight_count = in_flight.iter().filter(|f| **f).count() as u32;
        let wanted = (need.k + config.margin).saturating_sub(held + in_flight_count) as usize;
        c.resting.retain(|(_, until)| *until > now);
        let busy: Vec<&P> = self.asked.values().filter(|a| a.key == key).map(|a| &a.peer).collect();
        let all = candidates(need);
        let holder_known = all.iter().any(|p| p.complete);
        if !holder_known
            && c.looked_up.is_none_or(|t| now.saturating_duration_since(t) >= config.lookup_every)
        {
            c.looked_up = Some(now);
            self.stats.lookups += 1;
            self.lookups.push_back(Lookup { object_id: need.object_id, index: need.index });
        }
        let mut peers: Vec<Candidate<P>> = all
            .into_iter()
            .filter(|p| !busy.contains(&&p.peer) && !c.resting.iter().any(|(r, _)| *r == p.peer))
            .collect();
        peers.shuffle(&mut self.rng);
        peers.sort_by_key(|p| (!p.complete, !p.same_island, p.rtt, p.strikes));
        peers.truncate(config.max_peers.saturating_sub(busy.len()));

        // Who is asked for what, split evenly, lowest ESIs first. First the
        // missing source symbols: once all K are asked for the chunk decodes for
        // sure, so no margin is needed, and a peer serves them as slices of the
        // chunk without encoding it. Only if some source symbol no peer here can
        // give: any ESI, up to K plus the margin.
        let missing = |e: usize, in_flight: &[bool]| !need.held[e] && !in_flight[e];
        let sources_missing = (0..need.sources as usize).filter(|e| missing(*e, &in_flight)).count();
        let mut picks: Vec<Vec<u32>> = vec![Vec::new(); peers.len()];
        let (mut goal, mut picked) = (wanted.min(sources_missing), 0);
        for below in [need.sources, need.n_max] {
            let mut left = peers.len();
            for (p, esis) in peers.iter().zip(picks.iter_mut()) {
                if goal == 0 {
                    break;
                }
                let share = goal.div_ceil(left);
                left -= 1;
                let lacks = c.lacks.iter().find(|(q, _)| *q == p.peer).map(|(_, l)| l.as_slice());
                let can_serve =
                    |esi: usize| p.complete || !lacks.is_some_and(|l| l.get(esi).copied().unwrap_or(false));
                let more: Vec<u32> = (0..below as usize)
                    .filter(|e| missing(*e, &in_flight) && can_serve(*e))
                    .take(share)
                    .map(|e| e as u32)
                    .collect();
                for e in &more {
                    in_flight[*e as usize] = true;
                }
                goal -= more.len();
                picked += more.len();
                esis.extend(more);
            }
            let sources_unasked = (0..need.sources as usize).any(|e| missing(e, &in_flight));
            goal = if sources_unasked { wanted - picked } else { 0 };
        }

        let mut asked_any = false;
        for (p, mut esis) in peers.into_iter().zip(picks) {
            esis.sort_unstable();
            for esis in EsiRanges::split(&esis) {
                let pages = table_pages(need, &esis);
                let table = (!need.has_ticket || pages != 0).then_some(pages);
                let id = self.next_id;
                self.next_id += 1;
                self.stats.requests += 1;
                self.stats.esis_requested += u64::from(esis.count());
                self.asked.insert(
                    id,
                    Asked { key, peer: p.peer.clone(), esis: esis.clone(), sent: now, outcome: None },
                );
                self.requests.push_back(Request {
                    id,
                    peer: p.peer.clone(),
                    object_id: need.object_id,
                    index: need.index,
                    table,
                    esis,
                });
                asked_any = true;
            }
        }
        let waiting = asked_any || self.asked.values().any(|a| a.key == key);
        let gained = c.started.map_or(c.last_change, |s| s.max(c.last_change));
        let fruitless = now.saturating_duration_since(gained) >= config.fruitless_after;
        if (waiting || goal == 0) && !fruitless {
            c.stuck_since = None;
            c.nak_at = None;
            return;
        }
        // Nobody to ask: after a while, and a random backoff, the origin.
        let stuck_since = *c.stuck_since.get_or_insert(now);
        if now.saturating_duration_since(stuck_since) < config.origin_after
            || c.nak_sent.is_some_and(|t| now.saturating_duration_since(t) < config.nak_retry)
        {
            return;
        }
        match c.nak_at {
            None => {
                let backoff = self.rng.gen_range(Duration::ZERO..=config.nak_backoff);
                c.nak_at = Some((now + backoff, held));
            }
            Some((_, then)) if held > then => {
                // Someone else's repair reached us: our NAK is not needed now.
                self.stats.naks_suppressed += 1;
                c.nak_at = None;
                c.stuck_since = Some(now);
            }
            Some((at, _)) if now >= at => {
                self.stats.naks_sent += 1;
                c.nak_at = None;
                c.nak_sent = Some(now);
                let missing = (need.k + config.margin).saturating_sub(held);
                let held = if need.has_ticket { pack_esis(&need.held) } else { Vec::new() };
                self.naks.push_back(Nak { object_id: need.object_id, index: need.index, missing, held });
            }
            Some(_) => {}
        }
    }
}

/// The table pages covering `esis` that the hub lacks (all of them without a ticket).
fn table_pages(need: &ChunkNeed, esis: &EsiRanges) -> u32 {
    let mut pages = 0u32;
    for (first, n) in esis.ranges() {
        let last = first + u32::from(*n) - 1;
        for g in crate::fec::page_of(*first)..=crate::fec::page_of(last) {
            if g < 32 {
                pages |= 1 << g;
            }
        }
    }
    pages & !need.pages
}

#[cfg(test)]
mod tests;
