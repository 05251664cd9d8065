//! The HTTP gateway end to end: a hub holding a seeded folder serves it to
//! curl at `/files/{path}` and `/objects/{id}`, whole and by `Range`, and
//! every byte is checked against the source. Hostile requests get clean
//! answers, and the hub still serves after them.

use hubcast_tests::*;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const DEADLINE: Duration = Duration::from_secs(120);
const CHUNK: usize = 64 << 10;

/// What curl got: status code, headers (lowercase names), body.
struct Got {
    code: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Got {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

fn curl(t: &Path, url: &str, extra: &[&str]) -> Got {
    let (head, body) = (t.join("curl.head"), t.join("curl.body"));
    let _ = std::fs::remove_file(&body);
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "20", "--path-as-is", "-D"])
        .arg(&head)
        .arg("-o")
        .arg(&body)
        .args(["-w", "%{http_code}"])
        .args(extra)
        .arg(url)
        .output()
        .expect("curl (apt-get install curl)");
    let code = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(0);
    let headers = std::fs::read_to_string(&head)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Got { code, headers, body: std::fs::read(&body).unwrap_or_default() }
}

/// ffmpeg's test pattern as an MP4 of `secs` seconds, its index at the end
/// (ffmpeg's default): a player seeks there before it can play.
fn make_clip(path: &Path, secs: u32) {
    let out = Command::new("ffmpeg")
        .args(["-loglevel", "error", "-y", "-f", "lavfi", "-i", "testsrc=size=320x240:rate=25"])
        .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-t", &secs.to_string()])
        .args(["-c:v", "libx264", "-preset", "ultrafast", "-b:v", "2M", "-pix_fmt", "yuv420p", "-c:a", "aac"])
        .arg(path)
        .output()
        .expect("ffmpeg makes the test clip: install it (apt-get install ffmpeg)");
    assert!(out.status.success(), "ffmpeg: {}", String::from_utf8_lossy(&out.stderr));
}

/// A hub on `http`, then a broadcaster seeding `dir` round and round at
/// `rate` in chunks of `chunk`.
fn hub_and_broadcaster(t: &Path, dir: &Path, rate: &str, chunk: &str) -> (Daemon, Daemon, SocketAddr) {
    let fingerprint = keygen(&t.join("keys"));
    let group = unique_group();
    let http = free_port();
    let hub = Daemon::spawn(
        "hub",
        &bin("clienthub"),
        &hub_args(&fingerprint, group, &t.join("store"), &t.join("out"), http),
        t,
    );
    wait_for("the hub to answer", DEADLINE, || status(http));
    let mut seed = seed_args(&t.join("keys"), group, rate, 0, &[dir]);
    seed.extend(["--chunk-size".into(), chunk.into()]);
    (hub, Daemon::spawn("broadcaster", &bin("broadcaster"), &seed, t), http)
}

/// What ffprobe reads of `url`: the codecs, sorted, and the length in seconds.
fn probe(url: &str) -> (Vec<String>, f64) {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-rw_timeout", "60000000"])
        .args(["-show_entries", "stream=codec_name:format=duration", "-of", "json"])
        .arg(url)
        .output()
        .expect("ffprobe (apt-get install ffmpeg)");
    let probed: serde_json::Value = serde_json::from_slice(&out.stdout).expect("ffprobe's JSON");
    let streams = probed["streams"].as_array().unwrap_or_else(|| panic!("no streams: {probed}"));
    let mut codecs: Vec<String> =
        streams.iter().filter_map(|s| s["codec_name"].as_str().map(String::from)).collect();
    codecs.sort();
    let secs = probed["format"]["duration"].as_str().and_then(|d| d.parse().ok());
    (codecs, secs.unwrap_or_else(|| panic!("no duration: {probed}")))
}

