//! The peer message decoder on arbitrary byte streams: frames decode to the one
//! canonical form or fail with a typed error; nothing panics. The answer
//! splitter (`decode_answer`, which leaves datagrams in place) agrees with
//! frame-by-frame decoding.
#![no_main]
use hubcast_protocol::peer_wire::{
    decode_all, decode_answer, decode_frame, encode, Answer, PeerMessage, PeerWireError,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    loop {
        match decode_frame(rest) {
            Ok((m, used)) => {
                let mut again = Vec::new();
                encode(&m, &mut again);
                assert_eq!(&again[..], &rest[..used]);
                rest = &rest[used..];
            }
            Err(PeerWireError::Incomplete(n)) => {
                assert!(n > rest.len());
                break;
            }
            Err(_) => break,
        }
    }
    match (decode_answer(data.to_vec()), decode_all(data)) {
        (Ok(Answer::Datagrams(split)), Ok(all)) => {
            let decoded: Vec<Vec<u8>> = all
                .into_iter()
                .map(|m| match m {
                    PeerMessage::Datagram(d) => d,
                    other => panic!("split as datagrams, decoded as {other:?}"),
                })
                .collect();
            assert_eq!(split.iter().map(<[u8]>::to_vec).collect::<Vec<_>>(), decoded);
        }
        // Datagrams only that decode_all refuses: never.
        (Ok(Answer::Datagrams(split)), Err(e)) => panic!("split {} datagrams, decode_all: {e}", split.len()),
        // A non-datagram frame comes back decoded; anything else is an error.
        (Ok(Answer::Other(m)), _) => assert!(!matches!(m, PeerMessage::Datagram(_))),
        (Err(_), _) => {}
    }
});
