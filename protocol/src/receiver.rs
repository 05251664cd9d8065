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

use crate::digest::symbol_digests;
use crate::fec::{page_hash, page_of, page_range, ChunkDecoder};
use crate::peer_wire::EsiRanges;
use crate::sender::{chunk_count, chunk_range};
use crate::verify::{VerifiedManifest, VerifiedTicket, Verifier, VerifyError};
use crate::wire::{
    self, Datagram, Hash, LiveSegment, Manifest, SymbolPacket, TablePage, WireError, DIGEST_LEN,
};
use crate::ObjectId;
use hubcast_keys::{CertError, NodeAddr, TrustAnchor};
use std::collections::{HashMap, HashSet, VecDeque};

/// Limits of the receiver's memory.
#[derive(Clone, Debug)]
pub struct ReceiverConfig {
    /// Chunks collected at once; the least recently used is dropped past this.
    /// Default 16.
    pub max_active_chunks: usize,
    /// Bytes of symbols and pages held while their ticket or page is missing.
    /// Default 8 MiB.
    pub max_pending_bytes: usize,
    /// Objects whose manifests are remembered. Default 100 000.
    pub max_objects: usize,
    /// Segments of a live channel remembered, counting back from the newest.
    /// Older ones are forgotten, and a manifest for one is refused as rolled
    /// back. Default 120.
    pub live_window: u64,
}

impl Default for ReceiverConfig {
    fn default() -> Self {
        ReceiverConfig {
            max_active_chunks: 16,
            max_pending_bytes: 8 << 20,
            max_objects: 100_000,
            live_window: 120,
        }
    }
}

/// Live channels one receiver follows at once.
pub const MAX_LIVE_CHANNELS: usize = 16;

/// Why a datagram was not used. Each has a counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DropReason {
    Truncated,
    Oversized,
    BadMagic,
    BadVersion,
    BadKind,
    OutOfRange,
    BadCertificate,
    /// Another channel's traffic on the same group.
    WrongChannel,
    /// Certificate from a root other than the trusted one.
    UntrustedRoot,
    /// Certificate's root signature does not verify.
    CertSignature,
    /// Certificate expired or not yet valid.
    CertValidity,
    /// Manifest or ticket signature does not verify.
    BadSignature,
    Expired,
    /// A manifest older than one already accepted for the same name.
    RolledBack,
    /// A ticket that contradicts the manifest or an earlier ticket.
    Inconsistent,
    /// A table page whose hash is not the ticket's.
    PageMismatch,
    /// A symbol whose digest is not the table's.
    DigestMismatch,
    /// A symbol of the wrong length or beyond N_max for its ticket.
    BadSymbol,
    /// Decoded data whose BLAKE3 is not the ticket's (should never happen).
    ChunkHashMismatch,
    /// Pushed out of the pending buffer before its ticket or page came.
    PendingEvicted,
    /// A partly collected chunk dropped to make room (its symbols are lost).
    ActiveEvicted,
    /// More objects than `max_objects`.
    TooManyObjects,
    /// Already have it (benign).
    Duplicate,
    /// For a chunk already complete (benign).
    AlreadyComplete,
    /// A live segment's manifest or data past its playout deadline.
    Late,
}

impl DropReason {
    pub const ALL: [DropReason; 25] = [
        DropReason::Truncated,
        DropReason::Oversized,
        DropReason::BadMagic,
        DropReason::BadVersion,
        DropReason::BadKind,
        DropReason::OutOfRange,
        DropReason::BadCertificate,
        DropReason::WrongChannel,
        DropReason::UntrustedRoot,
        DropReason::CertSignature,
        DropReason::CertValidity,
        DropReason::BadSignature,
        DropReason::Expired,
        DropReason::RolledBack,
        DropReason::Inconsistent,
        DropReason::PageMismatch,
        DropReason::DigestMismatch,
        DropReason::BadSymbol,
        DropReason::ChunkHashMismatch,
        DropReason::PendingEvicted,
        DropReason::ActiveEvicted,
        DropReason::TooManyObjects,
        DropReason::Duplicate,
        DropReason::AlreadyComplete,
        DropReason::Late,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::Truncated => "truncated",
            DropReason::Oversized => "oversized",
            DropReason::BadMagic => "bad_magic",
            DropReason::BadVersion => "bad_version",
            DropReason::BadKind => "bad_kind",
            DropReason::OutOfRange => "out_of_range",
            DropReason::BadCertificate => "bad_certificate",
            DropReason::WrongChannel => "wrong_channel",
            DropReason::UntrustedRoot => "untrusted_root",
            DropReason::CertSignature => "cert_signature",
            DropReason::CertValidity => "cert_validity",
            DropReason::BadSignature => "bad_signature",
            DropReason::Expired => "expired",
            DropReason::RolledBack => "rolled_back",
            DropReason::Inconsistent => "inconsistent",
            DropReason::PageMismatch => "page_mismatch",
            DropReason::DigestMismatch => "digest_mismatch",
            DropReason::BadSymbol => "bad_symbol",
            DropReason::ChunkHashMismatch => "chunk_hash_mismatch",
            DropReason::PendingEvicted => "pending_evicted",
            DropReason::ActiveEvicted => "active_evicted",
            DropReason::TooManyObjects => "too_many_objects",
            DropReason::Duplicate => "duplicate",
            DropReason::AlreadyComplete => "already_complete",
            DropReason::Late => "late",
        }
    }

    /// Benign drops are a normal part of a carousel; the others mean loss of
    /// data, a misconfiguration or an attack.
    pub fn is_benign(self) -> bool {
        matches!(self, DropReason::Duplicate | DropReason::AlreadyComplete)
    }
}

