//! The one QUIC dispatcher below the hub's peer services: it accepts peers
//! (within the endpoint's limits) and hands each stream, by its first
//! message, to its service: a chunk request to the peer server
//! ([`crate::peers`]), a feed subscription to the bridge ([`crate::bridge`]),
//! forest messages and stripe subscriptions to the forest
//! ([`crate::forest`]). The services do not import each other for this.
//!
//! Limits: QUIC caps a peer's open streams (one request each), each
//! connection has a request rate, and a peer that sends malformed requests
//! is disconnected.

use crate::bridge::{self, Feed};
use crate::forest::ForestLink;
use crate::peers::{self, Server, StreamError, FETCH_TIMEOUT, MAX_BAD_REQUESTS};
use hubcast_daemon::Bucket;
use hubcast_keys::NodeId;
use hubcast_protocol::peer_wire::{self, PeerMessage, RefuseReason};
use hubcast_transport::quic::{accept_each, NodeEndpoint};
use std::sync::{Arc, Mutex, OnceLock};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// Requests per second one peer may make (a burst of as many is allowed).
const REQUESTS_PER_SEC: f64 = 200.0;
/// A request is two small frames: a table request and a symbol request.
const MAX_REQUEST_BYTES: usize = 4096;
/// QUIC application close code for a peer that broke the protocol.
const CLOSE_MALFORMED: u32 = 1;

/// What the dispatcher hands streams to.
pub struct Services {
    /// Chunk requests.
    pub server: Arc<Server>,
    /// Feed subscriptions, when this hub is a bridge (`--bridge`) or in a
    /// stripe forest (`--stripes`).
    pub feed: Option<Arc<Feed>>,
    /// Forest messages and stripe subscriptions, when this hub is in a forest.
    forest: OnceLock<Arc<ForestLink>>,
}

impl Services {
    pub fn new(server: Arc<Server>, feed: Option<Arc<Feed>>) -> Arc<Services> {
        Arc::new(Services { server, feed, forest: OnceLock::new() })
    }

    /// This hub is in a stripe forest: forest messages and stripe
    /// subscriptions go there.
    pub fn set_forest(&self, link: Arc<ForestLink>) {
        let _ = self.forest.set(link);
    }
}

/// Accept peers until `cancel`.
pub async fn serve(endpoint: Arc<NodeEndpoint>, services: Arc<Services>, cancel: CancellationToken) {
    accept_each(&endpoint, cancel, move |conn, peer| serve_connection(conn, peer, services.clone())).await;
}

/// One peer's connection: each stream served by a task of its own, owned
/// here. When the connection task is aborted (the hub stops), so are its
/// streams: a long feed or stripe subscription being served holds the store's
/// queue open, and the hub's store worker waits for that queue to close.
async fn serve_connection(conn: quinn::Connection, peer: NodeId, services: Arc<Services>) {
    let bad = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let rate = Arc::new(Mutex::new(Bucket::new(REQUESTS_PER_SEC)));
    let mut streams = JoinSet::new();
    while let Ok((send, recv)) = conn.accept_bi().await {
        while streams.try_join_next().is_some() {}
        let (conn, services, bad, rate) = (conn.clone(), services.clone(), bad.clone(), rate.clone());
        streams.spawn(async move {
            let within_rate = rate.lock().map(|mut r| r.try_take()).unwrap_or(false);
            let mut send = send;
            let served = serve_stream(&mut send, recv, (peer, &conn), &services, within_rate).await;
            if let Err(StreamError::Malformed(_)) = &served {
                let _ = send.reset(CLOSE_MALFORMED.into());
            }
            match served {
                Ok(()) => {}
                Err(StreamError::Malformed(e)) => {
                    services.server.status.peer_message_dropped();
                    let n = bad.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                    debug!(%peer, "malformed request ({e}), {n} from this peer");
                    if n >= MAX_BAD_REQUESTS {
                        warn!(%peer, "disconnecting peer: {n} malformed requests");
                        conn.close(CLOSE_MALFORMED.into(), b"malformed requests");
                    }
                }
                Err(StreamError::Io) => {}
            }
        });
    }
}

