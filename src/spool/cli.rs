//! `mailchute queue list|show|retry|delete`: works on `data_dir` directly, while the daemon
//! may be running. The daemon's rescan notices retries and deletions within seconds.
//!
//! Changes are written with fsync here (file, then directory): the CLI has no committer.

use super::commit::fsync_dir;
use super::dsn;
use super::error::SpoolError;
use super::store::{Layout, QueueEntry, check_id, keep_owner, now_millis};
use crate::envelope::now_unix;
use std::fmt::Write as _;
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;

/// One line per queued message, oldest first, or "queue is empty".
pub fn list(data_dir: &Path) -> Result<String, SpoolError> {
    let layout = Layout::new(data_dir);
    if !layout.queue.exists() {
        return Ok(format!(
            "queue is empty (no spool at {})\n",
            layout.queue.display()
        ));
    }
    let now_ms = now_millis();
    let now = now_unix();
    let mut rows = vec![[
        "ID".to_string(),
        "AGE".into(),
        "SIZE".into(),
        "SENDER".into(),
        "RECIPIENTS".into(),
        "ATTEMPTS".into(),
        "NEXT".into(),
        "LAST ERROR".into(),
    ]];
    let mut unreadable = Vec::new();
    for id in layout.sidecar_ids()? {
        let entry = match layout.load(&id) {
            Ok(e) => e,
            Err(e) if e.is_not_queued() => continue,
            Err(e) => {
                unreadable.push(format!("{id}: {e}"));
                continue;
            }
        };
        let rcpts: Vec<&str> = entry.pending_rcpts().collect();
        let recipients = match rcpts.as_slice() {
            [] => "0".to_string(),
            [one] => format!("1 {one}"),
            [first, rest @ ..] => format!("{} {first} (+{})", rest.len() + 1, rest.len()),
        };
        let next = if layout.retry_request(&id).exists() {
            "now (retry requested)".to_string()
        } else if entry.next_attempt <= now_ms {
            "now".to_string()
        } else {
            span((entry.next_attempt - now_ms) / 1000)
        };
        rows.push([
            id,
            span(now - entry.envelope.received_at),
            size(entry.size),
            sender(&entry.envelope.mail_from),
            recipients,
            entry.attempts.to_string(),
            next,
            entry
                .last_error
                .as_deref()
                .map(|e| truncate(&dsn::one_line(e, true), 60))
                .unwrap_or_default(),
        ]);
    }
    let mut out = String::new();
    if rows.len() == 1 {
        out.push_str("queue is empty\n");
    } else {
        let mut widths = [0usize; 8];
        for row in &rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        for row in &rows {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                if i + 1 == row.len() {
                    line.push_str(cell);
                } else {
                    let _ = write!(line, "{cell:<width$}  ", width = widths[i]);
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        let _ = writeln!(out, "{} message(s)", rows.len() - 1);
    }
    for problem in unreadable {
        let _ = writeln!(out, "unreadable: {problem}");
    }
    Ok(out)
}

/// Everything about one queued message: envelope, pending units, failures, headers.
pub fn show(data_dir: &Path, id: &str) -> Result<String, SpoolError> {
    let layout = Layout::new(data_dir);
    let entry = layout.load(id).map_err(|e| or_dead(&layout, id, e))?;
    let env = &entry.envelope;
    let now_ms = now_millis();
    let mut o = String::new();
    let _ = writeln!(o, "id:          {}", env.id);
    let _ = writeln!(o, "sender:      {}", sender(&env.mail_from));
    let _ = writeln!(o, "recipients:  {}", env.rcpts.join(", "));
    let _ = writeln!(
        o,
        "received:    {} ({} ago) by {}",
        dsn::rfc2822_date(env.received_at),
        span(now_unix() - env.received_at),
        env.listener
    );
    let c = &env.client;
    let _ = writeln!(
        o,
        "client:      {} helo={} protocol={}{}{}",
        c.addr.as_deref().unwrap_or("local"),
        c.helo.as_deref().unwrap_or("-"),
        c.protocol,
        c.tls
            .as_deref()
            .map(|t| format!(" tls={t}"))
            .unwrap_or_default(),
        c.auth_user
            .as_deref()
            .map(|u| format!(" auth={u}"))
            .unwrap_or_default(),
    );
    let _ = writeln!(o, "size:        {} bytes", entry.size);
    let _ = writeln!(o, "attempts:    {}", entry.attempts);
    let next = if entry.next_attempt <= now_ms {
        "now".to_string()
    } else {
        format!("in {}", span((entry.next_attempt - now_ms) / 1000))
    };
    let _ = writeln!(o, "next:        {next}");
    if let Some(e) = &entry.last_error {
        let _ = writeln!(o, "last error:  {}", dsn::one_line(e, true));
    }
    let _ = writeln!(o, "dsn:         {}", if entry.dsn { "yes" } else { "no" });
    let _ = writeln!(o, "pending:");
    for unit in &entry.pending {
        let _ = writeln!(
            o,
            "  {} route={} sink={}: {}",
            unit.unit_id,
            unit.route,
            unit.sink,
            unit.rcpts.join(", ")
        );
        if let Some(e) = &unit.last_error {
            let _ = writeln!(o, "    last error: {}", dsn::one_line(e, true));
        }
    }
    if !entry.failed.is_empty() {
        let _ = writeln!(o, "failed:");
        for f in &entry.failed {
            let _ = writeln!(
                o,
                "  {} sink={}: {} {}",
                f.rcpt,
                f.sink,
                f.status,
                dsn::one_line(&f.message, true)
            );
        }
    }
    let _ = writeln!(o, "headers:");
    match dsn::read_headers(&layout.message(id), dsn::HEADERS_LIMIT) {
        Ok(h) => {
            for line in String::from_utf8_lossy(&h).lines() {
                let _ = writeln!(o, "  {line}");
            }
        }
        Err(e) => {
            let _ = writeln!(o, "  (cannot read {}: {e})", layout.message(id).display());
        }
    }
    Ok(o)
}

/// Makes one message (or `all`) due now. The daemon picks the change up at its next rescan.
pub fn retry(data_dir: &Path, id: &str) -> Result<String, SpoolError> {
    let layout = Layout::new(data_dir);
    if id == "all" {
        if !layout.queue.exists() {
            return Ok("queue is empty\n".into());
        }
        let mut n = 0usize;
        let mut problems = String::new();
        for id in layout.sidecar_ids()? {
            match request_retry(&layout, &id) {
                Ok(()) => n += 1,
                Err(e) if e.is_not_queued() => {}
                Err(e) => {
                    let _ = writeln!(problems, "{id}: {e}");
                }
            }
        }
        if n > 0 {
            fsync_dir(&layout.retry).map_err(|e| SpoolError::io("fsync", &layout.retry, e))?;
        }
        return Ok(format!(
            "{n} message(s) to be retried now (a running daemon starts within seconds)\n{problems}"
        ));
    }
    check_id(id)?;
    request_retry(&layout, id).map_err(|e| or_dead(&layout, id, e))?;
    fsync_dir(&layout.retry).map_err(|e| SpoolError::io("fsync", &layout.retry, e))?;
    Ok(format!(
        "{id} to be retried now (a running daemon starts within seconds; one in the middle of an attempt retries right after it)\n"
    ))
}

/// Leaves a request for the daemon rather than rewriting the sidecar: the daemon owns the
/// sidecar, and a copy read here could be stale by the time it was written back (bringing
/// back recipients delivered meanwhile).
fn request_retry(layout: &Layout, id: &str) -> Result<(), SpoolError> {
    if !layout.sidecar(id).exists() || !layout.message(id).exists() {
        return Err(SpoolError::NotQueued {
            id: id.to_string(),
            dir: layout.queue.clone(),
        });
    }
    if !layout.retry.exists() {
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&layout.retry)
            .or_else(|e| match e.kind() {
                io::ErrorKind::AlreadyExists => Ok(()),
                _ => Err(e),
            })
            .map_err(|e| SpoolError::io("create directory", &layout.retry, e))?;
        keep_owner(&layout.retry, &layout.retry);
    }
    let request = layout.retry_request(id);
    std::fs::write(&request, b"").map_err(|e| SpoolError::io("write", &request, e))?;
    keep_owner(&request, &request);
    Ok(())
}

/// Removes a queued message without delivering it.
pub fn delete(data_dir: &Path, id: &str) -> Result<String, SpoolError> {
    check_id(id)?;
    let layout = Layout::new(data_dir);
    let entry = layout.load(id);
    let data = layout.message(id);
    let sidecar = layout.sidecar(id);
    let mut removed = Vec::new();
    // Data first: the daemon treats a sidecar without data as deleted, never the reverse.
    for (path, what) in [(&data, "message"), (&sidecar, "sidecar")] {
        match std::fs::remove_file(path) {
            Ok(()) => removed.push(what),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(SpoolError::io("remove", path, e)),
        }
    }
    if removed.is_empty() {
        let e = SpoolError::NotQueued {
            id: id.to_string(),
            dir: layout.queue.clone(),
        };
        return Err(or_dead(&layout, id, e));
    }
    fsync_dir(&layout.queue).map_err(|e| SpoolError::io("fsync", &layout.queue, e))?;
    Ok(match entry {
        Ok(entry) => describe_deleted(&entry),
        Err(_) => format!("deleted {id}: {}\n", removed.join(" and ")),
    })
}

/// A message that is not queued may have died: say so, with the reason its sidecar in
/// `dead/` records, instead of a bare "no message".
fn or_dead(layout: &Layout, id: &str, e: SpoolError) -> SpoolError {
    if !e.is_not_queued() || check_id(id).is_err() {
        return e;
    }
    let sidecar = layout.dead.join(format!("{id}.json"));
    let reason = match std::fs::read(&sidecar) {
        Ok(bytes) => serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| v.get("dead_reason")?.as_str().map(str::to_string))
            .unwrap_or_else(|| "not recorded".into()),
        Err(err) if err.kind() == io::ErrorKind::NotFound => return e,
        Err(err) => format!("unknown (cannot read it: {err})"),
    };
    SpoolError::DeadLetter {
        id: id.to_string(),
        sidecar,
        reason: dsn::one_line(&reason, true),
    }
}

