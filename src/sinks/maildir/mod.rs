//! `maildir`: one file per message per Maildir, the way qmail, Postfix and Dovecot do it.
//!
//! A delivery writes `tmp/NAME`, waits for a group-commit round (data durable), renames it
//! to `new/NAME` and waits for another round (directory entry durable) before reporting
//! success. NAME is derived from the delivery id and our host name, so a retry of the same
//! delivery finds what an earlier attempt already put in `new/` (or what a reader has since
//! moved to `cur/`) and reports it delivered instead of storing a second copy.
//!
//! With `envelope_headers` (the default) each recipient gets a copy of its own, beginning
//! with `Return-Path:` and its own `Delivered-To:` ([`super::envelope_headers`]), as
//! Postfix `local` and Dovecot's LDA store it: the first recipient of a Maildir gets the
//! name above, a further one `ID.Rk.HOST` (k = 1, 2, ... in recipient order), so each copy
//! is recognised on a retry by its own name. Without them, recipients whose path expands
//! to the same Maildir share one file. Each Maildir's write
//! happens in one blocking task and the sync rounds are shared by all Maildirs of the
//! delivery (one round per filesystem, twice), so a message for 100 mailboxes costs two
//! `syncfs`, not two hundred.

pub mod config;

use super::envelope_headers::WithEnvelope;
use super::local::LineEndings;
use super::local::{self, Groups};
use super::template::PathTemplate;
use super::{
    BoxFuture, Delivered, Delivery, InvalidKey, RcptResults, Sink, SinkContext, SinkError,
};
use crate::spool::commit::Committer;
use config::MaildirConfig;
use std::fs::{self, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub struct MaildirSink {
    path: PathTemplate,
    /// Maildir++ folder directory name (".Lists.rust"), `None` for INBOX.
    folder: Option<String>,
    line_endings: LineEndings,
    create: bool,
    /// Prepend the envelope, one copy per recipient.
    envelope_headers: bool,
    /// Host name as it may appear in a Maildir file name (`/`, `:`, `,` escaped).
    host: String,
    committer: Arc<Committer>,
}

impl MaildirSink {
    pub fn new(c: &MaildirConfig, ctx: &SinkContext) -> Result<Self, InvalidKey> {
        let path =
            PathTemplate::new(&c.path, &ctx.base_dir).map_err(|m| InvalidKey::at("path", m))?;
        let folder = match c.folder.as_deref() {
            None | Some("") | Some("INBOX") => None,
            Some(f) => Some(folder_dir(f).map_err(|m| InvalidKey::at("folder", m))?),
        };
        Ok(MaildirSink {
            path,
            folder,
            line_endings: c.line_endings,
            create: c.create,
            envelope_headers: c.envelope_headers,
            host: escape_name(&ctx.hostname),
            committer: ctx.committer.clone(),
        })
    }

    /// The directory holding cur/new/tmp for a Maildir root.
    fn target(&self, root: &Path) -> PathBuf {
        match &self.folder {
            Some(f) => root.join(f),
            None => root.to_path_buf(),
        }
    }
}

/// The Maildir++ directory of a folder: "Lists.rust" → ".Lists.rust" (the hierarchy
/// separator is `.`; every folder is a direct child of the root).
fn folder_dir(folder: &str) -> Result<String, String> {
    let f = folder.strip_prefix("INBOX.").unwrap_or(folder);
    if f.contains('/') || f.contains('\0') {
        return Err(format!(
            "folder \"{}\": must not contain '/' or NUL (Maildir++ nests folders with '.')",
            folder.escape_debug()
        ));
    }
    if f.split('.').any(str::is_empty) {
        return Err(format!(
            "folder \"{}\": empty folder name between dots",
            folder.escape_debug()
        ));
    }
    Ok(format!(".{f}"))
}

/// Escapes what the Maildir spec forbids in a name (`/`, `:`) plus `,` (Dovecot reads
/// `,S=` fields after the base name) and `\` (so escapes stay unambiguous), as `\ooo`.
fn escape_name(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '/' | ':' | ',' | '\\' => out.push_str(&format!("\\{:03o}", c as u32)),
            c if c.is_control() => out.push_str(&format!("\\{:03o}", c as u32 & 0o377)),
            c => out.push(c),
        }
    }
    out
}

