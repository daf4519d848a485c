//! The `ses` sink against moto's SES v2 (its own process), read back from moto's
//! `/moto-api/data.json` with Python. moto records the sender, the destinations (the ones
//! we sent, then the header addresses it adds itself) and the raw message, but neither the
//! configuration set nor the tags (the unit tests of `sinks::ses::send` check those in the
//! SDK request); it answers HTTP 500 to a raw message that is not UTF-8, where SES takes
//! 8-bit mail, so the messages here are ASCII.

use crate::harness::{
    Mailchute, MotoServer, RawSmtp, dot_stuff, free_port, python_ok, split_received, swaks_data,
    swaks_ok,
};
use std::path::Path;
use std::time::{Duration, Instant};

pub(crate) const DOMAIN: &str = "verified.test";

/// Verifies a domain identity in moto's SES v2 (moto treats it as verified at once).
const MOTO_VERIFY: &str = r#"
import sys
import boto3
endpoint, domain = sys.argv[1:3]
ses = boto3.client("sesv2", endpoint_url=endpoint, aws_access_key_id="testing",
                   aws_secret_access_key="testing", region_name="us-east-1")
ses.create_email_identity(EmailIdentity=domain)
"#;

/// A moto whose SES has [`DOMAIN`] verified from its first request on, restarts included:
/// with CreateEmailIdentity after a restart, a queued retry could reach it in between, be
/// refused (MessageRejected is permanent) and dead-letter the message. What this sets up in
/// moto's process is what CreateEmailIdentity records (its v1 backend's identities).
pub(crate) fn moto_with_domain() -> MotoServer {
    MotoServer::start_prepared(&format!(
        "from moto.ses.models import ses_backends\n\
         ses_backends['123456789012']['us-east-1'].verify_domain('{DOMAIN}')"
    ))
}

/// Every message moto's SES has sent: [{source, destinations, raw_data}].
const MOTO_SENT: &str = r#"
import json, sys, urllib.request
data = json.load(urllib.request.urlopen(sys.argv[1] + "/moto-api/data.json"))
out = [{"source": m["source"], "destinations": m["destinations"], "raw": m["raw_data"]}
       for m in data.get("ses", {}).get("RawMessage", [])]
print(json.dumps(out))
"#;

#[derive(Debug)]
pub(crate) struct Sent {
    pub source: Option<String>,
    pub destinations: Vec<String>,
    pub raw: Vec<u8>,
}

fn verify(moto: &MotoServer) {
    python_ok(MOTO_VERIFY, &[&moto.endpoint(), DOMAIN]);
}

pub(crate) fn sent(moto: &MotoServer) -> Vec<Sent> {
    let out = python_ok(MOTO_SENT, &[&moto.endpoint()]);
    let list: Vec<serde_json::Value> = serde_json::from_slice(&out).expect("moto JSON");
    list.into_iter()
        .map(|m| Sent {
            source: m["source"].as_str().map(str::to_string),
            destinations: m["destinations"]
                .as_array()
                .expect("destinations")
                .iter()
                .map(|d| d.as_str().expect("address").to_string())
                .collect(),
            raw: m["raw"].as_str().expect("raw_data").as_bytes().to_vec(),
        })
        .collect()
}

