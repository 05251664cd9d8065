//! Bridges and deserts: a hub that hears the channel's multicast feeds hubs
//! that do not, over QUIC.
//!
//! Bridge side ([`Feed`], [`serve_subscription`]): every chunk the hub
//! completes gets the next position in the feed's history ([`Ring`]). A new
//! subscriber starts in the back buffer (the last seconds of the channel); one
//! that falls behind, or comes back after a broken feed, goes on from its own
//! position for as long as the history remembers it, and its chunks come
//! from the store. A subscriber gets, for each chunk from there on, the object's
//! manifest as the broadcaster signed it (once per object), then the chunk's
//! signed ticket, its table pages and its K source symbols, served from the
//! store exactly as a peer-repair answer is. So the bridge forwards only what
//! it has verified (the whole chunk hashed to the signed ticket), and the
//! desert hub checks every datagram again. The feed is a reliable stream: the
//! bytes sent are the chunk's, plus QUIC's retransmissions of what was lost.
//!
//! Desert side ([`follow`]): a task that carries out the hub machine's feed
//! orders: it asks the tracker for bridges, subscribes to the one the
//! machine picks (`--bridge-peer` first), and hands the datagrams to the
//! loop, which checks them like multicast. A refusal, a closed stream or too
//! many strikes moves the machine to the next bridge, resuming at the chunk
//! the hub had reached.

use crate::peers::Server;
use hubcast_keys::{NodeAddr, NodeId};
use hubcast_protocol::peer_wire::{self, EsiRanges, PeerMessage, PeerWireError, RefuseReason};
use hubcast_protocol::serve::ChunkRequest;
use hubcast_protocol::wire;
use hubcast_protocol::ObjectId;
use hubcast_transport::quic::NodeEndpoint;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

mod desert;
mod remulticast;
#[cfg(test)]
mod tests;
mod udp;

pub use desert::*;
pub use remulticast::{remulticast, Relay};
pub(crate) use udp::{read_udp, UdpFeed};

/// A bridge that stops serving feeds (a bridge now feeds it) ends its
/// subscriptions after this long, so its desert hubs move to another.
const NOT_LIVE_ENDS_AFTER: Duration = Duration::from_secs(3);
/// A subscriber that takes none of a chunk for this long is dropped.
const STALLED_SUBSCRIBER: Duration = Duration::from_secs(10);
/// Chunk answers a feed keeps for its subscribers to share (about 1 MiB each).
/// Positions the feed's history remembers: how far behind the live edge a
/// subscriber may fall, or resume, and still get every chunk (8 GiB of
/// 1 MiB chunks). An entry is about 100 bytes, with at most one manifest
/// datagram (under 1.5 KB) per object: at most 13 MiB.
pub(crate) const FEED_HISTORY: usize = 8192;
const RECENT_ANSWERS: usize = 4;
/// Feed bytes read from the stream at once.
const READ_CHUNK: usize = 64 << 10;
/// One try at subscribing (connection, request, answer) takes at most this
/// long: a handshake's three flights over a link losing half its packets
/// wait out one or two probe timeouts (1 s, then 2 s). Tries race, a new one
/// every 2 s (`desert::race`).
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(6);
/// A bridge that sends no packet for this long (QUIC keep-alives go every
/// thirtieth of it; over UDP, its heartbeats) is taken for dead, and the hub
/// moves to another.
pub(crate) const BRIDGE_SILENCE: Duration = Duration::from_secs(3);
/// A feed's QUIC connection, when the bridge's UDP heartbeats tell it alive,
/// is dropped after this long without a packet: the backstop.
const FEED_QUIC_IDLE: Duration = Duration::from_secs(15);
/// A fed hub nudges its bridge this often ([`desert::nudge`]).
const NUDGE_EVERY: Duration = Duration::from_millis(100);

/// A chunk in the back buffer, with what a subscriber needs to ask the store.
#[derive(Clone, Copy, Debug)]
struct FeedChunk {
    seq: u64,
    object_id: ObjectId,
    index: u32,
    len: u32,
    /// Source symbols, and table pages.
    k: u32,
    pages: u32,
    /// When this hub completed it.
    at: Instant,
}

/// A chunk's feed answer, by (object, chunk, ESIs asked): its datagrams.
type AnswerKey = (ObjectId, u32, u32);
type Answer = Arc<Vec<Vec<u8>>>;

