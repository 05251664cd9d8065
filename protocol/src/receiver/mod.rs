//! The receiver side, sans IO: datagrams in, verified chunks out.
//!
//! The path of a datagram: parse ([`wire::decode`]) → channel tag → verify
//! (manifest or ticket signature through the certificate; a table page against
//! the ticket's page hash; a symbol's digest against its page) → feed the RaptorQ
//! decoder → check the chunk's BLAKE3 → [`Event::ChunkComplete`].
//!
//! A symbol or page whose ticket or page has not arrived yet waits in a pending
//! buffer bounded by [`ReceiverConfig::max_pending_bytes`] (oldest chunk's
//! entries go first). Chunks being collected are bounded by
//! [`ReceiverConfig::max_active_chunks`]. Every datagram that is not used is
//! counted under a [`DropReason`].
//!
//! Symbols whose page is known are held as candidates and their digests checked
//! [`VERIFY_BATCH`] at a time (one SIMD pass), or at once when a chunk has enough
//! candidates to decode, or when [`Receiver::poll_event`] runs out of events. Only
//! checked symbols count, are kept, or reach the decoder.
//!
//! A chunk is decoded once it holds K + [`DECODE_MARGIN`] verified symbols, or
//! with at least K as soon as its symbols stop coming: a datagram of another chunk
//! arrives, or the owner calls [`Receiver::handle_idle`].
//!
//! Calling order: [`Receiver::mark_complete`] for chunks already stored (on a
//! restart), then [`Receiver::handle_datagram`] for each datagram of a batch (a
//! socket read), then [`Receiver::poll_event`] until `None`. Polling after every
//! datagram is correct too, but checks digests one at a time. Call
//! [`Receiver::handle_idle`] when the network has been quiet for a while (the hub
//! does every second), so a chunk whose last symbols were the last to arrive is
//! decoded.

mod drops;
mod input;
mod needs;

pub use drops::{DropCounters, DropReason};

use crate::digest::symbol_digests;
use crate::fec::{page_hash, page_of, page_range, ChunkDecoder};
use crate::peer_wire::EsiRanges;
use crate::sender::{chunk_count, chunk_range};
use crate::verify::{VerifiedManifest, VerifiedTicket, Verifier};
use crate::wire::{self, Datagram, Hash, LiveSegment, Manifest, SymbolPacket, TablePage, DIGEST_LEN};
use crate::ObjectId;
use hubcast_keys::{Fingerprint, NodeAddr, TrustAnchor};
use std::collections::{HashMap, HashSet, VecDeque};

/// Limits of the receiver's memory.
#[derive(Clone, Debug)]
pub struct ReceiverConfig {
    /// Chunks collected at once; the least recently used is dropped past this.
    /// Default 256: at heavy loss no chunk decodes from one round, and every
    /// partial chunk dropped is asked of the origin whole (at 50% loss and
    /// 16, a 32-chunk file cost 2.8 × its size in origin repair; at 64, a
    /// 256-chunk file 5.1-5.5 ×, and 3.9 × with room for all of it). 256
    /// partial chunks of 1 MiB are at most 256 MiB of a hub's memory, used
    /// only while that many are incomplete.
    pub max_active_chunks: usize,
    /// Bytes of symbols and pages held while their ticket or page is missing
    /// (at 50% loss, all three copies of a page are lost one time in eight).
    /// Default 32 MiB.
    pub max_pending_bytes: usize,
    /// Objects whose manifests are remembered. Default 100 000.
    pub max_objects: usize,
    /// Segments of a live channel remembered, counting back from the newest.
    /// Older ones are forgotten, and a manifest for one is refused as rolled
    /// back. Default 120.
    pub live_window: u64,
    /// Take every pushed archive object from the carousel (`--keep all`).
    /// Off, only those chosen ([`Receiver::choose`]: `--keep tagged`) and
    /// those the user asks for; live segments and the catalog's own objects
    /// always. Default on.
    pub keep_pushed: bool,
}

