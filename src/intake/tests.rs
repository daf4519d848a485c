//! The filter stage's semantics (DESIGN.md "Filters") through [`Intake::complete`], with
//! test filters on a pipeline of two routes into Maildirs: reject, re-route, discard, a
//! changed body, a temporary failure (and `fail_open`), SMTP and LMTP answers.

use super::*;
use crate::config::parse_str;
use crate::delivery::BoxFuture;
use crate::envelope::{ClientInfo, Envelope, new_id, now_unix};
use crate::filters::{BuiltFilter, Filter, FilterError, FilterInput, Verdict};
use crate::pipeline::Pipeline;
use crate::sinks::SinkContext;
use crate::spool::{Committer, Incoming};
use std::sync::Arc;

const CONFIG: &str = r#"
[[route]]
name = "a"
match = ["a@x"]
sinks = ["box-a"]

[[route]]
name = "b"
match = ["b@x"]
sinks = ["box-b"]

[[route]]
name = "quarantine"
match = ["q@x"]
sinks = ["box-q"]

[sink.box-a]
type = "maildir"
path = "a"

[sink.box-b]
type = "maildir"
path = "b"

[sink.box-q]
type = "maildir"
path = "q"
"#;

/// A filter that answers what it was made with; `Changed` adds a header line first.
struct Scripted(Result<Verdict, FilterError>);

impl Filter for Scripted {
    fn apply<'a>(
        &'a self,
        input: &'a FilterInput<'a>,
    ) -> BoxFuture<'a, Result<Verdict, FilterError>> {
        Box::pin(async move {
            if let Ok(Verdict::Changed) = &self.0 {
                let mut body = b"X-Filtered: yes\r\n".to_vec();
                body.extend(
                    std::fs::read(input.body).map_err(|e| FilterError::from_io("read", &e))?,
                );
                std::fs::write(input.output, body)
                    .map_err(|e| FilterError::from_io("write", &e))?;
            }
            self.0.clone()
        })
    }
}

fn filter(name: &str, verdict: Result<Verdict, FilterError>, fail_open: bool) -> BuiltFilter {
    BuiltFilter {
        name: name.into(),
        filter: Arc::new(Scripted(verdict)),
        fail_open,
    }
}

struct Setup {
    dir: tempfile::TempDir,
    pipeline: Pipeline,
}

fn setup(route_a: Vec<BuiltFilter>) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let loaded = parse_str(CONFIG, "t.toml", dir.path()).unwrap();
    let ctx = SinkContext {
        hostname: "mx.test".into(),
        committer: Arc::new(Committer::new()),
        base_dir: dir.path().to_path_buf(),
    };
    let mut pipeline = Pipeline::build(&loaded, &ctx).unwrap();
    pipeline.set_filters(0, route_a);
    Setup { dir, pipeline }
}

impl Setup {
    /// Receives a message for `rcpts` in a scratch directory and completes it directly.
    async fn send(&self, rcpts: &[&str], lmtp: bool) -> Completion {
        let scratch = self.dir.path().join("scratch");
        std::fs::create_dir_all(&scratch).unwrap();
        let file = Incoming::create(&scratch, &new_id()).unwrap();
        self.complete(file, rcpts, lmtp, IntakeMode::Direct).await
    }

    /// Receives a message into `file` and completes it in `mode`.
    async fn complete(
        &self,
        file: Incoming,
        rcpts: &[&str],
        lmtp: bool,
        mode: IntakeMode<'_>,
    ) -> Completion {
        let id = file.id().to_string();
        let mut w = BodyWriter::start(file, "Received: test\r\n").await.unwrap();
        w.write(b"Subject: hi\r\n\r\nbody\r\n").await.unwrap();
        let body = w.finish().await.unwrap();
        let envelope = Envelope {
            id,
            mail_from: "s@x".into(),
            rcpts: rcpts.iter().map(|r| r.to_string()).collect(),
            client: ClientInfo::default(),
            listener: "test".into(),
            received_at: now_unix(),
            body: Default::default(),
            smtputf8: false,
            size: body.message.size,
            sha256: body.sha256,
        };
        let intake = Intake {
            pipeline: &self.pipeline,
            mode,
            lmtp,
            dsn: false,
        };
        intake.complete(envelope, body.message).await
    }

