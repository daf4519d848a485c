//! `[sink.NAME]` with `type = "s3"`: its keys, checks and summary.

use super::S3Sink;
use super::key::{DEFAULT_KEY, KeyTemplate};
use crate::aws::AwsSettings;
use crate::config::paths::join;
use crate::config::{Duration, TaggedTable};
use crate::sinks::{BuiltSink, InvalidKey, SinkContext};
use aws_sdk_s3::types::{ServerSideEncryption, StorageClass};
use serde::Deserialize;
use std::path::Path;
use std::sync::Arc;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    pub bucket: String,
    #[serde(default)]
    pub region: String,
    /// Any S3-compatible server; empty: AWS (or `AWS_ENDPOINT_URL_S3`).
    #[serde(default)]
    pub endpoint: String,
    /// `https://host/bucket/key` instead of `https://bucket.host/key` (most self-hosted stores).
    #[serde(default)]
    pub force_path_style: bool,
    #[serde(default = "default_key")]
    pub key: String,
    /// `aws:kms` or `AES256`; empty: the bucket's default.
    #[serde(default)]
    pub sse: String,
    /// The KMS key for `sse = "aws:kms"`; empty: the account's `aws/s3` key.
    #[serde(default)]
    pub kms_key_id: String,
    /// e.g. `STANDARD_IA`, `GLACIER_IR`; empty: the bucket's default.
    #[serde(default)]
    pub storage_class: String,
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: Duration,
    /// One request attempt (a PutObject, one multipart part).
    #[serde(default = "default_timeout")]
    pub timeout: Duration,
    /// One object, retries and all parts included.
    #[serde(default = "default_total_timeout")]
    pub total_timeout: Duration,
    #[serde(default)]
    pub credentials_file: String,
    #[serde(default)]
    pub profile: String,
    #[serde(default)]
    pub role_arn: String,
}

fn default_key() -> String {
    DEFAULT_KEY.to_string()
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_timeout() -> Duration {
    Duration::from_secs(120)
}
fn default_total_timeout() -> Duration {
    Duration::from_secs(600)
}

/// Server-side encryption as the config asks for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sse {
    Kms { key_id: Option<String> },
    Aes256,
}

impl Sse {
    pub fn header(&self) -> ServerSideEncryption {
        match self {
            Sse::Kms { .. } => ServerSideEncryption::AwsKms,
            Sse::Aes256 => ServerSideEncryption::Aes256,
        }
    }
}

/// What the sink needs, checked.
#[derive(Debug, Clone)]
pub struct S3Settings {
    pub bucket: String,
    pub key: KeyTemplate,
    pub force_path_style: bool,
    pub sse: Option<Sse>,
    pub storage_class: Option<StorageClass>,
    pub total_timeout: std::time::Duration,
    pub aws: AwsSettings,
}

fn non_empty(s: &str) -> Option<String> {
    (!s.trim().is_empty()).then(|| s.trim().to_string())
}

impl S3Config {
    pub fn check(&self, base_dir: &Path) -> Result<S3Settings, InvalidKey> {
        let bucket = self.bucket.trim();
        if bucket.is_empty() || bucket.contains('/') || bucket.contains(char::is_whitespace) {
            return Err(InvalidKey::at(
                "bucket",
                format!("\"{}\": expected a bucket name", self.bucket),
            ));
        }
        let key = KeyTemplate::parse(&self.key).map_err(|e| InvalidKey::at("key", e))?;
        let sse = match self.sse.trim() {
            "" => None,
            "aws:kms" => Some(Sse::Kms {
                key_id: non_empty(&self.kms_key_id),
            }),
            "AES256" => Some(Sse::Aes256),
            other => {
                return Err(InvalidKey::at(
                    "sse",
                    format!("\"{other}\": expected \"aws:kms\" or \"AES256\""),
                ));
            }
        };
        if !matches!(sse, Some(Sse::Kms { .. })) && non_empty(&self.kms_key_id).is_some() {
            return Err(InvalidKey::at(
                "kms_key_id",
                "is set but sse is not \"aws:kms\"",
            ));
        }
        let storage_class = match non_empty(&self.storage_class) {
            None => None,
            Some(c) if StorageClass::values().contains(&c.as_str()) => {
                Some(StorageClass::from(c.as_str()))
            }
            Some(c) => {
                return Err(InvalidKey::at(
                    "storage_class",
                    format!(
                        "\"{c}\": expected one of {}",
                        StorageClass::values().join(", ")
                    ),
                ));
            }
        };
        if self.total_timeout.0.is_zero() {
            return Err(InvalidKey::at(
                "total_timeout",
                "is 0: expected a duration like \"10m\"",
            ));
        }
        let aws = AwsSettings {
            region: non_empty(&self.region),
            endpoint: non_empty(&self.endpoint),
            credentials_file: non_empty(&self.credentials_file)
                .map(|f| join(base_dir, Path::new(&f))),
            profile: non_empty(&self.profile),
            role_arn: non_empty(&self.role_arn),
            connect_timeout: self.connect_timeout.0,
            request_timeout: self.timeout.0,
        };
        aws.check()?;
        Ok(S3Settings {
            bucket: bucket.to_string(),
            key,
            force_path_style: self.force_path_style,
            sse,
            storage_class,
            total_timeout: self.total_timeout.0,
            aws,
        })
    }
}

