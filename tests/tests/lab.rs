//! The network lab (deploy/lab/lab), end to end, as root: network namespaces,
//! veth pairs, Linux bridges and nftables dropping 5% of every host's UDP.
//! The lab's own check proves its shape (island A hears the origin's multicast;
//! island B and the desert do not; everyone reaches the origin by unicast), then
//! a broadcaster on the origin host seeds a file, and island A's three hubs,
//! each on its own host, complete it with verified, identical copies.
//!
//! Without root or network namespaces (a developer's laptop) the test is
//! skipped with a message; CI here runs as root and runs it.

use hubcast_tests::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const DEADLINE: Duration = Duration::from_secs(180);
const HTTP: &str = "127.0.0.1:18300";

fn lab_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/lab/lab")
}

/// The lab under a prefix of its own, torn down when dropped (after the
/// daemons in it, which are dropped first).
struct Lab {
    prefix: String,
}

impl Lab {
    fn command(&self) -> Command {
        let mut c = Command::new(lab_script());
        c.env("LAB_PREFIX", &self.prefix);
        c
    }

    fn run(&self, args: &[&str]) -> std::process::Output {
        self.command().args(args).output().expect("run deploy/lab/lab")
    }

    /// A daemon on `host`, killed when dropped.
    fn spawn(&self, host: &str, name: &str, program: &Path, args: &[String], logs: &Path) -> Daemon {
        // env, the script and `ip netns exec` each exec the next: the daemon
        // keeps the pid that is killed.
        let mut all = vec![format!("LAB_PREFIX={}", self.prefix), lab_script().display().to_string()];
        all.extend(["exec".to_string(), host.to_string(), program.display().to_string()]);
        all.extend_from_slice(args);
        Daemon::spawn(name, Path::new("/usr/bin/env"), &all, logs)
    }

    fn status(&self, host: &str) -> Option<Value> {
        let bin = bin("clienthub").display().to_string();
        let out = self.run(&["exec", host, &bin, "status", "--json", "--http", HTTP]);
        out.status.success().then(|| serde_json::from_slice(&out.stdout).ok()).flatten()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = self.run(&["down"]);
    }
}

/// Why the lab cannot run here, if it cannot. Where it must run (CI sets
/// HUBCAST_LAB_REQUIRED=1), that is a failure, not a skip.
fn cannot_run() -> Option<String> {
    let why = why_not()?;
    assert!(
        std::env::var_os("HUBCAST_LAB_REQUIRED").is_none(),
        "HUBCAST_LAB_REQUIRED is set, and the network lab cannot run: {why}"
    );
    Some(why)
}

fn why_not() -> Option<String> {
    let root = Command::new("id").arg("-u").output().ok().is_some_and(|o| o.stdout == b"0\n");
    if !root {
        return Some("not root".into());
    }
    for tool in ["ip", "nft", "python3"] {
        if Command::new("sh").args(["-c", &format!("command -v {tool}")]).output().ok()?.stdout.is_empty() {
            return Some(format!("{tool} is not installed"));
        }
    }
    // Tests run in parallel: each probe has a name of its own.
    static PROBES: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = PROBES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let probe = format!("hcprobe{}x{n}", std::process::id() % 100_000);
    let made = Command::new("ip").args(["netns", "add", &probe]).status().ok().is_some_and(|s| s.success());
    let _ = Command::new("ip").args(["netns", "del", &probe]).status();
    (!made).then(|| "cannot make network namespaces".into())
}

