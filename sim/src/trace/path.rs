//! Frames into packets' paths: frames with one identity (fields no hop
//! rewrites), close in time and on distinct interfaces, form one packet's
//! path; each path is ordered by TTL, then the wiring (veth peers, bridge
//! ports, TUNs, tunnel endpoints), then timestamps. It knows the lab's
//! wiring ([`LabView`]); nothing of steps or rendering.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};

use hoplab_dataplane::wire::{Summary, L4};

use super::decode::Seen;
use super::view::LabView;

/// The paths of `seen` (sorted by timestamp): each a list of indices into
/// `seen` in path order, the paths ordered by their first frame's time,
/// then each TCP connection's put in its canonical order
/// ([`super::order`]).
pub(super) fn paths(lab: &LabView, seen: &[Seen]) -> Vec<Vec<usize>> {
    let mut chains: Vec<Vec<usize>> = Vec::new();
    let mut open: HashMap<u64, Vec<usize>> = HashMap::new(); // identity -> chain ids
    for (i, f) in seen.iter().enumerate() {
        let id = identity(&f.s);
        let cands = open.entry(id).or_default();
        let fits = cands.iter().rev().copied().find(|&c| {
            let chain = &chains[c];
            let last = &seen[*chain.last().expect("non-empty")];
            let close = f.ts_ns.saturating_sub(last.ts_ns) < TIMESTAMP_JITTER_NS;
            (f.s.ttl <= last.s.ttl || close) && !chain.iter().any(|&j| seen[j].at == f.at)
        });
        match fits {
            Some(c) => chains[c].push(i),
            None => {
                if cands.len() == MAX_OPEN {
                    // Packets that all look alike (one payload, IP ID 0):
                    // only the latest can still be on their way.
                    cands.remove(0);
                }
                cands.push(chains.len());
                chains.push(vec![i]);
            }
        }
    }
    for c in &mut chains {
        path_order(lab, seen, c);
    }
    chains.sort_by_key(|c| c.iter().map(|&i| seen[i].ts_ns).min());
    super::order::canonical(lab, seen, &mut chains);
    chains
}

/// How many paths of one identity stay open for further frames: the
/// latest ones. Bounds the work per frame when many packets share an
/// identity (a flood of equal datagrams), so paths are found in linear
/// time.
const MAX_OPEN: usize = 16;

/// What a packet keeps on every hop: the IPv4 identification (IPv6 flow
/// label), TCP sequence and acknowledgement numbers and flags, the ICMP
/// type, code and echo sequence, and the payload (an ICMP error's: what
/// NAT leaves of its quote, [`quote_identity`]).
fn identity(s: &Summary) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    s.src.is_ipv4().hash(&mut h);
    s.ident.hash(&mut h);
    match &s.l4 {
        L4::Tcp {
            seq, ack, flags, ..
        } => (6u8, seq, ack, flags).hash(&mut h),
        L4::Udp { .. } => 17u8.hash(&mut h),
        // Not the identifier: NAT may change it.
        L4::Icmp { ty, code, rest, .. } => (1u8, ty, code, rest[2], rest[3]).hash(&mut h),
        L4::Other { proto } => (255u8, proto).hash(&mut h),
    }
    match s.quoted_ports() {
        Some((proto, _, _)) => quote_identity(s.src.is_ipv4(), proto, &s.payload, &mut h),
        None => s.payload.hash(&mut h),
    }
    h.finish()
}

/// What an ICMP error keeps of its quote on every hop: NAT on the way
/// (the kernel's, the gateway's translation) rewrites the quoted packet's
/// addresses, ports (an echo's identifier) and checksums as it rewrites
/// the error's own header, and nothing else of it. So the quoted IP header
/// without addresses, TTL and checksum, its transport header without
/// ports and checksum, and the bytes after it.
fn quote_identity(v4: bool, proto: u8, q: &[u8], h: &mut impl Hasher) {
    let part = |a: usize, b: usize| q.get(a.min(q.len())..b.min(q.len())).unwrap_or(&[]);
    let l4 = if v4 {
        let ihl = usize::from(q.first().map_or(0, |b| b & 0x0f)) * 4;
        (part(0, 8), q.get(9), part(20, ihl)).hash(h);
        ihl
    } else {
        part(0, 7).hash(h);
        40
    };
    // The ranges of the transport header NAT rewrites.
    let skip: &[(usize, usize)] = match proto {
        6 => &[(0, 4), (16, 18)],
        17 => &[(0, 4), (6, 8)],
        1 | 58 => &[(2, 6)],
        _ => &[],
    };
    let mut at = l4;
    for &(a, b) in skip {
        part(at, l4 + a).hash(h);
        at = l4 + b;
    }
    part(at, q.len()).hash(h);
}

