//! What an IMAP failure means for the sender: temporary (the queue retries, a sync client
//! gets 451) or permanent, with the RFC 3463 status, in words that name the server, the
//! user and the folder — never the password.
//!
//! | failure | outcome |
//! |---|---|
//! | connect refused / reset / timed out, connection closed, BYE | temporary 4.4.1 / 4.4.2 / 4.3.2 |
//! | TLS handshake (certificate not trusted, name mismatch) | temporary 4.7.5 |
//! | login refused (`[AUTHENTICATIONFAILED]`, any NO/BAD to LOGIN/AUTHENTICATE) | temporary 4.7.8, "the password is wrong or the account is locked: fix and reload" |
//! | `[UNAVAILABLE]` | temporary 4.3.2 |
//! | `[INUSE]` | temporary 4.2.1 |
//! | `[OVERQUOTA]` | temporary 4.2.2 |
//! | `[TOOBIG]` (or over max_message_size / APPENDLIMIT) | permanent 5.3.4 |
//! | folder missing and create_folder = false, or CREATE refused | temporary 4.2.0 |
//! | any other NO / BAD | temporary 4.3.0 |

use super::config::ImapSettings;
use super::session::ImapError;
use super::wire::Status;
use crate::sinks::SinkError;
use std::io::ErrorKind;

/// What the sink was doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Connecting, TLS, greeting, login.
    Connect,
    Append,
    Create,
    /// The health check's EXAMINE.
    Examine,
}

/// The account, for messages.
pub struct Account<'a> {
    pub settings: &'a ImapSettings,
}

impl Account<'_> {
    /// `user me on imap.example.net:993`.
    pub fn who(&self) -> String {
        format!(
            "user {} on {}",
            self.settings.username,
            self.settings.peer()
        )
    }
}

/// Whether the connection itself is gone (what a pooled connection that died while idle
/// looks like), as opposed to a refusal or a timeout.
pub fn is_dead_connection(e: &ImapError) -> bool {
    match e {
        ImapError::Closed { .. } | ImapError::Bye { .. } => true,
        ImapError::Io { source, .. } => matches!(
            source.kind(),
            ErrorKind::ConnectionReset
                | ErrorKind::ConnectionAborted
                | ErrorKind::BrokenPipe
                | ErrorKind::UnexpectedEof
                | ErrorKind::NotConnected
        ),
        _ => false,
    }
}

fn is_login(command: &str) -> bool {
    command == "LOGIN" || command.starts_with("AUTHENTICATE")
}

/// The error's text without the `host:port: ` it starts with (the account names it).
fn detail(e: &ImapError, account: &Account<'_>) -> String {
    let text = e.to_string();
    let peer = format!("{}: ", account.settings.peer());
    match text.strip_prefix(&peer) {
        Some(rest) => rest.to_string(),
        None => text,
    }
}

pub fn classify(e: &ImapError, stage: Stage, account: &Account<'_>) -> SinkError {
    let who = account.who();
    let s = account.settings;
    let t = SinkError::temporary;
    let e_text = detail(e, account);
    match e {
        ImapError::Connect { source, .. } => {
            t("4.4.1", format!("imap {who}: {e_text}")).with_hint(source.kind())
        }
        ImapError::Tls { .. } => t(
            "4.7.5",
            format!(
                "imap {who}: {e_text} (the certificate must be trusted by {} and name {})",
                s.ca_file
                    .as_ref()
                    .map(|p| format!("ca_file {}", p.display()))
                    .unwrap_or_else(|| "the system roots".into()),
                s.host
            ),
        ),
        ImapError::Io { source, .. } if source.kind() == ErrorKind::TimedOut => t(
            "4.4.2",
            format!(
                "imap {who}: {e_text} (command_timeout {} s)",
                s.command_timeout.as_secs()
            ),
        ),
        ImapError::Io { .. } | ImapError::Closed { .. } => {
            t("4.4.2", format!("imap {who}: {e_text}"))
        }
        ImapError::Wire { .. } => t("4.5.0", format!("imap {who}: {e_text}")),
        ImapError::Bye { .. } => t("4.3.2", format!("imap {who}: {e_text}")),
        ImapError::Unusable { .. } => t("4.7.0", format!("imap {who}: {e_text}")),
        ImapError::Refused {
            command, status, ..
        } => refused(command, status, stage, account),
    }
}

fn refused(command: &str, status: &Status, stage: Stage, account: &Account<'_>) -> SinkError {
    let who = account.who();
    let s = account.settings;
    let said = status.show();
    let t = SinkError::temporary;
    if status.has_code("UNAVAILABLE") {
        return t(
            "4.3.2",
            format!("imap {who}: the server is temporarily unavailable ({command}: {said})"),
        );
    }
    if is_login(command) {
        if status.has_code("PRIVACYREQUIRED") {
            return t(
                "4.7.0",
                format!(
                    "imap {who}: the server wants TLS before login ({said}): set tls = \"implicit\" or \"starttls\""
                ),
            );
        }
        return t(
            "4.7.8",
            format!(
                "imap {who}: login refused ({said}): the password is wrong or the account is locked: fix and reload"
            ),
        );
    }
    if status.has_code("OVERQUOTA") {
        return t("4.2.2", format!("imap {who}: mailbox over quota ({said})"));
    }
    if status.has_code("TOOBIG") {
        return SinkError::permanent(
            "5.3.4",
            format!("imap {who}: the message is too big for the server ({said})"),
        );
    }
    if status.has_code("INUSE") {
        return t(
            "4.2.1",
            format!("imap {who}: folder {} is in use ({said})", s.folder),
        );
    }
    if status.has_code("TRYCREATE") || status.has_code("NONEXISTENT") {
        let why = if s.create_folder {
            ""
        } else {
            " and create_folder = false"
        };
        return t(
            "4.2.0",
            format!(
                "imap {who}: folder {} does not exist{why} ({said})",
                s.folder
            ),
        );
    }
    match stage {
        Stage::Create => t(
            "4.2.0",
            format!(
                "imap {who}: folder {} cannot be created ({command}: {said})",
                s.folder
            ),
        ),
        Stage::Examine => t(
            "4.2.0",
            format!(
                "imap {who}: folder {} cannot be selected ({said})",
                s.folder
            ),
        ),
        Stage::Append | Stage::Connect => {
            t("4.3.0", format!("imap {who}: {command} refused: {said}"))
        }
    }
}

/// A word on the usual cause of a connect failure.
trait Hint {
    fn with_hint(self, kind: ErrorKind) -> Self;
}

impl Hint for SinkError {
    fn with_hint(mut self, kind: ErrorKind) -> Self {
        if kind == ErrorKind::ConnectionRefused {
            self.message
                .push_str(" (is the server up, and is the port right?)");
        }
        self
    }
}
