//! SMTP ingress against a `sync` listener, with clients that are not ours (swaks, Python's
//! smtplib, a raw socket) and readers that are not ours (Python's mailbox). What a sink
//! stores must be our `Received:` header followed by exactly what was sent, CRLF → LF
//! (default `line_endings = "lf"`), or byte for byte with `line_endings = "crlf"`.

use std::path::Path;

use crate::harness::*;

/// Sends `msg` with Python's smtplib; `opts` is a JSON object: `from`, `to` (list),
/// `mail_options` (list), `starttls` (bool). Prints the refused recipients as JSON.
const SMTPLIB_SEND: &str = r#"
import json, smtplib, ssl, sys
port, path, opts = int(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3])
msg = open(path, "rb").read()
s = smtplib.SMTP("127.0.0.1", port, local_hostname="client.test", timeout=120)
if opts.get("starttls"):
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    s.starttls(context=ctx)
refused = s.sendmail(opts["from"], opts["to"], msg, mail_options=opts.get("mail_options", []))
s.quit()
print(json.dumps({k: [v[0], v[1].decode("utf-8", "replace")] for k, v in refused.items()}))
"#;

fn smtplib_send(port: u16, dir: &Path, msg: &[u8], opts: serde_json::Value) {
    let file = dir.join("smtplib.eml");
    std::fs::write(&file, msg).unwrap();
    let out = python_ok(
        SMTPLIB_SEND,
        &[&port.to_string(), file.to_str().unwrap(), &opts.to_string()],
    );
    let refused: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(refused, serde_json::json!({}), "refused recipients");
}

fn swaks_to(port: u16, dir: &Path, msg: &[u8], extra: &[&str]) -> String {
    let server = format!("127.0.0.1:{port}");
    let data = swaks_data(dir, "swaks.eml", msg);
    let mut args = vec![
        "--server",
        &server,
        "--helo",
        "client.test",
        "--from",
        "from@client.test",
        "--to",
        "rcpt@test",
        "--data",
        &data,
    ];
    args.extend_from_slice(extra);
    swaks_ok(&args)
}

/// The one message in `./Maildir`, checked to be Received + `sent` with CRLF → LF.
fn assert_single_lf(m: &Mailchute, sent: &[u8]) {
    let msgs = read_maildir(&m.path("Maildir"));
    assert_eq!(msgs.len(), 1, "log:\n{}", m.log());
    let (received, _) = split_received(&msgs[0]);
    assert!(
        !received.contains(&b'\r'),
        "CR in an lf-mode Received header: {:?}",
        String::from_utf8_lossy(received)
    );
    assert_stored(&msgs[0], &crlf_to_lf(sent));
}

fn start_maildir(listener_extra: &str) -> (Mailchute, u16) {
    let port = free_port();
    let m = Mailchute::start(&sync_config(port, listener_extra, MAILDIR_SINK));
    (m, port)
}

#[test]
fn swaks_plain() {
    let (m, port) = start_maildir("");
    let msg = message("swaks-plain", "Hello.\r\nSecond line.\r\n");
    let t = swaks_to(port, m.dir(), &msg, &[]);
    assert!(t.contains("<-  250 "), "{t}");
    assert_single_lf(&m, &msg);
}

#[test]
fn smtplib_plain() {
    let (m, port) = start_maildir("");
    let msg = message("smtplib-plain", "Hello from smtplib.\r\n");
    smtplib_send(
        port,
        m.dir(),
        &msg,
        serde_json::json!({"from": "from@client.test", "to": ["rcpt@test"]}),
    );
    assert_single_lf(&m, &msg);
}

fn tls_listener(dir: &Path, mode: &str) -> String {
    let (cert, key) = self_signed_cert(dir);
    format!(
        "tls = \"{mode}\"\ncert = \"{}\"\nkey = \"{}\"\n",
        cert.display(),
        key.display()
    )
}

