//! H.265 / HEVC: the HEVCDecoderConfigurationRecord (ISO/IEC 14496-15 §8.3.3) and the
//! sequence parameter set (ITU-T H.265 §7.3.2.2), parsed far enough for profile,
//! tier, level and the conformance-window-cropped picture size.

use bytes::{BufMut, Bytes, BytesMut};

use super::bitreader::{BitReader, remove_emulation_prevention};
use super::{CodecError, RecordReader, level_string};
use crate::model::CodecDetails;

/// NAL unit type of a video parameter set.
pub const NAL_VPS: u8 = 32;
/// NAL unit type of a sequence parameter set.
pub const NAL_SPS: u8 = 33;
/// NAL unit type of a picture parameter set.
pub const NAL_PPS: u8 = 34;

/// A parsed HEVCDecoderConfigurationRecord; parameter sets are zero-copy slices of
/// the record. Arrays of other NAL unit types (SEI) are skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HevcConfig {
    /// general_profile_space.
    pub general_profile_space: u8,
    /// general_tier_flag (true = High tier).
    pub general_tier_flag: bool,
    /// general_profile_idc (1 = Main, 2 = Main 10, ...).
    pub general_profile_idc: u8,
    /// general_profile_compatibility_flags.
    pub general_profile_compatibility_flags: u32,
    /// general_constraint_indicator_flags (48 bits).
    pub general_constraint_indicator_flags: u64,
    /// general_level_idc (30 × level, e.g. 120 for level 4.0).
    pub general_level_idc: u8,
    /// min_spatial_segmentation_idc.
    pub min_spatial_segmentation_idc: u16,
    /// parallelismType.
    pub parallelism_type: u8,
    /// chromaFormat (chroma_format_idc).
    pub chroma_format_idc: u8,
    /// Luma bit depth.
    pub bit_depth_luma: u8,
    /// Chroma bit depth.
    pub bit_depth_chroma: u8,
    /// avgFrameRate in frames per 256 seconds (0 = unspecified).
    pub avg_frame_rate: u16,
    /// constantFrameRate.
    pub constant_frame_rate: u8,
    /// numTemporalLayers.
    pub num_temporal_layers: u8,
    /// temporalIdNested.
    pub temporal_id_nested: bool,
    /// Size in bytes of the NAL unit length prefix in frames (1, 2 or 4).
    pub nalu_length_size: u8,
    /// array_completeness of the parameter set arrays: whether all parameter sets
    /// are in the record (none in band). Read from the first array.
    pub array_completeness: bool,
    /// Video parameter sets, each a whole NAL unit (2-byte header included).
    pub vps: Vec<Bytes>,
    /// Sequence parameter sets.
    pub sps: Vec<Bytes>,
    /// Picture parameter sets.
    pub pps: Vec<Bytes>,
}

