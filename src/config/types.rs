//! The config file's shape (DESIGN.md "Config — the contract"). Extend, never rename.

use super::tagged::TaggedTable;
use super::units::{Duration, Size};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default, rename = "listener")]
    pub listeners: Vec<ListenerConfig>,
    #[serde(default, rename = "route")]
    pub routes: Vec<RouteConfig>,
    /// `[sink.NAME]`: typed by the sinks registry, not here (see [`TaggedTable`]).
    #[serde(default, rename = "sink")]
    pub sinks: BTreeMap<String, TaggedTable>,
    /// `[filter.NAME]`: typed by the filters registry.
    #[serde(default, rename = "filter")]
    pub filters: BTreeMap<String, TaggedTable>,
    #[serde(default)]
    pub http: Option<toml::Table>,
    #[serde(default)]
    pub queue: QueueConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Banner, Received header, Message-ID domain. Default: the system host name.
    #[serde(default)]
    pub hostname: Option<String>,
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub group: Option<String>,
    #[serde(default)]
    pub log_format: LogFormat,
    #[serde(default)]
    pub local_part_case: LocalPartCase,
    /// How writes are made durable before a success answer (see `spool::commit`).
    #[serde(default)]
    pub sync_method: SyncMethod,
    /// The domain `sendmail` gives addresses without one (`root` → `root@DOMAIN`), the
    /// sender's included. Default: `hostname`.
    #[serde(default)]
    pub default_domain: Option<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            hostname: None,
            data_dir: default_data_dir(),
            user: None,
            group: None,
            log_format: LogFormat::default(),
            local_part_case: LocalPartCase::default(),
            sync_method: SyncMethod::default(),
            default_domain: None,
        }
    }
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("./mailchute-data")
}

#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Json,
    Text,
}

/// `fsync`: each file and directory fsynced, concurrently with other sessions (the journal
/// commits them together); only our files are flushed. `syncfs`: shared `syncfs` rounds per
/// filesystem; fewer calls, but each also flushes whatever else is dirty on that filesystem.
#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SyncMethod {
    #[default]
    Fsync,
    Syncfs,
}

#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LocalPartCase {
    #[default]
    Sensitive,
    Insensitive,
}

/// Retry schedule of the background delivery queue.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueConfig {
    /// First retry delay; each later one doubles, capped at `backoff_max`.
    #[serde(default = "default_backoff_initial")]
    pub backoff_initial: Duration,
    #[serde(default = "default_backoff_max")]
    pub backoff_max: Duration,
    /// After this long in the queue a message goes to the dead-letter directory.
    #[serde(default = "default_max_lifetime")]
    pub max_lifetime: Duration,
    /// Messages delivered concurrently by the background queue.
    #[serde(default = "default_queue_workers")]
    pub workers: usize,
    /// Where bounces (DSNs) go, whatever their recipient (e.g. an smtp sink to a
    /// smarthost); empty = through the routes like any message.
    #[serde(default)]
    pub dsn_sinks: Vec<String>,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            backoff_initial: default_backoff_initial(),
            backoff_max: default_backoff_max(),
            max_lifetime: default_max_lifetime(),
            workers: default_queue_workers(),
            dsn_sinks: Vec::new(),
        }
    }
}

fn default_backoff_initial() -> Duration {
    Duration::from_secs(60)
}
fn default_backoff_max() -> Duration {
    Duration::from_secs(3600)
}
fn default_max_lifetime() -> Duration {
    Duration::from_secs(5 * 86400)
}
fn default_queue_workers() -> usize {
    16
}

#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    #[default]
    Smtp,
    Lmtp,
}

impl Protocol {
    /// The name as the config spells it, for `config check` and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Smtp => "smtp",
            Protocol::Lmtp => "lmtp",
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Sync,
    #[default]
    Queued,
    Proxy,
}

