//! What the receiver lacks, as repair sees it: chunk progress, the needs
//! list, partial answers to peers, and where the multicast has passed.

use super::*;

impl Progress {
    /// The chunks of `m` the multicast has passed: `0..` this.
    fn passed_to(&self, m: &Manifest) -> u32 {
        let chunks = chunk_count(m.size, m.chunk_size);
        match (self.passed, self.quiet) {
            (true, _) => chunks,
            (false, true) => self.max_index.saturating_add(1).min(chunks),
            (false, false) => self.max_index.min(chunks),
        }
    }
}

/// Chunks [`Receiver::backlog_bytes`] looks at, at most, past those being
/// collected (a round's cost stays bounded with a large catalog).
pub const BACKLOG_SCAN: usize = 65_536;
/// Chunks readers wait for, remembered at once ([`Receiver::await_chunk`]).
pub const MAX_AWAITED: usize = 16;

impl Receiver {
    /// For a chunk being collected: K, and which ESIs are held (verified or
    /// waiting for their check), indexed by ESI up to N_max. What a repair plan
    /// starts from.
    pub fn chunk_progress(&self, object_id: ObjectId, index: u32) -> Option<(u32, &[bool])> {
        self.active.get(&(object_id, index)).map(|c| (c.k, c.have.as_slice()))
    }

    /// Whether a chunk is known to be decoded (by this run or the store).
    pub fn is_complete(&self, object_id: ObjectId, index: u32) -> bool {
        self.complete.contains(&(object_id, index))
    }

    /// What the hub still misses of chunks the multicast has passed, bytes:
    /// the symbols each chunk being collected lacks once its window closed,
    /// and the whole of each chunk passed without its ticket (of at most
    /// [`BACKLOG_SCAN`] chunks a round). What `rate::BehindMeter` watches:
    /// if it grows round after round, repair does not keep up.
    pub fn backlog_bytes(&self) -> u64 {
        let mut bytes = 0u64;
        for (key, c) in &self.active {
            if self.window_open(*key) || self.past_deadline(&key.0) {
                continue;
            }
            let short = c.target().saturating_sub(c.held() + c.candidates.len()) as u64;
            bytes += short * u64::from(c.ticket.symbol_size);
        }
        let mut scanned = 0usize;
        for (id, progress) in &self.progress {
            let Some(m) = self.manifests.get(id) else { continue };
            if self.past_deadline(id) || self.unwanted.contains(id) {
                continue;
            }
            for index in 0..progress.passed_to(m) {
                scanned += 1;
                if scanned > BACKLOG_SCAN {
                    return bytes;
                }
                let key = (*id, index);
                if !self.complete.contains(&key) && !self.active.contains_key(&key) {
                    let r = chunk_range(m.size, m.chunk_size, index);
                    bytes += r.end - r.start;
                }
            }
        }
        bytes
    }

