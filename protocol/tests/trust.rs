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

/// The root's revocation list: once a hub holds it, what the revoked key
/// signs is refused and counted; the renewed key's is taken; an older
/// list, a forged one and a malformed one are refused each by name, and a
/// restart keeps the newest.
#[test]
fn a_revoked_key_is_refused_from_the_list_on_and_the_list_never_rolls_back() {
    use hubcast_keys::RevocationList;
    use hubcast_protocol::wire::revocations_datagram;
    let ch = channel(42);
    let revoked_serial = ch.signer.certificate().serial;
    let objects = [content("old.bin", 2 * CHUNK as usize, 3)];
    let replay = broadcast(&ch, &objects, CHUNK, T, 0.1, 1);
    let tag = ch.signer.channel_tag();
    let list = |version, serials: &[u64]| {
        let l =
            RevocationList::issue(&ch.keys.root, version, NOW, &serials.iter().copied().collect()).unwrap();
        revocations_datagram(&l, tag)
    };
    let (v1, v2) = (list(1, &[12345]), list(2, &[12345, revoked_serial]));

    let mut rx = receiver(ch.anchor);
    let mut got = Received::default();
    receive(&mut rx, [v1.clone(), v2.clone(), v2.clone(), v1.clone()], &mut got);
    assert_eq!(rx.drops().get(DropReason::Duplicate), 1, "the held list again");
    assert_eq!(rx.drops().get(DropReason::RevocationsRolledBack), 1, "version 1 after 2");
    assert_eq!(rx.take_new_revocations().as_deref(), Some(&v2[..]));

    receive(&mut rx, replay.clone(), &mut got);
    assert!(got.chunks.is_empty() && got.manifests.is_empty(), "nothing signed by the revoked key taken");
    let refused = rx.drops().get(DropReason::CertRevoked);
    assert!(refused >= 2, "the manifest and the tickets: {refused}");

    // The renewed key's content is taken.
    let renewed = SigningKey::from_bytes(&[79; 32]);
    let cert =
        Certificate::issue(&ch.keys.root, &renewed.verifying_key(), NOW - 5, NOW + 100, revoked_serial + 1);
    ch.signer.renew(SignerKeys { signing: renewed, cert }).unwrap();
    let fresh = [content("new.bin", CHUNK as usize + 9, 4)];
    receive(&mut rx, broadcast(&ch, &fresh, CHUNK, T, 0.1, 1), &mut got);
    let id = hubcast_protocol::ObjectId::of(&fresh[0].bytes);
    assert_eq!(got.object(id, fresh[0].bytes.len(), CHUNK).as_deref(), Some(&fresh[0].bytes[..]));

    // A list signed by another root, one with a flipped byte, one cut short.
    let stranger = SigningKey::from_bytes(&[80; 32]);
    let foreign = RevocationList::issue(&stranger, 9, NOW, &Default::default()).unwrap();
    let mut forged = list(3, &[]);
    let last = forged.len() - 1;
    forged[last] ^= 1;
    let mut short = list(4, &[1]);
    short.truncate(short.len() - 8);
    receive(&mut rx, [revocations_datagram(&foreign, tag), forged, short], &mut got);
    assert_eq!(rx.drops().get(DropReason::UntrustedRoot), 1);
    assert_eq!(rx.drops().get(DropReason::RevocationsSignature), 1);
    assert_eq!(rx.drops().get(DropReason::BadRevocations), 1);

    // A restart restores the newest list: the revoked key stays refused and
    // version 1 stays old.
    let mut restarted = receiver(ch.anchor);
    restarted.restore_revocations(&v2).unwrap();
    assert_eq!(restarted.take_new_revocations(), None, "restored, not new");
    let mut after = Received::default();
    receive(&mut restarted, replay.into_iter().chain([v1]), &mut after);
    assert!(after.chunks.is_empty());
    assert!(restarted.drops().get(DropReason::CertRevoked) > 0);
    assert_eq!(restarted.drops().get(DropReason::RevocationsRolledBack), 1);
}

