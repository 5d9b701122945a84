//! Arbitrary bytes as a received VRRP packet: the IPv4 header parser, the VRRPv3 decoder and
//! the receive checks must never panic, and what decodes must encode back to the same
//! header and addresses.
#![no_main]

use std::net::IpAddr;

use alive_proxy::ha::vrrp::packet::{self, Expect, Received};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let src: IpAddr = "192.0.2.11".parse().expect("literal");
    let dst: IpAddr = "192.0.2.12".parse().expect("literal");
    let peers = [src];
    let expect = Expect {
        vrid: 51,
        vip: "192.0.2.100".parse().expect("literal"),
        peers: Some(&peers),
    };
    if let Ok((header, msg)) = packet::parse_ipv4(data) {
        let rx = Received {
            src: IpAddr::V4(header.src),
            dst: IpAddr::V4(header.dst),
            ttl: header.ttl,
            msg,
        };
        let _ = packet::validate(&rx, &expect);
    }
    for v6 in [false, true] {
        if let Ok(advert) = packet::decode(data, v6) {
            let encoded = packet::encode(&advert, src, dst);
            assert_eq!(encoded[1..4], data[1..4]);
            assert_eq!(encoded[8..], data[8..]);
        }
    }
});
