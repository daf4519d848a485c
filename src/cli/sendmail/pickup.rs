//! `{data_dir}/pickup/`: where `sendmail` leaves a message when the daemon cannot take it
//! (not running, its socket refused, a deferral), and where the daemon takes it from.
//!
//! The directory is mode 1733 (like Postfix's world-writable maildrop with the sticky bit):
//! any local user may create a file, none but its owner and the daemon may remove or rename
//! it, and no one but the daemon may list it. `sendmail` writes `.tmp.ID` (0600), fsyncs
//! it, makes it 0644 (the daemon's run user must read it; the unlistable directory keeps
//! the name from other users, so the name holds 128 random bits after the time-ordered
//! id: an id alone is the time and the pid, which another user can guess), renames it to
//! `ID.RANDOM` and fsyncs the directory: the daemon never sees a half-written file, and
//! exit 0 means the message is on disk. The file's owner is the submitter; the daemon puts
//! that uid in the `Received:` line.
//!
//! Any local user can put anything there, so the daemon opens each name once, without
//! following a symlink and without blocking on a FIFO, takes the owner from that
//! descriptor, reads no more than the size limit allows, and moves what is not a plain
//! pickup file (a symlink, a FIFO, junk) to `pickup/bad/`.
//!
//! The file: a first line `mailchute-pickup 1`, then `from ADDR` (once; empty for `<>`),
//! `rcpt ADDR` (one or more), optionally `body 8bitmime|7bit`, an empty line, and the
//! message (CRLF lines).
//!
//! The daemon ([`drain_loop`]) looks at the directory when it starts and every
//! [`INTERVAL`]: each file goes through the normal intake (the unix LMTP listener's
//! policy and size limit, routes, filters, the spool); a file whose recipients were all
//! taken or refused is removed; recipients deferred (a filter's or the spool's temporary
//! failure) stay for the next look, in a file the daemon writes anew as its own (the
//! submitter's is not its to write) with the submitter's uid inside (`uid N`, trusted only
//! in a file the daemon's user owns). Refused recipients are logged (a local
//! submitter gets no bounce from here). A file that is not a pickup file goes to
//! `pickup/bad/` with a log line.

use crate::envelope::{Body, ClientInfo, Envelope, new_id, now_unix};
use crate::intake::{BodyWriter, Durable, Intake, IntakeMode, Policy, received};
use crate::smtpd::Server;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// How often the daemon looks for new files.
pub const INTERVAL: Duration = Duration::from_secs(3);
/// A `.tmp.` file this old is a `sendmail` that died while writing: removed.
const STALE_TMP: Duration = Duration::from_secs(3600);
const MAGIC: &str = "mailchute-pickup 1";
const TMP_PREFIX: &str = ".tmp.";

/// What travels with a picked-up message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PickupEnvelope {
    /// Empty for the null sender.
    pub from: String,
    pub rcpts: Vec<String>,
    pub body: Option<Body>,
    /// Who submitted it, in a file the daemon rewrote (it owns that file then): trusted
    /// only in a file the daemon's own user owns, which no other user can make.
    pub submitter: Option<u32>,
}

/// The file's bytes.
pub fn encode(env: &PickupEnvelope, message: &[u8]) -> Vec<u8> {
    let mut out = format!("{MAGIC}\nfrom {}\n", env.from).into_bytes();
    for r in &env.rcpts {
        out.extend_from_slice(format!("rcpt {r}\n").as_bytes());
    }
    match env.body {
        Some(Body::EightBitMime) => out.extend_from_slice(b"body 8bitmime\n"),
        Some(Body::SevenBit) => out.extend_from_slice(b"body 7bit\n"),
        Some(Body::BinaryMime) | None => {}
    }
    if let Some(uid) = env.submitter {
        out.extend_from_slice(format!("uid {uid}\n").as_bytes());
    }
    out.push(b'\n');
    out.extend_from_slice(message);
    out
}

