//! One client connection: moves bytes between the socket and the protocol state machine,
//! and acts on its events (policy checks, spooling, delivery, STARTTLS).

use super::settings::ListenerSettings;
use super::{Server, State};
use crate::config::{Mode, Protocol};
use crate::delivery::Answer;
use crate::envelope::{ClientInfo, Envelope, new_id, now_unix};
use crate::intake::{BodyWriter, Completion, Durable, Intake, IntakeMode, Policy, received};
use crate::proto::{Event, Exchange, Reply, Session, SessionConfig};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;

pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}
pub type BoxIo = Box<dyn Io>;

/// Who is on the other end, as far as the listener could tell before the session.
pub struct Peer {
    /// Effective client address ("ip:port"): the socket's, or the PROXY header's.
    pub addr: Option<String>,
    pub ip: Option<IpAddr>,
    pub proxied_by: Option<String>,
    /// Unix-socket peer uid.
    pub uid: Option<u32>,
    /// May send XFORWARD.
    pub trusted: bool,
}

pub struct Conn {
    io: BoxIo,
    session: Session,
    settings: Arc<ListenerSettings>,
    state: Arc<State>,
    server: Arc<Server>,
    peer: Peer,
    tls: Option<String>,
    /// The message being received, if DATA/BDAT is under way.
    incoming: Option<BodyWriter>,
    /// First write error while receiving (disk full): the message is answered 451 at its end.
    incoming_error: Option<SpoolWriteError>,
    /// The envelope of the message being received, kept because the session forgets it
    /// when it drops the message, which is still logged.
    receiving: Option<Receiving>,
    /// Why we refused the last question ourselves (a spool file we could not create), for
    /// the refusal's log line: the client only hears a generic reply.
    refusal_error: Option<String>,
}

/// What the transaction line of a dropped message needs from its start.
struct Receiving {
    from: String,
    rcpts: Vec<String>,
    started: Instant,
}

const READ_CHUNK: usize = 64 * 1024;

impl Conn {
    pub fn new(
        io: BoxIo,
        peer: Peer,
        tls: Option<String>,
        settings: Arc<ListenerSettings>,
        state: Arc<State>,
        server: Arc<Server>,
    ) -> Conn {
        let session = Session::new(session_config(
            &settings,
            &state.hostname,
            peer.trusted,
            tls.is_some(),
        ));
        Conn {
            io,
            session,
            settings,
            state,
            server,
            peer,
            tls,
            incoming: None,
            incoming_error: None,
            receiving: None,
            refusal_error: None,
        }
    }

