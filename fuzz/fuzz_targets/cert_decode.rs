//! The certificate decoder and verifier on arbitrary bytes.
#![no_main]
use hubcast_keys::{Certificate, Fingerprint, TrustAnchor};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(c) = Certificate::decode(data) {
        assert_eq!(&c.encode()[..], data);
        let anchor = TrustAnchor::new(Fingerprint::of(&c.root));
        let _ = c.verify(&anchor, 1_700_000_000);
    }
});
