//! `mailchute daemon start|stop|status|reload|info`: `serve` in the background, the pid file
//! (`{data_dir}/mailchute.pid`, written by `serve`) as the handle, and LSB init-script exit
//! statuses, so that an init script is a few lines of `case`.
//!
//! `start` validates everything it can while it still has a terminal, then forks before any
//! thread or runtime exists: fork, `setsid`, fork again (the daemon is no session leader and
//! can never get a controlling terminal), `chdir /`, stdio to `/dev/null`, logs to
//! `--log-file` or `{data_dir}/mailchute.log`. The first process waits on a pipe until the
//! daemon has bound its listeners, written the pid file and dropped privileges (it writes
//! `ready PID`), or until it fails (it writes the error), and exits with that.

use super::pidfile::{PidState, Process, pid_path, pid_state, stale_text};
use super::{CliError, LogOptions};
use crate::config::readable_secrets_warning;
use crate::config::{self, ConfigError, Loaded, Source};
use crate::spool::store::{Layout, file_id};
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(clap::Subcommand)]
pub enum DaemonCommand {
    /// Validate the config and run every sink's health check (`mailchute check`: IMAP
    /// logins and folders, Maildir/MH paths, …), then run `serve` in the background; exits
    /// once it listens. Logs go to --log-file, else {data_dir}/mailchute.log.
    Start {
        /// Start even when a sink fails its health check (an IMAP server down at boot:
        /// mail is then spooled until it answers).
        #[arg(long)]
        no_check: bool,
    },
    /// SIGTERM the daemon and wait until it has drained and exited.
    Stop {
        /// How long to wait for it to exit (deliveries under way finish first).
        #[arg(long, default_value = "30s", value_parser = parse_timeout)]
        timeout: Duration,
    },
    /// Whether it runs: exit 0 running, 1 dead but the pid file is left, 3 not running,
    /// 4 unknown.
    Status,
    /// SIGHUP the daemon after checking the config it will load.
    Reload,
    /// Version, config, listeners, routes, spool counts, and whether it runs.
    Info,
}

fn parse_timeout(s: &str) -> Result<Duration, String> {
    config::units::parse_duration(s).map(|d| d.0)
}

/// What a command prints and exits with, when it ran to a verdict (LSB statuses other than
/// 0 included); an `Err` is a failure the binary's edge reports like any other command's.
#[derive(Debug, Default)]
pub struct Report {
    pub code: u8,
    pub stdout: String,
    pub stderr: String,
}

impl Report {
    fn out(code: u8, text: impl Into<String>) -> Report {
        Report {
            code,
            stdout: text.into(),
            ..Report::default()
        }
    }

    fn err(code: u8, text: impl Into<String>) -> Report {
        Report {
            code,
            stderr: text.into(),
            ..Report::default()
        }
    }
}

/// LSB init-script statuses (Linux Standard Base, "Init Script Actions").
pub mod lsb {
    pub const OK: u8 = 0;
    /// Generic failure; for `status`: dead, but the pid file exists.
    pub const FAILURE: u8 = 1;
    /// `status`: not running.
    pub const NOT_RUNNING_STATUS: u8 = 3;
    /// `status`: unknown (the pid file or config cannot be read).
    pub const UNKNOWN: u8 = 4;
    /// Actions other than `status`: the program is not running.
    pub const NOT_RUNNING: u8 = 7;
}

/// How long `start` waits for the daemon to say it is ready. Recovering a large spool comes
/// before binding, so this is generous.
const READY_TIMEOUT: Duration = Duration::from_secs(120);

pub fn run(
    command: DaemonCommand,
    config: Option<&Path>,
    log: &LogOptions,
) -> Result<Report, CliError> {
    match command {
        DaemonCommand::Start { no_check } => start(config, log, no_check),
        DaemonCommand::Stop { timeout } => stop(config, timeout),
        DaemonCommand::Status => Ok(status(config)),
        DaemonCommand::Reload => reload(config),
        DaemonCommand::Info => info(config),
    }
}

