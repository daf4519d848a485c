//! Session tests: bytes in, replies and events out, no sockets.

use super::*;
use crate::envelope::Body;

pub(super) fn cfg() -> SessionConfig {
    SessionConfig {
        protocol: Protocol::Smtp,
        hostname: "mx.test".into(),
        max_message_size: 0,
        max_recipients: 0,
        max_line_length: 0,
        max_errors: 0,
        starttls: false,
        tls_active: false,
        require_tls: false,
        xforward_allowed: false,
        transcript: false,
        auth: AuthConfig::default(),
    }
}

fn lmtp() -> SessionConfig {
    SessionConfig {
        protocol: Protocol::Lmtp,
        ..cfg()
    }
}

/// An event with owned data, for comparing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Ev {
    Mail(String, Option<u64>),
    Rcpt(String),
    Auth(Mechanism, Credentials),
    DataStart,
    DataEnd {
        msg: Vec<u8>,
        from: String,
        rcpts: Vec<String>,
    },
    DataAborted,
    StartTls,
    Close,
}

/// A scripted I/O layer: accepts everything unless told otherwise, collects message data.
pub(super) struct Client {
    pub(super) s: Session,
    pub(super) events: Vec<Ev>,
    msg: Vec<u8>,
    /// Answers to questions, used in order; when empty, accept.
    pub(super) answers: Vec<Option<Reply>>,
    /// Replies for finish_message; when empty, one `250 2.0.0 Ok: queued` per expected.
    finish: Option<Vec<Reply>>,
    data_events: usize,
}

impl Client {
    pub(super) fn new(cfg: SessionConfig) -> Client {
        Client {
            s: Session::new(cfg),
            events: Vec::new(),
            msg: Vec::new(),
            answers: Vec::new(),
            finish: None,
            data_events: 0,
        }
    }

    fn answer(&mut self) -> Option<Reply> {
        if self.answers.is_empty() {
            None
        } else {
            self.answers.remove(0)
        }
    }

    /// Runs until NeedInput or Close; returns false after Close.
    pub(super) fn run(&mut self) -> bool {
        for _ in 0..100_000 {
            match self.s.next_event() {
                Event::NeedInput => return true,
                Event::Mail { from, size } => {
                    let from = from.to_string();
                    self.events.push(Ev::Mail(from, size));
                    match self.answer() {
                        None => self.s.accept_mail(),
                        Some(r) => self.s.reject_mail(r),
                    }
                }
                Event::Rcpt { to } => {
                    let to = to.to_string();
                    self.events.push(Ev::Rcpt(to));
                    match self.answer() {
                        None => self.s.accept_rcpt(),
                        Some(r) => self.s.reject_rcpt(r),
                    }
                }
                Event::Auth {
                    mechanism,
                    credentials,
                } => {
                    let user = credentials.user().to_string();
                    self.events.push(Ev::Auth(mechanism, credentials.clone()));
                    match self.answer() {
                        None => self.s.accept_auth(user),
                        Some(r) => self.s.reject_auth(r),
                    }
                }
                Event::DataStart => {
                    self.events.push(Ev::DataStart);
                    self.msg.clear();
                    match self.answer() {
                        None => self.s.accept_data(),
                        Some(r) => self.s.reject_data(r),
                    }
                }
                Event::Data(d) => {
                    assert!(!d.is_empty(), "empty Data event");
                    self.msg.extend_from_slice(d);
                    self.data_events += 1;
                }
                Event::DataEnd => {
                    let n = match self.s.protocol() {
                        Protocol::Smtp => 1,
                        Protocol::Lmtp => self.s.rcpts().len(),
                    };
                    self.events.push(Ev::DataEnd {
                        msg: std::mem::take(&mut self.msg),
                        from: self.s.mail_from().unwrap_or("?").to_string(),
                        rcpts: self.s.rcpts().to_vec(),
                    });
                    let replies = self
                        .finish
                        .take()
                        .unwrap_or_else(|| vec![Reply::new(250, "2.0.0", "Ok: queued"); n]);
                    self.s.finish_message(replies);
                }
                Event::DataAborted => {
                    self.msg.clear();
                    self.events.push(Ev::DataAborted);
                }
                Event::StartTls => {
                    self.events.push(Ev::StartTls);
                    return true;
                }
                Event::Close => {
                    self.events.push(Ev::Close);
                    return false;
                }
            }
        }
        panic!("session did not settle");
    }

    /// Feeds `input` in one piece, runs, returns the output as text.
    pub(super) fn send(&mut self, input: &[u8]) -> String {
        self.s.feed(input);
        self.run();
        String::from_utf8(self.s.take_output()).unwrap()
    }

    pub(super) fn take_events(&mut self) -> Vec<Ev> {
        std::mem::take(&mut self.events)
    }
}

/// A client past the greeting and EHLO.
pub(super) fn greeted(cfg: SessionConfig) -> Client {
    let lmtp = cfg.protocol == Protocol::Lmtp;
    let mut c = Client::new(cfg);
    c.s.take_output();
    let out = c.send(if lmtp {
        b"LHLO c.test\r\n"
    } else {
        b"EHLO c.test\r\n"
    });
    assert!(out.starts_with("250-mx.test\r\n"), "{out}");
    c
}

#[test]
fn greeting_smtp_and_lmtp() {
    let mut s = Session::new(cfg());
    assert!(s.has_output());
    assert_eq!(s.take_output(), b"220 mx.test ESMTP mailchute\r\n");
    assert!(!s.has_output());
    assert_eq!(s.next_event(), Event::NeedInput);
    let mut s = Session::new(lmtp());
    assert_eq!(s.take_output(), b"220 mx.test LMTP mailchute\r\n");
}

#[test]
fn ehlo_lines() {
    let mut c = Client::new(cfg());
    c.s.take_output();
    assert_eq!(
        c.send(b"EHLO c.test\r\n"),
        "250-mx.test\r\n250-PIPELINING\r\n250-SIZE\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n\
         250-ENHANCEDSTATUSCODES\r\n250 CHUNKING\r\n"
    );
    assert_eq!(c.s.helo(), Some("c.test"));
    assert!(c.s.esmtp());

    let mut c = Client::new(SessionConfig {
        max_message_size: 1000,
        starttls: true,
        xforward_allowed: true,
        ..cfg()
    });
    c.s.take_output();
    let out = c.send(b"ehlo c.test\r\n");
    assert!(out.contains("250-SIZE 1000\r\n"), "{out}");
    assert!(out.contains("250-STARTTLS\r\n"), "{out}");
    assert!(
        out.ends_with("250 XFORWARD NAME ADDR PORT PROTO HELO IDENT SOURCE\r\n"),
        "{out}"
    );

    // STARTTLS is not offered once TLS is active.
    let mut c = Client::new(SessionConfig {
        starttls: true,
        tls_active: true,
        ..cfg()
    });
    assert!(!c.send(b"EHLO c\r\n").contains("STARTTLS"));
}

#[test]
fn helo_and_lmtp_greetings() {
    let mut c = Client::new(cfg());
    c.s.take_output();
    assert_eq!(c.send(b"HELO c.test\r\n"), "250 mx.test\r\n");
    assert!(!c.s.esmtp());
    assert_eq!(
        c.send(b"LHLO c.test\r\n"),
        "500 5.5.2 Error: command not recognized\r\n"
    );

    let mut c = Client::new(lmtp());
    c.s.take_output();
    assert_eq!(
        c.send(b"EHLO c\r\n"),
        "500 5.5.1 Error: this is LMTP, use LHLO\r\n"
    );
    assert_eq!(
        c.send(b"HELO c\r\n"),
        "500 5.5.1 Error: this is LMTP, use LHLO\r\n"
    );
    assert!(
        c.send(b"LHLO c\r\n")
            .starts_with("250-mx.test\r\n250-PIPELINING\r\n")
    );
    assert_eq!(c.send(b"MAIL FROM:<>\r\n"), "250 2.1.0 Ok\r\n");
}

