//! The SMTP/LMTP server session: a state machine with bytes in, reply bytes and [`Event`]s
//! out. See the module documentation of [`crate::proto`] for how the I/O layer drives it.

use crate::config::Protocol;
use crate::envelope::{Body, XForward};
use crate::proto::command::{
    Command, MailParams, ParseError, loggable_line, parse_command, verb_of,
};
use crate::proto::data::{DotReader, DotStep, LineLimit};
use crate::proto::reply::Reply;

mod auth;
#[cfg(test)]
mod auth_tests;
#[cfg(test)]
mod tests;

use auth::Sasl;
pub use auth::{AuthConfig, Credentials, Mechanism};

/// Longest command line we accept, excluding its line end. RFC 5321 says 512, but MAIL
/// lines with several ESMTP parameters and XFORWARD lines grow beyond that in practice.
pub const MAX_COMMAND_LINE: usize = 4096;

/// What a session needs to know about its listener and client.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    pub protocol: Protocol,
    /// Our name in the greeting and the EHLO/LHLO reply.
    pub hostname: String,
    /// Largest message in bytes (after dot-unstuffing); 0 = unlimited. Advertised as
    /// `SIZE n` (`SIZE` alone when unlimited).
    pub max_message_size: u64,
    /// Recipients per transaction; 0 = unlimited.
    pub max_recipients: usize,
    /// Longest message line in bytes, excluding the line end; 0 = unlimited.
    pub max_line_length: u64,
    /// Protocol errors before we answer 421 and close; 0 = unlimited.
    pub max_errors: usize,
    /// Offer STARTTLS (a `tls = "starttls"` listener not yet encrypted).
    pub starttls: bool,
    /// The stream is encrypted (implicit TLS, or set by [`Session::tls_started`]).
    pub tls_active: bool,
    /// Refuse MAIL until TLS is active.
    pub require_tls: bool,
    /// The client is trusted: advertise and accept XFORWARD.
    pub xforward_allowed: bool,
    /// Keep each command line (AUTH argument masked) in its [`Exchange`], for a trace
    /// log; off, the session copies no client text it does not need.
    pub transcript: bool,
    /// SMTP AUTH: mechanisms, whether this client must authenticate ([`AuthConfig`]).
    pub auth: AuthConfig,
}

/// One reply the session queued and the command it answered, for the I/O layer's log
/// (taken with [`Session::take_exchanges`]). The session itself logs nothing: it knows
/// what was refused and why, the I/O layer knows where the log goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exchange {
    /// The verb answered ("MAIL", "RCPT", ...; "UNKNOWN" for an unrecognised one), or ""
    /// for a reply no command asked for (idle timeout, shutdown).
    pub verb: &'static str,
    /// The command line, with [`SessionConfig::transcript`] only.
    pub line: Option<String>,
    pub reply: Reply,
    /// Set when the reply refuses MAIL, RCPT, DATA or BDAT before any message data was
    /// taken, or closes the session with 421. A message that was being received and is
    /// refused at its end (size, line length) is not: the I/O layer logs that message
    /// itself, with its id, and so it is never logged twice.
    pub refused: Option<Refusal>,
}

/// The facts of a refusal, taken when it was made (a pipelined command may change them
/// before the I/O layer looks).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub helo: Option<String>,
    /// The transaction's sender; for a refused MAIL, the one it asked for.
    pub from: Option<String>,
    /// The address of a refused RCPT.
    pub rcpt: Option<String>,
}

