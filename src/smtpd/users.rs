//! SMTP AUTH users: a listener's `[[listener.user]]` tables and its `users` file's
//! `[[user]]` tables, their secrets read from the config, env vars or files when the
//! listener's settings are built (so again on SIGHUP), and the checks of what a client
//! presents. The session ([`crate::proto`]) only decodes credentials; this is where they
//! are verified.

use crate::config::{ListenerConfig, MatchRule, UserConfig};
use crate::proto::Credentials;
use hmac::{KeyInit, Mac};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

type HmacMd5 = hmac::Hmac<md5::Md5>;

/// The users a listener checks AUTH against, by name.
#[derive(Default)]
pub struct Users {
    by_name: HashMap<String, User>,
    /// The highest bcrypt cost among the users' hashes (0 when none has one): a check that
    /// has no hash of its own (an unknown user, a user with only a password) runs bcrypt
    /// at this cost too, so the time to answer does not tell which it was.
    dummy_cost: u32,
    /// The hash such checks run against, made on the first one (on the blocking pool).
    dummy_hash: OnceLock<Result<String, String>>,
}

/// Names only: never a secret.
impl std::fmt::Debug for Users {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names: Vec<&String> = self.by_name.keys().collect();
        names.sort();
        f.debug_struct("Users").field("names", &names).finish()
    }
}

struct User {
    /// For PLAIN and LOGIN.
    bcrypt: Option<String>,
    /// For CRAM-MD5 (its key), and PLAIN/LOGIN when there is no hash.
    password: Option<String>,
    /// Allowed envelope senders; empty = any.
    senders: Vec<MatchRule>,
}

/// The `users` file: `[[user]]` tables and nothing else.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UsersFile {
    #[serde(default)]
    user: Vec<UserConfig>,
}

/// What checking credentials found.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Valid: the user name to record.
    Valid(String),
    /// Unknown user, wrong secret, or acting as another user.
    Invalid,
    /// Could not check (the hash worker failed): a temporary failure, not the client's.
    Unavailable(String),
}

