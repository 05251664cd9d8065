//! Datagrams in: parse, verify, keep manifests and tickets, check pages and
//! symbols against signed digests, and decode chunks.

use super::*;

impl Receiver {
    /// Take one datagram. `unix_now` is wall-clock seconds, for expiry checks.
    /// What its header said, for the owner (`None`: it does not parse), read
    /// once here, whatever became of the datagram.
    pub fn handle_datagram(&mut self, unix_now: u64, datagram: &[u8]) -> Option<Heard> {
        self.stats.datagrams += 1;
        self.now_ms = self.now_ms.max(unix_now.saturating_mul(1000));
        let header = match wire::decode_header(datagram) {
            Ok(h) => h,
            Err(e) => {
                self.drops.add(DropReason::from(e));
                return None;
            }
        };
        let chunk = wire::peek_chunk(datagram, header.kind);
        if let Err(reason) = self.handle(unix_now, datagram, header, chunk) {
            self.drops.add(reason);
        }
        Some(Heard { relayed: header.relayed, chunk })
    }

    /// Take one datagram a peer (or the origin's repair) sent on request. It is
    /// checked exactly as multicast is; it only does not tell the receiver where
    /// the multicast is.
    pub fn handle_repair_datagram(&mut self, unix_now: u64, datagram: &[u8]) -> Option<Heard> {
        self.from_peer = true;
        let heard = self.handle_datagram(unix_now, datagram);
        self.from_peer = false;
        heard
    }

    pub(super) fn handle(
        &mut self,
        unix_now: u64,
        datagram: &[u8],
        header: wire::Header,
        key: Option<ChunkKey>,
    ) -> Result<(), DropReason> {
        if header.channel_tag != self.channel_tag {
            self.note_foreign(unix_now, header.kind, datagram);
            return Err(DropReason::WrongChannel);
        }
        // Feedback is about the channel, not a chunk: it moves no position.
        if header.kind == wire::Kind::Feedback {
            return self.handle_feedback(unix_now, datagram);
        }
        if header.kind == wire::Kind::CatalogRoot {
            return self.handle_catalog_root(unix_now, datagram);
        }
        if header.kind == wire::Kind::Revocations {
            return self.handle_revocations(datagram);
        }
        if header.kind == wire::Kind::RootRotation {
            return self.handle_rotation(datagram);
        }
        if !self.from_peer {
            self.quiet_ticks = 0;
            if let Some(previous) = self.current.filter(|c| Some(*c) != key) {
                // The sender has moved on from `previous`: decode it with what it has.
                let r = self.settle(previous);
                self.count(r);
            }
            self.current = key;
            if let Some(key) = key {
                self.note_progress(key);
            }
        }
        if key.is_some_and(|(id, _)| self.past_deadline(&id)) {
            return Err(DropReason::Late);
        }
        // An object the hub does not keep: its chunks are not collected (its
        // manifest still is: the channel still offers it).
        if key.is_some_and(|(id, _)| self.unwanted.contains(&id)) {
            return Err(DropReason::Unwanted);
        }
        // Tickets repeat three times a round: skip the repeats before parsing (a
        // ticket's certificate costs two curve-point decompressions to parse).
        if let (wire::Kind::Ticket, Some(key)) = (header.kind, key) {
            if self.complete.contains(&key) {
                return Err(DropReason::AlreadyComplete);
            }
            if self.active.get(&key).is_some_and(|a| a.ticket_raw == datagram) {
                return Err(DropReason::Duplicate);
            }
        }
        let (_, parsed) = wire::decode(datagram)?;
        match parsed {
            Datagram::Manifest(m) => {
                let id = m.body.object_id;
                if !self.from_peer {
                    self.note_object_end(id);
                }
                // The round has passed an object this hub did not see all of go
                // by (it joined later, or lost the multicast for a while): worth
                // a signature check, to learn what to repair.
                let passed_unseen = m.body.round_end && !self.from_peer && self.lacks_unpassed(id);
                let known = self.manifests.get(&id).is_some_and(|k| k.seq >= m.body.seq);
                // A repeat is verified again only when it names a newer tracker
                // (a hub restarted with its manifests stored learns it so).
                let new_tracker = m
                    .body
                    .tracker
                    .is_some_and(|t| self.tracker.is_none_or(|(seq, known)| known != t && m.body.seq >= seq));
                if known && !new_tracker && !passed_unseen {
                    return Err(DropReason::Duplicate);
                }
                // A live segment past its deadline: refused before spending a
                // signature check on it (a replay, or simply too late).
                if m.body.live.is_some_and(|l| l.deadline_ms < self.now_ms) {
                    return Err(DropReason::Late);
                }
                let m = self.verifier.verify_manifest(m, unix_now)?;
                if let Some(t) = m.tracker.filter(|_| self.tracker.is_none_or(|(seq, _)| m.seq >= seq)) {
                    self.tracker = Some((m.seq, t));
                }
                let accepted = if known { Err(DropReason::Duplicate) } else { self.accept_manifest(m) };
                if accepted.is_ok() {
                    self.keep_manifest_datagram(id, datagram);
                }
                if passed_unseen {
                    self.note_passed(id);
                }
                accepted
            }
            Datagram::Ticket(t) => {
                let key = (t.body.object_id, t.body.chunk_index);
                if self.complete.contains(&key) {
                    return Err(DropReason::AlreadyComplete);
                }
                if let Some(a) = self.active.get(&key) {
                    // Not a byte-for-byte repeat (checked above). The same chunk
                    // re-signed later (a new expiry) commits to the same table: a
                    // repeat. Anything else contradicts the ticket held.
                    let same = a.ticket.chunk_hash == t.body.chunk_hash
                        && a.ticket.page_hashes == t.body.page_hashes
                        && a.ticket.seq == t.body.seq;
                    return Err(if same { DropReason::Duplicate } else { DropReason::Inconsistent });
                }
                let t = self.verifier.verify_ticket(t, unix_now)?;
                self.accept_ticket(t, datagram.to_vec())
            }
            Datagram::TablePage(p) => self.handle_page(p),
            Datagram::Symbol(s) => self.handle_symbol(s),
            Datagram::Feedback(_)
            | Datagram::CatalogRoot(_)
            | Datagram::Revocations(_)
            | Datagram::RootRotation(_) => {
                unreachable!("feedback and the catalog's root are handled before the chunk's bookkeeping")
            }
        }
    }

