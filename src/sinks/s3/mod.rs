//! `s3`: one object per delivery unit (or per recipient when the key names the recipient)
//! in any S3-compatible store.
//!
//! The body is streamed from the spool file, never read whole: one PutObject up to
//! [`MULTIPART_THRESHOLD`], a multipart upload of file ranges above it. Writes are
//! conditional (`If-None-Match: *`) where the store accepts that, so a retry of a unit
//! whose object an earlier attempt stored is recognised (412) instead of written twice.
//! The client is built on the first delivery: building the sink connects nowhere.

pub mod config;
mod go_layout;
mod key;
mod metadata;
mod upload;

use self::config::S3Settings;
use self::key::KeyInput;
use super::{BoxFuture, Delivered, Delivery, RcptResults, Sink, SinkError};
use aws_sdk_s3::Client;
use std::sync::atomic::AtomicBool;
use tokio::sync::OnceCell;

/// Above this size a message goes up by multipart, in parts read from the file.
pub const MULTIPART_THRESHOLD: u64 = 16 * 1024 * 1024;

pub struct S3Sink {
    settings: S3Settings,
    /// Built on first use: the credential chain and region lookup run then, not at start-up.
    client: OnceCell<Client>,
    /// Cleared when the store answered a conditional write with NotImplemented: from then
    /// on writes are plain (a retry overwrites the object with the same bytes).
    conditional_writes: AtomicBool,
}

impl S3Sink {
    pub fn new(settings: S3Settings) -> Self {
        S3Sink {
            settings,
            client: OnceCell::new(),
            conditional_writes: AtomicBool::new(true),
        }
    }

    async fn client(&self) -> &Client {
        self.client
            .get_or_init(|| async {
                let sdk = self.settings.aws.load().await;
                let conf = aws_sdk_s3::config::Builder::from(&sdk)
                    .force_path_style(self.settings.force_path_style)
                    // Checksums only where S3 requires them: the SDK's newer default
                    // (aws-chunked trailers on every put) is refused by many S3-compatible
                    // stores, and TLS already guards the bytes.
                    .request_checksum_calculation(
                        aws_sdk_s3::config::RequestChecksumCalculation::WhenRequired,
                    )
                    .build();
                Client::from_conf(conf)
            })
            .await
    }

    /// Stores the message as one object for `rcpts` under the key for `key_rcpt`.
    async fn store(
        &self,
        d: &Delivery<'_>,
        key_rcpt: Option<&str>,
        rcpts: &[String],
    ) -> Result<Delivered, SinkError> {
        let key = self.settings.key.expand(&KeyInput {
            rcpt: key_rcpt,
            id: d.id,
            sha256: &d.envelope.sha256,
            received_at: d.envelope.received_at,
        })?;
        let meta = metadata::for_object(d.envelope, rcpts);
        let client = self.client().await;
        let object = upload::Object {
            client,
            settings: &self.settings,
            key: &key,
            path: d.message,
            metadata: &meta,
            first_attempt: d.first_attempt,
            conditional: &self.conditional_writes,
        };
        let total = self.settings.total_timeout;
        match tokio::time::timeout(total, object.put()).await {
            Ok(result) => result,
            Err(_) => Err(SinkError::temporary(
                "4.4.2",
                format!(
                    "s3://{}/{key}: not stored within total_timeout {}s",
                    self.settings.bucket,
                    total.as_secs()
                ),
            )),
        }
    }
}

impl Sink for S3Sink {
    fn deliver<'a>(&'a self, d: &'a Delivery<'a>) -> BoxFuture<'a, RcptResults> {
        Box::pin(async move {
            if !self.settings.key.is_per_recipient() {
                let result = self.store(d, None, d.rcpts).await;
                return super::same_for_all(d.rcpts.len(), result);
            }
            let mut results = Vec::with_capacity(d.rcpts.len());
            for rcpt in d.rcpts {
                let one = std::slice::from_ref(rcpt);
                results.push(self.store(d, Some(rcpt), one).await);
            }
            results
        })
    }

    fn healthcheck(&self) -> BoxFuture<'_, Result<(), SinkError>> {
        Box::pin(async move {
            let bucket = &self.settings.bucket;
            match self
                .client()
                .await
                .head_bucket()
                .bucket(bucket)
                .send()
                .await
            {
                Ok(_) => Ok(()),
                Err(e) => {
                    let mut f = crate::aws::describe(&e);
                    // HEAD answers have no body: a 404 here is the bucket.
                    if f.http_status == Some(404) {
                        f.class = crate::aws::FailureClass::NoSuchBucket;
                        f.code.get_or_insert_with(|| "NoSuchBucket".into());
                    }
                    Err(f.to_sink_error(&format!("HeadBucket s3://{bucket}")))
                }
            }
        })
    }

    fn accepts(&self, rcpt: &str) -> Result<(), SinkError> {
        if !self.settings.key.is_per_recipient() {
            return Ok(());
        }
        self.settings
            .key
            .expand(&KeyInput {
                rcpt: Some(rcpt),
                id: "x",
                sha256: "x",
                received_at: 0,
            })
            .map(|_| ())
    }
}
