//! Repair across islands through the tracker, end to end: two multicast
//! islands (two groups, each with its own broadcaster seeding the same file
//! under the same keys), one hub on each. The hub on island 2 loses 20% of its
//! multicast against 10% FEC and hears no peer on its own control group; it asks
//! the tracker (island 1's origin service) which hubs hold the chunks it lacks,
//! and repairs them over QUIC from the hub on island 1.

use hubcast_keys::NodeId;
use hubcast_protocol::peer_wire::PeerMessage;
use hubcast_tests::*;
use std::process::Command;
use std::time::Duration;

const DEADLINE: Duration = Duration::from_secs(180);
const SIZE: usize = 4 << 20;

#[test]
fn a_hub_alone_on_its_island_repairs_from_a_hub_the_tracker_lists() {
    let start = std::time::Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let dir = t.join("sample");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("film-4MiB.bin"), pattern(SIZE, 9)).unwrap();
    let keys = t.join("keys");
    let fingerprint = keygen(&keys);
    let (island1, island2) = (unique_group(), unique_group());
    let out = Command::new(bin("broadcaster")).args(["node-id", "--keys"]).arg(&keys).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let tracker = format!("{}@{}", String::from_utf8(out.stdout).unwrap().trim(), free_udp_port());
    let (_, tracker_at) = tracker.split_once('@').unwrap();

    // Island 1: the broadcaster runs the tracker; its hub learns it from the
    // manifests, completes, and registers what it holds.
    let (h1_http, h1_dir) = (free_port(), t.join("island1"));
    let h1_args = hub_args(&fingerprint, island1, &h1_dir.join("store"), &h1_dir.join("out"), h1_http);
    let _h1 = Daemon::spawn("hub-1", &bin("clienthub"), &h1_args, t);
    let mut x = seed_args(&keys, island1, "100mbit", 1, &[&dir]);
    x.extend(["--tracker", tracker_at, "--linger", "600"].map(String::from));
    let _x = Daemon::spawn("broadcaster-1", &bin("broadcaster"), &x, t);
    let h1 = wait_for("hub 1 complete", DEADLINE, || status(h1_http).filter(|s| all_complete(s, 1)));
    let h1_id = h1["node_id"].as_str().unwrap().to_owned();
    eprintln!("hub 1 complete after {:.1} s", start.elapsed().as_secs_f64());
    let object = archive_id("sample/film-4MiB.bin", &pattern(SIZE, 9));
    let tracker_addr: hubcast_keys::NodeAddr = tracker.parse().unwrap();
    for chunk in 0..4 {
        wait_for("the tracker to list hub 1 as holding every chunk", DEADLINE, || {
            let query = PeerMessage::HoldersRequest { object_id: object, chunk: Some(chunk), limit: 8 };
            let list = ask_tracker(tracker_addr, query).expect("the tracker answers");
            list.iter().any(|h| NodeId(h.node_id).to_string() == h1_id).then_some(())
        });
    }
    eprintln!("hub 1 complete and registered after {:.1} s", start.elapsed().as_secs_f64());

    // Island 2: a second broadcaster (same keys, same file, no tracker) and a
    // lossy hub pointed at island 1's tracker.
    let (h2_http, h2_dir) = (free_port(), t.join("island2"));
    let mut h2_args = hub_args(&fingerprint, island2, &h2_dir.join("store"), &h2_dir.join("out"), h2_http);
    h2_args.extend(["--tracker", &tracker, "--simulate-loss", "0.2", "--loss-seed", "7"].map(String::from));
    let _h2 = Daemon::spawn("hub-2", &bin("clienthub"), &h2_args, t);
    wait_for("hub 2 up", DEADLINE, || status(h2_http));
    let y = seed_args(&keys, island2, "100mbit", 1, &[&dir]);
    let _y = Daemon::spawn("broadcaster-2", &bin("broadcaster"), &y, t);

    let h2 = wait_for("hub 2 complete", DEADLINE, || status(h2_http).filter(|s| all_complete(s, 1)));
    eprintln!(
        "hub 2 complete after {:.1} s: bytes {}, repair {}",
        start.elapsed().as_secs_f64(),
        h2["bytes"],
        h2["repair"]
    );
    assert_eq!(tree_digest(&h2_dir.join("out/sample")), tree_digest(&dir), "hub 2's copy differs");
    let bytes = &h2["bytes"];
    assert!(u(&bytes["peer"]) > 0, "hub 2 repaired nothing from peers: {bytes}");
    assert_eq!(u(&bytes["origin"]), 0, "{bytes}");
    assert_eq!(u(&h2["drops"]["digest_mismatch"]), 0);
    // Hub 1 is hub 2's peer through the tracker, not its island, and served it.
    // (Peers and repair counters are published with each announcement, every 2 s.)
    let h2 = wait_for("hub 2's peer list to show what hub 1 served", DEADLINE, || {
        let s = status(h2_http)?;
        let peers = s["peers"].as_array()?;
        let served = peers.iter().any(|p| p["node_id"] == h1_id.as_str() && u(&p["bytes_from"]) > 0);
        served.then_some(s)
    });
    let repair = &h2["repair"];
    assert!(u(&repair["tracker_lookups"]) > 0, "{repair}");
    assert!(u(&repair["tracker_listed"]) > 0, "{repair}");
    assert!(u(&repair["requests"]) > 0, "{repair}");
    let peers = h2["peers"].as_array().unwrap();
    assert_eq!(peers.len(), 1, "no other peer: {peers:?}");
    assert_eq!(peers[0]["via"], "tracker", "{}", peers[0]);
}
