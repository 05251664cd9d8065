//! Live segments: the manifest's live block on the wire, and the receiver's
//! rules: a place in the channel that only moves forward, deadlines past which
//! nothing is collected or repaired, and a bounded window of segments.

mod support;

use hubcast_protocol::receiver::{DropReason, Receiver, ReceiverConfig};
use hubcast_protocol::sender::ObjectPlan;
use hubcast_protocol::wire::{self, decode, Datagram, LiveSegment, WireError};
use hubcast_protocol::ObjectId;
use support::*;

const T: u16 = 128;
const CHUNK: u32 = 32 * 128;
const NOW_MS: u64 = NOW * 1000;

/// Segment `seq` of channel "news": its bytes and plan, deadline 3 s after NOW.
fn segment(seq: u64, deadline_ms: u64) -> (Content, ObjectPlan) {
    let c = content("news", 3 * CHUNK as usize / 2, seq as u8);
    let mut p = plans(std::slice::from_ref(&c), CHUNK, T).remove(0);
    p.manifest.seq = seq;
    p.manifest.live = Some(LiveSegment {
        seq,
        ingest_ms: deadline_ms - 3000,
        deadline_ms,
        duration_us: 1_000_000,
        discontinuity: seq == 0,
    });
    (c, p)
}

fn rx_at(ch: &Channel, window: u64) -> Receiver {
    let mut rx = Receiver::new(ch.anchor, ReceiverConfig { live_window: window, ..Default::default() });
    rx.handle_time(NOW_MS);
    rx
}

#[test]
fn the_live_block_round_trips_and_bad_channel_names_are_refused() {
    let ch = channel(1);
    let (_, plan) = segment(5, NOW_MS + 3000);
    let d = ch.signer.manifest_datagram(&plan.manifest);
    let Ok((_, Datagram::Manifest(m))) = decode(&d) else { panic!("not a manifest") };
    assert_eq!(m.body, plan.manifest);

    let long = "n".repeat(wire::MAX_CHANNEL_NAME_LEN + 1);
    for bad in ["a/b", "..", ".hidden", "sp ace", long.as_str()] {
        let m = wire::Manifest { name: bad.into(), ..plan.manifest.clone() };
        assert_eq!(decode(&ch.signer.manifest_datagram(&m)).err(), Some(WireError::OutOfRange), "{bad:?}");
    }
    let live = plan.manifest.live.unwrap();
    for bad in [
        LiveSegment { deadline_ms: live.ingest_ms, ..live },
        LiveSegment { duration_us: 0, ..live },
        LiveSegment { duration_us: wire::MAX_SEGMENT_US + 1, ..live },
    ] {
        let m = wire::Manifest { live: Some(bad), ..plan.manifest.clone() };
        assert_eq!(decode(&ch.signer.manifest_datagram(&m)).err(), Some(WireError::OutOfRange), "{bad:?}");
    }
    let mut flags = d.clone();
    let at = d.len() - wire::SIGNATURE_LEN - 1;
    flags[at] = 2; // an unknown live flag
    assert_eq!(decode(&flags).err(), Some(WireError::OutOfRange));
}

#[test]
fn segments_decode_and_a_backwards_or_expired_manifest_is_refused() {
    let ch = channel(1);
    let mut rx = rx_at(&ch, 4);
    let mut got = Received::default();
    for seq in 10..16 {
        let (c, p) = segment(seq, NOW_MS + 3000 + seq * 1000);
        let datagrams =
            step_datagrams(&ch, std::slice::from_ref(&p), std::slice::from_ref(&c), manifest_step(), 0.1)
                .into_iter()
                .chain((0..p.chunk_count()).flat_map(|chunk| {
                    step_datagrams(
                        &ch,
                        std::slice::from_ref(&p),
                        std::slice::from_ref(&c),
                        chunk_step(chunk),
                        0.1,
                    )
                }));
        receive(&mut rx, datagrams, &mut got);
        assert_eq!(got.object(p.manifest.object_id, c.bytes.len(), CHUNK), Some(c.bytes), "segment {seq}");
    }
    assert_eq!(got.manifests.len(), 6);

    // Older than the window (4 segments back from 15): rolled back.
    let (_, old) = segment(11, NOW_MS + 3000 + 11 * 1000);
    let (_, replaced) = segment(13, NOW_MS + 3000 + 13 * 1000);
    let mut other = replaced.clone();
    other.manifest.object_id = ObjectId([9; 32]); // seq 13's place, another object
    let mut skewed = segment(16, NOW_MS + 1000).1; // deadline before seq 15's
    skewed.manifest.object_id = ObjectId([8; 32]);
    let (_, expired) = segment(17, NOW_MS - 1);
    for (plan, why) in [
        (old, DropReason::RolledBack),
        (other, DropReason::Inconsistent),
        (skewed, DropReason::Inconsistent),
        (expired, DropReason::Late),
    ] {
        let before = rx.drops().get(why);
        receive(&mut rx, [ch.signer.manifest_datagram(&plan.manifest)], &mut got);
        assert_eq!(rx.drops().get(why), before + 1, "{why:?}: {:?}", rx.drops());
    }
    assert_eq!(got.manifests.len(), 6, "nothing refused was accepted");
}

