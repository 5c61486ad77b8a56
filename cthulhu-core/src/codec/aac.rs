//! AAC: the AudioSpecificConfig (ISO/IEC 14496-3 §1.6.2.1) and ADTS headers
//! (§1.A.2.2), converting between the two.
//!
//! Object types with the escape value 31, explicit 24-bit sampling frequencies,
//! hierarchical SBR/PS signalling (object type 5/29) and the backward-compatible
//! sync extension (0x2B7) are understood. Anything after the core fields that does
//! not parse is ignored rather than failing the whole configuration.

use bytes::Bytes;

use super::CodecError;
use super::bitreader::{BitReader, BitWriter};
use crate::model::CodecDetails;

/// Sampling frequencies by samplingFrequencyIndex (0..=12).
pub const SAMPLING_FREQUENCIES: [u32; 13] = [
    96_000, 88_200, 64_000, 48_000, 44_100, 32_000, 24_000, 22_050, 16_000, 12_000, 11_025, 8_000,
    7_350,
];

/// The samplingFrequencyIndex that signals an explicit 24-bit frequency.
pub const EXPLICIT_FREQUENCY_INDEX: u8 = 15;

/// Audio object type of AAC Main.
pub const AOT_AAC_MAIN: u8 = 1;
/// Audio object type of AAC LC.
pub const AOT_AAC_LC: u8 = 2;
/// Audio object type of SBR (HE-AAC).
pub const AOT_SBR: u8 = 5;
/// Audio object type of PS (HE-AACv2).
pub const AOT_PS: u8 = 29;

/// A parsed AudioSpecificConfig.
///
/// With SBR/PS (HE-AAC v1/v2), `object_type` and `sampling_frequency` describe the
/// core AAC layer and `extension_sampling_frequency` the output rate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudioSpecificConfig {
    /// The (core) audio object type: 2 = AAC LC, 1 = AAC Main, ...
    pub object_type: u8,
    /// samplingFrequencyIndex as signalled (15 = explicit frequency).
    pub sampling_frequency_index: u8,
    /// The (core) sampling frequency in Hz.
    pub sampling_frequency: u32,
    /// channelConfiguration (0 = defined by a program config element).
    pub channel_configuration: u8,
    /// Spectral band replication is present (HE-AAC).
    pub sbr: bool,
    /// Parametric stereo is present (HE-AACv2).
    pub ps: bool,
    /// The SBR output sampling frequency, when SBR is signalled.
    pub extension_sampling_frequency: Option<u32>,
}

impl AudioSpecificConfig {
    /// A plain (non-SBR) configuration; the frequency index is taken from the table
    /// when the frequency is in it, else the frequency is explicit.
    pub fn new(object_type: u8, sampling_frequency: u32, channel_configuration: u8) -> Self {
        Self {
            object_type,
            sampling_frequency_index: frequency_index(sampling_frequency)
                .unwrap_or(EXPLICIT_FREQUENCY_INDEX),
            sampling_frequency,
            channel_configuration,
            sbr: false,
            ps: false,
            extension_sampling_frequency: None,
        }
    }

    /// The decoded output sample rate in Hz (the SBR rate for HE-AAC).
    pub fn output_sample_rate(&self) -> u32 {
        self.extension_sampling_frequency
            .filter(|_| self.sbr)
            .unwrap_or(self.sampling_frequency)
    }

    /// The decoded channel count, when the channel configuration defines one
    /// (parametric stereo turns mono into two channels).
    pub fn channels(&self) -> Option<u8> {
        let n = match self.channel_configuration {
            1 if self.ps => 2,
            n @ 1..=6 => n,
            7 | 12 | 14 => 8,
            11 => 7,
            13 => 24,
            _ => return None,
        };
        Some(n)
    }

