//! Configuration: `alive.yaml` (the seed's format, unchanged) → a validated [`Plan`].
//!
//! Pipeline: YAML with positions → raw structs → keepalived-syntax blocks lexed and parsed
//! with their positions mapped back into the YAML file → validation → [`Plan`]. Every problem
//! becomes a [`Diagnostic`] naming file:line:column; all of them are collected in one pass.

pub mod check;
pub mod plan;

pub use plan::*;

/// How strictly to treat things that depend on the machine (e.g. kubeconfig files):
/// `check` warns, `run` refuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Check,
    Run,
}
