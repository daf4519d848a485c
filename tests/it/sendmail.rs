//! `mailchute sendmail` (and the binary invoked as `sendmail`) against a real daemon:
//! `mailchute serve` with a unix LMTP listener and a Maildir route per local part, read
//! back with Python's `mailbox`. `-t` with To/Cc/Bcc (Bcc gone, everyone delivered), `-i`
//! against a lone dot, `-f`, recipients from arguments, cronie's call through a `sendmail`
//! symlink; the daemon down → `pickup/` → exit 0 → delivered once when it starts; nowhere
//! to keep it → 75; an unknown recipient → 67; and what Postfix's own sendmail does with
//! the same `-t` message.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::harness::*;
use crate::postfix::Postfix;

fn config() -> String {
    r#"[server]
hostname = "mx.test"
data_dir = "./data"
default_domain = "example.org"

[[listener]]
name = "local"
address = "unix:./mc.sock"
protocol = "lmtp"
mode = "queued"

[[route]]
name = "local"
match = ["@example.org"]
sinks = ["box"]

[sink.box]
type = "maildir"
path = "./Maildir/{local}"
"#
    .to_string()
}

/// The daemon on `dir`, once its socket answers.
fn daemon(dir: &Path) -> Mailchute {
    let m = Mailchute::start_in(dir, &config());
    let sock = dir.join("mc.sock");
    let deadline = Instant::now() + READY_TIMEOUT;
    while std::os::unix::net::UnixStream::connect(&sock).is_err() {
        assert!(Instant::now() < deadline, "no socket\n{}", m.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    m
}

fn run(program: &Path, dir: &Path, args: &[&str], env: &[(&str, &str)], stdin: &[u8]) -> Output {
    use std::io::Write;
    let mut child = Command::new(program)
        .args(args)
        .current_dir(dir)
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sendmail");
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

/// `mailchute -c DIR/mailchute.toml sendmail ARGS`.
fn sendmail(dir: &Path, args: &[&str], stdin: &[u8]) -> Output {
    let config = dir.join("mailchute.toml");
    let mut all = vec!["-c", config.to_str().unwrap(), "sendmail"];
    all.extend_from_slice(args);
    run(
        Path::new(env!("CARGO_BIN_EXE_mailchute")),
        dir,
        &all,
        &[],
        stdin,
    )
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn mailbox(dir: &Path, local: &str) -> PathBuf {
    dir.join("Maildir").join(local)
}

fn wait_one(dir: &Path, local: &str) -> Vec<u8> {
    let n = wait_maildir_count(&mailbox(dir, local), 1, Duration::from_secs(10));
    assert_eq!(n, 1, "{local}: {n} messages");
    read_maildir(&mailbox(dir, local)).remove(0)
}

/// The message as text, LF line ends (the Maildir sink stores them so).
fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).replace("\r\n", "\n")
}

/// The header block's field names, lower-cased, in order.
fn field_names(msg: &[u8]) -> Vec<String> {
    let t = text(msg);
    let head = t.split("\n\n").next().unwrap_or("").to_string();
    head.lines()
        .filter(|l| !l.starts_with([' ', '\t']))
        .filter_map(|l| {
            l.split_once(':')
                .map(|(n, _)| n.trim().to_ascii_lowercase())
        })
        .collect()
}

#[test]
fn t_takes_to_cc_bcc_adds_arguments_and_removes_bcc() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let _m = daemon(dir);
    let msg = b"To: Alice <alice>, bob@example.org\nCc: \"Carol, C.\" <carol@example.org>\nBcc: dave\nSubject: three and one\n\nhello\n";
    let o = sendmail(dir, &["-t", "erin"], msg);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    for who in ["alice", "bob", "carol", "dave", "erin"] {
        let stored = wait_one(dir, who);
        let names = field_names(&stored);
        assert!(!names.contains(&"bcc".to_string()), "{who}: {names:?}");
        for added in ["from", "date", "message-id", "received"] {
            assert!(names.contains(&added.to_string()), "{who}: {names:?}");
        }
        // Each copy names its own recipient in Delivered-To (dave's too: that is where a
        // Bcc recipient's copy says whom it is for); the message itself never shows dave.
        let (envelope, message) = split_envelope(&stored);
        let rcpt = envelope.expect("an envelope block").1;
        assert_eq!(rcpt, format!("{who}@example.org"));
        let t = text(message);
        assert!(
            t.contains("Message-ID: <") && t.contains("@mx.test>"),
            "{t}"
        );
        assert!(t.contains("\n\nhello\n"), "{t}");
        assert!(!t.contains("dave"), "the Bcc recipient shows: {t}");
    }
}

#[test]
fn a_lone_dot_ends_input_unless_i() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let _m = daemon(dir);
    let msg = b"Subject: dots\n\nbefore\n.\nafter\n";
    assert_eq!(code(&sendmail(dir, &["alice"], msg)), 0);
    assert_eq!(code(&sendmail(dir, &["-oi", "bob"], msg)), 0);
    assert_eq!(code(&sendmail(dir, &["-i", "carol@example.org"], msg)), 0);
    let cut = text(&wait_one(dir, "alice"));
    assert!(cut.ends_with("\n\nbefore\n"), "{cut}");
    for who in ["bob", "carol"] {
        let whole = text(&wait_one(dir, who));
        assert!(whole.ends_with("\n\nbefore\n.\nafter\n"), "{whole}");
    }
}

