//! `mailchute sendmail` (and the binary invoked as `sendmail`) against a real daemon:
//! `mailchute serve` with a unix LMTP listener and a Maildir route per local part, read
//! back with Python's `mailbox`. `-t` with To/Cc/Bcc (Bcc gone, everyone delivered), `-i`
//! against a lone dot, `-f`, recipients from arguments, cronie's call through a `sendmail`
//! symlink; the daemon down → `pickup/` → exit 0 → delivered once when it starts; nowhere
//! to keep it → 75; an unknown recipient → 67; and what Postfix's own sendmail does with
//! the same `-t` message. `-bs`: scripted SMTP conversations over the command's
//! stdin/stdout (step by step, and pipelined in one write), several messages per session,
//! refusals at RCPT, pickup/ with the daemon down, 451 and 75 when nothing can keep it, input
//! cut off mid-DATA, and Postfix's own `sendmail -bs` beside ours.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Output, Stdio};
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
    let mut child = Command::new(program)
        .args(args)
        .current_dir(dir)
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sendmail");
    // A run that refuses before reading (usage) may close its end first.
    let _ = child.stdin.take().unwrap().write_all(stdin);
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
    // A recipient a command line would read as an option is refused, as Postfix does.
    let o = sendmail(dir, &["--", "-bob"], b"Subject: dash\n\nx\n");
    assert_eq!(code(&o), 67, "{}", stderr(&o));
    assert!(stderr(&o).contains("5.1.3"), "{}", stderr(&o));
    // Usage: no recipients at all; -bs with recipients as arguments.
    assert_eq!(code(&sendmail(dir, &[], b"x\n")), 64);
    let o = sendmail(dir, &["-bs", "alice"], b"");
    assert_eq!(code(&o), 64);
    assert!(stderr(&o).contains("RCPT TO"), "{}", stderr(&o));
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

/// `sendmail -bs` as a child process: commands written to its stdin, replies read from
/// its stdout. Run under `timeout`, so a hang fails the test (status 124) instead of
/// stalling it.
struct Bs {
    child: Child,
    input: Option<ChildStdin>,
    output: BufReader<ChildStdout>,
}

/// One reply: its code and its lines (without the code).
#[derive(Debug)]
struct BsReply {
    code: u16,
    lines: Vec<String>,
}

impl BsReply {
    fn text(&self) -> String {
        self.lines.join("\n")
    }
}

impl Bs {
    fn spawn(program: &Path, args: &[&str], dir: &Path, env: &[(&str, &str)]) -> Bs {
        let mut child = Command::new("timeout")
            .arg("60")
            .arg(program)
            .args(args)
            .current_dir(dir)
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn sendmail -bs");
        let input = child.stdin.take();
        let output = BufReader::new(child.stdout.take().unwrap());
        Bs {
            child,
            input,
            output,
        }
    }

    /// Ours: `mailchute -c DIR/mailchute.toml sendmail -bs`.
    fn ours(dir: &Path) -> Bs {
        let config = dir.join("mailchute.toml");
        Bs::spawn(
            Path::new(env!("CARGO_BIN_EXE_mailchute")),
            &["-c", config.to_str().unwrap(), "sendmail", "-bs"],
            dir,
            &[],
        )
    }

    fn send(&mut self, text: &str) {
        let input = self.input.as_mut().expect("stdin open");
        input.write_all(text.as_bytes()).unwrap();
        input.flush().unwrap();
    }

    /// The next reply; `None` at the end of the output.
    fn try_reply(&mut self) -> Option<BsReply> {
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            if self.output.read_line(&mut line).unwrap() == 0 {
                assert!(lines.is_empty(), "output ended inside a reply: {lines:?}");
                return None;
            }
            let line = line.trim_end_matches(['\r', '\n']);
            assert!(line.len() >= 3, "not a reply line: {line:?}");
            let code: u16 = line[..3].parse().expect("reply code");
            lines.push(line.get(4..).unwrap_or("").to_string());
            if line.as_bytes().get(3) != Some(&b'-') {
                return Some(BsReply { code, lines });
            }
        }
    }

    fn reply(&mut self) -> BsReply {
        self.try_reply().expect("a reply")
    }

    /// Sends a command line and expects `code` back.
    fn expect(&mut self, line: &str, code: u16) -> BsReply {
        self.send(&format!("{line}\r\n"));
        let r = self.reply();
        assert_eq!(r.code, code, "{line} -> {r:?}");
        r
    }

    /// Closes its stdin, reads the rest of the output; the exit status and stderr.
    fn finish(mut self) -> (i32, String, Vec<BsReply>) {
        self.input = None;
        let mut rest = Vec::new();
        while let Some(r) = self.try_reply() {
            rest.push(r);
        }
        let o = self.child.wait_with_output().unwrap();
        (code(&o), stderr(&o), rest)
    }
}