#[test]
fn swaks_starttls() {
    let certs = tempfile::tempdir().unwrap();
    let (mut m, port) = start_maildir(&tls_listener(certs.path(), "starttls"));
    let msg = message("starttls", "Over TLS.\r\n");
    let t = swaks_to(port, m.dir(), &msg, &["-tls"]);
    assert!(t.contains("TLS started"), "{t}");
    assert_single_lf(&m, &msg);
    // The TLS facts reach the Received header and the transaction log line.
    let stored = &read_maildir(&m.path("Maildir"))[0];
    let received = String::from_utf8_lossy(split_received(stored).0).into_owned();
    assert!(received.contains("with ESMTPS"), "{received}");
    assert!(received.contains("(TLSv1."), "{received}");
    m.stop(); // the transaction line is written after the reply
    let tx: Vec<_> = m
        .log_lines()
        .into_iter()
        .filter(|l| l["event"] == "transaction")
        .collect();
    assert_eq!(tx.len(), 1, "{}", m.log());
    assert!(
        tx[0]["tls"]
            .as_str()
            .is_some_and(|t| t.starts_with("TLSv1.")),
        "{}",
        tx[0]
    );
}

#[test]
fn smtplib_starttls() {
    let certs = tempfile::tempdir().unwrap();
    let (m, port) = start_maildir(&tls_listener(certs.path(), "starttls"));
    let msg = message("smtplib-starttls", "Over TLS from smtplib.\r\n");
    smtplib_send(
        port,
        m.dir(),
        &msg,
        serde_json::json!({"from": "from@client.test", "to": ["rcpt@test"], "starttls": true}),
    );
    assert_single_lf(&m, &msg);
}

#[test]
fn swaks_implicit_tls() {
    let certs = tempfile::tempdir().unwrap();
    let (m, port) = start_maildir(&tls_listener(certs.path(), "implicit"));
    let msg = message("implicit-tls", "Implicit TLS.\r\n");
    let t = swaks_to(port, m.dir(), &msg, &["-tlsc"]);
    assert!(t.contains("TLS started"), "{t}");
    assert_single_lf(&m, &msg);
}

#[test]
fn swaks_pipelining() {
    let (m, port) = start_maildir("");
    let msg = message("pipelining", "Pipelined.\r\n");
    let t = swaks_to(port, m.dir(), &msg, &["--pipeline"]);
    assert!(t.contains("PIPELINING"), "{t}");
    assert_single_lf(&m, &msg);
}

#[test]
fn raw_pipelined_commands_in_one_write() {
    let (m, port) = start_maildir("");
    let msg = message("raw-pipeline", "All in one packet.\r\n");
    let mut c = RawSmtp::connect(port);
    c.ehlo("client.test");
    let mut batch = b"MAIL FROM:<from@client.test>\r\nRCPT TO:<rcpt@test>\r\nDATA\r\n".to_vec();
    c.send(&batch);
    assert_eq!(c.read_reply().code, 250);
    assert_eq!(c.read_reply().code, 250);
    assert_eq!(c.read_reply().code, 354);
    batch = dot_stuff(&msg);
    batch.extend_from_slice(b"NOOP\r\n");
    c.send(&batch);
    assert_eq!(c.read_reply().code, 250, "end of data");
    assert_eq!(c.read_reply().code, 250, "NOOP");
    c.quit();
    assert_single_lf(&m, &msg);
}

#[test]
fn bdat_chunks() {
    let (m, port) = start_maildir("");
    // No dot-stuffing in BDAT: the leading dots must arrive as they are.
    let msg = message(
        "bdat",
        "First chunk.\r\n.leading dot stays\r\n..two dots\r\nlast\r\n",
    );
    let mut c = RawSmtp::connect(port);
    let ext = c.ehlo("client.test");
    assert!(
        ext.iter().any(|e| e == "CHUNKING"),
        "no CHUNKING in {ext:?}"
    );
    c.expect("MAIL FROM:<from@client.test>", 250);
    c.expect("RCPT TO:<rcpt@test>", 250);
    let (a, b) = msg.split_at(40);
    for chunk in [a, b] {
        c.send(format!("BDAT {}\r\n", chunk.len()).as_bytes());
        c.send(chunk);
        let r = c.read_reply();
        assert_eq!(r.code, 250, "BDAT {} → {r:?}", chunk.len());
    }
    let r = c.cmd("BDAT 0 LAST");
    assert_eq!(r.code, 250, "BDAT 0 LAST → {r:?}");
    c.quit();
    assert_single_lf(&m, &msg);
}

