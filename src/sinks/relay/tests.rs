//! The relay against real servers on 127.0.0.1: Postfix's `smtp-sink` (SMTP and LMTP,
//! rejections, byte-exact content) and a small scripted server of our own for TLS,
//! STARTTLS, XFORWARD and broken replies.

use super::config::RelayConfig;
use super::*;
use crate::config::error::path_string;
use crate::envelope::{ClientInfo, Envelope, XForward};
use crate::proto::parse_reply;
use crate::sinks::Severity;
use crate::smtp_client::{Io, XFORWARD_LINE_MAX, xforward_lines};
use crate::spool::commit::Committer;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::Instant;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

const SMTP_SINK: &str = "/usr/sbin/smtp-sink";

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

fn ctx(dir: &Path) -> SinkContext {
    SinkContext {
        hostname: "mailchute.test".into(),
        committer: Arc::new(Committer::new()),
        base_dir: dir.to_path_buf(),
    }
}

fn relay_config(toml_text: &str) -> RelayConfig {
    toml::from_str(toml_text).unwrap()
}

fn envelope(rcpts: &[&str], size: u64) -> Envelope {
    Envelope {
        id: "0123456789ABCDEF01234567".into(),
        mail_from: "sender@example.org".into(),
        rcpts: rcpts.iter().map(|s| s.to_string()).collect(),
        client: ClientInfo {
            addr: Some("192.0.2.7:40123".into()),
            helo: Some("client.example.net".into()),
            protocol: "ESMTP".into(),
            ..ClientInfo::default()
        },
        listener: "test".into(),
        received_at: 0,
        body: Body::SevenBit,
        smtputf8: false,
        size,
        sha256: String::new(),
    }
}

/// Writes `message` to a spool file and delivers it.
async fn deliver(
    sink: &RelaySink,
    dir: &Path,
    env: &Envelope,
    message: &[u8],
) -> Vec<Result<Delivered, SinkError>> {
    let path = dir.join("message.eml");
    std::fs::write(&path, message).unwrap();
    let delivery = Delivery {
        id: "test-delivery",
        envelope: env,
        rcpts: &env.rcpts,
        message: &path,
        first_attempt: false,
    };
    sink.deliver(&delivery).await
}

/// A running `smtp-sink`, killed on drop (also when a test fails).
struct SmtpSinkServer {
    child: Child,
    dump_dir: PathBuf,
    stderr_path: PathBuf,
}

impl SmtpSinkServer {
    /// `listen` is "127.0.0.1:PORT" or "unix:/path"; `extra` are smtp-sink options.
    fn start(dir: &Path, listen: &str, extra: &[&str]) -> Self {
        assert!(
            Path::new(SMTP_SINK).exists(),
            "{SMTP_SINK} is missing: apt-get install -y postfix"
        );
        use std::os::unix::fs::PermissionsExt;
        // smtp-sink drops to nobody, which must reach the dump directory.
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let dump_dir = dir.join("dump");
        std::fs::create_dir(&dump_dir).unwrap();
        std::fs::set_permissions(&dump_dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let stderr_path = dir.join("smtp-sink.stderr");
        let template = format!("{}/%M.", dump_dir.display());
        let mut args = vec!["-v", "-u", "nobody", "-d", &template];
        args.extend_from_slice(extra);
        args.extend_from_slice(&[listen, "10"]);
        let child = Command::new(SMTP_SINK)
            .args(&args)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr_path).unwrap())
            .spawn()
            .unwrap();
        let server = SmtpSinkServer {
            child,
            dump_dir,
            stderr_path,
        };
        server.wait_ready(listen);
        server
    }

    /// Ready when it accepts a connection (the 220 comes from our client in the test).
    fn wait_ready(&self, listen: &str) {
        let deadline = Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let ok = match listen.strip_prefix("unix:") {
                Some(path) => std::os::unix::net::UnixStream::connect(path).is_ok(),
                None => std::net::TcpStream::connect(listen).is_ok(),
            };
            if ok {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "smtp-sink on {listen} did not start"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// The dumped messages, waiting until `n` are there.
    fn dumps(&self, n: usize) -> Vec<Vec<u8>> {
        let deadline = Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let mut files: Vec<_> = std::fs::read_dir(&self.dump_dir)
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            if files.len() >= n {
                files.sort();
                // Let smtp-sink finish writing the last one.
                std::thread::sleep(std::time::Duration::from_millis(50));
                return files.iter().map(|f| std::fs::read(f).unwrap()).collect();
            }
            assert!(Instant::now() < deadline, "expected {n} dumped messages");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// The commands smtp-sink logged with -v.
    fn commands(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap()
    }
}

impl Drop for SmtpSinkServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The message part of an smtp-sink dump: after its three-line Received header, without
/// the empty line it appends. smtp-sink writes LF line endings.
fn dumped_message(dump: &[u8]) -> Vec<u8> {
    let start = dump
        .windows(b"\nReceived: from ".len())
        .position(|w| w == b"\nReceived: from ")
        .unwrap()
        + 1;
    let mut pos = start;
    for _ in 0..3 {
        pos += dump[pos..].iter().position(|&b| b == b'\n').unwrap() + 1;
    }
    dump[pos..].strip_suffix(b"\n").unwrap().to_vec()
}

fn crlf_to_lf(m: &[u8]) -> Vec<u8> {
    String::from_utf8(m.to_vec())
        .unwrap()
        .replace("\r\n", "\n")
        .into_bytes()
}

/// A message with dots at line starts, some of them across the 64 KiB read boundaries.
fn dotted_message() -> Vec<u8> {
    let mut m = b"Received: from client.example.net by mailchute.test; Thu, 1 Jan 2026\r\n\
                  From: <sender@example.org>\r\nSubject: dots\r\n\r\n.leading dot\r\n\
                  ..two dots\r\n.\r\nmiddle . line\r\n"
        .to_vec();
    let mut i = 0;
    while m.len() < 3 * DATA_CHUNK {
        let pad = "x".repeat(i % 97);
        m.extend_from_slice(format!(".{i} {pad}\r\n").as_bytes());
        i += 1;
    }
    m.extend_from_slice(b"last line\r\n");
    m
}

impl RelaySink {
    /// The XFORWARD lines this sink would send for `env` to a server advertising `caps`.
    fn xforward_lines(&self, caps: &Capabilities, env: &Envelope) -> Vec<String> {
        xforward_lines(caps, &xforward_attributes(env))
    }
}

fn is_ok(r: &Result<Delivered, SinkError>) -> bool {
    r.is_ok()
}

#[tokio::test]
async fn smtp_delivers_byte_exact_with_pipelining() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let server = SmtpSinkServer::start(dir.path(), &format!("127.0.0.1:{port}"), &[]);
    let sink = RelaySink::new(
        &relay_config(&format!(
            "address = \"127.0.0.1:{port}\"\ntimeout = \"10s\""
        )),
        Dialect::Smtp,
        &ctx(dir.path()),
    )
    .unwrap();
    let message = dotted_message();
    let env = envelope(&["a@example.com", "b@example.com"], message.len() as u64);
    let results = deliver(&sink, dir.path(), &env, &message).await;
    assert_eq!(results.len(), 2);
    assert!(results.iter().all(is_ok), "{results:?}");
    let detail = &results[0].as_ref().unwrap().detail;
    assert!(detail.contains("250"), "{detail}");
    let dumps = server.dumps(1);
    assert_eq!(dumped_message(&dumps[0]), crlf_to_lf(&message));
    let dump = String::from_utf8_lossy(&dumps[0]);
    assert!(dump.contains("X-Mail-Args: <sender@example.org>"), "{dump}");
    assert!(dump.contains("X-Rcpt-Args: <a@example.com>\nX-Rcpt-Args: <b@example.com>\n"));
    assert!(dump.contains("X-Helo-Args: mailchute.test\n"));
    // smtp-sink advertises XFORWARD NAME ADDR PROTO HELO: only those go out.
    let commands = server.commands();
    assert!(
        commands.contains(
            "XFORWARD NAME=[UNAVAILABLE] ADDR=192.0.2.7 PROTO=ESMTP HELO=client.example.net\n"
        ),
        "{commands}"
    );
    assert!(!commands.contains("PORT="));
    assert!(sink.healthcheck().await.is_ok());
}

#[tokio::test]
async fn lmtp_over_unix_socket_replies_per_recipient() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("lmtp.sock");
    let listen = format!("unix:{}", socket.display());
    let server = SmtpSinkServer::start(dir.path(), &listen, &["-L"]);
    let sink = RelaySink::new(
        &relay_config(&format!("address = \"{listen}\"\ntimeout = \"10s\"")),
        Dialect::Lmtp,
        &ctx(dir.path()),
    )
    .unwrap();
    let message = b"Subject: lmtp\r\n\r\nbody\r\n.dot".to_vec();
    let env = envelope(&["a@example.com", "b@example.com", "c@example.com"], 30);
    let results = deliver(&sink, dir.path(), &env, &message).await;
    assert_eq!(results.len(), 3);
    assert!(results.iter().all(is_ok), "{results:?}");
    let dumps = server.dumps(1);
    let dump = String::from_utf8_lossy(&dumps[0]);
    assert!(dump.contains("X-Client-Proto: LMTP"), "{dump}");
    assert!(server.commands().contains("LHLO mailchute.test"));
    // The message lacked a final CRLF: one was added before the ".".
    assert_eq!(
        dumped_message(&dumps[0]),
        b"Subject: lmtp\n\nbody\n.dot\n".to_vec()
    );
}

