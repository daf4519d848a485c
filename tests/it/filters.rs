//! The filter stage end to end: `rewrite` filters on a sync and a queued listener, sent
//! with Python's smtplib and read back with Python's `mailbox` and `email` parser; a
//! discarding filter; a changed body that survives kill -9 and a restart in the spool.

use std::time::{Duration, Instant};

use crate::harness::*;

/// A listener in `mode` with one route through four rewrite filters into `./Maildir`.
fn rewrite_config(port: u16, mode: &str) -> String {
    format!(
        r#"[server]
hostname = "mx.test"
data_dir = "./data"

[[listener]]
name = "mx"
address = "127.0.0.1:{port}"
mode = "{mode}"

[[route]]
name = "all"
match = ["*"]
filters = ["tag", "sender-name", "custom", "drop-internal"]
sinks = ["box"]

[sink.box]
type = "maildir"
path = "./Maildir"

[filter.tag]
type = "rewrite"
header = "Subject"
pattern = "^"
replace = "[tagged] "

# The display name becomes non-ASCII: it must come out as an encoded word, the address intact.
[filter.sender-name]
type = "rewrite"
header = "From"
pattern = "^Sender"
replace = "Bjørn Sender"

[filter.custom]
type = "rewrite"
header = "X-Custom"
pattern = '(\w+)-old'
replace = "$1-new"

[filter.drop-internal]
type = "rewrite"
header = "X-Internal"
pattern = ".*"
replace = ""
on_empty = "drop-header"
"#
    )
}

/// Sends one message with Python's smtplib: an encoded-word Subject, a folded custom
/// header that occurs twice, a header that rewrites to nothing.
const SEND: &str = r#"
import smtplib, sys
msg = (b"From: Sender <from@client.test>\r\n"
       b"To: Rcpt <rcpt@test>\r\n"
       b"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe_aus?= Berlin\r\n"
       b"X-Custom: alpha-old\r\n"
       b"X-Custom: beta-old and\r\n  gamma-old\r\n"
       b"X-Internal: secret\r\n"
       b"Message-ID: <filters@client.test>\r\n"
       b"\r\n"
       b"Body line one.\r\n"
       b"From the body, untouched: =?utf-8?q?not_a_header?=\r\n")
with smtplib.SMTP("127.0.0.1", int(sys.argv[1]), timeout=20) as s:
    s.sendmail("from@client.test", ["rcpt@test"], msg)
"#;

/// Reads every message of a Maildir with Python and prints what the headers decode to.
const READ: &str = r#"
import json, mailbox, sys, email.policy
from email import message_from_bytes
out = []
for key in sorted(mailbox.Maildir(sys.argv[1], create=False).keys()):
    raw = mailbox.Maildir(sys.argv[1], create=False).get_bytes(key)
    m = message_from_bytes(raw, policy=email.policy.default)
    out.append({
        "subject": str(m["subject"]),
        "from_name": m["from"].addresses[0].display_name,
        "from_addr": m["from"].addresses[0].addr_spec,
        "custom": [str(v) for v in m.get_all("x-custom", [])],
        "internal": m.get_all("x-internal"),
        "body": m.get_body().get_content(),
        "longest_line": max(len(l) for l in raw.split(b"\n\n")[0].split(b"\n")),
    })
print(json.dumps(out))
"#;

fn read_back(maildir: &std::path::Path) -> Vec<serde_json::Value> {
    let out = python_ok(READ, &[maildir.to_str().unwrap()]);
    serde_json::from_slice::<Vec<serde_json::Value>>(&out).expect("json from python")
}

fn assert_rewritten(m: &serde_json::Value) {
    assert_eq!(m["subject"], "[tagged] Grüße aus Berlin", "{m}");
    assert_eq!(m["from_name"], "Bjørn Sender", "{m}");
    assert_eq!(m["from_addr"], "from@client.test", "{m}");
    assert_eq!(
        m["custom"],
        // Unfolding removes only the line break (RFC 5322 2.2.3): the folding space stays.
        serde_json::json!(["alpha-new", "beta-new and  gamma-new"]),
        "{m}"
    );
    assert!(m["internal"].is_null(), "X-Internal not dropped: {m}");
    assert_eq!(
        m["body"], "Body line one.\nFrom the body, untouched: =?utf-8?q?not_a_header?=\n",
        "{m}"
    );
    assert!(m["longest_line"].as_u64().unwrap() <= 78, "{m}");
}

