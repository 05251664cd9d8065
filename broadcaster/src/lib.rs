//! The hubcast broadcaster: ingest files and folders, code and sign them
//! chunk by chunk, and send them over multicast in a paced carousel.
//!
//! `main.rs` only parses the command line; everything runs from here.

pub mod channel_catalog;
pub mod config;
pub mod feedback;
pub mod generation;
pub mod ingest;
pub mod live;
pub mod origin;
pub mod renewal;
pub mod seed;
pub mod segment;
pub mod status;

pub use config::SeedConfig;
pub use seed::{seed, SeedReport};

/// Wall-clock seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    unix_ms() / 1000
}

pub use hubcast_daemon::unix_ms;
