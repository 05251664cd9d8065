//! The hub daemon: multicast in, verified chunks to the store, completed objects
//! out to the export folder.
//!
//! Every protocol decision is the sans-IO [`Hub`] machine's
//! (`hubcast_protocol::hub`); this module is its driver: it reads the clock
//! once per input ([`clock`]), moves bytes between sockets, tasks and the
//! machine, and carries out the machine's outputs.
//!
//! Tasks (all owned; `run` returns only when they have ended):
//! - the receive loop (this task): sockets and task answers → [`Hub`] →
//!   outputs (store jobs, QUIC requests, announcements);
//! - the store worker (a thread: it fsyncs): writes chunks and manifests, and
//!   exports objects when their last chunk lands;
//! - the HTTP listener, when configured.

use crate::bridge::{Feed, FeedCmd, FeedEvent};
use crate::config::HubConfig;
use crate::forest::{ForestIn, ForestIo};
use crate::live::LiveBoard;
use crate::peers::{Fetcher, PartialAsk, Server};
use crate::status::PeerStatus;
use crate::status::{Source, StatusBoard};
use crate::store::{Store, StoreError};
use crate::store_worker::{drop_stale_segments, store_worker, Quota, Scrub, StoreJob, Unstored, SCRUB_TICK};
use hubcast_keys::{Fingerprint, KeyFileError, NodeAddr, TrustAnchor};
use hubcast_protocol::announce::MAX_ANNOUNCE_LEN;
use hubcast_protocol::hub::{self as machine, Hub, HubEvent, Input, Output};
use hubcast_protocol::peer_wire::{DatagramFrames, ListedHub};
use hubcast_protocol::peers;
use hubcast_protocol::receiver::{DropCounters, Event};
use hubcast_protocol::repair::Outcome;
use hubcast_protocol::serve::answer_partial;
use hubcast_protocol::store::StoredManifest;
use hubcast_protocol::wire;
use hubcast_protocol::ObjectId;
use hubcast_transport::batch::BatchRecv;
use hubcast_transport::quic::NodeEndpoint;
use hubcast_transport::{Interface, MulticastConfig, TransportError};
use rand::{Rng, SeedableRng};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

mod narrow;
mod peer_side;
mod receive;
use peer_side::{start_peers, PeerSide, TrackerAnswer};
use receive::receive_loop;

