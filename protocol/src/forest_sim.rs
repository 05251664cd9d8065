//! The stripe forest ([`crate::forest`]) over a simulated network: what
//! `hubcast-sim forest` runs. Deterministic for a seed.
//!
//! The run: `hubs` hubs join one after another (every `join_every`), each
//! given its proper tree by a tracker (the tree with the fewest interior hubs)
//! and a random hub to contact. Then, over `churn_secs`, `churn × hubs` hubs
//! fail at random moments and as many new hubs join. A failure is noticed by
//! the failed hub's parents and children `detect` later (missed heartbeats).
//! Messages take `latency` plus up to `jitter`; those sent to a failed hub
//! are lost. After the churn the forest settles for `settle_secs`, and then
//! its shape is checked.
//!
//! Hubs' messages may be lost (`loss`). In the hub they travel over QUIC, so
//! one is lost only with its connection; what repairs the forest then is the
//! stripe stream, the hub's heartbeat: a child whose parent no longer lists
//! it is refused the stripe and takes it as its parent lost, and a parent
//! whose listed child subscribed elsewhere sees its stream close and takes it
//! as that child lost. The run models both: a mismatch seen at two samples
//! in a row (one to two seconds) is acted on.
//!
//! Safety invariants (no loop, no hub over its capacity, children only in a
//! hub's proper tree unless it is the special node) are checked at every
//! sample, mid-churn included; that every hub is attached, once the forest
//! has settled.
//!
//! Every message carries the cause it descends from (a join or a failure), so
//! the messages a failure cost are counted exactly. Once a second the run
//! counts the hubs that get fewer than f − 1 stripes (one or more ancestors
//! dead or a parent missing in two trees): the stall seconds.

use crate::forest::{ForestConfig, ForestNode, Msg, Tree};
use crate::sim::{Link, Network};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::time::{Duration, Instant};

#[derive(Clone, Debug)]
pub struct ForestSimConfig {
    pub hubs: usize,
    pub stripes: u8,
    /// Share of `hubs` that fail during the churn (as many join).
    pub churn: f64,
    pub seed: u64,
    pub join_every: Duration,
    pub churn_secs: u64,
    pub settle_secs: u64,
    /// From a failure to its parents and children noticing it.
    pub detect: Duration,
    pub latency: Duration,
    pub jitter: Duration,
    /// Share of the hubs' messages lost on the way, through the build and
    /// the churn (failure notices, which stand for missed heartbeats, are
    /// not; the settle is on clean links).
    pub loss: f64,
}

impl ForestSimConfig {
    pub fn new(hubs: usize, stripes: u8, churn: f64, seed: u64) -> Self {
        ForestSimConfig {
            hubs,
            stripes,
            churn,
            seed,
            join_every: Duration::from_millis(2),
            churn_secs: 600,
            settle_secs: 30,
            detect: Duration::from_secs(1),
            latency: Duration::from_millis(20),
            jitter: Duration::from_millis(30),
            loss: 0.0,
        }
    }
}

/// What a run measured.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ForestSimReport {
    /// Hubs alive at the end.
    pub hubs: usize,
    pub stripes: u8,
    /// The deepest hub of any tree (the root's children are at depth 1).
    pub max_height: u32,
    /// Broken invariants at the end: a hub without a parent that lists it in
    /// some tree, a loop, children beyond capacity, or children in a second
    /// tree outside the special node.
    pub invariant_violations: u64,
    /// Largest |stripes sent − stripes received| of a hub.
    pub upload_download_max_gap_stripes: u32,
    /// Hubs whose gap is more than one stripe.
    pub hubs_gap_over_one: u64,
    pub failures: u64,
    pub joins: u64,
    pub messages_per_failure_p50: u64,
    pub messages_per_failure_p99: u64,
    pub messages_per_join_p50: u64,
    /// Hub-seconds with fewer than f − 1 stripes, sampled once a second.
    pub stall_seconds_total: u64,
    /// The longest a hub stayed stalled, in consecutive samples: stalls
    /// should last only while a parent is replaced.
    pub longest_stall_seconds: u64,
    /// Hub-seconds with fewer than f stripes (one missing: decodable).
    pub degraded_seconds_total: u64,
    /// Nodes interior in a second tree at the end.
    pub special_nodes: u64,
    pub messages_total: u64,
    /// Messages lost on the way (`loss`).
    pub messages_lost: u64,
    /// Samples taken, and safety invariants found broken at them (a loop, a
    /// hub over capacity, children in a leaf tree): 0 however lossy.
    pub samples: u64,
    pub safety_violations: u64,
    /// The most samples in a row a hub sat in a loop (lost messages can
    /// close one; the stripe watchdog breaks it): 0 on clean links.
    pub longest_loop_seconds: u64,
    /// Parent and child views that disagreed at two samples in a row, acted
    /// on as the stripe stream would (a lost message's trace).
    pub stripe_mismatches: u64,
    /// Times a hub attached in a tree got none of its data for
    /// STARVED_SECS and searched again from the root.
    pub starved: u64,
}

