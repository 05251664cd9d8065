//! The hub's persistent store of verified chunks.
//!
//! Layout under the store directory:
//!
//! ```text
//! index.redb                 signed manifests, stored chunks (with their BLAKE3), exports,
//!                            and the bytes of chunks of at most INLINE_MAX
//! objects/<object-hex>       the object's bytes, each larger chunk at its place
//!                            in the object (written there once, exported by a
//!                            hard link to this file)
//! chunks/<object-hex>/<n>    the bytes of chunk n, exactly as verified (larger
//!                            chunks that came before their object's manifest)
//! tmp/                       chunk files being written
//! quarantine/                entries found in objects/, chunks/ or tmp/ that the
//!                            hub did not write, moved aside at open (never deleted)
//! ```
//!
//! Crash safety: chunks are stored in batches ([`Store::put_chunks`]). A
//! chunk is written at its place in its object's file (or to `tmp/` and
//! renamed into `chunks/`), every file the batch wrote is fsynced (folders
//! too), and only then does one redb commit, itself durable, record the
//! batch: a batch is either recorded whole or not at all. Bytes the index
//! does not name are never read: a crash before the commit leaves at most
//! bytes that the chunk's next arrival writes again, the same bytes, since a
//! verified chunk has one content and one place. A small chunk's bytes go
//! into that commit itself (iroh-blobs keeps small blobs inline the same way):
//! a folder of small files costs one commit per batch, not five fsyncs a file.
//! The index is the truth: on open, `tmp/` is emptied, and chunk files and
//! object files the index does not name are deleted.
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
use std::os::unix::fs::FileExt;
use std::path::{Component, Path, PathBuf};

mod catalog;
mod evict;
mod fsck;
mod objects;
mod open;
mod trust;
pub use catalog::SCAN_LIMIT;
pub use fsck::{fsck, FsckReport};
use objects::{open_object, place, Place};

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
/// Same key as CHUNKS: where a chunk is in its object's file
/// (`objects/<object-hex>`): offset and length.
const PLACED: TableDefinition<&[u8; 36], (u64, u32)> = TableDefinition::new("placed_chunks");
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

