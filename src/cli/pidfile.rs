//! The pid file `serve` writes (`{data_dir}/mailchute.pid`), read against the process table:
//! what `daemon start|stop|status|reload` decide by, and what keeps `serve` from refusing
//! to start over a pid that a crash left behind and another program now holds.
//!
//! `serve` holds an exclusive `flock` on the file for its lifetime. That lock, not the
//! process's name, says whether the daemon runs: after a crash the pid may be reused by
//! another mailchute (a user's `mailchute sendmail -bs`, a `deliver` run by Postfix), which
//! `daemon stop` must not signal. The file is never opened through a symlink: it lives in
//! `data_dir`, which the run user owns, and root reads and writes it.

use std::fs::File;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// What a pid names now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Process {
    /// No such process, or a zombie (it has exited; only its parent has not reaped it).
    Gone,
    Mailchute,
    /// A live process that is not mailchute: the pid was reused. Holds its command name.
    Other(String),
    /// Alive, but /proc does not say what it is (hidepid): taken to be mailchute, since
    /// the pid file says so and nothing says otherwise.
    Unknown,
}

impl Process {
    pub fn of(pid: i32) -> Process {
        if pid <= 0 {
            return Process::Gone;
        }
        // SAFETY: signal 0 only checks that the process exists and may be signalled.
        let alive = unsafe { libc::kill(pid, 0) } == 0
            || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
        if !alive {
            return Process::Gone;
        }
        let stat = match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Ok(s) => s,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Process::Gone,
            Err(_) => return Process::Unknown,
        };
        // `PID (COMM) STATE ...`; COMM may hold spaces and parentheses, so split at the last `)`.
        let Some((head, tail)) = stat.rsplit_once(')') else {
            return Process::Unknown;
        };
        if matches!(tail.trim_start().chars().next(), Some('Z' | 'X')) {
            return Process::Gone;
        }
        let comm = head.split_once('(').map_or("", |(_, c)| c);
        // comm is the executable's name cut to 15 bytes; the link also names a binary
        // that was renamed, e.g. `mailchute-0.2`.
        let exe = std::fs::read_link(format!("/proc/{pid}/exe"))
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_default();
        if comm.starts_with("mailchute") || exe.starts_with("mailchute") {
            Process::Mailchute
        } else {
            Process::Other(comm.to_string())
        }
    }

    pub fn is_mailchute(&self) -> bool {
        matches!(self, Process::Mailchute | Process::Unknown)
    }
}

/// What the pid file says, checked against the process table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum PidState {
    /// No pid file.
    NotRunning,
    Running(i32),
    /// The pid file names a process that is gone (or is no longer mailchute): a crash, or
    /// kill -9. `serve` replaces such a file when it starts.
    Stale {
        pid: i32,
        now: Option<String>,
    },
    /// The pid file cannot be read or holds no pid.
    Unreadable(String),
}

pub(super) fn pid_path(data_dir: &Path) -> PathBuf {
    data_dir.join("mailchute.pid")
}

/// Whether a process holds the lock `serve` takes on its pid file; `None` when the file
/// system cannot say (flock refused), and the process table is all there is.
fn held(file: &File) -> Option<bool> {
    let fd = file.as_raw_fd();
    // SAFETY: flock on a descriptor this function borrows; a shared lock taken is
    // released at once.
    if unsafe { libc::flock(fd, libc::LOCK_SH | libc::LOCK_NB) } == 0 {
        unsafe { libc::flock(fd, libc::LOCK_UN) };
        return Some(false);
    }
    match std::io::Error::last_os_error().raw_os_error() {
        Some(libc::EWOULDBLOCK) => Some(true),
        _ => None,
    }
}

fn open_no_follow(path: &Path) -> std::io::Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
}

/// The pid file `serve` holds while it runs; dropping it removes the file.
pub(super) struct Held {
    path: PathBuf,
    _file: File,
}

impl Held {
    /// Creates or takes over `{data_dir}/mailchute.pid` and locks it. Refused when a
    /// process holds the lock (mailchute runs on this data_dir), and when the name is not
    /// a plain file of its own: a symlink or hard link there would have root write
    /// through it.
    pub(super) fn take(data_dir: &Path) -> Result<Held, String> {
        let path = pid_path(data_dir);
        let shown = path.display();
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .mode(0o644)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(&path)
            .map_err(|e| match e.raw_os_error() {
                Some(libc::ELOOP) => format!("{shown} is a symlink: remove it"),
                _ => format!("opening {shown}: {e}"),
            })?;
        let meta = file.metadata().map_err(|e| format!("{shown}: {e}"))?;
        if !meta.file_type().is_file() || meta.nlink() != 1 {
            return Err(format!(
                "{shown} is not a plain file of its own (a link or special file): remove it"
            ));
        }
        // SAFETY: flock on the descriptor just opened, kept for the process's lifetime.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                return Err(format!(
                    "mailchute is already running with pid {} on this data_dir ({shown})",
                    text.trim()
                ));
            }
            // No locks on this file system: the process table decides, as before locks.
            if let PidState::Running(pid) = pid_state(data_dir)
                && pid != std::process::id() as i32
            {
                return Err(format!(
                    "mailchute is already running with pid {pid} on this data_dir ({shown})"
                ));
            }
        }
        file.set_len(0)
            .and_then(|()| {
                std::io::Write::write_all(&mut file, format!("{}\n", std::process::id()).as_bytes())
            })
            .map_err(|e| format!("writing {shown}: {e}"))?;
        Ok(Held { path, _file: file })
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

