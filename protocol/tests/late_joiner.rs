//! A hub that joins after an object went by learns from the object's manifest
//! (a copy marked "the round has passed it", sent after its last chunk and
//! mixed in until its next round) that every chunk of it is for repair.

mod support;

use hubcast_protocol::receiver::{Receiver, QUIET_ENDS_AFTER};
use hubcast_protocol::wire::{self, decode, Datagram, Manifest};
use support::*;

const T: u16 = 1280;
const CHUNK: u32 = 256 << 10;

fn needs_of(rx: &Receiver, id: hubcast_protocol::ObjectId) -> Vec<u32> {
    rx.needs(64).into_iter().filter(|n| n.object_id == id).map(|n| n.index).collect()
}

#[test]
fn a_hub_that_joined_after_an_object_passed_lists_its_chunks_for_repair() {
    let ch = channel(11);
    let objects = [content("early.bin", 3 * CHUNK as usize, 1), content("later.bin", 2 * CHUNK as usize, 2)];
    let plans = plans(&objects, CHUNK, T);
    let (early, later) = (plans[0].manifest.object_id, plans[1].manifest.object_id);
    let marked = |m: &Manifest, end| ch.signer.manifest_datagram(&Manifest { round_end: end, ..m.clone() });
    // What a hub joining during the later object hears: the early object's
    // mixed-in manifest, then the later object go by.
    let mut later_stream = broadcast(&ch, &objects[1..], CHUNK, T, 0.1, 1);

    let mut joined = receiver(ch.anchor);
    joined.handle_datagram(NOW, &marked(&plans[0].manifest, true));
    for d in later_stream.drain(..) {
        joined.handle_datagram(NOW, &d);
    }
    assert_eq!(needs_of(&joined, early), [0, 1, 2], "every chunk of the object that passed");
    assert!(joined
        .needs(64)
        .iter()
        .filter(|n| n.object_id == early)
        .all(|n| !n.window_open && !n.has_ticket));
    assert!(needs_of(&joined, later).is_empty(), "the later object came whole");

    // Before the round reaches it, the object's manifest is unmarked: nothing
    // to repair yet, the multicast will bring it.
    let mut early_joiner = receiver(ch.anchor);
    early_joiner.handle_datagram(NOW, &marked(&plans[0].manifest, false));
    assert!(needs_of(&early_joiner, early).is_empty());
    // A hub that already holds the manifest learns it from the marked copy.
    early_joiner.handle_datagram(NOW, &marked(&plans[0].manifest, true));
    assert_eq!(needs_of(&early_joiner, early), [0, 1, 2]);

    // A forged mark (the signature no longer covers it) is dropped.
    let mut forged = marked(&plans[0].manifest, false);
    let flags = wire::field_range(&forged, wire::Field::Flags).expect("a manifest's flags");
    forged[flags.start] |= 2;
    let Ok((_, Datagram::Manifest(m))) = decode(&forged) else { panic!("the forged mark decodes") };
    assert!(m.body.round_end, "the flip set the round-end mark");
    let mut fooled = receiver(ch.anchor);
    fooled.handle_datagram(NOW, &marked(&plans[0].manifest, false));
    fooled.handle_datagram(NOW, &forged);
    assert!(needs_of(&fooled, early).is_empty(), "an unsigned mark starts no repair");
    assert!(fooled.drops().harmful() > 0, "{:?}", fooled.drops());
}

/// A hub that heard the first chunks of an object, then lost the multicast (and
/// a bridge's feed that took over stopped short of the end), learns from the
/// marked copy that the rest went by too: those chunks are for repair.
#[test]
fn a_hub_that_lost_the_multicast_midway_lists_the_rest_for_repair_at_the_marked_copy() {
    let ch = channel(12);
    let objects = [content("film.bin", 5 * CHUNK as usize, 3)];
    let plans = plans(&objects, CHUNK, T);
    let id = plans[0].manifest.object_id;
    let stream = broadcast(&ch, &objects, CHUNK, T, 0.1, 1);
    // Everything up to chunk 2's first datagrams; nothing after.
    let cut = stream
        .iter()
        .position(|d| {
            hubcast_protocol::wire::decode_header(d)
                .ok()
                .and_then(|h| hubcast_protocol::wire::peek_chunk(d, h.kind))
                == Some((id, 2))
        })
        .unwrap();
    let mut rx = receiver(ch.anchor);
    for d in &stream[..cut + 1] {
        rx.handle_datagram(NOW, d);
    }
    let mut got = Received::default();
    drain(&mut rx, &mut got);
    assert!(
        needs_of(&rx, id).iter().all(|i| *i <= 2),
        "before the mark only what went by: {:?}",
        needs_of(&rx, id)
    );
    // The multicast goes quiet: what it showed has passed, what it did not
    // show is not listed (it may not have been sent yet).
    rx.handle_idle();
    rx.handle_idle();
    assert!(needs_of(&rx, id).iter().all(|i| *i <= 2), "quiet: {:?}", needs_of(&rx, id));
    let marked = ch.signer.manifest_datagram(&Manifest { round_end: true, ..plans[0].manifest.clone() });
    rx.handle_datagram(NOW, &marked);
    let needs = needs_of(&rx, id);
    assert!([3, 4].iter().all(|i| needs.contains(i)), "the chunks it never heard: {needs:?}");
}

