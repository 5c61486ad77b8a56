//! Passwords: argon2id hashing to PHC strings, verification, generated passwords and
//! the length policy.
//!
//! Parameters: argon2id v1.3, m = 19 MiB (19 456 KiB), t = 2, p = 1, 16-byte random
//! salt, 32-byte output: OWASP's recommended minimum, which is also the argon2
//! crate's default; pinned here so that a crate upgrade cannot change them silently.
//! Verification uses the parameters stored in the PHC string, so raising them later
//! keeps old hashes valid.
//!
//! Hashing and verifying take tens of milliseconds of CPU and 19 MiB each: async
//! callers run them on `tokio::task::spawn_blocking`, never on a runtime thread.

use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::{Algorithm, Argon2, Params, PasswordHash, Version};
use rand::Rng;

use super::AuthError;

/// Minimum password length, in characters (Unicode scalar values).
pub(crate) const MIN_PASSWORD_CHARS: usize = 12;
/// Maximum password length, in characters.
pub(crate) const MAX_PASSWORD_CHARS: usize = 256;

/// argon2 memory cost in KiB (19 MiB).
const M_COST_KIB: u32 = 19 * 1024;
/// argon2 iterations.
const T_COST: u32 = 2;
/// argon2 lanes.
const P_COST: u32 = 1;

/// Largest memory cost a stored hash may ask for (256 MiB): a corrupted or tampered
/// row must not make one login exhaust memory.
const MAX_VERIFY_M_COST_KIB: u32 = 256 * 1024;
/// Largest iteration count a stored hash may ask for.
const MAX_VERIFY_T_COST: u32 = 16;
/// Largest lane count a stored hash may ask for.
const MAX_VERIFY_P_COST: u32 = 16;

/// Characters of generated passwords: digits and letters without the look-alikes
/// 0 O o 1 I i l (55 symbols, 5.78 bits each).
const ALPHABET: &[u8] = b"23456789abcdefghjkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ";
/// Length of generated passwords: 20 × log2(55) ≈ 115 bits.
const GENERATED_LEN: usize = 20;

/// PHC string of a random, forgotten password, hashed with the parameters above;
/// [`dummy_verify`] checks against it.
const DUMMY_PHC: &str = "$argon2id$v=19$m=19456,t=2,p=1$DEZNIbk6rrXEhPBMzB71BQ$SORsJ77UOoct67lhNlN7X/Oi35KImkTV1zBS6FqkIw4";

/// The hasher with the pinned parameters.
fn hasher() -> Result<Argon2<'static>, AuthError> {
    let params =
        Params::new(M_COST_KIB, T_COST, P_COST, None).map_err(|e| AuthError::Hash(e.into()))?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

/// Hashes `password` with argon2id and a fresh random salt into a PHC string
/// (`$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>`). Slow: see the module docs.
pub(crate) fn hash_password(password: &str) -> Result<String, AuthError> {
    let hash = hasher()?
        .hash_password(password.as_bytes())
        .map_err(AuthError::Hash)?;
    Ok(hash.to_string())
}

/// Whether `password` matches the PHC string `phc` (the comparison is constant time,
/// done by the argon2 crate). A malformed stored hash, or one whose parameters exceed
/// sane bounds, gives `false` and a warning that does not include the hash. Slow: see
/// the module docs.
pub(crate) fn verify_password(password: &str, phc: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(phc) else {
        tracing::warn!("stored password hash is malformed; refusing the login");
        return false;
    };
    if parsed.algorithm.as_str() != argon2::ARGON2ID_IDENT.as_str() {
        tracing::warn!("stored password hash is not argon2id; refusing the login");
        return false;
    }
    match Params::try_from(&parsed) {
        Ok(p)
            if p.m_cost() <= MAX_VERIFY_M_COST_KIB
                && p.t_cost() <= MAX_VERIFY_T_COST
                && p.p_cost() <= MAX_VERIFY_P_COST => {}
        Ok(_) => {
            tracing::warn!("stored password hash has excessive parameters; refusing the login");
            return false;
        }
        Err(_) => {
            tracing::warn!("stored password hash has invalid parameters; refusing the login");
            return false;
        }
    }
    Argon2::default()
        .verify_password(password.as_bytes(), &parsed)
        .is_ok()
}

/// Spends the time of a [`verify_password`] (same parameters) on nothing: call it when
/// the user does not exist, so that the answer's timing does not reveal it. Slow: see
/// the module docs.
pub(crate) fn dummy_verify() {
    let matched = verify_password("not the password of anyone", DUMMY_PHC);
    std::hint::black_box(matched);
}

/// A random password of 20 characters from an unambiguous 55-symbol alphabet
/// (≈ 115 bits, from the thread-local CSPRNG): for the first start's `admin` and for
/// resets.
pub(crate) fn generate_password() -> String {
    let mut rng = rand::rng();
    (0..GENERATED_LEN)
        .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
        .collect()
}

