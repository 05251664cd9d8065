//! The receiver's datagram input: the fuzz input is a sequence of datagrams
//! (2-byte big-endian length prefixes). Nothing may panic, and nothing may
//! complete: no input here is signed by the trusted key.
#![no_main]
use hubcast_keys::{Fingerprint, TrustAnchor};
use hubcast_protocol::receiver::{Receiver, ReceiverConfig};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let anchor = TrustAnchor::new(Fingerprint([7; 32]));
    let mut rx = Receiver::new(anchor, ReceiverConfig { max_pending_bytes: 1 << 16, ..Default::default() });
    let mut rest = data;
    while rest.len() >= 2 {
        let n = (usize::from(rest[0]) << 8 | usize::from(rest[1])).min(rest.len() - 2);
        rx.handle_datagram(1_700_000_000, &rest[2..2 + n]);
        rest = &rest[2 + n..];
    }
    assert!(rx.poll_event().is_none());
});
