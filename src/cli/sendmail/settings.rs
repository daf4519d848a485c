//! What `sendmail` reads of the config, and nothing more (DESIGN.md "Contract details"):
//! where the daemon listens (the first `[[listener]]` with a `unix:` address and
//! `protocol = "lmtp"`), its `max_message_size`, `[server] data_dir` (for `pickup/`),
//! `hostname` and `default_domain`. The file is read as plain TOML, with the
//! `MAILCHUTE_…__…` overrides applied, and is not validated as a whole: any local user may
//! submit, and a check of the rest (a TLS key's file, a users file) would fail for users
//! who cannot read those. When the file cannot be read at all, the packaged locations are
//! used ([`FALLBACK_SOCKET`], [`FALLBACK_PICKUP`]).

use crate::config::{self, Size};
use std::path::{Path, PathBuf};
use toml::{Table, Value};

pub const FALLBACK_SOCKET: &str = "/run/mailchute/mailchute.sock";
pub const FALLBACK_PICKUP: &str = "/var/spool/mailchute/pickup";
/// A listener's defaults (config/types.rs), for a config that does not say.
const DEFAULT_MAX_LINE_LENGTH: u64 = 1024 * 1024;
const DEFAULT_MAX_RECIPIENTS: usize = 1000;

#[derive(Debug, Clone)]
pub struct Settings {
    /// The daemon's LMTP socket; `None` when the config has no unix LMTP listener (the
    /// message then goes to pickup/ straight away).
    pub socket: Option<PathBuf>,
    pub pickup: PathBuf,
    /// Message-ID's domain, and the default domain's default.
    pub hostname: String,
    /// What addresses without a domain get.
    pub domain: String,
    /// The listener's `max_message_size` (`None` = unlimited).
    pub max_size: Option<u64>,
    /// The listener's `max_line_length` (`None` = unlimited) and `max_recipients`
    /// (0 = unlimited): what `-bs` enforces on its client, as the listener would.
    pub max_line_length: Option<u64>,
    pub max_recipients: usize,
    /// Where these came from, for `-v`.
    pub source: String,
    /// Why the config was not used, for stderr.
    pub problem: Option<String>,
}

/// `explicit` (`-C`/`-c`), else `$MAILCHUTE_CONFIG`, else the default path; a missing
/// default file or an unreadable one gives the fallbacks.
pub fn read(explicit: Option<&Path>) -> Settings {
    let from_env = std::env::var_os("MAILCHUTE_CONFIG")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from);
    let path = explicit
        .map(Path::to_path_buf)
        .or(from_env)
        .unwrap_or_else(|| PathBuf::from(config::DEFAULT_PATH));
    let env = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect();
    match from_file(&path, env) {
        Ok(s) => s,
        Err(problem) => {
            let mut s = fallback();
            // A packaged host without a config file is normal; anything else is said.
            let quiet = explicit.is_none()
                && std::env::var_os("MAILCHUTE_CONFIG").is_none()
                && !path.exists();
            s.problem = (!quiet).then_some(problem);
            s
        }
    }
}

fn fallback() -> Settings {
    let hostname = config::system_hostname().unwrap_or_else(|| "localhost".into());
    Settings {
        socket: Some(PathBuf::from(FALLBACK_SOCKET)),
        pickup: PathBuf::from(FALLBACK_PICKUP),
        domain: hostname.clone(),
        hostname,
        max_size: None,
        max_line_length: Some(DEFAULT_MAX_LINE_LENGTH),
        max_recipients: DEFAULT_MAX_RECIPIENTS,
        source: "built-in locations".into(),
        problem: None,
    }
}

fn from_file(path: &Path, env: Vec<(String, String)>) -> Result<Settings, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let base = std::path::absolute(path)
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| PathBuf::from("/"));
    from_text(&text, &path.display().to_string(), &base, env)
}

