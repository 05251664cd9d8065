//! Every wire decoder: arbitrary bytes give a typed value or a typed error.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = hubcast_protocol::wire::decode_header(data);
    if let Ok((_, d)) = hubcast_protocol::wire::decode(data) {
        // A parsed datagram respects the documented bounds.
        assert!(data.len() <= hubcast_protocol::wire::MAX_DATAGRAM);
        if let hubcast_protocol::wire::Datagram::Ticket(t) = d {
            assert!(t.body.page_hashes.len() <= hubcast_protocol::wire::MAX_TABLE_PAGES);
        }
    }
});
