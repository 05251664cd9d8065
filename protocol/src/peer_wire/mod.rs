//! Peer messages, version 1: what hubs say to each other on QUIC streams.
//!
//! Every message is a frame: a u32 BE length, a type byte and a body. The
//! byte layout of each of the 17 types is in docs/PROTOCOL.md ("Frames");
//! `protocol/tests/peer_wire.rs` checks that table against this codec.
//!
//! Decoding is streaming ([`decode_frame`] says how many bytes it needs), checks
//! every bound before it allocates, and accepts only the canonical encoding, so a
//! message has exactly one byte form.

mod decode;
mod encode;
#[cfg(test)]
mod tests;

pub use decode::{decode_all, decode_answer, decode_frame, Answer, DatagramFrames};
pub use encode::{encode, encode_datagram};

use crate::forest;
use crate::wire::{self, MAX_SOURCE_SYMBOLS};
use crate::ObjectId;

/// Largest frame body: a have-map of the largest object fits.
pub const MAX_MESSAGE_LEN: usize = 1 + 32 + 4 + MAX_CHUNKS_PER_OBJECT as usize / 8 + 2 + MAX_PARTIAL * 6;
// A table request's u32 page bitmap covers every page a chunk can have.
const _: () = assert!(wire::MAX_TABLE_PAGES <= 32);

/// Chunks of one object a have-map can describe (1 TiB at 1 MiB chunks).
pub const MAX_CHUNKS_PER_OBJECT: u32 = 1 << 20;
/// Partial chunks listed in one have-map.
pub const MAX_PARTIAL: usize = 1024;
/// Hubs in one tracker answer.
pub const MAX_HUB_LIST: usize = 32;
/// NAK frames in one stream to the origin.
pub const MAX_NAKS_PER_STREAM: usize = 64;
/// The root's statements (rotations, the revocation list) the tracker puts
/// in its answer to one `Register`, as `Datagram` frames; a hub further
/// behind takes the rest at its next registration.
pub const MAX_REGISTER_STATEMENTS: usize = 8;
/// Bytes of a NAK's held-ESI bitmap: one bit per ESI of the largest N_max.
pub const MAX_HELD_BYTES: usize = MAX_ESIS_PER_REQUEST.div_ceil(8) as usize;
/// ESI ranges in one symbol request.
pub const MAX_RANGES: usize = 256;
/// ESIs asked for in one symbol request: at most one chunk's N_max.
pub const MAX_ESIS_PER_REQUEST: u32 = MAX_SOURCE_SYMBOLS + MAX_SOURCE_SYMBOLS / 2 + 16;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefuseReason {
    /// The peer does not hold it. Never counts against the peer.
    NotHeld = 1,
    /// The peer is serving others; ask later or elsewhere.
    Busy = 2,
    /// The request went over a per-peer limit.
    OverLimit = 3,
    /// The request makes no sense (an ESI beyond the chunk's N_max, messages out
    /// of order). Repeated, it gets the peer disconnected.
    Invalid = 4,
}

/// Chunks held complete, one bit per chunk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChunkBitmap {
    chunks: u32,
    bits: Vec<u8>,
}

impl ChunkBitmap {
    pub fn new(chunks: u32) -> Self {
        ChunkBitmap { chunks, bits: vec![0; chunks.div_ceil(8) as usize] }
    }
    pub fn len(&self) -> u32 {
        self.chunks
    }
    pub fn is_empty(&self) -> bool {
        self.chunks == 0
    }
    pub fn set(&mut self, i: u32) {
        if i < self.chunks {
            self.bits[i as usize / 8] |= 1 << (i % 8);
        }
    }
    pub fn clear(&mut self, i: u32) {
        if i < self.chunks {
            self.bits[i as usize / 8] &= !(1 << (i % 8));
        }
    }
    pub fn get(&self, i: u32) -> bool {
        i < self.chunks && self.bits[i as usize / 8] & (1 << (i % 8)) != 0
    }
    pub fn count(&self) -> u32 {
        self.bits.iter().map(|b| b.count_ones()).sum()
    }
    /// The bitmap as sent: ceil(len/8) bytes, bit i = chunk i, LSB first.
    pub fn bytes(&self) -> &[u8] {
        &self.bits
    }
    /// From bytes as sent; `None` unless there are exactly ceil(chunks/8) of
    /// them with the unused high bits 0.
    pub fn from_bytes(chunks: u32, bits: &[u8]) -> Option<ChunkBitmap> {
        let canonical = bits.len() == chunks.div_ceil(8) as usize
            && (chunks % 8 == 0 || bits.last().is_none_or(|b| b >> (chunks % 8) == 0));
        canonical.then(|| ChunkBitmap { chunks, bits: bits.to_vec() })
    }
}

/// Disjoint, increasing ESI ranges: the only form the decoder produces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EsiRanges(Vec<(u32, u16)>);

