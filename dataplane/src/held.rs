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
        Some(6) => v6_headers(packet),
        _ => 40,
    };
    packet[..packet.len().min(headers + L4_QUOTED)].to_vec()
}

/// The length of an IPv6 packet's headers: the fixed header and the
/// extension headers up to the transport, the fragment header included.
fn v6_headers(p: &[u8]) -> usize {
    let (mut nh, mut off) = (p.get(6).copied().unwrap_or(59), 40);
    for _ in 0..MAX_EXTENSIONS {
        match nh {
            0 | 43 | 60 => match (p.get(off), p.get(off + 1)) {
                (Some(&next), Some(&len)) => {
                    (nh, off) = (next, off + (usize::from(len) + 1) * 8);
                }
                _ => break,
            },
            44 => return off + 8,
            _ => break,
        }
    }
    off
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
