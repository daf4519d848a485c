//! The listener at its edges, seen from real clients on the wire: PROXY protocol, XFORWARD,
//! `require_tls`, command and data timeouts, connection and error limits, policy refusals,
//! `allow_ips`, unix sockets, the small commands, and SIGTERM with idle sessions open.
//!
//! Several listeners here cannot answer the harness's banner probe (a PROXY listener waits
//! for a header, an `allow_ips` listener refuses 127.0.0.1, a unix listener has no port) or
//! would be disturbed by it (its connection holds a slot of `max_connections` for a moment),
//! so those start through [`start_unprobed`], which waits for the "mailchute started" log
//! line instead: the sockets are bound before it is written, so connections queue in the
//! backlog from then on.

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::harness::*;

/// How long a client waits for a reply the server owes it (timeouts here are 1–2 s).
const REPLY_WAIT: Duration = Duration::from_secs(20);

/// A raw SMTP client that, unlike [`RawSmtp`], can bind its source address, send bytes
/// before the greeting (a PROXY header), and tell "the server closed" from "a reply".
struct Wire {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Wire {
    /// Connects from the OS-chosen address; reads nothing.
    fn connect(port: u16) -> Wire {
        Wire::from_stream(TcpStream::connect(("127.0.0.1", port)).expect("connect"))
    }

    /// Connects to 127.0.0.1:`port` from `source` (any address of 127.0.0.0/8 works on Linux
    /// loopback), so per-IP limits and allow lists see a second client address.
    fn connect_from(source: Ipv4Addr, port: u16) -> Wire {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .expect("tokio runtime");
        let stream = rt
            .block_on(async {
                let s = tokio::net::TcpSocket::new_v4()?;
                s.bind(SocketAddr::new(IpAddr::V4(source), 0))?;
                s.connect(SocketAddr::from(([127, 0, 0, 1], port))).await
            })
            .unwrap_or_else(|e| panic!("connect from {source} to port {port}: {e}"));
        let std = stream.into_std().expect("into_std");
        std.set_nonblocking(false).expect("blocking mode");
        Wire::from_stream(std)
    }

    fn from_stream(s: TcpStream) -> Wire {
        s.set_read_timeout(Some(REPLY_WAIT)).ok();
        Wire {
            reader: BufReader::new(s.try_clone().expect("clone socket")),
            writer: s,
        }
    }

    fn source_ip(&self) -> IpAddr {
        self.writer.local_addr().expect("local_addr").ip()
    }

    fn send(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).expect("write to server");
    }

    /// Writes what may meet a connection the server already dropped.
    fn send_lossy(&mut self, bytes: &[u8]) {
        let _ = self.writer.write_all(bytes);
    }

    /// The next reply, or `None` when the server closed (EOF or reset) before a first line.
    /// A read timeout panics: every caller expects either a reply or a close.
    fn reply(&mut self) -> Option<Reply> {
        let mut lines = Vec::new();
        loop {
            let mut line = Vec::new();
            match self.reader.read_until(b'\n', &mut line) {
                Ok(0) => {
                    assert!(
                        lines.is_empty(),
                        "closed in the middle of a reply {lines:?}"
                    );
                    return None;
                }
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::ConnectionReset && lines.is_empty() => {
                    return None;
                }
                Err(e) => panic!("reading a reply (so far {lines:?}): {e}"),
            }
            let line = String::from_utf8_lossy(&line).trim_end().to_string();
            assert!(line.len() >= 3, "short reply line {line:?}");
            let code: u16 = line[..3].parse().expect("reply code");
            let last = line.as_bytes().get(3) != Some(&b'-');
            lines.push(line);
            if last {
                return Some(Reply { code, lines });
            }
        }
    }

    fn must_reply(&mut self, what: &str) -> Reply {
        self.reply()
            .unwrap_or_else(|| panic!("connection closed while waiting for the reply to {what}"))
    }

    fn greeting(&mut self) -> Reply {
        let r = self.must_reply("the connection (greeting)");
        assert_eq!(r.code, 220, "greeting: {r:?}");
        r
    }

    fn cmd(&mut self, line: &str) -> Reply {
        self.send(format!("{line}\r\n").as_bytes());
        self.must_reply(line)
    }

    fn expect(&mut self, line: &str, code: u16) -> Reply {
        let r = self.cmd(line);
        assert_eq!(r.code, code, "{line:?} → {r:?}");
        r
    }

    fn ehlo(&mut self, name: &str) -> Vec<String> {
        let r = self.expect(&format!("EHLO {name}"), 250);
        r.lines
            .iter()
            .skip(1)
            .map(|l| l[4..].to_ascii_uppercase())
            .collect()
    }

    /// MAIL, RCPTs, DATA with `msg` dot-stuffed; returns the reply to the final dot.
    fn transaction(&mut self, from: &str, rcpts: &[&str], msg: &[u8]) -> Reply {
        self.expect(&format!("MAIL FROM:<{from}>"), 250);
        for r in rcpts {
            self.expect(&format!("RCPT TO:<{r}>"), 250);
        }
        self.expect("DATA", 354);
        self.send(&dot_stuff(msg));
        self.must_reply("the end of DATA")
    }

    /// Asserts the server closes the connection without sending anything more.
    fn assert_closed(&mut self, context: &str) {
        let mut rest = Vec::new();
        match self.reader.read_to_end(&mut rest) {
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
            Err(e) => panic!("{context}: connection not closed by the server: {e} (got {rest:?})"),
        }
        assert!(
            rest.is_empty(),
            "{context}: bytes after the last reply: {:?}",
            String::from_utf8_lossy(&rest)
        );
    }

