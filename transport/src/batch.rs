//! Many datagrams per system call, through quinn-udp: `recvmmsg` with UDP
//! GRO on receive, UDP GSO on send (Linux; one datagram a call elsewhere).
//! The carousel moves a hundred thousand datagrams a second or more: with a
//! system call each, the calls were a hub's largest cost once the store wrote
//! each byte once.

use quinn_udp::{RecvMeta, Transmit, UdpSocketState, BATCH_SIZE};
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use tokio::io::Interest;
use tokio::net::UdpSocket;

/// One message's room: a GRO message is at most an IP packet's 64 KiB.
const SLOT: usize = 1 << 16;

/// Receives up to [`BATCH_SIZE`] messages a call, each one datagram or,
/// with GRO, several of one size back to back.
pub struct BatchRecv {
    state: UdpSocketState,
    buf: Vec<u8>,
    meta: Vec<RecvMeta>,
    filled: usize,
}

impl BatchRecv {
    /// Sets the socket up for batches (GRO where the kernel has it). The
    /// buffers take `BATCH_SIZE` × 64 KiB (2 MiB on Linux).
    pub fn new(socket: &UdpSocket) -> io::Result<BatchRecv> {
        let state = UdpSocketState::new(socket.into())?;
        Ok(BatchRecv {
            state,
            buf: vec![0; BATCH_SIZE * SLOT],
            meta: vec![RecvMeta::default(); BATCH_SIZE],
            filled: 0,
        })
    }

    /// The datagrams waiting on `socket`, as many as one call takes;
    /// `WouldBlock` when there are none (and tokio is told to wait for more).
    pub fn try_recv(&mut self, socket: &UdpSocket) -> io::Result<impl Iterator<Item = &[u8]> + '_> {
        let BatchRecv { state, buf, meta, filled } = self;
        let mut slices: Vec<IoSliceMut<'_>> = buf.chunks_mut(SLOT).map(IoSliceMut::new).collect();
        *filled = socket.try_io(Interest::READABLE, || state.recv(socket.into(), &mut slices, meta))?;
        drop(slices);
        Ok(self.meta[..self.filled]
            .iter()
            .zip(self.buf.chunks(SLOT))
            .flat_map(|(m, b)| b[..m.len.min(SLOT)].chunks(m.stride.max(1))))
    }
}

/// Sends runs of equal-sized datagrams in one call each (UDP GSO).
pub struct BatchSend {
    state: UdpSocketState,
}

impl BatchSend {
    pub fn new(socket: &UdpSocket) -> io::Result<BatchSend> {
        Ok(BatchSend { state: UdpSocketState::new(socket.into())? })
    }

    /// How many datagrams one call may carry: 1 where the kernel has no GSO
    /// (or a device refused it: then it stays 1).
    pub fn max_segments(&self) -> usize {
        self.state.max_gso_segments()
    }

    /// Send `contents` to `to` as datagrams of `segment` bytes (the last may
    /// be shorter), at most [`BatchSend::max_segments`] of them and at most
    /// 64 KiB in all. Where the device refuses GSO, they go one by one.
    pub async fn send(
        &self,
        socket: &UdpSocket,
        to: SocketAddr,
        contents: &[u8],
        segment: usize,
    ) -> io::Result<()> {
        let gso = contents.len() > segment;
        match self.send_one(socket, to, contents, gso.then_some(segment)).await {
            Err(e) if gso && self.max_segments() == 1 => {
                tracing::info!(error = %e, "the device refused UDP segmentation offload: one datagram a call from now on");
                for d in contents.chunks(segment) {
                    self.send_one(socket, to, d, None).await?;
                }
                Ok(())
            }
            r => r,
        }
    }

    async fn send_one(
        &self,
        socket: &UdpSocket,
        to: SocketAddr,
        contents: &[u8],
        segment_size: Option<usize>,
    ) -> io::Result<()> {
        let transmit = Transmit { destination: to, ecn: None, contents, segment_size, src_ip: None };
        loop {
            socket.writable().await?;
            match socket.try_io(Interest::WRITABLE, || self.state.try_send(socket.into(), &transmit)) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                r => return r,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Loopback: what one side sends in runs comes out datagram by
    /// datagram, in order and whole, whether or not the kernel coalesced.
    #[tokio::test]
    async fn runs_sent_with_gso_arrive_as_the_datagrams_they_were() {
        let rx = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let (mut recv, send) = (BatchRecv::new(&rx).unwrap(), BatchSend::new(&tx).unwrap());
        let to = rx.local_addr().unwrap();
        let datagram = |i: usize, len: usize| (0..len).map(|j| (i * 7 + j) as u8).collect::<Vec<u8>>();
        // Runs of 1,200-byte datagrams, a short one at each run's end, and
        // a run of one.
        let mut sent = Vec::new();
        for (run, count) in [(0, 40), (1, 1), (2, send.max_segments().min(50))] {
            let mut contents = Vec::new();
            for i in 0..count {
                let d = datagram(run * 100 + i, if i + 1 == count { 300 } else { 1200 });
                contents.extend_from_slice(&d);
                sent.push(d);
            }
            send.send(&tx, to, &contents, 1200).await.unwrap();
        }
        let mut got: Vec<Vec<u8>> = Vec::new();
        while got.len() < sent.len() {
            rx.readable().await.unwrap();
            match recv.try_recv(&rx) {
                Ok(ds) => got.extend(ds.map(<[u8]>::to_vec)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(got.len(), sent.len());
        assert!(got == sent, "datagrams differ after a batched send and receive");
    }
}
