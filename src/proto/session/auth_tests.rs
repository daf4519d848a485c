//! AUTH in the session: bytes in, replies and `Auth` events out.

use super::tests::{Client, Ev, cfg, greeted};
use super::*;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;

fn b64(s: &[u8]) -> String {
    STANDARD.encode(s)
}

fn auth_cfg(mechs: &[Mechanism]) -> SessionConfig {
    SessionConfig {
        tls_active: true,
        auth: AuthConfig {
            mechanisms: mechs.to_vec(),
            allow_plaintext: false,
            required: true,
            max_failures: 3,
            nonce: 41,
            time: 1700000000,
        },
        ..cfg()
    }
}

fn all() -> SessionConfig {
    auth_cfg(&[Mechanism::Plain, Mechanism::Login, Mechanism::CramMd5])
}

fn password(user: &str, pw: &str) -> Credentials {
    Credentials::Password {
        authzid: None,
        user: user.into(),
        password: pw.into(),
    }
}

#[test]
fn ehlo_advertises_configured_mechanisms() {
    let mut c = Client::new(all());
    c.s.take_output();
    assert!(
        c.send(b"EHLO c\r\n")
            .ends_with("250 AUTH PLAIN LOGIN CRAM-MD5\r\n")
    );
    // Before TLS only CRAM-MD5 (it sends no password) ...
    let mut c = Client::new(SessionConfig {
        tls_active: false,
        ..all()
    });
    c.s.take_output();
    let out = c.send(b"EHLO c\r\n");
    assert!(out.ends_with("250 AUTH CRAM-MD5\r\n"), "{out}");
    // ... and nothing at all when only PLAIN/LOGIN are configured.
    let mut c = Client::new(SessionConfig {
        tls_active: false,
        starttls: true,
        ..auth_cfg(&[Mechanism::Plain, Mechanism::Login])
    });
    c.s.take_output();
    let out = c.send(b"EHLO c\r\n");
    assert!(!out.contains("AUTH"), "{out}");
    assert!(
        c.send(b"AUTH PLAIN AGEAYg==\r\n")
            .starts_with("538 5.7.11 ")
    );
    // require_tls: nothing before STARTTLS, not even CRAM-MD5, and AUTH there is 530.
    let mut c = Client::new(SessionConfig {
        tls_active: false,
        starttls: true,
        require_tls: true,
        ..all()
    });
    c.s.take_output();
    let out = c.send(b"EHLO c\r\n");
    assert!(!out.contains("AUTH"), "{out}");
    assert!(c.send(b"AUTH CRAM-MD5\r\n").starts_with("530 5.7.0 "));
    // allow_plaintext offers them in clear.
    let mut cfg = auth_cfg(&[Mechanism::Login]);
    cfg.tls_active = false;
    cfg.auth.allow_plaintext = true;
    let mut c = Client::new(cfg);
    c.s.take_output();
    assert!(c.send(b"EHLO c\r\n").ends_with("250 AUTH LOGIN\r\n"));
    // No AUTH configured: never advertised, refused.
    let mut c = greeted(cfg_no_auth());
    assert_eq!(
        c.send(b"AUTH PLAIN\r\n"),
        "503 5.5.1 Error: authentication not enabled\r\n"
    );
}

fn cfg_no_auth() -> SessionConfig {
    cfg()
}

#[test]
fn plain_with_initial_response() {
    let mut c = greeted(all());
    let line = format!("AUTH PLAIN {}\r\n", b64(b"\0app\0s3cret"));
    assert_eq!(
        c.send(line.as_bytes()),
        "235 2.7.0 Authentication successful\r\n"
    );
    assert_eq!(
        c.take_events(),
        [Ev::Auth(Mechanism::Plain, password("app", "s3cret"))]
    );
    assert_eq!(c.s.auth_user(), Some("app"));
    // Twice: 503.
    assert!(c.send(line.as_bytes()).starts_with("503 5.5.1 "));
    assert!(c.take_events().is_empty());
    // Now MAIL is allowed.
    assert_eq!(c.send(b"MAIL FROM:<a@b>\r\n"), "250 2.1.0 Ok\r\n");
}

#[test]
fn plain_after_continuation_and_authzid() {
    let mut c = greeted(all());
    assert_eq!(c.send(b"AUTH PLAIN\r\n"), "334 \r\n");
    let resp = format!("{}\r\n", b64(b"admin\0app\0pw"));
    c.answers.push(Some(Reply::new(535, "5.7.8", "nope")));
    assert_eq!(c.send(resp.as_bytes()), "535 5.7.8 nope\r\n");
    assert_eq!(
        c.take_events(),
        [Ev::Auth(
            Mechanism::Plain,
            Credentials::Password {
                authzid: Some("admin".into()),
                user: "app".into(),
                password: "pw".into()
            }
        )]
    );
    assert_eq!(c.s.auth_user(), None);
    // The same authzid as the user is no proxy request.
    let resp = format!("AUTH PLAIN {}\r\n", b64(b"app\0app\0pw"));
    c.send(resp.as_bytes());
    assert_eq!(
        c.take_events(),
        [Ev::Auth(Mechanism::Plain, password("app", "pw"))]
    );
}

