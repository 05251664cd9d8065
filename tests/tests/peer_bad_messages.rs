//! A peer that sends malformed requests is disconnected; the hub keeps serving
//! others, and a request for something it does not hold gets a typed refusal.

use hubcast_keys::{decode_hex, NodeId, NodeKey};
use hubcast_protocol::peer_wire::{self, EsiRanges, PeerMessage, RefuseReason};
use hubcast_protocol::serve::ChunkRequest;
use hubcast_protocol::ObjectId;
use hubcast_tests::*;
use hubcast_transport::quic::NodeEndpoint;
use std::net::SocketAddr;
use std::time::Duration;

const DEADLINE: Duration = Duration::from_secs(60);

async fn exchange(conn: &quinn::Connection, bytes: &[u8]) -> Option<Vec<u8>> {
    let (mut send, mut recv) = conn.open_bi().await.ok()?;
    send.write_all(bytes).await.ok()?;
    send.finish().ok()?;
    recv.read_to_end(1 << 20).await.ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_close_the_connection_and_the_hub_keeps_serving() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let fingerprint = keygen(&t.join("keys"));
    let http = free_port();
    let quic: SocketAddr = free_udp_port();
    let mut args = hub_args(&fingerprint, unique_group(), &t.join("store"), &t.join("out"), http);
    args.extend(["--peer-listen".into(), quic.to_string()]);
    let hub = Daemon::spawn("hub", &bin("clienthub"), &args, t);
    let s = tokio::task::spawn_blocking(move || wait_for("hub to answer", DEADLINE, || status(http)))
        .await
        .unwrap();
    let hub_id = NodeId(decode_hex(s["node_id"].as_str().unwrap()).unwrap().try_into().unwrap());

    let connect = |key: NodeKey| async move {
        let ep = NodeEndpoint::bind("127.0.0.1:0".parse().unwrap(), &key).unwrap();
        let conn = tokio::time::timeout(DEADLINE, ep.connect(quic, hub_id).unwrap()).await.unwrap().unwrap();
        (ep, conn)
    };

    // A rude peer: garbage, an unknown message type, then a frame that claims 1 GiB.
    let (_ep, rude) = connect(NodeKey::generate(&mut rand::rngs::OsRng)).await;
    let garbage: [&[u8]; 3] = [b"hello?", &[0, 0, 0, 1, 99], &(1u32 << 30).to_be_bytes()];
    for bytes in garbage {
        let answer = tokio::time::timeout(DEADLINE, exchange(&rude, bytes)).await.unwrap();
        assert!(answer.is_none_or(|a| a.is_empty()), "no answer to garbage");
    }
    let reason = tokio::time::timeout(DEADLINE, rude.closed()).await.expect("the hub closes the connection");
    assert!(
        matches!(&reason, quinn::ConnectionError::ApplicationClosed(c) if c.error_code == quinn::VarInt::from_u32(1)),
        "{reason:?}"
    );

    // A polite peer asks for a chunk the hub does not hold: a typed refusal.
    let (_ep2, polite) = connect(NodeKey::generate(&mut rand::rngs::OsRng)).await;
    let req = ChunkRequest {
        object_id: ObjectId([7; 32]),
        index: 0,
        table: Some(1),
        esis: EsiRanges::new(vec![(0, 10)]).unwrap(),
    };
    let mut out = Vec::new();
    for m in req.to_messages() {
        peer_wire::encode(&m, &mut out);
    }
    let answer = tokio::time::timeout(DEADLINE, exchange(&polite, &out))
        .await
        .unwrap()
        .expect("the hub answers a well-formed request");
    let (m, used) = peer_wire::decode_frame(&answer).unwrap();
    assert_eq!(used, answer.len());
    assert_eq!(m, PeerMessage::Refuse { object_id: req.object_id, chunk: 0, reason: RefuseReason::NotHeld });

    let s = tokio::task::spawn_blocking(move || {
        wait_for("the drops to show", DEADLINE, || {
            status(http).filter(|s| u(&s["repair"]["bad_peer_messages"]) >= 3)
        })
    })
    .await
    .unwrap();
    assert_eq!(u(&s["repair"]["bad_peer_messages"]), 3, "{}", s["repair"]);
    drop(hub);
}
