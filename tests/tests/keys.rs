//! Keys for a channel that runs for years: the root stays offline, and the
//! signing key is renewed under it while the broadcaster runs.

use hubcast_tests::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const DEADLINE: Duration = Duration::from_secs(120);

/// Run `broadcaster ARGS` to success; what it printed.
fn broadcaster(args: &[&std::ffi::OsStr]) -> String {
    let out = Command::new(bin("broadcaster"))
        .args(args)
        .output()
        .expect("precondition of the suite: the built broadcaster runs");
    assert!(out.status.success(), "broadcaster {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `broadcaster certify` with a test-only validity in seconds; the serial it
/// printed.
fn certify(keys: &Path, seconds: u64) -> u64 {
    let seconds = seconds.to_string();
    let root = root_dir(keys);
    let text = broadcaster(&[
        "certify".as_ref(),
        "--seconds".as_ref(),
        seconds.as_ref(),
        "--root-dir".as_ref(),
        root.as_os_str(),
        "--keys".as_ref(),
        keys.as_os_str(),
    ]);
    let serial = text.split("serial ").nth(1).and_then(|t| t.split(',').next()).and_then(|n| n.parse().ok());
    serial.unwrap_or_else(|| panic!("certify names the serial: {text}"))
}

fn hangup(daemon: &Daemon) {
    let pid = daemon.pid().expect("the broadcaster runs").to_string();
    assert!(Command::new("kill").args(["-HUP", &pid]).status().is_ok_and(|s| s.success()));
}

/// The broadcaster's status once its certificate is `serial`.
fn signing_with(http: std::net::SocketAddr, serial: u64) -> Value {
    wait_for(&format!("the broadcaster signing with serial {serial}"), DEADLINE, || {
        status(http).filter(|s| s["certificate"]["serial"] == serial)
    })
}

/// Drops that would mean valid data was refused.
const REFUSALS: [&str; 6] =
    ["bad_certificate", "untrusted_root", "cert_signature", "cert_validity", "bad_signature", "expired"];

/// Statements that would mean the root's own were refused.
const STATEMENT_REFUSALS: [&str; 3] = ["revocations_signature", "rotation_signature", "rotation_skipped"];

/// A channel in a folder of its own: `keys` (the root kept beside it, as
/// [`keygen`] does) and `sample/NAME` of `len` pattern bytes. The folder,
/// the keys, the sample folder and the fingerprint.
fn channel(name: &str, len: usize, seed: u64) -> (tempfile::TempDir, PathBuf, PathBuf, String) {
    let tmp = tempfile::tempdir().expect("precondition of the suite: a temporary folder");
    let (keys, dir) = (tmp.path().join("keys"), tmp.path().join("sample"));
    std::fs::create_dir_all(&dir).expect("precondition of the suite: a writable temporary folder");
    std::fs::write(dir.join(name), pattern(len, seed)).expect("precondition of the suite: room to write");
    let fingerprint = keygen(&keys);
    (tmp, keys, dir, fingerprint)
}

/// None of `reasons` counted in the hub status `s`.
fn assert_none(s: &Value, reasons: &[&str]) {
    for reason in reasons {
        assert_eq!(u(&s["drops"][reason]), 0, "{reason}: {}", s["drops"]);
    }
}

/// A channel whose certificates last 20 s is renewed twice while it seeds
/// one file (about 27 s at 500 kbit/s): the hub takes every datagram, signed
/// by three keys in turn, past the end of the first two certificates, and
/// ends with the file bit for bit. The keys folder never holds the root.
#[test]
fn a_twenty_second_certificate_renewed_twice_while_seeding_loses_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let (keys, dir) = (t.join("keys"), t.join("sample"));
    std::fs::create_dir_all(&dir).unwrap();
    let content = pattern(1_500_000, 25);
    std::fs::write(dir.join("film.bin"), &content).unwrap();
    let fingerprint = keygen(&keys);
    assert!(!keys.join("root.key").exists(), "the online keys folder holds no root key");
    assert!(root_dir(&keys).join("root.key").exists());
    assert_eq!(certify(&keys, 20), 2, "keygen's certificate was serial 1");

    let (group, bc_http) = (unique_group(), free_port());
    let (_hub, https) = start_hubs(t, &fingerprint, group, 1, |_| vec![]);
    let hub_http = https[0];
    wait_for("the hub up", DEADLINE, || status(hub_http));
    let mut args = seed_args(&keys, group, "500kbit", 0, &[&dir]);
    // 64 KiB chunks: about a second each, so what was signed before a
    // renewal has gone out long before its certificate ends.
    args.extend(["--http".into(), bc_http.to_string(), "--chunk-size".into(), "64KiB".into()]);
    let bc = Daemon::spawn("broadcaster", &bin("broadcaster"), &args, t);
    let first = signing_with(bc_http, 2);
    assert_eq!(first["certificate"]["renewals"], 0);
    assert!(first["certificate"]["expires_in_secs"].as_u64().is_some_and(|s| s <= 20), "{first}");
    assert!(first["certificate"]["warning"].is_string(), "a 20 s certificate is due: {first}");

    for (renewal, serial) in [(1, 3), (2, 4)] {
        std::thread::sleep(Duration::from_secs(5));
        assert_eq!(certify(&keys, 20), serial);
        hangup(&bc);
        let s = signing_with(bc_http, serial);
        assert_eq!(s["certificate"]["renewals"], renewal, "{}", s["certificate"]);
    }
    let midway = status(hub_http).expect("the hub answers");
    assert!(!all_complete(&midway, 1), "the seed must outlast both renewals: {}", midway["objects"]);

    let done = wait_for("the hub complete", DEADLINE, || status(hub_http).filter(|s| all_complete(s, 1)));
    assert_eq!(std::fs::read(t.join("out-0/sample/film.bin")).unwrap(), content);
    assert_none(&done, &REFUSALS);
    let metrics = hubcast_clienthub::status_client::get(bc_http, "/metrics").expect("broadcaster metrics");
    assert!(metrics.contains("hubcast_certificate_serial 4"), "{metrics}");
    assert!(metrics.contains("hubcast_certificate_renewals_total 2"), "{metrics}");
}

/// `broadcaster revoke` as the key ceremony runs it.
fn revoke(keys: &Path, serial: u64) {
    let (serial, root) = (serial.to_string(), root_dir(keys));
    broadcaster(&[
        "revoke".as_ref(),
        "--serial".as_ref(),
        serial.as_ref(),
        "--root-dir".as_ref(),
        root.as_os_str(),
        "--keys".as_ref(),
        keys.as_os_str(),
    ]);
}

/// Record what goes by on `group` until `stop` says enough.
fn capture(group: std::net::SocketAddr, mut stop: impl FnMut(&[Vec<u8>]) -> bool) -> Vec<Vec<u8>> {
    use hubcast_transport::multicast::MulticastConfig;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let socket = hubcast_transport::multicast::receiver(&MulticastConfig::new(group)).unwrap();
        let mut got = Vec::new();
        let mut buf = vec![0u8; 65536];
        while !stop(&got) {
            match tokio::time::timeout(DEADLINE, socket.recv(&mut buf)).await {
                Ok(Ok(n)) => got.push(buf[..n].to_vec()),
                _ => panic!("no multicast on {group} to capture"),
            }
        }
        got
    })
}

