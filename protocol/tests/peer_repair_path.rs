//! The repair data path, sans IO: a hub that lost symbols plans what it lacks,
//! a hub that decoded the chunk serves exactly that (ticket, pages and any ESI up
//! to N_max), and the asker verifies it through the same receiver path as
//! multicast and completes with bit-identical data.

mod support;

use hubcast_protocol::peer_wire::EsiRanges;
use hubcast_protocol::receiver::{Event, Receiver};
use hubcast_protocol::repair::{Candidate, Outcome, RepairConfig, Repairer};
use hubcast_protocol::serve::{answer, ChunkRequest, ChunkServer, KeptTable, ServeError};
use hubcast_protocol::wire::{self, Kind};
use hubcast_protocol::ObjectId;
use std::time::{Duration, Instant};
use support::*;

const T: u16 = 1280;
const CHUNK: u32 = 256 << 10;

fn kind(d: &[u8]) -> Kind {
    wire::decode_header(d).unwrap().kind
}

fn completed(rx: &mut Receiver) -> Option<Vec<u8>> {
    rx.handle_idle();
    let mut out = None;
    while let Some(e) = rx.poll_event() {
        if let Event::ChunkComplete(c) = e {
            out = Some(c.data().to_vec());
        }
    }
    out
}

#[test]
fn a_lossy_hub_completes_from_a_peer_asking_only_for_what_it_lacks() {
    let ch = channel(3);
    let objects = [content("one-chunk.bin", CHUNK as usize, 9)];
    let src = objects[0].bytes.clone();
    let id = ObjectId::of(&src);
    let stream = broadcast(&ch, &objects, CHUNK, T, 0.10, 1);
    let ticket = stream.iter().find(|d| kind(d) == Kind::Ticket).unwrap().clone();

    // Hub A hears everything and decodes.
    let mut a = receiver(ch.anchor);
    for d in &stream {
        a.handle_datagram(NOW, d);
    }
    let a_chunk = completed(&mut a).expect("hub A completes");
    assert_eq!(a_chunk, src);

    // Hub B loses every third symbol: far more than the overhead.
    let mut b = receiver(ch.anchor);
    let mut n = 0;
    for d in &stream {
        if kind(d) == Kind::Symbol {
            n += 1;
            if n % 3 == 0 {
                continue;
            }
        }
        b.handle_datagram(NOW, d);
    }
    assert_eq!(completed(&mut b), None, "hub B is short");
    let needs = b.needs(8);
    assert_eq!(needs.len(), 1);
    let (k, held_count) = (needs[0].k, needs[0].held_count());
    let mut repairer = Repairer::new(RepairConfig::default(), 1);
    let peers = |_: &_| {
        vec![Candidate { peer: "A", complete: true, same_island: true, rtt: Duration::ZERO, strikes: 0 }]
    };
    // The round ended with the object's manifest: the chunk's window is closed.
    assert!(!needs[0].window_open);
    repairer.handle_tick(Instant::now(), &needs, peers);
    let asks: Vec<_> = std::iter::from_fn(|| repairer.poll_request()).collect();
    let asked: u32 = asks.iter().map(|a| a.esis.count()).sum();
    assert_eq!(asked, k + 1 - held_count, "bytes requested = bytes missing + the margin");

    // Hub A serves exactly those ESIs; B checks them like multicast and completes.
    let server = ChunkServer::new(ticket.clone(), a_chunk.clone()).unwrap();
    for ask in &asks {
        let req = ChunkRequest { object_id: id, index: 0, table: ask.table, esis: ask.esis.clone() };
        assert_eq!(ChunkRequest::from_messages(&req.to_messages()), Some(req.clone()));
        let datagrams = answer(&req, Some(&server), &a).unwrap();
        assert_eq!(datagrams.len() as u32, ask.esis.count());
        for d in datagrams {
            b.handle_repair_datagram(NOW, &d);
        }
        repairer.handle_response(ask.id, Outcome::Served);
    }
    b.settle_chunk(id, 0);
    assert_eq!(completed(&mut b).as_deref(), Some(&src[..]));
    assert_eq!(b.drops().harmful(), 0, "{:?}", b.drops());
}