#[test]
fn rewrite_in_sync_and_queued_mode() {
    for mode in ["sync", "queued"] {
        let port = free_port();
        let mc = Mailchute::start(&rewrite_config(port, mode));
        python_ok(SEND, &[&port.to_string()]);
        let maildir = mc.path("Maildir");
        assert_eq!(
            wait_maildir_count(&maildir, 1, Duration::from_secs(20)),
            1,
            "{mode}: not delivered; log:\n{}",
            mc.log()
        );
        let msgs = read_back(&maildir);
        assert_eq!(msgs.len(), 1, "{mode}");
        assert_rewritten(&msgs[0]);
        // The transaction line says what the filters did.
        let line = mc
            .log_lines()
            .into_iter()
            .find(|l| l["event"] == "transaction")
            .unwrap_or_else(|| panic!("{mode}: no transaction line:\n{}", mc.log()));
        let outcome = line["outcome"].as_str().unwrap_or_default();
        assert!(
            outcome.contains("filters: all[tag changed, sender-name changed, custom changed, drop-internal changed]"),
            "{mode}: {line}"
        );
    }
}

#[test]
fn a_message_a_filter_discards_is_accepted_and_stored_nowhere() {
    let port = free_port();
    let config = sync_config(port, "", MAILDIR_SINK).replace(
        "sinks = [\"box\"]",
        "filters = [\"no-subject\"]\nsinks = [\"box\"]",
    ) + "\n[filter.no-subject]\ntype = \"rewrite\"\nheader = \"Subject\"\npattern = \"^discard me$\"\nreplace = \"\"\non_empty = \"discard-message\"\n";
    let mc = Mailchute::start(&config);
    let mut c = RawSmtp::connect(port);
    c.ehlo("client.test");
    let r = c.data_raw(
        "from@client.test",
        &["rcpt@test"],
        &dot_stuff(&message("discard me", "gone\r\n")),
    );
    assert_eq!(r.code, 250, "{r:?}\n{}", mc.log());
    let r = c.data_raw(
        "from@client.test",
        &["rcpt@test"],
        &dot_stuff(&message("keep me", "kept\r\n")),
    );
    assert_eq!(r.code, 250, "{r:?}");
    c.quit();
    let msgs = read_maildir(&mc.path("Maildir"));
    assert_eq!(msgs.len(), 1, "{}", mc.log());
    assert!(String::from_utf8_lossy(&msgs[0]).contains("Subject: keep me"));
    assert!(mc.log().contains("discarded"), "{}", mc.log());
}

