//! On-demand fetch, pins and the API token, with real daemons: a hub whose
//! `--quota` is smaller than the channel evicts the least recently used;
//! after the carousel has stopped (the origin service still up), `clienthub
//! pin` and `clienthub get` bring evicted objects back from a peer, origin
//! bytes 0, bit-identical, the pinned one kept when room is made again;
//! without the token a pin or a fetch is refused (401) and changes nothing.
//! A hub given no quota takes 90% of its disk's free space.

use hubcast_tests::*;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const DEADLINE: Duration = Duration::from_secs(120);
const FILE: usize = 256 << 10;
const CHUNK: u64 = 64 << 10;
/// Two of the four files fit.
const QUOTA: u64 = 600 << 10;

fn object<'a>(s: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    s["objects"].as_array().unwrap().iter().find(|o| o["name"].as_str().unwrap().ends_with(name)).unwrap()
}

fn clienthub(args: &[&str], store: &Path, http: SocketAddr) -> std::process::Output {
    Command::new(bin("clienthub"))
        .args(args)
        .args(["--http", &http.to_string(), "--store"])
        .arg(store)
        .output()
        .expect("clienthub")
}

#[test]
fn evicted_objects_come_back_from_peers_on_demand_and_a_pin_holds() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let dir = t.join("chan");
    std::fs::create_dir_all(&dir).unwrap();
    let names: Vec<String> = (1..=4).map(|i| format!("f{i}.bin")).collect();
    for (i, n) in names.iter().enumerate() {
        std::fs::write(dir.join(n), pattern(FILE, i as u64 + 1)).unwrap();
    }
    let fingerprint = keygen(&t.join("keys"));
    let group = unique_group();
    // Hub 0 keeps everything; hub 1 has the quota.
    let (_hubs, https) = start_hubs(t, &fingerprint, group, 2, |i| match i {
        1 => vec!["--quota".into(), "600KiB".into()],
        _ => vec![],
    });
    let (full, small) = (https[0], https[1]);
    let store = t.join("store-1");
    wait_for_peers(&https, 1, DEADLINE);
    // Two rounds, then the carousel stops; the origin service stays.
    let mut seed = seed_args_with_origin(&t.join("keys"), group, "20mbit", 2, &[&dir]);
    seed.extend(["--chunk-size".into(), "64KiB".into()]);
    let _bc = Daemon::spawn("broadcaster", &bin("broadcaster"), &seed, t);

    let state = |s: &serde_json::Value, n: &str, key: &str| object(s, n)[key] == true;
    let s = wait_for("hub 0 to hold every file", DEADLINE, || status(full).filter(|s| all_complete(s, 4)));
    // Hub 0 was given no quota: 90% of its disk's free space, as `df` says
    // it now (other tests write beside it: within a tenth).
    let df = Command::new("df").args(["-B1", "--output=avail"]).arg(t).output().unwrap();
    let free: f64 = String::from_utf8_lossy(&df.stdout).lines().nth(1).unwrap().trim().parse().unwrap();
    let quota = u(&s["chunks"]["quota_bytes"]) as f64;
    assert!((quota - 0.9 * free).abs() <= 0.1 * free, "default quota {quota} with {free} free");
    let s = wait_for("hub 1: f1, f2 evicted; f3, f4 held", DEADLINE, || {
        status(small).filter(|s| {
            names[..2].iter().all(|n| state(s, n, "evicted"))
                && names[2..].iter().all(|n| state(s, n, "complete"))
        })
    });
    assert!(origin_known(&s), "the origin service is there to be asked");
    let f1 = object(&s, "f1.bin")["name"].as_str().unwrap().to_owned();
    let f2 = object(&s, "f2.bin")["name"].as_str().unwrap().to_owned();

    // No token, or a wrong one: refused, and nothing changes.
    let wrong = format!("Bearer {}", "0".repeat(64));
    for auth in [None, Some(wrong.as_str())] {
        assert!(request(small, "POST", &format!("/api/pin/{f1}"), auth).contains(" 401 "));
        assert!(request(small, "POST", &format!("/api/fetch/{f2}"), auth).contains(" 401 "));
        assert!(
            request(small, "GET", &format!("/files/{f2}"), auth).contains(" 503 "),
            "an evicted file is not served"
        );
    }
    let r = Command::new(bin("clienthub"))
        .args(["pin", &f1, "--http", &small.to_string(), "--store"])
        .arg(t.join("no-such-store"))
        .output()
        .unwrap();
    assert!(!r.status.success(), "a pin without the token file");
    assert!(
        String::from_utf8_lossy(&r.stderr).contains("api-token"),
        "{}",
        String::from_utf8_lossy(&r.stderr)
    );
    std::thread::sleep(Duration::from_secs(2));
    let s = status(small).unwrap();
    assert!(state(&s, "f1.bin", "evicted") && !state(&s, "f1.bin", "pinned"), "{}", object(&s, "f1.bin"));
    assert!(state(&s, "f2.bin", "evicted"));
    assert_eq!(u(&s["chunks"]["fetches"]), 0);

    // `clienthub pin` of an evicted file fetches it; room is made by
    // evicting the least recently used (f3), never beyond the quota.
    let r = clienthub(&["pin", &f1], &store, small);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    wait_for("f1 back and pinned, f3 evicted", DEADLINE, || {
        status(small).filter(|s| {
            state(s, "f1.bin", "complete") && state(s, "f1.bin", "pinned") && state(s, "f3.bin", "evicted")
        })
    });

    // `clienthub get` of an evicted file: fetched from the peer as it is
    // copied out, bit-identical; f4 makes room, the pinned f1 stays.
    let out = t.join("f2.copy");
    let r = clienthub(&["get", &f2, "-o", out.to_str().unwrap()], &store, small);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert!(std::fs::read(&out).unwrap() == pattern(FILE, 2), "the fetched copy differs from the source");
    let s = wait_for("f2 held, f4 evicted", DEADLINE, || {
        status(small).filter(|s| state(s, "f2.bin", "complete") && state(s, "f4.bin", "evicted"))
    });
    assert!(state(&s, "f1.bin", "complete") && state(&s, "f1.bin", "pinned"), "the pin holds");
    let chunks = FILE as u64 / CHUNK;
    for n in ["f1.bin", "f2.bin"] {
        assert!(u(&object(&s, n)["completed_by"]["peer"]) >= chunks, "{n} from the peer: {}", object(&s, n));
    }
    assert_eq!(u(&s["bytes"]["origin"]), 0, "nothing of the fetches from the origin");
    assert_eq!(u(&s["chunks"]["fetches"]), 2);
    assert_eq!(u(&s["chunks"]["pinned"]), 1);
    assert!(u(&s["chunks"]["held_bytes"]) <= QUOTA, "held {} of {QUOTA}", s["chunks"]["held_bytes"]);
    // The exports came back with them.
    assert!(std::fs::read(t.join("out-1").join(&f2)).unwrap() == pattern(FILE, 2));
    let on_disk = disk_use(&[&store.join("objects"), &store.join("chunks")]);
    assert!(on_disk <= QUOTA, "{on_disk} bytes of objects on disk");

    // Unpinned, f1 may go again; the status says so.
    let r = clienthub(&["unpin", &f1], &store, small);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    wait_for("f1 unpinned", DEADLINE, || status(small).filter(|s| !state(s, "f1.bin", "pinned")));
}
