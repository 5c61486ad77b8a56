//! MSB-first bit reading (with exp-Golomb codes) over a byte slice, and removal of
//! H.264/HEVC emulation-prevention bytes.
//!
//! Every read is bounds-checked and returns [`CodecError::Truncated`] past the end;
//! nothing here panics on any input.

use std::borrow::Cow;

use super::CodecError;

/// Reads bits most-significant first from a byte slice.
#[derive(Debug, Clone)]
pub struct BitReader<'a> {
    data: &'a [u8],
    /// Position in bits from the start of `data`.
    pos: usize,
}

impl<'a> BitReader<'a> {
    /// Creates a reader positioned at the first bit of `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Self { data, pos: 0 }
    }

    /// The number of bits not yet read.
    pub fn bits_left(&self) -> usize {
        (self.data.len() * 8).saturating_sub(self.pos)
    }

    /// The number of bits read so far.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Reads one bit.
    pub fn read_bit(&mut self) -> Result<bool, CodecError> {
        let byte = self
            .data
            .get(self.pos / 8)
            .ok_or(CodecError::Truncated("bit"))?;
        let bit = (byte >> (7 - (self.pos % 8))) & 1;
        self.pos += 1;
        Ok(bit == 1)
    }

    /// Reads one bit as a flag (alias of [`read_bit`](Self::read_bit)).
    pub fn read_flag(&mut self) -> Result<bool, CodecError> {
        self.read_bit()
    }

    /// Reads `n` bits (at most 32) as an unsigned number.
    pub fn read_bits(&mut self, n: u32) -> Result<u32, CodecError> {
        if n > 32 {
            return Err(CodecError::InvalidValue {
                field: "bit count",
                value: u64::from(n),
            });
        }
        if self.bits_left() < n as usize {
            return Err(CodecError::Truncated("bits"));
        }
        let mut value: u64 = 0;
        for _ in 0..n {
            value = (value << 1) | u64::from(self.read_bit()?);
        }
        // n <= 32, so the value fits.
        Ok(value as u32)
    }

    /// Reads 8 bits.
    pub fn read_u8(&mut self) -> Result<u8, CodecError> {
        Ok(self.read_bits(8)? as u8)
    }

    /// Skips `n` bits.
    pub fn skip_bits(&mut self, n: usize) -> Result<(), CodecError> {
        if self.bits_left() < n {
            return Err(CodecError::Truncated("skipped bits"));
        }
        self.pos += n;
        Ok(())
    }

    /// Skips to the next byte boundary (nothing if already aligned).
    pub fn byte_align(&mut self) {
        self.pos = self.pos.div_ceil(8) * 8;
    }

    /// Reads an unsigned exp-Golomb code, `ue(v)`.
    ///
    /// Codes longer than 32 bits (values above `u32::MAX - 1`) are rejected with
    /// [`CodecError::ExpGolombOverflow`].
    pub fn read_ue(&mut self) -> Result<u32, CodecError> {
        let mut zeros = 0u32;
        while !self.read_bit()? {
            zeros += 1;
            if zeros > 31 {
                return Err(CodecError::ExpGolombOverflow);
            }
        }
        let suffix = self.read_bits(zeros)?;
        // (1 << zeros) - 1 + suffix, computed in u64: zeros <= 31 so it fits in u32.
        let value = (1u64 << zeros) - 1 + u64::from(suffix);
        u32::try_from(value).map_err(|_| CodecError::ExpGolombOverflow)
    }

    /// Reads a signed exp-Golomb code, `se(v)`.
    pub fn read_se(&mut self) -> Result<i32, CodecError> {
        let k = i64::from(self.read_ue()?);
        let value = if k % 2 == 1 { (k + 1) / 2 } else { -(k / 2) };
        i32::try_from(value).map_err(|_| CodecError::ExpGolombOverflow)
    }

    /// Reads `ue(v)` and checks it does not exceed `max`, naming `field` in the error.
    pub fn read_ue_max(&mut self, field: &'static str, max: u32) -> Result<u32, CodecError> {
        let v = self.read_ue()?;
        if v > max {
            return Err(CodecError::InvalidValue {
                field,
                value: u64::from(v),
            });
        }
        Ok(v)
    }
}

