//! Archive delivery end to end: real broadcaster and hub processes, real
//! multicast sockets on loopback, real stores on disk.

use hubcast_tests::*;
use std::path::Path;
use std::time::Duration;

const DEADLINE: Duration = Duration::from_secs(240);

/// A folder with a 0-byte file, small files at the chunk and symbol edges, a
/// nested folder and a 50 MiB file.
fn sample_folder(root: &Path) -> std::path::PathBuf {
    let dir = root.join("sample");
    std::fs::create_dir_all(dir.join("nested/deeper")).unwrap();
    let files: &[(&str, usize)] = &[
        ("empty.bin", 0),
        ("one-byte.txt", 1),
        ("one-symbol.bin", 1280),
        ("nested/one-chunk.bin", 1 << 20),
        ("nested/one-chunk-plus-one.bin", (1 << 20) + 1),
        ("nested/deeper/small.txt", 1000),
        ("big-50MiB.bin", 50 << 20),
    ];
    for (i, (name, len)) in files.iter().enumerate() {
        std::fs::write(dir.join(name), pattern(*len, i as u64 + 1)).unwrap();
    }
    dir
}

#[test]
fn a_folder_reaches_two_hubs_bit_identical_one_of_them_losing_5_percent() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let sample = sample_folder(t);
    let fingerprint = keygen(&t.join("keys"));
    let group = unique_group();
    let (http_a, http_b) = (free_port(), free_port());

    let a = Daemon::spawn(
        "hub-a",
        &bin("clienthub"),
        &hub_args(&fingerprint, group, &t.join("store-a"), &t.join("out-a"), http_a),
        t,
    );
    let mut lossy = hub_args(
        &t.join("keys/root.pub").display().to_string(),
        group,
        &t.join("store-b"),
        &t.join("out-b"),
        http_b,
    );
    lossy.extend(["--simulate-loss".into(), "0.05".into(), "--loss-seed".into(), "7".into()]);
    let _b = Daemon::spawn("hub-b", &bin("clienthub"), &lossy, t);
    wait_for("hubs to answer", DEADLINE, || status(http_a).and(status(http_b)));

    let _bc = Daemon::spawn(
        "broadcaster",
        &bin("broadcaster"),
        &seed_args_with_origin(&t.join("keys"), group, "400mbit", 0, &[&sample]),
        t,
    );
    let done_a = wait_for("hub A complete", DEADLINE, || status(http_a).filter(|s| all_complete(s, 7)));
    let done_b = wait_for("hub B complete", DEADLINE, || status(http_b).filter(|s| all_complete(s, 7)));

    let source = tree_digest(&sample);
    assert_eq!(source.len(), 7);
    assert_eq!(tree_digest(&t.join("out-a/sample")), source, "hub A's copies differ from the source");
    assert_eq!(tree_digest(&t.join("out-b/sample")), source, "hub B's copies differ from the source");
    // Written once, held once: the exports are the store's files. (The
    // index, tickets and digests, is counted apart: a few % of the content.)
    let content = disk_use(&[&sample]);
    for hub in ["a", "b"] {
        let (store, out) = (t.join(format!("store-{hub}")), t.join(format!("out-{hub}")));
        let held = disk_use(&[&store.join("objects"), &store.join("chunks"), &out]);
        let index = disk_use(&[&store.join("index.redb")]);
        println!("hub {hub}: {held} bytes of chunks and exports, index {index}, for {content} of content");
        assert!(held * 100 <= content * 102, "hub {hub} holds {held} bytes for {content}");
        assert!((held + index) * 100 <= content * 105, "hub {hub}: index {index} bytes");
    }
    // And written once: what hub A put on disk, index and all, against
    // the content.
    let written = a.write_bytes().expect("/proc/PID/io of hub A");
    println!(
        "hub a wrote {written} bytes for {content} of content ({:.3} ×)",
        written as f64 / content as f64
    );
    assert!(written * 100 <= content * 105, "hub a wrote {written} bytes for {content}");

    for (name, s) in [("A", &done_a), ("B", &done_b)] {
        let drops = s["drops"].as_object().unwrap();
        let harmful: u64 = drops
            .iter()
            .filter(|(k, _)| !["duplicate", "already_complete", "pending_evicted"].contains(&k.as_str()))
            .map(|(_, v)| u(v))
            .sum();
        assert_eq!(harmful, 0, "hub {name} dropped datagrams: {drops:?}");
        let verified = u(&s["bytes"]["multicast"]) + u(&s["bytes"]["peer"]);
        assert!(verified >= 50 << 20, "hub {name}: {}", s["bytes"]);
        assert!(origin_known(s), "hub {name}: {}", s["tracker"]);
        assert_eq!(u(&s["bytes"]["origin"]), 0);
        assert_eq!(u(&s["chunks"]["refetched"]), 0);
    }
    assert!(u(&done_b["datagrams"]["simulated_loss"]) > 0, "hub B lost nothing: {}", done_b["datagrams"]);
    assert_eq!(u(&done_a["datagrams"]["simulated_loss"]), 0);
    // The socket's own kernel drop count is read (Linux), whatever it is.
    assert!(done_a["datagrams"]["kernel_drops"].is_u64(), "{}", done_a["datagrams"]);

    // What an operator's tools see: curl on the JSON status and the Prometheus text.
    let curl = |path: &str| {
        let out = std::process::Command::new("curl")
            .args(["-sf", "--max-time", "10", &format!("http://{http_a}{path}")])
            .output()
            .expect("curl is installed (.ci/run installs it)");
        assert!(out.status.success(), "curl {path} failed");
        String::from_utf8(out.stdout).unwrap()
    };
    let json: serde_json::Value = serde_json::from_str(&curl("/api/status")).unwrap();
    assert_eq!(json["objects"].as_array().unwrap().len(), 7);
    // Each hub has its own node identity, made on first run in its store.
    assert_eq!(json["node_id"].as_str().unwrap().len(), 64);
    assert_ne!(json["node_id"], done_b["node_id"]);
    assert!(t.join("store-a/node.key").exists());
    let metrics = curl("/metrics");
    let multicast = metrics
        .lines()
        .find_map(|l| l.strip_prefix("hubcast_verified_bytes_total{source=\"multicast\"} "))
        .and_then(|v| v.parse::<u64>().ok())
        .expect("multicast bytes metric");
    assert!(multicast >= 50 << 20, "{metrics}");
    assert!(metrics.contains("hubcast_objects_complete 7"), "{metrics}");
    assert!(curl("/").contains("big-50MiB.bin"));
}

