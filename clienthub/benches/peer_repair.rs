//! Peer repair over loopback QUIC, beside raw quinn measured in the same run.
//!
//! `cargo bench -p hubcast-clienthub --bench peer_repair`
//! (env: HUBCAST_BENCH_MIB, default 64; HUBCAST_BENCH_RUNS, default 3;
//! HUBCAST_BENCH_ONLY=repair runs only the repair of a missed object, for a
//! profiler: `perf record -g target/release/deps/peer_repair-* --bench`)
//!
//! Three serving peers, each a real [`Store`] on disk read through a store
//! thread and a real [`Server`] on its own QUIC endpoint. One repairing hub:
//! the real [`Hub`] machine that heard the multicast with some loss, driven
//! as the daemon's receive loop drives it, its fetches run by the hub's
//! [`Fetcher`] (every answer checked by its receiver).
//!
//! - baseline: raw quinn, one stream (bidirectional: the hubs' transport allows
//!   no unidirectional streams) between two endpoints with
//!   the hubs' TLS and transport settings, carrying the same byte count.
//! - throughput: the hub heard every ticket and digest page but no symbol (the
//!   worst case: every chunk whole from peers). Figure: object bytes / time
//!   from the first plan until every chunk is decoded.
//! - loss sweep: 5%, 10% and 20% independent loss of every datagram. Figures:
//!   repair bytes (everything peers sent) ÷ missing bytes ((K − held) × T per
//!   chunk when the multicast passed), and the time to complete.

use hubcast_clienthub::peers::{Fetcher, Server};
use hubcast_clienthub::store::Store;
use hubcast_clienthub::store_worker::StoreJob;
use hubcast_clienthub::StatusBoard;
use hubcast_keys::{ChannelKeys, Fingerprint, NodeId, NodeKey, SignerKeys, TrustAnchor};
use hubcast_protocol::announce::Announcement;
use hubcast_protocol::hub::{Config, Hub, HubEvent, Input, Output};
use hubcast_protocol::peer_wire::ChunkBitmap;
use hubcast_protocol::receiver::{Event, Receiver, ReceiverConfig};
use hubcast_protocol::repair::Outcome;
use hubcast_protocol::sender::{ObjectPlan, PreparedChunk};
use hubcast_protocol::store::StoredManifest;
use hubcast_protocol::verify::Signer;
use hubcast_protocol::wire;
use hubcast_protocol::ObjectId;
use hubcast_transport::quic::NodeEndpoint;
use rand::{Rng, SeedableRng};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const CHUNK: u32 = 1 << 20;
const T: u16 = 1280;
const OVERHEAD: f64 = 0.05;
const PEERS: usize = 3;
const LOOPBACK: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 0);
const EXPIRY: u64 = u64::MAX / 2;

/// A setup step that failed, or a figure that cannot be right: said, and
/// the bench exits 1.
type Error = Box<dyn std::error::Error + Send + Sync>;

struct Channel {
    anchor: TrustAnchor,
    channel_tag: u64,
    manifest: Vec<u8>,
    plan: ObjectPlan,
    data: Vec<u8>,
    /// Per chunk: one multicast round's datagrams.
    rounds: Vec<Vec<Vec<u8>>>,
}

fn channel(mib: u32) -> Channel {
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let keys = ChannelKeys::generate(&mut rng, 0, EXPIRY);
    let anchor = TrustAnchor::new(Fingerprint::of(&keys.root.verifying_key()));
    let signer = Signer::new(SignerKeys::load_from(&keys));
    let data: Vec<u8> = (0..u64::from(mib) * u64::from(CHUNK)).map(|_| rng.gen()).collect();
    let plan = ObjectPlan::new("bench".into(), ObjectId::of(&data), data.len() as u64, CHUNK, T, 1, EXPIRY);
    let rounds = (0..plan.chunk_count())
        .map(|i| {
            let range = plan.chunk_range(i);
            let chunk = &data[range.start as usize..range.end as usize];
            PreparedChunk::prepare(&signer, &plan.manifest, i, chunk).round_datagrams(
                signer.channel_tag(),
                OVERHEAD,
                0,
            )
        })
        .collect();
    let channel_tag = signer.channel_tag();
    Channel { anchor, channel_tag, manifest: signer.manifest_datagram(&plan.manifest), plan, data, rounds }
}

/// A serving peer: its store filled by a lossless receiver, a store thread
/// answering reads, a QUIC endpoint.
struct Peer {
    id: NodeId,
    addr: SocketAddr,
    _store_dir: tempfile::TempDir,
}

