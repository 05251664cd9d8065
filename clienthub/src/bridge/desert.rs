//! The desert side's IO: ask the tracker for bridges, subscribe, hand the
//! feed to the receive loop, leave it. Which bridge, and when, is the hub
//! machine's (`hubcast_protocol::hub`); this task carries out its orders one
//! at a time and says how each ended.

use super::*;

/// What the hub machine orders the feed task.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FeedCmd {
    /// Ask this tracker for up to `limit` bridges (`leaving`: the one that
    /// feeds this hub now); done while a feed runs too.
    Ask { tracker: NodeAddr, limit: u8, leaving: Option<NodeId> },
    /// Take this bridge's feed from `resume` on, until told to leave.
    Subscribe { bridge: NodeAddr, resume: Option<(ObjectId, u32)> },
    /// Leave the bridge's feed.
    Unsubscribe,
    /// Ask the bridge feeding this hub to feed these chunks again.
    Refeed(Vec<(ObjectId, u32)>),
}

/// What the feed task tells the receive loop.
pub enum FeedEvent {
    /// The tracker's bridges (none when asking failed).
    Bridges(Vec<NodeAddr>),
    Subscribed(NodeAddr),
    /// Datagrams from the bridge, unchecked.
    Datagrams(NodeId, Vec<Vec<u8>>),
    Ended {
        bridge: NodeId,
        why: String,
    },
    Refused(NodeId, RefuseReason),
    /// The bridge could not be reached, or did not answer as a bridge.
    Failed(NodeId, String),
}

/// Carry out the machine's feed orders until cancelled.
pub async fn follow(
    endpoint: Arc<NodeEndpoint>,
    mut cmds: mpsc::UnboundedReceiver<FeedCmd>,
    events: mpsc::Sender<FeedEvent>,
    cancel: CancellationToken,
) {
    // Symbols come as datagrams until a bridge's never arrive (a NAT or a
    // firewall on the way); then on the stream.
    let mut udp = true;
    loop {
        let cmd = tokio::select! {
            cmd = cmds.recv() => match cmd {
                Some(cmd) => cmd,
                None => return,
            },
            _ = cancel.cancelled() => return,
        };
        let event = tokio::select! {
            event = carry_out(&endpoint, cmd, &mut cmds, &events, &cancel, &mut udp) => event,
            _ = cancel.cancelled() => return,
        };
        if let Some(event) = event {
            if events.send(event).await.is_err() {
                return;
            }
        }
    }
}

/// One order, to its end: what to tell the loop then. `udp`: whether to
/// ask for the symbols as datagrams (cleared when they never come).
async fn carry_out(
    endpoint: &NodeEndpoint,
    cmd: FeedCmd,
    cmds: &mut mpsc::UnboundedReceiver<FeedCmd>,
    events: &mpsc::Sender<FeedEvent>,
    cancel: &CancellationToken,
    udp: &mut bool,
) -> Option<FeedEvent> {
    let (bridge, resume) = match cmd {
        FeedCmd::Ask { tracker, limit, leaving } => {
            return Some(FeedEvent::Bridges(ask_bridges(endpoint, tracker, limit, leaving).await))
        }
        // Nothing is held between subscriptions, nor asked of no bridge.
        FeedCmd::Unsubscribe | FeedCmd::Refeed(_) => return None,
        FeedCmd::Subscribe { bridge, resume } => (bridge, resume),
    };
    let socket = udp.then(|| feed_socket(endpoint)).flatten();
    let port = socket.as_ref().and_then(|s| s.local_addr().ok()).map_or(0, |a| a.port());
    // Over UDP the bridge's heartbeats tell it alive (`read_udp`); QUIC's
    // idle timeout is then the backstop only.
    let idle = if socket.is_some() { FEED_QUIC_IDLE } else { BRIDGE_SILENCE };
    let (conn, recv) = match subscribe(endpoint, bridge, resume, port, idle).await {
        Ok(s) => s,
        Err(Subscribe::Refused(reason)) => return Some(FeedEvent::Refused(bridge.id, reason)),
        Err(Subscribe::Failed(why)) => return Some(FeedEvent::Failed(bridge.id, why)),
    };
    events.send(FeedEvent::Subscribed(bridge)).await.ok()?;
    let loss = AtomicU8::new(udp::NUDGE_UNKNOWN);
    let symbols = async {
        match &socket {
            Some(s) => {
                let silence = (udp::UDP_SILENCE, BRIDGE_SILENCE);
                let symbols = |d| FeedEvent::Datagrams(bridge.id, d);
                read_udp(s, bridge.addr.ip(), silence, &loss, events, symbols).await
            }
            None => std::future::pending().await,
        }
    };
    let why = tokio::select! {
        why = read_feed(recv, events, |d| FeedEvent::Datagrams(bridge.id, d)) => why,
        _ = nudge(&conn, &loss) => unreachable!("nudging never ends"),
        why = symbols => why.unwrap_or_else(|blocked| {
            info!(%bridge, "{blocked}");
            *udp = false;
            blocked
        }),
        _ = until_unsubscribed(endpoint, &conn, cmds, events) => "not wanted any more".to_string(),
        _ = cancel.cancelled() => "shutting down".to_string(),
    };
    let s = conn.stats();
    debug!(%bridge, rtt = ?s.path.rtt, cwnd = s.path.cwnd, sent = s.path.sent_packets, lost = s.path.lost_packets,
        rx = s.udp_rx.datagrams, tx = s.udp_tx.datagrams, pings = s.frame_tx.ping, "the feed's connection at its end");
    conn.close(0u32.into(), b"unsubscribed");
    Some(FeedEvent::Ended { bridge: bridge.id, why })
}

