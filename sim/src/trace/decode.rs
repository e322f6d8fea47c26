//! Captured frames decoded into what the trace follows: each frame's IP
//! packet (a tunnel datagram, UDP to or from port 50103 over IPv4 or
//! IPv6, stands for the packet it carries, its own headers kept beside
//! it) and where it was seen, link chatter left out.
//! It knows frames and headers; nothing of paths, steps or rendering.

use std::collections::BTreeMap;

use hoplab_dataplane::netmanager::core::TUNNEL_PORT;
use hoplab_dataplane::wire::{Summary, L4};

use super::{Dir, Place};
use crate::capture::{link_name, parse_frame, Captured, FrameError};

/// One frame decoded, with where it was seen.
pub(super) struct Seen {
    /// Index of the frame in the capture.
    pub(super) frame: usize,
    pub(super) ts_ns: u64,
    pub(super) at: Place,
    /// The packet: for a tunnel datagram, the inner packet.
    pub(super) s: Summary,
    /// The tunnel datagram's own headers, if `s` was seen encapsulated
    /// (its payload, the inner packet, dropped).
    pub(super) outer: Option<Summary>,
}

impl Seen {
    pub(super) fn outgoing(&self) -> bool {
        self.at.dir == Dir::Out
    }
}

/// Link chatter whose timing no scenario controls: IGMP, and ICMPv6
/// neighbour discovery, router and multicast-listener messages.
fn is_chatter(s: &Summary) -> bool {
    matches!(
        s.l4,
        L4::Icmp {
            v6: true,
            ty: 130..=143,
            ..
        } | L4::Other { proto: 2 }
    )
}

/// The frames read but not decoded, counted.
#[derive(Debug, Default)]
pub(super) struct Undecoded {
    /// Frames of link types hoplab does not decode, per link type.
    pub(super) links: BTreeMap<String, usize>,
    /// Frames that could not be decoded, per reason.
    pub(super) reasons: BTreeMap<String, usize>,
}

/// Distinct reasons counted apart; frames with any further reason are
/// counted together under [`OTHER_REASONS`], so that a hostile capture
/// cannot make the trace as long as itself.
const MAX_REASONS: usize = 20;
const OTHER_REASONS: &str = "other reasons";

impl Undecoded {
    fn count(&mut self, e: &FrameError) {
        let (map, key) = match e {
            FrameError::Unsupported(link) => (&mut self.links, link_name(*link)),
            FrameError::Malformed(why) => (&mut self.reasons, why.clone()),
        };
        let key = if map.len() < MAX_REASONS || map.contains_key(&key) {
            key
        } else {
            OTHER_REASONS.into()
        };
        *map.entry(key).or_default() += 1;
    }

    /// All frames not decoded.
    pub(super) fn total(&self) -> usize {
        self.links.values().chain(self.reasons.values()).sum()
    }
}

/// Every frame decoded, ordered by timestamp (a tunnel datagram stands for
/// the packet it carries), with a comment for each frame that is not
/// traced and those that could not be decoded, counted.
pub(super) fn decode(
    frames: &[Captured],
    comments: &mut [Option<String>],
) -> (Vec<Seen>, Undecoded) {
    let mut undecoded = Undecoded::default();
    let mut seen = Vec::new();
    for (fi, f) in frames.iter().enumerate() {
        let parsed = parse_frame(f).map(|s| {
            s.map(|s| match s.tunnelled(TUNNEL_PORT) {
                Some(inner) => {
                    let mut outer = s;
                    outer.payload = Vec::new();
                    (inner, Some(outer))
                }
                None => (s, None),
            })
        });
        match parsed {
            Ok(Some((s, outer))) if !is_chatter(&s) => seen.push(Seen {
                frame: fi,
                ts_ns: f.ts_ns,
                at: Place {
                    host: f.host.clone(),
                    ifname: f.ifname.clone(),
                    dir: if f.outgoing { Dir::Out } else { Dir::In },
                },
                s,
                outer,
            }),
            Ok(Some(_)) => comments[fi] = Some("link chatter (not traced)".into()),
            Ok(None) => comments[fi] = Some("not IP (not traced)".into()),
            Err(e) => {
                comments[fi] = Some(format!("undecodable: {e}"));
                undecoded.count(&e);
            }
        }
    }
    seen.sort_by_key(|s| s.ts_ns);
    (seen, undecoded)
}

#[cfg(test)]
mod tests {
    use pcap_file::DataLink;

    use super::*;

    /// A tunnel datagram over an IPv6 underlay stands for the IPv4 packet
    /// it carries, its IPv6 outer header kept beside it.
    #[test]
    fn a_tunnel_datagram_over_ipv6_is_opened() {
        let mut inner = Vec::new();
        etherparse::PacketBuilder::ipv4([10, 30, 2, 11], [10, 18, 0, 65], 63)
            .tcp(40000, 80, 7, 1000)
            .syn()
            .write(&mut inner, &[])
            .unwrap();
        let (a, b) = (
            [0xfd10, 0, 0, 0, 0, 0, 0, 1u16],
            [0xfd10, 0, 0, 0, 0, 0, 0, 2u16],
        );
        let octets = |s: [u16; 8]| std::net::Ipv6Addr::from(s).octets();
        let mut data = Vec::new();
        etherparse::PacketBuilder::ethernet2([2; 6], [4; 6])
            .ipv6(octets(a), octets(b), 64)
            .udp(TUNNEL_PORT, TUNNEL_PORT)
            .write(&mut data, &inner)
            .unwrap();
        let frame = Captured {
            ts_ns: 1,
            host: "n1".into(),
            ifname: "eth0".into(),
            outgoing: true,
            data,
            link: DataLink::ETHERNET,
        };
        let (seen, undecoded) = decode(&[frame], &mut [None]);
        assert_eq!(undecoded.total(), 0);
        let s = &seen[0];
        assert_eq!(s.s.dst, std::net::IpAddr::from([10, 18, 0, 65]));
        let outer = s.outer.as_ref().expect("opened");
        assert_eq!(outer.src, std::net::IpAddr::from(a));
        assert_eq!(outer.len, 40 + 8 + inner.len() as u16);
        assert!(outer.payload.is_empty());
    }

    /// Reasons are counted apart up to a bound, then together.
    #[test]
    fn undecodable_frames_are_counted_per_reason_up_to_a_bound() {
        let mut u = Undecoded::default();
        for i in 0..30 {
            u.count(&FrameError::Malformed(format!("reason {i}")));
            u.count(&FrameError::Malformed("reason 0".into()));
        }
        u.count(&FrameError::Unsupported(DataLink::IEEE802_11));
        assert_eq!(u.reasons.len(), MAX_REASONS + 1);
        assert_eq!(u.reasons["reason 0"], 31);
        assert_eq!(u.reasons[OTHER_REASONS], 10);
        assert_eq!(u.links["IEEE802_11"], 1);
        assert_eq!(u.total(), 61);
    }
}
