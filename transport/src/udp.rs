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

/// Datagrams the kernel dropped on `socket` because its receive buffer was
/// full (the `drops` of its line in /proc/net/udp or udp6, found by the
/// socket's inode); `None` where that table is not there (not Linux).
pub fn kernel_drops(socket: &impl std::os::fd::AsFd) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    let inode = std::fs::File::from(socket.as_fd().try_clone_to_owned().ok()?).metadata().ok()?.ino();
    ["/proc/net/udp", "/proc/net/udp6"]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .find_map(|table| drops_of(inode, &table))
}

/// The `drops` column (the last) of the line whose `inode` (the tenth) is
/// `inode`.
fn drops_of(inode: u64, table: &str) -> Option<u64> {
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        (fields.get(9)?.parse::<u64>().ok()? == inode).then(|| fields.last()?.parse().ok())?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_drops_column_is_read_from_the_sockets_own_line() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n\
            1: 0100007F:1388 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 4242 2 0000000000000000 17\n\
            2: 0100007F:1389 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 4243 2 0000000000000000 0\n";
        assert_eq!(drops_of(4242, table), Some(17));
        assert_eq!(drops_of(4243, table), Some(0));
        assert_eq!(drops_of(9, table), None);
        assert_eq!(drops_of(9, "garbage\n1: x y"), None);
    }

    /// A socket nobody reads, with a small buffer, overflows: the kernel's
    /// count for it rises, and another socket's stays at 0.
    #[tokio::test]
    async fn a_full_receive_buffer_shows_in_the_sockets_drops() {
        let full = bind_any_port("127.0.0.1".parse().unwrap(), 4096).unwrap();
        let other = bind_any_port("127.0.0.1".parse().unwrap(), 4096).unwrap();
        assert_eq!(kernel_drops(&full), Some(0));
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        for _ in 0..200 {
            let _ = tx.send_to(&[7; 1200], full.local_addr().unwrap());
        }
        assert!(kernel_drops(&full).unwrap() > 100, "{:?}", kernel_drops(&full));
        assert_eq!(kernel_drops(&other), Some(0));
    }
}
