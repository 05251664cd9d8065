//! Hostile and broken input: every case is a counted drop under its own reason,
//! never a panic, never a decoder call, never a stored chunk.

mod support;

use hubcast_protocol::receiver::{DropReason, Receiver, ReceiverConfig};
use hubcast_protocol::wire::{self, decode, Datagram, Kind, HEADER_LEN, MAX_DATAGRAM};
use hubcast_protocol::ObjectId;
use proptest::prelude::*;
use support::*;

const T: u16 = 128;
const CHUNK: u32 = 16 * 128;

fn kind(d: &[u8]) -> Kind {
    wire::decode_header(d).unwrap().kind
}

fn sample(ch: &Channel) -> (Vec<Content>, Vec<Vec<u8>>) {
    let objects = vec![content("a/b.bin", 3 * CHUNK as usize + 1, 2)];
    let d = broadcast(ch, &objects, CHUNK, T, 0.25, 1);
    (objects, d)
}

/// Feed `datagrams`; assert nothing completed and `reason` counted `n` times.
fn assert_dropped(ch: &Channel, datagrams: Vec<Vec<u8>>, reason: DropReason, n: u64) {
    let mut rx = receiver(ch.anchor);
    let mut got = Received::default();
    receive(&mut rx, datagrams, &mut got);
    assert!(got.chunks.is_empty() && got.manifests.is_empty(), "{reason:?}: accepted something");
    assert_eq!(rx.drops().get(reason), n, "{reason:?}: {:?}", rx.drops());
    assert_eq!(rx.stats().decode_attempts, 0);
}

#[test]
fn random_bytes_and_wrong_headers_are_counted() {
    let ch = channel(1);
    let mut junk = vec![vec![], vec![0u8; 5], b"HC".to_vec(), vec![0xAB; 1000]];
    junk.push([b"HC\x02\x04".as_slice(), &[0; 100]].concat());
    junk.push([b"HC\x01\x3f".as_slice(), &[0; 100]].concat());
    junk.push(vec![b'H'; MAX_DATAGRAM + 1]);
    let mut rx = receiver(ch.anchor);
    for j in &junk {
        rx.handle_datagram(NOW, j);
    }
    let d = rx.drops();
    assert_eq!(d.get(DropReason::Truncated), 2);
    assert_eq!(d.get(DropReason::BadMagic), 2);
    assert_eq!(d.get(DropReason::BadVersion), 1);
    assert_eq!(d.get(DropReason::BadKind), 1);
    assert_eq!(d.get(DropReason::Oversized), 1);
}

#[test]
fn every_truncation_of_every_kind_is_refused() {
    let ch = channel(1);
    let (_, datagrams) = sample(&ch);
    let mut seen = std::collections::HashSet::new();
    for d in datagrams.iter().filter(|d| seen.insert(kind(d))) {
        for len in 0..d.len() {
            let cut = &d[..len];
            // A table page or symbol cut at a digest/symbol boundary still parses;
            // its digest check refuses it. Every other cut must not parse.
            if matches!(kind(d), Kind::Manifest | Kind::Ticket) || len < HEADER_LEN + 40 {
                assert!(decode(cut).is_err(), "{:?} cut at {len} parsed", kind(d));
            }
        }
        let mut long = d.clone();
        long.push(0);
        if matches!(kind(d), Kind::Manifest | Kind::Ticket) {
            assert_eq!(decode(&long).unwrap_err(), wire::WireError::Oversized);
        }
    }
    assert_eq!(seen.len(), 4);
}

#[test]
fn forged_signatures_are_refused() {
    let ch = channel(1);
    let (_, datagrams) = sample(&ch);
    let forged: Vec<Vec<u8>> = datagrams
        .into_iter()
        .filter(|d| matches!(kind(d), Kind::Manifest | Kind::Ticket))
        .map(|mut d| {
            let n = d.len();
            d[n - 70] ^= 0x40; // a signed byte just before the signature
            d
        })
        .collect();
    let n = forged.len() as u64;
    assert_dropped(&ch, forged, DropReason::BadSignature, n);
}

#[test]
fn a_certificate_from_another_root_is_refused_even_with_our_channel_tag() {
    let ours = channel(1);
    let theirs = channel(2);
    let (_, datagrams) = sample(&theirs);
    let tag = ours.anchor.fingerprint.channel_tag().to_be_bytes();
    let spoofed: Vec<Vec<u8>> = datagrams
        .into_iter()
        .filter(|d| kind(d) == Kind::Ticket)
        .map(|mut d| {
            d[4..12].copy_from_slice(&tag);
            d
        })
        .collect();
    let n = spoofed.len() as u64;
    assert_dropped(&ours, spoofed, DropReason::UntrustedRoot, n);
}

#[test]
fn another_channels_traffic_is_dropped_by_tag() {
    let ours = channel(1);
    let (_, datagrams) = sample(&channel(2));
    let n = datagrams.len() as u64;
    assert_dropped(&ours, datagrams, DropReason::WrongChannel, n);
}