/// Reads a file's bytes: the envelope and the message, or what is wrong.
pub fn decode(bytes: &[u8]) -> Result<(PickupEnvelope, &[u8]), String> {
    let mut rest = bytes;
    let mut next_line = || -> Result<&str, String> {
        let end = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or("the envelope does not end")?;
        let line =
            std::str::from_utf8(&rest[..end]).map_err(|_| "an envelope line is not UTF-8")?;
        rest = &rest[end + 1..];
        Ok(line)
    };
    if next_line()? != MAGIC {
        return Err(format!("the first line is not {MAGIC:?}"));
    }
    let mut from = None;
    let mut rcpts = Vec::new();
    let mut body = None;
    let mut submitter = None;
    loop {
        let line = next_line()?;
        if line.is_empty() {
            break;
        }
        let (key, value) = line.split_once(' ').unwrap_or((line, ""));
        if value.contains(char::is_control) {
            return Err(format!("{key}: control characters"));
        }
        match key {
            "from" if from.is_none() => from = Some(value.to_string()),
            "rcpt" if !value.is_empty() => rcpts.push(value.to_string()),
            "body" => {
                body = Some(match value {
                    "8bitmime" => Body::EightBitMime,
                    "7bit" => Body::SevenBit,
                    _ => return Err(format!("body {value:?}: expected 8bitmime or 7bit")),
                })
            }
            "uid" if submitter.is_none() => {
                submitter = Some(
                    value
                        .parse::<u32>()
                        .map_err(|_| format!("uid {value:?}: expected a number"))?,
                )
            }
            _ => return Err(format!("unexpected envelope line {line:?}")),
        }
    }
    let from = from.ok_or("no from line")?;
    if rcpts.is_empty() {
        return Err("no rcpt line".into());
    }
    Ok((
        PickupEnvelope {
            from,
            rcpts,
            body,
            submitter,
        },
        rest,
    ))
}

/// Writes the message into `dir` durably (see the module docs); creates `dir` (1733) if it
/// is missing. Returns the file's path.
pub fn write(dir: &Path, env: &PickupEnvelope, message: &[u8]) -> std::io::Result<PathBuf> {
    if !dir.is_dir() {
        std::fs::create_dir_all(dir)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o1733))?;
    }
    let id = format!("{}.{}", new_id(), random_hex()?);
    let tmp = dir.join(format!("{TMP_PREFIX}{id}"));
    let done = dir.join(&id);
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(&encode(env, message))?;
        f.sync_all()?;
        f.set_permissions(std::fs::Permissions::from_mode(0o644))?;
        std::fs::rename(&tmp, &done)?;
        let synced = match std::fs::File::open(dir) {
            Ok(d) => d.sync_all(),
            // A submitter may write into the directory but not read it (1733), and a
            // directory cannot be opened for fsync without reading: fsync the file again
            // instead. On ext4 and XFS that commits the journal holding the rename too;
            // the daemon, which can read it, fsyncs the directory itself as it drains.
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => f.sync_all(),
            Err(e) => Err(e),
        };
        if synced.is_err() {
            let _ = std::fs::remove_file(&done);
        }
        synced
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(done)
}

