//! `mh`: one numbered file per message in an MH folder (nmh, mutt, Python's `mailbox.MH`).
//!
//! A delivery first writes the message to a hidden temporary file in the folder
//! (`.mailchute-ID.tmp`; MH ignores names that are not numbers) and waits for a
//! group-commit round, so the data is durable before any message number points at it.
//! Then, holding an fcntl write lock on `.mh_sequences` (as nmh does by default), it picks
//! the next number (highest numeric name + 1), hard-links the file under that number (a
//! link fails instead of overwriting, like `O_EXCL`), adds the number to the `unseen`
//! sequence (other sequences kept; written to a temporary file and renamed over), and
//! unlocks. A second round makes the new name and the sequences durable before success is
//! reported. The lock is never held across a sync or the data copy.
//!
//! Because `.mh_sequences` is replaced by rename, a waiter may end up locking the old,
//! replaced file; after locking we check that the locked file is still the one at the path
//! and start over if not. (An nmh process rewrites the file in place, so the two co-operate
//! on the lock; at worst one of them loses a sequence update, never a message.)
//!
//! The temporary file's name derives from the delivery id, so a retry finds what an earlier
//! attempt left: a file with a second link was numbered before a crash cut the attempt short
//! (the retry finishes that attempt instead of storing a second copy); a file without one was
//! never numbered and is replaced — never rewritten in place, since its inode might be a
//! numbered message. A retry after the temporary name was removed (only the success reply
//! was lost) cannot be recognised and stores a second copy.
//!
//! With `envelope_headers` (the default) each recipient gets a message of its own that
//! begins with `Return-Path:` and its own `Delivered-To:` ([`super::envelope_headers`]);
//! the first recipient of a folder keeps the temporary name above, a further one uses
//! `.mailchute-ID.Rk.tmp` (k = 1, 2, ...), so each is recognised on its own. Without them,
//! recipients whose path expands to the same folder share one message.

pub mod config;

use super::envelope_headers::WithEnvelope;
use super::local;
use super::local::LineEndings;
use super::template::PathTemplate;
use super::{
    BoxFuture, Delivered, Delivery, InvalidKey, RcptResults, Sink, SinkContext, SinkError,
};
use crate::spool::commit::Committer;
use config::MhConfig;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The sequence nmh's `inc` and Python's `mailbox.MH` use for new mail.
const UNSEEN: &str = "unseen";

pub struct MhSink {
    path: PathTemplate,
    line_endings: LineEndings,
    create: bool,
    /// Prepend the envelope, one message per recipient.
    envelope_headers: bool,
    committer: Arc<Committer>,
}

impl MhSink {
    pub fn new(c: &MhConfig, ctx: &SinkContext) -> Result<Self, InvalidKey> {
        Ok(MhSink {
            path: PathTemplate::new(&c.path, &ctx.base_dir)
                .map_err(|m| InvalidKey::at("path", m))?,
            line_endings: c.line_endings,
            create: c.create,
            envelope_headers: c.envelope_headers,
            committer: ctx.committer.clone(),
        })
    }
}

fn io_err(what: &str, path: &Path, e: &io::Error) -> SinkError {
    SinkError::from_io(format!("{what} {}", path.display()), e)
}

/// The hidden temporary name of delivery `id` in `folder`; `copy` k > 0 is the k-th
/// further recipient's own message (`.` never occurs in the id part, so no clash).
fn tmp_name(folder: &Path, id: &str, copy: usize) -> PathBuf {
    let safe_id: String = id
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    match copy {
        0 => folder.join(format!(".mailchute-{safe_id}.tmp")),
        k => folder.join(format!(".mailchute-{safe_id}.R{k}.tmp")),
    }
}

/// One message to store in a folder: which of the delivery's copies it is (0 when the
/// recipients share it), and the envelope (sender, recipient) it begins with, if any.
#[derive(Clone)]
struct Copy {
    index: usize,
    envelope: Option<(String, String)>,
}