#[test]
fn a_hub_that_missed_the_whole_chunk_gets_ticket_pages_and_symbols_from_a_peer() {
    let ch = channel(4);
    let objects = [content("late.bin", CHUNK as usize, 2)];
    let src = objects[0].bytes.clone();
    let stream = broadcast(&ch, &objects, CHUNK, T, 0.10, 1);
    let ticket = stream.iter().find(|d| kind(d) == Kind::Ticket).unwrap().clone();
    let server = ChunkServer::new(ticket.clone(), src.clone()).unwrap();
    let k = wire::source_symbols(CHUNK, T);
    let mut c = receiver(ch.anchor);
    c.handle_datagram(NOW, server.ticket());
    for d in server.table_pages(u32::MAX >> (32 - wire::page_count(server.n_max()))).unwrap() {
        c.handle_datagram(NOW, &d);
    }
    // K + 2 ESIs from K/2 on: half of them repair ESIs the broadcaster's round
    // never sent (it sent 0..K + 10%), made by the peer.
    let esis = EsiRanges::new(vec![(k / 2, (k + 2) as u16)]).unwrap();
    assert!(k / 2 + k + 2 > k + hubcast_protocol::sender::repair_count(k, 0.10));
    for d in server.symbols(&esis).unwrap() {
        c.handle_datagram(NOW, &d);
    }
    assert_eq!(completed(&mut c).as_deref(), Some(&src[..]));
}

#[test]
fn nothing_unverifiable_is_served() {
    let ch = channel(5);
    let objects = [content("x.bin", CHUNK as usize, 4)];
    let stream = broadcast(&ch, &objects, CHUNK, T, 0.10, 1);
    let ticket = stream.iter().find(|d| kind(d) == Kind::Ticket).unwrap().clone();
    let mut wrong = objects[0].bytes.clone();
    wrong[100] ^= 1;
    assert_eq!(ChunkServer::new(ticket.clone(), wrong.clone()).err(), Some(ServeError::Mismatch));
    assert_eq!(ChunkServer::new(stream[0].clone(), wrong.clone()).err(), Some(ServeError::NotATicket));
    let server = ChunkServer::new(ticket, objects[0].bytes.clone()).unwrap();
    let beyond = EsiRanges::new(vec![(server.n_max(), 1)]).unwrap();
    assert_eq!(server.symbols(&beyond).err(), Some(ServeError::EsiOutOfRange));
    assert_eq!(server.table_pages(1 << 31).err(), Some(ServeError::PageOutOfRange));
}

#[test]
fn served_pages_and_symbols_are_the_broadcasters_datagrams() {
    // A chunk that is not a whole number of symbols: the last source symbol is
    // padded, and one table page holds source and repair digests.
    let ch = channel(6);
    let objects = [content("odd.bin", CHUNK as usize - 700, 5)];
    let stream = broadcast(&ch, &objects, CHUNK, T, 0.10, 1);
    let ticket = stream.iter().find(|d| kind(d) == Kind::Ticket).unwrap().clone();
    let server = ChunkServer::new(ticket, objects[0].bytes.clone()).unwrap();
    type Set = std::collections::BTreeSet<Vec<u8>>;
    let of_kind = |k: Kind| -> Set { stream.iter().filter(|d| kind(d) == k).cloned().collect() };
    let all_pages = u32::MAX >> (32 - wire::page_count(server.n_max()));
    let pages: Set = server.table_pages(all_pages).unwrap().into_iter().collect();
    // The broadcaster sends the pages of the ESIs it sends; a peer serves any.
    assert_eq!(pages.len(), wire::page_count(server.n_max()));
    assert!(pages.is_superset(&of_kind(Kind::TablePage)));
    // The broadcaster sent ESIs 0..K + 10%: source symbols from the chunk,
    // repair symbols from the encoding, asked for one at a time and all at once.
    let sent = of_kind(Kind::Symbol);
    let count = sent.len() as u16;
    let one_by_one: Set = (0..u32::from(count))
        .flat_map(|e| server.symbols(&EsiRanges::new(vec![(e, 1)]).unwrap()).unwrap())
        .collect();
    assert!(one_by_one == sent, "symbols served one at a time differ from the broadcaster's");
    let at_once: Set =
        server.symbols(&EsiRanges::new(vec![(0, count)]).unwrap()).unwrap().into_iter().collect();
    assert!(at_once == sent, "symbols served together differ from the broadcaster's");
}