impl EsiRanges {
    /// Build from ranges (first ESI, count); `None` unless they are non-empty,
    /// increasing, disjoint and within the bounds above.
    pub fn new(ranges: Vec<(u32, u16)>) -> Option<Self> {
        let ok = !ranges.is_empty()
            && ranges.len() <= MAX_RANGES
            && ranges.iter().all(|(first, n)| {
                *n >= 1 && u64::from(*first) + u64::from(*n) <= u64::from(MAX_ESIS_PER_REQUEST)
            })
            && ranges.windows(2).all(|w| u64::from(w[0].0) + u64::from(w[0].1) < u64::from(w[1].0))
            && ranges.iter().map(|(_, n)| u32::from(*n)).sum::<u32>() <= MAX_ESIS_PER_REQUEST;
        ok.then_some(EsiRanges(ranges))
    }
    pub fn ranges(&self) -> &[(u32, u16)] {
        &self.0
    }
    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        self.0.iter().flat_map(|(first, n)| *first..*first + u32::from(*n))
    }
    pub fn count(&self) -> u32 {
        self.0.iter().map(|(_, n)| u32::from(*n)).sum()
    }
    pub fn contains(&self, esi: u32) -> bool {
        // The ranges are increasing and disjoint: the candidate is the last one
        // starting at or before `esi`.
        let at = self.0.partition_point(|(first, _)| *first <= esi);
        at > 0 && {
            let (first, n) = self.0[at - 1];
            esi - first < u32::from(n)
        }
    }
    /// Increasing ESIs as requests of at most [`MAX_RANGES`] ranges each
    /// (scattered holes make many ranges). ESIs at or beyond the request bound
    /// are left out.
    pub fn split(esis: &[u32]) -> Vec<EsiRanges> {
        let mut runs: Vec<(u32, u16)> = Vec::new();
        for &e in esis.iter().filter(|e| **e < MAX_ESIS_PER_REQUEST) {
            match runs.last_mut() {
                Some((first, n)) if *first + u32::from(*n) == e && *n < u16::MAX => *n += 1,
                Some((first, n)) if *first + u32::from(*n) > e => {} // not increasing: skip
                _ => runs.push((e, 1)),
            }
        }
        runs.chunks(MAX_RANGES).filter_map(|group| EsiRanges::new(group.to_vec())).collect()
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerMessage {
    HaveRequest {
        object_id: ObjectId,
    },
    HaveMap {
        object_id: ObjectId,
        complete: ChunkBitmap,
        partial: Vec<(u32, u16)>,
    },
    TableRequest {
        object_id: ObjectId,
        chunk: u32,
        pages: u32,
    },
    SymbolRequest {
        object_id: ObjectId,
        chunk: u32,
        esis: EsiRanges,
    },
    Refuse {
        object_id: ObjectId,
        chunk: u32,
        reason: RefuseReason,
    },
    Datagram(Vec<u8>),
    Nak {
        object_id: ObjectId,
        chunk: u32,
        missing: u16,
        /// The asker's multicast loss in whole percent (0..=100; 0 when not
        /// yet known): the origin sizes its resend to arrive through it.
        loss: u8,
        /// The ESIs the asker holds, bit e = ESI e, LSB first (at most
        /// [`MAX_HELD_BYTES`]; empty: not known).
        held: Vec<u8>,
    },
    Register {
        bridge: bool,
        /// In the channel's stripe forest (`--stripes`).
        forest: bool,
        /// Feeds the hub serves now as a bridge.
        feeds: u16,
        /// The root's statements the hub holds: the version of the root it
        /// trusts (1: the configured one) and of its revocation list (0:
        /// none). The tracker answers with the newer ones it carries.
        root_version: u64,
        revocations_version: u64,
    },
    /// `chunk: None` asks for holders of any chunk of the object.
    HoldersRequest {
        object_id: ObjectId,
        chunk: Option<u32>,
        limit: u8,
    },
    ForestHubRequest,
    HubList(Vec<ListedHub>),
    /// `leaving`: the bridge feeding the asker now, which it leaves if the
    /// tracker lists another before it.
    BridgesRequest {
        limit: u8,
        leaving: Option<[u8; 32]>,
    },
    /// `resume`: the feed starts after this chunk, when the bridge still has
    /// it; otherwise (and with `None`) at the start of its back buffer.
    /// `udp_port`: the port of the asker's address (the connection's) that
    /// takes the feed's symbols as plain datagrams; 0: all on the stream.
    Subscribe {
        resume: Option<(ObjectId, u32)>,
        udp_port: u16,
    },
    Subscribed,
    Forest(forest::Msg<ForestPeer>),
    Stripe {
        tree: u8,
        stripes: u8,
        resume: Option<(ObjectId, u32)>,
    },
    /// A hub's multicast loss, whole percent (0..=100), and what it made of
    /// the last round under `--rate auto` (`crate::rate`), to the origin:
    /// the feedback round's echo did not cover them (`crate::feedback`).
    /// A report of no loss says a verdict.
    LossReport {
        loss: u8,
        verdict: crate::rate::Verdict,
    },
}

/// A hub in the stripe forest: who it is and where it listens. Compared by
/// node id alone (the identity its QUIC handshake proves); the address is
/// where to reach it.
#[derive(Clone, Copy, Debug)]
pub struct ForestPeer {
    pub node_id: [u8; 32],
    pub addr: std::net::SocketAddr,
}

impl PartialEq for ForestPeer {
    fn eq(&self, o: &Self) -> bool {
        self.node_id == o.node_id
    }
}
impl Eq for ForestPeer {}
impl PartialOrd for ForestPeer {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for ForestPeer {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        self.node_id.cmp(&o.node_id)
    }
}
impl std::hash::Hash for ForestPeer {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        self.node_id.hash(h);
    }
}

/// A hub in a tracker's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListedHub {
    pub node_id: [u8; 32],
    pub bridge: bool,
    pub addr: std::net::SocketAddr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PeerWireError {
    /// Not an error yet: the frame needs this many bytes in all.
    #[error("incomplete frame: {0} bytes needed")]
    Incomplete(usize),
    #[error("frame longer than allowed")]
    TooLong,
    #[error("empty frame")]
    Empty,
    #[error("unknown message type")]
    UnknownType,
    #[error("message truncated")]
    Truncated,
    #[error("bytes after the message")]
    TrailingBytes,
    #[error("field out of range")]
    OutOfRange,
    #[error("not the canonical encoding")]
    NotCanonical,
}
