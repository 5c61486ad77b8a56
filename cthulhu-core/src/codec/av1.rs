//! AV1: the AV1CodecConfigurationRecord (AV1-ISOBMFF §2.3) and the sequence header
//! OBU in its configOBUs (AV1 §5.5), read far enough for the maximum frame size.

use bytes::Bytes;

use super::bitreader::BitReader;
use super::{CodecError, level_string};
use crate::model::CodecDetails;

/// OBU type of a sequence header.
const OBU_SEQUENCE_HEADER: u32 = 1;

/// A parsed AV1CodecConfigurationRecord.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Av1Config {
    /// seq_profile (0 = Main, 1 = High, 2 = Professional).
    pub seq_profile: u8,
    /// seq_level_idx_0 (level X.Y is idx = (X - 2) * 4 + Y).
    pub seq_level_idx_0: u8,
    /// seq_tier_0.
    pub seq_tier_0: bool,
    /// Bit depth: 8, 10 or 12.
    pub bit_depth: u8,
    /// monochrome.
    pub monochrome: bool,
    /// Maximum frame width from the sequence header OBU, when present.
    pub max_width: Option<u32>,
    /// Maximum frame height from the sequence header OBU, when present.
    pub max_height: Option<u32>,
}

/// Parses an AV1CodecConfigurationRecord, and the sequence header OBU when the
/// record carries one (a damaged sequence header leaves the size unknown).
pub fn parse_av1_config(record: &[u8]) -> Result<Av1Config, CodecError> {
    let mut r = BitReader::new(record);
    let marker = r.read_flag()?;
    let version = r.read_bits(7)? as u8;
    if !marker || version != 1 {
        return Err(CodecError::UnsupportedVersion(version));
    }
    let seq_profile = r.read_bits(3)? as u8;
    let seq_level_idx_0 = r.read_bits(5)? as u8;
    let seq_tier_0 = r.read_flag()?;
    let high_bitdepth = r.read_flag()?;
    let twelve_bit = r.read_flag()?;
    let monochrome = r.read_flag()?;
    r.skip_bits(4 + 8)?; // chroma subsampling and position, presentation delay byte
    let bit_depth = match (high_bitdepth, twelve_bit) {
        (false, _) => 8,
        (true, false) => 10,
        (true, true) => 12,
    };
    let size = record
        .get(4..)
        .and_then(|obus| find_sequence_header(obus).ok().flatten());
    Ok(Av1Config {
        seq_profile,
        seq_level_idx_0,
        seq_tier_0,
        bit_depth,
        monochrome,
        max_width: size.map(|s| s.0),
        max_height: size.map(|s| s.1),
    })
}

fn read_leb128(r: &mut BitReader<'_>) -> Result<u64, CodecError> {
    let mut value = 0u64;
    for i in 0..8 {
        let b = r.read_u8()?;
        value |= u64::from(b & 0x7F) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(CodecError::InvalidValue {
        field: "leb128",
        value,
    })
}

/// Walks the OBUs and returns the maximum frame size from the first sequence header.
fn find_sequence_header(mut obus: &[u8]) -> Result<Option<(u32, u32)>, CodecError> {
    while !obus.is_empty() {
        let mut r = BitReader::new(obus);
        let _forbidden = r.read_flag()?;
        let obu_type = r.read_bits(4)?;
        let extension = r.read_flag()?;
        let has_size = r.read_flag()?;
        r.skip_bits(1)?;
        if extension {
            r.skip_bits(8)?;
        }
        let header_len = r.position() / 8;
        let (payload_len, size_len) = if has_size {
            let before = r.position();
            let len = read_leb128(&mut r)?;
            (
                usize::try_from(len).map_err(|_| CodecError::Truncated("OBU"))?,
                (r.position() - before) / 8,
            )
        } else {
            (obus.len().saturating_sub(header_len), 0)
        };
        let start = header_len + size_len;
        let end = start
            .checked_add(payload_len)
            .ok_or(CodecError::Truncated("OBU"))?;
        let payload = obus.get(start..end).ok_or(CodecError::Truncated("OBU"))?;
        if obu_type == OBU_SEQUENCE_HEADER {
            return parse_sequence_header(payload).map(Some);
        }
        obus = obus.get(end..).unwrap_or(&[]);
    }
    Ok(None)
}

/// Reads a uvlc() value (AV1 §4.10.3).
fn read_uvlc(r: &mut BitReader<'_>) -> Result<u32, CodecError> {
    let mut zeros = 0u32;
    while !r.read_bit()? {
        zeros += 1;
        if zeros >= 32 {
            return Ok(u32::MAX);
        }
    }
    let v = u64::from(r.read_bits(zeros)?) + (1u64 << zeros) - 1;
    Ok(u32::try_from(v).unwrap_or(u32::MAX))
}

/// sequence_header_obu() up to max_frame_height_minus_1.
fn parse_sequence_header(payload: &[u8]) -> Result<(u32, u32), CodecError> {
    let mut r = BitReader::new(payload);
    let _seq_profile = r.read_bits(3)?;
    let _still_picture = r.read_flag()?;
    let reduced_still_picture_header = r.read_flag()?;
    if reduced_still_picture_header {
        r.skip_bits(5)?; // seq_level_idx[0]
    } else {
        let timing_info_present = r.read_flag()?;
        let mut decoder_model_info_present = false;
        let mut buffer_delay_length = 0;
        if timing_info_present {
            r.skip_bits(64)?; // num_units_in_display_tick, time_scale
            if r.read_flag()? {
                read_uvlc(&mut r)?; // num_ticks_per_picture_minus_1
            }
            decoder_model_info_present = r.read_flag()?;
            if decoder_model_info_present {
                buffer_delay_length = r.read_bits(5)? as usize + 1;
                r.skip_bits(32 + 5 + 5)?;
            }
        }
        let initial_display_delay_present = r.read_flag()?;
        let operating_points = r.read_bits(5)? + 1;
        for _ in 0..operating_points {
            r.skip_bits(12)?; // operating_point_idc
            let level = r.read_bits(5)?;
            if level > 7 {
                r.skip_bits(1)?; // seq_tier
            }
            if decoder_model_info_present && r.read_flag()? {
                r.skip_bits(2 * buffer_delay_length + 1)?;
            }
            if initial_display_delay_present && r.read_flag()? {
                r.skip_bits(4)?;
            }
        }
    }
    let width_bits = r.read_bits(4)? + 1;
    let height_bits = r.read_bits(4)? + 1;
    let width = u64::from(r.read_bits(width_bits)?) + 1;
    let height = u64::from(r.read_bits(height_bits)?) + 1;
    // at most 16 bits each, so they fit
    Ok((width as u32, height as u32))
}

/// The name of an AV1 profile.
pub fn profile_name(seq_profile: u8) -> Option<&'static str> {
    match seq_profile {
        0 => Some("Main"),
        1 => Some("High"),
        2 => Some("Professional"),
        _ => None,
    }
}