/// Sends one message's data (LF lines made CRLF, dot-stuffed, the final dot): its reply.
fn bs_data(bs: &mut Bs, msg: &str) -> BsReply {
    bs.send(&String::from_utf8(dot_stuff(msg.replace('\n', "\r\n").as_bytes())).unwrap());
    bs.reply()
}

fn pickup_files(dir: &Path) -> Vec<PathBuf> {
    fs::read_dir(dir.join("data/pickup"))
        .map(|r| {
            r.filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| p.is_file())
                .collect()
        })
        .unwrap_or_default()
}

/// A session step by step: the greeting and EHLO a local submission needs, refusals at
/// RCPT with the daemon's own replies (no route: 550 5.1.1; bad syntax: 501), two messages
/// in one session, both delivered with Date/Message-ID/From added where missing, QUIT → 0.
#[test]
fn bs_two_messages_in_one_session_refusals_at_rcpt() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let _m = daemon(dir);
    let mut bs = Bs::ours(dir);
    let greeting = bs.reply();
    assert_eq!(greeting.code, 220);
    assert!(greeting.text().starts_with("mx.test ESMTP"), "{greeting:?}");
    let ehlo = bs.expect("EHLO client.test", 250).lines;
    for cap in [
        "PIPELINING",
        "8BITMIME",
        "SIZE 52428800",
        "ENHANCEDSTATUSCODES",
    ] {
        assert!(ehlo.iter().any(|l| l == cap), "{cap}: {ehlo:?}");
    }
    assert!(
        !ehlo
            .iter()
            .any(|l| l.starts_with("STARTTLS") || l.starts_with("AUTH")),
        "{ehlo:?}"
    );
    bs.expect("MAIL FROM:<root>", 250);
    bs.expect("RCPT TO:<alice>", 250);
    let r = bs.expect("RCPT TO:<nobody@elsewhere.test>", 550);
    assert!(
        r.text().starts_with("5.1.1 <nobody@elsewhere.test>"),
        "{r:?}"
    );
    let r = bs.expect("RCPT TO:<a b@example.org>", 501);
    assert!(r.text().starts_with("5.1.3"), "{r:?}");
    bs.expect("DATA", 354);
    let r = bs_data(&mut bs, "Subject: one\n\n.a line with a leading dot\nend\n");
    assert_eq!(r.code, 250, "{r:?}");

    bs.expect("MAIL FROM:<robot@jobs.test>", 250);
    bs.expect("RCPT TO:<bob@example.org>", 250);
    bs.expect("RCPT TO:<alice@example.org>", 250);
    bs.expect("DATA", 354);
    let r = bs_data(
        &mut bs,
        "From: Robot <robot@jobs.test>\nDate: Mon, 1 Jun 2026 10:00:00 +0000\nSubject: two\n\nx\n",
    );
    assert_eq!(r.code, 250, "{r:?}");

    // Every recipient refused: DATA has nothing to deliver to.
    bs.expect("MAIL FROM:<root>", 250);
    bs.expect("RCPT TO:<nobody@elsewhere.test>", 550);
    bs.expect("DATA", 554);
    bs.expect("QUIT", 221);
    let (status, err, rest) = bs.finish();
    assert_eq!(status, 0, "{err}");
    assert!(rest.is_empty(), "{rest:?}");

    let n = wait_maildir_count(&mailbox(dir, "alice"), 2, Duration::from_secs(10));
    assert_eq!(n, 2);
    let alice: Vec<String> = read_maildir(&mailbox(dir, "alice"))
        .iter()
        .map(|m| text(split_envelope(m).1))
        .collect();
    let one = alice.iter().find(|m| m.contains("Subject: one")).unwrap();
    assert!(one.starts_with("Received: from mx.test (uid 0)"), "{one}");
    assert!(
        one.contains("\nFrom: root <root@example.org>\n")
            || one.contains("\nFrom: root@example.org\n"),
        "{one}"
    );
    assert!(
        one.contains("\nDate: ") && one.contains("@mx.test>\n"),
        "{one}"
    );
    assert!(
        one.ends_with("\n\n.a line with a leading dot\nend\n"),
        "{one}"
    );
    let two = alice.iter().find(|m| m.contains("Subject: two")).unwrap();
    assert!(two.contains("\nFrom: Robot <robot@jobs.test>\n"), "{two}");
    assert!(
        two.contains("\nDate: Mon, 1 Jun 2026 10:00:00 +0000\n"),
        "{two}"
    );
    assert!(
        two.contains("\nReturn-Path: <robot@jobs.test>\n") || two.contains("robot@jobs.test"),
        "{two}"
    );
    let bob = text(&wait_one(dir, "bob"));
    assert!(bob.contains("Subject: two"), "{bob}");
}

