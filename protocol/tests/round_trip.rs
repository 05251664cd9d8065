//! Property: whatever the broadcaster sends, a receiver that loses no more than
//! the FEC overhead ends with bit-identical chunks, for every interesting size.

mod support;

use hubcast_protocol::sender::repair_count;
use hubcast_protocol::wire::{decode, source_symbols, Datagram};
use hubcast_protocol::ObjectId;
use proptest::prelude::*;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use support::*;

const T: u16 = 128;
const K: usize = 16;
const CHUNK: u32 = K as u32 * T as u32;
const OVERHEAD: f64 = 0.25; // 4 repair symbols per 16

/// 0 bytes, 1 byte, one symbol, K symbols (= one chunk), K+1 symbols,
/// one chunk + 1 byte, several chunks, and the off-by-ones around them.
fn interesting_sizes() -> Vec<usize> {
    let t = T as usize;
    let c = CHUNK as usize;
    vec![0, 1, t - 1, t, t + 1, (K - 1) * t, c, c + 1, c + t, 3 * c + 17]
}

fn symbol_esi(d: &[u8]) -> Option<(ObjectId, u32, u32)> {
    match decode(d).ok()?.1 {
        Datagram::Symbol(s) => Some((s.object_id, s.chunk_index, s.esi)),
        _ => None,
    }
}

/// Send one round; drop `lose` symbols of every chunk, chosen by `seed`.
fn run(size: usize, lose: usize, seed: u64) -> (Received, Vec<u8>, hubcast_protocol::receiver::Receiver) {
    let ch = channel(1);
    let objects = [content("f", size, seed as u8)];
    let datagrams = broadcast(&ch, &objects, CHUNK, T, OVERHEAD, 1);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    // Pick `lose` symbol datagrams per chunk to drop.
    let mut by_chunk: std::collections::BTreeMap<u32, Vec<usize>> = Default::default();
    for (i, d) in datagrams.iter().enumerate() {
        if let Some((_, chunk, _)) = symbol_esi(d) {
            by_chunk.entry(chunk).or_default().push(i);
        }
    }
    let mut dropped = std::collections::HashSet::new();
    for idx in by_chunk.values() {
        dropped.extend(idx.choose_multiple(&mut rng, lose).copied());
    }
    let mut rx = receiver(ch.anchor);
    let mut got = Received::default();
    let kept = datagrams.into_iter().enumerate().filter(|(i, _)| !dropped.contains(i)).map(|(_, d)| d);
    receive(&mut rx, kept, &mut got);
    (got, objects[0].bytes.clone(), rx)
}

#[test]
fn every_interesting_size_round_trips_without_loss() {
    for size in interesting_sizes() {
        let (got, src, rx) = run(size, 0, 3);
        assert_eq!(got.object(ObjectId::of(&src), size, CHUNK).as_deref(), Some(&src[..]), "size {size}");
        assert_eq!(got.manifests, vec!["f".to_string()], "size {size}");
        assert_eq!(rx.drops().harmful(), 0, "size {size}: {:?}", rx.drops());
    }
}

#[test]
fn default_parameters_round_trip_a_multi_chunk_object_at_5_percent_loss() {
    // 1 MiB chunks of 1280-byte symbols with 10% overhead, as the broadcaster runs.
    let ch = channel(2);
    let size = (1 << 20) * 2 + 4321;
    let objects = [content("big", size, 9)];
    let datagrams = broadcast(&ch, &objects, 1 << 20, 1280, 0.10, 1);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
    let mut rx = receiver(ch.anchor);
    let mut got = Received::default();
    receive(&mut rx, datagrams.into_iter().filter(|_| rand::Rng::gen_bool(&mut rng, 0.95)), &mut got);
    let id = ObjectId::of(&objects[0].bytes);
    assert_eq!(got.object(id, size, 1 << 20).as_deref(), Some(&objects[0].bytes[..]));
}

#[test]
fn losing_exactly_the_overhead_decodes_in_one_round_almost_always() {
    // RFC 6330: decoding from exactly K symbols fails with probability ≤ 1%.
    let repair = repair_count(K as u32, OVERHEAD) as usize;
    let trials = 200;
    let decoded = (0..trials)
        .filter(|seed| {
            let (got, src, _) = run(CHUNK as usize, repair, *seed);
            got.object(ObjectId::of(&src), src.len(), CHUNK).is_some()
        })
        .count();
    assert!(decoded * 100 >= trials as usize * 95, "decoded {decoded} of {trials}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Losing up to the overhead less a two-symbol margin always decodes.
    #[test]
    fn any_loss_within_the_overhead_decodes(size_idx in 0usize..10, lose_frac in 0.0f64..=1.0, seed in any::<u64>()) {
        let size = interesting_sizes()[size_idx];
        let k_last = source_symbols((size % CHUNK as usize).max(1) as u32, T).min(K as u32);
        let budget = repair_count(k_last.min(K as u32), OVERHEAD).saturating_sub(2) as usize;
        let lose = (budget as f64 * lose_frac) as usize;
        let (got, src, rx) = run(size, lose, seed);
        prop_assert_eq!(got.object(ObjectId::of(&src), size, CHUNK), Some(src));
        prop_assert_eq!(rx.drops().harmful(), 0);
    }

    /// Whatever order datagrams arrive in, the receiver completes (pending buffer).
    #[test]
    fn any_arrival_order_round_trips(seed in any::<u64>()) {
        let ch = channel(4);
        let objects = [content("g", 2 * CHUNK as usize + 5, 1)];
        let mut datagrams = broadcast(&ch, &objects, CHUNK, T, OVERHEAD, 1);
        datagrams.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(seed));
        let mut rx = receiver(ch.anchor);
        let mut got = Received::default();
        receive(&mut rx, datagrams, &mut got);
        let id = ObjectId::of(&objects[0].bytes);
        prop_assert_eq!(got.object(id, objects[0].bytes.len(), CHUNK), Some(objects[0].bytes.clone()));
    }
}