/// A hub given the wrong `--trust` can say which channel it hears: the root
/// another channel's manifests name, read at most once a second.
#[test]
fn another_channels_root_is_told_for_the_wrong_trust_hint() {
    let ours = channel(1);
    let theirs = channel(2);
    let (_, datagrams) = sample(&theirs);
    let mut rx = Receiver::new(ours.anchor, ReceiverConfig::default());
    assert_eq!(rx.foreign_root(), None);
    for d in &datagrams {
        rx.handle_datagram(NOW, d);
    }
    assert_eq!(rx.foreign_root(), Some(theirs.anchor.fingerprint));
    assert_eq!(rx.drops().get(DropReason::WrongChannel), datagrams.len() as u64);
    // Our own channel's traffic tells nothing of the kind.
    let mut rx = Receiver::new(ours.anchor, ReceiverConfig::default());
    for d in &sample(&ours).1 {
        rx.handle_datagram(NOW, d);
    }
    assert_eq!(rx.foreign_root(), None);
}

#[test]
fn an_expired_certificate_is_refused() {
    let ch = channel_valid(3, NOW - 100, 50);
    let (_, datagrams) = sample(&ch);
    let signed: Vec<Vec<u8>> =
        datagrams.into_iter().filter(|d| matches!(kind(d), Kind::Manifest | Kind::Ticket)).collect();
    let n = signed.len() as u64;
    assert_dropped(&ch, signed, DropReason::CertValidity, n);
}

#[test]
fn expired_manifests_and_tickets_are_refused() {
    let ch = channel(1);
    let objects = [content("x", 100, 1)];
    let mut plans = plans(&objects, CHUNK, T);
    plans[0].manifest.expiry = NOW - 1;
    let d = ch.signer.manifest_datagram(&plans[0].manifest);
    assert_dropped(&ch, vec![d], DropReason::Expired, 1);
}

#[test]
fn a_rolled_back_manifest_is_refused() {
    let ch = channel(1);
    let new = [content("same-name", 100, 1)];
    let old = [content("same-name", 100, 2)];
    let mut p_new = plans(&new, CHUNK, T);
    p_new[0].manifest.seq = 10;
    let mut p_old = plans(&old, CHUNK, T);
    p_old[0].manifest.seq = 9;
    let mut rx = receiver(ch.anchor);
    let mut got = Received::default();
    let stream = vec![
        ch.signer.manifest_datagram(&p_new[0].manifest),
        ch.signer.manifest_datagram(&p_old[0].manifest),
    ];
    receive(&mut rx, stream, &mut got);
    assert_eq!(got.manifests.len(), 1);
    assert_eq!(rx.drops().get(DropReason::RolledBack), 1);
}

#[test]
fn corrupted_symbols_never_reach_the_decoder_and_clean_ones_still_decode() {
    let ch = channel(1);
    let (objects, datagrams) = sample(&ch);
    let (control, symbols): (Vec<_>, Vec<_>) =
        datagrams.iter().cloned().partition(|d| kind(d) != Kind::Symbol);
    let corrupted: Vec<Vec<u8>> = symbols
        .iter()
        .map(|d| {
            let mut d = d.clone();
            let n = d.len();
            d[n - 1] ^= 1;
            d
        })
        .collect();
    let mut rx = receiver(ch.anchor);
    let mut got = Received::default();
    receive(&mut rx, control, &mut got);
    receive(&mut rx, corrupted, &mut got);
    assert_eq!(rx.drops().get(DropReason::DigestMismatch), symbols.len() as u64);
    assert_eq!(rx.stats().decode_attempts, 0);
    assert!(got.chunks.is_empty());
    receive(&mut rx, symbols, &mut got);
    let src = &objects[0].bytes;
    assert_eq!(got.object(ObjectId::of(src), src.len(), CHUNK).as_deref(), Some(&src[..]));
}

#[test]
fn batched_checks_refuse_corrupted_symbols_and_account_for_every_symbol() {
    let ch = channel(1);
    let (objects, datagrams) = sample(&ch);
    let (control, symbols): (Vec<_>, Vec<_>) = datagrams.into_iter().partition(|d| kind(d) != Kind::Symbol);
    let corrupted: Vec<Vec<u8>> = symbols
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let mut d = d.clone();
            if i % 5 == 4 {
                let n = d.len();
                d[n - 7] ^= 0x80;
            }
            d
        })
        .collect();
    let mut rx = receiver(ch.anchor);
    let mut got = Received::default();
    let symbol_outcomes = |rx: &hubcast_protocol::receiver::Receiver| {
        let d = rx.drops();
        rx.stats().symbols_accepted
            + d.get(DropReason::DigestMismatch)
            + d.get(DropReason::AlreadyComplete)
            + d.get(DropReason::Duplicate)
    };
    // Two rounds, each: tickets and pages, then every symbol with one in five
    // corrupted, fed as one batch before polling.
    for _ in 0..2 {
        receive_batched(&mut rx, control.clone(), &mut got);
        let before = symbol_outcomes(&rx);
        receive_batched(&mut rx, corrupted.clone(), &mut got);
        assert_eq!(symbol_outcomes(&rx) - before, corrupted.len() as u64, "each symbol counted once");
    }
    assert!(rx.drops().get(DropReason::DigestMismatch) >= 1, "{:?}", rx.drops());
    let src = &objects[0].bytes;
    assert_eq!(got.object(ObjectId::of(src), src.len(), CHUNK).as_deref(), Some(&src[..]));
}

