//! The hub, sans IO: one machine that takes what arrives (multicast, peers'
//! answers, the origin's repair, a bridge's feed, announcements, the tracker's
//! listings, the store's refusals, the clock) and says what to do next.
//!
//! It owns the [`Receiver`], the repair planner, the [`PeerTable`] with its
//! one strike ledger, what this hub holds and announces, which origin
//! service it knows (from `--tracker` or the channel's manifests), and when
//! a NAK may go (only while the origin's multicast is heard here: its repair
//! goes out on multicast). It reads no clock and does no IO: the driver
//! (`clienthub`, or a simulation) hands `now` in and carries the outputs out.
//!
//! # Calling order
//!
//! 1. [`Hub::handle_input`] for what arrived. Several multicast datagrams
//!    may go in before the outputs are taken: the receiver checks their
//!    digests many at a time.
//! 2. [`Hub::poll_output`] until it returns `None`, carrying each
//!    [`Output`] out. A fetch, lookup or refusal the driver could not carry
//!    out comes back as input (a failed [`Input::Fetched`], say).
//! 3. Wait for the next input or [`Hub::poll_timeout`], whichever is first;
//!    at the timeout hand in [`Input::Timer`].
//!
//! Bytes by source and strikes come out as [`HubEvent`]s, each chunk with
//! the path that completed it.

use crate::announce::Announcement;
use crate::feedback::{Echo, LossReporter};
use crate::forest::{Msg, Tree};
use crate::loss::LossMeter;
use crate::peer_wire::ForestPeer;
use crate::peer_wire::{ChunkBitmap, ListedHub, MAX_NAKS_PER_STREAM};
use crate::peers::{PeerTable, Strike, Via};
use crate::rate::{BehindMeter, Verdict};
use crate::receiver::{DropCounters, DropReason, Event, Receiver, ReceiverConfig};
use crate::repair::{Nak, Outcome, RepairConfig, RepairStats, Repaired, Repairer};
use crate::serve::ChunkRequest;
use crate::store::StoredManifest;
use crate::verify::VerifiedManifest;
use crate::wire;
use crate::ObjectId;
use hubcast_keys::{NodeAddr, NodeId, TrustAnchor};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

pub use io::{HubEvent, Input, Output, Source};

mod desert;
mod forest;
mod io;
mod loss;
mod repair;
pub use desert::{
    BRIDGES_ASKED, LOOK_AGAIN_AFTER, MAX_BANNED_BRIDGES, MOVE_REST, RECHECK_AFTER, RECHECK_EVERY,
    RETRY_BRIDGE_AFTER, RETRY_REFUSED_AFTER, STEADY_MULTICAST,
};

/// Multicast datagrams a second that mean the carousel runs: a fed hub that
/// hears that many goes back to the multicast at once.
pub const BUSY_MULTICAST: u32 = 100;
pub use forest::{ForestEvent, ForestRole, ForestView, FOREST_TICK, TRACKER_WAIT, WELCOME_WAIT};

/// How often the repair planner looks at what is missing.
pub const REPAIR_TICK: Duration = Duration::from_millis(50);
/// Chunks whose symbols stopped coming are decoded with what they hold after this.
pub const IDLE_TICK: Duration = Duration::from_secs(1);
/// A hub announces what it holds on its island's control group this often.
pub const ANNOUNCE_EVERY: Duration = Duration::from_secs(2);
/// A hub registers with the tracker this often (it forgets hubs after 30 s).
pub const REGISTER_EVERY: Duration = Duration::from_secs(10);
/// "No origin for this NAK" is said at most this often.
pub const NAK_WARN_EVERY: Duration = Duration::from_secs(30);
/// Hubs one tracker lookup asks for: more than the peers a chunk's repair asks
/// at once, so some are left when one fails.
pub const LOOKUP_LIMIT: u8 = 8;
/// Objects whose holdings one registration reports.
const MAX_REPORTED_OBJECTS: usize = 64;
/// A registration's bytes, within what the tracker reads of one stream (1 MiB).
const MAX_REPORT_BYTES: usize = 900 << 10;
/// Chunks the receiver is asked for in one repair plan.
const NEEDS_PER_PLAN: usize = 64;

