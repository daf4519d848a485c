//! `[sink.NAME]` with `type = "imap"`: its keys, checks and summary.

use super::ImapSink;
use super::wire::{check_flag, mailbox_name};
use crate::config::paths::join;
use crate::config::{Duration, Size, TaggedTable};
use crate::sinks::{BuiltSink, InvalidKey, SinkContext};
use crate::smtp_client::tls;
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use serde::Deserialize;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ImapTls {
    /// TLS from the first byte (imaps, port 993).
    #[default]
    Implicit,
    /// Plain connect to port 143, then STARTTLS, required.
    Starttls,
    /// No TLS: only to a loopback host, unless `allow_plaintext = true`.
    None,
}

impl ImapTls {
    fn as_str(self) -> &'static str {
        match self {
            ImapTls::Implicit => "implicit",
            ImapTls::Starttls => "starttls",
            ImapTls::None => "none",
        }
    }
}

/// How to log in.
#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum AuthMode {
    /// AUTHENTICATE PLAIN when offered, else the LOGIN command, else CRAM-MD5 when offered.
    #[default]
    Auto,
    /// AUTHENTICATE PLAIN (RFC 4616), required.
    Plain,
    /// The LOGIN command.
    Login,
    /// AUTHENTICATE CRAM-MD5 (RFC 2195), required: the password never crosses the wire.
    CramMd5,
}

impl AuthMode {
    fn as_str(self) -> &'static str {
        match self {
            AuthMode::Auto => "auto",
            AuthMode::Plain => "plain",
            AuthMode::Login => "login",
            AuthMode::CramMd5 => "cram-md5",
        }
    }
}

// No Debug: it would print an inline password.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImapConfig {
    pub host: String,
    /// Default: 993 for `implicit`, 143 otherwise.
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default)]
    pub tls: ImapTls,
    pub username: String,
    /// Exactly one of these three. Empty strings count as unset (DESIGN.md writes `""`).
    #[serde(default)]
    pub password_env: String,
    #[serde(default)]
    pub password_file: String,
    /// Inline: readable by whoever reads the config; the summary says so.
    #[serde(default)]
    pub password: String,
    #[serde(default)]
    pub auth: AuthMode,
    #[serde(default = "inbox")]
    pub folder: String,
    /// CREATE (and SUBSCRIBE) the folder when the server says it does not exist.
    #[serde(default = "yes")]
    pub create_folder: bool,
    /// Flags APPEND sets, e.g. ["\\Seen"]. Default: none.
    #[serde(default)]
    pub flags: Vec<String>,
    /// Trust this CA (PEM) instead of the system roots.
    #[serde(default)]
    pub ca_file: String,
    /// Accept any certificate (logged as a warning).
    #[serde(default)]
    pub insecure: bool,
    /// `tls = "none"` to a host that is not loopback: the password goes in clear.
    #[serde(default)]
    pub allow_plaintext: bool,
    /// TCP connect, TLS handshake and greeting, each.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: Duration,
    /// One command's answer (APPEND's gets one more second per 64 KiB of the message).
    #[serde(default = "default_command_timeout")]
    pub command_timeout: Duration,
    /// Larger messages are refused (5.3.4) without connecting: the APPEND literal is read
    /// into memory whole. 0 = no limit of the sink's own.
    #[serde(default = "default_max_size")]
    pub max_message_size: Size,
    /// Connections kept open and reused between deliveries (the pool's size).
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
    /// Prepend `Return-Path:` and `Delivered-To:` (one APPEND per recipient); false = the
    /// message as it came, one APPEND for all recipients routed here.
    #[serde(default = "yes")]
    pub envelope_headers: bool,
}

