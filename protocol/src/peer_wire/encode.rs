//! Peer messages to bytes: one frame per message, in the layout of
//! docs/PROTOCOL.md ("Frames").

use super::{ForestPeer, PeerMessage, MAX_HUB_LIST};
use crate::forest;
use crate::ObjectId;

/// Append a datagram as one frame: what `encode(&PeerMessage::Datagram(..))`
/// writes, without owning the datagram first.
pub fn encode_datagram(d: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&(d.len() as u32 + 1).to_be_bytes());
    out.push(6);
    out.extend_from_slice(d);
}

/// Append `m` as one frame.
pub fn encode(m: &PeerMessage, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    match m {
        PeerMessage::HaveRequest { object_id } => {
            out.push(1);
            out.extend_from_slice(&object_id.0);
        }
        PeerMessage::HaveMap { object_id, complete, partial } => {
            out.push(2);
            out.extend_from_slice(&object_id.0);
            out.extend_from_slice(&complete.chunks.to_be_bytes());
            out.extend_from_slice(&complete.bits);
            out.extend_from_slice(&(partial.len() as u16).to_be_bytes());
            for (chunk, symbols) in partial {
                out.extend_from_slice(&chunk.to_be_bytes());
                out.extend_from_slice(&symbols.to_be_bytes());
            }
        }
        PeerMessage::TableRequest { object_id, chunk, pages } => {
            out.push(3);
            out.extend_from_slice(&object_id.0);
            out.extend_from_slice(&chunk.to_be_bytes());
            out.extend_from_slice(&pages.to_be_bytes());
        }
        PeerMessage::SymbolRequest { object_id, chunk, esis } => {
            out.push(4);
            out.extend_from_slice(&object_id.0);
            out.extend_from_slice(&chunk.to_be_bytes());
            out.extend_from_slice(&(esis.0.len() as u16).to_be_bytes());
            for (first, n) in &esis.0 {
                out.extend_from_slice(&first.to_be_bytes());
                out.extend_from_slice(&n.to_be_bytes());
            }
        }
        PeerMessage::Refuse { object_id, chunk, reason } => {
            out.push(5);
            out.extend_from_slice(&object_id.0);
            out.extend_from_slice(&chunk.to_be_bytes());
            out.push(*reason as u8);
        }
        PeerMessage::Datagram(d) => {
            out.push(6);
            out.extend_from_slice(d);
        }
        PeerMessage::Nak { object_id, chunk, missing, loss, held } => {
            out.push(7);
            out.extend_from_slice(&object_id.0);
            out.extend_from_slice(&chunk.to_be_bytes());
            out.extend_from_slice(&missing.to_be_bytes());
            out.push(*loss);
            out.extend_from_slice(&(held.len() as u16).to_be_bytes());
            out.extend_from_slice(held);
        }
        PeerMessage::Register { bridge, forest, feeds, root_version, revocations_version } => {
            out.push(8);
            out.push(u8::from(*bridge) | u8::from(*forest) << 1);
            out.extend_from_slice(&feeds.to_be_bytes());
            out.extend_from_slice(&root_version.to_be_bytes());
            out.extend_from_slice(&revocations_version.to_be_bytes());
        }
        PeerMessage::HoldersRequest { object_id, chunk, limit } => {
            out.push(9);
            out.extend_from_slice(&object_id.0);
            out.extend_from_slice(&chunk.unwrap_or(u32::MAX).to_be_bytes());
            out.push(*limit);
        }
        PeerMessage::ForestHubRequest => out.push(10),
        PeerMessage::HubList(hubs) => {
            out.push(11);
            out.push(hubs.len().min(MAX_HUB_LIST) as u8);
            for h in hubs.iter().take(MAX_HUB_LIST) {
                out.extend_from_slice(&h.node_id);
                out.push(u8::from(h.bridge));
                put_addr(&h.addr, out);
            }
        }
        PeerMessage::BridgesRequest { limit, leaving } => {
            out.push(12);
            out.push(*limit);
            out.push(u8::from(leaving.is_some()));
            out.extend_from_slice(leaving.as_ref().map_or(&[][..], |id| &id[..]));
        }
        PeerMessage::Subscribe { resume, udp_port } => {
            out.push(13);
            put_resume(resume, out);
            out.extend_from_slice(&udp_port.to_be_bytes());
        }
        PeerMessage::Subscribed => out.push(14),
        PeerMessage::Forest(m) => {
            out.push(15);
            encode_forest(m, out);
        }
        PeerMessage::Stripe { tree, stripes, resume } => {
            out.push(16);
            out.push(*tree);
            out.push(*stripes);
            put_resume(resume, out);
        }
        PeerMessage::LossReport { loss, verdict } => {
            out.push(17);
            out.push(*loss);
            // Only when there is one: an origin of before 2026-12-06 takes
            // the one byte.
            if !verdict.is_clear() {
                out.push(verdict.bits());
            }
        }
    }
    let len = (out.len() - start - 4) as u32;
    out[start..start + 4].copy_from_slice(&len.to_be_bytes());
}

