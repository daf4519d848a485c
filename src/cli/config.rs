//! `mailchute config example|default|check|import-mailtos3|import-aws-smtp-relay`: print a
//! configuration, check one, or turn mailtos3's or aws-smtp-relay's into one.

use super::CliError;
use crate::config;
use clap::error::ErrorKind;
use std::path::{Path, PathBuf};

#[derive(clap::Subcommand)]
pub enum ConfigCommand {
    /// Print an annotated example config covering every key.
    Example {
        /// Print instead a minimal local dead-drop config: an LMTP Unix socket for the
        /// group `mailchute`, a Maildir per local user, a catch-all, a run user.
        #[arg(long)]
        deaddrop: bool,
    },
    /// Print the embedded default config: what `serve` runs with when no file is found
    /// (its route, sink and listener names are what env overrides address).
    Default,
    /// Validate a config and print the resolved listeners, routes (with their filters), sinks
    /// and filters.
    Check {
        /// The file to check (default: as for every command).
        file: Option<PathBuf>,
    },
    /// Print mailtos3's config.json (its mailboxes: address, bucket, cmkKeyArn, prefix) as
    /// mailchute routes and s3 sinks, to review and adopt.
    #[command(name = "import-mailtos3")]
    ImportMailtos3 {
        /// mailtos3's config.json.
        file: PathBuf,
    },
    /// Print aws-smtp-relay's command line (after `--`) and the environment it reads
    /// (BCRYPT_HASH, PASSWORD, TLS_KEY_PASS) as a mailchute listener, route and ses sink.
    #[command(name = "import-aws-smtp-relay")]
    ImportAwsSmtpRelay {
        /// aws-smtp-relay's flags, e.g. `-- -a :1025 -u app -c cert.pem -k key.pem -s`.
        #[arg(
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "FLAGS"
        )]
        flags: Vec<String>,
    },
}

/// What the command prints on success; `config` is the global `-c FILE`.
pub fn run(command: ConfigCommand, config: Option<PathBuf>) -> Result<String, CliError> {
    match command {
        ConfigCommand::Example { deaddrop: false } => Ok(config::example().to_string()),
        ConfigCommand::Example { deaddrop: true } => Ok(config::example_deaddrop().to_string()),
        ConfigCommand::Default => Ok(embedded_default()),
        ConfigCommand::Check { file } => {
            let path = check_path(file, config)?;
            let loaded = config::load(path.as_deref(), false)?;
            Ok(super::serve::check(&loaded)?)
        }
        ConfigCommand::ImportMailtos3 { file } => {
            let json = std::fs::read_to_string(&file)
                .map_err(|e| CliError::NoInput(format!("{}: {e}", file.display())))?;
            super::import_mailtos3::convert(&json, &file.display().to_string())
                .map_err(CliError::Import)
        }
        ConfigCommand::ImportAwsSmtpRelay { flags } => {
            let var = |name: &str| std::env::var(name).ok();
            let read = |path: &str| std::fs::read_to_string(path).ok();
            let env = super::import_aws_smtp_relay::Env {
                var: &var,
                read: &read,
            };
            super::import_aws_smtp_relay::convert(&flags, &env)
                .map_err(|e| CliError::Import(format!("aws-smtp-relay flags: {e}")))
        }
    }
}

/// `config check FILE` or `-c FILE`; both only when they name the same file, so that the
/// file checked is never a surprise.
fn check_path(file: Option<PathBuf>, config: Option<PathBuf>) -> Result<Option<PathBuf>, CliError> {
    match (file, config) {
        (Some(f), Some(c)) if !same_file(&f, &c) => Err(CliError::usage(
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
