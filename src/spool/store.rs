//! The on-disk spool: messages being received, queued messages with their sidecars, the
//! corrupt and dead-letter directories.
//!
//! Layout under `data_dir`:
//! - `spool/tmp/`: messages being received (`ID.eml`) and sidecars being written. Nothing
//!   in it was ever acknowledged, so recovery empties it.
//! - `spool/queue/`: `ID.eml` (the message) and `ID.json` (its [`QueueEntry`]). A message is
//!   queued when both exist and the sidecar's `size` matches the data file.
//! - `spool/corrupt/`: what recovery found inconsistent, kept for a human to look at.
//! - `dead/`: messages that outlived `queue.max_lifetime`; the sidecar carries the reason.

use super::commit::Committer;
use super::error::SpoolError;
use crate::envelope::Envelope;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Receiving buffer: large enough that a typical message is written in a few syscalls.
const INCOMING_BUFFER: usize = 256 * 1024;

/// A queued message's state, stored as `spool/queue/ID.json` beside `ID.eml`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct QueueEntry {
    pub envelope: Envelope,
    /// Delivery units still to do.
    pub pending: Vec<Pending>,
    /// Permanent failures so far, reported in the DSN once nothing is pending.
    #[serde(default)]
    pub failed: Vec<FailedRcpt>,
    /// Attempts made so far.
    #[serde(default)]
    pub attempts: u32,
    /// When to try next, Unix time in **milliseconds** (sub-second backoffs in tests);
    /// 0 means now. `queue retry` sets it to 0.
    #[serde(default)]
    pub next_attempt: i64,
    #[serde(default)]
    pub last_error: Option<String>,
    /// Send a DSN to the sender when recipients fail permanently or the message dies.
    #[serde(default)]
    pub dsn: bool,
    /// Size of the data file; recovery rejects an entry whose file differs (torn write).
    pub size: u64,
    /// Bodies a route's filters changed, beside the data file as `ID.NAME.eml`; units name
    /// theirs in [`Pending::body`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bodies: Vec<BodyFile>,
}

impl QueueEntry {
    /// A fresh entry to be attempted at once; `size` is taken from `envelope.size`, which
    /// must be the size of the spooled message.
    pub fn new(envelope: Envelope, pending: Vec<Pending>, dsn: bool) -> Self {
        let size = envelope.size;
        QueueEntry {
            envelope,
            pending,
            failed: Vec::new(),
            attempts: 0,
            next_attempt: 0,
            last_error: None,
            dsn,
            size,
            bodies: Vec::new(),
        }
    }

    pub fn id(&self) -> &str {
        &self.envelope.id
    }

    /// Recipients still pending, in unit order.
    pub fn pending_rcpts(&self) -> impl Iterator<Item = &str> {
        self.pending
            .iter()
            .flat_map(|u| u.rcpts.iter().map(String::as_str))
    }
}

/// One delivery unit: the recipients of one route that one sink still has to take.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Pending {
    pub route: String,
    pub sink: String,
    pub rcpts: Vec<String>,
    /// The sink's `Delivery::id`: stable across attempts so a retry overwrites or is
    /// recognised instead of duplicating.
    pub unit_id: String,
    #[serde(default)]
    pub last_error: Option<String>,
    /// An attempt of this unit may have happened before (even one cut short by a crash):
    /// sinks then look for what it wrote before writing again.
    #[serde(default)]
    pub attempted: bool,
    /// The body this unit delivers when its route's filters changed the message: a
    /// [`BodyFile::name`] of the entry. `None`: the message as received.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
}

/// A body a route's filters made, kept beside the message as `ID.NAME.eml`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct BodyFile {
    /// Letters and digits only, so `ID.NAME.eml` cannot be read as another message's file.
    pub name: String,
    /// Recovery rejects an entry whose body has another size (torn write).
    pub size: u64,
}

