//! The hub daemon: multicast in, verified chunks to the store, completed objects
//! out to the export folder.
//!
//! Tasks (all owned; `run` returns only when they have ended):
//! - the receive loop (this task): socket → optional simulated loss →
//!   [`Receiver`] → events to the store worker;
//! - the store worker (a thread: it fsyncs): writes chunks and manifests, and
//!   exports objects when their last chunk lands;
//! - the HTTP listener, when configured.

use crate::bridge::{Feed, FeedEvent, FeedWant};
use crate::config::HubConfig;
use crate::live::LiveBoard;
use crate::peers::{Fetcher, PartialAsk, PeerTable, Server, StoreRead};
use crate::status::StatusBoard;
use crate::store::{Store, StoreError};
use hubcast_keys::{KeyFileError, NodeAddr, NodeId, TrustAnchor};
use hubcast_protocol::announce::{Announcement, MAX_ANNOUNCE_LEN};
use hubcast_protocol::peer_wire::{ChunkBitmap, DatagramFrames, ListedHub, MAX_NAKS_PER_STREAM};
use hubcast_protocol::receiver::{DropCounters, DropReason, Event, Receiver, ReceiverConfig};
use hubcast_protocol::repair::{Nak, Outcome, RepairConfig, Repairer};
use hubcast_protocol::serve::{answer_partial, ChunkRequest};
use hubcast_protocol::verify::VerifiedManifest;
use hubcast_protocol::wire::{self, Manifest};
use hubcast_protocol::ObjectId;
use hubcast_transport::quic::NodeEndpoint;
use hubcast_transport::{Interface, MulticastConfig, TransportError};
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// Datagrams read per wakeup before yielding.
const RECV_BATCH: usize = 64;
/// Events queued for the store worker before the receive loop waits for it.
const STORE_QUEUE: usize = 64;
const DROP_REPORT_EVERY: Duration = Duration::from_secs(10);
/// At most one store warning per this interval; the rest are counted.
const STORE_WARN_EVERY: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error("--trust: {0}")]
    Trust(#[from] KeyFileError),
    #[error("node key: {0}")]
    NodeKey(KeyFileError),
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("--simulate-loss {0}: must be from 0 up to (not including) 1")]
    BadLoss(f64),
    #[error("HTTP listener on {addr}: {source} (is another hub using that port? pick another with --http)")]
    Http {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "peer repair: {0} (pick another address with --peer-listen, or turn it off with --no-peer-repair)"
    )]
    Peer(String),
    #[error("--tracker {0}")]
    Tracker(String),
    #[error("receiving on {group}: {source}")]
    Recv {
        group: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

pub fn unix_now() -> u64 {
    unix_ms() / 1000
}

pub use hubcast_daemon::unix_ms;

/// Run a hub until `cancel`. Status is published on `status` as it goes.
pub async fn run(cfg: HubConfig, status: StatusBoard, cancel: CancellationToken) -> Result<(), HubError> {
    let anchor = TrustAnchor::from_arg(&cfg.trust)?;
    if !(0.0..1.0).contains(&cfg.simulate_loss) {
        return Err(HubError::BadLoss(cfg.simulate_loss));
    }
    let mut mc = MulticastConfig::new(cfg.group);
    mc.interface = cfg.iface.parse::<Interface>()?;
    mc.source = cfg.source;
    // A hub told there is no multicast takes the feed from a bridge from the start.
    let socket = if cfg.no_multicast { None } else { Some(hubcast_transport::multicast::receiver(&mc)?) };

    let store_dir = cfg.store.clone();
    let (store, report) = tokio::task::spawn_blocking(move || Store::open(&store_dir))
        .await
        .map_err(|e| StoreError::Io { path: cfg.store.clone(), source: std::io::Error::other(e) })??;
    let node = hubcast_keys::NodeKey::load_or_create(&cfg.store).map_err(HubError::NodeKey)?;
    status.init(node.id().to_string(), anchor.fingerprint.to_string(), cfg.group.to_string());
    status.with_chunks(|c| {
        c.stored_at_start = report.chunks;
        c.stored = report.chunks;
    });
    let mut receiver = Receiver::new(anchor, ReceiverConfig::default());
    let live = LiveBoard::new(cfg.live_buffer_secs);
    let (store, manifests) = tokio::task::spawn_blocking(move || drop_stale_segments(store))
        .await
        .map_err(|e| StoreError::Io { path: cfg.store.clone(), source: std::io::Error::other(e) })??;
    for m in &manifests {
        receiver.remember_manifest(m.clone());
    }
    for (id, index) in store.chunks()? {
        receiver.mark_complete(id, index);
    }
    info!(store = %cfg.store.display(), manifests = report.manifests, chunks = report.chunks,
        orphans_removed = report.orphans_removed, group = %cfg.group, iface = %mc.interface, "hub started");

    let http = match cfg.http {
        Some(addr) => {
            let listener = hubcast_transport::tcp::listen(addr)
                .await
                .map_err(|source| HubError::Http { addr, source })?;
            info!(%addr, "status on http://{addr}/api/status");
            let state = crate::http::AppState { status: status.clone(), live: live.clone() };
            Some(tokio::spawn(crate::http::serve(listener, state, cancel.clone())))
        }
        None => None,
    };

    let (tx, rx) = mpsc::channel(STORE_QUEUE);
    // Chunks the worker could not store go back, so the receiver collects them again.
    let (unstored_tx, mut unstored_rx) = mpsc::channel(STORE_QUEUE);
    let worker = {
        let status = status.clone();
        let export = cfg.export.clone();
        let manifests = manifests.iter().map(|m| (m.object_id, (**m).clone())).collect();
        let live = live.clone();
        std::thread::Builder::new()
            .name("store".into())
            .spawn(move || store_worker(store, rx, unstored_tx, status, export, manifests, live))
            .map_err(|source| HubError::Store(StoreError::Io { path: "store thread".into(), source }))?
    };

    let peers = if cfg.peer_repair {
        let holdings = manifests.iter().map(|m| (m.object_id, completed(&receiver, m))).collect();
        Some(start_peers(
            &cfg,
            &mc,
            &node,
            anchor.fingerprint.channel_tag(),
            holdings,
            &tx,
            &status,
            &cancel,
        )?)
    } else {
        None
    };

    let mut lp = Loop {
        cfg: &cfg,
        receiver,
        store: &tx,
        status: &status,
        received: 0,
        simulated: 0,
        peers,
        started: Instant::now(),
        last_multicast: None,
        last_origin_multicast: None,
        position: None,
        live,
    };
    let result = receive_loop(&mut lp, socket.as_ref(), &mut unstored_rx, &cancel).await;
    drop(lp);
    drop(tx);
    let _ = tokio::task::spawn_blocking(move || worker.join()).await;
    cancel.cancel();
    if let Some(h) = http {
        let _ = h.await;
    }
    result
}

/// Bind the QUIC endpoint, start serving peers, join the control group.
#[allow(clippy::too_many_arguments)]
fn start_peers(
    cfg: &HubConfig,
    mc: &MulticastConfig,
    node: &hubcast_keys::NodeKey,
    channel_tag: u64,
    holdings: BTreeMap<ObjectId, ChunkBitmap>,
    store: &mpsc::Sender<StoreJob>,
    status: &StatusBoard,
    cancel: &CancellationToken,
) -> Result<PeerSide, HubError> {
    let listen = cfg.peer_listen.unwrap_or(match mc.interface {
        Interface::V4(a) => SocketAddr::from((a, 0)),
        Interface::V6Index(_) => SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 0)),
    });
    let origin = cfg.tracker.as_deref().map(str::parse::<NodeAddr>).transpose().map_err(HubError::Tracker)?;
    let endpoint = Arc::new(NodeEndpoint::bind(listen, node).map_err(|e| HubError::Peer(e.to_string()))?);
    let quic = endpoint.local_addr().map_err(|e| HubError::Peer(e.to_string()))?;
    let mut control_cfg = mc.clone();
    control_cfg.group = SocketAddr::new(mc.group.ip(), mc.group.port().wrapping_add(1));
    let control = hubcast_transport::multicast::receiver(&control_cfg)?;
    let control_out = hubcast_transport::multicast::sender(&control_cfg)?;

    // Serving: stored chunks through the store worker, partial ones through the loop.
    let (partial_tx, partial_rx) = mpsc::channel(STORE_QUEUE);
    let upload = cfg.upload_rate * 1e6 / 8.0;
    // Bridges serve subscriptions from the feed; --remulticast sends it on the LAN.
    let feed = (cfg.bridge || cfg.remulticast.is_some() || cfg.stripes > 0)
        .then(|| Feed::new(cfg.back_buffer(), cfg.bridge_fanout));
    let server = Server::new(
        store.clone(),
        partial_tx,
        upload,
        status.clone(),
        feed.clone().filter(|_| cfg.bridge || cfg.stripes > 0),
    );
    let remulticasting = Arc::new(AtomicBool::new(false));
    let remulticast_bytes = Arc::new(AtomicU64::new(0));
    if let (Some(group), Some(feed)) = (cfg.remulticast, &feed) {
        let mut out = MulticastConfig::new(group);
        out.interface = mc.interface;
        let socket = hubcast_transport::multicast::sender(&out)?;
        info!(%group, "while fed by a bridge, the feed goes out again as multicast on {group}");
        let task = crate::bridge::remulticast(
            feed.clone(),
            server.clone(),
            socket,
            group,
            remulticasting.clone(),
            upload,
            remulticast_bytes.clone(),
            cancel.clone(),
        );
        tokio::spawn(task);
    }
    tokio::spawn(crate::peers::serve(endpoint.clone(), server.clone(), cancel.clone()));
    info!(%quic, control = %control_cfg.group, upload_mbit = cfg.upload_rate,
        origin = %origin.map_or("from the channel's manifests".into(), |o| o.to_string()), "peer repair on");
    if let Some(o) = origin {
        status.set_tracker(o.to_string(), "--tracker");
    }

    // The desert side: a task that keeps a subscription to a bridge while the
    // loop wants one.
    let (want, want_rx) = watch::channel(FeedWant::default());
    let (feed_tx, feed_rx) = mpsc::channel(64);
    let fixed: Vec<NodeAddr> = cfg.bridge_peers.iter().filter_map(|b| b.parse::<NodeAddr>().ok()).collect();
    let fetcher = Fetcher::new(endpoint.clone());
    let (position, position_rx) = watch::channel(None);
    // The tracker as known now (--tracker) and later (the manifests): a
    // forest hub joins through a hub it names.
    let (tracker, tracker_rx) = watch::channel(origin);
    if cfg.stripes > 0 {
        // The stripe forest: a bridge is its root; a desert hub joins it at
        // its first --bridge-peer, and takes its stripes instead of a feed.
        let me_addr = match (quic.ip().is_unspecified(), mc.interface) {
            (true, Interface::V4(ip)) => SocketAddr::new(ip.into(), quic.port()),
            _ => quic,
        };
        let peer = |a: &NodeAddr| hubcast_protocol::peer_wire::ForestPeer { node_id: a.id.0, addr: a.addr };
        let root = if cfg.bridge { None } else { fixed.first().map(peer) };
        let forest = crate::forest::Forest {
            endpoint: endpoint.clone(),
            fetcher: fetcher.clone(),
            me: hubcast_protocol::peer_wire::ForestPeer { node_id: node.id().0, addr: me_addr },
            root,
            stripes: cfg.stripes,
            events: feed_tx.clone(),
            status: status.clone(),
            position: position_rx,
            tracker: tracker_rx,
        };
        server.set_forest(crate::forest::start(forest, cancel.clone()));
    }
    if cfg.stripes == 0 || cfg.bridge {
        tokio::spawn(crate::bridge::follow(endpoint.clone(), fixed, want_rx, feed_tx, cancel.clone()));
    }
    status.with_feed(|f| {
        f.mode = match (cfg.no_multicast, cfg.stripes > 0 && !cfg.bridge) {
            (_, true) => "forest",
            (true, false) => "searching",
            (false, false) => "multicast",
        }
    });

    let (done_tx, done_rx) = mpsc::channel(256);
    let (lookup_tx, lookup_rx) = mpsc::channel(64);
    Ok(PeerSide {
        feed,
        want,
        feed_rx,
        bridge_bytes: 0,
        feeding: None,
        bridge_strikes: HashMap::new(),
        last_no_bridge_warning: None,
        searching_since: None,
        advertised: false,
        in_forest: cfg.stripes > 0,
        tracker,
        naks_withheld: 0,
        remulticasting,
        remulticast_bytes,
        position,
        repairer: Repairer::new(RepairConfig::default(), rand::random()),
        table: PeerTable::default(),
        fetcher,
        server,
        done_tx,
        done_rx,
        lookup_tx,
        lookup_rx,
        partial_rx,
        control,
        control_out,
        control_group: control_cfg.group,
        node_id: node.id(),
        quic_port: quic.port(),
        channel_tag,
        holdings,
        peer_bytes: 0,
        origin_from_flag: origin.is_some(),
        origin_bytes: 0,
        last_registered: None,
        last_nak_warning: None,
        announce_soon: false,
    })
}

