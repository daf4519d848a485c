//! mailchute's `lmtp` sink against a real Dovecot 2.3 (a private instance as shared/TESTING.md
//! describes: no /etc/dovecot, its own base_dir, state_dir and log in a temp dir, passwd-file
//! users, Maildir as uid 65534, self-signed TLS), read back with Python's `imaplib` over IMAPS
//! and Python's `mailbox` on the user's Maildir.

use std::fs;
use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use tempfile::TempDir;

use crate::harness::*;

/// uid/gid the mail is stored as (nobody): Dovecot refuses to deliver as root.
const MAIL_ID: u32 = 65534;

/// The mail domain of the test users.
pub const DOMAIN: &str = "dovecot.test";

/// A running private Dovecot (master in the foreground, `dovecot -F`, so its pid is the
/// child's and never guessed from a file); stopped by that pid when dropped.
pub struct Dovecot {
    _tmp: TempDir,
    root: PathBuf,
    conf: PathBuf,
    /// LMTP on 127.0.0.1 (plain, STARTTLS offered).
    pub lmtp_port: u16,
    /// IMAP with STARTTLS on 127.0.0.1.
    pub imap_port: u16,
    /// IMAP over implicit TLS on 127.0.0.1.
    pub imaps_port: u16,
    master: Option<Child>,
}

