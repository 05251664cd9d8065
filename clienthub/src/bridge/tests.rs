use super::*;

fn chunk(seq: u64, object: u8, index: u32) -> FeedChunk {
    let at = Instant::now();
    FeedChunk { seq, object_id: ObjectId([object; 32]), index, len: 100, k: 1, pages: 1, at }
}

fn ring(bytes: u64) -> Ring {
    Ring {
        chunks: VecDeque::new(),
        bytes: 0,
        keep: BackBuffer { secs: Duration::from_secs(3600), bytes },
        next_seq: 0,
        manifests: HashMap::new(),
        waiting: HashMap::new(),
    }
}

#[test]
fn the_back_buffer_is_bounded_and_a_subscription_starts_where_it_asks() {
    let mut r = ring(500);
    r.waiting.insert(ObjectId([1; 32]), Arc::from(&b"m1"[..]));
    for i in 0..8 {
        r.push(chunk(i, 1, i as u32));
    }
    assert_eq!(r.chunks.len(), 5, "500 bytes hold five 100-byte chunks");
    assert_eq!(r.chunks.front().map(|c| c.index), Some(3));
    assert!(r.manifests.contains_key(&ObjectId([1; 32])), "its object still has chunks in the ring");
    // From the start; from a chunk it holds; past what it has of an object
    // (live end); an unknown chunk (the start).
    assert_eq!(r.after(r.start_for(None)).map(|c| c.index), Some(3));
    assert_eq!(r.after(r.start_for(Some((ObjectId([1; 32]), 5)))).map(|c| c.index), Some(5));
    assert_eq!(r.after(r.start_for(Some((ObjectId([1; 32]), 9)))).map(|c| c.index), None);
    assert_eq!(r.start_for(Some((ObjectId([1; 32]), 9))), Some(7));
    assert_eq!(r.after(r.start_for(Some((ObjectId([2; 32]), 0)))).map(|c| c.index), Some(3));
    // An object whose chunks all left the ring loses its manifest.
    for i in 8..13 {
        r.push(chunk(i, 2, i as u32));
    }
    assert!(!r.manifests.contains_key(&ObjectId([1; 32])));
    assert_eq!(r.bytes, 500);
}

#[test]
fn the_back_buffer_keeps_the_last_seconds_of_the_channel() {
    let mut r = ring(1 << 20);
    r.keep.secs = Duration::from_secs(30);
    let t0 = Instant::now();
    // One chunk every 10 s: at 40 s, the chunk of 0 s is older than 30 s.
    for i in 0..5u32 {
        r.push(FeedChunk { at: t0 + Duration::from_secs(10 * u64::from(i)), ..chunk(0, 1, i) });
    }
    let kept: Vec<u32> = r.chunks.iter().map(|c| c.index).collect();
    assert_eq!(kept, [1, 2, 3, 4]);
    assert_eq!(r.bytes, 400);
    // A subscription asking for the chunk that left starts at the oldest kept.
    assert_eq!(r.after(r.start_for(Some((ObjectId([1; 32]), 0)))).map(|c| c.index), Some(1));
}

#[test]
fn the_fan_out_is_capped_and_a_place_is_given_back() {
    let feed = Feed::new(BackBuffer { secs: Duration::from_secs(30), bytes: 1 << 20 }, 2);
    let a = feed.join().expect("first");
    let _b = feed.join().expect("second");
    assert!(feed.join().is_none(), "full");
    drop(a);
    assert!(feed.join().is_some(), "a place freed");
}

#[test]
fn a_feed_that_stops_being_live_ends_its_subscriptions_after_a_while_by_the_drivers_clock() {
    let feed = Feed::new(BackBuffer { secs: Duration::from_secs(30), bytes: 1 << 20 }, 2);
    let t0 = Instant::now();
    assert!(feed.set_live(true, t0));
    assert!(feed.set_live(false, t0 + Duration::from_secs(1)));
    assert!(!feed.ending.load(Relaxed), "just stopped");
    assert!(!feed.set_live(false, t0 + Duration::from_secs(3)));
    assert!(!feed.ending.load(Relaxed), "2 s of {NOT_LIVE_ENDS_AFTER:?}");
    feed.set_live(false, t0 + Duration::from_secs(1) + NOT_LIVE_ENDS_AFTER);
    assert!(feed.ending.load(Relaxed));
    // Live again: a later stop counts from then.
    feed.set_live(true, t0 + Duration::from_secs(5));
    assert!(!feed.ending.load(Relaxed));
    feed.set_live(false, t0 + Duration::from_secs(6));
    assert!(!feed.ending.load(Relaxed));
}
