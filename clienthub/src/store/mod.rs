//! The hub's persistent store of verified chunks.
//!
//! Layout under the store directory:
//!
//! ```text
//! index.redb                 signed manifests, stored chunks (with their BLAKE3), exports,
//!                            and the bytes of chunks of at most INLINE_MAX
//! chunks/<object-hex>/<n>    the bytes of chunk n, exactly as verified (larger chunks)
//! tmp/                       chunk files being written
//! quarantine/                entries found in chunks/ or tmp/ that the hub did
//!                            not write, moved aside at open (never deleted)
//! ```
//!
//! Crash safety: a chunk is written to `tmp/`, fsynced, renamed into `chunks/`,
//! the directory fsynced, and only then recorded in the index (one redb commit,
//! itself durable). Chunks are stored in batches ([`Store::put_chunks`]): every
//! file of a batch is durable before the one commit that records them all, so
//! a batch is either recorded whole or not at all. A small chunk's bytes go
//! into that commit itself (iroh-blobs keeps small blobs inline the same way):
//! a folder of small files costs one commit per batch, not five fsyncs a file. The index is the truth: on open, `tmp/` is emptied and chunk
//! files the index does not name (a crash between rename and commit) are deleted.
//! Reads check the chunk's BLAKE3 against the index, so a file damaged on disk is
//! never served or exported; it is dropped and fetched again. The hub scrubs
//! the store in the background ([`Store::scrub`]), and open drops the chunks
//! whose files are gone, so damage is found without a reader asking.
//!
//! Only verified data comes in: the write API takes [`VerifiedChunk`], which
//! only the protocol's receiver makes, and manifests as the signed datagrams
//! the receiver accepted. Those are verified again when the hub loads them
//! (`hubcast_protocol::hub::Hub::restore`): the store never vouches for one.

use hubcast_protocol::receiver::VerifiedChunk;
use hubcast_protocol::sender::chunk_count;
use hubcast_protocol::store::StoredManifest;
use hubcast_protocol::wire::Manifest;
use hubcast_protocol::ObjectId;
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use std::collections::HashMap;
use std::fs;
use std::io::{self, Write};
use std::path::{Component, Path, PathBuf};

mod fsck;
pub use fsck::{fsck, FsckReport};

/// Where entries the hub did not write are moved, under the store directory.
pub const QUARANTINE: &str = "quarantine";

/// Object id → when the manifest came (unix seconds, u64 BE) ++ the signed
/// datagram it came in.
const MANIFESTS: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("signed_manifests");
/// Before 2026-12-05 manifests were kept decoded, unsigned, under this name:
/// dropped at open (the channel sends them again; the chunks stay).
const OLD_MANIFESTS: &str = "manifests";
/// Key: object id ++ chunk index (BE). Value: chunk BLAKE3.
const CHUNKS: TableDefinition<&[u8; 36], &[u8; 32]> = TableDefinition::new("chunks");
/// Same key as CHUNKS: the signed ticket datagram the chunk was verified
/// against, kept to serve the chunk to peers.
const TICKETS: TableDefinition<&[u8; 36], &[u8]> = TableDefinition::new("tickets");
/// Same key as CHUNKS: the digest table pages checked when the chunk was
/// verified, each as page index (u16 BE), length (u16 BE), digests.
const PAGES: TableDefinition<&[u8; 36], &[u8]> = TableDefinition::new("pages");
/// Same key as CHUNKS: chunks the store held and dropped (damaged or
/// missing), not stored again yet. A hub repairs these from peers at once,
/// also after a restart or a `clienthub fsck`.
const LOST: TableDefinition<&[u8; 36], ()> = TableDefinition::new("lost");
/// Same key as CHUNKS: the bytes of a chunk of at most [`INLINE_MAX`]
/// (no file under `chunks/`).
const INLINE: TableDefinition<&[u8; 36], &[u8]> = TableDefinition::new("inline_chunks");
/// Chunks up to this long are kept in the index, not in files of their own.
/// A file costs an inode, a directory entry and its fsyncs; on this
/// machine's ext4, creating files was most of a small-file hub's CPU
/// (3,000 small files at 200 Mbit/s: 617 objects/s at 16 KiB, 863 at 64 KiB).
pub const INLINE_MAX: usize = 64 << 10;
/// Object id → the name it was exported under.
const EXPORTED: TableDefinition<&[u8; 32], &str> = TableDefinition::new("exported");

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("store index: {0} (another hub on this store? one store, one hub)")]
    Index(String),
    #[error(
        "the disk holding {0} is full: free space, or move the store (--store) or the export (--export)"
    )]
    DiskFull(PathBuf),
    #[error("export {path}: {source} (is --export a folder this user can write?)")]
    Export {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "object name `{0}` is not a safe relative path (absolute, `..`, empty part or NUL); not exported"
    )]
    UnsafeName(String),
    #[error("store: chunk {index} of {id:?} {why}; dropped from the index, it will be fetched again")]
    Lost { id: ObjectId, index: u32, why: LostWhy },
    #[error("exported bytes of `{0}` do not hash to its object id; not exported")]
    ExportMismatch(String),
}