/// Jobs for the store worker: events to store, reads for serving peers, and
/// live segments that left the back buffer.
pub enum StoreJob {
    Event(Event),
    Read(StoreRead),
    Retire(Vec<ObjectId>),
}

/// A repair request that ended, back from its fetch task.
struct FetchDone {
    id: u64,
    peer: NodeId,
    object_id: ObjectId,
    index: u32,
    result: Result<DatagramFrames, Outcome>,
}

/// The tracker's answer to a lookup: hubs holding the chunk complete.
struct LookupDone {
    object_id: ObjectId,
    index: u32,
    hubs: Result<Vec<ListedHub>, Outcome>,
}

/// Peer repair, when enabled: everything the receive loop needs for it.
struct PeerSide {
    repairer: Repairer<NodeId>,
    table: PeerTable,
    fetcher: Arc<Fetcher>,
    server: Arc<Server>,
    done_tx: mpsc::Sender<FetchDone>,
    done_rx: mpsc::Receiver<FetchDone>,
    lookup_tx: mpsc::Sender<LookupDone>,
    lookup_rx: mpsc::Receiver<LookupDone>,
    partial_rx: mpsc::Receiver<PartialAsk>,
    control: tokio::net::UdpSocket,
    control_out: tokio::net::UdpSocket,
    control_group: SocketAddr,
    node_id: NodeId,
    quic_port: u16,
    channel_tag: u64,
    /// What this hub holds complete, announced to peers.
    holdings: BTreeMap<ObjectId, ChunkBitmap>,
    /// Verified symbol bytes peers served.
    peer_bytes: u64,
    /// `--tracker` named the origin: the manifests' tracker is not taken.
    origin_from_flag: bool,
    /// Verified symbol bytes of the origin's multicast repair.
    origin_bytes: u64,
    /// When this hub last registered with the tracker (the origin service).
    last_registered: Option<Instant>,
    last_nak_warning: Option<Instant>,
    announce_soon: bool,
    /// The chunks this hub completes, for `--bridge` subscribers and for
    /// `--remulticast`.
    feed: Option<Arc<Feed>>,
    /// What the desert side's task should do, and what it reports.
    want: watch::Sender<FeedWant>,
    feed_rx: mpsc::Receiver<FeedEvent>,
    /// Verified symbol bytes that came in bridge feeds.
    bridge_bytes: u64,
    /// The bridge feeding this hub now.
    feeding: Option<NodeAddr>,
    bridge_strikes: HashMap<NodeId, u32>,
    last_no_bridge_warning: Option<Instant>,
    /// Since when the feed task has found no bridge to ask.
    searching_since: Option<Instant>,
    /// Registered with the tracker as a bridge.
    advertised: bool,
    /// Registers with the tracker as a hub of the stripe forest.
    in_forest: bool,
    /// The origin service (tracker, and where NAKs go), as known now: from
    /// `--tracker`, or later the manifests. The forest task watches it.
    tracker: watch::Sender<Option<NodeAddr>>,
    /// NAKs not sent: this hub did not hear the origin's multicast.
    naks_withheld: u64,
    /// `--remulticast` sends the feed on the LAN now (this hub is fed by a
    /// bridge), and the bytes it sent.
    remulticasting: Arc<AtomicBool>,
    remulticast_bytes: Arc<AtomicU64>,
    /// The chunk the channel last brought, for the forest's stripe
    /// subscriptions to resume from.
    position: watch::Sender<Option<(ObjectId, u32)>>,
}

