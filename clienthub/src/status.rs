//! The hub's shared status: what `/api/status`, `/metrics` and `clienthub status`
//! report. Written by the receive task and the store worker, read by HTTP.

use hubcast_protocol::receiver::{DropCounters, ReceiverStats};
use hubcast_protocol::ObjectId;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

#[derive(Clone, Debug, Default, Serialize)]
pub struct ObjectStatus {
    pub id: String,
    pub name: String,
    pub size: u64,
    pub chunk_size: u32,
    pub chunks: u32,
    pub chunks_stored: u32,
    pub complete: bool,
    /// Where the exported copy is, once it is.
    pub exported: Option<String>,
    /// Evicted to keep the store within `--quota`: the channel still offers
    /// it; the hub no longer holds it.
    pub evicted: bool,
    /// Pinned by the user (`clienthub pin`): never evicted.
    pub pinned: bool,
    /// Announced on demand: the hub takes it when asked (`clienthub get`).
    pub on_demand: bool,
    /// Bytes of the object in stored chunks.
    pub bytes_stored: u64,
    /// `bytes_stored` of `size`, 0 to 100 (100 for an empty object).
    pub percent: f64,
    /// Stored bytes per second since this run stored its first chunk of it.
    pub rate_bytes_per_sec: u64,
    /// Seconds left at that rate; none before a rate, or when complete.
    pub eta_secs: Option<u64>,
    /// The chunks this run completed, by the path of the datagrams that
    /// completed them.
    pub completed_by: ChunkSources,
}

/// The path a datagram came on.
pub use hubcast_protocol::hub::Source;

/// Chunks counted by the path that completed them.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct ChunkSources {
    pub multicast: u32,
    pub peer: u32,
    pub origin: u32,
    pub bridge: u32,
}

impl ChunkSources {
    fn add(&mut self, source: Source) {
        let n = match source {
            Source::Multicast => &mut self.multicast,
            Source::Peer => &mut self.peer,
            Source::Origin => &mut self.origin,
            Source::Bridge => &mut self.bridge,
        };
        *n = n.saturating_add(1);
    }
}

impl ObjectStatus {
    /// Bytes in `chunks_stored` chunks: all of the object once complete.
    fn stored_bytes(&self) -> u64 {
        if self.complete || self.chunks_stored >= self.chunks {
            return self.size;
        }
        (u64::from(self.chunks_stored) * u64::from(self.chunk_size)).min(self.size)
    }
}

/// Bytes of verified symbols by the path they came on.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct BytesBySource {
    pub multicast: u64,
    pub peer: u64,
    pub origin: u64,
    pub bridge: u64,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct ChunkCounters {
    /// Chunks in the store when the hub started.
    pub stored_at_start: u64,
    /// Chunks decoded and stored by this run.
    pub stored_this_run: u64,
    /// Decoded again although already stored (should stay 0).
    pub refetched: u64,
    pub stored: u64,
    /// Stored chunks found damaged or missing and dropped, to be fetched
    /// again: by this run (a read, the scrub), or before it and not fetched
    /// yet (found at start, by an earlier run, or by `clienthub fsck`).
    pub lost: u64,
    /// Chunks the background scrub checked against their hashes.
    pub scrubbed: u64,
    /// Full scrub passes finished.
    pub scrub_passes: u64,
    /// Entries the hub did not write, found in the store at start and moved
    /// to its quarantine/ folder.
    pub quarantined: u64,
    /// Bytes of verified chunks waiting for the store worker (at most
    /// `store_queue_limit`).
    pub store_queue_bytes: u64,
    pub store_queue_limit: u64,
    /// Times the receive loop waited for room in the store queue: the disk
    /// was slower than the channel for longer than the queue holds.
    pub store_queue_waits: u64,
    /// `--quota` in bytes (none: no limit), what the store holds of
    /// objects, and the objects evicted to stay within it (this run).
    pub quota_bytes: Option<u64>,
    pub held_bytes: u64,
    pub evicted: u64,
    /// Objects pinned (`clienthub pin`): kept whatever the quota.
    pub pinned: u64,
    /// Objects fetched again on demand (`clienthub get`, a GET with the
    /// token) after they were evicted or before the channel sent them.
    pub fetches: u64,
}

