//! End-to-end goodput over loopback multicast, beside plain UDP multicast
//! throughput measured in the same run.
//!
//! `cargo bench -p hubcast-tests --bench goodput`
//! (env: HUBCAST_BENCH_MIB, default 256; HUBCAST_BENCH_RATE, default 1gbit)
//!
//! - baselines: one sender blasts 1332-byte datagrams (a hubcast symbol
//!   datagram's size) to a loopback group as fast as it can; one receiver
//!   counts what arrives. Figure: bytes received per second. Once a datagram
//!   a system call (the "plain UDP"), and once in batches as the
//!   building blocks allow (UDP GSO runs out, `recvmmsg` with GRO in), as
//!   hubcast sends and receives.
//! - hubcast: `broadcaster seed` of one file to one `clienthub run`, at 0% and
//!   at 5% simulated loss, at the rate given and at `--rate auto` (with the
//!   origin service, which auto needs). Figure: file bytes / time from the
//!   broadcaster's start to the hub reporting the object complete (verified,
//!   stored and exported), and the kernel's receive-buffer drops meanwhile.

use hubcast_tests::*;
use hubcast_transport::MulticastConfig;
use std::time::{Duration, Instant};

const DATAGRAM: usize = 1332;

/// A bench that cannot set up says why and exits non-zero.
type BenchError = Box<dyn std::error::Error + Send + Sync>;

fn plain_udp_multicast(group: std::net::SocketAddr, count: usize) -> Result<(f64, f64), BenchError> {
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let cfg = MulticastConfig::new(group);
        let rx = hubcast_transport::multicast::receiver(&cfg)?;
        let tx = hubcast_transport::multicast::sender(&cfg)?;
        let recv = tokio::spawn(async move {
            let mut buf = vec![0u8; 2048];
            let (mut n, mut first, mut last) = (0usize, None, Instant::now());
            while let Ok(Ok(len)) = tokio::time::timeout(Duration::from_millis(500), rx.recv(&mut buf)).await
            {
                first.get_or_insert_with(Instant::now);
                last = Instant::now();
                n += len;
            }
            (n, first.map(|f| last - f).unwrap_or_default())
        });
        let payload = vec![0x5a; DATAGRAM];
        for _ in 0..count {
            tx.send_to(&payload, group).await?;
        }
        let (bytes, span) = recv.await?;
        Ok::<_, BenchError>((
            bytes as f64 / span.as_secs_f64().max(1e-9),
            bytes as f64 / (count * DATAGRAM) as f64,
        ))
    })
}

/// The same blast in runs of up to 45 datagrams a call, received in batches.
fn batched_udp_multicast(group: std::net::SocketAddr, count: usize) -> Result<(f64, f64), BenchError> {
    use hubcast_transport::batch::{BatchRecv, BatchSend};
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let cfg = MulticastConfig::new(group);
        let rx = hubcast_transport::multicast::receiver(&cfg)?;
        let tx = hubcast_transport::multicast::sender(&cfg)?;
        let mut batch = BatchRecv::new(&rx)?;
        let recv = tokio::spawn(async move {
            let (mut n, mut first, mut last) = (0usize, None, Instant::now());
            while let Ok(Ok(())) = tokio::time::timeout(Duration::from_millis(500), rx.readable()).await {
                let Ok(datagrams) = batch.try_recv(&rx) else { continue };
                first.get_or_insert_with(Instant::now);
                last = Instant::now();
                n += datagrams.map(<[u8]>::len).sum::<usize>();
            }
            (n, first.map(|f| last - f).unwrap_or_default())
        });
        let send = BatchSend::new(&tx)?;
        let per_call = send.max_segments().min(45);
        let run = vec![0x5a; DATAGRAM * per_call];
        for _ in 0..count.div_ceil(per_call) {
            send.send(&tx, group, &run, DATAGRAM).await?;
        }
        let (bytes, span) = recv.await?;
        let sent = count.div_ceil(per_call) * per_call * DATAGRAM;
        Ok::<_, BenchError>((bytes as f64 / span.as_secs_f64().max(1e-9), bytes as f64 / sent as f64))
    })
}

