//! `discard`: accepts and drops the message. For tests, benchmarks and black holes.

pub mod config;

use super::{BoxFuture, Delivered, Delivery, RcptResults, Sink, SinkError};

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
