//! End-to-end goodput over loopback multicast, beside plain UDP multicast
//! throughput measured in the same run.
//!
//! `cargo bench -p hubcast-tests --bench goodput`
//! (env: HUBCAST_BENCH_MIB, default 256; HUBCAST_BENCH_RATE, default 1gbit)
//!
//! - baseline: one sender blasts 1332-byte datagrams (a hubcast symbol datagram's
//!   size) to a loopback group as fast as it can; one receiver counts what
//!   arrives. Figure: bytes received per second.
//! - hubcast: `broadcaster seed` of one file to one `clienthub run`, at 0% and at
//!   5% simulated loss. Figure: file bytes / time from the broadcaster's start to
//!   the hub reporting the object complete (verified, stored and exported).

use hubcast_tests::*;
use hubcast_transport::MulticastConfig;
use std::time::{Duration, Instant};

const DATAGRAM: usize = 1332;

fn plain_udp_multicast(group: std::net::SocketAddr, count: usize) -> (f64, f64) {
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    rt.block_on(async {
        let cfg = MulticastConfig::new(group);
        let rx = hubcast_transport::multicast::receiver(&cfg).expect("receiver");
        let tx = hubcast_transport::multicast::sender(&cfg).expect("sender");
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
            tx.send_to(&payload, group).await.expect("send");
        }
        let (bytes, span) = recv.await.expect("receiver task");
        (bytes as f64 / span.as_secs_f64().max(1e-9), bytes as f64 / (count * DATAGRAM) as f64)
    })
}

fn hubcast_run(
    t: &std::path::Path,
    file: &std::path::Path,
    size: u64,
    rate: &str,
    loss: f64,
    tag: &str,
) -> (f64, u64) {
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
    let start = Instant::now();
    let _bc = Daemon::spawn(
        &format!("broadcaster-{tag}"),
        &bin("broadcaster"),
        &seed_args(&t.join(format!("keys-{tag}")), group, rate, 0, &[file]),
        t,
    );
    let done =
        wait_for("hub complete", Duration::from_secs(600), || status(http).filter(|s| all_complete(s, 1)));
    let elapsed = start.elapsed();
    let name = file.file_name().expect("file name");
    assert_eq!(std::fs::metadata(t.join(format!("out-{tag}")).join(name)).expect("exported").len(), size);
    (size as f64 / elapsed.as_secs_f64(), u(&done["datagrams"]["received"]))
}

fn main() {
    let mib: u64 = std::env::var("HUBCAST_BENCH_MIB").ok().and_then(|v| v.parse().ok()).unwrap_or(256);
    let rate = std::env::var("HUBCAST_BENCH_RATE").unwrap_or_else(|_| "1gbit".into());
    let tmp = tempfile::tempdir().expect("tempdir");
    let t = tmp.path();
    let size = mib << 20;
    let file = t.join("payload.bin");
    std::fs::write(&file, pattern(size as usize, 9)).expect("write payload");
    bin_dir();

    let (udp, delivered) = plain_udp_multicast(unique_group(), (size as usize / DATAGRAM) * 11 / 10);
    let (g0, _) = hubcast_run(t, &file, size, &rate, 0.0, "0");
    let (g5, _) = hubcast_run(t, &file, size, &rate, 0.05, "5");

    println!("goodput benchmark: {mib} MiB over loopback multicast, broadcaster rate {rate}");
    println!("{:<52} {:>10} {:>8}", "", "MB/s", "ratio");
    println!(
        "{:<52} {:>10.0} {:>8}",
        format!("plain UDP multicast, 1332-byte datagrams ({:.0}% delivered)", delivered * 100.0),
        udp / 1e6,
        "1.00"
    );
    println!(
        "{:<52} {:>10.0} {:>8.2}",
        "hubcast, 0% loss (to verified, stored, exported)",
        g0 / 1e6,
        g0 / udp
    );
    println!("{:<52} {:>10.0} {:>8.2}", "hubcast, 5% simulated loss", g5 / 1e6, g5 / udp);
}