impl Dovecot {
    /// Writes the config for `users` (address, password), validates it with `dovecot -n`,
    /// starts the master and waits for the LMTP banner.
    pub fn start(users: &[(&str, &str)]) -> Dovecot {
        // Short on purpose: base_dir holds unix sockets (108-byte path limit).
        let tmp = tempfile::Builder::new()
            .prefix("dc")
            .tempdir_in("/tmp")
            .expect("tempdir in /tmp");
        let root = tmp.path().to_path_buf();
        // Temp dirs are 0700: the login processes (dovenull) and deliveries as nobody must
        // traverse it.
        fs::set_permissions(&root, fs::Permissions::from_mode(0o755)).expect("chmod root");
        let home = root.join("home");
        fs::create_dir(&home).expect("mkdir home");
        std::os::unix::fs::chown(&home, Some(MAIL_ID), Some(MAIL_ID)).expect("chown home");

        let (cert, key) = self_signed_cert(&root);
        let passwd = root.join("users");
        let lines: String = users
            .iter()
            .map(|(u, p)| format!("{u}:{{PLAIN}}{p}\n"))
            .collect();
        fs::write(&passwd, lines).expect("write users");
        fs::set_permissions(&passwd, fs::Permissions::from_mode(0o640)).expect("chmod users");
        let st = Command::new("chgrp")
            .arg("dovecot")
            .arg(&passwd)
            .status()
            .expect("run chgrp");
        assert!(st.success(), "chgrp dovecot {}", passwd.display());

        // Bound together so the three are distinct.
        let probes: Vec<std::net::TcpListener> = (0..3)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0"))
            .collect();
        let port = |i: usize| probes[i].local_addr().expect("local_addr").port();
        let (lmtp_port, imap_port, imaps_port) = (port(0), port(1), port(2));
        drop(probes);
        let r = root.display();
        let conf_text = format!(
            r#"base_dir = {r}/run
state_dir = {r}/state
log_path = {r}/dovecot.log
hostname = {DOMAIN}
listen = 127.0.0.1
protocols = lmtp imap
ssl = yes
ssl_cert = <{cert}
ssl_key = <{key}
disable_plaintext_auth = no
auth_mechanisms = plain login cram-md5
first_valid_uid = 1
mail_location = maildir:~/Maildir
postmaster_address = postmaster@{DOMAIN}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN {passwd}
}}
userdb {{
  driver = static
  args = uid={MAIL_ID} gid={MAIL_ID} home={r}/home/%u
}}
service lmtp {{
  inet_listener lmtp {{
    address = 127.0.0.1
    port = {lmtp_port}
  }}
  unix_listener lmtp {{
    mode = 0666
  }}
}}
service imap-login {{
  inet_listener imap {{
    port = {imap_port}
  }}
  inet_listener imaps {{
    port = {imaps_port}
    ssl = yes
  }}
}}
"#,
            cert = cert.display(),
            key = key.display(),
            passwd = passwd.display(),
        );
        let conf = root.join("dovecot.conf");
        fs::write(&conf, conf_text).expect("write dovecot.conf");
        let out = Command::new("dovecot")
            .arg("-c")
            .arg(&conf)
            .arg("-n")
            .output()
            .expect("run dovecot -n");
        assert!(
            out.status.success(),
            "dovecot -c {} -n refused the config: {}",
            conf.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let mut dc = Dovecot {
            _tmp: tmp,
            root,
            conf,
            lmtp_port,
            imap_port,
            imaps_port,
            master: None,
        };
        dc.run();
        dc
    }

    /// Starts the master (again, after [`Dovecot::stop`]) on the same config and ports.
    pub fn run(&mut self) {
        assert!(self.master.is_none(), "dovecot is already running");
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut starts = 0;
        loop {
            if self.master.is_none() {
                starts += 1;
                let child = Command::new("dovecot")
                    .arg("-F")
                    .arg("-c")
                    .arg(&self.conf)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("spawn dovecot");
                // Held at once, so a start that never becomes ready is still stopped by Drop.
                self.master = Some(child);
            }
            if let Some(Ok(Some(st))) = self.master.as_mut().map(|c| c.try_wait()) {
                self.master = None;
                // A restart can race the old instance's last process out of its sockets.
                assert!(
                    starts < 3 && Instant::now() < deadline,
                    "dovecot exited ({st}) before it was ready, {starts} times\n--- log ---\n{}",
                    self.log()
                );
                std::thread::sleep(Duration::from_millis(500));
                continue;
            }
            let step = (Instant::now() + Duration::from_millis(300)).min(deadline);
            match wait_for_banner(&self.lmtp_addr(), false, step) {
                Ok(()) => return,
                Err(e) if Instant::now() >= deadline => {
                    self.stop();
                    panic!("dovecot not ready: {e}\n--- log ---\n{}", self.log());
                }
                Err(_) => {}
            }
        }
    }

    /// SIGTERM to the master (it stops its children), SIGKILL after 10 s.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.master.take() {
            terminate(&mut c, Duration::from_secs(10));
            // The master's children close the listening sockets a moment after it exits;
            // a restart before that fails to bind them.
            let deadline = Instant::now() + Duration::from_secs(10);
            while TcpStream::connect(self.lmtp_addr()).is_ok() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    pub fn lmtp_addr(&self) -> String {
        format!("127.0.0.1:{}", self.lmtp_port)
    }

    /// The LMTP unix socket (`service lmtp` `unix_listener lmtp`, in base_dir).
    pub fn lmtp_socket(&self) -> PathBuf {
        self.root.join("run/lmtp")
    }

    /// The self-signed certificate every TLS listener presents (SAN 127.0.0.1, localhost).
    pub fn cert(&self) -> PathBuf {
        self.root.join("cert.pem")
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.root.join("dovecot.log")).unwrap_or_default()
    }

    /// The Maildir `user` is delivered to.
    pub fn maildir(&self, user: &str) -> PathBuf {
        self.root.join("home").join(user).join("Maildir")
    }

    /// Every message in `user`'s INBOX, in UID order, fetched with Python's `imaplib` over
    /// IMAPS (the certificate checked against our own CA file).
    pub fn imap_fetch_all(&self, user: &str, password: &str) -> Vec<Vec<u8>> {
        let out = python_ok(
            IMAP_FETCH_ALL,
            &[
                "127.0.0.1",
                &self.imaps_port.to_string(),
                &self.cert().display().to_string(),
                user,
                password,
            ],
        );
        let msgs: Vec<String> = serde_json::from_slice(&out).expect("reader prints JSON");
        msgs.into_iter()
            .map(|b| {
                base64::engine::general_purpose::STANDARD
                    .decode(b)
                    .expect("base64")
            })
            .collect()
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        self.stop();
    }
}

