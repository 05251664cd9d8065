//! Hub announcements, version 2: one UDP datagram a hub sends every few seconds
//! on its channel's control multicast group (the data group's port + 1), so the
//! hubs of an island find each other.
//!
//! ```text
//! 0   4  magic "HCA2"
//! 4   8  channel tag (u64 BE): announcements of other channels are ignored
//! 12 32  node id (Ed25519 public key)
//! 44  2  QUIC port (the address is the datagram's source)
//! 46  1  loss: the share of the multicast this hub hears on its LAN that it
//!        loses, whole percent 0..=100; 255 when not known
//! 47  2  object count m
//! 49  .. m x (object id (32), chunk count c (u32, 1..=MAX_CHUNKS_PER_OBJECT),
//!            complete bitmap (ceil(c/8) bytes, bit i = chunk i, LSB first,
//!            unused high bits 0))
//! ```
//!
//! Version 1 ("HCA1") is version 2 without the loss byte; it is still read
//! (loss not known), so hubs of the last release are found.
//!
//! The loss is what a `--remulticast` hub sizes its relay for: the worst its
//! LAN announces.
//!
//! The whole datagram is at most [`MAX_ANNOUNCE_LEN`] bytes, so a hub lists the
//! objects that fit (the most recent first) and the rest are found by asking.
//! An announcement is a hint, not a credential: a peer proves its node id in the
//! QUIC handshake, and every byte it serves is checked against the broadcaster's
//! signature.

use crate::peer_wire::{ChunkBitmap, MAX_CHUNKS_PER_OBJECT};
use crate::ObjectId;

