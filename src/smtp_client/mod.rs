//! An SMTP/LMTP client over TCP or a Unix socket (`unix:/path`): implicit TLS or STARTTLS
//! (rustls), AUTH PLAIN/LOGIN, XFORWARD, and a transaction one step at a time.
//!
//! ```no_run
//! # use mailchute::smtp_client::{Client, DataReplies, MailOptions, Target};
//! # async fn run(message: &std::path::Path) -> Result<(), mailchute::smtp_client::Error> {
//! let target = Target::parse("127.0.0.1:25").unwrap();
//! let mut c = Client::connect(&target, std::time::Duration::from_secs(30)).await?;
//! let _greeting = c.greeting().await?;                 // 220
//! let _caps = c.ehlo("me.example.org").await?;         // or lhlo: LMTP
//! c.mail("a@example.org", &MailOptions::default()).await?;
//! let r = c.rcpt("b@example.net").await?;              // that recipient's reply
//! if r.is_positive() {
//!     match c.data(message, 1).await? {
//!         DataReplies::Refused(_reply) => {}           // DATA not answered with 354
//!         DataReplies::Sent(_finals) => {}             // SMTP: one; LMTP: one per recipient
//!     }
//! }
//! c.quit().await;
//! # Ok(()) }
//! ```
//!
//! Every step returns the server's reply as it came ([`RemoteReply`]: code, enhanced
//! status, text lines), so a caller can hand it on to its own client unchanged. Failures of
//! the connection itself — I/O, a timeout, a malformed reply, TLS — are [`Error`]s; after
//! one the session is broken and [`Client::quit`] only drops it.
//!
//! One timeout bounds every step: connecting, the TLS handshake, each whole reply (however
//! slowly it trickles in), each write of the content; the reply to the end of the message
//! gets one more second per 64 KiB of it (it may still be on its way to the server).
//!
//! The layer sits below the sinks and above `proto` (its parsers and encoders); it knows
//! nothing of sinks, routes or the spool.

mod client;
mod conn;
mod error;
mod target;
pub mod tls;
mod xforward;

pub use crate::proto::{Capabilities, RemoteReply};
pub use client::{
    Auth, Client, DataReplies, Dialect, FinalReplies, MailOptions, Request, sendable,
};
pub use conn::Io;
pub use error::{Error, Result};
pub use target::Target;
pub use xforward::{XFORWARD_LINE_MAX, xforward_attributes, xforward_lines};
