//! The `rewrite` filter through the `Filter` trait, on real files.

use super::*;
use crate::envelope::Envelope;
use std::path::PathBuf;

fn config(header: &str, pattern: &str, replace: &str, on_empty: OnEmpty) -> RewriteConfig {
    RewriteConfig {
        header: header.into(),
        pattern: pattern.into(),
        replace: replace.into(),
        on_empty,
        if_sender: Vec::new(),
        each_address: false,
    }
}

fn ctx() -> FilterContext {
    FilterContext {
        hostname: "mx.example.org".into(),
        base_dir: PathBuf::from("/"),
    }
}

fn filter(header: &str, pattern: &str, replace: &str) -> RewriteFilter {
    filter_with(config(header, pattern, replace, OnEmpty::default()))
}

fn filter_with(c: RewriteConfig) -> RewriteFilter {
    RewriteFilter::new(&c, &ctx()).unwrap()
}

fn envelope() -> Envelope {
    Envelope {
        id: "0123456789ABCDEF01234567".into(),
        mail_from: "sender@example.org".into(),
        rcpts: vec!["rcpt@example.org".into()],
        client: Default::default(),
        listener: "test".into(),
        received_at: 1_700_000_000,
        body: Default::default(),
        smtputf8: false,
        size: 0,
        sha256: String::new(),
    }
}

/// What a run gave: the verdict, and the output file if one was written.
struct Run {
    verdict: Verdict,
    output: Option<Vec<u8>>,
    /// Kept so the output can be handed to Python.
    dir: tempfile::TempDir,
}

impl Run {
    fn changed(&self) -> &[u8] {
        assert_eq!(self.verdict, Verdict::Changed);
        self.output.as_deref().expect("an output was written")
    }

    fn changed_str(&self) -> &str {
        std::str::from_utf8(self.changed()).unwrap()
    }

    fn output_path(&self) -> PathBuf {
        self.dir.path().join("out")
    }
}

async fn run(f: &RewriteFilter, message: &[u8]) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let body = dir.path().join("in");
    let output = dir.path().join("out");
    std::fs::write(&body, message).unwrap();
    let envelope = envelope();
    let input = FilterInput {
        envelope: &envelope,
        route: "default",
        rcpts: &envelope.rcpts,
        body: &body,
        output: &output,
    };
    let verdict = f.apply(&input).await.unwrap();
    assert_eq!(
        std::fs::read(&body).unwrap(),
        message,
        "the input is never changed"
    );
    let output = std::fs::read(&output).ok();
    if matches!(verdict, Verdict::Pass | Verdict::Discard { .. }) {
        assert!(output.is_none(), "no output for {verdict:?}");
    }
    Run {
        verdict,
        output,
        dir,
    }
}

const RECEIVED: &str = "Received: from client.example.org by mx.example.org\r\n\twith ESMTP id 0123456789ABCDEF01234567; Tue, 14 Nov 2023 22:13:20 +0000\r\n";

fn lines_within(message: &str, limit: usize) {
    let head = message.split("\r\n\r\n").next().unwrap();
    for line in head.split("\r\n") {
        assert!(line.len() <= limit, "line of {}: {line:?}", line.len());
    }
}

#[tokio::test]
async fn subject_gets_a_prefix() {
    let msg = format!("{RECEIVED}From: a@example.org\r\nSubject: Hello\r\n\r\nBody\r\n");
    let r = run(&filter("subject", "^", "[archived] "), msg.as_bytes()).await;
    assert_eq!(
        r.changed_str(),
        format!("{RECEIVED}From: a@example.org\r\nSubject: [archived] Hello\r\n\r\nBody\r\n")
    );
}