fn start_peer(ch: &Channel, cancel: &CancellationToken) -> Result<Peer, Error> {
    let dir = tempfile::tempdir()?;
    let (mut store, _) = Store::open(dir.path())?;
    let mut rx = Receiver::new(ch.anchor, ReceiverConfig::default());
    rx.handle_datagram(1, &ch.manifest);
    for d in ch.rounds.iter().flatten() {
        rx.handle_datagram(1, d);
    }
    rx.handle_datagram(1, &ch.manifest);
    let mut chunks = 0;
    while let Some(e) = rx.poll_event() {
        match e {
            Event::Manifest(m) => {
                let datagram = rx.manifest_datagram(&m.object_id).ok_or("the receiver keeps the manifest")?;
                let stored =
                    StoredManifest { object_id: m.object_id, datagram: datagram.to_vec(), received_unix: 1 };
                store.put_manifest(&stored)?
            }
            Event::ChunkComplete(c) => {
                store.put_chunk(&c)?;
                chunks += 1;
            }
        }
    }
    if chunks != ch.plan.chunk_count() {
        return Err(format!("a lossless peer decoded {chunks} of {} chunks", ch.plan.chunk_count()).into());
    }

    let (store_tx, mut store_rx) = mpsc::channel::<StoreJob>(64);
    std::thread::spawn(move || {
        while let Some(job) = store_rx.blocking_recv() {
            if let StoreJob::Read(r) = job {
                let _ = r
                    .reply
                    .send(hubcast_clienthub::store_worker::read_to_serve(&mut store, &r.req).ok().flatten());
            }
        }
    });
    // Nothing partial here: a peer that lacks a chunk refuses.
    let (partial_tx, _) = mpsc::channel(1);
    let server = Server::new(store_tx, partial_tx, 1e12, StatusBoard::default());
    let key = NodeKey::generate(&mut rand::thread_rng());
    let endpoint = Arc::new(NodeEndpoint::bind(LOOPBACK, &key)?);
    let addr = endpoint.local_addr()?;
    let services = hubcast_clienthub::dispatch::Services::new(server, None);
    tokio::spawn(hubcast_clienthub::dispatch::serve(endpoint, services, cancel.clone()));
    Ok(Peer { id: key.id(), addr, _store_dir: dir })
}

struct Repaired {
    elapsed: Duration,
    /// Bytes of every datagram peers sent.
    repair_bytes: u64,
    /// (K − symbols heard) × T, summed over chunks.
    missing_bytes: u64,
    /// From the multicast's last chunk until every chunk was decoded.
    after_multicast: Duration,
    requests: u64,
}

/// What the repairing hub heard of the multicast.
#[derive(Clone, Copy)]
enum Heard {
    /// The last chunk only (it joined as the multicast ended): every other
    /// chunk comes whole from peers, ticket and table pages included.
    Nothing,
    /// One round at `MULTICAST_CHUNK_EVERY` per chunk, each datagram lost
    /// with this probability; repair runs while the multicast goes on.
    Loss(f64),
}

/// 1 MiB every 8 ms: 1 Gbit/s of multicast.
const MULTICAST_CHUNK_EVERY: Duration = Duration::from_millis(8);

