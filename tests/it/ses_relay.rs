//! The aws-smtp-relay role end to end: a config made by `mailchute config
//! import-aws-smtp-relay` from aws-smtp-relay's own flags and environment (BCRYPT_HASH,
//! PASSWORD, TLS_KEY_PASS; AWS keys and region from the environment, as the SDK's chain
//! reads them), clients that are not ours (Python's smtplib, swaks) over STARTTLS and
//! implicit TLS with an encrypted PKCS#8 key, and what moto's SES v2 sent read back from
//! `/moto-api/data.json`.

use crate::harness::{
    Mailchute, free_port, python_ok, split_received, swaks, swaks_data, swaks_ok,
};
use crate::ses::{DOMAIN, moto_with_domain, wait_sent};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const PASSWORD: &str = "relay secret";
const KEY_PASS: &str = "key pass phrase";

/// A self-signed certificate for localhost and its key as encrypted PKCS#8 (OpenSSL's
/// default `-aes256`), in `dir`: (cert, key).
fn encrypted_cert(dir: &Path) -> (String, String) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let out = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-days", "2"])
        .args([
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ])
        .args(["-passout", &format!("pass:{KEY_PASS}")])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("run openssl");
    assert!(out.status.success(), "openssl: {out:?}");
    let text = std::fs::read_to_string(&key).expect("key");
    assert!(
        text.starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----"),
        "{text}"
    );
    (cert.display().to_string(), key.display().to_string())
}

/// aws-smtp-relay's environment for a user `app` with `PASSWORD` (bcrypt hash and, for
/// CRAM-MD5, the plaintext), the key's passphrase, and the AWS keys moto takes.
fn relay_env(hash: &str, with_plaintext: bool) -> Vec<(String, String)> {
    let mut env = vec![
        ("BCRYPT_HASH".to_string(), hash.to_string()),
        ("TLS_KEY_PASS".to_string(), KEY_PASS.to_string()),
        ("AWS_ACCESS_KEY_ID".to_string(), "testing".to_string()),
        ("AWS_SECRET_ACCESS_KEY".to_string(), "testing".to_string()),
        ("AWS_REGION".to_string(), "us-east-1".to_string()),
    ];
    if with_plaintext {
        env.push(("PASSWORD".to_string(), PASSWORD.to_string()));
    }
    env
}

/// The config `mailchute config import-aws-smtp-relay -- FLAGS` prints under `env`, with
/// the ses sink pointed at moto.
fn imported(flags: &[&str], env: &[(String, String)], endpoint: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_mailchute"))
        .args(["config", "import-aws-smtp-relay", "--"])
        .args(flags)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .output()
        .expect("run import");
    assert!(out.status.success(), "import: {out:?}");
    let toml = String::from_utf8(out.stdout).expect("UTF-8 TOML");
    // [sink.ses] is the last table the import prints.
    format!("{toml}endpoint = \"{endpoint}\"\ntimeout = \"10s\"\n")
}

fn start(config: &str, env: &[(String, String)]) -> Mailchute {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    Mailchute::start_with_env(config, &env)
}

fn message(subject: &str) -> Vec<u8> {
    format!(
        "From: App <app@{DOMAIN}>\r\nTo: a@x.test\r\nSubject: {subject}\r\n\
         Message-ID: <{subject}@{DOMAIN}>\r\n\r\nSent through the relay.\r\n"
    )
    .into_bytes()
}

/// STARTTLS required (530 before it, AUTH not offered before it), AUTH PLAIN, a wrong
/// password 535, three recipients of which the denied one is refused at RCPT.
const SMTPLIB_STARTTLS: &str = r#"
import json, smtplib, ssl, sys
port, path, password, sender = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
out = {}
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
s = smtplib.SMTP("127.0.0.1", port, local_hostname="app.test", timeout=60)
s.ehlo()
out["auth_before_tls"] = s.has_extn("auth")
out["mail_before_tls"] = s.mail(sender)[0]
s.rset()
s.starttls(context=ctx)
s.ehlo()
out["auth_after_tls"] = s.esmtp_features.get("auth", "")
try:
    s.login("app", "not the password")
    out["wrong"] = 235
except smtplib.SMTPAuthenticationError as e:
    out["wrong"] = e.smtp_code
s.quit()
s = smtplib.SMTP("127.0.0.1", port, local_hostname="app.test", timeout=60)
s.starttls(context=ctx)
s.ehlo()
s.user, s.password = "app", password
out["auth"] = s.auth("PLAIN", s.auth_plain)[0]
refused = s.sendmail(sender, ["a@x.test", "denied@x.test", "b@x.test"], open(path, "rb").read())
out["refused"] = {k: [v[0], v[1].decode()] for k, v in refused.items()}
s.quit()
print(json.dumps(out))
"#;

