//! End of DATA: turn a received message into durable deliveries and the answer per
//! recipient, after the routes' filters (DESIGN.md "Never lose a message", "Filters").
//!
//! `queued`: spool durably, answer 250, let the background queue deliver.
//! `sync`: run the sinks now and answer with their outcome; whatever some sinks took and
//! others deferred goes to the spool and the client still gets 250, so it never resends
//! to sinks that already have the message.
//! `direct` (`deliver`, proxy mode): run the sinks now and keep nothing: the upstream MTA's
//! queue is the durable copy, so anything short of delivered everywhere is answered as a
//! temporary failure and the upstream retries.

use super::stage::{self, Filtered, RouteOutcome};
use crate::config::QueueConfig;
use crate::delivery::{Answer, Delivered, RcptResults, SinkError};
use crate::envelope::Envelope;
use crate::pipeline::Pipeline;
use crate::spool::queue::{Deliverer, Queue, backoff_ms};
use crate::spool::store::{FailedRcpt, Pending, QueueEntry, Spool, SpooledMessage};
use std::collections::{HashMap, HashSet};

/// Where a message that is not delivered at once is kept.
#[derive(Clone, Copy)]
pub struct Durable<'a> {
    pub spool: &'a Spool,
    pub queue: &'a Queue,
    /// Retry schedule, for what a sync delivery leaves to the queue.
    pub retry: &'a QueueConfig,
}

#[derive(Clone, Copy)]
pub enum IntakeMode<'a> {
    Queued(Durable<'a>),
    Sync(Durable<'a>),
    Direct,
}

/// What happened, for the client and the transaction log.
pub struct Completion {
    /// One answer for SMTP; one per recipient (in envelope order) for LMTP.
    pub answers: Vec<Answer>,
    /// One outcome per recipient, in envelope order (what `deliver` maps to its exit).
    pub outcomes: RcptResults,
    pub routes: String,
    pub outcome: String,
    pub error: Option<String>,
}

pub struct Intake<'a> {
    pub pipeline: &'a Pipeline,
    pub mode: IntakeMode<'a>,
    /// Answer per recipient (LMTP) rather than once for the message.
    pub lmtp: bool,
    /// Tell the sender of recipients refused after DATA (and of deliveries that die).
    pub dsn: bool,
}

