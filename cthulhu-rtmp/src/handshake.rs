//! The RTMP handshake driver shared by the listener and the client.

use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::error::{RtmpError, guarded};

/// Runs one side of the handshake on `stream`; returns the bytes received after it
/// (the start of the chunk stream). The client speaks first (C0+C1); the server's
/// S0+S1 come out of rml_rtmp as the answer to them.
pub(crate) async fn run<S>(stream: &mut S, peer: PeerType) -> Result<Vec<u8>, RtmpError>
where
    S: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    let client = peer == PeerType::Client;
    let mut hs = Handshake::new(peer);
    if client {
        let p0p1 = hs
            .generate_outbound_p0_and_p1()
            .map_err(|e| RtmpError::Handshake(e.to_string()))?;
        stream.write_all(&p0p1).await?;
    }
    let mut buf = [0u8; 4096];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Err(RtmpError::Closed);
        }
        let input = buf.get(..n).unwrap_or_default();
        let res = guarded("handshake", || hs.process_bytes(input)).map_err(|e| match e {
            RtmpError::Protocol(m) => RtmpError::Handshake(m),
            other => other,
        })?;
        match res {
            HandshakeProcessResult::InProgress { response_bytes } => {
                stream.write_all(&response_bytes).await?;
            }
            HandshakeProcessResult::Completed {
                response_bytes,
                remaining_bytes,
            } => {
                stream.write_all(&response_bytes).await?;
                return Ok(remaining_bytes);
            }
        }
    }
}