#[test]
fn a_hub_killed_mid_transfer_resumes_without_fetching_stored_chunks_again() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let src = t.join("movie.bin");
    let size = 24 << 20;
    std::fs::write(&src, pattern(size, 42)).unwrap();
    // The film's 24, and the catalog's index and page, a chunk each.
    let film_chunks = 24u64;
    let chunks = film_chunks + 2;
    let fingerprint = keygen(&t.join("keys"));
    let group = unique_group();
    let http = free_port();
    let args = hub_args(&fingerprint, group, &t.join("store"), &t.join("out"), http);

    let mut hub = Daemon::spawn("hub-first-run", &bin("clienthub"), &args, t);
    wait_for("hub to answer", DEADLINE, || status(http));
    // Slow enough that the kill lands mid-object.
    let _bc = Daemon::spawn(
        "broadcaster",
        &bin("broadcaster"),
        &seed_args(&t.join("keys"), group, "40mbit", 0, &[&src]),
        t,
    );
    let before = wait_for("a third of the chunks stored", DEADLINE, || {
        status(http).filter(|s| u(&s["chunks"]["stored"]) >= chunks / 3)
    });
    hub.kill();
    let stored_before_kill = u(&before["chunks"]["stored"]);
    assert!(stored_before_kill < chunks, "the kill must land mid-transfer");

    let mut hub = Daemon::spawn("hub-second-run", &bin("clienthub"), &args, t);
    let done =
        wait_for("hub complete after restart", DEADLINE, || status(http).filter(|s| all_complete(s, 1)));
    let c = &done["chunks"];
    let at_start = u(&c["stored_at_start"]);
    // Everything stored before the kill (and reported) survived it.
    assert!(
        at_start >= stored_before_kill,
        "stored_at_start {at_start} < {stored_before_kill} before the kill"
    );
    // The second run decoded exactly the chunks that were missing, none twice.
    assert_eq!(u(&c["stored_this_run"]), chunks - at_start, "{c}");
    assert_eq!(u(&c["refetched"]), 0, "{c}");
    assert!(u(&done["datagrams"]["decode_attempts"]) >= chunks - at_start);
    // Datagrams for stored chunks were recognised and skipped, not decoded.
    assert!(u(&done["drops"]["already_complete"]) > 0, "{}", done["drops"]);
    assert_eq!(std::fs::read(t.join("out/movie.bin")).unwrap(), std::fs::read(&src).unwrap());

    // The store keeps what serving peers needs: for every chunk, its bytes and the
    // signed ticket they were verified against (a server can only be built from a
    // chunk that matches its ticket).
    hub.kill();
    let (mut store, _) = hubcast_clienthub::store::Store::open(&t.join("store")).unwrap();
    let id = archive_id("movie.bin", &std::fs::read(&src).unwrap());
    for i in 0..film_chunks as u32 {
        let data = store.read_chunk(&id, i).unwrap().expect("chunk stored");
        let ticket = store.read_ticket(&id, i).unwrap().expect("ticket stored");
        assert!(hubcast_protocol::serve::ChunkServer::new(ticket, data.clone()).is_ok(), "chunk {i}");
    }

    // The table pages are kept too: a request for a few source symbols is
    // answered from those symbols' bytes, the same datagrams the whole chunk
    // gives; a request for a repair symbol needs the chunk.
    use hubcast_clienthub::store_worker::{read_to_serve, FromStore};
    use hubcast_protocol::peer_wire::EsiRanges;
    use hubcast_protocol::serve::{answer_complete, ChunkRequest};
    let esis = |first, n| EsiRanges::new(vec![(first, n)]).unwrap();
    let few = ChunkRequest { object_id: id, index: 1, table: Some(0b11), esis: esis(150, 20) };
    let Some(FromStore::Answer(answer)) = read_to_serve(&mut store, &few).unwrap() else {
        panic!("a few source symbols with kept pages: answered from their bytes")
    };
    let repair = ChunkRequest { esis: esis(1000, 1), ..few.clone() };
    let Some(FromStore::Chunk(server)) = read_to_serve(&mut store, &repair).unwrap() else {
        panic!("a repair symbol: the whole chunk")
    };
    assert_eq!(answer, answer_complete(&few, &server).unwrap());
    // A damaged chunk on disk is never served: the symbols fail their
    // digests, the whole-chunk read finds the damage, and the chunk is dropped.
    // (Chunk 1 is at 1 MiB in the object's file.)
    let file = t.join("store/objects").join(id.to_hex());
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[(1 << 20) + 150 * 1280 + 3] ^= 1;
    std::fs::write(&file, &bytes).unwrap();
    assert!(matches!(
        read_to_serve(&mut store, &few),
        Err(hubcast_clienthub::store::StoreError::Lost {
            index: 1,
            why: hubcast_clienthub::store::LostWhy::Damaged,
            ..
        })
    ));
    assert!(read_to_serve(&mut store, &few).unwrap().is_none(), "dropped: asked for again");
}

