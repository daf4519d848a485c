//! `exec`: runs a command with the message on stdin, like Postfix's `pipe(8)`.
//!
//! The command is an argv (no shell). Its elements may hold `{sender}` (empty for the null
//! sender), `{rcpt}` and `{id}`. An element that is exactly `{rcpt}` becomes one argument
//! per recipient and the command runs once for all of them; `{rcpt}` inside a longer
//! element (`--to={rcpt}`) runs the command once per recipient, one after the other. A
//! recipient may begin with `-`: commands that parse options should get `--` before it.
//!
//! The message goes to stdin with LF line endings by default (what `pipe` gives a command;
//! `line_endings = "crlf"` passes the bytes as received). Stdout and stderr share one pipe,
//! of which the first 4 KiB are kept for the log and the error text.
//!
//! Outcome, as Postfix reads it: exit 0 is delivered. Otherwise, a first output line
//! starting with an RFC 3463 code (`4.x.x text` / `5.x.x text`) decides; else the exit code
//! is read as a sysexits.h code: 64-69, 76 and 77 are permanent, everything else (75
//! EX_TEMPFAIL, 70-74, 78, unknown codes, death by a signal, a timeout, a command that
//! cannot be started) is temporary — never a bounce on something we do not understand.
//! On timeout the command and its whole process group are killed.

pub mod config;

use super::local::LineEndings;
use super::local::{self, Converter};
use super::template::Template;
use super::{
    BoxFuture, Delivered, Delivery, InvalidKey, RcptResults, Sink, SinkContext, SinkError,
};
use config::ExecConfig;
use std::os::fd::OwnedFd;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

const VARS: &[&str] = &["sender", "rcpt", "id"];

/// Output kept from the command (stdout and stderr together).
const MAX_OUTPUT: usize = 4096;

/// How long a command we killed may take to die before we stop waiting for it.
const REAP_WAIT: Duration = Duration::from_secs(2);

/// How long output is still read after the command exited (a background child may hold
/// the pipe open).
const OUTPUT_GRACE: Duration = Duration::from_millis(500);

pub struct ExecSink {
    /// The program: absolute, relative to the config's directory, or a name to find on PATH.
    program: PathBuf,
    args: Vec<Template>,
    /// `{rcpt}` appears inside a longer argument: one run per recipient.
    per_rcpt: bool,
    timeout: Duration,
    line_endings: LineEndings,
}

impl ExecSink {
    pub fn new(c: &ExecConfig, ctx: &SinkContext) -> Result<Self, InvalidKey> {
        let Some((first, rest)) = c.command.split_first() else {
            return Err(InvalidKey::at(
                "command",
                "is empty; expected an argv like [\"/usr/bin/procmail\", \"-d\", \"{rcpt}\"]",
            ));
        };
        if first.is_empty() || first.contains('{') || first.contains('}') || first.contains('\0') {
            return Err(InvalidKey::at_index(
                "command",
                0,
                format!(
                    "\"{}\" must be a program path or name without variables",
                    first.escape_debug()
                ),
            ));
        }
        let program = if first.contains('/') {
            ctx.base_dir.join(first)
        } else {
            PathBuf::from(first)
        };
        // Checked here, where `config check` and `serve` both build the sink: a missing
        // program would otherwise only show as every delivery deferred, for days.
        if resolve(&program).is_none() {
            return Err(InvalidKey::at_index("command", 0, not_runnable(&program)));
        }
        let args = rest
            .iter()
            .enumerate()
            .map(|(i, a)| {
                if a.contains('\0') {
                    return Err(InvalidKey::at_index(
                        "command",
                        i + 1,
                        format!("\"{}\" contains NUL", a.escape_debug()),
                    ));
                }
                Ok(Template::parse_lenient(a, VARS))
            })
            .collect::<Result<Vec<_>, InvalidKey>>()?;
        let per_rcpt = args.iter().any(|a| a.uses("rcpt") && !a.is_exactly("rcpt"));
        if c.timeout.0.is_zero() {
            return Err(InvalidKey::at("timeout", "must be more than 0s"));
        }
        Ok(ExecSink {
            program,
            args,
            per_rcpt,
            timeout: c.timeout.0,
            line_endings: c.line_endings,
        })
    }

