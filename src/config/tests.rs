//! Loader tests: every error a config can produce, where it points, env overrides, paths.

use super::*;
use std::path::{Path, PathBuf};

/// A valid config without listeners; tests append what they exercise.
const BASE: &str = "\
[[route]]
name = \"all\"
match = [\"*\"]
sinks = [\"m\"]

[sink.m]
type = \"maildir\"
path = \"Maildir\"
";

fn base_dir() -> PathBuf {
    std::env::temp_dir()
}

fn parse(text: &str) -> Result<Loaded, ConfigError> {
    parse_str(text, "t.toml", &base_dir())
}

fn err(text: &str) -> String {
    match parse(text) {
        Ok(_) => panic!("expected an error for:\n{text}"),
        Err(e) => e.to_string(),
    }
}

fn problem(text: &str) -> Problem {
    match parse(text) {
        Ok(_) => panic!("expected an error for:\n{text}"),
        Err(e) => e.problem().cloned().expect("an Invalid error"),
    }
}

fn with_env(text: &str, env: &[(&str, &str)]) -> Result<Loaded, ConfigError> {
    let env = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    parse_str_with_env(text, "t.toml", &base_dir(), env)
}

fn listener(extra: &str) -> String {
    format!("{BASE}\n[[listener]]\naddress = \"127.0.0.1:2525\"\n{extra}\n")
}

fn assert_has(haystack: &str, needle: &str) {
    assert!(haystack.contains(needle), "{needle:?} not in:\n{haystack}");
}

#[test]
fn example_loads_and_validates() {
    let dir = tempfile::tempdir().unwrap();
    let l = parse_str(example(), "example.toml", dir.path()).unwrap();
    let c = &l.config;
    assert_eq!(c.listeners.len(), 3);
    assert_eq!(c.server.data_dir, dir.path().join("mailchute-data"));
    assert_eq!(
        c.listeners[1].address,
        format!("unix:{}", dir.path().join("mailchute.sock").display())
    );
    // The sink tables are the sinks registry's to type (see sinks/tests.rs); here they
    // are kept as written.
    let local = &c.sinks["local"];
    assert_eq!(local.kind, "maildir");
    assert_eq!(
        local.table["path"].as_str(),
        Some("./mailchute-data/Maildir/{local}")
    );
    assert_eq!(c.filters["tag-subject"].kind, "rewrite");
}

#[test]
fn example_mentions_every_listener_key() {
    // Keys a reader must find in the example, commented out or not.
    for k in [
        "name",
        "address",
        "protocol",
        "mode",
        "upstream",
        "tls",
        "require_tls",
        "cert",
        "key",
        "key_passphrase_env",
        "auth",
        "users",
        "allow_ips",
        "trusted",
        "proxy_protocol",
        "max_message_size",
        "max_recipients",
        "sender_allow",
        "recipient_deny",
        "socket_mode",
        "socket_owner",
        "socket_group",
        "open",
        "max_line_length",
        "command_timeout",
        "data_timeout",
        "max_connections",
        "max_connections_per_ip",
        "max_errors",
        "dsn",
        "key_passphrase_env",
        "auth",
        "allow_plaintext_auth",
        "require_auth",
        "users",
        "bcrypt_env",
        "senders",
        "tls_name",
        "ca_file",
        "insecure",
        "username",
        "password_env",
        "password_file",
        "helo",
        "xforward",
        "timeout",
        "folder",
        "line_endings",
        "create",
        "command",
        "hostname",
        "data_dir",
        "user",
        "group",
        "log_format",
        "local_part_case",
        "backoff_initial",
        "backoff_max",
        "max_lifetime",
        "workers",
        "filters",
        "fail_open",
        "on_empty",
        "sinks",
        "match",
    ] {
        assert!(
            example().lines().any(|l| {
                let l = l.trim_start_matches(['#', ' ']);
                l.starts_with(&format!("{k} ="))
            }),
            "the example does not show `{k}`"
        );
    }
}

#[test]
fn embedded_default() {
    let cwd = std::env::current_dir().unwrap();
    let missing = Path::new("/nonexistent/mailchute.toml");
    let l = load_with(None, None, missing, true, Vec::new()).unwrap();
    assert_eq!(l.source, Source::Embedded);
    assert_eq!(l.base_dir, cwd);
    let c = &l.config;
    assert_eq!(c.listeners.len(), 1);
    assert_eq!(c.listeners[0].address, "127.0.0.1:2525");
    assert_eq!(c.listeners[0].name.as_deref(), Some("default"));
    assert_eq!(c.listeners[0].mode, Mode::Queued);
    assert_eq!(c.routes[0].matches, vec!["*".to_string()]);
    assert_eq!(c.sinks["maildir"].kind, "maildir");
    assert_eq!(c.server.data_dir, cwd.join("mailchute-data"));
    assert!(c.server.hostname.as_deref().is_some_and(|h| !h.is_empty()));
    assert!(Config::embedded(&cwd).is_ok());
    // Overrides apply to the embedded default too, and its errors name them.
    let env = vec![(
        "MAILCHUTE_LISTENER__0__ADDRESS".to_string(),
        "0.0.0.0:2525".to_string(),
    )];
    let e = load_with(None, None, missing, true, env)
        .unwrap_err()
        .to_string();
    assert_has(
        &e,
        "embedded default: listener[0] (set by MAILCHUTE_LISTENER__0__ADDRESS)",
    );
    assert_has(&e, "is not on loopback");
}

#[test]
fn config_is_found_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.toml");
    let b = dir.path().join("b.toml");
    std::fs::write(&a, BASE).unwrap();
    std::fs::write(&b, BASE).unwrap();
    let missing = dir.path().join("missing.toml");
    let src = |e: Option<&Path>, env: Option<&Path>, d: &Path| {
        load_with(e, env, d, false, Vec::new()).map(|l| l.source)
    };
    assert_eq!(
        src(Some(&a), Some(&b), &b).unwrap(),
        Source::File(a.clone())
    );
    assert_eq!(src(None, Some(&b), &a).unwrap(), Source::File(b.clone()));
    assert_eq!(src(None, None, &a).unwrap(), Source::File(a.clone()));
    let e = src(None, None, &missing).unwrap_err().to_string();
    assert_has(&e, "missing.toml does not exist");
    assert_has(&e, "-c FILE");
    let e = src(Some(&missing), None, &a).unwrap_err().to_string();
    assert_has(&e, "missing.toml: cannot read the config file");
}

#[test]
fn relative_paths_resolve_against_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("conf").join("m.toml");
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    let text = format!(
        "{BASE}
[server]
data_dir = \"data\"
[[listener]]
address = \"unix:run/m.sock\"
"
    );
    std::fs::write(&file, text).unwrap();
    let l = load_file_with_env(&file, Vec::new()).unwrap();
    let conf = dir.path().join("conf");
    let c = &l.config;
    assert_eq!(l.base_dir, conf);
    assert_eq!(c.server.data_dir, conf.join("data"));
    assert_eq!(
        c.listeners[0].address,
        format!("unix:{}", conf.join("run/m.sock").display())
    );
    // An unnamed listener is called by its address.
    assert_eq!(
        c.listeners[0].name.as_deref(),
        Some(c.listeners[0].address.as_str())
    );
}

