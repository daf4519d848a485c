//! The `smtp` and `lmtp` sinks: hand the message to another server over SMTP or LMTP.
//!
//! One connection per delivery: connect (TCP or Unix socket, TLS implicit / STARTTLS /
//! opportunistic), EHLO/LHLO, AUTH, XFORWARD, MAIL, RCPT per recipient, DATA streamed from
//! the spool file with canonical CRLF line ends and dot-stuffing (or one BDAT chunk for a
//! BODY=BINARYMIME message), QUIT. The `timeout` bounds each step: connecting, the TLS
//! handshake, each whole reply (however slowly it trickles in), each write of the content;
//! the reply to the end of the message gets one more second per 64 KiB of it. The upstream's
//! own code, enhanced status and text come back in each recipient's result.
//!
//! Duplicates: once the final "." is sent the upstream may have the message even if its
//! reply never reaches us (connection lost, timeout, our crash). We then report a temporary
//! failure and the retry sends it again; SMTP has no way to recognise the resend. The window
//! is the time between the upstream committing the message and its reply arriving here.

pub mod config;
mod conn;
mod encode;
mod reply;
mod tls;

#[cfg(test)]
mod tests;

use super::{
    BoxFuture, Delivered, Delivery, InvalidKey, RcptResults, Sink, SinkContext, SinkError,
};
use crate::envelope::{Body, Envelope};
use config::{RelayConfig, RelayTls};
use conn::{Conn, Target};
use encode::{DotStuffer, xtext};
use reply::{Capabilities, Reply};
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncReadExt;

pub use reply::{ReplyError, parse_reply};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Smtp,
    Lmtp,
}

/// XFORWARD command lines may not exceed this (Postfix's limit, CRLF included).
const XFORWARD_LINE_MAX: usize = 512;

/// Bytes read from the spool file per write to the upstream.
const DATA_CHUNK: usize = 64 * 1024;

pub struct RelaySink {
    target: Target,
    dialect: Dialect,
    mode: RelayTls,
    /// For `starttls` / `implicit` (and `opportunistic` with a `ca_file`): the checking
    /// config, or the accept-anything one when `insecure`. `None` when `tls = "none"`.
    tls_config: Option<Arc<ClientConfig>>,
    /// Name for SNI and the certificate check.
    server_name: ServerName<'static>,
    credentials: Option<Credentials>,
    /// EHLO/LHLO argument.
    helo: String,
    xforward: bool,
    timeout: Duration,
}

/// Per-recipient results while a transaction runs; `None` = not decided yet.
type Partial = Vec<Option<Result<Delivered, SinkError>>>;

/// What the MAIL/RCPT/DATA phase leaves to do.
enum Next {
    /// Send the content. The reply to DATA, or `None` for BDAT (its command goes with the
    /// content).
    Content(Option<Reply>),
    /// Nothing: every recipient has its result (refused, or the connection was lost).
    Done,
}

/// How the message content goes to the upstream, from its BODY= and what the upstream
/// offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transfer {
    /// DATA, with canonical line ends and dot-stuffing; `body` is the BODY= value to send.
    Data { body: Option<&'static str> },
    /// BDAT (RFC 3030) with BODY=BINARYMIME: the bytes as they are, in one LAST chunk.
    Bdat,
}

struct Credentials {
    username: String,
    /// Read once at build time: a missing secret is a config error found by `config check`,
    /// not a surprise at the first delivery.
    password: String,
}

impl RelaySink {
    pub fn new(c: &RelayConfig, dialect: Dialect, ctx: &SinkContext) -> Result<Self, InvalidKey> {
        let target = Target::parse(&c.address).map_err(|m| InvalidKey::at("address", m))?;
        if c.timeout.0.is_zero() {
            return Err(InvalidKey::at("timeout", "must be more than 0"));
        }
        let tls_config = tls_config(c, &target, ctx)?;
        let server_name = server_name(c, &target)?;
        let credentials = match &c.username {
            None => None,
            Some(username) => Some(Credentials {
                username: username.clone(),
                password: read_password(c, ctx)?,
            }),
        };
        let helo = c.helo.clone().unwrap_or_else(|| ctx.hostname.clone());
        if helo.is_empty() || helo.contains(|ch: char| ch.is_whitespace() || ch.is_control()) {
            return Err(InvalidKey::at(
                "helo",
                format!(
                    "\"{}\": expected a host name without spaces",
                    helo.escape_debug()
                ),
            ));
        }
        Ok(RelaySink {
            target,
            dialect,
            mode: c.tls,
            tls_config,
            server_name,
            credentials,
            helo,
            xforward: c.xforward,
            timeout: c.timeout.0,
        })
    }

