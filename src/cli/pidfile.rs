//! The pid file `serve` writes (`{data_dir}/mailchute.pid`), read against the process table:
//! what `daemon start|stop|status|reload` decide by, and what keeps `serve` from refusing
//! to start over a pid that a crash left behind and another program now holds.

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

pub(super) fn pid_state(data_dir: &Path) -> PidState {
    let path = pid_path(data_dir);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return PidState::NotRunning,
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
    match Process::of(pid) {
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
        std::fs::write(pid_path(d), format!("{}\n", std::process::id())).unwrap();
        assert_eq!(pid_state(d), PidState::Running(std::process::id() as i32));
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
}
