//! Raw inspection of SRT handshake packets before srt-protocol parses them.
//!
//! No I/O here. srt-protocol 0.4.4 panics on parts of a conclusion handshake
//! that any libsrt caller can send (congestion, packet filter and group
//! extensions, mismatched key lengths, an empty stream id), so the listener
//! looks at the raw bytes first: it refuses what we do not support with a clear
//! reason, strips what is harmless, and normalises the key-length field, the
//! extension flags and the SRT flags (srt-protocol logs a warning for each
//! oddity it finds, which a hostile caller could repeat at will), so that
//! srt-protocol only ever sees requests it handles quietly.
//!
//! The listener answers inductions itself, statelessly
//! ([`induction_response`]): srt-protocol's `Listen` is created only for a
//! conclusion that carries a valid cookie.
//!
//! Layout (all big-endian): a 16-byte SRT header (`F|type`, reserved,
//! additional info, timestamp, destination socket id), then the 48-byte
//! handshake (version, encryption field + extension flags, initial sequence
//! number, MTU, flow window, handshake type, socket id, SYN cookie, peer IP),
//! then extensions (`type: u16`, `length in 32-bit words: u16`, content).

use bytes::{BufMut, Bytes, BytesMut};

use crate::config::KeySize;
use crate::reject::Reject;

/// SRT header length.
pub(crate) const HEADER_LEN: usize = 16;
/// SRT header plus the fixed handshake part.
pub(crate) const HANDSHAKE_LEN: usize = HEADER_LEN + 48;

/// Handshake type of a caller's first packet.
pub(crate) const INDUCTION: i32 = 1;
/// Handshake type of a caller's second packet and the listener's answer.
pub(crate) const CONCLUSION: i32 = -1;

/// Offset of the SYN cookie in a handshake packet.
const COOKIE_AT: usize = HEADER_LEN + 28;
/// `SRT_MAGIC_CODE`: the extension field of an HSv5 induction response.
const SRT_MAGIC: u16 = 0x4A17;
/// Extension flags of a conclusion: HSREQ, KMREQ, CONFIG (stream id and others).
const EXT_FLAG_HS: u16 = 0x1;
const EXT_FLAG_KM: u16 = 0x2;
const EXT_FLAG_CONFIG: u16 = 0x4;
/// The SRT flags srt-protocol knows (`SRTO_*` options up to packet filters);
/// it warns about any other bit and ignores it.
const KNOWN_SRT_FLAGS: u32 = 0xFF;

const EXT_HSREQ: u16 = 1;
const EXT_KMREQ: u16 = 3;
const EXT_SID: u16 = 5;
const EXT_CONGESTION: u16 = 6;
const EXT_FILTER: u16 = 7;
const EXT_GROUP: u16 = 8;

/// `SRT_OPT_TSBPDSND | SRT_OPT_TSBPDRCV`.
const FLAGS_TSBPD: u32 = 0x1 | 0x2;
/// `SRT_OPT_STREAM`: the caller uses the stream (file) API, not messages.
const FLAG_STREAM: u32 = 0x40;

fn u16_at(d: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(d.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(d: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(d.get(at..at + 4)?.try_into().ok()?))
}

/// The fields of a handshake control packet the dispatcher routes by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct HandshakeHeader {
    /// Destination socket id (0 for connection requests).
    pub(crate) dest_sockid: u32,
    /// Handshake version (4 or 5).
    pub(crate) version: u32,
    /// Handshake type: 1 induction, -1 conclusion, ≥ 1000 rejection.
    pub(crate) shake_type: i32,
    /// The sender's socket id.
    pub(crate) socket_id: u32,
    /// The SYN cookie.
    pub(crate) cookie: i32,
}

/// Destination socket id of any SRT packet (`None` if shorter than a header).
pub(crate) fn dest_sockid(d: &[u8]) -> Option<u32> {
    u32_at(d, 12)
}

