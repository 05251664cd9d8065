//! Cutting a live MPEG-TS stream into segments (issue 5, live ingest).
//!
//! The input is 188-byte transport packets, in whatever pieces the source
//! delivers them. A segment is a run of whole packets. It ends, once it spans
//! the target duration by the stream's clock (PCR, 90 kHz), just before the
//! next packet that starts a random-access point (the adaptation field's
//! random_access_indicator: a keyframe), so every segment after the first
//! starts with one and plays on its own. A stream that marks no random-access
//! point is cut at the next packet carrying a PCR instead. A stream without
//! PCRs is cut by size ([`Segmenter::new`]'s `max_bytes`), which also bounds
//! memory whatever the input is.
//!
//! Input is not trusted: bytes that are not at a packet boundary (lost sync)
//! are skipped up to the next sync byte that a second one follows 188 bytes
//! later, and counted.

/// Bytes in a transport packet.
pub const PACKET: usize = 188;
const SYNC: u8 = 0x47;
/// PCR base counts at 90 kHz and wraps at 2^33.
const PCR_WRAP: u64 = 1 << 33;
pub const PCR_HZ: u64 = 90_000;

/// A segment: whole packets, with the PCR span it covers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Segment {
    pub bytes: Vec<u8>,
    /// From the segment's first PCR to the next segment's first (90 kHz);
    /// 0 when the stream carries no PCR.
    pub duration_90khz: u64,
    /// Its first packet starts a random-access point.
    pub starts_at_random_access: bool,
}

/// What one packet's header and adaptation field say.
struct PacketInfo {
    pcr: Option<u64>,
    random_access: bool,
}

fn packet_info(p: &[u8]) -> PacketInfo {
    let none = PacketInfo { pcr: None, random_access: false };
    // adaptation_field_control: 2 or 3 means an adaptation field follows.
    if p.len() < PACKET || p[3] & 0x20 == 0 {
        return none;
    }
    let len = usize::from(p[4]);
    if len == 0 || 5 + len > PACKET {
        return none;
    }
    let flags = p[5];
    let random_access = flags & 0x40 != 0;
    let pcr = (flags & 0x10 != 0 && len >= 7).then(|| {
        let b = &p[6..11];
        (u64::from(b[0]) << 25)
            | (u64::from(b[1]) << 17)
            | (u64::from(b[2]) << 9)
            | (u64::from(b[3]) << 1)
            | (u64::from(b[4]) >> 7)
    });
    PacketInfo { pcr, random_access }
}

/// Ticks from `from` to `to` on the 33-bit PCR clock.
fn pcr_since(from: u64, to: u64) -> u64 {
    (to + PCR_WRAP - from) % PCR_WRAP
}

pub struct Segmenter {
    target_90khz: u64,
    max_bytes: usize,
    /// Bytes that do not make a whole packet yet.
    partial: Vec<u8>,
    current: Vec<u8>,
    current_first_pcr: Option<u64>,
    current_random_access: bool,
    /// The last PCR seen, in the current segment or before it.
    last_pcr: Option<u64>,
    /// The stream has marked a random-access point: cut only at those.
    marks_random_access: bool,
    skipped: u64,
}

impl Segmenter {
    /// Segments of at least `target` (by PCR), and at most `max_bytes`
    /// (rounded down to whole packets, at least one).
    pub fn new(target: std::time::Duration, max_bytes: usize) -> Self {
        Segmenter {
            target_90khz: (target.as_micros() as u64).saturating_mul(PCR_HZ) / 1_000_000,
            max_bytes: max_bytes.max(PACKET) / PACKET * PACKET,
            partial: Vec::with_capacity(2 * PACKET),
            current: Vec::new(),
            current_first_pcr: None,
            current_random_access: false,
            last_pcr: None,
            marks_random_access: false,
            skipped: 0,
        }
    }

    /// Bytes skipped because they were not at a packet boundary.
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    /// Take the next piece of the stream; the segments it completed.
    pub fn push(&mut self, mut data: &[u8]) -> Vec<Segment> {
        let mut out = Vec::new();
        while !data.is_empty() {
            let take = (2 * PACKET - self.partial.len()).min(data.len());
            self.partial.extend_from_slice(&data[..take]);
            data = &data[take..];
            self.drain_packets(&mut out);
        }
        out
    }

    /// The stream ended: the segments left (the last packet, which no sync
    /// byte followed, may still cut one).
    pub fn finish(mut self) -> Vec<Segment> {
        let mut out = Vec::new();
        if self.partial.len() >= PACKET && self.partial[0] == SYNC {
            let packet: Vec<u8> = self.partial.drain(..PACKET).collect();
            out.extend(self.packet(&packet));
        }
        self.skipped += self.partial.len() as u64;
        out.extend(self.cut(None));
        out
    }

