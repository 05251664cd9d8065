//! `--trust` input: fingerprints and root.pub text.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = s.parse::<hubcast_keys::Fingerprint>();
        let _ = hubcast_keys::files::parse_root_pub(s);
    }
});
