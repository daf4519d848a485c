//! The envelope: what travels beside a message, never inside it.

use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU32, Ordering};

/// Facts Postfix (or another trusted MTA) forwarded with XFORWARD. Each is `None` when not
/// sent; `[UNAVAILABLE]` / `[TEMPUNAVAIL]` values are kept as sent so they can be passed on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct XForward {
    pub name: Option<String>,
    pub addr: Option<String>,
    pub port: Option<String>,
    pub proto: Option<String>,
    pub helo: Option<String>,
    pub ident: Option<String>,
    pub source: Option<String>,
}

impl XForward {
    pub fn is_empty(&self) -> bool {
        *self == XForward::default()
    }

    /// The attributes in the order Postfix documents them, with their XFORWARD names.
    pub fn attributes(&self) -> Vec<(&'static str, &str)> {
        [
            ("NAME", &self.name),
            ("ADDR", &self.addr),
            ("PORT", &self.port),
            ("PROTO", &self.proto),
            ("HELO", &self.helo),
            ("IDENT", &self.ident),
            ("SOURCE", &self.source),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.as_deref().map(|v| (k, v)))
        .collect()
    }
}

/// Who handed us the message, as far as we can tell.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientInfo {
    /// The peer address: the socket's, or the one a trusted PROXY header gave.
    /// `None` for Unix-socket clients.
    pub addr: Option<String>,
    /// The socket peer when a PROXY header replaced `addr` (the load balancer).
    pub proxied_by: Option<String>,
    /// Peer uid for Unix-socket clients (SO_PEERCRED), for the Received line.
    pub uid: Option<u32>,
    /// HELO/EHLO/LHLO argument.
    pub helo: Option<String>,
    /// "SMTP", "ESMTP", "ESMTPS", "LMTP", "LMTPS" (RFC 3848, upper case) as used in the
    /// Received header `with` clause; "local" for messages mailchute made itself (DSNs).
    pub protocol: String,
    /// TLS version and cipher when the session was encrypted, e.g. "TLSv1.3 TLS13_AES_256_GCM_SHA384".
    pub tls: Option<String>,
    /// Authenticated user (SMTP AUTH), when any.
    pub auth_user: Option<String>,
    /// XFORWARD facts from a trusted upstream.
    #[serde(default, skip_serializing_if = "XForward::is_empty")]
    pub xforward: XForward,
}

/// BODY= parameter of MAIL.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Body {
    #[default]
    SevenBit,
    EightBitMime,
    BinaryMime,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// Sortable, unique message id (see [`new_id`]).
    pub id: String,
    /// MAIL FROM address without angle brackets; empty for the null sender `<>`.
    pub mail_from: String,
    /// RCPT TO addresses in the order accepted, without angle brackets.
    pub rcpts: Vec<String>,
    pub client: ClientInfo,
    /// Name of the listener (or "deliver"/"sendmail") the message came in by.
    pub listener: String,
    /// Arrival time, Unix seconds.
    pub received_at: i64,
    pub body: Body,
    pub smtputf8: bool,
    /// Size in bytes of the spooled message (our Received header included).
    pub size: u64,
    /// SHA-256 (lower-case hex) of the message as the client sent it: before our
    /// `Received:` line and before any filter. Mongo's `store_key` and the `{sha256}` key
    /// placeholder use it, so the same message sent twice is recognised. Empty for entries
    /// queued before it existed and for messages we made ourselves (DSNs).
    #[serde(default)]
    pub sha256: String,
}

static ID_COUNTER: AtomicU32 = AtomicU32::new(0);

/// A new message id: sortable by arrival time (microseconds), unique across processes
/// sharing a data dir (pid) and within one (counter). 24 upper-case hex digits, safe as a
/// file name and an object key.
pub fn new_id() -> String {
    let micros = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0);
    let n = ID_COUNTER.fetch_add(1, Ordering::Relaxed);
    format!(
        "{:014X}{:05X}{:05X}",
        micros & 0xFF_FFFF_FFFF_FFFF,
        std::process::id() & 0xF_FFFF,
        n & 0xF_FFFF
    )
}

/// Unix seconds now.
pub fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Splits an address into local part and domain at the last `@` (the local part may be
/// quoted and contain `@`). An address without `@` (e.g. `postmaster`) has an empty domain.
pub fn split_address(addr: &str) -> (&str, &str) {
    match addr.rfind('@') {
        Some(i) => (&addr[..i], &addr[i + 1..]),
        None => (addr, ""),
    }
}

/// A quoted local part that needs no quotes, unquoted: `"alice"` and `alice` are the same
/// mailbox (RFC 5321 4.1.2), and must route and file alike. A local part that does need
/// its quotes (`"a b"`, `"a@b"`) is returned as it is.
pub fn unquote_local(local: &str) -> std::borrow::Cow<'_, str> {
    let Some(inner) = local
        .strip_prefix('"')
        .and_then(|l| l.strip_suffix('"'))
        .filter(|_| local.len() >= 2)
    else {
        return local.into();
    };
    let mut plain = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(escaped) => plain.push(escaped),
                None => return local.into(),
            },
            c => plain.push(c),
        }
    }
    if is_dot_atom(&plain) {
        plain.into()
    } else {
        local.into()
    }
}

/// RFC 5322 dot-atom-text: atext runs separated by single dots (UTF-8 allowed, RFC 6531).
fn is_dot_atom(s: &str) -> bool {
    let atext =
        |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c) || !c.is_ascii();
    !s.is_empty()
        && s.split('.')
            .all(|part| !part.is_empty() && part.chars().all(atext))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_that_are_not_needed_are_dropped() {
        assert_eq!(unquote_local("\"alice\""), "alice");
        assert_eq!(unquote_local("\"a.b\""), "a.b");
        assert_eq!(unquote_local("\"\\a\""), "a");
        assert_eq!(unquote_local("alice"), "alice");
        for kept in [
            "\"a b\"", "\"a@b\"", "\"..\"", "\".a\"", "\"\"", "\"", "\"a\\\"",
        ] {
            assert_eq!(unquote_local(kept), kept, "{kept}");
        }
    }

    #[test]
    fn ids_are_unique_and_sortable() {
        let a = new_id();
        let b = new_id();
        assert_ne!(a, b);
        assert_eq!(a.len(), 24);
        assert!(a < b || a[..14] == b[..14]);
    }

    #[test]
    fn split_address_uses_last_at() {
        assert_eq!(
            split_address("\"a@b\"@example.org"),
            ("\"a@b\"", "example.org")
        );
        assert_eq!(split_address("postmaster"), ("postmaster", ""));
    }
}