const IMAP_FETCH_ALL: &str = r#"
import base64, imaplib, json, ssl, sys
host, port, ca, user, password = sys.argv[1:6]
ctx = ssl.create_default_context(cafile=ca)
m = imaplib.IMAP4_SSL(host=host, port=int(port), ssl_context=ctx, timeout=20)
m.login(user, password)
typ, _ = m.select("INBOX", readonly=True)
assert typ == "OK", typ
typ, data = m.uid("SEARCH", None, "ALL")
assert typ == "OK", typ
out = []
for uid in data[0].split():
    typ, resp = m.uid("FETCH", uid, "(RFC822)")
    assert typ == "OK", (typ, resp)
    out.extend(base64.b64encode(p[1]).decode() for p in resp if isinstance(p, tuple))
m.logout()
print(json.dumps(out))
"#;

const ALICE: (&str, &str) = ("alice@dovecot.test", "alice-pw");
const BOB: (&str, &str) = ("bob@dovecot.test", "bob-pw");
const UNKNOWN: &str = "nobody-here@dovecot.test";

fn start_dovecot() -> Dovecot {
    Dovecot::start(&[ALICE, BOB])
}

/// A `sync` listener of `protocol` on `port`, everything routed to one `lmtp` sink with
/// `sink` (TOML lines: address, tls …).
fn lmtp_sink_config(port: u16, protocol: &str, mode: &str, sink: &str) -> String {
    format!(
        r#"[server]
hostname = "mx.test"
data_dir = "./data"

[[listener]]
name = "mx"
address = "127.0.0.1:{port}"
protocol = "{protocol}"
mode = "{mode}"

[queue]
backoff_initial = "1s"
backoff_max = "2s"

[[route]]
name = "all"
match = ["*"]
sinks = ["dovecot"]

[sink.dovecot]
type = "lmtp"
{sink}
"#
    )
}

/// One SMTP transaction on a fresh connection; returns the reply to the final dot.
fn send(port: u16, rcpts: &[&str], msg: &[u8]) -> Reply {
    let mut c = RawSmtp::connect(port);
    c.ehlo("client.test");
    let r = c.data_raw("from@client.test", rcpts, &dot_stuff(msg));
    c.finish();
    r
}

/// The enhanced status code of a reply (`550 5.1.1 text` → `5.1.1`).
fn status(r: &Reply) -> String {
    r.lines[0]
        .split_whitespace()
        .nth(1)
        .unwrap_or("")
        .to_string()
}

/// Splits off the first header of `msg` (with its folded continuation lines), which must
/// start with `prefix`: (that header as text, the rest).
fn take_header<'a>(msg: &'a [u8], prefix: &str) -> (String, &'a [u8]) {
    assert!(
        msg.starts_with(prefix.as_bytes()),
        "expected a header starting {prefix:?} here:\n{}",
        String::from_utf8_lossy(&msg[..msg.len().min(600)])
    );
    let mut end = 0;
    loop {
        end = msg[end..]
            .iter()
            .position(|&b| b == b'\n')
            .map(|i| end + i + 1)
            .unwrap_or(msg.len());
        if !matches!(msg.get(end), Some(b' ') | Some(b'\t')) {
            break;
        }
    }
    (
        String::from_utf8_lossy(&msg[..end]).into_owned(),
        &msg[end..],
    )
}

/// A message as Dovecot stored it for `user` (`eol` = its line ending: CRLF over IMAP, LF
/// in the Maildir): Dovecot's Return-Path, its Delivered-To (only when the LMTP transaction
/// had this one recipient: Dovecot does not tell one recipient about the others), its
/// `Received:` naming mailchute (LHLO `mx.test`) as the LMTP client, then our `Received:`,
/// then exactly `sent`. Returns Dovecot's `Received:` header.
fn assert_dovecot_stored(
    stored: &[u8],
    user: &str,
    single_rcpt: bool,
    sent: &[u8],
    eol: &str,
) -> String {
    let (return_path, mut rest) = take_header(stored, "Return-Path: ");
    assert_eq!(return_path, format!("Return-Path: <from@client.test>{eol}"));
    if single_rcpt {
        let (delivered_to, after) = take_header(rest, "Delivered-To: ");
        assert_eq!(delivered_to, format!("Delivered-To: {user}{eol}"));
        rest = after;
    }
    let (received, rest) = take_header(rest, "Received: from mx.test");
    assert!(
        received.contains("by dovecot.test with LMTP"),
        "Dovecot's Received header: {received:?}"
    );
    assert_eq!(
        received.contains(&format!("for <{user}>")),
        single_rcpt,
        "Dovecot's Received header: {received:?}"
    );
    let expected = if eol == "\n" {
        crlf_to_lf(sent)
    } else {
        sent.to_vec()
    };
    assert_stored(rest, &expected);
    received
}

