//! Live channels at the hub: which segments are verified and playable, the
//! HLS playlist over them, and the on-time / late / missed figures.
//!
//! The store worker hands in each live segment's manifest as it is accepted
//! and the segment's bytes once all its chunks are stored and the whole
//! segment hashes to its object id. The receive loop ticks the board with the
//! wall clock: a segment still incomplete at its playout deadline is missed
//! (and so is a sequence number no manifest came for, once the segment after
//! it is due). The HTTP listener reads the board. Segments older than the back
//! buffer (`--live-buffer-secs` of media behind the newest) are retired; their
//! chunks leave the store.

use bytes::Bytes;
use hubcast_protocol::wire::{LiveSegment, Manifest};
use hubcast_protocol::ObjectId;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::watch;

/// Latency samples kept per channel, for the p50 and p99.
const LATENCY_SAMPLES: usize = 1024;

/// Where one segment stands at this hub.
#[derive(Clone, Debug)]
enum State {
    /// Announced; not all of it here yet.
    Pending,
    /// Verified and playable.
    Ready(Bytes),
    /// Its deadline passed before it was complete (or no manifest came).
    Missed,
}

#[derive(Clone, Debug)]
struct Seg {
    object_id: Option<ObjectId>,
    live: LiveSegment,
    state: State,
}

/// Counters of one channel, as `/api/status` shows them.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct LiveChannelStatus {
    pub name: String,
    /// The newest segment announced.
    pub newest_seq: u64,
    /// Segments held and playable now.
    pub segments_ready: usize,
    /// Complete by their playout deadline.
    pub on_time: u64,
    /// Complete, but after their deadline.
    pub late: u64,
    /// Never complete: not playable.
    pub missed: u64,
    /// From the broadcaster cutting a segment to its being playable here, ms.
    pub latency_p50_ms: Option<u64>,
    pub latency_p99_ms: Option<u64>,
    /// Media seconds in the back buffer.
    pub buffered_secs: f64,
}

#[derive(Default)]
struct Channel {
    segments: BTreeMap<u64, Seg>,
    status: LiveChannelStatus,
    latencies: Vec<u64>,
    next_sample: usize,
    /// The newest playable sequence, for progressive readers.
    newest_ready: Option<watch::Sender<u64>>,
    /// Segments below this were retired.
    floor: u64,
}

#[derive(Default)]
struct Board {
    channels: BTreeMap<String, Channel>,
    /// Live segment objects: their channel and sequence.
    by_object: HashMap<ObjectId, (String, u64)>,
    /// Segments retired whose chunks the store should drop.
    retired: Vec<ObjectId>,
}

/// Shared between the store worker, the receive loop and HTTP; cheap to clone.
#[derive(Clone)]
pub struct LiveBoard {
    inner: Arc<Mutex<Board>>,
    buffer_us: u64,
}

impl LiveBoard {
    /// Keep `buffer_secs` of media behind the newest segment of each channel.
    pub fn new(buffer_secs: u64) -> LiveBoard {
        LiveBoard { inner: Arc::default(), buffer_us: buffer_secs.max(1).saturating_mul(1_000_000) }
    }

    fn lock(&self) -> MutexGuard<'_, Board> {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether `id` is a live segment this board knows.
    pub fn is_segment(&self, id: &ObjectId) -> bool {
        self.lock().by_object.contains_key(id)
    }

    /// A verified live manifest. Returns false for an archive object.
    pub fn on_manifest(&self, m: &Manifest) -> bool {
        let Some(live) = m.live else { return false };
        let mut b = self.lock();
        let ch = b.channels.entry(m.name.clone()).or_default();
        ch.status.name.clone_from(&m.name);
        // A segment this hub already retired: not taken again.
        if live.seq < ch.floor {
            return true;
        }
        match ch.segments.get_mut(&live.seq) {
            Some(s) if s.object_id.is_some() => return true,
            // A place held as missed for want of a manifest: now known.
            Some(s) => {
                s.object_id = Some(m.object_id);
                s.live = live;
            }
            None => {
                ch.segments
                    .insert(live.seq, Seg { object_id: Some(m.object_id), live, state: State::Pending });
            }
        }
        ch.status.newest_seq = ch.status.newest_seq.max(live.seq);
        b.by_object.insert(m.object_id, (m.name.clone(), live.seq));
        true
    }

