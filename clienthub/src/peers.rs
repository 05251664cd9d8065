//! Peer repair in the hub: serving peers over QUIC, and fetching from them.
//!
//! The hub machine (`hubcast_protocol::hub::Hub`, driven by the receive
//! loop) decides what to ask of whom and keeps the one strike ledger. What
//! waits on the network runs in tasks:
//! - [`Server`] answers the chunk requests the dispatcher (the `dispatch` module)
//!   hands it, each stream one request, from a decoded chunk (cache, else the
//!   store) or, for a chunk still being collected, by the receive loop from
//!   what it holds verified ([`PartialAsk`]);
//! - [`Fetcher::fetch`] runs one repair request and hands the datagrams back to
//!   the loop, which checks them like multicast before anything is kept.
//!
//! Limits on the serving side: one upload rate for all peers
//! (`--upload-rate`); the dispatcher's per-connection limits before that.

use crate::status::StatusBoard;
use crate::store_worker::{FromStore, StoreJob, StoreRead};
use hubcast_daemon::Bucket;
use hubcast_keys::{NodeAddr, NodeId};
use hubcast_protocol::peer_wire::{
    self, Answer, ChunkBitmap, DatagramFrames, ListedHub, PeerMessage, RefuseReason,
};
use hubcast_protocol::repair::{Nak, Outcome};
use hubcast_protocol::serve::{answer_complete, ChunkRequest, ChunkServer};
use hubcast_protocol::wire::MAX_DATAGRAM;
use hubcast_protocol::ObjectId;
use hubcast_transport::quic::NodeEndpoint;
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tracing::debug;

/// One fetch, connection included.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest an answer waits for the upload cap: well within the asker's
/// [`FETCH_TIMEOUT`]. An answer that would wait longer is refused as busy.
const MAX_PACED_WAIT: Duration = Duration::from_millis(800);
/// Malformed requests from one connection before it is closed.
pub const MAX_BAD_REQUESTS: u32 = 3;
/// Decoded chunks kept ready to serve.
const SERVE_CACHE: usize = 16;
/// Copies of each datagram that carries NAKs or a loss report, and the gap
/// between them (losses on a lossy link come in bursts of a few packets).
pub const NOTE_COPIES: usize = 3;
const NOTE_COPY_GAP: Duration = Duration::from_millis(15);

/// Whole frames packed into datagrams of at most `max` bytes, in order;
/// `None` when a frame alone is larger.
fn pack_frames(messages: &[PeerMessage], max: usize) -> Option<Vec<bytes::Bytes>> {
    let mut out: Vec<bytes::Bytes> = Vec::new();
    let mut cur = Vec::new();
    for m in messages {
        let mut frame = Vec::new();
        peer_wire::encode(m, &mut frame);
        if frame.len() > max {
            return None;
        }
        if cur.len() + frame.len() > max {
            out.push(std::mem::take(&mut cur).into());
        }
        cur.extend_from_slice(&frame);
    }
    if !cur.is_empty() {
        out.push(cur.into());
    }
    Some(out)
}

/// A peer's request for a chunk the hub is still collecting: the receive loop
/// answers it from the symbols it holds verified.
pub struct PartialAsk {
    pub req: ChunkRequest,
    pub reply: oneshot::Sender<Result<Vec<Vec<u8>>, RefuseReason>>,
}

type ServerEntry = ((ObjectId, u32), Arc<ChunkServer>);

/// What the serving tasks share.
pub struct Server {
    /// Most recently built first.
    cache: Mutex<VecDeque<ServerEntry>>,
    store: mpsc::Sender<StoreJob>,
    partial: mpsc::Sender<PartialAsk>,
    upload: Mutex<Bucket>,
    served: Mutex<HashMap<NodeId, u64>>,
    /// Verified bytes each peer served us: the other half of its score.
    received: Mutex<HashMap<NodeId, u64>>,
    /// Requests refused while the upload was busy, because the peer only takes.
    takers_deferred: std::sync::atomic::AtomicU64,
    /// Answers held back to keep within the upload cap, and for how long in all.
    paced: std::sync::atomic::AtomicU64,
    paced_micros: std::sync::atomic::AtomicU64,
    /// Answers refused as busy because the cap would hold them too long.
    upload_busy: std::sync::atomic::AtomicU64,
    pub(crate) status: StatusBoard,
}

