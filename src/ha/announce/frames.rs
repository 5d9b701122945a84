//! Announcement packets built and parsed by hand: gratuitous ARP as whole Ethernet frames
//! (for an AF_PACKET socket) and the ICMPv6 Neighbor Advertisement body (for a raw ICMPv6
//! socket, which adds the IPv6 header and the checksum).
//!
//! Why by hand: no maintained crate writes a gratuitous ARP or an unsolicited NA for an
//! existing socket (pnet's packet builders are unmaintained and pull in much more, and
//! these are 42- and 32-byte layouts fixed by RFC 826 and RFC 4861).

use std::net::{Ipv4Addr, Ipv6Addr};

pub type Mac = [u8; 6];

pub const BROADCAST: Mac = [0xff; 6];
const ETHERTYPE_ARP: [u8; 2] = [0x08, 0x06];
const ARP_REQUEST: u16 = 1;
const ARP_REPLY: u16 = 2;
pub const ARP_FRAME_LEN: usize = 42;

pub const ICMPV6_NEIGHBOR_ADVERT: u8 = 136;
const NA_FLAG_OVERRIDE: u8 = 0x20;
const OPT_TARGET_LINK_ADDR: u8 = 2;
pub const NA_LEN: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArpOp {
    Request,
    Reply,
}

/// A gratuitous ARP frame, broadcast: sender IP = target IP = `vip`, sender MAC = ours.
/// The request asks nobody anything; it makes every host on the segment update an
/// existing cache entry for `vip` (Linux does so at once, also for requests).
pub fn gratuitous_arp(op: ArpOp, mac: Mac, vip: Ipv4Addr) -> [u8; ARP_FRAME_LEN] {
    let target_mac = match op {
        ArpOp::Request => [0; 6],
        ArpOp::Reply => mac,
    };
    arp_frame(op, BROADCAST, mac, vip, target_mac, vip)
}

/// An ARP probe (RFC 5227): who has `vip`? Sent from 0.0.0.0 so no cache learns from it;
/// every host holding `vip` answers to our MAC, which exposes a second holder.
pub fn arp_probe(mac: Mac, vip: Ipv4Addr) -> [u8; ARP_FRAME_LEN] {
    arp_frame(
        ArpOp::Request,
        BROADCAST,
        mac,
        Ipv4Addr::UNSPECIFIED,
        [0; 6],
        vip,
    )
}

fn arp_frame(
    op: ArpOp,
    dst: Mac,
    sender_mac: Mac,
    sender_ip: Ipv4Addr,
    target_mac: Mac,
    target_ip: Ipv4Addr,
) -> [u8; ARP_FRAME_LEN] {
    let mut f = [0u8; ARP_FRAME_LEN];
    f[0..6].copy_from_slice(&dst);
    f[6..12].copy_from_slice(&sender_mac);
    f[12..14].copy_from_slice(&ETHERTYPE_ARP);
    f[14..16].copy_from_slice(&1u16.to_be_bytes()); // hardware: Ethernet
    f[16..18].copy_from_slice(&0x0800u16.to_be_bytes()); // protocol: IPv4
    f[18] = 6;
    f[19] = 4;
    let code = match op {
        ArpOp::Request => ARP_REQUEST,
        ArpOp::Reply => ARP_REPLY,
    };
    f[20..22].copy_from_slice(&code.to_be_bytes());
    f[22..28].copy_from_slice(&sender_mac);
    f[28..32].copy_from_slice(&sender_ip.octets());
    f[32..38].copy_from_slice(&target_mac);
    f[38..42].copy_from_slice(&target_ip.octets());
    f
}

/// The fields of an Ethernet/IPv4 ARP frame that matter for conflict detection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArpSeen {
    pub op: ArpOp,
    pub sender_mac: Mac,
    pub sender_ip: Ipv4Addr,
    pub target_ip: Ipv4Addr,
}

pub fn parse_arp(frame: &[u8]) -> Option<ArpSeen> {
    if frame.len() < ARP_FRAME_LEN
        || frame[12..14] != ETHERTYPE_ARP
        || frame[14..20] != [0, 1, 8, 0, 6, 4]
    {
        return None;
    }
    let op = match u16::from_be_bytes([frame[20], frame[21]]) {
        ARP_REQUEST => ArpOp::Request,
        ARP_REPLY => ArpOp::Reply,
        _ => return None,
    };
    let ip = |at: usize| Ipv4Addr::new(frame[at], frame[at + 1], frame[at + 2], frame[at + 3]);
    let mut sender_mac = [0u8; 6];
    sender_mac.copy_from_slice(&frame[22..28]);
    Some(ArpSeen {
        op,
        sender_mac,
        sender_ip: ip(28),
        target_ip: ip(38),
    })
}