#[test]
fn ses_relay_imported_from_aws_smtp_relay_flags_over_starttls() {
    let mut moto = moto_with_domain();
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = encrypted_cert(dir.path());
    let env = relay_env(&bcrypt::hash(PASSWORD, 4).expect("bcrypt"), true);
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let config = imported(
        &[
            "-a",
            &addr,
            "-h",
            "relay.test",
            "-c",
            &cert,
            "-k",
            &key,
            "-s",
            "-u",
            "app",
            "-d",
            "^denied@",
            "-e",
            "relay-set",
        ],
        &env,
        &moto.endpoint(),
    );
    assert!(config.contains("\"cram-md5\""), "PASSWORD set: {config}");
    let m = start(&config, &env);

    let sender = format!("app@{DOMAIN}");
    let msg = message("relay-starttls");
    let path = dir.path().join("msg.eml");
    std::fs::write(&path, &msg).expect("write message");
    let out = python_ok(
        SMTPLIB_STARTTLS,
        &[
            &port.to_string(),
            &path.display().to_string(),
            PASSWORD,
            &sender,
        ],
    );
    let r: serde_json::Value = serde_json::from_slice(&out).expect("smtplib JSON");
    assert_eq!(r["auth_before_tls"], false, "{r}");
    assert_eq!(r["mail_before_tls"], 530, "{r}");
    let mechanisms = r["auth_after_tls"].as_str().unwrap_or("");
    assert!(
        mechanisms.contains("PLAIN") && mechanisms.contains("LOGIN"),
        "{r}"
    );
    assert!(mechanisms.contains("CRAM-MD5"), "{r}");
    assert_eq!(r["wrong"], 535, "{r}");
    assert_eq!(r["auth"], 235, "{r}\n{}", m.log());
    assert_eq!(r["refused"]["denied@x.test"][0], 550, "{r}");
    assert!(
        r["refused"]["denied@x.test"][1]
            .as_str()
            .is_some_and(|t| t.starts_with("5.7.1")),
        "{r}"
    );

    // CRAM-MD5 from swaks over STARTTLS, with the plaintext aws-smtp-relay kept in PASSWORD.
    let data = swaks_data(dir.path(), "swaks.eml", &message("relay-cram"));
    let t = swaks_ok(&[
        "--server",
        &addr,
        "--tls",
        "--helo",
        "app.test",
        "--from",
        &sender,
        "--to",
        "c@x.test",
        "--auth",
        "CRAM-MD5",
        "--auth-user",
        "app",
        "--auth-password",
        PASSWORD,
        "--data",
        &data,
    ]);
    assert!(t.contains("<~  235 "), "{t}");

    let sent = wait_sent(&moto, 2, Duration::from_secs(20));
    assert_eq!(sent.len(), 2, "{sent:?}\n{}", m.log());
    let first = &sent[0];
    assert_eq!(first.source.as_deref(), Some(sender.as_str()));
    // Exactly the accepted recipients, each once (moto appends the header addresses it
    // finds, here a@x.test again, after ours).
    assert_eq!(
        &first.destinations[..2],
        ["a@x.test", "b@x.test"],
        "{sent:?}"
    );
    assert!(
        !first.destinations.iter().any(|d| d.starts_with("denied@")),
        "{sent:?}"
    );
    let (received, rest) = split_received(&first.raw);
    assert_eq!(rest, &msg[..], "the bytes after our Received line");
    let received = String::from_utf8_lossy(received);
    assert!(received.contains("with ESMTPSA"), "{received}");
    assert!(received.contains("Authenticated sender: app"), "{received}");
    assert_eq!(&sent[1].destinations[..1], ["c@x.test"], "{sent:?}");
    drop(m);
    moto.stop();
}

const SMTPLIB_IMPLICIT_LOGIN: &str = r#"
import json, smtplib, ssl, sys
port, path, password, sender = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
s = smtplib.SMTP_SSL("127.0.0.1", port, local_hostname="app.test", timeout=60, context=ctx)
s.ehlo()
out = {"mechanisms": s.esmtp_features.get("auth", "")}
s.user, s.password = "app", password
out["auth"] = s.auth("LOGIN", s.auth_login, initial_response_ok=False)[0]
out["refused"] = list(s.sendmail(sender, ["d@x.test"], open(path, "rb").read()))
s.quit()
print(json.dumps(out))
"#;

