//! Encrypted listener keys, end to end: `mailchute serve` with a key that openssl
//! encrypted (PKCS#8 PBES2, and the legacy `DEK-Info` PEM aws-smtp-relay documents), the
//! passphrase in `TLS_KEY_PASS`, and Python's smtplib + ssl as the client: STARTTLS, a
//! message, and the fingerprint of the certificate it was served — compared with the
//! fingerprint openssl computes of the file. SIGHUP swaps in a renewed cert and key; a
//! renewal whose key does not decrypt keeps the old one and says which file.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::harness::*;

const PASS: &str = "correct horse $battery";

/// STARTTLS, then one message; prints the served certificate's SHA-256 (lowercase hex)
/// and the refused recipients.
const SEND_OVER_STARTTLS: &str = r#"
import hashlib, json, smtplib, ssl, sys
port, path = int(sys.argv[1]), sys.argv[2]
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
s = smtplib.SMTP("127.0.0.1", port, local_hostname="client.test", timeout=60)
s.starttls(context=ctx)
der = s.sock.getpeercert(binary_form=True)
refused = s.sendmail("from@client.test", ["rcpt@test"], open(path, "rb").read())
s.quit()
print(json.dumps({"sha256": hashlib.sha256(der).hexdigest(), "refused": list(refused)}))
"#;

fn openssl(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("run openssl");
    assert!(out.status.success(), "openssl {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// How the key file is encrypted.
#[derive(Clone, Copy)]
enum KeyForm {
    /// `openssl pkcs8 -topk8 -v2 aes-256-cbc`: `BEGIN ENCRYPTED PRIVATE KEY`.
    Pkcs8,
    /// `openssl rsa -aes256 -traditional`: `BEGIN RSA PRIVATE KEY` + `DEK-Info`.
    LegacyRsa,
}

/// A fresh self-signed certificate for localhost as `<name>.crt`, its key encrypted with
/// `pass` as `<name>.key`; returns (cert, key, the certificate's SHA-256 per openssl).
fn cert_and_key(dir: &Path, name: &str, form: KeyForm, pass: &str) -> (PathBuf, PathBuf, String) {
    let (crt, plain, key) = (
        format!("{name}.crt"),
        format!("{name}.plain"),
        format!("{name}.key"),
    );
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
            "-keyout",
            &plain,
            "-out",
            &crt,
        ],
    );
    let passout = format!("pass:{pass}");
    match form {
        KeyForm::Pkcs8 => openssl(
            dir,
            &[
                "pkcs8",
                "-topk8",
                "-v2",
                "aes-256-cbc",
                "-in",
                &plain,
                "-passout",
                &passout,
                "-out",
                &key,
            ],
        ),
        KeyForm::LegacyRsa => openssl(
            dir,
            &[
                "rsa",
                "-aes256",
                "-traditional",
                "-in",
                &plain,
                "-passout",
                &passout,
                "-out",
                &key,
            ],
        ),
    };
    fs::remove_file(dir.join(&plain)).unwrap();
    let text = fs::read_to_string(dir.join(&key)).unwrap();
    match form {
        KeyForm::Pkcs8 => assert!(text.starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----")),
        KeyForm::LegacyRsa => {
            assert!(text.starts_with("-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-256-CBC,"), "{text}")
        }
    }
    let fp = openssl(
        dir,
        &["x509", "-in", &crt, "-noout", "-fingerprint", "-sha256"],
    );
    let hex = fp
        .trim()
        .rsplit('=')
        .next()
        .unwrap()
        .replace(':', "")
        .to_ascii_lowercase();
    (dir.join(crt), dir.join(key), hex)
}

fn listener(cert: &Path, key: &Path) -> String {
    format!(
        "tls = \"starttls\"\ncert = \"{}\"\nkey = \"{}\"\nkey_passphrase_env = \"TLS_KEY_PASS\"\n",
        cert.display(),
        key.display()
    )
}

/// Sends one message over STARTTLS; returns the served certificate's SHA-256.
fn send(port: u16, m: &Mailchute, subject: &str) -> String {
    let msg = message(subject, "Over TLS with an encrypted key.\r\n");
    let file = m.path(&format!("{subject}.eml"));
    fs::write(&file, &msg).unwrap();
    let out = python_ok(
        SEND_OVER_STARTTLS,
        &[&port.to_string(), file.to_str().unwrap()],
    );
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["refused"], serde_json::json!([]), "{v}");
    // Read back: the message is in the Maildir after our Received line.
    let stored = read_maildir(&m.path("Maildir"));
    let mine: Vec<_> = stored
        .iter()
        .filter(|s| String::from_utf8_lossy(s).contains(&format!("Subject: {subject}")))
        .collect();
    assert_eq!(mine.len(), 1, "log:\n{}", m.log());
    assert_stored(mine[0], &crlf_to_lf(&msg));
    v["sha256"].as_str().unwrap().to_string()
}

fn start(cert: &Path, key: &Path) -> (Mailchute, u16) {
    let port = free_port();
    let config = sync_config(port, &listener(cert, key), MAILDIR_SINK);
    let m = Mailchute::start_with_env(&config, &[("TLS_KEY_PASS", PASS)]);
    (m, port)
}

