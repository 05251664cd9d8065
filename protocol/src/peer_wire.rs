//! Peer messages, version 1: what hubs say to each other on QUIC streams.
//!
//! Groundwork for peer repair: the codec only. Every message is a frame:
//!
//! ```text
//! 0  4  length n of what follows (1..=MAX_MESSAGE_LEN), u32 BE
//! 4  1  type
//! 5  n-1 body
//!
//! 1 HaveRequest   object id (32)
//! 2 HaveMap       object id (32), chunk count c (u32, <= MAX_CHUNKS_PER_OBJECT),
//!                 complete bitmap (ceil(c/8) bytes, bit i = chunk i, LSB first,
//!                 unused high bits 0), partial count p (u16, <= MAX_PARTIAL),
//!                 p x (chunk u32, verified symbols u16), chunks increasing,
//!                 none of them complete
//! 3 TableRequest  object id (32), chunk (u32), pages (u32 bitmap, bit g = page g)
//! 4 SymbolRequest object id (32), chunk (u32), range count r (u16, 1..=MAX_RANGES),
//!                 r x (first ESI u32, count u16 >= 1), increasing and disjoint,
//!                 every ESI < the largest N_max, at most MAX_ESIS_PER_REQUEST in all
//! 5 Refuse        object id (32), chunk (u32), reason (u8: 1 not held, 2 busy,
//!                 3 over a limit, 4 invalid request)
//! 6 Datagram      a wire v1 ticket, table page or symbol datagram (1..=MAX_DATAGRAM)
//! 7 Nak           object id (32), chunk (u32), symbols missing (u16, 1..=MAX_ESIS_PER_REQUEST):
//!                 a hub to the origin, when no peer could serve the chunk
//! 8 Register      flags (u8: bit 0 bridge, bit 1 in the stripe forest, others 0).
//!                 To the tracker: this hub is
//!                 alive at the connection's source address; HaveMaps (2, no
//!                 partial entries) may follow on the stream as its holdings
//! 9 HoldersRequest object id (32), chunk (u32; u32::MAX: any chunk), limit (u8,
//!                 1..=MAX_HUB_LIST)
//! 10 ForestHubRequest (no body): to the tracker, for a random live hub of the
//!                 stripe forest, other than the asker (a HubList of 0 or 1)
//! 11 HubList      count (u8, <= MAX_HUB_LIST), count x (node id (32), flags (u8:
//!                 bit 0 bridge), family (u8: 4 or 6), address (4 or 16), port u16)
//! 12 BridgesRequest limit (u8, 1..=MAX_HUB_LIST): to the tracker, for hubs that
//!                 serve the channel's feed
//! 13 Subscribe    resume (u8: 0 from the back buffer's start, 1 after this chunk:
//!                 object id (32), chunk (u32) follow). To a bridge, which answers
//!                 Subscribed and then the feed as Datagram frames on the same
//!                 stream, or Refuse (object id and chunk 0; busy: its fan-out is
//!                 full; not held: it does not hear the channel now)
//! 14 Subscribed   (no body)
//! 15 Forest       a stripe-forest message (crate::forest): kind (u8), tree
//!                 (u8, < forest::MAX_STRIPES), then by kind, where a peer is
//!                 node id (32), family (u8: 4 or 6), address (4 or 16), port
//!                 (u16), and an optional peer is present (u8: 0 or 1) and
//!                 then a peer:
//!                 1 Search      joiner (peer), flags (u8: bit 0 interior, bit 1 down)
//!                 2 TakeOn      child (peer), flags (u8: bit 0 interior), dead
//!                               (optional: the parent an orphan lost)
//!                 3 Substitute  parent (peer), grandparent (optional), leaf (peer)
//!                 4 Direct      parent (peer), grandparent (optional)
//!                 5 Replace     dead (peer), flags (u8: bit 0 interior)
//!                 6 UpdateUp    interior (u32), free (u32), spare (u32), room (u32:
//!                               levels down to a place for an interior hub), give
//!                               (u32: leaves its subtree can spare), attached (u8:
//!                               0 or 1), epoch (u32: the sender's placements in
//!                               the tree)
//!                 7 UpdateDown  grandparent (optional), heir (optional)
//!                 8 Refuse      reason (u8: 1 bad tree, 2 not a child, 3 not your
//!                               parent, 4 full, 5 loop, 6 not the heir)
//!                 9 Join        (tree 0, no more): to the root, for a proper tree
//!                 10 Welcome    contact (peer): the root's answer; tree is the proper tree
//!                 11 Want       needy (peer), flags (u8: bit 0 down)
//!                 12 Give       leaf (peer)
//!                 Unknown kinds and flag bits are refused (out of range).
//! 16 Stripe       tree (u8), stripes (u8, 2..=forest::MAX_STRIPES, tree < stripes),
//!                 resume as in Subscribe: to a parent in the stripe forest, which
//!                 answers Subscribed and then, per chunk, the ticket, the table
//!                 pages and the chunk's stripe `tree` (ESIs ≡ tree mod stripes),
//!                 or Refuse (not held: not its child in that tree)
//! ```
//!
//! Decoding is streaming ([`decode_frame`] says how many bytes it needs), checks
//! every bound before it allocates, and accepts only the canonical encoding, so a
//! message has exactly one byte form.

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
    },
    Register {
        bridge: bool,
        /// In the channel's stripe forest (`--stripes`).
        forest: bool,
    },
    /// `chunk: None` asks for holders of any chunk of the object.
    HoldersRequest {
        object_id: ObjectId,
        chunk: Option<u32>,
        limit: u8,
    },
    ForestHubRequest,
    HubList(Vec<ListedHub>),
    BridgesRequest {
        limit: u8,
    },
    /// `resume`: the feed starts after this chunk, when the bridge still has
    /// it; otherwise (and with `None`) at the start of its back buffer.
    Subscribe {
        resume: Option<(ObjectId, u32)>,
    },
    Subscribed,
    Forest(forest::Msg<ForestPeer>),
    Stripe {
        tree: u8,
        stripes: u8,
        resume: Option<(ObjectId, u32)>,
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

/// Append a datagram as one frame: what `encode(&PeerMessage::Datagram(..))`
/// writes, without owning the datagram first.
pub fn encode_datagram(d: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&(d.len() as u32 + 1).to_be_bytes());
    out.push(6);
    out.extend_from_slice(d);
}

