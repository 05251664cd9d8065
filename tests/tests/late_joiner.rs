//! A hub switched on mid-broadcast: the broadcaster sends one round of two
//! files; the second hub starts after the first file has gone by. The first
//! file's manifest, mixed into the second file's stream and marked "the round
//! has passed it", tells the late hub to repair it from the hub that heard it.

use hubcast_tests::*;
use serde_json::Value;
use std::time::Duration;

const DEADLINE: Duration = Duration::from_secs(180);

fn complete(s: &Value, name: &str) -> bool {
    let list = s["objects"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    list.iter().any(|o| o["name"].as_str().is_some_and(|n| n.ends_with(name)) && o["complete"] == true)
}

#[test]
fn a_hub_switched_on_after_a_file_went_by_repairs_it_from_a_peer() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let dir = t.join("sample");
    std::fs::create_dir_all(&dir).unwrap();
    // Sent in name order: 2 MiB, then 16 MiB at 20 Mbit/s (about 7 s).
    std::fs::write(dir.join("a-first.bin"), pattern(2 << 20, 31)).unwrap();
    std::fs::write(dir.join("b-second.bin"), pattern(16 << 20, 32)).unwrap();
    let fingerprint = keygen(&t.join("keys"));
    let group = unique_group();
    let (http0, http1) = (free_port(), free_port());
    let _early = Daemon::spawn(
        "hub-early",
        &bin("clienthub"),
        &hub_args(&fingerprint, group, &t.join("store-0"), &t.join("out-0"), http0),
        t,
    );
    wait_for("the early hub up", DEADLINE, || status(http0));
    let _bc = Daemon::spawn(
        "broadcaster",
        &bin("broadcaster"),
        &seed_args_with_origin(&t.join("keys"), group, "20mbit", 1, &[&dir]),
        t,
    );
    let early = wait_for("the first file at the early hub", DEADLINE, || {
        status(http0).filter(|s| complete(s, "a-first.bin"))
    });
    assert!(!complete(&early, "b-second.bin"), "the late hub must start while the second file is sent");
    let _late = Daemon::spawn(
        "hub-late",
        &bin("clienthub"),
        &hub_args(&fingerprint, group, &t.join("store-1"), &t.join("out-1"), http1),
        t,
    );
    let late = wait_for("the late hub complete", DEADLINE, || status(http1).filter(|s| all_complete(s, 2)));
    assert_eq!(tree_digest(&t.join("out-1/sample")), tree_digest(&dir), "the late hub's copies differ");
    let bytes = &late["bytes"];
    eprintln!("late hub: bytes {bytes}, repair {}", late["repair"]);
    // The first file (2 MiB) came from the early hub; the multicast never
    // reached the late hub with it.
    // The origin was there to be asked (the manifests name it) and was not.
    assert!(origin_known(&late), "{}", late["tracker"]);
    assert_eq!(u(&bytes["origin"]), 0, "{bytes}");
    assert!(u(&bytes["peer"]) >= 2 << 20, "{bytes}");
}