/// Where a new subscription starts: at the chunks completed in the last
/// `secs`, within `bytes`.
#[derive(Clone, Copy, Debug)]
pub struct BackBuffer {
    pub secs: Duration,
    pub bytes: u64,
}

/// The feed's history: the last [`FEED_HISTORY`] chunks by position, with
/// the signed manifests of their objects. The chunks' bytes are in the store.
/// Its tail, bounded in age and bytes, is the back buffer a new subscription
/// starts in.
struct Ring {
    chunks: VecDeque<FeedChunk>,
    /// Bytes of the chunks in `chunks`.
    bytes: u64,
    keep: BackBuffer,
    next_seq: u64,
    /// Per object in the ring: its manifest datagram and its chunk count there.
    manifests: HashMap<ObjectId, (Arc<[u8]>, usize)>,
    /// Manifests heard for objects with no chunk in the ring yet.
    waiting: HashMap<ObjectId, Arc<[u8]>>,
}

impl Ring {
    /// Add `c` at the next position (its `seq` is set here).
    fn push(&mut self, mut c: FeedChunk) {
        c.seq = self.next_seq;
        while self.chunks.len() >= FEED_HISTORY {
            let Some(old) = self.chunks.pop_front() else { break };
            self.bytes -= u64::from(old.len);
            if let Some((_, n)) = self.manifests.get_mut(&old.object_id) {
                *n -= 1;
                if *n == 0 {
                    self.manifests.remove(&old.object_id);
                }
            }
        }
        if let Some(m) = self.waiting.remove(&c.object_id) {
            self.manifests.insert(c.object_id, (m, 0));
        }
        if let Some((_, n)) = self.manifests.get_mut(&c.object_id) {
            *n += 1;
        }
        self.bytes += u64::from(c.len);
        self.chunks.push_back(c);
        self.next_seq = c.seq + 1;
    }

    /// The first chunk after position `seq`.
    fn after(&self, seq: Option<u64>) -> Option<FeedChunk> {
        let first = self.chunks.front()?.seq;
        let at = seq.map_or(0, |s| (s + 1).saturating_sub(first));
        self.chunks.get(usize::try_from(at).ok()?).copied()
    }

    /// A chunk of the history, by object and index (the latest, if twice),
    /// with its object's manifest datagram.
    fn find(&self, object_id: ObjectId, index: u32) -> Option<(FeedChunk, Option<Arc<[u8]>>)> {
        let c = self.chunks.iter().rev().find(|c| c.object_id == object_id && c.index == index)?;
        Some((*c, self.manifests.get(&object_id).map(|(m, _)| m.clone())))
    }

    /// [`Ring::after`], with the manifest datagram of that chunk's object.
    fn after_with_manifest(&self, seq: Option<u64>) -> (Option<FeedChunk>, Option<Arc<[u8]>>) {
        let next = self.after(seq);
        let manifest = next.and_then(|c| self.manifests.get(&c.object_id).map(|(m, _)| m.clone()));
        (next, manifest)
    }

    /// The position just before the back buffer: the chunks completed in
    /// the last `keep.secs` of the newest one, within `keep.bytes`.
    fn before_back_buffer(&self) -> Option<u64> {
        let newest = self.chunks.back()?.at;
        let mut bytes = 0u64;
        let first = self.chunks.iter().rev().take_while(|c| {
            bytes += u64::from(c.len);
            bytes <= self.keep.bytes && newest.saturating_duration_since(c.at) <= self.keep.secs
        });
        let first = first.last().map_or(self.next_seq, |c| c.seq);
        first.checked_sub(1)
    }

    /// Where a subscription that names `chunk` starts: just before that chunk
    /// when the history holds it (however old: a subscriber that comes back
    /// gets all it missed); at the live end when the history holds earlier
    /// chunks of its object only (the bridge has not got there yet);
    /// otherwise at the back buffer's start.
    fn start_for(&self, chunk: Option<(ObjectId, u32)>) -> Option<u64> {
        let before_front = self.before_back_buffer();
        let Some((object_id, index)) = chunk else { return before_front };
        let of_object: Vec<&FeedChunk> = self.chunks.iter().filter(|c| c.object_id == object_id).collect();
        if let Some(c) = of_object.iter().find(|c| c.index == index) {
            return c.seq.checked_sub(1);
        }
        if !of_object.is_empty() && of_object.iter().all(|c| c.index < index) {
            return self.next_seq.checked_sub(1);
        }
        before_front
    }
}