#[test]
fn bdat_single_last_chunk() {
    let (m, port) = start_maildir("");
    let msg = message("bdat-last", "One chunk, LAST.\r\n");
    let mut c = RawSmtp::connect(port);
    c.ehlo("client.test");
    c.expect("MAIL FROM:<from@client.test>", 250);
    c.expect("RCPT TO:<rcpt@test>", 250);
    c.send(format!("BDAT {} LAST\r\n", msg.len()).as_bytes());
    c.send(&msg);
    assert_eq!(c.read_reply().code, 250);
    c.quit();
    assert_single_lf(&m, &msg);
}

/// The first word after the code: the enhanced status.
fn enhanced(r: &Reply) -> &str {
    r.lines[0].split_whitespace().nth(1).unwrap_or("")
}

/// RFC 3030 2: chunks pipelined behind a failed one are read, dropped and answered, not
/// counted as protocol errors (which would end in 421 at `max_errors`).
#[test]
fn pipelined_bdat_chunks_after_an_oversized_one() {
    let port = free_port();
    let cfg = sync_config(
        port,
        "max_message_size = 1000\nmax_errors = 10\n",
        MAILDIR_SINK,
    )
    .replace("protocol = \"smtp\"\n", "protocol = \"lmtp\"\n");
    let m = Mailchute::start(&cfg);
    let mut c = RawSmtp::connect(port);
    c.expect("LHLO client.test", 250);
    let mut batch = b"MAIL FROM:<from@client.test>\r\nRCPT TO:<rcpt@test>\r\n".to_vec();
    for _ in 0..25 {
        batch.extend_from_slice(b"BDAT 100\r\n");
        batch.extend_from_slice(&[b'x'; 100]);
    }
    batch.extend_from_slice(b"BDAT 0 LAST\r\n");
    c.send(&batch);
    let replies: Vec<Reply> = (0..2 + 25 + 1).map(|_| c.read_reply()).collect();
    let codes: Vec<u16> = replies.iter().map(|r| r.code).collect();
    let mut want = vec![250; 2 + 10];
    want.extend([552; 15 + 1]);
    assert_eq!(codes, want, "{replies:?}");
    assert!(
        replies[12..].iter().all(|r| enhanced(r) == "5.3.4"),
        "{replies:?}"
    );
    // Still in session, with no error counted.
    c.expect("NOOP", 250);
    let msg = message("after-oversized-chunks", "This one fits.\r\n");
    c.expect("MAIL FROM:<from@client.test>", 250);
    c.expect("RCPT TO:<rcpt@test>", 250);
    c.send(format!("BDAT {} LAST\r\n", msg.len()).as_bytes());
    c.send(&msg);
    assert_eq!(c.read_reply().code, 250, "log:\n{}", m.log());
    c.quit();
    assert_single_lf(&m, &msg);
}

/// `max_line_length` holds for BDAT as for DATA (the same 554 5.6.0), but not for
/// BODY=BINARYMIME, which has no lines.
#[test]
fn line_length_limit_in_data_and_bdat() {
    let (m, port) = start_maildir("max_line_length = 100\n");
    let long = message("long-line", &format!("{}\r\n", "y".repeat(101)));
    let mut c = RawSmtp::connect(port);
    c.ehlo("client.test");
    let r = c.data_raw("from@client.test", &["rcpt@test"], &dot_stuff(&long));
    assert_eq!((r.code, enhanced(&r)), (554, "5.6.0"), "DATA: {r:?}");
    c.expect("MAIL FROM:<from@client.test>", 250);
    c.expect("RCPT TO:<rcpt@test>", 250);
    c.send(format!("BDAT {} LAST\r\n", long.len()).as_bytes());
    c.send(&long);
    let r = c.read_reply();
    assert_eq!((r.code, enhanced(&r)), (554, "5.6.0"), "BDAT: {r:?}");
    assert_eq!(read_maildir(&m.path("Maildir")).len(), 0);

    c.expect("MAIL FROM:<from@client.test> BODY=BINARYMIME", 250);
    c.expect("RCPT TO:<rcpt@test>", 250);
    c.send(format!("BDAT {} LAST\r\n", long.len()).as_bytes());
    c.send(&long);
    let r = c.read_reply();
    assert_eq!(r.code, 250, "BINARYMIME: {r:?}");
    c.quit();
    assert_single_lf(&m, &long);
}

