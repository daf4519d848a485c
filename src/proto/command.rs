//! Parsing one SMTP/LMTP command line (without its line end) into a [`Command`].
//!
//! Pure functions; every failure is a [`ParseError`] that knows its reply. The line is bytes:
//! the verb must be ASCII, the arguments valid UTF-8 (SMTPUTF8 addresses are UTF-8; anything
//! else is a syntax error, never a panic).

use crate::envelope::{Body, XForward};
use crate::proto::reply::Reply;

/// A parsed command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Ehlo(String),
    Helo(String),
    Lhlo(String),
    Mail {
        from: String,
        params: MailParams,
    },
    /// RCPT TO; the address without angle brackets (source route stripped).
    Rcpt {
        to: String,
    },
    Data,
    Bdat {
        size: u64,
        last: bool,
    },
    Rset,
    Noop,
    Quit,
    Help,
    Vrfy,
    Expn,
    StartTls,
    /// `AUTH mechanism [initial-response]`; the response still base64.
    Auth {
        mechanism: String,
        initial: Option<String>,
    },
    /// XFORWARD attributes in the order sent, values xtext-decoded.
    XForward(Vec<(XForwardAttr, String)>),
}

/// ESMTP parameters of MAIL FROM that we support.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MailParams {
    /// SIZE=n (RFC 1870); `None` when not given.
    pub size: Option<u64>,
    /// BODY= (RFC 1652, 3030).
    pub body: Body,
    /// SMTPUTF8 (RFC 6531).
    pub smtputf8: bool,
}

/// XFORWARD attribute names (Postfix XFORWARD_README).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XForwardAttr {
    Name,
    Addr,
    Port,
    Proto,
    Helo,
    Ident,
    Source,
}

impl XForwardAttr {
    fn parse(name: &str) -> Option<XForwardAttr> {
        Some(match name.to_ascii_uppercase().as_str() {
            "NAME" => XForwardAttr::Name,
            "ADDR" => XForwardAttr::Addr,
            "PORT" => XForwardAttr::Port,
            "PROTO" => XForwardAttr::Proto,
            "HELO" => XForwardAttr::Helo,
            "IDENT" => XForwardAttr::Ident,
            "SOURCE" => XForwardAttr::Source,
            _ => return None,
        })
    }

    /// Stores `value` in the matching field of `xf` (a later value replaces an earlier one).
    pub fn set(self, xf: &mut XForward, value: String) {
        let slot = match self {
            XForwardAttr::Name => &mut xf.name,
            XForwardAttr::Addr => &mut xf.addr,
            XForwardAttr::Port => &mut xf.port,
            XForwardAttr::Proto => &mut xf.proto,
            XForwardAttr::Helo => &mut xf.helo,
            XForwardAttr::Ident => &mut xf.ident,
            XForwardAttr::Source => &mut xf.source,
        };
        *slot = Some(value);
    }
}

/// Why a command line was refused; [`ParseError::reply`] gives the SMTP answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("command not recognized")]
    UnknownCommand,
    #[error("syntax: {0}")]
    Syntax(&'static str),
    #[error("bad sender address syntax")]
    BadSender,
    #[error("bad recipient address syntax")]
    BadRecipient,
    /// A recipient without a domain (`RCPT TO:<root>`), otherwise well formed: refused as
    /// [`ParseError::BadRecipient`] on a listener; a local submission (`sendmail -bs`)
    /// takes it and adds the default domain, as Postfix does.
    #[error("recipient address without a domain")]
    UnqualifiedRecipient(String),
    #[error("unsupported parameter {0}")]
    UnknownParam(String),
    #[error("bad XFORWARD attribute name {0}")]
    UnknownXForwardAttr(String),
}

impl ParseError {
    pub fn reply(&self) -> Reply {
        match self {
            ParseError::UnknownCommand => Reply::new(500, "5.5.2", "Error: command not recognized"),
            ParseError::Syntax(s) => Reply::new(501, "5.5.4", format!("Syntax: {s}")),
            ParseError::BadSender => Reply::new(501, "5.1.7", "Bad sender address syntax"),
            ParseError::BadRecipient | ParseError::UnqualifiedRecipient(_) => {
                Reply::new(501, "5.1.3", "Bad recipient address syntax")
            }
            ParseError::UnknownParam(p) => {
                Reply::new(555, "5.5.4", format!("Unsupported option: {p}"))
            }
            ParseError::UnknownXForwardAttr(a) => {
                Reply::new(501, "5.5.4", format!("Bad XFORWARD attribute name: {a}"))
            }
        }
    }
}

