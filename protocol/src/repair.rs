//! Repair planning for one chunk, sans IO: which peers to ask for which ESIs.
//!
//! Groundwork for peer repair. When a chunk's multicast window closes short of
//! what decoding needs, the hub asks peers that decoded the chunk (they can make
//! any ESI below N_max) for what it lacks:
//!
//! - how many: K + `margin` − held, so the bytes requested stay close to the bytes
//!   missing (never the whole chunk from one peer when a few symbols are missing);
//! - which: the missing source ESIs first (with every source symbol held, decoding
//!   is a copy), then fresh repair ESIs above the ones already tried;
//! - from whom: up to `max_peers` peers, same island first, then lowest RTT, then
//!   fewest strikes; peers already banned are not asked;
//! - split: contiguous slices of the wanted ESIs, one per peer, so the requests are
//!   disjoint and each is a few ranges.
//!
//! Planning again after a timeout or refusal is the caller's: it passes what it
//! holds then and the peers still worth asking.

use crate::peer_wire::{EsiRanges, MAX_RANGES};
use std::time::Duration;

/// What the planner needs to know about a peer that holds the chunk decoded.
#[derive(Clone, Debug, PartialEq)]
pub struct Candidate<P> {
    pub peer: P,
    pub same_island: bool,
    pub rtt: Duration,
    /// Digest mismatches charged to this peer (a refusal for not holding is not one).
    pub strikes: u32,
}

/// One request of the plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ask<P> {
    pub peer: P,
    pub esis: EsiRanges,
}

/// Plan the requests for one chunk.
///
/// `held[esi]` says which ESIs the hub holds verified (its length is N_max);
/// `k` is the chunk's source symbol count; ESIs in `avoid` (asked before without
/// answer) are not asked again. Returns no asks when nothing is needed or no peer
/// can serve.
pub fn plan<P: Clone>(
    k: u32,
    held: &[bool],
    avoid: &[bool],
    margin: u32,
    max_peers: usize,
    candidates: &[Candidate<P>],
) -> Vec<Ask<P>> {
    let have = held.iter().filter(|h| **h).count() as u32;
    let need = (k + margin).saturating_sub(have) as usize;
    if need == 0 || max_peers == 0 || candidates.is_empty() {
        return Vec::new();
    }
    let n_max = held.len() as u32;
    let skip = |esi: u32| held[esi as usize] || avoid.get(esi as usize).copied().unwrap_or(false);
    // Missing source symbols first, then repair symbols.
    let wanted: Vec<u32> = (0..k.min(n_max)).chain(k..n_max).filter(|e| !skip(*e)).take(need).collect();
    if wanted.is_empty() {
        return Vec::new();
    }
    let mut order: Vec<&Candidate<P>> = candidates.iter().collect();
    order.sort_by_key(|c| (!c.same_island, c.rtt, c.strikes));
    let peers = order.len().min(max_peers).min(wanted.len());
    let per_peer = wanted.len().div_ceil(peers);
    let mut asks = Vec::new();
    for (slice, c) in wanted.chunks(per_peer).zip(order) {
        for esis in ranges(slice) {
            asks.push(Ask { peer: c.peer.clone(), esis });
        }
    }
    asks
}