pub(super) fn pid_state(data_dir: &Path) -> PidState {
    let path = pid_path(data_dir);
    let read = open_no_follow(&path).and_then(|mut f| {
        let mut text = String::new();
        f.read_to_string(&mut text)?;
        Ok((f, text))
    });
    let (file, text) = match read {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return PidState::NotRunning,
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return PidState::Unreadable(format!(
                "{} is a symlink (not followed): it is not mailchute's",
                path.display()
            ));
        }
        Err(e) => return PidState::Unreadable(format!("cannot read {}: {e}", path.display())),
    };
    let pid = match text.trim().parse::<i32>() {
        Ok(p) if p > 0 => p,
        _ => {
            return PidState::Unreadable(format!(
                "{} holds {:?}, not a process id",
                path.display(),
                text.trim()
            ));
        }
    };
    let process = Process::of(pid);
    if held(&file) == Some(false) && process != Process::Gone {
        // Nothing holds the lock, so no daemon wrote this: the pid was reused, maybe by
        // another mailchute, which is never the daemon to stop.
        let name = match process {
            Process::Other(name) => name,
            _ => "a mailchute that is not the daemon".into(),
        };
        return PidState::Stale {
            pid,
            now: Some(name),
        };
    }
    match process {
        p if p.is_mailchute() => PidState::Running(pid),
        Process::Other(name) => PidState::Stale {
            pid,
            now: Some(name),
        },
        _ => PidState::Stale { pid, now: None },
    }
}

pub(super) fn stale_text(data_dir: &Path, pid: i32, now: &Option<String>) -> String {
    let path = pid_path(data_dir);
    match now {
        None => format!(
            "not running, but {} names pid {pid}: stale (mailchute exited without removing it)",
            path.display()
        ),
        Some(name) => format!(
            "not running, but {} names pid {pid}, which is now another program ({name}): stale",
            path.display()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn process_identity_tells_mailchute_from_a_reused_pid_and_a_zombie() {
        // The lib test binary is `mailchute-HASH`.
        assert_eq!(Process::of(std::process::id() as i32), Process::Mailchute);
        let mut sleep = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        assert_eq!(
            Process::of(sleep.id() as i32),
            Process::Other("sleep".into())
        );
        sleep.kill().unwrap();
        // Killed but not reaped: a zombie, which is gone for our purposes.
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(Process::of(sleep.id() as i32), Process::Gone);
        sleep.wait().unwrap();
        assert_eq!(Process::of(sleep.id() as i32), Process::Gone);
    }
    #[test]
    fn pid_file_states() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        assert_eq!(pid_state(d), PidState::NotRunning);
        let held = Held::take(d).unwrap();
        assert_eq!(pid_state(d), PidState::Running(std::process::id() as i32));
        let e = Held::take(d).err().unwrap();
        assert!(e.contains("already running with pid"), "{e}");
        drop(held);
        assert_eq!(pid_state(d), PidState::NotRunning);
        // A mailchute (this test binary) that holds no lock is not the daemon: a pid the
        // daemon's crash left behind, reused by a user's `mailchute sendmail`.
        std::fs::write(pid_path(d), format!("{}\n", std::process::id())).unwrap();
        assert!(
            matches!(pid_state(d), PidState::Stale { now: Some(n), .. } if n.contains("not the daemon"))
        );
        std::fs::write(pid_path(d), "garbage\n").unwrap();
        assert!(matches!(pid_state(d), PidState::Unreadable(m) if m.contains("garbage")));
        // A pid far above pid_max: no such process.
        std::fs::write(pid_path(d), "2147483000\n").unwrap();
        assert_eq!(
            pid_state(d),
            PidState::Stale {
                pid: 2147483000,
                now: None
            }
        );
    }

    #[test]
    fn the_pid_file_is_never_written_or_read_through_a_link() {
        // The run user owns data_dir and could leave these for root's next start.
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let victim = d.join("shadow");
        std::fs::write(&victim, "root:secret\n").unwrap();
        std::os::unix::fs::symlink(&victim, pid_path(d)).unwrap();
        let e = Held::take(d).err().unwrap();
        assert!(e.contains("is a symlink"), "{e}");
        assert!(
            matches!(pid_state(d), PidState::Unreadable(m) if !m.contains("secret")),
            "the target's text must not be shown"
        );
        std::fs::remove_file(pid_path(d)).unwrap();
        std::fs::hard_link(&victim, pid_path(d)).unwrap();
        let e = Held::take(d).err().unwrap();
        assert!(e.contains("not a plain file of its own"), "{e}");
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "root:secret\n");
    }
}
