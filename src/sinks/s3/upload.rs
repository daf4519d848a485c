//! Putting one object: the sidecar first (so an object that exists always has its
//! envelope), then the message by PutObject or, above the threshold, by multipart upload
//! of file ranges. Both end conditionally (`If-None-Match: *`) while the store accepts it.

use super::MULTIPART_THRESHOLD;
use super::config::{S3Settings, Sse};
use super::metadata::{ObjectMetadata, sidecar_key};
use crate::aws::{Failure, FailureClass, describe};
use crate::sinks::{Delivered, SinkError};
use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::{ByteStream, Length};
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

/// Parts are this big unless the object needs bigger ones to stay within 10,000 parts.
const PART_SIZE: u64 = 8 * 1024 * 1024;
const MAX_PARTS: u64 = 10_000;
/// S3's largest object.
const MAX_OBJECT: u64 = 5 * 1024 * 1024 * 1024 * 1024;

/// Adds the settings every object of the sink carries (encryption, storage class) to a
/// PutObject or CreateMultipartUpload request; the two builders share no trait.
macro_rules! with_object_settings {
    ($req:expr, $settings:expr) => {{
        let mut r = $req;
        if let Some(sse) = &$settings.sse {
            r = r.server_side_encryption(sse.header());
            if let Sse::Kms { key_id: Some(k) } = sse {
                r = r.ssekms_key_id(k);
            }
        }
        if let Some(c) = &$settings.storage_class {
            r = r.storage_class(c.clone());
        }
        r
    }};
}

/// One object to store.
pub struct Object<'a> {
    pub client: &'a Client,
    pub settings: &'a S3Settings,
    pub key: &'a str,
    /// The spooled message, streamed from.
    pub path: &'a Path,
    pub metadata: &'a ObjectMetadata,
    /// No earlier attempt can have stored anything: skip looking before a multipart upload.
    pub first_attempt: bool,
    /// The sink's "store accepts If-None-Match" flag.
    pub conditional: &'a AtomicBool,
}

/// How a conditional write ended when it did not succeed.
enum Refusal {
    /// 412: the object is there from an earlier attempt.
    AlreadyThere,
    /// The store does not do conditional writes: try again without.
    Unsupported,
    Failed(Failure),
}

