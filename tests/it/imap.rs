//! The `imap` sink and `mailchute check` against a real Dovecot 2.3 (the private instance
//! of `dovecot.rs`: passwd-file users, self-signed TLS, IMAPS and IMAP with STARTTLS),
//! read back with Python's `imaplib`: the bytes, the flags, INTERNALDATE, subscriptions.

use std::fs;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;

use crate::dovecot::Dovecot;
use crate::harness::*;

const ALICE: (&str, &str) = ("alice@dovecot.test", "alice-pw");
const BOB: (&str, &str) = ("bob@dovecot.test", "bob-pw");

fn start_dovecot() -> Dovecot {
    Dovecot::start(&[ALICE, BOB])
}

/// One message as Dovecot has it.
#[derive(Debug)]
struct Stored {
    body: Vec<u8>,
    /// Without `\Recent` (the server's, not ours).
    flags: Vec<String>,
    /// INTERNALDATE, Unix seconds.
    date: i64,
}

/// What `user` has in `folder` (`None`: the folder does not exist), and the folders
/// `user` is subscribed to. Read over IMAPS with the certificate checked.
fn read_folder(
    dc: &Dovecot,
    user: (&str, &str),
    folder: &str,
) -> (Option<Vec<Stored>>, Vec<String>) {
    let out = python_ok(
        READ_FOLDER,
        &[
            "127.0.0.1",
            &dc.imaps_port.to_string(),
            &dc.cert().display().to_string(),
            user.0,
            user.1,
            folder,
        ],
    );
    let v: serde_json::Value = serde_json::from_slice(&out).expect("reader prints JSON");
    let subscribed = v["subscribed"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    let messages = v["messages"].as_array().map(|msgs| {
        msgs.iter()
            .map(|m| Stored {
                body: base64::engine::general_purpose::STANDARD
                    .decode(m["body"].as_str().expect("body"))
                    .expect("base64"),
                flags: m["flags"]
                    .as_array()
                    .expect("flags")
                    .iter()
                    .filter_map(|f| f.as_str())
                    .filter(|f| *f != "\\Recent")
                    .map(String::from)
                    .collect(),
                date: m["date"].as_i64().expect("date"),
            })
            .collect()
    });
    (messages, subscribed)
}

const READ_FOLDER: &str = r#"
import base64, datetime, imaplib, json, re, ssl, sys
host, port, ca, user, password, folder = sys.argv[1:7]
ctx = ssl.create_default_context(cafile=ca)
m = imaplib.IMAP4_SSL(host=host, port=int(port), ssl_context=ctx, timeout=20)
m.login(user, password)
typ, subs = m.lsub()
subscribed = [s.decode().rsplit(" ", 1)[-1].strip('"') for s in subs if s]
typ, _ = m.select(folder, readonly=True)
if typ != "OK":
    print(json.dumps({"messages": None, "subscribed": subscribed}))
    sys.exit(0)
typ, data = m.uid("SEARCH", None, "ALL")
assert typ == "OK", typ
out = []
for uid in data[0].split():
    typ, resp = m.uid("FETCH", uid, "(FLAGS INTERNALDATE BODY.PEEK[])")
    assert typ == "OK", (typ, resp)
    for p in resp:
        if isinstance(p, tuple):
            head = p[0].decode()
            flags = re.search(r"FLAGS \(([^)]*)\)", head).group(1).split()
            idate = re.search(r'INTERNALDATE "([^"]+)"', head).group(1).strip()
            ts = int(datetime.datetime.strptime(idate, "%d-%b-%Y %H:%M:%S %z").timestamp())
            out.append({"body": base64.b64encode(p[1]).decode(), "flags": flags, "date": ts})
m.logout()
print(json.dumps({"messages": out, "subscribed": subscribed}))
"#;

/// Polls until `user` has `n` messages in `folder`; returns them.
fn wait_messages(
    dc: &Dovecot,
    m: &Mailchute,
    user: (&str, &str),
    folder: &str,
    n: usize,
) -> Vec<Stored> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (got, _) = read_folder(dc, user, folder);
        let got = got.unwrap_or_default();
        if got.len() >= n || Instant::now() >= deadline {
            assert_eq!(
                got.len(),
                n,
                "{} in {folder}\n--- mailchute ---\n{}\n--- dovecot ---\n{}",
                user.0,
                m.log(),
                dc.log()
            );
            return got;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// One SMTP transaction on a fresh connection; returns the reply to the final dot.
fn send(port: u16, rcpts: &[&str], msg: &[u8]) -> Reply {
    let mut c = RawSmtp::connect(port);
    c.ehlo("client.test");
    let r = c.data_raw("from@client.test", rcpts, &dot_stuff(msg));
    c.finish();
    r
}

/// A listener in `mode`, a catch-all route to `sinks`, fast retries, and `sink_tables`.
fn config(port: u16, mode: &str, sinks: &[&str], sink_tables: &str) -> String {
    let sinks: Vec<String> = sinks.iter().map(|s| format!("{s:?}")).collect();
    format!(
        r#"[server]
hostname = "mx.test"
data_dir = "./data"

[[listener]]
name = "mx"
address = "127.0.0.1:{port}"
protocol = "smtp"
mode = "{mode}"

[queue]
backoff_initial = "1s"
backoff_max = "2s"

[[route]]
name = "all"
match = ["*"]
sinks = [{}]

{sink_tables}
"#,
        sinks.join(", ")
    )
}

/// `[sink.NAME]` for `user` over IMAPS, the certificate checked against Dovecot's own.
fn imaps_sink(dc: &Dovecot, name: &str, user: &str, extra: &str) -> String {
    format!(
        "[sink.{name}]\ntype = \"imap\"\nhost = \"127.0.0.1\"\nport = {}\ntls = \"implicit\"\n\
         ca_file = \"{}\"\nusername = \"{user}\"\n{extra}\n",
        dc.imaps_port,
        dc.cert().display()
    )
}

/// Sessions of `user` that logged in and are still open (Dovecot logs no `Disconnected`
/// for them yet): mailchute's pooled connections, since every reader here logs out or
/// closes.
fn open_sessions(dc: &Dovecot, user: &str) -> usize {
    let log = dc.log();
    log.lines()
        .filter(|l| {
            l.contains("imap-login: Info: Login: ") && l.contains(&format!("user=<{user}>"))
        })
        .filter_map(|l| l.split("session=<").nth(1)?.split('>').next())
        .filter(|sid| !log.contains(&format!("<{sid}>: Info: Disconnected")))
        .count()
}

fn queue_files(m: &Mailchute) -> Vec<std::path::PathBuf> {
    files_below(&m.path("data/spool/queue"))
}

fn wait_queue_empty(m: &Mailchute) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !queue_files(m).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        queue_files(m).is_empty(),
        "{:?}\n{}",
        queue_files(m),
        m.log()
    );
}