    fn hello_verb(&self) -> &'static str {
        match self.dialect {
            Dialect::Smtp => "EHLO",
            Dialect::Lmtp => "LHLO",
        }
    }

    /// Connects and gets the session ready for MAIL: greeting, hello, TLS, AUTH.
    /// `opportunistic` TLS that fails in the handshake is given up for plain text on a new
    /// connection, as Postfix's `may` level does: a server whose TLS is broken (or too old
    /// for us) still gets its mail; `starttls` insists.
    async fn open(&self) -> Result<Session, SinkError> {
        match self.open_with(self.mode).await {
            Err(e) if self.mode == RelayTls::Opportunistic && e.status == conn::TLS_FAILED => {
                tracing::warn!(
                    upstream = %self.target,
                    error = %e.message,
                    "TLS handshake failed; delivering without TLS (tls = \"opportunistic\")"
                );
                self.open_with(RelayTls::None).await
            }
            r => r,
        }
    }

    async fn open_with(&self, mode: RelayTls) -> Result<Session, SinkError> {
        let mut conn = Conn::connect(&self.target, self.timeout).await?;
        tracing::debug!(upstream = %self.target, step = "connect", "relay: connected");
        if mode == RelayTls::Implicit {
            conn = conn
                .start_tls(self.tls()?, self.server_name.clone())
                .await?;
        }
        let greeting = conn.read_reply().await?;
        self.step("greeting", &greeting);
        if greeting.code != 220 {
            conn.quit().await;
            return Err(session_error(
                &greeting,
                "4.3.2",
                &format!("upstream {} greeted with", self.target),
            ));
        }
        let mut session = self.hello(conn).await?;
        let offers_tls = session.caps.has("STARTTLS");
        let want_tls = match mode {
            RelayTls::Starttls => {
                if !offers_tls {
                    session.conn.quit().await;
                    return Err(SinkError::temporary(
                        "4.7.0",
                        format!(
                            "upstream {} does not offer STARTTLS and tls = \"starttls\" requires it",
                            self.target
                        ),
                    ));
                }
                true
            }
            RelayTls::Opportunistic => offers_tls,
            RelayTls::Implicit | RelayTls::None => false,
        };
        if want_tls {
            let reply = session.conn.command("STARTTLS", None).await?;
            self.step("STARTTLS", &reply);
            if reply.code == 220 {
                let conn = session
                    .conn
                    .start_tls(self.tls()?, self.server_name.clone())
                    .await?;
                // RFC 3207: forget what was learnt in plain text and ask again.
                session = self.hello(conn).await?;
            } else if mode == RelayTls::Starttls {
                session.conn.quit().await;
                return Err(session_error(
                    &reply,
                    "4.7.0",
                    &format!("upstream {} refused STARTTLS:", self.target),
                ));
            } else {
                tracing::info!(
                    upstream = %self.target,
                    reply = %reply.one_line(),
                    "STARTTLS refused; continuing without TLS"
                );
            }
        }
        if let Some(creds) = &self.credentials {
            match self.auth(&mut session, creds).await {
                Ok(()) => {}
                Err(e) => {
                    session.conn.quit().await;
                    return Err(e);
                }
            }
        }
        Ok(session)
    }

    fn tls(&self) -> Result<Arc<ClientConfig>, SinkError> {
        // `new` builds a config for every mode that can start TLS.
        self.tls_config.clone().ok_or_else(|| {
            SinkError::temporary(
                "4.7.0",
                format!("internal error: no TLS config for {}", self.target),
            )
        })
    }

    /// EHLO (HELO when EHLO gets a 5xx) or LHLO; reads the capabilities.
    /// One upstream step at debug level: which, and what the upstream answered (its
    /// replies, not our message; the whole dialogue is at trace).
    fn step(&self, step: &'static str, reply: &Reply) {
        tracing::debug!(upstream = %self.target, step, reply = %reply.one_line(), "relay");
    }

    /// [`Self::step`] for a reply that came, passed on as it is.
    fn logged(
        &self,
        step: &'static str,
        reply: Result<Reply, SinkError>,
    ) -> Result<Reply, SinkError> {
        if let Ok(r) = &reply {
            self.step(step, r);
        }
        reply
    }

    async fn hello(&self, mut conn: Conn) -> Result<Session, SinkError> {
        let verb = self.hello_verb();
        let reply = conn.command(&format!("{verb} {}", self.helo), None).await?;
        // The capability lines are in the trace ("S: ..."); the code says enough here.
        tracing::debug!(upstream = %self.target, step = verb, reply = reply.code, "relay");
        if reply.code == 250 {
            return Ok(Session {
                caps: Capabilities::from_ehlo(&reply),
                conn,
                usable: true,
            });
        }
        if self.dialect == Dialect::Smtp && reply.class() == 5 {
            let helo = conn.command(&format!("HELO {}", self.helo), None).await?;
            tracing::debug!(upstream = %self.target, step = "HELO", reply = helo.code, "relay");
            if helo.code == 250 {
                return Ok(Session {
                    caps: Capabilities::default(),
                    conn,
                    usable: true,
                });
            }
            conn.quit().await;
            return Err(session_error(
                &helo,
                "4.5.0",
                &format!("upstream {} refused EHLO and HELO:", self.target),
            ));
        }
        conn.quit().await;
        Err(session_error(
            &reply,
            "4.5.0",
            &format!("upstream {} refused {verb}:", self.target),
        ))
    }

    async fn auth(&self, s: &mut Session, creds: &Credentials) -> Result<(), SinkError> {
        use base64::Engine as _;
        let b64 = |v: &[u8]| base64::engine::general_purpose::STANDARD.encode(v);
        if !s.conn.encrypted && !s.conn.local {
            return Err(SinkError::temporary(
                "4.7.0",
                format!(
                    "not sending the password for {} to {} over an unencrypted connection \
                     (use tls = \"starttls\" or \"implicit\", or an upstream on loopback)",
                    creds.username, self.target
                ),
            ));
        }
        let failed = |reply: &Reply| {
            let status = if reply.code == 535 {
                "4.7.8".to_string()
            } else {
                temporary_status(reply, "4.7.0")
            };
            SinkError::temporary(
                &status,
                format!(
                    "upstream {} refused AUTH for {}: {}",
                    self.target,
                    creds.username,
                    reply.one_line()
                ),
            )
        };
        if s.caps.has_param("AUTH", "PLAIN") {
            let token = b64(format!("\0{}\0{}", creds.username, creds.password).as_bytes());
            let reply = s
                .conn
                .command(&format!("AUTH PLAIN {token}"), Some("AUTH PLAIN <secret>"))
                .await?;
            // 235 per RFC 4954; any 2xx is taken as success (test servers say 250).
            return if reply.is_positive() {
                Ok(())
            } else {
                Err(failed(&reply))
            };
        }
        if s.caps.has_param("AUTH", "LOGIN") {
            let mut reply = s.conn.command("AUTH LOGIN", None).await?;
            for (secret, shown) in [
                (creds.username.as_bytes(), "<username>"),
                (creds.password.as_bytes(), "<password>"),
            ] {
                if reply.code != 334 {
                    return Err(failed(&reply));
                }
                reply = s.conn.command(&b64(secret), Some(shown)).await?;
            }
            // 235 per RFC 4954; any 2xx is taken as success (test servers say 250).
            return if reply.is_positive() {
                Ok(())
            } else {
                Err(failed(&reply))
            };
        }
        let offered = s
            .caps
            .params("AUTH")
            .map(|m| m.join(" "))
            .unwrap_or_default();
        Err(SinkError::temporary(
            "4.7.0",
            if offered.is_empty() {
                format!(
                    "upstream {} does not offer AUTH{}, but username is set",
                    self.target,
                    if s.conn.encrypted {
                        ""
                    } else {
                        " (some servers offer it only after STARTTLS)"
                    }
                )
            } else {
                format!(
                    "upstream {} offers AUTH {offered}; we speak PLAIN and LOGIN",
                    self.target
                )
            },
        ))
    }

    /// The XFORWARD commands to send: only attributes the upstream advertised, values
    /// xtext-encoded, each line at most 512 bytes.
    fn xforward_lines(&self, caps: &Capabilities, env: &Envelope) -> Vec<String> {
        let attrs = xforward_attributes(env);
        let mut lines = Vec::new();
        let mut line = String::from("XFORWARD");
        for (name, value) in attrs {
            if !caps.has_param("XFORWARD", name) {
                continue;
            }
            let item = format!(" {name}={}", xtext(&value));
            if "XFORWARD".len() + item.len() + 2 > XFORWARD_LINE_MAX {
                tracing::debug!(
                    attribute = name,
                    "XFORWARD value too long to send; left out"
                );
                continue;
            }
            if line.len() + item.len() + 2 > XFORWARD_LINE_MAX {
                lines.push(std::mem::replace(&mut line, String::from("XFORWARD")));
            }
            line.push_str(&item);
        }
        if line.len() > "XFORWARD".len() {
            lines.push(line);
        }
        lines
    }

    async fn deliver_inner(&self, d: &Delivery<'_>) -> RcptResults {
        let n = d.rcpts.len();
        if n == 0 {
            return Vec::new();
        }
        let size = match tokio::fs::metadata(d.message).await {
            Ok(m) => m.len(),
            Err(e) => {
                return super::same_for_all(
                    n,
                    Err(SinkError::from_io(
                        format!("spool file {}", d.message.display()),
                        &e,
                    )),
                );
            }
        };
        let mut session = match self.open().await {
            Ok(s) => s,
            Err(e) => return super::same_for_all(n, Err(e)),
        };
        let results = self.transaction(&mut session, d, size).await;
        if session.usable {
            session.conn.quit().await;
        }
        results
            .into_iter()
            .map(|r| {
                r.unwrap_or_else(|| {
                    Err(SinkError::temporary(
                        "4.3.0",
                        "internal error: no result for this recipient",
                    ))
                })
            })
            .collect()
    }

    /// One mail transaction on an open session. Returns one entry per `d.rcpts`.
    async fn transaction(&self, s: &mut Session, d: &Delivery<'_>, size: u64) -> Partial {
        let n = d.rcpts.len();
        let env = d.envelope;
        let all = |r: Result<Delivered, SinkError>| vec![Some(r); n];

        if env.smtputf8 && !s.caps.has("SMTPUTF8") {
            return all(Err(SinkError::permanent(
                "5.6.7",
                format!(
                    "the message needs SMTPUTF8 and upstream {} does not offer it",
                    self.target
                ),
            )));
        }
        if let Some(limit) = s.caps.size_limit()
            && size > limit
        {
            return all(Err(SinkError::permanent(
                "5.3.4",
                format!(
                    "message of {size} bytes exceeds the {limit} bytes upstream {} accepts",
                    self.target
                ),
            )));
        }
        let transfer = match self.transfer(&s.caps, env.body, d.message).await {
            Ok(t) => t,
            Err(e) => return all(Err(e)),
        };
        if self.xforward && s.caps.has("XFORWARD") {
            for line in self.xforward_lines(&s.caps, env) {
                match s.conn.command(&line, None).await {
                    Ok(r) if r.code == 250 => {}
                    Ok(r) => {
                        return all(Err(session_error(
                            &r,
                            "4.5.0",
                            &format!("upstream {} refused XFORWARD:", self.target),
                        )));
                    }
                    Err(e) => {
                        s.usable = false;
                        return all(Err(e));
                    }
                }
            }
        }

        let mut mail = format!("MAIL FROM:<{}>", env.mail_from);
        if s.caps.has("SIZE") {
            mail.push_str(&format!(" SIZE={size}"));
        }
        match transfer {
            Transfer::Data { body: Some(body) } => mail.push_str(&format!(" BODY={body}")),
            Transfer::Data { body: None } => {}
            Transfer::Bdat => mail.push_str(" BODY=BINARYMIME"),
        }
        if env.smtputf8 {
            mail.push_str(" SMTPUTF8");
        }
        let mut results: Partial = vec![None; n];
        if !address_is_sendable(&env.mail_from) {
            return all(Err(SinkError::permanent(
                "5.1.7",
                format!(
                    "sender <{}> cannot be sent in a MAIL command",
                    env.mail_from.escape_debug()
                ),
            )));
        }
        // (index in d.rcpts, command line) for the recipients we send.
        let mut rcpt_lines: Vec<(usize, String)> = Vec::with_capacity(n);
        for (i, rcpt) in d.rcpts.iter().enumerate() {
            if address_is_sendable(rcpt) {
                rcpt_lines.push((i, format!("RCPT TO:<{rcpt}>")));
            } else {
                results[i] = Some(Err(SinkError::permanent(
                    "5.1.3",
                    format!(
                        "recipient <{}> cannot be sent in a RCPT command",
                        rcpt.escape_debug()
                    ),
                )));
            }
        }
        if rcpt_lines.is_empty() {
            return results;
        }
        let mut accepted: Vec<usize> = Vec::new();
        let data = transfer != Transfer::Bdat;
        let next = if s.caps.has("PIPELINING") {
            self.envelope_pipelined(s, &mail, &rcpt_lines, data, &mut results, &mut accepted)
                .await
        } else {
            self.envelope_lockstep(s, &mail, &rcpt_lines, data, &mut results, &mut accepted)
                .await
        };
        let data_reply = match next {
            Next::Content(reply) => reply,
            Next::Done => return results,
        };
        if let Some(data_reply) = data_reply
            && data_reply.code != 354
        {
            let e = self.reply_error(&data_reply, "DATA");
            for &i in &accepted {
                results[i] = Some(Err(e.clone()));
            }
            return results;
        }

        // From here on the upstream may end up with the message whatever we see: every
        // failure is temporary (see the module comment about duplicates).
        let sent = match transfer {
            Transfer::Data { .. } => self.send_data(s, d).await,
            Transfer::Bdat => self.send_bdat(s, d, size).await,
        };
        if let Err(e) = sent {
            s.usable = false;
            for &i in &accepted {
                results[i] = Some(Err(e.clone()));
            }
            return results;
        }
        let stage = if data { "end of DATA" } else { "BDAT" };
        self.final_replies(s, d, &accepted, stage, &mut results)
            .await;
        results
    }

    /// MAIL, every RCPT and DATA (unless `data` is false: BDAT) in one batch, then their
    /// replies in order.
    async fn envelope_pipelined(
        &self,
        s: &mut Session,
        mail: &str,
        rcpt_lines: &[(usize, String)],
        data: bool,
        results: &mut Partial,
        accepted: &mut Vec<usize>,
    ) -> Next {
        let mut batch = String::new();
        for line in std::iter::once(mail).chain(rcpt_lines.iter().map(|(_, l)| l.as_str())) {
            batch.push_str(line);
            batch.push_str("\r\n");
        }
        // BDAT could go in the batch too, but then the content would be sent even when
        // every RCPT was refused.
        if data {
            batch.push_str("DATA\r\n");
        }
        if let Err(e) = s.conn.send(batch.as_bytes()).await {
            return lose(s, results, e);
        }
        let mail_reply = match s.conn.read_reply().await {
            Ok(r) => r,
            Err(e) => return lose(s, results, e),
        };
        self.step("MAIL", &mail_reply);
        for &(i, _) in rcpt_lines {
            let reply = self.logged("RCPT", s.conn.read_reply().await);
            match reply {
                Ok(r) if mail_reply.is_positive() && r.is_positive() => accepted.push(i),
                Ok(r) if mail_reply.is_positive() => {
                    results[i] = Some(Err(self.reply_error(&r, "RCPT")))
                }
                Ok(_) => results[i] = Some(Err(self.reply_error(&mail_reply, "MAIL"))),
                Err(e) => return lose(s, results, e),
            }
        }
        if !data {
            return if accepted.is_empty() {
                Next::Done
            } else {
                Next::Content(None)
            };
        }
        let data_reply = match s.conn.read_reply().await {
            Ok(r) => r,
            Err(e) => return lose(s, results, e),
        };
        self.step("DATA", &data_reply);
        if !accepted.is_empty() {
            return Next::Content(Some(data_reply));
        }
        if data_reply.code == 354 {
            // A server that says 354 with no recipient still wants the end of DATA.
            if s.conn.send(b".\r\n").await.is_err() || s.conn.read_reply().await.is_err() {
                s.usable = false;
            }
        }
        Next::Done
    }

    /// MAIL, each RCPT and DATA (unless `data` is false: BDAT), one reply at a time.
    async fn envelope_lockstep(
        &self,
        s: &mut Session,
        mail: &str,
        rcpt_lines: &[(usize, String)],
        data: bool,
        results: &mut Partial,
        accepted: &mut Vec<usize>,
    ) -> Next {
        let reply = self.logged("MAIL", s.conn.command(mail, None).await);
        match reply {
            Ok(r) if r.is_positive() => {}
            Ok(r) => {
                fill_undecided(results, self.reply_error(&r, "MAIL"));
                return Next::Done;
            }
            Err(e) => return lose(s, results, e),
        }
        for (i, line) in rcpt_lines {
            let reply = self.logged("RCPT", s.conn.command(line, None).await);
            match reply {
                Ok(r) if r.is_positive() => accepted.push(*i),
                Ok(r) => results[*i] = Some(Err(self.reply_error(&r, "RCPT"))),
                Err(e) => return lose(s, results, e),
            }
        }
        if accepted.is_empty() {
            return Next::Done;
        }
        if !data {
            return Next::Content(None);
        }
        match s.conn.command("DATA", None).await {
            Ok(r) => {
                self.step("DATA", &r);
                Next::Content(Some(r))
            }
            Err(e) => lose(s, results, e),
        }
    }

    /// The replies after the content: one for SMTP, one per accepted recipient for LMTP.
    async fn final_replies(
        &self,
        s: &mut Session,
        d: &Delivery<'_>,
        accepted: &[usize],
        stage: &str,
        results: &mut Partial,
    ) {
        let finals = match self.dialect {
            Dialect::Smtp => 1,
            Dialect::Lmtp => accepted.len(),
        };
        for k in 0..finals {
            let reply = if k == 0 {
                s.conn
                    .read_reply_within(in_transit_grace(d.envelope.size))
                    .await
            } else {
                s.conn.read_reply().await
            };
            let outcome = match self.logged("final", reply) {
                Ok(r) if r.is_positive() => Ok(Delivered {
                    detail: format!("upstream {} said: {}", self.target, r.one_line()),
                }),
                Ok(r) => Err(self.reply_error(&r, stage)),
                Err(e) => {
                    s.usable = false;
                    let e = SinkError::temporary(
                        &e.status,
                        format!(
                            "{} (the message was sent; the upstream may have it and a retry may duplicate it)",
                            e.message
                        ),
                    );
                    tracing::warn!(
                        upstream = %self.target,
                        id = d.id,
                        "no reply after the message was sent; retrying may duplicate it"
                    );
                    for &i in &accepted[k..] {
                        results[i] = Some(Err(e.clone()));
                    }
                    return;
                }
            };
            match self.dialect {
                Dialect::Smtp => {
                    for &i in accepted {
                        results[i] = Some(outcome.clone());
                    }
                }
                Dialect::Lmtp => results[accepted[k]] = Some(outcome),
            }
        }
    }

    /// What goes out for the message's BODY= (RFC 6152 §3, RFC 3030 §3): 8-bit content
    /// only to an upstream that offers 8BITMIME, binary only with BINARYMIME and CHUNKING.
    /// We do not convert content, so anything else is refused for good (5.6.3), never sent
    /// as what it is not.
    async fn transfer(
        &self,
        caps: &Capabilities,
        body: Body,
        message: &Path,
    ) -> Result<Transfer, SinkError> {
        match body {
            Body::SevenBit => Ok(Transfer::Data { body: None }),
            Body::EightBitMime if caps.has("8BITMIME") => Ok(Transfer::Data {
                body: Some("8BITMIME"),
            }),
            // Many clients declare 8BITMIME for every message: one with no 8-bit byte in
            // it is 7-bit data and may go without BODY=.
            Body::EightBitMime => match is_seven_bit(message).await {
                Ok(true) => Ok(Transfer::Data { body: None }),
                Ok(false) => Err(SinkError::permanent(
                    "5.6.3",
                    format!(
                        "the message has 8-bit content and upstream {} does not support 8BITMIME",
                        self.target
                    ),
                )),
                Err(e) => Err(SinkError::from_io(
                    format!("spool file {}", message.display()),
                    &e,
                )),
            },
            Body::BinaryMime if caps.has("BINARYMIME") && caps.has("CHUNKING") => {
                Ok(Transfer::Bdat)
            }
            Body::BinaryMime => Err(SinkError::permanent(
                "5.6.3",
                format!(
                    "the message is BODY=BINARYMIME and upstream {} does not support \
                     BINARYMIME with CHUNKING",
                    self.target
                ),
            )),
        }
    }

    /// Sends the whole spool file as one `BDAT <size> LAST` chunk: the bytes as they are,
    /// neither stuffed nor with line ends touched. One chunk because the size is known and
    /// every chunk costs a reply.
    async fn send_bdat(
        &self,
        s: &mut Session,
        d: &Delivery<'_>,
        size: u64,
    ) -> Result<(), SinkError> {
        let spool_error = |e: std::io::Error| {
            SinkError::from_io(format!("spool file {}", d.message.display()), &e)
        };
        let mut file = tokio::fs::File::open(d.message)
            .await
            .map_err(spool_error)?;
        s.conn
            .send(format!("BDAT {size} LAST\r\n").as_bytes())
            .await?;
        let mut input = vec![0u8; DATA_CHUNK];
        let mut left = size;
        loop {
            let got = file.read(&mut input).await.map_err(spool_error)?;
            // A count that does not match would make the upstream read message bytes as
            // commands, or commands as message bytes. Dropping the connection mid-chunk
            // makes it discard what it got.
            if got as u64 > left || (got == 0 && left > 0) {
                return Err(SinkError::temporary(
                    "4.3.0",
                    format!(
                        "spool file {} changed size while being sent",
                        d.message.display()
                    ),
                ));
            }
            if got == 0 {
                return Ok(());
            }
            s.conn.send(&input[..got]).await?;
            left -= got as u64;
        }
    }

    /// Streams the spool file, line ends made CRLF and dot-stuffed, and the final ".".
    async fn send_data(&self, s: &mut Session, d: &Delivery<'_>) -> Result<(), SinkError> {
        let spool_error = |e: std::io::Error| {
            SinkError::from_io(format!("spool file {}", d.message.display()), &e)
        };
        let mut file = tokio::fs::File::open(d.message)
            .await
            .map_err(spool_error)?;
        let mut stuffer = DotStuffer::new();
        let mut input = vec![0u8; DATA_CHUNK];
        let mut output = Vec::with_capacity(DATA_CHUNK + DATA_CHUNK / 32);
        loop {
            // A spool read error leaves the upstream mid-DATA; dropping the connection
            // without the final "." makes it discard what it got.
            let got = file.read(&mut input).await.map_err(spool_error)?;
            if got == 0 {
                break;
            }
            output.clear();
            stuffer.encode(&input[..got], &mut output);
            s.conn.send(&output).await?;
        }
        s.conn.send(stuffer.finish()).await
    }

    /// The result for a negative reply to MAIL, RCPT, DATA or the end of DATA: the class
    /// decides temporary or permanent, and the upstream's words are kept.
    fn reply_error(&self, reply: &Reply, stage: &str) -> SinkError {
        let message = format!("upstream {} said: {}", self.target, reply.one_line());
        match reply.class() {
            5 => SinkError::permanent(reply.enhanced().unwrap_or("5.0.0"), message),
            4 => SinkError::temporary(reply.enhanced().unwrap_or("4.0.0"), message),
            _ => SinkError::temporary(
                "4.5.0",
                format!(
                    "upstream {} gave an unexpected reply to {stage}: {}",
                    self.target,
                    reply.one_line()
                ),
            ),
        }
    }
}

