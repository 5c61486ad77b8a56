//! A bounded, iterative scan of AMF0 values, run before rml_amf0 decodes them.
//!
//! rml_amf0 decodes objects, ECMA arrays and strict arrays by recursion with no depth
//! limit: an object nested 10,000 deep (about 40 KB) overflows a Tokio worker's
//! stack, which aborts the whole process (a stack overflow is not a panic;
//! `catch_unwind` cannot contain it). Every AMF0 body that rml_rtmp would decode, in
//! both directions (publishers' and players' commands and data, destinations'
//! replies), is scanned here first by [`check`]: an explicit stack (no recursion), a
//! depth bound and a bound on the number of values.
//!
//! The scan follows rml_amf0 0.3's grammar exactly, including its quirks, so the
//! depth it measures is the depth the decoder will recurse to:
//!
//! * a top-level `0x09` (object end) ends the whole body; what follows is never read;
//! * a strict array ends early at `0x09` or at the end of the input;
//! * a string shorter than its length prefix takes what is there;
//! * markers it does not know (references, dates, long strings, XML, typed
//!   objects, AMF3 switch) are errors.
//!
//! Input that rml_amf0 would reject is not an error here: the scan stops where the
//! decoder will stop with its own error, so the bound holds up to that point and the
//! decoder's error is the one reported ([`Scanned::complete`] tells).

/// AMF0 markers rml_amf0 decodes.
mod marker {
    pub(super) const NUMBER: u8 = 0x00;
    pub(super) const BOOLEAN: u8 = 0x01;
    pub(super) const STRING: u8 = 0x02;
    pub(super) const OBJECT: u8 = 0x03;
    pub(super) const NULL: u8 = 0x05;
    pub(super) const UNDEFINED: u8 = 0x06;
    pub(super) const ECMA_ARRAY: u8 = 0x08;
    pub(super) const OBJECT_END: u8 = 0x09;
    pub(super) const STRICT_ARRAY: u8 = 0x0A;
}

/// Bounds of one AMF0 body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Amf0Limits {
    /// Deepest nesting of objects, ECMA arrays and strict arrays. A top-level object
    /// is depth 1. Default 32: encoders send 1 to 3 (`connect`'s command object,
    /// `onMetaData`'s ECMA array, the odd nested track list).
    pub max_depth: usize,
    /// Values in one body, nested ones included. Default 65,536: the decoder builds
    /// each into a `Vec` or `HashMap` entry, so this bounds its memory (a few MiB).
    pub max_values: usize,
}

impl Default for Amf0Limits {
    fn default() -> Self {
        Self {
            max_depth: 32,
            max_values: 65_536,
        }
    }
}

/// Why a body was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Amf0Error {
    /// Nesting deeper than [`Amf0Limits::max_depth`].
    #[error("AMF0 values nest deeper than {limit}")]
    TooDeep {
        /// The bound.
        limit: usize,
    },
    /// More values than [`Amf0Limits::max_values`].
    #[error("more than {limit} AMF0 values in one message")]
    TooManyValues {
        /// The bound.
        limit: usize,
    },
}

/// What [`check`] saw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Scanned {
    /// Values seen, nested ones included.
    pub values: usize,
    /// Values at the top level (a command has its name, transaction id and command
    /// object there, then its arguments).
    pub top_level: usize,
    /// Deepest nesting seen.
    pub depth: usize,
    /// False when the body is malformed: rml_amf0 will refuse it at the point where
    /// the scan stopped.
    pub complete: bool,
}

/// An open container.
enum Open {
    /// An object or ECMA array: properties until an empty name and `0x09`.
    Object,
    /// A strict array with this many values left.
    Array(u32),
}

