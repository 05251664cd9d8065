//! On-demand fetch from three peers, with real daemons: time to the first
//! byte and to the last of `GET /files/NAME` (with the hub's token) for an
//! object the hub evicted, beside raw quinn carrying the same bytes over
//! one loopback stream in the same run.
//!
//! `cargo bench -p hubcast-tests --bench on_demand`
//! (env: HUBCAST_BENCH_MIB, default 64; HUBCAST_BENCH_RUNS, default 3;
//! HUBCAST_BENCH_UPLOAD, each peer's --upload-rate, default 100mbit)
//!
//! Four hubs on one loopback island. The broadcaster sends one round of a
//! big file per run and a small one after them, and stops. Hubs 0-2 hold
//! everything; hub 3's `--quota` holds one big file at most, so it evicted
//! every big one. Run i asks hub 3 for big file i, times the answer and
//! checks its bytes; then it seeks: asks for the last MiB of another big
//! file it evicted (a player jumping to the end), and times that answer,
//! which the hub fetches before the rest of the file.

use hubcast_keys::NodeKey;
use hubcast_tests::*;
use hubcast_transport::quic::NodeEndpoint;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

const DEADLINE: Duration = Duration::from_secs(300);

/// A `GET` with the token, of the last `tail` bytes if given: (time to the
/// first body byte, to the last, the body's BLAKE3, its length).
fn timed_get(
    http: SocketAddr,
    path: &str,
    token: &str,
    tail: Option<usize>,
) -> Res<(Duration, Duration, [u8; 32], usize)> {
    let start = Instant::now();
    let mut s = std::net::TcpStream::connect(http)?;
    s.set_read_timeout(Some(Duration::from_secs(120)))?;
    let range = tail.map(|n| format!("Range: bytes=-{n}\r\n")).unwrap_or_default();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\n{range}Authorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    )?;
    let ok: &[u8] = if tail.is_some() { b"HTTP/1.1 206" } else { b"HTTP/1.1 200" };
    let mut buf = vec![0u8; 1 << 16];
    let mut head = Vec::new();
    let mut hasher = blake3::Hasher::new();
    let (mut first, mut body) = (None, 0usize);
    loop {
        let n = s.read(&mut buf)?;
        if n == 0 {
            break;
        }
        let data = &buf[..n];
        if first.is_none() {
            head.extend_from_slice(data);
            let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") else { continue };
            assert!(head.starts_with(ok), "{}", String::from_utf8_lossy(&head));
            let rest = head.split_off(end + 4);
            if rest.is_empty() {
                continue;
            }
            first = Some(start.elapsed());
            hasher.update(&rest);
            body += rest.len();
            continue;
        }
        hasher.update(data);
        body += data.len();
    }
    Ok((first.unwrap_or_default(), start.elapsed(), *hasher.finalize().as_bytes(), body))
}

/// Raw quinn: `bytes` over one stream between two loopback endpoints, with
/// the hubs' TLS and transport settings. Time to the first byte received
/// and to the last.
async fn raw_quinn(bytes: usize) -> Res<(Duration, Duration)> {
    let (a, b) = (NodeKey::generate(&mut rand::thread_rng()), NodeKey::generate(&mut rand::thread_rng()));
    let server = NodeEndpoint::bind("127.0.0.1:0".parse()?, &b)?;
    let client = NodeEndpoint::bind("127.0.0.1:0".parse()?, &a)?;
    let addr = server.local_addr()?;
    let sending = tokio::spawn(async move {
        let conn = server.accept().await.ok_or("the endpoint closed")?.await?;
        let (mut send, mut recv) = conn.accept_bi().await?;
        let mut ask = [0u8; 1];
        recv.read_exact(&mut ask).await?;
        let payload = vec![0x5a_u8; 1 << 20];
        let mut left = bytes;
        while left > 0 {
            let n = left.min(payload.len());
            send.write_all(&payload[..n]).await?;
            left -= n;
        }
        send.finish()?;
        let _ = send.stopped().await;
        Res::Ok(server)
    });
    let start = Instant::now();
    let conn = client.connect(addr, b.id())?.await?;
    let (mut send, mut recv) = conn.open_bi().await?;
    send.write_all(&[1]).await?;
    let mut buf = vec![0u8; 1 << 16];
    let (mut first, mut n) = (None, 0);
    while let Some(k) = recv.read(&mut buf).await? {
        first.get_or_insert_with(|| start.elapsed());
        n += k;
    }
    let last = start.elapsed();
    assert_eq!(n, bytes);
    sending.await??;
    Ok((first.unwrap_or_default(), last))
}

