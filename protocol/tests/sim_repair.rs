//! Deterministic simulation of peer repair: one broadcaster sends one carousel
//! round at 5% FEC overhead to 50 hubs over 10% independent loss, so nearly
//! every hub is short on nearly every chunk. The hubs fill their gaps from each
//! other, from chunks a peer decoded (any ESI) or from the symbols a peer holds
//! verified while it collects, over lossless unicast links (QUIC retransmits)
//! with 2 ms latency and 100 Mbit/s. The origin sends the one round and nothing
//! else.
//!
//! Modelling shortcut: a hub knows which peers hold a chunk complete (in the
//! daemon, from the peers' announcements); partial holders are asked blind and
//! say what they lack by not sending it.

mod support;

use hubcast_protocol::peer_wire::RefuseReason;
use hubcast_protocol::receiver::{Event, Receiver, ReceiverConfig};
use hubcast_protocol::repair::{Candidate, Outcome, RepairConfig, Repairer};
use hubcast_protocol::sender::Carousel;
use hubcast_protocol::serve::{answer, ChunkRequest, ChunkServer};
use hubcast_protocol::sim::{Link, Network};
use hubcast_protocol::wire::{self, Kind};
use hubcast_protocol::ObjectId;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::time::{Duration, Instant};
use support::*;

const HUBS: usize = 50;
const CHUNK: u32 = 256 << 10;
const T: u16 = 1280;
const OVERHEAD: f64 = 0.05;
const LOSS: f64 = 0.10;
const RATE_BYTES_PER_SEC: f64 = 12_500_000.0; // 100 Mbit/s
const TICK: Duration = Duration::from_millis(20);
const PEER_LATENCY: Duration = Duration::from_millis(2);

#[derive(Clone)]
enum Msg {
    Multicast(Rc<Vec<u8>>),
    Ask { from: usize, id: u64, req: ChunkRequest },
    Answer { id: u64, object_id: ObjectId, index: u32, result: Result<Vec<Vec<u8>>, RefuseReason> },
}

struct Hub {
    rx: Receiver,
    repairer: Repairer<usize>,
    /// Chunks decoded: (ticket datagram, bytes).
    done: BTreeMap<u32, (Vec<u8>, Vec<u8>)>,
    servers: HashMap<u32, ChunkServer>,
    multicast_symbols: Vec<u32>,
    repair_bytes: u64,
    repair_times: Vec<Duration>,
    done_at: Option<Duration>,
}

struct Sim {
    t0: Instant,
    net: Network<Msg>,
    hubs: Vec<Hub>,
    chunks: u32,
    complete: Vec<Vec<bool>>,
}

impl Sim {
    fn now(&self) -> Duration {
        self.net.now()
    }

    /// Take a hub's receiver events, then let its repairer plan and send.
    fn step(&mut self, h: usize) {
        let now = self.now();
        let hub = &mut self.hubs[h];
        while let Some(e) = hub.rx.poll_event() {
            if let Event::ChunkComplete(c) = e {
                self.complete[h][c.index() as usize] = true;
                hub.done.insert(c.index(), (c.ticket().to_vec(), c.data().to_vec()));
                if hub.done.len() as u32 == self.chunks && hub.done_at.is_none() {
                    hub.done_at = Some(now);
                }
            }
        }
        let needs = hub.rx.needs(16);
        let complete = &self.complete;
        hub.repairer.handle_tick(self.t0 + now, &needs, |need| {
            (0..HUBS)
                .filter(|p| *p != h)
                .map(|p| Candidate {
                    peer: p,
                    complete: complete[p][need.index as usize],
                    same_island: true,
                    rtt: PEER_LATENCY * 2,
                    strikes: 0,
                })
                .collect()
        });
        while let Some(r) = hub.repairer.poll_request() {
            let req = ChunkRequest { object_id: r.object_id, index: r.index, table: r.table, esis: r.esis };
            self.net.unicast(r.peer, Msg::Ask { from: h, id: r.id, req }, peer_link(64));
        }
        while let Some(done) = hub.repairer.poll_repaired() {
            hub.repair_times.push(done.took);
        }
    }

