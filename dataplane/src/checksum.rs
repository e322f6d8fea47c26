//! Internet checksums: RFC 1624 incremental updates for the per-packet path,
//! and a full RFC 1071 computation used to verify them.
//!
//! Neither core recomputes a checksum over a whole packet: when a packet
//! view ([`crate::packet`]) replaces a 16-bit word (a port, an ICMP
//! identifier, a checksum inside a quoted packet) or an address, it
//! adjusts every checksum that covers the replaced bytes with RFC 1624 equation 3, `HC' = ~(~HC + ~m + m')`.
//!
//! A [`Delta`] accumulates `~m + m'` over any number of replaced words so
//! that one replacement can be applied to several checksums (an IPv4
//! address is covered by the IP header checksum and by the TCP/UDP
//! pseudo-header).
//!
//! Only sums of bytes here: where each checksum lies in a packet is the
//! packet view's business.
//!
//! # The one case where incremental and full differ
//!
//! Ones' complement arithmetic has two zeros. A full computation over data
//! whose sum is zero *because every covered byte is zero* yields `0xffff`;
//! the incremental update yields `0x0000` for the same data. Every checksum
//! that covers an IP pseudo-header or an IPv4 header covers a non-zero
//! protocol or version field, so this only concerns ICMPv4, and only an
//! echo reply (type 0, code 0) whose identifier, sequence and payload are
//! all zero. Both values are accepted by receivers that verify by summing.

use std::net::IpAddr;

/// Adds `data` as big-endian 16-bit words to a running 32-bit sum (an odd
/// trailing byte is padded with zero, as RFC 1071 says).
///
/// The running sum is folded before it could overflow, so any length is
/// safe.
pub fn sum_bytes(mut sum: u32, data: &[u8]) -> u32 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        sum = sum.wrapping_add(u32::from(u16::from_be_bytes([c[0], c[1]])));
        if sum > 0xffff_0000 {
            sum = fold_once(sum);
        }
    }
    if let [last] = chunks.remainder() {
        sum = sum.wrapping_add(u32::from(*last) << 8);
    }
    sum
}

fn fold_once(sum: u32) -> u32 {
    (sum & 0xffff) + (sum >> 16)
}

/// Folds a 32-bit sum to 16 bits with end-around carry.
pub fn fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = fold_once(sum);
    }
    // The loop leaves sum <= 0xffff.
    sum as u16
}

/// The RFC 1071 checksum of `data` on top of `initial` (a pseudo-header
/// sum, or 0): the ones' complement of the ones' complement sum.
pub fn checksum(initial: u32, data: &[u8]) -> u16 {
    !fold(sum_bytes(initial, data))
}

/// The sum of the TCP/UDP/ICMPv6 pseudo-header (RFC 793, RFC 768,
/// RFC 8200 section 8.1). `src` and `dst` must be of the same family;
/// mixed families are summed as given (the result is meaningless, but
/// nothing panics).
pub fn pseudo_header_sum(src: IpAddr, dst: IpAddr, proto: u8, len: u32) -> u32 {
    let mut sum = 0;
    sum = match src {
        IpAddr::V4(a) => sum_bytes(sum, &a.octets()),
        IpAddr::V6(a) => sum_bytes(sum, &a.octets()),
    };
    sum = match dst {
        IpAddr::V4(a) => sum_bytes(sum, &a.octets()),
        IpAddr::V6(a) => sum_bytes(sum, &a.octets()),
    };
    match src {
        IpAddr::V4(_) => {
            // IPv4: zero, protocol, 16-bit length.
            sum += u32::from(proto);
            sum += len & 0xffff;
        }
        IpAddr::V6(_) => {
            // IPv6: 32-bit length, three zero bytes, next header.
            sum += len >> 16;
            sum += len & 0xffff;
            sum += u32::from(proto);
        }
    }
    sum
}

/// The accumulated effect of replacing some 16-bit words: the ones'
/// complement sum of `~m + m'` over each replaced word `m` → `m'`.
///
/// Invariant: the inner value is kept folded to at most `0xffff`, so
/// adding two deltas or a delta and a checksum never overflows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Delta(u32);

impl Delta {
    /// No change.
    pub const NONE: Delta = Delta(0);

    /// Records the replacement of one 16-bit word.
    pub fn word(self, old: u16, new: u16) -> Delta {
        Delta(u32::from(fold(self.0 + u32::from(!old) + u32::from(new))))
    }