/// 128 bits from the system's CSPRNG, as hex: what keeps a pickup file's name (and so
/// the message, 0644 for the daemon's run user) from other local users.
fn random_hex() -> std::io::Result<String> {
    let mut bytes = [0u8; 16];
    rustls::crypto::aws_lc_rs::default_provider()
        .secure_random
        .fill(&mut bytes)
        .map_err(|_| std::io::Error::other("no random bytes from the system"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// The daemon's side, at start: `{data_dir}/pickup` (1733) and `pickup/bad` (0700).
pub fn prepare_dir(data_dir: &Path, access: PickupAccess) -> Result<PathBuf, String> {
    let dir = data_dir.join("pickup");
    let bad = dir.join("bad");
    std::fs::create_dir_all(&bad).map_err(|e| format!("creating {}: {e}", bad.display()))?;
    let mode = if access.group.is_some() {
        0o1730
    } else {
        0o1733
    };
    for (d, mode) in [(&dir, mode), (&bad, 0o700)] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(mode))
            .map_err(|e| format!("chmod {}: {e}", d.display()))?;
    }
    if let Some(gid) = access.group {
        std::os::unix::fs::lchown(&dir, None, Some(gid))
            .map_err(|e| format!("chown {}: {e}", dir.display()))?;
    }
    Ok(dir)
}

/// Who may drop files into `pickup/`: anyone (1733), or, when the daemon's unix LMTP
/// socket admits only its group (no permission bits for others, a `socket_group`), only
/// that group (1730 with that group, as Postfix's maildrop and postdrop) — else pickup/
/// would be the way round the socket's mode.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PickupAccess {
    pub group: Option<u32>,
}

impl PickupAccess {
    pub fn of(config: &crate::config::Config) -> Result<PickupAccess, String> {
        let Some(l) = config.listeners.iter().find(|l| {
            l.address.starts_with("unix:") && l.protocol == crate::config::Protocol::Lmtp
        }) else {
            return Ok(PickupAccess::default());
        };
        let others = match &l.socket_mode {
            Some(m) => u32::from_str_radix(m.trim_start_matches("0o"), 8).map_or(7, |m| m & 0o007),
            None => 7,
        };
        match (&l.socket_group, others) {
            (Some(g), 0) => Ok(PickupAccess {
                group: Some(crate::privileges::group_id(g)?),
            }),
            _ => Ok(PickupAccess::default()),
        }
    }
}

/// Hands `data_dir` to the run user as `privileges::chown_tree` does, except the files in
/// `pickup/`: their owner is who submitted them, the fact the `Received:` line records.
pub fn chown_data_dir(
    data_dir: &Path,
    uid: u32,
    gid: u32,
    access: PickupAccess,
) -> Result<(), String> {
    let pickup = data_dir.join("pickup");
    std::os::unix::fs::lchown(data_dir, Some(uid), Some(gid))
        .map_err(|e| format!("chown {}: {e}", data_dir.display()))?;
    let entries =
        std::fs::read_dir(data_dir).map_err(|e| format!("reading {}: {e}", data_dir.display()))?;
    for entry in entries {
        let path = entry
            .map_err(|e| format!("reading {}: {e}", data_dir.display()))?
            .path();
        if path == pickup {
            // Its group, when it has one of its own, is who may submit.
            std::os::unix::fs::lchown(&pickup, Some(uid), Some(access.group.unwrap_or(gid)))
                .map_err(|e| format!("chown {}: {e}", pickup.display()))?;
            let bad = pickup.join("bad");
            if bad.exists() {
                crate::privileges::chown_tree(&bad, uid, gid)?;
            }
        } else {
            crate::privileges::chown_tree(&path, uid, gid)?;
        }
    }
    Ok(())
}

/// Looks at `dir` now and every [`INTERVAL`], for the daemon's lifetime. `listener` is
/// the unix LMTP listener whose policy and size limit apply (as if the message had come
/// through its socket); `None` = no listener's.
pub async fn drain_loop(server: Arc<Server>, dir: PathBuf, listener: Option<String>) {
    let mut shutdown = server.shutdown_signal();
    loop {
        drain_once(&server, &dir, listener.as_deref()).await;
        tokio::select! {
            _ = tokio::time::sleep(INTERVAL) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// One look: every finished file, oldest name first. Returns how many were taken.
pub async fn drain_once(server: &Server, dir: &Path, listener: Option<&str>) -> usize {
    let mut names = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .filter_map(|e| e.ok())
            // Not only plain files: a symlink or FIFO a user left goes to bad/ too.
            .filter(|e| e.file_type().is_ok_and(|t| !t.is_dir()))
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect::<Vec<_>>(),
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "pickup: cannot read the directory");
            return 0;
        }
    };
    names.sort();
    if names.iter().any(|n| !n.starts_with(TMP_PREFIX))
        && let Err(e) = std::fs::File::open(dir).and_then(|d| d.sync_all())
    {
        // See `write`: a submitter may not have been able to.
        tracing::warn!(dir = %dir.display(), error = %e, "pickup: cannot fsync the directory");
    }
    let mut taken = 0;
    for name in names {
        let path = dir.join(&name);
        if name.starts_with(TMP_PREFIX) {
            remove_if_stale(&path);
            continue;
        }
        if take(server, &path, listener).await {
            taken += 1;
        }
    }
    taken
}

