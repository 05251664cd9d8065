//! Wire format v1: byte layouts of the five datagram kinds.
//!
//! Every datagram starts with a 12-byte header. Integers are big-endian.
//!
//! ```text
//! header (12 bytes)
//!   0   2  magic "HC"
//!   2   1  version = 1
//!   3   1  kind: 1 manifest, 2 ticket, 3 table page, 4 symbol, 5 feedback; high bit
//!          (0x80): relayed, sent again by a hub (`--remulticast`), not by
//!          the broadcaster. Outside every signature: a hint, which only
//!          decides whether a hub that hears it may act as a bridge.
//!   4   8  channel tag: first 8 bytes of the channel's root fingerprint
//!
//! manifest (kind 1)
//!  12 152  certificate of the signing key (see hubcast_keys::cert)
//! 164   8  sequence number
//! 172   8  expiry, unix seconds
//! 180  32  object id: an archive file's binds name and content
//!          (`ObjectId::archive`); a live segment's is its content's BLAKE3
//! 212   8  object size in bytes
//! 220   4  chunk size in bytes
//! 224   2  symbol size T in bytes
//! 226   1  codec: 1 = RaptorQ (RFC 6330, raptorq crate 2.0.x), one source block per chunk
//! 227   1  flags: bit 0 = a tracker follows the name; bit 1 = round end (sent
//!          after the object's last chunk this round); bit 2 = a live segment
//!          (the live block follows); bit 3 = on demand (announced, not on the
//!          carousel: the origin sends it when hubs ask; not with bit 2);
//!          other bits 0
//! 228   2  name length n (1..=MAX_NAME_LEN; a live segment's: 1..=MAX_CHANNEL_NAME_LEN)
//! 230   n  name: UTF-8 relative path, '/' separated; a live segment's is its
//!          channel's name (ASCII letters, digits, '-', '_', '.')
//!          with flag bit 0, the channel's tracker (origin service), 50 bytes:
//!  +0  32  its node id (the Ed25519 key its QUIC TLS proves)
//! +32  16  IPv6 address (IPv4 as ::ffff:a.b.c.d)
//! +48   2  UDP port
//!          with flag bit 2, the live block, 29 bytes:
//!  +0   8  segment sequence number in the channel (consecutive)
//!  +8   8  ingest time: when the broadcaster cut the segment, unix ms
//! +16   8  playout deadline, unix ms (after the ingest time): a hub holding
//!          the segment by then plays it on time; past it, hubs give up on it
//! +24   4  media duration, µs (1..=MAX_SEGMENT_US)
//! +28   1  live flags: bit 0 = discontinuity (the stream restarted before
//!          this segment); other bits 0
//! ...  64  Ed25519 signature by the certified key over everything before it,
//!          context "hubcast manifest v1"
//!
//! ticket (kind 2), one per chunk
//!  12 152  certificate
//! 164   8  sequence number
//! 172   8  expiry, unix seconds
//! 180  32  object id
//! 212   4  chunk index
//! 216   4  chunk length in bytes (1..=MAX_CHUNK_LEN)
//! 220   2  symbol size T
//! 222  32  chunk hash: BLAKE3 of the chunk's bytes
//! 254   2  page count p (must equal the count implied by K and T)
//! 256 32p  BLAKE3 of each symbol digest table page, in page order
//! ...  64  signature over everything before it, context "hubcast ticket v1"
//!
//! table page (kind 3)
//!  12  32  object id
//!  44   4  chunk index
//!  48   2  page index
//!  50 12m  m symbol digests, for ESIs page*DIGESTS_PER_PAGE .. +m
//!
//! symbol (kind 4)
//!  12  32  object id
//!  44   4  chunk index
//!  48   4  ESI (encoding symbol id, < N_max of the chunk)
//!  52   T  symbol bytes
//!
//! feedback (kind 5): the echo of loss reports (`crate::feedback`), a few a second
//!  12 152  certificate
//! 164   8  sequence number (increases with every feedback the broadcaster signs)
//! 172   8  expiry, unix seconds
//! 180   4  feedback round
//! 184   2  round length, ms (1..)
//! 186   1  worst loss reported this round, whole percent (0..=100); 255: none yet
//! 187   2  FEC overhead now, per mille of K (0..=MAX_FEC_PERMILLE)
//! 189   4  the rate now, kbit/s, under `--rate auto`; 0: a fixed rate
//! 193   1  verdicts heard this round: bit 0 a hub behind, bit 1 one congested
//! 194  64  signature over everything before it, context "hubcast feedback v1"
//!          (a broadcaster of before 2026-12-06 sends neither of the last two
//!          fields, and the signature at 189: decoded as a fixed rate)
//! ```
//!
//! Decoders here check layout and bounds only; signatures and digests are checked
//! by [`crate::verify`]. Every bound is a named constant.

