//! `mailchute sendmail` (also the binary invoked as `sendmail`): Postfix's sendmail(1)
//! command line for scripts, cron and every program that mails through `/usr/sbin/sendmail`.
//!
//! It reads one message from standard input (to EOF, or to a line holding only `.` unless
//! `-i`/`-oi`), takes recipients from the arguments and with `-t` from To/Cc/Bcc (Postfix
//! adds the two together), gives addresses without a domain `[server] default_domain`
//! (else the host name), removes Bcc, adds From/Date/Message-ID when missing, and submits
//! it to the daemon over its unix LMTP socket ([`submit`]). The exit status is what the
//! daemon said (DESIGN.md "One error model", the sendmail column):
//! - 0: every recipient delivered or queued by the daemon, or kept in `pickup/`
//!   ([`pickup`]) for the daemon to take (daemon down, socket refused, a deferral);
//! - 75: the message could not be kept anywhere (not by the daemon, not in `pickup/`);
//! - 67 / 65 / 77 / 69: a recipient (or the message) was refused: unknown user, content,
//!   policy, other. The refused recipients and the replies are on stderr; recipients the
//!   daemon accepted beside them were delivered (Postfix's sendmail would exit 0 and mail
//!   a bounce; there is no bounce here, so the status tells);
//! - 64: the command line.
//!
//! `-bs` speaks SMTP on standard input and output instead ([`smtp`]).
//!
//! Settings come from the config's unix LMTP listener and `data_dir` only
//! ([`settings`]); no secret is read.

pub mod pickup;
pub mod settings;
pub mod smtp;
mod stdin;
pub mod submit;

use crate::delivery::{Exit, SinkError, sysexits};
use crate::envelope::{Body, new_id};
use crate::proto::sendmail_argv::{self, Action, BodyType, SendmailArgs};
use crate::proto::sendmail_message::{self, Compose, InputLines};
use pickup::PickupEnvelope;
use settings::Settings;
use std::io::BufRead;
use std::path::Path;
use submit::{Outcome, Submission};

/// Runs `sendmail` with its raw arguments (without the program name); `config` is
/// mailchute's own `-c`, which `-C` overrides. Returns the exit status.
pub fn run(args: &[String], config: Option<&Path>) -> u8 {
    let parsed = match sendmail_argv::parse(args) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("sendmail: {e}");
            return sysexits::EX_USAGE;
        }
    };
    let verbose = parsed.verbose > 0;
    for o in &parsed.ignored {
        if verbose {
            eprintln!("sendmail: {o}: accepted and ignored (means nothing here)");
        }
    }
    match parsed.action {
        Action::NewAliases => {
            if verbose {
                eprintln!("sendmail: there is no aliases database; nothing to do");
            }
            return sysexits::OK;
        }
        Action::Smtp => {
            if !parsed.recipients.is_empty() {
                eprintln!(
                    "sendmail: -bs: recipients are given with RCPT TO in the SMTP session, not \
                     as arguments ({})",
                    parsed.recipients.join(" ")
                );
                return sysexits::EX_USAGE;
            }
            if verbose && (parsed.extract_recipients || parsed.sender.is_some()) {
                eprintln!("sendmail: -bs: -t and -f mean nothing here (RCPT TO and MAIL FROM do)");
            }
        }
        Action::Deliver => {}
    }
    if parsed.action == Action::Deliver
        && parsed.recipients.is_empty()
        && !parsed.extract_recipients
    {
        eprintln!(
            "sendmail: no recipients: give them as arguments, or -t to take them from the headers"
        );
        return sysexits::EX_USAGE;
    }
    let config = parsed.config.as_deref().map(Path::new).or(config);
    let settings = settings::read(config);
    if let Some(p) = &settings.problem {
        eprintln!("sendmail: cannot use the config ({p}); using {FALLBACKS}");
    } else if verbose {
        eprintln!("sendmail: settings from {}", settings.source);
    }
    if let Some(socket) = &settings.socket
        && socket_refuses_us(socket)
    {
        // The socket's mode and group say who may submit (DDMailer's 0770): pickup/ must
        // not be the way round it.
        eprintln!(
            "sendmail: not allowed to submit mail: {}: permission denied (the daemon takes \
             local mail only from the socket's group); nothing was sent",
            socket.display()
        );
        return sysexits::EX_NOPERM;
    }
    match parsed.action {
        Action::Smtp => smtp::run(&parsed, &settings),
        _ => deliver(&parsed, &settings),
    }
}