/// The config's data_dir, and the config when it loads. `stop` and `status` must work on a
/// config edited into something invalid (it is often why one restarts): then the data_dir
/// is read from the file's `[server]` table alone.
struct Located {
    data_dir: PathBuf,
    loaded: Result<Loaded, ConfigError>,
}

fn locate(config: Option<&Path>) -> Result<Located, ConfigError> {
    match config::load(config, true) {
        Ok(loaded) => Ok(Located {
            data_dir: loaded.config.server.data_dir.clone(),
            loaded: Ok(loaded),
        }),
        Err(e @ ConfigError::Invalid(_)) => {
            let Some(path) = config_path(config) else {
                return Err(e);
            };
            match raw_data_dir(&path) {
                Some(data_dir) => Ok(Located {
                    data_dir,
                    loaded: Err(e),
                }),
                None => Err(e),
            }
        }
        Err(e) => Err(e),
    }
}

/// The file [`config::load`] reads, by its lookup order.
fn config_path(explicit: Option<&Path>) -> Option<PathBuf> {
    if let Some(p) = explicit {
        return Some(p.to_path_buf());
    }
    if let Some(p) = std::env::var_os("MAILCHUTE_CONFIG").filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let default = Path::new(config::DEFAULT_PATH);
    default.exists().then(|| default.to_path_buf())
}

/// `[server] data_dir` of a file that does not validate, as the loader would resolve it.
fn raw_data_dir(path: &Path) -> Option<PathBuf> {
    let text = std::fs::read_to_string(path).ok()?;
    let table: toml::Table = toml::from_str(&text).ok()?;
    let from_env = std::env::var("MAILCHUTE_SERVER__DATA_DIR").ok();
    let dir = match from_env {
        Some(d) => d,
        None => match table.get("server").and_then(|s| s.get("data_dir")) {
            Some(v) => v.as_str()?.to_string(),
            None => "./mailchute-data".to_string(),
        },
    };
    let dir = PathBuf::from(dir);
    if dir.is_absolute() {
        return Some(dir);
    }
    let base = std::path::absolute(path).ok()?.parent()?.to_path_buf();
    Some(base.join(dir))
}

// --- start ----------------------------------------------------------------------------

fn start(config: Option<&Path>, log: &LogOptions, no_check: bool) -> Result<Report, CliError> {
    let mut loaded = config::load(config, true)?;
    validate_for_start(&loaded)?;
    let data_dir = loaded.config.server.data_dir.clone();
    match pid_state(&data_dir) {
        PidState::Running(pid) => {
            return Ok(Report::out(
                lsb::OK,
                format!("already running (pid {pid})\n"),
            ));
        }
        PidState::Unreadable(why) => {
            return Ok(Report::err(lsb::FAILURE, format!("{why}; not starting")));
        }
        PidState::NotRunning | PidState::Stale { .. } => {}
    }
    if !no_check && let Some(failed) = health_check(&loaded)? {
        return Ok(failed);
    }
    let mut warnings = String::new();
    if let Some(w) = readable_secrets_warning(&loaded) {
        let _ = writeln!(warnings, "mailchute: warning: {w}");
    }
    // The daemon changes to `/`: a relative config path (read again on SIGHUP) or log file
    // must not change meaning.
    if let Source::File(p) = &loaded.source {
        let abs = std::path::absolute(p).map_err(|source| ConfigError::Read {
            path: p.clone(),
            source,
        })?;
        loaded.source = Source::File(abs);
    }
    let log_file = match &log.file {
        Some(f) => std::path::absolute(f)
            .map_err(|e| CliError::NoInput(format!("--log-file {}: {e}", f.display())))?,
        None => data_dir.join("mailchute.log"),
    };
    let log = LogOptions {
        format: log.format,
        file: Some(log_file.clone()),
    };
    let mut report = daemonize(loaded, &log, &log_file);
    report.stderr.insert_str(0, &warnings);
    Ok(report)
}