/// Keep the feed's connection heard both ways: a one-byte QUIC datagram
/// every [`NUDGE_EVERY`], which the bridge acknowledges, carrying the loss
/// of the feed's symbols (`loss`, percent, or `udp::NUDGE_UNKNOWN`). QUIC's
/// own keep-alive is one PING per silence, then probe timeouts that double:
/// on a link losing half its packets each way, feeds went
/// [`BRIDGE_SILENCE`] without a packet and were dropped several times a
/// minute in the lab at 50% loss. Nothing, when the bridge takes no
/// datagrams.
pub(super) async fn nudge(conn: &quinn::Connection, loss: &AtomicU8) {
    let mut every = tokio::time::interval(NUDGE_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let report = bytes::Bytes::copy_from_slice(&[loss.load(Relaxed)]);
        if conn.send_datagram(report).is_err() {
            return std::future::pending().await;
        }
    }
}

/// A socket for a feed's symbols, on the address the hub's QUIC endpoint
/// has; none (the symbols then come on the stream) when it cannot be had.
fn feed_socket(endpoint: &NodeEndpoint) -> Option<tokio::net::UdpSocket> {
    let ip = endpoint.local_addr().map(|a| a.ip());
    ip.and_then(|ip| hubcast_transport::udp::bind_any_port(ip, udp::RECEIVE_BUFFER))
        .inspect_err(|e| debug!("no UDP socket for the feed's symbols, taking them on the stream: {e}"))
        .ok()
}

/// Until the machine says to leave the feed (or is gone), answering its asks
/// of the tracker meanwhile, and passing its asks to feed chunks again to
/// the bridge (QUIC datagrams, two copies: the machine asks again after
/// its NAK interval if the chunk does not come).
async fn until_unsubscribed(
    endpoint: &NodeEndpoint,
    conn: &quinn::Connection,
    cmds: &mut mpsc::UnboundedReceiver<FeedCmd>,
    events: &mpsc::Sender<FeedEvent>,
) {
    loop {
        match cmds.recv().await {
            Some(FeedCmd::Unsubscribe) | None => return,
            Some(FeedCmd::Refeed(chunks)) => {
                debug!(chunks = chunks.len(), "asking the bridge to feed chunks again");
                for ask in udp::refeed_asks(&chunks) {
                    for _ in 0..2 {
                        if let Err(e) = conn.send_datagram(ask.clone()) {
                            debug!("asking the bridge to feed chunks again: {e}");
                        }
                    }
                }
            }
            Some(FeedCmd::Ask { tracker, limit, leaving }) => {
                let listed = ask_bridges(endpoint, tracker, limit, leaving).await;
                if events.send(FeedEvent::Bridges(listed)).await.is_err() {
                    return;
                }
            }
            Some(other) => debug!(?other, "a feed order while fed; ignored"),
        }
    }
}

/// Attempts (tracker asks, subscriptions) that may be under way at once: a
/// new one starts every [`RACE_STAGGER`] while none has answered, and the
/// first answer wins. At 50% loss each way a handshake that lost its first
/// flights waits out probe timeouts that double (0.3, 0.6, 1.2 s, ...): one
/// tracker ask at a time timed out four times in a row in the lab, and a
/// desert hub took its feed 35-50 s after it wanted one; a hub moving to a
/// less loaded bridge went 14 s without a feed.
const RACERS: u32 = 3;
const RACE_STAGGER: Duration = Duration::from_secs(2);

