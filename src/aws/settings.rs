//! Region, endpoint, credentials and timeouts of one AWS client, from a sink's config.

use crate::config::InvalidKey;
use aws_config::profile::ProfileFileCredentialsProvider;
use aws_config::sts::AssumeRoleProvider;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, ConfigLoader, Region, SdkConfig};
use aws_runtime::env_config::file::{EnvConfigFileKind, EnvConfigFiles};
use std::path::PathBuf;
use std::time::Duration;

/// The session name STS records for our assumed-role sessions (CloudTrail shows it).
const SESSION_NAME: &str = "mailchute";

/// The AWS part of a sink's config, checked. Empty strings in the config are `None`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsSettings {
    /// `None`: the SDK's chain (`AWS_REGION`, the profile, instance metadata).
    pub region: Option<String>,
    /// Any S3-compatible (or SES stand-in) server. `None`: AWS itself, or the endpoint the
    /// SDK reads from `AWS_ENDPOINT_URL_<SERVICE>` / `AWS_ENDPOINT_URL`.
    pub endpoint: Option<String>,
    /// A shared-credentials file to take keys from instead of the default chain.
    pub credentials_file: Option<PathBuf>,
    /// The profile in `credentials_file`, or in the default files when there is none.
    pub profile: Option<String>,
    /// A role to assume (STS AssumeRole) with the credentials found above.
    pub role_arn: Option<String>,
    /// How long establishing a connection may take.
    pub connect_timeout: Duration,
    /// How long one request attempt may take (the SDK retries within the operation).
    pub request_timeout: Duration,
}

impl AwsSettings {
    /// Checks what can be checked without I/O beyond reading local files; the keys named in
    /// errors are the config's.
    pub fn check(&self) -> Result<(), InvalidKey> {
        if let Some(e) = &self.endpoint
            && !(e.starts_with("http://") || e.starts_with("https://"))
        {
            return Err(InvalidKey::at(
                "endpoint",
                format!("\"{e}\": expected a URL starting http:// or https://"),
            ));
        }
        if let Some(r) = &self.region
            && (r.contains(char::is_whitespace) || r.contains('/'))
        {
            return Err(InvalidKey::at(
                "region",
                format!("\"{r}\": expected a region name such as \"eu-west-1\""),
            ));
        }
        if let Some(f) = &self.credentials_file
            && let Err(e) = std::fs::metadata(f)
        {
            return Err(InvalidKey::at(
                "credentials_file",
                format!("{}: {e}", f.display()),
            ));
        }
        if let Some(arn) = &self.role_arn
            && !(arn.starts_with("arn:") && arn.contains(":role/"))
        {
            return Err(InvalidKey::at(
                "role_arn",
                format!("\"{arn}\": expected a role ARN, arn:aws:iam::ACCOUNT:role/NAME"),
            ));
        }
        for (key, d) in [
            ("connect_timeout", self.connect_timeout),
            ("timeout", self.request_timeout),
        ] {
            if d.is_zero() {
                return Err(InvalidKey::at(
                    key,
                    "is 0: expected a duration like \"30s\"",
                ));
            }
        }
        Ok(())
    }

    /// Where and as whom, in a few words for `config check`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(r) = &self.region {
            parts.push(format!("region {r}"));
        }
        if let Some(e) = &self.endpoint {
            parts.push(format!("endpoint {e}"));
        }
        let creds = match (&self.credentials_file, &self.profile) {
            (Some(f), Some(p)) => format!("credentials profile {p} of {}", f.display()),
            (Some(f), None) => format!("credentials of {}", f.display()),
            (None, Some(p)) => format!("credentials: default chain, profile {p}"),
            (None, None) => "credentials: default chain".to_string(),
        };
        parts.push(creds);
        if let Some(arn) = &self.role_arn {
            parts.push(format!("assuming {arn}"));
        }
        parts.join(", ")
    }

    /// The SDK configuration these settings describe. Connects nowhere itself; it may
    /// look up a region in the environment and profile files (and instance metadata when
    /// no region is given anywhere), so it belongs to the first delivery, not to start-up.
    pub async fn load(&self) -> SdkConfig {
        let Some(arn) = &self.role_arn else {
            return self.loader().load().await;
        };
        // The role is assumed with what the chain (or the file) finds; its temporary keys
        // are refreshed by the provider before they expire.
        let base = self.loader().load().await;
        let role = AssumeRoleProvider::builder(arn.clone())
            .session_name(SESSION_NAME)
            .configure(&base)
            .build()
            .await;
        self.loader().credentials_provider(role).load().await
    }

    fn loader(&self) -> ConfigLoader {
        let mut loader = aws_config::defaults(BehaviorVersion::latest()).timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(self.connect_timeout)
                .operation_attempt_timeout(self.request_timeout)
                .build(),
        );
        if let Some(r) = &self.region {
            loader = loader.region(Region::new(r.clone()));
        }
        if let Some(e) = &self.endpoint {
            loader = loader.endpoint_url(e.clone());
        }
        match (&self.credentials_file, &self.profile) {
            // An explicit file is the only source: keys left in the environment must not
            // silently win over what the config names.
            (Some(file), profile) => {
                let files = EnvConfigFiles::builder()
                    .with_file(EnvConfigFileKind::Credentials, file)
                    .include_default_config_file(false)
                    .build();
                let mut provider = ProfileFileCredentialsProvider::builder().profile_files(files);
                if let Some(p) = profile {
                    provider = provider.profile_name(p);
                }
                loader = loader.credentials_provider(provider.build());
            }
            (None, Some(p)) => loader = loader.profile_name(p),
            (None, None) => {}
        }
        loader
    }
}