impl Default for ReceiverConfig {
    fn default() -> Self {
        ReceiverConfig {
            max_active_chunks: 256,
            max_pending_bytes: 32 << 20,
            max_objects: 100_000,
            live_window: 120,
            keep_pushed: true,
        }
    }
}

/// Lost chunks remembered for repair at once; more wait for the carousel.
pub const MAX_LOST_CHUNKS: usize = 65_536;

/// Live channels one receiver follows at once.
pub const MAX_LIVE_CHANNELS: usize = 16;

/// A chunk whose bytes hash to the signed ticket's chunk hash. Only the
/// receiver makes these.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedChunk {
    object_id: ObjectId,
    index: u32,
    hash: Hash,
    data: Vec<u8>,
    ticket: Vec<u8>,
    /// The table pages the receiver held verified: (page index, digests).
    pages: Vec<(u16, Vec<u8>)>,
}

impl VerifiedChunk {
    pub fn object_id(&self) -> ObjectId {
        self.object_id
    }
    pub fn index(&self) -> u32 {
        self.index
    }
    pub fn hash(&self) -> &Hash {
        &self.hash
    }
    pub fn data(&self) -> &[u8] {
        &self.data
    }
    /// The signed ticket datagram the chunk was verified against, as received:
    /// what a hub keeps to serve the chunk to peers.
    pub fn ticket(&self) -> &[u8] {
        &self.ticket
    }
    /// The digest table pages that were checked against the ticket while the
    /// chunk was collected: kept beside it, a hub serves them without
    /// re-hashing or re-encoding the chunk.
    pub fn pages(&self) -> &[(u16, Vec<u8>)] {
        &self.pages
    }
}

/// What the receiver tells its owner.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A manifest seen for the first time (or a newer one for the same object).
    Manifest(VerifiedManifest),
    ChunkComplete(VerifiedChunk),
}

/// What a datagram's header said: whether a hub relayed it (`--remulticast`),
/// and the chunk it belongs to (`None` for a manifest). Not verified: it tells
/// the owner where the multicast is, never what to trust.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Heard {
    pub relayed: bool,
    pub chunk: Option<(ObjectId, u32)>,
}

/// Counters of accepted data.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReceiverStats {
    pub datagrams: u64,
    pub symbols_accepted: u64,
    pub symbol_bytes_accepted: u64,
    pub chunks_completed: u64,
    pub decode_attempts: u64,
}

type ChunkKey = (ObjectId, u32);

/// Objects whose multicast progress is remembered, for [`Receiver::needs`].
const RECENT_OBJECTS: usize = 8;

#[derive(Clone, Copy, Debug, Default)]
struct Progress {
    /// The highest chunk index the multicast has reached.
    max_index: u32,
    /// The multicast has gone on to another object.
    passed: bool,
    /// The multicast went quiet after `max_index`: that chunk has passed too
    /// (the chunks after it may not have been sent yet).
    quiet: bool,
}

/// A chunk the hub lacks: where a repair plan starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChunkNeed {
    pub object_id: ObjectId,
    pub index: u32,
    /// Symbols to hold: K (from the ticket, or the manifest when the ticket is
    /// missing), or one more than a decode that failed had.
    pub k: u32,
    /// K itself: ESIs below it are source symbols.
    pub sources: u32,
    pub n_max: u32,
    /// ESIs held, by ESI (all false without a ticket).
    pub held: Vec<bool>,
    /// Table pages held: bit g = page g.
    pub pages: u32,
    pub has_ticket: bool,
    /// The multicast is still sending this chunk: what is missing may yet come.
    pub window_open: bool,
    /// A live segment's playout deadline, unix ms: no use after it.
    pub deadline_ms: Option<u64>,
}

impl ChunkNeed {
    pub fn held_count(&self) -> u32 {
        self.held.iter().filter(|h| **h).count() as u32
    }
}

/// Candidate symbols whose digests are checked in one pass.
pub const VERIFY_BATCH: usize = 16;

