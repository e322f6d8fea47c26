//! In-place mutable views over raw IP packets (IPv4 or IPv6, no link-layer
//! header: what a TUN device hands over), in the style of smoltcp's `wire`.
//!
//! [`IpPacket::new_checked`] validates every length the view later relies
//! on: the IPv4 header length, header checksum and total length; the IPv6
//! payload length and extension header chain; the TCP data offset, the UDP
//! length, the ICMP header; and, for an ICMP error, the quoted IP header
//! and the first 8 bytes of the quoted transport header.
//!
//! # Panic contract
//!
//! No method of [`IpPacket`] panics on a buffer that `new_checked`
//! accepted: every offset a getter or setter touches was checked to lie
//! inside the packet by `new_checked`, and the view never changes a length
//! field. Setters given an address of the wrong family return
//! [`TranslateError`] instead.
//!
//! # Checksums
//!
//! Setters change checksums incrementally (RFC 1624, see
//! [`crate::checksum`]), never by recomputing over the packet:
//!
//! - addresses: the IPv4 header checksum and the TCP, UDP and ICMPv6
//!   checksums (pseudo-header); ICMPv4 has no pseudo-header;
//! - ports: the TCP or UDP checksum; the ICMP echo identifier: the ICMP
//!   checksum;
//! - UDP over IPv4 with checksum 0 ("no checksum") is left at 0; a UDP
//!   checksum that becomes 0 is sent as `0xffff`.
//!
//! # ICMP errors
//!
//! Destination unreachable (incl. IPv4 fragmentation needed), time exceeded,
//! parameter problem and ICMPv6 packet too big quote the packet that caused
//! them. The `set_quoted_*` setters translate the quoted IP header (its
//! addresses and, for IPv4, its header checksum) and the quoted transport
//! ports or echo identifier. **The quoted transport checksum is updated
//! too** whenever the quote contains it (UDP and ICMP: always, since the
//! first 8 bytes are required; TCP: when at least 18 bytes of the TCP
//! header are quoted), so the quote stays exactly what the peer sent or
//! would have sent. Every quoted word changed is folded into the outer ICMP
//! checksum.
//!
//! # Fragments
//!
//! An IPv4 packet with MF set or a non-zero fragment offset, or an IPv6
//! packet with a fragment header, is refused with [`ParseError::Fragment`]:
//! only the first fragment carries ports, so fragments cannot be matched to
//! a flow without reassembly (both cores reassemble them, see
//! [`crate::fragments`]).
//!
//! The views know IP, TCP, UDP and ICMP headers only: nothing of flows,
//! services or what a core decides to rewrite (the net manager and the
//! gateway both use them).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::checksum::{self, Delta};

/// IP protocol numbers the view understands.
pub mod proto {
    pub const ICMP: u8 = 1;
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
    pub const ICMPV6: u8 = 58;
}

/// Why a buffer is not a packet the view accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    #[error("empty buffer")]
    Empty,
    #[error("IP version {0} is neither 4 nor 6")]
    Version(u8),
    #[error("{what}: need {need} bytes, have {have}")]
    Truncated {
        what: &'static str,
        need: usize,
        have: usize,
    },
    #[error("IPv4 header length {0} is below 20")]
    HeaderLength(usize),
    #[error("IPv4 header checksum does not verify")]
    HeaderChecksum,
    #[error("IP total length {total} is shorter than the header ({header})")]
    TotalLength { total: usize, header: usize },
    #[error("TCP data offset {0} is below 20")]
    TcpDataOffset(usize),
    #[error("UDP length {0} is below 8")]
    UdpLength(usize),
    #[error("the packet quoted in an ICMP error is {0}")]
    Quote(&'static str),
}

/// Why [`IpPacket::new_checked`] refused a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error(transparent)]
    Malformed(#[from] Malformed),
    /// An IPv4 or IPv6 fragment: not translated, the caller drops it.
    #[error("fragment")]
    Fragment,
    /// Well-formed but not translatable (IPv6 routing header, whose final
    /// destination, not the header's, is in the pseudo-header; AH).
    #[error("unsupported: {0}")]
    Unsupported(&'static str),
}

/// Misuse of a setter (never caused by packet contents alone).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TranslateError {
    #[error("address family does not match the packet")]
    FamilyMismatch,
    #[error("the transport protocol has no ports")]
    NoPorts,
    #[error("not an ICMP error")]
    NotIcmpError,
}

