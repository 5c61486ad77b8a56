//! TOTP (RFC 6238) second factor: HMAC-SHA-1, 6 digits, 30 s steps, the current step
//! ±1 accepted for clock skew. These are the parameters every authenticator app
//! supports; the otpauth URI leaves them at their defaults.
//!
//! Single use (RFC 6238 §5.2) is the caller's contract: [`verify_code`] returns the
//! matched time step, and the login refuses the code unless that step is strictly
//! greater than the last step accepted for the user, recording it atomically (the
//! database's `accept_totp_step(user, step)`). A code is thus accepted once, and so is
//! any older one.

use qrcode::QrCode;
use qrcode::render::svg;
use rand::Rng;
use subtle::{Choice, ConditionallySelectable, ConstantTimeEq};
use totp_rs::{Algorithm, Builder, Totp};

use super::AuthError;

/// Issuer shown by authenticator apps.
pub(crate) const TOTP_ISSUER: &str = "Cthulhu";
/// Length of generated secrets: 160 bits, RFC 4226's recommendation.
pub(crate) const SECRET_LEN: usize = 20;
/// Shortest secret accepted from storage (RFC 4226's 128-bit minimum).
pub(crate) const MIN_SECRET_LEN: usize = 16;
/// Longest secret accepted from storage.
pub(crate) const MAX_SECRET_LEN: usize = 64;
/// Seconds per time step.
pub(crate) const STEP_SECS: u64 = 30;
/// Digits of a code.
pub(crate) const DIGITS: usize = 6;
/// Steps accepted on either side of the current one.
const SKEW_STEPS: u64 = 1;

/// A TOTP shared secret (raw bytes, stored as such). Its `Debug` output is redacted;
/// it has no `PartialEq` (nothing needs to compare secrets, and that would not be
/// constant time).
#[derive(Clone)]
pub(crate) struct TotpSecret(Vec<u8>);

impl std::fmt::Debug for TotpSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TotpSecret(<redacted>)")
    }
}

impl TotpSecret {
    /// A fresh secret of 20 bytes from the thread-local CSPRNG.
    pub(crate) fn generate() -> Self {
        let mut bytes = vec![0u8; SECRET_LEN];
        rand::rng().fill(&mut bytes[..]);
        Self(bytes)
    }

    /// A secret read back from storage: 16 to 64 bytes.
    pub(crate) fn from_bytes(bytes: &[u8]) -> Result<Self, AuthError> {
        if (MIN_SECRET_LEN..=MAX_SECRET_LEN).contains(&bytes.len()) {
            Ok(Self(bytes.to_vec()))
        } else {
            Err(AuthError::TotpSecretLength { len: bytes.len() })
        }
    }

    /// The raw bytes, for storage.
    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The totp-rs generator for this secret (RFC parameters, no labels).
    fn totp(&self) -> Totp {
        // Our secrets are 16..=64 bytes, which is all `build` checks besides the
        // constant parameters; `build_noncompliant` skips the checks, so no error path.
        Builder::new()
            .with_algorithm(Algorithm::SHA1)
            .with_digits(DIGITS as u8)
            .with_step_duration(STEP_SECS)
            .with_skew(0)
            .with_secret(self.0.as_slice())
            .build_noncompliant()
    }

    /// The code of time step `step`, as 6 ASCII digits.
    fn code_at_step(&self, totp: &Totp, step: u64) -> String {
        totp.generate(step.saturating_mul(STEP_SECS)).to_string()
    }
}

/// The otpauth URI (Google's Key URI format) that enrolment shows as text and as a QR
/// code: `otpauth://totp/<issuer>:<account>?secret=<base32>&issuer=<issuer>`. It
/// contains the secret: never log it. Fails if `issuer` contains `:` or `account` is
/// empty or contains `:`.
pub(crate) fn otpauth_uri(
    secret: &TotpSecret,
    issuer: &str,
    account: &str,
) -> Result<String, AuthError> {
    Builder::new()
        .with_algorithm(Algorithm::SHA1)
        .with_digits(DIGITS as u8)
        .with_step_duration(STEP_SECS)
        .with_secret(secret.as_bytes())
        .with_issuer(Some(issuer))
        .with_account_name(account)
        .build()
        .and_then(|totp| totp.to_url())
        .map_err(AuthError::Otpauth)
}

