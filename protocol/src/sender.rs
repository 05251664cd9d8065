//! The sender side, sans IO.
//!
//! - [`Carousel`] says what to send next: each round walks every object, its
//!   manifest and then its chunks, and repeats the manifest after them.
//! - [`PreparedChunk::round_datagrams`] lays out one chunk's datagrams for one round: ticket, table
//!   pages and symbols interleaved so that a page arrives just before the symbols
//!   it covers and a lost ticket or page strands few symbols.
//! - [`Sender`] queues datagrams, mixes in every object's manifest every
//!   `manifest_every` datagrams (so a hub that joins late learns them all), and
//!   paces to a byte rate.
//!
//! Calling order for [`Sender`]: `handle_datagrams` whenever a prepared chunk is
//! ready; then loop `poll_transmit(now)` until `None`, and sleep until
//! `poll_timeout()` (a pacing wait) or until more datagrams are handed in.

use crate::fec::{page_of, EncodedChunk};
use crate::verify::Signer;
use crate::wire::{self, Manifest, Ticket, CODEC_RAPTORQ_V2};
use crate::ObjectId;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Bytes of IPv4 and UDP headers, counted against the rate with each datagram.
pub const IP_UDP_OVERHEAD: usize = 28;

/// One object the broadcaster carries.
#[derive(Clone, Debug)]
pub struct ObjectPlan {
    pub manifest: Manifest,
}

impl ObjectPlan {
    pub fn new(
        name: String,
        object_id: ObjectId,
        size: u64,
        chunk_size: u32,
        symbol_size: u16,
        seq: u64,
        expiry: u64,
    ) -> Self {
        ObjectPlan {
            manifest: Manifest {
                seq,
                expiry,
                object_id,
                size,
                chunk_size,
                symbol_size,
                codec: CODEC_RAPTORQ_V2,
                name,
                tracker: None,
                round_end: false,
                live: None,
                on_demand: false,
            },
        }
    }

    pub fn chunk_count(&self) -> u32 {
        chunk_count(self.manifest.size, self.manifest.chunk_size)
    }

    /// Byte range of chunk `index` within the object.
    pub fn chunk_range(&self, index: u32) -> std::ops::Range<u64> {
        chunk_range(self.manifest.size, self.manifest.chunk_size, index)
    }
}

/// Chunks of an object of `size` bytes.
pub fn chunk_count(size: u64, chunk_size: u32) -> u32 {
    size.div_ceil(u64::from(chunk_size)) as u32
}

pub fn chunk_range(size: u64, chunk_size: u32, index: u32) -> std::ops::Range<u64> {
    let start = u64::from(index) * u64::from(chunk_size);
    start..(start + u64::from(chunk_size)).min(size)
}

/// One step of the carousel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// An object's manifest: before its chunks, or after them (`end`: the
    /// multicast has passed the object for this round).
    Manifest {
        object: usize,
        end: bool,
    },
    Chunk {
        object: usize,
        chunk: u32,
        round: u32,
    },
}

/// The order of the carousel: `rounds` rounds (or forever), each object in turn.
#[derive(Clone, Debug)]
pub struct Carousel {
    chunks: Vec<u32>,
    rounds: Option<u32>,
    round: u32,
    object: usize,
    /// Next chunk of `object`; `None` before its leading manifest, `Some(n)` with
    /// n == chunk count before its trailing manifest.
    chunk: Option<u32>,
}

impl Carousel {
    pub fn new(objects: &[ObjectPlan], rounds: Option<u32>) -> Self {
        Carousel {
            chunks: objects.iter().map(ObjectPlan::chunk_count).collect(),
            rounds,
            round: 0,
            object: 0,
            chunk: None,
        }
    }
}

impl Iterator for Carousel {
    type Item = Step;
    fn next(&mut self) -> Option<Step> {
        if self.chunks.is_empty() {
            return None;
        }
        loop {
            if self.rounds.is_some_and(|r| self.round >= r) {
                return None;
            }
            let object = self.object;
            match self.chunk {
                None => {
                    self.chunk = Some(0);
                    return Some(Step::Manifest { object, end: false });
                }
                Some(c) if c < self.chunks[object] => {
                    self.chunk = Some(c + 1);
                    return Some(Step::Chunk { object, chunk: c, round: self.round });
                }
                Some(c) if c == self.chunks[object] && c > 0 => {
                    self.chunk = Some(c + 1);
                    return Some(Step::Manifest { object, end: true });
                }
                Some(_) => {
                    self.chunk = None;
                    self.object += 1;
                    if self.object == self.chunks.len() {
                        self.object = 0;
                        self.round += 1;
                    }
                }
            }
        }
    }
}

