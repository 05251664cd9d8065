//! The hub machine on its own: what it asks of whom, whom it credits and
//! strikes, and when it NAKs. Virtual time; two or three hubs; no network.

mod support;

use hubcast_keys::{NodeAddr, NodeId};
use hubcast_protocol::forest::Msg;
use hubcast_protocol::hub::{
    Config, ForestEvent, ForestRole, Hub, HubEvent, Input, Output, Source, BUSY_MULTICAST, IDLE_TICK,
    MOVE_REST, RECHECK_AFTER, RECHECK_EVERY, STEADY_MULTICAST, WELCOME_WAIT,
};
use hubcast_protocol::peer_wire::{ForestPeer, RefuseReason};
use hubcast_protocol::peers::{self, Via};
use hubcast_protocol::receiver::Event;
use hubcast_protocol::repair::Outcome;
use hubcast_protocol::serve::{answer, ChunkServer};
use hubcast_protocol::wire::{self, Kind};
use hubcast_protocol::ObjectId;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use support::*;

const CHUNK: u32 = 64 << 10;
const T: u16 = 1280;
const STEP: Duration = Duration::from_millis(10);

fn node(n: u8) -> (NodeId, SocketAddr) {
    (NodeId([n; 32]), SocketAddr::from(([10, 0, 0, n], 4000 + u16::from(n))))
}

/// A hub, its virtual clock, and what it stored (ticket, bytes).
struct Driven {
    n: u8,
    hub: Hub,
    now: Instant,
    chunks: BTreeMap<(hubcast_protocol::ObjectId, u32), (Vec<u8>, Vec<u8>)>,
    sources: Vec<Source>,
}

impl Driven {
    fn new(n: u8, t0: Instant, ch: &Channel, tune: impl FnOnce(&mut Config)) -> Self {
        let (id, addr) = node(n);
        let mut config = Config::new(id, addr.port());
        config.seed = u64::from(n);
        tune(&mut config);
        Driven {
            n,
            hub: Hub::new(t0, ch.anchor, config),
            now: t0,
            chunks: BTreeMap::new(),
            sources: Vec::new(),
        }
    }

    fn unix_ms(&self, t0: Instant) -> u64 {
        NOW * 1000 + (self.now - t0).as_millis() as u64
    }

    /// Hand in one input, and return the outputs that are not stores (those
    /// are kept).
    fn input(&mut self, t0: Instant, input: Input<'_>) -> Vec<Output> {
        let unix = self.unix_ms(t0);
        self.hub.handle_input(self.now, unix, input);
        self.outputs()
    }

    fn outputs(&mut self) -> Vec<Output> {
        let mut out = Vec::new();
        while let Some(o) = self.hub.poll_output() {
            match o {
                Output::Store { event: Event::ChunkComplete(c), source } => {
                    self.chunks.insert((c.object_id(), c.index()), (c.ticket().to_vec(), c.data().to_vec()));
                    self.sources.push(source);
                }
                Output::Store { .. } => {}
                o => out.push(o),
            }
        }
        out
    }

    /// Let `d` of virtual time pass, handing in the timer when it is due.
    fn wait(&mut self, t0: Instant, d: Duration) -> Vec<Output> {
        let until = self.now + d;
        let mut out = Vec::new();
        while self.now < until {
            self.now += STEP;
            if self.hub.poll_timeout() <= self.now {
                out.extend(self.input(t0, Input::Timer));
            }
        }
        out
    }
}

/// One object of four chunks; every datagram of one round, with 5% overhead.
fn round(ch: &Channel) -> (Vec<u8>, Vec<Vec<u8>>) {
    let objects = [content("clip.bin", 4 * CHUNK as usize - 1000, 3)];
    (objects[0].bytes.clone(), broadcast(ch, &objects, CHUNK, T, 0.05, 1))
}