use crate::ObjectId;
use hubcast_keys::{Certificate, NodeAddr, NodeId, RevocationList, RootRotation, CERTIFICATE_LEN};
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

mod catalog_root;
mod feedback;
mod peek;
use catalog_root::decode_catalog_root;
pub use catalog_root::{catalog_root_signed_bytes, CatalogRoot, CATALOG_ROOT_LEN};
use feedback::decode_feedback;
pub use feedback::feedback_signed_bytes;
pub use peek::{field_range, peek_chunk, peek_esi, peek_ticket_geometry, Field};

pub const MAGIC: [u8; 2] = *b"HC";
pub const VERSION: u8 = 1;
pub const HEADER_LEN: usize = 12;

/// Largest datagram we send or accept: a 1400-byte IPv6 packet less 40 bytes of
/// IPv6 header and 8 of UDP.
pub const MAX_DATAGRAM: usize = 1352;
/// Default symbol size: fits [`MAX_DATAGRAM`] with the symbol header.
pub const DEFAULT_SYMBOL_SIZE: u16 = 1280;
pub const MIN_SYMBOL_SIZE: u16 = 64;
pub const MAX_SYMBOL_SIZE: u16 = (MAX_DATAGRAM - SYMBOL_HEADER_LEN) as u16 / 8 * 8;
/// Most source symbols (K) in one chunk.
pub const MAX_SOURCE_SYMBOLS: u32 = 2048;
/// Largest chunk at the largest symbol size.
pub const MAX_CHUNK_LEN: u32 = MAX_SOURCE_SYMBOLS * MAX_SYMBOL_SIZE as u32;
/// Longest object name: a manifest with a tracker still fits one datagram.
pub const MAX_NAME_LEN: usize = 1000;
/// The tracker's bytes in a manifest: node id, IPv6 address, port.
pub const TRACKER_LEN: usize = 32 + 16 + 2;
/// Manifest flag: the tracker follows the name.
const FLAG_TRACKER: u8 = 1;
/// Manifest flag: sent after the object's last chunk of this carousel round.
const FLAG_ROUND_END: u8 = 2;
/// Manifest flag: a live segment; the live block follows.
const FLAG_LIVE: u8 = 4;
/// Manifest flag: announced, not on the carousel; sent when a hub asks.
const FLAG_ON_DEMAND: u8 = 8;
/// A feedback datagram's worst loss when no hub has reported this round.
const NO_REPORT: u8 = 255;
/// Largest FEC overhead a feedback datagram may state, per mille of K.
pub const MAX_FEC_PERMILLE: u16 = 1000;
/// The live block's bytes in a manifest.
pub const LIVE_LEN: usize = 8 + 8 + 8 + 4 + 1;
/// Longest live channel name.
pub const MAX_CHANNEL_NAME_LEN: usize = 64;
/// Longest live segment: one minute.
pub const MAX_SEGMENT_US: u32 = 60_000_000;
/// Live flag: the stream restarted before this segment.
const LIVE_DISCONTINUITY: u8 = 1;
/// Bytes of one symbol digest.
pub const DIGEST_LEN: usize = 12;
/// Digests in one table page.
pub const DIGESTS_PER_PAGE: usize = 100;
/// Most table pages of one chunk; bounds the ticket's size.
pub const MAX_TABLE_PAGES: usize = 32;
/// Codec id of RaptorQ through the pinned raptorq 2.0.x crate.
pub const CODEC_RAPTORQ_V2: u8 = 1;

