//! `mailchute config example|default|check|import-mailtos3`: print a configuration, check
//! one, or turn mailtos3's into one.

use super::CliError;
use crate::config;
use clap::error::ErrorKind;
use std::path::{Path, PathBuf};

#[derive(clap::Subcommand)]
pub enum ConfigCommand {
    /// Print an annotated example config covering every key.
    Example,
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
}

/// What the command prints on success; `config` is the global `-c FILE`.
pub fn run(command: ConfigCommand, config: Option<PathBuf>) -> Result<String, CliError> {
    match command {
        ConfigCommand::Example => Ok(config::example().to_string()),
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