/// Removes emulation-prevention bytes: every `00 00 03` becomes `00 00`.
///
/// This turns the payload of a NAL unit into its raw byte sequence payload (RBSP).
/// Borrows the input when it contains no emulation-prevention byte.
pub fn remove_emulation_prevention(data: &[u8]) -> Cow<'_, [u8]> {
    let needs_copy = data
        .windows(3)
        .any(|w| w.first() == Some(&0) && w.get(1) == Some(&0) && w.get(2) == Some(&3));
    if !needs_copy {
        return Cow::Borrowed(data);
    }
    let mut out = Vec::with_capacity(data.len());
    let mut zeros = 0usize;
    for &b in data {
        if zeros >= 2 && b == 3 {
            zeros = 0;
            continue;
        }
        if b == 0 {
            zeros += 1;
        } else {
            zeros = 0;
        }
        out.push(b);
    }
    Cow::Owned(out)
}

/// Writes bits most-significant first; the counterpart of [`BitReader`] used to build
/// configuration records (and test vectors).
#[derive(Debug, Default, Clone)]
pub(crate) struct BitWriter {
    out: Vec<u8>,
    /// Bits used in the last byte of `out` (0 means the last byte is full or absent).
    used: u8,
}

impl BitWriter {
    /// Creates an empty writer.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Appends the low `n` bits of `value` (n at most 32).
    pub(crate) fn write_bits(&mut self, n: u32, value: u32) {
        for i in (0..n.min(32)).rev() {
            let bit = ((u64::from(value) >> i) & 1) as u8;
            if self.used == 0 {
                self.out.push(0);
            }
            if let Some(last) = self.out.last_mut() {
                *last |= bit << (7 - self.used);
            }
            self.used = (self.used + 1) % 8;
        }
    }

    /// Appends one bit.
    #[cfg(test)]
    pub(crate) fn write_flag(&mut self, flag: bool) {
        self.write_bits(1, u32::from(flag));
    }

    /// Appends an unsigned exp-Golomb code.
    #[cfg(test)]
    pub(crate) fn write_ue(&mut self, value: u32) {
        let v = u64::from(value) + 1;
        let len = 64 - v.leading_zeros();
        self.write_bits(len - 1, 0);
        // v < 2^33: write its bits in two steps when it does not fit in 32.
        if len > 32 {
            self.write_bits(len - 32, (v >> 32) as u32);
            self.write_bits(32, v as u32);
        } else {
            self.write_bits(len, v as u32);
        }
    }

    /// Appends a signed exp-Golomb code.
    #[cfg(test)]
    pub(crate) fn write_se(&mut self, value: i32) {
        let v = i64::from(value);
        let k = if v > 0 { 2 * v - 1 } else { -2 * v };
        self.write_ue(k as u32);
    }

