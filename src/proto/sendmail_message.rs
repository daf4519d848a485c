//! The message `sendmail` reads, sans-I/O: where standard input ends (EOF, or a line
//! holding only `.` unless `-i`), the header block (folded lines, 8-bit bytes, no header at
//! all), the recipients `-t` takes from To/Cc/Bcc (Resent-To/Cc/Bcc when the message has
//! them, as Postfix's cleanup does), and the headers a submission gets on the way: Bcc and
//! Resent-Bcc removed, From, Date and Message-ID added when missing.
//!
//! Lines are made CRLF as they are read ([`InputLines`]), so everything after that sees
//! one line-end convention, the one the spool and SMTP use.

/// Standard input, line by line: each line's LF or CRLF becomes CRLF; a lone `.` line ends
/// the input when `dot_ends`. The I/O layer reads a line (up to and including its LF, or
/// the last bytes before EOF) and hands it to [`InputLines::line`].
#[derive(Debug)]
pub struct InputLines {
    dot_ends: bool,
    out: Vec<u8>,
    ended: bool,
}

impl InputLines {
    pub fn new(dot_ends: bool) -> Self {
        InputLines {
            dot_ends,
            out: Vec::new(),
            ended: false,
        }
    }

    /// One line as read (with its LF, or without at EOF). Returns `false` once the input
    /// has ended (a lone dot): read no more.
    pub fn line(&mut self, line: &[u8]) -> bool {
        if self.ended {
            return false;
        }
        let text = line.strip_suffix(b"\n").unwrap_or(line);
        let text = text.strip_suffix(b"\r").unwrap_or(text);
        if self.dot_ends && text == b"." {
            self.ended = true;
            return false;
        }
        self.out.extend_from_slice(text);
        self.out.extend_from_slice(b"\r\n");
        true
    }

    /// Bytes so far (CRLF lines).
    pub fn len(&self) -> usize {
        self.out.len()
    }

    pub fn is_empty(&self) -> bool {
        self.out.is_empty()
    }

    pub fn finish(self) -> Vec<u8> {
        self.out
    }
}

/// One header field: its name and its whole text (continuation lines included, CRLF
/// ends), as it came.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field<'a> {
    pub name: &'a [u8],
    pub raw: &'a [u8],
}

impl Field<'_> {
    fn is(&self, name: &str) -> bool {
        self.name.eq_ignore_ascii_case(name.as_bytes())
    }

    /// The value, unfolded, after the colon; bytes that are not UTF-8 replaced.
    pub fn value(&self) -> String {
        let colon = self.raw.iter().position(|&b| b == b':').unwrap_or(0);
        let v: Vec<u8> = self.raw[colon + 1..]
            .iter()
            .copied()
            .filter(|&b| b != b'\r' && b != b'\n')
            .collect();
        String::from_utf8_lossy(&v).trim().to_string()
    }
}

/// A message split into header fields and body.
#[derive(Debug)]
pub struct Split<'a> {
    pub fields: Vec<Field<'a>>,
    /// Everything after the header block (after its empty line, when it has one).
    pub body: &'a [u8],
}

/// Splits a CRLF message. A leading mbox `From ` line is dropped (Postfix does). The header
/// block ends at an empty line, or at the first line that is neither a field nor a
/// continuation: that line starts the body (the empty line is put back on output). A
/// message whose first line is no field has no header at all.
pub fn split(msg: &[u8]) -> Split<'_> {
    let mut rest = msg;
    if rest.starts_with(b"From ") {
        rest = after_line(rest);
    }
    let mut fields: Vec<Field<'_>> = Vec::new();
    // (start, end) of the field being read, as offsets into `rest`.
    let mut at = 0;
    let mut current: Option<(usize, usize, usize)> = None; // start, name end, end
    loop {
        let line_end = line_end(&rest[at..]) + at;
        let line = &rest[at..line_end];
        let text = line.strip_suffix(b"\r\n").unwrap_or(line);
        if line.is_empty() {
            break;
        }
        if text.is_empty() {
            at = line_end;
            break;
        }
        if matches!(text[0], b' ' | b'\t') && current.is_some() {
            if let Some(c) = current.as_mut() {
                c.2 = line_end;
            }
            at = line_end;
            continue;
        }
        let Some(name_end) = field_name_end(text) else {
            break;
        };
        if let Some((s, n, e)) = current.take() {
            fields.push(Field {
                name: &rest[s..n],
                raw: &rest[s..e],
            });
        }
        current = Some((at, at + name_end, line_end));
        at = line_end;
    }
    if let Some((s, n, e)) = current {
        fields.push(Field {
            name: &rest[s..n],
            raw: &rest[s..e],
        });
    }
    Split {
        fields,
        body: &rest[at..],
    }
}

