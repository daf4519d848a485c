//! Finding, reading and checking the config: file or embedded default, env overrides,
//! relative paths made absolute, defaults filled in, validation.

use super::env::{apply_as_string, apply_env_overrides, parse_value, reapply};
use super::error::{
    ConfigError, Locator, Override, Problem, Seg, line_of, operator_words, path_at, path_string,
    span_of, unknown_field_name,
};
use super::loaded::EMBEDDED_ORIGIN;
pub use super::loaded::{Loaded, Source};
use super::paths::{join, join_unix_address};
use super::tagged::wants_string;
use super::types::*;
use super::validate;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use toml::de::DeTable;
use toml::{Table, Value};

/// The file used when neither `-c` nor `$MAILCHUTE_CONFIG` names one.
pub const DEFAULT_PATH: &str = "/etc/mailchute/mailchute.toml";

/// What `mailchute serve` runs with when there is no config file (DESIGN "Defaults that
/// work with no config"). The `[http]` page on 127.0.0.1:8025 belongs here too once `[http]`
/// exists.
pub const EMBEDDED_TOML: &str = r#"
[[listener]]
name = "default"
address = "127.0.0.1:2525"
protocol = "smtp"
mode = "queued"

[[route]]
name = "default"
match = ["*"]
sinks = ["maildir"]

[sink.maildir]
type = "maildir"
path = "./mailchute-data/Maildir"
"#;

/// The annotated example config (`mailchute config example`).
pub fn example() -> &'static str {
    include_str!("example.toml")
}

/// A minimal local dead-drop config (`mailchute config example --deaddrop`): a group-only
/// LMTP Unix socket, a Maildir per local user, a catch-all, a run user.
pub fn example_deaddrop() -> &'static str {
    include_str!("example-deaddrop.toml")
}

/// Finds and loads the config: `explicit` (`-c FILE`), else `$MAILCHUTE_CONFIG`, else
/// [`DEFAULT_PATH`] if it exists, else the embedded default when `allow_embedded`.
/// `MAILCHUTE_…__…` env overrides are applied in every case.
pub fn load(explicit: Option<&Path>, allow_embedded: bool) -> Result<Loaded, ConfigError> {
    let from_env = std::env::var_os("MAILCHUTE_CONFIG")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from);
    load_with(
        explicit,
        from_env.as_deref(),
        Path::new(DEFAULT_PATH),
        allow_embedded,
        process_env(),
    )
}

/// [`load`] with its inputs spelled out, for tests and callers that have their own env.
pub fn load_with(
    explicit: Option<&Path>,
    env_config: Option<&Path>,
    default_path: &Path,
    allow_embedded: bool,
    env: Vec<(String, String)>,
) -> Result<Loaded, ConfigError> {
    if let Some(path) = explicit.or(env_config) {
        return load_file_with_env(path, env);
    }
    if default_path.exists() {
        return load_file_with_env(default_path, env);
    }
    if allow_embedded {
        let cwd = std::env::current_dir().map_err(ConfigError::Cwd)?;
        return build(
            EMBEDDED_TOML,
            EMBEDDED_ORIGIN.to_string(),
            Source::Embedded,
            &cwd,
            env,
        );
    }
    Err(ConfigError::NotFound(format!(
        "none given with -c FILE, $MAILCHUTE_CONFIG is not set, and {} does not exist",
        default_path.display()
    )))
}

/// Loads one file, with the process's env overrides (what a SIGHUP reload calls).
pub fn load_file(path: &Path) -> Result<Loaded, ConfigError> {
    load_file_with_env(path, process_env())
}

pub fn load_file_with_env(path: &Path, env: Vec<(String, String)>) -> Result<Loaded, ConfigError> {
    let read_err = |source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    };
    let text = std::fs::read_to_string(path).map_err(read_err)?;
    let abs = std::path::absolute(path).map_err(read_err)?;
    let base_dir = match abs.parent() {
        Some(dir) => dir.to_path_buf(),
        None => std::env::current_dir().map_err(ConfigError::Cwd)?,
    };
    build(
        &text,
        path.display().to_string(),
        Source::File(path.to_path_buf()),
        &base_dir,
        env,
    )
}

/// Parses and validates config text without env overrides. `origin_name` names it in
/// errors; relative paths resolve against `base_dir`.
pub fn parse_str(text: &str, origin_name: &str, base_dir: &Path) -> Result<Loaded, ConfigError> {
    parse_str_with_env(text, origin_name, base_dir, Vec::new())
}