fn main() -> Res<()> {
    let mib: usize = std::env::var("HUBCAST_BENCH_MIB").ok().and_then(|v| v.parse().ok()).unwrap_or(64);
    let runs: usize = std::env::var("HUBCAST_BENCH_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(3);
    let tmp = tempfile::tempdir()?;
    let t = tmp.path();
    let dir = t.join("chan");
    std::fs::create_dir_all(&dir)?;
    // Two big files a run (one read whole, one sought in), and a small one
    // after them: hub 3's quota holds one big file at most, so the small
    // one's arrival evicted the last. (BLAKE3 of the whole, of the last MiB.)
    let digests: Vec<([u8; 32], [u8; 32])> = (0..2 * runs)
        .map(|i| {
            let big = pattern(mib << 20, i as u64 + 1);
            std::fs::write(dir.join(format!("a-big-{i}.bin")), &big)?;
            let tail = &big[big.len() - (1 << 20)..];
            Ok((*blake3::hash(&big).as_bytes(), *blake3::hash(tail).as_bytes()))
        })
        .collect::<std::io::Result<_>>()?;
    std::fs::write(dir.join("b-small.bin"), pattern(8 << 20, 99))?;
    let quota = format!("{}MiB", mib + 6);
    let fingerprint = keygen(&t.join("keys"));
    let group = unique_group();
    // The peers serve at most --upload-rate each (a home's uplink; the
    // hub's default is 100 Mbit/s): the figure a fetch from them can reach.
    let upload = std::env::var("HUBCAST_BENCH_UPLOAD").unwrap_or_else(|_| "100mbit".into());
    let (_hubs, https) = start_hubs(t, &fingerprint, group, 4, |i| match i {
        3 => vec!["--quota".into(), quota.clone()],
        _ => vec!["--upload-rate".into(), upload.clone()],
    });
    wait_for_peers(&https, 3, DEADLINE);
    let seed = seed_args(&t.join("keys"), group, "400mbit", 1, &[&dir]);
    let mut bc = Daemon::spawn("broadcaster", &bin("broadcaster"), &seed, t);
    for http in &https[..3] {
        wait_for("the peers to hold everything", DEADLINE, || {
            status(*http).filter(|s| all_complete(s, 2 * runs + 1))
        });
    }
    let hub = https[3];
    let evicted = |s: &serde_json::Value| {
        s["objects"].as_array().is_some_and(|o| {
            o.iter()
                .filter(|o| o["name"].as_str().unwrap_or("").contains("a-big-") && o["evicted"] == true)
                .count()
                == 2 * runs
        })
    };
    wait_for("hub 3 to evict every big one", DEADLINE, || status(hub).filter(evicted));
    bc.kill();
    let token = std::fs::read_to_string(t.join("store-3/api-token"))?;
    let rt = tokio::runtime::Runtime::new()?;
    println!("{mib} MiB on demand from 3 peers (loopback) serving at most {upload} each, {runs} runs, raw quinn before each");
    println!("| run | raw quinn: first byte / last | hub: first byte / last | last ÷ raw quinn's | MB/s | seek to the last MiB: first byte / last |");
    println!("|---|---|---|---|---|---|");
    for run in 0..runs {
        let (q_first, q_last) = rt.block_on(raw_quinn(mib << 20))?;
        let (first, last, got, bytes) =
            timed_get(hub, &format!("/files/chan/a-big-{run}.bin"), token.trim(), None)?;
        assert_eq!((bytes, got), (mib << 20, digests[run].0), "the fetched bytes differ from the source");
        let sought = runs + run;
        let (s_first, s_last, got, tail) =
            timed_get(hub, &format!("/files/chan/a-big-{sought}.bin"), token.trim(), Some(1 << 20))?;
        assert_eq!((tail, got), (1 << 20, digests[sought].1), "the sought bytes differ from the source");
        println!(
            "| {run} | {:.1} ms / {:.0} ms | {:.0} ms / {:.0} ms | {:.2} | {:.0} | {:.0} ms / {:.0} ms |",
            q_first.as_secs_f64() * 1e3,
            q_last.as_secs_f64() * 1e3,
            first.as_secs_f64() * 1e3,
            last.as_secs_f64() * 1e3,
            last.as_secs_f64() / q_last.as_secs_f64(),
            bytes as f64 / last.as_secs_f64() / 1e6,
            s_first.as_secs_f64() * 1e3,
            s_last.as_secs_f64() * 1e3,
        );
    }
    let s = status(hub).ok_or("hub 3 stopped answering")?;
    println!("hub 3: verified bytes by path {}, fetches {}", s["bytes"], s["chunks"]["fetches"]);
    Ok(())
}
