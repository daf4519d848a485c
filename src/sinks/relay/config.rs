//! `[sink.NAME]` with `type = "smtp"` or `"lmtp"`: the relay's keys, checks and summary.

use super::{Dialect, RelaySink};
use crate::config::paths::{join, join_unix_address};
use crate::config::{Duration, TaggedTable};
use crate::sinks::{BuiltSink, InvalidKey, SinkContext};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RelayTls {
    /// Use STARTTLS when the upstream offers it, plain text otherwise.
    #[default]
    Opportunistic,
    /// Refuse to send unless STARTTLS succeeds.
    Starttls,
    Implicit,
    None,
}

impl RelayTls {
    /// How `config check` names the mode.
    fn describe(self) -> &'static str {
        match self {
            RelayTls::Opportunistic => "opportunistic",
            RelayTls::Starttls => "starttls (required)",
            RelayTls::Implicit => "implicit",
            RelayTls::None => "none",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelayConfig {
    /// "host:port" or "unix:/path".
    pub address: String,
    #[serde(default)]
    pub tls: RelayTls,
    /// TLS server name to verify; default: the host part of `address`.
    #[serde(default)]
    pub tls_name: Option<String>,
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Accept any certificate (logged as a warning).
    #[serde(default)]
    pub insecure: bool,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password_env: Option<String>,
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Name sent in EHLO/LHLO; default: server hostname.
    #[serde(default)]
    pub helo: Option<String>,
    /// Pass the client facts on with XFORWARD when the upstream advertises it.
    #[serde(default = "yes")]
    pub xforward: bool,
    /// Limit on each step of a delivery: connecting, the TLS handshake, one whole reply
    /// (not each read of it: an upstream that trickles bytes must not hold a delivery), one
    /// write of the content. The reply to the end of the message gets 1 s per 64 KiB more.
    #[serde(default = "default_timeout")]
    pub timeout: Duration,
}

fn yes() -> bool {
    true
}

fn default_timeout() -> Duration {
    Duration::from_secs(120)
}

/// `type = "smtp"`.
pub fn build_smtp(t: &TaggedTable, ctx: &SinkContext) -> Result<BuiltSink, InvalidKey> {
    build(t, Dialect::Smtp, ctx)
}

/// `type = "lmtp"`.
pub fn build_lmtp(t: &TaggedTable, ctx: &SinkContext) -> Result<BuiltSink, InvalidKey> {
    build(t, Dialect::Lmtp, ctx)
}

fn build(t: &TaggedTable, dialect: Dialect, ctx: &SinkContext) -> Result<BuiltSink, InvalidKey> {
    let mut c: RelayConfig = t.parse()?;
    check(&c)?;
    join_unix_address(&ctx.base_dir, &mut c.address);
    for p in [&mut c.ca_file, &mut c.password_file].into_iter().flatten() {
        *p = join(&ctx.base_dir, p);
    }
    let what = match dialect {
        Dialect::Smtp => "smtp relay to",
        Dialect::Lmtp => "lmtp to",
    };
    Ok(BuiltSink {
        summary: format!("{what} {}, tls {}", c.address, c.tls.describe()),
        sink: Arc::new(RelaySink::new(&c, dialect, ctx)?),
    })
}

/// What the keys must say before anything is read. Runs before relative paths are
/// resolved: joined with the config's directory, `""` would silently become that directory.
fn check(c: &RelayConfig) -> Result<(), InvalidKey> {
    for (k, p) in [("ca_file", &c.ca_file), ("password_file", &c.password_file)] {
        if p.as_ref().is_some_and(|p| p.as_os_str().is_empty()) {
            return Err(InvalidKey::at(k, "is empty: expected a file path"));
        }
    }
    check_remote_address(&c.address).map_err(|m| InvalidKey::at("address", m))?;
    if c.password_env.is_some() && c.password_file.is_some() {
        return Err(InvalidKey::at(
            "password_file",
            "set password_env or password_file, not both",
        ));
    }
    let has_password = c.password_env.is_some() || c.password_file.is_some();
    if c.username.is_some() && !has_password {
        return Err(InvalidKey::at(
            "username",
            "needs a password: set password_env or password_file",
        ));
    }
    if c.username.is_none() && has_password {
        return Err(InvalidKey {
            key: Vec::new(),
            message: "a password is set but no username".into(),
        });
    }
    if c.timeout.0.is_zero() {
        return Err(InvalidKey::at(
            "timeout",
            "must be more than 0, e.g. \"2m\"",
        ));
    }
    Ok(())
}

/// `host:port` (a name is fine: this is where we connect) or `unix:/path`.
fn check_remote_address(s: &str) -> Result<(), String> {
    const EXPECTED: &str = "expected \"host:port\" (e.g. \"127.0.0.1:10026\", \"mail.example.org:25\") or \"unix:/path\"";
    if let Some(path) = s.strip_prefix("unix:") {
        return if path.is_empty() {
            Err(format!("{s:?}: the socket path is empty; {EXPECTED}"))
        } else {
            Ok(())
        };
    }
    if s.parse::<SocketAddr>().is_ok() {
        return Ok(());
    }
    match s.rsplit_once(':') {
        Some((host, port))
            if !host.is_empty()
                && !host.contains([':', '[', ']', '/', '@'])
                && !host.chars().any(char::is_whitespace)
                && port.parse::<u16>().is_ok_and(|p| p > 0) =>
        {
            Ok(())
        }
        _ => Err(format!("{s:?}: {EXPECTED}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_addresses() {
        for ok in [
            "127.0.0.1:25",
            "[::1]:25",
            "mail.example.org:25",
            "unix:/run/x",
        ] {
            assert!(check_remote_address(ok).is_ok(), "{ok}");
        }
        for bad in ["127.0.0.1", "mail:0", ":25", "unix:", "a b:25", "x:y"] {
            assert!(check_remote_address(bad).is_err(), "{bad}");
        }
    }
}
