//! The stripe forest's IO at a hub (`--stripes F`). What the forest decides
//! (joining, parents, children, starved stripes) is the hub machine's
//! (`hubcast_protocol::hub`, over [`hubcast_protocol::forest`]); this module
//! carries its orders out over QUIC and hands back what comes in:
//!
//! - forest messages from peers (through the dispatcher's [`ForestLink`]) and
//!   to them ([`ForestIo::tell`]);
//! - one stripe subscription per tree, to the parent the machine names
//!   (peer message `Stripe`): the datagrams go to the hub's loop as a
//!   bridge's feed does, tagged with their tree, and are checked the same way
//!   against the broadcaster's signature. A stripe that ends says so;
//! - the children's stripe subscriptions here, served out of the hub's feed
//!   (`dispatch` hands them to the bridge's `serve_subscription`) to those
//!   the machine has as children ([`ForestLink::is_child`]).

use crate::bridge::{read_feed, subscribe_with, Subscribe};
use crate::peers::Fetcher;
use hubcast_keys::{NodeAddr, NodeId};
use hubcast_protocol::forest::{Msg, Tree};
use hubcast_protocol::hub::TRACKER_WAIT;
use hubcast_protocol::peer_wire::{ForestPeer, PeerMessage};
use hubcast_protocol::ObjectId;
use hubcast_transport::quic::NodeEndpoint;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::task::AbortOnDropHandle;
use tracing::debug;

/// Forest inputs waiting for the hub's loop; more are dropped (a peer
/// flooding forest messages costs itself only).
const INBOUND_QUEUE: usize = 1024;
/// Refusals of a stripe subscription before the parent counts as gone (the
/// parent may not have taken in the place it gave yet).
const STRIPE_REFUSALS: u32 = 3;

/// What the forest's IO hands the hub's loop.
pub enum ForestIn {
    Msg(ForestPeer, Msg<ForestPeer>),
    ChildGone(Tree, NodeId),
    /// Datagrams of a tree's stripe, from the parent there, unchecked.
    Stripe(Tree, NodeId, Vec<Vec<u8>>),
    StripeEnded(Tree, ForestPeer, String),
    /// The tracker's random hub of the forest (`None`: none, or it failed).
    Hub(Option<ForestPeer>),
}

/// What the serving side shares with the hub's loop.
pub struct ForestLink {
    stripes: u8,
    inbound: mpsc::Sender<ForestIn>,
    /// (tree, child): who may subscribe to which stripe here, as the
    /// machine last said.
    children: Mutex<HashSet<(Tree, [u8; 32])>>,
}

impl ForestLink {
    pub fn stripes(&self) -> u8 {
        self.stripes
    }

    /// A forest message from `from` (the identity its QUIC handshake proved).
    pub fn deliver(&self, from: ForestPeer, msg: Msg<ForestPeer>) {
        if self.inbound.try_send(ForestIn::Msg(from, msg)).is_err() {
            debug!(peer = %NodeId(from.node_id), "forest message dropped: the hub is behind");
        }
    }

    pub fn is_child(&self, tree: Tree, peer: &NodeId) -> bool {
        self.children.lock().is_ok_and(|c| c.contains(&(tree, peer.0)))
    }

    /// A child's stripe subscription ended: it is gone (or left).
    pub fn child_gone(&self, tree: Tree, peer: NodeId) {
        let _ = self.inbound.try_send(ForestIn::ChildGone(tree, peer));
    }
}

/// The forest's IO, owned by the hub's peer side.
pub struct ForestIo {
    endpoint: Arc<NodeEndpoint>,
    fetcher: Arc<Fetcher>,
    link: Arc<ForestLink>,
    inbound: mpsc::Sender<ForestIn>,
    /// Per tree, the stripe subscription's task; it ends when its entry goes.
    stripes: Vec<Option<AbortOnDropHandle<()>>>,
}

