//! Drives one `mailchute::proto::Session` the way the SMTP/LMTP I/O layer does, with the
//! client's bytes, the read boundaries and every answer chosen by the fuzz input.
//!
//! Input layout: 4 config bytes, 1 length byte `L`, `L` decision bytes, then the bytes the
//! client sends. Decisions are used in a cycle (all-accept when there are none): one per
//! event (how much the next read returns, accept or refuse, timeout/shutdown), one more per
//! refusal or delivery status.
//!
//! Invariants checked: no panic; no endless loop; every output line is `ddd[ -]text` with
//! CRLF, a code of 2xx-5xx, no CR/LF inside, an enhanced code (when present) of the same
//! class, and a `-` line is followed by the same code; nothing is emitted after `Close`;
//! message bytes only between an accepted `DataStart` and its `DataEnd`/`DataAborted`, and
//! no more of them than were fed; `Close` never leaves a message open; questions come only
//! in a state where they make sense.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mailchute::proto::{AuthConfig, Event, Mechanism, Protocol, Reply, Session, SessionConfig};

struct Decisions<'a> {
    bytes: &'a [u8],
    next: usize,
}

impl Decisions<'_> {
    fn byte(&mut self) -> u8 {
        if self.bytes.is_empty() {
            return 0;
        }
        let b = self.bytes[self.next % self.bytes.len()];
        self.next += 1;
        b
    }

    /// A reply as an I/O layer might hand one over, including bad ones the session must
    /// coerce (wrong class, code out of range, line breaks in the text, wrong enhanced code).
    fn reply(&mut self) -> Reply {
        let b = self.byte();
        let code = [
            250, 251, 354, 421, 450, 451, 452, 550, 552, 554, 0, 99, 1000, 65535, 199, 600,
        ][usize::from(b & 15)];
        let enhanced = ["", "4.2.0", "5.1.1", "2.0.0"][usize::from((b >> 4) & 3)];
        match b >> 6 {
            0 => Reply::new(code, enhanced, "from the fuzzer"),
            1 => Reply::new(code, enhanced, "line1\r\n250 2.0.0 injected\n\r"),
            2 => Reply::multiline(code, None, Vec::new()),
            _ => Reply::multiline(
                code,
                mailchute::proto::Enhanced::parse(enhanced),
                vec!["a\u{85}b\0".into(), String::new(), "  ".into(), "c".into()],
            ),
        }
    }
}

/// What `next_event` returned, owned so the session can be called again.
#[derive(Debug)]
enum Ev {
    NeedInput,
    Mail,
    Rcpt,
    Auth(String),
    DataStart,
    Data(usize),
    DataEnd,
    DataAborted,
    StartTls,
    Close,
}

/// Checks the replies taken in one go: whole lines only, and whole replies only (replies
/// are rendered in one piece, so a taken output never ends inside a multi-line reply).
fn check_output(out: &[u8]) {
    if out.is_empty() {
        return;
    }
    let mut continued: Option<u16> = None;
    for line in out.split_inclusive(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r\n").unwrap_or_else(|| {
            panic!(
                "output line without CRLF: {:?}",
                String::from_utf8_lossy(line)
            )
        });
        let shown = String::from_utf8_lossy(line);
        assert!(!line.contains(&b'\r'), "bare CR in output line {shown:?}");
        assert!(
            line.len() >= 3 && line[..3].iter().all(u8::is_ascii_digit),
            "output line without 3-digit code: {shown:?}"
        );
        let code = u16::from(line[0] - b'0') * 100
            + u16::from(line[1] - b'0') * 10
            + u16::from(line[2] - b'0');
        assert!(
            (200..600).contains(&code),
            "reply code {code} out of 2xx-5xx: {shown:?}"
        );
        if let Some(prev) = continued.take() {
            assert_eq!(prev, code, "multi-line reply changes code: {shown:?}");
        }
        let is_continued = match line.get(3) {
            None | Some(b' ') => false,
            Some(b'-') => true,
            Some(_) => panic!("no ' ' or '-' after the code: {shown:?}"),
        };
        if is_continued {
            continued = Some(code);
        }
        // An enhanced status code must agree with the reply's class (RFC 3463, RFC 2034).
        let text = std::str::from_utf8(line.get(4..).unwrap_or_default()).unwrap_or_default();
        let token = text.split(' ').next().unwrap_or_default();
        if let Some(e) = mailchute::proto::Enhanced::parse(token) {
            assert_eq!(
                u16::from(e.class),
                code / 100,
                "enhanced code of another class: {shown:?}"
            );
        }
    }
    assert!(continued.is_none(), "output ends inside a multi-line reply");
}

