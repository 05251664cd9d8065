//! A damaged store heals: chunks damaged or deleted on disk under a running
//! hub, or while it was stopped, are found (by the background scrub, or at
//! start), dropped, and fetched again from a peer in the same run; entries
//! the hub did not write are moved aside, never deleted, and the hub starts.

use hubcast_tests::*;
use std::path::Path;
use std::time::Duration;

const DEADLINE: Duration = Duration::from_secs(180);
// The short last chunk is larger than what the store keeps in its index
// (`INLINE_MAX`), so it is in the object's file, and cutting the file short
// loses it.
const SIZE: usize = (3 << 20) + (100 << 10);
const _: () = assert!((100 << 10) > hubcast_clienthub::store::INLINE_MAX);

/// One byte of chunk `index` flipped, in place.
fn damage(object: &Path, index: u64) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().read(true).write(true).open(object).unwrap();
    let mut b = [0u8];
    f.read_exact_at(&mut b, (index << 20) + 1000).unwrap();
    f.write_all_at(&[b[0] ^ 0x5a], (index << 20) + 1000).unwrap();
}

/// The object's file cut short: its last chunk (3) is gone.
fn cut_last_chunk(object: &Path) {
    std::fs::OpenOptions::new().write(true).open(object).unwrap().set_len(3 << 20).unwrap();
}

fn lost(s: &serde_json::Value) -> u64 {
    u(&s["chunks"]["lost"])
}

#[test]
fn chunks_damaged_or_deleted_are_fetched_again_from_a_peer_while_running_and_across_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let dir = t.join("sample");
    std::fs::create_dir_all(&dir).unwrap();
    let film = pattern(SIZE, 6);
    std::fs::write(dir.join("film.bin"), &film).unwrap();
    let fingerprint = keygen(&t.join("keys"));
    let group = unique_group();
    let id = archive_id("sample/film.bin", &film);
    // Hub 0 scrubs its whole store every second; hub 1 is the honest peer.
    let scrub = |i| match i {
        0 => ["--scrub-every", "1"].map(String::from).to_vec(),
        _ => Vec::new(),
    };
    let (mut hubs, https) = start_hubs(t, &fingerprint, group, 2, scrub);
    wait_for_peers(&https, 1, DEADLINE);
    // One round only: what is lost later can come from the peer alone.
    let mut bc = Daemon::spawn(
        "broadcaster",
        &bin("broadcaster"),
        &seed_args(&t.join("keys"), group, "50Mbit", 1, &[&dir]),
        t,
    );
    for http in &https {
        wait_for("both hubs complete", DEADLINE, || status(*http).filter(|s| all_complete(s, 1)));
    }
    assert!(bc.wait_exit(DEADLINE).is_some_and(|s| s.success()));
    let export = t.join("out-0/sample/film.bin");
    assert_eq!(std::fs::read(&export).unwrap(), film);
    // The export is the store's copy: one file, held once.
    let object = t.join("store-0/objects").join(id.to_hex());
    let inode = |p: &Path| std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(p).unwrap());
    assert_eq!(inode(&export), inode(&object), "the export is a hard link to the store's file");

    // Under the running hub: chunk 0 damaged, chunk 3 cut off.
    damage(&object, 0);
    cut_last_chunk(&object);
    let s = wait_for("the scrub to find both and the peer to bring them back", DEADLINE, || {
        status(https[0]).filter(|s| lost(s) >= 2 && all_complete(s, 1))
    });
    assert_eq!(lost(&s), 2, "{}", s["chunks"]);
    assert!(u(&s["bytes"]["peer"]) > 0, "repaired from the peer: {}", s["bytes"]);
    assert_eq!(u(&s["bytes"]["origin"]), 0);
    assert_eq!(std::fs::read(&export).unwrap(), film, "the export is whole again: healed in place");

    // Stopped: chunk 1 damaged, chunk 3 (the short last one) cut off again,
    // and an entry the hub never wrote; `clienthub fsck` finds them.
    hubs[0].kill();
    damage(&object, 1);
    cut_last_chunk(&object);
    std::fs::write(t.join("store-0/objects/notes.txt"), b"mine").unwrap();
    let fsck = std::process::Command::new(bin("clienthub"))
        .args(["fsck", "--store"])
        .arg(t.join("store-0"))
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&fsck.stdout);
    assert!(fsck.status.success(), "{said}{}", String::from_utf8_lossy(&fsck.stderr));
    for line in [
        "missing on disk, dropped: 1",
        "damaged, dropped: 1",
        "not the hub's, moved aside:",
        "fetch again from peers at its next start: 2",
    ] {
        assert!(said.contains(line), "`{line}` in:\n{said}");
    }
    // Two more strays after the check: the hub moves them aside at start.
    std::fs::create_dir_all(t.join("store-0/tmp/a folder")).unwrap();
    std::fs::write(t.join("store-0/tmp/draft.txt"), b"also mine").unwrap();
    let mut args = hub_args(&fingerprint, group, &t.join("store-0"), &t.join("out-0"), https[0]);
    args.extend(scrub(0));
    hubs[0] = Daemon::spawn("hub-0-again", &bin("clienthub"), &args, t);
    let s = wait_for("the restarted hub to heal", DEADLINE, || {
        status(https[0]).filter(|s| lost(s) >= 2 && all_complete(s, 1))
    });
    assert_eq!(lost(&s), 2, "the two fsck dropped, fetched at start: {}", s["chunks"]);
    assert_eq!(u(&s["chunks"]["quarantined"]), 2, "{}", s["chunks"]);
    assert!(u(&s["bytes"]["peer"]) > 0, "{}", s["bytes"]);
    let quarantine = t.join("store-0/quarantine");
    assert_eq!(std::fs::read(quarantine.join("notes.txt")).unwrap(), b"mine", "moved aside, kept");
    assert!(quarantine.join("a folder").is_dir());
    assert_eq!(std::fs::read(quarantine.join("draft.txt")).unwrap(), b"also mine", "a file in tmp/ too");
    let log = hubs[0].log_text();
    assert!(log.contains("moved aside"), "says so: {log}");
    assert_eq!(std::fs::read(&object).unwrap(), film, "every chunk stored again");
    assert_eq!(std::fs::read(&export).unwrap(), film);
}
