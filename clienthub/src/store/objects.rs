//! Objects' files: `objects/<object-hex>` holds an object's larger chunks,
//! each at its place in the object. When the object is complete the store
//! moves what it kept elsewhere into the file ([`Store::assemble`]) and the
//! export is a hard link to it: every byte the hub receives is written to
//! disk once, and held once.

use super::{chunk_key, idx, io_at, sync_dir, LostWhy, Store, StoreError, INLINE, PLACED};
use hubcast_protocol::sender::{chunk_count, chunk_range};
use hubcast_protocol::wire::Manifest;
use hubcast_protocol::ObjectId;
use redb::ReadableDatabase;
use std::fs;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Where a stored chunk's bytes are.
pub(super) enum Place {
    /// In the index ([`INLINE`]).
    Inline(Vec<u8>),
    /// In its object's file, at this offset, this long ([`PLACED`]).
    InObject(u64, u32),
    /// In a file of its own, `chunks/<object-hex>/<n>`.
    OwnFile,
}

/// Where the chunk under `key` is (the caller knows it is stored).
pub(super) fn place(r: &redb::ReadTransaction, key: &[u8; 36]) -> Result<Place, StoreError> {
    if let Some(v) = r.open_table(INLINE).map_err(idx)?.get(key).map_err(idx)? {
        return Ok(Place::Inline(v.value().to_vec()));
    }
    Ok(match r.open_table(PLACED).map_err(idx)?.get(key).map_err(idx)? {
        Some(v) => {
            let (at, len) = v.value();
            Place::InObject(at, len)
        }
        None => Place::OwnFile,
    })
}

/// Open an object's file for writing, made if it is not there: the file,
/// and whether it was made (its folder is then fsynced too).
pub(super) fn open_object(path: &Path) -> Result<(fs::File, bool), StoreError> {
    match fs::OpenOptions::new().write(true).create_new(true).open(path) {
        Ok(f) => Ok((f, true)),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            Ok((fs::OpenOptions::new().write(true).open(path).map_err(io_at(path))?, false))
        }
        Err(e) => Err(io_at(path)(e)),
    }
}

impl Store {
    /// A chunk's bytes where `place` says they are; an error with the path
    /// that failed.
    pub(super) fn read_place(
        &self,
        id: &ObjectId,
        index: u32,
        place: Place,
    ) -> Result<Vec<u8>, (io::Error, PathBuf)> {
        match place {
            Place::Inline(bytes) => Ok(bytes),
            Place::InObject(at, len) => {
                let path = self.object_path(id);
                let mut buf = vec![0; len.min(hubcast_protocol::wire::MAX_CHUNK_LEN) as usize];
                fs::File::open(&path).and_then(|f| f.read_exact_at(&mut buf, at)).map_err(|e| (e, path))?;
                Ok(buf)
            }
            Place::OwnFile => {
                let path = self.chunk_path(id, index);
                fs::read(&path).map_err(|e| (e, path))
            }
        }
    }

    /// The object's file with every chunk of `m` at its place, durable.
    /// Chunks kept elsewhere (in the index, or in files of their own: they
    /// came before the manifest, or before this layout) are read, checked
    /// against their hashes, and moved into it. Nothing is hashed again:
    /// each chunk was verified against the broadcaster's signed ticket, and
    /// the manifest, also signed, gives its place and the object's size.
    pub fn assemble(&mut self, m: &Manifest) -> Result<PathBuf, StoreError> {
        let id = m.object_id;
        let path = self.object_path(&id);
        let placed: Vec<Option<(u64, u32)>> = {
            let r = self.db.begin_read().map_err(idx)?;
            let t = r.open_table(PLACED).map_err(idx)?;
            let mut placed = vec![None; chunk_count(m.size, m.chunk_size) as usize];
            let (from, to) = (chunk_key(&id, 0), chunk_key(&id, u32::MAX));
            for entry in t.range::<&[u8; 36]>(&from..=&to).map_err(idx)? {
                let (k, v) = entry.map_err(idx)?;
                let (_, index) = super::split_key(k.value());
                if let Some(slot) = placed.get_mut(index as usize) {
                    *slot = Some(v.value());
                }
            }
            placed
        };
        let (file, made) = open_object(&path)?;
        let mut moved = Vec::new();
        for (index, at) in placed.into_iter().enumerate() {
            let index = index as u32;
            let range = chunk_range(m.size, m.chunk_size, index);
            if at == Some((range.start, (range.end - range.start) as u32)) {
                continue;
            }
            let lost = StoreError::Lost { id, index, why: LostWhy::Missing };
            let (data, _) = self.read_chunk_hashed(&id, index)?.ok_or(lost)?;
            if data.len() as u64 != range.end - range.start {
                return Err(StoreError::ExportMismatch(m.name.clone()));
            }
            file.write_all_at(&data, range.start).map_err(io_at(&path))?;
            moved.push((index, range.start, data.len() as u32));
        }
        if file.metadata().map_err(io_at(&path))?.len() != m.size {
            file.set_len(m.size).map_err(io_at(&path))?;
        }
        file.sync_all().map_err(io_at(&path))?;
        if made {
            sync_dir(&self.dir.join("objects"))?;
        }
        if moved.is_empty() {
            return Ok(path);
        }
        let w = self.db.begin_write().map_err(idx)?;
        {
            let mut placed = w.open_table(PLACED).map_err(idx)?;
            let mut inline = w.open_table(INLINE).map_err(idx)?;
            for (index, at, len) in &moved {
                let key = chunk_key(&id, *index);
                placed.insert(&key, (*at, *len)).map_err(idx)?;
                inline.remove(&key).map_err(idx)?;
            }
        }
        w.commit().map_err(super::commit_err(&self.dir))?;
        // Copies the index no longer names (a crash before this: the next
        // open deletes them).
        for (index, _, _) in moved {
            let _ = fs::remove_file(self.chunk_path(&id, index));
        }
        Ok(path)
    }
}
