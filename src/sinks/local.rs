//! What the local mailbox sinks (maildir, mh, mbox) and exec share: streaming line-ending
//! conversion, mbox `From ` quoting, grouping recipients by mailbox, file locks and health
//! checks of directories.

use super::template::PathTemplate;
use super::{Delivered, RcptResults, SinkError};
use crate::spool::commit::fsync_dir;
use serde::Deserialize;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Line endings a local mailbox file (or exec's stdin) gets. Unix mail tools (mutt, Dovecot,
/// Python's `mailbox`, Postfix's own local/virtual) expect LF; `crlf` keeps the bytes as sent.
#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LineEndings {
    #[default]
    Lf,
    Crlf,
}

/// Copy buffer size: large enough for few syscalls, small enough to never matter.
pub const CHUNK: usize = 64 * 1024;

/// Streaming CRLF → LF. A CR at the end of one chunk is held back until the next chunk
/// shows whether an LF follows; a lone CR (not before LF) and bare LFs pass unchanged.
#[derive(Debug, Default)]
pub struct CrlfToLf {
    pending_cr: bool,
}

impl CrlfToLf {
    pub fn push(&mut self, input: &[u8], out: &mut Vec<u8>) {
        let mut rest = input;
        if self.pending_cr {
            self.pending_cr = false;
            if rest.first() != Some(&b'\n') {
                out.push(b'\r');
            }
        }
        while let Some(i) = rest.iter().position(|&b| b == b'\r') {
            out.extend_from_slice(&rest[..i]);
            match rest.get(i + 1) {
                // CRLF: drop the CR; the LF is copied with the next run.
                Some(b'\n') => {}
                Some(_) => out.push(b'\r'),
                None => self.pending_cr = true,
            }
            rest = &rest[i + 1..];
        }
        out.extend_from_slice(rest);
    }

    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if std::mem::take(&mut self.pending_cr) {
            out.push(b'\r');
        }
    }
}

/// The per-chunk transformation of a copy.
pub enum Converter {
    Unchanged,
    Lf(CrlfToLf),
}

impl Converter {
    pub fn new(endings: LineEndings) -> Self {
        match endings {
            LineEndings::Lf => Converter::Lf(CrlfToLf::default()),
            LineEndings::Crlf => Converter::Unchanged,
        }
    }

    pub fn push(&mut self, input: &[u8], out: &mut Vec<u8>) {
        match self {
            Converter::Unchanged => out.extend_from_slice(input),
            Converter::Lf(c) => c.push(input, out),
        }
    }

    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if let Converter::Lf(c) = self {
            c.finish(out)
        }
    }
}

/// Copies `src` to `dst` converting line endings; returns the number of bytes written.
pub fn copy_converted(
    src: &mut impl Read,
    dst: &mut impl Write,
    endings: LineEndings,
) -> io::Result<u64> {
    let mut conv = Converter::new(endings);
    let mut buf = vec![0u8; CHUNK];
    let mut out = Vec::with_capacity(CHUNK);
    let mut written = 0u64;
    loop {
        let n = match src.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        out.clear();
        conv.push(&buf[..n], &mut out);
        dst.write_all(&out)?;
        written += out.len() as u64;
    }
    out.clear();
    conv.finish(&mut out);
    dst.write_all(&out)?;
    written += out.len() as u64;
    Ok(written)
}

/// mboxrd quoting, streaming: a line matching `^>*From ` gets one more `>` in front.
/// Input must already have LF line endings. Remembers the last two bytes written so the
/// caller can end the message with a blank line.
#[derive(Debug)]
pub struct MboxQuoter {
    state: QuoteState,
    /// The last two bytes emitted (0 = none yet).
    tail: [u8; 2],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum QuoteState {
    /// At the start of a line, or inside its leading `>` run (count held back).
    Start { gts: usize },
    /// After the `>` run, `matched` bytes of "From " seen (held back).
    From { gts: usize, matched: usize },
    /// Anywhere else in a line: bytes pass through until LF.
    Body,
}

const FROM_: &[u8] = b"From ";

impl Default for MboxQuoter {
    fn default() -> Self {
        MboxQuoter {
            state: QuoteState::Start { gts: 0 },
            tail: [0, 0],
        }
    }
}

impl MboxQuoter {
    pub fn push(&mut self, input: &[u8], out: &mut Vec<u8>) {
        let start = out.len();
        let mut i = 0;
        while i < input.len() {
            match self.state {
                QuoteState::Body => match input[i..].iter().position(|&b| b == b'\n') {
                    Some(p) => {
                        out.extend_from_slice(&input[i..=i + p]);
                        i += p + 1;
                        self.state = QuoteState::Start { gts: 0 };
                    }
                    None => {
                        out.extend_from_slice(&input[i..]);
                        i = input.len();
                    }
                },
                QuoteState::Start { gts } => {
                    let b = input[i];
                    if b == b'>' {
                        self.state = QuoteState::Start { gts: gts + 1 };
                        i += 1;
                    } else if b == FROM_[0] {
                        self.state = QuoteState::From { gts, matched: 1 };
                        i += 1;
                    } else {
                        out.resize(out.len() + gts, b'>');
                        self.state = QuoteState::Body;
                    }
                }
                QuoteState::From { gts, matched } => {
                    let b = input[i];
                    if b == FROM_[matched] {
                        i += 1;
                        if matched + 1 == FROM_.len() {
                            out.resize(out.len() + gts + 1, b'>');
                            out.extend_from_slice(FROM_);
                            self.state = QuoteState::Body;
                        } else {
                            self.state = QuoteState::From {
                                gts,
                                matched: matched + 1,
                            };
                        }
                    } else {
                        out.resize(out.len() + gts, b'>');
                        out.extend_from_slice(&FROM_[..matched]);
                        self.state = QuoteState::Body;
                    }
                }
            }
        }
        self.note_tail(start, out);
    }

