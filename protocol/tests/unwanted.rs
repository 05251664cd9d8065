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

/// An on-demand object: its manifest (marked on demand and round end, as the
/// broadcaster sends it) makes it known and unwanted at once, so the
/// origin's multicast of it for another hub's ask is not collected and
/// nothing of it is asked; asked for, all of it is, and it arrives whole. A
/// hub restarted with the manifest stored does not take it either.
#[test]
fn an_on_demand_object_is_announced_not_collected_until_asked() {
    let ch = channel(22);
    let objects = [content("films/on demand.mkv", 2 * CHUNK as usize + 5, 3)];
    let plan = plans(&objects, CHUNK, T).remove(0);
    let id = plan.manifest.object_id;
    let announced = ch.signer.manifest_datagram(&hubcast_protocol::wire::Manifest {
        on_demand: true,
        round_end: true,
        ..plan.manifest.clone()
    });
    // What the origin multicasts when a hub asks: tickets, tables, symbols.
    let resend: Vec<Vec<u8>> = broadcast(&ch, &objects, CHUNK, T, 0.1, 1)
        .into_iter()
        .filter(|d| {
            hubcast_protocol::wire::decode_header(d).unwrap().kind != hubcast_protocol::wire::Kind::Manifest
        })
        .collect();

    let mut rx = receiver(ch.anchor);
    let mut got = Received::default();
    receive(&mut rx, [announced.clone()], &mut got);
    assert_eq!(got.manifests, ["films/on demand.mkv"], "announced: the hub knows it");
    assert!(rx.is_unwanted(&id));
    assert!(rx.needs(64).is_empty(), "nothing of it is asked before the user asks");
    receive(&mut rx, resend.clone(), &mut got);
    assert!(got.chunks.is_empty(), "another hub's fetch was collected");
    assert!(rx.drops().get(DropReason::Unwanted) > 0);
    // Its copies mixed in with the carousel change nothing.
    receive(&mut rx, [announced.clone()], &mut got);
    assert!(rx.is_unwanted(&id) && rx.needs(64).is_empty());

    rx.fetch_now(id);
    let mut asked: Vec<u32> = rx.needs(64).iter().map(|n| n.index).collect();
    asked.sort();
    assert_eq!(asked, [0, 1, 2], "the whole object is asked at once");
    // A player seeks to the end: that chunk is asked first, even when
    // repair plans only one chunk at a time.
    assert!(rx.await_chunk(id, 2));
    assert!(!rx.await_chunk(id, 2), "the same wait twice changes nothing");
    assert_eq!(rx.needs(1).iter().map(|n| n.index).collect::<Vec<_>>(), [2]);
    assert_eq!(rx.needs(64).iter().map(|n| n.index).collect::<Vec<_>>(), [2, 0, 1], "listed once");
    receive(&mut rx, resend, &mut got);
    assert_eq!(got.object(id, objects[0].bytes.len(), CHUNK).as_deref(), Some(&objects[0].bytes[..]));

    // Restarted with the manifest stored: still only announced.
    let mut restarted = receiver(ch.anchor);
    restarted.restore_manifest(&announced, NOW).unwrap();
    assert!(restarted.is_unwanted(&id));
    receive(&mut restarted, [announced], &mut Received::default());
    assert!(restarted.needs(64).is_empty(), "a restart opened a way to fetch it unasked");
}

/// `--keep tagged` and `--keep on-demand` (`keep_pushed` off): a pushed
/// object is taken only once chosen; the catalog's own objects always. The
/// choice replaces the one before, and a restart keeps unchosen objects out.
#[test]
fn without_keep_pushed_only_chosen_objects_and_the_catalog_are_taken() {
    use hubcast_protocol::receiver::{Receiver, ReceiverConfig};
    let ch = channel(23);
    let objects = [
        content(".hubcast/catalog/7/index", 300, 4),
        content("news.txt", CHUNK as usize + 9, 5),
        content("film.bin", 2 * CHUNK as usize, 6),
    ];
    let plans = plans(&objects, CHUNK, T);
    let (index, news, film) =
        (plans[0].manifest.object_id, plans[1].manifest.object_id, plans[2].manifest.object_id);
    let config = ReceiverConfig { keep_pushed: false, ..ReceiverConfig::default() };
    let mut rx = Receiver::new(ch.anchor, config.clone());
    rx.choose(&[news]);
    let mut got = Received::default();
    receive(&mut rx, broadcast(&ch, &objects, CHUNK, T, 0.1, 1), &mut got);
    assert!(got.object(index, 300, CHUNK).is_some(), "the catalog is always taken");
    assert_eq!(got.object(news, objects[1].bytes.len(), CHUNK).as_deref(), Some(&objects[1].bytes[..]));
    assert!(got.chunks.keys().all(|(id, _)| *id != film), "an unchosen object was taken");
    assert!(rx.is_unwanted(&film) && rx.needs(64).iter().all(|n| n.object_id != film));

    // Chosen later (a new catalog): taken from the next round, and what
    // the round already passed is for repair.
    rx.choose(&[news, film]);
    assert!(!rx.is_unwanted(&film));
    receive(&mut rx, broadcast(&ch, &objects, CHUNK, T, 0.1, 1), &mut got);
    assert_eq!(got.object(film, objects[2].bytes.len(), CHUNK).as_deref(), Some(&objects[2].bytes[..]));

    // Restarted: a stored manifest of an object not chosen stays out.
    let mut restarted = Receiver::new(ch.anchor, config);
    let manifest = ch.signer.manifest_datagram(&plans[2].manifest);
    restarted.restore_manifest(&manifest, NOW).unwrap();
    assert!(restarted.is_unwanted(&film));
    restarted.choose(&[film]);
    assert!(!restarted.is_unwanted(&film), "chosen once the catalog says so");
}
