//! `mbox`: appends to an mbox file in the mboxrd format.
//!
//! Each message is written as a `From SENDER DATE` line, the message with LF line endings
//! and every line matching `^>*From ` given one more `>` (mboxrd, reversible), and a blank
//! line. The file is locked with an fcntl write lock (see [`local::lock_exclusive`]; no
//! dot-lock file), waited for at most 30 s before the delivery is deferred. The data is
//! fsynced before success is reported; if anything fails half-way, the file is truncated
//! back to its length before the append so no partial message stays behind.
//!
//! A crash cannot truncate, so each append is first recorded in the mbox's append journal
//! ([`journal`], `.NAME.mailchute-append` beside it; mailchute
//! needs write access to the mbox's directory): the next append cuts a torn one away, and
//! a retry of an append that completed (the crash came before the spool heard of it) is
//! recognised instead of written twice.
//!
//! With `envelope_headers` (the default) the `From ` line is followed by `Return-Path:` and
//! `Delivered-To:` ([`super::envelope_headers`]), and each recipient whose path is this
//! mbox gets a message of its own, all appended under one lock, each journaled and made
//! durable before the next: a retry sees from the journal's last record how far the
//! earlier attempt got. Without them, those recipients share one message.

pub mod config;
mod journal;

use super::envelope_headers::WithEnvelope;
use super::local::{self, CrlfToLf, MboxQuoter};
use super::template::PathTemplate;
use super::{
    BoxFuture, Delivered, Delivery, InvalidKey, RcptResults, Sink, SinkContext, SinkError,
};
use config::MboxConfig;
use journal::{Journal, Leftover, Record};
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub struct MboxSink {
    path: PathTemplate,
    create: bool,
    /// Prepend the envelope, one message per recipient.
    envelope_headers: bool,
    /// How long to wait for another program's lock on the mbox.
    lock_wait: Duration,
}

impl MboxSink {
    pub fn new(c: &MboxConfig, ctx: &SinkContext) -> Result<Self, InvalidKey> {
        Ok(MboxSink {
            path: PathTemplate::new(&c.path, &ctx.base_dir)
                .map_err(|m| InvalidKey::at("path", m))?,
            create: c.create,
            envelope_headers: c.envelope_headers,
            lock_wait: local::LOCK_WAIT,
        })
    }
}

/// The envelope sender as it may appear in a `From ` line: no spaces (a reader splits the
/// line on them), `MAILER-DAEMON` for the null sender.
fn from_line_sender(mail_from: &str) -> String {
    if mail_from.is_empty() {
        return "MAILER-DAEMON".into();
    }
    mail_from
        .chars()
        .map(|c| {
            if c.is_whitespace() || c.is_control() {
                '_'
            } else {
                c
            }
        })
        .collect()
}

/// `From sender Www Mmm dd hh:mm:ss yyyy\n` (asctime, local time, as mail(1) writes it).
fn from_line(mail_from: &str) -> String {
    let now = jiff::Zoned::now();
    format!(
        "From {} {}\n",
        from_line_sender(mail_from),
        now.strftime("%a %b %e %H:%M:%S %Y")
    )
}

/// Opens the mbox for appending, creating it (and its directory) when allowed. Returns the
/// file and whether it was created (its directory entry then needs an fsync).
fn open_mbox(path: &Path, create: bool) -> Result<(File, bool), SinkError> {
    let mut opts = OpenOptions::new();
    opts.read(true).append(true).mode(0o600);
    match opts.open(path) {
        Ok(f) => return Ok((f, false)),
        Err(e) if e.kind() == io::ErrorKind::NotFound && create => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(SinkError::temporary(
                "4.2.0",
                format!("mbox {} does not exist and create = false", path.display()),
            ));
        }
        Err(e) => return Err(SinkError::from_io(format!("open {}", path.display()), &e)),
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        local::create_dir_all_durable(dir)
            .map_err(|e| SinkError::from_io(format!("create {}", dir.display()), &e))?;
    }
    let f = opts
        .create(true)
        .open(path)
        .map_err(|e| SinkError::from_io(format!("create {}", path.display()), &e))?;
    Ok((f, true))
}

