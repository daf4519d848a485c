//! `[sink.NAME]` with `type = "ses"`: its keys, checks and summary.

use super::SesSink;
use super::headers::{check_configuration_set, check_tag_part};
use crate::aws::AwsSettings;
use crate::config::paths::join;
use crate::config::{Duration, Size, TaggedTable};
use crate::sinks::{BuiltSink, InvalidKey, SinkContext};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

/// SES's limit for a raw message (SendEmail with `Content.Raw`), and our default.
pub const SES_MAX_MESSAGE_SIZE: u64 = 40 * 1024 * 1024;

/// The send rate when the config gives none and GetAccount does not answer: SES's rate for
/// a new production account.
pub const DEFAULT_SEND_RATE: f64 = 14.0;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SesConfig {
    #[serde(default)]
    pub region: String,
    /// A stand-in for SES (moto, LocalStack); empty: AWS, or `AWS_ENDPOINT_URL_SESV2` /
    /// `AWS_ENDPOINT_URL` as the SDK reads them.
    #[serde(default)]
    pub endpoint: String,
    #[serde(default)]
    pub credentials_file: String,
    #[serde(default)]
    pub profile: String,
    #[serde(default)]
    pub role_arn: String,
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: Duration,
    /// One request attempt (a SendEmail).
    #[serde(default = "default_timeout")]
    pub timeout: Duration,
    /// One delivery: every send of it (50 recipients each), waits for the rate and the
    /// SDK's retries included.
    #[serde(default = "default_total_timeout")]
    pub total_timeout: Duration,
    /// Default configuration set; a message's `X-SES-CONFIGURATION-SET` overrides it.
    #[serde(default)]
    pub configuration_set: String,
    /// Message tags on every send; `X-SES-MESSAGE-TAGS` adds to them (and wins per name).
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// Sending authorisation for the sender (SES v2's `FromEmailAddressIdentityArn`);
    /// `source_arn` is the same field under SES v1's name.
    #[serde(default)]
    pub from_arn: String,
    #[serde(default)]
    pub source_arn: String,
    /// Sending authorisation for the feedback (bounce) address
    /// (`FeedbackForwardingEmailAddressIdentityArn`).
    #[serde(default)]
    pub return_path_arn: String,
    /// Messages (recipients, as SES counts them) per second; default: the account's
    /// `MaxSendRate`, else [`DEFAULT_SEND_RATE`].
    #[serde(default)]
    pub max_send_rate: Option<f64>,
    /// How many may go at once after a quiet spell; default: one second's worth.
    #[serde(default)]
    pub burst: Option<f64>,
    #[serde(default = "default_max_message_size")]
    pub max_message_size: Size,
    /// Also print aws-smtp-relay's own log line for each send: a sent message on stdout,
    /// a failed one on stderr, as aws-smtp-relay documents, for what parses its output.
    #[serde(default)]
    pub relay_log: bool,
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
fn default_max_message_size() -> Size {
    Size(SES_MAX_MESSAGE_SIZE)
}

/// What the sink needs, checked. Empty strings in the config are `None`.
#[derive(Debug, Clone)]
pub struct SesSettings {
    pub aws: AwsSettings,
    pub configuration_set: Option<String>,
    pub tags: Vec<(String, String)>,
    /// `from_arn` or `source_arn` (they must agree when both are given).
    pub from_arn: Option<String>,
    pub return_path_arn: Option<String>,
    /// `None`: learn it from GetAccount.
    pub max_send_rate: Option<f64>,
    pub burst: Option<f64>,
    pub max_message_size: u64,
    pub total_timeout: std::time::Duration,
    pub relay_log: bool,
}

fn non_empty(s: &str) -> Option<String> {
    (!s.trim().is_empty()).then(|| s.trim().to_string())
}

/// An SES identity ARN, `arn:aws:ses:REGION:ACCOUNT:identity/NAME`.
fn check_identity_arn(key: &str, arn: &str) -> Result<(), InvalidKey> {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    if parts.len() == 6
        && parts[0] == "arn"
        && parts[2] == "ses"
        && parts[5].starts_with("identity/")
    {
        return Ok(());
    }
    Err(InvalidKey::at(
        key,
        format!(
            "\"{arn}\": expected an SES identity ARN, arn:aws:ses:REGION:ACCOUNT:identity/NAME"
        ),
    ))
}

impl SesConfig {
    pub fn check(&self, base_dir: &Path) -> Result<SesSettings, InvalidKey> {
        let configuration_set = non_empty(&self.configuration_set);
        if let Some(c) = &configuration_set {
            check_configuration_set(c).map_err(|e| InvalidKey::at("configuration_set", e))?;
        }
        let mut tags = Vec::new();
        for (name, value) in &self.tags {
            let at = || {
                vec![
                    crate::config::Seg::Key("tags".into()),
                    crate::config::Seg::Key(name.clone()),
                ]
            };
            check_tag_part("name", name).map_err(|message| InvalidKey { key: at(), message })?;
            check_tag_part("value", value).map_err(|message| InvalidKey { key: at(), message })?;
            tags.push((name.clone(), value.clone()));
        }
        for (key, arn) in [
            ("from_arn", &self.from_arn),
            ("source_arn", &self.source_arn),
            ("return_path_arn", &self.return_path_arn),
        ] {
            if let Some(arn) = non_empty(arn) {
                check_identity_arn(key, &arn)?;
            }
        }
        let from_arn = match (non_empty(&self.from_arn), non_empty(&self.source_arn)) {
            (Some(f), Some(s)) if f != s => {
                return Err(InvalidKey::at(
                    "source_arn",
                    format!(
                        "\"{s}\" differs from from_arn \"{f}\": SES v2 has one sender \
                         authorisation (FromEmailAddressIdentityArn); set one of them"
                    ),
                ));
            }
            (f, s) => f.or(s),
        };
        for (key, v) in [("max_send_rate", self.max_send_rate), ("burst", self.burst)] {
            if let Some(v) = v
                && !(v.is_finite() && v > 0.0)
            {
                return Err(InvalidKey::at(
                    key,
                    format!("{v}: expected a number above 0"),
                ));
            }
        }
        if let Some(b) = self.burst
            && b < 1.0
        {
            return Err(InvalidKey::at(
                "burst",
                format!("{b}: expected at least 1 (one message at a time)"),
            ));
        }
        let max = self.max_message_size.0;
        if max == 0 || max > SES_MAX_MESSAGE_SIZE {
            return Err(InvalidKey::at(
                "max_message_size",
                format!(
                    "{}: expected a size up to \"40M\", SES's limit for a raw message",
                    self.max_message_size
                ),
            ));
        }
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
        Ok(SesSettings {
            aws,
            configuration_set,
            tags,
            from_arn,
            return_path_arn: non_empty(&self.return_path_arn),
            max_send_rate: self.max_send_rate,
            burst: self.burst,
            max_message_size: max,
            total_timeout: self.total_timeout.0,
            relay_log: self.relay_log,
        })
    }
}

impl SesSettings {
    /// One line for `config check`.
    pub fn summary(&self) -> String {
        let mut s = String::from("ses");
        if let Some(c) = &self.configuration_set {
            s.push_str(&format!(", configuration set {c}"));
        }
        if !self.tags.is_empty() {
            let tags: Vec<String> = self.tags.iter().map(|(n, v)| format!("{n}={v}")).collect();
            s.push_str(&format!(", tags {}", tags.join(",")));
        }
        if let Some(a) = &self.from_arn {
            s.push_str(&format!(", sender authorised by {a}"));
        }
        if let Some(a) = &self.return_path_arn {
            s.push_str(&format!(", return path authorised by {a}"));
        }
        match self.max_send_rate {
            Some(r) => s.push_str(&format!(", {r}/s")),
            None => s.push_str(&format!(
                ", the account's send rate (else {DEFAULT_SEND_RATE}/s)"
            )),
        }
        if let Some(b) = self.burst {
            s.push_str(&format!(" burst {b}"));
        }
        s.push_str(&format!(
            ", max {}, {}",
            Size(self.max_message_size),
            self.aws.describe()
        ));
        s
    }
}

pub fn build(t: &TaggedTable, ctx: &SinkContext) -> Result<BuiltSink, InvalidKey> {
    let c: SesConfig = t.parse()?;
    let settings = c.check(&ctx.base_dir)?;
    Ok(BuiltSink {
        summary: settings.summary(),
        sink: Arc::new(SesSink::new(settings)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Seg;

    fn check(toml: &str) -> Result<SesSettings, InvalidKey> {
        let c: SesConfig = toml::from_str(toml).map_err(|e| InvalidKey::at("?", e.to_string()))?;
        c.check(Path::new("/etc/mailchute"))
    }

    #[test]
    fn the_defaults() {
        let s = check("").unwrap();
        assert_eq!(s.max_message_size, SES_MAX_MESSAGE_SIZE);
        assert_eq!(s.max_send_rate, None);
        assert_eq!(s.aws.endpoint, None);
        assert_eq!(
            s.summary(),
            "ses, the account's send rate (else 14/s), max 40M, credentials: default chain"
        );
    }

    #[test]
    fn a_full_config() {
        let s = check(
            r#"region = "eu-west-1"
endpoint = "http://127.0.0.1:5000"
configuration_set = "relay-1"
tags = { team = "mail", env = "prod" }
source_arn = "arn:aws:ses:eu-west-1:111122223333:identity/example.org"
return_path_arn = "arn:aws:ses:eu-west-1:111122223333:identity/bounce.example.org"
max_send_rate = 14
burst = 20
max_message_size = "10M"
role_arn = "arn:aws:iam::1:role/r"
timeout = "30s"
"#,
        )
        .unwrap();
        assert_eq!(
            s.from_arn.as_deref(),
            Some("arn:aws:ses:eu-west-1:111122223333:identity/example.org")
        );
        assert_eq!(s.max_send_rate, Some(14.0), "an integer is a rate too");
        assert_eq!(
            s.summary(),
            "ses, configuration set relay-1, tags env=prod,team=mail, sender authorised by \
             arn:aws:ses:eu-west-1:111122223333:identity/example.org, return path authorised by \
             arn:aws:ses:eu-west-1:111122223333:identity/bounce.example.org, 14/s burst 20, \
             max 10M, region eu-west-1, endpoint http://127.0.0.1:5000, credentials: default \
             chain, assuming arn:aws:iam::1:role/r"
        );
        let s = check("max_send_rate = 0.5").unwrap();
        assert_eq!(s.max_send_rate, Some(0.5));
        // from_arn and source_arn may both be given when they agree.
        let a = "arn:aws:ses:us-east-1:1:identity/x.org";
        let s = check(&format!("from_arn = \"{a}\"\nsource_arn = \"{a}\"")).unwrap();
        assert_eq!(s.from_arn.as_deref(), Some(a));
    }

    #[test]
    fn mistakes_name_their_key() {
        for (toml, key) in [
            ("configuration_set = \"a b\"", "configuration_set"),
            ("from_arn = \"arn:aws:iam::1:role/r\"", "from_arn"),
            ("source_arn = \"example.org\"", "source_arn"),
            ("return_path_arn = \"arn:aws:ses:x\"", "return_path_arn"),
            (
                "from_arn = \"arn:aws:ses:r:1:identity/a\"\nsource_arn = \"arn:aws:ses:r:1:identity/b\"",
                "source_arn",
            ),
            ("max_send_rate = 0", "max_send_rate"),
            ("max_send_rate = -3.0", "max_send_rate"),
            ("max_send_rate = nan", "max_send_rate"),
            ("burst = 0.5", "burst"),
            ("max_message_size = \"41M\"", "max_message_size"),
            ("max_message_size = 0", "max_message_size"),
            ("total_timeout = \"0s\"", "total_timeout"),
            ("endpoint = \"localhost:5000\"", "endpoint"),
            ("credentials_file = \"no-such-file\"", "credentials_file"),
        ] {
            let e = check(toml).unwrap_err();
            assert_eq!(e.key, vec![Seg::Key(key.into())], "{toml}: {e}");
        }
        let e = check("tags = { \"a.b\" = \"c\" }").unwrap_err();
        assert_eq!(e.key, vec![Seg::Key("tags".into()), Seg::Key("a.b".into())]);
        assert!(e.message.contains("'.' is not allowed"), "{e}");
        assert!(check("tags = { a = \"\" }").is_err());
        assert!(check("configuration-set = \"x\"").is_err(), "unknown key");
    }
}
