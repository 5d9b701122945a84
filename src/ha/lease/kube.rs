//! Kubernetes coordination.k8s.io/v1 Lease store (owner: kube helper).
