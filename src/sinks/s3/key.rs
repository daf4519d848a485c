//! The object key template: `{rcpt}` `{local}` `{domain}` `{id}` `{sha256}` and
//! `{date:STRFTIME}` (`{date}` alone is `%Y-%m-%d`), and mailtos3's
//! `dateTimeFormat(GO_LAYOUT)` for the date, as its configs wrote it.
//!
//! `{date}` is the envelope's arrival time in UTC, never "now": a retry after midnight must
//! land on the key of the first attempt, or it would store a second copy. `{id}` is the
//! delivery unit's id, stable across retries of that unit.

use super::go_layout;
use crate::envelope::{split_address, unquote_local};
use crate::sinks::SinkError;

/// The default key: one folder per arrival day, one object per delivery unit.
pub const DEFAULT_KEY: &str = "{date:%Y/%m/%d}/{id}.eml";

/// S3's limit on a key, in UTF-8 bytes.
const MAX_KEY_BYTES: usize = 1024;

/// mailtos3's date element, `dateTimeFormat(GO_LAYOUT)`, accepted as it wrote it.
const GO_LAYOUT: &str = "dateTimeFormat";

/// The format of a bare `{date}`.
const DEFAULT_DATE_FORMAT: &str = "%Y-%m-%d";

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Rcpt,
    Local,
    Domain,
    Id,
    Sha256,
    Date(String),
}

/// A parsed key template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyTemplate {
    raw: String,
    parts: Vec<Part>,
}

/// What one key is made from.
pub struct KeyInput<'a> {
    /// The recipient, for per-recipient templates; `None` for one object per unit.
    pub rcpt: Option<&'a str>,
    pub id: &'a str,
    pub sha256: &'a str,
    /// Arrival time, Unix seconds.
    pub received_at: i64,
}

impl KeyTemplate {
    pub fn parse(raw: &str) -> Result<Self, String> {
        if raw.is_empty() {
            return Err(
                "is empty: expected a key template such as \"{date:%Y/%m/%d}/{id}.eml\"".into(),
            );
        }
        if raw.starts_with('/') {
            return Err(format!(
                "\"{raw}\" starts with '/': S3 keys have no leading slash"
            ));
        }
        let mut parts = Vec::new();
        let mut rest = raw;
        while let Some(open) = next_placeholder(rest) {
            if open > 0 {
                parts.push(Part::Literal(rest[..open].to_string()));
            }
            if let Some(after) = rest[open..].strip_prefix(GO_LAYOUT) {
                let (part, len) = parse_go_layout(raw, after)?;
                parts.push(part);
                rest = &after[len..];
                continue;
            }
            let after = &rest[open + 1..];
            let close = after
                .find('}')
                .ok_or_else(|| format!("\"{raw}\": '{{' without a closing '}}'"))?;
            parts.push(parse_var(raw, &after[..close])?);
            rest = &after[close + 1..];
        }
        if rest.contains('}') {
            return Err(format!("\"{raw}\": '}}' without an opening '{{'"));
        }
        if !rest.is_empty() {
            parts.push(Part::Literal(rest.to_string()));
        }
        Ok(KeyTemplate {
            raw: raw.to_string(),
            parts,
        })
    }

    pub fn raw(&self) -> &str {
        &self.raw
    }

    /// Whether keys differ by recipient, so each recipient gets an object of its own.
    pub fn is_per_recipient(&self) -> bool {
        self.parts
            .iter()
            .any(|p| matches!(p, Part::Rcpt | Part::Local | Part::Domain))
    }