    /// What repair could fill: every chunk being collected that holds too few
    /// symbols to decode, then up to `limit` chunks of recent objects that the
    /// multicast has passed without their ticket arriving here.
    pub fn needs(&self, limit: usize) -> Vec<ChunkNeed> {
        let mut out: Vec<ChunkNeed> = self
            .active
            .iter()
            .filter(|((id, _), c)| c.held() + c.candidates.len() < c.target() && !self.past_deadline(id))
            .map(|(key, c)| ChunkNeed {
                object_id: key.0,
                index: key.1,
                k: c.target() as u32,
                sources: c.k,
                n_max: c.n_max,
                held: c.have.clone(),
                pages: c
                    .pages
                    .iter()
                    .enumerate()
                    .filter(|(_, p)| p.is_some())
                    .fold(0u32, |m, (g, _)| m | 1 << g),
                has_ticket: true,
                window_open: self.window_open(*key),
                deadline_ms: self.manifests.get(&key.0).and_then(|m| m.live).map(|l| l.deadline_ms),
            })
            .collect();
        out.sort_by_key(|n| (n.object_id, n.index));
        let mut absent = Vec::new();
        // What a reader waits for, held nothing of yet.
        for &(id, index) in &self.awaited {
            let Some(m) = self.manifests.get(&id) else { continue };
            let key = (id, index);
            let skip = self.complete.contains(&key) || self.active.contains_key(&key);
            if !skip && !self.unwanted.contains(&id) && index < chunk_count(m.size, m.chunk_size) {
                absent.push(self.absent_need(id, index, m));
            }
        }
        let lost = self.lost.iter().filter(|k| !self.complete.contains(k) && !self.active.contains_key(k));
        for &(id, index) in lost {
            let Some(m) = self.manifests.get(&id) else { continue };
            if absent.len() >= limit {
                break;
            }
            if !self.awaited.contains(&(id, index)) {
                absent.push(self.absent_need(id, index, m));
            }
        }
        for (id, progress) in &self.progress {
            let Some(m) = self.manifests.get(id) else { continue };
            if self.past_deadline(id) || self.unwanted.contains(id) {
                continue;
            }
            for index in 0..progress.passed_to(m) {
                if absent.len() >= limit {
                    break;
                }
                let key = (*id, index);
                if self.complete.contains(&key)
                    || self.active.contains_key(&key)
                    || self.lost.contains(&key)
                    || self.awaited.contains(&key)
                {
                    continue;
                }
                absent.push(self.absent_need(*id, index, m));
            }
        }
        out.extend(absent);
        // What a reader waits for first, then live segments, the nearest
        // deadline first (a stable sort).
        out.sort_by_key(|n| {
            let waited = self.awaited.iter().position(|k| *k == (n.object_id, n.index));
            (waited.unwrap_or(usize::MAX), n.deadline_ms.unwrap_or(u64::MAX))
        });
        out
    }

    /// A chunk the receiver holds nothing of: everything is to be asked.
    pub(super) fn absent_need(&self, object_id: ObjectId, index: u32, m: &Manifest) -> ChunkNeed {
        let range = chunk_range(m.size, m.chunk_size, index);
        let k = wire::source_symbols((range.end - range.start) as u32, m.symbol_size);
        let n_max = wire::n_max(k);
        ChunkNeed {
            object_id,
            index,
            k,
            sources: k,
            n_max,
            held: vec![false; n_max as usize],
            pages: 0,
            has_ticket: false,
            window_open: false,
            deadline_ms: m.live.map(|l| l.deadline_ms),
        }
    }

    /// For a chunk being collected: its ticket, the table pages asked for that
    /// are held, and the verified symbols asked for that are held, as datagrams
    /// ready to send to a peer. `None` when the chunk is not being collected (or
    /// its symbols are inside the decoder). Unchecked symbols are never served.
    pub fn serve_partial(
        &self,
        object_id: ObjectId,
        index: u32,
        table: Option<u32>,
        esis: Option<&EsiRanges>,
    ) -> Option<Vec<Vec<u8>>> {
        let c = self.active.get(&(object_id, index)).filter(|c| c.decoder.is_none())?;
        let mut out = Vec::new();
        if let Some(pages) = table {
            out.push(c.ticket_raw.clone());
            for (g, digests) in c.pages.iter().enumerate() {
                if let Some(digests) = digests.as_ref().filter(|_| g < 32 && pages & (1 << g) != 0) {
                    let mut d = Vec::new();
                    wire::encode_table_page(&mut d, self.channel_tag, &object_id, index, g as u16, digests);
                    out.push(d);
                }
            }
        }
        if let Some(esis) = esis {
            let mut held: Vec<&(u32, Vec<u8>)> =
                c.verified.iter().filter(|(e, _)| esis.contains(*e)).collect();
            held.sort_by_key(|(e, _)| *e);
            for (esi, data) in held {
                let mut d = Vec::with_capacity(wire::SYMBOL_HEADER_LEN + data.len());
                wire::encode_symbol(&mut d, self.channel_tag, &object_id, index, *esi, data);
                out.push(d);
            }
        }
        Some(out)
    }

    /// Whether the multicast may still send a chunk: it has not gone past it.
    /// (Not "the last datagram was for it": datagrams reorder at chunk borders.)
    pub(super) fn window_open(&self, (id, index): ChunkKey) -> bool {
        self.progress.iter().find(|(o, _)| *o == id).is_some_and(|(_, p)| !p.passed && p.max_index <= index)
    }