#[test]
fn encrypted_pkcs8_key_passphrase_from_env() {
    let certs = tempfile::tempdir().unwrap();
    let (cert, key, fp) = cert_and_key(certs.path(), "a", KeyForm::Pkcs8, PASS);
    let (m, port) = start(&cert, &key);
    assert_eq!(send(port, &m, "pkcs8-key"), fp);
}

#[test]
fn legacy_dek_info_rsa_key_passphrase_from_env() {
    let certs = tempfile::tempdir().unwrap();
    let (cert, key, fp) = cert_and_key(certs.path(), "a", KeyForm::LegacyRsa, PASS);
    let (m, port) = start(&cert, &key);
    assert_eq!(send(port, &m, "legacy-key"), fp);
}

fn sighup(m: &Mailchute) {
    // SAFETY: kill(2) on the pid of a child the harness spawned and has not reaped.
    let rc = unsafe { libc::kill(m.pid().unwrap() as libc::pid_t, libc::SIGHUP) };
    assert_eq!(rc, 0);
}

/// Waits for the `n`th log line whose message is `what`; returns it.
fn wait_log(m: &Mailchute, what: &str, n: usize) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let lines: Vec<_> = m
            .log_lines()
            .into_iter()
            .filter(|l| l["message"] == what)
            .collect();
        if lines.len() >= n {
            return lines[n - 1].clone();
        }
        assert!(
            Instant::now() < deadline,
            "no log line {what:?} #{n}\n--- log ---\n{}",
            m.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn sighup_serves_a_renewed_encrypted_cert_and_keeps_the_old_on_a_bad_key() {
    let certs = tempfile::tempdir().unwrap();
    let d = certs.path();
    let (cert, key, fp_a) = cert_and_key(d, "a", KeyForm::Pkcs8, PASS);
    let (m, port) = start(&cert, &key);
    assert_eq!(send(port, &m, "before-renewal"), fp_a);

    // Renewal in place, as certbot hooks do: same paths, new files (the key now in the
    // legacy form, with the same passphrase: the environment does not change on SIGHUP).
    let (new_cert, new_key, fp_b) = cert_and_key(d, "b", KeyForm::LegacyRsa, PASS);
    assert_ne!(fp_a, fp_b);
    fs::rename(&new_cert, &cert).unwrap();
    fs::rename(&new_key, &key).unwrap();
    sighup(&m);
    wait_log(&m, "configuration reloaded", 1);
    assert_eq!(send(port, &m, "after-renewal"), fp_b);

    // A renewal whose key was encrypted with another passphrase: refused, named, and
    // the certificate of the last good load is served on.
    let (bad_cert, bad_key, _) = cert_and_key(d, "c", KeyForm::Pkcs8, "another passphrase");
    fs::rename(&bad_cert, &cert).unwrap();
    fs::rename(&bad_key, &key).unwrap();
    sighup(&m);
    let refused = wait_log(&m, "reload refused; the running configuration stays", 1);
    let error = refused["error"].as_str().unwrap_or_default().to_string();
    assert!(
        error.contains(&format!(
            "key file {}: wrong passphrase (from env TLS_KEY_PASS) or corrupt key",
            key.display()
        )),
        "{refused}"
    );
    assert!(!m.log().contains(PASS), "the passphrase is in the log");
    assert_eq!(send(port, &m, "after-bad-renewal"), fp_b);
}

#[test]
fn encrypted_key_without_its_variable_fails_the_start_naming_it() {
    let certs = tempfile::tempdir().unwrap();
    let (cert, key, _) = cert_and_key(certs.path(), "a", KeyForm::LegacyRsa, PASS);
    let dir = tempfile::tempdir().unwrap();
    let config = sync_config(free_port(), &listener(&cert, &key), MAILDIR_SINK);
    fs::write(dir.path().join("mailchute.toml"), &config).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_mailchute"))
        .args(["serve", "-c", "mailchute.toml"])
        .current_dir(dir.path())
        .env_remove("TLS_KEY_PASS")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "key file {}: is encrypted; the variable TLS_KEY_PASS that key_passphrase_env \
             names for its passphrase is not set",
            key.display()
        )),
        "{stderr}"
    );
}

/// `config check` loads the key as `serve` does: a wrong passphrase fails the check
/// (exit 78, naming the file and the variable), not only the start; the right one passes.
#[test]
fn config_check_tries_the_key_and_its_passphrase() {
    let certs = tempfile::tempdir().unwrap();
    let (cert, key, _) = cert_and_key(certs.path(), "a", KeyForm::Pkcs8, PASS);
    let dir = tempfile::tempdir().unwrap();
    let config = sync_config(free_port(), &listener(&cert, &key), MAILDIR_SINK);
    fs::write(dir.path().join("mailchute.toml"), &config).unwrap();
    let check = |pass: &str| {
        Command::new(env!("CARGO_BIN_EXE_mailchute"))
            .args(["config", "check", "-c", "mailchute.toml"])
            .current_dir(dir.path())
            .env("TLS_KEY_PASS", pass)
            .output()
            .unwrap()
    };
    let out = check("not the passphrase");
    assert_eq!(out.status.code(), Some(78), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "key file {}: wrong passphrase (from env TLS_KEY_PASS)",
            key.display()
        )),
        "{stderr}"
    );
    let out = check(PASS);
    assert!(out.status.success(), "{out:?}");
}
