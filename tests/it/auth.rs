//! SMTP AUTH and access control on a `sync` listener, with clients that are not ours
//! (Python's smtplib, swaks, a raw socket) and Maildir read back with Python's `mailbox`.
//! All traffic comes from 127.0.0.1, so "an address outside allow_ips" is tested with an
//! allow_ips that leaves 127.0.0.1 out.

use std::path::Path;

use crate::harness::*;

const PASSWORD: &str = "correct horse";

/// A users file with `app` (bcrypt hash, may send only from @example.org) and `ops`
/// (plaintext password, any sender), in `dir`.
fn users_file(dir: &Path) -> std::path::PathBuf {
    let hash = bcrypt::hash(PASSWORD, 4).unwrap();
    let path = dir.join("users.toml");
    std::fs::write(
        &path,
        format!(
            "[[user]]\nname = \"app\"\nbcrypt = \"{hash}\"\nsenders = [\"@example.org\"]\n\n\
             [[user]]\nname = \"ops\"\npassword = \"{PASSWORD}\"\n"
        ),
    )
    .unwrap();
    path
}

fn tls_keys(dir: &Path, mode: &str) -> String {
    let (cert, key) = self_signed_cert(dir);
    format!(
        "tls = \"{mode}\"\ncert = \"{}\"\nkey = \"{}\"\n",
        cert.display(),
        key.display()
    )
}

fn start(listener_extra: &str) -> (Mailchute, u16) {
    let port = free_port();
    let m = Mailchute::start(&sync_config(port, listener_extra, MAILDIR_SINK));
    (m, port)
}

/// Starts a listener with `listener_extra` that must refuse 127.0.0.1 as it connects:
/// `554 5.7.1` instead of a greeting (the harness's readiness wait expects a 220).
fn assert_refused_at_connect(listener_extra: &str) {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _m = Mailchute::spawn_in(dir.path(), &sync_config(port, listener_extra, MAILDIR_SINK));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut greeting = String::new();
    while std::time::Instant::now() < deadline {
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
                .ok();
            greeting.clear();
            std::io::Read::read_to_string(&mut s, &mut greeting).ok();
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(greeting.starts_with("554 5.7.1"), "{greeting:?}");
}

/// The Received header of the one stored message.
fn single_received(m: &Mailchute, sent: &[u8]) -> String {
    let msgs = read_maildir(&m.path("Maildir"));
    assert_eq!(msgs.len(), 1, "log:\n{}", m.log());
    assert_stored(&msgs[0], &crlf_to_lf(sent));
    String::from_utf8_lossy(split_received(&msgs[0]).0).into_owned()
}

/// smtplib over STARTTLS: AUTH not offered before TLS; MAIL before AUTH is 530; AUTH
/// PLAIN with the bcrypt user; a sender outside its `senders` is 550 5.7.1; the message
/// from an allowed sender is stored. Prints the replies as JSON.
const SMTPLIB_STARTTLS_PLAIN: &str = r#"
import json, smtplib, ssl, sys
port, path, password = int(sys.argv[1]), sys.argv[2], sys.argv[3]
out = {}
s = smtplib.SMTP("127.0.0.1", port, local_hostname="client.test", timeout=60)
s.ehlo()
out["auth_before_tls"] = s.has_extn("auth")
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
s.starttls(context=ctx)
s.ehlo()
out["auth_after_tls"] = s.esmtp_features.get("auth", "")
code, msg = s.mail("app@example.org")
out["mail_before_auth"] = [code, msg.decode()]
s.rset()
s.user, s.password = "app", password
code, msg = s.auth("PLAIN", s.auth_plain)
out["auth"] = [code, msg.decode()]
code, msg = s.mail("someone@elsewhere.org")
out["foreign_sender"] = [code, msg.decode()]
s.rset()
s.sendmail("app@example.org", ["rcpt@test"], open(path, "rb").read())
s.quit()
print(json.dumps(out))
"#;

#[test]
fn smtplib_starttls_auth_plain_bcrypt_user() {
    let dir = tempfile::tempdir().unwrap();
    let users = users_file(dir.path());
    let (m, port) = start(&format!(
        "{}auth = [\"plain\", \"login\"]\nusers = \"{}\"\n",
        tls_keys(dir.path(), "starttls"),
        users.display()
    ));
    let msg = message("auth-plain", "Authenticated.\r\n");
    let file = dir.path().join("msg.eml");
    std::fs::write(&file, &msg).unwrap();
    let out = python_ok(
        SMTPLIB_STARTTLS_PLAIN,
        &[&port.to_string(), file.to_str().unwrap(), PASSWORD],
    );
    let out: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(out["auth_before_tls"], false, "{out}");
    // (smtplib keeps the space after the keyword)
    assert_eq!(
        out["auth_after_tls"].as_str().map(str::trim),
        Some("PLAIN LOGIN"),
        "{out}"
    );
    assert_eq!(out["mail_before_auth"][0], 530, "{out}");
    assert_eq!(
        out["mail_before_auth"][1], "5.7.0 Authentication required",
        "{out}"
    );
    assert_eq!(out["auth"][0], 235, "{out}");
    assert_eq!(out["foreign_sender"][0], 550, "{out}");
    assert!(
        out["foreign_sender"][1]
            .as_str()
            .unwrap()
            .starts_with("5.7.1 "),
        "{out}"
    );
    let received = single_received(&m, &msg);
    assert!(received.contains("with ESMTPSA"), "{received}");
    assert!(
        received.contains("(Authenticated sender: app)"),
        "{received}"
    );
    let log = m.log();
    assert!(
        log.contains("auth ok: client=127.0.0.1 user=app mechanism=PLAIN listener=mx"),
        "{log}"
    );
    assert!(!log.contains(PASSWORD), "password in the log:\n{log}");
}

/// smtplib over implicit TLS with AUTH LOGIN, with and without the initial response.
const SMTPLIB_IMPLICIT_LOGIN: &str = r#"
import json, smtplib, ssl, sys
port, path, password, initial = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4] == "1"
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
s = smtplib.SMTP_SSL("127.0.0.1", port, local_hostname="client.test", timeout=60, context=ctx)
s.ehlo()
s.user, s.password = "app", password
code, msg = s.auth("LOGIN", s.auth_login, initial_response_ok=initial)
s.sendmail("app@example.org", ["rcpt@test"], open(path, "rb").read())
s.quit()
print(json.dumps([code, msg.decode()]))
"#;

