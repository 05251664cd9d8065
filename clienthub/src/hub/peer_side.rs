//! The hub's peer side: QUIC endpoint and services at start, repair planning
//! and its answers, announcements, and the peer table's one strike ledger.

use super::*;

/// Bind the QUIC endpoint, start serving peers, join the control group.
#[allow(clippy::too_many_arguments)]
pub(super) fn start_peers(
    cfg: &HubConfig,
    mc: &MulticastConfig,
    node: &hubcast_keys::NodeKey,
    channel_tag: u64,
    holdings: BTreeMap<ObjectId, ChunkBitmap>,
    store: &mpsc::Sender<StoreJob>,
    status: &StatusBoard,
    cancel: &CancellationToken,
) -> Result<PeerSide, HubError> {
    let listen = cfg.peer_listen.unwrap_or(match mc.interface {
        Interface::V4(a) => SocketAddr::from((a, 0)),
        Interface::V6Index(_) => SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 0)),
    });
    let origin = cfg.tracker.as_deref().map(str::parse::<NodeAddr>).transpose().map_err(HubError::Tracker)?;
    let mut endpoint = NodeEndpoint::bind(listen, node).map_err(|e| HubError::Peer(e.to_string()))?;
    endpoint.limits = cfg.quic_limits();
    let endpoint = Arc::new(endpoint);
    let quic = endpoint.local_addr().map_err(|e| HubError::Peer(e.to_string()))?;
    let mut control_cfg = mc.clone();
    control_cfg.group = SocketAddr::new(mc.group.ip(), mc.group.port().wrapping_add(1));
    let control = hubcast_transport::multicast::receiver(&control_cfg)?;
    let control_out = hubcast_transport::multicast::sender(&control_cfg)?;

    // Serving: stored chunks through the store worker, partial ones through the loop.
    let (partial_tx, partial_rx) = mpsc::channel(STORE_QUEUE);
    let upload = cfg.upload_rate.bytes_per_sec() as f64;
    // Bridges serve subscriptions from the feed; --remulticast sends it on the LAN.
    let feed = (cfg.bridge || cfg.remulticast.is_some() || cfg.stripes > 0)
        .then(|| Feed::new(cfg.back_buffer(), cfg.bridge_fanout));
    let server = Server::new(
        store.clone(),
        partial_tx,
        upload,
        status.clone(),
        feed.clone().filter(|_| cfg.bridge || cfg.stripes > 0),
    );
    let remulticasting = Arc::new(AtomicBool::new(false));
    let remulticast_bytes = Arc::new(AtomicU64::new(0));
    if let (Some(group), Some(feed)) = (cfg.remulticast, &feed) {
        let mut out = MulticastConfig::new(group);
        out.interface = mc.interface;
        let socket = hubcast_transport::multicast::sender(&out)?;
        info!(%group, "while fed by a bridge, the feed goes out again as multicast on {group}");
        let task = crate::bridge::remulticast(
            feed.clone(),
            server.clone(),
            socket,
            group,
            remulticasting.clone(),
            upload,
            remulticast_bytes.clone(),
            cancel.clone(),
        );
        tokio::spawn(task);
    }
    tokio::spawn(crate::peers::serve(endpoint.clone(), server.clone(), cancel.clone()));
    info!(%quic, control = %control_cfg.group, upload = %cfg.upload_rate,
        origin = %origin.map_or("from the channel's manifests".into(), |o| o.to_string()), "peer repair on");
    if let Some(o) = origin {
        status.set_tracker(o.to_string(), "--tracker");
    }

    // The desert side: a task that keeps a subscription to a bridge while the
    // loop wants one.
    let (want, want_rx) = watch::channel(FeedWant::default());
    let (feed_tx, feed_rx) = mpsc::channel(64);
    let fixed: Vec<NodeAddr> = cfg.bridge_peers.iter().filter_map(|b| b.parse::<NodeAddr>().ok()).collect();
    let fetcher = Fetcher::new(endpoint.clone());
    let (position, position_rx) = watch::channel(None);
    // The tracker as known now (--tracker) and later (the manifests): a
    // forest hub joins through a hub it names.
    let (tracker, tracker_rx) = watch::channel(origin);
    if cfg.stripes > 0 {
        // The stripe forest: a bridge is its root; a desert hub joins it at
        // its first --bridge-peer, and takes its stripes instead of a feed.
        let me_addr = match (quic.ip().is_unspecified(), mc.interface) {
            (true, Interface::V4(ip)) => SocketAddr::new(ip.into(), quic.port()),
            _ => quic,
        };
        let peer = |a: &NodeAddr| hubcast_protocol::peer_wire::ForestPeer { node_id: a.id.0, addr: a.addr };
        let root = if cfg.bridge { None } else { fixed.first().map(peer) };
        let forest = crate::forest::Forest {
            endpoint: endpoint.clone(),
            fetcher: fetcher.clone(),
            me: hubcast_protocol::peer_wire::ForestPeer { node_id: node.id().0, addr: me_addr },
            root,
            stripes: cfg.stripes,
            events: feed_tx.clone(),
            status: status.clone(),
            position: position_rx,
            tracker: tracker_rx,
        };
        server.set_forest(crate::forest::start(forest, cancel.clone()));
    }
    if cfg.stripes == 0 || cfg.bridge {
        tokio::spawn(crate::bridge::follow(endpoint.clone(), fixed, want_rx, feed_tx, cancel.clone()));
    }
    status.with_feed(|f| {
        f.mode = match (cfg.no_multicast, cfg.stripes > 0 && !cfg.bridge) {
            (_, true) => "forest",
            (true, false) => "searching",
            (false, false) => "multicast",
        }
    });

    let (done_tx, done_rx) = mpsc::channel(256);
    let (lookup_tx, lookup_rx) = mpsc::channel(64);
    Ok(PeerSide {
        feed,
        want,
        feed_rx,
        bridge_bytes: 0,
        feeding: None,
        last_no_bridge_warning: None,
        searching_since: None,
        advertised: false,
        in_forest: cfg.stripes > 0,
        tracker,
        naks_withheld: 0,
        remulticasting,
        remulticast_bytes,
        position,
        repairer: Repairer::new(RepairConfig::default(), rand::random()),
        table: PeerTable::default(),
        fetcher,
        server,
        done_tx,
        done_rx,
        lookup_tx,
        lookup_rx,
        partial_rx,
        control,
        control_out,
        control_group: control_cfg.group,
        node_id: node.id(),
        quic_port: quic.port(),
        channel_tag,
        holdings,
        peer_bytes: 0,
        origin_from_flag: origin.is_some(),
        origin_bytes: 0,
        last_registered: None,
        last_nak_warning: None,
        announce_soon: false,
    })
}

