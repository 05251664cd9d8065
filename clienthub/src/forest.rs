//! The stripe forest at a hub (`--stripes F`): the forest protocol
//! ([`hubcast_protocol::forest`]) over QUIC, and the stripes it carries.
//!
//! A bridge with `--stripes` is the root of every tree. A desert hub with
//! `--stripes` asks the root (its first `--bridge-peer`) for its proper tree
//! (`Join`, `Welcome`), then searches a place in each tree, starting at a
//! random forest hub the tracker names (hubs of the forest register with the
//! tracker as such), or at the root's pick when it knows no tracker. For each
//! tree where it has a parent it subscribes to that stripe there (peer message
//! `Stripe`). The datagrams go to the hub's loop as a bridge's feed does, and
//! are checked the same way against the broadcaster's signature. A stripe
//! that ends tells the forest its parent is gone. The hub serves its own
//! children's stripe subscriptions out of its feed (`dispatch` hands them to
//! the bridge's `serve_subscription`): the chunks it has verified and stored,
//! so it can serve its stripe even while its own parent in that tree is being
//! replaced. When a stripe is starved is the protocol's rule
//! ([`hubcast_protocol::forest::starved`]); this task only notes when each
//! stripe last brought data.

use crate::bridge::{read_feed, subscribe_with, FeedEvent, Subscribe};
use crate::peers::Fetcher;
use crate::status::{ForestStatus, StatusBoard};
use hubcast_keys::{NodeAddr, NodeId};
use hubcast_protocol::forest::{starved, ForestConfig, ForestNode, Msg, Tree, STARVED};
use hubcast_protocol::peer_wire::{ForestPeer, PeerMessage};
use hubcast_protocol::ObjectId;
use hubcast_transport::quic::NodeEndpoint;
use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;
use tracing::{debug, info, warn};

/// Forest inputs waiting for the forest task; more are dropped (a peer
/// flooding forest messages costs itself only).
const INBOUND_QUEUE: usize = 1024;
/// How often the forest's timers run.
const TICK: Duration = Duration::from_millis(500);
/// How long a joiner waits for the tracker to name a forest hub.
const TRACKER_WAIT: Duration = Duration::from_secs(3);
/// How long a joiner waits for the root's welcome before asking again.
const WELCOME_WAIT: Duration = Duration::from_secs(2);
/// Refusals of a stripe subscription before the parent counts as gone (the
/// parent may not have taken in the place it gave yet).
const STRIPE_REFUSALS: u32 = 3;
/// When each stripe last brought data, as time since the forest started.
struct Heard {
    start: Instant,
    ms: Vec<AtomicU64>,
}

impl Heard {
    fn now(&self) -> Duration {
        self.start.elapsed()
    }
    fn note(&self, t: Tree) {
        if let Some(m) = self.ms.get(t as usize) {
            m.store(self.now().as_millis() as u64, Relaxed);
        }
    }
    fn get(&self, t: Tree) -> Duration {
        Duration::from_millis(self.ms.get(t as usize).map_or(0, |m| m.load(Relaxed)))
    }
}

/// What the forest task is told.
enum Inbound {
    Msg(ForestPeer, Msg<ForestPeer>),
    ChildGone(Tree, NodeId),
    StripeEnded(Tree, ForestPeer, String),
}

/// What the serving side shares with the forest task.
pub struct ForestLink {
    stripes: u8,
    inbound: mpsc::Sender<Inbound>,
    /// (tree, child): who may subscribe to which stripe here.
    children: Mutex<HashSet<(Tree, [u8; 32])>>,
}

impl ForestLink {
    pub fn stripes(&self) -> u8 {
        self.stripes
    }

    /// A forest message from `from` (the identity its QUIC handshake proved).
    pub fn deliver(&self, from: ForestPeer, msg: Msg<ForestPeer>) {
        if self.inbound.try_send(Inbound::Msg(from, msg)).is_err() {
            debug!(peer = %NodeId(from.node_id), "forest message dropped: the forest task is behind");
        }
    }

    pub fn is_child(&self, tree: Tree, peer: &NodeId) -> bool {
        self.children.lock().is_ok_and(|c| c.contains(&(tree, peer.0)))
    }

    /// A child's stripe subscription ended: it is gone (or left).
    pub fn child_gone(&self, tree: Tree, peer: NodeId) {
        let _ = self.inbound.try_send(Inbound::ChildGone(tree, peer));
    }
}

/// The forest's side of the hub.
pub struct Forest {
    pub endpoint: Arc<NodeEndpoint>,
    pub fetcher: Arc<Fetcher>,
    pub me: ForestPeer,
    /// The root to join; `None`: this hub is the root.
    pub root: Option<ForestPeer>,
    pub stripes: u8,
    /// Where stripe datagrams go: the hub loop's feed events.
    pub events: mpsc::Sender<FeedEvent>,
    pub status: StatusBoard,
    /// The chunk the hub reached last: where a new stripe starts (the
    /// parent's back buffer permitting), so a hub that changes parent goes
    /// on where it was, with no gap and no repeat.
    pub position: watch::Receiver<Option<(ObjectId, u32)>>,
    /// The tracker, once known: a joiner starts at a hub it names.
    pub tracker: watch::Receiver<Option<NodeAddr>>,
}