/// An export failure at `path`; a full disk is told as such.
pub(crate) fn export_at(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| {
        if source.raw_os_error() == Some(28) {
            StoreError::DiskFull(path.to_owned())
        } else {
            StoreError::Export { path: path.to_owned(), source }
        }
    }
}

/// Create `dir` if needed and write a probe file in it: a folder the hub
/// cannot write is refused at start, not at the first object.
pub fn check_writable(dir: &Path) -> io::Result<()> {
    fs::create_dir_all(dir)?;
    let probe = dir.join(format!(".hubcast-write-check-{}", std::process::id()));
    let result = fs::File::create(&probe).and_then(|mut f| io::Write::write_all(&mut f, b"ok"));
    let _ = fs::remove_file(&probe);
    result
}

/// Why a stored chunk was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LostWhy {
    /// Its file is gone.
    Missing,
    /// Its bytes no longer hash to what was verified.
    Damaged,
}

impl std::fmt::Display for LostWhy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LostWhy::Missing => "is missing on disk",
            LostWhy::Damaged => "does not match its hash on disk",
        })
    }
}

pub(crate) fn io_at(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| {
        if source.raw_os_error() == Some(28) {
            StoreError::DiskFull(path.to_owned())
        } else {
            StoreError::Io { path: path.to_owned(), source }
        }
    }
}

fn idx<E: std::fmt::Display>(e: E) -> StoreError {
    StoreError::Index(e.to_string())
}

/// A failed commit; a full disk is told as such (small chunks are written
/// by the commit itself).
fn commit_err(dir: &Path) -> impl FnOnce(redb::CommitError) -> StoreError + '_ {
    move |e| match &e {
        redb::CommitError::Storage(redb::StorageError::Io(io)) if io.raw_os_error() == Some(28) => {
            StoreError::DiskFull(dir.to_owned())
        }
        _ => idx(e),
    }
}

/// A chunk's bytes with their BLAKE3 ([`Store::read_chunk_hashed`]).
pub type HashedChunk = (Vec<u8>, [u8; 32]);

/// A stored chunk's ticket datagram and kept table pages ([`Store::read_kept`]).
pub type Kept = (Vec<u8>, Vec<(u16, Vec<u8>)>);

