//! Every field a hub acts on is covered by the broadcaster's signature: one
//! test per field flips a bit of it, found where the codec lays it out
//! (`wire::field_range`), checks that the datagram still decodes with that
//! field changed (so the flip hit the field and nothing else refused it), and
//! that the receiver drops it as a bad signature and adopts nothing.

mod support;

use hubcast_keys::{NodeAddr, NodeId};
use hubcast_protocol::receiver::{DropReason, Event};
use hubcast_protocol::wire::{self, decode, Datagram, Field, LiveSegment, Manifest};
use support::*;

const T: u16 = 256;
const CHUNK: u32 = 40 * T as u32;

#[derive(Clone, Copy, Debug)]
enum Signed {
    /// An archive object's manifest, naming the channel's tracker.
    Archive,
    /// A live segment's manifest.
    Live,
    /// A chunk's ticket.
    Ticket,
}

struct Genuine {
    ch: Channel,
    manifest: Vec<u8>,
    ticket: Vec<u8>,
    live: Vec<u8>,
}

fn genuine() -> Genuine {
    let ch = channel(31);
    let file = content("films/Evening News.bin", 2 * CHUNK as usize + 77, 5);
    let stream = broadcast(&ch, std::slice::from_ref(&file), CHUNK, T, 0.1, 1);
    let ticket = stream
        .iter()
        .find(|d| matches!(decode(d), Ok((_, Datagram::Ticket(_)))))
        .expect("a ticket in the round")
        .clone();
    let mut m = plans(std::slice::from_ref(&file), CHUNK, T).remove(0).manifest;
    m.tracker = Some(NodeAddr { id: NodeId([9; 32]), addr: "192.0.2.1:7000".parse().unwrap() });
    let manifest = ch.signer.manifest_datagram(&m);
    let live = Manifest {
        name: "news".into(),
        live: Some(LiveSegment {
            seq: 41,
            ingest_ms: NOW * 1000,
            deadline_ms: NOW * 1000 + 60_000,
            duration_us: 1_000_000,
            discontinuity: false,
        }),
        ..m.clone()
    };
    let live = ch.signer.manifest_datagram(&live);
    Genuine { ch, manifest, ticket, live }
}

/// The datagram with `flip` applied to the bytes of `field`.
fn forge(d: &[u8], field: Field, flip: fn(&mut [u8])) -> Vec<u8> {
    let at = wire::field_range(d, field).unwrap_or_else(|| panic!("{field:?} is not in this datagram"));
    let mut forged = d.to_vec();
    flip(&mut forged[at]);
    forged
}

fn refused_when_flipped(kind: Signed, field: Field, flip: fn(&mut [u8])) {
    let g = genuine();
    let original = match kind {
        Signed::Archive => &g.manifest,
        Signed::Live => &g.live,
        Signed::Ticket => &g.ticket,
    };
    let forged = forge(original, field, flip);
    // The forgery is well formed, and says something else in that field.
    let (_, said) =
        decode(&forged).unwrap_or_else(|e| panic!("{kind:?} {field:?}: forged copy undecodable: {e:?}"));
    let (_, meant) = decode(original).unwrap();
    assert_ne!(said, meant, "{kind:?} {field:?}: the flip changed nothing the codec reads");

    // The genuine datagram is taken; the forged one is dropped as unsigned.
    for (d, genuine) in [(original, true), (&forged, false)] {
        let mut rx = receiver(g.ch.anchor);
        if matches!(kind, Signed::Ticket) {
            rx.handle_datagram(NOW, &g.ticket_manifest());
            while rx.poll_event().is_some() {}
        }
        let tracker = rx.tracker();
        rx.handle_datagram(NOW, d);
        let bad = rx.drops().get(DropReason::BadSignature);
        let events: Vec<Event> = std::iter::from_fn(|| rx.poll_event()).collect();
        if genuine {
            assert_eq!(rx.drops().harmful(), 0, "{kind:?}: the genuine datagram: {:?}", rx.drops());
        } else {
            assert_eq!(bad, 1, "{kind:?} {field:?}: {:?}", rx.drops());
            assert!(events.is_empty(), "{kind:?} {field:?}: adopted {events:?}");
            assert_eq!(rx.tracker(), tracker, "{kind:?} {field:?}");
        }
    }
}