/// The file a unit delivers: `message` itself, or the filtered body `NAME` beside it
/// (`DIR/ID.eml` → `DIR/ID.NAME.eml`). Works wherever the message lives (spool/tmp,
/// spool/queue, a temporary directory), since bodies always sit next to their message.
pub fn body_path(message: &Path, body: Option<&str>) -> PathBuf {
    let Some(name) = body else {
        return message.to_path_buf();
    };
    let stem = message
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_suffix(".eml"))
        .unwrap_or_default();
    message.with_file_name(format!("{stem}.{name}.eml"))
}

/// A body name is safe in a file name and cannot be mistaken for an ID's extension.
pub fn check_body_name(name: &str) -> Result<(), SpoolError> {
    if !name.is_empty() && name.len() <= 32 && name.bytes().all(|b| b.is_ascii_alphanumeric()) {
        Ok(())
    } else {
        Err(SpoolError::Invalid(format!("invalid body name {name:?}")))
    }
}

/// `(ID, NAME)` from `ID.NAME.eml` when both are valid.
pub(crate) fn body_file_id(name: &std::ffi::OsStr) -> Option<(String, String)> {
    let stem = name.to_str()?.strip_suffix(".eml")?;
    let (id, body) = stem.split_once('.')?;
    check_id(id).ok()?;
    check_body_name(body).ok()?;
    Some((id.to_string(), body.to_string()))
}

/// A recipient that failed permanently.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct FailedRcpt {
    pub rcpt: String,
    pub sink: String,
    /// Enhanced status code, e.g. "5.1.1".
    pub status: String,
    pub message: String,
}

/// A dead letter's sidecar: the entry as it was, plus why and when it died.
#[derive(Serialize)]
struct DeadLetter<'a> {
    dead_reason: &'a str,
    /// Unix seconds.
    died_at: i64,
    #[serde(flatten)]
    entry: &'a QueueEntry,
}

/// Run as root (`sudo mailchute queue …`), a file the CLI writes would become root's and
/// unreadable (0600) to a daemon running as its own user: give it the directory's owner.
pub(crate) fn keep_owner(file: &Path, target: &Path) {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return;
    }
    let Some(dir) = target.parent() else {
        return;
    };
    if let Ok(meta) = fs::metadata(dir)
        && meta.uid() != 0
        && let Err(e) = std::os::unix::fs::chown(file, Some(meta.uid()), Some(meta.gid()))
    {
        tracing::warn!(path = %file.display(), error = %e, "could not give the file to the spool owner");
    }
}

/// The directories, shared by the daemon's [`Spool`] and the CLI (which has no committer).
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    pub tmp: PathBuf,
    pub queue: PathBuf,
    pub corrupt: PathBuf,
    pub dead: PathBuf,
    /// `queue retry` requests: one empty file per message ID, taken by the daemon.
    pub retry: PathBuf,
}

impl Layout {
    pub fn new(data_dir: &Path) -> Self {
        let spool = data_dir.join("spool");
        Layout {
            tmp: spool.join("tmp"),
            queue: spool.join("queue"),
            corrupt: spool.join("corrupt"),
            retry: spool.join("retry"),
            dead: data_dir.join("dead"),
        }
    }

    pub fn retry_request(&self, id: &str) -> PathBuf {
        self.retry.join(id)
    }

    pub fn message(&self, id: &str) -> PathBuf {
        self.queue.join(format!("{id}.eml"))
    }

    pub fn sidecar(&self, id: &str) -> PathBuf {
        self.queue.join(format!("{id}.json"))
    }

    /// A filtered body of a queued message, `queue/ID.NAME.eml`.
    pub fn body(&self, id: &str, name: &str) -> PathBuf {
        self.queue.join(format!("{id}.{name}.eml"))
    }