    /// The argv (without the program) for `rcpts`.
    fn argv(&self, d: &Delivery<'_>, rcpts: &[String]) -> Vec<String> {
        let mut out = Vec::with_capacity(self.args.len() + rcpts.len());
        for a in &self.args {
            if a.is_exactly("rcpt") {
                out.extend(rcpts.iter().cloned());
                continue;
            }
            let expanded: Result<String, std::convert::Infallible> = a.expand(|v| {
                Ok(match v {
                    "sender" => d.envelope.mail_from.clone(),
                    "id" => d.id.to_string(),
                    _ => rcpts.join(","),
                })
            });
            match expanded {
                Ok(s) => out.push(s),
                Err(never) => match never {},
            }
        }
        out
    }

    async fn run(&self, args: Vec<String>, message: &Path) -> Result<Delivered, SinkError> {
        let prog = self.program.display().to_string();
        let cannot = |what: &str, e: &std::io::Error| {
            SinkError::temporary("4.3.0", format!("command {prog}: {what}: {e}"))
        };
        let src = tokio::fs::File::open(message)
            .await
            .map_err(|e| SinkError::from_io(format!("open {}", message.display()), &e))?;
        let (reader, writer) = std::io::pipe().map_err(|e| cannot("create a pipe", &e))?;
        let writer2 = writer
            .try_clone()
            .map_err(|e| cannot("create a pipe", &e))?;
        let mut cmd = tokio::process::Command::new(&self.program);
        cmd.args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::from(writer))
            .stderr(Stdio::from(writer2))
            .process_group(0)
            .kill_on_drop(true);
        let mut child = cmd.spawn().map_err(|e| cannot("cannot run it", &e))?;
        // Our copies of the pipe's write end live in `cmd`: without dropping them the
        // output would never reach end-of-file.
        drop(cmd);
        let pgid = child.id().map(|p| p as libc::pid_t);
        // Dropped unfinished (the daemon stops, the delivery is cancelled): kill_on_drop
        // reaches only the command, not what it started.
        let mut group = GroupGuard(pgid);
        let mut output = tokio::net::unix::pipe::Receiver::from_owned_fd(OwnedFd::from(reader))
            .map_err(|e| cannot("read its output", &e))?;

        let feed = child
            .stdin
            .take()
            .map(|stdin| tokio::spawn(feed_stdin(src, stdin, self.line_endings, pgid)));

        let deadline = deadline_after(self.timeout);
        let mut kept = Vec::new();
        let mut buf = [0u8; 4096];
        let mut output_open = true;
        let status = loop {
            tokio::select! {
                r = output.read(&mut buf), if output_open => match r {
                    Ok(0) | Err(_) => output_open = false,
                    Ok(n) => keep(&mut kept, &buf[..n]),
                },
                s = child.wait() => {
                    group.0 = None;
                    break s.map_err(|e| cannot("wait for it", &e))?;
                }
                () = tokio::time::sleep_until(deadline) => {
                    stop(&mut child, pgid).await;
                    group.0 = None;
                    if let Some(f) = &feed {
                        f.abort();
                    }
                    return Err(SinkError::temporary(
                        "4.3.0",
                        format!("command {prog} timed out after {}s and was killed{}",
                            self.timeout.as_secs(), first_line_suffix(&kept)),
                    ));
                }
            }
        };
        let grace = deadline.min(Instant::now() + OUTPUT_GRACE);
        while output_open {
            tokio::select! {
                r = output.read(&mut buf) => match r {
                    Ok(0) | Err(_) => output_open = false,
                    Ok(n) => keep(&mut kept, &buf[..n]),
                },
                () = tokio::time::sleep_until(grace) => break,
            }
        }
        // The command may exit without reading all of stdin; that is its business (EPIPE
        // is not an error). Only failing to read the message ourselves is.
        if let Some(f) = feed {
            if f.is_finished() {
                if let Ok(Err(e)) = f.await {
                    return Err(SinkError::from_io(
                        format!("read {} for command {prog}", message.display()),
                        &e,
                    ));
                }
            } else {
                f.abort();
            }
        }
        outcome(&prog, status, &kept)
    }
}

fn keep(kept: &mut Vec<u8>, data: &[u8]) {
    let room = MAX_OUTPUT.saturating_sub(kept.len());
    kept.extend_from_slice(&data[..data.len().min(room)]);
}

