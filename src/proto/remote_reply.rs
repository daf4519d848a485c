//! Sans-I/O parsing of what an SMTP/LMTP server says to us as its client: replies (RFC 5321
//! §4.2), their enhanced status codes (RFC 3463, RFC 2034) and EHLO/LHLO capabilities.
//!
//! [`RemoteReply`] is a reply as another server sent it, its text lines kept as they came
//! (the enhanced code stays inside the first line's text), so that a caller can log it or
//! hand it on unchanged. [`super::Reply`] is the other direction: a reply our own server
//! session renders, with its enhanced code as a separate field.

/// Upper bound on one reply, all lines included. A server that talks longer than this is
/// broken or hostile; we stop buffering instead of growing without end.
pub const MAX_REPLY: usize = 64 * 1024;

/// One complete reply received from a server (see the module comment for how it differs
/// from [`super::Reply`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteReply {
    /// The three-digit code, 200..=599 in practice (any 3 digits are accepted).
    pub code: u16,
    /// The text of each line after the code and separator, without the line ending.
    pub lines: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    #[error(
        "malformed reply line {line:?}: expected 3 digits followed by ' ', '-' or the end of the line"
    )]
    Syntax { line: String },
    #[error("reply lines disagree on the code: {first} then {other}")]
    MixedCodes { first: u16, other: u16 },
    #[error("reply longer than {MAX_REPLY} bytes")]
    TooLong,
}

impl RemoteReply {
    /// 2 for 2xx, 3 for 3xx, ...
    pub fn class(&self) -> u16 {
        self.code / 100
    }

    pub fn is_positive(&self) -> bool {
        self.class() == 2
    }

    /// The RFC 3463 code at the start of the first line ("5.1.1"), when there is one whose
    /// class agrees with the reply code (a "250 5.1.1" is a confused server: ignore it).
    pub fn enhanced(&self) -> Option<&str> {
        let first = self.lines.first()?;
        let token = first.split(' ').next()?;
        let mut parts = token.split('.');
        let (class, subject, detail) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        let digits = |s: &str, max: usize| {
            !s.is_empty() && s.len() <= max && s.bytes().all(|b| b.is_ascii_digit())
        };
        let class_ok = class.len() == 1 && class.parse::<u16>().ok() == Some(self.class());
        (class_ok && matches!(class, "2" | "4" | "5") && digits(subject, 3) && digits(detail, 3))
            .then_some(token)
    }

    /// The whole reply on one line, for logs and error messages: "550 5.1.1 <x@y>: no".
    pub fn one_line(&self) -> String {
        let text = self
            .lines
            .iter()
            .map(|l| l.trim())
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join(" / ");
        if text.is_empty() {
            self.code.to_string()
        } else {
            format!("{} {}", self.code, text)
        }
    }
}

/// Takes one complete reply off the front of `buf`. `Ok(None)` means "read more bytes";
/// `Ok(Some((reply, n)))` means the reply used the first `n` bytes. Lines end in CRLF, or
/// a bare LF (tolerated: some servers and test tools send it).
pub fn parse_reply(buf: &[u8]) -> Result<Option<(RemoteReply, usize)>, ReplyError> {
    let mut pos = 0;
    let mut code: Option<u16> = None;
    let mut lines = Vec::new();
    loop {
        let Some(nl) = buf[pos..].iter().position(|&b| b == b'\n') else {
            return if buf.len() > MAX_REPLY {
                Err(ReplyError::TooLong)
            } else {
                Ok(None)
            };
        };
        let end = pos + nl + 1;
        if end > MAX_REPLY {
            return Err(ReplyError::TooLong);
        }
        let mut line = &buf[pos..pos + nl];
        if let Some(stripped) = line.strip_suffix(b"\r") {
            line = stripped;
        }
        let (this_code, last, text) = parse_line(line)?;
        match code {
            None => code = Some(this_code),
            Some(first) if first != this_code => {
                return Err(ReplyError::MixedCodes {
                    first,
                    other: this_code,
                });
            }
            Some(_) => {}
        }
        lines.push(text);
        pos = end;
        if last {
            return Ok(Some((
                RemoteReply {
                    code: this_code,
                    lines,
                },
                pos,
            )));
        }
    }
}

