//! Logging setup and the one-line-per-transaction record.

use crate::config::LogFormat;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock};
use tracing::Dispatch;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::fmt::writer::BoxMakeWriter;

/// Where log lines go; each command chooses. A daemon logs to stderr (its supervisor
/// collects it) or a file; `deliver` logs nowhere or to a file, because Postfix reads its
/// stdout and stderr through one pipe and the first line it reads must be the status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    Stderr,
    /// Appended to, created if missing (mode 0640: log lines name senders and recipients).
    File(PathBuf),
    /// Kept in memory and written to stderr by [`release_held`]: `deliver`'s log lines,
    /// which may follow its status line on the pipe Postfix reads, never precede it.
    Held,
    /// Nothing is written anywhere.
    None,
}

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("cannot open the log file {}: {source}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Installs the global subscriber: JSON (one object per line) or human text, to `dest`.
/// The level comes from `MAILCHUTE_LOG` (e.g. `debug`, `mailchute=trace`), default `info`.
/// A second call leaves the first subscriber in place.
pub fn init(format: LogFormat, dest: Destination) -> Result<(), LogError> {
    if let Some(dispatch) = dispatch(format, dest)? {
        let _ = tracing::dispatcher::set_global_default(dispatch);
    }
    Ok(())
}

/// The subscriber [`init`] installs; `None` for [`Destination::None`], because with no
/// subscriber at all tracing drops every event before formatting it.
fn dispatch(format: LogFormat, dest: Destination) -> Result<Option<Dispatch>, LogError> {
    let writer = match dest {
        Destination::None => return Ok(None),
        Destination::Stderr => BoxMakeWriter::new(std::io::stderr),
        Destination::Held => BoxMakeWriter::new(|| HeldWriter),
        // O_APPEND, and each event is formatted whole before it is written: lines from
        // several processes (deliver runs once per message) land whole, one after another.
        Destination::File(path) => {
            let file = Arc::new(LogFile {
                file: RwLock::new(Arc::new(open_append(&path)?)),
                path,
            });
            // The first file set up is the one `reopen` (SIGHUP) reopens.
            let _ = LOG_FILE.set(file.clone());
            BoxMakeWriter::new(SharedLog(file))
        }
    };
    let filter =
        EnvFilter::try_from_env("MAILCHUTE_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_target(false);
    Ok(Some(match format {
        LogFormat::Json => Dispatch::new(
            builder
                .json()
                .flatten_event(true)
                .with_current_span(false)
                .with_span_list(false)
                .finish(),
        ),
        LogFormat::Text => Dispatch::new(builder.with_ansi(false).finish()),
    }))
}

/// Bounded: `deliver` logs a few lines per message, and a flood must not grow memory.
const HELD_LIMIT: usize = 64 * 1024;

static HELD: Mutex<Vec<u8>> = Mutex::new(Vec::new());

/// [`Destination::Held`]'s writer: appends to [`HELD`], dropping what would pass the limit.
struct HeldWriter;

impl Write for HeldWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut held = HELD.lock().unwrap_or_else(PoisonError::into_inner);
        let room = HELD_LIMIT.saturating_sub(held.len());
        held.extend_from_slice(&buf[..buf.len().min(room)]);
        // Claimed whole even when cut: a log line is not worth an error in the delivery.
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Set by [`hold_output`]: [`print_line`] keeps lines too.
static HOLD_OUTPUT: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// From now on [`print_line`] holds its lines for [`release_held`], as `deliver` needs:
/// nothing may reach Postfix's pipe before the status line.
pub fn hold_output() {
    HOLD_OUTPUT.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// Where [`print_line`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// A line of output outside the log (e.g. the ses sink's aws-smtp-relay lines), written
/// whole under the stream's lock, or held after [`hold_output`].
pub fn print_line(stream: Stream, line: &str) {
    let mut text = line.to_string();
    text.push('\n');
    if HOLD_OUTPUT.load(std::sync::atomic::Ordering::Relaxed) {
        let _ = HeldWriter.write(text.as_bytes());
        return;
    }
    let _ = match stream {
        Stream::Stdout => std::io::stdout().lock().write_all(text.as_bytes()),
        Stream::Stderr => std::io::stderr().lock().write_all(text.as_bytes()),
    };
}

/// Writes the lines [`Destination::Held`] kept to stderr, and forgets them.
pub fn release_held() {
    let held = std::mem::take(&mut *HELD.lock().unwrap_or_else(PoisonError::into_inner));
    if !held.is_empty() {
        let mut err = std::io::stderr().lock();
        let _ = err.write_all(&held);
        let _ = err.flush();
    }
}

/// The log file of [`Destination::File`], reopened by [`reopen`] so that a log rotated away
/// (renamed by logrotate) is followed by a new file at the same path.
struct LogFile {
    path: PathBuf,
    /// The file events go to; each event takes its own handle, so a reopen never cuts one.
    file: RwLock<Arc<File>>,
}

static LOG_FILE: OnceLock<Arc<LogFile>> = OnceLock::new();

/// One event's handle on the log file.
struct EventWriter(Arc<File>);

impl Write for EventWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        (&*self.0).write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        (&*self.0).flush()
    }
}

/// The subscriber's side of a [`LogFile`] that [`reopen`] also holds.
struct SharedLog(Arc<LogFile>);

impl<'a> MakeWriter<'a> for SharedLog {
    type Writer = EventWriter;

    fn make_writer(&'a self) -> EventWriter {
        EventWriter(
            self.0
                .file
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
        )
    }
}

/// Reopens the log file (SIGHUP, after logrotate moved it away); nothing to do when logging
/// goes elsewhere. On error the old file stays in use.
pub fn reopen() -> Result<(), LogError> {
    let Some(log) = LOG_FILE.get() else {
        return Ok(());
    };
    let file = Arc::new(open_append(&log.path)?);
    *log.file.write().unwrap_or_else(PoisonError::into_inner) = file;
    Ok(())
}

fn open_append(path: &Path) -> Result<std::fs::File, LogError> {
    std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o640)
        // Root opens it in data_dir, which the run user owns: never through a symlink
        // that user put there.
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|source| LogError::Open {
            path: path.to_path_buf(),
            source,
        })
}