/// `now + timeout`, saturating: a timeout the clock cannot represent means "no deadline to
/// speak of", never a panic. The config caps durations already; this is for sinks built in
/// code, and for clocks with less range than ours.
fn deadline_after(timeout: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(timeout)
        .or_else(|| now.checked_add(crate::config::units::MAX_DURATION))
        // Unreachable on a clock that can count a century; timing out at once is still
        // a temporary failure, retried, where a panic would fail every delivery.
        .unwrap_or(now)
}

/// Kills a command that ran out of time and reaps it. The group kill reaches what it
/// started; the command itself is killed as well because it may have left its group
/// (setpgid/setsid), and then waiting for it without a bound is waiting for as long as it
/// likes.
async fn stop(child: &mut tokio::process::Child, pgid: Option<libc::pid_t>) {
    kill_group(pgid);
    // tokio knows whether the child was reaped already, so unlike kill(2) on a saved pid
    // this can never hit a recycled pid.
    let _ = child.start_kill();
    if tokio::time::timeout(REAP_WAIT, child.wait()).await.is_err() {
        // Only a process stuck in the kernel outlives SIGKILL this long; tokio reaps it in
        // the background once it dies, so no zombie stays behind.
        tracing::warn!(pid = ?child.id(), "killed command has not exited yet; not waiting longer");
    }
}

/// Kills the command's process group when dropped while armed (`Some`).
struct GroupGuard(Option<libc::pid_t>);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        kill_group(self.0.take());
    }
}

fn kill_group(pgid: Option<libc::pid_t>) {
    if let Some(p) = pgid.filter(|&p| p > 0) {
        // SAFETY: plain syscall; the group is the one the child leads (process_group(0)).
        unsafe {
            libc::kill(-p, libc::SIGKILL);
        }
    }
}

/// Streams the message into the command's stdin, then closes it. A write error (the
/// command stopped reading) ends the feed quietly; a read error of the message kills the
/// command first, so it never takes a truncated message for a whole one.
async fn feed_stdin(
    mut src: tokio::fs::File,
    mut stdin: tokio::process::ChildStdin,
    endings: LineEndings,
    pgid: Option<libc::pid_t>,
) -> std::io::Result<()> {
    let mut conv = Converter::new(endings);
    let mut buf = vec![0u8; local::CHUNK];
    let mut out = Vec::with_capacity(local::CHUNK);
    loop {
        let n = match src.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => {
                kill_group(pgid);
                return Err(e);
            }
        };
        out.clear();
        conv.push(&buf[..n], &mut out);
        if stdin.write_all(&out).await.is_err() {
            return Ok(());
        }
    }
    out.clear();
    conv.finish(&mut out);
    if stdin.write_all(&out).await.is_ok() {
        let _ = stdin.shutdown().await;
    }
    Ok(())
}

/// The first line of the output, printable characters only, at most 200 of them.
fn first_line(output: &[u8]) -> String {
    let line = output.split(|&b| b == b'\n').next().unwrap_or_default();
    String::from_utf8_lossy(line)
        .chars()
        .filter(|c| !c.is_control())
        .take(200)
        .collect::<String>()
        .trim()
        .to_string()
}

fn first_line_suffix(output: &[u8]) -> String {
    match first_line(output) {
        l if l.is_empty() => String::new(),
        l => format!(": {l}"),
    }
}

/// An RFC 3463 status code at the start of `line` (`4.x.x` or `5.x.x` followed by a space
/// or the end), and the text after it.
fn status_code(line: &str) -> Option<(&str, &str)> {
    let end = line.find(char::is_whitespace).unwrap_or(line.len());
    let code = &line[..end];
    let mut parts = code.split('.');
    let class = parts.next()?;
    let subject = parts.next()?;
    let detail = parts.next()?;
    let number = |s: &str| !s.is_empty() && s.len() <= 3 && s.bytes().all(|b| b.is_ascii_digit());
    if parts.next().is_some() || !matches!(class, "4" | "5") || !number(subject) || !number(detail)
    {
        return None;
    }
    Some((code, line[end..].trim()))
}