#[test]
fn a_kept_table_answers_source_symbols_from_their_bytes_alone_and_checks_each() {
    // Odd-sized, so the last source symbol is padded; the receiver keeps the
    // pages it checked, as a hub stores them beside the chunk.
    let ch = channel(7);
    let objects = [content("kept.bin", CHUNK as usize - 700, 6)];
    let src = objects[0].bytes.clone();
    let id = ObjectId::of(&src);
    let stream = broadcast(&ch, &objects, CHUNK, T, 0.10, 1);
    let mut rx = receiver(ch.anchor);
    for d in &stream {
        rx.handle_datagram(NOW, d);
    }
    rx.handle_idle();
    let chunk = std::iter::from_fn(|| rx.poll_event())
        .find_map(|e| match e {
            Event::ChunkComplete(c) => Some(c),
            _ => None,
        })
        .expect("decoded");
    let n_pages = wire::page_count(wire::n_max(wire::source_symbols(src.len() as u32, T)));
    assert!(!chunk.pages().is_empty() && chunk.pages().len() <= n_pages, "the pages checked are handed on");
    let table = || KeptTable::new(chunk.ticket().to_vec(), chunk.pages().to_vec()).unwrap();
    let full = ChunkServer::new(chunk.ticket().to_vec(), src.clone()).unwrap();
    let k = wire::source_symbols(src.len() as u32, T);

    // The last source symbols (the padded one too) with the ticket and their pages.
    let last_page = (k as usize - 1) / wire::DIGESTS_PER_PAGE;
    let req = ChunkRequest {
        object_id: id,
        index: 0,
        table: Some(1 << last_page),
        esis: EsiRanges::new(vec![(3, 2), (k - 5, 5)]).unwrap(),
    };
    let kept = table();
    let ranges = kept.ranges_for(&req).expect("source symbols with kept pages");
    let padding = u64::from(k) * 1280 - src.len() as u64;
    assert!(padding > 0);
    assert_eq!(
        ranges.iter().map(|r| r.end - r.start).sum::<u64>(),
        7 * 1280 - padding,
        "the symbols' bytes only"
    );
    let bytes: Vec<Vec<u8>> = ranges.iter().map(|r| src[r.start as usize..r.end as usize].to_vec()).collect();
    let answer = kept.answer_from(&req, &bytes).unwrap();
    assert_eq!(
        answer,
        hubcast_protocol::serve::answer_complete(&req, &full).unwrap(),
        "same datagrams as the chunk"
    );

    // A damaged byte on disk: refused, nothing served.
    let mut damaged = bytes.clone();
    damaged[1][7] ^= 1;
    assert_eq!(kept.answer_from(&req, &damaged).err(), Some(ServeError::Mismatch));
    // Repair ESIs need the chunk, and so does a page not kept.
    let repair = ChunkRequest { table: None, esis: EsiRanges::new(vec![(k, 1)]).unwrap(), ..req.clone() };
    assert_eq!(kept.ranges_for(&repair), None);
    // Asked outright for an ESI beyond the table: a typed refusal, no panic.
    let beyond = ChunkRequest {
        table: None,
        esis: EsiRanges::new(vec![(wire::n_max(k) + 500, 1)]).unwrap(),
        ..req.clone()
    };
    assert_eq!(kept.answer_from(&beyond, &[vec![0; 1280]]).err(), Some(ServeError::PageOutOfRange));
    let no_pages = KeptTable::new(chunk.ticket().to_vec(), Vec::new()).unwrap();
    assert_eq!(no_pages.ranges_for(&ChunkRequest { table: None, ..req.clone() }), None);
    // A page that does not match the ticket is not kept.
    let mut forged = chunk.pages().to_vec();
    forged[0].1[0] ^= 1;
    let forged = KeptTable::new(chunk.ticket().to_vec(), forged).unwrap();
    let first = ChunkRequest { table: None, esis: EsiRanges::new(vec![(0, 1)]).unwrap(), ..req };
    assert_eq!(forged.ranges_for(&first), None);
}