    /// Whole packets out of `partial`, keeping sync. A packet is taken once a
    /// second sync byte follows it (or it is all that is left to judge).
    fn drain_packets(&mut self, out: &mut Vec<Segment>) {
        loop {
            // Find sync: a 0x47 with another 188 bytes later, when we can see it.
            let Some(at) = self.partial.iter().position(|b| *b == SYNC) else {
                self.skipped += self.partial.len() as u64;
                self.partial.clear();
                return;
            };
            if self.partial.len() < at + PACKET + 1 {
                if at > 0 {
                    self.skipped += at as u64;
                    self.partial.drain(..at);
                }
                return;
            }
            if self.partial[at + PACKET] != SYNC {
                self.skipped += at as u64 + 1;
                self.partial.drain(..=at);
                continue;
            }
            self.skipped += at as u64;
            let packet: Vec<u8> = self.partial.drain(..at + PACKET).skip(at).collect();
            if let Some(s) = self.packet(&packet) {
                out.push(s);
            }
        }
    }

    /// One packet: cut before it when it starts a segment, then keep it.
    fn packet(&mut self, p: &[u8]) -> Option<Segment> {
        let info = packet_info(p);
        self.marks_random_access |= info.random_access;
        let long_enough = match (self.current_first_pcr, info.pcr) {
            (Some(first), Some(now)) => pcr_since(first, now) >= self.target_90khz,
            _ => false,
        };
        let at_boundary = if self.marks_random_access { info.random_access } else { info.pcr.is_some() };
        let full = self.current.len() + PACKET > self.max_bytes;
        let cut = if !self.current.is_empty() && (full || (long_enough && at_boundary)) {
            self.cut(info.pcr)
        } else {
            None
        };
        if self.current.is_empty() {
            self.current_random_access = info.random_access;
        }
        if self.current_first_pcr.is_none() {
            self.current_first_pcr = info.pcr;
        }
        if info.pcr.is_some() {
            self.last_pcr = info.pcr;
        }
        self.current.extend_from_slice(p);
        cut
    }