impl Intake<'_> {
    pub async fn complete(&self, envelope: Envelope, msg: SpooledMessage) -> Completion {
        let mut filtered = match stage::run(self.pipeline, &envelope, &msg.path).await {
            Ok(f) => f,
            Err(e) => {
                // An envelope whose recipients were not checked against this pipeline (a
                // session checks each RCPT against the same pipeline it completes with).
                msg.discard();
                let e = SinkError::temporary("4.3.5", e);
                return self
                    .uniform(&envelope, Err(e.clone()), String::new(), Some(e.message))
                    .with_outcome("not routed");
            }
        };
        let routes = route_list(&filtered);
        let trail = filter_trail(&filtered);
        // A filter that failed for now fails the whole SMTP message (the client's retry then
        // duplicates nothing); LMTP answers those recipients alone.
        if !self.lmtp
            && let Some(e) = filtered.routes.iter().find_map(|r| match &r.outcome {
                RouteOutcome::Deferred(e) => Some(e.clone()),
                _ => None,
            })
        {
            filtered.discard_bodies(&msg.path).await;
            msg.discard();
            let error = Some(e.to_string());
            return self
                .uniform(&envelope, Err(e), routes, error)
                .with_outcome(&format!("filter deferred; {trail}"));
        }
        let units = filtered.units();
        let units_empty = units.is_empty();
        filtered.keep_bodies_of(&msg.path, &units).await;
        let mut completion = match self.mode {
            IntakeMode::Queued(durable) => {
                self.enqueue(durable, envelope, msg, &filtered, units, routes)
                    .await
            }
            IntakeMode::Sync(durable) => {
                self.deliver_now(Some(durable), envelope, msg, &filtered, units, routes)
                    .await
            }
            IntakeMode::Direct => {
                self.deliver_now(None, envelope, msg, &filtered, units, routes)
                    .await
            }
        };
        if completion.outcome.is_empty() && units_empty {
            completion.outcome = "delivered nowhere".into();
        }
        if !trail.is_empty() {
            completion.outcome = format!("{}; {trail}", completion.outcome);
        }
        completion
    }

    async fn enqueue(
        &self,
        durable: Durable<'_>,
        envelope: Envelope,
        msg: SpooledMessage,
        filtered: &Filtered,
        units: Vec<Pending>,
        routes: String,
    ) -> Completion {
        let id = envelope.id.clone();
        let mut summary = Summary::new(&envelope.rcpts, filtered, &[], &[]);
        summary.mark_queued(&envelope.rcpts, filtered);
        let answers = self.answers(&summary, &id);
        let refused = answers.iter().all(|a| a.code != 250);
        let failed = self.filter_failures(&summary, &envelope, &answers);
        if refused || (units.is_empty() && failed.is_empty()) {
            // Refused, or accepted and delivered nowhere (discarded): nothing to keep.
            filtered.discard_bodies(&msg.path).await;
            msg.discard();
            let outcome = if refused { "refused" } else { "discarded" };
            return Completion {
                outcomes: summary.outcomes("discarded"),
                answers,
                routes,
                outcome: outcome.into(),
                error: None,
            };
        }
        let entry = self.entry(envelope, filtered, units, failed);
        let received_at = msg.path.clone();
        match durable.spool.enqueue(msg, &entry).await {
            Ok(()) => {
                durable.queue.submit(entry);
                Completion {
                    outcomes: summary.outcomes(&format!("queued as {id}")),
                    answers,
                    routes,
                    outcome: "queued".into(),
                    error: None,
                }
            }
            Err(e) => {
                let envelope = entry.envelope;
                // Wherever the failed enqueue left them.
                filtered.discard_bodies(&received_at).await;
                filtered
                    .discard_bodies(&durable.spool.message_path(&id))
                    .await;
                self.uniform(
                    &envelope,
                    Err(spool_failed(&e)),
                    routes,
                    Some(e.to_string()),
                )
                .with_outcome("spool failed")
            }
        }
    }

    async fn deliver_now(
        &self,
        durable: Option<Durable<'_>>,
        envelope: Envelope,
        msg: SpooledMessage,
        filtered: &Filtered,
        units: Vec<Pending>,
        routes: String,
    ) -> Completion {
        let mut units = units;
        if durable.is_none() {
            // The upstream MTA retries what we defer, with the same names: an earlier run
            // may have stored it, so the sinks look for that copy before writing one.
            units.iter_mut().for_each(|u| u.attempted = true);
        }
        let results = self.pipeline.attempt(&envelope, &msg.path, &units).await;
        let mut outcome = describe_outcome(&units, &results);
        let mut summary = Summary::new(&envelope.rcpts, filtered, &units, &results);
        let id = envelope.id.clone();
        if durable.is_none() {
            // Nothing of ours will retry: delivered only where every sink has it.
            summary.strict();
        }
        let answers = self.answers(&summary, &id);
        if self.lmtp {
            // Per recipient: what this client is told decides what we keep for retries.
            for (i, a) in answers.iter().enumerate() {
                if a.code != 250 {
                    summary.forget(&envelope.rcpts[i]);
                }
            }
        } else if answers.first().is_some_and(|a| a.code != 250) {
            summary.retry.clear();
            summary.failed.clear();
        }
        let mut failed = std::mem::take(&mut summary.failed);
        failed.extend(self.filter_failures(&summary, &envelope, &answers));
        let retry = std::mem::take(&mut summary.retry);

        let mut answers = answers;
        let mut outcomes = summary.outcomes(&format!("delivered as {id}"));
        let rcpts = envelope.rcpts.clone();
        let mut error = None;
        match durable {
            Some(durable) if !retry.is_empty() || !failed.is_empty() => {
                // Some sinks have it, others must get it later (or the sender must hear of
                // a rejection): the spool takes over, durably, before we say 250.
                let mut entry = self.entry(envelope, filtered, retry, failed);
                // The sinks just failed: the first retry waits like any other.
                entry.attempts = 1;
                // With only rejections left, the DSN (or dead letter) is due now.
                if !entry.pending.is_empty() {
                    entry.next_attempt = crate::spool::store::now_millis()
                        .saturating_add(backoff_ms(durable.retry, 1));
                }
                let path = msg.path.clone();
                // Whom the entry is for: under LMTP only they are told to retry if it cannot
                // be kept (the others have the message in every sink).
                let kept_for: HashSet<String> = entry
                    .pending_rcpts()
                    .map(str::to_string)
                    .chain(entry.failed.iter().map(|f| f.rcpt.clone()))
                    .collect();
                // Bodies only sinks that already have them needed.
                filtered.discard_bodies_except(&path, &entry.bodies).await;
                match durable.spool.enqueue(msg, &entry).await {
                    Ok(()) => durable.queue.submit(entry),
                    Err(e) => {
                        // Saying 451 may duplicate into the sinks that took it; saying 250
                        // could lose it. Duplicates win.
                        filtered.discard_bodies(&path).await;
                        filtered
                            .discard_bodies(&durable.spool.message_path(&id))
                            .await;
                        error = Some(e.to_string());
                        outcome.push_str("; spool failed");
                        let failure = spool_failed(&e);
                        let affected = |i: usize| !self.lmtp || kept_for.contains(&rcpts[i]);
                        for (i, a) in answers.iter_mut().enumerate() {
                            if a.code == 250 && affected(i) {
                                *a = Answer::from_error(&failure);
                            }
                        }
                        for (i, o) in outcomes.iter_mut().enumerate() {
                            if o.is_ok() && kept_for.contains(&rcpts[i]) {
                                *o = Err(failure.clone());
                            }
                        }
                    }
                }
            }
            _ => {
                // Nothing of ours keeps it, so no DSN can come from here: each recipient
                // refused while the message was accepted for others is logged.
                for f in &failed {
                    tracing::info!(event = "refused", id = %envelope.id, from = %envelope.mail_from, rcpt = %f.rcpt, status = %f.status, error = %f.message, "recipient refused after the message was accepted for others (no DSN from this ingress)");
                }
                filtered.discard_bodies(&msg.path).await;
                msg.discard();
            }
        }
        Completion {
            answers,
            outcomes,
            routes,
            outcome,
            error,
        }
    }

    /// SMTP: one answer for the message; LMTP: one per recipient. An accepted recipient
    /// is "queued" when the spool still has work for it (on a queued listener, always: a
    /// client there is told nothing else, whatever the filters did), else "delivered".
    fn answers(&self, summary: &Summary, id: &str) -> Vec<Answer> {
        let queued = format!("Ok: queued as {id}");
        let delivered = format!("Ok: delivered as {id}");
        let always_queued = matches!(self.mode, IntakeMode::Queued(_));
        let text = |left: bool| {
            if left || always_queued {
                &queued
            } else {
                &delivered
            }
        };
        if self.lmtp {
            summary
                .per_rcpt
                .iter()
                .map(|s| s.answer(text(s.queued || s.deferred.is_some())))
                .collect()
        } else {
            let left = summary.per_rcpt.iter().any(|s| s.queued) || summary.any_left_for_later();
            vec![summary.overall(text(left))]
        }
    }

    /// Recipients a filter refused while the message was accepted for others: the sender
    /// hears of them by DSN where the listener sends DSNs; else they are logged as refused.
    fn filter_failures(
        &self,
        summary: &Summary,
        envelope: &Envelope,
        answers: &[Answer],
    ) -> Vec<FailedRcpt> {
        let accepted = answers.iter().any(|a| a.code == 250);
        if self.lmtp || !accepted {
            // LMTP told each client recipient its own answer; a refused message is the
            // client's to report.
            return Vec::new();
        }
        let mut failed = Vec::new();
        for (rcpt, e) in &summary.filter_rejected {
            if self.dsn && !envelope.mail_from.is_empty() {
                failed.push(FailedRcpt {
                    rcpt: rcpt.clone(),
                    sink: "filter".into(),
                    status: e.status.clone(),
                    message: e.message.clone(),
                });
            } else {
                tracing::info!(event = "refused", id = %envelope.id, from = %envelope.mail_from, rcpt = %rcpt, status = %e.status, error = %e.message, "recipient refused by a filter after the message was accepted for others (no DSN)");
            }
        }
        failed
    }

    fn entry(
        &self,
        envelope: Envelope,
        filtered: &Filtered,
        pending: Vec<Pending>,
        failed: Vec<FailedRcpt>,
    ) -> QueueEntry {
        let mut entry = QueueEntry::new(envelope, pending, self.dsn);
        entry.failed = failed;
        entry.bodies = filtered
            .bodies
            .iter()
            .filter(|b| {
                entry
                    .pending
                    .iter()
                    .any(|u| u.body.as_deref() == Some(&b.name))
            })
            .cloned()
            .collect();
        entry
    }

    fn uniform(
        &self,
        envelope: &Envelope,
        result: Result<Delivered, SinkError>,
        routes: String,
        error: Option<String>,
    ) -> Completion {
        let n = if self.lmtp { envelope.rcpts.len() } else { 1 };
        Completion {
            answers: vec![Answer::from_result(&result, "Ok"); n],
            outcomes: vec![result; envelope.rcpts.len()],
            routes,
            outcome: String::new(),
            error,
        }
    }
}