fn parse_line(line: &[u8]) -> Result<(u16, bool, String), ReplyError> {
    let bad = || ReplyError::Syntax {
        line: String::from_utf8_lossy(&line[..line.len().min(200)]).into_owned(),
    };
    if line.len() < 3 || !line[..3].iter().all(u8::is_ascii_digit) {
        return Err(bad());
    }
    let code = line[..3]
        .iter()
        .fold(0u16, |acc, &d| acc * 10 + u16::from(d - b'0'));
    let (last, text) = match line.get(3) {
        None => (true, &[][..]),
        Some(b' ') => (true, &line[4..]),
        Some(b'-') => (false, &line[4..]),
        Some(_) => return Err(bad()),
    };
    // RFC 5321 4.2: reply text is printable ASCII, SP and HT. A bare CR or another control
    // byte from an upstream would go on into logs, error messages and the spool's records.
    let text = String::from_utf8_lossy(text)
        .chars()
        .map(|c| if c.is_control() && c != '\t' { ' ' } else { c })
        .collect();
    Ok((code, last, text))
}

/// What an EHLO/LHLO reply advertised. Keywords are compared case-insensitively.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// Upper-cased keyword → its parameters (as sent, split on spaces).
    entries: Vec<(String, Vec<String>)>,
}

impl Capabilities {
    /// Every line but the first (the server's greeting name) is one extension.
    pub fn from_ehlo(reply: &RemoteReply) -> Self {
        let entries = reply
            .lines
            .iter()
            .skip(1)
            .filter_map(|line| {
                let mut words = line.split_ascii_whitespace();
                let keyword = words.next()?.to_ascii_uppercase();
                Some((keyword, words.map(str::to_string).collect()))
            })
            .collect();
        Capabilities { entries }
    }

    pub fn has(&self, keyword: &str) -> bool {
        self.params(keyword).is_some()
    }