impl ForestIo {
    /// The forest's IO, the link the dispatcher delivers to, and where what
    /// comes in waits for the hub's loop.
    pub fn new(
        endpoint: Arc<NodeEndpoint>,
        fetcher: Arc<Fetcher>,
        stripes: u8,
    ) -> (ForestIo, Arc<ForestLink>, mpsc::Receiver<ForestIn>) {
        let (tx, rx) = mpsc::channel(INBOUND_QUEUE);
        let link = Arc::new(ForestLink { stripes, inbound: tx.clone(), children: Mutex::default() });
        let io = ForestIo {
            endpoint,
            fetcher,
            link: link.clone(),
            inbound: tx,
            stripes: (0..stripes).map(|_| None).collect(),
        };
        (io, link, rx)
    }

    /// Send a forest message; a task of `tasks` until it is delivered.
    pub fn tell(&self, to: ForestPeer, msg: Msg<ForestPeer>, tasks: &mut JoinSet<()>) {
        let fetcher = self.fetcher.clone();
        tasks.spawn(async move {
            if fetcher.tell(NodeId(to.node_id), to.addr, PeerMessage::Forest(msg)).await.is_err() {
                debug!(to = %to.addr, "stripe forest: a message was not delivered");
            }
        });
    }

    /// Take `tree`'s stripe from `parent` (ending the one taken before), or
    /// from nobody.
    pub fn stripe(&mut self, tree: Tree, parent: Option<ForestPeer>, resume: Option<(ObjectId, u32)>) {
        let Some(slot) = self.stripes.get_mut(tree as usize) else { return };
        let stripes = self.link.stripes;
        *slot = parent.map(|parent| {
            AbortOnDropHandle::new(tokio::spawn(follow_stripe(
                self.endpoint.clone(),
                (parent, resume),
                (tree, stripes),
                self.inbound.clone(),
            )))
        });
    }

    /// Ask the tracker for a random hub of the forest; the answer comes in
    /// as [`ForestIn::Hub`].
    pub fn ask_hub(&self, tracker: NodeAddr, tasks: &mut JoinSet<()>) {
        let (fetcher, inbound) = (self.fetcher.clone(), self.inbound.clone());
        tasks.spawn(async move {
            let pick = match tokio::time::timeout(TRACKER_WAIT, fetcher.forest_hub(tracker)).await {
                Ok(Ok(pick)) => pick.map(|h| ForestPeer { node_id: h.node_id, addr: h.addr }),
                _ => {
                    debug!(%tracker, "stripe forest: the tracker did not answer; joining through the root's pick");
                    None
                }
            };
            let _ = inbound.send(ForestIn::Hub(pick)).await;
        });
    }

    /// The machine's children now: who may take which stripe here.
    pub fn set_children(&self, children: &[(Tree, NodeId)]) {
        if let Ok(mut c) = self.link.children.lock() {
            c.clear();
            c.extend(children.iter().map(|(t, id)| (*t, id.0)));
        }
    }
}

/// Take stripe `tree` from `parent` until it ends; then say so.
async fn follow_stripe(
    endpoint: Arc<NodeEndpoint>,
    (parent, resume): (ForestPeer, Option<(ObjectId, u32)>),
    (tree, stripes): (Tree, u8),
    inbound: mpsc::Sender<ForestIn>,
) {
    let at = NodeAddr { id: NodeId(parent.node_id), addr: parent.addr };
    let mut refusals = 0;
    let why = loop {
        let request = PeerMessage::Stripe { tree, stripes, resume };
        match subscribe_with(&endpoint, at, request, crate::bridge::BRIDGE_SILENCE).await {
            Ok((_conn, recv)) => {
                debug!(tree, parent = %at, "stripe forest: taking a stripe");
                break read_feed(recv, &inbound, |d| ForestIn::Stripe(tree, at.id, d)).await;
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
    let _ = inbound.send(ForestIn::StripeEnded(tree, parent, why)).await;
}