/// The socket exists and this user may not connect to it (write permission is what
/// connecting to a unix socket needs). A socket that is missing is a daemon that is down.
fn socket_refuses_us(socket: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(path) = std::ffi::CString::new(socket.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: access(2) reads a NUL-terminated path and touches no memory of ours.
    let refused = unsafe { libc::access(path.as_ptr(), libc::W_OK) } != 0;
    refused && std::io::Error::last_os_error().kind() == std::io::ErrorKind::PermissionDenied
}

const FALLBACKS: &str = "the socket /run/mailchute/mailchute.sock and /var/spool/mailchute/pickup";

fn deliver(a: &SendmailArgs, s: &Settings) -> u8 {
    let user = invoking_user();
    let sender = match &a.sender {
        Some(f) => match qualify(f, &s.domain) {
            Ok(f) => f,
            Err(e) => {
                eprintln!("sendmail: -f {f:?}: {e}");
                return sysexits::EX_USAGE;
            }
        },
        None => format!("{}@{}", user.login, s.domain),
    };
    let raw = match read_stdin(a.dot_ends_input, s.max_size) {
        Ok(m) => m,
        Err(Input::TooBig(n)) => {
            return refuse(
                "5.3.4",
                format!(
                    "message too big: {n} bytes or more; the daemon's limit is {} bytes",
                    s.max_size.unwrap_or(0)
                ),
            );
        }
        Err(Input::Io(e)) => {
            eprintln!("sendmail: reading standard input: {e}; nothing was sent");
            return sysexits::EX_TEMPFAIL;
        }
    };
    let from_address = if sender.is_empty() {
        format!("{}@{}", user.login, s.domain)
    } else {
        sender.clone()
    };
    let compose = Compose {
        extract: a.extract_recipients,
        from: sendmail_message::from_field(
            a.full_name.as_deref().or(user.gecos.as_deref()),
            &from_address,
        ),
        date: format!("Date: {}", crate::intake::received::now_rfc2822()),
        message_id: format!("Message-ID: <{}@{}>", new_id(), s.hostname),
    };
    let prepared = sendmail_message::prepare(&raw, &compose);
    let mut rcpts: Vec<String> = Vec::new();
    for r in a.recipients.iter().chain(&prepared.header_rcpts) {
        match qualify(r, &s.domain) {
            Ok(q) if q.is_empty() => {}
            Ok(q) => {
                if !rcpts.contains(&q) {
                    rcpts.push(q)
                }
            }
            Err(e) => {
                eprintln!("sendmail: recipient {r:?}: {e}");
                return sysexits::EX_USAGE;
            }
        }
    }
    if rcpts.is_empty() {
        // The content lacks what -t needs: a data error (65), as the headers are to blame.
        eprintln!("sendmail: 5.1.3 no recipient addresses found in the message headers");
        return sysexits::EX_DATAERR;
    }
    let eight_bit = !prepared.message.is_ascii();
    let submission = Submission {
        hostname: &s.hostname,
        from: &sender,
        rcpts: &rcpts,
        body: a.body,
        eight_bit,
        notify: a.notify,
        ret: a.ret,
        envid: a.envid.as_deref(),
        verbose: a.verbose > 0,
    };
    let outcomes = match &s.socket {
        Some(socket) => submit_now(socket, &submission, &prepared.message),
        None => Err("the config has no unix listener with protocol = \"lmtp\"".to_string()),
    };
    let outcomes = match outcomes {
        Ok(o) => o,
        Err(why) => {
            if a.verbose > 0 {
                eprintln!(
                    "sendmail: daemon not reachable ({why}): into {}",
                    s.pickup.display()
                );
            }
            rcpts
                .iter()
                .map(|_| Outcome::Deferred(why.clone()))
                .collect()
        }
    };
    conclude(
        a,
        s,
        &sender,
        &rcpts,
        outcomes,
        &prepared.message,
        eight_bit,
    )
}

fn submit_now(socket: &Path, sub: &Submission<'_>, message: &[u8]) -> Result<Vec<Outcome>, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("starting: {e}"))?;
    rt.block_on(submit::submit(socket, sub, message))
        .map_err(|e| e.0)
}

/// The exit status for the outcomes; deferred recipients go to pickup/ first.
fn conclude(
    a: &SendmailArgs,
    s: &Settings,
    sender: &str,
    rcpts: &[String],
    outcomes: Vec<Outcome>,
    message: &[u8],
    eight_bit: bool,
) -> u8 {
    let mut deferred = Vec::new();
    let mut first_rejection: Option<Exit> = None;
    for (r, o) in rcpts.iter().zip(outcomes) {
        match o {
            Outcome::Delivered => {
                if a.verbose > 0 {
                    eprintln!("sendmail: <{r}>: delivered");
                }
            }
            Outcome::Deferred(why) => {
                if a.verbose > 0 {
                    eprintln!("sendmail: <{r}>: deferred ({why})");
                }
                deferred.push(r.clone());
            }
            Outcome::Rejected(reply) => {
                eprintln!("sendmail: <{r}>: refused: {}", reply.one_line());
                let status = reply.enhanced().unwrap_or("5.0.0").to_string();
                let e = SinkError::permanent(&status, reply.one_line());
                first_rejection.get_or_insert(Exit::from_result(&Err(e)));
            }
        }
    }
    if !deferred.is_empty() {
        let env = PickupEnvelope {
            from: sender.to_string(),
            rcpts: deferred,
            body: match a.body {
                Some(BodyType::EightBitMime) => Some(Body::EightBitMime),
                Some(BodyType::SevenBit) => Some(Body::SevenBit),
                None => eight_bit.then_some(Body::EightBitMime),
            },
            // The file's owner says who submitted it.
            submitter: None,
        };
        match pickup::write(&s.pickup, &env, message) {
            Ok(path) => {
                if a.verbose > 0 {
                    eprintln!("sendmail: kept in {} for the daemon", path.display());
                }
            }
            Err(e) => {
                eprintln!(
                    "sendmail: the daemon did not take the message for {} and it cannot be kept in {}: {e}; \
                     it was NOT sent to them (exit 75: try again later)",
                    env.rcpts.join(", "),
                    s.pickup.display()
                );
                return sysexits::EX_TEMPFAIL;
            }
        }
    }
    first_rejection.map_or(sysexits::OK, |e| e.code)
}

/// A refusal before anything was sent: the line on stderr, its status.
fn refuse(status: &str, text: String) -> u8 {
    let exit = Exit::from_result(&Err(SinkError::permanent(status, text)));
    eprintln!("sendmail: {}", exit.line.as_deref().unwrap_or_default());
    exit.code
}

/// `<a@b>` → `a@b`; `root` → `root@DOMAIN`; `<>` / `""` → the null sender (empty).
fn qualify(address: &str, domain: &str) -> Result<String, &'static str> {
    let a = address.trim();
    let a = a
        .strip_prefix('<')
        .and_then(|x| x.strip_suffix('>'))
        .unwrap_or(a)
        .trim();
    if a.is_empty() {
        return Ok(String::new());
    }
    if a.contains(|c: char| c.is_control() || c.is_whitespace() || "<>".contains(c)) {
        return Err("not an address (spaces, control characters or angle brackets)");
    }
    if a.contains('@') {
        if a.ends_with('@') {
            return Err("no domain after the @");
        }
        return Ok(a.to_string());
    }
    Ok(format!("{a}@{domain}"))
}