/// Datagrams read per wakeup before yielding.
const RECV_BATCH: usize = 64;
/// Batched receive calls on the multicast socket per wakeup (each up to
/// 32 messages).
const RECV_CALLS: usize = 2;
/// Chunks the store worker could not store, queued back to the receive loop.
const STORE_QUEUE: usize = 64;
const DROP_REPORT_EVERY: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error("--trust: {0}")]
    Trust(#[from] KeyFileError),
    #[error("--trust-chain {path}: {why}")]
    TrustChain { path: PathBuf, why: String },
    #[error("node key: {0}")]
    NodeKey(KeyFileError),
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Token(#[from] crate::token::TokenError),
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
    let token = crate::token::Token::open_or_create(&cfg.store)?;
    let (started, _) = clock();
    status.init(node.id().to_string(), anchor.fingerprint.to_string(), cfg.group.to_string(), started);
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
    let live = LiveBoard::new(cfg.live_buffer_secs);
    info!(store = %cfg.store.display(), manifests = report.manifests, chunks = report.chunks,
        orphans_removed = report.orphans_removed, group = %cfg.group, iface = %mc.interface, "hub started");
    if report.old_manifests_dropped {
        info!("the store kept manifests unsigned (before 2026-12-05): dropped; the channel sends them again, and the chunks stay");
    }

    // The store worker's queue: the peer side and the HTTP gateway read
    // from the store through it; the worker starts once the stored
    // manifests are checked. Bounded by the bytes of the chunks queued
    // (`StoreRoom`) more than by its slots.
    let (tx, rx) = mpsc::channel(crate::store_worker::STORE_QUEUE_JOBS);
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
                gateway: crate::gateway::Gateway { status: status.clone(), store: tx.clone(), token },
            };
            Some(tokio::spawn(crate::http::serve(listener, state, cancel.clone())))
        }
        None => None,
    };

    // Chunks the worker could not store go back, so the receiver collects them again.
    let (unstored_tx, mut unstored_rx) = mpsc::channel(STORE_QUEUE);
    let peers =
        if cfg.peer_repair { Some(start_peers(&cfg, &mc, &node, &tx, &status, &cancel)?) } else { None };
    let (now, unix_ms) = clock();
    let mut config = machine::Config::new(node.id(), peers.as_ref().map_or(0, |p| p.quic_port));
    config.peer_repair = cfg.peer_repair;
    config.tracker = peers.as_ref().and_then(|p| p.origin());
    config.forest = peers.as_ref().and_then(|p| p.forest_role);
    config.desert_after = Duration::from_secs(cfg.desert_after_secs);
    config.no_multicast = cfg.no_multicast;
    config.receiver.max_active_chunks = cfg.collect_chunks;
    config.receiver.keep_pushed = cfg.keep == crate::config::Keep::All;
    config.repair.max_chunks = config.repair.max_chunks.min(cfg.collect_chunks / 2);
    // A forest hub takes stripes, not a bridge's feed.
    config.bridges = (cfg.peer_repair && (cfg.stripes == 0 || cfg.bridge))
        .then(|| cfg.bridge_peers.iter().filter_map(|b| b.parse::<NodeAddr>().ok()).collect());
    config.remulticast = cfg.remulticast.is_some();
    config.seed = rand::random();
    let mut hub = Hub::new(now, anchor, config);

    // The stored manifests, verified again as of when they came; stale live
    // segments leave the store; then the chunks. Chunks dropped as damaged or
    // missing (now, in an earlier run, or by `clienthub fsck`) are asked of
    // peers at once.
    let mut store = store;
    let (held, refused) = hub.restore_manifests(&store.manifests()?);
    if let Some((id, why)) = refused.first() {
        warn!(refused = refused.len(), first = %id, ?why,
            "stored manifests that fail their check (damaged, or another channel's): not used; the channel sends them again");
    }
    let (manifests, stale) = drop_stale_segments(&mut store, held, unix_ms)?;
    hub.handle_input(now, unix_ms, Input::Retired(&stale));
    hub.restore_chunks(store.chunks()?, report.lost.iter().copied());
    // Objects evicted to stay within --quota: not taken from the carousel
    // again until asked for.
    // The catalog's root as stored: anything older is refused from now on.
    let catalog_root = store.catalog_root()?;
    if let Some((datagram, at)) = &catalog_root {
        if let Err(why) = hub.restore_catalog_root(datagram, *at) {
            warn!(?why, "the stored catalog root fails its check (damaged, or another channel's): the channel sends it again");
        }
    }
    // The root rotations followed, in order: the root trusted now is the
    // newest, and no rotation back is taken.
    for datagram in store.rotations()? {
        if let Err(why) = hub.restore_rotation(&datagram) {
            warn!(?why, "a stored root rotation does not follow from the configured root (another channel's store, or damaged): the channel sends the chain again");
            break;
        }
    }
    if let Some(path) = &cfg.trust_chain {
        follow_trust_chain(&mut hub, path, (now, unix_ms))?;
    }
    // The newest revocation list as stored: its serials stay refused, and
    // no older list is taken.
    if let Some(datagram) = store.revocations()? {
        if let Err(why) = hub.restore_revocations(&datagram) {
            warn!(?why, "the stored revocation list fails its check (damaged, or another channel's): the channel sends it again");
        }
    }
    let evicted = store.evicted()?;
    hub.handle_input(now, unix_ms, Input::Unwanted(&evicted));
    let pinned = store.pinned()?;
    if let Some(feed) = peers.as_ref().and_then(|p| p.feed.as_ref()) {
        // A restarted bridge forwards what it holds with the manifests it
        // was sent, and the catalog's root.
        if let Some(d) = hub.receiver().catalog_root().map(|(_, d)| d) {
            feed.statement(d);
        }
        for r in store.rotations()? {
            feed.statement(&r);
        }
        if let Some(d) = hub.receiver().revocations() {
            feed.statement(d);
        }
        for m in &manifests {
            if let Some(d) = hub.receiver().manifest_datagram(&m.object_id) {
                feed.manifest(m.object_id, d);
            }
        }
    }

    let worker = {
        let status = status.clone();
        let export = cfg.export.clone();
        let manifests = manifests.iter().map(|m| (m.object_id, (**m).clone())).collect();
        let live = live.clone();
        let quota = cfg.quota;
        let tags = (cfg.keep == crate::config::Keep::Tagged).then(|| cfg.tags.clone());
        let scrub = Scrub::new(cfg.scrub_rate.bytes_per_sec(), Duration::from_secs(cfg.scrub_every_secs));
        std::thread::Builder::new()
            .name("store".into())
            .spawn(move || {
                let quota = Quota { bytes: quota.map(|q| q.0), evicted, pinned, tags };
                store_worker(store, rx, unstored_tx, status, export, manifests, live, scrub, quota, started)
            })
            .map_err(|source| HubError::Store(StoreError::Io { path: "store thread".into(), source }))?
    };

    let mut lp = Loop {
        cfg: &cfg,
        hub,
        store: &tx,
        room: crate::store_worker::StoreRoom::new(crate::store_worker::STORE_QUEUE_BYTES),
        waits_seen: 0,
        status: &status,
        received: 0,
        simulated: 0,
        peers,
        live,
        trusted: anchor_fingerprint,
        silence_told: false,
        last_foreign_warning: None,
    };
    let result = receive_loop(&mut lp, socket.as_ref(), &mut unstored_rx, &cancel).await;
    // No task of the peer side outlives the hub (nor holds the store's queue open).
    cancel.cancel();
    if let Some(mut p) = lp.peers.take() {
        p.tasks.shutdown().await;
    }
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

