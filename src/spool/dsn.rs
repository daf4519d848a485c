//! Delivery status notifications (RFC 3464): the bounce sent to the sender when recipients
//! fail permanently or a message dies in the queue.

use super::store::FailedRcpt;
use crate::envelope::{Body, ClientInfo, Envelope};
use std::io::{self, Read};
use std::path::Path;

/// How much of the original header block a DSN quotes.
pub const HEADERS_LIMIT: usize = 64 * 1024;

/// Status and text for recipients still pending when a message dies.
pub const EXPIRED_STATUS: &str = "4.4.7";
pub const EXPIRED_MESSAGE: &str = "delivery time expired";

/// The header block of the message at `path`: everything before the first empty line,
/// at most `limit` bytes (cut at a line end), line endings normalised to CRLF.
pub fn read_headers(path: &Path, limit: usize) -> io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    std::fs::File::open(path)?
        .take(limit as u64)
        .read_to_end(&mut buf)?;
    let mut out = Vec::with_capacity(buf.len().min(8192));
    let mut rest = &buf[..];
    // Only complete lines: a header cut in the middle is left out.
    while let Some(nl) = rest.iter().position(|&b| b == b'\n') {
        let line = &rest[..nl];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            break;
        }
        out.extend_from_slice(line);
        out.extend_from_slice(b"\r\n");
        rest = &rest[nl + 1..];
    }
    Ok(out)
}

/// The DSN's envelope: null sender, the original sender as the one recipient.
/// `eight_bit`: the DSN contains non-ASCII bytes (quoted headers, UTF-8 addresses).
pub fn envelope(
    original: &Envelope,
    dsn_id: &str,
    size: u64,
    eight_bit: bool,
    now: i64,
) -> Envelope {
    Envelope {
        id: dsn_id.to_string(),
        mail_from: String::new(),
        rcpts: vec![original.mail_from.clone()],
        client: ClientInfo {
            protocol: "local".to_string(),
            ..ClientInfo::default()
        },
        listener: "dsn".to_string(),
        received_at: now,
        body: if eight_bit {
            Body::EightBitMime
        } else {
            Body::SevenBit
        },
        smtputf8: original.smtputf8,
        size,
        sha256: String::new(),
    }
}