/// Polls until `user`'s Maildir holds `n` messages, with both logs on failure.
fn wait_delivered(dc: &Dovecot, user: &str, n: usize, m: &Mailchute) {
    let got = wait_maildir_count(&dc.maildir(user), n, Duration::from_secs(30));
    assert_eq!(
        got,
        n,
        "{user}: {got} of {n} messages\n--- mailchute ---\n{}\n--- dovecot ---\n{}",
        m.log(),
        dc.log()
    );
}

/// Proof that the harness is right without mailchute: Dovecot's own LMTP takes a message
/// for a known user, refuses an unknown one, and IMAPS reads it back.
#[test]
fn harness_private_dovecot_lmtp_and_imaps() {
    let dc = start_dovecot();
    let mut c = RawSmtp::connect(dc.lmtp_port);
    let caps = c
        .expect("LHLO client.test", 250)
        .lines
        .iter()
        .skip(1)
        .map(|l| l[4..].to_ascii_uppercase())
        .collect::<Vec<_>>();
    assert!(caps.iter().any(|c| c == "STARTTLS"), "{caps:?}");
    c.expect("MAIL FROM:<from@client.test>", 250);
    c.expect(&format!("RCPT TO:<{}>", ALICE.0), 250);
    let r = c.cmd(&format!("RCPT TO:<{UNKNOWN}>"));
    assert_eq!((r.code, status(&r).as_str()), (550, "5.1.1"), "{r:?}");
    c.expect("DATA", 354);
    let msg = message("dovecot-harness", "Straight into Dovecot.\r\n");
    c.send(&dot_stuff(&msg));
    let r = c.read_reply();
    assert_eq!(r.code, 250, "{r:?}\n{}", dc.log());
    c.quit();
    let msgs = dc.imap_fetch_all(ALICE.0, ALICE.1);
    assert_eq!(msgs.len(), 1, "{}", dc.log());
    assert!(
        msgs[0].ends_with(&msg),
        "{}",
        String::from_utf8_lossy(&msgs[0])
    );
    assert!(dc.imap_fetch_all(BOB.0, BOB.1).is_empty());

    // The plain IMAP port (STARTTLS) greets too, for IMAP clients that upgrade.
    let s = TcpStream::connect(("127.0.0.1", dc.imap_port)).expect("connect to IMAP");
    s.set_read_timeout(Some(Duration::from_secs(10))).ok();
    let mut greeting = String::new();
    BufReader::new(s)
        .read_line(&mut greeting)
        .expect("IMAP greeting");
    assert!(
        greeting.starts_with("* OK") && greeting.contains("STARTTLS"),
        "{greeting:?}"
    );
}

fn queue_files(m: &Mailchute) -> Vec<PathBuf> {
    files_below(&m.path("data/spool/queue"))
}

/// A body that needs dot-stuffing both ways and has an empty line inside.
fn test_message(subject: &str) -> Vec<u8> {
    message(
        subject,
        "First line.\r\n.a line starting with a dot\r\n..two dots\r\n\r\nAfter an empty line.\r\n",
    )
}