fn inbox() -> String {
    "INBOX".into()
}
fn yes() -> bool {
    true
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_command_timeout() -> Duration {
    Duration::from_secs(60)
}
fn default_max_size() -> Size {
    Size(50 << 20)
}
fn default_max_connections() -> u32 {
    2
}

/// The most connections one sink may hold: an IMAP server limits connections per user and
/// IP (Dovecot: 10 by default), and a mail drop never needs more.
const MAX_CONNECTIONS: u32 = 10;

/// Where the password came from, for the summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasswordSource {
    Env,
    File,
    Inline,
}

/// What the sink needs, checked and read.
pub struct ImapSettings {
    pub host: String,
    pub port: u16,
    pub tls: ImapTls,
    /// `None` for `tls = "none"`.
    pub tls_config: Option<Arc<ClientConfig>>,
    pub server_name: ServerName<'static>,
    pub username: String,
    /// Read once when the sink is built: a missing secret fails `config check`.
    pub password: String,
    pub password_source: PasswordSource,
    pub auth: AuthMode,
    /// As configured, for messages.
    pub folder: String,
    /// As sent (modified UTF-7).
    pub folder_wire: String,
    pub create_folder: bool,
    pub flags: Vec<String>,
    pub ca_file: Option<PathBuf>,
    pub insecure: bool,
    pub connect_timeout: std::time::Duration,
    pub command_timeout: std::time::Duration,
    pub max_message_size: Option<u64>,
    pub max_connections: usize,
    pub envelope_headers: bool,
}

impl ImapSettings {
    /// `host:port`, as messages name the server.
    pub fn peer(&self) -> String {
        match self.host.parse::<IpAddr>() {
            Ok(IpAddr::V6(ip)) => format!("[{ip}]:{}", self.port),
            _ => format!("{}:{}", self.host, self.port),
        }
    }

    /// One line for `config check` (and `mailchute check`).
    pub fn summary(&self) -> String {
        let mut s = format!(
            "imap {} at {}, tls {}",
            self.username,
            self.peer(),
            self.tls.as_str()
        );
        if let Some(ca) = &self.ca_file {
            s.push_str(&format!(" (ca_file {})", ca.display()));
        }
        if self.insecure {
            s.push_str(" (insecure: any certificate accepted)");
        }
        s.push_str(&format!(", folder {}", self.folder));
        if self.create_folder {
            s.push_str(" (created if missing)");
        }
        if !self.flags.is_empty() {
            s.push_str(&format!(", flags {}", self.flags.join(" ")));
        }
        if self.auth != AuthMode::Auto {
            s.push_str(&format!(", auth {}", self.auth.as_str()));
        }
        if !self.envelope_headers {
            s.push_str(", no envelope headers");
        }
        if self.password_source == PasswordSource::Inline {
            s.push_str(", password inline in the config (prefer password_env or password_file)");
        }
        s
    }
}

fn non_empty(s: &str) -> Option<&str> {
    let t = s.trim();
    (!t.is_empty()).then_some(t)
}