#[test]
fn a_hub_given_the_wrong_trust_stores_nothing_and_counts_every_drop() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let src = t.join("data.bin");
    std::fs::write(&src, pattern(3 << 20, 3)).unwrap();
    keygen(&t.join("keys"));
    let stranger = keygen(&t.join("other-keys"));
    let group = unique_group();
    let http = free_port();
    let _hub = Daemon::spawn(
        "hub",
        &bin("clienthub"),
        &hub_args(&stranger, group, &t.join("store"), &t.join("out"), http),
        t,
    );
    wait_for("hub to answer", DEADLINE, || status(http));

    let mut bc = Daemon::spawn(
        "broadcaster",
        &bin("broadcaster"),
        &seed_args(&t.join("keys"), group, "200mbit", 2, &[&src]),
        t,
    );
    assert!(bc.wait_exit(DEADLINE).is_some_and(|s| s.success()), "broadcaster: {}", bc.log_text());
    let sent: u64 = bc
        .log_text()
        .split_whitespace()
        .skip_while(|w| *w != "as")
        .nth(1)
        .and_then(|n| n.parse().ok())
        .expect("broadcaster reports datagrams sent");
    // Wait until the hub has read everything that reached it.
    let mut last = u64::MAX;
    let s = wait_for("hub to read every datagram", DEADLINE, || {
        let s = status(http)?;
        let now = u(&s["datagrams"]["received"]);
        std::thread::sleep(Duration::from_millis(1200)); // status refreshes every second
        let settled = now == last && now > 0;
        last = now;
        settled.then_some(s)
    });
    // How much of it reached the hub depends on this machine's load (the
    // kernel drops what a busy reader does not take): printed, not asserted.
    let received = u(&s["datagrams"]["received"]);
    eprintln!("the hub read {received} of {sent} datagrams");
    assert!(received > 0, "received {received} of {sent}");
    assert_eq!(u(&s["drops"]["wrong_channel"]), received, "{}", s["drops"]);
    assert_eq!(s["objects"].as_array().unwrap().len(), 0);
    assert_eq!(u(&s["chunks"]["stored"]), 0);
    assert_eq!(u(&s["bytes"]["multicast"]), 0);
    let stored_files = std::fs::read_dir(t.join("store/chunks")).unwrap().count();
    assert_eq!(stored_files, 0, "nothing may be stored");
    assert!(!t.join("out").exists() || std::fs::read_dir(t.join("out")).unwrap().count() == 0);
}

