//! `[sink.NAME]` with `type = "maildir"`: its keys, checks and summary.

use super::MaildirSink;
use crate::config::TaggedTable;
use crate::config::paths::join_str;
use crate::sinks::local::LineEndings;
use crate::sinks::{BuiltSink, InvalidKey, SinkContext};
use serde::Deserialize;
use std::sync::Arc;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaildirConfig {
    /// Maildir root; may hold `{rcpt}`, `{local}`, `{domain}`.
    pub path: String,
    /// Subfolder (Maildir++ `.Sub`), e.g. "Archive" or "Lists.rust"; empty = INBOX.
    #[serde(default)]
    pub folder: Option<String>,
    #[serde(default)]
    pub line_endings: LineEndings,
    /// Create missing Maildirs (cur/new/tmp) on first delivery.
    #[serde(default = "yes")]
    pub create: bool,
    /// Prepend `Return-Path:` and `Delivered-To:` (one copy per recipient); false = the
    /// message as it came, one file for all recipients of a Maildir.
    #[serde(default = "yes")]
    pub envelope_headers: bool,
}

fn yes() -> bool {
    true
}

pub fn build(t: &TaggedTable, ctx: &SinkContext) -> Result<BuiltSink, InvalidKey> {
    let mut c: MaildirConfig = t.parse()?;
    if c.path.is_empty() {
        return Err(InvalidKey::at("path", "is empty: expected a path"));
    }
    c.path = join_str(&ctx.base_dir, &c.path);
    let folder = c
        .folder
        .as_deref()
        .map(|f| format!(", folder {f}"))
        .unwrap_or_default();
    let bare = if c.envelope_headers {
        ""
    } else {
        ", no envelope headers"
    };
    Ok(BuiltSink {
        summary: format!("maildir {}{folder}{bare}", c.path),
        sink: Arc::new(MaildirSink::new(&c, ctx)?),
    })
}