fn mailchute(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mailchute"));
    cmd.args(args).current_dir(cwd).stdin(Stdio::null());
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("MAILCHUTE_") {
            cmd.env_remove(k);
        }
    }
    cmd.envs(env.iter().copied());
    cmd.output().expect("run mailchute")
}

/// One message through a queued listener to two accounts: alice over IMAPS (ca_file =
/// Dovecot's certificate, flags \Seen, INBOX, AUTHENTICATE PLAIN), bob over STARTTLS
/// (CRAM-MD5, a folder that does not exist yet, so it is created and subscribed). Both read
/// back exactly, with their flags and the arrival time as INTERNALDATE; a second message
/// reuses the logged-in connection.
#[test]
fn one_message_to_two_accounts_over_imaps_and_starttls() {
    let dc = start_dovecot();
    let port = free_port();
    let alice = imaps_sink(
        &dc,
        "alice",
        ALICE.0,
        "password_env = \"ALICE_PW\"\nflags = [\"\\\\Seen\"]",
    );
    let tables = format!(
        "{alice}[sink.bob]\ntype = \"imap\"\nhost = \"127.0.0.1\"\nport = {}\ntls = \"starttls\"\n\
         ca_file = \"{}\"\nusername = \"{}\"\npassword_file = \"bob.pw\"\nauth = \"cram-md5\"\n\
         folder = \"Dropped\"\n",
        dc.imap_port,
        dc.cert().display(),
        BOB.0
    );
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("bob.pw"), format!("{}\n", BOB.1)).unwrap();
    let text = config(port, "queued", &["alice", "bob"], &tables);
    let m = Mailchute::start_with_env_in(dir.path(), &text, &[("ALICE_PW", ALICE.1)]);

    let (before_bob, _) = read_folder(&dc, BOB, "Dropped");
    assert!(
        before_bob.is_none(),
        "Dropped must not exist before the test"
    );

    let msg = message(
        "imap-fanout",
        "First line.\r\n.a line starting with a dot\r\n\r\nAfter an empty line.\r\n",
    );
    let t0 = now();
    let r = send(port, &["someone@dovecot.test"], &msg);
    let t1 = now();
    assert_eq!(r.code, 250, "{r:?}\n{}", m.log());

    let a = wait_messages(&dc, &m, ALICE, "INBOX", 1);
    let b = wait_messages(&dc, &m, BOB, "Dropped", 1);
    for (who, got, flags) in [("alice", &a[0], vec!["\\Seen"]), ("bob", &b[0], vec![])] {
        assert_stored(&got.body, &msg);
        assert_eq!(got.flags, flags, "{who}");
        assert!(
            (t0..=t1).contains(&got.date),
            "{who}: INTERNALDATE {} not the arrival time ({t0}..={t1})",
            got.date
        );
    }
    // The same bytes (our Received line included) in both accounts.
    assert_eq!(a[0].body, b[0].body);
    let (_, subscribed) = read_folder(&dc, BOB, "INBOX");
    assert!(subscribed.iter().any(|s| s == "Dropped"), "{subscribed:?}");
    wait_queue_empty(&m);
    let log = dc.log();
    assert!(
        log.contains(&format!("user=<{}>, method=CRAM-MD5", BOB.0))
            && log.contains(&format!("user=<{}>, method=PLAIN", ALICE.0)),
        "{log}"
    );

    // A second message: delivered on the connections the first one opened.
    let msg2 = message("imap-fanout-2", "Again.\r\n");
    let r = send(port, &["someone@dovecot.test"], &msg2);
    assert_eq!(r.code, 250, "{r:?}");
    let a = wait_messages(&dc, &m, ALICE, "INBOX", 2);
    let b = wait_messages(&dc, &m, BOB, "Dropped", 2);
    assert_stored(&a[1].body, &msg2);
    assert_stored(&b[1].body, &msg2);
    wait_queue_empty(&m);
    // One connection each, still open: the second delivery used the first's.
    assert_eq!(open_sessions(&dc, ALICE.0), 1, "{}", dc.log());
    assert_eq!(open_sessions(&dc, BOB.0), 1, "{}", dc.log());
}

