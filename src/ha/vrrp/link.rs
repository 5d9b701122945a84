//! The instance's interface as VRRP sees it, over rtnetlink: whether it can carry adverts
//! (administratively up and with carrier), the address adverts go out from, and every
//! address of this host (a host drops itself from `peer`, as the seed's tool does when it
//! writes keepalived's `unicast_peer`).
//!
//! A [`LinkWatch`] is subscribed to the kernel's link and address notifications, so link
//! loss reaches the state machine within milliseconds (keepalived's FAULT state does the
//! same), long before the peers' Master_Down timers run out.

use std::net::IpAddr;

use futures::channel::mpsc::UnboundedReceiver;
use futures::{StreamExt, TryStreamExt};
use rtnetlink::Handle;
use rtnetlink::constants::{RTMGRP_IPV4_IFADDR, RTMGRP_IPV6_IFADDR, RTMGRP_LINK};
use rtnetlink::packet_route::address::{AddressAttribute, AddressHeaderFlags, AddressMessage};
use rtnetlink::packet_route::link::{LinkAttribute, LinkFlags};
use rtnetlink::packet_route::neighbour::{NeighbourFlags, NeighbourState};
use rtnetlink::sys::{AsyncSocket, SocketAddr as NetlinkAddr};

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("cannot open a netlink socket: {0}")]
    Socket(std::io::Error),
    #[error("interface {0} not found")]
    NoInterface(String),
    #[error("netlink {what}: {source}")]
    Netlink {
        what: &'static str,
        source: Box<rtnetlink::Error>,
    },
}

/// What the driver needs to know about the interface now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkInfo {
    pub index: u32,
    /// Up and with carrier: adverts can go out.
    pub up: bool,
    /// IPv4: an address of the interface other than the VIP, preferably in a peer's subnet
    /// (the kernel would pick it too). IPv6: the interface's link-local address
    /// (RFC 5798 §5.1.2.2). `None`: nothing usable (yet: DAD, link just up).
    pub source: Option<IpAddr>,
    pub mac: Option<[u8; 6]>,
    /// This host's addresses on the interface (any family), usable or not yet.
    pub addresses: Vec<IpAddr>,
}

pub struct LinkWatch {
    handle: Handle,
    interface: String,
    notifications: UnboundedReceiver<(
        rtnetlink::packet_core::NetlinkMessage<rtnetlink::packet_route::RouteNetlinkMessage>,
        NetlinkAddr,
    )>,
}

impl LinkWatch {
    /// Subscribes to link and address changes; call inside a tokio runtime.
    pub fn open(interface: &str) -> Result<LinkWatch, LinkError> {
        let (mut connection, handle, notifications) =
            rtnetlink::new_connection().map_err(LinkError::Socket)?;
        let groups = RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR;
        connection
            .socket_mut()
            .socket_mut()
            .bind(&NetlinkAddr::new(0, groups))
            .map_err(LinkError::Socket)?;
        tokio::spawn(connection);
        Ok(LinkWatch {
            handle,
            interface: interface.to_owned(),
            notifications,
        })
    }

    /// Returns when the kernel reports a change to some link or address (re-read with
    /// [`LinkWatch::info`]); pending notifications are drained so a burst counts once.
    /// Never returns if the notification stream ended (the connection task is gone).
    pub async fn changed(&mut self) {
        if self.notifications.next().await.is_none() {
            std::future::pending::<()>().await;
        }
        while self.notifications.try_recv().is_ok() {}
    }

    pub async fn info(&self, vip: IpAddr, peers: &[IpAddr]) -> Result<LinkInfo, LinkError> {
        let mut links = self
            .handle
            .link()
            .get()
            .match_name(self.interface.clone())
            .execute();
        let link = match links.try_next().await {
            Ok(Some(link)) => link,
            Ok(None) => return Err(LinkError::NoInterface(self.interface.clone())),
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ENODEV => {
                return Err(LinkError::NoInterface(self.interface.clone()));
            }
            Err(e) => return Err(netlink("get link", e)),
        };
        let index = link.header.index;
        let flags = link.header.flags;
        let up = flags.contains(LinkFlags::Up) && flags.contains(LinkFlags::Running);
        let mac = link.attributes.iter().find_map(|a| match a {
            LinkAttribute::Address(bytes) => <[u8; 6]>::try_from(bytes.as_slice()).ok(),
            _ => None,
        });
        let addresses = self.addresses(Some(index)).await?;
        Ok(LinkInfo {
            index,
            up,
            source: pick_source(vip, peers, &addresses),
            mac,
            addresses: addresses.iter().map(|a| a.addr).collect(),
        })
    }

    /// Asks the kernel to resolve (or refresh) its neighbour entries for `peers` on the
    /// interface, as a packet to them would (RTM_NEWNEIGH with NTF_USE). A backup sends
    /// nothing, so without this a new master's first adverts to a peer that is itself
    /// down start from no entry: the kernel then solicits only every second, and the peer,
    /// back within that second, misses our adverts and elects itself. With a cached MAC the
    /// adverts go out at once and reach it the moment it is back.
    pub async fn resolve(&self, index: u32, peers: &[IpAddr]) -> Result<(), LinkError> {
        for peer in peers {
            let request = self
                .handle
                .neighbours()
                .add(index, *peer)
                .state(NeighbourState::Incomplete)
                .flags(NeighbourFlags::Use)
                .replace();
            if let Err(e) = request.execute().await {
                return Err(netlink("resolve a peer", e));
            }
        }
        Ok(())
    }

