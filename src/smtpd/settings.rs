//! A listener's settings in the form the connection code uses them.

use super::users::Users;
use crate::config::net::{IpList, is_loopback_listener};
use crate::config::{ListenerConfig, Mode, Protocol, TlsMode};
use crate::proto::Mechanism;
use regex::Regex;
use std::net::IpAddr;
use std::sync::Arc;
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
    /// SMTP AUTH, when `auth` is not empty.
    pub auth: Option<AuthSettings>,
}

/// A listener's SMTP AUTH: what it offers and whom it checks against.
pub struct AuthSettings {
    /// In the order `auth` lists them.
    pub mechanisms: Vec<Mechanism>,
    pub allow_plaintext: bool,
    /// Even a client in `allow_ips` must authenticate.
    pub require_auth: bool,
    pub users: Arc<Users>,
}

/// Failed AUTH exchanges in one session before it is closed with 421.
pub const MAX_AUTH_FAILURES: usize = 3;

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
        // `nocase`: addresses' domains (and, everywhere in practice, local parts) are
        // case-insensitive, so a deny list must not be passed by writing `BAD@` for `bad@`
        // (`(?-i)` in the regex turns it off).
        let regex = |what: &str, s: &str, nocase: bool| -> Result<Option<Regex>, SettingsError> {
            if s.is_empty() {
                return Ok(None);
            }
            regex::RegexBuilder::new(s)
                .case_insensitive(nocase)
                .build()
                .map(Some)
                .map_err(|e| err(format!("{what}: {e}")))
        };
        let auth = if l.auth.is_empty() {
            None
        } else {
            let mut mechanisms = Vec::new();
            for m in &l.auth {
                let m = Mechanism::parse(m)
                    .ok_or_else(|| err(format!("auth: {m:?} is not a mechanism")))?;
                if !mechanisms.contains(&m) {
                    mechanisms.push(m);
                }
            }
            let users = Users::load(l, mechanisms.contains(&Mechanism::CramMd5)).map_err(err)?;
            if users.is_empty() {
                return Err(err("auth: no users to check against".into()));
            }
            Some(AuthSettings {
                mechanisms,
                allow_plaintext: l.allow_plaintext_auth,
                require_auth: l.require_auth,
                users: Arc::new(users),
            })
        };
        Ok(ListenerSettings {
            auth,
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
            sender_allow: regex("sender_allow", &l.sender_allow, false)?,
            recipient_deny: regex("recipient_deny", &l.recipient_deny, true)?,
            dsn: l.dsn.unwrap_or_else(|| !is_loopback_listener(l)),
            name,
        })
    }
}

impl ListenerSettings {
    /// DESIGN "Contract details", Auth: with `auth`, a client must authenticate before
    /// MAIL unless its address is in `allow_ips` (and `require_auth` is off).
    pub fn auth_required(&self, ip: Option<IpAddr>) -> bool {
        match &self.auth {
            None => false,
            Some(a) => {
                a.require_auth
                    || self.allow_ips.is_empty()
                    || !ip.is_some_and(|ip| self.allow_ips.contains(ip))
            }
        }
    }

    /// Whether a client may connect at all: `allow_ips` limits that when there is no
    /// AUTH to fall back on, or when AUTH is required on top of it.
    pub fn may_connect(&self, ip: IpAddr) -> bool {
        let limits = match &self.auth {
            None => true,
            Some(a) => a.require_auth,
        };
        !limits || self.allow_ips.is_empty() || self.allow_ips.contains(ip)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recipient_deny_ignores_case_sender_allow_does_not() {
        let l: ListenerConfig = toml::from_str(
            "address = \"127.0.0.1:1\"\nrecipient_deny = '@rival\\.example$'\n\
             sender_allow = '^app@'\n",
        )
        .unwrap();
        let s = ListenerSettings::build(&l).unwrap();
        let deny = s.recipient_deny.unwrap();
        assert!(deny.is_match("x@rival.example"));
        assert!(deny.is_match("x@RIVAL.Example"));
        let allow = s.sender_allow.unwrap();
        assert!(allow.is_match("app@example.org"));
        assert!(!allow.is_match("APP@example.org"));
    }
}
