//! The durable spool of a `queued` listener: 250 means it will be delivered, across a sink
//! that is down, a kill -9, and a lifetime that runs out (dead-letter directory).

use std::path::Path;
use std::time::Duration;

use crate::harness::*;

fn queued_config(port: u16, sink_port: u16, max_lifetime: &str) -> String {
    format!(
        r#"[server]
hostname = "queue.test"
data_dir = "./data"

[[listener]]
name = "mx"
address = "127.0.0.1:{port}"
protocol = "smtp"
mode = "queued"

[queue]
backoff_initial = "1s"
backoff_max = "2s"
max_lifetime = "{max_lifetime}"

[[route]]
name = "all"
match = ["*"]
sinks = ["next"]

[sink.next]
type = "lmtp"
address = "127.0.0.1:{sink_port}"
"#
    )
}

/// The second hop: an LMTP listener delivering to `./Maildir`.
fn lmtp_maildir_config(port: u16) -> String {
    sync_config(port, "", MAILDIR_SINK).replace("protocol = \"smtp\"\n", "protocol = \"lmtp\"\n")
}

fn send_one(port: u16, msg: &[u8]) {
    let mut c = RawSmtp::connect(port);
    c.ehlo("client.test");
    let r = c.data_raw("from@client.test", &["rcpt@test"], &dot_stuff(msg));
    assert_eq!(r.code, 250, "{r:?}");
    c.quit();
}

/// Relayed through two mailchutes: one or two `Received:` headers, then exactly `sent`.
fn assert_relayed(stored: &[u8], sent: &[u8]) {
    let (_, mut rest) = split_received(stored);
    if rest.starts_with(b"Received: from ") {
        rest = split_received(rest).1;
    }
    assert_eq!(
        String::from_utf8_lossy(rest),
        String::from_utf8_lossy(&crlf_to_lf(sent))
    );
}

/// Waits for exactly one delivered message and checks no duplicate follows a few retries later.
fn assert_delivered_once(maildir: &Path, sent: &[u8], log: impl Fn() -> String) {
    let n = wait_maildir_count(maildir, 1, Duration::from_secs(30));
    assert_eq!(n, 1, "not delivered; first mailchute's log:\n{}", log());
    std::thread::sleep(Duration::from_secs(4));
    let msgs = read_maildir(maildir);
    assert_eq!(msgs.len(), 1, "delivered more than once");
    assert_relayed(&msgs[0], sent);
}

#[test]
fn queued_delivers_to_lmtp_sink() {
    let b_port = free_port();
    let b = Mailchute::start(&lmtp_maildir_config(b_port));
    let a_port = free_port();
    let a = Mailchute::start(&queued_config(a_port, b_port, "5d"));
    let msg = message("queued", "Through the spool.\r\n");
    send_one(a_port, &msg);
    assert_delivered_once(&b.path("Maildir"), &msg, || a.log());
}

#[test]
fn queued_waits_for_a_sink_that_starts_late() {
    let b_port = free_port();
    let a_port = free_port();
    let a = Mailchute::start(&queued_config(a_port, b_port, "5d"));
    let msg = message("late-sink", "The sink was down when this was accepted.\r\n");
    send_one(a_port, &msg);
    std::thread::sleep(Duration::from_secs(3));
    let b = Mailchute::start(&lmtp_maildir_config(b_port));
    assert_delivered_once(&b.path("Maildir"), &msg, || a.log());
}