/// DDMailer's habit: every account is tried before the daemon starts, and a wrong password
/// is said here, on the terminal, naming the sink — not later in a log. `mailchute check`
/// runs in a child process: the checks need a runtime and threads, and this process must
/// have none when it forks. `None` when every sink passed.
fn health_check(loaded: &Loaded) -> Result<Option<Report>, CliError> {
    let exe = std::env::current_exe()
        .map_err(|e| CliError::NoInput(format!("finding the mailchute binary: {e}")))?;
    let mut cmd = std::process::Command::new(exe);
    if let Source::File(p) = &loaded.source {
        cmd.arg("-c").arg(p);
    }
    let out = cmd
        .arg("check")
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| CliError::NoInput(format!("running mailchute check: {e}")))?;
    if out.status.success() {
        return Ok(None);
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let failed: String = text
        .lines()
        .filter(|l| !l.starts_with("ok "))
        .map(|l| format!("{l}\n"))
        .collect();
    Ok(Some(Report::err(
        lsb::FAILURE,
        format!(
            "{failed}{}not starting: a sink failed its health check (fix it, or start with \
             --no-check to spool until it answers)",
            String::from_utf8_lossy(&out.stderr)
        ),
    )))
}

/// Everything `serve` would refuse for the config's sake, while there is a terminal to say
/// it on (exit 78): sinks and AUTH users built, TLS certificates loaded, users and groups
/// looked up.
fn validate_for_start(loaded: &Loaded) -> Result<(), CliError> {
    let c = &loaded.config;
    let config_error = |message: String| {
        CliError::Serve(super::serve::ServeError {
            message,
            config: true,
        })
    };
    if c.listeners.is_empty() {
        return Err(config_error(format!(
            "nothing to listen on: {} has no [[listener]]",
            loaded.origin()
        )));
    }
    super::serve::check(loaded)?;
    // TLS certificates and keys (their passphrases), AUTH users: what a listener loads.
    for l in &c.listeners {
        crate::smtpd::settings::ListenerSettings::build(l)
            .map_err(|e| config_error(e.to_string()))?;
    }
    let server = &c.server;
    if let Some(u) = &server.user {
        crate::privileges::user_id(u).map_err(|e| config_error(format!("[server] user: {e}")))?;
    }
    if let Some(g) = &server.group {
        crate::privileges::group_id(g).map_err(|e| config_error(format!("[server] group: {e}")))?;
    }
    for l in &c.listeners {
        let name = crate::smtpd::settings::listener_name(l);
        if let Some(u) = &l.socket_owner {
            crate::privileges::user_id(u)
                .map_err(|e| config_error(format!("listener {name}: socket_owner: {e}")))?;
        }
        if let Some(g) = &l.socket_group {
            crate::privileges::group_id(g)
                .map_err(|e| config_error(format!("listener {name}: socket_group: {e}")))?;
        }
    }
    Ok(())
}

/// Forks the daemon and waits for its word. Returns only in the first process; the daemon
/// exits from [`daemon_main`].
fn daemonize(loaded: Loaded, log: &LogOptions, log_file: &Path) -> Report {
    let os = |what: &str| {
        Report::err(
            lsb::FAILURE,
            format!("{what}: {}", std::io::Error::last_os_error()),
        )
    };
    // fork() copies only the calling thread: a lock held by another thread would stay held
    // in the child forever. Nothing before this point starts one; make sure.
    let threads = std::fs::read_dir("/proc/self/task")
        .map(|d| d.count())
        .unwrap_or(1);
    if threads > 1 {
        return Report::err(
            lsb::FAILURE,
            format!(
                "internal error: {threads} threads exist before daemonizing; run `mailchute serve` under a supervisor instead"
            ),
        );
    }
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into the array it is given.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return os("pipe");
    }
    // SAFETY: both were just opened and are owned by nothing else.
    let (read_end, write_end) =
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: single-threaded (checked above); the child only calls async-signal-safe
    // functions until it forks again, and the grandchild is a single-threaded copy that
    // starts its own runtime.
    match unsafe { libc::fork() } {
        -1 => os("fork"),
        0 => {
            drop(read_end);
            // SAFETY: setsid and fork in the child, which is single-threaded.
            unsafe {
                libc::setsid();
                match libc::fork() {
                    -1 => {
                        let mut w = std::fs::File::from(write_end);
                        let _ = write!(w, "fail 1 fork: {}", std::io::Error::last_os_error());
                        libc::_exit(1)
                    }
                    0 => {}
                    _ => libc::_exit(0),
                }
            }
            daemon_main(loaded, log, std::fs::File::from(write_end))
        }
        child => {
            drop(write_end);
            let mut status = 0;
            // SAFETY: reaps the intermediate child, which exits at once.
            unsafe { libc::waitpid(child, &mut status, 0) };
            await_ready(std::fs::File::from(read_end), log_file)
        }
    }
}

