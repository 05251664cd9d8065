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

/// `broadcaster live` playing `input` as channel "news" on `group`.
fn start_live(t: &Path, keys: &Path, group: SocketAddr, input: &Path) -> Daemon {
    let args = [
        "live",
        "--keys",
        &keys.display().to_string(),
        "--group",
        &group.to_string(),
        "--input",
        &input.display().to_string(),
        "--name",
        "news",
        "--segment",
        "1s",
        "--rate",
        "50mbit",
        // Ten seconds to get each segment, not the default three: a debug
        // build on a busy two-core machine may stall for seconds, and these
        // tests are about every segment arriving, not about how soon.
        "--deadline",
        "10s",
        "--tracker",
        &free_udp_port().to_string(),
    ];
    Daemon::spawn("broadcaster", &bin("broadcaster"), &args.map(String::from), t)
}

/// Wait for the broadcaster to end with its input; the segments it sent.
fn segments_sent(live: &mut Daemon) -> usize {
    let exit = live.wait_exit(DEADLINE).expect("the broadcaster ends with its input");
    assert!(exit.success(), "{}", live.log_text());
    let sent = live.log_text();
    sent.lines()
        .find_map(|l| l.strip_prefix("sent ")?.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("the broadcaster reports what it sent: {sent}"))
}

/// The hub lists every segment, with no gap; fetched with curl in playlist
/// order they are the source byte for byte; none was missed. Its live status.
fn plays_every_segment(http: SocketAddr, segments: usize, source: &[u8]) -> Value {
    let (seqs, gap) = wait_for("every segment in the playlist", DEADLINE, || {
        playlist(http).filter(|(s, _)| s.len() >= segments)
    });
    assert!(!gap, "hub {http} marks a gap");
    let mut played = Vec::new();
    for seq in &seqs {
        played
            .extend(curl(&format!("http://{http}/live/news/{seq}.ts")).expect("a listed segment is served"));
    }
    assert!(played == source, "hub {http}: {} bytes served for a {}-byte stream", played.len(), source.len());
    let s = live_status(http).unwrap();
    assert_eq!(s["missed"], 0, "hub {http}: {s}");
    s
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

    let mut live = start_live(t, &keys, island, &input);

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
    for (http, first) in hubs.iter().zip(first) {
        let (codecs, later) = wait_for("the playlist to move on", DEADLINE, || {
            probe(*http).filter(|(c, later)| c.len() == 2 && *later > first)
        });
        assert_eq!(codecs, ["aac", "h264"], "hub {http}: the stream started at {first} s, then at {later} s");
    }

    let segments = segments_sent(&mut live);
    assert!(segments >= STREAM_SECS as usize - 1, "{segments} segments for {STREAM_SECS} s");

    for http in hubs {
        let s = plays_every_segment(http, segments, &source);
        assert_eq!(u(&s["on_time"]) + u(&s["late"]), segments as u64, "hub {http}: {s}");
        eprintln!("hub {http}: {s}");
    }
    let lossy = status(lossy_http).unwrap();
    assert!(u(&lossy["bytes"]["peer"]) + u(&lossy["bytes"]["origin"]) > 0, "the lossy hub repaired: {lossy}");
    let desert = status(desert_http).unwrap();
    assert_eq!(desert["bytes"]["multicast"], 0);
    assert!(u(&desert["bytes"]["bridge"]) > 0, "{desert}");
}

/// A hub's place in the stripe forest, from its status: proper tree, parents.
fn forest(http: SocketAddr) -> Option<(Option<u64>, Vec<Option<String>>)> {
    let f = status(http)?["feed"]["forest"].clone();
    let parents = f["parents"].as_array()?.iter().map(|p| p.as_str().map(String::from)).collect();
    Some((f["proper"].as_u64(), parents))
}

