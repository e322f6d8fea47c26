//! Drops of packets a core held: a packet it had kept (queued behind a
//! service query, a fragment waiting for its datagram) and dropped later,
//! when the shell that handed it in no longer has it. Such a drop carries
//! the packet's quote — its IP headers and the first 8 bytes after them,
//! as an ICMP error quotes a packet — so the shell can name the packet in
//! its drop log as it names a packet it still holds.
//!
//! A drop of the packet being handed in needs none of this: the shell has
//! that packet. Drops are rare, so a quote is a small allocation made only
//! when a held packet is dropped, never on the forwarding path.
//!
//! It knows IP headers only; not the cores' reasons (a [`Held`] carries
//! either core's), the drop log's format or the trace.

use std::net::IpAddr;

/// IPv6 extension headers walked before the transport, at most.
const MAX_EXTENSIONS: usize = 8;
/// Bytes after the headers a quote keeps (ports, an echo's identifier).
const L4_QUOTED: usize = 8;

/// A held packet dropped for `reason`: where it had come from (`None`:
/// the TUN; a tunnel peer's underlay address) and its quote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held<R> {
    pub reason: R,
    pub from: Option<IpAddr>,
    pub quote: Vec<u8>,
}

/// The quote of the IP packet `packet`: its IPv4 header with options, or
/// its IPv6 header and extension headers up to the transport (or the
/// fragment header), then 8 more bytes; all of it if shorter. A packet
/// that is not IP is quoted up to its first 48 bytes.
pub fn quote(packet: &[u8]) -> Vec<u8> {
    let headers = match packet.first().map(|b| b >> 4) {
        Some(4) => usize::from(packet[0] & 0x0f) * 4,
        Some(6) => v6_transport(packet).1,
        _ => 40,
    };
    packet[..packet.len().min(headers + L4_QUOTED)].to_vec()
}

/// An IPv6 packet's transport protocol (the next header after the
/// hop-by-hop, routing, destination options and fragment headers), where
/// its header starts, and whether the packet is a fragment after the
/// first (whose data does not start with the transport header). The one
/// walk of extension headers for naming a packet (the drop log's identity,
/// a quote's length); [`crate::fragments`] validates its own.
pub fn v6_transport(ip: &[u8]) -> (u8, usize, bool) {
    let (mut nh, mut off) = (ip.get(6).copied().unwrap_or(59), 40);
    for _ in 0..MAX_EXTENSIONS {
        match (nh, ip.get(off), ip.get(off + 1)) {
            (0 | 43 | 60, Some(&next), Some(&len)) => {
                (nh, off) = (next, off + (usize::from(len) + 1) * 8);
            }
            (44, Some(&next), Some(_)) => {
                let later = ip
                    .get(off + 2..off + 4)
                    .is_some_and(|w| u16::from_be_bytes([w[0], w[1]]) & 0xfff8 != 0);
                return (next, off + 8, later);
            }
            _ => break,
        }
    }
    (nh, off, false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{build, L4};

    #[test]
    fn a_quote_is_the_headers_and_8_bytes_after() {
        let v4 = build(
            "10.18.0.2".parse().unwrap(),
            "10.30.1.1".parse().unwrap(),
            L4::Udp { sp: 40000, dp: 80 },
            &[7; 100],
        );
        assert_eq!(quote(&v4), v4[..28].to_vec());
        let mut v6 = build(
            "fd18::2".parse().unwrap(),
            "fdff::1:1".parse().unwrap(),
            L4::Udp { sp: 40000, dp: 80 },
            &[7; 100],
        );
        assert_eq!(quote(&v6), v6[..48].to_vec());
        // A destination-options header before the transport is quoted
        // with it.
        let udp = v6[40..].to_vec();
        v6.truncate(40);
        v6[6] = 60;
        v6.extend_from_slice(&[17, 0, 1, 4, 0, 0, 0, 0]);
        v6.extend_from_slice(&udp);
        assert_eq!(quote(&v6), v6[..56].to_vec());
        // Short: all of it.
        assert_eq!(quote(&v4[..24]), v4[..24].to_vec());
        assert!(quote(&[]).is_empty());
    }
}