/// What must precede a new message so the previous one ends with a blank line.
fn separator_needed(file: &File, len: u64) -> io::Result<&'static [u8]> {
    if len == 0 {
        return Ok(b"");
    }
    let mut tail = [0u8; 2];
    let n = len.min(2) as usize;
    file.read_exact_at(&mut tail[..n], len - n as u64)?;
    Ok(match &tail[..n] {
        [b'\n', b'\n'] => b"",
        [.., b'\n'] => b"\n",
        _ => b"\n\n",
    })
}

/// Counts what [`write_message`] would write, so the journal can record where it ends.
#[derive(Default)]
struct ByteCounter(u64);

impl Write for ByteCounter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0 += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// One message to append: the journal's id for it (the delivery id for the first copy,
/// so it is recognised as before) and the envelope it begins with, if any.
struct MboxCopy {
    id: String,
    envelope: Option<(String, String)>,
}

/// The bytes of `copy` before line-end conversion and quoting.
fn open_copy(message: &Path, copy: &MboxCopy) -> io::Result<Box<dyn Read>> {
    let src = File::open(message)?;
    Ok(match &copy.envelope {
        Some((from, rcpt)) => Box::new(WithEnvelope::new(src, from, rcpt)),
        None => Box::new(src),
    })
}

fn write_message(
    file: &mut impl Write,
    from: &str,
    src: &mut dyn Read,
    sep: &[u8],
) -> io::Result<u64> {
    let mut crlf = CrlfToLf::default();
    let mut quote = MboxQuoter::default();
    let mut buf = vec![0u8; local::CHUNK];
    let (mut lf, mut out) = (Vec::with_capacity(local::CHUNK), Vec::new());
    out.extend_from_slice(sep);
    out.extend_from_slice(from.as_bytes());
    file.write_all(&out)?;
    let mut written = out.len() as u64;
    out.clear();
    loop {
        let n = match src.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        lf.clear();
        crlf.push(&buf[..n], &mut lf);
        quote.push(&lf, &mut out);
        file.write_all(&out)?;
        written += out.len() as u64;
        out.clear();
    }
    lf.clear();
    crlf.finish(&mut lf);
    quote.push(&lf, &mut out);
    quote.finish(&mut out);
    out.extend_from_slice(quote.terminator());
    file.write_all(&out)?;
    written += out.len() as u64;
    Ok(written)
}

/// Appends `copies` in order, under one lock; returns a result per copy. A copy that fails
/// is cut away again and the ones after it are not tried; the ones before stay (each is
/// durable before the next begins).
fn append(
    path: &Path,
    create: bool,
    lock_wait: Duration,
    copies: &[MboxCopy],
    from: &str,
    message: &Path,
) -> Vec<Result<Appended, SinkError>> {
    let mut results = Vec::with_capacity(copies.len());
    if let Err(e) = append_copies(path, create, lock_wait, copies, from, message, &mut results) {
        results.resize(copies.len(), Err(e));
    }
    results
}