/// [`parse_str`] with env overrides taken from `env` (not from the process).
pub fn parse_str_with_env(
    text: &str,
    origin_name: &str,
    base_dir: &Path,
    env: Vec<(String, String)>,
) -> Result<Loaded, ConfigError> {
    build(
        text,
        origin_name.to_string(),
        Source::File(PathBuf::from(origin_name)),
        base_dir,
        env,
    )
}

fn process_env() -> Vec<(String, String)> {
    std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect()
}

fn build(
    text: &str,
    origin: String,
    source: Source,
    base_dir: &Path,
    env: Vec<(String, String)>,
) -> Result<Loaded, ConfigError> {
    let base_dir = if base_dir.is_absolute() {
        base_dir.to_path_buf()
    } else {
        std::env::current_dir()
            .map_err(ConfigError::Cwd)?
            .join(base_dir)
    };
    let file_table: Table = toml::from_str(text).map_err(|e| syntax_error(&origin, text, &e))?;
    let mut table = file_table.clone();
    let overrides = apply_env_overrides(&mut table, env).map_err(|e| {
        ConfigError::Invalid(Box::new(Problem {
            origin: origin.clone(),
            line: None,
            key: String::new(),
            env: Some(e.var),
            message: e.message,
        }))
    })?;
    let mut loc = Locator {
        origin,
        // Lines of the built-in text would mean nothing to an operator.
        text: (source != Source::Embedded).then(|| text.to_string()),
        overrides,
    };
    validate::precheck(&table, &loc)?;
    let mut config = deserialize_config(text, &file_table, table, &mut loc)?;
    validate::check_empty_paths(&config, &loc)?;
    resolve_paths(&mut config, &base_dir);
    fill_defaults(&mut config);
    keep_env_text(&mut config, &loc.overrides);
    validate::check(&config, &loc)?;
    Ok(Loaded {
        config,
        source,
        base_dir,
        overrides: loc.overrides,
        text: loc.text,
    })
}

/// Deserializes the table (file plus overrides). An override whose text reads as TOML of
/// another type where the key expects a string (`MAILCHUTE_SERVER__HOSTNAME=1234`) is taken
/// as the text: the operator cannot be expected to quote a value twice in a shell.
fn deserialize_config(
    text: &str,
    file_table: &Table,
    table: Table,
    loc: &mut Locator,
) -> Result<Config, ConfigError> {
    let first = match Config::deserialize(Value::Table(table)) {
        Ok(config) => return Ok(config),
        Err(e) => e,
    };
    let retried = wants_string(first.message())
        .then(|| overrides_as_strings(file_table, &mut loc.overrides))
        .flatten();
    let result = match retried {
        Some(t) => Config::deserialize(Value::Table(t)),
        None => Err(first),
    };
    result.map_err(|e| deserialize_error(text, file_table, loc, &e))
}

/// Applies the overrides to the file's table one by one; one that makes deserializing fail
/// with [`wants_string`] (and did not find it failing so) and whose value is not a TOML
/// string is applied as its text instead, and marked so. `None` if none was changed.
fn overrides_as_strings(file_table: &Table, overrides: &mut [Override]) -> Option<Table> {
    let fails_wanting_string = |t: &Table| {
        Config::deserialize(Value::Table(t.clone())).is_err_and(|e| wants_string(e.message()))
    };
    let mut t = file_table.clone();
    let mut changed = false;
    for o in overrides.iter_mut() {
        let before = fails_wanting_string(&t);
        let mut next = t.clone();
        reapply(&mut next, o).ok()?;
        let typed = !matches!(parse_value(&o.value), Value::String(_));
        if typed && !before && fails_wanting_string(&next) {
            next = t.clone();
            *o = apply_as_string(&mut next, &o.var, &o.value).ok()?;
            changed = true;
        }
        t = next;
    }
    changed.then_some(t)
}

fn syntax_error(origin: &str, text: &str, e: &toml::de::Error) -> ConfigError {
    let line = e.span().map(|s| line_of(text, s.start));
    ConfigError::Invalid(Box::new(Problem {
        origin: origin.to_string(),
        line,
        key: String::new(),
        env: None,
        message: format!("TOML syntax: {}", e.message().trim_end()),
    }))
}

