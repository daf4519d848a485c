//! The `mailchute` binary: which interface it was invoked as, the command line, the
//! runtime each command runs on, and the exit status. What the commands do is in
//! `mailchute::cli`. Errors become one clear line on stderr and a non-zero exit status
//! here, at the binary's edge.

use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use mailchute::cli::config::ConfigCommand;
use mailchute::cli::daemon::DaemonCommand;
use mailchute::cli::deliver::DeliverArgs;
use mailchute::cli::queue::QueueArgs;
use mailchute::cli::{self, CliError, LogOptions};
use mailchute::config::{ConfigError, LogFormat};
use mailchute::delivery::sysexits::{EX_CONFIG, EX_DATAERR, EX_NOINPUT, EX_OSERR, EX_UNAVAILABLE};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// How every command finds its config, and what the exit statuses mean; shown by `--help`
/// and by each subcommand's help.
const CONFIG_LOOKUP: &str = "Config: -c FILE, else $MAILCHUTE_CONFIG, else /etc/mailchute/mailchute.toml, else (serve only) the\n\
                             embedded default: SMTP on 127.0.0.1:2525 into ./mailchute-data/Maildir\n\
                             (`mailchute config default` prints it; `mailchute config example` prints an annotated\n\
                             config with every key). The queue commands can read a spool without a config: --data-dir DIR.\n\
                             \n\
                             Exit status: 0 ok; 1 other failure (e.g. no such message); 2 usage; 65 a file to\n\
                             import is not what it should be; 66 config file (or --data-dir) missing or unreadable;\n\
                             69 serve cannot start or run (port taken, data_dir not writable, already running), or a\n\
                             sink failed `check`;\n\
                             71 OS error (no current directory); 78 config invalid. `deliver` has its own: see its --help.";

/// Status 1, for failures sysexits.h has no code for (e.g. no such message).
const EX_FAILURE: u8 = 1;

#[derive(Parser)]
#[command(
    name = "mailchute",
    version,
    about = "A mail gateway in one binary: SMTP/LMTP in; Maildir, MH, mbox, SMTP/LMTP relays and commands out; header rewriting on the way; nothing lost.",
    after_help = CONFIG_LOOKUP
)]
struct Cli {
    /// Config file (TOML).
    #[arg(short = 'c', long = "config", global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Log format; overrides [server] log_format.
    #[arg(long, global = true, value_enum)]
    log_format: Option<LogFormatArg>,
    /// Log to FILE (appended to; serve reopens it on SIGHUP, for logrotate) instead of stderr.
    #[arg(long, global = true, value_name = "FILE")]
    log_file: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormatArg {
    Json,
    Text,
}

#[derive(Subcommand)]
enum Command {
    /// Run the listeners and the delivery queue until SIGTERM (SIGHUP reloads the config).
    /// Without a config file it runs on the embedded default (`mailchute config default`).
    #[command(after_help = CONFIG_LOOKUP)]
    Serve,
    /// Print, or check, a configuration.
    #[command(subcommand, after_help = CONFIG_LOOKUP)]
    Config(ConfigCommand),
    /// Look at and act on the spool (works while the daemon runs).
    #[command(after_help = CONFIG_LOOKUP)]
    Queue(QueueArgs),
    /// Deliver one message (standard input) to the routes of its recipients and exit with
    /// what Postfix's pipe(8) must do: the MDA of a `pipe` transport.
    #[command(after_help = DELIVER_HELP)]
    Deliver(DeliverArgs),
    /// Run every sink's health check and print one line per sink (`ok   sink NAME: …` or
    /// `FAIL sink NAME: reason`): imap logs in and examines its folder; maildir, mh and
    /// mbox check that the path is writable or can be created; smtp/lmtp connect, greet and
    /// do TLS and AUTH; exec finds its program; s3 asks HeadBucket for the bucket.
    #[command(after_help = CHECK_HELP)]
    Check,
    /// Postfix's sendmail(1) for scripts and cron: one message from standard input to the
    /// daemon's unix LMTP socket, or to {data_dir}/pickup/ when the daemon is down. Also
    /// runs when the binary is invoked as `sendmail`. Its flags are sendmail's, not
    /// mailchute's (README "sendmail").
    #[command(disable_help_flag = true, after_help = SENDMAIL_HELP)]
    Sendmail {
        /// Flags and recipients, read as Postfix's sendmail reads them.
        #[arg(
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "ARGS"
        )]
        args: Vec<String>,
    },
    /// Run `serve` in the background and control it: start, stop, status, reload, info
    /// (LSB init-script exit statuses; see --help of each).
    #[command(subcommand, after_help = DAEMON_HELP)]
    Daemon(DaemonCommand),
}

