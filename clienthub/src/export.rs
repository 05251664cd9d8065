//! Export: completed objects appear in the export folder under their names.
//!
//! Each verified chunk is written into the object's `.hubcast-<id>.part` file as
//! soon as it is stored, so finishing an object costs little more than an fsync
//! and a rename: any chunk not written that way (stored before a restart, or
//! before the manifest was known) is copied in from the store, the whole file is
//! read back and must hash, with its name, to the object id
//! ([`ObjectId::archive`]), and only then is it renamed into
//! place. A crash leaves at most a `.part` file, which is rewritten next time.

use crate::store::{export_at, safe_relative_path, LostWhy, Store, StoreError};
use hubcast_protocol::sender::{chunk_count, chunk_range};
use hubcast_protocol::wire::Manifest;
use hubcast_protocol::ObjectId;
use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Objects with an open `.part` file at once; the oldest is closed past this
/// (its chunks are then copied from the store when it completes).
pub const MAX_OPEN_PARTS: usize = 16;

struct Part {
    file: fs::File,
    tmp: PathBuf,
    target: PathBuf,
    written: Vec<bool>,
    opened: u64,
}

pub struct Exporter {
    dir: PathBuf,
    parts: HashMap<ObjectId, Part>,
    clock: u64,
    /// Testing aid: pause this long between the rename into place and the
    /// index's record of it, so a test can kill the hub in that window.
    stall_after_rename: Option<std::time::Duration>,
}

/// The testing aid's switch: milliseconds to pause after each export's rename.
pub const STALL_ENV: &str = "HUBCAST_TEST_EXPORT_STALL_MS";

impl Exporter {
    pub fn new(dir: PathBuf) -> Self {
        let stall =
            std::env::var(STALL_ENV).ok().and_then(|v| v.parse().ok()).map(std::time::Duration::from_millis);
        Exporter { dir, parts: HashMap::new(), clock: 0, stall_after_rename: stall }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn part(&mut self, m: &Manifest) -> Result<&mut Part, StoreError> {
        if !self.parts.contains_key(&m.object_id) {
            let rel = safe_relative_path(&m.name).ok_or_else(|| StoreError::UnsafeName(m.name.clone()))?;
            let target = self.dir.join(rel);
            let parent = target.parent().unwrap_or(&self.dir).to_owned();
            fs::create_dir_all(&parent).map_err(export_at(&parent))?;
            let tmp = parent.join(format!(".hubcast-{}.part", m.object_id.to_hex()));
            let file = fs::File::create(&tmp).map_err(export_at(&tmp))?;
            if self.parts.len() >= MAX_OPEN_PARTS {
                if let Some(oldest) = self.parts.iter().min_by_key(|(_, p)| p.opened).map(|(id, _)| *id) {
                    self.parts.remove(&oldest);
                }
            }
            self.clock += 1;
            let written = vec![false; chunk_count(m.size, m.chunk_size) as usize];
            self.parts.insert(m.object_id, Part { file, tmp, target, written, opened: self.clock });
        }
        self.parts.get_mut(&m.object_id).ok_or(StoreError::ExportMismatch(m.name.clone()))
    }

    /// A verified chunk of `m` was stored: write it into the object's `.part` file.
    pub fn chunk_stored(&mut self, m: &Manifest, index: u32, data: &[u8]) -> Result<(), StoreError> {
        let range = chunk_range(m.size, m.chunk_size, index);
        if index >= chunk_count(m.size, m.chunk_size) || data.len() as u64 != range.end - range.start {
            return Err(StoreError::ExportMismatch(m.name.clone()));
        }
        let part = self.part(m)?;
        part.file.write_all_at(data, range.start).map_err(export_at(&part.tmp))?;
        part.written[index as usize] = true;
        Ok(())
    }

    /// Every chunk of `m` is stored: complete the `.part` file from the store,
    /// check it hashes, with its name, to the object id, fsync, rename into
    /// place. The caller makes the rename durable ([`Exporter::record`]).
    pub fn finish(&mut self, store: &mut Store, m: &Manifest) -> Result<PathBuf, StoreError> {
        self.part(m)?;
        let part = self.parts.remove(&m.object_id).ok_or(StoreError::ExportMismatch(m.name.clone()))?;
        let result = Self::complete_part(&part, store, m);
        if result.is_err() {
            let _ = fs::remove_file(&part.tmp);
        }
        result?;
        fs::rename(&part.tmp, &part.target).map_err(export_at(&part.target))?;
        Ok(part.target)
    }

    /// Make the renames of finished exports durable (each folder fsynced
    /// once) and record them in the index, in one commit: a batch of small
    /// files costs one commit, not one each. A crash before the record
    /// exports them again at the next start.
    pub fn record(&self, store: &Store, done: &[(ObjectId, &str, &Path)]) -> Result<(), StoreError> {
        if done.is_empty() {
            return Ok(());
        }
        if let Some(stall) = self.stall_after_rename {
            tracing::warn!(
                objects = done.len(),
                "testing aid ({STALL_ENV}): pausing after the export's rename"
            );
            std::thread::sleep(stall);
        }
        let mut dirs: Vec<&Path> = Vec::new();
        for (_, _, path) in done {
            if let Some(parent) = path.parent().filter(|p| !dirs.contains(p)) {
                dirs.push(parent);
            }
        }
        for d in dirs {
            fs::File::open(d).and_then(|f| f.sync_all()).map_err(export_at(d))?;
        }
        let names: Vec<(ObjectId, &str)> = done.iter().map(|(id, name, _)| (*id, *name)).collect();
        store.mark_exported(&names)
    }

    fn complete_part(part: &Part, store: &mut Store, m: &Manifest) -> Result<(), StoreError> {
        for (i, written) in part.written.iter().enumerate() {
            if !written {
                let data = store.read_chunk(&m.object_id, i as u32)?.ok_or(StoreError::Lost {
                    id: m.object_id,
                    index: i as u32,
                    why: LostWhy::Missing,
                })?;
                let range = chunk_range(m.size, m.chunk_size, i as u32);
                if data.len() as u64 != range.end - range.start {
                    return Err(StoreError::ExportMismatch(m.name.clone()));
                }
                part.file.write_all_at(&data, range.start).map_err(export_at(&part.tmp))?;
            }
        }
        part.file.set_len(m.size).map_err(export_at(&part.tmp))?;
        part.file.sync_all().map_err(export_at(&part.tmp))?;
        // Read back what is on disk: the file must be exactly the object.
        let mut hasher = blake3::Hasher::new();
        let mut f = fs::File::open(&part.tmp).map_err(export_at(&part.tmp))?;
        std::io::copy(&mut f, &mut hasher).map_err(export_at(&part.tmp))?;
        if ObjectId::archive(&m.name, hasher.finalize().as_bytes()) != m.object_id {
            return Err(StoreError::ExportMismatch(m.name.clone()));
        }
        Ok(())
    }
}