fn remove_if_stale(path: &Path) {
    let old = std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|age| age > STALE_TMP);
    if old && std::fs::remove_file(path).is_ok() {
        tracing::warn!(file = %path.display(), "pickup: removed a file a sendmail left half-written");
    }
}

/// One file through intake. `true` when it is done with (taken, refused or moved aside).
async fn take(server: &Server, path: &Path, listener: Option<&str>) -> bool {
    let state = server.state();
    let settings = listener.and_then(|l| state.listeners.get(l)).cloned();
    let max = settings.as_ref().map_or(0, |s| s.max_message_size);
    let owned = path.to_path_buf();
    let read = tokio::task::spawn_blocking(move || read_file(&owned, max)).await;
    let (bytes, uid) = match read {
        Ok(Read::Whole { bytes, uid }) => (bytes, uid),
        Ok(Read::Later(e)) => {
            tracing::warn!(file = %path.display(), error = %e, "pickup: cannot read a file; trying again later");
            return false;
        }
        Ok(Read::TooBig { size, uid }) => {
            tracing::info!(event = "refused", listener = "pickup", uid, file = %path.display(), reply = %format!("552 5.3.4 message too big ({size} bytes; limit {max})"), "pickup: file refused (no bounce goes to a local submitter)");
            return remove(path);
        }
        Ok(Read::Bad(problem)) => {
            move_aside(path, &problem);
            return true;
        }
        Err(e) => {
            tracing::error!(file = %path.display(), error = %e, "pickup: reading a file failed; trying again later");
            return false;
        }
    };
    let (env, message) = match decode(&bytes) {
        Ok(d) => d,
        Err(problem) => {
            move_aside(path, &problem);
            return true;
        }
    };
    // SAFETY: geteuid cannot fail.
    let own = unsafe { libc::geteuid() };
    let uid = match env.submitter {
        Some(submitter) if uid == own => submitter,
        _ => uid,
    };
    let policy = Policy {
        sender_allow: settings.as_ref().and_then(|s| s.sender_allow.as_ref()),
        recipient_deny: settings.as_ref().and_then(|s| s.recipient_deny.as_ref()),
    };
    let id = new_id();
    let log_refused = |rcpt: &str, reply: String| {
        tracing::info!(event = "refused", listener = "pickup", id = %id, uid, from = %env.from, rcpt = %rcpt, reply = %reply, "pickup: recipient refused (no bounce goes to a local submitter)");
    };
    if max > 0 && message.len() as u64 > max {
        for r in &env.rcpts {
            log_refused(
                r,
                format!(
                    "552 5.3.4 message too big ({} bytes; limit {max})",
                    message.len()
                ),
            );
        }
        return remove(path);
    }
    if let Err(a) = policy.check_sender(&env.from) {
        for r in &env.rcpts {
            log_refused(r, format!("{} {} {}", a.code, a.status, a.text));
        }
        return remove(path);
    }
    let mut rcpts = Vec::new();
    let mut later = Vec::new();
    for r in &env.rcpts {
        match policy.check_rcpt(&state.pipeline, r) {
            Ok(()) => rcpts.push(r.clone()),
            Err(a) if a.code < 500 => later.push(r.clone()),
            Err(a) => log_refused(r, format!("{} {} {}", a.code, a.status, a.text)),
        }
    }
    if !rcpts.is_empty() {
        let client = ClientInfo {
            uid: Some(uid),
            helo: Some("pickup".into()),
            protocol: "local".into(),
            ..ClientInfo::default()
        };
        let trace = received::header(
            &client,
            &state.hostname,
            &id,
            &rcpts,
            &received::now_rfc2822(),
        );
        let mut envelope = Envelope {
            id: id.clone(),
            mail_from: env.from.clone(),
            rcpts: rcpts.clone(),
            client,
            listener: "pickup".into(),
            received_at: now_unix(),
            body: env.body.unwrap_or_default(),
            smtputf8: false,
            size: 0,
            sha256: String::new(),
        };
        let received = async {
            let file = server.spool.incoming(&id).map_err(|e| e.to_string())?;
            let mut w = BodyWriter::start(file, &trace)
                .await
                .map_err(|e| e.to_string())?;
            if let Err(e) = w.write(message).await {
                w.discard();
                return Err(e.to_string());
            }
            w.finish().await.map_err(|e| e.to_string())
        };
        let body = match received.await {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "pickup: cannot spool the message; trying again later");
                return false;
            }
        };
        envelope.size = body.message.size;
        envelope.sha256 = body.sha256;
        if env.body.is_none() && body.eight_bit {
            envelope.body = Body::EightBitMime;
        }
        let intake = Intake {
            pipeline: &state.pipeline,
            mode: IntakeMode::Queued(Durable {
                spool: &server.spool,
                queue: &server.queue,
                retry: &state.queue,
            }),
            lmtp: true,
            dsn: false,
        };
        let done = intake.complete(envelope, body.message).await;
        for (rcpt, answer) in rcpts.iter().zip(&done.answers) {
            match answer.code {
                200..=299 => {}
                400..=499 => later.push(rcpt.clone()),
                _ => log_refused(
                    rcpt,
                    format!("{} {} {}", answer.code, answer.status, answer.text),
                ),
            }
        }
        tracing::info!(event = "transaction", listener = "pickup", id = %id, uid, from = %env.from, rcpts = %rcpts.join(","), routes = %done.routes, outcome = %done.outcome, error = done.error.as_deref(), file = %path.display(), "pickup: message taken");
    }
    if later.is_empty() {
        return remove(path);
    }
    // Only those deferred stay, for the next look; the file keeps its owner.
    if later.len() != env.rcpts.len() {
        let rest = PickupEnvelope {
            rcpts: later,
            submitter: Some(uid),
            ..env.clone()
        };
        if let Err(e) = rewrite(path, &encode(&rest, message)) {
            tracing::error!(file = %path.display(), error = %e, "pickup: cannot rewrite the file with the deferred recipients; all of them will be tried again");
        }
    }
    false
}