/// Sends `msg` to alice and bob through `m` (a sync SMTP listener on `port`) and checks each
/// got exactly one copy, as IMAP shows it and as the Maildir holds it.
fn assert_sync_delivery_to_both(dc: &Dovecot, m: &Mailchute, port: u16, msg: &[u8]) -> String {
    let mut received = String::new();
    let r = send(port, &[ALICE.0, BOB.0], msg);
    assert_eq!(r.code, 250, "{r:?}\n{}\n{}", m.log(), dc.log());
    for (user, password) in [ALICE, BOB] {
        wait_delivered(dc, user, 1, m);
        let over_imap = dc.imap_fetch_all(user, password);
        assert_eq!(over_imap.len(), 1, "{user} over IMAP\n{}", dc.log());
        received = assert_dovecot_stored(&over_imap[0], user, false, msg, "\r\n");
        let on_disk = read_maildir(&dc.maildir(user));
        assert_eq!(on_disk.len(), 1, "{user} in the Maildir");
        assert_dovecot_stored(&on_disk[0], user, false, msg, "\n");
    }
    // sync: delivered before the 250, so nothing is left to retry into a duplicate.
    assert!(queue_files(m).is_empty(), "{:?}", queue_files(m));
    received
}

#[test]
fn sync_smtp_to_dovecot_lmtp_over_tcp_delivers_once_per_user() {
    let dc = start_dovecot();
    let port = free_port();
    let m = Mailchute::start(&lmtp_sink_config(
        port,
        "smtp",
        "sync",
        &format!("address = \"{}\"\ntls = \"none\"\n", dc.lmtp_addr()),
    ));
    let received = assert_sync_delivery_to_both(&dc, &m, port, &test_message("dovecot-tcp"));
    assert!(
        received.starts_with("Received: from mx.test ([127.0.0.1])") && !received.contains("LMTPS"),
        "plain LMTP over TCP: {received:?}"
    );
}

#[test]
fn sync_smtp_to_dovecot_lmtp_over_unix_socket_delivers_once_per_user() {
    let dc = start_dovecot();
    let port = free_port();
    let m = Mailchute::start(&lmtp_sink_config(
        port,
        "smtp",
        "sync",
        &format!("address = \"unix:{}\"\n", dc.lmtp_socket().display()),
    ));
    let received = assert_sync_delivery_to_both(&dc, &m, port, &test_message("dovecot-unix"));
    // The default tls = "opportunistic" takes the STARTTLS Dovecot offers on the socket too.
    assert!(
        received.contains("(using TLS") && received.contains("with LMTPS"),
        "{received:?}"
    );
}

/// Dovecot refuses an unknown user at RCPT (550 5.1.1 "User doesn't exist"): a sync SMTP
/// client is told exactly that, and nothing is kept.
#[test]
fn unknown_dovecot_user_is_550_5_1_1_in_sync_mode() {
    let dc = start_dovecot();
    let port = free_port();
    let m = Mailchute::start(&lmtp_sink_config(
        port,
        "smtp",
        "sync",
        &format!("address = \"{}\"\n", dc.lmtp_addr()),
    ));
    let r = send(port, &[UNKNOWN], &test_message("dovecot-unknown"));
    assert_eq!(r.code, 550, "{r:?}\n{}\n{}", m.log(), dc.log());
    assert_eq!(status(&r), "5.1.1", "Dovecot's enhanced code: {r:?}");
    assert!(r.text().contains("User doesn't exist"), "{r:?}");
    assert!(queue_files(&m).is_empty(), "{:?}", queue_files(&m));
    assert!(
        files_below(&m.path("data/dead")).is_empty(),
        "{:?}",
        files_below(&m.path("data/dead"))
    );
}

/// On an LMTP listener each recipient gets Dovecot's own answer: 250 for alice, 550 5.1.1
/// for the unknown one; alice has the message once.
#[test]
fn lmtp_listener_passes_dovecot_per_recipient_replies_on() {
    let dc = start_dovecot();
    let port = free_port();
    let m = Mailchute::start(&lmtp_sink_config(
        port,
        "lmtp",
        "sync",
        &format!("address = \"{}\"\n", dc.lmtp_addr()),
    ));
    let msg = test_message("dovecot-mixed");
    let mut c = RawSmtp::connect(port);
    c.expect("LHLO client.test", 250);
    c.expect("MAIL FROM:<from@client.test>", 250);
    c.expect(&format!("RCPT TO:<{}>", ALICE.0), 250);
    c.expect(&format!("RCPT TO:<{UNKNOWN}>"), 250);
    c.expect("DATA", 354);
    c.send(&dot_stuff(&msg));
    let replies: Vec<Reply> = (0..2).map(|_| c.read_reply()).collect();
    c.quit();
    let codes: Vec<u16> = replies.iter().map(|r| r.code).collect();
    assert_eq!(
        codes,
        [250, 550],
        "replies in RCPT order: {replies:?}\n{}",
        m.log()
    );
    assert_eq!(status(&replies[1]), "5.1.1", "{replies:?}");
    assert!(
        replies[1].text().contains("User doesn't exist"),
        "{replies:?}"
    );

    wait_delivered(&dc, ALICE.0, 1, &m);
    let msgs = dc.imap_fetch_all(ALICE.0, ALICE.1);
    assert_eq!(msgs.len(), 1);
    assert_dovecot_stored(&msgs[0], ALICE.0, true, &msg, "\r\n");
    assert!(queue_files(&m).is_empty(), "{:?}", queue_files(&m));
}

