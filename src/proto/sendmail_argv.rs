//! The `sendmail` command line, as Postfix's `sendmail(1)` reads it: getopt-style flags
//! (clustered, `-ti`; a value attached, `-FCronDaemon`, or the next word, `-f sender`),
//! then recipients; `--` ends the flags. What scripts and cron pass must be taken, so
//! options that mean nothing here are accepted and noted (shown with `-v`) rather than
//! refused; only what would change the outcome and cannot be done is an error.

/// How the message body is declared (`-B`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyType {
    SevenBit,
    EightBitMime,
}

/// DSN `NOTIFY` (`-N`): `never`, or any of `success`, `failure`, `delay`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Notify {
    pub never: bool,
    pub success: bool,
    pub failure: bool,
    pub delay: bool,
}

/// DSN `RET` (`-R`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ret {
    Full,
    Headers,
}

/// What the invocation asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// `-bm` (the default): read one message from standard input and deliver it.
    Deliver,
    /// `-bs`: speak SMTP on standard input and output.
    Smtp,
    /// `-bi`, `-I` (`newaliases`): there is no aliases database; nothing to do.
    NewAliases,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendmailArgs {
    pub action: Action,
    /// `-t`: recipients from the To, Cc and Bcc headers (Bcc then removed).
    pub extract_recipients: bool,
    /// A line holding only `.` ends the message; `-i` / `-oi` turn that off.
    pub dot_ends_input: bool,
    /// `-f` / `-r`.
    pub sender: Option<String>,
    /// `-F`: the full name for a From header that has to be made.
    pub full_name: Option<String>,
    pub body: Option<BodyType>,
    pub notify: Option<Notify>,
    pub ret: Option<Ret>,
    /// `-V`: the DSN envelope id.
    pub envid: Option<String>,
    /// `-v`, once per occurrence.
    pub verbose: u8,
    /// `-C`: the config file.
    pub config: Option<String>,
    pub recipients: Vec<String>,
    /// Options taken but meaningless here, for `-v` to show.
    pub ignored: Vec<String>,
}