/// The channel's feed as a bridge serves it.
pub struct Feed {
    ring: Mutex<Ring>,
    changed: Notify,
    live: AtomicBool,
    /// Since when the feed has not been live, as the driver's clock said;
    /// and whether that is [`NOT_LIVE_ENDS_AFTER`] already (subscriptions end).
    not_live_since: Mutex<Option<Instant>>,
    ending: AtomicBool,
    max_subscribers: u64,
    subscribers: AtomicU64,
    subscriptions: AtomicU64,
    refused_busy: AtomicU64,
    refused_not_live: AtomicU64,
    fed_bytes: AtomicU64,
    fed_udp_bytes: AtomicU64,
    skipped_chunks: AtomicU64,
    refed_chunks: AtomicU64,
    stalled: AtomicU64,
    /// The last answers read, by (object, chunk, ESIs asked).
    recent: Mutex<VecDeque<(AnswerKey, Answer)>>,
    /// The channel's statements this hub took, newest of each kind (the
    /// catalog root, the revocation list), as they came: every subscriber
    /// gets each when it subscribes and when it changes (a desert hub hears
    /// no multicast to take them from).
    statements: Mutex<BTreeMap<StatementKey, Arc<[u8]>>>,
}

impl Feed {
    /// A feed keeping `keep` of recent chunks, serving at most
    /// `max_subscribers` desert hubs.
    pub fn new(keep: BackBuffer, max_subscribers: usize) -> Arc<Feed> {
        Arc::new(Feed {
            ring: Mutex::new(Ring {
                chunks: VecDeque::new(),
                bytes: 0,
                keep,
                next_seq: 0,
                manifests: HashMap::new(),
                waiting: HashMap::new(),
            }),
            changed: Notify::new(),
            live: AtomicBool::new(false),
            not_live_since: Mutex::new(None),
            ending: AtomicBool::new(false),
            max_subscribers: max_subscribers as u64,
            subscribers: AtomicU64::new(0),
            subscriptions: AtomicU64::new(0),
            refused_busy: AtomicU64::new(0),
            refused_not_live: AtomicU64::new(0),
            fed_bytes: AtomicU64::new(0),
            fed_udp_bytes: AtomicU64::new(0),
            skipped_chunks: AtomicU64::new(0),
            refed_chunks: AtomicU64::new(0),
            stalled: AtomicU64::new(0),
            recent: Mutex::new(VecDeque::new()),
            statements: Mutex::new(BTreeMap::new()),
        })
    }

    fn ring(&self) -> std::sync::MutexGuard<'_, Ring> {
        self.ring.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the hub serves feeds: it has heard the channel's multicast and
    /// is not fed by a bridge itself (so feeds cannot loop). A bridge that
    /// stops hearing the channel still serves its back buffer until it takes
    /// a feed itself. `now` is the driver's; [`NOT_LIVE_ENDS_AFTER`] after
    /// the feed stopped being live, its subscriptions end. True when that
    /// changed it.
    pub fn set_live(&self, live: bool, now: Instant) -> bool {
        let changed = self.live.swap(live, Relaxed) != live;
        let ending = {
            let mut since = self.not_live_since.lock().unwrap_or_else(|p| p.into_inner());
            if live {
                *since = None;
                false
            } else {
                now.saturating_duration_since(*since.get_or_insert(now)) >= NOT_LIVE_ENDS_AFTER
            }
        };
        let now_ending = self.ending.swap(ending, Relaxed) != ending && ending;
        if changed {
            info!(
                live,
                "bridge: {}",
                if live { "serving feeds" } else { "feeds stop (a bridge feeds this hub)" }
            );
        }
        if changed || now_ending {
            self.changed.notify_waiters();
        }
        changed
    }

    pub fn is_live(&self) -> bool {
        self.live.load(Relaxed)
    }

    /// Desert hubs fed now.
    pub fn subscribers(&self) -> u16 {
        u16::try_from(self.subscribers.load(Relaxed)).unwrap_or(u16::MAX)
    }

    /// A verified manifest datagram, forwarded before its object's first chunk.
    pub fn manifest(&self, object_id: ObjectId, datagram: &[u8]) {
        let mut ring = self.ring();
        let datagram: Arc<[u8]> = datagram.into();
        match ring.manifests.get_mut(&object_id) {
            Some(entry) => entry.0 = datagram,
            None => {
                // Bounded like the receiver's own memory of manifests.
                if ring.waiting.len() >= hubcast_protocol::receiver::MAX_MANIFEST_DATAGRAMS {
                    ring.waiting.clear();
                }
                ring.waiting.insert(object_id, datagram);
            }
        }
    }