    /// Every usable address of this host, on any interface.
    pub async fn own_addresses(&self) -> Result<Vec<IpAddr>, LinkError> {
        Ok(self
            .addresses(None)
            .await?
            .into_iter()
            .map(|a| a.addr)
            .collect())
    }

    async fn addresses(&self, index: Option<u32>) -> Result<Vec<Addr>, LinkError> {
        let mut request = self.handle.address().get();
        if let Some(index) = index {
            request = request.set_link_index_filter(index);
        }
        let messages: Vec<AddressMessage> = match request.execute().try_collect().await {
            Ok(m) => m,
            Err(e) => return Err(netlink("list addresses", e)),
        };
        Ok(messages.iter().filter_map(Addr::of).collect())
    }
}

fn netlink(what: &'static str, source: rtnetlink::Error) -> LinkError {
    LinkError::Netlink {
        what,
        source: Box::new(source),
    }
}

/// One address entry, as source selection needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Addr {
    pub addr: IpAddr,
    pub prefix_len: u8,
    /// IPv4 secondary, or an IPv6 address still in (or failed) duplicate address detection.
    pub unusable: bool,
}

impl Addr {
    fn of(message: &AddressMessage) -> Option<Addr> {
        let mut address = None;
        for attribute in &message.attributes {
            match attribute {
                // IFA_LOCAL is the local end on point-to-point links; prefer it.
                AddressAttribute::Local(a) => address = Some(*a),
                AddressAttribute::Address(a) if address.is_none() => address = Some(*a),
                _ => {}
            }
        }
        let flags = message.header.flags;
        Some(Addr {
            addr: address?,
            prefix_len: message.header.prefix_len,
            unusable: flags.contains(AddressHeaderFlags::Tentative)
                || flags.contains(AddressHeaderFlags::Dadfailed),
        })
    }
}

/// The advert source among the interface's addresses (see [`LinkInfo::source`]).
pub fn pick_source(vip: IpAddr, peers: &[IpAddr], addresses: &[Addr]) -> Option<IpAddr> {
    let candidates = addresses
        .iter()
        .filter(|a| !a.unusable && a.addr != vip && a.addr.is_ipv4() == vip.is_ipv4());
    match vip {
        IpAddr::V6(_) => candidates
            .map(|a| a.addr)
            .find(|a| matches!(a, IpAddr::V6(v6) if v6.is_unicast_link_local())),
        IpAddr::V4(_) => {
            let candidates: Vec<&Addr> = candidates.collect();
            candidates
                .iter()
                .find(|a| peers.iter().any(|p| same_subnet(a, *p)))
                .or_else(|| candidates.first())
                .map(|a| a.addr)
        }
    }
}

fn same_subnet(a: &Addr, peer: IpAddr) -> bool {
    match (a.addr, peer) {
        (IpAddr::V4(mine), IpAddr::V4(theirs)) if a.prefix_len > 0 && a.prefix_len <= 32 => {
            let mask = u32::MAX << (32 - u32::from(a.prefix_len));
            u32::from(mine) & mask == u32::from(theirs) & mask
        }
        _ => false,
    }
}

/// `peer` without this host's own addresses: where adverts go. Empty: multicast.
pub fn unicast_peers(peers: &[IpAddr], own: &[IpAddr]) -> Vec<IpAddr> {
    peers.iter().copied().filter(|p| !own.contains(p)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> Addr {
        let (ip, len) = s.split_once('/').expect("CIDR");
        Addr {
            addr: ip.parse().expect("address"),
            prefix_len: len.parse().expect("prefix"),
            unusable: false,
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("address")
    }

    #[test]
    fn ipv4_source_is_the_address_in_the_peers_subnet_never_the_vip() {
        let addrs = [
            addr("192.0.2.100/32"),
            addr("203.0.113.5/24"),
            addr("198.51.100.11/24"),
        ];
        assert_eq!(
            pick_source(ip("192.0.2.100"), &[ip("198.51.100.12")], &addrs),
            Some(ip("198.51.100.11"))
        );
        assert_eq!(
            pick_source(ip("192.0.2.100"), &[], &addrs),
            Some(ip("203.0.113.5")),
            "multicast: the first address"
        );
        assert_eq!(pick_source(ip("192.0.2.100"), &[], &addrs[..1]), None);
    }

    #[test]
    fn ipv6_source_is_the_link_local_once_it_left_dad() {
        let mut ll = addr("fe80::11/64");
        let addrs = [addr("2001:db8::11/64"), ll];
        assert_eq!(
            pick_source(ip("2001:db8::100"), &[ip("2001:db8::12")], &addrs),
            Some(ip("fe80::11"))
        );
        ll.unusable = true;
        assert_eq!(
            pick_source(ip("2001:db8::100"), &[], &[addr("2001:db8::11/64"), ll]),
            None
        );
    }

    #[test]
    fn a_host_drops_its_own_addresses_from_the_peers() {
        let peers = [ip("192.0.2.11"), ip("192.0.2.12"), ip("192.0.2.13")];
        assert_eq!(
            unicast_peers(&peers, &[ip("192.0.2.12"), ip("127.0.0.1")]),
            vec![ip("192.0.2.11"), ip("192.0.2.13")]
        );
        assert!(unicast_peers(&peers[1..2], &[ip("192.0.2.12")]).is_empty());
    }
}
