//! The desert side: find a bridge, subscribe, hand the feed to the receive
//! loop, and move on when a bridge refuses, ends or strikes out.

use super::*;

/// What the receive loop wants of the feed task.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FeedWant {
    /// A feed is wanted (no multicast, or `--no-multicast`).
    pub on: bool,
    /// Where to ask for bridges, besides `--bridge-peer`.
    pub tracker: Option<NodeAddr>,
    /// The chunk the hub had reached: a new subscription starts there.
    pub resume: Option<(ObjectId, u32)>,
    /// Bridges never to use again (struck out).
    pub banned: Vec<NodeId>,
}

/// What the feed task tells the receive loop.
pub enum FeedEvent {
    Subscribed(NodeAddr),
    /// Datagrams from the bridge, unchecked.
    Datagrams(NodeId, Vec<Vec<u8>>),
    Ended {
        bridge: NodeId,
        why: String,
    },
    Refused(NodeId, RefuseReason),
    /// No bridge could be asked: none named, none listed.
    NoBridge,
}

/// While the loop wants a feed, keep one subscription to a bridge.
pub async fn follow(
    endpoint: Arc<NodeEndpoint>,
    fixed: Vec<NodeAddr>,
    mut want: watch::Receiver<FeedWant>,
    events: mpsc::Sender<FeedEvent>,
    cancel: CancellationToken,
) {
    // Bridges not to ask again until then.
    let mut resting: HashMap<NodeId, Instant> = HashMap::new();
    loop {
        // Checked first: the candidate loop below breaks on it without
        // awaiting, so coming round again would spin (and hold the runtime's
        // shutdown) instead of stopping.
        if cancel.is_cancelled() {
            return;
        }
        let w = want.borrow_and_update().clone();
        if !w.on {
            tokio::select! {
                r = want.changed() => if r.is_err() { return },
                _ = cancel.cancelled() => return,
            }
            continue;
        }
        let now = Instant::now();
        resting.retain(|_, until| *until > now);
        let mut candidates: Vec<NodeAddr> = fixed.clone();
        if let Some(tracker) = w.tracker {
            match ask_bridges(&endpoint, tracker).await {
                Ok(listed) => {
                    candidates.extend(listed.into_iter().filter(|b| !fixed.iter().any(|f| f.id == b.id)))
                }
                Err(e) => debug!(%tracker, "asking the tracker for bridges: {e}"),
            }
        }
        candidates.retain(|b| {
            b.id != endpoint.node_id() && !w.banned.contains(&b.id) && !resting.contains_key(&b.id)
        });
        if candidates.is_empty() {
            let _ = events.send(FeedEvent::NoBridge).await;
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = cancel.cancelled() => return,
            }
            continue;
        }
        for bridge in candidates {
            if !want.borrow().on || cancel.is_cancelled() {
                break;
            }
            let resume = want.borrow().resume;
            let (conn, recv) = match subscribe(&endpoint, bridge, resume).await {
                Ok(s) => s,
                Err(Subscribe::Refused(reason)) => {
                    resting.insert(bridge.id, Instant::now() + RETRY_REFUSED_AFTER);
                    let _ = events.send(FeedEvent::Refused(bridge.id, reason)).await;
                    continue;
                }
                Err(Subscribe::Failed(why)) => {
                    resting.insert(bridge.id, Instant::now() + RETRY_BRIDGE_AFTER);
                    debug!(%bridge, "subscribing: {why}");
                    continue;
                }
            };
            let _ = events.send(FeedEvent::Subscribed(bridge)).await;
            let why = tokio::select! {
                why = read_feed(bridge.id, recv, &events, &|| {}) => why,
                _ = wait_off(&mut want, bridge.id) => "not wanted any more".to_string(),
                _ = cancel.cancelled() => "shutting down".to_string(),
            };
            conn.close(0u32.into(), b"unsubscribed");
            resting.insert(bridge.id, Instant::now() + RETRY_BRIDGE_AFTER);
            let _ = events.send(FeedEvent::Ended { bridge: bridge.id, why }).await;
            break;
        }
    }
}

/// Until the feed is not wanted, or this bridge is banned.
async fn wait_off(want: &mut watch::Receiver<FeedWant>, bridge: NodeId) {
    loop {
        {
            let w = want.borrow_and_update();
            if !w.on || w.banned.contains(&bridge) {
                return;
            }
        }
        if want.changed().await.is_err() {
            return std::future::pending().await;
        }
    }
}