    /// Every chunk of segment `id` is stored and the whole hashes to its id.
    pub fn on_complete(&self, id: &ObjectId, bytes: Vec<u8>, now_ms: u64) {
        let mut b = self.lock();
        let Some((name, seq)) = b.by_object.get(id).cloned() else { return };
        let Some(ch) = b.channels.get_mut(&name) else { return };
        let Some(seg) = ch.segments.get_mut(&seq) else { return };
        if matches!(seg.state, State::Ready(_)) {
            return;
        }
        if now_ms <= seg.live.deadline_ms {
            ch.status.on_time += 1;
        } else {
            ch.status.late += 1;
            if matches!(seg.state, State::Missed) {
                ch.status.missed -= 1;
            }
        }
        seg.state = State::Ready(Bytes::from(bytes));
        let latency = now_ms.saturating_sub(seg.live.ingest_ms);
        if ch.latencies.len() < LATENCY_SAMPLES {
            ch.latencies.push(latency);
        } else {
            ch.latencies[ch.next_sample] = latency;
        }
        ch.next_sample = (ch.next_sample + 1) % LATENCY_SAMPLES;
        let newest =
            ch.segments.iter().rev().find(|(_, s)| matches!(s.state, State::Ready(_))).map(|(q, _)| *q);
        if let (Some(tx), Some(newest)) = (ch.newest_ready.as_ref(), newest) {
            tx.send_replace(newest);
        }
    }

    /// The wall clock moved: decide segments whose deadline passed, and
    /// retire what left the back buffer.
    pub fn tick(&self, now_ms: u64) {
        let mut b = self.lock();
        let mut retired = Vec::new();
        for ch in b.channels.values_mut() {
            // Sequence numbers no manifest came for, between known ones: held
            // as missed once the next known segment is due (not across a
            // restart of the stream, which skips numbers on purpose).
            let known: Vec<(u64, LiveSegment)> = ch.segments.iter().map(|(q, s)| (*q, s.live)).collect();
            for pair in known.windows(2) {
                let ((a, _), (z, next)) = (pair[0], pair[1]);
                if next.discontinuity || next.deadline_ms >= now_ms || z - a > 64 {
                    continue;
                }
                for seq in a + 1..z {
                    let live = LiveSegment { seq, ..next };
                    ch.segments.insert(seq, Seg { object_id: None, live, state: State::Missed });
                    ch.status.missed += 1;
                }
            }
            for s in ch.segments.values_mut() {
                if matches!(s.state, State::Pending) && s.live.deadline_ms < now_ms {
                    s.state = State::Missed;
                    ch.status.missed += 1;
                }
            }
            // The back buffer: media behind the newest segment.
            let mut behind = 0u64;
            let mut keep_from = None;
            for (seq, s) in ch.segments.iter().rev() {
                behind += u64::from(s.live.duration_us);
                if behind > self.buffer_us {
                    keep_from = Some(seq.saturating_add(1));
                    break;
                }
            }
            if let Some(from) = keep_from {
                ch.floor = ch.floor.max(from);
                let kept = ch.segments.split_off(&from);
                let gone = std::mem::replace(&mut ch.segments, kept);
                retired.extend(gone.into_values().filter_map(|s| s.object_id));
            }
            ch.status.segments_ready =
                ch.segments.values().filter(|s| matches!(s.state, State::Ready(_))).count();
            ch.status.buffered_secs =
                ch.segments.values().map(|s| f64::from(s.live.duration_us)).sum::<f64>() / 1e6;
        }
        // Equal bytes (a looped input) are one object at several places: it
        // stays while a kept segment has it.
        let kept: std::collections::HashSet<ObjectId> =
            b.channels.values().flat_map(|ch| ch.segments.values().filter_map(|s| s.object_id)).collect();
        retired.retain(|id| !kept.contains(id));
        for id in &retired {
            b.by_object.remove(id);
        }
        b.retired.extend(retired);
    }

    /// Segments retired since the last call: their chunks may go.
    pub fn take_retired(&self) -> Vec<ObjectId> {
        std::mem::take(&mut self.lock().retired)
    }