/// Every fifth symbol datagram lost: no chunk decodes from the multicast.
fn lossy(all: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let mut n = 0;
    all.iter()
        .filter(|d| {
            let symbol = wire::decode_header(d).is_ok_and(|h| h.kind == Kind::Symbol);
            n += usize::from(symbol);
            !symbol || n % 5 != 0
        })
        .cloned()
        .collect()
}

/// Serve `req` as hub `server` would: from its decoded chunks, else what it collects.
fn serve(server: &Driven, req: &hubcast_protocol::serve::ChunkRequest) -> Result<Vec<Vec<u8>>, RefuseReason> {
    let chunk = server.chunks.get(&(req.object_id, req.index));
    let s = chunk.map(|(ticket, data)| ChunkServer::new(ticket.clone(), data.clone()).expect("serves"));
    answer(req, s.as_ref(), server.hub.receiver())
}

fn fetches(out: &[Output]) -> Vec<(u64, NodeId, hubcast_protocol::serve::ChunkRequest)> {
    out.iter()
        .filter_map(|o| match o {
            Output::Fetch { id, peer, req, .. } => Some((*id, *peer, req.clone())),
            _ => None,
        })
        .collect()
}

fn events(out: &[Output]) -> Vec<HubEvent> {
    out.iter()
        .filter_map(|o| match o {
            Output::Event(e) => Some(e.clone()),
            _ => None,
        })
        .collect()
}

/// A has the whole round, B a lossy copy; B hears A's announcement.
fn two_hubs(ch: &Channel, t0: Instant) -> (Driven, Driven, Vec<u8>) {
    let (src, all) = round(ch);
    let mut a = Driven::new(1, t0, ch, |_| {});
    let mut b = Driven::new(2, t0, ch, |_| {});
    for d in &all {
        a.input(t0, Input::Multicast(d));
    }
    for d in lossy(&all) {
        b.input(t0, Input::Multicast(&d));
    }
    a.wait(t0, Duration::from_millis(100));
    assert_eq!(a.chunks.len(), 4, "A decodes every chunk from the multicast");
    // Where the multicast is, as the receiver read it from the headers.
    let object = a.chunks.keys().next().expect("a chunk").0;
    assert_eq!(a.hub.position(), Some((object, 3)), "the last chunk the channel brought");
    assert!(a.hub.ever_heard_origin() && a.hub.hears_origin(a.now));
    assert!(a.sources.iter().all(|s| *s == Source::Multicast));
    let announcement = a
        .wait(t0, Duration::from_secs(2))
        .into_iter()
        .find_map(|o| if let Output::Announce(d) = o { Some(d) } else { None })
        .expect("A announces what it holds");
    let found = b.input(t0, Input::Announcement { from: node(1).1, datagram: &announcement });
    assert!(events(&found).contains(&HubEvent::PeerFound {
        peer: node(1).0,
        addr: node(1).1,
        via: Via::Island
    }));
    (a, b, src)
}

#[test]
fn a_peers_answer_completes_chunks_credited_to_that_peer() {
    let ch = channel(21);
    let t0 = Instant::now();
    let (a, mut b, src) = two_hubs(&ch, t0);
    assert!(b.chunks.is_empty(), "no chunk decodes with a fifth of its symbols lost");
    let mut credited = 0;
    for _ in 0..20 {
        let out = b.wait(t0, Duration::from_millis(100));
        for (id, peer, req) in fetches(&out) {
            assert_eq!(peer, node(1).0, "the only peer");
            let answer = serve(&a, &req).expect("A holds every chunk");
            let frames: Vec<&[u8]> = answer.iter().map(Vec::as_slice).collect();
            for e in events(&b.input(t0, Input::Fetched { id, answer: Ok(&frames) })) {
                if let HubEvent::Received { source: Source::Peer, peer: Some(p), bytes } = e {
                    assert_eq!(p, node(1).0);
                    credited += bytes;
                }
            }
        }
        if b.chunks.len() == 4 {
            break;
        }
    }
    assert_eq!(b.chunks.len(), 4, "B completes from A");
    assert!(b.sources.iter().all(|s| *s == Source::Peer), "{:?}", b.sources);
    let got: Vec<u8> = b.chunks.values().flat_map(|(_, d)| d.iter().copied()).collect();
    assert_eq!(got, src);
    assert!(credited > 0 && credited < src.len() as u64 / 2, "credited {credited} bytes");
    assert_eq!(b.hub.holdings().values().next().map(|h| h.count()), Some(4), "B announces all four now");
}