#[derive(Clone)]
enum Ev {
    Msg { from: u32, msg: Msg<u32>, cause: u32 },
    Join,
    Fail,
    ParentLost { tree: Tree, dead: u32, cause: u32 },
    ChildLost { tree: Tree, dead: u32, cause: u32 },
    Timer,
    Sample,
}

/// Causes: joins are numbered from 0, failures from FAILURE_CAUSE.
const FAILURE_CAUSE: u32 = 1 << 31;
/// Seconds an attached hub goes without a stripe's data before it leaves
/// its parent and searches from the root (`ForestNode::handle_starved`):
/// above the longest repair that notices tell (the stall bound, 5 s).
const STARVED_SECS: u64 = 10;
/// The cause of what a stripe-stream mismatch sets off (counted in the total only).
const STRIPE_CAUSE: u32 = FAILURE_CAUSE - 1;
const NO_PARENT: u32 = u32::MAX;
/// The event queue's address for events that belong to no node.
const SIM: usize = usize::MAX;

struct Sim {
    cfg: ForestSimConfig,
    fc: ForestConfig,
    net: Network<Ev>,
    rng: ChaCha8Rng,
    t0: Instant,
    nodes: Vec<ForestNode<u32>>,
    alive: Vec<bool>,
    alive_list: Vec<u32>,
    /// Claims: for each node, the (tree, child) pairs naming it as parent.
    claims: Vec<Vec<(Tree, u32)>>,
    /// Per tree, each node's parent (NO_PARENT: none): the nodes' own view,
    /// kept in step by `at`, compact for the depth walks.
    parents: Vec<Vec<u32>>,
    /// Interior hubs per tree (alive), for the tracker's choice.
    interior: Vec<u64>,
    /// Messages sent per cause.
    join_msgs: Vec<u64>,
    failure_msgs: Vec<u64>,
    /// The failure that orphaned a node last, for its retries.
    orphan_cause: Vec<u32>,
    timer_set: Vec<bool>,
    /// Per node, the samples in a row it has been stalled.
    stalled_for: Vec<u64>,
    /// Parent/child disagreements seen at the last sample: (tree, child,
    /// parent, the child's side) — the child claims a parent that does not
    /// list it, or (false) a parent lists a child that claims another.
    mismatches: std::collections::HashSet<(Tree, u32, u32, bool)>,
    /// Per tree, per node: samples in a row it was attached and yet cut off
    /// from the root (no stripe data reaches it).
    starved_for: Vec<Vec<u16>>,
    /// Per tree, per node: samples in a row it sat in a loop.
    looped_for: Vec<Vec<u16>>,
    /// Messages are lost until the churn ends; the settle is on clean links,
    /// so the shape checked at the end shows the forest recovered.
    loss_until: Duration,
    link: Link,
    report: ForestSimReport,
}

impl Sim {
    fn now(&self) -> Instant {
        self.t0 + self.net.now()
    }

    fn spawn(&mut self) -> u32 {
        let id = self.nodes.len() as u32;
        let proper = (0..self.fc.stripes).min_by_key(|t| (self.interior[*t as usize], *t)).unwrap_or(0);
        self.interior[proper as usize] += 1;
        self.nodes.push(ForestNode::new(id, 0, proper, self.fc));
        self.alive.push(true);
        self.alive_list.push(id);
        self.claims.push(Vec::new());
        for p in &mut self.parents {
            p.push(NO_PARENT);
        }
        self.orphan_cause.push(id);
        for s in self.starved_for.iter_mut().chain(&mut self.looped_for) {
            s.push(0);
        }
        self.timer_set.push(false);
        self.stalled_for.push(0);
        self.join_msgs.push(0);
        id
    }

