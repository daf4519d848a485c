//! `MAILCHUTE_…__…` env overrides (DESIGN "Contract details"), applied to the parsed TOML
//! table before it becomes a `Config`, so that an override is checked exactly like the file.

use super::error::{Override, Seg, path_string};
use serde::Deserialize;
use toml::{Table, Value};

const PREFIX: &str = "MAILCHUTE_";

/// An env variable that looks like an override but cannot be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{var}: {message}")]
pub struct OverrideError {
    pub var: String,
    pub message: String,
}

/// The overrides among `env`, in name order (so the result does not depend on the
/// environment's order, and a whole table is set before a key inside it).
pub fn overrides_in<I>(env: I) -> Vec<(String, String)>
where
    I: IntoIterator<Item = (String, String)>,
{
    let mut found: Vec<(String, String)> = env
        .into_iter()
        .filter(|(k, _)| {
            k.strip_prefix(PREFIX)
                .is_some_and(|rest| rest.contains("__"))
        })
        .collect();
    found.sort();
    found
}

/// Applies every override in `env` to `table`; returns what was applied, for error messages
/// and for `config check`.
pub fn apply_env_overrides<I>(table: &mut Table, env: I) -> Result<Vec<Override>, OverrideError>
where
    I: IntoIterator<Item = (String, String)>,
{
    overrides_in(env)
        .into_iter()
        .map(|(var, value)| apply_one(table, &var, &value))
        .collect()
}

/// Applies one override (`var` must carry the `MAILCHUTE_` prefix), its value read as TOML
/// if it is TOML (see [`parse_value`]).
pub fn apply_one(table: &mut Table, var: &str, value: &str) -> Result<Override, OverrideError> {
    apply_value(table, var, value, parse_value(value), false)
}

/// Applies one override with its value taken as the text it is, for a key that expects a
/// string where the text reads as another TOML type (`MAILCHUTE_SERVER__HOSTNAME=1234`).
pub fn apply_as_string(
    table: &mut Table,
    var: &str,
    value: &str,
) -> Result<Override, OverrideError> {
    apply_value(table, var, value, Value::String(value.to_string()), true)
}

/// Applies an override again as it was applied the first time.
pub fn reapply(table: &mut Table, o: &Override) -> Result<Override, OverrideError> {
    if o.as_string {
        apply_as_string(table, &o.var, &o.value)
    } else {
        apply_one(table, &o.var, &o.value)
    }
}

fn apply_value(
    table: &mut Table,
    var: &str,
    raw: &str,
    value: Value,
    as_string: bool,
) -> Result<Override, OverrideError> {
    let fail = |message: String| OverrideError {
        var: var.to_string(),
        message,
    };
    let rest = var
        .strip_prefix(PREFIX)
        .ok_or_else(|| fail(format!("does not start with {PREFIX}")))?;
    let segs: Vec<String> = rest.split("__").map(|s| s.to_ascii_lowercase()).collect();
    if segs.iter().any(|s| s.is_empty()) {
        return Err(fail(
            "empty key between `__` separators (expected e.g. MAILCHUTE_SERVER__HOSTNAME)".into(),
        ));
    }
    let mut path = Vec::new();
    set_in_table(table, &segs, value, &mut path).map_err(fail)?;
    Ok(Override {
        var: var.to_string(),
        value: raw.to_string(),
        path,
        as_string,
    })
}

/// A TOML value if the text is one (`4`, `true`, `["a"]`, `"x"`), else the text as a string.
pub fn parse_value(raw: &str) -> Value {
    toml::de::ValueDeserializer::parse(raw)
        .ok()
        .and_then(|d| Value::deserialize(d).ok())
        .unwrap_or_else(|| Value::String(raw.to_string()))
}

/// In names `-` and `_` are the same, so `S3_ARCHIVE` finds `[sink.s3-archive]`.
fn normalise(key: &str) -> String {
    key.to_ascii_lowercase().replace('-', "_")
}

fn set_in_table(
    t: &mut Table,
    segs: &[String],
    value: Value,
    path: &mut Vec<Seg>,
) -> Result<(), String> {
    let Some((first, rest)) = segs.split_first() else {
        return Err("no key".into());
    };
    let wanted = normalise(first);
    let key = t
        .keys()
        .find(|k| normalise(k) == wanted)
        .cloned()
        .unwrap_or_else(|| first.clone());
    path.push(Seg::Key(key.clone()));
    if rest.is_empty() {
        t.insert(key, value);
        return Ok(());
    }
    let child = t.entry(key).or_insert_with(|| Value::Table(Table::new()));
    set_in_value(child, rest, value, path)
}