enum Input {
    TooBig(usize),
    Io(std::io::Error),
}

/// Standard input to its end (see [`InputLines`]); past `max` bytes the rest is read and
/// dropped (the writer is not cut off with SIGPIPE) and the message refused.
fn read_stdin(dot_ends: bool, max: Option<u64>) -> Result<Vec<u8>, Input> {
    let stdin = std::io::stdin();
    let mut input = stdin.lock();
    let mut lines = InputLines::new(dot_ends);
    let mut line = Vec::new();
    let mut too_big = None;
    loop {
        line.clear();
        let n = input.read_until(b'\n', &mut line).map_err(Input::Io)?;
        if n == 0 {
            break;
        }
        if too_big.is_some() {
            continue;
        }
        if !lines.line(&line) {
            break;
        }
        if let Some(m) = max
            && lines.len() as u64 > m
        {
            too_big = Some(lines.len());
        }
    }
    match too_big {
        Some(n) => Err(Input::TooBig(n)),
        None => Ok(lines.finish()),
    }
}

/// Who runs us: the login name for the sender, the GECOS full name for From.
struct User {
    login: String,
    gecos: Option<String>,
}

fn invoking_user() -> User {
    // SAFETY: getuid cannot fail.
    let uid = unsafe { libc::getuid() };
    let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: pw, buf and result are valid for the call; buf's length is given.
    let rc = unsafe { libc::getpwuid_r(uid, &mut pw, buf.as_mut_ptr(), buf.len(), &mut result) };
    if rc != 0 || result.is_null() {
        return User {
            login: format!("uid{uid}"),
            gecos: None,
        };
    }
    // SAFETY: on success the fields point into buf as NUL-terminated strings (or are null).
    let text = |p: *const libc::c_char| {
        (!p.is_null()).then(|| {
            unsafe { std::ffi::CStr::from_ptr(p) }
                .to_string_lossy()
                .into_owned()
        })
    };
    User {
        login: text(pw.pw_name).unwrap_or_else(|| format!("uid{uid}")),
        // GECOS: "Full Name,room,phone,…"; the first field is the name.
        gecos: text(pw.pw_gecos)
            .and_then(|g| g.split(',').next().map(str::to_string))
            .filter(|g| !g.trim().is_empty()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_qualified() {
        assert_eq!(qualify("root", "ex.org").unwrap(), "root@ex.org");
        assert_eq!(qualify("<a@b>", "ex.org").unwrap(), "a@b");
        assert_eq!(qualify("<>", "ex.org").unwrap(), "");
        assert_eq!(qualify("", "ex.org").unwrap(), "");
        assert!(qualify("a b", "x").is_err());
        assert!(qualify("a@", "x").is_err());
        assert!(qualify("a\r\nRCPT", "x").is_err());
    }
}
