//! Captured frames decoded into what the trace follows: each frame's IP
//! packet (a tunnel datagram stands for the packet it carries, its own
//! headers kept beside it) and where it was seen, link chatter left out.
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