/// Parses an HEVCDecoderConfigurationRecord.
pub fn parse_hevc_config(record: &Bytes) -> Result<HevcConfig, CodecError> {
    let mut r = RecordReader::new(record);
    let version = r.u8("configurationVersion")?;
    if version != 1 {
        return Err(CodecError::UnsupportedVersion(version));
    }
    let b = r.u8("general_profile_idc")?;
    let compat = (u32::from(r.u16("general_profile_compatibility_flags")?) << 16)
        | u32::from(r.u16("general_profile_compatibility_flags")?);
    let mut constraint = 0u64;
    for _ in 0..6 {
        constraint = (constraint << 8) | u64::from(r.u8("general_constraint_indicator_flags")?);
    }
    let general_level_idc = r.u8("general_level_idc")?;
    let min_spatial = r.u16("min_spatial_segmentation_idc")? & 0x0FFF;
    let parallelism_type = r.u8("parallelismType")? & 0x03;
    let chroma_format_idc = r.u8("chromaFormat")? & 0x03;
    let bit_depth_luma = (r.u8("bitDepthLumaMinus8")? & 0x07) + 8;
    let bit_depth_chroma = (r.u8("bitDepthChromaMinus8")? & 0x07) + 8;
    let avg_frame_rate = r.u16("avgFrameRate")?;
    let flags = r.u8("lengthSizeMinusOne")?;
    let num_arrays = r.u8("numOfArrays")?;
    let (mut vps, mut sps, mut pps) = (Vec::new(), Vec::new(), Vec::new());
    let mut array_completeness = false;
    for i in 0..num_arrays {
        let b = r.u8("NAL_unit_type")?;
        if i == 0 {
            array_completeness = b & 0x80 != 0;
        }
        let nal_type = b & 0x3F;
        let count = r.u16("numNalus")?;
        for _ in 0..count {
            let len = r.u16("nalUnitLength")?;
            let nal = r.take(usize::from(len), "nalUnit")?;
            match nal_type {
                NAL_VPS => vps.push(nal),
                NAL_SPS => sps.push(nal),
                NAL_PPS => pps.push(nal),
                _ => {}
            }
        }
    }
    Ok(HevcConfig {
        general_profile_space: b >> 6,
        general_tier_flag: b & 0x20 != 0,
        general_profile_idc: b & 0x1F,
        general_profile_compatibility_flags: compat,
        general_constraint_indicator_flags: constraint,
        general_level_idc,
        min_spatial_segmentation_idc: min_spatial,
        parallelism_type,
        chroma_format_idc,
        bit_depth_luma,
        bit_depth_chroma,
        avg_frame_rate,
        constant_frame_rate: flags >> 6,
        num_temporal_layers: (flags >> 3) & 0x07,
        temporal_id_nested: flags & 0x04 != 0,
        nalu_length_size: (flags & 0x03) + 1,
        array_completeness,
        vps,
        sps,
        pps,
    })
}

impl HevcConfig {
    /// Builds a record from parameter set NAL units (for example from an Annex B
    /// stream), taking profile, tier, level, chroma format and bit depths from the
    /// first SPS.
    pub fn from_parameter_sets(
        vps: Vec<Bytes>,
        sps: Vec<Bytes>,
        pps: Vec<Bytes>,
    ) -> Result<Self, CodecError> {
        let s = parse_sps(sps.first().ok_or(CodecError::MissingSps)?)?;
        Ok(Self {
            general_profile_space: s.general_profile_space,
            general_tier_flag: s.general_tier_flag,
            general_profile_idc: s.general_profile_idc,
            general_profile_compatibility_flags: s.general_profile_compatibility_flags,
            general_constraint_indicator_flags: s.general_constraint_indicator_flags,
            general_level_idc: s.general_level_idc,
            min_spatial_segmentation_idc: 0,
            parallelism_type: 0,
            chroma_format_idc: (s.chroma_format_idc & 0x03) as u8,
            bit_depth_luma: s.bit_depth_luma,
            bit_depth_chroma: s.bit_depth_chroma,
            avg_frame_rate: 0,
            constant_frame_rate: 0,
            num_temporal_layers: s.max_sub_layers,
            temporal_id_nested: s.temporal_id_nesting,
            nalu_length_size: 4,
            array_completeness: false,
            vps,
            sps,
            pps,
        })
    }

    /// The first SPS, parsed.
    pub fn parse_sps(&self) -> Result<HevcSps, CodecError> {
        parse_sps(self.sps.first().ok_or(CodecError::MissingSps)?)
    }