/// The handshake header if `d` is a complete handshake control packet.
pub(crate) fn handshake_header(d: &[u8]) -> Option<HandshakeHeader> {
    let first = u16_at(d, 0)?;
    // Control bit set, control type 0 (handshake).
    if first != 0x8000 || d.len() < HANDSHAKE_LEN {
        return None;
    }
    Some(HandshakeHeader {
        dest_sockid: u32_at(d, 12)?,
        version: u32_at(d, HEADER_LEN)?,
        shake_type: i32::from_be_bytes(d.get(HEADER_LEN + 20..HEADER_LEN + 24)?.try_into().ok()?),
        socket_id: u32_at(d, HEADER_LEN + 24)?,
        cookie: i32::from_be_bytes(d.get(COOKIE_AT..COOKIE_AT + 4)?.try_into().ok()?),
    })
}

/// The listener's HSv5 induction response to `request` (a handshake packet of
/// at least [`HANDSHAKE_LEN`] bytes), built without srt-protocol and without
/// state: what srt-protocol's `Listen` sends (the request's fixed part with
/// version 5, no encryption, the SRT magic code, type induction, our socket id
/// and the cookie), addressed to the caller's socket id, without extensions.
pub(crate) fn induction_response(
    request: &[u8],
    cookie: i32,
    our_sockid: u32,
    ipv6: bool,
) -> Option<Bytes> {
    let hs = request.get(..HANDSHAKE_LEN)?;
    let caller_sockid = u32_at(hs, HEADER_LEN + 24)?;
    let mut out = BytesMut::from(hs);
    // Control packet, type handshake; reserved and additional info zero; the
    // caller's timestamp stays.
    out[0..8].copy_from_slice(&[0x80, 0, 0, 0, 0, 0, 0, 0]);
    out[12..16].copy_from_slice(&caller_sockid.to_be_bytes());
    out[HEADER_LEN..HEADER_LEN + 4].copy_from_slice(&5u32.to_be_bytes());
    out[HEADER_LEN + 4..HEADER_LEN + 6].copy_from_slice(&[0, 0]);
    out[HEADER_LEN + 6..HEADER_LEN + 8].copy_from_slice(&SRT_MAGIC.to_be_bytes());
    // Initial sequence number, MTU and flow window are the caller's.
    out[HEADER_LEN + 20..HEADER_LEN + 24].copy_from_slice(&INDUCTION.to_be_bytes());
    out[HEADER_LEN + 24..HEADER_LEN + 28].copy_from_slice(&our_sockid.to_be_bytes());
    set_cookie(&mut out, cookie);
    // The peer address field as the caller gave it (an IPv4 address is one word).
    if !ipv6 {
        out[HEADER_LEN + 36..HANDSHAKE_LEN].fill(0);
    }
    Some(out.freeze())
}

/// Writes `cookie` into a handshake packet (no-op if `d` is too short).
pub(crate) fn set_cookie(d: &mut [u8], cookie: i32) {
    if let Some(field) = d.get_mut(COOKIE_AT..COOKIE_AT + 4) {
        field.copy_from_slice(&cookie.to_be_bytes());
    }
}

/// What the listener learned from a supported HSv5 conclusion request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Conclusion {
    /// The packet to give srt-protocol (possibly rewritten, see module docs).
    pub(crate) packet: Bytes,
    /// The caller sent key material (it has a passphrase).
    pub(crate) encrypted: bool,
    /// The key length the caller asked for: from its key material when
    /// encrypted, else the handshake's encryption field.
    pub(crate) key_size: KeySize,
}

/// A conclusion request we refuse, with the code for the caller and the
/// reason for our log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Unsupported {
    /// The rejection code sent to the caller.
    pub(crate) reject: Reject,
    /// Why, for the log (never contains secrets).
    pub(crate) reason: String,
}

fn unsupported(reject: Reject, reason: impl Into<String>) -> Unsupported {
    Unsupported {
        reject,
        reason: reason.into(),
    }
}