/// Multicast or bridge is decided this often.
const FEED_MODE_EVERY: Duration = Duration::from_millis(250);
/// "No bridge to take the feed from" is said at most this often.
const NO_BRIDGE_WARN_EVERY: Duration = Duration::from_secs(30);
/// How often the status and the log hear about the receiver.
const REPORT_EVERY: Duration = Duration::from_secs(1);

/// The driver's one clock: the hub machine is handed this `now`, and the
/// driver's own timers read it too.
fn clock() -> (Instant, u64) {
    (Instant::now(), unix_ms())
}

/// The receive loop: the driver of the [`Hub`] machine. It moves bytes,
/// timers and store jobs, and makes no protocol decision.
struct Loop<'a> {
    cfg: &'a HubConfig,
    hub: Hub,
    store: &'a mpsc::Sender<StoreJob>,
    /// The store queue's room in bytes: the receive loop waits only when
    /// the chunks queued fill it.
    room: crate::store_worker::StoreRoom,
    /// The queue's waits when [`Loop::record`] last looked.
    waits_seen: u64,
    status: &'a StatusBoard,
    received: u64,
    simulated: u64,
    peers: Option<PeerSide>,
    live: LiveBoard,
    /// The channel `--trust` names.
    trusted: Fingerprint,
    /// The hub has said that no multicast came (and what to check); the
    /// same words do not come again until some does.
    silence_told: bool,
    last_foreign_warning: Option<Instant>,
}

/// Follow the chain of rotations the operator gave (`--trust-chain`) from
/// the root trusted now: a hub switched on after a rotation starts at the
/// newest root, and a statement from a retired root (one that leaked) is a
/// rollback to it. The rotations taken go to the store as the channel's do.
fn follow_trust_chain(
    hub: &mut Hub,
    path: &std::path::Path,
    (now, unix_ms): (Instant, u64),
) -> Result<(), HubError> {
    let fail = |why: String| HubError::TrustChain { path: path.to_owned(), why };
    let chain = hubcast_keys::files::read_rotations(path).map_err(|e| fail(e.to_string()))?;
    let Some(last) = chain.last().map(|r| r.version) else { return Ok(()) };
    let held = hub.receiver().root().1;
    let tag = hub.receiver().channel_tag();
    let datagrams: Vec<Vec<u8>> =
        chain.iter().filter(|r| r.version > held).map(|r| wire::rotation_datagram(r, tag)).collect();
    let refs: Vec<&[u8]> = datagrams.iter().map(Vec::as_slice).collect();
    hub.handle_input(now, unix_ms, Input::Statements(&refs));
    let (root, version) = hub.receiver().root();
    if version < last {
        return Err(fail(format!(
            "the chain does not lead on from the root this hub trusts (version {version}, {root}): is it this channel's `rotations` file, as `broadcaster rotate-root` wrote it?"
        )));
    }
    info!(root = %root, version, "following the root rotations of --trust-chain");
    Ok(())
}