    /// Flushes what is held back; the message ends here.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        let start = out.len();
        match self.state {
            QuoteState::Start { gts } => out.resize(out.len() + gts, b'>'),
            QuoteState::From { gts, matched } => {
                out.resize(out.len() + gts, b'>');
                out.extend_from_slice(&FROM_[..matched]);
            }
            QuoteState::Body => {}
        }
        self.state = QuoteState::Start { gts: 0 };
        self.note_tail(start, out);
    }

    /// The bytes that make the message end with a blank line (an LF-terminated last line
    /// followed by an empty line), given what was emitted so far.
    pub fn terminator(&self) -> &'static [u8] {
        match self.tail {
            [_, b'\n'] => b"\n",
            _ => b"\n\n",
        }
    }

    fn note_tail(&mut self, start: usize, out: &[u8]) {
        for &b in &out[start..] {
            self.tail = [self.tail[1], b];
        }
    }
}

/// Recipients grouped by the mailbox their path template expands to, in first-seen order;
/// recipients whose expansion fails get their error in `results` right away.
pub struct Groups {
    pub groups: Vec<(PathBuf, Vec<usize>)>,
    pub results: Vec<Option<Result<Delivered, SinkError>>>,
}

pub fn group_by_path(template: &PathTemplate, rcpts: &[String]) -> Groups {
    let mut groups: Vec<(PathBuf, Vec<usize>)> = Vec::new();
    let mut results = vec![None; rcpts.len()];
    for (i, rcpt) in rcpts.iter().enumerate() {
        match template.expand(rcpt) {
            Ok(path) => match groups.iter_mut().find(|(p, _)| *p == path) {
                Some((_, members)) => members.push(i),
                None => groups.push((path, vec![i])),
            },
            Err(e) => results[i] = Some(Err(e)),
        }
    }
    Groups { groups, results }
}

impl Groups {
    pub fn set(&mut self, members: &[usize], result: &Result<Delivered, SinkError>) {
        for &i in members {
            self.results[i] = Some(result.clone());
        }
    }

    pub fn finish(self) -> RcptResults {
        self.results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(SinkError::temporary("4.3.0", "not attempted"))))
            .collect()
    }
}

/// Runs blocking file work off the async threads; a panic in it becomes a temporary error.
pub async fn blocking<T: Send + 'static>(
    what: &str,
    f: impl FnOnce() -> Result<T, SinkError> + Send + 'static,
) -> Result<T, SinkError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r,
        Err(e) => Err(SinkError::temporary(
            "4.3.0",
            format!("{what}: internal error: {e}"),
        )),
    }
}

/// How long a mailbox lock is waited for before the delivery is deferred.
pub const LOCK_WAIT: Duration = Duration::from_secs(30);