/// Whether the file holds 7-bit data only: no byte with the high bit set (line ends do not
/// matter, the DATA encoder makes them CRLF).
async fn is_seven_bit(path: &Path) -> std::io::Result<bool> {
    let mut file = tokio::fs::File::open(path).await?;
    let mut buf = vec![0u8; DATA_CHUNK];
    loop {
        let n = file.read(&mut buf).await?;
        if n == 0 {
            return Ok(true);
        }
        if !buf[..n].is_ascii() {
            return Ok(false);
        }
    }
}

/// The connection failed before the content: every recipient without a result gets `e`,
/// and the session is not used again.
fn lose(s: &mut Session, results: &mut Partial, e: SinkError) -> Next {
    s.usable = false;
    fill_undecided(results, e);
    Next::Done
}

/// Every recipient without a result gets `e`.
fn fill_undecided(results: &mut Partial, e: SinkError) {
    for r in results.iter_mut().filter(|r| r.is_none()) {
        *r = Some(Err(e.clone()));
    }
}

/// An address goes on a command line: it must not end the line (which would let it
/// smuggle a command of its own).
fn address_is_sendable(addr: &str) -> bool {
    !addr.contains(['\r', '\n', '\0'])
}

struct Session {
    conn: Conn,
    caps: Capabilities,
    /// False once an I/O error or timeout left the connection in an unknown state: no QUIT.
    usable: bool,
}