/// A wrong password keeps the message in the spool (`queue list` shows why, naming the
/// server and the user, never the password); `serve` said so at start; after the password
/// file is fixed and SIGHUP reloads, the retry delivers it exactly once.
#[test]
fn wrong_password_stays_spooled_until_fixed_and_reloaded() {
    let dc = start_dovecot();
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("alice.pw");
    fs::write(&pw, "not-the-password\n").unwrap();
    let text = config(
        port,
        "queued",
        &["alice"],
        &imaps_sink(&dc, "alice", ALICE.0, "password_file = \"alice.pw\""),
    );
    let m = Mailchute::start_in(dir.path(), &text);
    let msg = message("imap-wrong-pw", "Wait for me.\r\n");
    let r = send(port, &[ALICE.0], &msg);
    assert_eq!(r.code, 250, "{r:?}\n{}", m.log());

    // Several attempts fail (backoff 1-2 s); the message stays.
    std::thread::sleep(Duration::from_secs(4));
    let (inbox, _) = read_folder(&dc, ALICE, "INBOX");
    assert_eq!(inbox.unwrap_or_default().len(), 0);
    let file = m.path("mailchute.toml").display().to_string();
    let list = mailchute(m.dir(), &["-c", &file, "queue", "list"], &[]);
    let list_out = String::from_utf8_lossy(&list.stdout);
    assert!(list.status.success(), "{list:?}");
    assert!(list_out.contains(ALICE.0), "{list_out}");
    let show_id = list_out
        .lines()
        .nth(1)
        .and_then(|l| l.split_whitespace().next())
        .expect("one queued message")
        .to_string();
    let show = mailchute(m.dir(), &["-c", &file, "queue", "show", &show_id], &[]);
    let show_out = String::from_utf8_lossy(&show.stdout);
    assert!(
        show_out.contains("sink=alice")
            && show_out.contains("4.7.8")
            && show_out.contains(&format!("user {} on 127.0.0.1:{}", ALICE.0, dc.imaps_port))
            && show_out.contains("the password is wrong or the account is locked: fix and reload"),
        "{show_out}"
    );
    assert!(!show_out.contains("not-the-password") && !m.log().contains("not-the-password"));
    // serve's start-up health check named the sink and the reason.
    assert!(
        m.log_lines().iter().any(|l| l["sink"] == "alice"
            && l["message"]
                .as_str()
                .is_some_and(|s| s.contains("sink health check failed"))
            && l["error"]
                .as_str()
                .is_some_and(|s| s.contains("the password is wrong"))),
        "{}",
        m.log()
    );

    fs::write(&pw, format!("{}\n", ALICE.1)).unwrap();
    let pid = m.pid().expect("running");
    // SAFETY: kill(2) on the pid of the child this test spawned.
    assert_eq!(unsafe { libc::kill(pid as libc::pid_t, libc::SIGHUP) }, 0);
    let got = wait_messages(&dc, &m, ALICE, "INBOX", 1);
    assert_stored(&got[0].body, &msg);
    wait_queue_empty(&m);
    // A few retry periods later: still one copy.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        read_folder(&dc, ALICE, "INBOX").0.unwrap_or_default().len(),
        1
    );
}

