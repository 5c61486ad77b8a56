//! Codec configuration parsing: what a decoder configuration record says (profile,
//! level, picture size, sample rate, channels) and small bitstream helpers.
//!
//! Sans-IO and panic-free: every parser takes bytes, bounds-checks every length and
//! returns a [`CodecError`] on malformed input. One file per codec: [`h264`],
//! [`h265`], [`aac`], [`av1`], [`opus`]; [`bitreader`] holds the bit-level reader.

pub mod aac;
pub mod av1;
pub mod bitreader;
pub mod h264;
pub mod h265;
pub mod opus;

use crate::model::{Codec, CodecDetails};

/// Errors of codec configuration parsing.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CodecError {
    /// The input ended before the named field could be read.
    #[error("truncated input while reading {0}")]
    Truncated(&'static str),
    /// A configuration record declares a version this parser does not know.
    #[error("unsupported configuration record version {0}")]
    UnsupportedVersion(u8),
    /// An exp-Golomb code is longer than 32 bits.
    #[error("exp-Golomb code longer than 32 bits")]
    ExpGolombOverflow,
    /// A field holds a value outside its allowed range.
    #[error("invalid {field}: {value}")]
    InvalidValue {
        /// The field's name.
        field: &'static str,
        /// The value found.
        value: u64,
    },
    /// The configuration record carries no sequence parameter set.
    #[error("configuration record has no sequence parameter set")]
    MissingSps,
    /// The data does not start with an ADTS sync word.
    #[error("no ADTS sync word")]
    NoAdtsSync,
    /// The configuration cannot be expressed in the requested form.
    #[error("cannot be represented in {0}")]
    NotRepresentable(&'static str),
}

/// Parses what a codec configuration says, for reporting.
///
/// Returns `None` when the configuration record does not parse. A record that parses
/// but whose parameter sets do not still yields the record-level facts (profile,
/// level). MP3 has no configuration and yields empty details.
pub fn details(codec: &Codec) -> Option<CodecDetails> {
    match codec {
        Codec::H264 { config } => h264::details(config).ok(),
        Codec::H265 { config } => h265::details(config).ok(),
        Codec::Av1 { config } => av1::details(config).ok(),
        Codec::Aac { config } => aac::details(config).ok(),
        Codec::Opus { config } => opus::details(config).ok(),
        Codec::Mp3 => Some(CodecDetails::default()),
    }
}

/// Iterates over length-prefixed NAL units (the AVCC/HVCC layout of a [`Frame`]
/// payload).
///
/// Yields each NAL unit without its length prefix. A length size outside 1..=4 or a
/// length running past the end yields one error and then ends.
///
/// [`Frame`]: crate::model::Frame
#[derive(Debug, Clone)]
pub struct NalUnits<'a> {
    rest: &'a [u8],
    len_size: usize,
    done: bool,
}

/// Iterates over the length-prefixed NAL units of `payload`.
pub fn nal_units(payload: &[u8], nalu_len_size: usize) -> NalUnits<'_> {
    NalUnits {
        rest: payload,
        len_size: nalu_len_size,
        done: false,
    }
}

impl<'a> Iterator for NalUnits<'a> {
    type Item = Result<&'a [u8], CodecError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done || self.rest.is_empty() {
            return None;
        }
        if !(1..=4).contains(&self.len_size) {
            self.done = true;
            return Some(Err(CodecError::InvalidValue {
                field: "NALU length size",
                value: self.len_size as u64,
            }));
        }
        let Some((prefix, rest)) = self.rest.split_at_checked(self.len_size) else {
            self.done = true;
            return Some(Err(CodecError::Truncated("NALU length")));
        };
        let len = prefix
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        let Some((nal, rest)) = rest.split_at_checked(len) else {
            self.done = true;
            return Some(Err(CodecError::Truncated("NAL unit")));
        };
        self.rest = rest;
        Some(Ok(nal))
    }
}

/// Whether a length-prefixed H.264 access unit contains an IDR slice (NAL type 5).
///
/// Scans NAL units until an IDR is found or the payload is malformed (then `false`
/// unless an IDR came before the damage).
pub fn h264_is_keyframe(avcc_payload: &[u8], nalu_len_size: usize) -> bool {
    nal_units(avcc_payload, nalu_len_size)
        .map_while(Result::ok)
        .any(|nal| nal.first().is_some_and(|h| h & 0x1F == 5))
}

/// Whether a length-prefixed HEVC access unit contains an IRAP picture (NAL types
/// 16..=23: BLA, IDR, CRA and reserved IRAP types).
pub fn h265_is_keyframe(hvcc_payload: &[u8], nalu_len_size: usize) -> bool {
    nal_units(hvcc_payload, nalu_len_size)
        .map_while(Result::ok)
        .any(|nal| {
            nal.first()
                .is_some_and(|h| (16..=23).contains(&((h >> 1) & 0x3F)))
        })
}

/// A bounds-checked reader of byte-aligned fields in a configuration record, handing
/// out zero-copy slices of the record.
#[derive(Debug)]
pub(crate) struct RecordReader<'a> {
    data: &'a bytes::Bytes,
    pos: usize,
}