    /// The profile name: `AAC-LC`, `HE-AAC`, `HE-AACv2`, ...
    pub fn profile_name(&self) -> String {
        if self.ps {
            return "HE-AACv2".to_owned();
        }
        if self.sbr {
            return "HE-AAC".to_owned();
        }
        let name = match self.object_type {
            1 => "AAC Main",
            2 => "AAC-LC",
            3 => "AAC SSR",
            4 => "AAC LTP",
            5 => "HE-AAC",
            6 => "AAC Scalable",
            17 => "ER AAC-LC",
            19 => "ER AAC LTP",
            20 => "ER AAC Scalable",
            23 => "AAC-LD",
            29 => "HE-AACv2",
            39 => "AAC-ELD",
            42 => "xHE-AAC",
            n => return format!("AAC (object type {n})"),
        };
        name.to_owned()
    }

    /// Serializes the configuration. SBR/PS use hierarchical signalling (object type
    /// 5 or 29 first). Only the object types 1 to 4 (AAC Main, LC, SSR, LTP) are
    /// written, with a default GASpecificConfig.
    pub fn to_bytes(&self) -> Result<Bytes, CodecError> {
        if !(1..=4).contains(&self.object_type) {
            return Err(CodecError::NotRepresentable("AudioSpecificConfig"));
        }
        if self.channel_configuration > 15 {
            return Err(CodecError::InvalidValue {
                field: "channelConfiguration",
                value: u64::from(self.channel_configuration),
            });
        }
        let mut w = BitWriter::new();
        let ext = self
            .extension_sampling_frequency
            .unwrap_or(self.sampling_frequency.saturating_mul(2));
        if self.sbr || self.ps {
            write_object_type(&mut w, if self.ps { AOT_PS } else { AOT_SBR });
            self.write_frequency(&mut w)?;
            w.write_bits(4, u32::from(self.channel_configuration));
            let idx = frequency_index(ext).unwrap_or(EXPLICIT_FREQUENCY_INDEX);
            write_frequency_value(&mut w, idx, ext)?;
            write_object_type(&mut w, self.object_type);
        } else {
            write_object_type(&mut w, self.object_type);
            self.write_frequency(&mut w)?;
            w.write_bits(4, u32::from(self.channel_configuration));
        }
        // GASpecificConfig: frameLengthFlag, dependsOnCoreCoder, extensionFlag
        w.write_bits(3, 0);
        Ok(Bytes::from(w.finish()))
    }

    fn write_frequency(&self, w: &mut BitWriter) -> Result<(), CodecError> {
        write_frequency_value(w, self.sampling_frequency_index, self.sampling_frequency)
    }

    /// Builds the 7-byte ADTS header (no CRC) for a raw AAC frame of `payload_len`
    /// bytes. HE-AAC is written as its core AAC layer (implicit SBR signalling).
    pub fn adts_header(&self, payload_len: usize) -> Result<[u8; 7], CodecError> {
        if !(1..=4).contains(&self.object_type) {
            return Err(CodecError::NotRepresentable("ADTS (object type)"));
        }
        let freq_index = frequency_index(self.sampling_frequency)
            .ok_or(CodecError::NotRepresentable("ADTS (sampling frequency)"))?;
        if self.channel_configuration > 7 {
            return Err(CodecError::NotRepresentable("ADTS (channel configuration)"));
        }
        let frame_len = payload_len
            .checked_add(7)
            .filter(|l| *l <= 0x1FFF)
            .ok_or(CodecError::NotRepresentable("ADTS (frame length)"))?;
        let mut w = BitWriter::new();
        w.write_bits(12, 0xFFF); // syncword
        w.write_bits(1, 0); // ID: MPEG-4
        w.write_bits(2, 0); // layer
        w.write_bits(1, 1); // protection_absent
        w.write_bits(2, u32::from(self.object_type - 1));
        w.write_bits(4, u32::from(freq_index));
        w.write_bits(1, 0); // private_bit
        w.write_bits(3, u32::from(self.channel_configuration));
        w.write_bits(4, 0); // original/copy, home, copyright id bit and start
        w.write_bits(13, frame_len as u32);
        w.write_bits(11, 0x7FF); // buffer fullness: VBR
        w.write_bits(2, 0); // one raw data block
        let bytes = w.finish();
        let mut out = [0u8; 7];
        for (o, b) in out.iter_mut().zip(bytes) {
            *o = b;
        }
        Ok(out)
    }
}

