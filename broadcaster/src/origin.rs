//! The origin service on `--tracker ADDR` (QUIC, TLS bound to the broadcaster's
//! node key): the tracker (hubs register with their holdings, and ask for hubs
//! holding a chunk or for a random hub), and origin repair: hubs send NAKs for
//! chunks no peer could serve. NAKs are gathered
//! per chunk ([`OriginRepair`]); each resend carries fresh symbols and goes out
//! once, on the channel's control group (data port + 1), where every hub hears it
//! and none mistakes it for carousel progress. Resends are paced by a
//! [`RepairBudget`]: for an archive, a share of the channel's `--rate` while
//! the carousel sends (the carousel sends that much less), the whole rate
//! once it is idle, and never more than `--repair-rate` when it is given.
//!
//! Hubs send NAKs and loss reports as QUIC datagrams, each in a few copies
//! (a copy is dropped here, [`RecentNotes`]), and get no answer. On a stream,
//! a NAK stream carries at most `MAX_NAKS_PER_STREAM` NAK frames; the answer is
//! one Refuse frame per NAK refused (unknown object or chunk, too many waiting,
//! over the hub's rate), then the end of the stream. A malformed stream is reset;
//! [`MAX_BAD_STREAMS`] malformed streams or datagrams close the connection.

use crate::feedback::Feedback;
use crate::ingest::SourceFile;
use crate::status::StatusBoard;
use hubcast_daemon::Bucket;
use hubcast_keys::{NodeAddr, NodeId};
use hubcast_protocol::origin::{NakVerdict, OriginConfig, OriginNak, OriginRepair, Resend};
use hubcast_protocol::peer_wire::{
    self, ListedHub, PeerMessage, RefuseReason, MAX_NAKS_PER_STREAM, MAX_REGISTER_STATEMENTS,
};
use hubcast_protocol::sender::{round_count, ObjectPlan, Pacer, PreparedChunk, IP_UDP_OVERHEAD};
use hubcast_protocol::tracker::{HubAddr, Role, Tracker, TrackerConfig};
use hubcast_protocol::verify::Signer;
use hubcast_protocol::{wire, ObjectId};
use hubcast_transport::quic::{accept_each, NodeEndpoint};
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

pub const MAX_BAD_STREAMS: u32 = 3;
/// NAKs one hub may send per second (burst: as many).
const NAKS_PER_SEC: f64 = 200.0;
const STREAM_TIMEOUT: Duration = Duration::from_secs(2);
/// A stream's bytes: a registration with the holdings of a few large objects.
const MAX_STREAM_BYTES: usize = 1 << 20;
const CLOSE_MALFORMED: u32 = 1;
/// NAKs between the connections and the repair loop.
const NAK_QUEUE: usize = 4096;
/// Resends being read and coded at once.
const PREPARING: usize = 2;

/// Where the origin reads an object it resends.
#[derive(Clone)]
enum Source {
    File(PathBuf),
    /// A live segment, held while it is in the live window.
    Memory(Arc<Vec<u8>>),
}

/// What the origin can resend: every archive object's plan and file, and the
/// live segments still in the window (added and retired as the stream goes).
pub struct Catalog {
    objects: Mutex<HashMap<ObjectId, (ObjectPlan, Source)>>,
    expiry_secs: u64,
}

impl Catalog {
    pub fn new(plans: &[ObjectPlan], files: &[SourceFile], expiry_secs: u64) -> Catalog {
        let objects = plans
            .iter()
            .zip(files)
            .map(|(p, f)| (p.manifest.object_id, (p.clone(), Source::File(f.path.clone()))))
            .collect();
        Catalog { objects: Mutex::new(objects), expiry_secs }
    }

    /// The seeded files changed (a rescan): these are the objects from now
    /// on. Live segments stay.
    pub fn replace_files(&self, plans: &[ObjectPlan], files: &[SourceFile]) {
        let mut objects = self.lock();
        objects.retain(|_, (_, source)| matches!(source, Source::Memory(_)));
        for (p, f) in plans.iter().zip(files) {
            objects.insert(p.manifest.object_id, (p.clone(), Source::File(f.path.clone())));
        }
    }

