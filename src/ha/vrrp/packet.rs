//! VRRPv3 advertisements (RFC 5798 §5): the 8-byte header, the address list, and the
//! checksum over an IPv4 or IPv6 pseudo-header; plus the IPv4 header this module writes and
//! reads on its raw socket. Pure functions over byte slices, total on any input (no panics:
//! the decoder is fed whatever the link carries; `fuzz/fuzz_targets/vrrp_decode.rs`).
//!
//! Written by hand: no maintained crate encodes VRRPv3 (pnet's vrrp packet is v2 only, with
//! no pseudo-header checksum), and the layout is fixed and small.
//!
//! ```text
//!  0                   1                   2                   3
//! |Version| Type  | Virtual Rtr ID|   Priority    |Count IPvX Addr|
//! |(rsvd) |     Max Adver Int     |          Checksum             |
//! |                      IPvX Address(es) ...                     |
//! ```

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

/// IP protocol number of VRRP.
pub const PROTOCOL: u8 = 112;
pub const VERSION: u8 = 3;
/// The only VRRPv3 packet type.
pub const TYPE_ADVERTISEMENT: u8 = 1;
pub const HEADER_LEN: usize = 8;
/// RFC 5798 §5.1.1.3 / §5.1.2.3: adverts are sent with TTL / hop limit 255 and a receiver
/// drops anything else, so an advert can only come from the link itself.
pub const TTL: u8 = 255;
pub const MULTICAST_V4: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 18);
pub const MULTICAST_V6: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0x12);
/// keepalived's TOS for adverts (internetwork control).
const TOS_NETWORK_CONTROL: u8 = 0xc0;
const IPV4_HEADER_LEN: usize = 20;

/// One advertisement's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advert {
    pub vrid: u8,
    /// 0: the master is leaving (RFC 5798 §6.4.3).
    pub priority: u8,
    /// Max Adver Int, in centiseconds (12 bits).
    pub interval_cs: u16,
    pub addresses: Vec<IpAddr>,
}

impl Advert {
    pub fn interval(&self) -> Duration {
        Duration::from_millis(u64::from(self.interval_cs) * 10)
    }
}

/// Whole centiseconds of `d`, clamped to the 12 bits VRRPv3 has.
pub fn centiseconds(d: Duration) -> u16 {
    (d.as_millis() / 10).clamp(1, 0x0fff) as u16
}

/// Why a received packet was not a usable advertisement for us. The names are the
/// `reason` label of `alive_proxy_vrrp_adverts_dropped_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DropReason {
    /// TTL / hop limit not 255: it crossed a router.
    Ttl,
    /// Not VRRP version 3 (a VRRPv2 speaker on the link).
    Version,
    /// Not an advertisement.
    Type,
    /// Shorter than its header or address count says, or an IP header that does not parse.
    Length,
    Checksum,
    /// Another virtual router on the same link (normal when several share it).
    Vrid,
    /// The address list does not match this instance's VIP (a misconfigured peer).
    Addresses,
    /// Unicast mode: the source is not among the peers.
    Source,
    /// A Max Adver Int of 0.
    Interval,
}

impl DropReason {
    pub const ALL: [DropReason; 9] = [
        DropReason::Ttl,
        DropReason::Version,
        DropReason::Type,
        DropReason::Length,
        DropReason::Checksum,
        DropReason::Vrid,
        DropReason::Addresses,
        DropReason::Source,
        DropReason::Interval,
    ];

    pub fn name(self) -> &'static str {
        match self {
            DropReason::Ttl => "ttl",
            DropReason::Version => "version",
            DropReason::Type => "type",
            DropReason::Length => "length",
            DropReason::Checksum => "checksum",
            DropReason::Vrid => "vrid",
            DropReason::Addresses => "addresses",
            DropReason::Source => "source",
            DropReason::Interval => "interval",
        }
    }
}

