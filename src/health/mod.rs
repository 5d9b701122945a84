//! Health: keepalived's checkers with keepalived's semantics, plus passive detection.

pub mod sink;

pub use sink::{BackendStatus, HealthSink};
