//! Shared helpers: a channel with keys, a broadcaster laid out in memory, a receiver.
#![allow(dead_code)]

use hubcast_keys::{ChannelKeys, Fingerprint, TrustAnchor};
use hubcast_protocol::receiver::{Event, Receiver, ReceiverConfig};
use hubcast_protocol::sender::{Carousel, ObjectPlan, PreparedChunk, Step};
use hubcast_protocol::verify::Signer;
use hubcast_protocol::wire::Manifest;
use hubcast_protocol::ObjectId;
use rand::SeedableRng;
use std::collections::BTreeMap;

/// Wall clock the test keys are valid at.
pub const NOW: u64 = 1_700_000_000;

pub struct Channel {
    pub keys: ChannelKeys,
    pub signer: Signer,
    pub anchor: TrustAnchor,
}

pub fn channel(seed: u64) -> Channel {
    channel_valid(seed, NOW - 10, 86_400)
}

pub fn channel_valid(seed: u64, from: u64, secs: u64) -> Channel {
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(seed);
    let keys = ChannelKeys::generate(&mut rng, from, secs);
    let anchor = TrustAnchor::new(Fingerprint::of(&keys.root.verifying_key()));
    let signer = Signer::new(hubcast_keys::SignerKeys::load_from(&keys));
    Channel { keys, signer, anchor }
}

pub struct Content {
    pub name: String,
    pub bytes: Vec<u8>,
}

pub fn content(name: &str, len: usize, seed: u8) -> Content {
    let bytes = (0..len)
        .map(|i| (i as u32).wrapping_mul(2654435761).rotate_left(seed as u32 % 32) as u8 ^ seed)
        .collect();
    Content { name: name.into(), bytes }
}

pub fn plans(objects: &[Content], chunk_size: u32, t: u16) -> Vec<ObjectPlan> {
    objects
        .iter()
        .map(|o| {
            ObjectPlan::new(
                o.name.clone(),
                ObjectId::of(&o.bytes),
                o.bytes.len() as u64,
                chunk_size,
                t,
                7,
                NOW + 3600,
            )
        })
        .collect()
}

/// Every datagram of `rounds` carousel rounds, in sending order.
pub fn broadcast(
    ch: &Channel,
    objects: &[Content],
    chunk_size: u32,
    t: u16,
    overhead: f64,
    rounds: u32,
) -> Vec<Vec<u8>> {
    let plans = plans(objects, chunk_size, t);
    Carousel::new(&plans, Some(rounds))
        .flat_map(|step| step_datagrams(ch, &plans, objects, step, overhead))
        .collect()
}

/// The datagrams the broadcaster sends for one carousel step.
pub fn step_datagrams(
    ch: &Channel,
    plans: &[ObjectPlan],
    objects: &[Content],
    step: Step,
    overhead: f64,
) -> Vec<Vec<u8>> {
    match step {
        Step::Manifest { object, end } => {
            let m = Manifest { round_end: end, ..plans[object].manifest.clone() };
            vec![ch.signer.manifest_datagram(&m)]
        }
        Step::Chunk { object, chunk, round } => {
            let r = plans[object].chunk_range(chunk);
            let data = &objects[object].bytes[r.start as usize..r.end as usize];
            let prepared = PreparedChunk::prepare(&ch.signer, &plans[object].manifest, chunk, data);
            prepared.round_datagrams(ch.signer.channel_tag(), overhead, round)
        }
    }
}

/// What a receiver ended with.
#[derive(Default)]
pub struct Received {
    pub manifests: Vec<String>,
    pub chunks: BTreeMap<(ObjectId, u32), Vec<u8>>,
}

impl Received {
    /// Reassemble an object from its chunks; `None` if any is missing.
    pub fn object(&self, id: ObjectId, size: usize, chunk_size: u32) -> Option<Vec<u8>> {
        let n = size.div_ceil(chunk_size as usize);
        let mut out = Vec::with_capacity(size);
        for i in 0..n {
            out.extend_from_slice(self.chunks.get(&(id, i as u32))?);
        }
        Some(out)
    }
}

/// Feed datagrams one at a time, polling after each; then the network goes quiet.
pub fn receive(rx: &mut Receiver, datagrams: impl IntoIterator<Item = Vec<u8>>, got: &mut Received) {
    for d in datagrams {
        rx.handle_datagram(NOW, &d);
        drain(rx, got);
    }
    rx.handle_idle();
    drain(rx, got);
}

pub fn drain(rx: &mut Receiver, got: &mut Received) {
    while let Some(e) = rx.poll_event() {
        match e {
            Event::Manifest(m) => got.manifests.push(m.name.clone()),
            Event::ChunkComplete(c) => {
                assert!(
                    got.chunks.insert((c.object_id(), c.index()), c.data().to_vec()).is_none(),
                    "chunk completed twice"
                );
            }
        }
    }
}

pub fn receiver(anchor: TrustAnchor) -> Receiver {
    Receiver::new(anchor, ReceiverConfig::default())
}

/// Feed every datagram, then poll: the receiver checks digests in batches.
pub fn receive_batched(rx: &mut Receiver, datagrams: impl IntoIterator<Item = Vec<u8>>, got: &mut Received) {
    for d in datagrams {
        rx.handle_datagram(NOW, &d);
    }
    drain(rx, got);
    rx.handle_idle();
    drain(rx, got);
}
