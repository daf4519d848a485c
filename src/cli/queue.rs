//! `mailchute queue list|show|retry|delete`: works on `data_dir` directly, while the daemon
//! may be running. The daemon's rescan notices retries and deletions within seconds. What
//! they change on disk is [`crate::spool::admin`]'s; here is what they print.

use super::CliError;
use crate::config::{self, ConfigError};
use crate::envelope::now_unix;
use crate::spool::admin;
use crate::spool::dsn;
use crate::spool::error::SpoolError;
use crate::spool::store::{Layout, QueueEntry, now_millis};
use clap::error::ErrorKind;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct QueueArgs {
    /// Work on the spool under DIR (the config's [server] data_dir) without reading any
    /// config; not with -c.
    #[arg(long, global = true, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: QueueCommand,
}

#[derive(clap::Subcommand)]
enum QueueCommand {
    /// One line per queued message.
    List,
    /// Envelope, pending deliveries and headers of one message.
    Show { id: String },
    /// Retry a message now (ID or "all").
    Retry { id: String },
    /// Remove a message from the queue for good.
    Delete { id: String },
}

/// What the command prints on success, ending in a newline; `config` is the global
/// `-c FILE`.
pub fn run(args: QueueArgs, config: Option<&Path>) -> Result<String, CliError> {
    let data_dir = data_dir(config, args.data_dir)?;
    let mut out = match args.command {
        QueueCommand::List => list(&data_dir)?,
        QueueCommand::Show { id } => show(&data_dir, &id)?,
        QueueCommand::Retry { id } => retry(&data_dir, &id)?,
        QueueCommand::Delete { id } => delete(&data_dir, &id)?,
    };
    if !out.ends_with('\n') {
        out.push('\n');
    }
    Ok(out)
}

/// The spool: `--data-dir DIR` as given, else the config's data_dir. Never the embedded
/// default's: a queue command run in the wrong directory would report an empty queue
/// instead of saying that it found no config.
fn data_dir(explicit: Option<&Path>, given: Option<PathBuf>) -> Result<PathBuf, CliError> {
    if let Some(dir) = given {
        if explicit.is_some() {
            return Err(CliError::usage(
                ErrorKind::ArgumentConflict,
                "give -c FILE or --data-dir DIR, not both",
            ));
        }
        if !dir.is_dir() {
            return Err(CliError::NoInput(format!(
                "--data-dir {}: no such directory",
                dir.display()
            )));
        }
        return Ok(dir);
    }
    let loaded = config::load(explicit, false).map_err(|e| match e {
        ConfigError::NotFound(m) => ConfigError::NotFound(format!(
            "{m}; to read a spool without a config, give --data-dir DIR"
        )),
        other => other,
    })?;
    Ok(loaded.config.server.data_dir)
}

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
    let entry = layout
        .load(id)
        .map_err(|e| admin::or_dead(&layout, id, e))?;
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
        // A unit whose route's filters changed the message delivers that copy.
        let body = match unit.body.as_deref() {
            Some(name) => match entry.bodies.iter().find(|b| b.name == name) {
                Some(b) => format!(" body={name} ({}, filtered)", size(b.size)),
                None => format!(" body={name} (filtered)"),
            },
            None => String::new(),
        };
        let _ = writeln!(
            o,
            "  {} route={} sink={}{body}: {}",
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
    write_headers(&mut o, "headers:", &layout.message(id));
    for b in &entry.bodies {
        let title = format!(
            "headers of filtered body {} ({}):",
            b.name,
            layout.body(id, &b.name).display()
        );
        write_headers(&mut o, &title, &layout.body(id, &b.name));
    }
    Ok(o)
}

fn write_headers(o: &mut String, title: &str, path: &Path) {
    let _ = writeln!(o, "{title}");
    match dsn::read_headers(path, dsn::HEADERS_LIMIT) {
        Ok(h) => {
            for line in String::from_utf8_lossy(&h).lines() {
                let _ = writeln!(o, "  {line}");
            }
        }
        Err(e) => {
            let _ = writeln!(o, "  (cannot read {}: {e})", path.display());
        }
    }
}

/// Makes one message (or `all`) due now. The daemon picks the change up at its next rescan.
pub fn retry(data_dir: &Path, id: &str) -> Result<String, SpoolError> {
    if id == "all" {
        if !Layout::new(data_dir).queue.exists() {
            return Ok("queue is empty\n".into());
        }
        let all = admin::request_retry_all(data_dir)?;
        let mut problems = String::new();
        for (id, e) in all.problems {
            let _ = writeln!(problems, "{id}: {e}");
        }
        return Ok(format!(
            "{} message(s) to be retried now (a running daemon starts within seconds)\n{problems}",
            all.requested
        ));
    }
    admin::request_retry(data_dir, id)?;
    Ok(format!(
        "{id} to be retried now (a running daemon starts within seconds; one in the middle of an attempt retries right after it)\n"
    ))
}