    /// The broadcaster's echo of the loss reports: kept when it verifies and
    /// is newer than the one held. A copy or an older one (reordered on the
    /// way, or replayed) is a duplicate, unverified: it would change nothing.
    fn handle_feedback(&mut self, unix_now: u64, datagram: &[u8]) -> Result<(), DropReason> {
        let Datagram::Feedback(f) = wire::decode(datagram)?.1 else { return Err(DropReason::BadKind) };
        if self.feedback.is_some_and(|held| held.seq >= f.body.seq) {
            return Err(DropReason::Duplicate);
        }
        self.feedback = Some(self.verifier.verify_feedback(f, unix_now)?);
        Ok(())
    }

    /// The catalog's signed root: taken when it verifies and its version is
    /// higher than the one held (or stored before: restarts do not open a
    /// way back). A copy of the held one is a duplicate, unverified; an
    /// older one is refused (`rolled_back`) once its signature holds (an
    /// unsigned forgery is `bad_signature`, not a rollback).
    fn handle_catalog_root(&mut self, unix_now: u64, datagram: &[u8]) -> Result<(), DropReason> {
        let Datagram::CatalogRoot(c) = wire::decode(datagram)?.1 else { return Err(DropReason::BadKind) };
        let held = self.catalog.as_ref().map_or(0, |(r, _)| r.version);
        if c.body.version == held {
            return Err(DropReason::Duplicate);
        }
        let root = self.verifier.verify_catalog_root(c, unix_now)?;
        if root.version < held {
            return Err(DropReason::RolledBack);
        }
        self.catalog = Some((root, datagram.to_vec()));
        self.catalog_new = true;
        Ok(())
    }

