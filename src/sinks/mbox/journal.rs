//! The append journal of an mbox: a small file next to it that records, before each
//! append, where the append starts and ends. An append cut short by a crash (kill -9, power
//! loss) is then cut away before the next one, instead of staying in the mbox as a torn
//! message that every reader shows, and a retry of an append that did complete is
//! recognised instead of written twice.
//!
//! Other programs (MUAs, other MDAs) change mboxes too, so the record is trusted only when
//! the mbox still looks exactly as our append left it: the same inode, a length between the
//! recorded start and end, our own first line at the start, and no `From ` line after it —
//! our message is mboxrd-quoted and has none, so one there is another program's message,
//! appended after our torn one, and nothing is cut.

use crate::sinks::local::fsync_parent;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

const MAGIC: &str = "mailchute-append 1";
/// The last line: a record cut short anywhere (even inside its last value) has none.
const END: &str = "end-of-record";

/// One append: the mbox's inode, where the append starts and ends, the delivery id and
/// the first bytes written (separator and `From ` line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub ino: u64,
    pub start: u64,
    pub end: u64,
    pub id: String,
    pub head: Vec<u8>,
}

/// What the mbox says about a recorded append.
#[derive(Debug, PartialEq, Eq)]
pub enum Leftover {
    /// The append began and did not finish: bytes `start..` are ours and torn.
    Partial,
    /// The append finished: the mbox ends with it.
    Complete,
    /// The mbox changed since (or the append never began): the record says nothing.
    Unrelated,
}

impl Record {
    fn render(&self) -> String {
        format!(
            "{MAGIC}\nino {}\nstart {}\nend {}\nid {}\nhead {}\n{END}\n",
            self.ino,
            self.start,
            self.end,
            hex(self.id.as_bytes()),
            hex(&self.head)
        )
    }

    fn parse(text: &str) -> Option<Record> {
        let mut lines = text.lines();
        if lines.next()? != MAGIC {
            return None;
        }
        let mut field = |name: &str| {
            lines
                .next()?
                .strip_prefix(name)?
                .strip_prefix(' ')
                .map(str::to_owned)
        };
        let ino = field("ino")?.parse().ok()?;
        let start = field("start")?.parse().ok()?;
        let end = field("end")?.parse().ok()?;
        let id = String::from_utf8(unhex(&field("id")?)?).ok()?;
        let head = unhex(&field("head")?)?;
        if lines.next()? != END {
            return None;
        }
        (start <= end).then_some(Record {
            ino,
            start,
            end,
            id,
            head,
        })
    }

    /// Compares the record with the mbox as it is now (inode `ino`, `len` bytes).
    pub fn leftover(&self, mbox: &File, ino: u64, len: u64) -> io::Result<Leftover> {
        if ino != self.ino || len <= self.start || len > self.end {
            return Ok(Leftover::Unrelated);
        }
        let head_len = self.head.len() as u64;
        if len >= self.start + head_len {
            let mut found = vec![0u8; self.head.len()];
            mbox.read_exact_at(&mut found, self.start)?;
            if found != self.head {
                return Ok(Leftover::Unrelated);
            }
        } else {
            // Torn inside the first line: the part that is there must be ours.
            let mut found = vec![0u8; (len - self.start) as usize];
            mbox.read_exact_at(&mut found, self.start)?;
            if !self.head.starts_with(&found) {
                return Ok(Leftover::Unrelated);
            }
        }
        if len > self.start + head_len && has_from_line(mbox, self.start + head_len, len)? {
            return Ok(Leftover::Unrelated);
        }
        Ok(if len == self.end {
            Leftover::Complete
        } else {
            Leftover::Partial
        })
    }
}

/// Whether bytes `from..to` of the mbox hold a line starting with `From ` (`\nFrom `).
fn has_from_line(mbox: &File, from: u64, to: u64) -> io::Result<bool> {
    const NEEDLE: &[u8] = b"\nFrom ";
    let mut buf = vec![0u8; 64 * 1024];
    // Each read starts a little before the previous one ended, so a needle cut by the
    // boundary is seen whole.
    let mut pos = from;
    while pos < to {
        let n = ((to - pos) as usize).min(buf.len());
        mbox.read_exact_at(&mut buf[..n], pos)?;
        if buf[..n].windows(NEEDLE.len()).any(|w| w == NEEDLE) {
            return Ok(true);
        }
        if pos + n as u64 >= to {
            break;
        }
        pos += (n - (NEEDLE.len() - 1)) as u64;
    }
    Ok(false)
}

/// The journal file of one mbox: `.NAME.mailchute-append` in the mbox's directory.
pub struct Journal {
    path: PathBuf,
}

