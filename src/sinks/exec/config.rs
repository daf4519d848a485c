//! `[sink.NAME]` with `type = "exec"`: its keys, checks and summary.

use super::ExecSink;
use crate::config::paths::join_str;
use crate::config::{Duration, TaggedTable};
use crate::sinks::local::LineEndings;
use crate::sinks::{BuiltSink, InvalidKey, SinkContext};
use serde::Deserialize;
use std::sync::Arc;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecConfig {
    /// argv; elements may hold `{sender}`, `{rcpt}`, `{id}`. An element that is exactly
    /// `{rcpt}` expands to one argument per recipient; `{rcpt}` inside a longer element
    /// runs the command once per recipient. Other braces are passed on as they are.
    pub command: Vec<String>,
    #[serde(default = "default_timeout")]
    pub timeout: Duration,
    /// Line endings of the message on the command's stdin: `lf` (default, as Postfix's
    /// `pipe` gives it) or `crlf` (the bytes as received).
    #[serde(default)]
    pub line_endings: LineEndings,
}

fn default_timeout() -> Duration {
    Duration::from_secs(60)
}

pub fn build(t: &TaggedTable, ctx: &SinkContext) -> Result<BuiltSink, InvalidKey> {
    let mut c: ExecConfig = t.parse()?;
    if c.command.first().is_none_or(|p| p.is_empty()) {
        return Err(InvalidKey::at(
            "command",
            "expected the program and its arguments, e.g. \
             [\"/usr/bin/procmail\", \"-d\", \"{rcpt}\"]",
        ));
    }
    if c.timeout.0.is_zero() {
        return Err(InvalidKey::at(
            "timeout",
            "must be more than 0, e.g. \"60s\"",
        ));
    }
    // A bare name is looked up in PATH; only a path with a `/` is relative to the config.
    if let Some(program) = c.command.first_mut()
        && program.contains('/')
    {
        *program = join_str(&ctx.base_dir, program);
    }
    Ok(BuiltSink {
        summary: format!("exec {:?}, timeout {}", c.command, c.timeout),
        sink: Arc::new(ExecSink::new(&c, ctx)?),
    })
}