/// How `check` answers, for its `--help`.
const CHECK_HELP: &str = "Nothing is delivered and nothing is created (a missing IMAP folder or Maildir that the sink\n\
would create is fine). Each check runs at most 120 s; all run at once.\n\
\n\
Exit status: 0 every sink passed; 69 at least one failed; 78 the config is invalid; 66 the config\n\
file is missing or unreadable. Config: as for every command (-c FILE, $MAILCHUTE_CONFIG, ...).";

const SENDMAIL_HELP: &str = "Flags: -t -i -oi -f SENDER -F NAME -C FILE -B 8BITMIME|7BIT -N DSN -R full|hdrs -V ENVID -v;\n\
other -o… accepted and ignored. Exit status: 0 delivered, queued by the daemon or kept in pickup/;\n\
75 could not be kept anywhere; 67 unknown user, 65 content, 77 policy, 69 other refusal; 64 usage.\n\
\n\
-bs: SMTP on standard input/output (no recipient arguments). MAIL FROM as given; each RCPT is\n\
asked of the daemon (refused there with its 5xx); after the data 250 = delivered, queued or in\n\
pickup/, 451 = kept nowhere. Exit 0 unless a message is nowhere: 75 for a 451 or input ending\n\
inside a transaction (mid-DATA: not sent), 67/65/77/69 for a message refused for every recipient.";

/// `daemon`'s statuses, for its `--help`.
const DAEMON_HELP: &str = "Exit status (LSB): start 0 started or already running, 1 failed, 78 config invalid;\n\
stop 0 stopped or not running, 1 could not stop; status 0 running, 1 dead but the pid file\n\
({data_dir}/mailchute.pid) is left, 3 not running, 4 unknown; reload 0 signalled, 7 not running,\n\
78 the config would be refused. `daemon start` logs to --log-file, else {data_dir}/mailchute.log.";

/// How `deliver` answers, for its `--help`.
const DELIVER_HELP: &str = "Postfix master.cf, e.g. (the second line starts with spaces):\n\
mailchute unix - n n - - pipe flags=Rq null_sender= user=nobody\n  \
argv=/usr/local/bin/mailchute deliver -c /etc/mailchute/mailchute.toml -a ${recipient} -f ${sender} --id ${queue_id}\n\
and in main.cf: mailchute_destination_recipient_limit = 1 (one recipient per run).\n\
\n\
Exit status: 0 delivered; 75 try again later (first output line `4.x.x text`: a sink deferred,\n\
the config cannot be read, the deadline passed, an internal error); 67 no such recipient, 65\n\
content refused, 77 policy, 69 other permanent refusal (first line `5.x.x text`). Nothing\n\
else is printed before that line: logs go to --log-file, or after it with --log-stderr\n\
(Postfix then shows them in its log entry), or nowhere.";

fn main() -> ExitCode {
    // sendmail's flags are not mailchute's (`-t`, `-oi`, `-FCronDaemon`): clap never sees them.
    let args: Vec<String> = std::env::args().skip(1).collect();
    for (name, implied) in [
        ("sendmail", None),
        ("mailq", Some("-bp")),
        ("newaliases", Some("-I")),
    ] {
        if invoked_as(name) {
            let args: Vec<String> = implied.map(String::from).into_iter().chain(args).collect();
            return ExitCode::from(cli::sendmail::run(&args, None));
        }
    }
    if let Some((config, rest)) = sendmail_subcommand(&args) {
        return ExitCode::from(cli::sendmail::run(rest, config.as_deref()));
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
    let log = LogOptions {
        format: cli.log_format.map(to_format),
        file: cli.log_file,
    };
    let command = match cli.command {
        Command::Deliver(args) => return deliver(args, cli.config, log),
        Command::Sendmail { args } => {
            return ExitCode::from(cli::sendmail::run(&args, cli.config.as_deref()));
        }
        Command::Daemon(d) => return daemon(d, cli.config, log),
        other => other,
    };
    match run(command, cli.config, log) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Command(CliError::Usage { kind, message })) => {
            // Reported, and exited with status 2, as clap reports its own.
            Cli::command().error(kind, message).exit()
        }
        Err(e) => {
            eprintln!("mailchute: {}", e.message());
            ExitCode::from(e.exit_code())
        }
    }
}