/// The VRRP message (header, addresses, checksum) from `src` to `dst`.
pub fn encode(advert: &Advert, src: IpAddr, dst: IpAddr) -> Vec<u8> {
    let mut msg = Vec::with_capacity(HEADER_LEN + advert.addresses.len() * 16);
    msg.push((VERSION << 4) | TYPE_ADVERTISEMENT);
    msg.push(advert.vrid);
    msg.push(advert.priority);
    msg.push(advert.addresses.len().min(255) as u8);
    msg.extend_from_slice(&(advert.interval_cs & 0x0fff).to_be_bytes());
    msg.extend_from_slice(&[0, 0]);
    for addr in advert.addresses.iter().take(255) {
        match addr {
            IpAddr::V4(a) => msg.extend_from_slice(&a.octets()),
            IpAddr::V6(a) => msg.extend_from_slice(&a.octets()),
        }
    }
    let sum = checksum(&msg, src, dst);
    msg[6..8].copy_from_slice(&sum.to_be_bytes());
    msg
}

/// Header and addresses of a VRRP message, without the checksum check (that needs the
/// addresses it travelled between: [`checksum_ok`]). `v6`: the address family the message
/// came in on, which fixes the size of its addresses.
pub fn decode(msg: &[u8], v6: bool) -> Result<Advert, DropReason> {
    let header: &[u8; HEADER_LEN] = msg
        .get(..HEADER_LEN)
        .and_then(|h| h.try_into().ok())
        .ok_or(DropReason::Length)?;
    if header[0] >> 4 != VERSION {
        return Err(DropReason::Version);
    }
    if header[0] & 0x0f != TYPE_ADVERTISEMENT {
        return Err(DropReason::Type);
    }
    let count = usize::from(header[3]);
    let size = if v6 { 16 } else { 4 };
    let body = &msg[HEADER_LEN..];
    // RFC 5798 §7.1: drop a packet whose length does not match its address count.
    if body.len() != count * size {
        return Err(DropReason::Length);
    }
    let interval_cs = u16::from_be_bytes([header[4], header[5]]) & 0x0fff;
    let addresses = body
        .chunks_exact(size)
        .filter_map(|chunk| {
            if v6 {
                <[u8; 16]>::try_from(chunk)
                    .ok()
                    .map(|o| IpAddr::V6(Ipv6Addr::from(o)))
            } else {
                <[u8; 4]>::try_from(chunk)
                    .ok()
                    .map(|o| IpAddr::V4(Ipv4Addr::from(o)))
            }
        })
        .collect();
    Ok(Advert {
        vrid: header[1],
        priority: header[2],
        interval_cs,
        addresses,
    })
}

/// Whether `msg` (checksum field included) sums to zero with its pseudo-header.
pub fn checksum_ok(msg: &[u8], src: IpAddr, dst: IpAddr) -> bool {
    msg.len() >= HEADER_LEN && checksum(msg, src, dst) == 0
}

/// RFC 5798 §5.2.8: the Internet checksum of the VRRP message and a pseudo-header (RFC 8200
/// §8.1 for IPv6, source/destination/zero/protocol/length for IPv4). With the checksum field
/// zero this is the value to write; over a whole message it is 0 when the message is intact.
pub fn checksum(msg: &[u8], src: IpAddr, dst: IpAddr) -> u16 {
    let mut sum: u32 = 0;
    let len = msg.len() as u32;
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            sum = add_bytes(sum, &s.octets());
            sum = add_bytes(sum, &d.octets());
            sum += u32::from(PROTOCOL);
            sum += len & 0xffff;
        }
        (s, d) => {
            sum = add_bytes(sum, &v6_octets(s));
            sum = add_bytes(sum, &v6_octets(d));
            sum += len >> 16;
            sum += len & 0xffff;
            sum += u32::from(PROTOCOL);
        }
    }
    sum = add_bytes(sum, msg);
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn v6_octets(addr: IpAddr) -> [u8; 16] {
    match addr {
        IpAddr::V6(a) => a.octets(),
        IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
    }
}

/// One's complement sum of big-endian 16-bit words, deferring the carry folds.
fn add_bytes(mut sum: u32, bytes: &[u8]) -> u32 {
    let mut words = bytes.chunks_exact(2);
    for w in &mut words {
        sum += u32::from(u16::from_be_bytes([w[0], w[1]]));
        if sum > 0xffff_0000 {
            sum = (sum & 0xffff) + (sum >> 16);
        }
    }
    if let [last] = words.remainder() {
        sum += u32::from(*last) << 8;
    }
    sum
}