impl Object<'_> {
    pub async fn put(&self) -> Result<Delivered, SinkError> {
        let size = tokio::fs::metadata(self.path)
            .await
            .map_err(|e| {
                SinkError::from_io(format!("{}: {}", self.url(), self.path.display()), &e)
            })?
            .len();
        if size > MAX_OBJECT {
            return Err(SinkError::permanent(
                "5.3.4",
                format!(
                    "{}: {size} bytes is more than S3's 5 TiB per object",
                    self.url()
                ),
            ));
        }
        if let Some(sidecar) = &self.metadata.sidecar {
            self.put_sidecar(sidecar).await?;
        }
        if size > MULTIPART_THRESHOLD {
            self.multipart(size).await
        } else {
            self.single(size).await
        }
    }

    fn url(&self) -> String {
        format!("s3://{}/{}", self.settings.bucket, self.key)
    }

    fn stored(&self, size: u64) -> Delivered {
        Delivered {
            detail: format!("{} ({size} bytes)", self.url()),
        }
    }

    fn already_there(&self) -> Delivered {
        Delivered {
            detail: format!("{} already stored by an earlier attempt", self.url()),
        }
    }

    fn metadata_map(&self) -> HashMap<String, String> {
        self.metadata.entries.iter().cloned().collect()
    }

    /// What a failed conditional write means.
    fn refusal(&self, f: Failure, conditional: bool) -> Refusal {
        match f.class {
            FailureClass::PreconditionFailed if conditional => Refusal::AlreadyThere,
            FailureClass::ConditionNotSupported if conditional => {
                tracing::warn!(bucket = %self.settings.bucket, error = %f.message,
                    "the store refuses If-None-Match: writing without it from now on");
                self.conditional.store(false, Ordering::Relaxed);
                Refusal::Unsupported
            }
            _ => Refusal::Failed(f),
        }
    }

    async fn single(&self, size: u64) -> Result<Delivered, SinkError> {
        loop {
            let conditional = self.conditional.load(Ordering::Relaxed);
            let body = self.body(None).await?;
            let mut req = with_object_settings!(
                self.client
                    .put_object()
                    .bucket(&self.settings.bucket)
                    .key(self.key)
                    .content_type("message/rfc822")
                    .set_metadata(Some(self.metadata_map()))
                    .body(body),
                self.settings
            );
            if conditional {
                req = req.if_none_match("*");
            }
            let Err(e) = req.send().await else {
                return Ok(self.stored(size));
            };
            match self.refusal(describe(&e), conditional) {
                Refusal::AlreadyThere => return Ok(self.already_there()),
                Refusal::Unsupported => continue,
                Refusal::Failed(f) => {
                    return Err(f.to_sink_error(&format!("PutObject {}", self.url())));
                }
            }
        }
    }

    /// The envelope beside the object. Written plainly: it is the same bytes on every
    /// attempt, so overwriting is harmless.
    async fn put_sidecar(&self, json: &[u8]) -> Result<(), SinkError> {
        let key = sidecar_key(self.key);
        let req = with_object_settings!(
            self.client
                .put_object()
                .bucket(&self.settings.bucket)
                .key(&key)
                .content_type("application/json")
                .body(ByteStream::from(json.to_vec())),
            self.settings
        );
        req.send().await.map(|_| ()).map_err(|e| {
            describe(&e).to_sink_error(&format!(
                "PutObject s3://{}/{key} (envelope sidecar)",
                self.settings.bucket
            ))
        })
    }

    /// The file, or one range of it, as a request body read as it is sent.
    async fn body(&self, range: Option<(u64, u64)>) -> Result<ByteStream, SinkError> {
        let mut b = ByteStream::read_from().path(self.path);
        if let Some((offset, len)) = range {
            b = b.offset(offset).length(Length::Exact(len));
        }
        b.build().await.map_err(|e| {
            SinkError::temporary(
                "4.3.0",
                format!("{}: reading {}: {e}", self.url(), self.path.display()),
            )
        })
    }

    async fn multipart(&self, size: u64) -> Result<Delivered, SinkError> {
        // A retry would upload everything again only to be told 412 at the end: look first.
        if !self.first_attempt && self.exists().await {
            return Ok(self.already_there());
        }
        let created = with_object_settings!(
            self.client
                .create_multipart_upload()
                .bucket(&self.settings.bucket)
                .key(self.key)
                .content_type("message/rfc822")
                .set_metadata(Some(self.metadata_map())),
            self.settings
        )
        .send()
        .await
        .map_err(|e| {
            describe(&e).to_sink_error(&format!("CreateMultipartUpload {}", self.url()))
        })?;
        let Some(upload_id) = created.upload_id().map(str::to_string) else {
            return Err(SinkError::temporary(
                "4.3.0",
                format!(
                    "CreateMultipartUpload {}: the answer has no upload id",
                    self.url()
                ),
            ));
        };
        let result = self.upload_parts(&upload_id, size).await;
        if !matches!(result, Ok(Some(_))) {
            self.abort(&upload_id).await;
        }
        result.map(|stored| stored.unwrap_or_else(|| self.already_there()))
    }

    /// Uploads the parts and completes; `Ok(None)` when the object turned out to be there.
    async fn upload_parts(
        &self,
        upload_id: &str,
        size: u64,
    ) -> Result<Option<Delivered>, SinkError> {
        let part_size = PART_SIZE.max(size.div_ceil(MAX_PARTS));
        let mut parts = Vec::new();
        let mut offset = 0;
        let mut number = 1;
        while offset < size {
            let len = part_size.min(size - offset);
            let body = self.body(Some((offset, len))).await?;
            let part = self
                .client
                .upload_part()
                .bucket(&self.settings.bucket)
                .key(self.key)
                .upload_id(upload_id)
                .part_number(number)
                .content_length(len as i64)
                .body(body)
                .send()
                .await
                .map_err(|e| {
                    describe(&e).to_sink_error(&format!("UploadPart {number} of {}", self.url()))
                })?;
            parts.push(
                CompletedPart::builder()
                    .part_number(number)
                    .set_e_tag(part.e_tag().map(str::to_string))
                    .build(),
            );
            offset += len;
            number += 1;
        }
        loop {
            let conditional = self.conditional.load(Ordering::Relaxed);
            let mut req = self
                .client
                .complete_multipart_upload()
                .bucket(&self.settings.bucket)
                .key(self.key)
                .upload_id(upload_id)
                .multipart_upload(
                    CompletedMultipartUpload::builder()
                        .set_parts(Some(parts.clone()))
                        .build(),
                );
            if conditional {
                req = req.if_none_match("*");
            }
            let Err(e) = req.send().await else {
                return Ok(Some(Delivered {
                    detail: format!("{} ({size} bytes, {} parts)", self.url(), parts.len()),
                }));
            };
            match self.refusal(describe(&e), conditional) {
                Refusal::AlreadyThere => return Ok(None),
                Refusal::Unsupported => continue,
                Refusal::Failed(f) => {
                    return Err(f.to_sink_error(&format!("CompleteMultipartUpload {}", self.url())));
                }
            }
        }
    }

    /// Whether the object exists; any doubt is "no" (the conditional completion still
    /// catches a copy that is there).
    async fn exists(&self) -> bool {
        self.client
            .head_object()
            .bucket(&self.settings.bucket)
            .key(self.key)
            .send()
            .await
            .is_ok()
    }

    /// Best effort: parts of an abandoned upload cost storage until a lifecycle rule
    /// removes them, but failing to abort must not hide the error that made us abort.
    async fn abort(&self, upload_id: &str) {
        if let Err(e) = self
            .client
            .abort_multipart_upload()
            .bucket(&self.settings.bucket)
            .key(self.key)
            .upload_id(upload_id)
            .send()
            .await
        {
            tracing::warn!(object = %self.url(), upload_id, error = %describe(&e).message,
                "could not abort a multipart upload");
        }
    }
}
