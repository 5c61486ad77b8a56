//! Authentication primitives for the HTTP API's accounts (issue 14): pure logic, no
//! database and no HTTP.
//!
//! - [`password`]: argon2id hashing and verification, generated passwords, the
//!   length policy, and a dummy verification that equalises timing for unknown users.
//! - [`totp`]: RFC 6238 codes (SHA-1, 6 digits, 30 s, ±1 step), the otpauth URI and
//!   its QR code for enrolment; single use is the caller's job (see [`totp::verify_code`]).
//! - [`token`]: opaque session, API and CSRF tokens, their SHA-256 digests for
//!   storage, and a constant-time comparison.
//! - [`limit`]: login rate limiting per IP (IPv6 grouped by /64) and per username.
//! - [`cookie`]: the session cookie's `Set-Cookie` values and a `Cookie:` parser.
//!
//! Nothing here puts a password, secret, code or token into an error message, a
//! `Debug` output or a log line.

// The HTTP API (issue 14) is the user of this module; until it lands, the binary
// uses none of it.
#![cfg_attr(not(test), allow(dead_code))]

pub(crate) mod cookie;
pub(crate) mod limit;
pub(crate) mod password;
pub(crate) mod token;
pub(crate) mod totp;

/// Errors of the authentication primitives. No variant carries a password, a
/// secret, a code or a token.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AuthError {
    /// The password is shorter or longer than the policy allows.
    #[error(
        "a password must be {} to {} characters long",
        password::MIN_PASSWORD_CHARS,
        password::MAX_PASSWORD_CHARS
    )]
    PasswordPolicy,
    /// argon2 failed to hash (bad parameters or out of memory).
    #[error("password hashing failed")]
    Hash(#[source] argon2::password_hash::Error),
    /// A TOTP secret of an unusable length (raw bytes from storage).
    #[error(
        "a TOTP secret must be {} to {} bytes long, got {len}",
        totp::MIN_SECRET_LEN,
        totp::MAX_SECRET_LEN
    )]
    TotpSecretLength {
        /// The length received.
        len: usize,
    },
    /// The issuer or account name cannot go into an otpauth URI (empty, or contains `:`).
    #[error("invalid otpauth issuer or account name")]
    Otpauth(#[source] totp_rs::TotpError),
    /// The data does not fit in a QR code.
    #[error("QR code generation failed")]
    Qr(#[source] qrcode::types::QrError),
}