fn replay(group: std::net::SocketAddr, datagrams: &[Vec<u8>]) {
    use hubcast_transport::multicast::MulticastConfig;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let socket = hubcast_transport::multicast::sender(&MulticastConfig::new(group)).unwrap();
        for d in datagrams {
            socket.send_to(d, group).await.unwrap();
        }
    });
}

/// A leaked signing key: the operator revokes its serial and certifies a
/// new one, and the running broadcaster carries the root's list from its
/// reload on. A hub switched on after hears the list, then datagrams the
/// leaked key signed, replayed from a capture: it refuses each one and
/// counts it, takes nothing from them, and takes the new key's content.
#[test]
fn after_revoke_and_renewal_the_revoked_keys_replayed_datagrams_are_refused() {
    use hubcast_protocol::wire::{decode_header, Kind};
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let (keys, leaked_dir, dir) = (t.join("keys"), t.join("leaked"), t.join("sample"));
    std::fs::create_dir_all(&leaked_dir).unwrap();
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(leaked_dir.join("leaked era.bin"), pattern(200_000, 26)).unwrap();
    let fresh = pattern(150_000, 27);
    std::fs::write(dir.join("new era.bin"), &fresh).unwrap();
    let fingerprint = keygen(&keys);
    let group = unique_group();

    // What the leaked key signed, captured off the air: one round of
    // another folder, manifests and tickets.
    let kinds =
        |d: &[Vec<u8>], k: Kind| d.iter().filter(|d| decode_header(d).is_ok_and(|h| h.kind == k)).count();
    let capturing = std::thread::spawn(move || {
        capture(group, |d| kinds(d, Kind::Manifest) >= 4 && kinds(d, Kind::Ticket) >= 3)
    });
    std::thread::sleep(Duration::from_millis(300));
    let mut once = Daemon::spawn(
        "broadcaster-once",
        &bin("broadcaster"),
        &seed_args(&keys, group, "4mbit", 1, &[&leaked_dir]),
        t,
    );
    let captured = capturing.join().expect("the capture");
    assert!(once.wait_exit(DEADLINE).is_some_and(|s| s.success()), "{}", once.log_text());

    let bc_http = free_port();
    let mut args = seed_args(&keys, group, "4mbit", 0, &[&dir]);
    args.extend(["--http".into(), bc_http.to_string()]);
    let bc = Daemon::spawn("broadcaster", &bin("broadcaster"), &args, t);
    signing_with(bc_http, 1);
    revoke(&keys, 1);
    assert_eq!(certify(&keys, 3600), 2);
    hangup(&bc);
    let s = signing_with(bc_http, 2);
    assert_eq!(s["certificate"]["revocations_version"], 1, "{}", s["certificate"]);

    let (_hub, https) = start_hubs(t, &fingerprint, group, 1, |_| vec![]);
    let hub_http = https[0];
    wait_for("the hub to hold the revocation list", DEADLINE, || {
        status(hub_http).filter(|s| s["trust"]["revocations_version"] == 1)
    });
    let before = u(&status(hub_http).expect("the hub answers")["trust"]["refused_revoked"]);
    replay(group, &captured);
    let refused = wait_for("the replay refused", DEADLINE, || {
        status(hub_http).filter(|s| u(&s["trust"]["refused_revoked"]) >= before + 4)
    });
    assert_eq!(refused["trust"]["revoked_serials"], serde_json::json!([1]));
    let done = wait_for("the new key's file", DEADLINE, || status(hub_http).filter(|s| all_complete(s, 1)));
    assert_eq!(std::fs::read(t.join("out-0/sample/new era.bin")).unwrap(), fresh);
    let names: Vec<&str> =
        done["objects"].as_array().unwrap().iter().filter_map(|o| o["name"].as_str()).collect();
    assert_eq!(names, ["sample/new era.bin"], "nothing taken from the replay");
    assert!(!t.join("out-0/leaked").exists());
    eprintln!("refused as revoked: {}, drops {}", done["trust"]["refused_revoked"], done["drops"]);
}

