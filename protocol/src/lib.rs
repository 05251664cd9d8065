//! hubcast's sans-IO core: the wire codec, chunk coding with RaptorQ and symbol
//! digest tables, verification, and the sender and receiver state machines.
//!
//! Nothing here opens a socket, reads a clock or spawns a task. Time comes in as
//! arguments (`now: Instant` for timers, `unix_now: u64` seconds for expiry), and
//! randomness as seeded generators. The broadcaster and clienthub crates move bytes
//! and timers between these state machines and the network.

pub mod announce;
pub mod digest;
pub mod fec;
pub mod forest;
pub mod forest_sim;
pub mod origin;
pub mod peer_wire;
pub mod receiver;
pub mod repair;
pub mod sender;
pub mod serve;
pub mod sim;
pub mod tracker;
pub mod verify;
pub mod wire;

use std::fmt;

/// An object's id: the BLAKE3 hash of its whole content.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectId(pub [u8; 32]);

impl ObjectId {
    pub fn of(content: &[u8]) -> ObjectId {
        ObjectId(*blake3::hash(content).as_bytes())
    }

    pub fn to_hex(&self) -> String {
        hubcast_keys::encode_hex(&self.0)
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
