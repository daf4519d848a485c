//! Placeholder until the mh sink lands.

use super::{BoxFuture, Delivery, RcptResults, Sink, SinkContext, SinkError};
use crate::config::MhConfig;

pub struct MhSink;

impl MhSink {
    pub fn new(_c: &MhConfig, _ctx: &SinkContext) -> Result<Self, String> {
        Err("the mh sink is not built yet".into())
    }
}

impl Sink for MhSink {
    fn deliver<'a>(&'a self, d: &'a Delivery<'a>) -> BoxFuture<'a, RcptResults> {
        Box::pin(async move {
            super::same_for_all(
                d.rcpts.len(),
                Err(SinkError::temporary("4.3.0", "not built")),
            )
        })
    }
    fn healthcheck(&self) -> BoxFuture<'_, Result<(), SinkError>> {
        Box::pin(async { Ok(()) })
    }
}
