//! Annex B byte streams (ITU-T H.264/H.265 Annex B, start-code delimited NAL units)
//! to and from the canonical length-prefixed layout, with the NAL unit types the
//! conversion cares about.

use bytes::{BufMut, Bytes, BytesMut};

use crate::model::CodecId;

/// NAL unit kinds that matter when converting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum NalKind {
    /// Access unit delimiter: dropped on demux, written first on mux.
    Aud,
    /// Filler data: dropped.
    Filler,
    /// A video parameter set (HEVC).
    Vps,
    /// A sequence parameter set.
    Sps,
    /// A picture parameter set.
    Pps,
    /// A slice of a random access picture (H.264 IDR, HEVC IRAP).
    Keyframe,
    /// Anything else (slices, SEI, end of sequence, ...).
    Other,
}

/// Classifies a NAL unit by its header.
pub(super) fn nal_kind(codec: CodecId, nal: &[u8]) -> NalKind {
    let Some(&h) = nal.first() else {
        return NalKind::Other;
    };
    if codec == CodecId::H265 {
        match (h >> 1) & 0x3F {
            35 => NalKind::Aud,
            38 => NalKind::Filler,
            32 => NalKind::Vps,
            33 => NalKind::Sps,
            34 => NalKind::Pps,
            16..=23 => NalKind::Keyframe,
            _ => NalKind::Other,
        }
    } else {
        match h & 0x1F {
            9 => NalKind::Aud,
            12 => NalKind::Filler,
            7 => NalKind::Sps,
            8 => NalKind::Pps,
            5 => NalKind::Keyframe,
            _ => NalKind::Other,
        }
    }
}

/// The access unit delimiter written before every access unit, with its start code:
/// H.264 primary_pic_type 7 (any slice type), HEVC pic_type 2 (I, P, B).
pub(super) fn aud(codec: CodecId) -> &'static [u8] {
    if codec == CodecId::H265 {
        &[0, 0, 0, 1, 0x46, 0x01, 0x50]
    } else {
        &[0, 0, 0, 1, 0x09, 0xF0]
    }
}

/// The 4-byte start code written before every NAL unit.
pub(super) const START_CODE: &[u8] = &[0, 0, 0, 1];

/// Finds the next `00 00 01` at or after `from`; returns its position.
fn find_start_code(data: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    // look at the third byte of each candidate: anything above 1 rules out three
    // positions at once
    while let Some(&b) = data.get(i + 2) {
        if b > 1 {
            i += 3;
        } else if b == 0 {
            i += 1;
        } else if data.get(i..i + 2) == Some(&[0, 0]) {
            return Some(i);
        } else {
            i += 3;
        }
    }
    None
}

/// Iterates over the NAL units of an Annex B byte stream, without start codes and
/// trailing zero bytes; bytes before the first start code are skipped.
pub(super) fn annexb_nals(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut next = find_start_code(data, 0).map(|p| p + 3);
    std::iter::from_fn(move || {
        loop {
            let start = next?;
            let end = match find_start_code(data, start) {
                Some(p) => {
                    next = Some(p + 3);
                    p
                }
                None => {
                    next = None;
                    data.len()
                }
            };
            let nal = data.get(start..end).unwrap_or(&[]);
            let trimmed = nal.len() - nal.iter().rev().take_while(|&&b| b == 0).count();
            let nal = nal.get(..trimmed).unwrap_or(&[]);
            if !nal.is_empty() {
                return Some(nal);
            }
        }
    })
}

/// An Annex B access unit in the canonical layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct AccessUnit {
    /// Length-prefixed (4 bytes) NAL units without AUD, filler and parameter sets.
    pub(super) data: Bytes,
    /// Whether it holds a random access picture.
    pub(super) keyframe: bool,
}

/// Parameter sets found in an access unit, in stream order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct ParameterSets<'a> {
    pub(super) vps: Vec<&'a [u8]>,
    pub(super) sps: Vec<&'a [u8]>,
    pub(super) pps: Vec<&'a [u8]>,
}