/// A peer that took more than this from us...
const TAKER_GRACE: u64 = 4 << 20;
/// ...and more than this many times what it gave, is served last when the
/// upload is busy: asked to go elsewhere (refused as busy) rather than queued.
const TAKER_RATIO: u64 = 4;

/// The send/receive score: whether a peer only takes.
fn takes_only(served_to: u64, received_from: u64) -> bool {
    served_to > TAKER_GRACE && served_to > received_from.saturating_mul(TAKER_RATIO)
}

impl Server {
    /// `upload_bytes_per_sec`: the cap on all serving together.
    pub fn new(
        store: mpsc::Sender<StoreJob>,
        partial: mpsc::Sender<PartialAsk>,
        upload_bytes_per_sec: f64,
        status: StatusBoard,
    ) -> Arc<Server> {
        Arc::new(Server {
            cache: Mutex::new(VecDeque::new()),
            store,
            partial,
            upload: Mutex::new(Bucket::new(upload_bytes_per_sec.max(1500.0))),
            served: Mutex::new(HashMap::new()),
            received: Mutex::new(HashMap::new()),
            takers_deferred: Default::default(),
            paced: Default::default(),
            paced_micros: Default::default(),
            upload_busy: Default::default(),
            status,
        })
    }

    /// Verified bytes `peer` served us: its credit in the send/receive score,
    /// and its `bytes_from` in the status.
    pub fn credit(&self, peer: &NodeId, bytes: u64) {
        if let Ok(mut r) = self.received.lock() {
            *r.entry(*peer).or_default() += bytes;
        }
    }

