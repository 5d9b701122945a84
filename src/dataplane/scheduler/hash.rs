//! Deterministic hash functions the hashing schedulers (sh, dh, mh) share.
//!
//! Every LB host must map a client to the same backend, before and after a restart or a VIP
//! failover, so nothing here is randomly seeded. The folding and `hash_32` follow IPVS; the
//! keyed hash replaces IPVS's `hsiphash` with fixed keys by a fixed-key 64-bit mixer (we do
//! not need bit-compatibility with the kernel, only determinism and good dispersion).

use std::net::{IpAddr, SocketAddr};

/// IPVS `hash_32` multiplier (`GOLDEN_RATIO_32`).
const GOLDEN_RATIO_32: u32 = 0x61C8_8647;

/// Keys of the Maglev hashes, the same constants IPVS uses for its two hsiphash keys.
pub(crate) const MH_KEY_1: u64 = 2_654_435_761;
pub(crate) const MH_KEY_2: u64 = 2_654_446_892;

/// IPVS's address fold: the IPv4 address as a host-order u32, an IPv6 address as the XOR
/// of its four 32-bit words. IPv4-mapped IPv6 clients fold as their IPv4 address.
pub(crate) fn fold(addr: IpAddr) -> u32 {
    match addr.to_canonical() {
        IpAddr::V4(v4) => u32::from(v4),
        IpAddr::V6(v6) => {
            let o = v6.octets();
            (0..4).fold(0, |acc, w| {
                acc ^ u32::from_be_bytes([o[w * 4], o[w * 4 + 1], o[w * 4 + 2], o[w * 4 + 3]])
            })
        }
    }
}

/// IPVS `hash_32(val, bits)`: the top `bits` bits of a multiplicative hash.
pub(crate) fn hash_32(val: u32, bits: u32) -> u32 {
    val.wrapping_mul(GOLDEN_RATIO_32) >> (32 - bits)
}

/// A keyed 32-bit hash of a 32-bit value (splitmix64's finalizer over key and value).
pub(crate) fn keyed(key: u64, val: u32) -> u32 {
    let mut z = key.rotate_left(17) ^ u64::from(val).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    (z ^ (z >> 31)) as u32
}

/// The value IPVS hashes for a backend's Maglev permutation: port + folded address.
pub(crate) fn backend_key(addr: SocketAddr) -> u32 {
    fold(addr.ip()).wrapping_add(u32::from(addr.port()))
}

/// splitmix64 step: the deterministic random source of `twos`.
pub(crate) fn splitmix64(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_mapped_clients_fold_like_their_ipv4_address() {
        let v4: IpAddr = "192.0.2.7".parse().unwrap();
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(fold(v4), fold(mapped));
    }

    #[test]
    fn hash_32_stays_within_the_requested_bits() {
        for v in [0u32, 1, 0xdead_beef, u32::MAX] {
            assert!(hash_32(v, 8) < 256, "hash_32({v}, 8) out of range");
        }
    }
}
