//! The hub machine's part in the stripe forest (`--stripes F`): the
//! [`ForestNode`], how a desert hub joins it, and one stripe subscription per
//! tree, to its parent there.
//!
//! A bridge is the root of every tree. A desert hub asks the root for its
//! proper tree ([`Msg::Join`], [`Msg::Welcome`], again every
//! [`WELCOME_WAIT`]), then searches a place in each tree starting at a random
//! forest hub the tracker names ([`Output::AskForestHub`]), or at the root's
//! pick when no tracker is known or it names none within [`TRACKER_WAIT`].
//! Where it has a parent it takes that tree's stripe ([`Output::Stripe`]);
//! a stripe that ends tells the node its parent is gone, and one that brings
//! nothing while others flow is starved ([`starved`]): the hub leaves that
//! parent and searches from the root.

use super::*;
use crate::forest::{starved, ForestConfig, ForestNode, Msg, Tree};
use crate::peer_wire::ForestPeer;

/// How long a joiner waits for the root's welcome before asking again.
pub const WELCOME_WAIT: Duration = Duration::from_secs(2);
/// How long a joiner waits for the tracker to name a forest hub.
pub const TRACKER_WAIT: Duration = Duration::from_secs(3);
/// How often the forest node's timers and the stripe watchdog run.
pub const FOREST_TICK: Duration = Duration::from_millis(500);

/// This hub's place in the stripe forest: fixed for its life.
#[derive(Clone, Copy, Debug)]
pub struct ForestRole {
    /// This hub, as the forest names it (where its QUIC endpoint is).
    pub me: ForestPeer,
    /// The root to join; `None`: this hub is the root (a bridge).
    pub root: Option<ForestPeer>,
    pub stripes: u8,
}

/// What the forest says happened, for the log and the status.
#[derive(Clone, Debug, PartialEq)]
pub enum ForestEvent {
    /// This hub is the root of every tree.
    Root,
    /// Welcomed by the root: interior in `tree`, searching from `contact`,
    /// which the tracker (`via_tracker`) or the root named.
    Joining { tree: Tree, contact: ForestPeer, via_tracker: bool },
    /// The stripe from this tree's parent ended: the node repairs the tree.
    ParentLost { tree: Tree, parent: ForestPeer, why: String },
    /// Nothing came on this tree's stripe for [`STARVED`](crate::forest::STARVED)
    /// while others flowed: the hub searches a place from the root.
    Starved { tree: Tree, parent: Option<ForestPeer> },
}

enum Phase {
    /// Asking the root for a proper tree; again at `next`.
    Welcoming {
        next: Instant,
    },
    /// Welcomed into `tree`; the tracker was asked for a hub to start at.
    Picking {
        tree: Tree,
        root_pick: ForestPeer,
        until: Instant,
    },
    Joined(Box<ForestNode<ForestPeer>>),
}

/// The forest's state in the hub machine.
pub(super) struct Forest {
    role: ForestRole,
    phase: Phase,
    /// Per tree: the parent whose stripe this hub takes, and when that
    /// stripe last brought data (or was taken).
    stripes: Vec<Option<(ForestPeer, Instant)>>,
    parents_lost: u64,
    /// Whether the root or the tracker named the contact, and which.
    joined: Option<(bool, ForestPeer)>,
    /// The children last put out ([`Output::ForestChildren`]).
    children: Vec<(Tree, NodeId)>,
    next_tick: Instant,
}

impl Forest {
    pub(super) fn new(now: Instant, role: ForestRole) -> Self {
        let phase = match role.root {
            None => Phase::Joined(Box::new(ForestNode::new_root(role.me, ForestConfig::new(role.stripes)))),
            Some(_) => Phase::Welcoming { next: now },
        };
        Forest {
            role,
            phase,
            stripes: vec![None; usize::from(role.stripes)],
            parents_lost: 0,
            joined: None,
            children: Vec::new(),
            next_tick: now + FOREST_TICK,
        }
    }

