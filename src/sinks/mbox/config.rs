//! `[sink.NAME]` with `type = "mbox"`: its keys, checks and summary.

use super::MboxSink;
use crate::config::TaggedTable;
use crate::config::paths::join_str;
use crate::sinks::{BuiltSink, InvalidKey, SinkContext};
use serde::Deserialize;
use std::sync::Arc;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MboxConfig {
    /// mbox file; may hold `{rcpt}`, `{local}`, `{domain}`.
    pub path: String,
    #[serde(default = "yes")]
    pub create: bool,
    /// Prepend `Return-Path:` and `Delivered-To:` after the `From ` line (one message per
    /// recipient); false = the message as it came, one for all recipients of an mbox.
    #[serde(default = "yes")]
    pub envelope_headers: bool,
}

fn yes() -> bool {
    true
}

pub fn build(t: &TaggedTable, ctx: &SinkContext) -> Result<BuiltSink, InvalidKey> {
    let mut c: MboxConfig = t.parse()?;
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
        summary: format!("mbox {}{bare}", c.path),
        sink: Arc::new(MboxSink::new(&c, ctx)?),
    })
}
