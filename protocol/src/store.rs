//! Where a hub keeps what it verified, as the hub's drivers see it:
//! [`ChunkStore`]. The daemon's store (a redb index beside chunk files, in
//! `clienthub`) and [`MemoryStore`] (simulations, tests) implement it, and
//! [`suite`] is the one test suite both must pass.
//!
//! Only verified data goes in: manifests and chunks as the receiver hands
//! them out. Reads check what they return: a chunk whose bytes no longer
//! match its hash is not returned as good. Manifests are kept as the signed
//! datagrams they came in, with when they came, and are verified again when
//! loaded ([`Receiver::restore_manifest`](crate::receiver::Receiver::restore_manifest)):
//! there is no path by which a stored manifest is trusted unchecked.

use crate::receiver::VerifiedChunk;
use crate::serve::{answer, ChunkRequest, ChunkServer};
use crate::wire::Hash;
use crate::ObjectId;
use std::collections::BTreeMap;

/// A manifest as a store keeps it: the signed datagram it came in, and when
/// the receiver checked it (wall-clock seconds), the time it is checked
/// again as of.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredManifest {
    pub object_id: ObjectId,
    pub datagram: Vec<u8>,
    pub received_unix: u64,
}

pub trait ChunkStore {
    type Error: std::error::Error + 'static;

    /// Keep a manifest the receiver accepted; one for an object already
    /// kept replaces it.
    fn put_manifest(&mut self, m: &StoredManifest) -> Result<(), Self::Error>;
    /// Every manifest kept, as it came: to be verified again before use.
    fn manifests(&self) -> Result<Vec<StoredManifest>, Self::Error>;
    /// Keep a verified chunk, with the ticket it was verified against;
    /// `false` if it was kept already (nothing changes).
    fn put_chunk(&mut self, c: &VerifiedChunk) -> Result<bool, Self::Error>;
    fn has_chunk(&self, id: &ObjectId, index: u32) -> Result<bool, Self::Error>;
    /// Every chunk kept, as (object, index), in that order.
    fn chunks(&self) -> Result<Vec<(ObjectId, u32)>, Self::Error>;
    /// A kept chunk's bytes, checked against its hash; `None` if not kept.
    /// A chunk that fails its check is an error, and is no longer kept.
    fn read_chunk(&mut self, id: &ObjectId, index: u32) -> Result<Option<Vec<u8>>, Self::Error>;
    /// The ticket datagram a kept chunk was verified against.
    fn read_ticket(&self, id: &ObjectId, index: u32) -> Result<Option<Vec<u8>>, Self::Error>;
    /// Forget an object: its manifest and every chunk of it.
    fn remove_object(&mut self, id: &ObjectId) -> Result<(), Self::Error>;
}

/// A chunk read back did not match its hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("chunk {index} of {object} does not match its hash")]
pub struct Damaged {
    pub object: ObjectId,
    pub index: u32,
}

/// A kept chunk: the ticket datagram it was verified against, its bytes, its hash.
type Kept = (Vec<u8>, Vec<u8>, Hash);

/// A store in memory: for simulations and tests.
#[derive(Default)]
pub struct MemoryStore {
    manifests: BTreeMap<ObjectId, StoredManifest>,
    chunks: BTreeMap<(ObjectId, u32), Kept>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Flip a byte of a kept chunk, as a failing disk would (for tests).
    pub fn damage(&mut self, id: &ObjectId, index: u32) {
        if let Some(b) = self.chunks.get_mut(&(*id, index)).and_then(|c| c.1.first_mut()) {
            *b ^= 1;
        }
    }
}

impl ChunkStore for MemoryStore {
    type Error = Damaged;

    fn put_manifest(&mut self, m: &StoredManifest) -> Result<(), Damaged> {
        self.manifests.insert(m.object_id, m.clone());
        Ok(())
    }