impl Journal {
    /// The journal of the mbox at `mbox` (which exists): beside the file the path leads to,
    /// so that paths reaching one mbox through symlinks share one journal.
    pub fn for_mbox(mbox: &Path) -> Journal {
        let real = std::fs::canonicalize(mbox).unwrap_or_else(|_| mbox.to_path_buf());
        let name = real
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        Journal {
            path: real.with_file_name(format!(".{name}.mailchute-append")),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The last record, if there is a readable one (a torn or foreign file counts as none:
    /// a record is durable before its append begins, so a torn one had no append).
    pub fn read(&self) -> io::Result<Option<Record>> {
        match std::fs::read(&self.path) {
            Ok(bytes) => Ok(std::str::from_utf8(&bytes).ok().and_then(Record::parse)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Replaces the record and makes it durable (and the file's directory entry, the
    /// first time) before the append it describes begins.
    pub fn write(&self, record: &Record) -> io::Result<()> {
        let created = !self.path.exists();
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&self.path)?;
        f.write_all(record.render().as_bytes())?;
        f.sync_data()?;
        if created {
            fsync_parent(&self.path)?;
        }
        Ok(())
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(start: u64, end: u64) -> Record {
        Record {
            ino: 7,
            start,
            end,
            id: "ID.0 <x y>".into(),
            head: b"\nFrom a@b Thu Jan  1 00:00:00 1970\n".to_vec(),
        }
    }

    #[test]
    fn round_trips_and_refuses_torn_text() {
        let r = record(10, 100);
        let text = r.render();
        assert_eq!(Record::parse(&text), Some(r));
        // Only the final newline may be missing.
        for cut in 0..text.len() - 1 {
            let parsed = Record::parse(&text[..cut]);
            assert!(parsed.is_none(), "cut at {cut}: {parsed:?}");
        }
        assert_eq!(Record::parse("something else\n"), None);
        assert_eq!(unhex("4"), None);
        assert_eq!(unhex("zz"), None);
    }

    #[test]
    fn tells_partial_complete_and_unrelated_apart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("box");
        let old = b"From x Thu Jan  1 00:00:00 1970\nold\n".to_vec();
        let head = record(0, 0).head;
        let mut full = old.clone();
        full.extend_from_slice(&head);
        full.extend_from_slice(b"body\n\n");
        std::fs::write(&path, &full).unwrap();
        let f = File::open(&path).unwrap();
        let r = record(old.len() as u64, full.len() as u64);
        let len = |n: usize| n as u64;
        assert_eq!(
            r.leftover(&f, 7, len(full.len())).unwrap(),
            Leftover::Complete
        );
        assert_eq!(
            r.leftover(&f, 7, len(full.len() - 3)).unwrap(),
            Leftover::Partial
        );
        // Torn inside our first line.
        assert_eq!(
            r.leftover(&f, 7, len(old.len() + 3)).unwrap(),
            Leftover::Partial
        );
        // Nothing of ours written; another inode; grown past our end.
        assert_eq!(
            r.leftover(&f, 7, len(old.len())).unwrap(),
            Leftover::Unrelated
        );
        assert_eq!(
            r.leftover(&f, 8, len(full.len())).unwrap(),
            Leftover::Unrelated
        );
        assert_eq!(
            r.leftover(&f, 7, len(full.len() + 1)).unwrap(),
            Leftover::Unrelated
        );
        // Torn, then another program appended a message of its own: not ours to cut.
        let mut torn_then_foreign = old.clone();
        torn_then_foreign.extend_from_slice(&head);
        torn_then_foreign.extend_from_slice(b"bo\n\nFrom other@x Fri Jan  2 00:00:00 1970\nhi\n");
        let mut long = full.clone();
        long.resize(torn_then_foreign.len() + 10, b'x');
        let r_long = record(old.len() as u64, long.len() as u64);
        std::fs::write(&path, &torn_then_foreign).unwrap();
        let f = File::open(&path).unwrap();
        assert_eq!(
            r_long
                .leftover(&f, 7, len(torn_then_foreign.len()))
                .unwrap(),
            Leftover::Unrelated
        );
        // The needle found across a read boundary too.
        let mut big = vec![b'x'; 65536 - 3];
        big.extend_from_slice(b"\nFrom y\n");
        std::fs::write(&path, &big).unwrap();
        let f = File::open(&path).unwrap();
        assert!(has_from_line(&f, 0, big.len() as u64).unwrap());
        assert!(!has_from_line(&f, 0, 65536 - 3).unwrap());
        // Rewritten by someone else to a length in our range: the head does not match.
        let mut other = old.clone();
        other.extend_from_slice(b"From y Fri Jan  2 00:00:00 1970\nzz\n");
        std::fs::write(&path, &other).unwrap();
        let f = File::open(&path).unwrap();
        assert_eq!(
            r.leftover(&f, 7, len(other.len())).unwrap(),
            Leftover::Unrelated
        );
    }

    #[test]
    fn journal_file_sits_next_to_the_mbox() {
        let dir = tempfile::tempdir().unwrap();
        let real_dir = std::fs::canonicalize(dir.path()).unwrap();
        std::fs::write(dir.path().join("carol"), b"").unwrap();
        let j = Journal::for_mbox(&dir.path().join("carol"));
        assert_eq!(j.path(), real_dir.join(".carol.mailchute-append"));
        // A symlink to the same mbox shares its journal.
        std::os::unix::fs::symlink("carol", dir.path().join("link")).unwrap();
        assert_eq!(Journal::for_mbox(&dir.path().join("link")).path(), j.path());
        assert_eq!(j.read().unwrap(), None);
        j.write(&record(1, 2)).unwrap();
        assert_eq!(j.read().unwrap(), Some(record(1, 2)));
    }
}