/// Builds the DSN message (CRLF line endings) about `original`, listing `failures`.
/// `headers` is the original header block ([`read_headers`]); `now` is Unix seconds.
pub fn build(
    hostname: &str,
    original: &Envelope,
    failures: &[FailedRcpt],
    headers: &[u8],
    dsn_id: &str,
    now: i64,
) -> Vec<u8> {
    let utf8 = original.smtputf8
        || !original.mail_from.is_ascii()
        || failures.iter().any(|f| !f.rcpt.is_ascii());
    let boundary = format!("=_mailchute-dsn-{dsn_id}");
    let date = rfc2822_date(now);
    let mut m = String::new();
    let mut line = |s: &str| {
        m.push_str(s);
        m.push_str("\r\n");
    };

    line(&format!(
        "From: MAILER-DAEMON@{hostname} (Mail Delivery System)"
    ));
    line(&format!("To: <{}>", original.mail_from));
    line("Subject: Undelivered Mail Returned to Sender");
    line(&format!("Date: {date}"));
    line(&format!("Message-ID: <{}.dsn@{hostname}>", original.id));
    line("Auto-Submitted: auto-replied");
    line("MIME-Version: 1.0");
    line(&format!(
        "Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary=\"{boundary}\""
    ));
    line("");
    line("This is a MIME-encapsulated message.");
    line("");

    line(&format!("--{boundary}"));
    line("Content-Type: text/plain; charset=utf-8");
    line("Content-Description: Notification");
    line(if utf8 {
        "Content-Transfer-Encoding: 8bit"
    } else {
        "Content-Transfer-Encoding: 7bit"
    });
    line("");
    line(&format!("This is the mail system at host {hostname}."));
    line("");
    line("Your message could not be delivered to one or more recipients.");
    line("Its headers are attached below.");
    line("");
    for f in failures {
        line(&format!(
            "<{}>: {} {}",
            f.rcpt,
            status_code(&f.status),
            one_line(&f.message, utf8)
        ));
    }
    line("");

    line(&format!("--{boundary}"));
    line(if utf8 {
        "Content-Type: message/global-delivery-status"
    } else {
        "Content-Type: message/delivery-status"
    });
    line("Content-Description: Delivery report");
    line("");
    line(&format!("Reporting-MTA: dns; {hostname}"));
    line(&format!("X-Mailchute-Queue-ID: {}", original.id));
    line(&format!(
        "Arrival-Date: {}",
        rfc2822_date(original.received_at)
    ));
    for f in failures {
        line("");
        let addr_type = if f.rcpt.is_ascii() { "rfc822" } else { "utf-8" };
        line(&format!("Final-Recipient: {addr_type}; {}", f.rcpt));
        line("Action: failed");
        line(&format!("Status: {}", status_code(&f.status)));
        line(&format!(
            "Diagnostic-Code: smtp; {}",
            diagnostic(&f.status, &f.message, utf8)
        ));
        line(&format!("Last-Attempt-Date: {date}"));
    }
    line("");

    line(&format!("--{boundary}"));
    line(if utf8 {
        "Content-Type: message/global-headers"
    } else {
        "Content-Type: text/rfc822-headers"
    });
    line("Content-Description: Undelivered message headers");
    if !headers.is_ascii() {
        line("Content-Transfer-Encoding: 8bit");
    }
    line("");
    let mut out = m.into_bytes();
    out.extend_from_slice(headers);
    if !headers.is_empty() && !headers.ends_with(b"\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    out
}

/// `x.y.z` when `status` is an RFC 3463 code, else the generic one of its class.
fn status_code(status: &str) -> String {
    let parts: Vec<&str> = status.split('.').collect();
    let valid = parts.len() == 3
        && matches!(parts[0], "2" | "4" | "5")
        && parts[1..]
            .iter()
            .all(|p| !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()));
    if valid {
        status.to_string()
    } else if status.starts_with('4') {
        "4.0.0".to_string()
    } else {
        "5.0.0".to_string()
    }
}

/// An SMTP-reply-shaped diagnostic: the sink's text as is when it already starts with a
/// reply code (a relay's answer), else a code derived from the status.
fn diagnostic(status: &str, message: &str, utf8: bool) -> String {
    let text = one_line(message, utf8);
    let has_code = text.len() >= 4
        && text.as_bytes()[..3].iter().all(u8::is_ascii_digit)
        && text.as_bytes()[3] == b' ';
    if has_code {
        return text;
    }
    let status = status_code(status);
    let code = if status.starts_with('4') { 451 } else { 550 };
    format!("{code} {status} {text}")
}

/// One line of at most ~900 bytes: control characters become spaces, runs of spaces
/// collapse, and without SMTPUTF8 non-ASCII becomes `?`.
pub fn one_line(s: &str, utf8: bool) -> String {
    let mut out = String::with_capacity(s.len().min(900));
    let mut space = false;
    for c in s.chars() {
        let c = if c.is_control() || c.is_whitespace() {
            ' '
        } else if !utf8 && !c.is_ascii() {
            '?'
        } else {
            c
        };
        if c == ' ' {
            if space || out.is_empty() {
                continue;
            }
            space = true;
        } else {
            space = false;
        }
        if out.len() + c.len_utf8() > 900 {
            break;
        }
        out.push(c);
    }
    out.trim_end().to_string()
}