/// A client that pipelines the whole session into one write gets every reply, in order.
#[test]
fn bs_pipelined_in_one_write() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let _m = daemon(dir);
    let mut bs = Bs::ours(dir);
    bs.send(
        "EHLO c\r\nMAIL FROM:<robot@jobs.test>\r\nRCPT TO:<carol>\r\nRCPT TO:<dave>\r\nDATA\r\n\
         Subject: pipelined\r\n\r\nbody\r\n.\r\nMAIL FROM:<>\r\nRCPT TO:<erin>\r\nDATA\r\n\
         Subject: null sender\r\n\r\nx\r\n.\r\nQUIT\r\n",
    );
    let (status, err, replies) = bs.finish();
    assert_eq!(status, 0, "{err}");
    let codes: Vec<u16> = replies.iter().map(|r| r.code).collect();
    assert_eq!(
        codes,
        [220, 250, 250, 250, 250, 354, 250, 250, 250, 354, 250, 221],
        "{replies:?}"
    );
    for who in ["carol", "dave"] {
        assert!(text(&wait_one(dir, who)).contains("Subject: pipelined"));
    }
    let erin = text(&wait_one(dir, "erin"));
    // The null sender: the From made is the submitter's own address.
    assert!(
        erin.contains("\nFrom: root") && erin.contains("root@example.org"),
        "{erin}"
    );
}

/// The daemon down: 250 all the same, the message in pickup/ (fsynced), delivered when it
/// starts, with the submitter's uid.
#[test]
fn bs_daemon_down_pickup_then_delivered() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    fs::write(dir.join("mailchute.toml"), config()).unwrap();
    let mut bs = Bs::ours(dir);
    assert_eq!(bs.reply().code, 220);
    bs.expect("EHLO c", 250);
    bs.expect("MAIL FROM:<robot@jobs.test>", 250);
    bs.expect("RCPT TO:<alice>", 250);
    bs.expect("DATA", 354);
    let r = bs_data(&mut bs, "Subject: while down\n\nwaiting\n");
    assert_eq!(r.code, 250, "{r:?}");
    assert!(r.text().contains("(pickup)"), "{r:?}");
    bs.expect("QUIT", 221);
    let (status, err, _) = bs.finish();
    assert_eq!(status, 0, "{err}");
    assert_eq!(pickup_files(dir).len(), 1);

    let _m = daemon(dir);
    let a = text(split_envelope(&wait_one(dir, "alice")).1);
    assert!(a.starts_with("Received: from pickup (uid 0)"), "{a}");
    assert!(
        a.contains("Subject: while down\n") && a.ends_with("\n\nwaiting\n"),
        "{a}"
    );
}

/// Nowhere to keep the message (no daemon, pickup/ cannot be made): 451 4.3.0, and the
/// exit status says so even after QUIT.
#[test]
fn bs_nowhere_to_keep_it_is_451_and_75() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    fs::write(dir.join("mailchute.toml"), config()).unwrap();
    fs::create_dir_all(dir.join("data")).unwrap();
    fs::write(dir.join("data/pickup"), b"").unwrap();
    let mut bs = Bs::ours(dir);
    bs.send("EHLO c\r\nMAIL FROM:<root>\r\nRCPT TO:<alice>\r\nDATA\r\nSubject: lost?\r\n\r\nx\r\n.\r\nQUIT\r\n");
    let (status, err, replies) = bs.finish();
    let last_two: Vec<u16> = replies.iter().rev().take(2).map(|r| r.code).collect();
    assert_eq!(last_two, [221, 451], "{replies:?}");
    assert!(
        replies[replies.len() - 2].text().starts_with("4.3.0"),
        "{replies:?}"
    );
    assert_eq!(status, 75, "{err}");
    assert!(err.contains("NOT sent"), "{err}");
}