/// Waits until moto holds `n` messages (or the timeout), returning what it holds.
pub(crate) fn wait_sent(moto: &MotoServer, n: usize, timeout: Duration) -> Vec<Sent> {
    let deadline = Instant::now() + timeout;
    loop {
        let s = sent(moto);
        if s.len() >= n || Instant::now() >= deadline {
            return s;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// A config with one SMTP listener in `mode` on `port` routing everything to an ses sink
/// at `endpoint`, plus `sink_extra` lines; the credentials file is written into `dir`.
fn config(dir: &Path, port: u16, mode: &str, endpoint: &str, sink_extra: &str) -> String {
    std::fs::write(
        dir.join("aws-credentials"),
        "[default]\naws_access_key_id = testing\naws_secret_access_key = testing\n",
    )
    .expect("write credentials");
    format!(
        r#"[server]
hostname = "mx.test"
data_dir = "./data"

[queue]
backoff_initial = "1s"
backoff_max = "2s"

[[listener]]
name = "relay"
address = "127.0.0.1:{port}"
protocol = "smtp"
mode = "{mode}"

[[route]]
name = "all"
match = ["*"]
sinks = ["ses"]

[sink.ses]
type = "ses"
region = "us-east-1"
endpoint = "{endpoint}"
credentials_file = "./aws-credentials"
timeout = "10s"
{sink_extra}
"#
    )
}

/// A message with the `X-SES-*` fields among its headers.
fn with_ses_headers(subject: &str) -> Vec<u8> {
    format!(
        "From: App <app@{DOMAIN}>\r\n\
         To: Someone Else <header-only@elsewhere.test>\r\n\
         X-SES-CONFIGURATION-SET: transactional\r\n\
         Subject: {subject}\r\n\
         X-SES-MESSAGE-TAGS: campaign=welcome, run=7\r\n\
         Date: Sat, 22 Nov 2025 10:00:00 +0000\r\n\
         Message-ID: <{subject}@{DOMAIN}>\r\n\
         X-SES-SOURCE-ARN: arn:aws:ses:us-east-1:123456789012:identity/{DOMAIN}\r\n\
         \r\n\
         Hello through SES.\r\n\
         X-SES-CONFIGURATION-SET: a body line, kept\r\n"
    )
    .into_bytes()
}

/// The same message without the `X-SES-*` header fields: what SES must get (after our
/// Received line).
fn stripped(subject: &str) -> Vec<u8> {
    format!(
        "From: App <app@{DOMAIN}>\r\n\
         To: Someone Else <header-only@elsewhere.test>\r\n\
         Subject: {subject}\r\n\
         Date: Sat, 22 Nov 2025 10:00:00 +0000\r\n\
         Message-ID: <{subject}@{DOMAIN}>\r\n\
         \r\n\
         Hello through SES.\r\n\
         X-SES-CONFIGURATION-SET: a body line, kept\r\n"
    )
    .into_bytes()
}

#[test]
fn ses_sends_the_raw_message_to_the_envelope_without_x_ses_headers() {
    let moto = MotoServer::start();
    verify(&moto);
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let m = Mailchute::start_in(
        dir.path(),
        &config(
            dir.path(),
            port,
            "sync",
            &moto.endpoint(),
            "configuration_set = \"default-set\"\ntags = { source = \"mailchute\" }\n",
        ),
    );
    // SIZE below SES's 40 MB, though the listener's own default is 50M: 64 KiB are kept for
    // our Received line and what filters add.
    let mut c = RawSmtp::connect(port);
    let ext = c.ehlo("client.test");
    assert!(ext.contains(&"SIZE 41877504".to_string()), "{ext:?}");
    c.quit();

    let data = swaks_data(dir.path(), "msg.eml", &with_ses_headers("ses-1"));
    let server = format!("127.0.0.1:{port}");
    let from = format!("bounces@{DOMAIN}");
    swaks_ok(&[
        "--server",
        &server,
        "--from",
        &from,
        "--to",
        "alice@dest.test,bob@other.test",
        "--data",
        &data,
    ]);

    let s = sent(&moto);
    assert_eq!(s.len(), 1, "{s:?}\n{}", m.log());
    // The envelope, never the headers: MAIL FROM, and the RCPTs (moto appends the header
    // addresses it finds after the destinations we gave).
    assert_eq!(s[0].source.as_deref(), Some(from.as_str()));
    assert_eq!(
        s[0].destinations[..2],
        ["alice@dest.test".to_string(), "bob@other.test".to_string()]
    );
    assert!(
        s[0].destinations[2..]
            .iter()
            .all(|d| d.contains("header-only@elsewhere.test")),
        "{:?}",
        s[0].destinations
    );
    // Byte for byte: our Received line, then the message without the X-SES-* fields.
    let (received, rest) = split_received(&s[0].raw);
    assert!(
        received.starts_with(b"Received: from ") && received.ends_with(b"\r\n"),
        "{}",
        String::from_utf8_lossy(received)
    );
    assert_eq!(
        String::from_utf8_lossy(rest),
        String::from_utf8_lossy(&stripped("ses-1"))
    );

    // One log line per send, in aws-smtp-relay's shape plus ours.
    let lines = m.log_lines();
    let line = lines
        .iter()
        .find(|l| l["event"] == "ses")
        .unwrap_or_else(|| panic!("no ses line in\n{}", m.log()));
    assert_eq!(line["IP"], "127.0.0.1");
    assert_eq!(line["From"], from.as_str());
    assert_eq!(line["To"], "alice@dest.test,bob@other.test");
    assert!(
        line["Time"].as_str().is_some_and(|t| t.starts_with("20")),
        "{line}"
    );
    assert!(line.get("Error").is_none(), "{line}");
    assert!(
        line["message_id"].as_str().is_some_and(|id| !id.is_empty()),
        "{line}"
    );
    assert_eq!(line["size"], s[0].raw.len() as u64);
    assert!(line["id"].as_str().is_some(), "{line}");
}

#[test]
fn ses_refuses_an_unverified_sender_with_ses_text() {
    let moto = MotoServer::start();
    verify(&moto);
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let m = Mailchute::start_in(
        dir.path(),
        &config(dir.path(), port, "sync", &moto.endpoint(), ""),
    );
    let mut c = RawSmtp::connect(port);
    c.ehlo("client.test");
    let r = c.data_raw(
        "someone@unverified.test",
        &["alice@dest.test"],
        &dot_stuff(b"From: someone@unverified.test\r\nSubject: no\r\n\r\nbody\r\n"),
    );
    c.quit();
    // MessageRejected is policy: 5.7.1, which after DATA the error model answers with 554.
    assert_eq!(r.code, 554, "{r:?}\n{}", m.log());
    let text = r.text();
    assert!(
        text.starts_with("554 5.7.1 SendEmail (region us-east-1, endpoint http://127.0.0.1:"),
        "{text}"
    );
    assert!(
        text.contains(
            "MessageRejected: Did not have authority to send from email someone@unverified.test"
        ),
        "{text}"
    );
    assert!(text.contains("HTTP 400, request id "), "{text}");
    assert!(sent(&moto).is_empty());
    let line = m
        .log_lines()
        .into_iter()
        .find(|l| l["event"] == "ses")
        .expect("an ses log line");
    assert!(
        line["Error"]
            .as_str()
            .is_some_and(|e| e.contains("MessageRejected")),
        "{line}"
    );
}

#[test]
fn ses_down_is_451_in_sync_mode() {
    let mut moto = MotoServer::start();
    let endpoint = moto.endpoint();
    moto.stop();
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let m = Mailchute::start_in(dir.path(), &config(dir.path(), port, "sync", &endpoint, ""));
    let mut c = RawSmtp::connect(port);
    c.ehlo("client.test");
    let r = c.data_raw(
        &format!("app@{DOMAIN}"),
        &["alice@dest.test"],
        &dot_stuff(b"Subject: later\r\n\r\nbody\r\n"),
    );
    c.quit();
    assert_eq!(r.code, 451, "{r:?}\n{}", m.log());
    assert!(
        r.text()
            .starts_with("451 4.4.1 SendEmail (region us-east-1"),
        "{r:?}"
    );
    // The cause in words, not the SDK's nested Debug output.
    assert!(
        r.text().contains("cannot reach the service: ") && r.text().contains("refused"),
        "{r:?}"
    );
    assert!(!r.text().contains("{ kind"), "{r:?}");
}

#[test]
fn ses_queued_mode_delivers_once_when_ses_comes_back() {
    let mut moto = moto_with_domain();
    moto.stop();
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let m = Mailchute::start_in(
        dir.path(),
        &config(dir.path(), port, "queued", &moto.endpoint(), ""),
    );
    let mut c = RawSmtp::connect(port);
    c.ehlo("client.test");
    let r = c.data_raw(
        &format!("app@{DOMAIN}"),
        &["alice@dest.test"],
        &dot_stuff(&stripped("queued-1")),
    );
    c.quit();
    assert_eq!(r.code, 250, "{r:?}\n{}", m.log());
    // Let a delivery attempt fail while SES is away.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !m.log().contains("not sent through SES") {
        assert!(Instant::now() < deadline, "no failed attempt:\n{}", m.log());
        std::thread::sleep(Duration::from_millis(200));
    }
    moto.restart();
    let s = wait_sent(&moto, 1, Duration::from_secs(30));
    assert_eq!(s.len(), 1, "{}", m.log());
    assert_eq!(split_received(&s[0].raw).1, stripped("queued-1").as_slice());
    // Delivered is delivered: a few more retry periods send nothing again.
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(sent(&moto).len(), 1, "{}", m.log());
}

#[test]
fn ses_sixty_recipients_are_two_sends_of_fifty_and_ten() {
    let moto = MotoServer::start();
    verify(&moto);
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let m = Mailchute::start_in(
        dir.path(),
        &config(dir.path(), port, "sync", &moto.endpoint(), ""),
    );
    let rcpts: Vec<String> = (0..60).map(|i| format!("r{i:02}@dest.test")).collect();
    let refs: Vec<&str> = rcpts.iter().map(String::as_str).collect();
    let mut c = RawSmtp::connect(port);
    c.ehlo("client.test");
    // No To/Cc header: moto would count header addresses against SES's 50.
    let r = c.data_raw(
        &format!("app@{DOMAIN}"),
        &refs,
        &dot_stuff(format!("From: app@{DOMAIN}\r\nSubject: many\r\n\r\nbody\r\n").as_bytes()),
    );
    c.quit();
    assert_eq!(r.code, 250, "{r:?}\n{}", m.log());
    let s = sent(&moto);
    assert_eq!(s.len(), 2, "{}", m.log());
    assert_eq!(s[0].destinations, rcpts[..50]);
    assert_eq!(s[1].destinations, rcpts[50..]);
    assert_eq!(s[0].raw, s[1].raw);
    let ses_lines = m
        .log_lines()
        .into_iter()
        .filter(|l| l["event"] == "ses")
        .count();
    assert_eq!(ses_lines, 2);
}

/// SIZE is advisory, and `deliver` has none: a message over the sink's limit is refused by
/// the sink itself, 5.3.4 (exit 65 under Postfix's pipe; 552 on a listener).
#[test]
fn ses_a_message_over_max_message_size_is_refused_by_the_sink() {
    let dir = tempfile::tempdir().expect("tempdir");
    let closed = format!("http://127.0.0.1:{}", crate::harness::closed_port());
    let conf = config(
        dir.path(),
        free_port(),
        "sync",
        &closed,
        "max_message_size = \"1K\"\n",
    );
    let path = dir.path().join("c.toml");
    std::fs::write(&path, conf).expect("write config");
    let big = format!("Subject: big\n\n{}\n", "x".repeat(2000));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mailchute"))
        .args(["deliver", "-c", path.to_str().unwrap(), "-a", "a@dest.test"])
        .args(["-f", &format!("app@{DOMAIN}")])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(big.as_bytes())?;
            child.wait_with_output()
        })
        .expect("run deliver");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(65), "{text}");
    assert!(
        text.starts_with("5.3.4 message of ")
            && text.contains("over the SES sink's max_message_size 1K"),
        "{text}"
    );
}