#[test]
fn a_player_reads_held_files_whole_and_by_range_and_hostile_requests_get_clean_answers() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let dir = t.join("sample");
    std::fs::create_dir_all(&dir).unwrap();
    // Three chunks and a piece, one at a chunk edge, an empty file and a
    // small one kept in the index; a name with a space.
    let files: Vec<(&str, Vec<u8>)> = vec![
        ("a film.mp4", pattern(3 * CHUNK + 1000, 1)),
        ("edge.bin", pattern(2 * CHUNK, 2)),
        ("empty.txt", Vec::new()),
        ("small.txt", pattern(100, 3)),
    ];
    for (name, bytes) in &files {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
    // A real MP4 with its index at the end: a player seeks there first.
    make_clip(&dir.join("clip.mp4"), 2);
    let (_hub, _bc, http) = hub_and_broadcaster(t, &dir, "200mbit", "64KiB");
    let s = wait_for("every file complete", DEADLINE, || {
        status(http).filter(|s| all_complete(s, files.len() + 1))
    });

    let base = format!("http://{http}");
    let object = |suffix: &str| -> (String, String) {
        let o =
            s["objects"].as_array().unwrap().iter().find(|o| o["name"].as_str().unwrap().ends_with(suffix));
        let o = o.unwrap_or_else(|| panic!("{suffix} in {}", s["objects"]));
        (o["name"].as_str().unwrap().replace(' ', "%20"), o["id"].as_str().unwrap().to_owned())
    };
    // The store serves, not the export folder: it is gone.
    std::fs::remove_dir_all(t.join("out")).unwrap();

    let (film_name, film_id) = object("a film.mp4");
    let film = &files[0].1;
    let whole = curl(t, &format!("{base}/files/{film_name}"), &[]);
    assert_eq!(whole.code, 200);
    assert!(whole.body == *film, "the whole file differs from the source");
    assert_eq!(whole.header("content-type"), Some("video/mp4"));
    assert_eq!(whole.header("accept-ranges"), Some("bytes"));
    assert_eq!(whole.header("etag"), Some(format!("\"{film_id}\"").as_str()));
    let by_id = curl(t, &format!("{base}/objects/{film_id}"), &[]);
    assert!(by_id.code == 200 && by_id.body == *film);

    let n = film.len();
    let edge = CHUNK * 2;
    for (range, want, content_range) in [
        ("0-0", &film[..1], format!("bytes 0-0/{n}")),
        ("-1", &film[n - 1..], format!("bytes {}-{}/{n}", n - 1, n - 1)),
        (
            &*format!("{}-{}", edge - 10, edge + 9),
            &film[edge - 10..edge + 10],
            format!("bytes {}-{}/{n}", edge - 10, edge + 9),
        ),
        (&*format!("{}-", CHUNK + 5), &film[CHUNK + 5..], format!("bytes {}-{}/{n}", CHUNK + 5, n - 1)),
        (&*format!("0-{}", 10 * n), &film[..], format!("bytes 0-{}/{n}", n - 1)),
    ] {
        let got = curl(t, &format!("{base}/files/{film_name}"), &["-H", &format!("Range: bytes={range}")]);
        assert_eq!(got.code, 206, "bytes={range}");
        assert!(got.body == want, "bytes={range}: the bytes differ from the source");
        assert_eq!(got.header("content-range"), Some(content_range.as_str()), "bytes={range}");
        assert_eq!(got.header("content-length"), Some(want.len().to_string().as_str()));
    }
    let past = curl(t, &format!("{base}/files/{film_name}"), &["-H", &format!("Range: bytes={n}-")]);
    assert_eq!(past.code, 416);
    assert_eq!(past.header("content-range"), Some(format!("bytes */{n}").as_str()));
    let head = curl(t, &format!("{base}/files/{film_name}"), &["-I"]);
    assert_eq!(head.code, 200);
    assert_eq!(head.header("content-length"), Some(n.to_string().as_str()));

    // A file at a chunk edge, and its last chunk's last byte.
    let (edge_name, _) = object("edge.bin");
    let got = curl(t, &format!("{base}/files/{edge_name}"), &[]);
    assert!(got.code == 200 && got.body == files[1].1);
    let got = curl(t, &format!("{base}/files/{edge_name}"), &["-H", "Range: bytes=-1"]);
    assert!(got.code == 206 && got.body == files[1].1[2 * CHUNK - 1..]);
    // The empty file: whole is nothing; any range is past its end.
    let (empty_name, _) = object("empty.txt");
    let got = curl(t, &format!("{base}/files/{empty_name}"), &[]);
    assert!(got.code == 200 && got.body.is_empty() && got.header("content-length") == Some("0"));
    assert_eq!(curl(t, &format!("{base}/files/{empty_name}"), &["-H", "Range: bytes=0-0"]).code, 416);
    // A small file, kept in the store's index.
    let (small_name, _) = object("small.txt");
    let got = curl(t, &format!("{base}/files/{small_name}"), &["-H", "Range: bytes=10-19"]);
    assert!(got.code == 206 && got.body == files[3].1[10..20]);
    assert_eq!(got.header("content-type"), Some("text/plain"));

    // Hostile: ten thousand ranges get the whole; bytes=-0 is past the end;
    // paths out of the channel and unknown ids are refused.
    let many = format!("Range: bytes={}", vec!["0-0"; 10_000].join(","));
    let got = curl(t, &format!("{base}/files/{film_name}"), &["-H", &many]);
    assert!(got.code == 200 && got.body == *film, "{}", got.code);
    assert_eq!(curl(t, &format!("{base}/files/{film_name}"), &["-H", "Range: bytes=-0"]).code, 416);
    for (path, code) in [
        ("/files/../keys/root.key", 400),
        ("/files/sample/%2E%2E/x", 400),
        ("/files/a%00b", 400),
        ("/files/%2Fetc%2Fpasswd", 400),
        ("/files/not-there.bin", 404),
        ("/objects/00", 404),
        (&*format!("/objects/{}", "0".repeat(64)), 404),
    ] {
        let got = curl(t, &format!("{base}{path}"), &[]);
        assert_eq!(got.code, code, "{path}");
    }
    // A player: ffprobe opens the clip through the gateway (seeking by
    // Range to the index at its end) and finds its streams and length.
    let (clip, _) = object("clip.mp4");
    let (codecs, secs) = probe(&format!("{base}/files/{clip}"));
    assert_eq!(codecs, ["aac", "h264"]);
    assert!((1.9..2.2).contains(&secs), "{secs} s");

    // `clienthub get`, by name (with a space) and by id: whole, and no
    // `.part` left; a name the channel does not have is refused, and
    // writes nothing.
    let get = |what: &str, out: &Path| {
        Command::new(bin("clienthub"))
            .args(["get", what, "--http", &http.to_string(), "-o"])
            .arg(out)
            .output()
            .expect("clienthub get")
    };
    let name = film_name.replace("%20", " ");
    let r = get(&name, &t.join("by-name.mp4"));
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert!(std::fs::read(t.join("by-name.mp4")).unwrap() == *film);
    let r = get(&film_id, &t.join("by-id.mp4"));
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert!(std::fs::read(t.join("by-id.mp4")).unwrap() == *film);
    assert!(!t.join("by-id.mp4.part").exists());
    let r = get("sample/not-there.bin", &t.join("nothing"));
    assert!(!r.status.success());
    assert!(
        String::from_utf8_lossy(&r.stderr).contains("clienthub status"),
        "{}",
        String::from_utf8_lossy(&r.stderr)
    );
    assert!(!t.join("nothing").exists() && !t.join("nothing.part").exists());

    // The status page links each held file to the gateway.
    let page = String::from_utf8(curl(t, &format!("{base}/"), &[]).body).unwrap();
    let href = format!("href=\"/files/{film_name}\"");
    assert!(page.contains(&href), "{href} in {page}");

    // Still serving, and the status still answers.
    assert!(curl(t, &format!("{base}/objects/{film_id}"), &["-H", "Range: bytes=0-3"]).body == film[..4]);
    assert!(status(http).is_some());
}

