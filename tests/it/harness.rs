#![allow(dead_code)] // shared helpers: not every test binary build uses each one
//! Helpers shared by the integration tests: a running `mailchute serve`, the outside
//! clients (swaks, Python), readers that are not ours (Python's `mailbox`), a raw SMTP
//! socket for what no client library sends, and a self-signed certificate.

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use tempfile::TempDir;

/// How long a server may take to show its banner before the test gives up.
pub const READY_TIMEOUT: Duration = Duration::from_secs(15);

/// A port on 127.0.0.1 that was free a moment ago (the OS picked it).
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local_addr").port()
}

/// A port nobody listens on, for sinks that must stay unreachable.
pub fn closed_port() -> u16 {
    free_port()
}

/// Polls `addr` until it answers with a line starting `220 ` (SMTP/LMTP greeting), or
/// only until it accepts a connection when `tls` (the banner is inside the handshake).
pub fn wait_for_banner(addr: &str, tls: bool, deadline: Instant) -> Result<(), String> {
    let mut last = String::new();
    while Instant::now() < deadline {
        match TcpStream::connect(addr) {
            Ok(s) if tls => {
                drop(s);
                return Ok(());
            }
            Ok(s) => {
                s.set_read_timeout(Some(Duration::from_secs(2))).ok();
                let mut r = BufReader::new(s);
                let mut line = String::new();
                loop {
                    line.clear();
                    match r.read_line(&mut line) {
                        Ok(0) | Err(_) => break,
                        Ok(_) if line.starts_with("220 ") => {
                            let _ = r.get_mut().write_all(b"QUIT\r\n");
                            return Ok(());
                        }
                        Ok(_) if line.starts_with("220-") => continue,
                        Ok(_) => {
                            last = line.clone();
                            break;
                        }
                    }
                }
            }
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(format!("no `220 ` banner on {addr} (last: {last:?})"))
}

/// Sends SIGTERM, waits up to `grace`, then SIGKILLs. Returns once the child is reaped.
pub fn terminate(child: &mut Child, grace: Duration) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    // SAFETY: kill(2) on the pid of a child we spawned and have not reaped yet.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// A `mailchute serve -c FILE` process in its own directory. The config file is written as
/// `mailchute.toml` in that directory, so relative paths in it resolve there. Stderr (the
/// JSON log) is appended to `mailchute.log` there, across restarts.
pub struct Mailchute {
    /// Keeps the directory alive when this instance created it; `None` when the test owns it
    /// (restarts share one directory between two `Mailchute`s).
    _tmp: Option<TempDir>,
    /// The directory holding the config, the log and every relative path of the config.
    dir: PathBuf,
    /// `None` once stopped or killed.
    child: Option<Child>,
}

impl Mailchute {
    /// Starts mailchute on `config` in a fresh temp dir and waits for every TCP listener's banner.
    pub fn start(config: &str) -> Mailchute {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut m = Mailchute::start_in(tmp.path(), config);
        m._tmp = Some(tmp);
        m
    }

    /// Starts mailchute in `dir` (which the caller keeps), e.g. to restart on the same spool.
    pub fn start_in(dir: &Path, config: &str) -> Mailchute {
        let mut m = Mailchute::spawn_in(dir, config);
        m.wait_ready(config);
        m
    }

    /// Like [`Mailchute::start`], with `env` added to mailchute's environment (secrets
    /// that the config names by variable, e.g. `key_passphrase_env`).
    pub fn start_with_env(config: &str, env: &[(&str, &str)]) -> Mailchute {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut m = Mailchute::spawn_with_env(tmp.path(), config, env);
        m._tmp = Some(tmp);
        m.wait_ready(config);
        m
    }

    /// [`Mailchute::start_in`] with `env` added, in `dir` (which the caller keeps: files the
    /// config names, e.g. a `password_file`, can be put there first).
    pub fn start_with_env_in(dir: &Path, config: &str, env: &[(&str, &str)]) -> Mailchute {
        let mut m = Mailchute::spawn_with_env(dir, config, env);
        m.wait_ready(config);
        m
    }

    /// Starts mailchute without waiting for anything.
    pub fn spawn_in(dir: &Path, config: &str) -> Mailchute {
        Mailchute::spawn_with_env(dir, config, &[])
    }

    /// Like [`Mailchute::spawn_in`], with `env` added to mailchute's environment.
    pub fn spawn_with_env(dir: &Path, config: &str, env: &[(&str, &str)]) -> Mailchute {
        let config_path = dir.join("mailchute.toml");
        fs::write(&config_path, config).expect("write config");
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("mailchute.log"))
            .expect("open mailchute.log");
        let child = Command::new(env!("CARGO_BIN_EXE_mailchute"))
            .arg("serve")
            .arg("-c")
            .arg(&config_path)
            .current_dir(dir)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .spawn()
            .expect("spawn mailchute");
        Mailchute {
            _tmp: None,
            dir: dir.to_path_buf(),
            child: Some(child),
        }
    }

    fn wait_ready(&mut self, config: &str) {
        let deadline = Instant::now() + READY_TIMEOUT;
        let parsed: toml::Table = toml::from_str(config).expect("test config is TOML");
        let listeners = parsed
            .get("listener")
            .and_then(|l| l.as_array())
            .cloned()
            .unwrap_or_default();
        for l in listeners {
            let addr = l.get("address").and_then(|a| a.as_str()).unwrap_or("");
            if addr.starts_with("unix:") || addr.is_empty() {
                continue;
            }
            let tls = l.get("tls").and_then(|t| t.as_str()) == Some("implicit");
            loop {
                if let Some(Ok(Some(st))) = self.child.as_mut().map(|c| c.try_wait()) {
                    panic!(
                        "mailchute exited ({st}) before listening on {addr}\n--- log ---\n{}",
                        self.log()
                    );
                }
                let step = (Instant::now() + Duration::from_millis(300)).min(deadline);
                match wait_for_banner(addr, tls, step) {
                    Ok(()) => break,
                    Err(e) if Instant::now() >= deadline => {
                        panic!("mailchute not ready: {e}\n--- log ---\n{}", self.log())
                    }
                    Err(_) => {}
                }
            }
        }
    }

    /// The directory of the config file.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `rel` resolved against the config's directory.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Everything mailchute printed so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("mailchute.log")).unwrap_or_default()
    }

    /// The log lines that are JSON objects.
    pub fn log_lines(&self) -> Vec<serde_json::Value> {
        self.log()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// SIGTERM, then SIGKILL after 10 s.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            terminate(&mut c, Duration::from_secs(10));
        }
    }

    /// kill -9, no chance to clean up.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Mailchute {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The Python that has the test requirements (`MAILCHUTE_TEST_PYTHON`, set by scripts/test).