#[test]
fn sizes_and_durations() {
    let l = parse(&listener(
        "max_message_size = \"100K\"\nmax_line_length = 2048\ncommand_timeout = \"2m\"\ndata_timeout = 30",
    ))
    .unwrap();
    let li = &l.config.listeners[0];
    assert_eq!(li.max_message_size, Size(100 * 1024));
    assert_eq!(li.max_line_length, Size(2048));
    assert_eq!(li.command_timeout, Duration::from_secs(120));
    assert_eq!(li.data_timeout, Duration::from_secs(30));
    let l = parse(&format!(
        "{BASE}[queue]\nbackoff_initial = \"30s\"\nmax_lifetime = \"7d\"\n"
    ))
    .unwrap();
    assert_eq!(l.config.queue.backoff_initial, Duration::from_secs(30));
    assert_eq!(l.config.queue.max_lifetime, Duration::from_secs(7 * 86400));
    // Defaults.
    assert_eq!(l.config.queue.workers, 16);
    assert_eq!(l.config.routes[0].name.as_deref(), Some("all"));
}

#[test]
fn bad_size_names_file_line_and_key() {
    let text = listener("max_message_size = \"5X\"");
    let line = text.lines().position(|l| l.contains("5X")).unwrap() + 1;
    assert_eq!(
        err(&text),
        format!(
            "t.toml:{line}: listener[0].max_message_size: \"5X\": expected a size like \
             1048576, \"100K\", \"50M\" or \"1G\""
        )
    );
    let p = problem(&listener("data_timeout = \"5w\""));
    assert_eq!(p.key, "listener[0].data_timeout");
    assert_has(&p.message, "expected a duration");
}