/// Room for the envelope lines (`from`, `rcpt`…) above the message's size limit.
const ENVELOPE_ROOM: u64 = 1 << 20;

/// What one pickup name held.
enum Read {
    Whole {
        bytes: Vec<u8>,
        uid: u32,
    },
    /// Larger than the size limit allows: never read into memory.
    TooBig {
        size: u64,
        uid: u32,
    },
    /// Not a pickup file at all (a symlink, a FIFO, a socket): for bad/.
    Bad(String),
    Later(std::io::Error),
}

/// Opens `path` once: no symlink is followed (the daemon would read, and credit to the
/// link's owner, a file it points at), a FIFO does not block (the drain would hang on it
/// for good), and the owner is the open file's, so a name swapped after the listing
/// cannot lend the message another uid. A file larger than `max` (plus the envelope) is
/// not read: a sparse file of any size costs its owner nothing.
fn read_file(path: &Path, max: u64) -> Read {
    use std::io::Read as _;
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
    {
        Ok(f) => f,
        Err(e) => {
            return match e.raw_os_error() {
                Some(libc::ELOOP) => Read::Bad("a symlink (not followed)".into()),
                // A unix socket someone bound there.
                Some(libc::ENXIO) => Read::Bad("a socket".into()),
                _ => Read::Later(e),
            };
        }
    };
    let meta = match file.metadata() {
        Ok(m) => m,
        Err(e) => return Read::Later(e),
    };
    if !meta.file_type().is_file() {
        return Read::Bad("not a regular file (a FIFO or a device)".into());
    }
    let uid = meta.uid();
    let cap = (max > 0).then(|| max.saturating_add(ENVELOPE_ROOM));
    if let Some(cap) = cap
        && meta.len() > cap
    {
        return Read::TooBig {
            size: meta.len(),
            uid,
        };
    }
    let mut bytes = Vec::new();
    // The owner may still append to it: never more than the cap.
    let read = match cap {
        Some(cap) => file.take(cap + 1).read_to_end(&mut bytes),
        None => (&file).read_to_end(&mut bytes),
    };
    match read {
        Ok(n) if cap.is_some_and(|c| n as u64 > c) => Read::TooBig {
            size: n as u64,
            uid,
        },
        Ok(_) => Read::Whole { bytes, uid },
        Err(e) => Read::Later(e),
    }
}

