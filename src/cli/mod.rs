//! The commands, one file each: what a command reads, does and prints. The top layer:
//! nothing else in the library imports it. `main.rs` parses the command line, picks the
//! runtime and maps a [`CliError`] to an exit status.
//!
//! - [`serve`]: the daemon: listeners, queue, reload on SIGHUP.
//! - [`queue`]: `queue list|show|retry|delete` on a data dir, beside a running daemon.
//! - [`config`]: `config example|default|check`.

pub mod config;
pub mod queue;
pub mod serve;

use crate::config::ConfigError;
use crate::spool::SpoolError;
use clap::error::ErrorKind;
use serve::ServeError;

/// Why a command failed. `Display` is the message; its sources are the causes, which the
/// binary's edge prints on the same line.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Serve(#[from] ServeError),
    #[error(transparent)]
    Spool(#[from] SpoolError),
    /// The arguments contradict each other; reported (with status 2) as clap reports its own.
    #[error("{message}")]
    Usage { kind: ErrorKind, message: String },
    /// What a command was told to read is not there.
    #[error("{0}")]
    NoInput(String),
}

impl CliError {
    fn usage(kind: ErrorKind, message: impl Into<String>) -> CliError {
        CliError::Usage {
            kind,
            message: message.into(),
        }
    }
}
