//! Keys for a channel that runs for years: the root stays offline, and the
//! signing key is renewed under it while the broadcaster runs.

use hubcast_tests::*;
use serde_json::Value;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const DEADLINE: Duration = Duration::from_secs(120);

/// `broadcaster certify` with a test-only validity in seconds; the serial it
/// printed.
fn certify(keys: &Path, seconds: u64) -> u64 {
    let out = Command::new(bin("broadcaster"))
        .args(["certify", "--seconds", &seconds.to_string(), "--root-dir"])
        .arg(root_dir(keys))
        .arg("--keys")
        .arg(keys)
        .output()
        .expect("precondition of the suite: the built broadcaster runs");
    assert!(out.status.success(), "certify failed: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
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

    let (group, hub_http, bc_http) = (unique_group(), free_port(), free_port());
    let _hub = Daemon::spawn(
        "hub",
        &bin("clienthub"),
        &hub_args(&fingerprint, group, &t.join("store"), &t.join("out"), hub_http),
        t,
    );
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
    assert_eq!(std::fs::read(t.join("out/sample/film.bin")).unwrap(), content);
    let drops = &done["drops"];
    for reason in REFUSALS {
        assert_eq!(drops[reason].as_u64().unwrap_or(0), 0, "{reason}: {drops}");
    }
    let metrics = hubcast_clienthub::status_client::get(bc_http, "/metrics").expect("broadcaster metrics");
    assert!(metrics.contains("hubcast_certificate_serial 4"), "{metrics}");
    assert!(metrics.contains("hubcast_certificate_renewals_total 2"), "{metrics}");
}