#[test]
fn ses_relay_tls_only_with_auth_login_and_an_ip_allow_list() {
    let mut moto = moto_with_domain();
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = encrypted_cert(dir.path());
    // No PASSWORD: no CRAM-MD5, as with aws-smtp-relay.
    let env = relay_env(&bcrypt::hash(PASSWORD, 4).expect("bcrypt"), false);
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let config = imported(
        &["-a", &addr, "-c", &cert, "-k", &key, "-t", "-u", "app"],
        &env,
        &moto.endpoint(),
    );
    let m = start(&config, &env);
    let sender = format!("app@{DOMAIN}");
    let msg = message("relay-implicit");
    let path = dir.path().join("msg.eml");
    std::fs::write(&path, &msg).expect("write message");
    let out = python_ok(
        SMTPLIB_IMPLICIT_LOGIN,
        &[
            &port.to_string(),
            &path.display().to_string(),
            PASSWORD,
            &sender,
        ],
    );
    let r: serde_json::Value = serde_json::from_slice(&out).expect("smtplib JSON");
    assert_eq!(
        r["mechanisms"].as_str().map(str::trim),
        Some("PLAIN LOGIN"),
        "{r}"
    );
    assert_eq!(r["auth"], 235, "{r}\n{}", m.log());
    assert_eq!(r["refused"], serde_json::json!([]), "{r}");
    let sent = wait_sent(&moto, 1, Duration::from_secs(20));
    assert_eq!(sent.len(), 1, "{}", m.log());
    assert_eq!(split_received(&sent[0].raw).1, &msg[..]);
    drop(m);

    // -i with -u: aws-smtp-relay wanted an allowed address and the password; 127.0.0.1 is
    // not in the list, so it is turned away before the greeting.
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let config = imported(
        &["-a", &addr, "-i", "10.9.8.7", "-u", "app"],
        &env,
        &moto.endpoint(),
    );
    assert!(config.contains("require_auth = true"), "{config}");
    let _m = start_without_banner(dir.path(), &config, &env);
    let greeting = first_line_from(port);
    assert!(greeting.starts_with("554 5.7.1"), "{greeting:?}");
    let t = swaks(&["--server", &addr, "--from", &sender, "--to", "e@x.test"]);
    assert!(!t.status.success(), "{t:?}");
    assert_eq!(wait_sent(&moto, 2, Duration::from_secs(1)).len(), 1);
    moto.stop();
}

/// A mailchute whose listener refuses this client, so there is no banner to wait for.
fn start_without_banner(dir: &Path, config: &str, env: &[(String, String)]) -> Mailchute {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let sub = dir.join("refusing");
    std::fs::create_dir_all(&sub).expect("dir");
    Mailchute::spawn_with_env(&sub, config, &env)
}

/// What the server says first on a new connection (waiting for it to listen).
fn first_line_from(port: u16) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            s.set_read_timeout(Some(Duration::from_secs(5))).ok();
            let mut text = String::new();
            std::io::Read::read_to_string(&mut s, &mut text).ok();
            return text;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("nothing listening on {port}");
}

/// `relay_log = true`: aws-smtp-relay's own line per send, a sent message on stdout (empty
/// `Error`), a refused one on stderr, so what read aws-smtp-relay's two streams reads ours.
#[test]
fn ses_relay_log_lines_on_stdout_and_stderr_as_aws_smtp_relay_wrote_them() {
    let moto = moto_with_domain();
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let env = relay_env("", false);
    let config = format!(
        "{}relay_log = true\n",
        imported(&["-a", &addr], &env, &moto.endpoint())
    );
    let conf = dir.path().join("relay.toml");
    std::fs::write(&conf, config).expect("write config");
    let (stdout, stderr) = (dir.path().join("stdout"), dir.path().join("stderr"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_mailchute"))
        .arg("serve")
        .arg("-c")
        .arg(&conf)
        .current_dir(dir.path())
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdout(std::fs::File::create(&stdout).expect("stdout file"))
        .stderr(std::fs::File::create(&stderr).expect("stderr file"))
        .spawn()
        .expect("spawn mailchute");
    crate::harness::wait_for_banner(&addr, false, Instant::now() + Duration::from_secs(30))
        .expect("listening");
    let sender = format!("app@{DOMAIN}");
    let ok = swaks(&["--server", &addr, "--from", &sender, "--to", "f@x.test"]);
    let refused = swaks(&[
        "--server",
        &addr,
        "--from",
        "who@unverified.test",
        "--to",
        "g@x.test",
    ]);
    crate::harness::terminate(&mut child, Duration::from_secs(10));
    assert!(ok.status.success(), "{ok:?}");
    assert!(!refused.status.success(), "{refused:?}");

    let lines = |path: &Path| -> Vec<serde_json::Value> {
        std::fs::read_to_string(path)
            .expect("read stream")
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v.get("Time").is_some() && v.get("event").is_none())
            .collect()
    };
    let out = lines(&stdout);
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0]["From"], sender.as_str());
    assert_eq!(out[0]["To"], serde_json::json!(["f@x.test"]));
    assert_eq!(out[0]["IP"], "127.0.0.1");
    assert_eq!(out[0]["Error"], "");
    let err = lines(&stderr);
    assert_eq!(err.len(), 1, "{err:?}");
    assert_eq!(err[0]["To"], serde_json::json!(["g@x.test"]));
    assert!(
        err[0]["Error"]
            .as_str()
            .is_some_and(|e| e.starts_with("5.7.1 ") && e.contains("MessageRejected")),
        "{err:?}"
    );
}