    pub fn status(&self) -> Vec<LiveChannelStatus> {
        let b = self.lock();
        b.channels
            .values()
            .map(|ch| {
                let mut s = ch.status.clone();
                let mut l = ch.latencies.clone();
                l.sort_unstable();
                let at = |p: f64| l.get(((l.len() as f64 - 1.0) * p).round() as usize).copied();
                (s.latency_p50_ms, s.latency_p99_ms) = (at(0.5), at(0.99));
                s
            })
            .collect()
    }

    /// The HLS media playlist of a channel: its decided segments from the
    /// oldest kept, up to the first one still pending (a playlist never lists
    /// a segment that is not playable yet, and never skips one: a missed
    /// segment is listed as a gap). `None` for an unknown channel.
    pub fn playlist(&self, name: &str) -> Option<String> {
        use std::fmt::Write;
        let b = self.lock();
        let ch = b.channels.get(name)?;
        let decided: Vec<(&u64, &Seg)> =
            ch.segments.iter().take_while(|(_, s)| !matches!(s.state, State::Pending)).collect();
        // A playlist starts at a playable segment.
        let start = decided.iter().position(|(_, s)| matches!(s.state, State::Ready(_)));
        let listed = start.map_or(&[][..], |at| &decided[at..]);
        let target =
            listed.iter().map(|(_, s)| s.live.duration_us.div_ceil(1_000_000)).max().unwrap_or(1).max(1);
        let mut out = String::new();
        let _ = writeln!(out, "#EXTM3U\n#EXT-X-VERSION:8\n#EXT-X-TARGETDURATION:{target}");
        let _ = writeln!(out, "#EXT-X-MEDIA-SEQUENCE:{}", listed.first().map_or(0, |(q, _)| **q));
        for (i, (seq, s)) in listed.iter().enumerate() {
            if s.live.discontinuity && i > 0 {
                out.push_str("#EXT-X-DISCONTINUITY\n");
            }
            if matches!(s.state, State::Missed) {
                out.push_str("#EXT-X-GAP\n");
            }
            let _ = writeln!(out, "#EXTINF:{:.3},\n{seq}.ts", f64::from(s.live.duration_us) / 1e6);
        }
        Some(out)
    }

    /// A playable segment's verified bytes.
    pub fn segment(&self, name: &str, seq: u64) -> Option<Bytes> {
        match &self.lock().channels.get(name)?.segments.get(&seq)?.state {
            State::Ready(bytes) => Some(bytes.clone()),
            _ => None,
        }
    }

    /// For a progressive reader: the playable segment after `seq` (or the
    /// newest one when `seq` is `None`), skipping missed ones; `None` while
    /// there is none yet.
    pub fn next_segment(&self, name: &str, after: Option<u64>) -> Option<(u64, Bytes)> {
        let b = self.lock();
        let ch = b.channels.get(name)?;
        let ready = |s: &Seg| match &s.state {
            State::Ready(bytes) => Some(bytes.clone()),
            _ => None,
        };
        match after {
            None => ch.segments.iter().rev().find_map(|(q, s)| ready(s).map(|b| (*q, b))),
            Some(after) => ch
                .segments
                .range((std::ops::Bound::Excluded(after), std::ops::Bound::Unbounded))
                .take_while(|(_, s)| !matches!(s.state, State::Pending))
                .find_map(|(q, s)| ready(s).map(|b| (*q, b))),
        }
    }

