//! Filters: ordered transforms of (envelope, message) that a route runs before its sinks
//! (DESIGN.md "Filters"). A filter sees the message as the previous filter left it and
//! answers one [`Verdict`], or a temporary failure. The stage that runs them, and what each
//! verdict means for the client's answer and the spool, is `intake`'s.

pub mod rewrite;

use crate::config::{BuildError, InvalidKey, TaggedTable, unknown_type};
use crate::delivery::BoxFuture;
use crate::envelope::Envelope;
use serde::de::DeserializeOwned;
use std::path::{Path, PathBuf};
use std::sync::Arc;

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
    /// Where a changed message goes (it does not exist yet): the filter creates it, mode
    /// 0600 like every message file of the spool, writes it and answers
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
        FilterError::new(crate::delivery::io_status(err), format!("{context}: {err}"))
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

/// What every filter may need from the process around it.
#[derive(Clone, Debug)]
pub struct FilterContext {
    /// Our host name (for headers a filter adds).
    pub hostname: String,
    /// Directory relative paths are resolved against (the config file's directory).
    pub base_dir: PathBuf,
}

/// What builds a filter from its `[filter.NAME]` table (without the keys every filter shares,
/// see [`build`]): the filter and its one line for `config check`.
pub type Constructor =
    fn(&TaggedTable, &FilterContext) -> Result<(Arc<dyn Filter>, String), InvalidKey>;

/// Every filter type this build has, by the `type` that picks it. A new filter is its folder
/// and one line here.
pub const REGISTRY: &[(&str, Constructor)] = &[("rewrite", |t, ctx| {
    typed(t, ctx, rewrite::RewriteFilter::new, rewrite::summary)
})];

/// Filter types in the design that this build does not have yet.
const LATER: [&str; 4] = ["detach", "clamd", "spamd", "exec"];

/// A `[filter.NAME]` as a route runs it.
#[derive(Clone)]
pub struct BuiltFilter {
    /// The `NAME` of `[filter.NAME]`, for logs and errors.
    pub name: String,
    pub filter: Arc<dyn Filter>,
    /// A temporary failure passes the message on (logged) instead of answering 4xx.
    pub fail_open: bool,
}

/// The `type` names of [`REGISTRY`], in its order.
pub fn types() -> impl Iterator<Item = &'static str> {
    REGISTRY.iter().map(|(name, _)| *name)
}

/// Builds the filter a `[filter.NAME]` table describes, with its summary. The keys every
/// filter has (`type`, `fail_open`) are read here; the rest goes to the filter's type.
pub fn build(
    name: &str,
    table: &TaggedTable,
    ctx: &FilterContext,
) -> Result<(BuiltFilter, String), BuildError> {
    build_from(REGISTRY, name, table, ctx)
}

/// [`build`] with another registry (tests add filter types of their own).
pub fn build_from(
    registry: &[(&str, Constructor)],
    name: &str,
    table: &TaggedTable,
    ctx: &FilterContext,
) -> Result<(BuiltFilter, String), BuildError> {
    let err = |problem: InvalidKey| BuildError {
        section: "filter",
        name: name.to_string(),
        problem,
    };
    let kind = table.kind.as_str();
    let Some((_, construct)) = registry.iter().find(|(t, _)| *t == kind) else {
        let built: Vec<&str> = registry.iter().map(|(t, _)| *t).collect();
        return Err(err(unknown_type("filter", kind, &built, &LATER)));
    };
    let (rest, fail_open) = table.take("fail_open");
    let fail_open = match fail_open {
        None => false,
        Some(toml::Value::Boolean(b)) => b,
        Some(other) => {
            return Err(err(InvalidKey::at(
                "fail_open",
                format!(
                    "expected true or false, not {}",
                    crate::config::error::a_type(&other)
                ),
            )));
        }
    };
    let (filter, summary) = construct(&rest, ctx).map_err(|mut problem| {
        // The type's own keys are listed; the ones every filter has belong there too.
        if problem.message.contains("expected one of") {
            problem.message.push_str(", `fail_open`");
        }
        err(problem)
    })?;
    let summary = if fail_open {
        format!("{summary} (fail_open)")
    } else {
        summary
    };
    let built = BuiltFilter {
        name: name.to_string(),
        filter,
        fail_open,
    };
    Ok((built, summary))
}

/// A [`Constructor`] from a filter type's own parts: its config type, its `new` and its
/// summary.
pub fn typed<C: DeserializeOwned, F: Filter + 'static>(
    table: &TaggedTable,
    ctx: &FilterContext,
    new: fn(&C, &FilterContext) -> Result<F, InvalidKey>,
    summary: fn(&C) -> String,
) -> Result<(Arc<dyn Filter>, String), InvalidKey> {
    let c: C = table.parse()?;
    let filter = new(&c, ctx)?;
    Ok((Arc::new(filter), summary(&c)))
}