/// What the session needs from the I/O layer next. Questions (`Mail`, `Rcpt`, `DataStart`,
/// `DataEnd`) block the session: until answered, [`Session::next_event`] consumes no input
/// and returns the same question again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event<'a> {
    /// All buffered input is processed: write the pending output, then read and
    /// [`Session::feed`] more.
    NeedInput,
    /// MAIL FROM passed the protocol checks; `from` is empty for the null sender. Answer
    /// with [`Session::accept_mail`] or [`Session::reject_mail`].
    Mail { from: &'a str, size: Option<u64> },
    /// RCPT TO passed the protocol checks. Answer with [`Session::accept_rcpt`] or
    /// [`Session::reject_rcpt`].
    Rcpt { to: &'a str },
    /// An AUTH exchange is complete: check the credentials and answer with
    /// [`Session::accept_auth`] or [`Session::reject_auth`] (`535 5.7.8`).
    Auth {
        mechanism: Mechanism,
        credentials: &'a Credentials,
    },
    /// DATA or the first BDAT chunk of a transaction: open a spool file and answer with
    /// [`Session::accept_data`], or [`Session::reject_data`] (e.g. 451 spool unavailable).
    DataStart,
    /// Message bytes (dot-unstuffed; BDAT chunks as sent) to append to the spool file.
    Data(&'a [u8]),
    /// The message is complete: deliver or spool it, then answer with
    /// [`Session::finish_message`].
    DataEnd,
    /// The message being received is dropped (too big, line too long, RSET/QUIT/EHLO
    /// between BDAT chunks, timeout, shutdown); the session already queued any reply.
    /// Discard the spool file. Only sent after an accepted `DataStart`.
    DataAborted,
    /// The session queued `220 2.0.0 Ready to start TLS`: write it, upgrade the stream,
    /// then call [`Session::tls_started`].
    StartTls,
    /// Write the pending output and close the connection. Returned for good.
    Close,
}

/// A question waiting for the I/O layer's answer.
#[derive(Debug, Clone)]
enum Question {
    Mail {
        from: String,
        params: MailParams,
    },
    Rcpt {
        to: String,
    },
    Auth {
        mechanism: Mechanism,
        credentials: Credentials,
    },
    /// `None` for DATA, `Some((chunk size, LAST))` for a first BDAT chunk.
    Data {
        bdat: Option<(u64, bool)>,
    },
}

/// A BDAT chunk that fails: its bytes are still read (the client sent them), then `reply`.
#[derive(Debug, Clone)]
struct ChunkFailure {
    reply: Reply,
    /// A protocol error (counts toward `max_errors`), not a limit or policy answer.
    counted: bool,
}

/// A BDAT chunk failed and ended its transaction, but the client may have pipelined more
/// chunks of it. RFC 3030 2: "the receiver SMTP MUST be prepared to accept and discard
/// additional BDAT chunks already in the pipeline after the failed BDAT". Each gets the
/// failed chunk's reply again, up to BDAT LAST or any other command — counted as an error
/// only if the failed chunk's was (a BDAT with no transaction is a protocol error each
/// time; a chunk past the size limit is not).
#[derive(Debug, Clone)]
struct FailedChunks {
    reply: Reply,
    counted: bool,
    /// How many times BDAT LAST repeats it: LMTP answers it once per recipient accepted
    /// before the failure, as it would have on success.
    last_replies: usize,
}

#[derive(Debug, Clone)]
enum State {
    /// Reading command lines.
    Command,
    /// A command line was too long: dropping bytes up to the next LF.
    DiscardLine,
    /// Inside an AUTH exchange: the next line is a SASL response, not a command.
    Sasl(Sasl),
    Ask(Question),
    /// After 354: reading dot-stuffed message text.
    Data(DotReader),
    /// Reading the bytes of a BDAT chunk.
    Bdat {
        remaining: u64,
        size: u64,
        last: bool,
        fail: Option<ChunkFailure>,
    },
    /// `DataEnd` returned; waiting for `finish_message`.
    AwaitFinish,
    /// `StartTls` returned; waiting for `tls_started`.
    AwaitTls,
    Closed,
}

/// Internal result of one processing step, turned into an [`Event`] by `next_event`.
/// Owned (ranges, not slices) so the processing loop holds no borrow of the buffer.
enum Step {
    NeedInput,
    Ask,
    Data(std::ops::Range<usize>),
    Cr,
    DataEnd,
    DataAborted,
    StartTls,
    Close,
}

/// The command being answered, for its [`Exchange`].
#[derive(Debug, Default)]
struct Current {
    verb: &'static str,
    /// MAIL's sender or RCPT's recipient as given.
    arg: Option<String>,
    line: Option<String>,
}

/// One SMTP or LMTP server session (one connection).
#[derive(Debug)]
pub struct Session {
    cfg: SessionConfig,
    state: State,
    /// Received bytes; `buf[pos..]` is unprocessed. Compacted on `feed`, so `Data` slices
    /// handed out stay valid until the I/O layer feeds again.
    buf: Vec<u8>,
    pos: usize,
    /// Rendered replies not yet taken by the I/O layer.
    out: Vec<u8>,
    errors: usize,
    /// A `DataAborted` to report before anything else.
    abort_pending: bool,
    /// `DataStart` was accepted and neither `DataEnd` nor `DataAborted` reported since:
    /// the I/O layer has an open spool file that must be resolved.
    msg_open: bool,
    helo: Option<String>,
    esmtp: bool,
    xforward: XForward,
    mail_from: Option<String>,
    /// The envelope's recipients: each accepted address once, so a repeated RCPT is not
    /// a second delivery.
    rcpts: Vec<String>,
    /// For each RCPT answered 250, in order, the index of its address in `rcpts`. LMTP owes
    /// one reply per accepted RCPT after the data (RFC 2033); a repeated one gets its
    /// address's reply, which is the only real outcome for it.
    accepted: Vec<usize>,
    /// Some RCPT was refused by the I/O layer, so "no valid recipients" is the honest
    /// answer to DATA (rather than "need RCPT").
    rcpt_refused: bool,
    body: Body,
    smtputf8: bool,
    /// A BDAT chunk was accepted in this transaction: DATA and RCPT are out of order now.
    bdat_used: bool,
    /// Bytes announced by the BDAT chunks of this transaction so far.
    bdat_size: u64,
    /// Line lengths of the BDAT message; its limit is 0 for BODY=BINARYMIME, which has no
    /// lines (RFC 3030 3).
    bdat_lines: LineLimit,
    /// Set after a failed BDAT chunk, until BDAT LAST or another command.
    failed_chunks: Option<FailedChunks>,
    /// What the replies being queued answer.
    current: Current,
    /// Set by `accept_auth`; cleared by STARTTLS (RFC 3207 4.2).
    auth_user: Option<String>,
    /// AUTH exchanges the I/O layer refused, toward `auth.max_failures`.
    auth_failures: usize,
    /// CRAM-MD5 challenges sent, so that each one differs.
    auth_attempts: u64,
    /// Replies queued and not yet taken by the I/O layer, with what they answered.
    exchanges: Vec<Exchange>,
    /// RCPT may name an address without a domain (a local submission qualifies it);
    /// set with [`Session::accept_unqualified_recipients`].
    unqualified_rcpt: bool,
}

impl Session {
    /// A new session; the greeting is already queued in the output.
    pub fn new(cfg: SessionConfig) -> Session {
        let kind = match cfg.protocol {
            Protocol::Smtp => "ESMTP",
            Protocol::Lmtp => "LMTP",
        };
        let greeting = Reply::plain(220, format!("{} {kind} mailchute", cfg.hostname));
        let mut s = Session {
            cfg,
            state: State::Command,
            buf: Vec::new(),
            pos: 0,
            out: Vec::new(),
            errors: 0,
            abort_pending: false,
            msg_open: false,
            helo: None,
            esmtp: false,
            xforward: XForward::default(),
            mail_from: None,
            rcpts: Vec::new(),
            accepted: Vec::new(),
            rcpt_refused: false,
            body: Body::SevenBit,
            smtputf8: false,
            bdat_used: false,
            bdat_size: 0,
            bdat_lines: LineLimit::new(0),
            failed_chunks: None,
            current: Current::default(),
            exchanges: Vec::new(),
            auth_user: None,
            auth_failures: 0,
            auth_attempts: 0,
            unqualified_rcpt: false,
        };
        greeting.render_into(&mut s.out);
        s
    }

    /// Lets RCPT name an address without a domain (`RCPT TO:<root>`): `Event::Rcpt`
    /// carries it as given, and the I/O layer qualifies it (`sendmail -bs`, a local
    /// submission, as Postfix's; a listener refuses it with 501 5.1.3).
    pub fn accept_unqualified_recipients(&mut self) {
        self.unqualified_rcpt = true;
    }

    /// The parameters of the MAIL FROM waiting in [`Event::Mail`] (BODY=, SMTPUTF8, SIZE=),
    /// for an I/O layer that passes them on before it answers; `None` when no MAIL waits.
    pub fn pending_mail_params(&self) -> Option<&MailParams> {
        match &self.state {
            State::Ask(Question::Mail { params, .. }) => Some(params),
            _ => None,
        }
    }

    /// Appends received bytes. Ignored once closed, and while waiting for the TLS
    /// handshake (plaintext sent then must never be read as commands).
    pub fn feed(&mut self, input: &[u8]) {
        if matches!(self.state, State::Closed | State::AwaitTls) {
            return;
        }
        if self.pos > 0 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.extend_from_slice(input);
    }

    /// Processes buffered input until something needs the I/O layer.
    pub fn next_event(&mut self) -> Event<'_> {
        match self.step() {
            Step::NeedInput => Event::NeedInput,
            Step::Ask => match &self.state {
                State::Ask(Question::Mail { from, params }) => Event::Mail {
                    from,
                    size: params.size,
                },
                State::Ask(Question::Rcpt { to }) => Event::Rcpt { to },
                State::Ask(Question::Auth {
                    mechanism,
                    credentials,
                }) => Event::Auth {
                    mechanism: *mechanism,
                    credentials,
                },
                State::Ask(Question::Data { .. }) => Event::DataStart,
                // `step` returns `Ask` only in the `Ask` state.
                _ => Event::NeedInput,
            },
            Step::Data(range) => Event::Data(self.buf.get(range).unwrap_or_default()),
            Step::Cr => Event::Data(b"\r"),
            Step::DataEnd => Event::DataEnd,
            Step::DataAborted => Event::DataAborted,
            Step::StartTls => Event::StartTls,
            Step::Close => Event::Close,
        }
    }

    /// Takes the rendered replies to write.
    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out)
    }

    /// The rendered replies not yet consumed (for partial writes with [`Session::consume_output`]).
    pub fn output(&self) -> &[u8] {
        &self.out
    }

    /// Marks `n` bytes of [`Session::output`] as written.
    pub fn consume_output(&mut self, n: usize) {
        let n = n.min(self.out.len());
        self.out.drain(..n);
    }

    /// Takes the record of the replies queued since the last call, in order. Kept until
    /// taken, like the output.
    pub fn take_exchanges(&mut self) -> Vec<Exchange> {
        std::mem::take(&mut self.exchanges)
    }

    pub fn has_output(&self) -> bool {
        !self.out.is_empty()
    }

    /// Whether the session is over (after `Close` was or will be returned).
    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed)
    }

    /// Accepts the pending MAIL FROM: `250 2.1.0 Ok`, the transaction starts.
    pub fn accept_mail(&mut self) {
        match std::mem::replace(&mut self.state, State::Command) {
            State::Ask(Question::Mail { from, params }) => {
                self.mail_from = Some(from);
                self.body = params.body;
                self.smtputf8 = params.smtputf8;
                self.reply(Reply::new(250, "2.1.0", "Ok"));
            }
            other => self.state = other,
        }
    }

    /// Refuses the pending MAIL FROM with `reply` (a 4xx or 5xx).
    pub fn reject_mail(&mut self, reply: Reply) {
        if let State::Ask(Question::Mail { .. }) = self.state {
            self.state = State::Command;
            self.reply(refusal(reply));
        }
    }

    /// Accepts the pending RCPT TO: `250 2.1.5 Ok`.
    pub fn accept_rcpt(&mut self) {
        match std::mem::replace(&mut self.state, State::Command) {
            State::Ask(Question::Rcpt { to }) => {
                self.accepted.push(self.rcpts.len());
                self.rcpts.push(to);
                self.reply(Reply::new(250, "2.1.5", "Ok"));
            }
            other => self.state = other,
        }
    }

    /// Refuses the pending RCPT TO with `reply` (a 4xx or 5xx).
    pub fn reject_rcpt(&mut self, reply: Reply) {
        if let State::Ask(Question::Rcpt { .. }) = self.state {
            self.state = State::Command;
            self.rcpt_refused = true;
            self.reply(refusal(reply));
        }
    }

    /// Accepts DATA (queues 354) or the first BDAT chunk (its bytes follow as `Data`).
    pub fn accept_data(&mut self) {
        match std::mem::replace(&mut self.state, State::Command) {
            State::Ask(Question::Data { bdat: None }) => {
                self.msg_open = true;
                self.reply(Reply::plain(354, "End data with <CR><LF>.<CR><LF>"));
                self.state = State::Data(DotReader::new(
                    self.cfg.max_message_size,
                    self.cfg.max_line_length,
                ));
            }
            State::Ask(Question::Data {
                bdat: Some((size, last)),
            }) => {
                self.msg_open = true;
                self.bdat_used = true;
                self.bdat_size = size;
                self.bdat_lines = LineLimit::new(match self.body {
                    Body::BinaryMime => 0,
                    _ => self.cfg.max_line_length,
                });
                self.state = State::Bdat {
                    remaining: size,
                    size,
                    last,
                    fail: None,
                };
            }
            other => self.state = other,
        }
    }

    /// Refuses DATA/BDAT with `reply`; the transaction is reset. For BDAT the chunk's bytes
    /// are still read and dropped before the reply is sent.
    pub fn reject_data(&mut self, reply: Reply) {
        match std::mem::replace(&mut self.state, State::Command) {
            State::Ask(Question::Data { bdat: None }) => {
                self.reply(refusal(reply));
                self.reset_transaction();
            }
            State::Ask(Question::Data {
                bdat: Some((size, last)),
            }) => {
                self.state = State::Bdat {
                    remaining: size,
                    size,
                    last,
                    fail: Some(ChunkFailure {
                        reply: refusal(reply),
                        counted: false,
                    }),
                };
            }
            other => self.state = other,
        }
    }

    /// Answers `DataEnd`. SMTP: one reply (the first is used). LMTP: one per entry of
    /// [`Session::rcpts`], in that order; missing ones become `451 4.3.0`, extra ones are
    /// dropped. The session answers every accepted RCPT with its address's reply (a
    /// repeated RCPT gets the same as the first). The transaction is reset; HELO and TLS
    /// state stay.
    pub fn finish_message(&mut self, replies: Vec<Reply>) {
        if !matches!(self.state, State::AwaitFinish) {
            return;
        }
        self.state = State::Command;
        match self.cfg.protocol {
            Protocol::Lmtp if !self.accepted.is_empty() => {
                for i in std::mem::take(&mut self.accepted) {
                    self.reply_unrefused(final_reply(replies.get(i)));
                }
            }
            // SMTP; and never no reply at all.
            _ => self.reply_unrefused(final_reply(replies.first())),
        }
        self.reset_transaction();
    }

    /// The I/O layer finished the TLS handshake after `StartTls`: the session starts over
    /// (RFC 3207: the client must send EHLO again), with TLS active.
    pub fn tls_started(&mut self) {
        if !matches!(self.state, State::AwaitTls) {
            return;
        }
        self.cfg.tls_active = true;
        self.buf.clear();
        self.pos = 0;
        self.helo = None;
        self.esmtp = false;
        self.auth_user = None;
        self.reset_transaction();
        self.state = State::Command;
    }

    /// The client was idle too long: queues `421 4.4.2` and closes.
    pub fn timeout(&mut self) {
        if !self.is_closed() {
            self.current = Current::default();
            let text = format!("{} Error: timeout exceeded", self.cfg.hostname);
            self.close_with(Reply::new(421, "4.4.2", text));
        }
    }

    /// The server is shutting down: queues `421 4.3.2` and closes.
    pub fn shutdown(&mut self) {
        if !self.is_closed() {
            self.current = Current::default();
            let text = format!(
                "{} Service shutting down, closing channel",
                self.cfg.hostname
            );
            self.close_with(Reply::new(421, "4.3.2", text));
        }
    }

    /// HELO/EHLO/LHLO argument.
    pub fn helo(&self) -> Option<&str> {
        self.helo.as_deref()
    }

    /// The client greeted with EHLO or LHLO.
    pub fn esmtp(&self) -> bool {
        self.esmtp
    }

    pub fn protocol(&self) -> Protocol {
        self.cfg.protocol
    }

    pub fn tls_active(&self) -> bool {
        self.cfg.tls_active
    }

    /// XFORWARD attributes of the current transaction (empty unless the client is trusted).
    pub fn xforward(&self) -> &XForward {
        &self.xforward
    }

    /// The accepted MAIL FROM address (empty for `<>`); `None` outside a transaction.
    pub fn mail_from(&self) -> Option<&str> {
        self.mail_from.as_deref()
    }

    /// Accepted recipients, in order, each address once.
    pub fn rcpts(&self) -> &[String] {
        &self.rcpts
    }

    /// BODY= of the accepted MAIL FROM.
    pub fn body(&self) -> Body {
        self.body
    }

    /// SMTPUTF8 was given with the accepted MAIL FROM.
    pub fn smtputf8(&self) -> bool {
        self.smtputf8
    }

    /// Queues a reply to the current command; a refusal is recorded as one.
    fn reply(&mut self, r: Reply) {
        let refused = self.refusal_facts(&r);
        self.queue_reply(r, refused);
    }

    /// Queues a reply whose refusal, if it is one, the I/O layer logs itself (the final
    /// reply to a message) or that only repeats one already recorded.
    fn reply_unrefused(&mut self, r: Reply) {
        self.queue_reply(r, None);
    }

    fn queue_reply(&mut self, r: Reply, refused: Option<Refusal>) {
        r.render_into(&mut self.out);
        self.exchanges.push(Exchange {
            verb: self.current.verb,
            line: self.current.line.clone(),
            reply: r,
            refused,
        });
    }

    /// The facts of `r` if it refuses a transaction command or closes the session.
    fn refusal_facts(&self, r: &Reply) -> Option<Refusal> {
        let verb = self.current.verb;
        let transaction = matches!(verb, "MAIL" | "RCPT" | "DATA" | "BDAT");
        if !(r.code == 421 || (r.code >= 400 && transaction)) {
            return None;
        }
        let from = match verb {
            "MAIL" => self.current.arg.clone(),
            _ => self.mail_from.clone(),
        };
        Some(Refusal {
            helo: self.helo.clone(),
            from,
            rcpt: (verb == "RCPT").then(|| self.current.arg.clone()).flatten(),
        })
    }

    /// Queues a protocol error reply and counts it; too many close the session.
    fn error(&mut self, r: Reply) {
        self.reply(r);
        self.count_error();
    }

    fn count_error(&mut self) {
        self.errors += 1;
        if self.cfg.max_errors > 0 && self.errors >= self.cfg.max_errors && !self.is_closed() {
            let text = format!("{} Error: too many errors", self.cfg.hostname);
            self.close_with(Reply::new(421, "4.7.0", text));
        }
    }

    fn close_with(&mut self, r: Reply) {
        self.abort_open_message();
        self.reply(r);
        self.state = State::Closed;
        self.buf = Vec::new();
        self.pos = 0;
    }

    fn abort_open_message(&mut self) {
        if self.msg_open {
            self.msg_open = false;
            self.abort_pending = true;
        }
    }

    fn reset_transaction(&mut self) {
        self.mail_from = None;
        self.rcpts.clear();
        self.accepted.clear();
        self.rcpt_refused = false;
        self.body = Body::SevenBit;
        self.smtputf8 = false;
        self.bdat_used = false;
        self.bdat_size = 0;
        // Postfix XFORWARD_README: attributes last until the end of the transaction.
        self.xforward = XForward::default();
    }

    /// How many replies end a message (after DATA's dot or BDAT LAST): LMTP sends one per
    /// accepted recipient.
    fn final_replies(&self) -> usize {
        match self.cfg.protocol {
            Protocol::Smtp => 1,
            Protocol::Lmtp => self.accepted.len().max(1),
        }
    }

    /// Queues `r` as the reply that ends a message (or a failed chunk), `n` times,
    /// recorded once: as a refusal only when `refusal` (no message data was taken, so the
    /// I/O layer has no message to log).
    fn end_of_message_reply(&mut self, r: Reply, n: usize, refusal: bool) {
        for _ in 1..n {
            r.render_into(&mut self.out);
        }
        match refusal {
            true => self.reply(r),
            false => self.reply_unrefused(r),
        }
    }

    fn step(&mut self) -> Step {
        loop {
            if self.abort_pending {
                self.abort_pending = false;
                return Step::DataAborted;
            }
            match &mut self.state {
                State::Closed => return Step::Close,
                State::Ask(_) => return Step::Ask,
                State::AwaitFinish => return Step::DataEnd,
                State::AwaitTls => return Step::StartTls,
                State::Command | State::Sasl(_) => {
                    if let Some(step) = self.read_command() {
                        return step;
                    }
                }
                State::DiscardLine => {
                    let avail = &self.buf[self.pos..];
                    match avail.iter().position(|&b| b == b'\n') {
                        Some(i) => {
                            self.pos += i + 1;
                            self.state = State::Command;
                            self.failed_chunks = None;
                            self.error(Reply::new(500, "5.5.2", "Error: line too long"));
                        }
                        None => {
                            self.pos = self.buf.len();
                            return Step::NeedInput;
                        }
                    }
                }
                State::Data(reader) => {
                    let base = self.pos;
                    let (n, step) = reader.step(&self.buf[base..]);
                    self.pos += n;
                    match step {
                        DotStep::Data(r) => return Step::Data(base + r.start..base + r.end),
                        DotStep::Cr => return Step::Cr,
                        DotStep::NeedInput => return Step::NeedInput,
                        DotStep::End => {
                            let (too_big, too_long) = (reader.too_big(), reader.line_too_long());
                            self.end_of_data(too_big, too_long);
                        }
                    }
                }
                State::Bdat { .. } => {
                    if let Some(step) = self.read_chunk() {
                        return step;
                    }
                }
            }
        }
    }

    /// Reads what is buffered of the current BDAT chunk. `None` when the chunk ended or
    /// the bytes read are dropped (keep going).
    fn read_chunk(&mut self) -> Option<Step> {
        let State::Bdat {
            remaining, fail, ..
        } = &mut self.state
        else {
            return None;
        };
        if *remaining == 0 {
            self.end_of_chunk();
            return None;
        }
        let avail = self.buf.len() - self.pos;
        if avail == 0 {
            return Some(Step::NeedInput);
        }
        let n = (*remaining).min(avail as u64) as usize;
        *remaining -= n as u64;
        let range = self.pos..self.pos + n;
        self.pos += n;
        if fail.is_some() {
            return None;
        }
        if self.bdat_lines.bytes(&self.buf[range.clone()]) {
            // The rest of the chunk is still read and dropped, then the refusal.
            *fail = Some(ChunkFailure {
                reply: line_too_long(),
                counted: false,
            });
            return None;
        }
        Some(Step::Data(range))
    }

    /// Reads and handles one command line. `None` when a line was handled (keep going).
    fn read_command(&mut self) -> Option<Step> {
        let avail = &self.buf[self.pos..];
        let Some(i) = avail.iter().position(|&b| b == b'\n') else {
            if avail.len() > MAX_COMMAND_LINE + 1 {
                // The 500 comes at the line's end: it answers this line, not the last one.
                self.current = Current {
                    verb: verb_of(avail),
                    ..Current::default()
                };
                self.pos = self.buf.len();
                self.state = State::DiscardLine;
                return None;
            }
            return Some(Step::NeedInput);
        };
        let start = self.pos;
        let mut end = start + i;
        self.pos = end + 1;
        if end > start && self.buf[end - 1] == b'\r' {
            end -= 1;
        }
        if end - start > MAX_COMMAND_LINE {
            // Inside AUTH too: the exchange ends with the refusal.
            if let State::Sasl(_) = self.state {
                self.state = State::Command;
            }
            self.failed_chunks = None;
            self.current = Current {
                verb: verb_of(&self.buf[start..end]),
                ..Current::default()
            };
            self.error(Reply::new(500, "5.5.2", "Error: line too long"));
            return None;
        }
        if let State::Sasl(_) = self.state {
            let State::Sasl(step) = std::mem::replace(&mut self.state, State::Command) else {
                return None;
            };
            let line = self.buf[start..end].to_vec();
            self.sasl_line(step, &line);
            return None;
        }
        let line = &self.buf[start..end];
        self.current = Current {
            verb: verb_of(line),
            arg: None,
            line: self.cfg.transcript.then(|| loggable_line(line)),
        };
        let cmd = parse_command(line);
        self.handle(cmd)
    }

    fn handle(&mut self, cmd: Result<Command, ParseError>) -> Option<Step> {
        if !matches!(cmd, Ok(Command::Bdat { .. })) {
            // The client saw the failure and moved on (RFC 3030: it sends no more chunks).
            self.failed_chunks = None;
        }
        let cmd = match cmd {
            Ok(c) => c,
            Err(ParseError::UnqualifiedRecipient(to)) if self.unqualified_rcpt => {
                Command::Rcpt { to }
            }
            Err(e) => {
                self.error(e.reply());
                return None;
            }
        };
        let lmtp = self.cfg.protocol == Protocol::Lmtp;
        match cmd {
            Command::Ehlo(_) | Command::Helo(_) if lmtp => {
                self.error(Reply::new(500, "5.5.1", "Error: this is LMTP, use LHLO"));
            }
            Command::Lhlo(_) if !lmtp => self.error(ParseError::UnknownCommand.reply()),
            Command::Ehlo(name) | Command::Lhlo(name) => self.hello(name, true),
            Command::Helo(name) => self.hello(name, false),
            Command::Mail { from, params } => {
                self.current.arg = Some(from.clone());
                self.mail(from, params)
            }
            Command::Rcpt { to } => {
                self.current.arg = Some(to.clone());
                self.rcpt(to)
            }
            Command::Data => self.data(),
            Command::Bdat { size, last } => self.bdat(size, last),
            Command::Rset => {
                self.abort_open_message();
                self.reset_transaction();
                self.reply(Reply::new(250, "2.0.0", "Ok"));
            }
            Command::Noop => self.reply(Reply::new(250, "2.0.0", "Ok")),
            Command::Quit => {
                self.close_with(Reply::new(221, "2.0.0", "Bye"));
            }
            Command::Help => self.reply(Reply::new(
                214,
                "2.0.0",
                "Commands: EHLO HELO LHLO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY STARTTLS AUTH",
            )),
            Command::Vrfy => self.reply(Reply::new(
                252,
                "2.0.0",
                "Cannot VRFY user, but will accept message and attempt delivery",
            )),
            Command::Expn => self.error(Reply::new(502, "5.5.1", "Error: command not implemented")),
            Command::Auth { mechanism, initial } => self.auth(mechanism, initial),
            Command::StartTls => return self.starttls(),
            Command::XForward(attrs) => {
                if !self.cfg.xforward_allowed {
                    self.error(Reply::new(
                        550,
                        "5.7.0",
                        "Error: insufficient authorization",
                    ));
                } else if self.mail_from.is_some() {
                    self.error(Reply::new(
                        503,
                        "5.5.1",
                        "Error: MAIL transaction in progress",
                    ));
                } else {
                    for (attr, value) in attrs {
                        attr.set(&mut self.xforward, value);
                    }
                    self.reply(Reply::new(250, "2.0.0", "Ok"));
                }
            }
        }
        None
    }

    fn hello(&mut self, name: String, esmtp: bool) {
        self.abort_open_message();
        self.reset_transaction();
        self.helo = Some(name);
        self.esmtp = esmtp;
        if !esmtp {
            self.reply(Reply::plain(250, self.cfg.hostname.clone()));
            return;
        }
        let mut lines = vec![self.cfg.hostname.clone(), "PIPELINING".to_string()];
        lines.push(match self.cfg.max_message_size {
            0 => "SIZE".to_string(),
            n => format!("SIZE {n}"),
        });
        lines.extend(["8BITMIME", "SMTPUTF8", "ENHANCEDSTATUSCODES", "CHUNKING"].map(String::from));
        if self.cfg.starttls && !self.cfg.tls_active {
            lines.push("STARTTLS".to_string());
        }
        if let Some(auth) = self.auth_capability() {
            lines.push(auth);
        }
        if self.cfg.xforward_allowed {
            lines.push("XFORWARD NAME ADDR PORT PROTO HELO IDENT SOURCE".to_string());
        }
        self.reply(Reply::multiline(250, None, lines));
    }

    fn need_hello(&self) -> Reply {
        let verb = match self.cfg.protocol {
            Protocol::Smtp => "HELO/EHLO",
            Protocol::Lmtp => "LHLO",
        };
        Reply::new(503, "5.5.1", format!("Error: send {verb} first"))
    }

    fn mail(&mut self, from: String, params: MailParams) {
        if self.helo.is_none() {
            let r = self.need_hello();
            return self.error(r);
        }
        if self.cfg.require_tls && !self.cfg.tls_active {
            return self.error(Reply::new(
                530,
                "5.7.0",
                "Must issue a STARTTLS command first",
            ));
        }
        if self.cfg.auth.required && self.auth_user.is_none() {
            return self.error(Reply::new(530, "5.7.0", "Authentication required"));
        }
        if self.mail_from.is_some() {
            return self.error(Reply::new(503, "5.5.1", "Error: nested MAIL command"));
        }
        if let Some(size) = params.size
            && self.cfg.max_message_size > 0
            && size > self.cfg.max_message_size
        {
            return self.reply(too_big());
        }
        if !from.is_ascii() && !params.smtputf8 {
            return self.error(Reply::new(
                553,
                "5.6.7",
                "Error: non-ASCII sender address requires SMTPUTF8",
            ));
        }
        self.state = State::Ask(Question::Mail { from, params });
    }

    fn rcpt(&mut self, to: String) {
        if self.mail_from.is_none() {
            return self.error(Reply::new(503, "5.5.1", "Error: need MAIL command"));
        }
        if self.bdat_used {
            return self.error(Reply::new(503, "5.5.1", "Error: RCPT after BDAT"));
        }
        if self.cfg.max_recipients > 0 && self.accepted.len() >= self.cfg.max_recipients {
            return self.reply(Reply::new(452, "4.5.3", "Error: too many recipients"));
        }
        if !to.is_ascii() && !self.smtputf8 {
            return self.error(Reply::new(
                553,
                "5.6.7",
                "Error: non-ASCII recipient address requires SMTPUTF8",
            ));
        }
        if let Some(i) = self.rcpts.iter().position(|r| *r == to) {
            // Already accepted (as Postfix does, 250 without asking again): the message
            // goes to it once, and the reply after the data is that one delivery's.
            self.accepted.push(i);
            return self.reply(Reply::new(250, "2.1.5", "Ok"));
        }
        self.state = State::Ask(Question::Rcpt { to });
    }

    /// Why this transaction cannot take message data now, if it cannot: the reply and
    /// whether it counts as a protocol error.
    fn data_refusal(&self) -> Option<(Reply, bool)> {
        if self.mail_from.is_none() {
            return Some((Reply::new(503, "5.5.1", "Error: need MAIL command"), true));
        }
        if self.rcpts.is_empty() {
            return Some(if self.rcpt_refused {
                (
                    Reply::new(554, "5.5.1", "Error: no valid recipients"),
                    false,
                )
            } else {
                (Reply::new(503, "5.5.1", "Error: need RCPT command"), true)
            });
        }
        None
    }

    fn data(&mut self) {
        if let Some((r, counted)) = self.data_refusal() {
            self.reply(r);
            if counted {
                self.count_error();
            }
            return;
        }
        if self.bdat_used {
            return self.error(Reply::new(503, "5.5.1", "Error: DATA after BDAT"));
        }
        if self.body == Body::BinaryMime {
            return self.error(Reply::new(
                503,
                "5.5.1",
                "Error: BODY=BINARYMIME requires BDAT",
            ));
        }
        self.state = State::Ask(Question::Data { bdat: None });
    }

    fn bdat(&mut self, size: u64, last: bool) {
        let max = self.cfg.max_message_size;
        if let Some(f) = &self.failed_chunks {
            // Pipelined behind a failed chunk: the same answer.
            let fail = ChunkFailure {
                reply: f.reply.clone(),
                counted: f.counted,
            };
            self.state = State::Bdat {
                remaining: size,
                size,
                last,
                fail: Some(fail),
            };
            return;
        }
        let fail = match self.data_refusal() {
            Some((reply, counted)) => Some(ChunkFailure { reply, counted }),
            None if max > 0 && self.bdat_size.saturating_add(size) > max => Some(ChunkFailure {
                reply: too_big(),
                counted: false,
            }),
            None if !self.msg_open => {
                self.state = State::Ask(Question::Data {
                    bdat: Some((size, last)),
                });
                return;
            }
            None => {
                self.bdat_size += size;
                None
            }
        };
        self.state = State::Bdat {
            remaining: size,
            size,
            last,
            fail,
        };
    }

    /// The DATA terminator was read.
    fn end_of_data(&mut self, too_big_msg: bool, long_line: bool) {
        self.msg_open = false;
        if too_big_msg || long_line {
            self.abort_pending = true;
            let n = self.final_replies();
            self.end_of_message_reply(
                if too_big_msg {
                    too_big()
                } else {
                    line_too_long()
                },
                n,
                false,
            );
            self.reset_transaction();
            self.state = State::Command;
        } else {
            self.state = State::AwaitFinish;
        }
    }

    /// All bytes of a BDAT chunk were read.
    fn end_of_chunk(&mut self) {
        let State::Bdat {
            size, last, fail, ..
        } = std::mem::replace(&mut self.state, State::Command)
        else {
            return;
        };
        match fail {
            Some(ChunkFailure { reply, counted }) => {
                let (last_replies, echo) = match self.failed_chunks.take() {
                    Some(f) => (f.last_replies, true),
                    None => (self.final_replies(), false),
                };
                // With a message open, the I/O layer logs the message it drops; an echo
                // repeats a refusal already recorded.
                let refusal = !self.msg_open && !echo;
                self.abort_open_message();
                if last {
                    self.end_of_message_reply(reply, last_replies, refusal);
                } else {
                    self.end_of_message_reply(reply.clone(), 1, refusal);
                    self.failed_chunks = Some(FailedChunks {
                        reply,
                        counted,
                        last_replies,
                    });
                }
                self.reset_transaction();
                if counted {
                    self.count_error();
                }
            }
            None if last => {
                self.msg_open = false;
                self.state = State::AwaitFinish;
            }
            None => self.reply(Reply::new(250, "2.0.0", format!("{size} octets received"))),
        }
    }

    fn starttls(&mut self) -> Option<Step> {
        if self.cfg.tls_active {
            self.error(Reply::new(503, "5.5.1", "Error: TLS already active"));
            return None;
        }
        if !self.cfg.starttls {
            // Not offered at all (454 is for an offered STARTTLS that fails for now).
            self.error(Reply::new(502, "5.5.1", "Error: command not implemented"));
            return None;
        }
        if self.mail_from.is_some() {
            self.error(Reply::new(
                503,
                "5.5.1",
                "Error: MAIL transaction in progress",
            ));
            return None;
        }
        self.reply(Reply::new(220, "2.0.0", "Ready to start TLS"));
        // CVE-2011-0411: anything pipelined after STARTTLS arrived in plaintext and must
        // not be executed inside the TLS session.
        self.buf.clear();
        self.pos = 0;
        self.state = State::AwaitTls;
        Some(Step::StartTls)
    }
}