#[test]
fn corrupt_symbols_strike_and_ban_a_peer_and_not_holding_never_does() {
    let ch = channel(22);
    let t0 = Instant::now();
    let (a, mut b, _) = two_hubs(&ch, t0);
    let (mut refused, mut corrupt, mut asked_after_ban) = (0, 0, 0);
    let mut strikes = Vec::new();
    for _ in 0..60 {
        let out = b.wait(t0, Duration::from_millis(100));
        // Requests planned after a strike's batch was handed in.
        let banned = !strikes.is_empty();
        for (id, _, req) in fetches(&out) {
            if banned {
                asked_after_ban += 1;
            }
            // More "I do not have it" than it takes strikes to ban; then
            // symbols with their payload flipped (the digests catch them).
            let events = if refused <= peers::STRIKES_TO_BAN {
                refused += 1;
                events(
                    &b.input(t0, Input::Fetched { id, answer: Err(Outcome::Refused(RefuseReason::NotHeld)) }),
                )
            } else {
                corrupt += 1;
                let mut answer = serve(&a, &req).expect("A holds it");
                for d in
                    answer.iter_mut().filter(|d| wire::decode_header(d).is_ok_and(|h| h.kind == Kind::Symbol))
                {
                    let last = d.len() - 1;
                    d[last] ^= 0x55;
                }
                let frames: Vec<&[u8]> = answer.iter().map(Vec::as_slice).collect();
                events(&b.input(t0, Input::Fetched { id, answer: Ok(&frames) }))
            };
            strikes.extend(events.into_iter().filter(|e| matches!(e, HubEvent::Struck { .. })));
            assert!(corrupt > 0 || strikes.is_empty(), "a refusal struck: {strikes:?}");
        }
    }
    assert!(refused > peers::STRIKES_TO_BAN, "{refused} refusals");
    // The first corrupt answer holds more bad symbols than a ban takes;
    // the requests of its batch were out already.
    assert!(corrupt >= 1 && strikes.len() == corrupt, "{corrupt} corrupt answers: {strikes:?}");
    match &strikes[0] {
        HubEvent::Struck { peer, n, strike, via: Via::Island } => {
            assert_eq!(*peer, node(1).0);
            assert!(*n >= peers::STRIKES_TO_BAN && strike.strikes == *n && strike.banned_now, "{strikes:?}");
        }
        other => panic!("a strike expected: {other:?}"),
    }
    let bans = strikes.iter().filter(|s| matches!(s, HubEvent::Struck { strike, .. } if strike.banned_now));
    assert_eq!(bans.count(), 1, "banned once");
    assert_eq!(asked_after_ban, 0, "a banned peer is not asked again");
    assert!(b.chunks.is_empty(), "nothing corrupt was kept");
    let view = b.hub.peers().view(b.now);
    assert!(view.iter().any(|v| v.id == node(1).0 && v.banned));
}