#[test]
fn absurd_durations_are_errors_at_their_key() {
    // Every duration key goes through the same cap: a listener's, the queue's, a sink's.
    let huge = "\"200000000000000d\"";
    let cases = [
        listener(&format!("command_timeout = {huge}")),
        format!("{BASE}[queue]\nmax_lifetime = {huge}\n"),
    ];
    // A sink's: see sinks/tests.rs.
    let keys = ["listener[0].command_timeout", "queue.max_lifetime"];
    for (text, key) in cases.iter().zip(keys) {
        let line = text
            .lines()
            .position(|l| l.contains("200000000000000d"))
            .unwrap()
            + 1;
        let p = problem(text);
        assert_eq!((p.line, p.key.as_str()), (Some(line), key), "{p}");
        assert_has(&p.message, "longer than 36500d (100 years)");
    }
    // From the environment, the variable is named.
    let e = with_env(
        &listener(""),
        &[("MAILCHUTE_QUEUE__BACKOFF_MAX", "\"40000d\"")],
    )
    .unwrap_err()
    .to_string();
    assert_has(
        &e,
        "queue.backoff_max (set by MAILCHUTE_QUEUE__BACKOFF_MAX): \"40000d\": longer than",
    );
    // A century itself is still allowed.
    assert!(
        parse(&format!(
            "{BASE}[queue]\nmax_lifetime = \"36500d\"\nbackoff_max = \"36500d\"\n"
        ))
        .is_ok()
    );
}

#[test]
fn syntax_errors_have_lines() {
    let p = problem("[server]\nhostname = \"x\"\ndata_dir = \n");
    assert_eq!(p.line, Some(3));
    assert_has(&p.message, "TOML syntax");
}

#[test]
fn unknown_keys_are_errors_with_lines() {
    let p = problem(&listener("colour = \"blue\""));
    let line = listener("colour = \"blue\"")
        .lines()
        .position(|l| l.starts_with("colour"))
        .unwrap()
        + 1;
    assert_eq!(p.line, Some(line));
    assert_eq!(p.key, "listener[0]");
    assert_has(&p.message, "unknown key `colour`");
    assert_has(&p.message, "max_message_size");

    let p = problem(&format!("{BASE}\n[surver]\nx = 1\n"));
    assert_has(&p.message, "unknown key `surver`");
    assert_eq!(p.line, Some(BASE.lines().count() + 2));

    let p = problem(&format!("{BASE}[queue]\nworkers = 2\nretries = 3\n"));
    assert_eq!(p.key, "queue");
    assert_eq!(p.line, Some(BASE.lines().count() + 3));
}

#[test]
fn missing_keys() {
    let p = problem(&format!("{BASE}[listener]\naddress = \"127.0.0.1:1\"\n"));
    assert_eq!(p.key, "listener");
    assert_has(&p.message, "write [[listener]]");
    let p = problem(&format!("{BASE}[[listener]]\nname = \"x\"\n"));
    assert_eq!(p.key, "listener[0]");
    assert_has(&p.message, "missing key `address`");
}

#[test]
fn sink_and_filter_types_are_strings() {
    // Whether a `type` is there and which types exist is the registries' to say
    // (pipeline tests); one that is not a string is refused at load.
    let p = problem(&format!("{BASE}[filter.x]\ntype = 1\n"));
    assert_eq!(p.key, "filter.x.type");
    assert_eq!(p.line, Some(BASE.lines().count() + 2));
}

