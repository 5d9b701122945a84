//! `alive-proxy check --online` (owner: kube helper).
