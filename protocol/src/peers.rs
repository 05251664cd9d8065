//! The hub's peers, sans IO: who they are, where they are, what they hold,
//! and the one ledger of strikes and bans.
//!
//! A peer enters the table when it is heard on the control group (this
//! island), listed by the tracker as holding a chunk, or feeds this hub as a
//! bridge. It leaves [`PEER_EXPIRY`] after it was last heard of, unless it is
//! banned: a ban outlives silence. Time is an argument; nothing here logs or
//! does IO: what the owner may want to say comes back as return values.
//!
//! Strikes are data that failed the broadcaster's checks: symbols a peer
//! served that fail their digests, or a bridge's feed that fails its
//! signature. [`STRIKES_TO_BAN`] of them ban the peer for [`BAN_FOR`]. "Does
//! not have it" is never a strike.

use crate::peer_wire::ChunkBitmap;
use crate::repair::Candidate;
use crate::ObjectId;
use hubcast_keys::NodeId;
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// A peer not heard of for this long leaves the table.
pub const PEER_EXPIRY: Duration = Duration::from_secs(10);
/// Peers kept in the table.
pub const MAX_PEERS: usize = 1024;
/// Chunks the tracker listed one peer as holding, kept per peer.
const MAX_LISTED_CHUNKS: usize = 4096;
/// Strikes that ban a peer, and for how long.
pub const STRIKES_TO_BAN: u32 = 3;
pub const BAN_FOR: Duration = Duration::from_secs(600);

/// How a peer came to be known, for the log and the status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    /// Its announcements on this hub's control group.
    Island,
    /// The tracker listed it as holding a chunk this hub lacked.
    Tracker,
    /// It feeds this hub as a bridge.
    Bridge,
}

impl Via {
    pub fn as_str(self) -> &'static str {
        match self {
            Via::Island => "island",
            Via::Tracker => "tracker",
            Via::Bridge => "bridge",
        }
    }
}

/// What a strike did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Strike {
    /// The peer's strikes now (0: not in the table, so not counted).
    pub strikes: u32,
    /// This strike banned it.
    pub banned_now: bool,
}

/// One peer as the status shows it.
#[derive(Clone, Debug, PartialEq)]
pub struct PeerView {
    pub id: NodeId,
    pub addr: SocketAddr,
    pub since_seen: Duration,
    pub strikes: u32,
    pub banned: bool,
    pub rtt: Option<Duration>,
    pub via: Via,
}

struct Entry {
    addr: SocketAddr,
    /// Its last announcement, the tracker's last answer naming it, or the
    /// last word of its feed.
    last_seen: Instant,
    /// Its last announcement on our control group.
    heard_at: Option<Instant>,
    /// What its last announcement listed complete.
    have: HashMap<ObjectId, ChunkBitmap>,
    /// The loss of its LAN's multicast its last announcement gave.
    loss: Option<u8>,
    /// Chunks the tracker listed it as holding complete.
    listed: HashSet<(ObjectId, u32)>,
    strikes: u32,
    banned_until: Option<Instant>,
    /// The bridge feeding this hub: a candidate for every chunk.
    feeds_us: bool,
    /// QUIC's smoothed RTT on our connection to it; none before the first.
    rtt: Option<Duration>,
}

impl Entry {
    fn new(now: Instant, addr: SocketAddr) -> Entry {
        Entry {
            addr,
            last_seen: now,
            heard_at: None,
            have: HashMap::new(),
            loss: None,
            listed: HashSet::new(),
            strikes: 0,
            banned_until: None,
            feeds_us: false,
            rtt: None,
        }
    }

    fn banned(&self, now: Instant) -> bool {
        self.banned_until.is_some_and(|t| t > now)
    }

    fn same_island(&self, now: Instant) -> bool {
        self.heard_at.is_some_and(|t| now.saturating_duration_since(t) < PEER_EXPIRY)
    }

    fn live(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.last_seen) < PEER_EXPIRY
    }
}

