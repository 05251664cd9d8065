//! The hub machine's desert side: which bridge feeds a hub that hears no
//! multicast. `--bridge-peer` bridges first, then the ones the tracker
//! lists, one subscription at a time. A bridge that refused is asked again
//! after [`RETRY_REFUSED_AFTER`]; one that could not be reached, or whose
//! feed ended, after [`RETRY_BRIDGE_AFTER`]; one whose datagrams struck out
//! ([`STRIKES_TO_BAN`](crate::peers::STRIKES_TO_BAN) in the peer table's
//! one ledger) never again. [`RECHECK_AFTER`] into a feed from a bridge the
//! tracker listed, and every [`RECHECK_EVERY`] after, the hub asks the
//! tracker once more, naming that bridge: when it lists another first (a
//! less loaded one, registered since), the hub moves there, at most once in
//! [`MOVE_REST`].
//!
//! The driver carries out [`Output::AskBridges`], [`Output::Subscribe`] and
//! [`Output::Unsubscribe`] one at a time, and says how each ended:
//! [`Input::Bridges`], [`Input::Feeding`] or [`Input::NotSubscribed`], and
//! [`Input::FeedEnded`] when a feed ends (an unsubscribe's too).

use super::*;

/// A bridge that could not be reached, or whose feed ended, is asked again
/// after this long; one that refused (busy, or not serving yet) sooner.
pub const RETRY_BRIDGE_AFTER: Duration = Duration::from_secs(10);
pub const RETRY_REFUSED_AFTER: Duration = Duration::from_secs(2);
/// With no bridge to ask, the hub looks again this often.
pub const LOOK_AGAIN_AFTER: Duration = Duration::from_secs(1);
/// Bridges asked of the tracker at once.
pub const BRIDGES_ASKED: u8 = 8;
/// A hub fed by a bridge the tracker listed asks again this long after.
/// Bridges register a moment apart (each after a manifest named the tracker,
/// through a handshake that may wait out a loss): desert hubs that started
/// together all found the first one in two of three lab runs at 20% loss.
pub const RECHECK_AFTER: Duration = Duration::from_secs(3);
/// Then again this often while fed: a recheck that failed (a handshake lost
/// at 50% loss) or came before the other bridges registered left three of
/// four desert hubs on one of two bridges for a whole 256 MiB run, each at a
/// third of its upload (197-210 s, the idle bridge's upload unused).
pub const RECHECK_EVERY: Duration = Duration::from_secs(10);
/// After a move, the feed is not rechecked within this long: loads change as
/// hubs move, and in the lab at 50% loss hubs went back and forth between
/// two bridges, each move a new handshake and a resumed feed.
pub const MOVE_REST: Duration = Duration::from_secs(30);
/// A fed hub leaves the feed once the multicast has been back this long
/// without a gap of `desert_after` (or at once, when the carousel is heard:
/// `BUSY_MULTICAST`). Behind a relay at 50% loss the multicast (between
/// rounds: manifests and resends) came and went, and hubs left and took the
/// feed a dozen times.
pub const STEADY_MULTICAST: Duration = Duration::from_secs(15);
/// Bridges left for good (struck out) that a hub remembers.
pub const MAX_BANNED_BRIDGES: usize = 64;

/// Where the search for a feed stands.
#[derive(Clone, Debug, PartialEq, Eq)]
enum State {
    /// No search under way; the next may start at this time.
    Idle {
        next: Instant,
    },
    /// The tracker was asked for bridges.
    Asking,
    /// Subscribing to the first of these; the others come next.
    Trying(VecDeque<NodeAddr>),
    Fed(NodeAddr),
    /// Told to leave this bridge's feed; its end has not come back yet.
    /// Then to subscribe to the first of these that may be asked (a move to
    /// a less loaded bridge), or, when none, to search as usual.
    Leaving(NodeAddr, Vec<NodeAddr>),
}

/// Whether a fed hub asks the tracker again about its bridge.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Recheck {
    /// Not for this feed (a `--bridge-peer` bridge), or done.
    No,
    At(Instant),
    /// Asked; the answer is awaited.
    Asked,
}

