//! A loaded config and what it was loaded from: what every consumer holds, and what
//! places a problem found after loading (a sink that cannot be built) in the file.

use super::error::{ConfigError, Locator, Override, Seg};
use super::types::Config;
use std::path::PathBuf;

/// Where the config came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    File(PathBuf),
    /// No file: the built-in default (`serve` only).
    Embedded,
}

/// A loaded, validated config. Every path in `config` is absolute.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    pub source: Source,
    /// The file's directory (or the cwd for the embedded default): what relative paths
    /// were resolved against.
    pub base_dir: PathBuf,
    /// Env overrides that were applied, in the order they were applied.
    pub overrides: Vec<Override>,
    /// The file's text as it was read (none for the embedded default), so that a problem
    /// found after loading (a sink that cannot be built) is placed in the version of the
    /// file that was loaded, not in whatever is on disk by then.
    pub(crate) text: Option<String>,
}

impl Loaded {
    /// How errors and `config check` name the source.
    pub fn origin(&self) -> String {
        match &self.source {
            Source::File(p) => p.display().to_string(),
            Source::Embedded => EMBEDDED_ORIGIN.to_string(),
        }
    }

    /// A config error at `path`, placed as load errors are: file, line of the key (or of
    /// the nearest table that is written), key path, or the env override that set it.
    pub fn error(&self, path: &[Seg], message: impl Into<String>) -> ConfigError {
        self.locator().error(path, message)
    }

    pub(crate) fn locator(&self) -> Locator {
        Locator {
            origin: self.origin(),
            text: self.text.clone(),
            overrides: self.overrides.clone(),
        }
    }
}

/// How errors name the built-in config.
pub(crate) const EMBEDDED_ORIGIN: &str = "embedded default";