/// The hub: the real [`Hub`] machine, driven as the daemon's receive loop
/// drives it (multicast in, its fetches out on QUIC, each answer back in, its
/// timer), hearing the multicast as `heard` says, until every chunk is
/// decoded and correct. It learns the peers from their announcements.
async fn repair(ch: &Channel, peers: &[Peer], heard: Heard, seed: u64) -> Result<Repaired, Error> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let key = NodeKey::generate(&mut rand::thread_rng());
    let endpoint = Arc::new(NodeEndpoint::bind(LOOPBACK, &key)?);
    let mut config = Config::new(key.id(), endpoint.local_addr()?.port());
    config.seed = seed;
    let start = Instant::now();
    let mut hub = Hub::new(start, ch.anchor, config);
    let unix_ms = 1000;
    let input = |hub: &mut Hub, input: Input<'_>| hub.handle_input(Instant::now(), unix_ms, input);
    input(&mut hub, Input::Multicast(&ch.manifest));
    let chunks = ch.plan.chunk_count();
    let k = wire::source_symbols(CHUNK, T);
    // Every peer holds every chunk, and says so on the control group.
    let mut all = ChunkBitmap::new(chunks);
    (0..chunks).for_each(|i| all.set(i));
    for p in peers {
        let a = Announcement {
            channel_tag: ch.channel_tag,
            node_id: p.id.0,
            quic_port: p.addr.port(),
            loss: None,
            objects: vec![(ch.plan.manifest.object_id, all.clone())],
        };
        input(&mut hub, Input::Announcement { from: p.addr, datagram: &a.encode().0 });
    }
    let (mut fed, mut missing_bytes) = (0, 0u64);
    let loss = match heard {
        Heard::Nothing => {
            // The last chunk and the manifest after it tell the receiver the
            // multicast passed the object; every other chunk is missing whole.
            for d in ch.rounds.last().into_iter().flatten() {
                input(&mut hub, Input::Multicast(d));
            }
            input(&mut hub, Input::Multicast(&ch.manifest));
            (fed, missing_bytes) = (chunks, u64::from(chunks - 1) * u64::from(k) * u64::from(T));
            0.0
        }
        Heard::Loss(loss) => loss,
    };
    let fetcher = Fetcher::new(endpoint);
    let (done_tx, mut done_rx) = mpsc::channel(256);
    let (mut done, mut repair_bytes) = (0, 0u64);
    let mut feed_at = tokio::time::Instant::now();
    let mut multicast_end = start;
    loop {
        // Carry out what the machine says.
        while let Some(out) = hub.poll_output() {
            match out {
                Output::Store { event: Event::ChunkComplete(c), .. } => {
                    let range = ch.plan.chunk_range(c.index());
                    if c.data() != &ch.data[range.start as usize..range.end as usize] {
                        return Err(format!("chunk {} decoded to other bytes", c.index()).into());
                    }
                    done += 1;
                }
                Output::Fetch { id, peer, addr, req } => {
                    let (fetcher, done_tx) = (fetcher.clone(), done_tx.clone());
                    tokio::spawn(async move {
                        let _ = done_tx.send((id, fetcher.fetch(peer, addr, &req).await)).await;
                    });
                }
                Output::Naks { .. } | Output::Event(HubEvent::NoOrigin(_)) => {
                    return Err("the hub asked the origin, with three complete peers at hand".into())
                }
                _ => {}
            }
        }
        if done == chunks {
            break;
        }
        if fed < chunks && tokio::time::Instant::now() >= feed_at {
            let mut symbols = 0;
            for d in &ch.rounds[fed as usize] {
                if !rng.gen_bool(loss) {
                    symbols += u32::from(wire::decode_header(d).is_ok_and(|h| h.kind == wire::Kind::Symbol));
                    input(&mut hub, Input::Multicast(d));
                }
            }
            missing_bytes += u64::from(k.saturating_sub(symbols)) * u64::from(T);
            fed += 1;
            feed_at += MULTICAST_CHUNK_EVERY;
            if fed == chunks {
                input(&mut hub, Input::Multicast(&ch.manifest)); // the multicast has passed the object
                multicast_end = Instant::now();
            }
            continue;
        }
        let timeout = tokio::time::Instant::from_std(hub.poll_timeout());
        tokio::select! {
            Some((id, result)) = done_rx.recv() => {
                let result: Result<hubcast_protocol::peer_wire::DatagramFrames, Outcome> = result;
                let frames: Vec<&[u8]> = result.as_ref().map(|d| d.iter().collect()).unwrap_or_default();
                repair_bytes += frames.iter().map(|d| d.len() as u64).sum::<u64>();
                let answer = match &result {
                    Ok(_) => Ok(frames.as_slice()),
                    Err(o) => Err(*o),
                };
                input(&mut hub, Input::Fetched { id, answer });
            }
            _ = tokio::time::sleep_until(timeout) => input(&mut hub, Input::Timer),
            _ = tokio::time::sleep_until(feed_at), if fed < chunks => {}
        }
    }
    Ok(Repaired {
        elapsed: start.elapsed(),
        repair_bytes,
        missing_bytes,
        after_multicast: multicast_end.elapsed(),
        requests: hub.repair_stats().requests,
    })
}

/// Raw quinn: `bytes` over one bidirectional stream between two endpoints; bytes per second.
async fn raw_quinn(bytes: usize) -> Result<f64, Error> {
    let (a, b) = (NodeKey::generate(&mut rand::thread_rng()), NodeKey::generate(&mut rand::thread_rng()));
    let server = NodeEndpoint::bind(LOOPBACK, &b)?;
    let client = NodeEndpoint::bind(LOOPBACK, &a)?;
    let addr = server.local_addr()?;
    let receiving = tokio::spawn(async move {
        let conn = server.accept().await.ok_or("the endpoint closed")?.await?;
        let (_send, mut recv) = conn.accept_bi().await?;
        let mut buf = vec![0u8; 1 << 16];
        let mut n = 0;
        while let Some(k) = recv.read(&mut buf).await? {
            n += k;
        }
        Ok::<_, Error>((n, server))
    });
    let conn = client.connect(addr, b.id())?.await?;
    let payload = vec![0x5a_u8; 1 << 20];
    let start = Instant::now();
    let (mut send, _recv) = conn.open_bi().await?;
    let mut left = bytes;
    while left > 0 {
        let n = left.min(payload.len());
        send.write_all(&payload[..n]).await?;
        left -= n;
    }
    send.finish()?;
    let (n, _server) = receiving.await??;
    let elapsed = start.elapsed();
    if n != bytes {
        return Err(format!("raw quinn carried {n} of {bytes} bytes").into());
    }
    Ok(bytes as f64 / elapsed.as_secs_f64())
}

