//! The side that connects only asks, and its congestion window is fixed; the
//! side that accepted sends the answers and keeps the queue-aware window.

use hubcast_keys::NodeKey;
use hubcast_transport::quic::{NodeEndpoint, ASKER_WINDOW};
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(10);
/// QUIC's initial datagram size: the fixed window is counted in it.
const INITIAL_MTU: u64 = 1200;

#[tokio::test]
async fn the_asker_keeps_a_fixed_window_and_the_answerer_its_own() {
    let key = |_| NodeKey::generate(&mut rand::rngs::OsRng);
    let (ka, kb) = (key(0), key(1));
    let a = NodeEndpoint::bind("127.0.0.1:0".parse().unwrap(), &ka).unwrap();
    let b = NodeEndpoint::bind("127.0.0.1:0".parse().unwrap(), &kb).unwrap();
    let a_addr = a.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let conn = a.accept().await.unwrap().await.unwrap();
        let (mut send, mut recv) = conn.accept_bi().await.unwrap();
        let ask = recv.read_to_end(1024).await.unwrap();
        send.write_all(&ask.repeat(1000)).await.unwrap();
        send.finish().unwrap();
        let _ = conn.closed().await;
        conn.stats().path.cwnd
    });
    let conn = tokio::time::timeout(LIMIT, b.connect(a_addr, ka.id()).unwrap()).await.unwrap().unwrap();
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_all(b"symbols 0..100, please").await.unwrap();
    send.finish().unwrap();
    let answer = tokio::time::timeout(LIMIT, recv.read_to_end(1 << 20)).await.unwrap().unwrap();
    assert_eq!(answer.len(), 22_000);
    let asker = conn.stats().path.cwnd;
    conn.close(0u32.into(), b"done");
    let answerer = tokio::time::timeout(LIMIT, server).await.unwrap().unwrap();
    assert_eq!(asker, ASKER_WINDOW * INITIAL_MTU, "the asker's window is fixed");
    assert_ne!(
        answerer, asker,
        "the answerer's window is its own (queue-aware: slow start from 32 datagrams)"
    );
}
