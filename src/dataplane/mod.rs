//! placeholder module, filled by its owner.

pub mod scheduler;
