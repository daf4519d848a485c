//! The commands, one file each: what a command reads, does and prints. The top layer:
//! nothing else in the library imports it. `main.rs` parses the command line, picks the
//! runtime and maps a [`CliError`] to an exit status.
//!
//! - [`serve`]: the daemon: listeners, queue, reload on SIGHUP.
//! - [`queue`]: `queue list|show|retry|delete` on a data dir, beside a running daemon.
//! - [`config`]: `config example|default|check`.
//! - [`deliver`]: the pipe MDA Postfix runs per message.
//! - [`check`]: every sink's health check (IMAP login, Maildir writable, …).
//! - [`sendmail`]: the sendmail(1) interface; its `pickup/` drain runs in `serve`.
//! - [`daemon`]: `daemon start|stop|status|reload|info`: `serve` in the background, LSB statuses.
//! - [`pidfile`]: not a command: the pid file read against the process table (daemon, serve).

pub mod check;
pub mod config;
pub mod daemon;
pub mod deliver;
pub mod import_aws_smtp_relay;
pub mod import_mailtos3;
pub mod pidfile;
pub mod queue;
pub mod sendmail;
pub mod serve;

use crate::config::{ConfigError, LogFormat};
use crate::log::{Destination, LogError};
use crate::spool::SpoolError;
use clap::error::ErrorKind;
use serve::ServeError;
use std::path::PathBuf;

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
    #[error(transparent)]
    Log(#[from] LogError),
    /// The arguments contradict each other; reported (with status 2) as clap reports its own.
    #[error("{message}")]
    Usage { kind: ErrorKind, message: String },
    /// What a command was told to read is not there.
    #[error("{0}")]
    NoInput(String),
    /// A file to import is not what it should be (the config it would become is wrong).
    #[error("{0}")]
    Import(String),
    /// `check`: some sink failed its health check (the lines say which and why).
    #[error("{0}")]
    Unhealthy(String),
}

impl CliError {
    fn usage(kind: ErrorKind, message: impl Into<String>) -> CliError {
        CliError::Usage {
            kind,
            message: message.into(),
        }
    }
}

/// The global logging flags.
#[derive(Debug, Clone, Default)]
pub struct LogOptions {
    /// `--log-format`; overrides the config's `[server] log_format`.
    pub format: Option<LogFormat>,
    /// `--log-file FILE`: instead of the command's own destination.
    pub file: Option<PathBuf>,
}

impl LogOptions {
    /// Starts logging: to `--log-file` if given, else where the command logs by default.
    pub fn init(&self, configured: LogFormat, default: Destination) -> Result<(), LogError> {
        let dest = self.file.clone().map_or(default, Destination::File);
        crate::log::init(self.format.unwrap_or(configured), dest)
    }
}