/// Peers heard on the control group, listed by the tracker or feeding this
/// hub: bounded, expiring, with one strike ledger.
#[derive(Default)]
pub struct PeerTable {
    peers: HashMap<NodeId, Entry>,
}

impl PeerTable {
    /// The entry for `id`, and whether it is new; `None` when the table is full.
    fn entry(&mut self, now: Instant, id: NodeId, addr: SocketAddr) -> Option<(&mut Entry, bool)> {
        let new = !self.peers.contains_key(&id);
        if new && self.peers.len() >= MAX_PEERS {
            return None;
        }
        Some((self.peers.entry(id).or_insert_with(|| Entry::new(now, addr)), new))
    }

    /// An announcement from `id` at `addr`, with the loss it gives; true
    /// when the peer is new.
    pub fn heard(
        &mut self,
        now: Instant,
        id: NodeId,
        addr: SocketAddr,
        have: Vec<(ObjectId, ChunkBitmap)>,
        loss: Option<u8>,
    ) -> bool {
        let Some((e, new)) = self.entry(now, id, addr) else { return false };
        e.addr = addr;
        e.last_seen = now;
        e.heard_at = Some(now);
        e.have = have.into_iter().collect();
        e.loss = loss;
        new
    }

    /// The worst multicast loss this island's hubs announce (whole percent),
    /// of those heard in the last [`PEER_EXPIRY`] that know theirs.
    pub fn island_loss(&self, now: Instant) -> Option<u8> {
        self.peers.values().filter(|p| p.same_island(now)).filter_map(|p| p.loss).max()
    }

    /// The tracker lists `id` at `addr` as holding a chunk complete; true
    /// when the peer is new. A peer heard on this island keeps the address
    /// it announced.
    pub fn listed(
        &mut self,
        now: Instant,
        id: NodeId,
        addr: SocketAddr,
        object_id: ObjectId,
        index: u32,
    ) -> bool {
        let Some((e, new)) = self.entry(now, id, addr) else { return false };
        if !e.same_island(now) {
            e.addr = addr;
        }
        e.last_seen = now;
        if e.listed.len() >= MAX_LISTED_CHUNKS {
            e.listed.clear();
        }
        e.listed.insert((object_id, index));
        new
    }

    /// The bridge `id` at `addr` feeds this hub (`on`), or no longer does;
    /// true when the peer is new. While it does, it is a candidate for every
    /// chunk.
    pub fn feeding(&mut self, now: Instant, id: NodeId, addr: SocketAddr, on: bool) -> bool {
        let Some((e, new)) = self.entry(now, id, addr) else { return false };
        if !e.same_island(now) {
            e.addr = addr;
        }
        e.last_seen = now;
        e.feeds_us = on;
        new
    }

    /// Peers not heard of for [`PEER_EXPIRY`] leave (a banned peer stays
    /// until its ban ends); the ones that left.
    pub fn expire(&mut self, now: Instant) -> Vec<NodeId> {
        let mut gone = Vec::new();
        self.peers.retain(|id, p| {
            let keep = p.live(now) || p.banned(now);
            if !keep {
                gone.push(*id);
            }
            keep
        });
        gone.sort_unstable();
        gone
    }

    pub fn addr(&self, id: &NodeId) -> Option<SocketAddr> {
        self.peers.get(id).map(|p| p.addr)
    }

    pub fn len(&self) -> usize {
        self.peers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }

    /// Peers that may serve a chunk: every live, unbanned peer, those whose
    /// announcement, tracker listing or feed covers the chunk marked complete.
    pub fn candidates(&self, now: Instant, object_id: ObjectId, index: u32) -> Vec<Candidate<NodeId>> {
        let mut out = self
            .peers
            .iter()
            .filter(|(_, p)| !p.banned(now) && p.live(now))
            .map(|(id, p)| Candidate {
                peer: *id,
                complete: p.feeds_us
                    || p.have.get(&object_id).is_some_and(|b| b.get(index))
                    || p.listed.contains(&(object_id, index)),
                same_island: p.same_island(now),
                // Not yet measured sorts first: each peer gets measured once.
                rtt: p.rtt.unwrap_or(Duration::ZERO),
                strikes: p.strikes,
            })
            .collect::<Vec<_>>();
        // In id order: the planner's seeded tie-breaks then decide alone,
        // so a simulation runs the same every time.
        out.sort_unstable_by_key(|c| c.peer);
        out
    }