    /// The key for one object. A recipient whose address makes no sane key part (empty,
    /// `/`, control characters, `.` or `..`) is refused permanently with 5.1.3, as for
    /// mailbox paths: stores that keep objects as files would read them as paths.
    pub fn expand(&self, input: &KeyInput<'_>) -> Result<String, SinkError> {
        let (local, domain) = match input.rcpt {
            Some(r) => {
                let (l, d) = split_address(r);
                (unquote_local(l).into_owned(), d.to_lowercase())
            }
            None => (String::new(), String::new()),
        };
        let rcpt_text = || -> String {
            if domain.is_empty() {
                local.clone()
            } else {
                format!("{local}@{domain}")
            }
        };
        let mut key = String::with_capacity(self.raw.len() + 32);
        for p in &self.parts {
            match p {
                Part::Literal(l) => key.push_str(l),
                Part::Id => key.push_str(input.id),
                Part::Sha256 => key.push_str(input.sha256),
                Part::Date(fmt) => key.push_str(&format_date(fmt, input.received_at)?),
                Part::Rcpt | Part::Local | Part::Domain => {
                    let (name, value) = match p {
                        Part::Rcpt => ("rcpt", rcpt_text()),
                        Part::Local => ("local", local.clone()),
                        _ => ("domain", domain.clone()),
                    };
                    check_component(name, &value, input.rcpt.unwrap_or(""))?;
                    key.push_str(&value);
                }
            }
        }
        if key.len() > MAX_KEY_BYTES {
            return Err(SinkError::permanent(
                "5.1.3",
                format!(
                    "object key is {} bytes, S3 allows {MAX_KEY_BYTES}: \"{}...\"",
                    key.len(),
                    key.chars().take(80).collect::<String>()
                ),
            ));
        }
        Ok(key)
    }
}