fn describe_deleted(entry: &QueueEntry) -> String {
    let rcpts: Vec<&str> = entry.pending_rcpts().collect();
    format!(
        "deleted {}: message from {} ({}) for {} pending recipient(s): {}\n",
        entry.envelope.id,
        sender(&entry.envelope.mail_from),
        size(entry.size),
        rcpts.len(),
        rcpts.join(", ")
    )
}

fn sender(mail_from: &str) -> String {
    format!("<{mail_from}>")
}

/// `45s`, `3m`, `2h`, `4d`.
fn span(secs: i64) -> String {
    let s = secs.max(0);
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86400 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}

fn size(bytes: u64) -> String {
    match bytes {
        0..1024 => format!("{bytes}B"),
        1024..1_048_576 => format!("{:.1}K", bytes as f64 / 1024.0),
        _ => format!("{:.1}M", bytes as f64 / 1_048_576.0),
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut t: String = s.chars().take(max.saturating_sub(1)).collect();
    t.push('…');
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dead_letters_are_named_as_such() {
        let dir = tempfile::tempdir().unwrap();
        let dead = dir.path().join("dead");
        std::fs::create_dir_all(&dead).unwrap();
        std::fs::write(
            dead.join("D1.json"),
            br#"{"dead_reason": "expired after 5d:\n 4.4.1 connection refused", "died_at": 1}"#,
        )
        .unwrap();
        let sidecar = dead.join("D1.json").display().to_string();
        for e in [
            show(dir.path(), "D1").unwrap_err(),
            retry(dir.path(), "D1").unwrap_err(),
            delete(dir.path(), "D1").unwrap_err(),
        ] {
            let m = e.to_string();
            assert!(m.starts_with("D1 is a dead letter"), "{m}");
            assert!(m.contains(&sidecar), "{m}");
            assert!(
                m.contains("reason: expired after 5d: 4.4.1 connection refused"),
                "{m}"
            );
        }
        // Neither queued nor dead: the plain answer.
        let m = show(dir.path(), "NOSUCH").unwrap_err().to_string();
        assert!(m.starts_with("no message NOSUCH in the queue"), "{m}");
    }
}