#[test]
fn pipelined_transaction_in_one_feed() {
    let mut c = greeted(cfg());
    let out = c.send(
        b"MAIL FROM:<a@x.test> SIZE=20\r\nRCPT TO:<b@y.test>\r\nRCPT TO:<c@y.test>\r\nDATA\r\n\
          Subject: hi\r\n\r\n..dot\r\n.\r\nQUIT\r\n",
    );
    assert_eq!(
        out,
        "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n\
         250 2.0.0 Ok: queued\r\n221 2.0.0 Bye\r\n"
    );
    assert_eq!(
        c.take_events(),
        vec![
            Ev::Mail("a@x.test".into(), Some(20)),
            Ev::Rcpt("b@y.test".into()),
            Ev::Rcpt("c@y.test".into()),
            Ev::DataStart,
            Ev::DataEnd {
                msg: b"Subject: hi\r\n\r\n.dot\r\n".to_vec(),
                from: "a@x.test".into(),
                rcpts: vec!["b@y.test".into(), "c@y.test".into()],
            },
            Ev::Close,
        ]
    );
    assert!(c.s.is_closed());
    // Closed for good.
    c.s.feed(b"NOOP\r\n");
    assert_eq!(c.s.next_event(), Event::Close);
}

#[test]
fn questions_block_until_answered() {
    let mut s = Session::new(cfg());
    s.feed(b"EHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\n");
    assert_eq!(
        s.next_event(),
        Event::Mail {
            from: "a@b",
            size: None
        }
    );
    // Not answered: same question, nothing else consumed.
    assert_eq!(
        s.next_event(),
        Event::Mail {
            from: "a@b",
            size: None
        }
    );
    // Mismatched answers are ignored.
    s.accept_rcpt();
    s.accept_data();
    s.finish_message(vec![]);
    assert_eq!(s.mail_from(), None);
    s.accept_mail();
    assert_eq!(s.mail_from(), Some("a@b"));
    assert_eq!(s.next_event(), Event::Rcpt { to: "c@d" });
    s.reject_rcpt(Reply::new(550, "5.1.1", "No such user"));
    assert_eq!(s.next_event(), Event::NeedInput);
    let out = String::from_utf8(s.take_output()).unwrap();
    assert!(
        out.ends_with("250 2.1.0 Ok\r\n550 5.1.1 No such user\r\n"),
        "{out}"
    );
    s.feed(b"DATA\r\n");
    assert_eq!(s.next_event(), Event::NeedInput);
    assert_eq!(s.take_output(), b"554 5.5.1 Error: no valid recipients\r\n");
}

#[test]
fn rejections_are_coerced() {
    let mut c = greeted(cfg());
    c.answers = vec![Some(Reply::plain(550, "go away"))];
    assert_eq!(c.send(b"MAIL FROM:<a@b>\r\n"), "550 5.0.0 go away\r\n");
    c.answers = vec![Some(Reply::new(250, "2.0.0", "oops"))];
    assert_eq!(
        c.send(b"MAIL FROM:<a@b>\r\n"),
        "451 4.3.0 Error: internal error\r\n"
    );
    assert_eq!(c.s.mail_from(), None);
    // Found by fuzzing: an enhanced code of another class than the reply code was passed on.
    c.answers = vec![Some(Reply::new(554, "4.2.0", "mixed"))];
    assert_eq!(c.send(b"MAIL FROM:<a@b>\r\n"), "554 5.2.0 mixed\r\n");
}

#[test]
fn sequence_errors() {
    let mut c = Client::new(cfg());
    c.s.take_output();
    assert_eq!(
        c.send(b"MAIL FROM:<a@b>\r\n"),
        "503 5.5.1 Error: send HELO/EHLO first\r\n"
    );
    assert_eq!(
        c.send(b"RCPT TO:<a@b>\r\n"),
        "503 5.5.1 Error: need MAIL command\r\n"
    );
    assert_eq!(
        c.send(b"DATA\r\n"),
        "503 5.5.1 Error: need MAIL command\r\n"
    );
    c.send(b"EHLO c\r\n");
    assert_eq!(c.send(b"MAIL FROM:<a@b>\r\n"), "250 2.1.0 Ok\r\n");
    assert_eq!(
        c.send(b"MAIL FROM:<a@b>\r\n"),
        "503 5.5.1 Error: nested MAIL command\r\n"
    );
    assert_eq!(
        c.send(b"DATA\r\n"),
        "503 5.5.1 Error: need RCPT command\r\n"
    );
    assert_eq!(c.send(b"RSET\r\n"), "250 2.0.0 Ok\r\n");
    assert_eq!(c.s.mail_from(), None);
    assert_eq!(c.send(b"NOOP\r\n"), "250 2.0.0 Ok\r\n");
    assert!(c.send(b"HELP\r\n").starts_with("214 2.0.0 "));
    assert!(c.send(b"VRFY x\r\n").starts_with("252 2.0.0 "));
    assert!(c.send(b"EXPN x\r\n").starts_with("502 5.5.1 "));
    assert!(c.send(b"AUTH PLAIN\r\n").starts_with("503 5.5.1 "));
    assert_eq!(
        c.send(b"FOO\r\n"),
        "500 5.5.2 Error: command not recognized\r\n"
    );
    assert_eq!(
        c.send(b"MAIL TO:<x>\r\n"),
        "501 5.5.4 Syntax: MAIL FROM:<address>\r\n"
    );
    assert_eq!(
        c.send(b"MAIL FROM:<a@b> ENVID=1\r\n"),
        "555 5.5.4 Unsupported option: ENVID=1\r\n"
    );
    // Bare LF line ends are accepted for commands.
    assert_eq!(
        c.send(b"NOOP\nNOOP\r\n"),
        "250 2.0.0 Ok\r\n250 2.0.0 Ok\r\n"
    );
}

#[test]
fn mail_checks() {
    let mut c = greeted(SessionConfig {
        max_message_size: 100,
        ..cfg()
    });
    assert_eq!(
        c.send(b"MAIL FROM:<a@b> SIZE=101\r\n"),
        "552 5.3.4 Error: message size exceeds fixed maximum message size\r\n"
    );
    assert!(c.take_events().is_empty());
    assert_eq!(
        c.send("MAIL FROM:<ü@b>\r\n".as_bytes()),
        "553 5.6.7 Error: non-ASCII sender address requires SMTPUTF8\r\n"
    );
    assert_eq!(
        c.send(b"MAIL FROM:<a@b> SIZE=100 BODY=8BITMIME\r\n"),
        "250 2.1.0 Ok\r\n"
    );
    assert_eq!(c.s.body(), Body::EightBitMime);
    assert!(!c.s.smtputf8());
    assert_eq!(
        c.send("RCPT TO:<ü@b>\r\n".as_bytes()),
        "553 5.6.7 Error: non-ASCII recipient address requires SMTPUTF8\r\n"
    );
    c.send(b"RSET\r\n");
    assert_eq!(
        c.send("MAIL FROM:<ü@b> SMTPUTF8\r\n".as_bytes()),
        "250 2.1.0 Ok\r\n"
    );
    assert!(c.s.smtputf8());
    assert_eq!(
        c.send("RCPT TO:<ö@exämple.de>\r\n".as_bytes()),
        "250 2.1.5 Ok\r\n"
    );
    assert_eq!(c.send(b"RCPT TO:<postmaster>\r\n"), "250 2.1.5 Ok\r\n");
    assert_eq!(c.s.rcpts(), ["ö@exämple.de", "postmaster"]);
    c.send(b"RSET\r\n");
    assert_eq!(c.send(b"MAIL FROM:<>\r\n"), "250 2.1.0 Ok\r\n");
    assert_eq!(c.s.mail_from(), Some(""));
    assert_eq!(c.take_events().last(), Some(&Ev::Mail(String::new(), None)));
}

