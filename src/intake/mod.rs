//! Intake: ingress-neutral. An ingress (an SMTP/LMTP session, `deliver`, `sendmail`'s
//! daemon, proxy mode) hands over an envelope and a received body; intake decides MAIL and
//! RCPT policy, writes our `Received:` line and the body's SHA-256, runs each route's
//! filters, keeps what must be kept (per [`IntakeMode`]) and answers per recipient with the
//! outcome vocabulary of [`crate::delivery`], which each ingress maps mechanically.

mod body;
mod complete;
pub mod policy;
pub mod received;
mod stage;
#[cfg(test)]
mod tests;

pub use body::{BodyWriter, ReceivedBody};
pub use complete::{Completion, Durable, Intake, IntakeMode};
pub use policy::Policy;