/// Verified symbols beyond K before decoding while symbols keep coming. With at
/// least K' + H symbols (H ≤ 11 for K ≤ 2048) raptorq solves without its GF(256)
/// HDPC rows, several times faster than from exactly K (docs/BENCHMARKS.md).
pub const DECODE_MARGIN: usize = 15;

impl ActiveChunk {
    /// Verified symbols held, in the decoder or waiting for it.
    fn held(&self) -> usize {
        self.decoder.as_ref().map_or(0, ChunkDecoder::held) + self.verified.len()
    }

    /// Symbols to hold before decoding can succeed: K, or one more than a
    /// decode that failed had (RaptorQ fails now and then with exactly K).
    fn target(&self) -> usize {
        (self.k as usize).max(self.tried_at + 1)
    }
}

struct ActiveChunk {
    ticket: VerifiedTicket,
    /// The ticket datagram as it arrived, to skip parsing and verifying repeats.
    ticket_raw: Vec<u8>,
    k: u32,
    n_max: u32,
    pages: Vec<Option<Box<[u8]>>>,
    have: Vec<bool>,
    /// Symbols held but not yet checked against their digests.
    candidates: Vec<(u32, Vec<u8>)>,
    /// Checked symbols not yet handed to the decoder.
    verified: Vec<(u32, Vec<u8>)>,
    /// Created at the first decode attempt; keeps the symbols handed to it.
    decoder: Option<ChunkDecoder>,
    /// Verified symbol count at the last failed decode, so we try again only with more.
    tried_at: usize,
    /// Source symbols (ESI < K) held, checked or not: with all K, decoding is
    /// a copy, done at once (a bridge's feed sends just those).
    sources_held: u32,
    last_used: u64,
}

#[derive(Default)]
struct Pending {
    pages: Vec<(u16, Vec<u8>)>,
    symbols: Vec<(u32, Vec<u8>)>,
    bytes: usize,
}

/// Objects whose manifest datagrams the receiver keeps ([`Receiver::manifest_datagram`]).
pub const MAX_MANIFEST_DATAGRAMS: usize = 1024;
/// Idle ticks without a multicast datagram after which the multicast has
/// passed everything it showed ([`Receiver::handle_idle`]).
pub const QUIET_PASSES_AFTER: u32 = 2;
/// Idle ticks without a multicast datagram (or a feed's) after which every
/// object the receiver has seen is taken as passed, its chunks never shown
/// too: a bridge's feed that ended before the object's last chunks, or a
/// multicast lost for that long, is not waited for.
pub const QUIET_ENDS_AFTER: u32 = 10;

/// The segments of one live channel the receiver remembers.
#[derive(Default)]
struct LiveChannel {
    newest: u64,
    /// By segment sequence: the object and its playout deadline.
    segments: std::collections::BTreeMap<u64, (ObjectId, u64)>,
}

