//! How a received video message is matched to its sending.
//!
//! Within one protocol the whole message body is the key ([`VideoKey::Body`]):
//! servers relay RTMP bodies unchanged. Across a conversion (RTMP ⇄ MPEG-TS over
//! SRT) the container bytes around the picture change: the FLV video header goes,
//! an access unit delimiter and parameter sets may be added, NAL units switch
//! between length prefixes and start codes. The coded slice data does not, so
//! [`VideoKey::LastNal`] hashes the access unit's last NAL unit (the last slice).

use std::hash::{DefaultHasher, Hasher};

use bytes::Bytes;
use cthulhu_core::format::flv;
use cthulhu_core::{Timestamp, TrackId};

/// Which bytes of a video message identify it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum VideoKey {
    /// The whole RTMP message body (same-protocol relays).
    #[default]
    Body,
    /// The last NAL unit of the access unit (across RTMP ⇄ TS conversion).
    LastNal,
}

impl VideoKey {
    /// The key of an RTMP/FLV video message body, `None` for messages that are no
    /// picture (sequence headers, end of sequence) in [`VideoKey::LastNal`] mode.
    pub fn of_flv_body(self, body: &[u8]) -> Option<u64> {
        match self {
            VideoKey::Body => Some(hash(body)),
            VideoKey::LastNal => {
                let body = Bytes::copy_from_slice(body);
                match flv::video_to_frame(&body, Timestamp(0), TrackId::VIDEO) {
                    Ok(Some(f)) if !f.is_config() => last_nal_key(&f.data),
                    _ => None,
                }
            }
        }
    }
}

fn hash(bytes: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    h.write(bytes);
    h.finish()
}

/// The hash of the last NAL unit of an access unit with 4-byte length prefixes
/// (the canonical H.264/H.265 layout of core frames); `None` if it does not parse.
pub fn last_nal_key(au: &[u8]) -> Option<u64> {
    let mut rest = au;
    let mut last = None;
    while !rest.is_empty() {
        let len = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?) as usize;
        let nal = rest.get(4..4 + len)?;
        if !nal.is_empty() {
            last = Some(nal);
        }
        rest = rest.get(4 + len..)?;
    }
    last.map(hash)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn au(nals: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for n in nals {
            out.extend_from_slice(&(n.len() as u32).to_be_bytes());
            out.extend_from_slice(n);
        }
        out
    }

    #[test]
    fn last_nal_ignores_what_a_conversion_adds_before_the_slice() {
        let slice: &[u8] = &[0x65, 1, 2, 3, 4];
        let plain = au(&[slice]);
        let with_aud_and_sps = au(&[&[0x09, 0xf0], &[0x67, 9, 9], &[0x68, 8], slice]);
        assert_eq!(last_nal_key(&plain), last_nal_key(&with_aud_and_sps));
        assert!(last_nal_key(&plain).is_some());
        assert_ne!(last_nal_key(&plain), last_nal_key(&au(&[&[0x41, 1, 2]])));
    }

    #[test]
    fn truncated_access_units_have_no_key() {
        let mut a = au(&[&[0x65, 1, 2, 3]]);
        a.pop();
        assert_eq!(last_nal_key(&a), None);
        assert_eq!(last_nal_key(&[0, 0]), None);
        assert_eq!(last_nal_key(&[]), None);
    }

    #[test]
    fn flv_bodies_key_by_their_picture() {
        let slice: &[u8] = &[0x65, 7, 7, 7];
        // AVC keyframe NALU packet, composition time 0.
        let mut body = vec![0x17, 1, 0, 0, 0];
        body.extend_from_slice(&au(&[slice]));
        assert_eq!(
            VideoKey::LastNal.of_flv_body(&body),
            last_nal_key(&au(&[slice]))
        );
        assert_eq!(VideoKey::Body.of_flv_body(&body), Some(hash(&body)));
        // A sequence header is no picture.
        assert_eq!(VideoKey::LastNal.of_flv_body(&[0x17, 0, 0, 0, 0, 1]), None);
    }
}