/// Goodput (bytes/s) and the kernel's receive-buffer drops over one run.
fn hubcast_run(
    t: &std::path::Path,
    file: &std::path::Path,
    size: u64,
    rate: &str,
    loss: f64,
    tag: &str,
) -> Result<(f64, u64), BenchError> {
    let group = unique_group();
    let http = free_port();
    let fingerprint = keygen(&t.join(format!("keys-{tag}")));
    let mut args =
        hub_args(&fingerprint, group, &t.join(format!("store-{tag}")), &t.join(format!("out-{tag}")), http);
    if loss > 0.0 {
        args.extend(["--simulate-loss".into(), loss.to_string(), "--loss-seed".into(), "1".into()]);
    }
    let _hub = Daemon::spawn(&format!("hub-{tag}"), &bin("clienthub"), &args, t);
    wait_for("hub to answer", Duration::from_secs(30), || status(http));
    let keys = t.join(format!("keys-{tag}"));
    let args = match rate {
        "auto" => seed_args_with_origin(&keys, group, rate, 0, &[file]),
        _ => seed_args(&keys, group, rate, 0, &[file]),
    };
    let drops = rcvbuf_errors();
    let start = Instant::now();
    let _bc = Daemon::spawn(&format!("broadcaster-{tag}"), &bin("broadcaster"), &args, t);
    wait_for("hub complete", Duration::from_secs(600), || status(http).filter(|s| all_complete(s, 1)));
    let elapsed = start.elapsed();
    let name = file.file_name().ok_or("the payload path has no file name")?;
    assert_eq!(std::fs::metadata(t.join(format!("out-{tag}")).join(name))?.len(), size);
    Ok((size as f64 / elapsed.as_secs_f64(), rcvbuf_errors() - drops))
}

fn main() -> Result<(), BenchError> {
    let mib: u64 = std::env::var("HUBCAST_BENCH_MIB").ok().and_then(|v| v.parse().ok()).unwrap_or(256);
    let rate = std::env::var("HUBCAST_BENCH_RATE").unwrap_or_else(|_| "1gbit".into());
    let tmp = tempfile::tempdir()?;
    let t = tmp.path();
    let size = mib << 20;
    let file = t.join("payload.bin");
    std::fs::write(&file, pattern(size as usize, 9))?;
    bin_dir();

    let datagrams = (size as usize / DATAGRAM) * 11 / 10;
    let (udp, delivered) = plain_udp_multicast(unique_group(), datagrams)?;
    let (batched, batched_delivered) = batched_udp_multicast(unique_group(), datagrams)?;
    let runs = [(rate.as_str(), 0.0), (rate.as_str(), 0.05), ("auto", 0.0), ("auto", 0.05)];
    let results: Vec<(f64, u64)> = runs
        .iter()
        .enumerate()
        .map(|(i, (r, loss))| hubcast_run(t, &file, size, r, *loss, &i.to_string()))
        .collect::<Result<_, _>>()?;

    println!("goodput benchmark: {mib} MiB over loopback multicast");
    println!("{:<58} {:>8} {:>8} {:>10} {:>13}", "", "MB/s", "ratio", "÷ batched", "kernel drops");
    for (what, figure, share) in [
        ("plain UDP multicast, a datagram a call", udp, delivered),
        ("plain UDP multicast, batched (GSO out, recvmmsg+GRO in)", batched, batched_delivered),
    ] {
        println!(
            "{:<58} {:>8.0} {:>8.2} {:>10.2} {:>13}",
            format!("{what} ({:.0}% delivered)", share * 100.0),
            figure / 1e6,
            figure / udp,
            figure / batched,
            ""
        );
    }
    for ((r, loss), (goodput, drops)) in runs.iter().zip(results) {
        println!(
            "{:<58} {:>8.0} {:>8.2} {:>10.2} {:>13}",
            format!("hubcast --rate {r}, {:.0}% simulated loss", loss * 100.0),
            goodput / 1e6,
            goodput / udp,
            goodput / batched,
            drops
        );
    }
    Ok(())
}
