//! What the targets share: how the fuzzer's bytes become a sequence of
//! packets, the checksum fix-ups that let mutated packets past the IPv4
//! header checksum, and an independent checksum oracle (a plain RFC 1071
//! sum, not the crate's incremental code) for "a rewritten packet still
//! has valid checksums".

use std::net::IpAddr;

use hoplab_dataplane::packet::IpPacket;
use hoplab_dataplane::Millis;

const TCP: u8 = 6;
const UDP: u8 = 17;
const ICMP: u8 = 1;
const ICMPV6: u8 = 58;

/// One packet of an input: a control byte, a length byte, then that many
/// bytes (the last record may be shorter).
///
/// Control byte: bit 0 fixes the IPv4 header checksum, bit 1 the
/// transport checksum, bit 2 the quoted IPv4 header checksum of an ICMP
/// error (so the fuzzer reaches the paths behind them); bits 3-7 advance
/// the clock by that many seconds before the packet.
pub struct Record {
    pub fix: u8,
    pub advance: Millis,
    pub bytes: Vec<u8>,
}

/// Splits an input into [`Record`]s, fixing up checksums as each asks.
pub fn records(mut data: &[u8]) -> Vec<Record> {
    let mut out = Vec::new();
    while let [ctl, len, rest @ ..] = data {
        let n = usize::from(*len).min(rest.len());
        let mut bytes = rest[..n].to_vec();
        fix_checksums(&mut bytes, *ctl);
        out.push(Record {
            fix: *ctl & 7,
            advance: Millis(u64::from(ctl >> 3) * 1000),
            bytes,
        });
        data = &rest[n..];
    }
    out
}

fn be16(b: &[u8], off: usize) -> u16 {
    u16::from_be_bytes([b[off], b[off + 1]])
}

/// RFC 1071 one's complement sum of `data`, added to `sum`, unfolded.
pub fn sum(mut sum: u64, data: &[u8]) -> u64 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        sum += u64::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u64::from(*last) << 8;
    }
    sum
}

fn fold(mut s: u64) -> u16 {
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

fn pseudo(src: &[u8], dst: &[u8], proto: u8, len: usize) -> u64 {
    sum(sum(sum(0, src), dst), &[0, proto]) + len as u64
}

/// The layout of a packet as far as checksums go: the IP header length,
/// the transport protocol and offset (IPv6: after extension headers the
/// fix-ups and the oracle walk only when there are none), the end.
struct Layout {
    v6: bool,
    l3: usize,
    proto: u8,
    end: usize,
}

fn layout(b: &[u8]) -> Option<Layout> {
    match b.first()? >> 4 {
        4 if b.len() >= 20 => {
            let l3 = usize::from(b[0] & 0xf) * 4;
            let end = usize::from(be16(b, 2)).min(b.len());
            (l3 >= 20 && end >= l3).then_some(Layout {
                v6: false,
                l3,
                proto: b[9],
                end,
            })
        }
        6 if b.len() >= 40 => Some(Layout {
            v6: true,
            l3: 40,
            proto: b[6],
            end: (40 + usize::from(be16(b, 4))).min(b.len()),
        }),
        _ => None,
    }
}

/// Where the transport checksum of `l` lies and what it covers:
/// (checksum offset, covered range, pseudo-header sum). `None` for
/// protocols without one, or an IPv4 UDP checksum of 0 ("none").
fn transport_sum(b: &[u8], l: &Layout) -> Option<(usize, std::ops::Range<usize>, u64)> {
    let (src, dst) = if l.v6 {
        (&b[8..24], &b[24..40])
    } else {
        (&b[12..16], &b[16..20])
    };
    let t = l.l3;
    let (off, end, pseudo_proto) = match (l.proto, l.v6) {
        (TCP, _) if l.end >= t + 20 => (t + 16, l.end, Some(TCP)),
        (UDP, v6) if l.end >= t + 8 => {
            let ulen = usize::from(be16(b, t + 4));
            if ulen < 8 || t + ulen > l.end || (!v6 && be16(b, t + 6) == 0) {
                return None;
            }
            (t + 6, t + ulen, Some(UDP))
        }
        (ICMP, false) if l.end >= t + 8 => (t + 2, l.end, None),
        (ICMPV6, true) if l.end >= t + 8 => (t + 2, l.end, Some(ICMPV6)),
        _ => return None,
    };
    let ph = pseudo_proto.map_or(0, |p| pseudo(src, dst, p, end - t));
    Some((off, t..end, ph))
}

/// The offset of the quoted IPv4 header of an ICMPv4 error, and its
/// length, if the whole header is there.
fn quoted_v4(b: &[u8], l: &Layout) -> Option<(usize, usize)> {
    let q = l.l3 + 8;
    let is_error = !l.v6 && l.proto == ICMP && matches!(b.get(l.l3)?, 3 | 11 | 12);
    let ihl = usize::from(b.get(q)? & 0xf) * 4;
    (is_error && b[q] >> 4 == 4 && ihl >= 20 && q + ihl <= l.end).then_some((q, ihl))
}

fn write_sum(b: &mut [u8], off: usize, range: std::ops::Range<usize>, initial: u64, udp: bool) {
    b[off..off + 2].fill(0);
    let mut c = !fold(sum(initial, &b[range]));
    if udp && c == 0 {
        c = 0xffff;
    }
    b[off..off + 2].copy_from_slice(&c.to_be_bytes());
}

/// Fixes the checksums `ctl` (bits 0-2, see [`Record`]) asks for.
pub fn fix_checksums(b: &mut [u8], ctl: u8) {
    let Some(l) = layout(b) else { return };
    if ctl & 4 != 0 {
        if let Some((q, ihl)) = quoted_v4(b, &l) {
            write_sum(b, q + 10, q..q + ihl, 0, false);
        }
    }
    if ctl & 2 != 0 {
        if let Some((off, range, ph)) = transport_sum(b, &l) {
            write_sum(b, off, range, ph, l.proto == UDP);
        }
    }
    if ctl & 1 != 0 && !l.v6 {
        write_sum(b, 10, 0..l.l3, 0, false);
    }
}

/// Which checksums of a packet verify (`None`: the packet has no such
/// checksum, or the oracle cannot tell).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checks {
    pub ipv4_header: Option<bool>,
    pub transport: Option<bool>,
    pub quoted_ipv4_header: Option<bool>,
}

