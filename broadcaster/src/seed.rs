//! The seeding run: a producer thread codes and signs chunks in carousel order,
//! and an async pacer sends their datagrams at the configured rate.
//!
//! The producer works ahead by at most [`BATCHES_AHEAD`] chunks, so memory stays
//! bounded (about 1.5 × chunk size each) whatever is being seeded.

use crate::config::{ConfigError, SeedConfig};
use crate::feedback::Feedback;
use crate::generation::Generation;
use crate::ingest::{self, IngestError, SourceFile};
use crate::origin::{self, Catalog, OriginError};
use crate::status::StatusBoard;
use crate::unix_now;
use hubcast_daemon::units::RateSetting;
use hubcast_keys::{NodeAddr, SignerKeys};
use hubcast_protocol::sender::{Carousel, ObjectPlan, Pacer, PreparedChunk, Sender, Step};
use hubcast_protocol::verify::Signer;
use hubcast_protocol::wire::{self, CatalogRoot, Kind, Manifest};
use hubcast_transport::batch::BatchSend;
use hubcast_transport::{Interface, MulticastConfig, TransportError};
use rand::Rng;
use std::net::SocketAddr;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// Prepared chunks the producer may be ahead of the pacer.
pub const BATCHES_AHEAD: usize = 4;
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Ingest(#[from] IngestError),
    #[error(transparent)]
    Catalog(#[from] crate::channel_catalog::CatalogBuildError),
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error(transparent)]
    Origin(#[from] OriginError),
    #[error("sending to {group}: {source}")]
    Send {
        group: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "--tracker {0}: hubs cannot dial this address; give the one they reach as --tracker-public HOST:PORT"
    )]
    TrackerPublic(SocketAddr),
    #[error(transparent)]
    Certificate(#[from] crate::renewal::NotValidNow),
    #[error(transparent)]
    Chain(#[from] crate::renewal::ChainError),
    #[error("reading {path} while seeding (did it change or vanish?): {source}")]
    Read {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What a run sent.
#[derive(Clone, Debug, Default)]
pub struct SeedReport {
    pub objects: usize,
    pub object_bytes: u64,
    pub datagrams: u64,
    pub bytes: u64,
    pub elapsed: Duration,
}

enum Batch {
    Datagrams(Vec<Vec<u8>>),
    /// Object `.0`'s manifest mixed in from now on (in order with the
    /// datagrams: after everything handed in before it has been sent).
    Manifest(usize, Vec<u8>),
    Failed(SeedError),
}

/// The multicast socket, with the testing aid `--simulate-loss`. Datagrams
/// go out in runs of one size, one system call a run (UDP GSO; the
/// interface, or the kernel at it, cuts them apart).
pub(crate) struct Out {
    socket: Arc<tokio::net::UdpSocket>,
    batch: BatchSend,
    group: SocketAddr,
    loss: f64,
    rng: rand::rngs::ThreadRng,
    simulated_drops: u64,
    /// The run not sent yet: `count` datagrams of `segment` bytes, the last
    /// maybe shorter.
    run: Vec<u8>,
    segment: usize,
    count: usize,
}

/// A run's payload bytes at most: all of it goes in one IP packet up to the
/// interface (65,507 for IPv4), with room to spare.
const RUN_BYTES: usize = 60_000;

impl Out {
    pub(crate) fn new(
        socket: Arc<tokio::net::UdpSocket>,
        group: SocketAddr,
        loss: f64,
    ) -> Result<Out, SeedError> {
        let batch = BatchSend::new(&socket).map_err(|source| SeedError::Send { group, source })?;
        Ok(Out {
            socket,
            batch,
            group,
            loss,
            rng: rand::thread_rng(),
            simulated_drops: 0,
            run: Vec::with_capacity(RUN_BYTES + wire::MAX_DATAGRAM),
            segment: 0,
            count: 0,
        })
    }

    /// The sender's counters on the status board.
    pub(crate) fn publish(&self, status: &StatusBoard, sender: &Sender, done: bool) {
        let s = sender.stats();
        status.update(|st| {
            let c = &mut st.carousel;
            (c.datagrams, c.bytes, c.simulated_drops, c.done) =
                (s.datagrams, s.bytes, self.simulated_drops, done);
        });
    }

    /// Send every datagram the sender's pacing allows now.
    pub(crate) async fn send_ready(&mut self, sender: &mut Sender) -> Result<(), SeedError> {
        while let Some(d) = sender.poll_transmit(Instant::now()) {
            self.put(&d).await?;
        }
        self.flush().await
    }

    /// Send what is queued, at the paced rate, unless told to stop.
    pub(crate) async fn drain(
        &mut self,
        sender: &mut Sender,
        cancel: &CancellationToken,
    ) -> Result<(), SeedError> {
        while !cancel.is_cancelled() && sender.queued() > 0 {
            match sender.poll_transmit(Instant::now()) {
                Some(d) => self.put(&d).await?,
                None => {
                    self.flush().await?;
                    tokio::time::sleep_until(sender.poll_timeout().unwrap_or_else(Instant::now).into()).await
                }
            }
        }
        self.flush().await
    }

    /// Send one datagram now.
    pub(crate) async fn send(&mut self, d: &[u8]) -> Result<(), SeedError> {
        self.put(d).await?;
        self.flush().await
    }

    /// Add `d` to the run, sending the run first if `d` cannot join it.
    async fn put(&mut self, d: &[u8]) -> Result<(), SeedError> {
        let lose = self.loss > 0.0
            && wire::decode_header(d).is_ok_and(|h| h.kind == Kind::Symbol)
            && self.rng.gen_bool(self.loss);
        if lose {
            self.simulated_drops += 1;
            return Ok(());
        }
        let full = self.count >= self.batch.max_segments() || self.run.len() + d.len() > RUN_BYTES;
        if self.count > 0 && (d.len() > self.segment || full) {
            self.flush().await?;
        }
        if self.count == 0 {
            self.segment = d.len();
        }
        self.run.extend_from_slice(d);
        self.count += 1;
        // A shorter datagram can only end a run.
        if d.len() < self.segment {
            self.flush().await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), SeedError> {
        if self.count == 0 {
            return Ok(());
        }
        let sent = self.batch.send(&self.socket, self.group, &self.run, self.segment).await;
        (self.count, self.segment) = (0, 0);
        self.run.clear();
        sent.map_err(|source| SeedError::Send { group: self.group, source })
    }
}

/// Where hubs reach the origin service: `--tracker-public`, else the bound
/// address, an unspecified IP replaced by the multicast interface's.
pub(crate) fn public_tracker(
    bound: NodeAddr,
    public: Option<SocketAddr>,
    iface: &Interface,
) -> Result<NodeAddr, SeedError> {
    let addr = match (public, iface) {
        (Some(p), _) => p,
        (None, _) if !bound.addr.ip().is_unspecified() => bound.addr,
        (None, Interface::V4(ip)) => SocketAddr::new((*ip).into(), bound.addr.port()),
        (None, Interface::V6Index(_)) => return Err(SeedError::TrackerPublic(bound.addr)),
    };
    if addr.ip().is_unspecified() || addr.ip().is_multicast() || addr.port() == 0 {
        return Err(SeedError::TrackerPublic(addr));
    }
    Ok(NodeAddr { id: bound.id, addr })
}

/// How often the root's statements (the revocation list) go out with the
/// carousel.
const STATEMENTS_EVERY: Duration = Duration::from_secs(1);

/// How often a lingering broadcaster sends a manifest, so the channel is
/// heard. Four a second: a hub takes 4 s without multicast for a desert
/// (and a bridge for no longer live); at 50% loss one a second left a hub
/// 4 s without one 6% of the time, and island bridges dropped their feeds.
const HEARTBEAT_EVERY: Duration = Duration::from_millis(250);

/// Seed `cfg.paths` until `cfg.rounds` rounds are done (0: until `cancel`).
/// With `cfg.tracker`, the origin service answers repair requests meanwhile,
/// and for `cfg.linger_secs` after the last round.
pub async fn seed(
    cfg: &SeedConfig,
    keys: SignerKeys,
    status: StatusBoard,
    cancel: CancellationToken,
) -> Result<SeedReport, SeedError> {
    let rate = cfg.validate()?;
    crate::renewal::check_valid_now(&keys.cert, unix_now())?;
    let mut scanner = ingest::Scanner::default();
    let scanned = scanner.scan(&cfg.paths, &cfg.on_demand)?;
    let mut mc = MulticastConfig::new(cfg.group);
    mc.interface = cfg.iface.parse::<Interface>()?;
    mc.ttl = cfg.ttl;
    let socket = Arc::new(hubcast_transport::multicast::sender(&mc)?);
    let signer = Arc::new(crate::renewal::signer(&cfg.keys, keys)?);
    // The origin service binds first: the manifests name it, for hubs not
    // given --tracker.
    let bound = cfg.tracker.map(|addr| origin::bind(addr, cfg.state_dir())).transpose()?;
    let public = match &bound {
        Some((_, at)) => Some(public_tracker(*at, cfg.tracker_public, &mc.interface)?),
        None => None,
    };
    let mut generation = Generation::build(cfg, scanned, public, 0)?;
    let (object_count, total) = generation.seeded();
    let fingerprint = signer.channel();
    status.update(|s| {
        s.fingerprint = fingerprint.to_string();
        s.group = cfg.group.to_string();
        (s.objects, s.object_bytes) = (object_count, total);
    });
    let service_stop = cancel.child_token();
    tokio::spawn(crate::renewal::watch(
        cfg.keys.clone(),
        signer.clone(),
        status.clone(),
        service_stop.clone(),
    ));
    let full_k = wire::source_symbols(cfg.chunk_size, cfg.symbol_size);
    let rate_control = cfg.rate_control();
    let mut rate_now = rate_control.as_ref().map_or(rate, |r| r.rate());
    let feedback = Feedback::new(cfg.fec_overhead, cfg.fec_max, full_k, rate_control);
    status.update(|s| {
        let r = &mut s.rate;
        (r.auto, r.bits_per_sec) = (cfg.rate_setting() == RateSetting::Auto, rate_now * 8);
        (r.min_bits_per_sec, r.max_bits_per_sec) = (cfg.rate_min.bits_per_sec(), cfg.rate_max.bits_per_sec());
    });
    status.update(|s| {
        (s.fec.overhead, s.fec.min, s.fec.max) = (cfg.fec_overhead, cfg.fec_overhead, cfg.fec_max)
    });
    let origin_catalog = {
        let (plans, files) = generation.origin_objects();
        Arc::new(Catalog::new(&plans, &files, cfg.expiry_secs))
    };
    let service = match (bound, public) {
        (Some((endpoint, _)), Some(at)) => {
            info!(tracker = %at, "origin service named in every manifest; hubs out of the multicast's reach take --tracker {at}");
            status.update(|s| s.origin_service = Some(at.to_string()));
            let cap = cfg.repair_rate.map(|r| r.bytes_per_sec());
            let budget = origin::RepairBudget::shared(rate, cfg.repair_share, cap);
            let service = origin::Service {
                endpoint,
                catalog: origin_catalog.clone(),
                signer: signer.clone(),
                socket: socket.clone(),
                control_group: SocketAddr::new(cfg.group.ip(), cfg.group.port().wrapping_add(1)),
                budget: budget.clone(),
                feedback: Some(feedback.clone()),
                status: status.clone(),
            };
            // Hubs report their loss to the origin service: the echo of the
            // round goes out with the carousel.
            tokio::spawn(crate::feedback::echo(
                feedback.clone(),
                signer.clone(),
                socket.clone(),
                cfg.group,
                cfg.expiry_secs,
                status.clone(),
                service_stop.clone(),
            ));
            Some((tokio::spawn(origin::run(service, service_stop.clone())), budget))
        }
        _ => None,
    };
    info!(objects = object_count, bytes = total, group = %cfg.group, iface = %mc.interface, rate = %cfg.rate_setting(), rate_bytes_per_sec = rate,
        %fingerprint, "seeding");

    // Burst: 2 ms at the rate (the highest, with --rate auto; tokio timers
    // tick in milliseconds), at least 64 KiB.
    let burst = (rate as usize / 500).max(64 << 10);
    let mut sender =
        Sender::new(generation.manifests(&signer), cfg.manifest_every, Pacer::new(rate_now, burst));
    let mut producer = Producer::start(cfg, &signer, &feedback, &generation, &cancel)?;
    let mut rescans = rescan_triggers(cfg.rescan_secs, cancel.clone());

    let mut out = Out::new(socket, cfg.group, cfg.simulate_loss)?;
    let started = Instant::now();
    let mut last_progress = started;
    let mut failure = None;
    'outer: loop {
        if let Some((_, budget)) = &service {
            let unpaid = budget.take_unpaid();
            if unpaid > 0 {
                sender.debit(Instant::now(), unpaid);
            }
        }
        if let Some(r) = feedback.rate().filter(|r| *r != rate_now) {
            sender.set_rate(Instant::now(), r);
            rate_now = r;
        }
        out.send_ready(&mut sender).await?;
        out.publish(&status, &sender, false);
        if last_progress.elapsed() >= PROGRESS_EVERY {
            last_progress = Instant::now();
            let s = sender.stats();
            let secs = started.elapsed().as_secs_f64();
            info!(
                sent_mb = s.bytes / 1_000_000,
                mbit_per_sec = (s.bytes as f64 * 8.0 / secs / 1e6) as u64,
                "progress"
            );
        }
        if let Some(at) = sender.poll_timeout().filter(|_| sender.queued() > 0) {
            tokio::select! {
                _ = tokio::time::sleep_until(at.into()) => continue,
                _ = cancel.cancelled() => break,
            }
        }
        tokio::select! {
            batch = producer.rx.recv() => match batch {
                Some(Batch::Datagrams(d)) => sender.handle_datagrams(d),
                Some(Batch::Manifest(i, m)) => sender.handle_manifest(i, m),
                Some(Batch::Failed(e)) => { failure = Some(e); break 'outer; }
                None => break,
            },
            Some(why) = rescans.recv() => {
                let scan = {
                    let (paths, on_demand) = (cfg.paths.clone(), cfg.on_demand.clone());
                    let mut s = std::mem::take(&mut scanner);
                    tokio::task::spawn_blocking(move || (s.scan(&paths, &on_demand), s)).await
                };
                let scanned = match scan {
                    Ok((Ok(scanned), s)) => { scanner = s; scanned }
                    Ok((Err(e), s)) => { scanner = s; warn!(why, "rescan: {e}; seeding on with what was there"); continue }
                    Err(e) => { warn!(why, "rescan: {e}"); continue }
                };
                if scanned == generation.scanned {
                    debug!(why, "rescan: nothing changed");
                    continue;
                }
                // The next generation: the producer stops where it is, and
                // a new one starts the carousel over the new objects.
                producer.stop();
                generation = Generation::build(cfg, scanned, public, generation.seq)?;
                let (plans, files) = generation.origin_objects();
                origin_catalog.replace_files(&plans, &files);
                sender.new_generation(generation.manifests(&signer));
                let (objects, bytes) = generation.seeded();
                status.update(|s| (s.objects, s.object_bytes) = (objects, bytes));
                info!(why, objects, bytes, catalog_version = generation.seq, "rescan: the seeded files changed; publishing them");
                producer = Producer::start(cfg, &signer, &feedback, &generation, &cancel)?;
            }
            _ = cancel.cancelled() => break,
        }
    }
    out.drain(&mut sender, &cancel).await?;
    out.publish(&status, &sender, failure.is_none() && !cancel.is_cancelled());
    if let Some((service, budget)) = service {
        budget.set_carousel_idle(true);
        if failure.is_none() && !cancel.is_cancelled() && cfg.linger_secs > 0 {
            info!(secs = cfg.linger_secs, "last round sent; answering repair requests until stopped or for");
            let until = tokio::time::sleep(Duration::from_secs(cfg.linger_secs));
            tokio::pin!(until);
            let mut beat = tokio::time::interval(HEARTBEAT_EVERY);
            let mut heartbeat = Heartbeat::default();
            for i in 0.. {
                tokio::select! {
                    _ = beat.tick() => if let Some(d) = heartbeat.get(&generation, &signer, cfg.expiry_secs, i) {
                        out.send(&d).await?;
                    },
                    _ = &mut until => break,
                    _ = cancel.cancelled() => break,
                }
            }
        }
        service_stop.cancel();
        let _ = service.await;
    }
    cancel.cancel();
    producer.stop();
    if let Some(e) = failure {
        return Err(e);
    }
    let s = sender.stats();
    Ok(SeedReport {
        objects: object_count,
        object_bytes: total,
        datagrams: s.datagrams,
        bytes: s.bytes,
        elapsed: started.elapsed(),
    })
}

/// What a lingering broadcaster repeats, with the root's statements;
/// signed again when half its lifetime is gone or the key or statements
/// changed.
#[derive(Default)]
struct Heartbeat {
    datagrams: Vec<Vec<u8>>,
    expiry: u64,
    epoch: u64,
}

impl Heartbeat {
    fn get(
        &mut self,
        generation: &Generation,
        signer: &Signer,
        expiry_secs: u64,
        i: usize,
    ) -> Option<Vec<u8>> {
        let now = unix_now();
        if self.datagrams.is_empty() || self.expiry < now + expiry_secs / 2 || self.epoch != signer.epoch() {
            (self.expiry, self.epoch) = (now + expiry_secs, signer.epoch());
            self.datagrams = generation.heartbeat(signer, self.expiry);
            self.datagrams.extend(signer.statements().iter().cloned());
        }
        self.datagrams.get(i % self.datagrams.len().max(1)).cloned()
    }
}

/// The producer thread of one generation, and what it hands the pacer.
struct Producer {
    rx: mpsc::Receiver<Batch>,
    stop: CancellationToken,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Producer {
    fn start(
        cfg: &SeedConfig,
        signer: &Arc<Signer>,
        feedback: &Arc<Feedback>,
        generation: &Generation,
        cancel: &CancellationToken,
    ) -> Result<Producer, SeedError> {
        let (tx, rx) = mpsc::channel::<Batch>(BATCHES_AHEAD);
        let stop = cancel.child_token();
        let (cfg, signer, feedback, halt) = (cfg.clone(), signer.clone(), feedback.clone(), stop.clone());
        let (plans, files) = (generation.plans.clone(), generation.files.clone());
        let announced =
            Announced { plans: generation.announced.clone(), catalog_root: generation.catalog_root };
        let thread = std::thread::Builder::new()
            .name("seed-producer".into())
            .spawn(move || produce(&cfg, &signer, &feedback, plans, announced, &files, &tx, &halt))
            .map_err(|source| SeedError::Read { path: "producer thread".into(), source })?;
        Ok(Producer { rx, stop, thread: Some(thread) })
    }

    /// Stop the thread and wait for it: it ends at its next chunk (or at
    /// once, if it waits for room to hand one in).
    fn stop(&mut self) {
        self.stop.cancel();
        self.rx.close();
        while self.rx.try_recv().is_ok() {}
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What makes the broadcaster scan its paths again: SIGHUP, and every
/// `every_secs` (0: never). Each yields why.
fn rescan_triggers(every_secs: u64, cancel: CancellationToken) -> mpsc::Receiver<&'static str> {
    let (tx, rx) = mpsc::channel(1);
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hangup = signal(SignalKind::hangup()).ok();
        let every = Duration::from_secs(every_secs.max(1));
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        loop {
            let why = tokio::select! {
                Some(()) = async { hangup.as_mut()?.recv().await } => "SIGHUP",
                _ = tick.tick(), if every_secs > 0 => "interval",
                _ = cancel.cancelled() => return,
            };
            // One waiting is enough: a scan finds everything up to when it runs.
            let _ = tx.try_send(why);
        }
    });
    rx
}

/// What the carousel mixes in but never sends chunks of: the catalog's root
/// and the on-demand objects' manifests (after the carousel's manifests, in
/// that order).
struct Announced {
    plans: Vec<ObjectPlan>,
    catalog_root: CatalogRoot,
}

/// Producer thread: walk the carousel, read and prepare each chunk, hand the
/// datagrams to the pacer. Re-signs manifests when half their lifetime is gone or the key was renewed.
#[allow(clippy::too_many_arguments)]
fn produce(
    cfg: &SeedConfig,
    signer: &Signer,
    feedback: &Feedback,
    mut plans: Vec<ObjectPlan>,
    mut announced: Announced,
    files: &[SourceFile],
    tx: &mpsc::Sender<Batch>,
    stop: &CancellationToken,
) {
    let rounds = (cfg.rounds > 0).then_some(cfg.rounds);
    let tag = signer.channel_tag();
    let mut buf = Vec::new();
    let mut open: Option<(usize, std::fs::File)> = None;
    let mut passed = vec![false; plans.len()];
    let mut signed_at = signer.epoch();
    // The root's statements (the revocation list) go out every second and
    // at every change.
    let mut statements_at: Option<std::time::Instant> = None;
    // All of a generation's manifests share one expiry.
    let mut expiry = plans.first().map_or(u64::MAX, |p| p.manifest.expiry);
    for step in Carousel::new(&plans.clone(), rounds) {
        if stop.is_cancelled() {
            return;
        }
        // Half their lifetime gone, or a new signing key: every manifest
        // mixed in is signed again (checked at every step: one chunk may
        // take seconds at a low rate, and a key may be renewed late).
        let now = unix_now();
        let changed = signed_at != signer.epoch();
        if changed || statements_at.is_none_or(|t| t.elapsed() >= STATEMENTS_EVERY) {
            statements_at = Some(std::time::Instant::now());
            let statements = signer.statements();
            if !statements.is_empty() && tx.blocking_send(Batch::Datagrams(statements.to_vec())).is_err() {
                return;
            }
        }
        if expiry < now + cfg.expiry_secs / 2 || changed {
            (expiry, signed_at) = (now + cfg.expiry_secs, signer.epoch());
            for (i, p) in plans.iter_mut().enumerate() {
                p.manifest.expiry = expiry;
                let m = Manifest { round_end: passed[i], ..p.manifest.clone() };
                if tx.blocking_send(Batch::Manifest(i, signer.manifest_datagram(&m))).is_err() {
                    return;
                }
            }
            announced.catalog_root.expiry = expiry;
            let root = signer.catalog_root_datagram(&announced.catalog_root);
            if tx.blocking_send(Batch::Manifest(plans.len(), root)).is_err() {
                return;
            }
            for (i, p) in announced.plans.iter_mut().enumerate() {
                p.manifest.expiry = expiry;
                let d = signer.manifest_datagram(&p.manifest);
                if tx.blocking_send(Batch::Manifest(plans.len() + 1 + i, d)).is_err() {
                    return;
                }
            }
        }
        let batch = match step {
            Step::Manifest { object, end } => {
                // After its chunks, the object's manifest says the round has
                // passed it, and so do its copies mixed in until its next round:
                // a hub that joined later learns to repair it from peers.
                passed[object] = end;
                let d =
                    signer.manifest_datagram(&Manifest { round_end: end, ..plans[object].manifest.clone() });
                if tx.blocking_send(Batch::Datagrams(vec![d.clone()])).is_err() {
                    return;
                }
                Batch::Manifest(object, d)
            }
            Step::Chunk { object, chunk, round } => {
                let plan = &plans[object];
                let range = plan.chunk_range(chunk);
                let file = &files[object];
                if open.as_ref().map(|(i, _)| *i) != Some(object) {
                    match std::fs::File::open(&file.path) {
                        Ok(f) => open = Some((object, f)),
                        Err(source) => {
                            let _ = tx.blocking_send(Batch::Failed(SeedError::Read {
                                path: file.path.clone(),
                                source,
                            }));
                            return;
                        }
                    }
                }
                buf.resize((range.end - range.start) as usize, 0);
                let read = open.as_ref().map(|(_, f)| f.read_exact_at(&mut buf, range.start));
                if let Some(Err(source)) = read {
                    let _ =
                        tx.blocking_send(Batch::Failed(SeedError::Read { path: file.path.clone(), source }));
                    return;
                }
                let prepared = PreparedChunk::prepare(signer, &plan.manifest, chunk, &buf);
                let overhead = feedback.overhead(prepared.encoded.k);
                Batch::Datagrams(prepared.round_datagrams(tag, overhead, round))
            }
        };
        if tx.blocking_send(batch).is_err() {
            return;
        }
    }
    if plans.is_empty() {
        warn!("nothing to send");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_expired_certificate_is_refused_before_anything_is_sent() {
        let keys = hubcast_keys::ChannelKeys::generate(&mut rand::rngs::OsRng, 1000, 10);
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f"), b"x").unwrap();
        let cfg = SeedConfig { paths: vec![dir.path().join("f")], ..SeedConfig::default() };
        let keys = SignerKeys::load_from(&keys);
        let err = seed(&cfg, keys, StatusBoard::default(), CancellationToken::new()).await.unwrap_err();
        assert!(matches!(err, SeedError::Certificate(_)), "{err}");
        assert!(err.to_string().contains("broadcaster certify"), "{err}");
        // A time people read, not unix seconds.
        assert!(err.to_string().contains("1970-01-01T00:16:50Z"), "{err}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_rescan_comes_every_interval_and_never_with_zero() {
        let cancel = CancellationToken::new();
        let mut every = rescan_triggers(300, cancel.clone());
        let started = tokio::time::Instant::now();
        assert_eq!(every.recv().await, Some("interval"));
        assert_eq!(started.elapsed(), Duration::from_secs(300), "not before the interval");
        let mut never = rescan_triggers(0, cancel.clone());
        tokio::time::sleep(Duration::from_secs(3600)).await;
        assert!(never.try_recv().is_err(), "--rescan-every 0: SIGHUP only");
        cancel.cancel();
    }

    /// The lingering heartbeat is signed again when the key or the root's
    /// statements change and when half its lifetime is gone: one signed once
    /// at the start went out expired on a long seed.
    #[test]
    fn the_heartbeat_is_signed_again_at_a_new_epoch_and_at_half_its_life() {
        use hubcast_protocol::wire::{decode, Datagram};
        let keys = hubcast_keys::ChannelKeys::generate(&mut rand::rngs::OsRng, 0, u64::MAX / 2);
        let signer = Signer::new(SignerKeys::load_from(&keys));
        let state = tempfile::tempdir().unwrap();
        let cfg = SeedConfig { state_dir: Some(state.path().into()), ..SeedConfig::default() };
        let generation = Generation::build(&cfg, Vec::new(), None, 0).unwrap();
        let expiries = |d: &[Vec<u8>]| -> Vec<u64> {
            d.iter()
                .filter_map(|d| match decode(d).ok()?.1 {
                    Datagram::Manifest(m) => Some(m.body.expiry),
                    Datagram::CatalogRoot(r) => Some(r.body.expiry),
                    _ => None,
                })
                .collect()
        };
        let mut hb = Heartbeat::default();
        let first = hb.get(&generation, &signer, 600, 0).unwrap();
        let signed = hb.datagrams.clone();
        assert!(!signed.is_empty() && expiries(&signed).iter().all(|e| *e >= unix_now() + 599));
        assert_eq!(hb.get(&generation, &signer, 600, 0), Some(first), "the same datagrams while valid");
        assert_eq!(hb.datagrams, signed);

        // A new revocation list: signed again, and the list goes with it.
        let list = hubcast_keys::RevocationList::issue(&keys.root, 1, unix_now(), &[9].into()).unwrap();
        signer.set_revocations(&list);
        hb.get(&generation, &signer, 600, 0);
        assert_eq!(hb.datagrams.len(), signed.len() + 1);
        assert_eq!(hb.datagrams.last(), signer.statements().last());

        // Half its life gone (as if 300 s had passed): a fresh expiry.
        hb.expiry = unix_now() + 299;
        hb.get(&generation, &signer, 600, 0);
        assert!(hb.expiry >= unix_now() + 599);
        assert!(expiries(&hb.datagrams).iter().all(|e| *e >= unix_now() + 599), "every datagram re-signed");
    }

    #[test]
    fn the_manifests_name_an_address_hubs_can_dial() {
        let id = hubcast_keys::NodeId([7; 32]);
        let at = |a: &str| NodeAddr { id, addr: a.parse().unwrap() };
        let v4 = Interface::V4("10.1.2.3".parse().unwrap());
        let named = |bound, public: Option<&str>, iface| {
            public_tracker(at(bound), public.map(|p| p.parse().unwrap()), iface).map(|t| t.addr.to_string())
        };
        assert_eq!(named("127.0.0.1:7000", None, &v4).unwrap(), "127.0.0.1:7000");
        assert_eq!(named("0.0.0.0:7000", None, &v4).unwrap(), "10.1.2.3:7000");
        assert_eq!(named("0.0.0.0:7000", Some("192.0.2.9:9"), &v4).unwrap(), "192.0.2.9:9");
        assert_eq!(named("[::1]:7000", None, &Interface::V6Index(2)).unwrap(), "[::1]:7000");
        let err = named("[::]:7000", None, &Interface::V6Index(2)).unwrap_err();
        assert!(err.to_string().contains("--tracker-public"), "{err}");
        assert!(named("0.0.0.0:7000", Some("239.1.1.1:9"), &v4).is_err());
    }
}