    /// End the current segment; `next_pcr` is the next one's first PCR.
    fn cut(&mut self, next_pcr: Option<u64>) -> Option<Segment> {
        if self.current.is_empty() {
            return None;
        }
        let end = next_pcr.or(self.last_pcr);
        let duration_90khz = match (self.current_first_pcr, end) {
            (Some(first), Some(end)) => pcr_since(first, end),
            _ => 0,
        };
        let segment = Segment {
            bytes: std::mem::take(&mut self.current),
            duration_90khz,
            starts_at_random_access: self.current_random_access,
        };
        self.current_first_pcr = None;
        Some(segment)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A packet of PID 0x100 with counter `n`; with a PCR when given, marked
    /// random access when `rai`.
    fn packet(n: u32, pcr: Option<u64>, rai: bool) -> Vec<u8> {
        let mut p = vec![0xFFu8; PACKET];
        p[0] = SYNC;
        p[1] = 0x01;
        p[2] = 0x00;
        if pcr.is_none() && !rai {
            p[3] = 0x10 | (n % 16) as u8; // payload only
            return p;
        }
        p[3] = 0x30 | (n % 16) as u8; // adaptation field and payload
        p[4] = 7;
        p[5] = if rai { 0x40 } else { 0 } | if pcr.is_some() { 0x10 } else { 0 };
        if let Some(base) = pcr {
            let base = base % PCR_WRAP;
            p[6] = (base >> 25) as u8;
            p[7] = (base >> 17) as u8;
            p[8] = (base >> 9) as u8;
            p[9] = (base >> 1) as u8;
            p[10] = ((base & 1) << 7) as u8 | 0x7E;
            p[11] = 0;
        }
        p
    }

    /// `seconds` of stream at 100 packets a second, a PCR on every packet, a
    /// keyframe every `gop` packets, starting at PCR `start`.
    fn stream(seconds: u32, gop: u32, start: u64) -> Vec<u8> {
        (0..seconds * 100)
            .flat_map(|n| packet(n, Some(start + u64::from(n) * PCR_HZ / 100), n % gop == 0))
            .collect()
    }

    fn segments(input: &[u8], piece: usize, target: Duration) -> (Vec<Segment>, u64) {
        let mut s = Segmenter::new(target, 1 << 20);
        let mut out: Vec<Segment> = input.chunks(piece).flat_map(|c| s.push(c)).collect();
        let skipped = s.skipped();
        out.extend(s.finish());
        (out, skipped)
    }

    #[test]
    fn segments_cut_at_keyframes_once_they_span_the_target_and_rejoin_to_the_stream() {
        let input = stream(10, 50, 0); // a keyframe every 0.5 s
        let (out, skipped) = segments(&input, 1000, Duration::from_secs(1));
        assert_eq!(skipped, 0);
        assert_eq!(out.concat_bytes(), input, "whole packets, in order, nothing lost");
        assert_eq!(out.len(), 10);
        for s in &out {
            assert!(s.starts_at_random_access);
            assert_eq!(s.bytes.len() % PACKET, 0);
        }
        assert!(out[..9].iter().all(|s| s.duration_90khz == PCR_HZ), "{:?}", durations(&out));
        // Keyframes every 0.7 s and a 1 s target: segments of 1.4 s.
        let (out, _) = segments(&stream(10, 70, 0), 777, Duration::from_secs(1));
        assert!(
            out[..out.len() - 1].iter().all(|s| s.duration_90khz == PCR_HZ * 14 / 10),
            "{:?}",
            durations(&out)
        );
    }

    #[test]
    fn how_the_stream_arrives_does_not_change_the_segments() {
        let input = stream(6, 30, 12345);
        let (whole, _) = segments(&input, input.len(), Duration::from_secs(1));
        for piece in [1, 7, 187, 188, 189, 4096] {
            assert_eq!(segments(&input, piece, Duration::from_secs(1)).0, whole, "pieces of {piece}");
        }
    }

    #[test]
    fn bytes_out_of_sync_are_skipped_and_counted() {
        let mut input = stream(2, 50, 0);
        let clean = input.clone();
        input.splice(188 * 10..188 * 10, [0x47, 1, 2, 3, 0x47, 9].iter().copied());
        input.splice(0..0, [0u8; 5].iter().copied());
        let (out, skipped) = segments(&input, 100, Duration::from_secs(1));
        assert_eq!(skipped, 11);
        assert_eq!(out.concat_bytes(), clean);
    }

    #[test]
    fn without_keyframe_marks_it_cuts_at_pcrs_and_without_pcrs_by_size() {
        let no_rai: Vec<u8> = (0..300).flat_map(|n| packet(n, Some(u64::from(n) * 900), false)).collect();
        let (out, _) = segments(&no_rai, 500, Duration::from_secs(1));
        assert_eq!(out.len(), 3, "{:?}", durations(&out));
        let no_pcr: Vec<u8> = (0..100).flat_map(|n| packet(n, None, false)).collect();
        let mut s = Segmenter::new(Duration::from_secs(1), 10 * PACKET);
        let mut out = s.push(&no_pcr);
        out.extend(s.finish());
        assert_eq!(out.len(), 10, "cut by size");
        assert!(out.iter().all(|s| s.bytes.len() == 10 * PACKET && s.duration_90khz == 0));
    }

    #[test]
    fn the_pcr_wraps_at_2_to_the_33() {
        let start = PCR_WRAP - PCR_HZ / 2; // wraps half a second in
        let (out, _) = segments(&stream(4, 50, start), 1000, Duration::from_secs(1));
        assert!(out[..out.len() - 1].iter().all(|s| s.duration_90khz == PCR_HZ), "{:?}", durations(&out));
    }

    #[test]
    fn any_bytes_give_whole_packet_segments_within_the_size_bound() {
        let mut x: u32 = 7;
        let noise: Vec<u8> = (0..200_000)
            .map(|i| {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                // Sync bytes often enough to tempt the resync.
                if i % 97 == 0 {
                    SYNC
                } else {
                    (x >> 16) as u8
                }
            })
            .collect();
        let mut s = Segmenter::new(Duration::from_millis(10), 20 * PACKET);
        let mut out: Vec<Segment> = noise.chunks(333).flat_map(|c| s.push(c)).collect();
        out.extend(s.finish());
        assert!(out.iter().all(|s| s.bytes.len() % PACKET == 0 && s.bytes.len() <= 20 * PACKET));
        assert!(out.iter().flat_map(|s| s.bytes.chunks(PACKET)).all(|p| p[0] == SYNC));
    }

    trait Concat {
        fn concat_bytes(&self) -> Vec<u8>;
    }

    impl Concat for Vec<Segment> {
        fn concat_bytes(&self) -> Vec<u8> {
            self.iter().flat_map(|s| s.bytes.iter().copied()).collect()
        }
    }

    fn durations(out: &[Segment]) -> Vec<u64> {
        out.iter().map(|s| s.duration_90khz).collect()
    }
}