impl Checks {
    pub fn of(b: &[u8]) -> Checks {
        let Some(l) = layout(b) else {
            return Checks {
                ipv4_header: None,
                transport: None,
                quoted_ipv4_header: None,
            };
        };
        Checks {
            ipv4_header: (!l.v6).then(|| fold(sum(0, &b[..l.l3])) == 0xffff),
            transport: transport_sum(b, &l).map(|(_, r, ph)| fold(sum(ph, &b[r])) == 0xffff),
            quoted_ipv4_header: quoted_v4(b, &l).map(|(q, n)| fold(sum(0, &b[q..q + n])) == 0xffff),
        }
    }

    /// Asserts that every checksum valid in `self` (the packet before a
    /// rewrite) is still valid in `after`.
    pub fn assert_kept(&self, after: &Checks, what: &str) {
        let kept = |b: Option<bool>, a: Option<bool>| b != Some(true) || a == Some(true);
        assert!(
            kept(self.ipv4_header, after.ipv4_header)
                && kept(self.transport, after.transport)
                && kept(self.quoted_ipv4_header, after.quoted_ipv4_header),
            "{what}: a valid checksum was broken: before {self:?}, after {after:?}"
        );
    }

    /// Asserts that every checksum the packet has verifies.
    pub fn assert_valid(&self, what: &str) {
        assert!(
            [self.ipv4_header, self.transport, self.quoted_ipv4_header]
                .iter()
                .all(|c| *c != Some(false)),
            "{what}: invalid checksum: {self:?}"
        );
    }
}

/// The source and destination addresses of a packet `new_checked`
/// accepted.
pub fn addrs(b: &[u8]) -> (IpAddr, IpAddr) {
    if b[0] >> 4 == 6 {
        let a = |o: usize| IpAddr::from(<[u8; 16]>::try_from(&b[o..o + 16]).unwrap());
        (a(8), a(24))
    } else {
        let a = |o: usize| IpAddr::from(<[u8; 4]>::try_from(&b[o..o + 4]).unwrap());
        (a(12), a(16))
    }
}

/// The answer an endpoint would send to `packet`: addresses and ports
/// swapped (TCP and UDP only), checksums kept by the view's setters.
pub fn reply(packet: &[u8]) -> Option<Vec<u8>> {
    let mut out = packet.to_vec();
    let mut v = IpPacket::new_checked(&mut out).ok()?;
    let (src, dst) = (v.src(), v.dst());
    let (sp, dp) = v.src_port().zip(v.dst_port())?;
    v.icmp_type_code().is_none().then_some(())?;
    v.set_src(dst).ok()?;
    v.set_dst(src).ok()?;
    v.set_src_port(dp).ok()?;
    v.set_dst_port(sp).ok()?;
    Some(out)
}
