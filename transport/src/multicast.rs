//! Multicast sockets.
//!
//! A receiver binds the group's address and port with `SO_REUSEADDR`, so several
//! hubs on one host each get every datagram, and joins the group on one
//! interface (any-source, or source-specific when a source is given). A sender
//! binds an ephemeral port on the interface and sets TTL and loopback.
//!
//! The interface defaults to loopback: multicast stays on this host unless an
//! interface is named. That is the safe default for a daemon that may be started
//! on a machine whose default route leads to a network it must not flood.

use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::str::FromStr;

/// Where to send and receive multicast.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Interface {
    /// An IPv4 interface by one of its addresses.
    V4(Ipv4Addr),
    /// An IPv6 interface by index (0 lets the kernel choose).
    V6Index(u32),
}

impl Default for Interface {
    fn default() -> Self {
        Interface::V4(Ipv4Addr::LOCALHOST)
    }
}

impl fmt::Display for Interface {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Interface::V4(a) => write!(f, "{a}"),
            Interface::V6Index(i) => write!(f, "ifindex {i}"),
        }
    }
}

/// `--iface` takes an IPv4 address of the interface, an interface index, or an
/// interface name (looked up in /sys/class/net; IPv6 groups only).
impl FromStr for Interface {
    type Err = TransportError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Ok(a) = s.parse::<Ipv4Addr>() {
            return Ok(Interface::V4(a));
        }
        if let Ok(i) = s.parse::<u32>() {
            return Ok(Interface::V6Index(i));
        }
        let path = format!("/sys/class/net/{s}/ifindex");
        std::fs::read_to_string(&path)
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .map(Interface::V6Index)
            .ok_or_else(|| TransportError::BadInterface(s.to_owned()))
    }
}

#[derive(Clone, Debug)]
pub struct MulticastConfig {
    /// Group address and port.
    pub group: SocketAddr,
    /// Default: IPv4 loopback.
    pub interface: Interface,
    /// The one source to accept (SSM, IPv4). Default: any source.
    pub source: Option<IpAddr>,
    /// IPv4 TTL / IPv6 hop limit of sent datagrams. Default 1 (this link).
    pub ttl: u32,
    /// Deliver our own datagrams to listeners on this host. Default true.
    pub loopback: bool,
    /// Socket buffer to ask for; the kernel caps it at net.core.{r,w}mem_max.
    /// Default 4 MiB.
    pub buffer_bytes: usize,
}