    /// The root's revocation list: taken when the trusted root signed it
    /// and its version is higher than the one held (or stored before). A
    /// copy of the held one is a duplicate, unverified; an older one is
    /// refused once its signature holds (a forgery is a signature drop).
    fn handle_revocations(&mut self, datagram: &[u8]) -> Result<(), DropReason> {
        let Datagram::Revocations(list) = wire::decode(datagram)?.1 else { return Err(DropReason::BadKind) };
        let held = self.verifier.revocations().map_or(0, |l| l.version);
        if list.version == held {
            return Err(DropReason::Duplicate);
        }
        self.verifier.check_revocations(&list).map_err(|e| match e {
            hubcast_keys::CertError::UntrustedRoot => DropReason::UntrustedRoot,
            _ => DropReason::RevocationsSignature,
        })?;
        if list.version < held {
            return Err(DropReason::RevocationsRolledBack);
        }
        self.verifier.set_revocations(list);
        self.revocations = Some(datagram.to_vec());
        self.revocations_new = true;
        Ok(())
    }

    /// A root rotation: followed when it comes from the root trusted now,
    /// one version up, signed by both roots. Cheap checks first: one that
    /// does not start at the root trusted now is refused by its version
    /// without a signature check. One already taken is a duplicate.
    fn handle_rotation(&mut self, datagram: &[u8]) -> Result<(), DropReason> {
        let Datagram::RootRotation(r) = wire::decode(datagram)?.1 else { return Err(DropReason::BadKind) };
        if self.verifier.rotations().contains(&r) {
            return Err(DropReason::Duplicate);
        }
        let (root, version) = self.verifier.root();
        if r.version <= version {
            return Err(DropReason::RotationRolledBack);
        }
        if r.version > version + 1 {
            return Err(DropReason::RotationSkipped);
        }
        if hubcast_keys::Fingerprint::of(&r.old) != root {
            return Err(DropReason::UntrustedRoot);
        }
        r.verify().map_err(|_| DropReason::RotationSignature)?;
        self.rotations_new.push((r.version, datagram.to_vec()));
        self.verifier.rotate(r);
        Ok(())
    }

    /// A rotation the hub's store kept: followed again, in order from the
    /// configured root (a store of another channel's chain is refused).
    pub fn restore_rotation(&mut self, datagram: &[u8]) -> Result<(), DropReason> {
        let header = wire::decode_header(datagram)?;
        if header.channel_tag != self.channel_tag {
            return Err(DropReason::WrongChannel);
        }
        self.handle_rotation(datagram)?;
        self.rotations_new.clear();
        Ok(())
    }

    /// Rotations followed since the last call: their versions and
    /// datagrams (for the store, and for peers).
    pub fn take_new_rotations(&mut self) -> Vec<(u64, Vec<u8>)> {
        std::mem::take(&mut self.rotations_new)
    }

    /// The root trusted now and its version (1: the configured one).
    pub fn root(&self) -> (hubcast_keys::Fingerprint, u64) {
        self.verifier.root()
    }

    /// The revocation list the hub's store kept: checked again, and held
    /// (no restart opens a way back to an older one).
    pub fn restore_revocations(&mut self, datagram: &[u8]) -> Result<(), DropReason> {
        let header = wire::decode_header(datagram)?;
        if header.channel_tag != self.channel_tag {
            return Err(DropReason::WrongChannel);
        }
        self.handle_revocations(datagram)?;
        self.revocations_new = false;
        Ok(())
    }

    /// A revocation list taken since the last call, as its datagram (for
    /// the store, and for peers).
    pub fn take_new_revocations(&mut self) -> Option<Vec<u8>> {
        if !std::mem::take(&mut self.revocations_new) {
            return None;
        }
        self.revocations.clone()
    }

    /// The revocation list held.
    pub fn revocation_list(&self) -> Option<&hubcast_keys::RevocationList> {
        self.verifier.revocations()
    }

    /// The revocation list held: its datagram.
    pub fn revocations(&self) -> Option<&[u8]> {
        self.revocations.as_deref()
    }