/// RFC 2822 date of a Unix time, in the local time zone.
pub fn rfc2822_date(unix: i64) -> String {
    let ts = jiff::Timestamp::from_second(unix).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    let zoned = ts.to_zoned(jiff::tz::TimeZone::system());
    jiff::fmt::rfc2822::to_string(&zoned)
        .unwrap_or_else(|_| "Thu, 1 Jan 1970 00:00:00 +0000".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn original() -> Envelope {
        Envelope {
            id: "ORIG1".into(),
            mail_from: "alice@example.org".into(),
            rcpts: vec!["bob@example.net".into()],
            client: ClientInfo::default(),
            listener: "smtp".into(),
            received_at: 1_700_000_000,
            body: Body::SevenBit,
            smtputf8: false,
            size: 10,
            sha256: String::new(),
        }
    }

    #[test]
    fn dsn_has_the_three_parts() {
        let failures = vec![FailedRcpt {
            rcpt: "bob@example.net".into(),
            sink: "relay".into(),
            status: "5.1.1".into(),
            message: "mailbox\r\nunknown".into(),
        }];
        let headers = b"Subject: hi\r\nFrom: alice@example.org\r\n";
        let dsn = build(
            "mx.example.org",
            &original(),
            &failures,
            headers,
            "DSN1",
            1_700_000_100,
        );
        let text = String::from_utf8(dsn).unwrap();
        assert!(text.starts_with("From: MAILER-DAEMON@mx.example.org"));
        assert!(text.contains("To: <alice@example.org>\r\n"));
        assert!(text.contains("Message-ID: <ORIG1.dsn@mx.example.org>\r\n"));
        assert!(text.contains("Auto-Submitted: auto-replied\r\n"));
        assert!(text.contains("report-type=delivery-status"));
        assert!(text.contains("Content-Type: message/delivery-status\r\n"));
        assert!(text.contains("Reporting-MTA: dns; mx.example.org\r\n"));
        assert!(text.contains("X-Mailchute-Queue-ID: ORIG1\r\n"));
        assert!(text.contains(
            "Final-Recipient: rfc822; bob@example.net\r\nAction: failed\r\nStatus: 5.1.1\r\n"
        ));
        assert!(text.contains("Diagnostic-Code: smtp; 550 5.1.1 mailbox unknown\r\n"));
        assert!(text.contains("Content-Type: text/rfc822-headers\r\n"));
        assert!(text.contains("Subject: hi\r\nFrom: alice@example.org\r\n"));
        assert!(text.ends_with("--=_mailchute-dsn-DSN1--\r\n"));
        assert!(!text.contains("\n\n"), "bare LF line");
    }

    #[test]
    fn eight_bit_headers_are_declared_and_the_dsn_has_a_null_sender() {
        let failures = vec![FailedRcpt {
            rcpt: "bob@example.net".into(),
            sink: "s".into(),
            status: "4.4.7".into(),
            message: "delivery time expired".into(),
        }];
        let headers = "Subject: caf\u{e9}\r\n".as_bytes();
        let dsn = build("h", &original(), &failures, headers, "D", 0);
        let text = String::from_utf8(dsn.clone()).unwrap();
        assert!(text.contains("Content-Transfer-Encoding: 8bit\r\n\r\nSubject: caf\u{e9}\r\n"));
        assert!(text.contains("Diagnostic-Code: smtp; 451 4.4.7 delivery time expired\r\n"));
        let env = envelope(&original(), "D", dsn.len() as u64, !dsn.is_ascii(), 5);
        assert_eq!(env.mail_from, "");
        assert_eq!(env.rcpts, vec!["alice@example.org".to_string()]);
        assert_eq!(env.body, Body::EightBitMime);
        assert_eq!(env.size, dsn.len() as u64);
    }

    #[test]
    fn headers_stop_at_the_empty_line_and_limit() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.eml");
        std::fs::write(&p, b"A: 1\nB: 2\r\n\r\nbody\r\n").unwrap();
        assert_eq!(read_headers(&p, 1000).unwrap(), b"A: 1\r\nB: 2\r\n");
        assert_eq!(read_headers(&p, 7).unwrap(), b"A: 1\r\n");
    }

    #[test]
    fn one_line_sanitises() {
        assert_eq!(one_line("a\r\n\tb  c é", false), "a b c ?");
        assert_eq!(one_line("é", true), "é");
        assert_eq!(status_code("bogus"), "5.0.0");
        assert_eq!(status_code("4.4.7"), "4.4.7");
    }
}
