//! The VIP on its interface, over rtnetlink: add, remove, check, the interface's MAC, and
//! the "parked" form a planned handover uses (the VIP on `lo`, where this host still owns
//! it for its sessions but answers no ARP/ND for it on the link).
//!
//! Every operation is bounded by [`NETLINK_TIMEOUT`]: a netlink call that hangs is a
//! failure the caller retries and counts, never a task that waits forever.
//!
//! The VIP goes on as a host address (/32 or /128), so it brings no prefix route of its own
//! and never becomes the primary address of the interface's subnet. IPv6 VIPs carry
//! IFA_F_NODAD: duplicate address detection would hold the address "tentative" (unusable)
//! for about a second after every takeover, and the lease already says who owns it. They
//! are also added deprecated (preferred lifetime 0, valid forever): IPv6 source address
//! selection would otherwise pick the VIP for this host's own connections to backends and
//! health ports, whose answers then follow the VIP to whichever host holds it next.
//! Deprecated addresses still take connections and serve sockets bound to them.

use std::future::Future;
use std::net::IpAddr;
use std::time::Duration;

use futures::TryStreamExt;
use rtnetlink::Handle;
use rtnetlink::packet_route::address::{
    AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage, AddressProtocol,
    AddressScope, CacheInfo,
};
use rtnetlink::packet_route::link::LinkAttribute;

#[derive(Debug, thiserror::Error)]
pub enum VipError {
    #[error("cannot open a netlink socket: {0}")]
    Socket(std::io::Error),
    #[error("interface {0} not found")]
    NoInterface(String),
    #[error("interface {0} has no Ethernet address")]
    NoMac(String),
    #[error("netlink {action} {addr} on {interface}: {source}")]
    Netlink {
        action: &'static str,
        addr: IpAddr,
        interface: String,
        source: Box<rtnetlink::Error>,
    },
    #[error("netlink {action} {addr} on {interface}: no answer within {NETLINK_TIMEOUT:?}")]
    Timeout {
        action: &'static str,
        addr: IpAddr,
        interface: String,
    },
}

/// Bound on one netlink operation (a dump, an add, a delete). Far above a healthy kernel's
/// answer (well under a millisecond) and below the lease margin, so a stuck call is noticed
/// while the holder can still act on it.
pub const NETLINK_TIMEOUT: Duration = Duration::from_millis(400);

/// The interface a parked VIP lives on.
const LOOPBACK: &str = "lo";

/// The address protocol (IFA_PROTO, `ip addr` shows `proto 161`) on every address this
/// process adds: it tells our parked VIP on `lo` from an operator's own loopback address
/// (an LVS-DR style VIP, a BGP-announced one), which unparking must never remove.
const ALIVE_PROTO: u8 = 0xa1;

/// What the keeper does to a VIP address; [`Vip`] is the netlink implementation, tests
/// inject failures with their own.
pub trait VipOps: Send + Sync + 'static {
    fn addr(&self) -> IpAddr;
    fn interface(&self) -> &str;
    /// Index and MAC of the interface.
    fn link(&self) -> impl Future<Output = Result<(u32, Option<[u8; 6]>), VipError>> + Send;
    /// Whether the VIP is on its interface.
    fn is_present(&self) -> impl Future<Output = Result<bool, VipError>> + Send;
    /// Adds the VIP to its interface; already present is success.
    fn add(&self) -> impl Future<Output = Result<(), VipError>> + Send;
    /// Removes the VIP from its interface; returns whether it was there.
    fn remove(&self) -> impl Future<Output = Result<bool, VipError>> + Send;
    /// Puts the VIP on `lo` (already there is success).
    fn park(&self) -> impl Future<Output = Result<(), VipError>> + Send;
    /// Removes the VIP from `lo`; returns whether it was there.
    fn unpark(&self) -> impl Future<Output = Result<bool, VipError>> + Send;
    /// This host's own address of the VIP's family on the interface (global first, then
    /// link-local), which a new holder forwards a handed-over session's packets to.
    fn host_address(&self) -> impl Future<Output = Result<Option<IpAddr>, VipError>> + Send;
}

const EEXIST: i32 = libc::EEXIST;
const NOT_THERE: [i32; 2] = [libc::EADDRNOTAVAIL, libc::ENOENT];
/// Tries of an address dump that the kernel interrupted.
const DUMP_ATTEMPTS: u32 = 3;

/// A netlink connection; one per HA supervisor, shared by its VIPs.
#[derive(Clone)]
pub struct Netlink {
    handle: Handle,
}

