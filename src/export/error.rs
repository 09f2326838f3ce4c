//! What can go wrong exporting frames, videos and bookmarks. Messages name
//! the file and the problem.

use crate::store::StoreError;

/// An export failure. Whatever the variant, nothing is left at the target path.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The cancel flag was raised.
    #[error("export cancelled")]
    Cancelled,
    /// The settings cannot be rendered (frame count, size, keyframes...).
    #[error("{0}")]
    Settings(String),
    /// The target path or its folder is unusable; found before any work.
    #[error("{path}: {reason}")]
    Target {
        /// The target path.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The file system refused while writing.
    #[error("{path}: {source}")]
    Io {
        /// The file being written.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The encoder or muxer refused.
    #[error("{path}: {reason}")]
    Encode {
        /// The file being written.
        path: String,
        /// The encoder's message.
        reason: String,
    },
    /// A bookmark file that cannot be read or does not fit the model.
    #[error("{path}: {reason}")]
    Bookmark {
        /// The bookmark file.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The generator failed.
    #[error("generator: {0}")]
    Generate(#[from] candle_core::Error),
    /// Writing a small file atomically failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ExportError {
    /// An I/O error on `path`.
    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        ExportError::Io { path: path.display().to_string(), source }
    }

    /// An encoder error on `path`.
    pub(crate) fn encode(path: &std::path::Path, reason: impl std::fmt::Display) -> Self {
        ExportError::Encode { path: path.display().to_string(), reason: reason.to_string() }
    }

    /// A target error on `path`.
    pub(crate) fn target(path: &std::path::Path, reason: impl std::fmt::Display) -> Self {
        ExportError::Target { path: path.display().to_string(), reason: reason.to_string() }
    }
}
