//! `sendmail -bs`: SMTP on standard input and output, as Postfix's (MUAs, PHP mailers and
//! tools that speak SMTP to a local command use it). The server session is the listeners'
//! own ([`crate::proto::Session`]), driven over blocking reads of fd 0 and writes to fd 1;
//! each transaction goes to the daemon over its unix socket with LMTP, step by step as the
//! client goes:
//!
//! - MAIL: the sender is taken as given (Postfix's `-bs` does too), an address without a
//!   domain gets the default domain; then an LMTP session is opened and its MAIL sent. The
//!   daemon's 5xx is the client's answer; the daemon unreachable, or a 4xx, and the
//!   transaction goes to `pickup/` instead (answered 250).
//! - RCPT: qualified like the sender, then asked of the daemon in the same LMTP transaction,
//!   so an address no route takes is refused here with the daemon's own 5xx (DESIGN.md:
//!   "refused at RCPT time, never after"). A 4xx or a lost daemon: the recipient is taken
//!   for `pickup/`.
//! - end of data: Date, Message-ID and From added when missing, Bcc removed (as the non-bs
//!   path does, [`sendmail_message::prepare`]); the message goes to the daemon's accepted
//!   recipients, and what it deferred or never saw is written to `pickup/` (fsynced). The
//!   reply: 250 when every recipient has it or it is in `pickup/`; 451 4.3.0 when even
//!   `pickup/` failed; the daemon's 5xx when it refused the message for every recipient.
//!   When it refused some after the data (a route's filter) and took the others: 250 (SMTP
//!   has one reply), the refusal in the daemon's log, and on stderr with `-v`.
//!
//! Exit status: 0 when every message whose data the client sent is kept (QUIT, or the
//! input ending between transactions); 75 when one is nowhere for now (a 451 after its
//! data, or the input ending or going silent for [`COMMAND_TIMEOUT`] inside a
//! transaction); else the status of the first message refused after its data (by the
//! daemon for every recipient, or by the session: too big, a line too long) as without
//! `-bs` (67, 65, 77, 69). The replies themselves are what an SMTP client reads.

use super::pickup::{self, PickupEnvelope};
use super::settings::Settings;
use super::stdin::{Read, read_stdin};
use super::submit::{self, Outcome};
use super::{User, invoking_user, qualify};
use crate::config::Protocol;
use crate::delivery::{Exit, SinkError, sysexits};
use crate::envelope::{Body, new_id};
use crate::proto::sendmail_argv::SendmailArgs;
use crate::proto::sendmail_message::{self, Compose};
use crate::proto::{
    AuthConfig, Enhanced, Event, MailParams, RemoteReply, Reply, Session, SessionConfig,
};
use crate::smtp_client::{Client, DataReplies, MailOptions};
use std::io::Write;
use std::time::Duration;

/// Silence from the client that ends the session (421 4.4.2), in commands and in data:
/// Postfix's `smtpd_timeout` for a local client is 300 s too.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(300);
/// Protocol errors before 421 (Postfix's `smtpd_hard_error_limit`).
const MAX_ERRORS: usize = 20;
const READ_CHUNK: usize = 64 * 1024;

/// Runs the SMTP session on stdin/stdout to its end; returns the exit status.
pub fn run(a: &SendmailArgs, s: &Settings) -> u8 {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            // Nothing was said to the client yet: it sees no greeting and gives up.
            eprintln!("sendmail: -bs: starting: {e}");
            return sysexits::EX_TEMPFAIL;
        }
    };
    let mut session = Session::new(SessionConfig {
        protocol: Protocol::Smtp,
        hostname: s.hostname.clone(),
        max_message_size: s.max_size.unwrap_or(0),
        max_recipients: s.max_recipients,
        max_line_length: s.max_line_length.unwrap_or(0),
        max_errors: MAX_ERRORS,
        // The local user is the identity: no TLS over a pipe, no AUTH.
        starttls: false,
        tls_active: false,
        require_tls: false,
        xforward_allowed: false,
        transcript: false,
        auth: AuthConfig::default(),
    });
    session.accept_unqualified_recipients();
    let mut d = Driver {
        a,
        s,
        rt,
        user: invoking_user(),
        txn: None,
        status: Status::default(),
    };
    d.drive(&mut session)
}