/// The stripe forest end to end: a bridge is the root of three stripe trees,
/// and four desert hubs join it. Each takes one stripe from each of its
/// parents, so some take stripes from several hubs. While the channel plays,
/// ffprobe reads every desert hub's playlist, and a desert hub that is
/// another's parent is killed. The orphan decodes from its other two stripes
/// while its tree is repaired. Every hub still alive plays every segment, byte
/// for byte, and none was missed.
#[test]
fn desert_hubs_in_a_stripe_forest_survive_a_parent_failure_without_a_missed_segment() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let input = t.join("in.ts");
    make_stream(&input, 20);
    let source = std::fs::read(&input).unwrap();
    let keys = t.join("keys");
    let fingerprint = keygen(&keys);
    let island = unique_group();

    let (root_http, root_quic) = (free_port(), free_udp_port());
    let mut args = hub_args(&fingerprint, island, &t.join("root"), &t.join("root-out"), root_http);
    args.extend(["--bridge", "--stripes", "3", "--peer-listen", &root_quic.to_string()].map(String::from));
    let _root = Daemon::spawn("hub-root", &bin("clienthub"), &args, t);
    let root_id =
        wait_for("the root up", DEADLINE, || status(root_http))["node_id"].as_str().unwrap().to_owned();

    let mut deserts = Vec::new();
    for i in 0..4 {
        let (http, quic) = (free_port(), free_udp_port());
        let name = format!("desert-{i}");
        let mut args =
            hub_args(&fingerprint, unique_group(), &t.join(&name), &t.join(format!("{name}-out")), http);
        args.extend(
            ["--no-multicast", "--stripes", "3", "--peer-listen", &quic.to_string(), "--bridge-peer"]
                .map(String::from),
        );
        args.push(format!("{root_id}@{root_quic}"));
        let daemon = Daemon::spawn(&name, &bin("clienthub"), &args, t);
        let id =
            wait_for("a desert hub up", DEADLINE, || status(http))["node_id"].as_str().unwrap().to_owned();
        // One at a time: each has all three parents before the next joins.
        wait_for("a desert hub placed in every tree", DEADLINE, || {
            forest(http).filter(|(proper, parents)| proper.is_some() && parents.iter().all(Option::is_some))
        });
        deserts.push((Some(daemon), http, id));
    }

    let mut live = start_live(t, &keys, island, &input);

    // A desert hub with a desert hub among its parents: its parents differ.
    let ids: Vec<String> = deserts.iter().map(|(_, _, id)| id.clone()).collect();
    let (orphan, victim) = wait_for("a desert hub fed by another", DEADLINE, || {
        deserts.iter().enumerate().find_map(|(i, (_, http, _))| {
            let (_, parents) = forest(*http)?;
            let distinct: std::collections::HashSet<&String> = parents.iter().flatten().collect();
            let victim = parents.iter().flatten().find_map(|p| ids.iter().position(|id| id == p))?;
            (distinct.len() >= 2).then_some((i, victim))
        })
    });
    let orphan_http = deserts[orphan].1;
    wait_for("a few segments at the orphan-to-be", DEADLINE, || {
        live_status(orphan_http).filter(|s| u(&s["segments_ready"]) >= 3)
    });
    for (_, http, _) in &deserts {
        let (codecs, _) = wait_for("ffprobe to read a forest hub's playlist", DEADLINE, || {
            probe(*http).filter(|(c, _)| c.len() == 2)
        });
        assert_eq!(codecs, ["aac", "h264"]);
    }
    deserts[victim].0.take().expect("alive").kill();
    eprintln!("killed desert-{victim}, a parent of desert-{orphan}");

    let segments = segments_sent(&mut live);

    for (i, (daemon, http, _)) in deserts.iter().enumerate() {
        if daemon.is_none() {
            continue;
        }
        let s = plays_every_segment(*http, segments, &source);
        let st = status(*http).unwrap();
        assert_eq!(st["bytes"]["multicast"], 0);
        eprintln!("desert-{i}: {s} forest {}", st["feed"]["forest"]);
    }
    let orphaned = status(orphan_http).unwrap();
    assert!(u(&orphaned["feed"]["forest"]["parents_lost"]) >= 1, "{}", orphaned["feed"]["forest"]);
}