pub struct Receiver {
    config: ReceiverConfig,
    verifier: Verifier,
    channel_tag: u64,
    manifests: HashMap<ObjectId, VerifiedManifest>,
    /// The datagrams of recently accepted manifests, as received (signature
    /// checked): what a bridge forwards. At most [`MAX_MANIFEST_DATAGRAMS`].
    manifest_datagrams: HashMap<ObjectId, Vec<u8>>,
    manifest_order: VecDeque<ObjectId>,
    seq_by_name: HashMap<String, u64>,
    /// The tracker named by the newest verified manifest that names one, with
    /// that manifest's sequence number.
    tracker: Option<(u64, NodeAddr)>,
    active: HashMap<ChunkKey, ActiveChunk>,
    complete: HashSet<ChunkKey>,
    /// Objects the hub does not keep: their chunks are dropped as they
    /// come and never asked for ([`Receiver::set_unwanted`]).
    unwanted: HashSet<ObjectId>,
    /// Pushed objects the hub takes though `keep_pushed` is off
    /// ([`Receiver::choose`]); at most `max_objects`.
    chosen: HashSet<ObjectId>,
    /// Chunks the hub held and lost (damaged or missing on disk): wanted
    /// again whether or not the multicast is near them, so repair asks peers.
    /// At most [`MAX_LOST_CHUNKS`].
    lost: std::collections::BTreeSet<ChunkKey>,
    /// Chunks a reader waits for (the gateway), newest first: repair asks
    /// for them before any other ([`Receiver::await_chunk`]).
    awaited: VecDeque<ChunkKey>,
    pending: HashMap<ChunkKey, Pending>,
    pending_order: VecDeque<ChunkKey>,
    pending_bytes: usize,
    /// Chunks holding unchecked candidates (may repeat; checking twice is a no-op).
    unverified: Vec<ChunkKey>,
    digest_scratch: Vec<crate::wire::SymbolDigest>,
    /// The chunk the last multicast ticket, page or symbol was for.
    current: Option<ChunkKey>,
    /// How far the multicast has gone through recent objects, to tell a chunk
    /// the sender has passed (missed: repair it) from one not sent yet.
    progress: VecDeque<(ObjectId, Progress)>,
    /// The datagram being handled came from a peer, not the multicast.
    from_peer: bool,
    /// Idle ticks since the last multicast datagram.
    quiet_ticks: u32,
    /// Wall-clock time, unix ms: the latest of [`Receiver::handle_time`] and
    /// the seconds given with datagrams. Live deadlines are checked against it.
    now_ms: u64,
    /// Live channels by name: the segments remembered.
    live: HashMap<String, LiveChannel>,
    /// The root another channel's manifests on this group name, and the
    /// second it was last read (one parse a second at most: a certificate
    /// costs two curve-point decompressions). Unverified: for a hint only.
    foreign_root: Option<(Fingerprint, u64)>,
    use_clock: u64,
    /// The newest verified feedback (the echo of loss reports).
    feedback: Option<wire::Feedback>,
    /// The newest catalog root verified (or restored), with its datagram;
    /// `catalog_new` until [`Receiver::take_new_catalog_root`] takes it.
    catalog: Option<(wire::CatalogRoot, Vec<u8>)>,
    catalog_new: bool,
    /// The datagram of the revocation list the verifier holds, and whether
    /// [`Receiver::take_new_revocations`] has yet to take it.
    revocations: Option<Vec<u8>>,
    revocations_new: bool,
    /// Rotations followed that the hub has yet to take for its store.
    rotations_new: Vec<(u64, Vec<u8>)>,
    events: VecDeque<Event>,
    drops: DropCounters,
    stats: ReceiverStats,
}

impl Receiver {
    pub fn new(anchor: TrustAnchor, config: ReceiverConfig) -> Self {
        Receiver {
            config,
            channel_tag: anchor.fingerprint.channel_tag(),
            verifier: Verifier::new(anchor),
            manifests: HashMap::new(),
            manifest_datagrams: HashMap::new(),
            manifest_order: VecDeque::new(),
            seq_by_name: HashMap::new(),
            tracker: None,
            active: HashMap::new(),
            complete: HashSet::new(),
            unwanted: HashSet::new(),
            chosen: HashSet::new(),
            lost: std::collections::BTreeSet::new(),
            awaited: VecDeque::new(),
            pending: HashMap::new(),
            pending_order: VecDeque::new(),
            pending_bytes: 0,
            unverified: Vec::new(),
            digest_scratch: Vec::new(),
            current: None,
            progress: VecDeque::new(),
            from_peer: false,
            quiet_ticks: 0,
            now_ms: 0,
            live: HashMap::new(),
            foreign_root: None,
            use_clock: 0,
            feedback: None,
            catalog: None,
            catalog_new: false,
            revocations: None,
            revocations_new: false,
            rotations_new: Vec::new(),
            events: VecDeque::new(),
            drops: DropCounters::default(),
            stats: ReceiverStats::default(),
        }
    }

