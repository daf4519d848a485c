//! The background delivery queue: retries with exponential backoff, dead letters, DSNs.
//!
//! One scheduler task starts attempts (at most `queue.workers` at once) when entries are
//! due; one rescan task notices what another process (`mailchute queue retry|delete`)
//! changed in `spool/queue/`. Every state change is written to the sidecar before the
//! entry is scheduled again, so a restart continues where the daemon stopped.

use super::dsn;
use super::error::SpoolError;
use super::store::{FailedRcpt, Pending, QueueEntry, Spool, file_id, now_millis};
use crate::config::QueueConfig;
use crate::delivery::{BoxFuture, RcptResults};
use crate::envelope::{Envelope, new_id, now_unix};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::os::unix::fs::{DirEntryExt, MetadataExt};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::Duration;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

/// How often `spool/queue/` is rescanned for changes made by other processes.
pub const RESCAN_INTERVAL: Duration = Duration::from_secs(2);
/// How long [`Queue::shutdown`] waits for running attempts.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
/// Lower bound of a retry delay, so a zero `backoff_initial` cannot spin.
const MIN_BACKOFF_MS: i64 = 10;

/// Implemented by the pipeline: runs one attempt of the given units.
pub trait Deliverer: Send + Sync {
    /// One `RcptResults` per unit, aligned with `units` (each aligned with `unit.rcpts`).
    /// Missing results count as temporary failures.
    fn attempt<'a>(
        &'a self,
        envelope: &'a Envelope,
        message: &'a Path,
        units: &'a [Pending],
    ) -> BoxFuture<'a, Vec<RcptResults>>;

    /// Routes recipients (used for DSNs): the units to deliver to, or why none matches.
    fn plan(&self, envelope: &Envelope) -> Result<Vec<Pending>, String>;
}

/// Counters for status pages and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueStats {
    /// Entries the daemon knows (waiting or in delivery).
    pub queued: usize,
    /// Entries in delivery right now.
    pub in_flight: usize,
}

pub struct Queue {
    spool: Arc<Spool>,
    /// Our name for DSNs (`Reporting-MTA`, `From: MAILER-DAEMON@…`).
    hostname: String,
    /// Swapped on SIGHUP; an attempt keeps the one it started with.
    deliverer: RwLock<Arc<dyn Deliverer>>,
    config: RwLock<QueueConfig>,
    /// Limits concurrent attempts; replaced (not resized) on reload, so for a moment
    /// after a reload the old and new limits may both have attempts running.
    workers: RwLock<Arc<Semaphore>>,
    state: Mutex<State>,
    /// Wakes the scheduler: something became due, or we are stopping.
    wake: Notify,
    rescan_interval: Duration,
}

#[derive(Default)]
struct State {
    slots: HashMap<String, Slot>,
    /// (next_attempt, id) of every slot not in flight.
    schedule: BTreeSet<(i64, String)>,
    in_flight: usize,
    stopping: bool,
    /// Sidecars the rescan could not use (garbage, orphan), by inode: logged once.
    ignored: HashMap<String, u64>,
}

struct Slot {
    entry: QueueEntry,
    /// Inode of the sidecar as we last saw or wrote it: `queue retry` replaces the file,
    /// so a different inode means "reload".
    ino: Option<u64>,
    in_flight: bool,
    /// `queue retry` came while an attempt was running: attempt again right after it.
    retry_requested: bool,
}

impl State {
    fn insert(&mut self, entry: QueueEntry, ino: Option<u64>) {
        let id = entry.envelope.id.clone();
        if let Some(old) = self.slots.get(&id)
            && !old.in_flight
        {
            self.schedule.remove(&(old.entry.next_attempt, id.clone()));
        }
        self.schedule.insert((entry.next_attempt, id.clone()));
        self.slots.insert(
            id,
            Slot {
                entry,
                ino,
                in_flight: false,
                retry_requested: false,
            },
        );
    }