pub const MAGIC: &[u8; 4] = b"HCA2";
/// Version 1: no loss byte.
const MAGIC_V1: &[u8; 4] = b"HCA1";
/// The loss byte of a hub that does not know its loss.
pub const LOSS_UNKNOWN: u8 = 255;
/// Fits an Ethernet MTU with IPv6 and UDP headers.
pub const MAX_ANNOUNCE_LEN: usize = 1400;
const HEADER_LEN: usize = 49;
const HEADER_LEN_V1: usize = 48;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Announcement {
    pub channel_tag: u64,
    pub node_id: [u8; 32],
    pub quic_port: u16,
    /// The share of its LAN's multicast the hub loses, whole percent.
    pub loss: Option<u8>,
    /// What the hub holds complete, per object.
    pub objects: Vec<(ObjectId, ChunkBitmap)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AnnounceError {
    #[error("not an announcement")]
    BadMagic,
    #[error("announcement longer than {MAX_ANNOUNCE_LEN} bytes")]
    TooLong,
    #[error("announcement truncated")]
    Truncated,
    #[error("field out of range")]
    OutOfRange,
    #[error("not the canonical encoding")]
    NotCanonical,
}

impl Announcement {
    /// Encode, with as many of the objects (in order) as fit; returns the
    /// datagram and how many objects it lists.
    pub fn encode(&self) -> (Vec<u8>, usize) {
        let mut out = Vec::with_capacity(MAX_ANNOUNCE_LEN);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.channel_tag.to_be_bytes());
        out.extend_from_slice(&self.node_id);
        out.extend_from_slice(&self.quic_port.to_be_bytes());
        out.push(self.loss.map_or(LOSS_UNKNOWN, |l| l.min(100)));
        out.extend_from_slice(&[0, 0]);
        let mut listed = 0u16;
        for (id, bitmap) in &self.objects {
            let entry = 32 + 4 + bitmap.bytes().len();
            if bitmap.is_empty() || out.len() + entry > MAX_ANNOUNCE_LEN || listed == u16::MAX {
                continue;
            }
            out.extend_from_slice(&id.0);
            out.extend_from_slice(&bitmap.len().to_be_bytes());
            out.extend_from_slice(bitmap.bytes());
            listed += 1;
        }
        out[HEADER_LEN - 2..HEADER_LEN].copy_from_slice(&listed.to_be_bytes());
        (out, listed as usize)
    }

    pub fn decode(buf: &[u8]) -> Result<Announcement, AnnounceError> {
        if buf.len() > MAX_ANNOUNCE_LEN {
            return Err(AnnounceError::TooLong);
        }
        let magic = |m: &[u8; 4]| buf.starts_with(m) || m.starts_with(buf);
        let header = if magic(MAGIC) {
            HEADER_LEN
        } else if magic(MAGIC_V1) {
            HEADER_LEN_V1
        } else {
            return Err(AnnounceError::BadMagic);
        };
        if buf.len() < header {
            return Err(AnnounceError::Truncated);
        }
        let be32 = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        let mut tag = [0u8; 8];
        tag.copy_from_slice(&buf[4..12]);
        let mut node_id = [0u8; 32];
        node_id.copy_from_slice(&buf[12..44]);
        let quic_port = u16::from_be_bytes([buf[44], buf[45]]);
        let loss = match (header, buf[46]) {
            (HEADER_LEN_V1, _) | (_, LOSS_UNKNOWN) => None,
            (_, percent @ 0..=100) => Some(percent),
            _ => return Err(AnnounceError::OutOfRange),
        };
        let count = u16::from_be_bytes([buf[header - 2], buf[header - 1]]) as usize;
        let mut rest = &buf[header..];
        let mut objects = Vec::new();
        for _ in 0..count {
            if rest.len() < 36 {
                return Err(AnnounceError::Truncated);
            }
            let mut id = [0u8; 32];
            id.copy_from_slice(&rest[..32]);
            let chunks = be32(&rest[32..36]);
            if chunks == 0 || chunks > MAX_CHUNKS_PER_OBJECT {
                return Err(AnnounceError::OutOfRange);
            }
            let n = chunks.div_ceil(8) as usize;
            let bits = rest.get(36..36 + n).ok_or(AnnounceError::Truncated)?;
            let bitmap = ChunkBitmap::from_bytes(chunks, bits).ok_or(AnnounceError::NotCanonical)?;
            objects.push((ObjectId(id), bitmap));
            rest = &rest[36 + n..];
        }
        if !rest.is_empty() {
            return Err(AnnounceError::NotCanonical);
        }
        Ok(Announcement { channel_tag: u64::from_be_bytes(tag), node_id, quic_port, loss, objects })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bitmap(chunks: u32, set: &[u32]) -> ChunkBitmap {
        let mut b = ChunkBitmap::new(chunks);
        set.iter().for_each(|i| b.set(*i));
        b
    }

    #[test]
    fn round_trips_and_lists_only_what_fits() {
        let a = Announcement {
            channel_tag: 7,
            node_id: [3; 32],
            quic_port: 4433,
            loss: Some(37),
            objects: vec![(ObjectId([1; 32]), bitmap(13, &[0, 12])), (ObjectId([2; 32]), bitmap(1, &[0]))],
        };
        let (d, listed) = a.encode();
        assert_eq!(listed, 2);
        assert_eq!(Announcement::decode(&d), Ok(a));
        // A 20 000-chunk bitmap (2 500 bytes) does not fit; the small one after it does.
        let big = Announcement {
            channel_tag: 7,
            node_id: [3; 32],
            quic_port: 1,
            loss: None,
            objects: vec![(ObjectId([1; 32]), bitmap(20_000, &[5])), (ObjectId([2; 32]), bitmap(8, &[1]))],
        };
        let (d, listed) = big.encode();
        assert!(d.len() <= MAX_ANNOUNCE_LEN);
        assert_eq!(listed, 1);
        assert_eq!(Announcement::decode(&d).unwrap().objects[0].0, ObjectId([2; 32]));
    }

    #[test]
    fn bad_announcements_are_typed_errors() {
        let (d, _) = Announcement {
            channel_tag: 1,
            node_id: [0; 32],
            quic_port: 1,
            loss: Some(0),
            objects: vec![(ObjectId([9; 32]), bitmap(3, &[1]))],
        }
        .encode();
        for cut in 0..d.len() {
            assert!(Announcement::decode(&d[..cut]).is_err(), "cut {cut}");
        }
        let mut wrong = d.clone();
        wrong[0] = b'X';
        assert_eq!(Announcement::decode(&wrong), Err(AnnounceError::BadMagic));
        let mut trailing = d.clone();
        trailing.push(0);
        assert_eq!(Announcement::decode(&trailing), Err(AnnounceError::NotCanonical));
        let mut high_bit = d.clone();
        *high_bit.last_mut().unwrap() |= 0x80; // chunk 7 of a 3-chunk object
        assert_eq!(Announcement::decode(&high_bit), Err(AnnounceError::NotCanonical));
        let mut zero = d.clone();
        zero[HEADER_LEN + 32..HEADER_LEN + 36].copy_from_slice(&0u32.to_be_bytes());
        assert_eq!(Announcement::decode(&zero), Err(AnnounceError::OutOfRange));
        let mut over = d.clone();
        over[46] = 101;
        assert_eq!(Announcement::decode(&over), Err(AnnounceError::OutOfRange));
        assert_eq!(Announcement::decode(&vec![0; 2000]), Err(AnnounceError::TooLong));
    }

    #[test]
    fn a_version_1_announcement_is_read_with_its_loss_not_known() {
        let a = Announcement {
            channel_tag: 5,
            node_id: [4; 32],
            quic_port: 9,
            loss: Some(50),
            objects: vec![(ObjectId([6; 32]), bitmap(9, &[8]))],
        };
        let (v2, _) = a.encode();
        assert_eq!(v2[46], 50);
        let mut v1 = MAGIC_V1.to_vec();
        v1.extend_from_slice(&v2[4..46]);
        v1.extend_from_slice(&v2[47..]);
        assert_eq!(Announcement::decode(&v1), Ok(Announcement { loss: None, ..a.clone() }));
        for cut in 0..v1.len() {
            assert!(Announcement::decode(&v1[..cut]).is_err(), "cut {cut}");
        }
        let unknown = Announcement { loss: None, ..a };
        assert_eq!(unknown.encode().0[46], LOSS_UNKNOWN);
        assert_eq!(Announcement::decode(&unknown.encode().0), Ok(unknown));
    }
}
