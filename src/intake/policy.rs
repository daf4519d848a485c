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
        if let Some(re) = self.recipient_deny
            && re.is_match(to)
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

fn refusal(code: u16, status: &str, text: String) -> Answer {
    Answer {
        code,
        status: status.into(),
        text,
    }
}
