#![allow(dead_code)] // shared helpers: not every test binary build uses each one
//! A private Postfix instance (no /etc/postfix, no syslog) as shared/TESTING.md describes:
//! its own config, queue and data directories in a temp dir, a from-scratch master.cf with
//! `chroot = n`, `maillog_file` + postlogd, one smtpd on a free port of 127.0.0.1.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::harness::{READY_TIMEOUT, free_port, wait_for_banner};

/// uid/gid `virtual(8)` delivers as (nobody); Postfix refuses root.
const VIRTUAL_ID: u32 = 65534;

#[derive(Default)]
pub struct PostfixBuilder {
    relayhost: Option<String>,
    transports: Vec<(String, String)>,
    relay_domains: Vec<String>,
    virtual_mailboxes: Vec<String>,
    main_extra: Vec<(String, String)>,
    smtpd_options: Vec<String>,
    /// Extra master.cf entries (a `pipe` transport), each with its `-o`/argv lines.
    services: Vec<String>,
}

impl PostfixBuilder {
    /// `relayhost`, e.g. `[127.0.0.1]:2525`.
    pub fn relayhost(mut self, v: &str) -> Self {
        self.relayhost = Some(v.to_string());
        self
    }

    /// One `transport_maps` entry, e.g. (`test`, `lmtp:inet:127.0.0.1:2424`). The domain is
    /// also put in `relay_domains` so smtpd accepts mail for it.
    pub fn transport(mut self, domain: &str, nexthop: &str) -> Self {
        self.transports
            .push((domain.to_string(), nexthop.to_string()));
        self.relay_domains.push(domain.to_string());
        self
    }

    pub fn relay_domain(mut self, domain: &str) -> Self {
        self.relay_domains.push(domain.to_string());
        self
    }

    /// Delivers `addr` (user@domain) with `virtual(8)` to the Maildir
    /// `<mail_base>/<addr>/`; read it with [`Postfix::maildir`].
    pub fn virtual_mailbox(mut self, addr: &str) -> Self {
        self.virtual_mailboxes.push(addr.to_string());
        self
    }

    /// Any other main.cf parameter.
    pub fn main(mut self, key: &str, value: &str) -> Self {
        self.main_extra.push((key.to_string(), value.to_string()));
        self
    }

    /// An extra master.cf service, e.g. a `pipe` transport (the whole entry, continuation
    /// lines indented).
    pub fn service(mut self, entry: &str) -> Self {
        self.services.push(entry.trim_end().to_string());
        self
    }

    /// A `-o name=value` for the smtpd listener.
    pub fn smtpd_option(mut self, opt: &str) -> Self {
        self.smtpd_options.push(opt.to_string());
        self
    }

