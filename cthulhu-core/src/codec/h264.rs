//! H.264 / AVC: the AVCDecoderConfigurationRecord (ISO/IEC 14496-15 §5.3.3) and the
//! sequence parameter set (ITU-T H.264 §7.3.2.1.1), parsed far enough for profile,
//! level and the cropped picture size.

use bytes::{BufMut, Bytes, BytesMut};

use super::bitreader::{BitReader, remove_emulation_prevention};
use super::{CodecError, RecordReader, level_string};
use crate::model::CodecDetails;

/// NAL unit type of a sequence parameter set.
pub const NAL_SPS: u8 = 7;
/// NAL unit type of a picture parameter set.
pub const NAL_PPS: u8 = 8;
/// NAL unit type of an IDR slice.
pub const NAL_IDR: u8 = 5;

/// A parsed AVCDecoderConfigurationRecord; parameter sets are zero-copy slices of
/// the record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AvcConfig {
    /// `AVCProfileIndication` (profile_idc).
    pub profile_idc: u8,
    /// `profile_compatibility` (the SPS constraint flags byte).
    pub profile_compatibility: u8,
    /// `AVCLevelIndication` (level_idc, e.g. 40 for level 4.0).
    pub level_idc: u8,
    /// Size in bytes of the NAL unit length prefix in frames (1, 2 or 4).
    pub nalu_length_size: u8,
    /// Sequence parameter sets, each a whole NAL unit (header byte included).
    pub sps: Vec<Bytes>,
    /// Picture parameter sets, each a whole NAL unit.
    pub pps: Vec<Bytes>,
}

/// Parses an AVCDecoderConfigurationRecord.
///
/// Trailing data (the high-profile extension with chroma format and bit depths) is
/// accepted and ignored; the SPS carries the same facts.
pub fn parse_avc_config(record: &Bytes) -> Result<AvcConfig, CodecError> {
    let mut r = RecordReader::new(record);
    let version = r.u8("configurationVersion")?;
    if version != 1 {
        return Err(CodecError::UnsupportedVersion(version));
    }
    let profile_idc = r.u8("AVCProfileIndication")?;
    let profile_compatibility = r.u8("profile_compatibility")?;
    let level_idc = r.u8("AVCLevelIndication")?;
    let nalu_length_size = (r.u8("lengthSizeMinusOne")? & 0x03) + 1;
    let num_sps = r.u8("numOfSequenceParameterSets")? & 0x1F;
    let mut sps = Vec::with_capacity(usize::from(num_sps));
    for _ in 0..num_sps {
        let len = r.u16("sequenceParameterSetLength")?;
        sps.push(r.take(usize::from(len), "sequenceParameterSetNALUnit")?);
    }
    let num_pps = r.u8("numOfPictureParameterSets")?;
    let mut pps = Vec::with_capacity(usize::from(num_pps));
    for _ in 0..num_pps {
        let len = r.u16("pictureParameterSetLength")?;
        pps.push(r.take(usize::from(len), "pictureParameterSetNALUnit")?);
    }
    Ok(AvcConfig {
        profile_idc,
        profile_compatibility,
        level_idc,
        nalu_length_size,
        sps,
        pps,
    })
}

impl AvcConfig {
    /// Builds a record from parameter set NAL units (for example from an Annex B
    /// stream), taking profile and level from the first SPS.
    pub fn from_parameter_sets(sps: Vec<Bytes>, pps: Vec<Bytes>) -> Result<Self, CodecError> {
        let first = sps.first().ok_or(CodecError::MissingSps)?;
        let &[_, profile_idc, profile_compatibility, level_idc, ..] = first.as_ref() else {
            return Err(CodecError::Truncated("SPS header"));
        };
        Ok(Self {
            profile_idc,
            profile_compatibility,
            level_idc,
            nalu_length_size: 4,
            sps,
            pps,
        })
    }

