//! Config errors that point at the file, line and key, and the span bookkeeping behind them.

use std::fmt;
use std::ops::Range;
use std::path::PathBuf;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

/// Why a config could not be loaded. `Display` is the whole message an operator sees.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// No `-c`, no `$MAILCHUTE_CONFIG`, no default file, and no embedded default allowed.
    #[error("no config file: {0}")]
    NotFound(String),
    #[error("{}: cannot read the config file: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot determine the current directory (needed to resolve relative paths): {0}")]
    Cwd(#[source] std::io::Error),
    /// The config was read but is wrong: syntax, an unknown key, a bad value, a rule broken.
    #[error("{0}")]
    Invalid(Box<Problem>),
}

impl ConfigError {
    /// The problem behind an `Invalid` error, for callers (and tests) that want its parts.
    pub fn problem(&self) -> Option<&Problem> {
        match self {
            ConfigError::Invalid(p) => Some(p),
            _ => None,
        }
    }
}

/// One thing wrong with a config, located as precisely as we could.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The file path, or "embedded default" / the name given to `parse_str`.
    pub origin: String,
    /// 1-based line in the file, when the problem is in the file (not in an env override).
    pub line: Option<usize>,
    /// Key path such as `listener[0].max_message_size`; empty for a whole-file problem.
    pub key: String,
    /// The env override that set the offending value, e.g. `MAILCHUTE_QUEUE__WORKERS`.
    pub env: Option<String>,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.origin)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if !self.key.is_empty() {
            write!(f, ": {}", self.key)?;
        }
        if let Some(env) = &self.env {
            write!(f, " (set by {env})")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// One step of a key path: a table key or an array index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seg {
    Key(String),
    Index(usize),
}

/// `listener[0].max_message_size`, as an operator would write it.
pub fn path_string(path: &[Seg]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                let bare = !k.is_empty()
                    && k.chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
                if bare {
                    out.push_str(k);
                } else {
                    out.push_str(&format!("{k:?}"));
                }
            }
            Seg::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

/// Shorthand for building key paths in validation code.
pub(crate) fn key(k: &str) -> Seg {
    Seg::Key(k.to_string())
}

/// An env override that was applied, kept so that a problem in the value it set can name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Override {
    /// The variable's name, e.g. `MAILCHUTE_SINK__S3_ARCHIVE__BUCKET`.
    pub var: String,
    pub value: String,
    /// Where it landed, with the table's own spelling of each key (`s3-archive`).
    pub path: Vec<Seg>,
    /// The value reads as TOML of another type (`1234`) but the key expects a string, so
    /// the text itself was used.
    pub as_string: bool,
}

/// Turns (key path, message) into a located `ConfigError`. It keeps the source text rather
/// than a parsed tree so that it can live in `Loaded`-building code without borrowing;
/// errors are rare, so re-parsing to locate one costs nothing that matters.
pub(crate) struct Locator {
    pub origin: String,
    pub text: Option<String>,
    pub overrides: Vec<Override>,
}

impl Locator {
    pub fn error(&self, path: &[Seg], message: impl Into<String>) -> ConfigError {
        // The value at `path` (or a table holding it) came from the environment.
        let mut env = self
            .overrides
            .iter()
            .rev()
            .find(|o| path.starts_with(&o.path))
            .map(|o| o.var.clone());
        let mut line = None;
        if env.is_none() {
            let found = self.text.as_ref().and_then(|text| {
                DeTable::parse(text)
                    .ok()
                    .and_then(|doc| locate(&doc, path))
                    .map(|(span, exact)| (line_of(text, span.start), exact))
            });
            // Not in the file at all: an override may have created it (a new sink, say).
            if found.is_none_or(|(_, exact)| !exact) {
                env = self
                    .overrides
                    .iter()
                    .rev()
                    .find(|o| o.path.starts_with(path))
                    .map(|o| o.var.clone());
            }
            if env.is_none() {
                line = found.map(|(l, _)| l);
            }
        }
        ConfigError::Invalid(Box::new(Problem {
            origin: self.origin.clone(),
            line,
            key: path_string(path),
            env,
            message: message.into(),
        }))
    }
}