/// Input that ends inside DATA: that message goes nowhere (not delivered, not in pickup/)
/// and the status is 75; input that ends after a completed message, without QUIT, is 0.
#[test]
fn bs_input_ending_mid_data_is_75() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let _m = daemon(dir);
    let mut bs = Bs::ours(dir);
    bs.send(
        "EHLO c\r\nMAIL FROM:<root>\r\nRCPT TO:<alice>\r\nDATA\r\nSubject: done\r\n\r\nx\r\n.\r\n",
    );
    let mut bs2 = Bs::ours(dir);
    bs2.send(
        "EHLO c\r\nMAIL FROM:<root>\r\nRCPT TO:<bob>\r\nDATA\r\nSubject: cut\r\n\r\nhalf a mess",
    );
    let (status, err, replies) = bs.finish();
    assert_eq!(status, 0, "{err}");
    assert_eq!(replies.last().map(|r| r.code), Some(250), "{replies:?}");
    let (status, err, replies) = bs2.finish();
    assert_eq!(status, 75, "{err}");
    assert!(err.contains("not sent"), "{err}");
    assert_eq!(replies.last().map(|r| r.code), Some(354), "{replies:?}");
    wait_one(dir, "alice");
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(maildir_count(&mailbox(dir, "bob")), 0);
    assert!(pickup_files(dir).is_empty());
}

/// The same pipelined session through Postfix's own `sendmail -bs` and ours: the same
/// reply codes, the capabilities a local submission uses, and the same headers added.
#[test]
fn bs_behaves_as_postfix_s_sendmail_bs() {
    let pf = Postfix::builder()
        .virtual_mailbox("alice@vdom.test")
        .virtual_mailbox("bob@vdom.test")
        .start();
    let script = |domain: &str| {
        format!(
            "EHLO client.test\r\nMAIL FROM:<robot@jobs.test>\r\nRCPT TO:<alice@{domain}>\r\n\
             RCPT TO:<a b@{domain}>\r\nRCPT TO:<bob@{domain}>\r\nDATA\r\nSubject: compare -bs\r\n\
             Bcc: bob@{domain}\r\n\r\n..dot\r\nbody\r\n.\r\nRSET\r\nNOOP\r\nQUIT\r\n"
        )
    };
    let tmp = tempfile::tempdir().unwrap();
    let mut theirs = Bs::spawn(
        Path::new("/usr/sbin/sendmail"),
        &["-bs"],
        tmp.path(),
        &[("MAIL_CONFIG", pf.config_dir().to_str().unwrap())],
    );
    theirs.send(&script("vdom.test"));
    let (pf_status, pf_err, pf_replies) = theirs.finish();
    assert_eq!(pf_status, 0, "postfix: {pf_err}");

    let dir_tmp = tempfile::tempdir().unwrap();
    let dir = dir_tmp.path();
    let _m = daemon(dir);
    let mut ours = Bs::ours(dir);
    ours.send(&script("example.org"));
    let (status, err, replies) = ours.finish();
    assert_eq!(status, 0, "{err}");

    let codes = |r: &[BsReply]| r.iter().map(|r| r.code).collect::<Vec<_>>();
    assert_eq!(
        codes(&replies),
        codes(&pf_replies),
        "ours {replies:?}\npostfix {pf_replies:?}"
    );
    assert!(
        pf_replies[0].text().starts_with("postfix.test ESMTP"),
        "{pf_replies:?}"
    );
    for cap in ["PIPELINING", "8BITMIME", "ENHANCEDSTATUSCODES"] {
        assert!(
            pf_replies[1].lines.iter().any(|l| l == cap),
            "postfix {cap}"
        );
        assert!(replies[1].lines.iter().any(|l| l == cap), "ours {cap}");
    }
    // The bad address: the same enhanced code.
    let enhanced = |r: &BsReply| r.text().split(' ').next().unwrap_or("").to_string();
    assert_eq!(enhanced(&replies[4]), enhanced(&pf_replies[4]));

    let pf_alice = pf.maildir("alice@vdom.test");
    assert_eq!(
        wait_maildir_count(&pf_alice, 1, Duration::from_secs(20)),
        1,
        "{}",
        pf.log()
    );
    let pf_msg = read_maildir(&pf_alice).remove(0);
    let mine = wait_one(dir, "alice");
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
        own(&pf_msg),
        "ours:\n{}\npostfix:\n{}",
        text(&mine),
        text(&pf_msg)
    );
    // Both remove Bcc in -bs too (Postfix's cleanup does for every local submission).
    assert!(
        !own(&pf_msg).contains(&"bcc".to_string()),
        "{}",
        text(&pf_msg)
    );
    assert!(text(&pf_msg).contains("\n\n.dot\nbody\n"));
    assert!(text(&mine).ends_with("\n\n.dot\nbody\n"), "{}", text(&mine));
}