/// Where the next `{...}` or mailtos3 `dateTimeFormat(...)` begins.
fn next_placeholder(s: &str) -> Option<usize> {
    match (s.find('{'), s.find(GO_LAYOUT)) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// mailtos3's `dateTimeFormat(LAYOUT)`, `after` being what follows its name: the date
/// part and how much of `after` it took. Translated here, once, into strftime.
fn parse_go_layout(raw: &str, after: &str) -> Result<(Part, usize), String> {
    let form = || {
        format!(
            "\"{raw}\": expected {GO_LAYOUT}(LAYOUT) with a Go layout such as {GO_LAYOUT}(20060102)"
        )
    };
    let inner = after.strip_prefix('(').ok_or_else(form)?;
    let close = inner
        .find(')')
        .ok_or_else(|| format!("\"{raw}\": {GO_LAYOUT}( without a closing ')'"))?;
    let layout = &inner[..close];
    if layout.contains(['(', '{', '}']) {
        return Err(format!(
            "\"{raw}\": {GO_LAYOUT}({layout}): '(', '{{' and '}}' have no place in a Go layout"
        ));
    }
    let fmt = go_layout::translate(layout)
        .map_err(|e| format!("\"{raw}\": {GO_LAYOUT}({layout}): {e}"))?;
    format_date(&fmt, 0).map_err(|e| format!("\"{raw}\": {GO_LAYOUT}({layout}): {}", e.message))?;
    Ok((Part::Date(fmt), 1 + close + 1))
}

fn parse_var(raw: &str, name: &str) -> Result<Part, String> {
    let part = match name {
        "rcpt" => Part::Rcpt,
        "local" => Part::Local,
        "domain" => Part::Domain,
        "id" => Part::Id,
        "sha256" => Part::Sha256,
        "date" => Part::Date(DEFAULT_DATE_FORMAT.to_string()),
        // `{dateTimeFormat(LAYOUT)}`: the mailtos3 form, braced like the others.
        _ if name.starts_with(GO_LAYOUT) => {
            let after = &name[GO_LAYOUT.len()..];
            let (part, len) = parse_go_layout(raw, after)?;
            if len != after.len() {
                return Err(format!(
                    "\"{raw}\": {{{name}}}: text after {GO_LAYOUT}(...) inside the braces"
                ));
            }
            part
        }
        _ => match name.strip_prefix("date:") {
            Some(fmt) if !fmt.is_empty() => {
                // Formatting a fixed time finds a bad directive now, not on every delivery.
                format_date(fmt, 0).map_err(|e| format!("\"{raw}\": {{{name}}}: {}", e.message))?;
                Part::Date(fmt.to_string())
            }
            _ => {
                return Err(format!(
                    "\"{raw}\": unknown variable {{{name}}}; expected one of {{rcpt}}, {{local}}, \
                     {{domain}}, {{id}}, {{sha256}}, {{date}}, {{date:STRFTIME}}"
                ));
            }
        },
    };
    Ok(part)
}

fn format_date(fmt: &str, unix: i64) -> Result<String, SinkError> {
    let bad = |e: String| SinkError::temporary("4.3.0", format!("date format \"{fmt}\": {e}"));
    let ts = jiff::Timestamp::from_second(unix).map_err(|e| bad(e.to_string()))?;
    let zoned = ts.to_zoned(jiff::tz::TimeZone::UTC);
    jiff::fmt::strtime::format(fmt, &zoned).map_err(|e| bad(e.to_string()))
}

fn check_component(var: &str, value: &str, rcpt: &str) -> Result<(), SinkError> {
    let why = if value.is_empty() {
        Some("is empty")
    } else if value.contains('/') {
        Some("contains '/'")
    } else if value.chars().any(|c| c.is_control()) {
        Some("contains a control character")
    } else if value == "." || value == ".." {
        Some("is a dot name")
    } else {
        None
    };
    match why {
        Some(why) => Err(SinkError::permanent(
            "5.1.3",
            format!(
                "recipient <{}>: {{{var}}} \"{}\" {why}, refused as part of an object key",
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

    fn input(rcpt: Option<&str>) -> KeyInput<'_> {
        KeyInput {
            rcpt,
            id: "0123ABC.0",
            sha256: "ab12",
            // 2025-11-22 23:59:30 UTC
            received_at: 1_763_855_970,
        }
    }

    #[test]
    fn the_default_key_is_per_day_and_unit() {
        let t = KeyTemplate::parse(DEFAULT_KEY).unwrap();
        assert!(!t.is_per_recipient());
        assert_eq!(t.expand(&input(None)).unwrap(), "2025/11/22/0123ABC.0.eml");
    }

    #[test]
    fn every_placeholder() {
        let t =
            KeyTemplate::parse("{domain}/{local}/{rcpt}/{date}/{date:%H%M}/{sha256}-{id}").unwrap();
        assert!(t.is_per_recipient());
        assert_eq!(
            t.expand(&input(Some("\"Alice\"@Example.ORG"))).unwrap(),
            "example.org/Alice/Alice@example.org/2025-11-22/2359/ab12-0123ABC.0"
        );
    }

    #[test]
    fn bad_templates_are_config_errors() {
        for bad in [
            "",
            "/abs/{id}",
            "{user}/{id}",
            "{id",
            "id}",
            "{date:}",
            "{date:%}",
            "{date:%!}",
        ] {
            assert!(KeyTemplate::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn mailtos3_date_layouts() {
        for (template, key) in [
            ("dateTimeFormat(20060102)/{id}", "20251122/0123ABC.0"),
            (
                "{rcpt}/dateTimeFormat(2006/01/02)/{id}.eml",
                "a@x/2025/11/22/0123ABC.0.eml",
            ),
            (
                "in/dateTimeFormat(2006-01-02T15)-{id}",
                "in/2025-11-22T23-0123ABC.0",
            ),
            ("{dateTimeFormat(2006/01)}/{id}", "2025/11/0123ABC.0"),
            (
                "dateTimeFormat(2006)/dateTimeFormat(01)/{id}",
                "2025/11/0123ABC.0",
            ),
        ] {
            let t = KeyTemplate::parse(template).unwrap();
            assert_eq!(t.expand(&input(Some("a@x"))).unwrap(), key, "{template}");
            // The raw template is what `config check` shows.
            assert_eq!(t.raw(), template);
        }
        // Translated once: the part holds strftime, not the Go layout.
        let t = KeyTemplate::parse("dateTimeFormat(20060102)").unwrap();
        assert_eq!(t.parts, vec![Part::Date("%Y%m%d".into())]);
    }

    #[test]
    fn bad_mailtos3_layouts_are_config_errors() {
        for bad in [
            "dateTimeFormat/{id}",
            "dateTimeFormat[20060102]/{id}",
            "dateTimeFormat(20060102/{id}",
            "dateTimeFormat()/{id}",
            "dateTimeFormat(abc)/{id}",
            "dateTimeFormat((2006))/{id}",
            "dateTimeFormat(2006{id})",
            "{dateTimeFormat(2006)x}/{id}",
            "{dateTimeFormat(2006}/{id}",
        ] {
            let e = KeyTemplate::parse(bad).unwrap_err();
            assert!(e.contains("dateTimeFormat"), "{bad:?}: {e}");
        }
    }

    #[test]
    fn recipients_that_make_no_key_are_refused() {
        let t = KeyTemplate::parse("{local}/{id}").unwrap();
        for bad in ["a/b@x", "..@x", "@x", "a\u{7}b@x"] {
            let e = t.expand(&input(Some(bad))).unwrap_err();
            assert_eq!(e.status, "5.1.3", "{bad}");
            assert!(!e.is_temporary());
        }
        let long = format!("{}@x", "a".repeat(1100));
        assert!(t.expand(&input(Some(&long))).is_err());
    }
}
