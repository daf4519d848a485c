//! The outcome vocabulary every layer shares, and its two mechanical mappings
//! (DESIGN.md "One error model, every protocol"):
//!
//! | outcome   | SMTP / LMTP reply          | `deliver` (Postfix pipe)              |
//! |-----------|----------------------------|---------------------------------------|
//! | delivered | 250 2.0.0                  | exit 0                                |
//! | deferred  | 451 4.x.x                  | `4.x.x text` first, exit 75           |
//! | rejected  | 550 / 552 / 554 5.x.x      | `5.x.x text` first, exit 67/65/69/77  |
//!
//! Sinks and filters decide the severity and the RFC 3463 status; the ingresses only map.

use std::future::Future;
use std::pin::Pin;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a sink achieved for one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    /// Human-readable detail for the log: file written, upstream reply, ...
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Severity {
    /// Retry later: network, timeout, disk full, upstream 4xx, config the operator can fix.
    Temporary,
    /// Do not retry: unknown mailbox, policy, content refused, upstream 5xx.
    Permanent,
}

/// A failed delivery, with the RFC 3463 enhanced status code that the ingress reports.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status} {message}")]
pub struct SinkError {
    pub severity: Severity,
    /// Enhanced status code, e.g. "4.3.0" or "5.1.1"; its class agrees with `severity`.
    pub status: String,
    pub message: String,
}

impl SinkError {
    pub fn temporary(status: &str, message: impl Into<String>) -> Self {
        SinkError {
            severity: Severity::Temporary,
            status: status.to_string(),
            message: message.into(),
        }
    }

    pub fn permanent(status: &str, message: impl Into<String>) -> Self {
        SinkError {
            severity: Severity::Permanent,
            status: status.to_string(),
            message: message.into(),
        }
    }

    pub fn is_temporary(&self) -> bool {
        self.severity == Severity::Temporary
    }

    /// Maps a local I/O error: everything is temporary (disk full, permissions the operator
    /// can fix) except nothing — a local filesystem never says "this mailbox does not exist"
    /// in a way that will not change, so we never bounce on it.
    pub fn from_io(context: impl std::fmt::Display, err: &std::io::Error) -> Self {
        SinkError::temporary(io_status(err), format!("{context}: {err}"))
    }
}

/// Whether an I/O error means the filesystem (or the user's quota) is full.
pub fn is_disk_full(e: &std::io::Error) -> bool {
    // The kind survives re-wrapping with context where the OS error number does not.
    matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
        || matches!(
            e.kind(),
            std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
        )
}

/// The status of a local problem: 4.3.1 "mail system full" when the disk is, else 4.3.0.
pub fn local_status(disk_full: bool) -> &'static str {
    if disk_full { "4.3.1" } else { "4.3.0" }
}

/// [`local_status`] of an I/O error.
pub fn io_status(e: &std::io::Error) -> &'static str {
    local_status(is_disk_full(e))
}

/// One result per recipient of the delivery, in the order of the delivery's recipients.
pub type RcptResults = Vec<Result<Delivered, SinkError>>;

/// The same result for every recipient.
pub fn same_for_all(n: usize, result: Result<Delivered, SinkError>) -> RcptResults {
    vec![result; n]
}

/// One SMTP/LMTP answer before it becomes protocol bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub code: u16,
    /// RFC 3463 enhanced status code, e.g. "2.0.0".
    pub status: String,
    pub text: String,
}

impl Answer {
    pub fn ok(text: impl Into<String>) -> Self {
        Answer {
            code: 250,
            status: "2.0.0".into(),
            text: text.into(),
        }
    }

    /// The reply for a failure: 451 for a deferral; for a rejection 552 when the status
    /// says "too big / mailbox full" (RFC 5321 4.2.2, RFC 3463 X.2.2, X.2.3, X.3.4), 554
    /// when it refuses the content (X.6.x media, X.7.1 policy, X.7.7 integrity), else 550.
    pub fn from_error(e: &SinkError) -> Self {
        Answer {
            code: smtp_code(e),
            status: status_of_class(e),
            text: one_line(&e.message),
        }
    }