/// Repair symbols sent per round on top of K: `ceil(K * overhead)`, at least one
/// when the overhead is positive.
pub fn repair_count(k: u32, overhead: f64) -> u32 {
    if overhead <= 0.0 {
        return 0;
    }
    ((f64::from(k) * overhead).ceil() as u32).max(1)
}

/// Symbols one round sends of a chunk: K and its repair, at most N_max.
pub fn round_count(k: u32, n_max: u32, overhead: f64) -> u32 {
    (k + repair_count(k, overhead)).min(n_max)
}

/// The ESIs one round sends: K + repair of them, starting where the previous
/// round stopped, wrapping at N_max. Round 0 sends the source symbols first.
pub fn round_esis(k: u32, n_max: u32, overhead: f64, round: u32) -> impl Iterator<Item = u32> {
    let count = round_count(k, n_max, overhead);
    let start = (u64::from(round) * u64::from(count) % u64::from(n_max)) as u32;
    (0..count).map(move |i| (start + i) % n_max)
}

/// A chunk with its ticket, ready to be laid out for any round.
pub struct PreparedChunk {
    pub object_id: ObjectId,
    pub index: u32,
    pub encoded: EncodedChunk,
    pub ticket: Vec<u8>,
}

impl PreparedChunk {
    /// Encode and sign one chunk. This is the sender's CPU-heavy step.
    pub fn prepare(signer: &Signer, manifest: &Manifest, index: u32, data: &[u8]) -> PreparedChunk {
        let encoded = EncodedChunk::encode(data, manifest.symbol_size);
        let ticket = Ticket {
            seq: manifest.seq,
            expiry: manifest.expiry,
            object_id: manifest.object_id,
            chunk_index: index,
            chunk_len: encoded.chunk_len,
            symbol_size: encoded.symbol_size,
            chunk_hash: encoded.chunk_hash,
            page_hashes: encoded.page_hashes.clone(),
        };
        let ticket = signer.ticket_datagram(&ticket);
        PreparedChunk { object_id: manifest.object_id, index, encoded, ticket }
    }

    /// The datagrams of this chunk for `round`, in sending order.
    pub fn round_datagrams(&self, channel_tag: u64, overhead: f64, round: u32) -> Vec<Vec<u8>> {
        let e = &self.encoded;
        let esis: Vec<u32> = round_esis(e.k, e.n_max, overhead, round).collect();
        self.datagrams(channel_tag, &esis)
    }

    /// The ticket, table pages and symbols that carry `esis` (each below N_max),
    /// laid out as a round is.
    pub fn datagrams(&self, channel_tag: u64, esis: &[u32]) -> Vec<Vec<u8>> {
        let e = &self.encoded;
        let mut out = Vec::with_capacity(esis.len() + 2 * e.pages() + 3);
        let page_datagram = |page: usize| {
            let mut d = Vec::new();
            wire::encode_table_page(
                &mut d,
                channel_tag,
                &self.object_id,
                self.index,
                page as u16,
                e.page(page),
            );
            d
        };
        // Runs of ESIs on one table page (consecutive in a round; scattered in a
        // resend of what hubs lack, where a run per gap would send a page per
        // two symbols). Each page goes out before its run, in its middle, and
        // after it: symbols that arrived before a lost page wait in the
        // receiver's pending buffer for a later copy, so a run is stranded only
        // if all three copies are lost (p^3, 0.0125% at 5% loss). The ticket
        // goes out at 0, 1/3 and 2/3 of the chunk.
        let mut runs = Vec::new();
        let mut start = 0;
        for i in 1..=esis.len() {
            if i == esis.len() || page_of(esis[i]) != page_of(esis[start]) {
                runs.push(start..i);
                start = i;
            }
        }
        let ticket_at = [0, esis.len() / 3, 2 * esis.len() / 3];
        for run in runs {
            let page = page_of(esis[run.start]);
            let middle = run.start + run.len() / 2;
            for i in run.clone() {
                if ticket_at.contains(&i) {
                    out.push(self.ticket.clone());
                }
                if i == run.start || (i == middle && run.len() >= 4) {
                    out.push(page_datagram(page));
                }
                let mut d = Vec::with_capacity(wire::SYMBOL_HEADER_LEN + e.symbol_size as usize);
                wire::encode_symbol(
                    &mut d,
                    channel_tag,
                    &self.object_id,
                    self.index,
                    esis[i],
                    e.symbol(esis[i]),
                );
                out.push(d);
            }
            if run.len() >= 8 {
                out.push(page_datagram(page));
            }
        }
        out
    }
}