/// A message as big as SIZE allows still fits the sink with the `Received:` line the
/// listener adds: in queued mode it is sent, not accepted and then dead-lettered.
#[test]
fn ses_a_message_of_the_advertised_size_is_sent_with_our_received_line() {
    let moto = moto_with_domain();
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let m = Mailchute::start_in(
        dir.path(),
        &config(
            dir.path(),
            port,
            "queued",
            &moto.endpoint(),
            "max_message_size = \"64K\"\n",
        ),
    );
    let mut c = RawSmtp::connect(port);
    // A long HELO name: a longer Received: line.
    let ext = c.ehlo(&format!(
        "{}client.test",
        format!("{}.", "h".repeat(60)).repeat(4)
    ));
    let size: usize = ext
        .iter()
        .find_map(|e| e.strip_prefix("SIZE "))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no SIZE in {ext:?}"));
    assert!(size < 65536, "{ext:?}");
    let mut msg = format!("From: <app@{DOMAIN}>\r\nSubject: full\r\n\r\n").into_bytes();
    while msg.len() + 80 <= size {
        msg.extend_from_slice(&[b'x'; 78]);
        msg.extend_from_slice(b"\r\n");
    }
    msg.resize(size - 2, b'y');
    msg.extend_from_slice(b"\r\n");
    assert_eq!(msg.len(), size);
    let r = c.data_raw(
        &format!("app@{DOMAIN}"),
        &["alice@dest.test"],
        &dot_stuff(&msg),
    );
    c.quit();
    assert_eq!(r.code, 250, "{r:?}\n{}", m.log());
    let s = wait_sent(&moto, 1, Duration::from_secs(30));
    assert_eq!(s.len(), 1, "{}", m.log());
    assert_eq!(split_received(&s[0].raw).1, msg.as_slice());
}

