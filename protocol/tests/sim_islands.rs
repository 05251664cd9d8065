//! 1,000 real hubs ([`Hub`]), seeded: 10 islands of 95 hubs that hear the
//! origin's multicast, each copy lost at 10%, and 50 desert hubs that hear no
//! multicast and take the channel from bridges (the first two hubs of each
//! island). One carousel round at 5% FEC: nearly every island hub is short on
//! nearly every chunk, and fills its gaps from the peers it hears announce on
//! its island. Every hub knows the origin service: NAKs (from hubs that hear
//! the origin's multicast), tracker lookups and registrations go there, and
//! the origin's repair goes out once on multicast for every island. Five of
//! the twenty bridges die mid-round: their desert hubs move to another, as
//! their machines choose (each is given one bridge as `--bridge-peer`, and
//! asks the tracker for more). One island hub in ten joins late, after half
//! the round.
//!
//! What a hub does is the machine's; what this file models is the network
//! (`protocol::sim`), the origin ([`OriginRepair`], [`Tracker`]), a bridge's
//! feed (every chunk it completes, as ticket, table and K + 2 symbols) and
//! each hub's store (a map of chunks in memory).

mod support;

use hubcast_keys::{NodeAddr, NodeId};
use hubcast_protocol::hub::{Config, Hub, HubEvent, Input, Output, Source};
use hubcast_protocol::origin::{OriginConfig, OriginNak, OriginRepair};
use hubcast_protocol::peer_wire::{EsiRanges, ListedHub, RefuseReason};
use hubcast_protocol::receiver::{DropReason, Event};
use hubcast_protocol::repair::{Nak, Outcome};
use hubcast_protocol::sender::{round_count, Carousel, Pacer, PreparedChunk, Sender};
use hubcast_protocol::serve::{answer, answer_complete, ChunkRequest, ChunkServer};
use hubcast_protocol::sim::{Link, Network};
use hubcast_protocol::store::{chunk_server, ChunkStore, MemoryStore, StoredManifest};
use hubcast_protocol::tracker::{Role, Tracker, TrackerConfig};
use hubcast_protocol::wire::{self, Manifest};
use hubcast_protocol::ObjectId;
use rand::SeedableRng;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};
use support::*;

const ISLANDS: usize = 10;
const PER_ISLAND: usize = 95;
const DESERT: usize = 50;
const HUBS: usize = ISLANDS * PER_ISLAND + DESERT;
const BRIDGES_PER_ISLAND: usize = 2;
/// The origin service's node in the network.
const ORIGIN: usize = HUBS;
const SIZE: usize = 1 << 20;
const CHUNK: u32 = 256 << 10;
const T: u16 = 1280;
const OVERHEAD: f64 = 0.05;
/// The loss of every multicast copy in the suite's run.
const LOSS: f64 = 0.10;
/// The channel's rate: 8 Mbit/s, so the round lasts about a second.
const RATE_BYTES_PER_SEC: f64 = 1_000_000.0;
/// Peer links: QUIC over 100 Mbit/s.
const PEER_RATE_BYTES_PER_SEC: f64 = 12_500_000.0;
const TICK: Duration = Duration::from_millis(10);
const BASE_PORT: u16 = 4000;
const BRIDGES_KILLED: usize = 5;
/// A desert hub learns that its bridge's feed broke this long after (QUIC's
/// idle timeout would be longer; a reset stream is this quick).
const FEED_BREAK_NOTICED: Duration = Duration::from_millis(500);
/// When the last island hears nothing of the multicast.
const OUTAGE: std::ops::Range<Duration> = Duration::from_millis(250)..Duration::from_millis(500);

#[derive(Clone)]
enum Msg {
    Multicast(Rc<Vec<u8>>),
    OriginRepair(Rc<Vec<Vec<u8>>>),
    Announce {
        from: usize,
        datagram: Rc<Vec<u8>>,
    },
    Ask {
        from: usize,
        id: u64,
        req: ChunkRequest,
    },
    Answer {
        id: u64,
        result: Result<Vec<Vec<u8>>, RefuseReason>,
    },
    /// The peer asked is gone: the connection fails.
    Failed {
        id: u64,
    },
    Naks {
        naks: Vec<Nak>,
        loss: u8,
    },
    Lookup {
        from: usize,
        object_id: ObjectId,
        index: u32,
        limit: u8,
    },
    Listed {
        object_id: ObjectId,
        index: u32,
        hubs: Vec<ListedHub>,
    },
    Register {
        from: usize,
        holdings: Vec<(ObjectId, hubcast_protocol::peer_wire::ChunkBitmap)>,
    },
    Feed {
        bridge: usize,
        datagrams: Rc<Vec<Vec<u8>>>,
    },
    FeedBroke {
        bridge: usize,
    },
    /// A desert hub asks the tracker for bridges, and its answer.
    AskBridges {
        from: usize,
        limit: u8,
        leaving: Option<usize>,
    },
    Bridges {
        listed: Vec<NodeAddr>,
    },
    /// A desert hub subscribes to a bridge; a dead bridge does not answer.
    Subscribe {
        from: usize,
    },
    NotSubscribed {
        bridge: usize,
    },
}