/// What the temporary file of a delivery is when the numbering step begins.
enum Prepared {
    /// Written by this attempt.
    Written(PathBuf),
    /// Left by an earlier attempt that numbered it (inode `ino`) and then died.
    Numbered(PathBuf, u64),
}

/// Creates the folder if allowed, then writes the message to a hidden temporary file in it
/// — unless an earlier attempt already numbered that file.
fn prepare(
    folder: &Path,
    create: bool,
    id: &str,
    message: &Path,
    endings: LineEndings,
    copy: &Copy,
) -> Result<Prepared, SinkError> {
    if !folder.is_dir() {
        if !create {
            return Err(SinkError::temporary(
                "4.2.0",
                format!(
                    "MH folder {} does not exist and create = false",
                    folder.display()
                ),
            ));
        }
        local::create_dir_all_durable(folder).map_err(|e| io_err("create", folder, &e))?;
    }
    let tmp = tmp_name(folder, id, copy.index);
    match fs::symlink_metadata(&tmp) {
        Ok(m) if m.is_file() && m.nlink() > 1 => return Ok(Prepared::Numbered(tmp, m.ino())),
        // Torn or never numbered: start afresh (never truncate: see the module comment).
        Ok(_) => fs::remove_file(&tmp).map_err(|e| io_err("remove", &tmp, &e))?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err("stat", &tmp, &e)),
    }
    let write = || -> Result<(), SinkError> {
        let src = File::open(message).map_err(|e| io_err("open", message, &e))?;
        let mut dst = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| io_err("create", &tmp, &e))?;
        let copied = match &copy.envelope {
            Some((from, rcpt)) => {
                local::copy_converted(&mut WithEnvelope::new(src, from, rcpt), &mut dst, endings)
            }
            None => local::copy_converted(&mut { src }, &mut dst, endings),
        };
        copied.map(|_| ()).map_err(|e| io_err("write", &tmp, &e))
    };
    write().inspect_err(|_| {
        let _ = fs::remove_file(&tmp);
    })?;
    Ok(Prepared::Written(tmp))
}

/// Opens and locks `.mh_sequences`, making sure the locked file is the one at the path.
fn lock_sequences(folder: &Path, wait: Duration) -> Result<(File, PathBuf), SinkError> {
    let path = folder.join(".mh_sequences");
    let deadline = Instant::now() + wait;
    loop {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(|e| io_err("open", &path, &e))?;
        let left = deadline.saturating_duration_since(Instant::now());
        local::lock_exclusive(&file, &path, left)?;
        let locked = file.metadata().map_err(|e| io_err("stat", &path, &e))?;
        match fs::metadata(&path) {
            Ok(m) if m.ino() == locked.ino() && m.dev() == locked.dev() => return Ok((file, path)),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("stat", &path, &e)),
        }
        if Instant::now() >= deadline {
            return Err(SinkError::temporary(
                "4.2.0",
                format!(
                    "{} keeps being replaced; gave up locking it",
                    path.display()
                ),
            ));
        }
    }
}

/// The highest message number in the folder (0 when empty).
fn highest_number(folder: &Path) -> Result<u64, SinkError> {
    let mut max = 0;
    for entry in fs::read_dir(folder).map_err(|e| io_err("read", folder, &e))? {
        let entry = entry.map_err(|e| io_err("read", folder, &e))?;
        let name = entry.file_name();
        let bytes = name.as_encoded_bytes();
        if bytes.is_empty() || !bytes.iter().all(u8::is_ascii_digit) {
            continue;
        }
        if let Some(n) = std::str::from_utf8(bytes).ok().and_then(|s| s.parse().ok()) {
            max = max.max(n);
        }
    }
    Ok(max)
}

