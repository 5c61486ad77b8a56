//! Opus: the OpusHead identification header (RFC 7845 §5.1).

use bytes::Bytes;

use super::CodecError;
use crate::model::CodecDetails;

/// Opus always decodes at 48 kHz.
pub const OPUS_SAMPLE_RATE: u32 = 48_000;

/// A parsed OpusHead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpusHead {
    /// Output channel count.
    pub channels: u8,
    /// Samples (at 48 kHz) to discard from the decoder output at the start.
    pub pre_skip: u16,
    /// The sample rate of the original input (informational; 0 = unknown).
    pub input_sample_rate: u32,
    /// Channel mapping family.
    pub mapping_family: u8,
}

/// Parses an OpusHead (`"OpusHead"`, version, channels, pre-skip, input rate, gain,
/// mapping family; little-endian).
pub fn parse_opus_head(data: &[u8]) -> Result<OpusHead, CodecError> {
    let head = data.get(..19).ok_or(CodecError::Truncated("OpusHead"))?;
    let [
        b'O',
        b'p',
        b'u',
        b's',
        b'H',
        b'e',
        b'a',
        b'd',
        version,
        channels,
        s0,
        s1,
        r0,
        r1,
        r2,
        r3,
        _,
        _,
        mapping_family,
    ] = *head
    else {
        return Err(CodecError::InvalidValue {
            field: "OpusHead magic",
            value: 0,
        });
    };
    if version >> 4 != 0 {
        return Err(CodecError::UnsupportedVersion(version));
    }
    if channels == 0 {
        return Err(CodecError::InvalidValue {
            field: "OpusHead channel count",
            value: 0,
        });
    }
    Ok(OpusHead {
        channels,
        pre_skip: u16::from_le_bytes([s0, s1]),
        input_sample_rate: u32::from_le_bytes([r0, r1, r2, r3]),
        mapping_family,
    })
}

impl OpusHead {
    /// Serializes a head of channel mapping family 0 (mono or stereo, output gain 0);
    /// other families carry a mapping table this does not write.
    pub fn to_bytes(&self) -> Result<Bytes, CodecError> {
        if self.mapping_family != 0 || !(1..=2).contains(&self.channels) {
            return Err(CodecError::NotRepresentable("OpusHead (mapping family 0)"));
        }
        let mut out = b"OpusHead".to_vec();
        out.push(1);
        out.push(self.channels);
        out.extend_from_slice(&self.pre_skip.to_le_bytes());
        out.extend_from_slice(&self.input_sample_rate.to_le_bytes());
        out.extend_from_slice(&[0, 0, 0]);
        Ok(Bytes::from(out))
    }
}

/// The duration of an Opus packet in 48 kHz samples, from its TOC byte and, for
/// code 3 packets, the frame count byte (RFC 6716 §3.1).
pub fn packet_samples(packet: &[u8]) -> Result<u32, CodecError> {
    let (&toc, rest) = packet
        .split_first()
        .ok_or(CodecError::Truncated("Opus TOC"))?;
    let config = usize::from(toc >> 3);
    let frame = match config {
        0..=11 => [480, 960, 1920, 2880].get(config % 4),
        12..=15 => [480, 960].get(config % 2),
        _ => [120, 240, 480, 960].get(config % 4),
    }
    .copied()
    .unwrap_or(960);
    let frames = match toc & 0x03 {
        0 => 1,
        1 | 2 => 2,
        _ => {
            let count = rest
                .first()
                .ok_or(CodecError::Truncated("Opus frame count"))?
                & 0x3F;
            if count == 0 {
                return Err(CodecError::InvalidValue {
                    field: "Opus frame count",
                    value: 0,
                });
            }
            u32::from(count)
        }
    };
    let samples = frame * frames;
    // RFC 6716 §3.2.5: a packet lasts at most 120 ms
    if samples > 5760 {
        return Err(CodecError::InvalidValue {
            field: "Opus packet duration",
            value: u64::from(samples),
        });
    }
    Ok(samples)
}

/// Parses an OpusHead into [`CodecDetails`]. An empty configuration (allowed for
/// Opus) yields the 48 kHz sample rate alone.
pub fn details(config: &Bytes) -> Result<CodecDetails, CodecError> {
    let channels = if config.is_empty() {
        None
    } else {
        Some(parse_opus_head(config)?.channels)
    };
    Ok(CodecDetails {
        sample_rate: Some(OPUS_SAMPLE_RATE),
        channels,
        ..CodecDetails::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const STEREO: &[u8] = b"OpusHead\x01\x02\x38\x01\x80\xbb\x00\x00\x00\x00\x00";

    #[test]
    fn stereo_head() {
        let h = parse_opus_head(STEREO).unwrap();
        assert_eq!(h.channels, 2);
        assert_eq!(h.pre_skip, 312);
        assert_eq!(h.input_sample_rate, 48_000);
        let d = details(&Bytes::from_static(STEREO)).unwrap();
        assert_eq!((d.sample_rate, d.channels), (Some(48_000), Some(2)));
        assert_eq!(details(&Bytes::new()).unwrap().channels, None);
    }

    #[test]
    fn bad_heads() {
        assert!(parse_opus_head(&STEREO[..18]).is_err());
        let mut bad = STEREO.to_vec();
        bad[0] = b'X';
        assert!(parse_opus_head(&bad).is_err());
        let mut v2 = STEREO.to_vec();
        v2[8] = 0x10;
        assert_eq!(
            parse_opus_head(&v2),
            Err(CodecError::UnsupportedVersion(0x10))
        );
    }

    #[test]
    fn head_round_trip() {
        let h = parse_opus_head(STEREO).unwrap();
        assert_eq!(h.to_bytes().unwrap(), Bytes::from_static(STEREO));
        let surround = OpusHead {
            channels: 6,
            pre_skip: 0,
            input_sample_rate: 0,
            mapping_family: 1,
        };
        assert!(surround.to_bytes().is_err());
    }

    #[test]
    fn packet_durations() {
        // CELT 20 ms (config 31), one frame: what libopus writes by default
        assert_eq!(packet_samples(&[0xFC, 0xFF]), Ok(960));
        // SILK 60 ms, two frames
        assert_eq!(packet_samples(&[0x19]), Ok(5760));
        // hybrid 10 ms, code 3 with 3 frames
        assert_eq!(packet_samples(&[0x63, 0x03]), Ok(1440));
        // CELT 2.5 ms
        assert_eq!(packet_samples(&[0x80]), Ok(120));
        assert!(packet_samples(&[]).is_err());
        assert!(packet_samples(&[0x03]).is_err());
        assert!(packet_samples(&[0x03, 0x00]).is_err());
        // 60 ms × 3 frames is longer than 120 ms
        assert!(packet_samples(&[0x1B, 0x03]).is_err());
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..40)) {
            let _ = parse_opus_head(&data);
            let mut d = b"OpusHead".to_vec();
            d.extend_from_slice(&data);
            let _ = parse_opus_head(&d);
        }
    }
}