fn encode_pages(pages: &[(u16, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(pages.iter().map(|(_, d)| 4 + d.len()).sum());
    for (g, digests) in pages {
        out.extend_from_slice(&g.to_be_bytes());
        out.extend_from_slice(&(digests.len() as u16).to_be_bytes());
        out.extend_from_slice(digests);
    }
    out
}

/// The pages [`encode_pages`] wrote; a damaged tail is left out (the server
/// checks every page against the ticket anyway).
fn decode_pages(mut bytes: &[u8]) -> Vec<(u16, Vec<u8>)> {
    let mut pages = Vec::new();
    while let [g0, g1, l0, l1, rest @ ..] = bytes {
        let len = usize::from(u16::from_be_bytes([*l0, *l1]));
        let Some(digests) = rest.get(..len) else { break };
        pages.push((u16::from_be_bytes([*g0, *g1]), digests.to_vec()));
        bytes = &rest[len..];
    }
    pages
}

fn chunk_key(id: &ObjectId, index: u32) -> [u8; 36] {
    let mut k = [0u8; 36];
    k[..32].copy_from_slice(&id.0);
    k[32..].copy_from_slice(&index.to_be_bytes());
    k
}

pub struct Store {
    dir: PathBuf,
    db: Database,
    /// Chunks stored per object, kept in step with the index.
    counts: HashMap<ObjectId, u32>,
}

/// What the store held when it was opened.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OpenReport {
    pub manifests: usize,
    pub chunks: u64,
    pub orphans_removed: u64,
    /// Chunks the index named whose files were gone: dropped, to be fetched again.
    pub missing: Vec<(ObjectId, u32)>,
    /// Every chunk dropped and not stored again (`missing` among them, and
    /// those dropped before: by a read, the scrub, or `clienthub fsck`).
    pub lost: Vec<(ObjectId, u32)>,
    /// Entries the hub did not write, moved to `quarantine/`: (from, to).
    pub quarantined: Vec<(PathBuf, PathBuf)>,
    /// The store held manifests the old way (decoded, unsigned): dropped.
    pub old_manifests_dropped: bool,
}

/// One step of a scrub ([`Store::scrub`]).
#[derive(Debug, Default)]
pub struct ScrubStep {
    pub last: Option<(ObjectId, u32)>,
    pub checked: u64,
    pub bytes: u64,
    pub lost: Vec<(ObjectId, u32, LostWhy)>,
    /// The pass reached the last chunk.
    pub done: bool,
}

/// (object, index) of a CHUNKS key.
fn split_key(k: &[u8; 36]) -> (ObjectId, u32) {
    let mut id = [0u8; 32];
    id.copy_from_slice(&k[..32]);
    (ObjectId(id), u32::from_be_bytes([k[32], k[33], k[34], k[35]]))
}

impl Store {
    pub fn open(dir: &Path) -> Result<(Store, OpenReport), StoreError> {
        for sub in ["chunks", "tmp"] {
            fs::create_dir_all(dir.join(sub)).map_err(io_at(dir))?;
        }
        let tmp = dir.join("tmp");
        // Chunk files being written when the hub stopped (named as
        // `put_chunk` names them) are deleted; anything else is not the hub's
        // and is moved aside (after the index is open).
        let mut strays = Vec::new();
        for e in fs::read_dir(&tmp).map_err(io_at(&tmp))? {
            let p = e.map_err(io_at(&tmp))?.path();
            let ours = p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                n.split_once('.').is_some_and(|(id, i)| {
                    hubcast_keys::decode_hex(id).is_some_and(|b| b.len() == 32) && i.parse::<u32>().is_ok()
                })
            });
            if ours && p.is_file() {
                fs::remove_file(&p).map_err(io_at(&p))?;
            } else {
                strays.push(p);
            }
        }
        let db = Database::create(dir.join("index.redb")).map_err(idx)?;
        let old_manifests_dropped = {
            let w = db.begin_write().map_err(idx)?;
            let old: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new(OLD_MANIFESTS);
            let dropped = w.delete_table(old).map_err(idx)?;
            w.open_table(MANIFESTS).map_err(idx)?;
            w.open_table(CHUNKS).map_err(idx)?;
            w.open_table(TICKETS).map_err(idx)?;
            w.open_table(PAGES).map_err(idx)?;
            w.open_table(EXPORTED).map_err(idx)?;
            w.open_table(LOST).map_err(idx)?;
            w.open_table(INLINE).map_err(idx)?;
            w.commit().map_err(idx)?;
            dropped
        };
        let mut store = Store { dir: dir.to_owned(), db, counts: HashMap::new() };
        let mut report = OpenReport { old_manifests_dropped, ..OpenReport::default() };
        for p in strays {
            report.quarantined.push((p.clone(), store.quarantine(&p)?));
        }
        let mut indexed = std::collections::HashSet::new();
        let mut on_disk = std::collections::HashSet::new();
        {
            let r = store.db.begin_read().map_err(idx)?;
            report.manifests = r.open_table(MANIFESTS).map_err(idx)?.len().map_err(idx)? as usize;
            for entry in r.open_table(CHUNKS).map_err(idx)?.iter().map_err(idx)? {
                let (k, _) = entry.map_err(idx)?;
                let k = k.value();
                let mut id = [0u8; 32];
                id.copy_from_slice(&k[..32]);
                *store.counts.entry(ObjectId(id)).or_default() += 1;
                indexed.insert(*k);
                report.chunks += 1;
            }
            // Kept in the index: no file to look for.
            for entry in r.open_table(INLINE).map_err(idx)?.iter().map_err(idx)? {
                on_disk.insert(*entry.map_err(idx)?.0.value());
            }
        }
        // Files the index does not name: written before a crash, never
        // committed (deleted), or not the hub's at all (moved aside).
        let chunks = dir.join("chunks");
        for obj in fs::read_dir(&chunks).map_err(io_at(&chunks))? {
            let obj = obj.map_err(io_at(&chunks))?.path();
            let id = obj.file_name().and_then(|n| n.to_str()).and_then(hubcast_keys::decode_hex);
            let Some(id) = id.filter(|id| id.len() == 32 && obj.is_dir()).map(|id| {
                let mut a = [0u8; 32];
                a.copy_from_slice(&id);
                ObjectId(a)
            }) else {
                report.quarantined.push((obj.clone(), store.quarantine(&obj)?));
                continue;
            };
            for f in fs::read_dir(&obj).map_err(io_at(&obj))? {
                let f = f.map_err(io_at(&obj))?.path();
                let n = f.file_name().and_then(|n| n.to_str()).and_then(|n| n.parse::<u32>().ok());
                match n.filter(|_| f.is_file()) {
                    Some(n) if indexed.contains(&chunk_key(&id, n)) => {
                        on_disk.insert(chunk_key(&id, n));
                    }
                    Some(_) => {
                        fs::remove_file(&f).map_err(io_at(&f))?;
                        report.orphans_removed += 1;
                    }
                    None => report.quarantined.push((f.clone(), store.quarantine(&f)?)),
                }
            }
        }
        // Chunks the index names whose files are gone: dropped, so the hub
        // fetches them again.
        for k in indexed.iter().filter(|k| !on_disk.contains(*k)) {
            let (id, index) = split_key(k);
            store.drop_chunk(&id, index, LostWhy::Missing)?;
            report.missing.push((id, index));
        }
        report.chunks -= report.missing.len() as u64;
        report.lost = store.lost()?;
        Ok((store, report))
    }

    /// Move an entry the hub did not write into `quarantine/`, under a name
    /// that does not clash. Nothing of the user's is deleted.
    fn quarantine(&self, path: &Path) -> Result<PathBuf, StoreError> {
        let dir = self.dir.join(QUARANTINE);
        fs::create_dir_all(&dir).map_err(io_at(&dir))?;
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let mut to = dir.join(&name);
        let mut n = 1;
        while to.exists() {
            to = dir.join(format!("{name}.{n}"));
            n += 1;
        }
        fs::rename(path, &to).map_err(io_at(path))?;
        Ok(to)
    }

    fn chunk_path(&self, id: &ObjectId, index: u32) -> PathBuf {
        self.dir.join("chunks").join(id.to_hex()).join(index.to_string())
    }

    pub fn has_chunk(&self, id: &ObjectId, index: u32) -> Result<bool, StoreError> {
        let r = self.db.begin_read().map_err(idx)?;
        Ok(r.open_table(CHUNKS).map_err(idx)?.get(&chunk_key(id, index)).map_err(idx)?.is_some())
    }

    /// Chunks dropped (damaged or missing) and not stored again.
    pub fn lost(&self) -> Result<Vec<(ObjectId, u32)>, StoreError> {
        let r = self.db.begin_read().map_err(idx)?;
        let t = r.open_table(LOST).map_err(idx)?;
        let mut out = Vec::new();
        for entry in t.iter().map_err(idx)? {
            out.push(split_key(entry.map_err(idx)?.0.value()));
        }
        Ok(out)
    }

    /// Every stored chunk, as (object, index).
    pub fn chunks(&self) -> Result<Vec<(ObjectId, u32)>, StoreError> {
        let r = self.db.begin_read().map_err(idx)?;
        let t = r.open_table(CHUNKS).map_err(idx)?;
        let mut out = Vec::new();
        for entry in t.iter().map_err(idx)? {
            out.push(split_key(entry.map_err(idx)?.0.value()));
        }
        Ok(out)
    }

    pub fn chunk_count(&self, id: &ObjectId) -> u32 {
        self.counts.get(id).copied().unwrap_or(0)
    }

    /// Store a verified chunk durably. `false` if it was already stored.
    pub fn put_chunk(&mut self, c: &VerifiedChunk) -> Result<bool, StoreError> {
        // One chunk in, one result out; a failed write is this chunk's error.
        self.put_chunks(&[c])?.pop().unwrap_or(Ok(false))
    }

    /// Store a batch of verified chunks durably, with one index commit: each
    /// `Ok(false)` if it was already stored (or came twice), `Err` for one
    /// whose file could not be written (the others are stored). `Err` for
    /// the whole batch when the index cannot take it: none of it is stored.
    pub fn put_chunks(
        &mut self,
        batch: &[&VerifiedChunk],
    ) -> Result<Vec<Result<bool, StoreError>>, StoreError> {
        let mut results = Vec::with_capacity(batch.len());
        let mut new: Vec<(&VerifiedChunk, [u8; 36])> = Vec::new();
        let mut dirs: Vec<PathBuf> = Vec::new();
        // One read of the index for the whole batch.
        let r = self.db.begin_read().map_err(idx)?;
        let held = r.open_table(CHUNKS).map_err(idx)?;
        for c in batch {
            let key = chunk_key(&c.object_id(), c.index());
            if held.get(&key).map_err(idx)?.is_some() || new.iter().any(|(_, k)| *k == key) {
                results.push(Ok(false));
                continue;
            }
            if c.data().len() > INLINE_MAX {
                let path = self.chunk_path(&c.object_id(), c.index());
                let tmp = self.dir.join("tmp").join(format!("{}.{}", c.object_id().to_hex(), c.index()));
                if let Err(e) = write_file(&tmp, &path, c.data()) {
                    results.push(Err(e));
                    continue;
                }
                let parent = path.parent().unwrap_or(Path::new(".")).to_owned();
                if !dirs.contains(&parent) {
                    dirs.push(parent);
                }
            }
            results.push(Ok(true));
            new.push((c, key));
        }
        drop((held, r));
        // The renames are durable before the commit names them.
        for d in &dirs {
            fs::File::open(d).and_then(|f| f.sync_all()).map_err(io_at(d))?;
        }
        if new.is_empty() {
            return Ok(results);
        }
        let w = self.db.begin_write().map_err(idx)?;
        {
            let mut chunks = w.open_table(CHUNKS).map_err(idx)?;
            let mut tickets = w.open_table(TICKETS).map_err(idx)?;
            let mut pages = w.open_table(PAGES).map_err(idx)?;
            let mut lost = w.open_table(LOST).map_err(idx)?;
            let mut inline = w.open_table(INLINE).map_err(idx)?;
            for (c, key) in &new {
                chunks.insert(key, c.hash()).map_err(idx)?;
                tickets.insert(key, c.ticket()).map_err(idx)?;
                pages.insert(key, encode_pages(c.pages()).as_slice()).map_err(idx)?;
                lost.remove(key).map_err(idx)?;
                if c.data().len() <= INLINE_MAX {
                    inline.insert(key, c.data()).map_err(idx)?;
                }
            }
        }
        w.commit().map_err(commit_err(&self.dir))?;
        for (c, _) in &new {
            *self.counts.entry(c.object_id()).or_default() += 1;
        }
        Ok(results)
    }

    /// Read a stored chunk, checked against its hash. A damaged or missing
    /// chunk is removed from the index and reported as [`StoreError::Lost`].
    pub fn read_chunk(&mut self, id: &ObjectId, index: u32) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.read_chunk_hashed(id, index)?.map(|(data, _)| data))
    }

    /// The chunk with its BLAKE3, as [`Store::read_chunk`] checks it.
    pub fn read_chunk_hashed(
        &mut self,
        id: &ObjectId,
        index: u32,
    ) -> Result<Option<HashedChunk>, StoreError> {
        let (hash, inline) = {
            let key = chunk_key(id, index);
            let r = self.db.begin_read().map_err(idx)?;
            let hash = match r.open_table(CHUNKS).map_err(idx)?.get(&key).map_err(idx)? {
                Some(h) => *h.value(),
                None => return Ok(None),
            };
            let inline =
                r.open_table(INLINE).map_err(idx)?.get(&key).map_err(idx)?.map(|v| v.value().to_vec());
            (hash, inline)
        };
        let path = self.chunk_path(id, index);
        let data = match inline.map_or_else(|| fs::read(&path), Ok) {
            Ok(data) => data,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(self.drop_chunk(id, index, LostWhy::Missing)?);
            }
            Err(e) => return Err(io_at(&path)(e)),
        };
        if blake3::hash(&data).as_bytes() != &hash {
            return Err(self.drop_chunk(id, index, LostWhy::Damaged)?);
        }
        Ok(Some((data, hash)))
    }

    /// Forget a chunk found damaged or missing: out of the index, its file
    /// (the hub's own, and wrong) deleted. Returns the error that says so.
    fn drop_chunk(&mut self, id: &ObjectId, index: u32, why: LostWhy) -> Result<StoreError, StoreError> {
        let key = chunk_key(id, index);
        let w = self.db.begin_write().map_err(idx)?;
        let was = w.open_table(CHUNKS).map_err(idx)?.remove(&key).map_err(idx)?.is_some();
        w.open_table(TICKETS).map_err(idx)?.remove(&key).map_err(idx)?;
        w.open_table(PAGES).map_err(idx)?.remove(&key).map_err(idx)?;
        w.open_table(INLINE).map_err(idx)?.remove(&key).map_err(idx)?;
        w.open_table(LOST).map_err(idx)?.insert(&key, ()).map_err(idx)?;
        w.commit().map_err(idx)?;
        if was {
            if let Some(n) = self.counts.get_mut(id) {
                *n = n.saturating_sub(1);
            }
        }
        let _ = fs::remove_file(self.chunk_path(id, index));
        Ok(StoreError::Lost { id: *id, index, why })
    }

    /// Check stored chunks against their hashes, from the one after `after`
    /// (from the first with `None`), until `budget` bytes were read. A chunk
    /// found damaged or missing is dropped as [`Store::read_chunk`] drops it.
    /// Returns the last chunk checked (`None` when the pass reached the end),
    /// the bytes read, and the chunks dropped.
    pub fn scrub(&mut self, after: Option<(ObjectId, u32)>, budget: u64) -> Result<ScrubStep, StoreError> {
        let keys: (Vec<[u8; 36]>, usize) = {
            let r = self.db.begin_read().map_err(idx)?;
            let t = r.open_table(CHUNKS).map_err(idx)?;
            let from = after.map(|(id, i)| chunk_key(&id, i));
            let range = match &from {
                Some(k) => t.range::<&[u8; 36]>((std::ops::Bound::Excluded(k), std::ops::Bound::Unbounded)),
                None => t.range::<&[u8; 36]>(..),
            };
            // A chunk is at most MAX_CHUNK_LEN: this many keys cover any budget.
            let most = (budget / u64::from(hubcast_protocol::wire::MAX_CHUNK_LEN)).max(1) as usize * 64;
            let mut keys = Vec::new();
            for entry in range.map_err(idx)?.take(most) {
                keys.push(*entry.map_err(idx)?.0.value());
            }
            (keys, most)
        };
        let (keys, most) = keys;
        let exhausted = keys.len() < most;
        let mut step = ScrubStep::default();
        for k in keys {
            let (id, index) = split_key(&k);
            step.last = Some((id, index));
            match self.read_chunk_hashed(&id, index) {
                Ok(Some((data, _))) => step.bytes += data.len() as u64,
                Ok(None) => {}
                Err(StoreError::Lost { id, index, why }) => step.lost.push((id, index, why)),
                Err(e) => return Err(e),
            }
            step.checked += 1;
            if step.bytes >= budget {
                return Ok(step);
            }
        }
        // The range ran out before the budget: the pass is at its end.
        step.done = exhausted;
        Ok(step)
    }

    /// The ticket datagram a stored chunk was verified against.
    pub fn read_ticket(&self, id: &ObjectId, index: u32) -> Result<Option<Vec<u8>>, StoreError> {
        let r = self.db.begin_read().map_err(idx)?;
        let t = r.open_table(TICKETS).map_err(idx)?;
        Ok(t.get(&chunk_key(id, index)).map_err(idx)?.map(|v| v.value().to_vec()))
    }

    /// What serving a chunk to peers starts from: the ticket datagram it was
    /// verified against and the table pages kept with it, (page index, digests).
    pub fn read_kept(&self, id: &ObjectId, index: u32) -> Result<Option<Kept>, StoreError> {
        let key = chunk_key(id, index);
        let r = self.db.begin_read().map_err(idx)?;
        let Some(ticket) =
            r.open_table(TICKETS).map_err(idx)?.get(&key).map_err(idx)?.map(|v| v.value().to_vec())
        else {
            return Ok(None);
        };
        let pages =
            r.open_table(PAGES).map_err(idx)?.get(&key).map_err(idx)?.map(|v| decode_pages(v.value()));
        Ok(Some((ticket, pages.unwrap_or_default())))
    }

    /// Byte ranges of a stored chunk, unchecked: the caller checks what it
    /// read (against the kept digests), and reads the chunk whole with
    /// [`Store::read_chunk_hashed`] if that fails.
    pub fn read_ranges(
        &self,
        id: &ObjectId,
        index: u32,
        ranges: &[std::ops::Range<u64>],
    ) -> Result<Vec<Vec<u8>>, StoreError> {
        use std::os::unix::fs::FileExt;
        let inline = {
            let r = self.db.begin_read().map_err(idx)?;
            let t = r.open_table(INLINE).map_err(idx)?;
            t.get(&chunk_key(id, index)).map_err(idx)?.map(|v| v.value().to_vec())
        };
        if let Some(bytes) = inline {
            // Out of range reads come back short: the caller's check fails.
            let at = |r: &std::ops::Range<u64>| {
                bytes.get(r.start as usize..r.end as usize).map(<[u8]>::to_vec).unwrap_or_default()
            };
            return Ok(ranges.iter().map(at).collect());
        }
        let path = self.chunk_path(id, index);
        let file = fs::File::open(&path).map_err(io_at(&path))?;
        let mut out = Vec::with_capacity(ranges.len());
        for r in ranges {
            let mut buf = vec![0; r.end.saturating_sub(r.start) as usize];
            file.read_exact_at(&mut buf, r.start).map_err(io_at(&path))?;
            out.push(buf);
        }
        Ok(out)
    }

    /// Keep a manifest the receiver accepted, as the signed datagram it came
    /// in, with when it came.
    pub fn put_manifest(&self, m: &StoredManifest) -> Result<(), StoreError> {
        self.put_manifests(&[m])
    }

    /// Keep manifests, in one commit.
    pub fn put_manifests(&self, ms: &[&StoredManifest]) -> Result<(), StoreError> {
        let w = self.db.begin_write().map_err(idx)?;
        {
            let mut t = w.open_table(MANIFESTS).map_err(idx)?;
            for m in ms {
                let mut v = Vec::with_capacity(8 + m.datagram.len());
                v.extend_from_slice(&m.received_unix.to_be_bytes());
                v.extend_from_slice(&m.datagram);
                t.insert(&m.object_id.0, v.as_slice()).map_err(idx)?;
            }
        }
        w.commit().map_err(commit_err(&self.dir))
    }

    /// Every manifest kept, as it came: the hub verifies each again.
    pub fn manifests(&self) -> Result<Vec<StoredManifest>, StoreError> {
        let r = self.db.begin_read().map_err(idx)?;
        let t = r.open_table(MANIFESTS).map_err(idx)?;
        let mut out = Vec::new();
        for entry in t.iter().map_err(idx)? {
            let (k, v) = entry.map_err(idx)?;
            // A record too short to hold its time is handed on empty: the
            // hub's check refuses it, and the store forgets it.
            let v = v.value();
            let (at, datagram) = v.split_at(v.len().min(8));
            let received_unix = at.try_into().map_or(0, u64::from_be_bytes);
            out.push(StoredManifest {
                object_id: ObjectId(*k.value()),
                datagram: datagram.to_vec(),
                received_unix,
            });
        }
        Ok(out)
    }

    /// Drop an object: its manifest, its chunks and their files (a live
    /// segment that left the back buffer). The index goes first, so a crash
    /// midway leaves only files the next open removes as orphans.
    pub fn remove_object(&mut self, id: &ObjectId) -> Result<(), StoreError> {
        let from = chunk_key(id, 0);
        let to = chunk_key(id, u32::MAX);
        let w = self.db.begin_write().map_err(idx)?;
        w.open_table(MANIFESTS).map_err(idx)?.remove(&id.0).map_err(idx)?;
        w.open_table(EXPORTED).map_err(idx)?.remove(&id.0).map_err(idx)?;
        w.open_table(CHUNKS)
            .map_err(idx)?
            .retain_in::<&[u8; 36], _>(&from..=&to, |_, _| false)
            .map_err(idx)?;
        w.open_table(TICKETS)
            .map_err(idx)?
            .retain_in::<&[u8; 36], _>(&from..=&to, |_, _| false)
            .map_err(idx)?;
        w.open_table(PAGES)
            .map_err(idx)?
            .retain_in::<&[u8; 36], _>(&from..=&to, |_, _| false)
            .map_err(idx)?;
        w.open_table(LOST).map_err(idx)?.retain_in::<&[u8; 36], _>(&from..=&to, |_, _| false).map_err(idx)?;
        w.open_table(INLINE)
            .map_err(idx)?
            .retain_in::<&[u8; 36], _>(&from..=&to, |_, _| false)
            .map_err(idx)?;
        w.commit().map_err(idx)?;
        self.counts.remove(id);
        let dir = self.dir.join("chunks").join(id.to_hex());
        match fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_at(&dir)(e)),
            _ => Ok(()),
        }
    }

    /// Does the store hold every chunk of this object?
    pub fn is_complete(&self, m: &Manifest) -> bool {
        self.chunk_count(&m.object_id) >= chunk_count(m.size, m.chunk_size)
    }

    /// The name an object was exported under, if it was.
    pub fn exported_name(&self, id: &ObjectId) -> Result<Option<String>, StoreError> {
        let r = self.db.begin_read().map_err(idx)?;
        let t = r.open_table(EXPORTED).map_err(idx)?;
        Ok(t.get(&id.0).map_err(idx)?.map(|v| v.value().to_owned()))
    }

    /// Record that objects were exported, each under its name, in one commit.
    pub fn mark_exported(&self, done: &[(ObjectId, &str)]) -> Result<(), StoreError> {
        let w = self.db.begin_write().map_err(idx)?;
        {
            let mut t = w.open_table(EXPORTED).map_err(idx)?;
            for (id, name) in done {
                t.insert(&id.0, *name).map_err(idx)?;
            }
        }
        w.commit().map_err(commit_err(&self.dir))
    }
}