/// Announcements and the origin's repair datagrams both fit.
const CONTROL_BUF: usize =
    if MAX_ANNOUNCE_LEN > wire::MAX_DATAGRAM { MAX_ANNOUNCE_LEN } else { wire::MAX_DATAGRAM } + 1;

/// How often the repairer looks at what is missing.
const REPAIR_TICK: Duration = Duration::from_millis(50);
/// Multicast or bridge is decided every this many repair ticks (250 ms).
const FEED_MODE_EVERY_TICKS: u32 = 5;
const NAK_WARN_EVERY: Duration = Duration::from_secs(30);
/// A hub registers with the tracker this often (it forgets hubs after 30 s).
const REGISTER_EVERY: Duration = Duration::from_secs(10);
/// Hubs one tracker lookup asks for: more than the peers a chunk's repair asks
/// at once, so some are left when one fails.
const LOOKUP_LIMIT: u8 = 8;
/// Objects whose holdings one registration reports.
const MAX_REPORTED_OBJECTS: usize = 64;
/// A registration's bytes, within what the tracker reads of one stream (1 MiB).
const MAX_REPORT_BYTES: usize = 900 << 10;

/// The receive loop: multicast in, peers' answers in, requests out.
struct Loop<'a> {
    cfg: &'a HubConfig,
    receiver: Receiver,
    store: &'a mpsc::Sender<StoreJob>,
    status: &'a StatusBoard,
    received: u64,
    simulated: u64,
    peers: Option<PeerSide>,
    started: Instant,
    /// When a multicast datagram last arrived (one this hub relayed itself
    /// with --remulticast does not count).
    last_multicast: Option<Instant>,
    /// When a multicast datagram the broadcaster sent (not relayed) last arrived.
    last_origin_multicast: Option<Instant>,
    /// The chunk the channel (multicast or feed) last brought: where a new
    /// subscription to a bridge starts.
    position: Option<(ObjectId, u32)>,
    live: LiveBoard,
}

