//! The operator's surface of the real binary: `config example` / `config check` and their
//! errors, config discovery and env overrides, the embedded default, relative paths,
//! SIGHUP reload, the queue CLI, the transaction log line and `--log-file`, SIGTERM
//! mid-DATA, `--help`, the `sendmail` name.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::harness::*;

const BIN: &str = env!("CARGO_BIN_EXE_mailchute");

/// The file `/etc/...` that every command would read before falling back: tests of the
/// fallbacks mean nothing on a machine that has it.
const SYSTEM_CONFIG: &str = "/etc/mailchute/mailchute.toml";

/// `mailchute ARGS` in `cwd` with none of the test runner's `MAILCHUTE_*` variables, plus `env`.
fn mailchute_cmd(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args).current_dir(cwd).stdin(Stdio::null());
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("MAILCHUTE_") {
            cmd.env_remove(k);
        }
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

fn run(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    mailchute_cmd(cwd, args, env)
        .output()
        .expect("run mailchute")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs and asserts exit 0; returns stdout.
fn run_ok(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> String {
    let o = run(cwd, args, env);
    assert!(
        o.status.success(),
        "mailchute {args:?} failed ({}):\n--- stderr ---\n{}\n--- stdout ---\n{}",
        o.status,
        stderr(&o),
        stdout(&o)
    );
    stdout(&o)
}

/// Runs and asserts a non-zero exit; returns stderr.
fn run_fails(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> String {
    let o = run(cwd, args, env);
    assert!(
        !o.status.success(),
        "mailchute {args:?} should have failed:\n--- stdout ---\n{}\n--- stderr ---\n{}",
        stdout(&o),
        stderr(&o)
    );
    stderr(&o)
}

fn assert_contains(haystack: &str, needles: &[&str]) {
    for n in needles {
        assert!(haystack.contains(n), "{n:?} not in:\n{haystack}");
    }
}

/// A `mailchute serve` with its own cwd, args and env (what `harness::Mailchute` does not
/// vary). Stdout and stderr go to a log file outside the cwd, so the cwd shows only what
/// mailchute itself put there.
struct Serve {
    child: Option<Child>,
    log_dir: TempDir,
}

impl Serve {
    fn spawn(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Serve {
        let log_dir = tempfile::tempdir().expect("tempdir");
        let log = fs::File::create(log_dir.path().join("serve.log")).expect("create log");
        let mut full = vec!["serve"];
        full.extend_from_slice(args);
        let child = mailchute_cmd(cwd, &full, env)
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .spawn()
            .expect("spawn mailchute serve");
        Serve {
            child: Some(child),
            log_dir,
        }
    }

    /// Spawns and waits for the `220 ` banner on `port`.
    fn start(cwd: &Path, args: &[&str], env: &[(&str, &str)], port: u16) -> Serve {
        let mut s = Serve::spawn(cwd, args, env);
        s.wait_banner(port);
        s
    }

    fn wait_banner(&mut self, port: u16) {
        let addr = format!("127.0.0.1:{port}");
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(st) = self.try_status() {
                panic!(
                    "mailchute serve exited ({st}) before listening on {addr}\n--- log ---\n{}",
                    self.log()
                );
            }
            let step = (Instant::now() + Duration::from_millis(300)).min(deadline);
            match wait_for_banner(&addr, false, step) {
                Ok(()) => return,
                Err(e) if Instant::now() >= deadline => {
                    panic!("mailchute not ready: {e}\n--- log ---\n{}", self.log())
                }
                Err(_) => {}
            }
        }
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    fn signal(&self, sig: libc::c_int) {
        // SAFETY: kill(2) on the pid of a child we spawned and have not reaped yet.
        let rc = unsafe { libc::kill(self.pid() as libc::pid_t, sig) };
        assert_eq!(rc, 0, "kill({}, {sig})", self.pid());
    }

    fn try_status(&mut self) -> Option<ExitStatus> {
        self.child.as_mut()?.try_wait().expect("try_wait")
    }

    /// Waits for the process to exit on its own, panicking with the log after `timeout`.
    fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.try_status() {
                self.child = None;
                return st;
            }
            assert!(
                Instant::now() < deadline,
                "mailchute serve still running {timeout:?} later\n--- log ---\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log(&self) -> String {
        fs::read_to_string(self.log_dir.path().join("serve.log")).unwrap_or_default()
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            terminate(&mut c, Duration::from_secs(10));
        }
    }
}

/// Sends one message over a raw session; returns the reply to the final dot (asserted 250).
fn send(port: u16, rcpt: &str, msg: &[u8]) -> Reply {
    let mut c = RawSmtp::connect(port);
    c.ehlo("client.test");
    let r = c.data_raw("from@client.test", &[rcpt], &dot_stuff(msg));
    assert_eq!(r.code, 250, "{r:?}");
    c.quit();
    r
}

/// The first line of the greeting on a fresh connection.
fn banner(port: u16) -> String {
    let s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).ok();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(s), &mut line).expect("read banner");
    line
}

/// The ID in a `250 2.0.0 Ok: queued as ID` (or `delivered as ID`) reply.
fn reply_id(r: &Reply) -> String {
    let text = r.text();
    let at = text
        .rfind(" as ")
        .unwrap_or_else(|| panic!("no \"queued/delivered as ID\" in {text:?}"));
    text[at + " as ".len()..]
        .split_whitespace()
        .next()
        .expect("id after \" as \"")
        .to_string()
}

/// A config with one listener and a catch-all route to a Maildir at `./Maildir`;
/// `listener_extra` lines go into the listener table.
fn one_listener(address: &str, mode: &str, listener_extra: &str) -> String {
    format!(
        r#"[server]
hostname = "mx.test"
data_dir = "./data"

[[listener]]
name = "mx"
address = "{address}"
mode = "{mode}"
{listener_extra}

[[route]]
name = "main"
match = ["*"]
sinks = ["box"]

[sink.box]
type = "maildir"
path = "./Maildir"
"#
    )
}

/// Writes `text` as `name` in `dir` and returns its path as a string.
fn write_config(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    fs::write(&p, text).expect("write config");
    p.display().to_string()
}

/// 1-based line of the first line of `text` that contains `needle`.
fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("{needle:?} not in config"))
        + 1
}