#[test]
fn smtplib_implicit_tls_auth_login_inline_user() {
    let dir = tempfile::tempdir().unwrap();
    let hash = bcrypt::hash(PASSWORD, 4).unwrap();
    let hash_file = dir.path().join("app.hash");
    std::fs::write(&hash_file, format!("{hash}\n")).unwrap();
    let (m, port) = start(&format!(
        "{}auth = [\"login\"]\n[[listener.user]]\nname = \"app\"\nbcrypt_file = \"{}\"\n",
        tls_keys(dir.path(), "implicit"),
        hash_file.display()
    ));
    for (i, initial) in ["1", "0"].iter().enumerate() {
        let msg = message(&format!("auth-login-{i}"), "Implicit TLS, LOGIN.\r\n");
        let file = dir.path().join("msg.eml");
        std::fs::write(&file, &msg).unwrap();
        let out = python_ok(
            SMTPLIB_IMPLICIT_LOGIN,
            &[&port.to_string(), file.to_str().unwrap(), PASSWORD, initial],
        );
        let out: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(out[0], 235, "{out}");
    }
    let msgs = read_maildir(&m.path("Maildir"));
    assert_eq!(msgs.len(), 2, "{}", m.log());
    for stored in &msgs {
        let received = String::from_utf8_lossy(split_received(stored).0).into_owned();
        assert!(received.contains("with ESMTPSA"), "{received}");
    }
}

#[test]
fn swaks_cram_md5() {
    let dir = tempfile::tempdir().unwrap();
    let users = users_file(dir.path());
    // CRAM-MD5 sends no password, so it is offered without TLS; every user needs the
    // plaintext, hence only `ops` in this file.
    std::fs::write(
        &users,
        format!("[[user]]\nname = \"ops\"\npassword = \"{PASSWORD}\"\n"),
    )
    .unwrap();
    let (m, port) = start(&format!(
        "auth = [\"cram-md5\"]\nusers = \"{}\"\n",
        users.display()
    ));
    let msg = message("cram-md5", "Challenge answered.\r\n");
    let server = format!("127.0.0.1:{port}");
    let data = swaks_data(dir.path(), "swaks.eml", &msg);
    let t = swaks_ok(&[
        "--server",
        &server,
        "--helo",
        "client.test",
        "--from",
        "ops@example.org",
        "--to",
        "rcpt@test",
        "--auth",
        "CRAM-MD5",
        "--auth-user",
        "ops",
        "--auth-password",
        PASSWORD,
        "--data",
        &data,
    ]);
    assert!(t.contains("<-  235 2.7.0"), "{t}");
    let received = single_received(&m, &msg);
    assert!(received.contains("with ESMTPA"), "{received}");
    // A wrong password: 535.
    let out = swaks(&[
        "--server",
        &server,
        "--from",
        "ops@example.org",
        "--to",
        "rcpt@test",
        "--auth",
        "CRAM-MD5",
        "--auth-user",
        "ops",
        "--auth-password",
        "wrong",
    ]);
    let t = String::from_utf8_lossy(&out.stdout);
    assert!(
        t.contains("<** 535 5.7.8 Authentication credentials invalid"),
        "{t}"
    );
}