    fn forget(&mut self, id: &str) {
        if let Some(slot) = self.slots.remove(id)
            && !slot.in_flight
        {
            self.schedule
                .remove(&(slot.entry.next_attempt, id.to_string()));
        }
    }
}

enum Next {
    /// Either an entry to attempt now, or when to look again (None: when woken).
    Due(Box<QueueEntry>),
    Wait(Option<i64>),
}

/// What an attempt left behind.
enum Outcome {
    /// Still pending: schedule again.
    Retry(Box<QueueEntry>),
    /// Delivered, failed for good, dead, or deleted from outside: forget it.
    Finished,
}

impl Queue {
    /// Starts the scheduler with the entries [`Spool::recover`] returned. Must be called
    /// inside a tokio runtime.
    pub fn start(
        spool: Arc<Spool>,
        deliverer: Arc<dyn Deliverer>,
        config: QueueConfig,
        hostname: String,
        recovered: Vec<QueueEntry>,
    ) -> Arc<Queue> {
        Self::start_with_rescan(
            spool,
            deliverer,
            config,
            hostname,
            recovered,
            RESCAN_INTERVAL,
        )
    }

    /// [`start`](Self::start) with another rescan interval (tests).
    pub fn start_with_rescan(
        spool: Arc<Spool>,
        deliverer: Arc<dyn Deliverer>,
        config: QueueConfig,
        hostname: String,
        recovered: Vec<QueueEntry>,
        rescan_interval: Duration,
    ) -> Arc<Queue> {
        let mut state = State::default();
        for mut entry in recovered {
            // A crash may have cut an attempt short after a sink wrote its copy.
            entry.pending.iter_mut().for_each(|u| u.attempted = true);
            state.insert(entry, None);
        }
        let workers = Arc::new(Semaphore::new(config.workers.max(1)));
        let queue = Arc::new(Queue {
            spool,
            hostname,
            deliverer: RwLock::new(deliverer),
            config: RwLock::new(config),
            workers: RwLock::new(workers),
            state: Mutex::new(state),
            wake: Notify::new(),
            rescan_interval,
        });
        tokio::spawn(queue.clone().schedule_loop());
        tokio::spawn(queue.clone().rescan_loop());
        queue
    }

    /// Hands over an entry that [`Spool::enqueue`] has made durable; it is attempted when
    /// `next_attempt` is due (normally at once). After shutdown this does nothing: the
    /// entry stays in the spool for the next start.
    pub fn submit(&self, entry: QueueEntry) {
        let mut state = self.state();
        if state.stopping {
            tracing::debug!(id = %entry.envelope.id, "queue stopping; entry left in the spool");
            return;
        }
        if state
            .slots
            .get(&entry.envelope.id)
            .is_some_and(|s| s.in_flight)
        {
            return;
        }
        state.insert(entry, None);
        drop(state);
        self.wake.notify_one();
    }

    /// SIGHUP: new routes/sinks and retry settings. Running attempts finish with the old
    /// deliverer; scheduled retry times are kept.
    pub fn reload(&self, deliverer: Arc<dyn Deliverer>, config: QueueConfig) {
        *self
            .deliverer
            .write()
            .unwrap_or_else(PoisonError::into_inner) = deliverer;
        let workers = config.workers.max(1);
        let mut current = self.config.write().unwrap_or_else(PoisonError::into_inner);
        if current.workers.max(1) != workers {
            *self.workers.write().unwrap_or_else(PoisonError::into_inner) =
                Arc::new(Semaphore::new(workers));
        }
        *current = config;
        drop(current);
        self.wake.notify_one();
    }