    pub fn start(self) -> Postfix {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().to_path_buf();
        // mktemp-style dirs are 0700: the postfix user and virtual's uid must traverse.
        fs::set_permissions(&root, fs::Permissions::from_mode(0o755)).expect("chmod tmp");
        let etc = root.join("etc");
        let queue = root.join("queue");
        let data = root.join("data");
        let log = root.join("log");
        let mail = root.join("mail");
        for d in [&etc, &queue, &data, &log, &mail] {
            fs::create_dir_all(d).expect("mkdir");
        }
        chown_name(&data, "postfix", "postfix");
        std::os::unix::fs::chown(&mail, Some(VIRTUAL_ID), Some(VIRTUAL_ID)).expect("chown mail");

        let port = free_port();
        let mut main = vec![
            ("compatibility_level", "3.6".to_string()),
            ("queue_directory", queue.display().to_string()),
            ("data_directory", data.display().to_string()),
            ("mail_owner", "postfix".into()),
            ("setgid_group", "postdrop".into()),
            ("myhostname", "postfix.test".into()),
            ("mydomain", "postfix.test".into()),
            ("myorigin", "postfix.test".into()),
            ("mydestination", String::new()),
            ("alias_maps", String::new()),
            ("alias_database", String::new()),
            ("local_recipient_maps", String::new()),
            ("inet_interfaces", "127.0.0.1".into()),
            ("inet_protocols", "ipv4".into()),
            ("mynetworks", "127.0.0.0/8".into()),
            (
                "smtpd_relay_restrictions",
                "permit_mynetworks, reject_unauth_destination".into(),
            ),
            ("maillog_file", log.join("maillog").display().to_string()),
            ("maillog_file_prefixes", root.display().to_string()),
            ("smtp_dns_support_level", "disabled".into()),
            ("queue_run_delay", "2s".into()),
            ("minimal_backoff_time", "2s".into()),
            ("maximal_backoff_time", "10s".into()),
            ("biff", "no".into()),
            ("smtputf8_enable", "yes".into()),
        ];
        if let Some(r) = &self.relayhost {
            main.push(("relayhost", r.clone()));
        }
        if !self.transports.is_empty() {
            let t: String = self
                .transports
                .iter()
                .map(|(d, n)| format!("{d} {n}\n"))
                .collect();
            fs::write(etc.join("transport"), t).expect("write transport");
            main.push((
                "transport_maps",
                format!("texthash:{}", etc.join("transport").display()),
            ));
        }
        if !self.relay_domains.is_empty() {
            main.push(("relay_domains", self.relay_domains.join(", ")));
        }
        if !self.virtual_mailboxes.is_empty() {
            let mut domains: Vec<&str> = self
                .virtual_mailboxes
                .iter()
                .filter_map(|a| a.split_once('@').map(|(_, d)| d))
                .collect();
            domains.sort();
            domains.dedup();
            let maps: String = self
                .virtual_mailboxes
                .iter()
                .map(|a| format!("{a} {a}/\n"))
                .collect();
            fs::write(etc.join("vmailbox"), maps).expect("write vmailbox");
            main.push(("virtual_mailbox_domains", domains.join(", ")));
            main.push((
                "virtual_mailbox_maps",
                format!("texthash:{}", etc.join("vmailbox").display()),
            ));
            main.push(("virtual_mailbox_base", mail.display().to_string()));
            main.push(("virtual_uid_maps", format!("static:{VIRTUAL_ID}")));
            main.push(("virtual_gid_maps", format!("static:{VIRTUAL_ID}")));
        }
        let mut main_cf: String = main.iter().map(|(k, v)| format!("{k} = {v}\n")).collect();
        for (k, v) in &self.main_extra {
            main_cf.push_str(&format!("{k} = {v}\n"));
        }
        fs::write(etc.join("main.cf"), main_cf).expect("write main.cf");

        let smtpd_opts: String = self
            .smtpd_options
            .iter()
            .map(|o| format!("  -o {o}\n"))
            .collect();
        let services: String = self.services.iter().map(|s| format!("{s}\n")).collect();
        let master_cf = format!(
            "127.0.0.1:{port} inet n - n - - smtpd\n{smtpd_opts}{MASTER_CF_SERVICES}{services}"
        );
        fs::write(etc.join("master.cf"), master_cf).expect("write master.cf");

        let pf = Postfix {
            _tmp: tmp,
            root,
            port,
            started: false,
        };
        pf.postfix(&["check"]);
        let mut pf = pf;
        pf.postfix(&["start"]);
        pf.started = true;
        let deadline = Instant::now() + READY_TIMEOUT;
        if let Err(e) = wait_for_banner(&format!("127.0.0.1:{port}"), false, deadline) {
            panic!("postfix not ready: {e}\n--- maillog ---\n{}", pf.log());
        }
        pf
    }
}

const MASTER_CF_SERVICES: &str = "\
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
";

fn chown_name(path: &Path, user: &str, group: &str) {
    let st = Command::new("chown")
        .arg(format!("{user}:{group}"))
        .arg(path)
        .status()
        .expect("run chown");
    assert!(st.success(), "chown {user}:{group} {}", path.display());
}

/// A running private Postfix; stopped (by its own master pid, via `postfix -c DIR stop`)
/// when dropped.
pub struct Postfix {
    _tmp: TempDir,
    root: PathBuf,
    /// The smtpd listener on 127.0.0.1.
    pub port: u16,
    started: bool,
}

