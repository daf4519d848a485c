//! SMTP AUTH (RFC 4954) as a state of the session: PLAIN (RFC 4616, with an initial
//! response or after `334 `), LOGIN (two `334` prompts) and CRAM-MD5 (RFC 2195).
//!
//! The session runs the exchange and decodes what the client sent; it never checks a
//! secret. A complete exchange becomes [`Event::Auth`](super::Event::Auth) with the
//! [`Credentials`], and the I/O layer answers with [`Session::accept_auth`] or
//! [`Session::reject_auth`], like MAIL and RCPT. That keeps password hashes, timing and
//! delays out of the state machine, and the state machine fuzzable without them.

use super::{Current, Question, Session, State};
use crate::proto::reply::Reply;
use base64::Engine;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::{DecodePaddingMode, general_purpose};

/// A SASL mechanism the session can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mechanism {
    Plain,
    Login,
    CramMd5,
}

impl Mechanism {
    /// The name on the wire (EHLO, AUTH, logs).
    pub fn as_str(self) -> &'static str {
        match self {
            Mechanism::Plain => "PLAIN",
            Mechanism::Login => "LOGIN",
            Mechanism::CramMd5 => "CRAM-MD5",
        }
    }

    /// A mechanism name as a client or a config writes it, in any case.
    pub fn parse(name: &str) -> Option<Mechanism> {
        [Mechanism::Plain, Mechanism::Login, Mechanism::CramMd5]
            .into_iter()
            .find(|m| m.as_str().eq_ignore_ascii_case(name))
    }

    /// PLAIN and LOGIN send the password itself, so they are offered only inside TLS
    /// (unless the operator says otherwise); CRAM-MD5 sends a keyed digest.
    pub fn sends_password(self) -> bool {
        matches!(self, Mechanism::Plain | Mechanism::Login)
    }
}

/// What the session needs to know about AUTH on its listener and for this client.
#[derive(Debug, Clone, Default)]
pub struct AuthConfig {
    /// Mechanisms configured on the listener, in the order they are advertised; empty =
    /// AUTH is not enabled.
    pub mechanisms: Vec<Mechanism>,
    /// Offer PLAIN and LOGIN before TLS is active.
    pub allow_plaintext: bool,
    /// This client must authenticate before MAIL (`530 5.7.0` otherwise).
    pub required: bool,
    /// Failed authentications before the session answers `421` and closes; 0 = no limit.
    pub max_failures: usize,
    /// Unpredictable per connection, for the CRAM-MD5 challenge (the session has no
    /// randomness of its own); each attempt adds one to it, so no challenge repeats.
    pub nonce: u64,
    /// Seconds since the epoch at connection start, the challenge's time part.
    pub time: u64,
}

/// What a client presented, for the I/O layer to check. `Debug` never shows the secret.
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    /// PLAIN or LOGIN: a user name and its password in clear.
    Password {
        /// PLAIN's authorization identity, when given and different from `user` (acting
        /// as another user, which the I/O layer may refuse).
        authzid: Option<String>,
        user: String,
        password: String,
    },
    /// CRAM-MD5: the user, the challenge we sent and the client's HMAC-MD5 of it.
    CramMd5 {
        user: String,
        challenge: String,
        digest: [u8; 16],
    },
}

impl Credentials {
    /// The user name the client gave (not yet verified).
    pub fn user(&self) -> &str {
        match self {
            Credentials::Password { user, .. } | Credentials::CramMd5 { user, .. } => user,
        }
    }
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::Password { authzid, user, .. } => f
                .debug_struct("Password")
                .field("authzid", authzid)
                .field("user", user)
                .finish_non_exhaustive(),
            Credentials::CramMd5 {
                user, challenge, ..
            } => f
                .debug_struct("CramMd5")
                .field("user", user)
                .field("challenge", challenge)
                .finish_non_exhaustive(),
        }
    }
}

/// Where a SASL exchange is: which client line comes next.
#[derive(Debug, Clone)]
pub(super) enum Sasl {
    /// After `334 ` for PLAIN: the whole response.
    PlainResponse,
    /// After LOGIN's `334 VXNlcm5hbWU6` ("Username:").
    LoginUser,
    /// After LOGIN's `334 UGFzc3dvcmQ6` ("Password:").
    LoginPassword { user: String },
    /// After CRAM-MD5's challenge.
    CramResponse { challenge: String },
}

/// Lenient about padding: some clients leave it off, and nothing depends on it.
const B64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

fn bad_base64() -> Reply {
    Reply::new(501, "5.5.2", "Error: invalid base64 data")
}

fn malformed(what: &str) -> Reply {
    Reply::new(501, "5.5.2", format!("Error: malformed {what} response"))
}

/// A base64 SASL line; `=` is the empty response (RFC 4954 4).
pub(super) fn decode(line: &[u8]) -> Result<Vec<u8>, Reply> {
    if line == b"=" {
        return Ok(Vec::new());
    }
    B64.decode(line).map_err(|_| bad_base64())
}