fn node(h: usize) -> (NodeId, SocketAddr) {
    let mut id = [0u8; 32];
    id[..8].copy_from_slice(&(h as u64 + 1).to_le_bytes());
    let port = BASE_PORT + h as u16;
    (NodeId(id), SocketAddr::from(([10, (h / 250) as u8, (h % 250) as u8, 1], port)))
}

/// The chunks a hub's store holds, and their bytes in order, read back and checked.
fn read_back(store: &mut MemoryStore) -> (usize, Vec<u8>) {
    let keys = store.chunks().expect("chunks");
    let bytes =
        keys.iter().flat_map(|(id, i)| store.read_chunk(id, *i).expect("intact").expect("kept")).collect();
    (keys.len(), bytes)
}

fn index_of(addr: SocketAddr) -> usize {
    usize::from(addr.port() - BASE_PORT)
}

fn island_of(h: usize) -> Option<usize> {
    (h < ISLANDS * PER_ISLAND).then_some(h / PER_ISLAND)
}

fn is_bridge(h: usize) -> bool {
    island_of(h).is_some() && h % PER_ISLAND < BRIDGES_PER_ISLAND
}

/// The bridges, in the order desert hubs take them.
fn bridges() -> Vec<usize> {
    (0..ISLANDS).flat_map(|i| (0..BRIDGES_PER_ISLAND).map(move |b| i * PER_ISLAND + b)).collect()
}

fn link(loss: f64, latency_ms: u64) -> Link {
    Link { loss, latency: Duration::from_millis(latency_ms), jitter: Duration::from_millis(1) }
}

fn unicast_link(bytes: usize) -> Link {
    Link {
        loss: 0.0,
        latency: Duration::from_millis(2) + Duration::from_secs_f64(bytes as f64 / PEER_RATE_BYTES_PER_SEC),
        jitter: Duration::ZERO,
    }
}

struct SimHub {
    hub: Hub,
    joins_at: Duration,
    dead: bool,
    /// The in-memory store: chunks decoded, (ticket datagram, bytes).
    store: MemoryStore,
    servers: HashMap<u32, ChunkServer>,
    done_at: Option<Duration>,
    bytes: HashMap<Source, u64>,
    /// Desert hubs: the bridge that feeds it. Bridges: who it feeds, and
    /// everything it fed so far (a subscriber that comes later gets it all).
    bridge: Option<usize>,
    subscribers: Vec<usize>,
    fed: Vec<Rc<Vec<Vec<u8>>>>,
    moved: u32,
    ever_fed: bool,
    /// Symbol datagrams heard on the multicast, per chunk, and the bytes of
    /// the datagrams peers served.
    multicast_symbols: Vec<u32>,
    peer_datagram_bytes: u64,
}

struct Sim {
    t0: Instant,
    net: Network<Msg>,
    hubs: Vec<SimHub>,
    chunks: u32,
    origin: OriginRepair,
    tracker: Tracker<usize>,
    rng: rand_chacha::ChaCha8Rng,
    prepared: Vec<PreparedChunk>,
    channel_tag: u64,
    object_id: ObjectId,
    origin_round_bytes: u64,
    origin_repair_bytes: u64,
    /// Of every multicast copy, and of announcements.
    loss: f64,
}

impl Sim {
    fn clock(&self) -> (Instant, u64) {
        (self.t0 + self.net.now(), NOW * 1000 + self.net.now().as_millis() as u64)
    }

    fn alive(&self, h: usize) -> bool {
        let hub = &self.hubs[h];
        !hub.dead && self.net.now() >= hub.joins_at
    }

    fn input(&mut self, h: usize, input: Input<'_>) {
        let (at, unix_ms) = self.clock();
        self.hubs[h].hub.handle_input(at, unix_ms, input);
        self.drain(h);
    }