    /// Serializes the record with its VPS, SPS and PPS arrays.
    pub fn to_bytes(&self) -> Result<Bytes, CodecError> {
        if !(1..=4).contains(&self.nalu_length_size) || self.nalu_length_size == 3 {
            return Err(CodecError::InvalidValue {
                field: "NALU length size",
                value: u64::from(self.nalu_length_size),
            });
        }
        let not_representable = || CodecError::NotRepresentable("HEVCDecoderConfigurationRecord");
        let mut out = BytesMut::new();
        out.put_u8(1);
        out.put_u8(
            (self.general_profile_space & 0x03) << 6
                | u8::from(self.general_tier_flag) << 5
                | (self.general_profile_idc & 0x1F),
        );
        out.put_u32(self.general_profile_compatibility_flags);
        out.put_slice(
            self.general_constraint_indicator_flags
                .to_be_bytes()
                .get(2..)
                .unwrap_or(&[]),
        );
        out.put_u8(self.general_level_idc);
        out.put_u16(0xF000 | (self.min_spatial_segmentation_idc & 0x0FFF));
        out.put_u8(0xFC | (self.parallelism_type & 0x03));
        out.put_u8(0xFC | (self.chroma_format_idc & 0x03));
        out.put_u8(0xF8 | (self.bit_depth_luma.saturating_sub(8) & 0x07));
        out.put_u8(0xF8 | (self.bit_depth_chroma.saturating_sub(8) & 0x07));
        out.put_u16(self.avg_frame_rate);
        out.put_u8(
            (self.constant_frame_rate & 0x03) << 6
                | (self.num_temporal_layers & 0x07) << 3
                | u8::from(self.temporal_id_nested) << 2
                | (self.nalu_length_size - 1),
        );
        let arrays = [
            (NAL_VPS, &self.vps),
            (NAL_SPS, &self.sps),
            (NAL_PPS, &self.pps),
        ];
        out.put_u8(arrays.iter().filter(|(_, l)| !l.is_empty()).count() as u8);
        for (nal_type, list) in arrays {
            if list.is_empty() {
                continue;
            }
            out.put_u8(u8::from(self.array_completeness) << 7 | nal_type);
            out.put_u16(u16::try_from(list.len()).map_err(|_| not_representable())?);
            for nal in list.iter() {
                out.put_u16(u16::try_from(nal.len()).map_err(|_| not_representable())?);
                out.put_slice(nal);
            }
        }
        Ok(out.freeze())
    }
}

/// What a sequence parameter set says, as far as this parser reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HevcSps {
    /// sps_max_sub_layers_minus1 + 1.
    pub max_sub_layers: u8,
    /// sps_temporal_id_nesting_flag.
    pub temporal_id_nesting: bool,
    /// general_profile_space.
    pub general_profile_space: u8,
    /// general_tier_flag.
    pub general_tier_flag: bool,
    /// general_profile_idc.
    pub general_profile_idc: u8,
    /// general_profile_compatibility_flags.
    pub general_profile_compatibility_flags: u32,
    /// general_constraint_indicator_flags (48 bits).
    pub general_constraint_indicator_flags: u64,
    /// general_level_idc.
    pub general_level_idc: u8,
    /// sps_seq_parameter_set_id.
    pub sps_id: u32,
    /// chroma_format_idc.
    pub chroma_format_idc: u32,
    /// Luma bit depth.
    pub bit_depth_luma: u8,
    /// Chroma bit depth.
    pub bit_depth_chroma: u8,
    /// Picture width in luma samples, after the conformance window.
    pub width: u32,
    /// Picture height in luma samples, after the conformance window.
    pub height: u32,
}