    /// A statement newer than the one of its kind before (a catalog root, a
    /// revocation list), or a root rotation (each kept: a desert hub follows
    /// the chain one at a time), verified: subscribers get it next.
    pub fn statement(&self, datagram: &[u8]) {
        self.statements
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(statement_key(datagram), datagram.into());
        self.changed.notify_waiters();
    }

    /// In key order: rotations by version, then the other kinds.
    fn current_statements(&self) -> Vec<Arc<[u8]>> {
        self.statements.lock().unwrap_or_else(|p| p.into_inner()).values().cloned().collect()
    }

    /// An object with no chunks (an empty file): subscribers get its manifest
    /// (given first with [`Feed::manifest`]) as an entry of its own.
    pub fn empty_object(&self, object_id: ObjectId, now: Instant) {
        self.push(FeedChunk { seq: 0, object_id, index: 0, len: 0, k: 0, pages: 0, at: now });
    }

    /// A chunk this hub completed and stored, `len` bytes in symbols of
    /// `symbol_size` (its ticket's): subscribers get it next.
    pub fn chunk(&self, object_id: ObjectId, index: u32, len: u32, symbol_size: u16, now: Instant) {
        let k = wire::source_symbols(len, symbol_size);
        let pages = wire::page_count(wire::n_max(k)) as u32;
        self.push(FeedChunk { seq: 0, object_id, index, len, k, pages, at: now });
    }

    fn push(&self, c: FeedChunk) {
        self.ring().push(c);
        self.changed.notify_waiters();
    }

    /// The feed's datagrams for `req`, read (and checked against the kept
    /// digests) once for all the subscribers near the live edge, which ask
    /// for the same chunks within moments of each other.
    async fn answer(&self, server: &Server, req: &ChunkRequest) -> Option<Answer> {
        let key: AnswerKey = (req.object_id, req.index, req.esis.count());
        let cached = {
            let recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
            recent.iter().find(|(k, _)| *k == key).map(|(_, a)| a.clone())
        };
        if cached.is_some() {
            return cached;
        }
        let answer = match server.answer(req).await {
            Ok(datagrams) => Arc::new(datagrams),
            Err(reason) => {
                debug!(object = %req.object_id, chunk = req.index, ?reason, "bridge: chunk not served");
                return None;
            }
        };
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        recent.push_front((key, answer.clone()));
        recent.truncate(RECENT_ANSWERS);
        Some(answer)
    }

    pub fn status(&self) -> crate::status::BridgeStatus {
        let ring = self.ring();
        crate::status::BridgeStatus {
            live: self.is_live(),
            subscribers: self.subscribers.load(Relaxed),
            subscriptions: self.subscriptions.load(Relaxed),
            refused_busy: self.refused_busy.load(Relaxed),
            refused_not_live: self.refused_not_live.load(Relaxed),
            fed_bytes: self.fed_bytes.load(Relaxed) + self.fed_udp_bytes.load(Relaxed),
            fed_udp_bytes: self.fed_udp_bytes.load(Relaxed),
            skipped_chunks: self.skipped_chunks.load(Relaxed),
            refed_chunks: self.refed_chunks.load(Relaxed),
            stalled_subscribers: self.stalled.load(Relaxed),
            back_buffer_chunks: ring.chunks.len() as u64,
            back_buffer_bytes: ring.bytes,
        }
    }

    /// A place among the subscribers, or `None` when the fan-out is full.
    fn join(self: &Arc<Feed>) -> Option<Subscriber> {
        let taken =
            self.subscribers.fetch_update(Relaxed, Relaxed, |n| (n < self.max_subscribers).then_some(n + 1));
        taken.ok().map(|_| Subscriber(self.clone()))
    }
}

/// A place among a feed's subscribers, given back on drop.
struct Subscriber(Arc<Feed>);

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.0.subscribers.fetch_sub(1, Relaxed);
    }
}

/// A subscription's refusal: object id and chunk zero.
pub(crate) fn refuse(reason: RefuseReason, out: &mut Vec<u8>) {
    peer_wire::encode(&PeerMessage::Refuse { object_id: ObjectId([0; 32]), chunk: 0, reason }, out);
}

