//! Changes to a spool from outside the daemon (`mailchute queue retry|delete`, run while
//! it may be running), in the form its rescan picks up within seconds.
//!
//! Changes are written with fsync here (file, then directory): another process has no
//! committer.

use super::commit::fsync_dir;
use super::dsn;
use super::error::SpoolError;
use super::store::{Layout, QueueEntry, check_id, keep_owner};
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;

/// Makes one queued message due now.
pub fn request_retry(data_dir: &Path, id: &str) -> Result<(), SpoolError> {
    check_id(id)?;
    let layout = Layout::new(data_dir);
    request(&layout, id).map_err(|e| or_dead(&layout, id, e))?;
    fsync_dir(&layout.retry).map_err(|e| SpoolError::io("fsync", &layout.retry, e))
}

/// What [`request_retry_all`] did.
#[derive(Debug, Default)]
pub struct RetryAll {
    pub requested: usize,
    /// Messages that could not be asked for, with why.
    pub problems: Vec<(String, SpoolError)>,
}

/// Makes every queued message due now.
pub fn request_retry_all(data_dir: &Path) -> Result<RetryAll, SpoolError> {
    let layout = Layout::new(data_dir);
    let mut all = RetryAll::default();
    if !layout.queue.exists() {
        return Ok(all);
    }
    for id in layout.sidecar_ids()? {
        match request(&layout, &id) {
            Ok(()) => all.requested += 1,
            Err(e) if e.is_not_queued() => {}
            Err(e) => all.problems.push((id, e)),
        }
    }
    if all.requested > 0 {
        fsync_dir(&layout.retry).map_err(|e| SpoolError::io("fsync", &layout.retry, e))?;
    }
    Ok(all)
}

/// Leaves a request for the daemon rather than rewriting the sidecar: the daemon owns the
/// sidecar, and a copy read here could be stale by the time it was written back (bringing
/// back recipients delivered meanwhile).
fn request(layout: &Layout, id: &str) -> Result<(), SpoolError> {
    if !layout.sidecar(id).exists() || !layout.message(id).exists() {
        return Err(SpoolError::NotQueued {
            id: id.to_string(),
            dir: layout.queue.clone(),
        });
    }
    if !layout.retry.exists() {
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&layout.retry)
            .or_else(|e| match e.kind() {
                io::ErrorKind::AlreadyExists => Ok(()),
                _ => Err(e),
            })
            .map_err(|e| SpoolError::io("create directory", &layout.retry, e))?;
        keep_owner(&layout.retry, &layout.retry);
    }
    let request = layout.retry_request(id);
    std::fs::write(&request, b"").map_err(|e| SpoolError::io("write", &request, e))?;
    keep_owner(&request, &request);
    Ok(())
}

/// What [`delete`] removed.
#[derive(Debug)]
pub struct Deleted {
    /// The entry as its sidecar held it, when that could be read.
    pub entry: Option<QueueEntry>,
    /// "message", "sidecar": the files that were there.
    pub removed: Vec<&'static str>,
}

/// Removes a queued message without delivering it.
pub fn delete(data_dir: &Path, id: &str) -> Result<Deleted, SpoolError> {
    check_id(id)?;
    let layout = Layout::new(data_dir);
    let entry = layout.load(id);
    let data = layout.message(id);
    let sidecar = layout.sidecar(id);
    let mut removed = Vec::new();
    // Data first: the daemon treats a sidecar without data as deleted, never the reverse.
    for (path, what) in [(&data, "message"), (&sidecar, "sidecar")] {
        match std::fs::remove_file(path) {
            Ok(()) => removed.push(what),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(SpoolError::io("remove", path, e)),
        }
    }
    if removed.is_empty() {
        let e = SpoolError::NotQueued {
            id: id.to_string(),
            dir: layout.queue.clone(),
        };
        return Err(or_dead(&layout, id, e));
    }
    // Bodies a route's filters changed go with their message.
    if let Ok(entry) = &entry {
        for body in &entry.bodies {
            let path = layout.body(id, &body.name);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(SpoolError::io("remove", path, e)),
            }
        }
    }
    fsync_dir(&layout.queue).map_err(|e| SpoolError::io("fsync", &layout.queue, e))?;
    Ok(Deleted {
        entry: entry.ok(),
        removed,
    })
}

/// A message that is not queued may have died: say so, with the reason its sidecar in
/// `dead/` records, instead of a bare "no message".
pub(crate) fn or_dead(layout: &Layout, id: &str, e: SpoolError) -> SpoolError {
    if !e.is_not_queued() || check_id(id).is_err() {
        return e;
    }
    let sidecar = layout.dead.join(format!("{id}.json"));
    let reason = match std::fs::read(&sidecar) {
        Ok(bytes) => serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| v.get("dead_reason")?.as_str().map(str::to_string))
            .unwrap_or_else(|| "not recorded".into()),
        Err(err) if err.kind() == io::ErrorKind::NotFound => return e,
        Err(err) => format!("unknown (cannot read it: {err})"),
    };
    SpoolError::DeadLetter {
        id: id.to_string(),
        sidecar,
        reason: dsn::one_line(&reason, true),
    }
}
