//! `mailchute deliver`: the MDA a Postfix `pipe` transport runs for each message.
//!
//! Postfix's queue holds the durable copy, so nothing is spooled here: the message streams
//! into a private temporary file, the routes' filters run, the sinks deliver, and the exit
//! status says what Postfix must do (DESIGN.md "One error model"; `pipe(8)`): 0 delivered;
//! 75 retry (the first output line `4.x.x text`); 65/67/69/77 bounce (`5.x.x text`). Only
//! 75 and 71 make Postfix retry, so everything this command cannot vouch for — a config
//! error, an unreadable log file, a panic, its own deadline — is 75, never a bounce. Postfix
//! reads stdout and stderr through one pipe and takes the first line as the status, so
//! nothing is printed before it: logs go to `--log-file`, or are held and written to
//! stderr after it (`--log-stderr`), or go nowhere.

use crate::config::{self, Duration, Loaded};
use crate::delivery::{Exit, SinkError, sysexits};
use crate::envelope::{Body, ClientInfo, Envelope, new_id, now_unix};
use crate::intake::{BodyWriter, Intake, IntakeMode, Policy};
use crate::log::Destination;
use crate::pipeline::Pipeline;
use crate::sinks::SinkContext;
use crate::spool::{Committer, Incoming};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;
use tokio::io::AsyncReadExt;

use super::LogOptions;

/// Postfix's `command_time_limit` default: a command that runs longer bounces the message.
const POSTFIX_TIME_LIMIT: std::time::Duration = std::time::Duration::from_secs(1000);

#[derive(Debug, clap::Args)]
pub struct DeliverArgs {
    /// Recipient (`-a RCPT` or `-a=RCPT`; repeat for several: one exit status covers them
    /// all). Without it, the catch-all route takes the message.
    #[arg(
        short = 'a',
        long = "rcpt",
        value_name = "RCPT",
        allow_hyphen_values = true
    )]
    pub rcpts: Vec<String>,
    /// Envelope sender; empty (the default) is the null sender.
    #[arg(short = 'f', long = "from", value_name = "SENDER", default_value = "")]
    pub sender: String,
    /// Postfix's queue id (`${queue_id}`): names of what is stored derive from it, the
    /// message's SHA-256 and the recipients, so Postfix's retry is recognised instead of
    /// storing a second copy. Without it, from the SHA-256 and the recipients.
    #[arg(long = "id", value_name = "QUEUE_ID")]
    pub queue_id: Option<String>,
    /// Give up with status 75 (Postfix retries) after this long; below Postfix's command
    /// time limit (1000s by default), which would bounce the message.
    #[arg(long, value_name = "DURATION", default_value = "300s", value_parser = parse_deadline)]
    pub deadline: Duration,
    /// Log to stderr, after the status line (Postfix then shows the lines in its own log
    /// entry for a deferral or a bounce), instead of nowhere; `--log-file` logs to a file.
    #[arg(long)]
    pub log_stderr: bool,
    /// The message itself, as one argument, instead of standard input (mailtos3's habit).
    #[arg(value_name = "MESSAGE")]
    pub message: Vec<String>,
}

fn parse_deadline(s: &str) -> Result<Duration, String> {
    let d = config::units::parse_duration(s)?;
    if d.0.is_zero() || d.0 >= POSTFIX_TIME_LIMIT {
        return Err(format!(
            "{s}: expected more than 0s and less than Postfix's 1000s command time limit"
        ));
    }
    Ok(d)
}

