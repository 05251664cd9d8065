//! The hub machine's side toward its peers and the origin service: answers
//! checked and credited or struck, announcements heard and made, the
//! tracker's listings, and the repair plan with its fetches, NAKs and
//! lookups.

use super::*;

impl Hub {
    /// A peer's answer: check it like multicast, credit or strike the peer.
    pub(super) fn on_fetched(&mut self, now: Instant, unix: u64, id: u64, answer: Result<&[&[u8]], Outcome>) {
        // Every fetch put out comes back once; an unknown id is ignored.
        let Some((peer, object_id, index)) = self.fetches.remove(&id) else { return };
        self.switch_source(Source::Peer, Some(peer));
        let mismatches = self.receiver.drops().get(DropReason::DigestMismatch);
        let outcome = match answer {
            Ok(datagrams) => {
                for d in datagrams {
                    self.receiver.handle_repair_datagram(unix, d);
                }
                Outcome::Served
            }
            Err(outcome) => outcome,
        };
        // Check this chunk's symbols now, so what they earn is this peer's.
        self.receiver.settle_chunk(object_id, index);
        self.flush_events();
        let bad = self.receiver.drops().get(DropReason::DigestMismatch) - mismatches;
        if bad > 0 {
            self.strike(now, peer, bad, Via::Island);
        }
        self.repairer.handle_response(id, outcome);
        self.plan_repair(now);
    }

    pub(super) fn on_bridge(&mut self, now: Instant, unix: u64, bridge: NodeId, datagrams: &[&[u8]]) {
        self.switch_source(Source::Bridge, Some(bridge));
        self.fed.feed_heard(now);
        let drops = self.receiver.drops().clone();
        let mut touched: Vec<(ObjectId, u32)> = Vec::new();
        for d in datagrams {
            if let Some(key) = self.receiver.handle_datagram(unix, d).and_then(|h| h.chunk) {
                if touched.last() != Some(&key) {
                    touched.push(key);
                    self.fed.insert(now, key);
                }
                self.position = Some(key);
            }
        }
        // A feed (or a stripe) brings a chunk's symbols together: a chunk
        // holding K of them decodes now, not when the next chunk or the idle
        // tick comes (a live segment's last chunk would wait for the next
        // segment).
        for (object_id, index) in touched {
            self.receiver.settle_chunk(object_id, index);
        }
        self.flush_events();
        if let Some(b) = self.feeding.filter(|b| b.id == bridge) {
            self.peers.feeding(now, b.id, b.addr, true);
        }
        let bad = strikes_between(&drops, self.receiver.drops());
        if bad > 0 {
            self.strike(now, bridge, bad, Via::Bridge);
        }
    }

    pub(super) fn strike(&mut self, now: Instant, peer: NodeId, n: u64, via: Via) {
        let n = n.min(u64::from(u32::MAX)) as u32;
        let strike = self.peers.strike(now, &peer, n);
        self.event(HubEvent::Struck { peer, n, strike, via });
        if via == Via::Bridge {
            self.judge_bridge(now, peer, strike);
        }
    }

    pub(super) fn on_announcement(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) {
        let Ok(a) = Announcement::decode(datagram) else {
            self.event(HubEvent::BadAnnouncement);
            return;
        };
        if a.channel_tag != self.receiver.channel_tag() || a.node_id == self.config.node_id.0 {
            return;
        }
        let addr = SocketAddr::new(from.ip(), a.quic_port);
        // A newcomer hears from us at once, not at our next announcement.
        if self.peers.heard(now, NodeId(a.node_id), addr, a.objects, a.loss) {
            self.event(HubEvent::PeerFound { peer: NodeId(a.node_id), addr, via: Via::Island });
            self.announce_soon = true;
        }
    }

    /// The tracker named hubs holding a chunk: they become candidates for it.
    pub(super) fn on_listed(
        &mut self,
        now: Instant,
        object_id: ObjectId,
        index: u32,
        hubs: Option<&[ListedHub]>,
    ) {
        let Some(hubs) = hubs else {
            self.event(HubEvent::TrackerAnswer(None));
            return;
        };
        let me = self.config.node_id.0;
        let mut others = 0;
        for h in hubs.iter().filter(|h| h.node_id != me) {
            others += 1;
            if self.peers.listed(now, NodeId(h.node_id), h.addr, object_id, index) {
                self.event(HubEvent::PeerFound { peer: NodeId(h.node_id), addr: h.addr, via: Via::Tracker });
            }
        }
        self.event(HubEvent::TrackerAnswer(Some(others)));
        if others > 0 {
            self.plan_repair(now);
        }
    }

