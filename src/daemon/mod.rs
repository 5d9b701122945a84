//! What the daemon claims from the host it runs on, before it serves anything.
//!
//! - [`instance_lock`]: one daemon per admin socket; a second one refuses to start before it
//!   binds a listener or touches a VIP.
//! - [`fd_limit`]: RLIMIT_NOFILE raised to the hard limit, and how the descriptors are shared
//!   between the data plane (two per session, splice pipes) and the control plane (admin
//!   connections, probes, leases).
//!
//! Nothing here depends on the rest of the crate; the data plane and the admin endpoint read
//! their shares of the descriptor budget from [`fd_limit`].

pub mod fd_limit;
pub mod instance_lock;