fn append_copies(
    path: &Path,
    create: bool,
    lock_wait: Duration,
    copies: &[MboxCopy],
    from: &str,
    message: &Path,
    results: &mut Vec<Result<Appended, SinkError>>,
) -> Result<(), SinkError> {
    let (mut file, created) = open_mbox(path, create)?;
    local::lock_exclusive(&file, path, lock_wait)?;
    let io_err =
        |what: &str, e: &io::Error| SinkError::from_io(format!("{what} {}", path.display()), e);
    let meta = file.metadata().map_err(|e| io_err("stat", &e))?;
    let ino = meta.ino();
    let journal = Journal::for_mbox(path);
    let mut len = meta.len();
    let ids: Vec<&str> = copies.iter().map(|c| c.id.as_str()).collect();
    let settled = settle_last_append(path, &file, &journal, ino, &mut len, &ids)
        .map_err(|e| io_err("recover the last append to", &e))?;
    // A new mbox's directory entry is made durable with the first message in it.
    let mut entry_durable = !created;
    for (k, copy) in copies.iter().enumerate() {
        if let Some(done) = settled.earlier(k) {
            results.push(Ok(done));
            continue;
        }
        let sep = separator_needed(&file, len).map_err(|e| io_err("read", &e))?;
        let total = open_copy(message, copy)
            .and_then(|mut src| write_message(&mut ByteCounter::default(), from, &mut *src, sep))
            .map_err(|e| io_err("read the message for", &e))?;
        let record = Record {
            ino,
            start: len,
            end: len + total,
            id: copy.id.clone(),
            head: [sep, from.as_bytes()].concat(),
        };
        journal.write(&record).map_err(|e| {
            SinkError::from_io(
                format!(
                    "write the append journal {} (mailchute needs write access to the mbox's directory)",
                    journal.path().display()
                ),
                &e,
            )
        })?;
        let result = open_copy(message, copy)
            .and_then(|mut src| write_message(&mut file, from, &mut *src, sep))
            .and_then(|n| file.sync_data().map(|()| n));
        match result {
            Ok(n) => {
                if !entry_durable {
                    local::fsync_parent(path).map_err(|e| io_err("fsync the directory of", &e))?;
                    entry_durable = true;
                }
                len += n;
                results.push(Ok(Appended::Now(n)));
            }
            Err(e) => {
                // Still holding the lock: nobody appended after us, so cutting back to
                // `len` removes exactly our partial message.
                let undo = file.set_len(len).and_then(|()| file.sync_data());
                let mut err = io_err("append to", &e);
                if let Err(u) = undo {
                    err.message
                        .push_str(&format!("; truncating back to {len} bytes failed too: {u}"));
                }
                return Err(err);
            }
        }
    }
    Ok(())
    // The lock goes with `file`.
}

/// What an append did.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Appended {
    /// Wrote this many bytes.
    Now(u64),
    /// An earlier attempt of this delivery had appended it (this many bytes, when the
    /// journal still says; made durable now).
    Earlier(Option<u64>),
}

/// What the journal says an earlier attempt of this delivery already appended.
#[derive(Debug, Default)]
struct Settled {
    /// Copies `0..first` are in the mbox.
    first: usize,
    /// The size of copy `first - 1`, which the journal's record describes.
    last_size: Option<u64>,
}

impl Settled {
    fn earlier(&self, k: usize) -> Option<Appended> {
        (k < self.first).then(|| {
            Appended::Earlier(if k + 1 == self.first {
                self.last_size
            } else {
                None
            })
        })
    }
}

/// Acts on the journal's last record before a new append, under the lock: cuts away an
/// append a crash left torn (updating `len`), or finds how many of this delivery's copies
/// (`ids`, appended in this order, each durable before the next) are already there.
fn settle_last_append(
    path: &Path,
    file: &File,
    journal: &Journal,
    ino: u64,
    len: &mut u64,
    ids: &[&str],
) -> io::Result<Settled> {
    let Some(last) = journal.read()? else {
        return Ok(Settled::default());
    };
    let ours = ids.iter().position(|id| *id == last.id);
    match last.leftover(file, ino, *len)? {
        Leftover::Partial => {
            tracing::warn!(
                mbox = %path.display(),
                id = %last.id,
                from = last.start,
                to = *len,
                "cutting away an append a crash left unfinished"
            );
            file.set_len(last.start)?;
            file.sync_data()?;
            *len = last.start;
            // The torn one was copy k: the attempt had appended the copies before it.
            Ok(Settled {
                first: ours.unwrap_or(0),
                last_size: None,
            })
        }
        Leftover::Complete => match ours {
            Some(k) => {
                file.sync_data()?;
                Ok(Settled {
                    first: k + 1,
                    last_size: Some(last.end - last.start),
                })
            }
            None => Ok(Settled::default()),
        },
        Leftover::Unrelated => Ok(Settled::default()),
    }
}