/// `broadcaster rotate-root`, then `certify` with the new root.
fn rotate_root(keys: &Path, old: &Path, new: &Path) {
    let (keys, old, new) = (keys.as_os_str(), old.as_os_str(), new.as_os_str());
    broadcaster(&[
        "rotate-root".as_ref(),
        "--root-dir".as_ref(),
        old,
        "--new-root-dir".as_ref(),
        new,
        "--keys".as_ref(),
        keys,
    ]);
    broadcaster(&["certify".as_ref(), "--root-dir".as_ref(), new, "--keys".as_ref(), keys]);
}

/// Two root rotations while the channel runs: a hub configured with the
/// first fingerprint follows both (the files sent under each root arrive
/// whole), and refuses a forged rotation (signed by the new root alone), a
/// skipped version and a rollback, each counted by name.
#[test]
fn a_hub_follows_two_root_rotations_and_refuses_forged_skipped_and_rolled_back_ones() {
    use hubcast_keys::{Fingerprint, RootKeys, RootRotation, SigningKey};
    use hubcast_protocol::wire::rotation_datagram;
    let (tmp, keys, dir, fingerprint) = channel("root one.bin", 120_000, 41);
    let t = tmp.path();
    let roots = [root_dir(&keys), t.join("root-2"), t.join("root-3")];
    let (group, bc_http) = (unique_group(), free_port());
    let (_hub, https) = start_hubs(t, &fingerprint, group, 1, |_| vec![]);
    let hub_http = https[0];
    wait_for("the hub up", DEADLINE, || status(hub_http));
    let mut args = seed_args(&keys, group, "8mbit", 0, &[&dir]);
    args.extend(["--http".into(), bc_http.to_string()]);
    let bc = Daemon::spawn("broadcaster", &bin("broadcaster"), &args, t);
    wait_for("the first root's file", DEADLINE, || status(hub_http).filter(|s| all_complete(s, 1)));
    let started = std::time::Instant::now();

    for (version, file) in [(2u64, "root two.bin"), (3, "root three.bin")] {
        let i = version as usize - 1;
        rotate_root(&keys, &roots[i - 1], &roots[i]);
        std::fs::write(dir.join(file), pattern(100_000, version)).unwrap();
        hangup(&bc);
        signing_with(bc_http, version);
        let s = wait_for(&format!("the hub at root version {version}"), DEADLINE, || {
            status(hub_http).filter(|s| s["trust"]["root_version"] == version && all_complete(s, i + 1))
        });
        eprintln!("root version {version}: at {:?}, drops {}", started.elapsed(), s["drops"]);
        assert_ne!(s["trust"]["root"], fingerprint.as_str(), "a new root is trusted");
        if version == 2 {
            // What a thief with the first root, or with a key of their own, sends.
            let tag = fingerprint.parse::<Fingerprint>().unwrap().channel_tag();
            let (r1, r2) = (RootKeys::open(&roots[0]).unwrap(), RootKeys::open(&roots[1]).unwrap());
            let thief = SigningKey::from_bytes(&[0x5a; 32]);
            let forged =
                RootRotation::sign_with(&thief, &thief, r2.key.verifying_key(), thief.verifying_key(), 3);
            let attacks = [
                (RootRotation::issue(&r1.key, &thief, 2), "rotation_rolled_back"),
                (RootRotation::issue(&r2.key, &thief, 4), "rotation_skipped"),
                (forged, "rotation_signature"),
            ];
            let before = s["drops"].clone();
            for (statement, reason) in &attacks {
                replay(group, &[rotation_datagram(statement, tag)]);
                wait_for(&format!("{reason} counted"), DEADLINE, || {
                    status(hub_http).filter(|s| u(&s["drops"][reason]) > u(&before[reason]))
                });
            }
            assert_eq!(status(hub_http).expect("the hub answers")["trust"]["root_version"], 2);
        }
    }
    assert_eq!(tree_digest(&t.join("out-0/sample")), tree_digest(&dir), "every file, under each root");
    let metrics = hubcast_clienthub::status_client::get(bc_http, "/api/status").expect("broadcaster status");
    assert!(metrics.contains(&fingerprint), "the broadcaster names the channel by its first root: {metrics}");
}

