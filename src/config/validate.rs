//! The rules a config must keep beyond its shape. Each error names the key and says what
//! was expected, or what to do instead.

use super::error::{ConfigError, Locator, Seg, key};
use super::loaded::Loaded;
use super::net::{IpList, ListenAddr, is_loopback_listener};
use super::rules::MatchRule;
use super::types::*;
use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use toml::{Table, Value};

const NOT_YET: &str = "is not available in this version yet";

/// Checks a loaded config again, e.g. after code changed it; errors are placed in the
/// file text that was loaded.
pub fn validate(loaded: &Loaded) -> Result<(), ConfigError> {
    check(&loaded.config, &loaded.locator())
}

/// What is checked on the raw table (overrides applied), before it is typed.
pub(crate) fn precheck(table: &Table, loc: &Locator) -> Result<(), ConfigError> {
    precheck_unix_listeners(table, loc)?;
    precheck_tagged(table, "sink", loc)?;
    precheck_tagged(table, "filter", loc)
}

/// Listener keys that only mean something for TCP: a unix client has no IP address to
/// allow, trust or count, and no load balancer in front to send a PROXY header.
const TCP_ONLY_KEYS: [&str; 4] = [
    "allow_ips",
    "trusted",
    "max_connections_per_ip",
    "proxy_protocol",
];

/// Refuses [`TCP_ONLY_KEYS`] on a unix listener. Checked on the raw table (overrides
/// applied) because `trusted` and the others have defaults: only a key the operator wrote
/// (or set from the environment) is a mistake, and the typed config cannot tell.
fn precheck_unix_listeners(table: &Table, loc: &Locator) -> Result<(), ConfigError> {
    let Some(Value::Array(listeners)) = table.get("listener") else {
        return Ok(());
    };
    for (i, l) in listeners.iter().enumerate() {
        let Some(fields) = l.as_table() else {
            continue;
        };
        let Some(address) = fields.get("address").and_then(Value::as_str) else {
            continue;
        };
        if !address.starts_with("unix:") {
            continue;
        }
        if let Some(k) = TCP_ONLY_KEYS.iter().find(|k| fields.contains_key(**k)) {
            return Err(loc.error(
                &[key("listener"), Seg::Index(i), key(k)],
                format!(
                    "applies to TCP listeners only, and this one is on a unix socket \
                     ({address}): it would have no effect; remove it"
                ),
            ));
        }
    }
    Ok(())
}

/// `[sink.NAME]` and `[filter.NAME]` are tables whose `type`, when written, is a string;
/// checked on the raw table so that the message names the key. Whether it is there and
/// which types exist is the registries' to say: the config layer knows none of them.
fn precheck_tagged(table: &Table, section: &str, loc: &Locator) -> Result<(), ConfigError> {
    let Some(tables) = table.get(section) else {
        return Ok(());
    };
    let Value::Table(tables) = tables else {
        return Err(loc.error(
            &[key(section)],
            format!("expected tables like [{section}.NAME]"),
        ));
    };
    for (name, t) in tables {
        let at = [key(section), key(name)];
        let Value::Table(fields) = t else {
            return Err(loc.error(&at, format!("expected a table [{section}.{name}]")));
        };
        match fields.get("type") {
            // A missing `type` is the registry's to refuse: it knows which types exist.
            None | Some(Value::String(_)) => {}
            Some(other) => {
                return Err(loc.error(
                    &[key(section), key(name), key("type")],
                    format!("expected a string, not {}", super::error::a_type(other)),
                ));
            }
        }
    }
    Ok(())
}

pub(crate) fn check(config: &Config, loc: &Locator) -> Result<(), ConfigError> {
    check_server(&config.server, loc)?;
    check_queue(&config.queue, loc)?;
    if config.http.is_some() {
        return Err(loc.error(&[key("http")], format!("[http] {NOT_YET}")));
    }
    check_routes(config, loc)?;
    check_dsn_sinks(config, loc)?;
    check_listeners(config, loc)
}

fn check_dsn_sinks(config: &Config, loc: &Locator) -> Result<(), ConfigError> {
    for (i, sink) in config.queue.dsn_sinks.iter().enumerate() {
        if !config.sinks.contains_key(sink) {
            let defined: Vec<&str> = config.sinks.keys().map(String::as_str).collect();
            return Err(loc.error(
                &[key("queue"), key("dsn_sinks"), Seg::Index(i)],
                format!(
                    "sink \"{sink}\" is not defined (defined: {})",
                    if defined.is_empty() {
                        "none".to_string()
                    } else {
                        defined.join(", ")
                    }
                ),
            ));
        }
    }
    Ok(())
}

