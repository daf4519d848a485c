//! Sinks: where a message ends. A sink only knows "deliver this one message to these
//! recipients" and decides itself whether a failure is temporary or permanent.

pub use crate::config::BuildError;
pub use crate::config::InvalidKey;
use crate::config::{TaggedTable, unknown_type};
use crate::envelope::Envelope;
use crate::spool::commit::Committer;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub mod discard;
pub mod envelope_headers;
pub mod exec;
pub mod imap;
pub mod local;
pub mod maildir;
pub mod mbox;
pub mod mh;
pub mod relay;
#[cfg(feature = "s3")]
pub mod s3;
#[cfg(feature = "ses")]
pub mod ses;
pub mod template;

#[cfg(test)]
mod tests;

/// What builds a sink from its `[sink.NAME]` table: types it (unknown keys and wrong types
/// name their key), checks it, resolves its relative paths against `ctx.base_dir`, and
/// says in one line what it is for `config check`.
pub type Constructor = fn(&TaggedTable, &SinkContext) -> Result<BuiltSink, InvalidKey>;

/// Every sink type this build has, by the `type` that picks it. A new sink is its folder
/// and one line here.
pub const REGISTRY: &[(&str, Constructor)] = &[
    ("maildir", maildir::config::build),
    ("mh", mh::config::build),
    ("mbox", mbox::config::build),
    ("smtp", relay::config::build_smtp),
    ("lmtp", relay::config::build_lmtp),
    ("exec", exec::config::build),
    ("discard", discard::config::build),
    ("imap", imap::config::build),
    #[cfg(feature = "s3")]
    ("s3", s3::config::build),
    #[cfg(feature = "ses")]
    ("ses", ses::config::build),
];

/// Sink types in the design that this build does not have yet: named as such, not as
/// unknown, when a config asks for one (the heavy ones also when built without their feature).
const LATER: &[&str] = &[
    "mongodb",
    #[cfg(not(feature = "s3"))]
    "s3",
    #[cfg(not(feature = "ses"))]
    "ses",
];

/// A sink as the registry built it.
pub struct BuiltSink {
    pub sink: Arc<dyn Sink>,
    /// One line for `config check`, e.g. `maildir /var/mail/{local}`.
    pub summary: String,
}

/// The `type` names of [`REGISTRY`], in its order.
pub fn types() -> impl Iterator<Item = &'static str> {
    REGISTRY.iter().map(|(name, _)| *name)
}

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

    /// The largest message this sink can ever take (SES: 40 MB), when it has such a limit:
    /// a listener whose routes reach this sink advertises no larger SIZE.
    fn max_message_size(&self) -> Option<u64> {
        None
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

/// Builds the sink a `[sink.NAME]` table describes. Reads what the sink needs (secrets,
/// CA files) but connects nowhere and creates nothing: `config check` relies on that.
pub fn build(name: &str, table: &TaggedTable, ctx: &SinkContext) -> Result<BuiltSink, BuildError> {
    let err = |problem: InvalidKey| BuildError {
        section: "sink",
        name: name.to_string(),
        problem,
    };
    let kind = table.kind.as_str();
    let Some((_, construct)) = REGISTRY.iter().find(|(t, _)| *t == kind) else {
        let built: Vec<&str> = types().collect();
        return Err(err(unknown_type("sink", kind, &built, LATER)));
    };
    construct(table, ctx).map_err(err)
}
