//! Logging setup and the one-line-per-transaction record.