/// What the binary's edge prints (the status line, on stdout) and exits with.
pub fn run(args: DeliverArgs, config_path: Option<&Path>, log: &LogOptions) -> Exit {
    let loaded = match config::load(config_path, false) {
        Ok(l) => l,
        Err(e) => return tempfail("4.3.5", format!("mailchute deliver: {e}")),
    };
    // Whatever a sink prints (the ses sink's relay_log) waits for the status line too.
    crate::log::hold_output();
    let destination = match (args.log_stderr, &log.file) {
        (true, Some(_)) => {
            return tempfail(
                "4.3.5",
                "mailchute deliver: --log-stderr and --log-file: choose one".into(),
            );
        }
        (true, None) => Destination::Held,
        (false, _) => Destination::None,
    };
    if let Err(e) = log.init(loaded.config.server.log_format, destination) {
        return tempfail("4.3.0", format!("mailchute deliver: {e}"));
    }
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return tempfail("4.3.0", format!("mailchute deliver: starting: {e}")),
    };
    let deadline = args.deadline;
    let exit = rt.block_on(async {
        // A signal (Postfix stopping, an admin's kill) ends the run as a deferral, and the
        // future is dropped, so its temporary copy of the message is removed.
        let signals = interrupted();
        tokio::select! {
            r = tokio::time::timeout(deadline.0, deliver(&loaded, &args)) => match r {
                Ok(exit) => exit,
                Err(_) => {
                    let exit = tempfail(
                        "4.4.7",
                        format!("mailchute deliver: not done within the deadline of {deadline}"),
                    );
                    log_unfinished(&args, &exit);
                    exit
                }
            },
            name = signals => {
                let exit = tempfail("4.3.0", format!("mailchute deliver: stopped by {name}"));
                log_unfinished(&args, &exit);
                exit
            }
        }
    });
    // A sink still writing on the blocking pool must not hold the exit past the deadline.
    rt.shutdown_timeout(std::time::Duration::from_secs(1));
    exit
}

/// The first of SIGTERM, SIGINT, SIGHUP to arrive (never, if they cannot be watched).
async fn interrupted() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
        _ = hup.recv() => "SIGHUP",
    }
}

/// The log line of a run that did not get to its transaction line.
fn log_unfinished(args: &DeliverArgs, exit: &Exit) {
    tracing::warn!(
        event = "transaction",
        listener = "deliver",
        queue_id = args.queue_id.as_deref(),
        from = %args.sender,
        rcpts = %args.rcpts.join(","),
        outcome = "unfinished",
        reply = exit.line.as_deref().unwrap_or_default(),
        "deliver did not finish"
    );
}

/// Writes the status line first, on stdout, as Postfix reads it; then the log lines that
/// `--log-stderr` held back.
pub fn print_status(exit: &Exit) {
    if let Some(line) = &exit.line {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    }
    crate::log::release_held();
}

fn tempfail(status: &str, text: String) -> Exit {
    Exit::from_result(&Err(SinkError::temporary(status, text)))
}