/// The client hears only that it should retry: the error names our spool's paths,
/// which are the operator's business (they get it in the transaction line).
fn spool_failed(e: &crate::spool::SpoolError) -> SinkError {
    SinkError::temporary(
        crate::delivery::local_status(e.is_disk_full()),
        "Temporary local problem, try again later",
    )
}

impl Completion {
    fn with_outcome(mut self, o: &str) -> Self {
        self.outcome = o.to_string();
        self
    }
}

#[derive(Debug, Default, Clone)]
struct RcptState {
    /// Sinks that have it (or a filter discarded it: nothing more to do).
    delivered: usize,
    /// Handed to the queue whole (queued mode).
    queued: bool,
    deferred: Option<SinkError>,
    rejected: Option<SinkError>,
}

impl RcptState {
    /// Delivered anywhere or queued → accepted (the rest is the spool's job); else a
    /// deferral, so the client retries; else the rejection. Some sinks refused for good,
    /// others only for now: we retry the latter ourselves and report the former by DSN,
    /// rather than have the client loop on 451.
    fn result(&self) -> Result<(), &SinkError> {
        if self.delivered > 0 || self.queued {
            return Ok(());
        }
        match (&self.deferred, &self.rejected) {
            (Some(d), None) => Err(d),
            (None, Some(r)) => Err(r),
            _ => Ok(()),
        }
    }

