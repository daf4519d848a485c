//! The envelope local sinks keep by default (`Return-Path:` and `Delivered-To:` in front,
//! one copy per recipient), read back with Python's `mailbox` and `email`.

use crate::harness::*;

/// Per message of a mailbox: every `Return-Path` and `Delivered-To` value, as Python's
/// `email` parser sees the stored message.
const ENVELOPE_FIELDS: &str = r#"
import json, mailbox, sys
kind, path = sys.argv[1:3]
mb = {"maildir": lambda p: mailbox.Maildir(p, create=False),
      "mh": lambda p: mailbox.MH(p, create=False),
      "mbox": lambda p: mailbox.mbox(p, create=False)}[kind](path)
out = []
for key in sorted(mb.keys()):
    m = mb[key]
    out.append({"return_path": m.get_all("Return-Path", []),
                "delivered_to": m.get_all("Delivered-To", []),
                "subject": m["Subject"]})
print(json.dumps(out))
"#;

fn envelope_fields(kind: &str, path: &std::path::Path) -> Vec<serde_json::Value> {
    let out = python_ok(ENVELOPE_FIELDS, &[kind, path.to_str().unwrap()]);
    serde_json::from_slice(&out).expect("reader prints JSON")
}

/// The message as a client sends it: To one recipient, a second one only in the envelope
/// (a Bcc), and a `Return-Path` of its own that must not survive.
fn forged() -> Vec<u8> {
    b"Return-Path: <forged@x.test>\r\n\
      From: Sender <from@client.test>\r\n\
      To: one@test\r\n\
      Subject: whose copy\r\n\
      return-path:\r\n <also-forged@x.test>\r\n\
      \r\n\
      Return-Path: <in the body, kept>\r\n"
        .to_vec()
}

/// `forged()` as a sink keeping the envelope stores it after our Received line: no
/// `Return-Path` fields in the header, LF line ends.
fn forged_as_stored() -> Vec<u8> {
    crlf_to_lf(
        b"From: Sender <from@client.test>\r\n\
          To: one@test\r\n\
          Subject: whose copy\r\n\
          \r\n\
          Return-Path: <in the body, kept>\r\n",
    )
}

#[test]
fn a_catch_all_mailbox_keeps_whom_each_copy_is_for() {
    let port = free_port();
    let sinks = r#"type = "maildir"
path = "./Maildir"

[sink.mh]
type = "mh"
path = "./Mail/inbox"

[sink.mbox]
type = "mbox"
path = "./mbox"

[sink.bare]
type = "maildir"
path = "./Bare"
envelope_headers = false
"#;
    let config = sync_config(port, "", sinks).replace(
        "sinks = [\"box\"]",
        "sinks = [\"box\", \"mh\", \"mbox\", \"bare\"]",
    );
    let m = Mailchute::start(&config);
    let msg = forged();
    let mut c = RawSmtp::connect(port);
    c.ehlo("client.test");
    let r = c.data_raw(
        "from@client.test",
        &["one@test", "two@test"],
        &dot_stuff(&msg),
    );
    c.finish();
    assert_eq!(r.code, 250, "{r:?}\n{}", m.log());

    // Maildir, MH, mbox: a copy per recipient, each with its own Delivered-To, the
    // envelope sender's Return-Path and no other; the rest byte for byte as sent.
    for (kind, path) in [
        ("maildir", "Maildir"),
        ("mh", "Mail/inbox"),
        ("mbox", "mbox"),
    ] {
        let fields = envelope_fields(kind, &m.path(path));
        let mut whom: Vec<String> = fields
            .iter()
            .map(|f| {
                assert_eq!(
                    f["return_path"],
                    serde_json::json!(["<from@client.test>"]),
                    "{kind}: {f}"
                );
                assert_eq!(f["subject"], "whose copy", "{kind}: {f}");
                let d = f["delivered_to"].as_array().expect("list");
                assert_eq!(d.len(), 1, "{kind}: {f}");
                d[0].as_str().unwrap().to_string()
            })
            .collect();
        whom.sort();
        assert_eq!(whom, ["one@test", "two@test"], "{kind}\n{}", m.log());

        let stored = read_mailboxes(kind, &[m.path(path)]).remove(0);
        for s in &stored {
            let (envelope, _) = split_envelope(s);
            let (sender, rcpt) = envelope.expect("the envelope first");
            assert_eq!(sender, "from@client.test");
            assert!(rcpt == "one@test" || rcpt == "two@test", "{rcpt}");
            assert!(s.starts_with(b"Return-Path: <from@client.test>\nDelivered-To: "));
            assert_stored(s, &forged_as_stored());
        }
    }
    // mbox: the `From ` line stays first, the envelope right after it.
    let raw = std::fs::read(m.path("mbox")).unwrap();
    assert!(
        raw.starts_with(b"From from@client.test "),
        "{}",
        String::from_utf8_lossy(&raw)
    );
    let second_line = raw.split(|&b| b == b'\n').nth(1).unwrap();
    assert_eq!(second_line, b"Return-Path: <from@client.test>");

    // envelope_headers = false: one file for both, the bytes exactly as before.
    let bare = read_maildir(&m.path("Bare"));
    assert_eq!(bare.len(), 1, "{}", m.log());
    assert!(split_envelope(&bare[0]).0.is_none());
    assert_stored(&bare[0], &crlf_to_lf(&msg));
}