    /// Requests refused while busy because the peer only takes.
    pub fn takers_deferred(&self) -> u64 {
        self.takers_deferred.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Answers held back by the upload cap, the time they waited in all (ms),
    /// and answers refused as busy because the cap would hold them too long.
    pub fn paced(&self) -> (u64, u64, u64) {
        let load = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
        (load(&self.paced), load(&self.paced_micros) / 1000, load(&self.upload_busy))
    }

    /// Whether to serve `req` from `peer` now: always when the upload has
    /// room for its answer; when it is busy, only peers that also serve us
    /// wait their turn. Decided before the answer is made.
    fn admit(&self, peer: &NodeId, req: &ChunkRequest) -> bool {
        // At most this: every answer datagram fits MAX_DATAGRAM.
        let bytes = (req.esis.count() as usize + req.table.map_or(0, |p| 1 + p.count_ones() as usize))
            * hubcast_protocol::wire::MAX_DATAGRAM;
        let busy = self.upload.lock().map(|mut b| !b.wait_for(bytes as f64).is_zero()).unwrap_or(false);
        if !busy {
            return true;
        }
        let to = self.served.lock().map(|s| s.get(peer).copied().unwrap_or(0)).unwrap_or(0);
        let from = self.received.lock().map(|r| r.get(peer).copied().unwrap_or(0)).unwrap_or(0);
        if takes_only(to, from) {
            self.takers_deferred.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return false;
        }
        true
    }

    /// Bytes served, per peer.
    pub fn served(&self) -> HashMap<NodeId, u64> {
        self.served.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Verified bytes received, per peer.
    pub fn received(&self) -> HashMap<NodeId, u64> {
        self.received.lock().map(|r| r.clone()).unwrap_or_default()
    }

    fn cached(&self, key: (ObjectId, u32)) -> Option<Arc<ChunkServer>> {
        let cache = self.cache.lock().ok()?;
        cache.iter().find(|(k, _)| *k == key).map(|(_, s)| s.clone())
    }

    /// Wait until `bytes` fit the upload cap, and take them. Feeds share the
    /// cap with repair answers.
    pub async fn pace(&self, bytes: usize) {
        let wait = self.upload.lock().map(|mut b| b.take(bytes as f64)).unwrap_or_default();
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }

    pub(crate) async fn answer(&self, req: &ChunkRequest) -> Result<Vec<Vec<u8>>, RefuseReason> {
        let key = (req.object_id, req.index);
        let server = match self.cached(key) {
            Some(server) => Some(server),
            None => match self.load(req).await {
                Some(FromStore::Answer(datagrams)) => return Ok(datagrams),
                Some(FromStore::Chunk(server)) => {
                    let server: Arc<ChunkServer> = Arc::from(server);
                    if let Ok(mut cache) = self.cache.lock() {
                        cache.push_front((key, server.clone()));
                        cache.truncate(SERVE_CACHE);
                    }
                    Some(server)
                }
                None => None,
            },
        };
        if let Some(server) = server {
            // Hashing a chunk, or encoding it for repair symbols, is CPU work:
            // off the async threads.
            let req = req.clone();
            return tokio::task::spawn_blocking(move || answer_complete(&req, &server))
                .await
                .unwrap_or(Err(RefuseReason::Busy));
        }
        let (reply, partial) = oneshot::channel();
        if self.partial.send(PartialAsk { req: req.clone(), reply }).await.is_err() {
            return Err(RefuseReason::Busy);
        }
        partial.await.unwrap_or(Err(RefuseReason::Busy))
    }

    /// What the store has to answer `req` ([`read_to_serve`]).
    async fn load(&self, req: &ChunkRequest) -> Option<FromStore> {
        let (reply, stored) = oneshot::channel();
        self.store.send(StoreJob::Read(StoreRead { req: req.clone(), reply })).await.ok()?;
        stored.await.ok()?
    }
}

/// Answer one peer's chunk request on its stream (`messages`, as read):
/// within the peer's request rate and the upload cap, from a decoded chunk
/// (cache, else the store) or what the receive loop holds verified.
pub(crate) async fn answer_stream(
    send: &mut quinn::SendStream,
    messages: &[PeerMessage],
    peer: NodeId,
    server: &Server,
    within_rate: bool,
) -> Result<(), StreamError> {
    let Some(req) = ChunkRequest::from_messages(messages) else {
        return Err(StreamError::Malformed("not a chunk request".into()));
    };
    let result = if !within_rate {
        Err(RefuseReason::OverLimit)
    } else if !server.admit(&peer, &req) {
        Err(RefuseReason::Busy)
    } else {
        server.answer(&req).await
    };
    let mut out = Vec::new();
    if let Ok(datagrams) = &result {
        out.reserve(datagrams.iter().map(|d| d.len() + 5).sum());
        for d in datagrams {
            peer_wire::encode_datagram(d, &mut out);
        }
    }
    // Within the upload cap: wait for the tokens, unless answers already
    // queued would hold this one past the asker's patience; then it is refused
    // as busy and asks elsewhere, rather than getting bytes it no longer waits
    // for. (An answer larger than a burst waits its own share regardless.)
    let mut result = result;
    let wait = match server.upload.lock() {
        Ok(mut bucket) if result.is_ok() => {
            let len = out.len() as f64;
            let own = Duration::from_secs_f64(((len - bucket.rate()) / bucket.rate()).max(0.0));
            if bucket.wait_for(len).saturating_sub(own) > MAX_PACED_WAIT {
                server.upload_busy.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                result = Err(RefuseReason::Busy);
                out.clear();
                Duration::ZERO
            } else {
                bucket.take(out.len() as f64)
            }
        }
        // A refusal is a few bytes, sent at once.
        _ => Duration::ZERO,
    };
    if let Err(reason) = &result {
        let refuse = PeerMessage::Refuse { object_id: req.object_id, chunk: req.index, reason: *reason };
        peer_wire::encode(&refuse, &mut out);
    }
    if !wait.is_zero() {
        use std::sync::atomic::Ordering::Relaxed;
        server.paced.fetch_add(1, Relaxed);
        server.paced_micros.fetch_add(wait.as_micros().min(u128::from(u64::MAX)) as u64, Relaxed);
        tokio::time::sleep(wait).await;
    }
    send.write_all(&out).await.map_err(|_| StreamError::Io)?;
    send.finish().map_err(|_| StreamError::Io)?;
    if result.is_ok() {
        if let Ok(mut served) = server.served.lock() {
            *served.entry(peer).or_default() += out.len() as u64;
        }
    }
    if matches!(result, Err(RefuseReason::Invalid)) {
        return Err(StreamError::Malformed("ESI or page beyond the chunk".into()));
    }
    Ok(())
}

/// How serving one stream went wrong.
pub(crate) enum StreamError {
    Malformed(String),
    Io,
}

/// Runs repair requests against peers, one QUIC connection per peer.
pub struct Fetcher {
    endpoint: Arc<NodeEndpoint>,
    /// Per peer, so a slow handshake holds up only requests to that peer.
    conns: Mutex<HashMap<NodeId, Arc<tokio::sync::Mutex<Option<quinn::Connection>>>>>,
}

impl Fetcher {
    pub fn new(endpoint: Arc<NodeEndpoint>) -> Arc<Fetcher> {
        Arc::new(Fetcher { endpoint, conns: Mutex::new(HashMap::new()) })
    }

    async fn connection(&self, peer: NodeId, addr: SocketAddr) -> Option<quinn::Connection> {
        let slot = self.conns.lock().ok()?.entry(peer).or_default().clone();
        let mut slot = slot.lock().await;
        if let Some(c) = slot.as_ref().filter(|c| c.close_reason().is_none()) {
            return Some(c.clone());
        }
        let conn = match self.endpoint.connect(addr, peer) {
            Ok(connecting) => connecting.await.ok()?,
            Err(e) => {
                debug!(%peer, "connect: {e}");
                return None;
            }
        };
        *slot = Some(conn.clone());
        Some(conn)
    }

    /// The smoothed RTT of each open connection (those busy connecting are
    /// left out).
    pub fn rtts(&self) -> HashMap<NodeId, Duration> {
        let Ok(conns) = self.conns.lock() else { return HashMap::new() };
        conns
            .iter()
            .filter_map(|(id, slot)| {
                let slot = slot.try_lock().ok()?;
                let conn = slot.as_ref().filter(|c| c.close_reason().is_none())?;
                Some((*id, conn.rtt()))
            })
            .collect()
    }

    /// Forget peers that left the table.
    pub fn retain(&self, keep: impl Fn(&NodeId) -> bool) {
        if let Ok(mut conns) = self.conns.lock() {
            conns.retain(|id, _| keep(id));
        }
    }

    /// One stream to `peer`: send `messages`, finish, and decode the answer
    /// (at most `limit` bytes), all within [`FETCH_TIMEOUT`].
    async fn exchange(
        &self,
        peer: NodeId,
        addr: SocketAddr,
        messages: impl IntoIterator<Item = PeerMessage>,
        limit: usize,
    ) -> Result<Vec<PeerMessage>, Outcome> {
        let body = self.exchange_raw(peer, addr, messages, limit).await?;
        peer_wire::decode_all(&body).map_err(|_| Outcome::Failed)
    }

    /// [`Fetcher::exchange`], the answer's bytes undecoded.
    async fn exchange_raw(
        &self,
        peer: NodeId,
        addr: SocketAddr,
        messages: impl IntoIterator<Item = PeerMessage>,
        limit: usize,
    ) -> Result<Vec<u8>, Outcome> {
        let mut out = Vec::new();
        for m in messages {
            peer_wire::encode(&m, &mut out);
        }
        let exchange = async {
            let conn = self.connection(peer, addr).await.ok_or(Outcome::Failed)?;
            let (mut send, mut recv) = conn.open_bi().await.map_err(|_| Outcome::Failed)?;
            send.write_all(&out).await.map_err(|_| Outcome::Failed)?;
            send.finish().map_err(|_| Outcome::Failed)?;
            recv.read_to_end(limit).await.map_err(|_| Outcome::Failed)
        };
        tokio::time::timeout(FETCH_TIMEOUT, exchange).await.unwrap_or(Err(Outcome::Failed))
    }

    /// One message to `peer` that expects no answer (a forest message).
    pub async fn tell(&self, peer: NodeId, addr: SocketAddr, message: PeerMessage) -> Result<(), Outcome> {
        self.exchange_raw(peer, addr, [message], 0).await.map(|_| ())
    }

    /// Send NAKs to the origin, each with this hub's multicast loss (whole
    /// percent), as QUIC datagrams in [`NOTE_COPIES`] copies; returns how many
    /// it refused (none is known then: a datagram has no answer). An origin
    /// that takes no datagrams gets them on a stream, and answers refusals.
    pub async fn send_naks(&self, origin: NodeAddr, naks: &[Nak], loss: u8) -> Result<u64, Outcome> {
        let messages: Vec<PeerMessage> = naks
            .iter()
            .map(|n| PeerMessage::Nak {
                object_id: n.object_id,
                chunk: n.index,
                missing: n.missing.clamp(1, peer_wire::MAX_ESIS_PER_REQUEST) as u16,
                loss: loss.min(100),
                held: n.held.clone(),
            })
            .collect();
        if self.send_notes(origin, &messages).await? {
            return Ok(0);
        }
        let answers = self.exchange(origin.id, origin.addr, messages, naks.len() * 64).await?;
        Ok(answers.iter().filter(|m| matches!(m, PeerMessage::Refuse { .. })).count() as u64)
    }

    /// Report this hub's multicast loss (whole percent) and what it made of
    /// the last round under `--rate auto` to the origin.
    pub async fn report_loss(
        &self,
        origin: NodeAddr,
        loss: u8,
        verdict: hubcast_protocol::rate::Verdict,
    ) -> Result<(), Outcome> {
        let loss = if verdict.is_clear() { loss.clamp(1, 100) } else { loss.min(100) };
        let report = PeerMessage::LossReport { loss, verdict };
        if self.send_notes(origin, std::slice::from_ref(&report)).await? {
            return Ok(());
        }
        self.exchange(origin.id, origin.addr, [report], 64).await.map(|_| ())
    }

    /// Messages that need no answer (NAKs, loss reports), packed whole into
    /// QUIC datagrams and sent [`NOTE_COPIES`] times, [`NOTE_COPY_GAP`] apart:
    /// at heavy loss each way a stream's exchange waits out the connection's
    /// loss recovery in both directions (at 50% the lab's NAK streams failed
    /// 9 times in 10), where one of three datagrams gets through 7 times in 8.
    /// `Ok(false)`: the connection takes no datagrams this large; use a stream.
    async fn send_notes(&self, to: NodeAddr, messages: &[PeerMessage]) -> Result<bool, Outcome> {
        let conn = tokio::time::timeout(FETCH_TIMEOUT, self.connection(to.id, to.addr))
            .await
            .ok()
            .flatten()
            .ok_or(Outcome::Failed)?;
        let Some(datagrams) = conn.max_datagram_size().and_then(|max| pack_frames(messages, max)) else {
            return Ok(false);
        };
        for copy in 0..NOTE_COPIES {
            if copy > 0 {
                tokio::time::sleep(NOTE_COPY_GAP).await;
            }
            for d in &datagrams {
                conn.send_datagram(d.clone()).map_err(|_| Outcome::Failed)?;
            }
        }
        Ok(true)
    }

    /// Register with the tracker, with what this hub holds complete, and
    /// whether it is a bridge (serving `feeds` now) and in the stripe forest.
    /// `trust`: the versions of the root and of the revocation list held.
    /// The answer: the root's statements the hub lacks, as datagrams (not
    /// trusted here: the receiver checks them).
    pub async fn register(
        &self,
        tracker: NodeAddr,
        holdings: Vec<(ObjectId, ChunkBitmap)>,
        (bridge, forest, feeds): (bool, bool, u16),
        (root_version, revocations_version): (u64, u64),
    ) -> Result<Vec<Vec<u8>>, Outcome> {
        let maps = holdings.into_iter().map(|(object_id, complete)| PeerMessage::HaveMap {
            object_id,
            complete,
            partial: Vec::new(),
        });
        let register = PeerMessage::Register { bridge, forest, feeds, root_version, revocations_version };
        let messages = std::iter::once(register).chain(maps);
        let limit = peer_wire::MAX_REGISTER_STATEMENTS * (MAX_DATAGRAM + 5);
        let answer = self.exchange(tracker.id, tracker.addr, messages, limit).await?;
        let statements = answer.into_iter().filter_map(|m| match m {
            PeerMessage::Datagram(d) => Some(d),
            _ => None,
        });
        Ok(statements.take(peer_wire::MAX_REGISTER_STATEMENTS).collect())
    }

    /// Ask the tracker for up to `limit` hubs holding a chunk complete.
    pub async fn holders(
        &self,
        tracker: NodeAddr,
        object_id: ObjectId,
        index: u32,
        limit: u8,
    ) -> Result<Vec<ListedHub>, Outcome> {
        let ask = PeerMessage::HoldersRequest { object_id, chunk: Some(index), limit };
        let limit_bytes = 8 + usize::from(limit) * (32 + 1 + 1 + 16 + 2);
        match self.exchange(tracker.id, tracker.addr, [ask], limit_bytes).await?.as_slice() {
            [PeerMessage::HubList(hubs)] => Ok(hubs.clone()),
            [PeerMessage::Refuse { reason, .. }] => Err(Outcome::Refused(*reason)),
            _ => Err(Outcome::Failed),
        }
    }

    /// Ask the tracker for a random hub of the stripe forest (not this one).
    pub async fn forest_hub(&self, tracker: NodeAddr) -> Result<Option<ListedHub>, Outcome> {
        let limit_bytes = 8 + 32 + 1 + 1 + 16 + 2;
        match self
            .exchange(tracker.id, tracker.addr, [PeerMessage::ForestHubRequest], limit_bytes)
            .await?
            .as_slice()
        {
            [PeerMessage::HubList(hubs)] => Ok(hubs.first().copied()),
            _ => Err(Outcome::Failed),
        }
    }

    /// One request: the datagrams the peer sent, or how it ended. Nothing here
    /// is trusted; the receiver checks every datagram.
    pub async fn fetch(
        &self,
        peer: NodeId,
        addr: SocketAddr,
        req: &ChunkRequest,
    ) -> Result<DatagramFrames, Outcome> {
        // At most: the ticket, every page, the symbols asked for.
        let frames = req.esis.count() as usize + 1 + hubcast_protocol::wire::MAX_TABLE_PAGES;
        let body = self.exchange_raw(peer, addr, req.to_messages(), frames * (MAX_DATAGRAM + 5)).await?;
        match peer_wire::decode_answer(body) {
            Ok(Answer::Datagrams(d)) => Ok(d),
            Ok(Answer::Other(PeerMessage::Refuse { reason, .. })) => Err(Outcome::Refused(reason)),
            _ => Err(Outcome::Failed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_pack_whole_frames_into_datagrams_in_order() {
        let nak = |chunk| PeerMessage::Nak {
            object_id: ObjectId([chunk as u8; 32]),
            chunk,
            missing: 7,
            loss: 50,
            held: vec![0xAA; 160],
        };
        let naks: Vec<PeerMessage> = (0..20).map(nak).collect();
        let mut one = Vec::new();
        peer_wire::encode(&naks[0], &mut one);
        let datagrams = pack_frames(&naks, 1200).unwrap();
        let per = 1200 / one.len();
        assert_eq!(datagrams.len(), 20usize.div_ceil(per), "as few datagrams as whole frames allow");
        assert!(datagrams.iter().all(|d| d.len() <= 1200));
        let back: Vec<PeerMessage> =
            datagrams.iter().flat_map(|d| peer_wire::decode_all(d).unwrap()).collect();
        assert_eq!(back, naks, "every frame, whole and in order");
        assert_eq!(pack_frames(&naks, one.len() - 1), None, "a frame larger than a datagram: use a stream");
    }

    #[test]
    fn a_peer_that_only_takes_is_the_one_deferred() {
        assert!(!takes_only(TAKER_GRACE, 0), "a new peer gets served");
        assert!(takes_only(TAKER_GRACE + 1, 0), "then one that never serves is a taker");
        assert!(!takes_only(40 << 20, 10 << 20), "one that serves a quarter of what it takes is not");
        assert!(takes_only(40 << 20, (10 << 20) - 1));
    }

    #[test]
    fn a_busy_server_defers_the_taker_and_serves_the_giver() {
        let (store, _) = mpsc::channel(1);
        let (partial, _) = mpsc::channel(1);
        let server = Server::new(store, partial, 10_000.0, StatusBoard::default());
        let (taker, giver) = (NodeId([1; 32]), NodeId([2; 32]));
        for peer in [taker, giver] {
            server.served.lock().unwrap().insert(peer, 8 << 20);
        }
        server.credit(&giver, 4 << 20);
        let req = ChunkRequest {
            object_id: ObjectId([9; 32]),
            index: 0,
            table: None,
            esis: hubcast_protocol::peer_wire::EsiRanges::new(vec![(0, 4)]).unwrap(),
        };
        assert!(server.admit(&taker, &req), "room in the upload: everyone is served");
        server.upload.lock().unwrap().take(10_000.0);
        assert!(!server.admit(&taker, &req), "busy: the peer that only takes goes elsewhere");
        assert!(server.admit(&giver, &req), "busy: the peer that serves us waits its turn");
        assert_eq!(server.takers_deferred(), 1);
    }
}