/// Takes an exclusive fcntl write lock on the whole of `file`, waiting at most `wait`.
///
/// On Linux this is an open-file-description lock (`F_OFD_SETLK`): it conflicts with the
/// classic POSIX locks other mail programs take (mutt, Dovecot, nmh, procmail), and unlike
/// those it also excludes other threads of this process and is not dropped when some other
/// descriptor of the same file is closed. Polled rather than `F_SETLKW`, so the wait is
/// bounded. Released when `file` is closed.
pub fn lock_exclusive(file: &File, path: &Path, wait: Duration) -> Result<(), SinkError> {
    let deadline = Instant::now() + wait;
    let mut pause = Duration::from_millis(5);
    loop {
        // SAFETY: an all-zero flock is valid; we set the fields fcntl reads.
        let mut fl: libc::flock = unsafe { std::mem::zeroed() };
        fl.l_type = libc::F_WRLCK as _;
        fl.l_whence = libc::SEEK_SET as _;
        fl.l_start = 0;
        fl.l_len = 0;
        #[cfg(target_os = "linux")]
        let cmd = libc::F_OFD_SETLK;
        #[cfg(not(target_os = "linux"))]
        let cmd = libc::F_SETLK;
        // SAFETY: the fd is open for the duration of the call and `fl` is a valid flock.
        let rc = unsafe { libc::fcntl(file.as_raw_fd(), cmd, &mut fl) };
        if rc == 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EAGAIN) | Some(libc::EACCES) => {}
            _ => return Err(SinkError::from_io(format!("lock {}", path.display()), &err)),
        }
        if Instant::now() >= deadline {
            return Err(SinkError::temporary(
                "4.2.0",
                format!(
                    "{} is locked by another program; gave up after {}s",
                    path.display(),
                    wait.as_secs()
                ),
            ));
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(200));
    }
}

/// Whether the calling process has `mode` access (`libc::W_OK`, ...) to `path`.
/// Creates `dir` and its missing parents (0700), then makes each new directory entry
/// durable (an fsync of its parent): a mailbox created for a delivery must not vanish with
/// the message in it at a power loss.
pub fn create_dir_all_durable(dir: &Path) -> io::Result<()> {
    let mut missing = Vec::new();
    let mut p = dir;
    while !p.as_os_str().is_empty() && !p.exists() {
        missing.push(p);
        match p.parent() {
            Some(parent) => p = parent,
            None => break,
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    for created in missing {
        fsync_parent(created)?;
    }
    Ok(())
}

/// Makes `path`'s entry in its directory durable (an fsync of the directory; "." for a
/// bare name).
pub fn fsync_parent(path: &Path) -> io::Result<()> {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => fsync_dir(d),
        _ => fsync_dir(Path::new(".")),
    }
}

pub fn access_ok(path: &Path, mode: libc::c_int) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: `c` is a valid NUL-terminated string for the call.
    unsafe { libc::access(c.as_ptr(), mode) == 0 }
}

/// Health check of a directory a sink writes in (a Maildir, an MH folder, the directory of
/// an mbox): it exists and is writable, or (with `create`) the nearest existing ancestor is.
pub fn check_dir_writable(dir: &Path, create: bool) -> Result<(), SinkError> {
    let unhealthy = |m: String| SinkError::temporary("4.3.0", m);
    if dir.is_dir() {
        return if access_ok(dir, libc::W_OK | libc::X_OK) {
            Ok(())
        } else {
            Err(unhealthy(format!("{} is not writable", dir.display())))
        };
    }
    if dir.exists() {
        return Err(unhealthy(format!(
            "{} exists but is not a directory",
            dir.display()
        )));
    }
    if !create {
        return Err(unhealthy(format!(
            "{} does not exist (create = false)",
            dir.display()
        )));
    }
    let mut ancestor = dir.parent();
    while let Some(a) = ancestor {
        let a = if a.as_os_str().is_empty() {
            Path::new(".")
        } else {
            a
        };
        if a.is_dir() {
            return if access_ok(a, libc::W_OK | libc::X_OK) {
                Ok(())
            } else {
                Err(unhealthy(format!(
                    "{} does not exist and cannot be created: {} is not writable",
                    dir.display(),
                    a.display()
                )))
            };
        }
        if a.exists() {
            return Err(unhealthy(format!(
                "{} cannot be created: {} is not a directory",
                dir.display(),
                a.display()
            )));
        }
        ancestor = a.parent();
    }
    Err(unhealthy(format!(
        "{} cannot be created: no existing parent directory",
        dir.display()
    )))
}

#[cfg(test)]
pub mod test_support {
    use crate::envelope::Envelope;
    use crate::sinks::SinkContext;
    use crate::spool::commit::Committer;
    use std::path::Path;
    use std::sync::Arc;

