//! `imap`: APPEND each message to a folder of a remote IMAP account (DDMailer's remote
//! accounts). Several accounts on one route are several `imap` sinks: the route's fan-out
//! delivers to each.
//!
//! A delivery reads the message once into memory (bounded by `max_message_size`: an APPEND
//! literal has to announce its length and is sent whole), with CRLF line ends, and APPENDs
//! it with the configured flags and the envelope's arrival time as the internal date. A
//! folder the server does not have (`[TRYCREATE]`) is created and subscribed to, then the
//! APPEND is sent again.
//!
//! Connections are kept in a small pool (`max_connections`) and reused: login once, many
//! APPENDs. A connection that failed in any way is dropped. A reused one that turns out to
//! be dead (closed, reset, BYE) before any byte of the message was sent is replaced by a
//! fresh one and the APPEND tried once more; once the message has started to go out, a
//! failure is reported (temporary) and never retried here, since the server may have
//! stored it.
//!
//! With `envelope_headers` (the default) each recipient routed here gets an APPEND of its
//! own, the message beginning with `Return-Path:` and that recipient's `Delivered-To:`
//! ([`super::envelope_headers`]), as Dovecot's LDA stores one copy per recipient; without
//! them one APPEND stands for all.
//!
//! Duplicates: IMAP has no way to recognise a message it already has. If the connection
//! breaks after the server stored the message but before its OK reached us (or mailchute
//! dies in that instant), the retry stores a second copy. The window is one APPEND's reply.
//!
//! Module map: [`wire`] the sans-I/O protocol (framing, parsing, encoding), [`session`] one
//! connection and its commands, [`classify`] what each failure means for the sender,
//! [`config`] the keys.

mod classify;
pub mod config;
mod session;
pub mod wire;

#[cfg(test)]
mod tests;

use self::classify::{Stage, classify};
use self::config::ImapSettings;
use self::session::{ImapError, Progress, Session};
use super::{BoxFuture, Delivered, Delivery, RcptResults, Sink, SinkError, envelope_headers};
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::Semaphore;

/// A pooled connection idle longer than this is closed rather than reused: servers may log
/// out idle clients after 30 minutes (RFC 3501 5.4), and NAT boxes forget quiet
/// connections much sooner.
const IDLE_MAX: Duration = Duration::from_secs(5 * 60);

pub struct ImapSink {
    settings: ImapSettings,
    /// Logged-in connections waiting for the next delivery.
    idle: Mutex<Vec<Session>>,
    /// One permit per connection the sink may have open (`max_connections`).
    slots: Semaphore,
}

/// Why an APPEND attempt failed, and whether a fresh connection may try again.
struct Failure {
    error: SinkError,
    /// The session died before the message started going out (stale in the pool).
    retry_fresh: bool,
}

impl ImapSink {
    pub fn new(settings: ImapSettings) -> Self {
        let n = settings.max_connections;
        ImapSink {
            settings,
            idle: Mutex::new(Vec::new()),
            slots: Semaphore::new(n),
        }
    }

