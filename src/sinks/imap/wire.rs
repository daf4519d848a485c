//! The IMAP4rev1 client's wire format (RFC 3501), sans-I/O: server responses framed and
//! parsed from a byte buffer, and the few commands the sink sends encoded as bytes. No
//! sockets, no async, no panics on any input; the session in `session.rs` only moves
//! bytes into and out of it.
//!
//! What a mail drop needs and no more: status responses with their response codes
//! (`[TRYCREATE]`, `[OVERQUOTA]`, `[AUTHENTICATIONFAILED]` …), capabilities, continuation
//! requests; every other untagged response is framed (its literals skipped) and kept as
//! text for the log only.

use base64::Engine as _;

/// The longest response we hold while framing it. We never ask for message data, so
/// anything this big is a server gone wrong, not mail.
pub const MAX_RESPONSE: usize = 1 << 20;

/// OK / NO / BAD / BYE / PREAUTH.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Ok,
    No,
    Bad,
    Bye,
    Preauth,
}

impl Kind {
    fn parse(word: &str) -> Option<Kind> {
        Some(match word.to_ascii_uppercase().as_str() {
            "OK" => Kind::Ok,
            "NO" => Kind::No,
            "BAD" => Kind::Bad,
            "BYE" => Kind::Bye,
            "PREAUTH" => Kind::Preauth,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Ok => "OK",
            Kind::No => "NO",
            Kind::Bad => "BAD",
            Kind::Bye => "BYE",
            Kind::Preauth => "PREAUTH",
        }
    }
}

/// A response code, `[NAME args]` (RFC 3501 7.1, RFC 5530).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Code {
    /// Upper case, e.g. `TRYCREATE`, `APPENDUID`.
    pub name: String,
    /// The rest inside the brackets, as sent.
    pub args: String,
}

/// A status response: tagged, or untagged (`* OK`, `* BYE`, the greeting).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub kind: Kind,
    pub code: Option<Code>,
    /// Human-readable text after the code.
    pub text: String,
}

impl Status {
    /// Whether the response code is `name` (upper case).
    pub fn has_code(&self, name: &str) -> bool {
        self.code.as_ref().is_some_and(|c| c.name == name)
    }

    /// How a log line or an error shows it: `NO [OVERQUOTA] Quota exceeded`.
    pub fn show(&self) -> String {
        let mut s = self.kind.as_str().to_string();
        if let Some(c) = &self.code {
            s.push_str(" [");
            s.push_str(&c.name);
            if !c.args.is_empty() {
                s.push(' ');
                s.push_str(&c.args);
            }
            s.push(']');
        }
        if !self.text.is_empty() {
            s.push(' ');
            s.push_str(&self.text);
        }
        s
    }

    /// The capabilities a `[CAPABILITY …]` code carries (greeting, LOGIN's OK).
    pub fn capabilities(&self) -> Option<Capabilities> {
        self.code
            .as_ref()
            .filter(|c| c.name == "CAPABILITY")
            .map(|c| Capabilities::parse(&c.args))
    }
}

/// One whole server response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// `+ text`: go on with the literal (or the SASL step; the text is its challenge).
    Continue(String),
    /// `TAG OK|NO|BAD …`: the end of a command.
    Tagged { tag: String, status: Status },
    /// `* OK|NO|BAD|BYE|PREAUTH …`.
    Status(Status),
    /// `* CAPABILITY …`.
    Capability(Capabilities),
    /// Any other untagged response (`* 3 EXISTS`, `* LIST …`), literals shown as `{N}`.
    Data(String),
}

/// What the server says it can do, upper case.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capabilities(Vec<String>);

impl Capabilities {
    pub fn parse(text: &str) -> Capabilities {
        Capabilities(
            text.split_ascii_whitespace()
                .map(|w| w.to_ascii_uppercase())
                .collect(),
        )
    }