/// The search for a bridge's feed, owned by [`Hub`].
#[derive(Debug)]
pub(super) struct Desert {
    /// `--bridge-peer`: asked first, in order.
    fixed: Vec<NodeAddr>,
    state: State,
    /// Bridges not to ask again until then.
    resting: HashMap<NodeId, Instant>,
    /// Bridges left for good, oldest first.
    banned: VecDeque<NodeId>,
    /// Since when a feed has been wanted and none found.
    searching_since: Option<Instant>,
    /// Whether and when to ask the tracker again whether the feeding bridge
    /// is the least loaded.
    recheck: Recheck,
    /// When the hub last moved to a less loaded bridge.
    moved_at: Option<Instant>,
}

impl Desert {
    pub(super) fn new(now: Instant, fixed: Vec<NodeAddr>) -> Self {
        Desert {
            fixed,
            state: State::Idle { next: now },
            resting: HashMap::new(),
            banned: VecDeque::new(),
            searching_since: None,
            recheck: Recheck::No,
            moved_at: None,
        }
    }

    fn rest(&mut self, bridge: NodeId, until: Instant) {
        self.resting.insert(bridge, until);
    }

    pub(super) fn is_banned(&self, bridge: &NodeId) -> bool {
        self.banned.contains(bridge)
    }
}

impl Hub {
    /// Start, go on with or end the search for a feed, as the hub wants one
    /// or not. Runs at every timer and after every desert input.
    pub(super) fn drive_desert(&mut self, now: Instant) {
        let want = self.wants_feed(now);
        let tracker = self.tracker;
        let Some(d) = self.desert.as_mut() else { return };
        if !want {
            d.searching_since = None;
        } else if !matches!(d.state, State::Fed(_)) {
            d.searching_since.get_or_insert(now);
        }
        match d.state.clone() {
            State::Fed(b) if !want || d.is_banned(&b.id) => {
                d.state = State::Leaving(b, Vec::new());
                self.out.push_back(Output::Unsubscribe(b.id));
            }
            State::Fed(b) if matches!(d.recheck, Recheck::At(t) if now >= t) => {
                d.recheck = Recheck::No;
                if let Some(tracker) = tracker {
                    d.recheck = Recheck::Asked;
                    self.out.push_back(Output::AskBridges {
                        tracker,
                        limit: BRIDGES_ASKED,
                        leaving: Some(b.id),
                    });
                }
            }
            State::Idle { next } if want && now >= next => match tracker {
                Some(tracker) => {
                    d.state = State::Asking;
                    self.out.push_back(Output::AskBridges { tracker, limit: BRIDGES_ASKED, leaving: None });
                }
                None => self.try_bridges(now, &[]),
            },
            _ => {}
        }
    }

    /// The tracker listed these bridges (none, when asking failed): ask
    /// `--bridge-peer` ones first, then these, leaving out the resting and
    /// the banned.
    pub(super) fn try_bridges(&mut self, now: Instant, listed: &[NodeAddr]) {
        let me = self.config.node_id;
        let Some(d) = self.desert.as_mut() else { return };
        if let State::Fed(b) = d.state {
            // The answer to a recheck: move when another is listed first,
            // else ask again later.
            if d.recheck != Recheck::Asked {
                return;
            }
            if listed.iter().any(|l| l.id == b.id) && listed.first().is_some_and(|l| l.id != b.id) {
                d.recheck = Recheck::No;
                d.state = State::Leaving(b, listed.to_vec());
                d.moved_at = Some(now);
                self.out.push_back(Output::Unsubscribe(b.id));
                self.event(HubEvent::BridgeMove { from: b.id, to: listed[0].id });
            } else {
                d.recheck = Recheck::At(now + RECHECK_EVERY);
            }
            return;
        }
        if !matches!(d.state, State::Asking | State::Idle { .. }) {
            return;
        }
        d.resting.retain(|_, until| *until > now);
        let mut candidates: VecDeque<NodeAddr> = VecDeque::new();
        for b in d.fixed.iter().chain(listed) {
            if b.id != me
                && !d.banned.contains(&b.id)
                && !d.resting.contains_key(&b.id)
                && !candidates.iter().any(|c| c.id == b.id)
            {
                candidates.push_back(*b);
            }
        }
        match candidates.front().copied() {
            Some(bridge) => {
                d.state = State::Trying(candidates);
                let resume = self.position;
                self.out.push_back(Output::Subscribe { bridge, resume });
            }
            None => {
                d.state = State::Idle { next: now + LOOK_AGAIN_AFTER };
                let searching = now.saturating_duration_since(d.searching_since.unwrap_or(now));
                self.event(HubEvent::NoBridge { searching });
            }
        }
    }