/// Serve one subscription on its stream until the subscriber goes, or this hub
/// stops serving feeds. Refused (typed) when the fan-out is full or the hub
/// does not serve feeds now. With `stripe` (tree, stripes), a stripe-forest
/// child's subscription: only that stripe of each chunk, and no fan-out or
/// bridge checks (the forest decided the place; the caller checked it).
/// With `udp`, the symbols go as datagrams to the subscriber's port
/// ([`udp`]); the stream carries the rest.
pub(crate) async fn serve_subscription(
    send: &mut quinn::SendStream,
    feed: &Arc<Feed>,
    server: &Server,
    peer: NodeId,
    resume: Option<(ObjectId, u32)>,
    stripe: Option<(u8, u8)>,
    mut udp: Option<UdpFeed>,
) {
    let mut out = Vec::new();
    let place = if stripe.is_some() {
        Some(None)
    } else if !feed.is_live() {
        feed.refused_not_live.fetch_add(1, Relaxed);
        refuse(RefuseReason::NotHeld, &mut out);
        None
    } else if let Some(place) = feed.join() {
        Some(Some(place))
    } else {
        feed.refused_busy.fetch_add(1, Relaxed);
        refuse(RefuseReason::Busy, &mut out);
        None
    };
    let Some(_place) = place else {
        let _ = send.write_all(&out).await;
        let _ = send.finish();
        return;
    };
    feed.subscriptions.fetch_add(1, Relaxed);
    info!(%peer, ?resume, udp = udp.is_some(), "bridge: desert hub subscribed");
    peer_wire::encode(&PeerMessage::Subscribed, &mut out);
    if send.write_all(&out).await.is_err() {
        return;
    }
    let mut at = feed.ring().start_for(resume);
    let mut sent_manifests: HashSet<ObjectId> = HashSet::new();
    let mut sent_statements: Vec<Arc<[u8]>> = Vec::new();
    loop {
        // Registered before looking, so a chunk pushed in between wakes us.
        let changed = feed.changed.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        // The channel's statements the subscriber does not have yet.
        for st in feed.current_statements() {
            if sent_statements.iter().any(|s| Arc::ptr_eq(s, &st)) {
                continue;
            }
            let mut out = Vec::new();
            peer_wire::encode_datagram(&st, &mut out);
            if send.write_all(&out).await.is_err() {
                return;
            }
            sent_statements.retain(|s| statement_key(s) != statement_key(&st));
            sent_statements.push(st);
        }
        // A chunk the subscriber asked for again (over UDP, its symbols may
        // not all come through) goes before the next of the history.
        let again = udp.as_ref().and_then(UdpFeed::take_again).and_then(|(o, i)| feed.ring().find(o, i));
        let (next, manifest) = match &again {
            Some((chunk, manifest)) => (Some(*chunk), manifest.clone()),
            None => feed.ring().after_with_manifest(at),
        };
        let Some(chunk) = next else {
            if !feed.is_live() && stripe.is_none() && feed.ending.load(Relaxed) {
                info!(%peer, "bridge: ending a subscription, this hub no longer serves feeds");
                let mut out = Vec::new();
                refuse(RefuseReason::NotHeld, &mut out);
                let _ = send.write_all(&out).await;
                let _ = send.finish();
                return;
            }
            tokio::select! {
                _ = changed => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = send.stopped() => return,
            }
            continue;
        };
        // A subscriber further behind than the history skips what fell out
        // of it; it repairs those chunks like any it missed.
        if again.is_some() {
            feed.refed_chunks.fetch_add(1, Relaxed);
        } else {
            if let Some(prev) = at {
                feed.skipped_chunks.fetch_add(chunk.seq - prev - 1, Relaxed);
            }
            at = Some(chunk.seq);
        }
        // The stream carries an object's manifest once; UDP with every chunk
        // (its tickets wait for it, and half of those datagrams may be lost).
        let first = sent_manifests.insert(chunk.object_id);
        // An empty object's entry carries its manifest only. Over UDP, the
        // symbols the subscriber's loss asks for.
        let sizing = udp.as_mut().map(|u| u.sizing(chunk.k));
        let requests = match (stripe, sizing) {
            (Some((tree, stripes)), _) => stripe_requests(&chunk, tree, stripes),
            (None, Some((esis, _))) => chunk_request(&chunk, esis).into_iter().collect(),
            (None, None) => chunk_request(&chunk, chunk.k).into_iter().collect(),
        };
        let mut answers = Vec::new();
        for req in requests {
            answers.extend(feed.answer(server, &req).await);
        }
        // A chunk the store no longer has (a live segment past its buffer).
        if chunk.k > 0 && answers.is_empty() {
            feed.skipped_chunks.fetch_add(1, Relaxed);
        }
        let (mut head, mut symbols): (Vec<&[u8]>, Vec<&[u8]>) = (Vec::new(), Vec::new());
        let datagrams = answers.iter().flat_map(|a| a.iter().map(Vec::as_slice));
        for d in manifest.as_deref().into_iter().chain(datagrams) {
            match wire::peek_esi(d) {
                Some(_) if udp.is_some() => symbols.push(d),
                _ => head.push(d),
            }
        }
        // The stream: all of it, or (over UDP) all but the symbols.
        let mut out = Vec::new();
        let on_stream = head.iter().skip(usize::from(!first && manifest.is_some()));
        on_stream.for_each(|d| peer_wire::encode_datagram(d, &mut out));
        server.pace(out.len()).await;
        // A subscriber that stops reading (flow control gives no credit) must
        // not hold its place in the fan-out for ever.
        match tokio::time::timeout(STALLED_SUBSCRIBER, send.write_all(&out)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return,
            Err(_) => {
                feed.stalled.fetch_add(1, Relaxed);
                info!(%peer, "bridge: ending a subscription that took nothing for {} s", STALLED_SUBSCRIBER.as_secs());
                let _ = send.reset(0u32.into());
                return;
            }
        }
        feed.fed_bytes.fetch_add(out.len() as u64, Relaxed);
        if let (Some(u), Some((_, loss))) = (udp.as_mut().filter(|_| !symbols.is_empty()), sizing) {
            match u.send_chunk((chunk.k, loss), &head, &symbols, server).await {
                Ok(bytes) => feed.fed_udp_bytes.fetch_add(bytes as u64, Relaxed),
                Err(e) => {
                    info!(%peer, "bridge: ending a subscription whose UDP port cannot be reached: {e}");
                    let _ = send.reset(0u32.into());
                    return;
                }
            };
        }
    }
}