/// The worst that happened to a message the client sent.
#[derive(Default)]
struct Status {
    /// A message is nowhere for now (451), or the input ended inside a transaction.
    temporary: bool,
    /// The first message refused for every recipient: its exit status.
    refused: Option<u8>,
}

struct Driver<'a> {
    a: &'a SendmailArgs,
    s: &'a Settings,
    /// Runs the LMTP client's steps; current-thread, built once (cheap start-up).
    rt: tokio::runtime::Runtime,
    user: User,
    /// The transaction the client has open.
    txn: Option<Txn>,
    status: Status,
}

/// One client transaction, as far as the daemon is concerned.
struct Txn {
    /// Qualified; empty for `<>`.
    from: String,
    body: Body,
    /// Accepted recipients, qualified, each once, in order.
    rcpts: Vec<Rcpt>,
    /// The LMTP transaction open at the daemon (MAIL accepted), while it lasts.
    upstream: Option<Client>,
    /// Why recipients go to pickup/ rather than the daemon (for `-v`).
    why_pickup: Option<String>,
    message: Vec<u8>,
}

struct Rcpt {
    address: String,
    /// Accepted by the daemon in `upstream`; otherwise for pickup/.
    at_daemon: bool,
}

impl Txn {
    /// The daemon is gone for this transaction: everything goes to pickup/.
    fn lose_upstream(&mut self, why: String) {
        self.upstream = None;
        for r in &mut self.rcpts {
            r.at_daemon = false;
        }
        self.why_pickup.get_or_insert(why);
    }
}

