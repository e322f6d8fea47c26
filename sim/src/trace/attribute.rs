//! Which step each packet's path belongs to: the step whose client sent
//! or received it (by host, protocol and port, ICMP errors by what they
//! quote); else, for a path with no hop on its step's client, the one
//! step seen with its addresses and ports; else, for a later fragment,
//! the step of its datagram. What is left belongs to no step. It knows
//! the lab only as a [`LabView`].

use std::collections::{BTreeMap, HashMap, HashSet};

use hoplab_dataplane::wire::L4;

use super::decode::Seen;
use super::path::paths;
use super::view::{LabView, Step};
use crate::values::Proto as StepProto;

/// The step a packet belongs to: it has a hop on the step's host with the
/// step's protocol and source port (ICMP: echo identifier) on the client
/// side. `Some(true)` when the packet comes from the client.
fn belongs(k: &Step, hops: &[&Seen]) -> Option<bool> {
    for h in hops.iter().filter(|h| h.at.host == k.host) {
        let s = &h.s;
        // A step that dials a name: its DNS query and answer, from its port.
        let dns = k.resolves && matches!(s.l4, L4::Udp { .. });
        let hit = match (k.proto, &s.l4) {
            (StepProto::Tcp, L4::Tcp { sport, dport, .. })
            | (StepProto::Udp, L4::Udp { sport, dport }) => {
                if k.has_port(*sport) && h.outgoing() {
                    return Some(true);
                }
                k.has_port(*dport) && !h.outgoing()
            }
            (StepProto::Tcp, L4::Udp { sport, dport }) if dns => {
                if *sport == k.port && h.outgoing() {
                    return Some(true);
                }
                *dport == k.port && !h.outgoing()
            }
            (StepProto::Icmp, L4::Icmp { .. }) => {
                // An ICMP error about the step's echo, on its way back.
                if quoted_echo_id(s) == Some(k.port) && !h.outgoing() {
                    return Some(false);
                }
                s.echo_id() == Some(k.port)
            }
            // An ICMP error about the step's own packet, on its way back.
            (StepProto::Tcp | StepProto::Udp, L4::Icmp { .. }) => {
                let want = if k.proto == StepProto::Tcp { 6 } else { 17 };
                if s.quoted_ports()
                    .is_some_and(|(p, sport, _)| p == want && k.has_port(sport))
                    && !h.outgoing()
                {
                    return Some(false);
                }
                false
            }
            _ => false,
        };
        if hit {
            // ICMP: a request leaves the client, a reply arrives at it.
            return Some(h.outgoing());
        }
    }
    None
}

/// For an ICMP error quoting an echo request or reply: the echo's
/// identifier.
fn quoted_echo_id(s: &hoplab_dataplane::wire::Summary) -> Option<u16> {
    let (proto, _, _) = s.quoted_ports()?;
    let q = &s.payload;
    let (l4, types) = match proto {
        1 => (usize::from(*q.first()? & 0x0f) * 4, [0, 8]),
        58 => (40, [128, 129]),
        _ => return None,
    };
    let e = q.get(l4..l4 + 6)?;
    types
        .contains(&e[0])
        .then(|| u16::from_be_bytes([e[4], e[5]]))
}

/// A packet's frames in path order, and whether it came from the client.
pub(super) type Path<'a> = (Vec<&'a Seen>, bool);

/// The datagram a fragment belongs to where it was seen: addresses,
/// protocol and identification.
type Datagram = (std::net::IpAddr, std::net::IpAddr, u8, u32);

fn datagram(h: &Seen) -> Option<Datagram> {
    let proto = match h.s.l4 {
        L4::Tcp { .. } => 6,
        L4::Udp { .. } => 17,
        L4::Icmp { v6, .. } => {
            if v6 {
                58
            } else {
                1
            }
        }
        L4::Other { proto } => proto,
    };
    Some((h.s.src, h.s.dst, proto, h.s.frag?))
}

/// A path with its step and whether it came from the client.
type Found<'a> = (Vec<&'a Seen>, Option<(usize, bool)>);

/// A TCP or UDP packet's addresses and ports where it was seen, and its
/// protocol.
type Ports = (std::net::IpAddr, u16, std::net::IpAddr, u16, bool);