    /// An answer from a result: 250 with `ok_text`, or the error's reply.
    pub fn from_result(r: &Result<Delivered, SinkError>, ok_text: &str) -> Self {
        match r {
            Ok(_) => Answer::ok(ok_text),
            Err(e) => Answer::from_error(e),
        }
    }
}

fn smtp_code(e: &SinkError) -> u16 {
    if e.is_temporary() {
        return 451;
    }
    match status_parts(&e.status) {
        Some((_, 2, 2)) | Some((_, 2, 3)) | Some((_, 3, 4)) => 552,
        // After DATA a policy refusal of the content (X.7.1: SES's MessageRejected, a
        // virus or spam verdict) is the whole transaction failing, as Postfix and content
        // filters answer it.
        Some((_, 6, _)) | Some((_, 7, 1)) | Some((_, 7, 7)) => 554,
        _ => 550,
    }
}

/// The status as given when its class agrees with the severity; a sink that said "5.x.x"
/// for a temporary failure (or the reverse) gets the generic code of the right class, so
/// the enhanced code never contradicts the reply code.
fn status_of_class(e: &SinkError) -> String {
    let class = if e.is_temporary() { 4 } else { 5 };
    match status_parts(&e.status) {
        Some((c, _, _)) if c == class => e.status.clone(),
        _ => format!("{class}.0.0"),
    }
}

fn status_parts(status: &str) -> Option<(u8, u16, u16)> {
    let mut it = status.split('.');
    let class = it.next()?.parse().ok()?;
    let subject = it.next()?.parse().ok()?;
    let detail = it.next()?.parse().ok()?;
    if it.next().is_some() {
        return None;
    }
    Some((class, subject, detail))
}

/// sysexits.h codes `deliver` and `sendmail` answer with (Postfix `pipe(8)` retries only
/// on 75 and 71; every other non-zero status bounces).
pub mod sysexits {
    pub const OK: u8 = 0;
    pub const EX_USAGE: u8 = 64;
    pub const EX_DATAERR: u8 = 65;
    pub const EX_NOINPUT: u8 = 66;
    pub const EX_NOUSER: u8 = 67;
    pub const EX_UNAVAILABLE: u8 = 69;
    pub const EX_SOFTWARE: u8 = 70;
    pub const EX_OSERR: u8 = 71;
    pub const EX_TEMPFAIL: u8 = 75;
    pub const EX_NOPERM: u8 = 77;
    pub const EX_CONFIG: u8 = 78;
}

/// What a command-line ingress (`deliver`, `sendmail`) ends with: an exit status and, for
/// a failure, the RFC 3463 line Postfix reads first on the command's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exit {
    pub code: u8,
    /// `4.x.x text` / `5.x.x text`; `None` on success.
    pub line: Option<String>,
}

impl Exit {
    /// The exit for one outcome: 0; 75 for a deferral; for a rejection 67 (EX_NOUSER) for
    /// an address problem (X.1.x), 65 (EX_DATAERR) for the content (X.3.4 too big, X.6.x
    /// media), 77 (EX_NOPERM) for policy (X.7.x), else 69 (EX_UNAVAILABLE).
    pub fn from_result(r: &Result<Delivered, SinkError>) -> Exit {
        let Err(e) = r else {
            return Exit {
                code: sysexits::OK,
                line: None,
            };
        };
        let code = if e.is_temporary() {
            sysexits::EX_TEMPFAIL
        } else {
            match status_parts(&e.status) {
                Some((_, 1, _)) => sysexits::EX_NOUSER,
                Some((_, 3, 4)) | Some((_, 6, _)) => sysexits::EX_DATAERR,
                Some((_, 7, _)) => sysexits::EX_NOPERM,
                _ => sysexits::EX_UNAVAILABLE,
            }
        };
        Exit {
            code,
            line: Some(format!("{} {}", status_of_class(e), one_line(&e.message))),
        }
    }

