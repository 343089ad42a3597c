//! The UDP socket of a driver: batched receive (recvmmsg, GRO) and send (sendmsg, GSO) through
//! `quinn-udp`, readiness through tokio.

use std::io::{self, IoSliceMut};
use std::net::SocketAddr;

use bytes::BytesMut;
use dep2p_core::node::Datagram;
use tokio::io::Interest;
use tokio::net::UdpSocket;

/// Bytes per receive buffer: one GRO batch can fill 64 KiB.
const RECV_BUF: usize = 64 * 1024;

/// A bound UDP socket with quinn-udp's state.
#[derive(Debug)]
pub(crate) struct UdpIo {
    socket: UdpSocket,
    state: quinn_udp::UdpSocketState,
    recv_buf: Box<[u8]>,
    metas: Vec<quinn_udp::RecvMeta>,
}

impl UdpIo {
    /// Binds `addr` (port 0 picks one).
    pub(crate) fn bind(addr: SocketAddr) -> io::Result<Self> {
        let std_socket = std::net::UdpSocket::bind(addr)?;
        let state = quinn_udp::UdpSocketState::new((&std_socket).into())?;
        // Bigger kernel buffers absorb bursts on loopback; failure to grow them is harmless.
        let _ = state.set_recv_buffer_size((&std_socket).into(), 4 * 1024 * 1024);
        let _ = state.set_send_buffer_size((&std_socket).into(), 4 * 1024 * 1024);
        std_socket.set_nonblocking(true)?;
        let socket = UdpSocket::from_std(std_socket)?;
        let batch = quinn_udp::BATCH_SIZE.max(1);
        Ok(Self {
            socket,
            state,
            recv_buf: vec![0; batch * RECV_BUF].into_boxed_slice(),
            metas: vec![quinn_udp::RecvMeta::default(); batch],
        })
    }

    /// Most segments one send may carry (1 without GSO).
    pub(crate) fn max_gso_segments(&self) -> usize {
        self.state.max_gso_segments()
    }

    pub(crate) fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Waits until the socket may have datagrams.
    pub(crate) async fn readable(&self) -> io::Result<()> {
        self.socket.readable().await
    }

    /// Receives one batch without waiting; `Ok(false)` when nothing was waiting. Each GRO batch
    /// is split into its datagrams.
    pub(crate) fn try_recv(&mut self, mut deliver: impl FnMut(Datagram)) -> io::Result<bool> {
        let Self {
            socket,
            state,
            recv_buf,
            metas,
        } = self;
        let mut slices: Vec<IoSliceMut<'_>> =
            recv_buf.chunks_mut(RECV_BUF).map(IoSliceMut::new).collect();
        let result = socket.try_io(Interest::READABLE, || {
            state.recv((&*socket).into(), &mut slices, metas)
        });
        let count = match result {
            Ok(count) => count,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            // ICMP errors from earlier sends surface on receive; they are not fatal for UDP.
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => return Ok(true),
            Err(e) => return Err(e),
        };
        for (meta, slice) in metas.iter().zip(slices.iter()).take(count) {
            let stride = meta.stride.max(1);
            for segment in slice[..meta.len].chunks(stride) {
                deliver(Datagram {
                    remote: meta.addr,
                    local_ip: meta.dst_ip,
                    ecn: meta
                        .ecn
                        .and_then(|e| quinn_proto::EcnCodepoint::from_bits(e as u8)),
                    data: BytesMut::from(segment),
                });
            }
        }
        Ok(true)
    }

    /// Sends one transmit (several datagrams when `segment_size` is set), waiting for socket
    /// space. Send errors other than a full buffer are logged by quinn-udp and treated as loss.
    pub(crate) async fn send(
        &self,
        transmit: &dep2p_core::node::Transmit,
        contents: &[u8],
    ) -> io::Result<()> {
        let segment_size = transmit
            .segment_size
            .filter(|&s| s < contents.len() && self.state.max_gso_segments() > 1);
        let udp = quinn_udp::Transmit {
            destination: transmit.destination,
            ecn: transmit
                .ecn
                .and_then(|e| quinn_udp::EcnCodepoint::from_bits(e as u8)),
            contents,
            segment_size,
            src_ip: transmit.src_ip,
        };
        if transmit.segment_size.is_some() && segment_size.is_none() {
            // No GSO here: send the segments one by one.
            let size = transmit.segment_size.unwrap_or(contents.len()).max(1);
            for chunk in contents.chunks(size) {
                let one = quinn_udp::Transmit {
                    contents: chunk,
                    segment_size: None,
                    ..udp
                };
                self.send_one(&one).await?;
            }
            return Ok(());
        }
        self.send_one(&udp).await
    }

    async fn send_one(&self, transmit: &quinn_udp::Transmit<'_>) -> io::Result<()> {
        loop {
            let result = self.socket.try_io(Interest::WRITABLE, || {
                self.state.send((&self.socket).into(), transmit)
            });
            match result {
                Ok(()) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.socket.writable().await?,
                Err(e) => return Err(e),
            }
        }
    }
}
