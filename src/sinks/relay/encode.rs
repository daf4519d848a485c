//! Sans-I/O encoders for what the client sends: the DATA stream (dot-stuffing, RFC 5321
//! §4.5.2) and xtext (RFC 3461 §4, used by XFORWARD values).

/// Dot-stuffs a message fed in arbitrary chunks; the output does not depend on where the
/// chunks split.
#[derive(Debug, Clone)]
pub struct DotStuffer {
    /// The next byte starts a line. A line starts after CRLF and also after a bare LF:
    /// servers that accept bare LF as a line end would otherwise see a "." line where we
    /// meant none (the SMTP smuggling family of bugs).
    at_line_start: bool,
    /// The last two bytes sent, to know whether the data already ends in CRLF.
    tail: [u8; 2],
    /// Bytes of message fed so far (an empty message needs no final CRLF).
    fed: u64,
}

impl Default for DotStuffer {
    fn default() -> Self {
        DotStuffer {
            at_line_start: true,
            tail: [0, 0],
            fed: 0,
        }
    }
}

impl DotStuffer {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends the stuffed form of `chunk` to `out`.
    pub fn encode(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        out.reserve(chunk.len() + chunk.len() / 64 + 1);
        let mut rest = chunk;
        while !rest.is_empty() {
            if self.at_line_start && rest[0] == b'.' {
                out.push(b'.');
            }
            // Copy up to and including the next LF in one go.
            match rest.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    out.extend_from_slice(&rest[..=i]);
                    self.at_line_start = true;
                    rest = &rest[i + 1..];
                }
                None => {
                    out.extend_from_slice(rest);
                    self.at_line_start = false;
                    rest = &[];
                }
            }
        }
        self.fed += chunk.len() as u64;
        match chunk.len() {
            0 => {}
            1 => self.tail = [self.tail[1], chunk[0]],
            n => self.tail = [chunk[n - 2], chunk[n - 1]],
        }
    }

    /// The bytes that end the DATA stream: a CRLF if the message did not end with one,
    /// then ".CRLF".
    pub fn finish(&self) -> &'static [u8] {
        if self.fed == 0 || self.tail == *b"\r\n" {
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
        // Bare LF starts a line too; bare CR does not.
        assert_eq!(stuff_whole(b"x\n.\n"), b"x\n..\n\r\n.\r\n");
        assert_eq!(stuff_whole(b"x\r.y\r\n"), b"x\r.y\r\n.\r\n");
        assert_eq!(stuff_whole(b"x\r"), b"x\r\r\n.\r\n");
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
            // Unstuffing gives the message back (plus a CRLF when it lacked one).
            assert_eq!(unstuff(&whole), with_final_crlf(&msg));
        }
    }

    fn with_final_crlf(msg: &[u8]) -> Vec<u8> {
        let mut m = msg.to_vec();
        if !m.is_empty() && !m.ends_with(b"\r\n") {
            m.extend_from_slice(b"\r\n");
        }
        m
    }

    /// What a server does: drop the first "." of each line, stop at the ".CRLF" line.
    fn unstuff(data: &[u8]) -> Vec<u8> {
        let body = data.strip_suffix(b".\r\n").unwrap();
        let mut out = Vec::new();
        let mut start = true;
        for &b in body {
            if start && b == b'.' {
                start = false;
                continue;
            }
            out.push(b);
            start = b == b'\n';
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
