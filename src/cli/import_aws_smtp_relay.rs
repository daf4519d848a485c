//! `mailchute config import-aws-smtp-relay -- FLAGS...`: aws-smtp-relay's command line (and
//! the environment it reads: `BCRYPT_HASH`, `PASSWORD`, `TLS_KEY_PASS`) as one mailchute
//! listener, one catch-all route and one `ses` sink, printed as TOML to review and adopt.
//!
//! Flags are taken in each spelling aws-smtp-relay has had: Go's `-a :1025` / `-a=:1025`,
//! pflag's long names (`--addr`), and the TLS switches bare (`-s`) or with a value
//! (`-s true`, `--startTLS=false`). What aws-smtp-relay did is kept, including what
//! mailchute would not do by default (an open relay on every interface, answers only after
//! SES took the message); each such line carries a comment saying so.

use std::fmt::Write;

/// What the flags say, before it becomes TOML.
#[derive(Debug, Default, PartialEq)]
struct Relay {
    addr: Option<String>,
    name: Option<String>,
    host: Option<String>,
    cert: Option<String>,
    key: Option<String>,
    start_tls: bool,
    only_tls: bool,
    relay_api: Option<String>,
    set_name: Option<String>,
    ips: Option<String>,
    user: Option<String>,
    allow_from: Option<String>,
    deny_to: Option<String>,
}

/// The flags that take a value: (short, long, field).
const VALUE_FLAGS: &[(&str, &str)] = &[
    ("a", "addr"),
    ("n", "name"),
    ("h", "host"),
    ("c", "certFile"),
    ("k", "keyFile"),
    ("r", "relayAPI"),
    ("e", "setName"),
    ("i", "ips"),
    ("u", "user"),
    ("l", "allowFrom"),
    ("d", "denyTo"),
];

/// The TLS switches: a bare flag, or a value that reads as a boolean.
const SWITCHES: &[(&str, &str)] = &[("s", "startTLS"), ("t", "onlyTLS")];

fn parse_bool(flag: &str, v: &str) -> Result<bool, String> {
    match v.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" | "t" => Ok(true),
        "false" | "0" | "no" | "off" | "f" | "" => Ok(false),
        _ => Err(format!("{flag}: expected true or false, got {v:?}")),
    }
}

/// Which of the known flags `arg` is (`-a`, `--addr`, `-addr`), and an inline `=value`.
fn flag_of(arg: &str) -> Option<(&'static str, Option<&str>)> {
    let body = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-'))?;
    let (name, inline) = match body.split_once('=') {
        Some((n, v)) => (n, Some(v)),
        None => (body, None),
    };
    VALUE_FLAGS
        .iter()
        .chain(SWITCHES)
        .find(|(short, long)| name == *short || name == *long)
        .map(|(short, _)| (*short, inline))
}

fn parse(args: &[String]) -> Result<Relay, String> {
    let mut r = Relay::default();
    let mut it = args.iter().peekable();
    while let Some(arg) = it.next() {
        let Some((flag, inline)) = flag_of(arg) else {
            return Err(format!(
                "{arg:?}: not an aws-smtp-relay flag (known: -a -n -h -c -k -s -t -r -e -i -u -l -d)"
            ));
        };
        if SWITCHES.iter().any(|(s, _)| *s == flag) {
            let on = match inline {
                Some(v) => parse_bool(arg, v)?,
                // pflag's string form takes the next word when it is a boolean.
                None => match it.peek().map(|v| parse_bool(arg, v)) {
                    Some(Ok(b)) => {
                        it.next();
                        b
                    }
                    _ => true,
                },
            };
            match flag {
                "s" => r.start_tls = on,
                _ => r.only_tls = on,
            }
            continue;
        }
        let value = match inline {
            Some(v) => v.to_string(),
            None => it
                .next()
                .ok_or_else(|| format!("{arg}: needs a value"))?
                .clone(),
        };
        let slot = match flag {
            "a" => &mut r.addr,
            "n" => &mut r.name,
            "h" => &mut r.host,
            "c" => &mut r.cert,
            "k" => &mut r.key,
            "r" => &mut r.relay_api,
            "e" => &mut r.set_name,
            "i" => &mut r.ips,
            "u" => &mut r.user,
            "l" => &mut r.allow_from,
            _ => &mut r.deny_to,
        };
        *slot = Some(value);
    }
    Ok(r)
}