fn check_server(s: &ServerConfig, loc: &Locator) -> Result<(), ConfigError> {
    if let Some(h) = &s.hostname
        && (h.is_empty() || h.chars().any(|c| c.is_whitespace() || c.is_control()))
    {
        return Err(loc.error(
            &[key("server"), key("hostname")],
            format!("{h:?}: expected a host name like \"mx.example.org\""),
        ));
    }
    if let Some(d) = &s.default_domain
        && !crate::config::valid_default_domain(d)
    {
        return Err(loc.error(
            &[key("server"), key("default_domain")],
            format!("{d:?}: expected a domain like \"example.org\" (no @, no spaces)"),
        ));
    }
    Ok(())
}

/// `[server] default_domain`: what `sendmail` appends after an `@`.
pub fn valid_default_domain(d: &str) -> bool {
    !d.is_empty()
        && !d
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || "@<>,;\"()".contains(c))
}

/// Path keys that are written but empty. Runs before relative paths are resolved: joined
/// with the config's directory, `""` would silently become that directory.
pub(crate) fn check_empty_paths(config: &Config, loc: &Locator) -> Result<(), ConfigError> {
    if config.server.data_dir.as_os_str().is_empty() {
        return Err(loc.error(
            &[key("server"), key("data_dir")],
            "is empty: expected a directory like \"/var/lib/mailchute\"",
        ));
    }
    for (i, l) in config.listeners.iter().enumerate() {
        for (k, p) in [("cert", &l.cert), ("key", &l.key), ("users", &l.users)] {
            if p.as_ref().is_some_and(|p| p.as_os_str().is_empty()) {
                return Err(loc.error(
                    &[key("listener"), Seg::Index(i), key(k)],
                    "is empty: expected a file path",
                ));
            }
        }
    }
    Ok(())
}

fn check_queue(q: &QueueConfig, loc: &Locator) -> Result<(), ConfigError> {
    let at = |k: &str| [key("queue"), key(k)];
    if q.backoff_initial.0.is_zero() {
        return Err(loc.error(&at("backoff_initial"), "must be more than 0, e.g. \"1m\""));
    }
    if q.backoff_max < q.backoff_initial {
        return Err(loc.error(
            &at("backoff_max"),
            format!(
                "{} is less than backoff_initial ({}): expected at least that",
                q.backoff_max, q.backoff_initial
            ),
        ));
    }
    if q.max_lifetime.0.is_zero() {
        return Err(loc.error(&at("max_lifetime"), "must be more than 0, e.g. \"5d\""));
    }
    if q.workers == 0 {
        return Err(loc.error(&at("workers"), "must be at least 1"));
    }
    Ok(())
}