    /// The catalog root the hub's store kept, verified again as of when it
    /// came: the version to refuse anything older than.
    pub fn restore_catalog_root(&mut self, datagram: &[u8], received_unix: u64) -> Result<(), DropReason> {
        let header = wire::decode_header(datagram)?;
        if header.channel_tag != self.channel_tag {
            return Err(DropReason::WrongChannel);
        }
        let Datagram::CatalogRoot(c) = wire::decode(datagram)?.1 else { return Err(DropReason::BadKind) };
        let root = self.verifier.verify_catalog_root(c, received_unix)?;
        self.catalog = Some((root, datagram.to_vec()));
        Ok(())
    }

    /// A catalog root taken since the last call, with its datagram (for
    /// the store, and for peers).
    pub fn take_new_catalog_root(&mut self) -> Option<(wire::CatalogRoot, Vec<u8>)> {
        if !std::mem::take(&mut self.catalog_new) {
            return None;
        }
        self.catalog.clone()
    }

    /// The catalog root held, with its datagram.
    pub fn catalog_root(&self) -> Option<&(wire::CatalogRoot, Vec<u8>)> {
        self.catalog.as_ref()
    }

    /// A manifest the hub's store kept, as the signed datagram it came in:
    /// verified again, as of `received_unix` (when it came: a certificate or
    /// manifest that has expired since still held then), and remembered with
    /// its datagram, which a bridge then forwards. No event: the store has it.
    /// The tracker it names is not taken: that is learned afresh from the
    /// channel.
    pub fn restore_manifest(
        &mut self,
        datagram: &[u8],
        received_unix: u64,
    ) -> Result<VerifiedManifest, DropReason> {
        let header = wire::decode_header(datagram)?;
        if header.channel_tag != self.channel_tag {
            return Err(DropReason::WrongChannel);
        }
        let Datagram::Manifest(m) = wire::decode(datagram)?.1 else {
            return Err(DropReason::BadKind);
        };
        let m = self.verifier.verify_manifest(m, received_unix)?;
        if !self.taken_unasked(&m) {
            // Until the store says it holds chunks of it (the user asked),
            // or it is chosen.
            self.unwanted.insert(m.object_id);
        }
        self.remember_manifest(m.clone());
        self.keep_manifest_datagram(m.object_id, datagram);
        Ok(m)
    }

    pub(super) fn keep_manifest_datagram(&mut self, id: ObjectId, datagram: &[u8]) {
        if self.manifest_datagrams.insert(id, datagram.to_vec()).is_none() {
            self.manifest_order.push_back(id);
        }
        while self.manifest_order.len() > MAX_MANIFEST_DATAGRAMS {
            if let Some(old) = self.manifest_order.pop_front() {
                self.manifest_datagrams.remove(&old);
            }
        }
    }

    /// The datagram of an accepted manifest, as received: its signature was
    /// checked. Kept for the [`MAX_MANIFEST_DATAGRAMS`] objects accepted last.
    pub fn manifest_datagram(&self, id: &ObjectId) -> Option<&[u8]> {
        self.manifest_datagrams.get(id).map(Vec::as_slice)
    }

    pub(super) fn accept_manifest(&mut self, m: VerifiedManifest) -> Result<(), DropReason> {
        if m.live.is_none() && self.seq_by_name.get(&m.name).is_some_and(|seq| *seq > m.seq) {
            return Err(DropReason::RolledBack);
        }
        let first_sight = !self.manifests.contains_key(&m.object_id);
        if first_sight && self.manifests.len() >= self.config.max_objects {
            return Err(DropReason::TooManyObjects);
        }
        if first_sight && !self.taken_unasked(&m) {
            // Announced only, or not chosen: kept once the hub's user asks
            // (`fetch_now`) or it is chosen.
            self.set_unwanted(m.object_id, true);
        }
        match m.live {
            Some(live) => self.accept_live(&m, live)?,
            None => {
                self.seq_by_name.insert(m.name.clone(), m.seq);
            }
        }
        self.manifests.insert(m.object_id, m.clone());
        self.events.push_back(Event::Manifest(m));
        Ok(())
    }