/// Append `m` as one frame.
pub fn encode(m: &PeerMessage, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    match m {
        PeerMessage::HaveRequest { object_id } => {
            out.push(1);
            out.extend_from_slice(&object_id.0);
        }
        PeerMessage::HaveMap { object_id, complete, partial } => {
            out.push(2);
            out.extend_from_slice(&object_id.0);
            out.extend_from_slice(&complete.chunks.to_be_bytes());
            out.extend_from_slice(&complete.bits);
            out.extend_from_slice(&(partial.len() as u16).to_be_bytes());
            for (chunk, symbols) in partial {
                out.extend_from_slice(&chunk.to_be_bytes());
                out.extend_from_slice(&symbols.to_be_bytes());
            }
        }
        PeerMessage::TableRequest { object_id, chunk, pages } => {
            out.push(3);
            out.extend_from_slice(&object_id.0);
            out.extend_from_slice(&chunk.to_be_bytes());
            out.extend_from_slice(&pages.to_be_bytes());
        }
        PeerMessage::SymbolRequest { object_id, chunk, esis } => {
            out.push(4);
            out.extend_from_slice(&object_id.0);
            out.extend_from_slice(&chunk.to_be_bytes());
            out.extend_from_slice(&(esis.0.len() as u16).to_be_bytes());
            for (first, n) in &esis.0 {
                out.extend_from_slice(&first.to_be_bytes());
                out.extend_from_slice(&n.to_be_bytes());
            }
        }
        PeerMessage::Refuse { object_id, chunk, reason } => {
            out.push(5);
            out.extend_from_slice(&object_id.0);
            out.extend_from_slice(&chunk.to_be_bytes());
            out.push(*reason as u8);
        }
        PeerMessage::Datagram(d) => {
            out.push(6);
            out.extend_from_slice(d);
        }
        PeerMessage::Nak { object_id, chunk, missing } => {
            out.push(7);
            out.extend_from_slice(&object_id.0);
            out.extend_from_slice(&chunk.to_be_bytes());
            out.extend_from_slice(&missing.to_be_bytes());
        }
        PeerMessage::Register { bridge, forest } => {
            out.push(8);
            out.push(u8::from(*bridge) | u8::from(*forest) << 1);
        }
        PeerMessage::HoldersRequest { object_id, chunk, limit } => {
            out.push(9);
            out.extend_from_slice(&object_id.0);
            out.extend_from_slice(&chunk.unwrap_or(u32::MAX).to_be_bytes());
            out.push(*limit);
        }
        PeerMessage::ForestHubRequest => out.push(10),
        PeerMessage::HubList(hubs) => {
            out.push(11);
            out.push(hubs.len().min(MAX_HUB_LIST) as u8);
            for h in hubs.iter().take(MAX_HUB_LIST) {
                out.extend_from_slice(&h.node_id);
                out.push(u8::from(h.bridge));
                put_addr(&h.addr, out);
            }
        }
        PeerMessage::BridgesRequest { limit } => {
            out.push(12);
            out.push(*limit);
        }
        PeerMessage::Subscribe { resume } => {
            out.push(13);
            put_resume(resume, out);
        }
        PeerMessage::Subscribed => out.push(14),
        PeerMessage::Forest(m) => {
            out.push(15);
            encode_forest(m, out);
        }
        PeerMessage::Stripe { tree, stripes, resume } => {
            out.push(16);
            out.push(*tree);
            out.push(*stripes);
            put_resume(resume, out);
        }
    }
    let len = (out.len() - start - 4) as u32;
    out[start..start + 4].copy_from_slice(&len.to_be_bytes());
}