    fn answer(&self, ok_text: &str) -> Answer {
        match self.result() {
            Ok(()) => Answer::ok(ok_text),
            Err(e) => Answer::from_error(e),
        }
    }
}

/// Per-recipient outcome of the filters and of one synchronous attempt (or of queueing).
struct Summary {
    per_rcpt: Vec<RcptState>,
    /// Deferred (unit, recipients) left for the queue.
    retry: Vec<Pending>,
    /// Recipients sinks refused for good, for the DSN.
    failed: Vec<FailedRcpt>,
    /// Recipients filters refused, with why.
    filter_rejected: Vec<(String, SinkError)>,
    /// Nothing of ours retries (see [`Summary::strict`]).
    strict: bool,
}

impl Summary {
    /// `results` aligned with `units`; empty when the units go to the queue untried.
    fn new(
        rcpts: &[String],
        filtered: &Filtered,
        units: &[Pending],
        results: &[RcptResults],
    ) -> Summary {
        let mut per_rcpt = vec![RcptState::default(); rcpts.len()];
        // An address's outcome is kept at its first index in the envelope.
        let mut first: HashMap<&str, usize> = HashMap::new();
        for (i, r) in rcpts.iter().enumerate() {
            first.entry(r.as_str()).or_insert(i);
        }
        let mut filter_rejected = Vec::new();
        for route in &filtered.routes {
            for rcpt in &route.rcpts {
                let Some(state) = first.get(rcpt.as_str()).map(|&i| &mut per_rcpt[i]) else {
                    continue;
                };
                match &route.outcome {
                    RouteOutcome::Deliver(_) => {}
                    RouteOutcome::Rejected(e) => {
                        state.rejected = Some(e.clone());
                        filter_rejected.push((rcpt.clone(), e.clone()));
                    }
                    RouteOutcome::Deferred(e) => state.deferred = Some(e.clone()),
                    RouteOutcome::Discarded => state.delivered += 1,
                }
            }
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
            filter_rejected,
            strict: false,
        }
    }