    pub fn has(&self, name: &str) -> bool {
        self.0.iter().any(|c| c == name)
    }

    /// `AUTH=MECH` offered.
    pub fn auth(&self, mech: &str) -> bool {
        self.has(&format!("AUTH={mech}"))
    }

    /// RFC 7889 `APPENDLIMIT=N`: the largest message the server takes.
    pub fn append_limit(&self) -> Option<u64> {
        self.0
            .iter()
            .find_map(|c| c.strip_prefix("APPENDLIMIT=")?.parse().ok())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("a response longer than {MAX_RESPONSE} bytes")]
    TooLong,
    #[error("a malformed response: {0:?}")]
    Malformed(String),
}

/// Frames and parses the first whole response in `buf`: `Ok(None)` until it is complete,
/// else the response and how many bytes it used. A line ending `{N}` (or `{N+}`) is
/// followed by N bytes of literal and then more of the same response.
pub fn parse_response(buf: &[u8]) -> Result<Option<(Response, usize)>, WireError> {
    let mut text = String::new();
    let mut pos = 0;
    loop {
        let Some(nl) = buf[pos..].iter().position(|&b| b == b'\n') else {
            return if buf.len() > MAX_RESPONSE {
                Err(WireError::TooLong)
            } else {
                Ok(None)
            };
        };
        let line_end = pos + nl;
        let line = buf[pos..line_end]
            .strip_suffix(b"\r")
            .unwrap_or(&buf[pos..line_end]);
        text.push_str(&String::from_utf8_lossy(line));
        pos = line_end + 1;
        match literal_length(line) {
            None => break,
            Some(n) => {
                let end = pos
                    .checked_add(n)
                    .filter(|&e| e <= MAX_RESPONSE)
                    .ok_or(WireError::TooLong)?;
                if buf.len() < end {
                    return Ok(None);
                }
                // The literal's bytes are data we never use: skipped, only its length shown.
                pos = end;
            }
        }
    }
    if pos > MAX_RESPONSE {
        return Err(WireError::TooLong);
    }
    parse_text(&text).map(|r| Some((r, pos)))
}

/// `{N}` or `{N+}` at the end of a line: N.
fn literal_length(line: &[u8]) -> Option<usize> {
    let inner = line.strip_suffix(b"}")?;
    let open = inner.iter().rposition(|&b| b == b'{')?;
    let digits = &inner[open + 1..];
    let digits = digits.strip_suffix(b"+").unwrap_or(digits);
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

fn parse_text(line: &str) -> Result<Response, WireError> {
    let malformed = || WireError::Malformed(line.chars().take(200).collect());
    if let Some(rest) = line.strip_prefix('+') {
        return Ok(Response::Continue(rest.trim_start().to_string()));
    }
    let (first, rest) = split_word(line);
    if first.is_empty() {
        return Err(malformed());
    }
    if first == "*" {
        let (word, after) = split_word(rest);
        if let Some(kind) = Kind::parse(word) {
            return Ok(Response::Status(parse_status(kind, after)));
        }
        if word.eq_ignore_ascii_case("CAPABILITY") {
            return Ok(Response::Capability(Capabilities::parse(after)));
        }
        return Ok(Response::Data(rest.to_string()));
    }
    if !first.bytes().all(is_tag_char) {
        return Err(malformed());
    }
    let (word, after) = split_word(rest);
    match Kind::parse(word) {
        Some(kind @ (Kind::Ok | Kind::No | Kind::Bad)) => Ok(Response::Tagged {
            tag: first.to_string(),
            status: parse_status(kind, after),
        }),
        _ => Err(malformed()),
    }
}

/// RFC 3501 `tag`: ASTRING-CHAR except `+`.
fn is_tag_char(b: u8) -> bool {
    b.is_ascii_graphic() && !matches!(b, b'(' | b')' | b'{' | b'%' | b'*' | b'"' | b'\\' | b'+')
}

fn split_word(s: &str) -> (&str, &str) {
    match s.find(' ') {
        Some(i) => (&s[..i], s[i + 1..].trim_start_matches(' ')),
        None => (s, ""),
    }
}

/// `[CODE args] text` or `text`.
fn parse_status(kind: Kind, rest: &str) -> Status {
    let rest = rest.trim_start();
    if let Some(inner) = rest.strip_prefix('[')
        && let Some(close) = inner.find(']')
    {
        let (name, args) = split_word(&inner[..close]);
        return Status {
            kind,
            code: Some(Code {
                name: name.to_ascii_uppercase(),
                args: args.trim_end().to_string(),
            }),
            text: inner[close + 1..].trim().to_string(),
        };
    }
    Status {
        kind,
        code: None,
        text: rest.trim_end().to_string(),
    }
}

/// A command as bytes to send: the first piece, then after each `+` continuation the next
/// (a piece ending `{N}\r\n` announces a synchronizing literal that the next piece holds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    pub pieces: Vec<Vec<u8>>,
}

