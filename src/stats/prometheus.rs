//! The merged snapshot as Prometheus metrics (prometheus-client, text format 0.0.4).