/// CPU seconds this process has used (user + system), from /proc.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are 14 and 15.
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    let ticks: f64 = fields.get(11..13).map_or(0.0, |f| f.iter().filter_map(|v| v.parse::<f64>().ok()).sum());
    ticks / 100.0
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() -> Result<(), Error> {
    let mib: u32 = std::env::var("HUBCAST_BENCH_MIB").ok().and_then(|v| v.parse().ok()).unwrap_or(64);
    let runs: u64 = std::env::var("HUBCAST_BENCH_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(3).max(1);
    let rt = tokio::runtime::Runtime::new()?;
    let ch = channel(mib);
    let bytes = ch.data.len();
    rt.block_on(async {
        let cancel = CancellationToken::new();
        let peers = (0..PEERS).map(|_| start_peer(&ch, &cancel)).collect::<Result<Vec<Peer>, Error>>()?;
        println!("{mib} MiB, chunks of 1 MiB, T = {T}, {PEERS} serving peers, median of {runs} runs");
        if std::env::var("HUBCAST_BENCH_ONLY").is_ok_and(|v| v == "repair") {
            for seed in 0..runs {
                let (cpu, p) = (cpu_seconds(), repair(&ch, &peers, Heard::Nothing, seed).await?);
                let cores = (cpu_seconds() - cpu) / p.elapsed.as_secs_f64();
                let rate = p.missing_bytes as f64 / p.elapsed.as_secs_f64() / 1e6;
                println!("  run {seed}: repair {rate:6.1} MB/s ({cores:.2} cores, {} requests)", p.requests);
            }
            cancel.cancel();
            return Ok(());
        }

        // Baseline and repair alternate, so the machine's noise falls on both.
        let (mut raw, mut rep, mut ratio) = (Vec::new(), Vec::new(), Vec::new());
        for seed in 0..runs {
            let (cpu, start) = (cpu_seconds(), Instant::now());
            let r = raw_quinn(bytes).await?;
            let raw_cores = (cpu_seconds() - cpu) / start.elapsed().as_secs_f64();
            let cpu = cpu_seconds();
            let p = repair(&ch, &peers, Heard::Nothing, seed).await?;
            let p_rate = p.missing_bytes as f64 / p.elapsed.as_secs_f64();
            println!(
                "  run {seed}: raw {:6.1} MB/s ({raw_cores:.2} cores), repair {:6.1} MB/s ({:.2} cores, {} requests)",
                r / 1e6,
                p_rate / 1e6,
                (cpu_seconds() - cpu) / p.elapsed.as_secs_f64(),
                p.requests,
            );
            raw.push(r);
            rep.push(p_rate);
            ratio.push(p_rate / r);
        }
        println!("raw quinn, one stream:            {:7.1} MB/s", median(raw) / 1e6);
        println!("peer repair of a missed object:   {:7.1} MB/s", median(rep) / 1e6);
        println!("ratio (median of runs):           {:7.2}   (target >= 0.5)", median(ratio));

        let secs = MULTICAST_CHUNK_EVERY.as_secs_f64() * f64::from(ch.plan.chunk_count());
        println!("multicast at 1 Gbit/s ({secs:.2} s), repair while it runs:");
        println!("loss  missing MB  repair MB  repair/missing  requests  done after the multicast");
        for loss in [0.05, 0.10, 0.20] {
            let r = repair(&ch, &peers, Heard::Loss(loss), 7).await?;
            println!(
                "{:3.0}%  {:10.2}  {:9.2}  {:14.3}  {:8}  {:.3} s",
                loss * 100.0,
                r.missing_bytes as f64 / 1e6,
                r.repair_bytes as f64 / 1e6,
                r.repair_bytes as f64 / r.missing_bytes.max(1) as f64,
                r.requests,
                r.after_multicast.as_secs_f64(),
            );
        }
        cancel.cancel();
        Ok(())
    })
}