/// DDMailer's From/To filters: the pattern on each address alone; an address that comes
/// out empty is left out of the list, a list that comes out empty is `on_empty`.
#[tokio::test]
async fn each_address_is_rewritten_alone_as_ddmailer_did() {
    let each = |pattern: &str, replace: &str| {
        filter_with(RewriteConfig {
            each_address: true,
            ..config("To", pattern, replace, OnEmpty::DiscardMessage)
        })
    };
    let msg = "To: root@localhost, Bob <bob@x.org>, cron@localhost\r\nSubject: s\r\n\r\nb\r\n";
    let r = run(
        &each("^([a-z]+)@localhost$", "$1@example.org"),
        msg.as_bytes(),
    )
    .await;
    assert_eq!(
        r.changed_str(),
        "To: root@example.org, Bob <bob@x.org>, cron@example.org\r\nSubject: s\r\n\r\nb\r\n"
    );
    // Without each_address the anchors see the whole list and match nothing.
    let whole = filter_with(config(
        "To",
        "^([a-z]+)@localhost$",
        "$1@example.org",
        OnEmpty::Keep,
    ));
    assert!(matches!(
        run(&whole, msg.as_bytes()).await.verdict,
        Verdict::Pass
    ));
    // One address dropped; then all of them: the message is discarded (DDMailer's rule).
    let r = run(&each("^cron@localhost$", ""), msg.as_bytes()).await;
    assert!(
        r.changed_str()
            .starts_with("To: root@localhost, Bob <bob@x.org>\r\n"),
        "{}",
        r.changed_str()
    );
    let r = run(&each(".*", ""), msg.as_bytes()).await;
    assert!(
        matches!(r.verdict, Verdict::Discard { .. }),
        "{:?}",
        r.verdict
    );
    // Only address fields have addresses.
    let bad = RewriteFilter::new(
        &RewriteConfig {
            each_address: true,
            ..config("Subject", "x", "y", OnEmpty::Keep)
        },
        &ctx(),
    );
    assert!(bad.is_err_and(|e| e.to_string().contains("not an address field")));
}

#[tokio::test]
async fn if_sender_limits_the_rule_to_some_envelope_senders() {
    let msg = "Subject: Hello\r\n\r\nb\r\n";
    let tagged = |if_sender: &[&str]| {
        filter_with(RewriteConfig {
            if_sender: if_sender.iter().map(|s| s.to_string()).collect(),
            ..config("Subject", "^", "[cron] ", OnEmpty::Keep)
        })
    };
    // envelope() is from sender@example.org.
    for matching in [
        &["@example.org"][..],
        &["/^send/"],
        &["sender@EXAMPLE.org"],
        &["*"],
        &[],
    ] {
        let r = run(&tagged(matching), msg.as_bytes()).await;
        assert_eq!(
            r.changed_str(),
            "Subject: [cron] Hello\r\n\r\nb\r\n",
            "{matching:?}"
        );
    }
    for other in [
        &["@cron.example"][..],
        &["Sender@example.org"],
        &["root@example.org", "/^x/"],
    ] {
        let r = run(&tagged(other), msg.as_bytes()).await;
        assert!(matches!(r.verdict, Verdict::Pass), "{other:?}");
    }
    let bad = RewriteFilter::new(
        &RewriteConfig {
            if_sender: vec!["not an address".into()],
            ..config("Subject", "^", "x", OnEmpty::Keep)
        },
        &ctx(),
    );
    assert!(bad.is_err_and(|e| format!("{e:?}").contains("if_sender")));
}

#[tokio::test]
async fn groups_in_replace() {
    let msg = "Subject: [list-a] hello [list-b] bye\r\n\r\n";
    let f = filter("Subject", r"\[(?<list>[a-z-]+)\] (\w+)", "$2 (${list})");
    let r = run(&f, msg.as_bytes()).await;
    assert_eq!(
        r.changed_str(),
        "Subject: hello (list-a) bye (list-b)\r\n\r\n",
        "every match is replaced"
    );
}

#[tokio::test]
async fn no_match_passes_without_output() {
    let msg = "Subject: Hello\r\nX-Other: [archived]\r\n\r\nBody [archived]\r\n";
    let r = run(&filter("Subject", r"\[archived\]", ""), msg.as_bytes()).await;
    assert_eq!(r.verdict, Verdict::Pass);
    // Matching but the same text again: nothing changed.
    let r = run(&filter("Subject", "Hello", "Hello"), msg.as_bytes()).await;
    assert_eq!(r.verdict, Verdict::Pass);
    let r = run(&filter("X-Absent", ".*", "x"), msg.as_bytes()).await;
    assert_eq!(r.verdict, Verdict::Pass);
}

