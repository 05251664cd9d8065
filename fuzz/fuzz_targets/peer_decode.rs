//! The peer message decoder on arbitrary byte streams: frames decode to the one
//! canonical form or fail with a typed error; nothing panics.
#![no_main]
use hubcast_protocol::peer_wire::{decode_frame, encode, PeerWireError};
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
});