/// 1-based line of a byte offset.
pub fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// The span of the key (or array element) at `path`; if the path goes deeper than the
/// document (a default, or a key that is missing), the span of the deepest part that exists.
pub fn span_of(doc: &Spanned<DeTable<'_>>, path: &[Seg]) -> Option<Range<usize>> {
    locate(doc, path).map(|(span, _)| span)
}

/// [`span_of`], and whether the whole path was found (rather than only a prefix of it).
fn locate(doc: &Spanned<DeTable<'_>>, path: &[Seg]) -> Option<(Range<usize>, bool)> {
    let mut best: Option<Range<usize>> = None;
    let mut table: Option<&DeTable<'_>> = Some(doc.get_ref());
    let mut value: Option<&Spanned<DeValue<'_>>> = None;
    for seg in path {
        match seg {
            Seg::Key(k) => {
                let Some(t) = table else {
                    return best.map(|b| (b, false));
                };
                let (kspan, v) = match t.iter().find(|(tk, _)| tk.get_ref().as_ref() == k) {
                    Some((tk, v)) => (tk.span(), v),
                    None => return best.map(|b| (b, false)),
                };
                best = Some(kspan);
                value = Some(v);
            }
            Seg::Index(i) => {
                let arr = match value.map(|v| v.get_ref()) {
                    Some(DeValue::Array(a)) => a,
                    _ => return best.map(|b| (b, false)),
                };
                let Some(item) = arr.get(*i) else {
                    return best.map(|b| (b, false));
                };
                best = Some(item.span());
                value = Some(item);
            }
        }
        table = match value.map(|v| v.get_ref()) {
            Some(DeValue::Table(t)) => Some(t),
            _ => None,
        };
    }
    best.map(|b| (b, true))
}

/// The key path of the smallest key or value whose span holds `offset`.
pub fn path_at(doc: &Spanned<DeTable<'_>>, offset: usize) -> Vec<Seg> {
    let mut best: Option<(usize, Vec<Seg>)> = None;
    let mut path = Vec::new();
    walk_table(doc.get_ref(), &mut path, offset, &mut best);
    best.map(|(_, p)| p).unwrap_or_default()
}

fn consider(span: Range<usize>, path: &[Seg], offset: usize, best: &mut Option<(usize, Vec<Seg>)>) {
    let hit = span.contains(&offset) || (span.is_empty() && span.start == offset);
    // `<=` so that, for equal spans (an array of tables and its element), the deeper wins.
    if hit && best.as_ref().is_none_or(|(len, _)| span.len() <= *len) {
        *best = Some((span.len(), path.to_vec()));
    }
}

fn walk_table(
    t: &DeTable<'_>,
    path: &mut Vec<Seg>,
    offset: usize,
    best: &mut Option<(usize, Vec<Seg>)>,
) {
    for (k, v) in t.iter() {
        path.push(Seg::Key(k.get_ref().to_string()));
        consider(k.span(), path, offset, best);
        walk_value(v, path, offset, best);
        path.pop();
    }
}

fn walk_value(
    v: &Spanned<DeValue<'_>>,
    path: &mut Vec<Seg>,
    offset: usize,
    best: &mut Option<(usize, Vec<Seg>)>,
) {
    consider(v.span(), path, offset, best);
    match v.get_ref() {
        DeValue::Table(t) => walk_table(t, path, offset, best),
        DeValue::Array(a) => {
            for (i, item) in a.iter().enumerate() {
                path.push(Seg::Index(i));
                walk_value(item, path, offset, best);
                path.pop();
            }
        }
        _ => {}
    }
}

/// serde speaks of fields and variants; an operator edits keys and values.
pub(crate) fn operator_words(message: &str) -> String {
    message
        .replace("unknown field", "unknown key")
        .replace("missing field", "missing key")
        .replace("unknown variant", "unknown value")
        .replace("there are no fields", "this table takes no keys")
}

