//! `mailchute::smtp_client` one step at a time against real servers: the private Postfix
//! (RCPT replies one by one, XFORWARD with only what Postfix advertised, DATA's final
//! reply) and Dovecot's LMTP over its Unix socket (one final reply per recipient).

use std::path::Path;
use std::time::Duration;

use mailchute::smtp_client::{Client, DataReplies, FinalReplies, MailOptions, Target};

use crate::dovecot::Dovecot;
use crate::harness::{message, read_maildir};
use crate::postfix::Postfix;

const STEP: Duration = Duration::from_secs(20);

fn write_message(dir: &Path, msg: &[u8]) -> std::path::PathBuf {
    let path = dir.join("message.eml");
    std::fs::write(&path, msg).unwrap();
    path
}

fn sent(d: DataReplies) -> FinalReplies {
    match d {
        DataReplies::Sent(f) => f,
        DataReplies::Refused(r) => panic!("DATA refused: {r:?}"),
    }
}

#[tokio::test]
async fn step_by_step_transaction_against_postfix() {
    let pf = Postfix::builder()
        .virtual_mailbox("known@vdom.test")
        .main("smtpd_authorized_xforward_hosts", "127.0.0.0/8")
        .start();
    let tmp = tempfile::tempdir().unwrap();
    let msg = message(
        "step by step",
        "Sent by smtp_client, one step at a time.\r\n.dot\r\n",
    );
    let path = write_message(tmp.path(), &msg);

    let target = Target::parse(&format!("127.0.0.1:{}", pf.port)).unwrap();
    let mut c = Client::connect(&target, STEP).await.unwrap();
    let greeting = c.greeting().await.unwrap();
    assert_eq!(greeting.code, 220, "{greeting:?}");
    assert!(
        greeting.lines[0].starts_with("postfix.test ESMTP"),
        "{greeting:?}"
    );

    let ehlo = c.ehlo("relay.client.test").await.unwrap();
    assert_eq!((ehlo.code, ehlo.lines[0].as_str()), (250, "postfix.test"));
    let caps = c.capabilities();
    assert!(caps.has("PIPELINING") && caps.has("8BITMIME"), "{ehlo:?}");
    for attr in ["NAME", "ADDR", "PROTO", "HELO"] {
        assert!(caps.has_param("XFORWARD", attr), "{attr}: {ehlo:?}");
    }
    // An attribute Postfix does not advertise: sent, Postfix would answer
    // "501 5.5.4 Bad XFORWARD attribute name".
    assert!(!caps.has_param("XFORWARD", "FAVOURITE-COLOUR"));
    let attrs = [
        ("NAME", "forwarded.example".to_string()),
        ("ADDR", "192.0.2.9".to_string()),
        ("FAVOURITE-COLOUR", "blue".to_string()),
        ("PROTO", "ESMTP".to_string()),
        ("HELO", "helo.forwarded.example".to_string()),
    ];
    let xf = c
        .xforward(&attrs)
        .await
        .unwrap()
        .expect("XFORWARD was sent");
    assert_eq!((xf.code, xf.enhanced()), (250, Some("2.0.0")), "{xf:?}");

    let options = MailOptions {
        size: Some(msg.len() as u64),
        ..MailOptions::default()
    };
    let mail = c.mail("from@client.test", &options).await.unwrap();
    assert_eq!(mail.one_line(), "250 2.1.0 Ok");
    let ok = c.rcpt("known@vdom.test").await.unwrap();
    assert_eq!(ok.one_line(), "250 2.1.5 Ok");
    let refused = c.rcpt("unknown@vdom.test").await.unwrap();
    assert_eq!((refused.code, refused.enhanced()), (550, Some("5.1.1")));
    assert_eq!(
        refused.lines,
        vec![
            "5.1.1 <unknown@vdom.test>: Recipient address rejected: User unknown in virtual \
             mailbox table"
        ]
    );

    let finals = sent(c.data(&path, 1).await.unwrap());
    assert!(finals.error.is_none(), "{finals:?}");
    assert_eq!(finals.replies.len(), 1, "SMTP: one reply for the message");
    let end = &finals.replies[0];
    assert_eq!((end.code, end.enhanced()), (250, Some("2.0.0")), "{end:?}");
    assert!(end.lines[0].starts_with("2.0.0 Ok: queued as "), "{end:?}");
    assert!(c.is_usable());
    c.quit().await;

    pf.wait_queue_empty(Duration::from_secs(30));
    let log = pf.log();
    let queue_id = end.lines[0].trim_start_matches("2.0.0 Ok: queued as ");
    // smtpd logs the forwarded client beside its real peer (us, on 127.0.0.1).
    assert!(
        log.lines().any(|l| l.contains(&format!(
            "{queue_id}: client=localhost[127.0.0.1], orig_client=forwarded.example[192.0.2.9]"
        ))),
        "XFORWARD not applied:\n{log}"
    );
    let msgs = read_maildir(&pf.maildir("known@vdom.test"));
    assert_eq!(msgs.len(), 1, "{log}");
    let stored = String::from_utf8_lossy(&msgs[0]).into_owned();
    // Postfix 3.7's Received line names its real peer; the forwarded client goes to its
    // log (`orig_client=`, above) and its policy checks.
    assert!(
        stored.contains("Received: from relay.client.test (localhost [127.0.0.1])"),
        "{stored}"
    );
    assert!(stored.ends_with("Sent by smtp_client, one step at a time.\n.dot\n"));
}

