//! The only socket code in hubcast. Multicast sockets through socket2: group,
//! port, interface, TTL, loopback, and the source of source-specific multicast
//! (SSM), for IPv4 and IPv6; the TCP of the hub's local HTTP interface; and
//! the unicast UDP of a bridge's feed; batched datagram I/O (`recvmmsg`,
//! GRO, GSO) through quinn-udp.

pub mod batch;
pub mod congestion;
pub mod multicast;
pub mod quic;
pub mod tcp;
pub mod udp;

pub use multicast::{Interface, MulticastConfig, TransportError};