/// Root rotation: a hub configured with the first root follows the chain
/// one version at a time, refuses a forged statement (new root alone), a
/// skipped version and a rollback, each by name, takes the new root's
/// certificates and no longer the old root's, and a restart follows the
/// stored chain again.
#[test]
fn a_hub_follows_root_rotations_one_at_a_time_and_refuses_forged_skipped_and_rolled_back_ones() {
    use hubcast_keys::RootRotation;
    use hubcast_protocol::verify::Signer;
    use hubcast_protocol::wire::rotation_datagram;
    let ch = channel(43);
    let tag = ch.signer.channel_tag();
    let r1 = ch.keys.root.clone();
    let (r2, r3, thief) = (
        SigningKey::from_bytes(&[82; 32]),
        SigningKey::from_bytes(&[83; 32]),
        SigningKey::from_bytes(&[84; 32]),
    );
    let s2 = rotation_datagram(&RootRotation::issue(&r1, &r2, 2), tag);
    let s3 = rotation_datagram(&RootRotation::issue(&r2, &r3, 3), tag);
    let forged = RootRotation::sign_with(&thief, &thief, r2.verifying_key(), thief.verifying_key(), 3);
    let skipped = RootRotation::issue(&r2, &thief, 4);
    let rolled_back = RootRotation::issue(&r1, &thief, 2); // the old root leaked
    let mut rx = receiver(ch.anchor);
    let mut got = Received::default();
    receive(&mut rx, [s3.clone(), s2.clone(), s2.clone()], &mut got);
    assert_eq!(rx.drops().get(DropReason::RotationSkipped), 1, "version 3 before 2");
    assert_eq!(rx.drops().get(DropReason::Duplicate), 1);
    assert_eq!(rx.root().1, 2);
    let refusals = [
        (rotation_datagram(&forged, tag), DropReason::RotationSignature),
        (rotation_datagram(&skipped, tag), DropReason::RotationSkipped),
        (rotation_datagram(&rolled_back, tag), DropReason::RotationRolledBack),
    ];
    for (d, reason) in refusals {
        let before = rx.drops().get(reason);
        receive(&mut rx, [d], &mut got);
        assert_eq!(rx.drops().get(reason), before + 1, "{reason:?}");
        assert_eq!(rx.root().1, 2, "{reason:?} not followed");
    }
    receive(&mut rx, [s3.clone()], &mut got);
    assert_eq!(rx.root(), (hubcast_keys::Fingerprint::of(&r3.verifying_key()), 3));
    assert_eq!(rx.take_new_rotations().len(), 2);

    // Content signed under root 3 is taken; the first root's is refused.
    let objects = [content("after.bin", CHUNK as usize * 2, 5)];
    let signing = SigningKey::from_bytes(&[85; 32]);
    let cert = Certificate::issue(&r3, &signing.verifying_key(), NOW - 5, NOW + 100, 9);
    let rotated = support::Channel {
        keys: hubcast_keys::ChannelKeys {
            root: r3.clone(),
            signer: SignerKeys { signing: signing.clone(), cert: cert.clone() },
        },
        signer: Signer::for_channel(SignerKeys { signing, cert }, ch.anchor.fingerprint),
        anchor: ch.anchor,
    };
    assert_eq!(rotated.signer.channel_tag(), tag, "the channel keeps its tag");
    receive(&mut rx, broadcast(&rotated, &objects, CHUNK, T, 0.1, 1), &mut got);
    let id = hubcast_protocol::ObjectId::of(&objects[0].bytes);
    assert_eq!(got.object(id, objects[0].bytes.len(), CHUNK).as_deref(), Some(&objects[0].bytes[..]));
    let old = rx.drops().get(DropReason::UntrustedRoot);
    receive(&mut rx, broadcast(&ch, &[content("old root.bin", 100, 6)], CHUNK, T, 0.1, 1), &mut got);
    assert!(rx.drops().get(DropReason::UntrustedRoot) > old, "the first root's certificates are refused");

    // A restart follows the stored chain: root 3, and version 2 is old.
    let mut restarted = receiver(ch.anchor);
    restarted.restore_rotation(&s2).unwrap();
    restarted.restore_rotation(&s3).unwrap();
    assert_eq!(restarted.root().1, 3);
    assert!(restarted.take_new_rotations().is_empty());
    assert_eq!(
        restarted.restore_rotation(&rotation_datagram(&rolled_back, tag)),
        Err(DropReason::RotationRolledBack)
    );
}

/// What the tracker answers a registration with: the statements newer than
/// the versions the hub holds, rotations first, and the list only when every
/// rotation before it fits (it checks out under the newest root alone).
#[test]
fn a_registration_is_answered_with_the_statements_the_hub_lacks_in_an_order_it_can_follow() {
    use hubcast_keys::{RevocationList, RootRotation};
    let ch = channel(44);
    let r1 = ch.keys.root.clone();
    let (r2, r3) = (SigningKey::from_bytes(&[86; 32]), SigningKey::from_bytes(&[87; 32]));
    let chain = [RootRotation::issue(&r1, &r2, 2), RootRotation::issue(&r2, &r3, 3)];
    ch.signer.set_rotations(&chain);
    let list = RevocationList::issue(&r3, 4, NOW, &[7u64].into_iter().collect()).unwrap();
    ch.signer.set_revocations(&list);
    let all = ch.signer.statements();
    assert_eq!(all.len(), 3);
    assert_eq!(ch.signer.statements_newer(1, 0, 8), all, "a new hub lacks every one");
    assert!(ch.signer.statements_newer(3, 4, 8).is_empty(), "nothing in the steady state");
    assert_eq!(ch.signer.statements_newer(2, 0, 8), all[1..], "past its root only");
    assert_eq!(ch.signer.statements_newer(3, 3, 8), all[2..], "a newer list alone");
    assert_eq!(ch.signer.statements_newer(1, 0, 2), all[..2], "the list waits for the rotations");
    assert_eq!(ch.signer.statements_newer(1, 0, 1), all[..1]);

    // A hub at the first root that takes the answer in two registrations of
    // one statement each ends where the whole answer takes it.
    let mut rx = receiver(ch.anchor);
    let mut got = Received::default();
    for _ in 0..3 {
        let held = (rx.root().1, rx.revocation_list().map_or(0, |l| l.version));
        receive(&mut rx, ch.signer.statements_newer(held.0, held.1, 1), &mut got);
    }
    assert_eq!(rx.root(), (hubcast_keys::Fingerprint::of(&r3.verifying_key()), 3));
    assert_eq!(rx.revocation_list().map(|l| l.version), Some(4));
    assert!(rx.drops().iter().all(|(_, n)| n == 0), "nothing refused: {:?}", rx.drops());
}
