//! A minimal AMF0 encoder/decoder: just enough for RTMP `connect`,
//! `createStream`, `play` and the server's replies.

use anyhow::{Result, bail};

/// One AMF0 value. Dates decode to [`Amf0::Number`] (the timestamp), ECMA
/// arrays to [`Amf0::Object`].
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Amf0 {
    Number(f64),
    Bool(bool),
    String(String),
    Object(Vec<(String, Amf0)>),
    Null,
    Undefined,
    Array(Vec<Amf0>),
}

const NUMBER: u8 = 0x00;
const BOOLEAN: u8 = 0x01;
const STRING: u8 = 0x02;
const OBJECT: u8 = 0x03;
const NULL: u8 = 0x05;
const UNDEFINED: u8 = 0x06;
const ECMA_ARRAY: u8 = 0x08;
const OBJECT_END: u8 = 0x09;
const STRICT_ARRAY: u8 = 0x0A;
const DATE: u8 = 0x0B;
const LONG_STRING: u8 = 0x0C;

impl Amf0 {
    /// Property `key` of an object.
    pub(crate) fn get(&self, key: &str) -> Option<&Amf0> {
        match self {
            Amf0::Object(props) => props.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    pub(crate) fn as_str(&self) -> Option<&str> {
        match self {
            Amf0::String(s) => Some(s),
            _ => None,
        }
    }

    pub(crate) fn as_f64(&self) -> Option<f64> {
        match self {
            Amf0::Number(n) => Some(*n),
            _ => None,
        }
    }
}

/// Serializes `values` back to back (an RTMP command message body).
pub(crate) fn encode(values: &[Amf0]) -> Vec<u8> {
    let mut out = Vec::new();
    for v in values {
        encode_value(v, &mut out);
    }
    out
}

fn encode_key(key: &str, out: &mut Vec<u8>) {
    // Keys are short literals; truncating at u16::MAX is fine for a test tool.
    let bytes = &key.as_bytes()[..key.len().min(usize::from(u16::MAX))];
    out.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
    out.extend_from_slice(bytes);
}

fn encode_value(v: &Amf0, out: &mut Vec<u8>) {
    match v {
        Amf0::Number(n) => {
            out.push(NUMBER);
            out.extend_from_slice(&n.to_be_bytes());
        }
        Amf0::Bool(b) => out.extend_from_slice(&[BOOLEAN, u8::from(*b)]),
        Amf0::String(s) => match u16::try_from(s.len()) {
            Ok(len) => {
                out.push(STRING);
                out.extend_from_slice(&len.to_be_bytes());
                out.extend_from_slice(s.as_bytes());
            }
            Err(_) => {
                out.push(LONG_STRING);
                out.extend_from_slice(&(s.len() as u32).to_be_bytes());
                out.extend_from_slice(s.as_bytes());
            }
        },
        Amf0::Object(props) => {
            out.push(OBJECT);
            for (k, v) in props {
                encode_key(k, out);
                encode_value(v, out);
            }
            out.extend_from_slice(&[0, 0, OBJECT_END]);
        }
        Amf0::Null => out.push(NULL),
        Amf0::Undefined => out.push(UNDEFINED),
        Amf0::Array(items) => {
            out.push(STRICT_ARRAY);
            out.extend_from_slice(&(items.len() as u32).to_be_bytes());
            for item in items {
                encode_value(item, out);
            }
        }
    }
}

/// Decodes all values in `buf`.
pub(crate) fn decode_all(buf: &[u8]) -> Result<Vec<Amf0>> {
    let mut r = Reader { buf, pos: 0 };
    let mut values = Vec::new();
    while r.pos < buf.len() {
        values.push(r.value(0)?);
    }
    Ok(values)
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8]> {
        let Some(end) = self.pos.checked_add(n).filter(|&e| e <= self.buf.len()) else {
            bail!("AMF0: truncated value at offset {}", self.pos);
        };
        let bytes = &self.buf[self.pos..end];
        self.pos = end;
        Ok(bytes)
    }

    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn f64(&mut self) -> Result<f64> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(f64::from_be_bytes(a))
    }

    fn string(&mut self, len: usize) -> Result<String> {
        Ok(String::from_utf8_lossy(self.take(len)?).into_owned())
    }

    /// Key/value pairs up to the `00 00 09` end marker.
    fn properties(&mut self, depth: usize) -> Result<Vec<(String, Amf0)>> {
        let mut props = Vec::new();
        loop {
            let len = usize::from(self.u16()?);
            if len == 0 && self.buf.get(self.pos) == Some(&OBJECT_END) {
                self.pos += 1;
                return Ok(props);
            }
            let key = self.string(len)?;
            props.push((key, self.value(depth + 1)?));
        }
    }

    fn value(&mut self, depth: usize) -> Result<Amf0> {
        if depth > 32 {
            bail!("AMF0: nesting too deep");
        }
        let marker = self.u8()?;
        Ok(match marker {
            NUMBER => Amf0::Number(self.f64()?),
            BOOLEAN => Amf0::Bool(self.u8()? != 0),
            STRING => {
                let len = usize::from(self.u16()?);
                Amf0::String(self.string(len)?)
            }
            LONG_STRING => {
                let len = self.u32()? as usize;
                Amf0::String(self.string(len)?)
            }
            OBJECT => Amf0::Object(self.properties(depth)?),
            ECMA_ARRAY => {
                let _count = self.u32()?;
                Amf0::Object(self.properties(depth)?)
            }
            STRICT_ARRAY => {
                let count = self.u32()?;
                let mut items = Vec::new();
                for _ in 0..count {
                    items.push(self.value(depth + 1)?);
                }
                Amf0::Array(items)
            }
            NULL => Amf0::Null,
            UNDEFINED => Amf0::Undefined,
            DATE => {
                let millis = self.f64()?;
                let _timezone = self.u16()?;
                Amf0::Number(millis)
            }
            other => bail!(
                "AMF0: unsupported type marker {other:#04x} at offset {}",
                self.pos - 1
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let values = vec![
            Amf0::String("connect".into()),
            Amf0::Number(1.0),
            Amf0::Object(vec![
                ("app".into(), Amf0::String("live".into())),
                ("fpad".into(), Amf0::Bool(false)),
                (
                    "nested".into(),
                    Amf0::Object(vec![("x".into(), Amf0::Null)]),
                ),
            ]),
            Amf0::Null,
            Amf0::Undefined,
            Amf0::Array(vec![Amf0::Number(-2000.0)]),
        ];
        let bytes = encode(&values);
        assert_eq!(decode_all(&bytes).unwrap(), values);
    }

    #[test]
    fn known_bytes() {
        // "a" -> 02 00 01 61; 1.0 -> 00 3f f0 00 00 00 00 00 00
        let bytes = encode(&[Amf0::String("a".into()), Amf0::Number(1.0)]);
        assert_eq!(
            bytes,
            [0x02, 0x00, 0x01, b'a', 0x00, 0x3f, 0xf0, 0, 0, 0, 0, 0, 0]
        );
    }

    #[test]
    fn ecma_array_and_errors() {
        let bytes = [0x08, 0, 0, 0, 1, 0, 1, b'k', 0x01, 1, 0, 0, 0x09];
        let v = decode_all(&bytes).unwrap();
        assert_eq!(v[0].get("k"), Some(&Amf0::Bool(true)));
        assert!(decode_all(&[0x02, 0x00, 0x05, b'a']).is_err());
        assert!(decode_all(&[0x11]).is_err());
    }
}
