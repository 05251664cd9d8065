//! `--quota`: a hub whose quota is smaller than the channel keeps the most
//! recent objects, evicts the least recently used (store file, index and
//! export), never holds more than the quota, serves what it keeps
//! bit-identical, and does not take an evicted object from the carousel
//! again, across a restart too.

use hubcast_tests::*;
use std::time::Duration;

const DEADLINE: Duration = Duration::from_secs(120);
const FILE: usize = 256 << 10;
const QUOTA: u64 = 800 << 10;

#[test]
fn a_hub_over_its_quota_evicts_the_least_recently_used_and_keeps_them_out() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let dir = t.join("chan");
    std::fs::create_dir_all(&dir).unwrap();
    // Six files of four chunks; three fit in the quota.
    let names: Vec<String> = (1..=6).map(|i| format!("f{i}.bin")).collect();
    for (i, n) in names.iter().enumerate() {
        std::fs::write(dir.join(n), pattern(FILE, i as u64 + 1)).unwrap();
    }
    let fingerprint = keygen(&t.join("keys"));
    let group = unique_group();
    let http = free_port();
    let mut args = hub_args(&fingerprint, group, &t.join("store"), &t.join("out"), http);
    args.extend(["--quota".into(), "800KiB".into()]);
    let mut hub = Daemon::spawn("hub", &bin("clienthub"), &args, t);
    wait_for("the hub to answer", DEADLINE, || status(http));
    let mut seed = seed_args(&t.join("keys"), group, "20mbit", 0, &[&dir]);
    seed.extend(["--chunk-size".into(), "64KiB".into()]);
    let _bc = Daemon::spawn("broadcaster", &bin("broadcaster"), &seed, t);

    // The carousel goes round and round: f1-f3 complete, then evicted for
    // f4-f6. Never more than the quota held on the way.
    let mut most = 0;
    let state = |s: &serde_json::Value, name: &str, key: &str| {
        s["objects"]
            .as_array()
            .unwrap()
            .iter()
            .any(|o| o["name"].as_str().unwrap().ends_with(name) && o[key] == true)
    };
    let s = wait_for("f1-f3 evicted, f4-f6 complete", DEADLINE, || {
        let s = status(http)?;
        most = most.max(u(&s["chunks"]["held_bytes"]));
        let done = names[..3].iter().all(|n| state(&s, n, "evicted"))
            && names[3..].iter().all(|n| state(&s, n, "complete"));
        done.then_some(s)
    });
    assert!(most <= QUOTA, "held {most} bytes, over the quota of {QUOTA}");
    assert_eq!(u(&s["chunks"]["evicted"]), 3);
    assert_eq!(s["chunks"]["quota_bytes"], QUOTA);
    // What it keeps, bit-identical from the gateway and the export; what it
    // evicted, gone from both and from the disk.
    for (i, n) in names.iter().enumerate() {
        let name = s["objects"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["name"].as_str().unwrap().ends_with(n.as_str()))
            .unwrap()["name"]
            .as_str()
            .unwrap()
            .to_owned();
        let body = hubcast_clienthub::status_client::get(http, &format!("/files/{name}"));
        let export = t.join("out").join(&name);
        if i < 3 {
            assert!(body.is_err(), "{n} is still served");
            assert!(!export.exists(), "{n}'s export is still there");
        } else {
            assert_eq!(std::fs::read(&export).unwrap(), pattern(FILE, i as u64 + 1), "{n} exported");
        }
    }
    let on_disk = disk_use(&[&t.join("store/objects"), &t.join("store/chunks")]);
    assert!(on_disk <= QUOTA, "{on_disk} bytes of objects on disk");

    // Rounds go by, and a restart: the evicted stay out.
    let received = u(&s["datagrams"]["received"]);
    wait_for("another round", DEADLINE, || {
        status(http).filter(|s| u(&s["datagrams"]["received"]) > received + 2_000)
    });
    hub.kill();
    let _hub = Daemon::spawn("hub-again", &bin("clienthub"), &args, t);
    let s = wait_for("a round after the restart", DEADLINE, || {
        status(http).filter(|s| u(&s["datagrams"]["received"]) > 2_000)
    });
    assert!(
        names[..3].iter().all(|n| state(&s, n, "evicted") && !state(&s, n, "complete")),
        "{}",
        s["objects"]
    );
    assert!(names[3..].iter().all(|n| state(&s, n, "complete")), "{}", s["objects"]);
    assert!(u(&s["drops"]["unwanted"]) > 0, "the carousel's datagrams for evicted objects are dropped");
    assert!(u(&s["chunks"]["held_bytes"]) <= QUOTA);
}
