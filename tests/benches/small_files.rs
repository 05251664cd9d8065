//! Many small files: a folder of real small files (copied at run time from
//! this machine's Python library and time-zone data, never committed) seeded
//! in one carousel round, no loss, to one hub over loopback multicast.
//!
//! `cargo bench -p hubcast-tests --bench small_files`
//! (env: HUBCAST_BENCH_FILES, default 3000; HUBCAST_BENCH_RATE, default 50mbit)
//!
//! Figures: objects the hub learned and completed in that one round, the
//! kernel's receive-buffer drops over the run (`RcvbufErrors` of
//! `/proc/net/snmp`), objects a second from the broadcaster's start to the
//! last completion, and the round's own length (what the rate allows) beside it.

use hubcast_tests::*;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Where the folder's files come from: small text and binary files every
/// Debian machine with Python has.
const SOURCES: &[&str] = &["/usr/lib/python3", "/usr/share/zoneinfo"];
/// Files above this are left out: the point is small objects.
const MAX_FILE: u64 = 64 << 10;

/// Regular files under `dir`, sorted, no symlinks followed.
fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let mut entries: Vec<_> = entries.filter_map(Result::ok).collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let Ok(kind) = e.file_type() else { continue };
        if kind.is_dir() {
            walk(&e.path(), out);
        } else if kind.is_file() && e.metadata().is_ok_and(|m| m.len() <= MAX_FILE) {
            out.push(e.path());
        }
    }
}

/// Copy `count` small files into `folder`, keeping their relative paths.
/// Returns (files, bytes).
fn make_folder(folder: &Path, count: usize) -> std::io::Result<(usize, u64)> {
    let mut files = Vec::new();
    for src in SOURCES {
        walk(Path::new(src), &mut files);
    }
    assert!(
        files.len() >= count,
        "only {} small files under {SOURCES:?}; lower HUBCAST_BENCH_FILES",
        files.len()
    );
    let mut bytes = 0;
    for path in files.iter().take(count) {
        // `walk` started from absolute SOURCES: every path is under `/`.
        let to = folder.join(path.strip_prefix("/").unwrap_or(path));
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent)?;
        }
        bytes += std::fs::copy(path, &to)?;
    }
    Ok((count, bytes))
}

fn count_complete(s: &serde_json::Value) -> (usize, usize) {
    let list = s["objects"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    (list.len(), list.iter().filter(|o| o["complete"] == true).count())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let count: usize = std::env::var("HUBCAST_BENCH_FILES").ok().and_then(|v| v.parse().ok()).unwrap_or(3000);
    let rate = std::env::var("HUBCAST_BENCH_RATE").unwrap_or_else(|_| "50mbit".into());
    let tmp = tempfile::tempdir()?;
    let t = tmp.path();
    let folder = t.join("archive");
    let (files, bytes) = make_folder(&folder, count)?;
    bin_dir();

    let group = unique_group();
    let http = free_port();
    let keys = t.join("keys");
    let fingerprint = keygen(&keys);
    let out = t.join("out");
    let _hub = Daemon::spawn(
        "hub",
        &bin("clienthub"),
        &hub_args(&fingerprint, group, &t.join("store"), &out, http),
        t,
    );
    wait_for("hub to answer", Duration::from_secs(30), || status(http));
    let drops_before = rcvbuf_errors();
    let start = Instant::now();
    let mut bc =
        Daemon::spawn("broadcaster", &bin("broadcaster"), &seed_args(&keys, group, &rate, 1, &[&folder]), t);
    bc.wait_exit(Duration::from_secs(3600))
        .ok_or("the broadcaster did not end its one round within an hour")?;
    let round = start.elapsed();
    // After the round nothing more comes: wait until the hub stops making
    // progress (10 s without a new completion), or has everything.
    let (mut last, mut last_change, mut done_at) = ((0, 0), Instant::now(), start.elapsed());
    loop {
        let now = status(http).map(|s| count_complete(&s)).unwrap_or(last);
        if now != last {
            if now.1 != last.1 {
                done_at = start.elapsed();
            }
            last = now;
            last_change = Instant::now();
        }
        if now.1 == files || last_change.elapsed() > Duration::from_secs(10) {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let drops = rcvbuf_errors() - drops_before;
    let (known, complete) = last;
    let exported = {
        let mut v = Vec::new();
        walk(&out, &mut v);
        v.len()
    };
    println!("small files: {files} files, {bytes} bytes, one round at {rate}, 0% loss, one hub");
    println!("  round (broadcaster start to exit)   {:>8.2} s", round.as_secs_f64());
    println!("  objects known / complete / exported {known:>5} / {complete} / {exported}");
    println!("  kernel receive-buffer drops         {drops:>8}");
    println!(
        "  last completion                     {:>8.2} s  ({:.0} objects/s; the round: {:.0} objects/s)",
        done_at.as_secs_f64(),
        complete as f64 / done_at.as_secs_f64().max(1e-9),
        files as f64 / round.as_secs_f64().max(1e-9)
    );
    Ok(())
}