#[test]
fn naks_go_to_the_origin_only_while_its_multicast_is_heard() {
    let ch = channel(23);
    let t0 = Instant::now();
    let (_, all) = round(&ch);
    let origin = NodeAddr { id: NodeId([9; 32]), addr: SocketAddr::from(([10, 0, 0, 9], 9000)) };
    let tune = |c: &mut Config| c.tracker = Some(origin);
    // Hears the multicast: with no peer to ask, NAKs the origin.
    let mut heard = Driven::new(3, t0, &ch, tune);
    for d in lossy(&all) {
        heard.input(t0, Input::Multicast(&d));
    }
    let out = heard.wait(t0, Duration::from_secs(3));
    let naks: Vec<_> = out
        .iter()
        .filter_map(|o| match o {
            Output::Naks { origin: o, naks, loss } => Some((*o, naks.len(), *loss)),
            _ => None,
        })
        .collect();
    assert!(!naks.is_empty() && naks.iter().all(|(o, _, _)| *o == origin), "{naks:?}");
    // One symbol in five was lost: each NAK says so, for the origin to size
    // its resend.
    assert!(naks.iter().all(|(_, _, loss)| (19..=21).contains(loss)), "{naks:?}");
    assert_eq!(heard.hub.naks_withheld(), 0);

    // The same datagrams, relayed (a bridge's re-multicast): the origin's
    // repair would not reach this hub, so it does not NAK.
    let mut relayed = Driven::new(4, t0, &ch, tune);
    for mut d in lossy(&all) {
        wire::mark_relayed(&mut d);
        relayed.input(t0, Input::Multicast(&d));
    }
    let out = relayed.wait(t0, Duration::from_secs(3));
    assert!(
        !out.iter().any(|o| matches!(o, Output::Naks { .. })),
        "no NAK from a hub that hears only a relay"
    );
    assert!(relayed.hub.naks_withheld() > 0);
}

/// After the carousel's last round no multicast comes but the origin's
/// resends: a hub that hears them hears the origin, and keeps NAKing for what
/// is still missing; one that hears nothing from the origin for
/// `desert_after` stops (its NAKs would go unanswered).
#[test]
fn the_origins_resends_keep_a_hub_naking_after_the_last_round() {
    let ch = channel(24);
    let t0 = Instant::now();
    let (_, all) = round(&ch);
    let kept = lossy(&all);
    let lost: Vec<Vec<u8>> = all.iter().filter(|d| !kept.contains(d)).cloned().collect();
    let origin = NodeAddr { id: NodeId([9; 32]), addr: SocketAddr::from(([10, 0, 0, 9], 9000)) };
    let naks = |out: &[Output]| out.iter().filter(|o| matches!(o, Output::Naks { .. })).count();
    let mut runs = Vec::new();
    for (n, resends) in [(5, true), (6, false)] {
        let mut h = Driven::new(n, t0, &ch, |c| c.tracker = Some(origin));
        for d in &kept {
            h.input(t0, Input::Multicast(d));
        }
        let mut late = 0;
        for (second, resend) in lost.iter().take(8).enumerate() {
            let out = h.wait(t0, Duration::from_secs(1));
            // A resend of one symbol a second: not enough to finish a chunk.
            if resends {
                h.input(t0, Input::Origin(&[resend.as_slice()]));
            }
            if second >= 5 {
                late += naks(&out);
            }
        }
        runs.push((late, h.hub.naks_withheld(), h.hub.wants_feed(h.now)));
    }
    let desert_after = Config::new(NodeId([0; 32]), 1).desert_after;
    assert!(desert_after < Duration::from_secs(5), "the test waits past {desert_after:?}");
    // (late NAKs, NAKs withheld, wants a bridge's feed)
    assert!(runs[0].0 > 0 && runs[0].1 == 0 && !runs[0].2, "hearing resends: {:?}", runs[0]);
    assert!(runs[1].0 == 0 && runs[1].1 > 0 && runs[1].2, "hearing nothing: {:?}", runs[1]);
}

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

fn forest_peer(n: u8) -> ForestPeer {
    let (id, addr) = node(n);
    ForestPeer { node_id: id.0, addr }
}

