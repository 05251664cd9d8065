//! Structure-aware: datagrams of a valid stream for a small object, chosen and
//! mutated by the fuzz input. Each 4-byte op names a datagram of the stream and
//! what to do to it (flip a byte, truncate, empty, extend, or send it as it is),
//! and the receiver gets that datagram: the work per input is proportional to
//! the input (the stream is signed once per process), so the fuzzer can afford
//! long inputs that carry a chunk to decoding. The receiver must never panic
//! and must never emit a chunk whose bytes differ from the source.
#![no_main]
use hubcast_keys::{ChannelKeys, Fingerprint, SignerKeys, TrustAnchor};
use hubcast_protocol::receiver::{Event, Receiver, ReceiverConfig};
use hubcast_protocol::sender::{ObjectPlan, PreparedChunk};
use hubcast_protocol::verify::Signer;
use hubcast_protocol::ObjectId;
use libfuzzer_sys::fuzz_target;
use rand::SeedableRng;
use std::sync::OnceLock;

const CHUNK: u32 = 16 * 128;

struct Fixture {
    anchor: TrustAnchor,
    source: Vec<u8>,
    stream: Vec<Vec<u8>>,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let keys = ChannelKeys::generate(&mut rand_chacha::ChaCha8Rng::seed_from_u64(1), 0, u64::MAX / 2);
        let anchor = TrustAnchor::new(Fingerprint::of(&keys.root.verifying_key()));
        let signer = Signer::new(SignerKeys::load_from(&keys));
        let source: Vec<u8> = (0..2 * CHUNK + 100).map(|i| (i * 31 % 251) as u8).collect();
        let plan = ObjectPlan::new(
            "f".into(),
            ObjectId::of(&source),
            source.len() as u64,
            CHUNK,
            128,
            1,
            u64::MAX / 2,
        );
        let mut stream = vec![signer.manifest_datagram(&plan.manifest)];
        for c in 0..plan.chunk_count() {
            let r = plan.chunk_range(c);
            let p =
                PreparedChunk::prepare(&signer, &plan.manifest, c, &source[r.start as usize..r.end as usize]);
            stream.extend(p.round_datagrams(signer.channel_tag(), 0.25, 0));
        }
        Fixture { anchor, source, stream }
    })
}

fuzz_target!(|ops: &[u8]| {
    let f = fixture();
    let mut rx = Receiver::new(f.anchor, ReceiverConfig::default());
    let check = |rx: &mut Receiver| {
        while let Some(e) = rx.poll_event() {
            if let Event::ChunkComplete(c) = e {
                let start = c.index() as usize * CHUNK as usize;
                let end = (start + CHUNK as usize).min(f.source.len());
                assert_eq!(c.data(), &f.source[start..end], "a wrong chunk was emitted");
            }
        }
    };
    let mut d = Vec::new();
    for (n, op) in ops.chunks_exact(4).enumerate() {
        d.clear();
        d.extend_from_slice(&f.stream[usize::from(op[0]) % f.stream.len()]);
        match op[1] % 8 {
            0 if !d.is_empty() => {
                let at = usize::from(op[2]) * 7 % d.len();
                d[at] ^= op[3] | 1;
            }
            1 => d.truncate(usize::from(op[2]) * 6),
            2 => d.clear(),
            3 => d.extend_from_slice(&op[2..]),
            _ => {} // as sent: most ops, so chunks can complete
        }
        rx.handle_datagram(1_700_000_000, &d);
        // Poll sometimes per datagram, sometimes per batch: both paths.
        if op[1] & 0x80 != 0 || n % 16 == 15 {
            check(&mut rx);
        }
    }
    check(&mut rx);
    rx.handle_idle();
    check(&mut rx);
});
