//! Sans-I/O encoders for what the client sends: the DATA stream (dot-stuffing, RFC 5321
//! §4.5.2) and xtext (RFC 3461 §4, used by XFORWARD values).

/// Turns a message fed in arbitrary chunks into DATA content: every line end becomes CRLF
/// and every line that starts with "." gets another one. The output does not depend on
/// where the chunks split.
///
/// RFC 5321 §2.3.8 allows CR and LF on the wire only as CRLF, and servers differ on what a
/// bare LF or a lone CR means: Postfix with `smtpd_forbid_bare_newline = reject` refuses
/// the message, others take either as a line end. Passed on as they are, "\n.\n" or
/// "\r.\r" would reach such a server as an unstuffed "." line (SMTP smuggling). So a bare
/// LF becomes CRLF (what Postfix's own relaying does) and so does a lone CR (Postfix keeps
/// it inside the line; we do not, because only a line end cannot be read two ways). Hence
/// "\r\r\n" is an empty line, never a terminator.
#[derive(Debug, Clone)]
pub struct DotStuffer {
    /// The next byte starts a line (at the very start, and after every line end we sent).
    at_line_start: bool,
    /// The last chunk ended in CR: whether it was CRLF or a lone CR depends on the next
    /// byte. Either way it ends a line; only whether to swallow a following LF is open.
    pending_cr: bool,
}

impl Default for DotStuffer {
    fn default() -> Self {
        DotStuffer {
            at_line_start: true,
            pending_cr: false,
        }
    }
}

impl DotStuffer {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends the canonical, stuffed form of `chunk` to `out`.
    pub fn encode(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        out.reserve(chunk.len() + chunk.len() / 64 + 2);
        let mut rest = chunk;
        if self.pending_cr && !rest.is_empty() {
            self.pending_cr = false;
            if rest[0] == b'\n' {
                rest = &rest[1..];
            }
            self.end_line(out);
        }
        while !rest.is_empty() {
            if self.at_line_start && rest[0] == b'.' {
                out.push(b'.');
            }
            self.at_line_start = false;
            // Copy up to the next CR or LF in one go.
            let Some(i) = rest.iter().position(|&b| b == b'\r' || b == b'\n') else {
                out.extend_from_slice(rest);
                return;
            };
            out.extend_from_slice(&rest[..i]);
            let used = match (rest[i], rest.get(i + 1)) {
                (b'\r', Some(b'\n')) => 2,
                (b'\r', None) => {
                    self.pending_cr = true;
                    return;
                }
                // A bare LF or a lone CR.
                _ => 1,
            };
            self.end_line(out);
            rest = &rest[i + used..];
        }
    }

    fn end_line(&mut self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"\r\n");
        self.at_line_start = true;
    }

    /// The bytes that end the DATA stream: the end of the last line if it is still open
    /// (a message without a final line end, or ending in CR), then ".CRLF".
    pub fn finish(&self) -> &'static [u8] {
        if self.at_line_start && !self.pending_cr {
            b".\r\n"
        } else {
            b"\r\n.\r\n"
        }
    }
}