#[test]
fn lifetime_exceeded_goes_to_dead_letters() {
    let a_port = free_port();
    let a = Mailchute::start(&queued_config(a_port, closed_port(), "2s"));
    let marker = "dead-letter-marker-7f3a";
    let msg = message("expired", &format!("{marker}\r\n"));
    send_one(a_port, &msg);
    let dead = a.path("data/dead");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let found = files_below(&dead).into_iter().any(|f| {
            std::fs::read(&f)
                .map(|b| b.windows(marker.len()).any(|w| w == marker.as_bytes()))
                .unwrap_or(false)
        });
        if found {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no file under {} holds the message; log:\n{}",
            dead.display(),
            a.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn kill9_after_250_then_restart_delivers() {
    let dir = tempfile::tempdir().unwrap();
    let b_port = free_port();
    let a_port = free_port();
    let config = queued_config(a_port, b_port, "5d");
    let mut a = Mailchute::start_in(dir.path(), &config);
    let msg = message("survives-kill", "Acknowledged, then the process died.\r\n");
    send_one(a_port, &msg);
    a.kill9();
    let b = Mailchute::start(&lmtp_maildir_config(b_port));
    let a2 = Mailchute::start_in(dir.path(), &config);
    assert_delivered_once(&b.path("Maildir"), &msg, || a2.log());
}

/// `[server] user`: after binding, the daemon runs as that user and still owns its spool
/// (made as root a moment before), so queued mail is spooled and delivered.
#[test]
fn drops_privileges_and_keeps_its_spool_writable() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let tmp = tempfile::tempdir().expect("tempdir");
    // mktemp dirs are 0700: let `nobody` reach the config's directory.
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let port = free_port();
    // The mailbox lives under data_dir, which the daemon hands to its run user.
    let sink = "type = \"maildir\"\npath = \"./data/Maildir\"\n";
    let config = sync_config(port, "", sink)
        .replace("mode = \"sync\"", "mode = \"queued\"")
        .replace(
            "data_dir = \"./data\"",
            "data_dir = \"./data\"\nuser = \"nobody\"",
        );
    let m = Mailchute::start_in(tmp.path(), &config);
    let pid = m.pid().expect("running");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uid_line = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .unwrap()
        .to_string();
    assert!(
        uid_line.split_whitespace().skip(1).all(|u| u == "65534"),
        "{uid_line}"
    );

    let msg = message("privileges", "Spooled and delivered as nobody.\r\n");
    let mut c = RawSmtp::connect(port);
    c.ehlo("client.test");
    let r = c.data_raw("a@x.test", &["b@y.test"], &dot_stuff(&msg));
    assert_eq!(r.code, 250, "{}\n{}", r.text(), m.log());
    c.quit();
    let maildir = tmp.path().join("data/Maildir");
    assert_eq!(
        wait_maildir_count(&maildir, 1, Duration::from_secs(30)),
        1,
        "{}",
        m.log()
    );
    assert_stored(&read_maildir(&maildir)[0], &crlf_to_lf(&msg));
    let owner = std::fs::metadata(tmp.path().join("data/spool/queue"))
        .unwrap()
        .uid();
    assert_eq!(owner, 65534);
}

/// kill -9 while the queue appends a large message to an mbox: after the restart the mbox
/// holds the message once and whole — the torn first append is cut away, not left as a
/// message of its own in front of the retried copy.
#[test]
fn kill9_during_mbox_append_leaves_one_whole_message() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let sink = "type = \"mbox\"\npath = \"./box\"\n";
    let config = sync_config(port, "", sink).replace("mode = \"sync\"", "mode = \"queued\"");
    let line = format!("{}\r\n", "x".repeat(998));
    let body = line.repeat(20 << 10); // 20 MB
    let msg = message("torn-append", &body);
    let mbox = dir.path().join("box");

    let mut a = Mailchute::start_in(dir.path(), &config);
    send_one(port, &msg);
    // Kill as soon as the append has begun (if it finished already, the test still checks
    // that exactly one copy is there).
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while std::fs::metadata(&mbox).map_or(0, |m| m.len()) < 1 << 20
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(1));
    }
    a.kill9();
    let size_at_kill = std::fs::metadata(&mbox).map_or(0, |m| m.len());
    eprintln!("mbox had {size_at_kill} bytes at the kill");

    let b = Mailchute::start_in(dir.path(), &config);
    let queue = dir.path().join("data/spool/queue");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !files_below(&queue).is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        files_below(&queue).is_empty(),
        "not delivered:\n{}",
        b.log()
    );
    let msgs = read_mbox(&mbox);
    assert_eq!(
        msgs.len(),
        1,
        "mbox after a kill at {size_at_kill} bytes: {:?} messages of {:?} bytes; log:\n{}",
        msgs.len(),
        msgs.iter().map(Vec::len).collect::<Vec<_>>(),
        b.log()
    );
    assert_stored(&msgs[0], &crlf_to_lf(&msg));
}