/// A hub that hears none of the channel's multicast learns the root's
/// statements from the tracker: its registration says which versions it
/// holds, and the answer carries the rotation and the revocation list the
/// new root signed (in that order: the list checks out only under the new
/// root).
#[test]
fn a_hub_that_hears_no_multicast_learns_the_roots_statements_from_the_tracker() {
    let (tmp, keys, dir, fingerprint) = channel("film.bin", 50_000, 3);
    let t = tmp.path();
    revoke(&keys, 1);
    rotate_root(&keys, &root_dir(&keys), &t.join("root-2"));
    let node_id = broadcaster(&["node-id".as_ref(), "--keys".as_ref(), keys.as_os_str()]);
    let addr = free_udp_port();
    let tracker = format!("{}@{addr}", node_id.trim());
    // The hub listens on a group of its own: nothing the channel multicasts
    // reaches it.
    let (_hub, https) =
        start_hubs(t, &fingerprint, unique_group(), 1, |_| vec!["--tracker".into(), tracker.clone()]);
    let mut args = seed_args(&keys, unique_group(), "8mbit", 0, &[&dir]);
    args.extend(["--tracker".into(), addr.to_string()]);
    let _bc = Daemon::spawn("broadcaster", &bin("broadcaster"), &args, t);
    let started = std::time::Instant::now();
    let s = wait_for("the hub to take the rotation and the list from the tracker", DEADLINE, || {
        status(https[0]).filter(|s| s["trust"]["root_version"] == 2 && s["trust"]["revocations_version"] == 2)
    });
    eprintln!(
        "after {:?}: trust {}, bytes {}, drops {}",
        started.elapsed(),
        s["trust"],
        s["bytes"],
        s["drops"]
    );
    assert_eq!(s["trust"]["revoked_serials"], serde_json::json!([1]));
    assert_ne!(s["trust"]["root"], fingerprint.as_str(), "the new root is trusted");
    assert_eq!(u(&s["bytes"]["multicast"]), 0, "nothing came by multicast: {}", s["bytes"]);
    assert_none(&s, &["untrusted_root"]);
    assert_none(&s, &STATEMENT_REFUSALS);
}

