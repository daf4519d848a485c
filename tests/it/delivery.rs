//! Delivery semantics through the whole server (DESIGN.md "Never lose a message" and "One
//! error model"): what a client is told after DATA on `sync`, `queued` and LMTP listeners,
//! what stays in the spool, dead letters and DSNs, how relay and exec outcomes map to
//! replies, and a disk that fills up.

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::harness::*;

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// `[server]` plus whatever follows (listeners, routes, sinks, `[queue]`).
fn config(rest: &str) -> String {
    format!("[server]\nhostname = \"mx.test\"\ndata_dir = \"./data\"\n\n{rest}")
}

fn listener(port: u16, protocol: &str, mode: &str, extra: &str) -> String {
    format!(
        "[[listener]]\nname = \"in\"\naddress = \"127.0.0.1:{port}\"\nprotocol = \"{protocol}\"\nmode = \"{mode}\"\n{extra}\n"
    )
}

fn route(name: &str, matches: &[&str], sinks: &[&str]) -> String {
    let q = |v: &[&str]| {
        v.iter()
            .map(|s| format!("\"{s}\""))
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        "[[route]]\nname = \"{name}\"\nmatch = [{}]\nsinks = [{}]\n\n",
        q(matches),
        q(sinks)
    )
}

/// An exec sink running `/bin/sh -c SCRIPT ARGS…` (TOML basic strings, so `"` and `\` in
/// the script are escaped here).
fn exec_sink(name: &str, script: &str, args: &[&str]) -> String {
    let esc = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
    let mut argv = vec![
        "\"/bin/sh\"".to_string(),
        "\"-c\"".to_string(),
        format!("\"{}\"", esc(script)),
    ];
    argv.extend(args.iter().map(|a| format!("\"{}\"", esc(a))));
    format!(
        "[sink.{name}]\ntype = \"exec\"\ncommand = [{}]\n\n",
        argv.join(", ")
    )
}

fn maildir_sink(name: &str, path: &str) -> String {
    format!("[sink.{name}]\ntype = \"maildir\"\npath = \"{path}\"\n\n")
}

/// One transaction on a fresh connection; returns the reply to the final dot.
fn send(port: u16, from: &str, rcpts: &[&str], msg: &[u8]) -> Reply {
    let mut c = RawSmtp::connect(port);
    c.ehlo("client.test");
    let r = c.data_raw(from, rcpts, &dot_stuff(msg));
    c.finish();
    r
}

/// The enhanced status code of a reply (`451 4.3.1 text` → `4.3.1`).
fn status(r: &Reply) -> String {
    r.lines[0]
        .split_whitespace()
        .nth(1)
        .unwrap_or("")
        .to_string()
}

/// The queue id from `250 2.0.0 Ok: queued as ID` / `… delivered as ID`.
fn reply_id(r: &Reply) -> String {
    r.lines[0]
        .split_whitespace()
        .last()
        .expect("reply has text")
        .to_string()
}

fn queue_files(m: &Mailchute) -> Vec<PathBuf> {
    files_below(&m.path("data/spool/queue"))
}