/// What the transport part of a packet is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Tcp,
    Udp,
    /// ICMP or ICMPv6 echo request/reply; the identifier plays the role of
    /// both ports.
    IcmpEcho {
        request: bool,
    },
    /// ICMP or ICMPv6 error quoting a packet.
    IcmpError(Quote),
    /// Any other ICMP message: addresses can be translated, no ports.
    IcmpOther,
    /// Any other protocol: addresses can be translated, no ports.
    Other,
}

/// Where the packet quoted by an ICMP error lies (absolute offsets into the
/// packet). Invariant (checked by `new_checked`): `ip_off + ip header
/// length + 8 <= l4_off + 8 <= end <= packet length`, and the quoted IP
/// header lies entirely inside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quote {
    ip_off: usize,
    l4_off: usize,
    end: usize,
    v6: bool,
    proto: u8,
    kind: QuotedKind,
}

/// The transport of a quoted packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotedKind {
    Tcp,
    Udp,
    IcmpEcho,
    /// Another protocol, or a non-first fragment: addresses only.
    Other,
}

impl Quote {
    pub fn kind(&self) -> QuotedKind {
        self.kind
    }
    pub fn protocol(&self) -> u8 {
        self.proto
    }
}

/// A validated, mutable view over one IP packet.
#[derive(Debug)]
pub struct IpPacket<'a> {
    /// The packet, cut to its IP total length (trailing bytes of the input
    /// buffer are not part of the view).
    buf: &'a mut [u8],
    v6: bool,
    proto: u8,
    l4_off: usize,
    transport: Transport,
}

fn be16(b: &[u8], off: usize) -> u16 {
    u16::from_be_bytes([b[off], b[off + 1]])
}

fn need(what: &'static str, need: usize, have: usize) -> Result<(), Malformed> {
    if need > have {
        Err(Malformed::Truncated { what, need, have })
    } else {
        Ok(())
    }
}

/// Walks the IPv6 extension headers from `nh` at `off`, within `end`.
/// Returns the upper-layer protocol and its offset. `quoted` relaxes the
/// fragment rule: a quoted first fragment is walked through, a quoted later
/// fragment reports `None` as the transport offset (no ports quoted).
fn walk_v6(
    b: &[u8],
    mut nh: u8,
    mut off: usize,
    end: usize,
    quoted: bool,
) -> Result<(u8, Option<usize>), ParseError> {
    // At most 8 extension headers; each is at least 8 bytes, so a longer
    // chain could not be legitimate anyway.
    for _ in 0..8 {
        match nh {
            0 | 60 => {
                need("IPv6 extension header", off + 8, end)?;
                let len = (usize::from(b[off + 1]) + 1) * 8;
                need("IPv6 extension header", off + len, end)?;
                nh = b[off];
                off += len;
            }
            43 => return Err(ParseError::Unsupported("IPv6 routing header")),
            44 => {
                if !quoted {
                    return Err(ParseError::Fragment);
                }
                need("IPv6 fragment header", off + 8, end)?;
                let frag_off = be16(b, off + 2) >> 3;
                nh = b[off];
                off += 8;
                if frag_off != 0 {
                    return Ok((nh, None));
                }
            }
            51 => return Err(ParseError::Unsupported("IPv6 authentication header")),
            _ => return Ok((nh, Some(off))),
        }
    }
    Err(Malformed::Truncated {
        what: "IPv6 extension header chain (too long)",
        need: 0,
        have: 0,
    }
    .into())
}

fn is_icmp_echo(v6: bool, ty: u8) -> Option<bool> {
    match (v6, ty) {
        (false, 8) | (true, 128) => Some(true),
        (false, 0) | (true, 129) => Some(false),
        _ => None,
    }
}

fn is_icmp_error(v6: bool, ty: u8) -> bool {
    match v6 {
        // Destination unreachable, time exceeded, parameter problem.
        false => matches!(ty, 3 | 11 | 12),
        // Destination unreachable, packet too big, time exceeded,
        // parameter problem.
        true => matches!(ty, 1..=4),
    }
}