impl From<WireError> for DropReason {
    fn from(e: WireError) -> Self {
        match e {
            WireError::Truncated => DropReason::Truncated,
            WireError::Oversized => DropReason::Oversized,
            WireError::BadMagic => DropReason::BadMagic,
            WireError::BadVersion => DropReason::BadVersion,
            WireError::BadKind => DropReason::BadKind,
            WireError::OutOfRange => DropReason::OutOfRange,
            WireError::BadCertificate => DropReason::BadCertificate,
        }
    }
}

impl From<VerifyError> for DropReason {
    fn from(e: VerifyError) -> Self {
        match e {
            VerifyError::Cert(CertError::UntrustedRoot) => DropReason::UntrustedRoot,
            VerifyError::Cert(CertError::BadSignature) => DropReason::CertSignature,
            VerifyError::Cert(CertError::OutsideValidity) => DropReason::CertValidity,
            VerifyError::Cert(CertError::Malformed) => DropReason::BadCertificate,
            VerifyError::BadSignature => DropReason::BadSignature,
            VerifyError::Expired => DropReason::Expired,
        }
    }
}

/// Drop counters, one per [`DropReason`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DropCounters([u64; DropReason::ALL.len()]);

impl DropCounters {
    pub fn get(&self, r: DropReason) -> u64 {
        self.0[r as usize]
    }
    fn add(&mut self, r: DropReason) {
        self.0[r as usize] += 1;
    }
    /// Drops that were not benign.
    pub fn harmful(&self) -> u64 {
        DropReason::ALL.iter().filter(|r| !r.is_benign()).map(|r| self.get(*r)).sum()
    }
    pub fn iter(&self) -> impl Iterator<Item = (DropReason, u64)> + '_ {
        DropReason::ALL.iter().map(|r| (*r, self.get(*r)))
    }
}

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
    /// Wall-clock time, unix ms: the latest of [`Receiver::handle_time`] and
    /// the seconds given with datagrams. Live deadlines are checked against it.
    now_ms: u64,
    /// Live channels by name: the segments remembered.
    live: HashMap<String, LiveChannel>,
    use_clock: u64,
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
            pending: HashMap::new(),
            pending_order: VecDeque::new(),
            pending_bytes: 0,
            unverified: Vec::new(),
            digest_scratch: Vec::new(),
            current: None,
            progress: VecDeque::new(),
            from_peer: false,
            now_ms: 0,
            live: HashMap::new(),
            use_clock: 0,
            events: VecDeque::new(),
            drops: DropCounters::default(),
            stats: ReceiverStats::default(),
        }
    }

    /// The network has been quiet: decode every chunk that holds enough symbols.
    pub fn handle_idle(&mut self) {
        let keys: Vec<ChunkKey> = self.active.keys().copied().collect();
        for key in keys {
            let r = self.settle(key);
            self.count(r);
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

    /// A chunk reported complete could not be stored: collect it again.
    pub fn forget_complete(&mut self, object_id: ObjectId, index: u32) {
        self.complete.remove(&(object_id, index));
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

    /// The channel's tracker as its newest verified manifest names it.
    pub fn tracker(&self) -> Option<NodeAddr> {
        self.tracker.map(|(_, t)| t)
    }

    pub fn drops(&self) -> &DropCounters {
        &self.drops
    }

    pub fn stats(&self) -> ReceiverStats {
        self.stats
    }

    /// For a chunk being collected: K, and which ESIs are held (verified or
    /// waiting for their check), indexed by ESI up to N_max. What a repair plan
    /// starts from.
    pub fn chunk_progress(&self, object_id: ObjectId, index: u32) -> Option<(u32, &[bool])> {
        self.active.get(&(object_id, index)).map(|c| (c.k, c.have.as_slice()))
    }

    /// Whether a chunk is known to be decoded (by this run or the store).
    pub fn is_complete(&self, object_id: ObjectId, index: u32) -> bool {
        self.complete.contains(&(object_id, index))
    }

    /// What repair could fill: every chunk being collected that holds too few
    /// symbols to decode, then up to `limit` chunks of recent objects that the
    /// multicast has passed without their ticket arriving here.
    pub fn needs(&self, limit: usize) -> Vec<ChunkNeed> {
        let mut out: Vec<ChunkNeed> = self
            .active
            .iter()
            .filter(|((id, _), c)| c.held() + c.candidates.len() < c.target() && !self.past_deadline(id))
            .map(|(key, c)| ChunkNeed {
                object_id: key.0,
                index: key.1,
                k: c.target() as u32,
                sources: c.k,
                n_max: c.n_max,
                held: c.have.clone(),
                pages: c
                    .pages
                    .iter()
                    .enumerate()
                    .filter(|(_, p)| p.is_some())
                    .fold(0u32, |m, (g, _)| m | 1 << g),
                has_ticket: true,
                window_open: self.window_open(*key),
                deadline_ms: self.manifests.get(&key.0).and_then(|m| m.live).map(|l| l.deadline_ms),
            })
            .collect();
        out.sort_by_key(|n| (n.object_id, n.index));
        let mut absent = Vec::new();
        for (id, progress) in &self.progress {
            let Some(m) = self.manifests.get(id) else { continue };
            if self.past_deadline(id) {
                continue;
            }
            let chunks = chunk_count(m.size, m.chunk_size);
            let passed_to = if progress.passed { chunks } else { progress.max_index.min(chunks) };
            for index in 0..passed_to {
                if absent.len() >= limit {
                    break;
                }
                let key = (*id, index);
                if self.complete.contains(&key) || self.active.contains_key(&key) {
                    continue;
                }
                let range = chunk_range(m.size, m.chunk_size, index);
                let k = wire::source_symbols((range.end - range.start) as u32, m.symbol_size);
                let n_max = wire::n_max(k);
                absent.push(ChunkNeed {
                    object_id: *id,
                    index,
                    k,
                    sources: k,
                    n_max,
                    held: vec![false; n_max as usize],
                    pages: 0,
                    has_ticket: false,
                    window_open: false,
                    deadline_ms: m.live.map(|l| l.deadline_ms),
                });
            }
        }
        out.extend(absent);
        // Live segments first, the nearest deadline first (a stable sort).
        out.sort_by_key(|n| n.deadline_ms.unwrap_or(u64::MAX));
        out
    }

    /// For a chunk being collected: its ticket, the table pages asked for that
    /// are held, and the verified symbols asked for that are held, as datagrams
    /// ready to send to a peer. `None` when the chunk is not being collected (or
    /// its symbols are inside the decoder). Unchecked symbols are never served.
    pub fn serve_partial(
        &self,
        object_id: ObjectId,
        index: u32,
        table: Option<u32>,
        esis: Option<&EsiRanges>,
    ) -> Option<Vec<Vec<u8>>> {
        let c = self.active.get(&(object_id, index)).filter(|c| c.decoder.is_none())?;
        let mut out = Vec::new();
        if let Some(pages) = table {
            out.push(c.ticket_raw.clone());
            for (g, digests) in c.pages.iter().enumerate() {
                if let Some(digests) = digests.as_ref().filter(|_| g < 32 && pages & (1 << g) != 0) {
                    let mut d = Vec::new();
                    wire::encode_table_page(&mut d, self.channel_tag, &object_id, index, g as u16, digests);
                    out.push(d);
                }
            }
        }
        if let Some(esis) = esis {
            let mut held: Vec<&(u32, Vec<u8>)> =
                c.verified.iter().filter(|(e, _)| esis.contains(*e)).collect();
            held.sort_by_key(|(e, _)| *e);
            for (esi, data) in held {
                let mut d = Vec::with_capacity(wire::SYMBOL_HEADER_LEN + data.len());
                wire::encode_symbol(&mut d, self.channel_tag, &object_id, index, *esi, data);
                out.push(d);
            }
        }
        Some(out)
    }

    /// Whether the multicast may still send a chunk: it has not gone past it.
    /// (Not "the last datagram was for it": datagrams reorder at chunk borders.)
    fn window_open(&self, (id, index): ChunkKey) -> bool {
        self.progress.iter().find(|(o, _)| *o == id).is_some_and(|(_, p)| !p.passed && p.max_index <= index)
    }

    /// Repair data for a chunk has arrived: check it and decode if it now holds
    /// at least K symbols (the multicast window may be long closed).
    pub fn settle_chunk(&mut self, object_id: ObjectId, index: u32) {
        let r = self.settle((object_id, index));
        self.count(r);
    }

    /// The sender repeats an object's manifest after its last chunk: once the
    /// multicast has reached that chunk, a manifest closes the object's window
    /// (no need to wait for the last chunk to stall).
    fn note_object_end(&mut self, id: ObjectId) {
        let Some(m) = self.manifests.get(&id) else { return };
        let chunks = chunk_count(m.size, m.chunk_size);
        if let Some((_, p)) = self.progress.iter_mut().find(|(o, _)| *o == id) {
            if p.max_index + 1 >= chunks {
                p.passed = true;
            }
        }
    }

    /// Whether this hub lacks chunks of `id` and has not seen the multicast
    /// pass all of it: it joined late, or it lost the multicast for a while
    /// (a bridge's feed, which took over, stopped short of the end). An
    /// unknown object counts.
    fn lacks_unpassed(&self, id: ObjectId) -> bool {
        if self.progress.iter().any(|(o, p)| *o == id && p.passed) {
            return false;
        }
        let Some(m) = self.manifests.get(&id) else { return true };
        (0..chunk_count(m.size, m.chunk_size)).any(|i| !self.complete.contains(&(id, i)))
    }

    /// A verified manifest says the round has passed `id`: every chunk of it
    /// this hub lacks is for repair now.
    fn note_passed(&mut self, id: ObjectId) {
        let Some(m) = self.manifests.get(&id) else { return };
        let last = chunk_count(m.size, m.chunk_size).saturating_sub(1);
        if let Some((_, p)) = self.progress.iter_mut().find(|(o, _)| *o == id) {
            p.passed = true;
            p.max_index = p.max_index.max(last);
            return;
        }
        self.progress.push_front((id, Progress { max_index: last, passed: true }));
        self.progress.truncate(RECENT_OBJECTS);
    }

    fn note_progress(&mut self, (id, index): ChunkKey) {
        match self.progress.iter().position(|(o, _)| *o == id) {
            Some(0) => {}
            Some(at) => {
                let entry = self.progress.remove(at).map(|(_, p)| p).unwrap_or_default();
                self.progress.push_front((id, entry));
            }
            None => {
                self.progress.push_front((id, Progress::default()));
                self.progress.truncate(RECENT_OBJECTS);
            }
        }
        // The multicast is on `id` now: it has passed every other recent object.
        for (_, p) in self.progress.iter_mut().skip(1) {
            p.passed = true;
        }
        if let Some((_, p)) = self.progress.front_mut() {
            p.max_index = p.max_index.max(index);
        }
    }

    /// Take one datagram. `unix_now` is wall-clock seconds, for expiry checks.
    pub fn handle_datagram(&mut self, unix_now: u64, datagram: &[u8]) {
        self.stats.datagrams += 1;
        self.now_ms = self.now_ms.max(unix_now.saturating_mul(1000));
        if let Err(reason) = self.handle(unix_now, datagram) {
            self.drops.add(reason);
        }
    }

    /// Take one datagram a peer (or the origin's repair) sent on request. It is
    /// checked exactly as multicast is; it only does not tell the receiver where
    /// the multicast is.
    pub fn handle_repair_datagram(&mut self, unix_now: u64, datagram: &[u8]) {
        self.from_peer = true;
        self.handle_datagram(unix_now, datagram);
        self.from_peer = false;
    }

    fn handle(&mut self, unix_now: u64, datagram: &[u8]) -> Result<(), DropReason> {
        let header = wire::decode_header(datagram)?;
        if header.channel_tag != self.channel_tag {
            return Err(DropReason::WrongChannel);
        }
        let key = wire::peek_chunk(datagram, header.kind);
        if !self.from_peer {
            if let Some(previous) = self.current.filter(|c| Some(*c) != key) {
                // The sender has moved on from `previous`: decode it with what it has.
                let r = self.settle(previous);
                self.count(r);
            }
            self.current = key;
            if let Some(key) = key {
                self.note_progress(key);
            }
        }
        if key.is_some_and(|(id, _)| self.past_deadline(&id)) {
            return Err(DropReason::Late);
        }
        // Tickets repeat three times a round: skip the repeats before parsing (a
        // ticket's certificate costs two curve-point decompressions to parse).
        if let (wire::Kind::Ticket, Some(key)) = (header.kind, key) {
            if self.complete.contains(&key) {
                return Err(DropReason::AlreadyComplete);
            }
            if self.active.get(&key).is_some_and(|a| a.ticket_raw == datagram) {
                return Err(DropReason::Duplicate);
            }
        }
        let (_, parsed) = wire::decode(datagram)?;
        match parsed {
            Datagram::Manifest(m) => {
                let id = m.body.object_id;
                if !self.from_peer {
                    self.note_object_end(id);
                }
                // The round has passed an object this hub did not see all of go
                // by (it joined later, or lost the multicast for a while): worth
                // a signature check, to learn what to repair.
                let passed_unseen = m.body.round_end && !self.from_peer && self.lacks_unpassed(id);
                let known = self.manifests.get(&id).is_some_and(|k| k.seq >= m.body.seq);
                // A repeat is verified again only when it names a newer tracker
                // (a hub restarted with its manifests stored learns it so).
                let new_tracker = m
                    .body
                    .tracker
                    .is_some_and(|t| self.tracker.is_none_or(|(seq, known)| known != t && m.body.seq >= seq));
                if known && !new_tracker && !passed_unseen {
                    return Err(DropReason::Duplicate);
                }
                // A live segment past its deadline: refused before spending a
                // signature check on it (a replay, or simply too late).
                if m.body.live.is_some_and(|l| l.deadline_ms < self.now_ms) {
                    return Err(DropReason::Late);
                }
                let m = self.verifier.verify_manifest(m, unix_now)?;
                if let Some(t) = m.tracker.filter(|_| self.tracker.is_none_or(|(seq, _)| m.seq >= seq)) {
                    self.tracker = Some((m.seq, t));
                }
                let accepted = if known { Err(DropReason::Duplicate) } else { self.accept_manifest(m) };
                if accepted.is_ok() {
                    self.keep_manifest_datagram(id, datagram);
                }
                if passed_unseen {
                    self.note_passed(id);
                }
                accepted
            }
            Datagram::Ticket(t) => {
                let key = (t.body.object_id, t.body.chunk_index);
                if self.complete.contains(&key) {
                    return Err(DropReason::AlreadyComplete);
                }
                if let Some(a) = self.active.get(&key) {
                    // Not a byte-for-byte repeat (checked above). The same chunk
                    // re-signed later (a new expiry) commits to the same table: a
                    // repeat. Anything else contradicts the ticket held.
                    let same = a.ticket.chunk_hash == t.body.chunk_hash
                        && a.ticket.page_hashes == t.body.page_hashes
                        && a.ticket.seq == t.body.seq;
                    return Err(if same { DropReason::Duplicate } else { DropReason::Inconsistent });
                }
                let t = self.verifier.verify_ticket(t, unix_now)?;
                self.accept_ticket(t, datagram.to_vec())
            }
            Datagram::TablePage(p) => self.handle_page(p),
            Datagram::Symbol(s) => self.handle_symbol(s),
        }
    }

    fn keep_manifest_datagram(&mut self, id: ObjectId, datagram: &[u8]) {
        if self.manifest_datagrams.insert(id, datagram.to_vec()).is_none() {
            self.manifest_order.push_back(id);
        }
        while self.manifest_order.len() > MAX_MANIFEST_DATAGRAMS {
            if let Some(old) = self.manifest_order.pop_front() {
                self.manifest_datagrams.remove(&old);
            }
        }
    }

    /// The datagram of an accepted manifest, as received: its signature was
    /// checked. Kept for the [`MAX_MANIFEST_DATAGRAMS`] objects accepted last.
    pub fn manifest_datagram(&self, id: &ObjectId) -> Option<&[u8]> {
        self.manifest_datagrams.get(id).map(Vec::as_slice)
    }

    fn accept_manifest(&mut self, m: VerifiedManifest) -> Result<(), DropReason> {
        if m.live.is_none() && self.seq_by_name.get(&m.name).is_some_and(|seq| *seq > m.seq) {
            return Err(DropReason::RolledBack);
        }
        if !self.manifests.contains_key(&m.object_id) && self.manifests.len() >= self.config.max_objects {
            return Err(DropReason::TooManyObjects);
        }
        match m.live {
            Some(live) => self.accept_live(&m, live)?,
            None => {
                self.seq_by_name.insert(m.name.clone(), m.seq);
            }
        }
        self.manifests.insert(m.object_id, m.clone());
        self.events.push_back(Event::Manifest(m));
        Ok(())
    }

    /// A live segment's place in its channel. Refused: past its deadline
    /// (late), older than the window (rolled back), a place another segment
    /// holds, or a deadline out of step with its neighbours' (inconsistent).
    /// Segments that fall out of the window are forgotten.
    fn accept_live(&mut self, m: &Manifest, live: LiveSegment) -> Result<(), DropReason> {
        use std::ops::Bound::{Excluded, Unbounded};
        if live.deadline_ms < self.now_ms {
            return Err(DropReason::Late);
        }
        if !self.live.contains_key(&m.name) && self.live.len() >= MAX_LIVE_CHANNELS {
            return Err(DropReason::TooManyObjects);
        }
        let window = self.config.live_window.max(1);
        let ch = self.live.entry(m.name.clone()).or_default();
        if live.seq.saturating_add(window) <= ch.newest {
            return Err(DropReason::RolledBack);
        }
        if ch.segments.get(&live.seq).is_some_and(|(id, _)| *id != m.object_id) {
            return Err(DropReason::Inconsistent);
        }
        let before = ch.segments.range(..live.seq).next_back().map(|(_, s)| s.1);
        let after = ch.segments.range((Excluded(live.seq), Unbounded)).next().map(|(_, s)| s.1);
        if before.is_some_and(|d| d > live.deadline_ms) || after.is_some_and(|d| d < live.deadline_ms) {
            return Err(DropReason::Inconsistent);
        }
        ch.segments.insert(live.seq, (m.object_id, live.deadline_ms));
        ch.newest = ch.newest.max(live.seq);
        let keep_from = ch.newest.saturating_sub(window - 1);
        let kept = ch.segments.split_off(&keep_from);
        let gone = std::mem::replace(&mut ch.segments, kept);
        // Equal bytes (a looped input) are one object at several places.
        let stale: Vec<ObjectId> = gone
            .into_values()
            .map(|(id, _)| id)
            .filter(|id| ch.segments.values().all(|(k, _)| k != id))
            .collect();
        for id in stale {
            self.forget_object(id);
        }
        Ok(())
    }

    fn accept_ticket(&mut self, t: VerifiedTicket, raw: Vec<u8>) -> Result<(), DropReason> {
        if let Some(m) = self.manifests.get(&t.object_id) {
            let range = chunk_range(m.size, m.chunk_size, t.chunk_index);
            if t.chunk_index >= chunk_count(m.size, m.chunk_size)
                || range.end - range.start != u64::from(t.chunk_len)
                || t.symbol_size != m.symbol_size
            {
                return Err(DropReason::Inconsistent);
            }
        }
        let key = (t.object_id, t.chunk_index);
        if self.active.len() >= self.config.max_active_chunks {
            self.evict_least_recent();
        }
        let k = wire::source_symbols(t.chunk_len, t.symbol_size);
        let n_max = wire::n_max(k);
        let pages = t.page_hashes.len();
        self.use_clock += 1;
        self.active.insert(
            key,
            ActiveChunk {
                k,
                n_max,
                pages: vec![None; pages],
                have: vec![false; n_max as usize],
                candidates: Vec::with_capacity(VERIFY_BATCH),
                verified: Vec::with_capacity(k as usize + DECODE_MARGIN),
                decoder: None,
                tried_at: 0,
                sources_held: 0,
                last_used: self.use_clock,
                ticket: t,
                ticket_raw: raw,
            },
        );
        // Replay what waited for this ticket: pages first, then their symbols.
        if let Some(p) = self.take_pending(&key) {
            for (page_index, digests) in p.pages {
                let page = TablePage { object_id: key.0, chunk_index: key.1, page_index, digests: &digests };
                let r = self.handle_page(page);
                self.count(r);
            }
            for (esi, data) in p.symbols {
                let s = SymbolPacket { object_id: key.0, chunk_index: key.1, esi, data: &data };
                let r = self.handle_symbol(s);
                self.count(r);
                if self.complete.contains(&key) {
                    break;
                }
            }
        }
        Ok(())
    }

    fn count(&mut self, r: Result<(), DropReason>) {
        if let Err(reason) = r {
            self.drops.add(reason);
        }
    }

    fn evict_least_recent(&mut self) {
        if let Some(key) = self.active.iter().min_by_key(|(_, c)| c.last_used).map(|(k, _)| *k) {
            self.active.remove(&key);
            self.drops.add(DropReason::ActiveEvicted);
        }
    }

    fn handle_page(&mut self, p: TablePage<'_>) -> Result<(), DropReason> {
        let key = (p.object_id, p.chunk_index);
        if self.complete.contains(&key) {
            return Err(DropReason::AlreadyComplete);
        }
        let Some(chunk) = self.active.get_mut(&key) else {
            return self.add_pending(
                key,
                |pend| pend.pages.push((p.page_index, p.digests.to_vec())),
                p.digests.len(),
            );
        };
        let page = p.page_index as usize;
        if page >= chunk.pages.len() {
            return Err(DropReason::PageMismatch);
        }
        if chunk.pages[page].is_some() {
            return Err(DropReason::Duplicate);
        }
        let range = page_range(page, chunk.n_max);
        if p.digests.len() != range.len() * DIGEST_LEN
            || page_hash(p.digests) != chunk.ticket.page_hashes[page]
        {
            return Err(DropReason::PageMismatch);
        }
        chunk.pages[page] = Some(p.digests.into());
        // Symbols of this page that waited for it.
        let waiting: Vec<(u32, Vec<u8>)> = match self.pending.get_mut(&key) {
            Some(pend) => {
                let (mine, rest) = pend.symbols.drain(..).partition(|(esi, _)| page_of(*esi) == page);
                pend.symbols = rest;
                let freed: usize = mine.iter().map(|(_, d): &(u32, Vec<u8>)| d.len()).sum();
                pend.bytes -= freed;
                self.pending_bytes -= freed;
                mine
            }
            None => Vec::new(),
        };
        for (esi, data) in waiting {
            let s = SymbolPacket { object_id: key.0, chunk_index: key.1, esi, data: &data };
            let r = self.handle_symbol(s);
            self.count(r);
        }
        Ok(())
    }

    fn handle_symbol(&mut self, s: SymbolPacket<'_>) -> Result<(), DropReason> {
        let key = (s.object_id, s.chunk_index);
        if self.complete.contains(&key) {
            return Err(DropReason::AlreadyComplete);
        }
        let Some(chunk) = self.active.get_mut(&key) else {
            return self.add_pending(key, |pend| pend.symbols.push((s.esi, s.data.to_vec())), s.data.len());
        };
        let t = chunk.ticket.symbol_size as usize;
        if s.esi >= chunk.n_max || s.data.len() != t {
            return Err(DropReason::BadSymbol);
        }
        if chunk.have[s.esi as usize] {
            return Err(DropReason::Duplicate);
        }
        if chunk.pages[page_of(s.esi)].is_none() {
            return self.add_pending(key, |pend| pend.symbols.push((s.esi, s.data.to_vec())), s.data.len());
        }
        // A candidate: held, not yet trusted. `have` is set now so a duplicate in
        // the same batch is refused; a failed check clears it.
        chunk.have[s.esi as usize] = true;
        chunk.sources_held += u32::from(s.esi < chunk.k);
        chunk.candidates.push((s.esi, s.data.to_vec()));
        let waiting = chunk.candidates.len();
        if waiting == 1 {
            self.unverified.push(key);
        }
        if waiting >= VERIFY_BATCH
            || chunk.held() + waiting >= chunk.k as usize + DECODE_MARGIN
            || chunk.sources_held == chunk.k
        {
            self.verify_candidates(key)?;
        }
        Ok(())
    }

    /// Check the digests of a chunk's candidates in one pass; keep those that
    /// match, drop the others (counted), and try to decode when there are enough.
    fn verify_candidates(&mut self, key: ChunkKey) -> Result<(), DropReason> {
        let Some(chunk) = self.active.get_mut(&key) else {
            return Ok(());
        };
        if chunk.candidates.is_empty() {
            return Ok(());
        }
        let t = chunk.ticket.symbol_size as usize;
        let refs: Vec<&[u8]> = chunk.candidates.iter().map(|(_, d)| d.as_slice()).collect();
        symbol_digests(&chunk.ticket.chunk_hash, &refs, &mut self.digest_scratch);
        let mut good = 0usize;
        for ((esi, data), digest) in chunk.candidates.drain(..).zip(&self.digest_scratch) {
            let page = page_of(esi);
            let at = (esi - page_range(page, chunk.n_max).start) as usize * DIGEST_LEN;
            // Candidates are only taken once their page is verified; a missing
            // page here would be a bug, and is treated as a mismatch.
            let matches =
                chunk.pages[page].as_ref().is_some_and(|table| table[at..at + DIGEST_LEN] == digest[..]);
            if matches {
                // Verified: from here on this symbol is trusted data.
                chunk.verified.push((esi, data));
                good += 1;
            } else {
                chunk.have[esi as usize] = false;
                chunk.sources_held -= u32::from(esi < chunk.k);
                self.drops.add(DropReason::DigestMismatch);
            }
        }
        self.use_clock += 1;
        chunk.last_used = self.use_clock;
        self.stats.symbols_accepted += good as u64;
        self.stats.symbol_bytes_accepted += (good * t) as u64;
        let held = chunk.held();
        let systematic = chunk.sources_held == chunk.k && chunk.candidates.is_empty();
        if (held >= chunk.k as usize + DECODE_MARGIN || systematic) && held > chunk.tried_at {
            self.try_decode(key)?;
        }
        Ok(())
    }

    fn try_decode(&mut self, key: ChunkKey) -> Result<(), DropReason> {
        let Some(chunk) = self.active.get_mut(&key) else {
            return Ok(());
        };
        self.stats.decode_attempts += 1;
        let t = &chunk.ticket;
        let decoder =
            chunk.decoder.get_or_insert_with(|| ChunkDecoder::new(t.chunk_len, t.symbol_size, t.chunk_hash));
        match decoder.add_and_decode(chunk.verified.drain(..)) {
            Some(data) => {
                let hash = chunk.ticket.chunk_hash;
                let (ticket, pages) = match self.active.remove(&key) {
                    Some(c) => {
                        let pages = c.pages.into_iter().enumerate();
                        let pages = pages.filter_map(|(g, p)| Some((g as u16, p?.into_vec()))).collect();
                        (c.ticket_raw, pages)
                    }
                    None => Default::default(),
                };
                self.complete.insert(key);
                self.stats.chunks_completed += 1;
                self.events.push_back(Event::ChunkComplete(VerifiedChunk {
                    object_id: key.0,
                    index: key.1,
                    hash,
                    data,
                    ticket,
                    pages,
                }));
                Ok(())
            }
            None => {
                chunk.tried_at = chunk.held();
                // With every source symbol present decoding is a copy; failing then
                // means the data does not hash to the ticket. Start the chunk over.
                if chunk.held() >= chunk.n_max as usize || chunk.have[..chunk.k as usize].iter().all(|h| *h) {
                    chunk.decoder = None;
                    chunk.verified.clear();
                    chunk.candidates.clear();
                    chunk.have.iter_mut().for_each(|h| *h = false);
                    chunk.tried_at = 0;
                    return Err(DropReason::ChunkHashMismatch);
                }
                Ok(())
            }
        }
    }

    fn take_pending(&mut self, key: &ChunkKey) -> Option<Pending> {
        let p = self.pending.remove(key)?;
        self.pending_bytes -= p.bytes;
        self.pending_order.retain(|k| k != key);
        Some(p)
    }

    fn add_pending(
        &mut self,
        key: ChunkKey,
        push: impl FnOnce(&mut Pending),
        bytes: usize,
    ) -> Result<(), DropReason> {
        if bytes > self.config.max_pending_bytes {
            return Err(DropReason::PendingEvicted);
        }
        while self.pending_bytes + bytes > self.config.max_pending_bytes {
            let Some(oldest) = self.pending_order.pop_front() else {
                break;
            };
            if let Some(p) = self.pending.remove(&oldest) {
                self.pending_bytes -= p.bytes;
                for _ in 0..p.pages.len() + p.symbols.len() {
                    self.drops.add(DropReason::PendingEvicted);
                }
            }
        }
        let entry = self.pending.entry(key).or_insert_with(|| {
            self.pending_order.push_back(key);
            Pending::default()
        });
        push(entry);
        entry.bytes += bytes;
        self.pending_bytes += bytes;
        Ok(())
    }
}