/// A token bucket over bytes on the wire.
#[derive(Clone, Debug)]
pub struct Pacer {
    bytes_per_sec: f64,
    burst: f64,
    tokens: f64,
    last: Option<Instant>,
}

impl Pacer {
    /// `burst` bytes may go out back to back; at least one full datagram.
    pub fn new(bytes_per_sec: u64, burst: usize) -> Self {
        let burst = burst.max(wire::MAX_DATAGRAM + IP_UDP_OVERHEAD) as f64;
        Pacer { bytes_per_sec: bytes_per_sec.max(1) as f64, burst, tokens: burst, last: None }
    }

    fn refill(&mut self, now: Instant) {
        if let Some(last) = self.last {
            let dt = now.saturating_duration_since(last).as_secs_f64();
            self.tokens = (self.tokens + dt * self.bytes_per_sec).min(self.burst);
        }
        self.last = Some(now);
    }

    /// Change the rate from now on.
    pub fn set_rate(&mut self, now: Instant, bytes_per_sec: u64) {
        self.refill(now);
        self.bytes_per_sec = bytes_per_sec.max(1) as f64;
    }

    /// Bytes someone else put on the same channel: they are paid for from
    /// this bucket, which may go below empty (and then waits longer).
    pub fn debit(&mut self, now: Instant, bytes: u64) {
        self.refill(now);
        self.tokens -= bytes as f64;
    }

    /// Take `len` bytes if the bucket holds them; otherwise say when it will.
    pub fn try_take(&mut self, now: Instant, len: usize) -> Result<(), Instant> {
        self.refill(now);
        let need = (len + IP_UDP_OVERHEAD) as f64;
        if self.tokens >= need {
            self.tokens -= need;
            Ok(())
        } else {
            let wait = (need - self.tokens) / self.bytes_per_sec;
            Err(now + Duration::from_secs_f64(wait))
        }
    }
}

/// Counters of what the sender put on the wire.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SenderStats {
    pub datagrams: u64,
    pub bytes: u64,
    pub manifests: u64,
}

/// What waits in the sender's queue: a datagram, or a change to the manifests
/// mixed in, made when it reaches the front (in order with the datagrams).
enum Queued {
    Datagram(Vec<u8>),
    Manifest(usize, Vec<u8>),
}

/// Queues and paces datagrams; interleaves manifests. See the module docs for the
/// calling order.
pub struct Sender {
    manifests: Vec<Vec<u8>>,
    manifest_every: u32,
    since_manifest: u32,
    next_manifest: usize,
    queue: VecDeque<Queued>,
    pacer: Pacer,
    wake_at: Option<Instant>,
    stats: SenderStats,
}

impl Sender {
    /// `manifests` are the signed manifest datagrams of every object, mixed in
    /// every `manifest_every` datagrams.
    pub fn new(manifests: Vec<Vec<u8>>, manifest_every: u32, pacer: Pacer) -> Self {
        Sender {
            manifests,
            manifest_every: manifest_every.max(1),
            since_manifest: 0,
            next_manifest: 0,
            queue: VecDeque::new(),
            pacer,
            wake_at: None,
            stats: SenderStats::default(),
        }
    }

    /// Replace the manifests mixed in (they were re-signed with a later expiry).
    pub fn set_manifests(&mut self, manifests: Vec<Vec<u8>>) {
        self.manifests = manifests;
        self.next_manifest = 0;
    }

    /// The objects changed (a rescan): mix in `manifests` from now on, and
    /// drop the manifest changes still queued (they index the list before).
    /// Datagrams queued still go out.
    pub fn new_generation(&mut self, manifests: Vec<Vec<u8>>) {
        self.queue.retain(|q| matches!(q, Queued::Datagram(_)));
        self.set_manifests(manifests);
    }

