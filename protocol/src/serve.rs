//! Serving a chunk to peers, sans IO: a hub that holds a chunk decoded can make
//! any ESI below N_max, and sends it with the broadcaster's signed ticket and
//! table pages, so the asker checks served data exactly as data from multicast.
//!
//! Nothing unverified is served: a [`ChunkServer`] is only made from a chunk
//! whose bytes hash to the ticket's chunk hash, a repair symbol only once the
//! chunk re-encodes to the table the ticket commits to, and a chunk still being
//! collected serves only symbols whose digests were checked.

use crate::digest::symbol_digests;
use crate::fec::{page_hash, page_range, EncodedChunk};
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

pub struct ChunkServer {
    channel_tag: u64,
    object_id: ObjectId,
    index: u32,
    ticket: Vec<u8>,
    chunk_hash: wire::Hash,
    page_hashes: Vec<wire::Hash>,
    chunk_len: usize,
    symbol_size: u16,
    k: u32,
    n_max: u32,
    /// The chunk, zero-padded to K symbols: source symbol `esi` is a slice of it.
    source: Vec<u8>,
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
        let (header, parsed) = wire::decode(&ticket_datagram).map_err(|_| ServeError::NotATicket)?;
        let Datagram::Ticket(t) = parsed else { return Err(ServeError::NotATicket) };
        let t = t.body;
        if chunk.len() != t.chunk_len as usize || *blake3::hash(&chunk).as_bytes() != t.chunk_hash {
            return Err(ServeError::Mismatch);
        }
        let k = wire::source_symbols(t.chunk_len, t.symbol_size);
        let n_max = wire::n_max(k);
        if t.page_hashes.len() != wire::page_count(n_max) {
            return Err(ServeError::Mismatch);
        }
        let mut source = chunk;
        source.resize(k as usize * t.symbol_size as usize, 0);
        Ok(ChunkServer {
            channel_tag: header.channel_tag,
            object_id: t.object_id,
            index: t.chunk_index,
            chunk_hash: t.chunk_hash,
            page_hashes: t.page_hashes.to_vec(),
            chunk_len: t.chunk_len as usize,
            symbol_size: t.symbol_size,
            k,
            n_max,
            source,
            ticket: ticket_datagram,
            source_digests: OnceLock::new(),
            encoded: OnceLock::new(),
        })
    }

    pub fn ticket(&self) -> &[u8] {
        &self.ticket
    }

    pub fn n_max(&self) -> u32 {
        self.n_max
    }

    fn source_symbol(&self, esi: u32) -> &[u8] {
        let t = self.symbol_size as usize;
        &self.source[esi as usize * t..(esi as usize + 1) * t]
    }

    /// The full encoding, made once; refused if it does not match the ticket's
    /// table (then this hub's RaptorQ disagrees with the broadcaster's).
    fn encoded(&self) -> Result<&EncodedChunk, ServeError> {
        self.encoded
            .get_or_init(|| {
                let e = EncodedChunk::encode(&self.source[..self.chunk_len], self.symbol_size);
                if e.page_hashes != self.page_hashes {
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
                let symbols: Vec<&[u8]> = (0..self.k).map(|e| self.source_symbol(e)).collect();
                let mut each = Vec::with_capacity(symbols.len());
                symbol_digests(&self.chunk_hash, &symbols, &mut each);
                let digests = each.concat();
                let page_len = wire::DIGESTS_PER_PAGE * wire::DIGEST_LEN;
                let whole_pages = self.k as usize / wire::DIGESTS_PER_PAGE;
                for (page, hash) in digests.chunks(page_len).zip(&self.page_hashes).take(whole_pages) {
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
    /// A page of source digests only comes from the chunk's source symbols;
    /// one that lists repair digests, from the full encoding.
    pub fn table_pages(&self, pages: u32) -> Result<Vec<Vec<u8>>, ServeError> {
        let count = self.page_hashes.len();
        if count < 32 && pages >> count != 0 {
            return Err(ServeError::PageOutOfRange);
        }
        let mut out = Vec::new();
        for g in (0..count).filter(|g| pages & (1 << g) != 0) {
            let range = page_range(g, self.n_max);
            let page = if range.end <= self.k {
                let digests = self.source_digests()?;
                &digests[range.start as usize * wire::DIGEST_LEN..range.end as usize * wire::DIGEST_LEN]
            } else {
                self.encoded()?.page(g)
            };
            let mut d = Vec::new();
            wire::encode_table_page(&mut d, self.channel_tag, &self.object_id, self.index, g as u16, page);
            out.push(d);
        }
        Ok(out)
    }

    /// Symbol datagrams for the requested ESIs.
    pub fn symbols(&self, esis: &EsiRanges) -> Result<Vec<Vec<u8>>, ServeError> {
        if esis.iter().any(|e| e >= self.n_max) {
            return Err(ServeError::EsiOutOfRange);
        }
        let encoded = if esis.iter().any(|e| e >= self.k) { Some(self.encoded()?) } else { None };
        Ok(esis
            .iter()
            .map(|esi| {
                let symbol = match encoded {
                    Some(e) => e.symbol(esi),
                    None => self.source_symbol(esi),
                };
                let mut d = Vec::with_capacity(wire::SYMBOL_HEADER_LEN + self.symbol_size as usize);
                wire::encode_symbol(&mut d, self.channel_tag, &self.object_id, self.index, esi, symbol);
                d
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