fn check_routes(config: &Config, loc: &Locator) -> Result<(), ConfigError> {
    let defined: Vec<&str> = config.sinks.keys().map(String::as_str).collect();
    let mut names: HashMap<&str, usize> = HashMap::new();
    // Non-regex match entries seen so far, so that one that can never win is reported.
    let mut seen: HashMap<String, usize> = HashMap::new();
    let insensitive = config.server.local_part_case == LocalPartCase::Insensitive;
    for (i, r) in config.routes.iter().enumerate() {
        let at = |k: &str| [key("route"), Seg::Index(i), key(k)];
        let label = route_label(config, i);
        if let Some(name) = &r.name
            && let Some(first) = names.insert(name, i)
        {
            return Err(loc.error(
                &at("name"),
                format!("route name \"{name}\" is already used by route[{first}]"),
            ));
        }
        if r.matches.is_empty() {
            return Err(loc.error(
                &at("match"),
                "is empty: expected addresses \"user@example.org\", domains \"@example.org\", \
                 regexes \"/^bounce-.*@/\" or \"*\"",
            ));
        }
        for (j, entry) in r.matches.iter().enumerate() {
            let entry_at = [key("route"), Seg::Index(i), key("match"), Seg::Index(j)];
            let rule = MatchRule::parse(entry).map_err(|m| loc.error(&entry_at, m))?;
            let norm = match rule {
                MatchRule::Exact(a) => {
                    let (local, domain) = a.rsplit_once('@').unwrap_or((&a, ""));
                    let local = if insensitive {
                        local.to_lowercase()
                    } else {
                        local.to_string()
                    };
                    Some(format!("{local}@{}", domain.to_lowercase()))
                }
                MatchRule::Domain(d) => Some(format!("@{}", d.to_lowercase())),
                MatchRule::Any => Some("*".into()),
                MatchRule::Regex(_) => None,
            };
            if let Some(norm) = norm
                && let Some(first) = seen.insert(norm, i)
            {
                return Err(loc.error(
                    &entry_at,
                    format!(
                        "{entry:?} is already matched by {}: this entry could never match",
                        route_label(config, first)
                    ),
                ));
            }
        }
        let mut filters_listed = BTreeSet::new();
        for (j, filter) in r.filters.iter().enumerate() {
            let filter_at = [key("route"), Seg::Index(i), key("filters"), Seg::Index(j)];
            // A filter that ran twice would, say, tag a subject twice; two rules are two
            // `[filter.*]` tables.
            if !filters_listed.insert(filter) {
                return Err(loc.error(
                    &filter_at,
                    format!("{label}: filter \"{filter}\" is listed twice"),
                ));
            }
            if !config.filters.contains_key(filter) {
                let defined: Vec<&str> = config.filters.keys().map(String::as_str).collect();
                let known = if defined.is_empty() {
                    "no [filter.*] tables are defined".to_string()
                } else {
                    format!("defined: {}", defined.join(", "))
                };
                return Err(loc.error(
                    &filter_at,
                    format!("{label}: filter \"{filter}\" is not defined ({known})"),
                ));
            }
        }
        if r.sinks.is_empty() {
            return Err(loc.error(
                &at("sinks"),
                format!(
                    "{label} has no sinks: mail it matches would go nowhere (a route without \
                     sinks is only valid when every listener is a proxy, and proxy listeners \
                     are not available in this version yet)"
                ),
            ));
        }
        let mut listed = BTreeSet::new();
        for (j, sink) in r.sinks.iter().enumerate() {
            let sink_at = [key("route"), Seg::Index(i), key("sinks"), Seg::Index(j)];
            if !config.sinks.contains_key(sink) {
                let known = if defined.is_empty() {
                    "no [sink.*] tables are defined".to_string()
                } else {
                    format!("defined: {}", defined.join(", "))
                };
                return Err(loc.error(
                    &sink_at,
                    format!("{label}: sink \"{sink}\" is not defined ({known})"),
                ));
            }
            if !listed.insert(sink) {
                return Err(loc.error(
                    &sink_at,
                    format!("{label}: sink \"{sink}\" is listed twice"),
                ));
            }
        }
    }
    Ok(())
}

fn route_label(config: &Config, i: usize) -> String {
    match config.routes.get(i).and_then(|r| r.name.as_deref()) {
        Some(name) => format!("route \"{name}\""),
        None => format!("route[{i}]"),
    }
}

/// The route (if any) that takes mail for any recipient: `*`, or a regex that matches an
/// address nobody configured. The open-relay rule is about those.
fn catch_all_route(config: &Config) -> Option<(usize, String)> {
    const PROBE: &str = "nobody-in-particular@unconfigured.example";
    config.routes.iter().enumerate().find_map(|(i, r)| {
        r.matches.iter().find_map(|m| match MatchRule::parse(m) {
            Ok(MatchRule::Any) => Some((i, m.clone())),
            Ok(MatchRule::Regex(re)) if re.is_match(PROBE) => Some((i, m.clone())),
            _ => None,
        })
    })
}

