//! A read-only summary of the headers that matter on each hop: addresses,
//! ports, protocol, TCP flags and numbers, ICMP type and identifier, lengths.
//!
//! Parsing is done by `etherparse`; this module picks the fields out and
//! gives them one text form. Untrusted input never panics: anything that is
//! not a well-formed IPv4/IPv6 packet is an [`WireError`].

use std::fmt;
use std::net::IpAddr;

use etherparse::{NetSlice, SlicedPacket, TransportSlice};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("malformed packet: {0}")]
    Malformed(String),
}

/// TCP flag bits as they appear in the header's 13th byte.
pub mod tcp_flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
    pub const URG: u8 = 0x20;
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum L4 {
    Tcp {
        sport: u16,
        dport: u16,
        seq: u32,
        ack: u32,
        flags: u8,
    },
    Udp {
        sport: u16,
        dport: u16,
    },
    /// ICMP or ICMPv6; `rest` is header bytes 5-8 (identifier and sequence
    /// of an echo).
    Icmp {
        v6: bool,
        ty: u8,
        code: u8,
        rest: [u8; 4],
    },
    /// A fragment after the first, or a protocol hoplab does not decode.
    Other {
        proto: u8,
    },
}

/// The headers of one IP packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub src: IpAddr,
    pub dst: IpAddr,
    /// TTL or hop limit.
    pub ttl: u8,
    /// IP total length (IPv6: 40 + payload length).
    pub len: u16,
    /// IPv4 identification; IPv6 flow label.
    pub ident: u32,
    pub l4: L4,
    /// The bytes after the transport header.
    pub payload: Vec<u8>,
    /// A fragment's datagram identification (IPv4: the identification;
    /// IPv6: the fragment header's), which with the addresses and the
    /// protocol names the datagram it belongs to; `None` for a packet
    /// that is no fragment.
    pub frag: Option<u32>,
}

impl Summary {
    pub fn proto_name(&self) -> &'static str {
        match self.l4 {
            L4::Tcp { .. } => "tcp",
            L4::Udp { .. } => "udp",
            L4::Icmp { v6: false, .. } => "icmp",
            L4::Icmp { v6: true, .. } => "icmp6",
            L4::Other { .. } => "ip",
        }
    }

    /// Source and destination port (ICMP echo: the identifier on both).
    pub fn ports(&self) -> Option<(u16, u16)> {
        match self.l4 {
            L4::Tcp { sport, dport, .. } | L4::Udp { sport, dport } => Some((sport, dport)),
            _ => None,
        }
    }

    /// The ICMP echo identifier, if this is an echo request or reply.
    pub fn echo_id(&self) -> Option<u16> {
        match self.l4 {
            L4::Icmp {
                v6: false,
                ty: 0 | 8,
                rest,
                ..
            }
            | L4::Icmp {
                v6: true,
                ty: 128 | 129,
                rest,
                ..
            } => Some(u16::from_be_bytes([rest[0], rest[1]])),
            _ => None,
        }
    }

    /// For an ICMP error (IPv4 unreachable, time exceeded, parameter
    /// problem; ICMPv6 types 1-4): the protocol and ports of the packet it
    /// quotes, as that packet was sent. `None` for anything else, and for
    /// a quote too short to hold the ports.
    pub fn quoted_ports(&self) -> Option<(u8, u16, u16)> {
        let q = &self.payload;
        let (proto, l4) = match self.l4 {
            L4::Icmp {
                v6: false,
                ty: 3 | 11 | 12,
                ..
            } => {
                let ihl = usize::from(*q.first()? & 0x0f) * 4;
                (*q.get(9)?, ihl)
            }
            L4::Icmp {
                v6: true,
                ty: 1..=4,
                ..
            } => (*q.get(6)?, 40),
            _ => return None,
        };
        let p = q.get(l4..l4 + 4)?;
        Some((
            proto,
            u16::from_be_bytes([p[0], p[1]]),
            u16::from_be_bytes([p[2], p[3]]),
        ))
    }

    /// The IP packet this UDP datagram tunnels: `Some` when it is UDP to or
    /// from `port` (the net manager's 50103) and its whole payload parses
    /// as an IPv4/IPv6 packet; `None` otherwise (not UDP, another port, or
    /// a payload that is not IP), so such a datagram stays a plain one.
    pub fn tunnelled(&self, port: u16) -> Option<Summary> {
        match self.l4 {
            L4::Udp { sport, dport } if sport == port || dport == port => {
                parse_ip(&self.payload).ok()
            }
            _ => None,
        }
    }
}