/// Our last write of the content returns while megabytes may still sit in socket buffers
/// on their way to the upstream: the reply to the end of the message is given time for the
/// upstream to read that much at a slow 64 KiB/s, on top of the usual step `timeout`.
fn in_transit_grace(size: u64) -> Duration {
    Duration::from_secs(size / (64 * 1024))
}

/// A session-level failure (greeting, hello, STARTTLS, AUTH, XFORWARD): always temporary,
/// since it is about the upstream or our config, never about this message.
fn session_error(reply: &Reply, fallback: &str, context: &str) -> SinkError {
    SinkError::temporary(
        &temporary_status(reply, fallback),
        format!("{context} {}", reply.one_line()),
    )
}

/// The reply's enhanced code with its class made 4, or `fallback`.
fn temporary_status(reply: &Reply, fallback: &str) -> String {
    match reply.enhanced() {
        Some(code) if code.len() > 1 => format!("4{}", &code[1..]),
        _ => fallback.to_string(),
    }
}

/// The rustls config for `tls`: checking (against `ca_file` or the system roots) unless
/// `insecure`, or opportunistic without a `ca_file`, where a failed check could only make us
/// fall back to plain text. A missing system bundle is blamed on `tls`, the key that wants it.
fn tls_config(
    c: &RelayConfig,
    target: &Target,
    ctx: &SinkContext,
) -> Result<Option<Arc<ClientConfig>>, InvalidKey> {
    let setup = |m: String| InvalidKey::at("tls", m);
    Ok(match c.tls {
        RelayTls::None => None,
        _ if c.insecure => {
            tracing::warn!(
                address = %target,
                "insecure = true: the upstream's TLS certificate is not checked"
            );
            Some(tls::unverified().map_err(setup)?)
        }
        RelayTls::Opportunistic if c.ca_file.is_none() => Some(tls::unverified().map_err(setup)?),
        _ => {
            let ca_file = c.ca_file.as_ref().map(|p| ctx.base_dir.join(p));
            let roots_key = if ca_file.is_some() { "ca_file" } else { "tls" };
            let roots =
                tls::load_roots(ca_file.as_deref()).map_err(|m| InvalidKey::at(roots_key, m))?;
            Some(tls::verifying(roots).map_err(setup)?)
        }
    })
}