/// A bridge passes the root's statements on: a desert hub (no multicast, no
/// tracker) fed by a bridge follows a rotation and takes the revocation list
/// the new root signed, and the file signed by the new root's key arrives
/// whole.
#[test]
fn a_desert_hub_follows_a_rotation_and_a_revocation_through_its_bridge() {
    let (tmp, keys, dir, fingerprint) = channel("after the rotation.bin", 300_000, 8);
    let t = tmp.path();
    revoke(&keys, 1);
    rotate_root(&keys, &root_dir(&keys), &t.join("root-2"));
    let (island, desert) = (unique_group(), unique_group());
    let (b_http, quic, bd) = (free_port(), free_udp_port(), t.join("bridge"));
    let mut args = hub_args(&fingerprint, island, &bd.join("store"), &bd.join("out"), b_http);
    args.extend(["--bridge", "--peer-listen", &quic.to_string()].map(String::from));
    let _bridge = Daemon::spawn("bridge", &bin("clienthub"), &args, t);
    let id = wait_for("the bridge up", DEADLINE, || status(b_http))["node_id"].as_str().unwrap().to_owned();
    let _bc =
        Daemon::spawn("broadcaster", &bin("broadcaster"), &seed_args(&keys, island, "8mbit", 0, &[&dir]), t);
    // A bridge that does not hear the channel yet refuses a subscriber, who
    // asks again later: the desert hub starts once the bridge hears it.
    wait_for("the bridge to hear the channel", DEADLINE, || {
        status(b_http).filter(|s| s["bridge"]["live"] == true)
    });
    let (d_http, dd) = (free_port(), t.join("desert"));
    let mut dargs = hub_args(&fingerprint, desert, &dd.join("store"), &dd.join("out"), d_http);
    dargs.extend(["--no-multicast", "--bridge-peer", &format!("{id}@{quic}")].map(String::from));
    let _desert = Daemon::spawn("desert", &bin("clienthub"), &dargs, t);

    let s = wait_for("the desert hub at root 2 with the list and the file", DEADLINE, || {
        status(d_http).filter(|s| {
            s["trust"]["root_version"] == 2 && s["trust"]["revocations_version"] == 2 && all_complete(s, 1)
        })
    });
    eprintln!("desert hub: trust {}, bytes {}, feed {}", s["trust"], s["bytes"], s["feed"]);
    assert_eq!(s["trust"]["revoked_serials"], serde_json::json!([1]));
    assert!(u(&s["bytes"]["bridge"]) > 0 && u(&s["bytes"]["multicast"]) == 0, "{}", s["bytes"]);
    assert_eq!(tree_digest(&dd.join("out/sample")), tree_digest(&dir), "the desert hub's copy differs");
    // The feed's symbols over UDP may overtake the rotation on its stream:
    // those few are refused as `untrusted_root`, are no strike, and come again.
    eprintln!("untrusted_root before the rotation: {}", s["drops"]["untrusted_root"]);
    assert_eq!(s["feed"]["strikes"], 0, "{}", s["feed"]);
    let others: Vec<&str> = REFUSALS.into_iter().filter(|r| *r != "untrusted_root").collect();
    assert_none(&s, &others);
    assert_none(&s, &STATEMENT_REFUSALS);
}

