//! UDP sockets with large kernel buffers.

use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;
use tracing::{debug, info};

use crate::error::SrtError;

/// Binds a non-blocking UDP socket to `addr` and asks for `buffer` bytes of
/// `SO_RCVBUF` and `SO_SNDBUF`. Linux caps the request at
/// `net.core.rmem_max`/`wmem_max` (and reports twice the granted size); a
/// smaller result is logged, not an error.
pub(crate) fn bind_udp(addr: SocketAddr, buffer: usize) -> Result<UdpSocket, SrtError> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if let Err(e) = socket.set_recv_buffer_size(buffer) {
        debug!(error = %e, "Could not set SO_RCVBUF");
    }
    if let Err(e) = socket.set_send_buffer_size(buffer) {
        debug!(error = %e, "Could not set SO_SNDBUF");
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    let recv = socket.recv_buffer_size().unwrap_or(0);
    let send = socket.send_buffer_size().unwrap_or(0);
    if recv < buffer || send < buffer {
        info!(
            asked = buffer,
            so_rcvbuf = recv,
            so_sndbuf = send,
            "UDP buffers are smaller than configured; raise net.core.rmem_max/wmem_max for high bitrates"
        );
    } else {
        debug!(so_rcvbuf = recv, so_sndbuf = send, "UDP socket buffers");
    }
    Ok(UdpSocket::from_std(socket.into())?)
}