#[test]
fn corrupted_table_pages_are_refused_and_their_symbols_wait() {
    let ch = channel(1);
    let (objects, datagrams) = sample(&ch);
    let mut rx = receiver(ch.anchor);
    let mut got = Received::default();
    let mut bad_pages = 0;
    let first_pass: Vec<Vec<u8>> = datagrams
        .iter()
        .map(|d| {
            let mut d = d.clone();
            if kind(&d) == Kind::TablePage {
                let n = d.len();
                d[n - 3] ^= 0x10;
                bad_pages += 1;
            }
            d
        })
        .collect();
    receive(&mut rx, first_pass, &mut got);
    assert_eq!(rx.drops().get(DropReason::PageMismatch), bad_pages);
    assert_eq!(rx.stats().symbols_accepted, 0);
    assert!(got.chunks.is_empty());
    // The clean pages release the symbols that waited for them.
    receive(&mut rx, datagrams.into_iter().filter(|d| kind(d) == Kind::TablePage), &mut got);
    let src = &objects[0].bytes;
    assert_eq!(got.object(ObjectId::of(src), src.len(), CHUNK).as_deref(), Some(&src[..]));
}

#[test]
fn esis_beyond_the_chunk_and_wrong_lengths_are_refused() {
    let ch = channel(1);
    let (_, datagrams) = sample(&ch);
    let mut rx = receiver(ch.anchor);
    let mut got = Received::default();
    let (ticket, page, sym) = {
        let find = |k| datagrams.iter().find(|d| kind(d) == k).unwrap().clone();
        (find(Kind::Ticket), find(Kind::TablePage), find(Kind::Symbol))
    };
    receive(&mut rx, [ticket, page], &mut got);
    let Datagram::Symbol(s) = decode(&sym).unwrap().1 else { unreachable!() };
    let tag = ch.anchor.fingerprint.channel_tag();
    let mut bad = Vec::new();
    wire::encode_symbol(&mut bad, tag, &s.object_id, s.chunk_index, 100, s.data); // beyond N_max = 40 of K = 16
    rx.handle_datagram(NOW, &bad);
    wire::encode_symbol(&mut bad, tag, &s.object_id, s.chunk_index, 1 << 23, s.data); // beyond any N_max
    rx.handle_datagram(NOW, &bad);
    wire::encode_symbol(&mut bad, tag, &s.object_id, s.chunk_index, s.esi, &s.data[..T as usize - 8]);
    rx.handle_datagram(NOW, &bad);
    assert_eq!(rx.drops().get(DropReason::BadSymbol), 2);
    assert_eq!(rx.drops().get(DropReason::OutOfRange), 1);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Arbitrary bytes never panic and never produce data.
    #[test]
    fn arbitrary_bytes_are_harmless(bytes in proptest::collection::vec(any::<u8>(), 0..1500)) {
        let ch = channel(1);
        let mut rx = receiver(ch.anchor);
        rx.handle_datagram(NOW, &bytes);
        let mut with_header = b"HC\x01".to_vec();
        with_header.extend_from_slice(&bytes);
        rx.handle_datagram(NOW, &with_header);
        prop_assert!(rx.poll_event().is_none());
        prop_assert_eq!(rx.drops().harmful(), 2);
    }

    /// Flipping any byte of any datagram never yields wrong data.
    #[test]
    fn bit_flips_never_yield_wrong_data(which in any::<prop::sample::Index>(), at in any::<prop::sample::Index>(), bit in 0u8..8) {
        let ch = channel(1);
        let (objects, mut datagrams) = sample(&ch);
        let i = which.index(datagrams.len());
        let j = at.index(datagrams[i].len());
        datagrams[i][j] ^= 1 << bit;
        let mut rx = receiver(ch.anchor);
        let mut got = Received::default();
        receive(&mut rx, datagrams.clone(), &mut got);
        let mut rx_batched = receiver(ch.anchor);
        let mut got_batched = Received::default();
        receive_batched(&mut rx_batched, datagrams, &mut got_batched);
        let src = &objects[0].bytes;
        for ((_, idx), data) in got.chunks.iter().chain(&got_batched.chunks) {
            let start = *idx as usize * CHUNK as usize;
            prop_assert_eq!(&data[..], &src[start..(start + CHUNK as usize).min(src.len())]);
        }
    }
}