/// A command line clap refuses. For `deliver` that is 75 with a status line, not clap's 2:
/// Postfix bounces on any status but 75 and 71, and a typo in master.cf must not bounce
/// every message.
fn usage_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    let deliver = std::env::args().skip(1).any(|a| a == "deliver");
    if !deliver || matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
        e.exit()
    }
    let first = e.to_string();
    let first = first.lines().next().unwrap_or("invalid arguments");
    let exit = mailchute::delivery::Exit {
        code: mailchute::delivery::sysexits::EX_TEMPFAIL,
        line: Some(format!(
            "4.3.5 mailchute deliver: {}",
            first.trim_start_matches("error: ")
        )),
    };
    cli::deliver::print_status(&exit);
    ExitCode::from(exit.code)
}

/// `deliver`: the status line first, then the exit status; a panic is caught and becomes
/// 75 (the default hook's message would come before the status line, so it is held back
/// and written after it).
fn deliver(args: DeliverArgs, config: Option<PathBuf>, log: LogOptions) -> ExitCode {
    let (exit, panic) = cli::deliver::guarded(|| cli::deliver::run(args, config.as_deref(), &log));
    cli::deliver::print_status(&exit);
    if let Some(message) = panic {
        eprintln!("mailchute deliver: {message}");
    }
    ExitCode::from(exit.code)
}

/// `mailchute [-c FILE] sendmail ARGS…`: mailchute's config flag, and sendmail's raw
/// arguments. `None` when the command is not `sendmail` (or other global flags come first:
/// clap then parses them, and [`Command::Sendmail`] keeps the rest raw).
fn sendmail_subcommand(args: &[String]) -> Option<(Option<PathBuf>, &[String])> {
    let mut config = None;
    let mut i = 0;
    while i < args.len() {
        let a = args[i].as_str();
        if a == "sendmail" {
            return Some((config, &args[i + 1..]));
        }
        if a == "-c" || a == "--config" {
            config = Some(PathBuf::from(args.get(i + 1)?));
            i += 2;
        } else if let Some(v) = a.strip_prefix("--config=").or_else(|| a.strip_prefix("-c")) {
            config = Some(PathBuf::from(v));
            i += 1;
        } else {
            return None;
        }
    }
    None
}

/// `daemon`: its LSB status, or a failure reported like any command's.
fn daemon(command: DaemonCommand, config: Option<PathBuf>, log: LogOptions) -> ExitCode {
    match cli::daemon::run(command, config.as_deref(), &log) {
        Ok(report) => {
            print!("{}", report.stdout);
            for line in report.stderr.lines() {
                if line.starts_with("mailchute: ") {
                    eprintln!("{line}");
                } else {
                    eprintln!("mailchute: {line}");
                }
            }
            ExitCode::from(report.code)
        }
        Err(e) => {
            let failure = Failure::Command(e);
            eprintln!("mailchute: {}", failure.message());
            ExitCode::from(failure.exit_code())
        }
    }
}

/// Whether the program was started under `name` (a symlink to the binary).
fn invoked_as(name: &str) -> bool {
    std::env::args_os()
        .next()
        .is_some_and(|argv0| Path::new(&argv0).file_name() == Some(name.as_ref()))
}

/// How a run ends badly: a command failed, or the async runtime would not start.
#[derive(Debug)]
enum Failure {
    Command(CliError),
    Runtime(std::io::Error),
}

