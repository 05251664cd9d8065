//! Peer message codec properties: every message kind (1-16, forest messages
//! included) round-trips through one canonical byte form, a valid message
//! with a byte changed either decodes to that canonical form or is refused,
//! and no byte string panics the decoder.

use hubcast_protocol::forest::{self, Msg, Refusal, UpdateInfo};
use hubcast_protocol::peer_wire::*;
use hubcast_protocol::ObjectId;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use std::net::{IpAddr, SocketAddr};

/// The message kinds on the wire, first to last.
const KINDS: std::ops::RangeInclusive<u8> = 1..=17;

fn addr() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        (any::<[u8; 4]>(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::new(IpAddr::from(ip), port)),
        (any::<[u8; 16]>(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::new(IpAddr::from(ip), port)),
    ]
}

fn peer() -> impl Strategy<Value = ForestPeer> {
    (any::<[u8; 32]>(), addr()).prop_map(|(node_id, addr)| ForestPeer { node_id, addr })
}

fn resume() -> impl Strategy<Value = Option<(ObjectId, u32)>> {
    proptest::option::of((any::<[u8; 32]>().prop_map(ObjectId), any::<u32>()))
}

fn forest_msg() -> impl Strategy<Value = Msg<ForestPeer>> {
    let tree = || 0..forest::MAX_STRIPES;
    let opt = || proptest::option::of(peer());
    let refusal = prop_oneof![
        Just(Refusal::BadTree),
        Just(Refusal::NotAChild),
        Just(Refusal::NotYourParent),
        Just(Refusal::Full),
        Just(Refusal::Loop),
        Just(Refusal::NotHeir),
    ];
    let moves = prop_oneof![
        (tree(), peer(), any::<bool>(), any::<bool>())
            .prop_map(|(tree, joiner, interior, down)| Msg::Search { tree, joiner, interior, down }),
        (tree(), peer(), any::<bool>(), opt()).prop_map(|(tree, child, interior, dead)| Msg::TakeOn {
            tree,
            child,
            interior,
            dead
        }),
        (tree(), peer(), opt(), peer()).prop_map(|(tree, parent, grandparent, leaf)| Msg::Substitute {
            tree,
            parent,
            grandparent,
            leaf
        }),
        (tree(), peer(), opt()).prop_map(|(tree, parent, grandparent)| Msg::Direct {
            tree,
            parent,
            grandparent
        }),
        (tree(), peer(), any::<bool>()).prop_map(|(tree, dead, interior)| Msg::Replace {
            tree,
            dead,
            interior
        }),
        (tree(), peer(), any::<bool>()).prop_map(|(tree, needy, down)| Msg::Want { tree, needy, down }),
    ];
    let notices = prop_oneof![
        (tree(), any::<[u32; 6]>(), any::<bool>()).prop_map(|(tree, n, attached)| Msg::Update {
            tree,
            info: UpdateInfo::Up {
                interior: n[0],
                free: n[1],
                spare: n[2],
                room: n[3],
                give: n[4],
                attached,
                epoch: n[5]
            }
        }),
        (tree(), opt(), opt()).prop_map(|(tree, grandparent, heir)| Msg::Update {
            tree,
            info: UpdateInfo::Down { grandparent, heir }
        }),
        (tree(), refusal).prop_map(|(tree, why)| Msg::Refuse { tree, why }),
        Just(Msg::Join),
        (tree(), peer()).prop_map(|(tree, contact)| Msg::Welcome { tree, contact }),
        (tree(), peer()).prop_map(|(tree, leaf)| Msg::Give { tree, leaf }),
    ];
    prop_oneof![moves, notices]
}

