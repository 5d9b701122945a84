//! The lock-outage failsafe among the LB hosts of a leased instance: when the holder cannot
//! reach the lock, it keeps the VIP only while every peer confirms, freshly and over an
//! authenticated UDP channel, that it cannot reach the lock either and does not hold the
//! VIP (docs/ha.md, "Lock-outage failsafe").
//!
//! - [`wire`]: the messages, HMAC-SHA256 over a shared key, replay checks.
//! - [`failsafe`]: the holder's probe rounds and when they extend its hold (pure).
//! - [`local`]: what this host answers about itself, and the promise a vouch makes (pure).
//! - [`link`]: the per-instance task with the socket.

pub mod failsafe;
pub mod link;
pub mod local;
pub mod wire;

pub use link::{PeerError, PeerHandle, PeerSettings};

#[cfg(test)]
mod sim;
