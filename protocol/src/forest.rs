//! The P2PCast stripe forest, sans IO: how desert hubs pass a live channel on
//! to each other so that every hub sends about as much as it receives.
//!
//! The channel is cut into f stripes (stripe i: the symbols with ESI ≡ i mod
//! f), and each stripe flows down a tree of its own, from the root (the
//! source: a bridge) to every hub. A hub is *interior* in exactly one tree,
//! its proper tree, where it has up to `fanout` children, and a leaf in all
//! the others. So a hub uploads about f stripes (f children × one stripe) and
//! downloads f (one per tree), and no hub is an ancestor of another in two
//! trees: one failure costs each hub at most one stripe, and RaptorQ decodes
//! from the other f − 1 while the tree is repaired.
//!
//! The operations follow the P2PCast paper, with its RPC names:
//!
//! - **Join.** The root gives a new hub its proper tree (the one with the
//!   fewest interior hubs: `Join`, `Welcome`), and the tracker names a random
//!   hub of the forest to contact. For each tree the hub sends `Search` there. A search climbs to an interior node of that tree.
//!   A leaf's search is adopted by the first interior node with a free slot;
//!   failing that it goes up to the root and down towards the subtree with
//!   free slots. An interior hub's search goes up to the root and down, and is
//!   placed as high as possible, so the interior nodes form a balanced tree:
//!   - the root, or an *incomplete* node (one with a free slot), takes it on
//!     as a child (`Direct`; the paper's only-child and incomplete-node cases);
//!   - a *complete* node with a leaf child gives the newcomer that leaf's
//!     place, and the leaf becomes its first child (`Substitute`: the leaf
//!     subcase);
//!   - a complete node whose children are all interior passes the search down
//!     to the child with the nearest such place below it, then the fewest
//!     interior nodes (the incomplete-node subcase, one level down).
//!   - When a tree has no free slot left for a leaf (a churn burst took
//!     several of its interior hubs), a leaf of that tree takes the newcomer
//!     on: it becomes the *special node*, interior in two trees, until those
//!     children leave.
//! - **Leave or failure.** A parent's children notice it is gone. Each parent
//!   names an *heir* to its children (the interior child with the lowest id,
//!   in `Update`). The heir fills the bubble: it asks the grandparent to take
//!   it in the dead node's place (`Replace`). The other orphans ask the heir
//!   to take them on (`TakeOn`, naming the dead parent: an heir that has
//!   moved on since refuses, and the orphan asks the grandparent). The heir
//!   now has too many children. Leaf children search a place down from it.
//!   Interior ones ripple: the heir moved up a level and its older children
//!   with it, so it hands them, one at a time, to the oldest of them, where
//!   they are back at their depth; that one does the same, down to the
//!   next-to-last level, where the surplus is leaves. No subtree sinks.
//!   Orphans of a parent with no interior child ask the grandparent, which
//!   takes one into the freed slot and sends the others down. The cost is
//!   proportional to the tree's height.
//! - **Update.** Upward, each node reports its subtree's interior count, free
//!   slots, the nearest place for an interior hub, and the leaves it can
//!   spare, which steer searches and wants. Downward, it tells its children
//!   their grandparent and their heir.
//! - **Want and Give** (not the paper's). A hub two or more children short of
//!   its fanout for ORPHAN_RETRY asks up its tree for leaves; the want
//!   descends to a subtree that can spare one, and a node there gives a leaf
//!   child away. So every hub sends within one stripe of what it receives.
//!
//! Messages from a peer that does not hold the place it claims (an update from
//! a node that is not a child, a replacement for a node that was not one) get
//! a typed [`Refusal`] and change nothing.
//!
//! Calling order: `handle_*` with each input, then `poll_transmit` until
//! `None`. `handle_timeout` every second or so: an orphan that got no new
//! parent within [`ORPHAN_RETRY`] searches again from the root.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// A stripe tree's index, 0..f.
pub type Tree = u8;

/// Most stripes a forest has.
pub const MAX_STRIPES: u8 = 16;
/// An orphan that has no new parent this long after losing one searches
/// again, from the root.
pub const ORPHAN_RETRY: Duration = Duration::from_secs(2);
/// Children a node remembers losing (with the heir that filled each bubble),
/// for orphans that ask after the loss was noticed.
const DEPARTED_KEPT: usize = 8;

/// Whether ORPHAN_RETRY has passed since `since`: the one wait of the
/// forest's timers (an orphan's retry, an unconfirmed child, a handed or
/// given child that has not moved, a hub short of children).
fn overdue(now: Instant, since: Instant) -> bool {
    now.saturating_duration_since(since) >= ORPHAN_RETRY
}

/// Why a forest message was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// A tree index beyond the forest's stripes.
    BadTree,
    /// The sender claims to be a child here, and is not.
    NotAChild,
    /// The sender claims to be the parent here, and is not.
    NotYourParent,
    /// No room, and no place below to send the search.
    Full,
    /// A search for the hub itself, or a place that would make a loop.
    Loop,
    /// An orphan's heir that is not one: `dead` was not its parent.
    NotHeir,
}

/// What an `Update` says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UpdateInfo<P> {
    /// To a parent: this subtree's interior count, free slots (below each
    /// node's fanout) and spare slots (the slack beyond it). With
    /// `attached: false`, the sender has left for another parent. `epoch`
    /// counts the sender's placements in this tree: a notice older than
    /// the last one heard from it is stale (notices may cross on the way).
    /// `room`: levels below the sender to the nearest node that can take an
    /// interior joiner (0: the sender can, with a free slot or a leaf
    /// child); interior searches go towards the least, so the interior
    /// hubs stay a balanced tree. `give`: leaf children this subtree's
    /// nodes can give away and keep fanout − 1 (`Want` goes there).
    Up { interior: u32, free: u32, spare: u32, room: u32, give: u32, attached: bool, epoch: u32 },
    /// To a child: its grandparent, and its heir (the sibling that takes
    /// the parent's place if the parent fails).
    Down { grandparent: Option<P>, heir: Option<P> },
}

/// The forest's messages: the P2PCast paper's RPCs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Msg<P> {
    /// Find `joiner` a parent in `tree`. `interior`: it is the joiner's proper
    /// tree. `down`: the search has reached the root and descends.
    Search {
        tree: Tree,
        joiner: P,
        interior: bool,
        down: bool,
    },
    /// Take `child` on as a child in `tree`. With `dead`: an orphan of
    /// `dead` to its heir, which takes it only if `dead` was its parent too
    /// (a stale heir would make a loop). Without: from the receiver's own
    /// parent, handing a child down one level, or a newcomer to the leaf
    /// that becomes the special node.
    TakeOn {
        tree: Tree,
        child: P,
        interior: bool,
        dead: Option<P>,
    },
    /// You take `leaf`'s place as `parent`'s child; `leaf` is your child now.
    Substitute {
        tree: Tree,
        parent: P,
        grandparent: Option<P>,
        leaf: P,
    },
    /// Your parent in `tree` is `parent` now.
    Direct {
        tree: Tree,
        parent: P,
        grandparent: Option<P>,
    },
    /// My parent `dead` is gone: take me in its place (the heir), or find me
    /// one (an orphan with no heir).
    Replace {
        tree: Tree,
        dead: P,
        interior: bool,
    },
    Update {
        tree: Tree,
        info: UpdateInfo<P>,
    },
    Refuse {
        tree: Tree,
        why: Refusal,
    },
    /// `needy`, interior here, is two or more children short of its fanout
    /// (it would send two stripes fewer than it takes): a node with a leaf
    /// child to spare gives it one. The want climbs until a subtree reports
    /// leaves to spare, then descends there (`down`).
    Want {
        tree: Tree,
        needy: P,
        down: bool,
    },
    /// The answer to a `Want`: take `leaf`, the sender's leaf child, as
    /// yours. It stays the sender's until it says it has moved.
    Give {
        tree: Tree,
        leaf: P,
    },
    /// To the root, first: which tree is mine? The root sees every tree's
    /// interior count in its updates, so it plays this part of the tracker.
    Join,
    /// The root's answer: `tree` is the joiner's proper tree; it searches a
    /// place in every tree, starting at `contact` (one of the root's
    /// children), or at the random forest hub the tracker names.
    Welcome {
        tree: Tree,
        contact: P,
    },
}