pub const SIGNATURE_LEN: usize = 64;
pub const SYMBOL_HEADER_LEN: usize = HEADER_LEN + 32 + 4 + 4;
pub const PAGE_HEADER_LEN: usize = HEADER_LEN + 32 + 4 + 2;
const SIGNED_PREFIX_LEN: usize = HEADER_LEN + CERTIFICATE_LEN + 8 + 8 + 32;
const MANIFEST_FIXED_LEN: usize = SIGNED_PREFIX_LEN + 8 + 4 + 2 + 1 + 1 + 2;
const TICKET_FIXED_LEN: usize = SIGNED_PREFIX_LEN + 4 + 4 + 2 + 32 + 2;
/// A feedback datagram's length, signature included.
pub const FEEDBACK_LEN: usize = HEADER_LEN + CERTIFICATE_LEN + 8 + 8 + 4 + 2 + 1 + 2 + 4 + 1 + SIGNATURE_LEN;
/// A feedback datagram of before 2026-12-06 (no rate, no verdicts).
pub const FEEDBACK_V1_LEN: usize = FEEDBACK_LEN - 5;

// Every layout fits one datagram at its largest, checked when compiling.
const _: () = assert!(SYMBOL_HEADER_LEN + DEFAULT_SYMBOL_SIZE as usize == 1332);
const _: () = assert!(SYMBOL_HEADER_LEN + MAX_SYMBOL_SIZE as usize <= MAX_DATAGRAM);
const _: () = assert!(PAGE_HEADER_LEN + DIGESTS_PER_PAGE * DIGEST_LEN <= MAX_DATAGRAM);
const _: () = assert!(MANIFEST_FIXED_LEN + MAX_NAME_LEN + TRACKER_LEN + SIGNATURE_LEN <= MAX_DATAGRAM);
const _: () = assert!(
    MANIFEST_FIXED_LEN + MAX_CHANNEL_NAME_LEN + TRACKER_LEN + LIVE_LEN + SIGNATURE_LEN <= MAX_DATAGRAM
);
const _: () = assert!(TICKET_FIXED_LEN + 32 * MAX_TABLE_PAGES + SIGNATURE_LEN <= MAX_DATAGRAM);
// The largest chunk's table still fits the ticket.
const _: () = assert!(
    (MAX_SOURCE_SYMBOLS + MAX_SOURCE_SYMBOLS / 2 + 16).div_ceil(DIGESTS_PER_PAGE as u32) as usize
        <= MAX_TABLE_PAGES
);

pub type SymbolDigest = [u8; DIGEST_LEN];
pub type Hash = [u8; 32];

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Kind {
    Manifest = 1,
    Ticket = 2,
    TablePage = 3,
    Symbol = 4,
    Feedback = 5,
    CatalogRoot = 6,
    Revocations = 7,
    RootRotation = 8,
}

/// Why a datagram could not be parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Shorter than its layout requires.
    #[error("datagram truncated")]
    Truncated,
    /// Longer than [`MAX_DATAGRAM`] or than its layout allows.
    #[error("datagram oversized")]
    Oversized,
    /// Does not start with [`MAGIC`].
    #[error("not a hubcast datagram")]
    BadMagic,
    /// A version this build does not speak.
    #[error("unsupported wire version")]
    BadVersion,
    /// Unknown datagram kind.
    #[error("unknown datagram kind")]
    BadKind,
    /// A field out of its documented range (sizes, counts, ESI, name).
    #[error("field out of range")]
    OutOfRange,
    /// The embedded certificate is not well formed.
    #[error("malformed certificate")]
    BadCertificate,
    /// A revocation list that is not well formed (count, order, length).
    #[error("malformed revocation list")]
    BadRevocations,
    /// A root rotation statement that is not well formed.
    #[error("malformed root rotation")]
    BadRotation,
}

/// The fixed header every datagram starts with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub kind: Kind,
    pub channel_tag: u64,
    /// Sent again by a hub, not by the broadcaster (kind's high bit).
    pub relayed: bool,
}

/// The kind byte's high bit: the datagram was relayed by a hub.
pub const RELAYED: u8 = 0x80;

/// Mark a datagram as relayed by a hub (for `--remulticast`). Nothing signed
/// changes.
pub fn mark_relayed(datagram: &mut [u8]) {
    if let Some(kind) = datagram.get_mut(3) {
        *kind |= RELAYED;
    }
}

