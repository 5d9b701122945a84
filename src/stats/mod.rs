//! Statistics.
pub mod cli;