/// The name to check the upstream's certificate against: `tls_name`, else the host part
/// of `address`. A Unix socket has no host, so TLS that checks needs `tls_name`.
fn server_name(c: &RelayConfig, target: &Target) -> Result<ServerName<'static>, InvalidKey> {
    let (name, key) = match (&c.tls_name, target.host()) {
        (Some(name), _) => (name.as_str(), "tls_name"),
        (None, Some(host)) => (host, "address"),
        (None, None) if matches!(c.tls, RelayTls::Starttls | RelayTls::Implicit) => {
            let mode = if c.tls == RelayTls::Implicit {
                "implicit"
            } else {
                "starttls"
            };
            return Err(InvalidKey::at(
                "tls_name",
                format!(
                    "is missing: address \"{}\" is a Unix socket, and tls = \"{mode}\" needs \
                     tls_name to check the certificate against",
                    c.address
                ),
            ));
        }
        (None, None) => ("localhost", "address"),
    };
    tls::server_name(name).map_err(|m| InvalidKey::at(key, m))
}

/// The AUTH password, read once at build time (see [`Credentials`]); errors name the key
/// that points at the secret.
fn read_password(c: &RelayConfig, ctx: &SinkContext) -> Result<String, InvalidKey> {
    match (&c.password_env, &c.password_file) {
        (Some(_), Some(_)) => Err(InvalidKey::at(
            "password_file",
            "set password_env or password_file, not both",
        )),
        (None, None) => Err(InvalidKey::at(
            "username",
            "is set: password_env or password_file is required",
        )),
        (Some(var), None) => {
            let bad = |why: &str| InvalidKey::at("password_env", format!("{var}: {why}"));
            match std::env::var(var) {
                Ok(p) if !p.is_empty() => Ok(p),
                Ok(_) => Err(bad("the variable is empty")),
                Err(std::env::VarError::NotPresent) => Err(bad("the variable is not set")),
                Err(std::env::VarError::NotUnicode(_)) => Err(bad("the value is not UTF-8")),
            }
        }
        (None, Some(file)) => {
            let path = ctx.base_dir.join(file);
            let bad =
                |why: String| InvalidKey::at("password_file", format!("{}: {why}", path.display()));
            let text = std::fs::read_to_string(&path).map_err(|e| bad(e.to_string()))?;
            let first = text.lines().next().unwrap_or("").trim();
            if first.is_empty() {
                return Err(bad("the first line is empty".into()));
            }
            Ok(first.to_string())
        }
    }
}