    /// Repair data for a chunk has arrived: check it and decode if it now holds
    /// at least K symbols (the multicast window may be long closed).
    pub fn settle_chunk(&mut self, object_id: ObjectId, index: u32) {
        let r = self.settle((object_id, index));
        self.count(r);
    }

    /// The sender repeats an object's manifest after its last chunk: once the
    /// multicast has reached that chunk, a manifest closes the object's window
    /// (no need to wait for the last chunk to stall).
    pub(super) fn note_object_end(&mut self, id: ObjectId) {
        let Some(m) = self.manifests.get(&id) else { return };
        let chunks = chunk_count(m.size, m.chunk_size);
        if let Some((_, p)) = self.progress.iter_mut().find(|(o, _)| *o == id) {
            if p.max_index + 1 >= chunks {
                p.passed = true;
            }
        }
    }

    /// Whether this hub lacks chunks of `id` and has not seen the multicast
    /// pass all of it: it joined late, or it lost the multicast for a while
    /// (a bridge's feed, which took over, stopped short of the end). An
    /// unknown object counts.
    pub(super) fn lacks_unpassed(&self, id: ObjectId) -> bool {
        if self.progress.iter().any(|(o, p)| *o == id && p.passed) {
            return false;
        }
        let Some(m) = self.manifests.get(&id) else { return true };
        (0..chunk_count(m.size, m.chunk_size)).any(|i| !self.complete.contains(&(id, i)))
    }

    /// A reader waits for chunk `index` of `id` (a player reads a range the
    /// hub does not hold yet): [`Receiver::needs`] lists it first, so repair
    /// asks for it before the chunks it was going to ask for anyway. At most
    /// [`MAX_AWAITED`] are remembered, the newest.
    /// False when it changes nothing (it is the newest awaited already, or
    /// held).
    pub fn await_chunk(&mut self, id: ObjectId, index: u32) -> bool {
        let key = (id, index);
        if self.awaited.front() == Some(&key) || self.complete.contains(&key) {
            return false;
        }
        self.awaited.retain(|k| *k != key && !self.complete.contains(k));
        self.awaited.push_front(key);
        self.awaited.truncate(MAX_AWAITED);
        true
    }

    /// The hub's user asked for `id`: it is kept again, and every chunk of
    /// it this hub lacks is for repair now, not when the carousel comes
    /// round (which may be never: an on-demand object, a finished seed).
    pub fn fetch_now(&mut self, id: ObjectId) {
        self.set_unwanted(id, false);
        self.note_passed(id);
    }

    /// A verified manifest says the round has passed `id`: every chunk of it
    /// this hub lacks is for repair now.
    pub(super) fn note_passed(&mut self, id: ObjectId) {
        let Some(m) = self.manifests.get(&id) else { return };
        let last = chunk_count(m.size, m.chunk_size).saturating_sub(1);
        if let Some((_, p)) = self.progress.iter_mut().find(|(o, _)| *o == id) {
            p.passed = true;
            p.max_index = p.max_index.max(last);
            return;
        }
        self.progress.push_front((id, Progress { max_index: last, passed: true, quiet: false }));
        self.progress.truncate(RECENT_OBJECTS);
    }

    pub(super) fn note_progress(&mut self, (id, index): ChunkKey) {
        match self.progress.iter().position(|(o, _)| *o == id) {
            Some(0) => {}
            Some(at) => {
                let entry = self.progress.remove(at).map(|(_, p)| p).unwrap_or_default();
                self.progress.push_front((id, entry));
            }
            None => {
                self.progress.push_front((id, Progress::default()));
                self.progress.truncate(RECENT_OBJECTS);
            }
        }
        // The multicast is on `id` now: it has passed every other recent object.
        for (_, p) in self.progress.iter_mut().skip(1) {
            p.passed = true;
        }
        if let Some((_, p)) = self.progress.front_mut() {
            if index > p.max_index {
                // A chunk further on is the current one now.
                p.quiet = false;
            }
            p.max_index = p.max_index.max(index);
        }
    }
}