fn text(bytes: Vec<u8>, what: &str) -> Result<String, Reply> {
    let s = String::from_utf8(bytes).map_err(|_| malformed(what))?;
    if s.chars().any(char::is_control) {
        return Err(malformed(what));
    }
    Ok(s)
}

/// PLAIN: `authzid NUL authcid NUL passwd` (RFC 4616 2).
pub(super) fn parse_plain(bytes: &[u8]) -> Result<Credentials, Reply> {
    let mut parts = bytes.split(|&b| b == 0);
    let (Some(authzid), Some(user), Some(password), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(malformed("PLAIN"));
    };
    let user = text(user.to_vec(), "PLAIN")?;
    let authzid = text(authzid.to_vec(), "PLAIN")?;
    // The password may hold any character but NUL (split on above).
    let password = String::from_utf8(password.to_vec()).map_err(|_| malformed("PLAIN"))?;
    if user.is_empty() {
        return Err(malformed("PLAIN"));
    }
    Ok(Credentials::Password {
        authzid: (!authzid.is_empty() && authzid != user).then_some(authzid),
        user,
        password,
    })
}

/// CRAM-MD5: `user SP digest`, the digest as 32 hex digits (RFC 2195 2).
pub(super) fn parse_cram(bytes: Vec<u8>, challenge: String) -> Result<Credentials, Reply> {
    let s = text(bytes, "CRAM-MD5")?;
    let Some((user, hex)) = s.rsplit_once(' ') else {
        return Err(malformed("CRAM-MD5"));
    };
    let mut digest = [0u8; 16];
    if user.is_empty() || hex.len() != 32 {
        return Err(malformed("CRAM-MD5"));
    }
    for (i, d) in digest.iter_mut().enumerate() {
        *d = hex
            .get(2 * i..2 * i + 2)
            .and_then(|h| u8::from_str_radix(h, 16).ok())
            .ok_or_else(|| malformed("CRAM-MD5"))?;
    }
    Ok(Credentials::CramMd5 {
        user: user.to_string(),
        challenge,
        digest,
    })
}

