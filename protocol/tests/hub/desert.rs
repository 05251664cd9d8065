//! Desert hubs: asking bridges, moving between them, striking them, and
//! going back to the multicast.

use super::*;

/// The desert side's outputs among `out`: asks, subscriptions, leavings.
fn desert_outputs(out: &[Output]) -> Vec<String> {
    out.iter()
        .filter_map(|o| match o {
            Output::AskBridges { .. } => Some("ask".to_string()),
            Output::Subscribe { bridge, .. } => Some(format!("subscribe {}", bridge.addr.port() - 4000)),
            Output::Unsubscribe(id) => Some(format!("unsubscribe {}", id.0[0])),
            Output::Event(HubEvent::NoBridge { .. }) => Some("no bridge".to_string()),
            Output::Event(HubEvent::BridgeLeft { bridge, .. }) => Some(format!("left {}", bridge.0[0])),
            _ => None,
        })
        .collect()
}

fn bridge(n: u8) -> NodeAddr {
    let (id, addr) = node(n);
    NodeAddr { id, addr }
}

/// An ask to feed chunks again: when (tenths of a second in), of which
/// bridge, which chunks.
type Refeed = (u32, NodeId, Vec<(ObjectId, u32)>);

/// Ten seconds of a fed hub whose bridge, a peer too, refuses every
/// request as busy (its upload goes to its feeds), and whose feed brings
/// `alive` (a datagram of no chunk: the feed goes on) every tenth of a
/// second, or nothing: the asks to feed chunks again it makes, each with
/// the tenth of a second it came in. It never NAKs (the origin's answer
/// would not reach it).
fn refeeds_with_a_busy_bridge(hub: &mut Driven, t0: Instant, alive: Option<&[u8]>) -> Vec<Refeed> {
    let mut asks = Vec::new();
    for tenth in 1..=100 {
        if let Some(d) = alive {
            hub.input(t0, Input::Bridge { bridge: node(1).0, datagrams: &[d] });
        }
        let mut step = hub.wait(t0, Duration::from_millis(100));
        let fetches: Vec<u64> = step
            .iter()
            .filter_map(|o| if let Output::Fetch { id, .. } = o { Some(*id) } else { None })
            .collect();
        for id in fetches {
            let busy = Input::Fetched { id, answer: Err(Outcome::Refused(RefuseReason::Busy)) };
            step.extend(hub.input(t0, busy));
        }
        for o in step {
            match o {
                Output::Naks { .. } => panic!("the origin's answer would not reach it"),
                Output::Refeed { bridge, chunks } => asks.push((tenth, bridge, chunks)),
                _ => {}
            }
        }
    }
    asks
}

/// The first manifest datagram of `all`.
fn manifest_of(all: &[Vec<u8>]) -> &[u8] {
    all.iter().find(|d| wire::decode_header(d).is_ok_and(|h| h.kind == Kind::Manifest)).expect("a manifest")
}

/// A datagram's kind and chunk index.
fn kind_and_chunk(d: &[u8]) -> Option<(Kind, u32)> {
    let kind = wire::decode_header(d).ok()?.kind;
    Some((kind, wire::peek_chunk(d, kind)?.1))
}

