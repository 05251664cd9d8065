//! A live channel end to end, on loopback, with real clients. ffmpeg makes a
//! 12 s test stream (testsrc and a sine, H.264 and AAC in MPEG-TS, a keyframe
//! a second); `broadcaster live` plays it in real time as 1 s segments. Two
//! island hubs hear the multicast (one loses 5% of it on purpose and repairs
//! from the other); a desert hub (`--no-multicast`) takes the channel from the
//! first hub, a bridge. While the stream runs, ffprobe reads each hub's HLS
//! playlist twice and must find H.264 and AAC whose start moves on. At the end
//! each hub's segments, fetched with curl in playlist order, are the input
//! file byte for byte, and no segment was missed.

use hubcast_tests::*;
use serde_json::Value;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const DEADLINE: Duration = Duration::from_secs(120);
const STREAM_SECS: u32 = 12;

/// ffmpeg's test stream: `secs` seconds, a keyframe every second.
fn make_stream(path: &Path, secs: u32) {
    let out = Command::new("ffmpeg")
        .args(["-loglevel", "error", "-y", "-f", "lavfi", "-i", "testsrc=size=320x240:rate=25"])
        .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-t", &secs.to_string()])
        .args(["-c:v", "libx264", "-preset", "ultrafast", "-g", "25", "-pix_fmt", "yuv420p"])
        .args(["-c:a", "aac", "-b:a", "64k", "-f", "mpegts"])
        .arg(path)
        .output()
        .expect("ffmpeg makes the test stream: install it (apt-get install ffmpeg)");
    assert!(out.status.success(), "ffmpeg: {}", String::from_utf8_lossy(&out.stderr));
}

/// What ffprobe finds in a hub's playlist: codec names and the start time.
fn probe(http: SocketAddr) -> Option<(Vec<String>, f64)> {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-rw_timeout",
            "5000000",
            "-show_entries",
            "stream=codec_name:format=start_time",
        ])
        .args(["-of", "json"])
        .arg(format!("http://{http}/live/news/index.m3u8"))
        .output()
        .expect("ffprobe (apt-get install ffmpeg)");
    let v: Value = serde_json::from_slice(&out.stdout).ok()?;
    let mut codecs: Vec<String> =
        v["streams"].as_array()?.iter().filter_map(|s| s["codec_name"].as_str().map(String::from)).collect();
    codecs.sort();
    let start = v["format"]["start_time"].as_str()?.parse().ok()?;
    Some((codecs, start))
}

fn curl(url: &str) -> Option<Vec<u8>> {
    let out = Command::new("curl").args(["-sf", "--max-time", "10", url]).output().expect("curl");
    out.status.success().then_some(out.stdout)
}

/// The playlist's segment sequence numbers, and whether it marks a gap.
fn playlist(http: SocketAddr) -> Option<(Vec<u64>, bool)> {
    let text = String::from_utf8(curl(&format!("http://{http}/live/news/index.m3u8"))?).ok()?;
    assert!(text.starts_with("#EXTM3U\n"), "{text}");
    let seqs = text.lines().filter_map(|l| l.strip_suffix(".ts")?.parse().ok()).collect();
    Some((seqs, text.contains("#EXT-X-GAP")))
}

fn live_status(http: SocketAddr) -> Option<Value> {
    status(http)?["live"].as_array()?.first().cloned()
}

