//! The crate's error type.

/// Errors of storage set-up, naming, muxing and writing recordings.
///
/// Messages name objects and files but never carry credentials.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SinkError {
    /// A storage or recording setting is invalid.
    #[error("invalid recording configuration: {0}")]
    Config(String),
    /// An object name template is invalid, or rendered an unusable name.
    #[error("invalid object name template: {0}")]
    Template(String),
    /// An object store operation failed for good (after retries).
    #[error("{op} of {object} failed: {source}")]
    Storage {
        /// What was attempted (`upload part 3`, `complete`, ...).
        op: String,
        /// The object's location.
        object: String,
        /// The store's error.
        #[source]
        source: object_store::Error,
    },
    /// Uploading a segment failed for good; what was uploaded before is kept.
    #[error("upload of {object} failed: {reason}")]
    Upload {
        /// The object's location.
        object: String,
        /// Why.
        reason: String,
    },
    /// A local file operation failed.
    #[error("{op} {path} failed: {source}")]
    Io {
        /// What was attempted (`create`, `write`, ...).
        op: &'static str,
        /// The file.
        path: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The container cannot carry the stream (codec, track count) or a frame.
    #[error("muxing failed: {0}")]
    Mux(String),
    /// Something this build or storage does not support.
    #[error("not supported: {0}")]
    Unsupported(String),
    /// The segment writer stopped (its upload task ended unexpectedly).
    #[error("segment writer for {0} is gone")]
    WriterGone(String),
}