#[tokio::test]
async fn rejected_rcpt_is_permanent_with_upstream_words() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    // -f RCPT rejects every RCPT with "500 5.3.0 Error: command failed" (and turns off
    // PIPELINING: this is the lockstep path).
    let _server = SmtpSinkServer::start(dir.path(), &format!("127.0.0.1:{port}"), &["-f", "RCPT"]);
    let sink = RelaySink::new(
        &relay_config(&format!(
            "address = \"127.0.0.1:{port}\"\ntimeout = \"10s\""
        )),
        Dialect::Smtp,
        &ctx(dir.path()),
    )
    .unwrap();
    let env = envelope(&["x@example.com"], 10);
    let results = deliver(&sink, dir.path(), &env, b"Subject: x\r\n\r\nx\r\n").await;
    let err = results[0].as_ref().unwrap_err();
    assert_eq!(err.severity, Severity::Permanent);
    assert_eq!(err.status, "5.3.0");
    assert_eq!(
        err.message,
        format!("upstream 127.0.0.1:{port} said: 500 5.3.0 Error: command failed")
    );
}

#[tokio::test]
async fn soft_rejections_are_temporary() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _server = SmtpSinkServer::start(
        dir.path(),
        &format!("127.0.0.1:{port}"),
        &[
            "-r",
            "RCPT",
            "-b",
            "450 4.2.0 <x@example.com>: mailbox busy",
        ],
    );
    let sink = RelaySink::new(
        &relay_config(&format!(
            "address = \"127.0.0.1:{port}\"\ntimeout = \"10s\""
        )),
        Dialect::Smtp,
        &ctx(dir.path()),
    )
    .unwrap();
    let env = envelope(&["x@example.com", "y@example.com"], 10);
    let results = deliver(&sink, dir.path(), &env, b"Subject: x\r\n\r\nx\r\n").await;
    for r in &results {
        let err = r.as_ref().unwrap_err();
        assert_eq!(err.severity, Severity::Temporary);
        assert_eq!(err.status, "4.2.0");
        assert!(err.message.contains("mailbox busy"), "{}", err.message);
    }
}

#[tokio::test]
async fn rejected_end_of_data_is_permanent_for_every_recipient() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _server = SmtpSinkServer::start(dir.path(), &format!("127.0.0.1:{port}"), &["-f", "."]);
    let sink = RelaySink::new(
        &relay_config(&format!(
            "address = \"127.0.0.1:{port}\"\ntimeout = \"10s\""
        )),
        Dialect::Smtp,
        &ctx(dir.path()),
    )
    .unwrap();
    let env = envelope(&["x@example.com", "y@example.com"], 10);
    let results = deliver(&sink, dir.path(), &env, b"Subject: x\r\n\r\nx\r\n").await;
    assert_eq!(results.len(), 2);
    for r in &results {
        assert_eq!(r.as_ref().unwrap_err().severity, Severity::Permanent);
    }
}

#[tokio::test]
async fn greeting_refusal_and_dropped_connection_are_temporary() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _server =
        SmtpSinkServer::start(dir.path(), &format!("127.0.0.1:{port}"), &["-f", "CONNECT"]);
    let sink = RelaySink::new(
        &relay_config(&format!(
            "address = \"127.0.0.1:{port}\"\ntimeout = \"10s\""
        )),
        Dialect::Smtp,
        &ctx(dir.path()),
    )
    .unwrap();
    let err = sink.healthcheck().await.unwrap_err();
    assert!(err.is_temporary(), "{err:?}");
    assert!(err.status.starts_with('4'), "{err:?}");
    assert!(err.message.contains(&port.to_string()), "{err:?}");

    let dir2 = tempfile::tempdir().unwrap();
    let port2 = free_port();
    // -q DATA: disconnect without a reply when DATA arrives.
    let _server2 =
        SmtpSinkServer::start(dir2.path(), &format!("127.0.0.1:{port2}"), &["-q", "DATA"]);
    let sink2 = RelaySink::new(
        &relay_config(&format!(
            "address = \"127.0.0.1:{port2}\"\ntimeout = \"10s\""
        )),
        Dialect::Smtp,
        &ctx(dir2.path()),
    )
    .unwrap();
    let env = envelope(&["x@example.com"], 10);
    let results = deliver(&sink2, dir2.path(), &env, b"x\r\n").await;
    let err = results[0].as_ref().unwrap_err();
    assert!(err.is_temporary(), "{err:?}");
    assert_eq!(err.status, "4.4.2");
}