// ---- 1. config example / config check ---------------------------------------------------

#[test]
fn config_example_passes_config_check() {
    let dir = tempfile::tempdir().unwrap();
    let example = run_ok(dir.path(), &["config", "example"], &[]);
    assert!(example.contains("[[listener]]") && example.contains("[[route]]"));
    let file = write_config(dir.path(), "example.toml", &example);
    let out = run_ok(dir.path(), &["config", "check", &file], &[]);
    assert_contains(
        &out,
        &[
            &format!("config:    {file}"),
            "listeners:",
            "  mx: 127.0.0.1:2525 smtp, queued",
            "  lmtp: 127.0.0.1:2424 lmtp, sync",
            "routes, in the order a recipient is matched:",
            "-> archive -> filters tag-subject -> local, postfix",
            "sinks:",
            "  postfix: smtp relay to 127.0.0.1:10025",
            "filters:",
            "  tag-subject: rewrite Subject",
        ],
    );
    // Routes print in precedence order: exact, @domain, /regex/, then *.
    let route_lines: Vec<&str> = out
        .lines()
        .skip_while(|l| !l.starts_with("routes"))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .collect();
    let firsts: Vec<&str> = route_lines
        .iter()
        .map(|l| l.split_whitespace().next().unwrap_or(""))
        .collect();
    assert_eq!(
        firsts,
        ["alice@example.org", "@example.com", "/^bounce-.*@/", "*"],
        "{out}"
    );
    assert!(
        route_lines[3].contains("rest") && route_lines[3].contains("local"),
        "{out}"
    );
    // The example's relative paths resolve against the file's directory.
    let data_dir = format!("data dir:  {}", dir.path().join("mailchute-data").display());
    assert_contains(&out, &[&data_dir]);
}

#[test]
fn config_check_names_file_line_key_and_expectation() {
    let dir = tempfile::tempdir().unwrap();
    let good = one_listener("127.0.0.1:2525", "sync", "max_message_size = \"5M\"");
    run_ok(
        dir.path(),
        &[
            "config",
            "check",
            &write_config(dir.path(), "good.toml", &good),
        ],
        &[],
    );

    let bad = good.replace("\"5M\"", "\"5X\"");
    let n = line_of(&bad, "max_message_size");
    let file = write_config(dir.path(), "size.toml", &bad);
    let err = run_fails(dir.path(), &["config", "check", &file], &[]);
    assert_contains(
        &err,
        &[
            &format!("{file}:{n}:"),
            "max_message_size",
            "5X",
            "expected a size",
        ],
    );

    let unknown = good.replace("max_message_size", "max_mesage_size");
    let n = line_of(&unknown, "max_mesage_size");
    let file = write_config(dir.path(), "unknown.toml", &unknown);
    let err = run_fails(dir.path(), &["config", "check", &file], &[]);
    assert_contains(
        &err,
        &[&format!("{file}:{n}:"), "unknown key", "max_mesage_size"],
    );

    let undefined = good.replace("sinks = [\"box\"]", "sinks = [\"nowhere\"]");
    let file = write_config(dir.path(), "undefined.toml", &undefined);
    let err = run_fails(dir.path(), &["config", "check", &file], &[]);
    assert_contains(&err, &[&file, "\"main\"", "\"nowhere\"", "not defined"]);
}

/// Sinks that the loader accepts but that cannot be built; each with the text on the line
/// the error must point at, the key path it must name, and a word of its message.
const UNBUILDABLE_SINKS: &[(&str, &str, &str, &str)] = &[
    (
        "type = \"smtp\"\naddress = \"127.0.0.1:25\"\nusername = \"u\"\npassword_file = \"/nonexistent\"",
        "password_file",
        "sink.up.password_file",
        "/nonexistent",
    ),
    (
        "type = \"smtp\"\naddress = \"127.0.0.1:25\"\nusername = \"u\"\npassword_env = \"MAILCHUTE_TEST_SURELY_UNSET\"",
        "password_env",
        "sink.up.password_env",
        "not set",
    ),
    (
        "type = \"smtp\"\naddress = \"127.0.0.1:25\"\nhelo = \"a b\"",
        "helo",
        "sink.up.helo",
        "without spaces",
    ),
    (
        "type = \"smtp\"\naddress = \"127.0.0.1:25\"\ntls = \"starttls\"\ntls_name = \"a b\"",
        "tls_name",
        "sink.up.tls_name",
        "not a valid TLS server name",
    ),
    (
        "type = \"smtp\"\naddress = \"127.0.0.1:25\"\ntls = \"starttls\"\nca_file = \"/nonexistent/ca.pem\"",
        "ca_file",
        "sink.up.ca_file",
        "/nonexistent/ca.pem",
    ),
    // tls_name is not written: the error points at the table.
    (
        "type = \"smtp\"\naddress = \"unix:/x\"\ntls = \"starttls\"",
        "[sink.up]",
        "sink.up.tls_name",
        "Unix socket",
    ),
    (
        "type = \"maildir\"\npath = \"x/{user}\"",
        "{user}",
        "sink.up.path",
        "unknown variable {user}",
    ),
    (
        "type = \"exec\"\ncommand = [\"{rcpt}\"]",
        "command",
        "sink.up.command[0]",
        "without variables",
    ),
    (
        "type = \"exec\"\ncommand = [\"/nonexistent/prog\", \"-x\"]",
        "command",
        "sink.up.command[0]",
        "/nonexistent/prog: not found or not executable",
    ),
    (
        "type = \"exec\"\ncommand = [\"surely-no-such-program-on-path\"]",
        "command",
        "sink.up.command[0]",
        "not found or not executable in PATH",
    ),
];