/// The null sender (a bounce being relayed) goes without FromEmailAddress: SES (and moto)
/// take the `From:` header's address, which must be verified.
#[test]
fn ses_the_null_sender_is_sent_as_its_from_header() {
    let moto = moto_with_domain();
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let m = Mailchute::start_in(
        dir.path(),
        &config(dir.path(), port, "sync", &moto.endpoint(), ""),
    );
    let mut c = RawSmtp::connect(port);
    c.ehlo("client.test");
    let msg = format!("From: MAILER-DAEMON@{DOMAIN}\r\nSubject: bounce\r\n\r\nreport\r\n");
    let r = c.data_raw("", &["alice@dest.test"], &dot_stuff(msg.as_bytes()));
    c.quit();
    assert_eq!(r.code, 250, "{r:?}\n{}", m.log());
    let s = sent(&moto);
    assert_eq!(s.len(), 1);
    assert_eq!(
        s[0].source.as_deref(),
        Some(format!("MAILER-DAEMON@{DOMAIN}").as_str())
    );
    assert_eq!(s[0].destinations, ["alice@dest.test".to_string()]);
}

/// Queued: SES's permanent refusal is not retried; the message goes to the dead letters
/// with SES's reason.
#[test]
fn ses_queued_mode_dead_letters_what_ses_rejects() {
    let moto = moto_with_domain();
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let m = Mailchute::start_in(
        dir.path(),
        &config(dir.path(), port, "queued", &moto.endpoint(), ""),
    );
    let mut c = RawSmtp::connect(port);
    c.ehlo("client.test");
    let r = c.data_raw(
        "someone@unverified.test",
        &["alice@dest.test"],
        &dot_stuff(b"From: someone@unverified.test\r\nSubject: no\r\n\r\nbody\r\n"),
    );
    c.quit();
    assert_eq!(r.code, 250, "{r:?}\n{}", m.log());
    let dead = m.path("data/dead");
    let deadline = Instant::now() + Duration::from_secs(20);
    let reason = loop {
        let sidecar = crate::harness::files_below(&dead)
            .into_iter()
            .find(|f| f.extension().is_some_and(|e| e == "json"));
        if let Some(f) = sidecar {
            break std::fs::read_to_string(f).expect("read sidecar");
        }
        assert!(
            Instant::now() < deadline,
            "nothing dead-lettered:\n{}",
            m.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        reason.contains("5.7.1") && reason.contains("MessageRejected"),
        "{reason}"
    );
    assert!(sent(&moto).is_empty());
    // One attempt: a permanent answer is not asked again.
    let attempts = m
        .log_lines()
        .into_iter()
        .filter(|l| l["event"] == "ses")
        .count();
    assert_eq!(attempts, 1, "{}", m.log());
}