    /// A live segment's place in its channel. Refused: past its deadline
    /// (late), older than the window (rolled back), a place another segment
    /// holds, or a deadline out of step with its neighbours' (inconsistent).
    /// Segments that fall out of the window are forgotten.
    pub(super) fn accept_live(&mut self, m: &Manifest, live: LiveSegment) -> Result<(), DropReason> {
        use std::ops::Bound::{Excluded, Unbounded};
        if live.deadline_ms < self.now_ms {
            return Err(DropReason::Late);
        }
        if !self.live.contains_key(&m.name) && self.live.len() >= MAX_LIVE_CHANNELS {
            return Err(DropReason::TooManyObjects);
        }
        let window = self.config.live_window.max(1);
        let ch = self.live.entry(m.name.clone()).or_default();
        if live.seq.saturating_add(window) <= ch.newest {
            return Err(DropReason::RolledBack);
        }
        if ch.segments.get(&live.seq).is_some_and(|(id, _)| *id != m.object_id) {
            return Err(DropReason::Inconsistent);
        }
        let before = ch.segments.range(..live.seq).next_back().map(|(_, s)| s.1);
        let after = ch.segments.range((Excluded(live.seq), Unbounded)).next().map(|(_, s)| s.1);
        if before.is_some_and(|d| d > live.deadline_ms) || after.is_some_and(|d| d < live.deadline_ms) {
            return Err(DropReason::Inconsistent);
        }
        ch.segments.insert(live.seq, (m.object_id, live.deadline_ms));
        ch.newest = ch.newest.max(live.seq);
        let keep_from = ch.newest.saturating_sub(window - 1);
        let kept = ch.segments.split_off(&keep_from);
        let gone = std::mem::replace(&mut ch.segments, kept);
        // Equal bytes (a looped input) are one object at several places.
        let stale: Vec<ObjectId> = gone
            .into_values()
            .map(|(id, _)| id)
            .filter(|id| ch.segments.values().all(|(k, _)| k != id))
            .collect();
        for id in stale {
            self.forget_object(id);
        }
        Ok(())
    }

    pub(super) fn accept_ticket(&mut self, t: VerifiedTicket, raw: Vec<u8>) -> Result<(), DropReason> {
        if let Some(m) = self.manifests.get(&t.object_id) {
            let range = chunk_range(m.size, m.chunk_size, t.chunk_index);
            if t.chunk_index >= chunk_count(m.size, m.chunk_size)
                || range.end - range.start != u64::from(t.chunk_len)
                || t.symbol_size != m.symbol_size
            {
                return Err(DropReason::Inconsistent);
            }
        }
        let key = (t.object_id, t.chunk_index);
        if self.active.len() >= self.config.max_active_chunks {
            self.evict_least_recent();
        }
        let k = wire::source_symbols(t.chunk_len, t.symbol_size);
        let n_max = wire::n_max(k);
        let pages = t.page_hashes.len();
        self.use_clock += 1;
        self.active.insert(
            key,
            ActiveChunk {
                k,
                n_max,
                pages: vec![None; pages],
                have: vec![false; n_max as usize],
                candidates: Vec::with_capacity(VERIFY_BATCH),
                verified: Vec::with_capacity(k as usize + DECODE_MARGIN),
                decoder: None,
                tried_at: 0,
                sources_held: 0,
                last_used: self.use_clock,
                ticket: t,
                ticket_raw: raw,
            },
        );
        // Replay what waited for this ticket: pages first, then their symbols.
        if let Some(p) = self.take_pending(&key) {
            for (page_index, digests) in p.pages {
                let page = TablePage { object_id: key.0, chunk_index: key.1, page_index, digests: &digests };
                let r = self.handle_page(page);
                self.count(r);
            }
            for (esi, data) in p.symbols {
                let s = SymbolPacket { object_id: key.0, chunk_index: key.1, esi, data: &data };
                let r = self.handle_symbol(s);
                self.count(r);
                if self.complete.contains(&key) {
                    break;
                }
            }
        }
        Ok(())
    }

    pub(super) fn count(&mut self, r: Result<(), DropReason>) {
        if let Err(reason) = r {
            self.drops.add(reason);
        }
    }

    pub(super) fn evict_least_recent(&mut self) {
        if let Some(key) = self.active.iter().min_by_key(|(_, c)| c.last_used).map(|(k, _)| *k) {
            self.active.remove(&key);
            self.drops.add(DropReason::ActiveEvicted);
        }
    }