/// Run `attempt` as [`RACERS`] staggered racers, each within `each`; the
/// first `Ok` wins and the others are dropped (their connections close).
/// The error is the last racer's.
pub(super) async fn race<T, F, Fut>(each: Duration, attempt: F) -> Result<T, String>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let racers = (0..RACERS).map(|i| {
        let go = attempt();
        Box::pin(async move {
            tokio::time::sleep(RACE_STAGGER * i).await;
            tokio::time::timeout(each, go).await.unwrap_or_else(|_| Err("timed out".into()))
        })
    });
    futures_util::future::select_ok(racers).await.map(|(won, _rest)| won)
}

/// The tracker's bridges (none when asking failed, which is logged).
async fn ask_bridges(
    endpoint: &NodeEndpoint,
    tracker: NodeAddr,
    limit: u8,
    leaving: Option<NodeId>,
) -> Vec<NodeAddr> {
    race(SUBSCRIBE_TIMEOUT, || ask_once(endpoint, tracker, limit, leaving)).await.unwrap_or_else(|e| {
        debug!(%tracker, "asking the tracker for bridges: {e}");
        Vec::new()
    })
}

async fn ask_once(
    endpoint: &NodeEndpoint,
    tracker: NodeAddr,
    limit: u8,
    leaving: Option<NodeId>,
) -> Result<Vec<NodeAddr>, String> {
    let ask = async {
        let conn = endpoint
            .connect(tracker.addr, tracker.id)
            .map_err(|e| e.to_string())?
            .await
            .map_err(|e| e.to_string())?;
        let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        peer_wire::encode(&PeerMessage::BridgesRequest { limit, leaving: leaving.map(|b| b.0) }, &mut out);
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
    ask.await
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
    udp_port: u16,
    idle: Duration,
) -> Result<(quinn::Connection, quinn::RecvStream), Subscribe> {
    subscribe_with(endpoint, bridge, PeerMessage::Subscribe { resume, udp_port }, idle).await
}

/// Open a feed stream to `bridge` with `request` (a Subscribe, or a stripe
/// forest's Stripe) and read its answer: racing handshakes ([`race`]), the
/// first answer (a refusal too) wins.
pub(crate) async fn subscribe_with(
    endpoint: &NodeEndpoint,
    bridge: NodeAddr,
    request: PeerMessage,
    idle: Duration,
) -> Result<(quinn::Connection, quinn::RecvStream), Subscribe> {
    let attempt = || async {
        match subscribe_once(endpoint, bridge, request.clone(), idle).await {
            Err(Subscribe::Failed(why)) => Err(why),
            answered => Ok(answered),
        }
    };
    race(SUBSCRIBE_TIMEOUT, attempt).await.unwrap_or_else(|why| Err(Subscribe::Failed(why)))
}

/// One handshake and request; the connection and the feed stream once the
/// bridge said Subscribed.
async fn subscribe_once(
    endpoint: &NodeEndpoint,
    bridge: NodeAddr,
    request: PeerMessage,
    idle: Duration,
) -> Result<(quinn::Connection, quinn::RecvStream), Subscribe> {
    let failed = |e: &dyn std::fmt::Display| Subscribe::Failed(e.to_string());
    let connecting = endpoint.connect_watchful(bridge.addr, bridge.id, idle).map_err(|e| failed(&e))?;
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
}

/// Read the feed's frames and hand their datagrams on, until the stream ends
/// or breaks. Returns why it ended.
pub(crate) async fn read_feed<E>(
    mut recv: quinn::RecvStream,
    events: &mpsc::Sender<E>,
    datagrams_event: impl Fn(Vec<Vec<u8>>) -> E,
) -> String {
    let mut buf: Vec<u8> = Vec::new();
    loop {
        // A live bridge with nothing new is silent; a dead one is noticed by
        // the connection (BRIDGE_SILENCE).
        let chunk = match recv.read_chunk(READ_CHUNK, true).await {
            Err(quinn::ReadError::ConnectionLost(why)) => {
                return format!("feed broke: connection lost: {why}")
            }
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
        if !datagrams.is_empty() && events.send(datagrams_event(datagrams)).await.is_err() {
            return "the hub is stopping".into();
        }
        if let Some(why) = ended {
            return why;
        }
    }
}
