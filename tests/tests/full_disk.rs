//! A full disk is a clean answer, not a crash, and the hub recovers when space
//! returns. Mounts a small tmpfs for the store, so it needs root (CI has it);
//! without root it says it was skipped.

use hubcast_tests::*;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const DEADLINE: Duration = Duration::from_secs(180);

struct Mount(std::path::PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn mount_tmpfs(at: &Path, size: &str, remount: bool) -> bool {
    let opts = if remount { format!("remount,size={size}") } else { format!("size={size}") };
    Command::new("mount")
        .args(["-t", "tmpfs", "-o", &opts, "tmpfs"])
        .arg(at)
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn a_hub_on_a_full_disk_keeps_running_says_so_and_completes_when_space_returns() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let mnt = t.join("small-disk");
    std::fs::create_dir_all(&mnt).unwrap();
    if !can_run((!mount_tmpfs(&mnt, "3m", false)).then_some("mounting a small tmpfs needs root")) {
        return;
    }
    let _mount = Mount(mnt.clone());
    let src = t.join("film.bin");
    std::fs::write(&src, pattern(8 << 20, 11)).unwrap();
    let fingerprint = keygen(&t.join("keys"));
    let group = unique_group();
    let http = free_port();
    let store = mnt.join("store");
    let _hub = Daemon::spawn(
        "hub",
        &bin("clienthub"),
        &hub_args(&fingerprint, group, &store, &t.join("out"), http),
        t,
    );
    wait_for("hub to answer", DEADLINE, || status(http));
    let _bc = Daemon::spawn(
        "broadcaster",
        &bin("broadcaster"),
        &seed_args(&t.join("keys"), group, "100mbit", 0, &[&src]),
        t,
    );

    let full = wait_for("the hub to report the full disk", DEADLINE, || {
        status(http).filter(|s| u(&s["store_errors"]) >= 1)
    });
    let message = full["last_store_error"].as_str().unwrap_or_default().to_owned();
    assert!(message.contains("full") && message.contains("free space"), "{message}");
    assert!(u(&full["chunks"]["stored"]) < 8, "{}", full["chunks"]);

    // Space returns: the hub collects the chunks it could not store and completes.
    assert!(mount_tmpfs(&mnt, "64m", true), "grow the tmpfs");
    wait_for("hub complete after space returned", DEADLINE, || status(http).filter(|s| all_complete(s, 1)));
    assert_eq!(std::fs::read(t.join("out/film.bin")).unwrap(), std::fs::read(&src).unwrap());
    let leftovers = std::fs::read_dir(store.join("tmp")).unwrap().count();
    assert_eq!(leftovers, 0, "half-written chunk files were left in the store");
}