#[tokio::test]
async fn connection_refused_is_temporary_and_names_the_address() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let sink = RelaySink::new(
        &relay_config(&format!("address = \"127.0.0.1:{port}\"\ntimeout = \"5s\"")),
        Dialect::Smtp,
        &ctx(dir.path()),
    )
    .unwrap();
    let env = envelope(&["x@example.com", "y@example.com"], 3);
    let results = deliver(&sink, dir.path(), &env, b"x\r\n").await;
    assert_eq!(results.len(), 2);
    for r in &results {
        let err = r.as_ref().unwrap_err();
        assert_eq!(err.severity, Severity::Temporary);
        assert_eq!(err.status, "4.4.1");
        assert!(
            err.message.contains(&format!("127.0.0.1:{port}")),
            "{err:?}"
        );
    }
    assert!(sink.healthcheck().await.is_err());
}

#[tokio::test]
async fn auth_plain_on_loopback_and_smtputf8_needed() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let server = SmtpSinkServer::start(dir.path(), &format!("127.0.0.1:{port}"), &[]);
    std::fs::write(dir.path().join("pw"), "s3cret\nignored\n").unwrap();
    let sink = RelaySink::new(
        &relay_config(&format!(
            "address = \"127.0.0.1:{port}\"\ntimeout = \"10s\"\nusername = \"u\"\n\
             password_file = \"pw\"\nxforward = false"
        )),
        Dialect::Smtp,
        &ctx(dir.path()),
    )
    .unwrap();
    let mut env = envelope(&["x@example.com"], 10);
    env.body = Body::EightBitMime;
    let results = deliver(&sink, dir.path(), &env, b"Subject: x\r\n\r\n\xc3\xa9\r\n").await;
    assert!(results[0].is_ok(), "{results:?}");
    let commands = server.commands();
    // base64("\0u\0s3cret")
    assert!(commands.contains("AUTH PLAIN AHUAczNjcmV0\n"), "{commands}");
    assert!(!commands.contains("XFORWARD"), "{commands}");
    assert!(commands.contains("BODY=8BITMIME"), "{commands}");

    // smtp-sink does not offer SMTPUTF8.
    env.smtputf8 = true;
    let results = deliver(&sink, dir.path(), &env, b"x\r\n").await;
    let err = results[0].as_ref().unwrap_err();
    assert_eq!(
        (err.severity.clone(), err.status.as_str()),
        (Severity::Permanent, "5.6.7")
    );
}

#[test]
fn build_time_validation() {
    let dir = tempfile::tempdir().unwrap();
    let c = ctx(dir.path());
    let new = |t: &str| RelaySink::new(&relay_config(t), Dialect::Smtp, &c).err();
    // Each error names the key to fix, so the config layer can point at its line.
    let fails = |t: &str, key: &str, text: &str| {
        let e = new(t).unwrap_or_else(|| panic!("{t:?} was accepted"));
        assert_eq!(path_string(&e.key), key, "{t:?}: {e:?}");
        assert!(e.message.contains(text), "{t:?}: {e:?}");
    };
    fails("address = \"host\"", "address", "host:port");
    fails("address = \"unix:rel\"", "address", "absolute");
    fails(
        "address = \"127.0.0.1:25\"\nusername = \"u\"",
        "username",
        "password_env or password_file",
    );
    fails(
        "address = \"127.0.0.1:25\"\nusername = \"u\"\npassword_env = \"MAILCHUTE_TEST_SURELY_UNSET\"",
        "password_env",
        "not set",
    );
    fails(
        "address = \"127.0.0.1:25\"\nusername = \"u\"\npassword_file = \"missing\"",
        "password_file",
        "missing",
    );
    fails(
        "address = \"127.0.0.1:25\"\ntls = \"starttls\"\nca_file = \"nope.pem\"",
        "ca_file",
        "nope.pem",
    );
    std::fs::write(dir.path().join("empty.pem"), "not a cert\n").unwrap();
    fails(
        "address = \"127.0.0.1:25\"\ntls = \"implicit\"\nca_file = \"empty.pem\"",
        "ca_file",
        "no PEM certificate",
    );
    fails(
        "address = \"unix:/run/x.sock\"\ntls = \"starttls\"",
        "tls_name",
        "Unix socket",
    );
    fails(
        "address = \"127.0.0.1:25\"\ntls_name = \"a b\"",
        "tls_name",
        "not a valid TLS server name",
    );
    fails(
        "address = \"127.0.0.1:25\"\nhelo = \"a b\"",
        "helo",
        "without spaces",
    );
    assert!(new("address = \"127.0.0.1:25\"").is_none());
    assert!(new("address = \"[::1]:25\"\ntls = \"none\"").is_none());
    assert!(new("address = \"unix:/run/dovecot/lmtp\"").is_none());
}

#[test]
fn xforward_lines_respect_advertised_attributes_and_length() {
    let dir = tempfile::tempdir().unwrap();
    let sink = RelaySink::new(
        &relay_config("address = \"127.0.0.1:25\""),
        Dialect::Smtp,
        &ctx(dir.path()),
    )
    .unwrap();
    let caps = |s: &str| Capabilities::from_ehlo(&parse_reply(s.as_bytes()).unwrap().unwrap().0);
    let all = caps("250-x\r\n250 XFORWARD NAME ADDR PORT PROTO HELO IDENT SOURCE\r\n");
    let mut env = envelope(&["a@b"], 1);
    assert_eq!(
        sink.xforward_lines(&all, &env),
        vec![
            "XFORWARD NAME=[UNAVAILABLE] ADDR=192.0.2.7 PORT=40123 PROTO=ESMTP \
             HELO=client.example.net IDENT=0123456789ABCDEF01234567 SOURCE=REMOTE"
                .to_string()
        ]
    );
    // IPv6 peers get Postfix's "IPv6:" form; Unix-socket clients are LOCAL.
    env.client.addr = Some("[2001:db8::1]:25".into());
    assert!(sink.xforward_lines(&all, &env)[0].contains(" ADDR=IPv6:2001:db8::1 "));
    env.client.addr = None;
    let line = &sink.xforward_lines(&all, &env)[0];
    assert!(
        line.contains("SOURCE=LOCAL") && !line.contains("ADDR="),
        "{line}"
    );

    // Forwarded facts pass on unchanged (xtext-encoded), long values split the line.
    env.client.xforward = XForward {
        name: Some("mx.example.net".into()),
        addr: Some("198.51.100.1".into()),
        helo: Some(format!("h{}", "e".repeat(470))),
        ident: Some("ABC+DEF".into()),
        ..XForward::default()
    };
    let lines = sink.xforward_lines(&all, &env);
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(lines.iter().all(|l| l.len() + 2 <= XFORWARD_LINE_MAX));
    assert_eq!(lines[0], "XFORWARD NAME=mx.example.net ADDR=198.51.100.1");
    assert!(lines[1].ends_with(" IDENT=ABC+2BDEF"), "{lines:?}");
    let some = caps("250-x\r\n250 XFORWARD ADDR\r\n");
    assert_eq!(
        sink.xforward_lines(&some, &env),
        vec!["XFORWARD ADDR=198.51.100.1".to_string()]
    );
}