/// The catalog assembled: its version (0: none yet) and entries, and the
/// versions whose objects did not check out against their root.
#[derive(Clone, Debug, Default, Serialize)]
pub struct CatalogStatus {
    pub version: u64,
    pub entries: u64,
    pub refused: u64,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct DatagramCounters {
    pub received: u64,
    /// Dropped on purpose by --simulate-loss (a testing aid).
    pub simulated_loss: u64,
    pub symbols_accepted: u64,
    pub decode_attempts: u64,
    /// Multicast datagrams the kernel dropped for a full receive buffer
    /// (the socket's `drops` in /proc/net/udp): the hub did not keep up.
    pub kernel_drops: u64,
}

/// One peer, as this hub sees it.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PeerStatus {
    pub node_id: String,
    /// Its QUIC address.
    pub addr: String,
    /// Since its last announcement.
    pub last_seen_ms: u64,
    /// Verified symbol bytes it served us.
    pub bytes_from: u64,
    /// Bytes we served it.
    pub bytes_to: u64,
    /// Digest mismatches in what it served.
    pub strikes: u32,
    pub banned: bool,
    /// QUIC's smoothed RTT to it, once this hub has fetched from it.
    pub rtt_ms: Option<f64>,
    /// How it was found: "island" (its announcements on our control group)
    /// or "tracker" (listed as holding chunks this hub lacked).
    pub via: &'static str,
}

/// Peer repair as the hub runs it.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RepairCounters {
    /// Requests sent to peers, and the symbols they asked for.
    pub requests: u64,
    pub symbols_requested: u64,
    pub refused: u64,
    pub failed: u64,
    /// Chunks completed after repair started.
    pub chunks_repaired: u64,
    /// Requests for the origin (NAKs) when no peer could serve.
    pub origin_naks: u64,
    /// NAKs the origin refused, or that could not reach it.
    pub origin_naks_failed: u64,
    /// NAKs not sent because this hub did not hear the origin's multicast
    /// (where the origin's repair goes): it repairs from peers and bridges.
    pub origin_naks_withheld: u64,
    /// The share of the origin's multicast symbols this hub loses, measured
    /// from the gaps in their ESIs (sent with every NAK); none until enough
    /// went by.
    pub multicast_loss: Option<f64>,
    /// Loss reports sent to the origin, and those the broadcaster's echo
    /// made unnecessary (a hub as lossy had reported); the FEC the echo says
    /// the carousel applies, as a share of K.
    pub loss_reports: u64,
    pub loss_reports_suppressed: u64,
    pub channel_fec: Option<f64>,
    /// The channel's rate as `--rate auto` sets it, bits per second (the
    /// latest echo; none for a rate the operator fixed).
    pub channel_rate: Option<u64>,
    /// Chunks no peer at hand held complete, looked up at the tracker; those
    /// lookups that failed; hubs the answers listed.
    pub tracker_lookups: u64,
    pub tracker_lookups_failed: u64,
    pub tracker_listed: u64,
    /// Malformed peer requests dropped.
    pub bad_peer_messages: u64,
    /// Bytes served to peers.
    pub bytes_served: u64,
    /// Requests refused as busy while the upload was at its cap, because the
    /// peer takes far more than it serves us (the send/receive score).
    pub takers_deferred: u64,
    /// Answers held back to stay within `--upload-rate`, and how long they
    /// waited in all.
    pub upload_paced: u64,
    pub upload_paced_ms: u64,
    /// Requests refused as busy because the cap would have held their answer
    /// longer than the asker waits.
    pub upload_busy: u64,
}

/// The origin service (tracker and NAKs) this hub uses.
#[derive(Clone, Debug, Default, Serialize)]
pub struct TrackerRef {
    /// `NODEID@HOST:PORT`.
    pub addr: String,
    /// Where the hub learned it: `--tracker` or `manifest`.
    pub from: &'static str,
}

/// Serving the channel's feed to desert hubs (`--bridge`).
#[derive(Clone, Debug, Default, Serialize)]
pub struct BridgeStatus {
    /// Serving now: the hub hears the origin's multicast itself.
    pub live: bool,
    pub subscribers: u64,
    /// Subscriptions accepted since the start, and those refused because the
    /// fan-out was full (`--bridge-fanout`) or the hub did not hear the channel.
    pub subscriptions: u64,
    pub refused_busy: u64,
    pub refused_not_live: u64,
    /// Feed bytes sent, of them as UDP datagrams (symbols), and chunks a
    /// subscriber skipped because the history or the store no longer had
    /// them (it repairs them).
    pub fed_bytes: u64,
    pub fed_udp_bytes: u64,
    pub skipped_chunks: u64,
    /// Chunks fed again because a subscriber asked (its symbols over UDP had
    /// not all come through).
    pub refed_chunks: u64,
    /// Subscribers dropped because they took nothing for 10 s.
    pub stalled_subscribers: u64,
    /// Chunks in the feed's history (a returning subscriber goes on from
    /// any of them; a new one starts in the back buffer), and their bytes.
    pub back_buffer_chunks: u64,
    pub back_buffer_bytes: u64,
}