/// Parses one command line, its CRLF (or LF) already removed.
pub fn parse_command(line: &[u8]) -> Result<Command, ParseError> {
    let (verb, rest) = match line.iter().position(|&b| b == b' ') {
        Some(i) => (&line[..i], &line[i + 1..]),
        None => (line, &line[line.len()..]),
    };
    let verb = std::str::from_utf8(verb)
        .ok()
        .filter(|v| v.is_ascii())
        .ok_or(ParseError::UnknownCommand)?
        .to_ascii_uppercase();
    // Recognise the verb before judging the arguments: garbage is "unknown command", a
    // known verb with bad bytes after it is a syntax error.
    if !KNOWN.contains(&verb.as_str()) {
        return Err(ParseError::UnknownCommand);
    }
    let args = std::str::from_utf8(rest)
        .map_err(|_| ParseError::Syntax("arguments must be ASCII or UTF-8"))?;
    if args.chars().any(|c| c.is_control() && c != '\t') {
        return Err(ParseError::Syntax("control characters in command"));
    }
    let args = args.trim_matches(|c| c == ' ' || c == '\t');
    let no_args = |cmd: Command, usage: &'static str| {
        if args.is_empty() {
            Ok(cmd)
        } else {
            Err(ParseError::Syntax(usage))
        }
    };
    match verb.as_str() {
        "EHLO" => Ok(Command::Ehlo(hello_arg(args, "EHLO hostname")?)),
        "HELO" => Ok(Command::Helo(hello_arg(args, "HELO hostname")?)),
        "LHLO" => Ok(Command::Lhlo(hello_arg(args, "LHLO hostname")?)),
        "MAIL" => parse_mail(args),
        "RCPT" => parse_rcpt(args),
        "DATA" => no_args(Command::Data, "DATA"),
        "BDAT" => parse_bdat(args),
        "RSET" => no_args(Command::Rset, "RSET"),
        "NOOP" => Ok(Command::Noop),
        "QUIT" => no_args(Command::Quit, "QUIT"),
        "HELP" => Ok(Command::Help),
        "VRFY" => {
            if args.is_empty() {
                Err(ParseError::Syntax("VRFY address"))
            } else {
                Ok(Command::Vrfy)
            }
        }
        "EXPN" => Ok(Command::Expn),
        "STARTTLS" => no_args(Command::StartTls, "STARTTLS"),
        "AUTH" => parse_auth(args),
        "XFORWARD" => parse_xforward(args),
        _ => Err(ParseError::UnknownCommand),
    }
}

/// The verb of a command line, upper-cased, for logs: one of the verbs we know, or
/// "UNKNOWN" so that whatever a client sends as a verb never reaches a log line.
pub fn verb_of(line: &[u8]) -> &'static str {
    let word = line.split(|&b| b == b' ').next().unwrap_or_default();
    KNOWN
        .iter()
        .find(|v| v.as_bytes().eq_ignore_ascii_case(word))
        .copied()
        .unwrap_or("UNKNOWN")
}

/// A command line for a trace log: lossily decoded, control characters replaced, and
/// an AUTH command cut after its mechanism, since what follows is a credential.
pub fn loggable_line(line: &[u8]) -> String {
    let text: String = String::from_utf8_lossy(line)
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    match verb_of(line) {
        "AUTH" => {}
        // Not a command: perhaps a SASL line a client pipelined after a refused AUTH,
        // which is a credential too.
        "UNKNOWN" => return format!("(not a command, {} bytes)", line.len()),
        _ => return text,
    }
    let mut words = text.splitn(3, ' ');
    let verb = words.next().unwrap_or_default();
    match (words.next(), words.next()) {
        (Some(mech), Some(_)) => format!("{verb} {mech} ****"),
        (Some(mech), None) => format!("{verb} {mech}"),
        _ => verb.to_string(),
    }
}