impl Users {
    /// The users of listener `l`: its inline users and those of its `users` file. Errors
    /// name the file (or "user" for inline ones), the user and the key. `cram_md5`: the
    /// listener offers CRAM-MD5, so every user needs its password in plaintext.
    pub fn load(l: &ListenerConfig, cram_md5: bool) -> Result<Users, String> {
        let mut users = Users::default();
        for u in &l.inline_users {
            users.add(u, "", None, cram_md5)?;
        }
        if let Some(path) = &l.users {
            let origin = format!("{}: ", path.display());
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("users: cannot read {}: {e}", path.display()))?;
            let file: UsersFile =
                toml::from_str(&text).map_err(|e| format!("{origin}{}", e.message()))?;
            if file.user.is_empty() {
                return Err(format!("{origin}no [[user]] tables"));
            }
            warn_if_readable(path, &file.user);
            for u in &file.user {
                users.add(u, &origin, path.parent(), cram_md5)?;
            }
        }
        Ok(users)
    }

    fn add(
        &mut self,
        u: &UserConfig,
        origin: &str,
        base: Option<&Path>,
        cram_md5: bool,
    ) -> Result<(), String> {
        if u.name.is_empty() || u.name.chars().any(|c| c.is_control() || c == ' ') {
            return Err(format!(
                "{origin}user {:?}: name: expected a non-empty name without spaces",
                u.name
            ));
        }
        let err = |k: &str, m: String| format!("{origin}user {:?}: {k}: {m}", u.name);
        let bcrypt = secret(
            ("bcrypt", &u.bcrypt),
            ("bcrypt_env", &u.bcrypt_env),
            ("bcrypt_file", &u.bcrypt_file),
            base,
        )
        .map_err(|(k, m)| err(k, m))?;
        if let Some((k, hash)) = &bcrypt {
            let Ok(parts) = hash.parse::<bcrypt::HashParts>() else {
                return Err(err(
                    k,
                    "is not a bcrypt hash (expected one like \"$2y$10$...\", 60 characters)".into(),
                ));
            };
            self.dummy_cost = self.dummy_cost.max(parts.get_cost());
        }
        let password = secret(
            ("password", &u.password),
            ("password_env", &u.password_env),
            ("password_file", &u.password_file),
            base,
        )
        .map_err(|(k, m)| err(k, m))?;
        if bcrypt.is_none() && password.is_none() {
            return Err(err(
                "bcrypt",
                "is missing: give bcrypt, bcrypt_env or bcrypt_file (a bcrypt hash), or \
                 password, password_env or password_file"
                    .into(),
            ));
        }
        if cram_md5 && password.is_none() {
            return Err(err(
                "password",
                "is missing: auth includes \"cram-md5\", which needs the password itself \
                 (password, password_env or password_file); a bcrypt hash cannot answer it"
                    .into(),
            ));
        }
        let mut senders = Vec::new();
        for (i, s) in u.senders.iter().enumerate() {
            senders.push(MatchRule::parse(s).map_err(|m| err(&format!("senders[{i}]"), m))?);
        }
        let user = User {
            bcrypt: bcrypt.map(|(_, h)| h),
            password: password.map(|(_, p)| p),
            senders,
        };
        if self.by_name.insert(u.name.clone(), user).is_some() {
            return Err(err("name", "is given twice".into()));
        }
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// Checks what a client presented. bcrypt runs on the blocking pool (tens of ms of
    /// CPU). Every PLAIN/LOGIN check runs one: against the user's hash, or, for an unknown
    /// user or one with only a password, against a dummy at the highest cost among the
    /// hashes; so the time to answer does not tell which users exist.
    pub async fn verify(self: &Arc<Self>, c: &Credentials) -> Verdict {
        match c {
            Credentials::Password {
                authzid,
                user,
                password,
            } => {
                let known = self.by_name.get(user.as_str());
                let hash = known.and_then(|u| u.bcrypt.clone());
                let ok = match self.bcrypt_verify(password.clone(), hash.clone()).await {
                    Err(e) => return Verdict::Unavailable(e),
                    Ok(ok) if hash.is_some() => ok,
                    // The bcrypt above only took the time; the password is what counts.
                    Ok(_) => known
                        .and_then(|u| u.password.as_deref())
                        .is_some_and(|p| ct_eq(&Sha256::digest(p), &Sha256::digest(password))),
                };
                // Acting as another user is not offered.
                match ok && authzid.is_none() {
                    true => Verdict::Valid(user.clone()),
                    false => Verdict::Invalid,
                }
            }
            Credentials::CramMd5 {
                user,
                challenge,
                digest,
            } => {
                let key = self
                    .by_name
                    .get(user.as_str())
                    .and_then(|u| u.password.as_deref());
                // A key nobody has, for the same work when the user is unknown.
                let mut mac = match HmacMd5::new_from_slice(key.unwrap_or("\0").as_bytes()) {
                    Ok(m) => m,
                    Err(e) => return Verdict::Unavailable(e.to_string()),
                };
                mac.update(challenge.as_bytes());
                // verify_slice compares in constant time.
                match mac.verify_slice(digest).is_ok() && key.is_some() {
                    true => Verdict::Valid(user.clone()),
                    false => Verdict::Invalid,
                }
            }
        }
    }

    /// Whether `user` may send as `from` (its `senders`; empty = any). The null sender
    /// matches only `*`.
    pub fn sender_allowed(&self, user: &str, from: &str) -> bool {
        let Some(u) = self.by_name.get(user) else {
            return false;
        };
        if u.senders.is_empty() {
            return true;
        }
        u.senders.iter().any(|rule| rule.matches(from))
    }
}

