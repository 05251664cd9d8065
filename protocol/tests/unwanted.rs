//! An object the hub does not keep (evicted, or not chosen): the carousel
//! bringing it again collects nothing of it, it is neither asked for nor
//! counted as harm, its manifest is still known, and asking for it again
//! lists all of it for repair at once and collects it whole.

mod support;

use hubcast_protocol::receiver::DropReason;
use support::*;

const T: u16 = 1280;
const CHUNK: u32 = 64 << 10;

#[test]
fn an_unwanted_object_is_not_collected_again_until_it_is_wanted() {
    let ch = channel(21);
    let objects = [content("kept.bin", 3 * CHUNK as usize, 1), content("evicted.bin", 2 * CHUNK as usize, 2)];
    let plans = plans(&objects, CHUNK, T);
    let (kept, evicted) = (plans[0].manifest.object_id, plans[1].manifest.object_id);

    // A first round: both whole.
    let mut rx = receiver(ch.anchor);
    let mut got = Received::default();
    receive(&mut rx, broadcast(&ch, &objects, CHUNK, T, 0.1, 1), &mut got);
    assert!(got.object(evicted, objects[1].bytes.len(), CHUNK).is_some());

    // Evicted: the next rounds bring nothing of it, and nothing is asked.
    rx.set_unwanted(evicted, true);
    assert!(rx.is_unwanted(&evicted));
    let mut again = Received::default();
    let unwanted_before = rx.drops().get(DropReason::Unwanted);
    receive(&mut rx, broadcast(&ch, &objects, CHUNK, T, 0.1, 2), &mut again);
    assert!(again.chunks.keys().all(|(id, _)| *id != evicted), "an unwanted chunk was collected");
    assert!(rx.drops().get(DropReason::Unwanted) > unwanted_before);
    assert!(DropReason::Unwanted.is_benign());
    assert!(rx.needs(64).iter().all(|n| n.object_id != evicted), "an unwanted chunk was asked for");
    assert!(rx.manifest_datagram(&evicted).is_some(), "the channel still offers it");
    assert!(again.chunks.keys().all(|(id, _)| *id != kept), "the kept object stays complete");

    // Asked for by the user: every chunk of it is for repair at once (the
    // carousel may never come round again), and nothing of the kept one.
    rx.fetch_now(evicted);
    assert!(!rx.is_unwanted(&evicted));
    let mut asked: Vec<u32> =
        rx.needs(64).iter().filter(|n| n.object_id == evicted).map(|n| n.index).collect();
    asked.sort();
    assert_eq!(asked, [0, 1], "the whole evicted object is asked of peers");
    assert!(rx.needs(64).iter().all(|n| n.object_id != kept));

    // And the next round brings it whole too.
    let mut back = Received::default();
    receive(&mut rx, broadcast(&ch, &objects, CHUNK, T, 0.1, 1), &mut back);
    assert_eq!(back.object(evicted, objects[1].bytes.len(), CHUNK).as_deref(), Some(&objects[1].bytes[..]));
}