impl Genuine {
    /// The manifest of the object the ticket belongs to.
    fn ticket_manifest(&self) -> Vec<u8> {
        let Ok((_, Datagram::Ticket(t))) = decode(&self.ticket) else { unreachable!() };
        let Ok((_, Datagram::Manifest(m))) = decode(&self.manifest) else { unreachable!() };
        assert_eq!(t.body.object_id, m.body.object_id);
        self.manifest.clone()
    }
}

fn low_bit(b: &mut [u8]) {
    *b.last_mut().unwrap() ^= 1;
}
fn first_bit(b: &mut [u8]) {
    b[0] ^= 0x80;
}
/// A letter's case: the name stays valid UTF-8 (and a valid channel name).
fn letter_case(b: &mut [u8]) {
    let i = b.iter().position(u8::is_ascii_alphabetic).expect("a letter in the name");
    b[i] ^= 0x20;
}
/// A symbol size stays a multiple of 8.
fn eight(b: &mut [u8]) {
    *b.last_mut().unwrap() ^= 8;
}
/// The round-end mark: a hub that believes it starts repairing.
fn round_end(b: &mut [u8]) {
    b[0] ^= 2;
}
/// The on-demand mark: a hub that believes it never takes the object
/// from the carousel (or, cleared, waits for a carousel that never sends it).
fn on_demand(b: &mut [u8]) {
    b[0] ^= 8;
}

macro_rules! forged {
    ($($test:ident: $kind:ident $field:ident $flip:ident;)*) => {$(
        #[test]
        fn $test() {
            refused_when_flipped(Signed::$kind, Field::$field, $flip);
        }
    )*};
}

forged! {
    manifest_sequence: Archive Seq low_bit;
    manifest_expiry: Archive Expiry low_bit;
    manifest_object_id: Archive ObjectId first_bit;
    manifest_size: Archive Size low_bit;
    manifest_chunk_size: Archive ChunkSize low_bit;
    manifest_symbol_size: Archive SymbolSize eight;
    manifest_round_end_mark: Archive Flags round_end;
    manifest_on_demand_mark: Archive Flags on_demand;
    manifest_name: Archive Name letter_case;
    manifest_tracker_id: Archive TrackerId first_bit;
    manifest_tracker_address: Archive TrackerIp low_bit;
    manifest_tracker_port: Archive TrackerPort low_bit;
    live_channel_name: Live Name letter_case;
    live_segment_sequence: Live LiveSeq low_bit;
    live_ingest_time: Live LiveIngest low_bit;
    live_deadline: Live LiveDeadline low_bit;
    live_duration: Live LiveDuration low_bit;
    live_discontinuity: Live LiveDiscontinuity low_bit;
    ticket_sequence: Ticket Seq low_bit;
    ticket_object_id: Ticket ObjectId first_bit;
    ticket_chunk_index: Ticket ChunkIndex low_bit;
    ticket_chunk_len: Ticket ChunkLen low_bit;
    ticket_symbol_size: Ticket SymbolSize eight;
    ticket_chunk_hash: Ticket ChunkHash first_bit;
    ticket_page_hashes: Ticket PageHashes first_bit;
}