fn sync_dir(d: &Path) -> Result<(), StoreError> {
    fs::File::open(d).and_then(|f| f.sync_all()).map_err(io_at(d))
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

/// The object id a file or folder under `objects/` or `chunks/` is named by.
fn object_id_of(name: &str) -> Option<ObjectId> {
    let bytes = hubcast_keys::decode_hex(name)?;
    Some(ObjectId(bytes.try_into().ok()?))
}

/// (object, index) of a CHUNKS key.
fn split_key(k: &[u8; 36]) -> (ObjectId, u32) {
    let mut id = [0u8; 32];
    id.copy_from_slice(&k[..32]);
    (ObjectId(id), u32::from_be_bytes([k[32], k[33], k[34], k[35]]))
}

impl Store {
    fn object_path(&self, id: &ObjectId) -> PathBuf {
        self.dir.join("objects").join(id.to_hex())
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

    /// Store a verified chunk durably, in a file of its own (its place in
    /// its object is not known). `false` if it was already stored.
    pub fn put_chunk(&mut self, c: &VerifiedChunk) -> Result<bool, StoreError> {
        // One chunk in, one result out; a failed write is this chunk's error.
        self.put_chunks(&[(c, None)])?.pop().unwrap_or(Ok(false))
    }

    /// Store a batch of verified chunks durably, with one index commit, each
    /// with its offset in its object when the object's manifest is known:
    /// the chunk is then written at that place in the object's file (the
    /// file an export links to). Each result is `Ok(false)` if the chunk was
    /// already stored (or came twice), `Err` for one that could not be
    /// written (the others are stored). `Err` for the whole batch when the
    /// index cannot take it: none of it is stored.
    pub fn put_chunks(
        &mut self,
        batch: &[(&VerifiedChunk, Option<u64>)],
    ) -> Result<Vec<Result<bool, StoreError>>, StoreError> {
        let mut results = Vec::with_capacity(batch.len());
        let mut new: Vec<(&VerifiedChunk, [u8; 36], Option<u64>)> = Vec::new();
        let mut dirs: Vec<PathBuf> = Vec::new();
        let mut objects: Vec<(PathBuf, fs::File)> = Vec::new();
        // One read of the index for the whole batch.
        let r = self.db.begin_read().map_err(idx)?;
        let held = r.open_table(CHUNKS).map_err(idx)?;
        for &(c, at) in batch {
            let key = chunk_key(&c.object_id(), c.index());
            if held.get(&key).map_err(idx)?.is_some() || new.iter().any(|(_, k, _)| *k == key) {
                results.push(Ok(false));
                continue;
            }
            let at = at.filter(|_| c.data().len() > INLINE_MAX);
            if let Some(at) = at {
                let path = self.object_path(&c.object_id());
                let file = match objects.iter().position(|(p, _)| *p == path) {
                    Some(i) => &objects[i].1,
                    None => match open_object(&path) {
                        Ok((f, made)) => {
                            if made && !dirs.contains(&self.dir.join("objects")) {
                                dirs.push(self.dir.join("objects"));
                            }
                            objects.push((path.clone(), f));
                            &objects[objects.len() - 1].1
                        }
                        Err(e) => {
                            results.push(Err(e));
                            continue;
                        }
                    },
                };
                // A write cut short (a full disk) leaves bytes the index
                // does not name.
                if let Err(e) = file.write_all_at(c.data(), at) {
                    results.push(Err(io_at(&path)(e)));
                    continue;
                }
            } else if c.data().len() > INLINE_MAX {
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
            new.push((c, key, at));
        }
        drop((held, r));
        // The bytes and the renames are durable before the commit names them.
        for (path, f) in &objects {
            f.sync_data().map_err(io_at(path))?;
        }
        for d in &dirs {
            sync_dir(d)?;
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
            let mut placed = w.open_table(PLACED).map_err(idx)?;
            for (c, key, at) in &new {
                chunks.insert(key, c.hash()).map_err(idx)?;
                tickets.insert(key, c.ticket()).map_err(idx)?;
                pages.insert(key, encode_pages(c.pages()).as_slice()).map_err(idx)?;
                lost.remove(key).map_err(idx)?;
                if c.data().len() <= INLINE_MAX {
                    inline.insert(key, c.data()).map_err(idx)?;
                } else if let Some(at) = at {
                    placed.insert(key, (*at, c.data().len() as u32)).map_err(idx)?;
                }
            }
        }
        w.commit().map_err(commit_err(&self.dir))?;
        for (c, _, _) in &new {
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
        let (hash, place) = {
            let key = chunk_key(id, index);
            let r = self.db.begin_read().map_err(idx)?;
            let hash = match r.open_table(CHUNKS).map_err(idx)?.get(&key).map_err(idx)? {
                Some(h) => *h.value(),
                None => return Ok(None),
            };
            (hash, place(&r, &key)?)
        };
        let data = match self.read_place(id, index, place) {
            Ok(data) => data,
            // Gone, or cut short.
            Err((e, _)) if matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::UnexpectedEof) => {
                return Err(self.drop_chunk(id, index, LostWhy::Missing)?);
            }
            Err((e, path)) => return Err(io_at(&path)(e)),
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
        // Its bytes in the object's file stay, unnamed, until it comes again.
        w.open_table(PLACED).map_err(idx)?.remove(&key).map_err(idx)?;
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
        let place = {
            let r = self.db.begin_read().map_err(idx)?;
            place(&r, &chunk_key(id, index))?
        };
        // (file, where the chunk starts in it, its length)
        let (path, base, len) = match place {
            Place::Inline(bytes) => {
                // Out of range reads come back short: the caller's check fails.
                let at = |r: &std::ops::Range<u64>| {
                    bytes.get(r.start as usize..r.end as usize).map(<[u8]>::to_vec).unwrap_or_default()
                };
                return Ok(ranges.iter().map(at).collect());
            }
            Place::InObject(at, len) => (self.object_path(id), at, u64::from(len)),
            Place::OwnFile => (self.chunk_path(id, index), 0, u64::MAX),
        };
        let file = fs::File::open(&path).map_err(io_at(&path))?;
        let mut out = Vec::with_capacity(ranges.len());
        for r in ranges {
            if r.end > len
                || r.start > r.end
                || r.end - r.start > u64::from(hubcast_protocol::wire::MAX_CHUNK_LEN)
            {
                out.push(Vec::new());
                continue;
            }
            let mut buf = vec![0; (r.end - r.start) as usize];
            file.read_exact_at(&mut buf, base + r.start).map_err(io_at(&path))?;
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
        let w = self.db.begin_write().map_err(idx)?;
        w.open_table(MANIFESTS).map_err(idx)?.remove(&id.0).map_err(idx)?;
        remove_chunks_of(&w, id)?;
        w.commit().map_err(idx)?;
        self.counts.remove(id);
        self.remove_files_of(id)
    }

    /// The object's file and any chunk files of its own.
    fn remove_files_of(&self, id: &ObjectId) -> Result<(), StoreError> {
        let file = self.object_path(id);
        match fs::remove_file(&file) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(io_at(&file)(e)),
            _ => {}
        }
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

/// Every index entry of `id`'s chunks, and its export record, in `w`.
fn remove_chunks_of(w: &redb::WriteTransaction, id: &ObjectId) -> Result<(), StoreError> {
    let (from, to) = (chunk_key(id, 0), chunk_key(id, u32::MAX));
    w.open_table(EXPORTED).map_err(idx)?.remove(&id.0).map_err(idx)?;
    w.open_table(CHUNKS).map_err(idx)?.retain_in::<&[u8; 36], _>(&from..=&to, |_, _| false).map_err(idx)?;
    w.open_table(TICKETS).map_err(idx)?.retain_in::<&[u8; 36], _>(&from..=&to, |_, _| false).map_err(idx)?;
    w.open_table(PAGES).map_err(idx)?.retain_in::<&[u8; 36], _>(&from..=&to, |_, _| false).map_err(idx)?;
    w.open_table(LOST).map_err(idx)?.retain_in::<&[u8; 36], _>(&from..=&to, |_, _| false).map_err(idx)?;
    w.open_table(INLINE).map_err(idx)?.retain_in::<&[u8; 36], _>(&from..=&to, |_, _| false).map_err(idx)?;
    w.open_table(PLACED).map_err(idx)?.retain_in::<&[u8; 36], _>(&from..=&to, |_, _| false).map_err(idx)?;
    Ok(())
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