/// Write `data` to `tmp`, fsync, rename to `path`; the caller fsyncs the
/// directory.
fn write_file(tmp: &Path, path: &Path, data: &[u8]) -> Result<(), StoreError> {
    let mut f = fs::File::create(tmp).map_err(io_at(tmp))?;
    if let Err(e) = f.write_all(data).and_then(|_| f.sync_all()) {
        // A half-written file on a full disk only makes it fuller.
        let _ = fs::remove_file(tmp);
        return Err(io_at(tmp)(e));
    }
    let parent = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(parent).map_err(io_at(parent))?;
    fs::rename(tmp, path).map_err(io_at(path))
}

/// A name from a manifest as a relative path, or `None` if it could escape the
/// export folder: absolute, `..`, `.`, empty parts, NUL or backslash.
pub fn safe_relative_path(name: &str) -> Option<PathBuf> {
    if name.is_empty() || name.contains('\0') || name.contains('\\') {
        return None;
    }
    let mut out = PathBuf::new();
    for part in name.split('/') {
        if part.is_empty() || part == "." || part == ".." {
            return None;
        }
        let p = Path::new(part);
        if !matches!(p.components().next(), Some(Component::Normal(_))) || p.components().count() != 1 {
            return None;
        }
        out.push(part);
    }
    Some(out)
}