impl From<CliError> for Failure {
    fn from(e: CliError) -> Self {
        Failure::Command(e)
    }
}

impl Failure {
    /// The error and its causes on one line. Layers whose message already holds their
    /// cause (`cannot read …: Permission denied`) would otherwise show it twice.
    fn message(&self) -> String {
        let (mut out, first): (String, &dyn std::error::Error) = match self {
            Failure::Command(e) => (String::new(), e),
            Failure::Runtime(e) => ("starting the async runtime".into(), e),
        };
        let mut cause = Some(first);
        while let Some(e) = cause {
            let text = e.to_string();
            if !out.contains(&text) {
                if !out.is_empty() {
                    out.push_str(": ");
                }
                out.push_str(&text);
            }
            cause = e.source();
        }
        out
    }

    /// sysexits.h statuses, so that init systems and scripts can tell a config to fix from
    /// a port that is taken; see [`CONFIG_LOOKUP`].
    fn exit_code(&self) -> u8 {
        let Failure::Command(e) = self else {
            return EX_OSERR;
        };
        match e {
            CliError::Config(ConfigError::NotFound(_) | ConfigError::Read { .. }) => EX_NOINPUT,
            CliError::Config(ConfigError::Cwd(_)) => EX_OSERR,
            CliError::Config(ConfigError::Invalid(_)) => EX_CONFIG,
            CliError::Serve(s) if s.config => EX_CONFIG,
            // serve cannot start or run.
            CliError::Serve(_) | CliError::Log(_) => EX_UNAVAILABLE,
            CliError::NoInput(_) => EX_NOINPUT,
            CliError::Import(_) => EX_DATAERR,
            CliError::Unhealthy(_) => EX_UNAVAILABLE,
            CliError::Spool(_) => EX_FAILURE,
            // Exited with by clap in `main`; 2 is its usage status.
            CliError::Usage { .. } => 2,
        }
    }
}

fn run(command: Command, config: Option<PathBuf>, log: LogOptions) -> Result<(), Failure> {
    match command {
        Command::Serve => {
            let loaded = cli::serve::prepare(config.as_deref(), &log)?;
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .map_err(Failure::Runtime)?;
            let result = rt.block_on(cli::serve::run(loaded));
            // A blocking task still writing (a delivery cut short by a second signal) must
            // not hold the exit: what it was doing is still in the spool.
            rt.shutdown_timeout(std::time::Duration::from_secs(1));
            result.map_err(CliError::from)?;
        }
        // One-shot commands: plain blocking calls, no runtime.
        Command::Config(c) => print!("{}", cli::config::run(c, config)?),
        Command::Queue(q) => print!("{}", cli::queue::run(q, config.as_deref())?),
        Command::Check => {
            // As serve would find it: the embedded default when there is no file.
            let loaded = cli::serve::prepare(config.as_deref(), &log)?;
            // Health checks are network and file I/O, one task each: a small runtime.
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(Failure::Runtime)?;
            let report = rt.block_on(cli::check::run(&loaded))?;
            print!("{}", report.text);
            if report.failed > 0 {
                return Err(CliError::Unhealthy(format!(
                    "{} of {} sinks failed the health check",
                    report.failed, report.total
                ))
                .into());
            }
        }
        Command::Daemon(d) => {
            // `main` runs it itself, for its LSB statuses; kept whole here too.
            let report = cli::daemon::run(d, config.as_deref(), &log)?;
            print!("{}", report.stdout);
            eprint!("{}", report.stderr);
        }
        Command::Deliver(args) => {
            // `main` runs it itself, for its own exit statuses; kept whole here too.
            let exit = cli::deliver::run(args, config.as_deref(), &log);
            cli::deliver::print_status(&exit);
        }
        Command::Sendmail { args } => {
            // `main` runs it itself too (its exit statuses are sendmail's).
            let code = cli::sendmail::run(&args, config.as_deref());
            if code != 0 {
                std::process::exit(code.into());
            }
        }
    }
    Ok(())
}

fn to_format(f: LogFormatArg) -> LogFormat {
    match f {
        LogFormatArg::Json => LogFormat::Json,
        LogFormatArg::Text => LogFormat::Text,
    }
}