#[test]
fn login_two_prompts() {
    let mut c = greeted(all());
    assert_eq!(c.send(b"auth login\r\n"), "334 VXNlcm5hbWU6\r\n");
    assert_eq!(
        c.send(format!("{}\r\n", b64(b"app")).as_bytes()),
        "334 UGFzc3dvcmQ6\r\n"
    );
    assert_eq!(
        c.send(format!("{}\r\n", b64(b"pw d")).as_bytes()),
        "235 2.7.0 Authentication successful\r\n"
    );
    assert_eq!(
        c.take_events(),
        [Ev::Auth(Mechanism::Login, password("app", "pw d"))]
    );
    // With the user as initial response, one prompt.
    let mut c = greeted(all());
    let line = format!("AUTH LOGIN {}\r\n", b64(b"app"));
    assert_eq!(c.send(line.as_bytes()), "334 UGFzc3dvcmQ6\r\n");
    c.send(format!("{}\r\n", b64(b"x")).as_bytes());
    assert_eq!(
        c.take_events(),
        [Ev::Auth(Mechanism::Login, password("app", "x"))]
    );
}

#[test]
fn cram_md5_challenge_and_response() {
    let mut c = greeted(all());
    let out = c.send(b"AUTH CRAM-MD5\r\n");
    let challenge = out
        .strip_prefix("334 ")
        .and_then(|r| r.strip_suffix("\r\n"))
        .unwrap();
    let challenge = String::from_utf8(STANDARD.decode(challenge).unwrap()).unwrap();
    assert_eq!(challenge, "<42.1700000000@mx.test>");
    let resp = b64(b"app 00112233445566778899aabbccddeeFF");
    c.answers.push(Some(Reply::new(535, "5.7.8", "no")));
    assert!(c.send(format!("{resp}\r\n").as_bytes()).starts_with("535 "));
    let digest: [u8; 16] = std::array::from_fn(|i| i as u8 * 0x11);
    assert_eq!(
        c.take_events(),
        [Ev::Auth(
            Mechanism::CramMd5,
            Credentials::CramMd5 {
                user: "app".into(),
                challenge,
                digest
            }
        )]
    );
    // A second attempt gets another challenge.
    let out = c.send(b"AUTH CRAM-MD5\r\n");
    let again = STANDARD
        .decode(out.trim_start_matches("334 ").trim_end())
        .unwrap();
    assert_eq!(again, b"<43.1700000000@mx.test>");
    // Malformed responses.
    assert!(
        c.send(format!("{}\r\n", b64(b"app nothex")).as_bytes())
            .starts_with("501 5.5.2 ")
    );
    c.send(b"AUTH CRAM-MD5\r\n");
    assert!(
        c.send(format!("{}\r\n", b64(b"nospace")).as_bytes())
            .starts_with("501 5.5.2 ")
    );
    // No initial response for CRAM-MD5.
    assert!(c.send(b"AUTH CRAM-MD5 eA==\r\n").starts_with("501 5.5.2 "));
    assert!(c.take_events().is_empty());
}

#[test]
fn cancel_and_bad_base64() {
    let mut c = greeted(all());
    assert_eq!(c.send(b"AUTH LOGIN\r\n"), "334 VXNlcm5hbWU6\r\n");
    assert_eq!(
        c.send(b"*\r\n"),
        "501 5.0.0 Error: authentication cancelled\r\n"
    );
    assert_eq!(
        c.send(b"AUTH PLAIN !!!\r\n"),
        "501 5.5.2 Error: invalid base64 data\r\n"
    );
    assert_eq!(c.send(b"AUTH PLAIN\r\n"), "334 \r\n");
    assert_eq!(
        c.send(b"not base64!\r\n"),
        "501 5.5.2 Error: invalid base64 data\r\n"
    );
    // PLAIN without its two NULs.
    assert!(
        c.send(format!("AUTH PLAIN {}\r\n", b64(b"app pw")).as_bytes())
            .starts_with("501 5.5.2 ")
    );
    // Back to commands after each.
    assert_eq!(c.send(b"NOOP\r\n"), "250 2.0.0 Ok\r\n");
    assert!(c.take_events().is_empty());
}

