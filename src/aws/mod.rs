//! What the AWS sinks share (`s3`, `ses`): where the service is (region,
//! endpoint), who we are (the credential chain, an optional role to assume), and which
//! failures are worth a retry.
//!
//! Below `sinks`, above `config` and `delivery`. Nothing here connects when a config is
//! built: [`AwsSettings::load`] runs on a sink's first delivery, so `config check` and a
//! route that never uses the sink cost no network and no credential lookup.

mod errors;
mod settings;

pub use errors::{Failure, FailureClass, describe, describe_io};
pub use settings::AwsSettings;
