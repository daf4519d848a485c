//! Configuration: the TOML contract, env overrides, validation, the embedded default.
//!
//! [`load`] finds the file (`-c`, `$MAILCHUTE_CONFIG`, `/etc/mailchute/mailchute.toml`, or
//! the embedded default), applies `MAILCHUTE_…__…` env overrides, resolves relative paths
//! against the file's directory, fills defaults (host name, listener and route names) and
//! validates. A [`Loaded`] config is therefore always complete and checked, except for the
//! insides of `[sink.*]` and `[filter.*]` tables: the config layer sits below sinks and
//! filters, so their registries type, check and resolve those (see [`TaggedTable`]).

pub mod describe;
pub mod env;
pub mod error;
pub mod load;
pub mod loaded;
pub mod net;
pub mod paths;
pub mod rules;
pub mod secrets;
pub mod tagged;
pub mod types;
pub mod units;
pub mod validate;

#[cfg(test)]
mod tests;

pub use describe::{Summaries, describe};
pub use env::{OverrideError, apply_env_overrides};
pub use error::{BuildError, ConfigError, InvalidKey, Override, Problem, Seg, unknown_type};
pub use load::{
    DEFAULT_PATH, EMBEDDED_TOML, Loaded, Source, example, example_deaddrop, load, load_file,
    load_file_with_env, load_with, parse_str, parse_str_with_env, system_hostname,
};
pub use net::{IpList, ListenAddr, dsn_enabled, is_loopback_listener};
pub use rules::MatchRule;
pub use secrets::readable_secrets_warning;
pub use tagged::TaggedTable;
pub use types::*;
pub use units::{Duration, Size};
pub use validate::{valid_default_domain, validate};