/// The samplingFrequencyIndex of a frequency in the standard table.
pub fn frequency_index(frequency: u32) -> Option<u8> {
    SAMPLING_FREQUENCIES
        .iter()
        .position(|f| *f == frequency)
        .and_then(|i| u8::try_from(i).ok())
}

fn write_object_type(w: &mut BitWriter, aot: u8) {
    if aot >= 31 {
        w.write_bits(5, 31);
        w.write_bits(6, u32::from(aot - 32));
    } else {
        w.write_bits(5, u32::from(aot));
    }
}

fn write_frequency_value(w: &mut BitWriter, index: u8, frequency: u32) -> Result<(), CodecError> {
    if index == EXPLICIT_FREQUENCY_INDEX {
        if frequency > 0xFF_FFFF {
            return Err(CodecError::NotRepresentable(
                "AudioSpecificConfig (frequency)",
            ));
        }
        w.write_bits(4, 15);
        w.write_bits(24, frequency);
    } else {
        let table = SAMPLING_FREQUENCIES.get(usize::from(index));
        if table != Some(&frequency) {
            return Err(CodecError::InvalidValue {
                field: "samplingFrequencyIndex",
                value: u64::from(index),
            });
        }
        w.write_bits(4, u32::from(index));
    }
    Ok(())
}

fn read_object_type(r: &mut BitReader<'_>) -> Result<u8, CodecError> {
    let aot = r.read_bits(5)? as u8;
    if aot == 31 {
        Ok(32 + r.read_bits(6)? as u8)
    } else {
        Ok(aot)
    }
}

fn read_frequency(r: &mut BitReader<'_>) -> Result<(u8, u32), CodecError> {
    let index = r.read_bits(4)? as u8;
    if index == EXPLICIT_FREQUENCY_INDEX {
        let f = r.read_bits(24)?;
        if f == 0 {
            return Err(CodecError::InvalidValue {
                field: "samplingFrequency",
                value: 0,
            });
        }
        return Ok((index, f));
    }
    let f = SAMPLING_FREQUENCIES
        .get(usize::from(index))
        .copied()
        .ok_or(CodecError::InvalidValue {
            field: "samplingFrequencyIndex",
            value: u64::from(index),
        })?;
    Ok((index, f))
}

/// Object types whose configuration is a GASpecificConfig.
fn is_general_audio(aot: u8) -> bool {
    matches!(aot, 1..=4 | 6 | 7 | 17 | 19..=23)
}

/// Parses an AudioSpecificConfig.
pub fn parse_asc(data: &[u8]) -> Result<AudioSpecificConfig, CodecError> {
    let mut r = BitReader::new(data);
    let mut object_type = read_object_type(&mut r)?;
    let (sampling_frequency_index, sampling_frequency) = read_frequency(&mut r)?;
    let channel_configuration = r.read_bits(4)? as u8;
    let mut asc = AudioSpecificConfig {
        object_type,
        sampling_frequency_index,
        sampling_frequency,
        channel_configuration,
        sbr: false,
        ps: false,
        extension_sampling_frequency: None,
    };
    if object_type == AOT_SBR || object_type == AOT_PS {
        asc.sbr = true;
        asc.ps = object_type == AOT_PS;
        asc.extension_sampling_frequency = Some(read_frequency(&mut r)?.1);
        object_type = read_object_type(&mut r)?;
        if object_type == 22 {
            let _extension_channel_configuration = r.read_bits(4)?;
        }
        asc.object_type = object_type;
    }
    // The rest is optional for reporting: damage there keeps what was read so far.
    if is_general_audio(object_type) && channel_configuration != 0 {
        let _ = read_sync_extension(&mut r, &mut asc);
    }
    Ok(asc)
}