/// The level as text: `3.1` for seq_level_idx 5; `max` for 31.
pub fn level_name(seq_level_idx: u8) -> String {
    if seq_level_idx == 31 {
        return "max".to_owned();
    }
    level_string(
        2 + u32::from(seq_level_idx >> 2),
        u32::from(seq_level_idx & 3),
    )
}

/// Parses an AV1CodecConfigurationRecord into [`CodecDetails`].
pub fn details(record: &Bytes) -> Result<CodecDetails, CodecError> {
    let c = parse_av1_config(record)?;
    Ok(CodecDetails {
        profile: Some(
            profile_name(c.seq_profile)
                .map(str::to_owned)
                .unwrap_or_else(|| c.seq_profile.to_string()),
        ),
        level: Some(level_name(c.seq_level_idx_0)),
        width: c.max_width,
        height: c.max_height,
        ..CodecDetails::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::h264::tests::hex;
    use proptest::prelude::*;

    /// av1C written by ffmpeg/libaom for testsrc 1280x720 yuv420p.
    const LIBAOM_720P: &str = "81050c000a0b0000002d4cffb3ccaf9004";

    #[test]
    fn libaom_720p() {
        let c = parse_av1_config(&hex(LIBAOM_720P)).unwrap();
        assert_eq!((c.seq_profile, c.seq_level_idx_0, c.bit_depth), (0, 5, 8));
        assert_eq!((c.max_width, c.max_height), (Some(1280), Some(720)));
        let d = details(&Bytes::from(hex(LIBAOM_720P))).unwrap();
        assert_eq!(d.profile.as_deref(), Some("Main"));
        assert_eq!(d.level.as_deref(), Some("3.1"));
    }

    #[test]
    fn record_without_obus_and_errors() {
        let c = parse_av1_config(&[0x81, 0x28, 0x40, 0x00]).unwrap();
        assert_eq!((c.seq_profile, c.seq_level_idx_0), (1, 8));
        assert_eq!(c.bit_depth, 10);
        assert_eq!(c.max_width, None);
        assert_eq!(level_name(8), "4.0");
        assert_eq!(level_name(31), "max");
        assert!(parse_av1_config(&[0x01, 0, 0, 0]).is_err());
        assert!(parse_av1_config(&[0x81, 0]).is_err());
        // a truncated sequence header leaves the size unknown
        let mut cut = hex(LIBAOM_720P);
        cut.truncate(10);
        assert_eq!(parse_av1_config(&cut).unwrap().max_width, None);
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = details(&Bytes::from(data.clone()));
            let mut rec = vec![0x81, 0x05, 0x0c, 0x00];
            rec.extend_from_slice(&data);
            let _ = parse_av1_config(&rec);
            let _ = parse_sequence_header(&data);
        }
    }
}
