//! End of DATA: turn a received message into durable deliveries and the client's answer.
//!
//! `queued`: spool durably, answer 250, let the background queue deliver.
//! `sync`: run the sinks now and answer with their outcome; whatever some sinks took and
//! others deferred goes to the spool and the client still gets 250, so it never resends
//! to sinks that already have the message.

use crate::config::Mode;
use crate::config::QueueConfig;
use crate::envelope::Envelope;
use crate::pipeline::Pipeline;
use crate::sinks::{RcptResults, SinkError};
use crate::spool::queue::{Deliverer, Queue, backoff_ms};
use crate::spool::store::{FailedRcpt, Pending, QueueEntry, Spool, SpooledMessage};
use std::collections::HashMap;

/// One final answer, before it becomes protocol bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub code: u16,
    pub status: String,
    pub text: String,
}

impl Answer {
    fn ok(text: String) -> Self {
        Answer {
            code: 250,
            status: "2.0.0".into(),
            text,
        }
    }

    fn from_error(e: &SinkError) -> Self {
        let code = if e.is_temporary() { 451 } else { 550 };
        Answer {
            code,
            status: e.status.clone(),
            text: one_line(&e.message),
        }
    }

    /// The client hears only that it should retry: the error names our spool's paths,
    /// which are the operator's business (they get it in the transaction line).
    fn spool_failed(e: &crate::spool::SpoolError) -> Self {
        let status = if e.is_disk_full() { "4.3.1" } else { "4.3.0" };
        Answer {
            code: 451,
            status: status.into(),
            text: "Temporary local problem, try again later".into(),
        }
    }
}

/// What happened, for the client and the transaction log.
pub struct Completion {
    /// One answer for SMTP; one per recipient (in envelope order) for LMTP.
    pub answers: Vec<Answer>,
    pub routes: String,
    pub outcome: String,
    pub error: Option<String>,
}

pub struct Intake<'a> {
    pub pipeline: &'a Pipeline,
    pub spool: &'a Spool,
    pub queue: &'a Queue,
    pub mode: Mode,
    pub lmtp: bool,
    pub dsn: bool,
    pub queue_config: &'a QueueConfig,
}

impl Intake<'_> {
    pub async fn complete(&self, envelope: Envelope, msg: SpooledMessage) -> Completion {
        let units = match self.pipeline.plan(&envelope) {
            Ok(u) => u,
            Err(e) => {
                // Only possible if a reload removed a route between RCPT and end of DATA.
                msg.discard();
                let a = Answer {
                    code: 451,
                    status: "4.3.5".into(),
                    text: one_line(&e),
                };
                return self
                    .uniform(&envelope, a, String::new(), Some(e))
                    .with_outcome("not routed");
            }
        };
        let routes = route_list(&units);
        match self.mode {
            Mode::Sync => self.deliver_now(envelope, msg, units, routes).await,
            _ => self.enqueue(envelope, msg, units, routes).await,
        }
    }

    async fn enqueue(
        &self,
        envelope: Envelope,
        msg: SpooledMessage,
        units: Vec<Pending>,
        routes: String,
    ) -> Completion {
        let id = envelope.id.clone();
        let entry = self.entry(envelope, units, Vec::new());
        match self.spool.enqueue(msg, &entry).await {
            Ok(()) => {
                let envelope = entry.envelope.clone();
                self.queue.submit(entry);
                self.uniform(
                    &envelope,
                    Answer::ok(format!("Ok: queued as {id}")),
                    routes,
                    None,
                )
                .with_outcome("queued")
            }
            Err(e) => {
                let envelope = entry.envelope;
                self.uniform(
                    &envelope,
                    Answer::spool_failed(&e),
                    routes,
                    Some(e.to_string()),
                )
                .with_outcome("spool failed")
            }
        }
    }

    async fn deliver_now(
        &self,
        envelope: Envelope,
        msg: SpooledMessage,
        units: Vec<Pending>,
        routes: String,
    ) -> Completion {
        let results = self.pipeline.attempt(&envelope, &msg.path, &units).await;
        let mut outcome = describe_outcome(&units, &results);
        let mut summary = Summary::new(&envelope.rcpts, &units, &results);
        let id = envelope.id.clone();

        let mut answers: Vec<Answer> = if self.lmtp {
            // Per recipient: what this client is told decides what we keep for retries.
            let answers: Vec<Answer> = summary.per_rcpt.iter().map(|s| s.answer(&id)).collect();
            for (i, a) in answers.iter().enumerate() {
                if a.code != 250 {
                    summary.forget(&envelope.rcpts[i]);
                }
            }
            answers
        } else {
            let a = summary.overall(&id);
            if a.code != 250 {
                summary.retry.clear();
                summary.failed.clear();
            }
            vec![a]
        };

        let mut error = None;
        if summary.retry.is_empty() && summary.failed.is_empty() {
            msg.discard();
        } else {
            // Some sinks have it, others must get it later (or the sender must hear of a
            // rejection): the spool takes over, durably, before we say 250.
            let retry = std::mem::take(&mut summary.retry);
            let failed = std::mem::take(&mut summary.failed);
            let mut entry = self.entry(envelope, retry, failed);
            // The sinks just failed: the first retry waits like any other.
            entry.attempts = 1;
            // With only rejections left, the DSN (or dead letter) is due now.
            if !entry.pending.is_empty() {
                entry.next_attempt = crate::spool::store::now_millis()
                    .saturating_add(backoff_ms(self.queue_config, 1));
            }
            match self.spool.enqueue(msg, &entry).await {
                Ok(()) => self.queue.submit(entry),
                Err(e) => {
                    // Saying 451 may duplicate into the sinks that took it; saying 250
                    // could lose it. Duplicates win.
                    error = Some(e.to_string());
                    outcome.push_str("; spool failed");
                    for a in answers.iter_mut().filter(|a| a.code == 250) {
                        *a = Answer::spool_failed(&e);
                    }
                }
            }
        }
        Completion {
            answers,
            routes,
            outcome,
            error,
        }
    }

    fn entry(
        &self,
        envelope: Envelope,
        pending: Vec<Pending>,
        failed: Vec<FailedRcpt>,
    ) -> QueueEntry {
        QueueEntry {
            size: envelope.size,
            envelope,
            pending,
            failed,
            attempts: 0,
            next_attempt: 0,
            last_error: None,
            dsn: self.dsn,
        }
    }

    fn uniform(
        &self,
        envelope: &Envelope,
        a: Answer,
        routes: String,
        error: Option<String>,
    ) -> Completion {
        let n = if self.lmtp { envelope.rcpts.len() } else { 1 };
        Completion {
            answers: vec![a; n],
            routes,
            outcome: String::new(),
            error,
        }
    }
}