/// The password policy: 12 to 256 characters, no other rule (length is what
/// matters; composition rules push users to predictable patterns).
pub(crate) fn check_password_policy(password: &str) -> Result<(), AuthError> {
    // Bounded count: stops one past the maximum.
    let chars = password.chars().take(MAX_PASSWORD_CHARS + 1).count();
    if (MIN_PASSWORD_CHARS..=MAX_PASSWORD_CHARS).contains(&chars) {
        Ok(())
    } else {
        Err(AuthError::PasswordPolicy)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[test]
    fn hash_then_verify() {
        let phc = hash_password("correct horse battery").unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(verify_password("correct horse battery", &phc));
        assert!(!verify_password("correct horse batterz", &phc));
        assert!(!verify_password("", &phc));
        // A fresh salt each time.
        let again = hash_password("correct horse battery").unwrap();
        assert_ne!(phc, again);
        assert!(verify_password("correct horse battery", &again));
    }

    #[test]
    fn unicode_passwords() {
        let pw = "pässwörd-密码-🔑🔑";
        let phc = hash_password(pw).unwrap();
        assert!(verify_password(pw, &phc));
        assert!(!verify_password("passwörd-密码-🔑🔑", &phc));
    }

    #[test]
    fn malformed_or_foreign_hashes_are_false() {
        let phc = hash_password("some long password").unwrap();
        for bad in [
            "",
            "not a hash",
            "$argon2id$",
            "$argon2id$v=19$m=19456,t=2,p=1$",
            &phc[..phc.len() - 10],
            &phc.replace("$argon2id$", "$argon2i$"),
            &phc.replace("$argon2id$", "$scrypt$"),
            // Parameters a corrupted row might carry: refused before any work.
            &phc.replace("m=19456", "m=4194304"),
            &phc.replace("t=2", "t=1000"),
            &phc.replace("p=1", "p=255"),
        ] {
            assert!(!verify_password("some long password", bad), "{bad}");
        }
    }

    #[test]
    fn dummy_hash_matches_the_parameters() {
        let parsed = PasswordHash::new(DUMMY_PHC).unwrap();
        let params = Params::try_from(&parsed).unwrap();
        assert_eq!(
            (params.m_cost(), params.t_cost(), params.p_cost()),
            (M_COST_KIB, T_COST, P_COST)
        );
        assert_eq!(parsed.algorithm.as_str(), "argon2id");
        // It verifies (to false) through the full path, not an early exit.
        assert!(!verify_password("not the password of anyone", DUMMY_PHC));
        dummy_verify();
    }

    #[test]
    fn generated_passwords() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..200 {
            let pw = generate_password();
            assert_eq!(pw.len(), 20);
            assert!(pw.bytes().all(|b| ALPHABET.contains(&b)), "{pw}");
            assert!(check_password_policy(&pw).is_ok());
            assert!(seen.insert(pw));
        }
        // Entropy of the documented parameters.
        let bits = GENERATED_LEN as f64 * (ALPHABET.len() as f64).log2();
        assert!(bits >= 100.0, "{bits}");
        assert_eq!(ALPHABET.len(), 55);
        for c in b"0Oo1Iil" {
            assert!(!ALPHABET.contains(c));
        }
        // The alphabet has no duplicates.
        let set: std::collections::HashSet<_> = ALPHABET.iter().collect();
        assert_eq!(set.len(), ALPHABET.len());
    }

    #[test]
    fn policy_is_length_only() {
        assert!(check_password_policy("").is_err());
        assert!(check_password_policy(&"a".repeat(11)).is_err());
        assert!(check_password_policy(&"a".repeat(12)).is_ok());
        assert!(check_password_policy(&"a".repeat(256)).is_ok());
        assert!(check_password_policy(&"a".repeat(257)).is_err());
        assert!(check_password_policy(&"a".repeat(100_000)).is_err());
        // Characters, not bytes: 12 four-byte characters pass, 256 of them too.
        assert!(check_password_policy(&"🔑".repeat(12)).is_ok());
        assert!(check_password_policy(&"🔑".repeat(256)).is_ok());
        assert!(check_password_policy(&"é".repeat(11)).is_err());
        // No composition rules.
        assert!(check_password_policy("aaaaaaaaaaaa").is_ok());
    }

    #[test]
    fn errors_do_not_leak_the_password() {
        let err = check_password_policy("hunter2").unwrap_err();
        let text = format!("{err} {err:?}");
        assert!(!text.contains("hunter2"), "{text}");
        assert_eq!(
            err.to_string(),
            "a password must be 12 to 256 characters long"
        );
    }
}