impl Loop<'_> {
    /// Send the receiver's events to the store worker. `false` once it is gone.
    async fn drain_events(&mut self) -> bool {
        while let Some(event) = self.receiver.poll_event() {
            // Counters first: a status that shows the object complete also
            // shows the bytes that completed it.
            self.record();
            let mut fed_chunk = None;
            if let Some(p) = self.peers.as_mut() {
                p.note(&event, &self.receiver);
                if matches!(event, Event::Manifest(_)) {
                    p.learn_tracker(self.receiver.tracker(), self.status);
                }
                if let Some(feed) = p.feed.clone() {
                    match &event {
                        Event::Manifest(m) => {
                            if let Some(d) = self.receiver.manifest_datagram(&m.object_id) {
                                feed.manifest(m.object_id, d);
                                if m.size == 0 {
                                    feed.empty_object(m.object_id);
                                }
                            }
                        }
                        Event::ChunkComplete(c) => {
                            let geometry = wire::peek_ticket_geometry(c.ticket());
                            fed_chunk = geometry.map(|(len, t)| (feed, c.object_id(), c.index(), len, t));
                        }
                    }
                }
            }
            if self.store.send(StoreJob::Event(event)).await.is_err() {
                return false;
            }
            // After the store job: a subscriber's read of it queues behind it.
            if let Some((feed, object_id, index, len, t)) = fed_chunk {
                feed.chunk(object_id, index, len, t);
            }
        }
        true
    }

    fn record(&self) {
        self.status.record_receiver(
            self.receiver.stats(),
            self.receiver.drops(),
            self.received,
            self.simulated,
        );
    }

    /// The wall clock for live segments: the receiver stops collecting those
    /// past their deadline, the board decides them, and the segments that
    /// left the back buffer leave the store and the holdings announced.
    async fn live_tick(&mut self) -> bool {
        let now = unix_ms();
        self.receiver.handle_time(now);
        self.live.tick(now);
        let retired = self.live.take_retired();
        if retired.is_empty() {
            return true;
        }
        if let Some(p) = self.peers.as_mut() {
            for id in &retired {
                p.holdings.remove(id);
            }
        }
        self.store.send(StoreJob::Retire(retired)).await.is_ok()
    }

    /// Plan repair with what is missing now and start the requests.
    fn plan_repair(&mut self) {
        let Some(p) = self.peers.as_mut() else { return };
        let now = Instant::now();
        let needs = self.receiver.needs(64);
        let table = &p.table;
        p.repairer.handle_tick(now, &needs, |n| table.candidates(now, n.object_id, n.index));
        while let Some(r) = p.repairer.poll_request() {
            let Some(addr) = p.table.addr(&r.peer) else {
                p.repairer.handle_response(r.id, Outcome::Failed);
                continue;
            };
            let req = ChunkRequest { object_id: r.object_id, index: r.index, table: r.table, esis: r.esis };
            let (fetcher, done) = (p.fetcher.clone(), p.done_tx.clone());
            tokio::spawn(async move {
                let result = fetcher.fetch(r.peer, addr, &req).await;
                let _ = done
                    .send(FetchDone {
                        id: r.id,
                        peer: r.peer,
                        object_id: req.object_id,
                        index: req.index,
                        result,
                    })
                    .await;
            });
        }
        let mut naks: Vec<Nak> = std::iter::from_fn(|| p.repairer.poll_nak()).collect();
        // The origin repairs by multicast on the island it sends to: a hub
        // that does not hear the origin's multicast now (a desert hub, one fed
        // by a bridge or a relay) would never hear the answer. It repairs from
        // peers and its bridge only.
        let after = Duration::from_secs(self.cfg.desert_after_secs);
        if self.last_origin_multicast.is_none_or(|t| t.elapsed() >= after) {
            p.naks_withheld += naks.len() as u64;
            naks.clear();
        }
        match (p.origin(), naks.first()) {
            (_, None) => {}
            (Some(origin), Some(_)) => {
                for batch in naks.chunks(MAX_NAKS_PER_STREAM) {
                    let (fetcher, status, batch) = (p.fetcher.clone(), self.status.clone(), batch.to_vec());
                    tokio::spawn(async move {
                        let failed = match fetcher.send_naks(origin, &batch).await {
                            Ok(refused) => refused,
                            Err(_) => batch.len() as u64,
                        };
                        if failed > 0 {
                            debug!(%origin, failed, "NAKs refused or not delivered; the hubs retry");
                            status.origin_nak_failed(failed);
                        }
                    });
                }
            }
            (None, Some(nak)) => {
                if p.last_nak_warning.is_none_or(|t| t.elapsed() >= NAK_WARN_EVERY) {
                    p.last_nak_warning = Some(now);
                    warn!(object = %nak.object_id, chunk = nak.index, missing = nak.missing,
                        "no peer can repair this chunk and no origin is known (--tracker); it waits for the next carousel round");
                }
            }
        }
        // Chunks no peer at hand holds: ask the tracker who does.
        while let Some(l) = p.repairer.poll_lookup() {
            let Some(tracker) = p.origin() else { continue };
            let (fetcher, done) = (p.fetcher.clone(), p.lookup_tx.clone());
            tokio::spawn(async move {
                let hubs = fetcher.holders(tracker, l.object_id, l.index, LOOKUP_LIMIT).await;
                let _ = done.send(LookupDone { object_id: l.object_id, index: l.index, hubs }).await;
            });
        }
        while p.repairer.poll_repaired().is_some() {}
    }

    /// The tracker named hubs holding a chunk: they become candidates for it.
    fn on_lookup_done(&mut self, done: LookupDone) {
        let Some(p) = self.peers.as_mut() else { return };
        let Ok(hubs) = done.hubs else {
            debug!(object = %done.object_id, chunk = done.index, "tracker lookup failed; again later");
            self.status.tracker_answer(None);
            return;
        };
        let now = Instant::now();
        let others: Vec<&ListedHub> = hubs.iter().filter(|h| h.node_id != p.node_id.0).collect();
        for h in &others {
            p.table.listed(now, NodeId(h.node_id), h.addr, done.object_id, done.index);
        }
        self.status.tracker_answer(Some(others.len()));
        if !others.is_empty() {
            self.plan_repair();
        }
    }

    /// A peer's answer: check it like multicast, credit or strike the peer.
    async fn on_fetch_done(&mut self, done: FetchDone) -> bool {
        let Some(p) = self.peers.as_mut() else { return true };
        let before = (
            self.receiver.stats().symbol_bytes_accepted,
            self.receiver.drops().get(DropReason::DigestMismatch),
        );
        let outcome = match &done.result {
            Ok(datagrams) => {
                let now = unix_now();
                for d in datagrams.iter() {
                    self.receiver.handle_repair_datagram(now, d);
                }
                Outcome::Served
            }
            Err(outcome) => *outcome,
        };
        // Check this chunk's symbols now, so what they earn is this peer's.
        self.receiver.settle_chunk(done.object_id, done.index);
        let gained = self.receiver.stats().symbol_bytes_accepted - before.0;
        let mismatches = self.receiver.drops().get(DropReason::DigestMismatch) - before.1;
        p.peer_bytes += gained;
        p.server.credit(&done.peer, gained);
        if mismatches > 0 {
            p.table.strike(Instant::now(), &done.peer, mismatches.min(u64::from(u32::MAX)) as u32);
        }
        p.repairer.handle_response(done.id, outcome);
        self.status.record_peer_bytes(p.peer_bytes);
        if !self.drain_events().await {
            return false;
        }
        self.plan_repair();
        true
    }

    /// The origin's repair, heard on the control group: checked like multicast,
    /// counted as the origin's.
    async fn on_origin_repair(&mut self, datagrams: &[Vec<u8>]) -> bool {
        let before = self.receiver.stats().symbol_bytes_accepted;
        let now = unix_now();
        let mut chunks = Vec::new();
        for d in datagrams {
            self.receiver.handle_repair_datagram(now, d);
            let key = wire::decode_header(d).ok().and_then(|h| wire::peek_chunk(d, h.kind));
            if let Some(key) = key.filter(|k| !chunks.contains(k)) {
                chunks.push(key);
            }
        }
        for (object_id, index) in chunks {
            self.receiver.settle_chunk(object_id, index);
        }
        if let Some(p) = self.peers.as_mut() {
            p.origin_bytes += self.receiver.stats().symbol_bytes_accepted - before;
            self.status.record_origin_bytes(p.origin_bytes);
        }
        self.drain_events().await
    }

    /// What the desert side's task reports: a subscription, the feed's
    /// datagrams (checked here like multicast, counted as the bridge's), its end.
    async fn on_feed_event(&mut self, event: FeedEvent) -> bool {
        let Some(p) = self.peers.as_mut() else { return true };
        let now = Instant::now();
        match event {
            FeedEvent::Subscribed(bridge) => {
                info!(%bridge, resume = ?self.position, "taking the channel's feed from a bridge");
                p.feeding = Some(bridge);
                p.searching_since = None;
                // From its first chunk on, the feed goes out on the LAN too.
                p.remulticasting.store(true, Ordering::Relaxed);
                p.table.feeding(now, bridge.id, bridge.addr, true);
                self.status.with_feed(|f| {
                    f.mode = "bridge";
                    f.bridge = Some(bridge.to_string());
                    f.subscriptions += 1;
                });
            }
            FeedEvent::Datagrams(bridge, datagrams) => {
                let before = (self.receiver.stats().symbol_bytes_accepted, self.receiver.drops().clone());
                let unix = unix_now();
                let mut touched = Vec::new();
                for d in &datagrams {
                    self.receiver.handle_datagram(unix, d);
                    let key = wire::decode_header(d).ok().and_then(|h| wire::peek_chunk(d, h.kind));
                    if key.is_some() && touched.last() != Some(&key) {
                        touched.push(key);
                    }
                }
                // A feed (or a stripe) brings a chunk's symbols together: a
                // chunk holding K of them decodes now, not when the next
                // chunk or the idle tick comes (a live segment's last chunk
                // would wait for the next segment).
                for (object_id, index) in touched.into_iter().flatten() {
                    self.receiver.settle_chunk(object_id, index);
                }
                let last = datagrams
                    .iter()
                    .rev()
                    .find_map(|d| wire::decode_header(d).ok().and_then(|h| wire::peek_chunk(d, h.kind)));
                self.position = last.or(self.position);
                if let Some(p) = self.peers.as_ref() {
                    p.position.send_replace(self.position);
                }
                if !self.drain_events().await {
                    return false;
                }
                let Some(p) = self.peers.as_mut() else { return true };
                let gained = self.receiver.stats().symbol_bytes_accepted - before.0;
                p.bridge_bytes += gained;
                p.server.credit(&bridge, gained);
                if let Some(b) = p.feeding.filter(|b| b.id == bridge) {
                    p.table.feeding(now, b.id, b.addr, true);
                }
                self.status.record_bridge_bytes(p.bridge_bytes);
                let strikes = crate::bridge::strikes(&before.1, self.receiver.drops());
                if strikes > 0 {
                    p.strike_bridge(bridge, strikes, self.status);
                }
            }
            FeedEvent::Ended { bridge, why } => {
                info!(%bridge, "the bridge's feed ended: {why}");
                if p.feeding.is_some_and(|b| b.id == bridge) {
                    p.feeding = None;
                    p.remulticasting.store(false, Ordering::Relaxed);
                }
                if let Some(addr) = p.table.addr(&bridge) {
                    p.table.feeding(now, bridge, addr, false);
                }
                self.status.with_feed(|f| {
                    f.ended += 1;
                    f.bridge = None;
                    if f.mode == "bridge" {
                        f.mode = "searching";
                    }
                });
            }
            FeedEvent::Refused(bridge, reason) => {
                info!(%bridge, ?reason, "a bridge refused the subscription; trying the next");
                self.status.with_feed(|f| f.refused += 1);
            }
            FeedEvent::NoBridge => {
                // Bridges register as they start hearing the channel: a few
                // seconds without one is normal.
                let since = *p.searching_since.get_or_insert(now);
                let long =
                    now.saturating_duration_since(since) >= Duration::from_secs(self.cfg.desert_after_secs);
                if long && p.last_no_bridge_warning.is_none_or(|t| t.elapsed() >= NAK_WARN_EVERY) {
                    p.last_no_bridge_warning = Some(now);
                    warn!("no multicast on {} and no bridge to take the feed from: name one with --bridge-peer NODEID@HOST:PORT, or give --tracker (it lists bridges)",
                        self.cfg.group);
                }
            }
        }
        true
    }

    /// Every 250 ms: multicast or a bridge's feed. A hub that has heard no
    /// multicast for `desert_after_secs` (or runs with `--no-multicast`) wants
    /// a feed; one whose multicast returns leaves it. Only a hub that hears
    /// the multicast itself serves a feed as a bridge.
    fn update_feed_mode(&mut self) {
        let Some(p) = self.peers.as_mut() else { return };
        let after = Duration::from_secs(self.cfg.desert_after_secs);
        let hearing = self.last_multicast.is_some_and(|t| t.elapsed() < after);
        let on = self.cfg.no_multicast || (!hearing && self.started.elapsed() >= after);
        if let Some(feed) = p.feed.as_ref().filter(|_| self.cfg.bridge) {
            // A hub fed by a bridge, or that hears only relayed multicast,
            // never feeds others: feeds cannot loop.
            let origin_heard = self.last_origin_multicast.is_some_and(|t| t.elapsed() < after);
            feed.set_live(p.feeding.is_none() && self.last_origin_multicast.is_some());
            // The tracker lists it as a bridge only while it hears the channel.
            let advertise = feed.is_live() && origin_heard;
            if advertise != p.advertised {
                p.advertised = advertise;
                p.last_registered = None;
                p.announce_soon = true;
            }
            self.status.set_bridge(feed.status());
        }
        let (tracker, resume) = (p.origin(), self.position);
        let (group, cfg) = (self.cfg.group, self.cfg);
        p.want.send_if_modified(|w| {
            if w.on != on && !cfg.no_multicast {
                if on {
                    warn!(
                        "no multicast on {group} for {} s: taking the channel's feed from a bridge",
                        after.as_secs()
                    );
                } else {
                    info!("the multicast on {group} is back: leaving the bridge's feed");
                }
            }
            let changed = (w.on, w.tracker, w.resume) != (on, tracker, resume);
            (w.on, w.tracker, w.resume) = (on, tracker, resume);
            changed
        });
        let feeding = p.feeding.is_some();
        let remulticast_bytes = p.remulticast_bytes.load(Ordering::Relaxed);
        let forest = self.cfg.stripes > 0 && !self.cfg.bridge;
        self.status.with_feed(|f| {
            f.remulticast_bytes = remulticast_bytes;
            f.mode = match (on, feeding, forest) {
                (false, _, _) => "multicast",
                (true, _, true) => "forest",
                (true, true, false) => "bridge",
                (true, false, false) => "searching",
            }
        });
    }

    fn on_partial_ask(&self, ask: PartialAsk) {
        let _ = ask.reply.send(answer_partial(&ask.req, &self.receiver));
    }

    fn on_announcement(&mut self, datagram: &[u8], from: SocketAddr) {
        let Some(p) = self.peers.as_mut() else { return };
        let Ok(a) = Announcement::decode(datagram) else {
            self.status.peer_message_dropped();
            return;
        };
        if a.channel_tag != p.channel_tag || a.node_id == p.node_id.0 {
            return;
        }
        let addr = SocketAddr::new(from.ip(), a.quic_port);
        // A newcomer hears from us at once, not at our next announcement.
        p.announce_soon |= p.table.heard(Instant::now(), NodeId(a.node_id), addr, a.objects);
    }

    async fn announce(&mut self) {
        let Some(p) = self.peers.as_mut() else { return };
        p.announce_soon = false;
        // A repeated manifest may name it without an event (a restarted hub).
        p.learn_tracker(self.receiver.tracker(), self.status);
        let now = Instant::now();
        p.table.expire(now);
        let (table, origin) = (&p.table, p.origin().map(|o| o.id));
        p.fetcher.retain(|id| table.addr(id).is_some() || Some(*id) == origin);
        let a = Announcement {
            channel_tag: p.channel_tag,
            node_id: p.node_id.0,
            quic_port: p.quic_port,
            // Live segments first: an announcement holds what fits, and
            // their repair has a deadline.
            objects: {
                let held = p.holdings.iter().filter(|(_, b)| b.count() > 0);
                let (mut objects, archive): (Vec<_>, Vec<_>) =
                    held.map(|(id, b)| (*id, b.clone())).partition(|(id, _)| self.live.is_segment(id));
                objects.extend(archive);
                objects
            },
        };
        let (datagram, _) = a.encode();
        if let Err(e) = p.control_out.send_to(&datagram, p.control_group).await {
            debug!("announcing on {}: {e}", p.control_group);
        }
        if let Some(tracker) =
            p.origin().filter(|_| p.last_registered.is_none_or(|t| t.elapsed() >= REGISTER_EVERY))
        {
            p.last_registered = Some(now);
            let mut bytes = 0;
            let holdings: Vec<_> = a
                .objects
                .into_iter()
                .take(MAX_REPORTED_OBJECTS)
                .take_while(|(_, b)| {
                    bytes += b.bytes().len() + 48;
                    bytes <= MAX_REPORT_BYTES
                })
                .collect();
            let fetcher = p.fetcher.clone();
            let role = (p.advertised, p.in_forest);
            tokio::spawn(async move {
                if fetcher.register(tracker, holdings, role).await.is_err() {
                    debug!(%tracker, "registering with the tracker failed; again in {} s", REGISTER_EVERY.as_secs());
                }
            });
        }
        p.table.note_rtts(&p.fetcher.rtts());
        let stats = p.repairer.stats();
        let served = p.server.served();
        let takers_deferred = p.server.takers_deferred();
        let (paced, paced_ms, upload_busy) = p.server.paced();
        self.status.record_peers(p.table.status(now, &p.server.received(), &served), |r| {
            r.requests = stats.requests;
            r.symbols_requested = stats.esis_requested;
            r.refused = stats.refusals;
            r.failed = stats.failures;
            r.chunks_repaired = stats.repaired;
            r.origin_naks = stats.naks_sent - p.naks_withheld.min(stats.naks_sent);
            r.origin_naks_withheld = p.naks_withheld;
            r.tracker_lookups = stats.lookups;
            r.bytes_served = served.values().sum();
            r.takers_deferred = takers_deferred;
            r.upload_paced = paced;
            r.upload_paced_ms = paced_ms;
            r.upload_busy = upload_busy;
        });
    }
}