fn set_in_value(
    node: &mut Value,
    segs: &[String],
    value: Value,
    path: &mut Vec<Seg>,
) -> Result<(), String> {
    match node {
        Value::Table(t) => set_in_table(t, segs, value, path),
        Value::Array(items) => {
            let Some((first, rest)) = segs.split_first() else {
                return Err("no key".into());
            };
            let len = items.len();
            let index: usize = first.parse().map_err(|_| {
                format!(
                    "{} is an array: expected an index (0..{len}) after it, not `{first}`",
                    path_string(path)
                )
            })?;
            let Some(item) = items.get_mut(index) else {
                return Err(format!(
                    "{} has {len} entries: index {index} does not exist (overrides can \
                     change entries, not add them)",
                    path_string(path)
                ));
            };
            path.push(Seg::Index(index));
            if rest.is_empty() {
                *item = value;
                Ok(())
            } else {
                set_in_value(item, rest, value, path)
            }
        }
        other => Err(format!(
            "{} is {}, not a table: cannot set a key inside it",
            path_string(path),
            super::error::a_type(other)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn table(text: &str) -> Table {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn only_double_underscore_vars_are_overrides() {
        let found = overrides_in(env(&[
            ("MAILCHUTE_CONFIG", "/x"),
            ("MAILCHUTE_SERVER__HOSTNAME", "mx"),
            ("PATH", "/bin"),
            ("OTHER__X", "1"),
        ]));
        assert_eq!(found, env(&[("MAILCHUTE_SERVER__HOSTNAME", "mx")]));
    }

    #[test]
    fn values_are_toml_else_strings() {
        assert_eq!(parse_value("4"), Value::Integer(4));
        assert_eq!(parse_value("true"), Value::Boolean(true));
        assert_eq!(parse_value("\"x y\""), Value::String("x y".into()));
        assert_eq!(
            parse_value("[\"10.0.0.0/8\"]"),
            Value::Array(vec![Value::String("10.0.0.0/8".into())])
        );
        assert_eq!(
            parse_value("mx.example.org"),
            Value::String("mx.example.org".into())
        );
        assert_eq!(
            parse_value("127.0.0.1:25"),
            Value::String("127.0.0.1:25".into())
        );
        assert_eq!(parse_value("50M"), Value::String("50M".into()));
        // Not a way to smuggle in a second key.
        assert_eq!(parse_value("1\nx = 2"), Value::String("1\nx = 2".into()));
    }

    #[test]
    fn dash_and_underscore_are_the_same_in_names() {
        let mut t = table("[sink.s3-archive]\ntype = 's3'\nbucket = 'a'\n");
        let applied =
            apply_env_overrides(&mut t, env(&[("MAILCHUTE_SINK__S3_ARCHIVE__BUCKET", "b")]))
                .unwrap();
        assert_eq!(t["sink"]["s3-archive"]["bucket"].as_str(), Some("b"));
        assert_eq!(path_string(&applied[0].path), "sink.s3-archive.bucket");
        assert!(t["sink"].get("s3_archive").is_none());
    }

    #[test]
    fn array_index_and_new_tables() {
        let mut t = table("[[listener]]\naddress = '127.0.0.1:25'\n");
        apply_env_overrides(
            &mut t,
            env(&[
                ("MAILCHUTE_LISTENER__0__ALLOW_IPS", "[\"10.0.0.0/8\"]"),
                ("MAILCHUTE_QUEUE__WORKERS", "4"),
                ("MAILCHUTE_SERVER__HOSTNAME", "mx.example.org"),
            ]),
        )
        .unwrap();
        assert_eq!(
            t["listener"][0]["allow_ips"],
            Value::Array(vec![Value::String("10.0.0.0/8".into())])
        );
        assert_eq!(t["queue"]["workers"], Value::Integer(4));
        assert_eq!(t["server"]["hostname"].as_str(), Some("mx.example.org"));
    }

    #[test]
    fn bad_overrides_name_the_variable() {
        let mut t = table("[[listener]]\naddress = '127.0.0.1:25'\n");
        let e = apply_one(&mut t, "MAILCHUTE_LISTENER__1__ADDRESS", "x").unwrap_err();
        assert_eq!(e.var, "MAILCHUTE_LISTENER__1__ADDRESS");
        assert!(e.message.contains("index 1 does not exist"), "{e}");
        let e = apply_one(&mut t, "MAILCHUTE_LISTENER__X__ADDRESS", "x").unwrap_err();
        assert!(e.message.contains("expected an index"), "{e}");
        let e = apply_one(&mut t, "MAILCHUTE_LISTENER__0__ADDRESS__X", "x").unwrap_err();
        assert!(e.message.contains("not a table"), "{e}");
        let e = apply_one(&mut t, "MAILCHUTE_SERVER____X", "x").unwrap_err();
        assert!(e.message.contains("empty key"), "{e}");
    }
}