    /// A subscription to `bridge` failed (`refused`: the bridge said no):
    /// the next candidate, or a new search.
    pub(super) fn on_not_subscribed(&mut self, now: Instant, bridge: NodeId, refused: bool) {
        let (want, resume) = (self.wants_feed(now), self.position);
        let Some(d) = self.desert.as_mut() else { return };
        let after = if refused { RETRY_REFUSED_AFTER } else { RETRY_BRIDGE_AFTER };
        d.rest(bridge, now + after);
        let State::Trying(ref mut queue) = d.state else { return };
        if queue.front().is_some_and(|b| b.id == bridge) {
            queue.pop_front();
        }
        match queue.front().copied() {
            Some(next) if want => self.out.push_back(Output::Subscribe { bridge: next, resume }),
            _ => {
                d.state = State::Idle { next: now };
                self.drive_desert(now);
            }
        }
    }

    /// `bridge` feeds this hub from now.
    pub(super) fn on_feeding(&mut self, now: Instant, bridge: NodeAddr) {
        self.feeding = Some(bridge);
        self.fed.feed_heard(now);
        if self.peers.feeding(now, bridge.id, bridge.addr, true) {
            self.event(HubEvent::PeerFound { peer: bridge.id, addr: bridge.addr, via: Via::Bridge });
        }
        if let Some(d) = self.desert.as_mut() {
            d.state = State::Fed(bridge);
            d.searching_since = None;
            let listed = !d.fixed.iter().any(|b| b.id == bridge.id);
            let first = d.moved_at.map_or(now, |t| t + MOVE_REST).max(now) + RECHECK_AFTER;
            d.recheck = if listed { Recheck::At(first) } else { Recheck::No };
            // Not wanted any more meanwhile, or struck out: leave it.
            self.drive_desert(now);
        }
    }

    /// The feed of `bridge` ended: rest it, and search again if a feed is
    /// still wanted.
    pub(super) fn on_feed_ended(&mut self, now: Instant, bridge: NodeId) {
        if self.feeding.is_some_and(|b| b.id == bridge) {
            self.feeding = None;
        }
        if let Some(addr) = self.peers.addr(&bridge) {
            self.peers.feeding(now, bridge, addr, false);
        }
        let want = self.wants_feed(now);
        let Some(d) = self.desert.as_mut() else { return };
        d.rest(bridge, now + RETRY_BRIDGE_AFTER);
        d.recheck = Recheck::No;
        if matches!(&d.state, State::Fed(b) | State::Leaving(b, _) if b.id == bridge) {
            let then = match std::mem::replace(&mut d.state, State::Idle { next: now }) {
                State::Leaving(_, then) => then,
                _ => Vec::new(),
            };
            if want && !then.is_empty() {
                self.try_bridges(now, &then);
            } else {
                self.drive_desert(now);
            }
        }
    }

    /// A bridge's datagrams failed the broadcaster's checks: at
    /// [`peers::STRIKES_TO_BAN`](crate::peers::STRIKES_TO_BAN) strikes the
    /// hub leaves it for good.
    pub(super) fn judge_bridge(&mut self, now: Instant, bridge: NodeId, strike: Strike) {
        let Some(d) = self.desert.as_mut() else { return };
        if strike.strikes < crate::peers::STRIKES_TO_BAN || d.is_banned(&bridge) {
            return;
        }
        if d.banned.len() >= MAX_BANNED_BRIDGES {
            d.banned.pop_front();
        }
        d.banned.push_back(bridge);
        self.event(HubEvent::BridgeLeft { bridge, strikes: strike.strikes });
        self.drive_desert(now);
    }
}