/// `uri` as a QR code in an SVG document (black on white, at least 256 px, with the
/// quiet zone), for the console's enrolment page.
pub(crate) fn qr_svg(uri: &str) -> Result<String, AuthError> {
    let code = QrCode::new(uri.as_bytes()).map_err(AuthError::Qr)?;
    Ok(code
        .render::<svg::Color<'_>>()
        .min_dimensions(256, 256)
        .dark_color(svg::Color("#000000"))
        .light_color(svg::Color("#ffffff"))
        .build())
}

/// The time step of `unix_time` (seconds since the epoch).
pub(crate) fn time_step(unix_time: u64) -> u64 {
    unix_time / STEP_SECS
}

/// Checks `code` against the steps around `unix_time` (current ±1) and returns the
/// matched time step, or `None`. Anything but exactly 6 ASCII digits is refused. The
/// comparison is constant time and every candidate step is computed and compared, so
/// timing does not tell which step matched; if two steps match (a 1-in-10⁶
/// coincidence), the later one is returned.
///
/// The caller must accept the code only if the returned step is strictly greater than
/// the user's last accepted step, and record it atomically (see the module docs).
pub(crate) fn verify_code(secret: &TotpSecret, code: &str, unix_time: u64) -> Option<u64> {
    let code = code.as_bytes();
    if code.len() != DIGITS || !code.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let totp = secret.totp();
    let now = time_step(unix_time);
    let mut found = Choice::from(0);
    let mut matched = 0u64;
    for step in now.saturating_sub(SKEW_STEPS)..=now.saturating_add(SKEW_STEPS) {
        let expected = secret.code_at_step(&totp, step);
        let eq = expected.as_bytes().ct_eq(code);
        matched = u64::conditional_select(&matched, &step, eq);
        found |= eq;
    }
    if bool::from(found) {
        Some(matched)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    /// RFC 6238 appendix B's SHA-1 secret.
    fn rfc_secret() -> TotpSecret {
        TotpSecret::from_bytes(b"12345678901234567890").unwrap()
    }

    /// RFC 6238 appendix B, SHA-1, truncated to 6 digits.
    const VECTORS: &[(u64, &str)] = &[
        (59, "287082"),
        (1_111_111_109, "081804"),
        (1_111_111_111, "050471"),
        (1_234_567_890, "005924"),
        (2_000_000_000, "279037"),
    ];

    #[test]
    fn rfc6238_vectors() {
        let s = rfc_secret();
        let totp = s.totp();
        for &(t, code) in VECTORS {
            assert_eq!(s.code_at_step(&totp, time_step(t)), code, "T={t}");
            assert_eq!(verify_code(&s, code, t), Some(t / 30), "T={t}");
        }
    }

    #[test]
    fn window_is_current_step_plus_minus_one() {
        let s = rfc_secret();
        // 287082 is the code of step 1 (T = 30..=59).
        assert_eq!(verify_code(&s, "287082", 30), Some(1));
        assert_eq!(verify_code(&s, "287082", 59), Some(1));
        // One step early or late: still step 1.
        assert_eq!(verify_code(&s, "287082", 0), Some(1));
        assert_eq!(verify_code(&s, "287082", 29), Some(1));
        assert_eq!(verify_code(&s, "287082", 60), Some(1));
        assert_eq!(verify_code(&s, "287082", 89), Some(1));
        // Two steps away: refused.
        assert_eq!(verify_code(&s, "287082", 90), None);
        let t = 1_111_111_109;
        assert_eq!(verify_code(&s, "081804", t + 30), Some(t / 30));
        assert_eq!(verify_code(&s, "081804", t - 30), Some(t / 30));
        assert_eq!(verify_code(&s, "081804", t + 60), None);
        assert_eq!(verify_code(&s, "081804", t - 60), None);
    }

    #[test]
    fn returned_step_supports_single_use() {
        // The caller's contract: accept only a step greater than the last accepted.
        let s = TotpSecret::generate();
        let totp = s.totp();
        let t = 1_700_000_000;
        let code = s.code_at_step(&totp, time_step(t));
        let mut last = 0u64;
        let mut accept = |code: &str, now: u64| match verify_code(&s, code, now) {
            Some(step) if step > last => {
                last = step;
                true
            }
            _ => false,
        };
        assert!(accept(&code, t));
        assert!(!accept(&code, t), "replay in the same step");
        assert!(!accept(&code, t + 30), "replay in the next step");
        // The previous step's code is older than the accepted one: refused too.
        let previous = s.code_at_step(&totp, time_step(t) - 1);
        assert!(!accept(&previous, t + 1));
        let next = s.code_at_step(&totp, time_step(t) + 1);
        assert!(accept(&next, t + 30));
    }

    #[test]
    fn wrong_codes_refused() {
        let s = rfc_secret();
        assert_eq!(verify_code(&s, "287083", 59), None);
        assert_eq!(verify_code(&s, "000000", 59), None);
        // Another secret's code.
        let other = TotpSecret::generate();
        let code = other.code_at_step(&other.totp(), 1);
        if code != "287082" {
            assert_eq!(verify_code(&s, &code, 59), None);
        }
    }

    #[test]
    fn malformed_codes_refused() {
        let s = rfc_secret();
        for bad in [
            "",
            "28708",
            "2870820",
            "+28708",
            "-28708",
            " 287082",
            "287082 ",
            "28708a",
            "２８７０８２",
            "287 82",
            "0x1234",
            "\u{0}287082",
        ] {
            assert_eq!(verify_code(&s, bad, 59), None, "{bad:?}");
        }
    }

    #[test]
    fn extreme_times_do_not_panic() {
        let s = rfc_secret();
        assert_eq!(verify_code(&s, "123456", 0).is_some(), {
            let totp = s.totp();
            (0..=1).any(|st| s.code_at_step(&totp, st) == "123456")
        });
        let _ = verify_code(&s, "123456", u64::MAX);
    }

    #[test]
    fn secrets() {
        let a = TotpSecret::generate();
        assert_eq!(a.as_bytes().len(), 20);
        assert_ne!(a.as_bytes(), TotpSecret::generate().as_bytes());
        let b = TotpSecret::from_bytes(a.as_bytes()).unwrap();
        assert_eq!(a.as_bytes(), b.as_bytes());
        assert!(TotpSecret::from_bytes(&[1; 15]).is_err());
        assert!(TotpSecret::from_bytes(&[1; 16]).is_ok());
        assert!(TotpSecret::from_bytes(&[1; 64]).is_ok());
        assert!(TotpSecret::from_bytes(&[1; 65]).is_err());
        assert_eq!(format!("{a:?}"), "TotpSecret(<redacted>)");
        let err = TotpSecret::from_bytes(&[7; 3]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "a TOTP secret must be 16 to 64 bytes long, got 3"
        );
    }

    #[test]
    fn otpauth_uri_format() {
        let s = rfc_secret();
        let uri = otpauth_uri(&s, TOTP_ISSUER, "admin").unwrap();
        // Base32 of "12345678901234567890".
        assert_eq!(
            uri,
            "otpauth://totp/Cthulhu:admin?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&issuer=Cthulhu"
        );
        let uri = otpauth_uri(&s, TOTP_ISSUER, "jane doe@example").unwrap();
        assert!(
            uri.starts_with("otpauth://totp/Cthulhu:jane%20doe%40example?"),
            "{uri}"
        );
        // The URI round-trips through totp-rs's parser to the same codes.
        let parsed = Totp::from_url(&uri).unwrap();
        assert_eq!(parsed.generate(59).to_string(), "287082");
    }

    #[test]
    fn otpauth_uri_refuses_bad_labels_without_leaking() {
        let s = rfc_secret();
        for (issuer, account) in [("Cthulhu", ""), ("Cthulhu", "a:b"), ("Ct:hulhu", "admin")] {
            let err = otpauth_uri(&s, issuer, account).unwrap_err();
            assert!(matches!(err, AuthError::Otpauth(_)));
            let text = format!("{err} {err:?}");
            assert!(!text.contains("GEZDGNBV"), "{text}");
        }
    }

    #[test]
    fn qr_is_svg() {
        let uri = otpauth_uri(&TotpSecret::generate(), TOTP_ISSUER, "admin").unwrap();
        let svg = qr_svg(&uri).unwrap();
        assert!(svg.starts_with("<?xml"), "{}", &svg[..40]);
        assert!(svg.contains("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("#000000"));
        // Too long for any QR code version.
        assert!(matches!(qr_svg(&"x".repeat(8000)), Err(AuthError::Qr(_))));
    }
}