/// The pids of Dovecot's mail processes behind `user`'s open sessions (`mpid=` of the
/// login line), i.e. mailchute's pooled connections.
fn open_session_pids(dc: &Dovecot, user: &str) -> Vec<i32> {
    let log = dc.log();
    log.lines()
        .filter(|l| {
            l.contains("imap-login: Info: Login: ") && l.contains(&format!("user=<{user}>"))
        })
        .filter(|l| {
            l.split("session=<")
                .nth(1)
                .and_then(|s| s.split('>').next())
                .is_some_and(|sid| !log.contains(&format!("<{sid}>: Info: Disconnected")))
        })
        .filter_map(|l| l.split("mpid=").nth(1)?.split(',').next()?.parse().ok())
        .collect()
}

/// Ends the server side of `user`'s pooled connections with `signal` (SIGTERM: Dovecot's
/// imap process says BYE and closes; SIGKILL: the connection just drops). Dovecot's master
/// stopping does not end them (they serve on), so this is how a test makes one die.
fn end_sessions(dc: &Dovecot, user: &str, signal: i32) -> usize {
    let pids = open_session_pids(dc, user);
    for &pid in &pids {
        // SAFETY: kill(2) by pid on a mail process of the Dovecot this test started.
        unsafe { libc::kill(pid, signal) };
    }
    std::thread::sleep(Duration::from_millis(300));
    pids.len()
}

/// A sync listener: a pooled connection the server ended (BYE, or just gone) is replaced
/// without the client noticing (250, one copy, one new login); with Dovecot down the client
/// gets 451 naming the server, and nothing is kept.
#[test]
fn sync_listener_replaces_dead_pooled_connections_and_answers_451_when_down() {
    let mut dc = start_dovecot();
    let port = free_port();
    let m = Mailchute::start_with_env(
        &config(
            port,
            "sync",
            &["alice"],
            &imaps_sink(&dc, "alice", ALICE.0, "password_env = \"ALICE_PW\""),
        ),
        &[("ALICE_PW", ALICE.1)],
    );
    let mut sent = Vec::new();
    for (i, signal) in [libc::SIGTERM, libc::SIGKILL].into_iter().enumerate() {
        let msg = message(&format!("imap-sync-{i}"), "Pooled.\r\n");
        let r = send(port, &[ALICE.0], &msg);
        assert_eq!(r.code, 250, "{r:?}\n{}", m.log());
        sent.push(msg);
        assert_eq!(end_sessions(&dc, ALICE.0, signal), 1, "{}", dc.log());
    }
    // The pooled connection is dead each time: the next delivery still gets 250.
    let last = message("imap-sync-2", "After the pooled connection died.\r\n");
    let r = send(port, &[ALICE.0], &last);
    assert_eq!(r.code, 250, "{r:?}\n{}\n{}", m.log(), dc.log());
    sent.push(last);
    let got = wait_messages(&dc, &m, ALICE, "INBOX", 3);
    for (g, s) in got.iter().zip(&sent) {
        assert_stored(&g.body, s);
    }

    dc.stop();
    end_sessions(&dc, ALICE.0, libc::SIGKILL);
    let r = send(
        port,
        &[ALICE.0],
        &message("imap-sync-3", "Nobody home.\r\n"),
    );
    assert_eq!(
        r.code,
        451,
        "{r:?}\n{}\n--- dovecot ---\n{}",
        m.log(),
        dc.log()
    );
    let text = r.text();
    assert!(
        text.contains("4.4.1") && text.contains(&format!("127.0.0.1:{}", dc.imaps_port)),
        "{r:?}"
    );
    assert!(queue_files(&m).is_empty(), "{:?}", queue_files(&m));
    dc.run();
    assert_eq!(
        read_folder(&dc, ALICE, "INBOX").0.unwrap_or_default().len(),
        3
    );
}