    fn account(&self) -> classify::Account<'_> {
        classify::Account {
            settings: &self.settings,
        }
    }

    async fn open(&self) -> Result<Session, SinkError> {
        Session::open(&self.settings)
            .await
            .map_err(|e| classify(&e, Stage::Connect, &self.account()))
    }

    /// A pooled session that has not been idle too long, if there is one.
    fn take_idle(&self) -> Option<Session> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(s) = idle.pop() {
            if s.last_used.elapsed() < IDLE_MAX {
                return Some(s);
            }
            // Dropped: the server sees the connection close, which is all LOGOUT would say.
        }
        None
    }

    fn put_back(&self, s: Session) {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).push(s);
    }

    /// Reads the spool file once: bounded, CRLF line ends, no NUL (an IMAP literal cannot
    /// carry one).
    async fn read_message(&self, d: &Delivery<'_>) -> Result<Vec<u8>, SinkError> {
        let too_big = |size: u64, max: u64| {
            SinkError::permanent(
                "5.3.4",
                format!(
                    "message of {size} bytes is over max_message_size ({max} bytes) of the imap sink for {}",
                    self.account().who()
                ),
            )
        };
        let meta = tokio::fs::metadata(d.message)
            .await
            .map_err(|e| SinkError::from_io(format!("stat {}", d.message.display()), &e))?;
        if let Some(max) = self.settings.max_message_size
            && meta.len() > max
        {
            return Err(too_big(meta.len(), max));
        }
        let raw = tokio::fs::read(d.message)
            .await
            .map_err(|e| SinkError::from_io(format!("read {}", d.message.display()), &e))?;
        if raw.contains(&0) {
            return Err(SinkError::permanent(
                "5.6.0",
                "the message contains NUL bytes, which an IMAP APPEND cannot carry",
            ));
        }
        let message = to_crlf(raw);
        if let Some(max) = self.settings.max_message_size
            && message.len() as u64 > max
        {
            return Err(too_big(message.len() as u64, max));
        }
        Ok(message)
    }

    async fn deliver_one(&self, d: &Delivery<'_>, message: &[u8]) -> Result<Delivered, SinkError> {
        let date = wire::internal_date(d.envelope.received_at);
        let wait = self.settings.connect_timeout + self.settings.command_timeout;
        let _slot = match tokio::time::timeout(wait, self.slots.acquire()).await {
            Ok(Ok(permit)) => permit,
            Ok(Err(_)) | Err(_) => {
                return Err(SinkError::temporary(
                    "4.3.0",
                    format!(
                        "all {} connections to {} stayed busy for {} s",
                        self.settings.max_connections,
                        self.settings.peer(),
                        wait.as_secs()
                    ),
                ));
            }
        };
        let (mut session, reused) = match self.take_idle() {
            Some(s) => (s, true),
            None => (self.open().await?, false),
        };
        let result = match self.append(&mut session, message, date.as_deref()).await {
            Err(f) if reused && f.retry_fresh => {
                tracing::debug!(server = %self.settings.peer(), error = %f.error, "imap: pooled connection was dead; trying a fresh one");
                drop(session);
                session = self.open().await?;
                self.append(&mut session, message, date.as_deref()).await
            }
            other => other,
        };
        match result {
            Ok(detail) => {
                self.put_back(session);
                Ok(Delivered { detail })
            }
            // The session is dropped: whatever failed, it is not trusted again.
            Err(f) => Err(f.error),
        }
    }

    /// APPEND, creating the folder when the server says it is missing.
    async fn append(
        &self,
        session: &mut Session,
        message: &[u8],
        date: Option<&str>,
    ) -> Result<String, Failure> {
        let s = &self.settings;
        let account = self.account();
        if let Some(limit) = session.caps.append_limit()
            && message.len() as u64 > limit
        {
            return Err(Failure {
                error: SinkError::permanent(
                    "5.3.4",
                    format!(
                        "message of {} bytes is over the APPENDLIMIT of {limit} bytes that {} announces",
                        message.len(),
                        s.peer()
                    ),
                ),
                retry_fresh: false,
            });
        }
        let mut created = false;
        loop {
            let mut progress = Progress::default();
            match session
                .append(&s.folder_wire, &s.flags, date, message, &mut progress)
                .await
            {
                Ok(done) => {
                    let uid = done
                        .status
                        .code
                        .as_ref()
                        .filter(|c| c.name == "APPENDUID")
                        .and_then(|c| c.args.split_whitespace().nth(1))
                        .map(|u| format!(" (UID {u})"))
                        .unwrap_or_default();
                    let made = if created { ", created" } else { "" };
                    return Ok(format!(
                        "appended to {}{made}{uid} for {}",
                        s.folder,
                        account.who()
                    ));
                }
                Err(ImapError::Refused { status, .. })
                    if !created
                        && s.create_folder
                        && (status.has_code("TRYCREATE") || status.has_code("NONEXISTENT")) =>
                {
                    self.create_folder(session).await?;
                    created = true;
                }
                Err(e) => {
                    let retry_fresh = !progress.literal_sent && classify::is_dead_connection(&e);
                    return Err(Failure {
                        error: classify(&e, Stage::Append, &account),
                        retry_fresh,
                    });
                }
            }
        }
    }

    async fn create_folder(&self, session: &mut Session) -> Result<(), Failure> {
        let s = &self.settings;
        match session.mailbox_command("CREATE", &s.folder_wire).await {
            Ok(_) => {
                tracing::info!(server = %s.peer(), user = %s.username, folder = %s.folder, "imap: created the folder");
            }
            // Made by someone else meanwhile: fine.
            Err(ImapError::Refused { status, .. }) if status.has_code("ALREADYEXISTS") => {}
            Err(e) => {
                return Err(Failure {
                    error: classify(&e, Stage::Create, &self.account()),
                    retry_fresh: false,
                });
            }
        }
        // Clients that list only subscribed folders would not show it otherwise.
        if let Err(e) = session.mailbox_command("SUBSCRIBE", &s.folder_wire).await {
            match e {
                ImapError::Refused { .. } => {
                    tracing::debug!(server = %s.peer(), folder = %s.folder, error = %e, "imap: SUBSCRIBE refused; the folder exists anyway")
                }
                e => {
                    return Err(Failure {
                        error: classify(&e, Stage::Create, &self.account()),
                        retry_fresh: false,
                    });
                }
            }
        }
        Ok(())
    }

    async fn check(&self) -> Result<(), SinkError> {
        let mut session = self.open().await?;
        let s = &self.settings;
        let result = match session.mailbox_command("EXAMINE", &s.folder_wire).await {
            Ok(_) => Ok(()),
            // Refused: missing (which not every server says with [NONEXISTENT]; LIST tells),
            // or there and not selectable.
            Err(ImapError::Refused {
                command,
                status,
                peer,
            }) => {
                match session.exists(&s.folder_wire).await {
                    // Made at the first delivery: healthy. A health check creates nothing
                    // (as the Maildir one does not).
                    Ok(false) if s.create_folder => Ok(()),
                    Ok(false) => Err(SinkError::temporary(
                        "4.2.0",
                        format!(
                            "imap {}: folder {} does not exist and create_folder = false ({})",
                            self.account().who(),
                            s.folder,
                            status.show()
                        ),
                    )),
                    Ok(true) => Err(classify(
                        &ImapError::Refused {
                            command,
                            status,
                            peer,
                        },
                        Stage::Examine,
                        &self.account(),
                    )),
                    Err(e) => Err(classify(&e, Stage::Examine, &self.account())),
                }
            }
            Err(e) => Err(classify(&e, Stage::Examine, &self.account())),
        };
        session.logout().await;
        result
    }
}