    /// Reads a queued entry; a missing sidecar is [`SpoolError::NotQueued`].
    pub fn load(&self, id: &str) -> Result<QueueEntry, SpoolError> {
        check_id(id)?;
        let path = self.sidecar(id);
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|source| SpoolError::Sidecar { path, source }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(SpoolError::NotQueued {
                id: id.to_string(),
                dir: self.queue.clone(),
            }),
            Err(e) => Err(SpoolError::io("read", path, e)),
        }
    }

    /// IDs with a sidecar in the queue, sorted (IDs sort by arrival).
    pub fn sidecar_ids(&self) -> Result<Vec<String>, SpoolError> {
        let mut ids = Vec::new();
        for entry in
            fs::read_dir(&self.queue).map_err(|e| SpoolError::io("list", &self.queue, e))?
        {
            let entry = entry.map_err(|e| SpoolError::io("list", &self.queue, e))?;
            if let Some(id) = file_id(&entry.file_name(), ".json") {
                ids.push(id);
            }
        }
        ids.sort();
        Ok(ids)
    }

    /// Writes `bytes` to `target` through a temporary file in `tmp/` and a rename, so a
    /// reader sees the old or the new content, never a part. `fsync` makes it durable on
    /// its own (the CLI); the daemon leaves that to a committer round.
    pub fn write_atomically(
        &self,
        target: &Path,
        bytes: &[u8],
        fsync: bool,
    ) -> Result<(), SpoolError> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let name = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = self.tmp.join(format!(
            "{name}.{}.{}.tmp",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let result = (|| {
            let mut file = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(|e| SpoolError::io("create", &tmp, e))?;
            file.write_all(bytes)
                .map_err(|e| SpoolError::io("write", &tmp, e))?;
            if fsync {
                file.sync_all()
                    .map_err(|e| SpoolError::io("fsync", &tmp, e))?;
            }
            drop(file);
            keep_owner(&tmp, target);
            fs::rename(&tmp, target).map_err(|e| SpoolError::io("rename into place", target, e))
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }
}

/// The spool of one daemon (or one `deliver`/`sendmail` process).
pub struct Spool {
    data_dir: PathBuf,
    layout: Layout,
    committer: Arc<Committer>,
    /// IDs between the first rename and the end of the sync round in `enqueue`: the queue's
    /// rescan must not pick them up before they are acknowledged (or rolled back).
    enqueuing: Mutex<HashSet<String>>,
}

impl Spool {
    /// Opens (creating, mode 0700) the spool directories under `data_dir`.
    pub fn open(data_dir: &Path, committer: Arc<Committer>) -> Result<Spool, SpoolError> {
        let layout = Layout::new(data_dir);
        for dir in [
            &layout.tmp,
            &layout.queue,
            &layout.corrupt,
            &layout.retry,
            &layout.dead,
        ] {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| SpoolError::io("create directory", dir, e))?;
        }
        Ok(Spool {
            data_dir: data_dir.to_path_buf(),
            layout,
            committer,
            enqueuing: Mutex::new(HashSet::new()),
        })
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub fn queue_dir(&self) -> &Path {
        &self.layout.queue
    }

    pub fn dead_dir(&self) -> &Path {
        &self.layout.dead
    }

    pub fn corrupt_dir(&self) -> &Path {
        &self.layout.corrupt
    }

    pub fn committer(&self) -> &Arc<Committer> {
        &self.committer
    }

    /// IDs that `queue retry` asked to retry now.
    pub fn retry_requests(&self) -> Result<Vec<String>, SpoolError> {
        let dir = &self.layout.retry;
        let mut ids = Vec::new();
        for entry in fs::read_dir(dir).map_err(|e| SpoolError::io("list", dir, e))? {
            let entry = entry.map_err(|e| SpoolError::io("list", dir, e))?;
            if let Some(id) = entry.file_name().to_str().filter(|id| check_id(id).is_ok()) {
                ids.push(id.to_string());
            }
        }
        Ok(ids)
    }

    /// Takes a retry request away (done, or about nothing any more). No sync: a request
    /// that comes back after a crash only makes one more attempt.
    pub fn clear_retry_request(&self, id: &str) {
        let path = self.layout.retry_request(id);
        if let Err(e) = fs::remove_file(&path)
            && e.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!(path = %path.display(), error = %e, "could not remove a retry request");
        }
    }

    /// Start-up check, before anything is received or delivered: empties `spool/tmp/`
    /// (nothing there was acknowledged), moves inconsistent queue entries to
    /// `spool/corrupt/` with a log line, and returns the valid ones sorted by ID.
    pub fn recover(&self) -> Result<Vec<QueueEntry>, SpoolError> {
        let tmp = &self.layout.tmp;
        let mut cleaned = 0usize;
        for entry in fs::read_dir(tmp).map_err(|e| SpoolError::io("list", tmp, e))? {
            let entry = entry.map_err(|e| SpoolError::io("list", tmp, e))?;
            let path = entry.path();
            if path.is_dir() {
                continue;
            }
            match fs::remove_file(&path) {
                Ok(()) => cleaned += 1,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(SpoolError::io("remove", path, e)),
            }
        }
        if cleaned > 0 {
            tracing::info!(
                dir = %tmp.display(),
                files = cleaned,
                "removed unacknowledged partial messages"
            );
        }

        // id -> (has data file, has sidecar, filtered bodies found)
        let queue = &self.layout.queue;
        let mut found: BTreeMap<String, (bool, bool, Vec<String>)> = BTreeMap::new();
        for entry in fs::read_dir(queue).map_err(|e| SpoolError::io("list", queue, e))? {
            let entry = entry.map_err(|e| SpoolError::io("list", queue, e))?;
            let name = entry.file_name();
            if let Some(id) = file_id(&name, ".eml") {
                found.entry(id).or_default().0 = true;
            } else if let Some(id) = file_id(&name, ".json") {
                found.entry(id).or_default().1 = true;
            } else if let Some((id, body)) = body_file_id(&name) {
                found.entry(id).or_default().2.push(body);
            } else {
                tracing::warn!(path = %entry.path().display(), "unexpected file in the queue directory, left alone");
            }
        }

        let mut valid = Vec::new();
        for (id, (has_data, has_sidecar, bodies)) in found {
            match self.check_entry(&id, has_data, has_sidecar) {
                Ok(entry) => {
                    // A body no unit names was left by an enqueue that never finished.
                    for body in bodies
                        .iter()
                        .filter(|b| !entry.bodies.iter().any(|f| &&f.name == b))
                    {
                        tracing::warn!(id = %id, body = %body, dir = %self.layout.corrupt.display(), "filtered body that its entry does not name moved aside");
                        self.move_to_corrupt(&self.layout.body(&id, body))?;
                    }
                    valid.push(entry);
                }
                Err(problem) => {
                    tracing::warn!(id = %id, problem = %problem, dir = %self.layout.corrupt.display(), "corrupt queue entry moved aside");
                    let mut paths = vec![self.layout.message(&id), self.layout.sidecar(&id)];
                    paths.extend(bodies.iter().map(|b| self.layout.body(&id, b)));
                    for path in paths {
                        if path.exists() {
                            self.move_to_corrupt(&path)?;
                        }
                    }
                }
            }
        }
        Ok(valid)
    }

    /// Why a queue entry is not usable, or the entry.
    fn check_entry(
        &self,
        id: &str,
        has_data: bool,
        has_sidecar: bool,
    ) -> Result<QueueEntry, String> {
        if !has_sidecar {
            return Err(
                "data file without sidecar (enqueue interrupted before it was acknowledged)".into(),
            );
        }
        let entry = self.layout.load(id).map_err(|e| e.to_string())?;
        if entry.envelope.id != id {
            return Err(format!(
                "sidecar names message {:?}, expected {id:?}",
                entry.envelope.id
            ));
        }
        if !has_data {
            return Err("sidecar without data file".into());
        }
        let path = self.layout.message(id);
        let size = fs::metadata(&path)
            .map_err(|e| format!("stat {}: {e}", path.display()))?
            .len();
        if size != entry.size {
            return Err(format!(
                "data file has {size} bytes, sidecar records {} (torn write)",
                entry.size
            ));
        }
        for body in &entry.bodies {
            check_body_name(&body.name).map_err(|e| e.to_string())?;
            let path = self.layout.body(id, &body.name);
            let size = fs::metadata(&path)
                .map_err(|e| format!("filtered body {}: {e}", path.display()))?
                .len();
            if size != body.size {
                return Err(format!(
                    "filtered body {} has {size} bytes, sidecar records {} (torn write)",
                    path.display(),
                    body.size
                ));
            }
        }
        Ok(entry)
    }

    fn move_to_corrupt(&self, path: &Path) -> Result<(), SpoolError> {
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        let mut target = self.layout.corrupt.join(&*name);
        if target.exists() {
            target = self.layout.corrupt.join(format!("{name}.{}", now_millis()));
        }
        fs::rename(path, &target).map_err(|e| SpoolError::io("move to corrupt/", path, e))
    }

    /// A new message being received, as `spool/tmp/ID.eml`.
    pub fn incoming(&self, id: &str) -> Result<Incoming, SpoolError> {
        Incoming::create(&self.layout.tmp, id)
    }

    /// Durably queues a finished message: moves it to `queue/ID.eml`, writes the sidecar
    /// `queue/ID.json`, then waits for one committer round covering both. Only an `Ok`
    /// may be acknowledged. `entry` must describe `msg` (same ID, `size` = `msg.size`).
    ///
    /// On error nothing stays queued (best effort rollback), so a 4xx answer never leaves
    /// a copy behind that would be delivered as well as the client's resend.
    pub async fn enqueue(&self, msg: SpooledMessage, entry: &QueueEntry) -> Result<(), SpoolError> {
        let received = msg.path.clone();
        let result = self.enqueue_files(msg, entry).await;
        if result.is_err() {
            // Whatever did not make it into the queue is no message any more: the client
            // hears 4xx and sends it again.
            if let Err(e) = fs::remove_file(&received)
                && e.kind() != io::ErrorKind::NotFound
            {
                tracing::warn!(path = %received.display(), error = %e, "could not remove a message that was not queued");
            }
        }
        result
    }

    async fn enqueue_files(
        &self,
        msg: SpooledMessage,
        entry: &QueueEntry,
    ) -> Result<(), SpoolError> {
        check_id(&msg.id)?;
        if entry.envelope.id != msg.id {
            return Err(SpoolError::Invalid(format!(
                "enqueue: entry is for message {}, the spooled file is {}",
                entry.envelope.id, msg.id
            )));
        }
        if entry.size != msg.size {
            return Err(SpoolError::Invalid(format!(
                "enqueue {}: entry records {} bytes, the spooled file has {}",
                msg.id, entry.size, msg.size
            )));
        }
        for body in &entry.bodies {
            check_body_name(&body.name)?;
        }
        let json = to_json(entry)?;
        let _guard = EnqueueGuard::new(&self.enqueuing, &msg.id);
        let layout = self.layout.clone();
        let id = msg.id.clone();
        let bodies: Vec<String> = entry.bodies.iter().map(|b| b.name.clone()).collect();
        let names = bodies.clone();
        let written = blocking(move || {
            // Filtered bodies first: the data file and the sidecar make the entry, so until
            // both exist, recovery sets whatever got here aside.
            let mut moved = Vec::new();
            let undo = |moved: &[PathBuf]| moved.iter().for_each(|p| drop(fs::remove_file(p)));
            for name in &names {
                let (from, to) = (body_path(&msg.path, Some(name)), layout.body(&id, name));
                if let Err(e) = fs::rename(&from, &to) {
                    undo(&moved);
                    return Err(SpoolError::io("move into the queue", &from, e));
                }
                moved.push(to);
            }
            let data = layout.message(&id);
            if let Err(e) = fs::rename(&msg.path, &data) {
                undo(&moved);
                return Err(SpoolError::io("move into the queue", &msg.path, e));
            }
            moved.push(data);
            if let Err(e) = layout.write_atomically(&layout.sidecar(&id), &json, false) {
                undo(&moved);
                return Err(e);
            }
            Ok(())
        })
        .await;
        written?;
        let mut files = vec![self.layout.message(&msg.id), self.layout.sidecar(&msg.id)];
        files.extend(bodies.iter().map(|b| self.layout.body(&msg.id, b)));
        let mut paths: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();
        paths.push(&self.layout.queue);
        if let Err(e) = self.committer.sync(&paths).await {
            let _ = blocking(move || {
                // The sidecar first: without it nothing here counts as queued.
                for path in files.iter().skip(1).chain(files.iter().take(1)) {
                    let _ = fs::remove_file(path);
                }
                Ok(())
            })
            .await;
            return Err(SpoolError::io("sync", &self.layout.queue, e));
        }
        Ok(())
    }

    /// Rewrites the sidecar durably. Fails with [`SpoolError::NotQueued`] when the message
    /// is gone (`queue delete` from another process): the sidecar is not brought back.
    pub async fn update(&self, entry: &QueueEntry) -> Result<(), SpoolError> {
        let id = entry.envelope.id.clone();
        check_id(&id)?;
        let json = to_json(entry)?;
        let layout = self.layout.clone();
        blocking(move || {
            let data = layout.message(&id);
            let gone = || SpoolError::NotQueued {
                id: id.clone(),
                dir: layout.queue.clone(),
            };
            if !data.exists() {
                return Err(gone());
            }
            let sidecar = layout.sidecar(&id);
            layout.write_atomically(&sidecar, &json, false)?;
            // A delete that ran between the check and the rename: undo our resurrection.
            if !data.exists() {
                let _ = fs::remove_file(&sidecar);
                return Err(gone());
            }
            Ok(())
        })
        .await?;
        let sidecar = self.layout.sidecar(&entry.envelope.id);
        self.committer
            .sync(&[&sidecar, &self.layout.queue])
            .await
            .map_err(|e| SpoolError::io("sync", &self.layout.queue, e))
    }

    /// Forgets a delivered message. No sync: if the deletion is lost in a crash the
    /// message is delivered again, which at-least-once allows. The data file goes first,
    /// so a crash in between leaves a sidecar that recovery sets aside, not a redelivery.
    pub async fn remove(&self, entry: &QueueEntry) -> Result<(), SpoolError> {
        let id = entry.envelope.id.clone();
        check_id(&id)?;
        let layout = self.layout.clone();
        let bodies: Vec<String> = entry.bodies.iter().map(|b| b.name.clone()).collect();
        blocking(move || {
            let mut paths = vec![layout.message(&id), layout.sidecar(&id)];
            paths.extend(bodies.iter().map(|b| layout.body(&id, b)));
            for path in paths {
                match fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(SpoolError::io("remove", path, e)),
                }
            }
            Ok(())
        })
        .await
    }

    /// Moves the message to `dead/` with the reason in its sidecar, durably.
    pub async fn dead_letter(&self, entry: &QueueEntry, reason: &str) -> Result<(), SpoolError> {
        let id = entry.envelope.id.clone();
        check_id(&id)?;
        let json = serde_json::to_vec_pretty(&DeadLetter {
            dead_reason: reason,
            died_at: crate::envelope::now_unix(),
            entry,
        })
        .map_err(|e| SpoolError::Invalid(format!("serialising dead letter {id}: {e}")))?;
        let layout = self.layout.clone();
        let bodies: Vec<String> = entry.bodies.iter().map(|b| b.name.clone()).collect();
        blocking(move || {
            let dead_sidecar = layout.dead.join(format!("{id}.json"));
            layout.write_atomically(&dead_sidecar, &json, false)?;
            let data = layout.message(&id);
            let dead_data = layout.dead.join(format!("{id}.eml"));
            if let Err(e) = fs::rename(&data, &dead_data) {
                let _ = fs::remove_file(&dead_sidecar);
                return Err(if e.kind() == io::ErrorKind::NotFound {
                    SpoolError::NotQueued {
                        id: id.clone(),
                        dir: layout.queue.clone(),
                    }
                } else {
                    SpoolError::io("move to dead/", data, e)
                });
            }
            for name in &bodies {
                let body = layout.body(&id, name);
                let dead_body = layout.dead.join(format!("{id}.{name}.eml"));
                if let Err(e) = fs::rename(&body, &dead_body)
                    && e.kind() != io::ErrorKind::NotFound
                {
                    tracing::warn!(path = %body.display(), error = %e, "could not move a filtered body to dead/");
                }
            }
            let sidecar = layout.sidecar(&id);
            match fs::remove_file(&sidecar) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(SpoolError::io("remove", sidecar, e)),
            }
        })
        .await?;
        // The data file was fsynced when it was queued; the renames need both directories.
        let dead_sidecar = self.layout.dead.join(format!("{}.json", entry.envelope.id));
        self.committer
            .sync(&[&dead_sidecar, &self.layout.dead, &self.layout.queue])
            .await
            .map_err(|e| SpoolError::io("sync", &self.layout.dead, e))
    }

    /// The queued message's data file, `spool/queue/ID.eml`.
    pub fn message_path(&self, id: &str) -> PathBuf {
        self.layout.message(id)
    }

    /// The queued message's sidecar, `spool/queue/ID.json`.
    pub fn sidecar_path(&self, id: &str) -> PathBuf {
        self.layout.sidecar(id)
    }

    pub fn load(&self, id: &str) -> Result<QueueEntry, SpoolError> {
        self.layout.load(id)
    }

    /// Every readable queue entry, sorted by ID. Entries that vanish while listing are
    /// skipped; unreadable ones are logged and skipped (recovery sets them aside).
    pub fn list(&self) -> Result<Vec<QueueEntry>, SpoolError> {
        let mut entries = Vec::new();
        for id in self.layout.sidecar_ids()? {
            match self.layout.load(&id) {
                Ok(entry) => entries.push(entry),
                Err(e) if e.is_not_queued() => {}
                Err(e) => tracing::warn!(id = %id, error = %e, "unreadable queue entry skipped"),
            }
        }
        Ok(entries)
    }

    /// True while `enqueue` of this ID has not finished.
    pub(crate) fn is_enqueuing(&self, id: &str) -> bool {
        self.enqueuing
            .lock()
            .map(|set| set.contains(id))
            .unwrap_or(false)
    }
}