/// Joining the forest: each desert hub asks the root for its proper tree,
/// then starts its searches at a random hub of the forest that the tracker
/// names (the broadcaster's origin service, here with no media flowing). The
/// root and every desert hub register with the tracker as forest hubs, so a
/// later joiner may start at the root or at an earlier desert hub. Every
/// joiner ends with a parent in every tree.
#[test]
fn desert_hubs_join_the_forest_through_a_hub_the_tracker_names() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let keys = t.join("keys");
    let fingerprint = keygen(&keys);
    let out = Command::new(bin("broadcaster")).args(["node-id", "--keys"]).arg(&keys).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let tracker_port = free_udp_port();
    let tracker = format!("{}@{tracker_port}", String::from_utf8(out.stdout).unwrap().trim());
    // The tracker runs while the broadcaster waits for its input.
    let idle_input = format!("udp://{}", free_udp_port());
    let (keys_arg, group, port) =
        (keys.display().to_string(), unique_group().to_string(), tracker_port.to_string());
    let args = ["live", "--keys", &keys_arg, "--group", &group, "--input", &idle_input, "--name", "news"];
    let args: Vec<String> = args.into_iter().chain(["--tracker", &port]).map(String::from).collect();
    let _broadcaster = Daemon::spawn("broadcaster", &bin("broadcaster"), &args, t);

    let hub = |name: &str, http: SocketAddr, quic: SocketAddr, extra: &[&str]| {
        let mut args =
            hub_args(&fingerprint, unique_group(), &t.join(name), &t.join(format!("{name}-out")), http);
        args.extend(
            ["--stripes", "3", "--peer-listen", &quic.to_string(), "--tracker", &tracker].map(String::from),
        );
        args.extend(extra.iter().map(|s| s.to_string()));
        let daemon = Daemon::spawn(name, &bin("clienthub"), &args, t);
        let id = wait_for("a hub up", DEADLINE, || status(http))["node_id"].as_str().unwrap().to_owned();
        (daemon, id)
    };
    let (root_http, root_quic) = (free_port(), free_udp_port());
    let (_root, root_id) = hub("root", root_http, root_quic, &["--bridge"]);
    let tracker_addr: hubcast_keys::NodeAddr = tracker.parse().unwrap();
    wait_for("the root registered as a forest hub", DEADLINE, || {
        let named = ask_tracker(tracker_addr, hubcast_protocol::peer_wire::PeerMessage::ForestHubRequest)
            .expect("the tracker answers");
        named.iter().any(|h| hubcast_keys::NodeId(h.node_id).to_string() == root_id).then_some(())
    });

    let mut members = vec![root_id.clone()];
    let mut hubs = Vec::new();
    for i in 0..3 {
        let (http, quic) = (free_port(), free_udp_port());
        let name = format!("desert-{i}");
        let bridge_peer = format!("{root_id}@{root_quic}");
        let (daemon, id) = hub(&name, http, quic, &["--no-multicast", "--bridge-peer", &bridge_peer]);
        let f = wait_for("a desert hub placed in every tree", DEADLINE, || {
            let f = status(http)?["feed"]["forest"].clone();
            let placed = f["parents"].as_array()?.iter().all(|p| p.is_string());
            (placed && f["proper"].is_u64()).then_some(f)
        });
        eprintln!("{name}: {f}");
        assert_eq!(f["joined_via"], "tracker", "{f}");
        let contact = f["contact"].as_str().unwrap().to_owned();
        assert!(members.contains(&contact), "the contact {contact} is a forest hub: {members:?}");
        // Registered before the next one joins, so the tracker can name it.
        wait_for("the tracker to name the desert hub", DEADLINE, || {
            let named = ask_tracker(tracker_addr, hubcast_protocol::peer_wire::PeerMessage::ForestHubRequest)
                .expect("the tracker answers");
            named.iter().any(|h| hubcast_keys::NodeId(h.node_id).to_string() == id).then_some(())
        });
        members.push(id);
        hubs.push(daemon);
    }
}