/// A repair request that ended, back from its fetch task.
pub(super) struct FetchDone {
    pub(super) id: u64,
    pub(super) peer: NodeId,
    pub(super) object_id: ObjectId,
    pub(super) index: u32,
    pub(super) result: Result<DatagramFrames, Outcome>,
}

/// The tracker's answer to a lookup: hubs holding the chunk complete.
pub(super) struct LookupDone {
    pub(super) object_id: ObjectId,
    pub(super) index: u32,
    pub(super) hubs: Result<Vec<ListedHub>, Outcome>,
}

/// Peer repair, when enabled: everything the receive loop needs for it.
pub(super) struct PeerSide {
    pub(super) repairer: Repairer<NodeId>,
    pub(super) table: PeerTable,
    pub(super) fetcher: Arc<Fetcher>,
    pub(super) server: Arc<Server>,
    pub(super) done_tx: mpsc::Sender<FetchDone>,
    pub(super) done_rx: mpsc::Receiver<FetchDone>,
    pub(super) lookup_tx: mpsc::Sender<LookupDone>,
    pub(super) lookup_rx: mpsc::Receiver<LookupDone>,
    pub(super) partial_rx: mpsc::Receiver<PartialAsk>,
    pub(super) control: tokio::net::UdpSocket,
    pub(super) control_out: tokio::net::UdpSocket,
    pub(super) control_group: SocketAddr,
    pub(super) node_id: NodeId,
    pub(super) quic_port: u16,
    pub(super) channel_tag: u64,
    /// What this hub holds complete, announced to peers.
    pub(super) holdings: BTreeMap<ObjectId, ChunkBitmap>,
    /// Verified symbol bytes peers served.
    pub(super) peer_bytes: u64,
    /// `--tracker` named the origin: the manifests' tracker is not taken.
    pub(super) origin_from_flag: bool,
    /// Verified symbol bytes of the origin's multicast repair.
    pub(super) origin_bytes: u64,
    /// When this hub last registered with the tracker (the origin service).
    pub(super) last_registered: Option<Instant>,
    pub(super) last_nak_warning: Option<Instant>,
    pub(super) announce_soon: bool,
    /// The chunks this hub completes, for `--bridge` subscribers and for
    /// `--remulticast`.
    pub(super) feed: Option<Arc<Feed>>,
    /// What the desert side's task should do, and what it reports.
    pub(super) want: watch::Sender<FeedWant>,
    pub(super) feed_rx: mpsc::Receiver<FeedEvent>,
    /// Verified symbol bytes that came in bridge feeds.
    pub(super) bridge_bytes: u64,
    /// The bridge feeding this hub now.
    pub(super) feeding: Option<NodeAddr>,
    pub(super) last_no_bridge_warning: Option<Instant>,
    /// Since when the feed task has found no bridge to ask.
    pub(super) searching_since: Option<Instant>,
    /// Registered with the tracker as a bridge.
    pub(super) advertised: bool,
    /// Registers with the tracker as a hub of the stripe forest.
    pub(super) in_forest: bool,
    /// The origin service (tracker, and where NAKs go), as known now: from
    /// `--tracker`, or later the manifests. The forest task watches it.
    pub(super) tracker: watch::Sender<Option<NodeAddr>>,
    /// NAKs not sent: this hub did not hear the origin's multicast.
    pub(super) naks_withheld: u64,
    /// `--remulticast` sends the feed on the LAN now (this hub is fed by a
    /// bridge), and the bytes it sent.
    pub(super) remulticasting: Arc<AtomicBool>,
    pub(super) remulticast_bytes: Arc<AtomicU64>,
    /// The chunk the channel last brought, for the forest's stripe
    /// subscriptions to resume from.
    pub(super) position: watch::Sender<Option<(ObjectId, u32)>>,
}