/// What a raw IPv4 socket delivers in front of the VRRP message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Header {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub ttl: u8,
    pub protocol: u8,
}

/// Splits a received IPv4 packet into its header fields and payload.
pub fn parse_ipv4(packet: &[u8]) -> Result<(Ipv4Header, &[u8]), DropReason> {
    let fixed = packet.get(..IPV4_HEADER_LEN).ok_or(DropReason::Length)?;
    if fixed[0] >> 4 != 4 {
        return Err(DropReason::Length);
    }
    let ihl = usize::from(fixed[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([fixed[2], fixed[3]]));
    if ihl < IPV4_HEADER_LEN || total < ihl || packet.len() < total {
        return Err(DropReason::Length);
    }
    let header = Ipv4Header {
        ttl: fixed[8],
        protocol: fixed[9],
        src: Ipv4Addr::new(fixed[12], fixed[13], fixed[14], fixed[15]),
        dst: Ipv4Addr::new(fixed[16], fixed[17], fixed[18], fixed[19]),
    };
    Ok((header, &packet[ihl..total]))
}

/// An IPv4 header for `payload` (IP_HDRINCL): TTL 255, TOS network control, protocol 112.
/// The kernel fills in the header checksum and the id.
pub fn ipv4_packet(src: Ipv4Addr, dst: Ipv4Addr, payload: &[u8]) -> Vec<u8> {
    let total = (IPV4_HEADER_LEN + payload.len()) as u16;
    let mut packet = Vec::with_capacity(usize::from(total));
    packet.extend_from_slice(&[0x45, TOS_NETWORK_CONTROL]);
    packet.extend_from_slice(&total.to_be_bytes());
    packet.extend_from_slice(&[0, 0, 0, 0, TTL, PROTOCOL, 0, 0]);
    packet.extend_from_slice(&src.octets());
    packet.extend_from_slice(&dst.octets());
    packet.extend_from_slice(payload);
    packet
}

/// What [`validate`] needs to know about this instance.
#[derive(Debug, Clone)]
pub struct Expect<'a> {
    pub vrid: u8,
    pub vip: IpAddr,
    /// Unicast mode: the peers adverts may come from. `None`: multicast, any source.
    pub peers: Option<&'a [IpAddr]>,
}

/// A packet as a raw socket received it: where from and to, with which TTL / hop limit.
#[derive(Debug, Clone, Copy)]
pub struct Received<'a> {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub ttl: u8,
    pub msg: &'a [u8],
}