#[test]
fn listener_rules() {
    let cases: &[(&str, &str)] = &[
        (
            "mode = \"proxy\"",
            "listener[0].mode: mode = \"proxy\" is not available in this version yet",
        ),
        (
            "upstream = \"127.0.0.1:10026\"",
            "listener[0].upstream: is only used with mode = \"proxy\"",
        ),
        (
            "tls = \"starttls\"",
            "listener[0].cert: is missing: tls = \"starttls\" needs cert and key",
        ),
        (
            "require_tls = true",
            "listener[0].require_tls: needs tls = \"starttls\" or \"implicit\"",
        ),
        (
            "auth = [\"plain\"]",
            "listener[0].auth: needs users to check against",
        ),
        (
            "users = \"u.toml\"",
            "listener[0].users: needs SMTP AUTH on this listener",
        ),
        (
            "require_auth = true",
            "listener[0].require_auth: needs SMTP AUTH on this listener",
        ),
        (
            "allow_plaintext_auth = true",
            "listener[0].allow_plaintext_auth: needs SMTP AUTH on this listener",
        ),
        (
            "[[listener.user]]\nname = \"app\"\npassword = \"x\"",
            "listener[0].user: needs SMTP AUTH on this listener",
        ),
        (
            "auth = [\"plain\", \"md5\"]\nusers = \"u.toml\"",
            "listener[0].auth[1]: \"md5\": expected \"plain\", \"login\" or \"cram-md5\"",
        ),
        (
            "auth = [\"plain\", \"login\"]\nusers = \"u.toml\"",
            "listener[0].auth: plain and login are offered only inside TLS",
        ),
        (
            "auth = [\"plain\"]\n[[listener.user]]\nname = \"app\"\nbcrypt = \"x\"\nsecret = 1",
            "listener[0].user[0]: unknown key `secret`",
        ),
        (
            "key_passphrase_env = \"P\"",
            "listener[0].key_passphrase_env: is only used with tls = \"starttls\" or \"implicit\"",
        ),
        (
            "allow_ips = [\"10.0.0.0/8\", \"ten\"]",
            "listener[0].allow_ips[1]: \"ten\": expected an IP address or a CIDR",
        ),
        (
            "trusted = [\"300.1.1.1\"]",
            "listener[0].trusted[0]: \"300.1.1.1\"",
        ),
        (
            "sender_allow = \"(\"",
            "listener[0].sender_allow: invalid regex \"(\"",
        ),
        (
            "recipient_deny = \"[\"",
            "listener[0].recipient_deny: invalid regex",
        ),
        (
            "socket_mode = \"0770\"",
            "listener[0].socket_mode: is only for unix listeners",
        ),
        (
            "socket_group = \"mail\"",
            "listener[0].socket_group: is only for unix listeners",
        ),
        (
            "max_recipients = 0",
            "listener[0].max_recipients: must be at least 1",
        ),
        (
            "data_timeout = 0",
            "listener[0].data_timeout: must be more than 0",
        ),
        (
            "mode = \"fast\"",
            "listener[0].mode: unknown value `fast`, expected one of",
        ),
    ];
    for (extra, want) in cases {
        let e = err(&listener(extra));
        assert_has(&e, want);
        assert!(e.starts_with("t.toml:"), "{e}");
    }
    let e = err(&format!("{BASE}[[listener]]\naddress = \"localhost:25\"\n"));
    assert_has(
        &e,
        "listener[0].address: \"localhost:25\": expected \"IP:port\"",
    );
    let e = err(&format!(
        "{BASE}[[listener]]\naddress = \"unix:/x\"\nsocket_mode = \"0999\"\n"
    ));
    assert_has(
        &e,
        "socket_mode: \"0999\": expected permission bits in octal",
    );
    assert!(
        parse(&format!(
            "{BASE}[[listener]]\naddress = \"unix:/x\"\nsocket_mode = \"0660\"\n"
        ))
        .is_ok()
    );
    let two = format!(
        "{BASE}[[listener]]\nname = \"a\"\naddress = \"127.0.0.1:1\"\n\
         [[listener]]\nname = \"a\"\naddress = \"127.0.0.1:2\"\n"
    );
    assert_has(
        &err(&two),
        "listener[1].name: listener name \"a\" is already used by listener[0]",
    );
    let two = format!(
        "{BASE}[[listener]]\naddress = \"127.0.0.1:1\"\n[[listener]]\naddress = \"127.0.0.1:1\"\nname = \"b\"\n"
    );
    assert_has(&err(&two), "is already used by listener[0]");
}

#[test]
fn tls_files_must_exist() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("cert.pem"), "x").unwrap();
    let text = listener("tls = \"implicit\"\ncert = \"cert.pem\"\nkey = \"key.pem\"");
    let e = parse_str(&text, "t.toml", dir.path())
        .unwrap_err()
        .to_string();
    assert_has(&e, "listener[0].key: ");
    assert_has(&e, "key.pem: No such file");
    std::fs::write(dir.path().join("key.pem"), "x").unwrap();
    let l = parse_str(&text, "t.toml", dir.path()).unwrap();
    assert_eq!(
        l.config.listeners[0].cert,
        Some(dir.path().join("cert.pem"))
    );
}