#[test]
fn a_fed_hub_asks_its_bridge_again_for_fed_chunks_that_did_not_decode() {
    let ch = channel(25);
    let t0 = Instant::now();
    let (_, all) = round(&ch);
    let origin = NodeAddr { id: NodeId([9; 32]), addr: SocketAddr::from(([10, 0, 0, 9], 9000)) };
    let mut fed = Driven::new(3, t0, &ch, |c| {
        c.no_multicast = true;
        c.tracker = Some(origin);
        c.bridges = Some(vec![bridge(1)]);
    });
    fed.wait(t0, STEP);
    fed.input(t0, Input::Bridges(&[bridge(1)]));
    fed.input(t0, Input::Feeding(bridge(1)));
    // The feed's symbols, a fifth of them lost on the way; of the last of
    // the four chunks, none yet (the bridge completed it last); of chunk 2,
    // every copy of its ticket lost (its symbols wait for one, none held).
    let last_chunk = |d: &Vec<u8>| kind_and_chunk(d).is_some_and(|(_, i)| i == 3);
    let ticket_2 = |d: &Vec<u8>| kind_and_chunk(d) == Some((Kind::Ticket, 2));
    let lossy: Vec<Vec<u8>> = lossy(&all).into_iter().filter(|d| !last_chunk(d) && !ticket_2(d)).collect();
    let datagrams: Vec<&[u8]> = lossy.iter().map(Vec::as_slice).collect();
    fed.input(t0, Input::Bridge { bridge: node(1).0, datagrams: &datagrams });
    let asked = refeeds_with_a_busy_bridge(&mut fed, t0, Some(manifest_of(&all)));
    assert!(asked.iter().all(|(_, b, chunks)| *b == node(1).0 && !chunks.is_empty()), "{asked:?}");
    let chunks: std::collections::BTreeSet<u32> =
        asked.iter().flat_map(|(_, _, c)| c.iter().map(|c| c.1)).collect();
    assert_eq!(chunks, [0, 1, 2].into(), "each chunk the feed brought, and not the one it has not reached");
    // Three seconds after the feed brought them, then every three seconds.
    let tenths: Vec<u32> = asked.iter().map(|(t, _, _)| *t).collect();
    assert_eq!(tenths, [30, 60, 90], "{asked:?}");
    assert!(fed.hub.naks_withheld() > 0, "the NAKs for chunk 3 are withheld and not asked of the bridge");
    // The feed falls quiet (the bridge fed all it has): 3 s on, every chunk
    // missing is asked for, chunk 3 too (a feed taken up from another
    // bridge's position skips what this one completed before it).
    let quiet = refeeds_with_a_busy_bridge(&mut fed, t0, None);
    let chunk_3 = quiet.iter().find(|(_, _, c)| c.iter().any(|c| c.1 == 3)).expect("chunk 3 asked");
    assert!((29..=31).contains(&chunk_3.0), "{quiet:?}");
}

/// A hub behind a `--remulticast` relay: the relay stops partway (its own
/// feed ended), the hub takes a bridge's feed from where it was, and asks
/// that bridge for the chunks the relay brought and it could not decode.
#[test]
fn a_hub_behind_a_relay_asks_its_new_bridge_for_what_the_relay_left_incomplete() {
    let ch = channel(26);
    let t0 = Instant::now();
    let (_, all) = round(&ch);
    let origin = NodeAddr { id: NodeId([9; 32]), addr: SocketAddr::from(([10, 0, 0, 9], 9000)) };
    let mut hub = Driven::new(3, t0, &ch, |c| {
        c.tracker = Some(origin);
        c.bridges = Some(vec![bridge(1)]);
    });
    // The relay: a fifth of the symbols lost, every ticket of chunk 1 lost,
    // and chunk 3 never sent.
    let relayed: Vec<Vec<u8>> = lossy(&all)
        .into_iter()
        .filter(|d| !kind_and_chunk(d).is_some_and(|(k, i)| i == 3 || (k == Kind::Ticket && i == 1)))
        .map(|mut d| {
            wire::mark_relayed(&mut d);
            d
        })
        .collect();
    for d in &relayed {
        hub.input(t0, Input::Multicast(d));
    }
    let searching = hub.wait(t0, Duration::from_secs(5));
    assert!(searching.iter().any(|o| matches!(o, Output::AskBridges { .. })), "the relay went silent");
    hub.input(t0, Input::Bridges(&[bridge(1)]));
    hub.input(t0, Input::Feeding(bridge(1)));
    let asked = refeeds_with_a_busy_bridge(&mut hub, t0, Some(manifest_of(&all)));
    let chunks: std::collections::BTreeSet<u32> =
        asked.iter().flat_map(|(_, _, c)| c.iter().map(|c| c.1)).collect();
    assert_eq!(chunks, [0, 1, 2].into(), "the chunks the relay brought, and not the one it never reached");
}

