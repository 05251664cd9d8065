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

/// A stripe that brought nothing for this long, while another brought data
/// within [`FLOWING`], is starved: the tree above is broken in a way no notice
/// told (lost messages can close a loop; issue 20's simulation). The hub
/// leaves that parent and searches from the root
/// ([`ForestNode::handle_starved`]). Above the 5 s the longest notice-driven
/// repair takes.
pub const STARVED: Duration = Duration::from_secs(10);
pub const FLOWING: Duration = Duration::from_secs(2);

/// The trees whose stripe is starved at `now`: `heard[t]` is when stripe t
/// last brought data (or was subscribed), `None` with no parent there.
pub fn starved(heard: &[Option<Duration>], now: Duration) -> Vec<Tree> {
    let flowing = heard.iter().flatten().any(|h| now.saturating_sub(*h) < FLOWING);
    if !flowing {
        return Vec::new(); // the channel is quiet, not this stripe
    }
    (0..heard.len() as Tree)
        .filter(|t| heard[*t as usize].is_some_and(|h| now.saturating_sub(h) >= STARVED))
        .collect()
}

mod node;
mod ops;
#[cfg(test)]
mod tests;
