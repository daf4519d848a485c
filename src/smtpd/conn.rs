//! One client connection: moves bytes between the socket and the protocol state machine,
//! hands each transaction's questions and body to the listener's [`Handler`], logs, and
//! switches to TLS.

use super::handler::{Handler, reply};
use super::settings::ListenerSettings;
use super::users::Verdict;
use super::{Server, State};
use crate::config::Protocol;
use crate::delivery::Answer;
use crate::envelope::{ClientInfo, Envelope, new_id, now_unix};
use crate::intake::received;
use crate::proto::{
    AuthConfig, Credentials, Event, Exchange, Mechanism, Reply, Session, SessionConfig,
};
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
    peer: Peer,
    tls: Option<String>,
    /// What becomes of each transaction (spool and intake; proxy mode's upstream next).
    handler: Handler,
    /// The envelope of the message being received, kept because the session forgets it
    /// when it drops the message, which is still logged.
    receiving: Option<Receiving>,
    /// Why we refused the last question ourselves (a spool file we could not create), for
    /// the refusal's log line: the client only hears a generic reply.
    refusal_error: Option<String>,
    /// For the AUTH failure delays it shares with every other connection.
    server: Arc<Server>,
}

/// What the transaction line of a dropped message needs from its start.
struct Receiving {
    id: String,
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
        let mut cfg = session_config(&settings, &state.hostname, peer.trusted, tls.is_some());
        cfg.auth = auth_config(&settings, peer.ip);
        let session = Session::new(cfg);
        let handler = Handler::new(settings.clone(), state.clone(), server.clone());
        Conn {
            io,
            session,
            settings,
            state,
            peer,
            tls,
            handler,
            receiving: None,
            refusal_error: None,
            server,
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
        self.handler.abort();
    }