/// Reads GASpecificConfig and then, when no hierarchical SBR was signalled, the
/// backward-compatible SBR/PS sync extension.
fn read_sync_extension(
    r: &mut BitReader<'_>,
    asc: &mut AudioSpecificConfig,
) -> Result<(), CodecError> {
    let aot = asc.object_type;
    let _frame_length_flag = r.read_flag()?;
    if r.read_flag()? {
        r.skip_bits(14)?; // coreCoderDelay
    }
    let extension_flag = r.read_flag()?;
    if aot == 6 || aot == 20 {
        r.skip_bits(3)?; // layerNr
    }
    if extension_flag {
        if aot == 22 {
            r.skip_bits(5 + 11)?;
        }
        if matches!(aot, 17 | 19 | 20 | 23) {
            r.skip_bits(3)?;
        }
        r.skip_bits(1)?; // extensionFlag3
    }
    if matches!(aot, 17 | 19..=23) {
        let ep_config = r.read_bits(2)?;
        if ep_config >= 2 {
            return Ok(()); // ErrorProtectionSpecificConfig: not read
        }
    }
    if asc.sbr || r.bits_left() < 16 {
        return Ok(());
    }
    if r.read_bits(11)? != 0x2B7 {
        return Ok(());
    }
    if read_object_type(r)? != AOT_SBR {
        return Ok(());
    }
    if !r.read_flag()? {
        return Ok(());
    }
    let ext = read_frequency(r)?.1;
    asc.sbr = true;
    asc.extension_sampling_frequency = Some(ext);
    if r.bits_left() >= 12 && r.read_bits(11)? == 0x548 {
        asc.ps = r.read_flag()?;
    }
    Ok(())
}

/// A parsed ADTS header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdtsHeader {
    /// The configuration the header describes.
    pub config: AudioSpecificConfig,
    /// Header length: 7, or 9 with a CRC.
    pub header_len: usize,
    /// The whole ADTS frame length, header included.
    pub frame_len: usize,
    /// number_of_raw_data_blocks_in_frame + 1.
    pub raw_data_blocks: u8,
}

impl AdtsHeader {
    /// The length of the raw AAC payload after the header.
    pub fn payload_len(&self) -> usize {
        self.frame_len.saturating_sub(self.header_len)
    }
}

/// Parses the ADTS header at the start of `data`.
pub fn parse_adts(data: &[u8]) -> Result<AdtsHeader, CodecError> {
    let mut r = BitReader::new(data);
    if data.len() < 7 {
        return Err(CodecError::Truncated("ADTS header"));
    }
    if r.read_bits(12)? != 0xFFF {
        return Err(CodecError::NoAdtsSync);
    }
    let _id = r.read_bits(1)?;
    let layer = r.read_bits(2)?;
    if layer != 0 {
        return Err(CodecError::InvalidValue {
            field: "ADTS layer",
            value: u64::from(layer),
        });
    }
    let protection_absent = r.read_flag()?;
    let profile = r.read_bits(2)? as u8;
    let freq_index = r.read_bits(4)? as u8;
    let sampling_frequency = SAMPLING_FREQUENCIES
        .get(usize::from(freq_index))
        .copied()
        .ok_or(CodecError::InvalidValue {
            field: "ADTS sampling_frequency_index",
            value: u64::from(freq_index),
        })?;
    let _private = r.read_bits(1)?;
    let channel_configuration = r.read_bits(3)? as u8;
    r.skip_bits(4)?;
    let frame_len = r.read_bits(13)? as usize;
    let _fullness = r.read_bits(11)?;
    let raw_data_blocks = r.read_bits(2)? as u8 + 1;
    let header_len = if protection_absent { 7 } else { 9 };
    if frame_len < header_len {
        return Err(CodecError::InvalidValue {
            field: "ADTS frame length",
            value: frame_len as u64,
        });
    }
    Ok(AdtsHeader {
        config: AudioSpecificConfig::new(profile + 1, sampling_frequency, channel_configuration),
        header_len,
        frame_len,
        raw_data_blocks,
    })
}