impl ParameterSets<'_> {
    pub(super) fn is_empty(&self) -> bool {
        self.vps.is_empty() && self.sps.is_empty() && self.pps.is_empty()
    }
}

/// Converts an Annex B access unit: one copy into a new buffer of the exact size.
pub(super) fn to_length_prefixed(codec: CodecId, data: &[u8]) -> (AccessUnit, ParameterSets<'_>) {
    let mut params = ParameterSets::default();
    let mut size = 0;
    let mut keyframe = false;
    for nal in annexb_nals(data) {
        match nal_kind(codec, nal) {
            NalKind::Aud | NalKind::Filler => {}
            NalKind::Vps => params.vps.push(nal),
            NalKind::Sps => params.sps.push(nal),
            NalKind::Pps => params.pps.push(nal),
            kind => {
                keyframe |= kind == NalKind::Keyframe;
                size += 4 + nal.len();
            }
        }
    }
    let mut out = BytesMut::with_capacity(size);
    for nal in annexb_nals(data) {
        if matches!(nal_kind(codec, nal), NalKind::Other | NalKind::Keyframe) {
            out.put_u32(nal.len() as u32);
            out.put_slice(nal);
        }
    }
    (
        AccessUnit {
            data: out.freeze(),
            keyframe,
        },
        params,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_three_and_four_byte_start_codes() {
        let data = [
            0, 0, 0, 1, 0x09, 0xF0, 0, 0, 1, 0x67, 1, 2, 0, 0, 0, 0, 1, 0x68, 3, 0, 0, 1, 0x65, 0,
            0, 3, 1, 0, 0,
        ];
        let nals: Vec<_> = annexb_nals(&data).collect();
        assert_eq!(
            nals,
            vec![
                &[0x09, 0xF0][..],
                &[0x67, 1, 2],
                &[0x68, 3],
                &[0x65, 0, 0, 3, 1]
            ]
        );
        let (au, ps) = to_length_prefixed(CodecId::H264, &data);
        assert!(au.keyframe);
        assert_eq!(&au.data[..], &[0, 0, 0, 5, 0x65, 0, 0, 3, 1]);
        assert_eq!(ps.sps, vec![&[0x67, 1, 2][..]]);
        assert_eq!(ps.pps, vec![&[0x68, 3][..]]);
        assert!(ps.vps.is_empty());
    }

    #[test]
    fn garbage_and_empty_inputs() {
        assert_eq!(annexb_nals(&[]).count(), 0);
        assert_eq!(annexb_nals(&[1, 2, 3, 0, 0]).count(), 0);
        assert_eq!(annexb_nals(&[0, 0, 1]).count(), 0);
        assert_eq!(annexb_nals(&[0, 0, 1, 0, 0, 1, 0x41]).count(), 1);
        assert_eq!(annexb_nals(&[7, 0, 0, 1, 0x41, 0, 0, 1]).count(), 1);
        let (au, ps) = to_length_prefixed(CodecId::H264, &[0, 0, 1, 0x0C, 0xFF]);
        assert!(au.data.is_empty() && ps.is_empty() && !au.keyframe);
    }

    #[test]
    fn hevc_kinds() {
        let data = [
            0, 0, 0, 1, 0x46, 0x01, 0x50, 0, 0, 0, 1, 0x40, 0x01, 0xAA, 0, 0, 0, 1, 0x42, 0x01,
            0xBB, 0, 0, 0, 1, 0x44, 0x01, 0xCC, 0, 0, 1, 0x4E, 0x01, 5, 0, 0, 1, 0x2A, 0x01, 0xDD,
        ];
        let (au, ps) = to_length_prefixed(CodecId::H265, &data);
        assert!(au.keyframe, "CRA is a random access point");
        assert_eq!((ps.vps.len(), ps.sps.len(), ps.pps.len()), (1, 1, 1));
        // SEI and the CRA slice stay
        assert_eq!(
            &au.data[..],
            &[0, 0, 0, 3, 0x4E, 0x01, 5, 0, 0, 0, 3, 0x2A, 0x01, 0xDD]
        );
    }
}