/// xtext: printable ASCII except "+" and "=" as is, every other byte as "+XX".
pub fn xtext(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for &b in value.as_bytes() {
        if (b'!'..=b'~').contains(&b) && b != b'+' && b != b'=' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("+{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stuff_whole(msg: &[u8]) -> Vec<u8> {
        let mut s = DotStuffer::new();
        let mut out = Vec::new();
        s.encode(msg, &mut out);
        out.extend_from_slice(s.finish());
        out
    }

    #[test]
    fn stuffs_dots_at_line_starts() {
        assert_eq!(stuff_whole(b""), b".\r\n");
        assert_eq!(stuff_whole(b"a\r\n"), b"a\r\n.\r\n");
        assert_eq!(stuff_whole(b"a"), b"a\r\n.\r\n");
        assert_eq!(stuff_whole(b".\r\n"), b"..\r\n.\r\n");
        assert_eq!(
            stuff_whole(b"x\r\n.\r\n..y\r\na.b\r\n"),
            b"x\r\n..\r\n...y\r\na.b\r\n.\r\n"
        );
    }

    #[test]
    fn bare_lf_and_lone_cr_become_crlf_line_ends() {
        assert_eq!(stuff_whole(b"x\n.\n"), b"x\r\n..\r\n.\r\n");
        assert_eq!(stuff_whole(b"a\nb"), b"a\r\nb\r\n.\r\n");
        assert_eq!(stuff_whole(b"x\r.y\r\n"), b"x\r\n..y\r\n.\r\n");
        // The smuggling probe: a lone-CR "." line is stuffed like any other.
        assert_eq!(
            stuff_whole(b"a\r\n\r.\r\nMAIL FROM:<e@x>\r\n"),
            b"a\r\n\r\n..\r\nMAIL FROM:<e@x>\r\n.\r\n"
        );
        assert_eq!(stuff_whole(b"x\r"), b"x\r\n.\r\n");
        assert_eq!(stuff_whole(b"\r"), b"\r\n.\r\n");
        assert_eq!(stuff_whole(b"\n"), b"\r\n.\r\n");
        assert_eq!(stuff_whole(b"x\r\r\n"), b"x\r\n\r\n.\r\n");
        assert_eq!(stuff_whole(b"x\n\r\n"), b"x\r\n\r\n.\r\n");
        assert_eq!(stuff_whole(b"x\n\r"), b"x\r\n\r\n.\r\n");
    }

    #[test]
    fn cr_at_a_chunk_end_waits_for_the_next_byte() {
        let mut s = DotStuffer::new();
        let mut out = Vec::new();
        s.encode(b"a\r", &mut out);
        s.encode(b"", &mut out);
        s.encode(b"\n.b\r", &mut out);
        s.encode(b".c", &mut out);
        out.extend_from_slice(s.finish());
        assert_eq!(out, b"a\r\n..b\r\n..c\r\n.\r\n");
    }

    /// A small deterministic PRNG (xorshift), so the test needs no crate.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    #[test]
    fn chunk_boundaries_do_not_matter() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let alphabet = b".\r\nab.";
        for _ in 0..300 {
            let len = (rng.next() % 200) as usize;
            let msg: Vec<u8> = (0..len)
                .map(|_| alphabet[(rng.next() % alphabet.len() as u64) as usize])
                .collect();
            let whole = stuff_whole(&msg);
            let mut s = DotStuffer::new();
            let mut out = Vec::new();
            let mut rest = &msg[..];
            while !rest.is_empty() {
                let n = 1 + (rng.next() % 7) as usize;
                let n = n.min(rest.len());
                s.encode(&rest[..n], &mut out);
                // Empty chunks must be harmless too.
                s.encode(&[], &mut out);
                rest = &rest[n..];
            }
            out.extend_from_slice(s.finish());
            assert_eq!(out, whole, "message {msg:?}");
            // Nothing but CRLF line ends on the wire, and unstuffing gives the message
            // back with its line ends made canonical.
            assert!(only_crlf(&whole), "message {msg:?} gave {whole:?}");
            assert_eq!(unstuff(&whole), canonical(&msg), "message {msg:?}");
        }
    }

    fn only_crlf(data: &[u8]) -> bool {
        data.iter().enumerate().all(|(i, &b)| match b {
            b'\r' => data.get(i + 1) == Some(&b'\n'),
            b'\n' => i > 0 && data[i - 1] == b'\r',
            _ => true,
        })
    }

    /// The message as the upstream should store it, written the obvious way: every CRLF,
    /// bare LF and lone CR is one CRLF, and a last line without one gets one.
    fn canonical(msg: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < msg.len() {
            match msg[i] {
                b'\r' if msg.get(i + 1) == Some(&b'\n') => {
                    out.extend_from_slice(b"\r\n");
                    i += 2;
                    continue;
                }
                b'\r' | b'\n' => out.extend_from_slice(b"\r\n"),
                b => out.push(b),
            }
            i += 1;
        }
        if !out.is_empty() && !out.ends_with(b"\r\n") {
            out.extend_from_slice(b"\r\n");
        }
        out
    }

    /// What a strict server does: drop the first "." of each CRLF line, stop at ".CRLF".
    fn unstuff(data: &[u8]) -> Vec<u8> {
        let body = data.strip_suffix(b".\r\n").unwrap();
        let mut out = Vec::new();
        let mut start = true;
        for (i, &b) in body.iter().enumerate() {
            if start && b == b'.' {
                start = false;
                continue;
            }
            out.push(b);
            start = b == b'\n' && i > 0 && body[i - 1] == b'\r';
        }
        out
    }

    #[test]
    fn xtext_encodes() {
        assert_eq!(xtext("[UNAVAILABLE]"), "[UNAVAILABLE]");
        assert_eq!(xtext("a+b=c d"), "a+2Bb+3Dc+20d");
        assert_eq!(xtext("é"), "+C3+A9");
        assert_eq!(xtext("IPv6:::1"), "IPv6:::1");
    }
}