pub fn python_bin() -> String {
    std::env::var("MAILCHUTE_TEST_PYTHON").unwrap_or_else(|_| "python3".to_string())
}

/// Runs `python -c script args…`.
pub fn python(script: &str, args: &[&str]) -> Output {
    Command::new(python_bin())
        .arg("-c")
        .arg(script)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run python")
}

/// Like [`python`], panicking with stderr unless it exits 0; returns stdout.
pub fn python_ok(script: &str, args: &[&str]) -> Vec<u8> {
    let out = python(script, args);
    assert!(
        out.status.success(),
        "python failed ({}):\n{}\n--- stdout ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    out.stdout
}

/// moto's `moto_server` beside the test Python (the venv scripts/test fills), else PATH.
pub fn moto_server_bin() -> PathBuf {
    let python = PathBuf::from(python_bin());
    match python.parent() {
        Some(dir) if dir.join("moto_server").exists() => dir.join("moto_server"),
        _ => PathBuf::from("moto_server"),
    }
}

/// A private moto server on a free port (it checks no signatures). Its state lives in its
/// memory: a restart on the same port starts empty.
pub struct MotoServer {
    /// `None` while stopped.
    child: Option<Child>,
    port: u16,
    /// Python run in the server's process before it listens (see [`MotoServer::start_prepared`]).
    setup: Option<String>,
}

impl MotoServer {
    pub fn start() -> MotoServer {
        let port = free_port();
        MotoServer {
            child: Some(Self::spawn(port, None)),
            port,
            setup: None,
        }
    }

    /// moto with state made before it accepts its first connection (and again on each
    /// restart): `setup` is Python run in the server's process, e.g. verifying an SES
    /// identity, so a client retrying all the while never meets a server without it.
    pub fn start_prepared(setup: &str) -> MotoServer {
        let port = free_port();
        MotoServer {
            child: Some(Self::spawn(port, Some(setup))),
            port,
            setup: Some(setup.to_string()),
        }
    }

    /// Stops it; [`MotoServer::restart`] brings it back on the same port.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            terminate(&mut c, Duration::from_secs(5));
        }
    }

    pub fn restart(&mut self) {
        self.stop();
        self.child = Some(Self::spawn(self.port, self.setup.as_deref()));
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn spawn(port: u16, setup: Option<&str>) -> Child {
        let mut cmd = match setup {
            None => Command::new(moto_server_bin()),
            Some(setup) => {
                let mut c = Command::new(python_bin());
                c.arg("-c").arg(format!(
                    "{setup}\nimport sys\nfrom moto.server import main\nmain(sys.argv[1:])"
                ));
                c
            }
        };
        let mut child = cmd
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run {} ({e}): scripts/test installs moto[server]",
                    moto_server_bin().display()
                )
            });
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() >= deadline {
                terminate(&mut child, Duration::from_secs(5));
                panic!("moto_server not listening on {port}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        child
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Runs swaks with `args` (a `--timeout 20` is added).
pub fn swaks(args: &[&str]) -> Output {
    Command::new("swaks")
        .args(["--timeout", "20"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run swaks")
}

/// Runs swaks and panics with its transcript unless it exits 0.
pub fn swaks_ok(args: &[&str]) -> String {
    let out = swaks(args);
    let transcript = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "swaks {args:?} failed ({}):\n{transcript}",
        out.status
    );
    transcript
}

/// Writes `msg` (CRLF lines, ending in CRLF) where swaks can send it byte for byte, and
/// returns the `--data` argument. swaks appends "\r\n." itself, so the file leaves off the
/// final CRLF; it also dot-stuffs, turns literal `\n` and `%TOKENS%` into text and drops a
/// leading `From ` line, so test messages avoid those.
pub fn swaks_data(dir: &Path, name: &str, msg: &[u8]) -> String {
    let body = msg.strip_suffix(b"\r\n").unwrap_or(msg);
    let file = dir.join(name);
    fs::write(&file, body).expect("write swaks data");
    format!("@{}", file.display())
}

const READ_MAILBOXES: &str = r#"
import base64, json, mailbox, os, sys
kind = sys.argv[1]
out = []
for path in sys.argv[2:]:
    if not os.path.exists(path):
        out.append([])
        continue
    if kind == "maildir":
        mb = mailbox.Maildir(path, factory=None, create=False)
    elif kind == "mh":
        mb = mailbox.MH(path, factory=None, create=False)
    elif kind == "mbox":
        mb = mailbox.mbox(path, factory=None, create=False)
    else:
        raise SystemExit("unknown mailbox kind " + kind)
    keys = list(mb.keys())
    if kind == "maildir":
        keys.sort()  # file names; mbox and MH keys are already in file order
    out.append([base64.b64encode(mb.get_bytes(k)).decode() for k in keys])
print(json.dumps(out))
"#;

/// Every message in each mailbox (a missing path reads as empty), read by Python's `mailbox`.
pub fn read_mailboxes(kind: &str, paths: &[PathBuf]) -> Vec<Vec<Vec<u8>>> {
    let mut args = vec![kind.to_string()];
    args.extend(paths.iter().map(|p| p.display().to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = python_ok(READ_MAILBOXES, &args);
    let boxes: Vec<Vec<String>> = serde_json::from_slice(&out).expect("reader prints JSON");
    boxes
        .into_iter()
        .map(|msgs| {
            msgs.into_iter()
                .map(|b| {
                    base64::engine::general_purpose::STANDARD
                        .decode(b)
                        .expect("base64")
                })
                .collect()
        })
        .collect()
}

pub fn read_maildir(path: &Path) -> Vec<Vec<u8>> {
    read_mailboxes("maildir", &[path.to_path_buf()]).remove(0)
}

pub fn read_mh(path: &Path) -> Vec<Vec<u8>> {
    read_mailboxes("mh", &[path.to_path_buf()]).remove(0)
}

pub fn read_mbox(path: &Path) -> Vec<Vec<u8>> {
    read_mailboxes("mbox", &[path.to_path_buf()]).remove(0)
}

/// Polls a Maildir until it holds at least `n` messages (counting new/ and cur/).
pub fn wait_maildir_count(path: &Path, n: usize, timeout: Duration) -> usize {
    let deadline = Instant::now() + timeout;
    loop {
        let c = maildir_count(path);
        if c >= n || Instant::now() >= deadline {
            return c;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub fn maildir_count(path: &Path) -> usize {
    ["new", "cur"]
        .iter()
        .map(|d| fs::read_dir(path.join(d)).map(|r| r.count()).unwrap_or(0))
        .sum()
}

/// Every regular file below `dir`, recursively (empty if `dir` is missing).
pub fn files_below(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let p = e.path();
            match e.file_type() {
                Ok(t) if t.is_dir() => todo.push(p),
                Ok(t) if t.is_file() => out.push(p),
                _ => {}
            }
        }
    }
    out
}

/// Splits off the envelope a local sink prepends by default (`Return-Path: <sender>` and
/// `Delivered-To: rcpt`, in either line end): (sender, recipient) when there, and the rest.
pub fn split_envelope(stored: &[u8]) -> (Option<(String, String)>, &[u8]) {
    let line = |b: &[u8], name: &str| -> Option<(String, usize)> {
        let rest = b.strip_prefix(name.as_bytes())?;
        let nl = rest.iter().position(|&c| c == b'\n')?;
        let value = rest[..nl].strip_suffix(b"\r").unwrap_or(&rest[..nl]);
        Some((
            String::from_utf8_lossy(value).into_owned(),
            name.len() + nl + 1,
        ))
    };
    let Some((sender, n1)) = line(stored, "Return-Path: ") else {
        return (None, stored);
    };
    let Some((rcpt, n2)) = line(&stored[n1..], "Delivered-To: ") else {
        return (None, stored);
    };
    let sender = sender
        .trim_start_matches('<')
        .trim_end_matches('>')
        .to_string();
    (Some((sender, rcpt)), &stored[n1 + n2..])
}

/// Splits a stored message into its first header, if it is a `Received: from` line (with
/// its folded continuation lines), and the rest; an envelope block in front (see
/// [`split_envelope`]) is skipped. Panics if the message does not start so.
pub fn split_received(stored: &[u8]) -> (&[u8], &[u8]) {
    let stored = split_envelope(stored).1;
    assert!(
        stored.starts_with(b"Received: from "),
        "stored message does not start with our Received header:\n{}",
        String::from_utf8_lossy(&stored[..stored.len().min(500)])
    );
    let mut end = 0;
    loop {
        let nl = stored[end..]
            .iter()
            .position(|&b| b == b'\n')
            .map(|i| end + i + 1)
            .unwrap_or(stored.len());
        end = nl;
        match stored.get(end) {
            Some(b' ') | Some(b'\t') => continue,
            _ => break,
        }
    }
    (&stored[..end], &stored[end..])
}

/// CRLF → LF, every other byte (bare LF, lone CR) untouched: what a `line_endings = "lf"`
/// sink must store.
pub fn crlf_to_lf(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len());
    let mut i = 0;
    while i < data.len() {
        if data[i] == b'\r' && data.get(i + 1) == Some(&b'\n') {
            out.push(b'\n');
            i += 2;
        } else {
            out.push(data[i]);
            i += 1;
        }
    }
    out
}

/// Asserts `stored` is exactly our `Received:` header followed by `expected_rest`, with a
/// readable diff position on failure.
pub fn assert_stored(stored: &[u8], expected_rest: &[u8]) {
    let (received, rest) = split_received(stored);
    if rest != expected_rest {
        let at = rest
            .iter()
            .zip(expected_rest)
            .position(|(a, b)| a != b)
            .unwrap_or(rest.len().min(expected_rest.len()));
        let from = at.saturating_sub(60);
        panic!(
            "stored message differs after the Received header at byte {at} \
             (stored {} bytes, expected {} bytes)\nreceived: {:?}\nstored:   {:?}\nexpected: {:?}",
            rest.len(),
            expected_rest.len(),
            String::from_utf8_lossy(received),
            String::from_utf8_lossy(&rest[from..rest.len().min(at + 60)]),
            String::from_utf8_lossy(&expected_rest[from..expected_rest.len().min(at + 60)]),
        );
    }
}

/// A self-signed certificate for `localhost` / 127.0.0.1, made by openssl: (cert, key) PEM.
pub fn self_signed_cert(dir: &Path) -> (PathBuf, PathBuf) {
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    let out = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args(["-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (cert, key)
}

/// A mailchute config with one `sync` SMTP listener on `port` and one catch-all route to
/// the sink `box`. `listener_extra` and `sink` are TOML lines appended to those tables.
pub fn sync_config(port: u16, listener_extra: &str, sink: &str) -> String {
    format!(
        r#"[server]
hostname = "mx.test"
data_dir = "./data"

[[listener]]
name = "mx"
address = "127.0.0.1:{port}"
protocol = "smtp"
mode = "sync"
{listener_extra}

[[route]]
name = "all"
match = ["*"]
sinks = ["box"]

[sink.box]
{sink}
"#
    )
}

/// A default Maildir sink at `./Maildir`.
pub const MAILDIR_SINK: &str = "type = \"maildir\"\npath = \"./Maildir\"\n";

/// A test message with the given extra body, CRLF line endings, complete headers.
pub fn message(subject: &str, body: &str) -> Vec<u8> {
    format!(
        "From: Sender <from@client.test>\r\n\
         To: Rcpt <rcpt@test>\r\n\
         Subject: {subject}\r\n\
         Date: Sat, 22 Nov 2025 10:00:00 +0000\r\n\
         Message-ID: <{subject}@client.test>\r\n\
         \r\n\
         {body}"
    )
    .into_bytes()
}

/// Dot-stuffs `msg` for DATA and appends the terminating `.` line.
pub fn dot_stuff(msg: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(msg.len() + 16);
    let mut at_line_start = true;
    for &b in msg {
        if at_line_start && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        at_line_start = b == b'\n';
    }
    if !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

/// A bare SMTP client on a socket, for what no library sends (BDAT, bare LF, bad commands).
pub struct RawSmtp {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

/// One SMTP reply: the code and every line's text.
#[derive(Debug)]
pub struct Reply {
    pub code: u16,
    pub lines: Vec<String>,
}

impl Reply {
    pub fn text(&self) -> String {
        self.lines.join("\n")
    }
}

impl RawSmtp {
    /// Connects and reads the greeting, which must be 220.
    pub fn connect(port: u16) -> RawSmtp {
        let s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(60))).ok();
        let mut c = RawSmtp {
            reader: BufReader::new(s.try_clone().expect("clone socket")),
            writer: s,
        };
        let greeting = c.read_reply();
        assert_eq!(greeting.code, 220, "greeting: {greeting:?}");
        c
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).expect("write to server");
    }

    pub fn read_reply(&mut self) -> Reply {
        let mut lines = Vec::new();
        loop {
            let mut line = Vec::new();
            let n = self
                .reader
                .read_until(b'\n', &mut line)
                .expect("read reply");
            assert!(
                n > 0,
                "connection closed while waiting for a reply ({lines:?})"
            );
            let line = String::from_utf8_lossy(&line).trim_end().to_string();
            assert!(line.len() >= 3, "short reply line {line:?}");
            let code: u16 = line[..3].parse().expect("reply code");
            let last = line.as_bytes().get(3) != Some(&b'-');
            lines.push(line);
            if last {
                return Reply { code, lines };
            }
        }
    }

    /// Sends one command line (CRLF added) and returns its reply.
    pub fn cmd(&mut self, line: &str) -> Reply {
        self.send(format!("{line}\r\n").as_bytes());
        self.read_reply()
    }

    /// Sends a command and asserts the reply code.
    pub fn expect(&mut self, line: &str, code: u16) -> Reply {
        let r = self.cmd(line);
        assert_eq!(r.code, code, "{line:?} → {r:?}");
        r
    }

    /// EHLO, returning the advertised extensions (upper-cased keywords with parameters).
    pub fn ehlo(&mut self, name: &str) -> Vec<String> {
        let r = self.expect(&format!("EHLO {name}"), 250);
        r.lines
            .iter()
            .skip(1)
            .map(|l| l[4..].to_ascii_uppercase())
            .collect()
    }

    /// One whole DATA transaction with `msg` sent as is (the caller dot-stuffs), returning
    /// the reply to the final dot.
    pub fn data_raw(&mut self, from: &str, rcpts: &[&str], wire: &[u8]) -> Reply {
        self.expect(&format!("MAIL FROM:<{from}>"), 250);
        for r in rcpts {
            self.expect(&format!("RCPT TO:<{r}>"), 250);
        }
        self.expect("DATA", 354);
        self.send(wire);
        self.read_reply()
    }

    /// QUIT and read until the server closes, whatever it says (for sessions in an unknown state).
    pub fn finish(mut self) {
        let _ = self.writer.write_all(b"QUIT\r\n");
        self.reader
            .get_ref()
            .set_read_timeout(Some(Duration::from_secs(5)))
            .ok();
        let mut rest = Vec::new();
        let _ = self.reader.read_to_end(&mut rest);
    }

    /// Reads whatever is left until the server closes (after QUIT).
    pub fn quit(mut self) {
        let r = self.cmd("QUIT");
        assert_eq!(r.code, 221, "QUIT → {r:?}");
        let mut rest = Vec::new();
        let _ = self.reader.read_to_end(&mut rest);
    }
}