    /// Carry out what hub `h` asks for: its driver.
    fn drain(&mut self, h: usize) {
        let now = self.net.now();
        while let Some(out) = self.hubs[h].hub.poll_output() {
            match out {
                Output::Store { event: Event::ChunkComplete(c), .. } => {
                    let hub = &mut self.hubs[h];
                    hub.store.put_chunk(&c).expect("the memory store keeps it");
                    if hub.store.chunks().expect("chunks").len() as u32 == self.chunks
                        && hub.done_at.is_none()
                    {
                        hub.done_at = Some(now);
                    }
                    if is_bridge(h) {
                        let s = ChunkServer::new(c.ticket().to_vec(), c.data().to_vec()).expect("serves");
                        let k = wire::peek_ticket_geometry(c.ticket())
                            .map(|(len, t)| wire::source_symbols(len, t));
                        let pages = wire::page_count(s.n_max());
                        let req = ChunkRequest {
                            object_id: c.object_id(),
                            index: c.index(),
                            table: Some(if pages >= 32 { u32::MAX } else { (1 << pages) - 1 }),
                            esis: EsiRanges::new(vec![(0, k.expect("a ticket") as u16 + 2)]).expect("ESIs"),
                        };
                        let datagrams = answer_complete(&req, &s).expect("a complete chunk serves its feed");
                        self.feed(h, datagrams);
                    }
                }
                Output::Store { event: Event::Manifest(m), .. } => {
                    let d =
                        self.hubs[h].hub.receiver().manifest_datagram(&m.object_id).expect("kept").to_vec();
                    let stored =
                        StoredManifest { object_id: m.object_id, datagram: d.clone(), received_unix: NOW };
                    self.hubs[h].store.put_manifest(&stored).expect("the memory store keeps it");
                    if is_bridge(h) {
                        self.feed(h, vec![d]);
                    }
                }
                Output::Fetch { id, addr, req, .. } => {
                    self.net.unicast(index_of(addr), Msg::Ask { from: h, id, req }, unicast_link(64));
                }
                Output::Announce(datagram) => {
                    // A desert hub's LAN holds no other hub.
                    let Some(island) = island_of(h) else { continue };
                    let others = (island * PER_ISLAND..(island + 1) * PER_ISLAND).filter(|p| *p != h);
                    let msg = Msg::Announce { from: h, datagram: Rc::new(datagram) };
                    let loss = self.loss;
                    self.net.multicast(others.map(|p| (p, link(loss, 1))), &msg);
                }
                Output::Naks { naks, loss, .. } => {
                    self.net.unicast(ORIGIN, Msg::Naks { naks, loss }, unicast_link(64))
                }
                // This broadcaster sends no feedback echo (its FEC is fixed),
                // and a hub reports only in a round an echo started.
                Output::LossReport { .. } => panic!("hub {h}: a loss report with no echo heard"),
                Output::Lookup { object_id, index, limit, .. } => {
                    self.net.unicast(
                        ORIGIN,
                        Msg::Lookup { from: h, object_id, index, limit },
                        unicast_link(64),
                    );
                }
                Output::Register { holdings, .. } => {
                    self.net.unicast(ORIGIN, Msg::Register { from: h, holdings }, unicast_link(256));
                }
                Output::Event(HubEvent::Received { source, bytes, .. }) => {
                    *self.hubs[h].bytes.entry(source).or_default() += bytes;
                }
                Output::AskBridges { limit, leaving, .. } => {
                    let leaving = leaving.and_then(|b| self.hubs[h].hub.peers().addr(&b)).map(index_of);
                    self.net.unicast(ORIGIN, Msg::AskBridges { from: h, limit, leaving }, unicast_link(64));
                }
                Output::Subscribe { bridge, .. } => {
                    self.net.unicast(index_of(bridge.addr), Msg::Subscribe { from: h }, unicast_link(64));
                }
                Output::Unsubscribe(id) => {
                    let bridge = index_of(self.hubs[h].hub.peers().addr(&id).expect("the bridge is a peer"));
                    self.net.unicast(h, Msg::FeedBroke { bridge }, unicast_link(0));
                }
                // The simulated bridge passes on every datagram it hears and
                // keeps no history to feed again; the lab measures refeeds.
                Output::Refeed { .. } => {}
                Output::Tell { .. }
                | Output::Stripe { .. }
                | Output::AskForestHub { .. }
                | Output::ForestChildren(_) => panic!("hub {h}: there is no stripe forest here"),
                Output::Event(_) => {}
            }
        }
    }

    /// A bridge passes datagrams on to its subscribers.
    fn feed(&mut self, bridge: usize, datagrams: Vec<Vec<u8>>) {
        let datagrams = Rc::new(datagrams);
        let bytes = datagrams.iter().map(Vec::len).sum();
        self.hubs[bridge].fed.push(datagrams.clone());
        for s in self.hubs[bridge].subscribers.clone() {
            self.net.unicast(s, Msg::Feed { bridge, datagrams: datagrams.clone() }, unicast_link(bytes));
        }
    }

    /// Desert hub `h` takes the feed of `bridge`, from its start.
    fn subscribe(&mut self, h: usize, bridge: usize) {
        if self.hubs[h].ever_fed {
            self.hubs[h].moved += 1;
        }
        self.hubs[h].ever_fed = true;
        self.hubs[h].bridge = Some(bridge);
        self.hubs[bridge].subscribers.push(h);
        let (id, addr) = node(bridge);
        self.input(h, Input::Feeding(NodeAddr { id, addr }));
        for datagrams in self.hubs[bridge].fed.clone() {
            let bytes = datagrams.iter().map(Vec::len).sum();
            self.net.unicast(h, Msg::Feed { bridge, datagrams }, unicast_link(bytes));
        }
    }