/// Parses a sequence parameter set NAL unit (starting with its 2-byte NAL header).
pub fn parse_sps(nal: &[u8]) -> Result<HevcSps, CodecError> {
    let (header, payload) = nal
        .split_at_checked(2)
        .ok_or(CodecError::Truncated("NAL header"))?;
    let nal_type = header.first().map_or(0, |h| (h >> 1) & 0x3F);
    if nal_type != NAL_SPS {
        return Err(CodecError::InvalidValue {
            field: "SPS NAL unit type",
            value: u64::from(nal_type),
        });
    }
    let rbsp = remove_emulation_prevention(payload);
    let mut r = BitReader::new(&rbsp);
    let _vps_id = r.read_bits(4)?;
    let max_sub_layers_minus1 = r.read_bits(3)? as u8;
    if max_sub_layers_minus1 > 6 {
        return Err(CodecError::InvalidValue {
            field: "sps_max_sub_layers_minus1",
            value: u64::from(max_sub_layers_minus1),
        });
    }
    let temporal_id_nesting = r.read_flag()?;
    let ptl = parse_profile_tier_level(&mut r, max_sub_layers_minus1)?;
    let sps_id = r.read_ue_max("sps_seq_parameter_set_id", 15)?;
    let chroma_format_idc = r.read_ue_max("chroma_format_idc", 3)?;
    let separate_colour_plane = chroma_format_idc == 3 && r.read_flag()?;
    let pic_width = u64::from(r.read_ue()?);
    let pic_height = u64::from(r.read_ue()?);
    let (mut left, mut right, mut top, mut bottom) = (0u64, 0u64, 0u64, 0u64);
    if r.read_flag()? {
        left = r.read_ue()?.into();
        right = r.read_ue()?.into();
        top = r.read_ue()?.into();
        bottom = r.read_ue()?.into();
    }
    let bit_depth_luma = 8 + r.read_ue_max("bit_depth_luma_minus8", 8)? as u8;
    let bit_depth_chroma = 8 + r.read_ue_max("bit_depth_chroma_minus8", 8)? as u8;

    // H.265 Table 6-1: SubWidthC/SubHeightC by ChromaArrayType.
    let chroma_array_type = if separate_colour_plane {
        0
    } else {
        chroma_format_idc
    };
    let (sub_width, sub_height) = match chroma_array_type {
        1 => (2, 2),
        2 => (2, 1),
        _ => (1, 1),
    };
    let width = pic_width
        .checked_sub(sub_width * (left + right))
        .filter(|w| *w > 0)
        .ok_or(CodecError::InvalidValue {
            field: "horizontal conformance window",
            value: left + right,
        })?;
    let height = pic_height
        .checked_sub(sub_height * (top + bottom))
        .filter(|h| *h > 0)
        .ok_or(CodecError::InvalidValue {
            field: "vertical conformance window",
            value: top + bottom,
        })?;
    Ok(HevcSps {
        max_sub_layers: max_sub_layers_minus1 + 1,
        temporal_id_nesting,
        general_profile_space: ptl.profile_space,
        general_tier_flag: ptl.tier,
        general_profile_idc: ptl.profile_idc,
        general_profile_compatibility_flags: ptl.compat,
        general_constraint_indicator_flags: ptl.constraint,
        general_level_idc: ptl.level_idc,
        sps_id,
        chroma_format_idc,
        bit_depth_luma,
        bit_depth_chroma,
        // pic_width/height are ue(v) values, so they fit in u32.
        width: u32::try_from(width).unwrap_or(u32::MAX),
        height: u32::try_from(height).unwrap_or(u32::MAX),
    })
}

struct ProfileTierLevel {
    profile_space: u8,
    tier: bool,
    profile_idc: u8,
    compat: u32,
    constraint: u64,
    level_idc: u8,
}

/// profile_tier_level(1, maxNumSubLayersMinus1) (H.265 §7.3.3).
fn parse_profile_tier_level(
    r: &mut BitReader<'_>,
    max_sub_layers_minus1: u8,
) -> Result<ProfileTierLevel, CodecError> {
    let profile_space = r.read_bits(2)? as u8;
    let tier = r.read_flag()?;
    let profile_idc = r.read_bits(5)? as u8;
    let compat = r.read_bits(32)?;
    let constraint = (u64::from(r.read_bits(32)?) << 16) | u64::from(r.read_bits(16)?);
    let level_idc = r.read_u8()?;
    let mut profile_present = [false; 8];
    let mut level_present = [false; 8];
    let n = usize::from(max_sub_layers_minus1);
    for i in 0..n {
        if let (Some(p), Some(l)) = (profile_present.get_mut(i), level_present.get_mut(i)) {
            *p = r.read_flag()?;
            *l = r.read_flag()?;
        }
    }
    if n > 0 {
        // reserved_zero_2bits for i in maxNumSubLayersMinus1..8
        r.skip_bits(2 * (8 - n))?;
    }
    for i in 0..n {
        if profile_present.get(i) == Some(&true) {
            // sub_layer profile space, tier, idc, compatibility flags, constraint flags
            r.skip_bits(88)?;
        }
        if level_present.get(i) == Some(&true) {
            r.skip_bits(8)?;
        }
    }
    Ok(ProfileTierLevel {
        profile_space,
        tier,
        profile_idc,
        compat,
        constraint,
        level_idc,
    })
}

/// The effective profile: general_profile_idc, or when that is 0 the lowest profile
/// marked in the compatibility flags.
fn effective_profile(profile_idc: u8, compat: u32) -> u8 {
    if profile_idc != 0 {
        return profile_idc;
    }
    (1..32u8)
        .find(|j| compat & (1 << (31 - u32::from(*j))) != 0)
        .unwrap_or(0)
}