    /// Runs the session to its end. Errors are the client's connection going away; they
    /// are logged at debug level only.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        if let Err(e) = self.drive(&mut shutdown).await {
            tracing::debug!(
                listener = %self.settings.name,
                client = self.peer.addr.as_deref(),
                error = %e,
                "connection ended"
            );
        }
        if let Some(inc) = self.incoming.take() {
            inc.discard();
        }
    }

    async fn drive(&mut self, shutdown: &mut watch::Receiver<bool>) -> std::io::Result<()> {
        let mut buf = vec![0u8; READ_CHUNK];
        loop {
            match self.session.next_event() {
                Event::NeedInput => {
                    self.flush().await?;
                    let in_data = self.incoming.is_some();
                    // Mid-DATA we finish the message (bounded by the data timeout) so the
                    // client gets a real answer; otherwise we say goodbye right away.
                    if *shutdown.borrow() && !in_data {
                        self.session.shutdown();
                        continue;
                    }
                    let timeout = if in_data {
                        self.settings.data_timeout
                    } else {
                        self.settings.command_timeout
                    };
                    tokio::select! {
                        r = tokio::time::timeout(timeout, self.io.read(&mut buf)) => match r {
                            Ok(Ok(0)) => return Ok(()),
                            Ok(Ok(n)) => self.session.feed(&buf[..n]),
                            Ok(Err(e)) => return Err(e),
                            Err(_) => self.session.timeout(),
                        },
                        _ = shutdown.changed(), if !in_data => {}
                    }
                }
                Event::Mail { from, .. } => {
                    let from = from.to_string();
                    match self.policy().check_sender(&from) {
                        Ok(()) => self.session.accept_mail(),
                        Err(a) => self.session.reject_mail(reply(a)),
                    }
                }
                Event::Rcpt { to } => {
                    let to = to.to_string();
                    match self.policy().check_rcpt(&self.state.pipeline, &to) {
                        Ok(()) => self.session.accept_rcpt(),
                        Err(a) => self.session.reject_rcpt(reply(a)),
                    }
                }
                Event::DataStart => match self.start_message().await {
                    Ok(()) => self.session.accept_data(),
                    Err(e) => {
                        let reply = Reply::new(
                            451,
                            e.status(),
                            "Temporary local problem: cannot spool the message",
                        );
                        self.refusal_error =
                            Some(format!("cannot create spool file: {}", e.message));
                        self.session.reject_data(reply);
                    }
                },
                Event::Data(bytes) => {
                    if let Some(inc) = self.incoming.as_mut()
                        && self.incoming_error.is_none()
                        && let Err(e) = inc.write(bytes).await
                    {
                        self.incoming_error = Some(SpoolWriteError::new(
                            format!("writing {}", inc.path().display()),
                            &e,
                        ));
                    }
                }
                Event::DataAborted => {
                    // The reply that ended the message is the last one queued.
                    let exchanges = self.session.take_exchanges();
                    self.drop_message(exchanges.last());
                    self.log_exchanges(exchanges);
                }
                Event::DataEnd => {
                    let replies = self.end_message().await;
                    self.session.finish_message(replies);
                }
                Event::StartTls => {
                    self.flush().await?;
                    self.start_tls().await?;
                }
                Event::Close => {
                    self.flush().await?;
                    let _ = self.io.shutdown().await;
                    return Ok(());
                }
            }
        }
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        let exchanges = self.session.take_exchanges();
        self.log_exchanges(exchanges);
        if self.session.has_output() {
            let out = self.session.take_output();
            // A client that stops reading must not hold its connection slot forever.
            let write = async {
                self.io.write_all(&out).await?;
                self.io.flush().await
            };
            tokio::time::timeout(self.settings.command_timeout, write)
                .await
                .map_err(|_| {
                    std::io::Error::new(std::io::ErrorKind::TimedOut, "client stopped reading")
                })??;
        }
        Ok(())
    }

    fn policy(&self) -> Policy<'_> {
        Policy {
            sender_allow: self.settings.sender_allow.as_ref(),
            recipient_deny: self.settings.recipient_deny.as_ref(),
        }
    }

    fn client_info(&self) -> ClientInfo {
        let lmtp = self.settings.protocol == Protocol::Lmtp;
        let base = match (lmtp, self.session.esmtp()) {
            (true, _) => "LMTP",
            (false, true) => "ESMTP",
            (false, false) => "SMTP",
        };
        let protocol = if self.tls.is_some() && (lmtp || self.session.esmtp()) {
            format!("{base}S")
        } else {
            base.to_string()
        };
        ClientInfo {
            addr: self.peer.addr.clone(),
            proxied_by: self.peer.proxied_by.clone(),
            uid: self.peer.uid,
            helo: self.session.helo().map(str::to_string),
            protocol,
            tls: self.tls.clone(),
            auth_user: None,
            xforward: self.session.xforward().clone(),
        }
    }

    async fn start_message(&mut self) -> Result<(), SpoolWriteError> {
        let id = new_id();
        let file = self
            .server
            .spool
            .incoming(&id)
            .map_err(|e| SpoolWriteError {
                message: e.to_string(),
                disk_full: e.is_disk_full(),
            })?;
        let path = file.path().display().to_string();
        let header = received::header(
            &self.client_info(),
            &self.state.hostname,
            &id,
            self.session.rcpts(),
            &received::now_rfc2822(),
        );
        let inc = BodyWriter::start(file, &header)
            .await
            .map_err(|e| SpoolWriteError::new(format!("writing {path}"), &e))?;
        self.incoming = Some(inc);
        self.incoming_error = None;
        self.receiving = Some(Receiving {
            from: self.session.mail_from().unwrap_or("").to_string(),
            rcpts: self.session.rcpts().to_vec(),
            started: Instant::now(),
        });
        Ok(())
    }

    /// The session dropped the message being received (refused at its end for size or
    /// line length, or cut off by RSET, QUIT, a timeout): discard it, and log it as a
    /// transaction like any other, with `ending` (the last reply queued) as its reply.
    fn drop_message(&mut self, ending: Option<&Exchange>) {
        self.incoming_error = None;
        let Some(inc) = self.incoming.take() else {
            return;
        };
        let (id, size) = (inc.id().to_string(), inc.size());
        inc.discard();
        let receiving = self.receiving.take();
        let (from, rcpts, started) = match receiving {
            Some(r) => (r.from, r.rcpts, r.started),
            None => (String::new(), Vec::new(), Instant::now()),
        };
        let refused = ending.filter(|e| e.reply.code >= 400 && matches!(e.verb, "DATA" | "BDAT"));
        let client = self.client_info();
        crate::log::Transaction {
            id: &id,
            listener: &self.settings.name,
            client_ip: self.peer.ip.map(|ip| ip.to_string()).as_deref(),
            helo: client.helo.as_deref(),
            tls: client.tls.as_deref().or(Some("none")),
            forwarded: forwarded_facts(&client),
            from: &from,
            rcpts: &rcpts,
            size,
            outcome: if refused.is_some() {
                "refused"
            } else {
                "aborted"
            }
            .into(),
            reply: ending.map(|e| e.reply.to_string()).unwrap_or_default(),
            duration_ms: started.elapsed().as_millis() as u64,
            error: refused.map(|e| format!("message refused: {}", e.reply.lines.join(" "))),
            ..Default::default()
        }
        .log();
    }

    /// Logs what the session answered: every command at debug (verb and reply code; at
    /// trace the command line and whole reply), and each refusal at info, like Postfix's
    /// `NOQUEUE: reject`, so that a refused client is never invisible.
    fn log_exchanges(&mut self, exchanges: Vec<Exchange>) {
        for ex in exchanges {
            if tracing::enabled!(tracing::Level::TRACE) {
                tracing::trace!(
                    event = "command",
                    listener = %self.settings.name,
                    client = self.peer.addr.as_deref(),
                    line = ex.line.as_deref(),
                    reply = %ex.reply,
                );
            } else {
                tracing::debug!(
                    event = "command",
                    listener = %self.settings.name,
                    client = self.peer.addr.as_deref(),
                    command = ex.verb,
                    reply = ex.reply.code,
                );
            }
            if let Some(refusal) = &ex.refused {
                let error = self.refusal_error.take();
                self.log_refusal(&ex, refusal, error);
            }
        }
    }

    fn log_refusal(&self, ex: &Exchange, r: &crate::proto::Refusal, error: Option<String>) {
        let client_ip = self.peer.ip.map(|ip| ip.to_string());
        let tls = self.tls.as_deref().unwrap_or("none");
        let reply = ex.reply.to_string();
        // Our own failure (the spool) is the operator's problem; a policy answer is not.
        crate::log::warn_or_info!(
            error.is_some(),
            event = "refused",
            listener = %self.settings.name,
            client_ip,
            helo = r.helo.as_deref(),
            tls,
            from = r.from.as_deref(),
            rcpt = r.rcpt.as_deref(),
            command = ex.verb,
            reply,
            error,
        );
    }

    async fn end_message(&mut self) -> Vec<Reply> {
        let rcpts = self.session.rcpts().to_vec();
        let n_answers = if self.settings.protocol == Protocol::Lmtp {
            rcpts.len()
        } else {
            1
        };
        let Some(inc) = self.incoming.take() else {
            return vec![
                Reply::new(451, "4.3.0", "Temporary local problem: no spool file");
                n_answers
            ];
        };
        let id = inc.id().to_string();
        let client = self.client_info();
        let started = self
            .receiving
            .take()
            .map_or_else(Instant::now, |r| r.started);
        let mut envelope = Envelope {
            id: id.clone(),
            mail_from: self.session.mail_from().unwrap_or("").to_string(),
            rcpts,
            client,
            listener: self.settings.name.clone(),
            received_at: now_unix(),
            body: self.session.body(),
            smtputf8: self.session.smtputf8(),
            size: inc.size(),
            sha256: String::new(),
        };
        let completion = match (self.incoming_error.take(), inc.finish().await) {
            (None, Ok(received)) => {
                envelope.size = received.message.size;
                envelope.sha256 = received.sha256;
                let durable = Durable {
                    spool: &self.server.spool,
                    queue: &self.server.queue,
                    retry: &self.state.queue,
                };
                let intake = Intake {
                    pipeline: &self.state.pipeline,
                    mode: match self.settings.mode {
                        Mode::Sync => IntakeMode::Sync(durable),
                        _ => IntakeMode::Queued(durable),
                    },
                    lmtp: self.settings.protocol == Protocol::Lmtp,
                    dsn: self.settings.dsn,
                };
                intake.complete(envelope.clone(), received.message).await
            }
            (Some(e), result) => {
                if let Ok(received) = result {
                    received.message.discard();
                }
                failed_completion(e, n_answers, envelope.rcpts.len())
            }
            (None, Err(e)) => failed_completion(
                SpoolWriteError::new("finishing spool file".into(), &e),
                n_answers,
                envelope.rcpts.len(),
            ),
        };
        let reply_text = answers_for_log(
            self.settings.protocol == Protocol::Lmtp,
            &envelope.rcpts,
            &completion.answers,
        );
        crate::log::Transaction {
            id: &id,
            listener: &self.settings.name,
            client_ip: self.peer.ip.map(|ip| ip.to_string()).as_deref(),
            helo: envelope.client.helo.as_deref(),
            // Always present, so every line has the same fields.
            tls: envelope.client.tls.as_deref().or(Some("none")),
            forwarded: forwarded_facts(&envelope.client),
            from: &envelope.mail_from,
            rcpts: &envelope.rcpts,
            size: envelope.size,
            routes: completion.routes.clone(),
            outcome: completion.outcome.clone(),
            reply: reply_text,
            duration_ms: started.elapsed().as_millis() as u64,
            error: completion.error.clone(),
        }
        .log();
        completion.answers.into_iter().map(reply).collect()
    }

    async fn start_tls(&mut self) -> std::io::Result<()> {
        let Some(acceptor) = self.settings.acceptor.clone() else {
            return Err(std::io::Error::other("STARTTLS without a TLS acceptor"));
        };
        // Swap the plain stream out; on failure the connection is gone anyway.
        let plain = std::mem::replace(&mut self.io, Box::new(tokio::io::duplex(1).0));
        let tls = tokio::time::timeout(self.settings.command_timeout, acceptor.accept(plain))
            .await
            .map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::TimedOut, "TLS handshake timed out")
            })??;
        self.tls = Some(super::tls::describe(tls.get_ref().1));
        self.io = Box::new(tls);
        self.session.tls_started();
        Ok(())
    }
}

