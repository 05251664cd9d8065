//! On-demand objects, with real daemons: `broadcaster seed --on-demand`
//! announces a file (its catalog entry and its manifest) and sends nothing
//! of it on the carousel. Five hubs ask for it at once; the origin gathers
//! their asks and multicasts it once for all of them: origin bytes for the
//! five ≤ 1.2 × the object, and all five hold it bit-identical. A sixth hub,
//! which did not ask, hears that multicast and keeps none of it.

use hubcast_tests::*;
use std::time::Duration;

const DEADLINE: Duration = Duration::from_secs(120);
/// 24 chunks of 64 KiB and a short last one.
const FILM: usize = (24 << 16) + 1000;
const ASKERS: usize = 5;

fn film(s: &serde_json::Value) -> Option<&serde_json::Value> {
    s["objects"].as_array()?.iter().find(|o| o["name"] == "vod/film one.mkv")
}

#[test]
fn five_hubs_ask_for_an_on_demand_film_and_the_origin_sends_it_once() {
    let start = std::time::Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let (pushed, vod) = (t.join("news"), t.join("vod"));
    std::fs::create_dir_all(&pushed).unwrap();
    std::fs::create_dir_all(&vod).unwrap();
    std::fs::write(pushed.join("today.txt"), pattern(10_000, 1)).unwrap();
    let source = pattern(FILM, 2);
    std::fs::write(vod.join("film one.mkv"), &source).unwrap();
    let fingerprint = keygen(&t.join("keys"));
    let group = unique_group();
    let (_hubs, https) = start_hubs(t, &fingerprint, group, ASKERS + 1, |_| vec![]);
    wait_for_peers(&https, ASKERS, DEADLINE);

    eprintln!("hubs found each other after {:.1} s", start.elapsed().as_secs_f64());
    let bc_http = free_port();
    let mut seed = seed_args_with_origin(&t.join("keys"), group, "20mbit", 2, &[&pushed]);
    seed.extend(["--chunk-size", "64KiB", "--on-demand"].map(String::from));
    seed.push(vod.display().to_string());
    seed.extend(["--http".into(), bc_http.to_string()]);
    let _bc = Daemon::spawn("broadcaster", &bin("broadcaster"), &seed, t);

    // Announced: every hub knows the film, holds none of it, and has the
    // pushed file; the catalog marks the film on demand.
    for http in &https {
        wait_for("the film announced, the news held", DEADLINE, || {
            status(*http).filter(|s| {
                let news = s["objects"].as_array().is_some_and(|l| {
                    l.iter().any(|o| o["name"] == "news/today.txt" && o["complete"] == true)
                });
                news && film(s).is_some_and(|f| f["on_demand"] == true)
            })
        });
    }
    let carousel_done = wait_for("the carousel's two rounds", DEADLINE, || {
        status(bc_http).filter(|s| s["carousel"]["done"] == true)
    });
    let body = hubcast_clienthub::status_client::get(https[0], "/api/catalog?q=film").unwrap();
    let catalog: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(catalog["items"][0]["name"], "vod/film one.mkv", "{catalog}");
    assert_eq!(catalog["items"][0]["on_demand"], true, "{catalog}");
    for http in &https {
        let s = status(*http).unwrap();
        let f = film(&s).unwrap();
        assert_eq!(u(&f["chunks_stored"]), 0, "taken before it was asked: {f}");
    }
    let carousel_bytes = u(&carousel_done["carousel"]["bytes"]);
    assert!(
        carousel_bytes < FILM as u64,
        "the carousel sent {carousel_bytes} bytes: the film went out unasked"
    );

    eprintln!("announced after {:.1} s", start.elapsed().as_secs_f64());
    // Five ask at once (each with its own hub's token).
    let askers: Vec<_> = (0..ASKERS)
        .map(|i| {
            let (http, auth) = (https[i], bearer(&t.join(format!("store-{i}"))));
            std::thread::spawn(move || request(http, "POST", "/api/fetch/vod/film%20one.mkv", Some(&auth)))
        })
        .collect();
    for a in askers {
        let line = a.join().unwrap();
        assert!(line.contains(" 202 "), "the fetch was not taken: {line}");
    }
    for (i, http) in https[..ASKERS].iter().enumerate() {
        wait_for("the film held", DEADLINE, || {
            status(*http).filter(|s| film(s).is_some_and(|f| f["complete"] == true))
        });
        let copy = std::fs::read(t.join(format!("out-{i}/vod/film one.mkv"))).unwrap();
        assert!(copy == source, "hub {i}'s copy of the film differs from the source");
    }
    eprintln!("fetched after {:.1} s", start.elapsed().as_secs_f64());
    let bc = status(bc_http).unwrap();
    let o = &bc["origin_repair"];
    let ratio = u(&o["bytes"]) as f64 / FILM as f64;
    eprintln!("origin repair for {ASKERS} hubs: {o}; {ratio:.3} × the film");
    assert!(ratio <= 1.2, "the origin sent {ratio:.3} × the film for {ASKERS} asks: {o}");
    assert!(u(&o["resends"]) > 0, "the film came from the origin: {o}");

    // The sixth hub heard that multicast and kept none of it.
    let s = status(https[ASKERS]).unwrap();
    let f = film(&s).unwrap();
    assert!(f["complete"] == false && u(&f["chunks_stored"]) == 0, "an unasked hub took the film: {f}");
    assert!(u(&s["drops"]["unwanted"]) > 0, "the unasked hub heard nothing of it: {}", s["drops"]);
    assert_eq!(u(&s["chunks"]["fetches"]), 0);
}

