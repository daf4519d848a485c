//! The `mailchute` command line. Errors become one clear line on stderr and a non-zero
//! exit status here, at the binary's edge.

use anyhow::{Context, Result};
use clap::error::ErrorKind;
use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};
use mailchute::config::{self, ConfigError, LogFormat};
use mailchute::serve::ServeError;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// How every command finds its config, and what the exit statuses mean; shown by `--help`
/// and by each subcommand's help.
const CONFIG_LOOKUP: &str = "Config: -c FILE, else $MAILCHUTE_CONFIG, else /etc/mailchute/mailchute.toml, else (serve only) the\n\
                             embedded default: SMTP on 127.0.0.1:2525 into ./mailchute-data/Maildir\n\
                             (`mailchute config default` prints it; `mailchute config example` prints an annotated\n\
                             config with every key). The queue commands can read a spool without a config: --data-dir DIR.\n\
                             \n\
                             Exit status: 0 ok; 1 other failure (e.g. no such message); 2 usage; 66 config file (or\n\
                             --data-dir) missing or unreadable; 69 serve cannot start or run (port taken, data_dir not\n\
                             writable, already running); 71 OS error (no current directory); 78 config invalid.";

/// The exit statuses above: 1 for anything else, the others from sysexits.h.
const EX_FAILURE: u8 = 1;
const EX_NOINPUT: u8 = 66;
const EX_UNAVAILABLE: u8 = 69;
const EX_OSERR: u8 = 71;
const EX_CONFIG: u8 = 78;

/// Failures of the command line itself, beyond what the library layers report.
#[derive(Debug, thiserror::Error)]
enum CliError {
    /// What a command was told to read is not there (EX_NOINPUT).
    #[error("{0}")]
    NoInput(String),
}

#[derive(Parser)]
#[command(
    name = "mailchute",
    version,
    about = "A mail gateway in one binary: SMTP/LMTP in; Maildir, MH, mbox, SMTP/LMTP relays and commands out; nothing lost.",
    after_help = CONFIG_LOOKUP
)]
struct Cli {
    /// Config file (TOML).
    #[arg(short = 'c', long = "config", global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Log format on stderr; overrides [server] log_format.
    #[arg(long, global = true, value_enum)]
    log_format: Option<LogFormatArg>,
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
}

#[derive(Args)]
struct QueueArgs {
    /// Work on the spool under DIR (the config's [server] data_dir) without reading any
    /// config; not with -c.
    #[arg(long, global = true, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: QueueCommand,
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Print an annotated example config covering every key.
    Example,
    /// Print the embedded default config: what `serve` runs with when no file is found
    /// (its route, sink and listener names are what env overrides address).
    Default,
    /// Validate a config and print the resolved listeners, routes and sinks.
    Check {
        /// The file to check (default: as for every command).
        file: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum QueueCommand {
    /// One line per queued message.
    List,
    /// Envelope, pending deliveries and headers of one message.
    Show { id: String },
    /// Retry a message now (ID or "all").
    Retry { id: String },
    /// Remove a message from the queue for good.
    Delete { id: String },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            if let Some(usage) = e.downcast_ref::<clap::Error>() {
                usage.exit();
            }
            eprintln!("mailchute: {}", message(&e));
            ExitCode::from(exit_code(&e))
        }
    }
}