#[test]
fn require_tls() {
    let mut c = greeted(SessionConfig {
        require_tls: true,
        starttls: true,
        ..cfg()
    });
    assert_eq!(
        c.send(b"MAIL FROM:<a@b>\r\n"),
        "530 5.7.0 Must issue a STARTTLS command first\r\n"
    );
    assert_eq!(c.send(b"STARTTLS\r\n"), "220 2.0.0 Ready to start TLS\r\n");
    c.s.tls_started();
    assert!(c.s.tls_active());
    assert_eq!(
        c.send(b"MAIL FROM:<a@b>\r\n"),
        "503 5.5.1 Error: send HELO/EHLO first\r\n"
    );
    c.send(b"EHLO c\r\n");
    assert_eq!(c.send(b"MAIL FROM:<a@b>\r\n"), "250 2.1.0 Ok\r\n");
}

#[test]
fn too_many_recipients_is_not_an_error() {
    let mut c = greeted(SessionConfig {
        max_recipients: 2,
        max_errors: 1,
        ..cfg()
    });
    let out = c.send(
        b"MAIL FROM:<a@b>\r\nRCPT TO:<1@b>\r\nRCPT TO:<2@b>\r\nRCPT TO:<3@b>\r\nRCPT TO:<4@b>\r\n",
    );
    assert_eq!(
        out,
        "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n250 2.1.5 Ok\r\n452 4.5.3 Error: too many recipients\r\n\
         452 4.5.3 Error: too many recipients\r\n"
    );
    assert!(!c.s.is_closed());
    assert_eq!(c.s.rcpts().len(), 2);
}

#[test]
fn transaction_resets_after_message() {
    let mut c = greeted(cfg());
    c.send(b"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\nx\r\n.\r\n");
    assert_eq!(c.s.mail_from(), None);
    assert!(c.s.rcpts().is_empty());
    assert_eq!(c.s.helo(), Some("c.test"));
    // A second transaction on the same connection.
    let out = c.send(b"MAIL FROM:<e@f>\r\nRCPT TO:<g@h>\r\nDATA\r\ny\r\n.\r\n");
    assert!(out.ends_with("250 2.0.0 Ok: queued\r\n"), "{out}");
    let ev = c.take_events();
    assert_eq!(
        ev.last(),
        Some(&Ev::DataEnd {
            msg: b"y\r\n".to_vec(),
            from: "e@f".into(),
            rcpts: vec!["g@h".into()]
        })
    );
}

#[test]
fn data_rejected_at_start() {
    let mut c = greeted(cfg());
    c.answers = vec![
        None,
        None,
        Some(Reply::new(451, "4.3.0", "spool unavailable")),
    ];
    let out = c.send(b"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n");
    assert!(
        out.ends_with("250 2.1.5 Ok\r\n451 4.3.0 spool unavailable\r\n"),
        "{out}"
    );
    assert_eq!(c.s.mail_from(), None);
}

/// Feeds a whole SMTP conversation one byte at a time and in random splits; the events
/// and output must equal those of a single feed.
fn run_split(cfg: SessionConfig, input: &[u8], splits: &[usize]) -> (String, Vec<Ev>) {
    let mut c = Client::new(cfg);
    let mut out = String::from_utf8(c.s.take_output()).unwrap();
    let mut last = 0;
    for &at in splits.iter().chain(std::iter::once(&input.len())) {
        c.s.feed(&input[last..at]);
        last = at;
        if !c.run() {
            break;
        }
        out.push_str(&String::from_utf8(c.s.take_output()).unwrap());
    }
    out.push_str(&String::from_utf8(c.s.take_output()).unwrap());
    (out, c.take_events())
}

const CONVERSATION: &[u8] = b"EHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n\
..leading\r\n.\r\nmiddle. dot\r\n\r\n.x\r\nbare\nlf\n.\nstill\r.\r\nin\r\n\r\n.\r\n\
MAIL FROM:<e@f>\r\nRCPT TO:<g@h>\r\nBDAT 5\r\nab\r\n.BDAT 3 LAST\r\n.\r\nQUIT\r\n";

fn conversation_want() -> Vec<Ev> {
    vec![
        Ev::Mail("a@b".into(), None),
        Ev::Rcpt("c@d".into()),
        Ev::DataStart,
        Ev::DataEnd {
            msg: b".leading\r\n".to_vec(),
            from: "a@b".into(),
            rcpts: vec!["c@d".into()],
        },
    ]
}

#[test]
fn split_at_every_boundary_gives_same_result() {
    let (whole_out, whole_ev) = run_split(cfg(), CONVERSATION, &[]);
    assert_eq!(whole_ev[..4], conversation_want()[..]);
    // After the first message ends at ".\r\n", "middle. dot..." are commands (errors).
    assert!(whole_ev.contains(&Ev::Close));
    for at in 0..=CONVERSATION.len() {
        let (out, ev) = run_split(cfg(), CONVERSATION, &[at]);
        assert_eq!((&out, &ev), (&whole_out, &whole_ev), "split at {at}");
    }
    let all: Vec<usize> = (1..CONVERSATION.len()).collect();
    let (out, ev) = run_split(cfg(), CONVERSATION, &all);
    assert_eq!((&out, &ev), (&whole_out, &whole_ev), "byte by byte");
}

#[test]
fn dot_unstuffing_and_smuggling_bytewise() {
    let message: &[u8] = b"Subject: s\r\n\r\n..one\r\n.two\r\nbare\n.\nlf.\r\n\
cr\r.\r\nsmuggle\n.\r\nMAIL FROM:<evil@x>\r\n.\rz\r\n...\r\n\r\n";
    let want: &[u8] = b"Subject: s\r\n\r\n.one\r\ntwo\r\nbare\n.\nlf.\r\n\
cr\r.\r\nsmuggle\n.\r\nMAIL FROM:<evil@x>\r\n\rz\r\n..\r\n\r\n";
    let mut input = b"EHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n".to_vec();
    input.extend_from_slice(message);
    input.extend_from_slice(b".\r\nQUIT\r\n");
    let all: Vec<usize> = (1..input.len()).collect();
    for splits in [vec![], all] {
        let (out, ev) = run_split(cfg(), &input, &splits);
        assert_eq!(
            ev,
            vec![
                Ev::Mail("a@b".into(), None),
                Ev::Rcpt("c@d".into()),
                Ev::DataStart,
                Ev::DataEnd {
                    msg: want.to_vec(),
                    from: "a@b".into(),
                    rcpts: vec!["c@d".into()]
                },
                Ev::Close,
            ]
        );
        assert!(
            out.ends_with("250 2.0.0 Ok: queued\r\n221 2.0.0 Bye\r\n"),
            "{out}"
        );
        assert!(!out.contains("evil"));
    }
}

#[test]
fn data_is_streamed_in_large_slices() {
    let mut c = greeted(cfg());
    c.send(b"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n");
    let line = vec![b'x'; 998];
    let mut chunk = Vec::new();
    for _ in 0..64 {
        chunk.extend_from_slice(&line);
        chunk.extend_from_slice(b"\r\n");
    }
    c.data_events = 0;
    c.send(&chunk);
    assert_eq!(c.data_events, 1, "one read, one Data event");
    assert_eq!(c.msg.len(), chunk.len());
    let out = c.send(b".\r\n");
    assert_eq!(out, "250 2.0.0 Ok: queued\r\n");
}

#[test]
fn size_limit_drains_then_552() {
    let mut c = greeted(SessionConfig {
        max_message_size: 10,
        ..cfg()
    });
    let out = c.send(b"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n0123456789\r\nmore\r\n");
    assert!(
        out.ends_with("354 End data with <CR><LF>.<CR><LF>\r\n"),
        "{out}"
    );
    let out = c.send(b"and more\r\n.\r\nNOOP\r\n");
    assert_eq!(
        out,
        "552 5.3.4 Error: message size exceeds fixed maximum message size\r\n250 2.0.0 Ok\r\n"
    );
    assert_eq!(c.take_events().last(), Some(&Ev::DataAborted));
    assert_eq!(c.s.mail_from(), None);
    // Exactly at the limit is fine.
    let out = c.send(b"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n12345678\r\n.\r\n");
    assert!(out.ends_with("250 2.0.0 Ok: queued\r\n"), "{out}");
}

const LINE_TOO_LONG: &str = "554 5.6.0 Error: message line too long\r\n";

