//! Symbol digests, many at a time.
//!
//! A symbol's digest is the standard keyed BLAKE3 of its bytes, keyed by the
//! chunk hash, truncated to [`DIGEST_LEN`] bytes:
//! `BLAKE3-keyed(key = chunk hash, symbol)[..12]`.
//!
//! One 1280-byte input gets no SIMD parallelism from BLAKE3's public API (~1.2
//! GB/s here), which made digests cost as much as the RaptorQ coding itself. For
//! the default symbol size this module computes the same standard hash for many
//! symbols at once with blake3's `platform::hash_many` (16 inputs per AVX-512
//! pass): the first 1024-byte BLAKE3 chunk of every symbol, then the 256-byte
//! second chunk, then the root parent node, exactly as the BLAKE3 tree defines it.
//! `hash_many` is public but semver-exempt, so blake3 is pinned exactly and the
//! tests check this path against `blake3::keyed_hash` for every shape.

use crate::wire::{Hash, SymbolDigest, DIGEST_LEN};
use blake3::platform::{self, Platform};
use blake3::IncrementCounter;

// BLAKE3 domain flags (BLAKE3 spec, section 2.1).
const CHUNK_START: u8 = 1 << 0;
const CHUNK_END: u8 = 1 << 1;
const PARENT: u8 = 1 << 2;
const ROOT: u8 = 1 << 3;
const KEYED_HASH: u8 = 1 << 4;

/// The symbol size the batched path handles: one full BLAKE3 chunk plus 256 bytes.
const BATCHED_SIZE: usize = 1280;
const FIRST: usize = 1024;
const SECOND: usize = BATCHED_SIZE - FIRST;
/// Readable bytes kept after the last input of a `hash_many` call.
const SLACK: usize = 64;

fn truncate(h: &[u8]) -> SymbolDigest {
    let mut d = [0u8; DIGEST_LEN];
    d.copy_from_slice(&h[..DIGEST_LEN]);
    d
}

/// The digest of one symbol.
pub fn symbol_digest(chunk_hash: &Hash, data: &[u8]) -> SymbolDigest {
    truncate(blake3::keyed_hash(chunk_hash, data).as_bytes())
}

/// Digests of many symbols of one chunk, into `out` (one per symbol, in order).
/// Same result as [`symbol_digest`] on each, several times faster for 1280-byte
/// symbols.
pub fn symbol_digests(chunk_hash: &Hash, symbols: &[&[u8]], out: &mut Vec<SymbolDigest>) {
    out.clear();
    let batched = symbols.len() > 1 && symbols.iter().all(|s| s.len() == BATCHED_SIZE);
    if !batched {
        out.extend(symbols.iter().map(|s| symbol_digest(chunk_hash, s)));
        return;
    }
    // blake3's AVX-512 hash_many reads up to 48 bytes past the end of an input
    // (blake3's own callers always have more input after it). A symbol's
    // first 1024 bytes have its last 256 after them, so they are hashed in
    // place. Its last 256 bytes may end its allocation next to an unmapped
    // page: they go into one buffer, with slack after the last (a fifth of
    // the bytes; copying whole symbols cost the sender a third of its speed).
    let n = symbols.len();
    let firsts: Vec<&[u8; FIRST]> = symbols.iter().filter_map(|s| s[..FIRST].try_into().ok()).collect();
    let mut tails = Vec::with_capacity(n * SECOND + SLACK);
    for s in symbols {
        tails.extend_from_slice(&s[FIRST..]);
    }
    tails.resize(n * SECOND + SLACK, 0);
    let seconds: Vec<&[u8; SECOND]> =
        tails.chunks_exact(SECOND).take(n).filter_map(|s| s.try_into().ok()).collect();
    batched_digests(chunk_hash, &firsts, &seconds, out);
}

/// Readable bytes [`contiguous_digests`] wants after the last symbol.
pub const CONTIGUOUS_SLACK: usize = SLACK;

/// Digests of the `symbols.len() / t` symbols of `t` bytes laid end to end in
/// `symbols`, which has [`CONTIGUOUS_SLACK`] more bytes after the last: the
/// sender's whole encoded chunk, hashed without a copy.
pub fn contiguous_digests(chunk_hash: &Hash, symbols: &[u8], t: usize, out: &mut Vec<SymbolDigest>) {
    out.clear();
    let n = symbols.len().saturating_sub(SLACK) / t.max(1);
    let each = || symbols.chunks_exact(t).take(n);
    if t != BATCHED_SIZE || n < 2 {
        out.extend(each().map(|s| symbol_digest(chunk_hash, s)));
        return;
    }
    let firsts: Vec<&[u8; FIRST]> = each().filter_map(|s| s[..FIRST].try_into().ok()).collect();
    let seconds: Vec<&[u8; SECOND]> = each().filter_map(|s| s[FIRST..].try_into().ok()).collect();
    batched_digests(chunk_hash, &firsts, &seconds, out);
}