/// RFC 5798 §7.1 receive checks, in its order: TTL, version, type (by [`decode`]), length,
/// checksum, VRID; then the VIP must be the one listed (the RFC's MAY, which keepalived
/// also enforces) and, in unicast mode, the source a peer.
///
/// IPv6 sources are link-local (RFC 5798 §5.1.2.2) and the peers in `alive.yaml` are the
/// hosts' global addresses, which a packet does not map to: a link-local source passes the
/// source check. Global sources, and every IPv4 source, must be listed.
///
/// The TTL check proves an advert was not routed. keepalived sends IPv6 *unicast* adverts
/// with the default hop limit (64) unless `unicast_ttl 255` is configured; its source is
/// link-local, which no router forwards (RFC 4291 §2.5.6), so that proves the same thing.
/// Hence in unicast mode a link-local IPv6 source may come with any hop limit; everything
/// else needs 255.
pub fn validate(rx: &Received<'_>, expect: &Expect<'_>) -> Result<Advert, DropReason> {
    let link_local = matches!(rx.src, IpAddr::V6(a) if a.is_unicast_link_local());
    if rx.ttl != TTL && !(link_local && expect.peers.is_some()) {
        return Err(DropReason::Ttl);
    }
    let advert = decode(rx.msg, rx.src.is_ipv6())?;
    if !checksum_ok(rx.msg, rx.src, rx.dst) {
        return Err(DropReason::Checksum);
    }
    if advert.vrid != expect.vrid {
        return Err(DropReason::Vrid);
    }
    if advert.interval_cs == 0 {
        return Err(DropReason::Interval);
    }
    if advert.addresses != [expect.vip] {
        return Err(DropReason::Addresses);
    }
    if let Some(peers) = expect.peers
        && !link_local
        && !peers.contains(&rx.src)
    {
        return Err(DropReason::Source);
    }
    Ok(advert)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test address")
    }

    fn advert(vip: &str) -> Advert {
        Advert {
            vrid: 20,
            priority: 100,
            interval_cs: 10,
            addresses: vec![ip(vip)],
        }
    }

    /// Captured from keepalived 2.2.7 (`tcpdump -x`, whole IP packet), VRRPv3 unicast
    /// 192.0.2.11 → 192.0.2.12, vrid 51, priority 100, advert_int 0.1 s, VIP 192.0.2.100.
    const KEEPALIVED_V4: [u8; 32] = [
        0x45, 0xc0, 0x00, 0x20, 0x00, 0x0d, 0x00, 0x00, 0xff, 0x70, 0x36, 0x89, 192, 0, 2, 11, 192,
        0, 2, 12, 0x31, 0x33, 0x64, 0x01, 0x00, 0x0a, 0x23, 0xc8, 192, 0, 2, 100,
    ];

    #[test]
    fn encoded_ipv4_advert_has_the_rfc_layout_and_a_valid_checksum() {
        let (src, dst) = (ip("192.0.2.11"), ip("224.0.0.18"));
        let msg = encode(&advert("192.0.2.100"), src, dst);
        assert_eq!(msg.len(), 12);
        assert_eq!(&msg[..6], &[0x31, 20, 100, 1, 0, 10]);
        assert_eq!(&msg[8..], &[192, 0, 2, 100]);
        assert!(checksum_ok(&msg, src, dst));
        assert_eq!(decode(&msg, false), Ok(advert("192.0.2.100")));
    }

    #[test]
    fn checksum_covers_the_pseudo_header_so_another_destination_fails_it() {
        let src = ip("192.0.2.11");
        let msg = encode(&advert("192.0.2.100"), src, ip("192.0.2.12"));
        assert!(checksum_ok(&msg, src, ip("192.0.2.12")));
        assert!(!checksum_ok(&msg, src, ip("224.0.0.18")));
        assert!(!checksum_ok(&msg, ip("192.0.2.13"), ip("192.0.2.12")));
    }

    #[test]
    fn ipv6_checksum_matches_a_hand_computed_sum() {
        let (src, dst) = (ip("fe80::1"), ip("ff02::12"));
        let msg = encode(&advert("2001:db8::100"), src, dst);
        assert_eq!(msg.len(), 8 + 16);
        assert!(checksum_ok(&msg, src, dst));
        // The same sum by the textbook definition: 16-bit words of pseudo-header + message.
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&v6_octets(src));
        bytes.extend_from_slice(&v6_octets(dst));
        bytes.extend_from_slice(&(msg.len() as u32).to_be_bytes());
        bytes.extend_from_slice(&[0, 0, 0, PROTOCOL]);
        let mut zeroed = msg.clone();
        zeroed[6..8].copy_from_slice(&[0, 0]);
        bytes.extend_from_slice(&zeroed);
        let mut sum: u32 = bytes
            .chunks(2)
            .map(|w| u32::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)])))
            .sum();
        while sum >> 16 != 0 {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        assert_eq!(u16::from_be_bytes([msg[6], msg[7]]), !(sum as u16));
    }

    #[test]
    fn a_keepalived_advert_decodes_and_its_checksum_verifies() {
        let (header, msg) = parse_ipv4(&KEEPALIVED_V4).expect("IPv4 header");
        assert_eq!((header.ttl, header.protocol), (255, PROTOCOL));
        let (src, dst) = (IpAddr::V4(header.src), IpAddr::V4(header.dst));
        assert!(
            checksum_ok(msg, src, dst),
            "our pseudo-header sum is keepalived's"
        );
        let decoded = decode(msg, false).expect("decodes");
        assert_eq!(
            (decoded.vrid, decoded.priority, decoded.interval()),
            (51, 100, Duration::from_millis(100))
        );
        assert_eq!(decoded.addresses, vec![ip("192.0.2.100")]);
        assert_eq!(
            encode(&decoded, src, dst),
            msg,
            "and we encode it byte for byte"
        );
    }

    #[test]
    fn odd_length_messages_sum_their_last_byte_as_a_high_byte() {
        // RFC 1071: a trailing odd byte is padded with a zero on the right.
        let a = checksum(&[0x12], ip("192.0.2.1"), ip("192.0.2.2"));
        let b = checksum(&[0x12, 0x00], ip("192.0.2.1"), ip("192.0.2.2"));
        // Same words summed; only the length in the pseudo-header differs by one.
        assert_eq!(a.wrapping_sub(b), 1);
    }

    #[test]
    fn decode_rejects_what_the_rfc_says_to_drop() {
        let good = encode(&advert("192.0.2.100"), ip("192.0.2.1"), ip("224.0.0.18"));
        let mut v2 = good.clone();
        v2[0] = 0x21;
        assert_eq!(decode(&v2, false), Err(DropReason::Version));
        let mut other_type = good.clone();
        other_type[0] = 0x32;
        assert_eq!(decode(&other_type, false), Err(DropReason::Type));
        assert_eq!(decode(&good[..11], false), Err(DropReason::Length));
        assert_eq!(decode(&good[..7], false), Err(DropReason::Length));
        let mut two = good.clone();
        two[3] = 2;
        assert_eq!(decode(&two, false), Err(DropReason::Length));
        assert_eq!(
            decode(&good, true),
            Err(DropReason::Length),
            "v4 body as v6"
        );
    }

    #[test]
    fn reserved_bits_of_the_interval_are_ignored() {
        let mut msg = encode(&advert("192.0.2.100"), ip("192.0.2.1"), ip("192.0.2.2"));
        msg[4] |= 0xf0;
        assert_eq!(decode(&msg, false).map(|a| a.interval_cs), Ok(10));
    }

    #[test]
    fn ipv4_packets_round_trip_through_the_header_parser() {
        let payload = encode(&advert("192.0.2.100"), ip("192.0.2.1"), ip("192.0.2.2"));
        let packet = ipv4_packet(
            Ipv4Addr::new(192, 0, 2, 1),
            Ipv4Addr::new(192, 0, 2, 2),
            &payload,
        );
        let (header, body) = parse_ipv4(&packet).expect("parses");
        assert_eq!(header.ttl, 255);
        assert_eq!(header.protocol, PROTOCOL);
        assert_eq!(header.src, Ipv4Addr::new(192, 0, 2, 1));
        assert_eq!(body, payload.as_slice());
        assert_eq!(packet[1], 0xc0, "TOS network control, as keepalived");
        assert_eq!(parse_ipv4(&packet[..19]), Err(DropReason::Length));
        let mut lying = packet.clone();
        lying[3] = 200;
        assert_eq!(parse_ipv4(&lying), Err(DropReason::Length));
    }

    fn check(
        src: &str,
        dst: &str,
        ttl: u8,
        msg: &[u8],
        peers: Option<&[IpAddr]>,
    ) -> Result<Advert, DropReason> {
        let rx = Received {
            src: ip(src),
            dst: ip(dst),
            ttl,
            msg,
        };
        let vip = if src.contains(':') {
            "2001:db8::100"
        } else {
            "192.0.2.100"
        };
        validate(
            &rx,
            &Expect {
                vrid: 20,
                vip: ip(vip),
                peers,
            },
        )
    }

    #[test]
    fn validation_names_each_reason() {
        let peers = [ip("192.0.2.12")];
        let good = encode(&advert("192.0.2.100"), ip("192.0.2.12"), ip("192.0.2.11"));
        let ok = check("192.0.2.12", "192.0.2.11", 255, &good, Some(&peers));
        assert_eq!(ok.map(|a| a.priority), Ok(100));
        assert_eq!(
            check("192.0.2.12", "192.0.2.11", 254, &good, Some(&peers)),
            Err(DropReason::Ttl)
        );
        let mut bad_sum = good.clone();
        bad_sum[6] ^= 0xff;
        assert_eq!(
            check("192.0.2.12", "192.0.2.11", 255, &bad_sum, Some(&peers)),
            Err(DropReason::Checksum)
        );
        let stranger = encode(&advert("192.0.2.100"), ip("192.0.2.66"), ip("192.0.2.11"));
        assert_eq!(
            check("192.0.2.66", "192.0.2.11", 255, &stranger, Some(&peers)),
            Err(DropReason::Source)
        );
        assert!(
            check(
                "192.0.2.66",
                "224.0.0.18",
                255,
                &encode(&advert("192.0.2.100"), ip("192.0.2.66"), ip("224.0.0.18")),
                None
            )
            .is_ok(),
            "multicast mode takes any source on the link"
        );
        let mut other = advert("192.0.2.100");
        other.vrid = 21;
        let other = encode(&other, ip("192.0.2.12"), ip("192.0.2.11"));
        assert_eq!(
            check("192.0.2.12", "192.0.2.11", 255, &other, Some(&peers)),
            Err(DropReason::Vrid)
        );
        let wrong_vip = encode(&advert("192.0.2.101"), ip("192.0.2.12"), ip("192.0.2.11"));
        assert_eq!(
            check("192.0.2.12", "192.0.2.11", 255, &wrong_vip, Some(&peers)),
            Err(DropReason::Addresses)
        );
        let mut zero = advert("192.0.2.100");
        zero.interval_cs = 0;
        let zero = encode(&zero, ip("192.0.2.12"), ip("192.0.2.11"));
        assert_eq!(
            check("192.0.2.12", "192.0.2.11", 255, &zero, Some(&peers)),
            Err(DropReason::Interval)
        );
    }

    #[test]
    fn ipv6_link_local_sources_pass_the_unicast_source_check_globals_must_be_peers() {
        let peers = [ip("2001:db8::12")];
        let from_ll = encode(&advert("2001:db8::100"), ip("fe80::12"), ip("2001:db8::11"));
        assert!(check("fe80::12", "2001:db8::11", 255, &from_ll, Some(&peers)).is_ok());
        let from_global = encode(
            &advert("2001:db8::100"),
            ip("2001:db8::66"),
            ip("2001:db8::11"),
        );
        assert_eq!(
            check(
                "2001:db8::66",
                "2001:db8::11",
                255,
                &from_global,
                Some(&peers)
            ),
            Err(DropReason::Source)
        );
        assert_eq!(
            check(
                "2001:db8::66",
                "2001:db8::11",
                64,
                &from_global,
                Some(&peers)
            ),
            Err(DropReason::Ttl)
        );
    }

    #[test]
    fn keepalived_ipv6_unicast_hop_limit_64_passes_from_a_link_local_source_only() {
        let peers = [ip("2001:db8::12")];
        let from_ll = encode(&advert("2001:db8::100"), ip("fe80::12"), ip("2001:db8::11"));
        assert!(check("fe80::12", "2001:db8::11", 64, &from_ll, Some(&peers)).is_ok());
        let to_group = encode(&advert("2001:db8::100"), ip("fe80::12"), ip("ff02::12"));
        assert_eq!(
            check("fe80::12", "ff02::12", 64, &to_group, None),
            Err(DropReason::Ttl),
            "multicast mode keeps RFC 5798's hop limit 255"
        );
    }

    #[test]
    fn every_drop_reason_has_a_distinct_label() {
        let mut names: Vec<&str> = DropReason::ALL.iter().map(|r| r.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), DropReason::ALL.len());
    }

    #[test]
    fn interval_centiseconds_are_clamped_to_twelve_bits() {
        assert_eq!(centiseconds(Duration::from_millis(100)), 10);
        assert_eq!(centiseconds(Duration::from_secs(100)), 4095);
        assert_eq!(centiseconds(Duration::from_millis(1)), 1);
    }
}
