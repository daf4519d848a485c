//! The sinks registry against whole configs: types, keys, checks, paths and summaries as an
//! operator sees them. Moved here from config/tests.rs (the config layer no longer types
//! sink tables); each asserts what it asserted there, through the registry.

use super::*;
use crate::config::{
    ConfigError, Loaded, Problem, Summaries, describe, example, load_file_with_env, parse_str,
    parse_str_with_env,
};
use crate::spool::commit::Committer;
use std::path::Path;

/// A valid config; tests append what they exercise.
const BASE: &str = "\
[[route]]
name = \"all\"
match = [\"*\"]
sinks = [\"m\"]

[sink.m]
type = \"maildir\"
path = \"Maildir\"
";

/// Builds every sink of `loaded` as `serve` does; the first error placed in the file.
fn build_all(loaded: &Loaded) -> Result<Summaries, ConfigError> {
    let ctx = SinkContext {
        hostname: "mx.test".into(),
        committer: Arc::new(Committer::new()),
        base_dir: loaded.base_dir.clone(),
    };
    let mut summaries = Summaries::default();
    for (name, table) in &loaded.config.sinks {
        let built =
            build(name, table, &ctx).map_err(|e| loaded.error(&e.path(), e.problem.message))?;
        summaries.sinks.insert(name.clone(), built.summary);
    }
    Ok(summaries)
}

fn load_and_build(text: &str, env: &[(&str, &str)]) -> Result<Summaries, ConfigError> {
    let env = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let loaded = parse_str_with_env(text, "t.toml", &std::env::temp_dir(), env)?;
    build_all(&loaded)
}

fn problem(text: &str) -> Problem {
    match load_and_build(text, &[]) {
        Ok(_) => panic!("expected an error for:\n{text}"),
        Err(e) => e.problem().cloned().expect("an Invalid error"),
    }
}

fn err(text: &str) -> String {
    problem(text).to_string()
}

fn assert_has(haystack: &str, needle: &str) {
    assert!(haystack.contains(needle), "{needle:?} not in:\n{haystack}");
}

#[test]
fn the_example_has_every_sink_type_and_builds() {
    let dir = tempfile::tempdir().unwrap();
    let l = parse_str(example(), "example.toml", dir.path()).unwrap();
    let mut shown: Vec<&str> = l.config.sinks.values().map(|s| s.kind.as_str()).collect();
    shown.sort();
    let mut all: Vec<&str> = types().collect();
    all.sort();
    if cfg!(not(all(feature = "s3", feature = "ses"))) {
        // The example shows the s3 and ses sinks, which this build does not have.
        return;
    }
    assert_eq!(shown, all);
    let summaries = build_all(&l).unwrap();
    assert_eq!(
        summaries.sinks["local"],
        format!(
            "maildir {}/mailchute-data/Maildir/{{local}}",
            dir.path().display()
        )
    );
    let d = describe(&l, &summaries);
    assert_has(
        &d,
        "postfix: smtp relay to 127.0.0.1:10025, tls opportunistic",
    );
    assert_has(&d, "discard: discard");
}

#[test]
fn the_embedded_default_resolves_against_the_cwd() {
    let cwd = std::env::current_dir().unwrap();
    let missing = Path::new("/nonexistent/mailchute.toml");
    let l = crate::config::load_with(None, None, missing, true, Vec::new()).unwrap();
    let s = build_all(&l).unwrap();
    assert_eq!(
        s.sinks["maildir"],
        format!("maildir {}", cwd.join("mailchute-data/Maildir").display())
    );
}

#[test]
fn relative_paths_resolve_against_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("conf");
    std::fs::create_dir_all(conf.join("bin")).unwrap();
    let deliver = conf.join("bin/deliver");
    std::fs::write(&deliver, "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(
        &deliver,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    std::fs::write(conf.join("ca.pem"), "").unwrap();
    let file = conf.join("m.toml");
    let text = format!(
        "{BASE}
[sink.x]
type = \"exec\"
command = [\"./bin/deliver\", \"{{rcpt}}\"]
[sink.y]
type = \"exec\"
command = [\"sh\"]
[sink.r]
type = \"lmtp\"
address = \"unix:run/lmtp\"
tls = \"none\"
[sink.abs]
type = \"mbox\"
path = \"/var/mail/{{local}}\"
"
    );
    std::fs::write(&file, text).unwrap();
    let l = load_file_with_env(&file, Vec::new()).unwrap();
    let s = build_all(&l).unwrap().sinks;
    assert_eq!(
        s["x"],
        format!(
            "exec [{:?}, \"{{rcpt}}\"], timeout 1m",
            deliver.display().to_string()
        )
    );
    assert_eq!(s["y"], "exec [\"sh\"], timeout 1m");
    assert_eq!(
        s["m"],
        format!("maildir {}", conf.join("Maildir").display())
    );
    assert_eq!(
        s["r"],
        format!("lmtp to unix:{}, tls none", conf.join("run/lmtp").display())
    );
    assert_eq!(s["abs"], "mbox /var/mail/{local}");
}

#[test]
fn absurd_durations_are_errors_at_their_key() {
    let huge = "\"200000000000000d\"";
    for text in [
        format!("{BASE}\n[sink.x]\ntype = \"exec\"\ncommand = [\"true\"]\ntimeout = {huge}\n"),
        format!(
            "{BASE}\n[sink.x]\ntype = \"smtp\"\naddress = \"127.0.0.1:25\"\ntimeout = 9999999999999\n"
        ),
    ] {
        let line = text
            .lines()
            .position(|l| l.contains("200000000000000d") || l.contains("9999999999999"))
            .unwrap()
            + 1;
        let p = problem(&text);
        assert_eq!(
            (p.line, p.key.as_str()),
            (Some(line), "sink.x.timeout"),
            "{p}"
        );
        assert_has(&p.message, "longer than 36500d (100 years)");
    }
}

#[test]
fn unknown_keys_and_wrong_types_name_file_line_and_key() {
    // The key's own line, not the table header.
    let p = problem(&format!("{BASE}colour = 1\n"));
    assert_eq!(p.line, Some(BASE.lines().count() + 1));
    assert_eq!(p.key, "sink.m.colour");
    assert_has(&p.message, "unknown key `colour`");
    assert_has(&p.message, "line_endings");

    let p = problem(&format!("{BASE}create = \"yes\"\n"));
    assert_eq!(p.line, Some(BASE.lines().count() + 1));
    assert_eq!(p.key, "sink.m.create");
    assert_has(&p.message, "expected a boolean");

    let p = problem(&format!("{BASE}[sink.n]\ntype = \"mh\"\n"));
    assert_eq!(p.key, "sink.n");
    assert_has(&p.message, "missing key `path`");
}

#[test]
fn sink_types() {
    let p = problem(&format!(
        "{BASE}[sink.mg]\ntype = \"mongodb\"\nuri = \"h\"\n"
    ));
    assert_eq!(p.key, "sink.mg.type");
    assert_eq!(p.line, Some(BASE.lines().count() + 2));
    assert_has(
        &p.message,
        "\"mongodb\" is not available in this version yet",
    );
    assert_has(
        &p.message,
        "maildir, mh, mbox, smtp, lmtp, exec, discard, imap",
    );
    // Built without the `s3` feature, the type is one of the later ones.
    let s3 = err(&format!("{BASE}[sink.x]\ntype = \"s3\"\n"));
    if cfg!(feature = "s3") {
        assert_has(&s3, "missing key `bucket`");
    } else {
        assert_has(&s3, "is not available in this version yet");
    }
    let ses = err(&format!(
        "{BASE}[sink.x]\ntype = \"ses\"\nmax_send_rate = 0\n"
    ));
    if cfg!(feature = "ses") {
        assert_has(&ses, "sink.x.max_send_rate: 0: expected a number above 0");
    } else {
        assert_has(&ses, "is not available in this version yet");
    }
    assert_has(
        &err(&format!("{BASE}[sink.x]\ntype = \"mongodb\"\n")),
        "is not available in this version yet",
    );
    let e = err(&format!("{BASE}[sink.x]\ntype = \"maildri\"\n"));
    assert_has(
        &e,
        "sink.x.type: unknown sink type \"maildri\": expected one of maildir, mh, mbox",
    );
    let e = err(&format!("{BASE}[sink.x]\ntype = \"exec\"\ncommand = []\n"));
    assert_has(&e, "sink.x.command: expected the program");
    let e = err(&format!(
        "{BASE}[sink.x]\ntype = \"smtp\"\naddress = \"nowhere\"\n"
    ));
    assert_has(&e, "sink.x.address: \"nowhere\": expected \"host:port\"");
    let e = err(&format!(
        "{BASE}[sink.x]\ntype = \"smtp\"\naddress = \"a:25\"\nusername = \"u\"\n"
    ));
    assert_has(&e, "needs a password");
}

#[test]
fn empty_paths_are_errors() {
    let p = problem(&format!(
        "{BASE}[sink.up]\ntype = \"smtp\"\naddress = \"127.0.0.1:25\"\nca_file = \"\"\n"
    ));
    assert_eq!(p.key, "sink.up.ca_file");
    let p = problem(&format!("{BASE}[sink.x]\ntype = \"mbox\"\npath = \"\"\n"));
    assert_eq!(p.key, "sink.x.path");
}

#[test]
fn env_overrides_reach_the_sinks() {
    let e = load_and_build(BASE, &[("MAILCHUTE_SINK__M__TYPE", "mongodb")])
        .unwrap_err()
        .to_string();
    assert_has(&e, "sink.m.type (set by MAILCHUTE_SINK__M__TYPE)");
    // A number where the sink wants a string is taken as its text.
    let s = load_and_build(BASE, &[("MAILCHUTE_SINK__M__PATH", "2024")]).unwrap();
    assert!(s.sinks["m"].ends_with("/2024"), "{}", s.sinks["m"]);
    // A wrong value is named by its variable.
    let e = load_and_build(BASE, &[("MAILCHUTE_SINK__M__CREATE", "maybe")])
        .unwrap_err()
        .to_string();
    assert_has(&e, "sink.m.create (set by MAILCHUTE_SINK__M__CREATE)");
}
