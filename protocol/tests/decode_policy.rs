//! When the receiver decodes: at K + DECODE_MARGIN verified symbols while they
//! keep coming (raptorq's fast path), or with at least K as soon as they stop,
//! or at once when it holds all K source symbols (a copy). The first three
//! tests leave out source symbol 0, so only the first two rules apply.

mod support;

use hubcast_protocol::receiver::{Receiver, DECODE_MARGIN};
use hubcast_protocol::wire::{decode, source_symbols, Kind};
use support::*;

const T: u16 = 128;
const CHUNK: u32 = 64 * 128;

fn kind(d: &[u8]) -> Kind {
    hubcast_protocol::wire::decode_header(d).unwrap().kind
}

fn chunk_of(d: &[u8]) -> u32 {
    match decode(d).unwrap().1 {
        hubcast_protocol::wire::Datagram::Ticket(t) => t.body.chunk_index,
        hubcast_protocol::wire::Datagram::TablePage(p) => p.chunk_index,
        hubcast_protocol::wire::Datagram::Symbol(s) => s.chunk_index,
        hubcast_protocol::wire::Datagram::Manifest(_)
        | hubcast_protocol::wire::Datagram::Feedback(_)
        | hubcast_protocol::wire::Datagram::CatalogRoot(_)
        | hubcast_protocol::wire::Datagram::Revocations(_)
        | hubcast_protocol::wire::Datagram::RootRotation(_) => u32::MAX,
    }
}

/// Control datagrams and symbols of chunk `c` of a two-chunk object, 50% overhead.
fn chunk_parts(ch: &Channel, c: u32) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let objects = [content("f", 2 * CHUNK as usize, 3)];
    broadcast(ch, &objects, CHUNK, T, 0.5, 1)
        .into_iter()
        .filter(|d| kind(d) != Kind::Manifest && chunk_of(d) == c)
        .partition(|d| kind(d) != Kind::Symbol)
}

fn completed(rx: &mut Receiver) -> usize {
    let mut got = Received::default();
    drain(rx, &mut got);
    got.chunks.len()
}

#[test]
fn a_chunk_decodes_once_at_k_plus_margin_while_symbols_keep_coming() {
    let ch = channel(1);
    let (control, symbols) = chunk_parts(&ch, 0);
    let symbols = &symbols[1..];
    let k = source_symbols(CHUNK, T) as usize;
    let mut rx = receiver(ch.anchor);
    for d in &control {
        rx.handle_datagram(NOW, d);
    }
    for d in &symbols[..k + DECODE_MARGIN - 1] {
        rx.handle_datagram(NOW, d);
        assert_eq!(completed(&mut rx), 0, "decoded before K + margin");
    }
    rx.handle_datagram(NOW, &symbols[k + DECODE_MARGIN - 1]);
    assert_eq!(completed(&mut rx), 1);
    assert_eq!(rx.stats().decode_attempts, 1);
}

#[test]
fn a_chunk_with_fewer_symbols_decodes_when_the_network_goes_quiet() {
    let ch = channel(1);
    let (control, symbols) = chunk_parts(&ch, 0);
    let symbols = &symbols[1..];
    let k = source_symbols(CHUNK, T) as usize;
    let mut rx = receiver(ch.anchor);
    for d in control.iter().chain(&symbols[..k + 2]) {
        rx.handle_datagram(NOW, d);
    }
    assert_eq!(completed(&mut rx), 0);
    rx.handle_idle();
    assert_eq!(completed(&mut rx), 1);
}

#[test]
fn a_chunk_decodes_when_the_next_chunk_starts() {
    let ch = channel(1);
    let (control, symbols) = chunk_parts(&ch, 0);
    let symbols = &symbols[1..];
    let (next_control, _) = chunk_parts(&ch, 1);
    let k = source_symbols(CHUNK, T) as usize;
    let mut rx = receiver(ch.anchor);
    for d in control.iter().chain(&symbols[..k + 2]) {
        rx.handle_datagram(NOW, d);
    }
    assert_eq!(completed(&mut rx), 0);
    rx.handle_datagram(NOW, &next_control[0]);
    assert_eq!(completed(&mut rx), 1);
}

#[test]
fn a_chunk_decodes_as_soon_as_it_holds_every_source_symbol() {
    let ch = channel(1);
    let (control, symbols) = chunk_parts(&ch, 0);
    let k = source_symbols(CHUNK, T) as usize;
    let mut rx = receiver(ch.anchor);
    for d in control.iter().chain(&symbols[..k - 1]) {
        rx.handle_datagram(NOW, d);
    }
    assert_eq!(completed(&mut rx), 0);
    rx.handle_datagram(NOW, &symbols[k - 1]);
    assert_eq!(completed(&mut rx), 1, "no wait for more symbols or for quiet");
    assert_eq!(rx.stats().decode_attempts, 1);
}