    /// A live segment hubs may NAK until it is retired (or its deadline passes).
    pub fn add_segment(&self, plan: ObjectPlan, bytes: Arc<Vec<u8>>) {
        self.lock().insert(plan.manifest.object_id, (plan, Source::Memory(bytes)));
    }

    pub fn retire(&self, id: &ObjectId) {
        self.lock().remove(id);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ObjectId, (ObjectPlan, Source)>> {
        self.objects.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// K and N_max of a chunk a hub may NAK. Not a live segment past its
    /// deadline: no resend could be played.
    fn chunk(&self, object_id: &ObjectId, index: u32) -> Option<(u32, u32)> {
        let objects = self.lock();
        let (plan, _) = objects.get(object_id)?;
        let late = plan.manifest.live.is_some_and(|l| l.deadline_ms <= crate::unix_ms());
        if index >= plan.chunk_count() || late {
            return None;
        }
        let range = plan.chunk_range(index);
        let k = wire::source_symbols((range.end - range.start) as u32, plan.manifest.symbol_size);
        Some((k, wire::n_max(k)))
    }

    /// Read, code and sign a chunk again, and lay out the resend's datagrams.
    fn resend_datagrams(&self, signer: &Signer, r: &Resend) -> std::io::Result<Vec<Vec<u8>>> {
        let Some((plan, source)) = self.lock().get(&r.object_id).cloned() else { return Ok(Vec::new()) };
        let range = plan.chunk_range(r.index);
        let mut manifest = plan.manifest.clone();
        let buf = match &source {
            Source::File(path) => {
                let mut buf = vec![0; (range.end - range.start) as usize];
                std::fs::File::open(path)?.read_exact_at(&mut buf, range.start)?;
                let now = crate::unix_now();
                if manifest.expiry < now + self.expiry_secs / 2 {
                    manifest.expiry = now + self.expiry_secs; // as the carousel re-signs
                }
                buf
            }
            Source::Memory(bytes) => bytes[range.start as usize..range.end as usize].to_vec(),
        };
        let chunk = PreparedChunk::prepare(signer, &manifest, r.index, &buf);
        Ok(chunk.datagrams(signer.channel_tag(), &r.esis))
    }
}

/// How fast origin repair may send.
pub struct RepairBudget {
    /// Bytes per second of the whole channel.
    channel: u64,
    /// The share of `channel` repair may take while the carousel sends.
    share: f64,
    /// The operator's cap (`--repair-rate`).
    cap: Option<u64>,
    /// Whether the carousel pays for repair bytes ([`RepairBudget::take_unpaid`]).
    shared: bool,
    unpaid: AtomicU64,
    carousel_idle: AtomicBool,
}

impl RepairBudget {
    /// Repair shares the channel with a carousel that pays for it: `share`
    /// of `channel` while the carousel sends, all of it once it is idle.
    pub fn shared(channel: u64, share: f64, cap: Option<u64>) -> Arc<RepairBudget> {
        Arc::new(RepairBudget {
            channel,
            share: share.clamp(0.0, 1.0),
            cap,
            shared: true,
            unpaid: AtomicU64::new(0),
            carousel_idle: AtomicBool::new(false),
        })
    }

    /// Repair on top of the sender, at a fixed rate (a live channel, whose
    /// segments must not wait for repair).
    pub fn on_top(rate: u64) -> Arc<RepairBudget> {
        Arc::new(RepairBudget {
            channel: rate,
            share: 1.0,
            cap: None,
            shared: false,
            unpaid: AtomicU64::new(0),
            carousel_idle: AtomicBool::new(true),
        })
    }

    /// Bytes per second repair may send now.
    pub fn rate(&self) -> u64 {
        let share = if self.carousel_idle.load(Ordering::Relaxed) { 1.0 } else { self.share };
        let rate = (self.channel as f64 * share) as u64;
        self.cap.map_or(rate, |c| rate.min(c)).max(1)
    }

    /// The carousel has sent its last round.
    pub fn set_carousel_idle(&self, idle: bool) {
        self.carousel_idle.store(idle, Ordering::Relaxed);
    }

    fn spent(&self, bytes: u64) {
        if self.shared {
            self.unpaid.fetch_add(bytes, Ordering::Relaxed);
        }
    }

    /// Repair bytes (with their IP and UDP headers) sent since the last call:
    /// the carousel debits them from its own pacer.
    pub fn take_unpaid(&self) -> u64 {
        self.unpaid.swap(0, Ordering::Relaxed)
    }
}

/// A chunk: its object and index.
type ChunkKey = (ObjectId, u32);

/// What the origin service runs with.
pub struct Service {
    pub endpoint: Arc<NodeEndpoint>,
    pub catalog: Arc<Catalog>,
    pub signer: Arc<Signer>,
    /// The carousel's multicast socket; resends go to `control_group` on it.
    pub socket: Arc<tokio::net::UdpSocket>,
    pub control_group: SocketAddr,
    pub budget: Arc<RepairBudget>,
    /// Where hubs' loss reports go (an archive's carousel); `None`: they are
    /// taken and not used (a live channel's FEC is fixed).
    pub feedback: Option<Arc<Feedback>>,
    pub status: StatusBoard,
}

/// Run the origin service until `cancel`.
pub async fn run(service: Service, cancel: CancellationToken) {
    let Service { endpoint, catalog, signer, socket, control_group, budget, feedback, status } = service;
    let (nak_tx, mut nak_rx) = mpsc::channel::<OriginNak>(NAK_QUEUE);
    let shared = Shared {
        catalog: catalog.clone(),
        signer: signer.clone(),
        naks: nak_tx,
        feedback,
        status: status.clone(),
        tracker: Mutex::new((Tracker::new(TrackerConfig::default()), rand::SeedableRng::from_entropy())),
    };
    tokio::spawn(accept(endpoint, shared, cancel.clone()));

    let mut repair = OriginRepair::new(OriginConfig::default());
    let mut pacer = Pacer::new(budget.rate(), 64 << 10);
    // Each resend's datagrams, its chunk beside the last: the holdoff for
    // the chunk's NAKs starts when that one is out.
    let mut queue: VecDeque<(Vec<u8>, Option<ChunkKey>)> = VecDeque::new();
    let (ready_tx, mut ready_rx) = mpsc::channel::<(ChunkKey, Vec<Vec<u8>>)>(PREPARING);
    let mut preparing = 0usize;
    let mut statements_at: Option<Instant> = None;
    let mut waiting: VecDeque<Resend> = VecDeque::new();
    let (mut datagrams, mut bytes) = (0u64, 0u64);
    let mut last_error: Option<Instant> = None;
    loop {
        let now = Instant::now();
        while let Some(r) = repair.poll_resend(now) {
            debug!(object = %r.object_id, chunk = r.index, symbols = r.esis.len(), naks = r.naks, "resend");
            waiting.push_back(r);
        }
        while preparing < PREPARING {
            let Some(r) = waiting.pop_front() else { break };
            preparing += 1;
            let (catalog, signer, ready) = (catalog.clone(), signer.clone(), ready_tx.clone());
            tokio::task::spawn_blocking(move || {
                let out = catalog.resend_datagrams(&signer, &r).unwrap_or_else(|e| {
                    warn!(object = %r.object_id, chunk = r.index, "cannot resend: reading the file: {e}");
                    Vec::new()
                });
                let _ = ready.blocking_send(((r.object_id, r.index), out));
            });
        }
        let mut wake = repair.poll_timeout();
        pacer.set_rate(now, budget.rate());
        while let Some((d, _)) = queue.front() {
            match pacer.try_take(Instant::now(), d.len()) {
                Ok(()) => {
                    let Some((d, last_of)) = queue.pop_front() else { break };
                    if let Some((object_id, index)) = last_of {
                        repair.handle_sent(Instant::now(), object_id, index);
                    }
                    if let Err(e) = socket.send_to(&d, control_group).await {
                        if last_error.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                            last_error = Some(Instant::now());
                            warn!("sending repair to {control_group}: {e}");
                        }
                        continue;
                    }
                    datagrams += 1;
                    bytes += d.len() as u64;
                    budget.spent((d.len() + IP_UDP_OVERHEAD) as u64);
                }
                Err(at) => {
                    wake = Some(wake.map_or(at, |w| w.min(at)));
                    break;
                }
            }
        }
        let s = repair.stats();
        status.update(|st| {
            let o = &mut st.origin_repair;
            (o.naks, o.merged, o.late) = (s.naks, s.merged, s.late);
            (o.resends, o.resent_again, o.symbols) = (s.resends, s.resent_again, s.symbols);
            (o.datagrams, o.bytes) = (datagrams, bytes);
            (o.budget_bytes_per_sec, o.reported_loss) = (budget.rate(), s.last_loss);
        });
        let sleep = async {
            match wake {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            nak = nak_rx.recv() => {
                let Some(n) = nak else { break };
                let verdict = repair.handle_nak(Instant::now(), n);
                if verdict == NakVerdict::Full {
                    status.update(|st| st.origin_repair.refused += 1);
                }
            }
            ready = ready_rx.recv() => {
                preparing -= 1;
                let Some(((object_id, index), datagrams)) = ready else { continue };
                let n = datagrams.len();
                if n == 0 {
                    repair.handle_sent(Instant::now(), object_id, index); // nothing to send: not held back
                }
                // The root's statements go with repair too, once a second at
                // most: a hub that hears only the control group learns them.
                if n > 0 && statements_at.is_none_or(|t: Instant| t.elapsed() >= Duration::from_secs(1)) {
                    statements_at = Some(Instant::now());
                    queue.extend(signer.statements().into_iter().map(|d| (d, None)));
                }
                queue.extend(datagrams.into_iter().enumerate().map(|(i, d)| (d, (i + 1 == n).then_some((object_id, index)))));
            }
            _ = sleep => {}
            _ = cancel.cancelled() => break,
        }
    }
}

/// What every connection handler shares.
struct Shared {
    catalog: Arc<Catalog>,
    /// The root's statements a registering hub lacks go back in the answer.
    signer: Arc<Signer>,
    naks: mpsc::Sender<OriginNak>,
    feedback: Option<Arc<Feedback>>,
    status: StatusBoard,
    tracker: Mutex<(Tracker<NodeId>, rand::rngs::StdRng)>,
}

impl Shared {
    fn tracker<T>(&self, f: impl FnOnce(&mut Tracker<NodeId>, &mut rand::rngs::StdRng) -> T) -> Option<T> {
        let mut guard = self.tracker.lock().ok()?;
        let (tracker, rng) = &mut *guard;
        let out = f(tracker, rng);
        let (hubs, s) = (tracker.len(), tracker.stats());
        self.status.update(|st| {
            let t = &mut st.tracker;
            (t.hubs, t.registrations, t.reports, t.queries, t.refused, t.expired) =
                (hubs, s.registrations, s.reports, s.queries, s.refused, s.expired);
        });
        Some(out)
    }
}

async fn accept(endpoint: Arc<NodeEndpoint>, shared: Shared, cancel: CancellationToken) {
    let shared = Arc::new(shared);
    accept_each(&endpoint, cancel, move |conn, hub| connection(conn, hub, shared.clone())).await;
}

/// One hub's connection: its streams are NAKs or tracker requests.
struct Hub {
    id: NodeId,
    addr: SocketAddr,
    budget: Mutex<Bucket>,
}

async fn connection(conn: quinn::Connection, id: NodeId, shared: Arc<Shared>) {
    let bad = Arc::new(AtomicU32::new(0));
    let budget = Mutex::new(Bucket::new(NAKS_PER_SEC));
    let hub = Arc::new(Hub { id, addr: conn.remote_address(), budget });
    let streams = async {
        while let Ok((mut send, recv)) = conn.accept_bi().await {
            let (conn, shared, bad, hub) = (conn.clone(), shared.clone(), bad.clone(), hub.clone());
            tokio::spawn(async move {
                match stream(&mut send, recv, &hub, &shared).await {
                    Ok(()) => {}
                    Err(Some(e)) => {
                        let _ = send.reset(CLOSE_MALFORMED.into());
                        malformed(&conn, &hub, &shared, &bad, &e);
                    }
                    Err(None) => {}
                }
            });
        }
    };
    tokio::join!(streams, notes(&conn, &hub, &shared, &bad));
}

/// A malformed stream or datagram: counted; [`MAX_BAD_STREAMS`] of them
/// close the connection.
fn malformed(conn: &quinn::Connection, hub: &Hub, shared: &Shared, bad: &AtomicU32, e: &str) {
    shared.status.update(|s| s.origin_repair.bad_messages += 1);
    let n = bad.fetch_add(1, Ordering::Relaxed) + 1;
    debug!(hub = %hub.id, "malformed message ({e}), {n} from this hub");
    if n >= MAX_BAD_STREAMS {
        warn!(hub = %hub.id, "disconnecting hub: {n} malformed messages");
        conn.close(CLOSE_MALFORMED.into(), b"malformed messages");
    }
}

/// NAKs and loss reports that came as QUIC datagrams: the hub sends each
/// datagram a few times, and a copy of one taken within [`COPY_WINDOW`] is
/// dropped before it costs the hub's NAK budget.
async fn notes(conn: &quinn::Connection, hub: &Hub, shared: &Shared, bad: &AtomicU32) {
    let mut recent = RecentNotes::default();
    while let Ok(d) = conn.read_datagram().await {
        let messages = match peer_wire::decode_all(&d) {
            Ok(m) => m,
            Err(e) => {
                malformed(conn, hub, shared, bad, &e.to_string());
                continue;
            }
        };
        let now = Instant::now();
        let all = messages.len();
        let fresh: Vec<PeerMessage> = messages.into_iter().filter(|m| recent.first(now, m)).collect();
        if fresh.len() < all {
            shared.status.update(|s| s.origin_repair.copies += (all - fresh.len()) as u64);
        }
        let taken = match fresh.first() {
            None => Ok(()),
            Some(PeerMessage::Nak { .. }) => naks(&fresh, hub, shared, &mut Vec::new()),
            Some(&PeerMessage::LossReport { loss, verdict }) if fresh.len() == 1 => {
                loss_report(loss, verdict, hub, shared);
                Ok(())
            }
            _ => Err(Some("not NAKs or a loss report".into())),
        };
        if let Err(Some(e)) = taken {
            malformed(conn, hub, shared, bad, &e);
        }
    }
}

/// A copy of a NAK or loss report that came within this of the first is dropped.
/// Copies leave 15 ms apart; a hub asks again for a chunk after 2 s at the soonest.
const COPY_WINDOW: Duration = Duration::from_millis(500);
/// Notes remembered per hub; past this the expired ones are forgotten first.
const MAX_RECENT_NOTES: usize = 4096;

/// The notes of one hub taken in the last [`COPY_WINDOW`].
#[derive(Default)]
struct RecentNotes(HashMap<Option<ChunkKey>, Instant>);

impl RecentNotes {
    /// Whether `m` is the first of its copies (a NAK by its chunk; a loss
    /// report by being one).
    fn first(&mut self, now: Instant, m: &PeerMessage) -> bool {
        let key = match m {
            PeerMessage::Nak { object_id, chunk, .. } => Some((*object_id, *chunk)),
            _ => None,
        };
        if self.0.get(&key).is_some_and(|t| now.saturating_duration_since(*t) < COPY_WINDOW) {
            return false;
        }
        if self.0.len() >= MAX_RECENT_NOTES {
            self.0.retain(|_, t| now.saturating_duration_since(*t) < COPY_WINDOW);
            if self.0.len() >= MAX_RECENT_NOTES {
                self.0.clear(); // all recent: at worst a copy counts twice
            }
        }
        self.0.insert(key, now);
        true
    }
}

/// One stream: NAKs, a registration with the hub's holdings, or a query. The
/// answer is written and the stream finished. `Err(Some(why))` when it was
/// malformed, `Err(None)` when the hub went away.
async fn stream(
    send: &mut quinn::SendStream,
    mut recv: quinn::RecvStream,
    hub: &Hub,
    shared: &Shared,
) -> Result<(), Option<String>> {
    let body = match tokio::time::timeout(STREAM_TIMEOUT, recv.read_to_end(MAX_STREAM_BYTES)).await {
        Ok(Ok(b)) => b,
        Ok(Err(quinn::ReadToEndError::TooLong)) => return Err(Some("stream too long".into())),
        _ => return Err(None),
    };
    let messages = peer_wire::decode_all(&body).map_err(|e| Some(e.to_string()))?;
    let mut out = Vec::new();
    match messages.first() {
        Some(PeerMessage::Nak { .. }) => naks(&messages, hub, shared, &mut out)?,
        Some(&PeerMessage::Register { bridge, forest, feeds, root_version, revocations_version }) => {
            register(Role { bridge, forest, feeds }, &messages[1..], hub, shared)?;
            // The root's statements the hub lacks (none in the steady state):
            // a hub that hears neither the carousel nor the origin's repair
            // still learns a rotation or a revocation here.
            for d in
                shared.signer.statements_newer(root_version, revocations_version, MAX_REGISTER_STATEMENTS)
            {
                peer_wire::encode(&PeerMessage::Datagram(d), &mut out);
            }
        }
        Some(PeerMessage::HoldersRequest { object_id, chunk, limit }) if messages.len() == 1 => {
            let found = shared
                .tracker(|t, rng| {
                    t.holders(Instant::now(), *object_id, *chunk, Some(hub.id), (*limit).into(), rng)
                })
                .unwrap_or_default();
            peer_wire::encode(&PeerMessage::HubList(found.iter().map(listed).collect()), &mut out);
        }
        Some(PeerMessage::BridgesRequest { limit, leaving }) if messages.len() == 1 => {
            let leaving = leaving.map(NodeId);
            let found = shared
                .tracker(|t, rng| t.bridges(Instant::now(), Some(hub.id), (*limit).into(), rng, leaving))
                .unwrap_or_default();
            debug!(hub = %hub.id, listed = ?found.iter().map(|h| h.addr).collect::<Vec<_>>(), "bridges asked");
            peer_wire::encode(&PeerMessage::HubList(found.iter().map(listed).collect()), &mut out);
        }
        Some(&PeerMessage::LossReport { loss, verdict }) if messages.len() == 1 => {
            loss_report(loss, verdict, hub, shared)
        }
        Some(PeerMessage::ForestHubRequest) if messages.len() == 1 => {
            let found = shared.tracker(|t, rng| t.forest_hub(Instant::now(), Some(hub.id), rng)).flatten();
            peer_wire::encode(&PeerMessage::HubList(found.iter().map(listed).collect()), &mut out);
        }
        _ => return Err(Some("not a NAK, registration or query".into())),
    }
    send.write_all(&out).await.map_err(|_| None)?;
    send.finish().map_err(|_| None)?;
    Ok(())
}

fn loss_report(loss: u8, verdict: hubcast_protocol::rate::Verdict, hub: &Hub, shared: &Shared) {
    // Within the hub's NAK rate: a report costs the origin as little.
    let within = hub.budget.lock().map(|mut b| b.try_take()).unwrap_or(false);
    if let Some(f) = shared.feedback.as_ref().filter(|_| within) {
        f.report(loss, verdict);
    }
}

fn listed(h: &HubAddr<NodeId>) -> ListedHub {
    ListedHub { node_id: h.node.0, bridge: h.bridge, addr: h.addr }
}

/// Up to [`MAX_NAKS_PER_STREAM`] NAKs; a refusal goes back for each one not taken.
fn naks(
    messages: &[PeerMessage],
    hub: &Hub,
    shared: &Shared,
    out: &mut Vec<u8>,
) -> Result<(), Option<String>> {
    if messages.len() > MAX_NAKS_PER_STREAM {
        return Err(Some("too many NAKs in one stream".into()));
    }
    for m in messages {
        let PeerMessage::Nak { object_id, chunk, missing, loss, held } = m else {
            return Err(Some("NAKs mixed with other messages".into()));
        };
        let (object_id, chunk, missing, loss) = (*object_id, *chunk, *missing, *loss);
        let within = hub.budget.lock().map(|mut b| b.try_take()).unwrap_or(false);
        let verdict = match shared.catalog.chunk(&object_id, chunk) {
            None => Err(RefuseReason::NotHeld),
            Some(_) if !within => Err(RefuseReason::OverLimit),
            Some((k, n_max)) => {
                // What the carousel sends of a chunk a round, at the FEC now
                // (a live channel's is not known here: every ESI counts as fresh).
                let sent = shared.feedback.as_ref().map_or(0, |f| round_count(k, n_max, f.overhead(k)));
                let missing = u32::from(missing);
                let nak =
                    OriginNak { object_id, index: chunk, missing, loss, k, n_max, sent, held: held.clone() };
                shared.naks.try_send(nak).map_err(|_| RefuseReason::Busy)
            }
        };
        if let Err(reason) = verdict {
            shared.status.update(|s| s.origin_repair.refused += 1);
            peer_wire::encode(&PeerMessage::Refuse { object_id, chunk, reason }, out);
        }
    }
    Ok(())
}

/// A registration: the hub is alive at its connection's address, and holds
/// what its have-maps say.
fn register(role: Role, maps: &[PeerMessage], hub: &Hub, shared: &Shared) -> Result<(), Option<String>> {
    let now = Instant::now();
    shared
        .tracker(|t, _| {
            // Full, too many objects: counted by the tracker; the hub retries.
            if t.register(now, hub.id, hub.addr, role).is_err() {
                return Ok(());
            }
            for m in maps {
                let PeerMessage::HaveMap { object_id, complete, partial } = m else {
                    return Err(Some("a registration carries have-maps only".into()));
                };
                if !partial.is_empty() {
                    return Err(Some("a report lists complete chunks only".into()));
                }
                let _ = t.report(now, hub.id, *object_id, complete.clone());
            }
            Ok(())
        })
        .unwrap_or(Ok(()))
}

/// Bind the origin service's endpoint as the broadcaster's node key (kept in
/// the key directory). Returns it with the address hubs give as `--tracker`.
pub fn bind(
    addr: SocketAddr,
    state_dir: &std::path::Path,
) -> Result<(Arc<NodeEndpoint>, NodeAddr), OriginError> {
    let node = hubcast_keys::NodeKey::load_or_create(state_dir).map_err(OriginError::NodeKey)?;
    let endpoint = NodeEndpoint::bind(addr, &node).map_err(OriginError::Quic)?;
    let local = endpoint.local_addr().map_err(|source| OriginError::Io { addr, source })?;
    let at = NodeAddr { id: node.id(), addr: local };
    info!(bound = %at, "origin service on");
    Ok((Arc::new(endpoint), at))
}

#[derive(Debug, thiserror::Error)]
pub enum OriginError {
    #[error("the origin service's node key: {0}: give --state-dir a folder the broadcaster can write (the systemd unit gives /var/lib/hubcast-broadcaster), or make the key once at install time with `broadcaster node-id --keys DIR --state-dir DIR`")]
    NodeKey(hubcast_keys::KeyFileError),
    #[error("--tracker: {0}")]
    Quic(hubcast_transport::quic::QuicError),
    #[error("--tracker {addr}: {source}")]
    Io {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repair_takes_its_share_while_the_carousel_sends_and_the_channel_once_it_is_idle() {
        let b = RepairBudget::shared(1_000_000, 0.5, None);
        assert_eq!(b.rate(), 500_000);
        b.spent(1400);
        b.spent(600);
        assert_eq!((b.take_unpaid(), b.take_unpaid()), (2000, 0), "the carousel pays once");
        b.set_carousel_idle(true);
        assert_eq!(b.rate(), 1_000_000);
        let capped = RepairBudget::shared(1_000_000, 0.5, Some(300_000));
        assert_eq!(capped.rate(), 300_000);
        capped.set_carousel_idle(true);
        assert_eq!(capped.rate(), 300_000, "--repair-rate caps it");
        // A live channel's repair goes on top: nothing for the sender to pay.
        let live = RepairBudget::on_top(2_500_000);
        live.spent(1400);
        assert_eq!((live.rate(), live.take_unpaid()), (2_500_000, 0));
    }

    #[test]
    fn a_copy_of_a_note_within_the_window_is_dropped_and_a_later_ask_is_taken() {
        let nak = |chunk| PeerMessage::Nak {
            object_id: ObjectId([1; 32]),
            chunk,
            missing: 3,
            loss: 50,
            held: vec![],
        };
        let report = PeerMessage::LossReport { loss: 50, verdict: Default::default() };
        let t0 = Instant::now();
        let mut r = RecentNotes::default();
        assert!(r.first(t0, &nak(4)) && r.first(t0, &nak(5)) && r.first(t0, &report));
        let copy = t0 + Duration::from_millis(30);
        assert!(!r.first(copy, &nak(4)) && !r.first(copy, &report), "copies 15-30 ms later");
        assert!(r.first(t0 + COPY_WINDOW, &nak(4)), "the hub asking again (2 s later at the soonest)");
        for chunk in 0..2 * MAX_RECENT_NOTES as u32 {
            r.first(t0, &nak(1000 + chunk));
        }
        assert!(r.0.len() <= MAX_RECENT_NOTES, "bounded");
    }
}
