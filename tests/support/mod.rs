//! Shared test machinery: free ports, process guards, network-namespace labs, polling.
//! Every integration test file includes it with `mod support;`. Not every test file uses
//! every helper, hence the crate-wide allow.
#![allow(dead_code)]

pub mod dataplane;
pub mod health;
pub mod kube_api;
pub mod metrics;
pub mod netns;
pub mod ports;
pub mod process;
pub mod wait;