    /// Records the replacement of `old` by `new`, both of the same even
    /// length (2, 4 or 16 bytes in practice). Bytes past the shorter of the
    /// two are ignored; callers always pass equal lengths.
    pub fn bytes(self, old: &[u8], new: &[u8]) -> Delta {
        let mut d = self;
        for (o, n) in old.chunks_exact(2).zip(new.chunks_exact(2)) {
            d = d.word(
                u16::from_be_bytes([o[0], o[1]]),
                u16::from_be_bytes([n[0], n[1]]),
            );
        }
        d
    }

    /// Combines two deltas.
    pub fn combine(self, other: Delta) -> Delta {
        Delta(u32::from(fold(self.0 + other.0)))
    }

    /// Applies the delta to checksum `hc` (RFC 1624 equation 3).
    pub fn apply(self, hc: u16) -> u16 {
        !fold(u32::from(!hc) + self.0)
    }
}

/// RFC 1624: the checksum after replacing the 16-bit word `old` by `new`.
pub fn update_u16(hc: u16, old: u16, new: u16) -> u16 {
    Delta::NONE.word(old, new).apply(hc)
}

/// RFC 1624: the checksum after replacing a 32-bit field (an IPv4 address).
pub fn update_u32(hc: u16, old: [u8; 4], new: [u8; 4]) -> u16 {
    Delta::NONE.bytes(&old, &new).apply(hc)
}

/// RFC 1624: the checksum after replacing a 128-bit field (an IPv6 address).
pub fn update_u128(hc: u16, old: [u8; 16], new: [u8; 16]) -> u16 {
    Delta::NONE.bytes(&old, &new).apply(hc)
}

