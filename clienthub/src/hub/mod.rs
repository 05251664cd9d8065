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
use crate::peers::{Fetcher, PartialAsk, Server};
use crate::status::PeerStatus;
use crate::status::{Source, StatusBoard};
use crate::store::{Store, StoreError};
use crate::store_worker::{drop_stale_segments, store_worker, Scrub, StoreJob, Unstored, SCRUB_TICK};
use hubcast_keys::{Fingerprint, KeyFileError, NodeAddr, NodeId, TrustAnchor};
use hubcast_protocol::announce::{Announcement, MAX_ANNOUNCE_LEN};
use hubcast_protocol::peer_wire::{ChunkBitmap, DatagramFrames, ListedHub, MAX_NAKS_PER_STREAM};
use hubcast_protocol::peers::{self, PeerTable};
use hubcast_protocol::receiver::{DropCounters, DropReason, Event, Receiver, ReceiverConfig};
use hubcast_protocol::repair::{Nak, Outcome, RepairConfig, Repairer};
use hubcast_protocol::serve::{answer_partial, ChunkRequest};
use hubcast_protocol::wire::{self, Manifest};
use hubcast_protocol::ObjectId;
use hubcast_transport::quic::NodeEndpoint;
use hubcast_transport::{Interface, MulticastConfig, TransportError};
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

mod peer_side;
use peer_side::{start_peers, PeerSide};