fn ports(h: &Seen) -> Option<Ports> {
    match h.s.l4 {
        L4::Tcp { sport, dport, .. } => Some((h.s.src, sport, h.s.dst, dport, true)),
        L4::Udp { sport, dport } => Some((h.s.src, sport, h.s.dst, dport, false)),
        _ => None,
    }
}

/// The connections of the steps' paths, as far as the paths of no step
/// ask for them: each hop's addresses and ports that a path of no step
/// was seen with (either way) → the step and whether the path came from
/// the client, or `None` when paths of two steps were seen with them.
/// Its size follows the paths of no step, not the capture.
struct Conns(HashMap<Ports, Option<(usize, bool)>>);

impl Conns {
    fn of(found: &[Found]) -> Conns {
        let wanted: HashSet<Ports> = (found.iter())
            .filter(|(_, step)| step.is_none())
            .flat_map(|(hops, _)| hops.iter().filter_map(|h| ports(h)))
            .flat_map(|(s, sp, d, dp, tcp)| [(s, sp, d, dp, tcp), (d, dp, s, sp, tcp)])
            .collect();
        let mut m: HashMap<Ports, Option<(usize, bool)>> = HashMap::new();
        if wanted.is_empty() {
            return Conns(m);
        }
        for (hops, step) in found {
            let Some((k, from_client)) = *step else {
                continue;
            };
            for t in hops.iter().filter_map(|h| ports(h)) {
                if !wanted.contains(&t) {
                    continue;
                }
                let e = m.entry(t).or_insert(Some((k, from_client)));
                if e.is_some_and(|(k0, _)| k0 != k) {
                    *e = None;
                }
            }
        }
        Conns(m)
    }

    /// The step of a path none of whose hops is on its step's client (a
    /// reply the network dropped on its way back): the step whose path
    /// was seen with the same addresses and ports at one of its hops,
    /// the same way or reversed, if that is one step only.
    fn step_of(&self, hops: &[&Seen]) -> Option<(usize, bool)> {
        let mut found = None;
        for (s, sp, d, dp, tcp) in hops.iter().filter_map(|h| ports(h)) {
            let same = self.0.get(&(s, sp, d, dp, tcp)).copied();
            let back = self.0.get(&(d, dp, s, sp, tcp)).copied();
            for hit in [same, back.map(|o| o.map(|(k, f)| (k, !f)))]
                .into_iter()
                .flatten()
            {
                let hit = hit?;
                if found.is_some_and(|f| f != hit) {
                    return None;
                }
                found = Some(hit);
            }
        }
        found
    }
}