#[test]
fn eightbit_body_and_smtputf8_address() {
    let (m, port) = start_maildir("");
    let mut msg = b"From: =?utf-8?q?J=C3=B6rg?= <j\xc3\xb6rg@client.test>\r\n\
        To: <j\xc3\xb6s\xc3\xa9@test>\r\n\
        Subject: 8bit\r\n\
        Date: Sat, 22 Nov 2025 10:00:00 +0000\r\n\
        Message-ID: <8bit@client.test>\r\n\
        MIME-Version: 1.0\r\n\
        Content-Type: text/plain; charset=utf-8\r\n\
        Content-Transfer-Encoding: 8bit\r\n\r\n"
        .to_vec();
    msg.extend_from_slice("Grüße, ünïcödé ✓\r\n".as_bytes());
    msg.extend_from_slice(b"latin-1 bytes: caf\xe9 \xff\xfe\r\n");
    smtplib_send(
        port,
        m.dir(),
        &msg,
        serde_json::json!({
            "from": "jörg@client.test",
            "to": ["jösé@test"],
            "mail_options": ["BODY=8BITMIME", "SMTPUTF8"],
        }),
    );
    assert_single_lf(&m, &msg);
}

/// A body of `size` bytes in 78-character lines, deterministic.
fn big_body(size: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(size + 100);
    let mut n = 0u64;
    while out.len() < size {
        n += 1;
        let line = format!(
            "{n:010} {}\r\n",
            "abcdefghijklmnopqrstuvwxyz0123456789".repeat(2)
        );
        out.extend_from_slice(&line.as_bytes()[..78.min(line.len() - 2)]);
        out.extend_from_slice(b"\r\n");
    }
    out
}

#[test]
fn thirty_megabyte_message() {
    let (m, port) = start_maildir("max_message_size = \"50M\"\n");
    let mut msg = message("big", "");
    msg.extend_from_slice(&big_body(30 * 1024 * 1024));
    smtplib_send(
        port,
        m.dir(),
        &msg,
        serde_json::json!({"from": "from@client.test", "to": ["rcpt@test"]}),
    );
    assert_single_lf(&m, &msg);
}

#[test]
fn over_size_limit_gets_552_and_session_continues() {
    let (m, port) = start_maildir("max_message_size = \"1M\"\n");
    let mut big = message("too-big", "");
    big.extend_from_slice(&big_body(2 * 1024 * 1024));
    let small = message("after-too-big", "This one fits.\r\n");
    let mut c = RawSmtp::connect(port);
    c.ehlo("client.test");
    // No SIZE parameter: the limit must be enforced while reading the data.
    let r = c.data_raw("from@client.test", &["rcpt@test"], &dot_stuff(&big));
    assert_eq!(r.code, 552, "over-limit message → {r:?}");
    let r = c.data_raw("from@client.test", &["rcpt@test"], &dot_stuff(&small));
    assert_eq!(r.code, 250, "next message in the same session → {r:?}");
    c.quit();
    assert_single_lf(&m, &small);
}

