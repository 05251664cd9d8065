//! The channel's trust over time: a signing key renewed while the carousel
//! runs is taken by hubs beside the one before it.

mod support;

use hubcast_keys::{Certificate, SignerKeys, SigningKey};
use hubcast_protocol::receiver::DropReason;
use hubcast_protocol::sender::{Carousel, Step};
use hubcast_protocol::verify::RenewError;
use hubcast_protocol::wire::{decode, Datagram};
use support::*;

const T: u16 = 256;
const CHUNK: u32 = 16 * T as u32;

fn serial_of(datagram: &[u8]) -> Option<u64> {
    match decode(datagram).ok()?.1 {
        Datagram::Manifest(m) => Some(m.cert.serial),
        Datagram::Ticket(t) => Some(t.cert.serial),
        _ => None,
    }
}

#[test]
fn a_key_renewed_mid_carousel_is_taken_beside_the_one_before() {
    let ch = channel(41);
    let objects = [content("a.bin", 5 * CHUNK as usize, 1), content("b.bin", 3 * CHUNK as usize + 7, 2)];
    let plans = plans(&objects, CHUNK, T);
    let steps: Vec<Step> = Carousel::new(&plans, Some(1)).collect();
    let (before, after) = steps.split_at(steps.len() / 2);
    let mut datagrams: Vec<Vec<u8>> =
        before.iter().flat_map(|s| step_datagrams(&ch, &plans, &objects, *s, 0.1)).collect();
    let first = datagrams.iter().filter_map(|d| serial_of(d)).collect::<Vec<_>>();

    let renewed = SigningKey::from_bytes(&[77; 32]);
    let cert = Certificate::issue(&ch.keys.root, &renewed.verifying_key(), NOW - 5, NOW + 100, 2);
    ch.signer.renew(SignerKeys { signing: renewed, cert }).unwrap();
    assert_eq!((ch.signer.certificate().serial, ch.signer.renewals()), (2, 1));
    let later: Vec<Vec<u8>> =
        after.iter().flat_map(|s| step_datagrams(&ch, &plans, &objects, *s, 0.1)).collect();
    assert!(first.iter().all(|s| *s != 2) && !first.is_empty());
    assert!(later.iter().filter_map(|d| serial_of(d)).all(|s| s == 2), "every datagram after signs with 2");
    datagrams.extend(later);

    let mut rx = receiver(ch.anchor);
    let mut got = Received::default();
    receive(&mut rx, datagrams, &mut got);
    for o in &objects {
        let id = hubcast_protocol::ObjectId::of(&o.bytes);
        assert_eq!(got.object(id, o.bytes.len(), CHUNK).as_deref(), Some(&o.bytes[..]), "{}", o.name);
    }
    for r in [
        DropReason::CertSignature,
        DropReason::CertValidity,
        DropReason::BadSignature,
        DropReason::UntrustedRoot,
    ] {
        assert_eq!(rx.drops().get(r), 0, "{r:?}");
    }

    let stranger = SigningKey::from_bytes(&[78; 32]);
    let other = Certificate::issue(&stranger, &stranger.verifying_key(), NOW - 5, NOW + 100, 3);
    let refused = ch.signer.renew(SignerKeys { signing: stranger, cert: other });
    assert!(matches!(refused, Err(RenewError::OtherRoot(..))), "{refused:?}");
    assert_eq!(ch.signer.certificate().serial, 2, "kept the key in use");
}