/// Object metadata bound to the channel by a signature.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    pub seq: u64,
    pub expiry: u64,
    pub object_id: ObjectId,
    pub size: u64,
    pub chunk_size: u32,
    pub symbol_size: u16,
    pub codec: u8,
    pub name: String,
    /// The channel's tracker (origin service), for hubs not given `--tracker`.
    /// Signed with the rest, so a hub dials only the node the broadcaster named.
    pub tracker: Option<NodeAddr>,
    /// This copy follows the object's last chunk of a carousel round: a hub
    /// that lacks chunks of it knows the multicast has passed them all (a hub
    /// that joined after the object went by learns what to repair).
    pub round_end: bool,
    /// For a segment of a live channel (`name` is the channel's): where it
    /// stands in the stream and when it must be played.
    pub live: Option<LiveSegment>,
    /// Announced only: the carousel does not send it; a hub that wants it
    /// asks (peers, then the origin, which multicasts it once for all who
    /// asked). Never a live segment.
    pub on_demand: bool,
}

/// What a live segment's manifest says beyond an archive object's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LiveSegment {
    /// Position in the channel: consecutive from the stream's first segment.
    pub seq: u64,
    /// When the broadcaster cut the segment, unix ms.
    pub ingest_ms: u64,
    /// Playout deadline, unix ms: held by then, the segment plays on time;
    /// past it, hubs stop collecting and repairing it.
    pub deadline_ms: u64,
    /// Media duration, µs.
    pub duration_us: u32,
    /// The stream restarted before this segment (timestamps jump).
    pub discontinuity: bool,
}

/// Whether `name` may name a live channel: it becomes a URL path element.
pub fn valid_channel_name(name: &str) -> bool {
    (1..=MAX_CHANNEL_NAME_LEN).contains(&name.len())
        && !name.starts_with('.')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// The broadcaster's echo of the loss reports (see [`crate::feedback`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Feedback {
    pub seq: u64,
    pub expiry: u64,
    pub echo: crate::feedback::Echo,
}

/// Per-chunk signed header: what the chunk hashes to and the commitment to its
/// symbol digest table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ticket {
    pub seq: u64,
    pub expiry: u64,
    pub object_id: ObjectId,
    pub chunk_index: u32,
    pub chunk_len: u32,
    pub symbol_size: u16,
    pub chunk_hash: Hash,
    pub page_hashes: Vec<Hash>,
}

/// A signed message as it came off the wire: parsed, not yet verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signed<T> {
    pub body: T,
    pub cert: Certificate,
    /// The bytes the signature covers.
    pub signed_bytes: Vec<u8>,
    pub signature: [u8; SIGNATURE_LEN],
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TablePage<'a> {
    pub object_id: ObjectId,
    pub chunk_index: u32,
    pub page_index: u16,
    /// `DIGEST_LEN`-byte digests, back to back. Length is a positive multiple of it.
    pub digests: &'a [u8],
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SymbolPacket<'a> {
    pub object_id: ObjectId,
    pub chunk_index: u32,
    pub esi: u32,
    pub data: &'a [u8],
}

/// One parsed datagram.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Datagram<'a> {
    Manifest(Signed<Manifest>),
    Ticket(Signed<Ticket>),
    TablePage(TablePage<'a>),
    Symbol(SymbolPacket<'a>),
    Feedback(Signed<Feedback>),
    CatalogRoot(Signed<CatalogRoot>),
    /// The root's revocation list: signed by the root, carried as it came.
    Revocations(RevocationList),
    /// A root rotation: signed by the old root and the new one.
    RootRotation(RootRotation),
}

/// N_max: how many ESIs the digest table covers for a chunk of `k` source symbols.
pub fn n_max(k: u32) -> u32 {
    k + k / 2 + 16
}

/// Table pages needed for `n_max` digests.
pub fn page_count(n_max: u32) -> usize {
    (n_max as usize).div_ceil(DIGESTS_PER_PAGE)
}

/// K for a chunk: source symbols needed to carry `chunk_len` bytes.
pub fn source_symbols(chunk_len: u32, symbol_size: u16) -> u32 {
    chunk_len.div_ceil(symbol_size as u32)
}

/// Is `t` an acceptable symbol size? (RaptorQ alignment 8, and it must fit a datagram.)
pub fn valid_symbol_size(t: u16) -> bool {
    (MIN_SYMBOL_SIZE..=MAX_SYMBOL_SIZE).contains(&t) && t % 8 == 0
}

struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        let end = self.at.checked_add(n).ok_or(WireError::Truncated)?;
        let s = self.buf.get(self.at..end).ok_or(WireError::Truncated)?;
        self.at = end;
        Ok(s)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.array::<1>()?[0])
    }
    fn u16(&mut self) -> Result<u16, WireError> {
        Ok(u16::from_be_bytes(self.array()?))
    }
    fn u32(&mut self) -> Result<u32, WireError> {
        Ok(u32::from_be_bytes(self.array()?))
    }
    fn u64(&mut self) -> Result<u64, WireError> {
        Ok(u64::from_be_bytes(self.array()?))
    }
    fn rest(&mut self) -> &'a [u8] {
        let s = &self.buf[self.at..];
        self.at = self.buf.len();
        s
    }
    fn remaining(&self) -> usize {
        self.buf.len() - self.at
    }
}

