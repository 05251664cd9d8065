//! The revocation list's decoder and verifier on arbitrary bytes: what
//! decodes encodes back to the same bytes, and checking it never panics.
#![no_main]
use hubcast_keys::{Fingerprint, RevocationList, TrustAnchor};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(list) = RevocationList::decode(data) {
        assert_eq!(list.encode(), data);
        let anchor = TrustAnchor::new(Fingerprint::of(&list.root));
        let _ = list.verify(&anchor);
        let _ = list.revokes(u64::from_be_bytes([0, 0, 0, 0, 0, 0, 0, 1]));
    }
});