/// The name of an HEVC profile. For the range extensions profile (4) the name is
/// derived from the chroma format and bit depth when known (`Main 4:2:2 10`, ...).
pub fn profile_name(profile_idc: u8, compat: u32, format: Option<(u32, u8)>) -> Option<String> {
    let name = match effective_profile(profile_idc, compat) {
        1 => "Main",
        2 => "Main 10",
        3 => "Main Still Picture",
        4 => {
            return Some(match format {
                Some((0, depth)) if depth > 8 => format!("Monochrome {depth}"),
                Some((0, _)) => "Monochrome".to_owned(),
                Some((chroma, depth)) => {
                    let sampling = match chroma {
                        2 => " 4:2:2",
                        3 => " 4:4:4",
                        _ => "",
                    };
                    let bits = if depth > 8 {
                        format!(" {depth}")
                    } else {
                        String::new()
                    };
                    format!("Main{sampling}{bits}")
                }
                None => "Format Range Extensions".to_owned(),
            });
        }
        5 => "High Throughput",
        6 => "Multiview Main",
        7 => "Scalable Main",
        8 => "3D Main",
        9 => "Screen Content Coding Extensions",
        10 => "Scalable Format Range Extensions",
        11 => "High Throughput Screen Content Coding Extensions",
        _ => return None,
    };
    Some(name.to_owned())
}

/// The level as text: general_level_idc / 30, e.g. `4.0` for 120, `5.1` for 153.
pub fn level_name(general_level_idc: u8) -> String {
    let idc = u32::from(general_level_idc);
    level_string(idc / 30, (idc % 30) / 3)
}

