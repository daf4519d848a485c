//! Configuration: the TOML contract, env overrides, validation, the embedded default.

pub mod types;
pub mod units;

pub use types::*;
pub use units::{Duration, Size};
