//! `--upload-rate` end to end: two hubs that may serve only 1 Mbit/s each still
//! repair a hub losing 20%, and hold their answers back to stay within the cap
//! (their status counts the answers paced). The cap is a token bucket with one
//! second of burst, so serving more than a second's worth must wait; an answer
//! that would wait past the asker's patience is refused as busy instead, so no
//! request times out (and the hub may NAK the origin for it).

use hubcast_tests::*;
use serde_json::Value;
use std::time::Duration;

const DEADLINE: Duration = Duration::from_secs(180);
/// Mbit/s each serving hub may upload.
const CAP_MBIT: f64 = 1.0;

#[test]
fn hubs_capped_at_1_mbit_pace_their_answers_and_the_lossy_hub_still_completes() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let dir = t.join("sample");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("clip-6MiB.bin"), pattern(6 << 20, 21)).unwrap();
    let fingerprint = keygen(&t.join("keys"));
    let group = unique_group();
    let args = |i| match i {
        2 => ["--simulate-loss", "0.2", "--loss-seed", "5"].map(String::from).to_vec(),
        _ => vec!["--upload-rate".into(), format!("{CAP_MBIT}Mbit")],
    };
    let (_hubs, https) = start_hubs(t, &fingerprint, group, 3, args);
    wait_for_peers(&https, 2, DEADLINE);
    let _bc = Daemon::spawn(
        "broadcaster",
        &bin("broadcaster"),
        &seed_args_with_origin(&t.join("keys"), group, "100mbit", 1, &[&dir]),
        t,
    );
    for http in &https {
        wait_for("every hub complete", DEADLINE, || status(*http).filter(|s| all_complete(s, 1)));
    }
    assert_eq!(tree_digest(&t.join("out-2/sample")), tree_digest(&dir), "the lossy hub's copy differs");

    // Counters are published with each announcement (every 2 s).
    let lossy = wait_for("the lossy hub's peer figures", DEADLINE, || {
        let s = status(https[2])?;
        let from_peers: u64 = s["peers"].as_array()?.iter().map(|p| u(&p["bytes_from"])).sum();
        (from_peers == u(&s["bytes"]["peer"])).then_some(s)
    });
    let repaired = u(&lossy["bytes"]["peer"]);
    assert!(origin_known(&lossy), "{}", lossy["tracker"]);
    // Peers that are slow to answer are the reason origin repair exists: a
    // busy machine (CI, 2026-12-05: 108,800 origin bytes against 741,120
    // from peers) makes the capped peers refuse as busy, and the hub NAKs
    // what they could not serve in time. The peers still carry the repair.
    let origin = u(&lossy["bytes"]["origin"]);
    assert!(repaired > 0 && origin < repaired, "{}", lossy["bytes"]);
    let servers: Vec<Value> = https[..2]
        .iter()
        .map(|h| {
            wait_for("the serving hubs' figures", DEADLINE, || {
                status(*h).filter(|s| u(&s["repair"]["bytes_served"]) > 0 || u(&s["repair"]["requests"]) == 0)
            })
        })
        .collect();
    let served: u64 = servers.iter().map(|s| u(&s["repair"]["bytes_served"])).sum();
    let paced: u64 = servers.iter().map(|s| u(&s["repair"]["upload_paced"])).sum();
    let paced_ms: u64 = servers.iter().map(|s| u(&s["repair"]["upload_paced_ms"])).sum();
    let busy: u64 = servers.iter().map(|s| u(&s["repair"]["upload_busy"])).sum();
    eprintln!("lossy hub: repair {}", lossy["repair"]);
    // Never held past the asker's patience: no request timed out.
    assert_eq!(u(&lossy["repair"]["failed"]), 0, "{}", lossy["repair"]);
    eprintln!("repaired {repaired} B from peers, {origin} B from the origin; served {served} B; {paced} answers paced, {paced_ms} ms in all; {busy} refused as busy");
    // More than the two buckets' one-second bursts was served: answers waited.
    let bursts = 2.0 * CAP_MBIT * 1e6 / 8.0;
    assert!(served as f64 > bursts, "served {served} B: the test must exceed the bursts ({bursts} B)");
    assert!(paced > 0, "{served} B served at {CAP_MBIT} Mbit/s each without pacing");
}