impl MboxSink {
    async fn deliver_all(&self, d: &Delivery<'_>) -> RcptResults {
        let mut groups = local::group_by_path(&self.path, d.rcpts);
        let from = from_line(&d.envelope.mail_from);
        for (path, members) in std::mem::take(&mut groups.groups) {
            // One message for the group, or one per recipient with its own envelope; the
            // first keeps the delivery id as its journal id.
            let copies: Vec<(MboxCopy, Vec<usize>)> = if self.envelope_headers {
                members
                    .iter()
                    .enumerate()
                    .map(|(k, &i)| {
                        let id = match k {
                            0 => d.id.to_owned(),
                            k => format!("{}.R{k}", d.id),
                        };
                        let env = (d.envelope.mail_from.clone(), d.rcpts[i].clone());
                        let copy = MboxCopy {
                            id,
                            envelope: Some(env),
                        };
                        (copy, vec![i])
                    })
                    .collect()
            } else {
                let copy = MboxCopy {
                    id: d.id.to_owned(),
                    envelope: None,
                };
                vec![(copy, members)]
            };
            let (create, wait, from) = (self.create, self.lock_wait, from.clone());
            let (p, msg): (PathBuf, PathBuf) = (path.clone(), d.message.to_path_buf());
            let (copies, members): (Vec<MboxCopy>, Vec<Vec<usize>>) = copies.into_iter().unzip();
            let what = format!("append to {}", path.display());
            let n = copies.len();
            let results = local::blocking(&what, move || {
                Ok(append(&p, create, wait, &copies, &from, &msg))
            })
            .await
            .unwrap_or_else(|e| vec![Err(e); n]);
            for (r, members) in results.into_iter().zip(members) {
                let r = r.map(|a| Delivered {
                    detail: match a {
                        Appended::Now(n) => format!("appended {n} bytes to {}", path.display()),
                        Appended::Earlier(Some(n)) => format!(
                            "already in {} ({n} bytes appended by an earlier attempt)",
                            path.display()
                        ),
                        Appended::Earlier(None) => format!(
                            "already in {} (appended by an earlier attempt)",
                            path.display()
                        ),
                    },
                });
                groups.set(&members, &r);
            }
        }
        groups.finish()
    }
}

impl Sink for MboxSink {
    fn accepts(&self, rcpt: &str) -> Result<(), SinkError> {
        self.path.expand(rcpt).map(drop)
    }