    /// A message exercising every line-ending case: CRLF, a bare LF, a lone CR, a `From `
    /// line, quoted `>From ` lines, a long line, and no final line ending.
    pub fn sample_message() -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(b"Received: from x by y; Mon, 1 Jan 2024 00:00:00 +0000\r\n");
        m.extend_from_slice(b"Subject: test\r\n\r\n");
        m.extend_from_slice(b"crlf line\r\n");
        m.extend_from_slice(b"bare lf line\n");
        m.extend_from_slice(b"lone\rcr\r\n");
        m.extend_from_slice(b"From the start\r\n");
        m.extend_from_slice(b">From quoted\r\n");
        m.extend_from_slice(b">>From twice\r\n");
        m.extend_from_slice(b"From\r\n");
        m.extend_from_slice(b" From not at start\r\n");
        m.extend_from_slice(&[b'x'; 200_000]);
        m.extend_from_slice(b"\r\nlast line\r\n");
        m
    }

    pub fn crlf_to_lf(m: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < m.len() {
            if m[i] == b'\r' && m.get(i + 1) == Some(&b'\n') {
                i += 1;
                continue;
            }
            out.push(m[i]);
            i += 1;
        }
        out
    }

    pub fn ctx(base: &Path) -> SinkContext {
        SinkContext {
            hostname: "mx.example.org".into(),
            committer: Arc::new(Committer::new()),
            base_dir: base.to_path_buf(),
        }
    }

    pub fn envelope(mail_from: &str, rcpts: &[&str]) -> Envelope {
        Envelope {
            id: "0123456789ABCDEF01234567".into(),
            mail_from: mail_from.into(),
            rcpts: rcpts.iter().map(|s| s.to_string()).collect(),
            client: Default::default(),
            listener: "test".into(),
            received_at: 1_700_000_000,
            body: Default::default(),
            smtputf8: false,
            size: 0,
            sha256: String::new(),
        }
    }

    /// Runs `python3 -c script arg...` and returns its stdout.
    pub fn python(script: &str, args: &[&str]) -> Vec<u8> {
        let out = std::process::Command::new("python3")
            .arg("-c")
            .arg(script)
            .args(args)
            .output()
            .expect("python3 runs");
        assert!(
            out.status.success(),
            "python failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn convert_in_chunks(input: &[u8], chunk: usize) -> Vec<u8> {
        let mut c = CrlfToLf::default();
        let mut out = Vec::new();
        for part in input.chunks(chunk) {
            c.push(part, &mut out);
        }
        c.finish(&mut out);
        out
    }

    #[test]
    fn crlf_conversion_at_every_boundary() {
        let input = b"a\r\nb\nc\rd\r\r\ne\r";
        let want = b"a\nb\nc\rd\r\ne\r".to_vec();
        for chunk in 1..=input.len() {
            assert_eq!(convert_in_chunks(input, chunk), want, "chunk {chunk}");
        }
        assert_eq!(
            test_support::crlf_to_lf(input),
            want,
            "reference implementation agrees"
        );
    }

    fn quote_in_chunks(input: &[u8], chunk: usize) -> (Vec<u8>, &'static [u8]) {
        let mut q = MboxQuoter::default();
        let mut out = Vec::new();
        for part in input.chunks(chunk) {
            q.push(part, &mut out);
        }
        q.finish(&mut out);
        (out, q.terminator())
    }

    #[test]
    fn mboxrd_quoting_at_every_boundary() {
        let input = b"From a\n>From b\n>>From c\nFrom\n>>x\n From d\nFro\n>Fr";
        let want = b">From a\n>>From b\n>>>From c\nFrom\n>>x\n From d\nFro\n>Fr".to_vec();
        for chunk in 1..=input.len() {
            let (out, term) = quote_in_chunks(input, chunk);
            assert_eq!(out, want, "chunk {chunk}");
            assert_eq!(term, b"\n\n");
        }
        assert_eq!(quote_in_chunks(b"x\n", 1).1, b"\n");
        assert_eq!(quote_in_chunks(b"x\n\n", 1).1, b"\n");
        assert_eq!(quote_in_chunks(b"", 1).1, b"\n\n");
    }

    #[test]
    fn dir_checks() {
        let d = tempfile::tempdir().unwrap();
        assert!(check_dir_writable(d.path(), false).is_ok());
        assert!(check_dir_writable(&d.path().join("a/b"), true).is_ok());
        assert!(check_dir_writable(&d.path().join("a/b"), false).is_err());
        std::fs::write(d.path().join("f"), b"").unwrap();
        assert!(check_dir_writable(&d.path().join("f/x"), true).is_err());
    }

    #[test]
    fn durable_dir_creation() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let deep = d.path().join("a/b/c");
        create_dir_all_durable(&deep).unwrap();
        assert!(deep.is_dir());
        let mode = std::fs::metadata(d.path().join("a"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
        create_dir_all_durable(&deep).unwrap();
        std::fs::write(d.path().join("f"), b"").unwrap();
        assert!(create_dir_all_durable(&d.path().join("f/x")).is_err());
    }
}