/// Queued listener, rewrite filter, a sink that fails for now: the changed body is in the
/// spool beside the message; after kill -9 and a restart it is the changed body that is
/// delivered, once.
#[test]
fn a_changed_body_survives_kill9_and_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let out = dir.path().join("delivered.eml");
    let flag = dir.path().join("sink-up");
    let config = format!(
        r#"[server]
hostname = "mx.test"
data_dir = "./data"

[[listener]]
name = "mx"
address = "127.0.0.1:{port}"
mode = "queued"

[queue]
backoff_initial = "1s"
backoff_max = "1s"

[[route]]
name = "all"
match = ["*"]
filters = ["tag"]
sinks = ["later"]

[sink.later]
type = "exec"
command = ["/bin/sh", "-c", "test -e {flag} || exit 75; cat >> {out}"]

[filter.tag]
type = "rewrite"
header = "Subject"
pattern = "^"
replace = "[kept] "
"#,
        flag = flag.display(),
        out = out.display()
    );
    let mut first = Mailchute::start_in(dir.path(), &config);
    let mut c = RawSmtp::connect(port);
    c.ehlo("client.test");
    let r = c.data_raw(
        "from@client.test",
        &["rcpt@test"],
        &dot_stuff(&message("survivor", "through a crash\r\n")),
    );
    assert_eq!(r.code, 250, "{r:?}\n{}", first.log());
    c.quit();
    // The changed body sits in the queue beside the message.
    let queue = dir.path().join("data/spool/queue");
    let deadline = Instant::now() + Duration::from_secs(10);
    let body = loop {
        let found = files_below(&queue).into_iter().find(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            name.ends_with(".eml") && name.matches('.').count() == 2
        });
        if let Some(b) = found {
            break b;
        }
        assert!(Instant::now() < deadline, "no filtered body in {queue:?}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        String::from_utf8_lossy(&std::fs::read(&body).unwrap())
            .contains("Subject: [kept] survivor")
    );
    first.kill9();
    std::fs::write(&flag, b"").unwrap();
    let second = Mailchute::start_in(dir.path(), &config);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !out.exists() {
        assert!(
            Instant::now() < deadline,
            "not delivered after the restart:\n{}",
            second.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(3));
    let delivered = String::from_utf8_lossy(&std::fs::read(&out).unwrap()).into_owned();
    assert_eq!(
        delivered.matches("Subject:").count(),
        1,
        "delivered more than once:\n{delivered}"
    );
    assert!(
        delivered.contains("Subject: [kept] survivor"),
        "{delivered}"
    );
    // Nothing is left behind in the queue: message, sidecar and body are all gone.
    assert!(files_below(&queue).is_empty(), "{:?}", files_below(&queue));
}

/// DDMailer's header filters as mailchute config: its `[filter to NAME]` regex/subst on
/// each address (`each_address`), a Subject tag only for mail from cron (`if_sender`), and
/// its rule that a From that filters to nothing discards the message.
const DDMAILER_FILTERS: &str = r#"
[[route]]
name = "all"
match = ["*"]
filters = ["to-localhost", "cron-tag", "from-noreply"]
sinks = ["box"]

[sink.box]
type = "maildir"
path = "./Maildir"

[filter.to-localhost]
type = "rewrite"
header = "To"
each_address = true
pattern = '^(\w+)@localhost$'
replace = "$1@home.example"

[filter.cron-tag]
type = "rewrite"
header = "Subject"
if_sender = ["root@host.test", "/^cron@/"]
pattern = "^"
replace = "[cron] "

[filter.from-noreply]
type = "rewrite"
header = "From"
each_address = true
pattern = '^noreply@.*$'
replace = ""
on_empty = "discard-message"
"#;

const READ_TO_SUBJECT: &str = r#"
import json, mailbox, sys
box = mailbox.Maildir(sys.argv[1], create=False)
print(json.dumps(sorted([[m["subject"], m["to"]] for m in box])))
"#;

#[test]
fn ddmailer_header_filters_per_address_per_sender_and_discarding() {
    let port = free_port();
    let config = format!(
        "[[listener]]\naddress = \"127.0.0.1:{port}\"\nmode = \"sync\"\n{DDMAILER_FILTERS}"
    );
    let m = Mailchute::start(&config);
    let server = format!("127.0.0.1:{port}");
    for (from, header_from, subject) in [
        ("root@host.test", "root@host.test", "disk full"),
        ("alice@host.test", "alice@host.test", "hello"),
        ("cron@host.test", "noreply@host.test", "dropped"),
    ] {
        let msg = format!(
            "From: {header_from}\r\nTo: root@localhost, Bob <bob@x.test>\r\nSubject: {subject}\r\n\r\ntext\r\n"
        );
        let data = swaks_data(m.dir(), "msg.eml", msg.as_bytes());
        swaks_ok(&[
            "--server",
            &server,
            "--from",
            from,
            "--to",
            "rcpt@test",
            "--data",
            &data,
        ]);
    }
    let out = python_ok(READ_TO_SUBJECT, &[m.path("Maildir").to_str().unwrap()]);
    let got: serde_json::Value = serde_json::from_slice(&out).expect("json");
    assert_eq!(
        got,
        serde_json::json!([
            ["[cron] disk full", "root@home.example, Bob <bob@x.test>"],
            ["hello", "root@home.example, Bob <bob@x.test>"],
        ]),
        "{}",
        m.log()
    );
}
