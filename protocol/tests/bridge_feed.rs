//! What a bridge forwards: the manifest datagrams its receiver checked, and for
//! every completed chunk the signed ticket, the table pages and the K source
//! symbols. A desert hub's receiver completes every chunk from exactly that.

mod support;

use hubcast_protocol::peer_wire::EsiRanges;
use hubcast_protocol::receiver::Event;
use hubcast_protocol::serve::{answer_complete, ChunkRequest, ChunkServer};
use hubcast_protocol::wire::{self, decode, Datagram};
use hubcast_protocol::ObjectId;
use std::collections::BTreeMap;
use support::*;

const T: u16 = 256;
const CHUNK: u32 = 40 * T as u32;

#[test]
fn a_desert_receiver_completes_every_chunk_from_the_bridge_feed_alone() {
    let ch = channel(7);
    let file = content("feed.bin", 3 * CHUNK as usize + 999, 3);
    let datagrams = broadcast(&ch, std::slice::from_ref(&file), CHUNK, T, 0.2, 1);
    let manifest =
        datagrams.iter().find(|d| matches!(decode(d), Ok((_, Datagram::Manifest(_))))).unwrap().clone();

    // The bridge: a forged manifest first (one name byte changed), then the
    // multicast. Only the checked manifest is kept to forward.
    let mut bridge = receiver(ch.anchor);
    let id = ObjectId::of(&file.bytes);
    let mut forged = manifest.clone();
    let name_at = wire::field_range(&forged, wire::Field::Name).expect("a manifest's name").start;
    forged[name_at] ^= 0x20;
    bridge.handle_datagram(NOW, &forged);
    assert_eq!(bridge.manifest_datagram(&id), None, "a manifest that fails its signature is not kept");
    let mut tickets = BTreeMap::new();
    let mut chunks = BTreeMap::new();
    for d in &datagrams {
        bridge.handle_datagram(NOW, d);
        if let Some((len, t)) = wire::peek_ticket_geometry(d) {
            let Ok((_, Datagram::Ticket(ticket))) = decode(d) else { panic!("peeked a non-ticket") };
            assert_eq!((len, t), (ticket.body.chunk_len, ticket.body.symbol_size));
        } else {
            assert!(!matches!(decode(d), Ok((_, Datagram::Ticket(_)))));
        }
    }
    bridge.handle_idle();
    while let Some(e) = bridge.poll_event() {
        if let Event::ChunkComplete(c) = e {
            tickets.insert(c.index(), c.ticket().to_vec());
            chunks.insert(c.index(), c.data().to_vec());
        }
    }
    assert_eq!(bridge.manifest_datagram(&id), Some(manifest.as_slice()));
    assert_eq!(chunks.len(), 4);

    // The feed, as the bridge serves it from its store.
    let mut feed = vec![manifest];
    for (index, data) in &chunks {
        let (len, t) = wire::peek_ticket_geometry(&tickets[index]).unwrap();
        let k = wire::source_symbols(len, t);
        let pages = wire::page_count(wire::n_max(k));
        let server = ChunkServer::new(tickets[index].clone(), data.clone()).unwrap();
        let req = ChunkRequest {
            object_id: id,
            index: *index,
            table: Some((1u32 << pages) - 1),
            esis: EsiRanges::new(vec![(0, k as u16)]).unwrap(),
        };
        let answer = answer_complete(&req, &server).unwrap();
        assert_eq!(answer.len(), 1 + pages + k as usize, "ticket, pages, K symbols");
        feed.extend(answer);
    }
    let mut desert = receiver(ch.anchor);
    let mut got = Received::default();
    receive(&mut desert, feed.clone(), &mut got);
    assert_eq!(got.manifests, ["feed.bin"]);
    assert_eq!(got.object(id, file.bytes.len(), CHUNK).as_deref(), Some(file.bytes.as_slice()));
    assert_eq!(desert.drops().harmful(), 0);

    // The same feed sent again on a LAN (--remulticast), every datagram marked
    // relayed: the mark is outside the signatures, and checks pass as before.
    let relayed: Vec<Vec<u8>> = feed
        .into_iter()
        .map(|mut d| {
            wire::mark_relayed(&mut d);
            assert!(wire::decode_header(&d).unwrap().relayed);
            d
        })
        .collect();
    let mut lan = receiver(ch.anchor);
    let mut got = Received::default();
    receive(&mut lan, relayed, &mut got);
    assert_eq!(got.object(id, file.bytes.len(), CHUNK).as_deref(), Some(file.bytes.as_slice()));
    assert_eq!(lan.drops().harmful(), 0);
}