/// A feed's start: flag 0, or flag 1 with the object and chunk.
fn put_resume(resume: &Option<(ObjectId, u32)>, out: &mut Vec<u8>) {
    match resume {
        None => out.push(0),
        Some((object_id, chunk)) => {
            out.push(1);
            out.extend_from_slice(&object_id.0);
            out.extend_from_slice(&chunk.to_be_bytes());
        }
    }
}

/// Family (4 or 6), address, port: as hub lists and forest peers carry it.
fn put_addr(addr: &std::net::SocketAddr, out: &mut Vec<u8>) {
    match addr.ip() {
        std::net::IpAddr::V4(ip) => {
            out.push(4);
            out.extend_from_slice(&ip.octets());
        }
        std::net::IpAddr::V6(ip) => {
            out.push(6);
            out.extend_from_slice(&ip.octets());
        }
    }
    out.extend_from_slice(&addr.port().to_be_bytes());
}

fn put_peer(p: &ForestPeer, out: &mut Vec<u8>) {
    out.extend_from_slice(&p.node_id);
    put_addr(&p.addr, out);
}

fn put_opt_peer(p: &Option<ForestPeer>, out: &mut Vec<u8>) {
    match p {
        Some(p) => {
            out.push(1);
            put_peer(p, out);
        }
        None => out.push(0),
    }
}

fn encode_forest(m: &forest::Msg<ForestPeer>, out: &mut Vec<u8>) {
    use forest::{Msg, UpdateInfo};
    let (kind, tree) = match m {
        Msg::Search { .. } => (1, m.tree()),
        Msg::TakeOn { .. } => (2, m.tree()),
        Msg::Substitute { .. } => (3, m.tree()),
        Msg::Direct { .. } => (4, m.tree()),
        Msg::Replace { .. } => (5, m.tree()),
        Msg::Update { info: UpdateInfo::Up { .. }, .. } => (6, m.tree()),
        Msg::Update { info: UpdateInfo::Down { .. }, .. } => (7, m.tree()),
        Msg::Refuse { .. } => (8, m.tree()),
        Msg::Join => (9, 0),
        Msg::Welcome { .. } => (10, m.tree()),
        Msg::Want { .. } => (11, m.tree()),
        Msg::Give { .. } => (12, m.tree()),
    };
    out.push(kind);
    out.push(tree);
    match m {
        Msg::Search { joiner, interior, down, .. } => {
            put_peer(joiner, out);
            out.push(u8::from(*interior) | u8::from(*down) << 1);
        }
        Msg::TakeOn { child, interior, dead, .. } => {
            put_peer(child, out);
            out.push(u8::from(*interior));
            put_opt_peer(dead, out);
        }
        Msg::Substitute { parent, grandparent, leaf, .. } => {
            put_peer(parent, out);
            put_opt_peer(grandparent, out);
            put_peer(leaf, out);
        }
        Msg::Direct { parent, grandparent, .. } => {
            put_peer(parent, out);
            put_opt_peer(grandparent, out);
        }
        Msg::Replace { dead, interior, .. } => {
            put_peer(dead, out);
            out.push(u8::from(*interior));
        }
        Msg::Update {
            info: UpdateInfo::Up { interior, free, spare, room, give, attached, epoch }, ..
        } => {
            for n in [interior, free, spare, room, give] {
                out.extend_from_slice(&n.to_be_bytes());
            }
            out.push(u8::from(*attached));
            out.extend_from_slice(&epoch.to_be_bytes());
        }
        Msg::Update { info: UpdateInfo::Down { grandparent, heir }, .. } => {
            put_opt_peer(grandparent, out);
            put_opt_peer(heir, out);
        }
        Msg::Refuse { why, .. } => out.push(match why {
            forest::Refusal::BadTree => 1,
            forest::Refusal::NotAChild => 2,
            forest::Refusal::NotYourParent => 3,
            forest::Refusal::Full => 4,
            forest::Refusal::Loop => 5,
            forest::Refusal::NotHeir => 6,
        }),
        Msg::Join => {}
        Msg::Welcome { contact, .. } => put_peer(contact, out),
        Msg::Want { needy, down, .. } => {
            put_peer(needy, out);
            out.push(u8::from(*down));
        }
        Msg::Give { leaf, .. } => put_peer(leaf, out),
    }
}