impl<'a> RecordReader<'a> {
    pub(crate) fn new(data: &'a bytes::Bytes) -> Self {
        Self { data, pos: 0 }
    }

    pub(crate) fn u8(&mut self, what: &'static str) -> Result<u8, CodecError> {
        let b = *self.data.get(self.pos).ok_or(CodecError::Truncated(what))?;
        self.pos += 1;
        Ok(b)
    }

    pub(crate) fn u16(&mut self, what: &'static str) -> Result<u16, CodecError> {
        Ok(u16::from_be_bytes([self.u8(what)?, self.u8(what)?]))
    }

    /// Takes the next `n` bytes as a zero-copy slice.
    pub(crate) fn take(
        &mut self,
        n: usize,
        what: &'static str,
    ) -> Result<bytes::Bytes, CodecError> {
        if self.remaining() < n {
            return Err(CodecError::Truncated(what));
        }
        let out = self.data.slice(self.pos..self.pos + n);
        self.pos += n;
        Ok(out)
    }

    pub(crate) fn remaining(&self) -> usize {
        self.data.len().saturating_sub(self.pos)
    }
}

/// Formats a level as `major.minor`, e.g. 4.0.
fn level_string(major: u32, minor: u32) -> String {
    format!("{major}.{minor}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use proptest::prelude::*;

    #[test]
    fn nal_iteration() {
        let p = [0, 0, 0, 2, 0x09, 0xF0, 0, 0, 0, 1, 0x65];
        let nals: Vec<_> = nal_units(&p, 4).collect();
        assert_eq!(nals, vec![Ok(&[0x09, 0xF0][..]), Ok(&[0x65][..])]);
        let nals: Vec<_> = nal_units(&[0, 5, 1], 2).collect();
        assert_eq!(nals, vec![Err(CodecError::Truncated("NAL unit"))]);
        assert_eq!(nal_units(&p, 0).count(), 1);
        assert_eq!(nal_units(&p, 5).count(), 1);
        assert_eq!(nal_units(&[], 4).count(), 0);
        // 1-byte and 3-byte length prefixes
        assert_eq!(nal_units(&[1, 0x65, 2, 0x41, 0], 1).count(), 2);
        assert_eq!(nal_units(&[0, 0, 1, 0x65], 3).count(), 1);
    }

    #[test]
    fn h264_keyframe_detection() {
        // AUD, SEI, IDR slice
        let idr = [
            0, 0, 0, 2, 0x09, 0x10, 0, 0, 0, 2, 0x06, 0x05, 0, 0, 0, 2, 0x65, 0x88,
        ];
        assert!(h264_is_keyframe(&idr, 4));
        // AUD, non-IDR slice
        let p = [0, 0, 0, 2, 0x09, 0x30, 0, 0, 0, 2, 0x41, 0x9A];
        assert!(!h264_is_keyframe(&p, 4));
        // damaged after the IDR still counts, damaged before does not
        assert!(h264_is_keyframe(&[0, 0, 0, 1, 0x65, 0, 0, 0, 9], 4));
        assert!(!h264_is_keyframe(&[0, 0, 0, 9, 0x65], 4));
        assert!(!h264_is_keyframe(&idr, 0));
        // 2-byte length prefixes
        assert!(h264_is_keyframe(&[0, 1, 0x25], 2));
    }

    #[test]
    fn h265_keyframe_detection() {
        // AUD (35), IDR_W_RADL (19)
        let idr = [0, 0, 0, 3, 0x46, 0x01, 0x10, 0, 0, 0, 2, 0x26, 0x01];
        assert!(h265_is_keyframe(&idr, 4));
        // CRA (21)
        assert!(h265_is_keyframe(&[0, 0, 0, 2, 0x2A, 0x01], 4));
        // TRAIL_R (1)
        assert!(!h265_is_keyframe(&[0, 0, 0, 2, 0x02, 0x01], 4));
        // RASL_N (8)
        assert!(!h265_is_keyframe(&[0, 0, 0, 2, 0x10, 0x01], 4));
        assert!(!h265_is_keyframe(&[], 4));
    }

    #[test]
    fn details_dispatch() {
        let d = details(&Codec::Aac {
            config: Bytes::from_static(&[0x12, 0x10]),
        })
        .unwrap();
        assert_eq!(d.sample_rate, Some(44_100));
        assert_eq!(details(&Codec::Mp3), Some(CodecDetails::default()));
        assert_eq!(
            details(&Codec::H264 {
                config: Bytes::from_static(&[1, 2])
            }),
            None
        );
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..256), len_size in 0usize..6) {
            let _ = h264_is_keyframe(&data, len_size);
            let _ = h265_is_keyframe(&data, len_size);
            let b = Bytes::from(data);
            for codec in [
                Codec::H264 { config: b.clone() },
                Codec::H265 { config: b.clone() },
                Codec::Av1 { config: b.clone() },
                Codec::Aac { config: b.clone() },
                Codec::Opus { config: b.clone() },
            ] {
                let _ = details(&codec);
            }
        }
    }
}
