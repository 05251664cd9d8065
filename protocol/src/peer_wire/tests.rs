use super::*;

fn round_trip(m: PeerMessage) {
    let mut buf = Vec::new();
    encode(&m, &mut buf);
    if let PeerMessage::Datagram(d) = &m {
        let mut direct = Vec::new();
        encode_datagram(d, &mut direct);
        assert_eq!(direct, buf, "encode_datagram writes what encode does");
    }
    assert_eq!(decode_frame(&buf), Ok((m, buf.len())));
    // Every shorter prefix asks for more rather than failing.
    for cut in 0..buf.len() {
        assert!(matches!(decode_frame(&buf[..cut]), Err(PeerWireError::Incomplete(_))), "cut {cut}");
    }
}

#[test]
fn an_answer_splits_into_the_datagrams_decode_all_gives_without_copying_them() {
    let datagrams = [vec![1u8; 40], vec![2; wire::MAX_DATAGRAM], vec![3]];
    let mut body = Vec::new();
    for d in &datagrams {
        encode_datagram(d, &mut body);
    }
    let Ok(Answer::Datagrams(frames)) = decode_answer(body.clone()) else { panic!("datagrams") };
    assert_eq!(frames.iter().map(<[u8]>::to_vec).collect::<Vec<_>>(), datagrams);
    let refuse = PeerMessage::Refuse { object_id: ObjectId([1; 32]), chunk: 2, reason: RefuseReason::Busy };
    let mut refused = Vec::new();
    encode(&refuse, &mut refused);
    assert_eq!(decode_answer(refused), Ok(Answer::Other(refuse)));
    let boundaries = [45, 45 + 5 + wire::MAX_DATAGRAM];
    for cut in (1..body.len()).filter(|c| !boundaries.contains(c)) {
        assert!(decode_answer(body[..cut].to_vec()).is_err(), "cut {cut}");
    }
    let mut empty = Vec::new();
    encode_datagram(&[], &mut empty);
    assert!(decode_answer(empty).is_err());
    let mut too_long = Vec::new();
    encode_datagram(&vec![0; wire::MAX_DATAGRAM + 1], &mut too_long);
    assert!(decode_answer(too_long).is_err());
    assert_eq!(decode_answer(Vec::new()), Ok(Answer::Datagrams(DatagramFrames::default())));
}