#[tokio::test]
async fn from_display_name_non_ascii_in_and_out() {
    // In: an ISO-8859-1 encoded name; out: a UTF-8 one, address untouched.
    let msg = "From: =?iso-8859-1?q?J=F6rg_M=FCller?= <jm@example.org>\r\nTo: x@example.org\r\n\r\nBody\r\n";
    let r = run(&filter("From", "Jörg", "Jürgen"), msg.as_bytes()).await;
    assert_eq!(
        r.changed_str(),
        "From: =?utf-8?q?J=C3=BCrgen_M=C3=BCller?= <jm@example.org>\r\nTo: x@example.org\r\n\r\nBody\r\n"
    );
    // Non-ASCII out to ASCII: written as it is.
    let r = run(
        &filter("From", "Jörg Müller", "Joerg Mueller"),
        msg.as_bytes(),
    )
    .await;
    assert_eq!(
        r.changed_str(),
        "From: Joerg Mueller <jm@example.org>\r\nTo: x@example.org\r\n\r\nBody\r\n"
    );
    // ASCII in, non-ASCII out: a quoted name loses its quotes when encoded.
    let msg = "From: \"John Doe\" <john@example.org>, other@example.org\r\n\r\n";
    let r = run(&filter("from", "John", "Jöhn"), msg.as_bytes()).await;
    assert_eq!(
        r.changed_str(),
        "From: =?utf-8?q?J=C3=B6hn?= Doe <john@example.org>, other@example.org\r\n\r\n"
    );
}

#[tokio::test]
async fn custom_header() {
    let msg = "X-Spam-Status: Yes, score=9.1\r\nX-Spam-Level: *********\r\n\r\nBody\r\n";
    let r = run(
        &filter("x-spam-status", r"^Yes, (score=\S+)", "No, $1 (cleared)"),
        msg.as_bytes(),
    )
    .await;
    assert_eq!(
        r.changed_str(),
        "X-Spam-Status: No, score=9.1 (cleared)\r\nX-Spam-Level: *********\r\n\r\nBody\r\n"
    );
}

#[tokio::test]
async fn encoded_words_in_and_out() {
    // B and Q in, joined across the whitespace between them.
    let msg = "Subject: =?UTF-8?B?R3LDvMOfZQ==?= =?utf-8?Q?_aus_K=C3=B6ln?=\r\n\r\n";
    let r = run(&filter("Subject", "Köln", "Koeln"), msg.as_bytes()).await;
    assert_eq!(
        r.changed_str(),
        "Subject: =?utf-8?b?R3LDvMOfZQ==?= aus Koeln\r\n\r\n",
        "only the non-ASCII word is encoded"
    );
    let r = run(&filter("Subject", "^Grüße ", ""), msg.as_bytes()).await;
    assert_eq!(
        r.changed_str(),
        "Subject: aus =?utf-8?q?K=C3=B6ln?=\r\n\r\n"
    );
    let r = run(&filter("Subject", "Grüße aus Köln", "Hi"), msg.as_bytes()).await;
    assert_eq!(r.changed_str(), "Subject: Hi\r\n\r\n");
    // An encoded word in a charset we cannot decode stays as it is.
    let msg = "Subject: =?koi8-r?B?8NLJ18XU?= and more\r\n\r\n";
    let r = run(&filter("Subject", "more", "less"), msg.as_bytes()).await;
    assert_eq!(
        r.changed_str(),
        "Subject: =?koi8-r?B?8NLJ18XU?= and less\r\n\r\n"
    );
}

#[tokio::test]
async fn several_occurrences() {
    let msg = "X-Tag: one\r\nSubject: s\r\nx-tag: two\r\nX-TAG: three\r\n\r\n";
    let r = run(&filter("X-Tag", "^", "tag:"), msg.as_bytes()).await;
    assert_eq!(
        r.changed_str(),
        "X-Tag: tag:one\r\nSubject: s\r\nx-tag: tag:two\r\nX-TAG: tag:three\r\n\r\n"
    );
    // One of several changes: the others stay byte for byte (their folding too).
    let msg = "X-Tag: keep\r\n  folded\r\nX-Tag: change\r\n\r\n";
    let r = run(&filter("X-Tag", "^change$", "changed"), msg.as_bytes()).await;
    assert_eq!(
        r.changed_str(),
        "X-Tag: keep\r\n  folded\r\nX-Tag: changed\r\n\r\n"
    );
}