impl Postfix {
    pub fn builder() -> PostfixBuilder {
        PostfixBuilder::default()
    }

    pub fn config_dir(&self) -> PathBuf {
        self.root.join("etc")
    }

    pub fn log_path(&self) -> PathBuf {
        self.root.join("log").join("maillog")
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// The Maildir `virtual(8)` delivers `addr` to.
    pub fn maildir(&self, addr: &str) -> PathBuf {
        self.root.join("mail").join(addr)
    }

    fn postfix(&self, args: &[&str]) {
        let out = Command::new("postfix")
            .arg("-c")
            .arg(self.config_dir())
            .args(args)
            .output()
            .expect("run postfix");
        assert!(
            out.status.success(),
            "postfix {args:?} failed: {}{}\n--- maillog ---\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
    }

    /// `postqueue -f`: retry everything deferred now.
    pub fn flush(&self) {
        let _ = Command::new("postqueue")
            .arg("-c")
            .arg(self.config_dir())
            .arg("-f")
            .status();
    }

    /// `postqueue -p` output.
    pub fn queue(&self) -> String {
        let out = Command::new("postqueue")
            .arg("-c")
            .arg(self.config_dir())
            .arg("-p")
            .output()
            .expect("run postqueue");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Polls until the queue is empty; panics with the queue and log after `timeout`.
    pub fn wait_queue_empty(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let q = self.queue();
            if q.contains("Mail queue is empty") {
                return;
            }
            if Instant::now() >= deadline {
                panic!(
                    "postfix queue not empty:\n{q}\n--- maillog ---\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Polls the maillog until it contains `needle`.
    pub fn wait_log(&self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let l = self.log();
            if l.contains(needle) {
                return l;
            }
            if Instant::now() >= deadline {
                panic!("maillog never showed {needle:?}:\n{l}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn master_pid(&self) -> Option<i32> {
        fs::read_to_string(self.root.join("queue/pid/master.pid"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        if !self.started {
            return;
        }
        let pid = self.master_pid();
        let _ = Command::new("postfix")
            .arg("-c")
            .arg(self.config_dir())
            .arg("stop")
            .output();
        // Wait for master (and so its children) to go before the temp dir is removed.
        if let Some(pid) = pid {
            let deadline = Instant::now() + Duration::from_secs(10);
            // SAFETY: signal 0 only probes whether the pid still exists.
            while unsafe { libc::kill(pid, 0) } == 0 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// Proof that the harness is right without mailchute: swaks → private Postfix → virtual(8)
/// Maildir, read back by Python's mailbox.
#[test]
fn harness_delivers_through_private_postfix() {
    use crate::harness::{crlf_to_lf, message, read_maildir, swaks_data, swaks_ok};
    let pf = Postfix::builder().virtual_mailbox("user@vdom.test").start();
    let tmp = tempfile::tempdir().unwrap();
    let msg = message("harness", "line one\r\n.dot line\r\nlast line\r\n");
    swaks_ok(&[
        "--server",
        &format!("127.0.0.1:{}", pf.port),
        "--from",
        "from@client.test",
        "--to",
        "user@vdom.test",
        "--data",
        &swaks_data(tmp.path(), "msg.eml", &msg),
    ]);
    pf.wait_queue_empty(Duration::from_secs(20));
    let msgs = read_maildir(&pf.maildir("user@vdom.test"));
    assert_eq!(msgs.len(), 1, "maillog:\n{}", pf.log());
    let stored = &msgs[0];
    let head = b"Return-Path: <from@client.test>\nX-Original-To: user@vdom.test\n\
        Delivered-To: user@vdom.test\nReceived: from ";
    assert!(
        stored.starts_with(head),
        "{}",
        String::from_utf8_lossy(stored)
    );
    assert!(
        stored.ends_with(&crlf_to_lf(&msg)),
        "{}",
        String::from_utf8_lossy(stored)
    );
    let log = pf.log();
    assert!(log.contains("status=sent (delivered to maildir)"), "{log}");
}
