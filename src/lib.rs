//! mailchute: a mail gateway in one binary.
//!
//! The layers, each readable without the others:
//! - [`cli`]: the commands (`serve`, `queue`, `config`); the top layer, which nothing imports.
//! - [`proto`]: sans-I/O protocol code (SMTP/LMTP server state machine, reply parsing).
//! - [`smtpd`]: the network side of the SMTP/LMTP listeners; only moves bytes.
//! - [`pipeline`]: routes recipients to sinks and runs one delivery attempt.
//! - [`spool`]: durability (group commit), the on-disk queue, retries, dead letters, DSNs.
//! - [`sinks`]: where a message ends (Maildir, MH, mbox, SMTP/LMTP relay, exec, discard).
//! - [`smtp_client`]: an SMTP/LMTP client, one transaction step at a time (relay, proxy).
//! - [`config`]: the TOML contract, env overrides, validation.

pub mod cli;
pub mod config;
pub mod delivery;
pub mod envelope;
pub mod filters;
pub mod intake;
pub mod log;
pub mod pipeline;
pub mod privileges;
pub mod proto;
pub mod sinks;
pub mod smtp_client;
pub mod smtpd;
pub mod spool;
