//! Spool and queue tests. The `FakeDeliverer` stands in for the pipeline (it is the
//! queue's collaborator, not a sink): it records what it was asked and answers from a
//! script.

use super::*;
use crate::config::QueueConfig;
use crate::config::units::Duration as CfgDuration;
use crate::delivery::{BoxFuture, Delivered, RcptResults, SinkError};
use crate::envelope::{ClientInfo, Envelope, new_id, now_unix};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const MSG: &[u8] =
    b"Received: from test\r\nSubject: hello\r\nFrom: alice@example.org\r\n\r\nbody\r\n";

pub(crate) fn envelope(id: &str, from: &str, rcpts: &[&str], size: u64) -> Envelope {
    Envelope {
        id: id.to_string(),
        mail_from: from.to_string(),
        rcpts: rcpts.iter().map(|r| r.to_string()).collect(),
        client: ClientInfo {
            addr: Some("192.0.2.1".into()),
            protocol: "ESMTP".into(),
            ..ClientInfo::default()
        },
        listener: "smtp".into(),
        received_at: now_unix(),
        body: Default::default(),
        smtputf8: false,
        size,
        sha256: String::new(),
    }
}

pub(crate) fn unit(id: &str, rcpts: &[String]) -> Pending {
    Pending {
        attempted: false,
        route: "r".into(),
        sink: "s".into(),
        rcpts: rcpts.to_vec(),
        unit_id: format!("{id}-s"),
        last_error: None,
        body: None,
    }
}

pub(crate) fn open(dir: &Path) -> Arc<Spool> {
    Arc::new(Spool::open(dir, Arc::new(Committer::new())).unwrap())
}

/// Receives and durably queues a message from `from` to `rcpts`.
pub(crate) async fn enqueue(spool: &Spool, from: &str, rcpts: &[&str], dsn: bool) -> QueueEntry {
    let id = new_id();
    let mut inc = spool.incoming(&id).unwrap();
    inc.write(MSG).await.unwrap();
    let msg = inc.finish().await.unwrap();
    let env = envelope(&id, from, rcpts, msg.size);
    let units = vec![unit(&id, &env.rcpts)];
    let entry = QueueEntry::new(env, units, dsn);
    spool.enqueue(msg, &entry).await.unwrap();
    entry
}

fn config(initial_ms: u64, lifetime_s: u64) -> QueueConfig {
    QueueConfig {
        backoff_initial: CfgDuration(Duration::from_millis(initial_ms)),
        backoff_max: CfgDuration(Duration::from_secs(3600)),
        max_lifetime: CfgDuration(Duration::from_secs(lifetime_s)),
        workers: 4,
        dsn_sinks: Vec::new(),
    }
}

type Script = dyn Fn(&Envelope, usize) -> Result<Delivered, SinkError> + Send + Sync;

struct Call {
    envelope: Envelope,
    message: Vec<u8>,
}

/// Answers every recipient with `script(envelope, call number of that message)`.
struct FakeDeliverer {
    script: Box<Script>,
    calls: Mutex<Vec<Call>>,
    route_senders: bool,
}

impl FakeDeliverer {
    fn new(
        script: impl Fn(&Envelope, usize) -> Result<Delivered, SinkError> + Send + Sync + 'static,
    ) -> Arc<Self> {
        Arc::new(FakeDeliverer {
            script: Box::new(script),
            calls: Mutex::new(Vec::new()),
            route_senders: true,
        })
    }

    fn calls_for(&self, id: &str) -> usize {
        let calls = self.calls.lock().unwrap();
        calls.iter().filter(|c| c.envelope.id == id).count()
    }

    fn dsns(&self) -> Vec<(Envelope, String)> {
        let calls = self.calls.lock().unwrap();
        calls
            .iter()
            .filter(|c| c.envelope.mail_from.is_empty() && c.envelope.listener == "dsn")
            .map(|c| {
                (
                    c.envelope.clone(),
                    String::from_utf8_lossy(&c.message).into_owned(),
                )
            })
            .collect()
    }
}

fn ok() -> Result<Delivered, SinkError> {
    Ok(Delivered {
        detail: "ok".into(),
    })
}