/// Validates the packet quoted by an ICMP error starting at `q`, ending at
/// `end`. The quoted packet must be of the outer packet's family, with a
/// complete IP header and at least 8 bytes of transport header.
fn parse_quote(b: &[u8], q: usize, end: usize, v6: bool) -> Result<Quote, ParseError> {
    let have = end.saturating_sub(q);
    if have == 0 {
        return Err(Malformed::Quote("empty").into());
    }
    let version = b[q] >> 4;
    let (proto, l4) = if !v6 {
        if version != 4 {
            return Err(Malformed::Quote("not IPv4 inside ICMPv4").into());
        }
        need("quoted IPv4 header", 20, have)?;
        let ihl = usize::from(b[q] & 0x0f) * 4;
        if ihl < 20 {
            return Err(Malformed::Quote("an IPv4 header shorter than 20 bytes").into());
        }
        need("quoted IPv4 header", ihl, have)?;
        let frag_off = be16(b, q + 6) & 0x1fff;
        (b[q + 9], (frag_off == 0).then_some(q + ihl))
    } else {
        if version != 6 {
            return Err(Malformed::Quote("not IPv6 inside ICMPv6").into());
        }
        need("quoted IPv6 header", 40, have)?;
        walk_v6(b, b[q + 6], q + 40, end, true)?
    };
    let kind = match (l4, proto) {
        (None, _) => QuotedKind::Other,
        (Some(_), proto::TCP) => QuotedKind::Tcp,
        (Some(_), proto::UDP) => QuotedKind::Udp,
        (Some(l4), p) if (p == proto::ICMP && !v6) || (p == proto::ICMPV6 && v6) => {
            need("quoted ICMP header", l4 + 8, end)?;
            if is_icmp_echo(v6, b[l4]).is_some() {
                QuotedKind::IcmpEcho
            } else {
                QuotedKind::Other
            }
        }
        _ => QuotedKind::Other,
    };
    let l4_off = match l4 {
        Some(l4) => {
            if kind != QuotedKind::Other {
                need("quoted transport header (8 bytes)", l4 + 8, end)?;
            }
            l4
        }
        // No transport header quoted: point past the IP header.
        None => end,
    };
    Ok(Quote {
        ip_off: q,
        l4_off,
        end,
        v6,
        proto,
        kind,
    })
}

