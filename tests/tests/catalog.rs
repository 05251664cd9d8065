//! The signed catalog, with real daemons: the broadcaster publishes every
//! seeded file with the metadata of `--catalog FILE`; a hub assembles it
//! and answers `/api/catalog` with search, tag and held filters and a
//! cursor that pages through all of it; a restarted broadcaster's catalog
//! replaces the old one (a higher version).

use hubcast_clienthub::status_client::get;
use hubcast_tests::*;
use serde_json::Value;
use std::net::SocketAddr;
use std::time::Duration;

const DEADLINE: Duration = Duration::from_secs(120);

fn catalog(http: SocketAddr, query: &str) -> Option<Value> {
    serde_json::from_str(&get(http, &format!("/api/catalog{query}")).ok()?).ok()
}

fn names(v: &Value) -> Vec<String> {
    v["items"].as_array().unwrap().iter().map(|i| i["name"].as_str().unwrap().to_owned()).collect()
}

#[test]
fn a_hub_lists_the_channels_catalog_searches_it_and_pages_through_it() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let dir = t.join("chan");
    std::fs::create_dir_all(dir.join("films")).unwrap();
    std::fs::write(dir.join("films/a film.mp4"), pattern(100_000, 1)).unwrap();
    std::fs::write(dir.join("films/b film.mkv"), pattern(50_000, 2)).unwrap();
    std::fs::write(dir.join("empty.txt"), b"").unwrap();
    for i in 0..5 {
        std::fs::write(dir.join(format!("news-{i}.ts")), pattern(1000 + i, 3)).unwrap();
    }
    let meta = t.join("catalog.toml");
    std::fs::write(
        &meta,
        "[[item]]\npath = \"chan/films/a film.mp4\"\ntitle = \"The Sea\"\ndescription = \"Waves, mostly.\"\n\
         tags = [\"film\", \"nature\"]\n\
         [[item]]\npath = \"chan/films/b film.mkv\"\ntitle = \"Mountains\"\ntags = [\"film\"]\n\
         content_type = \"video/webm\"\n\
         [[item]]\npath = \"chan/news-0.ts\"\ntitle = \"<img src=x onerror=alert(1)>\"\n",
    )
    .unwrap();
    let fingerprint = keygen(&t.join("keys"));
    let group = unique_group();
    let http = free_port();
    let _hub = Daemon::spawn(
        "hub",
        &bin("clienthub"),
        &hub_args(&fingerprint, group, &t.join("store"), &t.join("out"), http),
        t,
    );
    wait_for("the hub to answer", DEADLINE, || status(http));
    let mut seed = seed_args(&t.join("keys"), group, "20mbit", 0, &[&dir]);
    seed.extend(["--catalog".into(), meta.display().to_string()]);
    let mut bc = Daemon::spawn("broadcaster", &bin("broadcaster"), &seed, t);

    let all = wait_for("the catalog", DEADLINE, || catalog(http, "?limit=500").filter(|c| c["entries"] == 8));
    let first_version = all["version"].as_u64().unwrap();
    assert_eq!(names(&all).len(), 8);
    assert!(names(&all).windows(2).all(|w| w[0] < w[1]), "in name order: {:?}", names(&all));
    let sea = all["items"].as_array().unwrap().iter().find(|i| i["title"] == "The Sea").unwrap();
    assert_eq!(sea["name"], "chan/films/a film.mp4");
    assert_eq!(sea["description"], "Waves, mostly.");
    assert_eq!(sea["tags"], serde_json::json!(["film", "nature"]));
    assert_eq!(sea["content_type"], "video/mp4");
    assert_eq!(sea["size"], 100_000);
    assert_eq!(sea["id"], archive_id("chan/films/a film.mp4", &pattern(100_000, 1)).to_hex());
    let empty = all["items"].as_array().unwrap().iter().find(|i| i["name"] == "chan/empty.txt").unwrap();
    assert_eq!((empty["size"].as_u64(), empty["title"].as_str()), (Some(0), Some("empty.txt")));
    // The catalog's own objects are not the user's.
    let s = status(http).unwrap();
    assert!(s["objects"]
        .as_array()
        .unwrap()
        .iter()
        .all(|o| !o["name"].as_str().unwrap().starts_with(".hubcast")));
    assert!(get(http, &format!("/files/.hubcast/catalog/{first_version}/index")).is_err());

    // Search (words in any case, in the name, title or description), tags, held.
    assert_eq!(names(&catalog(http, "?q=waves").unwrap()), ["chan/films/a film.mp4"]);
    assert_eq!(names(&catalog(http, "?q=FILM%20mountains").unwrap()), ["chan/films/b film.mkv"]);
    assert_eq!(names(&catalog(http, "?tag=film").unwrap()).len(), 2);
    assert_eq!(names(&catalog(http, "?tag=nature&q=sea").unwrap()).len(), 1);
    assert!(names(&catalog(http, "?q=nothing-like-this").unwrap()).is_empty());
    wait_for("every file held", DEADLINE, || status(http).filter(|s| all_complete(s, 8)));
    assert_eq!(names(&catalog(http, "?held=true").unwrap()).len(), 8);

    // The gateway's headers come from the catalog: its type (not the one
    // the name suggests), its published time; the id as ETag, and a reader
    // that has it gets a 304.
    let b = all["items"].as_array().unwrap().iter().find(|i| i["title"] == "Mountains").unwrap();
    let head = response_head(http, "HEAD", "/files/chan/films/b%20film.mkv", std::iter::empty());
    let header = |name: &str| {
        head.lines()
            .find_map(|l| {
                l.split_once(": ").filter(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.to_owned())
            })
            .unwrap_or_else(|| panic!("no {name}: {head}"))
    };
    assert_eq!(header("content-type"), "video/webm", "{head}");
    let published = std::time::UNIX_EPOCH + Duration::from_secs(b["published"].as_u64().unwrap());
    assert_eq!(header("last-modified"), httpdate::fmt_http_date(published), "{head}");
    let etag = header("etag");
    assert_eq!(etag, format!("\"{}\"", b["id"].as_str().unwrap()));
    let again = format!("If-None-Match: {etag}");
    let head = response_head(http, "GET", "/files/chan/films/b%20film.mkv", std::iter::once(again.as_str()));
    assert!(head.starts_with("HTTP/1.1 304"), "{head}");
    assert!(names(&catalog(http, "?held=false").unwrap()).is_empty());

    // The library page in a real browser: its script renders the rows the
    // search finds, text escaped, held ones linked to /files/.
    if let Some(browser) = chromium() {
        let dom = dump_dom(browser, &format!("http://{http}/library?q=film"));
        let rows: Vec<&str> = dom.split("<tr class=\"entry\"").skip(1).collect();
        assert_eq!(rows.len(), 2, "two films: {dom}");
        assert!(rows[0].contains("The Sea") && rows[0].contains("Waves, mostly."), "{}", rows[0]);
        assert!(rows[0].contains("href=\"/files/chan/films/a%20film.mp4\""), "{}", rows[0]);
        assert!(rows[0].contains("<span>nature</span>") && rows[0].contains("97.7 KiB"), "{}", rows[0]);
        assert!(rows[1].contains("Mountains") && rows[1].contains(">held<"), "{}", rows[1]);
        assert!(dom.contains("catalog version") && dom.contains("8 entries"), "{dom}");
        // A title that is markup shows as text.
        let dom = dump_dom(browser, &format!("http://{http}/library?q=news-0"));
        assert!(dom.contains("&lt;img src=x onerror=alert(1)&gt;") && !dom.contains("<img"), "{dom}");
        let dom = dump_dom(browser, &format!("http://{http}/library?held=false"));
        assert!(!dom.contains("<tr class=\"entry\""), "everything is held: {dom}");
    }

    // Pages of three, by cursor: all of it, once each.
    let mut paged = Vec::new();
    let mut cursor = String::new();
    loop {
        let page = catalog(http, &format!("?limit=3{cursor}")).unwrap();
        paged.extend(names(&page));
        match page["next"].as_str() {
            Some(next) => cursor = format!("&cursor={}", hubcast_clienthub::get::percent_encode(next)),
            None => break,
        }
        assert!(paged.len() <= 8, "the cursor goes round: {paged:?}");
    }
    assert_eq!(paged, names(&all));

    // Hostile parameters get a clean answer.
    for bad in ["?limit=0", "?limit=501", "?limit=x", "?held=maybe"] {
        assert!(catalog(http, bad).is_none(), "{bad}");
        let raw = std::process::Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", &format!("http://{http}/api/catalog{bad}")])
            .output();
        if let Some(o) = raw.ok().filter(|o| o.status.success()) {
            assert_eq!(String::from_utf8_lossy(&o.stdout), "400", "{bad}");
        }
    }
    let long = format!("?q={}", "a".repeat(5000));
    assert!(catalog(http, &long).is_some(), "an over-long search is ignored, not an error");

    // A restarted broadcaster publishes a higher version, with a file more;
    // the hub takes it and drops the old catalog's objects.
    bc.kill();
    std::fs::write(dir.join("later.bin"), pattern(10, 9)).unwrap();
    let _bc = Daemon::spawn("broadcaster-again", &bin("broadcaster"), &seed, t);
    let again = wait_for("the new catalog", DEADLINE, || {
        catalog(http, "?limit=500")
            .filter(|c| c["version"].as_u64() > Some(first_version) && c["entries"] == 9)
    });
    assert!(names(&again).contains(&"chan/later.bin".to_owned()));
    let s =
        wait_for("the hub to show it", DEADLINE, || status(http).filter(|s| s["catalog"]["entries"] == 9));
    assert_eq!(s["catalog"]["refused"], 0);
}

