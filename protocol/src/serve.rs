//! Serving a chunk to peers, sans IO: a hub that holds a chunk decoded can make
//! any ESI below N_max, and sends it with the broadcaster's signed ticket and
//! table pages, so the asker checks served data exactly as data from multicast.
//!
//! Nothing unverified is served: a [`ChunkServer`] is only made from a chunk
//! whose bytes hash to the ticket's chunk hash, a repair symbol only once the
//! chunk re-encodes to the table the ticket commits to, and a chunk still being
//! collected serves only symbols whose digests were checked.

use crate::digest::symbol_digests;
use crate::fec::{page_hash, page_of, page_range, EncodedChunk};
use crate::peer_wire::{EsiRanges, PeerMessage, RefuseReason};
use crate::receiver::Receiver;
use crate::wire::{self, Datagram};
use crate::ObjectId;
use std::sync::OnceLock;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ServeError {
    /// The ticket bytes are not a ticket.
    #[error("not a ticket")]
    NotATicket,
    /// The chunk does not re-encode to what the ticket commits to.
    #[error("chunk does not match its ticket")]
    Mismatch,
    /// An ESI at or above the chunk's N_max.
    #[error("ESI beyond N_max")]
    EsiOutOfRange,
    /// A table page the chunk does not have.
    #[error("no such table page")]
    PageOutOfRange,
}

/// A stored chunk's ticket and the table pages kept with it, each page
/// checked against the ticket's page hash. On its own it answers requests for
/// source symbols whose pages it keeps, from just those symbols' bytes, each
/// checked against its digest ([`KeptTable::answer_from`]): a peer serving a
/// few symbols reads a few symbols, not the chunk.
pub struct KeptTable {
    channel_tag: u64,
    object_id: ObjectId,
    index: u32,
    ticket: Vec<u8>,
    chunk_hash: wire::Hash,
    chunk_len: u32,
    page_hashes: Vec<wire::Hash>,
    symbol_size: u16,
    k: u32,
    n_max: u32,
    pages: Vec<Option<Vec<u8>>>,
}

impl KeptTable {
    /// From the ticket datagram as received and the pages kept with its
    /// chunk, (page index, digests). A page that does not hash to the ticket's
    /// page hash is left out.
    pub fn new(ticket_datagram: Vec<u8>, pages: Vec<(u16, Vec<u8>)>) -> Result<Self, ServeError> {
        let (header, parsed) = wire::decode(&ticket_datagram).map_err(|_| ServeError::NotATicket)?;
        let Datagram::Ticket(t) = parsed else { return Err(ServeError::NotATicket) };
        let t = t.body;
        let k = wire::source_symbols(t.chunk_len, t.symbol_size);
        let n_max = wire::n_max(k);
        if t.page_hashes.len() != wire::page_count(n_max) {
            return Err(ServeError::Mismatch);
        }
        let mut kept = vec![None; t.page_hashes.len()];
        for (g, digests) in pages {
            let g = usize::from(g);
            if t.page_hashes.get(g).is_some_and(|h| page_hash(&digests) == *h) {
                kept[g] = Some(digests);
            }
        }
        Ok(KeptTable {
            channel_tag: header.channel_tag,
            object_id: t.object_id,
            index: t.chunk_index,
            chunk_hash: t.chunk_hash,
            chunk_len: t.chunk_len,
            page_hashes: t.page_hashes.to_vec(),
            symbol_size: t.symbol_size,
            k,
            n_max,
            pages: kept,
            ticket: ticket_datagram,
        })
    }

    /// The byte ranges of the chunk that answer `req` without the rest of it;
    /// `None` unless every ESI asked is a source symbol whose page is kept,
    /// and every page asked is kept.
    pub fn ranges_for(&self, req: &ChunkRequest) -> Option<Vec<std::ops::Range<u64>>> {
        let pages_kept = req.table.is_none_or(|pages| {
            (0..32).filter(|g| pages & (1 << g) != 0).all(|g| self.pages.get(g).is_some_and(Option::is_some))
        });
        let esis_kept = req.esis.iter().all(|e| e < self.k && self.pages[page_of(e)].is_some());
        if !pages_kept || !esis_kept || req.esis.count() == 0 {
            return None;
        }
        let t = u64::from(self.symbol_size);
        let end = u64::from(self.chunk_len);
        let ranges = req.esis.ranges().iter().map(|(first, n)| {
            let start = u64::from(*first) * t;
            start..(start + u64::from(*n) * t).min(end)
        });
        Some(ranges.collect())
    }