/// Bare LF (and a lone CR) become CRLF, as RFC 3501 wants a message; CRLF stays.
fn to_crlf(raw: Vec<u8>) -> Vec<u8> {
    let needs = raw.iter().enumerate().any(|(i, &b)| match b {
        b'\n' => i == 0 || raw[i - 1] != b'\r',
        b'\r' => raw.get(i + 1) != Some(&b'\n'),
        _ => false,
    });
    if !needs {
        return raw;
    }
    let mut out = Vec::with_capacity(raw.len() + raw.len() / 32);
    let mut i = 0;
    while i < raw.len() {
        match raw[i] {
            b'\r' if raw.get(i + 1) == Some(&b'\n') => {
                out.extend_from_slice(b"\r\n");
                i += 2;
                continue;
            }
            b'\r' | b'\n' => out.extend_from_slice(b"\r\n"),
            b => out.push(b),
        }
        i += 1;
    }
    out
}

impl Sink for ImapSink {
    fn deliver<'a>(&'a self, d: &'a Delivery<'a>) -> BoxFuture<'a, RcptResults> {
        Box::pin(async move {
            let message = match self.read_message(d).await {
                Ok(m) => m,
                Err(e) => return super::same_for_all(d.rcpts.len(), Err(e)),
            };
            if !self.settings.envelope_headers {
                // One account: one APPEND stands for every recipient routed here.
                let result = self.deliver_one(d, &message).await;
                return super::same_for_all(d.rcpts.len(), result);
            }
            let mut results = Vec::with_capacity(d.rcpts.len());
            for rcpt in d.rcpts {
                let own = envelope_headers::prepend(&d.envelope.mail_from, rcpt, &message);
                results.push(self.deliver_one(d, &own).await.map(|mut done| {
                    done.detail.push_str(&format!(" (Delivered-To: {rcpt})"));
                    done
                }));
            }
            results
        })
    }

    /// Logs in (TLS and credentials as a delivery uses them) and EXAMINEs the folder.
    fn healthcheck(&self) -> BoxFuture<'_, Result<(), SinkError>> {
        Box::pin(self.check())
    }
}