fn decode_forest(r: &mut Reader<'_>) -> Result<forest::Msg<ForestPeer>, PeerWireError> {
    use forest::{Msg, Refusal, UpdateInfo};
    let [kind, tree] = r.array::<2>()?;
    if tree >= forest::MAX_STRIPES {
        return Err(PeerWireError::OutOfRange);
    }
    // A flags byte with only the bits `allowed` set.
    let flags = |r: &mut Reader<'_>, allowed: u8| match r.array::<1>()?[0] {
        f if f & !allowed == 0 => Ok(f),
        _ => Err(PeerWireError::OutOfRange),
    };
    Ok(match kind {
        1 => {
            let joiner = r.peer()?;
            let f = flags(r, 0b11)?;
            Msg::Search { tree, joiner, interior: f & 1 != 0, down: f & 2 != 0 }
        }
        2 => {
            let child = r.peer()?;
            let interior = flags(r, 1)? != 0;
            Msg::TakeOn { tree, child, interior, dead: r.opt_peer()? }
        }
        3 => Msg::Substitute { tree, parent: r.peer()?, grandparent: r.opt_peer()?, leaf: r.peer()? },
        4 => Msg::Direct { tree, parent: r.peer()?, grandparent: r.opt_peer()? },
        5 => {
            let dead = r.peer()?;
            Msg::Replace { tree, dead, interior: flags(r, 1)? != 0 }
        }
        6 => {
            let (interior, free, spare) = (r.u32()?, r.u32()?, r.u32()?);
            let (room, give) = (r.u32()?, r.u32()?);
            let attached = flags(r, 1)? != 0;
            let epoch = r.u32()?;
            Msg::Update { tree, info: UpdateInfo::Up { interior, free, spare, room, give, attached, epoch } }
        }
        7 => Msg::Update { tree, info: UpdateInfo::Down { grandparent: r.opt_peer()?, heir: r.opt_peer()? } },
        8 => {
            let why = match r.array::<1>()?[0] {
                1 => Refusal::BadTree,
                2 => Refusal::NotAChild,
                3 => Refusal::NotYourParent,
                4 => Refusal::Full,
                5 => Refusal::Loop,
                6 => Refusal::NotHeir,
                _ => return Err(PeerWireError::OutOfRange),
            };
            Msg::Refuse { tree, why }
        }
        9 if tree == 0 => Msg::Join,
        10 => Msg::Welcome { tree, contact: r.peer()? },
        11 => {
            let needy = r.peer()?;
            Msg::Want { tree, needy, down: flags(r, 1)? != 0 }
        }
        12 => Msg::Give { tree, leaf: r.peer()? },
        _ => return Err(PeerWireError::OutOfRange),
    })
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], PeerWireError> {
        if self.0.len() < n {
            return Err(PeerWireError::Truncated);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], PeerWireError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    fn u16(&mut self) -> Result<u16, PeerWireError> {
        Ok(u16::from_be_bytes(self.array()?))
    }
    fn u32(&mut self) -> Result<u32, PeerWireError> {
        Ok(u32::from_be_bytes(self.array()?))
    }
    fn object(&mut self) -> Result<ObjectId, PeerWireError> {
        Ok(ObjectId(self.array()?))
    }
    fn addr(&mut self) -> Result<std::net::SocketAddr, PeerWireError> {
        let ip = match self.array::<1>()?[0] {
            4 => std::net::IpAddr::from(self.array::<4>()?),
            6 => std::net::IpAddr::from(self.array::<16>()?),
            _ => return Err(PeerWireError::OutOfRange),
        };
        Ok(std::net::SocketAddr::new(ip, self.u16()?))
    }
    fn peer(&mut self) -> Result<ForestPeer, PeerWireError> {
        Ok(ForestPeer { node_id: self.array::<32>()?, addr: self.addr()? })
    }
    fn resume(&mut self) -> Result<Option<(ObjectId, u32)>, PeerWireError> {
        match self.array::<1>()?[0] {
            0 => Ok(None),
            1 => Ok(Some((self.object()?, self.u32()?))),
            _ => Err(PeerWireError::OutOfRange),
        }
    }
    fn opt_peer(&mut self) -> Result<Option<ForestPeer>, PeerWireError> {
        match self.array::<1>()?[0] {
            0 => Ok(None),
            1 => Ok(Some(self.peer()?)),
            _ => Err(PeerWireError::OutOfRange),
        }
    }
    fn end(&self) -> Result<(), PeerWireError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(PeerWireError::TrailingBytes)
        }
    }
}