    fn deliver(&mut self, to: usize, msg: Msg) {
        if to == ORIGIN {
            return self.at_origin(msg);
        }
        if !self.alive(to) {
            // A request to a hub that is gone fails; everything else is lost.
            match msg {
                Msg::Ask { from, id, .. } => self.net.unicast(from, Msg::Failed { id }, unicast_link(0)),
                Msg::Subscribe { from } => {
                    self.net.unicast(from, Msg::NotSubscribed { bridge: to }, unicast_link(0))
                }
                _ => {}
            }
            return;
        }
        match msg {
            Msg::Multicast(d) => {
                let kind = wire::decode_header(&d).expect("the sender's datagrams parse").kind;
                if let (wire::Kind::Symbol, Some((_, index))) = (kind, wire::peek_chunk(&d, kind)) {
                    self.hubs[to].multicast_symbols[index as usize] += 1;
                }
                self.input(to, Input::Multicast(&d))
            }
            Msg::OriginRepair(ds) => {
                let frames: Vec<&[u8]> = ds.iter().map(Vec::as_slice).collect();
                self.input(to, Input::Origin(&frames));
            }
            Msg::Announce { from, datagram } => {
                self.input(to, Input::Announcement { from: node(from).1, datagram: &datagram })
            }
            Msg::Ask { from, id, req } => {
                let hub = &mut self.hubs[to];
                // Serving reads sit beside the store (a server per chunk, kept).
                if !hub.servers.contains_key(&req.index) {
                    if let Some(s) = chunk_server(&mut hub.store, &req.object_id, req.index) {
                        hub.servers.insert(req.index, s);
                    }
                }
                let result = answer(&req, hub.servers.get(&req.index), hub.hub.receiver());
                let bytes = result.as_ref().map_or(48, |ds| ds.iter().map(|d| d.len() + 8).sum());
                self.net.unicast(from, Msg::Answer { id, result }, unicast_link(bytes));
            }
            Msg::Answer { id, result } => {
                let frames: Vec<&[u8]> = result.iter().flatten().map(Vec::as_slice).collect();
                self.hubs[to].peer_datagram_bytes += frames.iter().map(|d| d.len() as u64).sum::<u64>();
                let answer = match &result {
                    Ok(_) => Ok(frames.as_slice()),
                    Err(reason) => Err(Outcome::Refused(*reason)),
                };
                self.input(to, Input::Fetched { id, answer });
            }
            Msg::Failed { id } => self.input(to, Input::Fetched { id, answer: Err(Outcome::Failed) }),
            Msg::Listed { object_id, index, hubs } => {
                self.input(to, Input::Listed { object_id, index, hubs: Some(&hubs) })
            }
            Msg::Feed { bridge, datagrams } => {
                if self.hubs[to].bridge == Some(bridge) {
                    let frames: Vec<&[u8]> = datagrams.iter().map(Vec::as_slice).collect();
                    self.input(to, Input::Bridge { bridge: node(bridge).0, datagrams: &frames });
                }
            }
            Msg::FeedBroke { bridge } => {
                if self.hubs[to].bridge != Some(bridge) {
                    return;
                }
                self.hubs[to].bridge = None;
                self.hubs[bridge].subscribers.retain(|s| *s != to);
                self.input(to, Input::FeedEnded(node(bridge).0));
            }
            Msg::Subscribe { from } => self.subscribe(from, to),
            Msg::NotSubscribed { bridge } => {
                self.input(to, Input::NotSubscribed { bridge: node(bridge).0, refused: false })
            }
            Msg::Bridges { listed } => self.input(to, Input::Bridges(&listed)),
            Msg::Naks { .. } | Msg::Lookup { .. } | Msg::Register { .. } | Msg::AskBridges { .. } => {
                unreachable!("for the origin")
            }
        }
    }

    /// The origin service: NAKs into origin repair, the tracker's registrations and lookups.
    fn at_origin(&mut self, msg: Msg) {
        let (now, _) = self.clock();
        match msg {
            Msg::Naks { naks, loss } => {
                for nak in naks {
                    let Some(p) = self.prepared.get(nak.index as usize) else { continue };
                    let (k, n_max) = (p.encoded.k, p.encoded.n_max);
                    let (object_id, index, missing, held) = (nak.object_id, nak.index, nak.missing, nak.held);
                    let sent = round_count(k, n_max, OVERHEAD);
                    let nak = OriginNak { object_id, index, missing, loss, k, n_max, sent, held };
                    self.origin.handle_nak(now, nak);
                }
            }
            Msg::Register { from, holdings } => {
                let role = Role { bridge: is_bridge(from), ..Role::default() };
                self.tracker.register(now, from, node(from).1, role).expect("room for every hub");
                for (object, complete) in holdings {
                    self.tracker.report(now, from, object, complete).expect("registered");
                }
            }
            Msg::Lookup { from, object_id, index, limit } => {
                let found = self.tracker.holders(
                    now,
                    object_id,
                    Some(index),
                    Some(from),
                    usize::from(limit),
                    &mut self.rng,
                );
                let hubs = found
                    .iter()
                    .map(|h| ListedHub { node_id: node(h.node).0 .0, bridge: h.bridge, addr: h.addr })
                    .collect();
                self.net.unicast(from, Msg::Listed { object_id, index, hubs }, unicast_link(256));
            }
            Msg::AskBridges { from, limit, leaving } => {
                let found = self.tracker.bridges(now, Some(from), usize::from(limit), &mut self.rng, leaving);
                let listed = found.iter().map(|h| NodeAddr { id: node(h.node).0, addr: h.addr }).collect();
                self.net.unicast(from, Msg::Bridges { listed }, unicast_link(256));
            }
            _ => unreachable!("not for the origin"),
        }
    }

