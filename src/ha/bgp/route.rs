//! The VIP's route in alive-proxy's own kernel table, over rtnetlink: the one thing BGP
//! mode writes. BIRD's `kernel` protocol (`kernel table 161; learn;`) learns it and its BGP
//! protocols announce it; removing it withdraws the announcement. alive-proxy never speaks
//! BGP and never touches a route it did not add.
//!
//! The route is a blackhole /32 or /128 with protocol 161 (`ip route show table 161` shows
//! `blackhole 198.51.100.100 proto 161`): no ip rule points at the table, so it changes
//! nothing in this host's forwarding (the VIP itself is on `lo`); the protocol number marks
//! it as ours for BIRD's `learn` (which skips `proto kernel` and BIRD's own routes) and for
//! the operator. Adding is idempotent (an existing route is success), so the driver
//! re-asserts it periodically: a `ip route flush table 161` by hand heals within a period.

use std::future::Future;
use std::net::IpAddr;
use std::time::Duration;

use rtnetlink::packet_route::route::{RouteAttribute, RouteMessage, RouteProtocol, RouteType};
use rtnetlink::{Handle, RouteMessageBuilder};

/// `proto 161` on our routes (the same number as [`super::super::vip`] puts on addresses).
pub const ALIVE_ROUTE_PROTO: u8 = 0xa1;

/// Bound on one netlink call: far above a healthy kernel's answer, well below the hold-down.
const NETLINK_TIMEOUT: Duration = Duration::from_millis(400);

#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error("no netlink socket: {0}")]
    Socket(String),
    #[error("netlink {action} of {vip} in table {table}: {source}")]
    Netlink {
        action: &'static str,
        vip: IpAddr,
        table: u32,
        source: Box<rtnetlink::Error>,
    },
    #[error("netlink {action} of {vip} in table {table}: no answer within {NETLINK_TIMEOUT:?}")]
    Timeout {
        action: &'static str,
        vip: IpAddr,
        table: u32,
    },
}

/// What the driver does to the route; [`KernelRoute`] is the netlink implementation,
/// tests use their own.
pub trait RouteOps: Send + Sync + 'static {
    /// Adds the route; already present is success.
    fn announce(&self) -> impl Future<Output = Result<(), RouteError>> + Send;
    /// Removes the route; returns whether it was there.
    fn withdraw(&self) -> impl Future<Output = Result<bool, RouteError>> + Send;
}

/// The VIP's blackhole route in one table.
pub struct KernelRoute {
    /// `Err`: the socket could not be opened; every call reports why (and is counted) rather
    /// than the instance not starting at all.
    handle: Result<Handle, String>,
    vip: IpAddr,
    table: u32,
}

impl KernelRoute {
    /// Opens a netlink socket of its own (spawning its connection task on the current
    /// runtime), so BGP mode shares nothing with the address code's connection.
    pub fn connect(vip: IpAddr, table: u32) -> KernelRoute {
        let handle = match rtnetlink::new_connection() {
            Ok((connection, handle, _)) => {
                tokio::spawn(connection);
                Ok(handle)
            }
            Err(e) => Err(e.to_string()),
        };
        KernelRoute { handle, vip, table }
    }

    fn handle(&self) -> Result<&Handle, RouteError> {
        self.handle
            .as_ref()
            .map_err(|e| RouteError::Socket(e.clone()))
    }

    fn message(&self) -> RouteMessage {
        let prefix = if self.vip.is_ipv4() { 32 } else { 128 };
        let mut message =
            match RouteMessageBuilder::<IpAddr>::new().destination_prefix(self.vip, prefix) {
                Ok(builder) => builder
                    .table_id(self.table)
                    .protocol(RouteProtocol::Other(ALIVE_ROUTE_PROTO))
                    .kind(RouteType::BlackHole)
                    .build(),
                // Unreachable: the prefix length always fits the address family.
                Err(_) => RouteMessage::default(),
            };
        // table_id() puts tables above 255 in RTA_TABLE; keep the attribute list as built.
        message
            .attributes
            .retain(|a| !matches!(a, RouteAttribute::Oif(_)));
        message
    }

    fn error(&self, action: &'static str, source: rtnetlink::Error) -> RouteError {
        RouteError::Netlink {
            action,
            vip: self.vip,
            table: self.table,
            source: Box::new(source),
        }
    }

    async fn bounded<T>(
        &self,
        action: &'static str,
        call: impl Future<Output = Result<T, RouteError>>,
    ) -> Result<T, RouteError> {
        tokio::time::timeout(NETLINK_TIMEOUT, call)
            .await
            .unwrap_or(Err(RouteError::Timeout {
                action,
                vip: self.vip,
                table: self.table,
            }))
    }
}

impl RouteOps for KernelRoute {
    async fn announce(&self) -> Result<(), RouteError> {
        self.bounded("add", async {
            match self.handle()?.route().add(self.message()).execute().await {
                Ok(()) => Ok(()),
                Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::EEXIST => Ok(()),
                Err(e) => Err(self.error("add", e)),
            }
        })
        .await
    }

    async fn withdraw(&self) -> Result<bool, RouteError> {
        self.bounded("delete", async {
            match self.handle()?.route().del(self.message()).execute().await {
                Ok(()) => Ok(true),
                Err(rtnetlink::Error::NetlinkError(e))
                    if [libc::ESRCH, libc::ENOENT].contains(&-e.raw_code()) =>
                {
                    Ok(false)
                }
                Err(e) => Err(self.error("delete", e)),
            }
        })
        .await
    }
}
