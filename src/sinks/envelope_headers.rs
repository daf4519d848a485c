//! The envelope a local delivery keeps in the stored message, as Postfix `local` and
//! Dovecot's LDA do: `Return-Path: <sender>` and `Delivered-To: rcpt` in front of the
//! message. Without them a catch-all mailbox cannot tell whom a Bcc copy was for, and a
//! reader that answers bounces cannot find the envelope sender.
//!
//! A `Return-Path` the message brought along is dropped on the way (it is set by the final
//! delivery, RFC 5321 §4.4; one from outside is a claim, not a fact), so a stored message
//! has exactly one: ours. Other fields, `Delivered-To` included, stay as they came: earlier
//! `Delivered-To` lines are what Postfix uses to detect mail loops, and they are history.
//!
//! The header section is the message up to its first empty line; a message without one is
//! all header (Postfix's view). Only its first [`HEADER_LIMIT`] bytes are looked at (the
//! rewrite filter's bound): a header section longer than that (a pathological message, or
//! a blob with no header at all) has the rest treated as body, and a `Return-Path` field
//! there stays — after ours, which is the one readers take. Fields are split by the rewrite
//! filter's header scanner, which works on bytes: 8-bit or broken lines are kept untouched.

use crate::filters::rewrite::HEADER_LIMIT;
use crate::proto::header::{block_line_end, is_blank_line, parts};
use std::io::{self, BufRead, BufReader, Read};

/// The two fields for `rcpt`'s copy, with `eol` line ends. A control character in an
/// address (none can come in over SMTP; `deliver -f` takes any argument) becomes `?`, so
/// no field can be smuggled in.
pub fn block(mail_from: &str, rcpt: &str, eol: &str) -> Vec<u8> {
    format!(
        "Return-Path: <{}>{eol}Delivered-To: {}{eol}",
        clean(mail_from),
        clean(rcpt)
    )
    .into_bytes()
}

