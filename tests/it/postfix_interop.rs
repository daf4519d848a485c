//! mailchute next to a real Postfix (a private instance, see postfix.rs): Postfix relaying
//! to mailchute over SMTP and LMTP, and mailchute relaying to Postfix with XFORWARD.

use std::time::Duration;

use crate::harness::*;
use crate::postfix::Postfix;

/// Strips our `Received:` header, then Postfix's, and checks the rest is `sent` (LF).
fn assert_via_postfix(stored: &[u8], sent: &[u8]) {
    let (_, after_ours) = split_received(stored);
    let (postfix_received, rest) = split_received(after_ours);
    let postfix_received = String::from_utf8_lossy(postfix_received);
    assert!(
        postfix_received.contains("by postfix.test (Postfix)"),
        "second header is not Postfix's Received: {postfix_received}"
    );
    assert_eq!(
        String::from_utf8_lossy(rest),
        String::from_utf8_lossy(&crlf_to_lf(sent))
    );
}

fn send_to_postfix(pf: &Postfix, dir: &std::path::Path, rcpts: &[&str], msg: &[u8]) {
    let server = format!("127.0.0.1:{}", pf.port);
    let to = rcpts.join(",");
    let data = swaks_data(dir, "pf.eml", msg);
    swaks_ok(&[
        "--server",
        &server,
        "--helo",
        "client.test",
        "--from",
        "from@client.test",
        "--to",
        &to,
        "--data",
        &data,
    ]);
}

#[test]
fn postfix_relays_to_mailchute_over_smtp() {
    let port = free_port();
    let m = Mailchute::start(&sync_config(port, "", MAILDIR_SINK));
    let pf = Postfix::builder()
        .relayhost(&format!("[127.0.0.1]:{port}"))
        .relay_domain("test")
        .start();
    let msg = message(
        "pf-smtp",
        "Relayed by Postfix over SMTP.\r\n.leading dot\r\n",
    );
    send_to_postfix(&pf, m.dir(), &["rcpt@test"], &msg);
    pf.wait_queue_empty(Duration::from_secs(30));
    let log = pf.log();
    assert!(
        log.contains(&format!("relay=127.0.0.1[127.0.0.1]:{port}")) && log.contains("status=sent"),
        "{log}"
    );
    let msgs = read_maildir(&m.path("Maildir"));
    assert_eq!(msgs.len(), 1, "mailchute log:\n{}", m.log());
    assert_via_postfix(&msgs[0], &msg);
}

#[test]
fn postfix_relays_to_mailchute_over_lmtp() {
    let port = free_port();
    let listener = "protocol = \"lmtp\"\n";
    // sync_config sets protocol = "smtp"; the later key would be a duplicate, so replace it.
    let config = sync_config(port, "", "type = \"maildir\"\npath = \"./boxes/{local}\"\n")
        .replace("protocol = \"smtp\"\n", listener);
    let m = Mailchute::start(&config);
    let pf = Postfix::builder()
        .transport("test", &format!("lmtp:inet:127.0.0.1:{port}"))
        .start();
    let msg = message("pf-lmtp", "Relayed by Postfix over LMTP.\r\n");
    send_to_postfix(&pf, m.dir(), &["alice@test", "bob@test"], &msg);
    pf.wait_queue_empty(Duration::from_secs(30));
    let log = pf.log();
    let sent: Vec<&str> = log
        .lines()
        .filter(|l| {
            l.contains(&format!("relay=127.0.0.1[127.0.0.1]:{port}")) && l.contains("status=sent")
        })
        .collect();
    assert_eq!(sent.len(), 2, "one status=sent per recipient:\n{log}");
    assert!(sent.iter().any(|l| l.contains("to=<alice@test>")), "{log}");
    assert!(sent.iter().any(|l| l.contains("to=<bob@test>")), "{log}");
    let boxes = read_mailboxes("maildir", &[m.path("boxes/alice"), m.path("boxes/bob")]);
    for msgs in &boxes {
        assert_eq!(msgs.len(), 1, "mailchute log:\n{}", m.log());
        assert_via_postfix(&msgs[0], &msg);
    }
}