impl Deliverer for FakeDeliverer {
    fn attempt<'a>(
        &'a self,
        envelope: &'a Envelope,
        message: &'a Path,
        units: &'a [Pending],
    ) -> BoxFuture<'a, Vec<RcptResults>> {
        Box::pin(async move {
            let bytes = std::fs::read(message).unwrap();
            let n = {
                let mut calls = self.calls.lock().unwrap();
                calls.push(Call {
                    envelope: envelope.clone(),
                    message: bytes,
                });
                calls
                    .iter()
                    .filter(|c| c.envelope.id == envelope.id)
                    .count()
            };
            units
                .iter()
                .map(|u| u.rcpts.iter().map(|_| (self.script)(envelope, n)).collect())
                .collect()
        })
    }

    fn plan(&self, envelope: &Envelope) -> Result<Vec<Pending>, String> {
        if !self.route_senders {
            return Err(format!("no route for {}", envelope.rcpts.join(",")));
        }
        Ok(vec![unit(&envelope.id, &envelope.rcpts)])
    }
}

async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while !cond() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn start(spool: &Arc<Spool>, d: Arc<FakeDeliverer>, cfg: QueueConfig) -> Arc<Queue> {
    let recovered = spool.recover().unwrap();
    Queue::start_with_rescan(
        spool.clone(),
        d,
        cfg,
        "mx.test".into(),
        recovered,
        Duration::from_millis(100),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enqueue_then_recover_returns_the_entry() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(dir.path());
    let entry = enqueue(&spool, "alice@example.org", &["bob@example.net"], true).await;
    assert_eq!(std::fs::read(spool.message_path(entry.id())).unwrap(), MSG);
    drop(spool);
    let spool = open(dir.path());
    let recovered = spool.recover().unwrap();
    assert_eq!(recovered, vec![entry.clone()]);
    assert_eq!(spool.load(entry.id()).unwrap(), entry);
    assert!(files(&dir.path().join("spool/tmp")).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enqueue_rejects_an_entry_for_another_file() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(dir.path());
    let mut inc = spool.incoming("A1").unwrap();
    inc.write(b"x\r\n").await.unwrap();
    let msg = inc.finish().await.unwrap();
    let entry = QueueEntry::new(envelope("A1", "a@b", &["c@d"], 99), vec![], false);
    let err = spool.enqueue(msg, &entry).await.unwrap_err();
    assert!(err.to_string().contains("99 bytes"), "{err}");
    assert!(files(spool.queue_dir()).is_empty());
    // The message the client will send again is not left behind either.
    assert!(files(&dir.path().join("spool/tmp")).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recover_sets_aside_torn_and_garbage_entries() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(dir.path());
    let good = enqueue(&spool, "a@example.org", &["b@example.org"], false).await;
    let torn = enqueue(&spool, "a@example.org", &["b@example.org"], false).await;
    // Torn: the data file is shorter than the sidecar says.
    std::fs::write(spool.message_path(torn.id()), b"Received: x\r\n").unwrap();
    // Garbage sidecar with its data file.
    std::fs::write(spool.sidecar_path("GARBAGE1"), b"{not json").unwrap();
    std::fs::write(spool.message_path("GARBAGE1"), MSG).unwrap();
    // Data without sidecar (crash inside enqueue).
    std::fs::write(spool.message_path("ORPHAN1"), MSG).unwrap();

    let recovered = spool.recover().unwrap();
    assert_eq!(recovered, vec![good.clone()]);
    let mut expect = vec![
        "GARBAGE1.eml".to_string(),
        "GARBAGE1.json".into(),
        "ORPHAN1.eml".into(),
        format!("{}.eml", torn.id()),
        format!("{}.json", torn.id()),
    ];
    expect.sort();
    assert_eq!(files(spool.corrupt_dir()), expect);
    assert_eq!(
        files(spool.queue_dir()),
        vec![format!("{}.eml", good.id()), format!("{}.json", good.id())]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recover_cleans_tmp_and_incoming_cleans_up() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(dir.path());
    let tmp = dir.path().join("spool/tmp");
    // Finished but never enqueued (the ack never happened).
    let mut inc = spool.incoming("T1").unwrap();
    inc.write(b"partial").await.unwrap();
    let _kept = inc.finish().await.unwrap();
    std::fs::write(tmp.join("x.json.1.2.tmp"), b"{").unwrap();
    // Dropped without finish: deleted at once.
    let mut inc = spool.incoming("T2").unwrap();
    inc.write(b"abc").await.unwrap();
    assert_eq!(inc.size(), 3);
    drop(inc);
    let inc = spool.incoming("T3").unwrap();
    inc.discard();
    assert_eq!(files(&tmp), vec!["T1.eml", "x.json.1.2.tmp"]);
    assert!(spool.recover().unwrap().is_empty());
    assert!(files(&tmp).is_empty());
    // IDs cannot escape the spool.
    assert!(matches!(
        spool.incoming("../x"),
        Err(SpoolError::InvalidId { .. })
    ));
    // 0700 directories.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(spool.queue_dir())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn temporary_failure_then_success_delivers_once() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(dir.path());
    let d = FakeDeliverer::new(|_, n| {
        if n == 1 {
            Err(SinkError::temporary("4.4.1", "connection refused"))
        } else {
            ok()
        }
    });
    let queue = start(&spool, d.clone(), config(400, 3600));
    let entry = enqueue(&spool, "alice@example.org", &["bob@example.net"], true).await;
    let id = entry.id().to_string();
    queue.submit(entry);

    wait_until("first attempt recorded", || {
        spool.load(&id).map(|e| e.attempts == 1).unwrap_or(false)
    })
    .await;
    let after_first = spool.load(&id).unwrap();
    assert_eq!(
        after_first.last_error.as_deref(),
        Some("4.4.1 connection refused")
    );
    assert_eq!(
        after_first.pending[0].last_error.as_deref(),
        Some("4.4.1 connection refused")
    );
    assert!(after_first.next_attempt > crate::spool::store::now_millis() - 1000);

    wait_until("delivered and removed", || {
        !spool.message_path(&id).exists() && !spool.sidecar_path(&id).exists()
    })
    .await;
    wait_until("forgotten", || queue.stats().queued == 0).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(d.calls_for(&id), 2);
    assert!(d.dsns().is_empty());
    queue.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanent_failure_sends_a_dsn_to_the_sender() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(dir.path());
    let d = FakeDeliverer::new(|env, _| {
        if env.mail_from.is_empty() {
            ok()
        } else {
            Err(SinkError::permanent("5.1.1", "no such mailbox\r\nat all"))
        }
    });
    let queue = start(&spool, d.clone(), config(50, 3600));
    let entry = enqueue(&spool, "alice@example.org", &["bob@example.net"], true).await;
    let id = entry.id().to_string();
    queue.submit(entry);

    wait_until("DSN delivered", || d.dsns().len() == 1).await;
    let (env, text) = d.dsns().remove(0);
    assert_eq!(env.rcpts, vec!["alice@example.org".to_string()]);
    assert!(text.contains("To: <alice@example.org>\r\n"), "{text}");
    assert!(text.contains(&format!("X-Mailchute-Queue-ID: {id}\r\n")));
    assert!(text.contains("Final-Recipient: rfc822; bob@example.net\r\n"));
    assert!(text.contains("Status: 5.1.1\r\n"));
    assert!(text.contains("Diagnostic-Code: smtp; 550 5.1.1 no such mailbox at all\r\n"));
    assert!(
        text.contains("Subject: hello\r\n"),
        "original headers quoted"
    );
    assert!(!text.contains("body\r\n"), "body not quoted");

    wait_until("everything removed", || {
        queue.stats().queued == 0 && files(spool.queue_dir()).is_empty()
    })
    .await;
    assert_eq!(d.calls_for(&id), 1);
    queue.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn null_sender_and_unroutable_sender_get_no_dsn() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(dir.path());
    let mut fake = FakeDeliverer {
        script: Box::new(|_, _| Err(SinkError::permanent("5.1.1", "unknown"))),
        calls: Mutex::new(Vec::new()),
        route_senders: false,
    };
    fake.route_senders = false;
    let d = Arc::new(fake);
    let queue = start(&spool, d.clone(), config(50, 3600));
    let null = enqueue(&spool, "", &["bob@example.net"], true).await;
    let unroutable = enqueue(&spool, "alice@example.org", &["bob@example.net"], true).await;
    queue.submit(null.clone());
    queue.submit(unroutable.clone());
    wait_until("both finished", || {
        queue.stats().queued == 0 && files(spool.queue_dir()).is_empty()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(d.calls_for(null.id()), 1);
    assert_eq!(d.calls_for(unroutable.id()), 1);
    assert!(d.dsns().is_empty());
    assert_eq!(d.calls.lock().unwrap().len(), 2);
    queue.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_message_goes_to_dead_letters_with_a_dsn() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(dir.path());
    let d = FakeDeliverer::new(|env, _| {
        if env.mail_from.is_empty() {
            ok()
        } else if env.rcpts.len() == 2 {
            Err(SinkError::temporary("4.4.2", "upstream timed out"))
        } else {
            ok()
        }
    });
    let queue = start(&spool, d.clone(), config(50, 60));
    let id = new_id();
    let mut inc = spool.incoming(&id).unwrap();
    inc.write(MSG).await.unwrap();
    let msg = inc.finish().await.unwrap();
    let mut env = envelope(
        &id,
        "alice@example.org",
        &["bob@example.net", "carol@example.net"],
        msg.size,
    );
    env.received_at = now_unix() - 120;
    let entry = QueueEntry::new(env.clone(), vec![unit(&id, &env.rcpts)], true);
    spool.enqueue(msg, &entry).await.unwrap();
    queue.submit(entry);

    let dead = spool.dead_dir().to_path_buf();
    wait_until("dead-lettered", || {
        dead.join(format!("{id}.json")).exists() && !spool.sidecar_path(&id).exists()
    })
    .await;
    assert_eq!(std::fs::read(dead.join(format!("{id}.eml"))).unwrap(), MSG);
    let sidecar: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dead.join(format!("{id}.json"))).unwrap()).unwrap();
    let reason = sidecar["dead_reason"].as_str().unwrap();
    assert!(reason.contains("delivery time expired"), "{reason}");
    assert!(reason.contains("4.4.2 upstream timed out"), "{reason}");
    assert_eq!(sidecar["envelope"]["id"], id.as_str());
    assert!(!spool.message_path(&id).exists());

    wait_until("DSN delivered", || d.dsns().len() == 1).await;
    let (_, text) = d.dsns().remove(0);
    assert!(text.contains("Final-Recipient: rfc822; bob@example.net\r\n"));
    assert!(text.contains("Final-Recipient: rfc822; carol@example.net\r\n"));
    assert!(text.contains("Status: 4.4.7\r\n"));
    assert!(text.contains("delivery time expired"));
    assert_eq!(d.calls_for(&id), 1);
    queue.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_queue_picks_up_external_retry_delete_and_new_entries() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(dir.path());
    let d = FakeDeliverer::new(|env, _| {
        if env.rcpts[0].starts_with("later") {
            Err(SinkError::temporary("4.2.0", "try later"))
        } else {
            ok()
        }
    });
    // An hour of backoff: only `queue retry` brings the next attempt.
    let queue = start(&spool, d.clone(), config(3_600_000, 86400));
    let e = enqueue(&spool, "a@example.org", &["later@example.net"], false).await;
    let id = e.id().to_string();
    queue.submit(e);
    wait_until("first attempt", || {
        spool.load(&id).map(|e| e.attempts == 1).unwrap_or(false)
    })
    .await;
    admin::request_retry(dir.path(), &id).unwrap();
    wait_until("retried from outside", || d.calls_for(&id) == 2).await;
    wait_until("second attempt recorded", || {
        spool.load(&id).map(|e| e.attempts == 2).unwrap_or(false)
    })
    .await;

    admin::delete(dir.path(), &id).unwrap();
    wait_until("forgotten", || queue.stats().queued == 0).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !spool.sidecar_path(&id).exists(),
        "deleted entry resurrected"
    );
    assert_eq!(d.calls_for(&id), 2);

    // Queued by another process (its own Spool), never submitted to this queue.
    let other = open(dir.path());
    let e = enqueue(&other, "a@example.org", &["now@example.net"], false).await;
    wait_until("picked up and delivered", || d.calls_for(e.id()) == 1).await;
    wait_until("removed", || files(spool.queue_dir()).is_empty()).await;
    queue.shutdown().await;
}

/// A backoff that reaches past the lifetime is cut to it: the message dies on time, not an
/// hour late.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_attempt_comes_when_the_lifetime_ends() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(dir.path());
    let d = FakeDeliverer::new(|env, _| {
        if env.mail_from.is_empty() {
            ok()
        } else {
            Err(SinkError::temporary("4.2.0", "down"))
        }
    });
    let queue = start(&spool, d.clone(), config(3_600_000, 2));
    let e = enqueue(&spool, "a@example.org", &["b@example.net"], false).await;
    let id = e.id().to_string();
    queue.submit(e);
    wait_until("first attempt recorded", || {
        spool.load(&id).map(|e| e.attempts == 1).unwrap_or(false)
    })
    .await;
    let entry = spool.load(&id).unwrap();
    assert!(
        entry.next_attempt <= (entry.envelope.received_at + 2) * 1000,
        "next attempt {} after the end of the lifetime {}",
        entry.next_attempt,
        (entry.envelope.received_at + 2) * 1000
    );
    let dead = spool.dead_dir().join(format!("{id}.json"));
    wait_until("dead-lettered at the end of its lifetime", || dead.exists()).await;
    assert_eq!(d.calls_for(&id), 2);
    queue.shutdown().await;
}

/// `queue retry` while an attempt is running: another attempt follows right after it,
/// instead of the request being overwritten by that attempt's backoff.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_requested_during_an_attempt_follows_it() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(dir.path());
    let d = FakeDeliverer::new(|_, _| {
        std::thread::sleep(Duration::from_millis(1500));
        Err(SinkError::temporary("4.2.0", "slow and failing"))
    });
    let queue = start(&spool, d.clone(), config(3_600_000, 86400));
    let e = enqueue(&spool, "a@example.org", &["b@example.net"], false).await;
    let id = e.id().to_string();
    queue.submit(e);
    wait_until("first attempt under way", || d.calls_for(&id) == 1).await;
    admin::request_retry(dir.path(), &id).unwrap();
    wait_until("attempted again after the first", || d.calls_for(&id) == 2).await;
    wait_until("request taken", || {
        spool.retry_requests().unwrap().is_empty()
    })
    .await;
    queue.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_does_not_resurrect_a_deleted_entry() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(dir.path());
    let e = enqueue(&spool, "a@example.org", &["b@example.net"], false).await;
    admin::delete(dir.path(), e.id()).unwrap();
    let err = spool.update(&e).await.unwrap_err();
    assert!(err.is_not_queued(), "{err}");
    assert!(files(spool.queue_dir()).is_empty());
    let err = spool.dead_letter(&e, "x").await.unwrap_err();
    assert!(err.is_not_queued(), "{err}");
    assert!(files(spool.dead_dir()).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_enqueues_are_durable_and_listed() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(dir.path());
    let mut tasks = Vec::new();
    for i in 0..200 {
        let spool = spool.clone();
        tasks.push(tokio::spawn(async move {
            let rcpt = format!("r{i}@example.net");
            enqueue(&spool, "a@example.org", &[rcpt.as_str()], false).await
        }));
    }
    let mut ids = Vec::new();
    for t in tasks {
        ids.push(t.await.unwrap().envelope.id);
    }
    ids.sort();
    let listed: Vec<String> = spool
        .list()
        .unwrap()
        .into_iter()
        .map(|e| e.envelope.id)
        .collect();
    assert_eq!(listed, ids);
    let recovered: Vec<String> = open(dir.path())
        .recover()
        .unwrap()
        .into_iter()
        .map(|e| e.envelope.id)
        .collect();
    assert_eq!(recovered, ids);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_leaves_entries_in_the_spool() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(dir.path());
    let d = FakeDeliverer::new(|_, _| Err(SinkError::temporary("4.0.0", "no")));
    let queue = start(&spool, d.clone(), config(3_600_000, 86400));
    let e = enqueue(&spool, "a@example.org", &["b@example.net"], false).await;
    queue.submit(e.clone());
    wait_until("attempted", || d.calls_for(e.id()) == 1).await;
    queue.shutdown().await;
    let e2 = enqueue(&spool, "a@example.org", &["c@example.net"], false).await;
    queue.submit(e2.clone());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(d.calls_for(e2.id()), 0);
    let ids: Vec<String> = spool
        .list()
        .unwrap()
        .into_iter()
        .map(|e| e.envelope.id)
        .collect();
    assert_eq!(ids.len(), 2);
}

#[test]
fn backoff_doubles_and_caps() {
    let cfg = QueueConfig {
        backoff_initial: CfgDuration::from_secs(60),
        backoff_max: CfgDuration::from_secs(3600),
        ..QueueConfig::default()
    };
    assert_eq!(queue::backoff_ms(&cfg, 1), 60_000);
    assert_eq!(queue::backoff_ms(&cfg, 2), 120_000);
    assert_eq!(queue::backoff_ms(&cfg, 4), 480_000);
    assert_eq!(queue::backoff_ms(&cfg, 10), 3_600_000);
    assert_eq!(queue::backoff_ms(&cfg, 200), 3_600_000);
}

/// Receives `MSG` and, beside it, a filtered body `f1`; queues a unit for each.
pub(crate) async fn enqueue_with_body(spool: &Spool) -> QueueEntry {
    let id = new_id();
    let mut inc = spool.incoming(&id).unwrap();
    inc.write(MSG).await.unwrap();
    let msg = inc.finish().await.unwrap();
    let changed = b"Received: from test\r\nSubject: [tagged] hello\r\n\r\nbody\r\n";
    std::fs::write(body_path(&msg.path, Some("f1")), changed).unwrap();
    let env = envelope(
        &id,
        "a@example.org",
        &["b@example.org", "c@example.org"],
        msg.size,
    );
    let plain = unit(&id, &env.rcpts[..1]);
    let filtered = Pending {
        unit_id: format!("{id}-f"),
        body: Some("f1".into()),
        ..unit(&id, &env.rcpts[1..])
    };
    let mut entry = QueueEntry::new(env, vec![plain, filtered], false);
    entry.bodies = vec![BodyFile {
        name: "f1".into(),
        size: changed.len() as u64,
    }];
    spool.enqueue(msg, &entry).await.unwrap();
    entry
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filtered_body_is_queued_recovered_and_removed_with_its_message() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(dir.path());
    let entry = enqueue_with_body(&spool).await;
    let id = entry.id().to_string();
    assert_eq!(
        files(spool.queue_dir()),
        vec![
            format!("{id}.eml"),
            format!("{id}.f1.eml"),
            format!("{id}.json")
        ]
    );
    let body = body_path(&spool.message_path(&id), Some("f1"));
    assert!(
        std::fs::read(&body)
            .unwrap()
            .starts_with(b"Received: from test\r\nSubject: [tagged]")
    );
    // A crash and a restart: the entry comes back with its body.
    drop(spool);
    let spool = open(dir.path());
    assert_eq!(spool.recover().unwrap(), vec![entry.clone()]);
    spool.remove(&entry).await.unwrap();
    assert!(files(spool.queue_dir()).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_filtered_body_sets_its_entry_aside() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(dir.path());
    let entry = enqueue_with_body(&spool).await;
    let id = entry.id().to_string();
    std::fs::write(body_path(&spool.message_path(&id), Some("f1")), b"Rec").unwrap();
    // A body that no entry names (an enqueue cut short) goes aside too.
    let good = enqueue(&spool, "a@example.org", &["b@example.org"], false).await;
    std::fs::write(
        spool.queue_dir().join(format!("{}.f9.eml", good.id())),
        b"x",
    )
    .unwrap();
    assert_eq!(spool.recover().unwrap(), vec![good.clone()]);
    let mut corrupt = files(spool.corrupt_dir());
    corrupt.sort();
    assert_eq!(
        corrupt,
        vec![
            format!("{id}.eml"),
            format!("{id}.f1.eml"),
            format!("{id}.json"),
            format!("{}.f9.eml", good.id())
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_takes_its_filtered_bodies_along() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(dir.path());
    let entry = enqueue_with_body(&spool).await;
    let id = entry.id().to_string();
    spool.dead_letter(&entry, "test").await.unwrap();
    assert!(files(spool.queue_dir()).is_empty());
    assert_eq!(
        files(spool.dead_dir()),
        vec![
            format!("{id}.eml"),
            format!("{id}.f1.eml"),
            format!("{id}.json")
        ]
    );
}

#[test]
fn body_paths_sit_beside_their_message() {
    let m = Path::new("/s/queue/ABC.eml");
    assert_eq!(body_path(m, None), m);
    assert_eq!(body_path(m, Some("f2")), Path::new("/s/queue/ABC.f2.eml"));
    assert!(store::check_body_name("f1").is_ok());
    for bad in ["", "a.b", "../x", "a/b"] {
        assert!(store::check_body_name(bad).is_err(), "{bad:?}");
    }
}