    async fn drive(&mut self, shutdown: &mut watch::Receiver<bool>) -> std::io::Result<()> {
        let mut buf = vec![0u8; READ_CHUNK];
        loop {
            match self.session.next_event() {
                Event::NeedInput => {
                    self.flush().await?;
                    let in_data = self.handler.receiving();
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
                    if let Some(r) = self.sender_not_owned(&from) {
                        self.session.reject_mail(r);
                        continue;
                    }
                    match self.handler.mail(&from).await {
                        Ok(()) => self.session.accept_mail(),
                        Err(r) => self.session.reject_mail(r),
                    }
                }
                Event::Rcpt { to } => {
                    let to = to.to_string();
                    match self.handler.rcpt(&to).await {
                        Ok(()) => self.session.accept_rcpt(),
                        Err(r) => self.session.reject_rcpt(r),
                    }
                }
                Event::Auth {
                    mechanism,
                    credentials,
                } => {
                    let credentials = credentials.clone();
                    self.authenticate(mechanism, &credentials).await;
                }
                Event::DataStart => match self.start_message().await {
                    Ok(()) => self.session.accept_data(),
                    Err(refused) => {
                        self.refusal_error = Some(refused.error);
                        self.session.reject_data(refused.reply);
                    }
                },
                Event::Data(bytes) => self.handler.data(bytes).await,
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

    fn client_info(&self) -> ClientInfo {
        let lmtp = self.settings.protocol == Protocol::Lmtp;
        let base = match (lmtp, self.session.esmtp()) {
            (true, _) => "LMTP",
            (false, true) => "ESMTP",
            (false, false) => "SMTP",
        };
        let extended = lmtp || self.session.esmtp();
        let auth_user = self.session.auth_user().map(str::to_string);
        // RFC 3848: S for TLS, A for AUTH ("ESMTPSA", as Postfix writes it).
        let mut protocol = base.to_string();
        if self.tls.is_some() && extended {
            protocol.push('S');
        }
        if auth_user.is_some() && extended {
            protocol.push('A');
        }
        ClientInfo {
            addr: self.peer.addr.clone(),
            proxied_by: self.peer.proxied_by.clone(),
            uid: self.peer.uid,
            helo: self.session.helo().map(str::to_string),
            protocol,
            tls: self.tls.clone(),
            auth_user,
            xforward: self.session.xforward().clone(),
        }
    }

    /// An authenticated user's `senders` do not include `from`: the MAIL refusal.
    fn sender_not_owned(&self, from: &str) -> Option<Reply> {
        let user = self.session.auth_user()?;
        let auth = self.settings.auth.as_ref()?;
        if auth.users.sender_allowed(user, from) {
            return None;
        }
        Some(Reply::new(
            550,
            "5.7.1",
            format!(
                "<{from}>: Sender address not allowed for user {}",
                printable(user)
            ),
        ))
    }

    /// Checks an AUTH exchange's credentials and answers it. A failure waits first, longer
    /// with each failure from this address, and is logged in a form fail2ban can match;
    /// no secret is ever logged.
    async fn authenticate(&mut self, mechanism: Mechanism, credentials: &Credentials) {
        let arrived = tokio::time::Instant::now();
        let verdict = match &self.settings.auth {
            Some(a) => a.users.verify(credentials).await,
            None => Verdict::Invalid,
        };
        let listener = self.settings.name.clone();
        let client = self
            .peer
            .ip
            .map(|ip| ip.to_string())
            .unwrap_or_else(|| "local".into());
        let user = printable(credentials.user());
        let mech = mechanism.as_str();
        match verdict {
            Verdict::Valid(name) => {
                self.server.auth_failures.succeeded(&listener, self.peer.ip);
                tracing::info!(
                    event = "auth",
                    listener = %listener,
                    client_ip = %client,
                    user = %user,
                    mechanism = mech,
                    "auth ok: client={client} user={user} mechanism={mech} listener={listener}"
                );
                self.session.accept_auth(name);
            }
            Verdict::Invalid => {
                let delay = self.server.auth_failures.failed(&listener, self.peer.ip);
                tracing::warn!(
                    event = "auth_failed",
                    listener = %listener,
                    client_ip = %client,
                    user = %user,
                    mechanism = mech,
                    delay_ms = delay.as_millis() as u64,
                    "auth failed: client={client} user={user} mechanism={mech} listener={listener}"
                );
                // Counted from the credentials' arrival, not from the check's end: the
                // reply then comes as late for an unknown user as for a known one with a
                // wrong password, however long each check took.
                tokio::time::sleep_until(arrived + delay).await;
                self.session.reject_auth(Reply::new(
                    535,
                    "5.7.8",
                    "Authentication credentials invalid",
                ));
            }
            Verdict::Unavailable(error) => {
                tracing::error!(
                    event = "auth_unavailable",
                    listener = %listener,
                    client_ip = %client,
                    user = %user,
                    mechanism = mech,
                    error = %error,
                    "auth could not be checked"
                );
                self.session.reject_auth(Reply::new(
                    454,
                    "4.7.0",
                    "Temporary authentication failure",
                ));
            }
        }
    }

    async fn start_message(&mut self) -> Result<(), super::handler::StartRefused> {
        let id = new_id();
        let header = received::header(
            &self.client_info(),
            &self.state.hostname,
            &id,
            self.session.rcpts(),
            &received::now_rfc2822(),
        );
        self.handler.start(&id, &header).await?;
        self.receiving = Some(Receiving {
            id,
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
        let Some(size) = self.handler.abort() else {
            return;
        };
        let receiving = self.receiving.take();
        let (id, from, rcpts, started) = match receiving {
            Some(r) => (r.id, r.from, r.rcpts, r.started),
            None => (String::new(), String::new(), Vec::new(), Instant::now()),
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
        let Some(receiving) = self.receiving.take().filter(|_| self.handler.receiving()) else {
            return vec![
                Reply::new(451, "4.3.0", "Temporary local problem: no spool file");
                n_answers
            ];
        };
        let (id, started) = (receiving.id, receiving.started);
        let mut envelope = Envelope {
            id: id.clone(),
            mail_from: self.session.mail_from().unwrap_or("").to_string(),
            rcpts,
            client: self.client_info(),
            listener: self.settings.name.clone(),
            received_at: now_unix(),
            body: self.session.body(),
            smtputf8: self.session.smtputf8(),
            size: 0,
            sha256: String::new(),
        };
        let completion = self.handler.finish(&mut envelope).await;
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
        auth: AuthConfig::default(),
    }
}

/// The session's AUTH settings for a client at `ip`.
fn auth_config(s: &ListenerSettings, ip: Option<IpAddr>) -> AuthConfig {
    let Some(a) = &s.auth else {
        return AuthConfig::default();
    };
    let time = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    AuthConfig {
        mechanisms: a.mechanisms.clone(),
        allow_plaintext: a.allow_plaintext,
        required: s.auth_required(ip),
        max_failures: super::settings::MAX_AUTH_FAILURES,
        nonce: nonce(),
        time,
    }
}

/// An unpredictable number for the CRAM-MD5 challenge: std's hasher keys are random per
/// process and per instance, which is all a challenge needs (unique, not guessable).
fn nonce() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    h.finish()
}

/// A client-given name for a log line: printable ASCII without spaces or `=` (so a
/// fail2ban filter cannot be fooled by a crafted name), at most 64 characters.
fn printable(s: &str) -> String {
    let mut out: String = s
        .chars()
        .take(64)
        .map(|c| {
            if c.is_ascii_graphic() && c != '=' {
                c
            } else {
                '?'
            }
        })
        .collect();
    if out.is_empty() {
        out.push('?');
    }
    out
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