/// Parses an AudioSpecificConfig into [`CodecDetails`]: profile, output sample rate
/// and channel count.
pub fn details(config: &Bytes) -> Result<CodecDetails, CodecError> {
    let asc = parse_asc(config)?;
    Ok(CodecDetails {
        profile: Some(asc.profile_name()),
        sample_rate: Some(asc.output_sample_rate()),
        channels: asc.channels(),
        ..CodecDetails::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::h264::tests::hex;
    use proptest::prelude::*;

    #[test]
    fn ffmpeg_lc_stereo_44100() {
        let asc = parse_asc(&[0x12, 0x10]).unwrap();
        assert_eq!(asc.object_type, 2);
        assert_eq!(asc.sampling_frequency, 44_100);
        assert_eq!(asc.channels(), Some(2));
        assert_eq!(asc.profile_name(), "AAC-LC");
        assert_eq!(asc.to_bytes().unwrap(), Bytes::from_static(&[0x12, 0x10]));
    }

    #[test]
    fn ffmpeg_lc_with_sync_extension_no_sbr() {
        // ffmpeg's aac encoder: 48 kHz mono plus a 0x2B7 extension saying "no SBR"
        let asc = parse_asc(&hex("118856e500")).unwrap();
        assert_eq!(asc.sampling_frequency, 48_000);
        assert_eq!(asc.channel_configuration, 1);
        assert!(!asc.sbr);
        let d = details(&Bytes::from(hex("118856e500"))).unwrap();
        assert_eq!(d.profile.as_deref(), Some("AAC-LC"));
        assert_eq!((d.sample_rate, d.channels), (Some(48_000), Some(1)));
    }

    #[test]
    fn hierarchical_he_aac() {
        // AOT 5, 24 kHz, stereo, extension 48 kHz, core AOT 2
        let asc = parse_asc(&[0x2B, 0x11, 0x88, 0x00]).unwrap();
        assert!(asc.sbr && !asc.ps);
        assert_eq!(asc.object_type, 2);
        assert_eq!(asc.sampling_frequency, 24_000);
        assert_eq!(asc.output_sample_rate(), 48_000);
        assert_eq!(asc.profile_name(), "HE-AAC");
        assert_eq!(
            parse_asc(&asc.to_bytes().unwrap()).unwrap(),
            asc,
            "round trip"
        );
        // AOT 29, 22.05 kHz mono, extension 44.1 kHz
        let asc = parse_asc(&[0xEB, 0x8A, 0x08, 0x00]).unwrap();
        assert!(asc.sbr && asc.ps);
        assert_eq!(asc.profile_name(), "HE-AACv2");
        assert_eq!(asc.channels(), Some(2));
        assert_eq!(asc.output_sample_rate(), 44_100);
    }

    #[test]
    fn explicit_sbr_and_ps_sync_extension() {
        // AAC-LC 24 kHz mono, GASpecificConfig, 0x2B7 SBR present at 48 kHz, 0x548 PS.
        let mut w = BitWriter::new();
        w.write_bits(5, 2);
        w.write_bits(4, 6);
        w.write_bits(4, 1);
        w.write_bits(3, 0);
        w.write_bits(11, 0x2B7);
        w.write_bits(5, 5);
        w.write_bits(1, 1);
        w.write_bits(4, 3);
        w.write_bits(11, 0x548);
        w.write_bits(1, 1);
        let asc = parse_asc(&w.finish()).unwrap();
        assert!(asc.sbr && asc.ps);
        assert_eq!(asc.output_sample_rate(), 48_000);
        assert_eq!(asc.channels(), Some(2));
    }

    #[test]
    fn escape_object_type_and_explicit_frequency() {
        // AOT 31 + 6 bits (39 = ELD), index 15 + 24-bit 50000 Hz, 2 channels
        let mut w = BitWriter::new();
        w.write_bits(5, 31);
        w.write_bits(6, 39 - 32);
        w.write_bits(4, 15);
        w.write_bits(24, 50_000);
        w.write_bits(4, 2);
        let asc = parse_asc(&w.finish()).unwrap();
        assert_eq!(asc.object_type, 39);
        assert_eq!(asc.sampling_frequency_index, 15);
        assert_eq!(asc.sampling_frequency, 50_000);
        assert_eq!(asc.profile_name(), "AAC-ELD");
        // explicit frequency round trip for LC
        let lc = AudioSpecificConfig::new(2, 50_000, 2);
        assert_eq!(lc.sampling_frequency_index, 15);
        assert_eq!(parse_asc(&lc.to_bytes().unwrap()).unwrap(), lc);
        assert!(lc.adts_header(10).is_err());
    }

    #[test]
    fn invalid_configs() {
        assert!(parse_asc(&[]).is_err());
        assert!(parse_asc(&[0x12]).is_err());
        // frequency index 13 is reserved
        assert!(matches!(
            parse_asc(&[0x16, 0x90]),
            Err(CodecError::InvalidValue { .. })
        ));
        assert_eq!(
            AudioSpecificConfig::new(39, 48_000, 2).to_bytes(),
            Err(CodecError::NotRepresentable("AudioSpecificConfig"))
        );
    }

    #[test]
    fn adts_matches_ffmpeg() {
        // ffmpeg -c:a aac -f adts, 44.1 kHz stereo: first frame of 345 bytes
        let asc = parse_asc(&[0x12, 0x10]).unwrap();
        assert_eq!(asc.adts_header(345 - 7).unwrap(), hex("fff150802b3ffc")[..]);
        let h = parse_adts(&hex("fff150802b3ffc")).unwrap();
        assert_eq!(h.config, asc);
        assert_eq!((h.header_len, h.frame_len, h.payload_len()), (7, 345, 338));
        assert_eq!(h.raw_data_blocks, 1);
        assert_eq!(
            h.config.to_bytes().unwrap(),
            Bytes::from_static(&[0x12, 0x10])
        );
    }

    #[test]
    fn adts_errors() {
        assert_eq!(
            parse_adts(&[0xFF, 0xF1]),
            Err(CodecError::Truncated("ADTS header"))
        );
        assert_eq!(parse_adts(&[0; 7]), Err(CodecError::NoAdtsSync));
        // MP3 frame header (layer 3)
        assert!(parse_adts(&hex("fffb9064000000")).is_err());
        // frame length shorter than the header
        assert!(parse_adts(&hex("fff1508000bffc")).is_err());
        // with CRC (protection_absent 0), 9-byte header
        let h = parse_adts(&hex("fff050800140fc0000")).unwrap();
        assert_eq!((h.header_len, h.frame_len), (9, 10));
        let big = AudioSpecificConfig::new(2, 44_100, 2);
        assert!(big.adts_header(8185).is_err());
        assert!(big.adts_header(8184).is_ok());
        assert!(
            AudioSpecificConfig::new(2, 44_100, 8)
                .adts_header(1)
                .is_err()
        );
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..32)) {
            let _ = parse_asc(&data);
            let _ = details(&Bytes::from(data.clone()));
            if let Ok(h) = parse_adts(&data) {
                let _ = h.config.to_bytes();
            }
        }

        #[test]
        fn adts_round_trip(aot in 1u8..=4, idx in 0usize..13, ch in 0u8..=7, len in 0usize..8185) {
            let asc = AudioSpecificConfig::new(aot, SAMPLING_FREQUENCIES[idx], ch);
            let header = asc.adts_header(len).unwrap();
            let parsed = parse_adts(&header).unwrap();
            prop_assert_eq!(&parsed.config, &asc);
            prop_assert_eq!(parsed.payload_len(), len);
            prop_assert_eq!(parse_asc(&asc.to_bytes().unwrap()).unwrap(), asc);
        }
    }
}
