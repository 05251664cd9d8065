//! Peer message codec properties: every valid message round-trips through one
//! canonical byte form, and no byte string panics the decoder.

use hubcast_protocol::peer_wire::*;
use hubcast_protocol::ObjectId;
use proptest::prelude::*;

fn message() -> impl Strategy<Value = PeerMessage> {
    let id = any::<[u8; 32]>().prop_map(ObjectId);
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
        (id, any::<u32>(), prop_oneof![Just(RefuseReason::NotHeld), Just(RefuseReason::Busy)])
            .prop_map(|(object_id, chunk, reason)| PeerMessage::Refuse { object_id, chunk, reason }),
        proptest::collection::vec(any::<u8>(), 1..1352).prop_map(PeerMessage::Datagram),
    ]
}

proptest! {
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
            at += used;
        }
        prop_assert_eq!(at, buf.len());
    }

    #[test]
    fn arbitrary_bodies_never_panic_and_re_encode_identically(
        kind in 0u8..8,
        body in proptest::collection::vec(any::<u8>(), 0..600),
    ) {
        // A well-formed length and a real type byte, so the body parsers are reached.
        let mut bytes = ((body.len() + 1) as u32).to_be_bytes().to_vec();
        bytes.push(kind);
        bytes.extend_from_slice(&body);
        if let Ok((m, used)) = decode_frame(&bytes) {
            let mut again = Vec::new();
            encode(&m, &mut again);
            prop_assert_eq!(&again[..], &bytes[..used], "one canonical form");
        }
    }
}
