use super::*;

const K: u32 = 100;

fn need(held: impl Fn(u32) -> bool, window_open: bool) -> ChunkNeed {
    let n_max = crate::wire::n_max(K);
    ChunkNeed {
        object_id: ObjectId([1; 32]),
        index: 0,
        k: K,
        sources: K,
        n_max,
        held: (0..n_max).map(held).collect(),
        pages: u32::MAX,
        has_ticket: true,
        window_open,
        deadline_ms: None,
    }
}

fn peer(name: &'static str, complete: bool, same_island: bool, rtt_ms: u64) -> Candidate<&'static str> {
    Candidate { peer: name, complete, same_island, rtt: Duration::from_millis(rtt_ms), strikes: 0 }
}

fn drain(r: &mut Repairer<&'static str>) -> Vec<Request<&'static str>> {
    std::iter::from_fn(|| r.poll_request()).collect()
}

fn esis(reqs: &[Request<&'static str>]) -> Vec<u32> {
    let mut all: Vec<u32> = reqs.iter().flat_map(|r| r.esis.iter().collect::<Vec<_>>()).collect();
    all.sort();
    all
}

#[test]
fn asks_for_exactly_what_is_missing_plus_the_margin_split_disjoint_across_the_best_peers() {
    let t0 = Instant::now();
    let mut r = Repairer::new(RepairConfig::default(), 1);
    // 10 source symbols missing; 3 repair symbols came by multicast.
    let n = need(|e| (e < K && e % 10 != 0) || (K..K + 3).contains(&e), false);
    let peers = vec![
        peer("far", true, false, 5),
        peer("partial", false, true, 1),
        peer("near-slow", true, true, 40),
        peer("near-fast", true, true, 10),
    ];
    r.handle_tick(t0, std::slice::from_ref(&n), |_| peers.clone());
    let reqs = drain(&mut r);
    assert_eq!(esis(&reqs).len() as u32, K + 1 - n.held_count(), "K + margin - held");
    assert_eq!(esis(&reqs), (0..80).step_by(10).collect::<Vec<_>>(), "the lowest missing, each once");
    let by: Vec<&str> = reqs.iter().map(|q| q.peer).collect();
    assert_eq!(by, ["near-fast", "near-slow", "far", "partial"], "complete first, then island, then RTT");
    assert!(reqs.iter().all(|q| q.table.is_none()), "pages held: no table asked");
}

#[test]
fn when_only_source_symbols_are_missing_it_asks_for_them_without_margin() {
    let t0 = Instant::now();
    let mut r = Repairer::new(RepairConfig::default(), 1);
    let n = need(|e| e < K && e % 10 != 0, false);
    r.handle_tick(t0, std::slice::from_ref(&n), |_| vec![peer("a", true, true, 1), peer("b", true, true, 2)]);
    let reqs = drain(&mut r);
    assert_eq!(esis(&reqs), (0..K).step_by(10).collect::<Vec<_>>(), "all K sources decode for sure");
    assert_eq!(reqs.len(), 2, "split across both peers");
}

#[test]
fn with_no_holder_at_hand_it_looks_the_chunk_up_once_per_interval_and_asks_whom_the_tracker_lists() {
    let t0 = Instant::now();
    let mut r = Repairer::new(RepairConfig::default(), 1);
    let n = need(|e| e < 50, false);
    // The only peer at hand lacks the chunk too (it rests after refusing).
    let partial = vec![peer("partial", false, true, 1)];
    r.handle_tick(t0, std::slice::from_ref(&n), |_| partial.clone());
    let first = drain(&mut r);
    r.handle_response(first[0].id, Outcome::Refused(RefuseReason::NotHeld));
    let lookups: Vec<Lookup> = std::iter::from_fn(|| r.poll_lookup()).collect();
    assert_eq!(lookups, [Lookup { object_id: n.object_id, index: 0 }], "no complete holder: look it up");
    r.handle_tick(t0 + Duration::from_millis(100), std::slice::from_ref(&n), |_| partial.clone());
    assert!(r.poll_lookup().is_none(), "not again before lookup_every");
    // The tracker's answer: a hub on another island that holds it.
    let listed = vec![peer("partial", false, true, 1), peer("far", true, false, 30)];
    r.handle_tick(t0 + Duration::from_millis(200), std::slice::from_ref(&n), |_| listed.clone());
    let reqs = drain(&mut r);
    assert!(reqs.iter().any(|q| q.peer == "far"), "the listed holder is asked: {reqs:?}");
    r.handle_tick(t0 + Duration::from_secs(4), std::slice::from_ref(&n), |_| listed.clone());
    assert!(r.poll_lookup().is_none(), "a holder is known: no lookup");
    r.handle_tick(t0 + Duration::from_secs(4), std::slice::from_ref(&n), |_| partial.clone());
    assert!(r.poll_lookup().is_some(), "the holder left: look up again");
    assert_eq!(r.stats().lookups, 2);
}

#[test]
fn an_open_window_waits_until_it_stalls() {
    let t0 = Instant::now();
    let mut r = Repairer::new(RepairConfig::default(), 1);
    let n = need(|e| e < 50, true);
    let peers = vec![peer("a", true, true, 1)];
    r.handle_tick(t0, std::slice::from_ref(&n), |_| peers.clone());
    assert!(drain(&mut r).is_empty(), "the multicast is still sending it");
    r.handle_tick(t0 + Duration::from_millis(600), std::slice::from_ref(&n), |_| peers.clone());
    assert_eq!(esis(&drain(&mut r)), (50..K).collect::<Vec<_>>(), "the missing source symbols");
}

#[test]
fn what_a_peer_lacks_goes_to_another_and_a_refusal_or_timeout_rests_the_peer() {
    let t0 = Instant::now();
    let mut r = Repairer::new(RepairConfig { max_peers: 1, ..RepairConfig::default() }, 3);
    let mut n = need(|e| (4..K).contains(&e), false); // ESIs 0..4 missing
    let peers = vec![peer("a", false, true, 1), peer("b", false, true, 2), peer("c", false, true, 3)];
    r.handle_tick(t0, std::slice::from_ref(&n), |_| peers.clone());
    let first = drain(&mut r);
    assert_eq!((first[0].peer, esis(&first)), ("a", vec![0, 1, 2, 3]));
    // "a" sends 0, 1 and 2 only.
    for e in 0..3 {
        n.held[e] = true;
    }
    r.handle_response(first[0].id, Outcome::Served);
    r.handle_tick(t0, std::slice::from_ref(&n), |_| peers.clone());
    let second = drain(&mut r);
    assert_eq!(second[0].peer, "a", "a still serves what it has");
    assert_eq!(esis(&second), vec![K, K + 1], "never what a lacked: repair ESIs and the margin");
    r.handle_response(second[0].id, Outcome::Refused(RefuseReason::Busy));
    r.handle_tick(t0, std::slice::from_ref(&n), |_| peers.clone());
    let third = drain(&mut r);
    assert_eq!(third[0].peer, "b");
    assert_eq!(esis(&third), vec![3], "b may hold the source symbol a lacked");
    // b never answers: after the timeout it rests, and a (rested by now)
    // is asked again, for what it may hold.
    r.handle_tick(t0 + Duration::from_secs(3), std::slice::from_ref(&n), |_| peers.clone());
    let fourth = drain(&mut r);
    assert_eq!((fourth[0].peer, esis(&fourth)), ("a", vec![K, K + 1]));
    assert_eq!(r.stats().timeouts, 1);
    assert_eq!(r.stats().refusals, 1);
}

#[test]
fn peers_that_bring_nothing_do_not_keep_a_chunk_from_the_origin() {
    let t0 = Instant::now();
    let mut r = Repairer::new(RepairConfig::default(), 5);
    let n = need(|e| e < 50, false);
    // One holder, a bridge whose upload its feeds take: busy, every time.
    let busy = vec![peer("bridge", true, true, 1)];
    let mut t = t0;
    let mut naks = Vec::new();
    while t < t0 + Duration::from_secs(6) {
        r.handle_tick(t, std::slice::from_ref(&n), |_| busy.clone());
        for q in drain(&mut r) {
            r.handle_response(q.id, Outcome::Refused(RefuseReason::Busy));
        }
        naks.extend(std::iter::from_fn(|| r.poll_nak()).map(|k| (t - t0, k.missing)));
        t += Duration::from_millis(100);
    }
    let config = RepairConfig::default();
    assert!(r.stats().refusals >= 4, "the peer is asked again and again: {:?}", r.stats());
    assert_eq!(naks.len(), 1, "one NAK in 6 s (then one per nak_retry): {naks:?}");
    let (at, missing) = naks[0];
    assert!(at >= config.fruitless_after, "not before the peers had their chance: {at:?}");
    assert!(at <= config.fruitless_after + config.origin_after + config.nak_backoff, "{at:?}");
    assert_eq!(missing, K + 1 - 50);
    // A chunk that gains symbols from its peers never goes to the origin.
    let mut r = Repairer::new(RepairConfig::default(), 5);
    let mut n = need(|e| e < 10, false);
    let mut t = t0;
    while t < t0 + Duration::from_secs(8) && !n.held.iter().take(K as usize).all(|h| *h) {
        r.handle_tick(t, std::slice::from_ref(&n), |_| busy.clone());
        for q in drain(&mut r) {
            // A slow peer: one symbol an answer, one answer a second.
            if let Some(e) = q.esis.iter().next() {
                n.held[e as usize] = true;
            }
            r.handle_response(q.id, Outcome::Served);
            t += Duration::from_secs(1);
        }
        assert!(r.poll_nak().is_none(), "progress, however slow, keeps the origin out");
        t += Duration::from_millis(100);
    }
}

#[test]
fn a_chunk_without_its_ticket_asks_for_the_table_too() {
    let t0 = Instant::now();
    let mut r = Repairer::new(RepairConfig::default(), 1);
    let mut n = need(|_| false, false);
    n.has_ticket = false;
    n.pages = 0;
    r.handle_tick(t0, std::slice::from_ref(&n), |_| vec![peer("a", true, true, 1)]);
    let reqs = drain(&mut r);
    assert_eq!(esis(&reqs), (0..K).collect::<Vec<_>>());
    assert_eq!(reqs[0].table, Some(0b1), "ESIs 0..100 are page 0");
}

#[test]
fn with_no_peer_one_nak_goes_to_the_origin_after_the_deadline_and_backoff() {
    let t0 = Instant::now();
    let config = RepairConfig::default();
    let mut r = Repairer::new(config.clone(), 5);
    let n = need(|e| (10..K).contains(&e), false);
    let mut t = t0;
    let mut naks = Vec::new();
    while t < t0 + Duration::from_secs(3) {
        r.handle_tick(t, std::slice::from_ref(&n), |_| Vec::<Candidate<&str>>::new());
        naks.extend(std::iter::from_fn(|| r.poll_nak()));
        t += Duration::from_millis(50);
    }
    assert_eq!(
        naks,
        vec![Nak { object_id: n.object_id, index: 0, missing: 11, held: pack_esis(&n.held) }],
        "retry after 2 s, not before"
    );
    // It says what it holds: ESIs 10..K, bit e of byte e / 8.
    assert_eq!(naks[0].held[1], 0b1111_1100);
    // A second hub whose chunk gains symbols while its NAK waits stays silent.
    let mut quiet = Repairer::new(RepairConfig { nak_backoff: Duration::from_millis(200), ..config }, 9);
    let mut n2 = need(|e| (10..K).contains(&e), false);
    let mut t = t0;
    for step in 0..30 {
        if step == 21 {
            n2.held[0] = true; // the origin's multicast repair, asked by another hub
        }
        quiet.handle_tick(t, std::slice::from_ref(&n2), |_| Vec::<Candidate<&str>>::new());
        t += Duration::from_millis(50);
    }
    let s = quiet.stats();
    assert_eq!((s.naks_sent, s.naks_suppressed), (0, 1), "{s:?}");
}

#[test]
fn partial_peers_that_hold_none_of_what_is_missing_are_not_asked_again_and_the_origin_is() {
    // Every hub lost the same symbols: the peers hold the chunk partly, and
    // refuse "not held" for the ESIs this hub lacks.
    let t0 = Instant::now();
    let mut r = Repairer::new(RepairConfig::default(), 7);
    let n = need(|e| (10..K).contains(&e), false);
    let peers = vec![peer("a", false, true, 1), peer("b", false, true, 2)];
    let (mut t, mut asked, mut naks) = (t0, 0, Vec::new());
    while t < t0 + Duration::from_secs(3) {
        r.handle_tick(t, std::slice::from_ref(&n), |_| peers.clone());
        for q in drain(&mut r) {
            asked += 1;
            r.handle_response(q.id, Outcome::Refused(RefuseReason::NotHeld));
        }
        naks.extend(std::iter::from_fn(|| r.poll_nak()));
        t += Duration::from_millis(50);
    }
    assert_eq!(asked, 2, "each peer once: then its lacks are known");
    assert_eq!(naks.len(), 1, "{naks:?}");
    assert_eq!(naks[0].missing, 11);
}

#[test]
fn a_chunk_that_leaves_the_needs_is_reported_repaired() {
    let t0 = Instant::now();
    let mut r = Repairer::new(RepairConfig::default(), 1);
    let n = need(|e| e < K - 1, false);
    r.handle_tick(t0, std::slice::from_ref(&n), |_| vec![peer("a", true, true, 1)]);
    let req = drain(&mut r).remove(0);
    r.handle_response(req.id, Outcome::Served);
    r.handle_tick(t0 + Duration::from_millis(7), &[], |_| Vec::new());
    assert_eq!(
        r.poll_repaired(),
        Some(Repaired { object_id: n.object_id, index: 0, took: Duration::from_millis(7) })
    );
    assert_eq!(r.in_flight(), 0);
}