/// Waits until `spool/queue/` is empty; panics with the log if it is not within `timeout`.
fn wait_queue_empty(m: &Mailchute, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let left = queue_files(m);
        if left.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "still in spool/queue after {timeout:?}: {left:?}\n--- log ---\n{}",
            m.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Polls `path` until it exists.
fn wait_file(path: &Path, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if path.exists() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    path.exists()
}

fn dir_is_empty(dir: &Path) -> bool {
    fs::read_dir(dir)
        .map(|mut r| r.next().is_none())
        .unwrap_or(true)
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .map(|r| {
            r.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// The second hop of a relay test: an LMTP `sync` listener delivering to `./Maildir`.
fn lmtp_maildir_config(port: u16) -> String {
    sync_config(port, "", MAILDIR_SINK).replace("protocol = \"smtp\"\n", "protocol = \"lmtp\"\n")
}

/// A process we started (smtp-sink, a mailchute with extra environment), stopped by pid.
struct Proc {
    child: Child,
    /// Where its output goes, for failure messages.
    log: PathBuf,
    dir: tempfile::TempDir,
}

impl Proc {
    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        terminate(&mut self.child, Duration::from_secs(10));
    }
}

/// Postfix's `smtp-sink` on 127.0.0.1:`port` with `opts`, ready (banner seen).
fn smtp_sink(port: u16, opts: &[&str]) -> Proc {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("smtp-sink.log");
    let out = fs::File::create(&log).expect("create log");
    let child = Command::new("smtp-sink")
        .args(["-u", "nobody"])
        .args(opts)
        .arg(format!("127.0.0.1:{port}"))
        .arg("10")
        .stdin(Stdio::null())
        .stdout(out.try_clone().expect("dup"))
        .stderr(out)
        .spawn()
        .expect("run smtp-sink (Postfix)");
    let p = Proc { child, log, dir };
    if let Err(e) = wait_for_banner(
        &format!("127.0.0.1:{port}"),
        false,
        Instant::now() + READY_TIMEOUT,
    ) {
        panic!("smtp-sink not ready: {e}\n{}", p.log());
    }
    p
}

/// `mailchute serve` with extra environment (secrets named by `*_env` keys), ready.
fn mailchute_with_env(config: &str, port: u16, env: &[(&str, &str)]) -> Proc {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("mailchute.toml");
    fs::write(&cfg, config).expect("write config");
    let log = dir.path().join("mailchute.log");
    let out = fs::File::create(&log).expect("create log");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mailchute"));
    cmd.arg("serve")
        .arg("-c")
        .arg(&cfg)
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(out.try_clone().expect("dup"))
        .stderr(out);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd.spawn().expect("spawn mailchute");
    let p = Proc { child, log, dir };
    if let Err(e) = wait_for_banner(
        &format!("127.0.0.1:{port}"),
        false,
        Instant::now() + READY_TIMEOUT,
    ) {
        panic!("mailchute not ready: {e}\n{}", p.log());
    }
    p
}

/// A TCP server that accepts connections and never says anything (an upstream that hangs
/// before its greeting). Stops accepting when dropped.
struct SilentServer {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SilentServer {
    fn start() -> SilentServer {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = l.local_addr().expect("addr").port();
        l.set_nonblocking(true).expect("nonblocking");
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut held = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((s, _)) => held.push(s),
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        SilentServer {
            port,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for SilentServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A tmpfs mounted for the test, unmounted when dropped.
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Result<Tmpfs, String> {
        fs::create_dir_all(dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .map_err(|e| format!("run mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "mount -t tmpfs on {} failed ({}): {}",
                dir.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Tmpfs {
            dir: dir.to_path_buf(),
        })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.dir)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !ok {
            // Something still holds it open: detach it so the temp dir can go.
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
    }
}

/// Mounts a tmpfs or explains why this test cannot run here.
fn tmpfs_or_skip(dir: &Path, size: &str, test: &str) -> Option<Tmpfs> {
    match Tmpfs::mount(dir, size) {
        Ok(t) => Some(t),
        Err(e) => {
            eprintln!("{test}: skipped, cannot mount a tmpfs (needs root / CAP_SYS_ADMIN): {e}");
            None
        }
    }
}

/// Fills the filesystem holding `dir` with a file `dir/filler` until a write fails.
fn fill_up(dir: &Path) {
    use std::io::Write;
    let mut f = fs::File::create(dir.join("filler")).expect("create filler");
    let chunk = vec![b'x'; 64 * 1024];
    while f.write_all(&chunk).is_ok() {}
    let _ = f.flush();
}

/// A message of about `size` bytes: headers and 76-character body lines.
fn big_message(subject: &str, size: usize) -> Vec<u8> {
    let line = format!("{}\r\n", "0123456789".repeat(7) + "abcdef");
    let body = line.repeat(size / line.len() + 1);
    message(subject, &body)
}

/// What Python's `email` package reads in a DSN: top-level headers and, for the
/// message/delivery-status part, its header blocks.
const PARSE_DSN: &str = r#"
import email, json, sys
m = email.message_from_bytes(open(sys.argv[1], "rb").read())
out = {
    "content_type": m.get_content_type(),
    "report_type": m.get_param("report-type"),
    "from": m.get("From"),
    "to": m.get("To"),
    "parts": [],
    "status_blocks": [],
}
for part in m.walk():
    out["parts"].append(part.get_content_type())
    if part.get_content_type() == "message/delivery-status":
        for block in part.get_payload():
            out["status_blocks"].append({k: str(v) for k, v in block.items()})
print(json.dumps(out))
"#;

fn parse_dsn(raw: &[u8]) -> serde_json::Value {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("dsn.eml");
    fs::write(&file, raw).expect("write dsn");
    let out = python_ok(PARSE_DSN, &[file.to_str().expect("utf-8 path")]);
    serde_json::from_slice(&out).expect("parser prints JSON")
}

/// The per-recipient block of a parsed DSN for `rcpt`.
fn recipient_block<'a>(dsn: &'a serde_json::Value, rcpt: &str) -> &'a serde_json::Value {
    dsn["status_blocks"]
        .as_array()
        .expect("status blocks")
        .iter()
        .find(|b| {
            b["Final-Recipient"]
                .as_str()
                .is_some_and(|v| v.ends_with(rcpt))
        })
        .unwrap_or_else(|| panic!("no Final-Recipient for {rcpt} in {dsn:#}"))
}

// ---------------------------------------------------------------------------------------
// 1. sync fan-out, partial success
// ---------------------------------------------------------------------------------------

/// One sink takes the message, the other is down: 250 (a 4xx would make the client resend
/// to the sink that has it), the spool keeps it for the other, which gets it exactly once.
#[test]
fn sync_fan_out_partial_success_is_250_and_spooled_for_the_rest() {
    let relay_port = free_port();
    let port = free_port();
    let cfg = config(&format!(
        "{}[queue]\nbackoff_initial = \"1s\"\nbackoff_max = \"2s\"\n\n{}{}\
         [sink.relay]\ntype = \"lmtp\"\naddress = \"127.0.0.1:{relay_port}\"\n",
        listener(port, "smtp", "sync", ""),
        route("all", &["*"], &["box", "relay"]),
        maildir_sink("box", "./Maildir"),
    ));
    let a = Mailchute::start(&cfg);
    let msg = message("fan-out", "Half delivered at once, the rest later.\r\n");
    let r = send(port, "from@client.test", &["rcpt@test"], &msg);
    assert_eq!(
        r.code,
        250,
        "partial success must be 250: {r:?}\n{}",
        a.log()
    );
    assert_eq!(
        maildir_count(&a.path("Maildir")),
        1,
        "the maildir sink has its copy before the 250"
    );
    let queued = queue_files(&a);
    assert!(
        queued
            .iter()
            .any(|p| p.extension().is_some_and(|e| e == "eml"))
            && queued
                .iter()
                .any(|p| p.extension().is_some_and(|e| e == "json")),
        "the deferred part is in the durable spool: {queued:?}"
    );

    let b = Mailchute::start(&lmtp_maildir_config(relay_port));
    let n = wait_maildir_count(&b.path("Maildir"), 1, Duration::from_secs(30));
    assert_eq!(n, 1, "relay never delivered; log:\n{}", a.log());
    // A few more retry periods: neither side may get a second copy.
    std::thread::sleep(Duration::from_secs(4));
    let relayed = read_maildir(&b.path("Maildir"));
    assert_eq!(relayed.len(), 1, "relayed more than once");
    let (_, rest) = split_received(&relayed[0]);
    assert_eq!(
        String::from_utf8_lossy(split_received(rest).1),
        String::from_utf8_lossy(&crlf_to_lf(&msg)),
        "two Received headers, then the message"
    );
    let local = read_maildir(&a.path("Maildir"));
    assert_eq!(local.len(), 1, "the maildir got a duplicate from a retry");
    wait_queue_empty(&a, Duration::from_secs(10));
}

// ---------------------------------------------------------------------------------------
// 2. sync: all deferred → 451, all rejected → 550
// ---------------------------------------------------------------------------------------

#[test]
fn sync_exec_outcomes_map_to_451_and_550() {
    let port = free_port();
    let cfg = config(&format!(
        "{}{}{}{}{}{}{}",
        listener(port, "smtp", "sync", ""),
        route("tmp", &["@tmp.test"], &["tempfail"]),
        route("bad", &["@bad.test"], &["nouser"]),
        route("policy", &["@policy.test"], &["policy"]),
        exec_sink("tempfail", "cat >/dev/null; exit 75", &[]),
        exec_sink("nouser", "cat >/dev/null; exit 67", &[]),
        exec_sink(
            "policy",
            "cat >/dev/null; echo '5.7.1 go away'; exit 1",
            &[]
        ),
    ));
    let m = Mailchute::start(&cfg);
    let msg = message("exec-outcomes", "Nobody takes this.\r\n");

    let r = send(port, "from@client.test", &["x@tmp.test"], &msg);
    assert_eq!(r.code, 451, "EX_TEMPFAIL: {r:?}");
    assert!(status(&r).starts_with("4."), "enhanced code: {r:?}");
    assert_eq!(status(&r), "4.3.0", "EX_TEMPFAIL's status: {r:?}");

    let r = send(port, "from@client.test", &["x@bad.test"], &msg);
    assert_eq!(r.code, 550, "EX_NOUSER: {r:?}");
    assert_eq!(status(&r), "5.1.1", "EX_NOUSER: {r:?}");

    let r = send(port, "from@client.test", &["x@policy.test"], &msg);
    assert_eq!(r.code, 554, "leading RFC 3463 line, after DATA: {r:?}");
    assert_eq!(status(&r), "5.7.1", "leading RFC 3463 line: {r:?}");
    assert!(r.text().contains("go away"), "the command's text: {r:?}");

    // The client was told (retry / bounce): the server keeps nothing.
    assert!(
        queue_files(&m).is_empty(),
        "spool/queue after answered failures: {:?}",
        queue_files(&m)
    );
    assert!(
        files_below(&m.path("data/spool/tmp")).is_empty(),
        "spool/tmp: {:?}",
        files_below(&m.path("data/spool/tmp"))
    );
}

// ---------------------------------------------------------------------------------------
// 3. LMTP: one reply per recipient
// ---------------------------------------------------------------------------------------

#[test]
fn lmtp_sync_answers_each_recipient() {
    let port = free_port();
    let cfg = config(&format!(
        "{}{}{}{}{}{}{}",
        listener(port, "lmtp", "sync", ""),
        route("ok", &["@ok.test"], &["box"]),
        route("tmp", &["@tmp.test"], &["tempfail"]),
        route("bad", &["@bad.test"], &["nouser"]),
        maildir_sink("box", "./Maildir"),
        exec_sink("tempfail", "cat >/dev/null; exit 75", &[]),
        exec_sink("nouser", "cat >/dev/null; exit 67", &[]),
    ));
    let mut m = Mailchute::start(&cfg);
    let msg = message("lmtp-per-rcpt", "Three recipients, three fates.\r\n");

    let mut c = RawSmtp::connect(port);
    c.expect("LHLO client.test", 250);
    c.expect("MAIL FROM:<from@client.test>", 250);
    for rcpt in ["a@ok.test", "b@tmp.test", "c@bad.test"] {
        c.expect(&format!("RCPT TO:<{rcpt}>"), 250);
    }
    c.expect("DATA", 354);
    c.send(&dot_stuff(&msg));
    let replies: Vec<Reply> = (0..3).map(|_| c.read_reply()).collect();
    c.quit();
    let codes: Vec<u16> = replies.iter().map(|r| r.code).collect();
    assert_eq!(codes, [250, 451, 550], "replies in RCPT order: {replies:?}");
    assert_eq!(status(&replies[2]), "5.1.1", "{replies:?}");

    let stored = read_maildir(&m.path("Maildir"));
    assert_eq!(stored.len(), 1, "a@ok.test's copy");
    assert_stored(&stored[0], &crlf_to_lf(&msg));
    // b will be resent by the client, c was refused to it: nothing kept for either.
    assert!(
        queue_files(&m).is_empty(),
        "spool/queue: {:?}",
        queue_files(&m)
    );
    assert!(
        files_below(&m.path("data/dead")).is_empty(),
        "dead/: {:?}",
        names(&m.path("data/dead"))
    );
    // The transaction line carries every recipient's reply, not only the first.
    m.stop();
    let tx = m
        .log_lines()
        .into_iter()
        .find(|l| l["event"] == "transaction")
        .unwrap_or_else(|| panic!("no transaction line:\n{}", m.log()));
    let reply = tx["reply"].as_str().unwrap_or_default();
    for part in [
        "<a@ok.test> 250",
        "<b@tmp.test> 451",
        "<c@bad.test> 550 5.1.1",
    ] {
        assert!(reply.contains(part), "{part:?} missing in {reply:?}");
    }
}

/// A repeated RCPT is one recipient: delivered once, and after the data it gets its
/// address's real reply (here a sink that fails for now: 451, never "delivered").
#[test]
fn lmtp_sync_repeated_rcpt_gets_its_real_outcome() {
    let port = free_port();
    let cfg = config(&format!(
        "{}{}{}{}{}",
        listener(port, "lmtp", "sync", ""),
        route("ok", &["@ok.test"], &["box"]),
        route("tmp", &["@tmp.test"], &["broken"]),
        maildir_sink("box", "./Maildir"),
        // Cannot create a directory below a device: a temporary failure.
        maildir_sink("broken", "/dev/null/Maildir"),
    ));
    let m = Mailchute::start(&cfg);
    let msg = message("lmtp-repeated-rcpt", "Two addresses, each given twice.\r\n");

    let mut c = RawSmtp::connect(port);
    c.expect("LHLO client.test", 250);
    c.expect("MAIL FROM:<from@client.test>", 250);
    let rcpts = ["d@tmp.test", "e@ok.test", "d@tmp.test", "e@ok.test"];
    for rcpt in rcpts {
        c.expect(&format!("RCPT TO:<{rcpt}>"), 250);
    }
    c.expect("DATA", 354);
    c.send(&dot_stuff(&msg));
    let replies: Vec<Reply> = rcpts.iter().map(|_| c.read_reply()).collect();
    c.quit();
    let codes: Vec<u16> = replies.iter().map(|r| r.code).collect();
    assert_eq!(
        codes,
        [451, 250, 451, 250],
        "replies in RCPT order: {replies:?}\n--- log ---\n{}",
        m.log()
    );

    let stored = read_maildir(&m.path("Maildir"));
    assert_eq!(stored.len(), 1, "e@ok.test's one copy");
    assert_stored(&stored[0], &crlf_to_lf(&msg));
    // The client was told to retry d: nothing kept for it.
    assert!(
        queue_files(&m).is_empty(),
        "spool/queue: {:?}",
        queue_files(&m)
    );
}

// ---------------------------------------------------------------------------------------
// 4. DSN end to end
// ---------------------------------------------------------------------------------------

/// A queued listener with DSNs on; `@bad.test` refuses everything (EX_NOUSER), mail to
/// `@sender.test` goes to `./S` and `record` notes each envelope sender in `senders`.
fn dsn_config(port: u16, senders: &Path, queue: &str, reject_sink: &str) -> String {
    config(&format!(
        "{}{queue}{}{}{}{}{reject_sink}",
        listener(port, "smtp", "queued", "dsn = true"),
        route("bounce", &["@bad.test"], &["reject"]),
        route("senders", &["@sender.test"], &["S", "record"]),
        maildir_sink("S", "./S"),
        exec_sink(
            "record",
            &format!(
                "printf '<%s>\\n' \"$0\" >> {}; cat >/dev/null",
                senders.display()
            ),
            &["{sender}"]
        ),
    ))
}

#[test]
fn queued_rejection_sends_a_dsn_to_the_sender() {
    let port = free_port();
    let out = tempfile::tempdir().unwrap();
    let senders = out.path().join("senders.txt");
    let m = Mailchute::start(&dsn_config(
        port,
        &senders,
        "",
        &exec_sink("reject", "cat >/dev/null; exit 67", &[]),
    ));
    let msg = message("bounce-me", "To a mailbox that does not exist.\r\n");
    let r = send(port, "alice@sender.test", &["x@bad.test"], &msg);
    assert_eq!(r.code, 250, "queued: {r:?}");
    let id = reply_id(&r);

    let n = wait_maildir_count(&m.path("S"), 1, Duration::from_secs(30));
    assert_eq!(n, 1, "no DSN reached the sender; log:\n{}", m.log());
    let dsns = read_maildir(&m.path("S"));
    let dsn = parse_dsn(&dsns[0]);
    assert_eq!(dsn["content_type"], "multipart/report", "{dsn:#}");
    assert_eq!(dsn["report_type"], "delivery-status", "{dsn:#}");
    assert!(
        dsn["parts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p == "message/delivery-status"),
        "{dsn:#}"
    );
    assert_eq!(dsn["from"], "MAILER-DAEMON@mx.test (Mail Delivery System)");
    assert!(
        dsn["to"]
            .as_str()
            .unwrap_or("")
            .contains("alice@sender.test"),
        "{dsn:#}"
    );
    let block = recipient_block(&dsn, "x@bad.test");
    assert_eq!(block["Final-Recipient"], "rfc822; x@bad.test", "{dsn:#}");
    assert_eq!(block["Action"], "failed", "{dsn:#}");
    assert_eq!(block["Status"], "5.1.1", "{dsn:#}");
    // The DSN's own envelope sender is null (so it can never bounce back and forth).
    assert!(wait_file(&senders, Duration::from_secs(10)));
    assert_eq!(
        fs::read_to_string(&senders).unwrap(),
        "<>\n",
        "envelope sender(s) of what reached @sender.test"
    );

    // The sender knows: the original is neither queued nor dead-lettered.
    wait_queue_empty(&m, Duration::from_secs(10));
    let dead = m.path("data/dead");
    assert!(
        !dead.join(format!("{id}.eml")).exists(),
        "bounced original kept in dead/: {:?}",
        names(&dead)
    );
}

#[test]
fn null_sender_rejection_is_dead_lettered_without_dsn() {
    rejection_is_dead_lettered_without_dsn("");
}

/// A DSN that cannot be queued (no route leads to the sender) must not take the original
/// with it: the rejected message stays in dead/.
#[test]
fn rejection_whose_dsn_has_no_route_is_dead_lettered() {
    rejection_is_dead_lettered_without_dsn("someone@unrouted.test");
}

/// `[queue] dsn_sinks`: the bounce goes to those sinks whatever the sender's address, so a
/// sender no route covers hears of the rejection too.
#[test]
fn dsn_sinks_carry_bounces_to_unrouted_senders() {
    let port = free_port();
    let out = tempfile::tempdir().unwrap();
    let senders = out.path().join("senders.txt");
    let config = dsn_config(
        port,
        &senders,
        "",
        &exec_sink("reject", "cat >/dev/null; exit 67", &[]),
    )
    .replace(
        "[[listener]]",
        "[queue]\ndsn_sinks = [\"S\"]\n\n[[listener]]",
    );
    let m = Mailchute::start(&config);
    let msg = message("bounce-out", "To a mailbox that does not exist.\r\n");
    let r = send(port, "someone@unrouted.test", &["x@bad.test"], &msg);
    assert_eq!(r.code, 250, "queued: {r:?}");
    let n = wait_maildir_count(&m.path("S"), 1, Duration::from_secs(30));
    assert_eq!(n, 1, "no DSN in the dsn_sinks Maildir; log:\n{}", m.log());
    let dsn = parse_dsn(&read_maildir(&m.path("S"))[0]);
    assert!(
        dsn["to"]
            .as_str()
            .unwrap_or("")
            .contains("someone@unrouted.test"),
        "{dsn:#}"
    );
    assert_eq!(recipient_block(&dsn, "x@bad.test")["Status"], "5.1.1");
    wait_queue_empty(&m, Duration::from_secs(10));
}

fn rejection_is_dead_lettered_without_dsn(sender: &str) {
    let port = free_port();
    let out = tempfile::tempdir().unwrap();
    let senders = out.path().join("senders.txt");
    let m = Mailchute::start(&dsn_config(
        port,
        &senders,
        "",
        &exec_sink("reject", "cat >/dev/null; exit 67", &[]),
    ));
    let msg = message("bounce-of-bounce", "A bounce that bounces.\r\n");
    let r = send(port, sender, &["x@bad.test"], &msg);
    assert_eq!(r.code, 250, "queued: {r:?}");
    let id = reply_id(&r);

    let dead = m.path("data/dead");
    let (eml, json) = (
        dead.join(format!("{id}.eml")),
        dead.join(format!("{id}.json")),
    );
    assert!(
        wait_file(&json, Duration::from_secs(30)),
        "no dead letter {} (dead/: {:?}); log:\n{}",
        json.display(),
        names(&dead),
        m.log()
    );
    assert!(eml.exists(), "dead/{id}.eml");
    assert_stored(&fs::read(&eml).unwrap(), &msg);
    let sidecar: serde_json::Value = serde_json::from_slice(&fs::read(&json).unwrap()).unwrap();
    let reason = sidecar["dead_reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("x@bad.test") && reason.contains("5.1.1"),
        "dead letter reason names the recipient and status: {sidecar:#}"
    );
    wait_queue_empty(&m, Duration::from_secs(10));
    // No DSN (and nothing routed anywhere else).
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(maildir_count(&m.path("S")), 0, "a DSN to <>?");
    assert!(!senders.exists(), "something was delivered to @sender.test");
}

// ---------------------------------------------------------------------------------------
// 5. lifetime expiry with DSN
// ---------------------------------------------------------------------------------------

#[test]
fn expired_message_is_dead_lettered_and_the_sender_gets_4_4_7() {
    let port = free_port();
    let out = tempfile::tempdir().unwrap();
    let senders = out.path().join("senders.txt");
    let queue =
        "[queue]\nbackoff_initial = \"1s\"\nbackoff_max = \"1s\"\nmax_lifetime = \"3s\"\n\n";
    let reject = format!(
        "[sink.reject]\ntype = \"lmtp\"\naddress = \"127.0.0.1:{}\"\n",
        closed_port()
    );
    let m = Mailchute::start(&dsn_config(port, &senders, queue, &reject));
    let msg = message("expires", "The next hop never comes up.\r\n");
    let r = send(port, "alice@sender.test", &["x@bad.test"], &msg);
    assert_eq!(r.code, 250, "queued: {r:?}");
    let id = reply_id(&r);

    let dead = m.path("data/dead");
    let json = dead.join(format!("{id}.json"));
    assert!(
        wait_file(&json, Duration::from_secs(30)),
        "not dead-lettered (dead/: {:?}); log:\n{}",
        names(&dead),
        m.log()
    );
    assert!(dead.join(format!("{id}.eml")).exists(), "dead/{id}.eml");
    let sidecar: serde_json::Value = serde_json::from_slice(&fs::read(&json).unwrap()).unwrap();
    let reason = sidecar["dead_reason"].as_str().unwrap_or_default();
    assert!(reason.contains("expired"), "reason: {sidecar:#}");

    let n = wait_maildir_count(&m.path("S"), 1, Duration::from_secs(30));
    assert_eq!(n, 1, "no DSN; log:\n{}", m.log());
    let dsn = parse_dsn(&read_maildir(&m.path("S"))[0]);
    assert_eq!(dsn["report_type"], "delivery-status", "{dsn:#}");
    let block = recipient_block(&dsn, "x@bad.test");
    assert_eq!(block["Action"], "failed", "{dsn:#}");
    assert_eq!(block["Status"], "4.4.7", "{dsn:#}");
    wait_queue_empty(&m, Duration::from_secs(10));
}

// ---------------------------------------------------------------------------------------
// 6. relay failures through the whole server
// ---------------------------------------------------------------------------------------

fn relay_config(port: u16, sink_extra: &str) -> String {
    config(&format!(
        "{}{}[sink.up]\ntype = \"smtp\"\n{sink_extra}\n",
        listener(port, "smtp", "sync", ""),
        route("all", &["*"], &["up"]),
    ))
}

#[test]
fn relay_rcpt_5xx_is_550_with_the_upstream_code() {
    let up_port = free_port();
    let _up = smtp_sink(
        up_port,
        &["-f", "RCPT", "-B", "550 5.1.1 upstream: no such user"],
    );
    let port = free_port();
    let m = Mailchute::start(&relay_config(
        port,
        &format!("address = \"127.0.0.1:{up_port}\""),
    ));
    let r = send(
        port,
        "from@client.test",
        &["nobody@far.test"],
        &message("relay-5xx", "x\r\n"),
    );
    assert_eq!(r.code, 550, "{r:?}\n{}", m.log());
    assert_eq!(status(&r), "5.1.1", "the upstream's enhanced code: {r:?}");
    assert!(queue_files(&m).is_empty(), "{:?}", queue_files(&m));
}

#[test]
fn relay_rcpt_4xx_is_451() {
    let up_port = free_port();
    let _up = smtp_sink(
        up_port,
        &["-r", "RCPT", "-b", "450 4.2.1 upstream: mailbox busy"],
    );
    let port = free_port();
    let m = Mailchute::start(&relay_config(
        port,
        &format!("address = \"127.0.0.1:{up_port}\""),
    ));
    let r = send(
        port,
        "from@client.test",
        &["busy@far.test"],
        &message("relay-4xx", "x\r\n"),
    );
    assert_eq!(r.code, 451, "{r:?}\n{}", m.log());
    assert_eq!(status(&r), "4.2.1", "the upstream's enhanced code: {r:?}");
    // The client retries; nothing of ours to keep.
    assert!(queue_files(&m).is_empty(), "{:?}", queue_files(&m));
}

/// `username` + `password_env` against an upstream that refuses the credentials (smtp-sink
/// answering AUTH with 535), and against one that offers no AUTH at all (a mailchute).
#[test]
fn relay_auth_refused_or_missing_is_451() {
    const PASSWORD_VAR: &str = "MAILCHUTE_TEST_RELAY_PASSWORD";
    let creds = format!("username = \"relayuser\"\npassword_env = \"{PASSWORD_VAR}\"\n");

    let refusing_port = free_port();
    let _refusing = smtp_sink(
        refusing_port,
        &[
            "-f",
            "AUTH",
            "-B",
            "535 5.7.8 Authentication credentials invalid",
        ],
    );
    let no_auth_port = free_port();
    let no_auth = Mailchute::start(&sync_config(no_auth_port, "", MAILDIR_SINK));

    for (up_port, what) in [
        (refusing_port, "upstream refusing AUTH"),
        (no_auth_port, "upstream without AUTH"),
    ] {
        let port = free_port();
        let cfg = relay_config(port, &format!("address = \"127.0.0.1:{up_port}\"\n{creds}"));
        let m = mailchute_with_env(&cfg, port, &[(PASSWORD_VAR, "s3cret")]);
        let r = send(
            port,
            "from@client.test",
            &["someone@far.test"],
            &message("relay-auth", "x\r\n"),
        );
        assert_eq!(r.code, 451, "{what}: {r:?}\n{}", m.log());
        assert!(status(&r).starts_with("4.7."), "{what}: {r:?}");
        assert!(
            r.text().contains("AUTH"),
            "{what}: the reply says what went wrong: {r:?}"
        );
        assert!(
            !m.log().contains("s3cret"),
            "{what}: the password shows in the log"
        );
        // 451: the client keeps it; we keep nothing, and nothing went anywhere.
        assert!(files_below(&m.dir.path().join("data/spool/queue")).is_empty());
    }
    assert_eq!(maildir_count(&no_auth.path("Maildir")), 0);
}

#[test]
fn relay_upstream_without_greeting_times_out_with_451_4_4_2() {
    let silent = SilentServer::start();
    let port = free_port();
    let m = Mailchute::start(&relay_config(
        port,
        &format!("address = \"127.0.0.1:{}\"\ntimeout = \"2s\"", silent.port),
    ));
    let started = Instant::now();
    let r = send(
        port,
        "from@client.test",
        &["someone@far.test"],
        &message("relay-silent", "x\r\n"),
    );
    let took = started.elapsed();
    assert_eq!(r.code, 451, "{r:?}\n{}", m.log());
    assert_eq!(status(&r), "4.4.2", "{r:?}");
    assert!(
        took < Duration::from_secs(15),
        "the relay timeout is 2s, the answer took {took:?}"
    );
    assert!(queue_files(&m).is_empty(), "{:?}", queue_files(&m));
}

/// XFORWARD PROTO is what our client spoke: ESMTP after EHLO, SMTP after HELO (smtp-sink
/// advertises XFORWARD and logs the commands it gets with -v).
#[test]
fn relay_xforward_proto_is_what_the_client_spoke() {
    let up_port = free_port();
    let up = smtp_sink(up_port, &["-v"]);
    let port = free_port();
    let m = Mailchute::start(&relay_config(
        port,
        &format!("address = \"127.0.0.1:{up_port}\""),
    ));
    let msg = message("relay-proto", "x\r\n");
    let r = send(port, "from@client.test", &["someone@far.test"], &msg);
    assert_eq!(r.code, 250, "{r:?}\n{}", m.log());
    let mut c = RawSmtp::connect(port);
    c.expect("HELO client.test", 250);
    let r = c.data_raw("from@client.test", &["someone@far.test"], &dot_stuff(&msg));
    assert_eq!(r.code, 250, "{r:?}\n{}", m.log());
    c.quit();
    let log = up.log();
    let protos: Vec<&str> = log
        .lines()
        .filter_map(|l| l.split(" PROTO=").nth(1))
        .filter_map(|rest| rest.split_whitespace().next())
        .collect();
    assert_eq!(protos, ["ESMTP", "SMTP"], "{log}");
}

/// BODY=8BITMIME to an upstream without 8BITMIME (smtp-sink -8): 8-bit content is refused
/// for good (550 5.6.3), a message that is 7-bit after all goes without BODY=.
#[test]
fn relay_8bit_content_to_upstream_without_8bitmime() {
    let up_port = free_port();
    let up = smtp_sink(up_port, &["-8", "-v"]);
    let port = free_port();
    let m = Mailchute::start(&relay_config(
        port,
        &format!("address = \"127.0.0.1:{up_port}\""),
    ));
    let send_8bit = |body: &str| {
        let mut c = RawSmtp::connect(port);
        c.ehlo("client.test");
        c.expect("MAIL FROM:<from@client.test> BODY=8BITMIME", 250);
        c.expect("RCPT TO:<someone@far.test>", 250);
        c.expect("DATA", 354);
        c.send(&dot_stuff(&message("relay-8bit", body)));
        let r = c.read_reply();
        c.quit();
        r
    };
    let r = send_8bit("caf\u{e9}\r\n");
    // Content the path cannot carry: 554, the error model's reply for X.6.x.
    assert_eq!(r.code, 554, "{r:?}\n{}", m.log());
    assert_eq!(status(&r), "5.6.3", "{r:?}");
    assert!(!up.log().contains("MAIL FROM"), "{}", up.log());

    let r = send_8bit("plain\r\n");
    assert_eq!(r.code, 250, "{r:?}\n{}", m.log());
    let log = up.log();
    let mail: Vec<&str> = log.lines().filter(|l| l.contains("MAIL FROM")).collect();
    assert_eq!(mail.len(), 1, "{log}");
    assert!(!mail[0].contains("BODY="), "{log}");
    assert!(queue_files(&m).is_empty(), "{:?}", queue_files(&m));
}

// ---------------------------------------------------------------------------------------
// 7. disk full
// ---------------------------------------------------------------------------------------

/// ENOSPC in a maildir sink is temporary (451 4.3.1), leaves no partial file, and the
/// server goes on accepting what fits.
#[test]
fn maildir_on_full_disk_is_451_4_3_1_and_leaves_no_partial_file() {
    let tmp = tempfile::tempdir().unwrap();
    let mnt = tmp.path().join("Maildir");
    let Some(_fs) = tmpfs_or_skip(&mnt, "2m", "maildir_on_full_disk") else {
        return;
    };
    let port = free_port();
    let m = Mailchute::start_in(
        tmp.path(),
        &sync_config(port, "", "type = \"maildir\"\npath = \"./Maildir\"\n"),
    );
    let r = send(
        port,
        "from@client.test",
        &["rcpt@test"],
        &big_message("too-big-for-disk", 3 * 1024 * 1024),
    );
    assert_eq!(r.code, 451, "{r:?}\n{}", m.log());
    assert_eq!(status(&r), "4.3.1", "ENOSPC: {r:?}");
    for sub in ["tmp", "new", "cur"] {
        assert!(
            dir_is_empty(&mnt.join(sub)),
            "Maildir/{sub} after a failed write: {:?}",
            names(&mnt.join(sub))
        );
    }
    assert!(queue_files(&m).is_empty(), "{:?}", queue_files(&m));

    let small = message("fits", "Small enough.\r\n");
    let r = send(port, "from@client.test", &["rcpt@test"], &small);
    assert_eq!(r.code, 250, "after a disk-full error: {r:?}\n{}", m.log());
    let stored = read_maildir(&mnt);
    assert_eq!(stored.len(), 1);
    assert_stored(&stored[0], &crlf_to_lf(&small));
    drop(m);
}

/// A queued listener that cannot spool says 451 and leaves nothing half-written.
#[test]
fn queued_spool_on_full_disk_is_451_and_leaves_nothing_in_tmp() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let Some(_fs) = tmpfs_or_skip(&data, "2m", "queued_spool_on_full_disk") else {
        return;
    };
    let port = free_port();
    let cfg = config(&format!(
        "{}{}{}",
        listener(port, "smtp", "queued", ""),
        route("all", &["*"], &["box"]),
        maildir_sink("box", "./Maildir"),
    ));
    let m = Mailchute::start_in(tmp.path(), &cfg);
    let spool_tmp = data.join("spool/tmp");

    // Runs out of space while DATA streams in.
    let r = send(
        port,
        "from@client.test",
        &["rcpt@test"],
        &big_message("overflows-spool", 3 * 1024 * 1024),
    );
    assert_eq!(r.code, 451, "{r:?}\n{}", m.log());
    assert_eq!(
        status(&r),
        "4.3.1",
        "a full spool is \"mail system full\": {r:?}"
    );
    // The client learns that it is our problem, not where our spool is.
    assert!(!r.text().contains(&*data.to_string_lossy()), "{r:?}");
    assert!(
        files_below(&spool_tmp).is_empty(),
        "spool/tmp: {:?}",
        files_below(&spool_tmp)
    );
    assert!(queue_files(&m).is_empty(), "{:?}", queue_files(&m));

    // Already full when the message comes: a small one cannot be spooled either.
    fill_up(&data);
    let small = message("full-spool", "Small, but no room at all.\r\n");
    let r = send(port, "from@client.test", &["rcpt@test"], &small);
    assert_eq!(r.code, 451, "{r:?}\n{}", m.log());
    assert_eq!(
        status(&r),
        "4.3.1",
        "a full spool is \"mail system full\": {r:?}"
    );
    assert!(
        files_below(&spool_tmp).is_empty(),
        "spool/tmp: {:?}",
        files_below(&spool_tmp)
    );
    assert!(queue_files(&m).is_empty(), "{:?}", queue_files(&m));

    // Room again: accepted and delivered.
    fs::remove_file(data.join("filler")).unwrap();
    let r = send(port, "from@client.test", &["rcpt@test"], &small);
    assert_eq!(r.code, 250, "{r:?}\n{}", m.log());
    assert_eq!(
        wait_maildir_count(&m.path("Maildir"), 1, Duration::from_secs(30)),
        1
    );
    drop(m);
}

// ---------------------------------------------------------------------------------------
// 8. exec: stdin and argv templates
// ---------------------------------------------------------------------------------------

/// `{rcpt}` as a whole argument: one run with every recipient as an argument.
#[test]
fn exec_whole_rcpt_argument_runs_once_with_all_recipients() {
    let out = tempfile::tempdir().unwrap();
    let port = free_port();
    // $0 = output dir, $1 = sender, $2… = recipients.
    let script = "cat > \"$0/run-$$.eml\"; printf '%s\\n' \"$@\" > \"$0/run-$$.args\"";
    let cfg = config(&format!(
        "{}{}{}",
        listener(port, "smtp", "sync", ""),
        route("all", &["*"], &["run"]),
        exec_sink(
            "run",
            script,
            &[out.path().to_str().unwrap(), "{sender}", "{rcpt}"]
        ),
    ));
    let m = Mailchute::start(&cfg);
    let msg = message("exec-once", "Line one.\r\n.dot line\r\nLine three.\r\n");
    let r = send(
        port,
        "from@client.test",
        &["one@a.test", "two@b.test"],
        &msg,
    );
    assert_eq!(r.code, 250, "{r:?}\n{}", m.log());

    let files = names(out.path());
    let args: Vec<&String> = files.iter().filter(|f| f.ends_with(".args")).collect();
    assert_eq!(args.len(), 1, "runs: {files:?}");
    assert_eq!(
        fs::read_to_string(out.path().join(args[0])).unwrap(),
        "from@client.test\none@a.test\ntwo@b.test\n",
        "argv after the sender"
    );
    let eml = args[0].replace(".args", ".eml");
    assert_stored(&fs::read(out.path().join(eml)).unwrap(), &crlf_to_lf(&msg));
}

/// `{rcpt}` inside a longer argument: one run per recipient.
#[test]
fn exec_rcpt_inside_an_argument_runs_once_per_recipient() {
    let out = tempfile::tempdir().unwrap();
    let port = free_port();
    // No `${…}`: every argument is a template, and braces there are refused.
    let script = "cat > \"$0/$(printf '%s' \"$1\" | sed 's/^--to=//').eml\"";
    let cfg = config(&format!(
        "{}{}{}",
        listener(port, "smtp", "sync", ""),
        route("all", &["*"], &["run"]),
        exec_sink(
            "run",
            script,
            &[out.path().to_str().unwrap(), "--to={rcpt}"]
        ),
    ));
    let m = Mailchute::start(&cfg);
    let msg = message("exec-each", "For each of you.\r\n");
    let r = send(
        port,
        "from@client.test",
        &["one@a.test", "two@b.test"],
        &msg,
    );
    assert_eq!(r.code, 250, "{r:?}\n{}", m.log());

    assert_eq!(
        names(out.path()),
        ["one@a.test.eml", "two@b.test.eml"],
        "one run per recipient"
    );
    for f in ["one@a.test.eml", "two@b.test.eml"] {
        let stored = fs::read(out.path().join(f)).unwrap();
        assert!(!stored.contains(&b'\r'), "{f}: LF line endings");
        assert_stored(&stored, &crlf_to_lf(&msg));
    }
}

// ---------------------------------------------------------------------------------------
// More of the error model
// ---------------------------------------------------------------------------------------

/// One sink takes it, another refuses it for good: the client hears 250 (it must not
/// resend to the sink that has it) and, with no DSN on a loopback listener, the refusal
/// is kept in dead/ rather than forgotten.
#[test]
fn sync_fan_out_delivered_and_rejected_is_250_and_dead_lettered() {
    let port = free_port();
    // The spool handles the refusal after `backoff_initial` (the first retry time, even
    // though nothing is left to retry): keep that short.
    let cfg = config(&format!(
        "{}[queue]\nbackoff_initial = \"1s\"\n\n{}{}{}",
        listener(port, "smtp", "sync", ""),
        route("all", &["*"], &["box", "nouser"]),
        maildir_sink("box", "./Maildir"),
        exec_sink("nouser", "cat >/dev/null; exit 67", &[]),
    ));
    let m = Mailchute::start(&cfg);
    let msg = message("half-refused", "One sink says no.\r\n");
    let r = send(port, "from@client.test", &["rcpt@test"], &msg);
    assert_eq!(r.code, 250, "{r:?}\n{}", m.log());
    let id = reply_id(&r);
    assert_eq!(maildir_count(&m.path("Maildir")), 1);

    let json = m.path(&format!("data/dead/{id}.json"));
    assert!(
        wait_file(&json, Duration::from_secs(30)),
        "the refusal is not in dead/ (dead/: {:?}); log:\n{}",
        names(&m.path("data/dead")),
        m.log()
    );
    let sidecar: serde_json::Value = serde_json::from_slice(&fs::read(&json).unwrap()).unwrap();
    let reason = sidecar["dead_reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("nouser") && reason.contains("5.1.1"),
        "reason names the sink and status: {sidecar:#}"
    );
    wait_queue_empty(&m, Duration::from_secs(10));
    assert_eq!(
        read_maildir(&m.path("Maildir")).len(),
        1,
        "no second copy from the queue"
    );
}

/// The upstream refuses the message content at the final dot: 550 with its code.
#[test]
fn relay_data_5xx_is_550_with_the_upstream_code() {
    let up_port = free_port();
    let _up = smtp_sink(
        up_port,
        &["-f", ".", "-B", "554 5.7.1 upstream: content refused"],
    );
    let port = free_port();
    let m = Mailchute::start(&relay_config(
        port,
        &format!("address = \"127.0.0.1:{up_port}\""),
    ));
    let r = send(
        port,
        "from@client.test",
        &["someone@far.test"],
        &message("relay-data-5xx", "x\r\n"),
    );
    // The upstream's own 554 5.7.1, as its reply and status say.
    assert_eq!(r.code, 554, "{r:?}\n{}", m.log());
    assert_eq!(status(&r), "5.7.1", "{r:?}");
    assert!(queue_files(&m).is_empty(), "{:?}", queue_files(&m));
}

/// The upstream hangs up after the final dot without a reply: we cannot know whether it
/// took the message, so the client must retry (451), never 250.
#[test]
fn relay_connection_lost_after_dot_is_451() {
    let up_port = free_port();
    let _up = smtp_sink(up_port, &["-q", "."]);
    let port = free_port();
    let m = Mailchute::start(&relay_config(
        port,
        &format!("address = \"127.0.0.1:{up_port}\""),
    ));
    let r = send(
        port,
        "from@client.test",
        &["someone@far.test"],
        &message("relay-hangup", "x\r\n"),
    );
    assert_eq!(r.code, 451, "{r:?}\n{}", m.log());
    assert!(status(&r).starts_with("4."), "{r:?}");
    assert!(queue_files(&m).is_empty(), "{:?}", queue_files(&m));
}

/// A command that runs past its timeout is killed (its whole process group) and the
/// message is deferred, not bounced.
#[test]
fn exec_timeout_is_451_and_kills_the_command() {
    let out = tempfile::tempdir().unwrap();
    let marker = out.path().join("still-running");
    let port = free_port();
    // The background child would touch the marker if it survived the kill.
    let script = "cat >/dev/null; (sleep 4; touch \"$0\") & sleep 30";
    let cfg = config(&format!(
        "{}{}{}timeout = \"1s\"\n",
        listener(port, "smtp", "sync", ""),
        route("all", &["*"], &["slow"]),
        exec_sink("slow", script, &[marker.to_str().unwrap()]),
    ));
    let m = Mailchute::start(&cfg);
    let started = Instant::now();
    let r = send(
        port,
        "from@client.test",
        &["rcpt@test"],
        &message("exec-timeout", "x\r\n"),
    );
    let took = started.elapsed();
    assert_eq!(r.code, 451, "{r:?}\n{}", m.log());
    assert!(status(&r).starts_with("4."), "{r:?}");
    assert!(took < Duration::from_secs(10), "answered after {took:?}");
    std::thread::sleep(Duration::from_secs(5));
    assert!(
        !marker.exists(),
        "a child of the timed-out command kept running"
    );
    assert!(queue_files(&m).is_empty(), "{:?}", queue_files(&m));
}
