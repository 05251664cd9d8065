//! The hub's store worker: one thread that owns the [`Store`]. It stores
//! what the receive loop completes, exports finished objects, makes live
//! segments playable, reads chunks for serving peers, and scrubs the store
//! in the background. A chunk it finds gone goes back to the receive loop
//! ([`Unstored`]) to be collected or repaired again.

use crate::live::LiveBoard;
use crate::status::StatusBoard;
use crate::store::{Store, StoreError};
use hubcast_daemon::unix_ms;
use hubcast_protocol::receiver::VerifiedChunk;
use hubcast_protocol::serve::{ChunkRequest, ChunkServer, KeptTable};
use hubcast_protocol::store::StoredManifest;
use hubcast_protocol::verify::VerifiedManifest;
use hubcast_protocol::wire::{CatalogRoot, Manifest};
use hubcast_protocol::ObjectId;
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};

/// Ask the store worker for what answers a request ([`read_to_serve`]).
pub struct StoreRead {
    pub req: ChunkRequest,
    pub reply: oneshot::Sender<Option<FromStore>>,
}

/// What the store gives to answer a request.
pub enum FromStore {
    /// The answer itself, from just the symbols asked for: every one checked
    /// against the digests kept with the chunk.
    Answer(Vec<Vec<u8>>),
    /// The whole chunk, checked against its hash, ready to serve (and cache).
    Chunk(Box<ChunkServer>),
}

/// Run by the store worker: answer from the symbols asked for when the kept
/// table covers them (a few lost symbols cost a few symbols' reads, not the
/// chunk's), else the whole chunk. `None` when the chunk is not stored (or is
/// damaged; the store then drops it).
pub fn read_to_serve(store: &mut Store, req: &ChunkRequest) -> Result<Option<FromStore>, StoreError> {
    let (id, index) = (&req.object_id, req.index);
    let Some((ticket, pages)) = store.read_kept(id, index)? else { return Ok(None) };
    let Ok(table) = KeptTable::new(ticket, pages) else { return Ok(None) };
    if let Some(ranges) = table.ranges_for(req) {
        // Unreadable or not matching its digests: the whole-chunk read below
        // finds out what is wrong and drops the chunk if it is damaged.
        if let Ok(Ok(datagrams)) = store.read_ranges(id, index, &ranges).map(|b| table.answer_from(req, &b)) {
            return Ok(Some(FromStore::Answer(datagrams)));
        }
    }
    let Some((data, hash)) = store.read_chunk_hashed(id, index)? else { return Ok(None) };
    Ok(ChunkServer::from_stored(table, data, hash).ok().map(|s| FromStore::Chunk(Box::new(s))))
}

/// At most one store warning per this interval; the rest are counted.
const STORE_WARN_EVERY: Duration = Duration::from_secs(10);

/// How often the store worker is asked to scrub the next chunks.
pub(crate) const SCRUB_TICK: Duration = Duration::from_secs(1);

/// Jobs for the store worker: what to store, reads for serving peers, and
/// live segments that left the back buffer.
pub enum StoreJob {
    /// A manifest the receiver accepted, and the form it is kept in (the
    /// signed datagram it came in).
    Manifest(VerifiedManifest, StoredManifest),
    /// A chunk to store, and its room in the queue ([`StoreRoom`]).
    Chunk(VerifiedChunk, QueueRoom),
    Read(StoreRead),
    /// A stored chunk whole, checked against its hash (`None`: not stored,
    /// or found damaged: then the hub fetches it again). For the HTTP gateway.
    ReadChunk(ObjectId, u32, oneshot::Sender<Option<Vec<u8>>>),
    Retire(Vec<ObjectId>),
    /// A second passed (the driver's clock says `now`): check the next
    /// stored chunks ([`Scrub`]).
    Scrub(Instant),
    /// What the hub's user asked of an object (with the API token).
    Ask(ObjectId, Ask),
    /// A catalog root newer than the one held, verified, and its datagram.
    CatalogRoot(CatalogRoot, Vec<u8>),
    /// A newer revocation list: kept, checked again at start.
    Revocations(Vec<u8>),
    /// A root rotation followed: kept, followed again at start.
    Rotation(u64, Vec<u8>),
    /// A query of the catalog (`/api/catalog`).
    Catalog(crate::library::Query, oneshot::Sender<Result<crate::library::Found, String>>),
    /// The catalog's entry for a name (the gateway's `Content-Type` and
    /// `Last-Modified`).
    Entry(String, oneshot::Sender<Option<hubcast_protocol::catalog::Entry>>),
}

