//! Group commit: many writers' files made durable together instead of one fsync each.
//!
//! This disk does ~250 fsyncs/s in one stream but thousands of files per second when the
//! work of many writers is committed together. Two ways, chosen by `[server] sync_method`:
//!
//! * `fsync` (default): every path is fsynced on the blocking pool, concurrently with the
//!   other sessions' fsyncs; the filesystem journal commits concurrent fsyncs together, so
//!   they share rounds. Only our own files are flushed, whatever else the host writes.
//! * `syncfs`: one thread per filesystem runs `syncfs`; every caller whose files were
//!   written before a round started is released by that round. Fewer calls, but each
//!   round also flushes everything else dirty on that filesystem: best when the spool and
//!   mailboxes have a filesystem of their own.
//!
//! A caller writes its files (and renames them into place), then awaits
//! [`Committer::sync`] with the files and directories whose data and entries must last.

use std::collections::HashMap;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::mpsc;
use tokio::sync::oneshot;

type Waiter = oneshot::Sender<Result<(), String>>;

pub use crate::config::SyncMethod;

/// One committer per process.
#[derive(Default)]
pub struct Committer {
    method: SyncMethod,
    /// syncfs: one sync thread per filesystem, keyed by device number.
    filesystems: Mutex<HashMap<u64, mpsc::Sender<Waiter>>>,
}

impl Committer {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with_method(method: SyncMethod) -> Self {
        Committer {
            method,
            filesystems: Mutex::default(),
        }
    }

    pub fn method(&self) -> SyncMethod {
        self.method
    }

    /// Returns once the data of every file and the entries of every directory in `paths`
    /// are on stable storage, as far as they were written before the call.
    pub async fn sync(&self, paths: &[&Path]) -> io::Result<()> {
        match self.method {
            SyncMethod::Fsync => {
                let mut tasks = Vec::with_capacity(paths.len());
                for p in paths {
                    let p = p.to_path_buf();
                    tasks.push(tokio::task::spawn_blocking(move || fsync_path(&p)));
                }
                let mut first_err = None;
                for t in tasks {
                    let r = t
                        .await
                        .unwrap_or_else(|e| Err(io::Error::other(e.to_string())));
                    if let Err(e) = r {
                        first_err.get_or_insert(e);
                    }
                }
                first_err.map_or(Ok(()), Err)
            }
            SyncMethod::Syncfs => {
                for (sender, path) in self.senders_for(paths)? {
                    let (tx, rx) = oneshot::channel();
                    sender
                        .send(tx)
                        .map_err(|_| io::Error::other("sync thread stopped"))?;
                    match rx.await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => {
                            return Err(io::Error::other(format!(
                                "syncfs on {}: {e}",
                                path.display()
                            )));
                        }
                        Err(_) => return Err(io::Error::other("sync thread stopped")),
                    }
                }
                Ok(())
            }
        }
    }

    /// One sender per distinct filesystem among `paths`.
    fn senders_for(&self, paths: &[&Path]) -> io::Result<Vec<(mpsc::Sender<Waiter>, PathBuf)>> {
        let mut out: Vec<(u64, mpsc::Sender<Waiter>, PathBuf)> = Vec::new();
        for path in paths {
            let dev = std::fs::metadata(path)?.dev();
            if out.iter().any(|(d, _, _)| *d == dev) {
                continue;
            }
            let mut map = self
                .filesystems
                .lock()
                .map_err(|_| io::Error::other("committer lock poisoned"))?;
            let sender = match map.get(&dev) {
                Some(s) => s.clone(),
                None => {
                    // Keep a handle on the filesystem open for the thread's lifetime:
                    // syncfs needs an fd, and a later unlink of `path` must not matter.
                    let handle = std::fs::File::open(path)?;
                    let (tx, rx) = mpsc::channel::<Waiter>();
                    std::thread::Builder::new()
                        .name(format!("syncfs-{dev:x}"))
                        .spawn(move || sync_loop(handle, rx))?;
                    map.insert(dev, tx.clone());
                    tx
                }
            };
            out.push((dev, sender, path.to_path_buf()));
        }
        Ok(out.into_iter().map(|(_, s, p)| (s, p)).collect())
    }
}

/// fsync of a file's data (and size) or of a directory's entries.
fn fsync_path(path: &Path) -> io::Result<()> {
    let f = std::fs::File::open(path)?;
    if f.metadata()?.is_dir() {
        f.sync_all()
    } else {
        f.sync_data()
    }
}

fn sync_loop(handle: std::fs::File, rx: mpsc::Receiver<Waiter>) {
    // Block for the first waiter, then take everyone who queued meanwhile: they all wrote
    // before this round starts, so one syncfs covers them.
    while let Ok(first) = rx.recv() {
        let mut round = vec![first];
        round.extend(rx.try_iter());
        // SAFETY: syncfs only reads the fd, which `handle` keeps open.
        let rc = unsafe { libc::syncfs(handle.as_raw_fd()) };
        let result = if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error().to_string())
        };
        for waiter in round {
            let _ = waiter.send(result.clone());
        }
    }
}

/// fsync of a directory, for code paths that make one change durable outside a group round.
pub fn fsync_dir(dir: &Path) -> io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn many_writers(method: SyncMethod) {
        let dir = tempfile::tempdir().unwrap();
        let c = std::sync::Arc::new(Committer::with_method(method));
        let mut tasks = Vec::new();
        for i in 0..50 {
            let c = c.clone();
            let d = dir.path().to_path_buf();
            tasks.push(tokio::spawn(async move {
                let p = d.join(format!("f{i}"));
                std::fs::write(&p, b"x").unwrap();
                c.sync(&[&p, &d]).await.unwrap();
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_fsyncs_complete() {
        many_writers(SyncMethod::Fsync).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_syncfs_rounds_complete() {
        many_writers(SyncMethod::Syncfs).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn missing_path_is_an_error() {
        for m in [SyncMethod::Fsync, SyncMethod::Syncfs] {
            let c = Committer::with_method(m);
            assert!(c.sync(&[Path::new("/nonexistent/x")]).await.is_err());
        }
    }
}