#[test]
fn line_limit_drains_then_554() {
    let mut c = greeted(SessionConfig {
        max_line_length: 10,
        ..cfg()
    });
    let out = c.send(
        b"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n0123456789\r\n01234567890\r\nx\r\n.\r\n",
    );
    assert!(out.ends_with(LINE_TOO_LONG), "{out}");
    assert_eq!(c.take_events().last(), Some(&Ev::DataAborted));
}

#[test]
fn line_limit_applies_to_bdat() {
    let mut c = greeted(SessionConfig {
        max_line_length: 10,
        ..cfg()
    });
    // Ten bytes and CR LF, split across chunks, is within the limit.
    let out =
        c.send(b"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nBDAT 11\r\n0123456789\rBDAT 1 LAST\r\n\n");
    assert!(out.ends_with("250 2.0.0 Ok: queued\r\n"), "{out}");
    c.take_events();
    // Eleven bytes, six in one chunk and five in the next: refused at the end of the
    // chunk where the line grew too long; the rest of that chunk is read and dropped.
    let out = c.send(b"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nBDAT 6\r\n012345BDAT 8\r\n67890\r\nxBDAT 0 LAST\r\nNOOP\r\n");
    assert_eq!(
        out,
        format!(
            "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n250 2.0.0 6 octets received\r\n{LINE_TOO_LONG}{LINE_TOO_LONG}250 2.0.0 Ok\r\n"
        )
    );
    assert_eq!(c.take_events()[2..], [Ev::DataStart, Ev::DataAborted]);
    assert_eq!(c.msg, b"");
    // A long line in the one LAST chunk: LMTP answers once per recipient.
    let mut c = greeted(SessionConfig {
        max_line_length: 10,
        ..lmtp()
    });
    let out = c.send(
        b"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nRCPT TO:<e@f>\r\nBDAT 13 LAST\r\n01234567890\r\n",
    );
    assert!(
        out.ends_with(&format!("250 2.1.5 Ok\r\n{LINE_TOO_LONG}{LINE_TOO_LONG}")),
        "{out}"
    );
}

#[test]
fn binarymime_has_no_line_limit() {
    let mut c = greeted(SessionConfig {
        max_line_length: 10,
        ..cfg()
    });
    let body = [b'x'; 100];
    let mut input =
        b"MAIL FROM:<a@b> BODY=BINARYMIME\r\nRCPT TO:<c@d>\r\nBDAT 100 LAST\r\n".to_vec();
    input.extend_from_slice(&body);
    let out = c.send(&input);
    assert!(out.ends_with("250 2.0.0 Ok: queued\r\n"), "{out}");
    assert_eq!(
        c.take_events().last(),
        Some(&Ev::DataEnd {
            msg: body.to_vec(),
            from: "a@b".into(),
            rcpts: vec!["c@d".into()]
        })
    );
    // ...but the next transaction, 8BITMIME again, has.
    let mut input = b"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nBDAT 100 LAST\r\n".to_vec();
    input.extend_from_slice(&body);
    assert!(c.send(&input).ends_with(LINE_TOO_LONG));
}

#[test]
fn bdat_across_feeds() {
    let mut c = greeted(cfg());
    let out = c.send(b"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nBDAT 11\r\n0123");
    assert_eq!(out, "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n");
    assert_eq!(c.msg, b"0123");
    let out = c.send(b"45\r\n.\r\n");
    assert_eq!(out, "250 2.0.0 11 octets received\r\n");
    let out = c.send(b"BDAT 3");
    assert_eq!(out, "");
    let out = c.send(b" LAST\r\nxyz");
    assert_eq!(out, "250 2.0.0 Ok: queued\r\n");
    assert_eq!(
        c.take_events()[2..],
        [
            Ev::DataStart,
            Ev::DataEnd {
                msg: b"012345\r\n.\r\nxyz".to_vec(),
                from: "a@b".into(),
                rcpts: vec!["c@d".into()]
            }
        ]
    );
}

#[test]
fn bdat_zero_last_and_data_after_bdat() {
    let mut c = greeted(cfg());
    let out = c.send(b"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nBDAT 0 LAST\r\n");
    assert!(out.ends_with("250 2.0.0 Ok: queued\r\n"), "{out}");
    let out = c.send(b"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nBDAT 2\r\nabDATA\r\n");
    assert!(
        out.ends_with("250 2.0.0 2 octets received\r\n503 5.5.1 Error: DATA after BDAT\r\n"),
        "{out}"
    );
    assert_eq!(
        c.send(b"RCPT TO:<e@f>\r\n"),
        "503 5.5.1 Error: RCPT after BDAT\r\n"
    );
    // RSET between chunks drops the open message.
    assert_eq!(c.send(b"RSET\r\n"), "250 2.0.0 Ok\r\n");
    assert_eq!(c.take_events().last(), Some(&Ev::DataAborted));
}

#[test]
fn bdat_without_transaction_consumes_bytes() {
    let mut c = greeted(cfg());
    let out = c.send(b"BDAT 12\r\nQUIT\r\nQUIT\r\nNOOP\r\n");
    assert_eq!(
        out,
        "503 5.5.1 Error: need MAIL command\r\n250 2.0.0 Ok\r\n"
    );
    let out = c.send(b"MAIL FROM:<a@b>\r\nBDAT 4 LAST\r\nQUITNOOP\r\n");
    assert_eq!(
        out,
        "250 2.1.0 Ok\r\n503 5.5.1 Error: need RCPT command\r\n250 2.0.0 Ok\r\n"
    );
    assert!(!c.take_events().contains(&Ev::DataStart));
}

#[test]
fn bdat_size_limit_and_rejected_start() {
    let mut c = greeted(SessionConfig {
        max_message_size: 5,
        ..cfg()
    });
    // The failed chunk is LAST: the transfer is over, a BDAT after it is out of order.
    let out = c.send(b"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nBDAT 3\r\nabcBDAT 3 LAST\r\ndefBDAT 1 LAST\r\nxNOOP\r\n");
    assert_eq!(
        out,
        "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n250 2.0.0 3 octets received\r\n\
         552 5.3.4 Error: message size exceeds fixed maximum message size\r\n\
         503 5.5.1 Error: need MAIL command\r\n250 2.0.0 Ok\r\n"
    );
    assert_eq!(c.take_events()[2..], [Ev::DataStart, Ev::DataAborted]);

    // The I/O layer refuses the first chunk: its bytes are dropped, then the reply; the
    // chunk pipelined behind it gets the same reply.
    c.answers = vec![None, None, Some(Reply::new(451, "4.3.0", "spool full"))];
    let out = c.send(b"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nBDAT 2\r\nabBDAT 1 LAST\r\nxNOOP\r\n");
    assert_eq!(
        out,
        "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n451 4.3.0 spool full\r\n\
         451 4.3.0 spool full\r\n250 2.0.0 Ok\r\n"
    );
    assert_eq!(c.take_events()[2..], [Ev::DataStart]);
}

/// BDAT with no transaction is a protocol error every time, pipelined or not: the error
/// limit still closes the session.
#[test]
fn pipelined_bdat_without_a_transaction_counts_every_time() {
    let mut c = greeted(SessionConfig {
        max_errors: 5,
        ..cfg()
    });
    let out = c.send(&b"BDAT 1\r\nx".repeat(12));
    assert_eq!(
        out.matches("503 5.5.1 Error: need MAIL command").count(),
        5,
        "{out}"
    );
    assert!(
        out.ends_with("421 4.7.0 mx.test Error: too many errors\r\n"),
        "{out}"
    );
    assert!(c.s.is_closed());
}