#[test]
fn config_check_and_serve_refuse_sinks_that_cannot_be_built() {
    let dir = tempfile::tempdir().unwrap();
    // No route uses [sink.up]: it is built, and refused, all the same.
    let good = one_listener("127.0.0.1:2525", "sync", "");
    for (i, (sink, at, key, text)) in UNBUILDABLE_SINKS.iter().enumerate() {
        let config = format!("{good}\n[sink.up]\n{sink}\n");
        let line = line_of(&config, at);
        let file = write_config(dir.path(), &format!("sink{i}.toml"), &config);
        let want = format!("mailchute: {file}:{line}: {key}: ");
        for args in [
            ["config", "check", file.as_str()],
            ["serve", "-c", file.as_str()],
        ] {
            let o = run(dir.path(), &args, &[]);
            assert_eq!(o.status.code(), Some(78), "mailchute {args:?}");
            let err = stderr(&o);
            assert!(
                err.lines()
                    .any(|l| l.starts_with(&want) && l.contains(text)),
                "mailchute {args:?}: no line starting {want:?} and holding {text:?}:\n{err}"
            );
        }
    }
    // Neither command left anything behind (serve refuses before it writes).
    assert!(!dir.path().join("data").exists() && !dir.path().join("Maildir").exists());
}

#[test]
fn config_check_builds_sinks_without_connecting_or_creating() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    upstream.set_nonblocking(true).unwrap();
    let port = upstream.local_addr().unwrap().port();
    fs::write(dir.path().join("secret"), "s3cret\n").unwrap();
    let config = format!(
        "{}\n[sink.up]\ntype = \"smtp\"\naddress = \"127.0.0.1:{port}\"\ntls = \"starttls\"\n\
         insecure = true\nusername = \"u\"\npassword_file = \"./secret\"\n\n\
         [sink.per-user]\ntype = \"maildir\"\npath = \"./Users/{{local}}\"\n",
        one_listener("127.0.0.1:2525", "sync", "")
    );
    let file = write_config(dir.path(), "ok.toml", &config);
    run_ok(dir.path(), &["config", "check", &file], &[]);
    assert!(
        matches!(upstream.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "config check connected to the upstream"
    );
    let mut left: Vec<String> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["ok.toml", "secret"], "config check created files");
}

#[test]
fn config_check_refuses_what_this_version_lacks() {
    let dir = tempfile::tempdir().unwrap();
    let good = one_listener("127.0.0.1:2525", "sync", "");

    // A rewrite filter is checked and shown; one this build lacks is named as such.
    let filter = format!(
        "{good}\n[filter.x]\ntype = \"rewrite\"\nheader = \"Subject\"\npattern = \"^\"\nreplace = \"[x] \"\n"
    );
    let file = write_config(dir.path(), "filter.toml", &filter);
    let out = run_ok(dir.path(), &["config", "check", &file], &[]);
    assert_contains(&out, &["filters:", "  x: rewrite Subject"]);
    let clamd = format!("{good}\n[filter.x]\ntype = \"clamd\"\n");
    let file = write_config(dir.path(), "clamd.toml", &clamd);
    let err = run_fails(dir.path(), &["config", "check", &file], &[]);
    assert_contains(
        &err,
        &[&file, "filter.x.type", "not available in this version yet"],
    );

    let mongo = good.replace(
        "type = \"maildir\"\npath = \"./Maildir\"",
        "type = \"mongodb\"\nuri = \"mongodb://127.0.0.1\"",
    );
    let file = write_config(dir.path(), "mongodb.toml", &mongo);
    let err = run_fails(dir.path(), &["config", "check", &file], &[]);
    assert_contains(
        &err,
        &[&file, "mongodb", "not available in this version yet"],
    );
}

#[test]
fn open_relay_is_refused_unless_open_is_said() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let address = format!("0.0.0.0:{port}");
    let relay = one_listener(&address, "sync", "");
    let file = write_config(dir.path(), "relay.toml", &relay);
    let err = run_fails(dir.path(), &["config", "check", &file], &[]);
    assert_contains(
        &err,
        &[&file, &address, "open relay", "allow_ips", "open = true"],
    );
    // `serve` refuses it too, before listening.
    let err = run_fails(dir.path(), &["serve", "-c", &file], &[]);
    assert_contains(&err, &[&address, "open relay"]);

    let allowed = one_listener(&address, "sync", "allow_ips = [\"192.0.2.0/24\"]");
    let file = write_config(dir.path(), "allow.toml", &allowed);
    run_ok(dir.path(), &["config", "check", &file], &[]);

    let open = one_listener(&address, "sync", "open = true");
    let file = write_config(dir.path(), "open.toml", &open);
    let out = run_ok(dir.path(), &["config", "check", &file], &[]);
    assert_contains(&out, &[&address, "open = true"]);
}

// ---- 2. discovery and env overrides ----------------------------------------------------

#[test]
fn config_is_found_through_mailchute_config() {
    let dir = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let file = write_config(
        dir.path(),
        "found.toml",
        &one_listener("127.0.0.1:2525", "sync", ""),
    );
    let out = run_ok(
        elsewhere.path(),
        &["config", "check"],
        &[("MAILCHUTE_CONFIG", &file)],
    );
    assert_contains(
        &out,
        &[&format!("config:    {file}"), "  mx: 127.0.0.1:2525"],
    );

    // `-c` wins over the variable.
    let other = write_config(
        dir.path(),
        "other.toml",
        &one_listener("127.0.0.1:2526", "sync", ""),
    );
    let out = run_ok(
        elsewhere.path(),
        &["-c", &other, "config", "check"],
        &[("MAILCHUTE_CONFIG", &file)],
    );
    assert_contains(&out, &["  mx: 127.0.0.1:2526"]);

    if Path::new(SYSTEM_CONFIG).exists() {
        eprintln!("skipping the no-config part: {SYSTEM_CONFIG} exists on this machine");
        return;
    }
    // Nothing anywhere: `config check` says which file it looked for.
    let err = run_fails(elsewhere.path(), &["config", "check"], &[]);
    assert_contains(&err, &[SYSTEM_CONFIG, "MAILCHUTE_CONFIG"]);
}

