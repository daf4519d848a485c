//! The one integration-test binary (one link instead of one per file). Modules by area.

mod auth;
mod daemon;
mod deliver;
mod delivery;
mod dovecot;
mod envelope_headers;
mod filters;
mod harness;
mod imap;
mod limits;
mod operate;
mod postfix;
mod postfix_interop;
#[cfg(feature = "s3")]
mod s3;
mod sendmail;
#[cfg(feature = "ses")]
mod ses;
#[cfg(feature = "ses")]
mod ses_relay;
mod smtp_client;
mod smtp_ingress;
mod spool;
mod tls_keys;