    pub fn handle_datagrams(&mut self, datagrams: impl IntoIterator<Item = Vec<u8>>) {
        self.queue.extend(datagrams.into_iter().map(Queued::Datagram));
    }

    /// Mix in `datagram` as object `index`'s manifest from the moment every
    /// datagram handed in before it has been sent (an object's copy that says
    /// the round has passed it goes out only once it has).
    pub fn handle_manifest(&mut self, index: usize, datagram: Vec<u8>) {
        self.queue.push_back(Queued::Manifest(index, datagram));
    }

    /// Datagrams waiting to be sent.
    /// Bytes another sender (origin repair) put on this channel: the
    /// carousel sends that much less.
    pub fn debit(&mut self, now: Instant, bytes: u64) {
        self.pacer.debit(now, bytes);
    }

    /// Send at `bytes_per_sec` from now on (`--rate auto` moves it).
    pub fn set_rate(&mut self, now: Instant, bytes_per_sec: u64) {
        self.pacer.set_rate(now, bytes_per_sec);
    }

    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// The next datagram to send now, if the rate allows one.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Vec<u8>> {
        while let Some(Queued::Manifest(..)) = self.queue.front() {
            if let Some(Queued::Manifest(index, d)) = self.queue.pop_front() {
                if let Some(m) = self.manifests.get_mut(index) {
                    *m = d;
                }
            }
        }
        let Some(Queued::Datagram(front)) = self.queue.front() else { return None };
        let interleave = !self.manifests.is_empty() && self.since_manifest >= self.manifest_every;
        let len = if interleave { self.manifests[self.next_manifest].len() } else { front.len() };
        if let Err(at) = self.pacer.try_take(now, len) {
            self.wake_at = Some(at);
            return None;
        }
        self.wake_at = None;
        let d = if interleave {
            self.since_manifest = 0;
            let d = self.manifests[self.next_manifest].clone();
            self.next_manifest = (self.next_manifest + 1) % self.manifests.len();
            self.stats.manifests += 1;
            d
        } else {
            self.since_manifest += 1;
            match self.queue.pop_front()? {
                Queued::Datagram(d) => d,
                Queued::Manifest(..) => return None,
            }
        };
        self.stats.datagrams += 1;
        self.stats.bytes += d.len() as u64;
        Some(d)
    }

    /// When the pacer will allow the next datagram, if it is what holds us back.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.wake_at
    }

    pub fn stats(&self) -> SenderStats {
        self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(size: u64) -> ObjectPlan {
        ObjectPlan::new("x".into(), ObjectId([0; 32]), size, 1000, 128, 1, 10)
    }

    #[test]
    fn carousel_walks_rounds_objects_and_chunks() {
        let objects = [plan(2500), plan(0)];
        let steps: Vec<Step> = Carousel::new(&objects, Some(2)).collect();
        let one_round = |r| {
            vec![
                Step::Manifest { object: 0, end: false },
                Step::Chunk { object: 0, chunk: 0, round: r },
                Step::Chunk { object: 0, chunk: 1, round: r },
                Step::Chunk { object: 0, chunk: 2, round: r },
                Step::Manifest { object: 0, end: true },
                Step::Manifest { object: 1, end: false },
            ]
        };
        assert_eq!(steps, [one_round(0), one_round(1)].concat());
        assert_eq!(Carousel::new(&[], None).next(), None);
    }

    #[test]
    fn rounds_send_fresh_esis_until_they_wrap() {
        let k = 100;
        let n = wire::n_max(k);
        let r0: Vec<u32> = round_esis(k, n, 0.1, 0).collect();
        assert_eq!(r0, (0..110).collect::<Vec<_>>());
        let r1: Vec<u32> = round_esis(k, n, 0.1, 1).collect();
        assert_eq!(r1[0], 110);
        assert!(r1.iter().all(|e| *e < n));
        assert_eq!(repair_count(1, 0.1), 1);
        assert_eq!(repair_count(820, 0.1), 82);
    }

    #[test]
    fn pacer_holds_the_rate() {
        let t0 = Instant::now();
        let mut p = Pacer::new(1_000_000, 0);
        let mut sent = 0usize;
        let mut now = t0;
        while now < t0 + Duration::from_secs(1) {
            match p.try_take(now, 972) {
                Ok(()) => sent += 1000,
                Err(at) => now = at,
            }
        }
        // One second at 1 MB/s is 1000 datagrams of 1000 bytes, plus the first burst.
        assert!((1_000_000..=1_002_000).contains(&sent), "{sent}");
    }

    /// Repair sent beside the carousel is paid from the carousel's bucket:
    /// the two together hold the channel's rate.
    #[test]
    fn bytes_debited_by_another_sender_come_off_the_rate() {
        let t0 = Instant::now();
        let mut p = Pacer::new(1_000_000, 0);
        let (mut sent, mut now, mut next_debit) = (0u64, t0, t0);
        while now < t0 + Duration::from_secs(1) {
            if now >= next_debit {
                p.debit(now, 10_000); // 400 kB/s of repair, every 25 ms
                sent += 10_000;
                next_debit += Duration::from_millis(25);
            }
            match p.try_take(now, 972) {
                Ok(()) => sent += 1000,
                Err(at) => now = at.min(next_debit.max(now)),
            }
        }
        assert!((1_000_000..=1_012_000).contains(&sent), "{sent}");
        // A lower rate holds from when it is set.
        p.set_rate(now, 100_000);
        let start = now;
        let mut bytes = 0u64;
        while now < start + Duration::from_secs(1) {
            match p.try_take(now, 972) {
                Ok(()) => bytes += 1000,
                Err(at) => now = at,
            }
        }
        assert!(bytes <= 102_000, "{bytes}");
    }

    #[test]
    fn every_symbol_follows_its_page_and_long_runs_repeat_it_three_times() {
        let keys = hubcast_keys::ChannelKeys::generate(&mut rand::rngs::OsRng, 0, 100);
        let signer = Signer::new(hubcast_keys::SignerKeys::load_from(&keys));
        let data = vec![9u8; 300 * 128];
        let plan = ObjectPlan::new(
            "x".into(),
            ObjectId::of(&data),
            data.len() as u64,
            data.len() as u32,
            128,
            1,
            10,
        );
        let p = PreparedChunk::prepare(&signer, &plan.manifest, 0, &data);
        let out = p.round_datagrams(signer.channel_tag(), 0.1, 0);
        let mut seen_pages = std::collections::HashMap::new();
        let mut tickets = 0;
        for d in &out {
            match wire::decode(d).unwrap().1 {
                wire::Datagram::Ticket(_) => tickets += 1,
                wire::Datagram::TablePage(pg) => *seen_pages.entry(pg.page_index as usize).or_insert(0) += 1,
                wire::Datagram::Symbol(s) => {
                    assert!(seen_pages.contains_key(&page_of(s.esi)), "ESI {}", s.esi)
                }
                wire::Datagram::Manifest(_)
                | wire::Datagram::Feedback(_)
                | wire::Datagram::CatalogRoot(_)
                | wire::Datagram::Revocations(_)
                | wire::Datagram::RootRotation(_) => {
                    unreachable!()
                }
            }
        }
        assert_eq!(tickets, 3);
        // 330 ESIs: pages 0..3 are full runs of 100, page 3 a run of 30.
        assert_eq!(seen_pages.len(), 4);
        assert!(seen_pages.values().all(|n| *n == 3), "{seen_pages:?}");

        // A resend of scattered ESIs (every other one of pages 0 and 1): still
        // three copies of each page, not one per gap.
        let scattered: Vec<u32> = (0..200).step_by(2).collect();
        let out = p.datagrams(signer.channel_tag(), &scattered);
        let pages = out.iter().filter(|d| matches!(wire::decode(d).unwrap().1, wire::Datagram::TablePage(_)));
        assert_eq!(pages.count(), 6);
    }

    #[test]
    fn a_manifest_change_takes_effect_in_order_with_the_datagrams() {
        let mut s = Sender::new(vec![b"old".to_vec()], 1, Pacer::new(u64::MAX / 2, 1 << 20));
        s.handle_datagrams([b"d1".to_vec(), b"d2".to_vec()]);
        s.handle_manifest(0, b"new".to_vec());
        s.handle_datagrams([b"d3".to_vec()]);
        let now = Instant::now();
        let sent: Vec<Vec<u8>> = std::iter::from_fn(|| s.poll_transmit(now)).collect();
        // One manifest after every datagram: the old one until d2 is out.
        assert_eq!(sent, [&b"d1"[..], b"old", b"d2", b"new", b"d3"].map(<[u8]>::to_vec));
        assert_eq!(s.queued(), 0);
    }
}