    fn join(&mut self) {
        let id = self.spawn();
        let contact = if self.alive_list.len() > 2 {
            loop {
                let c = self.alive_list[self.rng.gen_range(1..self.alive_list.len())];
                if c != id {
                    break c;
                }
            }
        } else {
            0
        };
        let now = self.now();
        self.nodes[id as usize].join(now, contact);
        self.report.joins += 1;
        self.flush(id, id);
        self.arm_timer(id);
    }

    fn fail(&mut self) {
        if self.alive_list.len() <= 2 {
            return;
        }
        let at = self.rng.gen_range(1..self.alive_list.len());
        let dead = self.alive_list[at];
        self.alive[dead as usize] = false;
        self.alive_list.swap_remove(at);
        self.interior[self.nodes[dead as usize].proper() as usize] -= 1;
        let cause = FAILURE_CAUSE + self.failure_msgs.len() as u32;
        self.failure_msgs.push(0);
        self.report.failures += 1;
        let detect = self.cfg.detect;
        for (tree, child) in self.claims[dead as usize].clone() {
            self.net.unicast(
                child as usize,
                Ev::ParentLost { tree, dead, cause },
                Link { latency: detect, ..self.link },
            );
        }
        for tree in 0..self.fc.stripes {
            if let Some(p) = self.nodes[dead as usize].parent(tree) {
                self.net.unicast(
                    p as usize,
                    Ev::ChildLost { tree, dead, cause },
                    Link { latency: detect, ..self.link },
                );
            }
        }
    }

    /// Send what node `id` has queued, each message under `cause`, and keep
    /// the claims index in step with its parents.
    fn flush(&mut self, id: u32, cause: u32) {
        while let Some((to, msg)) = self.nodes[id as usize].poll_transmit() {
            self.count(cause);
            let lossy = self.cfg.loss > 0.0 && self.net.now() < self.loss_until;
            if lossy && self.rng.gen_bool(self.cfg.loss.min(1.0)) {
                self.report.messages_lost += 1;
                continue;
            }
            if (to as usize) < self.nodes.len() && self.alive[to as usize] {
                self.net.unicast(to as usize, Ev::Msg { from: id, msg, cause }, self.link);
            }
        }
    }

    fn count(&mut self, cause: u32) {
        self.report.messages_total += 1;
        if cause >= FAILURE_CAUSE {
            self.failure_msgs[(cause - FAILURE_CAUSE) as usize] += 1;
        } else if let Some(n) = self.join_msgs.get_mut(cause as usize) {
            *n += 1;
        }
    }

    /// Run `f` at node `id`, then send its messages and update the claims.
    fn at(&mut self, id: u32, cause: u32, f: impl FnOnce(&mut ForestNode<u32>, Instant)) {
        if !self.alive[id as usize] {
            return;
        }
        let before: Vec<Option<u32>> =
            (0..self.fc.stripes).map(|t| self.nodes[id as usize].parent(t)).collect();
        let now = self.now();
        f(&mut self.nodes[id as usize], now);
        for t in 0..self.fc.stripes {
            let after = self.nodes[id as usize].parent(t);
            if after != before[t as usize] {
                self.parents[t as usize][id as usize] = after.unwrap_or(NO_PARENT);
                if let Some(old) = before[t as usize] {
                    self.claims[old as usize].retain(|c| *c != (t, id));
                }
                if let Some(new) = after {
                    self.claims[new as usize].push((t, id));
                    if !self.alive[new as usize] {
                        // Placed by a message the parent sent just before it
                        // failed: its heartbeats never come.
                        let (tree, dead, link) = (t, new, Link { latency: self.cfg.detect, ..self.link });
                        self.net.unicast(id as usize, Ev::ParentLost { tree, dead, cause }, link);
                    }
                }
                if after.is_none() {
                    self.orphan_cause[id as usize] = cause;
                }
            }
        }
        if self.nodes[id as usize].wants_timeout() {
            self.arm_timer(id);
        }
        self.flush(id, cause);
    }