    /// Plan repair with what is missing now, and put the requests out.
    pub(super) fn plan_repair(&mut self, now: Instant) {
        if !self.config.peer_repair {
            return;
        }
        let needs = self.receiver.needs(NEEDS_PER_PLAN);
        let peers = &self.peers;
        self.repairer.handle_tick(now, &needs, |n| peers.candidates(now, n.object_id, n.index));
        while let Some(r) = self.repairer.poll_request() {
            let Some(addr) = self.peers.addr(&r.peer) else {
                self.repairer.handle_response(r.id, Outcome::Failed);
                continue;
            };
            let req = ChunkRequest { object_id: r.object_id, index: r.index, table: r.table, esis: r.esis };
            self.fetches.insert(r.id, (r.peer, r.object_id, r.index));
            self.out.push_back(Output::Fetch { id: r.id, peer: r.peer, addr, req });
        }
        let mut naks: Vec<Nak> = std::iter::from_fn(|| self.repairer.poll_nak()).collect();
        // The origin repairs by multicast on the island it sends to: a hub
        // that does not hear the origin's multicast now (a desert hub, one
        // fed by a bridge or a relay) would never hear the answer. It
        // repairs from peers, and asks its bridge to feed again each chunk
        // a feed (or a relay on its LAN) brought datagrams of that has not
        // decoded [`REFEED_AFTER`] later: a chunk comes in one burst, so
        // what is missing then was lost. Not on the NAK's schedule: peers
        // that trickle symbols over QUIC at 50% loss keep a NAK back, and
        // fed hubs sat 30 s on their last chunks. Once the feed has been
        // quiet that long (the bridge fed all it has), every chunk missing:
        // a feed taken up from another bridge's position skips the chunks
        // this bridge completed before it.
        if !self.hears_origin(now) {
            self.naks_withheld += naks.len() as u64;
            naks.clear();
            if let Some(bridge) = self.feeding() {
                let idle = self.fed.feed_idle(now);
                let chunks = self.fed.due(now, needs.iter().map(|n| (n.object_id, n.index)), idle);
                if !chunks.is_empty() {
                    self.out.push_back(Output::Refeed { bridge: bridge.id, chunks });
                }
            }
        }
        match (self.tracker, naks.first().cloned()) {
            (_, None) => {}
            (Some(origin), Some(_)) => {
                for batch in naks.chunks(MAX_NAKS_PER_STREAM) {
                    let loss = self.loss.percent();
                    self.out.push_back(Output::Naks { origin, naks: batch.to_vec(), loss });
                }
            }
            (None, Some(nak)) => {
                if self.last_nak_warning.is_none_or(|t| now.saturating_duration_since(t) >= NAK_WARN_EVERY) {
                    self.last_nak_warning = Some(now);
                    self.event(HubEvent::NoOrigin(nak));
                }
            }
        }
        // Chunks no peer at hand holds: ask the tracker who does.
        while let Some(l) = self.repairer.poll_lookup() {
            if let Some(tracker) = self.tracker {
                self.out.push_back(Output::Lookup {
                    tracker,
                    object_id: l.object_id,
                    index: l.index,
                    limit: LOOKUP_LIMIT,
                });
            }
        }
        while let Some(done) = self.repairer.poll_repaired() {
            self.event(HubEvent::Repaired(done));
        }
    }

    /// Say on the island what this hub holds, forget peers gone silent, and
    /// register with the tracker when it is time.
    pub(super) fn announce(&mut self, now: Instant) {
        self.announce_soon = false;
        self.next_announce = now + ANNOUNCE_EVERY;
        // A repeated manifest may name it without an event (a restarted hub).
        self.learn_tracker();
        let gone = self.peers.expire(now);
        if !gone.is_empty() {
            self.event(HubEvent::PeersGone(gone));
        }
        // Live segments first: an announcement holds what fits.
        let held = self.holdings.iter().filter(|(_, b)| b.count() > 0);
        let (mut objects, archive): (Vec<_>, Vec<_>) =
            held.map(|(id, b)| (*id, b.clone())).partition(|(id, _)| self.live.contains(id));
        objects.extend(archive);
        let a = Announcement {
            channel_tag: self.receiver.channel_tag(),
            node_id: self.config.node_id.0,
            quic_port: self.config.quic_port,
            loss: self.lan_loss(now),
            objects,
        };
        let (datagram, _) = a.encode();
        self.out.push_back(Output::Announce(datagram));
        let due = self.last_registered.is_none_or(|t| now.saturating_duration_since(t) >= REGISTER_EVERY);
        if let Some(tracker) = self.tracker.filter(|_| due) {
            self.last_registered = Some(now);
            let mut bytes = 0;
            let holdings = a
                .objects
                .into_iter()
                .take(MAX_REPORTED_OBJECTS)
                .take_while(|(_, b)| {
                    bytes += b.bytes().len() + 48;
                    bytes <= MAX_REPORT_BYTES
                })
                .collect();
            let trust = (self.receiver.root().1, self.receiver.revocation_list().map_or(0, |l| l.version));
            self.out.push_back(Output::Register { tracker, holdings, trust });
        }
    }
}