/// The request for a chunk's ticket, all its table pages and ESIs 0..`esis`;
/// `None` for an empty object's entry (no chunk).
fn chunk_request(chunk: &FeedChunk, esis: u32) -> Option<ChunkRequest> {
    if chunk.k == 0 {
        return None;
    }
    let esis = EsiRanges::new(vec![(0, u16::try_from(esis).ok()?)])?;
    Some(ChunkRequest {
        object_id: chunk.object_id,
        index: chunk.index,
        table: Some(all_pages(chunk.pages)),
        esis,
    })
}

/// The requests for stripe `tree` of `stripes` of a chunk: ESIs tree,
/// tree + stripes, … (below N_max), enough that any `stripes − 1` stripes
/// together hold K + 2 symbols. The first carries the ticket and the table.
fn stripe_requests(chunk: &FeedChunk, tree: u8, stripes: u8) -> Vec<ChunkRequest> {
    if chunk.k == 0 || stripes < 2 {
        return Vec::new();
    }
    let f = u32::from(stripes);
    let per_stripe = (chunk.k + 2).div_ceil(f - 1);
    let n_max = hubcast_protocol::wire::n_max(chunk.k);
    let esis: Vec<u32> =
        (0..per_stripe).map(|j| u32::from(tree) + j * f).take_while(|e| *e < n_max).collect();
    esis.chunks(peer_wire::MAX_RANGES)
        .enumerate()
        .filter_map(|(i, batch)| {
            Some(ChunkRequest {
                object_id: chunk.object_id,
                index: chunk.index,
                table: (i == 0).then(|| all_pages(chunk.pages)),
                esis: EsiRanges::new(batch.iter().map(|e| (*e, 1)).collect())?,
            })
        })
        .collect()
}

fn all_pages(pages: u32) -> u32 {
    if pages >= 32 {
        u32::MAX
    } else {
        (1u32 << pages) - 1
    }
}

/// A statement's kind, and for a root rotation (kind 0 here: first) its
/// version.
type StatementKey = (u8, u64);

/// What a newer statement replaces: the one of its kind, or for a root
/// rotation (kind 8) the one of its version.
fn statement_key(datagram: &[u8]) -> StatementKey {
    let kind = datagram.get(3).map_or(0, |k| k & 0x7f);
    match (kind, datagram.get(12..20)) {
        // Rotations first, in version order: what the others are signed
        // under may be the newest root.
        (8, Some(v)) => (0, v.iter().fold(0u64, |n, b| n << 8 | u64::from(*b))),
        _ => (kind, 0),
    }
}