#[test]
fn key_passphrase_env_names_a_variable() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("cert.pem"), "x").unwrap();
    std::fs::write(dir.path().join("key.pem"), "x").unwrap();
    let with = |var: &str| {
        listener(&format!(
            "tls = \"starttls\"\ncert = \"cert.pem\"\nkey = \"key.pem\"\nkey_passphrase_env = {var:?}"
        ))
    };
    // Accepted as a name; the variable itself is read when the key is loaded.
    let l = parse_str(&with("TLS_KEY_PASS"), "t.toml", dir.path()).unwrap();
    assert_eq!(
        l.config.listeners[0].key_passphrase_env.as_deref(),
        Some("TLS_KEY_PASS")
    );
    for bad in ["", "A=B"] {
        let e = parse_str(&with(bad), "t.toml", dir.path())
            .unwrap_err()
            .to_string();
        assert_has(&e, "listener[0].key_passphrase_env: ");
        assert_has(&e, "expected the name of an environment variable");
    }
}

#[test]
fn open_relay_rule() {
    let public = |extra: &str| format!("{BASE}[[listener]]\naddress = \"0.0.0.0:25\"\n{extra}\n");
    let e = err(&public(""));
    assert_has(&e, "listener[0]: 0.0.0.0:25 is not on loopback");
    assert_has(&e, "route \"all\" (match \"*\")");
    assert_has(&e, "allow_ips");
    assert_has(&e, "open = true");
    assert_has(&e, "SMTP AUTH");
    assert!(parse(&public("allow_ips = [\"192.0.2.0/24\"]")).is_ok());
    assert!(parse(&public("open = true")).is_ok());
    // SMTP AUTH protects it too.
    assert!(parse(&public("auth = [\"cram-md5\"]\nusers = \"u.toml\"")).is_ok());
    assert!(
        parse(&public(
            "auth = [\"plain\"]\nallow_plaintext_auth = true\nrequire_auth = true\n\
             [[listener.user]]\nname = \"app\"\npassword_env = \"PASSWORD\""
        ))
        .is_ok()
    );
    // An MX for its own domains is not a relay.
    let mx = "[[route]]\nmatch = [\"@example.org\"]\nsinks = [\"m\"]\n\
              [sink.m]\ntype = \"maildir\"\npath = \"M\"\n\
              [[listener]]\naddress = \"[::]:25\"\n";
    assert!(parse(mx).is_ok());
    // A regex that takes anything counts as a catch-all.
    let any = mx.replace("@example.org", "/@/");
    assert_has(&err(&any), "is not on loopback");
}

#[test]
fn route_rules() {
    let route = |body: &str| {
        format!(
            "[sink.local]\ntype = \"discard\"\n[sink.postfix]\ntype = \"discard\"\n[[route]]\nname = \"archive\"\n{body}\n"
        )
    };
    assert_eq!(
        err(&route("match = [\"*\"]\nsinks = [\"s3\"]")),
        "t.toml:8: route[0].sinks[0]: route \"archive\": sink \"s3\" is not defined (defined: local, postfix)"
    );
    assert_has(
        &err(&route("match = []\nsinks = [\"local\"]")),
        "route[0].match: is empty",
    );
    assert_has(
        &err(&route("match = [\"*\"]")),
        "route[0].sinks: route \"archive\" has no sinks",
    );
    assert_has(
        &err(&route("match = [\"bob\"]\nsinks = [\"local\"]")),
        "route[0].match[0]: \"bob\": expected an address",
    );
    assert_has(
        &err(&route("match = [\"a@b\", \"/(/\"]\nsinks = [\"local\"]")),
        "route[0].match[1]: \"/(/\": invalid regex",
    );
    assert_has(
        &err(&route(
            "match = [\"*\"]\nsinks = [\"local\"]\nfilters = [\"tag\"]",
        )),
        "route[0].filters[0]: route \"archive\": filter \"tag\" is not defined (no [filter.*] tables are defined)",
    );
    let with_filter = format!(
        "{}[filter.tag]\ntype = \"rewrite\"\n",
        route("match = [\"*\"]\nsinks = [\"local\"]\nfilters = [\"tag\", \"tog\"]")
    );
    let p = problem(&with_filter);
    assert_eq!(p.key, "route[0].filters[1]");
    assert_eq!(p.line, Some(9));
    assert_has(&p.message, "filter \"tog\" is not defined (defined: tag)");
    assert_has(
        &err(&route("match = [\"*\"]\nsinks = [\"local\", \"local\"]")),
        "sink \"local\" is listed twice",
    );
    let p = problem(&format!(
        "{}[filter.tag]\ntype = \"rewrite\"\n",
        route("match = [\"*\"]\nsinks = [\"local\"]\nfilters = [\"tag\", \"tag\"]")
    ));
    assert_eq!(p.key, "route[0].filters[1]");
    assert_has(&p.message, "filter \"tag\" is listed twice");
    let twice = format!(
        "{}[[route]]\nmatch = [\"@Example.org\"]\nsinks = [\"local\"]\n",
        route("match = [\"@example.org\"]\nsinks = [\"local\"]")
    );
    assert_has(
        &err(&twice),
        "route[1].match[0]: \"@Example.org\" is already matched by route \"archive\"",
    );
    let e = err("[[route]]\nmatch = [\"*\"]\nsinks = [\"x\"]\n");
    assert_has(&e, "no [sink.*] tables are defined");
}

