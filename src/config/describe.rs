//! What `mailchute config check` prints: the config as mailchute understood it.

use super::loaded::{Loaded, Source};
use super::net::{dsn_enabled, is_loopback_listener};
use super::rules::MatchRule;
use super::tagged::TaggedTable;
use super::types::*;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// One line per `[sink.NAME]` and `[filter.NAME]`, by name: what the registries say of the
/// tables they built (the config layer cannot read them).
#[derive(Debug, Clone, Default)]
pub struct Summaries {
    pub sinks: BTreeMap<String, String>,
    pub filters: BTreeMap<String, String>,
}

pub fn describe(loaded: &Loaded, summaries: &Summaries) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail; the results are ignored on purpose.
    let _ = write_description(&mut out, loaded, summaries);
    out
}

fn write_description(out: &mut String, loaded: &Loaded, summaries: &Summaries) -> std::fmt::Result {
    let c = &loaded.config;
    match &loaded.source {
        Source::File(p) => writeln!(out, "config:    {}", p.display())?,
        Source::Embedded => writeln!(
            out,
            "config:    embedded default (no file; paths relative to {})",
            loaded.base_dir.display()
        )?,
    }
    for o in &loaded.overrides {
        writeln!(out, "override:  {}={}", o.var, o.value)?;
    }
    writeln!(
        out,
        "hostname:  {}",
        c.server.hostname.as_deref().unwrap_or("(system)")
    )?;
    writeln!(out, "data dir:  {}", c.server.data_dir.display())?;
    let sync = match c.server.sync_method {
        super::SyncMethod::Fsync => "fsync per file and directory, concurrent",
        super::SyncMethod::Syncfs => "shared syncfs rounds per filesystem",
    };
    writeln!(out, "durable:   {sync}")?;
    if let Some(user) = &c.server.user {
        let group = c.server.group.as_deref().unwrap_or("(user's group)");
        writeln!(out, "run as:    {user}:{group}")?;
    }
    let q = &c.queue;
    writeln!(
        out,
        "queue:     {} workers, retry after {} doubling up to {}, dead after {}",
        q.workers, q.backoff_initial, q.backoff_max, q.max_lifetime
    )?;
    if q.dsn_sinks.is_empty() {
        writeln!(
            out,
            "bounces:   through the routes (a sender no route covers gets none; the message stays in dead/)"
        )?;
    } else {
        writeln!(out, "bounces:   to sinks {}", q.dsn_sinks.join(", "))?;
    }

    writeln!(out)?;
    if c.listeners.is_empty() {
        writeln!(
            out,
            "listeners: none (deliver / sendmail only; serve has nothing to listen on)"
        )?;
    } else {
        writeln!(out, "listeners:")?;
    }
    for l in &c.listeners {
        write_listener(out, l)?;
    }

    writeln!(out)?;
    writeln!(out, "routes, in the order a recipient is matched:")?;
    let mut entries: Vec<(u8, usize, &str, &RouteConfig)> = Vec::new();
    for (i, r) in c.routes.iter().enumerate() {
        for m in &r.matches {
            let rank = MatchRule::parse(m).map(|m| m.rank()).unwrap_or(u8::MAX);
            entries.push((rank, i, m, r));
        }
    }
    // Stable: regexes keep file order within their rank.
    entries.sort_by_key(|(rank, ..)| *rank);
    let width = entries
        .iter()
        .map(|(_, _, m, _)| m.len())
        .max()
        .unwrap_or(0);
    for (_, i, m, r) in &entries {
        let name = r.name.clone().unwrap_or_else(|| format!("route[{i}]"));
        let filters = if r.filters.is_empty() {
            String::new()
        } else {
            format!(" -> filters {}", r.filters.join(", "))
        };
        writeln!(
            out,
            "  {m:<width$}  -> {name}{filters} -> {}",
            r.sinks.join(", ")
        )?;
    }
    if entries.is_empty() {
        writeln!(out, "  none: every recipient is refused")?;
    }

    write_tagged(out, "sinks", &c.sinks, &summaries.sinks)?;
    if !c.filters.is_empty() {
        write_tagged(out, "filters", &c.filters, &summaries.filters)?;
    }
    Ok(())
}

/// `[sink.*]` or `[filter.*]`: each with its registry's summary, or its type when there is
/// none (a config described without building it).
fn write_tagged(
    out: &mut String,
    title: &str,
    tables: &BTreeMap<String, TaggedTable>,
    summaries: &BTreeMap<String, String>,
) -> std::fmt::Result {
    writeln!(out)?;
    writeln!(out, "{title}:")?;
    for (name, t) in tables {
        let summary = summaries.get(name).unwrap_or(&t.kind);
        writeln!(out, "  {name}: {summary}")?;
    }
    if tables.is_empty() {
        writeln!(out, "  none")?;
    }
    Ok(())
}

fn write_listener(out: &mut String, l: &ListenerConfig) -> std::fmt::Result {
    let protocol = l.protocol.as_str();
    let mode = l.mode.as_str();
    let tls = match l.tls {
        TlsMode::None => "no tls".to_string(),
        TlsMode::Starttls if l.require_tls => "starttls (required)".to_string(),
        TlsMode::Starttls => "starttls".to_string(),
        TlsMode::Implicit => "implicit tls".to_string(),
    };
    writeln!(
        out,
        "  {}: {} {protocol}, {mode}, {tls}",
        l.name.as_deref().unwrap_or(&l.address),
        l.address
    )?;
    if let (Some(cert), Some(key)) = (&l.cert, &l.key) {
        writeln!(out, "    cert {} key {}", cert.display(), key.display())?;
    }
    let limit = |s: super::Size| match s.limit() {
        Some(_) => s.to_string(),
        None => "unlimited".to_string(),
    };
    writeln!(
        out,
        "    limits: message {}, {} recipients, line {}, {} connections ({} per IP), \
         {} errors; timeouts: command {}, data {}",
        limit(l.max_message_size),
        l.max_recipients,
        limit(l.max_line_length),
        l.max_connections,
        l.max_connections_per_ip,
        l.max_errors,
        l.command_timeout,
        l.data_timeout
    )?;
    let who = if !l.allow_ips.is_empty() {
        format!("only {}", l.allow_ips.join(", "))
    } else if is_loopback_listener(l) {
        "this host only".to_string()
    } else if l.open {
        "anyone (open = true)".to_string()
    } else {
        "anyone, for the routed addresses".to_string()
    };
    writeln!(out, "    clients: {who}")?;
    let trusted = if l.trusted.is_empty() {
        "nobody".to_string()
    } else {
        l.trusted.join(", ")
    };
    writeln!(
        out,
        "    trusted for XFORWARD/PROXY: {trusted}; PROXY protocol {}",
        if l.proxy_protocol { "required" } else { "off" }
    )?;
    if !l.sender_allow.is_empty() {
        writeln!(out, "    senders allowed: /{}/", l.sender_allow)?;
    }
    if !l.recipient_deny.is_empty() {
        writeln!(out, "    recipients denied: /{}/", l.recipient_deny)?;
    }
    if l.address.starts_with("unix:") {
        writeln!(
            out,
            "    socket mode {} owner {} group {}",
            l.socket_mode.as_deref().unwrap_or("0666"),
            l.socket_owner.as_deref().unwrap_or("(run user)"),
            l.socket_group.as_deref().unwrap_or("(run group)")
        )?;
    }
    let dsn = dsn_enabled(l);
    writeln!(
        out,
        "    bounce (DSN) when a message dies: {}{}",
        if dsn { "yes" } else { "no" },
        if l.dsn.is_none() { " (default)" } else { "" }
    )
}