fn clean(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// The length of the header section at the start of `start`: its field lines (an empty
/// line ends it and is not part of it). When `whole` is false `start` is only the first
/// part of the message, and a last line without its line end may go on beyond it: it is
/// left out. When `whole` is true such a line is the message's last, and part of the
/// header (a message without an empty line is all header).
pub fn header_section(start: &[u8], whole: bool) -> usize {
    let mut pos = 0;
    for line in start.split_inclusive(|&b| b == b'\n') {
        if is_blank_line(line) {
            return pos;
        }
        if !line.ends_with(b"\n") {
            return if whole { pos + line.len() } else { pos };
        }
        pos += line.len();
    }
    pos
}

/// Whether a field name (as the scanner gives it, whitespace before the colon removed) is
/// `Return-Path`, in any case.
fn is_return_path(name: &[u8]) -> bool {
    name.eq_ignore_ascii_case(b"Return-Path")
}

/// `section` (a header section, see [`header_section`]) with every `Return-Path` field
/// removed, continuation lines and all. Everything else is kept byte for byte.
pub fn without_return_path(section: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(section.len());
    for part in parts(section) {
        if !part.name.is_some_and(is_return_path) {
            out.extend_from_slice(part.raw);
        }
    }
    out
}

/// What replaces the first `n` bytes of a message whose start is `start`: the envelope
/// block for `mail_from`/`rcpt` (in the line end of the message's first line, CRLF when
/// it has none) followed by the header section without its `Return-Path` fields.
/// Returns it and `n`; the caller writes `start[n..]` and the rest unchanged.
pub fn rewrite_start(mail_from: &str, rcpt: &str, start: &[u8], whole: bool) -> (Vec<u8>, usize) {
    let n = header_section(start, whole);
    let section = &start[..n];
    let mut out = block(mail_from, rcpt, block_line_end(start));
    out.extend_from_slice(&without_return_path(section));
    (out, n)
}

/// An in-memory message with the envelope kept (the IMAP sink holds the message whole).
pub fn prepend(mail_from: &str, rcpt: &str, message: &[u8]) -> Vec<u8> {
    let window = &message[..message.len().min(HEADER_LIMIT)];
    let (mut out, n) = rewrite_start(mail_from, rcpt, window, window.len() == message.len());
    out.extend_from_slice(&message[n..]);
    out
}

/// A message file read with the envelope kept: [`rewrite_start`] over its first bytes (up
/// to the empty line, at most [`HEADER_LIMIT`]), then the rest as it is. The local sinks
/// put it where they read the spool file, so their line-end conversion, quoting and size
/// accounting see the stored bytes.
pub struct WithEnvelope<R> {
    src: BufReader<R>,
    /// The rewritten start, and how much of it has been read out.
    head: Vec<u8>,
    served: usize,
    /// The envelope's two addresses until the start has been read and rewritten.
    pending: Option<(String, String)>,
}

impl<R: Read> WithEnvelope<R> {
    pub fn new(src: R, mail_from: &str, rcpt: &str) -> Self {
        WithEnvelope {
            src: BufReader::with_capacity(super::local::CHUNK, src),
            head: Vec::new(),
            served: 0,
            pending: Some((mail_from.to_owned(), rcpt.to_owned())),
        }
    }

    /// Reads the start of the message line by line, up to and including the empty line
    /// (or EOF, or [`HEADER_LIMIT`] bytes), and rewrites it.
    fn fill(&mut self, mail_from: &str, rcpt: &str) -> io::Result<()> {
        let mut start = Vec::new();
        let whole = loop {
            let budget = (HEADER_LIMIT - start.len()) as u64;
            let before = start.len();
            let n = (&mut self.src).take(budget).read_until(b'\n', &mut start)?;
            let line = &start[before..];
            if n == 0 {
                break start.len() < HEADER_LIMIT;
            }
            if is_blank_line(line) {
                break false;
            }
            if !line.ends_with(b"\n") {
                // EOF without a line end, or the budget ran out inside a line.
                break start.len() < HEADER_LIMIT;
            }
            if start.len() >= HEADER_LIMIT {
                break false;
            }
        };
        let (mut head, n) = rewrite_start(mail_from, rcpt, &start, whole);
        head.extend_from_slice(&start[n..]);
        self.head = head;
        Ok(())
    }
}

impl<R: Read> Read for WithEnvelope<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some((from, rcpt)) = self.pending.take() {
            self.fill(&from, &rcpt)?;
        }
        if self.served < self.head.len() {
            let n = buf.len().min(self.head.len() - self.served);
            buf[..n].copy_from_slice(&self.head[self.served..self.served + n]);
            self.served += n;
            if self.served == self.head.len() {
                self.head = Vec::new();
                self.served = 0;
            }
            return Ok(n);
        }
        self.src.read(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(message: &[u8], chunk: usize) -> Vec<u8> {
        let mut r = WithEnvelope::new(message, "s@x", "r@y");
        let mut out = Vec::new();
        let mut buf = vec![0u8; chunk];
        loop {
            let n = r.read(&mut buf).unwrap();
            if n == 0 {
                return out;
            }
            out.extend_from_slice(&buf[..n]);
        }
    }

    /// Both paths (streaming and in memory) give the same bytes.
    fn both(message: &[u8]) -> Vec<u8> {
        let mem = prepend("s@x", "r@y", message);
        for chunk in [1, 3, 64 * 1024] {
            assert_eq!(read_all(message, chunk), mem, "chunk {chunk}");
        }
        mem
    }

    #[test]
    fn the_block() {
        assert_eq!(
            block("a@b", "c@d", "\r\n"),
            b"Return-Path: <a@b>\r\nDelivered-To: c@d\r\n"
        );
        assert_eq!(
            block("", "c@d", "\n"),
            b"Return-Path: <>\nDelivered-To: c@d\n"
        );
        assert_eq!(
            block("a\r\nX: y@b", "c\n@d", "\n"),
            b"Return-Path: <a??X: y@b>\nDelivered-To: c?@d\n"
        );
        assert_eq!(
            block("j\u{f6}rg@b\u{fc}ro.example", "r@x", "\n"),
            "Return-Path: <j\u{f6}rg@b\u{fc}ro.example>\nDelivered-To: r@x\n".as_bytes()
        );
    }

    #[test]
    fn prepends_and_keeps_the_rest() {
        let m = b"Received: x\r\nSubject: s\r\n\r\nReturn-Path: <in@body>\r\n";
        let mut want = b"Return-Path: <s@x>\r\nDelivered-To: r@y\r\n".to_vec();
        want.extend_from_slice(m);
        assert_eq!(both(m), want);
    }

    #[test]
    fn drops_return_paths_folded_several_any_case() {
        let m = b"Return-Path: <forged@x>\r\nReceived: a\r\n\tb\r\nreturn-path :\r\n <f2@x>\r\n\t(more)\r\nRETURN-PATH:<f3@x>\r\nSubject: s\r\n X-Not: a field\r\n\r\nReturn-Path: body\r\n";
        assert_eq!(
            both(m),
            b"Return-Path: <s@x>\r\nDelivered-To: r@y\r\nReceived: a\r\n\tb\r\nSubject: s\r\n X-Not: a field\r\n\r\nReturn-Path: body\r\n"
        );
        // Similar names are other fields.
        let m = b"Return-Paths: a\r\nX-Return-Path: b\r\nReturn-Path-X: c\r\n\r\n";
        assert!(both(m).ends_with(m));
    }

    #[test]
    fn eight_bit_and_broken_lines_are_kept() {
        let m = b"Subj\xe9ct: \xff\xfe\r\nno colon here\r\n :lead\r\nReturn-Path: <\xff@x>\r\n\x00: nul\r\n\r\nbody\xff";
        assert_eq!(
            both(m),
            b"Return-Path: <s@x>\r\nDelivered-To: r@y\r\nSubj\xe9ct: \xff\xfe\r\nno colon here\r\n :lead\r\n\x00: nul\r\n\r\nbody\xff"
        );
    }

    #[test]
    fn no_separator_is_all_header() {
        // Not even a line end at the end: the last line is a header line too.
        let m = b"Subject: s\r\nReturn-Path: <f@x>";
        assert_eq!(
            both(m),
            b"Return-Path: <s@x>\r\nDelivered-To: r@y\r\nSubject: s\r\n"
        );
        let m = b"Subject: s\nReturn-Path: <f@x>\n continued\nX: y\n";
        assert_eq!(
            both(m),
            b"Return-Path: <s@x>\nDelivered-To: r@y\nSubject: s\nX: y\n"
        );
    }

    #[test]
    fn empty_and_body_only() {
        assert_eq!(both(b""), b"Return-Path: <s@x>\r\nDelivered-To: r@y\r\n");
        // An empty header section: the blank line stays first after ours.
        let m = b"\r\nReturn-Path: <b@x>\r\n";
        let mut want = b"Return-Path: <s@x>\r\nDelivered-To: r@y\r\n".to_vec();
        want.extend_from_slice(m);
        assert_eq!(both(m), want);
    }

    #[test]
    fn line_end_follows_the_message() {
        assert!(
            both(b"A: b\nReturn-Path: x\n\nbody\n")
                .starts_with(b"Return-Path: <s@x>\nDelivered-To: r@y\nA: b\n\n")
        );
    }

    #[test]
    fn header_longer_than_the_limit_is_cut_at_a_line() {
        // A Return-Path inside the window goes; past it the rest is body.
        let mut m = b"Return-Path: <f1@x>\r\n".to_vec();
        let filler = format!("X-Filler: {}\r\n", "a".repeat(100));
        while m.len() < HEADER_LIMIT - 50 {
            m.extend_from_slice(filler.as_bytes());
        }
        m.extend_from_slice(&[b'y'; 200]);
        m.extend_from_slice(b"\r\nReturn-Path: <f2@x>\r\n\r\nbody\r\n");
        let out = both(&m);
        assert!(out.starts_with(b"Return-Path: <s@x>\r\nDelivered-To: r@y\r\nX-Filler: "));
        assert_eq!(out.windows(12).filter(|w| w == b"Return-Path:").count(), 2);
        assert!(out.ends_with(b"yyy\r\nReturn-Path: <f2@x>\r\n\r\nbody\r\n"));
        // A message exactly at the limit with no line end: cut, the partial line kept.
        let m = vec![b'z'; HEADER_LIMIT + 10];
        let out = both(&m);
        assert_eq!(&out[out.len() - m.len()..], &m[..]);
    }

    #[test]
    fn scanner_sections() {
        assert_eq!(header_section(b"A: b\r\n\r\nc", false), 6);
        assert_eq!(header_section(b"A: b\r\nB: c", false), 6);
        assert_eq!(header_section(b"A: b\r\nB: c", true), 10);
        assert_eq!(header_section(b"\n", true), 0);
        assert_eq!(header_section(b"", true), 0);
        assert_eq!(without_return_path(b"Return-Path: <a>"), b"");
    }
}