/// Datagrams read per wakeup before yielding.
const RECV_BATCH: usize = 64;
/// Events queued for the store worker before the receive loop waits for it.
const STORE_QUEUE: usize = 64;
const DROP_REPORT_EVERY: Duration = Duration::from_secs(10);

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
    #[error("{source}: give --store a folder this user can write (its chunks and index live there)")]
    StoreOpen {
        dir: PathBuf,
        #[source]
        source: StoreError,
    },
    #[error("--export {dir}: {source}: give a folder this user can write, or leave out --export")]
    Export {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
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
    // Every folder the hub writes is checked before any service starts.
    crate::store::check_writable(&cfg.store).map_err(|e| HubError::StoreOpen {
        dir: cfg.store.clone(),
        source: StoreError::Io { path: cfg.store.clone(), source: e },
    })?;
    if let Some(dir) = &cfg.export {
        crate::store::check_writable(dir).map_err(|source| HubError::Export { dir: dir.clone(), source })?;
    }
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
        .map_err(|e| StoreError::Io { path: cfg.store.clone(), source: std::io::Error::other(e) })?
        .map_err(|source| HubError::StoreOpen { dir: cfg.store.clone(), source })?;
    let node = hubcast_keys::NodeKey::load_or_create(&cfg.store).map_err(HubError::NodeKey)?;
    status.init(node.id().to_string(), anchor.fingerprint.to_string(), cfg.group.to_string());
    status.with_chunks(|c| {
        c.stored_at_start = report.chunks;
        c.stored = report.chunks;
        c.lost = report.lost.len() as u64;
        c.quarantined = report.quarantined.len() as u64;
    });
    for (from, to) in &report.quarantined {
        warn!(
            "the store held {}, which the hub did not write: moved aside to {}, nothing deleted",
            from.display(),
            to.display()
        );
    }
    if !report.missing.is_empty() {
        warn!(
            chunks = report.missing.len(),
            "stored chunks were missing on disk; dropped from the index, fetched again"
        );
    }
    let anchor_fingerprint = anchor.fingerprint;
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
    // Chunks dropped as damaged or missing (now, in an earlier run, or by
    // `clienthub fsck`): asked of peers at once.
    for (id, index) in &report.lost {
        receiver.handle_lost_chunk(*id, *index);
    }
    info!(store = %cfg.store.display(), manifests = report.manifests, chunks = report.chunks,
        orphans_removed = report.orphans_removed, group = %cfg.group, iface = %mc.interface, "hub started");

    let http = match cfg.http {
        Some(addr) => {
            let listener = hubcast_transport::tcp::listen(addr)
                .await
                .map_err(|source| HubError::Http { addr, source })?;
            info!(%addr, "status on http://{addr}/api/status");
            let state = crate::http::AppState {
                status: status.clone(),
                live: live.clone(),
                http: Default::default(),
            };
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
        let scrub = Scrub::new(cfg.scrub_rate.bytes_per_sec(), Duration::from_secs(cfg.scrub_every_secs));
        std::thread::Builder::new()
            .name("store".into())
            .spawn(move || store_worker(store, rx, unstored_tx, status, export, manifests, live, scrub))
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
        trusted: anchor_fingerprint,
        silence_told: false,
        last_foreign_warning: None,
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
    /// The channel `--trust` names.
    trusted: Fingerprint,
    /// The hub has said that no multicast came (and what to check); the
    /// same words do not come again until some does.
    silence_told: bool,
    last_foreign_warning: Option<Instant>,
}

impl Loop<'_> {
    /// Send the receiver's events to the store worker. `false` once it is
    /// gone. `source` is the path of the datagrams just handled: the chunks
    /// they complete are counted as its.
    async fn drain_events(&mut self, source: Source) -> bool {
        while let Some(event) = self.receiver.poll_event() {
            // Counters first: a status that shows the object complete also
            // shows the bytes that completed it.
            self.record();
            // Live segments are shown per channel, not as objects.
            if let Event::ChunkComplete(c) = &event {
                if !self.live.is_segment(&c.object_id()) {
                    self.status.chunk_completed_by(c.object_id(), source);
                }
            }
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
                if !self.drain_events(Source::Bridge).await {
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
                // A hub that never heard the multicast and has no way to find
                // a bridge was told what to check already (silence_hint).
                let told = self.silence_told && p.origin().is_none() && self.cfg.bridge_peers.is_empty();
                if long && !told && p.last_no_bridge_warning.is_none_or(|t| t.elapsed() >= NAK_WARN_EVERY) {
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
        // A bridge can be found only through --bridge-peer or a tracker
        // (named by --tracker or by manifests heard before).
        let can_find_bridge = tracker.is_some() || !cfg.bridge_peers.is_empty();
        let never_heard = self.last_multicast.is_none();
        let silence_told = &mut self.silence_told;
        p.want.send_if_modified(|w| {
            if w.on != on && !cfg.no_multicast {
                if on && never_heard {
                    *silence_told = true;
                    warn!("{}", silence_hint(cfg, after, can_find_bridge));
                } else if on && can_find_bridge {
                    warn!(
                        "no multicast on {group} for {} s: taking the channel's feed from a bridge",
                        after.as_secs()
                    );
                } else if on {
                    warn!(
                        "the multicast on {group} stopped {} s ago: is the broadcaster still running? (a hub out of the multicast's reach takes the channel from a bridge: --bridge-peer NODEID@HOST:PORT or --tracker)",
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
    unstored: &mut mpsc::Receiver<Unstored>,
    cancel: &CancellationToken,
) -> Result<(), HubError> {
    let cfg = lp.cfg;
    let mut rng = match cfg.loss_seed {
        Some(seed) => rand::rngs::StdRng::seed_from_u64(seed),
        None => rand::rngs::StdRng::from_entropy(),
    };
    let mut buf = vec![0u8; 65_536];
    let mut last_rx = Instant::now();
    let mut last_drops = DropCounters::default();
    let mut last_drop_report = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut repair_tick = tokio::time::interval(REPAIR_TICK);
    let mut announce_tick = tokio::time::interval(crate::peers::ANNOUNCE_EVERY);
    let mut scrub_tick = tokio::time::interval(SCRUB_TICK);
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
                if !lp.drain_events(Source::Multicast).await {
                    return Ok(());
                }
                last_rx = Instant::now();
                lp.silence_told = false;
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
                if !lp.drain_events(Source::Multicast).await {
                    return Ok(());
                }
                lp.record();
                let fed = lp.peers.as_ref().is_some_and(|p| p.feeding.is_some());
                let silent = last_rx.elapsed();
                if !lp.silence_told && !fed && !cfg.no_multicast && silent >= Duration::from_secs(cfg.silence_warning_secs) {
                    lp.silence_told = true;
                    warn!("no multicast received on {} for {} s: is the broadcaster running and the interface right? try --iface (now {})",
                        cfg.group, silent.as_secs(), cfg.iface);
                }
                lp.warn_foreign_channel();
                if last_drop_report.elapsed() >= DROP_REPORT_EVERY {
                    report_drops(&last_drops, lp.receiver.drops());
                    last_drops = lp.receiver.drops().clone();
                    last_drop_report = Instant::now();
                }
            }
            Some(u) = unstored.recv() => lp.on_unstored(u),
            _ = scrub_tick.tick() => {
                // Skipped when the worker is busy: the scrub is background work.
                let _ = lp.store.try_send(StoreJob::Scrub);
            }
            _ = cancel.cancelled() => break,
        }
    }
    lp.record();
    Ok(())
}

impl Loop<'_> {
    /// A chunk reported complete is not in the store after all.
    fn on_unstored(&mut self, u: Unstored) {
        match u {
            Unstored::Failed(id, index) => self.receiver.forget_complete(id, index),
            Unstored::Lost(id, index) => {
                self.receiver.handle_lost_chunk(id, index);
                if let Some(b) = self.peers.as_mut().and_then(|p| p.holdings.get_mut(&id)) {
                    b.clear(index);
                }
                self.plan_repair();
            }
        }
    }
}

/// What a hub that has heard nothing on its group since it started says.
fn silence_hint(cfg: &HubConfig, after: Duration, can_find_bridge: bool) -> String {
    let meanwhile = if can_find_bridge {
        "; meanwhile the hub looks for a bridge"
    } else {
        "; a hub out of the multicast's reach takes the channel from a bridge: --bridge-peer NODEID@HOST:PORT or --tracker"
    };
    format!(
        "no multicast received on {} for {} s: is the broadcaster running (broadcaster seed --group {}) and the interface right? try --iface (now {}){meanwhile}",
        cfg.group,
        after.as_secs(),
        cfg.group,
        cfg.iface
    )
}

/// How often the wrong-channel hint repeats while another channel is heard.
const FOREIGN_WARN_EVERY: Duration = Duration::from_secs(60);

impl Loop<'_> {
    /// Another channel is on the group: say which, and, when nothing of the
    /// trusted channel came, that `--trust` is the likely mistake.
    fn warn_foreign_channel(&mut self) {
        let Some(heard) = self.receiver.foreign_root() else { return };
        if self.last_foreign_warning.is_some_and(|t| t.elapsed() < FOREIGN_WARN_EVERY) {
            return;
        }
        self.last_foreign_warning = Some(Instant::now());
        let group = self.cfg.group;
        if self.receiver.stats().symbols_accepted == 0 && self.receiver.tracker().is_none() {
            warn!("the multicast on {group} carries the channel of root {heard}, but --trust names {}: everything on it is dropped (wrong_channel). Give --trust the fingerprint `broadcaster keygen` printed for this channel (the last line of its output, or its root.pub file)",
                self.trusted);
        } else {
            warn!("another channel (root {heard}) shares {group} with this one; its datagrams are dropped (wrong_channel)");
        }
    }
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