/// Kinds 7-17: the origin, the tracker, bridges, the forest and loss reports.
fn service_message() -> impl Strategy<Value = PeerMessage> {
    let id = || any::<[u8; 32]>().prop_map(ObjectId);
    let listed = (any::<[u8; 32]>(), any::<bool>(), addr()).prop_map(|(node_id, bridge, addr)| ListedHub {
        node_id,
        bridge,
        addr,
    });
    prop_oneof![
        (
            id(),
            any::<u32>(),
            1..=MAX_ESIS_PER_REQUEST as u16,
            0..=100u8,
            proptest::collection::vec(any::<u8>(), 0..=MAX_HELD_BYTES)
        )
            .prop_map(|(object_id, chunk, missing, loss, held)| PeerMessage::Nak {
                object_id,
                chunk,
                missing,
                loss,
                held
            }),
        (any::<bool>(), any::<bool>(), any::<u16>(), any::<u64>(), any::<u64>()).prop_map(
            |(bridge, forest, feeds, root_version, revocations_version)| PeerMessage::Register {
                bridge,
                forest,
                feeds,
                root_version,
                revocations_version
            }
        ),
        (id(), proptest::option::of(0..u32::MAX), 1..=MAX_HUB_LIST as u8)
            .prop_map(|(object_id, chunk, limit)| PeerMessage::HoldersRequest { object_id, chunk, limit }),
        Just(PeerMessage::ForestHubRequest),
        proptest::collection::vec(listed, 0..=MAX_HUB_LIST).prop_map(PeerMessage::HubList),
        (1..=MAX_HUB_LIST as u8, proptest::option::of(any::<[u8; 32]>()))
            .prop_map(|(limit, leaving)| PeerMessage::BridgesRequest { limit, leaving }),
        (resume(), any::<u16>()).prop_map(|(resume, udp_port)| PeerMessage::Subscribe { resume, udp_port }),
        Just(PeerMessage::Subscribed),
        forest_msg().prop_map(PeerMessage::Forest),
        (2..=forest::MAX_STRIPES)
            .prop_flat_map(|stripes| (0..stripes, Just(stripes), resume()))
            .prop_map(|(tree, stripes, resume)| PeerMessage::Stripe { tree, stripes, resume }),
        (1..=100u8, 0..4u8).prop_map(|(loss, bits)| PeerMessage::LossReport {
            loss,
            verdict: hubcast_protocol::rate::Verdict::from_bits(bits).unwrap_or_default(),
        }),
    ]
}

/// Every kind, 1-17.
fn message() -> impl Strategy<Value = PeerMessage> {
    prop_oneof![repair_message(), service_message()]
}

/// Kinds 1-6: peer repair.
fn repair_message() -> impl Strategy<Value = PeerMessage> {
    let id = any::<[u8; 32]>().prop_map(ObjectId);
    let reason = prop_oneof![
        Just(RefuseReason::NotHeld),
        Just(RefuseReason::Busy),
        Just(RefuseReason::OverLimit),
        Just(RefuseReason::Invalid),
    ];
    prop_oneof![
        id.clone().prop_map(|object_id| PeerMessage::HaveRequest { object_id }),
        (id.clone(), 0u32..5000, proptest::collection::vec(any::<u32>(), 0..50)).prop_map(
            |(object_id, n, set)| {
                let mut complete = ChunkBitmap::new(n);
                for i in set {
                    if n > 0 && i % 3 == 0 {
                        complete.set(i % n);
                    }
                }
                let partial: Vec<(u32, u16)> = (0..n)
                    .filter(|c| !complete.get(*c))
                    .step_by(7)
                    .take(40)
                    .map(|c| (c, (c % 900) as u16))
                    .collect();
                PeerMessage::HaveMap { object_id, complete, partial }
            }
        ),
        (id.clone(), any::<u32>(), any::<u32>())
            .prop_map(|(object_id, chunk, pages)| PeerMessage::TableRequest { object_id, chunk, pages }),
        (id.clone(), any::<u32>(), proptest::collection::vec((0u32..20, 1u16..20), 1..40)).prop_map(
            |(object_id, chunk, gaps)| {
                let mut at = 0u32;
                let ranges = gaps
                    .into_iter()
                    .map(|(gap, n)| {
                        let r = (at + gap, n);
                        at += gap + u32::from(n) + 1;
                        r
                    })
                    .collect();
                let esis = EsiRanges::new(ranges).expect("increasing, disjoint, small");
                PeerMessage::SymbolRequest { object_id, chunk, esis }
            }
        ),
        (id, any::<u32>(), reason).prop_map(|(object_id, chunk, reason)| PeerMessage::Refuse {
            object_id,
            chunk,
            reason
        }),
        proptest::collection::vec(any::<u8>(), 1..1352).prop_map(PeerMessage::Datagram),
    ]
}

