//! TCP for the hub's local HTTP interface: the listener it serves status on,
//! and the connection `clienthub status` makes to it.

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// Listen for HTTP on `addr` (normally loopback).
pub async fn listen(addr: SocketAddr) -> io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await
}

/// A blocking connection to a local HTTP listener, with connect and read timeouts.
pub fn connect(addr: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
    let s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    Ok(s)
}