/// What the first blocking step did for one Maildir.
enum Prepared {
    Already(PathBuf),
    Written { tmp: PathBuf, new: PathBuf },
}

fn make_maildir(dir: &Path, create: bool, is_folder: bool) -> Result<(), SinkError> {
    let subdirs = ["cur", "new", "tmp"];
    if subdirs.iter().all(|s| dir.join(s).is_dir()) {
        return Ok(());
    }
    if !create {
        return Err(SinkError::temporary(
            "4.2.0",
            format!(
                "Maildir {} does not exist (or lacks cur/new/tmp) and create = false",
                dir.display()
            ),
        ));
    }
    for s in subdirs {
        let p = dir.join(s);
        local::create_dir_all_durable(&p)
            .map_err(|e| SinkError::from_io(format!("create {}", p.display()), &e))?;
    }
    if is_folder {
        // Courier and Dovecot mark Maildir++ folders with this empty file.
        let marker = dir.join("maildirfolder");
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&marker)
            .map_err(|e| SinkError::from_io(format!("create {}", marker.display()), &e))?;
    }
    Ok(())
}

/// Looks in new/ and cur/ for a file an earlier attempt of this delivery wrote: its name is
/// `base` followed by nothing, `,S=...` or `:2,FLAGS` (a reader moved it to cur/).
/// This reads both directories (the flags in cur/ names make a plain `stat` impossible),
/// O(messages), so it runs only when an earlier attempt may have written something.
fn find_existing(dir: &Path, base: &str) -> Result<Option<PathBuf>, SinkError> {
    for sub in ["new", "cur"] {
        let d = dir.join(sub);
        let entries = fs::read_dir(&d)
            .map_err(|e| SinkError::from_io(format!("read {}", d.display()), &e))?;
        for entry in entries {
            let entry =
                entry.map_err(|e| SinkError::from_io(format!("read {}", d.display()), &e))?;
            let name = entry.file_name();
            let Some(rest) = name.as_encoded_bytes().strip_prefix(base.as_bytes()) else {
                continue;
            };
            if matches!(rest.first(), None | Some(b',') | Some(b':')) {
                return Ok(Some(entry.path()));
            }
        }
    }
    Ok(None)
}

/// One file a delivery writes: in which Maildir, under which name, beginning with which
/// envelope (sender, recipient), standing for which recipients.
struct MaildirCopy {
    dir: PathBuf,
    base: String,
    envelope: Option<(String, String)>,
    members: Vec<usize>,
}