#[test]
fn size_parameter_over_limit_refused_at_mail() {
    let (m, port) = start_maildir("max_message_size = \"1M\"\n");
    let mut c = RawSmtp::connect(port);
    let ext = c.ehlo("client.test");
    assert!(
        ext.iter().any(|e| e == "SIZE 1048576"),
        "SIZE not advertised as 1048576: {ext:?}"
    );
    c.expect("MAIL FROM:<from@client.test> SIZE=2000000", 552);
    c.expect("MAIL FROM:<from@client.test> SIZE=1000", 250);
    c.quit();
    assert_eq!(read_maildir(&m.path("Maildir")).len(), 0);
}

#[test]
fn bare_lf_and_lone_cr_in_body() {
    let (m, port) = start_maildir("");
    let mut msg = message("bare-lf", "");
    msg.extend_from_slice(b"bare LF here\nnext line\r\nlone CR\rin the middle\r\nend\r\n");
    let mut c = RawSmtp::connect(port);
    c.ehlo("client.test");
    let r = c.data_raw("from@client.test", &["rcpt@test"], &dot_stuff(&msg));
    assert_eq!(r.code, 250, "{r:?}");
    c.quit();
    assert_single_lf(&m, &msg);
}

/// SMTP smuggling: "\n.\r\n" (or "\r\n.\n") is not the end of the data. Either the
/// message is refused as a whole, or the would-be second message stays inside the first;
/// never two messages.
#[test]
fn bare_lf_dot_does_not_end_data() {
    let (m, port) = start_maildir("");
    let mut c = RawSmtp::connect(port);
    c.ehlo("client.test");
    c.expect("MAIL FROM:<from@client.test>", 250);
    c.expect("RCPT TO:<rcpt@test>", 250);
    c.expect("DATA", 354);
    c.send(
        b"Subject: outer\r\n\r\nouter body\n.\r\nMAIL FROM:<evil@client.test>\r\n\
          RCPT TO:<victim@test>\r\nDATA\r\nSubject: smuggled\r\n\r\ninner\r\n.\r\n",
    );
    let r = c.read_reply();
    assert!(r.code == 250 || r.code >= 500, "{r:?}");
    c.finish();
    let msgs = read_maildir(&m.path("Maildir"));
    assert!(msgs.len() <= 1, "smuggled a second message: {msgs:?}");
    if r.code == 250 {
        let (_, rest) = split_received(&msgs[0]);
        let rest = String::from_utf8_lossy(rest);
        assert!(rest.contains("MAIL FROM:<evil@client.test>"), "{rest}");
    }
}

#[test]
fn lines_starting_with_dots() {
    let (m, port) = start_maildir("");
    let msg = message(
        "dots",
        ".one dot\r\n..two dots\r\n.\r\n...\r\n . space first\r\nend\r\n",
    );
    let mut c = RawSmtp::connect(port);
    c.ehlo("client.test");
    let r = c.data_raw("from@client.test", &["rcpt@test"], &dot_stuff(&msg));
    assert_eq!(r.code, 250, "{r:?}");
    c.quit();
    assert_single_lf(&m, &msg);
}

#[test]
fn two_hundred_recipients_each_get_it() {
    let port = free_port();
    let sink = "type = \"maildir\"\npath = \"./boxes/{local}\"\n";
    let m = Mailchute::start(&sync_config(port, "max_recipients = 1000\n", sink));
    let rcpts: Vec<String> = (0..200).map(|i| format!("rcpt{i:03}@test")).collect();
    let msg = message("two-hundred", "To many.\r\n");
    smtplib_send(
        port,
        m.dir(),
        &msg,
        serde_json::json!({"from": "from@client.test", "to": rcpts}),
    );
    let paths: Vec<_> = (0..200)
        .map(|i| m.path(&format!("boxes/rcpt{i:03}")))
        .collect();
    let boxes = read_mailboxes("maildir", &paths);
    let expected = crlf_to_lf(&msg);
    for (i, msgs) in boxes.iter().enumerate() {
        assert_eq!(msgs.len(), 1, "rcpt{i:03} has {} messages", msgs.len());
        assert_stored(&msgs[0], &expected);
    }
}

