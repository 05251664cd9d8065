//! The hub's peer side: QUIC endpoint and services at start, repair planning
//! and its answers, announcements, and the peer table's one strike ledger.

use super::*;
use crate::status::ForestStatus;
use hubcast_keys::NodeId;
use hubcast_protocol::hub::ForestEvent;
use hubcast_protocol::peer_wire::ForestPeer;

/// Bind the QUIC endpoint, start serving peers, join the control group.
pub(super) fn start_peers(
    cfg: &HubConfig,
    mc: &MulticastConfig,
    node: &hubcast_keys::NodeKey,
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
    let server = Server::new(store.clone(), partial_tx, upload, status.clone());
    let services = crate::dispatch::Services::new(
        server.clone(),
        feed.clone().filter(|_| cfg.bridge || cfg.stripes > 0),
    );
    let relay = Arc::new(crate::bridge::Relay::default());
    let mut tasks = JoinSet::new();
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
            relay.clone(),
            upload,
            cancel.clone(),
        );
        tasks.spawn(task);
    }
    tasks.spawn(crate::dispatch::serve(endpoint.clone(), services.clone(), cancel.clone()));
    info!(%quic, control = %control_cfg.group, upload = %cfg.upload_rate,
        origin = %origin.map_or("from the channel's manifests".into(), |o| o.to_string()), "peer repair on");
    if let Some(o) = origin {
        status.set_tracker(o.to_string(), "--tracker");
    }

    // The desert side: a task that carries out the machine's feed orders
    // (one at a time: the queue holds at most two).
    let (feed_cmd, feed_cmd_rx) = mpsc::unbounded_channel();
    let (feed_tx, feed_rx) = mpsc::channel(64);
    let fixed: Vec<NodeAddr> = cfg.bridge_peers.iter().filter_map(|b| b.parse::<NodeAddr>().ok()).collect();
    let fetcher = Fetcher::new(endpoint.clone());
    let (mut forest, mut forest_rx, mut forest_role) = (None, None, None);
    if cfg.stripes > 0 {
        // The stripe forest: a bridge is its root; a desert hub joins it at
        // its first --bridge-peer, and takes its stripes instead of a feed.
        let me_addr = match (quic.ip().is_unspecified(), mc.interface) {
            (true, Interface::V4(ip)) => SocketAddr::new(ip.into(), quic.port()),
            _ => quic,
        };
        let peer = |a: &NodeAddr| ForestPeer { node_id: a.id.0, addr: a.addr };
        let root = if cfg.bridge { None } else { fixed.first().map(peer) };
        let me = ForestPeer { node_id: node.id().0, addr: me_addr };
        forest_role = Some(machine::ForestRole { me, root, stripes: cfg.stripes });
        let (io, link, rx) = ForestIo::new(endpoint.clone(), fetcher.clone(), cfg.stripes);
        services.set_forest(link);
        (forest, forest_rx) = (Some(io), Some(rx));
    }
    if cfg.stripes == 0 || cfg.bridge {
        tasks.spawn(crate::bridge::follow(endpoint.clone(), feed_cmd_rx, feed_tx, cancel.clone()));
    }
    status.with_feed(|f| {
        f.mode = match (cfg.no_multicast, cfg.stripes > 0 && !cfg.bridge) {
            (_, true) => "forest",
            (true, false) => "searching",
            (false, false) => "multicast",
        }
    });

    let (done_tx, done_rx) = mpsc::channel(256);
    let (tracker_tx, tracker_rx) = mpsc::channel(64);
    Ok(PeerSide {
        feed,
        feed_cmd,
        feed_rx,
        bridge_bytes: 0,
        last_no_bridge_warning: None,
        feed_wanted: false,
        advertised: false,
        in_forest: cfg.stripes > 0,
        origin,
        forest,
        forest_rx,
        forest_role,
        relay,
        fetcher,
        server,
        done_tx,
        done_rx,
        tracker_tx,
        tracker_rx,
        partial_rx,
        control,
        control_out,
        control_group: control_cfg.group,
        quic_port: quic.port(),
        peer_bytes: 0,
        origin_bytes: 0,
        tasks,
    })
}

/// A repair request that ended, back from its fetch task.
pub(super) struct FetchDone {
    pub(super) id: u64,
    pub(super) result: Result<DatagramFrames, Outcome>,
}

/// What the tracker answered.
pub(super) enum TrackerAnswer {
    /// To a lookup: hubs holding the chunk complete.
    Listed { object_id: ObjectId, index: u32, hubs: Result<Vec<ListedHub>, Outcome> },
    /// To a registration: the root's statements this hub lacked.
    Statements(Vec<Vec<u8>>),
}