impl Netlink {
    /// Opens the socket and spawns its connection task on the current tokio runtime.
    pub fn connect() -> Result<Netlink, VipError> {
        let (connection, handle, _) = rtnetlink::new_connection().map_err(VipError::Socket)?;
        tokio::spawn(connection);
        Ok(Netlink { handle })
    }

    pub fn vip(&self, interface: &str, addr: IpAddr) -> Vip {
        Vip {
            handle: self.handle.clone(),
            interface: interface.to_owned(),
            addr,
        }
    }
}

/// One VIP address on one interface.
#[derive(Clone)]
pub struct Vip {
    handle: Handle,
    interface: String,
    addr: IpAddr,
}

impl Vip {
    fn host_prefix(&self) -> u8 {
        match self.addr {
            IpAddr::V4(_) => 32,
            IpAddr::V6(_) => 128,
        }
    }

    fn error(&self, action: &'static str, source: rtnetlink::Error) -> VipError {
        VipError::Netlink {
            action,
            addr: self.addr,
            interface: self.interface.clone(),
            source: Box::new(source),
        }
    }

    /// `call` bounded by [`NETLINK_TIMEOUT`].
    async fn bounded<T>(
        &self,
        action: &'static str,
        call: impl Future<Output = Result<T, VipError>>,
    ) -> Result<T, VipError> {
        tokio::time::timeout(NETLINK_TIMEOUT, call)
            .await
            .unwrap_or_else(|_| {
                Err(VipError::Timeout {
                    action,
                    addr: self.addr,
                    interface: self.interface.clone(),
                })
            })
    }

    /// Index and MAC of `interface`, looked up each time: the interface may be recreated.
    async fn link_of(&self, interface: &str) -> Result<(u32, Option<[u8; 6]>), VipError> {
        let mut links = self
            .handle
            .link()
            .get()
            .match_name(interface.to_owned())
            .execute();
        let link = match links.try_next().await {
            Ok(Some(link)) => link,
            Ok(None) => return Err(VipError::NoInterface(interface.to_owned())),
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ENODEV => {
                return Err(VipError::NoInterface(interface.to_owned()));
            }
            Err(e) => return Err(self.error("get link", e)),
        };
        let mac = link.attributes.iter().find_map(|a| match a {
            LinkAttribute::Address(bytes) => <[u8; 6]>::try_from(bytes.as_slice()).ok(),
            _ => None,
        });
        Ok((link.header.index, mac))
    }

    pub async fn mac(&self) -> Result<[u8; 6], VipError> {
        self.link()
            .await?
            .1
            .ok_or_else(|| VipError::NoMac(self.interface.clone()))
    }

    /// Address entries on the link `index`, optionally only those equal to `addr`.
    async fn dump(
        &self,
        index: u32,
        addr: Option<IpAddr>,
    ) -> Result<Vec<AddressMessage>, VipError> {
        let mut attempt = 1;
        loop {
            let mut request = self.handle.address().get().set_link_index_filter(index);
            if let Some(addr) = addr {
                request = request.set_address_filter(addr);
            }
            let dump = request.execute().try_collect().await;
            match dump {
                // The kernel interrupts a dump when the address list changes under it
                // (EBUSY); a fresh dump sees the new list.
                Err(rtnetlink::Error::NetlinkError(e))
                    if -e.raw_code() == libc::EBUSY && attempt < DUMP_ATTEMPTS =>
                {
                    attempt += 1;
                }
                other => return other.map_err(|e| self.error("list", e)),
            }
        }
    }

    async fn add_on(&self, interface: &str) -> Result<(), VipError> {
        let (index, _) = self.link_of(interface).await?;
        let mut request = self
            .handle
            .address()
            .add(index, self.addr, self.host_prefix());
        let message = request.message_mut();
        message
            .attributes
            .push(AddressAttribute::Protocol(AddressProtocol::Other(
                ALIVE_PROTO,
            )));
        if self.addr.is_ipv6() {
            message.header.flags |= AddressHeaderFlags::Nodad;
            message
                .attributes
                .push(AddressAttribute::Flags(AddressFlags::Nodad));
            let mut lifetimes = CacheInfo::default();
            lifetimes.ifa_preferred = 0;
            lifetimes.ifa_valid = u32::MAX;
            message
                .attributes
                .push(AddressAttribute::CacheInfo(lifetimes));
        }
        match request.execute().await {
            Ok(()) => Ok(()),
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -EEXIST => Ok(()),
            Err(e) => Err(self.error("add", e)),
        }
    }