    /// The origin's repair whose gather window closed goes out on multicast.
    fn origin_tick(&mut self) {
        let (now, _) = self.clock();
        while let Some(r) = self.origin.poll_resend(now) {
            let datagrams = self.prepared[r.index as usize].datagrams(self.channel_tag, &r.esis);
            self.origin_repair_bytes += datagrams.iter().map(|d| d.len() as u64).sum::<u64>();
            let loss = self.loss;
            let islands = (0..ISLANDS * PER_ISLAND).map(|h| (h, link(loss, 5)));
            self.net.multicast(islands, &Msg::OriginRepair(Rc::new(datagrams)));
            self.origin.handle_sent(now, r.object_id, r.index);
        }
    }

    /// Deliver and tick in time order up to `until`.
    fn run_until(&mut self, until: Duration, next_tick: &mut Duration) {
        loop {
            let due = self.net.next_at().filter(|t| *t <= until);
            if *next_tick <= until && due.is_none_or(|t| *next_tick < t) {
                self.net.advance_to(*next_tick);
                let (at, _) = self.clock();
                for h in 0..HUBS {
                    if self.alive(h) && self.hubs[h].hub.poll_timeout() <= at {
                        self.input(h, Input::Timer);
                    }
                }
                self.origin_tick();
                *next_tick += TICK;
            } else if due.is_some() {
                let Some(d) = self.net.poll_delivery() else { break };
                self.deliver(d.to, d.msg);
            } else {
                break;
            }
        }
    }
}

/// What a run leaves for its checks.
struct Run {
    sim: Sim,
    chunks: u32,
    round_end: Duration,
    /// Hubs alive without every chunk, bit for bit: (hub, chunks held).
    missing: Vec<(usize, usize)>,
}

