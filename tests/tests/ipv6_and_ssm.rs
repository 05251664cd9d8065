//! The archive end to end over the two multicast modes the socket tests
//! cover alone: an IPv6 group (in a throwaway network namespace, since this
//! host's loopback has no IPv6 multicast route) and source-specific
//! multicast (`--source`) on loopback. Real daemons; the copies are checked
//! against the source.

use hubcast_tests::*;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const DEADLINE: Duration = Duration::from_secs(120);

/// A folder with the awkward cases: an empty file, a name with a space, and
/// a file of several chunks.
fn sample(t: &Path) -> std::path::PathBuf {
    let dir = t.join("sample");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("empty"), b"").unwrap();
    std::fs::write(dir.join("notes with space.txt"), pattern(5000, 1)).unwrap();
    std::fs::write(dir.join("clip.bin"), pattern(3 << 20, 2)).unwrap();
    dir
}

fn ip(args: &[&str]) -> bool {
    Command::new("ip").args(args).stdout(std::process::Stdio::null()).status().is_ok_and(|s| s.success())
}

struct Namespace(String);

impl Drop for Namespace {
    fn drop(&mut self) {
        ip(&["netns", "del", &self.0]);
    }
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .map(|s| s.lines().any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0")))
        .unwrap_or(false)
}

#[test]
fn a_folder_arrives_over_an_ipv6_group() {
    let missing = (!is_root() || !ip(&["-V"])).then_some("an IPv6 network namespace needs root and iproute2");
    if !can_run(missing) {
        return;
    }
    // Built out here, so the run inside finds them.
    bin_dir();
    let ns = Namespace(format!("hcv6e{}", std::process::id()));
    let n = ns.0.as_str();
    assert!(ip(&["netns", "add", n]), "ip netns add");
    for args in [
        vec!["-n", n, "link", "set", "lo", "up"],
        vec!["-n", n, "link", "add", "v0", "type", "veth", "peer", "name", "v1"],
        vec!["-n", n, "link", "set", "v0", "up"],
        vec!["-n", n, "link", "set", "v1", "up"],
        vec!["-n", n, "-6", "addr", "add", "fd00:4843::1/64", "dev", "v0", "nodad"],
    ] {
        assert!(ip(&args), "ip {args:?}");
    }
    let exe = std::env::current_exe().expect("test binary");
    let status = Command::new("ip")
        .args(["netns", "exec", n])
        .arg(exe)
        .args(["--exact", "inside_namespace_ipv6_archive", "--ignored", "--nocapture"])
        .status()
        .expect("run the test inside the namespace");
    assert!(status.success(), "the IPv6 archive run failed inside the namespace (its output is above)");
}

#[test]
#[ignore = "run inside a namespace by a_folder_arrives_over_an_ipv6_group"]
fn inside_namespace_ipv6_archive() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let dir = sample(t);
    let fingerprint = keygen(&t.join("keys"));
    let group = format!("[ff15::4843:2]:{}", unique_group().port()).parse().unwrap();
    let http = free_port();
    let mut args = hub_args(&fingerprint, group, &t.join("store"), &t.join("out"), http);
    args.extend(["--iface", "v0"].map(String::from));
    let _hub = Daemon::spawn("hub", &bin("clienthub"), &args, t);
    wait_for("the hub up", DEADLINE, || status(http));
    let mut seed = seed_args(&t.join("keys"), group, "50Mbit", 0, &[&dir]);
    seed.extend(["--iface", "v0"].map(String::from));
    let _bc = Daemon::spawn("broadcaster", &bin("broadcaster"), &seed, t);
    let done = wait_for("the hub complete", DEADLINE, || status(http).filter(|s| all_complete(s, 3)));
    assert_eq!(tree_digest(&t.join("out/sample")), tree_digest(&dir), "the copies differ");
    assert!(u(&done["bytes"]["multicast"]) >= 3 << 20, "{}", done["bytes"]);
    eprintln!("over [ff15::4843:2] on v0: {}", done["bytes"]);
}

/// SSM: a hub told the sender's address (`--source 127.0.0.1`) gets the
/// folder from a 232/8 group; one told another sender hears nothing of it.
#[test]
fn a_folder_arrives_from_the_named_source_and_not_to_a_hub_that_names_another() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let dir = sample(t);
    let fingerprint = keygen(&t.join("keys"));
    let mut group = unique_group();
    if let std::net::SocketAddr::V4(g) = &mut group {
        let o = g.ip().octets();
        g.set_ip([232, o[1], o[2], o[3]].into());
    }
    let (ours, other) = (free_port(), free_port());
    let hub = |name: &str, http, source: &str| {
        let mut args = hub_args(&fingerprint, group, &t.join(name), &t.join(format!("{name}-out")), http);
        args.extend(["--source", source].map(String::from));
        Daemon::spawn(name, &bin("clienthub"), &args, t)
    };
    let _ours = hub("ours", ours, "127.0.0.1");
    let _other = hub("other", other, "127.0.0.2");
    wait_for("the hubs up", DEADLINE, || status(ours).and(status(other)));
    let seed = seed_args(&t.join("keys"), group, "50Mbit", 0, &[&dir]);
    let _bc = Daemon::spawn("broadcaster", &bin("broadcaster"), &seed, t);
    let done = wait_for("the hub complete", DEADLINE, || status(ours).filter(|s| all_complete(s, 3)));
    assert_eq!(tree_digest(&t.join("ours-out/sample")), tree_digest(&dir), "the copies differ");
    assert!(u(&done["bytes"]["multicast"]) >= 3 << 20, "{}", done["bytes"]);
    // The other hub had the whole transfer to hear it, and heard nothing.
    let deaf = status(other).expect("the other hub's status");
    assert_eq!(deaf["objects"].as_array().map(Vec::len), Some(0), "{deaf}");
    assert_eq!(u(&deaf["bytes"]["multicast"]), 0, "{}", deaf["bytes"]);
    eprintln!("SSM from 127.0.0.1 on {group}: {}", done["bytes"]);
}
