use super::*;

#[test]
fn the_store_passes_the_suite_the_memory_store_passes() {
    let (manifests, chunks) = hubcast_protocol::store::suite_fixture();
    let dirs: std::cell::RefCell<Vec<tempfile::TempDir>> = Default::default();
    let make = || {
        let dir = tempfile::tempdir().expect("temp dir");
        let (store, _) = Store::open(dir.path()).expect("store");
        dirs.borrow_mut().push(dir);
        store
    };
    hubcast_protocol::store::suite(make, &manifests, &chunks).unwrap();
}

#[test]
fn a_batch_is_one_commit_and_small_chunks_live_in_the_index() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (_, chunks) = hubcast_protocol::store::suite_fixture();
    assert!(chunks.iter().all(|c| c.data().len() <= INLINE_MAX), "the fixture's chunks are small");
    {
        let (mut store, _) = Store::open(dir.path()).expect("store");
        // The same chunk twice in a batch is stored once.
        let mut batch: Vec<&VerifiedChunk> = chunks.iter().collect();
        batch.push(&chunks[0]);
        let done = store.put_chunks(&batch).expect("batch");
        let new = done.iter().filter(|r| matches!(r, Ok(true))).count();
        assert_eq!(new, chunks.len(), "{done:?}");
        assert!(matches!(done.last(), Some(Ok(false))));
    }
    let (mut store, report) = Store::open(dir.path()).expect("reopen");
    assert_eq!(report.chunks, chunks.len() as u64);
    assert!(report.missing.is_empty() && report.orphans_removed == 0, "{report:?}");
    let files = fs::read_dir(dir.path().join("chunks")).expect("chunks dir").count();
    assert_eq!(files, 0, "small chunks have no file of their own");
    for c in &chunks {
        let data = store.read_chunk(&c.object_id(), c.index()).expect("read").expect("held");
        assert_eq!(data, c.data());
        let ranges = store.read_ranges(&c.object_id(), c.index(), &[0..1, 2..5]).expect("ranges");
        assert_eq!(ranges, vec![data[0..1].to_vec(), data[2..5].to_vec()]);
    }
    let id = chunks[0].object_id();
    store.remove_object(&id).expect("remove");
    assert_eq!(store.read_chunk(&id, chunks[0].index()).expect("read"), None);
}

#[test]
fn names_that_could_escape_are_refused() {
    assert_eq!(safe_relative_path("a/b/c.txt"), Some(PathBuf::from("a/b/c.txt")));
    for bad in ["", "/etc/passwd", "../x", "a/../../x", "a//b", "./a", "a/.", "a\0b", "a\\..\\b", "a/"] {
        assert_eq!(safe_relative_path(bad), None, "{bad:?}");
    }
}

#[test]
fn a_store_that_kept_manifests_unsigned_drops_them_and_keeps_its_chunks() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (manifests, chunks) = hubcast_protocol::store::suite_fixture();
    {
        let (store, report) = Store::open(dir.path()).expect("store");
        assert!(!report.old_manifests_dropped, "a new store has nothing old");
        store.put_manifest(&manifests[0]).expect("manifest");
        let mut store = store;
        store.put_chunk(&chunks[0]).expect("chunk");
        // As a store written before 2026-12-05 held them.
        let w = store.db.begin_write().expect("write");
        let old: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new(OLD_MANIFESTS);
        w.open_table(old).expect("old table").insert(&[7; 32], &b"decoded, unsigned"[..]).expect("insert");
        w.commit().expect("commit");
    }
    let (store, report) = Store::open(dir.path()).expect("reopen");
    assert!(report.old_manifests_dropped);
    assert_eq!(store.manifests().expect("manifests"), vec![manifests[0].clone()], "the signed one stays");
    assert_eq!(store.chunks().expect("chunks"), vec![(chunks[0].object_id(), chunks[0].index())]);
    drop(store);
    let (_, report) = Store::open(dir.path()).expect("again");
    assert!(!report.old_manifests_dropped, "once");
}