impl<'a> IpPacket<'a> {
    /// Validates `buf` as an IPv4 or IPv6 packet (see the module doc for
    /// what is checked). Bytes past the IP total length are ignored.
    pub fn new_checked(buf: &'a mut [u8]) -> Result<IpPacket<'a>, ParseError> {
        let first = *buf.first().ok_or(Malformed::Empty)?;
        let (v6, total, proto, l4) = match first >> 4 {
            4 => {
                need("IPv4 header", 20, buf.len())?;
                let ihl = usize::from(first & 0x0f) * 4;
                if ihl < 20 {
                    return Err(Malformed::HeaderLength(ihl).into());
                }
                need("IPv4 header", ihl, buf.len())?;
                let total = usize::from(be16(buf, 2));
                if total < ihl {
                    return Err(Malformed::TotalLength { total, header: ihl }.into());
                }
                need("IPv4 total length", total, buf.len())?;
                if checksum::fold(checksum::sum_bytes(0, &buf[..ihl])) != 0xffff {
                    return Err(Malformed::HeaderChecksum.into());
                }
                let frag = be16(buf, 6);
                if frag & 0x2000 != 0 || frag & 0x1fff != 0 {
                    return Err(ParseError::Fragment);
                }
                (false, total, buf[9], ihl)
            }
            6 => {
                need("IPv6 header", 40, buf.len())?;
                let total = 40 + usize::from(be16(buf, 4));
                need("IPv6 payload length", total, buf.len())?;
                let (proto, l4) = walk_v6(buf, buf[6], 40, total, false)?;
                // Outside a quote, walk_v6 returns a fragment error rather
                // than a missing transport offset.
                (true, total, proto, l4.unwrap_or(total))
            }
            v => return Err(Malformed::Version(v).into()),
        };
        let buf = &mut buf[..total];
        let have = total - l4;
        let transport = match proto {
            proto::TCP => {
                need("TCP header", l4 + 20, total)?;
                let doff = usize::from(buf[l4 + 12] >> 4) * 4;
                if doff < 20 {
                    return Err(Malformed::TcpDataOffset(doff).into());
                }
                need("TCP header with options", doff, have)?;
                Transport::Tcp
            }
            proto::UDP => {
                need("UDP header", l4 + 8, total)?;
                let ulen = usize::from(be16(buf, l4 + 4));
                if ulen < 8 {
                    return Err(Malformed::UdpLength(ulen).into());
                }
                need("UDP length", ulen, have)?;
                Transport::Udp
            }
            p if (p == proto::ICMP && !v6) || (p == proto::ICMPV6 && v6) => {
                need("ICMP header", l4 + 8, total)?;
                let ty = buf[l4];
                if let Some(request) = is_icmp_echo(v6, ty) {
                    Transport::IcmpEcho { request }
                } else if is_icmp_error(v6, ty) {
                    Transport::IcmpError(parse_quote(buf, l4 + 8, total, v6)?)
                } else {
                    Transport::IcmpOther
                }
            }
            _ => Transport::Other,
        };
        Ok(IpPacket {
            buf,
            v6,
            proto,
            l4_off: l4,
            transport,
        })
    }

    pub fn is_ipv6(&self) -> bool {
        self.v6
    }
    /// The IP total length (IPv6: 40 + payload length).
    pub fn len(&self) -> usize {
        self.buf.len()
    }
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
    /// The packet bytes, cut to the IP total length.
    pub fn as_bytes(&self) -> &[u8] {
        self.buf
    }
    /// The upper-layer protocol number (after IPv6 extension headers).
    pub fn protocol(&self) -> u8 {
        self.proto
    }
    pub fn transport(&self) -> Transport {
        self.transport
    }
    /// Offset of the transport header.
    pub fn transport_offset(&self) -> usize {
        self.l4_off
    }

    fn addr_at(&self, off: usize, v6: bool) -> IpAddr {
        if v6 {
            let mut a = [0u8; 16];
            a.copy_from_slice(&self.buf[off..off + 16]);
            IpAddr::V6(Ipv6Addr::from(a))
        } else {
            let mut a = [0u8; 4];
            a.copy_from_slice(&self.buf[off..off + 4]);
            IpAddr::V4(Ipv4Addr::from(a))
        }
    }

    fn src_off(v6: bool) -> usize {
        if v6 {
            8
        } else {
            12
        }
    }
    fn dst_off(v6: bool) -> usize {
        if v6 {
            24
        } else {
            16
        }
    }

    pub fn src(&self) -> IpAddr {
        self.addr_at(Self::src_off(self.v6), self.v6)
    }
    pub fn dst(&self) -> IpAddr {
        self.addr_at(Self::dst_off(self.v6), self.v6)
    }
    /// TTL or hop limit.
    pub fn ttl(&self) -> u8 {
        self.buf[if self.v6 { 7 } else { 8 }]
    }

    /// TCP/UDP source port, or the ICMP echo identifier.
    pub fn src_port(&self) -> Option<u16> {
        match self.transport {
            Transport::Tcp | Transport::Udp => Some(be16(self.buf, self.l4_off)),
            Transport::IcmpEcho { .. } => Some(be16(self.buf, self.l4_off + 4)),
            _ => None,
        }
    }
    /// TCP/UDP destination port, or the ICMP echo identifier.
    pub fn dst_port(&self) -> Option<u16> {
        match self.transport {
            Transport::Tcp | Transport::Udp => Some(be16(self.buf, self.l4_off + 2)),
            Transport::IcmpEcho { .. } => Some(be16(self.buf, self.l4_off + 4)),
            _ => None,
        }
    }
    /// The TCP flags byte (see [`crate::wire::tcp_flags`]).
    pub fn tcp_flags(&self) -> Option<u8> {
        match self.transport {
            Transport::Tcp => Some(self.buf[self.l4_off + 13]),
            _ => None,
        }
    }
    /// ICMP type and code.
    pub fn icmp_type_code(&self) -> Option<(u8, u8)> {
        match self.transport {
            Transport::IcmpEcho { .. } | Transport::IcmpError(_) | Transport::IcmpOther => {
                Some((self.buf[self.l4_off], self.buf[self.l4_off + 1]))
            }
            _ => None,
        }
    }
    /// The bytes after the transport header (after the 8-byte ICMP header
    /// for ICMP; after the IP headers for other protocols).
    pub fn payload(&self) -> &[u8] {
        let start = match self.transport {
            Transport::Tcp => self.l4_off + usize::from(self.buf[self.l4_off + 12] >> 4) * 4,
            Transport::Udp
            | Transport::IcmpEcho { .. }
            | Transport::IcmpError(_)
            | Transport::IcmpOther => self.l4_off + 8,
            Transport::Other => self.l4_off,
        };
        &self.buf[start..]
    }

    pub fn quote(&self) -> Option<Quote> {
        match self.transport {
            Transport::IcmpError(q) => Some(q),
            _ => None,
        }
    }
    pub fn quoted_src(&self) -> Option<IpAddr> {
        self.quote()
            .map(|q| self.addr_at(q.ip_off + Self::src_off(q.v6), q.v6))
    }
    pub fn quoted_dst(&self) -> Option<IpAddr> {
        self.quote()
            .map(|q| self.addr_at(q.ip_off + Self::dst_off(q.v6), q.v6))
    }
    /// Source port (or echo identifier) of the quoted packet.
    pub fn quoted_src_port(&self) -> Option<u16> {
        let q = self.quote()?;
        match q.kind {
            QuotedKind::Tcp | QuotedKind::Udp => Some(be16(self.buf, q.l4_off)),
            QuotedKind::IcmpEcho => Some(be16(self.buf, q.l4_off + 4)),
            QuotedKind::Other => None,
        }
    }
    /// Destination port (or echo identifier) of the quoted packet.
    pub fn quoted_dst_port(&self) -> Option<u16> {
        let q = self.quote()?;
        match q.kind {
            QuotedKind::Tcp | QuotedKind::Udp => Some(be16(self.buf, q.l4_off + 2)),
            QuotedKind::IcmpEcho => Some(be16(self.buf, q.l4_off + 4)),
            QuotedKind::Other => None,
        }
    }

    // ---- low-level writers: each returns the checksum delta it caused ----

    /// Writes `new` at `off` (4 or 16 bytes) and returns the delta.
    fn write_addr(&mut self, off: usize, new: IpAddr) -> Delta {
        match new {
            IpAddr::V4(a) => self.write_bytes(off, &a.octets()),
            IpAddr::V6(a) => self.write_bytes(off, &a.octets()),
        }
    }
    fn write_bytes(&mut self, off: usize, new: &[u8]) -> Delta {
        let field = &mut self.buf[off..off + new.len()];
        let d = Delta::NONE.bytes(field, new);
        field.copy_from_slice(new);
        d
    }
    fn write_word(&mut self, off: usize, new: u16) -> Delta {
        self.write_bytes(off, &new.to_be_bytes())
    }
    /// Applies `d` to the checksum at `off`; returns the delta of that
    /// checksum word itself (for checksums that cover it).
    fn adjust(&mut self, off: usize, d: Delta) -> Delta {
        let old = be16(self.buf, off);
        self.write_word(off, d.apply(old))
    }
    /// Like [`Self::adjust`] with the UDP rules.
    fn adjust_udp(&mut self, off: usize, d: Delta, v6: bool) -> Delta {
        let old = be16(self.buf, off);
        if !v6 && old == 0 {
            return Delta::NONE;
        }
        self.write_word(off, checksum::udp_wire(d.apply(old)))
    }

    /// An ICMPv4 checksum covers no pseudo-header, so an echo reply whose
    /// identifier, sequence number and data are all zero is an all-zero
    /// message, whose checksum is 0xffff; RFC 1624's equation 3 gives
    /// 0x0000 for it (the one sum it cannot get right), which receivers
    /// reject. Only checked when the checksum came out 0x0000.
    fn all_zero_icmpv4(&mut self, l4: usize) {
        if !self.v6 && be16(self.buf, l4 + 2) == 0 && self.buf[l4..].iter().all(|&b| b == 0) {
            self.write_word(l4 + 2, 0xffff);
        }
    }

    /// Folds an outer address change into the checksums that cover it.
    fn outer_addr_changed(&mut self, d: Delta) {
        if !self.v6 {
            self.adjust(10, d);
        }
        let l4 = self.l4_off;
        match self.transport {
            Transport::Tcp => {
                self.adjust(l4 + 16, d);
            }
            Transport::Udp => {
                self.adjust_udp(l4 + 6, d, self.v6);
            }
            Transport::IcmpEcho { .. } | Transport::IcmpError(_) | Transport::IcmpOther
                if self.v6 =>
            {
                self.adjust(l4 + 2, d);
            }
            _ => {}
        }
    }

    fn check_family(&self, v6: bool, addr: IpAddr) -> Result<(), TranslateError> {
        if addr.is_ipv6() == v6 {
            Ok(())
        } else {
            Err(TranslateError::FamilyMismatch)
        }
    }

    /// Sets the source address, updating the checksums that cover it.
    pub fn set_src(&mut self, addr: IpAddr) -> Result<(), TranslateError> {
        self.check_family(self.v6, addr)?;
        let d = self.write_addr(Self::src_off(self.v6), addr);
        self.outer_addr_changed(d);
        Ok(())
    }

    /// Sets the destination address, updating the checksums that cover it.
    pub fn set_dst(&mut self, addr: IpAddr) -> Result<(), TranslateError> {
        self.check_family(self.v6, addr)?;
        let d = self.write_addr(Self::dst_off(self.v6), addr);
        self.outer_addr_changed(d);
        Ok(())
    }

    fn set_port_at(&mut self, rel: usize, port: u16) -> Result<(), TranslateError> {
        let l4 = self.l4_off;
        match self.transport {
            Transport::Tcp => {
                let d = self.write_word(l4 + rel, port);
                self.adjust(l4 + 16, d);
            }
            Transport::Udp => {
                let d = self.write_word(l4 + rel, port);
                self.adjust_udp(l4 + 6, d, self.v6);
            }
            Transport::IcmpEcho { .. } => {
                let d = self.write_word(l4 + 4, port);
                self.adjust(l4 + 2, d);
                self.all_zero_icmpv4(l4);
            }
            _ => return Err(TranslateError::NoPorts),
        }
        Ok(())
    }

    /// Sets the TCP/UDP source port, or the ICMP echo identifier.
    pub fn set_src_port(&mut self, port: u16) -> Result<(), TranslateError> {
        self.set_port_at(0, port)
    }

    /// Sets the TCP/UDP destination port, or the ICMP echo identifier.
    pub fn set_dst_port(&mut self, port: u16) -> Result<(), TranslateError> {
        self.set_port_at(2, port)
    }

    /// Applies a quoted-packet change: `d` is the delta of the changed
    /// quoted words. `addr` says whether an address changed (covered by the
    /// quoted IPv4 header checksum and the quoted pseudo-header).
    fn quoted_changed(&mut self, q: Quote, d: Delta, addr: bool) {
        let mut outer = d;
        if addr && !q.v6 {
            outer = outer.combine(self.adjust(q.ip_off + 10, d));
        }
        match q.kind {
            QuotedKind::Tcp if q.l4_off + 18 <= q.end => {
                outer = outer.combine(self.adjust(q.l4_off + 16, d));
            }
            QuotedKind::Udp => {
                outer = outer.combine(self.adjust_udp(q.l4_off + 6, d, q.v6));
            }
            QuotedKind::IcmpEcho if !addr || q.v6 => {
                outer = outer.combine(self.adjust(q.l4_off + 2, d));
            }
            _ => {}
        }
        // The outer ICMP checksum covers every quoted byte.
        self.adjust(self.l4_off + 2, outer);
    }

    fn quote_or_err(&self) -> Result<Quote, TranslateError> {
        self.quote().ok_or(TranslateError::NotIcmpError)
    }

    /// Sets the source address of the quoted packet.
    pub fn set_quoted_src(&mut self, addr: IpAddr) -> Result<(), TranslateError> {
        let q = self.quote_or_err()?;
        self.check_family(q.v6, addr)?;
        let d = self.write_addr(q.ip_off + Self::src_off(q.v6), addr);
        self.quoted_changed(q, d, true);
        Ok(())
    }

    /// Sets the destination address of the quoted packet.
    pub fn set_quoted_dst(&mut self, addr: IpAddr) -> Result<(), TranslateError> {
        let q = self.quote_or_err()?;
        self.check_family(q.v6, addr)?;
        let d = self.write_addr(q.ip_off + Self::dst_off(q.v6), addr);
        self.quoted_changed(q, d, true);
        Ok(())
    }

    fn set_quoted_port_at(&mut self, rel: usize, port: u16) -> Result<(), TranslateError> {
        let q = self.quote_or_err()?;
        let off = match q.kind {
            QuotedKind::Tcp | QuotedKind::Udp => q.l4_off + rel,
            QuotedKind::IcmpEcho => q.l4_off + 4,
            QuotedKind::Other => return Err(TranslateError::NoPorts),
        };
        let d = self.write_word(off, port);
        self.quoted_changed(q, d, false);
        Ok(())
    }

    /// Sets the source port (or echo identifier) of the quoted packet.
    pub fn set_quoted_src_port(&mut self, port: u16) -> Result<(), TranslateError> {
        self.set_quoted_port_at(0, port)
    }

    /// Sets the destination port (or echo identifier) of the quoted packet.
    pub fn set_quoted_dst_port(&mut self, port: u16) -> Result<(), TranslateError> {
        self.set_quoted_port_at(2, port)
    }
}

/// Largest quote in a generated ICMPv4 error: the error fits in 576 bytes
/// (RFC 1812 section 4.3.2.3).
const ICMPV4_MAX_QUOTE: usize = 576 - 28;
/// Largest quote in a generated ICMPv6 error: the error fits in the
/// minimum MTU of 1280 bytes (RFC 4443 section 2.4 (c)).
const ICMPV6_MAX_QUOTE: usize = 1280 - 48;

/// Builds the "destination unreachable" error answering `original` (a
/// packet a local sender sent to a service that could not be resolved):
/// ICMPv4 type 3 code 1 (host unreachable) or ICMPv6 type 1 code 3
/// (address unreachable), from the address the sender dialled back to the
/// sender, quoting as much of `original` as RFC 1812 / RFC 4443 allow.
///
/// The error appears to come from the dialled address itself: a client's
/// kernel matches an ICMP error to its socket through the quoted packet,
/// not the outer source, and the node has no address of its own inside
/// the instances' network to use instead.
///
/// Returns `None` when `original` is not a valid packet, or is itself an
/// ICMP error (RFC 1122 3.2.2: never answer an error with an error).
/// The checksums of the new packet are computed in full: it is new, not a
/// translation.
///
/// Rate limiting (RFC 1812, RFC 4443 2.4 (f)) is the caller's business: the
/// core emits one error per dropped packet and the queue bound limits how
/// many a single failed resolution can cause.
pub fn icmp_unreachable(original: &[u8]) -> Option<Vec<u8>> {
    let mut copy = original.to_vec();
    let p = IpPacket::new_checked(&mut copy).ok()?;
    if p.quote().is_some() {
        return None;
    }
    let (from, to) = (p.dst(), p.src());
    let quoted = p.as_bytes();
    match (from, to) {
        (IpAddr::V4(from), IpAddr::V4(to)) => {
            let q = &quoted[..quoted.len().min(ICMPV4_MAX_QUOTE)];
            let total = 20 + 8 + q.len();
            let mut out = Vec::with_capacity(total);
            out.extend_from_slice(&[0x45, 0]);
            // total <= 576, fits in u16.
            out.extend_from_slice(&(total as u16).to_be_bytes());
            out.extend_from_slice(&[0, 0, 0, 0, 64, proto::ICMP, 0, 0]);
            out.extend_from_slice(&from.octets());
            out.extend_from_slice(&to.octets());
            let c = checksum::checksum(0, &out[..20]);
            out[10..12].copy_from_slice(&c.to_be_bytes());
            out.extend_from_slice(&[3, 1, 0, 0, 0, 0, 0, 0]);
            out.extend_from_slice(q);
            let c = checksum::checksum(0, &out[20..]);
            out[22..24].copy_from_slice(&c.to_be_bytes());
            Some(out)
        }
        (IpAddr::V6(from), IpAddr::V6(to)) => {
            let q = &quoted[..quoted.len().min(ICMPV6_MAX_QUOTE)];
            let plen = 8 + q.len();
            let mut out = Vec::with_capacity(40 + plen);
            out.extend_from_slice(&[0x60, 0, 0, 0]);
            // plen <= 1240, fits in u16.
            out.extend_from_slice(&(plen as u16).to_be_bytes());
            out.extend_from_slice(&[proto::ICMPV6, 64]);
            out.extend_from_slice(&from.octets());
            out.extend_from_slice(&to.octets());
            out.extend_from_slice(&[1, 3, 0, 0, 0, 0, 0, 0]);
            out.extend_from_slice(q);
            let ph =
                checksum::pseudo_header_sum(from.into(), to.into(), proto::ICMPV6, plen as u32);
            let c = checksum::checksum(ph, &out[40..]);
            out[42..44].copy_from_slice(&c.to_be_bytes());
            Some(out)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests;
