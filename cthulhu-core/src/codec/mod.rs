//! Codec configuration parsing (placeholder until the codec module lands).

use crate::model::{Codec, CodecDetails};

/// Parses what a codec configuration says (placeholder).
pub fn details(_codec: &Codec) -> Option<CodecDetails> {
    None
}