    /// The answer to `req` from the bytes of [`KeptTable::ranges_for`], in
    /// order. Every symbol is checked against its kept digest first: a
    /// mismatch (a damaged store) is refused whole.
    pub fn answer_from(&self, req: &ChunkRequest, bytes: &[Vec<u8>]) -> Result<Vec<Vec<u8>>, ServeError> {
        if bytes.len() != req.esis.ranges().len() {
            return Err(ServeError::Mismatch);
        }
        let t = usize::from(self.symbol_size);
        let mut symbols: Vec<std::borrow::Cow<'_, [u8]>> = Vec::with_capacity(req.esis.count() as usize);
        for ((_, n), range) in req.esis.ranges().iter().zip(bytes) {
            for i in 0..usize::from(*n) {
                let s = range.get(i * t..).ok_or(ServeError::Mismatch)?;
                symbols.push(if s.len() >= t {
                    s[..t].into()
                } else {
                    let mut padded = s.to_vec();
                    padded.resize(t, 0);
                    padded.into()
                });
            }
        }
        let refs: Vec<&[u8]> = symbols.iter().map(|s| s.as_ref()).collect();
        let mut digests = Vec::with_capacity(refs.len());
        symbol_digests(&self.chunk_hash, &refs, &mut digests);
        for (esi, digest) in req.esis.iter().zip(&digests) {
            let page =
                self.pages.get(page_of(esi)).and_then(Option::as_deref).ok_or(ServeError::PageOutOfRange)?;
            let at = (esi as usize % wire::DIGESTS_PER_PAGE) * wire::DIGEST_LEN;
            if page.get(at..at + wire::DIGEST_LEN) != Some(&digest[..]) {
                return Err(ServeError::Mismatch);
            }
        }
        let mut out = Vec::new();
        if let Some(pages) = req.table {
            out.push(self.ticket.clone());
            for (g, page) in self.pages.iter().enumerate().filter(|(g, _)| pages & (1 << g) != 0) {
                let page = page.as_deref().ok_or(ServeError::PageOutOfRange)?;
                out.push(self.page_datagram(g, page));
            }
        }
        out.extend(req.esis.iter().zip(&refs).map(|(esi, symbol)| self.symbol_datagram(esi, symbol)));
        Ok(out)
    }

    fn page_datagram(&self, g: usize, digests: &[u8]) -> Vec<u8> {
        let mut d = Vec::new();
        wire::encode_table_page(&mut d, self.channel_tag, &self.object_id, self.index, g as u16, digests);
        d
    }

    fn symbol_datagram(&self, esi: u32, symbol: &[u8]) -> Vec<u8> {
        let mut d = Vec::with_capacity(wire::SYMBOL_HEADER_LEN + symbol.len());
        wire::encode_symbol(&mut d, self.channel_tag, &self.object_id, self.index, esi, symbol);
        d
    }
}

pub struct ChunkServer {
    table: KeptTable,
    /// The chunk: source symbol `esi` is a slice of it, but for a last
    /// symbol that the chunk fills only in part, which is `tail`.
    source: Vec<u8>,
    /// The last source symbol zero-padded to T, when the chunk is not a
    /// whole number of symbols (kept apart: padding the chunk would copy it).
    tail: Vec<u8>,
    /// The K source symbols' digests, made the first time a page of them is
    /// asked for, once every page of source digests only matched the ticket.
    source_digests: OnceLock<Result<Vec<u8>, ServeError>>,
    /// Every symbol up to N_max and the whole table, made the first time a
    /// repair ESI or a page that lists one is asked for.
    encoded: OnceLock<Result<EncodedChunk, ServeError>>,
}