impl Driver<'_> {
    fn drive(&mut self, session: &mut Session) -> u8 {
        let mut buf = vec![0u8; READ_CHUNK];
        let mut quit = false;
        loop {
            match session.next_event() {
                Event::NeedInput => {
                    if !self.flush(session, &mut quit) {
                        return self.end(session, quit);
                    }
                    match read_stdin(&mut buf, COMMAND_TIMEOUT) {
                        Ok(Read::Bytes(n)) => session.feed(&buf[..n]),
                        Ok(Read::Silent) => session.timeout(),
                        Ok(Read::Eof) => return self.end(session, quit),
                        Err(e) => {
                            eprintln!("sendmail: -bs: reading standard input: {e}");
                            return self.end(session, quit);
                        }
                    }
                }
                Event::Mail { from, .. } => {
                    let from = from.to_string();
                    let params = session.pending_mail_params().cloned().unwrap_or_default();
                    match self.mail(&from, &params) {
                        Ok(()) => session.accept_mail(),
                        Err(r) => session.reject_mail(r),
                    }
                }
                Event::Rcpt { to } => {
                    let to = to.to_string();
                    match self.rcpt(&to) {
                        Ok(()) => session.accept_rcpt(),
                        Err(r) => session.reject_rcpt(r),
                    }
                }
                Event::DataStart => match &mut self.txn {
                    Some(t) => {
                        t.message.clear();
                        session.accept_data();
                    }
                    // The session only asks inside a transaction that has recipients.
                    None => session.reject_data(Reply::new(451, "4.3.0", "Error: no transaction")),
                },
                Event::Data(bytes) => {
                    if let Some(t) = &mut self.txn {
                        t.message.extend_from_slice(bytes);
                    }
                }
                Event::DataAborted => {
                    // Too big, a line too long, or cut off: the session answered; the
                    // transaction is over and nothing of it is kept. A refusal of the
                    // message counts as one from the daemon would.
                    self.txn = None;
                    let exchanges = session.take_exchanges();
                    if let Some(ex) = exchanges.last()
                        && matches!(ex.verb, "DATA" | "BDAT")
                    {
                        self.note_refusal(ex.reply.code, &ex.reply.to_string());
                    }
                    note_quit(&exchanges, &mut quit);
                }
                Event::DataEnd => {
                    let reply = self.finish();
                    session.finish_message(vec![reply]);
                }
                // Never offered.
                Event::Auth { .. } => {
                    session.reject_auth(Reply::new(502, "5.5.1", "Error: command not implemented"))
                }
                // Never offered (`starttls: false`): the session does not ask.
                Event::StartTls => session.shutdown(),
                Event::Close => {
                    self.flush(session, &mut quit);
                    return self.end(session, quit);
                }
            }
        }
    }

    /// Writes the queued replies; `false` when standard output is gone.
    fn flush(&mut self, session: &mut Session, quit: &mut bool) -> bool {
        note_quit(&session.take_exchanges(), quit);
        if !session.has_output() {
            return true;
        }
        let out = session.take_output();
        let mut stdout = std::io::stdout().lock();
        match stdout.write_all(&out).and_then(|()| stdout.flush()) {
            Ok(()) => true,
            Err(e) => {
                if self.a.verbose > 0 {
                    eprintln!("sendmail: -bs: writing standard output: {e}");
                }
                false
            }
        }
    }

    /// A message refused with `code` and `line` ("552 5.3.4 …"): its exit status, unless
    /// an earlier one was refused.
    fn note_refusal(&mut self, code: u16, line: &str) {
        if code < 400 {
            return;
        }
        if code < 500 {
            self.status.temporary = true;
            return;
        }
        let status = line
            .split(' ')
            .nth(1)
            .filter(|t| t.starts_with("5."))
            .unwrap_or("5.0.0");
        let e = SinkError::permanent(status, line);
        self.status
            .refused
            .get_or_insert(Exit::from_result(&Err(e)).code);
    }

    /// The exit status once the session is over.
    fn end(&mut self, session: &Session, quit: bool) -> u8 {
        // QUIT abandons an open transaction as RSET does: the client said so. Otherwise a
        // transaction still open is a message the client meant to send and did not.
        if !quit && session.mail_from().is_some() {
            eprintln!(
                "sendmail: -bs: the input ended inside a transaction: that message was not sent"
            );
            self.status.temporary = true;
        }
        if let Some(t) = self.txn.take()
            && let Some(c) = t.upstream
        {
            self.rt.block_on(c.quit());
        }
        if self.status.temporary {
            sysexits::EX_TEMPFAIL
        } else {
            self.status.refused.unwrap_or(sysexits::OK)
        }
    }

    fn mail(&mut self, from: &str, params: &MailParams) -> Result<(), Reply> {
        // A transaction the client abandoned (RSET, a new EHLO) ends at the daemon too.
        if let Some(old) = self.txn.take()
            && let Some(c) = old.upstream
        {
            self.rt.block_on(c.quit());
        }
        let from = qualify(from, &self.s.domain).map_err(|why| {
            Reply::new(
                553,
                "5.1.7",
                format!("<{from}>: Sender address rejected: {why}"),
            )
        })?;
        // BINARYMIME is not offered (the session parses it): taken as 8BITMIME, which is
        // what DATA to the daemon and pickup/ can carry.
        let body = match params.body {
            Body::SevenBit => Body::SevenBit,
            Body::EightBitMime | Body::BinaryMime => Body::EightBitMime,
        };
        let mut txn = Txn {
            from,
            body,
            rcpts: Vec::new(),
            upstream: None,
            why_pickup: None,
            message: Vec::new(),
        };
        let Some(socket) = &self.s.socket else {
            txn.why_pickup = Some("the config has no unix LMTP listener".into());
            self.txn = Some(txn);
            return Ok(());
        };
        let opened = self.rt.block_on(async {
            let mut c = submit::open(socket, &self.s.hostname).await?;
            let caps = c.capabilities().clone();
            let options = MailOptions {
                size: params.size,
                body: (body == Body::EightBitMime && caps.has("8BITMIME")).then_some("8BITMIME"),
                smtputf8: params.smtputf8 && caps.has("SMTPUTF8"),
            };
            let reply = c
                .mail(&txn.from, &options)
                .await
                .map_err(|e| submit::Unreachable(e.to_string()))?;
            Ok::<_, submit::Unreachable>((c, reply))
        });
        match opened {
            Ok((c, reply)) if reply.is_positive() => txn.upstream = Some(c),
            Ok((c, reply)) if reply.code >= 500 => {
                self.rt.block_on(c.quit());
                return Err(reply_of(&reply));
            }
            Ok((c, reply)) => {
                self.rt.block_on(c.quit());
                txn.why_pickup = Some(format!("the daemon answered MAIL {}", reply.one_line()));
            }
            Err(submit::Unreachable(why)) => txn.why_pickup = Some(why),
        }
        if self.a.verbose > 0
            && let Some(why) = &txn.why_pickup
        {
            eprintln!(
                "sendmail: daemon not reachable ({why}): this message goes into {}",
                self.s.pickup.display()
            );
        }
        self.txn = Some(txn);
        Ok(())
    }

    fn rcpt(&mut self, to: &str) -> Result<(), Reply> {
        let Some(txn) = &mut self.txn else {
            return Err(Reply::new(503, "5.5.1", "Error: need MAIL command"));
        };
        let address = match qualify(to, &self.s.domain) {
            Ok(a) if !a.is_empty() => a,
            Ok(_) => return Err(Reply::new(501, "5.1.3", "Bad recipient address syntax")),
            Err(why) => {
                return Err(Reply::new(
                    501,
                    "5.1.3",
                    format!("<{to}>: Bad recipient address syntax: {why}"),
                ));
            }
        };
        // `root` and `root@DOMAIN` are one recipient: one delivery.
        if txn.rcpts.iter().any(|r| r.address == address) {
            return Ok(());
        }
        let mut at_daemon = false;
        if let Some(c) = &mut txn.upstream {
            match self.rt.block_on(c.rcpt(&address)) {
                Ok(reply) if reply.is_positive() => at_daemon = true,
                Ok(reply) if reply.code >= 500 => return Err(reply_of(&reply)),
                Ok(reply) => {
                    if self.a.verbose > 0 {
                        eprintln!(
                            "sendmail: <{address}>: the daemon said {}: into pickup/",
                            reply.one_line()
                        );
                    }
                }
                Err(e) => txn.lose_upstream(e.to_string()),
            }
        }
        txn.rcpts.push(Rcpt { address, at_daemon });
        Ok(())
    }

    /// The end of the data: the message to the daemon and/or pickup/, and the one reply.
    fn finish(&mut self) -> Reply {
        let Some(mut txn) = self.txn.take() else {
            return Reply::new(451, "4.3.0", "Error: no transaction");
        };
        let from_address = if txn.from.is_empty() {
            format!("{}@{}", self.user.login, self.s.domain)
        } else {
            txn.from.clone()
        };
        let compose = Compose {
            extract: false,
            from: sendmail_message::from_field(
                self.a.full_name.as_deref().or(self.user.gecos.as_deref()),
                &from_address,
            ),
            date: format!("Date: {}", crate::intake::received::now_rfc2822()),
            message_id: format!("Message-ID: <{}@{}>", new_id(), self.s.hostname),
        };
        let message = sendmail_message::prepare(&txn.message, &compose).message;
        txn.message = Vec::new();
        let mut outcomes: Vec<Outcome> = txn
            .rcpts
            .iter()
            .map(|_| Outcome::Deferred(txn.why_pickup.clone().unwrap_or_default()))
            .collect();
        let at_daemon: Vec<usize> = (0..txn.rcpts.len())
            .filter(|&i| txn.rcpts[i].at_daemon)
            .collect();
        // The daemon's own 250 (its queue id) is what the client is told when it took all.
        let mut daemon_ok = None;
        if let Some(mut c) = txn.upstream.take() {
            if !at_daemon.is_empty() {
                let sent = self.rt.block_on(c.data_bytes(&message, at_daemon.len()));
                daemon_ok = apply_data_replies(sent, &at_daemon, &mut outcomes);
            }
            self.rt.block_on(c.quit());
        }
        let verbose = self.a.verbose > 0;
        let mut deferred = Vec::new();
        let mut first_refusal: Option<RemoteReply> = None;
        let mut taken = 0;
        let mut kept_as = None;
        for (r, o) in txn.rcpts.iter().zip(outcomes) {
            match o {
                Outcome::Delivered => taken += 1,
                Outcome::Deferred(why) => {
                    if verbose && !why.is_empty() {
                        eprintln!("sendmail: <{}>: deferred ({why})", r.address);
                    }
                    deferred.push(r.address.clone());
                }
                Outcome::Rejected(reply) => {
                    if verbose {
                        eprintln!("sendmail: <{}>: refused: {}", r.address, reply.one_line());
                    }
                    first_refusal.get_or_insert(reply);
                }
            }
        }
        if !deferred.is_empty() {
            let env = PickupEnvelope {
                from: txn.from.clone(),
                rcpts: deferred,
                body: (txn.body == Body::EightBitMime || !message.is_ascii())
                    .then_some(Body::EightBitMime),
                // The file's owner says who submitted it.
                submitter: None,
            };
            match pickup::write(&self.s.pickup, &env, &message) {
                Ok(path) => {
                    taken += env.rcpts.len();
                    let id = path.file_name().map(|n| n.to_string_lossy().into_owned());
                    kept_as = Some(id.unwrap_or_default());
                    if verbose {
                        eprintln!("sendmail: kept in {} for the daemon", path.display());
                    }
                }
                Err(e) => {
                    eprintln!(
                        "sendmail: the daemon did not take the message for {} and it cannot be \
                         kept in {}: {e}; it was NOT sent to them",
                        env.rcpts.join(", "),
                        self.s.pickup.display()
                    );
                    self.status.temporary = true;
                    return Reply::new(
                        451,
                        "4.3.0",
                        format!(
                            "Error: queue file write error: the message was not kept for {}",
                            env.rcpts.join(", ")
                        ),
                    );
                }
            }
        }
        match first_refusal {
            Some(reply) if taken == 0 => {
                self.note_refusal(reply.code, &reply.one_line());
                reply_of(&reply)
            }
            _ => match (kept_as, daemon_ok) {
                (None, Some(ok)) => reply_of(&ok),
                (Some(id), _) => Reply::new(250, "2.0.0", format!("Ok: queued as {id} (pickup)")),
                (None, None) => Reply::new(250, "2.0.0", "Ok"),
            },
        }
    }
}