#[test]
fn sequence_errors() {
    // Before EHLO, and after HELO (AUTH is an ESMTP extension).
    let mut c = Client::new(all());
    c.s.take_output();
    assert_eq!(
        c.send(b"AUTH PLAIN\r\n"),
        "503 5.5.1 Error: send EHLO first\r\n"
    );
    c.send(b"HELO c\r\n");
    assert!(c.send(b"AUTH PLAIN\r\n").starts_with("503 5.5.1 "));
    // During a transaction.
    let mut cfg = all();
    cfg.auth.required = false;
    let mut c = greeted(cfg);
    c.send(b"MAIL FROM:<a@b>\r\n");
    assert_eq!(
        c.send(b"AUTH PLAIN\r\n"),
        "503 5.5.1 Error: MAIL transaction in progress\r\n"
    );
    // Unknown or unconfigured mechanism.
    let mut c = greeted(auth_cfg(&[Mechanism::Plain]));
    assert_eq!(
        c.send(b"AUTH GSSAPI\r\n"),
        "504 5.5.4 Error: unrecognized authentication type\r\n"
    );
    assert!(c.send(b"AUTH CRAM-MD5\r\n").starts_with("504 5.5.4 "));
    assert!(c.send(b"AUTH\r\n").starts_with("501 "));
}

#[test]
fn mail_before_auth_when_required() {
    let mut c = greeted(all());
    assert_eq!(
        c.send(b"MAIL FROM:<a@b>\r\n"),
        "530 5.7.0 Authentication required\r\n"
    );
    assert!(c.take_events().is_empty());
    // Not required for this client: MAIL goes on.
    let mut cfg = all();
    cfg.auth.required = false;
    let mut c = greeted(cfg);
    assert_eq!(c.send(b"MAIL FROM:<a@b> AUTH=<>\r\n"), "250 2.1.0 Ok\r\n");
}

#[test]
fn too_many_failures_close() {
    let mut c = greeted(all());
    let line = format!("AUTH PLAIN {}\r\n", b64(b"\0app\0bad"));
    for _ in 0..3 {
        c.answers.push(Some(Reply::new(535, "5.7.8", "bad")));
    }
    assert_eq!(c.send(line.as_bytes()), "535 5.7.8 bad\r\n");
    assert_eq!(c.send(line.as_bytes()), "535 5.7.8 bad\r\n");
    let out = c.send(line.as_bytes());
    assert_eq!(
        out,
        "535 5.7.8 bad\r\n421 4.7.0 mx.test Error: too many failed authentications\r\n"
    );
    assert!(c.s.is_closed());
    // A refusal that is not 4xx/5xx is coerced.
    let mut c = greeted(all());
    c.answers.push(Some(Reply::new(235, "2.7.0", "oops")));
    assert!(c.send(line.as_bytes()).starts_with("451 4.3.0 "));
    assert_eq!(c.s.auth_user(), None);
}

#[test]
fn starttls_forgets_auth() {
    let mut cfg = all();
    cfg.tls_active = false;
    cfg.starttls = true;
    let mut c = greeted(cfg);
    c.send(b"AUTH CRAM-MD5\r\n");
    c.send(format!("{}\r\n", b64(b"app 00112233445566778899aabbccddeeff")).as_bytes());
    assert_eq!(c.s.auth_user(), Some("app"));
    c.send(b"STARTTLS\r\n");
    c.s.tls_started();
    assert_eq!(c.s.auth_user(), None);
}

#[test]
fn pipelined_and_split_sasl_lines() {
    let mut c = greeted(all());
    let input = format!(
        "AUTH LOGIN\r\n{}\r\n{}\r\nMAIL FROM:<a@b>\r\n",
        b64(b"u"),
        b64(b"p")
    );
    // Fed byte by byte, the same answers in the same order.
    let mut out = String::new();
    for b in input.as_bytes() {
        out.push_str(&c.send(std::slice::from_ref(b)));
    }
    assert_eq!(
        out,
        "334 VXNlcm5hbWU6\r\n334 UGFzc3dvcmQ6\r\n235 2.7.0 Authentication successful\r\n\
         250 2.1.0 Ok\r\n"
    );
}

#[test]
fn sasl_lines_never_in_the_transcript() {
    let mut cfg = all();
    cfg.transcript = true;
    let mut c = greeted(cfg);
    c.s.take_exchanges();
    c.send(b"AUTH LOGIN\r\nc2VjcmV0\r\n");
    let lines: Vec<_> =
        c.s.take_exchanges()
            .into_iter()
            .map(|e| (e.verb, e.line))
            .collect();
    assert_eq!(
        lines,
        [
            ("AUTH", Some("AUTH LOGIN".to_string())),
            ("AUTH", Some("(SASL response, 8 bytes)".to_string()))
        ]
    );
    // Debug of credentials hides the password.
    let shown = format!("{:?}", password("app", "hunter2"));
    assert!(!shown.contains("hunter2"), "{shown}");
}

#[test]
fn long_sasl_line_ends_the_exchange() {
    let mut c = greeted(all());
    c.send(b"AUTH PLAIN\r\n");
    let long = vec![b'A'; MAX_COMMAND_LINE + 10];
    c.s.feed(&long);
    c.run();
    let out = c.send(b"\r\nNOOP\r\n");
    assert_eq!(out, "500 5.5.2 Error: line too long\r\n250 2.0.0 Ok\r\n");
}