    fn deliver<'a>(&'a self, d: &'a Delivery<'a>) -> BoxFuture<'a, RcptResults> {
        Box::pin(self.deliver_all(d))
    }

    fn healthcheck(&self) -> BoxFuture<'_, Result<(), SinkError>> {
        Box::pin(async move {
            let (file, dir) = match self.path.fixed() {
                Some(f) => {
                    let dir = f.parent().map(Path::to_path_buf).unwrap_or_default();
                    (Some(f), dir)
                }
                None => (None, self.path.static_parent()),
            };
            let create = self.create;
            local::blocking("mbox health check", move || match file {
                Some(f) if f.exists() => {
                    if local::access_ok(&f, libc::W_OK | libc::R_OK) {
                        // The append journal lives beside the mbox.
                        local::check_dir_writable(&dir, false)
                    } else {
                        Err(SinkError::temporary(
                            "4.3.0",
                            format!("mbox {} is not readable and writable", f.display()),
                        ))
                    }
                }
                Some(f) if !create => Err(SinkError::temporary(
                    "4.3.0",
                    format!("mbox {} does not exist (create = false)", f.display()),
                )),
                _ => local::check_dir_writable(&dir, true),
            })
            .await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::local::test_support::*;
    use super::*;

    /// One message as it came (no envelope), as the journal tests want it.
    fn append1(
        path: &Path,
        create: bool,
        wait: Duration,
        id: &str,
        from: &str,
        message: &Path,
    ) -> Result<Appended, SinkError> {
        let copy = MboxCopy {
            id: id.into(),
            envelope: None,
        };
        append(path, create, wait, &[copy], from, message).remove(0)
    }

    const READ_BACK: &str = "import mailbox, sys\n\
        mb = mailbox.mbox(sys.argv[1], factory=None, create=False)\n\
        keys = sorted(mb.keys())\n\
        assert len(keys) == int(sys.argv[3]), keys\n\
        sys.stdout.buffer.write(mb.get_bytes(keys[int(sys.argv[2])]))\n";

    fn quote_ref(lf: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        for line in lf.split_inclusive(|&b| b == b'\n') {
            let gts = line.iter().take_while(|&&b| b == b'>').count();
            if line[gts..].starts_with(b"From ") {
                out.push(b'>');
            }
            out.extend_from_slice(line);
        }
        out
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn appends_two_quoted_messages() {
        let dir = tempfile::tempdir().unwrap();
        let (m1, m2) = (dir.path().join("m1"), dir.path().join("m2"));
        fs_write(&m1, &sample_message());
        // No final line ending, and a `From ` as the very first line.
        fs_write(&m2, b"From: x\r\n\r\nFrom here\r\nend");
        let ctx = ctx(dir.path());
        let sink = MboxSink::new(
            &MboxConfig {
                path: "mail/{local}".into(),
                create: true,
                envelope_headers: true,
            },
            &ctx,
        )
        .unwrap();
        let env = envelope("sender name@example.org", &["carol@example.org"]);
        let rcpts = env.rcpts.clone();
        for (id, m) in [("A", &m1), ("B", &m2)] {
            let d = Delivery {
                id,
                envelope: &env,
                rcpts: &rcpts,
                message: m,
                first_attempt: false,
            };
            let r = sink.deliver(&d).await;
            assert!(r[0].is_ok(), "{r:?}");
        }
        let path = dir.path().join("mail/carol");
        let stored = std::fs::read(&path).unwrap();
        // The envelope right after the `From ` line, then the message as before.
        let head = b"Return-Path: <sender name@example.org>\nDelivered-To: carol@example.org\n";
        let q1 = [&head[..], &quote_ref(&crlf_to_lf(&sample_message()))].concat();
        assert!(q1.windows(12).any(|w| w == b"\n>From the s"));
        assert!(q1.windows(15).any(|w| w == b"\n>>>From twice\n"));
        let first_line_end = stored.iter().position(|&b| b == b'\n').unwrap();
        let first = std::str::from_utf8(&stored[..first_line_end]).unwrap();
        assert!(
            first.starts_with("From sender_name@example.org "),
            "{first}"
        );
        assert_eq!(
            first.len(),
            "From sender_name@example.org ".len() + 24,
            "{first}"
        );
        let rest = &stored[first_line_end + 1..];
        assert!(rest.starts_with(&q1));
        let rest = &rest[q1.len()..];
        assert_eq!(rest[0], b'\n', "blank line after the first message");
        let rest = &rest[1..];
        assert!(rest.starts_with(b"From sender_name@example.org "));
        let second = &rest[rest.iter().position(|&b| b == b'\n').unwrap() + 1..];
        assert_eq!(
            second,
            [&head[..], b"From: x\n\n>From here\nend\n\n"].concat()
        );

        let p = path.to_str().unwrap();
        assert_eq!(python(READ_BACK, &[p, "0", "2"]), q1);
        assert_eq!(
            python(READ_BACK, &[p, "1", "2"]),
            [&head[..], b"From: x\n\n>From here\nend\n"].concat()
        );
    }

    fn fs_write(p: &Path, b: &[u8]) {
        std::fs::write(p, b).unwrap();
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn repairs_separator_and_times_out_on_lock() {
        let dir = tempfile::tempdir().unwrap();
        let msg = dir.path().join("m");
        fs_write(&msg, b"Subject: s\r\n\r\nhi\r\n");
        let mbox = dir.path().join("box");
        fs_write(&mbox, b"From x Thu Jan  1 00:00:00 1970\nold");
        let ctx = ctx(dir.path());
        let mut sink = MboxSink::new(
            &MboxConfig {
                path: "box".into(),
                create: false,
                envelope_headers: true,
            },
            &ctx,
        )
        .unwrap();
        assert!(sink.healthcheck().await.is_ok());
        let env = envelope("", &["x@y"]);
        let rcpts = env.rcpts.clone();
        let d = Delivery {
            id: "A",
            envelope: &env,
            rcpts: &rcpts,
            message: &msg,
            first_attempt: false,
        };
        assert!(sink.deliver(&d).await[0].is_ok());
        let stored = std::fs::read(&mbox).unwrap();
        let tail = &stored[b"From x Thu Jan  1 00:00:00 1970\nold\n\n".len()..];
        assert!(
            tail.starts_with(b"From MAILER-DAEMON "),
            "{:?}",
            String::from_utf8_lossy(&stored)
        );
        assert!(tail.ends_with(b"\nReturn-Path: <>\nDelivered-To: x@y\nSubject: s\n\nhi\n\n"));

        // Someone else holds the lock: bounded wait, then a temporary error, file intact.
        let holder = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&mbox)
            .unwrap();
        local::lock_exclusive(&holder, &mbox, Duration::from_secs(1)).unwrap();
        sink.lock_wait = Duration::from_millis(300);
        let r = sink.deliver(&d).await;
        let e = r[0].as_ref().unwrap_err();
        assert!(e.is_temporary() && e.message.contains("locked"), "{e:?}");
        assert_eq!(std::fs::read(&mbox).unwrap(), stored);
        drop(holder);

        let missing = MboxSink::new(
            &MboxConfig {
                path: "nope".into(),
                create: false,
                envelope_headers: true,
            },
            &ctx,
        )
        .unwrap();
        assert!(
            missing.deliver(&d).await[0]
                .as_ref()
                .unwrap_err()
                .is_temporary()
        );
        assert!(missing.healthcheck().await.is_err());
    }

    /// A crash in the middle of an append (simulated: the journal record is written, the
    /// append stops half-way) is cut away by the next append; a retry of an append that
    /// completed is recognised and writes nothing.
    #[test]
    fn torn_append_is_cut_away_and_a_completed_one_recognised() {
        let dir = tempfile::tempdir().unwrap();
        let mbox = dir.path().join("box");
        let old = b"From x Thu Jan  1 00:00:00 1970\nold\n\n".to_vec();
        fs_write(&mbox, &old);
        let msg = dir.path().join("m");
        fs_write(&msg, b"Subject: torn\r\n\r\nline one\r\nline two\r\n");
        let from = "From a@b Thu Jan  1 00:00:01 1970\n";
        let wait = Duration::from_secs(1);

        let done = append1(&mbox, false, wait, "A", from, &msg).unwrap();
        let whole = std::fs::read(&mbox).unwrap();
        let Appended::Now(n) = done else {
            panic!("{done:?}")
        };
        assert_eq!(n as usize, whole.len() - old.len());
        // The same delivery again (the spool never heard of the first): nothing appended.
        assert_eq!(
            append1(&mbox, false, wait, "A", from, &msg).unwrap(),
            Appended::Earlier(Some(n))
        );
        assert_eq!(std::fs::read(&mbox).unwrap(), whole);

        // Delivery B is torn after its first 10 bytes; C then comes along.
        let before_b = whole.len();
        append1(&mbox, false, wait, "B", from, &msg).unwrap();
        let f = OpenOptions::new().write(true).open(&mbox).unwrap();
        f.set_len(before_b as u64 + 10).unwrap();
        drop(f);
        append1(&mbox, false, wait, "C", from, &msg).unwrap();
        let after = std::fs::read(&mbox).unwrap();
        assert_eq!(&after[..before_b], &whole[..], "earlier messages untouched");
        assert_eq!(&after[before_b..], &whole[old.len()..], "only C after A");

        let p = mbox.to_str().unwrap();
        let body = b"Subject: torn\n\nline one\nline two\n";
        assert_eq!(python(READ_BACK, &[p, "1", "3"]), body);
        assert_eq!(python(READ_BACK, &[p, "2", "3"]), body);

        // Torn, then another program appended its own message: that one is never cut.
        let before_f = std::fs::read(&mbox).unwrap().len();
        append1(&mbox, false, wait, "F", from, &msg).unwrap();
        let f = OpenOptions::new().write(true).open(&mbox).unwrap();
        f.set_len(before_f as u64 + 40).unwrap();
        drop(f);
        let mut file = OpenOptions::new().append(true).open(&mbox).unwrap();
        file.write_all(b"\n\nFrom procmail@x Fri Jan  2 00:00:00 1970\nSubject: foreign\n\n")
            .unwrap();
        drop(file);
        append1(&mbox, false, wait, "G", from, &msg).unwrap();
        let now = std::fs::read(&mbox).unwrap();
        assert!(
            now.windows(16).any(|w| w == b"Subject: foreign"),
            "another program's message was cut away"
        );

        // A mailbox rewritten by someone else meanwhile is left alone.
        fs_write(&mbox, b"From y Fri Jan  2 00:00:00 1970\nnew\n\n");
        append1(&mbox, false, wait, "D", from, &msg).unwrap();
        let f = OpenOptions::new().write(true).open(&mbox).unwrap();
        f.set_len(20).unwrap();
        drop(f);
        fs_write(&mbox, b"From y Fri Jan  2 00:00:00 1970\nnewer\n");
        append1(&mbox, false, wait, "E", from, &msg).unwrap();
        assert!(
            std::fs::read(&mbox)
                .unwrap()
                .starts_with(b"From y Fri Jan  2 00:00:00 1970\nnewer\n\nFrom a@b ")
        );
    }

    /// Two recipients of one mbox: a message each, their own Delivered-To, the `From `
    /// line first; a retry after a crash during the second finishes it, keeps the first.
    #[tokio::test(flavor = "multi_thread")]
    async fn one_message_per_recipient_and_a_retry_resumes() {
        let dir = tempfile::tempdir().unwrap();
        let msg = dir.path().join("m");
        fs_write(&msg, b"Return-Path: <forged@x>\r\nSubject: s\r\n\r\nhi\r\n");
        let mbox = dir.path().join("box");
        let mut c = MboxConfig {
            path: "box".into(),
            create: true,
            envelope_headers: true,
        };
        let sink = MboxSink::new(&c, &ctx(dir.path())).unwrap();
        let env = envelope("s@x", &["a@x", "b@x"]);
        let d = Delivery {
            id: "U.0",
            envelope: &env,
            rcpts: &env.rcpts,
            message: &msg,
            first_attempt: true,
        };
        let r = sink.deliver(&d).await;
        assert!(r.iter().all(|r| r.is_ok()), "{r:?}");
        let whole = std::fs::read(&mbox).unwrap();
        let p = mbox.to_str().unwrap();
        for (k, rcpt) in [(0, "a@x"), (1, "b@x")] {
            assert_eq!(
                python(READ_BACK, &[p, &k.to_string(), "2"]),
                format!("Return-Path: <s@x>\nDelivered-To: {rcpt}\nSubject: s\n\nhi\n").as_bytes()
            );
        }
        assert!(whole.starts_with(b"From s@x "));

        // Torn inside b@x's message: the retry cuts it away and appends only that one.
        let second = whole.windows(6).rposition(|w| w == b"\nFrom ").unwrap() + 1;
        let f = OpenOptions::new().write(true).open(&mbox).unwrap();
        f.set_len(second as u64 + 30).unwrap();
        drop(f);
        let r = sink
            .deliver(&Delivery {
                first_attempt: false,
                ..d
            })
            .await;
        assert!(
            r[0].as_ref().unwrap().detail.contains("earlier attempt"),
            "{r:?}"
        );
        assert!(r[1].as_ref().unwrap().detail.contains("appended"), "{r:?}");
        let again = std::fs::read(&mbox).unwrap();
        assert_eq!(again.len(), whole.len());
        assert_eq!(&again[..second], &whole[..second]);
        // And once more: both recognised, nothing written.
        let r = sink
            .deliver(&Delivery {
                first_attempt: false,
                ..d
            })
            .await;
        assert!(
            r.iter()
                .all(|r| r.as_ref().unwrap().detail.contains("already in")),
            "{r:?}"
        );
        assert_eq!(std::fs::read(&mbox).unwrap(), again);

        // Off: one message for both, as it came after the `From ` line.
        c.envelope_headers = false;
        let sink = MboxSink::new(&c, &ctx(dir.path())).unwrap();
        let r = sink.deliver(&Delivery { id: "U.1", ..d }).await;
        assert!(r.iter().all(|r| r.is_ok()), "{r:?}");
        assert_eq!(
            python(READ_BACK, &[p, "2", "3"]),
            b"Return-Path: <forged@x>\nSubject: s\n\nhi\n"
        );
    }

    #[test]
    fn failed_write_is_truncated_away() {
        let dir = tempfile::tempdir().unwrap();
        let mbox = dir.path().join("box");
        fs_write(&mbox, b"From x Thu Jan  1 00:00:00 1970\nold\n\n");
        // The message cannot be read (a directory): the From line is already written
        // when reading fails, and must be cut away again.
        let r = append1(
            &mbox,
            false,
            Duration::from_secs(1),
            "A",
            "From x\n",
            dir.path(),
        );
        assert!(r.is_err());
        assert_eq!(
            std::fs::read(&mbox).unwrap(),
            b"From x Thu Jan  1 00:00:00 1970\nold\n\n"
        );
    }
}
