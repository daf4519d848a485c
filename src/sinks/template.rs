//! Templates: `{name}` placeholders in config strings.
//!
//! Path templates (maildir, mh, mbox) know `{rcpt}`, `{local}` and `{domain}`; the exec sink
//! uses the same parser with `{sender}`, `{rcpt}` and `{id}`. Anything else in braces is a
//! config error, so a typo such as `{user}` is caught at start-up rather than creating a
//! directory literally called `{user}`.

use super::SinkError;
use crate::envelope::{split_address, unquote_local};
use std::path::{Path, PathBuf};

/// The variables a mailbox path template may use.
pub const PATH_VARS: &[&str] = &["rcpt", "local", "domain"];

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    Literal(String),
    Var(String),
}

/// A parsed template: literal text and `{name}` variables, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    raw: String,
    segments: Vec<Segment>,
}

impl Template {
    /// Parses `raw`; every `{name}` must be one of `allowed`.
    pub fn parse(raw: &str, allowed: &[&str]) -> Result<Self, String> {
        let mut segments = Vec::new();
        let mut rest = raw;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                segments.push(Segment::Literal(rest[..open].to_string()));
            }
            let after = &rest[open + 1..];
            let close = after
                .find('}')
                .ok_or_else(|| format!("template \"{raw}\": '{{' without a closing '}}'"))?;
            let name = &after[..close];
            if !allowed.contains(&name) {
                let known: Vec<String> = allowed.iter().map(|v| format!("{{{v}}}")).collect();
                return Err(format!(
                    "template \"{raw}\": unknown variable {{{name}}}; expected one of {}",
                    known.join(", ")
                ));
            }
            segments.push(Segment::Var(name.to_string()));
            rest = &after[close + 1..];
        }
        if rest.contains('}') {
            return Err(format!("template \"{raw}\": '}}' without an opening '{{'"));
        }
        if !rest.is_empty() {
            segments.push(Segment::Literal(rest.to_string()));
        }
        Ok(Template {
            raw: raw.to_string(),
            segments,
        })
    }

    /// Like [`parse`](Self::parse), but any brace that does not open a known `{var}` is
    /// kept as text: command arguments (shell `${1#x}`, awk `{print}`) need braces of their own.
    pub fn parse_lenient(raw: &str, allowed: &[&str]) -> Self {
        let mut segments = Vec::new();
        let mut literal = String::new();
        let mut rest = raw;
        while let Some(open) = rest.find('{') {
            literal.push_str(&rest[..open]);
            let after = &rest[open + 1..];
            match after.find('}').map(|close| (&after[..close], close)) {
                Some((name, close)) if allowed.contains(&name) => {
                    if !literal.is_empty() {
                        segments.push(Segment::Literal(std::mem::take(&mut literal)));
                    }
                    segments.push(Segment::Var(name.to_string()));
                    rest = &after[close + 1..];
                }
                _ => {
                    literal.push('{');
                    rest = after;
                }
            }
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            segments.push(Segment::Literal(literal));
        }
        Template {
            raw: raw.to_string(),
            segments,
        }
    }

    pub fn raw(&self) -> &str {
        &self.raw
    }

    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// Whether the template uses the variable `name`.
    pub fn uses(&self, name: &str) -> bool {
        self.segments
            .iter()
            .any(|s| matches!(s, Segment::Var(v) if v == name))
    }

    /// Whether the template is exactly `{name}` and nothing else.
    pub fn is_exactly(&self, name: &str) -> bool {
        matches!(self.segments.as_slice(), [Segment::Var(v)] if v == name)
    }

    /// Expands the template; `value` gives each variable's text.
    pub fn expand<E>(&self, mut value: impl FnMut(&str) -> Result<String, E>) -> Result<String, E> {
        let mut out = String::with_capacity(self.raw.len());
        for s in &self.segments {
            match s {
                Segment::Literal(l) => out.push_str(l),
                Segment::Var(v) => out.push_str(&value(v)?),
            }
        }
        Ok(out)
    }

    /// The literal text before the first variable (the whole template when it has none).
    pub fn literal_prefix(&self) -> &str {
        match self.segments.first() {
            Some(Segment::Literal(l)) => l,
            _ => "",
        }
    }
}

/// Whether a path template uses any per-recipient variable (`{rcpt}`, `{local}`, `{domain}`).
pub fn uses_recipient_vars(template: &str) -> bool {
    Template::parse(template, PATH_VARS)
        .map(|t| PATH_VARS.iter().any(|v| t.uses(v)))
        .unwrap_or(false)
}

/// A mailbox path template (`path` of the maildir, mh and mbox sinks).
#[derive(Debug, Clone)]
pub struct PathTemplate {
    template: Template,
    base_dir: PathBuf,
}

impl PathTemplate {
    /// Parses `raw`; a relative result is resolved against `base_dir`.
    pub fn new(raw: &str, base_dir: &Path) -> Result<Self, String> {
        if raw.is_empty() {
            return Err("path is empty".into());
        }
        if raw.contains('\0') {
            return Err(format!(
                "path \"{}\" contains a NUL byte",
                raw.escape_debug()
            ));
        }
        Ok(PathTemplate {
            template: Template::parse(raw, PATH_VARS)?,
            base_dir: base_dir.to_path_buf(),
        })
    }

    pub fn raw(&self) -> &str {
        self.template.raw()
    }

    /// Whether the path differs between recipients.
    pub fn is_per_recipient(&self) -> bool {
        PATH_VARS.iter().any(|v| self.template.uses(v))
    }