/// Peer repair's IO, when enabled: the QUIC side, the control group, the
/// feed, and the channels their tasks answer on. What to ask and of whom
/// is the machine's.
pub(super) struct PeerSide {
    pub(super) fetcher: Arc<Fetcher>,
    pub(super) server: Arc<Server>,
    pub(super) done_tx: mpsc::Sender<FetchDone>,
    pub(super) done_rx: mpsc::Receiver<FetchDone>,
    pub(super) tracker_tx: mpsc::Sender<TrackerAnswer>,
    pub(super) tracker_rx: mpsc::Receiver<TrackerAnswer>,
    pub(super) partial_rx: mpsc::Receiver<PartialAsk>,
    pub(super) control: tokio::net::UdpSocket,
    pub(super) control_out: tokio::net::UdpSocket,
    pub(super) control_group: SocketAddr,
    pub(super) quic_port: u16,
    /// Verified symbol bytes peers served, the origin's multicast repair
    /// brought, and bridge feeds brought.
    pub(super) peer_bytes: u64,
    pub(super) origin_bytes: u64,
    pub(super) bridge_bytes: u64,
    /// The chunks this hub completes, for `--bridge` subscribers and for
    /// `--remulticast`.
    pub(super) feed: Option<Arc<Feed>>,
    /// The machine's orders to the desert side's task, and what it reports.
    pub(super) feed_cmd: mpsc::UnboundedSender<FeedCmd>,
    pub(super) feed_rx: mpsc::Receiver<FeedEvent>,
    pub(super) last_no_bridge_warning: Option<Instant>,
    /// The machine wanted a feed at the last look (for the log's words when
    /// that changes).
    pub(super) feed_wanted: bool,
    /// Registered with the tracker as a bridge.
    pub(super) advertised: bool,
    /// Registers with the tracker as a hub of the stripe forest.
    pub(super) in_forest: bool,
    /// The origin service named by `--tracker`.
    origin: Option<NodeAddr>,
    /// The stripe forest's IO, what it hands in, and this hub's place.
    pub(super) forest: Option<ForestIo>,
    pub(super) forest_rx: Option<mpsc::Receiver<ForestIn>>,
    pub(super) forest_role: Option<machine::ForestRole>,
    /// `--remulticast`: whether it sends the feed on the LAN now (this hub
    /// is fed by a bridge), the loss it sizes it for, the bytes it sent.
    pub(super) relay: Arc<crate::bridge::Relay>,
    /// Every task the peer side started: its services and one per request
    /// out. Ended (aborted and awaited) when the hub stops.
    pub(super) tasks: JoinSet<()>,
}

impl PeerSide {
    /// The origin service named by `--tracker`.
    pub(super) fn origin(&self) -> Option<NodeAddr> {
        self.origin
    }

    /// Start a task for an output that goes over QUIC; its end comes back on
    /// the loop's channels.
    pub(super) fn start(&mut self, out: Output, status: &StatusBoard) {
        // Reap the requests that ended.
        while self.tasks.try_join_next().is_some() {}
        match out {
            Output::Fetch { id, peer, addr, req } => {
                let (fetcher, done) = (self.fetcher.clone(), self.done_tx.clone());
                self.tasks.spawn(async move {
                    let result = fetcher.fetch(peer, addr, &req).await;
                    let _ = done.send(FetchDone { id, result }).await;
                });
            }
            Output::Naks { origin, naks, loss } => {
                let (fetcher, status) = (self.fetcher.clone(), status.clone());
                self.tasks.spawn(async move {
                    let failed = match fetcher.send_naks(origin, &naks, loss).await {
                        Ok(refused) => refused,
                        Err(_) => naks.len() as u64,
                    };
                    if failed > 0 {
                        debug!(%origin, failed, "NAKs refused or not delivered; the hubs retry");
                        status.origin_nak_failed(failed);
                    }
                });
            }
            Output::LossReport { origin, loss, verdict } => {
                let fetcher = self.fetcher.clone();
                self.tasks.spawn(async move {
                    if fetcher.report_loss(origin, loss, verdict).await.is_err() {
                        debug!(%origin, loss, "the loss report was not delivered; the next round's timer tries again");
                    }
                });
            }
            Output::Lookup { tracker, object_id, index, limit } => {
                let (fetcher, done) = (self.fetcher.clone(), self.tracker_tx.clone());
                self.tasks.spawn(async move {
                    let hubs = fetcher.holders(tracker, object_id, index, limit).await;
                    let _ = done.send(TrackerAnswer::Listed { object_id, index, hubs }).await;
                });
            }
            Output::Register { tracker, holdings, trust } => {
                let (fetcher, done) = (self.fetcher.clone(), self.tracker_tx.clone());
                let feeds = self.feed.as_ref().filter(|_| self.advertised).map_or(0, |f| f.subscribers());
                let role = (self.advertised, self.in_forest, feeds);
                self.tasks.spawn(async move {
                    match fetcher.register(tracker, holdings, role, trust).await {
                        Ok(statements) if statements.is_empty() => {}
                        Ok(statements) => {
                            let _ = done.send(TrackerAnswer::Statements(statements)).await;
                        }
                        Err(_) => debug!(%tracker, "registering with the tracker failed; again in {} s",
                            machine::REGISTER_EVERY.as_secs()),
                    }
                });
            }
            Output::AskBridges { tracker, limit, leaving } => {
                self.order(FeedCmd::Ask { tracker, limit, leaving })
            }
            Output::Subscribe { bridge, resume } => self.order(FeedCmd::Subscribe { bridge, resume }),
            Output::Unsubscribe(_) => self.order(FeedCmd::Unsubscribe),
            Output::Refeed { chunks, .. } => self.order(FeedCmd::Refeed(chunks)),
            Output::Tell { to, msg } => {
                if let Some(f) = self.forest.as_ref() {
                    f.tell(to, msg, &mut self.tasks);
                }
            }
            Output::Stripe { tree, parent, resume } => {
                if let Some(f) = self.forest.as_mut() {
                    f.stripe(tree, parent, resume);
                }
            }
            Output::AskForestHub { tracker } => {
                if let Some(f) = self.forest.as_ref() {
                    f.ask_hub(tracker, &mut self.tasks);
                }
            }
            Output::ForestChildren(children) => {
                if let Some(f) = self.forest.as_ref() {
                    f.set_children(&children);
                }
            }
            Output::Store { .. } | Output::Announce(_) | Output::Event(_) => {}
        }
    }