const KNOWN: &[&str] = &[
    "EHLO", "HELO", "LHLO", "MAIL", "RCPT", "DATA", "BDAT", "RSET", "NOOP", "QUIT", "HELP", "VRFY",
    "EXPN", "STARTTLS", "AUTH", "XFORWARD",
];

/// The HELO/EHLO/LHLO argument: its first word (some clients append more; the domain or
/// address literal is what the Received header needs).
fn hello_arg(args: &str, usage: &'static str) -> Result<String, ParseError> {
    let name = args.split([' ', '\t']).next().unwrap_or("");
    if name.is_empty() {
        return Err(ParseError::Syntax(usage));
    }
    Ok(name.to_string())
}

/// Strips a case-insensitive keyword such as `FROM:` and the spaces after it.
fn strip_keyword<'a>(args: &'a str, kw: &str) -> Option<&'a str> {
    let head = args.get(..kw.len())?;
    if !head.eq_ignore_ascii_case(kw) {
        return None;
    }
    Some(args[kw.len()..].trim_start_matches(' '))
}

fn parse_mail(args: &str) -> Result<Command, ParseError> {
    const USAGE: &str = "MAIL FROM:<address>";
    let rest = strip_keyword(args, "FROM:").ok_or(ParseError::Syntax(USAGE))?;
    let (from, params) = split_path(rest).ok_or(ParseError::BadSender)?;
    if !from.is_empty() && !valid_mailbox(&from, true) {
        return Err(ParseError::BadSender);
    }
    let mut mp = MailParams::default();
    for p in params.split(' ').filter(|p| !p.is_empty()) {
        let (key, value) = match p.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (p, None),
        };
        match (key.to_ascii_uppercase().as_str(), value) {
            ("SIZE", Some(v)) => {
                if v.is_empty() || v.len() > 20 || !v.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(ParseError::Syntax("SIZE=<number of octets>"));
                }
                // A number too large for u64 is certainly over any limit.
                mp.size = Some(v.parse().unwrap_or(u64::MAX));
            }
            ("BODY", Some(v)) => {
                mp.body = match v.to_ascii_uppercase().as_str() {
                    "7BIT" => Body::SevenBit,
                    "8BITMIME" => Body::EightBitMime,
                    "BINARYMIME" => Body::BinaryMime,
                    _ => return Err(ParseError::Syntax("BODY=7BIT|8BITMIME|BINARYMIME")),
                };
            }
            ("SMTPUTF8", None) => mp.smtputf8 = true,
            // RFC 4954 5: the submitter identity a relaying client may pass on. A server
            // must accept it and may ignore it; we do (the session's own AUTH counts).
            ("AUTH", Some(_)) => {}
            _ => return Err(ParseError::UnknownParam(p.to_string())),
        }
    }
    Ok(Command::Mail { from, params: mp })
}

fn parse_auth(args: &str) -> Result<Command, ParseError> {
    const USAGE: &str = "AUTH mechanism [initial-response]";
    let mut words = args.split(' ').filter(|w| !w.is_empty());
    let mechanism = words.next().ok_or(ParseError::Syntax(USAGE))?;
    // RFC 4422 3.1: 1 to 20 of A-Z 0-9 - _ (in any case here).
    let name_ok = mechanism.len() <= 20
        && mechanism
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    let initial = words.next();
    if !name_ok || words.next().is_some() {
        return Err(ParseError::Syntax(USAGE));
    }
    Ok(Command::Auth {
        mechanism: mechanism.to_ascii_uppercase(),
        initial: initial.map(str::to_string),
    })
}

fn parse_rcpt(args: &str) -> Result<Command, ParseError> {
    let rest = strip_keyword(args, "TO:").ok_or(ParseError::Syntax("RCPT TO:<address>"))?;
    let (to, params) = split_path(rest).ok_or(ParseError::BadRecipient)?;
    let unqualified = !(to.eq_ignore_ascii_case("postmaster") || valid_mailbox(&to, false));
    if unqualified && !valid_mailbox(&to, true) {
        return Err(ParseError::BadRecipient);
    }
    // We advertise no RCPT extension (DSN's NOTIFY/ORCPT are not offered).
    if let Some(p) = params.split(' ').find(|p| !p.is_empty()) {
        return Err(ParseError::UnknownParam(p.to_string()));
    }
    if unqualified {
        return Err(ParseError::UnqualifiedRecipient(to));
    }
    Ok(Command::Rcpt { to })
}

