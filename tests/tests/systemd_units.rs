//! The shipped systemd units work as shipped: each unit's ExecStart runs
//! under its own sandbox, emulated where systemd is not PID 1 (as here and
//! in CI). `ProtectSystem=strict` is a private mount namespace whose root is
//! read-only but for the unit's `StateDirectory=`; the unit's absolute paths
//! (/usr/local/bin, /etc/hubcast, /var/lib) are moved into the test's folder,
//! and nothing else of the command line changes. The broadcaster runs with
//! its origin service (it makes node.key), the hub with the example
//! settings' store and export, and the file must arrive.

use hubcast_tests::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const DEADLINE: Duration = Duration::from_secs(120);

/// A unit file's `Key=value` lines of the [Service] section.
fn service_settings(unit: &str) -> Vec<(String, String)> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/systemd").join(unit);
    let text = std::fs::read_to_string(&path).unwrap();
    text.lines()
        .skip_while(|l| l.trim() != "[Service]")
        .skip(1)
        .take_while(|l| !l.starts_with('['))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

fn setting<'a>(settings: &'a [(String, String)], key: &str) -> &'a str {
    settings.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str()).unwrap_or_else(|| panic!("no {key}="))
}

/// Run a unit's ExecStart as the unit would: its paths under `root`, in a
/// mount namespace where only the state directory can be written.
fn spawn_unit(name: &str, unit: &str, root: &Path, log_dir: &Path) -> Daemon {
    let s = service_settings(unit);
    assert_eq!(setting(&s, "ProtectSystem"), "strict", "{unit}: the test emulates strict");
    let state = root.join("var/lib").join(setting(&s, "StateDirectory"));
    std::fs::create_dir_all(&state).unwrap();
    let bin = format!("{}/", bin_dir().display());
    let command = setting(&s, "ExecStart")
        .replace("/usr/local/bin/", &bin)
        .replace("/etc/hubcast", &root.join("etc/hubcast").display().to_string())
        .replace("/var/lib/", &format!("{}/", root.join("var/lib").display()));
    let script = format!(
        "mount --bind '{state}' '{state}' && mount -o remount,bind,ro / && exec {command}",
        state = state.display()
    );
    let args = ["--mount", "--propagation", "private", "sh", "-c", &script].map(String::from);
    Daemon::spawn(name, Path::new("/usr/bin/unshare"), &args, log_dir)
}

/// Only root can make the namespace; CI runs as root and must not skip.
fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

#[test]
fn the_broadcaster_and_hub_units_run_under_their_sandbox_and_deliver() {
    if !can_run((!is_root()).then_some("a mount namespace needs root")) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let root = t.join("root");
    let etc = root.join("etc/hubcast");
    let fingerprint = keygen(&etc.join("keys"));
    std::fs::copy(etc.join("keys/root.pub"), etc.join("root.pub")).unwrap();
    let archive = root.join("srv/archive");
    std::fs::create_dir_all(&archive).unwrap();
    let film = pattern((1 << 20) + 7, 3);
    std::fs::write(archive.join("film one.bin"), &film).unwrap();
    let group = unique_group();
    let (http, tracker) = (free_port(), free_udp_port());
    let var = root.join("var/lib");

    // The example settings, with this test's group, ports and paths.
    let hub_toml = include_str!("../../deploy/config/hub.toml")
        .replace("/etc/hubcast", &etc.display().to_string())
        .replace("/var/lib", &var.display().to_string())
        .replace("239.255.0.1:5000", &group.to_string())
        .replace("192.0.2.20", "127.0.0.1")
        .replace("127.0.0.1:8080", &http.to_string());
    std::fs::write(etc.join("hub.toml"), hub_toml).unwrap();
    let seed_toml = include_str!("../../deploy/config/seed.toml")
        .replace("/etc/hubcast", &etc.display().to_string())
        .replace("/srv/hubcast/archive", &archive.display().to_string())
        .replace("239.255.0.1:5000", &group.to_string())
        .replace("192.0.2.10", "127.0.0.1")
        + &format!("rounds = 2\nlinger_secs = 1\ntracker = \"{tracker}\"\n");
    std::fs::write(etc.join("seed.toml"), seed_toml).unwrap();

    let _hub = spawn_unit("hub", "hubcast-hub.service", &root, t);
    wait_for("the hub unit to answer", DEADLINE, || status(http));
    let mut broadcaster = spawn_unit("broadcaster", "hubcast-broadcaster.service", &root, t);
    let exit = broadcaster.wait_exit(DEADLINE).expect("the broadcaster finishes its rounds");
    assert!(exit.success(), "broadcaster unit failed:\n{}", broadcaster.log_text());
    assert!(broadcaster.log_text().contains("origin service named in every manifest"));

    // node.key went to the state directory; the read-only keys are untouched.
    assert!(var.join("hubcast-broadcaster/node.key").exists());
    assert!(!etc.join("keys/node.key").exists());
    let s = wait_for("the hub complete", DEADLINE, || status(http).filter(|s| all_complete(s, 1)));
    assert_eq!(s["channel"], fingerprint.as_str());
    let exported: PathBuf = var.join("hubcast/files/archive/film one.bin");
    assert_eq!(std::fs::read(&exported).unwrap(), film);
    assert!(var.join("hubcast/store/index.redb").exists());
}