/// A file still arriving: a player opens it (ffprobe, whose MP4 index is
/// at the end) and curl asks for its last bytes, both before the hub holds
/// them; the gateway waits for the chunks and both get the right bytes.
#[test]
fn a_player_opens_a_file_while_it_is_still_arriving() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let dir = t.join("slow");
    std::fs::create_dir_all(&dir).unwrap();
    let clip = dir.join("clip.mp4");
    make_clip(&clip, 8);
    let source = std::fs::read(&clip).unwrap();
    // The clip (about 0.5 MB) in chunks of 32 KiB, one every ~0.13 s: the
    // requests below start after the first and wait for the last.
    let (_hub, _bc, http) = hub_and_broadcaster(t, &dir, "2mbit", "32KiB");
    let s = wait_for("the first chunk, not the last", DEADLINE, || {
        status(http).filter(|s| {
            let o = &s["objects"][0];
            o["chunks_stored"].as_u64().is_some_and(|n| n >= 1) && o["complete"] == false
        })
    });
    let name = s["objects"][0]["name"].as_str().unwrap().to_owned();
    let url = format!("http://{http}/files/{name}");
    let tail = Command::new("curl")
        .args(["-sS", "--max-time", "60", "-H", "Range: bytes=-100", "-o"])
        .arg(t.join("tail"))
        .arg(&url)
        .spawn()
        .expect("curl");
    let (codecs, secs) = probe(&url);
    assert_eq!(codecs, ["aac", "h264"]);
    assert!((7.9..8.2).contains(&secs), "{secs} s");
    assert!(tail.wait_with_output().unwrap().status.success());
    assert!(std::fs::read(t.join("tail")).unwrap() == source[source.len() - 100..]);
}