async fn deliver(loaded: &Loaded, args: &DeliverArgs) -> Exit {
    let started = Instant::now();
    if let Some(problem) = message_argument_problem(&args.message) {
        return tempfail("4.3.5", format!("mailchute deliver: {problem}"));
    }
    let rcpts: Vec<String> = if args.rcpts.is_empty() {
        // mailtos3's habit: no recipient, the catch-all route.
        vec![String::new()]
    } else {
        args.rcpts.iter().map(|r| strip_brackets(r)).collect()
    };
    let sender = strip_brackets(&args.sender);
    let config = &loaded.config;
    let ctx = SinkContext {
        hostname: config
            .server
            .hostname
            .clone()
            .unwrap_or_else(|| "localhost".into()),
        committer: Arc::new(Committer::with_method(config.server.sync_method)),
        base_dir: loaded.base_dir.clone(),
    };
    let pipeline = match Pipeline::build_for(loaded, &ctx, &rcpts) {
        Ok(p) => p,
        Err(e) => return tempfail("4.3.5", format!("mailchute deliver: {e}")),
    };
    // Policy and routing first, for every recipient: refusing one after others were
    // delivered would make Postfix's bounce and retry disagree.
    for rcpt in &rcpts {
        let refused = |exit: Exit| {
            tracing::info!(event = "refused", listener = "deliver", from = %sender, rcpt = %rcpt, reply = exit.line.as_deref().unwrap_or_default());
            exit
        };
        // What SMTP's parser would never let through must not reach a mailbox path.
        if rcpt.contains(char::is_control) {
            return refused(Exit::from_result(&Err(SinkError::permanent(
                "5.1.3",
                format!("{rcpt:?}: bad recipient address: control characters"),
            ))));
        }
        if pipeline.route_of(rcpt).is_none() {
            let shown = if rcpt.is_empty() {
                "(none given)"
            } else {
                rcpt
            };
            return refused(Exit {
                code: sysexits::EX_NOUSER,
                line: Some(format!("5.1.1 <{shown}>: no such mailbox")),
            });
        }
        if let Err(a) = Policy::default().check_rcpt(&pipeline, rcpt) {
            let e = if a.code >= 500 {
                SinkError::permanent(&a.status, a.text)
            } else {
                SinkError::temporary(&a.status, a.text)
            };
            return refused(Exit::from_result(&Err(e)));
        }
    }
    let scratch = match ScratchDir::create() {
        Ok(d) => d,
        Err(e) => {
            return tempfail(
                crate::delivery::io_status(&e),
                format!("mailchute deliver: temporary directory: {e}"),
            );
        }
    };
    let received = match receive(scratch.path(), &args.message).await {
        Ok(r) => r,
        Err(e) => {
            return tempfail(
                crate::delivery::io_status(&e),
                format!("mailchute deliver: reading the message: {e}"),
            );
        }
    };
    if received.message.size == 0 {
        // Postfix never pipes an empty message: this is a broken invocation, not mail.
        received.message.discard();
        return tempfail(
            "4.3.0",
            "mailchute deliver: no message: standard input was empty".into(),
        );
    }
    let envelope = Envelope {
        id: delivery_id(args.queue_id.as_deref(), &received.sha256, &rcpts),
        mail_from: sender,
        rcpts,
        client: ClientInfo {
            protocol: "local".into(),
            ..ClientInfo::default()
        },
        listener: "deliver".into(),
        received_at: now_unix(),
        body: if received.eight_bit {
            Body::EightBitMime
        } else {
            Body::SevenBit
        },
        smtputf8: false,
        size: received.message.size,
        sha256: received.sha256,
    };
    let intake = Intake {
        pipeline: &pipeline,
        mode: IntakeMode::Direct,
        lmtp: true,
        dsn: false,
    };
    let completion = intake.complete(envelope.clone(), received.message).await;
    let exit = Exit::combine(&completion.outcomes);
    crate::log::Transaction {
        id: &envelope.id,
        listener: "deliver",
        client_ip: None,
        helo: None,
        tls: Some("none"),
        forwarded: None,
        from: &envelope.mail_from,
        rcpts: &envelope.rcpts,
        size: envelope.size,
        routes: completion.routes,
        outcome: completion.outcome,
        reply: exit.line.clone().unwrap_or_else(|| "delivered".into()),
        duration_ms: started.elapsed().as_millis() as u64,
        // Anything but delivered is the operator's to see (logged at warn).
        error: completion.error.or_else(|| exit.line.clone()),
    }
    .log();
    drop(scratch);
    exit
}

/// Why the positional arguments cannot be the message. A pipe transport whose
/// `${recipient}` expands to several recipients passes `-a r1 r2 …`: taking `r2` for the
/// message would store the wrong bytes for r1 and nothing for r2, and say 0.
fn message_argument_problem(args: &[String]) -> Option<String> {
    let looks_like_address =
        |a: &str| a.contains('@') && !a.contains(char::is_whitespace) && !a.contains(':');
    match args {
        [] => None,
        [one] if !looks_like_address(one) => None,
        [one] => Some(format!(
            "argument {one:?} looks like a recipient, not a message: give each recipient its own -a              (in master.cf set <transport>_destination_recipient_limit = 1)"
        )),
        more => Some(format!(
            "{} arguments where at most one (the message) is expected: give each recipient its              own -a (in master.cf set <transport>_destination_recipient_limit = 1)",
            more.len()
        )),
    }
}

/// Streams the message (standard input, or the argument) into `dir`.
async fn receive(dir: &Path, args: &[String]) -> std::io::Result<crate::intake::ReceivedBody> {
    let file = Incoming::create(dir, &new_id()).map_err(std::io::Error::other)?;
    // No trace header: Postfix wrote its own; an MDA stores the message as it came.
    let mut body = BodyWriter::start(file, "").await?;
    if args.is_empty() {
        let mut stdin = tokio::io::stdin();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = stdin.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            body.write(&buf[..n]).await?;
        }
    } else {
        body.write(args.join(" ").as_bytes()).await?;
    }
    body.finish().await
}

