//! Bytes to peer messages: streaming, every bound checked before anything is
//! allocated, only the canonical form accepted.

use super::*;
use crate::forest;

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
    fn u64(&mut self) -> Result<u64, PeerWireError> {
        Ok(u64::from_be_bytes(self.array()?))
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
            let loss = r.array::<1>()?[0];
            let held_len = usize::from(r.u16()?);
            if missing == 0
                || u32::from(missing) > MAX_ESIS_PER_REQUEST
                || loss > 100
                || held_len > MAX_HELD_BYTES
            {
                return Err(PeerWireError::OutOfRange);
            }
            let held = r.take(held_len)?.to_vec();
            PeerMessage::Nak { object_id, chunk, missing, loss, held }
        }
        8 => match r.array::<1>()?[0] {
            f if f & !0b11 == 0 => PeerMessage::Register {
                bridge: f & 1 != 0,
                forest: f & 2 != 0,
                feeds: r.u16()?,
                root_version: r.u64()?,
                revocations_version: r.u64()?,
            },
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
            let leaving = match r.array::<1>()?[0] {
                0 => None,
                1 => Some(r.array::<32>()?),
                _ => return Err(PeerWireError::OutOfRange),
            };
            PeerMessage::BridgesRequest { limit, leaving }
        }
        13 => PeerMessage::Subscribe { resume: r.resume()?, udp_port: r.u16()? },
        14 => PeerMessage::Subscribed,
        15 => PeerMessage::Forest(decode_forest(&mut r)?),
        16 => {
            let [tree, stripes] = r.array::<2>()?;
            if !(2..=forest::MAX_STRIPES).contains(&stripes) || tree >= stripes {
                return Err(PeerWireError::OutOfRange);
            }
            PeerMessage::Stripe { tree, stripes, resume: r.resume()? }
        }
        17 => {
            let loss = r.array::<1>()?[0];
            let verdict = match r.0.is_empty() {
                true => crate::rate::Verdict::default(),
                false => crate::rate::Verdict::from_bits(r.array::<1>()?[0])
                    .filter(|v| !v.is_clear())
                    .ok_or(PeerWireError::OutOfRange)?,
            };
            if loss > 100 || (loss == 0 && verdict.is_clear()) {
                return Err(PeerWireError::OutOfRange);
            }
            PeerMessage::LossReport { loss, verdict }
        }
        _ => return Err(PeerWireError::UnknownType),
    };
    r.end()?;
    Ok(m)
}