/// Removes a queued message without delivering it.
pub fn delete(data_dir: &Path, id: &str) -> Result<String, SpoolError> {
    let deleted = admin::delete(data_dir, id)?;
    Ok(match deleted.entry {
        Some(entry) => describe_deleted(&entry),
        None => format!("deleted {id}: {}\n", deleted.removed.join(" and ")),
    })
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
    use crate::spool::tests::{enqueue, enqueue_with_body, open};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn show_names_the_filtered_body_a_unit_delivers_and_delete_removes_it() {
        let dir = tempfile::tempdir().unwrap();
        let spool = open(dir.path());
        let entry = enqueue_with_body(&spool).await;
        let out = show(dir.path(), entry.id()).unwrap();
        assert!(out.contains(" body=f1 ("), "{out}");
        assert!(out.contains("headers of filtered body f1"), "{out}");
        assert!(out.contains("Subject: [tagged] hello"), "{out}");
        delete(dir.path(), entry.id()).unwrap();
        assert_eq!(std::fs::read_dir(spool.queue_dir()).unwrap().count(), 0);
    }

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

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn list_show_retry_delete() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path();
        assert!(
            super::list(&data.join("nothing"))
                .unwrap()
                .contains("queue is empty")
        );
        let spool = open(data);
        assert_eq!(super::list(data).unwrap(), "queue is empty\n");
        let a = enqueue(
            &spool,
            "alice@example.org",
            &["bob@example.net", "carol@example.net"],
            true,
        )
        .await;
        let mut b = enqueue(&spool, "", &["dave@example.net"], false).await;
        b.attempts = 3;
        b.next_attempt = crate::spool::store::now_millis() + 1_830_000;
        b.last_error = Some("4.4.1 connection\r\nrefused".into());
        spool.update(&b).await.unwrap();

        let list = super::list(data).unwrap();
        let lines: Vec<&str> = list.lines().collect();
        assert!(lines[0].starts_with("ID"), "{list}");
        assert!(lines[1].starts_with(a.id()), "{list}");
        assert!(
            lines[1].contains("<alice@example.org>") && lines[1].contains("2 bob@example.net (+1)"),
            "{list}"
        );
        assert!(
            lines[2].contains("<>") && lines[2].contains(" 3 ") && lines[2].contains("30m"),
            "{list}"
        );
        assert!(lines[2].ends_with("4.4.1 connection refused"), "{list}");
        assert!(list.contains("2 message(s)"));

        let show = super::show(data, b.id()).unwrap();
        assert!(show.contains("dave@example.net"), "{show}");
        assert!(show.contains("attempts:    3"), "{show}");
        assert!(show.contains("  Subject: hello"), "{show}");
        assert!(
            show.contains(&format!("{}-s route=r sink=s", b.id())),
            "{show}"
        );

        // A request for the daemon; the sidecar (the daemon's) is left as it is.
        assert!(super::retry(data, b.id()).unwrap().contains("retried now"));
        assert_eq!(spool.retry_requests().unwrap(), vec![b.id().to_string()]);
        assert_eq!(spool.load(b.id()).unwrap().attempts, 3);
        assert!(
            super::list(data)
                .unwrap()
                .lines()
                .any(|l| l.starts_with(b.id()) && l.contains("now (retry requested)"))
        );
        assert!(
            super::retry(data, "all")
                .unwrap()
                .starts_with("2 message(s)")
        );
        let mut requested = spool.retry_requests().unwrap();
        requested.sort();
        assert_eq!(requested, vec![a.id().to_string(), b.id().to_string()]);

        let out = super::delete(data, a.id()).unwrap();
        assert!(
            out.contains(&format!("deleted {}", a.id())) && out.contains("2 pending recipient(s)"),
            "{out}"
        );
        assert!(!spool.message_path(a.id()).exists() && !spool.sidecar_path(a.id()).exists());

        for err in [
            super::show(data, "NOPE").unwrap_err(),
            super::retry(data, "NOPE").unwrap_err(),
            super::delete(data, "NOPE").unwrap_err(),
        ] {
            let s = err.to_string();
            assert!(s.contains("NOPE") && s.contains("spool/queue"), "{s}");
        }
        assert!(matches!(
            super::show(data, "../etc"),
            Err(SpoolError::InvalidId { .. })
        ));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_hundred_entries_are_two_hundred_lines() {
        let dir = tempfile::tempdir().unwrap();
        let spool = open(dir.path());
        let mut tasks = Vec::new();
        for i in 0..200 {
            let spool = spool.clone();
            tasks.push(tokio::spawn(async move {
                let rcpt = format!("r{i}@example.net");
                enqueue(&spool, "a@example.org", &[rcpt.as_str()], false).await
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        // The header, one line each, the count.
        assert_eq!(list(dir.path()).unwrap().lines().count(), 202);
    }
}