/// The reviewer's case: 25 pipelined chunks of 100 bytes against a 1000-byte limit.
#[test]
fn chunks_pipelined_after_a_failed_chunk_get_its_reply() {
    let mut c = greeted(SessionConfig {
        max_message_size: 1000,
        max_errors: 10,
        ..lmtp()
    });
    let mut input = b"MAIL FROM:<a@x>\r\nRCPT TO:<b@x>\r\nRCPT TO:<c@x>\r\n".to_vec();
    for _ in 0..25 {
        input.extend_from_slice(b"BDAT 100\r\n");
        input.extend_from_slice(&[b'y'; 100]);
    }
    input.extend_from_slice(b"BDAT 0 LAST\r\nNOOP\r\n");
    let out = c.send(&input);
    let big = "552 5.3.4 Error: message size exceeds fixed maximum message size\r\n";
    let want = format!(
        "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n250 2.1.5 Ok\r\n{}{}{}250 2.0.0 Ok\r\n",
        "250 2.0.0 100 octets received\r\n".repeat(10),
        // Chunk 11 fails, 12 to 25 get the same; LAST once per recipient, as LMTP would.
        big.repeat(15),
        big.repeat(2),
    );
    assert_eq!(out, want);
    assert!(!c.s.is_closed());
    assert_eq!(c.take_events()[3..], [Ev::DataStart, Ev::DataAborted]);
    // None of it counted as an error: nine more are still allowed.
    let out = c.send(&b"FOO\r\n".repeat(9));
    assert!(!out.contains("421"), "{out}");
    assert!(!c.s.is_closed());
    // And the session goes on.
    let out = c.send(b"MAIL FROM:<a@x>\r\nRCPT TO:<b@x>\r\nBDAT 2 LAST\r\nhi");
    assert!(
        out.ends_with("250 2.1.5 Ok\r\n250 2.0.0 Ok: queued\r\n"),
        "{out}"
    );
}

#[test]
fn failed_chunks_end_at_another_command() {
    let mut c = greeted(SessionConfig {
        max_errors: 3,
        ..cfg()
    });
    // No valid recipient: the first chunk gets 554, the pipelined ones too, uncounted.
    c.answers = vec![None, Some(Reply::new(550, "5.1.1", "unknown"))];
    let out =
        c.send(b"MAIL FROM:<a@x>\r\nRCPT TO:<b@x>\r\nBDAT 1\r\nxBDAT 1\r\nxBDAT 1\r\nxBDAT 1\r\nx");
    let none = "554 5.5.1 Error: no valid recipients\r\n";
    assert_eq!(
        out,
        format!("250 2.1.0 Ok\r\n550 5.1.1 unknown\r\n{}", none.repeat(4))
    );
    // Any other command ends the failed transfer: a BDAT after it is out of order again.
    let out = c.send(b"NOOP\r\nBDAT 1\r\nxBDAT 1 LAST\r\nx");
    let need = "503 5.5.1 Error: need MAIL command\r\n";
    assert_eq!(out, format!("250 2.0.0 Ok\r\n{need}{need}"));
    assert!(
        !c.s.is_closed(),
        "a chunk behind a failed one is not an error"
    );
    // The first BDAT without a transaction counted: two more errors close.
    let out = c.send(b"RSET\r\nBDAT 1 LAST\r\nxFOO\r\n");
    assert!(
        out.ends_with("421 4.7.0 mx.test Error: too many errors\r\n"),
        "{out}"
    );
}

#[test]
fn starttls_discards_injected_commands() {
    let mut c = greeted(SessionConfig {
        starttls: true,
        ..cfg()
    });
    let out = c.send(b"STARTTLS\r\nMAIL FROM:<evil@x>\r\nRCPT TO:<e@x>\r\n");
    assert_eq!(out, "220 2.0.0 Ready to start TLS\r\n");
    assert_eq!(c.take_events(), vec![Ev::StartTls]);
    // Until the handshake is done the session asks for it and ignores input.
    c.s.feed(b"NOOP\r\n");
    assert_eq!(c.s.next_event(), Event::StartTls);
    c.s.tls_started();
    assert_eq!(c.s.helo(), None);
    assert_eq!(c.s.next_event(), Event::NeedInput);
    assert!(!c.s.has_output());
    let out = c.send(b"EHLO c\r\n");
    assert!(!out.contains("STARTTLS"));
    assert_eq!(
        c.send(b"STARTTLS\r\n"),
        "503 5.5.1 Error: TLS already active\r\n"
    );
    assert_eq!(c.send(b"MAIL FROM:<a@b>\r\n"), "250 2.1.0 Ok\r\n");
    assert!(
        !c.take_events()
            .iter()
            .any(|e| matches!(e, Ev::Mail(f, _) if f == "evil@x"))
    );
}

#[test]
fn starttls_not_offered() {
    let mut c = greeted(cfg());
    assert_eq!(
        c.send(b"STARTTLS\r\n"),
        "502 5.5.1 Error: command not implemented\r\n"
    );
    let mut c = greeted(SessionConfig {
        starttls: true,
        ..cfg()
    });
    assert_eq!(
        c.send(b"STARTTLS now\r\n"),
        "501 5.5.4 Syntax: STARTTLS\r\n"
    );
    c.send(b"MAIL FROM:<a@b>\r\n");
    assert_eq!(
        c.send(b"STARTTLS\r\n"),
        "503 5.5.1 Error: MAIL transaction in progress\r\n"
    );
}

#[test]
fn errors_limit() {
    let mut c = Client::new(SessionConfig {
        max_errors: 3,
        ..cfg()
    });
    c.s.take_output();
    let out = c.send(b"FOO\r\nBAR\r\nNOOP\r\nBAZ\r\nNOOP\r\n");
    assert_eq!(
        out,
        "500 5.5.2 Error: command not recognized\r\n500 5.5.2 Error: command not recognized\r\n\
         250 2.0.0 Ok\r\n500 5.5.2 Error: command not recognized\r\n\
         421 4.7.0 mx.test Error: too many errors\r\n"
    );
    assert_eq!(c.take_events(), vec![Ev::Close]);
}

#[test]
fn errors_limit_mid_bdat_aborts_message() {
    let mut c = greeted(SessionConfig {
        max_errors: 1,
        ..cfg()
    });
    let out = c.send(b"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nBDAT 1\r\nxFOO\r\n");
    assert!(out.ends_with("500 5.5.2 Error: command not recognized\r\n421 4.7.0 mx.test Error: too many errors\r\n"), "{out}");
    assert_eq!(
        c.take_events()[2..],
        [Ev::DataStart, Ev::DataAborted, Ev::Close]
    );
}

#[test]
fn long_command_line() {
    let mut c = greeted(cfg());
    let mut line = b"NOOP ".to_vec();
    line.extend(std::iter::repeat_n(b'a', 10_000));
    line.extend_from_slice(b"\r\nNOOP\r\n");
    let out = c.send(&line);
    assert_eq!(out, "500 5.5.2 Error: line too long\r\n250 2.0.0 Ok\r\n");
    // Split so the over-long line arrives in pieces with no line end yet.
    let (a, b) = line.split_at(6000);
    assert_eq!(c.send(a), "");
    assert_eq!(
        c.send(b),
        "500 5.5.2 Error: line too long\r\n250 2.0.0 Ok\r\n"
    );
    // A long but acceptable MAIL line.
    let addr = "a".repeat(2000);
    let out = c.send(format!("MAIL FROM:<{addr}@b> SIZE=1 BODY=8BITMIME\r\n").as_bytes());
    assert_eq!(out, "250 2.1.0 Ok\r\n");
}

#[test]
fn eight_bit_garbage() {
    let mut c = greeted(cfg());
    assert_eq!(
        c.send(b"\xff\xfe\x80\r\n"),
        "500 5.5.2 Error: command not recognized\r\n"
    );
    assert_eq!(
        c.send(b"MAIL FROM:<\xff@b>\r\n"),
        "501 5.5.4 Syntax: arguments must be ASCII or UTF-8\r\n"
    );
    assert_eq!(
        c.send(b"EHLO \xc3\r\n"),
        "501 5.5.4 Syntax: arguments must be ASCII or UTF-8\r\n"
    );
    assert_eq!(
        c.send(b"\0\0\0\r\n"),
        "500 5.5.2 Error: command not recognized\r\n"
    );
    assert_eq!(c.send(b"NOOP\r\n"), "250 2.0.0 Ok\r\n");
}