/// A cursor over the body.
struct Input<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Input<'a> {
    fn byte(&mut self) -> Option<u8> {
        let b = *self.data.get(self.pos)?;
        self.pos += 1;
        Some(b)
    }

    /// Exactly `n` bytes (the decoder's `read_exact`).
    fn exact(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.data.get(self.pos..self.pos.checked_add(n)?)?;
        self.pos += n;
        Some(s)
    }

    /// Up to `n` bytes (the decoder's `read` into a buffer of `n`).
    fn up_to(&mut self, n: usize) -> &'a [u8] {
        let end = self.pos.saturating_add(n).min(self.data.len());
        let s = self.data.get(self.pos..end).unwrap_or_default();
        self.pos = end;
        s
    }

    fn u16(&mut self) -> Option<u16> {
        let s = self.exact(2)?;
        Some(u16::from_be_bytes([*s.first()?, *s.get(1)?]))
    }

    fn u32(&mut self) -> Option<u32> {
        let s = self.exact(4)?;
        Some(u32::from_be_bytes(s.try_into().ok()?))
    }

    /// A length-prefixed UTF-8 string body (string values and property names).
    fn string(&mut self) -> Option<()> {
        let n = usize::from(self.u16()?);
        // A short read leaves the decoder's buffer padded with zeros: valid UTF-8
        // exactly when what was read is.
        std::str::from_utf8(self.up_to(n)).ok().map(|_| ())
    }
}

/// Scans an AMF0 body (a sequence of values, as in command and data messages)
/// without recursion. Fails only on a bound; see [`Scanned::complete`] for malformed
/// input.
pub fn check(data: &[u8], limits: &Amf0Limits) -> Result<Scanned, Amf0Error> {
    let mut input = Input { data, pos: 0 };
    let mut stack: Vec<Open> = Vec::new();
    let mut scanned = Scanned {
        values: 0,
        top_level: 0,
        depth: 0,
        complete: true,
    };
    let malformed = |mut s: Scanned| {
        s.complete = false;
        Ok(s)
    };
    loop {
        // Where the next value's marker comes from, as in the decoder.
        let marker = match stack.last_mut() {
            None => match input.byte() {
                None | Some(marker::OBJECT_END) => return Ok(scanned),
                Some(m) => m,
            },
            Some(Open::Object) => {
                let Some(name_len) = input.u16() else {
                    return malformed(scanned);
                };
                if name_len == 0 {
                    if input.byte() != Some(marker::OBJECT_END) {
                        return malformed(scanned);
                    }
                    stack.pop();
                    continue;
                }
                if std::str::from_utf8(input.up_to(usize::from(name_len))).is_err() {
                    return malformed(scanned);
                }
                match input.byte() {
                    // A property without a value.
                    None | Some(marker::OBJECT_END) => return malformed(scanned),
                    Some(m) => m,
                }
            }
            Some(Open::Array(left)) => {
                if *left == 0 {
                    stack.pop();
                    continue;
                }
                *left -= 1;
                match input.byte() {
                    None | Some(marker::OBJECT_END) => {
                        stack.pop();
                        continue;
                    }
                    Some(m) => m,
                }
            }
        };
        scanned.values += 1;
        if stack.is_empty() {
            scanned.top_level += 1;
        }
        if scanned.values > limits.max_values {
            return Err(Amf0Error::TooManyValues {
                limit: limits.max_values,
            });
        }
        let ok = match marker {
            marker::NUMBER => input.exact(8).is_some(),
            marker::BOOLEAN => input.byte().is_some(),
            marker::NULL | marker::UNDEFINED => true,
            marker::STRING => input.string().is_some(),
            marker::OBJECT | marker::ECMA_ARRAY | marker::STRICT_ARRAY => {
                let open = match marker {
                    marker::OBJECT => Some(Open::Object),
                    // The ECMA array's count is read and ignored.
                    marker::ECMA_ARRAY => input.u32().map(|_| Open::Object),
                    _ => input.u32().map(Open::Array),
                };
                match open {
                    Some(open) => {
                        if stack.len() >= limits.max_depth {
                            return Err(Amf0Error::TooDeep {
                                limit: limits.max_depth,
                            });
                        }
                        stack.push(open);
                        scanned.depth = scanned.depth.max(stack.len());
                        true
                    }
                    None => false,
                }
            }
            _ => false,
        };
        if !ok {
            return malformed(scanned);
        }
    }
}

