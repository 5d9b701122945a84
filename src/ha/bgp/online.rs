//! `alive-proxy check --online` for BGP-mode instances: BIRD's control socket answers, and
//! which of its BGP sessions are established. Read-only, like the rest of [`super::bird`].

use std::fmt;
use std::path::PathBuf;

use super::bird::Bird;
use crate::config::plan::{LockPlan, Plan};
use crate::ha::status::BgpSession;

/// What `check --online` found for one BGP instance (`Serialize` for `--json`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct BgpReport {
    pub instance: String,
    pub bird_socket: PathBuf,
    /// BIRD's greeting, or why its socket did not answer.
    pub daemon: Result<String, String>,
    pub sessions: Vec<BgpSession>,
    /// Whether BIRD carries the VIP's route now (this host announces it).
    pub route_in_daemon: bool,
}

impl BgpReport {
    /// The daemon answers and at least one BGP session is established: a route put in the
    /// table would reach a router.
    pub fn ok(&self) -> bool {
        self.daemon.is_ok() && self.sessions.iter().any(BgpSession::established)
    }
}

impl fmt::Display for BgpReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = if self.ok() { "ok" } else { "FAILED" };
        writeln!(
            f,
            "  {} (bgp, BIRD at {}): {verdict}",
            self.instance,
            self.bird_socket.display()
        )?;
        match &self.daemon {
            Ok(greeting) => writeln!(f, "    daemon: {greeting}")?,
            Err(e) => writeln!(f, "    daemon: {e}")?,
        }
        if self.daemon.is_ok() && self.sessions.is_empty() {
            writeln!(f, "    sessions: no BGP protocol configured in BIRD")?;
        }
        for s in &self.sessions {
            writeln!(f, "    session {}: {} {}", s.name, s.state, s.info)?;
        }
        if self.daemon.is_ok() {
            write!(
                f,
                "    VIP route in BIRD: {}",
                if self.route_in_daemon {
                    "yes (announced from here)"
                } else {
                    "no"
                }
            )?;
        }
        Ok(())
    }
}

/// One report per BGP instance.
pub async fn check(plan: &Plan) -> Vec<BgpReport> {
    let mut reports = Vec::new();
    for instance in &plan.instances {
        let LockPlan::Bgp(bgp) = &instance.lock else {
            continue;
        };
        let bird = Bird::new(&bgp.bird_socket);
        let (daemon, sessions, route_in_daemon) =
            match bird.read(instance.vip, &bgp.protocols).await {
                Ok(state) => (Ok(state.greeting), state.sessions, state.has_route),
                Err(e) => (Err(e.to_string()), Vec::new(), false),
            };
        reports.push(BgpReport {
            instance: instance.name.clone(),
            bird_socket: bgp.bird_socket.clone(),
            daemon,
            sessions,
            route_in_daemon,
        });
    }
    reports
}

/// [`check`] for the CLI (no runtime yet). Must not be called from inside a tokio runtime.
pub fn check_blocking(plan: &Plan) -> std::io::Result<Vec<BgpReport>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    Ok(runtime.block_on(check(plan)))
}