fn check_listeners(config: &Config, loc: &Locator) -> Result<(), ConfigError> {
    let mut names: HashMap<&str, usize> = HashMap::new();
    let mut addresses: HashMap<&str, usize> = HashMap::new();
    for (i, l) in config.listeners.iter().enumerate() {
        let at = |k: &str| [key("listener"), Seg::Index(i), key(k)];
        let whole = [key("listener"), Seg::Index(i)];
        if let Some(name) = &l.name {
            if name.is_empty() {
                return Err(loc.error(&at("name"), "is empty"));
            }
            if let Some(first) = names.insert(name, i) {
                return Err(loc.error(
                    &at("name"),
                    format!("listener name \"{name}\" is already used by listener[{first}]"),
                ));
            }
        }
        let addr = ListenAddr::parse(&l.address).map_err(|m| loc.error(&at("address"), m))?;
        if let Some(first) = addresses.insert(&l.address, i) {
            return Err(loc.error(
                &at("address"),
                format!("{:?} is already used by listener[{first}]", l.address),
            ));
        }
        if l.mode == Mode::Proxy {
            return Err(loc.error(&at("mode"), format!("mode = \"proxy\" {NOT_YET}")));
        }
        if l.upstream.is_some() {
            return Err(loc.error(
                &at("upstream"),
                "is only used with mode = \"proxy\" (where to relay); remove it",
            ));
        }
        check_auth(l, i, loc)?;
        check_tls(l, i, loc)?;
        for (k, list) in [("allow_ips", &l.allow_ips), ("trusted", &l.trusted)] {
            IpList::parse(list).map_err(|e| {
                loc.error(
                    &[key("listener"), Seg::Index(i), key(k), Seg::Index(e.index)],
                    e.to_string(),
                )
            })?;
        }
        for (k, re) in [
            ("sender_allow", &l.sender_allow),
            ("recipient_deny", &l.recipient_deny),
        ] {
            if !re.is_empty() {
                regex::Regex::new(re)
                    .map_err(|e| loc.error(&at(k), format!("invalid regex {re:?}: {e}")))?;
            }
        }
        let is_unix = matches!(addr, ListenAddr::Unix(_));
        if let Some(mode) = &l.socket_mode {
            if !is_unix {
                return Err(loc.error(
                    &at("socket_mode"),
                    "is only for unix listeners (address = \"unix:/path\")",
                ));
            }
            parse_socket_mode(mode).map_err(|m| loc.error(&at("socket_mode"), m))?;
        }
        for (k, v) in [
            ("socket_owner", &l.socket_owner),
            ("socket_group", &l.socket_group),
        ] {
            if v.is_some() && !is_unix {
                return Err(loc.error(
                    &at(k),
                    "is only for unix listeners (address = \"unix:/path\")",
                ));
            }
        }
        if l.max_recipients == 0 {
            return Err(loc.error(&at("max_recipients"), "must be at least 1"));
        }
        for (k, n) in [
            ("max_connections", l.max_connections),
            ("max_connections_per_ip", l.max_connections_per_ip),
            ("max_errors", l.max_errors),
        ] {
            if n == 0 {
                return Err(loc.error(&at(k), "must be at least 1"));
            }
        }
        for (k, d) in [
            ("command_timeout", l.command_timeout),
            ("data_timeout", l.data_timeout),
        ] {
            if d.0.is_zero() {
                return Err(loc.error(&at(k), "must be more than 0, e.g. \"5m\""));
            }
        }
        if !is_loopback_listener(l)
            && l.auth.is_empty()
            && l.allow_ips.is_empty()
            && !l.open
            && let Some((r, entry)) = catch_all_route(config)
        {
            return Err(loc.error(
                &whole,
                format!(
                    "{} is not on loopback, and {} (match {entry:?}) takes mail for any \
                     recipient, from anyone: that is an open relay. Fix it by one of: \
                     limiting who may connect (allow_ips = [\"192.0.2.0/24\"]); \
                     listening on loopback or a unix socket; routing only your own \
                     addresses and domains instead of {entry:?}; requiring SMTP AUTH (auth = \
                     [\"plain\", \"login\"] with users); or, if this is really meant, \
                     open = true",
                    l.address,
                    route_label(config, r)
                ),
            ));
        }
    }
    Ok(())
}