#[test]
fn a_desert_hub_asks_its_bridge_peers_first_then_the_trackers_and_rests_those_that_fail() {
    let ch = channel(24);
    let t0 = Instant::now();
    let origin = NodeAddr { id: NodeId([9; 32]), addr: SocketAddr::from(([10, 0, 0, 9], 9000)) };
    let mut hub = Driven::new(3, t0, &ch, |c| {
        c.no_multicast = true;
        c.tracker = Some(origin);
        c.bridges = Some(vec![bridge(1)]);
    });
    let out = hub.wait(t0, STEP);
    assert!(out.iter().any(|o| matches!(o, Output::AskBridges { tracker, .. } if *tracker == origin)));
    assert_eq!(desert_outputs(&out), ["ask"]);
    // --bridge-peer first; itself and a repeat left out.
    let listed = [bridge(2), bridge(3), bridge(1)];
    assert_eq!(desert_outputs(&hub.input(t0, Input::Bridges(&listed))), ["subscribe 1"]);
    let refused = Input::NotSubscribed { bridge: node(1).0, refused: true };
    assert_eq!(desert_outputs(&hub.input(t0, refused)), ["subscribe 2"]);
    hub.input(t0, Input::Feeding(bridge(2)));
    assert_eq!(hub.hub.feeding(), Some(bridge(2)));
    assert_eq!(desert_outputs(&hub.wait(t0, Duration::from_secs(1))), Vec::<String>::new(), "fed: no search");
    // The feed ends: both bridges rest (the one that refused for less long).
    assert_eq!(desert_outputs(&hub.input(t0, Input::FeedEnded(node(2).0))), ["ask"]);
    assert_eq!(hub.hub.feeding(), None);
    assert_eq!(desert_outputs(&hub.input(t0, Input::Bridges(&listed))), ["no bridge"]);
    let mut out = Vec::new();
    while !out.iter().any(|o| matches!(o, Output::AskBridges { .. })) {
        out = hub.wait(t0, STEP);
    }
    assert!(hub.now - t0 >= Duration::from_secs(2), "the refusing bridge rested");
    assert_eq!(desert_outputs(&hub.input(t0, Input::Bridges(&listed))), ["subscribe 1"]);
    // Unreachable: rests; nobody else is left, and the search goes on.
    let failed = Input::NotSubscribed { bridge: node(1).0, refused: false };
    assert_eq!(desert_outputs(&hub.input(t0, failed)), ["ask"]);
    match &desert_outputs(&hub.input(t0, Input::Bridges(&listed)))[..] {
        [no] if no == "no bridge" => {}
        other => panic!("every bridge rests: {other:?}"),
    }
}

