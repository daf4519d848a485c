//! `mailchute deliver` as the MDA of a private Postfix's `pipe` transport: swaks → Postfix →
//! mailchute → Maildir, read back with Python's `mailbox`; a sink that fails for now →
//! Postfix defers, and after `postqueue -f` the message is there exactly once; an unknown
//! recipient → Postfix bounces with 5.1.1. The same into S3 (s3s-fs) with the store
//! stopped and started again. And the command's own exit statuses and status lines, run
//! directly.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::harness::*;
use crate::postfix::Postfix;

/// uid Postfix's pipe runs `deliver` as (`user=nobody`).
const NOBODY: u32 = 65534;

fn deliver_config(dir: &Path) -> String {
    deliver_config_with(dir, "", "")
}

/// The config with `route_extra` lines in its route and `tables` after it.
fn deliver_config_with(dir: &Path, route_extra: &str, tables: &str) -> String {
    format!(
        r#"[[route]]
name = "boxes"
match = ["alice@pipe.test", "bob@pipe.test", "carol@pipe.test", "a@pipe.test", "b@pipe.test", "r@pipe.test"]
sinks = ["box"]
{route_extra}
[sink.box]
type = "maildir"
path = "{}/mail/{{local}}"
{tables}"#,
        dir.display()
    )
}

/// A directory nobody can traverse and write (`mktemp` dirs are 0700 and root's).
fn world_dir(dir: &Path) {
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).unwrap();
}

/// Runs `mailchute deliver ARGS` with `stdin`; (status, everything it printed).
fn deliver(args: &[&str], stdin: &[u8]) -> (i32, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_mailchute"))
        .arg("deliver")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn deliver");
    use std::io::Write;
    // A run that refuses before reading (no route, bad config) closes its end first.
    let _ = child.stdin.take().unwrap().write_all(stdin);
    let out = child.wait_with_output().unwrap();
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn exit_statuses_and_status_lines() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("c.toml");
    fs::write(&conf, deliver_config(dir.path())).unwrap();
    let c = conf.to_str().unwrap();
    let msg = b"Subject: direct\n\nbody\n";
    // Delivered: 0, and nothing printed at all.
    assert_eq!(
        deliver(&["-c", c, "-a", "a@pipe.test", "-f", "s@x"], msg),
        (0, String::new())
    );
    // No route: 67 and the 5.1.1 line.
    let (code, out) = deliver(&["-c", c, "-a", "x@elsewhere.test"], msg);
    assert_eq!(code, 67);
    assert_eq!(out, "5.1.1 <x@elsewhere.test>: no such mailbox\n");
    // A config that cannot be read, an unknown option, a deadline beyond Postfix's limit:
    // 75 (retry), never a bounce, with a 4.x.x first line.
    for args in [
        vec!["-c", "/nonexistent.toml", "-a", "a@pipe.test"],
        vec!["-c", c, "--colour", "-a", "a@pipe.test"],
        vec!["-c", c, "--deadline", "2000s", "-a", "a@pipe.test"],
    ] {
        let (code, out) = deliver(&args, msg);
        assert_eq!(code, 75, "{args:?}: {out}");
        assert!(
            out.starts_with("4.3.5 mailchute deliver: "),
            "{args:?}: {out}"
        );
        assert_eq!(out.lines().count(), 1, "{out}");
    }
    // A sink that fails for now (its directory is a file): 75 and the sink's status.
    fs::remove_dir_all(dir.path().join("mail")).unwrap();
    fs::write(dir.path().join("mail"), b"not a directory").unwrap();
    let (code, out) = deliver(&["-c", c, "-a", "a@pipe.test"], msg);
    assert_eq!(code, 75, "{out}");
    assert!(out.starts_with("4.3.0 "), "{out}");
    // --log-stderr: the log lines come after the status line, never before it.
    let (code, out) = deliver(&["-c", c, "--log-stderr", "-a", "a@pipe.test"], msg);
    assert_eq!(code, 75, "{out}");
    let mut lines = out.lines();
    assert!(
        lines.next().is_some_and(|l| l.starts_with("4.3.0 ")),
        "{out}"
    );
    let rest: Vec<&str> = lines.collect();
    assert!(
        rest.iter()
            .any(|l| l.contains("\"transaction\"") && l.contains("a@pipe.test")),
        "{out}"
    );
    let (code, out) = deliver(
        &[
            "-c",
            c,
            "--log-stderr",
            "--log-file",
            "/tmp/x.log",
            "-a",
            "a@pipe.test",
        ],
        msg,
    );
    assert_eq!(code, 75, "{out}");
    assert!(out.starts_with("4.3.5 "), "{out}");
    // Its own deadline (a sink that hangs): 75 with 4.4.7, well before Postfix's limit.
    let slow = dir.path().join("slow.toml");
    fs::write(
        &slow,
        "[[route]]\nmatch = [\"*\"]\nsinks = [\"hang\"]\n\n[sink.hang]\ntype = \"exec\"\ncommand = [\"/bin/sleep\", \"30\"]\n",
    )
    .unwrap();
    let started = std::time::Instant::now();
    let (code, out) = deliver(
        &[
            "-c",
            slow.to_str().unwrap(),
            "--deadline",
            "1s",
            "-a",
            "a@pipe.test",
        ],
        msg,
    );
    assert_eq!(code, 75, "{out}");
    assert!(out.starts_with("4.4.7 "), "{out}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the deadline did not hold"
    );
    // A log file that cannot be opened: 75 too.
    let (code, out) = deliver(
        &[
            "-c",
            c,
            "--log-file",
            "/nonexistent/x.log",
            "-a",
            "a@pipe.test",
        ],
        msg,
    );
    assert_eq!(code, 75, "{out}");
}

