//! `[sink.NAME]` with `type = "discard"`: no keys.

use super::DiscardSink;
use crate::config::TaggedTable;
use crate::sinks::{BuiltSink, InvalidKey, SinkContext};
use serde::Deserialize;
use std::sync::Arc;

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct DiscardConfig {}

pub fn build(t: &TaggedTable, _ctx: &SinkContext) -> Result<BuiltSink, InvalidKey> {
    let DiscardConfig {} = t.parse()?;
    Ok(BuiltSink {
        summary: "discard (accepted and dropped)".into(),
        sink: Arc::new(DiscardSink),
    })
}
