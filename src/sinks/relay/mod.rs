//! The `smtp` and `lmtp` sinks: hand the message to another server over SMTP or LMTP.
//!
//! One connection per delivery, through [`crate::smtp_client`]: connect (TCP or Unix
//! socket, TLS implicit / STARTTLS / opportunistic), EHLO/LHLO, AUTH, XFORWARD, MAIL, RCPT
//! per recipient (pipelined when the upstream offers it), DATA streamed from the spool file
//! with canonical CRLF line ends and dot-stuffing (or one BDAT chunk for a BODY=BINARYMIME
//! message), QUIT. The `timeout` is the client's step timeout: connecting, the TLS
//! handshake, each whole reply, each write of the content; the reply to the end of the
//! message gets one more second per 64 KiB of it. What stays here: the settings, what TLS
//! and body type to use, and what each reply or failure means for each recipient
//! (temporary or permanent, with the upstream's own code, enhanced status and text).
//!
//! Duplicates: once the final "." is sent the upstream may have the message even if its
//! reply never reaches us (connection lost, timeout, our crash). We then report a temporary
//! failure and the retry sends it again; SMTP has no way to recognise the resend. The window
//! is the time between the upstream committing the message and its reply arriving here.

pub mod config;

#[cfg(test)]
mod tests;

use super::{
    BoxFuture, Delivered, Delivery, InvalidKey, RcptResults, Sink, SinkContext, SinkError,
};
use crate::envelope::Body;
use crate::proto::{Capabilities, RemoteReply};
use crate::smtp_client::{
    self, Auth, Client, MailOptions, Request, Target, sendable, tls, xforward_attributes,
};
use config::{RelayConfig, RelayTls};
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncReadExt;

pub use crate::smtp_client::Dialect;

/// Bytes read from the spool file per read when checking it for 8-bit content.
const DATA_CHUNK: usize = 64 * 1024;

