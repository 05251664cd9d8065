//! A hub's HTTP listener under 1,000 idle and slow connections (as anyone on
//! a LAN can open with `--http 0.0.0.0:...`): `/api/status` keeps answering,
//! and the held connections are closed after the header timeout.

use hubcast_tests::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

const DEADLINE: Duration = Duration::from_secs(60);
/// hubcast_daemon::http_server::HttpLimits::default().header_timeout, with room.
const CLOSED_WITHIN: Duration = Duration::from_secs(25);

#[test]
fn idle_and_slow_connections_neither_starve_the_status_nor_stay_open() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let fingerprint = keygen(&t.join("keys"));
    let http = free_port();
    let _hub = Daemon::spawn(
        "hub",
        &bin("clienthub"),
        &hub_args(&fingerprint, unique_group(), &t.join("store"), &t.join("out"), http),
        t,
    );
    wait_for("hub to answer", DEADLINE, || status(http));

    // 500 that say nothing, 500 that start a request and stall.
    let mut held = Vec::new();
    for i in 0..1000 {
        let mut s = TcpStream::connect(http).expect("connect");
        if i % 2 == 1 {
            s.write_all(b"GET /api/status HTTP/1.1\r\nHost: hub\r\nX-Slow: ").unwrap();
        }
        held.push(s);
    }
    // The status answers at once, five times over, while they are held.
    for _ in 0..5 {
        assert!(status(http).is_some(), "the status must answer under the flood");
    }

    // Every held connection is closed by the hub: by the cap (the oldest
    // make room for new ones) or by the header timeout.
    for s in &mut held {
        s.set_read_timeout(Some(CLOSED_WITHIN)).unwrap();
        let mut buf = [0u8; 256];
        match s.read(&mut buf) {
            Ok(0) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            Ok(n) => {
                // A 408 or an error answer before closing is fine; then EOF.
                assert!(buf[..n].starts_with(b"HTTP/1.1 4"), "{:?}", String::from_utf8_lossy(&buf[..n]));
                assert!(matches!(s.read(&mut buf), Ok(0) | Err(_)));
            }
            Err(e) => panic!("a held connection stayed open: {e}"),
        }
    }
    let metrics = hubcast_clienthub::status_client::get(http, "/metrics").unwrap();
    let figure = |name: &str| -> u64 {
        let line = metrics.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("{name}"));
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    };
    assert!(figure("hubcast_http_connections_total") >= 1000, "{metrics}");
    assert!(figure("hubcast_http_connections_evicted_total") >= 1000 - 256, "{metrics}");
    assert!(figure("hubcast_http_connections_open") <= 2, "only this request: {metrics}");
}
