//! Eviction: an object's chunks and file leave the store, its manifest
//! stays (the channel still offers it), and the index remembers that it was
//! evicted, so that the hub does not take it again from the carousel until
//! it is asked for. And pins: objects the user keeps, never evicted.

use super::{idx, remove_chunks_of, Store, StoreError, EXPORTED};
use hubcast_protocol::ObjectId;
use redb::{ReadableDatabase, ReadableTable, TableDefinition};

/// Object id → when it was evicted (unix seconds).
pub(super) const EVICTED: TableDefinition<&[u8; 32], u64> = TableDefinition::new("evicted");
/// Object id → when it was pinned (unix seconds).
pub(super) const PINNED: TableDefinition<&[u8; 32], u64> = TableDefinition::new("pinned");

impl Store {
    /// Evict `id`: its chunks out of the index and its file deleted, in one
    /// commit with the record that it was evicted. Returns the name it was
    /// exported under, if it was (the caller removes that file: the export
    /// is a link to the same bytes).
    pub fn evict(&mut self, id: &ObjectId, unix_now: u64) -> Result<Option<String>, StoreError> {
        let w = self.db.begin_write().map_err(idx)?;
        let exported =
            w.open_table(EXPORTED).map_err(idx)?.get(&id.0).map_err(idx)?.map(|v| v.value().to_owned());
        remove_chunks_of(&w, id)?;
        w.open_table(EVICTED).map_err(idx)?.insert(&id.0, unix_now).map_err(idx)?;
        w.commit().map_err(idx)?;
        self.counts.remove(id);
        self.remove_files_of(id)?;
        Ok(exported)
    }

    /// The objects evicted and not asked for since.
    pub fn evicted(&self) -> Result<Vec<ObjectId>, StoreError> {
        ids_in(self, EVICTED)
    }

    /// `id` is wanted again: the hub takes it from the channel from now on.
    pub fn unevict(&mut self, id: &ObjectId) -> Result<(), StoreError> {
        let w = self.db.begin_write().map_err(idx)?;
        w.open_table(EVICTED).map_err(idx)?.remove(&id.0).map_err(idx)?;
        w.commit().map_err(idx)
    }

    /// Pin `id` (kept whatever the quota) or unpin it (`unix_now: None`).
    pub fn pin(&mut self, id: &ObjectId, unix_now: Option<u64>) -> Result<(), StoreError> {
        let w = self.db.begin_write().map_err(idx)?;
        {
            let mut t = w.open_table(PINNED).map_err(idx)?;
            match unix_now {
                Some(at) => t.insert(&id.0, at).map_err(idx)?,
                None => t.remove(&id.0).map_err(idx)?,
            };
        }
        w.commit().map_err(idx)
    }

    /// Bytes free for this user on the store's file system.
    pub fn free_space(&self) -> std::io::Result<u64> {
        let v = rustix::fs::statvfs(&self.dir)?;
        Ok(v.f_bavail.saturating_mul(v.f_frsize))
    }

    /// Without `--quota`: what the store holds at start (`held`) and 90% of
    /// its file system's free space then, so that the hub never fills the
    /// disk (what else writes there keeps a tenth of what was free). `None`
    /// (no limit) when the free space cannot be read.
    pub fn default_quota(&self, held: u64) -> Option<u64> {
        match self.free_space() {
            Ok(free) => {
                let quota = held.saturating_add(free / 10 * 9);
                tracing::info!(
                    quota,
                    held,
                    free,
                    "no --quota given: what the store holds and 90% of its disk's free space"
                );
                Some(quota)
            }
            Err(e) => {
                tracing::warn!("the store's free space cannot be read ({e}): no quota; give --quota SIZE");
                None
            }
        }
    }

    /// The pinned objects.
    pub fn pinned(&self) -> Result<Vec<ObjectId>, StoreError> {
        ids_in(self, PINNED)
    }
}

fn ids_in(store: &Store, table: TableDefinition<&[u8; 32], u64>) -> Result<Vec<ObjectId>, StoreError> {
    let r = store.db.begin_read().map_err(idx)?;
    let t = r.open_table(table).map_err(idx)?;
    let mut out = Vec::new();
    for entry in t.iter().map_err(idx)? {
        out.push(ObjectId(*entry.map_err(idx)?.0.value()));
    }
    Ok(out)
}