/// The layout `field_range` gives is the encoder's: each field's bytes hold
/// that field's value, and the fields tile the signed bytes up to the
/// signature.
#[test]
fn field_ranges_hold_each_fields_encoded_value() {
    let g = genuine();
    let Ok((_, Datagram::Manifest(m))) = decode(&g.manifest) else { panic!() };
    let Ok((_, Datagram::Manifest(l))) = decode(&g.live) else { panic!() };
    let Ok((_, Datagram::Ticket(t))) = decode(&g.ticket) else { panic!() };
    let at = |d: &[u8], f| d[wire::field_range(d, f).unwrap_or_else(|| panic!("{f:?}"))].to_vec();
    let (mb, lb, tb) = (&m.body, l.body.live.unwrap(), &t.body);
    let tracker = mb.tracker.unwrap();
    let d = &g.manifest;
    assert_eq!(at(d, Field::Seq), mb.seq.to_be_bytes());
    assert_eq!(at(d, Field::Expiry), mb.expiry.to_be_bytes());
    assert_eq!(at(d, Field::ObjectId), mb.object_id.0);
    assert_eq!(at(d, Field::Size), mb.size.to_be_bytes());
    assert_eq!(at(d, Field::ChunkSize), mb.chunk_size.to_be_bytes());
    assert_eq!(at(d, Field::SymbolSize), mb.symbol_size.to_be_bytes());
    assert_eq!(at(d, Field::Codec), [mb.codec]);
    assert_eq!(at(d, Field::NameLen), (mb.name.len() as u16).to_be_bytes());
    assert_eq!(at(d, Field::Name), mb.name.as_bytes());
    assert_eq!(at(d, Field::TrackerId), tracker.id.0);
    assert_eq!(at(d, Field::TrackerIp)[12..], [192, 0, 2, 1]);
    assert_eq!(at(d, Field::TrackerPort), tracker.addr.port().to_be_bytes());
    assert_eq!(at(d, Field::Signature), m.signature);
    assert_eq!(wire::field_range(d, Field::LiveSeq), None, "an archive manifest is not live");
    assert_eq!(wire::field_range(d, Field::ChunkHash), None, "a manifest has no chunk hash");
    let d = &g.live;
    assert_eq!(at(d, Field::Name), b"news");
    assert_eq!(at(d, Field::LiveSeq), lb.seq.to_be_bytes());
    assert_eq!(at(d, Field::LiveIngest), lb.ingest_ms.to_be_bytes());
    assert_eq!(at(d, Field::LiveDeadline), lb.deadline_ms.to_be_bytes());
    assert_eq!(at(d, Field::LiveDuration), lb.duration_us.to_be_bytes());
    assert_eq!(at(d, Field::LiveDiscontinuity), [0]);
    assert_eq!(wire::field_range(d, Field::LiveDiscontinuity).unwrap().end, d.len() - wire::SIGNATURE_LEN);
    let d = &g.ticket;
    assert_eq!(at(d, Field::Seq), tb.seq.to_be_bytes());
    assert_eq!(at(d, Field::ChunkIndex), tb.chunk_index.to_be_bytes());
    assert_eq!(at(d, Field::ChunkLen), tb.chunk_len.to_be_bytes());
    assert_eq!(at(d, Field::SymbolSize), tb.symbol_size.to_be_bytes());
    assert_eq!(at(d, Field::ChunkHash), tb.chunk_hash);
    assert_eq!(at(d, Field::PageCount), (tb.page_hashes.len() as u16).to_be_bytes());
    assert_eq!(at(d, Field::PageHashes), tb.page_hashes.concat());
    assert_eq!(wire::field_range(d, Field::PageHashes).unwrap().end, d.len() - wire::SIGNATURE_LEN);
    assert_eq!(wire::peek_ticket_geometry(d), Some((tb.chunk_len, tb.symbol_size)));
    assert_eq!(wire::field_range(d, Field::Name), None, "a ticket has no name");
    // Not a signed datagram, or cut short: no field.
    let symbol = broadcast(&g.ch, &[content("x", 100, 1)], CHUNK, T, 0.0, 1)
        .into_iter()
        .find(|d| matches!(decode(d), Ok((_, Datagram::Symbol(_)))))
        .unwrap();
    assert_eq!(wire::field_range(&symbol, Field::Seq), None);
    assert_eq!(wire::field_range(&g.manifest[..100], Field::Name), None);
}

/// The on-demand mark round-trips, and is refused on a live segment (a
/// segment is never announced without being sent).
#[test]
fn the_on_demand_mark_round_trips_and_never_marks_a_live_segment() {
    let g = genuine();
    let Ok((_, Datagram::Manifest(m))) = decode(&g.manifest) else { panic!("the genuine manifest decodes") };
    assert!(!m.body.on_demand);
    let marked = Manifest { on_demand: true, ..m.body.clone() };
    let d = g.ch.signer.manifest_datagram(&marked);
    let Ok((_, Datagram::Manifest(back))) = decode(&d) else { panic!("an on-demand manifest decodes") };
    assert_eq!(back.body, marked);
    let Ok((_, Datagram::Manifest(l))) = decode(&g.live) else { panic!("the live manifest decodes") };
    let d = g.ch.signer.manifest_datagram(&Manifest { on_demand: true, ..l.body.clone() });
    assert_eq!(decode(&d).err(), Some(wire::WireError::OutOfRange));
}
