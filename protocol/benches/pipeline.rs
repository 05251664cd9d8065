//! Sender and receiver pipelines against raw raptorq, measured in the same run.
//!
//! `cargo bench -p hubcast-protocol --bench pipeline`
//!
//! - sender: chunk → N_max symbols, digest table, signed ticket, one round's
//!   datagrams; baseline: raptorq encoding the same chunk into the K + 10%
//!   symbols a round sends.
//! - receiver: one round's datagrams with 5% of the symbols lost → parse, verify ticket,
//!   pages and every symbol, decode, check the chunk hash; baseline: raptorq
//!   decoding the same surviving symbols.
//!
//! Figures are MB/s of chunk payload, median of several runs, and the ratio.

use hubcast_keys::{ChannelKeys, Fingerprint, SignerKeys, TrustAnchor};
use hubcast_protocol::receiver::{Event, Receiver, ReceiverConfig};
use hubcast_protocol::sender::{ObjectPlan, PreparedChunk};
use hubcast_protocol::verify::Signer;
use hubcast_protocol::wire::{self, Datagram};
use hubcast_protocol::ObjectId;
use rand::{Rng, SeedableRng};
use raptorq::{
    EncodingPacket, ObjectTransmissionInformation, PayloadId, SourceBlockDecoder, SourceBlockEncoder,
};
use std::time::Instant;

const CHUNK: usize = 1 << 20;
const T: u16 = 1280;
const OVERHEAD: f64 = 0.10;
const LOSS: f64 = 0.05;
const CHUNKS: usize = 24;
const RUNS: usize = 5;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// MB/s for processing `CHUNKS` chunks with `f`, median of RUNS.
fn rate(mut f: impl FnMut(usize)) -> f64 {
    f(0); // warm caches and raptorq's plan cache
    median(
        (0..RUNS)
            .map(|_| {
                let t = Instant::now();
                for i in 0..CHUNKS {
                    f(i);
                }
                (CHUNKS * CHUNK) as f64 / t.elapsed().as_secs_f64() / 1e6
            })
            .collect(),
    )
}

fn main() {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    let keys = ChannelKeys::generate(&mut rng, 0, u64::MAX / 2);
    let anchor = TrustAnchor::new(Fingerprint::of(&keys.root.verifying_key()));
    let signer = Signer::new(SignerKeys::load_from(&keys));
    let tag = signer.channel_tag();
    let chunks: Vec<Vec<u8>> = (0..CHUNKS).map(|_| (0..CHUNK).map(|_| rng.gen()).collect()).collect();
    let plans: Vec<ObjectPlan> = chunks
        .iter()
        .map(|c| {
            ObjectPlan::new("bench".into(), ObjectId::of(c), CHUNK as u64, CHUNK as u32, T, 1, u64::MAX / 2)
        })
        .collect();
    let k = wire::source_symbols(CHUNK as u32, T);
    let sent = k + hubcast_protocol::sender::repair_count(k, OVERHEAD);
    let oti = ObjectTransmissionInformation::new(u64::from(k) * u64::from(T), T, 1, 1, 8);

    // Sender. raptorq takes whole symbols: pad outside the timing (favours raw).
    let padded: Vec<Vec<u8>> = chunks
        .iter()
        .map(|c| {
            let mut p = c.clone();
            p.resize(k as usize * T as usize, 0);
            p
        })
        .collect();
    let raw_encode = rate(|i| {
        let enc = SourceBlockEncoder::new(0, &oti, &padded[i]);
        std::hint::black_box(enc.source_packets());
        std::hint::black_box(enc.repair_packets(0, sent - k));
    });
    let sender = rate(|i| {
        let p = PreparedChunk::prepare(&signer, &plans[i].manifest, 0, &chunks[i]);
        std::hint::black_box(p.round_datagrams(tag, OVERHEAD, 0));
    });

    // Receiver: the datagrams one lossy hub gets, per chunk.
    let received: Vec<Vec<Vec<u8>>> = (0..CHUNKS)
        .map(|i| {
            let p = PreparedChunk::prepare(&signer, &plans[i].manifest, 0, &chunks[i]);
            // Loss hits symbols only, so both pipelines decode the same symbol set.
            p.round_datagrams(tag, OVERHEAD, 0)
                .into_iter()
                .filter(|d| {
                    wire::decode_header(d).is_ok_and(|h| h.kind != wire::Kind::Symbol) || !rng.gen_bool(LOSS)
                })
                .collect()
        })
        .collect();
    let symbols: Vec<Vec<(u32, Vec<u8>)>> = received
        .iter()
        .map(|ds| {
            ds.iter()
                .filter_map(|d| match wire::decode(d).ok()?.1 {
                    Datagram::Symbol(s) => Some((s.esi, s.data.to_vec())),
                    _ => None,
                })
                .collect()
        })
        .collect();
    let raw_decode = rate(|i| {
        let mut dec = SourceBlockDecoder::new(0, &oti, u64::from(k) * u64::from(T));
        let packets =
            symbols[i].iter().map(|(esi, d)| EncodingPacket::new(PayloadId::new(0, *esi), d.clone()));
        assert!(dec.decode(packets).is_some());
    });
    let mut rx = Receiver::new(anchor, ReceiverConfig::default());
    let mut completed = 0usize;
    let receiver = rate(|i| {
        if i == 0 {
            rx = Receiver::new(anchor, ReceiverConfig::default());
        }
        for d in &received[i] {
            rx.handle_datagram(1, d);
        }
        if i == CHUNKS - 1 {
            rx.handle_idle(); // the stream ends
        }
        while let Some(e) = rx.poll_event() {
            if let Event::ChunkComplete(c) = e {
                assert_eq!(c.data(), &chunks[i][..]);
                completed += 1;
            }
        }
    });
    // The warm-up call decodes chunk 0 once more.
    assert_eq!(completed, 1 + CHUNKS * RUNS, "every chunk decodes in every run");

    println!("pipeline benchmark: {CHUNKS} chunks of {CHUNK} bytes, T = {T}, overhead {OVERHEAD}, receiver loss {LOSS}");
    println!("{:<58} {:>9} {:>9} {:>7}", "", "MB/s", "raw MB/s", "ratio");
    println!(
        "{:<58} {:>9.0} {:>9.0} {:>7.2}",
        "sender   (encode N_max, digest table, sign, lay out)",
        sender,
        raw_encode,
        sender / raw_encode
    );
    println!(
        "{:<58} {:>9.0} {:>9.0} {:>7.2}",
        "receiver (parse, verify, decode, chunk hash)",
        receiver,
        raw_decode,
        receiver / raw_decode
    );
}