    /// RTTs measured on the connections to peers.
    pub fn note_rtts(&mut self, rtts: &HashMap<NodeId, Duration>) {
        for (id, rtt) in rtts {
            if let Some(p) = self.peers.get_mut(id) {
                p.rtt = Some(*rtt);
            }
        }
    }

    /// `n` pieces of data from `id` failed the broadcaster's checks.
    pub fn strike(&mut self, now: Instant, id: &NodeId, n: u32) -> Strike {
        let Some(p) = self.peers.get_mut(id) else { return Strike { strikes: 0, banned_now: false } };
        p.strikes = p.strikes.saturating_add(n);
        let banned_now = p.strikes >= STRIKES_TO_BAN && !p.banned(now);
        if banned_now {
            p.banned_until = Some(now + BAN_FOR);
        }
        Strike { strikes: p.strikes, banned_now }
    }

    /// Each peer, by node id.
    pub fn view(&self, now: Instant) -> Vec<PeerView> {
        let mut out: Vec<PeerView> = self
            .peers
            .iter()
            .map(|(id, p)| PeerView {
                id: *id,
                addr: p.addr,
                since_seen: now.saturating_duration_since(p.last_seen),
                strikes: p.strikes,
                banned: p.banned(now),
                rtt: p.rtt,
                via: if p.same_island(now) {
                    Via::Island
                } else if p.feeds_us {
                    Via::Bridge
                } else {
                    Via::Tracker
                },
            })
            .collect();
        out.sort_by_key(|v| v.id.0);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn id(n: u8) -> NodeId {
        NodeId([n; 32])
    }
    fn at(port: u16) -> SocketAddr {
        SocketAddr::from(([192, 0, 2, 1], port))
    }
    fn holding(object: ObjectId, chunks: u32, held: &[u32]) -> Vec<(ObjectId, ChunkBitmap)> {
        let mut b = ChunkBitmap::new(chunks);
        for c in held {
            b.set(*c);
        }
        vec![(object, b)]
    }

    #[test]
    fn the_island_loss_is_the_worst_its_live_hubs_announce() {
        let t0 = Instant::now();
        let mut t = PeerTable::default();
        assert_eq!(t.island_loss(t0), None);
        t.heard(t0, id(1), at(1), Vec::new(), Some(12));
        t.heard(t0, id(2), at(2), Vec::new(), None);
        t.listed(t0, id(3), at(3), ObjectId([1; 32]), 0); // not of this island
        assert_eq!(t.island_loss(t0), Some(12));
        t.heard(t0 + S, id(2), at(2), Vec::new(), Some(48));
        assert_eq!(t.island_loss(t0 + S), Some(48));
        // Hub 1 falls silent: only hub 2's figure counts once it is gone.
        t.heard(t0 + PEER_EXPIRY, id(1), at(1), Vec::new(), Some(3));
        assert_eq!(t.island_loss(t0 + PEER_EXPIRY), Some(48));
        assert_eq!(t.island_loss(t0 + S + PEER_EXPIRY), Some(3));
    }

    #[test]
    fn candidates_are_live_unbanned_peers_marked_complete_by_what_they_hold() {
        let (t0, obj) = (Instant::now(), ObjectId([7; 32]));
        let mut t = PeerTable::default();
        assert!(t.heard(t0, id(1), at(1), holding(obj, 4, &[2]), None));
        assert!(!t.heard(t0, id(1), at(1), holding(obj, 4, &[2]), None), "known now");
        assert!(t.listed(t0, id(2), at(2), obj, 3));
        assert!(t.feeding(t0, id(3), at(3), true));
        let complete = |c: &[Candidate<NodeId>], n| c.iter().find(|c| c.peer == id(n)).map(|c| c.complete);
        let c = t.candidates(t0, obj, 2);
        assert_eq!(
            (complete(&c, 1), complete(&c, 2), complete(&c, 3)),
            (Some(true), Some(false), Some(true))
        );
        let c = t.candidates(t0, obj, 3);
        assert_eq!(
            (complete(&c, 1), complete(&c, 2), complete(&c, 3)),
            (Some(false), Some(true), Some(true))
        );
        assert!(c.iter().find(|c| c.peer == id(1)).unwrap().same_island);
        assert!(!c.iter().find(|c| c.peer == id(2)).unwrap().same_island);
        // Silent for the expiry: no longer a candidate, and gone.
        let later = t0 + PEER_EXPIRY;
        assert!(t.candidates(later, obj, 2).is_empty());
        assert_eq!(t.expire(later), [id(1), id(2), id(3)]);
        assert!(t.is_empty());
    }

    #[test]
    fn three_strikes_ban_for_ten_minutes_and_a_ban_outlives_silence() {
        let (t0, obj) = (Instant::now(), ObjectId([7; 32]));
        let mut t = PeerTable::default();
        t.heard(t0, id(1), at(1), Vec::new(), None);
        assert_eq!(t.strike(t0, &id(1), 2), Strike { strikes: 2, banned_now: false });
        assert_eq!(t.strike(t0, &id(1), 1), Strike { strikes: 3, banned_now: true });
        assert_eq!(t.strike(t0, &id(1), 1), Strike { strikes: 4, banned_now: false }, "banned already");
        assert!(t.candidates(t0, obj, 0).is_empty(), "a banned peer is asked for nothing");
        // Silent, yet kept (and banned) while the ban lasts; then gone.
        assert!(t.expire(t0 + PEER_EXPIRY).is_empty());
        assert!(t.view(t0 + 60 * S)[0].banned);
        assert_eq!(t.expire(t0 + BAN_FOR), [id(1)]);
        // Unknown peers are not counted.
        assert_eq!(t.strike(t0, &id(9), 5), Strike { strikes: 0, banned_now: false });
    }

    #[test]
    fn an_island_peer_keeps_its_announced_address_and_a_tracker_listing_does_not_move_it() {
        let (t0, obj) = (Instant::now(), ObjectId([7; 32]));
        let mut t = PeerTable::default();
        t.heard(t0, id(1), at(1), Vec::new(), None);
        t.listed(t0 + S, id(1), at(99), obj, 0);
        assert_eq!(t.addr(&id(1)), Some(at(1)));
        assert_eq!(t.view(t0 + S)[0].via, Via::Island);
        // Once no longer heard on the island, the tracker's address counts.
        let later = t0 + PEER_EXPIRY + S;
        t.listed(later, id(1), at(99), obj, 0);
        assert_eq!((t.addr(&id(1)), t.view(later)[0].via), (Some(at(99)), Via::Tracker));
        t.feeding(later, id(1), at(98), true);
        assert_eq!(t.view(later)[0].via, Via::Bridge);
    }

    #[test]
    fn the_table_is_bounded() {
        let t0 = Instant::now();
        let mut t = PeerTable::default();
        for n in 0..MAX_PEERS + 10 {
            let mut raw = [0u8; 32];
            raw[..8].copy_from_slice(&(n as u64).to_be_bytes());
            t.heard(t0, NodeId(raw), at(1), Vec::new(), None);
        }
        assert_eq!(t.len(), MAX_PEERS);
        assert!(!t.heard(t0, id(0xEE), at(1), Vec::new(), None), "full: not taken");
    }

    #[test]
    fn rtts_are_kept_for_known_peers_only() {
        let t0 = Instant::now();
        let mut t = PeerTable::default();
        t.heard(t0, id(1), at(1), Vec::new(), None);
        let rtts = HashMap::from([(id(1), 3 * S / 1000), (id(2), S)]);
        t.note_rtts(&rtts);
        assert_eq!(t.view(t0).iter().map(|v| v.rtt).collect::<Vec<_>>(), [Some(3 * S / 1000)]);
    }
}