/// aws-smtp-relay's `:1025` (every interface) as a socket address; `localhost:PORT` (Go
/// resolved names, a listener here binds an IP) as `127.0.0.1:PORT`. What Go could not
/// listen on either (no port, `::1:25` without brackets) is refused here, naming the flag,
/// not left for `config check` to find in the printed file.
fn listen_address(addr: &str) -> Result<String, String> {
    let a = match (addr.strip_prefix(':'), addr.strip_prefix("localhost:")) {
        (Some(port), _) => format!("0.0.0.0:{port}"),
        (None, Some(port)) => format!("127.0.0.1:{port}"),
        (None, None) => addr.to_string(),
    };
    match crate::config::ListenAddr::parse(&a) {
        Ok(crate::config::ListenAddr::Tcp(_)) => Ok(a),
        _ => Err(format!(
            "-a {addr:?}: expected \":PORT\" or \"IP:PORT\" (e.g. \":1025\",              \"127.0.0.1:1025\", \"[::]:25\")"
        )),
    }
}

fn is_loopback(addr: &str) -> bool {
    addr.starts_with("127.") || addr.starts_with("[::1]")
}

/// `-c`/`-k` relative to where aws-smtp-relay ran (this command's working directory), not
/// to the directory the printed config will be saved in.
fn absolute(flag: &str, path: &str) -> Result<String, String> {
    std::path::absolute(path)
        .map(|p| p.display().to_string())
        .map_err(|e| format!("{flag} {path:?}: {e}"))
}

/// `-l` / `-d` compile here as the listener will compile them.
fn check_regex(flag: &str, re: &str) -> Result<(), String> {
    regex::Regex::new(re)
        .map(|_| ())
        .map_err(|e| format!("{flag} {re:?}: not a valid regex: {e}"))
}

/// The environment aws-smtp-relay reads, as the importer sees it.
pub struct Env<'a> {
    pub var: &'a dyn Fn(&str) -> Option<String>,
    /// The key file's text, to tell an encrypted key (which needs `TLS_KEY_PASS`).
    pub read: &'a dyn Fn(&str) -> Option<String>,
}