/// Start the forest task, owned by `tasks`; the link goes to the dispatcher.
pub fn start(forest: Forest, cancel: CancellationToken, tasks: &mut JoinSet<()>) -> Arc<ForestLink> {
    let (tx, rx) = mpsc::channel(INBOUND_QUEUE);
    let link =
        Arc::new(ForestLink { stripes: forest.stripes, inbound: tx.clone(), children: Mutex::default() });
    tasks.spawn(run(forest, link.clone(), tx, rx, cancel));
    link
}

async fn run(
    f: Forest,
    link: Arc<ForestLink>,
    tx: mpsc::Sender<Inbound>,
    mut rx: mpsc::Receiver<Inbound>,
    cancel: CancellationToken,
) {
    let cfg = ForestConfig::new(f.stripes);
    let mut joined = None;
    // Messages on their way to other hubs.
    let mut telling = JoinSet::new();
    let mut node = match f.root {
        None => {
            info!(stripes = f.stripes, "stripe forest: this hub is the root of every tree");
            ForestNode::new_root(f.me, cfg)
        }
        Some(root) => {
            let Some((tree, root_pick)) = welcome(&f, root, &mut rx, &cancel, &mut telling).await else {
                return;
            };
            // A random hub of the forest, as the tracker names it; the root's
            // pick when no tracker is known or it names none.
            let (contact, via) = match tracker_pick(&f).await {
                Some(c) => (c, "tracker"),
                None => (root_pick, "root"),
            };
            info!(stripes = f.stripes, proper = tree, contact = %contact.addr, via,
                "stripe forest: joining, interior in tree {tree}");
            joined = Some((via, contact));
            let mut n = ForestNode::new(f.me, root, tree, cfg);
            n.join(Instant::now(), contact);
            n
        }
    };
    // The stripes' tasks end when their entry goes (or this task does).
    let mut stripes: Vec<Option<(ForestPeer, AbortOnDropHandle<()>)>> =
        (0..f.stripes).map(|_| None).collect();

    let heard =
        Arc::new(Heard { start: Instant::now(), ms: (0..f.stripes).map(|_| AtomicU64::new(0)).collect() });
    let mut tick = tokio::time::interval(TICK);
    let mut parents_lost = 0;
    loop {
        while telling.try_join_next().is_some() {}
        step(&f, &link, &tx, &mut node, &mut stripes, &heard, &mut telling);
        publish(&f, &node, parents_lost, joined);
        let now = Instant::now();
        tokio::select! {
            ev = rx.recv() => match ev {
                Some(Inbound::Msg(from, m)) => node.handle_message(now, from, m),
                Some(Inbound::ChildGone(tree, id)) => {
                    let gone = ForestPeer { node_id: id.0, addr: f.me.addr };
                    node.handle_child_lost(now, tree, gone);
                }
                Some(Inbound::StripeEnded(tree, parent, why)) => {
                    if node.parent(tree) == Some(parent) {
                        info!(tree, parent = %NodeId(parent.node_id), %why, "stripe forest: a parent is gone; repairing");
                        stripes[tree as usize] = None;
                        parents_lost += 1;
                        node.handle_parent_lost(now, tree, parent);
                    }
                }
                None => break,
            },
            _ = tick.tick() => {
                node.handle_timeout(now);
                let last: Vec<Option<Duration>> =
                    (0..f.stripes).map(|t| stripes[t as usize].as_ref().map(|_| heard.get(t))).collect();
                for t in starved(&last, heard.now()) {
                    warn!(tree = t, parent = ?node.parent(t).map(|p| NodeId(p.node_id)),
                        "stripe forest: nothing on this stripe for {} s while others flow; searching a place from the root",
                        STARVED.as_secs());
                    stripes[t as usize] = None; // its task ends
                    node.handle_starved(now, t);
                }
            }
            _ = cancel.cancelled() => break,
        }
    }
    // Dropping `stripes` and `telling` ends their tasks.
}

/// A random hub of the forest from the tracker's registry, if a tracker is
/// known and names one (not this hub).
async fn tracker_pick(f: &Forest) -> Option<ForestPeer> {
    let tracker = (*f.tracker.borrow())?;
    match tokio::time::timeout(TRACKER_WAIT, f.fetcher.forest_hub(tracker)).await {
        Ok(Ok(Some(h))) if h.node_id != f.me.node_id => Some(ForestPeer { node_id: h.node_id, addr: h.addr }),
        Ok(Ok(_)) => None,
        _ => {
            debug!(%tracker, "stripe forest: the tracker did not answer; joining through the root's pick");
            None
        }
    }
}