    /// The first SPS, parsed.
    pub fn parse_sps(&self) -> Result<AvcSps, CodecError> {
        parse_sps(self.sps.first().ok_or(CodecError::MissingSps)?)
    }

    /// Serializes the record (with the high-profile extension when the first SPS says
    /// it is a high profile and parses).
    pub fn to_bytes(&self) -> Result<Bytes, CodecError> {
        if !(1..=4).contains(&self.nalu_length_size) || self.nalu_length_size == 3 {
            return Err(CodecError::InvalidValue {
                field: "NALU length size",
                value: u64::from(self.nalu_length_size),
            });
        }
        if self.sps.len() > 31 || self.pps.len() > 255 {
            return Err(CodecError::NotRepresentable(
                "AVCDecoderConfigurationRecord",
            ));
        }
        let mut out = BytesMut::new();
        out.put_u8(1);
        out.put_u8(self.profile_idc);
        out.put_u8(self.profile_compatibility);
        out.put_u8(self.level_idc);
        out.put_u8(0xFC | (self.nalu_length_size - 1));
        out.put_u8(0xE0 | self.sps.len() as u8);
        for (list, count) in [(&self.sps, false), (&self.pps, true)] {
            if count {
                out.put_u8(list.len() as u8);
            }
            for ps in list {
                let len = u16::try_from(ps.len())
                    .map_err(|_| CodecError::NotRepresentable("AVCDecoderConfigurationRecord"))?;
                out.put_u16(len);
                out.put_slice(ps);
            }
        }
        if has_chroma_info(self.profile_idc)
            && let Ok(sps) = self.parse_sps()
        {
            out.put_u8(0xFC | (sps.chroma_format_idc & 0x03) as u8);
            out.put_u8(0xF8 | (sps.bit_depth_luma.saturating_sub(8) & 0x07));
            out.put_u8(0xF8 | (sps.bit_depth_chroma.saturating_sub(8) & 0x07));
            out.put_u8(0); // numOfSequenceParameterSetExt
        }
        Ok(out.freeze())
    }
}

/// What a sequence parameter set says, as far as this parser reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AvcSps {
    /// profile_idc.
    pub profile_idc: u8,
    /// The constraint_set flags byte.
    pub constraint_flags: u8,
    /// level_idc.
    pub level_idc: u8,
    /// seq_parameter_set_id.
    pub sps_id: u32,
    /// chroma_format_idc (1 = 4:2:0 unless a high profile says otherwise).
    pub chroma_format_idc: u32,
    /// Luma bit depth.
    pub bit_depth_luma: u8,
    /// Chroma bit depth.
    pub bit_depth_chroma: u8,
    /// frame_mbs_only_flag (false for streams that may be interlaced).
    pub frame_mbs_only: bool,
    /// Picture width in pixels, after cropping.
    pub width: u32,
    /// Picture height in pixels, after cropping.
    pub height: u32,
}

fn has_chroma_info(profile_idc: u8) -> bool {
    matches!(
        profile_idc,
        100 | 110 | 122 | 244 | 44 | 83 | 86 | 118 | 128 | 138 | 139 | 134 | 135
    )
}

