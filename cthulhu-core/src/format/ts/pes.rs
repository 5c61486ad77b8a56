//! PES packet headers (ISO/IEC 13818-1 §2.4.3.6): the fields this demuxer reads
//! (stream id, length, PTS, DTS) and the header the muxer writes.

/// stream_id of the first MPEG video stream.
pub(super) const STREAM_ID_VIDEO: u8 = 0xE0;
/// stream_id of the first MPEG audio stream.
pub(super) const STREAM_ID_AUDIO: u8 = 0xC0;
/// stream_id of private_stream_1 (Opus).
pub(super) const STREAM_ID_PRIVATE_1: u8 = 0xBD;

/// The longest header this muxer writes: 9 fixed bytes, PTS and DTS.
pub(super) const MAX_HEADER: usize = 19;

/// What a PES header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct PesHeader {
    /// The stream_id.
    pub(super) stream_id: u8,
    /// The 33-bit PTS, if present.
    pub(super) pts: Option<u64>,
    /// The 33-bit DTS, if present.
    pub(super) dts: Option<u64>,
    /// Where the payload starts.
    pub(super) payload_offset: usize,
}

/// The PES_packet_length field of a PES start (`None` until 6 bytes are there);
/// 0 means unbounded (video only).
pub(super) fn packet_length(data: &[u8]) -> Option<usize> {
    let &[_, _, _, _, l0, l1, ..] = data else {
        return None;
    };
    Some(usize::from(u16::from_be_bytes([l0, l1])))
}

/// Stream ids whose PES packets have no optional header (§2.4.3.7): program stream
/// map, padding, private stream 2, ECM, EMM, DSM-CC, H.222.1 type E, directory.
fn has_optional_header(stream_id: u8) -> bool {
    !matches!(
        stream_id,
        0xBC | 0xBE | 0xBF | 0xF0 | 0xF1 | 0xF2 | 0xF8 | 0xFF
    )
}

/// Parses the header of a complete PES packet.
pub(super) fn parse_header(data: &[u8]) -> Result<PesHeader, &'static str> {
    let &[0, 0, 1, stream_id, _, _, ref rest @ ..] = data else {
        return Err(if data.len() < 6 {
            "truncated PES header"
        } else {
            "no PES start code"
        });
    };
    if !has_optional_header(stream_id) {
        return Ok(PesHeader {
            stream_id,
            pts: None,
            dts: None,
            payload_offset: 6,
        });
    }
    let &[flags1, flags2, header_len, ref fields @ ..] = rest else {
        return Err("truncated PES header");
    };
    if flags1 & 0xC0 != 0x80 {
        return Err("PES optional header marker bits");
    }
    if flags1 & 0x30 != 0 {
        return Err("scrambled PES");
    }
    let fields = fields
        .get(..usize::from(header_len))
        .ok_or("PES_header_data_length past the end")?;
    let (pts, dts) = match flags2 >> 6 {
        0b10 => (Some(read_timestamp(fields.get(..5))?), None),
        0b11 => (
            Some(read_timestamp(fields.get(..5))?),
            Some(read_timestamp(fields.get(5..10))?),
        ),
        0b01 => return Err("PTS_DTS_flags 01 is forbidden"),
        _ => (None, None),
    };
    Ok(PesHeader {
        stream_id,
        pts,
        dts,
        payload_offset: 9 + usize::from(header_len),
    })
}

/// Reads a 5-byte PTS/DTS field (marker bits are not checked: some muxers get them
/// wrong and the value is still right).
fn read_timestamp(field: Option<&[u8]>) -> Result<u64, &'static str> {
    let Some(&[b0, b1, b2, b3, b4]) = field else {
        return Err("truncated PTS/DTS");
    };
    Ok((u64::from(b0 >> 1) & 0x07) << 30
        | u64::from(b1) << 22
        | u64::from(b2 >> 1) << 15
        | u64::from(b3) << 7
        | u64::from(b4 >> 1))
}