#[test]
fn f_sets_the_sender_and_cronie_s_call_works_through_a_symlink() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let m = daemon(dir);
    let o = sendmail(
        dir,
        &["-f", "robot@jobs.test", "-F", "Robot", "alice"],
        b"Subject: f\n\nx\n",
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let stored = text(&wait_one(dir, "alice"));
    assert!(
        stored.contains("From: Robot <robot@jobs.test>\n"),
        "{stored}"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while !m
        .log_lines()
        .iter()
        .any(|l| l["event"] == "transaction" && l["from"] == "robot@jobs.test")
    {
        assert!(
            Instant::now() < deadline,
            "no transaction from robot@jobs.test\n{}",
            m.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // cronie: crond runs `sendmail -FCronDaemon -i -B8BITMIME -oem -oi -t` with the job's
    // output, its To: from MAILTO (a bare user name), no config flag (MAILCHUTE_CONFIG).
    let link = dir.join("sendmail");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_mailchute"), &link).unwrap();
    let cron = "To: bob\nSubject: Cron <root@host> run-parts /etc/cron.hourly\nContent-Type: text/plain; charset=UTF-8\n\nr\u{e9}sultat\n.\nend\n";
    let config = dir.join("mailchute.toml");
    let o = run(
        &link,
        dir,
        &["-FCronDaemon", "-i", "-B8BITMIME", "-oem", "-oi", "-t"],
        &[("MAILCHUTE_CONFIG", config.to_str().unwrap())],
        cron.as_bytes(),
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let stored = wait_one(dir, "bob");
    let t = text(&stored);
    assert!(t.contains("From: CronDaemon <root@example.org>\n"), "{t}");
    assert!(t.ends_with("\n\nr\u{e9}sultat\n.\nend\n"), "{t}");
}

#[test]
fn daemon_down_the_message_waits_in_pickup_and_is_delivered_once() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    fs::write(dir.join("mailchute.toml"), config()).unwrap();
    let o = sendmail(
        dir,
        &["-v", "alice", "bob"],
        b"Subject: while down\n\nwaiting\n",
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stderr(&o).contains("kept in"), "{}", stderr(&o));
    let pickup = dir.join("data/pickup");
    let waiting = || -> Vec<PathBuf> {
        fs::read_dir(&pickup)
            .map(|r| {
                r.filter_map(|e| e.ok())
                    .map(|e| e.path())
                    .filter(|p| p.is_file())
                    .collect()
            })
            .unwrap_or_default()
    };
    assert_eq!(waiting().len(), 1);
    // A file that is no pickup file is moved aside, and does not stop the others.
    fs::write(pickup.join("zz-junk"), b"not a pickup file\n").unwrap();

    let m = daemon(dir);
    let a = text(split_envelope(&wait_one(dir, "alice")).1);
    assert!(
        a.contains("Subject: while down\n") && a.contains("\n\nwaiting\n"),
        "{a}"
    );
    assert!(a.starts_with("Received: from pickup (uid 0)"), "{a}");
    wait_one(dir, "bob");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !waiting().is_empty() {
        assert!(
            Instant::now() < deadline,
            "pickup not drained: {:?}\n{}",
            waiting(),
            m.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(pickup.join("bad/zz-junk").is_file(), "{}", m.log());
    // Another look of the drain later: still one each.
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(maildir_count(&mailbox(dir, "alice")), 1);
    assert_eq!(maildir_count(&mailbox(dir, "bob")), 1);
}

#[test]
fn nowhere_to_keep_it_is_75() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    fs::write(dir.join("mailchute.toml"), config()).unwrap();
    // No daemon, and pickup/ cannot be a directory (even root cannot write there).
    fs::create_dir_all(dir.join("data")).unwrap();
    fs::write(dir.join("data/pickup"), b"").unwrap();
    let o = sendmail(dir, &["alice"], b"Subject: lost?\n\nx\n");
    assert_eq!(code(&o), 75, "{}", stderr(&o));
    assert!(stderr(&o).contains("NOT sent"), "{}", stderr(&o));
}

#[test]
fn an_unknown_recipient_is_67_and_the_others_are_delivered() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let _m = daemon(dir);
    let o = sendmail(dir, &["nobody@elsewhere.test"], b"Subject: u\n\nx\n");
    assert_eq!(code(&o), 67, "{}", stderr(&o));
    assert!(
        stderr(&o).contains("<nobody@elsewhere.test>: refused: 550 5.1.1"),
        "{}",
        stderr(&o)
    );
    let o = sendmail(
        dir,
        &["alice", "nobody@elsewhere.test"],
        b"Subject: mixed\n\nx\n",
    );
    assert_eq!(code(&o), 67, "{}", stderr(&o));
    assert!(text(&wait_one(dir, "alice")).contains("Subject: mixed"));
    // Usage: no recipients at all; -bs is refused clearly.
    assert_eq!(code(&sendmail(dir, &[], b"x\n")), 64);
    let o = sendmail(dir, &["-bs"], b"");
    assert_eq!(code(&o), 64);
    assert!(stderr(&o).contains("not supported yet"), "{}", stderr(&o));
}

/// The same `-t` message through Postfix's sendmail and ours: the same recipients get it,
/// both remove Bcc (also without -t) and add From, Date and Message-ID.
#[test]
fn t_behaves_as_postfix_s_sendmail() {
    let pf = Postfix::builder()
        .virtual_mailbox("alice@vdom.test")
        .virtual_mailbox("bob@vdom.test")
        .virtual_mailbox("carol@vdom.test")
        .start();
    let msg = b"To: Alice <alice@vdom.test>\nCc: bob@vdom.test\nBcc: carol@vdom.test\nSubject: compare\n\nbody\n";
    let postfix_sendmail = |args: &[&str], stdin: &[u8]| {
        let tmp = tempfile::tempdir().unwrap();
        let o = run(
            Path::new("/usr/sbin/sendmail"),
            tmp.path(),
            args,
            &[("MAIL_CONFIG", pf.config_dir().to_str().unwrap())],
            stdin,
        );
        assert_eq!(code(&o), 0, "postfix sendmail: {}", stderr(&o));
    };
    postfix_sendmail(&["-t", "-i"], msg);
    // Without -t: the recipient from the arguments only, and still no Bcc in the message.
    postfix_sendmail(
        &["-i", "alice@vdom.test"],
        b"Bcc: carol@vdom.test\nSubject: no t\n\nx\n",
    );
    let pf_box = |who: &str| pf.maildir(&format!("{who}@vdom.test"));
    assert_eq!(
        wait_maildir_count(&pf_box("alice"), 2, Duration::from_secs(20)),
        2,
        "{}",
        pf.log()
    );
    for who in ["bob", "carol"] {
        assert_eq!(
            wait_maildir_count(&pf_box(who), 1, Duration::from_secs(20)),
            1,
            "{}",
            pf.log()
        );
    }
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        maildir_count(&pf_box("carol")),
        1,
        "without -t, Bcc is no recipient"
    );
    let postfix_stored: Vec<Vec<u8>> = read_maildir(&pf_box("alice"));
    for m in &postfix_stored {
        let names = field_names(m);
        assert!(
            !names.contains(&"bcc".to_string()),
            "postfix kept Bcc: {names:?}"
        );
    }
    let pf_t = postfix_stored
        .iter()
        .find(|m| text(m).contains("Subject: compare"))
        .expect("the -t message");

    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let _m = daemon(dir);
    let ours = String::from_utf8_lossy(msg).replace("vdom.test", "example.org");
    assert_eq!(code(&sendmail(dir, &["-t", "-i"], ours.as_bytes())), 0);
    assert_eq!(
        code(&sendmail(
            dir,
            &["-i", "erin"],
            b"Bcc: carol\nSubject: no t\n\nx\n"
        )),
        0
    );
    for who in ["alice", "bob", "carol"] {
        wait_one(dir, who);
    }
    let no_t = wait_one(dir, "erin");
    assert!(!field_names(&no_t).contains(&"bcc".to_string()));
    let mine = read_maildir(&mailbox(dir, "alice")).remove(0);
    // What each added to or kept of the message's own headers (trace headers aside).
    let trace = ["received", "return-path", "delivered-to", "x-original-to"];
    let own = |m: &[u8]| {
        let mut n: Vec<String> = field_names(m)
            .into_iter()
            .filter(|n| !trace.contains(&n.as_str()))
            .collect();
        n.sort();
        n
    };
    assert_eq!(
        own(&mine),
        own(pf_t),
        "ours:\n{}\npostfix:\n{}",
        text(&mine),
        text(pf_t)
    );
}

/// Any local user may submit: `nobody` through the socket (SO_PEERCRED) and, with the
/// daemon down, through pickup/ (1733: it may write there but not list or read it); both
/// `Received:` lines name uid 65534.
#[test]
fn an_unprivileged_user_submits_and_its_uid_is_recorded() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(dir.join("mailchute.toml"), config()).unwrap();
    // The test binary's target directory may not be open to nobody: a copy is.
    let bin = dir.join("mc");
    fs::copy(env!("CARGO_BIN_EXE_mailchute"), &bin).unwrap();
    let as_nobody = |rcpt: &str, subject: &str| {
        let config = dir.join("mailchute.toml");
        let args = [
            "-u",
            "nobody",
            "--",
            bin.to_str().unwrap(),
            "-c",
            config.to_str().unwrap(),
            "sendmail",
            rcpt,
        ];
        let stdin = format!("Subject: {subject}\n\nx\n");
        run(Path::new("runuser"), dir, &args, &[], stdin.as_bytes())
    };
    // The daemon made pickup/ (1733) once; then it is down.
    let mut m = daemon(dir);
    m.stop();
    let o = as_nobody("alice", "dropped");
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let _m = daemon(dir);
    let dropped = text(split_envelope(&wait_one(dir, "alice")).1);
    assert!(
        dropped.starts_with("Received: from pickup (uid 65534)"),
        "{dropped}"
    );
    let o = as_nobody("bob", "socket");
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let via_socket = text(split_envelope(&wait_one(dir, "bob")).1);
    assert!(
        via_socket.starts_with("Received: from mx.test (uid 65534)"),
        "{via_socket}"
    );
    assert!(via_socket.contains("From: nobody"), "{via_socket}");
}
