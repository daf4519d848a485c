//! mailchute: a mail gateway in one binary.
//!
//! The layers in the order a message flows through them; each imports only those below it:
//! - [`cli`]: the commands (`serve`, `queue`, `config`); the top layer, which nothing imports.
//! - [`smtpd`]: the network side of the SMTP/LMTP listeners; only moves bytes.
//! - [`intake`]: ingress-neutral end of a message: MAIL/RCPT policy, `Received:`, SHA-256,
//!   the filter stage, what is kept per mode, the answer per recipient.
//! - [`pipeline`]: routes recipients to sinks and runs one delivery attempt.
//! - [`filters`]: the `Filter` trait, its registry, one folder per filter (`rewrite`).
//! - [`sinks`]: where a message ends (Maildir, MH, mbox, SMTP/LMTP relay, exec, discard).
//! - `aws` (features `s3`, `ses`): what the AWS sinks share: region, endpoint, credentials, error
//!   classes.
//! - [`smtp_client`]: an SMTP/LMTP client, one transaction step at a time (relay, proxy).
//! - [`spool`]: durability (group commit), the on-disk queue, retries, dead letters, DSNs.
//! - [`proto`]: sans-I/O protocol code (SMTP/LMTP server state machine, reply parsing).
//! - [`delivery`]: the outcome vocabulary and its SMTP and sysexits mappings.
//! - [`config`], [`envelope`]: the TOML contract, env overrides, validation; what travels
//!   beside a message.

#[cfg(feature = "aws")]
pub mod aws;
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
