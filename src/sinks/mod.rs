//! Sinks: where a message ends. A sink only knows "deliver this one message to these
//! recipients" and decides itself whether a failure is temporary or permanent.

pub use crate::config::InvalidKey;
use crate::config::error::path_string;
use crate::config::{Seg, SinkConfig};
use crate::envelope::Envelope;
use crate::spool::commit::Committer;
use std::path::{Path, PathBuf};
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

pub use crate::delivery::{BoxFuture, Delivered, RcptResults, Severity, SinkError, same_for_all};

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
