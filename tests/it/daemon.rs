//! `mailchute daemon start|stop|status|reload|info`: LSB exit statuses, the pid file, a
//! detached daemon (its own session, stdio on /dev/null), reload, refusals before forking,
//! privilege drop and a group-only Unix socket. Every daemon a test starts is killed by its
//! pid when the test ends, whatever happened.

use crate::harness::{free_port, read_maildir, swaks_ok, wait_maildir_count};
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A directory with a config, and the daemons started from it (killed on drop).
struct Site {
    dir: tempfile::TempDir,
    pids: Vec<i32>,
}

impl Site {
    fn new(config: &str) -> Site {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(dir.path().join("mailchute.toml"), config).expect("write config");
        // Not world-readable: only the readable-secrets test wants the warning.
        fs::set_permissions(
            dir.path().join("mailchute.toml"),
            fs::Permissions::from_mode(0o640),
        )
        .expect("chmod config");
        Site {
            dir,
            pids: Vec::new(),
        }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn write_config(&self, config: &str) {
        fs::write(self.path("mailchute.toml"), config).expect("write config");
    }

    /// `mailchute -c mailchute.toml daemon ARGS`, from the site's directory.
    fn daemon(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_mailchute"))
            .arg("-c")
            .arg(self.path("mailchute.toml"))
            .arg("daemon")
            .args(args)
            .current_dir(self.dir.path())
            .env_remove("MAILCHUTE_CONFIG")
            .stdin(Stdio::null())
            .output()
            .expect("run mailchute daemon")
    }

    /// `daemon start`, which must exit 0 with `started (pid N)`; returns N.
    fn start(&mut self) -> i32 {
        let out = self.daemon(&["start"]);
        let text = stdout(&out);
        assert_eq!(code(&out), 0, "start: {text}{}", stderr(&out));
        let pid = pid_in(&text, "started (pid ").unwrap_or_else(|| panic!("no pid in {text:?}"));
        self.pids.push(pid);
        pid
    }

    fn status(&self) -> (i32, String) {
        let out = self.daemon(&["status"]);
        (code(&out), format!("{}{}", stdout(&out), stderr(&out)))
    }

    fn log(&self) -> String {
        fs::read_to_string(self.path("data/mailchute.log")).unwrap_or_default()
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        for &pid in &self.pids {
            if alive(pid) {
                // SAFETY: a pid this test started (checked alive just now).
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn pid_in(text: &str, prefix: &str) -> Option<i32> {
    let rest = &text[text.find(prefix)? + prefix.len()..];
    rest.split(')').next()?.parse().ok()
}

/// Alive and not a zombie (a daemon reparented to an init that does not reap stays one).
fn alive(pid: i32) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let state = stat
        .rsplit_once(')')
        .map(|(_, t)| t.trim_start().chars().next());
    !matches!(state, Some(Some('Z' | 'X')) | None)
}

fn wait_gone(pid: i32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while alive(pid) {
        assert!(Instant::now() < deadline, "pid {pid} still alive");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Field `n` (1-based, as proc(5) counts) of /proc/PID/stat.
fn stat_field(pid: i32, n: usize) -> String {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let tail = stat.rsplit_once(')').expect("comm").1;
    tail.split_whitespace()
        .nth(n - 3)
        .expect("field")
        .to_string()
}

fn tcp_config(port: u16, sink_path: &str) -> String {
    format!(
        r#"[server]
data_dir = "./data"
log_format = "text"

[[listener]]
name = "mx"
address = "127.0.0.1:{port}"
mode = "sync"

[[route]]
name = "all"
match = ["*"]
sinks = ["box"]

[sink.box]
type = "maildir"
path = "{sink_path}"
"#
    )
}

fn send(port: u16, rcpt: &str, subject: &str) {
    swaks_ok(&[
        "--server",
        &format!("127.0.0.1:{port}"),
        "--from",
        "cron@localhost",
        "--to",
        rcpt,
        "--header",
        &format!("Subject: {subject}"),
    ]);
}

#[test]
fn start_status_stop_speak_lsb_and_the_daemon_is_detached() {
    let port = free_port();
    let mut site = Site::new(&tcp_config(port, "./Maildir"));
    assert_eq!(site.status().0, 3, "{}", site.status().1);

    let pid = site.start();
    // The pid file names the daemon itself, which is detached: not our child, not a
    // session leader (so it can never get a controlling terminal), stdio on /dev/null.
    let pid_file = fs::read_to_string(site.path("data/mailchute.pid")).expect("pid file");
    assert_eq!(pid_file.trim(), pid.to_string());
    assert_ne!(stat_field(pid, 4), std::process::id().to_string(), "ppid");
    assert_ne!(stat_field(pid, 6), pid.to_string(), "session leader");
    // SAFETY: getsid(0) cannot fail.
    let our_sid = unsafe { libc::getsid(0) };
    assert_ne!(
        stat_field(pid, 6),
        our_sid.to_string(),
        "still in our session"
    );
    for fd in 0..=2 {
        let target = fs::read_link(format!("/proc/{pid}/fd/{fd}")).expect("fd link");
        assert_eq!(target, Path::new("/dev/null"), "fd {fd}");
    }
    assert_eq!(
        fs::read_link(format!("/proc/{pid}/cwd")).unwrap(),
        Path::new("/")
    );

    let (c, text) = site.status();
    assert_eq!(c, 0, "{text}");
    assert!(text.contains(&format!("running (pid {pid})")), "{text}");
    assert!(
        text.contains(&format!("mx 127.0.0.1:{port} (smtp)")),
        "{text}"
    );

    // LSB: starting what runs is a success.
    let again = site.daemon(&["start"]);
    assert_eq!(code(&again), 0, "{}", stderr(&again));
    assert!(stdout(&again).contains(&format!("already running (pid {pid})")));

    send(port, "alice@localhost", "through the daemon");
    assert_eq!(
        wait_maildir_count(&site.path("Maildir"), 1, Duration::from_secs(10)),
        1
    );

    let info = site.daemon(&["info"]);
    let text = stdout(&info);
    assert_eq!(code(&info), 0, "{text}{}", stderr(&info));
    for needle in [
        &format!("mailchute {}", env!("CARGO_PKG_VERSION")),
        &format!("running (pid {pid})"),
        &format!("config:    {}", site.path("mailchute.toml").display()),
        &format!("data_dir:  {}", site.path("data").display()),
        &format!("mx: 127.0.0.1:{port} protocol=smtp mode=sync tls=none auth=none"),
        "all: * -> box",
        "0 queued, 0 dead",
    ] {
        assert!(text.contains(needle), "{needle:?} not in:\n{text}");
    }
    // The log went to {data_dir}/mailchute.log (stderr is /dev/null).
    assert!(site.log().contains("mailchute started"), "{}", site.log());

    let stop = site.daemon(&["stop"]);
    assert_eq!(code(&stop), 0, "{}", stderr(&stop));
    assert!(stdout(&stop).contains(&format!("stopped (pid {pid})")));
    assert!(!alive(pid));
    assert!(!site.path("data/mailchute.pid").exists());
    assert_eq!(site.status().0, 3);
    // LSB: stopping what does not run is a success; reloading it is 7.
    let stop = site.daemon(&["stop"]);
    assert_eq!(code(&stop), 0);
    assert!(stdout(&stop).contains("not running"));
    let reload = site.daemon(&["reload"]);
    assert_eq!(code(&reload), 7);
    assert!(
        stderr(&reload).contains("not running"),
        "{}",
        stderr(&reload)
    );
}

#[test]
fn kill_9_leaves_a_stale_pid_file_that_status_names_and_start_replaces() {
    let port = free_port();
    let mut site = Site::new(&tcp_config(port, "./Maildir"));
    let pid = site.start();
    // SAFETY: the daemon this test started.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    wait_gone(pid);
    let (c, text) = site.status();
    assert_eq!(c, 1, "{text}");
    let pid_file = site.path("data/mailchute.pid");
    assert!(
        text.contains(&format!("{} names pid {pid}: stale", pid_file.display())),
        "{text}"
    );
    let reload = site.daemon(&["reload"]);
    assert_eq!(code(&reload), 7, "{}", stderr(&reload));

    let second = site.start();
    assert_ne!(second, pid);
    assert_eq!(site.status().0, 0);
    send(port, "bob@localhost", "after a crash");
    assert_eq!(
        wait_maildir_count(&site.path("Maildir"), 1, Duration::from_secs(10)),
        1
    );
    assert_eq!(code(&site.daemon(&["stop"])), 0);
    assert_eq!(site.status().0, 3);
}

#[test]
fn stop_of_a_stale_pid_file_whose_pid_was_reused_signals_nothing() {
    let port = free_port();
    let site = Site::new(&tcp_config(port, "./Maildir"));
    fs::create_dir_all(site.path("data")).unwrap();
    // A live process that is not mailchute holds the pid now.
    let mut sleeper = Command::new("sleep").arg("30").spawn().expect("sleep");
    fs::write(
        site.path("data/mailchute.pid"),
        format!("{}\n", sleeper.id()),
    )
    .unwrap();
    let (c, text) = site.status();
    assert_eq!(c, 1, "{text}");
    assert!(text.contains("now another program (sleep)"), "{text}");
    assert_eq!(code(&site.daemon(&["stop"])), 0);
    assert!(
        sleeper.try_wait().unwrap().is_none(),
        "stop signalled a stranger"
    );
    let _ = sleeper.kill();
    let _ = sleeper.wait();
}

#[test]
fn reload_picks_up_a_changed_route_and_refuses_a_broken_config() {
    let port = free_port();
    let mut site = Site::new(&tcp_config(port, "./A"));
    let pid = site.start();
    // At once after start: the handlers are in place before start returns (SIGHUP's
    // default action would end the daemon).
    assert_eq!(code(&site.daemon(&["reload"])), 0);
    std::thread::sleep(Duration::from_millis(100));
    assert!(alive(pid), "an early SIGHUP killed the daemon");
    send(port, "a@localhost", "before reload");
    assert_eq!(
        wait_maildir_count(&site.path("A"), 1, Duration::from_secs(10)),
        1
    );

    site.write_config(&tcp_config(port, "./B"));
    let reload = site.daemon(&["reload"]);
    assert_eq!(code(&reload), 0, "{}", stderr(&reload));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !site.log().contains("configuration reloaded") {
        assert!(
            Instant::now() < deadline,
            "no reload in the log:\n{}",
            site.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    send(port, "a@localhost", "after reload");
    assert_eq!(
        wait_maildir_count(&site.path("B"), 1, Duration::from_secs(10)),
        1
    );
    assert_eq!(read_maildir(&site.path("A")).len(), 1);

    // Refused before the signal, with the reason on the terminal; the daemon runs on.
    site.write_config(&tcp_config(port, "./B").replace("[sink.box]", "[sink.other]"));
    let reload = site.daemon(&["reload"]);
    assert_eq!(code(&reload), 78, "{}", stderr(&reload));
    assert!(stderr(&reload).contains("box"), "{}", stderr(&reload));
    assert!(
        stderr(&reload).contains("not reloading"),
        "{}",
        stderr(&reload)
    );
    assert!(alive(pid));
    // stop still finds the daemon through the broken config's data_dir.
    let stop = site.daemon(&["stop"]);
    assert_eq!(code(&stop), 0, "{}", stderr(&stop));
    assert!(!alive(pid));
}

#[test]
fn start_with_a_bad_config_exits_78_and_runs_nothing() {
    let port = free_port();
    let bad_key = tcp_config(port, "./M").replace("mode = \"sync\"", "mode = \"sync\"\nbogus = 1");
    let unknown_user = tcp_config(port, "./M").replace(
        "log_format = \"text\"",
        "log_format = \"text\"\nuser = \"no-such-user-mailchute\"",
    );
    for (config, needle) in [(bad_key, "bogus"), (unknown_user, "no-such-user-mailchute")] {
        let site = Site::new(&config);
        let out = site.daemon(&["start"]);
        assert_eq!(code(&out), 78, "{}{}", stdout(&out), stderr(&out));
        assert!(stderr(&out).contains(needle), "{}", stderr(&out));
        assert!(
            !site.path("data").exists(),
            "a refused start left data_dir behind"
        );
        assert_eq!(site.status().0, 3);
        assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
    }
}

#[test]
fn start_on_a_port_in_use_exits_1_with_the_listeners_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().unwrap().port();
    let site = Site::new(&tcp_config(port, "./M"));
    let out = site.daemon(&["start"]);
    let err = stderr(&out);
    assert_eq!(code(&out), 1, "{}{err}", stdout(&out));
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
    assert!(err.contains("in use"), "{err}");
    assert!(err.contains("mx"), "{err}");
    assert!(!site.path("data/mailchute.pid").exists());
    assert_eq!(site.status().0, 3);
}

#[test]
fn start_warns_of_a_world_readable_config_holding_a_password() {
    let port = free_port();
    let config = tcp_config(port, "./M").replace(
        "mode = \"sync\"",
        "mode = \"sync\"\nauth = [\"plain\"]\nallow_plaintext_auth = true\n\n[[listener.user]]\nname = \"app\"\npassword = \"hunter2\"",
    );
    let mut site = Site::new(&config);
    let file = site.path("mailchute.toml");
    fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).unwrap();
    let out = site.daemon(&["start"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    if let Some(pid) = pid_in(&stdout(&out), "started (pid ") {
        site.pids.push(pid);
    }
    let err = stderr(&out);
    assert!(err.contains("listener[0].user[0].password"), "{err}");
    assert!(
        err.contains(&format!("chmod 640 {}", file.display())),
        "{err}"
    );
    assert!(
        site.log().contains("chmod 640"),
        "not in the log too:\n{}",
        site.log()
    );
    assert_eq!(code(&site.daemon(&["stop"])), 0);
}

const NOBODY: u32 = 65534;

/// A gid no group has, for the socket: a throwaway group without touching /etc/group.
fn unused_gid() -> u32 {
    (45000..46000)
        // SAFETY: getgrgid returns NULL or a pointer we only compare.
        .find(|&g| unsafe { libc::getgrgid(g) }.is_null())
        .expect("a free gid")
}

/// swaks over the daemon's Unix socket as nobody, with `groups` as supplementary groups.
/// A local user who is neither the daemon's run user (`nobody`, who owns the socket) nor,
/// without `groups`, in the socket's group: an unassigned uid.
const LOCAL_USER: u32 = 65533;

fn lmtp_as_local_user(socket: &Path, groups: Option<u32>) -> Output {
    let mut cmd = Command::new("setpriv");
    cmd.args([
        &format!("--reuid={LOCAL_USER}"),
        &format!("--regid={LOCAL_USER}"),
    ]);
    match groups {
        Some(g) => cmd.arg(format!("--groups={g}")),
        None => cmd.arg("--clear-groups"),
    };
    cmd.args(["swaks", "--timeout", "20", "--protocol", "LMTP", "--socket"])
        .arg(socket)
        .args(["--from", "cron@localhost", "--to", "root@localhost"])
        .args(["--header", "Subject: dead drop"])
        .stdin(Stdio::null())
        .output()
        .expect("run setpriv swaks")
}

#[test]
fn as_root_the_daemon_runs_as_its_user_behind_a_group_only_socket() {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root (binding as root, then dropping to nobody)");
        return;
    }
    let gid = unused_gid();
    let mut site = Site::new("");
    let root = site.dir.path().to_path_buf();
    // mktemp dirs are 0700 root's: nobody must reach the socket and its Maildir below.
    fs::set_permissions(&root, fs::Permissions::from_mode(0o755)).unwrap();
    let config = format!(
        r#"[server]
data_dir = "./data"
user = "nobody"
log_format = "text"

[[listener]]
name = "local"
address = "unix:{root}/run/mc.sock"
protocol = "lmtp"
socket_mode = "0770"
socket_group = "{gid}"

[[route]]
name = "users"
match = ["@localhost"]
sinks = ["user-maildir"]

[[route]]
name = "catch-all"
match = ["*"]
sinks = ["user-maildir"]

[sink.user-maildir]
type = "maildir"
path = "./data/mail/{{local}}"
"#,
        root = root.display()
    );
    site.write_config(&config);
    let pid = site.start();

    let status = fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let ids = |key: &str| -> Vec<String> {
        let line = status.lines().find(|l| l.starts_with(key)).expect("line");
        line.split_whitespace()
            .skip(1)
            .map(str::to_string)
            .collect()
    };
    let n = NOBODY.to_string();
    assert_eq!(ids("Uid:"), [n.as_str(); 4], "{status}");
    assert_eq!(ids("Gid:"), [n.as_str(); 4], "{status}");

    let socket = root.join("run/mc.sock");
    let meta = fs::metadata(&socket).expect("socket");
    assert_eq!(meta.mode() & 0o7777, 0o770);
    assert_eq!(meta.gid(), gid);
    // No socket_owner: the socket is the run user's, as `config check` says.
    assert_eq!(meta.uid(), NOBODY);

    let outside = lmtp_as_local_user(&socket, None);
    let text = format!("{}{}", stdout(&outside), stderr(&outside));
    assert!(
        !outside.status.success(),
        "outside the group got in:\n{text}"
    );
    assert!(text.contains("Permission denied"), "{text}");

    let inside = lmtp_as_local_user(&socket, Some(gid));
    let text = format!("{}{}", stdout(&inside), stderr(&inside));
    assert!(inside.status.success(), "inside the group refused:\n{text}");

    // sendmail from outside the group is refused too (77), not put round the socket
    // through pickup/, which admits only the socket's group (1730).
    let pickup = site.path("data/pickup");
    let meta = fs::metadata(&pickup).expect("pickup");
    assert_eq!(meta.mode() & 0o7777, 0o1730);
    assert_eq!(meta.gid(), gid);
    // Any local user reads the config (it holds no secret), as sendmail must.
    fs::set_permissions(
        site.path("mailchute.toml"),
        fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let mut outsider = Command::new("setpriv")
        .args([
            &format!("--reuid={LOCAL_USER}"),
            &format!("--regid={LOCAL_USER}"),
        ])
        .arg("--clear-groups")
        .arg(env!("CARGO_BIN_EXE_mailchute"))
        .arg("-c")
        .arg(site.path("mailchute.toml"))
        .args(["sendmail", "root@localhost"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run sendmail as a local user");
    use std::io::Write;
    let _ = outsider
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"Subject: round\n\nx\n");
    let out = outsider.wait_with_output().expect("sendmail");
    assert_eq!(out.status.code(), Some(77), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("not allowed to submit"),
        "{}",
        stderr(&out)
    );
    let dropped: Vec<_> = fs::read_dir(&pickup)
        .expect("list pickup")
        .filter_map(Result::ok)
        .filter(|e| e.file_name() != "bad")
        .collect();
    assert!(dropped.is_empty(), "{dropped:?}");

    let maildir = site.path("data/mail/root");
    assert_eq!(wait_maildir_count(&maildir, 1, Duration::from_secs(10)), 1);
    let stored = read_maildir(&maildir);
    assert!(String::from_utf8_lossy(&stored[0]).contains("Subject: dead drop"));
    // Written by the daemon as its user, not as root.
    let files: Vec<_> = ["new", "cur"]
        .iter()
        .flat_map(|d| fs::read_dir(maildir.join(d)).into_iter().flatten())
        .filter_map(Result::ok)
        .collect();
    assert_eq!(files.len(), 1);
    assert_eq!(files[0].metadata().unwrap().uid(), NOBODY);

    assert_eq!(code(&site.daemon(&["stop"])), 0);
    assert!(!alive(pid));
}

#[test]
fn the_deaddrop_example_passes_config_check() {
    let out = Command::new(env!("CARGO_BIN_EXE_mailchute"))
        .args(["config", "example", "--deaddrop"])
        .output()
        .expect("run mailchute");
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let site = Site::new(&stdout(&out));
    let check = Command::new(env!("CARGO_BIN_EXE_mailchute"))
        .arg("config")
        .arg("check")
        .arg(site.path("mailchute.toml"))
        .output()
        .expect("run mailchute");
    let text = stdout(&check);
    assert_eq!(code(&check), 0, "{text}{}", stderr(&check));
    assert!(
        text.contains("unix:/run/mailchute/mailchute.sock lmtp"),
        "{text}"
    );
    assert!(text.contains("socket mode 0770"), "{text}");
    assert!(
        text.contains("maildir /var/mail/mailchute/{local}"),
        "{text}"
    );
}