/// Locates a serde error. Deserializing the text (not the table) gives spans; when the file
/// alone is fine, the env overrides are to blame and we find the first one that breaks it.
fn deserialize_error(
    text: &str,
    file_table: &Table,
    loc: &Locator,
    err: &toml::de::Error,
) -> ConfigError {
    let problem = |line, key: String, env, message: &str| {
        ConfigError::Invalid(Box::new(Problem {
            origin: loc.origin.clone(),
            line,
            key,
            env,
            message: operator_words(message),
        }))
    };
    if let Err(e) = toml::from_str::<Config>(text) {
        return locate_file_error(text, &loc.origin, &e);
    }
    let mut t = file_table.clone();
    for o in &loc.overrides {
        if reapply(&mut t, o).is_err() {
            break;
        }
        if let Err(e) = Config::deserialize(Value::Table(t.clone())) {
            return problem(None, path_string(&o.path), Some(o.var.clone()), e.message());
        }
    }
    problem(None, String::new(), None, err.message())
}

fn locate_file_error(text: &str, origin: &str, e: &toml::de::Error) -> ConfigError {
    let doc = DeTable::parse(text).ok();
    let mut span = e.span();
    let mut message = e.message().to_string();
    let mut path = match (&doc, &span) {
        (Some(d), Some(s)) => path_at(d, s.start),
        _ => Vec::new(),
    };
    if let (Some(d), Some(name)) = (&doc, unknown_field_name(&message).map(str::to_string)) {
        // The key itself is the best line; the message names it, so the path stops at its
        // table.
        if path.last() == Some(&Seg::Key(name.clone())) {
            path.pop();
        } else {
            let mut p = path.clone();
            p.push(Seg::Key(name));
            span = span_of(d, &p).or(span);
        }
    }
    if message.contains("expected a sequence")
        && let [Seg::Key(k)] = path.as_slice()
        && (k == "listener" || k == "route")
    {
        message.push_str(&format!(" (write [[{k}]]: each {k} is an array entry)"));
    }
    ConfigError::Invalid(Box::new(Problem {
        origin: origin.to_string(),
        line: span.map(|s| line_of(text, s.start)),
        key: path_string(&path),
        env: None,
        message: operator_words(&message),
    }))
}

/// DESIGN: relative paths resolve against the config file's directory (under Postfix's
/// `pipe` the cwd is arbitrary). Done here for the config layer's own keys; a sink or filter
/// resolves the paths in its table itself (it is given the directory).
fn resolve_paths(config: &mut Config, base: &Path) {
    config.server.data_dir = join(base, &config.server.data_dir);
    for l in &mut config.listeners {
        join_unix_address(base, &mut l.address);
        for p in [&mut l.cert, &mut l.key, &mut l.users]
            .into_iter()
            .flatten()
        {
            *p = join(base, p);
        }
        for u in &mut l.inline_users {
            for p in [&mut u.bcrypt_file, &mut u.password_file]
                .into_iter()
                .flatten()
            {
                *p = join(base, p);
            }
        }
    }
}

/// Hands each `[sink.NAME]` / `[filter.NAME]` table the text of the overrides that set its
/// keys: only its kind knows whether a key wants a string (see [`super::TaggedTable`]).
fn keep_env_text(config: &mut Config, overrides: &[Override]) {
    for o in overrides {
        let [Seg::Key(section), Seg::Key(name), Seg::Key(k)] = o.path.as_slice() else {
            continue;
        };
        let tables = match section.as_str() {
            "sink" => &mut config.sinks,
            "filter" => &mut config.filters,
            _ => continue,
        };
        if let Some(t) = tables.get_mut(name) {
            t.env_text.insert(k.clone(), o.value.clone());
        }
    }
}

/// Defaults that depend on more than one key or on the system.
fn fill_defaults(config: &mut Config) {
    if config.server.hostname.is_none() {
        config.server.hostname = Some(system_hostname().unwrap_or_else(|| "localhost".into()));
    }
    // A listener without a name is called by its address: that is what an operator
    // recognises in a log line.
    for l in &mut config.listeners {
        if l.name.is_none() {
            l.name = Some(l.address.clone());
        }
    }
    // Routes are numbered as in error messages and env overrides (`route[0]`).
    for (i, r) in config.routes.iter_mut().enumerate() {
        if r.name.is_none() {
            r.name = Some(format!("route-{i}"));
        }
    }
}

/// The system's host name (gethostname(2)), if it has a usable one.
pub fn system_hostname() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for `buf.len()` bytes; gethostname writes at most that.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return None;
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8(buf[..end].to_vec())
        .ok()
        .filter(|h| !h.is_empty())
}

impl Config {
    /// The embedded default (see [`EMBEDDED_TOML`]), with paths resolved against `base_dir`.
    pub fn embedded(base_dir: &Path) -> Result<Config, ConfigError> {
        build(
            EMBEDDED_TOML,
            EMBEDDED_ORIGIN.to_string(),
            Source::Embedded,
            base_dir,
            Vec::new(),
        )
        .map(|l| l.config)
    }
}
