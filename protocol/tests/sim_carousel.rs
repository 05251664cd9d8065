//! Deterministic simulation: one broadcaster, 50 hubs, 10% independent loss,
//! 10% FEC overhead, carousel only (no peer or origin repair yet). Every hub ends
//! with exactly the source bytes. With loss equal to the overhead one round is
//! not enough for most chunks: the figures printed here are the baseline that
//! peer repair (issue 3) must beat.

mod support;

use hubcast_keys::NodeId;
use hubcast_protocol::hub::{Config, Hub, Input, Output};
use hubcast_protocol::receiver::{DropReason, Event};
use hubcast_protocol::sender::{Carousel, Step};
use hubcast_protocol::sim::{Link, Network};
use hubcast_protocol::store::{ChunkStore, MemoryStore};
use hubcast_protocol::ObjectId;
use std::time::{Duration, Instant};
use support::*;

const HUBS: usize = 50;
const CHUNK: u32 = 256 << 10;
const T: u16 = 1280;
const OVERHEAD: f64 = 0.10;
const RATE_BYTES_PER_SEC: f64 = 12_500_000.0; // 100 Mbit/s
const TICK: Duration = Duration::from_millis(100);
const MAX_ROUNDS: u32 = 6;

/// The real hub, listening only (no peer repair), and its in-memory store.
struct SimHub {
    hub: Hub,
    store: MemoryStore,
    done_at: Option<Duration>,
}

#[test]
fn fifty_hubs_at_10_percent_loss_all_complete_on_the_carousel_alone() {
    let ch = channel(5);
    let objects = [content("film.bin", 2 << 20, 7)];
    let src = &objects[0].bytes;
    let plans = plans(&objects, CHUNK, T);
    let chunks = plans[0].chunk_count();
    let link = Link { loss: 0.10, latency: Duration::from_millis(5), jitter: Duration::from_millis(1) };
    let mut net: Network<std::rc::Rc<Vec<u8>>> = Network::new(42);
    let t0 = Instant::now();
    let mut hubs: Vec<SimHub> = (0..HUBS)
        .map(|h| {
            let mut config = Config::new(NodeId([h as u8; 32]), 0);
            config.peer_repair = false;
            SimHub { hub: Hub::new(t0, ch.anchor, config), store: MemoryStore::new(), done_at: None }
        })
        .collect();

    let mut send_at = Duration::ZERO;
    let mut next_tick = TICK;
    let mut round_ends = Vec::new();
    let deliver_until = |net: &mut Network<std::rc::Rc<Vec<u8>>>,
                         hubs: &mut [SimHub],
                         until: Duration,
                         next_tick: &mut Duration| {
        loop {
            let due = net.next_at().filter(|t| *t <= until);
            // Ticks interleave with deliveries in time order.
            let clock = |net: &Network<_>| (t0 + net.now(), NOW * 1000 + net.now().as_millis() as u64);
            if *next_tick <= until && due.is_none_or(|t| *next_tick < t) {
                net.advance_to(*next_tick);
                let (at, unix_ms) = clock(net);
                for h in hubs.iter_mut().filter(|h| h.hub.poll_timeout() <= at) {
                    h.hub.handle_input(at, unix_ms, Input::Timer);
                }
                *next_tick += TICK;
            } else if due.is_some() {
                let Some(d) = net.poll_delivery() else { break };
                let (at, unix_ms) = clock(net);
                hubs[d.to].hub.handle_input(at, unix_ms, Input::Multicast(&d.msg));
            } else {
                break;
            }
            let now = net.now();
            for h in hubs.iter_mut() {
                while let Some(out) = h.hub.poll_output() {
                    if let Output::Store { event: Event::ChunkComplete(c), .. } = out {
                        h.store.put_chunk(&c).expect("the memory store keeps it");
                        if h.store.chunks().expect("chunks").len() as u32 == chunks && h.done_at.is_none() {
                            h.done_at = Some(now);
                        }
                    }
                }
            }
        }
    };

    let mut current_round = 0;
    for step in Carousel::new(&plans, Some(MAX_ROUNDS)) {
        if let Step::Chunk { round, .. } = step {
            if round != current_round {
                round_ends.push(send_at);
                current_round = round;
            }
        }
        let datagrams = step_datagrams(&ch, &plans, &objects, step, OVERHEAD);
        for d in datagrams {
            deliver_until(&mut net, &mut hubs, send_at, &mut next_tick);
            net.advance_to(send_at);
            let size = d.len() + 28;
            net.multicast((0..HUBS).map(|h| (h, link)), &std::rc::Rc::new(d));
            send_at += Duration::from_secs_f64(size as f64 / RATE_BYTES_PER_SEC);
        }
        if hubs.iter().all(|h| h.done_at.is_some()) {
            break;
        }
    }
    round_ends.push(send_at);
    deliver_until(&mut net, &mut hubs, send_at + Duration::from_secs(1), &mut next_tick);

    // Every hub has every chunk, bit for bit.
    for (i, h) in hubs.iter_mut().enumerate() {
        let keys = h.store.chunks().expect("chunks");
        assert_eq!(keys.len() as u32, chunks, "hub {i} incomplete");
        let got: Vec<u8> = keys
            .iter()
            .flat_map(|(id, i)| h.store.read_chunk(id, *i).expect("intact").expect("kept"))
            .collect();
        assert_eq!(ObjectId::of(&got), ObjectId::of(src), "hub {i} has wrong bytes");
        let drops = h.hub.receiver().drops();
        assert_eq!(drops.harmful() - drops.get(DropReason::PendingEvicted), 0);
    }
    let mut done: Vec<Duration> = hubs.iter().filter_map(|h| h.done_at).collect();
    done.sort();
    // A hub can finish after the round's last datagram left by at most the
    // link's latency and jitter plus one idle tick.
    let slack = link.latency + link.jitter + TICK;
    let round_of =
        |t: Duration| round_ends.iter().position(|end| t <= *end + slack).unwrap_or(round_ends.len()) + 1;
    let rounds: Vec<usize> = done.iter().map(|t| round_of(*t)).collect();
    let one_round = round_ends[0];
    eprintln!(
        "carousel only, {HUBS} hubs, 10% loss, 10% overhead: one round takes {:.2} s; completion p50 {:.2} s (round {}), p99 {:.2} s (round {}), last {:.2} s; network sent {} datagram copies, lost {}",
        one_round.as_secs_f64(),
        done[HUBS / 2].as_secs_f64(),
        rounds[HUBS / 2],
        done[HUBS * 99 / 100].as_secs_f64(),
        rounds[HUBS * 99 / 100],
        done[HUBS - 1].as_secs_f64(),
        net.stats().sent,
        net.stats().lost,
    );
    // Loss equal to the overhead: one round is not enough for most hubs, a few are.
    assert!(rounds[HUBS / 2] >= 2, "most hubs should need a second round: {rounds:?}");
    assert!(*rounds.last().unwrap() <= 4, "{rounds:?}");
}