#[test]
fn xforward() {
    let mut c = greeted(cfg());
    assert_eq!(
        c.send(b"XFORWARD NAME=x\r\n"),
        "550 5.7.0 Error: insufficient authorization\r\n"
    );
    assert!(c.s.xforward().is_empty());

    let mut c = greeted(SessionConfig {
        xforward_allowed: true,
        ..cfg()
    });
    let out = c.send(
        b"XFORWARD NAME=client.example ADDR=192.0.2.7 PORT=4711\r\n\
          XFORWARD PROTO=ESMTP HELO=bad+20helo IDENT=123 SOURCE=REMOTE\r\n",
    );
    assert_eq!(out, "250 2.0.0 Ok\r\n250 2.0.0 Ok\r\n");
    let xf = c.s.xforward().clone();
    assert_eq!(xf.name.as_deref(), Some("client.example"));
    assert_eq!(xf.addr.as_deref(), Some("192.0.2.7"));
    assert_eq!(xf.port.as_deref(), Some("4711"));
    assert_eq!(xf.proto.as_deref(), Some("ESMTP"));
    assert_eq!(xf.helo.as_deref(), Some("bad helo"));
    assert_eq!(xf.ident.as_deref(), Some("123"));
    assert_eq!(xf.source.as_deref(), Some("REMOTE"));
    assert_eq!(
        c.send(b"XFORWARD COLOR=blue\r\n"),
        "501 5.5.4 Bad XFORWARD attribute name: COLOR\r\n"
    );
    c.send(b"MAIL FROM:<a@b>\r\n");
    assert_eq!(
        c.send(b"XFORWARD NAME=y\r\n"),
        "503 5.5.1 Error: MAIL transaction in progress\r\n"
    );
    c.send(b"RCPT TO:<c@d>\r\nDATA\r\n");
    // Still there while the message is received and delivered...
    assert_eq!(c.s.xforward().name.as_deref(), Some("client.example"));
    c.send(b"x\r\n.\r\n");
    // ...and cleared at the end of the transaction.
    assert!(c.s.xforward().is_empty());
    c.send(b"XFORWARD ADDR=192.0.2.8\r\n");
    assert_eq!(c.s.xforward().addr.as_deref(), Some("192.0.2.8"));
    c.send(b"RSET\r\n");
    assert!(c.s.xforward().is_empty());
}

#[test]
fn lmtp_per_recipient_replies() {
    let mut c = greeted(lmtp());
    c.answers = vec![None, None, Some(Reply::new(550, "5.1.1", "unknown")), None];
    c.finish = Some(vec![
        Reply::new(250, "2.0.0", "delivered to b"),
        Reply::plain(452, "mailbox full"),
    ]);
    let out = c.send(b"MAIL FROM:<a@x>\r\nRCPT TO:<b@x>\r\nRCPT TO:<nobody@x>\r\nRCPT TO:<c@x>\r\nDATA\r\nhi\r\n.\r\n");
    assert_eq!(
        out,
        "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n550 5.1.1 unknown\r\n250 2.1.5 Ok\r\n\
         354 End data with <CR><LF>.<CR><LF>\r\n250 2.0.0 delivered to b\r\n452 4.0.0 mailbox full\r\n"
    );
    // Too few replies from the I/O layer: the missing ones are temporary failures.
    c.finish = Some(vec![Reply::new(250, "2.0.0", "one")]);
    let out = c.send(b"MAIL FROM:<a@x>\r\nRCPT TO:<b@x>\r\nRCPT TO:<c@x>\r\nBDAT 2 LAST\r\nhi");
    assert!(
        out.ends_with("250 2.0.0 one\r\n451 4.3.0 Error: no delivery status\r\n"),
        "{out}"
    );
}

#[test]
fn lmtp_size_limit_replies_per_recipient() {
    let mut c = greeted(SessionConfig {
        max_message_size: 3,
        ..lmtp()
    });
    let out =
        c.send(b"MAIL FROM:<a@x>\r\nRCPT TO:<b@x>\r\nRCPT TO:<c@x>\r\nDATA\r\nhello\r\n.\r\n");
    let big = "552 5.3.4 Error: message size exceeds fixed maximum message size\r\n";
    assert!(
        out.ends_with(&format!(
            "354 End data with <CR><LF>.<CR><LF>\r\n{big}{big}"
        )),
        "{out}"
    );
}

#[test]
fn smtp_finish_message_takes_first_reply() {
    let mut c = greeted(cfg());
    c.finish = Some(vec![]);
    let out = c.send(b"MAIL FROM:<a@x>\r\nRCPT TO:<b@x>\r\nDATA\r\nhi\r\n.\r\n");
    assert!(
        out.ends_with("\r\n451 4.3.0 Error: no delivery status\r\n"),
        "{out}"
    );
    c.finish = Some(vec![
        Reply::plain(354, "nonsense"),
        Reply::new(250, "2.0.0", "x"),
    ]);
    let out = c.send(b"MAIL FROM:<a@x>\r\nRCPT TO:<b@x>\r\nDATA\r\nhi\r\n.\r\n");
    assert!(
        out.ends_with("\r\n451 4.3.0 Error: internal error, bad delivery status\r\n"),
        "{out}"
    );
}

#[test]
fn timeout_and_shutdown() {
    let mut c = greeted(cfg());
    c.send(b"MAIL FROM:<a@x>\r\nRCPT TO:<b@x>\r\nDATA\r\npartial");
    c.s.timeout();
    assert!(!c.run());
    assert_eq!(
        String::from_utf8(c.s.take_output()).unwrap(),
        "421 4.4.2 mx.test Error: timeout exceeded\r\n"
    );
    assert_eq!(c.take_events()[3..], [Ev::DataAborted, Ev::Close]);
    // A second call does nothing.
    c.s.shutdown();
    assert!(!c.s.has_output());

    let mut s = Session::new(cfg());
    s.take_output();
    s.shutdown();
    assert_eq!(s.next_event(), Event::Close);
    assert_eq!(
        s.take_output(),
        b"421 4.3.2 mx.test Service shutting down, closing channel\r\n"
    );
}

#[test]
fn quit_mid_bdat_aborts() {
    let mut c = greeted(cfg());
    let out = c.send(b"MAIL FROM:<a@x>\r\nRCPT TO:<b@x>\r\nBDAT 1\r\nxQUIT\r\n");
    assert!(
        out.ends_with("250 2.0.0 1 octets received\r\n221 2.0.0 Bye\r\n"),
        "{out}"
    );
    assert_eq!(
        c.take_events()[2..],
        [Ev::DataStart, Ev::DataAborted, Ev::Close]
    );
}

#[test]
fn second_ehlo_resets_transaction() {
    let mut c = greeted(cfg());
    c.send(b"MAIL FROM:<a@x>\r\nRCPT TO:<b@x>\r\n");
    c.send(b"EHLO again\r\n");
    assert_eq!(c.s.mail_from(), None);
    assert!(c.s.rcpts().is_empty());
    assert_eq!(c.s.helo(), Some("again"));
}

#[test]
fn binarymime_requires_bdat() {
    let mut c = greeted(cfg());
    let out = c.send(b"MAIL FROM:<a@x> BODY=BINARYMIME\r\nRCPT TO:<b@x>\r\nDATA\r\n");
    assert!(
        out.ends_with("503 5.5.1 Error: BODY=BINARYMIME requires BDAT\r\n"),
        "{out}"
    );
    let out = c.send(b"BDAT 2 LAST\r\n\0\xff");
    assert!(out.ends_with("250 2.0.0 Ok: queued\r\n"), "{out}");
    assert_eq!(c.s.body(), Body::SevenBit); // reset after the message
}

/// A tiny LCG so the test needs no extra crate.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