/// The batched BLAKE3 of 1280-byte symbols given as their two chunks, each
/// with at least SLACK readable bytes after it.
fn batched_digests(
    chunk_hash: &Hash,
    firsts: &[&[u8; FIRST]],
    seconds: &[&[u8; SECOND]],
    out: &mut Vec<SymbolDigest>,
) {
    let platform = Platform::detect();
    let key = platform::words_from_le_bytes_32(chunk_hash);
    let n = firsts.len();
    let mut cv0 = vec![0u8; 32 * n];
    let mut cv1 = vec![0u8; 32 * n];
    let chunk_flags = (KEYED_HASH, CHUNK_START, CHUNK_END);
    platform.hash_many(
        firsts,
        &key,
        0,
        IncrementCounter::No,
        chunk_flags.0,
        chunk_flags.1,
        chunk_flags.2,
        &mut cv0,
    );
    platform.hash_many(
        seconds,
        &key,
        1,
        IncrementCounter::No,
        chunk_flags.0,
        chunk_flags.1,
        chunk_flags.2,
        &mut cv1,
    );
    // The parent nodes, back to back, with the same slack.
    let mut parents = vec![0u8; 64 * n + SLACK];
    for ((p, a), b) in parents.chunks_exact_mut(64).zip(cv0.chunks_exact(32)).zip(cv1.chunks_exact(32)) {
        p[..32].copy_from_slice(a);
        p[32..].copy_from_slice(b);
    }
    let parent_refs: Vec<&[u8; 64]> =
        parents.chunks_exact(64).take(n).filter_map(|p| p.try_into().ok()).collect();
    let mut roots = vec![0u8; 32 * n];
    platform.hash_many(&parent_refs, &key, 0, IncrementCounter::No, KEYED_HASH | PARENT, 0, ROOT, &mut roots);
    out.extend(roots.chunks_exact(32).map(truncate));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batched_digests_equal_the_public_keyed_hash() {
        let key = *blake3::hash(b"chunk").as_bytes();
        for count in [2usize, 3, 15, 16, 17, 33, 100] {
            let data: Vec<u8> = (0..count * BATCHED_SIZE).map(|i| (i * 131 % 251) as u8).collect();
            let symbols: Vec<&[u8]> = data.chunks(BATCHED_SIZE).collect();
            let mut out = Vec::new();
            symbol_digests(&key, &symbols, &mut out);
            let expect: Vec<SymbolDigest> =
                symbols.iter().map(|s| truncate(blake3::keyed_hash(&key, s).as_bytes())).collect();
            assert_eq!(out, expect, "{count} symbols");
        }
    }

    #[test]
    fn contiguous_symbols_with_slack_hash_as_each_one_alone() {
        let key = *blake3::hash(b"chunk").as_bytes();
        for (t, count) in
            [(BATCHED_SIZE, 1usize), (BATCHED_SIZE, 2), (BATCHED_SIZE, 17), (BATCHED_SIZE, 100), (128, 5)]
        {
            let mut data: Vec<u8> = (0..count * t).map(|i| (i * 131 % 251) as u8).collect();
            data.resize(count * t + CONTIGUOUS_SLACK, 0);
            let mut out = Vec::new();
            contiguous_digests(&key, &data, t, &mut out);
            let expect: Vec<SymbolDigest> = data[..count * t]
                .chunks(t)
                .map(|s| truncate(blake3::keyed_hash(&key, s).as_bytes()))
                .collect();
            assert_eq!(out, expect, "{count} symbols of {t}");
        }
    }

    #[test]
    fn other_sizes_take_the_scalar_path_with_the_same_definition() {
        let key = [9u8; 32];
        let data = vec![3u8; 5 * 128];
        let symbols: Vec<&[u8]> = data.chunks(128).collect();
        let mut out = Vec::new();
        symbol_digests(&key, &symbols, &mut out);
        assert_eq!(out[4], truncate(blake3::keyed_hash(&key, &data[..128]).as_bytes()));
    }
}
