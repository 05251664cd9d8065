//! The hub machine on its own: what it asks of whom, whom it credits and
//! strikes, and when it NAKs. Virtual time; two or three hubs; no network.

mod support;

use hubcast_keys::{NodeAddr, NodeId};
use hubcast_protocol::hub::{Config, Hub, HubEvent, Input, Output, Source};
use hubcast_protocol::peer_wire::RefuseReason;
use hubcast_protocol::peers::{self, Via};
use hubcast_protocol::receiver::Event;
use hubcast_protocol::repair::Outcome;
use hubcast_protocol::serve::{answer, ChunkServer};
use hubcast_protocol::wire::{self, Kind};
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
        Driven { hub: Hub::new(t0, ch.anchor, config), now: t0, chunks: BTreeMap::new(), sources: Vec::new() }
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
        .filter_map(|o| if let Output::Naks { origin: o, naks } = o { Some((*o, naks.len())) } else { None })
        .collect();
    assert!(!naks.is_empty() && naks.iter().all(|(o, _)| *o == origin), "{naks:?}");
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