impl PeerSide {
    /// Datagrams from a bridge failed their checks: strikes; at
    /// [`crate::peers::STRIKES_TO_BAN`] the hub leaves that bridge for good.
    fn strike_bridge(&mut self, bridge: NodeId, n: u64, status: &StatusBoard) {
        let total = self.bridge_strikes.entry(bridge).or_default();
        *total = total.saturating_add(n.min(u64::from(u32::MAX)) as u32);
        let ban = *total >= crate::peers::STRIKES_TO_BAN;
        self.table.strike(Instant::now(), &bridge, n.min(u64::from(u32::MAX)) as u32);
        status.with_feed(|f| f.strikes += n);
        if ban && !self.want.borrow().banned.contains(&bridge) {
            warn!(%bridge, strikes = *total, "a bridge sent datagrams that fail the broadcaster's signature; leaving it for another");
            self.want.send_modify(|w| {
                if w.banned.len() >= crate::bridge::MAX_BANNED_BRIDGES {
                    w.banned.remove(0);
                }
                w.banned.push(bridge);
            });
            status.with_feed(|f| f.bridges_banned += 1);
        }
    }

    /// The origin service, where NAKs go and the hub registers.
    fn origin(&self) -> Option<NodeAddr> {
        *self.tracker.borrow()
    }

