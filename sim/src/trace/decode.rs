//! Captured frames decoded into what the trace follows: each frame's IP
//! packet (a tunnel datagram, UDP to or from port 50103 over IPv4 or
//! IPv6, stands for the packet it carries, its own headers kept beside
//! it) and where it was seen, link chatter left out; a later fragment's
//! header the kernel rewrote under the capture is mended from its
//! datagram's first fragment ([`mend_fragments`]).
//! It knows frames and headers; nothing of paths, steps or rendering.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;

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
    /// A later fragment whose addresses, TTL or identification were taken
    /// from its datagram's first fragment ([`mend_fragments`]): the
    /// capture's bytes differ from what the trace shows.
    pub(super) mended: bool,
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
                mended: false,
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
    mend_fragments(&mut seen);
    (seen, undecoded)
}

/// A fragment after the first that the kernel held for reassembly
/// (conntrack's defrag) may be captured with the header of its next hop:
/// when the kernel cuts the datagram again on the way out, its fast path
/// writes the new headers into the held fragments' buffers, which the
/// capture's clone shares until the capture copies it, so what the copy
/// shows depends on timing (IPv6 then shows the next hop's new fragment
/// identification too). The first fragment is copied by the kernel
/// before it is changed, and all fragments of a datagram cross a hop with
/// one header: so a later fragment takes its addresses, TTL and
/// identification from the first fragment of its datagram (same family,
/// protocol and identification) last seen at the same place, or else from
/// the last first fragment of that family and protocol seen there less
/// than [`FRAGMENT_GAP_NS`] before it. Only TCP and UDP datagrams, whose
/// first fragment shows its ports. The time bound does not hold on a
/// loaded machine, so a later fragment whose header is that of a first
/// fragment its host sent out (addresses, protocol, identification) is
/// mended from the last first fragment at its place however long before:
/// that header is the next hop's, written by the kernel.
fn mend_fragments(seen: &mut [Seen]) {
    type Key = (Place, bool, u8);
    let mut first: HashMap<(Key, u32), usize> = HashMap::new();
    let mut latest: HashMap<Key, usize> = HashMap::new();
    let sent_first: HashSet<(&str, IpAddr, IpAddr, u8, u32)> = (seen.iter())
        .filter(|f| f.outgoing())
        .filter_map(|f| match f.s.l4 {
            L4::Tcp { .. } => Some((f.at.host.as_str(), f.s.src, f.s.dst, 6, f.s.frag?)),
            L4::Udp { .. } => Some((f.at.host.as_str(), f.s.src, f.s.dst, 17, f.s.frag?)),
            _ => None,
        })
        .collect();
    let rewritten: Vec<bool> = (seen.iter())
        .map(|f| match (&f.s.l4, f.s.frag) {
            (L4::Other { proto }, Some(id)) => {
                sent_first.contains(&(f.at.host.as_str(), f.s.src, f.s.dst, *proto, id))
            }
            _ => false,
        })
        .collect();
    for i in 0..seen.len() {
        let s = &seen[i].s;
        let Some(id) = s.frag else { continue };
        let (proto, is_first) = match s.l4 {
            L4::Tcp { .. } => (6, true),
            L4::Udp { .. } => (17, true),
            L4::Other { proto } => (proto, false),
            L4::Icmp { .. } => continue,
        };
        let key = (seen[i].at.clone(), s.src.is_ipv6(), proto);
        if is_first {
            first.insert((key.clone(), id), i);
            latest.insert(key, i);
            continue;
        }
        let near = |&f: &usize| {
            rewritten[i] || seen[i].ts_ns.saturating_sub(seen[f].ts_ns) < FRAGMENT_GAP_NS
        };
        let from = first
            .get(&(key.clone(), id))
            .or_else(|| latest.get(&key).filter(|f| near(f)));
        if let Some(&f) = from {
            let h = &seen[f].s;
            let first = (h.src, h.dst, h.ttl, h.frag);
            let later = &mut seen[i];
            let s = &mut later.s;
            if (s.src, s.dst, s.ttl, s.frag) != first {
                (s.src, s.dst, s.ttl, s.frag) = first;
                later.mended = true;
            }
        }
    }
}

/// How long after a datagram's first fragment its later fragments are
/// taken to cross the same place (they leave one after the other).
const FRAGMENT_GAP_NS: u64 = 1_000_000;

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

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// A fragment of a datagram from `fdff:2000::30` seen at `gw/IFNAME`.
    fn fragment(ts_ns: u64, at: (&str, Dir), l4: L4, dst: &str, ttl: u8, frag: u32) -> Seen {
        Seen {
            frame: 0,
            ts_ns,
            at: Place {
                host: "gw".into(),
                ifname: at.0.into(),
                dir: at.1,
            },
            s: Summary {
                src: ip("fdff:2000::30"),
                dst: ip(dst),
                ttl,
                len: 1448,
                ident: 0,
                l4,
                payload: Vec::new(),
                frag: Some(frag),
            },
            outer: None,
            mended: false,
        }
    }

    const UDP: L4 = L4::Udp {
        sport: 53,
        dport: 40001,
    };
    const LATER: L4 = L4::Other { proto: 17 };

    fn headers(seen: &[Seen]) -> Vec<(IpAddr, u8, Option<u32>, bool)> {
        (seen.iter())
            .map(|f| (f.s.dst, f.s.ttl, f.s.frag, f.mended))
            .collect()
    }

    /// A later fragment captured with its next hop's header (addresses,
    /// TTL, IPv6 identification) is mended from its datagram's first
    /// fragment at the same place; one far from any first fragment, or at
    /// another place, is left alone.
    #[test]
    fn a_later_fragment_takes_the_header_of_its_first_fragment_at_its_place() {
        let mut seen = vec![
            fragment(1_000, ("nm0", Dir::In), UDP, "fdff:7fff::fffd", 63, 7),
            fragment(2_000, ("nm0", Dir::In), LATER, "2001:db8::1", 62, 9),
            fragment(3_000, ("gw0", Dir::In), LATER, "2001:db8::1", 62, 9),
            fragment(9_000_000, ("nm0", Dir::In), LATER, "2001:db8::1", 62, 9),
        ];
        mend_fragments(&mut seen);
        let v6 = ip("fdff:7fff::fffd");
        let next = ip("2001:db8::1");
        assert_eq!(
            headers(&seen),
            [
                (v6, 63, Some(7), false),
                (v6, 63, Some(7), true),
                (next, 62, Some(9), false),
                (next, 62, Some(9), false),
            ]
        );
    }

    /// On a loaded machine a later fragment may be copied long after its
    /// first: one whose header is that of a first fragment its host sent
    /// out is mended whatever the time between.
    #[test]
    fn a_later_fragment_with_a_header_its_host_sent_is_mended_however_late() {
        let mut seen = vec![
            fragment(1_000, ("gw0", Dir::In), UDP, "fdff:7fff::fffd", 62, 7),
            fragment(2_000, ("pub", Dir::Out), UDP, "2001:db8::1", 61, 9),
            fragment(9_000_000, ("gw0", Dir::In), LATER, "2001:db8::1", 61, 9),
            fragment(9_001_000, ("pub", Dir::Out), LATER, "2001:db8::1", 61, 9),
        ];
        mend_fragments(&mut seen);
        let (v6, next) = (ip("fdff:7fff::fffd"), ip("2001:db8::1"));
        assert_eq!(
            headers(&seen),
            [
                (v6, 62, Some(7), false),
                (next, 61, Some(9), false),
                (v6, 62, Some(7), true),
                (next, 61, Some(9), false),
            ]
        );
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