/// The paths of each step (in step order), and those of no step. A
/// fragment after the first (no ports) goes with its datagram: to the
/// step of a path that has a fragment of the same datagram (addresses,
/// protocol, identification) on one of its hops. A path that never
/// reached the step's client goes with the step whose path was seen with
/// the same addresses and ports ([`Conns`]).
pub(super) fn attribute<'a>(
    lab: &LabView,
    seen: &'a [Seen],
) -> (Vec<Vec<Path<'a>>>, Vec<Vec<&'a Seen>>) {
    let mut per_step: Vec<Vec<Path>> = vec![Vec::new(); lab.steps.len()];
    let mut other = Vec::new();
    let mut found: Vec<Found> = Vec::new();
    // Steps by (client host, protocol, port): a path is tried only
    // against the steps one of its hops could belong to, in step order.
    let mut by_key: BTreeMap<(&str, StepProto, u16), Vec<usize>> = BTreeMap::new();
    for (k, st) in lab.steps.iter().enumerate() {
        for n in 0..st.flows {
            let port = (u32::from(st.port) + n) as u16;
            by_key
                .entry((&st.host, st.proto, port))
                .or_default()
                .push(k);
        }
        if st.resolves && st.proto != StepProto::Udp {
            by_key
                .entry((&st.host, StepProto::Udp, st.port))
                .or_default()
                .push(k);
        }
    }
    for c in paths(lab, seen) {
        let hops: Vec<&Seen> = c.iter().map(|&i| &seen[i]).collect();
        let mut cands: Vec<usize> = Vec::new();
        for h in &hops {
            let host = h.at.host.as_str();
            let keys = match &h.s.l4 {
                L4::Tcp { sport, dport, .. } => {
                    vec![(StepProto::Tcp, *sport), (StepProto::Tcp, *dport)]
                }
                L4::Udp { sport, dport } => {
                    vec![(StepProto::Udp, *sport), (StepProto::Udp, *dport)]
                }
                L4::Icmp { .. } => {
                    let quoted = h.s.quoted_ports().and_then(|(p, sport, _)| match p {
                        6 => Some((StepProto::Tcp, sport)),
                        17 => Some((StepProto::Udp, sport)),
                        _ => quoted_echo_id(&h.s).map(|id| (StepProto::Icmp, id)),
                    });
                    (h.s.echo_id().map(|id| (StepProto::Icmp, id)).into_iter())
                        .chain(quoted)
                        .collect()
                }
                L4::Other { .. } => Vec::new(),
            };
            for (proto, port) in keys {
                cands.extend(by_key.get(&(host, proto, port)).into_iter().flatten());
            }
        }
        cands.sort_unstable();
        cands.dedup();
        let step = cands
            .iter()
            .find_map(|&k| belongs(&lab.steps[k], &hops).map(|d| (k, d)));
        found.push((hops, step));
    }
    let conns = Conns::of(&found);
    for (hops, step) in found.iter_mut() {
        if step.is_none() {
            *step = conns.step_of(hops);
        }
    }
    let mut datagrams: HashMap<Datagram, (usize, bool)> = HashMap::new();
    for (hops, step) in &found {
        if let Some(step) = step {
            for d in hops.iter().filter_map(|h| datagram(h)) {
                datagrams.entry(d).or_insert(*step);
            }
        }
    }
    for (hops, step) in found {
        let step =
            step.or_else(|| (hops.iter()).find_map(|h| datagrams.get(&datagram(h)?).copied()));
        match step {
            Some((k, from_client)) => per_step[k].push((hops, from_client)),
            None => other.push(hops),
        }
    }
    (per_step, other)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An ICMP error quoting an echo names the echo's identifier (both
    /// families); one quoting UDP does not.
    #[test]
    fn an_error_quoting_an_echo_names_its_identifier() {
        use hoplab_dataplane::wire::parse_ip;
        let error = |v6: bool, quote: &[u8]| {
            let mut p = Vec::new();
            if v6 {
                etherparse::PacketBuilder::ipv6([1; 16], [2; 16], 64)
                    .icmpv6(etherparse::Icmpv6Type::DestinationUnreachable(
                        etherparse::icmpv6::DestUnreachableCode::Address,
                    ))
                    .write(&mut p, quote)
            } else {
                etherparse::PacketBuilder::ipv4([10, 30, 40, 40], [10, 30, 255, 253], 64)
                    .icmpv4(etherparse::Icmpv4Type::DestinationUnreachable(
                        etherparse::icmpv4::DestUnreachableHeader::Host,
                    ))
                    .write(&mut p, quote)
            }
            .unwrap();
            parse_ip(&p).unwrap()
        };
        for v6 in [false, true] {
            let mut ping = Vec::new();
            if v6 {
                etherparse::PacketBuilder::ipv6([2; 16], [3; 16], 64)
                    .icmpv6_echo_request(4444, 1)
                    .write(&mut ping, b"ping")
            } else {
                etherparse::PacketBuilder::ipv4([10, 30, 255, 253], [10, 30, 40, 40], 64)
                    .icmpv4_echo_request(4444, 1)
                    .write(&mut ping, b"ping")
            }
            .unwrap();
            assert_eq!(quoted_echo_id(&error(v6, &ping)), Some(4444), "v6 {v6}");
        }
        let mut udp = Vec::new();
        etherparse::PacketBuilder::ipv4([10, 30, 255, 253], [10, 30, 40, 40], 64)
            .udp(4444, 53)
            .write(&mut udp, b"query")
            .unwrap();
        assert_eq!(quoted_echo_id(&error(false, &udp)), None);
    }
}