/// Why the message being received cannot be kept.
struct SpoolWriteError {
    message: String,
    /// ENOSPC/EDQUOT: "mail system full" (4.3.1) rather than a generic local problem.
    disk_full: bool,
}

impl SpoolWriteError {
    fn new(context: String, e: &std::io::Error) -> Self {
        SpoolWriteError {
            message: format!("{context}: {e}"),
            disk_full: crate::spool::error::is_disk_full(e),
        }
    }

    fn status(&self) -> &'static str {
        if self.disk_full { "4.3.1" } else { "4.3.0" }
    }
}

/// The answers as the transaction line's `reply`: SMTP's one; for LMTP every
/// recipient's, `<rcpt> CODE STATUS text` joined by `; `, since they can all differ.
fn answers_for_log(lmtp: bool, rcpts: &[String], answers: &[Answer]) -> String {
    let line = |a: &Answer| format!("{} {} {}", a.code, a.status, a.text);
    if !lmtp {
        return answers.first().map(line).unwrap_or_default();
    }
    rcpts
        .iter()
        .zip(answers)
        .map(|(r, a)| format!("<{r}> {}", line(a)))
        .collect::<Vec<_>>()
        .join("; ")
}

/// The message could not be kept; the transaction line carries the error.
fn failed_completion(error: SpoolWriteError, n: usize, rcpts: usize) -> Completion {
    let failure = crate::delivery::SinkError::temporary(
        error.status(),
        "Temporary local problem: cannot write the message to the spool",
    );
    Completion {
        answers: vec![Answer::from_error(&failure); n],
        outcomes: vec![Err(failure); rcpts],
        routes: String::new(),
        outcome: "spool failed".into(),
        error: Some(error.message),
    }
}