/// One carousel round to the thousand hubs, multicast copies lost at `loss`
/// (in runs of `burst` on average, if given), then up to 60 s for repair.
/// Prints the figures.
fn run(loss: f64, burst: Option<f64>) -> Run {
    let ch = channel(31);
    let objects = [content("news.bin", SIZE, 5)];
    let src = objects[0].bytes.clone();
    let plans = plans(&objects, CHUNK, T);
    let chunks = plans[0].chunk_count();
    let prepared = (0..chunks)
        .map(|i| {
            let r = plans[0].chunk_range(i);
            PreparedChunk::prepare(&ch.signer, &plans[0].manifest, i, &src[r.start as usize..r.end as usize])
        })
        .collect();
    let origin_addr = NodeAddr { id: NodeId([0xee; 32]), addr: SocketAddr::from(([10, 255, 0, 1], 7000)) };
    let t0 = Instant::now();
    // The round lasts about a second: late joiners come at half of it,
    // bridges die at 40%.
    let late_at = Duration::from_millis(550);
    let kill_at = Duration::from_millis(450);
    let hubs = (0..HUBS)
        .map(|h| {
            let (id, addr) = node(h);
            let mut config = Config::new(id, addr.port());
            config.seed = h as u64;
            config.tracker = Some(origin_addr);
            config.no_multicast = island_of(h).is_none();
            // A desert hub is given one bridge (`--bridge-peer`), spread
            // over all of them, and asks the tracker for the others. Island
            // hubs look for none: the simulation ends before they would miss
            // the multicast for `desert_after`.
            if island_of(h).is_none() {
                let (id, addr) = node(bridges()[(h - ISLANDS * PER_ISLAND) % bridges().len()]);
                config.bridges = Some(vec![NodeAddr { id, addr }]);
            }
            let late = island_of(h).is_some() && !is_bridge(h) && h % 10 == 9;
            let joins_at = if late { late_at } else { Duration::ZERO };
            SimHub {
                hub: Hub::new(t0 + joins_at, ch.anchor, config),
                joins_at,
                dead: false,
                store: MemoryStore::new(),
                servers: HashMap::new(),
                done_at: None,
                bytes: HashMap::new(),
                bridge: None,
                subscribers: Vec::new(),
                fed: Vec::new(),
                moved: 0,
                ever_fed: false,
                multicast_symbols: vec![0; chunks as usize],
                peer_datagram_bytes: 0,
            }
        })
        .collect();
    let mut sim = Sim {
        t0,
        net: match burst {
            Some(b) => Network::new(11).bursty(b),
            None => Network::new(11),
        },
        hubs,
        chunks,
        origin: OriginRepair::new(OriginConfig::default()),
        tracker: Tracker::new(TrackerConfig::default()),
        rng: rand_chacha::ChaCha8Rng::seed_from_u64(3),
        prepared,
        channel_tag: ch.signer.channel_tag(),
        object_id: plans[0].manifest.object_id,
        origin_round_bytes: 0,
        origin_repair_bytes: 0,
        loss,
    };
    let all_bridges = bridges();

    // One carousel round, paced at the channel rate, to every island hub.
    let mut send_at = Duration::ZERO;
    let mut next_tick = TICK;
    let mut killed = false;
    // The broadcaster's sender mixes the manifest in every 256 datagrams,
    // as `broadcaster seed` does: late joiners learn the object from it.
    // (The sender's pacer is left open: the loop below paces.)
    let manifest = ch.signer.manifest_datagram(&plans[0].manifest);
    let mut sender = Sender::new(vec![manifest], 256, Pacer::new(u64::MAX / 2, 1 << 40));
    for step in Carousel::new(&plans, Some(1)) {
        sender.handle_datagrams(step_datagrams(&ch, &plans, &objects, step, OVERHEAD));
        let datagrams: Vec<Vec<u8>> = std::iter::from_fn(|| sender.poll_transmit(t0)).collect();
        for d in datagrams {
            sim.run_until(send_at, &mut next_tick);
            sim.net.advance_to(send_at);
            if !killed && send_at >= kill_at {
                killed = true;
                for b in all_bridges.iter().take(BRIDGES_KILLED) {
                    sim.hubs[*b].dead = true;
                    for s in sim.hubs[*b].subscribers.clone() {
                        sim.net.unicast(
                            s,
                            Msg::FeedBroke { bridge: *b },
                            link(0.0, FEED_BREAK_NOTICED.as_millis() as u64),
                        );
                    }
                }
            }
            sim.origin_round_bytes += d.len() as u64;
            send_at += Duration::from_secs_f64((d.len() + 28) as f64 / RATE_BYTES_PER_SEC);
            // The last island's access network is down for a quarter second:
            // none of its hubs holds what went out then.
            let down = OUTAGE.contains(&send_at);
            let islands = (0..ISLANDS * PER_ISLAND)
                .filter(|h| !down || island_of(*h) != Some(ISLANDS - 1))
                .map(|h| (h, link(sim.loss, 5)));
            sim.net.multicast(islands, &Msg::Multicast(Rc::new(d)));
        }
    }
    assert!(killed && send_at > late_at, "the round ({send_at:?}) outlasts the kill and the late joins");
    let round_end = send_at;
    let mut until = round_end;
    let unfinished =
        |sim: &Sim| (0..HUBS).filter(|h| !sim.hubs[*h].dead && sim.hubs[*h].done_at.is_none()).count();
    // After its round the broadcaster lingers (`--linger`): four round-end
    // manifests a second on the multicast, as `broadcaster seed` sends, so a
    // hub that lost every copy of the manifest learns the object.
    let heartbeat =
        Rc::new(ch.signer.manifest_datagram(&Manifest { round_end: true, ..plans[0].manifest.clone() }));
    let mut beat = round_end;
    while unfinished(&sim) > 0 && until < round_end + Duration::from_secs(60) {
        until += Duration::from_millis(250);
        sim.run_until(until, &mut next_tick);
        if until >= beat + Duration::from_millis(250) {
            beat = until;
            sim.net.advance_to(until);
            let islands = (0..ISLANDS * PER_ISLAND).map(|h| (h, link(sim.loss, 5)));
            sim.net.multicast(islands, &Msg::Multicast(heartbeat.clone()));
        }
    }

    // Every hub alive has every chunk, bit for bit, and saw nothing harmful.
    let mut missing = Vec::new();
    for (h, hub) in sim.hubs.iter_mut().enumerate().filter(|(_, s)| !s.dead) {
        let (held, got) = read_back(&mut hub.store);
        if held as u32 != chunks || got != src {
            missing.push((h, held));
        }
        let drops = hub.hub.receiver().drops();
        assert_eq!(drops.harmful(), 0, "hub {h}: {drops:?}");
    }
    let bytes = |h: &SimHub, s: Source| h.bytes.get(&s).copied().unwrap_or(0);
    let sum = |f: &dyn Fn(&SimHub) -> u64| sim.hubs.iter().map(f).sum::<u64>();
    let deserts = &sim.hubs[ISLANDS * PER_ISLAND..];
    let moved = deserts.iter().filter(|h| h.moved > 0).count();
    let mut done: Vec<Duration> = sim.hubs.iter().filter_map(|h| h.done_at).collect();
    done.sort();
    let origin = sim.origin.stats();
    let (naks, withheld): (u64, u64) = sim
        .hubs
        .iter()
        .fold((0, 0), |a, h| (a.0 + h.hub.repair_stats().naks_sent, a.1 + h.hub.naks_withheld()));
    eprintln!(
        "{HUBS} hubs ({ISLANDS} islands of {PER_ISLAND}, {DESERT} in the desert), {:.0}% loss, {:.0}% FEC, {} MiB: \
         {} of {} alive hubs complete; completion p50 {:.2} s, last {:.2} s (round {:.2} s); \
         origin sent {:.3} x the file (round {:.3} x, repair {:.3} x for {} NAKs, {} resends); \
         NAKs sent {naks}, withheld {withheld}; bytes by source: multicast {}, peers {}, origin repair {}, bridges {}; \
         {moved} desert hubs moved bridge; object {}",
        sim.loss * 100.0,
        OVERHEAD * 100.0,
        SIZE >> 20,
        done.len(),
        HUBS - BRIDGES_KILLED,
        done.get(done.len() / 2).map_or(f64::NAN, Duration::as_secs_f64),
        done.last().map_or(f64::NAN, Duration::as_secs_f64),
        round_end.as_secs_f64(),
        (sim.origin_round_bytes + sim.origin_repair_bytes) as f64 / SIZE as f64,
        sim.origin_round_bytes as f64 / SIZE as f64,
        sim.origin_repair_bytes as f64 / SIZE as f64,
        origin.naks,
        origin.resends,
        sum(&|h| bytes(h, Source::Multicast)),
        sum(&|h| bytes(h, Source::Peer)),
        sum(&|h| bytes(h, Source::Origin)),
        sum(&|h| bytes(h, Source::Bridge)),
        sim.object_id,
    );
    Run { sim, chunks, round_end, missing }
}