/// A message being received: bytes collect in a large buffer that a blocking-pool thread
/// writes to the page cache, so a slow disk stalls this message, never the runtime's
/// workers (and every other session on them). There is no fsync here: durability comes
/// from the committer round in [`Spool::enqueue`], or from the sinks in sync mode. Dropped
/// without [`finish`](Self::finish) or [`discard`](Self::discard), the file is deleted.
pub struct Incoming {
    id: String,
    path: PathBuf,
    /// `None` once finished or discarded (or while a write of the buffer is under way).
    file: Option<File>,
    /// Bytes not yet handed to the file.
    buf: Vec<u8>,
    size: u64,
}

impl Incoming {
    /// A new file `DIR/ID.eml` (mode 0600), for messages that are received outside a spool
    /// (an ingress whose upstream MTA keeps the durable copy).
    pub fn create(dir: &Path, id: &str) -> Result<Incoming, SpoolError> {
        check_id(id)?;
        let path = dir.join(format!("{id}.eml"));
        let file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| SpoolError::io("create", &path, e))?;
        Ok(Incoming {
            id: id.to_string(),
            path,
            file: Some(file),
            buf: Vec::with_capacity(INCOMING_BUFFER),
            size: 0,
        })
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes written so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    pub async fn write(&mut self, data: &[u8]) -> io::Result<()> {
        if self.file.is_none() {
            return Err(io::Error::other("spool file already closed"));
        }
        self.buf.extend_from_slice(data);
        self.size += data.len() as u64;
        if self.buf.len() >= INCOMING_BUFFER {
            self.write_buffer().await?;
        }
        Ok(())
    }