/// Builds one command line, argument by argument.
pub struct CommandBuilder {
    pieces: Vec<Vec<u8>>,
    current: Vec<u8>,
}

impl CommandBuilder {
    pub fn new(tag: &str, verb: &str) -> Self {
        let mut current = Vec::with_capacity(64);
        current.extend_from_slice(tag.as_bytes());
        current.push(b' ');
        current.extend_from_slice(verb.as_bytes());
        CommandBuilder {
            pieces: Vec::new(),
            current,
        }
    }

    /// An argument sent as it is (an atom, a flag list, a base64 token).
    pub fn atom(mut self, s: &str) -> Self {
        self.current.push(b' ');
        self.current.extend_from_slice(s.as_bytes());
        self
    }

    /// A string: quoted when it is 7-bit text without CR, LF or NUL, else a literal.
    pub fn string(self, s: &[u8]) -> Self {
        if s.iter()
            .all(|&b| (1..0x80).contains(&b) && b != b'\r' && b != b'\n')
        {
            let mut q = Vec::with_capacity(s.len() + 2);
            q.push(b'"');
            for &b in s {
                if b == b'"' || b == b'\\' {
                    q.push(b'\\');
                }
                q.push(b);
            }
            q.push(b'"');
            let mut me = self;
            me.current.push(b' ');
            me.current.extend_from_slice(&q);
            me
        } else {
            self.literal(s)
        }
    }

    /// A synchronizing literal `{N}` with `bytes` after the server's `+`.
    pub fn literal(mut self, bytes: &[u8]) -> Self {
        self.current
            .extend_from_slice(format!(" {{{}}}\r\n", bytes.len()).as_bytes());
        self.pieces.push(std::mem::take(&mut self.current));
        self.current = bytes.to_vec();
        self
    }

    pub fn build(mut self) -> Command {
        self.current.extend_from_slice(b"\r\n");
        self.pieces.push(self.current);
        Command {
            pieces: self.pieces,
        }
    }
}

/// A mailbox name as IMAP sends it (RFC 3501 5.1.3, modified UTF-7): printable ASCII as
/// it is, `&` as `&-`, anything else as `&` + base64 of UTF-16BE (`,` for `/`) + `-`.
pub fn mailbox_name(name: &str) -> String {
    if name.eq_ignore_ascii_case("INBOX") {
        return "INBOX".into();
    }
    let engine = base64::engine::general_purpose::STANDARD_NO_PAD;
    let mut out = String::with_capacity(name.len());
    let mut pending: Vec<u16> = Vec::new();
    let flush = |pending: &mut Vec<u16>, out: &mut String| {
        if pending.is_empty() {
            return;
        }
        let bytes: Vec<u8> = pending.iter().flat_map(|u| u.to_be_bytes()).collect();
        out.push('&');
        out.push_str(&engine.encode(bytes).replace('/', ","));
        out.push('-');
        pending.clear();
    };
    for c in name.chars() {
        if (' '..='~').contains(&c) {
            flush(&mut pending, &mut out);
            if c == '&' {
                out.push_str("&-");
            } else {
                out.push(c);
            }
        } else {
            let mut units = [0u16; 2];
            pending.extend_from_slice(c.encode_utf16(&mut units));
        }
    }
    flush(&mut pending, &mut out);
    out
}