    /// The network has been quiet: decode every chunk that holds enough
    /// symbols. Called about once a second ([`crate::hub::IDLE_TICK`]). After
    /// [`QUIET_PASSES_AFTER`] of them without a multicast datagram the
    /// multicast has passed every chunk it showed, the furthest too: one it
    /// never brought a ticket of (the last, at the end of a one-shot round
    /// whose closing manifest was lost too) is listed for repair, not waited
    /// for. Chunks it has not shown are not: a feed or multicast that pauses
    /// goes on where it was. After [`QUIET_ENDS_AFTER`] they are too.
    pub fn handle_idle(&mut self) {
        let keys: Vec<ChunkKey> = self.active.keys().copied().collect();
        for key in keys {
            let r = self.settle(key);
            self.count(r);
        }
        self.quiet_ticks = self.quiet_ticks.saturating_add(1);
        if self.quiet_ticks == QUIET_PASSES_AFTER {
            for (_, p) in self.progress.iter_mut() {
                p.quiet = true;
            }
        }
        if self.quiet_ticks == QUIET_ENDS_AFTER {
            for (_, p) in self.progress.iter_mut() {
                p.passed = true;
            }
        }
    }

    /// Check a chunk's candidates and decode it if it holds at least K symbols.
    fn settle(&mut self, key: ChunkKey) -> Result<(), DropReason> {
        self.verify_candidates(key)?;
        match self.active.get(&key) {
            Some(c) if c.held() >= c.k as usize && c.held() > c.tried_at => self.try_decode(key),
            _ => Ok(()),
        }
    }

    /// Tell the receiver a chunk is already stored, so its datagrams are ignored.
    pub fn mark_complete(&mut self, object_id: ObjectId, index: u32) {
        let key = (object_id, index);
        self.active.remove(&key);
        self.complete.insert(key);
    }

    /// Stop keeping an object (`true`: the hub evicted it, or does not
    /// choose it) or keep it again (`false`: it is wanted after all, and its
    /// chunks are collected from then on). What was collected of it goes.
    pub fn set_unwanted(&mut self, object_id: ObjectId, unwanted: bool) {
        if !unwanted {
            self.unwanted.remove(&object_id);
            return;
        }
        self.unwanted.insert(object_id);
        self.active.retain(|k, _| k.0 != object_id);
        self.complete.retain(|k| k.0 != object_id);
        self.lost.retain(|k| k.0 != object_id);
        let dropped: Vec<ChunkKey> = self.pending.keys().filter(|k| k.0 == object_id).copied().collect();
        for key in dropped {
            self.take_pending(&key);
        }
        if self.current.is_some_and(|(id, _)| id == object_id) {
            self.current = None;
        }
    }

    /// The pushed objects this hub takes when it does not take them all
    /// (`keep_pushed` off): the ones its `--keep tagged` tags select in the
    /// newest catalog (the caller leaves out what it evicted). Replaces the
    /// choice before; those chosen and known are taken from now on (those
    /// the carousel has passed are for repair). One no longer chosen is not
    /// dropped: what the store holds of it stays until the quota needs room.
    pub fn choose(&mut self, ids: &[ObjectId]) {
        self.chosen.clear();
        for id in ids.iter().take(self.config.max_objects) {
            self.chosen.insert(*id);
            if self.manifests.get(id).is_some_and(|m| !m.on_demand) {
                self.unwanted.remove(id);
            }
        }
    }

    /// Whether an object whose manifest this hub sees for the first time is
    /// taken without the user asking: not on demand, and pushed to all
    /// (`keep_pushed`), chosen, live or the catalog's.
    pub(super) fn taken_unasked(&self, m: &Manifest) -> bool {
        !m.on_demand
            && (self.config.keep_pushed
                || m.live.is_some()
                || crate::catalog::is_catalog_name(&m.name)
                || self.chosen.contains(&m.object_id))
    }

    /// Whether the hub keeps `object_id` ([`Receiver::set_unwanted`]).
    pub fn is_unwanted(&self, object_id: &ObjectId) -> bool {
        self.unwanted.contains(object_id)
    }

    /// A chunk reported complete could not be stored: collect it again.
    pub fn forget_complete(&mut self, object_id: ObjectId, index: u32) {
        self.complete.remove(&(object_id, index));
    }

