//! Sinks: where a message ends. A sink only knows "deliver this one message to these
//! recipients" and decides itself whether a failure is temporary or permanent.

use crate::config::error::path_string;
use crate::config::{Seg, SinkConfig};
use crate::envelope::Envelope;
use crate::spool::commit::Committer;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;

pub mod discard;
pub mod exec;
mod local;
pub mod maildir;
pub mod mbox;
mod mbox_journal;
pub mod mh;
pub mod relay;
pub mod template;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One delivery attempt of one message to one sink for a set of recipients.
pub struct Delivery<'a> {
    /// Unique per (message, recipient set): names derived from it make a retry overwrite
    /// or recognise what an earlier attempt wrote instead of duplicating it.
    pub id: &'a str,
    pub envelope: &'a Envelope,
    /// The recipients this sink delivers for (those whose route lists this sink).
    pub rcpts: &'a [String],
    /// The spooled message: our Received header followed by the bytes the client sent,
    /// dot-unstuffed, line endings exactly as received (normally CRLF).
    pub message: &'a Path,
    /// No earlier attempt of this unit can have written anything: sinks may skip looking
    /// for a previous copy (a directory scan in Maildir).
    pub first_attempt: bool,
}

/// What a sink achieved for one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    /// Human-readable detail for the log: file written, upstream reply, ...
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Severity {
    /// Retry later: network, timeout, disk full, upstream 4xx, config the operator can fix.
    Temporary,
    /// Do not retry: unknown mailbox, policy, content refused, upstream 5xx.
    Permanent,
}

/// A failed delivery, with the RFC 3463 enhanced status code that the ingress reports.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status} {message}")]
pub struct SinkError {
    pub severity: Severity,
    /// Enhanced status code, e.g. "4.3.0" or "5.1.1"; its class agrees with `severity`.
    pub status: String,
    pub message: String,
}

impl SinkError {
    pub fn temporary(status: &str, message: impl Into<String>) -> Self {
        SinkError {
            severity: Severity::Temporary,
            status: status.to_string(),
            message: message.into(),
        }
    }

    pub fn permanent(status: &str, message: impl Into<String>) -> Self {
        SinkError {
            severity: Severity::Permanent,
            status: status.to_string(),
            message: message.into(),
        }
    }

    pub fn is_temporary(&self) -> bool {
        self.severity == Severity::Temporary
    }

    /// Maps a local I/O error: everything is temporary (disk full, permissions the operator
    /// can fix) except nothing — a local filesystem never says "this mailbox does not exist"
    /// in a way that will not change, so we never bounce on it.
    pub fn from_io(context: impl std::fmt::Display, err: &std::io::Error) -> Self {
        let status = match err.raw_os_error() {
            Some(libc::ENOSPC) | Some(libc::EDQUOT) => "4.3.1",
            _ => "4.3.0",
        };
        SinkError::temporary(status, format!("{context}: {err}"))
    }
}

/// One result per recipient of the delivery, in the order of `Delivery::rcpts`.
pub type RcptResults = Vec<Result<Delivered, SinkError>>;

/// The same result for every recipient.
pub fn same_for_all(n: usize, result: Result<Delivered, SinkError>) -> RcptResults {
    vec![result; n]
}

pub trait Sink: Send + Sync {
    /// Delivers the message; returns one result per recipient. Must not return before what
    /// it reports as delivered is durable (fsynced, or acknowledged by the remote).
    fn deliver<'a>(&'a self, delivery: &'a Delivery<'a>) -> BoxFuture<'a, RcptResults>;

    /// Checks that the sink can work at all (directory writable, upstream reachable).
    fn healthcheck(&self) -> BoxFuture<'_, Result<(), SinkError>>;

    /// Refuses, without I/O, a recipient this sink can never deliver to (an address that
    /// makes no valid mailbox path). Asked at RCPT time, so such an address is refused
    /// there and never accepted only to fail after DATA.
    fn accepts(&self, _rcpt: &str) -> Result<(), SinkError> {
        Ok(())
    }
}

/// What every sink may need from the process around it.
#[derive(Clone)]
pub struct SinkContext {
    /// Our host name (Maildir unique names, HELO of relays, Received lines).
    pub hostname: String,
    /// Group commit: makes writes durable with shared sync rounds.
    pub committer: Arc<Committer>,
    /// Directory relative paths are resolved against (the config file's directory).
    pub base_dir: PathBuf,
}

/// Why a `[sink.NAME]` table cannot become a sink, and the key inside the table to blame.
/// Sinks know which of their keys is wrong; only the config layer knows the file and line,
/// so the key travels with the message until someone can place it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct InvalidKey {
    /// Key path inside the sink's table (`password_file`, `command[0]`); empty when the
    /// table as a whole is wrong.
    pub key: Vec<Seg>,
    /// What is wrong and what was expected, without the key (the reader adds it).
    pub message: String,
}

impl InvalidKey {
    pub fn at(key: &str, message: impl Into<String>) -> Self {
        InvalidKey {
            key: vec![Seg::Key(key.to_string())],
            message: message.into(),
        }
    }

    /// An element of an array key, e.g. `command[2]`.
    pub fn at_index(key: &str, index: usize, message: impl Into<String>) -> Self {
        InvalidKey {
            key: vec![Seg::Key(key.to_string()), Seg::Index(index)],
            message: message.into(),
        }
    }
}

/// A sink that could not be built. `Display` names the key path but no file: callers that
/// have the loaded config turn it into a located [`crate::config::ConfigError`].
#[derive(Debug, thiserror::Error)]
#[error("{}: {}", path_string(&self.path()), .problem.message)]
pub struct BuildError {
    /// The `NAME` of `[sink.NAME]`, as the config spells it.
    pub name: String,
    pub problem: InvalidKey,
}

impl BuildError {
    /// The full key path of the problem: `sink.NAME.KEY`.
    pub fn path(&self) -> Vec<Seg> {
        let mut path = vec![Seg::Key("sink".into()), Seg::Key(self.name.clone())];
        path.extend(self.problem.key.iter().cloned());
        path
    }
}

/// Builds the sink a `[sink.NAME]` table describes. Reads what the sink needs (secrets,
/// CA files) but connects nowhere and creates nothing: `config check` relies on that.
pub fn build(
    name: &str,
    config: &SinkConfig,
    ctx: &SinkContext,
) -> Result<Arc<dyn Sink>, BuildError> {
    let err = |problem: InvalidKey| BuildError {
        name: name.to_string(),
        problem,
    };
    Ok(match config {
        SinkConfig::Maildir(c) => Arc::new(maildir::MaildirSink::new(c, ctx).map_err(err)?),
        SinkConfig::Mh(c) => Arc::new(mh::MhSink::new(c, ctx).map_err(err)?),
        SinkConfig::Mbox(c) => Arc::new(mbox::MboxSink::new(c, ctx).map_err(err)?),
        SinkConfig::Smtp(c) => {
            Arc::new(relay::RelaySink::new(c, relay::Dialect::Smtp, ctx).map_err(err)?)
        }
        SinkConfig::Lmtp(c) => {
            Arc::new(relay::RelaySink::new(c, relay::Dialect::Lmtp, ctx).map_err(err)?)
        }
        SinkConfig::Exec(c) => Arc::new(exec::ExecSink::new(c, ctx).map_err(err)?),
        SinkConfig::Discard(_) => Arc::new(discard::DiscardSink),
    })
}
