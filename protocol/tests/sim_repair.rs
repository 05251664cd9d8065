//! Deterministic simulation of peer repair: one broadcaster sends one carousel
//! round at 5% FEC overhead to 50 hubs over 10% independent loss, so nearly
//! every hub is short on nearly every chunk. The hubs fill their gaps from each
//! other, from chunks a peer decoded (any ESI) or from the symbols a peer holds
//! verified while it collects, over lossless unicast links (QUIC retransmits)
//! with 2 ms latency and 100 Mbit/s. The origin sends the one round and nothing
//! else.
//!
//! Every hub is the real [`protocol::hub::Hub`](hubcast_protocol::hub::Hub):
//! it learns what its peers hold from their announcements on the island's
//! (lossy) control group, asks them, checks what they serve, and keeps its
//! chunks in memory (the store of this simulation).

mod support;

use hubcast_keys::NodeId;
use hubcast_protocol::hub::{Config, Hub, HubEvent, Input, Output, Source};
use hubcast_protocol::peer_wire::RefuseReason;
use hubcast_protocol::receiver::Event;
use hubcast_protocol::repair::Outcome;
use hubcast_protocol::sender::Carousel;
use hubcast_protocol::serve::{answer, ChunkRequest, ChunkServer};
use hubcast_protocol::sim::{Link, Network};
use hubcast_protocol::store::{chunk_server, ChunkStore, MemoryStore, StoredManifest};
use hubcast_protocol::wire::{self, Kind};
use hubcast_protocol::ObjectId;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};
use support::*;

const HUBS: usize = 50;
const CHUNK: u32 = 256 << 10;
const T: u16 = 1280;
const OVERHEAD: f64 = 0.05;
const LOSS: f64 = 0.10;
const RATE_BYTES_PER_SEC: f64 = 12_500_000.0; // 100 Mbit/s
const TICK: Duration = Duration::from_millis(10);
const PEER_LATENCY: Duration = Duration::from_millis(2);
const BASE_PORT: u16 = 4000;

#[derive(Clone)]
enum Msg {
    Multicast(Rc<Vec<u8>>),
    Announce { from: usize, datagram: Rc<Vec<u8>> },
    Ask { from: usize, id: u64, req: ChunkRequest },
    Answer { id: u64, result: Result<Vec<Vec<u8>>, RefuseReason> },
}

