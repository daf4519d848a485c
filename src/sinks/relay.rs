//! Placeholder until the SMTP/LMTP relay sink lands.

use super::{BoxFuture, Delivery, RcptResults, Sink, SinkContext, SinkError};
use crate::config::RelayConfig;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Smtp,
    Lmtp,
}

pub struct RelaySink;

impl RelaySink {
    pub fn new(_c: &RelayConfig, _d: Dialect, _ctx: &SinkContext) -> Result<Self, String> {
        Err("the relay sink is not built yet".into())
    }
}

impl Sink for RelaySink {
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