#[test]
fn every_message_round_trips_and_streams() {
    let id = ObjectId([4; 32]);
    let mut complete = ChunkBitmap::new(13);
    complete.set(0);
    complete.set(12);
    round_trip(PeerMessage::HaveRequest { object_id: id });
    round_trip(PeerMessage::HaveMap { object_id: id, complete, partial: vec![(3, 700), (5, 1)] });
    round_trip(PeerMessage::TableRequest { object_id: id, chunk: 7, pages: 0b1011 });
    let esis = EsiRanges::new(vec![(0, 3), (10, 1), (900, 40)]).unwrap();
    assert_eq!(esis.iter().take(5).collect::<Vec<_>>(), [0, 1, 2, 10, 900]);
    round_trip(PeerMessage::SymbolRequest { object_id: id, chunk: 2, esis });
    round_trip(PeerMessage::Refuse { object_id: id, chunk: 1, reason: RefuseReason::NotHeld });
    round_trip(PeerMessage::Datagram(vec![1, 2, 3]));
    round_trip(PeerMessage::Nak { object_id: id, chunk: 9, missing: 17, loss: 0, held: Vec::new() });
    round_trip(PeerMessage::Nak { object_id: id, chunk: 9, missing: 17, loss: 100, held: vec![0xa5; 13] });
    round_trip(PeerMessage::Nak {
        object_id: id,
        chunk: 9,
        missing: 1,
        loss: 3,
        held: vec![1; MAX_HELD_BYTES],
    });
    let mut nak = Vec::new();
    encode(&PeerMessage::Nak { object_id: id, chunk: 9, missing: 17, loss: 100, held: Vec::new() }, &mut nak);
    let at = nak.len() - 3;
    nak[at] = 101;
    assert_eq!(decode_frame(&nak), Err(PeerWireError::OutOfRange), "a loss over 100%");
    let mut nak = Vec::new();
    encode(
        &PeerMessage::Nak {
            object_id: id,
            chunk: 9,
            missing: 17,
            loss: 5,
            held: vec![0; MAX_HELD_BYTES + 1],
        },
        &mut nak,
    );
    assert_eq!(decode_frame(&nak), Err(PeerWireError::OutOfRange), "a held bitmap past the largest N_max");
    use crate::rate::Verdict;
    let clear = Verdict::default();
    round_trip(PeerMessage::LossReport { loss: 1, verdict: clear });
    round_trip(PeerMessage::LossReport { loss: 100, verdict: clear });
    round_trip(PeerMessage::LossReport { loss: 0, verdict: Verdict { behind: true, congested: false } });
    round_trip(PeerMessage::LossReport { loss: 30, verdict: Verdict { behind: true, congested: true } });
    for bad in [0u8, 101] {
        let mut report = Vec::new();
        encode(&PeerMessage::LossReport { loss: 1, verdict: clear }, &mut report);
        *report.last_mut().unwrap() = bad;
        assert_eq!(decode_frame(&report), Err(PeerWireError::OutOfRange), "a loss report of {bad}%");
    }
    // A verdict byte with no verdict, or bits past the two.
    for bad in [0u8, 4] {
        let mut report = Vec::new();
        encode(
            &PeerMessage::LossReport { loss: 1, verdict: Verdict { behind: true, congested: false } },
            &mut report,
        );
        *report.last_mut().unwrap() = bad;
        assert_eq!(decode_frame(&report), Err(PeerWireError::OutOfRange), "verdict bits {bad}");
    }
    round_trip(PeerMessage::Register {
        bridge: true,
        forest: false,
        feeds: 3,
        root_version: 1,
        revocations_version: 0,
    });
    round_trip(PeerMessage::Register {
        bridge: false,
        forest: true,
        feeds: 0,
        root_version: 3,
        revocations_version: u64::MAX,
    });
    round_trip(PeerMessage::HoldersRequest { object_id: id, chunk: Some(3), limit: 8 });
    round_trip(PeerMessage::HoldersRequest { object_id: id, chunk: None, limit: 1 });
    round_trip(PeerMessage::ForestHubRequest);
    round_trip(PeerMessage::HubList(vec![
        ListedHub { node_id: [1; 32], bridge: false, addr: "10.0.0.1:4433".parse().unwrap() },
        ListedHub { node_id: [2; 32], bridge: true, addr: "[2001:db8::1]:7000".parse().unwrap() },
    ]));
    round_trip(PeerMessage::HubList(vec![]));
    round_trip(PeerMessage::BridgesRequest { limit: 4, leaving: None });
    round_trip(PeerMessage::BridgesRequest { limit: 4, leaving: Some([7; 32]) });
    round_trip(PeerMessage::Subscribe { resume: None, udp_port: 0 });
    round_trip(PeerMessage::Subscribe { resume: Some((id, 41)), udp_port: 40_123 });
    round_trip(PeerMessage::Subscribed);
}