/// The part of a message body rml_rtmp decodes as AMF0, for the message types it
/// decodes so: AMF0 command (20) and data (18), and the AMF3-flagged command (17)
/// and data (15) it decodes as AMF0 (a command's leading zero byte skipped).
pub fn decoded_body(type_id: u8, body: &[u8]) -> Option<&[u8]> {
    match type_id {
        15 | 18 | 20 => Some(body),
        17 => Some(match body.first() {
            Some(0) => body.get(1..).unwrap_or_default(),
            _ => body,
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rml_amf0::Amf0Value;
    use std::collections::HashMap;

    fn nested_objects(depth: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(depth * 4 + 8);
        v.push(marker::OBJECT);
        for _ in 1..depth {
            v.extend_from_slice(&[0, 1, b'a', marker::OBJECT]);
        }
        for _ in 0..depth {
            v.extend_from_slice(&[0, 0, marker::OBJECT_END]);
        }
        v
    }

    /// Runs `f` on a thread with a 256 KiB stack: recursion of any depth that
    /// matters would overflow it.
    fn on_small_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(f)
            .unwrap()
            .join()
            .unwrap()
    }

    #[test]
    fn a_million_levels_are_refused_on_a_small_stack() {
        for m in [marker::OBJECT, marker::ECMA_ARRAY, marker::STRICT_ARRAY] {
            let r = on_small_stack(move || {
                let mut v = Vec::new();
                for _ in 0..1_000_000 {
                    match m {
                        marker::OBJECT => v.extend_from_slice(&[marker::OBJECT, 0, 1, b'a']),
                        marker::ECMA_ARRAY => {
                            v.extend_from_slice(&[marker::ECMA_ARRAY, 0, 0, 0, 1, 0, 1, b'a'])
                        }
                        _ => v.extend_from_slice(&[marker::STRICT_ARRAY, 0, 0, 0, 1]),
                    }
                }
                check(&v, &Amf0Limits::default())
            });
            assert_eq!(r, Err(Amf0Error::TooDeep { limit: 32 }), "marker {m}");
        }
    }

    #[test]
    fn depth_is_measured_exactly_at_the_bound() {
        let limits = Amf0Limits::default();
        let ok = check(&nested_objects(32), &limits).unwrap();
        assert_eq!(
            (ok.depth, ok.values, ok.top_level, ok.complete),
            (32, 32, 1, true)
        );
        assert_eq!(
            check(&nested_objects(33), &limits),
            Err(Amf0Error::TooDeep { limit: 32 })
        );
        // And rml_amf0 decodes what passes.
        let mut cursor = std::io::Cursor::new(nested_objects(32));
        assert_eq!(rml_amf0::deserialize(&mut cursor).unwrap().len(), 1);
    }

    #[test]
    fn values_are_counted() {
        let limits = Amf0Limits {
            max_depth: 4,
            max_values: 10,
        };
        let mut v = vec![marker::STRICT_ARRAY, 0, 0, 0, 20];
        v.extend(std::iter::repeat_n(marker::NULL, 20));
        assert_eq!(
            check(&v, &limits),
            Err(Amf0Error::TooManyValues { limit: 10 })
        );
        let ok = check(&v[..10], &limits).unwrap();
        assert_eq!((ok.values, ok.depth), (6, 1));
    }

    #[test]
    fn the_decoders_quirks_are_followed() {
        let limits = Amf0Limits {
            max_depth: 2,
            max_values: 100,
        };
        // A top-level object end stops the decoder: deep bytes after it are never read.
        let mut v = vec![marker::NULL, marker::OBJECT_END];
        v.extend(nested_objects(50));
        let s = check(&v, &limits).unwrap();
        assert_eq!((s.values, s.depth, s.complete), (1, 0, true));
        // A strict array ends at an object end marker; the next value is top level.
        let v = [
            marker::STRICT_ARRAY,
            0,
            0,
            0,
            9,
            marker::NULL,
            marker::OBJECT_END,
            marker::STRICT_ARRAY,
            0,
            0,
            0,
            1,
            marker::NULL,
        ];
        let s = check(&v, &limits).unwrap();
        assert_eq!((s.values, s.depth, s.complete), (4, 1, true));
        let mut cursor = std::io::Cursor::new(v.to_vec());
        assert_eq!(rml_amf0::deserialize(&mut cursor).unwrap().len(), 2);
        // A short string takes what is there.
        let s = check(&[marker::STRING, 0, 10, b'a', b'b'], &limits).unwrap();
        assert_eq!((s.values, s.complete), (1, true));
        // Unknown markers and truncated numbers stop the scan, as they stop the decoder.
        for bad in [
            &[0x0B_u8, 1, 2][..],
            &[marker::NUMBER, 1, 2],
            &[marker::OBJECT, 0],
        ] {
            assert!(!check(bad, &limits).unwrap().complete, "{bad:?}");
            let mut cursor = std::io::Cursor::new(bad.to_vec());
            assert!(rml_amf0::deserialize(&mut cursor).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn real_commands_pass() {
        let mut props = HashMap::new();
        props.insert("app".to_string(), Amf0Value::Utf8String("live".into()));
        props.insert(
            "tcUrl".to_string(),
            Amf0Value::Utf8String("rtmp://h/live".into()),
        );
        props.insert("fpad".to_string(), Amf0Value::Boolean(false));
        props.insert("capabilities".to_string(), Amf0Value::Number(15.0));
        let mut inner = HashMap::new();
        inner.insert(
            "x".to_string(),
            Amf0Value::StrictArray(vec![Amf0Value::Null]),
        );
        props.insert("nested".to_string(), Amf0Value::Object(inner));
        let values = vec![
            Amf0Value::Utf8String("connect".into()),
            Amf0Value::Number(1.0),
            Amf0Value::Object(props),
            Amf0Value::Undefined,
        ];
        let bytes = rml_amf0::serialize(&values).unwrap();
        let s = check(&bytes, &Amf0Limits::default()).unwrap();
        assert_eq!(
            (s.values, s.top_level, s.depth, s.complete),
            (11, 4, 3, true)
        );
    }

    #[test]
    fn amf3_flagged_commands_skip_their_zero() {
        assert_eq!(decoded_body(17, &[0, 2, 0, 0]), Some(&[2, 0, 0][..]));
        assert_eq!(decoded_body(17, &[2, 0, 0]), Some(&[2, 0, 0][..]));
        assert_eq!(decoded_body(20, &[1]), Some(&[1][..]));
        assert_eq!(decoded_body(9, &[1]), None);
    }

    proptest::proptest! {
        /// Whatever the bytes, the scan ends without panicking; a body it passes as
        /// complete decodes with rml_amf0 to no deeper nesting than it measured, and
        /// one it calls malformed fails to decode.
        #[test]
        fn scan_agrees_with_the_decoder(data in proptest::collection::vec(
            proptest::prop_oneof![
                4 => proptest::prelude::any::<u8>(),
                1 => proptest::sample::select(vec![0u8, 1, 2, 3, 5, 6, 8, 9, 10]),
            ], 0..300)) {
            let limits = Amf0Limits { max_depth: 16, max_values: 10_000 };
            let scanned = check(&data, &limits);
            let mut cursor = std::io::Cursor::new(data.clone());
            let decoded = rml_amf0::deserialize(&mut cursor);
            if let Ok(s) = scanned {
                if s.complete {
                    let values = decoded.as_ref().map_err(|e| format!("{e:?}"));
                    let values = values.unwrap();
                    // Repeated property names collapse in the decoder's map, so its
                    // nesting can only be shallower than what was scanned.
                    proptest::prop_assert!(values.iter().map(depth).max().unwrap_or(0) <= s.depth);
                } else {
                    proptest::prop_assert!(decoded.is_err());
                }
            }
        }
    }

    fn depth(v: &Amf0Value) -> usize {
        match v {
            Amf0Value::Object(p) => 1 + p.values().map(depth).max().unwrap_or(0),
            Amf0Value::StrictArray(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
            _ => 0,
        }
    }
}
