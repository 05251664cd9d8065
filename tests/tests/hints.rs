//! A new user's mistakes, each answered in the hub's log with what is wrong
//! and what to do, at the moment the hub can know it.

use hubcast_tests::*;
use std::time::Duration;

const DEADLINE: Duration = Duration::from_secs(60);

fn wait_for_log(hub: &Daemon, what: &str) -> String {
    wait_for(&format!("`{what}` in {}", hub.log.display()), DEADLINE, || {
        let log = hub.log_text();
        log.contains(what).then_some(log)
    })
}

/// Given the fingerprint of another channel, the hub says which channel it
/// hears and which it was told, as soon as a manifest comes: before the drop
/// report, which was the only word of it after 10 s.
#[test]
fn a_wrong_trust_is_told_with_both_fingerprints() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let ours = keygen(&t.join("keys"));
    let theirs = keygen(&t.join("other-keys"));
    std::fs::write(t.join("note.txt"), b"from another channel").unwrap();
    let group = unique_group();
    let http = free_port();
    let hub = Daemon::spawn(
        "hub",
        &bin("clienthub"),
        &hub_args(&ours, group, &t.join("store"), &t.join("out"), http),
        t,
    );
    wait_for("hub to answer", DEADLINE, || status(http));
    let _bc = Daemon::spawn(
        "broadcaster",
        &bin("broadcaster"),
        &seed_args(&t.join("other-keys"), group, "10Mbit", 0, &[&t.join("note.txt")]),
        t,
    );
    let log = wait_for_log(&hub, "but --trust names");
    let line = log.lines().find(|l| l.contains("but --trust names")).unwrap();
    assert!(line.contains(&theirs) && line.contains(&ours), "{line}");
    assert!(line.contains("broadcaster keygen"), "says where the right one is: {line}");
    assert!(!log.contains("dropped datagrams in the last"), "the hint comes before the drop report:\n{log}");
    assert!(!log.contains('\x1b'), "no colour codes in a log file:\n{log}");
}

/// With no broadcaster, the hub says so when it first can (it switches to
/// looking for a bridge after 4 s), and says nothing of bridges it has no
/// way to find.
#[test]
fn no_broadcaster_is_told_at_the_first_silence_without_bridge_noise() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let fingerprint = keygen(&t.join("keys"));
    let group = unique_group();
    let http = free_port();
    let mut args = hub_args(&fingerprint, group, &t.join("store"), &t.join("out"), http);
    args.extend(["--log-format", "json"].map(String::from));
    let hub = Daemon::spawn("hub", &bin("clienthub"), &args, t);
    let log = wait_for_log(&hub, "is the broadcaster running");
    let line = log.lines().find(|l| l.contains("is the broadcaster running")).unwrap();
    assert!(
        line.contains("for 4 s") && line.contains(&group.to_string()) && line.contains("--iface"),
        "{line}"
    );
    // Past 10 s of the hub's own time: the old "no bridge" warning came at
    // 8 s and the old silence warning at 10 s. Neither comes now, nor the
    // hint twice.
    wait_for("the hub's 11th second", DEADLINE, || status(http).filter(|s| u(&s["uptime_ms"]) >= 11_000));
    let log = hub.log_text();
    for noise in ["taking the channel's feed from a bridge", "no bridge to take the feed from"] {
        assert!(!log.contains(noise), "`{noise}` though no bridge can be found:\n{log}");
    }
    assert_eq!(log.matches("is the broadcaster running").count(), 1, "{log}");
    // --log-format json: every line one object, the words in its message.
    for line in log.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(v["fields"]["message"].is_string() && v["level"].is_string(), "{line}");
    }
}

/// An export folder the hub cannot write is refused at start, naming
/// --export, not found out at the first object as a store failure; a store
/// folder likewise, naming --store.
#[test]
fn an_unwritable_export_or_store_is_refused_at_start() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let fingerprint = keygen(&t.join("keys"));
    // A file where a folder must be: refused for root too (no chmod trick).
    std::fs::write(t.join("a-file"), b"").unwrap();
    let mut hub = Daemon::spawn(
        "hub",
        &bin("clienthub"),
        &hub_args(&fingerprint, unique_group(), &t.join("store"), &t.join("a-file/out"), free_port()),
        t,
    );
    let exit = hub.wait_exit(DEADLINE).expect("the hub exits");
    assert!(!exit.success());
    let log = hub.log_text();
    assert!(
        log.contains("--export")
            && log.contains("a-file/out")
            && log.contains("give a folder this user can write"),
        "{log}"
    );
    assert!(!log.contains("hub started"), "refused before it starts: {log}");

    // The same for the store.
    let mut hub = Daemon::spawn(
        "hub-store",
        &bin("clienthub"),
        &hub_args(&fingerprint, unique_group(), &t.join("a-file/store"), &t.join("out"), free_port()),
        t,
    );
    assert!(!hub.wait_exit(DEADLINE).expect("the hub exits").success());
    let log = hub.log_text();
    assert!(
        log.contains("a-file/store") && log.contains("give --store a folder this user can write"),
        "{log}"
    );
}