/// The status of a failed TLS handshake (RFC 3463: "cryptographic failure"); under
/// `opportunistic` it means "try again without TLS".
const TLS_FAILED: &str = "4.7.5";

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
    Content(Option<RemoteReply>),
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
    async fn open(&self) -> Result<Client, SinkError> {
        match self.open_with(self.mode).await {
            Err(e) if self.mode == RelayTls::Opportunistic && e.status == TLS_FAILED => {
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

    async fn open_with(&self, mode: RelayTls) -> Result<Client, SinkError> {
        let mut client = Client::connect(&self.target, self.timeout)
            .await
            .map_err(client_error)?;
        tracing::debug!(upstream = %self.target, step = "connect", "relay: connected");
        if mode == RelayTls::Implicit {
            client
                .start_tls(self.tls()?, self.server_name.clone())
                .await
                .map_err(client_error)?;
        }
        let greeting = client.greeting().await.map_err(client_error)?;
        self.step("greeting", &greeting);
        if greeting.code != 220 {
            client.quit().await;
            return Err(session_error(
                &greeting,
                "4.3.2",
                &format!("upstream {} greeted with", self.target),
            ));
        }
        let mut client = self.hello(client).await?;
        let offers_tls = client.capabilities().has("STARTTLS");
        let want_tls = match mode {
            RelayTls::Starttls => {
                if !offers_tls {
                    client.quit().await;
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
            let reply = client.starttls_request().await.map_err(client_error)?;
            // Logged before the handshake, so a handshake that fails follows its 220.
            self.step("STARTTLS", &reply);
            if reply.code == 220 {
                client
                    .start_tls(self.tls()?, self.server_name.clone())
                    .await
                    .map_err(client_error)?;
                // RFC 3207: forget what was learnt in plain text and ask again.
                client = self.hello(client).await?;
            } else if mode == RelayTls::Starttls {
                client.quit().await;
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
        if let Some(creds) = &self.credentials
            && let Err(e) = self.auth(&mut client, creds).await
        {
            client.quit().await;
            return Err(e);
        }
        Ok(client)
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

    /// One upstream step at debug level: which, and what the upstream answered (its
    /// replies, not our message; the whole dialogue is at trace).
    fn step(&self, step: &'static str, reply: &RemoteReply) {
        tracing::debug!(upstream = %self.target, step, reply = %reply.one_line(), "relay");
    }

    /// [`Self::step`] for a reply that came, passed on as it is.
    fn logged(
        &self,
        step: &'static str,
        reply: smtp_client::Result<RemoteReply>,
    ) -> Result<RemoteReply, smtp_client::Error> {
        if let Ok(r) = &reply {
            self.step(step, r);
        }
        reply
    }

    /// EHLO (HELO when EHLO gets a 5xx) or LHLO; the client keeps the capabilities.
    async fn hello(&self, mut client: Client) -> Result<Client, SinkError> {
        let verb = self.hello_verb();
        let reply = match self.dialect {
            Dialect::Smtp => client.ehlo(&self.helo).await,
            Dialect::Lmtp => client.lhlo(&self.helo).await,
        }
        .map_err(client_error)?;
        // The capability lines are in the trace ("S: ..."); the code says enough here.
        tracing::debug!(upstream = %self.target, step = verb, reply = reply.code, "relay");
        if reply.code == 250 {
            return Ok(client);
        }
        if self.dialect == Dialect::Smtp && reply.class() == 5 {
            let helo = client.helo(&self.helo).await.map_err(client_error)?;
            tracing::debug!(upstream = %self.target, step = "HELO", reply = helo.code, "relay");
            if helo.code == 250 {
                return Ok(client);
            }
            client.quit().await;
            return Err(session_error(
                &helo,
                "4.5.0",
                &format!("upstream {} refused EHLO and HELO:", self.target),
            ));
        }
        client.quit().await;
        Err(session_error(
            &reply,
            "4.5.0",
            &format!("upstream {} refused {verb}:", self.target),
        ))
    }

    async fn auth(&self, client: &mut Client, creds: &Credentials) -> Result<(), SinkError> {
        let failed = |reply: &RemoteReply| {
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
        let outcome = client
            .auth(&creds.username, &creds.password)
            .await
            .map_err(client_error)?;
        match outcome {
            Auth::Replied(reply) if reply.is_positive() => Ok(()),
            Auth::Replied(reply) => Err(failed(&reply)),
            Auth::Unencrypted => Err(SinkError::temporary(
                "4.7.0",
                format!(
                    "not sending the password for {} to {} over an unencrypted connection \
                     (use tls = \"starttls\" or \"implicit\", or an upstream on loopback)",
                    creds.username, self.target
                ),
            )),
            Auth::NoMechanism { offered } if offered.is_empty() => Err(SinkError::temporary(
                "4.7.0",
                format!(
                    "upstream {} does not offer AUTH{}, but username is set",
                    self.target,
                    if client.is_encrypted() {
                        ""
                    } else {
                        " (some servers offer it only after STARTTLS)"
                    }
                ),
            )),
            Auth::NoMechanism { offered } => Err(SinkError::temporary(
                "4.7.0",
                format!(
                    "upstream {} offers AUTH {}; we speak PLAIN and LOGIN",
                    self.target,
                    offered.join(" ")
                ),
            )),
        }
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
        let mut client = match self.open().await {
            Ok(c) => c,
            Err(e) => return super::same_for_all(n, Err(e)),
        };
        let results = self.transaction(&mut client, d, size).await;
        // A session an error left in an unknown state is dropped without QUIT.
        client.quit().await;
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
    async fn transaction(&self, c: &mut Client, d: &Delivery<'_>, size: u64) -> Partial {
        let n = d.rcpts.len();
        let env = d.envelope;
        let all = |r: Result<Delivered, SinkError>| vec![Some(r); n];

        if env.smtputf8 && !c.capabilities().has("SMTPUTF8") {
            return all(Err(SinkError::permanent(
                "5.6.7",
                format!(
                    "the message needs SMTPUTF8 and upstream {} does not offer it",
                    self.target
                ),
            )));
        }
        if let Some(limit) = c.capabilities().size_limit()
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
        let transfer = match self.transfer(c.capabilities(), env.body, d.message).await {
            Ok(t) => t,
            Err(e) => return all(Err(e)),
        };
        if self.xforward && c.capabilities().has("XFORWARD") {
            match c.xforward(&xforward_attributes(env)).await {
                Ok(Some(r)) if r.code != 250 => {
                    return all(Err(session_error(
                        &r,
                        "4.5.0",
                        &format!("upstream {} refused XFORWARD:", self.target),
                    )));
                }
                Ok(_) => {}
                Err(e) => return all(Err(client_error(e))),
            }
        }

        let options = MailOptions {
            size: Some(size),
            body: match transfer {
                Transfer::Data { body } => body,
                Transfer::Bdat => Some("BINARYMIME"),
            },
            smtputf8: env.smtputf8,
        };
        let mut results: Partial = vec![None; n];
        if !sendable(&env.mail_from) {
            return all(Err(SinkError::permanent(
                "5.1.7",
                format!(
                    "sender <{}> cannot be sent in a MAIL command",
                    env.mail_from.escape_debug()
                ),
            )));
        }
        // (index in d.rcpts, address) for the recipients we send.
        let mut rcpts: Vec<(usize, &str)> = Vec::with_capacity(n);
        for (i, rcpt) in d.rcpts.iter().enumerate() {
            if sendable(rcpt) {
                rcpts.push((i, rcpt));
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
        if rcpts.is_empty() {
            return results;
        }
        let mut accepted: Vec<usize> = Vec::new();
        let data = transfer != Transfer::Bdat;
        let mail = (env.mail_from.as_str(), &options);
        let next = if c.capabilities().has("PIPELINING") {
            self.envelope_pipelined(c, mail, &rcpts, data, &mut results, &mut accepted)
                .await
        } else {
            self.envelope_lockstep(c, mail, &rcpts, data, &mut results, &mut accepted)
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
            Transfer::Data { .. } => c.send_data_content(d.message).await,
            Transfer::Bdat => c.send_bdat_last(d.message, size).await,
        };
        if let Err(e) = sent {
            let e = client_error(e);
            for &i in &accepted {
                results[i] = Some(Err(e.clone()));
            }
            return results;
        }
        let stage = if data { "end of DATA" } else { "BDAT" };
        self.final_replies(c, d, &accepted, stage, &mut results)
            .await;
        results
    }

    /// MAIL, every RCPT and DATA (unless `data` is false: BDAT) in one batch, then their
    /// replies in order.
    async fn envelope_pipelined(
        &self,
        c: &mut Client,
        (from, options): (&str, &MailOptions),
        rcpts: &[(usize, &str)],
        data: bool,
        results: &mut Partial,
        accepted: &mut Vec<usize>,
    ) -> Next {
        let mut batch = vec![Request::Mail(from, options)];
        batch.extend(rcpts.iter().map(|&(_, to)| Request::Rcpt(to)));
        // BDAT could go in the batch too, but then the content would be sent even when
        // every RCPT was refused.
        if data {
            batch.push(Request::Data);
        }
        if let Err(e) = c.pipeline(&batch).await {
            return lose(results, e);
        }
        let mail_reply = match c.read_reply().await {
            Ok(r) => r,
            Err(e) => return lose(results, e),
        };
        self.step("MAIL", &mail_reply);
        for &(i, _) in rcpts {
            let reply = self.logged("RCPT", c.read_reply().await);
            match reply {
                Ok(r) if mail_reply.is_positive() && r.is_positive() => accepted.push(i),
                Ok(r) if mail_reply.is_positive() => {
                    results[i] = Some(Err(self.reply_error(&r, "RCPT")))
                }
                Ok(_) => results[i] = Some(Err(self.reply_error(&mail_reply, "MAIL"))),
                Err(e) => return lose(results, e),
            }
        }
        if !data {
            return if accepted.is_empty() {
                Next::Done
            } else {
                Next::Content(None)
            };
        }
        let data_reply = match c.read_reply().await {
            Ok(r) => r,
            Err(e) => return lose(results, e),
        };
        self.step("DATA", &data_reply);
        if !accepted.is_empty() {
            return Next::Content(Some(data_reply));
        }
        if data_reply.code == 354 {
            // A server that says 354 with no recipient still wants the end of DATA; if
            // that fails, the client knows it is broken and will not QUIT.
            let _ = c.finish_empty_data().await;
        }
        Next::Done
    }

    /// MAIL, each RCPT and DATA (unless `data` is false: BDAT), one reply at a time.
    async fn envelope_lockstep(
        &self,
        c: &mut Client,
        (from, options): (&str, &MailOptions),
        rcpts: &[(usize, &str)],
        data: bool,
        results: &mut Partial,
        accepted: &mut Vec<usize>,
    ) -> Next {
        let reply = self.logged("MAIL", c.mail(from, options).await);
        match reply {
            Ok(r) if r.is_positive() => {}
            Ok(r) => {
                fill_undecided(results, self.reply_error(&r, "MAIL"));
                return Next::Done;
            }
            Err(e) => return lose(results, e),
        }
        for &(i, to) in rcpts {
            let reply = self.logged("RCPT", c.rcpt(to).await);
            match reply {
                Ok(r) if r.is_positive() => accepted.push(i),
                Ok(r) => results[i] = Some(Err(self.reply_error(&r, "RCPT"))),
                Err(e) => return lose(results, e),
            }
        }
        if accepted.is_empty() {
            return Next::Done;
        }
        if !data {
            return Next::Content(None);
        }
        match c.data_command().await {
            Ok(r) => {
                self.step("DATA", &r);
                Next::Content(Some(r))
            }
            Err(e) => lose(results, e),
        }
    }

    /// The replies after the content: one for SMTP, one per accepted recipient for LMTP.
    async fn final_replies(
        &self,
        c: &mut Client,
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
            // The first one also gets time for the content still in transit.
            let outcome = match self.logged("final", c.final_reply().await) {
                Ok(r) if r.is_positive() => Ok(Delivered {
                    detail: format!("upstream {} said: {}", self.target, r.one_line()),
                }),
                Ok(r) => Err(self.reply_error(&r, stage)),
                Err(e) => {
                    let e = client_error(e);
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

    /// The result for a negative reply to MAIL, RCPT, DATA or the end of DATA: the class
    /// decides temporary or permanent, and the upstream's words are kept.
    fn reply_error(&self, reply: &RemoteReply, stage: &str) -> SinkError {
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

/// The connection failed before the content: every recipient without a result gets its
/// error (the client is broken now and will not be used again).
fn lose(results: &mut Partial, e: smtp_client::Error) -> Next {
    fill_undecided(results, client_error(e));
    Next::Done
}

/// Every recipient without a result gets `e`.
fn fill_undecided(results: &mut Partial, e: SinkError) {
    for r in results.iter_mut().filter(|r| r.is_none()) {
        *r = Some(Err(e.clone()));
    }
}

/// What a failure of the connection means for a delivery: always temporary (the message
/// may go next time), with the status RFC 3463 has for it.
fn client_error(e: smtp_client::Error) -> SinkError {
    use smtp_client::Error as E;
    let status = match &e {
        E::Connect { source, .. } => match source.kind() {
            std::io::ErrorKind::TimedOut => "4.4.2",
            std::io::ErrorKind::NotFound => "4.4.3",
            _ => "4.4.1",
        },
        E::Io { .. } | E::Closed { .. } => "4.4.2",
        E::Malformed { .. } => "4.5.0",
        E::Tls { .. } | E::DataBeforeTls { .. } => TLS_FAILED,
        E::Message { path, source } => {
            return SinkError::from_io(format!("spool file {}", path.display()), source);
        }
        E::MessageChanged { .. } => "4.3.0",
        // The transaction checks addresses before it sends them; should one slip through,
        // it is about this message, not the upstream.
        E::Unsendable { verb: "MAIL", .. } => return SinkError::permanent("5.1.7", e.to_string()),
        E::Unsendable { .. } => return SinkError::permanent("5.1.3", e.to_string()),
    };
    SinkError::temporary(status, e.to_string())
}

/// A session-level failure (greeting, hello, STARTTLS, AUTH, XFORWARD): always temporary,
/// since it is about the upstream or our config, never about this message.
fn session_error(reply: &RemoteReply, fallback: &str, context: &str) -> SinkError {
    SinkError::temporary(
        &temporary_status(reply, fallback),
        format!("{context} {}", reply.one_line()),
    )
}

/// The reply's enhanced code with its class made 4, or `fallback`.
fn temporary_status(reply: &RemoteReply, fallback: &str) -> String {
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

impl Sink for RelaySink {
    fn deliver<'a>(&'a self, d: &'a Delivery<'a>) -> BoxFuture<'a, RcptResults> {
        Box::pin(self.deliver_inner(d))
    }

    /// Connect, greeting, EHLO/LHLO, and the TLS and AUTH steps a delivery would take, so
    /// that certificate and credential problems show up here too; then QUIT.
    fn healthcheck(&self) -> BoxFuture<'_, Result<(), SinkError>> {
        Box::pin(async move {
            let client = self.open().await?;
            client.quit().await;
            Ok(())
        })
    }
}