    /// The path for one recipient. A local part or domain that could leave the intended
    /// directory (`/`, NUL, a leading `.`, empty) is refused permanently with 5.1.3: no
    /// retry will make that address valid.
    pub fn expand(&self, rcpt: &str) -> Result<PathBuf, SinkError> {
        let (local, domain) = split_address(rcpt);
        let local = unquote_local(local);
        let domain = domain.to_lowercase();
        let expanded = self.template.expand(|var| {
            let value = match var {
                "local" => local.to_string(),
                "domain" => domain.clone(),
                _ if domain.is_empty() => local.to_string(),
                _ => format!("{local}@{domain}"),
            };
            check_component(var, &value, rcpt)?;
            Ok::<_, SinkError>(value)
        })?;
        Ok(self.base_dir.join(expanded))
    }

    /// The path when the template has no per-recipient variable.
    pub fn fixed(&self) -> Option<PathBuf> {
        if self.is_per_recipient() {
            None
        } else {
            Some(self.base_dir.join(self.template.raw()))
        }
    }

    /// The deepest directory every expansion lies in: the literal part before the first
    /// variable, cut back to its last `/`. Used by health checks of per-recipient templates.
    pub fn static_parent(&self) -> PathBuf {
        let prefix = self.template.literal_prefix();
        let dir = match prefix.rfind('/') {
            Some(0) => "/",
            Some(i) => &prefix[..i],
            None => "",
        };
        self.base_dir.join(dir)
    }
}

fn check_component(var: &str, value: &str, rcpt: &str) -> Result<(), SinkError> {
    let why = if value.is_empty() {
        Some("is empty")
    } else if value.contains('/') {
        Some("contains '/'")
    } else if value.contains('\0') {
        Some("contains a NUL byte")
    } else if value.starts_with('.') {
        Some("starts with '.'")
    } else {
        None
    };
    match why {
        Some(why) => Err(SinkError::permanent(
            "5.1.3",
            format!(
                "recipient <{}>: {{{var}}} \"{}\" {why}, refused as part of a mailbox path",
                rcpt.escape_debug(),
                value.escape_debug()
            ),
        )),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(raw: &str) -> PathTemplate {
        PathTemplate::new(raw, Path::new("/base")).unwrap()
    }

    #[test]
    fn expands_variables() {
        let p = t("Maildir/{domain}/{local}");
        assert_eq!(
            p.expand("Alice@Example.ORG").unwrap(),
            PathBuf::from("/base/Maildir/example.org/Alice")
        );
        assert_eq!(
            t("/abs/{rcpt}").expand("Bob@EXAMPLE.com").unwrap(),
            PathBuf::from("/abs/Bob@example.com")
        );
        assert_eq!(
            t("/abs/{rcpt}").expand("postmaster").unwrap(),
            PathBuf::from("/abs/postmaster")
        );
        // Quotes that are not needed do not make another mailbox.
        assert_eq!(
            t("/abs/{rcpt}").expand("\"alice\"@x").unwrap(),
            PathBuf::from("/abs/alice@x")
        );
        assert_eq!(
            p.expand("\"a b\"@x").unwrap(),
            PathBuf::from("/base/Maildir/x/\"a b\"")
        );
        assert!(p.is_per_recipient());
        assert!(!t("Maildir").is_per_recipient());
        assert_eq!(t("Maildir").fixed(), Some(PathBuf::from("/base/Maildir")));
        assert_eq!(p.static_parent(), PathBuf::from("/base/Maildir"));
        assert_eq!(t("/m/x-{local}").static_parent(), PathBuf::from("/m"));
        assert_eq!(t("{local}").static_parent(), PathBuf::from("/base"));
    }

    #[test]
    fn refuses_escapes() {
        let p = t("Maildir/{local}");
        for bad in ["../x@a", "a/b@c", ".hidden@x", "a\0b@x", "@x", ".."] {
            let e = p.expand(bad).unwrap_err();
            assert_eq!(e.status, "5.1.3", "{bad}");
            assert!(!e.is_temporary());
        }
        let d = t("Maildir/{domain}/{local}");
        assert!(d.expand("a@..").is_err());
        assert!(d.expand("a@x/y").is_err());
        assert!(d.expand("postmaster").is_err());
    }

    #[test]
    fn unknown_variables_are_config_errors() {
        assert!(PathTemplate::new("Maildir/{user}", Path::new("/")).is_err());
        assert!(PathTemplate::new("Maildir/{local", Path::new("/")).is_err());
        assert!(PathTemplate::new("Maildir/local}", Path::new("/")).is_err());
        assert!(PathTemplate::new("", Path::new("/")).is_err());
        assert!(uses_recipient_vars("a/{rcpt}"));
        assert!(!uses_recipient_vars("a/b"));
    }

    #[test]
    fn generic_templates() {
        let t = Template::parse("--to={rcpt}", &["rcpt", "id"]).unwrap();
        assert!(t.uses("rcpt"));
        assert!(!t.is_exactly("rcpt"));
        assert!(
            Template::parse("{rcpt}", &["rcpt"])
                .unwrap()
                .is_exactly("rcpt")
        );
        let s: Result<String, ()> = t.expand(|_| Ok("x@y".into()));
        assert_eq!(s.unwrap(), "--to=x@y");
    }

    #[test]
    fn lenient_keeps_foreign_braces() {
        let t = Template::parse_lenient("${1#x}{rcpt}{print}{", &["rcpt"]);
        assert!(t.uses("rcpt"));
        let out = t.expand(|_| Ok::<_, ()>("a@b".to_string()));
        assert_eq!(out, Ok("${1#x}a@b{print}{".to_string()));
    }
}
