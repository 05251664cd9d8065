//! The forest node's face: construction, what it holds, and the events it
//! handles (joins, messages, lost parents and children, starvation, timeouts).

use super::*;

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

    pub(super) fn send(&mut self, to: P, msg: Msg<P>) {
        self.stats.sent += 1;
        self.out.push_back((to, msg));
    }

    pub(super) fn refuse(&mut self, to: P, tree: Tree, why: Refusal) {
        self.stats.refusals_sent += 1;
        self.send(to, Msg::Refuse { tree, why });
    }

    /// Children this node may have in `t`.
    pub(super) fn cap(&self, t: Tree) -> usize {
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
    pub(super) fn soft_cap(&self, t: Tree) -> usize {
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

    /// Nothing of stripe `t` has come from the parent for long, though this
    /// hub is attached: the tree above is broken in a way no notice told (a
    /// loop that lost messages closed, say). The hub leaves that parent,
    /// keeping its own children, and searches a place from the root.
    pub fn handle_starved(&mut self, now: Instant, t: Tree) {
        self.now = Some(now);
        if self.is_root {
            return;
        }
        let Some(v) = self.trees.get_mut(t as usize) else { return };
        let Some(parent) = v.parent.take() else { return };
        v.epoch += 1;
        let epoch = v.epoch;
        v.grandparent = None;
        v.lost = Some(parent);
        v.orphaned_since = Some(now);
        self.stats.retries += 1;
        let info =
            UpdateInfo::Up { interior: 0, free: 0, spare: 0, room: 0, give: 0, attached: false, epoch };
        self.send(parent, Msg::Update { tree: t, info });
        let interior = t == self.proper;
        self.send(self.root, Msg::Search { tree: t, joiner: self.me, interior, down: true });
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
    pub(super) fn note_left(v: &mut TreeView<P>, id: P, epoch: u32) {
        // One entry per hub: its latest leave.
        v.left.retain(|(x, _)| *x != id);
        v.left.push_back((id, epoch));
        if v.left.len() > DEPARTED_KEPT {
            v.left.pop_front();
        }
    }

    pub(super) fn note_departed(v: &mut TreeView<P>, dead: P, heir: Option<P>) {
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
}