/// Parses a sequence parameter set NAL unit (starting with its NAL header byte).
pub fn parse_sps(nal: &[u8]) -> Result<AvcSps, CodecError> {
    let (&header, payload) = nal
        .split_first()
        .ok_or(CodecError::Truncated("NAL header"))?;
    if header & 0x1F != NAL_SPS {
        return Err(CodecError::InvalidValue {
            field: "SPS NAL unit type",
            value: u64::from(header & 0x1F),
        });
    }
    let rbsp = remove_emulation_prevention(payload);
    let mut r = BitReader::new(&rbsp);
    let profile_idc = r.read_u8()?;
    let constraint_flags = r.read_u8()?;
    let level_idc = r.read_u8()?;
    let sps_id = r.read_ue_max("seq_parameter_set_id", 31)?;

    let mut chroma_format_idc = 1;
    let mut separate_colour_plane = false;
    let mut bit_depth_luma = 8;
    let mut bit_depth_chroma = 8;
    if has_chroma_info(profile_idc) {
        chroma_format_idc = r.read_ue_max("chroma_format_idc", 3)?;
        if chroma_format_idc == 3 {
            separate_colour_plane = r.read_flag()?;
        }
        bit_depth_luma = 8 + r.read_ue_max("bit_depth_luma_minus8", 6)? as u8;
        bit_depth_chroma = 8 + r.read_ue_max("bit_depth_chroma_minus8", 6)? as u8;
        let _qpprime_y_zero_transform_bypass = r.read_flag()?;
        if r.read_flag()? {
            let lists = if chroma_format_idc == 3 { 12 } else { 8 };
            for i in 0..lists {
                if r.read_flag()? {
                    skip_scaling_list(&mut r, if i < 6 { 16 } else { 64 })?;
                }
            }
        }
    }

    let _log2_max_frame_num_minus4 = r.read_ue_max("log2_max_frame_num_minus4", 12)?;
    match r.read_ue_max("pic_order_cnt_type", 2)? {
        0 => {
            r.read_ue_max("log2_max_pic_order_cnt_lsb_minus4", 12)?;
        }
        1 => {
            let _delta_pic_order_always_zero = r.read_flag()?;
            let _offset_for_non_ref_pic = r.read_se()?;
            let _offset_for_top_to_bottom_field = r.read_se()?;
            let cycle = r.read_ue_max("num_ref_frames_in_pic_order_cnt_cycle", 255)?;
            for _ in 0..cycle {
                r.read_se()?;
            }
        }
        _ => {}
    }
    let _max_num_ref_frames = r.read_ue()?;
    let _gaps_in_frame_num_allowed = r.read_flag()?;
    let width_mbs = u64::from(r.read_ue()?) + 1;
    let height_map_units = u64::from(r.read_ue()?) + 1;
    let frame_mbs_only = r.read_flag()?;
    if !frame_mbs_only {
        let _mb_adaptive_frame_field = r.read_flag()?;
    }
    let _direct_8x8_inference = r.read_flag()?;
    let (mut crop_left, mut crop_right, mut crop_top, mut crop_bottom) = (0u64, 0u64, 0u64, 0u64);
    if r.read_flag()? {
        crop_left = r.read_ue()?.into();
        crop_right = r.read_ue()?.into();
        crop_top = r.read_ue()?.into();
        crop_bottom = r.read_ue()?.into();
    }

    // H.264 §7.4.2.1.1: crop units depend on ChromaArrayType and field coding.
    let field_factor = if frame_mbs_only { 1 } else { 2 };
    let chroma_array_type = if separate_colour_plane {
        0
    } else {
        chroma_format_idc
    };
    let (crop_unit_x, crop_unit_y) = match chroma_array_type {
        0 => (1, field_factor),
        1 => (2, 2 * field_factor),
        2 => (2, field_factor),
        _ => (1, field_factor),
    };
    let full_width = width_mbs * 16;
    let full_height = height_map_units * 16 * field_factor;
    let width = full_width
        .checked_sub(crop_unit_x * (crop_left + crop_right))
        .filter(|w| *w > 0)
        .ok_or(CodecError::InvalidValue {
            field: "horizontal frame cropping",
            value: crop_left + crop_right,
        })?;
    let height = full_height
        .checked_sub(crop_unit_y * (crop_top + crop_bottom))
        .filter(|h| *h > 0)
        .ok_or(CodecError::InvalidValue {
            field: "vertical frame cropping",
            value: crop_top + crop_bottom,
        })?;
    let to_u32 =
        |v: u64, field| u32::try_from(v).map_err(|_| CodecError::InvalidValue { field, value: v });
    Ok(AvcSps {
        profile_idc,
        constraint_flags,
        level_idc,
        sps_id,
        chroma_format_idc,
        bit_depth_luma,
        bit_depth_chroma,
        frame_mbs_only,
        width: to_u32(width, "picture width")?,
        height: to_u32(height, "picture height")?,
    })
}