    /// One exit for several recipients' outcomes (one `deliver` run covers them all): any
    /// deferral → 75, so Postfix retries (the sinks recognise what they already have);
    /// else the first rejection; else 0.
    pub fn combine(results: &[Result<Delivered, SinkError>]) -> Exit {
        let first_err = |temporary: bool| {
            results
                .iter()
                .find(|r| matches!(r, Err(e) if e.is_temporary() == temporary))
        };
        match first_err(true).or_else(|| first_err(false)) {
            Some(r) => Exit::from_result(r),
            None => Exit::from_result(&Ok(Delivered {
                detail: String::new(),
            })),
        }
    }
}

/// Text fit for one protocol line: control characters become spaces, at most 400 chars.
pub fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(400)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok() -> Result<Delivered, SinkError> {
        Ok(Delivered { detail: "x".into() })
    }
    fn temp(status: &str) -> Result<Delivered, SinkError> {
        Err(SinkError::temporary(status, "later\r\nplease"))
    }
    fn perm(status: &str) -> Result<Delivered, SinkError> {
        Err(SinkError::permanent(status, "no"))
    }

    /// DESIGN.md's table, SMTP/LMTP column: delivered 250 2.0.0, deferred 451 4.x.x,
    /// rejected 550/552/554 5.x.x.
    #[test]
    fn smtp_column_of_the_error_model() {
        let a = Answer::from_result(&ok(), "Ok");
        assert_eq!((a.code, a.status.as_str()), (250, "2.0.0"));
        for status in ["4.3.0", "4.3.1", "4.4.1", "4.7.0"] {
            let a = Answer::from_result(&temp(status), "Ok");
            assert_eq!((a.code, a.status.as_str()), (451, status));
            assert_eq!(a.text, "later  please", "one line");
        }
        for (status, code) in [
            ("5.1.1", 550),
            ("5.7.1", 554),
            ("5.3.4", 552),
            ("5.2.2", 552),
            ("5.2.3", 552),
            ("5.6.0", 554),
            ("5.7.7", 554),
            ("5.0.0", 550),
        ] {
            let a = Answer::from_result(&perm(status), "Ok");
            assert_eq!((a.code, a.status.as_str()), (code, status), "{status}");
        }
        // A status of the wrong class never contradicts the reply code.
        assert_eq!(Answer::from_result(&temp("5.1.1"), "").status, "4.0.0");
        assert_eq!(Answer::from_result(&perm("4.2.0"), "").status, "5.0.0");
        assert_eq!(Answer::from_result(&perm("junk"), "").status, "5.0.0");
    }

    /// DESIGN.md's table, `deliver` column: 0; `4.x.x text` + 75; `5.x.x text` + 67/65/69/77.
    #[test]
    fn sysexits_column_of_the_error_model() {
        assert_eq!(
            Exit::from_result(&ok()),
            Exit {
                code: 0,
                line: None
            }
        );
        let e = Exit::from_result(&temp("4.3.1"));
        assert_eq!(e.code, 75);
        assert_eq!(e.line.as_deref(), Some("4.3.1 later  please"));
        for (status, code) in [
            ("5.1.1", 67),
            ("5.1.3", 67),
            ("5.3.4", 65),
            ("5.6.0", 65),
            ("5.7.1", 77),
            ("5.2.2", 69),
            ("5.4.4", 69),
        ] {
            let e = Exit::from_result(&perm(status));
            assert_eq!(e.code, code, "{status}");
            assert_eq!(e.line, Some(format!("{status} no")));
        }
        // Only 75 and 71 make Postfix retry: a deferral must never map to anything else.
        assert_eq!(Exit::from_result(&temp("junk")).code, sysexits::EX_TEMPFAIL);
    }

    #[test]
    fn one_exit_for_several_recipients_prefers_a_retry() {
        assert_eq!(Exit::combine(&[ok(), ok()]).code, 0);
        assert_eq!(
            Exit::combine(&[ok(), perm("5.1.1"), temp("4.2.0")]).code,
            75
        );
        assert_eq!(Exit::combine(&[ok(), perm("5.7.1")]).code, 77);
        assert_eq!(Exit::combine(&[]).code, 0);
    }
}
