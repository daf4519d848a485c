//! Placeholder until the exec sink lands.

use super::{BoxFuture, Delivery, RcptResults, Sink, SinkContext, SinkError};
use crate::config::ExecConfig;

pub struct ExecSink;

impl ExecSink {
    pub fn new(_c: &ExecConfig, _ctx: &SinkContext) -> Result<Self, String> {
        Err("the exec sink is not built yet".into())
    }
}

impl Sink for ExecSink {
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