/// What to send with XFORWARD, in Postfix's order: the facts a trusted upstream forwarded
/// to us, unchanged, or else what we know about our own client.
fn xforward_attributes(env: &Envelope) -> Vec<(&'static str, String)> {
    let fwd = &env.client.xforward;
    if !fwd.is_empty() {
        return fwd
            .attributes()
            .into_iter()
            .map(|(k, v)| (k, v.to_string()))
            .collect();
    }
    let client = &env.client;
    let (addr, port) = match client.addr.as_deref() {
        Some(a) => match a.parse::<SocketAddr>() {
            Ok(sa) => (Some(sa.ip()), Some(sa.port())),
            Err(_) => (a.parse::<IpAddr>().ok(), None),
        },
        None => (None, None),
    };
    let mut attrs = vec![("NAME", "[UNAVAILABLE]".to_string())];
    if let Some(ip) = addr {
        let ip = match ip {
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => v4.to_string(),
                None => format!("IPv6:{v6}"),
            },
            IpAddr::V4(v4) => v4.to_string(),
        };
        attrs.push(("ADDR", ip));
    }
    if let Some(port) = port {
        attrs.push(("PORT", port.to_string()));
    }
    attrs.push(("PROTO", xforward_proto(&client.protocol).to_string()));
    if let Some(helo) = &client.helo {
        attrs.push(("HELO", helo.clone()));
    }
    attrs.push(("IDENT", env.id.clone()));
    let source = if client.addr.is_some() {
        "REMOTE"
    } else {
        "LOCAL"
    };
    attrs.push(("SOURCE", source.to_string()));
    attrs
}

