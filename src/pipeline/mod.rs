//! Routing recipients to sinks and running one delivery attempt.