    /// A stored chunk was found damaged or missing and dropped from the
    /// store: collect it again, and list it in [`Receiver::needs`] at once
    /// (the multicast may have passed it long ago), so peers repair it.
    pub fn handle_lost_chunk(&mut self, object_id: ObjectId, index: u32) {
        let key = (object_id, index);
        self.complete.remove(&key);
        let known = self.manifests.get(&object_id).is_some_and(|m| index < chunk_count(m.size, m.chunk_size));
        if known && self.lost.len() < MAX_LOST_CHUNKS {
            self.lost.insert(key);
        }
    }

    /// Remember a manifest the store already holds (a restart), without an event.
    pub fn remember_manifest(&mut self, m: VerifiedManifest) {
        match m.live {
            Some(live) => {
                let ch = self.live.entry(m.name.clone()).or_default();
                ch.segments.insert(live.seq, (m.object_id, live.deadline_ms));
                ch.newest = ch.newest.max(live.seq);
            }
            None => {
                self.seq_by_name.insert(m.name.clone(), m.seq);
            }
        }
        self.manifests.insert(m.object_id, m);
    }

    /// The wall clock, unix ms. Chunks of live segments whose playout
    /// deadline has passed stop being collected (and repaired).
    pub fn handle_time(&mut self, unix_ms: u64) {
        self.now_ms = self.now_ms.max(unix_ms);
        let late: Vec<ChunkKey> =
            self.active.keys().filter(|(id, _)| self.past_deadline(id)).copied().collect();
        for key in late {
            self.active.remove(&key);
        }
    }

    /// Whether `id` is a live segment whose playout deadline has passed.
    fn past_deadline(&self, id: &ObjectId) -> bool {
        self.manifests.get(id).and_then(|m| m.live).is_some_and(|l| l.deadline_ms < self.now_ms)
    }

    /// Forget an object altogether: a live segment that left the window.
    fn forget_object(&mut self, id: ObjectId) {
        if let Some(m) = self.manifests.remove(&id) {
            for index in 0..chunk_count(m.size, m.chunk_size) {
                self.complete.remove(&(id, index));
                self.active.remove(&(id, index));
            }
        }
        self.manifest_datagrams.remove(&id);
        self.manifest_order.retain(|o| *o != id);
        self.progress.retain(|(o, _)| *o != id);
    }

    /// The next event. When none is queued, checks the candidates held so far
    /// first (which may complete chunks).
    pub fn poll_event(&mut self) -> Option<Event> {
        if self.events.is_empty() {
            for key in std::mem::take(&mut self.unverified) {
                let r = self.verify_candidates(key);
                self.count(r);
            }
        }
        self.events.pop_front()
    }

    /// The newest verified feedback datagram: the echo of loss reports.
    pub fn feedback(&self) -> Option<wire::Feedback> {
        self.feedback
    }

    /// The channel's tracker as its newest verified manifest names it.
    pub fn tracker(&self) -> Option<NodeAddr> {
        self.tracker.map(|(_, t)| t)
    }

    /// The root fingerprint another channel's manifests on the multicast
    /// name: a hub given the wrong `--trust` hears only that one. Read from
    /// the certificate as sent, not verified: it tells the operator what is
    /// on the group, never what to trust.
    pub fn foreign_root(&self) -> Option<Fingerprint> {
        self.foreign_root.map(|(f, _)| f)
    }

    fn note_foreign(&mut self, unix_now: u64, kind: wire::Kind, datagram: &[u8]) {
        if self.from_peer
            || kind != wire::Kind::Manifest
            || self.foreign_root.is_some_and(|(_, at)| at >= unix_now)
        {
            return;
        }
        if let Ok((_, Datagram::Manifest(m))) = wire::decode(datagram) {
            self.foreign_root = Some((Fingerprint::of(&m.cert.root), unix_now));
        }
    }

    pub fn drops(&self) -> &DropCounters {
        &self.drops
    }

    /// The tag of the channel this receiver trusts (its root's).
    pub fn channel_tag(&self) -> u64 {
        self.channel_tag
    }

    pub fn stats(&self) -> ReceiverStats {
        self.stats
    }
}