/// Parse only the header: cheap, for dropping other channels' traffic early.
pub fn decode_header(buf: &[u8]) -> Result<Header, WireError> {
    if buf.len() > MAX_DATAGRAM {
        return Err(WireError::Oversized);
    }
    let mut r = Reader { buf, at: 0 };
    if r.array::<2>()? != MAGIC {
        return Err(WireError::BadMagic);
    }
    if r.u8()? != VERSION {
        return Err(WireError::BadVersion);
    }
    let kind = r.u8()?;
    let relayed = kind & RELAYED != 0;
    let kind = match kind & !RELAYED {
        1 => Kind::Manifest,
        2 => Kind::Ticket,
        3 => Kind::TablePage,
        4 => Kind::Symbol,
        5 => Kind::Feedback,
        6 => Kind::CatalogRoot,
        7 => Kind::Revocations,
        8 => Kind::RootRotation,
        _ => return Err(WireError::BadKind),
    };
    Ok(Header { kind, channel_tag: r.u64()?, relayed })
}

/// Parse a whole datagram. Bounds are checked; nothing is verified.
pub fn decode(buf: &[u8]) -> Result<(Header, Datagram<'_>), WireError> {
    let header = decode_header(buf)?;
    let mut r = Reader { buf, at: HEADER_LEN };
    let datagram = match header.kind {
        Kind::Manifest => Datagram::Manifest(decode_manifest(&mut r)?),
        Kind::Ticket => Datagram::Ticket(decode_ticket(&mut r)?),
        Kind::TablePage => {
            let object_id = ObjectId(r.array()?);
            let chunk_index = r.u32()?;
            let page_index = r.u16()?;
            let digests = r.rest();
            if digests.is_empty() || digests.len() % DIGEST_LEN != 0 {
                return Err(WireError::Truncated);
            }
            if digests.len() > DIGESTS_PER_PAGE * DIGEST_LEN {
                return Err(WireError::Oversized);
            }
            if page_index as usize >= MAX_TABLE_PAGES {
                return Err(WireError::OutOfRange);
            }
            Datagram::TablePage(TablePage { object_id, chunk_index, page_index, digests })
        }
        Kind::Symbol => {
            let object_id = ObjectId(r.array()?);
            let chunk_index = r.u32()?;
            let esi = r.u32()?;
            let data = r.rest();
            if data.len() < MIN_SYMBOL_SIZE as usize {
                return Err(WireError::Truncated);
            }
            if esi >= n_max(MAX_SOURCE_SYMBOLS) {
                return Err(WireError::OutOfRange);
            }
            Datagram::Symbol(SymbolPacket { object_id, chunk_index, esi, data })
        }
        Kind::Feedback => Datagram::Feedback(decode_feedback(&mut r)?),
        Kind::CatalogRoot => Datagram::CatalogRoot(decode_catalog_root(&mut r)?),
        Kind::Revocations => {
            Datagram::Revocations(RevocationList::decode(r.rest()).map_err(|_| WireError::BadRevocations)?)
        }
        Kind::RootRotation => {
            Datagram::RootRotation(RootRotation::decode(r.rest()).map_err(|_| WireError::BadRotation)?)
        }
    };
    Ok((header, datagram))
}

