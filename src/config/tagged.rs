//! `[sink.NAME]` and `[filter.NAME]` tables as the config layer keeps them: the `type` that
//! picks the kind, and the rest untyped. The config layer sits below sinks and filters and
//! knows none of their types; each kind deserializes its table itself with
//! [`TaggedTable::parse`], which names the key to blame so that the caller can place the
//! error at file, line and key.

use super::error::{InvalidKey, operator_words, unknown_field_name};
use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer};
use std::collections::BTreeMap;
use toml::{Table, Value};

#[derive(Debug, Clone, Default, PartialEq)]
pub struct TaggedTable {
    /// The `type` key: which sink or filter this is; empty when the table has none.
    pub kind: String,
    /// Every other key, as written (env overrides applied, relative paths not resolved).
    pub table: Table,
    /// The text of env overrides that set a key of this table (`helo` → `"1234"`): a value
    /// that reads as a number where the kind expects a string is taken as its text, since an
    /// operator cannot be expected to quote a value twice in a shell.
    pub env_text: BTreeMap<String, String>,
}

impl<'de> Deserialize<'de> for TaggedTable {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut table = Table::deserialize(d)?;
        // The loader checks `type` first with messages that name the key; these only guard
        // a table built some other way.
        let kind = match table.remove("type") {
            Some(Value::String(kind)) => kind,
            Some(other) => {
                return Err(D::Error::custom(format!(
                    "`type`: expected a string, not {}",
                    super::error::a_type(&other)
                )));
            }
            // The registry refuses it, listing the types it has.
            None => String::new(),
        };
        Ok(TaggedTable {
            kind,
            table,
            env_text: BTreeMap::new(),
        })
    }
}

impl TaggedTable {
    /// The table without `key`, and `key`'s value: for keys every kind shares (a filter's
    /// `fail_open`), read by the registry before the kind sees the rest.
    pub fn take(&self, key: &str) -> (TaggedTable, Option<Value>) {
        let mut rest = self.clone();
        let value = rest.table.remove(key);
        rest.env_text.remove(key);
        (rest, value)
    }

    /// Deserializes the table (without `type`) into a kind's own config type. The error
    /// names the key to blame (empty for a missing key: the table is wrong) and says what
    /// was expected, in an operator's words.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, InvalidKey> {
        let mut table = self.table.clone();
        loop {
            let message = match deserialize::<T>(&table) {
                Ok(value) => return Ok(value),
                Err(message) => message,
            };
            if let Some(name) = unknown_field_name(&message) {
                return Err(InvalidKey::at(name, operator_words(&message)));
            }
            let whole = || InvalidKey {
                key: Vec::new(),
                message: operator_words(&message),
            };
            if message.starts_with("missing field") {
                return Err(whole());
            }
            let Some(culprit) = culprit::<T>(&table, &message) else {
                return Err(whole());
            };
            if wants_string(&message)
                && let Some(text) = self.env_text.get(&culprit)
                && !matches!(table.get(&culprit), Some(Value::String(_)))
            {
                table.insert(culprit, Value::String(text.clone()));
                continue;
            }
            return Err(InvalidKey::at(&culprit, operator_words(&message)));
        }
    }
}

fn deserialize<T: DeserializeOwned>(table: &Table) -> Result<T, String> {
    T::deserialize(Value::Table(table.clone())).map_err(|e| e.message().to_string())
}

/// The key whose value gives `message`. A table's keys are visited in order and the first
/// bad value stops deserializing, so without the culprit the message changes (to success, a
/// missing key or the next bad value) and without any other key it stays the same. Keys
/// are few and errors rare: trying each costs nothing that matters.
fn culprit<T: DeserializeOwned>(table: &Table, message: &str) -> Option<String> {
    table.keys().find_map(|k| {
        let mut without = table.clone();
        without.remove(k);
        match deserialize::<T>(&without) {
            Err(m) if m == message => None,
            _ => Some(k.clone()),
        }
    })
}

/// serde's "invalid type: integer `1234`, expected a string".
pub(crate) fn wants_string(message: &str) -> bool {
    message.starts_with("invalid type") && message.contains("expected a string")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::error::path_string;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Kind {
        path: String,
        #[serde(default)]
        create: bool,
        #[serde(default)]
        timeout: Option<u32>,
    }

    fn tagged(text: &str) -> TaggedTable {
        toml::from_str(text).unwrap()
    }

    fn error(text: &str) -> (String, String) {
        let e = tagged(text).parse::<Kind>().unwrap_err();
        (path_string(&e.key), e.message)
    }

    #[test]
    fn errors_name_the_key() {
        let (k, m) = error("type = 'k'\npath = 'p'\ncolour = 1\n");
        assert_eq!(k, "colour");
        assert!(m.starts_with("unknown key `colour`"), "{m}");
        let (k, m) = error("type = 'k'\ncreate = 'yes'\npath = 'p'\n");
        assert_eq!(k, "create");
        assert!(m.contains("expected a boolean"), "{m}");
        // The culprit after a required key; of two bad keys, the one whose error it is.
        let (k, _) = error("type = 'k'\npath = 'p'\ntimeout = 'x'\n");
        assert_eq!(k, "timeout");
        let (k, m) = error("type = 'k'\npath = 'p'\ntimeout = 'x'\ncreate = 1\n");
        assert_eq!(
            k,
            if m.contains("boolean") {
                "create"
            } else {
                "timeout"
            }
        );
        let (k, m) = error("type = 'k'\ncreate = true\n");
        assert_eq!(k, "");
        assert!(m.contains("missing key `path`"), "{m}");
    }

    #[test]
    fn env_text_is_taken_where_a_string_is_expected() {
        let mut t = tagged("type = 'k'\npath = 2024\n");
        assert!(t.parse::<Kind>().is_err());
        t.env_text.insert("path".into(), "2024".into());
        assert_eq!(t.parse::<Kind>().unwrap().path, "2024");
    }

    #[test]
    fn type_is_a_string_and_empty_when_missing() {
        assert_eq!(tagged("type = 'k'\na = 1\n").kind, "k");
        // The registry refuses it with the list of its types.
        assert_eq!(tagged("a = 1\n").kind, "");
        assert!(toml::from_str::<TaggedTable>("type = 1\n").is_err());
    }
}