/// Replaces the file, durably, by one of the daemon's own (the submitter's 0644 file is
/// not the run user's to write; the directory is, so a rename over it is): written as a
/// temporary name, fsynced, renamed over `path`, the directory fsynced. The submitter's uid
/// goes inside (`uid N`), trusted because the daemon owns the file.
fn rewrite(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(std::io::Error::other("a pickup file without a directory"));
    };
    let tmp = dir.join(format!("{TMP_PREFIX}rewrite.{}", name.to_string_lossy()));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

fn remove(path: &Path) -> bool {
    match std::fs::remove_file(path) {
        Ok(()) => true,
        Err(e) => {
            tracing::error!(file = %path.display(), error = %e, "pickup: cannot remove a file that was taken; it will be taken again");
            false
        }
    }
}

fn move_aside(path: &Path, problem: &str) {
    let Some(name) = path.file_name() else { return };
    let Some(bad) = path.parent().map(|d| d.join("bad")) else {
        return;
    };
    let to = bad.join(name);
    match std::fs::create_dir_all(&bad).and_then(|()| std::fs::rename(path, &to)) {
        Ok(()) => {
            tracing::warn!(file = %path.display(), moved_to = %to.display(), problem, "pickup: not a pickup file; moved aside")
        }
        Err(e) => {
            tracing::error!(file = %path.display(), problem, error = %e, "pickup: not a pickup file, and it cannot be moved aside")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_bad_files() {
        let env = PickupEnvelope {
            from: String::new(),
            rcpts: vec!["a@x".into(), "b@y".into()],
            body: Some(Body::EightBitMime),
            submitter: None,
        };
        let bytes = encode(&env, b"Subject: s\r\n\r\nbody\r\n");
        let (back, msg) = decode(&bytes).unwrap();
        assert_eq!(back, env);
        assert_eq!(msg, b"Subject: s\r\n\r\nbody\r\n");
        for bad in [
            &b""[..],
            b"mailchute-pickup 2\nfrom a\nrcpt b\n\n",
            b"mailchute-pickup 1\nrcpt b\n\n",
            b"mailchute-pickup 1\nfrom a\n\n",
            b"mailchute-pickup 1\nfrom a\nrcpt b\n",
            b"mailchute-pickup 1\nfrom a\nrcpt b\nx y\n\n",
            b"mailchute-pickup 1\nfrom a\nfrom c\nrcpt b\n\n",
            b"mailchute-pickup 1\nfrom a\xff\nrcpt b\n\n",
            b"mailchute-pickup 1\nfrom a\nrcpt b\nuid x\n\n",
        ] {
            assert!(decode(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn a_rewrite_is_the_daemon_s_own_file_with_the_submitter_inside() {
        let dir = tempfile::tempdir().unwrap();
        let pickup = dir.path().join("pickup");
        let env = PickupEnvelope {
            from: "u@h".into(),
            rcpts: vec!["a@h".into(), "b@h".into()],
            body: None,
            submitter: None,
        };
        let path = write(&pickup, &env, b"x\r\n").unwrap();
        // A file the daemon may not write into (the submitter's 0644, here 0444): the
        // rewrite replaces it instead.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o444)).unwrap();
        let rest = PickupEnvelope {
            rcpts: vec!["b@h".into()],
            submitter: Some(1000),
            ..env.clone()
        };
        rewrite(&path, &encode(&rest, b"x\r\n")).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let (back, msg) = decode(&bytes).unwrap();
        assert_eq!((back, msg), (rest, &b"x\r\n"[..]));
        let names: Vec<_> = std::fs::read_dir(&pickup).unwrap().collect();
        assert_eq!(names.len(), 1, "no temporary file left");
    }

    #[test]
    fn write_is_a_whole_file_under_its_final_name() {
        let dir = tempfile::tempdir().unwrap();
        let pickup = dir.path().join("pickup");
        let env = PickupEnvelope {
            from: "u@h".into(),
            rcpts: vec!["r@h".into()],
            body: None,
            submitter: None,
        };
        let path = write(&pickup, &env, b"x\r\n").unwrap();
        let mode = std::fs::metadata(&pickup).unwrap().permissions().mode();
        assert_eq!(mode & 0o7777, 0o1733);
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o644
        );
        let names: Vec<_> = std::fs::read_dir(&pickup)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1);
        assert_eq!(decode(&std::fs::read(&path).unwrap()).unwrap().0, env);
    }

    #[test]
    fn a_name_cannot_be_guessed_from_the_time_and_pid() {
        let dir = tempfile::tempdir().unwrap();
        let pickup = dir.path().join("pickup");
        let env = PickupEnvelope {
            from: "u@h".into(),
            rcpts: vec!["r@h".into()],
            body: None,
            submitter: None,
        };
        let a = write(&pickup, &env, b"x\r\n").unwrap();
        let b = write(&pickup, &env, b"x\r\n").unwrap();
        let random = |p: &Path| {
            let name = p.file_name().unwrap().to_str().unwrap().to_string();
            let (id, rest) = name.split_once('.').unwrap();
            assert_eq!(id.len(), 24, "{name}");
            assert!(
                rest.len() == 32 && rest.chars().all(|c| c.is_ascii_hexdigit()),
                "{name}"
            );
            rest.to_string()
        };
        assert_ne!(random(&a), random(&b));
    }

    #[test]
    fn what_a_local_user_can_plant_is_read_safely() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let me = unsafe { libc::geteuid() };
        let good = d.join("good");
        std::fs::write(&good, b"mailchute-pickup 1\nfrom a\nrcpt b\n\nx\r\n").unwrap();
        assert!(matches!(read_file(&good, 1000), Read::Whole { uid, .. } if uid == me));

        // A symlink: never followed (the owner of its target is not the submitter).
        let link = d.join("link");
        std::os::unix::fs::symlink(&good, &link).unwrap();
        assert!(matches!(read_file(&link, 0), Read::Bad(p) if p.contains("symlink")));

        // A FIFO nobody writes to: answered at once, not waited on for good.
        let fifo = d.join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
        assert!(matches!(read_file(&fifo, 0), Read::Bad(p) if p.contains("FIFO")));

        // A sparse file of 64 GiB costs nothing to make and is never read into memory.
        let huge = d.join("huge");
        std::fs::File::create(&huge)
            .unwrap()
            .set_len(64 << 30)
            .unwrap();
        assert!(matches!(
            read_file(&huge, 50 << 20),
            Read::TooBig { size, .. } if size == 64 << 30
        ));
    }
}
