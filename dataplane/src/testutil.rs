//! Test helpers of both cores and the packet views: packet builders
//! (through etherparse, an implementation independent of the view under
//! test), the answer a peer would send, and full checksum recomputation.

use std::net::IpAddr;

use etherparse::{icmpv4, icmpv6, Icmpv4Type, Icmpv6Type, PacketBuilder};

use crate::checksum::{self, udp_wire};
use crate::packet::proto;

/// The transport of a packet to build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum L4 {
    Tcp { sp: u16, dp: u16, flags: u8 },
    Udp { sp: u16, dp: u16 },
    Echo { id: u16, seq: u16, request: bool },
}

/// TCP flag bits.
pub use crate::wire::tcp_flags::{ACK, FIN, RST, SYN};

fn step_ip(src: IpAddr, dst: IpAddr) -> etherparse::PacketBuilderStep<etherparse::IpHeaders> {
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => PacketBuilder::ipv4(s.octets(), d.octets(), 64),
        (IpAddr::V6(s), IpAddr::V6(d)) => PacketBuilder::ipv6(s.octets(), d.octets(), 64),
        _ => panic!("mixed families"),
    }
}

/// Builds a valid packet with correct checksums.
pub fn build(src: IpAddr, dst: IpAddr, l4: L4, payload: &[u8]) -> Vec<u8> {
    let ip = step_ip(src, dst);
    let mut out = Vec::new();
    match l4 {
        L4::Tcp { sp, dp, flags } => {
            let mut b = ip.tcp(sp, dp, 1000, 4096);
            if flags & SYN != 0 {
                b = b.syn();
            }
            if flags & FIN != 0 {
                b = b.fin();
            }
            if flags & RST != 0 {
                b = b.rst();
            }
            if flags & ACK != 0 {
                b = b.ack(77);
            }
            b.write(&mut out, payload).unwrap();
        }
        L4::Udp { sp, dp } => ip.udp(sp, dp).write(&mut out, payload).unwrap(),
        L4::Echo { id, seq, request } => match (src.is_ipv6(), request) {
            (false, true) => ip.icmpv4_echo_request(id, seq).write(&mut out, payload),
            (false, false) => ip.icmpv4_echo_reply(id, seq).write(&mut out, payload),
            (true, true) => ip.icmpv6_echo_request(id, seq).write(&mut out, payload),
            (true, false) => ip.icmpv6_echo_reply(id, seq).write(&mut out, payload),
        }
        .unwrap(),
    }
    out
}

/// Builds an ICMP error (v4: port unreachable; v6: port unreachable) from
/// `src` to `dst` quoting `quote`.
pub fn icmp_error(src: IpAddr, dst: IpAddr, quote: &[u8]) -> Vec<u8> {
    let ip = step_ip(src, dst);
    let mut out = Vec::new();
    if src.is_ipv6() {
        ip.icmpv6(Icmpv6Type::DestinationUnreachable(
            icmpv6::DestUnreachableCode::Port,
        ))
        .write(&mut out, quote)
        .unwrap();
    } else {
        ip.icmpv4(Icmpv4Type::DestinationUnreachable(
            icmpv4::DestUnreachableHeader::Port,
        ))
        .write(&mut out, quote)
        .unwrap();
    }
    out
}

/// Mirrors a packet as a peer answering it would: addresses and ports
/// swapped, echo requests turned into replies. Checksums stay valid
/// (swapping is invisible to a sum; the echo type change is recomputed).
pub fn mirror(pkt: &[u8]) -> Vec<u8> {
    let mut p = pkt.to_vec();
    let (l4, proto, v6) = layout(&p);
    let (s, d, n) = if v6 { (8, 24, 16) } else { (12, 16, 4) };
    let src: Vec<u8> = p[s..s + n].to_vec();
    let dst: Vec<u8> = p[d..d + n].to_vec();
    p[s..s + n].copy_from_slice(&dst);
    p[d..d + n].copy_from_slice(&src);
    match proto {
        proto::TCP | proto::UDP => {
            let sp = [p[l4], p[l4 + 1]];
            let dp = [p[l4 + 2], p[l4 + 3]];
            p[l4..l4 + 2].copy_from_slice(&dp);
            p[l4 + 2..l4 + 4].copy_from_slice(&sp);
        }
        _ => {
            p[l4] = match p[l4] {
                8 => 0,
                0 => 8,
                128 => 129,
                129 => 128,
                t => t,
            };
            recompute(&mut p);
        }
    }
    p
}

/// (transport offset, protocol, is v6) of a packet without IPv6 extension
/// headers.
pub fn layout(p: &[u8]) -> (usize, u8, bool) {
    if p[0] >> 4 == 6 {
        (40, p[6], true)
    } else {
        (usize::from(p[0] & 0xf) * 4, p[9], false)
    }
}

fn put(p: &mut [u8], off: usize, v: u16) {
    p[off..off + 2].copy_from_slice(&v.to_be_bytes());
}

/// Recomputes the header checksum of the IPv4 packet (or quoted IPv4
/// header) at the start of `p`, and nothing else.
pub fn fix_ipv4_header_checksum(p: &mut [u8]) {
    let ihl = usize::from(p[0] & 0xf) * 4;
    put(p, 10, 0);
    let c = checksum::checksum(0, &p[..ihl]);
    put(p, 10, c);
}

/// Recomputes every checksum of `p` in full (RFC 1071): the IPv4 header,
/// the TCP/UDP/ICMP checksum and, for ICMP errors, the quoted IPv4 header.
/// Quoted transport checksums cannot be recomputed (the quote is cut) and
/// are left alone. UDP over IPv4 with checksum 0 stays 0.
pub fn recompute(p: &mut [u8]) {
    let (l4, proto, v6) = layout(p);
    let src: IpAddr;
    let dst: IpAddr;
    if v6 {
        src = IpAddr::from(<[u8; 16]>::try_from(&p[8..24]).unwrap());
        dst = IpAddr::from(<[u8; 16]>::try_from(&p[24..40]).unwrap());
    } else {
        fix_ipv4_header_checksum(p);
        src = IpAddr::from(<[u8; 4]>::try_from(&p[12..16]).unwrap());
        dst = IpAddr::from(<[u8; 4]>::try_from(&p[16..20]).unwrap());
    }
    let len = (p.len() - l4) as u32;
    let ph = checksum::pseudo_header_sum(src, dst, proto, len);
    match proto {
        proto::TCP => {
            put(p, l4 + 16, 0);
            let c = checksum::checksum(ph, &p[l4..]);
            put(p, l4 + 16, c);
        }
        proto::UDP if v6 || p[l4 + 6..l4 + 8] != [0, 0] => {
            put(p, l4 + 6, 0);
            let c = udp_wire(checksum::checksum(ph, &p[l4..]));
            put(p, l4 + 6, c);
        }
        proto::ICMP | proto::ICMPV6 => {
            let ty = p[l4];
            let is_err = if v6 {
                ty < 128
            } else {
                matches!(ty, 3 | 11 | 12)
            };
            if is_err && !v6 {
                fix_ipv4_header_checksum(&mut p[l4 + 8..]);
            }
            put(p, l4 + 2, 0);
            let c = checksum::checksum(if v6 { ph } else { 0 }, &p[l4..]);
            put(p, l4 + 2, c);
        }
        _ => {}
    }
}

/// True if every checksum of `p` equals its full recomputation.
pub fn checksums_full(p: &[u8]) -> bool {
    let mut c = p.to_vec();
    recompute(&mut c);
    c == p
}