async fn ask_bridges(endpoint: &NodeEndpoint, tracker: NodeAddr) -> Result<Vec<NodeAddr>, String> {
    let ask = async {
        let conn = endpoint
            .connect(tracker.addr, tracker.id)
            .map_err(|e| e.to_string())?
            .await
            .map_err(|e| e.to_string())?;
        let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        peer_wire::encode(&PeerMessage::BridgesRequest { limit: BRIDGES_ASKED }, &mut out);
        send.write_all(&out).await.map_err(|e| e.to_string())?;
        send.finish().map_err(|e| e.to_string())?;
        let body = recv.read_to_end(4096).await.map_err(|e| e.to_string())?;
        conn.close(0u32.into(), b"");
        match peer_wire::decode_all(&body).map_err(|e| e.to_string())?.as_slice() {
            [PeerMessage::HubList(hubs)] => Ok(hubs
                .iter()
                .filter(|h| h.bridge)
                .map(|h| NodeAddr { id: NodeId(h.node_id), addr: h.addr })
                .collect()),
            _ => Err("not a hub list".to_string()),
        }
    };
    tokio::time::timeout(SUBSCRIBE_TIMEOUT, ask).await.unwrap_or_else(|_| Err("timed out".into()))
}

pub(crate) enum Subscribe {
    Refused(RefuseReason),
    Failed(String),
}

/// Connect and subscribe: the connection and the feed stream, once the bridge
/// said Subscribed.
async fn subscribe(
    endpoint: &NodeEndpoint,
    bridge: NodeAddr,
    resume: Option<(ObjectId, u32)>,
) -> Result<(quinn::Connection, quinn::RecvStream), Subscribe> {
    subscribe_with(endpoint, bridge, PeerMessage::Subscribe { resume }).await
}

/// Open a feed stream to `bridge` with `request` (a Subscribe, or a stripe
/// forest's Stripe) and read its answer.
pub(crate) async fn subscribe_with(
    endpoint: &NodeEndpoint,
    bridge: NodeAddr,
    request: PeerMessage,
) -> Result<(quinn::Connection, quinn::RecvStream), Subscribe> {
    let failed = |e: &dyn std::fmt::Display| Subscribe::Failed(e.to_string());
    let go = async {
        let connecting =
            endpoint.connect_watchful(bridge.addr, bridge.id, BRIDGE_SILENCE).map_err(|e| failed(&e))?;
        let conn = connecting.await.map_err(|e| failed(&e))?;
        let (mut send, mut recv) = conn.open_bi().await.map_err(|e| failed(&e))?;
        let mut out = Vec::new();
        peer_wire::encode(&request, &mut out);
        send.write_all(&out).await.map_err(|e| failed(&e))?;
        send.finish().map_err(|e| failed(&e))?;
        // The answer is one small frame.
        let mut buf = Vec::new();
        loop {
            match peer_wire::decode_frame(&buf) {
                Ok((PeerMessage::Subscribed, used)) if used == buf.len() => return Ok((conn, recv)),
                Ok((PeerMessage::Refuse { reason, .. }, _)) => return Err(Subscribe::Refused(reason)),
                Err(PeerWireError::Incomplete(n)) if n <= 64 => {
                    let mut more = vec![0u8; n - buf.len()];
                    recv.read_exact(&mut more).await.map_err(|e| failed(&e))?;
                    buf.extend_from_slice(&more);
                }
                _ => return Err(Subscribe::Failed("not a subscription answer".into())),
            }
        }
    };
    tokio::time::timeout(SUBSCRIBE_TIMEOUT, go)
        .await
        .unwrap_or_else(|_| Err(Subscribe::Failed("timed out".into())))
}

/// Read the feed's frames and hand their datagrams on, until the stream ends
/// or breaks. Returns why it ended.
pub(crate) async fn read_feed(
    bridge: NodeId,
    mut recv: quinn::RecvStream,
    events: &mpsc::Sender<FeedEvent>,
    heard: &(dyn Fn() + Sync),
) -> String {
    let mut buf: Vec<u8> = Vec::new();
    loop {
        // A live bridge with nothing new is silent; a dead one is noticed by
        // the connection (BRIDGE_SILENCE).
        let chunk = match recv.read_chunk(READ_CHUNK, true).await {
            Err(e) => return format!("feed broke: {e}"),
            Ok(None) => return "the bridge ended the feed".into(),
            Ok(Some(c)) => c,
        };
        buf.extend_from_slice(&chunk.bytes);
        let mut datagrams = Vec::new();
        let mut used = 0;
        let ended = loop {
            match peer_wire::decode_frame(&buf[used..]) {
                Ok((PeerMessage::Datagram(d), n)) => {
                    datagrams.push(d);
                    used += n;
                }
                Ok((PeerMessage::Refuse { reason: RefuseReason::NotHeld, .. }, _)) => {
                    break Some("the bridge no longer serves feeds".to_string())
                }
                Ok((other, _)) => break Some(format!("unexpected message in the feed: {other:?}")),
                Err(PeerWireError::Incomplete(_)) => break None,
                Err(e) => break Some(format!("malformed feed: {e}")),
            }
        };
        buf.drain(..used);
        if !datagrams.is_empty() {
            heard();
            if events.send(FeedEvent::Datagrams(bridge, datagrams)).await.is_err() {
                return "the hub is stopping".into();
            }
        }
        if let Some(why) = ended {
            return why;
        }
    }
}
