//! SMTP replies our server session sends: a code, an optional enhanced status code
//! (RFC 3463 / 2034) and text lines, rendered as one or more `code[-| ]enhanced text`
//! lines. A reply received from another server is parsed by [`super::remote_reply`].

use std::fmt;

/// An enhanced status code `class.subject.detail` (RFC 3463), e.g. `2.1.0`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Enhanced {
    /// 2 (success), 4 (persistent transient failure) or 5 (permanent failure).
    pub class: u8,
    pub subject: u16,
    pub detail: u16,
}

impl Enhanced {
    pub const fn new(class: u8, subject: u16, detail: u16) -> Enhanced {
        Enhanced {
            class,
            subject,
            detail,
        }
    }

    /// Parses `c.s.d` (class 2, 4 or 5; subject and detail of 1-3 digits). `None` otherwise,
    /// so text that merely starts with a number is not mistaken for a status code.
    pub fn parse(s: &str) -> Option<Enhanced> {
        let mut parts = s.split('.');
        let class = parts.next()?;
        let subject = parts.next()?;
        let detail = parts.next()?;
        if parts.next().is_some() {
            return None;
        }
        let num = |p: &str, max_len: usize| -> Option<u16> {
            if p.is_empty() || p.len() > max_len || !p.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            p.parse().ok()
        };
        let class = num(class, 1)? as u8;
        if !matches!(class, 2 | 4 | 5) {
            return None;
        }
        Some(Enhanced::new(class, num(subject, 3)?, num(detail, 3)?))
    }
}

impl fmt::Display for Enhanced {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.class, self.subject, self.detail)
    }
}

/// One SMTP reply, possibly multi-line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// Three-digit reply code (200..=599 for anything we send).
    pub code: u16,
    /// Enhanced status code, repeated on every rendered line. `None` for the greeting, the
    /// EHLO/LHLO/HELO lines and 3xx intermediate replies.
    pub enhanced: Option<Enhanced>,
    /// Text lines; CR, LF and other control characters are replaced when rendering so that
    /// text taken from elsewhere (an upstream, an exception) cannot inject reply lines.
    pub lines: Vec<String>,
}

impl Reply {
    /// A one-line reply with an enhanced code given as `"c.s.d"`; an unparsable enhanced
    /// code is dropped rather than rendered wrong.
    pub fn new(code: u16, enhanced: &str, text: impl Into<String>) -> Reply {
        Reply {
            code,
            enhanced: Enhanced::parse(enhanced),
            lines: vec![text.into()],
        }
    }

    /// A one-line reply without enhanced code (greeting, HELO, 354).
    pub fn plain(code: u16, text: impl Into<String>) -> Reply {
        Reply {
            code,
            enhanced: None,
            lines: vec![text.into()],
        }
    }

    /// A multi-line reply.
    pub fn multiline(code: u16, enhanced: Option<Enhanced>, lines: Vec<String>) -> Reply {
        Reply {
            code,
            enhanced,
            lines,
        }
    }

    /// 2xx.
    pub fn is_positive(&self) -> bool {
        (200..300).contains(&self.code)
    }

    /// 4xx: try again later.
    pub fn is_transient(&self) -> bool {
        (400..500).contains(&self.code)
    }

    /// 5xx: do not try again.
    pub fn is_permanent(&self) -> bool {
        (500..600).contains(&self.code)
    }

    /// The reply with an enhanced code derived from its class (`2.0.0`, `4.0.0`, `5.0.0`)
    /// when it has none, and with the class of the reply when it has another (RFC 3463: the
    /// class repeats the reply code's; a `554 4.2.0` says "permanent" and "temporary" at
    /// once, and clients that trust the enhanced code would retry or bounce wrongly).
    /// 1xx/3xx replies stay as they are. We advertise ENHANCEDSTATUSCODES, so replies
    /// handed to the session by the I/O layer must carry a consistent one.
    pub fn with_default_enhanced(mut self) -> Reply {
        let class = (self.code / 100) as u8;
        if matches!(class, 2 | 4 | 5) {
            self.enhanced
                .get_or_insert(Enhanced::new(class, 0, 0))
                .class = class;
        }
        self
    }