#[test]
fn a_hub_fed_by_a_listed_bridge_asks_again_every_10_s_and_moves_when_another_is_listed_first() {
    let ch = channel(24);
    let t0 = Instant::now();
    let origin = NodeAddr { id: NodeId([9; 32]), addr: SocketAddr::from(([10, 0, 0, 9], 9000)) };
    let start = |fixed: Vec<NodeAddr>| {
        let mut hub = Driven::new(3, t0, &ch, |c| {
            c.no_multicast = true;
            c.tracker = Some(origin);
            c.bridges = Some(fixed);
        });
        assert_eq!(desert_outputs(&hub.wait(t0, STEP)), ["ask"]);
        hub
    };
    let recheck_within = |hub: &mut Driven, within: Duration| {
        // (The machine's desert deadlines ride its idle tick.)
        let out = hub.wait(t0, within + IDLE_TICK);
        out.iter()
            .filter_map(|o| match o {
                Output::AskBridges { leaving, .. } => Some(*leaving),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    let recheck = |hub: &mut Driven| recheck_within(hub, RECHECK_AFTER);
    // Listed by the tracker: 3 s in, it asks again naming its bridge; the
    // tracker lists it first still, and the hub stays, and asks again every
    // 10 s (an ask that failed, or came before other bridges registered,
    // left three of four desert hubs on one bridge).
    let mut hub = start(Vec::new());
    assert_eq!(desert_outputs(&hub.input(t0, Input::Bridges(&[bridge(2), bridge(4)]))), ["subscribe 2"]);
    hub.input(t0, Input::Feeding(bridge(2)));
    assert_eq!(recheck(&mut hub), [Some(node(2).0)]);
    assert!(desert_outputs(&hub.input(t0, Input::Bridges(&[bridge(2), bridge(4)]))).is_empty());
    assert!(recheck(&mut hub).is_empty(), "not at once");
    assert_eq!(recheck_within(&mut hub, RECHECK_EVERY - RECHECK_AFTER), [Some(node(2).0)], "10 s on");
    hub.input(t0, Input::Bridges(&[])); // the ask failed
    assert_eq!(recheck_within(&mut hub, RECHECK_EVERY), [Some(node(2).0)], "and 10 s after a failed ask");
    // Another listed first: the hub leaves its bridge for it.
    let mut hub = start(Vec::new());
    hub.input(t0, Input::Bridges(&[bridge(2), bridge(4)]));
    hub.input(t0, Input::Feeding(bridge(2)));
    assert_eq!(recheck(&mut hub), [Some(node(2).0)]);
    let out = hub.input(t0, Input::Bridges(&[bridge(4), bridge(2)]));
    assert_eq!(desert_outputs(&out), ["unsubscribe 2"]);
    assert!(out
        .iter()
        .any(|o| matches!(o, Output::Event(HubEvent::BridgeMove { to, .. }) if *to == node(4).0)));
    assert_eq!(desert_outputs(&hub.input(t0, Input::FeedEnded(node(2).0))), ["subscribe 4"]);
    // Moved: not rechecked within MOVE_REST (no going back and forth as
    // loads change); after it, again.
    hub.input(t0, Input::Feeding(bridge(4)));
    assert!(recheck(&mut hub).is_empty(), "rechecked right after a move");
    assert_eq!(recheck_within(&mut hub, MOVE_REST), [Some(node(4).0)], "rested");
    hub.input(t0, Input::FeedEnded(node(4).0));
    hub.wait(t0, MOVE_REST);
    hub.input(t0, Input::Bridges(&[bridge(2)]));
    hub.input(t0, Input::Feeding(bridge(2)));
    assert_eq!(recheck(&mut hub), [Some(node(2).0)], "rested");
    // An answer that does not list its bridge moves nothing.
    let mut hub = start(Vec::new());
    hub.input(t0, Input::Bridges(&[bridge(2)]));
    hub.input(t0, Input::Feeding(bridge(2)));
    recheck(&mut hub);
    assert!(desert_outputs(&hub.input(t0, Input::Bridges(&[bridge(4)]))).is_empty());
    assert_eq!(hub.hub.feeding(), Some(bridge(2)));
    // A --bridge-peer bridge is the operator's choice: no asking again.
    let mut hub = start(vec![bridge(1)]);
    hub.input(t0, Input::Bridges(&[]));
    hub.input(t0, Input::Feeding(bridge(1)));
    assert!(recheck(&mut hub).is_empty());
}

#[test]
fn a_bridge_whose_datagrams_strike_out_is_left_for_good_and_a_fed_hub_leaves_when_multicast_returns() {
    let ch = channel(25);
    let t0 = Instant::now();
    let (_, all) = round(&ch);
    let mut hub = Driven::new(3, t0, &ch, |c| c.bridges = Some(vec![bridge(1), bridge(2)]));
    // No tracker: the bridge peers alone, once multicast has been missing
    // for `desert_after`.
    let out = hub.wait(t0, Duration::from_secs(3));
    assert!(desert_outputs(&out).is_empty(), "{:?}", desert_outputs(&out));
    assert_eq!(desert_outputs(&hub.wait(t0, Duration::from_secs(2))), ["subscribe 1"]);
    hub.input(t0, Input::Feeding(bridge(1)));
    // Bridge 1 sends the round with every symbol's payload flipped.
    let mut forged = all.clone();
    for d in forged.iter_mut().filter(|d| wire::decode_header(d).is_ok_and(|h| h.kind == Kind::Symbol)) {
        let last = d.len() - 1;
        d[last] ^= 0x55;
    }
    let frames: Vec<&[u8]> = forged.iter().map(Vec::as_slice).collect();
    let out = hub.input(t0, Input::Bridge { bridge: node(1).0, datagrams: &frames });
    assert_eq!(desert_outputs(&out), ["left 1", "unsubscribe 1"]);
    assert!(hub.chunks.is_empty(), "nothing forged was kept");
    assert_eq!(desert_outputs(&hub.input(t0, Input::FeedEnded(node(1).0))), ["subscribe 2"]);
    hub.input(t0, Input::Feeding(bridge(2)));
    // Bridge 2's feed is good; then the multicast comes back: the hub
    // keeps the feed until it has heard the multicast for STEADY_MULTICAST
    // without a gap, then leaves it, and no search starts while it hears
    // multicast.
    let frames: Vec<&[u8]> = all.iter().take(all.len() / 2).map(Vec::as_slice).collect();
    hub.input(t0, Input::Bridge { bridge: node(2).0, datagrams: &frames });
    // A trickle: a datagram every 2 s.
    let mut out = hub.input(t0, Input::Multicast(&all[0]));
    let steps = STEADY_MULTICAST.as_secs() / 2;
    for _ in 0..steps {
        out.extend(hub.wait(t0, Duration::from_secs(2)));
        out.extend(hub.input(t0, Input::Multicast(&all[0])));
    }
    assert!(
        desert_outputs(&out).is_empty(),
        "left before the multicast was steady: {:?}",
        desert_outputs(&out)
    );
    assert_eq!(desert_outputs(&hub.wait(t0, Duration::from_secs(2))), ["unsubscribe 2"]);
    hub.input(t0, Input::FeedEnded(node(2).0));
    for d in &all[all.len() / 2..] {
        hub.input(t0, Input::Multicast(d));
    }
    assert!(desert_outputs(&hub.wait(t0, Duration::from_secs(2))).is_empty());
    assert_eq!(hub.chunks.len(), 4, "the object completed from the feed and the multicast");
    // Without multicast again, the banned bridge is never asked.
    let out = hub.wait(t0, Duration::from_secs(20));
    assert!(desert_outputs(&out).iter().all(|o| o != "subscribe 1"), "{:?}", desert_outputs(&out));
}

#[test]
fn a_fed_hub_goes_back_to_the_multicast_at_once_when_the_carousel_is_heard() {
    let ch = channel(26);
    let t0 = Instant::now();
    let (_, all) = round(&ch);
    let mut hub = Driven::new(3, t0, &ch, |c| c.bridges = Some(vec![bridge(1)]));
    assert_eq!(desert_outputs(&hub.wait(t0, Duration::from_secs(5))), ["subscribe 1"]);
    hub.input(t0, Input::Feeding(bridge(1)));
    // A trickle (a datagram a second) keeps the feed.
    let mut out = Vec::new();
    for d in all.iter().take(3) {
        out.extend(hub.input(t0, Input::Multicast(d)));
        out.extend(hub.wait(t0, Duration::from_secs(1)));
    }
    assert!(desert_outputs(&out).is_empty(), "{:?}", desert_outputs(&out));
    // The carousel: BUSY_MULTICAST datagrams within a second.
    let mut out = Vec::new();
    for d in all.iter().take(BUSY_MULTICAST as usize) {
        out.extend(hub.input(t0, Input::Multicast(d)));
    }
    out.extend(hub.wait(t0, STEP * 30));
    assert_eq!(desert_outputs(&out), ["unsubscribe 1"]);
}

/// A bridge that followed a root rotation before this hub did passes on
/// what the new root's key signs (its symbols over UDP overtake the
/// statement on its stream): refused as `untrusted_root` until the
/// statement comes, but no strike: the bridge is ahead, not hostile. Struck,
/// the hub's only bridge was banned and the hub left searching for good.
#[test]
fn a_bridge_ahead_of_the_hub_by_a_root_rotation_is_not_struck() {
    use hubcast_keys::{Certificate, RootRotation, SignerKeys, SigningKey};
    use hubcast_protocol::receiver::DropReason;
    use hubcast_protocol::verify::Signer;
    let ch = channel(28);
    let t0 = Instant::now();
    let mut hub = Driven::new(3, t0, &ch, |c| c.bridges = Some(vec![bridge(1)]));
    assert_eq!(desert_outputs(&hub.wait(t0, Duration::from_secs(5))), ["subscribe 1"]);
    hub.input(t0, Input::Feeding(bridge(1)));
    // The channel after a rotation to root 2: a new key certified by it.
    let (r2, signing) = (SigningKey::from_bytes(&[91; 32]), SigningKey::from_bytes(&[92; 32]));
    let cert = Certificate::issue(&r2, &signing.verifying_key(), NOW - 5, NOW + 3600, 2);
    let rotated = Channel {
        keys: hubcast_keys::ChannelKeys {
            root: r2.clone(),
            signer: SignerKeys { signing: signing.clone(), cert: cert.clone() },
        },
        signer: Signer::for_channel(SignerKeys { signing, cert }, ch.anchor.fingerprint),
        anchor: ch.anchor,
    };
    let (_, all) = round(&rotated);
    let frames: Vec<&[u8]> = all.iter().map(Vec::as_slice).collect();
    let out = hub.input(t0, Input::Bridge { bridge: node(1).0, datagrams: &frames });
    assert!(hub.hub.receiver().drops().get(DropReason::UntrustedRoot) > 0);
    assert!(!events(&out).iter().any(|e| matches!(e, HubEvent::Struck { .. })), "{:?}", events(&out));
    assert!(desert_outputs(&out).is_empty(), "the bridge is kept: {:?}", desert_outputs(&out));
    assert!(hub.chunks.is_empty());
    // The statement, then the feed again: every chunk taken from it.
    let statement =
        wire::rotation_datagram(&RootRotation::issue(&ch.keys.root, &r2, 2), ch.signer.channel_tag());
    hub.input(t0, Input::Bridge { bridge: node(1).0, datagrams: &[&statement] });
    let out = hub.input(t0, Input::Bridge { bridge: node(1).0, datagrams: &frames });
    assert!(!events(&out).iter().any(|e| matches!(e, HubEvent::Struck { .. })));
    assert_eq!(hub.chunks.len(), 4, "the object, under the new root");
}