#[test]
fn island_a_hubs_complete_over_real_links_with_5_percent_loss() {
    if let Some(why) = cannot_run() {
        eprintln!(
            "SKIPPED: the network lab needs root, network namespaces, iproute2, nftables and python3 ({why})"
        );
        return;
    }
    let lab = Lab { prefix: format!("hl{}", std::process::id() % 10_000) };
    let up = lab.run(&["up", "--loss", "0.05"]);
    assert!(up.status.success(), "lab up: {}", String::from_utf8_lossy(&up.stderr));
    let check = lab.run(&["check"]);
    let shown = String::from_utf8_lossy(&check.stdout).into_owned();
    eprintln!("{shown}");
    assert!(check.status.success(), "lab shape: {shown}{}", String::from_utf8_lossy(&check.stderr));

    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let dir = t.join("sample");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("film-8MiB.bin"), pattern(8 << 20, 13)).unwrap();
    let fingerprint = keygen(&t.join("keys"));
    let group = unique_group();
    let hubs: Vec<(&str, &str)> = vec![("a1", "10.88.1.11"), ("a2", "10.88.1.12"), ("a3", "10.88.1.13")];
    let _daemons: Vec<Daemon> = hubs
        .iter()
        .map(|(host, addr)| {
            let mut args = hub_args(
                &fingerprint,
                group,
                &t.join(format!("{host}/store")),
                &t.join(format!("{host}/out")),
                HTTP.parse().unwrap(),
            );
            args.extend(["--iface".into(), (*addr).into()]);
            lab.spawn(host, &format!("hub-{host}"), &bin("clienthub"), &args, t)
        })
        .collect();
    for (host, _) in &hubs {
        wait_for("hubs up in the lab", DEADLINE, || lab.status(host));
    }
    let mut seed = seed_args(&t.join("keys"), group, "100mbit", 2, &[&dir]);
    seed.extend(
        ["--iface", "10.88.1.10", "--tracker", "10.88.1.10:7100", "--linger", "600"].map(String::from),
    );
    let _bc = lab.spawn("origin", "broadcaster", &bin("broadcaster"), &seed, t);

    let source = tree_digest(&dir);
    for (host, _) in &hubs {
        let s = wait_for("island A's hubs complete", DEADLINE, || {
            lab.status(host).filter(|s| all_complete(s, 1))
        });
        eprintln!("{host}: bytes {}, datagrams {}", s["bytes"], s["datagrams"]);
        assert_eq!(tree_digest(&t.join(format!("{host}/out/sample"))), source, "{host}'s copy differs");
        assert!(u(&s["bytes"]["multicast"]) > 0, "{host} heard the multicast over the lab's bridge");
        assert_eq!(u(&s["drops"]["digest_mismatch"]), 0);
        assert_eq!(s["tracker"]["from"], "manifest", "{host} learned the tracker from the manifests");
    }
}

/// One run of `deploy/lab/scenario archive` (32 MiB, 5% loss on every host) on
/// the binaries under test, under a lab prefix of its own; its JSON figures.
fn scenario(extra: &[&str]) -> Value {
    // One lab at a time: two would share this machine's two cores.
    static ONE_AT_A_TIME: std::sync::Mutex<u32> = std::sync::Mutex::new(0);
    let mut runs = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    *runs += 1;
    let tmp = tempfile::tempdir().unwrap();
    let json = tmp.path().join("figures.json");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/lab/scenario");
    let out = Command::new(script)
        .args(["archive", "--size", "32M", "--loss", "0.05", "--rate", "50mbit", "--fec", "0.02"])
        .args(extra)
        .arg("--bin-dir")
        .arg(bin_dir())
        .arg("--json")
        .arg(&json)
        .env("LAB_PREFIX", format!("hs{}x{}", std::process::id() % 10_000, *runs))
        .env("HUBCAST_LAB_DIR", tmp.path().join("work"))
        .output()
        .expect("run deploy/lab/scenario");
    let table = String::from_utf8_lossy(&out.stdout);
    eprintln!("{table}{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the scenario failed: every hub must complete with a verified copy");
    serde_json::from_slice(&std::fs::read(&json).expect("the scenario's figures")).unwrap()
}

