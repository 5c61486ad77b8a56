//! Container formats. Sans-IO: parsers take [`Bytes`](bytes::Bytes) and hand out
//! zero-copy slices of them; writers produce small headers that precede payloads the
//! caller writes itself.

pub mod flv;
pub mod fmp4;
pub mod ts;