    /// Take the tracker the channel's verified manifests name, unless
    /// `--tracker` named one. Registers there at the next announcement.
    fn learn_tracker(&mut self, named: Option<NodeAddr>, status: &StatusBoard) {
        let Some(t) = named.filter(|t| !self.origin_from_flag && self.origin() != Some(*t)) else { return };
        info!(tracker = %t, "the channel's manifests name the tracker; registering there and sending NAKs there");
        self.tracker.send_replace(Some(t));
        self.last_registered = None;
        status.set_tracker(t.to_string(), "manifest");
    }

    /// Keep the holdings announced to peers in step with what completes.
    fn note(&mut self, event: &Event, receiver: &Receiver) {
        match event {
            Event::Manifest(m) => {
                self.holdings.entry(m.object_id).or_insert_with(|| completed(receiver, m));
            }
            Event::ChunkComplete(c) => {
                if let Some(b) = self.holdings.get_mut(&c.object_id()) {
                    b.set(c.index());
                }
            }
        }
    }
}

/// The chunks of an object the receiver knows complete (stored, or decoded).
fn completed(receiver: &Receiver, m: &Manifest) -> ChunkBitmap {
    let chunks = hubcast_protocol::sender::chunk_count(m.size, m.chunk_size);
    let mut b = ChunkBitmap::new(chunks);
    (0..chunks).filter(|i| receiver.is_complete(m.object_id, *i)).for_each(|i| b.set(i));
    b
}