/// Whether `host` is this machine for certain without a DNS lookup.
fn is_loopback_host(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

impl ImapConfig {
    pub fn check(&self, base_dir: &Path) -> Result<ImapSettings, InvalidKey> {
        let host = self.host.trim();
        if host.is_empty()
            || host.contains(|c: char| c.is_whitespace() || "/@:".contains(c))
                && host.parse::<IpAddr>().is_err()
        {
            return Err(InvalidKey::at(
                "host",
                format!(
                    "{:?}: expected a host name or IP address (the port goes in `port`)",
                    self.host
                ),
            ));
        }
        let port = match self.port {
            Some(0) => return Err(InvalidKey::at("port", "is 0: expected 1-65535")),
            Some(p) => p,
            None if self.tls == ImapTls::Implicit => 993,
            None => 143,
        };
        let username = self.username.trim();
        if username.is_empty() || username.contains(['\r', '\n', '\0']) {
            return Err(InvalidKey::at(
                "username",
                "is empty or holds a line break: expected the account's login name",
            ));
        }
        let (password, password_source) = self.read_password(base_dir)?;

        let ca_file = non_empty(&self.ca_file).map(|f| join(base_dir, Path::new(f)));
        let (tls_config, server_name) = match self.tls {
            ImapTls::None => {
                for (key, set) in [("ca_file", ca_file.is_some()), ("insecure", self.insecure)] {
                    if set {
                        return Err(InvalidKey::at(
                            key,
                            "is only used with tls = \"implicit\" or \"starttls\"",
                        ));
                    }
                }
                if !is_loopback_host(host) && !self.allow_plaintext {
                    return Err(InvalidKey::at(
                        "tls",
                        format!(
                            "\"none\" to {host}, which is not a loopback address, would send the password in clear: \
                             use \"implicit\" or \"starttls\", or set allow_plaintext = true"
                        ),
                    ));
                }
                (
                    None,
                    ServerName::try_from("localhost")
                        .map_err(|e| InvalidKey::at("host", e.to_string()))?,
                )
            }
            ImapTls::Implicit | ImapTls::Starttls => {
                if self.allow_plaintext {
                    return Err(InvalidKey::at(
                        "allow_plaintext",
                        "is only used with tls = \"none\"",
                    ));
                }
                if self.insecure && ca_file.is_some() {
                    return Err(InvalidKey::at(
                        "ca_file",
                        "is set with insecure = true, which accepts any certificate: set one of them",
                    ));
                }
                let config = if self.insecure {
                    tls::unverified()
                } else {
                    tls::load_roots(ca_file.as_deref()).and_then(tls::verifying)
                };
                let key = if ca_file.is_some() { "ca_file" } else { "tls" };
                let config = config.map_err(|m| InvalidKey::at(key, m))?;
                let name = tls::server_name(host).map_err(|m| InvalidKey::at("host", m))?;
                (Some(config), name)
            }
        };

        let folder = self.folder.trim();
        if folder.is_empty() || folder.contains(['\r', '\n', '\0', '*', '%']) {
            return Err(InvalidKey::at(
                "folder",
                format!(
                    "{:?}: expected a folder name (no line breaks, * or %), e.g. \"INBOX\" or \"Archive/2024\"",
                    self.folder
                ),
            ));
        }
        for (i, f) in self.flags.iter().enumerate() {
            check_flag(f).map_err(|m| InvalidKey {
                key: vec![
                    crate::config::Seg::Key("flags".into()),
                    crate::config::Seg::Index(i),
                ],
                message: m,
            })?;
        }
        for (key, d) in [
            ("connect_timeout", self.connect_timeout),
            ("command_timeout", self.command_timeout),
        ] {
            if d.0.is_zero() {
                return Err(InvalidKey::at(
                    key,
                    "is 0: expected a duration like \"30s\"",
                ));
            }
        }
        if self.max_connections == 0 || self.max_connections > MAX_CONNECTIONS {
            return Err(InvalidKey::at(
                "max_connections",
                format!(
                    "is {}: expected 1 to {MAX_CONNECTIONS} (IMAP servers limit connections per user)",
                    self.max_connections
                ),
            ));
        }
        Ok(ImapSettings {
            host: host.to_string(),
            port,
            tls: self.tls,
            tls_config,
            server_name,
            username: username.to_string(),
            password,
            password_source,
            auth: self.auth,
            folder: folder.to_string(),
            folder_wire: mailbox_name(folder),
            create_folder: self.create_folder,
            flags: self.flags.clone(),
            ca_file,
            insecure: self.insecure,
            connect_timeout: self.connect_timeout.0,
            command_timeout: self.command_timeout.0,
            max_message_size: self.max_message_size.limit(),
            max_connections: self.max_connections as usize,
            envelope_headers: self.envelope_headers,
        })
    }

    /// The one password source the config names, read now; errors name its key.
    fn read_password(&self, base_dir: &Path) -> Result<(String, PasswordSource), InvalidKey> {
        let env = non_empty(&self.password_env);
        let file = non_empty(&self.password_file);
        let inline = (!self.password.is_empty()).then_some(self.password.as_str());
        let set = [env.is_some(), file.is_some(), inline.is_some()];
        if set.iter().filter(|s| **s).count() > 1 {
            return Err(InvalidKey::at(
                "password",
                "set one of password_env, password_file and password",
            ));
        }
        let check = |key: &str, p: String| {
            if p.contains(['\r', '\n', '\0']) {
                Err(InvalidKey::at(
                    key,
                    "the password holds a line break or NUL, which IMAP cannot send",
                ))
            } else {
                Ok(p)
            }
        };
        if let Some(var) = env {
            let bad = |why: &str| InvalidKey::at("password_env", format!("{var}: {why}"));
            let p = match std::env::var(var) {
                Ok(p) if !p.is_empty() => p,
                Ok(_) => return Err(bad("the variable is empty")),
                Err(std::env::VarError::NotPresent) => return Err(bad("the variable is not set")),
                Err(std::env::VarError::NotUnicode(_)) => {
                    return Err(bad("the value is not UTF-8"));
                }
            };
            return Ok((check("password_env", p)?, PasswordSource::Env));
        }
        if let Some(file) = file {
            let path = join(base_dir, Path::new(file));
            let bad =
                |why: String| InvalidKey::at("password_file", format!("{}: {why}", path.display()));
            let text = std::fs::read_to_string(&path).map_err(|e| bad(e.to_string()))?;
            // The first line: a trailing newline (echo > file) is not part of the password.
            let first = text.lines().next().unwrap_or("");
            if first.is_empty() {
                return Err(bad("the first line is empty".into()));
            }
            return Ok((
                check("password_file", first.to_string())?,
                PasswordSource::File,
            ));
        }
        match inline {
            Some(p) => Ok((check("password", p.to_string())?, PasswordSource::Inline)),
            None => Err(InvalidKey::at(
                "username",
                "needs a password: set password_env or password_file (or password)",
            )),
        }
    }
}

pub fn build(t: &TaggedTable, _ctx: &SinkContext) -> Result<BuiltSink, InvalidKey> {
    let c: ImapConfig = t.parse()?;
    let settings = c.check(&_ctx.base_dir)?;
    let peer = settings.peer();
    if settings.insecure {
        tracing::warn!(
            server = %peer,
            "imap sink: insecure = true: any certificate is accepted, so anyone on the path can read the password and the mail"
        );
    }
    if settings.password_source == PasswordSource::Inline {
        tracing::warn!(
            server = %peer,
            "imap sink: the password is inline in the config: whoever can read the file has it (prefer password_env or password_file)"
        );
    }
    Ok(BuiltSink {
        summary: settings.summary(),
        sink: Arc::new(ImapSink::new(settings)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Seg;

    fn check(toml: &str) -> Result<ImapSettings, InvalidKey> {
        let c: ImapConfig = toml::from_str(toml).map_err(|e| InvalidKey::at("?", e.to_string()))?;
        c.check(Path::new("/nonexistent"))
    }

    const BASE: &str = "host = \"imap.example.net\"\nusername = \"me\"\npassword = \"pw\"\n";

    #[test]
    fn defaults_and_summary() {
        let s = check(BASE).unwrap();
        assert_eq!((s.port, s.tls), (993, ImapTls::Implicit));
        assert_eq!(s.folder_wire, "INBOX");
        assert!(s.create_folder && s.flags.is_empty());
        assert_eq!(s.max_message_size, Some(50 << 20));
        assert_eq!(s.max_connections, 2);
        assert_eq!(
            s.summary(),
            "imap me at imap.example.net:993, tls implicit, folder INBOX (created if missing), \
             password inline in the config (prefer password_env or password_file)"
        );
        let s = check(&format!(
            "{BASE}tls = \"starttls\"\nfolder = \"Entwürfe\"\nflags = [\"\\\\Seen\", \"$Label1\"]\n\
             create_folder = false\nauth = \"cram-md5\"\n"
        ))
        .unwrap();
        assert_eq!(s.port, 143);
        assert_eq!(s.folder_wire, "Entw&APw-rfe");
        assert_eq!(
            s.summary(),
            "imap me at imap.example.net:143, tls starttls, folder Entwürfe, flags \\Seen $Label1, \
             auth cram-md5, password inline in the config (prefer password_env or password_file)"
        );
        let s = check(
            "host = \"127.0.0.1\"\nusername = \"me\"\npassword = \"pw\"\ntls = \"none\"\nport = 1143\n",
        )
        .unwrap();
        assert!(s.tls_config.is_none());
        assert_eq!(s.peer(), "127.0.0.1:1143");
    }

    #[test]
    fn mistakes_name_their_key() {
        for (toml, key) in [
            ("host = \"\"\nusername = \"me\"\npassword = \"x\"", "host"),
            (
                "host = \"h:993\"\nusername = \"me\"\npassword = \"x\"",
                "host",
            ),
            (
                "host = \"h\"\nusername = \"\"\npassword = \"x\"",
                "username",
            ),
            ("host = \"h\"\nusername = \"me\"", "username"),
            (
                "host = \"h\"\nusername = \"me\"\npassword = \"x\"\npassword_env = \"V\"",
                "password",
            ),
            (
                "host = \"h\"\nusername = \"me\"\npassword_env = \"MAILCHUTE_TEST_SURELY_UNSET\"",
                "password_env",
            ),
            (
                "host = \"h\"\nusername = \"me\"\npassword_file = \"nope\"",
                "password_file",
            ),
            (&format!("{BASE}port = 0"), "port"),
            (&format!("{BASE}tls = \"none\""), "tls"),
            (
                &format!("{BASE}tls = \"none\"\nallow_plaintext = true\ninsecure = true"),
                "insecure",
            ),
            (&format!("{BASE}allow_plaintext = true"), "allow_plaintext"),
            (
                &format!("{BASE}insecure = true\nca_file = \"/x.pem\""),
                "ca_file",
            ),
            (
                &format!("{BASE}ca_file = \"/nonexistent/ca.pem\""),
                "ca_file",
            ),
            (&format!("{BASE}folder = \"\""), "folder"),
            (&format!("{BASE}folder = \"a*\""), "folder"),
            (
                &format!("{BASE}command_timeout = \"0s\""),
                "command_timeout",
            ),
            (&format!("{BASE}max_connections = 0"), "max_connections"),
            (&format!("{BASE}max_connections = 11"), "max_connections"),
        ] {
            let e = check(toml)
                .err()
                .unwrap_or_else(|| panic!("accepted: {toml}"));
            assert_eq!(e.key, vec![Seg::Key(key.into())], "{toml}: {e}");
        }
        let e = check(&format!("{BASE}flags = [\"\\\\Seen\", \"\\\\Recent\"]"))
            .err()
            .unwrap();
        assert_eq!(e.key, vec![Seg::Key("flags".into()), Seg::Index(1)]);
        // tls = "none" to a loopback host, or with the explicit flag, is fine.
        assert!(
            check("host = \"localhost\"\nusername = \"u\"\npassword = \"p\"\ntls = \"none\"")
                .is_ok()
        );
        assert!(check(&format!("{BASE}tls = \"none\"\nallow_plaintext = true")).is_ok());
        assert!(check(&format!("{BASE}bogus = 1")).is_err());
    }

    #[test]
    fn password_file_first_line() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pw"), "s3cret\nignored\n").unwrap();
        let c: ImapConfig = toml::from_str(
            "host = \"h\"\nusername = \"me\"\npassword_file = \"pw\"\npassword_env = \"\"\nca_file = \"\"\n",
        )
        .unwrap();
        let s = c.check(dir.path()).unwrap();
        assert_eq!(s.password, "s3cret");
        assert_eq!(s.password_source, PasswordSource::File);
        assert!(!s.summary().contains("s3cret"));
    }
}