#[test]
fn the_message_from_arguments_and_a_retry_stored_once() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("c.toml");
    fs::write(&conf, deliver_config(dir.path())).unwrap();
    let c = conf.to_str().unwrap();
    // mailtos3's habit: `-a=x -f=y "message"`.
    let (code, out) = deliver(
        &["-c", c, "-a=b@pipe.test", "-f=s@x", "Subject: args\n\nhi\n"],
        b"",
    );
    assert_eq!((code, out.as_str()), (0, ""));
    let stored = read_maildir(&dir.path().join("mail/b"));
    // The envelope in front (envelope_headers is on by default), then the message as given.
    assert_eq!(
        stored,
        vec![b"Return-Path: <s@x>\nDelivered-To: b@pipe.test\nSubject: args\n\nhi\n".to_vec()]
    );
    // The route's filters run as on every ingress.
    let filtered = dir.path().join("filtered.toml");
    fs::write(
        &filtered,
        deliver_config_with(
            dir.path(),
            "filters = [\"tag\"]\n",
            "\n[filter.tag]\ntype = \"rewrite\"\nheader = \"Subject\"\npattern = \"^\"\nreplace = \"[mda] \"\n",
        ),
    )
    .unwrap();
    let (code, out) = deliver(
        &["-c", filtered.to_str().unwrap(), "-a", "a@pipe.test"],
        b"Subject: x\n\nbody\n",
    );
    assert_eq!((code, out.as_str()), (0, ""));
    let a = read_maildir(&dir.path().join("mail/a"));
    assert_eq!(a.len(), 1);
    assert_eq!(split_envelope(&a[0]).1, b"Subject: [mda] x\n\nbody\n");
    // Postfix's `${recipient}` expanded to several recipients after one -a: refused (75),
    // never taken for the message.
    let (code, out) = deliver(
        &["-c", c, "-a", "a@pipe.test", "b@pipe.test", "-f", "s@x"],
        b"Subject: x\n\ny\n",
    );
    assert_eq!(code, 75, "{out}");
    assert!(out.contains("looks like a recipient"), "{out}");
    // Empty standard input is no message.
    let (code, out) = deliver(&["-c", c, "-a", "a@pipe.test"], b"");
    assert_eq!(code, 75, "{out}");
    // The same queue id and recipient twice (Postfix's retry): one copy.
    for _ in 0..2 {
        let (code, out) = deliver(
            &["-c", c, "-a", "r@pipe.test", "--id", "4AbC1"],
            b"Subject: q\n\n.\n",
        );
        assert_eq!((code, out.as_str()), (0, ""));
    }
    assert_eq!(read_maildir(&dir.path().join("mail/r")).len(), 1);
    // A reader moved it to cur/ before Postfix's retry: still recognised.
    let r = dir.path().join("mail/r");
    for e in fs::read_dir(r.join("new")).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        fs::rename(e.path(), r.join("cur").join(format!("{name}:2,S"))).unwrap();
    }
    let (code, out) = deliver(
        &["-c", c, "-a", "r@pipe.test", "--id", "4AbC1"],
        b"Subject: q\n\n.\n",
    );
    assert_eq!((code, out.as_str()), (0, ""));
    assert_eq!(read_maildir(&r).len(), 1, "stored again after the move");
    // A reused queue id with another message: that one is stored too.
    let (code, out) = deliver(
        &["-c", c, "-a", "r@pipe.test", "--id", "4AbC1"],
        b"Subject: other\n\n.\n",
    );
    assert_eq!((code, out.as_str()), (0, ""));
    assert_eq!(read_maildir(&r).len(), 2);
}