/// Wait for the next item of an optional channel; never, when there is none.
async fn recv_opt<T>(rx: Option<&mut mpsc::Receiver<T>>) -> Option<T> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn readable_opt(socket: Option<&tokio::net::UdpSocket>) -> std::io::Result<()> {
    match socket {
        Some(s) => s.readable().await,
        None => std::future::pending().await,
    }
}

async fn receive_loop(
    lp: &mut Loop<'_>,
    socket: Option<&tokio::net::UdpSocket>,
    unstored: &mut mpsc::Receiver<(ObjectId, u32)>,
    cancel: &CancellationToken,
) -> Result<(), HubError> {
    let cfg = lp.cfg;
    let mut rng = match cfg.loss_seed {
        Some(seed) => rand::rngs::StdRng::seed_from_u64(seed),
        None => rand::rngs::StdRng::from_entropy(),
    };
    let mut buf = vec![0u8; 65_536];
    let mut last_rx = Instant::now();
    let mut warned_silence = false;
    let mut last_drops = DropCounters::default();
    let mut last_drop_report = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut repair_tick = tokio::time::interval(REPAIR_TICK);
    let mut announce_tick = tokio::time::interval(crate::peers::ANNOUNCE_EVERY);
    let mut feed_ticks = 0u32;
    loop {
        let (done_rx, lookup_rx, partial_rx, control, feed_rx) = match lp.peers.as_mut() {
            Some(p) => (
                Some(&mut p.done_rx),
                Some(&mut p.lookup_rx),
                Some(&mut p.partial_rx),
                Some(&p.control),
                Some(&mut p.feed_rx),
            ),
            None => (None, None, None, None, None),
        };
        tokio::select! {
            r = readable_opt(socket) => {
                r.map_err(|source| HubError::Recv { group: cfg.group, source })?;
                let Some(socket) = socket else { continue };
                let (mut last, mut origin, mut relayed) = (None, false, false);
                let now = unix_now();
                for _ in 0..RECV_BATCH {
                    let n = match socket.try_recv(&mut buf) {
                        Ok(n) => n,
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                        Err(source) => return Err(HubError::Recv { group: cfg.group, source }),
                    };
                    lp.received += 1;
                    if cfg.simulate_loss > 0.0 && rng.gen_bool(cfg.simulate_loss) {
                        lp.simulated += 1;
                        continue;
                    }
                    lp.receiver.handle_datagram(now, &buf[..n]);
                    if let Ok(h) = wire::decode_header(&buf[..n]) {
                        last = wire::peek_chunk(&buf[..n], h.kind).or(last);
                        (origin, relayed) = (origin || !h.relayed, relayed || h.relayed);
                    }
                }
                lp.position = last.or(lp.position);
                if let Some(p) = lp.peers.as_ref() {
                    p.position.send_replace(lp.position);
                }
                if origin {
                    lp.last_origin_multicast = Some(Instant::now());
                }
                // A --remulticast hub hears its own relay: that is no multicast.
                if origin || (relayed && cfg.remulticast.is_none()) {
                    lp.last_multicast = Some(Instant::now());
                }
                // Events after the whole batch: the receiver checks digests many at a time.
                if !lp.drain_events().await {
                    return Ok(());
                }
                last_rx = Instant::now();
                warned_silence = false;
            }
            Some(done) = recv_opt(done_rx) => {
                if !lp.on_fetch_done(done).await {
                    return Ok(());
                }
            }
            Some(done) = recv_opt(lookup_rx) => lp.on_lookup_done(done),
            Some(event) = recv_opt(feed_rx) => {
                if !lp.on_feed_event(event).await {
                    return Ok(());
                }
            }
            Some(ask) = recv_opt(partial_rx) => lp.on_partial_ask(ask),
            r = readable_opt(control) => {
                // Peers' announcements, and the origin's repair.
                let mut repair = Vec::new();
                if r.is_ok() {
                    let mut abuf = [0u8; CONTROL_BUF];
                    while let Some(Ok((n, from))) = lp.peers.as_ref().map(|p| p.control.try_recv_from(&mut abuf)) {
                        if wire::decode_header(&abuf[..n]).is_ok() {
                            repair.push(abuf[..n].to_vec());
                        } else {
                            lp.on_announcement(&abuf[..n], from);
                        }
                        if repair.len() >= RECV_BATCH {
                            break;
                        }
                    }
                }
                if !repair.is_empty() && !lp.on_origin_repair(&repair).await {
                    return Ok(());
                }
            }
            _ = repair_tick.tick() => {
                if !lp.live_tick().await {
                    return Ok(());
                }
                lp.plan_repair();
                feed_ticks += 1;
                if feed_ticks % FEED_MODE_EVERY_TICKS == 0 {
                    lp.update_feed_mode();
                }
                if lp.peers.as_ref().is_some_and(|p| p.announce_soon) {
                    lp.announce().await;
                }
            }
            _ = announce_tick.tick() => lp.announce().await,
            _ = tick.tick() => {
                // Decode chunks whose symbols stopped coming with fewer than K + margin.
                lp.receiver.handle_idle();
                if !lp.drain_events().await {
                    return Ok(());
                }
                lp.record();
                let fed = lp.peers.as_ref().is_some_and(|p| p.feeding.is_some());
                let silent = last_rx.elapsed();
                if !warned_silence && !fed && !cfg.no_multicast && silent >= Duration::from_secs(cfg.silence_warning_secs) {
                    warned_silence = true;
                    warn!("no multicast received on {} for {} s: is the broadcaster running and the interface right? try --iface (now {})",
                        cfg.group, silent.as_secs(), cfg.iface);
                }
                if last_drop_report.elapsed() >= DROP_REPORT_EVERY {
                    report_drops(&last_drops, lp.receiver.drops());
                    last_drops = lp.receiver.drops().clone();
                    last_drop_report = Instant::now();
                }
            }
            Some((id, index)) = unstored.recv() => lp.receiver.forget_complete(id, index),
            _ = cancel.cancelled() => break,
        }
    }
    lp.record();
    Ok(())
}

/// One log line for all harmful drops since the last report: a flood of bad
/// datagrams costs one line per interval, not one per datagram.
fn report_drops(before: &DropCounters, now: &DropCounters) {
    let parts: Vec<String> = now
        .iter()
        .zip(before.iter())
        .filter(|((r, _), _)| !r.is_benign())
        .filter(|((_, n), (_, b))| n > b)
        .map(|((r, n), (_, b))| format!("{}={}", r.as_str(), n - b))
        .collect();
    if !parts.is_empty() {
        warn!("dropped datagrams in the last {} s: {}", DROP_REPORT_EVERY.as_secs(), parts.join(" "));
    }
}