/// One secret given at most one way: inline, from an env var, or from a file. `Some((key,
/// value))` names the key it came from for later errors.
fn secret<'a>(
    inline: (&'a str, &Option<String>),
    env: (&'a str, &Option<String>),
    file: (&'a str, &Option<PathBuf>),
    base: Option<&Path>,
) -> Result<Option<(&'a str, String)>, (&'a str, String)> {
    let given: Vec<&str> = [
        (inline.0, inline.1.is_some()),
        (env.0, env.1.is_some()),
        (file.0, file.1.is_some()),
    ]
    .into_iter()
    .filter(|(_, set)| *set)
    .map(|(k, _)| k)
    .collect();
    if given.len() > 1 {
        return Err((
            given[1],
            format!("give only one of {}, {}, {}", inline.0, env.0, file.0),
        ));
    }
    if let Some(v) = inline.1 {
        if v.is_empty() {
            return Err((inline.0, "is empty".into()));
        }
        return Ok(Some((inline.0, v.clone())));
    }
    if let Some(var) = env.1 {
        let v = std::env::var(var).map_err(|e| match e {
            std::env::VarError::NotPresent => (env.0, format!("variable {var} is not set")),
            std::env::VarError::NotUnicode(_) => {
                (env.0, format!("variable {var} is not valid UTF-8"))
            }
        })?;
        if v.is_empty() {
            return Err((env.0, format!("variable {var} is empty")));
        }
        return Ok(Some((env.0, v)));
    }
    if let Some(p) = file.1 {
        let p = match base {
            Some(b) if p.is_relative() => b.join(p),
            _ => p.clone(),
        };
        let text = std::fs::read_to_string(&p)
            .map_err(|e| (file.0, format!("cannot read {}: {e}", p.display())))?;
        // A file written by `echo` ends in a newline that is not part of the secret.
        let v = text.trim_end_matches(['\r', '\n']).to_string();
        if v.is_empty() {
            return Err((file.0, format!("{} is empty", p.display())));
        }
        return Ok(Some((file.0, v)));
    }
    Ok(None)
}

/// A users file with plaintext passwords or hashes that others can read is a leak waiting
/// to happen; say so once per load (like the config file itself).
fn warn_if_readable(path: &Path, users: &[UserConfig]) {
    use std::os::unix::fs::PermissionsExt;
    let inline_secrets = users
        .iter()
        .any(|u| u.password.is_some() || u.bcrypt.is_some());
    if let Ok(meta) = std::fs::metadata(path)
        && inline_secrets
        && meta.permissions().mode() & 0o004 != 0
    {
        tracing::warn!(
            file = %path.display(),
            "the users file holds secrets and is readable by everyone: chmod o-r it"
        );
    }
}

/// The permits for bcrypt checks, one per core, shared by every listener of the process.
fn bcrypt_turns() -> &'static tokio::sync::Semaphore {
    static TURNS: OnceLock<tokio::sync::Semaphore> = OnceLock::new();
    TURNS.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        tokio::sync::Semaphore::new(cores)
    })
}

impl Users {
    /// bcrypt on the blocking pool. `None` checks against a hash of nothing anyone knows,
    /// at [`Users::dummy_cost`], so an unknown user takes as long as a known one.
    async fn bcrypt_verify(
        self: &Arc<Self>,
        password: String,
        hash: Option<String>,
    ) -> Result<bool, String> {
        // As many checks at once as there are cores: a flood of logins (each 50-200 ms of
        // CPU) then queues here instead of starving deliveries of every core.
        let _turn = bcrypt_turns()
            .acquire()
            .await
            .map_err(|e| format!("password check failed: {e}"))?;
        let users = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let hash = match hash {
                Some(h) => h,
                None => users.dummy_hash()?.to_string(),
            };
            bcrypt::verify(password, &hash).map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| format!("password check failed: {e}"))?
    }

    /// Made once per set of users; only ever called on the blocking pool.
    fn dummy_hash(&self) -> Result<&str, String> {
        // No user has a hash (password-only users, as CRAM-MD5 needs): the cost of
        // `htpasswd -B`, which aws-smtp-relay's docs use.
        let cost = match self.dummy_cost {
            0 => 10,
            c => c,
        };
        self.dummy_hash
            .get_or_init(|| bcrypt::hash("mailchute-no-such-user", cost).map_err(|e| e.to_string()))
            .as_deref()
            .map_err(Clone::clone)
    }
}

