//! Durability and the on-disk queue.
//!
//! - [`commit`]: group commit ([`Committer::sync`](commit::Committer::sync)): one `syncfs`
//!   round makes many writers' files durable.
//! - [`store`]: the spool directories. A listener streams DATA into an [`Incoming`]
//!   (`spool/tmp/ID.eml`, page cache only), [`finish`](Incoming::finish)es it into a
//!   [`SpooledMessage`], then either delivers synchronously and
//!   [`discard`](SpooledMessage::discard)s it, or calls [`Spool::enqueue`] and answers 250
//!   only after that returned `Ok` (the message and its sidecar are durable), then hands
//!   the entry to [`Queue::submit`].
//! - [`queue`]: the background queue. At most `queue.workers` messages in delivery; retries
//!   with `backoff_initial × 2^(attempts−1)` capped at `backoff_max`; after `max_lifetime`
//!   the message goes to `dead/` with the reason, and the sender gets a DSN when the entry
//!   asked for one. Picks up `mailchute queue retry|delete` from another process within
//!   [`queue::RESCAN_INTERVAL`].
//! - [`dsn`]: RFC 3464 delivery status notifications.
//! - [`admin`]: retry and delete from another process (`mailchute queue`).
//!
//! Startup order for a daemon: [`Spool::open`], [`Spool::recover`] (before any listener
//! accepts), [`Queue::start`] with the recovered entries.
//!
//! Times: [`QueueEntry::next_attempt`] is Unix **milliseconds** (0 = now), so retry delays
//! below a second work; `Envelope::received_at` stays Unix seconds.

pub mod admin;
pub mod commit;
pub mod dsn;
pub mod error;
pub mod queue;
pub mod store;

/// Also the fixtures of the queue commands' tests (`cli::queue`).
#[cfg(test)]
pub(crate) mod tests;

pub use commit::Committer;
pub use error::SpoolError;
pub use queue::{Deliverer, Queue, QueueStats};
pub use store::{
    BodyFile, FailedRcpt, Incoming, Pending, QueueEntry, Spool, SpooledMessage, body_path,
};