/// What every signed datagram starts with after the header: the
/// certificate, the sequence number and the expiry.
fn decode_signed_head(r: &mut Reader<'_>) -> Result<(Certificate, u64, u64), WireError> {
    let cert = Certificate::decode(r.take(CERTIFICATE_LEN)?).map_err(|_| WireError::BadCertificate)?;
    Ok((cert, r.u64()?, r.u64()?))
}

fn decode_signed_prefix(r: &mut Reader<'_>) -> Result<(Certificate, u64, u64, ObjectId), WireError> {
    let (cert, seq, expiry) = decode_signed_head(r)?;
    Ok((cert, seq, expiry, ObjectId(r.array()?)))
}

fn finish_signed<T>(r: &mut Reader<'_>, body: T, cert: Certificate) -> Result<Signed<T>, WireError> {
    let signed_len = r.at;
    let signature = r.array::<SIGNATURE_LEN>()?;
    if r.remaining() != 0 {
        return Err(WireError::Oversized);
    }
    let mut signed_bytes = r.buf[..signed_len].to_vec();
    // The relay mark is outside the signature: signed as sent by the broadcaster.
    signed_bytes[3] &= !RELAYED;
    Ok(Signed { body, cert, signed_bytes, signature })
}

fn decode_manifest(r: &mut Reader<'_>) -> Result<Signed<Manifest>, WireError> {
    let (cert, seq, expiry, object_id) = decode_signed_prefix(r)?;
    let size = r.u64()?;
    let chunk_size = r.u32()?;
    let symbol_size = r.u16()?;
    let codec = r.u8()?;
    let flags = r.u8()?;
    let name_len = r.u16()? as usize;
    if name_len == 0
        || name_len > MAX_NAME_LEN
        || flags & !(FLAG_TRACKER | FLAG_ROUND_END | FLAG_LIVE | FLAG_ON_DEMAND) != 0
        || flags & (FLAG_LIVE | FLAG_ON_DEMAND) == FLAG_LIVE | FLAG_ON_DEMAND
    {
        return Err(WireError::OutOfRange);
    }
    let name = std::str::from_utf8(r.take(name_len)?).map_err(|_| WireError::OutOfRange)?;
    let tracker = if flags & FLAG_TRACKER != 0 {
        let id = NodeId(r.array()?);
        let ip = Ipv6Addr::from(r.array::<16>()?);
        let ip = ip.to_ipv4_mapped().map_or(IpAddr::V6(ip), IpAddr::V4);
        let port = r.u16()?;
        if ip.is_unspecified() || ip.is_multicast() || port == 0 {
            return Err(WireError::OutOfRange);
        }
        Some(NodeAddr { id, addr: SocketAddr::new(ip, port) })
    } else {
        None
    };
    let live = if flags & FLAG_LIVE != 0 {
        let live = LiveSegment {
            seq: r.u64()?,
            ingest_ms: r.u64()?,
            deadline_ms: r.u64()?,
            duration_us: r.u32()?,
            discontinuity: match r.u8()? {
                0 => false,
                LIVE_DISCONTINUITY => true,
                _ => return Err(WireError::OutOfRange),
            },
        };
        if !valid_channel_name(name)
            || live.deadline_ms <= live.ingest_ms
            || !(1..=MAX_SEGMENT_US).contains(&live.duration_us)
        {
            return Err(WireError::OutOfRange);
        }
        Some(live)
    } else {
        None
    };
    if codec != CODEC_RAPTORQ_V2
        || !valid_symbol_size(symbol_size)
        || chunk_size == 0
        || chunk_size > MAX_CHUNK_LEN
        || source_symbols(chunk_size, symbol_size) > MAX_SOURCE_SYMBOLS
    {
        return Err(WireError::OutOfRange);
    }
    let body = Manifest {
        seq,
        expiry,
        object_id,
        size,
        chunk_size,
        symbol_size,
        codec,
        name: name.to_owned(),
        tracker,
        round_end: flags & FLAG_ROUND_END != 0,
        live,
        on_demand: flags & FLAG_ON_DEMAND != 0,
    };
    finish_signed(r, body, cert)
}

