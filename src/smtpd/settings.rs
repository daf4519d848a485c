//! A listener's settings in the form the connection code uses them.

use crate::config::net::{IpList, is_loopback_listener};
use crate::config::{ListenerConfig, Mode, Protocol, TlsMode};
use regex::Regex;
use std::time::Duration;
use tokio_rustls::TlsAcceptor;

pub struct ListenerSettings {
    pub name: String,
    pub protocol: Protocol,
    pub mode: Mode,
    pub tls: TlsMode,
    /// Built from `cert`/`key` when `tls` is not `none`; rebuilt on SIGHUP.
    pub acceptor: Option<TlsAcceptor>,
    pub require_tls: bool,
    /// May send XFORWARD / PROXY headers.
    pub trusted: IpList,
    /// Empty = anyone may connect.
    pub allow_ips: IpList,
    pub proxy_protocol: bool,
    pub max_message_size: u64,
    pub max_recipients: usize,
    pub max_line_length: u64,
    pub max_errors: usize,
    pub command_timeout: Duration,
    pub data_timeout: Duration,
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    pub sender_allow: Option<Regex>,
    pub recipient_deny: Option<Regex>,
    pub dsn: bool,
}

#[derive(Debug, thiserror::Error)]
#[error("listener {name}: {message}")]
pub struct SettingsError {
    pub name: String,
    pub message: String,
}

/// The name a listener goes by in logs and envelopes: its `name`, else its address (as
/// the config loader fills it in).
pub fn listener_name(l: &ListenerConfig) -> String {
    l.name.clone().unwrap_or_else(|| l.address.clone())
}

impl ListenerSettings {
    pub fn build(l: &ListenerConfig) -> Result<ListenerSettings, SettingsError> {
        let name = listener_name(l);
        let err = |message: String| SettingsError {
            name: name.clone(),
            message,
        };
        let acceptor = match (l.tls, &l.cert, &l.key) {
            (TlsMode::None, _, _) => None,
            (_, Some(cert), Some(key)) => {
                let passphrase_env = l.key_passphrase_env.as_deref();
                Some(
                    super::tls::acceptor(cert, key, passphrase_env)
                        .map_err(|e| err(e.to_string()))?,
                )
            }
            _ => return Err(err("tls needs both cert and key".into())),
        };
        let regex = |what: &str, s: &str| -> Result<Option<Regex>, SettingsError> {
            if s.is_empty() {
                return Ok(None);
            }
            Regex::new(s)
                .map(Some)
                .map_err(|e| err(format!("{what}: {e}")))
        };
        Ok(ListenerSettings {
            protocol: l.protocol,
            mode: l.mode,
            tls: l.tls,
            acceptor,
            require_tls: l.require_tls,
            trusted: IpList::parse(&l.trusted).map_err(|e| err(format!("trusted: {e}")))?,
            allow_ips: IpList::parse(&l.allow_ips).map_err(|e| err(format!("allow_ips: {e}")))?,
            proxy_protocol: l.proxy_protocol,
            max_message_size: l.max_message_size.0,
            max_recipients: l.max_recipients,
            max_line_length: l.max_line_length.0,
            max_errors: l.max_errors,
            command_timeout: l.command_timeout.0,
            data_timeout: l.data_timeout.0,
            max_connections: l.max_connections,
            max_connections_per_ip: l.max_connections_per_ip,
            sender_allow: regex("sender_allow", &l.sender_allow)?,
            recipient_deny: regex("recipient_deny", &l.recipient_deny)?,
            dsn: l.dsn.unwrap_or_else(|| !is_loopback_listener(l)),
            name,
        })
    }
}