    /// Hands the buffer to a blocking thread and waits for it.
    async fn write_buffer(&mut self) -> io::Result<()> {
        let Some(mut file) = self.file.take() else {
            return Err(io::Error::other("spool file already closed"));
        };
        let mut buf = std::mem::take(&mut self.buf);
        let (file, buf, result) = tokio::task::spawn_blocking(move || {
            let result = file.write_all(&buf);
            buf.clear();
            (file, buf, result)
        })
        .await
        .map_err(|e| io::Error::other(format!("spool writer thread failed: {e}")))?;
        // After a failed write the file has a hole: it stays closed, so every later write
        // and `finish` fail too and nothing can pass it on as the message.
        if result.is_ok() {
            self.file = Some(file);
            self.buf = buf;
        }
        result
    }

    /// Writes what is buffered and closes the file, which stays where it is until enqueued
    /// or discarded.
    pub async fn finish(mut self) -> io::Result<SpooledMessage> {
        if let Err(e) = self.write_buffer().await {
            let path = self.path.display().to_string();
            self.delete();
            return Err(io::Error::new(e.kind(), format!("write {path}: {e}")));
        }
        self.file = None;
        Ok(SpooledMessage {
            id: std::mem::take(&mut self.id),
            path: std::mem::take(&mut self.path),
            size: self.size,
        })
    }