/// Decodes a string extension (libsrt stores it in 32-bit words, each in
/// little-endian byte order, padded with NULs).
fn ext_string(content: &[u8]) -> String {
    let mut bytes = Vec::with_capacity(content.len());
    for word in content.chunks(4) {
        bytes.extend(word.iter().rev());
    }
    while bytes.last() == Some(&0) {
        bytes.pop();
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Checks an HSv5 conclusion request (`d` must be a handshake packet with
/// version 5 and type conclusion) and returns the packet srt-protocol may see.
pub(crate) fn inspect_conclusion(d: &Bytes) -> Result<Conclusion, Unsupported> {
    let key_field = u16_at(d, HEADER_LEN + 4)
        .ok_or_else(|| unsupported(Reject::BadRequest, "truncated handshake"))?;
    let flags_field = u16_at(d, HEADER_LEN + 6)
        .ok_or_else(|| unsupported(Reject::BadRequest, "truncated handshake"))?;
    let mut encrypted = false;
    let mut km_key_len = None;
    let mut hs_flags = None;
    // Offset of the SRT flags inside the HSREQ extension.
    let mut hs_flags_at = None;
    let mut has_sid = false;
    // Extension byte ranges srt-protocol may see; others are stripped.
    let mut kept: Vec<(usize, usize)> = Vec::new();
    let mut stripped = false;
    let mut at = HANDSHAKE_LEN;
    let repeated = || unsupported(Reject::BadRequest, "repeated handshake extension");
    while d.len() >= at + 4 {
        let ext_type = u16_at(d, at).unwrap_or(0);
        let words = usize::from(u16_at(d, at + 2).unwrap_or(0));
        let end = at + 4 + words * 4;
        let Some(content) = d.get(at + 4..end) else {
            return Err(unsupported(
                Reject::BadRequest,
                "truncated handshake extension",
            ));
        };
        match ext_type {
            EXT_HSREQ => {
                if hs_flags.is_some() {
                    return Err(repeated());
                }
                // Version, flags, two latencies.
                if content.len() < 12 {
                    return Err(unsupported(
                        Reject::BadRequest,
                        "truncated SRT handshake extension (HSREQ)",
                    ));
                }
                hs_flags = u32_at(content, 4);
                hs_flags_at = Some(at + 8);
                kept.push((at, end));
            }
            EXT_KMREQ => {
                if encrypted {
                    return Err(repeated());
                }
                // srt-protocol's minimum: four words before salt and keys.
                if content.len() < 16 {
                    return Err(unsupported(
                        Reject::BadRequest,
                        "truncated key material extension (KMREQ)",
                    ));
                }
                encrypted = true;
                // KLen/4 is byte 15 of the keying material message.
                km_key_len = content.get(15).map(|k| u16::from(*k) * 4);
                kept.push((at, end));
            }
            EXT_SID => {
                if has_sid {
                    return Err(repeated());
                }
                // srt-protocol panics on an empty one.
                if content.is_empty() {
                    return Err(unsupported(Reject::BadRequest, "empty stream id extension"));
                }
                has_sid = true;
                kept.push((at, end));
            }
            EXT_CONGESTION => {
                let name = ext_string(content);
                if name != "live" {
                    return Err(unsupported(
                        Reject::Congestion,
                        format!(
                            "congestion control {name:?} (file mode, transtype=file) is not supported; only live mode"
                        ),
                    ));
                }
                stripped = true;
            }
            EXT_FILTER => {
                return Err(unsupported(
                    Reject::Filter,
                    format!(
                        "packet filter {:?} (FEC, packetfilter=) is not supported",
                        ext_string(content)
                    ),
                ));
            }
            EXT_GROUP => {
                return Err(unsupported(
                    Reject::Group,
                    "socket groups (connection bonding) are not supported",
                ));
            }
            // Anything else, including responses (HSRSP, KMRSP) in a request:
            // srt-protocol would panic on a KMRSP here ("expected no
            // secrets"); a request has no use for them.
            _ => stripped = true,
        }
        at = end;
    }
    if at != d.len() {
        // Trailing bytes that are not a whole extension: srt-protocol warns and
        // ignores them; drop them.
        stripped = true;
    }

    let flags = hs_flags.ok_or_else(|| {
        unsupported(
            Reject::Version,
            "no SRT handshake extension (HSREQ) in the conclusion",
        )
    })?;
    if flags & FLAG_STREAM != 0 {
        return Err(unsupported(
            Reject::MessageApi,
            "stream API (messageapi=0, file transfer) is not supported; only live mode",
        ));
    }
    if flags & FLAGS_TSBPD == 0 {
        return Err(unsupported(
            Reject::Congestion,
            "caller does not use TSBPD (not live mode); only live mode is supported",
        ));
    }

    let field_len = key_field << 3;
    let key_size = if encrypted {
        let len = km_key_len.unwrap_or(0);
        match KeySize::from_bytes(len) {
            Some(k) if k != KeySize::Unspecified => k,
            _ => {
                return Err(unsupported(
                    Reject::Unsecure,
                    format!("key material with an invalid key length of {len} bytes"),
                ));
            }
        }
    } else {
        KeySize::from_bytes(field_len).unwrap_or_default()
    };

    // srt-protocol compares our key length with the handshake's encryption
    // field (and panics on a mismatch); the key material is what counts. An
    // unencrypted caller's field is only a wish: an invalid one becomes 0.
    let fix_key_field = field_len != key_size.bytes();
    // The extension flags say which extensions follow (srt-protocol warns
    // about any mismatch and unknown bits); the SRT flags lose the bits
    // srt-protocol would warn about and ignore.
    let mut ext_flags = 0;
    if hs_flags.is_some() {
        ext_flags |= EXT_FLAG_HS;
    }
    if encrypted {
        ext_flags |= EXT_FLAG_KM;
    }
    if has_sid {
        ext_flags |= EXT_FLAG_CONFIG;
    }
    let fix_flags = flags_field != ext_flags || flags & !KNOWN_SRT_FLAGS != 0;
    let packet = if stripped || fix_key_field || fix_flags {
        let mut out = BytesMut::with_capacity(d.len());
        out.extend_from_slice(&d[..HANDSHAKE_LEN]);
        let field = (key_size.bytes() >> 3).to_be_bytes();
        out[HEADER_LEN + 4..HEADER_LEN + 6].copy_from_slice(&field);
        out[HEADER_LEN + 6..HEADER_LEN + 8].copy_from_slice(&ext_flags.to_be_bytes());
        for (start, end) in kept {
            let out_start = out.len();
            out.put_slice(&d[start..end]);
            if let Some(f) = hs_flags_at.filter(|f| (start..end).contains(f)) {
                let f = out_start + (f - start);
                out[f..f + 4].copy_from_slice(&(flags & KNOWN_SRT_FLAGS).to_be_bytes());
            }
        }
        out.freeze()
    } else {
        d.clone()
    };
    Ok(Conclusion {
        packet,
        encrypted,
        key_size,
    })
}

/// A short description of an srt-protocol handshake error. Never its
/// `Display`: that quotes whole handshakes, stream ids (and keys) included.
pub(crate) fn connect_error_kind(
    e: &srt_protocol::protocol::pending_connection::ConnectError,
) -> &'static str {
    use srt_protocol::protocol::pending_connection::ConnectError as E;
    match e {
        E::ControlExpected(_) => "data packet instead of a handshake",
        E::HandshakeExpected(_) => "control packet instead of a handshake",
        E::InductionExpected(_) => "induction expected",
        E::ConclusionExpected(_) => "conclusion expected",
        E::UnexpectedHost(..) => "packet from an unexpected address",
        E::UnsupportedProtocolVersion(_) => "unsupported handshake version",
        E::InvalidHandshakeCookie(..) => "invalid cookie",
        E::ExpectedHsReq | E::ExpectedHsResp => "unexpected handshake extension",
        E::ExpectedExtFlags | E::ExpectedNoExtFlags => "unexpected extension flags",
        E::ExpectedAccessControlResponse => "handshake packet while the request is decided",
        E::ParseFailed(_) => "unparsable handshake",
        _ => "unexpected handshake",
    }
}

/// A handshake rejection answering `request` (a handshake packet of at least
/// [`HANDSHAKE_LEN`] bytes), built without srt-protocol: the request's fixed
/// part with the type set to the rejection code, addressed to the caller's
/// socket id, without extensions.
pub(crate) fn rejection(request: &[u8], reject: Reject, our_sockid: u32) -> Option<Bytes> {
    let hs = request.get(..HANDSHAKE_LEN)?;
    let caller_sockid = u32_at(hs, HEADER_LEN + 24)?;
    let mut out = BytesMut::from(hs);
    // Control packet, type handshake; reserved and additional info zero.
    out[0..8].copy_from_slice(&[0x80, 0, 0, 0, 0, 0, 0, 0]);
    out[12..16].copy_from_slice(&caller_sockid.to_be_bytes());
    // No encryption field, no extension flags.
    out[HEADER_LEN + 4..HEADER_LEN + 8].copy_from_slice(&[0; 4]);
    out[HEADER_LEN + 20..HEADER_LEN + 24].copy_from_slice(&reject.code().to_be_bytes());
    out[HEADER_LEN + 24..HEADER_LEN + 28].copy_from_slice(&our_sockid.to_be_bytes());
    Some(out.freeze())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Encodes a string extension the way libsrt does.
    fn ext_str(s: &str) -> Vec<u8> {
        let mut b = s.as_bytes().to_vec();
        while !b.len().is_multiple_of(4) {
            b.push(0);
        }
        b.chunks(4)
            .flat_map(|w| w.iter().rev().copied().collect::<Vec<_>>())
            .collect()
    }

    fn ext(ty: u16, content: &[u8]) -> Vec<u8> {
        let mut v = ty.to_be_bytes().to_vec();
        v.extend_from_slice(&u16::try_from(content.len() / 4).unwrap().to_be_bytes());
        v.extend_from_slice(content);
        v
    }

    fn hsreq(flags: u32) -> Vec<u8> {
        let mut c = 0x0001_0501_u32.to_be_bytes().to_vec();
        c.extend_from_slice(&flags.to_be_bytes());
        c.extend_from_slice(&[0, 120, 0, 120]);
        ext(EXT_HSREQ, &c)
    }

    fn kmreq(key_len: u8) -> Vec<u8> {
        let mut c = vec![
            0x12,
            0x20,
            0x29,
            0x01,
            0,
            0,
            0,
            0,
            2,
            0,
            2,
            0,
            0,
            0,
            4,
            key_len / 4,
        ];
        c.extend_from_slice(&[0xAA; 16]); // salt
        c.extend(std::iter::repeat_n(0xBB, usize::from(key_len) + 8)); // wrapped key
        ext(EXT_KMREQ, &c)
    }

    /// The extension flags libsrt sets for these extensions.
    fn ext_flags(exts: &[Vec<u8>]) -> u16 {
        exts.iter()
            .map(|e| match u16::from_be_bytes([e[0], e[1]]) {
                EXT_HSREQ => EXT_FLAG_HS,
                EXT_KMREQ => EXT_FLAG_KM,
                EXT_SID | EXT_CONGESTION | EXT_FILTER | EXT_GROUP => EXT_FLAG_CONFIG,
                _ => 0,
            })
            .fold(0, |a, b| a | b)
    }

    /// A conclusion request with the given key field and extensions (and the
    /// extension flags that go with them).
    pub(crate) fn conclusion(key_field_bytes: u16, exts: &[Vec<u8>]) -> Bytes {
        conclusion_with_flags(key_field_bytes, ext_flags(exts), exts)
    }

    fn conclusion_with_flags(key_field_bytes: u16, flags: u16, exts: &[Vec<u8>]) -> Bytes {
        let mut d = vec![0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0];
        d.extend_from_slice(&5u32.to_be_bytes());
        d.extend_from_slice(&(key_field_bytes >> 3).to_be_bytes());
        d.extend_from_slice(&flags.to_be_bytes());
        d.extend_from_slice(&1234u32.to_be_bytes()); // isn
        d.extend_from_slice(&1500u32.to_be_bytes());
        d.extend_from_slice(&8192u32.to_be_bytes());
        d.extend_from_slice(&CONCLUSION.to_be_bytes());
        d.extend_from_slice(&0x0102_0304u32.to_be_bytes()); // caller socket id
        d.extend_from_slice(&77i32.to_be_bytes()); // cookie
        d.extend_from_slice(&[127, 0, 0, 1]);
        d.extend_from_slice(&[0; 12]);
        for e in exts {
            d.extend_from_slice(e);
        }
        Bytes::from(d)
    }

    #[test]
    fn routes_handshakes_only() {
        let c = conclusion(0, &[hsreq(0xBF)]);
        let h = handshake_header(&c).unwrap();
        assert_eq!(h.shake_type, CONCLUSION);
        assert_eq!(h.version, 5);
        assert_eq!(h.socket_id, 0x0102_0304);
        assert_eq!(h.dest_sockid, 0);
        assert_eq!(handshake_header(&c[..40]), None);
        let mut data = c.to_vec();
        data[0] = 0x00; // data packet
        assert_eq!(handshake_header(&data), None);
        data[0] = 0x80;
        data[1] = 2; // ACK
        assert_eq!(handshake_header(&data), None);
        assert_eq!(dest_sockid(&[0; 15]), None);
    }

    #[test]
    fn plain_live_request_passes_unchanged() {
        let c = conclusion(0, &[hsreq(0xBF), ext(EXT_SID, &ext_str("#!::r=live/a"))]);
        let got = inspect_conclusion(&c).unwrap();
        assert_eq!(got.packet, c);
        assert!(!got.encrypted);
        assert_eq!(got.key_size, KeySize::Unspecified);
    }

    #[test]
    fn file_mode_fec_groups_and_stream_api_are_refused() {
        let file = conclusion(0, &[hsreq(0xBF), ext(EXT_CONGESTION, &ext_str("file"))]);
        assert_eq!(
            inspect_conclusion(&file).unwrap_err().reject,
            Reject::Congestion
        );
        let fec = conclusion(0, &[hsreq(0xBF), ext(EXT_FILTER, &ext_str("fec,cols:10"))]);
        let err = inspect_conclusion(&fec).unwrap_err();
        assert_eq!(err.reject, Reject::Filter);
        assert!(err.reason.contains("fec,cols:10"), "{}", err.reason);
        let group = conclusion(0, &[hsreq(0xBF), ext(EXT_GROUP, &[0; 8])]);
        assert_eq!(
            inspect_conclusion(&group).unwrap_err().reject,
            Reject::Group
        );
        let stream = conclusion(0, &[hsreq(0xBF | FLAG_STREAM)]);
        assert_eq!(
            inspect_conclusion(&stream).unwrap_err().reject,
            Reject::MessageApi
        );
        let no_tsbpd = conclusion(0, &[hsreq(0xBC)]);
        assert_eq!(
            inspect_conclusion(&no_tsbpd).unwrap_err().reject,
            Reject::Congestion
        );
        let no_hs = conclusion(0, &[]);
        assert_eq!(
            inspect_conclusion(&no_hs).unwrap_err().reject,
            Reject::Version
        );
        let mut truncated = conclusion(0, &[hsreq(0xBF)]).to_vec();
        truncated.truncate(truncated.len() - 2);
        let truncated = Bytes::from(truncated);
        assert_eq!(
            inspect_conclusion(&truncated).unwrap_err().reject,
            Reject::BadRequest
        );
    }

    #[test]
    fn live_congestion_and_unknown_extensions_are_stripped() {
        let c = conclusion(
            0,
            &[
                hsreq(0xBF),
                ext(EXT_CONGESTION, &ext_str("live")),
                ext(42, &[1, 2, 3, 4]),
            ],
        );
        let got = inspect_conclusion(&c).unwrap();
        assert_eq!(got.packet, conclusion(0, &[hsreq(0xBF)]));
    }

    /// The upstream bugs are real: srt-protocol panics parsing the congestion
    /// extension of a libsrt `transtype=file` caller, and any well-formed
    /// filter extension (libsrt's own `fec,cols:..` form merely fails to parse,
    /// so such a caller would time out without a reason).
    #[test]
    fn srt_protocol_panics_on_congestion_and_filter_extensions() {
        let peer = "127.0.0.1:9".parse().unwrap();
        for e in [
            ext(EXT_CONGESTION, &ext_str("file")),
            ext(EXT_FILTER, &ext_str("cols:4,rows:2")),
        ] {
            let c = conclusion(0, &[hsreq(0xBF), e]);
            let r = crate::guard::guarded(peer, "test", || {
                srt_protocol::packet::Packet::parse(&mut &c[..], false).is_ok()
            });
            assert_eq!(r, None, "srt-protocol no longer panics here");
        }
    }

    #[test]
    fn responses_in_a_request_are_stripped() {
        let mut kmrsp = kmreq(16);
        kmrsp[1] = 4;
        let c = conclusion(0, &[hsreq(0xBF), kmrsp]);
        let got = inspect_conclusion(&c).unwrap();
        assert!(!got.encrypted);
        assert_eq!(got.packet, conclusion(0, &[hsreq(0xBF)]));
    }

    #[test]
    fn key_length_comes_from_key_material() {
        let c = conclusion(32, &[hsreq(0xBF), kmreq(32)]);
        let got = inspect_conclusion(&c).unwrap();
        assert!(got.encrypted);
        assert_eq!(got.key_size, KeySize::Aes256);
        assert_eq!(got.packet, c);
        // Field and key material disagree: the field is rewritten.
        let c = conclusion(16, &[hsreq(0xBF), kmreq(24)]);
        let got = inspect_conclusion(&c).unwrap();
        assert_eq!(got.key_size, KeySize::Aes192);
        assert_eq!(got.packet, conclusion(24, &[hsreq(0xBF), kmreq(24)]));
        let bad = conclusion(16, &[hsreq(0xBF), kmreq(20)]);
        assert_eq!(
            inspect_conclusion(&bad).unwrap_err().reject,
            Reject::Unsecure
        );
    }

    #[test]
    fn rejection_packet_addresses_the_caller() {
        let c = conclusion(0, &[hsreq(0xBF)]);
        let r = rejection(&c, Reject::Filter, 0xDEAD_BEEF).unwrap();
        assert_eq!(r.len(), HANDSHAKE_LEN);
        let h = handshake_header(&r).unwrap();
        assert_eq!(h.shake_type, 1014);
        assert_eq!(h.dest_sockid, 0x0102_0304);
        assert_eq!(h.socket_id, 0xDEAD_BEEF);
        // srt-protocol's caller understands it.
        let p = srt_protocol::packet::Packet::parse(&mut &r[..], false).unwrap();
        let srt_protocol::packet::Packet::Control(ctl) = p else {
            panic!("not a control packet")
        };
        let srt_protocol::packet::ControlTypes::Handshake(hs) = ctl.control_type else {
            panic!("not a handshake")
        };
        assert_eq!(
            hs.shake_type,
            srt_protocol::packet::ShakeType::Rejection(Reject::Filter.to_protocol())
        );
        assert_eq!(rejection(&c[..20], Reject::Filter, 1), None);
    }

    #[test]
    fn induction_response_is_what_srt_protocol_would_send() {
        use srt_protocol::packet::{ControlTypes, Packet};
        use srt_protocol::protocol::pending_connection::ConnectionResult;
        use srt_protocol::protocol::pending_connection::listen::Listen;
        use srt_protocol::settings::ConnInitSettings;

        // libsrt's induction: HSv4, socket type datagram, no cookie.
        let mut req = vec![0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x30, 0x39, 0, 0, 0, 0];
        req.extend_from_slice(&4u32.to_be_bytes());
        req.extend_from_slice(&2u32.to_be_bytes());
        req.extend_from_slice(&0x0102_0304u32.to_be_bytes()); // isn
        req.extend_from_slice(&1500u32.to_be_bytes());
        req.extend_from_slice(&8192u32.to_be_bytes());
        req.extend_from_slice(&INDUCTION.to_be_bytes());
        req.extend_from_slice(&0x0A0B_0C0Du32.to_be_bytes()); // caller socket id
        req.extend_from_slice(&0i32.to_be_bytes());
        req.extend_from_slice(&[1, 0, 0, 127]);
        req.extend_from_slice(&[0; 12]);
        let peer = "127.0.0.1:5000".parse().unwrap();

        let settings = ConnInitSettings::default();
        let ours = settings.local_sockid.0;
        let mut listen = Listen::new(settings, true);
        let parsed = Packet::parse(&mut &req[..], false).unwrap();
        let ConnectionResult::SendPacket((Packet::Control(resp), to)) =
            listen.handle_packet(std::time::Instant::now(), Ok((parsed, peer)))
        else {
            panic!("no induction response")
        };
        assert_eq!(to, peer);
        let ControlTypes::Handshake(hs) = &resp.control_type else {
            panic!("not a handshake")
        };
        let mut expected = BytesMut::new();
        Packet::Control(resp.clone()).serialize(&mut expected);

        let got = induction_response(&req, hs.syn_cookie, ours, false).unwrap();
        assert_eq!(&got[..], &expected[..]);
        let h = handshake_header(&got).unwrap();
        assert_eq!(h.shake_type, INDUCTION);
        assert_eq!(h.dest_sockid, 0x0A0B_0C0D);
        assert_eq!(h.cookie, hs.syn_cookie);
        assert_eq!(induction_response(&req[..63], 1, 1, false), None);
    }

    #[test]
    fn extensions_srt_protocol_panics_or_warns_on_are_refused_or_normalised() {
        // An empty stream id (followed by anything) makes srt-protocol panic.
        let empty_sid = conclusion(0, &[ext(EXT_SID, &[]), hsreq(0xBF)]);
        let r = crate::guard::guarded("127.0.0.1:9".parse().unwrap(), "test", || {
            srt_protocol::packet::Packet::parse(&mut &empty_sid[..], false).is_ok()
        });
        assert_eq!(
            r, None,
            "srt-protocol no longer panics on an empty stream id"
        );
        assert_eq!(
            inspect_conclusion(&empty_sid).unwrap_err().reject,
            Reject::BadRequest
        );
        for bad in [
            conclusion(0, &[hsreq(0xBF), hsreq(0xBF)]),
            conclusion(
                0,
                &[
                    hsreq(0xBF),
                    ext(EXT_SID, &ext_str("a")),
                    ext(EXT_SID, &ext_str("b")),
                ],
            ),
            conclusion(16, &[hsreq(0xBF), kmreq(16), kmreq(16)]),
            conclusion(0, &[ext(EXT_HSREQ, &[0, 1, 5, 1, 0, 0, 0, 0xBF])]),
            conclusion(
                16,
                &[hsreq(0xBF), ext(EXT_KMREQ, &[0x12, 0x20, 0x29, 0x01])],
            ),
        ] {
            assert_eq!(
                inspect_conclusion(&bad).unwrap_err().reject,
                Reject::BadRequest
            );
        }
        // Wrong extension flags, unknown SRT flags and an invalid key field of
        // an unencrypted caller are rewritten.
        let sid = ext(EXT_SID, &ext_str("#!::r=live/a"));
        let odd = conclusion_with_flags(40, 0xFFF0, &[hsreq(0xFFFF_FFBF), sid.clone()]);
        let got = inspect_conclusion(&odd).unwrap();
        assert_eq!(got.packet, conclusion(0, &[hsreq(0xBF), sid]));
        assert_eq!(got.key_size, KeySize::Unspecified);
    }
}