/// PROTO is the protocol the client spoke, from what the ingress really stores (upper case,
/// with RFC 3848's S/A suffixes), without the suffixes.
#[test]
fn xforward_proto_follows_the_client_protocol() {
    let dir = tempfile::tempdir().unwrap();
    let sink = RelaySink::new(
        &relay_config("address = \"127.0.0.1:25\""),
        Dialect::Smtp,
        &ctx(dir.path()),
    )
    .unwrap();
    let reply = parse_reply(b"250-x\r\n250 XFORWARD PROTO\r\n")
        .unwrap()
        .unwrap()
        .0;
    let caps = Capabilities::from_ehlo(&reply);
    let mut env = envelope(&["a@b"], 1);
    for (protocol, proto) in [
        ("SMTP", "SMTP"),
        ("ESMTP", "ESMTP"),
        ("ESMTPS", "ESMTP"),
        ("ESMTPSA", "ESMTP"),
        ("esmtp", "ESMTP"),
        ("LMTP", "LMTP"),
        ("LMTPS", "LMTP"),
        // A DSN of our own: no client spoke any protocol.
        ("local", "[UNAVAILABLE]"),
    ] {
        env.client.protocol = protocol.into();
        assert_eq!(
            sink.xforward_lines(&caps, &env),
            vec![format!("XFORWARD PROTO={proto}")],
            "{protocol}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// A scripted server for what smtp-sink cannot do: TLS, STARTTLS, odd replies.

struct TlsFiles {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

/// A CA and a leaf certificate for localhost / 127.0.0.1, made with the openssl tool.
fn make_certs(dir: &Path) -> TlsFiles {
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("the openssl command is needed for the TLS tests");
        assert!(out.status.success(), "openssl {args:?}: {out:?}");
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    run(&[
        &["req", "-x509"][..],
        &ec,
        &[
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=mailchute test CA",
        ],
    ]
    .concat());
    run(&[
        &["req"][..],
        &ec,
        &[
            "-keyout",
            "leaf.key",
            "-out",
            "leaf.csr",
            "-subj",
            "/CN=localhost",
        ],
    ]
    .concat());
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "leaf.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "leaf.pem",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ]);
    TlsFiles {
        ca: dir.join("ca.pem"),
        cert: dir.join("leaf.pem"),
        key: dir.join("leaf.key"),
    }
}

fn acceptor(files: &TlsFiles) -> tokio_rustls::TlsAcceptor {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(&files.key).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

#[derive(Clone, Default)]
struct Script {
    implicit: Option<tokio_rustls::TlsAcceptor>,
    starttls: Option<tokio_rustls::TlsAcceptor>,
    greeting: &'static str,
    /// Extensions after the first EHLO line.
    caps: Vec<&'static str>,
    /// Which reply comes one byte at a time.
    slow: Slow,
    /// Answer STARTTLS with 220 and then bytes that are not TLS.
    broken_starttls: bool,
    /// The message content exactly as it came: the DATA lines up to and with the ".",
    /// or the BDAT chunks.
    wire: Arc<Mutex<Vec<u8>>>,
}

#[derive(Clone, Copy, Default, PartialEq, Eq)]
enum Slow {
    #[default]
    Nothing,
    Greeting,
    /// The reply after the final "." (or BDAT LAST).
    FinalReply,
    /// Reading the DATA content: a pause after every 64 KiB.
    DataReading,
}

/// How long a slow reply waits between its bytes.
const TRICKLE: std::time::Duration = std::time::Duration::from_millis(200);

/// Writes `reply`, one byte per [`TRICKLE`] when `slow`.
async fn reply_to(
    io: &mut BufReader<Box<dyn Io>>,
    reply: &[u8],
    slow: bool,
) -> std::io::Result<()> {
    if !slow {
        return io.get_mut().write_all(reply).await;
    }
    for b in reply {
        io.get_mut().write_all(&[*b]).await?;
        io.get_mut().flush().await?;
        tokio::time::sleep(TRICKLE).await;
    }
    Ok(())
}

/// Serves one connection per accept until the test ends; records every line received
/// (DATA content included) in `log`.
async fn scripted_server(script: Script) -> (u16, Arc<Mutex<Vec<String>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let log = Arc::new(Mutex::new(Vec::new()));
    let log2 = Arc::clone(&log);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let script = script.clone();
            let log = Arc::clone(&log2);
            tokio::spawn(async move {
                let stream: Box<dyn Io> = match &script.implicit {
                    Some(acc) => match acc.accept(tcp).await {
                        Ok(s) => Box::new(s),
                        Err(e) => {
                            log.lock().unwrap().push(format!("TLS ERROR {e}"));
                            return;
                        }
                    },
                    None => Box::new(tcp),
                };
                let _ = serve(stream, script, log).await;
            });
        }
    });
    (port, log)
}

async fn serve(
    stream: Box<dyn Io>,
    script: Script,
    log: Arc<Mutex<Vec<String>>>,
) -> std::io::Result<()> {
    let mut io = BufReader::new(stream);
    let greeting = script.greeting.as_bytes();
    reply_to(&mut io, greeting, script.slow == Slow::Greeting).await?;
    let slow_final = script.slow == Slow::FinalReply;
    let mut tls_done = script.implicit.is_some();
    let mut in_data = false;
    // AUTH LOGIN: lines still to come (username, password).
    let mut login_pending = 0;
    loop {
        let mut raw = Vec::new();
        if io.read_until(b'\n', &mut raw).await? == 0 {
            return Ok(());
        }
        let line = String::from_utf8_lossy(&raw).into_owned();
        log.lock().unwrap().push(line.trim_end().to_string());
        if in_data {
            let before = script.wire.lock().unwrap().len();
            script.wire.lock().unwrap().extend_from_slice(&raw);
            if script.slow == Slow::DataReading && (before + raw.len()) / 65536 > before / 65536 {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            if raw == b".\r\n" {
                in_data = false;
                reply_to(&mut io, b"250 2.0.0 Ok: queued\r\n", slow_final).await?;
            }
            continue;
        }
        if login_pending > 0 {
            login_pending -= 1;
            let r: &[u8] = if login_pending == 1 {
                b"334 UGFzc3dvcmQ6\r\n"
            } else {
                b"235 2.7.0 ok\r\n"
            };
            io.get_mut().write_all(r).await?;
            continue;
        }
        let verb = line
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_ascii_uppercase();
        let reply: String = match verb.as_str() {
            "EHLO" | "LHLO" => {
                let mut caps = script.caps.clone();
                if script.starttls.is_some() && !tls_done {
                    caps.push("STARTTLS");
                }
                let mut r = String::from("250-test.server\r\n");
                for (i, c) in caps.iter().enumerate() {
                    let sep = if i + 1 == caps.len() { ' ' } else { '-' };
                    r.push_str(&format!("250{sep}{c}\r\n"));
                }
                if caps.is_empty() {
                    r = "250 test.server\r\n".into();
                }
                r
            }
            "STARTTLS" if script.broken_starttls => {
                io.get_mut()
                    .write_all(b"220 2.0.0 Ready\r\nthis is not a TLS record\r\n")
                    .await?;
                return Ok(());
            }
            "STARTTLS" => {
                io.get_mut().write_all(b"220 2.0.0 Ready\r\n").await?;
                let acc = script.starttls.clone().unwrap();
                let tls = match acc.accept(io.into_inner()).await {
                    Ok(s) => s,
                    Err(e) => {
                        log.lock().unwrap().push(format!("TLS ERROR {e}"));
                        return Ok(());
                    }
                };
                io = BufReader::new(Box::new(tls));
                tls_done = true;
                log.lock().unwrap().push("TLS UP".into());
                continue;
            }
            "DATA" => {
                in_data = true;
                "354 go ahead\r\n".into()
            }
            "BDAT" => {
                let mut words = line.split_whitespace().skip(1);
                let size: usize = words.next().and_then(|n| n.parse().ok()).unwrap_or(0);
                let last = words.next().is_some_and(|w| w.eq_ignore_ascii_case("LAST"));
                let mut chunk = vec![0u8; size];
                io.read_exact(&mut chunk).await?;
                script.wire.lock().unwrap().extend_from_slice(&chunk);
                if last {
                    reply_to(&mut io, b"250 2.0.0 Ok: queued\r\n", slow_final).await?;
                    continue;
                }
                "250 2.0.0 chunk ok\r\n".into()
            }
            "QUIT" => {
                io.get_mut().write_all(b"221 bye\r\n").await?;
                return Ok(());
            }
            "AUTH" if line.contains("LOGIN") => {
                login_pending = 2;
                "334 VXNlcm5hbWU6\r\n".into()
            }
            "AUTH" => "235 2.7.0 ok\r\n".into(),
            "RCPT" if line.contains("<bad@") => {
                "550 5.1.1 <bad@example.com>: no such user\r\n".into()
            }
            _ => "250 2.0.0 ok\r\n".into(),
        };
        io.get_mut().write_all(reply.as_bytes()).await?;
    }
}

fn logged(log: &Arc<Mutex<Vec<String>>>) -> Vec<String> {
    log.lock().unwrap().clone()
}

#[tokio::test]
async fn starttls_verified_with_ca_file_then_auth() {
    let dir = tempfile::tempdir().unwrap();
    let files = make_certs(dir.path());
    let (port, log) = scripted_server(Script {
        implicit: None,
        starttls: Some(acceptor(&files)),
        greeting: "220 test.server ESMTP\r\n",
        caps: vec!["PIPELINING", "AUTH LOGIN", "XFORWARD ADDR"],
        ..Script::default()
    })
    .await;
    // Any variable that is set will do; the test must not change the environment.
    let password = std::env::var("HOME").unwrap();
    let sink = RelaySink::new(
        &relay_config(&format!(
            "address = \"localhost:{port}\"\ntls = \"starttls\"\nca_file = \"{}\"\n\
             username = \"user\"\npassword_env = \"HOME\"\ntimeout = \"10s\"",
            files.ca.display()
        )),
        Dialect::Smtp,
        &ctx(dir.path()),
    )
    .unwrap();
    let env = envelope(&["ok@example.com", "bad@example.com"], 10);
    let results = deliver(&sink, dir.path(), &env, b"Subject: t\r\n\r\n.hi\r\n").await;
    assert!(results[0].is_ok(), "{results:?}");
    let err = results[1].as_ref().unwrap_err();
    assert_eq!(
        (err.severity.clone(), err.status.as_str()),
        (Severity::Permanent, "5.1.1")
    );
    assert_eq!(
        err.message,
        format!("upstream localhost:{port} said: 550 5.1.1 <bad@example.com>: no such user")
    );
    let log = logged(&log);
    let tls_at = log.iter().position(|l| l == "TLS UP").unwrap();
    let auth_at = log.iter().position(|l| l == "AUTH LOGIN").unwrap();
    assert!(tls_at < auth_at, "{log:?}");
    assert_eq!(log[tls_at + 1], "EHLO mailchute.test");
    assert_eq!(log[auth_at + 1], "dXNlcg==");
    use base64::Engine as _;
    assert_eq!(
        log[auth_at + 2],
        base64::engine::general_purpose::STANDARD.encode(password)
    );
    assert!(
        log.contains(&"XFORWARD ADDR=192.0.2.7".to_string()),
        "{log:?}"
    );
    assert!(log.contains(&"..hi".to_string()), "{log:?}");
}

#[tokio::test]
async fn implicit_tls_checks_the_name() {
    let dir = tempfile::tempdir().unwrap();
    let files = make_certs(dir.path());
    let (port, _log) = scripted_server(Script {
        implicit: Some(acceptor(&files)),
        starttls: None,
        greeting: "220 test.server ESMTP\r\n",
        caps: vec![],
        ..Script::default()
    })
    .await;
    let config = |extra: &str| {
        relay_config(&format!(
            "address = \"127.0.0.1:{port}\"\ntls = \"implicit\"\nca_file = \"{}\"\n{extra}",
            files.ca.display()
        ))
    };
    let c = ctx(dir.path());
    // The certificate is for 127.0.0.1 (an IP SAN) and localhost.
    let ok = RelaySink::new(&config(""), Dialect::Smtp, &c).unwrap();
    ok.healthcheck().await.unwrap();
    let env = envelope(&["a@example.com"], 3);
    assert!(deliver(&ok, dir.path(), &env, b"x\r\n").await[0].is_ok());

    let wrong =
        RelaySink::new(&config("tls_name = \"mx.example.org\""), Dialect::Smtp, &c).unwrap();
    let err = wrong.healthcheck().await.unwrap_err();
    assert_eq!(err.status, "4.7.5", "{err:?}");
    assert!(
        err.message.contains(&format!("127.0.0.1:{port}")),
        "{err:?}"
    );

    // The system roots do not know our test CA; insecure accepts it anyway.
    let system = RelaySink::new(
        &relay_config(&format!(
            "address = \"127.0.0.1:{port}\"\ntls = \"implicit\""
        )),
        Dialect::Smtp,
        &c,
    );
    if let Ok(system) = system {
        assert_eq!(system.healthcheck().await.unwrap_err().status, "4.7.5");
    }
    let insecure = RelaySink::new(
        &relay_config(&format!(
            "address = \"127.0.0.1:{port}\"\ntls = \"implicit\"\ninsecure = true\ntls_name = \"other\""
        )),
        Dialect::Smtp,
        &c,
    )
    .unwrap();
    insecure.healthcheck().await.unwrap();
}

#[tokio::test]
async fn starttls_required_but_missing_and_opportunistic_fallback() {
    let dir = tempfile::tempdir().unwrap();
    let (port, log) = scripted_server(Script {
        implicit: None,
        starttls: None,
        greeting: "220 test.server ESMTP\r\n",
        caps: vec!["PIPELINING"],
        ..Script::default()
    })
    .await;
    let c = ctx(dir.path());
    let required = RelaySink::new(
        &relay_config(&format!(
            "address = \"127.0.0.1:{port}\"\ntls = \"starttls\"\ninsecure = true"
        )),
        Dialect::Smtp,
        &c,
    )
    .unwrap();
    let env = envelope(&["a@example.com"], 3);
    let err = deliver(&required, dir.path(), &env, b"x\r\n").await[0]
        .clone()
        .unwrap_err();
    assert_eq!(err.status, "4.7.0");
    assert!(err.message.contains(&format!("127.0.0.1:{port}")) && err.message.contains("STARTTLS"));
    assert!(!logged(&log).iter().any(|l| l.starts_with("MAIL")));

    // Opportunistic (the default): plain text when STARTTLS is not offered. Credentials
    // may go in plain text to loopback only.
    let opportunistic = RelaySink::new(
        &relay_config(&format!("address = \"127.0.0.1:{port}\"")),
        Dialect::Smtp,
        &c,
    )
    .unwrap();
    assert!(deliver(&opportunistic, dir.path(), &env, b"x\r\n").await[0].is_ok());
}

/// Opportunistic TLS whose handshake fails gives up TLS, not the delivery: a new plain
/// connection, without STARTTLS. Required TLS does not.
#[tokio::test]
async fn opportunistic_tls_falls_back_to_plain_text_when_the_handshake_fails() {
    let dir = tempfile::tempdir().unwrap();
    let files = make_certs(dir.path());
    let (port, log) = scripted_server(Script {
        implicit: None,
        starttls: Some(acceptor(&files)),
        broken_starttls: true,
        greeting: "220 test.server ESMTP\r\n",
        caps: vec![],
        ..Script::default()
    })
    .await;
    let c = ctx(dir.path());
    let sink = |tls: &str| {
        RelaySink::new(
            &relay_config(&format!(
                "address = \"127.0.0.1:{port}\"\ntls = \"{tls}\"\ninsecure = true\ntimeout = \"5s\""
            )),
            Dialect::Smtp,
            &c,
        )
        .unwrap()
    };
    let env = envelope(&["a@example.com"], 3);
    let required = deliver(&sink("starttls"), dir.path(), &env, b"x\r\n").await;
    let err = required[0].as_ref().unwrap_err();
    assert!(err.is_temporary() && err.status == "4.7.5", "{err:?}");
    assert!(!logged(&log).iter().any(|l| l.starts_with("MAIL")));

    let results = deliver(&sink("opportunistic"), dir.path(), &env, b"x\r\n").await;
    assert!(results[0].is_ok(), "{results:?}");
    let log = logged(&log);
    let starttls = log.iter().filter(|l| *l == "STARTTLS").count();
    assert_eq!(starttls, 2, "one for each sink's first connection: {log:?}");
    assert!(log.iter().any(|l| l.starts_with("MAIL FROM")), "{log:?}");
}

#[tokio::test]
async fn opportunistic_starttls_accepts_self_signed() {
    let dir = tempfile::tempdir().unwrap();
    let files = make_certs(dir.path());
    let (port, log) = scripted_server(Script {
        implicit: None,
        starttls: Some(acceptor(&files)),
        greeting: "220 test.server ESMTP\r\n",
        caps: vec![],
        ..Script::default()
    })
    .await;
    let sink = RelaySink::new(
        &relay_config(&format!("address = \"127.0.0.1:{port}\"\ntimeout = \"2s\"")),
        Dialect::Lmtp,
        &ctx(dir.path()),
    )
    .unwrap();
    let env = envelope(&["a@example.com", "b@example.com"], 3);
    let results = deliver(&sink, dir.path(), &env, b"x\r\n").await;
    // Our scripted server answers the end of DATA once, like SMTP: the second LMTP reply
    // never comes, and that recipient is temporary (the upstream may have it).
    assert!(results[0].is_ok(), "{results:?}");
    let err = results[1].as_ref().unwrap_err();
    assert!(
        err.is_temporary() && err.message.contains("may duplicate"),
        "{err:?}"
    );
    let log = logged(&log);
    assert!(log.contains(&"TLS UP".to_string()), "{log:?}");
    assert!(log.contains(&"LHLO mailchute.test".to_string()));
}

#[tokio::test]
async fn malformed_and_refused_greetings() {
    let dir = tempfile::tempdir().unwrap();
    let c = ctx(dir.path());
    for (greeting, status) in [
        ("hello there\r\n", "4.5.0"),
        ("554 5.7.1 go away\r\n", "4.7.1"),
        ("421 busy\r\n", "4.3.2"),
    ] {
        let (port, _log) = scripted_server(Script {
            implicit: None,
            starttls: None,
            greeting,
            caps: vec![],
            ..Script::default()
        })
        .await;
        let sink = RelaySink::new(
            &relay_config(&format!("address = \"127.0.0.1:{port}\"\ntimeout = \"5s\"")),
            Dialect::Smtp,
            &c,
        )
        .unwrap();
        let err = sink.healthcheck().await.unwrap_err();
        assert!(err.is_temporary(), "{greeting:?}: {err:?}");
        assert_eq!(err.status, status, "{greeting:?}: {err:?}");
    }
}

#[tokio::test]
async fn silent_server_times_out() {
    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let holder = tokio::spawn(async move {
        let (_s, _) = listener.accept().await.unwrap();
        tokio::time::sleep(std::time::Duration::from_secs(30)).await;
    });
    let sink = RelaySink::new(
        &relay_config(&format!("address = \"127.0.0.1:{port}\"\ntimeout = \"1s\"")),
        Dialect::Smtp,
        &ctx(dir.path()),
    )
    .unwrap();
    let started = Instant::now();
    let err = sink.healthcheck().await.unwrap_err();
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    assert_eq!(err.status, "4.4.2", "{err:?}");
    holder.abort();
}

#[tokio::test]
async fn address_with_line_break_is_never_sent() {
    let dir = tempfile::tempdir().unwrap();
    let (port, log) = scripted_server(Script {
        implicit: None,
        starttls: None,
        greeting: "220 test.server ESMTP\r\n",
        caps: vec![],
        ..Script::default()
    })
    .await;
    let sink = RelaySink::new(
        &relay_config(&format!("address = \"127.0.0.1:{port}\"\ntimeout = \"5s\"")),
        Dialect::Smtp,
        &ctx(dir.path()),
    )
    .unwrap();
    let env = envelope(
        &[
            "x@example.com>\r\nRSET\r\nRCPT TO:<y@example.com",
            "ok@example.com",
        ],
        3,
    );
    let results = deliver(&sink, dir.path(), &env, b"x\r\n").await;
    let err = results[0].as_ref().unwrap_err();
    assert_eq!(
        (err.severity.clone(), err.status.as_str()),
        (Severity::Permanent, "5.1.3")
    );
    assert!(results[1].is_ok(), "{results:?}");
    let log = logged(&log);
    assert!(!log.iter().any(|l| l == "RSET"), "{log:?}");
}

/// A self-signed certificate as `openssl req -x509` makes it (marked as a CA), for
/// localhost / 127.0.0.1, in `dir/name.pem` with its key in `dir/name.key`.
fn self_signed(dir: &Path, name: &str) -> TlsFiles {
    let cert = dir.join(format!("{name}.pem"));
    let key = dir.join(format!("{name}.key"));
    let out = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "2"])
        .args(["-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("the openssl command is needed for the TLS tests");
    assert!(out.status.success(), "openssl: {out:?}");
    TlsFiles {
        ca: cert.clone(),
        cert,
        key,
    }
}

/// The upstream's own self-signed certificate as `ca_file` (what a private Dovecot or
/// Postfix has) is trusted, though webpki alone refuses a CA-marked certificate as the
/// server's; the name is still checked, and another self-signed certificate is refused.
#[tokio::test]
async fn self_signed_server_certificate_as_ca_file() {
    let dir = tempfile::tempdir().unwrap();
    let files = self_signed(dir.path(), "server");
    let other = self_signed(dir.path(), "other");
    let (port, _log) = scripted_server(Script {
        implicit: Some(acceptor(&files)),
        starttls: None,
        greeting: "220 test.server ESMTP\r\n",
        caps: vec![],
        ..Script::default()
    })
    .await;
    let c = ctx(dir.path());
    let sink = |ca: &Path, extra: &str| {
        RelaySink::new(
            &relay_config(&format!(
                "address = \"127.0.0.1:{port}\"\ntls = \"implicit\"\nca_file = \"{}\"\n{extra}",
                ca.display()
            )),
            Dialect::Smtp,
            &c,
        )
        .unwrap()
    };
    sink(&files.ca, "").healthcheck().await.unwrap();
    let env = envelope(&["a@example.com"], 3);
    assert!(deliver(&sink(&files.ca, ""), dir.path(), &env, b"x\r\n").await[0].is_ok());

    let err = sink(&files.ca, "tls_name = \"mx.example.org\"")
        .healthcheck()
        .await
        .unwrap_err();
    assert_eq!(err.status, "4.7.5", "{err:?}");
    let err = sink(&other.ca, "").healthcheck().await.unwrap_err();
    assert_eq!(err.status, "4.7.5", "{err:?}");
}

/// An SMTP sink for a scripted server on `port`, with a short timeout.
fn scripted_sink(dir: &Path, port: u16) -> RelaySink {
    RelaySink::new(
        &relay_config(&format!("address = \"127.0.0.1:{port}\"\ntimeout = \"5s\"")),
        Dialect::Smtp,
        &ctx(dir),
    )
    .unwrap()
}

/// `timeout` bounds a whole reply, not each read of it: a greeting that trickles in a byte
/// every 200 ms (about 10 s in all) is cut off at 1 s.
#[tokio::test]
async fn trickling_upstream_is_cut_off_at_the_attempt_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let (port, _log) = scripted_server(Script {
        greeting: "220 test.server ESMTP and a greeting that takes a while\r\n",
        slow: Slow::Greeting,
        ..Script::default()
    })
    .await;
    let sink = RelaySink::new(
        &relay_config(&format!("address = \"127.0.0.1:{port}\"\ntimeout = \"1s\"")),
        Dialect::Smtp,
        &ctx(dir.path()),
    )
    .unwrap();
    let env = envelope(&["a@example.com"], 3);
    let started = Instant::now();
    let results = deliver(&sink, dir.path(), &env, b"x\r\n").await;
    let took = started.elapsed();
    let err = results[0].as_ref().unwrap_err();
    assert!(took < std::time::Duration::from_secs(3), "took {took:?}");
    assert!(err.is_temporary(), "{err:?}");
    assert_eq!(err.status, "4.4.2", "{err:?}");
    assert!(
        err.message.contains(&format!("127.0.0.1:{port}"))
            && err.message.contains("timeout of 1 s"),
        "{err:?}"
    );
}

/// A large message to an upstream that reads slowly takes far longer than `timeout` in all,
/// but every step is quick: delivered, not cut off half-way (and then sent again).
#[tokio::test]
async fn slow_reader_gets_a_large_message_whole() {
    let dir = tempfile::tempdir().unwrap();
    let wire = Arc::new(Mutex::new(Vec::new()));
    let (port, _log) = scripted_server(Script {
        greeting: "220 test.server ESMTP\r\n",
        caps: vec!["PIPELINING"],
        slow: Slow::DataReading,
        wire: wire.clone(),
        ..Script::default()
    })
    .await;
    let sink = RelaySink::new(
        &relay_config(&format!("address = \"127.0.0.1:{port}\"\ntimeout = \"1s\"")),
        Dialect::Smtp,
        &ctx(dir.path()),
    )
    .unwrap();
    let line = format!("{}\r\n", "y".repeat(998));
    let body = line.repeat(3 << 10); // 3 MB: ~2.4 s at the server's pace
    let env = envelope(&["a@example.com"], body.len() as u64);
    let started = Instant::now();
    let results = deliver(&sink, dir.path(), &env, body.as_bytes()).await;
    assert!(results[0].is_ok(), "{results:?}");
    assert!(
        started.elapsed() > std::time::Duration::from_secs(1),
        "the server was not slow enough to prove anything"
    );
    assert_eq!(
        wire.lock().unwrap().len(),
        body.len() + 3,
        "content and the final dot"
    );
}

/// The deadline also covers the reply to the final dot, and running out there still says
/// that a retry may duplicate the message.
#[tokio::test]
async fn attempt_timeout_after_the_final_dot_warns_of_a_duplicate() {
    let dir = tempfile::tempdir().unwrap();
    let (port, log) = scripted_server(Script {
        greeting: "220 test.server ESMTP\r\n",
        caps: vec!["PIPELINING"],
        slow: Slow::FinalReply,
        ..Script::default()
    })
    .await;
    // The 22-byte final reply takes about 4.4 s; each byte comes well within 2 s.
    let sink = RelaySink::new(
        &relay_config(&format!("address = \"127.0.0.1:{port}\"\ntimeout = \"2s\"")),
        Dialect::Smtp,
        &ctx(dir.path()),
    )
    .unwrap();
    let env = envelope(&["a@example.com"], 3);
    let started = Instant::now();
    let results = deliver(&sink, dir.path(), &env, b"x\r\n").await;
    let took = started.elapsed();
    let err = results[0].as_ref().unwrap_err();
    assert!(took < std::time::Duration::from_secs(4), "took {took:?}");
    assert!(
        err.is_temporary() && err.status == "4.4.2" && err.message.contains("may duplicate"),
        "{err:?}"
    );
    assert!(
        logged(&log).contains(&".".to_string()),
        "the content was sent"
    );
}

/// RFC 6152: 8-bit content never goes to an upstream without 8BITMIME. A message declared
/// 8BITMIME that is 7-bit after all goes, without BODY=.
#[tokio::test]
async fn eight_bit_content_needs_8bitmime_upstream() {
    let dir = tempfile::tempdir().unwrap();
    let (port, log) = scripted_server(Script {
        greeting: "220 test.server ESMTP\r\n",
        caps: vec!["PIPELINING"],
        ..Script::default()
    })
    .await;
    let sink = scripted_sink(dir.path(), port);
    let mut env = envelope(&["a@example.com"], 20);
    env.body = Body::EightBitMime;
    let results = deliver(
        &sink,
        dir.path(),
        &env,
        b"Subject: x\r\n\r\ncaf\xc3\xa9\r\n",
    )
    .await;
    let err = results[0].as_ref().unwrap_err();
    assert_eq!(
        (err.severity.clone(), err.status.as_str()),
        (Severity::Permanent, "5.6.3"),
        "{err:?}"
    );
    assert!(err.message.contains("8BITMIME"), "{err:?}");
    assert!(!logged(&log).iter().any(|l| l.starts_with("MAIL")));

    let results = deliver(&sink, dir.path(), &env, b"Subject: x\r\n\r\nplain\r\n").await;
    assert!(results[0].is_ok(), "{results:?}");
    let log = logged(&log);
    assert!(
        log.contains(&"MAIL FROM:<sender@example.org>".to_string()),
        "{log:?}"
    );
}

/// BODY=BINARYMIME (received by BDAT) goes by BDAT with its bytes untouched, and only to an
/// upstream with BINARYMIME and CHUNKING; never as DATA.
#[tokio::test]
async fn binarymime_goes_by_bdat_or_not_at_all() {
    let dir = tempfile::tempdir().unwrap();
    let (port, log) = scripted_server(Script {
        greeting: "220 test.server ESMTP\r\n",
        caps: vec!["PIPELINING", "8BITMIME", "CHUNKING"],
        ..Script::default()
    })
    .await;
    let message = b"Subject: bin\r\n\r\n\x00\xff bare\nlone\r.\r\n.\r\nend".to_vec();
    let mut env = envelope(&["a@example.com", "b@example.com"], message.len() as u64);
    env.body = Body::BinaryMime;
    let results = deliver(&scripted_sink(dir.path(), port), dir.path(), &env, &message).await;
    for r in &results {
        let err = r.as_ref().unwrap_err();
        assert_eq!(
            (err.severity.clone(), err.status.as_str()),
            (Severity::Permanent, "5.6.3"),
            "{err:?}"
        );
        assert!(err.message.contains("BINARYMIME"), "{err:?}");
    }
    assert!(!logged(&log).iter().any(|l| l.starts_with("MAIL")));

    let script = Script {
        greeting: "220 test.server ESMTP\r\n",
        caps: vec!["PIPELINING", "8BITMIME", "BINARYMIME", "CHUNKING"],
        ..Script::default()
    };
    let wire = Arc::clone(&script.wire);
    let (port, log) = scripted_server(script).await;
    let results = deliver(&scripted_sink(dir.path(), port), dir.path(), &env, &message).await;
    assert!(results.iter().all(is_ok), "{results:?}");
    let log = logged(&log);
    let mail_at = log
        .iter()
        .position(|l| l == "MAIL FROM:<sender@example.org> BODY=BINARYMIME")
        .unwrap_or_else(|| panic!("{log:?}"));
    assert_eq!(
        log[mail_at + 3],
        format!("BDAT {} LAST", message.len()),
        "{log:?}"
    );
    assert!(!log.iter().any(|l| l == "DATA"), "{log:?}");
    assert_eq!(*wire.lock().unwrap(), message);
}

/// RFC 5321 §2.3.8: on the wire every line ends in CRLF. A bare LF or a lone CR in the
/// spooled message goes out as CRLF, and a line that then starts with "." is stuffed.
#[tokio::test]
async fn bare_lf_and_lone_cr_go_out_as_crlf() {
    let dir = tempfile::tempdir().unwrap();
    let script = Script {
        greeting: "220 test.server ESMTP\r\n",
        caps: vec!["PIPELINING", "8BITMIME"],
        ..Script::default()
    };
    let wire = Arc::clone(&script.wire);
    let (port, _log) = scripted_server(script).await;
    let env = envelope(&["a@example.com"], 40);
    let message = b"Subject: x\r\n\r\nbare\nlone\r.\rend\r\n\n.\nlast";
    let results = deliver(&scripted_sink(dir.path(), port), dir.path(), &env, message).await;
    assert!(results[0].is_ok(), "{results:?}");
    assert_eq!(
        String::from_utf8_lossy(&wire.lock().unwrap()),
        "Subject: x\r\n\r\nbare\r\nlone\r\n..\r\nend\r\n\r\n..\r\nlast\r\n.\r\n"
    );
}