#[test]
fn every_forest_message_round_trips_and_malformed_ones_are_refused_typed() {
    use crate::forest::{Msg, Refusal, UpdateInfo};
    let a = ForestPeer { node_id: [1; 32], addr: "10.0.0.1:4433".parse().unwrap() };
    let b = ForestPeer { node_id: [2; 32], addr: "[2001:db8::2]:7000".parse().unwrap() };
    let all = [
        Msg::Search { tree: 3, joiner: a, interior: true, down: false },
        Msg::Search { tree: 0, joiner: b, interior: false, down: true },
        Msg::TakeOn { tree: 1, child: a, interior: true, dead: Some(b) },
        Msg::TakeOn { tree: 1, child: b, interior: false, dead: None },
        Msg::Want { tree: 2, needy: a, down: true },
        Msg::Give { tree: 3, leaf: b },
        Msg::Substitute { tree: 2, parent: a, grandparent: Some(b), leaf: b },
        Msg::Substitute { tree: 2, parent: a, grandparent: None, leaf: b },
        Msg::Direct { tree: 15, parent: b, grandparent: None },
        Msg::Replace { tree: 0, dead: b, interior: false },
        Msg::Update {
            tree: 1,
            info: UpdateInfo::Up {
                interior: 7,
                free: 0,
                spare: 1,
                room: 2,
                give: 5,
                attached: true,
                epoch: 3,
            },
        },
        Msg::Update { tree: 1, info: UpdateInfo::Down { grandparent: Some(a), heir: None } },
        Msg::Refuse { tree: 2, why: Refusal::NotAChild },
        Msg::Refuse { tree: 2, why: Refusal::Loop },
        Msg::Join,
        Msg::Welcome { tree: 1, contact: b },
    ];
    round_trip(PeerMessage::Stripe { tree: 2, stripes: 3, resume: None });
    round_trip(PeerMessage::Stripe { tree: 0, stripes: 4, resume: Some((ObjectId([7; 32]), 9)) });
    let mut s = Vec::new();
    encode(&PeerMessage::Stripe { tree: 3, stripes: 3, resume: None }, &mut s);
    assert_eq!(decode_frame(&s), Err(PeerWireError::OutOfRange), "a stripe beyond the count");
    for m in all {
        round_trip(PeerMessage::Forest(m));
    }
    let mut buf = Vec::new();
    encode(&PeerMessage::Forest(Msg::Search { tree: 1, joiner: a, interior: true, down: true }), &mut buf);
    let body = 4 + 1; // the frame's length and type
    let bad = |at: usize, v: u8| {
        let mut b = buf.clone();
        b[at] = v;
        decode_frame(&b)
    };
    assert_eq!(bad(body, 9), Err(PeerWireError::OutOfRange), "an unknown kind");
    assert_eq!(bad(body + 1, 16), Err(PeerWireError::OutOfRange), "a tree beyond MAX_STRIPES");
    assert_eq!(bad(body + 2 + 32, 5), Err(PeerWireError::OutOfRange), "an address family");
    assert_eq!(bad(buf.len() - 1, 4), Err(PeerWireError::OutOfRange), "an unknown flag bit");
}

#[test]
fn feed_messages_take_only_their_canonical_forms() {
    // A subscription whose resume flag is neither 0 nor 1, or that says
    // "from the start" and still carries a position.
    for body in [vec![13, 2], [vec![13, 0], vec![0; 36]].concat(), vec![12, 0], vec![12, 33], vec![14, 0]] {
        let mut frame = (body.len() as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(&body);
        assert!(decode_frame(&frame).is_err(), "{body:?}");
    }
}

#[test]
fn absurd_requests_are_refused_before_allocating() {
    assert_eq!(EsiRanges::new(vec![]), None);
    assert_eq!(EsiRanges::new(vec![(5, 2), (6, 1)]), None, "overlap");
    assert_eq!(EsiRanges::new(vec![(9, 1), (2, 1)]), None, "decreasing");
    assert_eq!(EsiRanges::new(vec![(u32::MAX, 2)]), None, "beyond N_max");
    let huge = (u32::MAX).to_be_bytes();
    assert_eq!(decode_frame(&huge), Err(PeerWireError::TooLong));
    assert_eq!(decode_frame(&[0, 0, 0, 0]), Err(PeerWireError::Empty));
    let mut buf = Vec::new();
    encode(&PeerMessage::HaveRequest { object_id: ObjectId([0; 32]) }, &mut buf);
    buf[4] = 99;
    assert_eq!(decode_frame(&buf), Err(PeerWireError::UnknownType));
    // A have-map that claims more chunks than allowed.
    let mut map = vec![0, 0, 0, 0, 2];
    map.extend_from_slice(&[0; 32]);
    map.extend_from_slice(&(MAX_CHUNKS_PER_OBJECT + 1).to_be_bytes());
    let n = (map.len() - 4) as u32;
    map[..4].copy_from_slice(&n.to_be_bytes());
    assert_eq!(decode_frame(&map), Err(PeerWireError::OutOfRange));
}

#[test]
fn non_canonical_bitmaps_are_refused() {
    let mut complete = ChunkBitmap::new(3);
    complete.set(1);
    let mut buf = Vec::new();
    encode(&PeerMessage::HaveMap { object_id: ObjectId([1; 32]), complete, partial: vec![] }, &mut buf);
    let bitmap_at = 4 + 1 + 32 + 4;
    buf[bitmap_at] |= 0x80; // a bit beyond chunk 2
    assert_eq!(decode_frame(&buf), Err(PeerWireError::NotCanonical));
}