#[test]
fn a_signal_while_reading_defers_and_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("c.toml");
    fs::write(&conf, deliver_config(dir.path())).unwrap();
    let tmp = dir.path().join("tmp");
    fs::create_dir(&tmp).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_mailchute"))
        .args(["deliver", "-c", conf.to_str().unwrap(), "-a", "a@pipe.test"])
        .env("TMPDIR", &tmp)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"Subject: half\n\nthe first half").unwrap();
    stdin.flush().unwrap();
    // The scratch copy exists once it is reading.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while fs::read_dir(&tmp).unwrap().next().is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "never started reading"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // SAFETY: kill with a valid pid and signal number.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = child.wait_with_output().unwrap();
    drop(stdin);
    assert_eq!(out.status.code(), Some(75), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("4.3.0 "),
        "{out:?}"
    );
    assert_eq!(
        fs::read_dir(&tmp).unwrap().count(),
        0,
        "temporary copy left behind"
    );
    assert!(
        !dir.path().join("mail/a/new").exists()
            || read_maildir(&dir.path().join("mail/a")).is_empty()
    );
}

/// A private Postfix whose `pipe.test` mail goes through a `pipe` transport to
/// `mailchute deliver -c conf` as nobody, one recipient per run (the README's lines). The
/// config is made readable by nobody.
fn postfix_piping_to_deliver(conf: &Path) -> Postfix {
    fs::set_permissions(conf, fs::Permissions::from_mode(0o644)).unwrap();
    let service = format!(
        "mcdeliver unix - n n - - pipe flags=Rq null_sender= user=nobody\n  argv={} deliver -c {} -a ${{recipient}} -f ${{sender}} --id ${{queue_id}}",
        env!("CARGO_BIN_EXE_mailchute"),
        conf.display()
    );
    Postfix::builder()
        .transport("pipe.test", "mcdeliver:")
        .main("mcdeliver_destination_recipient_limit", "1")
        .service(&service)
        .start()
}

/// swaks from sender@client.test to `to` (comma-separated) through `pf`.
fn send(pf: &Postfix, to: &str, subject: Option<&str>) {
    let server = format!("127.0.0.1:{}", pf.port);
    let mut args = vec![
        "--server",
        &server,
        "--from",
        "sender@client.test",
        "--to",
        to,
    ];
    let header;
    if let Some(subject) = subject {
        header = format!("Subject: {subject}");
        args.extend(["--header", &header]);
    }
    swaks_ok(&args);
}

#[test]
fn postfix_pipe_transport_delivers_defers_and_bounces() {
    let dir = tempfile::tempdir().unwrap();
    world_dir(dir.path());
    let mail = dir.path().join("mail");
    fs::create_dir(&mail).unwrap();
    std::os::unix::fs::chown(&mail, Some(NOBODY), Some(NOBODY)).unwrap();
    let conf = dir.path().join("c.toml");
    fs::write(&conf, deliver_config(dir.path())).unwrap();
    let pf = postfix_piping_to_deliver(&conf);

    // Two recipients: two pipe runs, two messages.
    send(
        &pf,
        "alice@pipe.test,bob@pipe.test",
        Some("through postfix"),
    );
    pf.wait_queue_empty(Duration::from_secs(30));
    for who in ["alice", "bob"] {
        let msgs = read_maildir(&mail.join(who));
        assert_eq!(msgs.len(), 1, "{who}:\n{}", pf.log());
        let text = String::from_utf8_lossy(&msgs[0]);
        assert!(text.contains("Subject: through postfix"), "{text}");
        assert!(
            text.starts_with("Return-Path: <sender@client.test>"),
            "{text}"
        );
    }
    assert_eq!(pf.log().matches("status=sent").count(), 2, "{}", pf.log());

    // The sink fails for now (nobody cannot write): Postfix defers, keeps it, and after
    // the fix and `postqueue -f` it is there once.
    fs::set_permissions(&mail, fs::Permissions::from_mode(0o500)).unwrap();
    send(&pf, "carol@pipe.test", Some("deferred first"));
    let log = pf.wait_log("status=deferred", Duration::from_secs(30));
    assert!(log.contains("4.3.0"), "{log}");
    fs::set_permissions(&mail, fs::Permissions::from_mode(0o755)).unwrap();
    pf.flush();
    pf.wait_queue_empty(Duration::from_secs(30));
    assert_eq!(read_maildir(&mail.join("carol")).len(), 1, "{}", pf.log());

    // No route for the recipient: deliver says 5.1.1 and Postfix bounces it.
    send(&pf, "dave@pipe.test", None);
    let log = pf.wait_log("status=bounced", Duration::from_secs(30));
    let bounced = log
        .lines()
        .find(|l| l.contains("status=bounced"))
        .unwrap_or_default();
    // Postfix took the status from deliver's first line.
    assert!(
        bounced.contains("to=<dave@pipe.test>")
            && bounced.contains("dsn=5.1.1")
            && bounced.contains("no such mailbox"),
        "{bounced}"
    );
}