#[tokio::test]
async fn folded_headers_are_unfolded_for_matching_and_folded_when_written() {
    let msg = "Subject: a long subject that someone folded\r\n\tright here, and the\r\n pattern spans it\r\nX-Folded: kept\r\n as it was\r\n\r\nBody\r\n";
    let r = run(
        &filter("Subject", r"folded\s+right", "FOLDED RIGHT"),
        msg.as_bytes(),
    )
    .await;
    assert_eq!(
        r.changed_str(),
        "Subject: a long subject that someone FOLDED RIGHT here, and the pattern spans\r\n it\r\nX-Folded: kept\r\n as it was\r\n\r\nBody\r\n"
    );

    let long = "Grüße ".repeat(10) + &"and some ASCII words ".repeat(5) + "Ende";
    let f = filter("Subject", "^.*$", &long);
    let r = run(&f, b"Received: x\r\nSubject: short\r\n\r\nBody\r\n").await;
    let out = r.changed_str();
    lines_within(out, 78);
    assert!(
        out.lines().filter(|l| l.starts_with(' ')).count() >= 3,
        "{out}"
    );
    assert!(out.ends_with("\r\n\r\nBody\r\n"));
}

#[tokio::test]
async fn on_empty_drop_keep_and_discard() {
    let msg = "Subject: [SPAM]\r\nX-A: 1\r\n\r\nBody\r\n";
    let r = run(&filter("Subject", r"\s*\[SPAM\]\s*", ""), msg.as_bytes()).await;
    assert_eq!(
        r.changed_str(),
        "X-A: 1\r\n\r\nBody\r\n",
        "drop-header is the default"
    );

    let keep = config("Subject", r"\[SPAM\]", "", OnEmpty::Keep);
    let r = run(&filter_with(keep), msg.as_bytes()).await;
    assert_eq!(r.changed_str(), "Subject: \r\nX-A: 1\r\n\r\nBody\r\n");

    let discard = config("Subject", r"\[SPAM\]", "", OnEmpty::DiscardMessage);
    let r = run(&filter_with(discard), msg.as_bytes()).await;
    match r.verdict {
        Verdict::Discard { reason } => assert!(reason.contains("Subject"), "{reason}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn body_bytes_are_copied_untouched() {
    let mut body =
        b"From the start\r\nFrom here on\n>From quoted\r\nbare LF\nbare CR\rend".to_vec();
    body.extend((0..=255u8).cycle().take(300_000));
    body.extend_from_slice(b"\r\n\r\nSubject: not a header\r\n");
    let mut msg = b"Subject: x\r\nTo: y@example.org\r\n\r\n".to_vec();
    msg.extend_from_slice(&body);
    let r = run(&filter("Subject", "x", "z"), &msg).await;
    let out = r.changed();
    let head = b"Subject: z\r\nTo: y@example.org\r\n\r\n";
    assert_eq!(&out[..head.len()], head);
    assert!(out[head.len()..] == body[..], "body differs");
}

#[tokio::test]
async fn lf_messages_stay_lf() {
    let msg = "Received: x\n\tcontinued\nSubject: Hello\n\nBody\nmore\n";
    let r = run(&filter("Subject", "^", "[a] "), msg.as_bytes()).await;
    assert_eq!(
        r.changed_str(),
        "Received: x\n\tcontinued\nSubject: [a] Hello\n\nBody\nmore\n"
    );
    let long = "word ".repeat(30);
    let r = run(&filter("Subject", "Hello", &long), msg.as_bytes()).await;
    let out = r.changed_str();
    assert!(!out.contains('\r'));
    assert!(out.contains("\n word"), "{out}");
}

#[tokio::test]
async fn a_message_without_an_empty_line_is_all_header() {
    let r = run(
        &filter("Subject", "a", "b"),
        b"To: x@example.org\r\nSubject: a",
    )
    .await;
    assert_eq!(r.changed_str(), "To: x@example.org\r\nSubject: b\r\n");
    let r = run(&filter("Subject", "a", "b"), b"").await;
    assert_eq!(r.verdict, Verdict::Pass);
    let r = run(&filter("Subject", "a", "b"), b"\r\nSubject: a\r\n").await;
    assert_eq!(
        r.verdict,
        Verdict::Pass,
        "an empty header block: that is body"
    );
}

#[tokio::test]
async fn eight_bit_headers_are_left_alone() {
    // A raw ISO-8859-1 byte: no text to match.
    let msg = b"Subject: Caf\xe9 ouvert\r\nX-Raw: \xff\xfe\r\n\r\nBody\r\n";
    let r = run(&filter("Subject", ".*", "x"), msg).await;
    assert_eq!(r.verdict, Verdict::Pass);
    // Another field rewritten; the 8-bit ones stay byte for byte.
    let r = run(
        &filter("X-Other", "a", "b"),
        b"Subject: Caf\xe9\r\nX-Other: a\r\n\r\n",
    )
    .await;
    assert_eq!(r.changed(), b"Subject: Caf\xe9\r\nX-Other: b\r\n\r\n");
    // Raw UTF-8 is text.
    let r = run(
        &filter("Subject", "é", "e"),
        "Subject: Café\r\n\r\n".as_bytes(),
    )
    .await;
    assert_eq!(r.changed_str(), "Subject: Cafe\r\n\r\n");
}

#[test]
fn header_block_over_the_limit_is_not_read() {
    let msg = b"Subject: 0123456789\r\nX: y\r\n\r\nbody";
    let mut r = &msg[..];
    let head = read_head(&mut r, 64).unwrap().unwrap();
    assert_eq!(head.block, b"Subject: 0123456789\r\nX: y\r\n");
    assert_eq!(head.separator, b"\r\n");
    assert_eq!(r, b"body");
    assert!(read_head(&mut &msg[..], 10).unwrap().is_none());
    // Exactly at the limit, with the empty line after it.
    let head = read_head(&mut &msg[..], 27).unwrap().unwrap();
    assert_eq!(head.block.len(), 27);
    assert!(read_head(&mut &msg[..], 26).unwrap().is_none());
}

#[test]
fn config_errors_name_their_key() {
    let err = |c: RewriteConfig| RewriteFilter::new(&c, &ctx()).err().expect("an error");
    let e = err(config("Subject:", "x", "y", OnEmpty::Keep));
    assert_eq!(e.key, InvalidKey::at("header", "").key);
    assert!(e.message.contains("\"Subject:\""), "{}", e.message);
    assert_eq!(
        err(config("X Y", "x", "y", OnEmpty::Keep)).key,
        InvalidKey::at("header", "").key
    );
    assert_eq!(
        err(config("", "x", "y", OnEmpty::Keep)).key,
        InvalidKey::at("header", "").key
    );

    let e = err(config("Subject", "([a-z", "y", OnEmpty::Keep));
    assert_eq!(e.key, InvalidKey::at("pattern", "").key);
    assert!(e.message.contains("regular expression"), "{}", e.message);

    let e = err(config("Subject", "(a)", "$2", OnEmpty::Keep));
    assert_eq!(e.key, InvalidKey::at("replace", "").key);
    assert!(e.message.contains("\"2\""), "{}", e.message);
    let e = err(config("Subject", "(?<x>a)", "${y}", OnEmpty::Keep));
    assert!(e.message.contains("named: x"), "{}", e.message);
    let e = err(config("Subject", "(a)", "$1a", OnEmpty::Keep));
    assert!(e.message.contains("${1}a"), "{}", e.message);

    for ok in [
        "$1",
        "${1}a",
        "${x}",
        "$x",
        "$$2",
        "$",
        "$0 costs $$5",
        "${",
    ] {
        assert!(
            RewriteFilter::new(&config("Subject", "(?<x>a)", ok, OnEmpty::Keep), &ctx()).is_ok(),
            "{ok}"
        );
    }
}

#[test]
fn config_from_toml_and_summary() {
    let c: RewriteConfig =
        toml::from_str("header = 'Subject'\npattern = '^'\nreplace = '[archived] '\n").unwrap();
    assert_eq!(c.on_empty, OnEmpty::DropHeader);
    assert_eq!(
        summary(&c),
        r#"rewrite Subject: /^/ -> "[archived] " (on empty: drop header)"#
    );
    for (text, want) in [
        ("drop-header", OnEmpty::DropHeader),
        ("keep", OnEmpty::Keep),
        ("discard-message", OnEmpty::DiscardMessage),
    ] {
        let c: RewriteConfig = toml::from_str(&format!(
            "header = 'a'\npattern = 'b'\nreplace = ''\non_empty = '{text}'\n"
        ))
        .unwrap();
        assert_eq!(c.on_empty, want);
    }
    assert!(
        toml::from_str::<RewriteConfig>("header = 'a'\npattern = 'b'\nreplace = ''\nfoo = 1\n")
            .is_err()
    );
    assert!(
        toml::from_str::<RewriteConfig>(
            "header = 'a'\npattern = 'b'\nreplace = ''\non_empty = 'drop'\n"
        )
        .is_err()
    );
}

/// The fields of `path` as Python's `email` package reads them (policy `default`):
/// `name: value` per field asked for, and `addr: display name|addr-spec` per address of
/// the From field.
fn python_reads(path: &Path, names: &[&str]) -> Option<String> {
    let Some(python) = std::env::var("MAILCHUTE_TEST_PYTHON")
        .ok()
        .filter(|p| !p.is_empty())
    else {
        eprintln!(
            "MAILCHUTE_TEST_PYTHON is not set: skipping the check with Python's email package"
        );
        return None;
    };
    const SCRIPT: &str = r#"
import sys, email, email.policy
msg = email.message_from_bytes(open(sys.argv[1], 'rb').read(), policy=email.policy.default)
for name in sys.argv[2:]:
    for v in msg.get_all(name) or []:
        print(f"{name}: {v}")
for v in msg.get_all('From') or []:
    for a in v.addresses:
        print(f"addr: {a.display_name}|{a.addr_spec}")
for d in msg.defects:
    print(f"defect: {d!r}")
"#;
    let out = std::process::Command::new(python)
        .arg("-c")
        .arg(SCRIPT)
        .arg(path)
        .args(names)
        .output()
        .expect("python runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(String::from_utf8(out.stdout).unwrap())
}

#[tokio::test]
async fn pythons_email_package_reads_what_we_write() {
    let subject =
        "Grüße aus Köln — ☃ and a long tail of plain ASCII words that has to be folded somewhere";
    let msg = "From: \"Doe, John\" <john@example.org>\r\nSubject: placeholder\r\nX-Note: =?utf-8?q?caf=C3=A9?= open\r\n\r\nBody\r\n";

    let r = run(&filter("Subject", "placeholder", subject), msg.as_bytes()).await;
    lines_within(r.changed_str(), 78);
    if let Some(seen) = python_reads(&r.output_path(), &["Subject"]) {
        assert_eq!(
            seen,
            format!("Subject: {subject}\naddr: Doe, John|john@example.org\n")
        );
    }

    let r = run(&filter("From", "Doe, John", "Dœ, Jöhn"), msg.as_bytes()).await;
    assert!(r.changed_str().contains("<john@example.org>"));
    if let Some(seen) = python_reads(&r.output_path(), &[]) {
        assert_eq!(seen, "addr: Dœ, Jöhn|john@example.org\n");
    }

    let r = run(&filter("X-Note", "open", "geöffnet"), msg.as_bytes()).await;
    assert_eq!(
        r.changed_str().lines().nth(2),
        Some("X-Note: =?utf-8?q?caf=C3=A9_ge=C3=B6ffnet?=")
    );
    if let Some(seen) = python_reads(&r.output_path(), &["X-Note"]) {
        assert_eq!(
            seen,
            "X-Note: café geöffnet\naddr: Doe, John|john@example.org\n"
        );
    }

    let from = "Jörg Müller-Lüdenscheidt von und zu Großherzogtum <jm@example.org>, \"Ünal, Ömer\" <oe@example.org>, plain@example.org, Zoë <z@example.org>";
    let r = run(&filter("From", "^.*$", from), msg.as_bytes()).await;
    lines_within(r.changed_str(), 78);
    if let Some(seen) = python_reads(&r.output_path(), &[]) {
        assert_eq!(
            seen,
            "addr: Jörg Müller-Lüdenscheidt von und zu Großherzogtum|jm@example.org\n\
             addr: Ünal, Ömer|oe@example.org\n\
             addr: |plain@example.org\n\
             addr: Zoë|z@example.org\n"
        );
    }
}

// a changed body is mail like the message it came from: the spool writes messages
// 0600; the filtered body lands beside it (spool/queue, dead/) and must not be 0644.
#[tokio::test]
async fn the_output_is_private_like_the_spool() {
    use std::os::unix::fs::PermissionsExt;
    let f = filter("Subject", "^", "[t] ");
    let r = run(&f, b"Subject: a\r\n\r\nbody\r\n").await;
    r.changed();
    let mode = std::fs::metadata(r.output_path())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "mode {mode:o}");
}