/// The name in serde's "unknown field `foo`, expected ..." message.
pub(crate) fn unknown_field_name(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("unknown field `")?;
    rest.split_once('`').map(|(name, _)| name)
}

/// Why a `[sink.NAME]` or `[filter.NAME]` table cannot become a sink or filter, and the key
/// inside the table to blame. Sinks and filters know which of their keys is wrong; only the
/// config layer knows the file and line, so the key travels with the message until someone
/// can place it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct InvalidKey {
    /// Key path inside the sink's table (`password_file`, `command[0]`); empty when the
    /// table as a whole is wrong.
    pub key: Vec<Seg>,
    /// What is wrong and what was expected, without the key (the reader adds it).
    pub message: String,
}

impl InvalidKey {
    pub fn at(key: &str, message: impl Into<String>) -> Self {
        InvalidKey {
            key: vec![Seg::Key(key.to_string())],
            message: message.into(),
        }
    }

    /// An element of an array key, e.g. `command[2]`.
    pub fn at_index(key: &str, index: usize, message: impl Into<String>) -> Self {
        InvalidKey {
            key: vec![Seg::Key(key.to_string()), Seg::Index(index)],
            message: message.into(),
        }
    }
}

/// A `[sink.NAME]` or `[filter.NAME]` that could not be built. `Display` names the key path
/// but no file: callers that have the loaded config turn it into a located [`ConfigError`].
#[derive(Debug, thiserror::Error)]
#[error("{}: {}", path_string(&self.path()), .problem.message)]
pub struct BuildError {
    /// `sink` or `filter`: the table's section.
    pub section: &'static str,
    /// The `NAME` of `[section.NAME]`, as the config spells it.
    pub name: String,
    pub problem: InvalidKey,
}

impl BuildError {
    /// The full key path of the problem: `section.NAME.KEY`.
    pub fn path(&self) -> Vec<Seg> {
        let mut path = vec![key(self.section), Seg::Key(self.name.clone())];
        path.extend(self.problem.key.iter().cloned());
        path
    }
}

/// The problem with a `type` no registry line has: none written, one the design has but
/// this build does not yet (`later`), or one that does not exist; each lists what this
/// build has.
pub fn unknown_type(section: &str, kind: &str, built: &[&str], later: &[&str]) -> InvalidKey {
    let built = built.join(", ");
    if kind.is_empty() {
        return InvalidKey {
            key: Vec::new(),
            message: format!("missing key `type` (one of: {built})"),
        };
    }
    let message = if later.contains(&kind) {
        format!(
            "{section} type \"{kind}\" is not available in this version yet (this build has: {built})"
        )
    } else {
        format!("unknown {section} type \"{kind}\": expected one of {built}")
    };
    InvalidKey::at("type", message)
}

/// A TOML value's type with its article, for messages: "a string", "an integer".
pub fn a_type(v: &toml::Value) -> String {
    let t = v.type_str();
    let article = if t.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    };
    format!("{article} {t}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_lines() {
        let text = "a = 1\n[[listener]]\naddress = 'x'\n\n[sink.local]\ntype = 'maildir'\n";
        let doc = DeTable::parse(text).unwrap();
        let at = |p: &[Seg]| span_of(&doc, p).map(|s| line_of(text, s.start));
        assert_eq!(at(&[key("a")]), Some(1));
        assert_eq!(at(&[key("listener"), Seg::Index(0)]), Some(2));
        assert_eq!(
            at(&[key("listener"), Seg::Index(0), key("address")]),
            Some(3)
        );
        assert_eq!(at(&[key("sink"), key("local"), key("type")]), Some(6));
        // A key that is not written (a default) falls back to its table.
        assert_eq!(at(&[key("sink"), key("local"), key("path")]), Some(5));
        let off = text.find("'x'").unwrap();
        assert_eq!(
            path_string(&path_at(&doc, off)),
            "listener[0].address".to_string()
        );
        assert_eq!(
            path_string(&[key("sink"), key("a b"), key("x")]),
            "sink.\"a b\".x"
        );
    }
}
