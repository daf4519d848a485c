//! `mailchute check`: every sink's health check, one line each, so that an operator learns
//! of a wrong IMAP password or an unwritable Maildir before the first message does.
//!
//! The checks are the sinks' own (`serve` runs the same ones at start and after a reload,
//! and logs what fails): IMAP logs in and EXAMINEs the folder; Maildir, MH and mbox check
//! that the path is writable or can be created; smtp/lmtp connect, greet and do the TLS and
//! AUTH a delivery would; exec finds its program; s3 asks HeadBucket. They run at the same
//! time, each within [`CHECK_MAX`], and print in the order of the sink names.

use super::CliError;
use super::serve::{ServeError, hostname_of};
use crate::config::Loaded;
use crate::pipeline::Pipeline;
use crate::sinks::{SinkContext, SinkError};
use crate::spool::commit::Committer;
use std::sync::Arc;
use std::time::Duration;

/// One check may take this long (its own timeouts are usually shorter).
pub const CHECK_MAX: Duration = Duration::from_secs(120);

/// What the command prints, and how many checks failed.
pub struct Report {
    pub text: String,
    pub failed: usize,
    pub total: usize,
}

/// Builds every sink as `serve` does (a config error is 78, as for `config check`) and runs
/// each one's health check.
pub async fn run(loaded: &Loaded) -> Result<Report, CliError> {
    let ctx = SinkContext {
        hostname: hostname_of(&loaded.config),
        committer: Arc::new(Committer::with_method(loaded.config.server.sync_method)),
        base_dir: loaded.base_dir.clone(),
    };
    let pipeline = Pipeline::build(loaded, &ctx).map_err(|e| ServeError {
        message: e.to_string(),
        config: true,
    })?;
    let mut sinks: Vec<_> = pipeline
        .sinks()
        .map(|(name, sink)| (name.clone(), sink.clone()))
        .collect();
    sinks.sort_by(|a, b| a.0.cmp(&b.0));
    let tasks: Vec<_> = sinks
        .into_iter()
        .map(|(name, sink)| {
            let task = tokio::spawn(async move {
                match tokio::time::timeout(CHECK_MAX, sink.healthcheck()).await {
                    Ok(r) => r,
                    Err(_) => Err(SinkError::temporary(
                        "4.4.2",
                        format!("no result within {} s", CHECK_MAX.as_secs()),
                    )),
                }
            });
            (name, task)
        })
        .collect();
    let mut report = Report {
        text: String::new(),
        failed: 0,
        total: tasks.len(),
    };
    if tasks.is_empty() {
        report
            .text
            .push_str(&format!("no sinks in {}\n", loaded.origin()));
    }
    for (name, task) in tasks {
        let result = match task.await {
            Ok(r) => r,
            Err(e) => Err(SinkError::temporary(
                "4.3.0",
                format!("the check failed unexpectedly: {e}"),
            )),
        };
        let kind = loaded
            .config
            .sinks
            .get(&name)
            .map(|t| t.kind.as_str())
            .unwrap_or("");
        let summary = pipeline
            .summaries()
            .sinks
            .get(&name)
            .cloned()
            .unwrap_or_default();
        report.text.push_str(&line(&name, kind, &summary, &result));
        if result.is_err() {
            report.failed += 1;
        }
    }
    Ok(report)
}

/// `ok   sink NAME: SUMMARY (what was checked)` or `FAIL sink NAME: STATUS REASON`.
fn line(name: &str, kind: &str, summary: &str, result: &Result<(), SinkError>) -> String {
    match result {
        Ok(()) => format!("ok   sink {name}: {summary} ({})\n", checked(kind)),
        Err(e) => format!(
            "FAIL sink {name}: {} {}\n",
            e.status,
            e.message.replace(['\r', '\n'], " ")
        ),
    }
}

/// What a passed check of `kind` showed.
fn checked(kind: &str) -> &'static str {
    match kind {
        "imap" => "logged in, folder examined",
        "maildir" | "mh" => "writable",
        "mbox" => "file and its directory writable",
        "smtp" | "lmtp" => "connected, greeted, TLS and AUTH as configured",
        "exec" => "command found",
        "s3" => "bucket exists",
        "discard" => "nothing to check",
        _ => "health check passed",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines() {
        assert_eq!(
            line("a", "maildir", "maildir /m", &Ok(())),
            "ok   sink a: maildir /m (writable)\n"
        );
        assert_eq!(
            line(
                "b",
                "imap",
                "imap me at h:993",
                &Err(SinkError::temporary("4.7.8", "login\r\nrefused"))
            ),
            "FAIL sink b: 4.7.8 login  refused\n"
        );
    }
}