    /// The recipients the filters left to sinks go to the queue whole (queued mode).
    fn mark_queued(&mut self, rcpts: &[String], filtered: &Filtered) {
        let queued: HashSet<&str> = filtered
            .routes
            .iter()
            .filter(|r| matches!(r.outcome, RouteOutcome::Deliver(_)))
            .flat_map(|r| r.rcpts.iter().map(String::as_str))
            .collect();
        for (state, rcpt) in self.per_rcpt.iter_mut().zip(rcpts) {
            state.queued |= queued.contains(rcpt.as_str());
        }
    }

    /// Nothing of ours will retry (direct mode): a recipient is delivered only where no
    /// sink deferred it; otherwise the upstream must retry it, and its retry goes to every
    /// sink again (they recognise what they already have).
    fn strict(&mut self) {
        for state in &mut self.per_rcpt {
            if state.deferred.is_some() {
                state.delivered = 0;
                state.queued = false;
                state.rejected = None;
            }
        }
        self.retry.clear();
        self.strict = true;
    }

    /// The single SMTP answer for all recipients: accepted when any recipient is, else the
    /// first deferral (so the client retries), else the first rejection.
    /// Strict (nothing of ours retries), a deferral anywhere defers the message: the
    /// client's retry is the only one, and the sinks recognise what they already have.
    fn overall(&self, ok_text: &str) -> Answer {
        if self.strict
            && let Some(e) = self.per_rcpt.iter().find_map(|s| s.deferred.as_ref())
        {
            return Answer::from_error(e);
        }
        if self.per_rcpt.iter().any(|s| s.result().is_ok()) {
            return Answer::ok(ok_text);
        }
        let deferred = self.per_rcpt.iter().find_map(|s| s.deferred.as_ref());
        let rejected = self.per_rcpt.iter().find_map(|s| s.rejected.as_ref());
        match deferred.or(rejected) {
            Some(e) => Answer::from_error(e),
            None => Answer::ok(ok_text),
        }
    }

    /// One result per recipient, for ingresses that map outcomes themselves.
    fn outcomes(&self, ok_detail: &str) -> RcptResults {
        self.per_rcpt
            .iter()
            .map(|s| match s.result() {
                Ok(()) => Ok(Delivered {
                    detail: ok_detail.to_string(),
                }),
                Err(e) => Err(e.clone()),
            })
            .collect()
    }

