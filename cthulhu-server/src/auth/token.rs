//! Opaque tokens: sessions, API tokens and CSRF tokens.
//!
//! A token is a prefix plus 32 bytes (256 bits) from the thread-local CSPRNG in
//! lowercase hex. The database keeps only [`hash_token`]'s SHA-256 digest, so a leaked
//! table does not yield usable tokens. A fast hash is right here, unlike for
//! passwords: with 256 bits of entropy nothing can be guessed, so there is no
//! dictionary to slow down, and lookups stay cheap on every request.

use rand::Rng;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Random bytes in a token (256 bits).
pub(crate) const TOKEN_BYTES: usize = 32;

/// Prefix of session tokens.
pub(crate) const SESSION_PREFIX: &str = "cths_";
/// Prefix of API tokens (recognisable by secret scanners).
pub(crate) const API_TOKEN_PREFIX: &str = "cth_";

/// `prefix` followed by 64 lowercase hex digits of fresh randomness (256 bits).
pub(crate) fn new_token(prefix: &str) -> String {
    let mut bytes = [0u8; TOKEN_BYTES];
    rand::rng().fill(&mut bytes[..]);
    let mut out = String::with_capacity(prefix.len() + 2 * TOKEN_BYTES);
    out.push_str(prefix);
    push_hex(&mut out, &bytes);
    out
}

/// A CSRF token: 64 hex digits (256 bits), bound to a session by the caller and
/// checked with [`ct_eq`] against the request's header.
pub(crate) fn new_csrf_token() -> String {
    new_token("")
}

/// SHA-256 of the whole token (prefix included): what the database stores and looks
/// up.
pub(crate) fn hash_token(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Constant-time equality of two byte strings (the time depends on the lengths only).
pub(crate) fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

/// Appends `bytes` in lowercase hex.
fn push_hex(out: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for &b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use std::collections::HashSet;

    use super::*;

    #[test]
    fn tokens_have_prefix_and_256_bits_of_hex() {
        let t = new_token(API_TOKEN_PREFIX);
        let body = t.strip_prefix("cth_").unwrap();
        assert_eq!(body.len(), 64);
        assert!(
            body.bytes()
                .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
        );
        let s = new_token(SESSION_PREFIX);
        assert!(s.starts_with("cths_") && s.len() == 5 + 64);
    }

    #[test]
    fn tokens_are_distinct() {
        let set: HashSet<String> = (0..1000).map(|_| new_token("cth_")).collect();
        assert_eq!(set.len(), 1000);
        let csrf: HashSet<String> = (0..1000).map(|_| new_csrf_token()).collect();
        assert_eq!(csrf.len(), 1000);
    }

    #[test]
    fn csrf_token_is_64_hex() {
        let t = new_csrf_token();
        assert_eq!(t.len(), 64);
        assert!(t.bytes().all(|c| c.is_ascii_hexdigit()));
    }

    #[test]
    fn hash_is_sha256() {
        // SHA-256("abc"), FIPS 180-2 appendix B.1.
        let expected = [
            0xba, 0x78, 0x16, 0xbf, 0x8f, 0x01, 0xcf, 0xea, 0x41, 0x41, 0x40, 0xde, 0x5d, 0xae,
            0x22, 0x23, 0xb0, 0x03, 0x61, 0xa3, 0x96, 0x17, 0x7a, 0x9c, 0xb4, 0x10, 0xff, 0x61,
            0xf2, 0x00, 0x15, 0xad,
        ];
        assert_eq!(hash_token("abc"), expected);
        let t = new_token("cth_");
        assert_eq!(hash_token(&t), hash_token(&t.clone()));
        assert_ne!(hash_token(&t), hash_token(&new_token("cth_")));
    }

    #[test]
    fn ct_eq_compares_content_and_length() {
        assert!(ct_eq(b"", b""));
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"ab"));
        assert!(!ct_eq(b"", b"a"));
        let h = hash_token("x");
        assert!(ct_eq(&h, &hash_token("x")));
    }
}