/// Where this hub's datagrams come from: the multicast, or a bridge's feed.
#[derive(Clone, Debug, Default, Serialize)]
pub struct FeedStatus {
    /// `multicast`, `bridge` (subscribed), `searching` (wants a bridge,
    /// has none yet), or `forest` (takes stripes from its parents there).
    pub mode: &'static str,
    /// The bridge feeding this hub, NODEID@HOST:PORT.
    pub bridge: Option<String>,
    /// Subscriptions made, and ended (bridge gone, refused, struck).
    pub subscriptions: u64,
    pub ended: u64,
    /// Bridges that refused a subscription (fan-out full, or not live).
    pub refused: u64,
    /// Datagrams from bridges that failed their check: strikes.
    pub strikes: u64,
    /// Bridges left for good after too many strikes.
    pub bridges_banned: u64,
    /// Bytes this hub sent again on its LAN with `--remulticast`.
    pub remulticast_bytes: u64,
    /// The worst loss of its LAN's multicast the hubs of this island
    /// announce, whole percent: what `--remulticast` sizes its relay for.
    pub island_loss: Option<u8>,
    /// In a stripe forest (`--stripes`): its place there.
    pub forest: Option<ForestStatus>,
}

/// A hub's place in the stripe forest.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ForestStatus {
    pub stripes: u8,
    /// The tree this hub is interior in (the root: none).
    pub proper: Option<u8>,
    /// Per tree, the parent's node id (none: looking for one).
    pub parents: Vec<Option<String>>,
    /// Per tree, the children's node ids.
    pub children: Vec<Vec<String>>,
    /// Parents lost (each repaired by the forest).
    pub parents_lost: u64,
    /// Where the hub started its searches: a random forest hub the tracker
    /// named ("tracker"), or the root's pick ("root": no tracker known, or
    /// none in the forest yet). The root itself: none.
    pub joined_via: Option<String>,
    /// That hub's node id.
    pub contact: Option<String>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct HubStatus {
    /// This hub's node id: its identity among peers (from STORE/node.key).
    pub node_id: String,
    pub channel: String,
    pub group: String,
    pub objects: Vec<ObjectStatus>,
    /// Since the hub started.
    pub uptime_ms: u64,
    pub bytes: BytesBySource,
    pub chunks: ChunkCounters,
    /// The channel's catalog as this hub holds it.
    pub catalog: CatalogStatus,
    pub datagrams: DatagramCounters,
    /// Datagrams not used, by reason (see docs/PROTOCOL.md).
    pub drops: BTreeMap<&'static str, u64>,
    /// What the hub trusts beyond the root it was given.
    pub trust: TrustStatus,
    /// Peers heard on the control group, with what went each way.
    pub peers: Vec<PeerStatus>,
    pub repair: RepairCounters,
    /// Where NAKs go and the hub registers; none until known.
    pub tracker: Option<TrackerRef>,
    /// Where datagrams come from (multicast or a bridge).
    pub feed: FeedStatus,
    /// Serving desert hubs, with `--bridge`.
    pub bridge: Option<BridgeStatus>,
    /// Live channels: segments on time, late and missed, and latency.
    pub live: Vec<crate::live::LiveChannelStatus>,
    pub store_errors: u64,
    /// The last store failure, e.g. a full disk, with what to do.
    pub last_store_error: Option<String>,
}

/// The root's revocation list as the hub holds it.
#[derive(Clone, Debug, Default, Serialize)]
pub struct TrustStatus {
    /// The root trusted now: the configured one (version 1), or the newest
    /// the channel's root rotations led to.
    pub root: String,
    pub root_version: u64,
    /// The revocation list's version (0: none taken).
    pub revocations_version: u64,
    /// The certificate serials it revokes.
    pub revoked_serials: Vec<u64>,
    /// Datagrams refused because their certificate is revoked.
    pub refused_revoked: u64,
}

/// Bytes for people: `0 B`, `1000 B`, `1.5 KiB`, `20.0 MiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// Seconds for people: `45 s`, `3 min 20 s`, `2 h 5 min`.
pub fn human_secs(s: u64) -> String {
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min {} s", s / 60, s % 60),
        _ => format!("{} h {} min", s / 3600, s % 3600 / 60),
    }
}