/// Skips one scaling_list() (H.264 §7.3.2.1.1.1), reading its delta_scale values.
fn skip_scaling_list(r: &mut BitReader<'_>, size: usize) -> Result<(), CodecError> {
    let mut last_scale: i32 = 8;
    let mut next_scale: i32 = 8;
    for _ in 0..size {
        if next_scale != 0 {
            let delta = r.read_se()?;
            if !(-128..=127).contains(&delta) {
                return Err(CodecError::InvalidValue {
                    field: "delta_scale",
                    value: u64::from(delta.unsigned_abs()),
                });
            }
            next_scale = (last_scale + delta + 256).rem_euclid(256);
        }
        if next_scale != 0 {
            last_scale = next_scale;
        }
    }
    Ok(())
}

/// The name of an H.264 profile (`High`, `Constrained Baseline`, ...), from
/// profile_idc and the constraint flags byte.
pub fn profile_name(profile_idc: u8, constraint_flags: u8) -> Option<&'static str> {
    let set1 = constraint_flags & 0x40 != 0;
    let set3 = constraint_flags & 0x10 != 0;
    Some(match profile_idc {
        66 if set1 => "Constrained Baseline",
        66 => "Baseline",
        77 => "Main",
        88 => "Extended",
        100 => "High",
        110 if set3 => "High 10 Intra",
        110 => "High 10",
        122 if set3 => "High 4:2:2 Intra",
        122 => "High 4:2:2",
        244 if set3 => "High 4:4:4 Intra",
        244 => "High 4:4:4 Predictive",
        44 => "CAVLC 4:4:4 Intra",
        83 => "Scalable Baseline",
        86 => "Scalable High",
        118 => "Multiview High",
        128 => "Stereo High",
        134 => "MFC High",
        135 => "MFC Depth High",
        138 => "Multiview Depth High",
        139 => "Enhanced Multiview Depth High",
        _ => return None,
    })
}

/// The level as text: `4.0` for level_idc 40, `1b` for level 1b.
pub fn level_name(profile_idc: u8, constraint_flags: u8, level_idc: u8) -> String {
    let set3 = constraint_flags & 0x10 != 0;
    if level_idc == 9 || (level_idc == 11 && set3 && matches!(profile_idc, 66 | 77 | 88)) {
        return "1b".to_owned();
    }
    level_string(u32::from(level_idc / 10), u32::from(level_idc % 10))
}

