//! Shared test machinery: free ports, process guards, network-namespace labs, polling,
//! the Docker Engine.
//! Every integration test file includes it with `mod support;`. Not every test file uses
//! every helper, hence the crate-wide allow.
#![allow(dead_code)]

pub mod container;
pub mod dataplane;
pub mod health;
pub mod keepalived;
pub mod kube_api;
pub mod metrics;
pub mod netns;
pub mod ports;
pub mod process;
pub mod traffic;
pub mod wait;