/// Every hub of every part of the lab ends with the verified file: island A
/// from the multicast, island B through a bridge and b1's relay, the desert
/// through bridges. The origin sends less than 1.5 x the file, however many
/// hubs. A bridge killed mid-transfer: its desert hubs complete through another.
#[test]
fn every_part_of_the_lab_completes_and_a_killed_bridges_deserts_move_on() {
    if let Some(why) = cannot_run() {
        eprintln!(
            "SKIPPED: the network lab needs root, network namespaces, iproute2, nftables and python3 ({why})"
        );
        return;
    }
    let mut args = vec!["--kill-bridge"];
    let uftp =
        Command::new("sh").args(["-c", "command -v uftp"]).output().is_ok_and(|o| !o.stdout.is_empty());
    // UFTP is the baseline the lab compares with: CI must run it.
    if !can_run((!uftp).then_some("uftp is missing: apt-get install uftp")) {
        args.push("--no-uftp");
    }
    let f = scenario(&args);
    let size = f["size"].as_u64().unwrap();
    let hubs = f["hubs"].as_object().unwrap();
    let killed = &f["killed"];
    let victim = killed["bridge"].as_str().expect("a bridge was killed mid-transfer");
    for (host, role) in f["roles"].as_object().unwrap() {
        if host == victim {
            continue;
        }
        let h = &hubs[host];
        assert_eq!(h["verified"], true, "{host} ({role}): {h}");
        let bytes = &h["bytes"];
        match role.as_str().unwrap() {
            "desert" => assert!(u(&bytes["bridge"]) > 0, "{host} is fed by bridges: {bytes}"),
            "island-B" if host == "b2" => assert!(u(&bytes["multicast"]) > 0, "b2 hears b1's relay: {bytes}"),
            _ => {}
        }
    }
    // The origin sends one round (1.10 x the file at FEC 0.02) and repairs
    // once for every hub on its island. How much repair depends on this
    // machine's load: none on a quiet one (1.138 x in all, peers fill every
    // gap), 0.18 x in a CI run whose hubs took 17 s instead of 10 (starved
    // hubs evict chunks under repair and ask the origin for them whole; issue
    // 22). The bound is what must hold however slow: less than half a second
    // round, never a repair per hub or a NAK storm.
    let origin = f["origin_tx"].as_u64().unwrap();
    let ratio = origin as f64 / size as f64;
    eprintln!("the origin sent {origin} bytes, {ratio:.3} x the file");
    assert!(ratio <= 1.5, "the origin sent {origin} bytes, {ratio:.3} x the file");
    if uftp {
        // The baseline ran: UFTP delivered to island A and sent at least the file.
        let rows = f["uftp"].as_object().expect("UFTP's rows");
        assert!(rows.values().any(|r| r["verified"] == true), "UFTP delivered nowhere: {}", f["uftp"]);
        assert!(u(&f["uftp_tx"]) >= size, "UFTP sent {} bytes", f["uftp_tx"]);
        eprintln!(
            "UFTP beside hubcast: {} (sent {} bytes; hubcast's origin {origin})",
            f["uftp"], f["uftp_tx"]
        );
    }
    let deserts = killed["deserts"].as_array().unwrap();
    assert!(!deserts.is_empty());
    for d in deserts {
        let d = d.as_str().unwrap();
        let via = killed["completed_via"][d].as_str();
        assert!(via.is_some_and(|b| b != victim), "{d} completed through {via:?}, not the killed {victim}");
    }
}

/// A hub whose multicast stops (all multicast it receives dropped for 8 s)
/// takes the feed from a bridge, completes, and returns to the multicast once
/// it is back. (How soon it moved is printed, not asserted: no timed assertions.)
#[test]
fn a_hub_that_loses_multicast_moves_to_a_bridge_and_back() {
    if let Some(why) = cannot_run() {
        eprintln!(
            "SKIPPED: the network lab needs root, network namespaces, iproute2, nftables and python3 ({why})"
        );
        return;
    }
    let f = scenario(&["--cut-multicast", "a3", "--no-uftp"]);
    let cut = &f["cut"];
    let on_bridge = cut["on_bridge_after"].as_f64().expect("a3 moved to a bridge");
    eprintln!("a3 was on a bridge {on_bridge:.2} s after its multicast stopped");
    assert!(cut["back_after"].as_f64().is_some(), "a3 returned to the multicast: {cut}");
    let a3 = &f["hubs"]["a3"];
    assert_eq!(a3["verified"], true, "{a3}");
    assert!(u(&a3["bytes"]["bridge"]) > 0, "a3 took part of it from a bridge: {}", a3["bytes"]);
}