impl Loop<'_> {
    /// Plan repair with what is missing now and start the requests.
    pub(super) fn plan_repair(&mut self) {
        let Some(p) = self.peers.as_mut() else { return };
        let now = Instant::now();
        let needs = self.receiver.needs(64);
        let table = &p.table;
        p.repairer.handle_tick(now, &needs, |n| table.candidates(now, n.object_id, n.index));
        while let Some(r) = p.repairer.poll_request() {
            let Some(addr) = p.table.addr(&r.peer) else {
                p.repairer.handle_response(r.id, Outcome::Failed);
                continue;
            };
            let req = ChunkRequest { object_id: r.object_id, index: r.index, table: r.table, esis: r.esis };
            let (fetcher, done) = (p.fetcher.clone(), p.done_tx.clone());
            tokio::spawn(async move {
                let result = fetcher.fetch(r.peer, addr, &req).await;
                let _ = done
                    .send(FetchDone {
                        id: r.id,
                        peer: r.peer,
                        object_id: req.object_id,
                        index: req.index,
                        result,
                    })
                    .await;
            });
        }
        let mut naks: Vec<Nak> = std::iter::from_fn(|| p.repairer.poll_nak()).collect();
        // The origin repairs by multicast on the island it sends to: a hub
        // that does not hear the origin's multicast now (a desert hub, one fed
        // by a bridge or a relay) would never hear the answer. It repairs from
        // peers and its bridge only.
        let after = Duration::from_secs(self.cfg.desert_after_secs);
        if self.last_origin_multicast.is_none_or(|t| t.elapsed() >= after) {
            p.naks_withheld += naks.len() as u64;
            naks.clear();
        }
        match (p.origin(), naks.first()) {
            (_, None) => {}
            (Some(origin), Some(_)) => {
                for batch in naks.chunks(MAX_NAKS_PER_STREAM) {
                    let (fetcher, status, batch) = (p.fetcher.clone(), self.status.clone(), batch.to_vec());
                    tokio::spawn(async move {
                        let failed = match fetcher.send_naks(origin, &batch).await {
                            Ok(refused) => refused,
                            Err(_) => batch.len() as u64,
                        };
                        if failed > 0 {
                            debug!(%origin, failed, "NAKs refused or not delivered; the hubs retry");
                            status.origin_nak_failed(failed);
                        }
                    });
                }
            }
            (None, Some(nak)) => {
                if p.last_nak_warning.is_none_or(|t| t.elapsed() >= NAK_WARN_EVERY) {
                    p.last_nak_warning = Some(now);
                    warn!(object = %nak.object_id, chunk = nak.index, missing = nak.missing,
                        "no peer can repair this chunk and no origin is known (--tracker); it waits for the next carousel round");
                }
            }
        }
        // Chunks no peer at hand holds: ask the tracker who does.
        while let Some(l) = p.repairer.poll_lookup() {
            let Some(tracker) = p.origin() else { continue };
            let (fetcher, done) = (p.fetcher.clone(), p.lookup_tx.clone());
            tokio::spawn(async move {
                let hubs = fetcher.holders(tracker, l.object_id, l.index, LOOKUP_LIMIT).await;
                let _ = done.send(LookupDone { object_id: l.object_id, index: l.index, hubs }).await;
            });
        }
        while p.repairer.poll_repaired().is_some() {}
    }

    /// The tracker named hubs holding a chunk: they become candidates for it.
    pub(super) fn on_lookup_done(&mut self, done: LookupDone) {
        let Some(p) = self.peers.as_mut() else { return };
        let Ok(hubs) = done.hubs else {
            debug!(object = %done.object_id, chunk = done.index, "tracker lookup failed; again later");
            self.status.tracker_answer(None);
            return;
        };
        let now = Instant::now();
        let others: Vec<&ListedHub> = hubs.iter().filter(|h| h.node_id != p.node_id.0).collect();
        for h in &others {
            if p.table.listed(now, NodeId(h.node_id), h.addr, done.object_id, done.index) {
                info!(peer = %NodeId(h.node_id), addr = %h.addr, "peer found through the tracker");
            }
        }
        self.status.tracker_answer(Some(others.len()));
        if !others.is_empty() {
            self.plan_repair();
        }
    }

    /// A peer's answer: check it like multicast, credit or strike the peer.
    pub(super) async fn on_fetch_done(&mut self, done: FetchDone) -> bool {
        let Some(p) = self.peers.as_mut() else { return true };
        let before = (
            self.receiver.stats().symbol_bytes_accepted,
            self.receiver.drops().get(DropReason::DigestMismatch),
        );
        let outcome = match &done.result {
            Ok(datagrams) => {
                let now = unix_now();
                for d in datagrams.iter() {
                    self.receiver.handle_repair_datagram(now, d);
                }
                Outcome::Served
            }
            Err(outcome) => *outcome,
        };
        // Check this chunk's symbols now, so what they earn is this peer's.
        self.receiver.settle_chunk(done.object_id, done.index);
        let gained = self.receiver.stats().symbol_bytes_accepted - before.0;
        let mismatches = self.receiver.drops().get(DropReason::DigestMismatch) - before.1;
        p.peer_bytes += gained;
        p.server.credit(&done.peer, gained);
        if mismatches > 0 {
            let strike =
                p.table.strike(Instant::now(), &done.peer, mismatches.min(u64::from(u32::MAX)) as u32);
            if strike.banned_now {
                warn!(peer = %done.peer, strikes = strike.strikes,
                    "peer banned for {} s: it served symbols that fail their digests", peers::BAN_FOR.as_secs());
            }
        }
        p.repairer.handle_response(done.id, outcome);
        self.status.record_peer_bytes(p.peer_bytes);
        if !self.drain_events(Source::Peer).await {
            return false;
        }
        self.plan_repair();
        true
    }

    /// The origin's repair, heard on the control group: checked like multicast,
    /// counted as the origin's.
    pub(super) async fn on_origin_repair(&mut self, datagrams: &[Vec<u8>]) -> bool {
        let before = self.receiver.stats().symbol_bytes_accepted;
        let now = unix_now();
        let mut chunks = Vec::new();
        for d in datagrams {
            self.receiver.handle_repair_datagram(now, d);
            let key = wire::decode_header(d).ok().and_then(|h| wire::peek_chunk(d, h.kind));
            if let Some(key) = key.filter(|k| !chunks.contains(k)) {
                chunks.push(key);
            }
        }
        for (object_id, index) in chunks {
            self.receiver.settle_chunk(object_id, index);
        }
        if let Some(p) = self.peers.as_mut() {
            p.origin_bytes += self.receiver.stats().symbol_bytes_accepted - before;
            self.status.record_origin_bytes(p.origin_bytes);
        }
        self.drain_events(Source::Origin).await
    }

    pub(super) fn on_partial_ask(&self, ask: PartialAsk) {
        let _ = ask.reply.send(answer_partial(&ask.req, &self.receiver));
    }

    pub(super) fn on_announcement(&mut self, datagram: &[u8], from: SocketAddr) {
        let Some(p) = self.peers.as_mut() else { return };
        let Ok(a) = Announcement::decode(datagram) else {
            self.status.peer_message_dropped();
            return;
        };
        if a.channel_tag != p.channel_tag || a.node_id == p.node_id.0 {
            return;
        }
        let addr = SocketAddr::new(from.ip(), a.quic_port);
        // A newcomer hears from us at once, not at our next announcement.
        if p.table.heard(Instant::now(), NodeId(a.node_id), addr, a.objects) {
            info!(peer = %NodeId(a.node_id), %addr, "peer found on this island");
            p.announce_soon = true;
        }
    }

    pub(super) async fn announce(&mut self) {
        let Some(p) = self.peers.as_mut() else { return };
        p.announce_soon = false;
        // A repeated manifest may name it without an event (a restarted hub).
        p.learn_tracker(self.receiver.tracker(), self.status);
        let now = Instant::now();
        for gone in p.table.expire(now) {
            info!(peer = %gone, "peer gone (not heard of for {} s)", peers::PEER_EXPIRY.as_secs());
        }
        let (table, origin) = (&p.table, p.origin().map(|o| o.id));
        p.fetcher.retain(|id| table.addr(id).is_some() || Some(*id) == origin);
        let a = Announcement {
            channel_tag: p.channel_tag,
            node_id: p.node_id.0,
            quic_port: p.quic_port,
            // Live segments first: an announcement holds what fits, and
            // their repair has a deadline.
            objects: {
                let held = p.holdings.iter().filter(|(_, b)| b.count() > 0);
                let (mut objects, archive): (Vec<_>, Vec<_>) =
                    held.map(|(id, b)| (*id, b.clone())).partition(|(id, _)| self.live.is_segment(id));
                objects.extend(archive);
                objects
            },
        };
        let (datagram, _) = a.encode();
        if let Err(e) = p.control_out.send_to(&datagram, p.control_group).await {
            debug!("announcing on {}: {e}", p.control_group);
        }
        if let Some(tracker) =
            p.origin().filter(|_| p.last_registered.is_none_or(|t| t.elapsed() >= REGISTER_EVERY))
        {
            p.last_registered = Some(now);
            let mut bytes = 0;
            let holdings: Vec<_> = a
                .objects
                .into_iter()
                .take(MAX_REPORTED_OBJECTS)
                .take_while(|(_, b)| {
                    bytes += b.bytes().len() + 48;
                    bytes <= MAX_REPORT_BYTES
                })
                .collect();
            let fetcher = p.fetcher.clone();
            let role = (p.advertised, p.in_forest);
            tokio::spawn(async move {
                if fetcher.register(tracker, holdings, role).await.is_err() {
                    debug!(%tracker, "registering with the tracker failed; again in {} s", REGISTER_EVERY.as_secs());
                }
            });
        }
        p.table.note_rtts(&p.fetcher.rtts());
        let stats = p.repairer.stats();
        let served = p.server.served();
        let takers_deferred = p.server.takers_deferred();
        let (paced, paced_ms, upload_busy) = p.server.paced();
        let (received, views) = (p.server.received(), p.table.view(now));
        let listed = views.into_iter().map(|v| PeerStatus {
            node_id: v.id.to_string(),
            addr: v.addr.to_string(),
            last_seen_ms: v.since_seen.as_millis() as u64,
            bytes_from: received.get(&v.id).copied().unwrap_or(0),
            bytes_to: served.get(&v.id).copied().unwrap_or(0),
            strikes: v.strikes,
            banned: v.banned,
            rtt_ms: v.rtt.map(|r| r.as_secs_f64() * 1e3),
            via: v.via.as_str(),
        });
        self.status.record_peers(listed.collect(), |r| {
            r.requests = stats.requests;
            r.symbols_requested = stats.esis_requested;
            r.refused = stats.refusals;
            r.failed = stats.failures;
            r.chunks_repaired = stats.repaired;
            r.origin_naks = stats.naks_sent - p.naks_withheld.min(stats.naks_sent);
            r.origin_naks_withheld = p.naks_withheld;
            r.tracker_lookups = stats.lookups;
            r.bytes_served = served.values().sum();
            r.takers_deferred = takers_deferred;
            r.upload_paced = paced;
            r.upload_paced_ms = paced_ms;
            r.upload_busy = upload_busy;
        });
    }
}

