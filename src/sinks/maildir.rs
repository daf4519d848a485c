//! Placeholder until the maildir sink lands.

use super::{BoxFuture, Delivery, RcptResults, Sink, SinkContext, SinkError};
use crate::config::MaildirConfig;

pub struct MaildirSink;

impl MaildirSink {
    pub fn new(_c: &MaildirConfig, _ctx: &SinkContext) -> Result<Self, String> {
        Err("the maildir sink is not built yet".into())
    }
}

impl Sink for MaildirSink {
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