/// A feed or stripe subscription this hub does not serve: refused, not held.
async fn refuse_not_held(send: &mut quinn::SendStream) -> Result<(), StreamError> {
    let mut out = Vec::new();
    bridge::refuse(RefuseReason::NotHeld, &mut out);
    send.write_all(&out).await.map_err(|_| StreamError::Io)?;
    send.finish().map_err(|_| StreamError::Io)
}

async fn serve_stream(
    send: &mut quinn::SendStream,
    mut recv: quinn::RecvStream,
    (peer, conn): (NodeId, &quinn::Connection),
    services: &Services,
    within_rate: bool,
) -> Result<(), StreamError> {
    let server = &services.server;
    let body = match tokio::time::timeout(FETCH_TIMEOUT, recv.read_to_end(MAX_REQUEST_BYTES)).await {
        Ok(Ok(b)) => b,
        Ok(Err(quinn::ReadToEndError::TooLong)) => {
            return Err(StreamError::Malformed("request too long".into()))
        }
        _ => return Err(StreamError::Io),
    };
    let messages = peer_wire::decode_all(&body).map_err(|e| StreamError::Malformed(e.to_string()))?;
    if let [PeerMessage::Forest(m)] = messages.as_slice() {
        let peer = hubcast_protocol::peer_wire::ForestPeer { node_id: peer.0, addr: conn.remote_address() };
        match services.forest.get() {
            Some(forest) => forest.deliver(peer, m.clone()),
            None => debug!(peer = %NodeId(peer.node_id), "a forest message, and this hub is in no forest"),
        }
        send.finish().map_err(|_| StreamError::Io)?;
        return Ok(());
    }
    if let [PeerMessage::Stripe { tree, stripes, resume }] = messages.as_slice() {
        let child_here =
            services.forest.get().filter(|f| f.stripes() == *stripes && f.is_child(*tree, &peer));
        match (child_here, &services.feed) {
            (Some(forest), Some(feed)) => {
                let stripe = Some((*tree, *stripes));
                bridge::serve_subscription(send, feed, server, peer, *resume, stripe, None).await;
                forest.child_gone(*tree, peer);
            }
            _ => refuse_not_held(send).await?,
        }
        return Ok(());
    }
    if let [PeerMessage::Subscribe { resume, udp_port }] = messages.as_slice() {
        // A port the symbols cannot be sent to leaves them on the stream.
        let udp = (*udp_port != 0)
            .then(|| bridge::UdpFeed::open(conn.clone(), *udp_port))
            .and_then(|u| u.inspect_err(|e| debug!(%peer, "the feed's UDP socket: {e}")).ok());
        // Beside the feed: the heartbeats to the subscriber's port, and its
        // nudges (loss reports) read.
        let beside = udp.as_ref().map(|u| (u.heartbeat(), u.read_reports()));
        let beside = async {
            match beside {
                Some((heartbeat, reports)) => tokio::select! {
                    _ = heartbeat => {}
                    _ = reports => {}
                },
                None => std::future::pending().await,
            }
        };
        match &services.feed {
            Some(feed) => tokio::select! {
                _ = bridge::serve_subscription(send, feed, server, peer, *resume, None, udp) => {}
                _ = beside => debug!(%peer, "the subscriber went silent, or its heartbeats could not be sent"),
            },
            None => refuse_not_held(send).await?,
        }
        let s = conn.stats();
        debug!(%peer, rtt = ?s.path.rtt, cwnd = s.path.cwnd, sent = s.path.sent_packets, lost = s.path.lost_packets,
            rx = s.udp_rx.datagrams, tx = s.udp_tx.datagrams, closed = ?conn.close_reason(),
            "a subscription's connection at its end");
        return Ok(());
    }
    peers::answer_stream(send, &messages, peer, server, within_rate).await
}
