//! The catalog's pages and index (`hubcast_protocol::catalog`): arbitrary
//! bytes give checked entries or a typed error, never a panic; what decodes
//! encodes back to the same bytes.
#![no_main]
use hubcast_protocol::catalog;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first byte picks what the rest is read as, with its magic in front.
    let Some((pick, rest)) = data.split_first() else { return };
    let mut bytes = Vec::with_capacity(rest.len() + 4);
    if pick & 1 == 0 {
        bytes.extend_from_slice(&catalog::PAGE_MAGIC);
        bytes.extend_from_slice(rest);
        if let Ok(entries) = catalog::decode_page(&bytes) {
            assert!(entries.len() <= catalog::MAX_PAGE_ENTRIES);
            assert!(entries.iter().all(|e| e.check().is_ok() && catalog::valid_path_name(&e.name)));
            assert_eq!(catalog::encode_pages(&entries, catalog::MAX_PAGE_BYTES).concat(), if entries.is_empty() { vec![] } else { bytes.clone() });
        }
    } else {
        bytes.extend_from_slice(&catalog::INDEX_MAGIC);
        bytes.extend_from_slice(rest);
        if let Ok(pages) = catalog::decode_index(&bytes) {
            assert_eq!(catalog::encode_index(&pages), bytes);
        }
    }
});