/// Equal-length byte strings compared without an early exit.
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listener(toml_text: &str) -> ListenerConfig {
        toml::from_str(&format!("address = \"127.0.0.1:1\"\n{toml_text}")).unwrap()
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
    }

    fn plain(user: &str, pw: &str) -> Credentials {
        Credentials::Password {
            authzid: None,
            user: user.into(),
            password: pw.into(),
        }
    }

    #[test]
    fn bcrypt_and_password_users() {
        let dir = tempfile::tempdir().unwrap();
        let hash = bcrypt::hash("s3cret", 4).unwrap();
        std::fs::write(dir.path().join("pw"), "from-file\n").unwrap();
        let file = dir.path().join("users.toml");
        std::fs::write(
            &file,
            format!(
                "[[user]]\nname = \"app\"\nbcrypt = \"{hash}\"\nsenders = [\"@example.org\"]\n\
                 [[user]]\nname = \"ops\"\npassword_file = \"pw\"\n"
            ),
        )
        .unwrap();
        let l = listener(&format!(
            "users = \"{}\"\n[[user]]\nname = \"inline\"\npassword = \"p\"\nsenders = [\"/^x-/\"]\n",
            file.display()
        ));
        let users = Arc::new(Users::load(&l, false).unwrap());
        assert_eq!(users.len(), 3);
        let rt = rt();
        let v = |c: Credentials| rt.block_on(users.verify(&c));
        assert_eq!(v(plain("app", "s3cret")), Verdict::Valid("app".into()));
        assert_eq!(v(plain("app", "wrong")), Verdict::Invalid);
        assert_eq!(v(plain("ops", "from-file")), Verdict::Valid("ops".into()));
        assert_eq!(v(plain("ops", "from-file\n")), Verdict::Invalid);
        assert_eq!(v(plain("inline", "p")), Verdict::Valid("inline".into()));
        assert_eq!(v(plain("nobody", "p")), Verdict::Invalid);
        // Acting as another user is refused even with the right password.
        let as_other = Credentials::Password {
            authzid: Some("ops".into()),
            user: "app".into(),
            password: "s3cret".into(),
        };
        assert_eq!(v(as_other), Verdict::Invalid);

        // An unknown user is checked against a hash as slow as the slowest user's.
        assert_eq!(users.dummy_cost, 4);

        assert!(users.sender_allowed("app", "a@example.org"));
        assert!(users.sender_allowed("app", "a@EXAMPLE.org"));
        assert!(!users.sender_allowed("app", "a@other.org"));
        assert!(!users.sender_allowed("app", ""));
        assert!(users.sender_allowed("ops", "anyone@anywhere"));
        assert!(users.sender_allowed("ops", ""));
        assert!(users.sender_allowed("inline", "x-1@b"));
        assert!(!users.sender_allowed("inline", "y@b"));
        assert!(!users.sender_allowed("nobody", "x-1@b"));
    }

    #[test]
    fn checks_without_a_hash_cost_as_much_as_the_dearest_hash() {
        let (h4, h5) = (bcrypt::hash("a", 4).unwrap(), bcrypt::hash("b", 5).unwrap());
        let l = listener(&format!(
            "[[user]]\nname = \"a\"\nbcrypt = \"{h4}\"\n\
             [[user]]\nname = \"b\"\nbcrypt = \"{h5}\"\n\
             [[user]]\nname = \"pw\"\npassword = \"p\"\n"
        ));
        let users = Arc::new(Users::load(&l, false).unwrap());
        assert_eq!(users.dummy_cost, 5);
        assert!(users.dummy_hash().unwrap().starts_with("$2b$05$"));
        let rt = rt();
        let v = |c: Credentials| rt.block_on(users.verify(&c));
        // The password user is checked by its password, after the dummy bcrypt.
        assert_eq!(v(plain("pw", "p")), Verdict::Valid("pw".into()));
        assert_eq!(v(plain("pw", "x")), Verdict::Invalid);
        assert_eq!(v(plain("b", "b")), Verdict::Valid("b".into()));
        assert_eq!(v(plain("nobody", "p")), Verdict::Invalid);
        // A hash's password never opens a password-only user, nor the reverse.
        assert_eq!(v(plain("a", "p")), Verdict::Invalid);
    }

    #[test]
    fn cram_md5_rfc2195_example() {
        let l = listener("[[user]]\nname = \"tim\"\npassword = \"tanstaaftanstaaf\"\n");
        let users = Arc::new(Users::load(&l, true).unwrap());
        let hex = "b913a602c7eda7a495b4e6e7334d3890";
        let digest: [u8; 16] =
            std::array::from_fn(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap());
        let c = |user: &str, challenge: &str| Credentials::CramMd5 {
            user: user.into(),
            challenge: challenge.into(),
            digest,
        };
        let rt = rt();
        let challenge = "<1896.697170952@postoffice.reston.mci.net>";
        assert_eq!(
            rt.block_on(users.verify(&c("tim", challenge))),
            Verdict::Valid("tim".into())
        );
        assert_eq!(
            rt.block_on(users.verify(&c("tim", "<1897.697170952@x>"))),
            Verdict::Invalid
        );
        assert_eq!(
            rt.block_on(users.verify(&c("tom", challenge))),
            Verdict::Invalid
        );
    }

    #[test]
    fn errors_name_file_user_and_key() {
        let e = Users::load(
            &listener("[[user]]\nname = \"app\"\nbcrypt_env = \"MAILCHUTE_TEST_UNSET_HASH\"\n"),
            false,
        )
        .unwrap_err();
        assert_eq!(
            e,
            "user \"app\": bcrypt_env: variable MAILCHUTE_TEST_UNSET_HASH is not set"
        );
        let e = Users::load(
            &listener("[[user]]\nname = \"app\"\nbcrypt = \"$2y$10$short\"\n"),
            false,
        )
        .unwrap_err();
        assert!(
            e.starts_with("user \"app\": bcrypt: is not a bcrypt hash"),
            "{e}"
        );
        let hash = bcrypt::hash("x", 4).unwrap();
        let e = Users::load(
            &listener(&format!("[[user]]\nname = \"app\"\nbcrypt = \"{hash}\"\n")),
            true,
        )
        .unwrap_err();
        assert!(
            e.starts_with("user \"app\": password: is missing: auth includes \"cram-md5\""),
            "{e}"
        );
        let e = Users::load(
            &listener("[[user]]\nname = \"app\"\npassword = \"a\"\npassword_env = \"B\"\n"),
            false,
        )
        .unwrap_err();
        assert!(
            e.starts_with("user \"app\": password_env: give only one of"),
            "{e}"
        );
        let e = Users::load(&listener("[[user]]\nname = \"app\"\n"), false).unwrap_err();
        assert!(e.starts_with("user \"app\": bcrypt: is missing"), "{e}");
        let e = Users::load(
            &listener("[[user]]\nname = \"app\"\npassword = \"a\"\nsenders = [\"nodomain\"]\n"),
            false,
        )
        .unwrap_err();
        assert!(e.starts_with("user \"app\": senders[0]: "), "{e}");
        let e = Users::load(
            &listener("[[user]]\nname = \"a\"\npassword = \"a\"\n[[user]]\nname = \"a\"\npassword = \"b\"\n"),
            false,
        )
        .unwrap_err();
        assert_eq!(e, "user \"a\": name: is given twice");

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("users.toml");
        std::fs::write(&file, "[[user]]\nname = \"app\"\npasword = \"x\"\n").unwrap();
        let l = listener(&format!("users = \"{}\"\n", file.display()));
        let e = Users::load(&l, false).unwrap_err();
        assert!(
            e.starts_with(&format!("{}: unknown field `pasword`", file.display())),
            "{e}"
        );
        std::fs::write(
            &file,
            "[[user]]\nname = \"app\"\npassword_file = \"missing\"\n",
        )
        .unwrap();
        let e = Users::load(&l, false).unwrap_err();
        assert!(
            e.starts_with(&format!(
                "{}: user \"app\": password_file: cannot read {}",
                file.display(),
                dir.path().join("missing").display()
            )),
            "{e}"
        );
    }
}
