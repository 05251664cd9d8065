//! hubcast's sans-IO core: the wire codec, chunk coding with RaptorQ and symbol
//! digest tables, verification, and the sender and receiver state machines.
//!
//! Nothing here opens a socket, reads a clock or spawns a task. Time comes in as
//! arguments (`now: Instant` for timers, `unix_now: u64` seconds for expiry), and
//! randomness as seeded generators. The broadcaster and clienthub crates move bytes
//! and timers between these state machines and the network.

pub mod announce;
pub mod catalog;
pub mod digest;
pub mod fec;
pub mod feedback;
pub mod forest;
pub mod forest_sim;
pub mod hub;
pub mod loss;
pub mod origin;
pub mod peer_wire;
pub mod peers;
pub mod rate;
pub mod receiver;
pub mod repair;
pub mod sender;
pub mod serve;
pub mod sim;
pub mod store;
pub mod tracker;
pub mod verify;
pub mod wire;

use std::fmt;

/// An object's id. A live segment's is the BLAKE3 hash of its content
/// ([`ObjectId::of`]); an archive file's binds its path too
/// ([`ObjectId::archive`]), so that two paths with one content are two objects.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectId(pub [u8; 32]);

/// BLAKE3 key-derivation context of archive object ids.
const ARCHIVE_ID_CONTEXT: &str = "hubcast archive object id v1";

impl ObjectId {
    /// The BLAKE3 hash of `content`: a live segment's id.
    pub fn of(content: &[u8]) -> ObjectId {
        ObjectId(*blake3::hash(content).as_bytes())
    }

    /// An archive file's id: BLAKE3 in key-derivation mode over its name's
    /// length (8 bytes, big-endian), its name, and the BLAKE3 of its content.
    /// Equal contents under two names get two ids (each path is exported);
    /// one name with one content gets the same id on every seed, so a
    /// re-seed changes nothing a hub already holds.
    pub fn archive(name: &str, content_hash: &[u8; 32]) -> ObjectId {
        let mut h = blake3::Hasher::new_derive_key(ARCHIVE_ID_CONTEXT);
        h.update(&(name.len() as u64).to_be_bytes());
        h.update(name.as_bytes());
        h.update(content_hash);
        ObjectId(*h.finalize().as_bytes())
    }

    pub fn to_hex(&self) -> String {
        hubcast_keys::encode_hex(&self.0)
    }

    /// The id from its 64 hex digits (either case); `None` for anything else.
    pub fn from_hex(s: &str) -> Option<ObjectId> {
        if s.len() != 64 {
            return None;
        }
        Some(ObjectId(hubcast_keys::decode_hex(s)?.try_into().ok()?))
    }
}

impl fmt::Debug for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", &self.to_hex()[..12])
    }
}

impl fmt::Display for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}
