//! Finding, reading and checking the config: file or embedded default, env overrides,
//! relative paths made absolute, defaults filled in, validation.

use super::env::{apply_as_string, apply_env_overrides, parse_value, reapply};
use super::error::{
    ConfigError, Locator, Override, Problem, Seg, line_of, operator_words, path_at, path_string,
    span_of, unknown_field_name,
};
use super::types::*;
use super::validate;
use serde::Deserialize;
use std::path::{Component, Path, PathBuf};
use toml::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};
use toml::{Table, Value};

/// Where the config came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    File(PathBuf),
    /// No file: the built-in default (`serve` only).
    Embedded,
}

/// A loaded, validated config. Every path in `config` is absolute.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    pub source: Source,
    /// The file's directory (or the cwd for the embedded default): what relative paths
    /// were resolved against.
    pub base_dir: PathBuf,
    /// Env overrides that were applied, in the order they were applied.
    pub overrides: Vec<Override>,
    /// The file's text as it was read (none for the embedded default), so that a problem
    /// found after loading (a sink that cannot be built) is placed in the version of the
    /// file that was loaded, not in whatever is on disk by then.
    text: Option<String>,
}

impl Loaded {
    /// How errors and `config check` name the source.
    pub fn origin(&self) -> String {
        match &self.source {
            Source::File(p) => p.display().to_string(),
            Source::Embedded => EMBEDDED_ORIGIN.to_string(),
        }
    }

    /// A config error at `path`, placed as load errors are: file, line of the key (or of
    /// the nearest table that is written), key path, or the env override that set it.
    pub fn error(&self, path: &[Seg], message: impl Into<String>) -> ConfigError {
        self.locator().error(path, message)
    }

    pub(crate) fn locator(&self) -> Locator {
        Locator {
            origin: self.origin(),
            text: self.text.clone(),
            overrides: self.overrides.clone(),
        }
    }
}

/// The file used when neither `-c` nor `$MAILCHUTE_CONFIG` names one.
pub const DEFAULT_PATH: &str = "/etc/mailchute/mailchute.toml";

const EMBEDDED_ORIGIN: &str = "embedded default";

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
    let retried = wants_string(&first)
        .then(|| overrides_as_strings(file_table, &mut loc.overrides))
        .flatten();
    let result = match retried {
        Some(t) => Config::deserialize(Value::Table(t)),
        None => Err(first),
    };
    result.map_err(|e| deserialize_error(text, file_table, loc, &e))
}

/// serde's "invalid type: integer `1234`, expected a string".
fn wants_string(e: &toml::de::Error) -> bool {
    let m = e.message();
    m.starts_with("invalid type") && m.contains("expected a string")
}

/// Applies the overrides to the file's table one by one; one that makes deserializing fail
/// with [`wants_string`] (and did not find it failing so) and whose value is not a TOML
/// string is applied as its text instead, and marked so. `None` if none was changed.
fn overrides_as_strings(file_table: &Table, overrides: &mut [Override]) -> Option<Table> {
    let fails_wanting_string =
        |t: &Table| Config::deserialize(Value::Table(t.clone())).is_err_and(|e| wants_string(&e));
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
    } else if let (Some(d), [Seg::Key(top), Seg::Key(name)]) = (&doc, path.as_slice())
        && top == "sink"
        && let Some(inner) = sink_error(d, name)
    {
        // Errors inside a `type`-tagged sink only point at its header; deserializing the
        // typed table alone points at the key.
        span = inner.span().or(span);
        message = inner.message().to_string();
        path = span.clone().map(|s| path_at(d, s.start)).unwrap_or(path);
        if let Some(field) = unknown_field_name(&message)
            && path.last() == Some(&Seg::Key(field.to_string()))
        {
            path.pop();
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

/// The error from deserializing `[sink.NAME]` as its own type, with spans intact.
fn sink_error<'i>(doc: &Spanned<DeTable<'i>>, name: &str) -> Option<toml::de::Error> {
    fn find<'i>(t: &DeTable<'i>, k: &str) -> Option<Spanned<DeValue<'i>>> {
        t.iter()
            .find(|(tk, _)| tk.get_ref().as_ref() == k)
            .map(|(_, v)| v.clone())
    }
    let sinks = find(doc.get_ref(), "sink")?;
    let DeValue::Table(sinks) = sinks.get_ref() else {
        return None;
    };
    let sink = find(sinks, name)?;
    let DeValue::Table(fields) = sink.get_ref() else {
        return None;
    };
    let kind = find(fields, "type")?.get_ref().as_str()?.to_string();
    let mut rest = DeTable::new();
    for (k, v) in fields.iter() {
        if k.get_ref().as_ref() != "type" {
            rest.insert(k.clone(), v.clone());
        }
    }
    let d = ValueDeserializer::from(Spanned::new(sink.span(), DeValue::Table(rest)));
    match kind.as_str() {
        "maildir" => MaildirConfig::deserialize(d).err(),
        "mh" => MhConfig::deserialize(d).err(),
        "mbox" => MboxConfig::deserialize(d).err(),
        "smtp" | "lmtp" => RelayConfig::deserialize(d).err(),
        "exec" => ExecConfig::deserialize(d).err(),
        "discard" => DiscardConfig::deserialize(d).err(),
        _ => None,
    }
}

/// `base/p` for a relative `p`, `p` itself when absolute; `.` components dropped.
fn join(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        return p.to_path_buf();
    }
    base.join(p)
        .components()
        .filter(|c| !matches!(c, Component::CurDir))
        .collect()
}

fn join_str(base: &Path, p: &str) -> String {
    if p.is_empty() || Path::new(p).is_absolute() {
        return p.to_string();
    }
    join(base, Path::new(p)).to_string_lossy().into_owned()
}

fn join_unix_address(base: &Path, address: &mut String) {
    if let Some(p) = address.strip_prefix("unix:")
        && !p.is_empty()
    {
        *address = format!("unix:{}", join_str(base, p));
    }
}

/// DESIGN: relative paths resolve against the config file's directory (under Postfix's
/// `pipe` the cwd is arbitrary). Done here so that no consumer ever sees a relative path.
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
    }
    for sink in config.sinks.values_mut() {
        match sink {
            SinkConfig::Maildir(c) => c.path = join_str(base, &c.path),
            SinkConfig::Mh(c) => c.path = join_str(base, &c.path),
            SinkConfig::Mbox(c) => c.path = join_str(base, &c.path),
            SinkConfig::Smtp(c) | SinkConfig::Lmtp(c) => {
                join_unix_address(base, &mut c.address);
                for p in [&mut c.ca_file, &mut c.password_file].into_iter().flatten() {
                    *p = join(base, p);
                }
            }
            SinkConfig::Exec(c) => {
                // A bare name is looked up in PATH; only a path with a `/` is relative to us.
                if let Some(program) = c.command.first_mut()
                    && program.contains('/')
                {
                    *program = join_str(base, program);
                }
            }
            SinkConfig::Discard(_) => {}
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