fn decode_ticket(r: &mut Reader<'_>) -> Result<Signed<Ticket>, WireError> {
    let (cert, seq, expiry, object_id) = decode_signed_prefix(r)?;
    let chunk_index = r.u32()?;
    let chunk_len = r.u32()?;
    let symbol_size = r.u16()?;
    let chunk_hash = r.array()?;
    let pages = r.u16()? as usize;
    if !valid_symbol_size(symbol_size) || chunk_len == 0 {
        return Err(WireError::OutOfRange);
    }
    let k = source_symbols(chunk_len, symbol_size);
    if k > MAX_SOURCE_SYMBOLS || pages != page_count(n_max(k)) || pages > MAX_TABLE_PAGES {
        return Err(WireError::OutOfRange);
    }
    let mut page_hashes = Vec::with_capacity(pages);
    for _ in 0..pages {
        page_hashes.push(r.array()?);
    }
    let body =
        Ticket { seq, expiry, object_id, chunk_index, chunk_len, symbol_size, chunk_hash, page_hashes };
    finish_signed(r, body, cert)
}

/// The root's revocation list as a datagram of the channel `channel_tag`.
pub fn revocations_datagram(list: &RevocationList, channel_tag: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + hubcast_keys::MAX_REVOCATIONS_LEN);
    put_header(&mut out, Kind::Revocations, channel_tag);
    out.extend_from_slice(&list.encode());
    out
}

/// A root rotation as a datagram of the channel `channel_tag`.
pub fn rotation_datagram(r: &RootRotation, channel_tag: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + hubcast_keys::ROTATION_LEN);
    put_header(&mut out, Kind::RootRotation, channel_tag);
    out.extend_from_slice(&r.encode());
    out
}

fn put_header(out: &mut Vec<u8>, kind: Kind, channel_tag: u64) {
    out.extend_from_slice(&MAGIC);
    out.push(VERSION);
    out.push(kind as u8);
    out.extend_from_slice(&channel_tag.to_be_bytes());
}

fn put_signed_head(out: &mut Vec<u8>, cert: &Certificate, seq: u64, expiry: u64) {
    out.extend_from_slice(&cert.encode());
    out.extend_from_slice(&seq.to_be_bytes());
    out.extend_from_slice(&expiry.to_be_bytes());
}

fn put_signed_prefix(out: &mut Vec<u8>, cert: &Certificate, seq: u64, expiry: u64, id: &ObjectId) {
    put_signed_head(out, cert, seq, expiry);
    out.extend_from_slice(&id.0);
}

/// The bytes a manifest's signature covers (everything but the signature).
pub fn manifest_signed_bytes(m: &Manifest, cert: &Certificate, channel_tag: u64) -> Vec<u8> {
    let mut out =
        Vec::with_capacity(MANIFEST_FIXED_LEN + m.name.len() + TRACKER_LEN + LIVE_LEN + SIGNATURE_LEN);
    put_header(&mut out, Kind::Manifest, channel_tag);
    put_signed_prefix(&mut out, cert, m.seq, m.expiry, &m.object_id);
    out.extend_from_slice(&m.size.to_be_bytes());
    out.extend_from_slice(&m.chunk_size.to_be_bytes());
    out.extend_from_slice(&m.symbol_size.to_be_bytes());
    out.push(m.codec);
    out.push(
        if m.tracker.is_some() { FLAG_TRACKER } else { 0 }
            | if m.round_end { FLAG_ROUND_END } else { 0 }
            | if m.live.is_some() { FLAG_LIVE } else { 0 }
            | if m.on_demand { FLAG_ON_DEMAND } else { 0 },
    );
    out.extend_from_slice(&(m.name.len() as u16).to_be_bytes());
    out.extend_from_slice(m.name.as_bytes());
    if let Some(t) = m.tracker {
        out.extend_from_slice(&t.id.0);
        let ip = match t.addr.ip() {
            IpAddr::V4(a) => a.to_ipv6_mapped(),
            IpAddr::V6(a) => a,
        };
        out.extend_from_slice(&ip.octets());
        out.extend_from_slice(&t.addr.port().to_be_bytes());
    }
    if let Some(l) = m.live {
        out.extend_from_slice(&l.seq.to_be_bytes());
        out.extend_from_slice(&l.ingest_ms.to_be_bytes());
        out.extend_from_slice(&l.deadline_ms.to_be_bytes());
        out.extend_from_slice(&l.duration_us.to_be_bytes());
        out.push(if l.discontinuity { LIVE_DISCONTINUITY } else { 0 });
    }
    out
}