/// A long-running broadcaster publishes what changes in its seeded folder
/// without a restart: on SIGHUP it scans again, and a new file is sent and
/// listed in a new catalog version, a removed one leaves the catalog, and an
/// unchanged one keeps its id (hubs keep what they hold).
#[test]
fn a_rescan_on_sighup_publishes_a_new_file_without_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let dir = t.join("chan");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("first.bin"), pattern(40_000, 1)).unwrap();
    std::fs::write(dir.join("gone.txt"), b"soon removed").unwrap();
    let fingerprint = keygen(&t.join("keys"));
    let group = unique_group();
    let (_hub, https) = start_hubs(t, &fingerprint, group, 1, |_| vec![]);
    let http = https[0];
    let mut seed = seed_args(&t.join("keys"), group, "20mbit", 0, &[&dir]);
    seed.extend(["--rescan-every".into(), "0".into()]);
    let bc = Daemon::spawn("broadcaster", &bin("broadcaster"), &seed, t);
    let before = wait_for("the first catalog", DEADLINE, || catalog(http, "").filter(|c| c["entries"] == 2));
    wait_for("both files held", DEADLINE, || status(http).filter(|s| all_complete(s, 2)));

    std::fs::write(dir.join("new file.bin"), pattern(70_000, 2)).unwrap();
    std::fs::remove_file(dir.join("gone.txt")).unwrap();
    let pid = bc.pid().expect("the broadcaster runs").to_string();
    assert!(std::process::Command::new("kill").args(["-HUP", &pid]).status().unwrap().success());

    let after = wait_for("the rescanned catalog", DEADLINE, || {
        catalog(http, "").filter(|c| c["version"].as_u64() > before["version"].as_u64())
    });
    assert_eq!(names(&after), ["chan/first.bin", "chan/new file.bin"], "{after}");
    let id = |c: &Value, n: &str| {
        c["items"].as_array().unwrap().iter().find(|i| i["name"] == n).unwrap()["id"].clone()
    };
    assert_eq!(id(&after, "chan/first.bin"), id(&before, "chan/first.bin"), "an unchanged file keeps its id");
    wait_for("the new file held", DEADLINE, || {
        std::fs::read(t.join("out-0/chan/new file.bin")).ok().filter(|b| *b == pattern(70_000, 2))
    });
    assert!(std::fs::read(t.join("out-0/chan/first.bin")).unwrap() == pattern(40_000, 1));
}