    /// Deletes the partial message.
    pub fn discard(mut self) {
        self.delete();
    }

    fn delete(&mut self) {
        if self.path.as_os_str().is_empty() {
            return;
        }
        self.file = None;
        self.buf = Vec::new();
        let _ = fs::remove_file(&self.path);
        self.path = PathBuf::new();
    }
}

impl Drop for Incoming {
    fn drop(&mut self) {
        self.delete();
    }
}

/// A completely received message in `spool/tmp/`. Hand it to [`Spool::enqueue`], or
/// [`discard`](Self::discard) it; dropped, the file stays until the next recovery.
#[derive(Debug)]
pub struct SpooledMessage {
    pub id: String,
    pub path: PathBuf,
    pub size: u64,
}

impl SpooledMessage {
    /// Deletes the file (sync mode: delivered everywhere, or rejected everywhere).
    pub fn discard(self) {
        if let Err(e) = fs::remove_file(&self.path)
            && e.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!(path = %self.path.display(), error = %e, "could not delete spooled message");
        }
    }
}

/// Removes the ID from the in-progress set however `enqueue` ends.
struct EnqueueGuard<'a> {
    set: &'a Mutex<HashSet<String>>,
    id: String,
}

impl<'a> EnqueueGuard<'a> {
    fn new(set: &'a Mutex<HashSet<String>>, id: &str) -> Self {
        if let Ok(mut s) = set.lock() {
            s.insert(id.to_string());
        }
        EnqueueGuard {
            set,
            id: id.to_string(),
        }
    }
}