    /// The forest node, once this hub has joined (the root at once).
    pub(super) fn node(&self) -> Option<&ForestNode<ForestPeer>> {
        match &self.phase {
            Phase::Joined(n) => Some(n),
            _ => None,
        }
    }
}

/// What the status shows of the forest.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ForestView {
    pub stripes: u8,
    /// This hub's proper tree (`None` at the root, or before the welcome).
    pub proper: Option<Tree>,
    pub parents: Vec<Option<NodeId>>,
    pub children: Vec<Vec<NodeId>>,
    pub parents_lost: u64,
    /// "tracker" or "root": who named the hub the searches started at.
    pub joined_via: Option<&'static str>,
    pub contact: Option<NodeId>,
}

impl Hub {
    /// The forest's timers: the welcome asked again, the tracker's pick
    /// given up, the node's own timers and the stripe watchdog.
    pub(super) fn forest_timer(&mut self, now: Instant) {
        let started = self.started;
        let Some(f) = self.forest.as_mut() else { return };
        match (&mut f.phase, f.role.root) {
            (Phase::Welcoming { next }, Some(root)) if now >= *next => {
                *next = now + WELCOME_WAIT;
                self.out.push_back(Output::Tell { to: root, msg: Msg::Join });
            }
            (Phase::Picking { tree, root_pick, until }, _) if now >= *until => {
                let (tree, contact) = (*tree, *root_pick);
                self.forest_join(now, tree, contact, false);
            }
            _ => {}
        }
        let Some(f) = self.forest.as_mut() else { return };
        if now < f.next_tick {
            return;
        }
        f.next_tick = now + FOREST_TICK;
        let Phase::Joined(node) = &mut f.phase else { return };
        node.handle_timeout(now);
        let heard: Vec<Option<Duration>> =
            f.stripes.iter().map(|s| s.map(|(_, at)| at.saturating_duration_since(started))).collect();
        for tree in starved(&heard, now.saturating_duration_since(started)) {
            let parent = node.parent(tree);
            f.stripes[tree as usize] = None;
            self.out.push_back(Output::Stripe { tree, parent: None, resume: None });
            node.handle_starved(now, tree);
            self.out.push_back(Output::Event(HubEvent::Forest(ForestEvent::Starved { tree, parent })));
        }
        self.forest_step(now);
    }

    /// A forest message from `from` (the identity its QUIC handshake proved).
    pub(super) fn on_forest_message(&mut self, now: Instant, from: ForestPeer, msg: Msg<ForestPeer>) {
        let tracker = self.tracker;
        let Some(f) = self.forest.as_mut() else { return };
        let welcome = match (&mut f.phase, msg) {
            (Phase::Joined(node), msg) => {
                node.handle_message(now, from, msg);
                None
            }
            (Phase::Welcoming { .. }, Msg::Welcome { tree, contact })
                if Some(from) == f.role.root && tree < f.role.stripes =>
            {
                Some((tree, contact))
            }
            // Nothing else counts before the hub has a place.
            _ => None,
        };
        match (welcome, tracker) {
            (Some((tree, contact)), Some(tracker)) => {
                f.phase = Phase::Picking { tree, root_pick: contact, until: now + TRACKER_WAIT };
                self.out.push_back(Output::AskForestHub { tracker });
            }
            (Some((tree, contact)), None) => self.forest_join(now, tree, contact, false),
            (None, _) => {}
        }
        self.forest_step(now);
    }

    /// The tracker named a random hub of the forest (`None`: none, or
    /// asking failed).
    pub(super) fn on_forest_hub(&mut self, now: Instant, pick: Option<ForestPeer>) {
        let Some(f) = self.forest.as_ref() else { return };
        let Phase::Picking { tree, root_pick, .. } = f.phase else { return };
        match pick.filter(|p| *p != f.role.me) {
            Some(contact) => self.forest_join(now, tree, contact, true),
            None => self.forest_join(now, tree, root_pick, false),
        }
        self.forest_step(now);
    }

