//! The announcement decoder on arbitrary datagrams: a datagram decodes to the
//! one canonical form (a version 1 one to its version 2 form) or fails with a
//! typed error; nothing panics.
#![no_main]
use hubcast_protocol::announce::Announcement;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(a) = Announcement::decode(data) {
        let (again, listed) = a.encode();
        assert_eq!(listed, a.objects.len());
        if data.starts_with(hubcast_protocol::announce::MAGIC) {
            assert_eq!(&again[..], data);
        } else {
            // Version 1 is read and written again as version 2.
            assert_eq!(Announcement::decode(&again).as_ref(), Ok(&a));
        }
    }
});
