//! Error types of the core crate.

/// Errors of the media model.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ModelError {
    /// A stream path is not a valid `app/name`.
    #[error("invalid stream path: {0}")]
    InvalidPath(String),
}