/// Dovecot's LMTP offers STARTTLS (`ssl = yes`): `tls = "starttls"` with its certificate as
/// `ca_file` delivers; the same with a CA that did not sign it is refused as temporary and
/// delivers nothing, which shows the certificate really is checked.
#[test]
fn lmtp_starttls_to_dovecot_checks_the_certificate() {
    let dc = start_dovecot();
    let port = free_port();
    let m = Mailchute::start(&lmtp_sink_config(
        port,
        "smtp",
        "sync",
        &format!(
            "address = \"{}\"\ntls = \"starttls\"\nca_file = \"{}\"\n",
            dc.lmtp_addr(),
            dc.cert().display()
        ),
    ));
    let msg = test_message("dovecot-starttls");
    let r = send(port, &[ALICE.0], &msg);
    assert_eq!(r.code, 250, "{r:?}\n{}\n{}", m.log(), dc.log());
    wait_delivered(&dc, ALICE.0, 1, &m);
    let msgs = dc.imap_fetch_all(ALICE.0, ALICE.1);
    assert_eq!(msgs.len(), 1);
    let received = assert_dovecot_stored(&msgs[0], ALICE.0, true, &msg, "\r\n");
    assert!(
        received.contains("(using TLS") && received.contains("with LMTPS"),
        "{received:?}"
    );

    let other_ca = tempfile::tempdir().unwrap();
    let (wrong_ca, _) = self_signed_cert(other_ca.path());
    let port2 = free_port();
    let m2 = Mailchute::start(&lmtp_sink_config(
        port2,
        "smtp",
        "sync",
        &format!(
            "address = \"{}\"\ntls = \"starttls\"\nca_file = \"{}\"\n",
            dc.lmtp_addr(),
            wrong_ca.display()
        ),
    ));
    let r = send(port2, &[BOB.0], &test_message("dovecot-wrong-ca"));
    assert_eq!(r.code, 451, "{r:?}\n{}", m2.log());
    assert!(dc.imap_fetch_all(BOB.0, BOB.1).is_empty());
}

/// A queued listener keeps the message while Dovecot is down and delivers it, once, when
/// Dovecot is back.
#[test]
fn queued_listener_waits_for_dovecot_to_come_back() {
    let mut dc = start_dovecot();
    dc.stop();
    let port = free_port();
    let m = Mailchute::start(&lmtp_sink_config(
        port,
        "smtp",
        "queued",
        &format!("address = \"{}\"\n", dc.lmtp_addr()),
    ));
    let msg = test_message("dovecot-late");
    let r = send(port, &[ALICE.0], &msg);
    assert_eq!(r.code, 250, "{r:?}\n{}", m.log());
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(maildir_count(&dc.maildir(ALICE.0)), 0);
    assert!(!queue_files(&m).is_empty(), "spooled while Dovecot is down");

    dc.run();
    wait_delivered(&dc, ALICE.0, 1, &m);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !queue_files(&m).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(queue_files(&m).is_empty(), "{:?}", queue_files(&m));
    // A few retry periods later there is still one copy.
    std::thread::sleep(Duration::from_secs(4));
    let msgs = dc.imap_fetch_all(ALICE.0, ALICE.1);
    assert_eq!(msgs.len(), 1, "{}", dc.log());
    assert_dovecot_stored(&msgs[0], ALICE.0, true, &msg, "\r\n");
}