/// Text of TCP flags in tcpdump's order and letters: `S`, `S.`, `P.`, `F.`, `R`.
pub fn flags_text(flags: u8) -> String {
    use tcp_flags::*;
    let mut s = String::new();
    for (bit, c) in [(SYN, 'S'), (FIN, 'F'), (PSH, 'P'), (RST, 'R'), (URG, 'U')] {
        if flags & bit != 0 {
            s.push(c);
        }
    }
    if flags & ACK != 0 {
        s.push('.');
    }
    if s.is_empty() {
        s.push_str("none");
    }
    s
}

/// Parse an Ethernet frame. `Ok(None)` for frames that carry no IP (ARP...).
pub fn parse_ethernet(frame: &[u8]) -> Result<Option<Summary>, WireError> {
    if frame.len() < 14 {
        return Err(WireError::Malformed(format!(
            "{}-byte Ethernet frame",
            frame.len()
        )));
    }
    match u16::from_be_bytes([frame[12], frame[13]]) {
        0x0800 | 0x86dd => parse_ip(&frame[14..]).map(Some),
        _ => Ok(None),
    }
}

/// Parse a raw IP packet (as read from a TUN device).
pub fn parse_ip(bytes: &[u8]) -> Result<Summary, WireError> {
    let p = SlicedPacket::from_ip(bytes).map_err(|e| WireError::Malformed(e.to_string()))?;
    let (src, dst, ttl, len, ident, proto) = match &p.net {
        Some(NetSlice::Ipv4(v4)) => {
            let h = v4.header();
            (
                IpAddr::V4(h.source_addr()),
                IpAddr::V4(h.destination_addr()),
                h.ttl(),
                h.total_len(),
                u32::from(h.identification()),
                h.protocol().0,
            )
        }
        Some(NetSlice::Ipv6(v6)) => {
            let h = v6.header();
            (
                IpAddr::V6(h.source_addr()),
                IpAddr::V6(h.destination_addr()),
                h.hop_limit(),
                h.payload_length().saturating_add(40),
                h.flow_label().value(),
                v6.payload().ip_number.0,
            )
        }
        _ => return Err(WireError::Malformed("not IPv4 or IPv6".into())),
    };
    let mut frag = None;
    let (l4, payload) = match &p.transport {
        Some(TransportSlice::Tcp(t)) => {
            let flags = t.header_slice().get(13).copied().unwrap_or(0) & 0x3f;
            (
                L4::Tcp {
                    sport: t.source_port(),
                    dport: t.destination_port(),
                    seq: t.sequence_number(),
                    ack: t.acknowledgment_number(),
                    flags,
                },
                t.payload(),
            )
        }
        Some(TransportSlice::Udp(u)) => (
            L4::Udp {
                sport: u.source_port(),
                dport: u.destination_port(),
            },
            u.payload(),
        ),
        Some(TransportSlice::Icmpv4(i)) => (
            L4::Icmp {
                v6: false,
                ty: i.type_u8(),
                code: i.code_u8(),
                rest: i.bytes5to8(),
            },
            i.payload(),
        ),
        Some(TransportSlice::Icmpv6(i)) => (
            L4::Icmp {
                v6: true,
                ty: i.type_u8(),
                code: i.code_u8(),
                rest: i.bytes5to8(),
            },
            i.payload(),
        ),
        _ => match fragment(&p) {
            Some((first, id, data)) => {
                frag = Some(id);
                fragment_l4(proto, first, data)
            }
            None => (L4::Other { proto }, &[][..]),
        },
    };
    Ok(Summary {
        src,
        dst,
        ttl,
        len,
        ident,
        l4,
        payload: payload.to_vec(),
        frag,
    })
}