/// What the hub is: fixed for its life.
#[derive(Clone, Debug)]
pub struct Config {
    pub node_id: NodeId,
    /// Where peers reach this hub's QUIC endpoint (the port; the address is
    /// the one its announcements come from).
    pub quic_port: u16,
    /// Repair from peers, announcements and NAKs. Off: the hub only listens.
    pub peer_repair: bool,
    /// The origin service named by `--tracker`; the manifests' tracker is
    /// then not taken.
    pub tracker: Option<NodeAddr>,
    /// Without multicast for this long a hub wants a bridge's feed, and
    /// stops NAKing (the origin's repair would not reach it).
    pub desert_after: Duration,
    /// `--no-multicast`: a feed from the start.
    pub no_multicast: bool,
    /// Where the hub looks for a bridge's feed when it wants one: these
    /// (`--bridge-peer`) first, then the tracker's list. `None`: it does not
    /// look (no peer side; or a forest hub, whose stripes come from the forest).
    pub bridges: Option<Vec<NodeAddr>>,
    /// This hub's place in the stripe forest (`--stripes`): its root
    /// (a bridge is the root), or `None` outside the forest.
    pub forest: Option<ForestRole>,
    /// This hub sends the feed on again as multicast (`--remulticast`): what
    /// it hears relayed is its own.
    pub remulticast: bool,
    pub receiver: ReceiverConfig,
    pub repair: RepairConfig,
    /// Seeds the repair planner's tie-breaks.
    pub seed: u64,
}

impl Config {
    pub fn new(node_id: NodeId, quic_port: u16) -> Self {
        Config {
            node_id,
            quic_port,
            peer_repair: true,
            tracker: None,
            desert_after: Duration::from_secs(4),
            no_multicast: false,
            bridges: None,
            forest: None,
            remulticast: false,
            receiver: ReceiverConfig::default(),
            repair: RepairConfig::default(),
            seed: 0,
        }
    }
}

/// The hub machine. See the module docs for the calling order.
pub struct Hub {
    config: Config,
    receiver: Receiver,
    repairer: Repairer<NodeId>,
    peers: PeerTable,
    /// Fetches out, by request id: whose answer it is, for which chunk.
    fetches: HashMap<u64, (NodeId, ObjectId, u32)>,
    /// What this hub holds complete, per object: announced and registered.
    holdings: BTreeMap<ObjectId, ChunkBitmap>,
    /// Live segments among the holdings: announced first (their repair has
    /// a deadline).
    live: HashSet<ObjectId>,
    /// The origin service as known now.
    tracker: Option<NodeAddr>,
    started: Instant,
    last_multicast: Option<Instant>,
    /// Since when the multicast has been heard with no gap of `desert_after`.
    multicast_since: Option<Instant>,
    /// Multicast datagrams heard: since this second began, and in the second
    /// before it.
    multicast_rate: (Instant, u32, u32),
    last_origin_multicast: Option<Instant>,
    position: Option<(ObjectId, u32)>,
    feeding: Option<NodeAddr>,
    /// Chunks feeds or a `--remulticast` relay brought any datagram of: the
    /// ones a bridge is asked to feed again.
    fed: repair::FedChunks,
    /// The search for a bridge's feed (`Config::bridges`).
    desert: Option<desert::Desert>,
    forest: Option<forest::Forest>,
    /// The path (and peer) of the inputs whose receiver events and bytes
    /// are not out yet.
    source: (Source, Option<NodeId>),
    /// The receiver's accepted symbol bytes already credited to a path.
    credited: u64,
    out: VecDeque<Output>,
    next_repair: Instant,
    next_idle: Instant,
    next_announce: Instant,
    announce_soon: bool,
    last_registered: Option<Instant>,
    last_nak_warning: Option<Instant>,
    naks_withheld: u64,
    /// The origin's multicast as this hub hears it.
    loss: LossMeter,
    /// A `--remulticast` hub's relay as this hub hears it: announced, so
    /// that the relay is sized for its LAN.
    relay_loss: LossMeter,
    /// When to tell the origin that loss (RFC 4654's suppressed feedback).
    reporter: LossReporter,
    /// The sequence number of the last feedback handed to the reporter.
    feedback_seq: Option<u64>,
    /// Whether this hub keeps up with the rate (`--rate auto`), and the
    /// loss the FEC should cover.
    keeping_up: BehindMeter,
    /// The feedback round the meter last ended, and what it made of it.
    meter_round: Option<u32>,
    verdict: Verdict,
    /// The driver says the receive path is near its bound or dropped.
    overflowing: bool,
}

