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
fn a_new_subscription_starts_in_the_back_buffer_and_a_returning_one_where_it_asks() {
    let mut r = ring(500);
    r.waiting.insert(ObjectId([1; 32]), Arc::from(&b"m1"[..]));
    for i in 0..8 {
        r.push(chunk(i, 1, i as u32));
    }
    assert_eq!(r.chunks.len(), 8, "the history keeps every position; the store has the bytes");
    assert!(r.manifests.contains_key(&ObjectId([1; 32])));
    // A new subscriber gets the last 500 bytes' worth: five chunks.
    assert_eq!(r.after(r.start_for(None)).map(|c| c.index), Some(3));
    // One that comes back gets everything from where it was, however far
    // behind the back buffer; past what the bridge has of an object, the
    // live end; an unknown chunk, the back buffer's start.
    assert_eq!(r.after(r.start_for(Some((ObjectId([1; 32]), 1)))).map(|c| c.index), Some(1));
    assert_eq!(r.after(r.start_for(Some((ObjectId([1; 32]), 5)))).map(|c| c.index), Some(5));
    assert_eq!(r.after(r.start_for(Some((ObjectId([1; 32]), 9)))).map(|c| c.index), None);
    assert_eq!(r.start_for(Some((ObjectId([1; 32]), 9))), Some(7));
    assert_eq!(r.after(r.start_for(Some((ObjectId([2; 32]), 0)))).map(|c| c.index), Some(3));
}

#[test]
fn the_history_is_bounded_and_an_object_that_leaves_it_loses_its_manifest() {
    let mut r = ring(u64::MAX);
    r.waiting.insert(ObjectId([1; 32]), Arc::from(&b"m1"[..]));
    for i in 0..3 {
        r.push(chunk(0, 1, i));
    }
    for i in 0..FEED_HISTORY as u32 {
        r.push(chunk(0, 2, i));
        assert!(r.chunks.len() <= FEED_HISTORY);
    }
    assert_eq!(r.chunks.len(), FEED_HISTORY);
    assert_eq!(r.bytes, 100 * FEED_HISTORY as u64);
    assert!(!r.manifests.contains_key(&ObjectId([1; 32])), "its chunks all left");
    // A subscriber that was at a chunk that left starts at the back buffer
    // (here all the history: its bound is u64::MAX bytes).
    assert_eq!(r.after(r.start_for(Some((ObjectId([1; 32]), 1)))).map(|c| c.index), Some(0));
    assert_eq!(r.next_seq, 3 + FEED_HISTORY as u64);
}

#[test]
fn the_back_buffer_is_the_last_seconds_of_the_channel() {
    let mut r = ring(1 << 20);
    r.keep.secs = Duration::from_secs(30);
    let t0 = Instant::now();
    // One chunk every 10 s: at 40 s, the chunk of 0 s is older than 30 s.
    for i in 0..5u32 {
        r.push(FeedChunk { at: t0 + Duration::from_secs(10 * u64::from(i)), ..chunk(0, 1, i) });
    }
    assert_eq!(r.after(r.start_for(None)).map(|c| c.index), Some(1));
    // A subscription asking for the older chunk still gets it.
    assert_eq!(r.after(r.start_for(Some((ObjectId([1; 32]), 0)))).map(|c| c.index), Some(0));
    assert_eq!(r.bytes, 500);
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

#[tokio::test]
async fn a_racer_that_never_answers_does_not_hold_back_the_next() {
    // The first handshake's flights all lost: it never answers. The second,
    // started 2 s later, does, and wins.
    let tries = std::sync::atomic::AtomicU32::new(0);
    let won = desert::race(Duration::from_secs(30), || {
        let n = tries.fetch_add(1, Relaxed);
        async move {
            if n == 0 {
                std::future::pending::<()>().await;
            }
            Ok::<u32, String>(n)
        }
    })
    .await;
    assert_eq!(won, Ok(1));
}
