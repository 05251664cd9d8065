//! The hubcast client hub: joins the channel's multicast group, verifies every
//! datagram against the broadcaster's signature, keeps verified chunks in a
//! crash-safe store, and exports completed objects.
//!
//! `main.rs` only parses the command line; everything runs from here.

pub mod bridge;
pub mod config;
pub mod dispatch;
pub mod export;
pub mod forest;
pub mod gateway;
pub mod get;
pub mod http;
pub mod hub;
pub mod library;
pub mod live;
pub mod peers;
pub mod status;
pub mod status_client;
pub mod store;
pub mod store_worker;
pub mod token;
pub mod watch;

pub use config::HubConfig;
pub use hub::{run, HubError};
pub use status::{HubStatus, StatusBoard};
