use super::*;
use hubcast_protocol::sender::chunk_range;

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
        let mut batch: Vec<(&VerifiedChunk, Option<u64>)> = chunks.iter().map(|c| (c, None)).collect();
        batch.push((&chunks[0], None));
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

/// Chunks of this size are larger than what the index keeps.
const LARGE: u32 = 128 << 10;

/// An object of three chunks larger than [`INLINE_MAX`] (the last one
/// short), received: its manifest, its chunks, and its bytes.
fn large_object() -> (Manifest, Vec<VerifiedChunk>, Vec<u8>) {
    let data: Vec<u8> = (0..(2 * LARGE as usize + 70_000)).map(|i| (i * 13 % 251) as u8).collect();
    let (_, mut manifests, mut chunks) =
        hubcast_protocol::store::received(&[("a film.bin", data.clone())], LARGE);
    chunks.sort_by_key(|c| c.index());
    assert_eq!(chunks.len(), 3);
    assert!(chunks.iter().all(|c| c.data().len() > INLINE_MAX));
    (manifests.remove(0), chunks, data)
}

#[test]
fn larger_chunks_are_written_at_their_place_in_the_objects_file_and_assembled_there() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (m, chunks, data) = large_object();
    let id = m.object_id;
    let object = dir.path().join("objects").join(id.to_hex());
    {
        let (mut store, _) = Store::open(dir.path()).expect("store");
        // Chunk 0 came before its manifest: a file of its own. The others
        // at their places.
        let at =
            |c: &VerifiedChunk| (c.index() != 0).then(|| chunk_range(m.size, m.chunk_size, c.index()).start);
        let batch: Vec<_> = chunks.iter().map(|c| (c, at(c))).collect();
        let done = store.put_chunks(&batch).expect("batch");
        assert!(done.iter().all(|r| matches!(r, Ok(true))), "{done:?}");
    }
    let (mut store, report) = Store::open(dir.path()).expect("reopen");
    assert_eq!(report.chunks, 3);
    assert!(report.missing.is_empty() && report.orphans_removed == 0, "{report:?}");
    let own_file = dir.path().join("chunks").join(id.to_hex()).join("0");
    assert!(own_file.is_file());
    assert_eq!(fs::metadata(&object).expect("object's file").len(), m.size, "the last chunk reaches the end");
    for c in &chunks {
        assert_eq!(store.read_chunk(&id, c.index()).expect("read").as_deref(), Some(c.data()));
        let ranges = store.read_ranges(&id, c.index(), &[0..1, 100..200, 0..u64::MAX]).expect("ranges");
        assert_eq!(ranges, vec![c.data()[0..1].to_vec(), c.data()[100..200].to_vec(), Vec::new()]);
    }
    // Complete: chunk 0 moves into the object's file, which is the object.
    assert_eq!(store.assemble(&m).expect("assemble"), object);
    assert_eq!(fs::read(&object).expect("read"), data);
    assert!(!own_file.exists(), "moved, not kept twice");
    assert_eq!(store.read_chunk(&id, 0).expect("read").as_deref(), Some(chunks[0].data()));

    // Damaged in place: the read finds it and drops the chunk; stored again,
    // it is written back at its place.
    drop(store);
    let f = fs::OpenOptions::new().write(true).open(&object).expect("open");
    f.write_all_at(b"x", u64::from(LARGE) + 5).expect("damage");
    let (mut store, _) = Store::open(dir.path()).expect("reopen");
    assert!(matches!(
        store.read_chunk(&id, 1),
        Err(StoreError::Lost { index: 1, why: LostWhy::Damaged, .. })
    ));
    let at = chunk_range(m.size, m.chunk_size, 1).start;
    assert!(matches!(store.put_chunks(&[(&chunks[1], Some(at))]).expect("again")[..], [Ok(true)]));
    assert_eq!(fs::read(&object).expect("read"), data, "healed in place");

    // Cut short while stopped: the last chunk is missing at the next open.
    drop(store);
    f.set_len(2 * u64::from(LARGE) + 10).expect("truncate");
    let (mut store, report) = Store::open(dir.path()).expect("reopen");
    assert_eq!(report.missing, vec![(id, 2)]);
    assert_eq!(store.chunk_count(&id), 2);
    store.remove_object(&id).expect("remove");
    assert!(!object.exists(), "the object's file goes with it");
}

#[test]
fn an_objects_file_the_index_does_not_name_is_deleted_and_a_stray_moved_aside() {
    let dir = tempfile::tempdir().expect("temp dir");
    drop(Store::open(dir.path()).expect("store"));
    let objects = dir.path().join("objects");
    // Written before a crash, never committed; and a file the hub never wrote.
    fs::write(objects.join(ObjectId([9; 32]).to_hex()), b"unnamed bytes").expect("write");
    fs::write(objects.join("notes.txt"), b"mine").expect("write");
    let (_, report) = Store::open(dir.path()).expect("reopen");
    assert_eq!(report.orphans_removed, 1, "{report:?}");
    assert_eq!(report.quarantined.len(), 1, "{report:?}");
    assert_eq!(fs::read(dir.path().join(QUARANTINE).join("notes.txt")).expect("kept"), b"mine");
    assert_eq!(fs::read_dir(&objects).expect("objects").count(), 0);
}
