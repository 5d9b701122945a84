//! The VIP on its interface, over rtnetlink: add, remove, check, and the interface's MAC.
//!
//! The VIP goes on as a host address (/32 or /128), so it brings no prefix route of its own
//! and never becomes the primary address of the interface's subnet. IPv6 VIPs carry
//! IFA_F_NODAD: duplicate address detection would hold the address "tentative" (unusable)
//! for about a second after every takeover, and the lease already says who owns it.

use std::net::IpAddr;

use futures::TryStreamExt;
use rtnetlink::Handle;
use rtnetlink::packet_route::address::{AddressAttribute, AddressFlags, AddressHeaderFlags};
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
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    pub fn interface(&self) -> &str {
        &self.interface
    }

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

    /// Index and MAC of the interface, looked up each time: the interface may be recreated.
    pub async fn link(&self) -> Result<(u32, Option<[u8; 6]>), VipError> {
        let mut links = self
            .handle
            .link()
            .get()
            .match_name(self.interface.clone())
            .execute();
        let link = match links.try_next().await {
            Ok(Some(link)) => link,
            Ok(None) => return Err(VipError::NoInterface(self.interface.clone())),
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ENODEV => {
                return Err(VipError::NoInterface(self.interface.clone()));
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

    /// The address entries equal to the VIP on the interface (any prefix length).
    async fn entries(
        &self,
    ) -> Result<Vec<rtnetlink::packet_route::address::AddressMessage>, VipError> {
        let (index, _) = self.link().await?;
        let mut attempt = 1;
        loop {
            let dump = self
                .handle
                .address()
                .get()
                .set_link_index_filter(index)
                .set_address_filter(self.addr)
                .execute()
                .try_collect()
                .await;
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

    /// Loopback addresses are local to every host already; they are never added, removed or
    /// announced (a demo or test VIP of 127.0.0.1 or ::1 must not take the host's loopback
    /// address with it on shutdown).
    fn is_loopback(&self) -> bool {
        self.addr.is_loopback()
    }

    pub async fn is_present(&self) -> Result<bool, VipError> {
        if self.is_loopback() {
            return Ok(true);
        }
        Ok(!self.entries().await?.is_empty())
    }

    /// Adds the VIP; already present is success.
    pub async fn add(&self) -> Result<(), VipError> {
        if self.is_loopback() {
            return Ok(());
        }
        let (index, _) = self.link().await?;
        let mut request = self
            .handle
            .address()
            .add(index, self.addr, self.host_prefix());
        if self.addr.is_ipv6() {
            let message = request.message_mut();
            message.header.flags |= AddressHeaderFlags::Nodad;
            message
                .attributes
                .push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
        match request.execute().await {
            Ok(()) => Ok(()),
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -EEXIST => Ok(()),
            Err(e) => Err(self.error("add", e)),
        }
    }

    /// Removes the VIP's host-prefix entries (/32, /128: the ones we add) from the interface.
    /// Entries of the same address with another prefix were configured by the operator and
    /// are left alone. Returns whether anything was removed.
    pub async fn remove(&self) -> Result<bool, VipError> {
        if self.is_loopback() {
            return Ok(false);
        }
        let host_prefix = self.host_prefix();
        let entries: Vec<_> = self
            .entries()
            .await?
            .into_iter()
            .filter(|entry| entry.header.prefix_len == host_prefix)
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
}