/// The envelope id, which every stored name derives from: the same for Postfix's retry of
/// the same message to the same recipients, different for any other recipient set or
/// message.
fn delivery_id(queue_id: Option<&str>, sha256: &str, rcpts: &[String]) -> String {
    // The message's hash too: Postfix reuses short queue ids once a message has left its
    // queue, and another message under an old id must not pass for the one stored.
    let mut h = Sha256::new();
    h.update(sha256.as_bytes());
    h.update(b"\n");
    for r in rcpts {
        h.update(r.as_bytes());
        h.update(b"\n");
    }
    let rcpt_hash: String = h.finalize()[..6]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let base: String = match queue_id {
        Some(q) => q
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .take(64)
            .collect(),
        None => String::new(),
    };
    if base.is_empty() {
        format!("M{}-{rcpt_hash}", &sha256[..sha256.len().min(24)])
    } else {
        format!("{base}-{rcpt_hash}")
    }
}

fn strip_brackets(a: &str) -> String {
    let a = a.trim();
    a.strip_prefix('<')
        .and_then(|a| a.strip_suffix('>'))
        .unwrap_or(a)
        .to_string()
}

/// A private directory for the message being delivered, removed with everything in it when
/// dropped (whatever way the run ends).
struct ScratchDir(PathBuf);

impl ScratchDir {
    fn create() -> std::io::Result<ScratchDir> {
        let path = std::env::temp_dir().join(format!("mailchute-deliver.{}", new_id()));
        std::fs::DirBuilder::new().mode(0o700).create(&path)?;
        Ok(ScratchDir(path))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `f`; a panic in it ends as status 75, so Postfix retries instead of bouncing. The
/// default hook would print the panic before the status line, so it is held back and
/// returned, for the caller to print after that line.
pub fn guarded(f: impl FnOnce() -> Exit) -> (Exit, Option<String>) {
    let held = Arc::new(std::sync::Mutex::new(None::<String>));
    let hook_held = held.clone();
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if let Ok(mut h) = hook_held.lock() {
            *h = Some(info.to_string());
        }
    }));
    let exit = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
        .unwrap_or_else(|_| tempfail("4.3.0", "mailchute deliver: internal error".into()));
    std::panic::set_hook(previous);
    let message = held.lock().ok().and_then(|mut h| h.take());
    (exit, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_differ_by_recipient_and_repeat_for_a_retry() {
        let a = delivery_id(Some("4XyZ1abc"), "ff", &["a@x".into()]);
        let b = delivery_id(Some("4XyZ1abc"), "ff", &["b@x".into()]);
        assert_ne!(a, b);
        assert_eq!(a, delivery_id(Some("4XyZ1abc"), "ff", &["a@x".into()]));
        // A reused queue id with another message is another delivery.
        assert_ne!(a, delivery_id(Some("4XyZ1abc"), "00", &["a@x".into()]));
        assert!(a.starts_with("4XyZ1abc-"), "{a}");
        let m = delivery_id(None, "abcdef0123", &["a@x".into()]);
        assert!(m.starts_with("Mabcdef0123-"), "{m}");
        // Only a safe alphabet reaches file names and object keys.
        let odd = delivery_id(Some("../../x y"), "ff", &[]);
        assert!(
            odd.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'),
            "{odd}"
        );
    }

    #[test]
    fn recipients_are_never_taken_for_the_message() {
        assert!(message_argument_problem(&[]).is_none());
        assert!(message_argument_problem(&["Subject: x\n\nbody".into()]).is_none());
        assert!(message_argument_problem(&["message body".into()]).is_none());
        assert!(message_argument_problem(&["bob@pipe.test".into()]).is_some());
        assert!(message_argument_problem(&["a".into(), "b".into()]).is_some());
    }

    #[test]
    fn a_panic_is_a_deferral_with_its_message_held_back() {
        let (exit, message) = guarded(|| panic!("sink exploded"));
        assert_eq!(exit.code, sysexits::EX_TEMPFAIL);
        let line = exit.line.unwrap_or_default();
        assert!(line.starts_with("4.3.0 "), "{line}");
        assert!(
            !line.contains("exploded"),
            "no internals in the status: {line}"
        );
        assert!(message.is_some_and(|m| m.contains("sink exploded")));
        let (exit, message) = guarded(|| Exit::combine(&[]));
        assert_eq!((exit.code, message), (0, None));
    }

    #[test]
    fn a_deadline_stays_below_postfix_s_limit() {
        assert!(parse_deadline("300s").is_ok());
        assert!(parse_deadline("999s").is_ok());
        assert!(parse_deadline("1000s").is_err());
        assert!(parse_deadline("0s").is_err());
    }
}
