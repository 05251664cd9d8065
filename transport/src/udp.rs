//! Plain unicast UDP: the socket a desert hub takes its bridge's feed
//! symbols on, and the one a bridge sends them from.

use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::net::{IpAddr, SocketAddr};

/// A UDP socket bound to `ip` and a port the kernel picks, with a receive
/// buffer of `buffer_bytes` (the kernel may grant less: `net.core.rmem_max`).
pub fn bind_any_port(ip: IpAddr, buffer_bytes: usize) -> std::io::Result<tokio::net::UdpSocket> {
    let domain = if ip.is_ipv4() { Domain::IPV4 } else { Domain::IPV6 };
    let s = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
    s.set_nonblocking(true)?;
    s.set_recv_buffer_size(buffer_bytes)?;
    s.bind(&SockAddr::from(SocketAddr::new(ip, 0)))?;
    tokio::net::UdpSocket::from_std(s.into())
}
