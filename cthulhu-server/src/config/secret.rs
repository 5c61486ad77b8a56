//! Reading a [`Secret`] from TOML.
//!
//! The secret type itself is [`cthulhu_core::Secret`] (redacted `Debug`/`Display`,
//! constant-time `matches`); the core crate has no serde dependency, so the server reads
//! secrets through [`TomlSecret`] and unwraps them right after parsing.

use std::fmt;

use cthulhu_core::Secret;
use serde::de::{self, Deserialize, Deserializer, Visitor};

/// A [`Secret`] as read from the config or store file.
///
/// It deserializes from a TOML string only; any other value is refused without echoing
/// it. Like [`Secret`] it prints as `***`, and it deliberately does not implement
/// `Serialize`.
#[derive(Debug)]
pub(crate) struct TomlSecret(Secret);

impl TomlSecret {
    /// The secret read.
    pub(crate) fn into_secret(self) -> Secret {
        self.0
    }
}

impl<'de> Deserialize<'de> for TomlSecret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(SecretVisitor)
    }
}

/// Accepts strings only. Serde's default type errors quote the offending value
/// (`invalid type: integer `1234``); for a secret that would leak it, so every other
/// type gets a message without the value.
struct SecretVisitor;

const NOT_A_STRING: &str = "expected a string (the value is not shown: it is secret)";

impl<'de> Visitor<'de> for SecretVisitor {
    type Value = TomlSecret;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<TomlSecret, E> {
        Ok(TomlSecret(Secret::new(v)))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<TomlSecret, E> {
        Ok(TomlSecret(Secret::new(v)))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<TomlSecret, E> {
        Err(E::custom(NOT_A_STRING))
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<TomlSecret, E> {
        Err(E::custom(NOT_A_STRING))
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<TomlSecret, E> {
        Err(E::custom(NOT_A_STRING))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<TomlSecret, E> {
        Err(E::custom(NOT_A_STRING))
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, _: A) -> Result<TomlSecret, A::Error> {
        Err(de::Error::custom(NOT_A_STRING))
    }

    fn visit_map<A: de::MapAccess<'de>>(self, _: A) -> Result<TomlSecret, A::Error> {
        Err(de::Error::custom(NOT_A_STRING))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    struct Doc {
        key: TomlSecret,
    }

    fn read(value: &str) -> Result<Secret, String> {
        toml::from_str::<Doc>(&format!("key = {value}\n"))
            .map(|doc| doc.key.into_secret())
            .map_err(|e| e.message().to_owned())
    }

    #[test]
    fn prints_stars() {
        let s = read("\"hunter2\"").unwrap();
        assert_eq!(format!("{s}"), "***");
        assert_eq!(format!("{s:?}"), "Secret(***)");
        assert_eq!(s.expose(), "hunter2");
        let wrapped = toml::from_str::<Doc>("key = \"hunter2\"").unwrap();
        assert!(!format!("{wrapped:?}").contains("hunter2"));
    }

    #[test]
    fn refuses_non_strings_without_echoing_them() {
        for value in [
            "1234",
            "12.34",
            "true",
            "[1234]",
            "{ a = 1234 }",
            "1234-05-27",
        ] {
            let err = read(value).unwrap_err();
            assert!(err.contains(NOT_A_STRING), "{value}: {err}");
            assert!(!err.contains("1234"), "{value}: {err}");
        }
    }
}