/// The daemon's listener's `max_message_size` and `max_line_length` hold in `-bs` too:
/// SIZE advertised, a SIZE= too big refused at MAIL, a message too big or with a line too
/// long refused at its end (and not delivered), the session going on after each.
#[test]
fn bs_keeps_the_listener_s_limits() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let cfg = config().replace(
        "mode = \"queued\"\n",
        "mode = \"queued\"\nmax_message_size = \"1K\"\nmax_line_length = 200\n",
    );
    fs::write(dir.join("mailchute.toml"), &cfg).unwrap();
    let _m = Mailchute::start_in(dir, &cfg);
    let deadline = Instant::now() + READY_TIMEOUT;
    while std::os::unix::net::UnixStream::connect(dir.join("mc.sock")).is_err() {
        assert!(Instant::now() < deadline, "no socket");
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut bs = Bs::ours(dir);
    assert_eq!(bs.reply().code, 220);
    let ehlo = bs.expect("EHLO c", 250).lines;
    assert!(ehlo.iter().any(|l| l == "SIZE 1024"), "{ehlo:?}");
    let r = bs.expect("MAIL FROM:<root> SIZE=5000", 552);
    assert!(r.text().starts_with("5.3.4"), "{r:?}");
    bs.expect("MAIL FROM:<root>", 250);
    bs.expect("RCPT TO:<alice>", 250);
    bs.expect("DATA", 354);
    let big = format!(
        "Subject: big\n\n{}",
        "0123456789012345678901234567890123456789\n".repeat(40)
    );
    let r = bs_data(&mut bs, &big);
    assert_eq!(
        (r.code, r.text().starts_with("5.3.4")),
        (552, true),
        "{r:?}"
    );
    bs.expect("MAIL FROM:<root>", 250);
    bs.expect("RCPT TO:<alice>", 250);
    bs.expect("DATA", 354);
    let r = bs_data(&mut bs, &format!("Subject: long\n\n{}\n", "x".repeat(300)));
    assert_eq!(r.code, 554, "{r:?}");
    bs.expect("MAIL FROM:<root>", 250);
    bs.expect("RCPT TO:<alice>", 250);
    bs.expect("DATA", 354);
    assert_eq!(bs_data(&mut bs, "Subject: small\n\nok\n").code, 250);
    // Just under the limit as sent, over it with the Date, Message-ID and From that are
    // added: the daemon's own 552 is the reply (Postfix's limit counts its additions too).
    bs.expect("MAIL FROM:<root>", 250);
    bs.expect("RCPT TO:<alice>", 250);
    bs.expect("DATA", 354);
    let near = format!(
        "Subject: near\n\n{}",
        "0123456789012345678901234567890123456789\n".repeat(23)
    );
    let r = bs_data(&mut bs, &near);
    assert_eq!(
        (r.code, r.text().starts_with("5.3.4")),
        (552, true),
        "{r:?}"
    );
    bs.expect("QUIT", 221);
    // Messages were refused: the first refusal's status (65: content), as without -bs.
    let (status, err, _) = bs.finish();
    assert_eq!(status, 65, "{err}");
    let a = text(&wait_one(dir, "alice"));
    assert!(a.contains("Subject: small"), "{a}");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(maildir_count(&mailbox(dir, "alice")), 1);
}
