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
    Ok(BuiltSink {
        summary: format!("mh {}", c.path),
        sink: Arc::new(MhSink::new(&c, ctx)?),
    })
}
