//! The announcement decoder on arbitrary datagrams: a datagram decodes to the
//! one canonical form or fails with a typed error; nothing panics.
#![no_main]
use hubcast_protocol::announce::Announcement;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(a) = Announcement::decode(data) {
        let (again, listed) = a.encode();
        assert_eq!(listed, a.objects.len());
        assert_eq!(&again[..], data);
    }
});