    fn manifests(&self) -> Result<Vec<StoredManifest>, Damaged> {
        Ok(self.manifests.values().cloned().collect())
    }

    fn put_chunk(&mut self, c: &VerifiedChunk) -> Result<bool, Damaged> {
        let key = (c.object_id(), c.index());
        if self.chunks.contains_key(&key) {
            return Ok(false);
        }
        self.chunks.insert(key, (c.ticket().to_vec(), c.data().to_vec(), *c.hash()));
        Ok(true)
    }

    fn has_chunk(&self, id: &ObjectId, index: u32) -> Result<bool, Damaged> {
        Ok(self.chunks.contains_key(&(*id, index)))
    }

    fn chunks(&self) -> Result<Vec<(ObjectId, u32)>, Damaged> {
        Ok(self.chunks.keys().copied().collect())
    }

    fn read_chunk(&mut self, id: &ObjectId, index: u32) -> Result<Option<Vec<u8>>, Damaged> {
        let Some((_, data, hash)) = self.chunks.get(&(*id, index)) else { return Ok(None) };
        if blake3::hash(data).as_bytes() != hash {
            self.chunks.remove(&(*id, index));
            return Err(Damaged { object: *id, index });
        }
        Ok(Some(data.clone()))
    }

    fn read_ticket(&self, id: &ObjectId, index: u32) -> Result<Option<Vec<u8>>, Damaged> {
        Ok(self.chunks.get(&(*id, index)).map(|c| c.0.clone()))
    }

    fn remove_object(&mut self, id: &ObjectId) -> Result<(), Damaged> {
        self.manifests.remove(id);
        self.chunks.retain(|(o, _), _| o != id);
        Ok(())
    }
}

/// A server for a kept chunk: its ticket and its bytes, read and checked.
/// `None` when the chunk is not kept (or failed its check).
pub fn chunk_server<S: ChunkStore>(store: &mut S, id: &ObjectId, index: u32) -> Option<ChunkServer> {
    let ticket = store.read_ticket(id, index).ok()??;
    let data = store.read_chunk(id, index).ok()??;
    ChunkServer::new(ticket, data).ok()
}

/// Answer a peer's request as a hub does: from the chunk kept in `store`,
/// else from what `collecting` holds verified of it.
pub fn serve_from<S: ChunkStore>(
    store: &mut S,
    req: &ChunkRequest,
    collecting: &crate::receiver::Receiver,
) -> Result<Vec<Vec<u8>>, crate::peer_wire::RefuseReason> {
    let server = chunk_server(store, &req.object_id, req.index);
    answer(req, server.as_ref(), collecting)
}

/// A store call the suite made failed: which step, and the store's error.
#[cfg(any(test, feature = "test-support"))]
#[derive(Debug, thiserror::Error)]
#[error("store suite, {step}: {error}")]
pub struct SuiteFailure {
    pub step: &'static str,
    pub error: String,
}