    /// Removes the VIP's host-prefix entries (/32, /128: the ones we add) from `interface`.
    /// Entries of the same address with another prefix were configured by the operator and
    /// are left alone; with `only_ours`, so are entries another program added.
    async fn remove_from(&self, interface: &str, only_ours: bool) -> Result<bool, VipError> {
        let index = match self.link_of(interface).await {
            Ok((index, _)) => index,
            // An interface that does not exist carries no address: the VIP is not there.
            Err(VipError::NoInterface(_)) => return Ok(false),
            Err(e) => return Err(e),
        };
        let host_prefix = self.host_prefix();
        let ours = |entry: &AddressMessage| {
            entry.attributes.iter().any(|a| {
                matches!(a, AddressAttribute::Protocol(AddressProtocol::Other(p)) if *p == ALIVE_PROTO)
            })
        };
        let entries: Vec<_> = self
            .dump(index, Some(self.addr))
            .await?
            .into_iter()
            .filter(|entry| entry.header.prefix_len == host_prefix)
            .filter(|entry| !only_ours || ours(entry))
            .collect();
        let found = !entries.is_empty();
        for entry in entries {
            match self.handle.address().del(entry).execute().await {
                Ok(()) => {}
                Err(rtnetlink::Error::NetlinkError(e)) if NOT_THERE.contains(&-e.raw_code()) => {}
                Err(e) => return Err(self.error("remove", e)),
            }
        }
        Ok(found)
    }

    /// Loopback addresses are local to every host already; they are never added, removed,
    /// parked or announced (a demo or test VIP of 127.0.0.1 or ::1 must not take the host's
    /// loopback address with it on shutdown).
    fn is_loopback(&self) -> bool {
        self.addr.is_loopback()
    }
}

fn entry_addr(entry: &AddressMessage) -> Option<IpAddr> {
    // IPv4 puts the local address in IFA_LOCAL (IFA_ADDRESS is the peer on p2p links).
    let local = entry.attributes.iter().find_map(|a| match a {
        AddressAttribute::Local(ip) => Some(*ip),
        _ => None,
    });
    local.or_else(|| {
        entry.attributes.iter().find_map(|a| match a {
            AddressAttribute::Address(ip) => Some(*ip),
            _ => None,
        })
    })
}

impl VipOps for Vip {
    fn addr(&self) -> IpAddr {
        self.addr
    }

    fn interface(&self) -> &str {
        &self.interface
    }

    async fn link(&self) -> Result<(u32, Option<[u8; 6]>), VipError> {
        self.bounded("get link", self.link_of(&self.interface))
            .await
    }

    async fn is_present(&self) -> Result<bool, VipError> {
        if self.is_loopback() {
            return Ok(true);
        }
        self.bounded("list", async {
            let (index, _) = self.link_of(&self.interface).await?;
            Ok(!self.dump(index, Some(self.addr)).await?.is_empty())
        })
        .await
    }

    async fn add(&self) -> Result<(), VipError> {
        if self.is_loopback() {
            return Ok(());
        }
        self.bounded("add", self.add_on(&self.interface)).await
    }

    async fn remove(&self) -> Result<bool, VipError> {
        if self.is_loopback() {
            return Ok(false);
        }
        self.bounded("remove", self.remove_from(&self.interface, false))
            .await
    }

    async fn park(&self) -> Result<(), VipError> {
        if self.is_loopback() {
            return Ok(());
        }
        self.bounded("park", self.add_on(LOOPBACK)).await
    }

    async fn unpark(&self) -> Result<bool, VipError> {
        if self.is_loopback() {
            return Ok(false);
        }
        self.bounded("unpark", self.remove_from(LOOPBACK, true))
            .await
    }

    async fn host_address(&self) -> Result<Option<IpAddr>, VipError> {
        self.bounded("list", async {
            let (index, _) = self.link_of(&self.interface).await?;
            let entries = self.dump(index, None).await?;
            let candidates = entries
                .iter()
                .filter_map(|e| Some((e.header.scope, entry_addr(e)?)))
                .filter(|(_, ip)| ip.is_ipv4() == self.addr.is_ipv4() && *ip != self.addr);
            let mut link_local = None;
            for (scope, ip) in candidates {
                match scope {
                    AddressScope::Universe => return Ok(Some(ip)),
                    AddressScope::Link if link_local.is_none() => link_local = Some(ip),
                    _ => {}
                }
            }
            Ok(link_local)
        })
        .await
    }
}
