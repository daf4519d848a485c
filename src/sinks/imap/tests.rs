//! The sink's pure parts: error classification and line ends. Its conversations with a
//! real server are in tests/it/imap.rs (a private Dovecot).

use super::classify::{Account, Stage, classify, is_dead_connection};
use super::config::{ImapConfig, ImapSettings};
use super::session::ImapError;
use super::to_crlf;
use super::wire::{Code, Kind, Status};
use std::io;
use std::path::Path;

fn settings(extra: &str) -> ImapSettings {
    let c: ImapConfig = toml::from_str(&format!(
        "host = \"imap.example.net\"\nusername = \"me\"\npassword = \"hunter2\"\n{extra}"
    ))
    .unwrap();
    c.check(Path::new("/")).unwrap()
}

fn no(code: Option<&str>, text: &str) -> Status {
    Status {
        kind: Kind::No,
        code: code.map(|c| Code {
            name: c.into(),
            args: String::new(),
        }),
        text: text.into(),
    }
}

fn refused(command: &'static str, status: Status) -> ImapError {
    ImapError::Refused {
        peer: "imap.example.net:993".into(),
        command,
        status,
    }
}

/// (temporary?, status, message) of `e` at `stage`.
fn outcome(e: &ImapError, stage: Stage, s: &ImapSettings) -> (bool, String, String) {
    let r = classify(e, stage, &Account { settings: s });
    assert!(!r.message.contains("hunter2"), "{}", r.message);
    (r.is_temporary(), r.status, r.message)
}

#[test]
fn login_failures_are_temporary_and_say_what_to_do() {
    let s = settings("");
    for (cmd, status) in [
        (
            "LOGIN",
            no(Some("AUTHENTICATIONFAILED"), "Authentication failed."),
        ),
        ("AUTHENTICATE PLAIN", no(None, "Login failed")),
        (
            "AUTHENTICATE CRAM-MD5",
            no(Some("EXPIRED"), "Password expired"),
        ),
        (
            "LOGIN",
            Status {
                kind: Kind::Bad,
                code: None,
                text: "Error in IMAP command".into(),
            },
        ),
    ] {
        let (temp, code, msg) = outcome(&refused(cmd, status), Stage::Connect, &s);
        assert!(temp, "{msg}");
        assert_eq!(code, "4.7.8");
        assert!(
            msg.contains("user me on imap.example.net:993")
                && msg.contains("the password is wrong or the account is locked: fix and reload"),
            "{msg}"
        );
    }
    let (temp, code, msg) = outcome(
        &refused("LOGIN", no(Some("UNAVAILABLE"), "Try later")),
        Stage::Connect,
        &s,
    );
    assert!(
        temp && code == "4.3.2" && !msg.contains("password"),
        "{msg}"
    );
    let (_, code, msg) = outcome(
        &refused("LOGIN", no(Some("PRIVACYREQUIRED"), "TLS first")),
        Stage::Connect,
        &s,
    );
    assert_eq!(code, "4.7.0", "{msg}");
}

#[test]
fn append_response_codes() {
    let s = settings("");
    let cases = [
        ("OVERQUOTA", true, "4.2.2"),
        ("TOOBIG", false, "5.3.4"),
        ("UNAVAILABLE", true, "4.3.2"),
        ("INUSE", true, "4.2.1"),
        ("TRYCREATE", true, "4.2.0"),
        ("LIMIT", true, "4.3.0"),
        ("SERVERBUG", true, "4.3.0"),
    ];
    for (code, temp, status) in cases {
        let (t, st, msg) = outcome(
            &refused("APPEND", no(Some(code), "server text")),
            Stage::Append,
            &s,
        );
        assert_eq!((t, st.as_str()), (temp, status), "{code}: {msg}");
        assert!(msg.contains("server text"), "{msg}");
    }
    let (t, st, msg) = outcome(
        &refused("CREATE", no(Some("NOPERM"), "no")),
        Stage::Create,
        &s,
    );
    assert!(
        t && st == "4.2.0" && msg.contains("folder INBOX cannot be created"),
        "{msg}"
    );
    let s = settings("folder = \"Archive\"\ncreate_folder = false");
    let (_, _, msg) = outcome(
        &refused("APPEND", no(Some("TRYCREATE"), "Mailbox doesn't exist")),
        Stage::Append,
        &s,
    );
    assert!(
        msg.contains("folder Archive does not exist and create_folder = false"),
        "{msg}"
    );
}

#[test]
fn connection_failures_are_temporary() {
    let s = settings("");
    let peer = || "imap.example.net:993".to_string();
    let io_err = |k| io::Error::new(k, "x");
    let cases: Vec<(ImapError, &str, bool)> = vec![
        (
            ImapError::Connect {
                peer: peer(),
                source: io_err(io::ErrorKind::ConnectionRefused),
            },
            "4.4.1",
            false,
        ),
        (
            ImapError::Tls {
                peer: peer(),
                source: io_err(io::ErrorKind::InvalidData),
            },
            "4.7.5",
            false,
        ),
        (
            ImapError::Io {
                peer: peer(),
                doing: "APPEND",
                source: io_err(io::ErrorKind::TimedOut),
            },
            "4.4.2",
            false,
        ),
        (
            ImapError::Io {
                peer: peer(),
                doing: "APPEND",
                source: io_err(io::ErrorKind::ConnectionReset),
            },
            "4.4.2",
            true,
        ),
        (
            ImapError::Closed {
                peer: peer(),
                doing: "APPEND",
            },
            "4.4.2",
            true,
        ),
        (
            ImapError::Bye {
                peer: peer(),
                text: "BYE Disconnected for inactivity.".into(),
            },
            "4.3.2",
            true,
        ),
    ];
    for (e, status, dead) in cases {
        let (t, st, msg) = outcome(&e, Stage::Append, &s);
        assert!(t, "{msg}");
        assert_eq!(st, status, "{msg}");
        assert_eq!(is_dead_connection(&e), dead, "{e}");
    }
    assert!(!is_dead_connection(&refused("APPEND", no(None, "x"))));
    let (_, _, msg) = outcome(
        &ImapError::Connect {
            peer: peer(),
            source: io_err(io::ErrorKind::ConnectionRefused),
        },
        Stage::Connect,
        &s,
    );
    assert!(msg.contains("is the server up"), "{msg}");
}

#[test]
fn line_ends_become_crlf() {
    assert_eq!(to_crlf(b"a\r\nb\r\n".to_vec()), b"a\r\nb\r\n");
    assert_eq!(to_crlf(b"a\nb\n".to_vec()), b"a\r\nb\r\n");
    assert_eq!(to_crlf(b"a\rb\r\n\n".to_vec()), b"a\r\nb\r\n\r\n");
    assert_eq!(to_crlf(b"\n".to_vec()), b"\r\n");
    assert_eq!(to_crlf(Vec::new()), b"");
}