impl Default for SendmailArgs {
    fn default() -> Self {
        SendmailArgs {
            action: Action::Deliver,
            extract_recipients: false,
            dot_ends_input: true,
            sender: None,
            full_name: None,
            body: None,
            notify: None,
            ret: None,
            envid: None,
            verbose: 0,
            config: None,
            recipients: Vec::new(),
            ignored: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArgError {
    #[error("invalid option -- '{0}'")]
    Invalid(char),
    #[error("option requires an argument -- '{0}'")]
    MissingValue(char),
    #[error("-{flag} {value:?}: expected {expected}")]
    BadValue {
        flag: char,
        value: String,
        expected: &'static str,
    },
    /// A mode this command does not have; `hint` says where it is instead.
    #[error("-{flag}: {hint}")]
    Unsupported { flag: String, hint: &'static str },
}

/// Flags that take a value (attached or the next word), as in Postfix's getopt string.
/// (`-q` is apart: its interval is optional, `-q` or `-q30m`.)
const TAKES_VALUE: &str = "ABCFLNORVXbefhopr";

/// Reads `args` (without the program name).
pub fn parse<S: AsRef<str>>(args: &[S]) -> Result<SendmailArgs, ArgError> {
    let mut out = SendmailArgs::default();
    let mut i = 0;
    while i < args.len() {
        let arg = args[i].as_ref();
        i += 1;
        if arg == "--" {
            out.recipients
                .extend(args[i..].iter().map(|a| a.as_ref().to_string()));
            break;
        }
        // glibc's getopt (which Postfix's sendmail uses) lets flags follow recipients.
        let Some(cluster) = arg.strip_prefix('-').filter(|c| !c.is_empty()) else {
            out.recipients.push(arg.to_string());
            continue;
        };
        for (at, flag) in cluster.char_indices() {
            if flag == 'q' {
                return Err(ArgError::Unsupported {
                    flag: cluster[at..].to_string(),
                    hint: "mailchute's daemon runs its own queue (see `mailchute queue retry`)",
                });
            }
            if !TAKES_VALUE.contains(flag) {
                apply_switch(&mut out, flag)?;
                continue;
            }
            let rest = &cluster[at + flag.len_utf8()..];
            let value = if !rest.is_empty() {
                rest.to_string()
            } else if i < args.len() {
                i += 1;
                args[i - 1].as_ref().to_string()
            } else {
                return Err(ArgError::MissingValue(flag));
            };
            apply_value(&mut out, flag, value)?;
            break;
        }
    }
    Ok(out)
}

fn apply_switch(out: &mut SendmailArgs, flag: char) -> Result<(), ArgError> {
    match flag {
        't' => out.extract_recipients = true,
        'i' => out.dot_ends_input = false,
        'v' => out.verbose = out.verbose.saturating_add(1),
        'I' => out.action = Action::NewAliases,
        'G' | 'U' | 'm' | 'n' | 'c' | 'x' => out.ignored.push(format!("-{flag}")),
        other => return Err(ArgError::Invalid(other)),
    }
    Ok(())
}

fn apply_value(out: &mut SendmailArgs, flag: char, value: String) -> Result<(), ArgError> {
    let bad = |expected| ArgError::BadValue {
        flag,
        value: value.clone(),
        expected,
    };
    match flag {
        'f' | 'r' => out.sender = Some(value),
        'F' => out.full_name = Some(value),
        'C' => out.config = Some(value),
        'V' => out.envid = Some(value),
        'B' => {
            out.body = Some(match value.to_ascii_uppercase().as_str() {
                "7BIT" => BodyType::SevenBit,
                "8BITMIME" => BodyType::EightBitMime,
                _ => return Err(bad("7BIT or 8BITMIME")),
            })
        }
        'N' => out.notify = Some(parse_notify(&value).ok_or_else(|| bad(NOTIFY_EXPECTED))?),
        'R' => {
            out.ret = Some(match value.to_ascii_lowercase().as_str() {
                "full" => Ret::Full,
                "hdrs" => Ret::Headers,
                _ => return Err(bad("full or hdrs")),
            })
        }
        'b' => out.action = parse_mode(&value)?,
        // `-oi` is the one -o option with a meaning here; `-oem`, `-odb`, `-oQ…` are not.
        'o' if value == "i" => out.dot_ends_input = false,
        _ => out.ignored.push(format!("-{flag}{value}")),
    }
    Ok(())
}

const NOTIFY_EXPECTED: &str = "never, or a list of success, failure, delay";

fn parse_notify(value: &str) -> Option<Notify> {
    let mut n = Notify::default();
    for word in value.split(',').map(str::trim) {
        match word.to_ascii_lowercase().as_str() {
            "never" => n.never = true,
            "success" => n.success = true,
            "failure" => n.failure = true,
            "delay" => n.delay = true,
            _ => return None,
        }
    }
    // RFC 3461: NEVER stands alone.
    if n.never && (n.success || n.failure || n.delay) {
        return None;
    }
    Some(n)
}

fn parse_mode(value: &str) -> Result<Action, ArgError> {
    let unsupported = |hint| {
        Err(ArgError::Unsupported {
            flag: format!("b{value}"),
            hint,
        })
    };
    match value {
        "m" => Ok(Action::Deliver),
        "s" => Ok(Action::Smtp),
        "i" => Ok(Action::NewAliases),
        "d" => unsupported("run the daemon with `mailchute serve` or `mailchute daemon start`"),
        "p" => unsupported("list the queue with `mailchute queue list`"),
        "v" => unsupported(
            "address verification is not available; `mailchute route` is not yet either",
        ),
        _ => unsupported("not a mode this sendmail has (it has -bm, -bs, -bi)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cronie_s_call() {
        let a = parse(&["-FCronDaemon", "-i", "-B8BITMIME", "-oem", "-oi", "-t"]).unwrap();
        assert_eq!(a.full_name.as_deref(), Some("CronDaemon"));
        assert!(!a.dot_ends_input);
        assert_eq!(a.body, Some(BodyType::EightBitMime));
        assert!(a.extract_recipients);
        assert_eq!(a.ignored, vec!["-oem".to_string()]);
        assert!(a.recipients.is_empty());
        assert_eq!(a.action, Action::Deliver);
    }

    #[test]
    fn clusters_attached_and_separate_values() {
        let a = parse(&["-tif", "alice@x", "bob", "-v", "-v", "--", "-odd"]).unwrap();
        assert!(a.extract_recipients && !a.dot_ends_input);
        assert_eq!(a.sender.as_deref(), Some("alice@x"));
        assert_eq!(a.verbose, 2);
        assert_eq!(a.recipients, vec!["bob".to_string(), "-odd".to_string()]);
        let b = parse(&["-fbob@y", "-N", "failure,delay", "-R", "hdrs", "-V", "env1"]).unwrap();
        assert_eq!(b.sender.as_deref(), Some("bob@y"));
        assert_eq!(
            b.notify,
            Some(Notify {
                failure: true,
                delay: true,
                ..Notify::default()
            })
        );
        assert_eq!(b.ret, Some(Ret::Headers));
        assert_eq!(b.envid.as_deref(), Some("env1"));
        assert_eq!(
            parse(&["-r", "s@x"]).unwrap().sender.as_deref(),
            Some("s@x")
        );
        assert_eq!(
            parse(&["-C/etc/m.toml"]).unwrap().config.as_deref(),
            Some("/etc/m.toml")
        );
    }

    #[test]
    fn modes() {
        assert_eq!(parse(&["-bs"]).unwrap().action, Action::Smtp);
        assert_eq!(parse(&["-bm"]).unwrap().action, Action::Deliver);
        assert_eq!(parse(&["-bi"]).unwrap().action, Action::NewAliases);
        assert_eq!(parse(&["-I"]).unwrap().action, Action::NewAliases);
        for unsupported in ["-bd", "-bp", "-bv", "-bz", "-q", "-q30m"] {
            let e = parse(&[unsupported]).unwrap_err();
            assert!(
                matches!(e, ArgError::Unsupported { .. }),
                "{unsupported}: {e}"
            );
        }
    }

    #[test]
    fn what_cannot_be_read_is_said() {
        assert_eq!(parse(&["-z"]).unwrap_err(), ArgError::Invalid('z'));
        assert_eq!(parse(&["-f"]).unwrap_err(), ArgError::MissingValue('f'));
        assert!(
            parse(&["-B9BIT"])
                .unwrap_err()
                .to_string()
                .contains("8BITMIME")
        );
        assert!(parse(&["-Nnever,success"]).is_err());
        assert!(parse(&["-Rsome"]).is_err());
        // A lone "-" is a recipient-looking word, not a flag; no panic on odd bytes.
        assert_eq!(parse(&["-"]).unwrap().recipients, vec!["-".to_string()]);
        assert!(parse(&["-é"]).is_err());
        assert_eq!(parse(&["-Fé"]).unwrap().full_name.as_deref(), Some("é"));
    }
}