impl ChunkServer {
    /// From the ticket datagram as received and the chunk's bytes, checked
    /// against the ticket's chunk hash.
    ///
    /// Cheap (one BLAKE3 pass): source symbols are served as slices of the
    /// chunk. The RaptorQ encoding, and its check against every page hash of
    /// the ticket, waits until a repair symbol or a page with repair digests is
    /// asked for; most repair asks only for lost source symbols.
    pub fn new(ticket_datagram: Vec<u8>, chunk: Vec<u8>) -> Result<Self, ServeError> {
        let hash = *blake3::hash(&chunk).as_bytes();
        Self::from_stored(KeptTable::new(ticket_datagram, Vec::new())?, chunk, hash)
    }

    /// From a chunk a store kept, with its ticket and kept pages: `hash` is
    /// the chunk's BLAKE3 as the store computed it when it read the chunk
    /// (compared with the ticket's here, not computed again). Kept pages are
    /// served as they are; the others are made from the chunk when asked for.
    pub fn from_stored(table: KeptTable, chunk: Vec<u8>, hash: wire::Hash) -> Result<Self, ServeError> {
        if chunk.len() != table.chunk_len as usize || hash != table.chunk_hash {
            return Err(ServeError::Mismatch);
        }
        let symbol_size = usize::from(table.symbol_size);
        let whole = chunk.len() / symbol_size * symbol_size;
        let mut tail = chunk[whole..].to_vec();
        if !tail.is_empty() {
            tail.resize(symbol_size, 0);
        }
        Ok(ChunkServer {
            table,
            source: chunk,
            tail,
            source_digests: OnceLock::new(),
            encoded: OnceLock::new(),
        })
    }

    pub fn ticket(&self) -> &[u8] {
        &self.table.ticket
    }

    pub fn n_max(&self) -> u32 {
        self.table.n_max
    }

    fn source_symbol(&self, esi: u32) -> &[u8] {
        let t = self.table.symbol_size as usize;
        self.source.get(esi as usize * t..(esi as usize + 1) * t).unwrap_or(&self.tail)
    }

    /// The full encoding, made once; refused if it does not match the ticket's
    /// table (then this hub's RaptorQ disagrees with the broadcaster's).
    fn encoded(&self) -> Result<&EncodedChunk, ServeError> {
        self.encoded
            .get_or_init(|| {
                let e = EncodedChunk::encode(&self.source, self.table.symbol_size);
                if e.page_hashes != self.table.page_hashes {
                    return Err(ServeError::Mismatch);
                }
                Ok(e)
            })
            .as_ref()
            .map_err(|e| *e)
    }

    /// The source symbols' digests, back to back; refused if a page of them
    /// does not match the ticket.
    fn source_digests(&self) -> Result<&[u8], ServeError> {
        self.source_digests
            .get_or_init(|| {
                let symbols: Vec<&[u8]> = (0..self.table.k).map(|e| self.source_symbol(e)).collect();
                let mut each = Vec::with_capacity(symbols.len());
                symbol_digests(&self.table.chunk_hash, &symbols, &mut each);
                let digests = each.concat();
                let page_len = wire::DIGESTS_PER_PAGE * wire::DIGEST_LEN;
                let whole_pages = self.table.k as usize / wire::DIGESTS_PER_PAGE;
                for (page, hash) in digests.chunks(page_len).zip(&self.table.page_hashes).take(whole_pages) {
                    if page_hash(page) != *hash {
                        return Err(ServeError::Mismatch);
                    }
                }
                Ok(digests)
            })
            .as_deref()
            .map_err(|e| *e)
    }

    /// Table page datagrams for the pages set in `pages` (bit g = page g).
    /// A kept page is served as kept; else a page of source digests only comes
    /// from the chunk's source symbols, and one that lists repair digests from
    /// the full encoding.
    pub fn table_pages(&self, pages: u32) -> Result<Vec<Vec<u8>>, ServeError> {
        let count = self.table.page_hashes.len();
        if count < 32 && pages >> count != 0 {
            return Err(ServeError::PageOutOfRange);
        }
        let mut out = Vec::new();
        for g in (0..count).filter(|g| pages & (1 << g) != 0) {
            let range = page_range(g, self.table.n_max);
            let page = if let Some(kept) = &self.table.pages[g] {
                kept.as_slice()
            } else if range.end <= self.table.k {
                let digests = self.source_digests()?;
                &digests[range.start as usize * wire::DIGEST_LEN..range.end as usize * wire::DIGEST_LEN]
            } else {
                self.encoded()?.page(g)
            };
            out.push(self.table.page_datagram(g, page));
        }
        Ok(out)
    }