/// Increasing ESIs as requests of at most MAX_RANGES ranges each (scattered
/// holes make many ranges; a peer then gets several requests).
fn ranges(esis: &[u32]) -> Vec<EsiRanges> {
    let mut runs: Vec<(u32, u16)> = Vec::new();
    for &e in esis {
        match runs.last_mut() {
            Some((first, n)) if *first + u32::from(*n) == e && *n < u16::MAX => *n += 1,
            _ => runs.push((e, 1)),
        }
    }
    // Invariant: the ESIs are increasing and below N_max, so each group of at most
    // MAX_RANGES runs is a valid request.
    runs.chunks(MAX_RANGES).filter_map(|group| EsiRanges::new(group.to_vec())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(name: &'static str, same_island: bool, rtt_ms: u64, strikes: u32) -> Candidate<&'static str> {
        Candidate { peer: name, same_island, rtt: Duration::from_millis(rtt_ms), strikes }
    }

    #[test]
    fn asks_for_the_missing_source_symbols_first_split_disjoint_across_peers() {
        let k = 100;
        let n_max = crate::wire::n_max(k) as usize;
        let mut held = vec![false; n_max];
        for (esi, h) in held.iter_mut().enumerate().take(100) {
            *h = esi % 10 != 0; // 10 source symbols missing
        }
        let peers =
            [peer("far", false, 5, 0), peer("near-slow", true, 40, 0), peer("near-fast", true, 10, 0)];
        let asks = plan(k, &held, &[], 4, 2, &peers);
        // 14 wanted (K + 4 - 90): the 10 missing source ESIs, then 4 repair ESIs.
        assert_eq!(asks.iter().map(|a| a.peer).collect::<Vec<_>>(), ["near-fast", "near-slow"]);
        let all: Vec<u32> = asks.iter().flat_map(|a| a.esis.iter().collect::<Vec<_>>()).collect();
        let mut expect: Vec<u32> = (0..100).filter(|e| e % 10 == 0).collect();
        expect.extend(100..104);
        assert_eq!(all, expect, "exactly what is missing plus the margin, each ESI once");
    }

    #[test]
    fn bytes_requested_stay_close_to_bytes_missing() {
        let k = 820;
        let n_max = crate::wire::n_max(k) as usize;
        for missing in [1usize, 5, 40, 300] {
            let mut held = vec![false; n_max];
            held[..k as usize].iter_mut().for_each(|h| *h = true);
            held[..missing].iter_mut().for_each(|h| *h = false);
            let asks = plan(
                k,
                &held,
                &[],
                2,
                3,
                &[peer("a", true, 1, 0), peer("b", true, 2, 0), peer("c", true, 3, 0)],
            );
            let asked: u32 = asks.iter().map(|a| a.esis.count()).sum();
            assert_eq!(asked as usize, missing + 2, "missing {missing}");
        }
    }

    #[test]
    fn nothing_is_asked_when_nothing_is_needed_or_nobody_can_serve() {
        let held = vec![true; 40];
        assert!(plan(16, &held, &[], 2, 3, &[peer("a", true, 1, 0)]).is_empty());
        let held = vec![false; 40];
        assert!(plan::<&str>(16, &held, &[], 2, 3, &[]).is_empty());
    }

    #[test]
    fn esis_asked_before_are_not_asked_again() {
        let k = 16;
        let held = vec![false; crate::wire::n_max(k) as usize];
        let mut avoid = vec![false; held.len()];
        avoid[..8].iter_mut().for_each(|a| *a = true);
        let asks = plan(k, &held, &avoid, 0, 1, &[peer("a", true, 1, 0)]);
        let asked: Vec<u32> = asks[0].esis.iter().collect();
        assert_eq!(asked, (8..24).collect::<Vec<_>>());
    }

    #[test]
    fn scattered_holes_become_several_requests_and_none_is_dropped() {
        let k = 2048;
        let n_max = crate::wire::n_max(k) as usize;
        let mut held = vec![false; n_max];
        for (esi, h) in held.iter_mut().enumerate().take(k as usize) {
            *h = esi % 2 == 1; // every other source symbol missing: 1024 runs
        }
        let asks = plan(k, &held, &[], 0, 1, &[peer("a", true, 1, 0)]);
        assert!(asks.len() >= 4, "{} requests", asks.len());
        assert!(asks.iter().all(|a| a.peer == "a" && a.esis.ranges().len() <= MAX_RANGES));
        let asked: Vec<u32> = asks.iter().flat_map(|a| a.esis.iter().collect::<Vec<_>>()).collect();
        assert_eq!(asked, (0..k).filter(|e| e % 2 == 0).collect::<Vec<_>>());
    }
}
