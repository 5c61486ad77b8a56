//! Fuzzes the RTMP handshake as `cthulhu_rtmp`'s handshake driver runs it, for both
//! peers: the listener (server side, C0+C1+C2 from anyone) and the push client
//! (client side, S0+S1+S2 from a destination). The bytes arrive in reads of at most
//! the driver's 4096-byte buffer, each passed to rml_rtmp's `Handshake` under
//! `catch_unwind` (as the driver does: a panic there fails that handshake and is
//! not a finding). What is left over after the handshake is the start of the chunk
//! stream, which the `rtmp_session` and `rtmp_client` targets cover.
//!
//! Input: one byte that picks the peer (bit 0) and the read sizes (the rest), then
//! what the other peer sends. rml_rtmp signs its own packet 1 with random bytes, so
//! the client side's check of S2 cannot be steered; the server side's can.

#![no_main]

use cthulhu_fuzz::{Reads, contained};
use libfuzzer_sys::fuzz_target;
use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};

/// The driver's read buffer.
const READ_BUF: usize = 4096;
/// C0/S0 plus packets 1 and 2.
const HANDSHAKE_BYTES: usize = 1 + 1536 + 1536;

fuzz_target!(|data: &[u8]| {
    let [conf, input @ ..] = data else {
        return;
    };
    let client = conf & 1 == 1;
    let mut hs = Handshake::new(if client {
        PeerType::Client
    } else {
        PeerType::Server
    });
    if client {
        let Some(Ok(p0p1)) = contained(|| hs.generate_outbound_p0_and_p1()) else {
            return;
        };
        assert_eq!(p0p1.len(), 1 + 1536);
    }
    let mut reads = Reads::new(conf >> 1);
    let mut rest = input;
    let mut fed = 0;
    while !rest.is_empty() {
        let (read, after) = rest.split_at(reads.next(READ_BUF).min(rest.len()));
        rest = after;
        fed += read.len();
        match contained(|| hs.process_bytes(read)) {
            Some(Ok(HandshakeProcessResult::InProgress { .. })) => {}
            Some(Ok(HandshakeProcessResult::Completed {
                remaining_bytes, ..
            })) => {
                // The leftover is what came after the other peer's packet 2.
                assert!(fed >= HANDSHAKE_BYTES, "completed after {fed} bytes");
                assert_eq!(remaining_bytes.len(), fed - HANDSHAKE_BYTES);
                assert_eq!(&remaining_bytes[..], &input[HANDSHAKE_BYTES..fed]);
                return;
            }
            _ => return,
        }
    }
});