/// Reads the daemon's word: `ready PID`, or `fail CODE MESSAGE`, or nothing (it died).
fn await_ready(mut pipe: std::fs::File, log_file: &Path) -> Report {
    let deadline = Instant::now() + READY_TIMEOUT;
    let mut text = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Report::err(
                lsb::FAILURE,
                format!(
                    "the daemon did not report ready within {}s; it may still be starting (see {})",
                    READY_TIMEOUT.as_secs(),
                    log_file.display()
                ),
            );
        }
        let mut pfd = libc::pollfd {
            fd: std::os::fd::AsRawFd::as_raw_fd(&pipe),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = i32::try_from(left.as_millis()).unwrap_or(i32::MAX);
        // SAFETY: one pollfd, valid for the call.
        let n = unsafe { libc::poll(&mut pfd, 1, ms) };
        if n < 0 {
            if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            break;
        }
        if n == 0 {
            continue;
        }
        match pipe.read(&mut buf) {
            Ok(0) => break,
            Ok(k) => text.extend_from_slice(&buf[..k]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    let text = String::from_utf8_lossy(&text);
    let text = text.trim();
    if let Some(pid) = text.strip_prefix("ready ") {
        return Report::out(
            lsb::OK,
            format!("started (pid {pid}); logging to {}\n", log_file.display()),
        );
    }
    if let Some(rest) = text.strip_prefix("fail ") {
        let (code, message) = rest.split_once(' ').unwrap_or(("1", rest));
        return Report::err(code.parse().unwrap_or(lsb::FAILURE), message.to_string());
    }
    Report::err(
        lsb::FAILURE,
        format!(
            "the daemon exited before it was ready; see {}",
            log_file.display()
        ),
    )
}

/// The daemon process: never returns.
fn daemon_main(loaded: Loaded, log: &LogOptions, pipe: std::fs::File) -> ! {
    let pipe = std::sync::Arc::new(std::sync::Mutex::new(Some(pipe)));
    let fail = |code: u8, message: String| -> ! {
        tracing::error!(error = %message, "mailchute could not start");
        if let Some(mut p) = pipe.lock().ok().and_then(|mut g| g.take()) {
            let _ = write!(p, "fail {code} {message}");
        }
        std::process::exit(i32::from(code))
    };
    // SAFETY: chdir with a static NUL-terminated path.
    unsafe { libc::chdir(c"/".as_ptr()) };
    // The default log file is in data_dir, which `serve` would create only later.
    let data_dir = &loaded.config.server.data_dir;
    if let Err(e) = std::fs::create_dir_all(data_dir) {
        fail(
            lsb::FAILURE,
            format!("creating data_dir {}: {e}", data_dir.display()),
        );
    }
    if let Err(e) = log.init(
        loaded.config.server.log_format,
        crate::log::Destination::Stderr,
    ) {
        fail(lsb::FAILURE, e.to_string());
    }
    if let Some(file) = &log.file {
        give_log_to_run_user(&loaded, file);
    }
    if let Err(e) = stdio_to_dev_null() {
        fail(lsb::FAILURE, format!("redirecting stdio to /dev/null: {e}"));
    }
    // stderr is /dev/null now: a panic's message goes to the log instead.
    std::panic::set_hook(Box::new(|info| {
        tracing::error!(panic = %info, "mailchute panicked");
    }));
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => fail(lsb::FAILURE, format!("starting the async runtime: {e}")),
    };
    let ready_pipe = pipe.clone();
    let ready = Box::new(move || {
        if let Some(mut p) = ready_pipe.lock().ok().and_then(|mut g| g.take()) {
            let _ = write!(p, "ready {}", std::process::id());
        }
    });
    let result = rt.block_on(super::serve::run_notify(loaded, ready));
    rt.shutdown_timeout(Duration::from_secs(1));
    match result {
        Ok(()) => std::process::exit(0),
        Err(e) => {
            let code = if e.config {
                crate::delivery::sysexits::EX_CONFIG
            } else {
                lsb::FAILURE
            };
            fail(code, e.message)
        }
    }
}

/// The log file is opened as root before privileges are dropped; SIGHUP reopens it (for
/// logrotate) as the run user, who must then be able to write it.
fn give_log_to_run_user(loaded: &Loaded, file: &Path) {
    let server = &loaded.config.server;
    let Some(user) = &server.user else { return };
    if !crate::privileges::is_root() {
        return;
    }
    let ids = crate::privileges::user_id(user).and_then(|(uid, primary)| {
        let gid = match &server.group {
            Some(g) => crate::privileges::group_id(g)?,
            None => primary,
        };
        Ok((uid, gid))
    });
    match ids {
        Ok((uid, gid)) => {
            if let Err(e) = crate::privileges::chown_own_file(file, uid, gid) {
                tracing::warn!(file = %file.display(), error = %e, "could not give the log file to the run user: a SIGHUP cannot reopen it");
            }
        }
        Err(e) => tracing::warn!(error = %e, "run user"),
    }
}

fn stdio_to_dev_null() -> std::io::Result<()> {
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")?;
    let fd = std::os::fd::AsRawFd::as_raw_fd(&null);
    for target in 0..=2 {
        // SAFETY: dup2 onto the standard descriptors, which this process owns.
        if unsafe { libc::dup2(fd, target) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

// --- stop, status, reload -------------------------------------------------------------

fn stop(config: Option<&Path>, timeout: Duration) -> Result<Report, CliError> {
    let located = locate(config)?;
    let data_dir = &located.data_dir;
    let pid = match pid_state(data_dir) {
        PidState::NotRunning => return Ok(Report::out(lsb::OK, "not running\n")),
        PidState::Stale { pid, now } => {
            return Ok(Report::out(
                lsb::OK,
                format!("{}; nothing to stop\n", stale_text(data_dir, pid, &now)),
            ));
        }
        PidState::Unreadable(why) => return Ok(Report::err(lsb::FAILURE, why)),
        PidState::Running(pid) => pid,
    };
    if let Err(e) = signal(pid, libc::SIGTERM) {
        return Ok(Report::err(lsb::FAILURE, e));
    }
    let deadline = Instant::now() + timeout;
    while Process::of(pid).is_mailchute() {
        if Instant::now() >= deadline {
            return Ok(Report::err(
                lsb::FAILURE,
                format!(
                    "pid {pid} still runs {}s after SIGTERM (deliveries still finishing?); \
                     `kill -9 {pid}` stops it at once: what it had accepted stays in the spool",
                    timeout.as_secs()
                ),
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(Report::out(lsb::OK, format!("stopped (pid {pid})\n")))
}

fn signal(pid: i32, sig: libc::c_int) -> Result<(), String> {
    // SAFETY: kill(2) on a pid just checked to be mailchute's.
    if unsafe { libc::kill(pid, sig) } != 0 {
        let e = std::io::Error::last_os_error();
        let hint = if e.raw_os_error() == Some(libc::EPERM) {
            " (run this as root or as the daemon's user)"
        } else {
            ""
        };
        return Err(format!("cannot signal pid {pid}: {e}{hint}"));
    }
    Ok(())
}

fn status(config: Option<&Path>) -> Report {
    let located = match locate(config) {
        Ok(l) => l,
        Err(e) => return Report::err(lsb::UNKNOWN, format!("status unknown: {}", error_line(&e))),
    };
    let data_dir = &located.data_dir;
    match pid_state(data_dir) {
        PidState::Running(pid) => {
            let listeners = match &located.loaded {
                Ok(l) => listener_list(l),
                Err(_) => "unknown (the config does not load; `mailchute config check`)".into(),
            };
            Report::out(
                lsb::OK,
                format!("running (pid {pid}), listeners {listeners}\n"),
            )
        }
        PidState::Stale { pid, now } => Report::out(
            lsb::FAILURE,
            format!("{}\n", stale_text(data_dir, pid, &now)),
        ),
        PidState::NotRunning => Report::out(
            lsb::NOT_RUNNING_STATUS,
            format!("not running (no {})\n", pid_path(data_dir).display()),
        ),
        PidState::Unreadable(why) => Report::err(lsb::UNKNOWN, format!("status unknown: {why}")),
    }
}

fn reload(config: Option<&Path>) -> Result<Report, CliError> {
    let located = locate(config)?;
    let data_dir = &located.data_dir;
    let pid = match pid_state(data_dir) {
        PidState::Running(pid) => pid,
        PidState::NotRunning => {
            return Ok(Report::err(
                lsb::NOT_RUNNING,
                "not running: nothing to reload (`mailchute daemon start`)",
            ));
        }
        PidState::Stale { pid, now } => {
            return Ok(Report::err(
                lsb::NOT_RUNNING,
                format!("{}: nothing to reload", stale_text(data_dir, pid, &now)),
            ));
        }
        PidState::Unreadable(why) => return Ok(Report::err(lsb::FAILURE, why)),
    };
    // The daemon would refuse it too and keep the running config; say why here, where
    // someone reads it.
    let refused = |why: String| {
        Report::err(
            crate::delivery::sysexits::EX_CONFIG,
            format!("{why}; not reloading (the daemon keeps its running config)"),
        )
    };
    let loaded = match located.loaded {
        Ok(l) => l,
        Err(e) => return Ok(refused(error_line(&e))),
    };
    if let Err(e) = super::serve::check(&loaded) {
        return Ok(refused(e.to_string()));
    }
    if let Err(e) = signal(pid, libc::SIGHUP) {
        return Ok(Report::err(lsb::FAILURE, e));
    }
    Ok(Report::out(
        lsb::OK,
        format!(
            "reload requested (pid {pid}); the daemon logs \"configuration reloaded\" or why it refused \
             (listeners, data_dir, user and group need a restart)\n"
        ),
    ))
}

fn error_line(e: &ConfigError) -> String {
    let mut out = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        let text = c.to_string();
        if !out.contains(&text) {
            let _ = write!(out, ": {text}");
        }
        cause = c.source();
    }
    out
}

fn listener_list(loaded: &Loaded) -> String {
    loaded
        .config
        .listeners
        .iter()
        .map(|l| {
            format!(
                "{} {} ({})",
                crate::smtpd::settings::listener_name(l),
                l.address,
                l.protocol.as_str()
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

// --- info -----------------------------------------------------------------------------

fn info(config: Option<&Path>) -> Result<Report, CliError> {
    let loaded = config::load(config, true)?;
    let c = &loaded.config;
    let data_dir = &c.server.data_dir;
    let mut o = String::new();
    let _ = writeln!(o, "mailchute {}", env!("CARGO_PKG_VERSION"));
    let state = match pid_state(data_dir) {
        PidState::Running(pid) => format!("running (pid {pid})"),
        PidState::NotRunning => "not running".into(),
        PidState::Stale { pid, now } => stale_text(data_dir, pid, &now),
        PidState::Unreadable(why) => format!("unknown: {why}"),
    };
    let _ = writeln!(o, "daemon:    {state}");
    let source = match &loaded.source {
        Source::File(p) => std::path::absolute(p)
            .unwrap_or_else(|_| p.clone())
            .display()
            .to_string(),
        Source::Embedded => "embedded default".into(),
    };
    let _ = writeln!(o, "config:    {source}");
    let _ = writeln!(o, "data_dir:  {}", data_dir.display());
    let _ = writeln!(o, "pid file:  {}", pid_path(data_dir).display());
    if let Some(user) = &c.server.user {
        let group = c.server.group.as_deref().unwrap_or("(user's group)");
        let _ = writeln!(o, "run as:    {user}:{group}");
    }
    let _ = writeln!(o, "spool:     {}", spool_counts(data_dir));
    let _ = writeln!(o, "listeners:");
    for l in &c.listeners {
        let tls = match l.tls {
            config::TlsMode::None => "none",
            config::TlsMode::Starttls if l.require_tls => "starttls (required)",
            config::TlsMode::Starttls => "starttls",
            config::TlsMode::Implicit => "implicit",
        };
        let auth = if l.auth.is_empty() {
            "none".to_string()
        } else {
            l.auth.join(",")
        };
        let _ = write!(
            o,
            "  {}: {} protocol={} mode={} tls={tls} auth={auth}",
            crate::smtpd::settings::listener_name(l),
            l.address,
            l.protocol.as_str(),
            l.mode.as_str(),
        );
        if l.address.starts_with("unix:") {
            let _ = write!(
                o,
                " socket_mode={} socket_group={}",
                l.socket_mode.as_deref().unwrap_or("0666"),
                l.socket_group.as_deref().unwrap_or("(run group)")
            );
        }
        o.push('\n');
    }
    if c.listeners.is_empty() {
        let _ = writeln!(o, "  none (deliver / sendmail only)");
    }
    let _ = writeln!(o, "routes:");
    for (i, r) in c.routes.iter().enumerate() {
        let name = r.name.clone().unwrap_or_else(|| format!("route[{i}]"));
        let filters = if r.filters.is_empty() {
            String::new()
        } else {
            format!(" (filters {})", r.filters.join(", "))
        };
        let sinks = if r.sinks.is_empty() {
            "(upstream)".to_string()
        } else {
            r.sinks.join(", ")
        };
        let _ = writeln!(o, "  {name}: {} -> {sinks}{filters}", r.matches.join(" "));
    }
    if c.routes.is_empty() {
        let _ = writeln!(o, "  none: every recipient is refused");
    }
    Ok(Report::out(lsb::OK, o))
}

/// `N queued, M dead`, counted by sidecar (one per message), as `queue list` counts.
fn spool_counts(data_dir: &Path) -> String {
    let layout = Layout::new(data_dir);
    let count = |dir: &Path| -> Result<usize, String> {
        match std::fs::read_dir(dir) {
            Ok(entries) => Ok(entries
                .filter_map(Result::ok)
                .filter(|e| file_id(&e.file_name(), ".json").is_some())
                .count()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(format!("cannot read {}: {e}", dir.display())),
        }
    };
    let show = |r: Result<usize, String>, what: &str| match r {
        Ok(n) => format!("{n} {what}"),
        Err(e) => format!("{what}: {e}"),
    };
    format!(
        "{}, {}",
        show(count(&layout.queue), "queued"),
        show(count(&layout.dead), "dead")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_data_dir_resolves_against_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "[server]\ndata_dir = \"./d\"\nbogus = 1\n").unwrap();
        assert_eq!(raw_data_dir(&path), Some(dir.path().join("./d")));
        std::fs::write(&path, "nothing = 1\n").unwrap();
        assert_eq!(
            raw_data_dir(&path),
            Some(dir.path().join("./mailchute-data"))
        );
    }
}