/// Parses an AVCDecoderConfigurationRecord into [`CodecDetails`]: profile and level
/// (from the SPS when it parses, else from the record) and the picture size.
pub fn details(record: &Bytes) -> Result<CodecDetails, CodecError> {
    let config = parse_avc_config(record)?;
    let sps = config.parse_sps().ok();
    let (profile_idc, flags, level_idc) = match &sps {
        Some(s) => (s.profile_idc, s.constraint_flags, s.level_idc),
        None => (
            config.profile_idc,
            config.profile_compatibility,
            config.level_idc,
        ),
    };
    Ok(CodecDetails {
        profile: Some(
            profile_name(profile_idc, flags)
                .map(str::to_owned)
                .unwrap_or_else(|| profile_idc.to_string()),
        ),
        level: Some(level_name(profile_idc, flags, level_idc)),
        width: sps.as_ref().map(|s| s.width),
        height: sps.as_ref().map(|s| s.height),
        ..CodecDetails::default()
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::codec::bitreader::BitWriter;
    use proptest::prelude::*;

    pub(crate) fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// avcC written by ffmpeg/x264 for testsrc 1280x720 yuv420p (High, level 3.1).
    pub(crate) const X264_720P_HIGH: &str = "0164001fffe1001a6764001facd9405005bb011000000300100000030320f183196001000668ebe3cb22c0fdf8f800";
    /// x264 1920x1080 Main level 4.0 (coded 1920x1088, cropped by 8 rows).
    const X264_1080P_MAIN: &str =
        "014d4028ffe1001a674d4028eca03c0113f2e022000003000200000300641e30632c01000568ebe3cb20";
    /// x264 320x240 baseline (constraint_set1: Constrained Baseline), level 1.3.
    const X264_240P_BASELINE: &str =
        "0142c00dffe100186742c00dd90141fb011000000300100000030320f142a48001000568cb83cb20";
    /// x264 640x360 yuv444p (High 4:4:4 Predictive, chroma_format_idc 3), level 3.0.
    const X264_360P_444: &str =
        "01f4001effe1001b67f4001e919b281405ff1380880000030008000003019078b16cb001000668ebe3c44844";
    /// x264 1280x720 interlaced (frame_mbs_only_flag 0), level 3.2.
    const X264_720I: &str =
        "01640020ffe1001a67640020acd940500bbf2e0220000003002000000643e2c5b2c001000668fba3cb22c0";

    fn record(h: &str) -> Bytes {
        Bytes::from(hex(h))
    }

    #[test]
    fn x264_720p_high() {
        let rec = record(X264_720P_HIGH);
        let c = parse_avc_config(&rec).unwrap();
        assert_eq!(
            (c.profile_idc, c.level_idc, c.nalu_length_size),
            (100, 31, 4)
        );
        assert_eq!((c.sps.len(), c.pps.len()), (1, 1));
        assert_eq!(c.pps[0][0], 0x68);
        let sps = c.parse_sps().unwrap();
        assert_eq!((sps.width, sps.height), (1280, 720));
        assert_eq!(sps.chroma_format_idc, 1);
        assert!(sps.frame_mbs_only);
        let d = details(&rec).unwrap();
        assert_eq!(d.profile.as_deref(), Some("High"));
        assert_eq!(d.level.as_deref(), Some("3.1"));
        assert_eq!((d.width, d.height), (Some(1280), Some(720)));
    }

    #[test]
    fn x264_1080p_main_is_cropped() {
        let d = details(&record(X264_1080P_MAIN)).unwrap();
        assert_eq!(d.profile.as_deref(), Some("Main"));
        assert_eq!(d.level.as_deref(), Some("4.0"));
        assert_eq!((d.width, d.height), (Some(1920), Some(1080)));
    }

    #[test]
    fn x264_constrained_baseline() {
        let d = details(&record(X264_240P_BASELINE)).unwrap();
        assert_eq!(d.profile.as_deref(), Some("Constrained Baseline"));
        assert_eq!(d.level.as_deref(), Some("1.3"));
        assert_eq!((d.width, d.height), (Some(320), Some(240)));
    }

    #[test]
    fn x264_444_chroma_format() {
        let rec = record(X264_360P_444);
        let sps = parse_avc_config(&rec).unwrap().parse_sps().unwrap();
        assert_eq!(sps.chroma_format_idc, 3);
        assert_eq!((sps.width, sps.height), (640, 360));
        let d = details(&rec).unwrap();
        assert_eq!(d.profile.as_deref(), Some("High 4:4:4 Predictive"));
        assert_eq!(d.level.as_deref(), Some("3.0"));
    }

    #[test]
    fn x264_interlaced() {
        let sps = parse_avc_config(&record(X264_720I))
            .unwrap()
            .parse_sps()
            .unwrap();
        assert!(!sps.frame_mbs_only);
        assert_eq!((sps.width, sps.height), (1280, 720));
        assert_eq!(level_name(100, 0, 32), "3.2");
    }

    /// Builds an SPS NAL unit with the fields this parser reads.
    struct SpsSpec {
        profile_idc: u8,
        chroma_format_idc: u32,
        scaling_lists: bool,
        poc_type: u32,
        width_mbs: u32,
        height_map_units: u32,
        frame_mbs_only: bool,
        crop: Option<[u32; 4]>,
    }

    fn build_sps(s: &SpsSpec) -> Vec<u8> {
        let mut w = BitWriter::new();
        w.write_bits(8, u32::from(s.profile_idc));
        w.write_bits(8, 0);
        w.write_bits(8, 40);
        w.write_ue(0);
        if has_chroma_info(s.profile_idc) {
            w.write_ue(s.chroma_format_idc);
            if s.chroma_format_idc == 3 {
                w.write_flag(false);
            }
            w.write_ue(2); // 10-bit luma
            w.write_ue(2);
            w.write_flag(false);
            w.write_flag(s.scaling_lists);
            if s.scaling_lists {
                let lists = if s.chroma_format_idc == 3 { 12 } else { 8 };
                for i in 0..lists {
                    let present = i % 3 != 1;
                    w.write_flag(present);
                    if present {
                        let size = if i < 6 { 16 } else { 64 };
                        if i == 0 {
                            // useDefaultScalingMatrixFlag: first delta makes nextScale 0
                            w.write_se(-8);
                        } else {
                            for j in 0..size {
                                w.write_se(if j % 2 == 0 { 3 } else { -2 });
                            }
                        }
                    }
                }
            }
        }
        w.write_ue(0); // log2_max_frame_num_minus4
        w.write_ue(s.poc_type);
        match s.poc_type {
            0 => w.write_ue(2),
            1 => {
                w.write_flag(false);
                w.write_se(-3);
                w.write_se(5);
                w.write_ue(3);
                for v in [1, -1, 2] {
                    w.write_se(v);
                }
            }
            _ => {}
        }
        w.write_ue(4); // max_num_ref_frames
        w.write_flag(false);
        w.write_ue(s.width_mbs - 1);
        w.write_ue(s.height_map_units - 1);
        w.write_flag(s.frame_mbs_only);
        if !s.frame_mbs_only {
            w.write_flag(true);
        }
        w.write_flag(true);
        w.write_flag(s.crop.is_some());
        if let Some(c) = s.crop {
            for v in c {
                w.write_ue(v);
            }
        }
        w.write_flag(false); // vui_parameters_present_flag
        w.write_flag(true); // rbsp stop bit
        let rbsp = w.finish();
        // insert emulation prevention bytes
        let mut nal = vec![0x67];
        let mut zeros = 0;
        for b in rbsp {
            if zeros >= 2 && b <= 3 {
                nal.push(3);
                zeros = 0;
            }
            zeros = if b == 0 { zeros + 1 } else { 0 };
            nal.push(b);
        }
        nal
    }

    #[test]
    fn scaling_lists_are_skipped() {
        for chroma in [1, 2, 3] {
            let spec = SpsSpec {
                profile_idc: if chroma == 1 { 110 } else { 244 },
                chroma_format_idc: chroma,
                scaling_lists: true,
                poc_type: 0,
                width_mbs: 120,
                height_map_units: 68,
                frame_mbs_only: true,
                crop: Some([0, 0, 0, 4]),
            };
            let sps = parse_sps(&build_sps(&spec)).unwrap();
            let unit_y = if chroma == 1 { 2 } else { 1 };
            assert_eq!(sps.width, 1920, "chroma {chroma}");
            assert_eq!(sps.height, 1088 - 4 * unit_y, "chroma {chroma}");
            assert_eq!(sps.chroma_format_idc, chroma);
            assert_eq!(sps.bit_depth_luma, 10);
        }
    }

    #[test]
    fn poc_type_1_and_field_cropping() {
        let spec = SpsSpec {
            profile_idc: 77,
            chroma_format_idc: 1,
            scaling_lists: false,
            poc_type: 1,
            width_mbs: 45,
            height_map_units: 18,
            frame_mbs_only: false,
            crop: Some([1, 1, 0, 2]),
        };
        let sps = parse_sps(&build_sps(&spec)).unwrap();
        // crop unit x = 2; crop unit y = 2 * 2 for 4:2:0 field coding
        assert_eq!((sps.width, sps.height), (720 - 4, 576 - 8));
        assert_eq!(sps.bit_depth_luma, 8);
    }

    #[test]
    fn excessive_cropping_is_an_error() {
        let spec = SpsSpec {
            profile_idc: 66,
            chroma_format_idc: 1,
            scaling_lists: false,
            poc_type: 2,
            width_mbs: 1,
            height_map_units: 1,
            frame_mbs_only: true,
            crop: Some([4, 4, 0, 0]),
        };
        assert!(matches!(
            parse_sps(&build_sps(&spec)),
            Err(CodecError::InvalidValue { .. })
        ));
    }

    #[test]
    fn record_errors() {
        assert_eq!(
            parse_avc_config(&Bytes::new()),
            Err(CodecError::Truncated("configurationVersion"))
        );
        assert_eq!(
            parse_avc_config(&Bytes::from_static(&[2, 100, 0, 31, 0xFF, 0xE0, 0])),
            Err(CodecError::UnsupportedVersion(2))
        );
        // SPS length past the end
        assert!(matches!(
            parse_avc_config(&Bytes::from_static(&[
                1, 100, 0, 31, 0xFF, 0xE1, 0, 9, 0x67
            ])),
            Err(CodecError::Truncated(_))
        ));
        // no SPS: the record parses, details fall back to the record's profile
        let rec = Bytes::from_static(&[1, 77, 0, 30, 0xFF, 0xE0, 0]);
        let d = details(&rec).unwrap();
        assert_eq!(d.profile.as_deref(), Some("Main"));
        assert_eq!(d.width, None);
        assert_eq!(
            parse_avc_config(&rec).unwrap().parse_sps(),
            Err(CodecError::MissingSps)
        );
        // not an SPS
        assert!(parse_sps(&[0x68, 0xEB]).is_err());
        assert!(parse_sps(&[]).is_err());
    }

    #[test]
    fn parameter_sets_are_zero_copy() {
        let rec = record(X264_720P_HIGH);
        let c = parse_avc_config(&rec).unwrap();
        let range = rec.as_ptr_range();
        assert!(range.contains(&c.sps[0].as_ptr()));
    }

    #[test]
    fn record_round_trip() {
        let rec = record(X264_720P_HIGH);
        let c = parse_avc_config(&rec).unwrap();
        let rebuilt = AvcConfig::from_parameter_sets(c.sps.clone(), c.pps.clone()).unwrap();
        assert_eq!(rebuilt, c);
        let bytes = rebuilt.to_bytes().unwrap();
        // x264's record carries the same high-profile extension
        assert_eq!(bytes, rec);
        assert_eq!(parse_avc_config(&bytes).unwrap(), c);
        assert_eq!(
            AvcConfig::from_parameter_sets(vec![], vec![]),
            Err(CodecError::MissingSps)
        );
    }

    #[test]
    fn names() {
        assert_eq!(level_name(66, 0x10, 11), "1b");
        assert_eq!(level_name(100, 0x10, 11), "1.1");
        assert_eq!(level_name(100, 0, 9), "1b");
        assert_eq!(level_name(100, 0, 51), "5.1");
        assert_eq!(profile_name(110, 0), Some("High 10"));
        assert_eq!(profile_name(1, 0), None);
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..128)) {
            let b = Bytes::from(data.clone());
            let _ = parse_avc_config(&b);
            let _ = details(&b);
            let _ = parse_sps(&data);
            let mut nal = vec![0x67];
            nal.extend_from_slice(&data);
            let _ = parse_sps(&nal);
        }

        #[test]
        fn mutated_real_sps_never_panics(pos in 0usize..26, byte in any::<u8>()) {
            let mut rec = hex(X264_720P_HIGH);
            let sps_start = 8;
            if let Some(b) = rec.get_mut(sps_start + pos) { *b = byte; }
            let _ = details(&Bytes::from(rec));
        }
    }
}
