//! Export: completed objects appear in the export folder under their names.
//!
//! A larger object is a hard link to its file in the store
//! ([`Store::assemble`]): the hub writes each received byte once and holds it
//! once. The link is made under `.hubcast-<id>.part` and renamed into place,
//! so a name in the export folder is always a whole object. A small object
//! (at most [`INLINE_MAX`], kept in the store's index) is written out, checked
//! against its id first. When the export folder is on another file system
//! than the store (no hard links there), the object is copied, fsynced and
//! renamed the same way, and the disk holds it twice.
//!
//! An exported file and the store's copy are one file: a chunk the scrub
//! finds damaged in it is fetched again and written back into it. A user who
//! wants to edit an exported file saves it under another name (most editors
//! write a new file and rename it, which leaves the store's copy alone).

use crate::store::{export_at, safe_relative_path, LostWhy, Store, StoreError, INLINE_MAX};
use hubcast_protocol::sender::chunk_count;
use hubcast_protocol::wire::Manifest;
use hubcast_protocol::ObjectId;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

pub struct Exporter {
    dir: PathBuf,
    /// Hard links failed once (another file system): told once.
    copying: bool,
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
        Exporter { dir, copying: false, stall_after_rename: stall }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Every chunk of `m` is stored: put the object in the export folder
    /// under its `.part` name, durable, then rename it into place. The
    /// caller makes the rename durable ([`Exporter::record`]).
    pub fn finish(&mut self, store: &mut Store, m: &Manifest) -> Result<PathBuf, StoreError> {
        let rel = safe_relative_path(&m.name).ok_or_else(|| StoreError::UnsafeName(m.name.clone()))?;
        let target = self.dir.join(rel);
        let parent = target.parent().unwrap_or(&self.dir).to_owned();
        fs::create_dir_all(&parent).map_err(export_at(&parent))?;
        let part = parent.join(format!(".hubcast-{}.part", m.object_id.to_hex()));
        // One left by a crash.
        let _ = fs::remove_file(&part);
        let made = if m.size <= INLINE_MAX as u64 {
            Self::write_small(store, m, &part)
        } else {
            self.link(store, m, &part)
        };
        if let Err(e) = made {
            let _ = fs::remove_file(&part);
            return Err(e);
        }
        fs::rename(&part, &target).map_err(export_at(&target))?;
        // A rename onto a link to the same file does nothing (a crash after
        // the last export's rename, before its record): the part goes.
        let _ = fs::remove_file(&part);
        Ok(target)
    }

    /// A small object: its chunks from the store's index, checked as a
    /// whole against the object id, written out and fsynced.
    fn write_small(store: &mut Store, m: &Manifest, part: &Path) -> Result<(), StoreError> {
        let mut bytes = Vec::with_capacity(m.size as usize);
        for index in 0..chunk_count(m.size, m.chunk_size) {
            let lost = StoreError::Lost { id: m.object_id, index, why: LostWhy::Missing };
            bytes.extend_from_slice(&store.read_chunk(&m.object_id, index)?.ok_or(lost)?);
        }
        if ObjectId::archive(&m.name, blake3::hash(&bytes).as_bytes()) != m.object_id {
            return Err(StoreError::ExportMismatch(m.name.clone()));
        }
        let mut f = fs::File::create(part).map_err(export_at(part))?;
        f.write_all(&bytes).and_then(|()| f.sync_all()).map_err(export_at(part))
    }

    /// A larger object: a hard link to its file in the store, or a copy
    /// where links cannot be made.
    fn link(&mut self, store: &mut Store, m: &Manifest, part: &Path) -> Result<(), StoreError> {
        let object = store.assemble(m)?;
        let Err(e) = fs::hard_link(&object, part) else { return Ok(()) };
        if !self.copying {
            tracing::warn!(
                export = %self.dir.display(),
                "cannot link exports to the store ({e}): exports are copies, and the disk holds \
                 each object twice; put --export on the same file system as --store to hold it once"
            );
            self.copying = true;
        }
        fs::copy(&object, part).map_err(export_at(part))?;
        fs::File::open(part).and_then(|f| f.sync_all()).map_err(export_at(part))
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
}