fn after_line(b: &[u8]) -> &[u8] {
    &b[line_end(b)..]
}

/// Offset just past the next LF (or the end).
fn line_end(b: &[u8]) -> usize {
    b.iter()
        .position(|&c| c == b'\n')
        .map_or(b.len(), |p| p + 1)
}

/// RFC 5322 field name (printable ASCII but colon), then optional blanks (obsolete
/// syntax), then the colon: the name's length.
fn field_name_end(text: &[u8]) -> Option<usize> {
    let name_len = text
        .iter()
        .position(|&b| !(33..=126).contains(&b) || b == b':')?;
    if name_len == 0 {
        return None;
    }
    let after = text[name_len..]
        .iter()
        .position(|&b| b != b' ' && b != b'\t')?;
    (text[name_len + after] == b':').then_some(name_len)
}

/// What the submission adds and takes.
#[derive(Debug, Clone)]
pub struct Compose {
    /// `-t`: recipients from the headers.
    pub extract: bool,
    /// The whole `From:` field to add when there is none, without its CRLF.
    pub from: String,
    /// The whole `Date:` field to add when there is none.
    pub date: String,
    /// The whole `Message-ID:` field to add when there is none.
    pub message_id: String,
}

/// The message as it is submitted, and the recipients its headers gave (`-t`).
#[derive(Debug, PartialEq, Eq)]
pub struct Prepared {
    pub message: Vec<u8>,
    pub header_rcpts: Vec<String>,
}

