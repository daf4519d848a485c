//! The acceptor from an encrypted key, and what each way of getting the passphrase wrong
//! says. Keys are made by the openssl tool (installed by scripts/test).

use super::*;
use std::process::Command;

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("the openssl command is needed for the TLS tests");
    assert!(out.status.success(), "openssl {args:?}: {out:?}");
}

/// cert.pem, plain.pem, and the same key encrypted as PKCS#8 and as legacy DEK-Info PEM,
/// both with the passphrase "pw".
fn files() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    openssl(
        d,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "plain.pem",
        ]
        .iter()
        .chain(&["-subj", "/CN=localhost", "-days", "1", "-out", "cert.pem"])
        .copied()
        .collect::<Vec<_>>(),
    );
    openssl(
        d,
        &[
            "pkcs8",
            "-topk8",
            "-v2",
            "aes-256-cbc",
            "-in",
            "plain.pem",
            "-passout",
            "pass:pw",
            "-out",
            "p8.pem",
        ],
    );
    openssl(
        d,
        &[
            "rsa",
            "-aes256",
            "-traditional",
            "-in",
            "plain.pem",
            "-passout",
            "pass:pw",
            "-out",
            "legacy.pem",
        ],
    );
    dir
}

fn env_with(pass: &'static str) -> impl Fn(&str) -> Option<OsString> {
    move |var| (var == "TLS_KEY_PASS").then(|| OsString::from(pass))
}

fn key_error(dir: &Path, key: &str, var: Option<&str>, pass: &'static str) -> String {
    match acceptor_with(&dir.join("cert.pem"), &dir.join(key), var, env_with(pass)) {
        Ok(_) => panic!("{key}: accepted"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn encrypted_keys_make_an_acceptor() {
    let dir = files();
    let d = dir.path();
    for key in ["p8.pem", "legacy.pem"] {
        acceptor_with(
            &d.join("cert.pem"),
            &d.join(key),
            Some("TLS_KEY_PASS"),
            env_with("pw"),
        )
        .unwrap_or_else(|e| panic!("{key}: {e}"));
    }
    acceptor_with(
        &d.join("cert.pem"),
        &d.join("plain.pem"),
        None,
        env_with("pw"),
    )
    .unwrap();
}

#[test]
fn passphrase_problems_name_the_file_and_the_variable() {
    let dir = files();
    let d = dir.path();
    for key in ["p8.pem", "legacy.pem"] {
        let path = d.join(key).display().to_string();
        assert_eq!(
            key_error(d, key, Some("TLS_KEY_PASS"), "nope"),
            format!("key file {path}: wrong passphrase (from env TLS_KEY_PASS) or corrupt key")
        );
        let e = key_error(d, key, None, "pw");
        assert!(
            e.starts_with(&format!("key file {path}: is encrypted (")),
            "{e}"
        );
        assert!(e.contains("but key_passphrase_env is not set"), "{e}");
        assert_eq!(
            key_error(d, key, Some("OTHER_PASS"), "pw"),
            format!(
                "key file {path}: is encrypted; the variable OTHER_PASS that key_passphrase_env \
                 names for its passphrase is not set in mailchute's environment"
            )
        );
        assert!(key_error(d, key, Some("TLS_KEY_PASS"), "").ends_with("passphrase is empty"));
    }
    let e = key_error(d, "plain.pem", Some("TLS_KEY_PASS"), "pw");
    assert!(
        e.contains("is not encrypted, but key_passphrase_env = \"TLS_KEY_PASS\" is set"),
        "{e}"
    );
    let e = key_error(d, "missing.pem", None, "pw");
    assert!(
        e.starts_with(&format!("key file {}: ", d.join("missing.pem").display())),
        "{e}"
    );
    // The key of another certificate: rustls says so, naming both files.
    openssl(
        d,
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            "other.pem",
        ],
    );
    let e = key_error(d, "other.pem", None, "pw");
    assert!(e.starts_with("TLS setup with "), "{e}");
}
