//! The channel's catalog in the store: the signed root as it came (checked
//! again at start, so that a restart opens no way back to an older
//! version), and the entries of the newest version assembled, by name.

use super::{idx, Store, StoreError};
use hubcast_protocol::catalog::Entry;
use redb::{ReadableDatabase, TableDefinition};

/// "root" → (when it came, unix seconds; the root's datagram).
pub(super) const CATALOG_ROOT: TableDefinition<&str, (u64, &[u8])> = TableDefinition::new("catalog_root");
/// Name → the entry, encoded as in a page.
pub(super) const CATALOG: TableDefinition<&str, &[u8]> = TableDefinition::new("catalog_entries");
/// "version", "entries" → the assembled catalog's.
pub(super) const CATALOG_META: TableDefinition<&str, u64> = TableDefinition::new("catalog_meta");

/// Rows a query reads at most: past it, it answers with what it found and
/// a cursor to go on from.
pub const SCAN_LIMIT: usize = 200_000;

impl Store {
    pub fn put_catalog_root(&mut self, datagram: &[u8], received_unix: u64) -> Result<(), StoreError> {
        let w = self.db.begin_write().map_err(idx)?;
        w.open_table(CATALOG_ROOT).map_err(idx)?.insert("root", (received_unix, datagram)).map_err(idx)?;
        w.commit().map_err(idx)
    }

    /// The stored root's datagram and when it came.
    pub fn catalog_root(&self) -> Result<Option<(Vec<u8>, u64)>, StoreError> {
        let r = self.db.begin_read().map_err(idx)?;
        let t = r.open_table(CATALOG_ROOT).map_err(idx)?;
        let v = t.get("root").map_err(idx)?;
        Ok(v.map(|v| {
            let (at, d) = v.value();
            (d.to_vec(), at)
        }))
    }

    /// The assembled catalog's version and entry count (0, 0: none yet).
    pub fn catalog_version(&self) -> Result<(u64, u64), StoreError> {
        let r = self.db.begin_read().map_err(idx)?;
        let t = r.open_table(CATALOG_META).map_err(idx)?;
        let get = |k| t.get(k).map(|v| v.map_or(0, |v| v.value())).map_err(idx);
        Ok((get("version")?, get("entries")?))
    }

    /// Replace the catalog with version `version`'s entries, in one commit:
    /// a reader sees the old catalog or the new, never a mix. `pages` yields
    /// each page's entries in order (read and checked by the caller).
    pub fn replace_catalog<E>(
        &mut self,
        version: u64,
        pages: impl Iterator<Item = Result<Vec<Entry>, E>>,
    ) -> Result<Result<u64, E>, StoreError> {
        let w = self.db.begin_write().map_err(idx)?;
        w.delete_table(CATALOG).map_err(idx)?;
        let mut count = 0u64;
        {
            let mut t = w.open_table(CATALOG).map_err(idx)?;
            let mut buf = Vec::new();
            for page in pages {
                let entries = match page {
                    Ok(e) => e,
                    // Dropped uncommitted: the old catalog stays.
                    Err(e) => return Ok(Err(e)),
                };
                for e in entries {
                    buf.clear();
                    e.encode(&mut buf);
                    t.insert(e.name.as_str(), buf.as_slice()).map_err(idx)?;
                    count += 1;
                }
            }
            let mut meta = w.open_table(CATALOG_META).map_err(idx)?;
            meta.insert("version", version).map_err(idx)?;
            meta.insert("entries", count).map_err(idx)?;
        }
        w.commit().map_err(idx)?;
        Ok(Ok(count))
    }

    /// The entry named `name` in the assembled catalog.
    pub fn catalog_entry(&self, name: &str) -> Result<Option<Entry>, StoreError> {
        let r = self.db.begin_read().map_err(idx)?;
        let t = r.open_table(CATALOG).map_err(idx)?;
        let row = t.get(name).map_err(idx)?;
        // Written by this hub from checked pages: one that no longer decodes
        // (a damaged index) is as good as none.
        Ok(row.and_then(|v| Entry::decode_one(v.value()).ok()))
    }

    /// Entries after `cursor` (by name) that `keep` keeps, up to `limit`;
    /// and where to go on from, if the scan stopped before the end.
    pub fn catalog_scan(
        &self,
        cursor: Option<&str>,
        limit: usize,
        mut keep: impl FnMut(&Entry) -> bool,
    ) -> Result<(Vec<Entry>, Option<String>), StoreError> {
        let r = self.db.begin_read().map_err(idx)?;
        let t = r.open_table(CATALOG).map_err(idx)?;
        let range = match cursor {
            Some(c) => t.range::<&str>((std::ops::Bound::Excluded(c), std::ops::Bound::Unbounded)),
            None => t.range::<&str>(..),
        }
        .map_err(idx)?;
        let mut out = Vec::new();
        // The last name read: the next query starts after it.
        let mut last: Option<String> = None;
        for (scanned, row) in range.enumerate() {
            let (name, bytes) = row.map_err(idx)?;
            if out.len() >= limit || scanned >= SCAN_LIMIT {
                return Ok((out, last.or_else(|| cursor.map(str::to_owned))));
            }
            last = Some(name.value().to_owned());
            // Written by this hub from checked pages; one that no longer
            // decodes (a damaged index) is skipped.
            let Ok(e) = Entry::decode_one(bytes.value()) else { continue };
            if keep(&e) {
                out.push(e);
            }
        }
        Ok((out, None))
    }
}
