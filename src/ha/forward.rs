//! The new holder's half of a planned handover: packets for the VIP that belong to sessions
//! the previous holder still serves are sent on to it, so those sessions finish there.
//!
//! A client keeps sending to the VIP's MAC, which after the takeover is ours. A packet of a
//! session established on the old holder is no SYN and matches no socket here; left alone,
//! our kernel would answer it with a reset. So, while a handover note is in force, an
//! nftables chain hooked at prerouting after conntrack (priority -150):
//! 1. marks a flow whose first packet here is not a SYN (conntrack picks such flows up
//!    mid-stream as `new`, with the kernel's default `nf_conntrack_tcp_loose = 1`);
//! 2. sends every packet of a marked flow to the old holder's own address with `dup to ...
//!    device ...` (the packet is unchanged; only its next hop is the old holder, which
//!    still has the VIP parked on `lo`) and drops our copy;
//! 3. does the same for a FIN or RST that conntrack cannot pick up (`invalid`): an idle
//!    keep-alive session's first packet after the switch is often its FIN.
//!
//! Flows that start here with a SYN are ours and never marked. The mark is one bit pattern
//! ([`HANDOVER_MARK`]) or-ed into the conntrack mark, so other users of the mark keep theirs.
//!
//! This process owns the tables `ip alive_proxy` and `ip6 alive_proxy` and nothing else:
//! every change rewrites both in one `nft -f` transaction, and an empty set of forwards
//! deletes them. The `nft` command is nftables' supported interface; the rules are a few
//! lines of its own language, which is what we write rather than wrapping its JSON form.
//!
//! Limits: packets that were on their way during the switch may arrive at our kernel before
//! the rules are in place only if the rules were late, which the takeover order (rules
//! first, then the address) prevents; a stray packet for a session the old holder already
//! closed is forwarded and dropped (or reset) there.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::process::Stdio;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::sync::Notify;
use tokio::time::Instant;

/// Or-ed into the conntrack mark of a flow forwarded to the previous holder.
pub const HANDOVER_MARK: u32 = 0x00a1_0000;
/// Bound on one `nft` run.
const NFT_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("cannot run nft (install nftables): {0}")]
    Spawn(std::io::Error),
    #[error("nft failed: {0}")]
    Failed(String),
    #[error("nft gave no answer within {NFT_TIMEOUT:?}")]
    Timeout,
}

/// One VIP's forwarding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forwarding {
    pub vip: IpAddr,
    /// The previous holder's own address on `interface`.
    pub to: IpAddr,
    pub interface: String,
    pub until: Instant,
}

/// The set of forwardings in force, per instance, and the nftables tables that carry them.
pub struct Forwarder {
    entries: Mutex<BTreeMap<String, Forwarding>>,
    /// Serialises rewrites so the tables always show the latest set.
    writing: tokio::sync::Mutex<()>,
    changed: Arc<Notify>,
}