#[test]
fn past_its_deadline_a_segment_is_neither_collected_nor_repaired() {
    let ch = channel(2);
    let mut rx = rx_at(&ch, 8);
    let mut got = Received::default();
    let (c, p) = segment(1, NOW_MS + 2000);
    let (archive_c, archive_p) = {
        let c = content("file.bin", CHUNK as usize, 77);
        let p = plans(std::slice::from_ref(&c), CHUNK, T).remove(0);
        (c, p)
    };
    // The archive object and the segment each lose most of chunk 0.
    let lossy = |c: &Content, p: &ObjectPlan| {
        let all = step_datagrams(&ch, std::slice::from_ref(p), std::slice::from_ref(c), chunk_step(0), 0.0);
        all.into_iter().take(6).collect::<Vec<_>>()
    };
    let mut stream =
        vec![ch.signer.manifest_datagram(&archive_p.manifest), ch.signer.manifest_datagram(&p.manifest)];
    stream.extend(lossy(&archive_c, &archive_p));
    stream.extend(lossy(&c, &p));
    stream.push(ch.signer.manifest_datagram(&wire::Manifest { round_end: true, ..p.manifest.clone() }));
    receive(&mut rx, stream, &mut got);
    let needs = rx.needs(16);
    assert!(needs.len() >= 3, "{needs:?}");
    assert_eq!(needs[0].object_id, p.manifest.object_id, "the live segment comes first");
    assert_eq!(needs[0].deadline_ms, Some(NOW_MS + 2000));

    // The deadline passes: the segment leaves the repair list, and its
    // datagrams are dropped as late.
    rx.handle_time(NOW_MS + 2001);
    let needs = rx.needs(16);
    assert!(needs.iter().all(|n| n.object_id == archive_p.manifest.object_id), "{needs:?}");
    assert!(!needs.is_empty());
    let rest = step_datagrams(&ch, std::slice::from_ref(&p), std::slice::from_ref(&c), chunk_step(0), 0.2);
    let n = rest.len() as u64;
    receive(&mut rx, rest, &mut got);
    assert_eq!(rx.drops().get(DropReason::Late), n);
    assert!(got.chunks.keys().all(|(id, _)| *id != p.manifest.object_id));
}

#[test]
fn the_window_bounds_what_a_receiver_remembers() {
    let ch = channel(3);
    let mut rx = rx_at(&ch, 3);
    let mut got = Received::default();
    let first = segment(0, NOW_MS + 100_000).1;
    for seq in 0..50 {
        let (_, p) = segment(seq, NOW_MS + 100_000 + seq);
        receive(&mut rx, [ch.signer.manifest_datagram(&p.manifest)], &mut got);
    }
    assert_eq!(got.manifests.len(), 50);
    assert_eq!(rx.drops().harmful(), 0, "{:?}", rx.drops());
    // Segment 0 was forgotten: a repeat of its manifest is now rolled back,
    // not a duplicate.
    receive(&mut rx, [ch.signer.manifest_datagram(&first.manifest)], &mut got);
    assert_eq!(rx.drops().get(DropReason::RolledBack), 1);
}

fn manifest_step() -> hubcast_protocol::sender::Step {
    hubcast_protocol::sender::Step::Manifest { object: 0, end: false }
}

fn chunk_step(chunk: u32) -> hubcast_protocol::sender::Step {
    hubcast_protocol::sender::Step::Chunk { object: 0, chunk, round: 0 }
}