/// sysexits.h codes: whether permanent, the status code, and what the code means.
fn sysexit(code: i32) -> (bool, &'static str, &'static str) {
    match code {
        64 => (true, "5.3.0", "command line usage error (EX_USAGE)"),
        65 => (true, "5.6.0", "data format error (EX_DATAERR)"),
        66 => (true, "5.3.0", "cannot open input (EX_NOINPUT)"),
        67 => (true, "5.1.1", "user unknown (EX_NOUSER)"),
        68 => (true, "5.1.2", "host name unknown (EX_NOHOST)"),
        69 => (true, "5.3.0", "service unavailable (EX_UNAVAILABLE)"),
        70 => (false, "4.3.0", "internal software error (EX_SOFTWARE)"),
        71 => (false, "4.3.0", "system error (EX_OSERR)"),
        72 => (false, "4.3.0", "critical OS file missing (EX_OSFILE)"),
        73 => (false, "4.3.0", "cannot create output file (EX_CANTCREAT)"),
        74 => (false, "4.3.0", "input/output error (EX_IOERR)"),
        75 => (false, "4.3.0", "temporary failure (EX_TEMPFAIL)"),
        76 => (true, "5.5.0", "remote error in protocol (EX_PROTOCOL)"),
        77 => (true, "5.7.1", "permission denied (EX_NOPERM)"),
        78 => (false, "4.3.5", "configuration error (EX_CONFIG)"),
        _ => (false, "4.3.0", "unknown exit status"),
    }
}

fn outcome(prog: &str, status: ExitStatus, output: &[u8]) -> Result<Delivered, SinkError> {
    let line = first_line(output);
    let Some(code) = status.code() else {
        let signal = status.signal().unwrap_or(0);
        return Err(SinkError::temporary(
            "4.3.0",
            format!(
                "command {prog} was killed by signal {signal}{}",
                first_line_suffix(output)
            ),
        ));
    };
    if code == 0 {
        let detail = match line.is_empty() {
            true => format!("command {prog} exited 0"),
            false => format!("command {prog} exited 0: {line}"),
        };
        return Ok(Delivered { detail });
    }
    if let Some((status, text)) = status_code(&line) {
        let message = match text.is_empty() {
            true => format!("command {prog} exited {code}"),
            false => text.to_string(),
        };
        return Err(if status.starts_with('5') {
            SinkError::permanent(status, message)
        } else {
            SinkError::temporary(status, message)
        });
    }
    let (permanent, status, meaning) = sysexit(code);
    let message = format!(
        "command {prog} exited {code}, {meaning}{}",
        first_line_suffix(output)
    );
    Err(if permanent {
        SinkError::permanent(status, message)
    } else {
        SinkError::temporary(status, message)
    })
}

/// Why [`resolve`] found nothing, saying where it looked.
fn not_runnable(program: &Path) -> String {
    if program.as_os_str().as_encoded_bytes().contains(&b'/') {
        return format!("{}: not found or not executable", program.display());
    }
    let path = search_path();
    format!(
        "\"{}\": not found or not executable in PATH ({}); give its full path",
        program.display(),
        path.to_string_lossy()
    )
}

/// Where a bare program name is looked for: `PATH`, or without one the default that
/// execvp(3) uses then, so the check agrees with what running it would do.
fn search_path() -> std::ffi::OsString {
    std::env::var_os("PATH").unwrap_or_else(|| "/bin:/usr/bin".into())
}

/// Where a program name would be found: itself when it has a `/`, else the first
/// executable match on PATH.
fn resolve(program: &Path) -> Option<PathBuf> {
    let executable = |p: &Path| p.is_file() && local::access_ok(p, libc::X_OK);
    if program.as_os_str().as_encoded_bytes().contains(&b'/') {
        return executable(program).then(|| program.to_path_buf());
    }
    std::env::split_paths(&search_path())
        .map(|d| d.join(program))
        .find(|p| executable(p))
}