    pub(super) fn handle_page(&mut self, p: TablePage<'_>) -> Result<(), DropReason> {
        let key = (p.object_id, p.chunk_index);
        if self.complete.contains(&key) {
            return Err(DropReason::AlreadyComplete);
        }
        let Some(chunk) = self.active.get_mut(&key) else {
            return self.add_pending(
                key,
                |pend| pend.pages.push((p.page_index, p.digests.to_vec())),
                p.digests.len(),
            );
        };
        let page = p.page_index as usize;
        if page >= chunk.pages.len() {
            return Err(DropReason::PageMismatch);
        }
        if chunk.pages[page].is_some() {
            return Err(DropReason::Duplicate);
        }
        let range = page_range(page, chunk.n_max);
        if p.digests.len() != range.len() * DIGEST_LEN
            || page_hash(p.digests) != chunk.ticket.page_hashes[page]
        {
            return Err(DropReason::PageMismatch);
        }
        chunk.pages[page] = Some(p.digests.into());
        // Symbols of this page that waited for it.
        let waiting: Vec<(u32, Vec<u8>)> = match self.pending.get_mut(&key) {
            Some(pend) => {
                let (mine, rest) = pend.symbols.drain(..).partition(|(esi, _)| page_of(*esi) == page);
                pend.symbols = rest;
                let freed: usize = mine.iter().map(|(_, d): &(u32, Vec<u8>)| d.len()).sum();
                pend.bytes -= freed;
                self.pending_bytes -= freed;
                mine
            }
            None => Vec::new(),
        };
        for (esi, data) in waiting {
            let s = SymbolPacket { object_id: key.0, chunk_index: key.1, esi, data: &data };
            let r = self.handle_symbol(s);
            self.count(r);
        }
        Ok(())
    }

    pub(super) fn handle_symbol(&mut self, s: SymbolPacket<'_>) -> Result<(), DropReason> {
        let key = (s.object_id, s.chunk_index);
        if self.complete.contains(&key) {
            return Err(DropReason::AlreadyComplete);
        }
        let Some(chunk) = self.active.get_mut(&key) else {
            return self.add_pending(key, |pend| pend.symbols.push((s.esi, s.data.to_vec())), s.data.len());
        };
        let t = chunk.ticket.symbol_size as usize;
        if s.esi >= chunk.n_max || s.data.len() != t {
            return Err(DropReason::BadSymbol);
        }
        if chunk.have[s.esi as usize] {
            return Err(DropReason::Duplicate);
        }
        if chunk.pages[page_of(s.esi)].is_none() {
            return self.add_pending(key, |pend| pend.symbols.push((s.esi, s.data.to_vec())), s.data.len());
        }
        // A candidate: held, not yet trusted. `have` is set now so a duplicate in
        // the same batch is refused; a failed check clears it.
        chunk.have[s.esi as usize] = true;
        chunk.sources_held += u32::from(s.esi < chunk.k);
        chunk.candidates.push((s.esi, s.data.to_vec()));
        let waiting = chunk.candidates.len();
        if waiting == 1 {
            self.unverified.push(key);
        }
        if waiting >= VERIFY_BATCH
            || chunk.held() + waiting >= chunk.k as usize + DECODE_MARGIN
            || chunk.sources_held == chunk.k
        {
            self.verify_candidates(key)?;
        }
        Ok(())
    }