impl MulticastConfig {
    pub fn new(group: SocketAddr) -> Self {
        MulticastConfig {
            group,
            interface: Interface::default(),
            source: None,
            ttl: 1,
            loopback: true,
            buffer_bytes: 4 << 20,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("{0} is not a multicast address (IPv4 224.0.0.0/4, IPv6 ff00::/8)")]
    NotMulticast(IpAddr),
    #[error("interface {iface} does not fit group {group}: an IPv4 group takes the interface's IPv4 address (`ip -4 addr` lists them), an IPv6 group its name or index")]
    FamilyMismatch { group: SocketAddr, iface: Interface },
    #[error("`{0}` is not an interface here: for an IPv4 group give the interface's IPv4 address, for an IPv6 group its name or index (`ip addr` lists them)")]
    BadInterface(String),
    #[error("source-specific multicast needs an IPv4 group and source here")]
    SsmFamily,
    #[error("{what} for {group} on {iface}: {source}")]
    Socket {
        what: &'static str,
        group: SocketAddr,
        iface: Interface,
        #[source]
        source: io::Error,
    },
}

fn step<T>(r: io::Result<T>, what: &'static str, cfg: &MulticastConfig) -> Result<T, TransportError> {
    r.map_err(|source| TransportError::Socket { what, group: cfg.group, iface: cfg.interface, source })
}

fn check(cfg: &MulticastConfig) -> Result<(), TransportError> {
    if !cfg.group.ip().is_multicast() {
        return Err(TransportError::NotMulticast(cfg.group.ip()));
    }
    match (cfg.group, cfg.interface) {
        (SocketAddr::V4(_), Interface::V4(_)) | (SocketAddr::V6(_), Interface::V6Index(_)) => Ok(()),
        _ => Err(TransportError::FamilyMismatch { group: cfg.group, iface: cfg.interface }),
    }
}

fn new_socket(cfg: &MulticastConfig) -> Result<Socket, TransportError> {
    let domain = if cfg.group.is_ipv4() { Domain::IPV4 } else { Domain::IPV6 };
    let s = step(Socket::new(domain, Type::DGRAM, Some(Protocol::UDP)), "creating a UDP socket", cfg)?;
    step(s.set_nonblocking(true), "setting non-blocking", cfg)?;
    Ok(s)
}

/// A socket that receives the group, joined on the configured interface.
pub fn receiver(cfg: &MulticastConfig) -> Result<tokio::net::UdpSocket, TransportError> {
    check(cfg)?;
    let s = new_socket(cfg)?;
    step(s.set_reuse_address(true), "setting SO_REUSEADDR", cfg)?;
    step(s.set_recv_buffer_size(cfg.buffer_bytes), "setting the receive buffer", cfg)?;
    // Binding the group address (not the wildcard) keeps other groups on the same
    // port out of this socket.
    step(s.bind(&SockAddr::from(cfg.group)), "binding the group port", cfg)?;
    match (cfg.group, cfg.interface, cfg.source) {
        (SocketAddr::V4(g), Interface::V4(i), None) => {
            step(s.join_multicast_v4(g.ip(), &i), "joining the group", cfg)?
        }
        (SocketAddr::V4(g), Interface::V4(i), Some(IpAddr::V4(src))) => {
            step(s.join_ssm_v4(&src, g.ip(), &i), "joining the source-specific group", cfg)?
        }
        (SocketAddr::V6(g), Interface::V6Index(i), None) => {
            step(s.join_multicast_v6(g.ip(), i), "joining the group", cfg)?
        }
        (_, _, Some(_)) => return Err(TransportError::SsmFamily),
        _ => unreachable!("check() matched group and interface families"),
    }
    step(tokio::net::UdpSocket::from_std(s.into()), "registering with tokio", cfg)
}

/// A socket that sends to the group out of the configured interface.
pub fn sender(cfg: &MulticastConfig) -> Result<tokio::net::UdpSocket, TransportError> {
    check(cfg)?;
    let s = new_socket(cfg)?;
    step(s.set_send_buffer_size(cfg.buffer_bytes), "setting the send buffer", cfg)?;
    match (cfg.group, cfg.interface) {
        (SocketAddr::V4(_), Interface::V4(i)) => {
            step(s.set_multicast_if_v4(&i), "choosing the interface", cfg)?;
            step(s.set_multicast_ttl_v4(cfg.ttl), "setting the TTL", cfg)?;
            step(s.set_multicast_loop_v4(cfg.loopback), "setting loopback", cfg)?;
            let local = SocketAddr::V4(SocketAddrV4::new(i, 0));
            step(s.bind(&SockAddr::from(local)), "binding the interface address", cfg)?;
        }
        (SocketAddr::V6(_), Interface::V6Index(i)) => {
            step(s.set_multicast_if_v6(i), "choosing the interface", cfg)?;
            step(s.set_multicast_hops_v6(cfg.ttl), "setting the hop limit", cfg)?;
            step(s.set_multicast_loop_v6(cfg.loopback), "setting loopback", cfg)?;
            let local = SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, 0, 0, 0));
            step(s.bind(&SockAddr::from(local)), "binding", cfg)?;
        }
        _ => unreachable!("check() matched group and interface families"),
    }
    step(tokio::net::UdpSocket::from_std(s.into()), "registering with tokio", cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A group in `prefix` and a port no other run on this machine holds
    /// (the kernel's pick), and a payload only this test sends: concurrent
    /// test runs neither share a group nor satisfy each other's checks.
    fn own_group(prefix: [u8; 3]) -> (SocketAddr, Vec<u8>) {
        let port = std::net::UdpSocket::bind("0.0.0.0:0").unwrap().local_addr().unwrap().port();
        let octet = (std::process::id() % 250) as u8 + 1;
        let group = SocketAddr::from(([prefix[0], prefix[1], prefix[2], octet], port));
        (group, format!("hello {} {port}", std::process::id()).into_bytes())
    }

    #[tokio::test]
    async fn two_receivers_on_one_host_both_get_each_datagram() {
        let (group, hello) = own_group([239, 255, 91]);
        let cfg = MulticastConfig::new(group);
        let r1 = receiver(&cfg).unwrap();
        let r2 = receiver(&cfg).unwrap();
        let s = sender(&cfg).unwrap();
        s.send_to(&hello, cfg.group).await.unwrap();
        let mut buf = [0u8; 64];
        for r in [&r1, &r2] {
            let n = tokio::time::timeout(std::time::Duration::from_secs(5), r.recv(&mut buf))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(&buf[..n], &hello[..]);
        }
    }

    #[tokio::test]
    async fn a_source_specific_receiver_hears_only_its_source() {
        // 232.0.0.0/8 is the SSM range.
        let (group, hello) = own_group([232, 1, 2]);
        let mut ours = MulticastConfig::new(group);
        ours.source = Some("127.0.0.1".parse().unwrap());
        let mut other = ours.clone();
        other.source = Some("127.0.0.2".parse().unwrap());
        let hears = receiver(&ours).unwrap();
        let deaf = receiver(&other).unwrap();
        let s = sender(&ours).unwrap(); // bound to 127.0.0.1
        for _ in 0..3 {
            s.send_to(&hello, ours.group).await.unwrap();
        }
        let mut buf = [0u8; 64];
        let wait = std::time::Duration::from_millis(500);
        let n = tokio::time::timeout(wait, hears.recv(&mut buf)).await.unwrap().unwrap();
        assert_eq!(&buf[..n], &hello[..]);
        assert!(tokio::time::timeout(wait, deaf.recv(&mut buf)).await.is_err(), "heard another source");
    }

    #[test]
    fn bad_configurations_say_what_to_do() {
        let mut cfg = MulticastConfig::new("10.0.0.1:5000".parse().unwrap());
        assert!(matches!(check(&cfg), Err(TransportError::NotMulticast(_))));
        cfg.group = "[ff15::1]:5000".parse().unwrap();
        let e = check(&cfg).unwrap_err().to_string();
        assert!(e.contains("an IPv6 group its name or index"), "{e}");
        assert_eq!("lo".parse::<Interface>().unwrap(), Interface::V6Index(1));
        assert!("no-such-if0".parse::<Interface>().is_err());
    }
}