proptest! {
    /// Back to back in one buffer, each decodes to what was encoded, and
    /// encodes again to the same bytes (forest peers compare by node id
    /// alone, so the bytes are what shows their addresses survived).
    #[test]
    fn valid_messages_round_trip_back_to_back(ms in proptest::collection::vec(message(), 1..5)) {
        let mut buf = Vec::new();
        for m in &ms {
            encode(m, &mut buf);
        }
        let mut at = 0;
        for m in &ms {
            let (decoded, used) = decode_frame(&buf[at..]).unwrap();
            prop_assert_eq!(&decoded, m);
            let mut again = Vec::new();
            encode(&decoded, &mut again);
            prop_assert_eq!(&again[..], &buf[at..at + used]);
            at += used;
        }
        prop_assert_eq!(at, buf.len());
    }

    /// A valid message with one body byte changed: refused with a typed
    /// error, or decoded to a message whose encoding is exactly those bytes
    /// (one canonical form: no two byte strings mean the same message).
    #[test]
    fn a_changed_byte_decodes_canonically_or_is_refused(
        m in message(),
        at in any::<prop::sample::Index>(),
        to in any::<u8>(),
    ) {
        let mut bytes = Vec::new();
        encode(&m, &mut bytes);
        let i = 4 + at.index(bytes.len() - 4);
        bytes[i] = to;
        match decode_frame(&bytes) {
            Ok((changed, used)) => {
                let mut again = Vec::new();
                encode(&changed, &mut again);
                prop_assert_eq!(&again[..], &bytes[..used], "one canonical form");
            }
            Err(e) => prop_assert!(!matches!(e, PeerWireError::Incomplete(_)), "{:?} for a whole frame", e),
        }
    }

    /// Arbitrary bodies behind every type byte (known or not) never panic,
    /// and what decodes has one canonical form.
    #[test]
    fn arbitrary_bodies_never_panic_and_re_encode_identically(
        kind in any::<u8>(),
        body in proptest::collection::vec(any::<u8>(), 0..600),
    ) {
        // A well-formed length and a type byte, so the body parsers are reached.
        let mut bytes = ((body.len() + 1) as u32).to_be_bytes().to_vec();
        bytes.push(kind);
        bytes.extend_from_slice(&body);
        match decode_frame(&bytes) {
            Ok((m, used)) => {
                let mut again = Vec::new();
                encode(&m, &mut again);
                prop_assert_eq!(&again[..], &bytes[..used], "one canonical form");
            }
            Err(e) => {
                prop_assert!(!matches!(e, PeerWireError::Incomplete(_)), "{:?} for a whole frame", e);
                if !KINDS.contains(&kind) {
                    prop_assert_eq!(e, PeerWireError::UnknownType);
                }
            }
        }
    }
}

/// The generator reaches every kind the codec has, and every forest message:
/// a kind added to the codec and not to the generator fails here.
#[test]
fn the_generator_builds_every_kind() {
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let (strategy, mut kinds, mut forest_kinds) =
        (message(), std::collections::BTreeSet::new(), std::collections::BTreeSet::new());
    for _ in 0..4000 {
        let m = strategy.new_tree(&mut runner).unwrap().current();
        let mut bytes = Vec::new();
        encode(&m, &mut bytes);
        kinds.insert(bytes[4]);
        if let PeerMessage::Forest(_) = m {
            forest_kinds.insert(bytes[5]);
        }
    }
    assert_eq!(kinds, KINDS.collect(), "message kinds generated");
    assert_eq!(forest_kinds, (1..=12).collect(), "forest message kinds generated");
    // And no kind beyond: the type byte after the last is unknown.
    let mut bytes = 1u32.to_be_bytes().to_vec();
    bytes.push(KINDS.end() + 1);
    assert_eq!(decode_frame(&bytes).err(), Some(PeerWireError::UnknownType));
}

/// docs/PROTOCOL.md's frame table names every type byte as the codec writes
/// it, and its bounds are the code's.
#[test]
fn the_protocol_document_lists_every_frame_and_bound_as_the_code_has_them() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/PROTOCOL.md")).unwrap();
    let frames = doc.split("### Frames").nth(1).expect("a Frames section").split("```").nth(1).unwrap();
    let named: std::collections::BTreeMap<u8, String> = frames
        .lines()
        // Top-level lines only: the forest's kinds are indented under type 15.
        .filter(|l| l.starts_with(|c: char| c.is_ascii_digit()))
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let kind = w.next()?.parse().ok()?;
            Some((kind, w.next()?.to_owned()))
        })
        .filter(|(kind, _)| KINDS.contains(kind))
        .collect();
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let strategy = message();
    let mut seen = std::collections::BTreeMap::new();
    for _ in 0..4000 {
        let m = strategy.new_tree(&mut runner).unwrap().current();
        let mut bytes = Vec::new();
        encode(&m, &mut bytes);
        let variant = format!("{m:?}").split([' ', '(', '{']).next().unwrap().to_owned();
        seen.insert(bytes[4], variant);
    }
    assert_eq!(named, seen, "type byte -> message, in docs/PROTOCOL.md and in the codec");
    for (name, value) in [
        ("MAX_MESSAGE_LEN", MAX_MESSAGE_LEN),
        ("MAX_CHUNKS_PER_OBJECT", MAX_CHUNKS_PER_OBJECT as usize),
        ("MAX_PARTIAL", MAX_PARTIAL),
        ("MAX_RANGES", MAX_RANGES),
        ("MAX_HELD_BYTES", MAX_HELD_BYTES),
        ("MAX_ESIS_PER_REQUEST", MAX_ESIS_PER_REQUEST as usize),
        ("MAX_HUB_LIST", MAX_HUB_LIST),
        ("MAX_DATAGRAM", hubcast_protocol::wire::MAX_DATAGRAM),
        ("MAX_STRIPES", usize::from(forest::MAX_STRIPES)),
    ] {
        let row = format!("| {name} | {value}");
        assert!(doc.contains(&row), "docs/PROTOCOL.md: the row `{row}`");
    }
}