    /// Wakes when a channel has a newer playable segment.
    pub fn watch(&self, name: &str) -> Option<watch::Receiver<u64>> {
        let mut b = self.lock();
        let ch = b.channels.get_mut(name)?;
        Some(ch.newest_ready.get_or_insert_with(|| watch::channel(0).0).subscribe())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(seq: u64, deadline_ms: u64, discontinuity: bool) -> Manifest {
        Manifest {
            seq,
            expiry: 0,
            object_id: ObjectId([seq as u8; 32]),
            size: 10,
            chunk_size: 1024,
            symbol_size: 64,
            codec: 1,
            name: "news".into(),
            tracker: None,
            round_end: false,
            on_demand: false,
            live: Some(LiveSegment {
                seq,
                ingest_ms: deadline_ms.saturating_sub(3000),
                deadline_ms,
                duration_us: 1_000_000,
                discontinuity,
            }),
        }
    }

    #[test]
    fn the_playlist_lists_decided_segments_and_marks_missed_ones_as_gaps() {
        let board = LiveBoard::new(30);
        for seq in 1..=5 {
            assert!(board.on_manifest(&manifest(seq, 10_000 + seq * 1000, seq == 1)));
        }
        for seq in [1, 2, 4] {
            board.on_complete(&ObjectId([seq as u8; 32]), vec![seq as u8; 10], 10_000);
        }
        // Before 3's deadline: the list stops at 2.
        board.tick(12_500);
        let p = board.playlist("news").unwrap();
        assert!(p.contains("#EXT-X-MEDIA-SEQUENCE:1\n"), "{p}");
        assert!(p.contains("2.ts") && !p.contains("3.ts") && !p.contains("4.ts"), "{p}");
        // 3's deadline passes: it is a gap, 4 follows, 5 is still pending.
        board.tick(13_500);
        let p = board.playlist("news").unwrap();
        assert!(p.contains("#EXT-X-GAP\n#EXTINF:1.000,\n3.ts\n#EXTINF:1.000,\n4.ts"), "{p}");
        assert!(!p.contains("5.ts"), "{p}");
        assert_eq!(board.segment("news", 4).as_deref(), Some(&[4u8; 10][..]));
        assert_eq!(board.segment("news", 3), None);
        let s = &board.status()[0];
        assert_eq!((s.on_time, s.late, s.missed, s.segments_ready), (3, 0, 1, 3));
        // 5 completes late.
        board.on_complete(&ObjectId([5; 32]), vec![5; 10], 15_001);
        assert_eq!(board.status()[0].late, 1);
        assert_eq!(board.next_segment("news", Some(2)).map(|(q, _)| q), Some(4));
        assert_eq!(board.next_segment("news", None).map(|(q, _)| q), Some(5));
    }

    #[test]
    fn the_end_of_the_sequence_space_does_not_panic() {
        let board = LiveBoard::new(1);
        for seq in [u64::MAX - 1, u64::MAX] {
            let mut m = manifest(seq, 10_000, false);
            m.object_id = ObjectId([seq as u8 ^ 0x55; 32]);
            board.on_manifest(&m);
            board.on_complete(&m.object_id, vec![1], 9_000);
        }
        board.tick(9_500);
        assert_eq!(board.next_segment("news", Some(u64::MAX)), None);
        assert!(board.playlist("news").unwrap().contains(&format!("{}.ts", u64::MAX)));
    }

    #[test]
    fn a_sequence_without_a_manifest_is_missed_once_the_next_is_due_and_old_segments_retire() {
        let board = LiveBoard::new(4);
        board.on_manifest(&manifest(1, 2000, false));
        board.on_manifest(&manifest(4, 5000, false));
        board.on_complete(&ObjectId([1; 32]), vec![1], 1000);
        board.on_complete(&ObjectId([4; 32]), vec![4], 1000);
        board.tick(4000);
        assert_eq!(board.status()[0].missed, 0, "segment 4 is not due yet");
        board.tick(5001);
        assert_eq!(board.status()[0].missed, 2);
        let p = board.playlist("news").unwrap();
        assert!(p.contains("#EXT-X-GAP\n#EXTINF:1.000,\n3.ts"), "{p}");
        // Four seconds of buffer: segments 1 to 3 retire as 5, 6, 7 come.
        for seq in 5..=7 {
            board.on_manifest(&manifest(seq, 10_000, false));
        }
        board.tick(5002);
        assert_eq!(board.take_retired(), vec![ObjectId([1; 32])]);
        assert!(!board.is_segment(&ObjectId([1; 32])));
        assert!(board.playlist("news").unwrap().contains("#EXT-X-MEDIA-SEQUENCE:4\n"));
        // A restarted stream (discontinuity) skips numbers without misses.
        board.on_manifest(&manifest(100, 20_000, true));
        board.tick(30_000);
        let s = &board.status()[0];
        assert_eq!(s.missed, 2 + 4, "5, 6, 7 and 100 passed their deadlines; nothing between 7 and 100");
    }
}