/// The pipe transport into S3 (s3s-fs): two recipients → two objects; the store down →
/// Postfix defers and keeps the message; the store back + `postqueue -f` → each object
/// exactly once.
#[cfg(feature = "s3")]
#[test]
fn postfix_pipe_transport_into_s3_defers_while_the_store_is_down() {
    use crate::s3::{ACCESS_KEY, BUCKET, S3Server, SECRET_KEY};

    let mut s3 = S3Server::start();
    let dir = tempfile::tempdir().unwrap();
    world_dir(dir.path());
    // The pipe runs as nobody: the config and the credentials must be readable by it.
    let creds = dir.path().join("aws-credentials");
    fs::write(
        &creds,
        format!("[mail]\naws_access_key_id = {ACCESS_KEY}\naws_secret_access_key = {SECRET_KEY}\n"),
    )
    .unwrap();
    fs::set_permissions(&creds, fs::Permissions::from_mode(0o644)).unwrap();
    let conf = dir.path().join("c.toml");
    fs::write(
        &conf,
        format!(
            r#"[[route]]
name = "boxes"
match = ["alice@pipe.test", "bob@pipe.test", "carol@pipe.test", "r@pipe.test"]
sinks = ["bucket"]

[sink.bucket]
type = "s3"
bucket = "{BUCKET}"
region = "us-east-1"
endpoint = "{}"
force_path_style = true
key = "{{local}}/{{id}}.eml"
credentials_file = "{}"
profile = "mail"
connect_timeout = "2s"
timeout = "10s"
total_timeout = "30s"
"#,
            s3.endpoint(),
            creds.display()
        ),
    )
    .unwrap();
    let pf = postfix_piping_to_deliver(&conf);
    let keys_of = |s3: &S3Server| -> Vec<String> {
        let mut keys: Vec<String> = s3.objects().into_iter().map(|o| o.key).collect();
        keys.sort();
        keys
    };

    send(
        &pf,
        "alice@pipe.test,bob@pipe.test",
        Some("into the bucket"),
    );
    pf.wait_queue_empty(Duration::from_secs(30));
    let objects = s3.objects();
    assert_eq!(objects.len(), 2, "{}", pf.log());
    for (o, who) in objects.iter().zip(["alice", "bob"]) {
        assert!(o.key.starts_with(&format!("{who}/")), "{}", o.key);
        let text = String::from_utf8_lossy(&o.body);
        assert!(text.contains("Subject: into the bucket"), "{text}");
        assert_eq!(o.metadata["mailchute-sender"], "sender@client.test");
        assert_eq!(
            o.metadata["mailchute-recipients"],
            format!("{who}@pipe.test")
        );
    }
    assert_eq!(pf.log().matches("status=sent").count(), 2, "{}", pf.log());

    // The store is down: Postfix defers both recipients and keeps the message.
    s3.stop();
    send(
        &pf,
        "carol@pipe.test,r@pipe.test",
        Some("while the store is down"),
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while pf.log().matches("status=deferred").count() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "not deferred twice:\n{}",
            pf.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // The status and reason are deliver's first line: temporary, naming the operation.
    for line in pf.log().lines().filter(|l| l.contains("status=deferred")) {
        assert!(
            line.contains("dsn=4.") && line.contains(&format!("s3://{BUCKET}/")),
            "{line}"
        );
    }
    let queue = pf.queue();
    assert!(
        queue.contains("carol@pipe.test") && queue.contains("r@pipe.test"),
        "{queue}"
    );
    assert_eq!(pf.log().matches("status=sent").count(), 2, "{}", pf.log());

    // Back up, queue flushed: each recipient's object once, the earlier ones untouched.
    s3.restart();
    pf.flush();
    pf.wait_queue_empty(Duration::from_secs(60));
    let keys = keys_of(&s3);
    assert_eq!(keys.len(), 4, "{keys:?}\n{}", pf.log());
    for who in ["alice", "bob", "carol", "r"] {
        assert_eq!(
            keys.iter()
                .filter(|k| k.starts_with(&format!("{who}/")))
                .count(),
            1,
            "{who}: {keys:?}"
        );
    }
    for o in s3.objects() {
        if o.key.starts_with("carol/") || o.key.starts_with("r/") {
            let text = String::from_utf8_lossy(&o.body);
            assert!(text.contains("Subject: while the store is down"), "{text}");
        }
    }
    assert_eq!(pf.log().matches("status=sent").count(), 4, "{}", pf.log());
}