#[test]
fn env_overrides_change_hostname_and_size() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let file = write_config(
        dir.path(),
        "mailchute.toml",
        &one_listener(&format!("127.0.0.1:{port}"), "sync", ""),
    );
    let _serve = Serve::start(
        dir.path(),
        &["-c", &file],
        &[
            ("MAILCHUTE_SERVER__HOSTNAME", "override.test"),
            ("MAILCHUTE_LISTENER__0__MAX_MESSAGE_SIZE", "\"3M\""),
        ],
        port,
    );
    let greeting = banner(port);
    assert!(greeting.starts_with("220 override.test"), "{greeting:?}");
    let mut c = RawSmtp::connect(port);
    let ext = c.ehlo("client.test");
    assert!(
        ext.iter()
            .any(|e| e == &format!("SIZE {}", 3 * 1024 * 1024)),
        "{ext:?}"
    );
    let msg = message("override", "Overridden.\r\n");
    let r = c.data_raw("from@client.test", &["rcpt@test"], &dot_stuff(&msg));
    assert_eq!(r.code, 250, "{r:?}");
    c.quit();
    let msgs = read_maildir(&dir.path().join("Maildir"));
    assert_eq!(msgs.len(), 1);
    let (received, _) = split_received(&msgs[0]);
    let received = String::from_utf8_lossy(received);
    assert!(received.contains("by override.test"), "{received}");
    assert_stored(&msgs[0], &crlf_to_lf(&msg));
}

// ---- 3. embedded default, pid file -----------------------------------------------------

#[test]
fn embedded_default_stores_into_cwd_maildir() {
    if Path::new(SYSTEM_CONFIG).exists() {
        eprintln!("skipping: {SYSTEM_CONFIG} exists, so serve would not use the embedded default");
        return;
    }
    let cwd = tempfile::tempdir().unwrap();
    let port = free_port();
    let address = format!("127.0.0.1:{port}");
    let mut serve = Serve::start(
        cwd.path(),
        &[],
        &[("MAILCHUTE_LISTENER__0__ADDRESS", &address)],
        port,
    );
    assert!(
        serve.log().contains("embedded default"),
        "the start line should say the embedded default is used:\n{}",
        serve.log()
    );
    let data = cwd.path().join("mailchute-data");
    let pid_file = data.join("mailchute.pid");
    let pid = fs::read_to_string(&pid_file).expect("pid file while running");
    assert_eq!(pid.trim(), serve.pid().to_string());

    let msg = message("embedded", "Stored with no config at all.\r\n");
    send(port, "anyone@anywhere.test", &msg);
    let maildir = data.join("Maildir");
    let n = wait_maildir_count(&maildir, 1, Duration::from_secs(30));
    assert_eq!(n, 1, "not delivered; log:\n{}", serve.log());
    assert!(
        fs::read_dir(maildir.join("new")).unwrap().count() == 1,
        "the message should be in Maildir/new"
    );
    let msgs = read_maildir(&maildir);
    assert_eq!(msgs.len(), 1);
    assert_stored(&msgs[0], &crlf_to_lf(&msg));

    serve.signal(libc::SIGTERM);
    let st = serve.wait_exit(Duration::from_secs(20));
    assert!(st.success(), "exit {st}\n{}", serve.log());
    assert!(!pid_file.exists(), "pid file left after SIGTERM");
}

// ---- 4. relative paths -----------------------------------------------------------------