impl Completion {
    fn with_outcome(mut self, o: &str) -> Self {
        self.outcome = o.to_string();
        self
    }
}

#[derive(Debug, Default, Clone)]
struct RcptState {
    delivered: usize,
    deferred: Option<SinkError>,
    rejected: Option<SinkError>,
}

impl RcptState {
    /// Delivered anywhere → 250 (the rest is the spool's job); else a deferral → 451 so the
    /// client retries; else the rejection.
    fn answer(&self, id: &str) -> Answer {
        if self.delivered > 0 {
            return Answer::ok(format!("Ok: delivered as {id}"));
        }
        match (&self.deferred, &self.rejected) {
            (Some(d), None) => Answer::from_error(d),
            (None, Some(r)) => Answer::from_error(r),
            // Some sinks refused for good, others only for now: retry the latter ourselves
            // and report the former by DSN, rather than have the client loop on 451.
            (Some(_), Some(_)) => Answer::ok(format!("Ok: queued as {id}")),
            (None, None) => Answer::ok(format!("Ok: delivered as {id}")),
        }
    }
}

/// Per-recipient outcome of one synchronous attempt.
struct Summary {
    per_rcpt: Vec<RcptState>,
    /// Deferred (unit, recipients) left for the queue.
    retry: Vec<Pending>,
    failed: Vec<FailedRcpt>,
}

impl Summary {
    fn new(rcpts: &[String], units: &[Pending], results: &[RcptResults]) -> Summary {
        let mut per_rcpt = vec![RcptState::default(); rcpts.len()];
        // An address's outcome is kept at its first index in the envelope.
        let mut first: HashMap<&str, usize> = HashMap::new();
        for (i, r) in rcpts.iter().enumerate() {
            first.entry(r.as_str()).or_insert(i);
        }
        let mut retry = Vec::new();
        let mut failed = Vec::new();
        for (unit, results) in units.iter().zip(results) {
            let mut left = Vec::new();
            let mut last_error = None;
            for (rcpt, result) in unit.rcpts.iter().zip(results) {
                let Some(state) = first.get(rcpt.as_str()).map(|&i| &mut per_rcpt[i]) else {
                    continue;
                };
                match result {
                    Ok(_) => state.delivered += 1,
                    Err(e) if e.is_temporary() => {
                        state.deferred.get_or_insert_with(|| e.clone());
                        last_error = Some(e.to_string());
                        left.push(rcpt.clone());
                    }
                    Err(e) => {
                        state.rejected.get_or_insert_with(|| e.clone());
                        failed.push(FailedRcpt {
                            rcpt: rcpt.clone(),
                            sink: unit.sink.clone(),
                            status: e.status.clone(),
                            message: e.message.clone(),
                        });
                    }
                }
            }
            if !left.is_empty() {
                retry.push(Pending {
                    rcpts: left,
                    last_error,
                    // A sink may have written before it failed (a Maildir whose final
                    // directory sync failed): the retry must look for that copy.
                    attempted: true,
                    ..unit.clone()
                });
            }
        }
        // An address listed twice (the SMTP session lists each once, but an envelope may
        // come from elsewhere) has one outcome: a later copy must never read as a default
        // "delivered" while its first copy failed.
        for (i, r) in rcpts.iter().enumerate() {
            if let Some(&f) = first.get(r.as_str())
                && f != i
            {
                per_rcpt[i] = per_rcpt[f].clone();
            }
        }
        Summary {
            per_rcpt,
            retry,
            failed,
        }
    }

