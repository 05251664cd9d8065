//! The root rotation statement's decoder and verifier on arbitrary bytes:
//! what decodes encodes back to the same bytes, and checking it never panics.
#![no_main]
use hubcast_keys::RootRotation;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = RootRotation::decode(data) {
        assert_eq!(&r.encode()[..], data);
        let _ = r.verify();
    }
});
