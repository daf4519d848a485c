//! `discard`: accepts and drops the message. For tests, benchmarks and black holes.

use super::{
    BoxFuture, BuiltSink, Delivered, Delivery, InvalidKey, RcptResults, Sink, SinkContext,
    SinkError,
};
use crate::config::TaggedTable;
use serde::Deserialize;
use std::sync::Arc;

/// `[sink.NAME]` with `type = "discard"`: no keys.
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

pub struct DiscardSink;

impl Sink for DiscardSink {
    fn deliver<'a>(&'a self, d: &'a Delivery<'a>) -> BoxFuture<'a, RcptResults> {
        Box::pin(async move {
            super::same_for_all(
                d.rcpts.len(),
                Ok(Delivered {
                    detail: "discarded".into(),
                }),
            )
        })
    }

    fn healthcheck(&self) -> BoxFuture<'_, Result<(), SinkError>> {
        Box::pin(async { Ok(()) })
    }
}