#[test]
fn mailchute_relays_to_postfix_with_xforward() {
    let pf = Postfix::builder()
        .virtual_mailbox("rcpt@test")
        .main("smtpd_authorized_xforward_hosts", "127.0.0.0/8")
        .start();
    let port = free_port();
    let sink = format!("type = \"smtp\"\naddress = \"127.0.0.1:{}\"\n", pf.port);
    let m = Mailchute::start(&sync_config(port, "", &sink));
    let msg = message("xforward", "Relayed by mailchute with XFORWARD.\r\n");
    // Connect from 127.0.0.2 so the forwarded client address differs from mailchute's own.
    let t = {
        let server = format!("127.0.0.1:{port}");
        let data = swaks_data(m.dir(), "x.eml", &msg);
        swaks_ok(&[
            "--server",
            &server,
            "--local-interface",
            "127.0.0.2",
            "--helo",
            "client.example",
            "--from",
            "from@client.test",
            "--to",
            "rcpt@test",
            "--data",
            &data,
        ])
    };
    assert!(t.contains("<-  250 "), "{t}");
    pf.wait_queue_empty(Duration::from_secs(30));
    let log = pf.log();
    let client_lines: Vec<&str> = log.lines().filter(|l| l.contains(" client=")).collect();
    assert!(
        client_lines.iter().any(|l| l.contains("[127.0.0.2]")),
        "smtpd did not log the XFORWARD ADDR 127.0.0.2:\n{log}"
    );
    let msgs = read_maildir(&pf.maildir("rcpt@test"));
    assert_eq!(
        msgs.len(),
        1,
        "maillog:\n{log}\nmailchute log:\n{}",
        m.log()
    );
    let stored = String::from_utf8_lossy(&msgs[0]).into_owned();
    // Postfix's own Received line names its real peer (us); XFORWARD feeds its logging and
    // policy (checked above). Our Received line, below Postfix's, keeps the original client.
    let ours = stored
        .split("\nReceived: ")
        .nth(2)
        .expect("mailchute's Received header below Postfix's");
    assert!(
        ours.starts_with("from client.example ([127.0.0.2])"),
        "{stored}"
    );
    assert!(stored.ends_with(&String::from_utf8_lossy(&crlf_to_lf(&msg)).into_owned()));
}

/// A message that came in with a bare LF and a lone CR reaches a Postfix that refuses bare
/// newlines (`smtpd_forbid_bare_newline = reject`, its smuggling defence): the relay sends
/// every line end as CRLF, and a lone-CR "." line arrives stuffed, as an ordinary line.
#[test]
fn mailchute_relays_bare_line_ends_to_a_strict_postfix_as_crlf() {
    let pf = Postfix::builder()
        .virtual_mailbox("rcpt@test")
        .main("smtpd_forbid_bare_newline", "reject")
        .main("smtpd_forbid_bare_newline_exclusions", "")
        .start();
    let port = free_port();
    let sink = format!("type = \"smtp\"\naddress = \"127.0.0.1:{}\"\n", pf.port);
    let m = Mailchute::start(&sync_config(port, "", &sink));
    let mut msg = message("bare-line-ends", "");
    msg.extend_from_slice(b"bare LF\nlone CR\r.\rend\r\n");
    let mut c = RawSmtp::connect(port);
    c.ehlo("client.test");
    let r = c.data_raw("from@client.test", &["rcpt@test"], &dot_stuff(&msg));
    c.quit();
    assert_eq!(r.code, 250, "{r:?}\n{}\nmaillog:\n{}", m.log(), pf.log());
    pf.wait_queue_empty(Duration::from_secs(30));
    let msgs = read_maildir(&pf.maildir("rcpt@test"));
    assert_eq!(msgs.len(), 1, "maillog:\n{}", pf.log());
    // Postfix stores LF line ends: each bare LF and lone CR became one line end.
    let mut canonical = message("bare-line-ends", "");
    canonical.extend_from_slice(b"bare LF\r\nlone CR\r\n.\r\nend\r\n");
    let stored = String::from_utf8_lossy(&msgs[0]);
    let expected = String::from_utf8_lossy(&crlf_to_lf(&canonical)).into_owned();
    assert!(
        stored.ends_with(&expected),
        "{stored:?}\nexpected end {expected:?}"
    );
}