/// The TOML for aws-smtp-relay's flags, or why they cannot be read.
pub fn convert(args: &[String], env: &Env) -> Result<String, String> {
    let r = parse(args)?;
    let set = |v: &str| (env.var)(v).is_some_and(|s| !s.is_empty());
    match r.relay_api.as_deref() {
        None | Some("ses") | Some("pinpoint") => {}
        Some(other) => return Err(format!("-r {other:?}: expected ses or pinpoint")),
    }
    if r.cert.is_some() != r.key.is_some() {
        return Err("-c and -k: TLS needs both the certificate and the key".into());
    }
    if (r.start_tls || r.only_tls) && r.cert.is_none() {
        return Err("-s / -t need a certificate and key (-c, -k)".into());
    }
    let cert = r.cert.as_deref().map(|c| absolute("-c", c)).transpose()?;
    let key = r.key.as_deref().map(|k| absolute("-k", k)).transpose()?;
    let address = listen_address(r.addr.as_deref().unwrap_or(":1025"))?;
    let ips: Option<Vec<String>> = r.ips.as_ref().map(|ips| {
        ips.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()
    });
    if let Some(ips) = &ips {
        crate::config::IpList::parse(ips).map_err(|e| format!("-i: {e}"))?;
    }
    if let Some(l) = &r.allow_from {
        check_regex("-l", l)?;
    }
    if let Some(d) = &r.deny_to {
        check_regex("-d", d)?;
    }
    if let Some(u) = &r.user
        && (u.is_empty() || u.chars().any(|c| c.is_control() || c == ' '))
    {
        return Err(format!("-u {u:?}: expected a user name without spaces"));
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Imported from aws-smtp-relay's flags by `mailchute config import-aws-smtp-relay`.\n\
         # AWS_REGION and the credential chain are read as aws-smtp-relay read them."
    );
    if let Some(h) = &r.host {
        let _ = writeln!(out, "\n[server]\nhostname = {}", quote(h));
    }
    let _ = writeln!(
        out,
        "\n[[listener]]\nname = \"relay\"\naddress = {}\nprotocol = \"smtp\"",
        quote(&address)
    );
    let _ = writeln!(
        out,
        "# aws-smtp-relay answered after SES took the message; \"queued\" would spool it\n\
         # and retry while SES is unreachable.\nmode = \"sync\""
    );
    if let (Some(cert), Some(key)) = (&cert, &key) {
        let tls = if r.only_tls { "implicit" } else { "starttls" };
        let _ = writeln!(
            out,
            "tls = \"{tls}\"\ncert = {}\nkey = {}",
            quote(cert),
            quote(key)
        );
        if r.start_tls && !r.only_tls {
            let _ = writeln!(out, "require_tls = true");
        }
        let encrypted = (env.read)(key).is_some_and(|k| k.contains("ENCRYPTED"));
        if encrypted || set("TLS_KEY_PASS") {
            let _ = writeln!(out, "key_passphrase_env = \"TLS_KEY_PASS\"");
        }
    }
    if r.user.is_some() {
        let cram = set("PASSWORD");
        let mechanisms = if cram {
            "[\"plain\", \"login\", \"cram-md5\"]"
        } else {
            "[\"plain\", \"login\"]"
        };
        let _ = writeln!(out, "auth = {mechanisms}");
        if r.cert.is_some() {
            let _ = writeln!(
                out,
                "# PLAIN and LOGIN are offered only after STARTTLS (or on the TLS port)."
            );
        } else {
            let _ = writeln!(
                out,
                "# No TLS: aws-smtp-relay took passwords in the clear; so does this line.\n\
                 allow_plaintext_auth = true"
            );
        }
        if r.ips.is_some() {
            // aws-smtp-relay wanted both: an allowed address and the password.
            let _ = writeln!(out, "require_auth = true");
        }
    }
    if let Some(ips) = &ips {
        let list: Vec<String> = ips.iter().map(|s| quote(s)).collect();
        let _ = writeln!(out, "allow_ips = [{}]", list.join(", "));
    }
    if let Some(l) = &r.allow_from {
        let _ = writeln!(out, "sender_allow = {}", quote(l));
    }
    if let Some(d) = &r.deny_to {
        let _ = writeln!(
            out,
            "# Refused at RCPT (550 5.7.1), the other recipients go on.\nrecipient_deny = {}",
            quote(d)
        );
    }
    if r.user.is_none() && r.ips.is_none() && !is_loopback(&address) {
        let _ = writeln!(
            out,
            "# aws-smtp-relay relayed for anyone who could connect; mailchute refuses that\n\
             # unless said. Better: allow_ips = [\"10.0.0.0/8\"] or auth with a user.\nopen = true"
        );
    }
    if let Some(name) = &r.name {
        let _ = writeln!(
            out,
            "# -n {}: the greeting names mailchute; the service name is not carried over.",
            quote(name)
        );
    }
    if let Some(user) = &r.user {
        let _ = writeln!(out, "\n[[listener.user]]\nname = {}", quote(user));
        if set("BCRYPT_HASH") || !set("PASSWORD") {
            let _ = writeln!(out, "bcrypt_env = \"BCRYPT_HASH\"");
        }
        if set("PASSWORD") {
            let _ = writeln!(
                out,
                "# The plaintext secret CRAM-MD5 needs (aws-smtp-relay's PASSWORD).\n\
                 password_env = \"PASSWORD\""
            );
        }
    }
    let _ = writeln!(
        out,
        "\n[[route]]\nname = \"ses\"\nmatch = [\"*\"]\nsinks = [\"ses\"]\n\n[sink.ses]\ntype = \"ses\""
    );
    if r.relay_api.as_deref() == Some("pinpoint") {
        let _ = writeln!(
            out,
            "# -r pinpoint: Amazon Pinpoint's email sending is SES v2 now; this sink sends there."
        );
    }
    if let Some(set_name) = &r.set_name {
        let _ = writeln!(out, "configuration_set = {}", quote(set_name));
    }
    Ok(out)
}

