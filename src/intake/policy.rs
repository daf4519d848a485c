//! MAIL and RCPT policy, the same for every ingress: decided when the client asks, per
//! recipient, with a 5xx — never after DATA (DESIGN.md "One error model").

use crate::delivery::Answer;
use crate::pipeline::Pipeline;
use regex::Regex;

/// The rules one ingress applies; a listener's `sender_allow` / `recipient_deny`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Policy<'a> {
    /// Senders must match, else `550 5.7.1` at MAIL.
    pub sender_allow: Option<&'a Regex>,
    /// Recipients that match get `550 5.7.1` at RCPT; the others proceed.
    pub recipient_deny: Option<&'a Regex>,
}

impl Policy<'_> {
    pub fn check_sender(&self, from: &str) -> Result<(), Answer> {
        if leads_with_dash(from) {
            return Err(refusal(
                501,
                "5.1.7",
                format!("<{from}>: Bad sender address syntax (begins with '-')"),
            ));
        }
        if let Some(re) = self.sender_allow
            && !re.is_match(from)
        {
            return Err(refusal(
                550,
                "5.7.1",
                format!("<{from}>: Sender address not allowed"),
            ));
        }
        Ok(())
    }

    /// Policy, then routing: an address that matches no route, or that a sink of its route
    /// can never take (no valid mailbox path), is refused here and never accepted only to
    /// fail after DATA.
    pub fn check_rcpt(&self, pipeline: &Pipeline, to: &str) -> Result<(), Answer> {
        if leads_with_dash(to) {
            return Err(refusal(
                501,
                "5.1.3",
                format!("<{to}>: Bad recipient address syntax (begins with '-')"),
            ));
        }
        if let Some(re) = self.recipient_deny
            && denied(re, to)
        {
            return Err(refusal(
                550,
                "5.7.1",
                format!("<{to}>: Recipient address rejected by policy"),
            ));
        }
        if pipeline.route_of(to).is_none() {
            return Err(refusal(
                550,
                "5.1.1",
                format!("<{to}>: Recipient address rejected: no route for this address"),
            ));
        }
        pipeline
            .sinks_accept(to)
            .map_err(|e| Answer::from_error(&e))
    }
}

/// An address a command line would read as an option (`-bob` for `procmail -d {rcpt}`, a
/// mailbox path `mail/-bob`): refused as Postfix does (`allow_min_user = no`).
fn leads_with_dash(addr: &str) -> bool {
    addr.trim_start_matches('"').starts_with('-')
}

/// `to` matches the deny regex as the client wrote it or in its unquoted form:
/// `"bad"@example.org` is the mailbox `bad@example.org` (RFC 5321 4.1.2), and quoting
/// a local part that needs none must not get it past `^bad@`.
fn denied(re: &Regex, to: &str) -> bool {
    re.is_match(to) || unquoted(to).is_some_and(|plain| re.is_match(&plain))
}

/// `"local"@domain` as `local@domain` when the quotes hide nothing (no escapes, no
/// quotes inside).
fn unquoted(addr: &str) -> Option<String> {
    let (local, domain) = addr.strip_prefix('"')?.rsplit_once("\"@")?;
    if local.contains(['\\', '"']) {
        return None;
    }
    Some(format!("{local}@{domain}"))
}

fn refusal(code: u16, status: &str, text: String) -> Answer {
    Answer {
        code,
        status: status.into(),
        text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quoted_local_part_is_denied_as_the_plain_one() {
        let re = Regex::new("^bad@").unwrap();
        assert!(denied(&re, "bad@example.org"));
        assert!(denied(&re, "\"bad\"@example.org"));
        assert!(!denied(&re, "\"b\\ad\"@example.org"));
        assert!(!denied(&re, "good@example.org"));
        assert_eq!(unquoted("\"a b\"@x"), Some("a b@x".into()));
        assert_eq!(unquoted("a@x"), None);
    }

    #[test]
    fn a_sender_that_reads_as_an_option_is_refused() {
        let p = Policy::default();
        let r = p.check_sender("-root@x").unwrap_err();
        assert_eq!((r.code, r.status.as_str()), (501, "5.1.7"));
        assert!(p.check_sender("\"-x\"@y").is_err());
        assert!(p.check_sender("a-b@x").is_ok() && p.check_sender("").is_ok());
        assert!(leads_with_dash("-bob") && !leads_with_dash("bob-@x"));
    }
}
