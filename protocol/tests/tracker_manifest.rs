//! The channel's tracker travels in its signed manifests: a hub given no
//! `--tracker` learns it there. Only verified manifests count, the newest
//! sequence wins, and a stored (restarted) hub learns it from a repeat.

mod support;

use hubcast_keys::{NodeAddr, NodeId};
use hubcast_protocol::receiver::DropReason;
use hubcast_protocol::wire::{self, decode, Datagram, WireError, TRACKER_LEN};
use support::*;

const T: u16 = 128;
const CHUNK: u32 = 16 * 128;

fn tracker(n: u8, addr: &str) -> NodeAddr {
    NodeAddr { id: NodeId([n; 32]), addr: addr.parse().unwrap() }
}

#[test]
fn a_manifest_carries_the_tracker_v4_and_v6_and_the_longest_name_fits() {
    let ch = channel(1);
    let long = "n".repeat(wire::MAX_NAME_LEN);
    for (name, at) in [("a", "192.0.2.7:7000"), ("b", "[2001:db8::1]:7001"), (long.as_str(), "10.0.0.1:1")] {
        let mut plan = plans(&[content(name, 100, 1)], CHUNK, T).remove(0);
        plan.manifest.tracker = Some(tracker(3, at));
        let d = ch.signer.manifest_datagram(&plan.manifest);
        assert!(d.len() <= wire::MAX_DATAGRAM, "{} bytes", d.len());
        let Ok((_, Datagram::Manifest(m))) = decode(&d) else { panic!("{name}: not a manifest") };
        assert_eq!(m.body, plan.manifest);
    }
}

#[test]
fn the_newest_verified_manifest_names_the_tracker() {
    let ch = channel(1);
    let objects = [content("x", 100, 1), content("y", 100, 2), content("z", 100, 3)];
    let mut p = plans(&objects, CHUNK, T);
    let (a, b) = (tracker(1, "192.0.2.1:7000"), tracker(2, "192.0.2.2:7000"));
    (p[0].manifest.seq, p[0].manifest.tracker) = (10, Some(a));
    (p[1].manifest.seq, p[1].manifest.tracker) = (9, Some(b)); // older: not adopted
    (p[2].manifest.seq, p[2].manifest.tracker) = (10, None); // names none: keeps a
    let mut rx = receiver(ch.anchor);
    let mut got = Received::default();
    assert_eq!(rx.tracker(), None);
    receive(&mut rx, p.iter().map(|p| ch.signer.manifest_datagram(&p.manifest)), &mut got);
    assert_eq!(got.manifests.len(), 3);
    assert_eq!(rx.tracker(), Some(a));

    // The broadcaster restarts on another address: its next manifests win.
    (p[1].manifest.seq, p[1].manifest.tracker) = (11, Some(b));
    receive(&mut rx, [ch.signer.manifest_datagram(&p[1].manifest)], &mut got);
    assert_eq!(rx.tracker(), Some(b));
}

#[test]
fn a_hub_with_the_manifest_stored_learns_the_tracker_from_a_repeat() {
    let ch = channel(1);
    let mut plan = plans(&[content("x", 100, 1)], CHUNK, T).remove(0);
    // Stored when the channel named no tracker; verified again at start.
    let stored = ch.signer.manifest_datagram(&plan.manifest);
    let mut rx = receiver(ch.anchor);
    let restored = rx.restore_manifest(&stored, NOW).expect("it holds as of when it came");
    assert_eq!(restored.object_id, plan.manifest.object_id);
    assert_eq!(rx.manifest_datagram(&plan.manifest.object_id), Some(&stored[..]), "kept for bridges");
    let a = tracker(1, "192.0.2.1:7000");
    plan.manifest.tracker = Some(a);
    let d = ch.signer.manifest_datagram(&plan.manifest);
    let mut got = Received::default();
    receive(&mut rx, [d.clone(), d], &mut got);
    assert!(got.manifests.is_empty(), "a repeat is no new manifest");
    assert_eq!(rx.tracker(), Some(a));
    assert_eq!(rx.drops().get(DropReason::Duplicate), 2);
}

#[test]
fn a_forged_or_malformed_tracker_is_refused_and_not_adopted() {
    let ch = channel(1);
    let mut plan = plans(&[content("x", 100, 1)], CHUNK, T).remove(0);
    plan.manifest.tracker = Some(tracker(1, "192.0.2.1:7000"));
    let good = ch.signer.manifest_datagram(&plan.manifest);
    let port_at = wire::field_range(&good, wire::Field::TrackerPort).expect("a tracker's port").start;

    // An attacker points hubs at its own address: the signature no longer holds.
    let mut forged = good.clone();
    forged[port_at - 1] ^= 1;
    // The flag set but the tracker cut off; an unknown flag bit; port 0.
    let cut = [&good[..port_at - TRACKER_LEN + 2], &good[port_at + 2..]].concat();
    let mut flags = good.clone();
    flags[wire::field_range(&good, wire::Field::Flags).unwrap().start] |= 0x80;
    let mut port0 = good.clone();
    port0[port_at..port_at + 2].copy_from_slice(&[0, 0]);
    assert!(matches!(decode(&cut), Err(WireError::Truncated | WireError::Oversized)));
    assert_eq!(decode(&flags).err(), Some(WireError::OutOfRange));
    assert_eq!(decode(&port0).err(), Some(WireError::OutOfRange));

    let mut rx = receiver(ch.anchor);
    let mut got = Received::default();
    receive(&mut rx, [forged, cut, flags, port0], &mut got);
    assert!(got.manifests.is_empty());
    assert_eq!(rx.tracker(), None);
    assert_eq!(rx.drops().get(DropReason::BadSignature), 1, "{:?}", rx.drops());
}

#[test]
fn a_stored_manifest_is_verified_again_as_of_when_it_came() {
    let ch = channel(1);
    let plan = plans(&[content("x", 100, 1)], CHUNK, T).remove(0);
    let d = ch.signer.manifest_datagram(&plan.manifest);
    // Checked as of a year on, its certificate has run out; as of when it
    // came, it holds.
    let later = plan.manifest.expiry + 86_400 * 365;
    assert_eq!(receiver(ch.anchor).restore_manifest(&d, later).err(), Some(DropReason::CertValidity));
    assert!(receiver(ch.anchor).restore_manifest(&d, NOW).is_ok());
    // A byte flipped on disk; another channel's; not a manifest.
    let mut damaged = d.clone();
    let last = damaged.len() - 1;
    damaged[last] ^= 1;
    assert_eq!(receiver(ch.anchor).restore_manifest(&damaged, NOW).err(), Some(DropReason::BadSignature));
    let other = channel(2);
    let foreign = other.signer.manifest_datagram(&plan.manifest);
    assert_eq!(receiver(ch.anchor).restore_manifest(&foreign, NOW).err(), Some(DropReason::WrongChannel));
    let ticket = broadcast(&ch, &[content("x", 100, 1)], CHUNK, T, 0.0, 1)
        .into_iter()
        .find(|d| wire::decode_header(d).is_ok_and(|h| h.kind == wire::Kind::Ticket))
        .expect("a ticket");
    assert_eq!(receiver(ch.anchor).restore_manifest(&ticket, NOW).err(), Some(DropReason::BadKind));
    assert_eq!(receiver(ch.anchor).restore_manifest(&[], NOW).err(), Some(DropReason::Truncated));
}