impl Drop for EnqueueGuard<'_> {
    fn drop(&mut self) {
        if let Ok(mut s) = self.set.lock() {
            s.remove(&self.id);
        }
    }
}

/// IDs become file names: only a safe alphabet, so `queue show ../../etc` cannot escape.
pub(crate) fn check_id(id: &str) -> Result<(), SpoolError> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(SpoolError::InvalidId { id: id.to_string() })
    }
}

/// `ID` from `ID.ext` when ID is valid.
pub(crate) fn file_id(name: &std::ffi::OsStr, ext: &str) -> Option<String> {
    let name = name.to_str()?;
    let id = name.strip_suffix(ext)?;
    check_id(id).ok().map(|()| id.to_string())
}

fn to_json(entry: &QueueEntry) -> Result<Vec<u8>, SpoolError> {
    serde_json::to_vec_pretty(entry).map_err(|e| {
        SpoolError::Invalid(format!(
            "serialising queue entry {}: {e}",
            entry.envelope.id
        ))
    })
}

/// Runs filesystem work off the async workers: renames and small writes can stall behind
/// a running syncfs.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, SpoolError> + Send + 'static,
) -> Result<T, SpoolError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| SpoolError::Invalid(format!("spool worker thread failed: {e}")))?
}

/// Unix time in milliseconds.
pub fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
