//! A hostile peer that speaks the real protocol (QUIC bound to its node key,
//! announcements on the control group, well-formed answers) but serves corrupted
//! symbols is struck and banned; the lossy hub still completes from honest peers,
//! and what it stores is the source.

use hubcast_keys::{Fingerprint, NodeKey};
use hubcast_protocol::announce::Announcement;
use hubcast_protocol::peer_wire::{self, ChunkBitmap, PeerMessage};
use hubcast_protocol::serve::ChunkRequest;
use hubcast_protocol::wire;
use hubcast_tests::*;
use hubcast_transport::quic::NodeEndpoint;
use hubcast_transport::MulticastConfig;
use serde_json::Value;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

const DEADLINE: Duration = Duration::from_secs(180);
const SIZE: usize = 6 << 20;

/// Answer every symbol request with the right headers and garbage payloads.
async fn serve_garbage(endpoint: Arc<NodeEndpoint>, channel_tag: u64) {
    while let Some(incoming) = endpoint.accept().await {
        tokio::spawn(async move {
            let Ok(conn) = incoming.await else { return };
            while let Ok((mut send, mut recv)) = conn.accept_bi().await {
                tokio::spawn(async move {
                    let Ok(body) = recv.read_to_end(4096).await else { return };
                    let Ok(messages) = peer_wire::decode_all(&body) else { return };
                    let Some(req) = ChunkRequest::from_messages(&messages) else { return };
                    let mut out = Vec::new();
                    let mut d = Vec::new();
                    for esi in req.esis.iter() {
                        let junk = [(esi % 251) as u8; wire::DEFAULT_SYMBOL_SIZE as usize];
                        wire::encode_symbol(&mut d, channel_tag, &req.object_id, req.index, esi, &junk);
                        peer_wire::encode(&PeerMessage::Datagram(d.clone()), &mut out);
                    }
                    let _ = send.write_all(&out).await;
                    let _ = send.finish();
                });
            }
        });
    }
}

/// Claim to hold every chunk, every second.
async fn announce_everything(group: SocketAddr, a: Announcement) {
    let control = SocketAddr::new(group.ip(), group.port() + 1);
    let socket = hubcast_transport::multicast::sender(&MulticastConfig::new(control)).unwrap();
    let (datagram, listed) = a.encode();
    assert_eq!(listed, a.objects.len());
    loop {
        let _ = socket.send_to(&datagram, control).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

fn peers(s: &Value) -> &Vec<Value> {
    s["peers"].as_array().unwrap()
}

#[test]
fn a_peer_serving_corrupted_symbols_is_banned_and_the_hub_completes_from_honest_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let dir = t.join("sample");
    std::fs::create_dir_all(&dir).unwrap();
    let content = pattern(SIZE, 8);
    std::fs::write(dir.join("film.bin"), &content).unwrap();
    let fingerprint = keygen(&t.join("keys"));
    let channel_tag = fingerprint.parse::<Fingerprint>().unwrap().channel_tag();
    let group = unique_group();

    // The hostile peer, on its own runtime.
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let key = NodeKey::generate(&mut rand::rngs::OsRng);
    let hostile_id = key.id().to_string();
    let endpoint =
        rt.block_on(async { Arc::new(NodeEndpoint::bind("127.0.0.1:0".parse().unwrap(), &key).unwrap()) });
    let chunks = SIZE.div_ceil(1 << 20) as u32;
    let mut all = ChunkBitmap::new(chunks);
    (0..chunks).for_each(|i| all.set(i));
    let claim = Announcement {
        channel_tag,
        node_id: key.id().0,
        quic_port: endpoint.local_addr().unwrap().port(),
        loss: None,
        objects: vec![(archive_id("sample/film.bin", &content), all)],
    };
    rt.spawn(serve_garbage(endpoint, channel_tag));
    rt.spawn(announce_everything(group, claim));

    let lossy = |i| match i {
        2 => ["--simulate-loss", "0.2", "--loss-seed", "5"].map(String::from).to_vec(),
        _ => Vec::new(),
    };
    let (_hubs, https) = start_hubs(t, &fingerprint, group, 3, lossy);
    wait_for_peers(&https, 3, DEADLINE); // two hubs and the hostile peer
    let _bc = Daemon::spawn(
        "broadcaster",
        &bin("broadcaster"),
        &seed_args(&t.join("keys"), group, "100mbit", 1, &[&dir]),
        t,
    );
    for http in &https {
        wait_for("every hub complete", DEADLINE, || status(*http).filter(|s| all_complete(s, 1)));
    }
    let source = tree_digest(&dir);
    for i in 0..3 {
        assert_eq!(tree_digest(&t.join(format!("out-{i}/sample"))), source, "hub {i}'s copy differs");
    }
    // Peer figures refresh with each announcement (2 s).
    let lossy = wait_for("the hostile peer banned", DEADLINE, || {
        let s = status(https[2])?;
        let hostile = peers(&s).iter().find(|p| p["node_id"] == hostile_id.as_str())?.clone();
        hostile["banned"].as_bool()?.then_some((s, hostile))
    });
    let (s, hostile) = lossy;
    eprintln!("lossy hub: bytes {}, hostile peer {hostile}, drops {}", s["bytes"], s["drops"]);
    assert!(u(&hostile["strikes"]) >= 3, "{hostile}");
    assert_eq!(u(&hostile["bytes_from"]), 0, "nothing it sent was credited: {hostile}");
    assert!(u(&s["drops"]["digest_mismatch"]) > 0, "{}", s["drops"]);
    assert!(u(&s["bytes"]["peer"]) > 0, "honest peers repaired: {}", s["bytes"]);
    for p in peers(&s).iter().filter(|p| p["node_id"] != hostile_id.as_str()) {
        assert!(!p["banned"].as_bool().unwrap(), "an honest peer was banned: {p}");
    }
    rt.shutdown_background();
}
