use super::*;
use proptest::prelude::*;

fn entry(name: &str) -> Entry {
    Entry {
        id: ObjectId([name.len() as u8; 32]),
        name: name.into(),
        size: 123_456,
        published: 1_765_000_000,
        on_demand: name.ends_with(".mkv"),
        content_type: "video/mp4".into(),
        title: format!("Title of {name}"),
        description: "A description; with ünïcode.".into(),
        tags: vec!["film".into(), "kids".into()],
    }
}

#[test]
fn pages_and_the_index_round_trip_and_split_at_their_limits() {
    let mut names: Vec<String> =
        (0..10_000).map(|i| format!("shows/s{:02}/e{i:05} a name.mp4", i % 7)).collect();
    names.sort();
    let entries: Vec<Entry> = names.iter().map(|n| entry(n)).collect();
    let pages = encode_pages(&entries, 256 << 10);
    assert!(pages.len() >= 3, "10,000 entries of ~100 bytes: {} pages", pages.len());
    let mut back = Vec::new();
    for p in &pages {
        assert!(p.len() <= 256 << 10);
        let got = decode_page(p).unwrap();
        assert!(got.len() <= MAX_PAGE_ENTRIES);
        back.extend(got);
    }
    assert_eq!(back, entries);

    let refs: Vec<PageRef> = pages
        .iter()
        .enumerate()
        .map(|(i, p)| PageRef { id: ObjectId([i as u8; 32]), entries: p.len() as u32 / 100 + 1 })
        .collect();
    assert_eq!(decode_index(&encode_index(&refs)).unwrap(), refs);
    assert_eq!(encode_pages(&[], 1 << 20), Vec::<Vec<u8>>::new());
}

#[test]
fn hostile_pages_are_refused_with_a_reason() {
    let page = encode_pages(&[entry("a"), entry("b")], 1 << 20).remove(0);
    let refused = |bytes: &[u8]| decode_page(bytes).unwrap_err();
    assert_eq!(refused(b"HCX1\0\0\0\0"), CatalogError::BadMagic);
    assert_eq!(refused(&page[..page.len() - 1]), CatalogError::Truncated);
    let mut longer = page.clone();
    longer.push(0);
    assert_eq!(refused(&longer), CatalogError::Oversized);
    // A count far past what the bytes hold.
    let mut lying = page.clone();
    lying[4..8].copy_from_slice(&u32::MAX.to_be_bytes());
    assert_eq!(refused(&lying), CatalogError::OutOfRange);
    // Out of order, or a name twice.
    let swapped = encode_pages(&[entry("b"), entry("a")], 1 << 20).remove(0);
    assert_eq!(refused(&swapped), CatalogError::Unordered);
    let twice = encode_pages(&[entry("a"), entry("a")], 1 << 20).remove(0);
    assert_eq!(refused(&twice), CatalogError::Unordered);
    // Names a hub must never write.
    for bad in ["../etc/passwd", "/etc/passwd", "a/../../b", "a\0b", "a\\b", "a//b", "./a", ""] {
        let e = Entry { name: bad.into(), ..entry("x") };
        assert_eq!(e.check(), Err(CatalogError::BadName), "{bad:?}");
        let mut p = Vec::from(PAGE_MAGIC);
        p.extend_from_slice(&1u32.to_be_bytes());
        e.encode(&mut p);
        p.resize(p.len().max(8 + 57), 0);
        assert!(decode_page(&p).is_err(), "{bad:?} decoded");
    }
    assert!(decode_page(&vec![0u8; MAX_PAGE_BYTES + 1]).is_err());
    // An index: a page of no entries, a count past the bytes, a row short.
    let mut index = encode_index(&[PageRef { id: ObjectId([1; 32]), entries: 0 }]);
    assert_eq!(decode_index(&index), Err(CatalogError::OutOfRange));
    index[4..8].copy_from_slice(&1_000_000u32.to_be_bytes());
    assert_eq!(decode_index(&index), Err(CatalogError::OutOfRange));
    let short = encode_index(&[PageRef { id: ObjectId([1; 32]), entries: 5 }]);
    assert!(decode_index(&short[..short.len() - 1]).is_err());
}

fn arb_text(max: usize) -> impl Strategy<Value = String> {
    proptest::collection::vec(any::<char>(), 0..max.min(40)).prop_map(move |c| {
        let mut s: String = c.into_iter().collect();
        while s.len() > max {
            s.pop();
        }
        s
    })
}

fn arb_entry() -> impl Strategy<Value = Entry> {
    let name = proptest::collection::vec("[a-zA-Z0-9 ._-]{1,12}", 1..4)
        .prop_map(|parts| parts.join("/"))
        .prop_filter("a valid path", |n| valid_path_name(n));
    let tags = proptest::collection::vec("[a-z]{1,10}", 0..MAX_TAGS);
    (
        any::<[u8; 32]>(),
        name,
        any::<u64>(),
        any::<u64>(),
        any::<bool>(),
        "[a-z]{0,10}/[a-z0-9.+-]{0,20}",
        arb_text(MAX_TITLE_LEN),
        arb_text(200),
        tags,
    )
        .prop_map(|(id, name, size, published, on_demand, content_type, title, description, tags)| {
            Entry {
                id: ObjectId(id),
                name,
                size,
                published,
                on_demand,
                content_type,
                title,
                description,
                tags,
            }
        })
}

proptest! {
    #[test]
    fn any_checked_entries_round_trip(mut entries in proptest::collection::vec(arb_entry(), 0..60), limit in 4096usize..20_000) {
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        entries.dedup_by(|a, b| a.name == b.name);
        let pages = encode_pages(&entries, limit);
        let mut back = Vec::new();
        for p in &pages {
            back.extend(decode_page(p).unwrap());
        }
        prop_assert_eq!(back, entries);
    }

    #[test]
    fn any_bytes_decode_or_are_refused_without_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2000)) {
        let _ = decode_page(&bytes);
        let _ = decode_index(&bytes);
        let mut p = Vec::from(PAGE_MAGIC);
        p.extend_from_slice(&bytes);
        let _ = decode_page(&p);
        let mut i = Vec::from(INDEX_MAGIC);
        i.extend_from_slice(&bytes);
        let _ = decode_index(&i);
    }
}