/// Must frame `a` come before frame `b` on one packet's path (same TTL)?
fn before(lab: &LabView, a: &Seen, b: &Seen) -> bool {
    let ka = (a.at.host.clone(), a.at.ifname.clone());
    let kb = (b.at.host.clone(), b.at.ifname.clone());
    if a.outgoing() && !b.outgoing() && lab.peer.get(&ka) == Some(&kb) {
        return true; // across a veth pair
    }
    if a.at.host != b.at.host {
        return false;
    }
    if ka == kb {
        // A TUN hands the packet to its reader, which writes it back.
        return a.outgoing() && !b.outgoing();
    }
    if a.outgoing() == b.outgoing() && a.outer.is_some() != b.outer.is_some() {
        // A tunnel endpoint: read from the TUN, then sent encapsulated;
        // received encapsulated, then written to the TUN.
        return a.outer.is_some() != a.outgoing();
    }
    let port_of = |p: &(String, String), br: &(String, String)| lab.port_of.get(p) == Some(&br.1);
    match (a.outgoing(), b.outgoing()) {
        (false, true) => true,               // in, then forwarded out
        (false, false) => port_of(&ka, &kb), // up from a port to its bridge
        (true, true) => port_of(&kb, &ka),   // down from a bridge to a port
        (true, false) => false,
    }
}

/// How far apart in time two frames of one packet may be captured out of
/// path order. A frame's timestamp is taken when the capture socket gets
/// its copy, which across namespaces and CPUs can come tens of
/// microseconds after the copy of a later hop; a resent packet (same
/// identity) comes at least a retransmission timeout later.
const TIMESTAMP_JITTER_NS: u64 = 1_000_000;

/// Order one packet's frames along its path. Kernel timestamps alone do not
/// do it: a frame seen on a bridge port and on the bridge carries one
/// timestamp. TTL only goes down; within one TTL, frames follow the wiring
/// (out on a veth before in on its peer, in before out on a host, port
/// before bridge on the way in, bridge before port on the way out); the
/// timestamps order what the wiring leaves open.
fn path_order(lab: &LabView, seen: &[Seen], chain: &mut Vec<usize>) {
    chain.sort_by_key(|&i| (std::cmp::Reverse(seen[i].s.ttl), seen[i].ts_ns));
    let mut out = Vec::with_capacity(chain.len());
    let mut i = 0;
    while i < chain.len() {
        let ttl = seen[chain[i]].s.ttl;
        let mut rest: Vec<usize> = chain[i..]
            .iter()
            .copied()
            .take_while(|&j| seen[j].s.ttl == ttl)
            .collect();
        i += rest.len();
        while !rest.is_empty() {
            // The earliest frame that no other frame left must precede.
            let pick = rest
                .iter()
                .position(|&a| {
                    !rest
                        .iter()
                        .any(|&b| b != a && before(lab, &seen[b], &seen[a]))
                })
                .unwrap_or(0);
            out.push(rest.remove(pick));
        }
    }
    *chain = out;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An ICMP port unreachable quoting a UDP datagram, as its sender
    /// wrote it (`quoted` addresses and ports) with quote IP ID `id`.
    fn error(src: [u8; 4], dst: [u8; 4], quoted: ([u8; 4], u16, [u8; 4], u16), id: u16) -> Summary {
        let mut inner = Vec::new();
        etherparse::PacketBuilder::ipv4(quoted.0, quoted.2, 63)
            .udp(quoted.1, quoted.3)
            .write(&mut inner, b"hello")
            .unwrap();
        inner[4..6].copy_from_slice(&id.to_be_bytes());
        let mut v = Vec::new();
        etherparse::PacketBuilder::ipv4(src, dst, 64)
            .icmpv4(etherparse::Icmpv4Type::DestinationUnreachable(
                etherparse::icmpv4::DestUnreachableHeader::Port,
            ))
            .write(&mut v, &inner)
            .unwrap();
        hoplab_dataplane::wire::parse_ip(&v).unwrap()
    }

    /// The same error before and after a NAT that rewrote its header and
    /// its quote's addresses, ports and checksums is one packet; an error
    /// about another datagram is not.
    #[test]
    fn an_icmp_error_keeps_its_identity_across_nat() {
        let at_service = error(
            [10, 30, 30, 30],
            [10, 30, 255, 253],
            ([10, 30, 255, 253], 40000, [10, 30, 30, 30], 53),
            7,
        );
        let at_client = error(
            [10, 30, 255, 253],
            [93, 6, 1, 78],
            ([93, 6, 1, 78], 40000, [24, 0, 5, 8], 5353),
            7,
        );
        assert_ne!(at_service.payload, at_client.payload);
        assert_eq!(identity(&at_service), identity(&at_client));
        let other = error(
            [10, 30, 30, 30],
            [10, 30, 255, 253],
            ([10, 30, 255, 253], 40000, [10, 30, 30, 30], 53),
            8,
        );
        assert_ne!(identity(&at_service), identity(&other));
    }
}