fn prepare(
    copy: &MaildirCopy,
    is_folder: bool,
    create: bool,
    message: &Path,
    endings: LineEndings,
    first_attempt: bool,
) -> Result<Prepared, SinkError> {
    let (dir, base) = (copy.dir.as_path(), copy.base.as_str());
    if let Some(root) = dir.parent().filter(|_| is_folder) {
        make_maildir(root, create, false)?;
    }
    make_maildir(dir, create, is_folder)?;
    if !first_attempt && let Some(existing) = find_existing(dir, base)? {
        return Ok(Prepared::Already(existing));
    }
    let tmp = dir.join("tmp").join(base);
    let write = || -> Result<u64, SinkError> {
        let src = fs::File::open(message)
            .map_err(|e| SinkError::from_io(format!("open {}", message.display()), &e))?;
        let mut dst = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| SinkError::from_io(format!("create {}", tmp.display()), &e))?;
        let copied = match &copy.envelope {
            Some((from, rcpt)) => {
                local::copy_converted(&mut WithEnvelope::new(src, from, rcpt), &mut dst, endings)
            }
            None => local::copy_converted(&mut { src }, &mut dst, endings),
        };
        copied.map_err(|e| SinkError::from_io(format!("write {}", tmp.display()), &e))
    };
    match write() {
        Ok(size) => Ok(Prepared::Written {
            new: dir.join("new").join(format!("{base},S={size}")),
            tmp,
        }),
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// Makes `paths` durable in one group round; the first error wins.
async fn sync_all(committer: &Committer, paths: &[&Path]) -> Result<(), SinkError> {
    let mut distinct: Vec<&Path> = paths.to_vec();
    distinct.sort();
    distinct.dedup();
    committer.sync(&distinct).await.map_err(|e| {
        let names: Vec<String> = distinct.iter().map(|p| p.display().to_string()).collect();
        SinkError::from_io(format!("sync {}", names.join(", ")), &e)
    })
}

impl MaildirSink {
    async fn deliver_all(&self, d: &Delivery<'_>) -> RcptResults {
        let mut groups: Groups = local::group_by_path(&self.path, d.rcpts);
        let id = escape_name(d.id);

        // The files to write: one per Maildir, or (envelope headers) one per recipient,
        // each with the recipients it stands for and the envelope it begins with.
        let mut copies: Vec<MaildirCopy> = Vec::new();
        for (root, members) in std::mem::take(&mut groups.groups) {
            let dir = self.target(&root);
            if !self.envelope_headers {
                copies.push(MaildirCopy {
                    base: format!("{id}.{}", self.host),
                    dir,
                    envelope: None,
                    members,
                });
                continue;
            }
            for (k, &i) in members.iter().enumerate() {
                let base = match k {
                    0 => format!("{id}.{}", self.host),
                    k => format!("{id}.R{k}.{}", self.host),
                };
                let env = (d.envelope.mail_from.clone(), d.rcpts[i].clone());
                copies.push(MaildirCopy {
                    dir: dir.clone(),
                    base,
                    envelope: Some(env),
                    members: vec![i],
                });
            }
        }

        // Step 1: for every copy, create its Maildir if needed, look for an earlier copy,
        // else write tmp/NAME. One blocking task per copy, run one after the other.
        let mut written: Vec<(PathBuf, PathBuf, Vec<usize>)> = Vec::new();
        for mut copy in copies {
            let members = std::mem::take(&mut copy.members);
            let (is_folder, create, endings) =
                (self.folder.is_some(), self.create, self.line_endings);
            let (msg, first) = (d.message.to_path_buf(), d.first_attempt);
            let what = format!("deliver to {}", copy.dir.display());
            let r = local::blocking(&what, move || {
                prepare(&copy, is_folder, create, &msg, endings, first)
            })
            .await;
            match r {
                Ok(Prepared::Already(p)) => groups.set(
                    &members,
                    &Ok(Delivered {
                        detail: format!("already delivered as {}", p.display()),
                    }),
                ),
                Ok(Prepared::Written { tmp, new }) => written.push((tmp, new, members)),
                Err(e) => groups.set(&members, &Err(e)),
            }
        }
        if written.is_empty() {
            return groups.finish();
        }

        // Step 2: data durable before the name appears in new/, so a name there always
        // means a complete message (a retry trusts it).
        let tmps: Vec<&Path> = written.iter().map(|(t, _, _)| t.as_path()).collect();
        if let Err(e) = sync_all(&self.committer, &tmps).await {
            for (tmp, _, members) in &written {
                let _ = fs::remove_file(tmp);
                groups.set(members, &Err(e.clone()));
            }
            return groups.finish();
        }

        // Step 3: rename into new/, then make the directory entries durable.
        let moves: Vec<(PathBuf, PathBuf)> = written
            .iter()
            .map(|(t, n, _)| (t.clone(), n.clone()))
            .collect();
        let renamed = local::blocking("rename into new/", move || {
            Ok(moves
                .into_iter()
                .map(|(tmp, new)| {
                    fs::rename(&tmp, &new).map_err(|e| {
                        let _ = fs::remove_file(&tmp);
                        SinkError::from_io(
                            format!("rename {} to {}", tmp.display(), new.display()),
                            &e,
                        )
                    })
                })
                .collect::<Vec<_>>())
        })
        .await;
        let renamed = match renamed {
            Ok(r) => r,
            Err(e) => vec![Err(e); written.len()],
        };
        let news: Vec<&Path> = written
            .iter()
            .zip(&renamed)
            .filter(|(_, r)| r.is_ok())
            .filter_map(|((_, n, _), _)| n.parent())
            .collect();
        let synced = if news.is_empty() {
            Ok(())
        } else {
            sync_all(&self.committer, &news).await
        };
        for ((_, new, members), r) in written.iter().zip(renamed) {
            let result = r.and_then(|()| synced.clone()).map(|()| Delivered {
                detail: format!("stored in {}", new.display()),
            });
            groups.set(members, &result);
        }
        groups.finish()
    }
}

impl Sink for MaildirSink {
    fn accepts(&self, rcpt: &str) -> Result<(), SinkError> {
        self.path.expand(rcpt).map(drop)
    }

    fn deliver<'a>(&'a self, d: &'a Delivery<'a>) -> BoxFuture<'a, RcptResults> {
        Box::pin(self.deliver_all(d))
    }

    fn healthcheck(&self) -> BoxFuture<'_, Result<(), SinkError>> {
        Box::pin(async move {
            let dir = match self.path.fixed() {
                Some(root) => self.target(&root),
                None => self.path.static_parent(),
            };
            let create = self.create || self.path.is_per_recipient();
            local::blocking("maildir health check", move || {
                local::check_dir_writable(&dir, create)?;
                for sub in ["tmp", "new"] {
                    let p = dir.join(sub);
                    if p.is_dir() && !local::access_ok(&p, libc::W_OK | libc::X_OK) {
                        return Err(SinkError::temporary(
                            "4.3.0",
                            format!("{} is not writable", p.display()),
                        ));
                    }
                }
                Ok(())
            })
            .await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::local::test_support::{self, *};
    use super::*;

    fn config(path: &str, folder: Option<&str>, endings: LineEndings) -> MaildirConfig {
        MaildirConfig {
            path: path.into(),
            folder: folder.map(String::from),
            line_endings: endings,
            create: true,
            envelope_headers: true,
        }
    }

    fn files(dir: &Path) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        v.sort();
        v
    }

    const READ_BACK: &str = "import mailbox, sys\n\
        md = mailbox.Maildir(sys.argv[1], factory=None, create=False)\n\
        keys = md.keys()\n\
        assert len(keys) == 1, keys\n\
        sys.stdout.buffer.write(md.get_bytes(keys[0]))\n";

    async fn deliver_sample(endings: LineEndings, envelope: bool) -> (tempfile::TempDir, Vec<u8>) {
        let dir = tempfile::tempdir().unwrap();
        let msg = dir.path().join("msg");
        fs::write(&msg, sample_message()).unwrap();
        let ctx = ctx(dir.path());
        let mut c = config("Maildir/{local}", None, endings);
        c.envelope_headers = envelope;
        let sink = MaildirSink::new(&c, &ctx).unwrap();
        let env = test_support::envelope("a@b", &["alice@example.org"]);
        let rcpts = env.rcpts.clone();
        let d = Delivery {
            id: "ID1",
            envelope: &env,
            rcpts: &rcpts,
            message: &msg,
            first_attempt: false,
        };
        let r = sink.deliver(&d).await;
        assert!(r[0].is_ok(), "{r:?}");
        let new = files(&dir.path().join("Maildir/alice/new"));
        assert_eq!(new.len(), 1);
        let stored = fs::read(&new[0]).unwrap();
        let name = new[0].file_name().unwrap().to_str().unwrap().to_string();
        assert_eq!(name, format!("ID1.mx.example.org,S={}", stored.len()));
        assert!(files(&dir.path().join("Maildir/alice/tmp")).is_empty());
        let py = python(
            READ_BACK,
            &[dir.path().join("Maildir/alice").to_str().unwrap()],
        );
        assert_eq!(py, stored, "python's mailbox reads the same bytes");
        (dir, stored)
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn stores_lf_converted() {
        let (_d, stored) = deliver_sample(LineEndings::Lf, true).await;
        let rest = stored
            .strip_prefix(&b"Return-Path: <a@b>\nDelivered-To: alice@example.org\n"[..])
            .expect("the envelope first, in LF");
        assert_eq!(rest, crlf_to_lf(&sample_message()));
        assert!(stored.windows(6).any(|w| w == b"lone\rc"));
        assert!(
            rest.starts_with(b"Received: from x by y; Mon, 1 Jan 2024 00:00:00 +0000\nSubject")
        );
        let (_d, bare) = deliver_sample(LineEndings::Lf, false).await;
        assert_eq!(
            bare,
            crlf_to_lf(&sample_message()),
            "as before without them"
        );
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn stores_crlf_unchanged() {
        let (_d, stored) = deliver_sample(LineEndings::Crlf, true).await;
        let mut want = b"Return-Path: <a@b>\r\nDelivered-To: alice@example.org\r\n".to_vec();
        want.extend_from_slice(&sample_message());
        assert_eq!(stored, want);
        let (_d, bare) = deliver_sample(LineEndings::Crlf, false).await;
        assert_eq!(bare, sample_message());
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn retry_does_not_duplicate_and_groups_share_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let msg = dir.path().join("msg");
        fs::write(&msg, b"Subject: x\r\n\r\nbody\r\n").unwrap();
        let ctx = ctx(dir.path());
        let mut c = config(
            dir.path().join("M").to_str().unwrap(),
            Some("Lists.rust"),
            LineEndings::Lf,
        );
        c.envelope_headers = false;
        let sink = MaildirSink::new(&c, &ctx).unwrap();
        let env = envelope("", &["a@x", "b@x"]);
        let rcpts = env.rcpts.clone();
        let d = Delivery {
            id: "Q1/x:y",
            envelope: &env,
            rcpts: &rcpts,
            message: &msg,
            first_attempt: false,
        };
        let r = sink.deliver(&d).await;
        assert!(r.iter().all(|r| r.is_ok()), "{r:?}");
        let folder = dir.path().join("M/.Lists.rust");
        assert!(folder.join("maildirfolder").is_file());
        assert!(dir.path().join("M/cur").is_dir());
        let new = files(&folder.join("new"));
        assert_eq!(new.len(), 1, "one file for two recipients");
        assert_eq!(
            new[0].file_name().unwrap().to_str().unwrap(),
            "Q1\\057x\\072y.mx.example.org,S=17"
        );

        // A reader moved it to cur/ and flagged it: still recognised.
        let cur = folder.join("cur").join(format!(
            "{}:2,S",
            new[0].file_name().unwrap().to_str().unwrap()
        ));
        fs::rename(&new[0], &cur).unwrap();
        let r = sink.deliver(&d).await;
        assert!(r[0].as_ref().unwrap().detail.contains("already delivered"));
        assert!(files(&folder.join("new")).is_empty());
        assert_eq!(files(&folder.join("cur")).len(), 1);
        assert!(files(&folder.join("tmp")).is_empty());
    }

    /// With the envelope kept, each recipient of a shared Maildir gets its own copy saying
    /// whom it is for; a retry recognises every copy by its name, wherever it was moved.
    #[tokio::test(flavor = "multi_thread")]
    async fn one_copy_per_recipient_with_its_own_delivered_to() {
        let dir = tempfile::tempdir().unwrap();
        let msg = dir.path().join("msg");
        fs::write(
            &msg,
            b"Return-Path: <forged@x>\r\nSubject: x\r\n\r\nbody\r\n",
        )
        .unwrap();
        let ctx = ctx(dir.path());
        let sink = MaildirSink::new(
            &config(
                dir.path().join("M").to_str().unwrap(),
                None,
                LineEndings::Lf,
            ),
            &ctx,
        )
        .unwrap();
        let env = test_support::envelope("s@x", &["a@x", "b@x", "c@x"]);
        let rcpts = env.rcpts.clone();
        let d = Delivery {
            id: "Q1.0",
            envelope: &env,
            rcpts: &rcpts,
            message: &msg,
            first_attempt: true,
        };
        let r = sink.deliver(&d).await;
        assert!(r.iter().all(|r| r.is_ok()), "{r:?}");
        let new = files(&dir.path().join("M/new"));
        let names: Vec<&str> = new
            .iter()
            .map(|p| p.file_name().unwrap().to_str().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "Q1.0.R1.mx.example.org,S=54",
                "Q1.0.R2.mx.example.org,S=54",
                "Q1.0.mx.example.org,S=54"
            ]
        );
        for (name, rcpt) in [(2, "a@x"), (0, "b@x"), (1, "c@x")] {
            assert_eq!(
                fs::read(&new[name]).unwrap(),
                format!("Return-Path: <s@x>\nDelivered-To: {rcpt}\nSubject: x\n\nbody\n")
                    .as_bytes()
            );
        }
        // One was read and moved to cur/: a retry finds all three, writes nothing.
        let cur = dir.path().join("M/cur").join(format!("{}:2,S", names[0]));
        fs::rename(&new[0], &cur).unwrap();
        let again = Delivery {
            first_attempt: false,
            ..d
        };
        let r = sink.deliver(&again).await;
        assert!(
            r.iter()
                .all(|r| r.as_ref().unwrap().detail.contains("already delivered")),
            "{r:?}"
        );
        assert_eq!(files(&dir.path().join("M/new")).len(), 2);
        assert_eq!(files(&dir.path().join("M/cur")).len(), 1);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn bad_recipient_and_missing_maildir() {
        let dir = tempfile::tempdir().unwrap();
        let msg = dir.path().join("msg");
        fs::write(&msg, b"x\r\n").unwrap();
        let ctx = ctx(dir.path());
        let mut c = config("Maildir/{local}", None, LineEndings::Lf);
        c.create = false;
        let sink = MaildirSink::new(&c, &ctx).unwrap();
        let env = envelope("", &["../etc@x", "bob@x"]);
        let rcpts = env.rcpts.clone();
        let d = Delivery {
            id: "ID",
            envelope: &env,
            rcpts: &rcpts,
            message: &msg,
            first_attempt: false,
        };
        let r = sink.deliver(&d).await;
        let e0 = r[0].as_ref().unwrap_err();
        assert_eq!(e0.status, "5.1.3");
        let e1 = r[1].as_ref().unwrap_err();
        assert!(e1.is_temporary(), "{e1:?}");
        assert!(!dir.path().join("Maildir").exists());
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn healthcheck_and_config_errors() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = ctx(dir.path());
        let sink = MaildirSink::new(&config("Maildir", None, LineEndings::Lf), &ctx).unwrap();
        assert!(sink.healthcheck().await.is_ok());
        let mut c = config("Maildir", None, LineEndings::Lf);
        c.create = false;
        let sink = MaildirSink::new(&c, &ctx).unwrap();
        assert!(sink.healthcheck().await.is_err());
        for bad in ["a/b", "a..b", ".a", ""] {
            let r = MaildirSink::new(&config("M", Some(bad), LineEndings::Lf), &ctx);
            assert_eq!(r.is_err(), !bad.is_empty(), "{bad}");
        }
        assert!(MaildirSink::new(&config("M/{nope}", None, LineEndings::Lf), &ctx).is_err());
    }
}