    /// Stops starting attempts and waits (at most [`SHUTDOWN_GRACE`]) for running ones.
    /// Every entry stays in the spool.
    pub async fn shutdown(&self) {
        self.state().stopping = true;
        self.wake.notify_one();
        let deadline = tokio::time::Instant::now() + SHUTDOWN_GRACE;
        loop {
            let running = self.state().in_flight;
            if running == 0 {
                return;
            }
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(
                    running,
                    "queue shutdown: attempts still running; they stay queued"
                );
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// How many queued delivery units wait for each sink (by name).
    pub fn units_by_sink(&self) -> HashMap<String, usize> {
        let mut counts = HashMap::new();
        for slot in self.state().slots.values() {
            for unit in &slot.entry.pending {
                *counts.entry(unit.sink.clone()).or_insert(0) += 1;
            }
        }
        counts
    }

    pub fn stats(&self) -> QueueStats {
        let state = self.state();
        QueueStats {
            queued: state.slots.len(),
            in_flight: state.in_flight,
        }
    }

    fn deliverer(&self) -> Arc<dyn Deliverer> {
        self.deliverer
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn config(&self) -> QueueConfig {
        self.config
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The state lock; a panic elsewhere while holding it leaves data that is still
    /// consistent enough to keep delivering.
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn schedule_loop(self: Arc<Self>) {
        loop {
            let workers = self
                .workers
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .clone();
            let permit = tokio::select! {
                p = workers.acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => return,
                },
                // Stopping, or a reload replaced the semaphore.
                _ = self.wake.notified() => {
                    if self.stopping() { return; }
                    continue;
                }
            };
            let now = now_millis();
            match self.take_due(now) {
                None => return,
                Some(Next::Due(entry)) => {
                    tokio::spawn(self.clone().run_attempt(entry, permit));
                }
                Some(Next::Wait(at)) => {
                    drop(permit);
                    // An hour when idle: rescans and submits wake us anyway.
                    let wait = at.map_or(3_600_000, |at| (at - now).max(0));
                    tokio::select! {
                        _ = self.wake.notified() => {}
                        _ = tokio::time::sleep(Duration::from_millis(wait as u64)) => {}
                    }
                }
            }
        }
    }

    fn stopping(&self) -> bool {
        self.state().stopping
    }

    /// The first due entry, marked in flight; `None` when stopping.
    fn take_due(&self, now: i64) -> Option<Next> {
        let mut state = self.state();
        if state.stopping {
            return None;
        }
        let Some((at, id)) = state.schedule.first().cloned() else {
            return Some(Next::Wait(None));
        };
        if at > now {
            return Some(Next::Wait(Some(at)));
        }
        state.schedule.remove(&(at, id.clone()));
        let Some(slot) = state.slots.get_mut(&id) else {
            return Some(Next::Wait(Some(now)));
        };
        slot.in_flight = true;
        let entry = slot.entry.clone();
        state.in_flight += 1;
        Some(Next::Due(Box::new(entry)))
    }

    async fn run_attempt(self: Arc<Self>, entry: Box<QueueEntry>, _permit: OwnedSemaphorePermit) {
        let id = entry.envelope.id.clone();
        let outcome = self.attempt(*entry).await;
        let ino = match &outcome {
            Outcome::Retry(_) => std::fs::metadata(self.spool.sidecar_path(&id))
                .ok()
                .map(|m| m.ino()),
            Outcome::Finished => None,
        };
        let mut state = self.state();
        state.in_flight = state.in_flight.saturating_sub(1);
        match outcome {
            Outcome::Retry(mut entry) => {
                if let Some(slot) = state.slots.get_mut(&id) {
                    slot.in_flight = false;
                    if slot.retry_requested {
                        entry.next_attempt = now_millis();
                    }
                }
                state.insert(*entry, ino);
            }
            Outcome::Finished => {
                state.slots.remove(&id);
            }
        }
        drop(state);
        self.wake.notify_one();
    }

    /// One attempt of `entry`'s pending units and everything that follows from it.
    async fn attempt(&self, mut entry: QueueEntry) -> Outcome {
        let id = entry.envelope.id.clone();
        let message = self.spool.message_path(&id);
        if !message.exists() {
            tracing::info!(id = %id, "queue entry deleted from outside; dropped");
            return Outcome::Finished;
        }
        let deliverer = self.deliverer();
        let config = self.config();
        let results = deliverer
            .attempt(&entry.envelope, &message, &entry.pending)
            .await;
        if results.len() != entry.pending.len() {
            tracing::warn!(
                id = %id,
                units = entry.pending.len(),
                results = results.len(),
                "deliverer returned a result count that does not match the units; missing ones count as deferred"
            );
        }

        let attempt_no = entry.attempts + 1;
        let mut still_pending = Vec::new();
        let mut last_error = None;
        for (i, mut unit) in std::mem::take(&mut entry.pending).into_iter().enumerate() {
            let unit_results = results.get(i);
            let (mut delivered, mut failed) = (0usize, 0usize);
            let mut keep = Vec::new();
            let mut unit_error: Option<String> = None;
            // The attempt line's reason, permanent failures included: `unit_error` is only
            // what the retry keeps.
            let mut attempt_error: Option<String> = None;
            for (j, rcpt) in unit.rcpts.iter().enumerate() {
                match unit_results.and_then(|r| r.get(j)) {
                    Some(Ok(_)) => delivered += 1,
                    Some(Err(e)) if e.is_temporary() => {
                        keep.push(rcpt.clone());
                        unit_error = Some(e.to_string());
                    }
                    Some(Err(e)) => {
                        failed += 1;
                        attempt_error = Some(format!("<{rcpt}>: {e}"));
                        tracing::warn!(id = %id, unit = %unit.unit_id, sink = %unit.sink, rcpt = %rcpt, status = %e.status, error = %e.message, "recipient failed permanently");
                        entry.failed.push(FailedRcpt {
                            rcpt: rcpt.clone(),
                            sink: unit.sink.clone(),
                            status: e.status.clone(),
                            message: e.message.clone(),
                        });
                    }
                    None => {
                        keep.push(rcpt.clone());
                        unit_error = Some("4.3.0 no result from the delivery attempt".into());
                    }
                }
            }
            let outcome = if keep.is_empty() && failed == 0 {
                "delivered"
            } else if keep.is_empty() {
                "failed"
            } else {
                "deferred"
            };
            tracing::info!(
                id = %id,
                unit = %unit.unit_id,
                route = %unit.route,
                sink = %unit.sink,
                attempt = attempt_no,
                outcome,
                delivered,
                failed,
                deferred = keep.len(),
                error = unit_error.as_deref().or(attempt_error.as_deref()),
                "queue attempt"
            );
            if !keep.is_empty() {
                unit.rcpts = keep;
                unit.last_error = unit_error.clone();
                unit.attempted = true;
                last_error = unit_error.or(last_error);
                still_pending.push(unit);
            }
        }
        entry.pending = still_pending;

        if entry.pending.is_empty() {
            let told_by_dsn = !entry.failed.is_empty()
                && wants_dsn(&entry)
                && self.send_dsn(&entry, &entry.failed).await;
            if !entry.failed.is_empty() && !told_by_dsn {
                // Nobody will hear of the rejection by DSN (null sender, DSNs off for this
                // listener, or the DSN could not be queued): keep the message in dead/ so it
                // is not silently gone.
                let reason = entry
                    .failed
                    .iter()
                    .map(|f| format!("<{}> via {}: {} {}", f.rcpt, f.sink, f.status, f.message))
                    .collect::<Vec<_>>()
                    .join("; ");
                match self
                    .spool
                    .dead_letter(&entry, &format!("rejected: {reason}"))
                    .await
                {
                    Ok(()) => {
                        tracing::warn!(id = %id, reason = %reason, "rejected message kept in dead letters (no DSN)");
                        return Outcome::Finished;
                    }
                    Err(e) if e.is_not_queued() => return Outcome::Finished,
                    Err(e) => {
                        tracing::error!(id = %id, error = %e, "could not move rejected message to dead letters")
                    }
                }
            }
            if let Err(e) = self.spool.remove(&entry).await {
                tracing::error!(id = %id, error = %e, "could not remove finished message from the spool");
            }
            tracing::info!(id = %id, failed = entry.failed.len(), "queue entry finished");
            return Outcome::Finished;
        }

        let now = now_millis();
        entry.attempts = attempt_no;
        entry.last_error = last_error;
        let age_ms = now.saturating_sub(entry.envelope.received_at.saturating_mul(1000));
        let lifetime_ms = duration_ms(config.max_lifetime.0);
        if age_ms >= lifetime_ms {
            let last = entry.last_error.clone().unwrap_or_default();
            let reason = format!(
                "{} after {} attempts; last error: {last}",
                dsn::EXPIRED_MESSAGE,
                entry.attempts
            );
            if wants_dsn(&entry) {
                let mut failures = entry.failed.clone();
                for unit in &entry.pending {
                    for rcpt in &unit.rcpts {
                        failures.push(FailedRcpt {
                            rcpt: rcpt.clone(),
                            sink: unit.sink.clone(),
                            status: dsn::EXPIRED_STATUS.to_string(),
                            message: format!(
                                "{}; last error: {}",
                                dsn::EXPIRED_MESSAGE,
                                unit.last_error.as_deref().unwrap_or(&last)
                            ),
                        });
                    }
                }
                self.send_dsn(&entry, &failures).await;
            }
            match self.spool.dead_letter(&entry, &reason).await {
                Ok(()) => {
                    tracing::warn!(id = %id, reason = %reason, dir = %self.spool.dead_dir().display(), "message moved to dead letters");
                    return Outcome::Finished;
                }
                Err(e) if e.is_not_queued() => {
                    tracing::info!(id = %id, "queue entry deleted from outside; dropped");
                    return Outcome::Finished;
                }
                Err(e) => {
                    tracing::error!(id = %id, error = %e, "could not move message to dead letters; will retry");
                }
            }
        }

        // The last attempt comes when the lifetime ends, not up to a backoff later.
        let dies_at = now.saturating_add(lifetime_ms.saturating_sub(age_ms));
        entry.next_attempt = now
            .saturating_add(backoff_ms(&config, entry.attempts))
            .min(dies_at);
        match self.spool.update(&entry).await {
            Ok(()) => Outcome::Retry(Box::new(entry)),
            Err(e) if e.is_not_queued() => {
                tracing::info!(id = %id, "queue entry deleted from outside; dropped");
                Outcome::Finished
            }
            Err(e) => {
                // Memory is ahead of disk; a restart repeats this attempt's deliveries.
                tracing::error!(id = %id, error = %e, "could not record queue state; keeping it in memory");
                Outcome::Retry(Box::new(entry))
            }
        }
    }

    /// Queues a DSN to the entry's sender listing `failures`; true if it is in the spool.
    /// Problems are logged: a caller that gets false keeps the original in dead/.
    async fn send_dsn(&self, entry: &QueueEntry, failures: &[FailedRcpt]) -> bool {
        let id = &entry.envelope.id;
        match self.queue_dsn(entry, failures).await {
            Ok(Some(dsn)) => {
                tracing::info!(id = %id, dsn = %dsn.envelope.id, to = %entry.envelope.mail_from, recipients = failures.len(), "DSN queued");
                self.submit(dsn);
                true
            }
            Ok(None) => false,
            Err(e) => {
                tracing::error!(id = %id, to = %entry.envelope.mail_from, error = %e, "could not queue DSN");
                false
            }
        }
    }

    async fn queue_dsn(
        &self,
        entry: &QueueEntry,
        failures: &[FailedRcpt],
    ) -> Result<Option<QueueEntry>, SpoolError> {
        let original = &entry.envelope;
        let headers = dsn::read_headers(&self.spool.message_path(&original.id), dsn::HEADERS_LIMIT)
            .unwrap_or_else(|e| {
                tracing::warn!(id = %original.id, error = %e, "could not read the original headers for the DSN");
                Vec::new()
            });
        let dsn_id = new_id();
        let now = now_unix();
        let bytes = dsn::build(&self.hostname, original, failures, &headers, &dsn_id, now);
        let envelope = dsn::envelope(
            original,
            &dsn_id,
            bytes.len() as u64,
            !bytes.is_ascii(),
            now,
        );
        let dsn_sinks = self.config().dsn_sinks;
        let planned = if dsn_sinks.is_empty() {
            self.deliverer().plan(&envelope)
        } else {
            Ok(dsn_units(&envelope, &dsn_sinks))
        };
        let units = match planned {
            Ok(units) if !units.is_empty() => units,
            Ok(_) => {
                tracing::warn!(id = %original.id, to = %original.mail_from, "DSN dropped: no route for the sender");
                return Ok(None);
            }
            Err(e) => {
                tracing::warn!(id = %original.id, to = %original.mail_from, error = %e, "DSN dropped: no route for the sender");
                return Ok(None);
            }
        };
        let mut incoming = self.spool.incoming(&dsn_id)?;
        let path = incoming.path().to_path_buf();
        incoming
            .write(&bytes)
            .await
            .map_err(|e| SpoolError::io("write", &path, e))?;
        let msg = incoming
            .finish()
            .await
            .map_err(|e| SpoolError::io("write", &path, e))?;
        let dsn_entry = QueueEntry::new(envelope, units, false);
        self.spool.enqueue(msg, &dsn_entry).await?;
        Ok(Some(dsn_entry))
    }

    async fn rescan_loop(self: Arc<Self>) {
        loop {
            tokio::time::sleep(self.rescan_interval).await;
            if self.stopping() {
                return;
            }
            let queue = self.clone();
            match tokio::task::spawn_blocking(move || queue.rescan()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "queue rescan failed"),
                Err(e) => tracing::warn!(error = %e, "queue rescan task failed"),
            }
        }
    }

    /// Picks up sidecars that appeared (another process queued, or they were unknown) or
    /// were replaced (`queue retry`), and forgets entries whose sidecar is gone
    /// (`queue delete`). Entries in delivery are left alone.
    fn rescan(&self) -> Result<(), SpoolError> {
        let dir = self.spool.queue_dir();
        let mut seen = HashSet::new();
        let read = std::fs::read_dir(dir).map_err(|e| SpoolError::io("list", dir, e))?;
        let mut changed = false;
        for dirent in read {
            let dirent = dirent.map_err(|e| SpoolError::io("list", dir, e))?;
            let Some(id) = file_id(&dirent.file_name(), ".json") else {
                continue;
            };
            let ino = dirent.ino();
            seen.insert(id.clone());
            if self.spool.is_enqueuing(&id) {
                continue;
            }
            {
                let mut state = self.state();
                if state.ignored.get(&id) == Some(&ino) {
                    continue;
                }
                match state.slots.get_mut(&id) {
                    Some(slot) if slot.in_flight || slot.ino == Some(ino) => continue,
                    Some(slot) if slot.ino.is_none() => {
                        // First sight of a recovered or submitted entry: ours as is.
                        slot.ino = Some(ino);
                        continue;
                    }
                    _ => {}
                }
            }
            let entry = match self.spool.load(&id) {
                Ok(mut entry) if entry.envelope.id == id => {
                    // Another process wrote it: we cannot know what it already tried.
                    entry.pending.iter_mut().for_each(|u| u.attempted = true);
                    entry
                }
                Ok(_) | Err(_) if !self.spool.sidecar_path(&id).exists() => continue,
                Ok(entry) => {
                    self.ignore(
                        &id,
                        ino,
                        &format!("sidecar names message {}", entry.envelope.id),
                    );
                    continue;
                }
                Err(e) => {
                    self.ignore(&id, ino, &e.to_string());
                    continue;
                }
            };
            if !self.spool.message_path(&id).exists() {
                self.ignore(&id, ino, "sidecar without data file");
                continue;
            }
            let mut state = self.state();
            state.ignored.remove(&id);
            match state.slots.get(&id) {
                Some(slot) if slot.in_flight => continue,
                Some(slot) => {
                    if slot.entry.next_attempt != entry.next_attempt {
                        tracing::info!(id = %id, "queue entry rescheduled from outside");
                        state.insert(entry, Some(ino));
                        changed = true;
                    } else if let Some(slot) = state.slots.get_mut(&id) {
                        slot.ino = Some(ino);
                    }
                }
                None => {
                    tracing::info!(id = %id, "picked up queue entry from the spool");
                    state.insert(entry, Some(ino));
                    changed = true;
                }
            }
        }

        let mut state = self.state();
        state.ignored.retain(|id, _| seen.contains(id));
        let gone: Vec<String> = state
            .slots
            .iter()
            .filter(|(id, slot)| !slot.in_flight && !seen.contains(*id))
            .map(|(id, _)| id.clone())
            .collect();
        for id in gone {
            // Submitted after the directory listing: still there.
            if self.spool.sidecar_path(&id).exists() {
                continue;
            }
            tracing::info!(id = %id, "queue entry deleted from outside; dropped");
            state.forget(&id);
        }
        drop(state);
        changed |= self.take_retry_requests()?;
        if changed {
            self.wake.notify_one();
        }
        Ok(())
    }

    /// Acts on `queue retry` requests: due now, or right after the attempt under way.
    /// Returns whether the schedule changed.
    fn take_retry_requests(&self) -> Result<bool, SpoolError> {
        let mut changed = false;
        for id in self.spool.retry_requests()? {
            let mut state = self.state();
            let Some(slot) = state.slots.get_mut(&id) else {
                drop(state);
                // Not ours (yet): another process is still queueing it, or it is gone.
                if !self.spool.sidecar_path(&id).exists() {
                    self.spool.clear_retry_request(&id);
                }
                continue;
            };
            if slot.in_flight {
                slot.retry_requested = true;
            } else {
                let (mut entry, ino) = (slot.entry.clone(), slot.ino);
                entry.next_attempt = now_millis();
                state.insert(entry, ino);
                changed = true;
            }
            drop(state);
            tracing::info!(id = %id, "retry requested from outside");
            self.spool.clear_retry_request(&id);
        }
        Ok(changed)
    }

    fn ignore(&self, id: &str, ino: u64, problem: &str) {
        tracing::warn!(id = %id, problem = %problem, "queue entry in the spool ignored until the next start");
        self.state().ignored.insert(id.to_string(), ino);
    }
}

/// One delivery unit per `[queue] dsn_sinks` entry, for the DSN's one recipient.
fn dsn_units(envelope: &Envelope, sinks: &[String]) -> Vec<Pending> {
    sinks
        .iter()
        .enumerate()
        .map(|(i, sink)| Pending {
            route: "dsn_sinks".into(),
            sink: sink.clone(),
            rcpts: envelope.rcpts.clone(),
            unit_id: format!("{}.{i}", envelope.id),
            last_error: None,
            attempted: false,
            body: None,
        })
        .collect()
}

/// A DSN goes only where asked, and never to the null sender (so never about a DSN).
fn wants_dsn(entry: &QueueEntry) -> bool {
    entry.dsn && !entry.envelope.mail_from.is_empty()
}

fn duration_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// `backoff_initial × 2^(attempts−1)`, capped at `backoff_max`, in milliseconds.
pub fn backoff_ms(config: &QueueConfig, attempts: u32) -> i64 {
    let initial = duration_ms(config.backoff_initial.0);
    let max = duration_ms(config.backoff_max.0);
    let shift = attempts.saturating_sub(1).min(62);
    let delay = initial.saturating_mul(1i64 << shift);
    delay.min(max).max(MIN_BACKOFF_MS)
}