/// Hand each hub's forest messages to the other until none is left; the
/// other outputs are returned, by hub.
fn exchange(t0: Instant, hubs: &mut [&mut Driven], first: Vec<Vec<Output>>) -> Vec<Vec<Output>> {
    let mut kept: Vec<Vec<Output>> = hubs.iter().map(|_| Vec::new()).collect();
    let mut pending = first;
    while pending.iter().any(|p| !p.is_empty()) {
        let mut next: Vec<Vec<Output>> = hubs.iter().map(|_| Vec::new()).collect();
        for (from, outs) in pending.into_iter().enumerate() {
            for o in outs {
                let Output::Tell { to, msg } = o else {
                    kept[from].push(o);
                    continue;
                };
                let me = forest_peer(hubs[from].n);
                let at = hubs.iter().position(|h| forest_peer(h.n) == to).expect("a hub");
                next[at].extend(hubs[at].input(t0, Input::Forest { from: me, msg }));
            }
        }
        pending = next;
    }
    kept
}

#[test]
fn a_forest_hub_joins_through_the_root_takes_each_stripe_and_leaves_a_starved_one() {
    let ch = channel(26);
    let t0 = Instant::now();
    let (_, all) = round(&ch);
    let origin = NodeAddr { id: NodeId([9; 32]), addr: SocketAddr::from(([10, 0, 0, 9], 9000)) };
    let role =
        |n: u8, root: Option<u8>| ForestRole { me: forest_peer(n), root: root.map(forest_peer), stripes: 2 };
    let mut root = Driven::new(1, t0, &ch, |c| c.forest = Some(role(1, None)));
    let said = events(&root.outputs());
    assert_eq!(said, [HubEvent::Forest(ForestEvent::Root)]);
    let mut hub = Driven::new(2, t0, &ch, |c| {
        c.forest = Some(role(2, Some(1)));
        c.tracker = Some(origin);
        c.no_multicast = true;
    });
    // It asks the root for its proper tree, again while none answers.
    let joins =
        |out: &[Output]| out.iter().filter(|o| matches!(o, Output::Tell { msg: Msg::Join, .. })).count();
    assert_eq!(joins(&hub.wait(t0, STEP)), 1);
    assert_eq!(joins(&hub.wait(t0, WELCOME_WAIT)), 1);
    let join = hub.wait(t0, WELCOME_WAIT);
    assert_eq!(joins(&join), 1);
    // The welcome: the tracker is asked for a hub to start at; it names none,
    // so the search starts at the root's pick.
    let kept = exchange(t0, &mut [&mut root, &mut hub], vec![Vec::new(), join]);
    assert!(kept[1].iter().any(|o| matches!(o, Output::AskForestHub { tracker } if *tracker == origin)));
    let out = hub.input(t0, Input::ForestHub(None));
    let kept = exchange(t0, &mut [&mut root, &mut hub], vec![Vec::new(), out]);
    assert!(events(&kept[1])
        .iter()
        .any(|e| matches!(e, HubEvent::Forest(ForestEvent::Joining { via_tracker: false, .. }))));
    let stripes = |out: &[Output]| -> Vec<(u8, Option<u8>)> {
        out.iter()
            .filter_map(|o| match o {
                Output::Stripe { tree, parent, .. } => Some((*tree, parent.map(|p| p.node_id[0]))),
                _ => None,
            })
            .collect()
    };
    assert_eq!(stripes(&kept[1]), [(0, Some(1)), (1, Some(1))], "the root is its parent in both trees");
    let view = hub.hub.forest().expect("in the forest");
    assert_eq!((view.joined_via, view.parents.len()), (Some("root"), 2));
    let root_view = root.hub.forest().expect("the root");
    assert_eq!(root_view.children.iter().map(Vec::len).sum::<usize>(), 2);
    assert!(kept[0].iter().any(|o| matches!(o, Output::ForestChildren(c) if c.len() == 2)));

    // Tree 0's stripe brings data every half second, tree 1's nothing: after
    // STARVED tree 1 is left and searched again from the root.
    let mut out = Vec::new();
    for i in 0..30 {
        let d = [all[i % all.len()].as_slice()];
        out.extend(hub.input(t0, Input::Stripe { tree: 0, parent: node(1).0, datagrams: &d }));
        out.extend(hub.wait(t0, Duration::from_millis(500)));
    }
    let starved: Vec<HubEvent> = events(&out)
        .into_iter()
        .filter(|e| matches!(e, HubEvent::Forest(ForestEvent::Starved { .. })))
        .collect();
    assert!(
        starved.iter().all(|e| matches!(e, HubEvent::Forest(ForestEvent::Starved { tree: 1, .. }))),
        "{starved:?}"
    );
    assert!(!starved.is_empty(), "tree 1 starved");
    assert_eq!(stripes(&out).first(), Some(&(1, None)), "tree 1's stripe left first");
    assert!(stripes(&out).iter().all(|(t, _)| *t == 1), "tree 0 flows: kept");
}