/// Every path of a seeded folder arrives under its own name, though contents
/// repeat: two identical files, two empty files (one name with a space), and
/// one file under two directories, at a chunk edge. A re-seed of one file on
/// its own adds that file and leaves every exported path as it was.
#[test]
fn paths_sharing_content_each_arrive_and_a_reseed_changes_nothing_already_right() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let dir = t.join("dup");
    std::fs::create_dir_all(dir.join("x")).unwrap();
    std::fs::create_dir_all(dir.join("y z")).unwrap();
    let text = b"the same words under two names\n".to_vec();
    let binary = pattern((1 << 20) + 1, 11);
    let files: [(&str, &[u8]); 6] = [
        ("a.txt", &text),
        ("b.txt", &text),
        ("empty", b""),
        ("empty too", b""),
        ("x/r.bin", &binary),
        ("y z/r.bin", &binary),
    ];
    for (name, content) in files {
        std::fs::write(dir.join(name), content).unwrap();
    }
    let fingerprint = keygen(&t.join("keys"));
    let group = unique_group();
    let http = free_port();
    let _hub = Daemon::spawn(
        "hub",
        &bin("clienthub"),
        &hub_args(&fingerprint, group, &t.join("store"), &t.join("out"), http),
        t,
    );
    wait_for("hub to answer", DEADLINE, || status(http));
    let mut seed = Daemon::spawn(
        "broadcaster",
        &bin("broadcaster"),
        &seed_args(&t.join("keys"), group, "100mbit", 0, &[&dir]),
        t,
    );
    wait_for("all six paths complete", DEADLINE, || status(http).filter(|s| all_complete(s, 6)));
    seed.kill();
    let source = tree_digest(&dir);
    assert_eq!(source.len(), 6);
    assert_eq!(tree_digest(&t.join("out/dup")), source, "every path, each with its own content");
    let exported_at = |p: &str| std::fs::metadata(t.join("out/dup").join(p)).unwrap().modified().unwrap();
    let before: Vec<_> = files.iter().map(|(name, _)| exported_at(name)).collect();

    // One file again, on its own: it arrives as `b.txt`, next to the folder.
    let _again = Daemon::spawn(
        "broadcaster-again",
        &bin("broadcaster"),
        &seed_args(&t.join("keys"), group, "100mbit", 0, &[&dir.join("b.txt")]),
        t,
    );
    let s = wait_for("the re-seeded file complete", DEADLINE, || status(http).filter(|s| all_complete(s, 7)));
    assert_eq!(std::fs::read(t.join("out/b.txt")).unwrap(), text);
    assert_eq!(tree_digest(&t.join("out/dup")), source, "the folder's paths are untouched");
    let after: Vec<_> = files.iter().map(|(name, _)| exported_at(name)).collect();
    assert_eq!(after, before, "no path of the folder was exported again");
    assert_eq!(u(&s["chunks"]["refetched"]), 0, "{}", s["chunks"]);
}

