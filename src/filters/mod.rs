//! Filters: ordered transforms of (envelope, message) that a route runs before its sinks
//! (DESIGN.md "Filters"). A filter sees the message as the previous filter left it and
//! answers one [`Verdict`], or a temporary failure. The stage that runs them, and what each
//! verdict means for the client's answer and the spool, is `intake`'s.

pub mod rewrite;

use crate::delivery::BoxFuture;
use crate::envelope::Envelope;
use std::path::{Path, PathBuf};

/// One run of one filter for the recipients of one route.
pub struct FilterInput<'a> {
    pub envelope: &'a Envelope,
    /// The route being filtered (after re-routes: the route that now has the recipients).
    pub route: &'a str,
    /// The recipients of that route (a subset of `envelope.rcpts`).
    pub rcpts: &'a [String],
    /// The message as the previous filter left it: our `Received:` line first, then what
    /// the client sent (dot-unstuffed, line ends as received). Read only.
    pub body: &'a Path,
    /// Where a changed message goes: the filter creates and writes this file and answers
    /// [`Verdict::Changed`]. The stage owns the file afterwards (makes it durable, removes
    /// it); a filter that fails leaves whatever it wrote there to the stage to remove.
    pub output: &'a Path,
}

/// What a filter decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Go on with the message as it is.
    Pass,
    /// Go on with the message the filter wrote to [`FilterInput::output`].
    Changed,
    /// Refuse the message for these recipients, for good: `status` is 5.x.x.
    Reject { status: String, text: String },
    /// Hand these recipients to the named route: its filters and sinks take over.
    Reroute { route: String },
    /// Accept the message for these recipients and deliver it nowhere (logged with
    /// `reason`), as Postfix's DISCARD action does.
    Discard { reason: String },
}

/// A temporary failure (a scanner that is down, a timeout): the message is answered 4xx,
/// unless the filter is `fail_open`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status} {message}")]
pub struct FilterError {
    /// 4.x.x.
    pub status: String,
    pub message: String,
}

impl FilterError {
    pub fn new(status: &str, message: impl Into<String>) -> Self {
        FilterError {
            status: status.to_string(),
            message: message.into(),
        }
    }

    /// A local I/O problem (reading the body, writing the output): 4.3.1 when the disk is
    /// full, else 4.3.0.
    pub fn from_io(context: impl std::fmt::Display, err: &std::io::Error) -> Self {
        let status = match err.raw_os_error() {
            Some(libc::ENOSPC) | Some(libc::EDQUOT) => "4.3.1",
            _ => "4.3.0",
        };
        FilterError::new(status, format!("{context}: {err}"))
    }
}

pub trait Filter: Send + Sync {
    /// Runs the filter once. Must not change `input.body`.
    fn apply<'a>(
        &'a self,
        input: &'a FilterInput<'a>,
    ) -> BoxFuture<'a, Result<Verdict, FilterError>>;

    /// Routes this filter may re-route to: checked at build time (each must exist, and no
    /// chain of re-routes may come back to where it started).
    fn reroutes(&self) -> Vec<String> {
        Vec::new()
    }
}

/// A `[filter.NAME]` as built from the config.
#[derive(Clone)]
pub struct BuiltFilter {
    pub name: String,
    pub filter: std::sync::Arc<dyn Filter>,
    /// A temporary failure of this filter is logged and passed over instead of failing
    /// the message.
    pub fail_open: bool,
}

/// What every filter may need from the process around it.
#[derive(Clone, Debug)]
pub struct FilterContext {
    /// Our host name (for headers a filter adds).
    pub hostname: String,
    /// Directory relative paths are resolved against (the config file's directory).
    pub base_dir: PathBuf,
}
