//! Fields of a datagram read at their fixed offsets, without decoding the
//! rest: where the receiver skips repeats, where the hub counts loss, and
//! where the tests that forge one field find it. Nothing here is verified.

use super::*;

/// The chunk a ticket, table page or symbol datagram is for, read from its fixed
/// offsets without parsing the rest: enough to skip repeats cheaply. `None` for
/// manifests and for anything too short to hold the fields.
pub fn peek_chunk(buf: &[u8], kind: Kind) -> Option<(ObjectId, u32)> {
    let at = match kind {
        Kind::Manifest | Kind::Feedback | Kind::CatalogRoot | Kind::Revocations | Kind::RootRotation => {
            return None
        }
        Kind::Ticket => HEADER_LEN + CERTIFICATE_LEN + 8 + 8,
        Kind::TablePage | Kind::Symbol => HEADER_LEN,
    };
    let id: [u8; 32] = buf.get(at..at + 32)?.try_into().ok()?;
    let index: [u8; 4] = buf.get(at + 32..at + 36)?.try_into().ok()?;
    Some((ObjectId(id), u32::from_be_bytes(index)))
}

/// A symbol datagram's ESI, read from its fixed offset (after the header,
/// object id and chunk index). Unverified: a hint for counting loss, never
/// for what to trust.
pub fn peek_esi(buf: &[u8]) -> Option<u32> {
    if decode_header(buf).ok()?.kind != Kind::Symbol {
        return None;
    }
    let at = HEADER_LEN + 32 + 4;
    let esi: [u8; 4] = buf.get(at..at + 4)?.try_into().ok()?;
    Some(u32::from_be_bytes(esi))
}

/// Where a ticket's chunk length lies: past the signed prefix and the index.
const TICKET_CHUNK_LEN_AT: usize = SIGNED_PREFIX_LEN + 4;

/// A ticket datagram's chunk length and symbol size, read from their fixed
/// offsets without parsing the certificate. `None` when it is not a ticket or
/// too short. Trust them only as far as the ticket was checked.
pub fn peek_ticket_geometry(buf: &[u8]) -> Option<(u32, u16)> {
    if decode_header(buf).ok()?.kind != Kind::Ticket {
        return None;
    }
    let at = TICKET_CHUNK_LEN_AT;
    let len: [u8; 4] = buf.get(at..at + 4)?.try_into().ok()?;
    let t: [u8; 2] = buf.get(at + 4..at + 6)?.try_into().ok()?;
    Some((u32::from_be_bytes(len), u16::from_be_bytes(t)))
}

/// A field of a signed datagram (manifest or ticket), to name where it lies
/// ([`field_range`]): the tests that forge one field find it here, from the
/// codec's own layout, not from a byte offset counted by hand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field {
    /// Both kinds: the signer's sequence number, the expiry, the object.
    Seq,
    Expiry,
    ObjectId,
    /// Manifest fields.
    Size,
    ChunkSize,
    SymbolSize,
    Codec,
    /// Tracker, round-end and live bits.
    Flags,
    NameLen,
    Name,
    TrackerId,
    TrackerIp,
    TrackerPort,
    LiveSeq,
    LiveIngest,
    LiveDeadline,
    LiveDuration,
    LiveDiscontinuity,
    /// Ticket fields (its symbol size is [`Field::SymbolSize`]).
    ChunkIndex,
    ChunkLen,
    ChunkHash,
    PageCount,
    PageHashes,
    /// Both kinds: the signature itself, last.
    Signature,
}

/// The bytes `field` occupies in a manifest or ticket datagram, following the
/// layout the encoder writes (lengths and flags read from the datagram). `None`
/// when the datagram is of another kind, lacks the field (no tracker, not
/// live) or is too short for it. Nothing is verified.
pub fn field_range(datagram: &[u8], field: Field) -> Option<std::ops::Range<usize>> {
    use Field::*;
    let kind = decode_header(datagram).ok()?.kind;
    let sig_at = datagram.len().checked_sub(SIGNATURE_LEN)?;
    let found = |at: usize, len: usize| (at + len <= sig_at).then_some(at..at + len);
    if field == Signature {
        return matches!(kind, Kind::Manifest | Kind::Ticket).then_some(sig_at..datagram.len());
    }
    let mut at = HEADER_LEN + CERTIFICATE_LEN;
    let be = |r: std::ops::Range<usize>| {
        datagram.get(r).map(|b| b.iter().fold(0usize, |n, x| n << 8 | *x as usize))
    };
    let common: [(Field, usize); 3] = [(Seq, 8), (Expiry, 8), (ObjectId, 32)];
    let fixed: &[(Field, usize)] = match kind {
        Kind::Manifest => &[(Size, 8), (ChunkSize, 4), (SymbolSize, 2), (Codec, 1), (Flags, 1), (NameLen, 2)],
        Kind::Ticket => &[(ChunkIndex, 4), (ChunkLen, 4), (SymbolSize, 2), (ChunkHash, 32), (PageCount, 2)],
        Kind::TablePage
        | Kind::Symbol
        | Kind::Feedback
        | Kind::CatalogRoot
        | Kind::Revocations
        | Kind::RootRotation => return None,
    };
    for &(f, len) in common.iter().chain(fixed) {
        if f == field {
            return found(at, len);
        }
        at += len;
    }
    let tail: Vec<(Field, usize)> = if kind == Kind::Ticket {
        vec![(PageHashes, 32 * be(at - 2..at)?)]
    } else {
        let flags = *datagram.get(at - 3)?;
        let mut tail = vec![(Name, be(at - 2..at)?)];
        if flags & FLAG_TRACKER != 0 {
            tail.extend([(TrackerId, 32), (TrackerIp, 16), (TrackerPort, 2)]);
        }
        if flags & FLAG_LIVE != 0 {
            tail.extend([
                (LiveSeq, 8),
                (LiveIngest, 8),
                (LiveDeadline, 8),
                (LiveDuration, 4),
                (LiveDiscontinuity, 1),
            ]);
        }
        tail
    };
    for (f, len) in tail {
        if f == field {
            return found(at, len);
        }
        at += len;
    }
    None
}