/// The message number whose file is inode `ino`, if any.
fn number_of_inode(folder: &Path, ino: u64) -> Result<Option<u64>, SinkError> {
    for entry in fs::read_dir(folder).map_err(|e| io_err("read", folder, &e))? {
        let entry = entry.map_err(|e| io_err("read", folder, &e))?;
        let Some(n) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u64>().ok())
        else {
            continue;
        };
        if entry.metadata().is_ok_and(|m| m.ino() == ino) {
            return Ok(Some(n));
        }
    }
    Ok(None)
}

/// `.mh_sequences` with `n` added to `seq`; other lines are kept byte for byte.
fn add_to_sequence(content: &str, seq: &str, n: u64) -> String {
    let mut out = String::with_capacity(content.len() + 16);
    let mut found = false;
    for line in content.lines() {
        let parsed = line
            .split_once(':')
            .filter(|(name, _)| name.trim() == seq)
            .and_then(|(_, list)| parse_ranges(list));
        match parsed {
            Some(mut ranges) if !found => {
                found = true;
                ranges.push((n, n));
                out.push_str(&format!("{seq}: {}\n", format_ranges(ranges)));
            }
            _ => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    if !found {
        out.push_str(&format!("{seq}: {n}\n"));
    }
    out
}

fn parse_ranges(list: &str) -> Option<Vec<(u64, u64)>> {
    list.split_whitespace()
        .map(|item| match item.split_once('-') {
            Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
            None => item.parse().ok().map(|n| (n, n)),
        })
        .collect()
}

fn format_ranges(mut ranges: Vec<(u64, u64)>) -> String {
    ranges.sort();
    let mut merged: Vec<(u64, u64)> = Vec::with_capacity(ranges.len());
    for (lo, hi) in ranges {
        match merged.last_mut() {
            Some(last) if lo <= last.1.saturating_add(1) => last.1 = last.1.max(hi),
            _ => merged.push((lo, hi)),
        }
    }
    merged
        .iter()
        .map(|&(lo, hi)| {
            if lo == hi {
                lo.to_string()
            } else {
                format!("{lo}-{hi}")
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn update_sequences(seq_file: &mut File, seq_path: &Path, n: u64) -> io::Result<()> {
    let mut content = String::new();
    seq_file.read_to_string(&mut content)?;
    let updated = add_to_sequence(&content, UNSEEN, n);
    let tmp = seq_path.with_file_name(".mh_sequences.mailchute-tmp");
    let write = || -> io::Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(updated.as_bytes())?;
        fs::rename(&tmp, seq_path)
    };
    write().inspect_err(|_| {
        let _ = fs::remove_file(&tmp);
    })
}

/// Under the lock: give the temporary file the next free number and mark it unseen.
/// Returns the message path and, if only the sequence update failed, why.
fn number_message(
    folder: &Path,
    tmp: &Path,
    wait: Duration,
) -> Result<(PathBuf, Option<String>), SinkError> {
    let (mut seq_file, seq_path) = lock_sequences(folder, wait)?;
    let mut n = highest_number(folder)? + 1;
    let target = loop {
        let target = folder.join(n.to_string());
        match fs::hard_link(tmp, &target) {
            Ok(()) => break target,
            // Someone not using our lock took it meanwhile.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => n += 1,
            Err(e) => {
                return Err(SinkError::from_io(
                    format!("link {} to {}", tmp.display(), target.display()),
                    &e,
                ));
            }
        }
    };
    let _ = fs::remove_file(tmp);
    let seq_problem = mark_unseen(&mut seq_file, &seq_path, n);
    Ok((target, seq_problem))
    // The lock goes with `seq_file`.
}

/// Under the lock: finish an earlier attempt that numbered `tmp` (inode `ino`) and died
/// before it removed the temporary name or marked the message unseen. The message was
/// delivered even if no number in the folder refers to it any more (refiled, or deleted
/// by its reader): the other link proves it. Returns its number, if it still has one.
fn finish_numbered(
    folder: &Path,
    tmp: &Path,
    ino: u64,
    wait: Duration,
) -> Result<(Option<PathBuf>, Option<String>), SinkError> {
    let (mut seq_file, seq_path) = lock_sequences(folder, wait)?;
    let n = number_of_inode(folder, ino)?;
    fs::remove_file(tmp).map_err(|e| io_err("remove", tmp, &e))?;
    let seq_problem = n.and_then(|n| mark_unseen(&mut seq_file, &seq_path, n));
    Ok((n.map(|n| folder.join(n.to_string())), seq_problem))
}

/// Adds `n` to the unseen sequence; a failure is reported, not fatal: the message is there.
fn mark_unseen(seq_file: &mut File, seq_path: &Path, n: u64) -> Option<String> {
    update_sequences(seq_file, seq_path, n).err().map(|e| {
        format!(
            "message stored, but updating {} failed: {e}",
            seq_path.display()
        )
    })
}

impl MhSink {
    async fn deliver_one(
        &self,
        folder: PathBuf,
        d: &Delivery<'_>,
        copy: Copy,
    ) -> Result<Delivered, SinkError> {
        let (create, endings) = (self.create, self.line_endings);
        let (f, id, msg) = (folder.clone(), d.id.to_string(), d.message.to_path_buf());
        let what = format!("deliver to {}", folder.display());
        let prepared = move || prepare(&f, create, &id, &msg, endings, &copy);
        let tmp = match local::blocking(&what, prepared).await? {
            Prepared::Written(tmp) => tmp,
            Prepared::Numbered(tmp, ino) => {
                let (f, t) = (folder.clone(), tmp.clone());
                let finish = move || finish_numbered(&f, &t, ino, local::LOCK_WAIT);
                let (target, seq_problem) = local::blocking(&what, finish).await?;
                return self.numbered(&folder, target, seq_problem, true).await;
            }
        };
        let cleanup = |e: SinkError| {
            let _ = fs::remove_file(&tmp);
            e
        };
        // The data is durable before a message number ever refers to it.
        self.committer
            .sync(&[&tmp])
            .await
            .map_err(|e| cleanup(io_err("sync", &tmp, &e)))?;
        let (f, t) = (folder.clone(), tmp.clone());
        let (target, seq_problem) =
            local::blocking(&what, move || number_message(&f, &t, local::LOCK_WAIT))
                .await
                .map_err(cleanup)?;
        self.numbered(&folder, Some(target), seq_problem, false)
            .await
    }

    /// Makes the folder's entries durable (the new number, the renamed `.mh_sequences`)
    /// and reports the delivery.
    async fn numbered(
        &self,
        folder: &Path,
        target: Option<PathBuf>,
        seq_problem: Option<String>,
        by_earlier_attempt: bool,
    ) -> Result<Delivered, SinkError> {
        self.committer
            .sync(&[folder])
            .await
            .map_err(|e| io_err("sync", folder, &e))?;
        let mut detail = match &target {
            Some(t) => format!("stored as {}", t.display()),
            None => format!("stored in {}, since refiled or deleted", folder.display()),
        };
        if by_earlier_attempt {
            detail.push_str(" (by an earlier attempt)");
        }
        if let Some(p) = seq_problem {
            tracing::warn!(folder = %folder.display(), "{p}");
            detail.push_str(&format!(" ({p})"));
        }
        Ok(Delivered { detail })
    }
}

impl Sink for MhSink {
    fn accepts(&self, rcpt: &str) -> Result<(), SinkError> {
        self.path.expand(rcpt).map(drop)
    }

    fn deliver<'a>(&'a self, d: &'a Delivery<'a>) -> BoxFuture<'a, RcptResults> {
        Box::pin(async move {
            let mut groups = local::group_by_path(&self.path, d.rcpts);
            for (folder, members) in std::mem::take(&mut groups.groups) {
                if !self.envelope_headers {
                    let shared = Copy {
                        index: 0,
                        envelope: None,
                    };
                    let r = self.deliver_one(folder, d, shared).await;
                    groups.set(&members, &r);
                    continue;
                }
                for (k, &i) in members.iter().enumerate() {
                    let own = Copy {
                        index: k,
                        envelope: Some((d.envelope.mail_from.clone(), d.rcpts[i].clone())),
                    };
                    let r = self.deliver_one(folder.clone(), d, own).await;
                    groups.set(&[i], &r);
                }
            }
            groups.finish()
        })
    }

    fn healthcheck(&self) -> BoxFuture<'_, Result<(), SinkError>> {
        Box::pin(async move {
            let (dir, create) = match self.path.fixed() {
                Some(f) => (f, self.create),
                None => (self.path.static_parent(), true),
            };
            local::blocking("mh health check", move || {
                local::check_dir_writable(&dir, create)
            })
            .await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::local::test_support::*;
    use super::*;

    const READ_BACK: &str = "import mailbox, sys\n\
        mh = mailbox.MH(sys.argv[1], factory=None, create=False)\n\
        key = int(sys.argv[2])\n\
        assert key in mh.keys(), mh.keys()\n\
        if sys.argv[3] == 'seq':\n\
        \x20   sys.stdout.write(repr(sorted(mh.get_sequences().items())))\n\
        else:\n\
        \x20   sys.stdout.buffer.write(mh.get_bytes(key))\n";

    fn sink(dir: &Path, endings: LineEndings) -> MhSink {
        MhSink::new(
            &MhConfig {
                path: "Mail/{local}/inbox".into(),
                line_endings: endings,
                create: true,
                envelope_headers: true,
            },
            &ctx(dir),
        )
        .unwrap()
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn numbers_messages_and_marks_them_unseen() {
        let dir = tempfile::tempdir().unwrap();
        let msg = dir.path().join("msg");
        std::fs::write(&msg, sample_message()).unwrap();
        let folder = dir.path().join("Mail/dave/inbox");
        std::fs::create_dir_all(&folder).unwrap();
        // An existing folder: message 7, a non-message file, and other sequences.
        std::fs::write(folder.join("7"), b"old\n").unwrap();
        std::fs::write(folder.join("notes"), b"x").unwrap();
        std::fs::write(folder.join(".mh_sequences"), b"flagged: 2 7\nunseen: 3-5\n").unwrap();
        let env = envelope("a@b", &["dave@example.org"]);
        let rcpts = env.rcpts.clone();
        for (i, endings) in [LineEndings::Lf, LineEndings::Crlf].into_iter().enumerate() {
            let d = Delivery {
                id: "ID",
                envelope: &env,
                rcpts: &rcpts,
                message: &msg,
                first_attempt: false,
            };
            let r = sink(dir.path(), endings).deliver(&d).await;
            assert!(r[0].is_ok(), "{r:?}");
            let n = 8 + i;
            let stored = std::fs::read(folder.join(n.to_string())).unwrap();
            let want = match endings {
                LineEndings::Lf => [
                    &b"Return-Path: <a@b>\nDelivered-To: dave@example.org\n"[..],
                    &crlf_to_lf(&sample_message()),
                ]
                .concat(),
                LineEndings::Crlf => [
                    &b"Return-Path: <a@b>\r\nDelivered-To: dave@example.org\r\n"[..],
                    &sample_message(),
                ]
                .concat(),
            };
            assert_eq!(stored, want);
            let f = folder.to_str().unwrap();
            assert_eq!(python(READ_BACK, &[f, &n.to_string(), "bytes"]), want);
        }
        assert_eq!(
            std::fs::read_to_string(folder.join(".mh_sequences")).unwrap(),
            "flagged: 2 7\nunseen: 3-5 8-9\n"
        );
        let seqs = python(READ_BACK, &[folder.to_str().unwrap(), "9", "seq"]);
        assert_eq!(
            String::from_utf8(seqs).unwrap(),
            // Python lists only numbers that exist as messages.
            "[('flagged', [7]), ('unseen', [8, 9])]"
        );
        let names: Vec<String> = std::fs::read_dir(&folder)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.contains("tmp"))
            .collect();
        assert!(names.is_empty(), "{names:?}");
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn new_folder_and_concurrent_deliveries() {
        let dir = tempfile::tempdir().unwrap();
        let msg = dir.path().join("msg");
        std::fs::write(&msg, b"Subject: x\r\n\r\nhi\r\n").unwrap();
        let s = Arc::new(sink(dir.path(), LineEndings::Lf));
        let mut tasks = Vec::new();
        for i in 0..8 {
            let (s, msg) = (s.clone(), msg.clone());
            tasks.push(tokio::spawn(async move {
                let env = envelope("", &["erin@x"]);
                let id = format!("ID{i}");
                let d = Delivery {
                    id: &id,
                    envelope: &env,
                    rcpts: &env.rcpts,
                    message: &msg,
                    first_attempt: false,
                };
                s.deliver(&d).await
            }));
        }
        for t in tasks {
            assert!(t.await.unwrap()[0].is_ok());
        }
        let folder = dir.path().join("Mail/erin/inbox");
        for n in 1..=8 {
            assert_eq!(
                std::fs::read(folder.join(n.to_string())).unwrap(),
                b"Return-Path: <>\nDelivered-To: erin@x\nSubject: x\n\nhi\n"
            );
        }
        assert_eq!(
            std::fs::read_to_string(folder.join(".mh_sequences")).unwrap(),
            "unseen: 1-8\n"
        );
        assert!(s.healthcheck().await.is_ok());
    }

    /// The states a crash can leave: a temporary file already numbered (a second link),
    /// and a torn one that never was. Neither becomes a second copy, and a numbered message
    /// is never rewritten in place.
    #[tokio::test(flavor = "multi_thread")]
    async fn retry_after_a_crash_finishes_or_replaces_the_earlier_attempt() {
        let dir = tempfile::tempdir().unwrap();
        let msg = dir.path().join("msg");
        std::fs::write(&msg, b"Subject: x\r\n\r\nhi\r\n").unwrap();
        let folder = dir.path().join("Mail/fred/inbox");
        std::fs::create_dir_all(&folder).unwrap();
        let env = envelope("", &["fred@x"]);
        let deliver = |id: &'static str| {
            let (s, env, msg) = (sink(dir.path(), LineEndings::Lf), env.clone(), msg.clone());
            async move {
                let d = Delivery {
                    id,
                    envelope: &env,
                    rcpts: &env.rcpts,
                    message: &msg,
                    first_attempt: false,
                };
                s.deliver(&d).await.remove(0)
            }
        };

        // Attempt A died after linking its file as 1, before unlinking the temporary name
        // and marking it unseen.
        std::fs::write(folder.join("1"), b"Subject: x\n\nhi\n").unwrap();
        std::fs::hard_link(folder.join("1"), tmp_name(&folder, "A", 0)).unwrap();
        let ino = std::fs::metadata(folder.join("1")).unwrap().ino();
        let r = deliver("A").await.unwrap();
        assert!(r.detail.contains("earlier attempt"), "{r:?}");
        assert!(!tmp_name(&folder, "A", 0).exists());
        assert!(!folder.join("2").exists(), "a second copy");
        assert_eq!(std::fs::metadata(folder.join("1")).unwrap().ino(), ino);
        assert_eq!(
            std::fs::read_to_string(folder.join(".mh_sequences")).unwrap(),
            "unseen: 1\n"
        );

        // Attempt B died while writing its temporary file: replaced, then numbered.
        std::fs::write(tmp_name(&folder, "B", 0), b"Subj").unwrap();
        let r = deliver("B").await.unwrap();
        assert!(!r.detail.contains("earlier attempt"), "{r:?}");
        assert_eq!(
            std::fs::read(folder.join("2")).unwrap(),
            b"Return-Path: <>\nDelivered-To: fred@x\nSubject: x\n\nhi\n"
        );
        assert_eq!(
            std::fs::read(folder.join("1")).unwrap(),
            b"Subject: x\n\nhi\n"
        );

        // Attempt C numbered its file, which was then refiled away: still delivered.
        std::fs::write(folder.join("3"), b"Subject: x\n\nhi\n").unwrap();
        std::fs::hard_link(folder.join("3"), tmp_name(&folder, "C", 0)).unwrap();
        std::fs::rename(folder.join("3"), dir.path().join("refiled")).unwrap();
        let r = deliver("C").await.unwrap();
        assert!(r.detail.contains("refiled or deleted"), "{r:?}");
        assert!(!folder.join("3").exists() && !tmp_name(&folder, "C", 0).exists());
    }

    /// Two recipients in one folder: a message each, saying whom it is for; the second
    /// one's earlier, numbered attempt is finished, not stored again.
    #[tokio::test(flavor = "multi_thread")]
    async fn one_message_per_recipient() {
        let dir = tempfile::tempdir().unwrap();
        let msg = dir.path().join("msg");
        std::fs::write(&msg, b"Return-Path: <forged@x>\r\nSubject: x\r\n\r\nhi\r\n").unwrap();
        let mut c = MhConfig {
            path: "Mail/inbox".into(),
            line_endings: LineEndings::Lf,
            create: true,
            envelope_headers: true,
        };
        let folder = dir.path().join("Mail/inbox");
        std::fs::create_dir_all(&folder).unwrap();
        // An earlier attempt numbered b@x's message as 1 and died.
        let b_copy = b"Return-Path: <s@x>\nDelivered-To: b@x\nSubject: x\n\nhi\n";
        std::fs::write(folder.join("1"), b_copy).unwrap();
        std::fs::hard_link(folder.join("1"), tmp_name(&folder, "U.1", 1)).unwrap();
        let env = envelope("s@x", &["a@x", "b@x"]);
        let d = Delivery {
            id: "U.1",
            envelope: &env,
            rcpts: &env.rcpts,
            message: &msg,
            first_attempt: false,
        };
        let r = MhSink::new(&c, &ctx(dir.path())).unwrap().deliver(&d).await;
        assert!(
            r[1].as_ref().unwrap().detail.contains("earlier attempt"),
            "{r:?}"
        );
        let f = folder.to_str().unwrap();
        assert_eq!(
            python(READ_BACK, &[f, "2", "bytes"]),
            b"Return-Path: <s@x>\nDelivered-To: a@x\nSubject: x\n\nhi\n"
        );
        assert_eq!(python(READ_BACK, &[f, "1", "bytes"]), b_copy);
        assert!(!folder.join("3").exists());

        // Without envelope headers: one message for both, as it came.
        c.envelope_headers = false;
        let d = Delivery { id: "U.2", ..d };
        let r = MhSink::new(&c, &ctx(dir.path())).unwrap().deliver(&d).await;
        assert!(r.iter().all(|r| r.is_ok()), "{r:?}");
        assert_eq!(
            python(READ_BACK, &[f, "3", "bytes"]),
            b"Return-Path: <forged@x>\nSubject: x\n\nhi\n"
        );
        assert!(!folder.join("4").exists());
    }

    #[test]
    fn sequence_editing() {
        assert_eq!(add_to_sequence("", "unseen", 1), "unseen: 1\n");
        assert_eq!(
            add_to_sequence("cur: 4\nunseen: 1 2-3\n", "unseen", 4),
            "cur: 4\nunseen: 1-4\n"
        );
        assert_eq!(
            add_to_sequence("unseen: 1 5\n", "unseen", 3),
            "unseen: 1 3 5\n"
        );
        // An unparseable line is kept and a fresh one added.
        assert_eq!(
            add_to_sequence("unseen: x\n", "unseen", 2),
            "unseen: x\nunseen: 2\n"
        );
    }
}