/// Drops between two readings of the receiver's counters that count against
/// the peer whose datagrams were handled in between: everything that failed a
/// check or broke the format. Duplicates, evictions and expiry are not its
/// doing; nor is what the channel's keys decide since: a certificate of a
/// root this hub has not followed yet (the peer heard the rotation first: a
/// bridge's symbols over UDP overtake the statement on its stream), one
/// revoked or ended after the peer stored what it signed. Those are refused
/// before the datagram's own signature check (a certificate's is checked
/// once, then cached): a hostile peer gains nothing sending them that it
/// would not by sending nothing.
pub(super) fn strikes_between(before: &DropCounters, now: &DropCounters) -> u64 {
    now.iter()
        .zip(before.iter())
        .filter(|((r, _), _)| {
            !r.is_benign()
                && !matches!(
                    r,
                    DropReason::PendingEvicted
                        | DropReason::ActiveEvicted
                        | DropReason::TooManyObjects
                        | DropReason::Expired
                        | DropReason::RolledBack
                        | DropReason::UntrustedRoot
                        | DropReason::CertRevoked
                        | DropReason::CertValidity
                )
        })
        .map(|((_, n), (_, b))| n.saturating_sub(b))
        .sum()
}

/// Chunks a feed brought datagrams of that the hub remembers (a bridge's
/// history holds as many).
const FED_KEPT: usize = 8192;
/// A fed chunk not decoded this long after its datagrams came is asked of
/// the bridge again; and again this long after each ask.
pub const REFEED_AFTER: Duration = Duration::from_secs(3);

/// The last [`FED_KEPT`] chunks feeds or a relay brought any datagram of
/// (checked or not: a ticket lost in every copy leaves a chunk's symbols
/// waiting, and none held), each with when to ask for it again.
#[derive(Default)]
pub(super) struct FedChunks {
    order: VecDeque<(ObjectId, u32)>,
    due: HashMap<(ObjectId, u32), Instant>,
    /// When the feed last brought anything (or began).
    feed_heard: Option<Instant>,
}

impl FedChunks {
    /// The feed brought datagrams now, or a new one begins.
    pub(super) fn feed_heard(&mut self, now: Instant) {
        self.feed_heard = Some(now);
    }

    /// The feed has brought nothing for [`REFEED_AFTER`]: the bridge has
    /// fed all it has.
    fn feed_idle(&self, now: Instant) -> bool {
        self.feed_heard.is_some_and(|t| now.saturating_duration_since(t) >= REFEED_AFTER)
    }

    /// Datagrams of `key` came now (the first of a burst, or of a batch).
    pub(super) fn insert(&mut self, now: Instant, key: (ObjectId, u32)) {
        if self.order.back() != Some(&key) {
            self.insert_due(key, now + REFEED_AFTER);
        }
    }

    fn insert_due(&mut self, key: (ObjectId, u32), at: Instant) {
        if self.due.insert(key, at).is_none() {
            self.order.push_back(key);
            if self.order.len() > FED_KEPT {
                if let Some(old) = self.order.pop_front() {
                    self.due.remove(&old);
                }
            }
        }
    }

    /// Of `needed` (chunks not decoded), the fed ones due to be asked
    /// again (with `idle`, the feed quiet: every one), at most
    /// [`REFEED_PER_PLAN`]; each is next due [`REFEED_AFTER`] from now.
    pub(super) fn due(
        &mut self,
        now: Instant,
        needed: impl Iterator<Item = (ObjectId, u32)>,
        idle: bool,
    ) -> Vec<(ObjectId, u32)> {
        let mut out = Vec::new();
        for key in needed {
            if idle && !self.due.contains_key(&key) {
                self.insert_due(key, now);
            }
            if let Some(at) = self.due.get_mut(&key).filter(|at| **at <= now) {
                *at = now + REFEED_AFTER;
                out.push(key);
                if out.len() == REFEED_PER_PLAN {
                    break;
                }
            }
        }
        out
    }
}

/// Chunks asked of the bridge again at once, at most.
const REFEED_PER_PLAN: usize = 32;
