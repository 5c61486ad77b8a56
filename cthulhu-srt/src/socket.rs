//! UDP sockets with large kernel buffers.

use std::net::SocketAddr;

use std::sync::atomic::{AtomicBool, Ordering};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;
use tracing::{debug, info};

use crate::error::SrtError;

/// Set once the "buffers smaller than configured" notice was logged.
static WARNED_SMALL: AtomicBool = AtomicBool::new(false);

/// Binds a non-blocking UDP socket to `addr` and asks for `buffer` bytes of
/// `SO_RCVBUF` and `SO_SNDBUF`. Linux caps the request at
/// `net.core.rmem_max`/`wmem_max` (and reports twice the granted size); a
/// smaller result is logged (once per process, at info), not an error.
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
    // Linux reports twice the size it granted (the extra half is its
    // bookkeeping), so halve it to compare with what we asked for.
    let granted = |reported: usize| {
        if cfg!(target_os = "linux") {
            reported / 2
        } else {
            reported
        }
    };
    let recv = granted(socket.recv_buffer_size().unwrap_or(0));
    let send = granted(socket.send_buffer_size().unwrap_or(0));
    if (recv < buffer || send < buffer) && !WARNED_SMALL.swap(true, Ordering::Relaxed) {
        info!(
            asked = buffer,
            so_rcvbuf = recv,
            so_sndbuf = send,
            "UDP buffers are smaller than configured; raise net.core.rmem_max/wmem_max for high bitrates (logged once)"
        );
    } else {
        debug!(so_rcvbuf = recv, so_sndbuf = send, "UDP socket buffers");
    }
    Ok(UdpSocket::from_std(socket.into())?)
}
