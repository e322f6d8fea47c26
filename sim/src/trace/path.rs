//! The order of one packet's frames along its path: TTL first, then the
//! wiring (veth peers, bridge ports, TUNs, tunnel endpoints), then
//! timestamps. It knows the scenario's links and bridges, nothing of steps
//! or rendering.

use std::collections::HashMap;

use super::build::Seen;
use crate::scenario::Scenario;

/// What the trace needs to know of the wiring: veth peers and bridge ports.
pub(super) struct Wiring {
    peer: HashMap<(String, String), (String, String)>,
    port_of: HashMap<(String, String), String>,
}

impl Wiring {
    pub(super) fn of(sc: &Scenario) -> Wiring {
        let mut w = Wiring {
            peer: HashMap::new(),
            port_of: HashMap::new(),
        };
        for l in &sc.links {
            let a = (l.a.host.clone(), l.a.ifname.clone());
            let b = (l.b.host.clone(), l.b.ifname.clone());
            w.peer.insert(a.clone(), b.clone());
            w.peer.insert(b, a);
            for e in [&l.a, &l.b] {
                if let Some(br) = &e.bridge {
                    w.port_of
                        .insert((e.host.clone(), e.ifname.clone()), br.clone());
                }
            }
        }
        w
    }

    /// Must frame `a` come before frame `b` on one packet's path (same TTL)?
    fn before(&self, a: &Seen, b: &Seen) -> bool {
        let ka = (a.at.host.clone(), a.at.ifname.clone());
        let kb = (b.at.host.clone(), b.at.ifname.clone());
        if a.outgoing() && !b.outgoing() && self.peer.get(&ka) == Some(&kb) {
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
        let port_of =
            |p: &(String, String), br: &(String, String)| self.port_of.get(p) == Some(&br.1);
        match (a.outgoing(), b.outgoing()) {
            (false, true) => true,               // in, then forwarded out
            (false, false) => port_of(&ka, &kb), // up from a port to its bridge
            (true, true) => port_of(&kb, &ka),   // down from a bridge to a port
            (true, false) => false,
        }
    }
}

/// How far apart in time two frames of one packet may be captured out of
/// path order. A frame's timestamp is taken when the capture socket gets
/// its copy, which across namespaces and CPUs can come tens of
/// microseconds after the copy of a later hop; a resent packet (same
/// identity) comes at least a retransmission timeout later.
pub(super) const TIMESTAMP_JITTER_NS: u64 = 1_000_000;

/// Order one packet's frames along its path. Kernel timestamps alone do not
/// do it: a frame seen on a bridge port and on the bridge carries one
/// timestamp. TTL only goes down; within one TTL, frames follow the wiring
/// (out on a veth before in on its peer, in before out on a host, port
/// before bridge on the way in, bridge before port on the way out); the
/// timestamps order what the wiring leaves open.
pub(super) fn path_order(w: &Wiring, seen: &[Seen], chain: &mut Vec<usize>) {
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
                .position(|&a| !rest.iter().any(|&b| b != a && w.before(&seen[b], &seen[a])))
                .unwrap_or(0);
            out.push(rest.remove(pick));
        }
    }
    *chain = out;
}
