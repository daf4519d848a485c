//! `mailchute config import-mailtos3 config.json`: mailtos3's mailbox map as mailchute
//! routes and `s3` sinks, printed as TOML for the operator to review and adopt.
//!
//! mailtos3 (`requestConfig` + `mailboxes`): each mailbox is an address, a bucket, an
//! optional KMS key (`cmkKeyArn`, SSE-KMS) and an optional key `prefix` (text, or a Go date
//! layout as `dateTimeFormat(20060102)`); the mailbox named `CatchAll` takes what `-a` did
//! not name. The first of two mailboxes with one address wins, as in mailtos3.

use serde::Deserialize;
use std::fmt::Write;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Mailtos3 {
    #[serde(default)]
    request_config: RequestConfig,
    #[serde(default)]
    mailboxes: Vec<Mailbox>,
}

#[derive(Debug, Default, Deserialize)]
struct RequestConfig {
    #[serde(default)]
    region: String,
    /// Seconds; 0 = none.
    #[serde(default)]
    timeout: u64,
    /// "Use s3.<region>.amazonaws.com": the SDK's own default, so nothing to carry over.
    #[serde(default)]
    #[allow(dead_code)]
    endpoint: bool,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Mailbox {
    address: String,
    bucket: String,
    #[serde(default)]
    cmk_key_arn: String,
    #[serde(default)]
    prefix: String,
}

/// mailtos3's name for the mailbox of messages without `-a`.
const CATCH_ALL: &str = "CatchAll";

/// The TOML for a mailtos3 `config.json`, or why it cannot be read.
pub fn convert(json: &str, origin: &str) -> Result<String, String> {
    let m: Mailtos3 = serde_json::from_str(json)
        .map_err(|e| format!("{origin}: not a mailtos3 config.json: {e}"))?;
    if m.mailboxes.is_empty() {
        return Err(format!("{origin}: no mailboxes to import"));
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Imported from mailtos3's {origin} by `mailchute config import-mailtos3`.\n\
         # Postfix's pipe transport then runs:\n\
         #   mailchute deliver -c THIS_FILE -a ${{recipient}} -f ${{sender}} --id ${{queue_id}}\n\
         # Object keys were a random name under the prefix; here they are the delivery id\n\
         # (queue id + message hash + recipient), so a retry is recognised."
    );
    let mut seen: Vec<String> = Vec::new();
    let mut sinks = String::new();
    for (i, mb) in m.mailboxes.iter().enumerate() {
        let address = mb.address.trim();
        if seen.iter().any(|s| s.eq_ignore_ascii_case(address)) {
            let _ = writeln!(
                out,
                "\n# mailbox {i} ({address}) skipped: mailtos3 matched only the first one"
            );
            continue;
        }
        seen.push(address.to_string());
        let matches = if address.eq_ignore_ascii_case(CATCH_ALL) {
            "*".to_string()
        } else {
            address.to_string()
        };
        let sink = format!("mailbox-{i}");
        let _ = writeln!(
            out,
            "\n[[route]]\nname = {}\nmatch = [{}]\nsinks = [{}]",
            quote(&format!("mailtos3-{i}")),
            quote(&matches),
            quote(&sink)
        );
        let _ = writeln!(sinks, "\n[sink.{sink}]\ntype = \"s3\"");
        let _ = writeln!(sinks, "bucket = {}", quote(&mb.bucket));
        if !m.request_config.region.is_empty() {
            let _ = writeln!(sinks, "region = {}", quote(&m.request_config.region));
        }
        let prefix = mb.prefix.trim_matches('/');
        if prefix.contains(['{', '}']) {
            return Err(format!(
                "{origin}: mailbox {i} ({address}): prefix {prefix:?} holds braces, which a \
                 mailchute key template reads as placeholders; write that key by hand"
            ));
        }
        let key = if prefix.is_empty() {
            "{id}.eml".to_string()
        } else {
            // mailchute's key template reads mailtos3's `dateTimeFormat(...)` itself.
            format!("{prefix}/{{id}}.eml")
        };
        let _ = writeln!(sinks, "key = {}", quote(&key));
        if !mb.cmk_key_arn.is_empty() {
            let _ = writeln!(
                sinks,
                "sse = \"aws:kms\"\nkms_key_id = {}",
                quote(&mb.cmk_key_arn)
            );
        }
        if m.request_config.timeout > 0 {
            let _ = writeln!(sinks, "timeout = \"{}s\"", m.request_config.timeout);
        }
    }
    out.push_str(&sinks);
    Ok(out)
}

/// A TOML basic string.
fn quote(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = r#"{
        "requestConfig": {"region": "eu-west-1", "timeout": 10, "endpoint": false},
        "mailboxes": [
            {"address": "user@host.co.uk", "bucket": "my_bucket",
             "cmkKeyArn": "arn:aws:kms:eu-west-1:123456:key/1", "prefix": "user"},
            {"address": "user2@host.co.uk", "bucket": "my_bucket2",
             "prefix": "dateTimeFormat(20060102)"},
            {"address": "USER@host.co.uk", "bucket": "dupe"},
            {"address": "CatchAll", "bucket": "rest"}
        ]
    }"#;

    #[test]
    fn mailboxes_become_routes_and_s3_sinks() {
        let toml = convert(CONFIG, "config.json").unwrap();
        let t: toml::Table = toml::from_str(&toml).unwrap();
        let routes = t["route"].as_array().unwrap();
        assert_eq!(routes.len(), 3, "{toml}");
        assert_eq!(routes[0]["match"][0].as_str(), Some("user@host.co.uk"));
        assert_eq!(routes[2]["match"][0].as_str(), Some("*"));
        let s0 = &t["sink"]["mailbox-0"];
        assert_eq!(s0["type"].as_str(), Some("s3"));
        assert_eq!(s0["bucket"].as_str(), Some("my_bucket"));
        assert_eq!(s0["region"].as_str(), Some("eu-west-1"));
        assert_eq!(s0["key"].as_str(), Some("user/{id}.eml"));
        assert_eq!(s0["sse"].as_str(), Some("aws:kms"));
        assert_eq!(
            s0["kms_key_id"].as_str(),
            Some("arn:aws:kms:eu-west-1:123456:key/1")
        );
        assert_eq!(s0["timeout"].as_str(), Some("10s"));
        let s1 = &t["sink"]["mailbox-1"];
        assert_eq!(
            s1["key"].as_str(),
            Some("dateTimeFormat(20060102)/{id}.eml")
        );
        assert!(s1.get("sse").is_none());
        assert!(
            toml.contains("mailbox 2 (USER@host.co.uk) skipped"),
            "{toml}"
        );
    }

    #[cfg(feature = "s3")]
    #[test]
    fn the_import_passes_config_check() {
        let dir = tempfile::tempdir().unwrap();
        let toml = convert(CONFIG, "config.json").unwrap();
        let loaded = crate::config::parse_str(&toml, "imported.toml", dir.path())
            .unwrap_or_else(|e| panic!("{e}\n{toml}"));
        crate::cli::serve::check(&loaded).unwrap_or_else(|e| panic!("{e}\n{toml}"));
    }

    #[test]
    fn what_is_not_a_mailtos3_config_is_said() {
        assert!(
            convert("{", "c.json")
                .unwrap_err()
                .starts_with("c.json: not a mailtos3")
        );
        assert!(
            convert("{\"mailboxes\": []}", "c.json")
                .unwrap_err()
                .contains("no mailboxes")
        );
    }
}