    pub fn params(&self, keyword: &str) -> Option<&[String]> {
        self.entries
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(keyword))
            .map(|(_, p)| p.as_slice())
    }

    /// True when `keyword`'s parameters include `value` (e.g. AUTH PLAIN, XFORWARD ADDR).
    pub fn has_param(&self, keyword: &str, value: &str) -> bool {
        self.params(keyword)
            .is_some_and(|p| p.iter().any(|v| v.eq_ignore_ascii_case(value)))
    }

    /// The SIZE limit, when one is advertised and not 0 (RFC 1870: 0 = no fixed limit).
    pub fn size_limit(&self) -> Option<u64> {
        self.params("SIZE")?
            .first()?
            .parse::<u64>()
            .ok()
            .filter(|&n| n > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(s: &str) -> RemoteReply {
        let (reply, n) = parse_reply(s.as_bytes()).unwrap().unwrap();
        assert_eq!(n, s.len());
        reply
    }

    #[test]
    fn single_line() {
        let r = parse_all("250 2.0.0 Ok: queued as ABC\r\n");
        assert_eq!(r.code, 250);
        assert_eq!(r.lines, vec!["2.0.0 Ok: queued as ABC"]);
        assert_eq!(r.enhanced(), Some("2.0.0"));
        assert_eq!(r.one_line(), "250 2.0.0 Ok: queued as ABC");
    }

    #[test]
    fn multi_line_and_capabilities() {
        let s = "250-mx.example.org\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n\
                 250-AUTH PLAIN LOGIN\r\n250-xforward NAME ADDR\r\n250 8BITMIME\r\n";
        let r = parse_all(s);
        assert_eq!(r.lines.len(), 6);
        let caps = Capabilities::from_ehlo(&r);
        assert!(caps.has("pipelining"));
        assert!(caps.has("8BITMIME"));
        assert!(!caps.has("mx.example.org"));
        assert_eq!(caps.size_limit(), Some(10_240_000));
        assert!(caps.has_param("AUTH", "plain"));
        assert!(caps.has_param("XFORWARD", "ADDR"));
        assert!(!caps.has_param("XFORWARD", "HELO"));
    }

    #[test]
    fn empty_text_bare_code_and_bare_lf() {
        assert_eq!(parse_all("250\r\n").lines, vec![""]);
        assert_eq!(parse_all("250 \r\n").lines, vec![""]);
        let r = parse_all("250-a\n250 b\n");
        assert_eq!(r.lines, vec!["a", "b"]);
        assert_eq!(r.one_line(), "250 a / b");
        assert_eq!(parse_all("354\r\n").one_line(), "354");
    }

    #[test]
    fn incomplete_needs_more() {
        assert_eq!(parse_reply(b"").unwrap(), None);
        assert_eq!(parse_reply(b"250").unwrap(), None);
        assert_eq!(parse_reply(b"250-first\r\n250 sec").unwrap(), None);
    }

    #[test]
    fn leaves_following_bytes() {
        let buf = b"250 2.1.0 Ok\r\n550 5.1.1 no\r\n";
        let (r, n) = parse_reply(buf).unwrap().unwrap();
        assert_eq!(r.code, 250);
        let (r2, m) = parse_reply(&buf[n..]).unwrap().unwrap();
        assert_eq!((r2.code, r2.enhanced()), (550, Some("5.1.1")));
        assert_eq!(n + m, buf.len());
    }

    #[test]
    fn bad_input_is_an_error() {
        for bad in [
            "hello\r\n",
            "25\r\n",
            "2a0 x\r\n",
            "250x\r\n",
            "\r\n",
            "250-ok\r\nbad\r\n",
        ] {
            assert!(
                matches!(parse_reply(bad.as_bytes()), Err(ReplyError::Syntax { .. })),
                "{bad:?}"
            );
        }
        assert_eq!(
            parse_reply(b"250-a\r\n451 b\r\n"),
            Err(ReplyError::MixedCodes {
                first: 250,
                other: 451
            })
        );
        let mut long = b"250-".to_vec();
        long.extend(std::iter::repeat_n(b'x', MAX_REPLY));
        assert_eq!(parse_reply(&long), Err(ReplyError::TooLong));
        let mut many = Vec::new();
        while many.len() <= MAX_REPLY {
            many.extend_from_slice(b"250-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\r\n");
        }
        many.extend_from_slice(b"250 end\r\n");
        assert_eq!(parse_reply(&many), Err(ReplyError::TooLong));
        // Non-UTF-8 text is not an error.
        assert_eq!(parse_reply(b"250 \xff\r\n").unwrap().unwrap().0.code, 250);
    }

    /// Found by fuzzing (fuzz target `reply`): a bare CR inside a line was kept in the text.
    #[test]
    fn control_characters_in_text_become_spaces() {
        let r = parse_all("354 End data\r<CR><LF>\x00\x1b[31m\tx\r\n");
        assert_eq!(r.lines, vec!["End data <CR><LF>  [31m\tx"]);
        assert!(!r.one_line().contains('\r'));
    }

    #[test]
    fn enhanced_code_extraction() {
        let e = |s: &str| parse_all(s).enhanced().map(str::to_string);
        assert_eq!(e("550 5.1.1 <x@y>: unknown\r\n"), Some("5.1.1".into()));
        assert_eq!(e("452 4.5.3 Too many\r\n"), Some("4.5.3".into()));
        assert_eq!(e("550 5.7.100 policy\r\n"), Some("5.7.100".into()));
        assert_eq!(e("550 Mailbox unknown\r\n"), None);
        assert_eq!(e("550 4.1.1 wrong class\r\n"), None);
        assert_eq!(e("550 5.1\r\n"), None);
        assert_eq!(e("550 5.1.1.1 x\r\n"), None);
        assert_eq!(e("550 5.1.1234 x\r\n"), None);
        assert_eq!(e("550 5.1.1\r\n"), Some("5.1.1".into()));
        assert_eq!(e("354 End data\r\n"), None);
    }
}