#[test]
fn a_thousand_hubs_on_ten_islands_and_a_desert_complete_with_little_from_the_origin() {
    let Run { sim, chunks, missing, .. } = run(LOSS, None);
    let all_bridges = bridges();
    let bytes = |h: &SimHub, s: Source| h.bytes.get(&s).copied().unwrap_or(0);
    let deserts = &sim.hubs[ISLANDS * PER_ISLAND..];
    let moved = deserts.iter().filter(|h| h.moved > 0).count();
    let origin = sim.origin.stats();
    assert!(missing.is_empty(), "{} hubs incomplete: {missing:?}", missing.len());
    // The island that lost a quarter second (a quarter of the file) NAKed
    // what no peer it knows held; the origin resent it on multicast for
    // everyone, not once per hub (95 hubs x a quarter of the file): less
    // than one copy of the file. (A chunk is resent again for the hubs that
    // lost a resend, with what the neediest lacks: issue 22.)
    let repair = sim.origin_repair_bytes as f64 / SIZE as f64;
    assert!(origin.naks >= PER_ISLAND as u64 / 2, "{} NAKs", origin.naks);
    assert!(origin.resends >= 1 && origin.resends < u64::from(chunks) * 3, "{} resends", origin.resends);
    assert!(repair < 1.0, "the origin repaired {repair:.3} x the file");
    // Peer repair, on the islands the outage spared, against what the
    // multicast lost (both as datagram bytes). Not the 1.1 of sim_repair:
    // hubs announce every 2 s and the round lasts 1.2 s, so at repair time
    // every peer looks partial and is asked blind; most ESIs asked are
    // lacked and some come twice (the figures are printed). The bound
    // catches a repair that asks for whole chunks.
    let k = wire::source_symbols(CHUNK, T);
    let symbol_datagram = (wire::SYMBOL_HEADER_LEN + usize::from(T)) as u64;
    let spared: Vec<&SimHub> = sim.hubs[..(ISLANDS - 1) * PER_ISLAND]
        .iter()
        .filter(|h| h.joins_at == Duration::ZERO && !h.dead)
        .collect();
    let lost: u64 = spared
        .iter()
        .flat_map(|h| h.multicast_symbols.iter().map(|got| u64::from(k.saturating_sub(*got))))
        .sum::<u64>()
        * symbol_datagram;
    let asked: u64 = spared.iter().map(|h| h.peer_datagram_bytes).sum();
    let ratio = asked as f64 / lost as f64;
    let (requested, lacked) = spared.iter().fold((0, 0), |a, h| {
        let s = h.hub.repair_stats();
        (a.0 + s.esis_requested, a.1 + s.esis_lacked)
    });
    let duplicates: u64 = spared.iter().map(|h| h.hub.receiver().drops().get(DropReason::Duplicate)).sum();
    eprintln!(
        "on the spared islands: ESIs asked of peers {requested}, lacked by the peer asked {lacked}; duplicate symbols {duplicates}"
    );
    eprintln!("repair/missing on the spared islands, hubs there from the start: {ratio:.3} ({asked} / {lost} bytes)");
    assert!(ratio <= 3.0, "repair/missing {ratio:.3}");
    // Desert hubs NAK nothing (the repair would not reach them); those of
    // the dead bridges moved and completed from another.
    assert!(deserts.iter().all(|h| h.hub.repair_stats().naks_sent == h.hub.naks_withheld()));
    let orphaned = (0..DESERT).filter(|d| d % all_bridges.len() < BRIDGES_KILLED).count();
    assert_eq!(moved, orphaned, "desert hubs that moved");
    assert!(deserts.iter().all(|h| bytes(h, Source::Bridge) > 0));
    // Island hubs filled most of what the multicast lost from peers.
    let islanders = &sim.hubs[..ISLANDS * PER_ISLAND];
    let peer: u64 = islanders.iter().map(|h| bytes(h, Source::Peer)).sum();
    let from_origin: u64 = islanders.iter().map(|h| bytes(h, Source::Origin)).sum();
    assert!(peer > from_origin, "peers {peer} bytes, origin repair {from_origin}");
}

