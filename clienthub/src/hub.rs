//! The hub daemon: multicast in, verified chunks to the store, completed objects
//! out to the export folder.
//!
//! Tasks (all owned; `run` returns only when they have ended):
//! - the receive loop (this task): socket → optional simulated loss →
//!   [`Receiver`] → events to the store worker;
//! - the store worker (a thread: it fsyncs): writes chunks and manifests, and
//!   exports objects when their last chunk lands;
//! - the HTTP listener, when configured.

use crate::config::HubConfig;
use crate::status::StatusBoard;
use crate::store::{Store, StoreError};
use hubcast_keys::{KeyFileError, TrustAnchor};
use hubcast_protocol::receiver::{DropCounters, Event, Receiver, ReceiverConfig};
use hubcast_protocol::wire::Manifest;
use hubcast_protocol::ObjectId;
use hubcast_transport::{Interface, MulticastConfig, TransportError};
use rand::{Rng, SeedableRng};
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

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
    #[error("receiving on {group}: {source}")]
    Recv {
        group: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

pub fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Run a hub until `cancel`. Status is published on `status` as it goes.
pub async fn run(cfg: HubConfig, status: StatusBoard, cancel: CancellationToken) -> Result<(), HubError> {
    let anchor = TrustAnchor::from_arg(&cfg.trust)?;
    if !(0.0..1.0).contains(&cfg.simulate_loss) {
        return Err(HubError::BadLoss(cfg.simulate_loss));
    }
    let mut mc = MulticastConfig::new(cfg.group);
    mc.interface = cfg.iface.parse::<Interface>()?;
    mc.source = cfg.source;
    let socket = hubcast_transport::multicast::receiver(&mc)?;

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
    let manifests = store.manifests()?;
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
            Some(tokio::spawn(crate::http::serve(listener, status.clone(), cancel.clone())))
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
        std::thread::Builder::new()
            .name("store".into())
            .spawn(move || store_worker(store, rx, unstored_tx, status, export, manifests))
            .map_err(|source| HubError::Store(StoreError::Io { path: "store thread".into(), source }))?
    };

    let result = receive_loop(&cfg, &socket, &mut receiver, &tx, &mut unstored_rx, &status, &cancel).await;
    drop(tx);
    let _ = tokio::task::spawn_blocking(move || worker.join()).await;
    cancel.cancel();
    if let Some(h) = http {
        let _ = h.await;
    }
    result
}

async fn receive_loop(
    cfg: &HubConfig,
    socket: &tokio::net::UdpSocket,
    receiver: &mut Receiver,
    tx: &mpsc::Sender<Event>,
    unstored: &mut mpsc::Receiver<(ObjectId, u32)>,
    status: &StatusBoard,
    cancel: &CancellationToken,
) -> Result<(), HubError> {
    let mut rng = match cfg.loss_seed {
        Some(seed) => rand::rngs::StdRng::seed_from_u64(seed),
        None => rand::rngs::StdRng::from_entropy(),
    };
    let mut buf = vec![0u8; 65_536];
    let (mut received, mut simulated) = (0u64, 0u64);
    let mut last_rx = Instant::now();
    let mut warned_silence = false;
    let mut last_drops = DropCounters::default();
    let mut last_drop_report = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            r = socket.readable() => {
                r.map_err(|source| HubError::Recv { group: cfg.group, source })?;
                let now = unix_now();
                for _ in 0..RECV_BATCH {
                    let n = match socket.try_recv(&mut buf) {
                        Ok(n) => n,
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                        Err(source) => return Err(HubError::Recv { group: cfg.group, source }),
                    };
                    received += 1;
                    if cfg.simulate_loss > 0.0 && rng.gen_bool(cfg.simulate_loss) {
                        simulated += 1;
                        continue;
                    }
                    receiver.handle_datagram(now, &buf[..n]);
                }
                // Events after the whole batch: the receiver checks digests many at a time.
                while let Some(event) = receiver.poll_event() {
                    // Counters first: a status that shows the object complete
                    // also shows the bytes that completed it.
                    status.record_receiver(receiver.stats(), receiver.drops(), received, simulated);
                    if tx.send(event).await.is_err() {
                        return Ok(());
                    }
                }
                last_rx = Instant::now();
                warned_silence = false;
            }
            _ = tick.tick() => {
                // Decode chunks whose symbols stopped coming with fewer than K + margin.
                receiver.handle_idle();
                while let Some(event) = receiver.poll_event() {
                    status.record_receiver(receiver.stats(), receiver.drops(), received, simulated);
                    if tx.send(event).await.is_err() {
                        return Ok(());
                    }
                }
                status.record_receiver(receiver.stats(), receiver.drops(), received, simulated);
                let silent = last_rx.elapsed();
                if !warned_silence && silent >= Duration::from_secs(cfg.silence_warning_secs) {
                    warned_silence = true;
                    warn!("no multicast received on {} for {} s: is the broadcaster running and the interface right? try --iface (now {})",
                        cfg.group, silent.as_secs(), cfg.iface);
                }
                if last_drop_report.elapsed() >= DROP_REPORT_EVERY {
                    report_drops(&last_drops, receiver.drops());
                    last_drops = receiver.drops().clone();
                    last_drop_report = Instant::now();
                }
            }
            Some((id, index)) = unstored.recv() => receiver.forget_complete(id, index),
            _ = cancel.cancelled() => break,
        }
    }
    status.record_receiver(receiver.stats(), receiver.drops(), received, simulated);
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

fn store_worker(
    mut store: Store,
    mut rx: mpsc::Receiver<Event>,
    unstored: mpsc::Sender<(ObjectId, u32)>,
    status: StatusBoard,
    export: Option<PathBuf>,
    mut manifests: HashMap<ObjectId, Manifest>,
) {
    let mut w = StoreWorker {
        store: &mut store,
        status: &status,
        export: export.map(crate::export::Exporter::new),
        last_warn: None,
        suppressed: 0,
    };
    for m in manifests.values() {
        w.publish(m);
        w.finish_if_complete(m);
    }
    while let Some(event) = rx.blocking_recv() {
        match event {
            Event::Manifest(m) => {
                if let Err(e) = w.store.put_manifest(&m) {
                    w.fail(&e);
                }
                let m: Manifest = (*m).clone();
                w.publish(&m);
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
                        if let (Some(exporter), Some(m)) = (w.export.as_mut(), manifests.get(&c.object_id()))
                        {
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
                let n = w.store.chunk_count(&c.object_id());
                w.status.update_object(c.object_id(), |o| o.chunks_stored = n);
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