    /// The single SMTP answer for all recipients.
    fn overall(&self, id: &str) -> Answer {
        if self.per_rcpt.iter().any(|s| s.delivered > 0) {
            return Answer::ok(format!("Ok: delivered as {id}"));
        }
        let deferred = self.per_rcpt.iter().find_map(|s| s.deferred.as_ref());
        let rejected = self.per_rcpt.iter().find_map(|s| s.rejected.as_ref());
        match (deferred, rejected) {
            (Some(d), None) => Answer::from_error(d),
            (None, Some(r)) => Answer::from_error(r),
            (Some(_), Some(_)) => Answer::ok(format!("Ok: queued as {id}")),
            (None, None) => Answer::ok(format!("Ok: delivered as {id}")),
        }
    }

    /// The client was told to retry `rcpt` (or got its rejection): we keep nothing for it.
    fn forget(&mut self, rcpt: &str) {
        for unit in &mut self.retry {
            unit.rcpts.retain(|r| r != rcpt);
        }
        self.retry.retain(|u| !u.rcpts.is_empty());
        self.failed.retain(|f| f.rcpt != rcpt);
    }
}

fn route_list(units: &[Pending]) -> String {
    let mut names: Vec<&str> = Vec::new();
    for u in units {
        if !names.contains(&u.route.as_str()) {
            names.push(&u.route);
        }
    }
    names.join(",")
}

fn describe_outcome(units: &[Pending], results: &[RcptResults]) -> String {
    let mut parts = Vec::new();
    for (unit, results) in units.iter().zip(results) {
        let ok = results.iter().filter(|r| r.is_ok()).count();
        let mut s = format!("{}={}/{} delivered", unit.sink, ok, results.len());
        if let Some(Err(e)) = results.iter().find(|r| r.is_err()) {
            let kind = if e.is_temporary() {
                "deferred"
            } else {
                "rejected"
            };
            s.push_str(&format!(" ({kind}: {e})"));
        }
        parts.push(s);
    }
    parts.join("; ")
}

fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(400)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sinks::Delivered;

    fn unit(sink: &str, rcpts: &[&str]) -> Pending {
        Pending {
            route: "r".into(),
            sink: sink.into(),
            rcpts: rcpts.iter().map(|s| s.to_string()).collect(),
            unit_id: format!("X.{sink}"),
            last_error: None,
            attempted: false,
        }
    }

    fn ok() -> Result<Delivered, SinkError> {
        Ok(Delivered {
            detail: String::new(),
        })
    }

    #[test]
    fn partial_fan_out_is_250_and_keeps_the_deferred_unit() {
        let rcpts = vec!["a@x".to_string()];
        let units = vec![unit("box", &["a@x"]), unit("relay", &["a@x"])];
        let results = vec![vec![ok()], vec![Err(SinkError::temporary("4.4.1", "down"))]];
        let s = Summary::new(&rcpts, &units, &results);
        assert_eq!(s.overall("ID").code, 250);
        assert_eq!(s.retry.len(), 1);
        assert_eq!(s.retry[0].sink, "relay");
        assert!(s.failed.is_empty());
    }

    #[test]
    fn all_deferred_is_451_all_rejected_is_550() {
        let rcpts = vec!["a@x".to_string()];
        let units = vec![unit("box", &["a@x"])];
        let t = Summary::new(
            &rcpts,
            &units,
            &[vec![Err(SinkError::temporary("4.3.1", "full"))]],
        );
        assert_eq!(t.overall("ID").code, 451);
        assert_eq!(t.overall("ID").status, "4.3.1");
        let p = Summary::new(
            &rcpts,
            &units,
            &[vec![Err(SinkError::permanent("5.1.1", "no such user"))]],
        );
        assert_eq!(p.overall("ID").code, 550);
    }

    #[test]
    fn a_repeated_address_shares_its_outcome() {
        let rcpts = vec!["d@x".to_string(), "e@x".to_string(), "d@x".to_string()];
        let units = vec![unit("box", &["d@x", "e@x", "d@x"])];
        let results = vec![vec![
            Err(SinkError::temporary("4.2.0", "down")),
            ok(),
            Err(SinkError::temporary("4.2.0", "down")),
        ]];
        let s = Summary::new(&rcpts, &units, &results);
        let codes: Vec<u16> = s.per_rcpt.iter().map(|r| r.answer("ID").code).collect();
        assert_eq!(codes, [451, 250, 451]);
    }

    #[test]
    fn lmtp_forgets_recipients_the_client_will_retry() {
        let rcpts = vec!["a@x".to_string(), "b@x".to_string()];
        let units = vec![unit("box", &["a@x", "b@x"])];
        let results = vec![vec![ok(), Err(SinkError::temporary("4.2.2", "quota"))]];
        let mut s = Summary::new(&rcpts, &units, &results);
        assert_eq!(s.per_rcpt[0].answer("ID").code, 250);
        assert_eq!(s.per_rcpt[1].answer("ID").code, 451);
        s.forget("b@x");
        assert!(s.retry.is_empty());
    }
}
