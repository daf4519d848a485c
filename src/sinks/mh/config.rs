//! `[sink.NAME]` with `type = "mh"`: its keys, checks and summary.

use super::MhSink;
use crate::config::TaggedTable;
use crate::config::paths::join_str;
use crate::sinks::local::LineEndings;
use crate::sinks::{BuiltSink, InvalidKey, SinkContext};
use serde::Deserialize;
use std::sync::Arc;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MhConfig {
    /// MH folder; may hold `{rcpt}`, `{local}`, `{domain}`.
    pub path: String,
    #[serde(default)]
    pub line_endings: LineEndings,
    #[serde(default = "yes")]
    pub create: bool,
    /// Prepend `Return-Path:` and `Delivered-To:` (one message per recipient); false = the
    /// message as it came, one message for all recipients of a folder.
    #[serde(default = "yes")]
    pub envelope_headers: bool,
}

fn yes() -> bool {
    true
}

pub fn build(t: &TaggedTable, ctx: &SinkContext) -> Result<BuiltSink, InvalidKey> {
    let mut c: MhConfig = t.parse()?;
    if c.path.is_empty() {
        return Err(InvalidKey::at("path", "is empty: expected a path"));
    }
    c.path = join_str(&ctx.base_dir, &c.path);
    let bare = if c.envelope_headers {
        ""
    } else {
        ", no envelope headers"
    };
    Ok(BuiltSink {
        summary: format!("mh {}{bare}", c.path),
        sink: Arc::new(MhSink::new(&c, ctx)?),
    })
}