impl S3Settings {
    /// One line for `config check`.
    pub fn summary(&self) -> String {
        let mut s = format!("s3 s3://{}/{}", self.bucket, self.key.raw());
        match &self.sse {
            Some(Sse::Kms { key_id: Some(k) }) => s.push_str(&format!(", sse aws:kms {k}")),
            Some(Sse::Kms { key_id: None }) => s.push_str(", sse aws:kms"),
            Some(Sse::Aes256) => s.push_str(", sse AES256"),
            None => {}
        }
        if let Some(c) = &self.storage_class {
            s.push_str(&format!(", {}", c.as_str()));
        }
        if self.force_path_style {
            s.push_str(", path style");
        }
        s.push_str(&format!(", {}", self.aws.describe()));
        s
    }
}

pub fn build(t: &TaggedTable, ctx: &SinkContext) -> Result<BuiltSink, InvalidKey> {
    let c: S3Config = t.parse()?;
    let settings = c.check(&ctx.base_dir)?;
    Ok(BuiltSink {
        summary: settings.summary(),
        sink: Arc::new(S3Sink::new(settings)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Seg;

    fn check(toml: &str) -> Result<S3Settings, InvalidKey> {
        let c: S3Config = toml::from_str(toml).map_err(|e| InvalidKey::at("?", e.to_string()))?;
        c.check(Path::new("/etc/mailchute"))
    }

    #[test]
    fn a_full_config() {
        let s = check(
            r#"bucket = "mail-archive"
region = "eu-west-1"
endpoint = ""
key = "{rcpt}/{date:%Y/%m/%d}/{id}.eml"
sse = "aws:kms"
kms_key_id = "arn:aws:kms:eu-west-1:1:key/x"
storage_class = "STANDARD_IA"
credentials_file = "aws/credentials"
profile = "mail"
role_arn = ""
"#,
        );
        // The credentials file does not exist here: named as such.
        assert_eq!(
            s.unwrap_err().key,
            vec![Seg::Key("credentials_file".into())]
        );
        let s = check(
            "bucket = \"b\"\nregion = \"eu-west-1\"\nsse = \"aws:kms\"\nkms_key_id = \"k1\"\n\
             storage_class = \"STANDARD_IA\"\nrole_arn = \"arn:aws:iam::1:role/r\"\n",
        )
        .unwrap();
        assert_eq!(
            s.summary(),
            "s3 s3://b/{date:%Y/%m/%d}/{id}.eml, sse aws:kms k1, STANDARD_IA, region eu-west-1, \
             credentials: default chain, assuming arn:aws:iam::1:role/r"
        );
        assert_eq!(s.aws.endpoint, None);
    }

    #[test]
    fn mistakes_name_their_key() {
        for (toml, key) in [
            ("bucket = \"\"", "bucket"),
            ("bucket = \"b\"\nkey = \"{user}\"", "key"),
            ("bucket = \"b\"\nkey = \"dateTimeFormat(2006/{id}\"", "key"),
            ("bucket = \"b\"\nkey = \"dateTimeFormat(xyz)/{id}\"", "key"),
            ("bucket = \"b\"\nsse = \"kms\"", "sse"),
            ("bucket = \"b\"\nkms_key_id = \"k\"", "kms_key_id"),
            ("bucket = \"b\"\nstorage_class = \"CHEAP\"", "storage_class"),
            ("bucket = \"b\"\nendpoint = \"localhost:9000\"", "endpoint"),
            ("bucket = \"b\"\nrole_arn = \"r\"", "role_arn"),
            ("bucket = \"b\"\ntimeout = \"0s\"", "timeout"),
        ] {
            let e = check(toml).unwrap_err();
            assert_eq!(e.key, vec![Seg::Key(key.into())], "{toml}: {e}");
        }
        assert!(check("bucket = \"b\"\nbukket = \"c\"").is_err());
    }
}