    fn arm_timer(&mut self, id: u32) {
        if !self.timer_set[id as usize] {
            self.timer_set[id as usize] = true;
            let link = Link { latency: crate::forest::ORPHAN_RETRY, ..Link::PERFECT };
            self.net.unicast(id as usize, Ev::Timer, link);
        }
    }

    fn on_timer(&mut self, id: u32) {
        self.timer_set[id as usize] = false;
        if !self.alive[id as usize] {
            return;
        }
        let cause = self.orphan_cause[id as usize];
        self.at(id, cause, |n, now| n.handle_timeout(now));
    }

    /// For each tree, each node's depth if it reaches the root by parents
    /// that are alive, else `None`.
    fn depths(&self, t: Tree) -> Vec<Option<u32>> {
        const UNKNOWN: u32 = u32::MAX;
        const NONE: u32 = u32::MAX - 1;
        let n = self.nodes.len();
        let mut depth = vec![UNKNOWN; n];
        depth[0] = 0;
        let mut path = Vec::new();
        for start in 0..n {
            if depth[start] != UNKNOWN || !self.alive[start] {
                continue;
            }
            let mut at = start;
            let found = loop {
                if depth[at] != UNKNOWN {
                    break depth[at];
                }
                if path.len() > n {
                    break NONE; // a loop
                }
                path.push(at);
                match self.parents[t as usize][at] {
                    p if p != NO_PARENT && self.alive[p as usize] => at = p as usize,
                    _ => break NONE,
                }
            };
            for (i, node) in path.drain(..).rev().enumerate() {
                depth[node] = if found == NONE { NONE } else { found + 1 + i as u32 };
            }
        }
        depth.into_iter().map(|d| (d < NONE).then_some(d)).collect()
    }

    fn sample(&mut self) {
        let mut connected = vec![0u8; self.nodes.len()];
        let mut starved = Vec::new();
        for t in 0..self.fc.stripes {
            for (i, d) in self.depths(t).into_iter().enumerate() {
                connected[i] += u8::from(d.is_some());
                // Attached, and no data: the hub's stripe watchdog.
                let n = &mut self.starved_for[t as usize][i];
                if d.is_none() && self.alive[i] && self.nodes[i].parent(t).is_some() {
                    *n += 1;
                    if u64::from(*n) >= STARVED_SECS {
                        *n = 0;
                        starved.push((t, i as u32));
                    }
                } else {
                    *n = 0;
                }
            }
        }
        for (t, id) in starved {
            self.report.starved += 1;
            self.at(id, STRIPE_CAUSE, |n, now| n.handle_starved(now, t));
        }
        let f = self.fc.stripes;
        for &id in &self.alive_list[1..] {
            let c = connected[id as usize];
            let streak = &mut self.stalled_for[id as usize];
            if c + 1 < f {
                self.report.stall_seconds_total += 1;
                *streak += 1;
                self.report.longest_stall_seconds = self.report.longest_stall_seconds.max(*streak);
            } else {
                *streak = 0;
                if c < f {
                    self.report.degraded_seconds_total += 1;
                }
            }
        }
    }

    /// The invariants that hold at every moment, whatever is in flight: no
    /// loop in any tree, no hub over its capacity, children only in a hub's
    /// proper tree (or as the special node).
    fn check_safety(&mut self) {
        self.report.samples += 1;
        let mut broken = 0u64;
        for t in 0..self.fc.stripes {
            let depths = self.depths(t);
            for i in 0..self.alive_list.len() {
                let id = self.alive_list[i];
                // A loop: parents that are alive, never reaching the root.
                let in_loop = id != 0 && depths[id as usize].is_none() && self.in_loop(t, id);
                let looped = &mut self.looped_for[t as usize][id as usize];
                if in_loop {
                    broken += 1;
                    *looped += 1;
                    self.report.longest_loop_seconds =
                        self.report.longest_loop_seconds.max(u64::from(*looped));
                    dump(format_args!("sample: t{t} {id} is in a loop"));
                } else {
                    *looped = 0;
                }
                let node = &self.nodes[id as usize];
                let kids = node.children(t).len();
                let cap = if id == 0 { self.fc.root_fanout } else { self.fc.max_children() };
                let own = id == 0 || t == node.proper() || node.is_special(t);
                if kids > cap as usize || (kids > 0 && !own) {
                    broken += 1;
                    dump(format_args!("sample: t{t} {id}: {kids} children, own tree {own}"));
                }
            }
        }
        self.report.safety_violations += broken;
    }