/// Removes Bcc and Resent-Bcc (always, as Postfix's cleanup does: a Bcc header is
/// never delivered), adds the missing fields after the existing ones, and with `extract`
/// collects the recipients.
pub fn prepare(msg: &[u8], c: &Compose) -> Prepared {
    let s = split(msg);
    let resent = s
        .fields
        .iter()
        .any(|f| f.is("Resent-To") || f.is("Resent-Cc") || f.is("Resent-Bcc"));
    let rcpt_fields: &[&str] = if resent {
        &["Resent-To", "Resent-Cc", "Resent-Bcc"]
    } else {
        &["To", "Cc", "Bcc"]
    };
    let mut header_rcpts = Vec::new();
    if c.extract {
        for f in s
            .fields
            .iter()
            .filter(|f| rcpt_fields.iter().any(|n| f.is(n)))
        {
            for a in addresses(&f.value()) {
                if !header_rcpts.contains(&a) {
                    header_rcpts.push(a);
                }
            }
        }
    }
    let mut out = Vec::with_capacity(msg.len() + 256);
    for f in &s.fields {
        if f.is("Bcc") || f.is("Resent-Bcc") {
            continue;
        }
        out.extend_from_slice(f.raw);
        if !f.raw.ends_with(b"\n") {
            out.extend_from_slice(b"\r\n");
        }
    }
    let has = |name: &str| s.fields.iter().any(|f| f.is(name));
    for (name, field) in [
        ("From", &c.from),
        ("Date", &c.date),
        ("Message-ID", &c.message_id),
    ] {
        if !has(name) {
            out.extend_from_slice(field.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(s.body);
    Prepared {
        message: out,
        header_rcpts,
    }
}

/// The addresses of an RFC 5322 address list: `a@b`, `Name <a@b>`, `"Q, N" <a@b>`,
/// `a@b (comment)`, groups `team: a@b, c@d;` (an empty one, `undisclosed-recipients:;`,
/// gives none), source routes `<@r:a@b>` (the route dropped). Never fails: what cannot be
/// read as an address is skipped.
pub fn addresses(list: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut bare = String::new();
    let mut angle: Option<String> = None;
    let mut in_angle = false;
    let mut quoted = false;
    let mut escaped = false;
    let mut comment = 0usize;
    let finish = |bare: &mut String, angle: &mut Option<String>, out: &mut Vec<String>| {
        let a = match angle.take() {
            Some(a) => a,
            None => bare.clone(),
        };
        bare.clear();
        let a: String = a.chars().filter(|c| !c.is_whitespace()).collect();
        // `@route1,@route2:local@domain`
        let a = match a.strip_prefix('@') {
            Some(_) => a.rsplit_once(':').map_or(a.clone(), |(_, x)| x.to_string()),
            None => a,
        };
        if !a.is_empty() && !a.contains(['<', '>', '"', '(', ')', ',', ';']) {
            out.push(a);
        }
    };
    for ch in list.chars() {
        if escaped {
            escaped = false;
            if in_angle {
                if let Some(a) = angle.as_mut() {
                    a.push(ch);
                }
            } else if comment == 0 {
                bare.push(ch);
            }
            continue;
        }
        if comment > 0 {
            match ch {
                '\\' => escaped = true,
                '(' => comment += 1,
                ')' => comment -= 1,
                _ => {}
            }
            continue;
        }
        if quoted {
            match ch {
                '\\' => escaped = true,
                '"' => quoted = false,
                _ => {}
            }
            // A quoted local part (`"a b"@x`) is rare in scripts; its text is kept.
            if in_angle {
                if let Some(a) = angle.as_mut() {
                    a.push(ch);
                }
            } else {
                bare.push(ch);
            }
            continue;
        }
        match ch {
            '\\' => escaped = true,
            '"' => {
                quoted = true;
                if in_angle {
                    if let Some(a) = angle.as_mut() {
                        a.push(ch);
                    }
                } else {
                    bare.push(ch);
                }
            }
            '(' => comment = 1,
            '<' if !in_angle => {
                in_angle = true;
                angle = Some(String::new());
            }
            '>' if in_angle => in_angle = false,
            ':' if !in_angle => bare.clear(), // a group's display name
            ',' | ';' if !in_angle => finish(&mut bare, &mut angle, &mut out),
            _ if in_angle => {
                if let Some(a) = angle.as_mut() {
                    a.push(ch);
                }
            }
            _ => bare.push(ch),
        }
    }
    finish(&mut bare, &mut angle, &mut out);
    out.retain(|a| !a.contains('"') || a.contains('@'));
    out
}

/// A `From:` field for `address` with a display name (`-F`, or the user's GECOS), quoted
/// when it holds specials and RFC 2047-encoded when it is not ASCII.
pub fn from_field(full_name: Option<&str>, address: &str) -> String {
    let name = full_name.map(str::trim).filter(|n| !n.is_empty());
    let Some(name) = name else {
        return format!("From: {address}");
    };
    let name: String = name.chars().filter(|c| !c.is_control()).collect();
    let shown = if !name.is_ascii() {
        use base64::Engine as _;
        format!(
            "=?UTF-8?B?{}?=",
            base64::engine::general_purpose::STANDARD.encode(name.as_bytes())
        )
    } else if name.chars().any(|c| "()<>[]:;@\\,.\"".contains(c)) {
        format!("\"{}\"", name.replace('\\', "\\\\").replace('"', "\\\""))
    } else {
        name
    };
    format!("From: {shown} <{address}>")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(input: &[u8], dot_ends: bool) -> Vec<u8> {
        let mut r = InputLines::new(dot_ends);
        for line in input.split_inclusive(|&b| b == b'\n') {
            if !r.line(line) {
                break;
            }
        }
        r.finish()
    }

    fn compose(extract: bool) -> Compose {
        Compose {
            extract,
            from: "From: Me <me@h>".into(),
            date: "Date: D".into(),
            message_id: "Message-ID: <1@h>".into(),
        }
    }

    #[test]
    fn input_ends_at_a_lone_dot_unless_i() {
        let input = b"Subject: x\n\nline\n.\nafter\n";
        assert_eq!(read(input, true), b"Subject: x\r\n\r\nline\r\n");
        assert_eq!(
            read(input, false),
            b"Subject: x\r\n\r\nline\r\n.\r\nafter\r\n"
        );
        // CRLF input, a dot that is not alone, a last line without LF.
        assert_eq!(
            read(b"a\r\n..\r\n.x\r\nend", true),
            b"a\r\n..\r\n.x\r\nend\r\n"
        );
        assert_eq!(read(b"a\r\n.\r\nb\r\n", true), b"a\r\n");
    }

    #[test]
    fn splits_folded_and_8bit_headers() {
        let m = b"Subject: one\r\n two\r\nX-L: caf\xc3\xa9 \xff\r\nTo : a@b\r\n\r\nbody\r\n";
        let s = split(m);
        let names: Vec<&[u8]> = s.fields.iter().map(|f| f.name).collect();
        assert_eq!(names, vec![&b"Subject"[..], b"X-L", b"To"]);
        assert_eq!(s.fields[0].value(), "one two");
        assert_eq!(s.fields[2].value(), "a@b");
        assert_eq!(s.body, b"body\r\n");
    }

    #[test]
    fn no_headers_and_body_only() {
        let s = split(b"just text\r\nmore\r\n");
        assert!(s.fields.is_empty());
        assert_eq!(s.body, b"just text\r\nmore\r\n");
        let p = prepare(b"just text\r\n", &compose(true));
        assert_eq!(
            p.message,
            b"From: Me <me@h>\r\nDate: D\r\nMessage-ID: <1@h>\r\n\r\njust text\r\n"
        );
        assert!(p.header_rcpts.is_empty());
        // Empty input, a header block without body, a non-header line inside the block.
        assert!(
            prepare(b"", &compose(false))
                .message
                .ends_with(b"<1@h>\r\n\r\n")
        );
        let p = prepare(b"Subject: s\r\nnot a header\r\n", &compose(false));
        assert!(p.message.starts_with(b"Subject: s\r\nFrom: Me"));
        assert!(p.message.ends_with(b"\r\n\r\nnot a header\r\n"));
        // An mbox separator is dropped.
        let s = split(b"From me@x Mon Jan  1 00:00:00 2024\r\nSubject: a\r\n\r\nb");
        assert_eq!(s.fields.len(), 1);
    }

    #[test]
    fn t_takes_to_cc_bcc_and_removes_bcc() {
        let m = b"To: A <a@x>, b@x (Bee)\r\nCc: \"Doe, J\" <c@x>\r\nBcc: d@x,\r\n e@x\r\nSubject: s\r\nFrom: f@x\r\nDate: Mon\r\nMessage-ID: <m@x>\r\n\r\nbody\r\n";
        let p = prepare(m, &compose(true));
        assert_eq!(p.header_rcpts, vec!["a@x", "b@x", "c@x", "d@x", "e@x"]);
        assert_eq!(
            p.message,
            b"To: A <a@x>, b@x (Bee)\r\nCc: \"Doe, J\" <c@x>\r\nSubject: s\r\nFrom: f@x\r\nDate: Mon\r\nMessage-ID: <m@x>\r\n\r\nbody\r\n"
        );
        // Without -t: no recipients from headers, Bcc still not delivered.
        let p = prepare(m, &compose(false));
        assert!(p.header_rcpts.is_empty());
        assert!(!p.message.windows(4).any(|w| w == b"Bcc:"));
    }

    #[test]
    fn resent_headers_win() {
        let m = b"To: old@x\r\nResent-To: new@x\r\nResent-Bcc: hidden@x\r\n\r\n";
        let p = prepare(m, &compose(true));
        assert_eq!(p.header_rcpts, vec!["new@x", "hidden@x"]);
        assert!(!p.message.windows(7).any(|w| w == b"hidden@"));
    }

    #[test]
    fn address_lists() {
        assert_eq!(addresses("undisclosed-recipients:;"), Vec::<String>::new());
        assert_eq!(addresses("team: a@x, B <b@x>;, c"), vec!["a@x", "b@x", "c"]);
        assert_eq!(addresses("<@r1,@r2:u@x>"), vec!["u@x"]);
        assert_eq!(addresses("root"), vec!["root"]);
        assert_eq!(addresses("\"a\\\"b\" <q@x>, (c) d@x"), vec!["q@x", "d@x"]);
        assert_eq!(addresses(""), Vec::<String>::new());
        assert_eq!(addresses("<<<>>>,,,((("), Vec::<String>::new());
    }

    #[test]
    fn from_fields() {
        assert_eq!(
            from_field(Some("CronDaemon"), "root@h"),
            "From: CronDaemon <root@h>"
        );
        assert_eq!(from_field(None, "root@h"), "From: root@h");
        assert_eq!(
            from_field(Some("Doe, J."), "j@h"),
            "From: \"Doe, J.\" <j@h>"
        );
        assert_eq!(
            from_field(Some("Zoë"), "z@h"),
            "From: =?UTF-8?B?Wm/Dqw==?= <z@h>"
        );
    }
}