/// Decode the frame at the start of `buf`: the message and the bytes it used.
/// [`PeerWireError::Incomplete`] asks for more bytes; every other error means the
/// stream is broken and should be closed (and counted against the peer).
pub fn decode_frame(buf: &[u8]) -> Result<(PeerMessage, usize), PeerWireError> {
    let Some(len) = buf.get(..4) else { return Err(PeerWireError::Incomplete(4)) };
    let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
    if len == 0 {
        return Err(PeerWireError::Empty);
    }
    if len > MAX_MESSAGE_LEN {
        return Err(PeerWireError::TooLong);
    }
    let Some(frame) = buf.get(4..4 + len) else { return Err(PeerWireError::Incomplete(4 + len)) };
    Ok((decode_body(frame)?, 4 + len))
}

/// A peer's answer stream of datagram frames, checked and split without
/// copying: each datagram is a range of the stream's bytes.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct DatagramFrames {
    body: Vec<u8>,
    frames: Vec<std::ops::Range<usize>>,
}

impl DatagramFrames {
    pub fn iter(&self) -> impl Iterator<Item = &[u8]> {
        self.frames.iter().map(|r| &self.body[r.clone()])
    }

    pub fn len(&self) -> usize {
        self.frames.len()
    }

    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }
}

/// What a finished answer stream holds: datagrams only, or else its first
/// other message (a refusal, say).
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    Datagrams(DatagramFrames),
    Other(PeerMessage),
}

/// Split a finished answer stream, with the checks [`decode_frame`] makes,
/// but leaving datagrams where they are.
pub fn decode_answer(body: Vec<u8>) -> Result<Answer, PeerWireError> {
    let mut frames = Vec::new();
    let mut at = 0;
    while at < body.len() {
        let rest = &body[at..];
        let is_datagram = rest.len() > 4 && rest[4] == 6;
        let len = match rest.get(..4) {
            Some(l) => u32::from_be_bytes([l[0], l[1], l[2], l[3]]) as usize,
            None => return Err(PeerWireError::Incomplete(4)),
        };
        if !is_datagram || len > MAX_MESSAGE_LEN || rest.len() < 4 + len {
            // Not a datagram, or bad: decode_frame says which.
            return match decode_frame(rest)? {
                // (A datagram frame that fits is taken above.)
                (PeerMessage::Datagram(_), _) => Err(PeerWireError::OutOfRange),
                (m, _) => Ok(Answer::Other(m)),
            };
        }
        let d = at + 5..at + 4 + len;
        if d.is_empty() || d.len() > wire::MAX_DATAGRAM {
            return Err(PeerWireError::OutOfRange);
        }
        frames.push(d);
        at += 4 + len;
    }
    Ok(Answer::Datagrams(DatagramFrames { body, frames }))
}

/// Every frame of a finished stream, in order.
pub fn decode_all(mut buf: &[u8]) -> Result<Vec<PeerMessage>, PeerWireError> {
    let mut out = Vec::new();
    while !buf.is_empty() {
        let (m, used) = decode_frame(buf)?;
        out.push(m);
        buf = &buf[used..];
    }
    Ok(out)
}