/// A chunk the store lost (damaged or deleted on disk) is listed for repair
/// at once, though no multicast is near it (a restarted hub has no multicast
/// progress at all), and leaves the list when it comes again.
#[test]
fn a_lost_chunk_is_listed_for_repair_until_it_comes_again() {
    use hubcast_protocol::receiver::Event;
    let ch = channel(12);
    let objects = [content("kept.bin", 3 * CHUNK as usize, 3)];
    let id = plans(&objects, CHUNK, T)[0].manifest.object_id;
    let stream = broadcast(&ch, &objects, CHUNK, T, 0.1, 1);
    let mut first = receiver(ch.anchor);
    for d in &stream {
        first.handle_datagram(NOW, d);
    }
    let manifest = std::iter::from_fn(|| first.poll_event())
        .find_map(|e| match e {
            Event::Manifest(m) => Some(m),
            Event::ChunkComplete(_) => None,
        })
        .expect("the manifest");

    let mut restarted = receiver(ch.anchor);
    restarted.remember_manifest(manifest);
    (0..3).for_each(|i| restarted.mark_complete(id, i));
    assert!(needs_of(&restarted, id).is_empty(), "all held");
    restarted.handle_lost_chunk(id, 1);
    assert_eq!(needs_of(&restarted, id), [1], "the lost chunk, and only it");
    assert!(restarted.needs(64).iter().all(|n| !n.has_ticket), "asked for whole");

    for d in &stream {
        restarted.handle_datagram(NOW, d);
    }
    restarted.handle_idle();
    let again: Vec<u32> = std::iter::from_fn(|| restarted.poll_event())
        .filter_map(|e| match e {
            Event::ChunkComplete(c) => Some(c.index()),
            Event::Manifest(_) => None,
        })
        .collect();
    assert_eq!(again, [1], "collected again, the others skipped as held");
    assert!(needs_of(&restarted, id).is_empty(), "repaired: off the list");
}

/// A one-shot round that lost, at this hub, every ticket of its last chunk
/// and the closing manifest: nothing tells the hub the multicast has passed
/// the last chunk but the quiet after it. Two idle ticks without multicast
/// and the chunk is listed for repair (the 1,000-hub simulation at 50% loss
/// had 55 hubs wait for it forever).
#[test]
fn the_last_chunk_with_no_ticket_heard_is_listed_once_the_multicast_goes_quiet() {
    let ch = channel(13);
    let objects = [content("once.bin", 3 * CHUNK as usize, 4)];
    let plans = plans(&objects, CHUNK, T);
    let id = plans[0].manifest.object_id;
    let last = (id, 2);
    let stream = broadcast(&ch, &objects, CHUNK, T, 0.1, 1);
    let mut rx = receiver(ch.anchor);
    let mut manifests = 0;
    for d in &stream {
        let h = wire::decode_header(d).expect("the sender's datagrams parse");
        if h.kind == wire::Kind::Manifest {
            manifests += 1;
            if manifests > 1 {
                continue; // the closing copy, lost
            }
        }
        if h.kind == wire::Kind::Ticket && wire::peek_chunk(d, h.kind) == Some(last) {
            continue; // every copy of the last chunk's ticket, lost
        }
        rx.handle_datagram(NOW, d);
    }
    rx.handle_idle();
    let mut got = Received::default();
    drain(&mut rx, &mut got);
    assert_eq!(got.chunks.len(), 2, "the first two chunks decode");
    assert!(needs_of(&rx, id).is_empty(), "one quiet tick: the round may go on");
    rx.handle_idle();
    assert_eq!(needs_of(&rx, id), [2], "the multicast went quiet: the last chunk is for repair");
    // Multicast again (the next round): the quiet counts from there.
    rx.handle_datagram(NOW, &stream[0]);
    rx.handle_idle();
    assert_eq!(needs_of(&rx, id), [2], "still listed: it has passed");
}

/// A feed (or the multicast) that stops before an object's last chunks,
/// with no closing manifest: after a short quiet only what it showed is
/// listed (it may go on), after QUIET_ENDS_AFTER the rest too.
#[test]
fn chunks_never_shown_are_listed_after_a_long_quiet() {
    let ch = channel(14);
    let objects = [content("cut.bin", 4 * CHUNK as usize, 5)];
    let plans = plans(&objects, CHUNK, T);
    let id = plans[0].manifest.object_id;
    let stream = broadcast(&ch, &objects, CHUNK, T, 0.1, 1);
    let mut rx = receiver(ch.anchor);
    // The manifest and the first two chunks, then nothing.
    for d in &stream {
        if wire::peek_chunk(d, wire::decode_header(d).expect("parses").kind).is_some_and(|(_, i)| i >= 2) {
            break;
        }
        rx.handle_datagram(NOW, d);
    }
    for tick in 1..QUIET_ENDS_AFTER {
        rx.handle_idle();
        assert!(needs_of(&rx, id).is_empty(), "tick {tick}: the feed may go on");
    }
    rx.handle_idle();
    assert_eq!(needs_of(&rx, id), [2, 3], "quiet for long: the rest is for repair");
}