impl Hub {
    pub fn new(now: Instant, anchor: TrustAnchor, config: Config) -> Self {
        let root = config.forest.is_some_and(|r| r.root.is_none());
        let mut hub = Hub {
            receiver: Receiver::new(anchor, config.receiver.clone()),
            repairer: Repairer::new(config.repair.clone(), config.seed),
            peers: PeerTable::default(),
            fetches: HashMap::new(),
            holdings: BTreeMap::new(),
            live: HashSet::new(),
            tracker: config.tracker,
            started: now,
            last_multicast: None,
            multicast_since: None,
            multicast_rate: (now, 0, 0),
            last_origin_multicast: None,
            position: None,
            feeding: None,
            fed: repair::FedChunks::default(),
            desert: config.bridges.clone().map(|fixed| desert::Desert::new(now, fixed)),
            forest: config.forest.map(|role| forest::Forest::new(now, role)),
            source: (Source::Multicast, None),
            credited: 0,
            out: VecDeque::new(),
            // The first plan at the first timer, as a restarted hub has
            // chunks to repair at once.
            next_repair: now,
            next_idle: now + IDLE_TICK,
            next_announce: now,
            announce_soon: false,
            last_registered: None,
            last_nak_warning: None,
            naks_withheld: 0,
            loss: LossMeter::default(),
            relay_loss: LossMeter::default(),
            reporter: LossReporter::new(
                config.seed ^ u64::from_be_bytes(config.node_id.0[..8].try_into().unwrap_or_default()),
            ),
            feedback_seq: None,
            keeping_up: BehindMeter::default(),
            meter_round: None,
            verdict: Verdict::default(),
            overflowing: false,
            config,
        };
        if root {
            hub.event(HubEvent::Forest(ForestEvent::Root));
        }
        hub
    }