#[test]
fn island_and_desert_hubs_play_the_live_channel_and_serve_it_byte_for_byte() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let input = t.join("in.ts");
    make_stream(&input, STREAM_SECS);
    let source = std::fs::read(&input).unwrap();
    let keys = t.join("keys");
    let fingerprint = keygen(&keys);
    let (island, desert) = (unique_group(), unique_group());

    let (bridge_http, bridge_quic) = (free_port(), free_udp_port());
    let mut args = hub_args(&fingerprint, island, &t.join("bridge"), &t.join("bridge-out"), bridge_http);
    args.extend(["--bridge", "--peer-listen", &bridge_quic.to_string()].map(String::from));
    let _bridge = Daemon::spawn("hub-bridge", &bin("clienthub"), &args, t);
    let bridge_id =
        wait_for("the bridge up", DEADLINE, || status(bridge_http))["node_id"].as_str().unwrap().to_owned();

    let lossy_http = free_port();
    let mut args = hub_args(&fingerprint, island, &t.join("lossy"), &t.join("lossy-out"), lossy_http);
    args.extend(["--simulate-loss", "0.05", "--loss-seed", "5"].map(String::from));
    let _lossy = Daemon::spawn("hub-lossy", &bin("clienthub"), &args, t);

    let desert_http = free_port();
    let mut args = hub_args(&fingerprint, desert, &t.join("desert"), &t.join("desert-out"), desert_http);
    args.extend(["--no-multicast", "--bridge-peer", &format!("{bridge_id}@{bridge_quic}")].map(String::from));
    let _desert = Daemon::spawn("hub-desert", &bin("clienthub"), &args, t);
    let hubs = [bridge_http, lossy_http, desert_http];
    for http in hubs {
        wait_for("every hub up", DEADLINE, || status(http));
    }

    let mut live = Daemon::spawn(
        "broadcaster",
        &bin("broadcaster"),
        &[
            "live",
            "--keys",
            &keys.display().to_string(),
            "--group",
            &island.to_string(),
            "--input",
            &input.display().to_string(),
            "--name",
            "news",
            "--segment",
            "1s",
            "--rate",
            "50mbit",
            "--tracker",
            &free_udp_port().to_string(),
        ]
        .map(String::from),
        t,
    );

    // While it plays: ffprobe finds the stream on every hub, and a later
    // look starts later in the stream (the playlist moves on).
    let first: Vec<f64> = hubs
        .iter()
        .map(|http| {
            let (codecs, start) = wait_for("ffprobe to read the hub's playlist", DEADLINE, || {
                probe(*http).filter(|(c, _)| c.len() == 2)
            });
            assert_eq!(codecs, ["aac", "h264"], "hub {http}");
            start
        })
        .collect();
    std::thread::sleep(Duration::from_secs(3));
    for (http, first) in hubs.iter().zip(first) {
        let (codecs, later) = probe(*http).expect("ffprobe reads the playlist again");
        assert_eq!(codecs, ["aac", "h264"]);
        assert!(later > first, "hub {http}: the stream started at {first} s, then at {later} s");
    }

    let exit = live.wait_exit(DEADLINE).expect("the broadcaster ends with its input");
    assert!(exit.success(), "{}", live.log_text());
    let sent = live.log_text();
    let segments: usize = sent
        .lines()
        .find_map(|l| l.strip_prefix("sent ")?.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("the broadcaster reports what it sent: {sent}"));
    assert!(segments >= STREAM_SECS as usize - 1, "{segments} segments for {STREAM_SECS} s");

    for http in hubs {
        let (seqs, gap) = wait_for("every segment in the playlist", DEADLINE, || {
            playlist(http).filter(|(s, _)| s.len() >= segments)
        });
        assert!(!gap, "hub {http} marks a gap");
        let mut played = Vec::new();
        for seq in &seqs {
            played.extend(
                curl(&format!("http://{http}/live/news/{seq}.ts")).expect("a listed segment is served"),
            );
        }
        assert!(
            played == source,
            "hub {http}: {} bytes served for a {}-byte stream",
            played.len(),
            source.len()
        );
        let s = live_status(http).unwrap();
        assert_eq!(s["missed"], 0, "hub {http}: {s}");
        assert_eq!(u(&s["on_time"]) + u(&s["late"]), segments as u64, "hub {http}: {s}");
        eprintln!("hub {http}: {s}");
    }
    let lossy = status(lossy_http).unwrap();
    assert!(u(&lossy["bytes"]["peer"]) + u(&lossy["bytes"]["origin"]) > 0, "the lossy hub repaired: {lossy}");
    let desert = status(desert_http).unwrap();
    assert_eq!(desert["bytes"]["multicast"], 0);
    assert!(u(&desert["bytes"]["bridge"]) > 0, "{desert}");
}