    /// Symbol datagrams for the requested ESIs.
    pub fn symbols(&self, esis: &EsiRanges) -> Result<Vec<Vec<u8>>, ServeError> {
        if esis.iter().any(|e| e >= self.table.n_max) {
            return Err(ServeError::EsiOutOfRange);
        }
        let encoded = if esis.iter().any(|e| e >= self.table.k) { Some(self.encoded()?) } else { None };
        Ok(esis
            .iter()
            .map(|esi| {
                let symbol = match encoded {
                    Some(e) => e.symbol(esi),
                    None => self.source_symbol(esi),
                };
                self.table.symbol_datagram(esi, symbol)
            })
            .collect())
    }
}

/// What a peer asks of one chunk on one stream: the ticket with table pages
/// (optional), and symbols.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChunkRequest {
    pub object_id: ObjectId,
    pub index: u32,
    /// The ticket and these table pages (bit g = page g).
    pub table: Option<u32>,
    pub esis: EsiRanges,
}

impl ChunkRequest {
    /// As peer messages: an optional table request, then the symbol request.
    pub fn to_messages(&self) -> Vec<PeerMessage> {
        let (object_id, chunk) = (self.object_id, self.index);
        let table = self.table.map(|pages| PeerMessage::TableRequest { object_id, chunk, pages });
        let symbols = PeerMessage::SymbolRequest { object_id, chunk, esis: self.esis.clone() };
        table.into_iter().chain([symbols]).collect()
    }

    /// From the messages of one stream; `None` unless they are one request as
    /// [`ChunkRequest::to_messages`] makes it.
    pub fn from_messages(messages: &[PeerMessage]) -> Option<ChunkRequest> {
        match messages {
            [PeerMessage::SymbolRequest { object_id, chunk, esis }] => {
                Some(ChunkRequest { object_id: *object_id, index: *chunk, table: None, esis: esis.clone() })
            }
            [PeerMessage::TableRequest { object_id: o1, chunk: c1, pages }, PeerMessage::SymbolRequest { object_id, chunk, esis }]
                if (o1, c1) == (object_id, chunk) =>
            {
                Some(ChunkRequest {
                    object_id: *object_id,
                    index: *chunk,
                    table: Some(*pages),
                    esis: esis.clone(),
                })
            }
            _ => None,
        }
    }
}

/// Answer a request: from the chunk decoded (`complete`: any ESI below N_max),
/// else from the symbols the receiver holds verified while it collects the chunk.
pub fn answer(
    req: &ChunkRequest,
    complete: Option<&ChunkServer>,
    collecting: &Receiver,
) -> Result<Vec<Vec<u8>>, RefuseReason> {
    match complete {
        Some(server) => answer_complete(req, server),
        None => answer_partial(req, collecting),
    }
}

/// Answer from a decoded chunk, in the order the asker can check it: ticket,
/// pages, symbols.
pub fn answer_complete(req: &ChunkRequest, server: &ChunkServer) -> Result<Vec<Vec<u8>>, RefuseReason> {
    let mut out = Vec::new();
    if let Some(pages) = req.table {
        out.push(server.ticket().to_vec());
        out.extend(server.table_pages(pages).map_err(|_| RefuseReason::Invalid)?);
    }
    out.extend(server.symbols(&req.esis).map_err(|_| RefuseReason::Invalid)?);
    Ok(out)
}

/// Answer from a chunk the receiver is still collecting: only what it holds
/// verified. Refused as not held when that is nothing.
pub fn answer_partial(req: &ChunkRequest, collecting: &Receiver) -> Result<Vec<Vec<u8>>, RefuseReason> {
    match collecting.serve_partial(req.object_id, req.index, req.table, Some(&req.esis)) {
        Some(datagrams) if !datagrams.is_empty() => Ok(datagrams),
        _ => Err(RefuseReason::NotHeld),
    }
}