#[test]
fn malformed_commands() {
    let (m, port) = start_maildir("");
    let mut c = RawSmtp::connect(port);
    c.ehlo("client.test");
    c.expect("FROBNICATE now", 500);
    c.expect("RCPT TO:<rcpt@test>", 503);
    c.expect("MAIL FROM:<", 501);
    c.expect("NOOP", 250);
    // The session is still usable after all that.
    let msg = message("after-errors", "Still fine.\r\n");
    let r = c.data_raw("from@client.test", &["rcpt@test"], &dot_stuff(&msg));
    assert_eq!(r.code, 250, "{r:?}");
    c.quit();
    assert_single_lf(&m, &msg);
}

#[test]
fn crlf_line_endings_store_exact_bytes() {
    let port = free_port();
    let sink = "type = \"maildir\"\npath = \"./Maildir\"\nline_endings = \"crlf\"\n";
    let m = Mailchute::start(&sync_config(port, "", sink));
    let msg = message("crlf", "Stored as sent.\r\n.dot\r\n");
    let mut c = RawSmtp::connect(port);
    c.ehlo("client.test");
    let r = c.data_raw("from@client.test", &["rcpt@test"], &dot_stuff(&msg));
    assert_eq!(r.code, 250, "{r:?}");
    c.quit();
    let msgs = read_maildir(&m.path("Maildir"));
    assert_eq!(msgs.len(), 1);
    let (received, _) = split_received(&msgs[0]);
    let lf = received.iter().filter(|&&b| b == b'\n').count();
    let crlf = received.windows(2).filter(|w| w == b"\r\n").count();
    assert!(
        lf == crlf,
        "Received header lines must end in CRLF: {:?}",
        String::from_utf8_lossy(received)
    );
    assert_stored(&msgs[0], &msg);
}

#[test]
fn mh_sink() {
    let port = free_port();
    let m = Mailchute::start(&sync_config(port, "", "type = \"mh\"\npath = \"./mh\"\n"));
    let first = message("mh-1", "First MH message.\r\n");
    let second = message("mh-2", "Second MH message.\r\n");
    let mut c = RawSmtp::connect(port);
    c.ehlo("client.test");
    for msg in [&first, &second] {
        let r = c.data_raw("from@client.test", &["rcpt@test"], &dot_stuff(msg));
        assert_eq!(r.code, 250, "{r:?}");
    }
    c.quit();
    let msgs = read_mh(&m.path("mh"));
    assert_eq!(msgs.len(), 2, "log:\n{}", m.log());
    assert_stored(&msgs[0], &crlf_to_lf(&first));
    assert_stored(&msgs[1], &crlf_to_lf(&second));
}

#[test]
fn mbox_sink_quotes_from_lines() {
    let port = free_port();
    let m = Mailchute::start(&sync_config(
        port,
        "",
        "type = \"mbox\"\npath = \"./mbox\"\n",
    ));
    let first = message(
        "mbox-1",
        "From here the trouble starts.\r\nno From at the start here\r\n",
    );
    let second = message("mbox-2", "Second.\r\n");
    let mut c = RawSmtp::connect(port);
    c.ehlo("client.test");
    for msg in [&first, &second] {
        let r = c.data_raw("from@client.test", &["rcpt@test"], &dot_stuff(msg));
        assert_eq!(r.code, 250, "{r:?}");
    }
    c.quit();
    let raw = std::fs::read(m.path("mbox")).unwrap();
    assert!(
        raw.starts_with(b"From "),
        "mbox must start with a From_ line"
    );
    let msgs = read_mbox(&m.path("mbox"));
    assert_eq!(msgs.len(), 2, "mbox:\n{}", String::from_utf8_lossy(&raw));
    // A body line starting "From " is stored as ">From " (Python's reader does not unquote).
    let quoted = crlf_to_lf(&first);
    let quoted = String::from_utf8(quoted)
        .unwrap()
        .replace("\nFrom here", "\n>From here");
    assert_stored(&msgs[0], quoted.as_bytes());
    assert_stored(&msgs[1], &crlf_to_lf(&second));
}
