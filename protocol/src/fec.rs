//! Chunk coding: RaptorQ symbols, the symbol digest table, and decoding.
//!
//! One chunk is one RaptorQ source block (SBN 0) with K = ceil(len / T) source
//! symbols; the last symbol is zero-padded. The table covers ESIs 0..N_max
//! ([`n_max`]). A symbol's digest is [`crate::digest::symbol_digest`]: the
//! keyed BLAKE3 of the symbol under the chunk hash. A page's hash is
//! `BLAKE3-derive-key("hubcast table page v1", digests)`.
//!
//! [`ChunkDecoder::add_and_decode`] is the only place the RaptorQ decoder is called. Its callers
//! pass only symbols whose digests matched a table committed to by a verified
//! ticket, so every length and ESI it sees has been checked against signed values.

use crate::digest::{contiguous_digests, CONTIGUOUS_SLACK};
use crate::wire::{n_max, page_count, source_symbols, Hash, DIGESTS_PER_PAGE, DIGEST_LEN};
use raptorq::{
    EncodingPacket, ObjectTransmissionInformation, PayloadId, SourceBlockDecoder, SourceBlockEncoder,
};

const PAGE_CONTEXT: &str = "hubcast table page v1";
const ALIGNMENT: u8 = 8;

pub fn page_hash(digests: &[u8]) -> Hash {
    let mut h = blake3::Hasher::new_derive_key(PAGE_CONTEXT);
    h.update(digests);
    *h.finalize().as_bytes()
}

/// The ESIs covered by table page `page` of a chunk with `n_max` ESIs.
pub fn page_range(page: usize, n_max: u32) -> std::ops::Range<u32> {
    let start = (page * DIGESTS_PER_PAGE) as u32;
    start.min(n_max)..(start + DIGESTS_PER_PAGE as u32).min(n_max)
}

pub fn page_of(esi: u32) -> usize {
    esi as usize / DIGESTS_PER_PAGE
}

fn oti(k: u32, symbol_size: u16) -> ObjectTransmissionInformation {
    ObjectTransmissionInformation::new(u64::from(k) * u64::from(symbol_size), symbol_size, 1, 1, ALIGNMENT)
}

/// A chunk made ready to send: every symbol up to N_max and the digest table.
pub struct EncodedChunk {
    pub chunk_hash: Hash,
    pub chunk_len: u32,
    pub symbol_size: u16,
    pub k: u32,
    pub n_max: u32,
    /// N_max symbols of `symbol_size` bytes, back to back, in ESI order.
    symbols: Vec<u8>,
    /// N_max digests, back to back.
    digests: Vec<u8>,
    pub page_hashes: Vec<Hash>,
}

impl EncodedChunk {
    /// Encode `data` (1..=MAX_CHUNK_LEN bytes; the caller's chunking guarantees it)
    /// with symbol size `t` (a [`crate::wire::valid_symbol_size`]).
    pub fn encode(data: &[u8], t: u16) -> EncodedChunk {
        let chunk_len = data.len() as u32;
        let k = source_symbols(chunk_len, t);
        let n_max = n_max(k);
        let ts = t as usize;
        let mut symbols = Vec::with_capacity(n_max as usize * ts + CONTIGUOUS_SLACK);
        symbols.extend_from_slice(data);
        symbols.resize(k as usize * ts, 0);
        let encoder = SourceBlockEncoder::new(0, &oti(k, t), &symbols);
        for p in encoder.repair_packets(0, n_max - k) {
            symbols.extend_from_slice(p.data());
        }
        let chunk_hash = *blake3::hash(data).as_bytes();
        // Hashed in place: the slack the batched digests read past the last
        // symbol, then cut off again (the capacity stays).
        let end = symbols.len();
        symbols.resize(end + CONTIGUOUS_SLACK, 0);
        let mut each = Vec::with_capacity(n_max as usize);
        contiguous_digests(&chunk_hash, &symbols, ts, &mut each);
        symbols.truncate(end);
        let digests: Vec<u8> = each.concat();
        let page_hashes = digests.chunks(DIGESTS_PER_PAGE * DIGEST_LEN).map(page_hash).collect();
        debug_assert_eq!(page_count(n_max), digests.len().div_ceil(DIGESTS_PER_PAGE * DIGEST_LEN));
        EncodedChunk { chunk_hash, chunk_len, symbol_size: t, k, n_max, symbols, digests, page_hashes }
    }

    pub fn symbol(&self, esi: u32) -> &[u8] {
        let ts = self.symbol_size as usize;
        &self.symbols[esi as usize * ts..(esi as usize + 1) * ts]
    }

    /// The digests of page `page`, as they go on the wire.
    pub fn page(&self, page: usize) -> &[u8] {
        let r = page_range(page, self.n_max);
        &self.digests[r.start as usize * DIGEST_LEN..r.end as usize * DIGEST_LEN]
    }

    pub fn pages(&self) -> usize {
        self.page_hashes.len()
    }
}

/// Decodes one chunk from verified symbols, incrementally: symbols handed to it
/// stay with it, so after an attempt that needed more, only the new ones are added.
///
/// This is the only place the RaptorQ decoder is used. Preconditions, all
/// established by the verified ticket and table: `t` is a valid symbol size,
/// `chunk_len` gives K ≤ MAX_SOURCE_SYMBOLS, every ESI is < N_max and given once,
/// every symbol is exactly `t` bytes and matched its digest.
pub struct ChunkDecoder {
    inner: SourceBlockDecoder,
    chunk_len: u32,
    chunk_hash: Hash,
    held: usize,
}

impl ChunkDecoder {
    pub fn new(chunk_len: u32, t: u16, chunk_hash: Hash) -> Self {
        let k = source_symbols(chunk_len, t);
        let inner = SourceBlockDecoder::new(0, &oti(k, t), u64::from(k) * u64::from(t));
        ChunkDecoder { inner, chunk_len, chunk_hash, held: 0 }
    }

    /// Symbols handed over so far.
    pub fn held(&self) -> usize {
        self.held
    }

    /// Add symbols and try to decode. `None` while these symbols do not determine
    /// the block, or if the result does not hash to the chunk hash (the caller tells
    /// the two apart: with every source symbol held, decoding is a copy).
    pub fn add_and_decode(&mut self, symbols: impl IntoIterator<Item = (u32, Vec<u8>)>) -> Option<Vec<u8>> {
        let held = &mut self.held;
        let packets = symbols.into_iter().map(|(esi, data)| {
            *held += 1;
            EncodingPacket::new(PayloadId::new(0, esi), data)
        });
        let mut data = self.inner.decode(packets)?;
        data.truncate(self.chunk_len as usize);
        (blake3::hash(&data).as_bytes() == &self.chunk_hash).then_some(data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_pages_cover_every_esi_once() {
        let data = vec![7u8; 100_000];
        let c = EncodedChunk::encode(&data, 1280);
        let total: usize = (0..c.pages()).map(|p| c.page(p).len() / DIGEST_LEN).sum();
        assert_eq!(total, c.n_max as usize);
        for esi in [0, 99, 100, c.n_max - 1] {
            assert!(page_range(page_of(esi), c.n_max).contains(&esi));
        }
    }
}