/// For a fragment (etherparse leaves its transport alone): whether it is
/// the first one (offset 0), its datagram identification, and its data.
fn fragment<'a>(p: &SlicedPacket<'a>) -> Option<(bool, u32, &'a [u8])> {
    match &p.net {
        Some(NetSlice::Ipv4(v4)) if v4.is_payload_fragmented() => Some((
            v4.header().fragments_offset().value() == 0,
            u32::from(v4.header().identification()),
            v4.payload().payload,
        )),
        Some(NetSlice::Ipv6(v6)) if v6.is_payload_fragmented() => {
            let (mut first, mut id) = (true, 0);
            for e in v6.extensions().clone() {
                if let etherparse::Ipv6ExtensionSlice::Fragment(f) = e {
                    first &= f.fragment_offset().value() == 0;
                    id = f.identification();
                }
            }
            Some((first, id, v6.payload().payload))
        }
        _ => None,
    }
}

/// A fragment's transport: the first fragment of a TCP or UDP datagram
/// shows its ports (the flow it belongs to), its payload the data after
/// the transport header; a later one, or another protocol, is
/// [`L4::Other`] with its data as payload. The payload is part of what
/// identifies a packet on every hop, so each fragment keeps its own
/// identity, and the first one keeps it across a rewrite of its ports'
/// checksum.
fn fragment_l4(proto: u8, first: bool, data: &[u8]) -> (L4, &[u8]) {
    let port = |at: usize| u16::from_be_bytes([data[at], data[at + 1]]);
    match proto {
        17 if first && data.len() >= 8 => (
            L4::Udp {
                sport: port(0),
                dport: port(2),
            },
            &data[8..],
        ),
        6 if first && data.len() >= 20 => {
            let off = (usize::from(data[12] >> 4) * 4).clamp(20, data.len());
            (
                L4::Tcp {
                    sport: port(0),
                    dport: port(2),
                    seq: u32::from_be_bytes([data[4], data[5], data[6], data[7]]),
                    ack: u32::from_be_bytes([data[8], data[9], data[10], data[11]]),
                    flags: data[13] & 0x3f,
                },
                &data[off..],
            )
        }
        _ => (L4::Other { proto }, data),
    }
}

fn endpoint(f: &mut fmt::Formatter<'_>, a: IpAddr, port: Option<u16>) -> fmt::Result {
    match (a, port) {
        (IpAddr::V6(v6), Some(p)) => write!(f, "[{v6}]:{p}"),
        (a, Some(p)) => write!(f, "{a}:{p}"),
        (a, None) => write!(f, "{a}"),
    }
}