/// What the hub's user can ask of an object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ask {
    /// Hold it: an evicted object is taken again, a missing chunk is asked
    /// of peers now rather than when the carousel comes round.
    Fetch,
    /// Keep it whatever the quota (and fetch it, if it is not held).
    Pin,
    /// Let the quota evict it again.
    Unpin,
}

/// The store queue's bound in bytes: chunks wait in memory for the store
/// worker up to this much, then the receive loop waits (and the kernel drops
/// what overflows its socket). A count of jobs was the bound before: 64
/// small files' chunks filled it while their fsyncs ran, and a folder of
/// 3,000 small files at 50 Mbit/s lost 7,570 datagrams in the kernel.
pub const STORE_QUEUE_BYTES: usize = 64 << 20;
/// Jobs queued at most, whatever their size (a bound on the queue's slots).
pub const STORE_QUEUE_JOBS: usize = 16_384;
/// Chunks the store worker takes into one batch at most (one commit).
const BATCH_CHUNKS: usize = 256;
/// How long a batch waits for more chunks after its first, and how often it
/// looks: the chunks and manifests of this long are one commit. A read
/// (a peer's, the gateway's) ends the wait when it comes.
const GATHER: Duration = Duration::from_millis(50);
const GATHER_POLL: Duration = Duration::from_millis(5);
/// A batch this big (in jobs, or in chunk bytes) does not wait.
const GATHER_JOBS: usize = 32;
const GATHER_BYTES: usize = 4 << 20;