/// Shared, cheap to clone.
#[derive(Clone, Default)]
pub struct StatusBoard {
    inner: Arc<Mutex<Board>>,
}

#[derive(Default)]
struct Board {
    status: HubStatus,
    objects: BTreeMap<ObjectId, ObjectStatus>,
    /// Verified symbol bytes from every path: the multicast's share is what
    /// the others did not bring, worked out when read (the others' totals
    /// are recorded a moment after the receiver's).
    symbol_bytes_accepted: u64,
    /// When the hub started, and the driver's clock at its last tick: the
    /// board reads no clock of its own.
    started: Option<std::time::Instant>,
    now: Option<std::time::Instant>,
    /// Per object still in progress: the tick at which this run first
    /// stored a chunk of it, and the bytes it held just before; its rate is
    /// measured from there at every tick, and kept when it completes.
    progress: BTreeMap<ObjectId, (std::time::Instant, u64)>,
    /// Chunks completed of objects whose manifest the store has not
    /// published yet (it may never come: the catalog's own objects, a
    /// manifest lost): credited to the object when it is listed.
    unlisted: BTreeMap<ObjectId, ChunkSources>,
}

/// Objects [`Board::unlisted`] remembers at most.
const UNLISTED_MAX: usize = 4096;

impl StatusBoard {
    fn lock(&self) -> MutexGuard<'_, Board> {
        // A panic elsewhere while holding the lock leaves plain counters; keep serving them.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn init(&self, node_id: String, channel: String, group: String, now: std::time::Instant) {
        let mut b = self.lock();
        b.status.node_id = node_id;
        b.status.channel = channel;
        b.status.group = group;
        (b.started, b.now) = (Some(now), Some(now));
    }

    /// The driver's clock, once a second: uptime, and the rate (and so the
    /// time left) of every object in progress, as of `now`.
    pub fn tick(&self, now: std::time::Instant) {
        let mut b = self.lock();
        let b = &mut *b;
        b.now = Some(now);
        b.status.uptime_ms = b.started.map_or(0, |t| now.saturating_duration_since(t).as_millis() as u64);
        let objects = &mut b.objects;
        b.progress.retain(|id, (since, at)| {
            let Some(o) = objects.get_mut(id) else { return false };
            // At least a second, so one chunk does not read as a burst.
            let secs = now.saturating_duration_since(*since).as_secs_f64().max(1.0);
            o.rate_bytes_per_sec = (o.stored_bytes().saturating_sub(*at) as f64 / secs) as u64;
            !o.complete
        });
    }

    /// Change an object the status lists already (its manifest was
    /// published); one it does not list (the catalog's own objects, or one
    /// whose manifest is still to come) is left out.
    pub fn update_listed(&self, id: ObjectId, f: impl FnOnce(&mut ObjectStatus)) {
        if self.lock().objects.contains_key(&id) {
            self.update_object(id, f);
        }
    }

    pub fn update_object(&self, id: ObjectId, f: impl FnOnce(&mut ObjectStatus)) {
        let mut b = self.lock();
        let credit = if b.objects.contains_key(&id) { None } else { b.unlisted.remove(&id) };
        let o = b.objects.entry(id).or_insert_with(|| ObjectStatus { id: id.to_hex(), ..Default::default() });
        if let Some(c) = credit {
            o.completed_by = c;
        }
        // Progress counts from the manifest on: chunks found in the store
        // at start, or stored before the manifest came, are not this run's rate.
        let known = o.chunk_size > 0;
        let (before, stored_before) = (o.stored_bytes(), o.chunks_stored);
        f(o);
        let progressed = known && o.chunks_stored > stored_before;
        if let Some(now) = b.now.filter(|_| progressed) {
            b.progress.entry(id).or_insert((now, before));
        }
    }

    /// A chunk of `id` was completed by datagrams that came on `source`.
    /// A chunk completed by `source`: credited to its object, or kept until
    /// the object is listed (its manifest published).
    pub fn chunk_completed_by(&self, id: ObjectId, source: Source) {
        let mut b = self.lock();
        if let Some(o) = b.objects.get_mut(&id) {
            return o.completed_by.add(source);
        }
        if b.unlisted.len() < UNLISTED_MAX || b.unlisted.contains_key(&id) {
            b.unlisted.entry(id).or_default().add(source);
        }
    }

    /// Bytes of objects held in the store.
    pub fn held_bytes(&self) -> u64 {
        self.lock().objects.values().map(ObjectStatus::stored_bytes).sum()
    }

    /// The complete, unpinned objects that could make room: (id, bytes held).
    pub fn evictable(&self) -> Vec<(ObjectId, u64)> {
        let b = self.lock();
        let complete = b.objects.iter().filter(|(_, o)| o.complete && !o.evicted && !o.pinned);
        complete.map(|(id, o)| (*id, o.stored_bytes())).collect()
    }

    /// One object, as the status shows it.
    pub fn object(&self, id: &ObjectId) -> Option<ObjectStatus> {
        self.lock().objects.get(id).cloned()
    }

    /// The object a path names (its name in the channel), and its id. A walk
    /// over every object: the catalog's index replaces it.
    pub fn object_named(&self, name: &str) -> Option<(ObjectId, ObjectStatus)> {
        self.lock().objects.iter().find(|(_, o)| o.name == name).map(|(id, o)| (*id, o.clone()))
    }

    /// Forget an object (a live segment, shown under `live` instead).
    pub fn remove_object(&self, id: &ObjectId) {
        let mut b = self.lock();
        b.objects.remove(id);
        b.unlisted.remove(id);
    }

    pub fn with_chunks(&self, f: impl FnOnce(&mut ChunkCounters)) {
        f(&mut self.lock().status.chunks);
    }

    pub fn with_catalog(&self, f: impl FnOnce(&mut CatalogStatus)) {
        f(&mut self.lock().status.catalog);
    }

    pub fn store_error(&self, message: String) {
        let mut b = self.lock();
        b.status.store_errors += 1;
        b.status.last_store_error = Some(message);
    }

    pub fn record_receiver(
        &self,
        stats: ReceiverStats,
        drops: &DropCounters,
        received: u64,
        simulated_loss: u64,
    ) {
        let mut b = self.lock();
        b.symbol_bytes_accepted = stats.symbol_bytes_accepted;
        b.status.datagrams = DatagramCounters {
            received,
            simulated_loss,
            symbols_accepted: stats.symbols_accepted,
            decode_attempts: stats.decode_attempts,
            kernel_drops: b.status.datagrams.kernel_drops,
        };
        b.status.drops = drops.iter().map(|(r, n)| (r.as_str(), n)).collect();
        b.status.trust.refused_revoked = drops.get(hubcast_protocol::receiver::DropReason::CertRevoked);
    }

    /// The root trusted now and the revocation list held, when they change.
    pub fn record_trust(
        &self,
        root: (hubcast_keys::Fingerprint, u64),
        list: Option<&hubcast_keys::RevocationList>,
    ) {
        let mut b = self.lock();
        let t = &mut b.status.trust;
        if t.root_version != root.1 || t.root.is_empty() {
            (t.root, t.root_version) = (root.0.to_string(), root.1);
        }
        if list.map_or(0, |l| l.version) != t.revocations_version {
            t.revocations_version = list.map_or(0, |l| l.version);
            t.revoked_serials = list.map(|l| l.serials().to_vec()).unwrap_or_default();
        }
    }

    pub fn record_kernel_drops(&self, total: u64) {
        self.lock().status.datagrams.kernel_drops = total;
    }

    /// Verified symbol bytes that came from peers (a running total).
    pub fn record_peer_bytes(&self, total: u64) {
        self.lock().status.bytes.peer = total;
    }

    /// Verified symbol bytes that came from the origin's repair (a running total).
    pub fn record_origin_bytes(&self, total: u64) {
        self.lock().status.bytes.origin = total;
    }

    pub fn origin_nak_failed(&self, n: u64) {
        self.lock().status.repair.origin_naks_failed += n;
    }

    /// A tracker lookup ended: the hubs it listed, or none when it failed.
    pub fn tracker_answer(&self, listed: Option<usize>) {
        let mut b = self.lock();
        match listed {
            Some(n) => b.status.repair.tracker_listed += n as u64,
            None => b.status.repair.tracker_lookups_failed += 1,
        }
    }

    pub fn record_peers(&self, peers: Vec<PeerStatus>, repair: impl FnOnce(&mut RepairCounters)) {
        let mut b = self.lock();
        b.status.peers = peers;
        repair(&mut b.status.repair);
    }

    /// Verified symbol bytes that came in bridge feeds (a running total).
    pub fn record_bridge_bytes(&self, total: u64) {
        self.lock().status.bytes.bridge = total;
    }

    pub fn with_feed(&self, f: impl FnOnce(&mut FeedStatus)) {
        f(&mut self.lock().status.feed);
    }

    pub fn set_bridge(&self, bridge: BridgeStatus) {
        self.lock().status.bridge = Some(bridge);
    }

    pub fn set_tracker(&self, addr: String, from: &'static str) {
        self.lock().status.tracker = Some(TrackerRef { addr, from });
    }

    pub fn peer_message_dropped(&self) {
        self.lock().status.repair.bad_peer_messages += 1;
    }

    pub fn snapshot(&self) -> HubStatus {
        let b = self.lock();
        let mut s = b.status.clone();
        s.objects = b
            .objects
            .values()
            .map(|o| {
                let mut o = o.clone();
                o.bytes_stored = o.stored_bytes();
                o.percent = if o.size == 0 { 100.0 } else { o.bytes_stored as f64 * 100.0 / o.size as f64 };
                if !o.complete && o.rate_bytes_per_sec > 0 {
                    o.eta_secs = Some((o.size - o.bytes_stored).div_ceil(o.rate_bytes_per_sec));
                }
                o
            })
            .collect();
        // People look objects up by name.
        s.objects.sort_by(|a, b| a.name.cmp(&b.name));
        // Every verified symbol byte came by multicast unless a peer, the
        // origin's repair or a bridge sent it.
        let other = s.bytes.peer + s.bytes.origin + s.bytes.bridge;
        s.bytes.multicast = b.symbol_bytes_accepted.saturating_sub(other);
        s
    }
}