    /// Pads with zero bits to a byte boundary and returns the bytes.
    pub(crate) fn finish(self) -> Vec<u8> {
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn reads_bits_msb_first() {
        let mut r = BitReader::new(&[0b1010_0000, 0xFF]);
        assert!(r.read_bit().unwrap());
        assert!(!r.read_bit().unwrap());
        assert_eq!(r.read_bits(2).unwrap(), 0b10);
        assert_eq!(r.read_bits(8).unwrap(), 0b0000_1111);
        assert_eq!(r.bits_left(), 4);
        assert_eq!(r.read_bits(0).unwrap(), 0);
        assert!(r.read_bits(5).is_err());
        // a failed read consumes nothing
        assert_eq!(r.read_bits(4).unwrap(), 0xF);
        assert!(r.read_bit().is_err());
    }

    #[test]
    fn reads_32_bits() {
        let mut r = BitReader::new(&[0xDE, 0xAD, 0xBE, 0xEF, 0x80]);
        assert_eq!(r.read_bits(32).unwrap(), 0xDEAD_BEEF);
        assert!(r.read_bits(33).is_err());
    }

    #[test]
    fn exp_golomb_known_codes() {
        // 1 | 010 | 011 | 00100 | 00101 -> ue 0,1,2,3,4
        let mut w = BitWriter::new();
        w.write_bits(16, 0b1010_0110_0100_0010);
        w.write_bits(1, 1);
        let bytes = w.finish();
        let mut r = BitReader::new(&bytes);
        for want in 0..5 {
            assert_eq!(r.read_ue().unwrap(), want);
        }
        // se mapping: 0, 1, -1, 2, -2
        let mut r = BitReader::new(&bytes);
        for want in [0, 1, -1, 2, -2] {
            assert_eq!(r.read_se().unwrap(), want);
        }
    }

    #[test]
    fn exp_golomb_too_long_is_an_error() {
        let zeros = [0u8; 8];
        assert_eq!(
            BitReader::new(&zeros).read_ue(),
            Err(CodecError::ExpGolombOverflow)
        );
        assert!(BitReader::new(&[]).read_ue().is_err());
        assert!(BitReader::new(&[0x00, 0x01]).read_ue().is_err());
    }

    #[test]
    fn ue_max_value() {
        let mut w = BitWriter::new();
        w.write_ue(u32::MAX - 1);
        let bytes = w.finish();
        assert_eq!(BitReader::new(&bytes).read_ue().unwrap(), u32::MAX - 1);
    }

    #[test]
    fn emulation_prevention_removed() {
        let input = [0x00, 0x00, 0x03, 0x01, 0x00, 0x00, 0x03, 0x00, 0x00, 0x03];
        assert_eq!(
            &*remove_emulation_prevention(&input),
            &[0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00][..]
        );
        assert!(matches!(
            remove_emulation_prevention(&[1, 2, 3, 0, 0, 1]),
            Cow::Borrowed(_)
        ));
        // 00 00 00 03: the 03 is still an emulation-prevention byte
        assert_eq!(
            &*remove_emulation_prevention(&[0, 0, 0, 3, 5]),
            &[0, 0, 0, 5][..]
        );
    }

    #[test]
    fn byte_align_and_skip() {
        let mut r = BitReader::new(&[0xFF, 0x0F]);
        r.read_bits(3).unwrap();
        r.byte_align();
        assert_eq!(r.position(), 8);
        r.byte_align();
        assert_eq!(r.position(), 8);
        assert!(r.skip_bits(9).is_err());
        r.skip_bits(4).unwrap();
        assert_eq!(r.read_bits(4).unwrap(), 0xF);
    }

    proptest! {
        #[test]
        fn ue_se_round_trip(values in proptest::collection::vec((0u32..u32::MAX, any::<i32>()), 0..20)) {
            let mut w = BitWriter::new();
            for &(u, s) in &values {
                let s = s.max(-i32::MAX);
                w.write_ue(u);
                w.write_se(s);
            }
            let bytes = w.finish();
            let mut r = BitReader::new(&bytes);
            for &(u, s) in &values {
                let s = s.max(-i32::MAX);
                prop_assert_eq!(r.read_ue().unwrap(), u);
                prop_assert_eq!(r.read_se().unwrap(), s);
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..64), ops in proptest::collection::vec(0u8..5, 0..64)) {
            let mut r = BitReader::new(&data);
            for op in ops {
                let _ = match op {
                    0 => r.read_ue().map(|_| ()),
                    1 => r.read_se().map(|_| ()),
                    2 => r.read_bits(13).map(|_| ()),
                    3 => r.skip_bits(7),
                    _ => { r.byte_align(); Ok(()) }
                };
            }
            let _ = remove_emulation_prevention(&data);
        }
    }
}