/// One event at warn when `$warn` (something failed that the operator should look at), else
/// at info: tracing's level must be a constant at each call site.
macro_rules! warn_or_info {
    ($warn:expr, $($fields:tt)*) => {
        if $warn {
            tracing::warn!($($fields)*)
        } else {
            tracing::info!($($fields)*)
        }
    };
}
pub(crate) use warn_or_info;

/// What one SMTP/LMTP transaction did; logged as one line when it ends.
#[derive(Debug, Default)]
pub struct Transaction<'a> {
    pub id: &'a str,
    pub listener: &'a str,
    pub client_ip: Option<&'a str>,
    pub helo: Option<&'a str>,
    pub tls: Option<&'a str>,
    /// The facts a trusted MTA forwarded (XFORWARD), "ADDR=.. HELO=.." ; or the load
    /// balancer a PROXY header came through.
    pub forwarded: Option<String>,
    pub from: &'a str,
    pub rcpts: &'a [String],
    pub size: u64,
    pub routes: String,
    /// "sink=delivered" / "sink=deferred 4.4.1 ..." pairs, `; `-separated.
    pub outcome: String,
    /// The answer given to the client ("250 2.0.0 ...").
    pub reply: String,
    pub duration_ms: u64,
    pub error: Option<String>,
}

impl Transaction<'_> {
    pub fn log(&self) {
        let rcpts = self.rcpts.join(",");
        warn_or_info!(
            self.error.is_some(),
            event = "transaction",
            id = self.id,
            listener = self.listener,
            client_ip = self.client_ip,
            helo = self.helo,
            tls = self.tls,
            forwarded = self.forwarded,
            from = self.from,
            rcpts = rcpts,
            size = self.size,
            route = self.routes,
            outcome = self.outcome,
            reply = self.reply,
            duration_ms = self.duration_ms,
            error = self.error,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_file_receives_lines_after_what_it_held() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mailchute.log");
        std::fs::write(&path, "an earlier line\n").unwrap();
        for format in [LogFormat::Text, LogFormat::Json] {
            let d = dispatch(format, Destination::File(path.clone()))
                .unwrap()
                .unwrap();
            tracing::dispatcher::with_default(&d, || tracing::warn!(event = "test", "to the file"));
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert_eq!(lines[0], "an earlier line");
        assert!(
            lines[1].contains("to the file") && !lines[1].starts_with('{'),
            "{text}"
        );
        let json: serde_json::Value = serde_json::from_str(lines[2]).unwrap();
        assert_eq!(json["message"], "to the file");
        assert_eq!(json["event"], "test");
    }

    #[test]
    fn a_new_log_file_is_not_for_everyone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("new.log");
        dispatch(LogFormat::Text, Destination::File(path.clone())).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o007, 0, "{mode:o}");
    }

    #[test]
    fn a_symlink_is_never_opened_as_the_log_file() {
        // Root opens the log in data_dir, which the run user owns and could put this in.
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("shadow");
        std::fs::write(&victim, "root:secret\n").unwrap();
        let path = dir.path().join("mailchute.log");
        std::os::unix::fs::symlink(&victim, &path).unwrap();
        let e = dispatch(LogFormat::Text, Destination::File(path.clone())).unwrap_err();
        assert!(e.to_string().contains(&path.display().to_string()), "{e}");
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "root:secret\n");
    }

    #[test]
    fn a_log_file_that_cannot_be_opened_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("no-such-dir/mailchute.log");
        let e = init(LogFormat::Json, Destination::File(path.clone())).unwrap_err();
        let m = e.to_string();
        assert!(m.contains(&path.display().to_string()), "{m}");
        assert!(m.contains("No such file or directory"), "{m}");
    }

    const CHILD: &str = "log::tests::child_logs_one_line";
    const LINE: &str = "a line that only stderr may show";

    /// Does something only when [`none_writes_nothing`] runs it in a child process: installs
    /// the global subscriber, which a test in this process must not.
    #[test]
    fn child_logs_one_line() {
        let Ok(dest) = std::env::var("MAILCHUTE_LOG_TEST_DESTINATION") else {
            return;
        };
        let dest = match dest.as_str() {
            "stderr" => Destination::Stderr,
            _ => Destination::None,
        };
        init(LogFormat::Text, dest).unwrap();
        tracing::error!("{LINE}");
    }

    #[test]
    fn none_writes_nothing() {
        let run = |dest: &str| {
            let out = std::process::Command::new(std::env::current_exe().unwrap())
                .args(["--exact", CHILD, "--nocapture", "--test-threads=1"])
                .env("MAILCHUTE_LOG_TEST_DESTINATION", dest)
                .env_remove("MAILCHUTE_LOG")
                .output()
                .unwrap();
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(out.status.success() && text.contains("1 passed"), "{text}");
            text
        };
        // The same child with stderr shows the line: the check below can fail.
        assert!(run("stderr").contains(LINE));
        let out = run("none");
        assert!(!out.contains(LINE), "{out}");
    }
}