    /// Asserts the server ends the connection with a FIN after its last reply, not a reset
    /// (which can destroy a reply the client has not read yet).
    fn assert_closed_cleanly(&mut self, context: &str) {
        let mut rest = Vec::new();
        if let Err(e) = self.reader.read_to_end(&mut rest) {
            panic!("{context}: connection not closed cleanly: {e} (got {rest:?})");
        }
        assert!(
            rest.is_empty(),
            "{context}: bytes after the last reply: {:?}",
            String::from_utf8_lossy(&rest)
        );
    }

    fn quit(mut self) {
        self.expect("QUIT", 221);
        self.assert_closed("after QUIT");
    }
}

/// Asserts `r` has `code` and, as its first word after the code, the enhanced `status`.
fn assert_reply(r: &Reply, code: u16, status: &str, context: &str) {
    assert_eq!(r.code, code, "{context}: {r:?}");
    let first = &r.lines[0];
    assert_eq!(
        first.get(4..4 + status.len()),
        Some(status),
        "{context}: want {code} {status}, got {r:?}"
    );
}

/// A mailchute whose readiness is its "mailchute started" log line rather than a banner
/// probe. Field order matters: the process stops before its directory is removed.
struct Unprobed {
    m: Mailchute,
    _dir: TempDir,
}