/// The bytes a ticket's signature covers.
pub fn ticket_signed_bytes(t: &Ticket, cert: &Certificate, channel_tag: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(TICKET_FIXED_LEN + 32 * t.page_hashes.len() + SIGNATURE_LEN);
    put_header(&mut out, Kind::Ticket, channel_tag);
    put_signed_prefix(&mut out, cert, t.seq, t.expiry, &t.object_id);
    out.extend_from_slice(&t.chunk_index.to_be_bytes());
    out.extend_from_slice(&t.chunk_len.to_be_bytes());
    out.extend_from_slice(&t.symbol_size.to_be_bytes());
    out.extend_from_slice(&t.chunk_hash);
    out.extend_from_slice(&(t.page_hashes.len() as u16).to_be_bytes());
    for h in &t.page_hashes {
        out.extend_from_slice(h);
    }
    out
}

pub fn encode_table_page(
    out: &mut Vec<u8>,
    channel_tag: u64,
    object_id: &ObjectId,
    chunk_index: u32,
    page_index: u16,
    digests: &[u8],
) {
    out.clear();
    put_header(out, Kind::TablePage, channel_tag);
    out.extend_from_slice(&object_id.0);
    out.extend_from_slice(&chunk_index.to_be_bytes());
    out.extend_from_slice(&page_index.to_be_bytes());
    out.extend_from_slice(digests);
}

pub fn encode_symbol(
    out: &mut Vec<u8>,
    channel_tag: u64,
    object_id: &ObjectId,
    chunk_index: u32,
    esi: u32,
    data: &[u8],
) {
    out.clear();
    put_header(out, Kind::Symbol, channel_tag);
    out.extend_from_slice(&object_id.0);
    out.extend_from_slice(&chunk_index.to_be_bytes());
    out.extend_from_slice(&esi.to_be_bytes());
    out.extend_from_slice(data);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_table_costs_a_few_percent_of_a_default_chunk() {
        let k = source_symbols(1 << 20, DEFAULT_SYMBOL_SIZE);
        let table = page_count(n_max(k)) * (PAGE_HEADER_LEN + DIGESTS_PER_PAGE * DIGEST_LEN);
        let share = table as f64 / f64::from(1u32 << 20);
        assert!(share < 0.02, "table is {:.2}% of the chunk", share * 100.0);
    }

    #[test]
    fn header_errors_are_typed() {
        assert_eq!(decode_header(b"H"), Err(WireError::Truncated));
        assert_eq!(decode_header(b"XX\x01\x04\0\0\0\0\0\0\0\0"), Err(WireError::BadMagic));
        assert_eq!(decode_header(b"HC\x02\x04\0\0\0\0\0\0\0\0"), Err(WireError::BadVersion));
        assert_eq!(decode_header(b"HC\x01\x09\0\0\0\0\0\0\0\0"), Err(WireError::BadKind));
        assert_eq!(decode_header(&[0u8; MAX_DATAGRAM + 1]), Err(WireError::Oversized));
    }

    #[test]
    fn symbol_round_trips_and_bad_esi_is_refused() {
        let id = ObjectId([5; 32]);
        let mut out = Vec::new();
        encode_symbol(&mut out, 9, &id, 3, 17, &[1u8; 128]);
        let (h, d) = decode(&out).unwrap();
        assert_eq!(h, Header { kind: Kind::Symbol, channel_tag: 9, relayed: false });
        assert_eq!(peek_esi(&out), Some(17));
        assert_eq!(peek_esi(&out[..out.len() - 129]), None, "cut before the ESI");
        assert_eq!(
            d,
            Datagram::Symbol(SymbolPacket { object_id: id, chunk_index: 3, esi: 17, data: &[1u8; 128] })
        );
        encode_symbol(&mut out, 9, &id, 3, 1 << 24, &[1u8; 128]);
        assert_eq!(decode(&out), Err(WireError::OutOfRange));
        encode_symbol(&mut out, 9, &id, 3, 1, &[1u8; 8]);
        assert_eq!(decode(&out), Err(WireError::Truncated));
    }
}