impl Session {
    /// The mechanisms this client is offered now.
    /// Under `require_tls` none before STARTTLS: everything but STARTTLS is refused there,
    /// so offering AUTH would only invite a 530 (Postfix's `smtpd_tls_auth_only` too).
    pub(super) fn offered_mechanisms(&self) -> impl Iterator<Item = Mechanism> + '_ {
        let clear_ok = self.cfg.tls_active || self.cfg.auth.allow_plaintext;
        let any = self.cfg.tls_active || !self.cfg.require_tls;
        self.cfg
            .auth
            .mechanisms
            .iter()
            .copied()
            .filter(move |m| any && (clear_ok || !m.sends_password()))
    }

    /// The EHLO line `AUTH PLAIN LOGIN ...`, if any mechanism is offered.
    pub(super) fn auth_capability(&self) -> Option<String> {
        let mut line = String::from("AUTH");
        let mut seen = Vec::new();
        for m in self.offered_mechanisms() {
            if !seen.contains(&m) {
                seen.push(m);
                line.push(' ');
                line.push_str(m.as_str());
            }
        }
        (!seen.is_empty()).then_some(line)
    }

    /// The authenticated user, once `accept_auth` was called (until STARTTLS resets it).
    pub fn auth_user(&self) -> Option<&str> {
        self.auth_user.as_deref()
    }

    /// The AUTH command.
    pub(super) fn auth(&mut self, mechanism: String, initial: Option<String>) {
        if self.cfg.auth.mechanisms.is_empty() {
            return self.error(Reply::new(
                503,
                "5.5.1",
                "Error: authentication not enabled",
            ));
        }
        if self.helo.is_none() || !self.esmtp {
            let verb = match self.cfg.protocol {
                crate::config::Protocol::Smtp => "EHLO",
                crate::config::Protocol::Lmtp => "LHLO",
            };
            return self.error(Reply::new(
                503,
                "5.5.1",
                format!("Error: send {verb} first"),
            ));
        }
        if self.auth_user.is_some() {
            return self.error(Reply::new(503, "5.5.1", "Error: already authenticated"));
        }
        if self.mail_from.is_some() {
            return self.error(Reply::new(
                503,
                "5.5.1",
                "Error: MAIL transaction in progress",
            ));
        }
        if self.cfg.require_tls && !self.cfg.tls_active {
            return self.error(Reply::new(
                530,
                "5.7.0",
                "Must issue a STARTTLS command first",
            ));
        }
        let Some(mech) = Mechanism::parse(&mechanism) else {
            return self.unrecognised();
        };
        if !self.offered_mechanisms().any(|m| m == mech) {
            if self.cfg.auth.mechanisms.contains(&mech) {
                // Configured, held back until TLS (RFC 4954 6).
                return self.error(Reply::new(
                    538,
                    "5.7.11",
                    "Encryption required for requested authentication mechanism",
                ));
            }
            return self.unrecognised();
        }
        let initial = match initial.map(|i| decode(i.as_bytes())) {
            None => None,
            Some(Ok(bytes)) => Some(bytes),
            Some(Err(r)) => return self.error(r),
        };
        match (mech, initial) {
            (Mechanism::Plain, Some(bytes)) => self.sasl_result(mech, parse_plain(&bytes)),
            (Mechanism::Plain, None) => self.prompt(Sasl::PlainResponse, ""),
            (Mechanism::Login, Some(user)) => match text(user, "LOGIN") {
                Ok(user) => self.prompt(Sasl::LoginPassword { user }, "UGFzc3dvcmQ6"),
                Err(r) => self.error(r),
            },
            (Mechanism::Login, None) => self.prompt(Sasl::LoginUser, "VXNlcm5hbWU6"),
            (Mechanism::CramMd5, Some(_)) => self.error(Reply::new(
                501,
                "5.5.2",
                "Error: CRAM-MD5 takes no initial response",
            )),
            (Mechanism::CramMd5, None) => {
                self.auth_attempts += 1;
                let challenge = format!(
                    "<{}.{}@{}>",
                    self.cfg.auth.nonce.wrapping_add(self.auth_attempts),
                    self.cfg.auth.time,
                    self.cfg.hostname
                );
                let encoded = general_purpose::STANDARD.encode(&challenge);
                self.prompt(Sasl::CramResponse { challenge }, &encoded);
            }
        }
    }

    fn unrecognised(&mut self) {
        self.error(Reply::new(
            504,
            "5.5.4",
            "Error: unrecognized authentication type",
        ));
    }

    fn prompt(&mut self, next: Sasl, challenge: &str) {
        // `334 ` with nothing after it is the empty challenge PLAIN needs.
        self.reply(Reply::plain(334, challenge.to_string()));
        self.state = State::Sasl(next);
    }

    /// A decoded exchange: ask the I/O layer, or answer the client's mistake.
    fn sasl_result(&mut self, mechanism: Mechanism, r: Result<Credentials, Reply>) {
        self.state = State::Command;
        match r {
            Ok(credentials) => {
                self.state = State::Ask(Question::Auth {
                    mechanism,
                    credentials,
                })
            }
            Err(reply) => self.error(reply),
        }
    }

    /// One client line inside a SASL exchange (`line` without its line end).
    pub(super) fn sasl_line(&mut self, step: Sasl, line: &[u8]) {
        self.current = Current {
            verb: "AUTH",
            arg: None,
            // A SASL line is a credential: never copied into a log.
            line: self
                .cfg
                .transcript
                .then(|| format!("(SASL response, {} bytes)", line.len())),
        };
        self.state = State::Command;
        if line == b"*" {
            return self.error(Reply::new(501, "5.0.0", "Error: authentication cancelled"));
        }
        let bytes = match decode(line) {
            Ok(b) => b,
            Err(r) => return self.error(r),
        };
        match step {
            Sasl::PlainResponse => self.sasl_result(Mechanism::Plain, parse_plain(&bytes)),
            Sasl::LoginUser => match text(bytes, "LOGIN") {
                Ok(user) if !user.is_empty() => {
                    self.prompt(Sasl::LoginPassword { user }, "UGFzc3dvcmQ6")
                }
                Ok(_) => self.error(malformed("LOGIN")),
                Err(r) => self.error(r),
            },
            Sasl::LoginPassword { user } => {
                let r = String::from_utf8(bytes)
                    .map(|password| Credentials::Password {
                        authzid: None,
                        user,
                        password,
                    })
                    .map_err(|_| malformed("LOGIN"));
                self.sasl_result(Mechanism::Login, r)
            }
            Sasl::CramResponse { challenge } => {
                self.sasl_result(Mechanism::CramMd5, parse_cram(bytes, challenge))
            }
        }
    }

    /// Accepts the pending AUTH: `235 2.7.0`, the session is authenticated as `user`.
    pub fn accept_auth(&mut self, user: String) {
        if let State::Ask(Question::Auth { .. }) = self.state {
            self.state = State::Command;
            self.auth_user = Some(user);
            self.reply(Reply::new(235, "2.7.0", "Authentication successful"));
        }
    }

    /// Refuses the pending AUTH with `reply` (normally `535 5.7.8`); after
    /// `max_failures` of them the session answers `421` and closes.
    pub fn reject_auth(&mut self, reply: Reply) {
        if let State::Ask(Question::Auth { .. }) = self.state {
            self.state = State::Command;
            self.reply(super::refusal(reply));
            self.auth_failures += 1;
            let max = self.cfg.auth.max_failures;
            if max > 0 && self.auth_failures >= max {
                let text = format!(
                    "{} Error: too many failed authentications",
                    self.cfg.hostname
                );
                self.close_with(Reply::new(421, "4.7.0", text));
            }
        }
    }
}