/// Room in the store queue, in KiB of chunk data: taken before a chunk is
/// queued, given back when the store worker is done with it.
#[derive(Clone)]
pub struct StoreRoom {
    room: std::sync::Arc<tokio::sync::Semaphore>,
    limit_kib: u32,
    /// Times a chunk found no room and waited.
    waits: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

/// A queued chunk's share of [`StoreRoom`], given back on drop.
pub struct QueueRoom {
    _permit: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl StoreRoom {
    pub fn new(bytes: usize) -> StoreRoom {
        let limit_kib = u32::try_from((bytes >> 10).max(1)).unwrap_or(u32::MAX >> 3);
        StoreRoom {
            room: std::sync::Arc::new(tokio::sync::Semaphore::new(limit_kib as usize)),
            limit_kib,
            waits: Default::default(),
        }
    }

    /// Wait for room for a chunk of `len` bytes (a chunk larger than the
    /// whole queue takes all of it).
    pub async fn take(&self, len: usize) -> QueueRoom {
        let kib = u32::try_from(len.div_ceil(1 << 10).max(1)).unwrap_or(u32::MAX).min(self.limit_kib);
        if let Ok(p) = self.room.clone().try_acquire_many_owned(kib) {
            return QueueRoom { _permit: Some(p) };
        }
        self.waits.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        QueueRoom { _permit: self.room.clone().acquire_many_owned(kib).await.ok() }
    }

    /// Bytes of chunks queued now (to the KiB), and the bound.
    pub fn queued(&self) -> (u64, u64) {
        let limit = u64::from(self.limit_kib);
        (limit.saturating_sub(self.room.available_permits() as u64) * 1024, limit * 1024)
    }

    /// Times a chunk waited for room.
    pub fn waits(&self) -> u64 {
        self.waits.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// What the store worker tells the receive loop about a chunk it reported
/// complete.
#[derive(Clone, Debug)]
pub enum Unstored {
    /// It could not be stored (a full disk): collect it when it comes again.
    Failed(ObjectId, u32),
    /// It was stored and is gone (damaged or missing on disk): repair it now.
    Lost(ObjectId, u32),
    /// The whole object left the store to stay within `--quota`: do not
    /// take it from the channel again until it is asked for.
    Evicted(ObjectId),
    /// The user asked for the object ([`Ask::Fetch`], [`Ask::Pin`]): take
    /// it from the channel again, and its missing chunks from peers now.
    Wanted(ObjectId),
    /// `--keep tagged`: the pushed objects the newest catalog's tags select.
    Chosen(Vec<ObjectId>),
    /// A reader (the gateway) waits for this chunk: fetch it first.
    Awaited(ObjectId, u32),
}

/// `--quota`: the most the store holds of objects (`None`: no limit), and
/// the objects evicted before this run.
pub struct Quota {
    pub bytes: Option<u64>,
    pub evicted: Vec<ObjectId>,
    /// Objects the user pinned: never evicted.
    pub pinned: Vec<ObjectId>,
    /// `--keep tagged`: the tags whose pushed objects the hub takes.
    pub tags: Option<Vec<String>>,
}

/// An object read through the gateway this recently is being read: it is
/// not evicted.
const READ_GRACE: Duration = Duration::from_secs(30);

/// The background scrub: every stored chunk checked against its hash, at
/// most `rate` bytes a second, a pass starting at most every `every`.
pub struct Scrub {
    rate: u64,
    every: Duration,
    cursor: Option<(ObjectId, u32)>,
    pass_started: Option<Instant>,
}

impl Scrub {
    pub fn new(rate: u64, every: Duration) -> Scrub {
        Scrub { rate, every, cursor: None, pass_started: None }
    }
}

/// Open-time cleanup: live segments whose deadline passed longer ago than
/// any back buffer keeps are dropped from the store. Returns the manifests
/// left, and the segments dropped.
pub(crate) fn drop_stale_segments(
    store: &mut Store,
    held: Vec<VerifiedManifest>,
    now_ms: u64,
) -> Result<(Vec<VerifiedManifest>, Vec<ObjectId>), StoreError> {
    let (mut kept, mut dropped) = (Vec::new(), Vec::new());
    for m in held {
        match m.live {
            Some(l) if l.deadline_ms.saturating_add(STALE_SEGMENT_MS) < now_ms => {
                store.remove_object(&m.object_id)?;
                dropped.push(m.object_id);
            }
            _ => kept.push(m),
        }
    }
    Ok((kept, dropped))
}

/// A live segment this long past its deadline is of no use after a restart.
const STALE_SEGMENT_MS: u64 = 60_000;

#[allow(clippy::too_many_arguments)]
pub(crate) fn store_worker(
    mut store: Store,
    mut rx: mpsc::Receiver<StoreJob>,
    unstored: mpsc::Sender<Unstored>,
    status: StatusBoard,
    export: Option<PathBuf>,
    mut manifests: HashMap<ObjectId, Manifest>,
    live: LiveBoard,
    mut scrub: Scrub,
    quota: Quota,
    started: Instant,
) {
    let library = crate::library::Library::open(&store, &status, quota.tags);
    let mut w = StoreWorker {
        store: &mut store,
        status: &status,
        export: export.map(crate::export::Exporter::new),
        live,
        unstored: &unstored,
        exports: Vec::new(),
        quota: quota.bytes,
        last_use: HashMap::new(),
        use_clock: 0,
        read_at: HashMap::new(),
        now: started,
        last_warn: None,
        suppressed: 0,
        library,
        catalog_stored: false,
    };
    for m in manifests.values() {
        if !w.live.on_manifest(m) {
            w.publish(m);
        }
        w.finish_if_complete(m);
    }
    w.record_exports();
    for id in &quota.evicted {
        status.update_object(*id, |o| o.evicted = true);
    }
    for id in &quota.pinned {
        status.update_object(*id, |o| o.pinned = true);
    }
    status.with_chunks(|c| c.pinned = quota.pinned.len() as u64);
    if w.quota.is_none() {
        w.quota = w.store.default_quota(status.held_bytes());
    }
    w.make_room(0);
    w.choose();
    while let Some(first) = rx.blocking_recv() {
        // Manifests and chunks that queued up are stored together: one
        // commit for the manifests, one for the chunks.
        let (mut kept, mut chunks) = (Vec::new(), Vec::new());
        let mut next = Some(first);
        let gathering = Instant::now();
        loop {
            match next.take() {
                Some(StoreJob::Chunk(c, room)) => chunks.push((c, room)),
                Some(StoreJob::Manifest(m, stored)) => kept.push((m, stored)),
                other => {
                    next = other;
                    break;
                }
            }
            if chunks.len() + kept.len() >= BATCH_CHUNKS {
                break;
            }
            next = rx.try_recv().ok();
            // A small batch gathers for a moment: each commit rewrites the
            // index's pages it touches, and one per chunk as they trickle
            // in wrote 6.5% more than the content (a 1 MiB chunk every
            // ~20 ms at 400 Mbit/s). A full one goes at once: waiting made
            // 3,000 small files 8-15% slower.
            let small = chunks.len() + kept.len() < GATHER_JOBS
                && chunks.iter().map(|(c, _)| c.data().len()).sum::<usize>() < GATHER_BYTES;
            while next.is_none() && small && gathering.elapsed() < GATHER {
                std::thread::sleep(GATHER_POLL);
                next = rx.try_recv().ok();
            }
        }
        if !kept.is_empty() {
            let stored: Vec<&StoredManifest> = kept.iter().map(|(_, s)| s).collect();
            if let Err(e) = w.store.put_manifests(&stored) {
                w.fail(&e);
            }
            for (m, _) in kept {
                w.on_manifest((*m).clone(), &mut manifests);
            }
        }
        if !chunks.is_empty() {
            // Room first: the store never holds more than the quota and a
            // batch (a batch is at most 4 MiB when chunks trickle in).
            w.make_room(chunks.iter().map(|(c, _)| c.data().len() as u64).sum());
            for (c, _) in &chunks {
                w.touch(c.object_id());
            }
            w.store_chunks(chunks, &manifests);
        }
        w.record_exports();
        if std::mem::take(&mut w.catalog_stored) && w.library.on_object(w.store, w.status, &mut manifests) {
            w.choose();
        }
        match next {
            // Taken into the batch above.
            None | Some(StoreJob::Chunk(..) | StoreJob::Manifest(..)) => {}
            Some(StoreJob::Read(r)) => {
                let chunk = read_to_serve(w.store, &r.req).unwrap_or_else(|e| {
                    w.fail(&e);
                    None
                });
                let _ = r.reply.send(chunk);
            }
            Some(StoreJob::ReadChunk(id, index, reply)) => {
                w.read_at.insert(id, Instant::now());
                w.touch(id);
                let chunk = w.store.read_chunk(&id, index).unwrap_or_else(|e| {
                    w.fail(&e);
                    None
                });
                if chunk.is_none() {
                    // Best effort: the reader asks again shortly.
                    let _ = w.unstored.try_send(Unstored::Awaited(id, index));
                }
                let _ = reply.send(chunk);
            }
            Some(StoreJob::Scrub(now)) => {
                w.now = now;
                w.scrub(&mut scrub);
            }
            Some(StoreJob::Ask(id, ask)) => w.ask(id, ask),
            Some(StoreJob::CatalogRoot(root, datagram)) => {
                if w.library.on_root(w.store, w.status, root, &datagram, &mut manifests) {
                    w.choose();
                }
            }
            Some(StoreJob::Rotation(version, datagram)) => {
                if let Err(e) = w.store.put_rotation(version, &datagram) {
                    w.fail(&e);
                }
            }
            Some(StoreJob::Revocations(datagram)) => {
                if let Err(e) = w.store.put_revocations(&datagram) {
                    w.fail(&e);
                }
            }
            Some(StoreJob::Catalog(query, reply)) => {
                let found = w.library.query(w.store, w.status, &query).map_err(|e| e.to_string());
                let _ = reply.send(found);
            }
            Some(StoreJob::Entry(name, reply)) => {
                let entry = w.store.catalog_entry(&name).unwrap_or_else(|e| {
                    w.fail(&e);
                    None
                });
                let _ = reply.send(entry);
            }
            Some(StoreJob::Retire(ids)) => {
                for id in ids {
                    if let Err(e) = w.store.remove_object(&id) {
                        w.fail(&e);
                    }
                    manifests.remove(&id);
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
    unstored: &'a mpsc::Sender<Unstored>,
    /// Exports renamed into place and not yet recorded ([`StoreWorker::record_exports`]).
    exports: Vec<(ObjectId, String, PathBuf)>,
    /// `--quota` in bytes.
    quota: Option<u64>,
    /// When each object was last used (stored into, or read), as a count.
    last_use: HashMap<ObjectId, u64>,
    use_clock: u64,
    /// When the gateway last read each object.
    read_at: HashMap<ObjectId, Instant>,
    /// The driver's clock as of its last scrub tick (a second at most behind).
    now: Instant,
    last_warn: Option<Instant>,
    suppressed: u64,
    /// The channel's catalog, assembled here.
    library: crate::library::Library,
    /// A catalog object was stored whole since the library last looked.
    catalog_stored: bool,
}

impl StoreWorker<'_> {
    /// With `--keep tagged`, tell the receiver what the catalog's tags select.
    fn choose(&self) {
        if let Some(ids) = self.library.chosen(self.store) {
            info!(objects = ids.len(), "--keep tagged: the objects the catalog's tags select");
            if self.unstored.try_send(Unstored::Chosen(ids)).is_err() {
                warn!("the hub is too busy to take what --keep tagged selects now; it is told at the next catalog");
            }
        }
    }

    fn touch(&mut self, id: ObjectId) {
        self.use_clock += 1;
        self.last_use.insert(id, self.use_clock);
    }

    /// Evict the least recently used complete objects until `need` more
    /// bytes fit within the quota. Never one being read; an object still
    /// arriving is not complete, so never one in progress.
    fn make_room(&mut self, need: u64) {
        let mut held = self.status.held_bytes();
        let Some(quota) = self.quota else {
            return self.status.with_chunks(|c| c.held_bytes = held);
        };
        if held + need > quota {
            // Listed only when room is needed: most batches fit.
            let mut candidates = self.status.evictable();
            let now = Instant::now();
            candidates
                .retain(|(id, _)| self.read_at.get(id).is_none_or(|t| now.duration_since(*t) > READ_GRACE));
            candidates.sort_by_key(|(id, _)| (self.last_use.get(id).copied().unwrap_or(0), *id));
            for (id, bytes) in candidates {
                if held + need <= quota {
                    break;
                }
                match self.store.evict(&id, hubcast_daemon::unix_ms() / 1000) {
                    Ok(exported) => {
                        self.remove_export(exported.as_deref());
                        self.status.update_object(id, |o| {
                            (o.complete, o.evicted, o.exported) = (false, true, None);
                            (o.chunks_stored, o.bytes_stored, o.percent) = (0, 0, 0.0);
                        });
                        self.status.with_chunks(|c| c.evicted += 1);
                        let _ = self.unstored.try_send(Unstored::Evicted(id));
                        self.last_use.remove(&id);
                        held = held.saturating_sub(bytes);
                        info!(object = %id, bytes, quota, "evicted, the least recently used, to stay within --quota");
                    }
                    Err(e) => self.fail(&e),
                }
            }
        }
        self.status.with_chunks(|c| (c.quota_bytes, c.held_bytes) = (Some(quota), held));
    }

    /// The user's ask: recorded in the store first, so that it holds
    /// across a restart, then shown, then handed to the receiver.
    fn ask(&mut self, id: ObjectId, ask: Ask) {
        let Some(o) = self.status.object(&id) else { return };
        if ask == Ask::Unpin || ask == Ask::Pin {
            let pinned = (ask == Ask::Pin).then(|| hubcast_daemon::unix_ms() / 1000);
            if let Err(e) = self.store.pin(&id, pinned) {
                return self.fail(&e);
            }
            if o.pinned != pinned.is_some() {
                self.status.update_object(id, |o| o.pinned = pinned.is_some());
                self.status.with_chunks(|c| match pinned {
                    Some(_) => c.pinned += 1,
                    None => c.pinned = c.pinned.saturating_sub(1),
                });
            }
            info!(object = %id, name = %o.name, pinned = pinned.is_some(), "asked by the hub's user");
        }
        if ask == Ask::Unpin {
            // Unpinned, it may have to go now.
            return self.make_room(0);
        }
        if o.complete {
            return;
        }
        if o.evicted {
            if let Err(e) = self.store.unevict(&id) {
                return self.fail(&e);
            }
            self.status.update_object(id, |o| o.evicted = false);
        }
        self.status.with_chunks(|c| c.fetches += 1);
        info!(object = %id, name = %o.name, "fetching on the user's ask: from peers now, and the channel");
        if self.unstored.try_send(Unstored::Wanted(id)).is_err() {
            warn!(object = %id, "the hub is too busy to take the ask now: ask again");
        }
    }

    /// An evicted object's export: the same bytes, so it goes too.
    fn remove_export(&self, name: Option<&str>) {
        let (Some(exporter), Some(name)) = (self.export.as_ref(), name) else { return };
        let Some(relative) = crate::store::safe_relative_path(name) else { return };
        let path = exporter.dir().join(relative);
        if let Err(e) = std::fs::remove_file(&path) {
            if e.kind() != std::io::ErrorKind::NotFound {
                warn!(path = %path.display(), "an evicted object's export could not be removed: {e}");
            }
        }
    }

    /// A manifest the receiver accepted (and the store kept).
    fn on_manifest(&mut self, m: Manifest, manifests: &mut HashMap<ObjectId, Manifest>) {
        if self.live.on_manifest(&m) {
            // Its chunks may have come first, counted as an object.
            self.status.remove_object(&m.object_id);
        } else {
            self.publish(&m);
        }
        self.finish_if_complete(&m);
        manifests.insert(m.object_id, m);
    }

    /// Store a batch of chunks (one commit), write them into their exports,
    /// and finish the objects they complete.
    fn store_chunks(
        &mut self,
        batch: Vec<(VerifiedChunk, QueueRoom)>,
        manifests: &HashMap<ObjectId, Manifest>,
    ) {
        // Where each chunk goes in its object, when the manifest says.
        let place = |c: &VerifiedChunk| {
            let m = manifests.get(&c.object_id())?;
            let range = hubcast_protocol::sender::chunk_range(m.size, m.chunk_size, c.index());
            (range.end - range.start == c.data().len() as u64).then_some(range.start)
        };
        let chunks: Vec<(&VerifiedChunk, Option<u64>)> = batch.iter().map(|(c, _)| (c, place(c))).collect();
        // `Err(None)`: the batch failed as a whole, told once.
        let results: Vec<Result<bool, Option<StoreError>>> = match self.store.put_chunks(&chunks) {
            Ok(results) => results.into_iter().map(|r| r.map_err(Some)).collect(),
            Err(e) => {
                self.fail(&e);
                chunks.iter().map(|_| Err(None)).collect()
            }
        };
        let mut touched: Vec<ObjectId> = Vec::new();
        for ((c, _), result) in chunks.iter().zip(results) {
            match result {
                Ok(true) => self.status.with_chunks(|s| {
                    s.stored_this_run += 1;
                    s.stored += 1;
                }),
                Ok(false) => self.status.with_chunks(|s| s.refetched += 1),
                Err(e) => {
                    if let Some(e) = e {
                        self.fail(&e);
                    }
                    // If the queue is full the chunk stays marked until a restart,
                    // which reloads the truth from the store.
                    let _ = self.unstored.try_send(Unstored::Failed(c.object_id(), c.index()));
                }
            }
            if !touched.contains(&c.object_id()) {
                touched.push(c.object_id());
            }
        }
        for id in touched {
            if !self.live.is_segment(&id) {
                let n = self.store.chunk_count(&id);
                // Publishing the manifest sets it for an object not listed yet.
                self.status.update_listed(id, |o| o.chunks_stored = n);
            }
            if let Some(m) = manifests.get(&id) {
                self.finish_if_complete(m);
            }
        }
    }

    /// Count a failure; log at most one line per STORE_WARN_EVERY. A chunk
    /// found lost is taken out of what the hub holds.
    fn fail(&mut self, e: &StoreError) {
        if let StoreError::Lost { id, index, .. } = e {
            self.lost(*id, *index);
        }
        self.status.store_error(e.to_string());
        if self.last_warn.is_some_and(|t| self.now.saturating_duration_since(t) < STORE_WARN_EVERY) {
            self.suppressed += 1;
            return;
        }
        if self.suppressed > 0 {
            warn!("{e} ({} more store or export failures since the last warning)", self.suppressed);
        } else {
            warn!("{e}");
        }
        self.last_warn = Some(self.now);
        self.suppressed = 0;
    }

    /// A stored chunk is gone from the store (damaged or missing): the
    /// object is incomplete again, and the receive loop repairs the chunk.
    fn lost(&mut self, id: ObjectId, index: u32) {
        self.status.with_chunks(|c| {
            c.lost += 1;
            c.stored = c.stored.saturating_sub(1);
        });
        let n = self.store.chunk_count(&id);
        if !self.live.is_segment(&id) {
            self.status.update_listed(id, |o| {
                o.chunks_stored = n;
                o.complete = false;
            });
        }
        // A full queue: the chunk waits for the carousel, or a restart.
        let _ = self.unstored.try_send(Unstored::Lost(id, index));
    }

    /// Check the next chunks of the scrub pass, within a second's budget.
    fn scrub(&mut self, scrub: &mut Scrub) {
        let now = self.now;
        if scrub.cursor.is_none() {
            if scrub.pass_started.is_some_and(|t| now.duration_since(t) < scrub.every) {
                return;
            }
            scrub.pass_started = Some(now);
        }
        let budget = scrub.rate.saturating_mul(SCRUB_TICK.as_secs().max(1));
        let step = match self.store.scrub(scrub.cursor, budget) {
            Ok(step) => step,
            Err(e) => return self.fail(&e),
        };
        self.status.with_chunks(|c| {
            c.scrubbed += step.checked;
            c.scrub_passes += u64::from(step.done);
        });
        scrub.cursor = if step.done { None } else { step.last };
        for (id, index, why) in step.lost {
            warn!(object = %id, chunk = index, "the scrub found a stored chunk that {why}; dropped, fetched again");
            // `lost` shows the object incomplete, with its chunks now.
            self.lost(id, index);
        }
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
        // The catalog's own objects are the library's, not the user's (its
        // chunks may have come before the manifest, counted as an object).
        if hubcast_protocol::catalog::is_catalog_name(&m.name) {
            self.status.remove_object(&m.object_id);
            return;
        }
        let chunks = hubcast_protocol::sender::chunk_count(m.size, m.chunk_size);
        let stored = self.store.chunk_count(&m.object_id);
        self.status.update_object(m.object_id, |o| {
            o.name = m.name.clone();
            o.size = m.size;
            o.chunk_size = m.chunk_size;
            o.chunks = chunks;
            o.chunks_stored = stored;
            o.on_demand = m.on_demand;
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
        if hubcast_protocol::catalog::is_catalog_name(&m.name) {
            self.catalog_stored = true;
            return;
        }
        let mut exported = None;
        if let Some(exporter) = self.export.as_mut() {
            let already = matches!(self.store.exported_name(&m.object_id), Ok(Some(n)) if n == m.name);
            let target = exporter.dir().join(crate::store::safe_relative_path(&m.name).unwrap_or_default());
            if already && target.exists() {
                exported = Some(target);
            } else {
                // Complete once the export is recorded (`record_exports`);
                // a failed one is tried again at the next chunk, or the next
                // start.
                match exporter.finish(self.store, m) {
                    Ok(path) => self.exports.push((m.object_id, m.name.clone(), path)),
                    Err(e) => self.fail(&e),
                }
                return;
            }
        }
        self.status.update_object(m.object_id, |o| {
            o.complete = true;
            o.exported = exported.map(|p| p.display().to_string());
        });
    }

    /// The exports finished since the last call: made durable and recorded
    /// together; then they are complete.
    fn record_exports(&mut self) {
        let done = std::mem::take(&mut self.exports);
        let Some(exporter) = self.export.as_ref().filter(|_| !done.is_empty()) else { return };
        let list: Vec<(ObjectId, &str, &std::path::Path)> =
            done.iter().map(|(id, name, path)| (*id, name.as_str(), path.as_path())).collect();
        if let Err(e) = exporter.record(self.store, &list) {
            // Tried again at the object's next chunk, or the next start.
            return self.fail(&e);
        }
        for (id, name, path) in done {
            info!(%name, path = %path.display(), "complete and exported");
            self.status.update_object(id, |o| {
                o.complete = true;
                o.exported = Some(path.display().to_string());
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_store_queue_is_bounded_by_bytes_and_counts_its_waits() {
        let room = StoreRoom::new(4 << 10);
        let a = room.take(3000).await;
        assert_eq!(room.queued(), (3 << 10, 4 << 10), "3,000 bytes take 3 KiB of 4");
        // A chunk larger than the whole queue takes all of it, once there is.
        let big = room.clone();
        let waiting = tokio::spawn(async move { big.take(1 << 20).await });
        tokio::task::yield_now().await;
        assert_eq!(room.waits(), 1, "no room: the receive loop waits");
        assert!(!waiting.is_finished());
        drop(a);
        let b = waiting.await.expect("the wait ends once the worker is done with the first");
        assert_eq!(room.queued(), (4 << 10, 4 << 10));
        drop(b);
        assert_eq!(room.queued(), (0, 4 << 10));
    }
}