#[test]
fn random_input_never_panics() {
    const TOKENS: &[&[u8]] = &[
        b"EHLO x\r\n",
        b"LHLO x\r\n",
        b"MAIL FROM:<a@b>\r\n",
        b"RCPT TO:<c@d>\r\n",
        b"DATA\r\n",
        b"BDAT 3\r\n",
        b"BDAT 0 LAST\r\n",
        b"\r\n.\r\n",
        b".",
        b"\r",
        b"\n",
        b"..",
        b"RSET\r\n",
        b"STARTTLS\r\n",
        b"XFORWARD NAME=+41\r\n",
        b"\xff",
        b"NOOP\r\n",
        b"AUTH PLAIN AHUAcA==\r\n",
        b"AUTH PLAIN\r\n",
        b"AUTH LOGIN\r\n",
        b"AUTH CRAM-MD5\r\n",
        b"dXNlciAwMDExMjIzMzQ0NTU2Njc3ODg5OWFhYmJjY2RkZWVmZg==\r\n",
        b"dQ==\r\n",
        b"*\r\n",
        b"=\r\n",
    ];
    let mut rng = Lcg(0x5eed);
    let mut events = 0u64;
    let mut messages = 0u64;
    for round in 0..400 {
        let mut cfg = cfg();
        cfg.protocol = if round % 2 == 0 {
            Protocol::Smtp
        } else {
            Protocol::Lmtp
        };
        cfg.max_message_size = rng.next() % 64;
        cfg.max_line_length = rng.next() % 16;
        cfg.max_errors = if round % 4 < 2 {
            0
        } else {
            (rng.next() % 30) as usize
        };
        cfg.max_recipients = (rng.next() % 3) as usize;
        cfg.starttls = rng.next().is_multiple_of(2);
        cfg.xforward_allowed = rng.next().is_multiple_of(2);
        if rng.next().is_multiple_of(2) {
            cfg.auth = AuthConfig {
                mechanisms: vec![Mechanism::Plain, Mechanism::Login, Mechanism::CramMd5],
                allow_plaintext: rng.next().is_multiple_of(2),
                required: rng.next().is_multiple_of(2),
                max_failures: (rng.next() % 4) as usize,
                nonce: rng.next(),
                time: 1,
            };
        }
        let mut s = Session::new(cfg);
        'conn: for _ in 0..200 {
            let mut input = Vec::new();
            for _ in 0..(rng.next() % 8) {
                if rng.next().is_multiple_of(3) {
                    for _ in 0..(rng.next() % 20) {
                        input.push((rng.next() & 0xff) as u8);
                    }
                } else {
                    input.extend_from_slice(TOKENS[(rng.next() as usize) % TOKENS.len()]);
                }
            }
            s.feed(&input);
            for _ in 0..10_000 {
                let r = rng.next();
                events += 1;
                match s.next_event() {
                    Event::NeedInput => break,
                    Event::Close => break 'conn,
                    Event::Mail { .. } if r.is_multiple_of(4) => {
                        s.reject_mail(Reply::plain(r as u16, "x"))
                    }
                    Event::Mail { .. } => s.accept_mail(),
                    Event::Rcpt { .. } if r.is_multiple_of(4) => {
                        s.reject_rcpt(Reply::plain(550, "x"))
                    }
                    Event::Rcpt { .. } => s.accept_rcpt(),
                    Event::Auth { .. } if r.is_multiple_of(3) => {
                        s.reject_auth(Reply::plain(r as u16, "x"))
                    }
                    Event::Auth { credentials, .. } => {
                        let user = credentials.user().to_string();
                        s.accept_auth(user)
                    }
                    Event::DataStart if r.is_multiple_of(5) => {
                        s.reject_data(Reply::plain(451, "x"))
                    }
                    Event::DataStart => s.accept_data(),
                    Event::Data(d) => assert!(!d.is_empty()),
                    Event::DataEnd => {
                        messages += 1;
                        let n = (r % 4) as usize;
                        s.finish_message(vec![Reply::plain((r % 700) as u16, "x"); n]);
                    }
                    Event::DataAborted => {}
                    Event::StartTls => s.tls_started(),
                }
                if r.is_multiple_of(4999) {
                    s.timeout();
                }
            }
            let out = s.take_output();
            // Every reply line is well-formed: three digits, then space or dash.
            for line in out.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
                assert!(
                    line.len() >= 4 && line[..3].iter().all(u8::is_ascii_digit),
                    "{line:?}"
                );
                assert!(matches!(line[3], b' ' | b'-' | b'\r'), "{line:?}");
                assert!(line.ends_with(b"\r"));
            }
        }
    }
    // The sessions must have done real work, not closed at once.
    assert!(
        events > 20_000 && messages > 20,
        "only {events} events, {messages} messages"
    );
}

/// The loop shown in the module documentation, compiled and run here (doc tests share the
/// crate's build with other worktrees in this setup, so they are checked here too).
#[test]
fn doc_example_loop() {
    fn run(cfg: SessionConfig, mut reads: Vec<Vec<u8>>) -> Vec<u8> {
        let mut written = Vec::new();
        let mut write = |b: &[u8]| written.extend_from_slice(b);
        let mut s = Session::new(cfg);
        loop {
            match s.next_event() {
                Event::NeedInput => {
                    write(&s.take_output());
                    if reads.is_empty() {
                        break;
                    }
                    s.feed(&reads.remove(0));
                }
                Event::Mail { from: _, size: _ } => s.accept_mail(),
                Event::Rcpt { to: _ } => s.accept_rcpt(),
                Event::Auth { .. } => s.reject_auth(Reply::new(535, "5.7.8", "no")),
                Event::DataStart => s.accept_data(),
                Event::Data(_bytes) => {}
                Event::DataEnd => {
                    s.finish_message(vec![Reply::new(250, "2.0.0", "Ok: queued")]);
                }
                Event::DataAborted => {}
                Event::StartTls => {
                    write(&s.take_output());
                    s.tls_started();
                }
                Event::Close => {
                    write(&s.take_output());
                    break;
                }
            }
        }
        written
    }
    let out = run(
        cfg(),
        vec![b"EHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\nx\r\n.\r\nQUIT\r\n".to_vec()],
    );
    let out = String::from_utf8(out).unwrap();
    assert!(
        out.ends_with("250 2.0.0 Ok: queued\r\n221 2.0.0 Bye\r\n"),
        "{out}"
    );
}

#[test]
fn repeated_rcpt_is_one_recipient() {
    let mut c = greeted(SessionConfig {
        max_recipients: 3,
        ..cfg()
    });
    let out = c.send(b"MAIL FROM:<a@x>\r\nRCPT TO:<d@x>\r\nRCPT TO:<d@x>\r\nRCPT TO:<D@x>\r\n");
    assert_eq!(
        out,
        "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n250 2.1.5 Ok\r\n250 2.1.5 Ok\r\n"
    );
    // Asked once; another spelling of the local part may be another mailbox.
    assert_eq!(
        c.take_events()[1..],
        [Ev::Rcpt("d@x".into()), Ev::Rcpt("D@x".into())]
    );
    assert_eq!(c.s.rcpts(), ["d@x", "D@x"]);
    // Every RCPT answered 250 counts toward the limit, as the client counts them.
    assert_eq!(
        c.send(b"RCPT TO:<e@x>\r\n"),
        "452 4.5.3 Error: too many recipients\r\n"
    );
    let out = c.send(b"DATA\r\nhi\r\n.\r\n");
    assert!(out.ends_with("250 2.0.0 Ok: queued\r\n"), "{out}");
    assert_eq!(
        c.take_events()[1..],
        [Ev::DataEnd {
            msg: b"hi\r\n".to_vec(),
            from: "a@x".into(),
            rcpts: vec!["d@x".into(), "D@x".into()]
        }]
    );
}

/// The reviewer's case: LMTP, the sink fails for d@x; its repeated RCPT must not be told
/// "delivered".
#[test]
fn lmtp_repeated_rcpt_gets_its_address_reply() {
    let mut c = greeted(lmtp());
    c.finish = Some(vec![
        Reply::new(451, "4.2.0", "d: try later"),
        Reply::new(250, "2.0.0", "e: delivered"),
    ]);
    let out = c.send(
        b"MAIL FROM:<a@x>\r\nRCPT TO:<d@x>\r\nRCPT TO:<e@x>\r\nRCPT TO:<d@x>\r\nDATA\r\nhi\r\n.\r\n",
    );
    assert_eq!(
        out,
        "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n250 2.1.5 Ok\r\n250 2.1.5 Ok\r\n\
         354 End data with <CR><LF>.<CR><LF>\r\n\
         451 4.2.0 d: try later\r\n250 2.0.0 e: delivered\r\n451 4.2.0 d: try later\r\n"
    );
    assert!(matches!(
        c.take_events().last(),
        Some(Ev::DataEnd { rcpts, .. }) if rcpts == &["d@x", "e@x"]
    ));
    // Refused by the session itself: one reply per accepted RCPT too.
    let mut c = greeted(SessionConfig {
        max_message_size: 1,
        ..lmtp()
    });
    let out = c.send(b"MAIL FROM:<a@x>\r\nRCPT TO:<d@x>\r\nRCPT TO:<d@x>\r\nBDAT 2 LAST\r\nhi");
    let big = "552 5.3.4 Error: message size exceeds fixed maximum message size\r\n";
    assert!(
        out.ends_with(&format!("250 2.1.5 Ok\r\n{big}{big}")),
        "{out}"
    );
}

