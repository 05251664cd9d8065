//! The forest node's operations: placing joiners, taking on and handing down
//! children, replacing failed hubs, giving leaves, and the updates that keep
//! the counts.

use super::*;

impl<P: Copy + Eq + Ord + std::fmt::Debug> ForestNode<P> {
    /// At the root: the proper tree for a joiner, the one with the fewest
    /// interior hubs. The count is what the tree's updates report (so
    /// failed hubs leave it), plus the joiners sent there and not yet seen.
    pub(super) fn assign_tree(&mut self) -> Tree {
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
    pub(super) fn child_update(&mut self, t: Tree, from: P, counts: Counts, attached: bool, epoch: u32) {
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
    pub(super) fn attach(&mut self, t: Tree, from: P, parent: P, grandparent: Option<P>) -> bool {
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

    pub(super) fn search(&mut self, t: Tree, joiner: P, interior: bool, down: bool) {
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
    pub(super) fn bounce(&mut self, t: Tree, joiner: P, interior: bool) {
        let v = &mut self.trees[t as usize];
        v.reported = None;
        let next = v.parent.unwrap_or(self.root);
        self.report_up(t);
        self.send(next, Msg::Search { tree: t, joiner, interior, down: false });
    }

    /// Send a search down to child `c`, counting the place it will take there
    /// at once: searches that follow before `c`'s next update go elsewhere.
    pub(super) fn pass_down(&mut self, t: Tree, c: P, joiner: P, interior: bool) {
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
    pub(super) fn take_on_asked(&mut self, t: Tree, from: P, child: P, interior: bool, dead: Option<P>) {
        let v = &self.trees[t as usize];
        match dead {
            Some(dead) if v.parent != Some(dead) && v.lost != Some(dead) => {
                self.refuse(child, t, Refusal::NotHeir)
            }
            None if v.parent != Some(from) => self.refuse(from, t, Refusal::NotYourParent),
            _ => self.take_on(t, child, interior),
        }
    }

    pub(super) fn take_on(&mut self, t: Tree, child: P, interior: bool) {
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
    pub(super) fn shed(&mut self, t: Tree) {
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

    pub(super) fn adopt(&mut self, t: Tree, id: P, interior: bool) {
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

    pub(super) fn substitute(&mut self, t: Tree, at: usize, joiner: P) {
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
    pub(super) fn replace(&mut self, t: Tree, from: P, dead: P, interior: bool) {
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
    pub(super) fn changed(&mut self, t: Tree) {
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
    pub(super) fn givable(&self, t: Tree) -> u32 {
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
    pub(super) fn needy(&self, t: Tree) -> bool {
        let v = &self.trees[t as usize];
        !self.is_root
            && t == self.proper
            && v.parent.is_some()
            && v.children.len() + 2 <= self.cfg.fanout as usize
    }

    /// A `Want` for `needy`, from `from`: give it a leaf from here, or pass
    /// the want to the subtree with the most leaves to spare, or up.
    pub(super) fn want(&mut self, t: Tree, from: P, needy: P, down: bool) {
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
    pub(super) fn given(&mut self, t: Tree, from: P, leaf: P) {
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

    pub(super) fn announce_down(&mut self, t: Tree, always: bool) {
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

    pub(super) fn report_up(&mut self, t: Tree) {
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