    /// Whether some sink deferred a recipient that is accepted: the answer says "queued".
    fn any_left_for_later(&self) -> bool {
        !self.retry.is_empty()
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

/// The routes the recipients ended on (after re-routes), in the order first seen.
fn route_list(filtered: &Filtered) -> String {
    let mut names: Vec<&str> = Vec::new();
    for r in &filtered.routes {
        if !names.contains(&r.route.as_str()) {
            names.push(&r.route);
        }
    }
    names.join(",")
}

/// What the filters did, per route, for the transaction line:
/// `filters: tagged[tag changed, strip-list pass]; other[tag changed]`; empty when no
/// route has filters.
fn filter_trail(filtered: &Filtered) -> String {
    let routes: Vec<String> = filtered
        .routes
        .iter()
        .filter(|r| !r.trail.is_empty())
        .map(|r| format!("{}[{}]", r.first_route, r.trail.join(", ")))
        .collect();
    if routes.is_empty() {
        String::new()
    } else {
        format!("filters: {}", routes.join("; "))
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::intake::stage::RouteResult;

    /// The filter stage's result when no route has filters: every recipient to its units.
    fn unfiltered(rcpts: &[String]) -> Filtered {
        Filtered {
            routes: vec![RouteResult {
                first_route: "r".into(),
                route: "r".into(),
                rcpts: rcpts.to_vec(),
                outcome: RouteOutcome::Deliver(Vec::new()),
                trail: Vec::new(),
            }],
            bodies: Vec::new(),
        }
    }

    fn unit(sink: &str, rcpts: &[&str]) -> Pending {
        Pending {
            route: "r".into(),
            sink: sink.into(),
            rcpts: rcpts.iter().map(|s| s.to_string()).collect(),
            unit_id: format!("X.{sink}"),
            last_error: None,
            attempted: false,
            body: None,
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
        let s = Summary::new(&rcpts, &unfiltered(&rcpts), &units, &results);
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
            &unfiltered(&rcpts),
            &units,
            &[vec![Err(SinkError::temporary("4.3.1", "full"))]],
        );
        assert_eq!(t.overall("ID").code, 451);
        assert_eq!(t.overall("ID").status, "4.3.1");
        let p = Summary::new(
            &rcpts,
            &unfiltered(&rcpts),
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
        let s = Summary::new(&rcpts, &unfiltered(&rcpts), &units, &results);
        let codes: Vec<u16> = s.per_rcpt.iter().map(|r| r.answer("ID").code).collect();
        assert_eq!(codes, [451, 250, 451]);
    }

    #[test]
    fn lmtp_forgets_recipients_the_client_will_retry() {
        let rcpts = vec!["a@x".to_string(), "b@x".to_string()];
        let units = vec![unit("box", &["a@x", "b@x"])];
        let results = vec![vec![ok(), Err(SinkError::temporary("4.2.2", "quota"))]];
        let mut s = Summary::new(&rcpts, &unfiltered(&rcpts), &units, &results);
        assert_eq!(s.per_rcpt[0].answer("ID").code, 250);
        assert_eq!(s.per_rcpt[1].answer("ID").code, 451);
        s.forget("b@x");
        assert!(s.retry.is_empty());
    }

    // direct mode (no spool of ours) must not answer SMTP's single reply 250 when
    // a recipient's sinks deferred: nothing would retry it (DESIGN.md "Never lose a message").
    #[test]
    fn direct_mode_defers_the_message_when_one_recipient_is_deferred() {
        let rcpts = vec!["a@x".to_string(), "b@x".to_string()];
        let units = vec![unit("box", &["a@x"]), unit("relay", &["b@x"])];
        let results = vec![vec![ok()], vec![Err(SinkError::temporary("4.4.1", "down"))]];
        let mut s = Summary::new(&rcpts, &unfiltered(&rcpts), &units, &results);
        s.strict();
        let a = s.overall("ID");
        assert_eq!(
            (a.code, a.status.as_str()),
            (451, "4.4.1"),
            "b@x would be lost"
        );
        assert!(s.retry.is_empty(), "nothing of ours retries in direct mode");
    }
}