    fn deliver(&mut self, to: usize, msg: Msg) {
        match msg {
            Msg::Multicast(d) => {
                let kind = wire::decode_header(&d).expect("the sender's datagrams parse").kind;
                if let (Kind::Symbol, Some((_, index))) = (kind, wire::peek_chunk(&d, kind)) {
                    self.hubs[to].multicast_symbols[index as usize] += 1;
                }
                self.hubs[to].rx.handle_datagram(NOW, &d);
            }
            Msg::Ask { from, id, req } => {
                let hub = &mut self.hubs[to];
                if let (false, Some((ticket, data))) =
                    (hub.servers.contains_key(&req.index), hub.done.get(&req.index))
                {
                    let s = ChunkServer::new(ticket.clone(), data.to_vec()).expect("a decoded chunk serves");
                    hub.servers.insert(req.index, s);
                }
                let result = answer(&req, hub.servers.get(&req.index), &hub.rx);
                let bytes = result.as_ref().map_or(48, |ds| ds.iter().map(|d| d.len() + 8).sum());
                self.net.unicast(
                    from,
                    Msg::Answer { id, object_id: req.object_id, index: req.index, result },
                    peer_link(bytes),
                );
            }
            Msg::Answer { id, object_id, index, result } => {
                let hub = &mut self.hubs[to];
                let outcome = match result {
                    Ok(datagrams) => {
                        for d in &datagrams {
                            hub.repair_bytes += d.len() as u64;
                            hub.rx.handle_repair_datagram(NOW, d);
                        }
                        Outcome::Served
                    }
                    Err(reason) => Outcome::Refused(reason),
                };
                hub.rx.settle_chunk(object_id, index);
                hub.repairer.handle_response(id, outcome);
                self.step(to);
            }
        }
    }

    /// Deliver and tick in time order up to `until`.
    fn run_until(&mut self, until: Duration, next_tick: &mut Duration) {
        loop {
            let due = self.net.next_at().filter(|t| *t <= until);
            if *next_tick <= until && due.is_none_or(|t| *next_tick < t) {
                self.net.advance_to(*next_tick);
                for h in 0..HUBS {
                    self.hubs[h].rx.handle_idle();
                    self.step(h);
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
    let mut sim = Sim {
        t0: Instant::now(),
        net: Network::new(7),
        hubs: (0..HUBS)
            .map(|h| Hub {
                rx: Receiver::new(ch.anchor, ReceiverConfig::default()),
                repairer: Repairer::new(RepairConfig::default(), h as u64),
                done: BTreeMap::new(),
                servers: HashMap::new(),
                multicast_symbols: vec![0; chunks as usize],
                repair_bytes: 0,
                repair_times: Vec::new(),
                done_at: None,
            })
            .collect(),
        chunks,
        complete: vec![vec![false; chunks as usize]; HUBS],
    };
    let link = Link { loss: LOSS, latency: Duration::from_millis(5), jitter: Duration::from_millis(1) };

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
    for (i, h) in sim.hubs.iter().enumerate() {
        assert_eq!(h.done.len() as u32, chunks, "hub {i} incomplete");
        let got: Vec<u8> = h.done.values().flat_map(|(_, data)| data.iter().copied()).collect();
        assert_eq!(ObjectId::of(&got), ObjectId::of(src), "hub {i} has wrong bytes");
        assert_eq!(h.rx.drops().harmful(), 0, "hub {i}: {:?}", h.rx.drops());
    }
    // The origin sent its one round and no repair: no hub ever asked it.
    let naks: u64 = sim.hubs.iter().map(|h| h.repairer.stats().naks_sent).sum();
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
        .map(|h| h.repairer.stats())
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
    assert!(times.len() as u32 >= HUBS as u32 * chunks / 2, "most hub-chunks needed repair: {}", times.len());
}