#[test]
fn not_yet_sections() {
    let e = err(&format!("{BASE}[http]\naddress = \"127.0.0.1:8025\"\n"));
    assert_eq!(
        e,
        format!(
            "t.toml:{}: http: [http] is not available in this version yet",
            BASE.lines().count() + 1
        )
    );
}

#[test]
fn queue_rules() {
    let q = |body: &str| err(&format!("{BASE}[queue]\n{body}\n"));
    assert_has(
        &q("backoff_initial = 0"),
        "queue.backoff_initial: must be more than 0",
    );
    assert_has(
        &q("backoff_initial = \"2h\"\nbackoff_max = \"1h\""),
        "queue.backoff_max: 1h is less than backoff_initial (2h)",
    );
    assert_has(&q("workers = 0"), "queue.workers: must be at least 1");
    assert_has(
        &q("max_lifetime = \"0s\""),
        "queue.max_lifetime: must be more than 0",
    );
}

#[test]
fn server_rules_and_hostname_default() {
    let l = parse(BASE).unwrap();
    assert_eq!(
        l.config.server.hostname,
        Some(system_hostname().unwrap_or_else(|| "localhost".into()))
    );
    assert_has(
        &err(&format!("{BASE}[server]\nhostname = \"a b\"\n")),
        "server.hostname: \"a b\"",
    );
    assert_has(
        &err(&format!("{BASE}[server]\nlog_format = \"xml\"\n")),
        "server.log_format: unknown value `xml`",
    );
}

#[test]
fn env_overrides_apply() {
    let text = format!(
        "{BASE}[sink.s3-archive]\ntype = \"maildir\"\npath = \"/a\"\n\
         [[listener]]\naddress = \"127.0.0.1:2525\"\n"
    );
    let l = with_env(
        &text,
        &[
            ("MAILCHUTE_QUEUE__WORKERS", "4"),
            ("MAILCHUTE_SERVER__HOSTNAME", "mx.example.org"),
            ("MAILCHUTE_SINK__S3_ARCHIVE__PATH", "/b"),
            ("MAILCHUTE_LISTENER__0__ALLOW_IPS", "[\"10.0.0.0/8\"]"),
            ("MAILCHUTE_LISTENER__0__MAX_MESSAGE_SIZE", "10M"),
            ("MAILCHUTE_LISTENER__0__REQUIRE_TLS", "false"),
            ("MAILCHUTE_CONFIG", "/ignored"),
            ("HOME", "/root"),
        ],
    )
    .unwrap();
    let c = &l.config;
    assert_eq!(c.queue.workers, 4);
    assert_eq!(c.server.hostname.as_deref(), Some("mx.example.org"));
    assert_eq!(c.sinks["s3-archive"].table["path"].as_str(), Some("/b"));
    assert!(!c.sinks.contains_key("s3_archive"));
    assert_eq!(c.listeners[0].allow_ips, vec!["10.0.0.0/8".to_string()]);
    assert_eq!(c.listeners[0].max_message_size, Size(10 << 20));
    assert_eq!(l.overrides.len(), 6);
    assert_has(
        &describe(&l, &Summaries::default()),
        "override:  MAILCHUTE_QUEUE__WORKERS=4",
    );
}

