//! The catalog's signed root at the receiver: a newer version is taken
//! (once), a copy is a benign duplicate, an older one is refused as a
//! rollback, also after a restart that restored the stored root, and a
//! forgery or another channel's root is refused before it counts.

mod support;

use hubcast_protocol::receiver::DropReason;
use hubcast_protocol::wire::CatalogRoot;
use hubcast_protocol::ObjectId;
use support::*;

fn root(version: u64) -> CatalogRoot {
    CatalogRoot {
        version,
        expiry: NOW + 3600,
        entries: 10,
        pages: 1,
        index_id: ObjectId([version as u8; 32]),
        index_size: 8 + 36,
    }
}

#[test]
fn catalog_roots_only_move_forward() {
    let ch = channel(5);
    let mut rx = receiver(ch.anchor);
    let count = |rx: &hubcast_protocol::receiver::Receiver, r| rx.drops().get(r);

    let v5 = ch.signer.catalog_root_datagram(&root(5));
    rx.handle_datagram(NOW, &v5);
    let (got, datagram) = rx.take_new_catalog_root().expect("version 5 taken");
    assert_eq!((got, &datagram), (root(5), &v5));
    assert!(rx.take_new_catalog_root().is_none(), "taken once");

    // Replayed: a duplicate, nothing new.
    rx.handle_datagram(NOW, &v5);
    assert_eq!(count(&rx, DropReason::Duplicate), 1);
    assert!(rx.take_new_catalog_root().is_none());
    // Rolled back: refused, counted.
    rx.handle_datagram(NOW, &ch.signer.catalog_root_datagram(&root(4)));
    assert_eq!(count(&rx, DropReason::RolledBack), 1);
    assert_eq!(rx.catalog_root().map(|(r, _)| r.version), Some(5));
    // Forged: a flipped byte in the signed part.
    let mut forged = ch.signer.catalog_root_datagram(&root(9));
    forged[200] ^= 1;
    rx.handle_datagram(NOW, &forged);
    assert_eq!(count(&rx, DropReason::BadSignature), 1);
    // Another channel's, on the same group: dropped before any check.
    let other = channel(6);
    rx.handle_datagram(NOW, &other.signer.catalog_root_datagram(&root(10)));
    assert_eq!(count(&rx, DropReason::WrongChannel), 1);
    // Newer: taken.
    let v6 = ch.signer.catalog_root_datagram(&root(6));
    rx.handle_datagram(NOW, &v6);
    assert_eq!(rx.take_new_catalog_root().map(|(r, _)| r.version), Some(6));

    // A restart: the stored root is restored, and an older one is still refused.
    let mut again = receiver(ch.anchor);
    again.restore_catalog_root(&v6, NOW).unwrap();
    assert!(again.take_new_catalog_root().is_none(), "the store has it already");
    again.handle_datagram(NOW, &v5);
    assert_eq!(count(&again, DropReason::RolledBack), 1);
    assert!(again.restore_catalog_root(&other.signer.catalog_root_datagram(&root(1)), NOW).is_err());
    // Expired: refused.
    let stale = ch.signer.catalog_root_datagram(&CatalogRoot { expiry: NOW - 1, ..root(7) });
    again.handle_datagram(NOW, &stale);
    assert_eq!(count(&again, DropReason::Expired), 1);
}
