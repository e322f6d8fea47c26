//! From decoded frames to a [`Trace`]: frames grouped by identity into
//! chains, each chain ordered along the wiring ([`super::path`]),
//! attributed to the step whose client sent it, rendered
//! ([`super::render`]), and a comment per frame for the pcapng. It knows
//! the scenario only through its hosts, links, addresses and steps.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;
use std::hash::{Hash, Hasher};
use std::net::IpAddr;

use hoplab_dataplane::netmanager::core::TUNNEL_PORT;
use hoplab_dataplane::wire::{Summary, L4};

use super::path::{path_order, Wiring, TIMESTAMP_JITTER_NS};
use super::render::{render, RelSeq};
use super::{Dir, Flow, Packet, Place, StepResult, Trace};
use crate::capture::{parse_frame, Captured};
use crate::scenario::{Proto, Scenario};

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
    s.payload.hash(&mut h);
    h.finish()
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

/// The step a packet belongs to: it has a hop on the step's host with the
/// step's protocol and source port (ICMP: echo identifier) on the client side.
struct StepKey {
    host: String,
    proto: Proto,
    port: u16,
}

fn belongs(k: &StepKey, hops: &[&Seen]) -> Option<bool> {
    for h in hops.iter().filter(|h| h.at.host == k.host) {
        let s = &h.s;
        let hit = match (k.proto, &s.l4) {
            (Proto::Tcp, L4::Tcp { sport, dport, .. }) | (Proto::Udp, L4::Udp { sport, dport }) => {
                if *sport == k.port && h.outgoing() {
                    return Some(true);
                }
                *dport == k.port && !h.outgoing()
            }
            (Proto::Icmp, L4::Icmp { .. }) => s.echo_id() == Some(k.port),
            // An ICMP error about the step's own packet, on its way back.
            (Proto::Tcp | Proto::Udp, L4::Icmp { .. }) => {
                let want = if k.proto == Proto::Tcp { 6 } else { 17 };
                if s.quoted_ports()
                    .is_some_and(|(p, sport, _)| p == want && sport == k.port)
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

/// Outcome of one step, filled in by the run (or unknown for `hoplab trace`).
pub struct StepReport {
    pub sent: String,
    pub result: StepResult,
}

/// Build the trace of `frames` for scenario `sc`.
pub fn build(sc: &Scenario, frames: &[Captured], outcomes: &[StepReport]) -> Trace {
    build_annotated(sc, frames, outcomes).0
}

/// Build the trace of `frames` and, for each frame, the comment that names
/// its place in the trace (`flow STEP, packet N (...), hop I/J at ...`), or
/// why it has none (link chatter, undecodable). The comments go into the
/// pcapng, so that Wireshark shows each frame's flow and hop.
pub fn build_annotated(
    sc: &Scenario,
    frames: &[Captured],
    outcomes: &[StepReport],
) -> (Trace, Vec<Option<String>>) {
    let mut comments: Vec<Option<String>> = vec![None; frames.len()];
    let mut undecodable = 0;
    let mut seen = Vec::new();
    for (fi, f) in frames.iter().enumerate() {
        let parsed = parse_frame(f);
        // A tunnel datagram stands for the packet it carries.
        let parsed = parsed.map(|s| {
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

    // Chains of frames with one identity.
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
                cands.push(chains.len());
                chains.push(vec![i]);
            }
        }
    }
    let wiring = Wiring::of(sc);
    for c in &mut chains {
        path_order(&wiring, &seen, c);
    }
    chains.sort_by_key(|c| c.iter().map(|&i| seen[i].ts_ns).min());

    // Which host owns which address: to tell delivered from lost.
    let mut owner: HashMap<IpAddr, String> = HashMap::new();
    for l in &sc.links {
        for e in [&l.a, &l.b] {
            for a in &e.addr {
                owner.insert(a.addr, e.host.clone());
            }
        }
    }
    for (h, host) in &sc.hosts {
        for b in host.bridges.values() {
            for a in &b.addr {
                owner.insert(a.addr, h.clone());
            }
        }
    }

    let keys: Vec<StepKey> = sc
        .traffic
        .iter()
        .enumerate()
        .map(|(i, s)| StepKey {
            host: s.from.clone(),
            proto: s.proto,
            port: s.source_port(i),
        })
        .collect();
    let mut per_step: Vec<Vec<(Vec<&Seen>, bool)>> = vec![Vec::new(); keys.len()];
    let mut other = Vec::new();
    for c in &chains {
        let hops: Vec<&Seen> = c.iter().map(|&i| &seen[i]).collect();
        match keys
            .iter()
            .enumerate()
            .find_map(|(k, key)| belongs(key, &hops).map(|d| (k, d)))
        {
            Some((k, from_client)) => per_step[k].push((hops, from_client)),
            None => other.push(hops),
        }
    }

    let flows = sc
        .traffic
        .iter()
        .enumerate()
        .map(|(i, step)| {
            let (sent, result) = match outcomes.get(i) {
                Some(o) => (o.sent.clone(), o.result.clone()),
                None => (
                    format!("{} from {} to {}", step.proto, step.from, step.to),
                    StepResult::Unknown,
                ),
            };
            let mut rel = RelSeq::default();
            let packets = per_step[i]
                .iter()
                .enumerate()
                .map(|(n, (hops, fwd))| {
                    let p = render(hops, Some((&mut rel, *fwd)), &owner);
                    annotate(&mut comments, &format!("flow {}", step.name), n, hops, &p);
                    p
                })
                .collect();
            Flow {
                step: step.name.clone(),
                sent,
                result,
                packets,
            }
        })
        .collect();
    let other = other
        .iter()
        .enumerate()
        .map(|(n, hops)| {
            let p = render(hops, None, &owner);
            annotate(&mut comments, "no flow", n, hops, &p);
            p
        })
        .collect();
    let trace = Trace {
        scenario: sc.name.clone(),
        flows,
        other,
        undecodable,
        control_plane: Vec::new(),
        counters: BTreeMap::new(),
    };
    (trace, comments)
}

/// Comment each frame of packet `n` (0-based) of `flow` with its hop.
fn annotate(comments: &mut [Option<String>], flow: &str, n: usize, hops: &[&Seen], p: &Packet) {
    let total = p.hops.len();
    for (i, (seen, hop)) in hops.iter().zip(&p.hops).enumerate() {
        let mut c = format!(
            "{flow}, packet {} ({}), hop {}/{total} at {}",
            n + 1,
            p.packet,
            i + 1,
            hop.at
        );
        if let Some(ch) = &hop.changed {
            let _ = write!(c, ": {ch}");
        }
        if i + 1 == total {
            let _ = write!(c, "; {}", p.end);
        }
        comments[seen.frame] = Some(c);
    }
}