/// The test suite every [`ChunkStore`] passes (test support, behind the
/// `test-support` feature): a store call that fails is a [`SuiteFailure`],
/// a property that does not hold is a failed assertion. `make` gives an empty store,
/// `chunks` verified chunks of the objects `manifests` describe (at least
/// two chunks of the first, one of another object).
#[cfg(any(test, feature = "test-support"))]
pub fn suite<S: ChunkStore>(
    mut make: impl FnMut() -> S,
    manifests: &[StoredManifest],
    chunks: &[VerifiedChunk],
) -> Result<(), SuiteFailure> {
    let fail = |step: &'static str| move |e: S::Error| SuiteFailure { step, error: e.to_string() };
    let (first, other) =
        (chunks[0].object_id(), chunks.iter().find(|c| c.object_id() != chunks[0].object_id()));
    let other = other
        .ok_or(SuiteFailure { step: "fixture", error: "no chunk of a second object".into() })?
        .object_id();

    // Empty: nothing kept, nothing read.
    let mut s = make();
    assert!(s.manifests().map_err(fail("manifests"))?.is_empty());
    assert!(s.chunks().map_err(fail("chunks"))?.is_empty());
    assert_eq!(s.read_chunk(&first, 0).map_err(fail("read"))?, None);
    assert_eq!(s.read_ticket(&first, 0).map_err(fail("ticket"))?, None);
    assert!(!s.has_chunk(&first, 0).map_err(fail("has"))?);

    // Every chunk in, once; the second time changes nothing.
    for m in manifests {
        s.put_manifest(m).map_err(fail("put manifest"))?;
    }
    for c in chunks {
        assert!(s.put_chunk(c).map_err(fail("put chunk"))?, "a new chunk is kept");
    }
    for c in chunks {
        assert!(!s.put_chunk(c).map_err(fail("put again"))?, "a kept chunk is not kept twice");
    }
    let mut keys: Vec<(ObjectId, u32)> = chunks.iter().map(|c| (c.object_id(), c.index())).collect();
    keys.sort_unstable();
    assert_eq!(s.chunks().map_err(fail("chunks"))?, keys, "every chunk, in order");
    for c in chunks {
        assert!(s.has_chunk(&c.object_id(), c.index()).map_err(fail("has"))?);
        assert_eq!(s.read_chunk(&c.object_id(), c.index()).map_err(fail("read"))?.as_deref(), Some(c.data()));
        assert_eq!(
            s.read_ticket(&c.object_id(), c.index()).map_err(fail("ticket"))?.as_deref(),
            Some(c.ticket())
        );
        let server = chunk_server(&mut s, &c.object_id(), c.index())
            .ok_or(SuiteFailure { step: "serve", error: "a kept chunk does not serve".into() })?;
        assert_eq!(server.ticket(), c.ticket());
    }
    let mut kept = s.manifests().map_err(fail("manifests"))?;
    kept.sort_by_key(|m| m.object_id);
    let mut want = manifests.to_vec();
    want.sort_by_key(|m| m.object_id);
    assert_eq!(kept, want, "every manifest, once, byte for byte with when it came");
    // A manifest put again replaces, never doubles.
    let again = StoredManifest { received_unix: manifests[0].received_unix + 60, ..manifests[0].clone() };
    s.put_manifest(&again).map_err(fail("put manifest again"))?;
    let kept = s.manifests().map_err(fail("manifests"))?;
    assert_eq!(kept.len(), want.len());
    assert!(kept.contains(&again), "the newer one replaced it");

    // Removing one object leaves the other whole.
    s.remove_object(&first).map_err(fail("remove"))?;
    assert!(s.chunks().map_err(fail("chunks"))?.iter().all(|(o, _)| *o != first));
    assert_eq!(s.read_chunk(&first, 0).map_err(fail("read"))?, None);
    assert!(s.manifests().map_err(fail("manifests"))?.iter().all(|m| m.object_id != first));
    for c in chunks.iter().filter(|c| c.object_id() == other) {
        assert_eq!(s.read_chunk(&other, c.index()).map_err(fail("read"))?.as_deref(), Some(c.data()));
    }
    // And the object can come again.
    for c in chunks.iter().filter(|c| c.object_id() == first) {
        assert!(s.put_chunk(c).map_err(fail("put after remove"))?);
    }
    Ok(())
}

/// When [`suite_fixture`]'s manifests came (its certificate's day).
#[cfg(any(test, feature = "test-support"))]
pub const FIXTURE_NOW: u64 = 1_700_000_000;