/// `mailchute check`: every sink one line; 0 when all pass, 69 when one fails (a wrong
/// password, a folder that cannot exist), 78 for a config error.
#[test]
fn check_command_reports_each_sink_and_exits_with_its_status() {
    let dc = start_dovecot();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let alice = imaps_sink(
        &dc,
        "alice",
        ALICE.0,
        &format!("password = \"{}\"", ALICE.1),
    );
    let good = format!(
        "{alice}[sink.bob]\ntype = \"imap\"\nhost = \"127.0.0.1\"\nport = {}\ntls = \"starttls\"\n\
         ca_file = \"{}\"\nusername = \"{}\"\npassword = \"{}\"\nfolder = \"Later\"\n\
         [sink.local]\ntype = \"maildir\"\npath = \"./Maildir\"\n",
        dc.imap_port,
        dc.cert().display(),
        BOB.0,
        BOB.1
    );
    let file = dir.path().join("good.toml");
    fs::write(
        &file,
        config(port, "queued", &["alice", "bob", "local"], &good),
    )
    .unwrap();
    let file = file.display().to_string();
    let o = mailchute(dir.path(), &["check", "-c", &file], &[]);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert_eq!(
        o.status.code(),
        Some(0),
        "{out}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(
        lines[0].starts_with(&format!(
            "ok   sink alice: imap {} at 127.0.0.1:{}",
            ALICE.0, dc.imaps_port
        )) && lines[0].ends_with("(logged in, folder examined)"),
        "{out}"
    );
    assert!(
        lines[1].starts_with("ok   sink bob: ") && lines[1].contains("tls starttls"),
        "{out}"
    );
    assert!(lines[2].starts_with("ok   sink local: maildir "), "{out}");
    // Nothing was created by the check.
    assert!(read_folder(&dc, BOB, "Later").0.is_none());
    assert!(!dir.path().join("Maildir").exists());

    let bad = good
        .replace(&format!("password = \"{}\"\nfolder", BOB.1), "password = \"wrong\"\nfolder")
        .replace("[sink.local]", "[sink.nofolder]\ntype = \"imap\"\nhost = \"127.0.0.1\"\nport = PORT\nca_file = \"CA\"\nusername = \"alice@dovecot.test\"\npassword = \"alice-pw\"\nfolder = \"Nope\"\ncreate_folder = false\n\n[sink.local]")
        .replace("PORT", &dc.imaps_port.to_string())
        .replace("CA", &dc.cert().display().to_string());
    let file = dir.path().join("bad.toml");
    fs::write(
        &file,
        config(port, "queued", &["alice", "bob", "local", "nofolder"], &bad),
    )
    .unwrap();
    let file = file.display().to_string();
    let o = mailchute(dir.path(), &["check", "-c", &file], &[]);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(69), "{out}\n{err}");
    assert!(
        out.lines().any(|l| l.starts_with("ok   sink alice: ")),
        "{out}"
    );
    assert!(
        out.lines().any(|l| l.starts_with("FAIL sink bob: 4.7.8 ")
            && l.contains(&format!("user {} on 127.0.0.1:{}", BOB.0, dc.imap_port))
            && l.contains("the password is wrong or the account is locked")),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("FAIL sink nofolder: 4.2.0 ")
                && l.contains("folder Nope does not exist and create_folder = false")),
        "{out}"
    );
    assert!(
        !out.contains("\"wrong\"") && !err.contains("wrong\""),
        "{out}\n{err}"
    );
    assert!(
        err.contains("2 of 4 sinks failed the health check"),
        "{err}"
    );

    let file = dir.path().join("invalid.toml");
    fs::write(
        &file,
        config(
            port,
            "queued",
            &["alice"],
            &imaps_sink(&dc, "alice", ALICE.0, "password = \"x\"\ncolour = \"blue\""),
        ),
    )
    .unwrap();
    let o = mailchute(
        dir.path(),
        &["check", "-c", &file.display().to_string()],
        &[],
    );
    assert_eq!(o.status.code(), Some(78), "{o:?}");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("colour"),
        "{o:?}"
    );
}