impl<P> Msg<P> {
    pub fn tree(&self) -> Tree {
        match self {
            Msg::Search { tree, .. }
            | Msg::TakeOn { tree, .. }
            | Msg::Substitute { tree, .. }
            | Msg::Direct { tree, .. }
            | Msg::Replace { tree, .. }
            | Msg::Update { tree, .. }
            | Msg::Refuse { tree, .. }
            | Msg::Welcome { tree, .. }
            | Msg::Want { tree, .. }
            | Msg::Give { tree, .. } => *tree,
            Msg::Join => 0,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ForestConfig {
    /// Stripes, f (2..=MAX_STRIPES).
    pub stripes: u8,
    /// Children an interior hub takes in its proper tree before searches
    /// look elsewhere. Default f: a hub then sends f stripes and receives f.
    pub fanout: u8,
    /// Children beyond `fanout` it takes when no place below is free.
    /// Default 1: a tree's room for churn (a failed interior hub takes f
    /// places with it until a newcomer brings them back), at the price of
    /// some hubs sending one stripe more and others fewer (docs/DECISIONS.md).
    pub slack: u8,
    /// Children of the root in each tree.
    pub root_fanout: u8,
}

impl ForestConfig {
    pub fn new(stripes: u8) -> ForestConfig {
        let stripes = stripes.clamp(2, MAX_STRIPES);
        ForestConfig { stripes, fanout: stripes, slack: 1, root_fanout: stripes }
    }

    /// Most children of an interior hub.
    pub fn max_children(&self) -> u8 {
        self.fanout + self.slack
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Child<P> {
    pub id: P,
    /// Interior in this tree (its proper tree).
    pub interior: bool,
    sub_interior: u32,
    sub_free: u32,
    sub_spare: u32,
    sub_room: u32,
    sub_give: u32,
    /// Not yet confirmed by the child's first update: placed when. A child
    /// that never confirms (it failed, or took another place) is dropped
    /// after ORPHAN_RETRY.
    unconfirmed_since: Option<Instant>,
    /// The child's placement epoch in its last update.
    epoch: u32,
}

impl<P> Child<P> {
    fn new(id: P, interior: bool, counts: Counts, unconfirmed_since: Option<Instant>, epoch: u32) -> Self {
        let mut c = Child {
            id,
            interior,
            sub_interior: 0,
            sub_free: 0,
            sub_spare: 0,
            sub_room: 0,
            sub_give: 0,
            unconfirmed_since,
            epoch,
        };
        c.set_counts(counts);
        c
    }

    fn set_counts(&mut self, c: Counts) {
        (self.sub_interior, self.sub_free, self.sub_spare) = (c.interior, c.free, c.spare);
        (self.sub_room, self.sub_give) = (c.room, c.give);
    }
}

/// What a node reports up about its subtree (UpdateInfo::Up).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Counts {
    interior: u32,
    free: u32,
    spare: u32,
    room: u32,
    give: u32,
}

/// One node's view of one tree.
#[derive(Clone, Debug)]
struct TreeView<P> {
    parent: Option<P>,
    grandparent: Option<P>,
    /// The sibling that takes the parent's place if the parent fails (the
    /// parent says which).
    heir: Option<P>,
    /// The parent this node lost last.
    lost: Option<P>,
    /// The child that takes this node's place if it fails: its children's heir.
    successor: Option<P>,
    children: Vec<Child<P>>,
    /// A leaf of this tree that took children on (the special node).
    special: bool,
    /// Children lost lately, and the heir that took each one's place.
    departed: VecDeque<(P, Option<P>)>,
    /// Since when this node has had no parent here.
    orphaned_since: Option<Instant>,
    /// What was last reported up, to send only changes.
    reported: Option<Counts>,
    /// The successor last announced to the children.
    announced: Option<P>,
    /// The parent that said this node was not its child: told again when
    /// this node settles elsewhere, in case the refusal crossed a placement.
    refused_by: Option<P>,
    /// A leaf child given away (`Give`), and since when: it stays a child
    /// here until it has settled there (and says so), or ORPHAN_RETRY.
    moving: Option<(P, Instant)>,
    /// Since when this node has been short of children (needy), or when it
    /// last asked for them (`Want`).
    wanted: Option<Instant>,
    /// This node's placements in this tree, counted.
    epoch: u32,
    /// Children that left lately, with the epoch of their leave: one that
    /// comes back with a later epoch (its notices crossed) is a child again.
    left: VecDeque<(P, u32)>,
    /// Children handed down a level (the ripple), and when: each is told to
    /// search anew if it has not moved in ORPHAN_RETRY.
    handed: VecDeque<(P, Instant)>,
}

impl<P> Default for TreeView<P> {
    fn default() -> Self {
        TreeView {
            parent: None,
            grandparent: None,
            heir: None,
            successor: None,
            lost: None,
            children: Vec::new(),
            special: false,
            departed: VecDeque::new(),
            orphaned_since: None,
            reported: None,
            announced: None,
            refused_by: None,
            moving: None,
            wanted: None,
            epoch: 0,
            left: VecDeque::new(),
            handed: VecDeque::new(),
        }
    }
}

/// Counters of one node.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ForestStats {
    pub sent: u64,
    pub refused: u64,
    /// Messages refused by this node, by the sender's fault.
    pub refusals_sent: u64,
    pub retries: u64,
}

/// One hub's (or the root's) part in the forest.
pub struct ForestNode<P> {
    me: P,
    root: P,
    cfg: ForestConfig,
    is_root: bool,
    proper: Tree,
    trees: Vec<TreeView<P>>,
    out: VecDeque<(P, Msg<P>)>,
    stats: ForestStats,
    /// The time of the input being handled.
    now: Option<Instant>,
    /// At the root, per tree: proper trees handed out and not yet seen in
    /// the tree's counts, and the interior count last seen.
    pending: Vec<u32>,
    seen: Vec<u32>,
}

impl<P: Copy + Eq + Ord + std::fmt::Debug> ForestNode<P> {
    /// The root of every tree: the source.
    pub fn new_root(me: P, cfg: ForestConfig) -> Self {
        let mut n = ForestNode::new(me, me, 0, cfg);
        n.is_root = true;
        n
    }

    /// A hub whose proper tree is `proper` (given by the root's `Welcome`).
    pub fn new(me: P, root: P, proper: Tree, cfg: ForestConfig) -> Self {
        ForestNode {
            me,
            root,
            cfg,
            is_root: false,
            proper: proper % cfg.stripes,
            trees: (0..cfg.stripes).map(|_| TreeView::default()).collect(),
            out: VecDeque::new(),
            stats: ForestStats::default(),
            now: None,
            pending: vec![0; cfg.stripes as usize],
            seen: vec![0; cfg.stripes as usize],
        }
    }

    pub fn id(&self) -> P {
        self.me
    }

    pub fn proper(&self) -> Tree {
        self.proper
    }

    pub fn stats(&self) -> ForestStats {
        self.stats
    }

    pub fn parent(&self, t: Tree) -> Option<P> {
        self.trees.get(t as usize)?.parent
    }

    pub fn children(&self, t: Tree) -> &[Child<P>] {
        self.trees.get(t as usize).map_or(&[], |v| v.children.as_slice())
    }

    /// A leaf of `t` with children there: the special node.
    pub fn is_special(&self, t: Tree) -> bool {
        self.trees.get(t as usize).is_some_and(|v| v.special)
    }

    /// Join: search a place in every tree, starting at `contact` (a random
    /// forest hub the tracker named; the root's pick when there is none).
    pub fn join(&mut self, now: Instant, contact: P) {
        self.now = Some(now);
        for t in 0..self.cfg.stripes {
            self.trees[t as usize].orphaned_since = Some(now);
            let search = Msg::Search { tree: t, joiner: self.me, interior: t == self.proper, down: false };
            self.send(contact, search);
        }
    }

    pub fn poll_transmit(&mut self) -> Option<(P, Msg<P>)> {
        self.out.pop_front()
    }

    fn send(&mut self, to: P, msg: Msg<P>) {
        self.stats.sent += 1;
        self.out.push_back((to, msg));
    }

    fn refuse(&mut self, to: P, tree: Tree, why: Refusal) {
        self.stats.refusals_sent += 1;
        self.send(to, Msg::Refuse { tree, why });
    }

    /// Children this node may have in `t`.
    fn cap(&self, t: Tree) -> usize {
        let v = &self.trees[t as usize];
        if self.is_root {
            self.cfg.root_fanout as usize
        } else if t == self.proper || v.special {
            self.cfg.max_children() as usize
        } else {
            0
        }
    }

    /// Children this node takes in `t` before searches look elsewhere.
    fn soft_cap(&self, t: Tree) -> usize {
        match self.cap(t) {
            0 => 0,
            _ if self.is_root => self.cfg.root_fanout as usize,
            // A special node takes no one it is not asked to take.
            _ if t != self.proper => 0,
            _ => self.cfg.fanout as usize,
        }
    }

    /// The parent of `t` failed (its heartbeats stopped).
    pub fn handle_parent_lost(&mut self, now: Instant, t: Tree, dead: P) {
        self.now = Some(now);
        let Some(v) = self.trees.get_mut(t as usize) else { return };
        if v.parent != Some(dead) {
            return;
        }
        v.parent = None;
        v.lost = Some(dead);
        v.orphaned_since = Some(now);
        let (heir, grandparent) = (v.heir.filter(|h| *h != dead), v.grandparent.filter(|g| *g != dead));
        let interior = t == self.proper;
        match (heir, grandparent) {
            (Some(h), Some(g)) if h == self.me => self.send(g, Msg::Replace { tree: t, dead, interior }),
            (Some(h), _) if h != self.me => {
                self.send(h, Msg::TakeOn { tree: t, child: self.me, interior, dead: Some(dead) })
            }
            (None, Some(g)) => self.send(g, Msg::Replace { tree: t, dead, interior }),
            _ => self.send(self.root, Msg::Search { tree: t, joiner: self.me, interior, down: true }),
        }
    }

    /// A child of `t` failed.
    pub fn handle_child_lost(&mut self, now: Instant, t: Tree, dead: P) {
        self.now = Some(now);
        let Some(v) = self.trees.get_mut(t as usize) else { return };
        let before = v.children.len();
        v.children.retain(|c| c.id != dead);
        if v.children.len() != before {
            Self::note_departed(v, dead, None);
            self.changed(t);
        }
    }

    /// A child left (its leave's epoch): its older notices are stale.
    fn note_left(v: &mut TreeView<P>, id: P, epoch: u32) {
        // One entry per hub: its latest leave.
        v.left.retain(|(x, _)| *x != id);
        v.left.push_back((id, epoch));
        if v.left.len() > DEPARTED_KEPT {
            v.left.pop_front();
        }
    }

    fn note_departed(v: &mut TreeView<P>, dead: P, heir: Option<P>) {
        match v.departed.iter_mut().find(|(d, _)| *d == dead) {
            Some(entry) => entry.1 = entry.1.or(heir),
            None => {
                v.departed.push_back((dead, heir));
                if v.departed.len() > DEPARTED_KEPT {
                    v.departed.pop_front();
                }
            }
        }
    }

    /// Whether [`ForestNode::handle_timeout`] has work ahead: an orphan
    /// tree, a special node, a child placed, handed or given that has not
    /// confirmed or moved, or a hub short of children.
    pub fn wants_timeout(&self) -> bool {
        self.trees.iter().any(|v| {
            (v.parent.is_none() && !self.is_root)
                || v.special
                || v.children.iter().any(|c| c.unconfirmed_since.is_some())
                || !v.handed.is_empty()
                || v.moving.is_some()
        }) || self.needy(self.proper)
    }

    /// Every ORPHAN_RETRY or so: children that never confirmed their place
    /// are dropped, and handed ones that never moved told to search anew; a
    /// leaf given that never moved can be given again; a hub short of
    /// children asks for leaves; a special node has a child search a proper
    /// place; orphans that waited too long search again from the root.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.now = Some(now);
        for t in 0..self.cfg.stripes {
            let v = &mut self.trees[t as usize];
            let stale = |c: &Child<P>| c.unconfirmed_since.is_some_and(|s| overdue(now, s));
            let dropped: Vec<P> = v.children.iter().filter(|c| stale(c)).map(|c| c.id).collect();
            if !dropped.is_empty() {
                v.children.retain(|c| !stale(c));
                for id in dropped {
                    // In case it is there after all: it searches again.
                    self.refuse(id, t, Refusal::NotAChild);
                }
                self.changed(t);
            }
            while let Some(&(id, since)) = self.trees[t as usize].handed.front() {
                if !overdue(now, since) {
                    break;
                }
                self.trees[t as usize].handed.pop_front();
                self.refuse(id, t, Refusal::NotAChild);
            }
        }
        if self.is_root {
            return;
        }
        for t in 0..self.cfg.stripes {
            let v = &mut self.trees[t as usize];
            // A leaf given away that never moved is this node's to give again.
            if v.moving
                .is_some_and(|(leaf, since)| overdue(now, since) || !v.children.iter().any(|c| c.id == leaf))
            {
                v.moving = None;
                self.report_up(t);
            }
        }
        // Short of children for ORPHAN_RETRY: ask for leaves, and again
        // each ORPHAN_RETRY while short.
        let t = self.proper;
        let needy = self.needy(t);
        let v = &mut self.trees[t as usize];
        match v.wanted {
            _ if !needy => v.wanted = None,
            None => v.wanted = Some(now),
            Some(since) if overdue(now, since) => {
                v.wanted = Some(now);
                self.want(t, self.me, self.me, false);
            }
            Some(_) => {}
        }
        // The forest repairs around a special node: one of its children at a
        // time searches a proper place from the root. Once it has one it
        // leaves, and the node is a plain leaf again when the last has.
        for t in 0..self.cfg.stripes {
            let v = &self.trees[t as usize];
            if let (true, Some(c)) = (v.special, v.children.first().copied()) {
                self.send(self.root, Msg::Search { tree: t, joiner: c.id, interior: c.interior, down: true });
            }
        }
        for t in 0..self.cfg.stripes {
            let v = &mut self.trees[t as usize];
            if v.parent.is_none() && v.orphaned_since.is_some_and(|s| overdue(now, s)) {
                v.orphaned_since = Some(now);
                self.stats.retries += 1;
                let interior = t == self.proper;
                self.send(self.root, Msg::Search { tree: t, joiner: self.me, interior, down: true });
            }
        }
    }

    pub fn handle_message(&mut self, now: Instant, from: P, msg: Msg<P>) {
        self.now = Some(now);
        let t = msg.tree();
        if t >= self.cfg.stripes {
            if !matches!(msg, Msg::Refuse { .. }) {
                self.refuse(from, t, Refusal::BadTree);
            }
            return;
        }
        match msg {
            Msg::Search { joiner, interior, down, .. } => self.search(t, joiner, interior, down),
            Msg::TakeOn { child, interior, dead, .. } => self.take_on_asked(t, from, child, interior, dead),
            Msg::Substitute { parent, grandparent, leaf, .. } => {
                if self.attach(t, from, parent, grandparent) {
                    // It may have children already (placed before, then again
                    // by a retried search): over capacity, one is shed.
                    self.adopt(t, leaf, false);
                    self.shed(t);
                }
            }
            Msg::Direct { parent, grandparent, .. } => {
                self.attach(t, from, parent, grandparent);
            }
            Msg::Replace { dead, interior, .. } => self.replace(t, from, dead, interior),
            Msg::Update {
                info: UpdateInfo::Up { interior, free, spare, room, give, attached, epoch },
                ..
            } => {
                self.child_update(t, from, Counts { interior, free, spare, room, give }, attached, epoch);
            }
            Msg::Update { info: UpdateInfo::Down { grandparent, heir }, .. } => {
                let v = &mut self.trees[t as usize];
                if v.parent != Some(from) {
                    self.refuse(from, t, Refusal::NotYourParent);
                    return;
                }
                (v.grandparent, v.heir) = (grandparent, heir);
            }
            Msg::Want { needy, down, .. } => self.want(t, from, needy, down),
            Msg::Give { leaf, .. } => self.given(t, from, leaf),
            Msg::Join if self.is_root => {
                let tree = self.assign_tree();
                // A child of the root (any tree) to start the searches at.
                let kids: Vec<P> = self.trees.iter().flat_map(|v| v.children.iter().map(|c| c.id)).collect();
                let pick = self.pending.iter().chain(&self.seen).sum::<u32>() as usize;
                let contact = kids.get(pick % kids.len().max(1)).copied().unwrap_or(self.me);
                self.send(from, Msg::Welcome { tree, contact });
            }
            Msg::Join => self.refuse(from, t, Refusal::NotYourParent),
            // A welcome is for the hub's owner, before its node exists.
            Msg::Welcome { .. } => {}
            Msg::Refuse { why, .. } => {
                self.stats.refused += 1;
                let v = &mut self.trees[t as usize];
                // Dropped by the parent (shed, or a stale place), or no room
                // found: search again from the root after ORPHAN_RETRY.
                let dropped = why == Refusal::NotAChild && v.parent == Some(from);
                if dropped {
                    v.refused_by = Some(from);
                }
                if why == Refusal::Full {
                    // A leaf given to a hub no longer short stays here.
                    v.moving = None;
                }
                if dropped || (why == Refusal::Full && v.parent.is_none()) {
                    v.parent = None;
                    v.orphaned_since = Some(now);
                }
                // The heir named was stale: the grandparent finds a place.
                let lost = v.lost.filter(|_| why == Refusal::NotHeir && v.parent.is_none());
                if let (Some(dead), Some(g)) = (lost, v.grandparent.filter(|g| Some(*g) != v.lost)) {
                    v.lost = None;
                    let interior = t == self.proper;
                    self.send(g, Msg::Replace { tree: t, dead, interior });
                }
            }
        }
    }

    /// At the root: the proper tree for a joiner, the one with the fewest
    /// interior hubs. The count is what the tree's updates report (so
    /// failed hubs leave it), plus the joiners sent there and not yet seen.
    fn assign_tree(&mut self) -> Tree {
        for t in 0..self.cfg.stripes as usize {
            let now: u32 = self.trees[t].children.iter().map(|c| c.sub_interior).sum();
            let grew = now.saturating_sub(self.seen[t]);
            self.pending[t] = self.pending[t].saturating_sub(grew);
            self.seen[t] = now;
        }
        let score = |t: Tree| self.seen[t as usize] + self.pending[t as usize];
        let tree = (0..self.cfg.stripes).min_by_key(|t| (score(*t), *t)).unwrap_or(0);
        self.pending[tree as usize] += 1;
        tree
    }

    /// A child's update: its counts, or its leave. Stale ones (an epoch older
    /// than the last heard) change nothing.
    fn child_update(&mut self, t: Tree, from: P, counts: Counts, attached: bool, epoch: u32) {
        let cap = self.cap(t);
        let v = &mut self.trees[t as usize];
        match v.children.iter_mut().find(|c| c.id == from) {
            Some(c) if epoch < c.epoch => {}
            Some(c) if attached => {
                c.set_counts(counts);
                c.epoch = epoch;
                c.unconfirmed_since = None;
                self.changed(t);
            }
            Some(_) => {
                v.children.retain(|c| c.id != from);
                Self::note_left(v, from, epoch);
                self.changed(t);
            }
            None if attached => {
                // Back with a later placement than its leave (the two crossed):
                // a child again, room permitting. Otherwise not a child here.
                let back = v.left.iter().position(|(id, e)| *id == from && *e < epoch);
                match back {
                    Some(at) if v.children.len() < cap => {
                        v.left.remove(at);
                        // Its subtree's interior count counts itself.
                        let interior = counts.interior > 0;
                        v.children.push(Child::new(from, interior, counts, None, epoch));
                        self.changed(t);
                    }
                    _ if v.left.iter().any(|(id, e)| *id == from && *e >= epoch) => {}
                    _ => self.refuse(from, t, Refusal::NotAChild),
                }
            }
            // Moved on from here: handed down, it has arrived.
            None => v.handed.retain(|(id, _)| *id != from),
        }
    }

    /// `parent` has placed this node under it in `t`: said by `parent`
    /// itself, or by the present parent handing this node over.
    fn attach(&mut self, t: Tree, from: P, parent: P, grandparent: Option<P>) -> bool {
        let v = &self.trees[t as usize];
        let handover = v.parent == Some(from);
        // A parent that hangs below this node (news that crossed on the way)
        // would close a loop: refused; the place times out at the parent.
        let below = v.children.iter().any(|c| c.id == parent);
        if (from != parent && !handover) || parent == self.me || self.is_root || below {
            self.refuse(from, t, Refusal::Loop);
            return false;
        }
        let v = &mut self.trees[t as usize];
        let old = v.parent.replace(parent);
        if old != Some(parent) {
            v.epoch += 1;
        }
        let epoch = v.epoch;
        let refused_by = v.refused_by.take();
        v.grandparent = grandparent;
        v.orphaned_since = None;
        v.reported = None;
        let mut left: Vec<P> = old.into_iter().chain(refused_by).filter(|o| *o != parent).collect();
        left.dedup();
        for old in left {
            // Placed twice (a retry crossed a late answer): leave the other.
            let info =
                UpdateInfo::Up { interior: 0, free: 0, spare: 0, room: 0, give: 0, attached: false, epoch };
            self.send(old, Msg::Update { tree: t, info });
        }
        // The children's grandparent changed; the new parent wants the counts.
        self.announce_down(t, true);
        self.report_up(t);
        true
    }

    fn search(&mut self, t: Tree, joiner: P, interior: bool, down: bool) {
        if joiner == self.me {
            return;
        }
        let v = &self.trees[t as usize];
        // Already a child here (a retried search): confirm the place.
        if v.children.iter().any(|c| c.id == joiner) {
            let grandparent = v.parent;
            self.send(joiner, Msg::Direct { tree: t, parent: self.me, grandparent });
            return;
        }
        let cap = self.cap(t);
        let spare = cap > v.children.len();
        let free = self.soft_cap(t) > v.children.len();
        if !self.is_root && !down {
            // Climbing: a leaf joiner takes the first free slot; everything
            // else goes on up to the root.
            if free && !interior {
                return self.adopt(t, joiner, interior);
            }
            let next = v.parent.or(v.grandparent).unwrap_or(self.root);
            return self.send(next, Msg::Search { tree: t, joiner, interior, down: next == self.root });
        }
        if cap == 0 {
            // A search sent down to a leaf: the tree is out of room here.
            return self.take_on(t, joiner, interior);
        }
        let leaf = v.children.iter().position(|c| !c.interior);
        let below_free = v.children.iter().any(|c| c.sub_free > 0 && c.id != joiner);
        let best_interior = v
            .children
            .iter()
            .filter(|c| c.interior && c.id != joiner)
            .min_by_key(|c| (c.sub_room, c.sub_interior, c.id))
            .map(|c| c.id);
        let most_free = v
            .children
            .iter()
            .filter(|c| c.id != joiner)
            .filter(|c| c.sub_free > 0 || c.sub_spare > 0)
            .max_by_key(|c| (c.sub_free, c.sub_spare))
            .map(|c| c.id);
        if interior {
            if let (false, Some(at)) = (free, leaf) {
                return self.substitute(t, at, joiner);
            }
            if free {
                return self.adopt(t, joiner, interior);
            }
            match best_interior {
                Some(c) => self.pass_down(t, c, joiner, interior),
                None if spare => self.adopt(t, joiner, interior),
                None if !self.is_root => self.bounce(t, joiner, interior),
                None => self.refuse(joiner, t, Refusal::Full),
            }
        } else if free {
            self.adopt(t, joiner, interior)
        } else if let Some(c) = most_free.filter(|_| !spare || below_free) {
            self.pass_down(t, c, joiner, interior)
        } else if spare {
            self.adopt(t, joiner, interior)
        } else if !self.is_root && v.parent.is_some() {
            // Sent down on counts that were out of date (places taken by
            // searches that climbed in from below): back up, with the counts
            // corrected.
            self.bounce(t, joiner, interior)
        } else if let Some(at) = leaf {
            // No free slot anywhere below: a leaf child becomes the special node.
            let leaf = v.children[at].id;
            self.send(leaf, Msg::TakeOn { tree: t, child: joiner, interior, dead: None })
        } else {
            self.refuse(joiner, t, Refusal::Full)
        }
    }

    /// A search sent down here found no room: report the true counts up and
    /// send the search back up, to be sent down elsewhere.
    fn bounce(&mut self, t: Tree, joiner: P, interior: bool) {
        let v = &mut self.trees[t as usize];
        v.reported = None;
        let next = v.parent.unwrap_or(self.root);
        self.report_up(t);
        self.send(next, Msg::Search { tree: t, joiner, interior, down: false });
    }

    /// Send a search down to child `c`, counting the place it will take there
    /// at once: searches that follow before `c`'s next update go elsewhere.
    fn pass_down(&mut self, t: Tree, c: P, joiner: P, interior: bool) {
        if let Some(child) = self.trees[t as usize].children.iter_mut().find(|x| x.id == c) {
            if interior {
                child.sub_interior += 1;
            } else if child.sub_free > 0 {
                child.sub_free -= 1;
            } else {
                child.sub_spare = child.sub_spare.saturating_sub(1);
            }
        }
        self.send(c, Msg::Search { tree: t, joiner, interior, down: true });
    }

    /// `child` asks to be taken on (an orphan at its heir, or a newcomer at a
    /// leaf that becomes special). Over capacity, the surplus is shed down.
    /// A `TakeOn` received: taken only from an orphan's sibling (it may
    /// not have noticed the loss yet) or the heir that noticed it, or from
    /// this node's parent.
    fn take_on_asked(&mut self, t: Tree, from: P, child: P, interior: bool, dead: Option<P>) {
        let v = &self.trees[t as usize];
        match dead {
            Some(dead) if v.parent != Some(dead) && v.lost != Some(dead) => {
                self.refuse(child, t, Refusal::NotHeir)
            }
            None if v.parent != Some(from) => self.refuse(from, t, Refusal::NotYourParent),
            _ => self.take_on(t, child, interior),
        }
    }

    fn take_on(&mut self, t: Tree, child: P, interior: bool) {
        if child == self.me || self.trees[t as usize].parent == Some(child) {
            return self.refuse(child, t, Refusal::Loop);
        }
        if self.cap(t) == 0 {
            if interior {
                // An interior joiner never hangs below a leaf: back to the root.
                return self.send(self.root, Msg::Search { tree: t, joiner: child, interior, down: true });
            }
            self.trees[t as usize].special = true;
        }
        self.adopt(t, child, interior);
        self.shed(t);
    }

    /// Over capacity (an heir that took its siblings on): shed leaves
    /// first, each searching down from here. Then the ripple: this node has
    /// moved up a level (into its dead parent's place, or under a node that
    /// did), and its older children with it; handed down, one at a time,
    /// under the oldest of them, they are back at their depth, and the
    /// surplus goes on down the same way until it meets leaves. Subtrees
    /// never sink, so the interior hubs stay a balanced tree.
    fn shed(&mut self, t: Tree) {
        while self.trees[t as usize].children.len() > self.cap(t) {
            let now = self.now;
            let v = &mut self.trees[t as usize];
            if let Some(at) = v.children.iter().position(|c| !c.interior) {
                let c = v.children.remove(at);
                self.changed(t);
                // It is no longer a child here: it searches again if the
                // search made for it now finds it no place.
                self.refuse(c.id, t, Refusal::NotAChild);
                self.search(t, c.id, c.interior, true);
                continue;
            }
            let mut interior = v.children.iter().filter(|c| c.interior);
            let (Some(under), Some(c)) = (interior.next().map(|c| c.id), interior.next().copied()) else {
                return;
            };
            v.children.retain(|x| x.id != c.id);
            // Still its parent until it says it has moved (its stale updates
            // are no claim); told to search anew if the move never happens.
            Self::note_left(v, c.id, c.epoch);
            if let Some(now) = now {
                v.handed.push_back((c.id, now));
            }
            if let Some(s) = v.children.iter_mut().find(|x| x.id == under) {
                s.sub_interior += c.sub_interior;
            }
            self.changed(t);
            self.send(under, Msg::TakeOn { tree: t, child: c.id, interior: true, dead: None });
        }
    }

    fn adopt(&mut self, t: Tree, id: P, interior: bool) {
        let now = self.now;
        let v = &mut self.trees[t as usize];
        if !v.children.iter().any(|c| c.id == id) {
            let counts = if interior {
                Counts {
                    interior: 1,
                    free: self.cfg.fanout as u32,
                    spare: self.cfg.slack as u32,
                    ..Counts::default()
                }
            } else {
                Counts::default()
            };
            v.children.push(Child::new(id, interior, counts, now, 0));
        }
        let grandparent = v.parent;
        self.send(id, Msg::Direct { tree: t, parent: self.me, grandparent });
        self.changed(t);
        // The new child learns its heir even when the heir did not change.
        let heir = self.trees[t as usize].successor;
        self.send(id, Msg::Update { tree: t, info: UpdateInfo::Down { grandparent, heir } });
    }

    fn substitute(&mut self, t: Tree, at: usize, joiner: P) {
        let v = &mut self.trees[t as usize];
        let leaf = v.children[at].id;
        let counts = Counts {
            interior: 1,
            free: self.cfg.fanout as u32 - 1,
            spare: self.cfg.slack as u32,
            ..Counts::default()
        };
        v.children[at] = Child::new(joiner, true, counts, self.now, 0);
        let grandparent = v.parent;
        self.send(joiner, Msg::Substitute { tree: t, parent: self.me, grandparent, leaf });
        // The leaf hears it from here too: were the joiner to fail before
        // taking it on, the leaf still knows where it hangs, and repairs.
        self.send(leaf, Msg::Direct { tree: t, parent: joiner, grandparent: Some(self.me) });
        self.changed(t);
        let heir = self.trees[t as usize].successor;
        self.send(joiner, Msg::Update { tree: t, info: UpdateInfo::Down { grandparent, heir } });
    }

    /// `from` says its parent `dead` (a child of this node) is gone.
    fn replace(&mut self, t: Tree, from: P, dead: P, interior: bool) {
        let v = &mut self.trees[t as usize];
        let departed = v.departed.iter().find(|(d, _)| *d == dead).copied();
        if let Some((_, Some(heir))) = departed.filter(|(_, h)| *h != Some(from)) {
            return self.send(heir, Msg::TakeOn { tree: t, child: from, interior, dead: Some(dead) });
        }
        let was_child = v.children.iter().any(|c| c.id == dead);
        if !was_child && departed.is_none() {
            // Not a place this node gave: the claim is refused, and the
            // orphan searches from the root, as a newcomer. (Not from here:
            // on stale news this node may hang below the orphan now, and a
            // place found here would close a loop.)
            self.refuse(from, t, Refusal::NotAChild);
            return self.send(self.root, Msg::Search { tree: t, joiner: from, interior, down: true });
        }
        v.children.retain(|c| c.id != dead);
        Self::note_departed(v, dead, interior.then_some(from));
        if self.cap(t) > self.trees[t as usize].children.len() {
            self.adopt(t, from, interior);
        } else {
            self.changed(t);
            self.search(t, from, interior, true);
        }
    }

    /// Children of `t` changed: tell the parent the new counts and the
    /// children a new heir.
    fn changed(&mut self, t: Tree) {
        let v = &mut self.trees[t as usize];
        if v.special && v.children.is_empty() {
            v.special = false;
        }
        v.successor = v.children.iter().filter(|c| c.interior).map(|c| c.id).min();
        self.announce_down(t, false);
        self.report_up(t);
    }

    /// Leaf children this node can give away and keep fanout − 1 (none
    /// while a leaf it gave has not moved yet).
    fn givable(&self, t: Tree) -> u32 {
        let v = &self.trees[t as usize];
        let fanout = self.cfg.fanout as usize;
        if self.is_root || t != self.proper || v.moving.is_some() {
            return 0;
        }
        let leaves = v.children.iter().filter(|c| !c.interior).count();
        (v.children.len() + 1).saturating_sub(fanout).min(leaves) as u32
    }

    /// Interior here, placed, and two or more children short of its fanout:
    /// it would send two stripes fewer than it takes.
    fn needy(&self, t: Tree) -> bool {
        let v = &self.trees[t as usize];
        !self.is_root
            && t == self.proper
            && v.parent.is_some()
            && v.children.len() + 2 <= self.cfg.fanout as usize
    }

    /// A `Want` for `needy`, from `from`: give it a leaf from here, or pass
    /// the want to the subtree with the most leaves to spare, or up.
    fn want(&mut self, t: Tree, from: P, needy: P, down: bool) {
        if needy != self.me && self.givable(t) > 0 {
            let v = &mut self.trees[t as usize];
            if let (Some(leaf), Some(now)) = (v.children.iter().find(|c| !c.interior).map(|c| c.id), self.now)
            {
                v.moving = Some((leaf, now));
                self.send(needy, Msg::Give { tree: t, leaf });
                self.report_up(t);
                return;
            }
        }
        let v = &mut self.trees[t as usize];
        let below = v
            .children
            .iter_mut()
            .filter(|c| c.sub_give > 0 && c.id != from && c.id != needy)
            .max_by_key(|c| (c.sub_give, c.id));
        match (below, v.parent) {
            (Some(c), _) => {
                // Counted at once, as a search passed down is.
                c.sub_give -= 1;
                let to = c.id;
                self.send(to, Msg::Want { tree: t, needy, down: true });
            }
            (None, Some(parent)) if !down => self.send(parent, Msg::Want { tree: t, needy, down: false }),
            // Nothing to spare: the needy node asks again later.
            _ => {}
        }
    }

    /// A leaf given in answer to this node's `Want`: taken while it is short.
    fn given(&mut self, t: Tree, from: P, leaf: P) {
        let v = &self.trees[t as usize];
        let short = t == self.proper && !self.is_root && v.children.len() < self.soft_cap(t);
        if !short || leaf == self.me || v.parent == Some(leaf) || v.children.iter().any(|c| c.id == leaf) {
            return self.refuse(from, t, Refusal::Full);
        }
        self.adopt(t, leaf, false);
        if self.needy(t) {
            self.trees[t as usize].wanted = self.now;
            self.want(t, self.me, self.me, false);
        }
    }

    fn announce_down(&mut self, t: Tree, always: bool) {
        let v = &mut self.trees[t as usize];
        if !always && v.announced == v.successor {
            return;
        }
        v.announced = v.successor;
        let (grandparent, heir) = (v.parent, v.successor);
        let kids: Vec<P> = v.children.iter().map(|c| c.id).collect();
        for k in kids {
            self.send(k, Msg::Update { tree: t, info: UpdateInfo::Down { grandparent, heir } });
        }
    }

    fn report_up(&mut self, t: Tree) {
        let (soft, cap, own_give) = (self.soft_cap(t), self.cap(t), self.givable(t));
        let v = &mut self.trees[t as usize];
        let Some(parent) = v.parent else { return };
        let n = v.children.len();
        let interior = u32::from(t == self.proper && !self.is_root)
            + v.children.iter().map(|c| c.sub_interior).sum::<u32>();
        let free = soft.saturating_sub(n) as u32 + v.children.iter().map(|c| c.sub_free).sum::<u32>();
        let own_spare = if v.special { 0 } else { cap.saturating_sub(n.max(soft)) as u32 };
        let spare = own_spare + v.children.iter().map(|c| c.sub_spare).sum::<u32>();
        let takes_interior = n < soft || v.children.iter().any(|c| !c.interior);
        let room = match takes_interior {
            true => 0,
            false => v
                .children
                .iter()
                .filter(|c| c.interior)
                .map(|c| c.sub_room.saturating_add(1))
                .min()
                .unwrap_or(0),
        };
        let give = own_give + v.children.iter().map(|c| c.sub_give).sum::<u32>();
        let counts = Counts { interior, free, spare, room, give };
        if v.reported == Some(counts) {
            return;
        }
        v.reported = Some(counts);
        let epoch = v.epoch;
        let info = UpdateInfo::Up { interior, free, spare, room, give, attached: true, epoch };
        self.send(parent, Msg::Update { tree: t, info });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusals(n: &mut ForestNode<u32>) -> Vec<(u32, Refusal)> {
        std::iter::from_fn(|| n.poll_transmit())
            .filter_map(|(to, m)| match m {
                Msg::Refuse { why, .. } => Some((to, why)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_hub_claiming_a_place_it_does_not_hold_gets_a_typed_refusal_and_changes_nothing() {
        let now = Instant::now();
        let cfg = ForestConfig::new(4);
        let mut root = ForestNode::new_root(0u32, cfg);
        root.handle_message(now, 7, Msg::Search { tree: 0, joiner: 7, interior: true, down: false });
        assert_eq!(root.children(0).len(), 1);
        let _ = refusals(&mut root);

        let up =
            UpdateInfo::Up { interior: 9, free: 9, spare: 9, room: 0, give: 0, attached: true, epoch: 1 };
        root.handle_message(now, 8, Msg::Update { tree: 0, info: up });
        root.handle_message(now, 8, Msg::Replace { tree: 1, dead: 5, interior: true });
        root.handle_message(now, 8, Msg::Search { tree: 9, joiner: 8, interior: false, down: true });
        let got = refusals(&mut root);
        assert!(got.contains(&(8, Refusal::NotAChild)), "{got:?}");
        assert!(got.contains(&(8, Refusal::BadTree)), "{got:?}");
        assert_eq!(root.children(0).iter().map(|c| c.id).collect::<Vec<_>>(), [7]);

        let mut hub = ForestNode::new(7u32, 0, 0, cfg);
        hub.handle_message(now, 0, Msg::Direct { tree: 0, parent: 0, grandparent: None });
        assert_eq!(hub.parent(0), Some(0));
        let _ = refusals(&mut hub);
        // Another hub says it is the parent, or directs it elsewhere.
        hub.handle_message(
            now,
            3,
            Msg::Update { tree: 0, info: UpdateInfo::Down { grandparent: None, heir: Some(3) } },
        );
        hub.handle_message(now, 3, Msg::Direct { tree: 0, parent: 4, grandparent: None });
        let got = refusals(&mut hub);
        assert!(got.contains(&(3, Refusal::NotYourParent)) && got.contains(&(3, Refusal::Loop)), "{got:?}");
        assert_eq!(hub.parent(0), Some(0));
    }

    #[test]
    fn the_root_gives_out_the_tree_with_the_fewest_interior_hubs_as_its_updates_count_them() {
        let now = Instant::now();
        let cfg = ForestConfig::new(3);
        let mut root = ForestNode::new_root(0u32, cfg);
        let welcome = |root: &mut ForestNode<u32>, hub: u32| {
            root.handle_message(now, hub, Msg::Join);
            std::iter::from_fn(|| root.poll_transmit())
                .find_map(|(to, m)| match m {
                    Msg::Welcome { tree, .. } if to == hub => Some(tree),
                    _ => None,
                })
                .expect("a welcome")
        };
        assert_eq!(
            [1, 2, 3].map(|h| welcome(&mut root, h)),
            [0, 1, 2],
            "round robin while nothing is counted"
        );
        // Tree 0's hub arrives and reports; trees 1 and 2 report two interior
        // hubs each (one placed, one more below): tree 0 is the emptiest.
        for (tree, hub, interior) in [(0, 1, 1), (1, 2, 2), (2, 3, 2)] {
            root.handle_message(now, hub, Msg::Search { tree, joiner: hub, interior: true, down: true });
            let up =
                UpdateInfo::Up { interior, free: 4, spare: 1, room: 0, give: 0, attached: true, epoch: 1 };
            root.handle_message(now, hub, Msg::Update { tree, info: up });
        }
        assert_eq!(welcome(&mut root, 4), 0);
        // Tree 1's hubs fail: its updates stop counting them.
        root.handle_child_lost(now, 1, 2);
        assert_eq!(welcome(&mut root, 5), 1);
    }

    #[test]
    fn notices_that_cross_on_the_way_are_ordered_by_epoch() {
        let now = Instant::now();
        let cfg = ForestConfig::new(4);
        let mut root = ForestNode::new_root(0u32, cfg);
        root.handle_message(now, 7, Msg::Search { tree: 1, joiner: 7, interior: false, down: true });
        let up = |attached, epoch| Msg::Update {
            tree: 1,
            info: UpdateInfo::Up { interior: 0, free: 0, spare: 0, room: 0, give: 0, attached, epoch },
        };
        root.handle_message(now, 7, up(true, 1));
        // It left at epoch 2; its update of epoch 1, overtaken, changes nothing.
        root.handle_message(now, 7, up(false, 2));
        root.handle_message(now, 7, up(true, 1));
        assert!(root.children(1).is_empty());
        assert!(refusals(&mut root).is_empty(), "a stale update is no claim to refuse");
        // Back at epoch 3 (placed here again; the leave crossed it): a child.
        root.handle_message(now, 7, up(true, 3));
        assert_eq!(root.children(1).iter().map(|c| c.id).collect::<Vec<_>>(), [7]);
        // A late leave from epoch 2 does not take it away.
        root.handle_message(now, 7, up(false, 2));
        assert_eq!(root.children(1).len(), 1);
    }

    #[test]
    fn an_heir_fills_the_bubble_and_its_siblings_hang_below_it() {
        let now = Instant::now();
        let cfg = ForestConfig::new(2);
        // Parent 1 (proper tree 0) under the root, with children 2 and 3
        // (both interior in tree 0); the heir is 2.
        let mut root = ForestNode::new_root(0u32, cfg);
        root.handle_message(now, 1, Msg::Search { tree: 0, joiner: 1, interior: true, down: true });
        let mut two = ForestNode::new(2u32, 0, 0, cfg);
        two.handle_message(now, 1, Msg::Direct { tree: 0, parent: 1, grandparent: Some(0) });
        two.handle_message(
            now,
            1,
            Msg::Update { tree: 0, info: UpdateInfo::Down { grandparent: Some(0), heir: Some(2) } },
        );
        while two.poll_transmit().is_some() {}
        // 1 fails: 2 asks the root to take it in 1's place.
        root.handle_child_lost(now, 0, 1);
        two.handle_parent_lost(now, 0, 1);
        let (to, msg) = two.poll_transmit().unwrap();
        assert_eq!((to, &msg), (0, &Msg::Replace { tree: 0, dead: 1, interior: true }));
        root.handle_message(now, 2, msg);
        assert_eq!(root.children(0).iter().map(|c| c.id).collect::<Vec<_>>(), [2]);
        // 3 asks late, at the root: sent on to the heir.
        root.handle_message(now, 3, Msg::Replace { tree: 0, dead: 1, interior: true });
        let sent: Vec<_> = std::iter::from_fn(|| root.poll_transmit()).collect();
        assert!(
            sent.contains(&(2, Msg::TakeOn { tree: 0, child: 3, interior: true, dead: Some(1) })),
            "{sent:?}"
        );
    }

    fn drain(n: &mut ForestNode<u32>) -> Vec<(u32, Msg<u32>)> {
        std::iter::from_fn(|| n.poll_transmit()).collect()
    }

    fn place(n: &mut ForestNode<u32>, now: Instant, parent: u32, grandparent: u32, heir: u32) {
        n.handle_message(now, parent, Msg::Direct { tree: 0, parent, grandparent: Some(grandparent) });
        let down = UpdateInfo::Down { grandparent: Some(grandparent), heir: Some(heir) };
        n.handle_message(now, parent, Msg::Update { tree: 0, info: down });
    }

    #[test]
    fn an_orphan_asks_the_heir_its_parent_named_and_a_stale_heir_sends_it_to_the_grandparent() {
        let now = Instant::now();
        let cfg = ForestConfig::new(4);
        // Hub 5 hangs below 1 (below the root, 0); 1 named 3 the heir.
        let mut orphan = ForestNode::new(5u32, 0, 0, cfg);
        place(&mut orphan, now, 1, 0, 3);
        // 5 takes an interior child of its own, 9: 9 is 5's successor, and
        // not the heir of 1's children.
        orphan.handle_message(now, 9, Msg::Search { tree: 0, joiner: 9, interior: true, down: true });
        assert_eq!(orphan.children(0).len(), 1);
        drain(&mut orphan);
        orphan.handle_parent_lost(now, 0, 1);
        let sent = drain(&mut orphan);
        assert_eq!(sent, [(3, Msg::TakeOn { tree: 0, child: 5, interior: true, dead: Some(1) })]);

        // 3 has moved on since (it hangs below 7): taking 5 on could close a
        // loop, so it refuses, and takes no one.
        let mut stale = ForestNode::new(3u32, 0, 0, cfg);
        place(&mut stale, now, 7, 0, 3);
        drain(&mut stale);
        stale.handle_message(now, 5, sent[0].1.clone());
        // Nor does a hub that is not its parent hand it children.
        stale.handle_message(now, 8, Msg::TakeOn { tree: 0, child: 6, interior: false, dead: None });
        assert_eq!(refusals(&mut stale), [(5, Refusal::NotHeir), (8, Refusal::NotYourParent)]);
        assert!(stale.children(0).is_empty());

        // The orphan asks its grandparent for 1's place instead.
        orphan.handle_message(now, 3, Msg::Refuse { tree: 0, why: Refusal::NotHeir });
        assert_eq!(drain(&mut orphan), [(0, Msg::Replace { tree: 0, dead: 1, interior: true })]);
    }

    #[test]
    fn an_heir_over_capacity_hands_its_older_interior_children_down_under_the_oldest() {
        let now = Instant::now();
        // Fanout 2, slack 1: three children at most.
        let cfg = ForestConfig::new(2);
        let mut heir = ForestNode::new(2u32, 0, 0, cfg);
        place(&mut heir, now, 1, 0, 2);
        for c in [10, 11, 12] {
            heir.handle_message(now, 1, Msg::TakeOn { tree: 0, child: c, interior: true, dead: None });
            let up =
                UpdateInfo::Up { interior: 1, free: 2, spare: 1, room: 0, give: 0, attached: true, epoch: 1 };
            heir.handle_message(now, c, Msg::Update { tree: 0, info: up });
        }
        assert_eq!(heir.children(0).len(), 3);
        // 1 fails; its heir asks the root for the place, and a sibling, 3,
        // asks the heir to take it on: four children, one too many.
        heir.handle_parent_lost(now, 0, 1);
        heir.handle_message(now, 0, Msg::Direct { tree: 0, parent: 0, grandparent: None });
        drain(&mut heir);
        heir.handle_message(now, 3, Msg::TakeOn { tree: 0, child: 3, interior: true, dead: Some(1) });
        let sent = drain(&mut heir);
        // 11 goes back to its depth, under 10 (both moved up with the heir);
        // it is not dropped, so it never goes without a parent.
        assert!(
            sent.contains(&(10, Msg::TakeOn { tree: 0, child: 11, interior: true, dead: None })),
            "{sent:?}"
        );
        assert!(!sent.iter().any(|(to, m)| *to == 11 && matches!(m, Msg::Refuse { .. })), "{sent:?}");
        let kids: Vec<u32> = heir.children(0).iter().map(|c| c.id).collect();
        assert_eq!(kids, [10, 12, 3]);
        // Its update from before the move is no claim to refuse.
        let up =
            UpdateInfo::Up { interior: 1, free: 2, spare: 1, room: 0, give: 0, attached: true, epoch: 1 };
        heir.handle_message(now, 11, Msg::Update { tree: 0, info: up });
        assert!(refusals(&mut heir).is_empty());
        // Were the move never to happen, 11 is told to search anew.
        heir.handle_timeout(now + ORPHAN_RETRY);
        assert!(refusals(&mut heir).contains(&(11, Refusal::NotAChild)));
    }

    #[test]
    fn a_hub_short_of_children_asks_for_leaves_and_one_with_a_leaf_to_spare_gives_it() {
        let now = Instant::now();
        let cfg = ForestConfig::new(4);
        // A leaf child, placed and confirmed.
        let leaf = |n: &mut ForestNode<u32>, c: u32| {
            n.handle_message(now, c, Msg::Search { tree: 0, joiner: c, interior: false, down: true });
            let up =
                UpdateInfo::Up { interior: 0, free: 0, spare: 0, room: 0, give: 0, attached: true, epoch: 1 };
            n.handle_message(now, c, Msg::Update { tree: 0, info: up });
        };
        // Hub 5, interior in tree 0 below 1, has one child of four: it would
        // send one stripe and take four.
        let mut needy = ForestNode::new(5u32, 0, 0, cfg);
        place(&mut needy, now, 1, 0, 5);
        leaf(&mut needy, 20);
        drain(&mut needy);
        // A hub just short waits a while (newcomers may fill the places)...
        needy.handle_timeout(now);
        assert!(drain(&mut needy).is_empty());
        // ...then asks, up its tree.
        needy.handle_timeout(now + ORPHAN_RETRY);
        assert_eq!(drain(&mut needy), [(1, Msg::Want { tree: 0, needy: 5, down: false })]);

        // Hub 7 has four leaf children: it can spare one, and says so up.
        let mut donor = ForestNode::new(7u32, 0, 0, cfg);
        place(&mut donor, now, 1, 0, 7);
        for c in 30..34 {
            leaf(&mut donor, c);
        }
        let mut reported = drain(&mut donor).into_iter().filter_map(|(to, m)| match m {
            Msg::Update { info: UpdateInfo::Up { give, .. }, .. } if to == 1 => Some(give),
            _ => None,
        });
        assert_eq!(reported.next_back(), Some(1));
        donor.handle_message(now, 1, Msg::Want { tree: 0, needy: 5, down: true });
        let sent = drain(&mut donor);
        assert!(sent.contains(&(5, Msg::Give { tree: 0, leaf: 30 })), "{sent:?}");
        // Until that leaf has moved it spares no other, and keeps it listed.
        donor.handle_message(now, 1, Msg::Want { tree: 0, needy: 9, down: true });
        assert!(!drain(&mut donor).iter().any(|(_, m)| matches!(m, Msg::Give { .. })));
        assert_eq!(donor.children(0).len(), 4);

        // The needy hub takes the leaf on, and, two short still, asks again.
        needy.handle_message(now, 7, Msg::Give { tree: 0, leaf: 30 });
        let sent = drain(&mut needy);
        assert!(sent.contains(&(30, Msg::Direct { tree: 0, parent: 5, grandparent: Some(1) })), "{sent:?}");
        assert!(sent.contains(&(1, Msg::Want { tree: 0, needy: 5, down: false })), "{sent:?}");
        assert_eq!(needy.children(0).len(), 2);
        // The leaf says it has left the donor.
        let leave =
            UpdateInfo::Up { interior: 0, free: 0, spare: 0, room: 0, give: 0, attached: false, epoch: 2 };
        donor.handle_message(now, 30, Msg::Update { tree: 0, info: leave });
        assert_eq!(donor.children(0).len(), 3);
        // A hub that is not short takes no gift.
        donor.handle_message(now, 5, Msg::Give { tree: 0, leaf: 40 });
        donor.handle_message(now, 5, Msg::Give { tree: 0, leaf: 41 });
        assert_eq!(refusals(&mut donor), [(5, Refusal::Full)]);
    }
}
