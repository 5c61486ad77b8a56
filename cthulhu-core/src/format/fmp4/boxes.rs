//! Box writing helpers for the init segment: a box is opened, filled and closed,
//! and closing writes its size into the header it opened. This patches only a
//! private buffer being built, never bytes handed out.

use bytes::BufMut;

/// A buffer of nested boxes under construction.
#[derive(Debug, Default)]
pub(super) struct BoxBuf {
    buf: Vec<u8>,
    open: Vec<usize>,
}

impl BoxBuf {
    pub(super) fn new() -> Self {
        Self::default()
    }

    /// Opens a box of type `fourcc`.
    pub(super) fn open(&mut self, fourcc: &[u8; 4]) -> &mut Self {
        self.open.push(self.buf.len());
        self.buf.put_u32(0);
        self.buf.put_slice(fourcc);
        self
    }

    /// Opens a full box (with version and flags).
    pub(super) fn open_full(&mut self, fourcc: &[u8; 4], version: u8, flags: u32) -> &mut Self {
        self.open(fourcc);
        self.buf
            .put_u32(u32::from(version) << 24 | (flags & 0x00FF_FFFF));
        self
    }

    /// Closes the innermost open box, writing its size.
    pub(super) fn close(&mut self) -> &mut Self {
        if let Some(start) = self.open.pop() {
            let size = u32::try_from(self.buf.len().saturating_sub(start)).unwrap_or(u32::MAX);
            if let Some(slot) = self.buf.get_mut(start..start.saturating_add(4)) {
                slot.copy_from_slice(&size.to_be_bytes());
            }
        }
        self
    }

    /// A box holding `body` as it is.
    pub(super) fn leaf(&mut self, fourcc: &[u8; 4], body: &[u8]) -> &mut Self {
        self.open(fourcc);
        self.buf.put_slice(body);
        self.close()
    }

    pub(super) fn u8(&mut self, v: u8) -> &mut Self {
        self.buf.put_u8(v);
        self
    }

    pub(super) fn u16(&mut self, v: u16) -> &mut Self {
        self.buf.put_u16(v);
        self
    }

    pub(super) fn u32(&mut self, v: u32) -> &mut Self {
        self.buf.put_u32(v);
        self
    }

    pub(super) fn bytes(&mut self, v: &[u8]) -> &mut Self {
        self.buf.put_slice(v);
        self
    }

    pub(super) fn zeros(&mut self, n: usize) -> &mut Self {
        self.buf.put_bytes(0, n);
        self
    }

    /// The unity transformation matrix of `mvhd` and `tkhd`.
    pub(super) fn unity_matrix(&mut self) -> &mut Self {
        for v in [0x0001_0000, 0, 0, 0, 0x0001_0000, 0, 0, 0, 0x4000_0000] {
            self.buf.put_u32(v);
        }
        self
    }

    /// Closes every open box and returns the bytes.
    pub(super) fn finish(mut self) -> Vec<u8> {
        while !self.open.is_empty() {
            self.close();
        }
        self.buf
    }
}

/// Appends an MPEG-4 descriptor (ISO/IEC 14496-1 §8.3.3): the tag, the size in
/// 7-bit groups, the body. Bodies are at most 2^28 - 1 bytes (callers keep
/// configurations far smaller).
pub(super) fn descriptor(out: &mut Vec<u8>, tag: u8, body: &[u8]) {
    out.put_u8(tag);
    let len = body.len().min((1 << 28) - 1);
    let groups = match len {
        0..0x80 => 1,
        0x80..0x4000 => 2,
        0x4000..0x20_0000 => 3,
        _ => 4,
    };
    for i in (0..groups).rev() {
        let more = if i > 0 { 0x80 } else { 0 };
        out.put_u8(more | ((len >> (7 * i)) & 0x7F) as u8);
    }
    out.put_slice(body.get(..len).unwrap_or(body));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_sizes() {
        let mut b = BoxBuf::new();
        b.open(b"moov").open_full(b"mvhd", 1, 0x123).u8(7).close();
        b.leaf(b"free", &[1, 2]);
        let out = b.finish();
        assert_eq!(
            out,
            [
                0, 0, 0, 31, b'm', b'o', b'o', b'v', 0, 0, 0, 13, b'm', b'v', b'h', b'd', 1, 0, 1,
                0x23, 7, 0, 0, 0, 10, b'f', b'r', b'e', b'e', 1, 2
            ]
        );
    }

    #[test]
    fn descriptor_sizes() {
        let mut out = Vec::new();
        descriptor(&mut out, 5, &[0x12, 0x10]);
        assert_eq!(out, [5, 2, 0x12, 0x10]);
        let mut out = Vec::new();
        descriptor(&mut out, 4, &[0; 200]);
        assert_eq!(&out[..3], &[4, 0x81, 0x48]);
        assert_eq!(out.len(), 203);
    }
}