/// A feed's start: flag 0, or flag 1 with the object and chunk.
fn put_resume(resume: &Option<(ObjectId, u32)>, out: &mut Vec<u8>) {
    match resume {
        None => out.push(0),
        Some((object_id, chunk)) => {
            out.push(1);
            out.extend_from_slice(&object_id.0);
            out.extend_from_slice(&chunk.to_be_bytes());
        }
    }
}

/// Family (4 or 6), address, port: as hub lists and forest peers carry it.
fn put_addr(addr: &std::net::SocketAddr, out: &mut Vec<u8>) {
    match addr.ip() {
        std::net::IpAddr::V4(ip) => {
            out.push(4);
            out.extend_from_slice(&ip.octets());
        }
        std::net::IpAddr::V6(ip) => {
            out.push(6);
            out.extend_from_slice(&ip.octets());
        }
    }
    out.extend_from_slice(&addr.port().to_be_bytes());
}

fn put_peer(p: &ForestPeer, out: &mut Vec<u8>) {
    out.extend_from_slice(&p.node_id);
    put_addr(&p.addr, out);
}

fn put_opt_peer(p: &Option<ForestPeer>, out: &mut Vec<u8>) {
    match p {
        Some(p) => {
            out.push(1);
            put_peer(p, out);
        }
        None => out.push(0),
    }
}

fn encode_forest(m: &forest::Msg<ForestPeer>, out: &mut Vec<u8>) {
    use forest::{Msg, UpdateInfo};
    let (kind, tree) = match m {
        Msg::Search { .. } => (1, m.tree()),
        Msg::TakeOn { .. } => (2, m.tree()),
        Msg::Substitute { .. } => (3, m.tree()),
        Msg::Direct { .. } => (4, m.tree()),
        Msg::Replace { .. } => (5, m.tree()),
        Msg::Update { info: UpdateInfo::Up { .. }, .. } => (6, m.tree()),
        Msg::Update { info: UpdateInfo::Down { .. }, .. } => (7, m.tree()),
        Msg::Refuse { .. } => (8, m.tree()),
        Msg::Join => (9, 0),
        Msg::Welcome { .. } => (10, m.tree()),
        Msg::Want { .. } => (11, m.tree()),
        Msg::Give { .. } => (12, m.tree()),
    };
    out.push(kind);
    out.push(tree);
    match m {
        Msg::Search { joiner, interior, down, .. } => {
            put_peer(joiner, out);
            out.push(u8::from(*interior) | u8::from(*down) << 1);
        }
        Msg::TakeOn { child, interior, dead, .. } => {
            put_peer(child, out);
            out.push(u8::from(*interior));
            put_opt_peer(dead, out);
        }
        Msg::Substitute { parent, grandparent, leaf, .. } => {
            put_peer(parent, out);
            put_opt_peer(grandparent, out);
            put_peer(leaf, out);
        }
        Msg::Direct { parent, grandparent, .. } => {
            put_peer(parent, out);
            put_opt_peer(grandparent, out);
        }
        Msg::Replace { dead, interior, .. } => {
            put_peer(dead, out);
            out.push(u8::from(*interior));
        }
        Msg::Update {
            info: UpdateInfo::Up { interior, free, spare, room, give, attached, epoch }, ..
        } => {
            for n in [interior, free, spare, room, give] {
                out.extend_from_slice(&n.to_be_bytes());
            }
            out.push(u8::from(*attached));
            out.extend_from_slice(&epoch.to_be_bytes());
        }
        Msg::Update { info: UpdateInfo::Down { grandparent, heir }, .. } => {
            put_opt_peer(grandparent, out);
            put_opt_peer(heir, out);
        }
        Msg::Refuse { why, .. } => out.push(match why {
            forest::Refusal::BadTree => 1,
            forest::Refusal::NotAChild => 2,
            forest::Refusal::NotYourParent => 3,
            forest::Refusal::Full => 4,
            forest::Refusal::Loop => 5,
            forest::Refusal::NotHeir => 6,
        }),
        Msg::Join => {}
        Msg::Welcome { contact, .. } => put_peer(contact, out),
        Msg::Want { needy, down, .. } => {
            put_peer(needy, out);
            out.push(u8::from(*down));
        }
        Msg::Give { leaf, .. } => put_peer(leaf, out),
    }
}