    /// Whether following `id`'s live parents in `t` comes back to a hub
    /// already passed.
    fn in_loop(&self, t: Tree, id: u32) -> bool {
        let mut seen = std::collections::HashSet::new();
        let mut at = id;
        while seen.insert(at) {
            match self.parents[t as usize][at as usize] {
                p if p != NO_PARENT && self.alive[p as usize] => at = p,
                _ => return false,
            }
        }
        true
    }

    /// What the stripe streams do: a child that claims a parent that does not
    /// list it is refused the stripe (its parent is lost to it); a parent
    /// that lists a child subscribed elsewhere, or dead, sees that stream close (the
    /// child is lost to it). Acted on when seen at two samples in a row.
    fn stripe_streams(&mut self) {
        let mut now_seen = std::collections::HashSet::new();
        for t in 0..self.fc.stripes {
            for &id in &self.alive_list {
                let node = &self.nodes[id as usize];
                if let Some(p) = node.parent(t).filter(|p| self.alive[*p as usize]) {
                    if !self.nodes[p as usize].children(t).iter().any(|c| c.id == id) {
                        now_seen.insert((t, id, p, true));
                    }
                }
                // (A dead child's failure notice goes to the parent it
                // claimed; a stale parent sees the stream break instead.)
                for c in node.children(t) {
                    if !self.alive[c.id as usize] || self.nodes[c.id as usize].parent(t) != Some(id) {
                        now_seen.insert((t, c.id, id, false));
                    }
                }
            }
        }
        let mut persisted: Vec<_> = now_seen.intersection(&self.mismatches).copied().collect();
        persisted.sort_unstable(); // the run stays deterministic for its seed
        self.mismatches = now_seen;
        for (t, child, parent, child_side) in persisted {
            self.report.stripe_mismatches += 1;
            self.mismatches.remove(&(t, child, parent, child_side));
            if child_side {
                self.at(child, STRIPE_CAUSE, |n, now| n.handle_parent_lost(now, t, parent));
            } else {
                self.at(parent, STRIPE_CAUSE, |n, now| n.handle_child_lost(now, t, child));
            }
        }
    }

    fn check(&mut self) {
        let f = self.fc.stripes;
        let mut violations = 0u64;
        let mut uploads = vec![0u32; self.nodes.len()];
        for t in 0..f {
            let depths = self.depths(t);
            for &id in &self.alive_list {
                let node = &self.nodes[id as usize];
                if id != 0 {
                    match (depths[id as usize], node.parent(t)) {
                        (Some(d), Some(p)) => {
                            self.report.max_height = self.report.max_height.max(d);
                            if !self.nodes[p as usize].children(t).iter().any(|c| c.id == id) {
                                violations += 1; // the parent does not list it
                                dump(format_args!("t{t} {id}: parent {p} does not list it"));
                            }
                        }
                        (d, p) => {
                            violations += 1; // detached, or a loop
                                             // Its parents up to the first repeat, which shows a loop.
                            let mut chain = vec![id];
                            while let Some(up) = self.nodes[chain[chain.len() - 1] as usize].parent(t) {
                                let seen = chain.contains(&up);
                                chain.push(up);
                                if seen || chain.len() > 32 {
                                    break;
                                }
                            }
                            dump(format_args!(
                                "t{t} {id}: detached: depth {d:?} parent {p:?} chain {chain:?}"
                            ));
                        }
                    }
                }
                let kids = node.children(t);
                uploads[id as usize] += kids.len() as u32;
                let cap = if id == 0 { self.fc.root_fanout } else { self.fc.max_children() };
                if kids.len() > cap as usize {
                    violations += 1;
                    dump(format_args!(
                        "t{t} {id}: {} children, proper {}, special {}",
                        kids.len(),
                        node.proper(),
                        node.is_special(t)
                    ));
                }
                let own = id == 0 || t == node.proper();
                if !kids.is_empty() && !own {
                    if node.is_special(t) {
                        self.report.special_nodes += 1;
                    } else {
                        violations += 1;
                        dump(format_args!("t{t} {id}: children in a leaf tree"));
                    }
                }
                for c in kids {
                    if self.nodes[c.id as usize].parent(t) != Some(id) || !self.alive[c.id as usize] {
                        violations += 1; // a child that is not there
                        dump(format_args!(
                            "t{t} {id}: child {} claims {:?}",
                            c.id,
                            self.nodes[c.id as usize].parent(t)
                        ));
                    }
                }
            }
        }
        if std::env::var_os("FOREST_SHAPE").is_some() {
            self.print_shape();
        }
        let mut gaps: Vec<u32> =
            self.alive_list[1..].iter().map(|&id| uploads[id as usize].abs_diff(f as u32)).collect();
        gaps.sort_unstable();
        self.report.upload_download_max_gap_stripes = gaps.last().copied().unwrap_or(0);
        self.report.hubs_gap_over_one = gaps.iter().filter(|g| **g > 1).count() as u64;
        self.report.invariant_violations = violations;
        self.report.hubs = self.alive_list.len() - 1;
    }
}