    /// The manifests the store holds at start, as they came: each is
    /// verified again, as of when it came ([`Receiver::restore_manifest`]).
    /// No events. Returns the manifests that hold, and the objects whose
    /// stored manifest does not, with why (the channel sends them again).
    pub fn restore_manifests<'m>(
        &mut self,
        manifests: impl IntoIterator<Item = &'m StoredManifest>,
    ) -> (Vec<VerifiedManifest>, Vec<(ObjectId, DropReason)>) {
        let (mut held, mut refused) = (Vec::new(), Vec::new());
        for stored in manifests {
            let m = match self.receiver.restore_manifest(&stored.datagram, stored.received_unix) {
                Ok(m) if m.object_id == stored.object_id => m,
                Ok(_) => {
                    refused.push((stored.object_id, DropReason::Inconsistent));
                    continue;
                }
                Err(why) => {
                    refused.push((stored.object_id, why));
                    continue;
                }
            };
            if m.live.is_some() {
                self.live.insert(m.object_id);
            }
            self.holdings
                .insert(m.object_id, ChunkBitmap::new(crate::sender::chunk_count(m.size, m.chunk_size)));
            held.push(m);
        }
        (held, refused)
    }

    /// The chunks the store holds at start, and those it found damaged or
    /// missing (repaired at once). After [`Hub::restore_manifests`]. No events.
    pub fn restore_chunks(
        &mut self,
        chunks: impl IntoIterator<Item = (ObjectId, u32)>,
        lost: impl IntoIterator<Item = (ObjectId, u32)>,
    ) {
        for (id, index) in chunks {
            // Held: asked for once, if it is on demand (evicted objects hold
            // no chunk, and are handed in as unwanted after this).
            self.receiver.set_unwanted(id, false);
            self.receiver.mark_complete(id, index);
            if let Some(b) = self.holdings.get_mut(&id) {
                b.set(index);
            }
        }
        for (id, index) in lost {
            self.receiver.handle_lost_chunk(id, index);
        }
    }

    pub fn handle_input(&mut self, now: Instant, unix_ms: u64, input: Input<'_>) {
        let unix = unix_ms / 1000;
        match input {
            Input::Multicast(d) => {
                self.switch_source(Source::Multicast, None);
                if let Some(h) = self.receiver.handle_datagram(unix, d) {
                    self.position = h.chunk.or(self.position);
                    if !h.relayed {
                        self.last_origin_multicast = Some(now);
                    }
                    self.meter_multicast(now, h.chunk, h.relayed, d);
                    // A --remulticast hub hears its own relay: that is no multicast.
                    if !h.relayed || !self.config.remulticast {
                        self.heard_multicast(now);
                    }
                }
                self.take_feedback(now);
            }
            Input::Origin(datagrams) => {
                self.switch_source(Source::Origin, None);
                let mut chunks = Vec::new();
                for d in datagrams {
                    let heard = self.receiver.handle_repair_datagram(unix, d);
                    // The origin's resends travel its multicast (the control
                    // group): a hub that hears them hears the origin, and its
                    // NAKs are answered, between rounds and after the last;
                    // nor is it in a desert.
                    if heard.is_some_and(|h| !h.relayed) {
                        self.last_origin_multicast = Some(now);
                        self.heard_multicast(now);
                    }
                    let key = heard.and_then(|h| h.chunk);
                    if let Some(key) = key.filter(|k| !chunks.contains(k)) {
                        chunks.push(key);
                    }
                }
                for (object_id, index) in chunks {
                    self.receiver.settle_chunk(object_id, index);
                }
                self.flush_events();
            }
            Input::Fetched { id, answer } => self.on_fetched(now, unix, id, answer),
            Input::Bridge { bridge, datagrams } => self.on_bridge(now, unix, bridge, datagrams),
            Input::Bridges(listed) => self.try_bridges(now, listed),
            Input::Feeding(bridge) => self.on_feeding(now, bridge),
            Input::NotSubscribed { bridge, refused } => self.on_not_subscribed(now, bridge, refused),
            Input::FeedEnded(bridge) => self.on_feed_ended(now, bridge),
            Input::Stripe { tree, parent, datagrams } => {
                self.on_bridge(now, unix, parent, datagrams);
                self.stripe_heard(now, tree);
            }
            Input::Forest { from, msg } => self.on_forest_message(now, from, msg),
            Input::StripeEnded { tree, parent, why } => {
                self.on_stripe_ended(now, tree, parent, why.to_string())
            }
            Input::ChildGone { tree, child } => self.on_child_gone(now, tree, child),
            Input::ForestHub(pick) => self.on_forest_hub(now, pick),
            Input::Announcement { from, datagram } => self.on_announcement(now, from, datagram),
            Input::Statements(datagrams) => {
                for d in datagrams {
                    self.receiver.handle_repair_datagram(unix, d);
                }
                self.flush_events();
            }
            Input::Listed { object_id, index, hubs } => self.on_listed(now, object_id, index, hubs),
            Input::StoreFailed { object_id, index } => self.receiver.forget_complete(object_id, index),
            Input::ChunkLost { object_id, index } => {
                self.receiver.handle_lost_chunk(object_id, index);
                if let Some(b) = self.holdings.get_mut(&object_id) {
                    b.clear(index);
                }
                self.plan_repair(now);
            }
            Input::Retired(ids) => {
                for id in ids {
                    self.holdings.remove(id);
                    self.live.remove(id);
                }
            }
            Input::Unwanted(ids) => {
                for id in ids {
                    self.holdings.remove(id);
                    self.receiver.set_unwanted(*id, true);
                }
            }
            Input::Wanted(ids) => {
                for id in ids {
                    self.receiver.fetch_now(*id);
                }
                self.plan_repair(now);
            }
            Input::Choose(ids) => {
                self.receiver.choose(ids);
                self.plan_repair(now);
            }
            Input::Awaited { object_id, index } => {
                if self.receiver.await_chunk(object_id, index) {
                    self.plan_repair(now);
                }
            }
            Input::Rtts(rtts) => self.peers.note_rtts(rtts),
            Input::Timer => self.on_timer(now, unix_ms),
        }
    }

    /// The catalog root the store kept, checked again as of when it came.
    pub fn restore_catalog_root(&mut self, datagram: &[u8], received_unix: u64) -> Result<(), DropReason> {
        self.receiver.restore_catalog_root(datagram, received_unix)
    }

    /// A rotation the store kept, followed again.
    pub fn restore_rotation(&mut self, datagram: &[u8]) -> Result<(), DropReason> {
        self.receiver.restore_rotation(datagram)
    }

    /// The revocation list the store kept, checked again.
    pub fn restore_revocations(&mut self, datagram: &[u8]) -> Result<(), DropReason> {
        self.receiver.restore_revocations(datagram)
    }

    /// The next thing to do, until `None`.
    pub fn poll_output(&mut self) -> Option<Output> {
        if self.out.is_empty() {
            self.flush_events();
        }
        self.out.pop_front()
    }

    /// When to hand in [`Input::Timer`]: every [`REPAIR_TICK`] at least,
    /// which is also how soon live segments past their deadline stop being
    /// collected.
    pub fn poll_timeout(&self) -> Instant {
        let t = self.next_idle.min(self.next_repair);
        if self.config.peer_repair {
            let report = self.reporter.poll_timeout().unwrap_or(t);
            t.min(self.next_announce).min(report)
        } else {
            t
        }
    }

    fn on_timer(&mut self, now: Instant, unix_ms: u64) {
        // Live segments past their deadline stop being collected.
        self.receiver.handle_time(unix_ms);
        if now >= self.next_idle {
            self.next_idle = now + IDLE_TICK;
            // Decode chunks whose symbols stopped coming with fewer than K + margin.
            self.switch_source(Source::Multicast, None);
            self.receiver.handle_idle();
        }
        if now >= self.next_repair {
            self.next_repair = now + REPAIR_TICK;
            self.plan_repair(now);
        }
        if self.config.peer_repair && (now >= self.next_announce || self.announce_soon) {
            self.announce(now);
        }
        self.report_loss(now);
        self.drive_desert(now);
        self.forest_timer(now);
    }

    /// Receiver events and bytes from now on come from `source` (and
    /// `peer`): the ones of the inputs before go out first, credited to theirs.
    fn switch_source(&mut self, source: Source, peer: Option<NodeId>) {
        if (source, peer) != self.source {
            self.flush_events();
            self.source = (source, peer);
        }
    }

    /// Put the receiver's events out (checking what it holds unchecked), and
    /// the symbol bytes it accepted since the last flush, all credited to
    /// the path of the inputs since.
    fn flush_events(&mut self) {
        while let Some(event) = self.receiver.poll_event() {
            match &event {
                Event::Manifest(m) => {
                    if m.live.is_some() {
                        self.live.insert(m.object_id);
                    }
                    if !self.holdings.contains_key(&m.object_id) {
                        let b = self.completed(m);
                        self.holdings.insert(m.object_id, b);
                    }
                    self.learn_tracker();
                }
                Event::ChunkComplete(c) => {
                    if let Some(b) = self.holdings.get_mut(&c.object_id()) {
                        b.set(c.index());
                    }
                }
            }
            self.out.push_back(Output::Store { event, source: self.source.0 });
        }
        if let Some((root, datagram)) = self.receiver.take_new_catalog_root() {
            self.event(HubEvent::Catalog { root, datagram });
        }
        for (version, datagram) in self.receiver.take_new_rotations() {
            self.event(HubEvent::Rotation { version, datagram });
        }
        if let Some(datagram) = self.receiver.take_new_revocations() {
            self.event(HubEvent::Revocations { datagram });
        }
        let accepted = self.receiver.stats().symbol_bytes_accepted;
        if accepted > self.credited {
            let (source, peer) = self.source;
            self.event(HubEvent::Received { source, peer, bytes: accepted - self.credited });
            self.credited = accepted;
        }
    }

    fn event(&mut self, e: HubEvent) {
        self.out.push_back(Output::Event(e));
    }

    /// The chunks of an object the receiver knows complete (stored, or decoded).
    fn completed(&self, m: &wire::Manifest) -> ChunkBitmap {
        let chunks = crate::sender::chunk_count(m.size, m.chunk_size);
        let mut b = ChunkBitmap::new(chunks);
        (0..chunks).filter(|i| self.receiver.is_complete(m.object_id, *i)).for_each(|i| b.set(i));
        b
    }

    /// Take the tracker the channel's verified manifests name, unless
    /// `--tracker` named one. Registers there at the next announcement.
    fn learn_tracker(&mut self) {
        let named = self.receiver.tracker();
        let Some(t) = named.filter(|t| self.config.tracker.is_none() && self.tracker != Some(*t)) else {
            return;
        };
        self.tracker = Some(t);
        self.last_registered = None;
        self.event(HubEvent::TrackerLearned(t));
    }

    /// Register again at the next announcement (the hub's role changed).
    pub fn register_soon(&mut self) {
        self.last_registered = None;
        self.announce_soon = true;
    }

    /// The origin's own multicast (not a relay) was heard within `desert_after`.
    pub fn hears_origin(&self, now: Instant) -> bool {
        self.last_origin_multicast
            .is_some_and(|t| now.saturating_duration_since(t) < self.config.desert_after)
    }

    /// The origin's multicast was heard at some time.
    pub fn ever_heard_origin(&self) -> bool {
        self.last_origin_multicast.is_some()
    }

    /// Multicast, the origin's or a relay's, was heard at some time.
    pub fn ever_heard_multicast(&self) -> bool {
        self.last_multicast.is_some()
    }

    /// Whether the hub wants a bridge's feed: `--no-multicast`, or no
    /// multicast heard for `desert_after` (and the hub has run that long);
    /// and a fed hub until the multicast is back in earnest: at
    /// [`BUSY_MULTICAST`] datagrams a second (the carousel), or heard for
    /// [`STEADY_MULTICAST`] without a gap.
    pub fn wants_feed(&self, now: Instant) -> bool {
        let after = self.config.desert_after;
        let hearing = self.last_multicast.is_some_and(|t| now.saturating_duration_since(t) < after);
        let steady = hearing
            && self.multicast_since.is_some_and(|t| now.saturating_duration_since(t) >= STEADY_MULTICAST);
        self.config.no_multicast
            || (!hearing && now.saturating_duration_since(self.started) >= after)
            || (self.feeding.is_some() && !steady && !self.multicast_busy(now))
    }

    /// Whether the multicast came at [`BUSY_MULTICAST`] datagrams a second
    /// or more, in this second or the one before.
    fn multicast_busy(&self, now: Instant) -> bool {
        let (start, this, last) = self.multicast_rate;
        let recent = now.saturating_duration_since(start) < Duration::from_secs(2);
        recent && this.max(last) >= BUSY_MULTICAST
    }

    /// A datagram of the channel's multicast came at `now`.
    fn heard_multicast(&mut self, now: Instant) {
        let gap =
            self.last_multicast.is_none_or(|t| now.saturating_duration_since(t) >= self.config.desert_after);
        if gap {
            self.multicast_since = Some(now);
        }
        self.last_multicast = Some(now);
        let (start, this, _) = self.multicast_rate;
        let second = Duration::from_secs(1);
        match now.saturating_duration_since(start) {
            d if d < second => self.multicast_rate.1 += 1,
            d if d < 2 * second => self.multicast_rate = (start + second, 1, this),
            _ => self.multicast_rate = (now, 1, 0),
        }
    }

    /// The bridge feeding this hub now.
    pub fn feeding(&self) -> Option<NodeAddr> {
        self.feeding
    }

    /// The chunk the channel (multicast or feed) last brought: where a
    /// subscription to a bridge or a stripe starts.
    pub fn position(&self) -> Option<(ObjectId, u32)> {
        self.position
    }

    /// The origin service as known now.
    pub fn tracker(&self) -> Option<NodeAddr> {
        self.tracker
    }

    pub fn receiver(&self) -> &Receiver {
        &self.receiver
    }

    pub fn peers(&self) -> &PeerTable {
        &self.peers
    }

    pub fn repair_stats(&self) -> RepairStats {
        self.repairer.stats()
    }

    /// NAKs not sent because the origin's multicast was not heard.
    pub fn naks_withheld(&self) -> u64 {
        self.naks_withheld
    }

    /// What this hub holds complete, per object.
    pub fn holdings(&self) -> &BTreeMap<ObjectId, ChunkBitmap> {
        &self.holdings
    }
}
