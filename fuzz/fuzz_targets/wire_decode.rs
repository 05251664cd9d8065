//! Every wire decoder: arbitrary bytes give a typed value or a typed error.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = hubcast_protocol::wire::decode_header(data);
    if let Ok((_, d)) = hubcast_protocol::wire::decode(data) {
        // A parsed datagram respects the documented bounds.
        assert!(data.len() <= hubcast_protocol::wire::MAX_DATAGRAM);
        match d {
            hubcast_protocol::wire::Datagram::Ticket(t) => {
                assert!(t.body.page_hashes.len() <= hubcast_protocol::wire::MAX_TABLE_PAGES);
            }
            hubcast_protocol::wire::Datagram::Feedback(f) => {
                let lens = [hubcast_protocol::wire::FEEDBACK_LEN, hubcast_protocol::wire::FEEDBACK_V1_LEN];
                assert!(lens.contains(&data.len()));
                assert!(f.body.echo.rate_kbit != Some(0));
                assert!(f.body.echo.worst.is_none_or(|w| w <= 100) && f.body.echo.round_ms > 0);
            }
            hubcast_protocol::wire::Datagram::CatalogRoot(c) => {
                assert_eq!(data.len(), hubcast_protocol::wire::CATALOG_ROOT_LEN);
                assert!(c.body.pages as usize <= hubcast_protocol::catalog::MAX_PAGES);
                assert_eq!(c.body.index_size, 8 + u64::from(c.body.pages) * 36);
            }
            _ => {}
        }
    }
});