#[cfg(test)]
mod progress_tests {
    use super::*;

    fn publish(board: &StatusBoard, id: ObjectId, stored: u32) {
        board.update_object(id, |o| {
            (o.name, o.size, o.chunk_size, o.chunks, o.chunks_stored) =
                ("f".into(), 10 << 20, 1 << 20, 10, stored)
        });
    }

    #[test]
    fn progress_counts_this_runs_chunks_and_gives_percent_and_eta() {
        let board = StatusBoard::default();
        let t0 = std::time::Instant::now();
        board.init("n".into(), "c".into(), "g".into(), t0);
        let id = ObjectId([1; 32]);
        // Four chunks were in the store at start: progress, not rate.
        publish(&board, id, 4);
        let o = board.snapshot().objects.remove(0);
        assert_eq!((o.bytes_stored, o.percent, o.rate_bytes_per_sec, o.eta_secs), (4 << 20, 40.0, 0, None));
        // Two more this run (within the first second: counted over one second).
        board.update_object(id, |o| o.chunks_stored = 5);
        board.update_object(id, |o| o.chunks_stored = 6);
        board.chunk_completed_by(id, Source::Peer);
        board.chunk_completed_by(id, Source::Multicast);
        assert_eq!(board.snapshot().objects[0].rate_bytes_per_sec, 0, "as of the last tick");
        board.tick(t0 + std::time::Duration::from_millis(500));
        let o = board.snapshot().objects.remove(0);
        assert_eq!(o.percent, 60.0);
        assert_eq!(o.rate_bytes_per_sec, 2 << 20);
        assert_eq!(o.eta_secs, Some(2), "4 MiB left at 2 MiB/s");
        assert_eq!((o.completed_by.multicast, o.completed_by.peer), (1, 1));
        // Complete: all of it, no time left.
        board.update_object(id, |o| (o.chunks_stored, o.complete) = (10, true));
        board.tick(t0 + std::time::Duration::from_secs(4));
        let o = board.snapshot().objects.remove(0);
        assert_eq!((o.bytes_stored, o.percent, o.eta_secs), (10 << 20, 100.0, None));
        assert_eq!(o.rate_bytes_per_sec, 6 << 20 >> 2, "6 MiB in 4 s, kept once complete");
        board.tick(t0 + std::time::Duration::from_secs(40));
        assert_eq!(board.snapshot().objects[0].rate_bytes_per_sec, 6 << 20 >> 2);
        assert_eq!(board.snapshot().uptime_ms, 40_000);
    }

    #[test]
    fn an_empty_object_is_whole_and_sizes_read_for_people() {
        let board = StatusBoard::default();
        board.update_object(ObjectId([2; 32]), |o| o.complete = true);
        assert_eq!(board.snapshot().objects[0].percent, 100.0);
        assert_eq!(human_bytes(1000), "1000 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(20 << 20), "20.0 MiB");
        assert_eq!(human_secs(200), "3 min 20 s");
        assert_eq!(human_secs(7500), "2 h 5 min");
    }
}
