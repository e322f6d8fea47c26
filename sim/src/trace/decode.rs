//! Captured frames decoded into what the trace follows: each frame's IP
//! packet (a tunnel datagram stands for the packet it carries, its own
//! headers kept beside it) and where it was seen, link chatter left out.
//! It knows frames and headers; nothing of paths, steps or rendering.

use hoplab_dataplane::netmanager::core::TUNNEL_PORT;
use hoplab_dataplane::wire::{Summary, L4};

use super::{Dir, Place};
use crate::capture::{parse_frame, Captured};

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

/// Every frame decoded, ordered by timestamp (a tunnel datagram stands for
/// the packet it carries), with a comment for each frame that is not
/// traced and the number that could not be decoded.
pub(super) fn decode(frames: &[Captured], comments: &mut [Option<String>]) -> (Vec<Seen>, usize) {
    let mut undecodable = 0;
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
                undecodable += 1
            }
        }
    }
    seen.sort_by_key(|s| s.ts_ns);
    (seen, undecodable)
}