/// A hub switched on after a rotation, given the channel's `rotations` file
/// (`--trust-chain`), trusts the newest root from its first second: a thief
/// holding the retired root cannot lead it off with a statement of their own
/// (a rollback to it), and the channel's file arrives. A file that does not
/// lead on from `--trust` stops the hub at start, naming the flag.
#[test]
fn a_hub_given_the_chain_starts_at_the_newest_root_and_a_leaked_old_root_cannot_lead_it() {
    use hubcast_keys::{Fingerprint, RootKeys, RootRotation, SigningKey};
    let (tmp, keys, dir, fingerprint) = channel("film.bin", 200_000, 12);
    let t = tmp.path();
    rotate_root(&keys, &root_dir(&keys), &t.join("root-2"));
    let chain = keys.join("rotations").display().to_string();
    let group = unique_group();
    let (_hub, https) =
        start_hubs(t, &fingerprint, group, 1, |_| vec!["--trust-chain".into(), chain.clone()]);
    let s = wait_for("the hub up", DEADLINE, || status(https[0]));
    assert_eq!(s["trust"]["root_version"], 2, "at root 2 before the channel said anything: {}", s["trust"]);

    // The first root leaked: its holder signs a rotation to a root of their own.
    let thief = SigningKey::from_bytes(&[0x66; 32]);
    let leaked = RootKeys::open(&root_dir(&keys)).unwrap();
    let tag = fingerprint.parse::<Fingerprint>().unwrap().channel_tag();
    replay(
        group,
        &[hubcast_protocol::wire::rotation_datagram(&RootRotation::issue(&leaked.key, &thief, 2), tag)],
    );
    wait_for("the thief's rotation refused", DEADLINE, || {
        status(https[0]).filter(|s| u(&s["drops"]["rotation_rolled_back"]) == 1)
    });
    let _bc =
        Daemon::spawn("broadcaster", &bin("broadcaster"), &seed_args(&keys, group, "8mbit", 0, &[&dir]), t);
    let s = wait_for("the channel's file", DEADLINE, || status(https[0]).filter(|s| all_complete(s, 1)));
    assert_eq!(tree_digest(&t.join("out-0/sample")), tree_digest(&dir));
    assert_eq!(s["trust"]["root_version"], 2);
    assert_eq!(s["trust"]["root"], RootKeys::open(&t.join("root-2")).unwrap().fingerprint().to_string());

    // Another channel's chain (or a damaged file): the hub refuses to start.
    let other = t.join("other-keys");
    let other_fp = keygen(&other);
    rotate_root(&other, &root_dir(&other), &t.join("other-root-2"));
    let mut args = hub_args(&fingerprint, unique_group(), &t.join("store-x"), &t.join("out-x"), free_port());
    args.extend(["--trust-chain".into(), other.join("rotations").display().to_string()]);
    let mut wrong = Daemon::spawn("wrong-chain", &bin("clienthub"), &args, t);
    let exit = wrong.wait_exit(DEADLINE).expect("a hub given another channel's chain stops");
    assert!(!exit.success());
    let log = wrong.log_text();
    assert!(log.contains("--trust-chain") && log.contains("does not lead on"), "{log}");
    assert_ne!(other_fp, fingerprint);
}
