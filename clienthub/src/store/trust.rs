//! The channel's trust statements in the store: the root's newest
//! revocation list, as its datagram came (checked again at start, so that a
//! restart opens no way back to an older list).

use super::{idx, Store, StoreError};
use redb::{ReadableDatabase, TableDefinition};

/// "revocations" → the list's datagram; "rotation/VERSION" (20 digits, so
/// they sort in order) → each root rotation followed.
pub(super) const TRUST: TableDefinition<&str, &[u8]> = TableDefinition::new("trust");

impl Store {
    pub fn put_revocations(&mut self, datagram: &[u8]) -> Result<(), StoreError> {
        let w = self.db.begin_write().map_err(idx)?;
        w.open_table(TRUST).map_err(idx)?.insert("revocations", datagram).map_err(idx)?;
        w.commit().map_err(idx)
    }

    pub fn put_rotation(&mut self, version: u64, datagram: &[u8]) -> Result<(), StoreError> {
        let w = self.db.begin_write().map_err(idx)?;
        let key = format!("rotation/{version:020}");
        w.open_table(TRUST).map_err(idx)?.insert(key.as_str(), datagram).map_err(idx)?;
        w.commit().map_err(idx)
    }

    /// The root rotations followed, in version order.
    pub fn rotations(&self) -> Result<Vec<Vec<u8>>, StoreError> {
        let r = self.db.begin_read().map_err(idx)?;
        let t = r.open_table(TRUST).map_err(idx)?;
        let mut out = Vec::new();
        for row in t.range("rotation/".."rotation0").map_err(idx)? {
            out.push(row.map_err(idx)?.1.value().to_vec());
        }
        Ok(out)
    }

    /// The stored revocation list's datagram.
    pub fn revocations(&self) -> Result<Option<Vec<u8>>, StoreError> {
        let r = self.db.begin_read().map_err(idx)?;
        let t = r.open_table(TRUST).map_err(idx)?;
        let v = t.get("revocations").map_err(idx)?;
        Ok(v.map(|v| v.value().to_vec()))
    }
}
