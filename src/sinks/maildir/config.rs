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
    Ok(BuiltSink {
        summary: format!("maildir {}{folder}", c.path),
        sink: Arc::new(MaildirSink::new(&c, ctx)?),
    })
}