fn write_timestamp(prefix: u8, ts: u64, out: &mut [u8; MAX_HEADER], at: usize) {
    let bytes = [
        prefix << 4 | ((ts >> 29) as u8 & 0x0E) | 1,
        (ts >> 22) as u8,
        ((ts >> 14) as u8 & 0xFE) | 1,
        (ts >> 7) as u8,
        ((ts << 1) as u8 & 0xFE) | 1,
    ];
    for (i, b) in bytes.into_iter().enumerate() {
        if let Some(slot) = out.get_mut(at + i) {
            *slot = b;
        }
    }
}

/// Writes a PES header with PTS (and DTS when given) for a payload of
/// `payload_len` bytes; returns the header and its length. PES_packet_length is 0
/// (unbounded) when the packet does not fit in 16 bits.
pub(super) fn write_header(
    stream_id: u8,
    pts: u64,
    dts: Option<u64>,
    payload_len: usize,
) -> ([u8; MAX_HEADER], usize) {
    let mut out = [0u8; MAX_HEADER];
    let fields = if dts.is_some() { 10 } else { 5 };
    let len = 9 + fields;
    let packet_length = u16::try_from(len - 6 + payload_len).unwrap_or(0);
    let [l0, l1] = packet_length.to_be_bytes();
    // data_alignment_indicator: every PES starts with an access unit
    let pts_dts_flags = if dts.is_some() { 0xC0 } else { 0x80 };
    out[..9].copy_from_slice(&[
        0,
        0,
        1,
        stream_id,
        l0,
        l1,
        0x84,
        pts_dts_flags,
        fields as u8,
    ]);
    match dts {
        Some(dts) => {
            write_timestamp(0b0011, pts, &mut out, 9);
            write_timestamp(0b0001, dts, &mut out, 14);
        }
        None => write_timestamp(0b0010, pts, &mut out, 9),
    }
    (out, len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip() {
        let (h, len) = write_header(STREAM_ID_VIDEO, (1 << 33) - 1, Some(12_345), 1000);
        assert_eq!(len, 19);
        assert_eq!(packet_length(&h), Some(1013));
        let p = parse_header(&h[..len]).unwrap();
        assert_eq!(p.pts, Some((1 << 33) - 1));
        assert_eq!(p.dts, Some(12_345));
        assert_eq!(p.payload_offset, 19);
        let (h, len) = write_header(STREAM_ID_AUDIO, 90_000, None, 70_000);
        assert_eq!(len, 14);
        assert_eq!(packet_length(&h), Some(0));
        let p = parse_header(&h[..len]).unwrap();
        assert_eq!((p.stream_id, p.pts, p.dts), (0xC0, Some(90_000), None));
    }

    #[test]
    fn matches_ffmpeg_pts_encoding() {
        // the first video PES header of `ffmpeg -c:v libx264 -f mpegts`: PTS 132000,
        // DTS 126000 (ffmpeg's 1.4 s start, two frames of B-frame delay)
        let h = [
            0, 0, 1, 0xE0, 0, 0, 0x80, 0xC0, 0x0A, 0x31, 0x00, 0x09, 0x07, 0x41, 0x11, 0x00, 0x07,
            0xD8, 0x61,
        ];
        let p = parse_header(&h).unwrap();
        assert_eq!((p.pts, p.dts), (Some(132_000), Some(126_000)));
        let (ours, _) = write_header(0xE0, 132_000, Some(126_000), 70_000);
        // the same but for data_alignment_indicator, which this muxer sets
        assert_eq!(ours[..6], h[..6]);
        assert_eq!(ours[6], 0x84);
        assert_eq!(ours[7..], h[7..]);
    }

    #[test]
    fn malformed_headers() {
        assert!(parse_header(&[0, 0, 1]).is_err());
        assert!(parse_header(&[0, 0, 2, 0xE0, 0, 0, 0x80, 0, 0]).is_err());
        assert!(parse_header(&[0, 0, 1, 0xE0, 0, 0, 0x00, 0, 0]).is_err());
        assert!(parse_header(&[0, 0, 1, 0xE0, 0, 0, 0x80, 0x80, 5, 0x21]).is_err());
        assert!(parse_header(&[0, 0, 1, 0xE0, 0, 0, 0x80, 0x40, 0]).is_err());
        // padding stream: no optional header
        assert_eq!(
            parse_header(&[0, 0, 1, 0xBE, 0, 2, 0xFF, 0xFF])
                .unwrap()
                .payload_offset,
            6
        );
    }
}