fuzz_target!(|data: &[u8]| {
    let cfg_bytes: [u8; 4] = std::array::from_fn(|i| data.get(i).copied().unwrap_or(0));
    let rest = data.get(4..).unwrap_or_default();
    let (decisions, input) = match rest.split_first() {
        Some((&n, rest)) => rest.split_at(usize::from(n).min(rest.len())),
        None => (&[][..], &[][..]),
    };
    let mut d = Decisions {
        bytes: decisions,
        next: 0,
    };
    let [c0, c1, c2, c3] = cfg_bytes;
    let cfg = SessionConfig {
        protocol: if c0 & 1 == 1 {
            Protocol::Lmtp
        } else {
            Protocol::Smtp
        },
        hostname: "mx.example.org".into(),
        max_message_size: if c1 < 128 {
            0
        } else {
            u64::from(c1 - 127) * 16
        },
        max_recipients: usize::from(c3 % 8),
        max_line_length: if c2 < 128 { 0 } else { u64::from(c2 - 127) },
        max_errors: [0, 1, 2, 3, 5, 10, 20, 100][usize::from(c0 >> 5)],
        starttls: c0 & 2 != 0,
        tls_active: c0 & 4 != 0,
        require_tls: c0 & 8 != 0,
        xforward_allowed: c0 & 16 != 0,
        transcript: c3 & 8 != 0,
        // AUTH on for half the inputs: every mechanism, in clear or not, required or not.
        auth: if c3 & 0x10 != 0 {
            AuthConfig {
                mechanisms: vec![Mechanism::Plain, Mechanism::Login, Mechanism::CramMd5],
                allow_plaintext: c3 & 0x20 != 0,
                required: c3 & 0x40 != 0,
                max_failures: usize::from(c3 >> 7) * 2,
                nonce: u64::from(c2),
                time: 1,
            }
        } else {
            AuthConfig::default()
        },
    };
    let lmtp = cfg.protocol == Protocol::Lmtp;

    let mut s = Session::new(cfg);
    let mut pos = 0usize; // how much of `input` was fed
    let mut data_bytes = 0usize;
    let mut msg_open = false;
    let mut eof = false;
    let mut steps = 0usize;
    let max_steps = 16 * (input.len() + decisions.len() + 64);

    loop {
        steps += 1;
        assert!(steps < max_steps, "no progress after {steps} events");
        let ev = match s.next_event() {
            Event::NeedInput => Ev::NeedInput,
            Event::Mail { from, .. } => {
                assert!(!from.contains(['\r', '\n', '\0']), "MAIL address {from:?}");
                Ev::Mail
            }
            Event::Rcpt { to } => {
                assert!(!to.contains(['\r', '\n', '\0']), "RCPT address {to:?}");
                Ev::Rcpt
            }
            Event::Auth { credentials, .. } => {
                let user = credentials.user().to_string();
                assert!(!user.is_empty(), "AUTH without a user");
                // The secret must never show in a debug print (it ends up in logs).
                if let mailchute::proto::Credentials::Password { password, .. } = credentials
                    && password.len() > 3
                {
                    assert!(!format!("{credentials:?}").contains(password.as_str()));
                }
                Ev::Auth(user)
            }
            Event::DataStart => Ev::DataStart,
            Event::Data(b) => Ev::Data(b.len()),
            Event::DataEnd => Ev::DataEnd,
            Event::DataAborted => Ev::DataAborted,
            Event::StartTls => Ev::StartTls,
            Event::Close => Ev::Close,
        };
        // Bookkeeping of what the I/O layer has open, before it acts on the event.
        match ev {
            Ev::Data(n) => {
                assert!(msg_open, "Data outside an accepted message");
                data_bytes += n;
                assert!(
                    data_bytes <= pos,
                    "{data_bytes} message bytes out of {pos} bytes fed"
                );
            }
            Ev::DataEnd | Ev::DataAborted => {
                assert!(msg_open, "{ev:?} without an accepted DataStart");
                msg_open = false;
            }
            Ev::DataStart => assert!(!msg_open, "DataStart with a message open"),
            Ev::Close => assert!(!msg_open, "Close with a message still open"),
            _ => {}
        }
        let act = d.byte();
        // The server may time out or shut down at any moment, even with a question open.
        if !matches!(ev, Ev::Close) && act >= 0xFE {
            if act == 0xFE {
                s.timeout();
            } else {
                s.shutdown();
            }
            continue;
        }
        match ev {
            Ev::NeedInput => {
                assert!(!s.is_closed());
                let out = s.take_output();
                check_output(&out);
                // What goes to the log is one line each.
                for ex in s.take_exchanges() {
                    if let Some(line) = &ex.line {
                        assert!(!line.contains(['\r', '\n']), "log line {line:?}");
                    }
                }
                if pos >= input.len() {
                    if eof {
                        break;
                    }
                    // The client stops sending: the server eventually times out, or the
                    // connection just drops.
                    eof = true;
                    if act & 1 == 1 {
                        s.timeout();
                        continue;
                    }
                    break;
                }
                let n = match act {
                    0 => input.len() - pos,
                    1..=127 => usize::from(act),
                    _ => usize::from(act - 127) * 32,
                }
                .min(input.len() - pos);
                s.feed(&input[pos..pos + n]);
                pos += n;
            }
            Ev::Mail => {
                assert!(s.mail_from().is_none(), "MAIL inside a transaction");
                if act % 4 == 3 {
                    let r = d.reply();
                    s.reject_mail(r);
                } else {
                    s.accept_mail();
                }
                // A second answer to an answered question is ignored.
                s.accept_mail();
                s.finish_message(vec![Reply::new(250, "2.0.0", "stray")]);
            }
            Ev::Rcpt => {
                assert!(s.mail_from().is_some(), "RCPT outside a transaction");
                if act % 4 == 3 {
                    let r = d.reply();
                    s.reject_rcpt(r);
                } else {
                    s.accept_rcpt();
                }
            }
            Ev::Auth(user) => {
                assert!(s.mail_from().is_none(), "AUTH inside a transaction");
                assert!(s.auth_user().is_none(), "AUTH when already authenticated");
                if act % 3 == 2 {
                    let r = d.reply();
                    s.reject_auth(r);
                } else {
                    s.accept_auth(user);
                }
                // A second answer is ignored.
                s.accept_auth("again".into());
            }
            Ev::DataStart => {
                assert!(s.mail_from().is_some() && !s.rcpts().is_empty());
                if act % 8 == 7 {
                    let r = d.reply();
                    s.reject_data(r);
                } else {
                    s.accept_data();
                    msg_open = true;
                }
            }
            Ev::Data(_) | Ev::DataAborted => {}
            Ev::DataEnd => {
                let rcpts = s.rcpts().len();
                assert!(rcpts > 0, "DataEnd without recipients");
                let wanted = if lmtp { rcpts } else { 1 };
                let count = match act % 8 {
                    0 => 0,
                    1 => wanted + 1,
                    2 => wanted - 1,
                    _ => wanted,
                };
                let replies = (0..count)
                    .map(|_| {
                        if act & 0x80 != 0 {
                            d.reply()
                        } else {
                            Reply::new(250, "2.0.0", "Ok: queued")
                        }
                    })
                    .collect();
                s.finish_message(replies);
            }
            Ev::StartTls => {
                let out = s.take_output();
                assert!(
                    out.ends_with(b"220 2.0.0 Ready to start TLS\r\n"),
                    "StartTls without its 220: {:?}",
                    String::from_utf8_lossy(&out)
                );
                check_output(&out);
                // Plaintext that arrives during the handshake must be ignored.
                if act & 1 == 1 {
                    s.feed(b"MAIL FROM:<injected@example.org>\r\n");
                }
                s.tls_started();
                assert!(s.tls_active());
                assert!(s.helo().is_none() && s.mail_from().is_none());
            }
            Ev::Close => {
                assert!(s.is_closed());
                let out = s.take_output();
                check_output(&out);
                // Once closed, nothing more comes out, whatever the I/O layer does.
                s.feed(b"QUIT\r\nRSET\r\n");
                assert!(matches!(s.next_event(), Event::Close));
                s.timeout();
                s.shutdown();
                s.accept_mail();
                s.accept_rcpt();
                s.accept_data();
                s.finish_message(vec![Reply::new(250, "2.0.0", "late")]);
                s.tls_started();
                assert!(matches!(s.next_event(), Event::Close));
                assert!(s.take_output().is_empty(), "output after Close");
                break;
            }
        }
    }
    let out = s.take_output();
    check_output(&out);
});