// ---- the exchange record, for the I/O layer's log ------------------------------------

/// (verb, reply code, refusal) of each exchange since the last call.
fn exchanges(c: &mut Client) -> Vec<(&'static str, u16, Option<Refusal>)> {
    c.s.take_exchanges()
        .into_iter()
        .map(|e| (e.verb, e.reply.code, e.refused))
        .collect()
}

fn refusal(from: Option<&str>, rcpt: Option<&str>) -> Option<Refusal> {
    Some(Refusal {
        helo: Some("c.test".into()),
        from: from.map(String::from),
        rcpt: rcpt.map(String::from),
    })
}

#[test]
fn exchanges_record_each_reply_and_the_facts_of_refusals() {
    let mut c = greeted(cfg());
    c.s.take_exchanges();
    c.answers = vec![
        Some(Reply::new(550, "5.7.1", "sender refused")),
        None,
        Some(Reply::new(550, "5.1.1", "no route")),
    ];
    c.send(b"MAIL FROM:<bad@x>\r\nMAIL FROM:<ok@x>\r\nRCPT TO:<nope@y>\r\nRCPT TO:<yes@y>\r\nNOOP\r\nBOGUS\r\n");
    assert_eq!(
        exchanges(&mut c),
        vec![
            ("MAIL", 550, refusal(Some("bad@x"), None)),
            ("MAIL", 250, None),
            ("RCPT", 550, refusal(Some("ok@x"), Some("nope@y"))),
            ("RCPT", 250, None),
            ("NOOP", 250, None),
            ("UNKNOWN", 500, None),
        ]
    );
}

/// A line too long, arriving in pieces without its LF, is answered (at its end) as a line
/// of its own: not as a refusal of the RCPT before it.
#[test]
fn a_long_line_in_pieces_is_not_blamed_on_the_command_before() {
    let mut c = greeted(cfg());
    c.send(b"MAIL FROM:<s@x>\r\nRCPT TO:<victim@x>\r\n");
    c.s.take_exchanges();
    c.send(&b"X".repeat(6000));
    c.send(b"\r\nNOOP\r\n");
    assert_eq!(
        exchanges(&mut c),
        vec![("UNKNOWN", 500, None), ("NOOP", 250, None)]
    );
}

#[test]
fn a_message_refused_at_its_end_is_not_a_refusal_record() {
    let mut c = greeted(SessionConfig {
        max_message_size: 10,
        ..cfg()
    });
    c.send(b"MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\n");
    c.s.take_exchanges();
    c.send(b"0123456789 too big\r\n.\r\n");
    // The I/O layer logs the dropped message itself (it has its id): one line, not two.
    assert_eq!(exchanges(&mut c), vec![("DATA", 552, None)]);
    // Refused before any data: a refusal.
    c.send(b"DATA\r\n");
    assert_eq!(exchanges(&mut c), vec![("DATA", 503, refusal(None, None))]);
    c.send(b"MAIL FROM:<a@x> SIZE=99\r\n");
    assert_eq!(
        exchanges(&mut c),
        vec![("MAIL", 552, refusal(Some("a@x"), None))]
    );
}

#[test]
fn limits_and_closes_are_refusals() {
    let mut c = greeted(SessionConfig {
        max_recipients: 1,
        max_errors: 2,
        ..cfg()
    });
    c.s.take_exchanges();
    c.send(b"MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nRCPT TO:<c@y>\r\n");
    let ex = exchanges(&mut c);
    assert_eq!(ex[2], ("RCPT", 452, refusal(Some("a@x"), Some("c@y"))));
    c.send(b"MAIL FROM:<d@x>\r\nMAIL FROM:<e@x>\r\n");
    let ex = exchanges(&mut c);
    assert_eq!(ex[0].1, 503);
    assert_eq!(ex[1].0, "MAIL");
    assert_eq!(ex[1].1, 503);
    assert_eq!(ex[2], ("MAIL", 421, refusal(Some("e@x"), None)));
    let mut t = greeted(cfg());
    t.s.take_exchanges();
    t.s.timeout();
    assert_eq!(
        exchanges(&mut t),
        vec![(
            "",
            421,
            Some(Refusal {
                helo: Some("c.test".into()),
                from: None,
                rcpt: None
            })
        )]
    );
}

#[test]
fn lmtp_end_of_message_is_recorded_once_per_reply() {
    let mut c = greeted(lmtp());
    c.send(b"MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nRCPT TO:<c@y>\r\nDATA\r\n");
    c.s.take_exchanges();
    c.finish = Some(vec![
        Reply::new(550, "5.1.1", "no such user"),
        Reply::new(250, "2.0.0", "Ok"),
    ]);
    c.send(b"Subject: x\r\n\r\nhi\r\n.\r\n");
    // The I/O layer's own answers: logged by it as the transaction, not refusals.
    assert_eq!(
        exchanges(&mut c),
        vec![("DATA", 550, None), ("DATA", 250, None)]
    );
}

#[test]
fn transcript_keeps_command_lines_with_auth_masked() {
    let mut c = greeted(SessionConfig {
        transcript: true,
        ..cfg()
    });
    c.s.take_exchanges();
    c.send(b"AUTH PLAIN c2VjcmV0\r\nNOOP\r\n");
    let lines: Vec<Option<String>> = c.s.take_exchanges().into_iter().map(|e| e.line).collect();
    assert_eq!(
        lines,
        vec![
            Some("AUTH PLAIN ****".to_string()),
            Some("NOOP".to_string())
        ]
    );
    let mut quiet = greeted(cfg());
    quiet.send(b"NOOP\r\n");
    assert!(quiet.s.take_exchanges().iter().all(|e| e.line.is_none()));
}

/// A local submission (`sendmail -bs`) takes `RCPT TO:<root>` and hands it on as given;
/// a listener's session refuses it, and both refuse a malformed one.
#[test]
fn unqualified_recipients_only_when_allowed() {
    let mut c = greeted(cfg());
    let out = c.send(b"MAIL FROM:<root>\r\nRCPT TO:<root>\r\n");
    assert!(
        out.ends_with("501 5.1.3 Bad recipient address syntax\r\n"),
        "{out}"
    );
    let mut c = greeted(cfg());
    c.s.accept_unqualified_recipients();
    let out = c.send(b"MAIL FROM:<root> BODY=8BITMIME\r\nRCPT TO:<root>\r\nRCPT TO:<a b>\r\n");
    assert_eq!(
        out,
        "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n501 5.1.3 Bad recipient address syntax\r\n"
    );
    let events = c.take_events();
    assert!(events.contains(&Ev::Rcpt("root".into())), "{events:?}");
}

#[test]
fn pending_mail_params_are_those_of_the_waiting_mail() {
    let mut s = Session::new(cfg());
    assert!(s.pending_mail_params().is_none());
    s.feed(b"EHLO c\r\nMAIL FROM:<a@b> BODY=8BITMIME SIZE=10\r\n");
    assert!(matches!(s.next_event(), Event::Mail { .. }));
    let p = s.pending_mail_params().cloned().unwrap();
    assert_eq!(
        (p.body, p.size, p.smtputf8),
        (Body::EightBitMime, Some(10), false)
    );
    s.accept_mail();
    assert!(s.pending_mail_params().is_none());
}