fn decode_body(frame: &[u8]) -> Result<PeerMessage, PeerWireError> {
    let mut r = Reader(&frame[1..]);
    let m = match frame[0] {
        1 => PeerMessage::HaveRequest { object_id: r.object()? },
        2 => {
            let object_id = r.object()?;
            let chunks = r.u32()?;
            if chunks > MAX_CHUNKS_PER_OBJECT {
                return Err(PeerWireError::OutOfRange);
            }
            let bits = r.take(chunks.div_ceil(8) as usize)?;
            let complete = ChunkBitmap::from_bytes(chunks, bits).ok_or(PeerWireError::NotCanonical)?;
            let count = r.u16()? as usize;
            if count > MAX_PARTIAL {
                return Err(PeerWireError::OutOfRange);
            }
            let entries = r.take(count * 6)?;
            let partial: Vec<(u32, u16)> = entries
                .chunks_exact(6)
                .map(|e| (u32::from_be_bytes([e[0], e[1], e[2], e[3]]), u16::from_be_bytes([e[4], e[5]])))
                .collect();
            if partial.iter().any(|(c, _)| *c >= chunks || complete.get(*c)) {
                return Err(PeerWireError::OutOfRange);
            }
            if partial.windows(2).any(|w| w[0].0 >= w[1].0) {
                return Err(PeerWireError::NotCanonical);
            }
            PeerMessage::HaveMap { object_id, complete, partial }
        }
        3 => {
            let object_id = r.object()?;
            let chunk = r.u32()?;
            let pages = r.u32()?;
            PeerMessage::TableRequest { object_id, chunk, pages }
        }
        4 => {
            let object_id = r.object()?;
            let chunk = r.u32()?;
            let count = r.u16()? as usize;
            if count == 0 || count > MAX_RANGES {
                return Err(PeerWireError::OutOfRange);
            }
            let entries = r.take(count * 6)?;
            let ranges = entries
                .chunks_exact(6)
                .map(|e| (u32::from_be_bytes([e[0], e[1], e[2], e[3]]), u16::from_be_bytes([e[4], e[5]])))
                .collect();
            let esis = EsiRanges::new(ranges).ok_or(PeerWireError::OutOfRange)?;
            PeerMessage::SymbolRequest { object_id, chunk, esis }
        }
        5 => {
            let object_id = r.object()?;
            let chunk = r.u32()?;
            let reason = match r.array::<1>()?[0] {
                1 => RefuseReason::NotHeld,
                2 => RefuseReason::Busy,
                3 => RefuseReason::OverLimit,
                4 => RefuseReason::Invalid,
                _ => return Err(PeerWireError::OutOfRange),
            };
            PeerMessage::Refuse { object_id, chunk, reason }
        }
        6 => {
            let d = r.take(r.0.len())?;
            if d.is_empty() || d.len() > wire::MAX_DATAGRAM {
                return Err(PeerWireError::OutOfRange);
            }
            PeerMessage::Datagram(d.to_vec())
        }
        7 => {
            let object_id = r.object()?;
            let chunk = r.u32()?;
            let missing = r.u16()?;
            if missing == 0 || u32::from(missing) > MAX_ESIS_PER_REQUEST {
                return Err(PeerWireError::OutOfRange);
            }
            PeerMessage::Nak { object_id, chunk, missing }
        }
        8 => match r.array::<1>()?[0] {
            f if f & !0b11 == 0 => PeerMessage::Register { bridge: f & 1 != 0, forest: f & 2 != 0 },
            _ => return Err(PeerWireError::OutOfRange),
        },
        9 => {
            let object_id = r.object()?;
            let chunk = r.u32()?;
            let limit = r.array::<1>()?[0];
            if limit == 0 || usize::from(limit) > MAX_HUB_LIST {
                return Err(PeerWireError::OutOfRange);
            }
            PeerMessage::HoldersRequest { object_id, chunk: (chunk != u32::MAX).then_some(chunk), limit }
        }
        10 => PeerMessage::ForestHubRequest,
        11 => {
            let count = usize::from(r.array::<1>()?[0]);
            if count > MAX_HUB_LIST {
                return Err(PeerWireError::OutOfRange);
            }
            let mut hubs = Vec::with_capacity(count);
            for _ in 0..count {
                let node_id = r.array::<32>()?;
                let bridge = match r.array::<1>()?[0] {
                    0 => false,
                    1 => true,
                    _ => return Err(PeerWireError::OutOfRange),
                };
                let addr = r.addr()?;
                hubs.push(ListedHub { node_id, bridge, addr });
            }
            PeerMessage::HubList(hubs)
        }
        12 => {
            let limit = r.array::<1>()?[0];
            if limit == 0 || usize::from(limit) > MAX_HUB_LIST {
                return Err(PeerWireError::OutOfRange);
            }
            PeerMessage::BridgesRequest { limit }
        }
        13 => PeerMessage::Subscribe { resume: r.resume()? },
        14 => PeerMessage::Subscribed,
        15 => PeerMessage::Forest(decode_forest(&mut r)?),
        16 => {
            let [tree, stripes] = r.array::<2>()?;
            if !(2..=forest::MAX_STRIPES).contains(&stripes) || tree >= stripes {
                return Err(PeerWireError::OutOfRange);
            }
            PeerMessage::Stripe { tree, stripes, resume: r.resume()? }
        }
        _ => return Err(PeerWireError::UnknownType),
    };
    r.end()?;
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(m: PeerMessage) {
        let mut buf = Vec::new();
        encode(&m, &mut buf);
        if let PeerMessage::Datagram(d) = &m {
            let mut direct = Vec::new();
            encode_datagram(d, &mut direct);
            assert_eq!(direct, buf, "encode_datagram writes what encode does");
        }
        assert_eq!(decode_frame(&buf), Ok((m, buf.len())));
        // Every shorter prefix asks for more rather than failing.
        for cut in 0..buf.len() {
            assert!(matches!(decode_frame(&buf[..cut]), Err(PeerWireError::Incomplete(_))), "cut {cut}");
        }
    }

    #[test]
    fn an_answer_splits_into_the_datagrams_decode_all_gives_without_copying_them() {
        let datagrams = [vec![1u8; 40], vec![2; wire::MAX_DATAGRAM], vec![3]];
        let mut body = Vec::new();
        for d in &datagrams {
            encode_datagram(d, &mut body);
        }
        let Ok(Answer::Datagrams(frames)) = decode_answer(body.clone()) else { panic!("datagrams") };
        assert_eq!(frames.iter().map(<[u8]>::to_vec).collect::<Vec<_>>(), datagrams);
        let refuse =
            PeerMessage::Refuse { object_id: ObjectId([1; 32]), chunk: 2, reason: RefuseReason::Busy };
        let mut refused = Vec::new();
        encode(&refuse, &mut refused);
        assert_eq!(decode_answer(refused), Ok(Answer::Other(refuse)));
        let boundaries = [45, 45 + 5 + wire::MAX_DATAGRAM];
        for cut in (1..body.len()).filter(|c| !boundaries.contains(c)) {
            assert!(decode_answer(body[..cut].to_vec()).is_err(), "cut {cut}");
        }
        let mut empty = Vec::new();
        encode_datagram(&[], &mut empty);
        assert!(decode_answer(empty).is_err());
        let mut too_long = Vec::new();
        encode_datagram(&vec![0; wire::MAX_DATAGRAM + 1], &mut too_long);
        assert!(decode_answer(too_long).is_err());
        assert_eq!(decode_answer(Vec::new()), Ok(Answer::Datagrams(DatagramFrames::default())));
    }

    #[test]
    fn every_message_round_trips_and_streams() {
        let id = ObjectId([4; 32]);
        let mut complete = ChunkBitmap::new(13);
        complete.set(0);
        complete.set(12);
        round_trip(PeerMessage::HaveRequest { object_id: id });
        round_trip(PeerMessage::HaveMap { object_id: id, complete, partial: vec![(3, 700), (5, 1)] });
        round_trip(PeerMessage::TableRequest { object_id: id, chunk: 7, pages: 0b1011 });
        let esis = EsiRanges::new(vec![(0, 3), (10, 1), (900, 40)]).unwrap();
        assert_eq!(esis.iter().take(5).collect::<Vec<_>>(), [0, 1, 2, 10, 900]);
        round_trip(PeerMessage::SymbolRequest { object_id: id, chunk: 2, esis });
        round_trip(PeerMessage::Refuse { object_id: id, chunk: 1, reason: RefuseReason::NotHeld });
        round_trip(PeerMessage::Datagram(vec![1, 2, 3]));
        round_trip(PeerMessage::Nak { object_id: id, chunk: 9, missing: 17 });
        round_trip(PeerMessage::Register { bridge: true, forest: false });
        round_trip(PeerMessage::Register { bridge: false, forest: true });
        round_trip(PeerMessage::HoldersRequest { object_id: id, chunk: Some(3), limit: 8 });
        round_trip(PeerMessage::HoldersRequest { object_id: id, chunk: None, limit: 1 });
        round_trip(PeerMessage::ForestHubRequest);
        round_trip(PeerMessage::HubList(vec![
            ListedHub { node_id: [1; 32], bridge: false, addr: "10.0.0.1:4433".parse().unwrap() },
            ListedHub { node_id: [2; 32], bridge: true, addr: "[2001:db8::1]:7000".parse().unwrap() },
        ]));
        round_trip(PeerMessage::HubList(vec![]));
        round_trip(PeerMessage::BridgesRequest { limit: 4 });
        round_trip(PeerMessage::Subscribe { resume: None });
        round_trip(PeerMessage::Subscribe { resume: Some((id, 41)) });
        round_trip(PeerMessage::Subscribed);
    }

    #[test]
    fn every_forest_message_round_trips_and_malformed_ones_are_refused_typed() {
        use crate::forest::{Msg, Refusal, UpdateInfo};
        let a = ForestPeer { node_id: [1; 32], addr: "10.0.0.1:4433".parse().unwrap() };
        let b = ForestPeer { node_id: [2; 32], addr: "[2001:db8::2]:7000".parse().unwrap() };
        let all = [
            Msg::Search { tree: 3, joiner: a, interior: true, down: false },
            Msg::Search { tree: 0, joiner: b, interior: false, down: true },
            Msg::TakeOn { tree: 1, child: a, interior: true, dead: Some(b) },
            Msg::TakeOn { tree: 1, child: b, interior: false, dead: None },
            Msg::Want { tree: 2, needy: a, down: true },
            Msg::Give { tree: 3, leaf: b },
            Msg::Substitute { tree: 2, parent: a, grandparent: Some(b), leaf: b },
            Msg::Substitute { tree: 2, parent: a, grandparent: None, leaf: b },
            Msg::Direct { tree: 15, parent: b, grandparent: None },
            Msg::Replace { tree: 0, dead: b, interior: false },
            Msg::Update {
                tree: 1,
                info: UpdateInfo::Up {
                    interior: 7,
                    free: 0,
                    spare: 1,
                    room: 2,
                    give: 5,
                    attached: true,
                    epoch: 3,
                },
            },
            Msg::Update { tree: 1, info: UpdateInfo::Down { grandparent: Some(a), heir: None } },
            Msg::Refuse { tree: 2, why: Refusal::NotAChild },
            Msg::Refuse { tree: 2, why: Refusal::Loop },
            Msg::Join,
            Msg::Welcome { tree: 1, contact: b },
        ];
        round_trip(PeerMessage::Stripe { tree: 2, stripes: 3, resume: None });
        round_trip(PeerMessage::Stripe { tree: 0, stripes: 4, resume: Some((ObjectId([7; 32]), 9)) });
        let mut s = Vec::new();
        encode(&PeerMessage::Stripe { tree: 3, stripes: 3, resume: None }, &mut s);
        assert_eq!(decode_frame(&s), Err(PeerWireError::OutOfRange), "a stripe beyond the count");
        for m in all {
            round_trip(PeerMessage::Forest(m));
        }
        let mut buf = Vec::new();
        encode(
            &PeerMessage::Forest(Msg::Search { tree: 1, joiner: a, interior: true, down: true }),
            &mut buf,
        );
        let body = 4 + 1; // the frame's length and type
        let bad = |at: usize, v: u8| {
            let mut b = buf.clone();
            b[at] = v;
            decode_frame(&b)
        };
        assert_eq!(bad(body, 9), Err(PeerWireError::OutOfRange), "an unknown kind");
        assert_eq!(bad(body + 1, 16), Err(PeerWireError::OutOfRange), "a tree beyond MAX_STRIPES");
        assert_eq!(bad(body + 2 + 32, 5), Err(PeerWireError::OutOfRange), "an address family");
        assert_eq!(bad(buf.len() - 1, 4), Err(PeerWireError::OutOfRange), "an unknown flag bit");
    }

    #[test]
    fn feed_messages_take_only_their_canonical_forms() {
        // A subscription whose resume flag is neither 0 nor 1, or that says
        // "from the start" and still carries a position.
        for body in [vec![13, 2], [vec![13, 0], vec![0; 36]].concat(), vec![12, 0], vec![12, 33], vec![14, 0]]
        {
            let mut frame = (body.len() as u32).to_be_bytes().to_vec();
            frame.extend_from_slice(&body);
            assert!(decode_frame(&frame).is_err(), "{body:?}");
        }
    }

    #[test]
    fn absurd_requests_are_refused_before_allocating() {
        assert_eq!(EsiRanges::new(vec![]), None);
        assert_eq!(EsiRanges::new(vec![(5, 2), (6, 1)]), None, "overlap");
        assert_eq!(EsiRanges::new(vec![(9, 1), (2, 1)]), None, "decreasing");
        assert_eq!(EsiRanges::new(vec![(u32::MAX, 2)]), None, "beyond N_max");
        let huge = (u32::MAX).to_be_bytes();
        assert_eq!(decode_frame(&huge), Err(PeerWireError::TooLong));
        assert_eq!(decode_frame(&[0, 0, 0, 0]), Err(PeerWireError::Empty));
        let mut buf = Vec::new();
        encode(&PeerMessage::HaveRequest { object_id: ObjectId([0; 32]) }, &mut buf);
        buf[4] = 99;
        assert_eq!(decode_frame(&buf), Err(PeerWireError::UnknownType));
        // A have-map that claims more chunks than allowed.
        let mut map = vec![0, 0, 0, 0, 2];
        map.extend_from_slice(&[0; 32]);
        map.extend_from_slice(&(MAX_CHUNKS_PER_OBJECT + 1).to_be_bytes());
        let n = (map.len() - 4) as u32;
        map[..4].copy_from_slice(&n.to_be_bytes());
        assert_eq!(decode_frame(&map), Err(PeerWireError::OutOfRange));
    }

    #[test]
    fn non_canonical_bitmaps_are_refused() {
        let mut complete = ChunkBitmap::new(3);
        complete.set(1);
        let mut buf = Vec::new();
        encode(&PeerMessage::HaveMap { object_id: ObjectId([1; 32]), complete, partial: vec![] }, &mut buf);
        let bitmap_at = 4 + 1 + 32 + 4;
        buf[bitmap_at] |= 0x80; // a bit beyond chunk 2
        assert_eq!(decode_frame(&buf), Err(PeerWireError::NotCanonical));
    }
}