    fn forest_join(&mut self, now: Instant, tree: Tree, contact: ForestPeer, via_tracker: bool) {
        let Some(f) = self.forest.as_mut() else { return };
        let Some(root) = f.role.root else { return };
        let mut node = ForestNode::new(f.role.me, root, tree, ForestConfig::new(f.role.stripes));
        node.join(now, contact);
        f.phase = Phase::Joined(Box::new(node));
        f.joined = Some((via_tracker, contact));
        self.event(HubEvent::Forest(ForestEvent::Joining { tree, contact, via_tracker }));
    }

    /// A child's stripe subscription here ended: it is gone (or left).
    pub(super) fn on_child_gone(&mut self, now: Instant, tree: Tree, child: NodeId) {
        let Some(f) = self.forest.as_mut() else { return };
        let Phase::Joined(node) = &mut f.phase else { return };
        node.handle_child_lost(now, tree, ForestPeer { node_id: child.0, addr: f.role.me.addr });
        self.forest_step(now);
    }

    /// The stripe of `tree` from `parent` ended: if that is still the
    /// parent, the tree is repaired.
    pub(super) fn on_stripe_ended(&mut self, now: Instant, tree: Tree, parent: ForestPeer, why: String) {
        let Some(f) = self.forest.as_mut() else { return };
        let Phase::Joined(node) = &mut f.phase else { return };
        if node.parent(tree) != Some(parent) {
            return;
        }
        if let Some(s) = f.stripes.get_mut(tree as usize) {
            *s = None;
        }
        f.parents_lost += 1;
        node.handle_parent_lost(now, tree, parent);
        self.event(HubEvent::Forest(ForestEvent::ParentLost { tree, parent, why }));
        self.forest_step(now);
    }

    /// Datagrams of `tree`'s stripe came: it flows.
    pub(super) fn stripe_heard(&mut self, now: Instant, tree: Tree) {
        if let Some(Some((_, at))) = self.forest.as_mut().and_then(|f| f.stripes.get_mut(tree as usize)) {
            *at = now;
        }
    }

    /// After each forest input: send what the node queued, and keep one
    /// stripe subscription per tree, to its parent there.
    fn forest_step(&mut self, now: Instant) {
        let resume = self.position;
        let Some(f) = self.forest.as_mut() else { return };
        let Phase::Joined(node) = &mut f.phase else { return };
        while let Some((to, msg)) = node.poll_transmit() {
            self.out.push_back(Output::Tell { to, msg });
        }
        for tree in 0..f.role.stripes {
            let want = node.parent(tree);
            let have = f.stripes[tree as usize].map(|(p, _)| p);
            if want == have {
                continue;
            }
            // A new subscription gets STARVED to bring data.
            f.stripes[tree as usize] = want.map(|p| (p, now));
            self.out.push_back(Output::Stripe { tree, parent: want, resume });
        }
        let children: Vec<(Tree, NodeId)> = (0..f.role.stripes)
            .flat_map(|t| node.children(t).iter().map(move |c| (t, NodeId(c.id.node_id))))
            .collect();
        if children != f.children {
            f.children = children.clone();
            self.out.push_back(Output::ForestChildren(children));
        }
    }

    /// The forest as the status shows it; `None` for a hub outside it.
    pub fn forest(&self) -> Option<ForestView> {
        let f = self.forest.as_ref()?;
        let id = |p: &ForestPeer| NodeId(p.node_id);
        let node = f.node();
        let stripes = 0..f.role.stripes;
        Some(ForestView {
            stripes: f.role.stripes,
            proper: node.filter(|_| f.role.root.is_some()).map(|n| n.proper()),
            parents: stripes.clone().map(|t| node.and_then(|n| n.parent(t)).as_ref().map(id)).collect(),
            children: stripes
                .map(|t| node.map_or(Vec::new(), |n| n.children(t).iter().map(|c| id(&c.id)).collect()))
                .collect(),
            parents_lost: f.parents_lost,
            joined_via: f.joined.map(|(tracker, _)| if tracker { "tracker" } else { "root" }),
            contact: f.joined.map(|(_, c)| id(&c)),
        })
    }
}