/// With FOREST_SHAPE set, the forest's shape at the end is printed: hubs by
/// children in their proper tree, and interior and leaf places by depth.
impl Sim {
    fn print_shape(&self) {
        let f = self.fc.stripes;
        let mut kids = [0u32; 8];
        let mut idepth = [0u32; 40];
        let mut ldepth = [0u32; 40];
        for t in 0..f {
            let depths = self.depths(t);
            for &id in &self.alive_list[1..] {
                let node = &self.nodes[id as usize];
                let d = depths[id as usize].unwrap_or(39).min(39) as usize;
                if node.proper() == t {
                    kids[node.children(t).len().min(7)] += 1;
                    idepth[d] += 1;
                } else {
                    ldepth[d] += 1;
                }
            }
        }
        eprintln!("children in proper tree: {kids:?}");
        eprintln!("interior depth: {:?}", &idepth[..25]);
        eprintln!("leaf depth: {:?}", &ldepth[..25]);
    }
}

/// With FOREST_DUMP set, each broken invariant is printed (for debugging).
fn dump(a: std::fmt::Arguments<'_>) {
    if std::env::var_os("FOREST_DUMP").is_some() {
        eprintln!("{a}");
    }
}

fn percentile(v: &mut [u64], p: f64) -> u64 {
    v.sort_unstable();
    v.get(((v.len() as f64 - 1.0) * p).round() as usize).copied().unwrap_or(0)
}