impl Sink for ExecSink {
    fn deliver<'a>(&'a self, d: &'a Delivery<'a>) -> BoxFuture<'a, RcptResults> {
        Box::pin(async move {
            if !self.per_rcpt {
                let r = self.run(self.argv(d, d.rcpts), d.message).await;
                return super::same_for_all(d.rcpts.len(), r);
            }
            let mut results = Vec::with_capacity(d.rcpts.len());
            for rcpt in d.rcpts {
                let argv = self.argv(d, std::slice::from_ref(rcpt));
                results.push(self.run(argv, d.message).await);
            }
            results
        })
    }

    fn healthcheck(&self) -> BoxFuture<'_, Result<(), SinkError>> {
        Box::pin(async move {
            let program = self.program.clone();
            local::blocking("exec health check", move || match resolve(&program) {
                Some(_) => Ok(()),
                None => Err(SinkError::temporary(
                    "4.3.0",
                    format!(
                        "command {} does not exist or is not executable",
                        program.display()
                    ),
                )),
            })
            .await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::local::test_support::*;
    use super::*;
    use crate::config::Duration as CfgDuration;
    use crate::config::error::path_string;

    fn sink(dir: &Path, command: &[&str], timeout: u64, endings: LineEndings) -> ExecSink {
        ExecSink::new(
            &ExecConfig {
                command: command.iter().map(|s| s.to_string()).collect(),
                timeout: CfgDuration::from_secs(timeout),
                line_endings: endings,
            },
            &ctx(dir),
        )
        .unwrap()
    }

    async fn run(
        s: &ExecSink,
        dir: &Path,
        message: &[u8],
        sender: &str,
        rcpts: &[&str],
    ) -> RcptResults {
        let msg = dir.join("msg");
        std::fs::write(&msg, message).unwrap();
        let env = envelope(sender, rcpts);
        let d = Delivery {
            id: "ID7",
            envelope: &env,
            rcpts: &env.rcpts,
            message: &msg,
            first_attempt: false,
        };
        s.deliver(&d).await
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn stdin_is_the_message() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let script = format!("cat > {}", out.display());
        for endings in [LineEndings::Lf, LineEndings::Crlf] {
            let s = sink(dir.path(), &["sh", "-c", &script], 10, endings);
            let r = run(&s, dir.path(), &sample_message(), "", &["a@x"]).await;
            assert!(r[0].is_ok(), "{r:?}");
            let want = match endings {
                LineEndings::Lf => crlf_to_lf(&sample_message()),
                LineEndings::Crlf => sample_message(),
            };
            assert_eq!(std::fs::read(&out).unwrap(), want);
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn exit_codes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        let r = run(
            &sink(p, &["sh", "-c", "exit 0"], 10, LineEndings::Lf),
            p,
            b"x\r\n",
            "",
            &["a@x", "b@x"],
        )
        .await;
        assert!(r.iter().all(|r| r.is_ok()), "{r:?}");
        assert_eq!(r.len(), 2);

        let r = run(
            &sink(
                p,
                &["sh", "-c", "echo no such user; exit 67"],
                10,
                LineEndings::Lf,
            ),
            p,
            b"x\r\n",
            "",
            &["a@x"],
        )
        .await;
        let e = r[0].as_ref().unwrap_err();
        assert!(!e.is_temporary());
        assert_eq!(e.status, "5.1.1");
        assert!(
            e.message.contains("EX_NOUSER") && e.message.contains("no such user"),
            "{e:?}"
        );

        let r = run(
            &sink(p, &["sh", "-c", "exit 75"], 10, LineEndings::Lf),
            p,
            b"x\r\n",
            "",
            &["a@x"],
        )
        .await;
        let e = r[0].as_ref().unwrap_err();
        assert!(e.is_temporary());
        assert_eq!(e.status, "4.3.0");

        let r = run(
            &sink(p, &["sh", "-c", "exit 3"], 10, LineEndings::Lf),
            p,
            b"x\r\n",
            "",
            &["a@x"],
        )
        .await;
        assert!(
            r[0].as_ref().unwrap_err().is_temporary(),
            "unknown codes never bounce"
        );

        // The RFC 3463 first line wins over the exit code (and goes via stderr here).
        let r = run(
            &sink(
                p,
                &["sh", "-c", "echo '5.2.2 mailbox full' >&2; exit 75"],
                10,
                LineEndings::Lf,
            ),
            p,
            b"x\r\n",
            "",
            &["a@x"],
        )
        .await;
        let e = r[0].as_ref().unwrap_err();
        assert_eq!(
            (e.status.as_str(), e.message.as_str(), e.is_temporary()),
            ("5.2.2", "mailbox full", false)
        );
        let r = run(
            &sink(
                p,
                &["sh", "-c", "echo '4.7.1 try later'; exit 69"],
                10,
                LineEndings::Lf,
            ),
            p,
            b"x\r\n",
            "",
            &["a@x"],
        )
        .await;
        let e = r[0].as_ref().unwrap_err();
        assert_eq!((e.status.as_str(), e.is_temporary()), ("4.7.1", true));

        let r = run(
            &sink(p, &["sh", "-c", "kill -TERM $$"], 10, LineEndings::Lf),
            p,
            b"x\r\n",
            "",
            &["a@x"],
        )
        .await;
        let e = r[0].as_ref().unwrap_err();
        assert!(e.is_temporary() && e.message.contains("signal 15"), "{e:?}");
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn timeout_kills_the_group() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        let started = std::time::Instant::now();
        let s = sink(p, &["sh", "-c", "sleep 5"], 1, LineEndings::Lf);
        let r = run(&s, p, b"x\r\n", "", &["a@x"]).await;
        let e = r[0].as_ref().unwrap_err();
        assert!(
            e.is_temporary() && e.message.contains("timed out after 1s"),
            "{e:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(4));

        // A background child keeping the output pipe open does not hold us up.
        let started = std::time::Instant::now();
        let s = sink(p, &["sh", "-c", "sleep 5 & echo done"], 10, LineEndings::Lf);
        let r = run(&s, p, b"x\r\n", "", &["a@x"]).await;
        assert_eq!(r[0].as_ref().unwrap().detail, "command sh exited 0: done");
        assert!(started.elapsed() < Duration::from_secs(4));
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn timeout_kills_a_command_that_left_its_group() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        let pid_file = p.join("pid");
        // Moves itself into its parent's process group, out of reach of the group kill.
        let script = format!(
            "import os, time\n\
             open({:?}, 'w').write(str(os.getpid()))\n\
             os.setpgid(0, os.getpgid(os.getppid()))\n\
             time.sleep(10)\n",
            pid_file.display().to_string()
        );
        let python = std::env::var("MAILCHUTE_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
        let s = sink(p, &[&python, "-c", &script], 1, LineEndings::Lf);
        let started = std::time::Instant::now();
        let r = run(&s, p, b"x\r\n", "", &["a@x"]).await;
        let e = r[0].as_ref().unwrap_err();
        assert!(
            e.is_temporary() && e.message.contains("timed out after 1s"),
            "{e:?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "answered after {:?}",
            started.elapsed()
        );
        // Killed and reaped: not running, and not left as a zombie either.
        let pid = std::fs::read_to_string(&pid_file).unwrap();
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "process {pid} is still there"
        );
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_timeout_beyond_the_clock_does_not_panic() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        let mut s = sink(p, &["true"], 1, LineEndings::Lf);
        // What "200000000000000d" meant before the config capped durations.
        s.timeout = Duration::from_secs(200_000_000_000_000 * 86400);
        let r = run(&s, p, b"x\r\n", "", &["a@x"]).await;
        assert!(r[0].is_ok(), "{r:?}");
        s.timeout = Duration::MAX;
        let r = run(&s, p, b"x\r\n", "", &["a@x"]).await;
        assert!(r[0].is_ok(), "{r:?}");
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn argv_templating() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        let log = p.join("log");
        let script = format!(
            "printf '%s|' \"$@\" >> {}; echo >> {}",
            log.display(),
            log.display()
        );
        // `{rcpt}` alone: one run, one argument per recipient.
        let s = sink(
            p,
            &[
                "sh", "-c", &script, "sh", "-f", "{sender}", "--", "{rcpt}", "id={id}",
            ],
            10,
            LineEndings::Lf,
        );
        let r = run(&s, p, b"x\r\n", "s@x", &["a@x", "b@y"]).await;
        assert!(r.iter().all(|r| r.is_ok()));
        // `{rcpt}` inside an argument: one run per recipient; the null sender is empty.
        let s = sink(
            p,
            &[
                "sh",
                "-c",
                &script,
                "sh",
                "-f{sender}",
                "--to={rcpt}",
                "{rcpt}",
            ],
            10,
            LineEndings::Lf,
        );
        let r = run(&s, p, b"x\r\n", "", &["a@x", "b@y"]).await;
        assert!(r.iter().all(|r| r.is_ok()));
        assert_eq!(
            std::fs::read_to_string(&log).unwrap(),
            "-f|s@x|--|a@x|b@y|id=ID7|\n-f|--to=a@x|a@x|\n-f|--to=b@y|b@y|\n"
        );
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn missing_program_and_unread_stdin() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        // It existed when the sink was built, and was removed since.
        let prog = p.join("no-such-program");
        std::fs::write(&prog, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&prog, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let s = sink(p, &["./no-such-program"], 10, LineEndings::Lf);
        std::fs::remove_file(&prog).unwrap();
        let r = run(&s, p, b"x\r\n", "", &["a@x"]).await;
        let e = r[0].as_ref().unwrap_err();
        assert!(
            e.is_temporary() && e.message.contains("no-such-program"),
            "{e:?}"
        );
        assert!(s.healthcheck().await.is_err());
        assert!(
            sink(p, &["sh"], 10, LineEndings::Lf)
                .healthcheck()
                .await
                .is_ok()
        );

        // A command that exits 0 without reading a large message: delivered.
        let big = vec![b'y'; 4 << 20];
        let s = sink(p, &["true"], 10, LineEndings::Lf);
        let r = run(&s, p, &big, "", &["a@x"]).await;
        assert!(r[0].is_ok(), "{r:?}");
    }

    #[test]
    fn the_example_runs_procmail_once_per_recipient() {
        let dir = tempfile::tempdir().unwrap();
        let loaded =
            crate::config::parse_str(crate::config::example(), "example.toml", dir.path()).unwrap();
        let Some(t) = loaded.config.sinks.get("procmail") else {
            panic!("the example has no exec sink \"procmail\"");
        };
        assert_eq!(t.kind, "exec");
        let c: ExecConfig = t.parse().unwrap();
        // env(1) is everywhere; procmail need not be installed: the arguments are tested.
        let s = ExecSink::new(&c, &ctx(dir.path())).unwrap();
        assert!(s.per_rcpt, "procmail must run once per recipient");
        let env = envelope("s@x", &["a@x", "b@y"]);
        let d = Delivery {
            id: "ID7",
            envelope: &env,
            rcpts: &env.rcpts,
            message: Path::new("/dev/null"),
            first_attempt: true,
        };
        let argv = s.argv(&d, &env.rcpts[..1]);
        assert_eq!(argv, ["RECIPIENT=a@x", "procmail", "-f", "s@x"]);
    }

    #[test]
    fn config_errors_and_codes() {
        let dir = tempfile::tempdir().unwrap();
        let c = |cmd: &[&str]| {
            ExecSink::new(
                &ExecConfig {
                    command: cmd.iter().map(|s| s.to_string()).collect(),
                    timeout: CfgDuration::from_secs(1),
                    line_endings: LineEndings::Lf,
                },
                &ctx(dir.path()),
            )
        };
        let key = |cmd: &[&str]| c(cmd).err().map(|e| path_string(&e.key));
        assert_eq!(key(&[]).as_deref(), Some("command"));
        assert_eq!(key(&["{rcpt}"]).as_deref(), Some("command[0]"));
        assert_eq!(key(&["sh", "ok", "a\0b"]).as_deref(), Some("command[2]"));
        // The program must exist and be executable: by path (relative to the config's
        // directory) or on PATH.
        let msg = |cmd: &[&str]| c(cmd).err().map(|e| (path_string(&e.key), e.message));
        let (k, m) = msg(&["/nonexistent/prog"]).unwrap();
        assert_eq!(k, "command[0]");
        assert!(
            m.contains("/nonexistent/prog: not found or not executable"),
            "{m}"
        );
        let (k, m) = msg(&["surely-no-such-program-here"]).unwrap();
        assert_eq!(k, "command[0]");
        assert!(m.contains("not found or not executable in PATH"), "{m}");
        std::fs::write(dir.path().join("plain"), "#!/bin/sh\n").unwrap();
        assert!(msg(&["./plain"]).is_some(), "a file without x bits passed");
        std::fs::set_permissions(
            dir.path().join("plain"),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        assert!(c(&["./plain"]).is_ok());
        assert!(msg(&["."]).is_some(), "a directory passed");
        // Braces that are not our variables belong to the command (shell, awk).
        assert!(c(&["sh", "{user}"]).is_ok_and(|s| !s.per_rcpt));
        assert!(c(&["sh", "{rcpt}"]).is_ok_and(|s| !s.per_rcpt));
        assert!(c(&["sh", "-d{rcpt}"]).is_ok_and(|s| s.per_rcpt));
        assert_eq!(status_code("5.1.1 no"), Some(("5.1.1", "no")));
        assert_eq!(status_code("4.2.0"), Some(("4.2.0", "")));
        assert_eq!(status_code("2.0.0 ok"), None);
        assert_eq!(status_code("5.1 x"), None);
        assert_eq!(status_code("5.1.1234 x"), None);
        assert_eq!(status_code("5.1.1x y"), None);
    }
}