/// RFC 4654's suppression in the machine: a hub losing a fifth of the
/// multicast reports it within half a round of the echo that starts the
/// round, and stays quiet in a round whose echo already says as much. A
/// forged echo is dropped and moves nothing; an older one is a duplicate.
#[test]
fn a_hub_reports_its_loss_once_a_round_unless_the_echo_covers_it() {
    use hubcast_protocol::feedback::{Echo, ROUND};
    use hubcast_protocol::receiver::DropReason;
    let ch = channel(24);
    let t0 = Instant::now();
    let (_, all) = round(&ch);
    let origin = NodeAddr { id: NodeId([9; 32]), addr: SocketAddr::from(([10, 0, 0, 9], 9000)) };
    let mut hub = Driven::new(3, t0, &ch, |c| c.tracker = Some(origin));
    for d in lossy(&all) {
        hub.input(t0, Input::Multicast(&d));
    }
    let echo = |seq: u64, round: u32, worst: Option<u8>, signer: &hubcast_protocol::verify::Signer| {
        let echo = Echo {
            round,
            round_ms: ROUND.as_millis() as u16,
            worst,
            fec_permille: 50,
            rate_kbit: None,
            heard: Default::default(),
        };
        signer.feedback_datagram(&wire::Feedback { seq, expiry: NOW + 3600, echo })
    };
    let reports = |out: &[Output]| -> Vec<(NodeAddr, u8)> {
        out.iter()
            .filter_map(|o| match o {
                Output::LossReport { origin, loss, .. } => Some((*origin, *loss)),
                _ => None,
            })
            .collect()
    };
    // A round starts with no report heard: this hub reports, once.
    hub.input(t0, Input::Multicast(&echo(10, 1, None, &ch.signer)));
    let out = hub.wait(t0, ROUND / 2 + STEP);
    let sent = reports(&out);
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert!(sent[0].0 == origin && (19..=21).contains(&sent[0].1), "{sent:?}");
    // The next round's echo already carries a worse loss: quiet.
    hub.input(t0, Input::Multicast(&echo(11, 2, Some(30), &ch.signer)));
    assert!(reports(&hub.wait(t0, ROUND)).is_empty());
    assert_eq!(hub.hub.loss_reports().0, 1);
    assert!(hub.hub.loss_reports().1 >= 1, "suppressed");
    // A forged echo (another channel's key, this channel's tag) opens no
    // round; an older genuine one is a duplicate.
    let forger = channel(99);
    let mut forged = echo(12, 3, None, &forger.signer);
    forged[4..12].copy_from_slice(&ch.signer.channel_tag().to_be_bytes());
    let before = hub.hub.receiver().drops().clone();
    hub.input(t0, Input::Multicast(&forged));
    hub.input(t0, Input::Multicast(&echo(9, 3, None, &ch.signer)));
    assert!(reports(&hub.wait(t0, ROUND)).is_empty());
    let drops = hub.hub.receiver().drops();
    assert_eq!(drops.get(DropReason::UntrustedRoot) - before.get(DropReason::UntrustedRoot), 1);
    assert_eq!(drops.get(DropReason::Duplicate) - before.get(DropReason::Duplicate), 1);
    assert_eq!(hub.hub.loss_reports().2.map(|e| e.round), Some(2));
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