#[test]
fn wrong_password_535_delay_fail2ban_line_and_421() {
    let dir = tempfile::tempdir().unwrap();
    let users = users_file(dir.path());
    let (m, port) = start(&format!(
        "auth = [\"plain\"]\nallow_plaintext_auth = true\nusers = \"{}\"\n",
        users.display()
    ));
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let mut c = RawSmtp::connect(port);
    let ext = c.ehlo("client.test");
    assert!(ext.contains(&"AUTH PLAIN".to_string()), "{ext:?}");
    let wrong = b64("\0app\0guess");
    let started = std::time::Instant::now();
    let r = c.expect(&format!("AUTH PLAIN {wrong}"), 535);
    assert_eq!(r.text(), "535 5.7.8 Authentication credentials invalid");
    let r = c.expect(&format!("AUTH PLAIN {wrong}"), 535);
    assert_eq!(r.text(), "535 5.7.8 Authentication credentials invalid");
    // 1 s, then 2 s before the replies.
    assert!(
        started.elapsed() >= std::time::Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    // The third failure in one session closes it.
    c.send(format!("AUTH PLAIN {wrong}\r\n").as_bytes());
    assert_eq!(c.read_reply().code, 535);
    assert_eq!(c.read_reply().code, 421);
    c.finish();
    let log = m.log();
    let failed = log
        .lines()
        .filter(|l| {
            l.contains("auth failed: client=127.0.0.1 user=app mechanism=PLAIN listener=mx")
        })
        .count();
    assert_eq!(failed, 3, "{log}");
    assert!(!log.contains("guess"), "password in the log:\n{log}");
    assert!(!log.contains(&wrong), "AUTH blob in the log:\n{log}");

    // A user name with spaces and '=' cannot forge fields in the fail2ban line (another
    // instance: this one's delays for 127.0.0.1 are at 8 s by now).
    let (m, port) = start(&format!(
        "auth = [\"plain\"]\nallow_plaintext_auth = true\nusers = \"{}\"\n",
        users.display()
    ));
    let mut c = RawSmtp::connect(port);
    c.ehlo("client.test");
    c.expect(
        &format!("AUTH PLAIN {}", b64("\0x client=10.0.0.1\0guess")),
        535,
    );
    // The right password after a failure works.
    c.expect(
        &format!("AUTH PLAIN {}", b64(&format!("\0app\0{PASSWORD}"))),
        235,
    );
    c.quit();
    let log = m.log();
    assert!(
        log.contains("auth failed: client=127.0.0.1 user=x?client?10.0.0.1 mechanism=PLAIN"),
        "{log}"
    );
    assert!(!log.contains("guess"), "password in the log:\n{log}");
}

/// Timing tells no user names: a 535 comes as long after the credentials as the failure
/// delay says (1 s, 2 s, 4 s for the first three from one address), whether the user is
/// unknown, has a plaintext password (no bcrypt at all) or a slow bcrypt hash.
#[test]
fn a_failed_auth_takes_as_long_for_any_user() {
    let dir = tempfile::tempdir().unwrap();
    // Cost 10: a check takes a good part of the first 1 s delay (more in a debug build),
    // so an answer right after the check would show; a plaintext user takes none.
    let hash = bcrypt::hash(PASSWORD, 10).unwrap();
    let users = dir.path().join("users.toml");
    std::fs::write(
        &users,
        format!(
            "[[user]]\nname = \"slow\"\nbcrypt = \"{hash}\"\n\n\
             [[user]]\nname = \"ops\"\npassword = \"{PASSWORD}\"\n"
        ),
    )
    .unwrap();
    let (m, port) = start(&format!(
        "auth = [\"plain\"]\nallow_plaintext_auth = true\nusers = \"{}\"\n",
        users.display()
    ));
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let mut took = Vec::new();
    for (user, delay) in [("nobody", 1), ("ops", 2), ("slow", 4)] {
        // A connection each: the delay is per address, the 421 per session.
        let mut c = RawSmtp::connect(port);
        c.ehlo("client.test");
        let started = std::time::Instant::now();
        c.expect(
            &format!("AUTH PLAIN {}", b64(&format!("\0{user}\0guess"))),
            535,
        );
        let t = started.elapsed();
        c.quit();
        took.push((user, t));
        let d = std::time::Duration::from_secs(delay);
        assert!(
            t >= d && t < d + std::time::Duration::from_millis(100),
            "{user}: {t:?}, expected {d:?} (all: {took:?})\n{}",
            m.log()
        );
    }
}

#[test]
fn allow_ips_send_without_auth_others_must_authenticate() {
    let dir = tempfile::tempdir().unwrap();
    let users = users_file(dir.path());
    let auth = format!(
        "auth = [\"plain\"]\nallow_plaintext_auth = true\nusers = \"{}\"\n",
        users.display()
    );
    // 127.0.0.1 is allowed: no AUTH needed.
    let (m, port) = start(&format!("{auth}allow_ips = [\"127.0.0.1/32\"]\n"));
    let msg = message("allowed-ip", "From an allowed address.\r\n");
    let mut c = RawSmtp::connect(port);
    c.ehlo("client.test");
    let r = c.data_raw("any@where.test", &["rcpt@test"], &dot_stuff(&msg));
    assert_eq!(r.code, 250, "{r:?}");
    c.quit();
    let received = single_received(&m, &msg);
    assert!(received.contains("with ESMTP id"), "{received}");
    // An allow_ips without 127.0.0.1: it may still connect (AUTH is its way in), but MAIL
    // before AUTH is 530.
    let (_m2, port) = start(&format!("{auth}allow_ips = [\"192.0.2.0/24\"]\n"));
    let mut c = RawSmtp::connect(port);
    c.ehlo("client.test");
    let r = c.expect("MAIL FROM:<any@where.test>", 530);
    assert_eq!(r.text(), "530 5.7.0 Authentication required");
    c.quit();
    // Without auth, that allow_ips keeps it out altogether.
    assert_refused_at_connect("allow_ips = [\"192.0.2.0/24\"]\n");
}

#[test]
fn require_auth_refuses_an_allowed_ip_without_auth() {
    let dir = tempfile::tempdir().unwrap();
    let users = users_file(dir.path());
    let auth = format!(
        "auth = [\"plain\"]\nallow_plaintext_auth = true\nrequire_auth = true\nusers = \"{}\"\n",
        users.display()
    );
    let (m, port) = start(&format!("{auth}allow_ips = [\"127.0.0.1/32\"]\n"));
    let mut c = RawSmtp::connect(port);
    c.ehlo("client.test");
    c.expect("MAIL FROM:<ops@example.org>", 530);
    use base64::Engine;
    let creds = base64::engine::general_purpose::STANDARD.encode(format!("\0ops\0{PASSWORD}"));
    c.expect(&format!("AUTH PLAIN {creds}"), 235);
    let msg = message("require-auth", "After AUTH.\r\n");
    let r = c.data_raw("ops@example.org", &["rcpt@test"], &dot_stuff(&msg));
    assert_eq!(r.code, 250, "{r:?}");
    c.quit();
    single_received(&m, &msg);
    // With require_auth, allow_ips also limits who may connect.
    assert_refused_at_connect(&format!("{auth}allow_ips = [\"192.0.2.0/24\"]\n"));
}

/// smtplib with three recipients, one of them denied: the refused dict and nothing else.
const SMTPLIB_THREE: &str = r#"
import json, smtplib, sys
port, path = int(sys.argv[1]), sys.argv[2]
s = smtplib.SMTP("127.0.0.1", port, local_hostname="client.test", timeout=60)
refused = s.sendmail("from@client.test", ["a@test", "blocked@test", "b@test"], open(path, "rb").read())
s.quit()
print(json.dumps({k: [v[0], v[1].decode()] for k, v in refused.items()}))
"#;

#[test]
fn recipient_deny_refuses_one_rcpt_the_others_get_it_once() {
    let port = free_port();
    let m = Mailchute::start(&sync_config(
        port,
        "recipient_deny = \"^blocked@\"\n",
        "type = \"maildir\"\npath = \"./Maildir/{local}\"\n",
    ));
    let msg = message("recipient-deny", "Two of three.\r\n");
    let file = m.path("msg.eml");
    std::fs::write(&file, &msg).unwrap();
    let out = python_ok(SMTPLIB_THREE, &[&port.to_string(), file.to_str().unwrap()]);
    let refused: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(
        refused,
        serde_json::json!({"blocked@test": [550, "5.7.1 <blocked@test>: Recipient address rejected by policy"]})
    );
    let boxes = read_mailboxes(
        "maildir",
        &[
            m.path("Maildir/a"),
            m.path("Maildir/b"),
            m.path("Maildir/blocked"),
        ],
    );
    assert_eq!(boxes[0].len(), 1, "{}", m.log());
    assert_eq!(boxes[1].len(), 1, "{}", m.log());
    assert!(boxes[2].is_empty());
    assert_stored(&boxes[0][0], &crlf_to_lf(&msg));
}