impl Mode {
    /// The name as the config spells it, for `config check` and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Sync => "sync",
            Mode::Queued => "queued",
            Mode::Proxy => "proxy",
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    #[default]
    None,
    Starttls,
    Implicit,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    #[serde(default)]
    pub name: Option<String>,
    /// "host:port" or "unix:/path".
    pub address: String,
    #[serde(default)]
    pub protocol: Protocol,
    #[serde(default)]
    pub mode: Mode,
    #[serde(default)]
    pub upstream: Option<String>,
    #[serde(default)]
    pub tls: TlsMode,
    #[serde(default)]
    pub require_tls: bool,
    #[serde(default)]
    pub cert: Option<PathBuf>,
    #[serde(default)]
    pub key: Option<PathBuf>,
    #[serde(default)]
    pub key_passphrase_env: Option<String>,
    #[serde(default)]
    pub auth: Vec<String>,
    #[serde(default)]
    pub users: Option<PathBuf>,
    /// CIDRs or single addresses.
    #[serde(default)]
    pub allow_ips: Vec<String>,
    #[serde(default = "default_trusted")]
    pub trusted: Vec<String>,
    #[serde(default)]
    pub proxy_protocol: bool,
    #[serde(default = "default_max_message_size")]
    pub max_message_size: Size,
    #[serde(default = "default_max_recipients")]
    pub max_recipients: usize,
    #[serde(default)]
    pub sender_allow: String,
    #[serde(default)]
    pub recipient_deny: String,
    #[serde(default)]
    pub socket_mode: Option<String>,
    #[serde(default)]
    pub socket_owner: Option<String>,
    #[serde(default)]
    pub socket_group: Option<String>,
    /// Explicitly allow a non-loopback listener without auth or allow-list (an open relay).
    #[serde(default)]
    pub open: bool,
    /// Longest accepted message line (bytes, CRLF excluded); 0 = unlimited.
    #[serde(default = "default_max_line_length")]
    pub max_line_length: Size,
    #[serde(default = "default_command_timeout")]
    pub command_timeout: Duration,
    #[serde(default = "default_data_timeout")]
    pub data_timeout: Duration,
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    #[serde(default = "default_max_connections_per_ip")]
    pub max_connections_per_ip: usize,
    /// Protocol errors (5xx for syntax/sequence) before we answer 421 and close.
    #[serde(default = "default_max_errors")]
    pub max_errors: usize,
    /// Send a DSN to the sender when a message dies in the queue. Default: on for TCP
    /// listeners that are not on loopback (mail from outside), off otherwise.
    #[serde(default)]
    pub dsn: Option<bool>,
    /// Offer AUTH PLAIN/LOGIN before TLS is active (they send the password itself).
    #[serde(default)]
    pub allow_plaintext_auth: bool,
    /// Every client must authenticate, even one in `allow_ips` (which then also limits who
    /// may connect at all).
    #[serde(default)]
    pub require_auth: bool,
    /// `[[listener.user]]`: users given in the config itself (beside or instead of `users`).
    #[serde(default, rename = "user")]
    pub inline_users: Vec<UserConfig>,
}

/// One SMTP AUTH user: `[[listener.user]]`, or `[[user]]` in a `users` file. Checked and
/// its secrets read where the listener is built (`smtpd::users`), since env vars and files
/// are read then (and again on SIGHUP).
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    pub name: String,
    /// A bcrypt hash (`$2y$...`), for PLAIN and LOGIN.
    #[serde(default)]
    pub bcrypt: Option<String>,
    #[serde(default)]
    pub bcrypt_env: Option<String>,
    #[serde(default)]
    pub bcrypt_file: Option<PathBuf>,
    /// The password itself: needed for CRAM-MD5; PLAIN/LOGIN check it when no bcrypt is given.
    #[serde(default)]
    pub password: Option<String>,
    #[serde(default)]
    pub password_env: Option<String>,
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Envelope senders this user may use (route-match syntax); empty = any.
    #[serde(default)]
    pub senders: Vec<String>,
}

/// Never prints a secret (config structs are logged in debug output).
impl std::fmt::Debug for UserConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserConfig")
            .field("name", &self.name)
            .field("bcrypt", &self.bcrypt.as_ref().map(|_| "****"))
            .field("bcrypt_env", &self.bcrypt_env)
            .field("bcrypt_file", &self.bcrypt_file)
            .field("password", &self.password.as_ref().map(|_| "****"))
            .field("password_env", &self.password_env)
            .field("password_file", &self.password_file)
            .field("senders", &self.senders)
            .finish()
    }
}

pub fn default_trusted() -> Vec<String> {
    vec!["127.0.0.0/8".into(), "::1/128".into()]
}
fn default_max_message_size() -> Size {
    Size(50 * 1024 * 1024)
}
fn default_max_recipients() -> usize {
    1000
}
fn default_max_line_length() -> Size {
    Size(1024 * 1024)
}
fn default_command_timeout() -> Duration {
    Duration::from_secs(300)
}
fn default_data_timeout() -> Duration {
    Duration::from_secs(600)
}
fn default_max_connections() -> usize {
    500
}
fn default_max_connections_per_ip() -> usize {
    50
}
fn default_max_errors() -> usize {
    10
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(rename = "match")]
    pub matches: Vec<String>,
    #[serde(default)]
    pub filters: Vec<String>,
    #[serde(default)]
    pub sinks: Vec<String>,
}
