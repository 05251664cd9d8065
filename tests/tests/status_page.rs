//! What a person watching a hub sees mid-transfer: the status page in a real
//! browser (Debian's headless Chromium) and `clienthub status --watch`, both
//! showing an object part-way, with its percent, rate and time left.

use hubcast_tests::*;
use std::process::{Command, Stdio};
use std::time::Duration;

const DEADLINE: Duration = Duration::from_secs(120);

#[test]
fn the_status_page_and_watch_show_an_object_part_way_with_rate_and_time_left() {
    let Some(browser) = chromium() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let dir = t.join("show");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("film <1>.bin"), pattern(16 << 20, 4)).unwrap();
    let fingerprint = keygen(&t.join("keys"));
    let group = unique_group();
    let http = free_port();
    let _hub = Daemon::spawn(
        "hub",
        &bin("clienthub"),
        &hub_args(&fingerprint, group, &t.join("store"), &t.join("out"), http),
        t,
    );
    wait_for("hub to answer", DEADLINE, || status(http));
    // Slow: a chunk every two seconds, 16 in all, so the page is read
    // mid-transfer even on a busy machine.
    let _bc = Daemon::spawn(
        "broadcaster",
        &bin("broadcaster"),
        &seed_args(&t.join("keys"), group, "4Mbit", 0, &[&dir]),
        t,
    );
    wait_for("two chunks stored", DEADLINE, || {
        status(http)
            .filter(|s| s["objects"][0]["chunks_stored"].as_u64().is_some_and(|n| (2..16).contains(&n)))
    });

    let url = format!("http://{http}/");
    let dom = dump_dom(browser, &url);
    assert!(dom.contains("http-equiv=\"refresh\""), "the page refreshes itself: {dom}");
    assert!(dom.contains("film &lt;1&gt;.bin"), "the name, escaped: {dom}");
    let row = dom.split("<tr class=\"object\">").nth(1).expect("an object row");
    let value: f64 = row.split("value=\"").nth(1).and_then(|v| v.split('"').next()).unwrap().parse().unwrap();
    assert!(value > 0.0 && value < 100.0, "part-way: {row}");
    assert!(row.contains("receiving"), "{row}");
    let rate = row.split("class=\"rate\">").nth(1).unwrap();
    assert!(!rate.starts_with("0 B/s"), "a rate: {row}");
    let eta = row.split("class=\"eta\">").nth(1).unwrap();
    assert!(!eta.starts_with('-'), "time left: {row}");
    assert!(dom.contains("href=\"/api/status\"") && dom.contains("href=\"/metrics\""), "links: {dom}");

    // --watch with a URL, printed to a file (not a terminal): the plain
    // status again and again, the object with its percent.
    let out = t.join("watch.txt");
    let mut watch = Command::new(bin("clienthub"))
        .args(["status", "--watch", "--interval", "0.2", "--http", &url])
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let text = wait_for("three redraws", DEADLINE, || {
        let text = std::fs::read_to_string(&out).unwrap_or_default();
        (text.matches("verified bytes:").count() >= 3).then_some(text)
    });
    let _ = watch.kill();
    let _ = watch.wait();
    let line = text.lines().find(|l| l.starts_with("show/film <1>.bin")).expect("the object's line");
    // Read mid-transfer (the object takes over 30 s): part-way, with its percent.
    assert!(line.contains("receiving") && line.contains('%'), "{line}");
}