/// An unsolicited Neighbor Advertisement for `vip` with the Override flag, so neighbours
/// replace a cached link-layer address, and our MAC as target link-layer address option.
/// Checksum left zero: the kernel fills it for raw ICMPv6 sockets (RFC 3542 §3.1).
pub fn unsolicited_na(mac: Mac, vip: Ipv6Addr) -> [u8; NA_LEN] {
    let mut p = [0u8; NA_LEN];
    p[0] = ICMPV6_NEIGHBOR_ADVERT;
    p[4] = NA_FLAG_OVERRIDE;
    p[8..24].copy_from_slice(&vip.octets());
    p[24] = OPT_TARGET_LINK_ADDR;
    p[25] = 1; // length in units of 8 bytes
    p[26..32].copy_from_slice(&mac);
    p
}

/// A Neighbor Advertisement's target and advertised MAC, if it carries one.
pub fn parse_na(packet: &[u8]) -> Option<(Ipv6Addr, Option<Mac>)> {
    if packet.len() < 24 || packet[0] != ICMPV6_NEIGHBOR_ADVERT {
        return None;
    }
    let mut target = [0u8; 16];
    target.copy_from_slice(&packet[8..24]);
    let mut options = &packet[24..];
    let mut mac = None;
    while options.len() >= 8 {
        let len = usize::from(options[1]) * 8;
        if len == 0 || len > options.len() {
            break;
        }
        if options[0] == OPT_TARGET_LINK_ADDR {
            let mut m = [0u8; 6];
            m.copy_from_slice(&options[2..8]);
            mac = Some(m);
        }
        options = &options[len..];
    }
    Some((Ipv6Addr::from(target), mac))
}

pub fn format_mac(mac: &Mac) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: Mac = [0x02, 0, 0, 0, 0, 0x11];

    #[test]
    fn gratuitous_request_has_vip_as_sender_and_target_and_is_broadcast() {
        let vip = Ipv4Addr::new(192, 0, 2, 100);
        let f = gratuitous_arp(ArpOp::Request, MAC, vip);
        assert_eq!(&f[0..6], &BROADCAST, "destination must be broadcast");
        assert_eq!(&f[6..12], &MAC);
        let seen = parse_arp(&f).expect("own frame parses");
        assert_eq!(seen.op, ArpOp::Request);
        assert_eq!(seen.sender_ip, vip);
        assert_eq!(seen.target_ip, vip);
        assert_eq!(seen.sender_mac, MAC);
        assert_eq!(&f[32..38], &[0; 6], "request target MAC is unknown (zero)");
    }

    #[test]
    fn gratuitous_reply_names_our_mac_as_target() {
        let f = gratuitous_arp(ArpOp::Reply, MAC, Ipv4Addr::new(192, 0, 2, 100));
        assert_eq!(parse_arp(&f).map(|s| s.op), Some(ArpOp::Reply));
        assert_eq!(&f[32..38], &MAC);
    }

    #[test]
    fn probe_is_sent_from_unspecified_address() {
        let f = arp_probe(MAC, Ipv4Addr::new(192, 0, 2, 100));
        let seen = parse_arp(&f).expect("probe parses");
        assert_eq!(seen.sender_ip, Ipv4Addr::UNSPECIFIED);
        assert_eq!(seen.target_ip, Ipv4Addr::new(192, 0, 2, 100));
    }

    #[test]
    fn non_arp_frames_are_ignored() {
        let mut f = gratuitous_arp(ArpOp::Reply, MAC, Ipv4Addr::new(192, 0, 2, 1));
        f[12] = 0x86;
        f[13] = 0xdd;
        assert_eq!(parse_arp(&f), None);
        assert_eq!(parse_arp(&f[..20]), None);
    }

    #[test]
    fn unsolicited_na_sets_only_override_and_carries_mac() {
        let vip: Ipv6Addr = "2001:db8::100".parse().expect("literal");
        let p = unsolicited_na(MAC, vip);
        assert_eq!(p[0], 136);
        assert_eq!(p[4], 0x20, "override set, router and solicited clear");
        assert_eq!(parse_na(&p), Some((vip, Some(MAC))));
    }

    #[test]
    fn na_without_option_parses_without_mac() {
        let vip: Ipv6Addr = "2001:db8::100".parse().expect("literal");
        let p = unsolicited_na(MAC, vip);
        assert_eq!(parse_na(&p[..24]), Some((vip, None)));
    }
}