/// Open-time cleanup: live segments whose deadline passed longer ago than
/// any back buffer keeps are dropped from the store. Returns the manifests
/// left.
fn drop_stale_segments(mut store: Store) -> Result<(Store, Vec<VerifiedManifest>), StoreError> {
    let now = unix_ms();
    let mut kept = Vec::new();
    for m in store.manifests()? {
        match m.live {
            Some(l) if l.deadline_ms.saturating_add(STALE_SEGMENT_MS) < now => {
                store.remove_object(&m.object_id)?
            }
            _ => kept.push(m),
        }
    }
    Ok((store, kept))
}

/// A live segment this long past its deadline is of no use after a restart.
const STALE_SEGMENT_MS: u64 = 60_000;

fn store_worker(
    mut store: Store,
    mut rx: mpsc::Receiver<StoreJob>,
    unstored: mpsc::Sender<(ObjectId, u32)>,
    status: StatusBoard,
    export: Option<PathBuf>,
    mut manifests: HashMap<ObjectId, Manifest>,
    live: LiveBoard,
) {
    let mut w = StoreWorker {
        store: &mut store,
        status: &status,
        export: export.map(crate::export::Exporter::new),
        live,
        last_warn: None,
        suppressed: 0,
    };
    for m in manifests.values() {
        if !w.live.on_manifest(m) {
            w.publish(m);
        }
        w.finish_if_complete(m);
    }
    while let Some(job) = rx.blocking_recv() {
        let event = match job {
            StoreJob::Event(e) => e,
            StoreJob::Read(r) => {
                let chunk = crate::peers::read_to_serve(w.store, &r.req).unwrap_or_else(|e| {
                    w.fail(&e);
                    None
                });
                let _ = r.reply.send(chunk);
                continue;
            }
            StoreJob::Retire(ids) => {
                for id in ids {
                    if let Err(e) = w.store.remove_object(&id) {
                        w.fail(&e);
                    }
                    manifests.remove(&id);
                }
                continue;
            }
        };
        match event {
            Event::Manifest(m) => {
                if let Err(e) = w.store.put_manifest(&m) {
                    w.fail(&e);
                }
                let m: Manifest = (*m).clone();
                if w.live.on_manifest(&m) {
                    // Its chunks may have come first, counted as an object.
                    w.status.remove_object(&m.object_id);
                } else {
                    w.publish(&m);
                }
                w.finish_if_complete(&m);
                manifests.insert(m.object_id, m);
            }
            Event::ChunkComplete(c) => {
                match w.store.put_chunk(&c) {
                    Ok(true) => {
                        w.status.with_chunks(|s| {
                            s.stored_this_run += 1;
                            s.stored += 1;
                        });
                        let m = manifests.get(&c.object_id()).filter(|m| m.live.is_none());
                        if let (Some(exporter), Some(m)) = (w.export.as_mut(), m) {
                            if let Err(e) = exporter.chunk_stored(m, c.index(), c.data()) {
                                w.fail(&e);
                            }
                        }
                    }
                    Ok(false) => w.status.with_chunks(|s| s.refetched += 1),
                    Err(e) => {
                        w.fail(&e);
                        // If the queue is full the chunk stays marked until a restart,
                        // which reloads the truth from the store.
                        let _ = unstored.try_send((c.object_id(), c.index()));
                    }
                }
                if !w.live.is_segment(&c.object_id()) {
                    let n = w.store.chunk_count(&c.object_id());
                    w.status.update_object(c.object_id(), |o| o.chunks_stored = n);
                }
                if let Some(m) = manifests.get(&c.object_id()) {
                    w.finish_if_complete(m);
                }
            }
        }
    }
}

struct StoreWorker<'a> {
    store: &'a mut Store,
    status: &'a StatusBoard,
    export: Option<crate::export::Exporter>,
    live: LiveBoard,
    last_warn: Option<Instant>,
    suppressed: u64,
}

impl StoreWorker<'_> {
    /// Count a failure; log at most one line per STORE_WARN_EVERY.
    fn fail(&mut self, e: &StoreError) {
        self.status.store_error(e.to_string());
        if self.last_warn.is_some_and(|t| t.elapsed() < STORE_WARN_EVERY) {
            self.suppressed += 1;
            return;
        }
        if self.suppressed > 0 {
            warn!("store: {e} ({} more store failures since the last warning)", self.suppressed);
        } else {
            warn!("store: {e}");
        }
        self.last_warn = Some(Instant::now());
        self.suppressed = 0;
    }

    /// A live segment's chunks are all stored: read them back, check the
    /// whole against its id (the BLAKE3 of the segment), and make it playable.
    fn finish_segment(&mut self, m: &Manifest) {
        if !self.live.is_segment(&m.object_id) {
            return;
        }
        let mut bytes = Vec::with_capacity(m.size as usize);
        for index in 0..hubcast_protocol::sender::chunk_count(m.size, m.chunk_size) {
            match self.store.read_chunk(&m.object_id, index) {
                Ok(Some(chunk)) => bytes.extend_from_slice(&chunk),
                Ok(None) => return,
                Err(e) => return self.fail(&e),
            }
        }
        if ObjectId::of(&bytes) != m.object_id {
            warn!(channel = %m.name, "a live segment's chunks do not hash to its id; not played");
            return;
        }
        self.live.on_complete(&m.object_id, bytes, unix_ms());
    }

    fn publish(&self, m: &Manifest) {
        let chunks = hubcast_protocol::sender::chunk_count(m.size, m.chunk_size);
        let stored = self.store.chunk_count(&m.object_id);
        self.status.update_object(m.object_id, |o| {
            o.name = m.name.clone();
            o.size = m.size;
            o.chunks = chunks;
            o.chunks_stored = stored;
        });
    }

    fn finish_if_complete(&mut self, m: &Manifest) {
        if !self.store.is_complete(m) {
            return;
        }
        if m.live.is_some() {
            self.finish_segment(m);
            return;
        }
        let mut exported = None;
        if let Some(exporter) = self.export.as_mut() {
            let already = matches!(self.store.exported_name(&m.object_id), Ok(Some(n)) if n == m.name);
            let target = exporter.dir().join(crate::store::safe_relative_path(&m.name).unwrap_or_default());
            if already && target.exists() {
                exported = Some(target);
            } else {
                match exporter.finish(self.store, m) {
                    Ok(path) => {
                        info!(name = %m.name, path = %path.display(), "complete and exported");
                        exported = Some(path);
                    }
                    Err(e) => self.fail(&e),
                }
            }
        }
        self.status.update_object(m.object_id, |o| {
            o.complete = true;
            o.exported = exported.map(|p| p.display().to_string());
        });
    }
}