impl Forwarder {
    /// Starts the task that ends each forwarding at its `until`. Call inside tokio.
    pub fn start() -> Arc<Forwarder> {
        let forwarder = Arc::new(Forwarder {
            entries: Mutex::new(BTreeMap::new()),
            writing: tokio::sync::Mutex::new(()),
            changed: Arc::new(Notify::new()),
        });
        tokio::spawn(expire(Arc::downgrade(&forwarder)));
        forwarder
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Forwarding>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Forward `instance`'s handed-over sessions as `forwarding` says (replacing any).
    pub async fn install(
        &self,
        instance: &str,
        forwarding: Forwarding,
    ) -> Result<(), ForwardError> {
        tracing::info!(
            instance, vip = %forwarding.vip, to = %forwarding.to, interface = %forwarding.interface,
            for_ = ?forwarding.until.saturating_duration_since(Instant::now()),
            "forwarding the previous holder's sessions to it"
        );
        self.entries().insert(instance.to_owned(), forwarding);
        self.changed.notify_one();
        self.rewrite().await
    }

    /// Ends `instance`'s forwarding, if any.
    pub async fn remove(&self, instance: &str) -> Result<(), ForwardError> {
        if self.entries().remove(instance).is_none() {
            return Ok(());
        }
        self.changed.notify_one();
        self.rewrite().await
    }

    /// Deletes our tables whatever they hold: at start (left by a killed predecessor) and
    /// at the end of shutdown.
    pub async fn clear(&self) -> Result<(), ForwardError> {
        self.entries().clear();
        self.rewrite().await
    }

    async fn rewrite(&self) -> Result<(), ForwardError> {
        let _writing = self.writing.lock().await;
        let script = script(&self.entries().values().cloned().collect::<Vec<_>>());
        run_nft(&script).await
    }

    fn drop_expired(&self, now: Instant) -> (bool, Option<Instant>) {
        let mut entries = self.entries();
        let before = entries.len();
        entries.retain(|instance, f| {
            let keep = f.until > now;
            if !keep {
                tracing::info!(instance, vip = %f.vip, "handover forwarding ended");
            }
            keep
        });
        let next = entries.values().map(|f| f.until).min();
        (entries.len() != before, next)
    }
}

async fn expire(forwarder: std::sync::Weak<Forwarder>) {
    loop {
        let Some(this) = forwarder.upgrade() else {
            return;
        };
        let (changed, next) = this.drop_expired(Instant::now());
        if changed && let Err(e) = this.rewrite().await {
            tracing::error!("ending a handover forwarding: {e}");
        }
        let changed = Arc::clone(&this.changed);
        let sleep = async {
            match next {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        // Hold no strong reference while waiting, so dropping the forwarder ends this task.
        drop(this);
        tokio::select! {
            () = changed.notified() => {}
            () = sleep => {}
            () = tokio::time::sleep(Duration::from_secs(60)) => {}
        }
    }
}

/// The nft script that makes the tables hold exactly `entries` (none: deletes them).
pub fn script(entries: &[Forwarding]) -> String {
    let mut out = String::new();
    for (family, match_key, is_v4) in [("ip", "ip daddr", true), ("ip6", "ip6 daddr", false)] {
        // Declaring first makes the delete succeed when the table does not exist yet.
        out.push_str(&format!(
            "table {family} alive_proxy\ndelete table {family} alive_proxy\n"
        ));
        let mine: Vec<&Forwarding> = entries
            .iter()
            .filter(|f| f.vip.is_ipv4() == is_v4)
            .collect();
        if mine.is_empty() {
            continue;
        }
        out.push_str(&format!(
            "table {family} alive_proxy {{\n    chain handover {{\n        \
             type filter hook prerouting priority -150; policy accept;\n"
        ));
        for f in mine {
            let on = format!("iifname \"{}\" {match_key} {}", f.interface, f.vip);
            let send = format!("dup to {} device \"{}\" drop", f.to, f.interface);
            out.push_str(&format!(
                "        {on} ct state new tcp flags & (fin | syn | rst | ack) != syn \
                 ct mark set ct mark | {HANDOVER_MARK:#010x}\n"
            ));
            out.push_str(&format!(
                "        {on} meta l4proto tcp ct mark & {HANDOVER_MARK:#010x} == \
                 {HANDOVER_MARK:#010x} {send}\n"
            ));
            out.push_str(&format!(
                "        {on} ct state invalid tcp flags & (fin | rst) != 0 {send}\n"
            ));
        }
        out.push_str("    }\n}\n");
    }
    out
}

pub(crate) async fn run_nft(script: &str) -> Result<(), ForwardError> {
    let run = async {
        let mut child = tokio::process::Command::new("nft")
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(ForwardError::Spawn)?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(script.as_bytes())
                .await
                .map_err(|e| ForwardError::Failed(e.to_string()))?;
        }
        let output = child
            .wait_with_output()
            .await
            .map_err(|e| ForwardError::Failed(e.to_string()))?;
        if output.status.success() {
            Ok(())
        } else {
            Err(ForwardError::Failed(
                String::from_utf8_lossy(&output.stderr).trim().to_owned(),
            ))
        }
    };
    tokio::time::timeout(NFT_TIMEOUT, run)
        .await
        .unwrap_or(Err(ForwardError::Timeout))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forwarding(vip: &str, to: &str) -> Forwarding {
        Forwarding {
            vip: vip.parse().expect("vip"),
            to: to.parse().expect("to"),
            interface: "eth0".into(),
            until: Instant::now(),
        }
    }

    #[test]
    fn no_forwardings_delete_both_tables() {
        assert_eq!(
            script(&[]),
            "table ip alive_proxy\ndelete table ip alive_proxy\n\
             table ip6 alive_proxy\ndelete table ip6 alive_proxy\n"
        );
    }

    #[test]
    fn each_family_gets_its_own_table_with_mark_forward_and_fin_rules() {
        let text = script(&[
            forwarding("192.0.2.100", "192.0.2.11"),
            forwarding("2001:db8::100", "2001:db8::11"),
        ]);
        let v4 = text
            .split("table ip6")
            .next()
            .expect("the ip table comes first");
        assert!(
            v4.contains("iifname \"eth0\" ip daddr 192.0.2.100 ct state new tcp flags & (fin | syn | rst | ack) != syn ct mark set ct mark | 0x00a10000"),
            "{text}"
        );
        assert!(
            v4.contains(
                "ct mark & 0x00a10000 == 0x00a10000 dup to 192.0.2.11 device \"eth0\" drop"
            ),
            "{text}"
        );
        assert!(
            v4.contains("ct state invalid tcp flags & (fin | rst) != 0 dup to 192.0.2.11"),
            "{text}"
        );
        assert!(!v4.contains("2001:db8"), "v6 rules in the ip table: {text}");
        assert!(
            text.contains("ip6 daddr 2001:db8::100") && text.contains("dup to 2001:db8::11"),
            "{text}"
        );
        assert_eq!(text.matches("priority -150").count(), 2, "{text}");
    }
}