/// Hub `h`'s node id and QUIC address.
fn node(h: usize) -> (NodeId, SocketAddr) {
    let mut id = [0u8; 32];
    id[..8].copy_from_slice(&(h as u64 + 1).to_le_bytes());
    (NodeId(id), SocketAddr::from(([10, 0, (h / 250) as u8, (h % 250) as u8 + 1], BASE_PORT + h as u16)))
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

struct SimHub {
    hub: Hub,
    /// The in-memory store: chunks decoded, (ticket datagram, bytes).
    store: MemoryStore,
    servers: HashMap<u32, ChunkServer>,
    multicast_symbols: Vec<u32>,
    repair_bytes: u64,
    repair_times: Vec<Duration>,
    done_at: Option<Duration>,
    /// Chunks the hub says a peer completed, and the symbol bytes it credits to peers.
    by_peer: u32,
    credited: u64,
}

struct Sim {
    t0: Instant,
    net: Network<Msg>,
    hubs: Vec<SimHub>,
    chunks: u32,
    announce_link: Link,
}

impl Sim {
    fn now(&self) -> Duration {
        self.net.now()
    }

    fn clock(&self) -> (Instant, u64) {
        (self.t0 + self.now(), NOW * 1000 + self.now().as_millis() as u64)
    }

    fn input(&mut self, h: usize, input: Input<'_>) {
        let (at, unix_ms) = self.clock();
        self.hubs[h].hub.handle_input(at, unix_ms, input);
        self.drain(h);
    }

    /// Carry out what hub `h` asks for.
    fn drain(&mut self, h: usize) {
        let now = self.now();
        while let Some(out) = self.hubs[h].hub.poll_output() {
            let hub = &mut self.hubs[h];
            match out {
                Output::Store { event: Event::ChunkComplete(c), source } => {
                    hub.store.put_chunk(&c).expect("the memory store keeps it");
                    hub.by_peer += u32::from(source == Source::Peer);
                    if hub.store.chunks().expect("chunks").len() as u32 == self.chunks
                        && hub.done_at.is_none()
                    {
                        hub.done_at = Some(now);
                    }
                }
                Output::Store { event: Event::Manifest(m), .. } => {
                    let d =
                        self.hubs[h].hub.receiver().manifest_datagram(&m.object_id).expect("kept").to_vec();
                    let stored = StoredManifest { object_id: m.object_id, datagram: d, received_unix: NOW };
                    self.hubs[h].store.put_manifest(&stored).expect("the memory store keeps it");
                }
                Output::Fetch { id, addr, req, .. } => {
                    self.net.unicast(index_of(addr), Msg::Ask { from: h, id, req }, peer_link(64));
                }
                Output::Announce(datagram) => {
                    let to = (0..HUBS).filter(|p| *p != h).map(|p| (p, self.announce_link));
                    self.net.multicast(to, &Msg::Announce { from: h, datagram: Rc::new(datagram) });
                }
                Output::Event(HubEvent::Repaired(r)) => hub.repair_times.push(r.took),
                Output::Event(HubEvent::Received { source: Source::Peer, bytes, .. }) => {
                    hub.credited += bytes
                }
                Output::Naks { .. }
                | Output::LossReport { .. }
                | Output::Lookup { .. }
                | Output::Register { .. } => {
                    panic!("hub {h}: there is no origin service in this simulation")
                }
                Output::AskBridges { .. }
                | Output::Subscribe { .. }
                | Output::Unsubscribe(_)
                | Output::Refeed { .. } => {
                    panic!("hub {h}: every hub hears the multicast here, and looks for no bridge")
                }
                Output::Tell { .. }
                | Output::Stripe { .. }
                | Output::AskForestHub { .. }
                | Output::ForestChildren(_) => panic!("hub {h}: there is no stripe forest here"),
                Output::Event(_) => {}
            }
        }
    }

    fn deliver(&mut self, to: usize, msg: Msg) {
        match msg {
            Msg::Multicast(d) => {
                let kind = wire::decode_header(&d).expect("the sender's datagrams parse").kind;
                if let (Kind::Symbol, Some((_, index))) = (kind, wire::peek_chunk(&d, kind)) {
                    self.hubs[to].multicast_symbols[index as usize] += 1;
                }
                self.input(to, Input::Multicast(&d));
            }
            Msg::Announce { from, datagram } => {
                self.input(to, Input::Announcement { from: node(from).1, datagram: &datagram });
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
                self.net.unicast(from, Msg::Answer { id, result }, peer_link(bytes));
            }
            Msg::Answer { id, result } => {
                let frames: Vec<&[u8]> = result.iter().flatten().map(Vec::as_slice).collect();
                self.hubs[to].repair_bytes += frames.iter().map(|d| d.len() as u64).sum::<u64>();
                let answer = match &result {
                    Ok(_) => Ok(frames.as_slice()),
                    Err(reason) => Err(Outcome::Refused(*reason)),
                };
                self.input(to, Input::Fetched { id, answer });
            }
        }
    }

    /// Deliver and tick in time order up to `until`.
    fn run_until(&mut self, until: Duration, next_tick: &mut Duration) {
        loop {
            let due = self.net.next_at().filter(|t| *t <= until);
            if *next_tick <= until && due.is_none_or(|t| *next_tick < t) {
                self.net.advance_to(*next_tick);
                let at = self.clock().0;
                for h in 0..HUBS {
                    if self.hubs[h].hub.poll_timeout() <= at {
                        self.input(h, Input::Timer);
                    }
                }
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

/// Peer links: lossless (QUIC), a fixed latency plus the time to send `bytes`.
fn peer_link(bytes: usize) -> Link {
    Link {
        loss: 0.0,
        latency: PEER_LATENCY + Duration::from_secs_f64(bytes as f64 / RATE_BYTES_PER_SEC),
        jitter: Duration::ZERO,
    }
}

fn percentile(sorted: &[Duration], p: usize) -> Duration {
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)]
}

#[test]
fn fifty_hubs_at_10_percent_loss_complete_from_each_other_without_the_origin() {
    let ch = channel(6);
    let objects = [content("film.bin", 2 << 20, 11)];
    let src = &objects[0].bytes;
    let plans = plans(&objects, CHUNK, T);
    let chunks = plans[0].chunk_count();
    let k = wire::source_symbols(CHUNK, T);
    let t0 = Instant::now();
    let link = Link { loss: LOSS, latency: Duration::from_millis(5), jitter: Duration::from_millis(1) };
    let mut sim = Sim {
        t0,
        net: Network::new(7),
        hubs: (0..HUBS)
            .map(|h| {
                let (id, addr) = node(h);
                let mut config = Config::new(id, addr.port());
                config.seed = h as u64;
                SimHub {
                    hub: Hub::new(t0, ch.anchor, config),
                    store: MemoryStore::new(),
                    servers: HashMap::new(),
                    multicast_symbols: vec![0; chunks as usize],
                    repair_bytes: 0,
                    repair_times: Vec::new(),
                    done_at: None,
                    by_peer: 0,
                    credited: 0,
                }
            })
            .collect(),
        chunks,
        announce_link: link,
    };

    // One carousel round, paced at the channel rate.
    let mut send_at = Duration::ZERO;
    let mut next_tick = TICK;
    let mut origin_bytes = 0u64;
    for step in Carousel::new(&plans, Some(1)) {
        let datagrams = step_datagrams(&ch, &plans, &objects, step, OVERHEAD);
        for d in datagrams {
            sim.run_until(send_at, &mut next_tick);
            sim.net.advance_to(send_at);
            origin_bytes += d.len() as u64;
            send_at += Duration::from_secs_f64((d.len() + 28) as f64 / RATE_BYTES_PER_SEC);
            sim.net.multicast((0..HUBS).map(|h| (h, link)), &Msg::Multicast(Rc::new(d)));
        }
    }
    let round_end = send_at;
    let mut until = round_end;
    while sim.hubs.iter().any(|h| h.done_at.is_none()) && until < round_end + Duration::from_secs(30) {
        until += Duration::from_millis(100);
        sim.run_until(until, &mut next_tick);
    }

    // Every hub has every chunk, bit for bit.
    for (i, h) in sim.hubs.iter_mut().enumerate() {
        let (held, got) = read_back(&mut h.store);
        assert_eq!(held as u32, chunks, "hub {i} incomplete");
        assert_eq!(ObjectId::of(&got), ObjectId::of(src), "hub {i} has wrong bytes");
        let drops = h.hub.receiver().drops();
        assert_eq!(drops.harmful(), 0, "hub {i}: {drops:?}");
    }
    // The origin sent its one round and no repair: no hub ever asked it.
    let naks: u64 = sim.hubs.iter().map(|h| h.hub.repair_stats().naks_sent).sum();
    assert_eq!(naks, 0, "origin unicast/repair requests");

    // Repair bytes against missing bytes, both as symbol datagrams.
    let symbol_datagram = (wire::SYMBOL_HEADER_LEN + T as usize) as u64;
    let missing: u64 = sim
        .hubs
        .iter()
        .flat_map(|h| h.multicast_symbols.iter().map(|got| u64::from(k.saturating_sub(*got))))
        .sum::<u64>()
        * symbol_datagram;
    let repair: u64 = sim.hubs.iter().map(|h| h.repair_bytes).sum();
    let ratio = repair as f64 / missing as f64;
    let mut times: Vec<Duration> = sim.hubs.iter().flat_map(|h| h.repair_times.iter().copied()).collect();
    times.sort();
    let mut done: Vec<Duration> = sim.hubs.iter().filter_map(|h| h.done_at).collect();
    done.sort();
    let stats = sim
        .hubs
        .iter()
        .map(|h| h.hub.repair_stats())
        .fold((0, 0, 0), |a, s| (a.0 + s.requests, a.1 + s.esis_lacked, a.2 + s.refusals + s.failures));
    eprintln!(
        "peer repair, {HUBS} hubs, {:.0}% loss, {:.0}% overhead, one round of {:.2} s ({:.1} MB from the origin): \
         repair/missing = {ratio:.3} ({repair} / {missing} bytes); window close→repaired p50 {:.0} ms, p99 {:.0} ms over {} \
         chunk repairs; completion p50 {:.2} s, last {:.2} s; {} requests, {} ESIs lacked by the peer asked, {} refused",
        LOSS * 100.0,
        OVERHEAD * 100.0,
        round_end.as_secs_f64(),
        origin_bytes as f64 / 1e6,
        percentile(&times, 50).as_secs_f64() * 1e3,
        percentile(&times, 99).as_secs_f64() * 1e3,
        times.len(),
        done[HUBS / 2].as_secs_f64(),
        done[HUBS - 1].as_secs_f64(),
        stats.0,
        stats.1,
        stats.2,
    );
    assert!(ratio <= 1.2, "repair bytes / missing bytes = {ratio:.3}");
    // The hub says which chunks peers completed, and credits their bytes.
    for (i, h) in sim.hubs.iter().enumerate() {
        assert!(h.repair_bytes == 0 || (h.credited > 0 && h.credited <= h.repair_bytes), "hub {i}");
    }
    assert!(sim.hubs.iter().map(|h| h.by_peer).sum::<u32>() >= HUBS as u32 * chunks / 2);
    assert!(times.len() as u32 >= HUBS as u32 * chunks / 2, "most hub-chunks needed repair: {}", times.len());
}
