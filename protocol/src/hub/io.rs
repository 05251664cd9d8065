//! The hub machine's interface: what goes in ([`Input`]), what it asks the
//! driver to do ([`Output`]), and what it tells ([`HubEvent`]).

use super::*;

/// The path by which verified data reached the hub.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Source {
    Multicast,
    Peer,
    Origin,
    Bridge,
}

/// What arrived. Datagrams are checked exactly alike whatever their path;
/// the path decides only who is credited or struck.
#[derive(Debug)]
pub enum Input<'a> {
    /// One datagram from the channel's multicast group.
    Multicast(&'a [u8]),
    /// The origin's multicast repair, heard on the control group.
    Origin(&'a [&'a [u8]]),
    /// The end of [`Output::Fetch`] `id`: the datagrams the peer served, or
    /// why it did not.
    Fetched { id: u64, answer: Result<&'a [&'a [u8]], Outcome> },
    /// Datagrams of a bridge's feed (or of a stripe from a forest parent).
    Bridge { bridge: NodeId, datagrams: &'a [&'a [u8]] },
    /// The tracker's answer to [`Output::AskBridges`]: bridges of the
    /// channel (none when asking failed).
    Bridges(&'a [NodeAddr]),
    /// This bridge feeds this hub from now: the end of [`Output::Subscribe`].
    Feeding(NodeAddr),
    /// [`Output::Subscribe`] to this bridge failed; `refused`: the bridge said no.
    NotSubscribed { bridge: NodeId, refused: bool },
    /// The feed of this bridge ended (an [`Output::Unsubscribe`]'s too).
    FeedEnded(NodeId),
    /// Datagrams of `tree`'s stripe, from this hub's parent there.
    Stripe { tree: Tree, parent: NodeId, datagrams: &'a [&'a [u8]] },
    /// A forest message from `from` (the identity its QUIC handshake proved).
    Forest { from: ForestPeer, msg: Msg<ForestPeer> },
    /// The stripe of `tree` from `parent` ended ([`Output::Stripe`]).
    StripeEnded { tree: Tree, parent: ForestPeer, why: &'a str },
    /// A child's subscription to `tree`'s stripe here ended.
    ChildGone { tree: Tree, child: NodeId },
    /// The tracker's answer to [`Output::AskForestHub`] (`None`: none, or
    /// asking failed).
    ForestHub(Option<ForestPeer>),
    /// The datagrams of the tracker's answer to [`Output::Register`]: the
    /// root's statements this hub lacked. Checked as any datagram is.
    Statements(&'a [&'a [u8]]),
    /// A datagram on the control group that is not the origin's repair.
    Announcement { from: SocketAddr, datagram: &'a [u8] },
    /// The tracker's answer to [`Output::Lookup`]: hubs that hold the chunk
    /// complete, or `None` when asking failed.
    Listed { object_id: ObjectId, index: u32, hubs: Option<&'a [ListedHub]> },
    /// The store could not write a chunk reported complete: collect it again.
    StoreFailed { object_id: ObjectId, index: u32 },
    /// A stored chunk was found damaged or missing: repair it now.
    ChunkLost { object_id: ObjectId, index: u32 },
    /// Live segments that left the back buffer: no longer held.
    Retired(&'a [ObjectId]),
    /// Objects the hub no longer keeps (evicted, or not chosen): their
    /// chunks are neither collected nor announced nor asked for.
    Unwanted(&'a [ObjectId]),
    /// Objects the hub's user asked for (fetched on demand, pinned): kept
    /// again, and what is missing of them asked of peers now.
    Wanted(&'a [ObjectId]),
    /// The pushed objects `--keep tagged` selects in the newest catalog
    /// ([`crate::receiver::Receiver::choose`]).
    Choose(&'a [ObjectId]),
    /// A reader waits for this chunk (the gateway): repair asks for it first.
    Awaited { object_id: ObjectId, index: u32 },
    /// Round-trip times measured on the connections to peers.
    Rtts(&'a HashMap<NodeId, Duration>),
    /// [`Hub::poll_timeout`] passed.
    Timer,
}

/// What to do.
#[derive(Debug)]
pub enum Output {
    /// Ask a peer for symbols; hand its end back as [`Input::Fetched`] `id`.
    Fetch {
        id: u64,
        peer: NodeId,
        addr: SocketAddr,
        req: ChunkRequest,
    },
    /// Send these NAKs to the origin service (at most
    /// [`MAX_NAKS_PER_STREAM`] per output).
    Naks {
        origin: NodeAddr,
        naks: Vec<Nak>,
        /// This hub's multicast loss, whole percent (0: not known yet): the
        /// origin sizes its resend for it.
        loss: u8,
    },
    /// Ask the tracker which hubs hold a chunk; the answer is [`Input::Listed`].
    Lookup {
        tracker: NodeAddr,
        object_id: ObjectId,
        index: u32,
        limit: u8,
    },
    /// Register with the tracker, reporting these holdings and the
    /// versions of the root's statements held; the statements it answers
    /// with come back as [`Input::Statements`].
    Register {
        tracker: NodeAddr,
        holdings: Vec<(ObjectId, ChunkBitmap)>,
        /// The root's version and the revocation list's (0: none).
        trust: (u64, u64),
    },
    /// Report this hub's multicast loss (whole percent) and what it made of
    /// the last round to the origin service: the echo of the round did not
    /// cover them.
    LossReport {
        origin: NodeAddr,
        loss: u8,
        verdict: Verdict,
    },
    /// Send this announcement on the island's control group.
    Announce(Vec<u8>),
    /// Ask the tracker for up to `limit` bridges; the answer is [`Input::Bridges`].
    /// `leaving`: the bridge feeding this hub, which it leaves if the tracker
    /// lists another before it.
    AskBridges {
        tracker: NodeAddr,
        limit: u8,
        leaving: Option<NodeId>,
    },
    /// Take this bridge's feed, starting at `resume`; the answer is
    /// [`Input::Feeding`] or [`Input::NotSubscribed`].
    Subscribe {
        bridge: NodeAddr,
        resume: Option<(ObjectId, u32)>,
    },
    /// Leave this bridge's feed; its end comes back as [`Input::FeedEnded`].
    Unsubscribe(NodeId),
    /// Ask the bridge feeding this hub to send these chunks again in its
    /// feed: what a NAK would ask of the origin, whose multicast answer this
    /// hub would not hear. Nothing comes back; the chunks come in the feed.
    Refeed {
        bridge: NodeId,
        chunks: Vec<(ObjectId, u32)>,
    },
    /// Send this forest message.
    Tell {
        to: ForestPeer,
        msg: Msg<ForestPeer>,
    },
    /// Take `tree`'s stripe from `parent` (from `resume` on), in place of
    /// any taken before; `None`: take it from nobody. Its end comes back as
    /// [`Input::StripeEnded`].
    Stripe {
        tree: Tree,
        parent: Option<ForestPeer>,
        resume: Option<(ObjectId, u32)>,
    },
    /// Ask the tracker for a random hub of the forest; the answer is
    /// [`Input::ForestHub`].
    AskForestHub {
        tracker: NodeAddr,
    },
    /// This hub's children now, by tree: who may take which stripe here.
    ForestChildren(Vec<(Tree, NodeId)>),
    /// A verified manifest or decoded chunk: store it (and feed it on).
    Store {
        event: Event,
        source: Source,
    },
    Event(HubEvent),
}

/// What happened, for the status, the log and the driver's own duties.
#[derive(Clone, Debug, PartialEq)]
pub enum HubEvent {
    /// Verified symbol bytes that came by `source` (and from `peer`): every
    /// byte the receiver accepts is credited once.
    Received {
        source: Source,
        peer: Option<NodeId>,
        bytes: u64,
    },
    /// `n` pieces of data from `peer` failed the broadcaster's checks.
    Struck {
        peer: NodeId,
        n: u32,
        strike: Strike,
        via: Via,
    },
    /// A peer entered the table.
    PeerFound {
        peer: NodeId,
        addr: SocketAddr,
        via: Via,
    },
    /// Peers not heard of for a while left the table.
    PeersGone(Vec<NodeId>),
    /// The channel's manifests name this origin service.
    TrackerLearned(NodeAddr),
    /// The tracker answered a lookup with this many other hubs (`None`: it failed).
    TrackerAnswer(Option<usize>),
    /// An announcement that does not parse.
    BadAnnouncement,
    /// A NAK is due but no origin service is known (said at most every
    /// [`NAK_WARN_EVERY`]).
    NoOrigin(Nak),
    /// A chunk's repair ended with the chunk complete.
    Repaired(Repaired),
    /// A feed is wanted and no bridge is there to ask (none named, none
    /// listed, all resting); the hub has been searching this long.
    NoBridge {
        searching: Duration,
    },
    /// The tracker listed a bridge less loaded than the one feeding this
    /// hub: the hub moves there.
    BridgeMove {
        from: NodeId,
        to: NodeId,
    },
    /// This bridge's datagrams struck out: the hub leaves it for good.
    BridgeLeft {
        bridge: NodeId,
        strikes: u32,
    },
    Forest(ForestEvent),
    /// A catalog root newer than the one held verified: keep it (the
    /// datagram, to check again at start), and assemble its pages as they
    /// complete.
    Catalog {
        root: wire::CatalogRoot,
        datagram: Vec<u8>,
    },
    /// A revocation list newer than the one held taken: keep it (to check
    /// again at start) and pass it on to desert hubs.
    Revocations {
        datagram: Vec<u8>,
    },
    /// A root rotation followed: keep it (the chain is followed again at
    /// start) and pass it on to desert hubs.
    Rotation {
        version: u64,
        datagram: Vec<u8>,
    },
}