/// What must hold at any loss rate of the table: every hub alive completes,
/// the origin sends at most `max_origin` × the file in all, and the last hub
/// completes within `max_after` of the round's end (simulated time).
fn assert_bounds(r: &Run, max_origin: f64, max_after: Duration) {
    let alive = r.sim.hubs.iter().filter(|h| !h.dead).count();
    assert!(r.missing.is_empty(), "{} of {alive} hubs incomplete: {:?}", r.missing.len(), r.missing);
    let origin = (r.sim.origin_round_bytes + r.sim.origin_repair_bytes) as f64 / SIZE as f64;
    assert!(origin <= max_origin, "the origin sent {origin:.3} x the file");
    let last = r.sim.hubs.iter().filter_map(|h| h.done_at).max().unwrap_or_default();
    assert!(
        last <= r.round_end + max_after,
        "the last hub completed at {last:?}, the round ended at {:?}",
        r.round_end
    );
}

/// Half of every multicast copy and announcement lost: no hub decodes a
/// chunk from the round alone. Every hub completes from peers, bridges and
/// the origin's resends, sized for the loss the NAKs report (measured: 995
/// of 995, the last 9 s after the round, origin 1.66 × the file).
#[test]
fn every_hub_completes_with_half_of_every_copy_lost() {
    let r = run(0.5, None);
    assert_bounds(&r, 2.0, Duration::from_secs(15));
}

/// The figures at every loss rate of issue 22, for docs/BENCHMARKS.md:
/// `cargo test --release -p hubcast-protocol --test sim_islands --
/// --ignored --nocapture` (`HUBCAST_SIM_LOSS=0.5` for one loss rate). Each
/// is held to the bounds of the suite's 50% run.
#[test]
#[ignore = "minutes in the debug profile; a table for docs/BENCHMARKS.md"]
fn heavy_loss_figures() {
    let only: Option<f64> = std::env::var("HUBCAST_SIM_LOSS").ok().and_then(|v| v.parse().ok());
    let cases = [(0.01, None), (0.05, None), (0.20, None), (0.50, None), (0.20, Some(8.0))];
    for (loss, burst) in cases.into_iter().filter(|(l, _)| only.is_none_or(|o| o == *l)) {
        let r = run(loss, burst);
        let alive = r.sim.hubs.iter().filter(|h| !h.dead).count();
        eprintln!(
            "== loss {:.0}%{}: {} of {alive} hubs complete within 60 s of the round's end ({:.2} s); origin sent {:.3} x the file",
            loss * 100.0,
            burst.map_or(String::new(), |b| format!(" in bursts of {b}")),
            alive - r.missing.len(),
            r.round_end.as_secs_f64(),
            (r.sim.origin_round_bytes + r.sim.origin_repair_bytes) as f64 / SIZE as f64,
        );
        // Who did not complete: by island (the last one had the outage), late
        // joiners, deserts; and how much each held.
        let mut by_kind: std::collections::BTreeMap<String, (usize, usize)> = Default::default();
        for (h, held) in &r.missing {
            let kind = match island_of(*h) {
                None => "desert".to_string(),
                Some(i) if r.sim.hubs[*h].joins_at > Duration::ZERO => format!("island {i}, late"),
                Some(i) => format!("island {i}"),
            };
            let e = by_kind.entry(kind).or_default();
            (e.0, e.1) = (e.0 + 1, e.1 + held);
        }
        if let Some((h, _)) = r.missing.first() {
            let hub = &r.sim.hubs[*h].hub;
            let (now, _) = r.sim.clock();
            let needs = hub.receiver().needs(usize::MAX);
            let id = r.sim.object_id;
            let chunks: Vec<String> = (0..r.chunks)
                .filter(|i| !hub.receiver().is_complete(id, *i))
                .map(|i| match hub.receiver().chunk_progress(id, i) {
                    Some((k, have)) => {
                        format!("chunk {i}: {} of K {k} held", have.iter().filter(|h| **h).count())
                    }
                    None => format!("chunk {i}: not collecting"),
                })
                .collect();
            eprintln!("   hub {h}: {chunks:?}");
            eprintln!(
                "   hub {h}, one of them: {:?}; needs {:?}; {} peers known; drops {:?}",
                hub.repair_stats(),
                needs
                    .iter()
                    .map(|n| (n.index, n.has_ticket, n.held.iter().filter(|h| **h).count()))
                    .collect::<Vec<_>>(),
                hub.peers().view(now).len(),
                hub.receiver().drops(),
            );
        }
        for (kind, (n, held)) in by_kind {
            eprintln!(
                "   incomplete: {n} hubs of {kind}, holding {held} chunks of {} in all",
                n as u32 * r.chunks
            );
        }
        assert_bounds(&r, if burst.is_some() { 2.3 } else { 2.0 }, Duration::from_secs(15));
    }
}