/// RFC 5321 4.3.2 allows 552/554/451/452/450/550 at the end of the data, not 500 (a
/// command error): 554 "transaction failed", and RFC 3463 X.6.0 "other or undefined media
/// error" as the content is at fault. (X.3.4 with 552 means the size limit.)
fn line_too_long() -> Reply {
    Reply::new(554, "5.6.0", "Error: message line too long")
}

fn too_big() -> Reply {
    Reply::new(
        552,
        "5.3.4",
        "Error: message size exceeds fixed maximum message size",
    )
}

/// A refusal from the I/O layer must be 4xx/5xx: a 2xx here would tell the client we
/// accepted something we did not record.
fn refusal(r: Reply) -> Reply {
    if (400..600).contains(&r.code) {
        r.with_default_enhanced()
    } else {
        Reply::new(451, "4.3.0", "Error: internal error")
    }
}

/// A final reply to a message as the I/O layer gave it, made safe: 2xx, 4xx or 5xx, and
/// a temporary failure when it gave none.
fn final_reply(r: Option<&Reply>) -> Reply {
    match r {
        Some(r) if valid_final(r) => r.clone().with_default_enhanced(),
        Some(_) => Reply::new(451, "4.3.0", "Error: internal error, bad delivery status"),
        None => Reply::new(451, "4.3.0", "Error: no delivery status"),
    }
}

/// A final reply to a message: 2xx, 4xx or 5xx.
fn valid_final(r: &Reply) -> bool {
    (200..300).contains(&r.code) || (400..600).contains(&r.code)
}