    /// Check the digests of a chunk's candidates in one pass; keep those that
    /// match, drop the others (counted), and try to decode when there are enough.
    pub(super) fn verify_candidates(&mut self, key: ChunkKey) -> Result<(), DropReason> {
        let Some(chunk) = self.active.get_mut(&key) else {
            return Ok(());
        };
        if chunk.candidates.is_empty() {
            return Ok(());
        }
        let t = chunk.ticket.symbol_size as usize;
        let refs: Vec<&[u8]> = chunk.candidates.iter().map(|(_, d)| d.as_slice()).collect();
        symbol_digests(&chunk.ticket.chunk_hash, &refs, &mut self.digest_scratch);
        let mut good = 0usize;
        for ((esi, data), digest) in chunk.candidates.drain(..).zip(&self.digest_scratch) {
            let page = page_of(esi);
            let at = (esi - page_range(page, chunk.n_max).start) as usize * DIGEST_LEN;
            // Candidates are only taken once their page is verified; a missing
            // page here would be a bug, and is treated as a mismatch.
            let matches =
                chunk.pages[page].as_ref().is_some_and(|table| table[at..at + DIGEST_LEN] == digest[..]);
            if matches {
                // Verified: from here on this symbol is trusted data.
                chunk.verified.push((esi, data));
                good += 1;
            } else {
                chunk.have[esi as usize] = false;
                chunk.sources_held -= u32::from(esi < chunk.k);
                self.drops.add(DropReason::DigestMismatch);
            }
        }
        self.use_clock += 1;
        chunk.last_used = self.use_clock;
        self.stats.symbols_accepted += good as u64;
        self.stats.symbol_bytes_accepted += (good * t) as u64;
        let held = chunk.held();
        let systematic = chunk.sources_held == chunk.k && chunk.candidates.is_empty();
        if (held >= chunk.k as usize + DECODE_MARGIN || systematic) && held > chunk.tried_at {
            self.try_decode(key)?;
        }
        Ok(())
    }

    pub(super) fn try_decode(&mut self, key: ChunkKey) -> Result<(), DropReason> {
        let Some(chunk) = self.active.get_mut(&key) else {
            return Ok(());
        };
        self.stats.decode_attempts += 1;
        let t = &chunk.ticket;
        let decoder =
            chunk.decoder.get_or_insert_with(|| ChunkDecoder::new(t.chunk_len, t.symbol_size, t.chunk_hash));
        match decoder.add_and_decode(chunk.verified.drain(..)) {
            Some(data) => {
                let hash = chunk.ticket.chunk_hash;
                let (ticket, pages) = match self.active.remove(&key) {
                    Some(c) => {
                        let pages = c.pages.into_iter().enumerate();
                        let pages = pages.filter_map(|(g, p)| Some((g as u16, p?.into_vec()))).collect();
                        (c.ticket_raw, pages)
                    }
                    None => Default::default(),
                };
                self.complete.insert(key);
                self.lost.remove(&key);
                self.stats.chunks_completed += 1;
                self.events.push_back(Event::ChunkComplete(VerifiedChunk {
                    object_id: key.0,
                    index: key.1,
                    hash,
                    data,
                    ticket,
                    pages,
                }));
                Ok(())
            }
            None => {
                chunk.tried_at = chunk.held();
                // With every source symbol present decoding is a copy; failing then
                // means the data does not hash to the ticket. Start the chunk over.
                if chunk.held() >= chunk.n_max as usize || chunk.have[..chunk.k as usize].iter().all(|h| *h) {
                    chunk.decoder = None;
                    chunk.verified.clear();
                    chunk.candidates.clear();
                    chunk.have.iter_mut().for_each(|h| *h = false);
                    chunk.tried_at = 0;
                    return Err(DropReason::ChunkHashMismatch);
                }
                Ok(())
            }
        }
    }

    pub(super) fn take_pending(&mut self, key: &ChunkKey) -> Option<Pending> {
        let p = self.pending.remove(key)?;
        self.pending_bytes -= p.bytes;
        self.pending_order.retain(|k| k != key);
        Some(p)
    }

    pub(super) fn add_pending(
        &mut self,
        key: ChunkKey,
        push: impl FnOnce(&mut Pending),
        bytes: usize,
    ) -> Result<(), DropReason> {
        if bytes > self.config.max_pending_bytes {
            return Err(DropReason::PendingEvicted);
        }
        while self.pending_bytes + bytes > self.config.max_pending_bytes {
            let Some(oldest) = self.pending_order.pop_front() else {
                break;
            };
            if let Some(p) = self.pending.remove(&oldest) {
                self.pending_bytes -= p.bytes;
                for _ in 0..p.pages.len() + p.symbols.len() {
                    self.drops.add(DropReason::PendingEvicted);
                }
            }
        }
        let entry = self.pending.entry(key).or_insert_with(|| {
            self.pending_order.push_back(key);
            Pending::default()
        });
        push(entry);
        entry.bytes += bytes;
        self.pending_bytes += bytes;
        Ok(())
    }
}