/// The one text form of a packet's headers, e.g.
/// `10.0.0.1:40000 > 10.0.0.2:80 tcp S. len=60 ttl=64`. Sequence numbers
/// are printed raw here; the trace prints them relative.
impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ports = self.ports();
        endpoint(f, self.src, ports.map(|p| p.0))?;
        f.write_str(" > ")?;
        endpoint(f, self.dst, ports.map(|p| p.1))?;
        write!(f, " {}", self.proto_name())?;
        match &self.l4 {
            L4::Tcp {
                flags, seq, ack, ..
            } => write!(f, " {} seq={seq} ack={ack}", flags_text(*flags))?,
            L4::Icmp { ty, code, rest, .. } => {
                write!(f, " type={ty} code={code}")?;
                if let Some(id) = self.echo_id() {
                    write!(f, " id={id} seq={}", u16::from_be_bytes([rest[2], rest[3]]))?;
                }
            }
            L4::Other { proto } => write!(f, " proto={proto}")?,
            L4::Udp { .. } => {}
        }
        write!(f, " len={} ttl={}", self.len, self.ttl)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::PacketBuilder;

    fn tcp_frame() -> Vec<u8> {
        let b = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .tcp(40000, 80, 1000, 65535)
            .syn();
        let mut v = Vec::new();
        b.write(&mut v, &[]).unwrap();
        v
    }

    #[test]
    fn tcp_syn_summary() {
        let s = parse_ethernet(&tcp_frame()).unwrap().unwrap();
        assert_eq!(
            s.to_string(),
            "10.0.0.1:40000 > 10.0.0.2:80 tcp S seq=1000 ack=0 len=40 ttl=64"
        );
    }

    #[test]
    fn every_truncation_is_an_error_or_none_never_a_panic() {
        let f = tcp_frame();
        for n in 0..f.len() {
            let _ = parse_ethernet(&f[..n]);
        }
        assert!(parse_ethernet(&f[..10]).is_err());
        assert!(parse_ethernet(&f[..20]).is_err());
    }

    #[test]
    fn arp_is_not_ip() {
        let mut f = vec![0u8; 42];
        f[12] = 0x08;
        f[13] = 0x06;
        assert_eq!(parse_ethernet(&f).unwrap(), None);
    }

    fn udp_frame(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
        let b = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4([10, 10, 1, 1], [10, 10, 1, 2], 64)
            .udp(sport, dport);
        let mut v = Vec::new();
        b.write(&mut v, payload).unwrap();
        v
    }

    #[test]
    fn a_tunnel_datagram_carries_the_inner_packet() {
        let inner = &tcp_frame()[14..];
        for (sport, dport) in [(50103, 50103), (40000, 50103), (50103, 40000)] {
            let outer = parse_ethernet(&udp_frame(sport, dport, inner))
                .unwrap()
                .unwrap();
            assert_eq!(
                outer.tunnelled(50103).map(|s| s.to_string()).as_deref(),
                Some("10.0.0.1:40000 > 10.0.0.2:80 tcp S seq=1000 ack=0 len=40 ttl=64"),
                "{sport} > {dport}"
            );
        }
        // Another port, or no UDP at all: not a tunnel.
        let other = parse_ethernet(&udp_frame(40000, 4789, inner))
            .unwrap()
            .unwrap();
        assert_eq!(other.tunnelled(50103), None);
        let tcp = parse_ethernet(&tcp_frame()).unwrap().unwrap();
        assert_eq!(tcp.tunnelled(80), None);
    }

    #[test]
    fn a_tunnel_port_datagram_without_ip_inside_is_plain() {
        // "hello" starts with 0x6: it looks like IPv6 and is not.
        for payload in [
            &b"hello"[..],
            &[],
            &[0x45, 0, 0, 40, 0, 0],
            &tcp_frame()[14..30],
        ] {
            let s = parse_ethernet(&udp_frame(50103, 50103, payload))
                .unwrap()
                .unwrap();
            assert_eq!(s.tunnelled(50103), None, "{payload:?}");
        }
    }

    #[test]
    fn fragments_each_keep_an_identity_and_the_first_its_ports() {
        use crate::fragments::fragment;
        for v6 in [false, true] {
            let b = if v6 {
                PacketBuilder::ipv6([0xfd; 16], [0xfe; 16], 64)
            } else {
                PacketBuilder::ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            };
            let mut p = Vec::new();
            b.udp(4000, 80).write(&mut p, &[7u8; 3000]).unwrap();
            if !v6 {
                p[6] &= !0x40;
            }
            let pieces = fragment(&p, 1400, 1).unwrap();
            let s: Vec<Summary> = pieces.iter().map(|f| parse_ip(f).unwrap()).collect();
            assert_eq!(
                s[0].l4,
                L4::Udp {
                    sport: 4000,
                    dport: 80
                }
            );
            assert_eq!(s[0].payload.len(), 1400 - 8);
            assert_eq!(s[1].l4, L4::Other { proto: 17 });
            assert_eq!(s[1].payload.len(), 1400);
            assert_ne!(s[1].payload, s[2].payload);
            // Every piece names its datagram.
            let id = if v6 {
                1
            } else {
                u32::from(u16::from_be_bytes([p[4], p[5]]))
            };
            assert!(s.iter().all(|f| f.frag == Some(id)), "{s:?}");
            assert_eq!(parse_ip(&p).unwrap().frag, None);
        }
    }

    #[test]
    fn flags_like_tcpdump() {
        use tcp_flags::*;
        assert_eq!(flags_text(SYN | ACK), "S.");
        assert_eq!(flags_text(FIN | ACK), "F.");
        assert_eq!(flags_text(PSH | ACK), "P.");
        assert_eq!(flags_text(RST), "R");
    }
}