/// Splits `<path> params` into the address (brackets removed, source route stripped) and
/// the parameter text. A path without brackets is accepted up to the first space, as many
/// MTAs do for broken clients. `None` on unbalanced brackets or junk right after `>`.
fn split_path(s: &str) -> Option<(String, &str)> {
    let Some(inner_start) = s.strip_prefix('<') else {
        let end = s.find(' ').unwrap_or(s.len());
        let addr = &s[..end];
        if addr.is_empty() || addr.contains(['<', '>']) {
            return None;
        }
        return Some((addr.to_string(), &s[end..]));
    };
    let mut in_quote = false;
    let mut escaped = false;
    let mut close = None;
    for (i, c) in inner_start.char_indices() {
        if escaped {
            escaped = false;
        } else if c == '\\' && in_quote {
            escaped = true;
        } else if c == '"' {
            in_quote = !in_quote;
        } else if c == '>' && !in_quote {
            close = Some(i);
            break;
        }
    }
    let close = close?;
    let inner = &inner_start[..close];
    let rest = &inner_start[close + 1..];
    if !(rest.is_empty() || rest.starts_with(' ')) {
        return None;
    }
    let addr = match inner.strip_prefix('@') {
        // RFC 5321 4.1.1.3: source routes are to be accepted and ignored.
        Some(route) => {
            let (route, mailbox) = route.split_once(':')?;
            if route
                .split(',')
                .any(|hop| hop.trim_start_matches('@').is_empty() || hop.contains(' '))
            {
                return None;
            }
            // A route in front of the null path makes no sense.
            if mailbox.is_empty() {
                return None;
            }
            mailbox
        }
        None => inner,
    };
    Some((addr.to_string(), rest))
}

/// Checks `local@domain` leniently: a dot-string or quoted local part, a domain of labels
/// or an address literal. UTF-8 is allowed here; whether it is *permitted* (SMTPUTF8) is
/// the session's decision. `allow_unqualified` admits a bare local part (local tools send
/// `MAIL FROM:<root>`).
fn valid_mailbox(addr: &str, allow_unqualified: bool) -> bool {
    let (local, domain) = if let Some(q) = addr.strip_prefix('"') {
        let mut escaped = false;
        let mut end = None;
        for (i, c) in q.char_indices() {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                end = Some(i);
                break;
            } else if c.is_control() {
                return false;
            }
        }
        let Some(end) = end else { return false };
        let after = &q[end + 1..];
        match after.strip_prefix('@') {
            Some(d) => (&addr[..end + 2], Some(d)),
            None if after.is_empty() => (addr, None),
            None => return false,
        }
    } else {
        match addr.split_once('@') {
            Some((l, d)) => (l, Some(d)),
            None => (addr, None),
        }
    };
    if local.is_empty() {
        return false;
    }
    if !local.starts_with('"') {
        let atext = |c: char| {
            c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~.".contains(c) || !c.is_ascii()
        };
        if !local.chars().all(atext) {
            return false;
        }
    }
    match domain {
        None => allow_unqualified,
        Some(d) => valid_domain(d),
    }
}

fn valid_domain(d: &str) -> bool {
    if let Some(lit) = d.strip_prefix('[') {
        let Some(lit) = lit.strip_suffix(']') else {
            return false;
        };
        return !lit.is_empty()
            && lit
                .chars()
                .all(|c| c.is_ascii_graphic() && !matches!(c, '[' | ']' | '\\'));
    }
    !d.is_empty()
        && d.split('.').all(|label| {
            !label.is_empty()
                && label
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || !c.is_ascii())
                && !label.chars().any(char::is_whitespace)
        })
}

fn parse_bdat(args: &str) -> Result<Command, ParseError> {
    const USAGE: &str = "BDAT chunk-size [LAST]";
    let mut words = args.split(' ').filter(|w| !w.is_empty());
    let size = words.next().ok_or(ParseError::Syntax(USAGE))?;
    if size.len() > 20 || !size.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ParseError::Syntax(USAGE));
    }
    let size: u64 = size.parse().map_err(|_| ParseError::Syntax(USAGE))?;
    let last = match words.next() {
        None => false,
        Some(w) if w.eq_ignore_ascii_case("LAST") => true,
        Some(_) => return Err(ParseError::Syntax(USAGE)),
    };
    if words.next().is_some() {
        return Err(ParseError::Syntax(USAGE));
    }
    Ok(Command::Bdat { size, last })
}