#[test]
fn env_override_errors_name_the_variable() {
    let text = listener("");
    let e = with_env(&text, &[("MAILCHUTE_QUEUE__WORKERS", "0")]).unwrap_err();
    let p = e.problem().unwrap();
    assert_eq!(p.env.as_deref(), Some("MAILCHUTE_QUEUE__WORKERS"));
    assert_eq!(p.line, None);
    assert_eq!(
        e.to_string(),
        "t.toml: queue.workers (set by MAILCHUTE_QUEUE__WORKERS): must be at least 1"
    );

    let e = with_env(&text, &[("MAILCHUTE_LISTENER__0__MAX_MESSAGE_SIZE", "5X")])
        .unwrap_err()
        .to_string();
    assert_has(
        &e,
        "listener[0].max_message_size (set by MAILCHUTE_LISTENER__0__MAX_MESSAGE_SIZE): \"5X\": expected a size",
    );
    assert_has(&e, "expected a size like");

    let e = with_env(&text, &[("MAILCHUTE_LISTENER__0__COLOUR", "blue")])
        .unwrap_err()
        .to_string();
    assert_has(&e, "MAILCHUTE_LISTENER__0__COLOUR");
    assert_has(&e, "unknown key `colour`");

    let e = with_env(&text, &[("MAILCHUTE_LISTENER__3__NAME", "x")])
        .unwrap_err()
        .to_string();
    assert_has(&e, "MAILCHUTE_LISTENER__3__NAME");
    assert_has(&e, "index 3 does not exist");

    let e = with_env(&text, &[("MAILCHUTE_SINK__M__TYPE", "1")])
        .unwrap_err()
        .to_string();
    assert_has(&e, "sink.m.type (set by MAILCHUTE_SINK__M__TYPE)");

    // A broken file is reported as the file's error even with overrides present.
    let e = with_env(
        &listener("max_recipients = \"x\""),
        &[("MAILCHUTE_QUEUE__WORKERS", "2")],
    )
    .unwrap_err();
    assert!(e.problem().unwrap().line.is_some(), "{e}");
}

#[test]
fn describe_shows_precedence() {
    let dir = tempfile::tempdir().unwrap();
    let l = parse_str(example(), "example.toml", dir.path()).unwrap();
    // Sinks and filters described without their registries show their type; with them,
    // see sinks/tests.rs.
    let d = describe(&l, &Summaries::default());
    assert_has(&d, "config:    example.toml");
    assert_has(
        &d,
        &format!("data dir:  {}", dir.path().join("mailchute-data").display()),
    );
    assert_has(&d, "mx: 127.0.0.1:2525 smtp, queued, no tls");
    assert_has(&d, "lmtp: 127.0.0.1:2424 lmtp, sync");
    let pos = |s: &str| d.find(s).unwrap_or_else(|| panic!("{s} not in\n{d}"));
    assert!(pos("alice@example.org ") < pos("@example.com "));
    assert!(pos("@example.com ") < pos("/^bounce-.*@/ "));
    assert!(pos("/^bounce-.*@/ ") < pos("*  "));
    assert_has(&d, "-> archive -> filters tag-subject -> local, postfix");
    assert_has(&d, "postfix: smtp\n");
    assert_has(&d, "filters:\n  tag-subject: rewrite\n");
}

#[test]
fn validate_a_loaded_config_again() {
    let mut l = parse(BASE).unwrap();
    assert!(validate(&l).is_ok());
    l.config.queue.workers = 0;
    assert_has(
        &validate(&l).unwrap_err().to_string(),
        "queue.workers: must be at least 1",
    );
}

#[test]
fn dsn_sinks_must_be_defined() {
    let text = "[queue]\ndsn_sinks = [\"relay\"]\n\n[sink.box]\ntype = \"discard\"\n";
    let e = err(text);
    assert_has(&e, "t.toml:2: queue.dsn_sinks[0]");
    assert_has(&e, "sink \"relay\" is not defined (defined: box)");
    let ok = parse("[queue]\ndsn_sinks = [\"box\"]\n\n[sink.box]\ntype = \"discard\"\n").unwrap();
    assert_eq!(ok.config.queue.dsn_sinks, ["box"]);
}

#[test]
fn tcp_only_keys_are_refused_on_unix_listeners() {
    let unix =
        |extra: &str| format!("{BASE}\n[[listener]]\naddress = \"unix:/run/x.sock\"\n{extra}\n");
    for (extra, k) in [
        ("allow_ips = [\"10.0.0.0/8\"]", "allow_ips"),
        ("trusted = [\"127.0.0.0/8\"]", "trusted"),
        ("max_connections_per_ip = 5", "max_connections_per_ip"),
        ("proxy_protocol = true", "proxy_protocol"),
    ] {
        let text = unix(extra);
        let p = problem(&text);
        assert_eq!(p.key, format!("listener[0].{k}"), "{p}");
        assert_eq!(
            p.line,
            Some(text.lines().position(|l| l.starts_with(k)).unwrap() + 1)
        );
        assert_has(&p.message, "applies to TCP listeners only");
    }
    // Their defaults are fine: only a written key is a mistake.
    assert!(parse(&unix("")).is_ok());
    // Set from the environment, the variable is named.
    let e = with_env(
        &unix(""),
        &[("MAILCHUTE_LISTENER__0__TRUSTED", "[\"10.0.0.0/8\"]")],
    )
    .unwrap_err();
    assert_eq!(
        e.problem().unwrap().env.as_deref(),
        Some("MAILCHUTE_LISTENER__0__TRUSTED")
    );
    // On TCP they stay allowed.
    assert!(
        parse(&listener(
            "trusted = [\"10.0.0.0/8\"]\nproxy_protocol = true"
        ))
        .is_ok()
    );
}

