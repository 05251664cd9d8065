//! Peer repair end to end: real hubs find each other on the control group and
//! repair over real QUIC; the broadcaster sends one round and nothing else.

use hubcast_tests::*;
use serde_json::Value;
use std::time::Duration;

const DEADLINE: Duration = Duration::from_secs(180);

#[test]
fn a_hub_losing_20_percent_completes_from_three_peers_without_the_origin() {
    let start = std::time::Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let dir = t.join("sample");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("film-12MiB.bin"), pattern(12 << 20, 3)).unwrap();
    std::fs::write(dir.join("notes.txt"), pattern(3000, 4)).unwrap();
    let fingerprint = keygen(&t.join("keys"));
    let group = unique_group();

    let lossy = |i| match i {
        3 => ["--simulate-loss", "0.2", "--loss-seed", "11"].map(String::from).to_vec(),
        _ => Vec::new(),
    };
    let (_hubs, https) = start_hubs(t, &fingerprint, group, 4, lossy);
    // Every hub knows the three others before anything is sent.
    wait_for_peers(&https, 3, DEADLINE);

    eprintln!("hubs found each other after {:.1} s", start.elapsed().as_secs_f64());
    // One round only: at 20% loss and 10% overhead the lossy hub cannot
    // complete a chunk from the multicast alone.
    let _bc = Daemon::spawn(
        "broadcaster",
        &bin("broadcaster"),
        &seed_args_with_origin(&t.join("keys"), group, "100mbit", 1, &[&dir]),
        t,
    );
    let done: Vec<Value> = https
        .iter()
        .map(|http| wait_for("every hub complete", DEADLINE, || status(*http).filter(|s| all_complete(s, 2))))
        .collect();

    eprintln!("all complete after {:.1} s", start.elapsed().as_secs_f64());
    let source = tree_digest(&dir);
    for i in 0..4 {
        assert_eq!(tree_digest(&t.join(format!("out-{i}/sample"))), source, "hub {i}'s copies differ");
    }
    assert!(all_complete(&done[3], 2));
    // Peer figures refresh with each announcement: wait until they cover
    // every byte the hub credits to peers.
    let lossy = &wait_for("peer figures to settle", DEADLINE, || {
        let s = status(https[3])?;
        let from_peers: u64 = s["peers"].as_array()?.iter().map(|p| u(&p["bytes_from"])).sum();
        (from_peers == u(&s["bytes"]["peer"])).then_some(s)
    });
    let bytes = &lossy["bytes"];
    eprintln!("lossy hub: bytes {bytes}, repair {}", lossy["repair"]);
    // The origin was there to be asked (it came with the manifests), and
    // was not needed.
    assert!(origin_known(lossy), "{}", lossy["tracker"]);
    assert_eq!(u(&bytes["origin"]), 0, "{bytes}");
    assert!(u(&bytes["peer"]) > 0, "{bytes}");
    assert!(u(&lossy["datagrams"]["simulated_loss"]) > 0);
    // The serving hubs' figures refresh with their own announcements (every
    // 2 s): wait until they cover what the hub credits them.
    let peer_bytes = u(&bytes["peer"]);
    let served: u64 = wait_for("the serving hubs' figures", DEADLINE, || {
        let served: u64 =
            https.iter().take(3).filter_map(|h| status(*h)).map(|s| u(&s["repair"]["bytes_served"])).sum();
        (served >= peer_bytes).then_some(served)
    });
    eprintln!("the peers say they served {served} bytes; the hub credits them {peer_bytes}");
    let peers = lossy["peers"].as_array().unwrap();
    assert!(peers.iter().all(|p| !p["banned"].as_bool().unwrap()));
    // Every peer that served was measured (QUIC's RTT), for the planner's order.
    for p in peers.iter().filter(|p| u(&p["bytes_from"]) > 0) {
        assert!(p["rtt_ms"].as_f64().is_some_and(|r| r > 0.0), "{p}");
    }
    // Peers sent close to what was missing: the file's bytes less what the
    // multicast brought, plus the one-symbol margin per chunk. (Requests may
    // count more: a peer still collecting a chunk sends only what it has, and
    // the rest is asked of another.)
    let size = (12u64 << 20) + 3000;
    let missing = size.saturating_sub(u(&bytes["multicast"]));
    let margin = 13 * 2 * 1280;
    assert!(
        u(&bytes["peer"]) <= missing * 6 / 5 + margin,
        "peer bytes {} for {missing} missing",
        u(&bytes["peer"])
    );
    let drops = lossy["drops"].as_object().unwrap();
    assert_eq!(u(&drops["digest_mismatch"]), 0, "{drops:?}");
}