/// A `kill -9` inside the export's last window: the files are renamed into
/// place but the index has not recorded them (the testing aid
/// HUBCAST_TEST_EXPORT_STALL_MS holds the hub there). The restarted hub
/// finishes with identical copies and leaves no `.part` file behind.
#[test]
fn a_hub_killed_between_an_exports_rename_and_its_record_finishes_identical() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let dir = t.join("sample");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("a.bin"), pattern((2 << 20) + 3, 31)).unwrap();
    std::fs::write(dir.join("b.txt"), b"the second file\n").unwrap();
    let fingerprint = keygen(&t.join("keys"));
    let group = unique_group();
    let http = free_port();
    let args = hub_args(&fingerprint, group, &t.join("store"), &t.join("out"), http);
    let stall = [(hubcast_clienthub::export::STALL_ENV, "60000")];
    let mut hub = Daemon::spawn_with_env("hub-stalled", &bin("clienthub"), &args, t, &stall);
    wait_for("hub to answer", DEADLINE, || status(http));
    let _bc = Daemon::spawn(
        "broadcaster",
        &bin("broadcaster"),
        &seed_args(&t.join("keys"), group, "100Mbit", 0, &[&dir]),
        t,
    );
    wait_for("the hub inside the window", DEADLINE, || {
        hub.log_text().contains("pausing after the export's rename").then_some(())
    });
    hub.kill();
    // Exports finished together are recorded together: the window holds
    // one rename, or both when the two files completed in one batch.
    let renamed = ["a.bin", "b.txt"].iter().filter(|n| t.join("out/sample").join(n).exists()).count();
    assert!(renamed >= 1, "killed after a rename, before its record");

    let _hub = Daemon::spawn("hub-again", &bin("clienthub"), &args, t);
    wait_for("both complete after the restart", DEADLINE, || status(http).filter(|s| all_complete(s, 2)));
    assert_eq!(tree_digest(&t.join("out/sample")), tree_digest(&dir), "identical copies");
    let parts = std::fs::read_dir(t.join("out/sample")).unwrap().flatten();
    let left: Vec<_> = parts.filter(|e| e.file_name().to_string_lossy().ends_with(".part")).collect();
    assert!(left.is_empty(), "no .part left: {left:?}");
}

/// Many small files at once: every one arrives. The store takes them in
/// batches (one commit for many, small chunks kept in its index); a batch
/// that lost a chunk or a manifest leaves files missing for good (origin
/// repair, on for a loaded machine's kernel drops, does not bring back what
/// the hub already counts as received). The kernel drops themselves are the
/// `small_files` bench's figure.
#[test]
fn a_folder_of_600_small_files_arrives_whole() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let dir = t.join("many");
    for i in 0..600usize {
        // Empty files, equal contents under two names, names with spaces,
        // and sizes around the symbol edge.
        let (name, len, seed) = match i % 6 {
            0 => (format!("d{}/empty {i}.txt", i % 7), 0, 0),
            1 => (format!("d{}/same-{i}.txt", i % 7), 700, 1),
            2 => (format!("d{}/edge-{i}.bin", i % 7), 1280, i as u64),
            3 => (format!("d{}/edge+1 {i}.bin", i % 7), 1281, i as u64),
            _ => (format!("d{}/f{i}.bin", i % 7), 100 + i * 7, i as u64),
        };
        let path = dir.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, pattern(len, seed)).unwrap();
    }
    let fingerprint = keygen(&t.join("keys"));
    let group = unique_group();
    let http = free_port();
    let _hub = Daemon::spawn(
        "hub",
        &bin("clienthub"),
        &hub_args(&fingerprint, group, &t.join("store"), &t.join("out"), http),
        t,
    );
    wait_for("hub to answer", DEADLINE, || status(http));
    let _bc = Daemon::spawn(
        "broadcaster",
        &bin("broadcaster"),
        &seed_args_with_origin(&t.join("keys"), group, "200mbit", 1, &[&dir]),
        t,
    );
    let done = wait_for("every file complete", DEADLINE, || status(http).filter(|s| all_complete(s, 600)));
    assert_eq!(tree_digest(&t.join("out/many")), tree_digest(&dir), "the copies differ from the source");
    assert!(u(&done["chunks"]["stored"]) <= 600, "{}", done["chunks"]);
}