    fn order(&self, cmd: FeedCmd) {
        if self.feed_cmd.send(cmd).is_err() {
            debug!("the feed task is gone (the hub is stopping, or a forest hub takes stripes)");
        }
    }
}

impl Loop<'_> {
    /// What the machine reports: into the status and the log.
    pub(super) fn on_event(&mut self, e: HubEvent) {
        match e {
            HubEvent::Received { source, peer, bytes } => {
                let Some(p) = self.peers.as_mut() else { return };
                if let Some(peer) = peer {
                    p.server.credit(&peer, bytes);
                }
                match source {
                    Source::Peer => {
                        p.peer_bytes += bytes;
                        self.status.record_peer_bytes(p.peer_bytes);
                    }
                    Source::Origin => {
                        p.origin_bytes += bytes;
                        self.status.record_origin_bytes(p.origin_bytes);
                    }
                    Source::Bridge => {
                        p.bridge_bytes += bytes;
                        self.status.record_bridge_bytes(p.bridge_bytes);
                    }
                    Source::Multicast => {}
                }
            }
            HubEvent::Struck { n, via: peers::Via::Bridge, .. } => {
                self.status.with_feed(|f| f.strikes += u64::from(n));
            }
            HubEvent::BridgeMove { from, to } => {
                info!(%from, %to, "the tracker lists a less loaded bridge: moving there");
            }
            HubEvent::BridgeLeft { bridge, strikes } => {
                warn!(%bridge, strikes, "a bridge sent datagrams that fail the broadcaster's signature; leaving it for another");
                self.status.with_feed(|f| f.bridges_banned += 1);
            }
            HubEvent::NoBridge { searching } => self.no_bridge(searching),
            HubEvent::Forest(e) => {
                forest_said(e);
                self.publish_forest();
            }
            // Taken to the store in `carry_out`, which may wait.
            HubEvent::Catalog { .. } | HubEvent::Revocations { .. } | HubEvent::Rotation { .. } => {}
            HubEvent::Struck { peer, strike, .. } => {
                if strike.banned_now {
                    warn!(%peer, strikes = strike.strikes,
                        "peer banned for {} s: it served symbols that fail their digests", peers::BAN_FOR.as_secs());
                }
            }
            HubEvent::PeerFound { peer, addr, via: peers::Via::Island } => {
                info!(%peer, %addr, "peer found on this island");
            }
            HubEvent::PeerFound { peer, addr, via: peers::Via::Tracker } => {
                info!(%peer, %addr, "peer found through the tracker");
            }
            HubEvent::PeerFound { .. } => {}
            HubEvent::PeersGone(gone) => {
                for peer in gone {
                    info!(%peer, "peer gone (not heard of for {} s)", peers::PEER_EXPIRY.as_secs());
                }
            }
            HubEvent::TrackerLearned(t) => {
                info!(tracker = %t, "the channel's manifests name the tracker; registering there and sending NAKs there");
                self.status.set_tracker(t.to_string(), "manifest");
            }
            HubEvent::TrackerAnswer(listed) => self.status.tracker_answer(listed),
            HubEvent::BadAnnouncement => self.status.peer_message_dropped(),
            HubEvent::NoOrigin(nak) => {
                warn!(object = %nak.object_id, chunk = nak.index, missing = nak.missing,
                    "no peer can repair this chunk and no origin is known (--tracker); it waits for the next carousel round");
            }
            HubEvent::Repaired(_) => {}
        }
    }

    /// The forest as the machine has it, into the status.
    pub(super) fn publish_forest(&self) {
        let Some(v) = self.hub.forest() else { return };
        let id = |n: &NodeId| n.to_string();
        let s = ForestStatus {
            stripes: v.stripes,
            proper: v.proper,
            parents: v.parents.iter().map(|p| p.as_ref().map(id)).collect(),
            children: v.children.iter().map(|c| c.iter().map(id).collect()).collect(),
            parents_lost: v.parents_lost,
            joined_via: v.joined_via.map(str::to_owned),
            contact: v.contact.as_ref().map(id),
        };
        self.status.with_feed(|feed| feed.forest = Some(s));
    }

    /// A feed is wanted and no bridge is there to ask. Bridges register as
    /// they start hearing the channel: a few seconds without one is normal.
    fn no_bridge(&mut self, searching: Duration) {
        let now = clock().0;
        let Some(p) = self.peers.as_mut() else { return };
        let long = searching >= Duration::from_secs(self.cfg.desert_after_secs);
        // A hub that never heard the multicast and has no way to find a
        // bridge was told what to check already (silence_hint).
        let told = self.silence_told && self.hub.tracker().is_none() && self.cfg.bridge_peers.is_empty();
        let quiet =
            p.last_no_bridge_warning.is_none_or(|t| now.saturating_duration_since(t) >= NO_BRIDGE_WARN_EVERY);
        if long && !told && quiet {
            p.last_no_bridge_warning = Some(now);
            warn!("no multicast on {} and no bridge to take the feed from: name one with --bridge-peer NODEID@HOST:PORT, or give --tracker (it lists bridges)",
                self.cfg.group);
        }
    }

    /// Send the machine's announcement on the control group, and bring the
    /// peers' status up to date (every 2 s).
    pub(super) async fn announce(&mut self, now: Instant, unix_ms: u64, datagram: &[u8]) {
        let Some(p) = self.peers.as_ref() else { return };
        if let Err(e) = p.control_out.send_to(datagram, p.control_group).await {
            debug!("announcing on {}: {e}", p.control_group);
        }
        let (table, origin) = (self.hub.peers(), self.hub.tracker().map(|o| o.id));
        p.fetcher.retain(|id| table.addr(id).is_some() || Some(*id) == origin);
        let rtts = p.fetcher.rtts();
        self.hub.handle_input(now, unix_ms, Input::Rtts(&rtts));
        let Some(p) = self.peers.as_ref() else { return };
        let stats = self.hub.repair_stats();
        let withheld = self.hub.naks_withheld();
        let loss = self.hub.multicast_loss();
        let (reports, suppressed, echo) = self.hub.loss_reports();
        let served = p.server.served();
        let takers_deferred = p.server.takers_deferred();
        let (paced, paced_ms, upload_busy) = p.server.paced();
        let (received, views) = (p.server.received(), self.hub.peers().view(now));
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
            r.origin_naks = stats.naks_sent - withheld.min(stats.naks_sent);
            (r.loss_reports, r.loss_reports_suppressed) = (reports, suppressed);
            r.channel_fec = echo.map(|e| f64::from(e.fec_permille) / 1000.0);
            r.channel_rate = echo.and_then(|e| e.rate_kbit).map(|k| u64::from(k) * 1000);
            r.origin_naks_withheld = withheld;
            r.multicast_loss = loss;
            r.tracker_lookups = stats.lookups;
            r.bytes_served = served.values().sum();
            r.takers_deferred = takers_deferred;
            r.upload_paced = paced;
            r.upload_paced_ms = paced_ms;
            r.upload_busy = upload_busy;
        });
    }
}

/// What the forest says, into the log.
fn forest_said(e: ForestEvent) {
    match e {
        ForestEvent::Root => info!("stripe forest: this hub is the root of every tree"),
        ForestEvent::Joining { tree, contact, via_tracker } => {
            let via = if via_tracker { "tracker" } else { "root" };
            info!(proper = tree, contact = %contact.addr, via, "stripe forest: joining, interior in tree {tree}");
        }
        ForestEvent::ParentLost { tree, parent, why } => {
            info!(tree, parent = %NodeId(parent.node_id), %why, "stripe forest: a parent is gone; repairing");
        }
        ForestEvent::Starved { tree, parent } => {
            warn!(tree, parent = ?parent.map(|p| NodeId(p.node_id)),
                "stripe forest: nothing on this stripe for {} s while others flow; searching a place from the root",
                hubcast_protocol::forest::STARVED.as_secs());
        }
    }
}