/// SMTP AUTH keys: known mechanisms, users to check them against, and no auth key that
/// would be ignored. The users themselves (secrets from env and files, senders) are
/// checked where the listener is built, which reads them.
fn check_auth(l: &ListenerConfig, i: usize, loc: &Locator) -> Result<(), ConfigError> {
    let at = |k: &str| [key("listener"), Seg::Index(i), key(k)];
    for (j, m) in l.auth.iter().enumerate() {
        if !["plain", "login", "cram-md5"].contains(&m.as_str()) {
            return Err(loc.error(
                &[key("listener"), Seg::Index(i), key("auth"), Seg::Index(j)],
                format!("{m:?}: expected \"plain\", \"login\" or \"cram-md5\""),
            ));
        }
    }
    let has_users = l.users.is_some() || !l.inline_users.is_empty();
    if l.auth.is_empty() {
        for (k, set) in [
            ("users", l.users.is_some()),
            ("user", !l.inline_users.is_empty()),
            ("allow_plaintext_auth", l.allow_plaintext_auth),
            ("require_auth", l.require_auth),
        ] {
            if set {
                return Err(loc.error(
                    &at(k),
                    "needs SMTP AUTH on this listener: set auth = [\"plain\", \"login\"] \
                     (or \"cram-md5\"), or remove it",
                ));
            }
        }
        return Ok(());
    }
    if !has_users {
        return Err(loc.error(
            &at("auth"),
            "needs users to check against: users = \"/etc/mailchute/users.toml\" or \
             [[listener.user]] tables",
        ));
    }
    let only_password_mechs = l.auth.iter().all(|m| m != "cram-md5");
    if l.tls == TlsMode::None && !l.allow_plaintext_auth && only_password_mechs {
        return Err(loc.error(
            &at("auth"),
            "plain and login are offered only inside TLS, and this listener has tls = \"none\": \
             set tls = \"starttls\" or \"implicit\" (with cert and key), or \
             allow_plaintext_auth = true (passwords then cross the network in clear)",
        ));
    }
    Ok(())
}

fn check_tls(l: &ListenerConfig, i: usize, loc: &Locator) -> Result<(), ConfigError> {
    let at = |k: &str| [key("listener"), Seg::Index(i), key(k)];
    if l.require_tls && l.tls == TlsMode::None {
        return Err(loc.error(
            &at("require_tls"),
            "needs tls = \"starttls\" or \"implicit\" (with cert and key)",
        ));
    }
    if let Some(var) = &l.key_passphrase_env {
        // Read when the key is loaded (tls::acceptor); here only its name is checked.
        if l.tls == TlsMode::None {
            return Err(loc.error(
                &at("key_passphrase_env"),
                "is only used with tls = \"starttls\" or \"implicit\" (the passphrase of key)",
            ));
        }
        if var.is_empty() || var.contains(['=', '\0']) {
            return Err(loc.error(
                &at("key_passphrase_env"),
                format!(
                    "{var:?}: expected the name of an environment variable, like \"TLS_KEY_PASS\""
                ),
            ));
        }
    }
    if l.tls == TlsMode::None {
        return Ok(());
    }
    for (k, p) in [("cert", &l.cert), ("key", &l.key)] {
        let Some(p) = p else {
            return Err(loc.error(
                &at(k),
                format!(
                    "is missing: tls = \"{}\" needs cert and key (PEM files)",
                    tls_word(l.tls)
                ),
            ));
        };
        check_file(p).map_err(|m| loc.error(&at(k), m))?;
    }
    Ok(())
}

fn tls_word(t: TlsMode) -> &'static str {
    match t {
        TlsMode::None => "none",
        TlsMode::Starttls => "starttls",
        TlsMode::Implicit => "implicit",
    }
}

fn check_file(p: &Path) -> Result<(), String> {
    match std::fs::metadata(p) {
        Ok(m) if m.is_file() => Ok(()),
        Ok(_) => Err(format!("{}: not a file", p.display())),
        Err(e) => Err(format!("{}: {e}", p.display())),
    }
}

/// `"0770"`, `"770"` or `"0o770"`: permission bits in octal.
pub fn parse_socket_mode(s: &str) -> Result<u32, String> {
    let digits = s.strip_prefix("0o").unwrap_or(s);
    u32::from_str_radix(digits, 8)
        .ok()
        .filter(|m| !digits.is_empty() && *m <= 0o777)
        .ok_or_else(|| {
            format!("{s:?}: expected permission bits in octal, like \"0770\" or \"0660\"")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_modes() {
        assert_eq!(parse_socket_mode("0770"), Ok(0o770));
        assert_eq!(parse_socket_mode("660"), Ok(0o660));
        assert_eq!(parse_socket_mode("0o600"), Ok(0o600));
        assert!(parse_socket_mode("0778").is_err());
        assert!(parse_socket_mode("1777").is_err());
        assert!(parse_socket_mode("").is_err());
    }
}
