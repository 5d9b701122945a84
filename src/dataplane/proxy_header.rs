//! PROXY protocol header (HAProxy's spec, v1 text and v2 binary) sent to the backend before
//! any client byte, so the backend sees the real client address through a NAT-less proxy.
//!
//! IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`) are written as TCP4: the client really is
//! an IPv4 client. If the two ends end up in different families, both are written as IPv6
//! (the v4 one mapped), since one header carries one family.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use crate::config::ProxyProtocol;

/// The v2 signature: `\r\n\r\n\0\r\nQUIT\n`.
const V2_SIGNATURE: [u8; 12] = [
    0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A,
];
/// Version 2, command PROXY.
const V2_VERSION_PROXY: u8 = 0x21;
const V2_TCP4: u8 = 0x11;
const V2_TCP6: u8 = 0x21;

/// The header for a connection from `client` to `local` (the VIP:port it arrived on);
/// empty when the service has PROXY protocol off.
pub fn encode(version: ProxyProtocol, client: SocketAddr, local: SocketAddr) -> Vec<u8> {
    let (src, dst) = same_family(client, local);
    match version {
        ProxyProtocol::Off => Vec::new(),
        ProxyProtocol::V1 => encode_v1(src, dst),
        ProxyProtocol::V2 => encode_v2(src, dst),
    }
}

fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

fn as_v6(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(v4) => SocketAddr::new(IpAddr::V6(v4.to_ipv6_mapped()), addr.port()),
        IpAddr::V6(_) => addr,
    }
}

fn same_family(client: SocketAddr, local: SocketAddr) -> (SocketAddr, SocketAddr) {
    let (src, dst) = (canonical(client), canonical(local));
    if src.is_ipv4() == dst.is_ipv4() {
        (src, dst)
    } else {
        (as_v6(src), as_v6(dst))
    }
}

fn encode_v1(src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    let family = if src.is_ipv4() { "TCP4" } else { "TCP6" };
    format!(
        "PROXY {family} {} {} {} {}\r\n",
        src.ip(),
        dst.ip(),
        src.port(),
        dst.port()
    )
    .into_bytes()
}

fn encode_v2(src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + 36);
    out.extend_from_slice(&V2_SIGNATURE);
    out.push(V2_VERSION_PROXY);
    match (src.ip(), dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            out.push(V2_TCP4);
            out.extend_from_slice(&12u16.to_be_bytes());
            out.extend_from_slice(&s.octets());
            out.extend_from_slice(&d.octets());
        }
        (s, d) => {
            out.push(V2_TCP6);
            out.extend_from_slice(&36u16.to_be_bytes());
            out.extend_from_slice(&v6_octets(s));
            out.extend_from_slice(&v6_octets(d));
        }
    }
    out.extend_from_slice(&src.port().to_be_bytes());
    out.extend_from_slice(&dst.port().to_be_bytes());
    out
}

fn v6_octets(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// Parses a v2 TCP header back into (source, destination); the inverse of [`encode`], for
/// tests and for the project's backend stand-in.
pub fn decode_v2(bytes: &[u8]) -> Option<(SocketAddr, SocketAddr, usize)> {
    if bytes.len() < 16 || bytes[..12] != V2_SIGNATURE || bytes[12] != V2_VERSION_PROXY {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([bytes[14], bytes[15]]));
    let body = bytes.get(16..16 + len)?;
    let port = |at: usize| u16::from_be_bytes([body[at], body[at + 1]]);
    match bytes[13] {
        V2_TCP4 if len >= 12 => {
            let ip = |at: usize| IpAddr::from([body[at], body[at + 1], body[at + 2], body[at + 3]]);
            Some((
                SocketAddr::new(ip(0), port(8)),
                SocketAddr::new(ip(4), port(10)),
                16 + len,
            ))
        }
        V2_TCP6 if len >= 36 => {
            let ip = |at: usize| {
                let mut octets = [0u8; 16];
                octets.copy_from_slice(&body[at..at + 16]);
                IpAddr::V6(Ipv6Addr::from(octets))
            };
            Some((
                SocketAddr::new(ip(0), port(32)),
                SocketAddr::new(ip(16), port(34)),
                16 + len,
            ))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(text: &str) -> SocketAddr {
        text.parse().expect("test address literal")
    }

    #[test]
    fn v1_tcp4_is_the_spec_text() {
        let header = encode(
            ProxyProtocol::V1,
            addr("192.0.2.7:40000"),
            addr("198.51.100.1:80"),
        );
        assert_eq!(header, b"PROXY TCP4 192.0.2.7 198.51.100.1 40000 80\r\n");
    }

    #[test]
    fn v1_tcp6_is_the_spec_text() {
        let header = encode(
            ProxyProtocol::V1,
            addr("[2001:db8::7]:40000"),
            addr("[2001:db8::1]:443"),
        );
        assert_eq!(header, b"PROXY TCP6 2001:db8::7 2001:db8::1 40000 443\r\n");
    }

    #[test]
    fn v4_mapped_client_is_written_as_tcp4() {
        let header = encode(
            ProxyProtocol::V1,
            addr("[::ffff:192.0.2.7]:40000"),
            addr("[::ffff:198.51.100.1]:80"),
        );
        assert_eq!(header, b"PROXY TCP4 192.0.2.7 198.51.100.1 40000 80\r\n");
        let v2 = encode(
            ProxyProtocol::V2,
            addr("[::ffff:192.0.2.7]:40000"),
            addr("[::ffff:198.51.100.1]:80"),
        );
        assert_eq!(v2[13], V2_TCP4, "v2 family byte");
    }

    #[test]
    fn v2_round_trips_both_families() {
        for (src, dst) in [
            ("192.0.2.7:40000", "198.51.100.1:80"),
            ("[2001:db8::7]:1", "[2001:db8::1]:65535"),
        ] {
            let header = encode(ProxyProtocol::V2, addr(src), addr(dst));
            let (s, d, used) = decode_v2(&header).expect("our own v2 header parses");
            assert_eq!((s, d, used), (addr(src), addr(dst), header.len()));
        }
    }

    #[test]
    fn v2_tcp4_layout_matches_the_spec() {
        let header = encode(
            ProxyProtocol::V2,
            addr("192.0.2.7:258"),
            addr("198.51.100.1:80"),
        );
        let mut expected = V2_SIGNATURE.to_vec();
        expected.extend_from_slice(&[
            0x21, 0x11, 0, 12, 192, 0, 2, 7, 198, 51, 100, 1, 1, 2, 0, 80,
        ]);
        assert_eq!(header, expected);
    }

    #[test]
    fn off_writes_nothing() {
        assert!(encode(ProxyProtocol::Off, addr("192.0.2.7:1"), addr("192.0.2.8:2")).is_empty());
    }
}