impl PeerSide {
    /// Datagrams from a bridge failed their checks: strikes in the peer
    /// table's one ledger; at [`peers::STRIKES_TO_BAN`] the hub leaves that
    /// bridge for good (the feed refreshes its entry, so it is there to count).
    pub(super) fn strike_bridge(&mut self, bridge: NodeId, n: u64, status: &StatusBoard) {
        let strike = self.table.strike(Instant::now(), &bridge, n.min(u64::from(u32::MAX)) as u32);
        let (total, ban) = (strike.strikes, strike.strikes >= peers::STRIKES_TO_BAN);
        status.with_feed(|f| f.strikes += n);
        if ban && !self.want.borrow().banned.contains(&bridge) {
            warn!(%bridge, strikes = total, "a bridge sent datagrams that fail the broadcaster's signature; leaving it for another");
            self.want.send_modify(|w| {
                if w.banned.len() >= crate::bridge::MAX_BANNED_BRIDGES {
                    w.banned.remove(0);
                }
                w.banned.push(bridge);
            });
            status.with_feed(|f| f.bridges_banned += 1);
        }
    }

    /// The origin service, where NAKs go and the hub registers.
    pub(super) fn origin(&self) -> Option<NodeAddr> {
        *self.tracker.borrow()
    }

    /// Take the tracker the channel's verified manifests name, unless
    /// `--tracker` named one. Registers there at the next announcement.
    pub(super) fn learn_tracker(&mut self, named: Option<NodeAddr>, status: &StatusBoard) {
        let Some(t) = named.filter(|t| !self.origin_from_flag && self.origin() != Some(*t)) else { return };
        info!(tracker = %t, "the channel's manifests name the tracker; registering there and sending NAKs there");
        self.tracker.send_replace(Some(t));
        self.last_registered = None;
        status.set_tracker(t.to_string(), "manifest");
    }

    /// Keep the holdings announced to peers in step with what completes.
    pub(super) fn note(&mut self, event: &Event, receiver: &Receiver) {
        match event {
            Event::Manifest(m) => {
                self.holdings.entry(m.object_id).or_insert_with(|| completed(receiver, m));
            }
            Event::ChunkComplete(c) => {
                if let Some(b) = self.holdings.get_mut(&c.object_id()) {
                    b.set(c.index());
                }
            }
        }
    }
}