/// The daemon's store as the hub's drivers and the shared test suite see it.
impl hubcast_protocol::store::ChunkStore for Store {
    type Error = StoreError;

    fn put_manifest(&mut self, m: &StoredManifest) -> Result<(), StoreError> {
        Store::put_manifest(self, m)
    }
    fn manifests(&self) -> Result<Vec<StoredManifest>, StoreError> {
        Store::manifests(self)
    }
    fn put_chunk(&mut self, c: &VerifiedChunk) -> Result<bool, StoreError> {
        Store::put_chunk(self, c)
    }
    fn has_chunk(&self, id: &ObjectId, index: u32) -> Result<bool, StoreError> {
        Store::has_chunk(self, id, index)
    }
    fn chunks(&self) -> Result<Vec<(ObjectId, u32)>, StoreError> {
        Store::chunks(self)
    }
    fn read_chunk(&mut self, id: &ObjectId, index: u32) -> Result<Option<Vec<u8>>, StoreError> {
        Store::read_chunk(self, id, index)
    }
    fn read_ticket(&self, id: &ObjectId, index: u32) -> Result<Option<Vec<u8>>, StoreError> {
        Store::read_ticket(self, id, index)
    }
    fn remove_object(&mut self, id: &ObjectId) -> Result<(), StoreError> {
        Store::remove_object(self, id)
    }
}

#[cfg(test)]
mod tests;