    /// The wire form: every line CRLF-terminated, `-` after the code on all but the last.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.render_into(&mut out);
        out
    }

    /// Appends the wire form to `out`.
    pub fn render_into(&self, out: &mut Vec<u8>) {
        // A code outside 100..=999 would not be three digits; clamp rather than emit a
        // malformed line the client cannot parse.
        let code = if (100..1000).contains(&self.code) {
            self.code
        } else {
            451
        };
        let empty = [String::new()];
        let lines: &[String] = if self.lines.is_empty() {
            &empty
        } else {
            &self.lines
        };
        for (i, line) in lines.iter().enumerate() {
            let sep = if i + 1 == lines.len() { ' ' } else { '-' };
            let mut s = format!("{code:03}{sep}");
            if let Some(e) = self.enhanced {
                s.push_str(&e.to_string());
                s.push(' ');
            }
            s.extend(line.chars().map(|c| if c.is_control() { ' ' } else { c }));
            // RFC 4954 4: an empty SASL challenge is still `334 ` with its space.
            let trimmed = if code == 334 && line.is_empty() {
                s.as_str()
            } else {
                s.trim_end()
            };
            out.extend_from_slice(trimmed.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
    }
}

impl fmt::Display for Reply {
    /// The reply as one log-friendly line: `250 2.1.0 Ok` (lines joined by a space).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:03}", self.code)?;
        if let Some(e) = self.enhanced {
            write!(f, " {e}")?;
        }
        for line in &self.lines {
            write!(f, " {line}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_single_and_multi_line() {
        assert_eq!(Reply::new(250, "2.1.0", "Ok").render(), b"250 2.1.0 Ok\r\n");
        assert_eq!(Reply::plain(220, "h ESMTP").render(), b"220 h ESMTP\r\n");
        let r = Reply::multiline(
            250,
            None,
            vec!["h".into(), "PIPELINING".into(), "SIZE".into()],
        );
        assert_eq!(r.render(), b"250-h\r\n250-PIPELINING\r\n250 SIZE\r\n");
        let r = Reply::multiline(550, Enhanced::parse("5.7.1"), vec!["a".into(), "b".into()]);
        assert_eq!(r.render(), b"550-5.7.1 a\r\n550 5.7.1 b\r\n");
    }

    #[test]
    fn render_neutralises_line_breaks() {
        let r = Reply::new(451, "4.3.0", "bad\r\n250 fake");
        assert_eq!(r.render(), b"451 4.3.0 bad  250 fake\r\n");
        assert_eq!(Reply::multiline(250, None, vec![]).render(), b"250\r\n");
        assert_eq!(Reply::plain(7, "x").render(), b"451 x\r\n");
    }

    #[test]
    fn enhanced_parse() {
        assert_eq!(Enhanced::parse("2.1.0"), Some(Enhanced::new(2, 1, 0)));
        assert_eq!(Enhanced::parse("5.7.26"), Some(Enhanced::new(5, 7, 26)));
        assert_eq!(Enhanced::parse("3.0.0"), None);
        assert_eq!(Enhanced::parse("2.1"), None);
        assert_eq!(Enhanced::parse("2.1.0.0"), None);
        assert_eq!(Enhanced::parse("2.x.0"), None);
        assert_eq!(Enhanced::parse("2.1234.0"), None);
    }

    #[test]
    fn default_enhanced() {
        let r = Reply::plain(451, "try later").with_default_enhanced();
        assert_eq!(r.render(), b"451 4.0.0 try later\r\n");
        let r = Reply::plain(354, "go").with_default_enhanced();
        assert_eq!(r.render(), b"354 go\r\n");
    }

    /// Found by fuzzing (fuzz target `session`): an I/O layer's `554 4.2.0` was sent as is.
    #[test]
    fn default_enhanced_takes_the_reply_class() {
        let r = Reply::new(554, "4.2.0", "full").with_default_enhanced();
        assert_eq!(r.render(), b"554 5.2.0 full\r\n");
        let r = Reply::new(250, "5.1.1", "odd").with_default_enhanced();
        assert_eq!(r.render(), b"250 2.1.1 odd\r\n");
        let r = Reply::new(451, "4.3.0", "same").with_default_enhanced();
        assert_eq!(r.render(), b"451 4.3.0 same\r\n");
    }
}