/// Parses an HEVCDecoderConfigurationRecord into [`CodecDetails`]: profile and level
/// (from the SPS when it parses, else from the record) and the picture size.
pub fn details(record: &Bytes) -> Result<CodecDetails, CodecError> {
    let config = parse_hevc_config(record)?;
    let sps = config.parse_sps().ok();
    let (profile_idc, compat, level_idc, format) = match &sps {
        Some(s) => (
            s.general_profile_idc,
            s.general_profile_compatibility_flags,
            s.general_level_idc,
            Some((s.chroma_format_idc, s.bit_depth_luma)),
        ),
        None => (
            config.general_profile_idc,
            config.general_profile_compatibility_flags,
            config.general_level_idc,
            None,
        ),
    };
    Ok(CodecDetails {
        profile: Some(
            profile_name(profile_idc, compat, format).unwrap_or_else(|| profile_idc.to_string()),
        ),
        level: Some(level_name(level_idc)),
        width: sps.as_ref().map(|s| s.width),
        height: sps.as_ref().map(|s| s.height),
        ..CodecDetails::default()
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::codec::bitreader::BitWriter;
    use crate::codec::h264::tests::hex;
    use proptest::prelude::*;

    /// hvcC written by ffmpeg/x265 for testsrc 1920x1080 yuv420p (Main, level 4.0),
    /// with x265's SEI array dropped.
    pub(crate) const X265_1080P_MAIN: &str = "01016000000090000000000078f000fcfdf8f800000f03200001001840010c01ffff016000000300900000030000030078959809210001002a420101016000000300900000030000030078a003c08010e596566924caf0168080000003008000000c8422000100074401c172b46240";
    /// x265 1280x720 yuv420p10le (Main 10, level 3.1).
    const X265_720P_MAIN10: &str = "0102200000009000000000005df000fcfdfafa00000f03200001001840010c01ffff02200000030090000003000003005d959809210001002b42010102200000030090000003000003005da00280802d1365959a4932bc05a0200000030020000003032122000100074401c172b46240";
    /// x265 1920x1080 with min-cu-size 16: coded 1920x1088 with a conformance window.
    const X265_1080P_CROPPED: &str = "01016000000090000000000078f000fcfdf8f800000f03200001001840010c01ffff016000000300900000030000030078959809210001002b420101016000000300900000030000030078a003c0801107cb965664a4caf0168080000003008000000c8422000100064401c173d189";
    /// x265 1280x720 with temporal layers: sps_max_sub_layers_minus1 = 1.
    const X265_720P_TEMPORAL: &str = "0101600000009000000000005df000fcfdf8f800001303200001001c40010c02ffff01600000030090000003000003005d00009598acc048210001002f42010201600000030090000003000003005d0000a00280802d1659598acd24995e02d010000003001000000301908022000100074401c172b46240";

    fn record(h: &str) -> Bytes {
        Bytes::from(hex(h))
    }

    #[test]
    fn x265_1080p_main() {
        let rec = record(X265_1080P_MAIN);
        let c = parse_hevc_config(&rec).unwrap();
        assert_eq!(c.general_profile_idc, 1);
        assert_eq!(c.general_level_idc, 120);
        assert_eq!(c.nalu_length_size, 4);
        assert_eq!((c.vps.len(), c.sps.len(), c.pps.len()), (1, 1, 1));
        let d = details(&rec).unwrap();
        assert_eq!(d.profile.as_deref(), Some("Main"));
        assert_eq!(d.level.as_deref(), Some("4.0"));
        assert_eq!((d.width, d.height), (Some(1920), Some(1080)));
    }

    #[test]
    fn x265_main10() {
        let rec = record(X265_720P_MAIN10);
        let c = parse_hevc_config(&rec).unwrap();
        assert_eq!((c.bit_depth_luma, c.bit_depth_chroma), (10, 10));
        let d = details(&rec).unwrap();
        assert_eq!(d.profile.as_deref(), Some("Main 10"));
        assert_eq!(d.level.as_deref(), Some("3.1"));
        assert_eq!((d.width, d.height), (Some(1280), Some(720)));
    }

    #[test]
    fn x265_conformance_window() {
        let rec = record(X265_1080P_CROPPED);
        let d = details(&rec).unwrap();
        assert_eq!((d.width, d.height), (Some(1920), Some(1080)));
    }

    #[test]
    fn x265_sub_layers() {
        let c = parse_hevc_config(&record(X265_720P_TEMPORAL)).unwrap();
        assert_eq!(c.num_temporal_layers, 2);
        let sps = c.parse_sps().unwrap();
        assert_eq!(sps.max_sub_layers, 2);
        assert_eq!((sps.width, sps.height), (1280, 720));
        assert_eq!(sps.general_level_idc, 93);
    }

    /// Builds an SPS NAL unit with sub-layers whose profile and level are present.
    fn build_sps(sub_layers_minus1: u8, chroma: u32, window: [u32; 4]) -> Vec<u8> {
        let mut w = BitWriter::new();
        w.write_bits(16, 0x4201); // NAL header, type 33
        w.write_bits(4, 0);
        w.write_bits(3, u32::from(sub_layers_minus1));
        w.write_flag(true);
        // general PTL: profile_space 0, tier 1, profile 4 (RExt)
        w.write_bits(8, 0x24);
        w.write_bits(32, 0x0800_0000);
        w.write_bits(32, 0x9000_0000);
        w.write_bits(16, 0);
        w.write_bits(8, 153);
        for i in 0..sub_layers_minus1 {
            w.write_flag(i % 2 == 0); // profile present
            w.write_flag(true); // level present
        }
        if sub_layers_minus1 > 0 {
            w.write_bits(2 * (8 - u32::from(sub_layers_minus1)), 0);
        }
        for i in 0..sub_layers_minus1 {
            if i % 2 == 0 {
                w.write_bits(32, 0xFFFF_FFFF);
                w.write_bits(32, 0xFFFF_FFFF);
                w.write_bits(24, 0xFF_FFFF);
            }
            w.write_bits(8, 0xAA);
        }
        w.write_ue(0); // sps id
        w.write_ue(chroma);
        if chroma == 3 {
            w.write_flag(false);
        }
        w.write_ue(3840);
        w.write_ue(2176);
        w.write_flag(true);
        for v in window {
            w.write_ue(v);
        }
        w.write_ue(2);
        w.write_ue(2);
        w.write_bits(8, 0x80);
        w.finish()
    }

    #[test]
    fn sub_layer_profile_and_level_are_skipped() {
        for layers in 0..=6u8 {
            for chroma in 0..=3u32 {
                let sps = parse_sps(&build_sps(layers, chroma, [1, 2, 3, 4])).unwrap();
                let (sw, sh) = match chroma {
                    1 => (2, 2),
                    2 => (2, 1),
                    _ => (1, 1),
                };
                assert_eq!(sps.max_sub_layers, layers + 1);
                assert_eq!(sps.general_level_idc, 153, "layers {layers}");
                assert!(sps.general_tier_flag);
                assert_eq!(sps.width, 3840 - 3 * sw, "layers {layers} chroma {chroma}");
                assert_eq!(sps.height, 2176 - 7 * sh, "layers {layers} chroma {chroma}");
                assert_eq!(sps.bit_depth_luma, 10);
            }
        }
        let sps = parse_sps(&build_sps(2, 2, [0, 0, 0, 0])).unwrap();
        assert_eq!(
            profile_name(
                sps.general_profile_idc,
                sps.general_profile_compatibility_flags,
                Some((sps.chroma_format_idc, sps.bit_depth_luma))
            )
            .as_deref(),
            Some("Main 4:2:2 10")
        );
        assert_eq!(level_name(sps.general_level_idc), "5.1");
    }

    #[test]
    fn bad_windows_and_headers() {
        assert!(parse_sps(&build_sps(0, 1, [2000, 0, 0, 0])).is_err());
        assert!(parse_sps(&[0x42]).is_err());
        assert!(parse_sps(&[0x40, 0x01, 0x0C]).is_err()); // a VPS
        let mut seven = build_sps(0, 1, [0; 4]);
        seven[2] |= 0x0E; // sps_max_sub_layers_minus1 = 7
        assert!(parse_sps(&seven).is_err());
        assert_eq!(
            parse_hevc_config(&Bytes::from_static(&[0])),
            Err(CodecError::UnsupportedVersion(0))
        );
        let rec = record(X265_1080P_MAIN);
        for cut in 0..rec.len() {
            assert!(
                parse_hevc_config(&rec.slice(..cut)).is_err(),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn names() {
        assert_eq!(level_name(120), "4.0");
        assert_eq!(level_name(93), "3.1");
        assert_eq!(level_name(186), "6.2");
        // profile 0 with the Main 10 compatibility flag
        assert_eq!(profile_name(0, 1 << 29, None).as_deref(), Some("Main 10"));
        assert_eq!(
            profile_name(4, 0, Some((3, 8))).as_deref(),
            Some("Main 4:4:4")
        );
        assert_eq!(
            profile_name(4, 0, Some((1, 12))).as_deref(),
            Some("Main 12")
        );
        assert_eq!(
            profile_name(4, 0, Some((0, 8))).as_deref(),
            Some("Monochrome")
        );
        assert_eq!(profile_name(0, 0, None), None);
    }

    #[test]
    fn record_round_trip() {
        let rec = record(X265_1080P_MAIN);
        let c = parse_hevc_config(&rec).unwrap();
        assert_eq!(c.to_bytes().unwrap(), rec);
        let rebuilt =
            HevcConfig::from_parameter_sets(c.vps.clone(), c.sps.clone(), c.pps.clone()).unwrap();
        assert_eq!(rebuilt.general_profile_idc, 1);
        assert_eq!(rebuilt.general_level_idc, 120);
        assert_eq!(
            rebuilt.general_constraint_indicator_flags,
            c.general_constraint_indicator_flags
        );
        assert_eq!(
            parse_hevc_config(&rebuilt.to_bytes().unwrap()).unwrap(),
            rebuilt
        );
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..160)) {
            let b = Bytes::from(data.clone());
            let _ = parse_hevc_config(&b);
            let _ = details(&b);
            let _ = parse_sps(&data);
            let mut nal = vec![0x42, 0x01];
            nal.extend_from_slice(&data);
            let _ = parse_sps(&nal);
        }

        #[test]
        fn mutated_real_records_never_panic(
            edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6),
            cut in any::<usize>(),
        ) {
            for h in [X265_1080P_MAIN, X265_720P_TEMPORAL] {
                let mut rec = hex(h);
                for &(pos, byte) in &edits {
                    let len = rec.len();
                    rec[pos % len] = byte;
                }
                let keep = cut % (rec.len() + 1);
                rec.truncate(keep.max(rec.len() / 2));
                let rec = Bytes::from(rec);
                let _ = details(&rec);
                if let Ok(c) = parse_hevc_config(&rec) {
                    let _ = c.to_bytes();
                }
            }
        }
    }
}