/// Starts mailchute on the config `make(dir)` returns (given the directory it will run in,
/// for absolute socket paths) and waits until it logged that it started.
fn start_unprobed(make: impl FnOnce(&Path) -> String) -> Unprobed {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = make(dir.path());
    let m = Mailchute::spawn_in(dir.path(), &config);
    let deadline = Instant::now() + READY_TIMEOUT;
    while !m.log().contains("mailchute started") {
        assert!(
            Instant::now() < deadline,
            "mailchute did not start\n--- log ---\n{}",
            m.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Unprobed { m, _dir: dir }
}

/// The one message of `./Maildir`, checked to be our Received header followed by `sent`
/// (CRLF → LF, the sink's default); returns the Received header.
fn single_stored(m: &Mailchute, sent: &[u8]) -> String {
    let msgs = read_maildir(&m.path("Maildir"));
    assert_eq!(
        msgs.len(),
        1,
        "messages in Maildir\n--- log ---\n{}",
        m.log()
    );
    assert_stored(&msgs[0], &crlf_to_lf(sent));
    let (received, _) = split_received(&msgs[0]);
    String::from_utf8_lossy(received).into_owned()
}

/// Asserts nothing was stored or queued and no message file lingers in the spool.
fn assert_nothing_stored(m: &Mailchute) {
    assert_eq!(maildir_count(&m.path("Maildir")), 0, "log:\n{}", m.log());
    let left = files_below(&m.path("data/spool"));
    assert!(left.is_empty(), "spool files left: {left:?}");
}

/// The JSON log lines of SMTP transactions.
fn transactions(m: &Mailchute) -> Vec<serde_json::Value> {
    m.log_lines()
        .into_iter()
        .filter(|l| l["event"] == "transaction")
        .collect()
}

/// The JSON log lines of refused commands.
fn refusals(m: &Mailchute) -> Vec<serde_json::Value> {
    m.log_lines()
        .into_iter()
        .filter(|l| l["event"] == "refused")
        .collect()
}

/// The refusal line whose reply starts with `reply`, checked to carry the session's facts.
fn refusal_line(m: &Mailchute, reply: &str) -> serde_json::Value {
    let all = refusals(m);
    let Some(l) = all
        .iter()
        .find(|l| l["reply"].as_str().is_some_and(|r| r.starts_with(reply)))
    else {
        panic!("no refusal {reply:?}\n--- log ---\n{}", m.log());
    };
    assert_eq!(l["level"], "INFO", "{l}");
    assert_eq!(l["listener"], "mx", "{l}");
    assert_eq!(l["client_ip"], "127.0.0.1", "{l}");
    assert_eq!(l["helo"], "client.test", "{l}");
    assert_eq!(l["tls"], "none", "{l}");
    l.clone()
}

/// A sync listener on `port` with `listener_extra`, a Maildir sink, and the routes given
/// as the `match` list of the one route.
fn routed_config(port: u16, listener_extra: &str, matches: &str) -> String {
    format!(
        r#"[server]
hostname = "mx.test"
data_dir = "./data"

[[listener]]
name = "mx"
address = "127.0.0.1:{port}"
protocol = "smtp"
mode = "sync"
{listener_extra}

[[route]]
name = "ours"
match = {matches}
sinks = ["box"]

[sink.box]
{MAILDIR_SINK}
"#
    )
}

// ---------------------------------------------------------------------------------------
// 1. PROXY protocol

const PROXY_LISTENER: &str = "proxy_protocol = true\ntrusted = [\"127.0.0.0/8\"]\n";

/// PROXY v2, PROXY command, TCP over IPv4: 192.0.2.7:40000 → 127.0.0.1:25.
fn proxy_v2_header() -> Vec<u8> {
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.push(0x21); // version 2, command PROXY
    h.push(0x11); // AF_INET, STREAM
    h.extend_from_slice(&12u16.to_be_bytes());
    h.extend_from_slice(&[192, 0, 2, 7]);
    h.extend_from_slice(&[127, 0, 0, 1]);
    h.extend_from_slice(&40000u16.to_be_bytes());
    h.extend_from_slice(&25u16.to_be_bytes());
    h
}

fn proxied_session(header: &[u8], subject: &str) {
    let port = free_port();
    let u = start_unprobed(|_| sync_config(port, PROXY_LISTENER, MAILDIR_SINK));
    let msg = message(subject, "Behind a load balancer.\r\n");
    let mut c = Wire::connect(port);
    c.send(header);
    let greeting = c.reply();
    assert!(
        greeting.as_ref().is_some_and(|g| g.code == 220),
        "greeting after the PROXY header: {greeting:?}\n--- log ---\n{}",
        u.m.log()
    );
    c.ehlo("client.example");
    let r = c.transaction("from@client.test", &["rcpt@test"], &msg);
    assert_eq!(r.code, 250, "end of DATA: {r:?}");
    c.quit();

    let received = single_stored(&u.m, &msg);
    assert!(
        received.starts_with("Received: from client.example ([192.0.2.7])"),
        "Received header does not name the proxied client: {received:?}"
    );
    assert!(
        received.contains("(via proxy [127.0.0.1])"),
        "Received header does not name the proxy: {received:?}"
    );
    let tx = transactions(&u.m);
    assert_eq!(tx.len(), 1, "transaction log lines: {tx:?}");
    let client = tx[0]["client_ip"].as_str().expect("client_ip is a string");
    // The field holds "ip:port"; what matters is the address the proxy reported.
    let ip = client
        .parse::<SocketAddr>()
        .map(|a| a.ip())
        .or_else(|_| client.parse::<IpAddr>())
        .unwrap_or_else(|_| panic!("client_ip {client:?} is not an address"));
    assert_eq!(ip, IpAddr::from([192, 0, 2, 7]), "log line: {}", tx[0]);
}

#[test]
fn proxy_v1_header_gives_the_real_client() {
    proxied_session(b"PROXY TCP4 192.0.2.7 127.0.0.1 40000 25\r\n", "proxy-v1");
}

#[test]
fn proxy_v2_header_gives_the_real_client() {
    proxied_session(&proxy_v2_header(), "proxy-v2");
}

#[test]
fn proxy_v2_local_header_keeps_the_connection_endpoints() {
    let port = free_port();
    let u = start_unprobed(|_| sync_config(port, PROXY_LISTENER, MAILDIR_SINK));
    // LOCAL (0x20) with an address block filled in anyway: it must be ignored.
    let mut header = proxy_v2_header();
    header[12] = 0x20;
    let msg = message("proxy-local", "A health check that sends mail.\r\n");
    let mut c = Wire::connect(port);
    c.send(&header);
    c.greeting();
    c.ehlo("client.example");
    let r = c.transaction("from@client.test", &["rcpt@test"], &msg);
    assert_eq!(r.code, 250, "end of DATA: {r:?}");
    c.quit();
    let received = single_stored(&u.m, &msg);
    assert!(
        received.starts_with("Received: from client.example ([127.0.0.1])"),
        "LOCAL header: the client is the connection's peer: {received:?}"
    );
    assert!(
        !received.contains("192.0.2.7") && !received.contains("via proxy"),
        "LOCAL header's address block was used: {received:?}"
    );
}

/// Sends `header` and a whole session without waiting, then expects the connection to be
/// dropped with not one byte from the server, and nothing stored.
fn assert_dropped(u: &Unprobed, port: u16, header: &[u8], context: &str) {
    let mut c = Wire::connect(port);
    let started = Instant::now();
    c.send_lossy(header);
    let msg = message("dropped", "Must not be stored.\r\n");
    let mut session = b"EHLO client.example\r\nMAIL FROM:<from@client.test>\r\n\
                        RCPT TO:<rcpt@test>\r\nDATA\r\n"
        .to_vec();
    session.extend_from_slice(&dot_stuff(&msg));
    session.extend_from_slice(b"QUIT\r\n");
    c.send_lossy(&session);
    assert!(
        c.reply().is_none(),
        "{context}: the server answered instead of dropping the connection"
    );
    c.assert_closed(context);
    // A parse failure drops at once; only the 10 s header timeout would take longer.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{context}: dropped only after {:?}",
        started.elapsed()
    );
    assert_nothing_stored(&u.m);
}

#[test]
fn proxy_header_from_untrusted_peer_is_dropped() {
    let port = free_port();
    let u = start_unprobed(|_| {
        sync_config(
            port,
            "proxy_protocol = true\ntrusted = [\"10.0.0.0/8\"]\n",
            MAILDIR_SINK,
        )
    });
    assert_dropped(
        &u,
        port,
        b"PROXY TCP4 192.0.2.7 127.0.0.1 40000 25\r\n",
        "untrusted proxy v1",
    );
    assert_dropped(&u, port, &proxy_v2_header(), "untrusted proxy v2");
}

#[test]
fn proxy_garbage_header_is_dropped() {
    let port = free_port();
    let u = start_unprobed(|_| sync_config(port, PROXY_LISTENER, MAILDIR_SINK));
    assert_dropped(&u, port, b"GET / HTTP/1.0\r\n\r\n", "HTTP instead of PROXY");
    assert_dropped(
        &u,
        port,
        b"\x16\x03\x01\x00\xa5\x01\x00\x00",
        "a TLS ClientHello",
    );
}

#[test]
fn proxy_malformed_v1_header_is_dropped_at_its_line_end() {
    let port = free_port();
    let u = start_unprobed(|_| sync_config(port, PROXY_LISTENER, MAILDIR_SINK));
    assert_dropped(&u, port, b"PROXY TCP4 not-an-address\r\n", "malformed v1");
}

// ---------------------------------------------------------------------------------------
// 2. XFORWARD

const XFORWARD: &str =
    "XFORWARD NAME=spike.porcupine.org ADDR=168.100.189.2 HELO=client.example PROTO=ESMTP";

#[test]
fn xforward_from_trusted_client_names_the_original_client() {
    let port = free_port();
    let m = Mailchute::start(&sync_config(port, "", MAILDIR_SINK));
    let msg = message("xforward", "Forwarded by a Postfix.\r\n");
    let mut c = Wire::connect(port);
    c.greeting();
    let ext = c.ehlo("relay.test");
    assert!(
        ext.iter().any(|e| e.starts_with("XFORWARD")),
        "no XFORWARD in EHLO from a trusted client: {ext:?}"
    );
    assert_reply(&c.cmd(XFORWARD), 250, "2.0.0", "XFORWARD");
    let r = c.transaction("from@client.test", &["rcpt@test"], &msg);
    assert_eq!(r.code, 250, "end of DATA: {r:?}");
    c.quit();

    let received = single_stored(&m, &msg);
    assert!(
        received.starts_with("Received: from client.example (spike.porcupine.org [168.100.189.2])"),
        "Received header does not name the forwarded client: {received:?}"
    );
    assert!(
        received.contains("(forwarded by relay.test [127.0.0.1])"),
        "Received header does not name the forwarding MTA: {received:?}"
    );
}

#[test]
fn xforward_from_untrusted_client_is_refused() {
    let port = free_port();
    let m = Mailchute::start(&sync_config(
        port,
        "trusted = [\"10.0.0.0/8\"]\n",
        MAILDIR_SINK,
    ));
    let msg = message("xforward-untrusted", "Claims to forward.\r\n");
    let mut c = Wire::connect(port);
    c.greeting();
    let ext = c.ehlo("relay.test");
    assert!(
        !ext.iter().any(|e| e.starts_with("XFORWARD")),
        "XFORWARD offered to an untrusted client: {ext:?}"
    );
    let r = c.cmd(XFORWARD);
    assert!((500..600).contains(&r.code), "XFORWARD → {r:?}");
    assert_reply(&r, 550, "5.7.0", "XFORWARD from an untrusted client");
    let r = c.transaction("from@client.test", &["rcpt@test"], &msg);
    assert_eq!(r.code, 250, "end of DATA: {r:?}");
    c.quit();

    let received = single_stored(&m, &msg);
    for forged in ["168.100.189.2", "spike.porcupine.org", "client.example"] {
        assert!(
            !received.contains(forged),
            "refused XFORWARD fact {forged:?} reached the Received header: {received:?}"
        );
    }
    assert!(
        received.starts_with("Received: from relay.test ([127.0.0.1])"),
        "{received:?}"
    );
}

// ---------------------------------------------------------------------------------------
// 3. require_tls

/// smtplib: MAIL before STARTTLS (prints its code and text), then STARTTLS with an
/// unverified context and a whole message.
const SMTPLIB_REQUIRE_TLS: &str = r#"
import json, smtplib, ssl, sys
port, path = int(sys.argv[1]), sys.argv[2]
msg = open(path, "rb").read()
s = smtplib.SMTP("127.0.0.1", port, local_hostname="client.test", timeout=60)
s.ehlo()
offered = s.has_extn("starttls")
code, text = s.mail("from@client.test")
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
s.starttls(context=ctx)
refused = s.sendmail("from@client.test", ["rcpt@test"], msg)
s.quit()
print(json.dumps({"offered": offered, "code": code, "text": text.decode(), "refused": list(refused)}))
"#;

#[test]
fn require_tls_refuses_mail_before_starttls() {
    let certs = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed_cert(certs.path());
    let port = free_port();
    let extra = format!(
        "tls = \"starttls\"\nrequire_tls = true\ncert = \"{}\"\nkey = \"{}\"\n",
        cert.display(),
        key.display()
    );
    let m = Mailchute::start(&sync_config(port, &extra, MAILDIR_SINK));

    // On the wire first: the exact reply.
    let mut c = Wire::connect(port);
    c.greeting();
    let ext = c.ehlo("client.test");
    assert!(ext.iter().any(|e| e == "STARTTLS"), "{ext:?}");
    let r = c.cmd("MAIL FROM:<from@client.test>");
    assert_reply(&r, 530, "5.7.0", "MAIL before STARTTLS");
    c.quit();

    let msg = message("require-tls", "Only over TLS.\r\n");
    let file = m.dir().join("require-tls.eml");
    std::fs::write(&file, &msg).unwrap();
    let out = python_ok(
        SMTPLIB_REQUIRE_TLS,
        &[&port.to_string(), file.to_str().unwrap()],
    );
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["offered"], true, "{v}");
    assert_eq!(v["code"], 530, "smtplib MAIL before STARTTLS: {v}");
    assert!(v["text"].as_str().unwrap().starts_with("5.7.0"), "{v}");
    assert_eq!(v["refused"], serde_json::json!([]), "{v}");

    let received = single_stored(&m, &msg);
    assert!(received.contains("with ESMTPS"), "{received:?}");
}