/// Whether the client said QUIT among these replies.
fn note_quit(exchanges: &[crate::proto::Exchange], quit: &mut bool) {
    if exchanges.iter().any(|ex| ex.verb == "QUIT") {
        *quit = true;
    }
}

/// The daemon's answers to the data, into the outcomes of the recipients it had; returns
/// its first positive reply.
fn apply_data_replies(
    sent: crate::smtp_client::Result<DataReplies>,
    at_daemon: &[usize],
    outcomes: &mut [Outcome],
) -> Option<RemoteReply> {
    let mut ok = None;
    match sent {
        // From the final dot on it may have the message without our seeing its reply: a
        // recipient without one goes to pickup/ too (at worst a duplicate, never lost).
        Err(e) => {
            for &i in at_daemon {
                outcomes[i] = Outcome::Deferred(e.to_string());
            }
        }
        Ok(DataReplies::Refused(reply)) => {
            for &i in at_daemon {
                outcomes[i] = submit::judge(&reply);
            }
        }
        Ok(DataReplies::Sent(finals)) => {
            for (n, &i) in at_daemon.iter().enumerate() {
                outcomes[i] = match finals.replies.get(n) {
                    Some(r) if r.is_positive() => {
                        ok.get_or_insert_with(|| r.clone());
                        Outcome::Delivered
                    }
                    Some(r) => submit::judge(r),
                    None => Outcome::Deferred(
                        finals
                            .error
                            .as_ref()
                            .map_or("no reply".into(), |e| e.to_string()),
                    ),
                };
            }
        }
    }
    ok
}

/// The daemon's reply as ours to the client: its code, enhanced code and text.
fn reply_of(r: &RemoteReply) -> Reply {
    let enhanced = r.enhanced().map(str::to_string);
    let lines = r
        .lines
        .iter()
        .map(|l| match &enhanced {
            Some(e) => l
                .strip_prefix(e.as_str())
                .map_or(l.as_str(), str::trim_start)
                .to_string(),
            None => l.clone(),
        })
        .collect();
    Reply::multiline(r.code, enhanced.as_deref().and_then(Enhanced::parse), lines)
        .with_default_enhanced()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_daemon_s_reply_keeps_its_codes() {
        let r = RemoteReply {
            code: 550,
            lines: vec!["5.1.1 <x@y>: no such route".into()],
        };
        let ours = reply_of(&r);
        assert_eq!(
            String::from_utf8(ours.render()).unwrap(),
            "550 5.1.1 <x@y>: no such route\r\n"
        );
        let bare = reply_of(&RemoteReply {
            code: 452,
            lines: vec!["too many".into()],
        });
        assert_eq!(
            String::from_utf8(bare.render()).unwrap(),
            "452 4.0.0 too many\r\n"
        );
    }
}