    fn mailbox(&self, name: &str) -> Vec<String> {
        let new = self.dir.path().join(name).join("new");
        let mut out = Vec::new();
        for e in std::fs::read_dir(&new).into_iter().flatten().flatten() {
            let stored = String::from_utf8_lossy(&std::fs::read(e.path()).unwrap()).into_owned();
            // What the filters made of the message, after the sink's envelope headers.
            let mut rest = stored.as_str();
            for prefix in ["Return-Path: ", "Delivered-To: "] {
                if rest.starts_with(prefix) {
                    rest = rest.split_once('\n').map_or("", |(_, r)| r);
                }
            }
            out.push(rest.to_string());
        }
        out
    }

    /// Nothing is left where the message was received: no message, no filtered body.
    fn assert_scratch_empty(&self) {
        let scratch: Vec<_> = std::fs::read_dir(self.dir.path().join("scratch"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert!(scratch.is_empty(), "left behind: {scratch:?}");
    }
}

fn codes(c: &Completion) -> Vec<u16> {
    c.answers.iter().map(|a| a.code).collect()
}

#[tokio::test]
async fn a_rejection_refuses_its_route_and_spares_the_others() {
    let s = setup(vec![filter(
        "deny",
        Ok(Verdict::Reject {
            status: "5.7.1".into(),
            text: "content refused".into(),
        }),
        false,
    )]);
    // SMTP, two routes: accepted for b, a refused (no DSN here: logged).
    let c = s.send(&["a@x", "b@x"], false).await;
    assert_eq!(codes(&c), [250]);
    assert_eq!(s.mailbox("b").len(), 1);
    assert!(s.mailbox("a").is_empty());
    assert!(matches!(&c.outcomes[0], Err(e) if e.status == "5.7.1"));
    // Every recipient refused: the rejection itself.
    let c = s.send(&["a@x"], false).await;
    assert_eq!(codes(&c), [554]);
    assert_eq!(c.answers[0].text, "content refused");
    // LMTP: one answer per recipient.
    let c = s.send(&["a@x", "b@x"], true).await;
    assert_eq!(codes(&c), [554, 250]);
    s.assert_scratch_empty();
}

#[tokio::test]
async fn a_reroute_hands_the_recipients_to_the_other_route() {
    let s = setup(vec![filter(
        "to-quarantine",
        Ok(Verdict::Reroute {
            route: "quarantine".into(),
        }),
        false,
    )]);
    let c = s.send(&["a@x"], false).await;
    assert_eq!(codes(&c), [250]);
    assert!(s.mailbox("a").is_empty());
    assert_eq!(s.mailbox("q").len(), 1);
    assert_eq!(c.routes, "quarantine");
    s.assert_scratch_empty();
}

#[tokio::test]
async fn a_changed_body_goes_to_its_route_only() {
    let s = setup(vec![filter("tag", Ok(Verdict::Changed), false)]);
    let c = s.send(&["a@x", "b@x"], false).await;
    assert_eq!(codes(&c), [250]);
    let a = s.mailbox("a");
    let b = s.mailbox("b");
    assert!(
        a[0].starts_with("X-Filtered: yes\nReceived: test\n"),
        "{a:?}"
    );
    assert!(b[0].starts_with("Received: test\n"), "{b:?}");
    assert!(
        c.outcome.contains("filters: a[tag changed]"),
        "{}",
        c.outcome
    );
    s.assert_scratch_empty();
}

#[tokio::test]
async fn a_discard_is_accepted_and_stored_nowhere() {
    let s = setup(vec![filter(
        "drop",
        Ok(Verdict::Discard {
            reason: "empty subject".into(),
        }),
        false,
    )]);
    let c = s.send(&["a@x"], false).await;
    assert_eq!(codes(&c), [250]);
    assert!(c.outcomes[0].is_ok());
    assert!(s.mailbox("a").is_empty());
    s.assert_scratch_empty();
}

#[tokio::test]
async fn a_temporary_failure_fails_the_whole_smtp_message_and_keeps_nothing() {
    let s = setup(vec![
        filter("tag", Ok(Verdict::Changed), false),
        filter(
            "scan",
            Err(FilterError::new("4.4.1", "scanner down")),
            false,
        ),
    ]);
    let c = s.send(&["a@x", "b@x"], false).await;
    assert_eq!(codes(&c), [451]);
    assert_eq!(c.answers[0].status, "4.4.1");
    // The detail is the operator's (the transaction line), not the client's.
    assert!(!c.answers[0].text.contains("scanner"), "{:?}", c.answers[0]);
    assert!(
        c.outcome.contains("scan deferred 4.4.1 scanner down"),
        "{}",
        c.outcome
    );
    // Nothing delivered anywhere, b included: the client's retry duplicates nothing.
    assert!(s.mailbox("a").is_empty() && s.mailbox("b").is_empty());
    s.assert_scratch_empty();
    // LMTP: 451 for that route's recipients; the others proceed.
    let c = s.send(&["a@x", "b@x"], true).await;
    assert_eq!(codes(&c), [451, 250]);
    assert_eq!(s.mailbox("b").len(), 1);
    s.assert_scratch_empty();
}

#[tokio::test]
async fn fail_open_passes_a_failing_filter_over() {
    let s = setup(vec![filter(
        "scan",
        Err(FilterError::new("4.4.1", "scanner down")),
        true,
    )]);
    let c = s.send(&["a@x"], false).await;
    assert_eq!(codes(&c), [250]);
    assert_eq!(s.mailbox("a").len(), 1);
    assert!(c.outcome.contains("failed open"), "{}", c.outcome);
}

#[tokio::test]
async fn direct_mode_defers_a_recipient_one_sink_could_not_take() {
    // box-a's directory cannot be made (a file stands where it would go): deferred.
    let s = setup(Vec::new());
    std::fs::write(s.dir.path().join("a"), b"not a directory").unwrap();
    let c = s.send(&["a@x", "b@x"], true).await;
    assert_eq!(codes(&c), [451, 250]);
    assert!(c.outcomes[0].as_ref().is_err_and(|e| e.is_temporary()));
    s.assert_scratch_empty();
}

/// Queued mode: a changed body for route a, route b discarded: the queue holds the message,
/// its sidecar and that one body, and the entry's unit delivers it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_mode_keeps_the_changed_body_beside_the_message() {
    let mut s = setup(vec![filter("tag", Ok(Verdict::Changed), false)]);
    s.pipeline.set_filters(
        1,
        vec![filter(
            "drop",
            Ok(Verdict::Discard {
                reason: "test".into(),
            }),
            false,
        )],
    );
    let spool = Arc::new(
        crate::spool::Spool::open(&s.dir.path().join("data"), Arc::new(Committer::new())).unwrap(),
    );
    // A queue that takes nothing (stopped), so what intake queued stays to be looked at.
    let loaded = parse_str(CONFIG, "t.toml", s.dir.path()).unwrap();
    let ctx = SinkContext {
        hostname: "mx.test".into(),
        committer: Arc::new(Committer::new()),
        base_dir: s.dir.path().to_path_buf(),
    };
    let deliverer = Arc::new(Pipeline::build(&loaded, &ctx).unwrap());
    let queue = crate::spool::Queue::start(
        spool.clone(),
        deliverer,
        crate::config::QueueConfig::default(),
        "mx.test".into(),
        Vec::new(),
    );
    queue.shutdown().await;
    let retry = crate::config::QueueConfig::default();
    let durable = Durable {
        spool: &spool,
        queue: &queue,
        retry: &retry,
    };
    let file = spool.incoming(&new_id()).unwrap();
    let id = file.id().to_string();
    let c = s
        .complete(file, &["a@x", "b@x"], false, IntakeMode::Queued(durable))
        .await;
    assert_eq!(codes(&c), [250]);
    assert!(c.answers[0].text.contains("queued"), "{:?}", c.answers[0]);
    let mut files: Vec<String> = std::fs::read_dir(spool.queue_dir())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    let body = format!("{id}.f1.eml");
    assert_eq!(
        files,
        [format!("{id}.eml"), body.clone(), format!("{id}.json")]
    );
    let entry = spool.load(&id).unwrap();
    assert_eq!(entry.bodies.len(), 1);
    assert_eq!(entry.pending.len(), 1, "{:?}", entry.pending);
    assert_eq!(entry.pending[0].rcpts, ["a@x"]);
    assert_eq!(entry.pending[0].body.as_deref(), Some("f1"));
    let changed = std::fs::read(spool.queue_dir().join(body)).unwrap();
    assert!(changed.starts_with(b"X-Filtered: yes\r\nReceived: test\r\n"));
    assert!(
        std::fs::read_dir(s.dir.path().join("data/spool/tmp"))
            .unwrap()
            .next()
            .is_none(),
        "spool/tmp not empty"
    );
}
