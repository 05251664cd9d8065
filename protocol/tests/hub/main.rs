//! The hub machine on its own: what it asks of whom, whom it credits and
//! strikes, and when it NAKs. Virtual time; two or three hubs; no network.

#[path = "../support/mod.rs"]
mod support;

mod desert;

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