#[tokio::test]
async fn lmtp_over_a_unix_socket_replies_per_recipient() {
    let alice = ("alice@dovecot.test", "alice-pw");
    let bob = ("bob@dovecot.test", "bob-pw");
    let dc = Dovecot::start(&[alice, bob]);
    let tmp = tempfile::tempdir().unwrap();
    let msg = message("lmtp step by step", "To Dovecot over its LMTP socket.\r\n");
    let path = write_message(tmp.path(), &msg);

    let target = Target::parse(&format!("unix:{}", dc.lmtp_socket().display())).unwrap();
    let mut c = Client::connect(&target, STEP).await.unwrap();
    assert!(c.is_local() && !c.is_encrypted());
    assert_eq!(c.greeting().await.unwrap().code, 220);
    let lhlo = c.lhlo("client.test").await.unwrap();
    assert_eq!(lhlo.code, 250, "{lhlo:?}");
    assert!(c.capabilities().has("PIPELINING"), "{lhlo:?}");

    let mail = c
        .mail("from@client.test", &MailOptions::default())
        .await
        .unwrap();
    assert_eq!(mail.code, 250, "{mail:?}");
    let r = c.rcpt(alice.0).await.unwrap();
    assert_eq!((r.code, r.enhanced()), (250, Some("2.1.5")), "{r:?}");
    let r = c.rcpt("nobody-here@dovecot.test").await.unwrap();
    assert_eq!((r.code, r.enhanced()), (550, Some("5.1.1")), "{r:?}");
    let r = c.rcpt(bob.0).await.unwrap();
    assert_eq!((r.code, r.enhanced()), (250, Some("2.1.5")), "{r:?}");

    let finals = sent(c.data(&path, 2).await.unwrap());
    assert!(finals.error.is_none(), "{finals:?}\n{}", dc.log());
    assert_eq!(finals.replies.len(), 2, "LMTP: one per accepted recipient");
    for (reply, user) in finals.replies.iter().zip([alice.0, bob.0]) {
        assert_eq!(
            (reply.code, reply.enhanced()),
            (250, Some("2.0.0")),
            "{reply:?}"
        );
        assert!(reply.one_line().contains(&format!("<{user}>")), "{reply:?}");
    }

    // The session goes on: RSET, then a transaction whose only RCPT is refused.
    assert_eq!(c.rset().await.unwrap().code, 250);
    assert_eq!(
        c.mail("from@client.test", &MailOptions::default())
            .await
            .unwrap()
            .code,
        250
    );
    assert_eq!(c.rcpt("nobody-here@dovecot.test").await.unwrap().code, 550);
    c.quit().await;

    for (user, pw) in [alice, bob] {
        let msgs = dc.imap_fetch_all(user, pw);
        assert_eq!(msgs.len(), 1, "{user}: {}", dc.log());
        assert!(
            msgs[0].ends_with(&msg),
            "{}",
            String::from_utf8_lossy(&msgs[0])
        );
    }
}