fn reply(a: Answer) -> Reply {
    Reply::new(a.code, &a.status, a.text)
}

fn session_config(
    s: &ListenerSettings,
    hostname: &str,
    trusted: bool,
    tls_active: bool,
) -> SessionConfig {
    SessionConfig {
        protocol: s.protocol,
        hostname: hostname.to_string(),
        max_message_size: s.max_message_size,
        max_recipients: s.max_recipients,
        max_line_length: s.max_line_length,
        max_errors: s.max_errors,
        starttls: s.acceptor.is_some() && s.tls == crate::config::TlsMode::Starttls && !tls_active,
        tls_active,
        require_tls: s.require_tls,
        xforward_allowed: trusted,
        // Checked once per connection, so a session copies no command lines unless the
        // trace log wants them.
        transcript: tracing::enabled!(tracing::Level::TRACE),
    }
}

/// XFORWARD attributes or the PROXY peer, for the transaction log.
fn forwarded_facts(client: &ClientInfo) -> Option<String> {
    let mut parts: Vec<String> = client
        .xforward
        .attributes()
        .into_iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    if let Some(lb) = &client.proxied_by {
        parts.push(format!("PROXY via {lb}"));
    }
    (!parts.is_empty()).then(|| parts.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(code: u16, status: &str, text: &str) -> Answer {
        Answer {
            code,
            status: status.into(),
            text: text.into(),
        }
    }

    #[test]
    fn lmtp_log_reply_lists_every_recipient() {
        let rcpts = ["a@x".to_string(), "b@x".to_string(), "c@x".to_string()];
        let answers = [
            answer(550, "5.1.1", "no such user"),
            answer(250, "2.0.0", "Ok"),
            answer(451, "4.3.0", "later"),
        ];
        assert_eq!(
            answers_for_log(true, &rcpts, &answers),
            "<a@x> 550 5.1.1 no such user; <b@x> 250 2.0.0 Ok; <c@x> 451 4.3.0 later"
        );
        assert_eq!(
            answers_for_log(false, &rcpts, &answers[1..]),
            "250 2.0.0 Ok"
        );
    }
}