/// Run one simulation.
pub fn run(cfg: &ForestSimConfig) -> ForestSimReport {
    let fc = ForestConfig::new(cfg.stripes);
    let mut sim = Sim {
        cfg: cfg.clone(),
        fc,
        net: Network::new(cfg.seed),
        rng: ChaCha8Rng::seed_from_u64(cfg.seed ^ 0x5EED),
        t0: Instant::now(),
        nodes: vec![ForestNode::new_root(0, fc)],
        alive: vec![true],
        alive_list: vec![0],
        claims: vec![Vec::new()],
        parents: vec![vec![NO_PARENT]; fc.stripes as usize],
        interior: vec![0; fc.stripes as usize],
        join_msgs: vec![0],
        failure_msgs: Vec::new(),
        orphan_cause: vec![0],
        timer_set: vec![false],
        stalled_for: vec![0],
        mismatches: Default::default(),
        starved_for: vec![vec![0]; fc.stripes as usize],
        looped_for: vec![vec![0]; fc.stripes as usize],
        loss_until: Duration::ZERO,
        link: Link { loss: 0.0, latency: cfg.latency, jitter: cfg.jitter },
        report: ForestSimReport { stripes: fc.stripes, ..Default::default() },
    };
    let at = |d: Duration| Link { latency: d, ..Link::PERFECT };
    // The build: one join every `join_every`.
    for i in 0..cfg.hubs {
        sim.net.unicast(SIM, Ev::Join, at(cfg.join_every * i as u32));
    }
    let build = cfg.join_every * cfg.hubs as u32 + Duration::from_secs(5);
    // The churn: failures and joins at random moments.
    let events = (cfg.churn * cfg.hubs as f64).round() as u64;
    let mut times: Vec<(Duration, bool)> = (0..events)
        .flat_map(|_| [false, true])
        .map(|join| {
            (build + Duration::from_secs_f64(sim.rng.gen_range(0.0..cfg.churn_secs.max(1) as f64)), join)
        })
        .collect();
    times.shuffle(&mut sim.rng);
    for (when, join) in times {
        sim.net.unicast(SIM, if join { Ev::Join } else { Ev::Fail }, at(when));
    }
    sim.loss_until = build + Duration::from_secs(cfg.churn_secs);
    let end = build + Duration::from_secs(cfg.churn_secs + cfg.settle_secs);
    let mut s = build;
    while s < end {
        sim.net.unicast(SIM, Ev::Sample, at(s));
        s += Duration::from_secs(1);
    }
    // FOREST_TRACE=ID prints every message to or from hub ID (for debugging).
    let trace: Option<u32> = std::env::var("FOREST_TRACE").ok().and_then(|v| v.parse().ok());
    while let Some(d) = sim.net.poll_delivery() {
        if d.at > end {
            break;
        }
        let to = d.to as u32;
        match d.msg {
            Ev::Join => sim.join(),
            Ev::Fail => sim.fail(),
            Ev::Sample => {
                sim.sample();
                sim.check_safety();
                sim.stripe_streams();
            }
            Ev::Timer => sim.on_timer(to),
            Ev::Msg { from, msg, cause } => {
                if trace == Some(to) || trace == Some(from) {
                    eprintln!("{:?} {from} -> {to}: {msg:?}", d.at);
                }
                sim.at(to, cause, |n, now| n.handle_message(now, from, msg))
            }
            Ev::ParentLost { tree, dead, cause } => {
                sim.at(to, cause, |n, now| n.handle_parent_lost(now, tree, dead))
            }
            Ev::ChildLost { tree, dead, cause } => {
                sim.at(to, cause, |n, now| n.handle_child_lost(now, tree, dead))
            }
        }
    }
    sim.check();
    let mut per_failure = sim.failure_msgs.clone();
    let mut per_join: Vec<u64> = sim.join_msgs[1..].to_vec();
    sim.report.messages_per_failure_p50 = percentile(&mut per_failure, 0.5);
    sim.report.messages_per_failure_p99 = percentile(&mut per_failure, 0.99);
    sim.report.messages_per_join_p50 = percentile(&mut per_join, 0.5);
    sim.report
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small(hubs: usize, stripes: u8, churn: f64, seed: u64) -> ForestSimReport {
        let mut cfg = ForestSimConfig::new(hubs, stripes, churn, seed);
        cfg.churn_secs = 60;
        run(&cfg)
    }

    #[test]
    fn a_forest_without_churn_is_balanced_and_every_hub_gives_what_it_takes() {
        let r = small(500, 4, 0.0, 1);
        assert_eq!(r.invariant_violations, 0, "{r:?}");
        assert_eq!(r.hubs, 500);
        let bound = 2.0 * (500f64).ln() / 4f64.ln() + 2.0;
        assert!(f64::from(r.max_height) <= bound, "{r:?}");
        assert_eq!(r.stall_seconds_total, 0);
        assert_eq!(r.special_nodes, 0);
        // Every hub sends within one stripe of what it receives: the last
        // interior hubs placed asked for leaves (Want) and got them.
        assert_eq!(r.upload_download_max_gap_stripes, 1, "{r:?}");
    }

    #[test]
    fn churn_keeps_the_invariants_and_a_failure_costs_messages_in_proportion_to_height() {
        let r = small(1000, 4, 0.3, 2);
        assert_eq!(r.invariant_violations, 0, "{r:?}");
        assert_eq!(r.failures, 300);
        assert!(r.upload_download_max_gap_stripes <= 1, "{r:?}");
        let per_tree = u64::from(r.max_height) + 4 + 1;
        assert!(r.messages_per_failure_p99 <= 5 * 4 * per_tree, "{r:?}");
    }

    #[test]
    fn the_same_seed_gives_the_same_run() {
        assert_eq!(small(200, 3, 0.2, 9), small(200, 3, 0.2, 9));
        assert_ne!(small(200, 3, 0.2, 9), small(200, 3, 0.2, 10));
    }
}