/// The APPEND date-time of a Unix time, in UTC: `"05-Mar-2024 14:07:09 +0000"`.
pub fn internal_date(unix: i64) -> Option<String> {
    let ts = jiff::Timestamp::from_second(unix).ok()?;
    let zoned = ts.to_zoned(jiff::tz::TimeZone::UTC);
    jiff::fmt::strtime::format("%d-%b-%Y %H:%M:%S +0000", &zoned).ok()
}

/// SASL PLAIN's initial response (RFC 4616): base64 of `\0user\0password`.
pub fn sasl_plain(user: &str, password: &str) -> String {
    let mut raw = Vec::with_capacity(user.len() + password.len() + 2);
    raw.push(0);
    raw.extend_from_slice(user.as_bytes());
    raw.push(0);
    raw.extend_from_slice(password.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(raw)
}

/// The answer to a CRAM-MD5 challenge (RFC 2195): base64 of `user HEX(HMAC-MD5(password,
/// challenge))`. `None` when the challenge is not base64.
pub fn cram_md5(user: &str, password: &str, challenge_b64: &str) -> Option<String> {
    let engine = base64::engine::general_purpose::STANDARD;
    let challenge = engine.decode(challenge_b64.trim()).ok()?;
    let digest = hmac_md5(password.as_bytes(), &challenge);
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    Some(engine.encode(format!("{user} {hex}")))
}

/// HMAC (RFC 2104) over MD5, written out: the one use of it does not justify a crate.
fn hmac_md5(key: &[u8], message: &[u8]) -> [u8; 16] {
    use md5::Digest as _;
    const BLOCK: usize = 64;
    let mut k = [0u8; BLOCK];
    if key.len() > BLOCK {
        k[..16].copy_from_slice(&md5::Md5::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let mut inner = md5::Md5::new();
    inner.update(k.map(|b| b ^ 0x36));
    inner.update(message);
    let mut outer = md5::Md5::new();
    outer.update(k.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    outer.finalize().into()
}

/// A flag APPEND may set: a system flag (`\Seen`, `\Answered`, `\Flagged`, `\Deleted`,
/// `\Draft`) or a keyword atom (`$Forwarded`, `Junk`). `\Recent` only the server sets.
pub fn check_flag(flag: &str) -> Result<(), String> {
    const SYSTEM: [&str; 5] = ["\\Seen", "\\Answered", "\\Flagged", "\\Deleted", "\\Draft"];
    if let Some(name) = flag.strip_prefix('\\') {
        return match SYSTEM.iter().find(|s| s[1..].eq_ignore_ascii_case(name)) {
            Some(_) => Ok(()),
            None => Err(format!(
                "flag {flag:?}: expected one of {} or a keyword without '\\'",
                SYSTEM.join(" ")
            )),
        };
    }
    let atom_ok = !flag.is_empty()
        && flag.bytes().all(|b| {
            b.is_ascii_graphic()
                && !matches!(b, b'(' | b')' | b'{' | b'%' | b'*' | b'"' | b'\\' | b']')
        });
    if atom_ok {
        Ok(())
    } else {
        Err(format!(
            "flag {flag:?}: a keyword is printable ASCII without spaces or ( ) {{ % * \" \\ ]"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(s: &str) -> Response {
        let (r, used) = parse_response(s.as_bytes()).unwrap().unwrap();
        assert_eq!(used, s.len(), "{s:?}");
        r
    }

    #[test]
    fn status_responses_and_codes() {
        assert_eq!(
            one("A3 NO [OVERQUOTA] Quota exceeded (mailbox for user is full)\r\n"),
            Response::Tagged {
                tag: "A3".into(),
                status: Status {
                    kind: Kind::No,
                    code: Some(Code {
                        name: "OVERQUOTA".into(),
                        args: String::new()
                    }),
                    text: "Quota exceeded (mailbox for user is full)".into()
                }
            }
        );
        let Response::Tagged { status, .. } =
            one("a1 ok [APPENDUID 1712345678 7] Append completed.\r\n")
        else {
            panic!()
        };
        assert_eq!(status.kind, Kind::Ok);
        assert_eq!(status.code.as_ref().unwrap().args, "1712345678 7");
        assert!(status.has_code("APPENDUID"));
        assert_eq!(
            status.show(),
            "OK [APPENDUID 1712345678 7] Append completed."
        );
        let Response::Status(bye) = one("* BYE Server shutting down.\r\n") else {
            panic!()
        };
        assert_eq!(
            (bye.kind, bye.text.as_str()),
            (Kind::Bye, "Server shutting down.")
        );
        // A bracket that is not a code stays text.
        let Response::Tagged { status, .. } = one("A1 NO [unterminated\r\n") else {
            panic!()
        };
        assert_eq!(status.code, None);
    }

    #[test]
    fn greeting_capabilities() {
        let Response::Status(s) = one(
            "* OK [CAPABILITY IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+ STARTTLS AUTH=PLAIN AUTH=CRAM-MD5] Dovecot ready.\r\n",
        ) else {
            panic!()
        };
        let caps = s.capabilities().unwrap();
        assert!(caps.has("STARTTLS") && caps.auth("PLAIN") && caps.auth("CRAM-MD5"));
        assert!(!caps.has("LOGINDISABLED"));
        let Response::Capability(c) = one("* CAPABILITY IMAP4rev1 appendlimit=1024\r\n") else {
            panic!()
        };
        assert_eq!(c.append_limit(), Some(1024));
    }

    #[test]
    fn continuation_data_and_literals() {
        assert_eq!(one("+ OK\r\n"), Response::Continue("OK".into()));
        assert_eq!(one("+\r\n"), Response::Continue(String::new()));
        assert_eq!(
            one("+ PDEyMzQ1Njc4OTBAaG9zdD4=\r\n"),
            Response::Continue("PDEyMzQ1Njc4OTBAaG9zdD4=".into())
        );
        assert_eq!(one("* 3 EXISTS\r\n"), Response::Data("3 EXISTS".into()));
        // A literal inside an untagged response: framed whole, its bytes skipped (even a
        // CRLF and a fake tagged line inside it).
        let s = "* LIST () \"/\" {9}\r\nA1 OK x\n\r\n";
        assert_eq!(one(s), Response::Data("LIST () \"/\" {9}".into()));
        // Incomplete: the line, then the literal, then the rest.
        for cut in [3, 20, s.len() - 1] {
            assert_eq!(parse_response(&s.as_bytes()[..cut]), Ok(None), "{cut}");
        }
        // Two responses: the first only.
        let two = b"* 1 RECENT\r\nA2 OK done\r\n";
        let (_, used) = parse_response(two).unwrap().unwrap();
        assert_eq!(used, 12);
        // A bare LF ends a line too.
        assert_eq!(one("A1 OK fine\n"), parse_text("A1 OK fine").unwrap());
    }

    #[test]
    fn malformed_and_oversized() {
        for bad in ["\r\n", "A1 MAYBE\r\n", "A(1 OK\r\n", " OK\r\n"] {
            assert!(
                matches!(parse_response(bad.as_bytes()), Err(WireError::Malformed(_))),
                "{bad:?}"
            );
        }
        let huge = vec![b'x'; MAX_RESPONSE + 1];
        assert_eq!(parse_response(&huge), Err(WireError::TooLong));
        let claim = format!("* X {{{}}}\r\n", usize::MAX);
        assert_eq!(parse_response(claim.as_bytes()), Err(WireError::TooLong));
        // Arbitrary bytes never panic.
        for n in 0..=255u8 {
            let _ = parse_response(&[n, b' ', n, b'\r', b'\n']);
        }
    }

    #[test]
    fn commands() {
        let c = CommandBuilder::new("A1", "LOGIN")
            .string(b"me@example.net")
            .string(b"p\"w\\x")
            .build();
        assert_eq!(
            c.pieces,
            vec![b"A1 LOGIN \"me@example.net\" \"p\\\"w\\\\x\"\r\n".to_vec()]
        );
        // 8-bit text goes as a literal.
        let c = CommandBuilder::new("A2", "LOGIN")
            .string(b"me")
            .string("pässword".as_bytes())
            .build();
        assert_eq!(
            c.pieces,
            vec![
                b"A2 LOGIN \"me\" {9}\r\n".to_vec(),
                "pässword\r\n".as_bytes().to_vec()
            ]
        );
        let c = CommandBuilder::new("A3", "APPEND")
            .string(b"INBOX")
            .atom("(\\Seen)")
            .string(b"05-Mar-2024 14:07:09 +0000")
            .literal(b"Subject: x\r\n\r\nbody\r\n")
            .build();
        assert_eq!(
            c.pieces,
            vec![
                b"A3 APPEND \"INBOX\" (\\Seen) \"05-Mar-2024 14:07:09 +0000\" {20}\r\n".to_vec(),
                b"Subject: x\r\n\r\nbody\r\n\r\n".to_vec()
            ]
        );
    }

    #[test]
    fn mailbox_names_in_modified_utf7() {
        assert_eq!(mailbox_name("inbox"), "INBOX");
        assert_eq!(mailbox_name("Archive/2024"), "Archive/2024");
        assert_eq!(mailbox_name("Tom & Jerry"), "Tom &- Jerry");
        // RFC 3501's own example.
        assert_eq!(
            mailbox_name("~peter/mail/台北/日本語"),
            "~peter/mail/&U,BTFw-/&ZeVnLIqe-"
        );
        assert_eq!(mailbox_name("Entwürfe"), "Entw&APw-rfe");
    }

    #[test]
    fn dates_and_sasl() {
        assert_eq!(
            internal_date(1_709_647_629).as_deref(),
            Some("05-Mar-2024 14:07:09 +0000")
        );
        assert_eq!(
            sasl_plain("tim", "tanstaaftanstaaf"),
            "AHRpbQB0YW5zdGFhZnRhbnN0YWFm"
        );
        // RFC 2195's example.
        assert_eq!(
            cram_md5(
                "tim",
                "tanstaaftanstaaf",
                "PDE4OTYuNjk3MTcwOTUyQHBvc3RvZmZpY2UucmVzdG9uLm1jaS5uZXQ+"
            )
            .as_deref(),
            Some("dGltIGI5MTNhNjAyYzdlZGE3YTQ5NWI0ZTZlNzMzNGQzODkw")
        );
        assert_eq!(cram_md5("u", "p", "not base64!"), None);
        // RFC 2202 test case 6: a key longer than the block is hashed first.
        let d = hmac_md5(
            &[0xaa; 80],
            b"Test Using Larger Than Block-Size Key - Hash Key First",
        );
        let hex: String = d.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, "6b1ab7fe4bd7bf8f0b62e6ce61b9d0cd");
    }

    #[test]
    fn flags() {
        for ok in ["\\Seen", "\\flagged", "$Forwarded", "Junk"] {
            assert!(check_flag(ok).is_ok(), "{ok}");
        }
        for bad in ["\\Recent", "\\Nope", "two words", "", "a(b", "\\"] {
            assert!(check_flag(bad).is_err(), "{bad}");
        }
    }
}