/// PROTO for the protocol our client spoke, as the ingress names it for the Received
/// header: "SMTP", "ESMTP", "ESMTPS", "LMTP", "LMTPS" (RFC 3848; compared ignoring case).
///
/// The base name, without RFC 3848's TLS/AUTH suffixes (they describe the hop, not the
/// protocol), as Postfix's own smtpd keeps and forwards it ("proto=ESMTP" in its logs).
/// The XFORWARD README allows any protocol name, so LMTP stays LMTP. What no client spoke
/// to us (our own DSNs are "local") is `[UNAVAILABLE]`.
fn xforward_proto(protocol: &str) -> &'static str {
    let p = protocol.to_ascii_uppercase();
    if p.starts_with("ESMTP") {
        "ESMTP"
    } else if p.starts_with("LMTP") {
        "LMTP"
    } else if p == "SMTP" {
        "SMTP"
    } else {
        "[UNAVAILABLE]"
    }
}

impl Sink for RelaySink {
    fn deliver<'a>(&'a self, d: &'a Delivery<'a>) -> BoxFuture<'a, RcptResults> {
        Box::pin(self.deliver_inner(d))
    }

    /// Connect, greeting, EHLO/LHLO, and the TLS and AUTH steps a delivery would take, so
    /// that certificate and credential problems show up here too; then QUIT.
    fn healthcheck(&self) -> BoxFuture<'_, Result<(), SinkError>> {
        Box::pin(async move {
            let session = self.open().await?;
            session.conn.quit().await;
            Ok(())
        })
    }
}
