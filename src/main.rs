//! The `mailchute` command line. Errors become one clear line on stderr and a non-zero
//! exit status here, at the binary's edge.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use mailchute::config::{self, LogFormat};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// How every command finds its config; shown by `--help` and by each subcommand's help.
const CONFIG_LOOKUP: &str = "Config: -c FILE, else $MAILCHUTE_CONFIG, else /etc/mailchute/mailchute.toml, else (serve only) the\n\
                             embedded default: SMTP on 127.0.0.1:2525 into ./mailchute-data/Maildir.\n\
                             `mailchute config example` prints an annotated config with every key.";

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
    #[command(after_help = CONFIG_LOOKUP)]
    Serve,
    /// Print, or check, a configuration.
    #[command(subcommand, after_help = CONFIG_LOOKUP)]
    Config(ConfigCommand),
    /// Look at and act on the spool (works while the daemon runs).
    #[command(subcommand, after_help = CONFIG_LOOKUP)]
    Queue(QueueCommand),
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Print an annotated example config covering every key.
    Example,
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
            eprintln!("mailchute: {e:#}");
            ExitCode::from(1)
        }
    }
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
        Command::Config(ConfigCommand::Check { file }) => {
            let path = file.or(cli.config);
            let loaded = config::load(path.as_deref(), false)?;
            mailchute::serve::check(&loaded)?;
            print!("{}", config::describe(&loaded));
            Ok(ExitCode::SUCCESS)
        }
        Command::Queue(q) => {
            let data_dir = data_dir(cli.config.as_deref())?;
            let out = match q {
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

/// The spool lives under the config's data_dir; without a config, the embedded default's.
fn data_dir(explicit: Option<&Path>) -> Result<PathBuf> {
    let loaded = config::load(explicit, true)?;
    Ok(loaded.config.server.data_dir)
}

fn to_format(f: LogFormatArg) -> LogFormat {
    match f {
        LogFormatArg::Json => LogFormat::Json,
        LogFormatArg::Text => LogFormat::Text,
    }
}