// ---------------------------------------------------------------------------------------
// 4. Timeouts

#[test]
fn command_timeout_closes_an_idle_session() {
    let port = free_port();
    let m = Mailchute::start(&sync_config(
        port,
        "command_timeout = \"1s\"\n",
        MAILDIR_SINK,
    ));
    let mut c = Wire::connect(port);
    c.greeting();
    let idle = Instant::now();
    let r = c
        .reply()
        .unwrap_or_else(|| panic!("closed without a 421\n--- log ---\n{}", m.log()));
    let waited = idle.elapsed();
    assert_reply(&r, 421, "4.4.2", "idle after the greeting");
    c.assert_closed("after the timeout 421");
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(10),
        "421 after {waited:?} for a 1 s command timeout"
    );
}

#[test]
fn data_timeout_drops_the_message_and_its_spool_file() {
    let port = free_port();
    let m = Mailchute::start(&sync_config(port, "data_timeout = \"2s\"\n", MAILDIR_SINK));
    let spool_tmp = m.path("data/spool/tmp");
    let mut c = Wire::connect(port);
    c.greeting();
    c.ehlo("client.test");
    c.expect("MAIL FROM:<from@client.test>", 250);
    c.expect("RCPT TO:<rcpt@test>", 250);
    c.expect("DATA", 354);
    c.send(b"From: a@client.test\r\nSubject: stalled\r\n\r\nfirst line\r\nsecond line\r\n");
    let stalled = Instant::now();
    // The message is being received into the spool: that file must go when it times out.
    std::thread::sleep(Duration::from_millis(500));
    let during = files_below(&spool_tmp);
    assert!(
        !during.is_empty(),
        "no spool file in {} while DATA is under way",
        spool_tmp.display()
    );
    let r = c
        .reply()
        .unwrap_or_else(|| panic!("closed without a 421\n--- log ---\n{}", m.log()));
    let waited = stalled.elapsed();
    assert_reply(&r, 421, "4.4.2", "stalled in DATA");
    c.assert_closed("after the data timeout 421");
    assert!(
        waited >= Duration::from_millis(1800) && waited < Duration::from_secs(15),
        "421 after {waited:?} for a 2 s data timeout"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while !files_below(&spool_tmp).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_nothing_stored(&m);
}

// ---------------------------------------------------------------------------------------
// 5. Connection limits

/// Connects until a greeting is 220 (a slot freed by a closed connection is released just
/// after the server closes its side).
fn connect_until_greeted(connect: impl Fn() -> Wire, context: &str) -> Wire {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut c = connect();
        match c.reply() {
            Some(r) if r.code == 220 => return c,
            other => assert!(
                Instant::now() < deadline,
                "{context}: still refused: {other:?}"
            ),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn assert_refused_at_connect(c: &mut Wire, context: &str) {
    let r = c
        .reply()
        .unwrap_or_else(|| panic!("{context}: closed without a 421"));
    assert_reply(&r, 421, "4.7.0", context);
    c.assert_closed(context);
}

#[test]
fn max_connections_refuses_the_third_connection() {
    let port = free_port();
    let u = start_unprobed(|_| sync_config(port, "max_connections = 2\n", MAILDIR_SINK));
    let mut a = Wire::connect(port);
    a.greeting();
    let mut b = Wire::connect(port);
    b.greeting();
    let mut third = Wire::connect(port);
    assert_refused_at_connect(&mut third, "third connection of max_connections = 2");

    a.quit();
    let mut again = connect_until_greeted(|| Wire::connect(port), "after one closed");
    again.ehlo("client.test");
    again.quit();
    b.ehlo("client.test");
    b.quit();
    drop(u);
}

#[test]
fn max_connections_per_ip_counts_each_client_address() {
    let port = free_port();
    let u = start_unprobed(|_| sync_config(port, "max_connections_per_ip = 1\n", MAILDIR_SINK));
    let one = Ipv4Addr::new(127, 0, 0, 1);
    let two = Ipv4Addr::new(127, 0, 0, 2);
    let mut a = Wire::connect_from(one, port);
    a.greeting();
    let mut same_ip = Wire::connect_from(one, port);
    assert_refused_at_connect(&mut same_ip, "second connection from 127.0.0.1");

    let mut other_ip = Wire::connect_from(two, port);
    assert_eq!(other_ip.source_ip(), IpAddr::V4(two));
    other_ip.greeting();

    a.quit();
    let again = connect_until_greeted(|| Wire::connect_from(one, port), "127.0.0.1 after close");
    again.quit();
    other_ip.quit();
    drop(u);
}

/// Behind a load balancer every connection comes from the balancer's address: the per-IP
/// limit must count the clients the PROXY headers name, and a refusal must reach the
/// client although the balancer sent the header (and the client a command) before it.
#[test]
fn proxy_listener_limits_count_the_proxied_clients() {
    let port = free_port();
    let u = start_unprobed(|_| {
        let extra = format!("{PROXY_LISTENER}max_connections = 3\nmax_connections_per_ip = 1\n");
        sync_config(port, &extra, MAILDIR_SINK)
    });
    let proxied = |client: &str, early: &str| {
        let mut c = Wire::connect(port);
        c.send(format!("PROXY TCP4 {client} 127.0.0.1 40000 25\r\n{early}").as_bytes());
        c
    };
    let mut a = proxied("192.0.2.7", "");
    a.greeting();
    let mut b = proxied("192.0.2.8", "");
    let r = b.reply();
    assert!(
        r.as_ref().is_some_and(|r| r.code == 220),
        "a second client behind the same balancer: {r:?}\n--- log ---\n{}",
        u.m.log()
    );

    let mut same_client = proxied("192.0.2.7", "EHLO client.example\r\n");
    let r = same_client
        .reply()
        .unwrap_or_else(|| panic!("second connection of 192.0.2.7: closed without a 421"));
    assert_reply(&r, 421, "4.7.0", "second connection of 192.0.2.7");
    assert!(r.lines[0].contains("from your address"), "{r:?}");
    same_client.assert_closed_cleanly("after the per-IP 421");

    let mut c = proxied("192.0.2.9", "");
    c.greeting();
    let mut over_total = proxied("192.0.2.10", "EHLO client.example\r\n");
    let r = over_total
        .reply()
        .unwrap_or_else(|| panic!("fourth connection: closed without a 421"));
    assert_reply(&r, 421, "4.7.0", "fourth connection of max_connections = 3");
    over_total.assert_closed_cleanly("after the max_connections 421");

    a.quit();
    let again = connect_until_greeted(|| proxied("192.0.2.7", ""), "192.0.2.7 after close");
    again.quit();
    b.ehlo("client.example");
    b.quit();
    c.quit();
}

// ---------------------------------------------------------------------------------------
// 6. max_errors

#[test]
fn max_errors_closes_at_the_third_error() {
    let port = free_port();
    let mut m = Mailchute::start(&sync_config(port, "max_errors = 3\n", MAILDIR_SINK));
    let mut c = Wire::connect(port);
    c.greeting();
    c.ehlo("client.test");
    assert_reply(&c.cmd("FOO"), 500, "5.5.2", "first unknown command");
    assert_reply(&c.cmd("BAR baz"), 500, "5.5.2", "second unknown command");
    // Not an error: the session is still alive after two.
    assert_reply(&c.cmd("NOOP"), 250, "2.0.0", "NOOP after two errors");
    // src/proto/mod.rs: "at max_errors the session queues 421 4.7.0 and closes", so the
    // third error gets its own 500 and then, right behind it, the 421.
    assert_reply(&c.cmd("QUUX"), 500, "5.5.2", "third unknown command");
    let r = c.must_reply("the third error (421 expected)");
    assert_reply(&r, 421, "4.7.0", "after max_errors");
    c.assert_closed("after too many errors");
    m.stop();
    let l = refusal_line(&m, "421 4.7.0");
    assert_eq!(l["command"], "UNKNOWN", "{l}");
}

// ---------------------------------------------------------------------------------------
// 7. max_recipients

#[test]
fn max_recipients_refuses_the_third_and_delivers_to_two() {
    let port = free_port();
    let m = Mailchute::start(&sync_config(port, "max_recipients = 2\n", MAILDIR_SINK));
    let msg = message("max-rcpts", "Two recipients only.\r\n");
    let mut c = Wire::connect(port);
    c.greeting();
    c.ehlo("client.test");
    c.expect("MAIL FROM:<from@client.test>", 250);
    c.expect("RCPT TO:<one@test>", 250);
    c.expect("RCPT TO:<two@test>", 250);
    assert_reply(&c.cmd("RCPT TO:<three@test>"), 452, "4.5.3", "third RCPT");
    c.expect("DATA", 354);
    c.send(&dot_stuff(&msg));
    let r = c.must_reply("the end of DATA");
    assert_eq!(r.code, 250, "end of DATA: {r:?}");
    c.quit();
    // One copy per recipient (envelope headers), each our Received line and the message.
    let msgs = read_maildir(&m.path("Maildir"));
    let mut for_whom: Vec<String> = msgs
        .iter()
        .map(|stored| {
            assert_stored(stored, &crlf_to_lf(&msg));
            split_envelope(stored).0.expect("an envelope block").1
        })
        .collect();
    for_whom.sort();
    assert_eq!(for_whom, ["one@test", "two@test"], "{}", m.log());
    let tx = transactions(&m);
    assert_eq!(tx.len(), 1, "{tx:?}");
    assert_eq!(tx[0]["rcpts"], "one@test,two@test", "{}", tx[0]);
}

// ---------------------------------------------------------------------------------------
// 8. Recipient and sender policy

#[test]
fn policy_refusals_at_mail_and_rcpt() {
    let port = free_port();
    let mut m = Mailchute::start(&routed_config(
        port,
        "sender_allow = \"@example\\\\.org$\"\nrecipient_deny = \"^blocked@\"\n",
        "[\"@example.org\"]",
    ));
    let msg = message("policy", "Past every check.\r\n");
    let mut c = Wire::connect(port);
    c.greeting();
    c.ehlo("client.test");
    assert_reply(
        &c.cmd("MAIL FROM:<a@evil.test>"),
        550,
        "5.7.1",
        "sender outside sender_allow",
    );
    c.expect("MAIL FROM:<a@example.org>", 250);
    assert_reply(
        &c.cmd("RCPT TO:<x@other.net>"),
        550,
        "5.1.1",
        "recipient no route matches",
    );
    assert_reply(
        &c.cmd("RCPT TO:<blocked@example.org>"),
        550,
        "5.7.1",
        "recipient_deny",
    );
    c.expect("RCPT TO:<ok@example.org>", 250);
    c.expect("DATA", 354);
    c.send(&dot_stuff(&msg));
    let r = c.must_reply("the end of DATA");
    assert_eq!(r.code, 250, "end of DATA: {r:?}");
    c.quit();
    let received = single_stored(&m, &msg);
    assert!(received.contains("for <ok@example.org>"), "{received:?}");
    // Each refusal is one log line with the facts of the session (the log is written
    // after the reply, so stop the server before reading it).
    m.stop();
    let l = refusal_line(&m, "550 5.7.1 <a@evil.test>: Sender address not allowed");
    assert_eq!(l["command"], "MAIL", "{l}");
    assert_eq!(l["from"], "a@evil.test", "{l}");
    assert!(l["rcpt"].is_null(), "{l}");
    let l = refusal_line(&m, "550 5.1.1");
    assert_eq!(l["command"], "RCPT", "{l}");
    assert_eq!(l["from"], "a@example.org", "{l}");
    assert_eq!(l["rcpt"], "x@other.net", "{l}");
    let l = refusal_line(&m, "550 5.7.1 <blocked@example.org>");
    assert_eq!(l["rcpt"], "blocked@example.org", "{l}");
    assert_eq!(refusals(&m).len(), 3, "{}", m.log());
    assert_eq!(transactions(&m).len(), 1, "{}", m.log());
}

#[test]
fn oversize_data_is_refused_and_logged_as_its_transaction() {
    let port = free_port();
    let mut m = Mailchute::start(&sync_config(
        port,
        "max_message_size = 200\nmax_recipients = 1\n",
        MAILDIR_SINK,
    ));
    let msg = message("too-big", &"x".repeat(400));
    let mut c = Wire::connect(port);
    c.greeting();
    c.ehlo("client.test");
    c.expect("MAIL FROM:<from@client.test>", 250);
    c.expect("RCPT TO:<one@test>", 250);
    assert_reply(&c.cmd("RCPT TO:<two@test>"), 452, "4.5.3", "second RCPT");
    c.expect("DATA", 354);
    c.send(&dot_stuff(&msg));
    let r = c.must_reply("the end of DATA");
    assert_reply(&r, 552, "5.3.4", "end of an oversize DATA");
    c.quit();
    m.stop();
    assert_nothing_stored(&m);
    let l = refusal_line(&m, "452 4.5.3");
    assert_eq!(l["command"], "RCPT", "{l}");
    assert_eq!(l["rcpt"], "two@test", "{l}");
    // The dropped message is a transaction like any other: one line, with its reply.
    let tx = transactions(&m);
    assert_eq!(tx.len(), 1, "{}", m.log());
    let t = &tx[0];
    assert_eq!(t["outcome"], "refused", "{t}");
    assert!(
        t["reply"]
            .as_str()
            .is_some_and(|r| r.starts_with("552 5.3.4")),
        "{t}"
    );
    assert!(t["error"].as_str().is_some_and(|e| !e.is_empty()), "{t}");
    assert_eq!(t["from"], "from@client.test", "{t}");
    assert_eq!(t["rcpts"], "one@test", "{t}");
    assert!(!t["id"].as_str().unwrap_or("").is_empty(), "{t}");
    assert!(
        !refusals(&m)
            .iter()
            .any(|l| l["reply"].as_str().is_some_and(|r| r.starts_with("552"))),
        "the 552 is logged once, as the transaction\n{}",
        m.log()
    );
}

/// An address that can never make a mailbox path is refused at RCPT (not after DATA, and
/// never accepted into the queue to die there); an address in quotes it does not need goes
/// to the same mailbox as without them.
#[test]
fn mailbox_path_refusals_come_at_rcpt() {
    let port = free_port();
    let sink = "type = \"maildir\"\npath = \"./boxes/{local}\"\n";
    let m = Mailchute::start(&sync_config(port, "", sink));
    let mut c = Wire::connect(port);
    c.greeting();
    c.ehlo("client.test");
    c.expect("MAIL FROM:<a@example.org>", 250);
    for bad in ["a/b@x.test", ".hidden@x.test", "..@x.test"] {
        assert_reply(&c.cmd(&format!("RCPT TO:<{bad}>")), 550, "5.1.3", bad);
    }
    c.expect("RCPT TO:<\"alice\"@x.test>", 250);
    c.expect("DATA", 354);
    let msg = message("quoted", "To alice, in quotes.\r\n");
    c.send(&dot_stuff(&msg));
    let r = c.must_reply("the end of DATA");
    assert_eq!(r.code, 250, "end of DATA: {r:?}");
    c.quit();
    let stored = read_maildir(&m.path("boxes/alice"));
    assert_eq!(stored.len(), 1, "{}", m.log());
    assert_stored(&stored[0], &crlf_to_lf(&msg));
}

// ---------------------------------------------------------------------------------------
// 9. allow_ips

#[test]
fn allow_ips_refuses_other_client_addresses() {
    let port = free_port();
    let u = start_unprobed(|_| sync_config(port, "allow_ips = [\"127.0.0.2/32\"]\n", MAILDIR_SINK));
    let mut refused = Wire::connect_from(Ipv4Addr::new(127, 0, 0, 1), port);
    let r = refused
        .reply()
        .unwrap_or_else(|| panic!("closed without a 554\n--- log ---\n{}", u.m.log()));
    assert_reply(&r, 554, "5.7.1", "client 127.0.0.1 not in allow_ips");
    refused.assert_closed("after 554");

    let mut allowed = Wire::connect_from(Ipv4Addr::new(127, 0, 0, 2), port);
    allowed.greeting();
    allowed.ehlo("client.test");
    let msg = message("allow-ips", "From an allowed address.\r\n");
    let r = allowed.transaction("from@client.test", &["rcpt@test"], &msg);
    assert_eq!(r.code, 250, "{r:?}");
    allowed.quit();
    let received = single_stored(&u.m, &msg);
    assert!(received.contains("[127.0.0.2]"), "{received:?}");
}

// ---------------------------------------------------------------------------------------
// 10. Unix socket listener

/// smtplib over AF_UNIX (its `_get_socket` is the one hook for another transport).
const SMTPLIB_UNIX: &str = r#"
import smtplib, socket, sys
path, msg_path = sys.argv[1], sys.argv[2]
class UnixSMTP(smtplib.SMTP):
    def _get_socket(self, host, port, timeout):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(timeout)
        s.connect(path)
        return s
s = UnixSMTP(local_hostname="client.test", timeout=60)
code, banner = s.connect("localhost", 25)
assert code == 220, (code, banner)
refused = s.sendmail("from@client.test", ["rcpt@test"], open(msg_path, "rb").read())
assert not refused, refused
s.quit()
"#;

#[test]
fn unix_socket_listener() {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let u = start_unprobed(|dir| {
        format!(
            r#"[server]
hostname = "mx.test"
data_dir = "./data"

[[listener]]
name = "local"
address = "unix:{}"
socket_mode = "0660"
mode = "sync"

[[route]]
match = ["*"]
sinks = ["box"]

[sink.box]
{MAILDIR_SINK}
"#,
            dir.join("mc.sock").display()
        )
    });
    let sock = u.m.path("mc.sock");
    let meta = std::fs::metadata(&sock)
        .unwrap_or_else(|e| panic!("{}: {e}\n--- log ---\n{}", sock.display(), u.m.log()));
    assert!(
        meta.file_type().is_socket(),
        "{} is not a socket",
        sock.display()
    );
    assert_eq!(
        meta.permissions().mode() & 0o7777,
        0o660,
        "mode of {}",
        sock.display()
    );

    let msg = message("unix-socket", "Over a unix socket.\r\n");
    let file = u.m.dir().join("unix.eml");
    std::fs::write(&file, &msg).unwrap();
    python_ok(
        SMTPLIB_UNIX,
        &[sock.to_str().unwrap(), file.to_str().unwrap()],
    );

    let received = single_stored(&u.m, &msg);
    // SAFETY: geteuid(2) has no preconditions and cannot fail.
    let uid = unsafe { libc::geteuid() };
    assert!(
        received.starts_with(&format!("Received: from client.test (uid {uid})")),
        "{received:?}"
    );
}

// ---------------------------------------------------------------------------------------
// 11. Command basics

#[test]
fn small_commands_on_the_wire() {
    let port = free_port();
    let _m = Mailchute::start(&sync_config(port, "", MAILDIR_SINK));
    let mut c = Wire::connect(port);
    c.greeting();
    c.ehlo("client.test");
    assert_eq!(c.cmd("HELP").code, 214);
    assert_eq!(c.cmd("VRFY postmaster").code, 252);
    assert_reply(&c.cmd("NOOP"), 250, "2.0.0", "NOOP");
    assert_eq!(c.cmd("RSET").code, 250);

    let long = format!("NOOP {}", "x".repeat(5000 - 5));
    assert_eq!(long.len(), 5000);
    assert_reply(&c.cmd(&long), 500, "5.5.2", "5000-byte command line");
    // The session goes on after the refused line.
    assert_reply(&c.cmd("NOOP"), 250, "2.0.0", "NOOP after the long line");

    // A second EHLO ends the transaction under way.
    c.expect("MAIL FROM:<from@client.test>", 250);
    c.ehlo("client.test");
    assert_reply(
        &c.cmd("RCPT TO:<rcpt@test>"),
        503,
        "5.5.1",
        "RCPT after a second EHLO",
    );
    c.expect("MAIL FROM:<from@client.test>", 250);
    c.expect("RCPT TO:<rcpt@test>", 250);
    c.quit();
}

// ---------------------------------------------------------------------------------------
// 12. SIGTERM

/// A `mailchute serve` the test owns, so it can read the exit status. SIGTERM/SIGKILL on
/// drop if it is still running.
struct Owned(Child);

impl Drop for Owned {
    fn drop(&mut self) {
        terminate(&mut self.0, Duration::from_secs(10));
    }
}

impl Owned {
    fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(st)) = self.0.try_wait() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

#[test]
fn sigterm_says_421_to_idle_sessions_and_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = dir.path().join("mailchute.toml");
    std::fs::write(&config, sync_config(port, "", MAILDIR_SINK)).unwrap();
    let log_path = dir.path().join("mailchute.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut child = Owned(
        Command::new(env!("CARGO_BIN_EXE_mailchute"))
            .arg("serve")
            .arg("-c")
            .arg(&config)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn mailchute"),
    );
    let read_log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    wait_for_banner(
        &format!("127.0.0.1:{port}"),
        false,
        Instant::now() + READY_TIMEOUT,
    )
    .unwrap_or_else(|e| panic!("{e}\n--- log ---\n{}", read_log()));

    let mut just_greeted = Wire::connect(port);
    just_greeted.greeting();
    let mut after_ehlo = Wire::connect(port);
    after_ehlo.greeting();
    after_ehlo.ehlo("client.test");

    // SAFETY: kill(2) on the pid of a child we spawned and have not reaped.
    let rc = unsafe { libc::kill(child.0.id() as libc::pid_t, libc::SIGTERM) };
    assert_eq!(rc, 0, "kill SIGTERM");

    for (c, name) in [
        (&mut just_greeted, "after greeting"),
        (&mut after_ehlo, "after EHLO"),
    ] {
        let r = c
            .reply()
            .unwrap_or_else(|| panic!("{name}: closed without a 421\n--- log ---\n{}", read_log()));
        assert_reply(&r, 421, "4.3.2", name);
        c.assert_closed(name);
    }
    let status = child.wait_exit(Duration::from_secs(20)).unwrap_or_else(|| {
        panic!(
            "still running 20 s after SIGTERM\n--- log ---\n{}",
            read_log()
        )
    });
    assert!(
        status.success(),
        "exit status {status}\n--- log ---\n{}",
        read_log()
    );
}