#[test]
fn empty_paths_are_errors() {
    let p = problem(&format!("{BASE}[server]\ndata_dir = \"\"\n"));
    assert_eq!(p.key, "server.data_dir");
    assert_has(&p.message, "is empty");
    assert!(p.line.is_some(), "{p}");
    let p = problem(&listener(
        "tls = \"starttls\"\ncert = \"\"\nkey = \"k.pem\"",
    ));
    assert_eq!(p.key, "listener[0].cert");
    assert_has(&p.message, "is empty");
}

#[test]
fn env_overrides_that_read_as_numbers_are_taken_as_text_where_a_string_is_expected() {
    let text = listener("");
    let l = with_env(
        &text,
        &[
            ("MAILCHUTE_SERVER__HOSTNAME", "1234"),
            ("MAILCHUTE_SINK__M__PATH", "2024"),
            ("MAILCHUTE_QUEUE__WORKERS", "3"),
        ],
    )
    .unwrap();
    assert_eq!(l.config.server.hostname.as_deref(), Some("1234"));
    // A sink's key: only its kind knows it wants a string; the text is kept for it (see
    // sinks/tests.rs).
    assert_eq!(l.config.sinks["m"].env_text["path"], "2024");
    assert_eq!(l.config.queue.workers, 3);
    let marked: Vec<&str> = l
        .overrides
        .iter()
        .filter(|o| o.as_string)
        .map(|o| o.var.as_str())
        .collect();
    assert_eq!(marked, ["MAILCHUTE_SERVER__HOSTNAME"]);
    // A number where a number is expected stays one; a wrong one is still named.
    let e = with_env(
        &text,
        &[
            ("MAILCHUTE_SERVER__HOSTNAME", "1234"),
            ("MAILCHUTE_QUEUE__WORKERS", "many"),
        ],
    )
    .unwrap_err();
    assert_eq!(
        e.problem().unwrap().env.as_deref(),
        Some("MAILCHUTE_QUEUE__WORKERS"),
        "{e}"
    );
}

#[test]
fn the_embedded_default_is_valid_and_names_its_sink() {
    let c = Config::embedded(&base_dir()).unwrap();
    assert!(c.sinks.contains_key("maildir"));
    assert_has(EMBEDDED_TOML, "[sink.maildir]");
}

#[test]
fn the_deaddrop_example_loads_as_a_group_only_lmtp_socket_into_maildirs() {
    let dir = tempfile::tempdir().unwrap();
    let l = parse_str(
        super::example_deaddrop(),
        "example-deaddrop.toml",
        dir.path(),
    )
    .unwrap();
    let c = &l.config;
    assert_eq!(c.server.user.as_deref(), Some("mailchute"));
    assert_eq!(
        c.server.data_dir,
        std::path::Path::new("/var/spool/mailchute")
    );
    let [sock] = c.listeners.as_slice() else {
        panic!("one listener expected: {:?}", c.listeners);
    };
    assert!(sock.address.starts_with("unix:/"), "{}", sock.address);
    assert_eq!(sock.protocol, Protocol::Lmtp);
    assert_eq!(sock.socket_mode.as_deref(), Some("0770"));
    assert_eq!(sock.socket_group.as_deref(), Some("mailchute"));
    let catch_all = c
        .routes
        .iter()
        .find(|r| r.matches == ["*"])
        .expect("a catch-all");
    let users = c
        .routes
        .iter()
        .find(|r| r.matches.iter().any(|m| m.starts_with('@')));
    let users = users.expect("a route for local users");
    let sink = &c.sinks[&users.sinks[0]];
    assert_eq!(sink.kind, "maildir");
    assert_has(&format!("{:?}", sink), "{local}");
    assert_eq!(c.sinks[&catch_all.sinks[0]].kind, "maildir");
}
