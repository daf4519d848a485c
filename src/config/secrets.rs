//! A config file that holds secrets in its text and that every local user can read: said
//! at start (DESIGN "Config — the contract"), naming the file, the keys and the fix. The
//! users file has its own check where it is read (`smtpd::users`).

use super::loaded::{Loaded, Source};
use std::fmt::Write as _;

/// A warning when the config file holds secrets in its text (a key `password` or `bcrypt`,
/// or ending in `password`, `passphrase` or `secret`; `…_env` and `…_file` keys only name
/// where a secret is) and others may read it (mode & 0o004). Names the file, the keys and
/// the fix.
pub fn readable_secrets_warning(loaded: &Loaded) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let Source::File(path) = &loaded.source else {
        return None;
    };
    let text = loaded.text.as_deref()?;
    let mode = std::fs::metadata(path).ok()?.permissions().mode();
    if mode & 0o004 == 0 {
        return None;
    }
    let table: toml::Table = toml::from_str(text).ok()?;
    let mut keys = Vec::new();
    secret_keys(&toml::Value::Table(table), "", &mut keys);
    if keys.is_empty() {
        return None;
    }
    let file = path.display();
    let mut fix = format!("chmod 640 {file}");
    if let Some(user) = &loaded.config.server.user {
        let group = loaded.config.server.group.as_deref().unwrap_or(user);
        let _ = write!(
            fix,
            " and chgrp {group} {file} (the run user {user} reads it again on SIGHUP)"
        );
    }
    Some(format!(
        "{file} holds secrets ({}) and is readable by every user (mode {:04o}): {fix}; \
         or move them to *_env / *_file keys",
        keys.join(", "),
        mode & 0o7777
    ))
}

fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    k == "bcrypt"
        || ["password", "passphrase", "secret"]
            .iter()
            .any(|s| k.ends_with(s))
}

fn secret_keys(value: &toml::Value, at: &str, out: &mut Vec<String>) {
    match value {
        toml::Value::Table(t) => {
            for (k, v) in t {
                let path = if at.is_empty() {
                    k.clone()
                } else {
                    format!("{at}.{k}")
                };
                if is_secret_key(k) && v.as_str().is_some_and(|s| !s.is_empty()) {
                    out.push(path);
                } else {
                    secret_keys(v, &path, out);
                }
            }
        }
        toml::Value::Array(a) => {
            for (i, v) in a.iter().enumerate() {
                secret_keys(v, &format!("{at}[{i}]"), out);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;

    fn load(dir: &Path, text: &str, mode: u32) -> Loaded {
        let path = dir.join("m.toml");
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        super::super::load_file_with_env(&path, Vec::new()).unwrap()
    }

    const INLINE_USER: &str = "[server]\nuser = \"nobody\"\n\n[[listener]]\naddress = \"127.0.0.1:2525\"\nauth = [\"plain\"]\nallow_plaintext_auth = true\n\n[[listener.user]]\nname = \"app\"\npassword = \"hunter2\"\n\n[[route]]\nmatch = [\"*\"]\nsinks = [\"m\"]\n\n[sink.m]\ntype = \"maildir\"\npath = \"./M\"\n";

    #[test]
    fn a_world_readable_config_with_an_inline_password_is_warned_about() {
        let dir = tempfile::tempdir().unwrap();
        let l = load(dir.path(), INLINE_USER, 0o644);
        let w = readable_secrets_warning(&l).expect("a warning");
        let file = dir.path().join("m.toml").display().to_string();
        assert!(w.contains(&format!("chmod 640 {file}")), "{w}");
        assert!(w.contains("listener[0].user[0].password"), "{w}");
        assert!(w.contains("chgrp nobody"), "{w}");
        assert!(w.contains("0644"), "{w}");
    }
    #[test]
    fn no_warning_when_others_cannot_read_or_nothing_is_secret() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            readable_secrets_warning(&load(dir.path(), INLINE_USER, 0o640)),
            None
        );
        let env_only = INLINE_USER.replace("password = \"hunter2\"", "password_env = \"PW\"");
        assert_eq!(
            readable_secrets_warning(&load(dir.path(), &env_only, 0o644)),
            None
        );
    }
    #[test]
    fn secret_keys_are_found_at_any_depth() {
        let v: toml::Value = toml::from_str(
            "a = 1\n[sink.x]\nsmtp_password = \"p\"\nbcrypt_file = \"/f\"\n[filter.d]\nsecret = \"s\"\nsecret_env = \"E\"\n",
        )
        .unwrap();
        let mut keys = Vec::new();
        secret_keys(&v, "", &mut keys);
        assert_eq!(keys, ["filter.d.secret", "sink.x.smtp_password"]);
    }
}
