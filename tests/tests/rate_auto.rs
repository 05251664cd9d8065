//! `--rate auto` end to end: a broadcaster seeding with the origin service
//! and no `--rate` (auto is then the default), and a
//! hub behind a narrow path (the testing aid `--simulate-narrow`). The hub's
//! loss rises as slow start doubles the rate past the path's width; it says
//! so in its report, slow start ends, the rate falls back to 85% of the
//! lowest rate of the last rounds (not near `--rate-max`), and the hub
//! completes with the source's bytes.

use hubcast_tests::*;
use std::time::Duration;

const DEADLINE: Duration = Duration::from_secs(120);
const NARROW_MBIT: u64 = 100;

#[test]
fn a_hub_behind_a_narrow_path_ends_slow_start_and_the_rate_falls_back() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let dir = t.join("sample");
    std::fs::create_dir_all(&dir).unwrap();
    let film = pattern(24 << 20, 9);
    std::fs::write(dir.join("film.bin"), &film).unwrap();
    let fingerprint = keygen(&t.join("keys"));
    let group = unique_group();
    let http = free_port();
    let mut args = hub_args(&fingerprint, group, &t.join("store"), &t.join("out"), http);
    args.extend(["--simulate-narrow".into(), format!("{NARROW_MBIT}Mbit")]);
    let _hub = Daemon::spawn("hub", &bin("clienthub"), &args, t);
    wait_for("the hub to answer", DEADLINE, || status(http));

    let bc_http = free_port();
    let mut seed = seed_args_with_origin(&t.join("keys"), group, "auto", 0, &[&dir]);
    // No --rate: auto is the default where the origin service hears the hubs.
    let at = seed.iter().position(|a| a == "--rate").unwrap();
    seed.drain(at..at + 2);
    seed.extend(["--rate-max".into(), "800Mbit".into(), "--http".into(), bc_http.to_string()]);
    let _bc = Daemon::spawn("broadcaster", &bin("broadcaster"), &seed, t);

    // Slow start ends on the hub's word: the rate goes back to the lowest of
    // the last rounds less 15% (at most the start's 200 Mbit/s less 15%, here
    // near the path's width), not on to --rate-max.
    let ended = wait_for("slow start to end", DEADLINE, || {
        status(bc_http).filter(|s| s["rate"]["slow_start"] == false && u(&s["rate"]["rounds_congested"]) >= 1)
    });
    let r = &ended["rate"];
    assert_eq!(r["auto"], true, "{r}");
    let start = 200_000_000; // broadcaster::config::AUTO_START
    assert!(u(&r["bits_per_sec"]) <= start * 85 / 100, "fell back: {r}");
    assert!(u(&r["bits_per_sec"]) <= 2 * NARROW_MBIT * 1_000_000, "near the width: {r}");
    assert!(u(&r["max_bits_per_sec"]) == 800_000_000, "{r}");

    let done = wait_for("the hub to complete", DEADLINE, || status(http).filter(|s| all_complete(s, 1)));
    assert_eq!(std::fs::read(t.join("out/sample/film.bin")).unwrap(), film);
    assert!(u(&done["datagrams"]["simulated_loss"]) > 0, "the path was narrow: {}", done["datagrams"]);
    // The hub shows the channel's rate from the broadcaster's echo.
    let shown = wait_for("the hub to show the rate", DEADLINE, || {
        status(http).and_then(|s| s["repair"]["channel_rate"].as_u64())
    });
    assert!(shown > 0 && shown <= 800_000_000, "{shown}");
}