/// Ask the root for a proper tree until it answers.
async fn welcome(
    f: &Forest,
    root: ForestPeer,
    rx: &mut mpsc::Receiver<Inbound>,
    cancel: &CancellationToken,
    telling: &mut JoinSet<()>,
) -> Option<(Tree, ForestPeer)> {
    loop {
        tell(f, root, Msg::Join, telling);
        let deadline = tokio::time::sleep(WELCOME_WAIT);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                ev = rx.recv() => match ev? {
                    Inbound::Msg(from, Msg::Welcome { tree, contact }) if from == root && tree < f.stripes => {
                        return Some((tree, contact));
                    }
                    _ => {}
                },
                _ = &mut deadline => break,
                _ = cancel.cancelled() => return None,
            }
        }
        debug!(root = %root.addr, "stripe forest: no welcome from the root yet; asking again");
    }
}

/// After each input: send what the node queued, publish its children, and
/// keep one stripe subscription per tree, to its parent there.
fn step(
    f: &Forest,
    link: &ForestLink,
    tx: &mpsc::Sender<Inbound>,
    node: &mut ForestNode<ForestPeer>,
    stripes: &mut [Option<(ForestPeer, AbortOnDropHandle<()>)>],
    heard: &Arc<Heard>,
    telling: &mut JoinSet<()>,
) {
    // Children first: one placed here subscribes as soon as it hears of it.
    if let Ok(mut c) = link.children.lock() {
        c.clear();
        for t in 0..f.stripes {
            c.extend(node.children(t).iter().map(|k| (t, k.id.node_id)));
        }
    }
    while let Some((to, m)) = node.poll_transmit() {
        tell(f, to, m, telling);
    }
    for t in 0..f.stripes {
        let want = node.parent(t);
        let have = stripes[t as usize].as_ref().map(|(p, _)| *p);
        if want == have {
            continue;
        }
        stripes[t as usize] = None;
        if let Some(parent) = want {
            let resume = *f.position.borrow();
            heard.note(t); // a new subscription gets STARVED to bring data
            let task = AbortOnDropHandle::new(tokio::spawn(follow_stripe(
                f.endpoint.clone(),
                (parent, resume),
                t,
                f.stripes,
                (f.events.clone(), heard.clone()),
                tx.clone(),
            )));
            stripes[t as usize] = Some((parent, task));
        }
    }
}

fn publish(f: &Forest, node: &ForestNode<ForestPeer>, parents_lost: u64, joined: Option<(&str, ForestPeer)>) {
    let id = |p: &ForestPeer| NodeId(p.node_id).to_string();
    let s = ForestStatus {
        stripes: f.stripes,
        proper: f.root.map(|_| node.proper()),
        parents: (0..f.stripes).map(|t| node.parent(t).as_ref().map(id)).collect(),
        children: (0..f.stripes).map(|t| node.children(t).iter().map(|c| id(&c.id)).collect()).collect(),
        parents_lost,
        joined_via: joined.map(|(via, _)| via.to_owned()),
        contact: joined.map(|(_, c)| id(&c)),
    };
    f.status.with_feed(|feed| feed.forest = Some(s));
}

fn tell(f: &Forest, to: ForestPeer, m: Msg<ForestPeer>, telling: &mut JoinSet<()>) {
    let fetcher = f.fetcher.clone();
    telling.spawn(async move {
        if fetcher.tell(NodeId(to.node_id), to.addr, PeerMessage::Forest(m)).await.is_err() {
            debug!(to = %to.addr, "stripe forest: a message was not delivered");
        }
    });
}

/// Take stripe `tree` from `parent` until it ends; then say so.
async fn follow_stripe(
    endpoint: Arc<NodeEndpoint>,
    (parent, resume): (ForestPeer, Option<(ObjectId, u32)>),
    tree: Tree,
    stripes: u8,
    (events, heard): (mpsc::Sender<FeedEvent>, Arc<Heard>),
    inbound: mpsc::Sender<Inbound>,
) {
    let at = NodeAddr { id: NodeId(parent.node_id), addr: parent.addr };
    let mut refusals = 0;
    let why = loop {
        let request = PeerMessage::Stripe { tree, stripes, resume };
        match subscribe_with(&endpoint, at, request).await {
            Ok((_conn, recv)) => {
                debug!(tree, parent = %at, "stripe forest: taking a stripe");
                break read_feed(at.id, recv, &events, &|| heard.note(tree)).await;
            }
            Err(Subscribe::Refused(r)) if refusals + 1 < STRIPE_REFUSALS => {
                refusals += 1;
                debug!(tree, parent = %at, ?r, "stripe forest: subscription refused; again");
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            Err(Subscribe::Refused(r)) => break format!("the parent refused the stripe ({r:?})"),
            Err(Subscribe::Failed(e)) => break e,
        }
    };
    if inbound.send(Inbound::StripeEnded(tree, parent, why)).await.is_err() {
        warn!("stripe forest: the forest task is gone");
    }
}
