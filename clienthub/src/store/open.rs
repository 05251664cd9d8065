//! Opening a store: the index read, and what is on disk checked against it.

use super::*;

impl Store {
    pub fn open(dir: &Path) -> Result<(Store, OpenReport), StoreError> {
        for sub in ["objects", "chunks", "tmp"] {
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
            w.open_table(PLACED).map_err(idx)?;
            w.open_table(super::evict::EVICTED).map_err(idx)?;
            w.open_table(super::evict::PINNED).map_err(idx)?;
            w.open_table(super::catalog::CATALOG_ROOT).map_err(idx)?;
            w.open_table(super::trust::TRUST).map_err(idx)?;
            w.open_table(super::catalog::CATALOG).map_err(idx)?;
            w.open_table(super::catalog::CATALOG_META).map_err(idx)?;
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
        // The objects' files, with their lengths: a chunk placed in one is
        // there if the file reaches its end.
        let objects = dir.join("objects");
        let mut object_lens: HashMap<ObjectId, u64> = HashMap::new();
        for e in fs::read_dir(&objects).map_err(io_at(&objects))? {
            let p = e.map_err(io_at(&objects))?.path();
            match p.file_name().and_then(|n| n.to_str()).and_then(object_id_of).filter(|_| p.is_file()) {
                Some(id) => {
                    object_lens.insert(id, fs::metadata(&p).map_err(io_at(&p))?.len());
                }
                None => report.quarantined.push((p.clone(), store.quarantine(&p)?)),
            }
        }
        let mut placed_in = std::collections::HashSet::new();
        let mut elsewhere = std::collections::HashSet::new();
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
                let k = *entry.map_err(idx)?.0.value();
                on_disk.insert(k);
                elsewhere.insert(k);
            }
            for entry in r.open_table(PLACED).map_err(idx)?.iter().map_err(idx)? {
                let (k, v) = entry.map_err(idx)?;
                let (k, (at, len)) = (*k.value(), v.value());
                let (id, _) = split_key(&k);
                if object_lens.get(&id).is_some_and(|l| *l >= at.saturating_add(u64::from(len))) {
                    on_disk.insert(k);
                }
                placed_in.insert(id);
                elsewhere.insert(k);
            }
        }
        // An object's file with no chunk placed in it: written before a
        // crash, never committed.
        for id in object_lens.keys().filter(|id| !placed_in.contains(*id)) {
            let p = store.object_path(id);
            fs::remove_file(&p).map_err(io_at(&p))?;
            report.orphans_removed += 1;
        }
        // Files the index does not name: written before a crash, never
        // committed (deleted), or not the hub's at all (moved aside).
        let chunks = dir.join("chunks");
        for obj in fs::read_dir(&chunks).map_err(io_at(&chunks))? {
            let obj = obj.map_err(io_at(&chunks))?.path();
            let id = obj.file_name().and_then(|n| n.to_str()).and_then(object_id_of);
            let Some(id) = id.filter(|_| obj.is_dir()) else {
                report.quarantined.push((obj.clone(), store.quarantine(&obj)?));
                continue;
            };
            for f in fs::read_dir(&obj).map_err(io_at(&obj))? {
                let f = f.map_err(io_at(&obj))?.path();
                let n = f.file_name().and_then(|n| n.to_str()).and_then(|n| n.parse::<u32>().ok());
                match n.filter(|_| f.is_file()) {
                    // A chunk kept elsewhere too (moved into its object's
                    // file, then a crash) is there: this copy goes.
                    Some(n)
                        if indexed.contains(&chunk_key(&id, n))
                            && !elsewhere.contains(&chunk_key(&id, n)) =>
                    {
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
}