#[test]
fn relative_paths_resolve_against_the_config_directory() {
    let config_dir = tempfile::tempdir().unwrap();
    let cwd = tempfile::tempdir().unwrap();
    let port = free_port();
    let file = write_config(
        config_dir.path(),
        "mailchute.toml",
        &one_listener(&format!("127.0.0.1:{port}"), "sync", ""),
    );
    let serve = Serve::start(cwd.path(), &["-c", &file], &[], port);
    assert!(config_dir.path().join("data/mailchute.pid").exists());
    let msg = message("relative", "Relative to the config file.\r\n");
    send(port, "rcpt@test", &msg);
    let msgs = read_maildir(&config_dir.path().join("Maildir"));
    assert_eq!(msgs.len(), 1, "log:\n{}", serve.log());
    assert_stored(&msgs[0], &crlf_to_lf(&msg));
    let in_cwd: Vec<PathBuf> = fs::read_dir(cwd.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(
        in_cwd.is_empty(),
        "mailchute wrote into its cwd: {in_cwd:?}"
    );
}

// ---- 5. SIGHUP reload ------------------------------------------------------------------

fn routes_config(port: u16, with_b: bool, listener_extra: &str) -> String {
    let b = if with_b {
        "\n[[route]]\nname = \"b\"\nmatch = [\"@b.test\"]\nsinks = [\"b\"]\n\n[sink.b]\ntype = \"maildir\"\npath = \"./B\"\n"
    } else {
        ""
    };
    format!(
        r#"[server]
hostname = "mx.test"
data_dir = "./data"

[[listener]]
name = "mx"
address = "127.0.0.1:{port}"
mode = "sync"
{listener_extra}

[[route]]
name = "a"
match = ["@a.test"]
sinks = ["a"]

[sink.a]
type = "maildir"
path = "./A"
{b}"#
    )
}

fn sighup(pid: u32) {
    // SAFETY: kill(2) on the pid of a child the harness spawned and has not reaped.
    let rc = unsafe { libc::kill(pid as libc::pid_t, libc::SIGHUP) };
    assert_eq!(rc, 0);
}

/// The RCPT reply code for `rcpt` in a fresh session.
fn rcpt_code(port: u16, rcpt: &str) -> u16 {
    let mut c = RawSmtp::connect(port);
    c.ehlo("client.test");
    c.expect("MAIL FROM:<from@client.test>", 250);
    let code = c.cmd(&format!("RCPT TO:<{rcpt}>")).code;
    c.finish();
    code
}

fn wait_log(m: &Mailchute, what: &str, pred: impl Fn(&serde_json::Value) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !m.log_lines().iter().any(&pred) {
        assert!(
            Instant::now() < deadline,
            "no log line: {what}\n--- log ---\n{}",
            m.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn sighup_reloads_routes_and_refuses_a_broken_config() {
    let port = free_port();
    let m = Mailchute::start(&routes_config(port, false, ""));
    let pid = m.pid().unwrap();
    assert_eq!(rcpt_code(port, "x@b.test"), 550);
    send(port, "x@a.test", &message("to-a", "Route a.\r\n"));
    assert_eq!(maildir_count(&m.path("A")), 1);

    fs::write(m.path("mailchute.toml"), routes_config(port, true, "")).unwrap();
    sighup(pid);
    let deadline = Instant::now() + Duration::from_secs(10);
    while rcpt_code(port, "x@b.test") != 250 {
        assert!(
            Instant::now() < deadline,
            "x@b.test still refused after SIGHUP\n--- log ---\n{}",
            m.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    wait_log(&m, "configuration reloaded", |l| {
        l["message"] == "configuration reloaded"
    });
    let msg = message("to-b", "Route b, after the reload.\r\n");
    send(port, "x@b.test", &msg);
    let b = read_maildir(&m.path("B"));
    assert_eq!(b.len(), 1);
    assert_stored(&b[0], &crlf_to_lf(&msg));
    assert_eq!(maildir_count(&m.path("A")), 1, "a's Maildir took b's mail");

    let broken = routes_config(port, true, "max_message_size = \"5X\"");
    fs::write(m.path("mailchute.toml"), broken).unwrap();
    sighup(pid);
    wait_log(&m, "reload refused", |l| {
        l["level"] == "ERROR"
            && l["message"]
                .as_str()
                .is_some_and(|s| s.contains("reload refused"))
    });
    let refused = m
        .log_lines()
        .into_iter()
        .find(|l| {
            l["message"]
                .as_str()
                .is_some_and(|s| s.contains("reload refused"))
        })
        .unwrap();
    let why = refused.to_string();
    assert!(
        why.contains("max_message_size") && why.contains("5X"),
        "the refusal should say what is wrong: {why}"
    );
    // Still running, still on the last good config.
    send(port, "y@b.test", &message("to-b-2", "Still routed.\r\n"));
    assert_eq!(maildir_count(&m.path("B")), 2, "log:\n{}", m.log());

    // A sink that cannot be built is refused the same way, placed in the file.
    let unbuildable = format!(
        "{}\n[sink.c]\ntype = \"exec\"\ncommand = [\"{{rcpt}}\"]\n",
        routes_config(port, true, "")
    );
    let line = line_of(&unbuildable, "{rcpt}");
    fs::write(m.path("mailchute.toml"), &unbuildable).unwrap();
    let want = format!(
        "{}:{line}: sink.c.command[0]: ",
        m.path("mailchute.toml").display()
    );
    sighup(pid);
    wait_log(&m, "reload refused for sink.c", |l| {
        l["message"]
            .as_str()
            .is_some_and(|s| s.contains("reload refused"))
            && l.to_string().contains(&want)
    });
    send(port, "z@b.test", &message("to-b-3", "Still routed.\r\n"));
    assert_eq!(maildir_count(&m.path("B")), 3, "log:\n{}", m.log());

    // A renamed listener needs a restart (its accept loop knows it by name): refused, and
    // the listener keeps serving.
    let renamed = routes_config(port, true, "").replace("name = \"mx\"", "name = \"mx2\"");
    fs::write(m.path("mailchute.toml"), renamed).unwrap();
    sighup(pid);
    wait_log(&m, "rename refused", |l| {
        l["message"]
            .as_str()
            .is_some_and(|s| s.contains("reload refused"))
            && l["error"]
                .as_str()
                .is_some_and(|e| e.contains("mx2") && e.contains("needs a restart"))
    });
    send(
        port,
        "w@b.test",
        &message("to-b-4", "After the rename.\r\n"),
    );
    assert_eq!(maildir_count(&m.path("B")), 4, "log:\n{}", m.log());
}

/// At start every sink is checked as the run user; one that cannot work is named in a
/// warning at once, not first at a message's deferral.
#[test]
fn serve_warns_of_a_sink_that_cannot_work() {
    let port = free_port();
    let config = one_listener(&format!("127.0.0.1:{port}"), "sync", "")
        .replace("path = \"./Maildir\"", "path = \"/dev/null/Maildir\"");
    let m = Mailchute::start(&config);
    wait_log(&m, "health check warning", |l| {
        l["level"] == "WARN"
            && l["sink"] == "box"
            && l["message"]
                .as_str()
                .is_some_and(|s| s.contains("health check failed"))
            && l["error"].as_str().is_some_and(|e| e.contains("/dev/null"))
    });
}

/// A reload that drops a sink queued mail still waits for says so.
#[test]
fn sighup_warns_of_queued_mail_for_a_removed_sink() {
    let port = free_port();
    let config = |sink: &str| {
        one_listener(&format!("127.0.0.1:{port}"), "queued", "")
            .replace("sinks = [\"box\"]", &format!("sinks = [\"{sink}\"]"))
            .replace(
                "[sink.box]\ntype = \"maildir\"\npath = \"./Maildir\"\n",
                &format!(
                    "[queue]\nbackoff_initial = \"1h\"\n\n[sink.{sink}]\ntype = \"smtp\"\naddress = \"127.0.0.1:{}\"\n",
                    closed_port()
                ),
            )
    };
    let m = Mailchute::start(&config("down"));
    let r = send(
        port,
        "rcpt@test",
        &message("stranded", "Waits for sink down.\r\n"),
    );
    assert_eq!(r.code, 250, "{r:?}");
    wait_log(&m, "first attempt deferred", |l| {
        l["message"] == "queue attempt"
    });
    fs::write(m.path("mailchute.toml"), config("renamed")).unwrap();
    sighup(m.pid().unwrap());
    wait_log(&m, "stranded warning", |l| {
        l["sink"] == "down"
            && l["units"] == 1
            && l["message"]
                .as_str()
                .is_some_and(|s| s.contains("does not define"))
    });
}

// ---- 6. queue CLI ----------------------------------------------------------------------

#[test]
fn queue_cli_lists_shows_retries_and_deletes() {
    let port = free_port();
    let config = format!(
        r#"[server]
hostname = "queue.test"
data_dir = "./data"

[[listener]]
name = "mx"
address = "127.0.0.1:{port}"
mode = "queued"

[queue]
backoff_initial = "1h"

[[route]]
name = "all"
match = ["*"]
sinks = ["down"]

[sink.down]
type = "lmtp"
address = "127.0.0.1:{}"
"#,
        closed_port()
    );
    let m = Mailchute::start(&config);
    let file = m.path("mailchute.toml").display().to_string();
    let queue = |args: &[&str]| {
        let mut full = vec!["-c", file.as_str(), "queue"];
        full.extend_from_slice(args);
        run(m.dir(), &full, &[])
    };
    let subject = "queue-cli-subject";
    let r = send(port, "stuck@test", &message(subject, "Waiting.\r\n"));
    let id = reply_id(&r);

    let list = queue(&["list"]);
    assert!(list.status.success(), "{}", stderr(&list));
    let list = stdout(&list);
    assert!(
        list.lines()
            .any(|l| l.starts_with(&id) && l.contains("stuck@test")),
        "{id} not listed:\n{list}"
    );

    let show = queue(&["show", &id]);
    assert!(show.status.success(), "{}", stderr(&show));
    assert_contains(
        &stdout(&show),
        &[
            &format!("id:          {id}"),
            "<from@client.test>",
            "stuck@test",
            &format!("Subject: {subject}"),
        ],
    );

    let attempts = |show: &str| -> u32 {
        show.lines()
            .find_map(|l| l.strip_prefix("attempts:"))
            .and_then(|a| a.trim().parse().ok())
            .unwrap_or_else(|| panic!("no attempts line in:\n{show}"))
    };
    let before = attempts(&stdout(&show));
    let retry = queue(&["retry", &id]);
    assert!(retry.status.success(), "{}", stderr(&retry));
    assert_contains(&stdout(&retry), &[&id]);
    // The running daemon picks the retry up within seconds (and fails again: the sink is down).
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let show = stdout(&queue(&["show", &id]));
        if attempts(&show) > before {
            assert_contains(&show, &["next:        in "]);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no new attempt after `queue retry` ({before} before):\n{show}\n--- log ---\n{}",
            m.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    let delete = queue(&["delete", &id]);
    assert!(delete.status.success(), "{}", stderr(&delete));
    assert_contains(&stdout(&delete), &[&id]);

    // The daemon was (maybe) retrying while we deleted: it must not bring the message back.
    std::thread::sleep(Duration::from_secs(3));
    let list = stdout(&queue(&["list"]));
    assert!(list.contains("queue is empty"), "{list}");
    let left: Vec<PathBuf> = files_below(&m.path("data/spool/queue"))
        .into_iter()
        .filter(|p| p.to_string_lossy().contains(&id))
        .collect();
    assert!(left.is_empty(), "files left for {id}: {left:?}");

    let nosuch = queue(&["show", "NOSUCH"]);
    assert!(!nosuch.status.success(), "{}", stdout(&nosuch));
    assert_contains(&stderr(&nosuch), &["NOSUCH"]);
    let nosuch = queue(&["delete", "NOSUCH"]);
    assert!(!nosuch.status.success(), "{}", stdout(&nosuch));
    assert_contains(&stderr(&nosuch), &["NOSUCH"]);
}

// ---- 7. the transaction log line -------------------------------------------------------

#[test]
fn one_json_transaction_line_per_message() {
    let port = free_port();
    let mut m = Mailchute::start(&sync_config(port, "", MAILDIR_SINK));
    let r = send(port, "rcpt@test", &message("logged", "One line.\r\n"));
    let id = reply_id(&r);
    m.stop();
    let log = m.log();
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("log line is not JSON ({e}): {line:?}"));
        assert!(v.is_object(), "{line}");
    }
    let tx: Vec<serde_json::Value> = m
        .log_lines()
        .into_iter()
        .filter(|l| l["event"] == "transaction")
        .collect();
    assert_eq!(tx.len(), 1, "{log}");
    let t = &tx[0];
    for field in [
        "id",
        "client_ip",
        "helo",
        "tls",
        "from",
        "rcpts",
        "size",
        "route",
        "outcome",
        "reply",
        "duration_ms",
    ] {
        assert!(!t[field].is_null(), "no {field} in {t}");
    }
    assert_eq!(t["id"], id.as_str(), "{t}");
    assert_eq!(t["client_ip"], "127.0.0.1", "{t}");
    assert_eq!(t["tls"], "none", "{t}");
    assert_eq!(t["helo"], "client.test", "{t}");
    assert_eq!(t["from"], "from@client.test", "{t}");
    assert!(t["rcpts"].to_string().contains("rcpt@test"), "{t}");
    assert!(t["size"].as_u64().is_some_and(|s| s > 0), "{t}");
    assert!(t["route"].to_string().contains("all"), "{t}");
    assert!(t["outcome"].to_string().contains("box"), "{t}");
    assert!(
        t["reply"].as_str().is_some_and(|s| s.starts_with("250")),
        "{t}"
    );
    assert!(t["duration_ms"].is_u64(), "{t}");
}

#[test]
fn log_format_text_is_not_json() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let file = write_config(
        dir.path(),
        "mailchute.toml",
        &one_listener(&format!("127.0.0.1:{port}"), "sync", ""),
    );
    let mut serve = Serve::start(
        dir.path(),
        &["-c", &file, "--log-format", "text"],
        &[],
        port,
    );
    send(port, "rcpt@test", &message("text-log", "Text.\r\n"));
    serve.signal(libc::SIGTERM);
    serve.wait_exit(Duration::from_secs(20));
    let log = serve.log();
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty());
    for l in &lines {
        assert!(
            serde_json::from_str::<serde_json::Value>(l).is_err(),
            "JSON line in text mode: {l}"
        );
    }
    assert!(
        lines
            .iter()
            .any(|l| l.contains("transaction") && l.contains("rcpt@test")),
        "{log}"
    );
}

#[test]
fn log_file_gets_the_log_and_stderr_stays_quiet() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let file = write_config(
        dir.path(),
        "mailchute.toml",
        &one_listener(&format!("127.0.0.1:{port}"), "sync", ""),
    );
    let log_file = dir.path().join("mailchute.log");
    fs::write(&log_file, "an earlier line\n").unwrap();
    let log_arg = log_file.display().to_string();
    let mut serve = Serve::start(
        dir.path(),
        &["-c", &file, "--log-file", &log_arg],
        &[],
        port,
    );
    send(port, "rcpt@test", &message("file-log", "To a file.\r\n"));
    // logrotate moves the file away and sends SIGHUP: the rest goes to a new file.
    let rotated = dir.path().join("mailchute.log.1");
    fs::rename(&log_file, &rotated).unwrap();
    serve.signal(libc::SIGHUP);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !fs::read_to_string(&log_file).is_ok_and(|l| l.contains("configuration reloaded")) {
        assert!(
            std::time::Instant::now() < deadline,
            "no new log file after SIGHUP"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    send(
        port,
        "second@test",
        &message("file-log-2", "After the rotation.\r\n"),
    );
    serve.signal(libc::SIGTERM);
    serve.wait_exit(Duration::from_secs(20));
    assert_eq!(serve.log(), "", "stdout and stderr");
    let log = fs::read_to_string(&rotated).unwrap();
    assert!(log.starts_with("an earlier line\n"), "{log}");
    assert_contains(&log, &["mailchute started", "rcpt@test"]);
    let after = fs::read_to_string(&log_file).unwrap();
    assert_contains(&after, &["second@test", "stopped"]);
    assert!(!after.contains("rcpt@test"), "{after}");
    // One that cannot be opened: serve does not start.
    let err = run_status(
        dir.path(),
        &[
            "serve",
            "-c",
            &file,
            "--log-file",
            "/nonexistent/dir/mailchute.log",
        ],
        &[],
        69,
    );
    assert_contains(&err, &["/nonexistent/dir/mailchute.log"]);
}

// ---- 8. SIGTERM during DATA ------------------------------------------------------------

#[test]
fn sigterm_during_data_finishes_the_message() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let file = write_config(
        dir.path(),
        "mailchute.toml",
        &one_listener(&format!("127.0.0.1:{port}"), "sync", ""),
    );
    let mut serve = Serve::start(dir.path(), &["-c", &file], &[], port);
    let msg = message(
        "sigterm",
        &"A line of the body, sent in two halves.\r\n".repeat(200),
    );
    let wire = dot_stuff(&msg);
    let (first, second) = wire.split_at(wire.len() / 2);

    let mut c = RawSmtp::connect(port);
    c.ehlo("client.test");
    c.expect("MAIL FROM:<from@client.test>", 250);
    c.expect("RCPT TO:<rcpt@test>", 250);
    c.expect("DATA", 354);
    c.send(first);
    std::thread::sleep(Duration::from_millis(300));
    serve.signal(libc::SIGTERM);
    std::thread::sleep(Duration::from_millis(700));
    assert!(
        serve.try_status().is_none(),
        "exited with a session in DATA\n{}",
        serve.log()
    );
    // No new sessions while draining.
    if let Ok(s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
        s.set_read_timeout(Some(Duration::from_secs(3))).ok();
        let mut banner = String::new();
        let _ = std::io::BufRead::read_line(&mut std::io::BufReader::new(s), &mut banner);
        assert!(
            !banner.starts_with("220"),
            "new session greeted after SIGTERM: {banner:?}"
        );
    }
    c.send(second);
    let r = c.read_reply();
    assert_eq!(r.code, 250, "{r:?}\n{}", serve.log());
    c.finish();

    let st = serve.wait_exit(Duration::from_secs(20));
    assert!(st.success(), "exit {st}\n{}", serve.log());
    let msgs = read_maildir(&dir.path().join("Maildir"));
    assert_eq!(msgs.len(), 1);
    assert_stored(&msgs[0], &crlf_to_lf(&msg));
}

/// A delivery that takes its time holds the stop for at most the grace period; a second
/// SIGTERM stops at once, and the message stays in the spool for the next start.
#[test]
fn second_sigterm_stops_at_once_and_keeps_the_message_queued() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = one_listener(&format!("127.0.0.1:{port}"), "queued", "").replace(
        "[sink.box]\ntype = \"maildir\"\npath = \"./Maildir\"\n",
        // sh forks the sleep (there is more after it): a grandchild, in the command's
        // group; its argument is unique to this run.
        &format!(
            "[sink.box]\ntype = \"exec\"\ncommand = [\"/bin/sh\", \"-c\", \"sleep 60.{port}; true\"]\ntimeout = \"5m\"\n"
        ),
    );
    let file = write_config(dir.path(), "mailchute.toml", &config);
    let mut serve = Serve::start(dir.path(), &["-c", &file], &[], port);
    let r = send(port, "rcpt@test", &message("slow", "Delivered slowly.\r\n"));
    let id = reply_id(&r);
    let log_has = |serve: &Serve, what: &str| serve.log().contains(what);
    let marker = format!("sleep\x0060.{port}\x00");
    let sleeping = || {
        std::fs::read_dir("/proc").unwrap().any(|p| {
            std::fs::read(p.unwrap().path().join("cmdline")).is_ok_and(|c| c == marker.as_bytes())
        })
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !sleeping() {
        assert!(
            Instant::now() < deadline,
            "exec sink never started\n{}",
            serve.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    serve.signal(libc::SIGTERM);
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        serve.try_status().is_none(),
        "the first SIGTERM waits for the delivery"
    );
    serve.signal(libc::SIGTERM);
    let st = serve.wait_exit(Duration::from_secs(10));
    assert!(st.success(), "exit {st}\n{}", serve.log());
    assert!(log_has(&serve, "second signal"), "{}", serve.log());
    // The abandoned command and what it started are gone too.
    let deadline = Instant::now() + Duration::from_secs(5);
    while sleeping() {
        assert!(
            Instant::now() < deadline,
            "the exec sink's sleep outlived mailchute"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        dir.path()
            .join(format!("data/spool/queue/{id}.json"))
            .exists(),
        "the message left the spool\n{}",
        serve.log()
    );
}

// ---- 9. nothing to listen on, --help ----------------------------------------------------

#[test]
fn serve_without_listeners_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let text = "[server]\ndata_dir = \"./data\"\n\n[[route]]\nmatch = [\"*\"]\nsinks = [\"box\"]\n\n[sink.box]\ntype = \"maildir\"\npath = \"./Maildir\"\n";
    let file = write_config(dir.path(), "nolisten.toml", text);
    run_ok(dir.path(), &["config", "check", &file], &[]);
    let err = run_fails(dir.path(), &["serve", "-c", &file], &[]);
    assert_contains(&err, &["nothing to listen on", &file]);
}

#[test]
fn help_mentions_the_config_lookup_order() {
    let dir = tempfile::tempdir().unwrap();
    for args in [&["--help"][..], &["serve", "--help"][..]] {
        let out = run_ok(dir.path(), args, &[]);
        assert_contains(
            &out,
            &["-c", "$MAILCHUTE_CONFIG", SYSTEM_CONFIG, "embedded default"],
        );
    }
}

// ---- 10. exit statuses, queue commands without a config, unix listeners -----------------

/// Runs and asserts the exit status; returns stderr.
fn run_status(cwd: &Path, args: &[&str], env: &[(&str, &str)], code: i32) -> String {
    let o = run(cwd, args, env);
    assert_eq!(
        o.status.code(),
        Some(code),
        "mailchute {args:?}:\n--- stdout ---\n{}\n--- stderr ---\n{}",
        stdout(&o),
        stderr(&o)
    );
    stderr(&o)
}

#[test]
fn exit_statuses_tell_what_went_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let good = write_config(
        dir.path(),
        "good.toml",
        &one_listener("127.0.0.1:2525", "sync", ""),
    );
    // Missing, and unreadable (a directory): EX_NOINPUT, the cause said once.
    let err = run_status(dir.path(), &["config", "check", "nope.toml"], &[], 66);
    assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");
    let sub = dir.path().join("sub");
    fs::create_dir(&sub).unwrap();
    let err = run_status(
        dir.path(),
        &["config", "check", &sub.display().to_string()],
        &[],
        66,
    );
    assert_eq!(err.matches("Is a directory").count(), 1, "{err}");
    // Invalid: EX_CONFIG, for check and serve alike.
    let bad = write_config(
        dir.path(),
        "bad.toml",
        &one_listener("127.0.0.1:2525", "sync", "max_recipients = 0"),
    );
    run_status(dir.path(), &["config", "check", &bad], &[], 78);
    run_status(dir.path(), &["serve", "-c", &bad], &[], 78);
    // A port that is taken: EX_UNAVAILABLE.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let busy = write_config(dir.path(), "busy.toml", &one_listener(&address, "sync", ""));
    let err = run_status(dir.path(), &["serve", "-c", &busy], &[], 69);
    assert_contains(&err, &[&address]);
    // Two different files for config check: a usage error; the same one twice is fine.
    let err = run_status(dir.path(), &["config", "check", &good, "-c", &bad], &[], 2);
    assert_contains(&err, &["two files"]);
    run_ok(
        dir.path(),
        &["-c", "./good.toml", "config", "check", &good],
        &[],
    );
    run_status(dir.path(), &["config", "frobnicate"], &[], 2);
}

/// Invoked through a link named `sendmail`: the binary is sendmail (tests/it/sendmail.rs),
/// not `mailchute` with its clap flags: `-t` on an empty message finds no recipient.
#[test]
fn invoked_as_sendmail_is_sendmail() {
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("sendmail");
    std::os::unix::fs::symlink(BIN, &link).unwrap();
    let o = Command::new(&link)
        .args(["-t", "-i"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(65), "{}", stderr(&o));
    assert_eq!(stdout(&o), "");
    assert_contains(&stderr(&o), &["no recipient addresses found"]);
}

#[test]
fn queue_commands_need_a_config_or_a_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    if Path::new(SYSTEM_CONFIG).exists() {
        eprintln!("skipping the no-config part: {SYSTEM_CONFIG} exists on this machine");
    } else {
        for args in [&["queue", "list"][..], &["queue", "show", "X1"][..]] {
            let err = run_status(dir.path(), args, &[], 66);
            assert_contains(&err, &[SYSTEM_CONFIG, "MAILCHUTE_CONFIG", "--data-dir"]);
        }
        assert!(!dir.path().join("mailchute-data").exists());
    }
    // --data-dir reads a spool directly, before or after the subcommand.
    let spool = dir.path().join("spool-here");
    fs::create_dir_all(spool.join("dead")).unwrap();
    let d = spool.display().to_string();
    let out = run_ok(dir.path(), &["queue", "--data-dir", &d, "list"], &[]);
    assert_contains(&out, &["queue is empty"]);
    // A dead letter is named as one, with its reason.
    fs::write(
        spool.join("dead/D1.json"),
        r#"{"dead_reason": "expired after 5d: 4.4.1 refused", "died_at": 1}"#,
    )
    .unwrap();
    for verb in ["show", "retry", "delete"] {
        let err = run_status(dir.path(), &["queue", verb, "D1", "--data-dir", &d], &[], 1);
        assert_contains(
            &err,
            &[
                "D1 is a dead letter",
                "dead/D1.json",
                "reason: expired after 5d",
            ],
        );
    }
    run_status(
        dir.path(),
        &["queue", "--data-dir", "/nonexistent/dir", "list"],
        &[],
        66,
    );
    let file = write_config(
        dir.path(),
        "c.toml",
        &one_listener("127.0.0.1:2525", "sync", ""),
    );
    run_status(
        dir.path(),
        &["-c", &file, "queue", "--data-dir", &d, "list"],
        &[],
        2,
    );
}

#[test]
fn tcp_only_keys_on_a_unix_listener_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("s.sock").display().to_string();
    let address = format!("unix:{sock}");
    run_ok(
        dir.path(),
        &[
            "config",
            "check",
            &write_config(dir.path(), "ok.toml", &one_listener(&address, "sync", "")),
        ],
        &[],
    );
    let text = one_listener(&address, "sync", "allow_ips = [\"10.0.0.0/8\"]");
    let file = write_config(dir.path(), "unix.toml", &text);
    let line = line_of(&text, "allow_ips");
    let err = run_status(dir.path(), &["config", "check", &file], &[], 78);
    assert_contains(
        &err,
        &[&format!(
            "{file}:{line}: listener[0].allow_ips: applies to TCP listeners only"
        )],
    );
}

#[test]
fn config_default_prints_the_embedded_default_and_overrides_take_numbers_as_text() {
    let dir = tempfile::tempdir().unwrap();
    let default = run_ok(dir.path(), &["config", "default"], &[]);
    assert_contains(
        &default,
        &["[sink.maildir]", "127.0.0.1:2525", "match = [\"*\"]"],
    );
    let file = write_config(dir.path(), "default.toml", &default);
    let out = run_ok(
        dir.path(),
        &["config", "check", &file],
        &[
            ("MAILCHUTE_SERVER__HOSTNAME", "1234"),
            ("MAILCHUTE_SINK__MAILDIR__PATH", "/srv/mail"),
        ],
    );
    assert_contains(&out, &["hostname:  1234", "/srv/mail"]);
    let help = run_ok(dir.path(), &["serve", "--help"], &[]);
    assert_contains(&help, &["config default", "Exit status", "78"]);
}