/// The error and its causes on one line. Layers whose message already holds their cause
/// (`cannot read …: Permission denied`) would otherwise show it twice.
fn message(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

/// sysexits.h statuses, so that init systems and scripts can tell a config to fix from a
/// port that is taken; see [`CONFIG_LOOKUP`].
fn exit_code(e: &anyhow::Error) -> u8 {
    if let Some(c) = e.downcast_ref::<ConfigError>() {
        return match c {
            ConfigError::NotFound(_) | ConfigError::Read { .. } => EX_NOINPUT,
            ConfigError::Cwd(_) => EX_OSERR,
            ConfigError::Invalid(_) => EX_CONFIG,
        };
    }
    if let Some(s) = e.downcast_ref::<ServeError>() {
        return if s.config { EX_CONFIG } else { EX_UNAVAILABLE };
    }
    if let Some(CliError::NoInput(_)) = e.downcast_ref::<CliError>() {
        return EX_NOINPUT;
    }
    // Only the async runtime's start gives a bare I/O error here.
    if e.downcast_ref::<std::io::Error>().is_some() {
        return EX_OSERR;
    }
    EX_FAILURE
}

/// A usage error, reported (and exited with status 2) as clap reports its own.
fn usage(kind: ErrorKind, message: impl std::fmt::Display) -> anyhow::Error {
    Cli::command().error(kind, message).into()
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Serve => {
            let loaded = config::load(cli.config.as_deref(), true)?;
            let format = cli
                .log_format
                .map(to_format)
                .unwrap_or(loaded.config.server.log_format);
            mailchute::log::init(format);
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("starting the async runtime")?;
            let result = rt.block_on(mailchute::serve::run(loaded));
            // A blocking task still writing (a delivery cut short by a second signal) must
            // not hold the exit: what it was doing is still in the spool.
            rt.shutdown_timeout(std::time::Duration::from_secs(1));
            result?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Config(ConfigCommand::Example) => {
            print!("{}", config::example());
            Ok(ExitCode::SUCCESS)
        }
        Command::Config(ConfigCommand::Default) => {
            print!("{}", embedded_default());
            Ok(ExitCode::SUCCESS)
        }
        Command::Config(ConfigCommand::Check { file }) => {
            let path = check_path(file, cli.config)?;
            let loaded = config::load(path.as_deref(), false)?;
            print!("{}", mailchute::serve::check(&loaded)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Queue(q) => {
            let data_dir = data_dir(cli.config.as_deref(), q.data_dir)?;
            let out = match q.command {
                QueueCommand::List => mailchute::spool::cli::list(&data_dir)?,
                QueueCommand::Show { id } => mailchute::spool::cli::show(&data_dir, &id)?,
                QueueCommand::Retry { id } => mailchute::spool::cli::retry(&data_dir, &id)?,
                QueueCommand::Delete { id } => mailchute::spool::cli::delete(&data_dir, &id)?,
            };
            print!("{out}");
            if !out.ends_with('\n') {
                println!();
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The spool: `--data-dir DIR` as given, else the config's data_dir. Never the embedded
/// default's: a queue command run in the wrong directory would report an empty queue
/// instead of saying that it found no config.
fn data_dir(explicit: Option<&Path>, given: Option<PathBuf>) -> Result<PathBuf> {
    if let Some(dir) = given {
        if explicit.is_some() {
            return Err(usage(
                ErrorKind::ArgumentConflict,
                "give -c FILE or --data-dir DIR, not both",
            ));
        }
        if !dir.is_dir() {
            return Err(CliError::NoInput(format!(
                "--data-dir {}: no such directory",
                dir.display()
            ))
            .into());
        }
        return Ok(dir);
    }
    let loaded = config::load(explicit, false).map_err(|e| match e {
        ConfigError::NotFound(m) => ConfigError::NotFound(format!(
            "{m}; to read a spool without a config, give --data-dir DIR"
        )),
        other => other,
    })?;
    Ok(loaded.config.server.data_dir)
}

/// `config check FILE` or `-c FILE`; both only when they name the same file, so that the
/// file checked is never a surprise.
fn check_path(file: Option<PathBuf>, config: Option<PathBuf>) -> Result<Option<PathBuf>> {
    match (file, config) {
        (Some(f), Some(c)) if !same_file(&f, &c) => Err(usage(
            ErrorKind::ArgumentConflict,
            format!(
                "config check got two files: {} and -c {}; give one",
                f.display(),
                c.display()
            ),
        )),
        (f, c) => Ok(f.or(c)),
    }
}

fn same_file(a: &Path, b: &Path) -> bool {
    a == b
        || matches!(
            (a.canonicalize(), b.canonicalize()),
            (Ok(x), Ok(y)) if x == y
        )
}

/// What `config default` prints: the embedded config, with a word on what it is.
fn embedded_default() -> String {
    format!(
        "# mailchute's embedded default: what `mailchute serve` runs with when no config file\n\
         # is found. Relative paths resolve against the current directory.\n{}",
        config::EMBEDDED_TOML.trim_start()
    )
}

fn to_format(f: LogFormatArg) -> LogFormat {
    match f {
        LogFormatArg::Json => LogFormat::Json,
        LogFormatArg::Text => LogFormat::Text,
    }
}
