//! The session cookie: `Set-Cookie` values and a `Cookie:` header parser.
//!
//! The cookie is `HttpOnly` (no script access), `SameSite=Strict` (not sent on
//! cross-site requests, the first line against CSRF; cookie-authenticated changes
//! also carry a CSRF token), `Path=/`, and `Secure` when the API is served over TLS.

use std::time::Duration;

/// Name of the session cookie.
pub(crate) const SESSION_COOKIE: &str = "cthulhu_session";

/// Longest `Cookie:` header examined, in bytes; longer ones are ignored as a whole.
const MAX_COOKIE_HEADER: usize = 16 * 1024;

/// Attributes common to setting and clearing the cookie.
const ATTRIBUTES: &str = "Path=/; HttpOnly; SameSite=Strict";

/// The `Set-Cookie` value that stores session token `value` for `max_age` (whole
/// seconds), with `Secure` if `secure` (TLS). `value` must be a token of
/// [`super::token::new_token`] (cookie-safe characters); any other value is refused by
/// returning [`clear_session_cookie`]'s value instead, so that nothing can be injected
/// into the header.
pub(crate) fn session_cookie(value: &str, max_age: Duration, secure: bool) -> String {
    if value.is_empty() || !value.bytes().all(is_cookie_octet) {
        tracing::warn!("refusing to set a session cookie with unsafe characters");
        return clear_session_cookie(secure);
    }
    format!(
        "{SESSION_COOKIE}={value}; {ATTRIBUTES}; Max-Age={}{}",
        max_age.as_secs(),
        secure_suffix(secure)
    )
}

/// The `Set-Cookie` value that deletes the session cookie (logout).
pub(crate) fn clear_session_cookie(secure: bool) -> String {
    format!(
        "{SESSION_COOKIE}=; {ATTRIBUTES}; Max-Age=0{}",
        secure_suffix(secure)
    )
}

/// `"; Secure"` or nothing.
fn secure_suffix(secure: bool) -> &'static str {
    if secure { "; Secure" } else { "" }
}

/// RFC 6265 `cookie-octet`: printable ASCII except space, `"`, `,`, `;` and `\`.
fn is_cookie_octet(b: u8) -> bool {
    matches!(b, 0x21 | 0x23..=0x2b | 0x2d..=0x3a | 0x3c..=0x5b | 0x5d..=0x7e)
}

/// The value of cookie `name` in a `Cookie:` header (`a=1; b=2`), without the
/// optional surrounding double quotes; the first occurrence wins. Names are matched
/// exactly (case-sensitive). Headers over 16 KiB give `None`. Linear time, never
/// panics.
pub(crate) fn cookie_value<'h>(header: &'h str, name: &str) -> Option<&'h str> {
    if header.len() > MAX_COOKIE_HEADER || name.is_empty() {
        return None;
    }
    header.split(';').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        if k.trim_matches([' ', '\t']) != name {
            return None;
        }
        let v = v.trim_matches([' ', '\t']);
        Some(
            v.strip_prefix('"')
                .and_then(|inner| inner.strip_suffix('"'))
                .unwrap_or(v),
        )
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use rand::Rng;

    use super::*;
    use crate::auth::token::{SESSION_PREFIX, new_token};

    #[test]
    fn session_cookie_attributes() {
        let c = session_cookie("cths_abc123", Duration::from_secs(3600), false);
        assert_eq!(
            c,
            "cthulhu_session=cths_abc123; Path=/; HttpOnly; SameSite=Strict; Max-Age=3600"
        );
        let c = session_cookie("cths_abc123", Duration::from_millis(86_400_999), true);
        assert_eq!(
            c,
            "cthulhu_session=cths_abc123; Path=/; HttpOnly; SameSite=Strict; Max-Age=86400; Secure"
        );
        let t = new_token(SESSION_PREFIX);
        let c = session_cookie(&t, Duration::from_secs(60), true);
        assert_eq!(cookie_value(&c, SESSION_COOKIE), Some(t.as_str()));
    }

    #[test]
    fn clearing_cookie() {
        assert_eq!(
            clear_session_cookie(false),
            "cthulhu_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"
        );
        assert_eq!(
            clear_session_cookie(true),
            "cthulhu_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0; Secure"
        );
    }

    #[test]
    fn unsafe_values_are_not_set() {
        for bad in [
            "",
            "a; Domain=evil",
            "a b",
            "a\r\nSet-Cookie: x=y",
            "a,b",
            "\"q\"",
            "é",
        ] {
            let c = session_cookie(bad, Duration::from_secs(60), true);
            assert_eq!(c, clear_session_cookie(true), "{bad:?}");
        }
    }

    #[test]
    fn parses_cookie_headers() {
        let h = "theme=dark; cthulhu_session=cths_1; other=x";
        assert_eq!(cookie_value(h, SESSION_COOKIE), Some("cths_1"));
        assert_eq!(cookie_value(h, "theme"), Some("dark"));
        assert_eq!(cookie_value(h, "other"), Some("x"));
        assert_eq!(cookie_value(h, "missing"), None);
        assert_eq!(
            cookie_value("cthulhu_session=a;cthulhu_session=b", SESSION_COOKIE),
            Some("a")
        );
        assert_eq!(cookie_value("  a = 1 ;\tb=\"2\"", "a"), Some("1"));
        assert_eq!(cookie_value("a=1; b=\"2\"", "b"), Some("2"));
        assert_eq!(cookie_value("a=x=y", "a"), Some("x=y"));
        assert_eq!(cookie_value("a=", "a"), Some(""));
        assert_eq!(cookie_value("a=\"", "a"), Some("\""));
        // Prefix or case variants of the name do not match.
        assert_eq!(cookie_value("xcthulhu_session=1", SESSION_COOKIE), None);
        assert_eq!(cookie_value("CTHULHU_SESSION=1", SESSION_COOKIE), None);
        assert_eq!(cookie_value("cthulhu_session", SESSION_COOKIE), None);
        assert_eq!(cookie_value("", SESSION_COOKIE), None);
        assert_eq!(cookie_value("a=1", ""), None);
        assert_eq!(cookie_value(";;;=;==", "a"), None);
        let big = format!("{}; a=1", "x=y; ".repeat(4000));
        assert_eq!(cookie_value(&big, "a"), None);
    }

    /// Random headers from a hostile alphabet: no panic, and a found value is a
    /// substring of the header free of `;`.
    #[test]
    fn parser_survives_random_input() {
        const ALPHABET: &[char] = &['a', 'b', '=', ';', ' ', '\t', '"', 'é', '\u{0}', ',', '\\'];
        let mut rng = rand::rng();
        for _ in 0..20_000 {
            let len = rng.random_range(0..64);
            let header: String = (0..len)
                .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())])
                .collect();
            for name in ["a", "ab", "b", "é"] {
                if let Some(v) = cookie_value(&header, name) {
                    assert!(header.contains(v), "{header:?} {name:?} {v:?}");
                    assert!(!v.contains(';'));
                }
            }
        }
    }
}