/// `--keep tagged --tag news` takes the pushed files the catalog tags
/// `news` and nothing else; `--keep on-demand` takes none; both list the
/// whole catalog, and the second fetches an untagged file when asked, from
/// the hub that keeps everything.
#[test]
fn hubs_keep_what_their_tags_choose_and_fetch_the_rest_when_asked() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let dir = t.join("chan");
    std::fs::create_dir_all(&dir).unwrap();
    let files = [("a news.txt", 30_000), ("b news.txt", 70_000), ("film.bin", 200_000), ("plain.txt", 5_000)];
    for (i, (name, len)) in files.iter().enumerate() {
        std::fs::write(dir.join(name), pattern(*len, i as u64 + 10)).unwrap();
    }
    let meta = t.join("catalog.toml");
    std::fs::write(
        &meta,
        "[[item]]\npath = \"chan/a news.txt\"\ntags = [\"news\"]\n\
         [[item]]\npath = \"chan/b news.txt\"\ntags = [\"sport\", \"news\"]\n\
         [[item]]\npath = \"chan/film.bin\"\ntags = [\"film\"]\n",
    )
    .unwrap();
    let fingerprint = keygen(&t.join("keys"));
    let group = unique_group();
    let (_hubs, https) = start_hubs(t, &fingerprint, group, 3, |i| match i {
        1 => ["--keep", "tagged", "--tag", "news"].map(String::from).to_vec(),
        2 => ["--keep", "on-demand"].map(String::from).to_vec(),
        _ => vec![],
    });
    wait_for_peers(&https, 2, DEADLINE);
    let mut seed = seed_args_with_origin(&t.join("keys"), group, "20mbit", 2, &[&dir]);
    seed.extend(["--chunk-size".into(), "64KiB".into(), "--catalog".into(), meta.display().to_string()]);
    let bc_http = free_port();
    seed.extend(["--http".into(), bc_http.to_string()]);
    let _bc = Daemon::spawn("broadcaster", &bin("broadcaster"), &seed, t);

    wait_for("hub 0 to hold everything", DEADLINE, || status(https[0]).filter(|s| all_complete(s, 4)));
    wait_for("the carousel's two rounds", DEADLINE, || {
        status(bc_http).filter(|s| s["carousel"]["done"] == true)
    });
    let held = |s: &serde_json::Value, name: &str| {
        let o =
            s["objects"].as_array().unwrap().iter().find(|o| o["name"] == format!("chan/{name}")).unwrap();
        (o["complete"] == true, u(&o["chunks_stored"]))
    };
    let s = wait_for("hub 1: the news held", DEADLINE, || {
        status(https[1]).filter(|s| held(s, "a news.txt").0 && held(s, "b news.txt").0)
    });
    assert_eq!(held(&s, "film.bin"), (false, 0), "--keep tagged took an untagged file");
    assert_eq!(held(&s, "plain.txt"), (false, 0), "--keep tagged took a file with no tags");
    assert!(std::fs::read(t.join("out-1/chan/b news.txt")).unwrap() == pattern(70_000, 11));
    let s = status(https[2]).unwrap();
    for (name, _) in &files {
        assert_eq!(held(&s, name), (false, 0), "--keep on-demand took {name}");
    }
    for http in &https[1..] {
        let body = hubcast_clienthub::status_client::get(*http, "/api/catalog").unwrap();
        let c: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(c["entries"], 4, "every hub lists the whole catalog: {c}");
    }

    // Asked, the on-demand hub takes the film from hub 0.
    let line = request(https[2], "POST", "/api/fetch/chan/film.bin", Some(&bearer(&t.join("store-2"))));
    assert!(line.contains(" 202 "), "{line}");
    let s = wait_for("hub 2: the film", DEADLINE, || status(https[2]).filter(|s| held(s, "film.bin").0));
    assert!(std::fs::read(t.join("out-2/chan/film.bin")).unwrap() == pattern(200_000, 12));
    assert_eq!(held(&s, "plain.txt"), (false, 0));
}