/// DDMailer checked its accounts before it started: so does `daemon start`, naming the
/// sink whose login failed (1, nothing running); `--no-check` starts anyway (mail then
/// waits in the spool), and `daemon stop` ends it.
#[test]
fn daemon_start_refuses_a_wrong_imap_password_unless_no_check() {
    let dc = start_dovecot();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let sink = imaps_sink(&dc, "alice", ALICE.0, "password = \"not-her-password\"");
    let file = dir.path().join("daemon.toml");
    fs::write(&file, config(port, "queued", &["alice"], &sink)).unwrap();
    let file = file.display().to_string();
    let log = dir.path().join("daemon.log").display().to_string();
    let o = mailchute(
        dir.path(),
        &["-c", &file, "--log-file", &log, "daemon", "start"],
        &[],
    );
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("FAIL sink alice: 4.7.8 ") && err.contains("--no-check"),
        "{err}"
    );
    assert!(!err.contains("not-her-password"), "{err}");
    let status = mailchute(dir.path(), &["-c", &file, "daemon", "status"], &[]);
    assert_eq!(status.status.code(), Some(3), "nothing was started");

    let o = mailchute(
        dir.path(),
        &[
            "-c",
            &file,
            "--log-file",
            &log,
            "daemon",
            "start",
            "--no-check",
        ],
        &[],
    );
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let status = mailchute(dir.path(), &["-c", &file, "daemon", "status"], &[]);
    assert_eq!(status.status.code(), Some(0));
    let stop = mailchute(dir.path(), &["-c", &file, "daemon", "stop"], &[]);
    assert_eq!(
        stop.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&stop.stderr)
    );
}

/// The imap sink keeps the envelope as Dovecot's LDA would: one APPEND per recipient,
/// each beginning with `Return-Path: <sender>` and its own `Delivered-To:`, a forged
/// `Return-Path` dropped; `envelope_headers = false` APPENDs the message once, as it came.
#[test]
fn envelope_headers_one_append_per_recipient_and_off_as_before() {
    let dc = start_dovecot();
    let port = free_port();
    let alice = imaps_sink(&dc, "alice", ALICE.0, "password_env = \"ALICE_PW\"");
    let bob = imaps_sink(
        &dc,
        "bob",
        BOB.0,
        "password_env = \"BOB_PW\"\nenvelope_headers = false",
    );
    let text = config(port, "sync", &["alice", "bob"], &format!("{alice}{bob}"));
    let m = Mailchute::start_with_env(&text, &[("ALICE_PW", ALICE.1), ("BOB_PW", BOB.1)]);
    let msg = b"Return-Path: <forged@x.test>\r\nFrom: from@client.test\r\nTo: one@test\r\n\
                Subject: imap envelope\r\n\r\nbody\r\n"
        .to_vec();
    // To: one@test; two@test only in the envelope (a Bcc).
    let r = send(port, &["one@test", "two@test"], &msg);
    assert_eq!(r.code, 250, "{r:?}\n{}", m.log());

    let a = wait_messages(&dc, &m, ALICE, "INBOX", 2);
    let mut whom = Vec::new();
    for got in &a {
        let (envelope, _) = split_envelope(&got.body);
        let (sender, rcpt) = envelope.expect("the envelope first");
        assert_eq!(sender, "from@client.test");
        assert!(
            got.body
                .starts_with(b"Return-Path: <from@client.test>\r\nDelivered-To: ")
        );
        whom.push(rcpt);
        assert_stored(
            &got.body,
            b"From: from@client.test\r\nTo: one@test\r\nSubject: imap envelope\r\n\r\nbody\r\n",
        );
    }
    whom.sort();
    assert_eq!(whom, ["one@test", "two@test"]);

    let b = wait_messages(&dc, &m, BOB, "INBOX", 1);
    assert!(split_envelope(&b[0].body).0.is_none());
    assert_stored(&b[0].body, &msg);
}