impl Loop<'_> {
    /// Hand one input to the machine and carry out what it says. `false`
    /// once the store worker is gone.
    async fn input(&mut self, input: Input<'_>) -> bool {
        let (now, unix_ms) = clock();
        self.hub.handle_input(now, unix_ms, input);
        self.carry_out(now, unix_ms).await
    }

    /// Carry out the machine's outputs until it has none.
    async fn carry_out(&mut self, now: Instant, unix_ms: u64) -> bool {
        let mut forest_changed = false;
        while let Some(out) = self.hub.poll_output() {
            forest_changed |= matches!(out, Output::Stripe { .. } | Output::ForestChildren(_));
            match out {
                Output::Store { event, source } => {
                    if !self.store_event((now, unix_ms), event, source).await {
                        return false;
                    }
                }
                Output::Event(HubEvent::Rotation { version, datagram }) => {
                    if let Some(feed) = self.peers.as_ref().and_then(|p| p.feed.as_ref()) {
                        feed.statement(&datagram);
                    }
                    if self.store.send(StoreJob::Rotation(version, datagram)).await.is_err() {
                        return false;
                    }
                }
                Output::Event(HubEvent::Revocations { datagram }) => {
                    if let Some(feed) = self.peers.as_ref().and_then(|p| p.feed.as_ref()) {
                        feed.statement(&datagram);
                    }
                    if self.store.send(StoreJob::Revocations(datagram)).await.is_err() {
                        return false;
                    }
                }
                Output::Event(HubEvent::Catalog { root, datagram }) => {
                    if let Some(feed) = self.peers.as_ref().and_then(|p| p.feed.as_ref()) {
                        feed.statement(&datagram);
                    }
                    if self.store.send(StoreJob::CatalogRoot(root, datagram)).await.is_err() {
                        return false;
                    }
                }
                Output::Event(e) => self.on_event(e),
                Output::Announce(datagram) => self.announce(now, unix_ms, &datagram).await,
                out => {
                    if let Some(p) = self.peers.as_mut() {
                        p.start(out, self.status);
                    }
                }
            }
        }
        if forest_changed {
            self.publish_forest();
        }
        true
    }

    /// A verified manifest or chunk: to the store worker, and on to the
    /// bridge's subscribers after it (a subscriber's read queues behind it).
    async fn store_event(
        &mut self,
        (now, unix_ms): (Instant, u64),
        event: Event,
        source: machine::Source,
    ) -> bool {
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
        if let Some(feed) = self.peers.as_ref().and_then(|p| p.feed.clone()) {
            match &event {
                Event::Manifest(m) => {
                    if let Some(d) = self.hub.receiver().manifest_datagram(&m.object_id) {
                        feed.manifest(m.object_id, d);
                        if m.size == 0 {
                            feed.empty_object(m.object_id, now);
                        }
                    }
                }
                Event::ChunkComplete(c) => {
                    let geometry = wire::peek_ticket_geometry(c.ticket());
                    fed_chunk = geometry.map(|(len, t)| (feed, c.object_id(), c.index(), len, t));
                }
            }
        }
        let job = match event {
            Event::Manifest(m) => {
                // Kept as it came, to be verified again when loaded.
                let Some(datagram) = self.hub.receiver().manifest_datagram(&m.object_id) else {
                    warn!(object = %m.object_id, "an accepted manifest's datagram is gone; not stored (the channel sends it again)");
                    return true;
                };
                let stored = StoredManifest {
                    object_id: m.object_id,
                    datagram: datagram.to_vec(),
                    received_unix: unix_ms / 1000,
                };
                StoreJob::Manifest(m, stored)
            }
            Event::ChunkComplete(c) => {
                let room = self.room.take(c.data().len()).await;
                StoreJob::Chunk(c, room)
            }
        };
        if self.store.send(job).await.is_err() {
            return false;
        }
        if let Some((feed, object_id, index, len, t)) = fed_chunk {
            feed.chunk(object_id, index, len, t, now);
        }
        true
    }

    fn record(&mut self) {
        let rx = self.hub.receiver();
        self.status.record_receiver(rx.stats(), rx.drops(), self.received, self.simulated);
        self.status.record_trust(rx.root(), rx.revocation_list());
        let ((queued, limit), waits) = (self.room.queued(), self.room.waits());
        // The store falls behind the channel: under `--rate auto` this hub
        // says so at the feedback round's end.
        if queued > limit / 2 || waits > self.waits_seen {
            self.hub.handle_overflow();
        }
        self.waits_seen = waits;
        self.status.with_chunks(|c| {
            c.store_queue_bytes = queued;
            c.store_queue_limit = limit;
            c.store_queue_waits = waits;
        });
    }

    /// The live board's clock: the segments that left the back buffer leave
    /// the store and the holdings announced.
    async fn live_tick(&mut self, unix_ms: u64) -> bool {
        self.live.tick(unix_ms);
        let retired = self.live.take_retired();
        if retired.is_empty() {
            return true;
        }
        if !self.input(Input::Retired(&retired)).await {
            return false;
        }
        self.store.send(StoreJob::Retire(retired)).await.is_ok()
    }

    /// What the desert side's task reports: a subscription, the feed's
    /// datagrams (checked by the machine like multicast, counted as the
    /// bridge's), its end.
    async fn on_feed_event(&mut self, event: FeedEvent) -> bool {
        let Some(p) = self.peers.as_mut() else { return true };
        match event {
            FeedEvent::Bridges(listed) => self.input(Input::Bridges(&listed)).await,
            FeedEvent::Subscribed(bridge) => {
                info!(%bridge, resume = ?self.hub.position(), "taking the channel's feed from a bridge");
                // From its first chunk on, the feed goes out on the LAN too.
                p.relay.active.store(true, Ordering::Relaxed);
                self.status.with_feed(|f| {
                    f.mode = "bridge";
                    f.bridge = Some(bridge.to_string());
                    f.subscriptions += 1;
                });
                self.input(Input::Feeding(bridge)).await
            }
            FeedEvent::Datagrams(bridge, datagrams) => {
                let frames: Vec<&[u8]> = datagrams.iter().map(Vec::as_slice).collect();
                self.input(Input::Bridge { bridge, datagrams: &frames }).await
            }
            FeedEvent::Ended { bridge, why } => {
                info!(%bridge, "the bridge's feed ended: {why}");
                if self.hub.feeding().is_some_and(|b| b.id == bridge) {
                    p.relay.active.store(false, Ordering::Relaxed);
                }
                self.status.with_feed(|f| {
                    f.ended += 1;
                    f.bridge = None;
                    if f.mode == "bridge" {
                        f.mode = "searching";
                    }
                });
                self.input(Input::FeedEnded(bridge)).await
            }
            FeedEvent::Refused(bridge, reason) => {
                info!(%bridge, ?reason, "a bridge refused the subscription; trying the next");
                self.status.with_feed(|f| f.refused += 1);
                self.input(Input::NotSubscribed { bridge, refused: true }).await
            }
            FeedEvent::Failed(bridge, why) => {
                debug!(%bridge, "subscribing: {why}");
                self.input(Input::NotSubscribed { bridge, refused: false }).await
            }
        }
    }

    /// Every 250 ms: multicast or a bridge's feed, as the machine wants it.
    /// Only a hub that hears the multicast itself serves a feed as a bridge.
    fn update_feed_mode(&mut self, now: Instant) {
        let Some(p) = self.peers.as_mut() else { return };
        let after = Duration::from_secs(self.cfg.desert_after_secs);
        let on = self.hub.wants_feed(now);
        if let Some(feed) = p.feed.as_ref().filter(|_| self.cfg.bridge) {
            // A hub fed by a bridge, or that hears only relayed multicast,
            // never feeds others: feeds cannot loop.
            feed.set_live(self.hub.feeding().is_none() && self.hub.ever_heard_origin(), now);
            // The tracker lists it as a bridge only while it hears the channel.
            let advertise = feed.is_live() && self.hub.hears_origin(now);
            if advertise != p.advertised {
                p.advertised = advertise;
                self.hub.register_soon();
            }
            self.status.set_bridge(feed.status());
        }
        let tracker = self.hub.tracker();
        let (group, cfg) = (self.cfg.group, self.cfg);
        // A bridge can be found only through --bridge-peer or a tracker
        // (named by --tracker or by manifests heard before).
        let can_find_bridge = tracker.is_some() || !cfg.bridge_peers.is_empty();
        let never_heard = !self.hub.ever_heard_multicast();
        if p.feed_wanted != on && !cfg.no_multicast {
            if on && never_heard {
                self.silence_told = true;
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
        p.feed_wanted = on;
        let feeding = self.hub.feeding().is_some();
        let remulticast_bytes = p.relay.sent.load(Ordering::Relaxed);
        let island_loss = self.hub.peers().island_loss(now);
        let lan_loss = island_loss.unwrap_or(hubcast_protocol::announce::LOSS_UNKNOWN);
        p.relay.lan_loss.store(lan_loss, Ordering::Relaxed);
        let forest = self.cfg.stripes > 0 && !self.cfg.bridge;
        self.status.with_feed(|f| {
            f.remulticast_bytes = remulticast_bytes;
            f.island_loss = island_loss;
            f.mode = match (on, feeding, forest) {
                (false, _, _) => "multicast",
                (true, _, true) => "forest",
                (true, true, false) => "bridge",
                (true, false, false) => "searching",
            }
        });
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
    fn warn_foreign_channel(&mut self, now: Instant) {
        let rx = self.hub.receiver();
        let Some(heard) = rx.foreign_root() else { return };
        if self.last_foreign_warning.is_some_and(|t| now.saturating_duration_since(t) < FOREIGN_WARN_EVERY) {
            return;
        }
        self.last_foreign_warning = Some(now);
        let group = self.cfg.group;
        if rx.stats().symbols_accepted == 0 && rx.tracker().is_none() {
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