/// [`read`] for given text; `base` resolves relative paths, as the loader does.
pub fn from_text(
    text: &str,
    origin: &str,
    base: &Path,
    env: Vec<(String, String)>,
) -> Result<Settings, String> {
    let bad = |m: String| format!("{origin}: {m}");
    let mut table: Table = toml::from_str(text).map_err(|e| bad(e.message().to_string()))?;
    config::apply_env_overrides(&mut table, env).map_err(|e| bad(e.to_string()))?;
    let server = table.get("server").and_then(Value::as_table);
    let text_of = |key: &str| -> Result<Option<String>, String> {
        match server.and_then(|s| s.get(key)) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(bad(format!("[server] {key}: expected a string"))),
        }
    };
    let hostname = match text_of("hostname")? {
        Some(h) => h,
        None => config::system_hostname().unwrap_or_else(|| "localhost".into()),
    };
    let domain = match text_of("default_domain")? {
        Some(d) if config::valid_default_domain(&d) => d,
        Some(d) => {
            return Err(bad(format!(
                "[server] default_domain {d:?}: expected a domain"
            )));
        }
        None => hostname.clone(),
    };
    let data_dir = text_of("data_dir")?.unwrap_or_else(|| "./mailchute-data".into());
    let pickup = config::paths::join(base, Path::new(&data_dir)).join("pickup");
    let mut socket = None;
    let mut max_size = None;
    let mut max_line_length = Some(DEFAULT_MAX_LINE_LENGTH);
    let mut max_recipients = DEFAULT_MAX_RECIPIENTS;
    let listeners = table.get("listener").and_then(Value::as_array);
    for l in listeners.into_iter().flatten().filter_map(Value::as_table) {
        let address = l.get("address").and_then(Value::as_str).unwrap_or("");
        let lmtp = l.get("protocol").and_then(Value::as_str) == Some("lmtp");
        let Some(p) = address.strip_prefix("unix:").filter(|p| !p.is_empty()) else {
            continue;
        };
        if !lmtp {
            continue;
        }
        socket = Some(config::paths::join(base, Path::new(p)));
        max_size = match l.get("max_message_size") {
            None => Some(50 * 1024 * 1024),
            Some(v) => size_of(v)
                .map_err(|m| bad(format!("listener {address}: max_message_size: {m}")))?
                .limit(),
        };
        if let Some(v) = l.get("max_line_length") {
            max_line_length = size_of(v)
                .map_err(|m| bad(format!("listener {address}: max_line_length: {m}")))?
                .limit();
        }
        max_recipients = match l.get("max_recipients") {
            None => DEFAULT_MAX_RECIPIENTS,
            Some(Value::Integer(n)) if *n >= 0 => *n as usize,
            Some(_) => {
                return Err(bad(format!(
                    "listener {address}: max_recipients: expected a number"
                )));
            }
        };
        break;
    }
    Ok(Settings {
        socket,
        pickup,
        hostname,
        domain,
        max_size,
        max_line_length,
        max_recipients,
        source: origin.to_string(),
        problem: None,
    })
}

fn size_of(v: &Value) -> Result<Size, String> {
    match v {
        Value::String(s) => config::units::parse_size(s),
        Value::Integer(n) if *n >= 0 => Ok(Size(*n as u64)),
        _ => Err("expected a size like \"50M\"".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_unix_lmtp_listener_and_data_dir_only() {
        let text = r#"
[server]
hostname = "h.test"
data_dir = "data"
default_domain = "example.org"
[[listener]]
address = "127.0.0.1:25"
[[listener]]
address = "unix:/run/x/smtp.sock"
[[listener]]
address = "unix:sock/lmtp.sock"
protocol = "lmtp"
max_message_size = "1M"
users = "/unreadable/users.toml"
[sink.x]
type = "whatever"
"#;
        let s = from_text(text, "t.toml", Path::new("/etc/mc"), Vec::new()).unwrap();
        assert_eq!(s.socket, Some(PathBuf::from("/etc/mc/sock/lmtp.sock")));
        assert_eq!(s.pickup, PathBuf::from("/etc/mc/data/pickup"));
        assert_eq!(s.max_size, Some(1024 * 1024));
        assert_eq!(
            (s.max_line_length, s.max_recipients),
            (Some(1024 * 1024), 1000)
        );
        assert_eq!(
            (s.hostname.as_str(), s.domain.as_str()),
            ("h.test", "example.org")
        );
        let env = vec![("MAILCHUTE_SERVER__DATA_DIR".into(), "/srv/m".into())];
        let s = from_text(text, "t.toml", Path::new("/etc/mc"), env).unwrap();
        assert_eq!(s.pickup, PathBuf::from("/srv/m/pickup"));
    }

    #[test]
    fn no_unix_listener_and_bad_values() {
        let s = from_text(
            "[server]\nhostname = \"h\"\n",
            "t",
            Path::new("/c"),
            Vec::new(),
        )
        .unwrap();
        assert_eq!((s.socket, s.domain.as_str()), (None, "h"));
        assert_eq!(s.pickup, PathBuf::from("/c/mailchute-data/pickup"));
        assert!(
            from_text(
                "[server]\ndefault_domain = \"a@b\"\n",
                "t",
                Path::new("/"),
                Vec::new()
            )
            .is_err()
        );
        assert!(from_text("not toml [", "t", Path::new("/"), Vec::new()).is_err());
    }
}