fn parse_xforward(args: &str) -> Result<Command, ParseError> {
    const USAGE: &str = "XFORWARD attribute=value...";
    let mut attrs = Vec::new();
    for item in args.split(' ').filter(|w| !w.is_empty()) {
        let (name, value) = item.split_once('=').ok_or(ParseError::Syntax(USAGE))?;
        let attr = XForwardAttr::parse(name)
            .ok_or_else(|| ParseError::UnknownXForwardAttr(name.to_string()))?;
        let value = xtext_decode(value).ok_or(ParseError::Syntax("XFORWARD value is not xtext"))?;
        attrs.push((attr, value));
    }
    if attrs.is_empty() {
        return Err(ParseError::Syntax(USAGE));
    }
    Ok(Command::XForward(attrs))
}

/// Decodes xtext (RFC 3461: `+XX` is the byte with hex value XX). The result is made valid
/// UTF-8 lossily and control characters become `?`: these values end up in headers and
/// logs, and a forwarded delivery must not fail over an odd client HELO name.
pub fn xtext_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'+' {
            let hex = bytes.get(i + 1..i + 3)?;
            // from_str_radix alone would accept a sign ("+1").
            if !hex.iter().all(u8::is_ascii_hexdigit) {
                return None;
            }
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Some(
        String::from_utf8_lossy(&out)
            .chars()
            .map(|c| if c.is_control() { '?' } else { c })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verbs_and_lines_for_logs() {
        assert_eq!(verb_of(b"mail FROM:<a@b>"), "MAIL");
        assert_eq!(verb_of(b"GET / HTTP/1.0"), "UNKNOWN");
        assert_eq!(verb_of(b""), "UNKNOWN");
        assert_eq!(loggable_line(b"AUTH PLAIN c2VjcmV0"), "AUTH PLAIN ****");
        assert_eq!(loggable_line(b"auth LOGIN"), "auth LOGIN");
        assert_eq!(loggable_line(b"NOOP \x1b[2J"), "NOOP ?[2J");
        assert_eq!(
            loggable_line(b"AHVzZXIAcGFzcw=="),
            "(not a command, 16 bytes)"
        );
    }

    fn mail(line: &str) -> Result<(String, MailParams), ParseError> {
        match parse_command(line.as_bytes())? {
            Command::Mail { from, params } => Ok((from, params)),
            other => panic!("not MAIL: {other:?}"),
        }
    }

    fn rcpt(line: &str) -> Result<String, ParseError> {
        match parse_command(line.as_bytes())? {
            Command::Rcpt { to } => Ok(to),
            other => panic!("not RCPT: {other:?}"),
        }
    }

    #[test]
    fn verbs_case_insensitive() {
        assert_eq!(parse_command(b"data"), Ok(Command::Data));
        assert_eq!(parse_command(b"DaTa "), Ok(Command::Data));
        assert_eq!(parse_command(b"NOOP whatever"), Ok(Command::Noop));
        assert_eq!(parse_command(b"quit"), Ok(Command::Quit));
        assert_eq!(parse_command(b"starttls"), Ok(Command::StartTls));
        assert_eq!(
            parse_command(b"ehlo client.example"),
            Ok(Command::Ehlo("client.example".into()))
        );
        assert_eq!(
            parse_command(b"HELO [192.0.2.1] extra"),
            Ok(Command::Helo("[192.0.2.1]".into()))
        );
        assert_eq!(parse_command(b"LHLO x"), Ok(Command::Lhlo("x".into())));
        assert_eq!(
            parse_command(b"AUTH plain abc"),
            Ok(Command::Auth {
                mechanism: "PLAIN".into(),
                initial: Some("abc".into())
            })
        );
        assert_eq!(
            parse_command(b"AUTH LOGIN"),
            Ok(Command::Auth {
                mechanism: "LOGIN".into(),
                initial: None
            })
        );
        for bad in [&b"AUTH"[..], b"AUTH PLAIN a b", b"AUTH PL@IN"] {
            assert!(
                matches!(parse_command(bad), Err(ParseError::Syntax(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn errors() {
        assert_eq!(parse_command(b"FOO"), Err(ParseError::UnknownCommand));
        assert_eq!(parse_command(b""), Err(ParseError::UnknownCommand));
        assert_eq!(parse_command(b"\xff\xfe"), Err(ParseError::UnknownCommand));
        assert!(matches!(parse_command(b"EHLO"), Err(ParseError::Syntax(_))));
        assert!(matches!(
            parse_command(b"DATA x"),
            Err(ParseError::Syntax(_))
        ));
        assert!(matches!(
            parse_command(b"QUIT now"),
            Err(ParseError::Syntax(_))
        ));
        assert!(matches!(
            parse_command(b"EHLO \xff"),
            Err(ParseError::Syntax(_))
        ));
        assert!(matches!(
            parse_command(b"EHLO a\rb"),
            Err(ParseError::Syntax(_))
        ));
        assert!(matches!(parse_command(b"VRFY"), Err(ParseError::Syntax(_))));
        assert_eq!(ParseError::UnknownCommand.reply().code, 500);
        assert_eq!(
            ParseError::Syntax("x").reply().render(),
            b"501 5.5.4 Syntax: x\r\n"
        );
    }

    #[test]
    fn mail_from_forms() {
        assert_eq!(mail("MAIL FROM:<a@b.example>").unwrap().0, "a@b.example");
        assert_eq!(mail("mail from: <a@b.example>").unwrap().0, "a@b.example");
        assert_eq!(mail("MAIL FROM:<>").unwrap().0, "");
        assert_eq!(mail("MAIL FROM:a@b.example").unwrap().0, "a@b.example");
        assert_eq!(mail("MAIL FROM:<root>").unwrap().0, "root");
        assert_eq!(
            mail("MAIL FROM:<@r1,@r2:u@d.example>").unwrap().0,
            "u@d.example"
        );
        assert_eq!(
            mail("MAIL FROM:<\"a b>c\"@d.example> SIZE=5").unwrap(),
            (
                "\"a b>c\"@d.example".into(),
                MailParams {
                    size: Some(5),
                    ..Default::default()
                }
            )
        );
        assert_eq!(
            mail("MAIL FROM:<u@[192.0.2.1]>").unwrap().0,
            "u@[192.0.2.1]"
        );
        assert_eq!(
            mail("MAIL FROM:<ü@exämple.de> SMTPUTF8").unwrap().0,
            "ü@exämple.de"
        );
    }

    #[test]
    fn mail_from_bad() {
        assert_eq!(mail("MAIL FROM:<a@b"), Err(ParseError::BadSender));
        assert_eq!(mail("MAIL FROM:<a@b>x"), Err(ParseError::BadSender));
        assert_eq!(mail("MAIL FROM:<a b@c>"), Err(ParseError::BadSender));
        assert_eq!(mail("MAIL FROM:<a@>"), Err(ParseError::BadSender));
        assert_eq!(mail("MAIL FROM:<a@b..c>"), Err(ParseError::BadSender));
        assert_eq!(mail("MAIL FROM:<@r:>"), Err(ParseError::BadSender));
        assert_eq!(mail("MAIL FROM:<\"a@b>"), Err(ParseError::BadSender));
        assert!(matches!(mail("MAIL TO:<a@b>"), Err(ParseError::Syntax(_))));
        assert!(matches!(mail("MAIL"), Err(ParseError::Syntax(_))));
    }

    #[test]
    fn mail_params() {
        let (_, p) = mail("MAIL FROM:<a@b> size=100 body=8bitmime SMTPUTF8").unwrap();
        assert_eq!(
            p,
            MailParams {
                size: Some(100),
                body: Body::EightBitMime,
                smtputf8: true
            }
        );
        let (_, p) = mail("MAIL FROM:<a@b> BODY=BINARYMIME").unwrap();
        assert_eq!(p.body, Body::BinaryMime);
        let (_, p) = mail("MAIL FROM:<a@b> SIZE=99999999999999999999").unwrap();
        assert_eq!(p.size, Some(u64::MAX));
        assert_eq!(
            mail("MAIL FROM:<a@b> RET=FULL"),
            Err(ParseError::UnknownParam("RET=FULL".into()))
        );
        assert_eq!(
            ParseError::UnknownParam("X".into()).reply().render(),
            b"555 5.5.4 Unsupported option: X\r\n"
        );
        assert!(matches!(
            mail("MAIL FROM:<a@b> SIZE=x"),
            Err(ParseError::Syntax(_))
        ));
        assert!(matches!(
            mail("MAIL FROM:<a@b> BODY=9BIT"),
            Err(ParseError::Syntax(_))
        ));
        assert!(matches!(
            mail("MAIL FROM:<a@b> SMTPUTF8=yes"),
            Err(ParseError::UnknownParam(_))
        ));
    }

    #[test]
    fn rcpt_forms() {
        assert_eq!(rcpt("RCPT TO:<u@d.example>").unwrap(), "u@d.example");
        assert_eq!(rcpt("rcpt to: <Postmaster>").unwrap(), "Postmaster");
        assert_eq!(rcpt("RCPT TO:<@hop:u@d>").unwrap(), "u@d");
        assert_eq!(
            rcpt("RCPT TO:<u>"),
            Err(ParseError::UnqualifiedRecipient("u".into()))
        );
        assert_eq!(rcpt("RCPT TO:<>"), Err(ParseError::BadRecipient));
        assert!(matches!(
            rcpt("RCPT TO:<u@d> NOTIFY=NEVER"),
            Err(ParseError::UnknownParam(_))
        ));
        assert!(matches!(
            rcpt("RCPT FROM:<u@d>"),
            Err(ParseError::Syntax(_))
        ));
    }

    #[test]
    fn bdat_args() {
        assert_eq!(
            parse_command(b"BDAT 100"),
            Ok(Command::Bdat {
                size: 100,
                last: false
            })
        );
        assert_eq!(
            parse_command(b"bdat 0 last"),
            Ok(Command::Bdat {
                size: 0,
                last: true
            })
        );
        assert!(parse_command(b"BDAT").is_err());
        assert!(parse_command(b"BDAT -1").is_err());
        assert!(parse_command(b"BDAT 1 FIRST").is_err());
        assert!(parse_command(b"BDAT 1 LAST x").is_err());
        assert!(parse_command(b"BDAT 99999999999999999999999").is_err());
    }

    #[test]
    fn xforward_parsing() {
        let cmd = parse_command(b"XFORWARD NAME=mx.example ADDR=192.0.2.1 helo=a+20b+2Bc").unwrap();
        assert_eq!(
            cmd,
            Command::XForward(vec![
                (XForwardAttr::Name, "mx.example".into()),
                (XForwardAttr::Addr, "192.0.2.1".into()),
                (XForwardAttr::Helo, "a b+c".into()),
            ])
        );
        assert_eq!(
            parse_command(b"XFORWARD FOO=1"),
            Err(ParseError::UnknownXForwardAttr("FOO".into()))
        );
        assert!(matches!(
            parse_command(b"XFORWARD"),
            Err(ParseError::Syntax(_))
        ));
        assert!(matches!(
            parse_command(b"XFORWARD NAME"),
            Err(ParseError::Syntax(_))
        ));
        assert!(matches!(
            parse_command(b"XFORWARD NAME=a+2"),
            Err(ParseError::Syntax(_))
        ));
        assert!(matches!(
            parse_command(b"XFORWARD NAME=a+zz"),
            Err(ParseError::Syntax(_))
        ));
    }

    #[test]
    fn xtext() {
        assert_eq!(xtext_decode("[UNAVAILABLE]").unwrap(), "[UNAVAILABLE]");
        assert_eq!(xtext_decode("a+3Db").unwrap(), "a=b");
        assert_eq!(xtext_decode("a+0D+0Ab").unwrap(), "a??b");
        assert_eq!(xtext_decode("+C3+BC").unwrap(), "ü");
        assert_eq!(xtext_decode("+FF").unwrap(), "\u{fffd}");
        assert_eq!(xtext_decode("+"), None);
        assert_eq!(xtext_decode("++1"), None);
        assert_eq!(xtext_decode("+é"), None);
    }
}