/// Manifests and verified chunks for [`suite`] (test support too): a file of
/// three chunks (the last one short), a file of one, and an empty file, as a
/// receiver hands them out, received at [`FIXTURE_NOW`].
#[cfg(any(test, feature = "test-support"))]
pub fn suite_fixture() -> (Vec<StoredManifest>, Vec<VerifiedChunk>) {
    let files = [
        ("a b.bin", (0..(2 * 4096 + 1000)).map(|i| (i * 7 % 251) as u8).collect()),
        ("dir/one.txt", b"one chunk".to_vec()),
        ("empty", Vec::new()),
    ];
    let (manifests, _, chunks) = received(&files, 4096);
    assert_eq!((manifests.len(), chunks.len()), (3, 4), "the fixture decodes whole");
    (manifests, chunks)
}

/// `files` (name, content) sent in chunks of `chunk_size` and received at
/// [`FIXTURE_NOW`] (test support): the manifests as stored and as decoded,
/// and the verified chunks, in the order a receiver hands them out.
#[cfg(any(test, feature = "test-support"))]
pub fn received(
    files: &[(&str, Vec<u8>)],
    chunk_size: u32,
) -> (Vec<StoredManifest>, Vec<crate::wire::Manifest>, Vec<VerifiedChunk>) {
    use crate::receiver::{Event, Receiver, ReceiverConfig};
    use crate::sender::{ObjectPlan, PreparedChunk};
    use crate::verify::Signer;
    use hubcast_keys::{ChannelKeys, Fingerprint, SignerKeys, TrustAnchor};
    use rand::SeedableRng;

    const NOW: u64 = FIXTURE_NOW;
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(5);
    let keys = ChannelKeys::generate(&mut rng, NOW - 10, 86_400);
    let anchor = TrustAnchor::new(Fingerprint::of(&keys.root.verifying_key()));
    let signer = Signer::new(SignerKeys::load_from(&keys));
    let mut rx = Receiver::new(anchor, ReceiverConfig::default());
    for (name, data) in files {
        let plan = ObjectPlan::new(
            name.to_string(),
            ObjectId::of(data),
            data.len() as u64,
            chunk_size,
            256,
            1,
            NOW + 3600,
        );
        rx.handle_datagram(NOW, &signer.manifest_datagram(&plan.manifest));
        for i in 0..plan.chunk_count() {
            let r = plan.chunk_range(i);
            let chunk =
                PreparedChunk::prepare(&signer, &plan.manifest, i, &data[r.start as usize..r.end as usize]);
            for d in chunk.round_datagrams(signer.channel_tag(), 0.1, 0) {
                rx.handle_datagram(NOW, &d);
            }
        }
        rx.handle_idle();
    }
    let (mut manifests, mut decoded, mut chunks) = (Vec::new(), Vec::new(), Vec::new());
    while let Some(e) = rx.poll_event() {
        match e {
            Event::Manifest(m) => {
                decoded.push((*m).clone());
                manifests.push(StoredManifest {
                    object_id: m.object_id,
                    datagram: rx
                        .manifest_datagram(&m.object_id)
                        .expect("invariant: the receiver keeps the datagram of a manifest it just accepted")
                        .to_vec(),
                    received_unix: NOW,
                })
            }
            Event::ChunkComplete(c) => chunks.push(c),
        }
    }
    (manifests, decoded, chunks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_memory_store_passes_the_suite() {
        let (manifests, chunks) = suite_fixture();
        suite(MemoryStore::new, &manifests, &chunks).unwrap();
    }

    #[test]
    fn a_damaged_chunk_is_an_error_and_no_longer_kept() {
        let (manifests, chunks) = suite_fixture();
        let mut s = MemoryStore::new();
        s.put_manifest(&manifests[0]).unwrap();
        let c = &chunks[0];
        s.put_chunk(c).unwrap();
        s.damage(&c.object_id(), c.index());
        assert_eq!(
            s.read_chunk(&c.object_id(), c.index()),
            Err(Damaged { object: c.object_id(), index: c.index() })
        );
        assert!(!s.has_chunk(&c.object_id(), c.index()).unwrap());
        assert!(chunk_server(&mut s, &c.object_id(), c.index()).is_none());
    }
}