/// The UDP rule (RFC 768, RFC 8200): a computed checksum of zero is sent as
/// `0xffff`, because zero on the wire means "no checksum" (IPv4 only).
pub fn udp_wire(c: u16) -> u16 {
    if c == 0 {
        0xffff
    } else {
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    /// RFC 1071 section 3 example: 00 01 f2 03 f4 f5 f6 f7 sums to ddf2.
    #[test]
    fn rfc1071_example() {
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(sum_bytes(0, &data)), 0xddf2);
        assert_eq!(checksum(0, &data), !0xddf2);
        // Odd length pads with zero.
        assert_eq!(fold(sum_bytes(0, &[0x01])), 0x0100);
    }

    /// RFC 1624 section 4 example: HC = 0xdd2f, m = 0x5555, m' = 0x3285
    /// gives HC' = 0x0000.
    #[test]
    fn rfc1624_example() {
        assert_eq!(update_u16(0xdd2f, 0x5555, 0x3285), 0x0000);
    }

    fn ipv4_header(src: [u8; 4], dst: [u8; 4]) -> Vec<u8> {
        let mut h = vec![
            0x45, 0, 0, 40, 0x12, 0x34, 0x40, 0, 64, 6, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        ];
        h[12..16].copy_from_slice(&src);
        h[16..20].copy_from_slice(&dst);
        let c = checksum(0, &h);
        h[10..12].copy_from_slice(&c.to_be_bytes());
        h
    }

    #[test]
    fn ipv4_header_incremental_equals_full() {
        let mut h = ipv4_header([10, 18, 0, 2], [10, 30, 0, 7]);
        let hc = u16::from_be_bytes([h[10], h[11]]);
        let new = [10, 18, 1, 9];
        let updated = update_u32(hc, [10, 30, 0, 7], new);
        h[16..20].copy_from_slice(&new);
        h[10..12].copy_from_slice(&[0, 0]);
        assert_eq!(updated, checksum(0, &h));
    }

    /// Builds a transport segment with a valid checksum over the
    /// pseudo-header; `csum_at` is the offset of the checksum field.
    fn seg(src: IpAddr, dst: IpAddr, proto: u8, mut body: Vec<u8>, csum_at: usize) -> Vec<u8> {
        body[csum_at..csum_at + 2].copy_from_slice(&[0, 0]);
        let ph = pseudo_header_sum(src, dst, proto, body.len() as u32);
        let mut c = checksum(ph, &body);
        if proto == 17 {
            c = udp_wire(c);
        }
        body[csum_at..csum_at + 2].copy_from_slice(&c.to_be_bytes());
        body
    }

    fn full(src: IpAddr, dst: IpAddr, proto: u8, body: &[u8], csum_at: usize) -> u16 {
        let mut b = body.to_vec();
        b[csum_at..csum_at + 2].copy_from_slice(&[0, 0]);
        let ph = pseudo_header_sum(src, dst, proto, b.len() as u32);
        let c = checksum(ph, &b);
        if proto == 17 {
            udp_wire(c)
        } else {
            c
        }
    }

    #[test]
    fn tcp_udp_address_and_port_updates_equal_full() {
        let s4: IpAddr = Ipv4Addr::new(10, 18, 0, 2).into();
        let d4: IpAddr = Ipv4Addr::new(10, 30, 0, 7).into();
        let n4: IpAddr = Ipv4Addr::new(10, 18, 3, 4).into();
        let s6: IpAddr = "fdff:2000::1".parse::<Ipv6Addr>().unwrap().into();
        let d6: IpAddr = "fc00::7".parse::<Ipv6Addr>().unwrap().into();
        let n6: IpAddr = "fc00:1::9".parse::<Ipv6Addr>().unwrap().into();
        for (src, dst, new) in [(s4, d4, n4), (s6, d6, n6)] {
            for (proto, csum_at, len) in [(6u8, 16usize, 27usize), (17, 6, 13)] {
                let body: Vec<u8> = (0..len as u8).map(|i| i.wrapping_mul(37)).collect();
                let mut b = seg(src, dst, proto, body, csum_at);
                let hc = u16::from_be_bytes([b[csum_at], b[csum_at + 1]]);
                let d = match (dst, new) {
                    (IpAddr::V4(o), IpAddr::V4(n)) => Delta::NONE.bytes(&o.octets(), &n.octets()),
                    (IpAddr::V6(o), IpAddr::V6(n)) => Delta::NONE.bytes(&o.octets(), &n.octets()),
                    _ => unreachable!(),
                };
                // Also replace the source port 0x0025 -> 0xbeef.
                let old_port = u16::from_be_bytes([b[0], b[1]]);
                b[0..2].copy_from_slice(&0xbeefu16.to_be_bytes());
                let d = d.word(old_port, 0xbeef);
                let mut c = d.apply(hc);
                if proto == 17 {
                    c = udp_wire(c);
                }
                assert_eq!(c, full(src, new, proto, &b, csum_at), "proto {proto} {src}");
            }
        }
    }

    #[test]
    fn udp_zero_result_becomes_ffff() {
        // Find a port value that makes the updated checksum zero, then check
        // the full computation agrees that 0xffff goes on the wire.
        let src: IpAddr = Ipv4Addr::new(10, 18, 0, 2).into();
        let dst: IpAddr = Ipv4Addr::new(10, 30, 0, 7).into();
        let body = vec![0x12, 0x34, 0x00, 0x35, 0x00, 0x0a, 0, 0, 0xab, 0xcd];
        let b = seg(src, dst, 17, body, 6);
        let hc = u16::from_be_bytes([b[6], b[7]]);
        let old = 0x1234u16;
        let mut found = false;
        for p in 0..=u16::MAX {
            if update_u16(hc, old, p) == 0 {
                let mut b2 = b.clone();
                b2[0..2].copy_from_slice(&p.to_be_bytes());
                assert_eq!(full(src, dst, 17, &b2, 6), 0xffff);
                assert_eq!(udp_wire(update_u16(hc, old, p)), 0xffff);
                found = true;
                break;
            }
        }
        assert!(found);
    }

    #[test]
    fn icmpv4_has_no_pseudo_header_icmpv6_has() {
        // ICMPv4 echo: changing the identifier only.
        let mut m = vec![8, 0, 0, 0, 0x12, 0x34, 0, 1, b'h', b'i'];
        let c = checksum(0, &m);
        m[2..4].copy_from_slice(&c.to_be_bytes());
        let upd = update_u16(c, 0x1234, 0x4321);
        m[4..6].copy_from_slice(&0x4321u16.to_be_bytes());
        m[2..4].copy_from_slice(&[0, 0]);
        assert_eq!(upd, checksum(0, &m));

        // ICMPv6 echo: changing the destination address changes the checksum.
        let src: IpAddr = "fdff::1".parse::<Ipv6Addr>().unwrap().into();
        let dst: Ipv6Addr = "fdff:2000::5".parse().unwrap();
        let new: Ipv6Addr = "fc00::5".parse().unwrap();
        let b = seg(src, dst.into(), 58, vec![128, 0, 0, 0, 0, 7, 0, 1], 2);
        let hc = u16::from_be_bytes([b[2], b[3]]);
        let upd = update_u128(hc, dst.octets(), new.octets());
        assert_ne!(upd, hc);
        assert_eq!(upd, full(src, new.into(), 58, &b, 2));
    }

    #[test]
    fn delta_combination_is_order_independent() {
        let a = Delta::NONE.word(1, 2).word(0xffff, 0);
        let b = Delta::NONE.word(0xffff, 0).word(1, 2);
        assert_eq!(a.apply(0x1234), b.apply(0x1234));
        assert_eq!(
            Delta::NONE
                .word(1, 2)
                .combine(Delta::NONE.word(3, 4))
                .apply(7),
            Delta::NONE.word(1, 2).word(3, 4).apply(7)
        );
    }
}
