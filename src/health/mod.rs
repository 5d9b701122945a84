//! Health: keepalived's checkers with keepalived's semantics, plus passive detection.
//!
//! # Layout
//! - [`checker`], [`backend`], [`quorum`]: the pure decision logic — one checker's counting
//!   (retry, delay_before_retry, alpha, url iteration, misc_dynamic), a backend over its
//!   checkers (all up = alive, inhibit_on_failure, weight), a service's quorum/hysteresis.
//!   They take results and instants and return transitions; unit-tested without I/O.
//! - [`probe`]: the thin async shells that do one probe each: TCP_CHECK, HTTP_GET/SSL_GET,
//!   MISC_CHECK.
//! - [`supervisor`]: one tokio task per checker driving its state machine, one actor that
//!   combines backends and services, talks to the [`HealthSink`] (data plane) and the
//!   [`HealthObserver`] (stats), re-probes on passive events, and applies reloads.
//! - [`sink`]: the contract with the data plane.
//!
//! docs/health.md explains how passive and active results combine and which keepalived
//! semantics are kept or changed.

pub mod backend;
pub mod checker;
pub mod error;
pub mod observer;
pub mod probe;
pub mod quorum;
pub mod sink;
pub mod supervisor;
pub mod task;

pub use observer::{HealthObserver, NoopObserver};
pub use sink::{BackendStatus, HealthSink, PassiveEvent};
pub use supervisor::HealthSupervisor;