/// A TOML basic string.
fn quote(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &[&str]) -> Vec<String> {
        s.iter().map(|a| a.to_string()).collect()
    }

    fn env_with(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
    }

    fn no_file(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn every_spelling_of_the_flags_is_read() {
        let short = parse(&args(&["-a", ":2525", "-u", "app", "-s", "-e", "cs"])).unwrap();
        let long = parse(&args(&[
            "--addr=:2525",
            "--user",
            "app",
            "--startTLS",
            "true",
            "-setName=cs",
        ]))
        .unwrap();
        assert_eq!(short, long);
        assert!(short.start_tls);
        assert!(!parse(&args(&["-t=false"])).unwrap().only_tls);
        assert!(
            parse(&args(&["-x"]))
                .unwrap_err()
                .contains("not an aws-smtp-relay flag")
        );
        assert!(parse(&args(&["-a"])).unwrap_err().contains("needs a value"));
        assert!(
            parse(&args(&["-s=maybe"]))
                .unwrap_err()
                .contains("true or false")
        );
    }

    #[test]
    fn a_user_behind_starttls_with_an_allow_list_and_filters() {
        let var = env_with(&[("BCRYPT_HASH", "$2y$10$x"), ("PASSWORD", "pw")]);
        let read = |_: &str| Some("-----BEGIN ENCRYPTED PRIVATE KEY-----".to_string());
        let toml = convert(
            &args(&[
                "-a",
                ":1025",
                "-h",
                "relay.example.org",
                "-c",
                "/c.pem",
                "-k",
                "/k.pem",
                "-s",
                "-u",
                "app",
                "-i",
                "10.0.0.1,10.0.0.2",
                "-l",
                "@example\\.org$",
                "-d",
                "^bad@",
                "-e",
                "cs",
                "-r",
                "pinpoint",
            ]),
            &Env {
                var: &var,
                read: &read,
            },
        )
        .unwrap();
        let t: toml::Table = toml::from_str(&toml).unwrap_or_else(|e| panic!("{e}\n{toml}"));
        assert_eq!(t["server"]["hostname"].as_str(), Some("relay.example.org"));
        let l = &t["listener"][0];
        assert_eq!(l["address"].as_str(), Some("0.0.0.0:1025"));
        assert_eq!(l["tls"].as_str(), Some("starttls"));
        assert_eq!(l["require_tls"].as_bool(), Some(true));
        assert_eq!(l["key_passphrase_env"].as_str(), Some("TLS_KEY_PASS"));
        assert_eq!(l["auth"].as_array().map(Vec::len), Some(3));
        assert_eq!(l["require_auth"].as_bool(), Some(true));
        assert_eq!(l["allow_ips"][1].as_str(), Some("10.0.0.2"));
        assert_eq!(l["sender_allow"].as_str(), Some("@example\\.org$"));
        assert_eq!(l["recipient_deny"].as_str(), Some("^bad@"));
        assert_eq!(l["user"][0]["name"].as_str(), Some("app"));
        assert_eq!(l["user"][0]["bcrypt_env"].as_str(), Some("BCRYPT_HASH"));
        assert_eq!(l["user"][0]["password_env"].as_str(), Some("PASSWORD"));
        assert!(l.get("open").is_none());
        assert_eq!(t["sink"]["ses"]["type"].as_str(), Some("ses"));
        assert_eq!(t["sink"]["ses"]["configuration_set"].as_str(), Some("cs"));
        assert!(toml.contains("Pinpoint"), "{toml}");
    }

    #[test]
    fn no_flags_is_an_open_relay_said_out_loud() {
        let var = env_with(&[]);
        let toml = convert(
            &[],
            &Env {
                var: &var,
                read: &no_file,
            },
        )
        .unwrap();
        let t: toml::Table = toml::from_str(&toml).unwrap();
        assert_eq!(t["listener"][0]["address"].as_str(), Some("0.0.0.0:1025"));
        assert_eq!(t["listener"][0]["open"].as_bool(), Some(true));
        assert!(toml.contains("relayed for anyone"), "{toml}");
    }

    #[cfg(feature = "ses")]
    #[test]
    fn the_import_passes_config_check() {
        let dir = tempfile::tempdir().unwrap();
        let var = env_with(&[]);
        let env = Env {
            var: &var,
            read: &no_file,
        };
        for flags in [
            args(&[
                "-a",
                "127.0.0.1:1025",
                "-e",
                "cs",
                "-l",
                "@example\\.org$",
                "-d",
                "^no@",
            ]),
            args(&["-i", "10.0.0.1,10.0.0.2", "-r", "pinpoint"]),
            args(&[]),
        ] {
            let toml = convert(&flags, &env).unwrap();
            let loaded = crate::config::parse_str(&toml, "imported.toml", dir.path())
                .unwrap_or_else(|e| panic!("{e}\n{toml}"));
            crate::cli::serve::check(&loaded).unwrap_or_else(|e| panic!("{e}\n{toml}"));
        }
    }

    #[test]
    fn values_the_config_would_refuse_are_refused_naming_the_flag() {
        let var = env_with(&[]);
        let env = Env {
            var: &var,
            read: &no_file,
        };
        for (flags, expect) in [
            (&["-a", "1025"][..], "-a \"1025\": expected"),
            (&["-a", ":"], "-a \":\""),
            (&["-a", "::1:25"], "-a \"::1:25\""),
            (&["-a", "mx.example.org:25"], "-a \"mx.example.org:25\""),
            (
                &["-i", "10.0.0.0/8,junk"],
                "-i: \"junk\": expected an IP address",
            ),
            (&["-i", "10.0.0.0/33"], "-i: \"10.0.0.0/33\""),
            (&["-l", "(unclosed"], "-l \"(unclosed\": not a valid regex"),
            (&["-d", "[z-a]"], "-d \"[z-a]\": not a valid regex"),
            (&["-u", "a b"], "-u \"a b\": expected a user name"),
        ] {
            let e = convert(&args(flags), &env).unwrap_err();
            assert!(e.contains(expect), "{flags:?}: {e}");
        }
        // Go listened on localhost:PORT; here it is the loopback address.
        let t: toml::Table =
            toml::from_str(&convert(&args(&["-a", "localhost:2525"]), &env).unwrap()).unwrap();
        assert_eq!(t["listener"][0]["address"].as_str(), Some("127.0.0.1:2525"));
        assert!(t["listener"][0].get("open").is_none());
        // Relative -c / -k: to this directory, as aws-smtp-relay read them, whatever
        // directory the output is saved in.
        let t: toml::Table =
            toml::from_str(&convert(&args(&["-c", "c.pem", "-k", "k.pem"]), &env).unwrap())
                .unwrap();
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(
            t["listener"][0]["cert"].as_str(),
            Some(cwd.join("c.pem").to_str().unwrap())
        );
        assert_eq!(
            t["listener"][0]["key"].as_str(),
            Some(cwd.join("k.pem").to_str().unwrap())
        );
    }

    #[test]
    fn contradictions_are_refused() {
        let var = env_with(&[]);
        let env = Env {
            var: &var,
            read: &no_file,
        };
        assert!(
            convert(&args(&["-c", "/c.pem"]), &env)
                .unwrap_err()
                .contains("both")
        );
        assert!(
            convert(&args(&["-t"]), &env)
                .unwrap_err()
                .contains("certificate")
        );
        assert!(
            convert(&args(&["-r", "sns"]), &env)
                .unwrap_err()
                .contains("ses or pinpoint")
        );
    }
}
