//! Errors of the spool layer. Each names the file or directory and what was being done.

use std::io;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// A filesystem operation failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What we were doing: "create", "rename", "read", ...
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A sidecar that is not the JSON of a queue entry.
    #[error("sidecar {}: expected a queue entry as JSON: {source}", path.display())]
    Sidecar {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// The ID is not (or no longer) in the queue: never queued, delivered, or deleted.
    #[error("no message {id} in the queue {}", dir.display())]
    NotQueued { id: String, dir: PathBuf },
    /// The ID is not queued but in `dead/`: it outlived `max_lifetime`.
    #[error("{id} is a dead letter, not in the queue: {}, reason: {reason}", sidecar.display())]
    DeadLetter {
        id: String,
        sidecar: PathBuf,
        reason: String,
    },
    /// The ID cannot be a spool file name.
    #[error("invalid message id {id:?}: expected letters, digits, '-' or '_'")]
    InvalidId { id: String },
    /// A caller broke the contract of an API (e.g. an entry that does not describe the
    /// message it is queued with).
    #[error("{0}")]
    Invalid(String),
}

impl SpoolError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        SpoolError::Io {
            op,
            path: path.into(),
            source,
        }
    }

    /// True when the entry is not in the queue (any more): deleted by `queue delete`,
    /// already delivered, or never there.
    /// ENOSPC / EDQUOT: answered with 4.3.1 ("mail system full") rather than 4.3.0.
    pub fn is_disk_full(&self) -> bool {
        matches!(self, SpoolError::Io { source, .. } if is_disk_full(source))
    }

    pub fn is_not_queued(&self) -> bool {
        match self {
            SpoolError::NotQueued { .. } | SpoolError::DeadLetter { .. } => true,
            SpoolError::Io { source, .. } => source.kind() == io::ErrorKind::NotFound,
            _ => false,
        }
    }
}

pub use crate::delivery::is_disk_full;
