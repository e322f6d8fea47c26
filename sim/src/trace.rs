//! From a pcapng to the per-hop trace of every packet of every flow.
//!
//! A packet keeps its identity across hops through fields no hop in these
//! scenarios rewrites: the IPv4 identification (IPv6 flow label), TCP raw
//! sequence and acknowledgement numbers and flags, the ICMP echo sequence,
//! and the payload bytes. Frames with the same identity, in kernel-timestamp
//! order, form one packet's path; a new path starts when the TTL goes up
//! (a fresh packet, such as an echo with the same bytes) or the same
//! interface and direction come again (a retransmission).
//!
//! Normalisation, so that a trace is the same on every run: TCP sequence
//! and acknowledgement numbers are relative to each direction's first
//! sequence number; checksums, IP IDs, flow labels, MAC addresses and
//! timestamps are left out; ARP and IPv6 neighbour/multicast-listener
//! chatter is left out.

use std::collections::HashMap;
use std::fs::File;
use std::hash::{Hash, Hasher};
use std::io::BufReader;
use std::net::IpAddr;
use std::path::Path;

use hoplab_dataplane::wire::{self, Summary, L4};
use pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketOption;
use pcap_file::pcapng::blocks::interface_description::InterfaceDescriptionOption;
use pcap_file::pcapng::{Block, PcapNgReader};
use pcap_file::DataLink;
use serde::{Deserialize, Serialize};

use crate::scenario::{Proto, Scenario};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trace {
    pub scenario: String,
    pub flows: Vec<Flow>,
    /// IP packets that belong to no traffic step.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub other: Vec<Packet>,
    /// Frames that could not be decoded (counted, not shown).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub undecodable: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flow {
    pub step: String,
    /// What the step did, e.g. `client: tcp 40001 -> 10.0.2.2:7, payload 5 B`.
    pub sent: String,
    /// What came back and whether that was expected.
    pub result: String,
    pub packets: Vec<Packet>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Packet {
    /// Headers as first seen, e.g. `tcp S 10.0.1.2:40001 > 10.0.2.2:7`.
    pub packet: String,
    pub hops: Vec<Hop>,
    /// Where the packet ended: delivered to a host, or last seen on a hop.
    pub end: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hop {
    /// `host/ifname in|out`.
    pub at: String,
    pub hdr: String,
    /// Fields that differ from the hop before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changed: Option<String>,
}

/// A frame read back from a pcapng.
#[derive(Debug, Clone)]
pub struct Captured {
    pub ts_ns: u64,
    pub host: String,
    pub ifname: String,
    pub outgoing: bool,
    pub data: Vec<u8>,
    pub link: DataLink,
}

#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error("{path}: {source}")]
    Open {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a readable pcapng: {source}")]
    Pcap {
        path: String,
        #[source]
        source: pcap_file::PcapError,
    },
    #[error("{path}: packet refers to interface {id}, which is not declared")]
    NoInterface { path: String, id: u32 },
}

/// Read every frame of a pcapng with its interface name and direction.
pub fn read_pcapng(path: &Path) -> Result<Vec<Captured>, TraceError> {
    let p = path.display().to_string();
    let f = File::open(path).map_err(|source| TraceError::Open {
        path: p.clone(),
        source,
    })?;
    let mut r = PcapNgReader::new(BufReader::new(f)).map_err(|source| TraceError::Pcap {
        path: p.clone(),
        source,
    })?;
    let mut ifaces: Vec<(String, String, DataLink)> = Vec::new();
    let mut out = Vec::new();
    while let Some(b) = r.next_block() {
        match b.map_err(|source| TraceError::Pcap {
            path: p.clone(),
            source,
        })? {
            Block::InterfaceDescription(idb) => {
                let name = idb
                    .options
                    .iter()
                    .find_map(|o| match o {
                        InterfaceDescriptionOption::IfName(n) => Some(n.to_string()),
                        _ => None,
                    })
                    .unwrap_or_else(|| format!("if{}", ifaces.len()));
                let (h, i) = name
                    .split_once('/')
                    .map(|(h, i)| (h.to_string(), i.to_string()))
                    .unwrap_or(("?".into(), name));
                ifaces.push((h, i, idb.linktype));
            }
            Block::EnhancedPacket(epb) => {
                let Some((host, ifname, link)) = ifaces.get(epb.interface_id as usize) else {
                    return Err(TraceError::NoInterface {
                        path: p,
                        id: epb.interface_id,
                    });
                };
                let outgoing = epb
                    .options
                    .iter()
                    .any(|o| matches!(o, EnhancedPacketOption::Flags(f) if f & 3 == 2));
                out.push(Captured {
                    ts_ns: epb.timestamp.as_nanos() as u64,
                    host: host.clone(),
                    ifname: ifname.clone(),
                    outgoing,
                    data: epb.data.to_vec(),
                    link: *link,
                });
            }
            _ => {}
        }
    }
    Ok(out)
}

/// One frame decoded, with where it was seen.
struct Seen {
    ts_ns: u64,
    at: String,
    host: String,
    ifname: String,
    outgoing: bool,
    s: Summary,
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

/// What the trace needs to know of the wiring: veth peers and bridge ports.
struct Wiring {
    peer: HashMap<(String, String), (String, String)>,
    port_of: HashMap<(String, String), String>,
}

impl Wiring {
    fn of(sc: &Scenario) -> Wiring {
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
        let ka = (a.host.clone(), a.ifname.clone());
        let kb = (b.host.clone(), b.ifname.clone());
        if a.outgoing && !b.outgoing && self.peer.get(&ka) == Some(&kb) {
            return true; // across a veth pair
        }
        if a.host != b.host {
            return false;
        }
        if ka == kb {
            // A TUN hands the packet to its reader, which writes it back.
            return a.outgoing && !b.outgoing;
        }
        let port_of =
            |p: &(String, String), br: &(String, String)| self.port_of.get(p) == Some(&br.1);
        match (a.outgoing, b.outgoing) {
            (false, true) => true,               // in, then forwarded out
            (false, false) => port_of(&ka, &kb), // up from a port to its bridge
            (true, true) => port_of(&kb, &ka),   // down from a bridge to a port
            (true, false) => false,
        }
    }
}

/// Order one packet's frames along its path. Kernel timestamps alone do not
/// do it: a frame seen on a bridge port and on the bridge carries one
/// timestamp. TTL only goes down; within one TTL, frames follow the wiring
/// (out on a veth before in on its peer, in before out on a host, port
/// before bridge on the way in, bridge before port on the way out); the
/// timestamps order what the wiring leaves open.
fn path_order(w: &Wiring, seen: &[Seen], chain: &mut Vec<usize>) {
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

/// The step a packet belongs to: it has a hop on the step's host with the
/// step's protocol and source port (ICMP: echo identifier) on the client side.
struct StepKey {
    host: String,
    proto: Proto,
    port: u16,
}

fn belongs(k: &StepKey, hops: &[&Seen]) -> Option<bool> {
    for h in hops.iter().filter(|h| h.host == k.host) {
        let s = &h.s;
        let hit = match (k.proto, &s.l4) {
            (Proto::Tcp, L4::Tcp { sport, dport, .. }) | (Proto::Udp, L4::Udp { sport, dport }) => {
                if *sport == k.port && h.outgoing {
                    return Some(true);
                }
                *dport == k.port && !h.outgoing
            }
            (Proto::Icmp, L4::Icmp { .. }) => s.echo_id() == Some(k.port),
            _ => false,
        };
        if hit {
            // ICMP: a request leaves the client, a reply arrives at it.
            return Some(h.outgoing);
        }
    }
    None
}

/// Outcome of one step, filled in by the run (or unknown for `hoplab trace`).
pub struct StepReport {
    pub sent: String,
    pub result: String,
}

/// Build the trace of `frames` for scenario `sc`.
pub fn build(sc: &Scenario, frames: &[Captured], outcomes: &[StepReport]) -> Trace {
    let mut undecodable = 0;
    let mut seen = Vec::new();
    for f in frames {
        let parsed = match f.link {
            DataLink::RAW => wire::parse_ip(&f.data).map(Some),
            _ => wire::parse_ethernet(&f.data),
        };
        match parsed {
            Ok(Some(s)) if !is_chatter(&s) => seen.push(Seen {
                ts_ns: f.ts_ns,
                at: format!(
                    "{}/{} {}",
                    f.host,
                    f.ifname,
                    if f.outgoing { "out" } else { "in" }
                ),
                host: f.host.clone(),
                ifname: f.ifname.clone(),
                outgoing: f.outgoing,
                s,
            }),
            Ok(_) => {}
            Err(_) => undecodable += 1,
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
            f.s.ttl <= last.s.ttl && !chain.iter().any(|&j| seen[j].at == f.at)
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
                    "unknown".into(),
                ),
            };
            let mut rel = RelSeq::default();
            let packets = per_step[i]
                .iter()
                .map(|(hops, fwd)| render(hops, Some((&mut rel, *fwd)), &owner))
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
        .map(|hops| render(hops, None, &owner))
        .collect();
    Trace {
        scenario: sc.name.clone(),
        flows,
        other,
        undecodable,
    }
}

/// Per-flow base sequence numbers, one per direction (client → server first).
#[derive(Default)]
struct RelSeq {
    base: [Option<u32>; 2],
}

impl RelSeq {
    fn rel(&mut self, s: &Summary, from_client: bool) -> Summary {
        let mut s = s.clone();
        if let L4::Tcp {
            seq, ack, flags, ..
        } = &mut s.l4
        {
            let d = usize::from(!from_client);
            let base = *self.base[d].get_or_insert(*seq);
            *seq = seq.wrapping_sub(base);
            if *flags & wire::tcp_flags::ACK != 0 {
                // The peer's base; its SYN-ACK carries our ISN + 1 as ack.
                let peer = *self.base[1 - d].get_or_insert(ack.wrapping_sub(1));
                *ack = ack.wrapping_sub(peer);
            }
        }
        s
    }
}

fn hdr_text(s: &Summary) -> String {
    let full = s.to_string();
    // Drop the `ack=` of segments without the ACK flag: it means nothing.
    match &s.l4 {
        L4::Tcp { flags, .. } if flags & wire::tcp_flags::ACK == 0 => full.replace(" ack=0", ""),
        _ => full,
    }
}

fn endpoint(a: IpAddr, p: Option<u16>) -> String {
    match (a, p) {
        (IpAddr::V6(v6), Some(p)) => format!("[{v6}]:{p}"),
        (a, Some(p)) => format!("{a}:{p}"),
        (a, None) => a.to_string(),
    }
}

fn changes(prev: &Summary, cur: &Summary) -> Option<String> {
    let mut v = Vec::new();
    let (pp, cp) = (prev.ports(), cur.ports());
    let (ps, cs) = (
        endpoint(prev.src, pp.map(|p| p.0)),
        endpoint(cur.src, cp.map(|p| p.0)),
    );
    if ps != cs {
        v.push(format!("src {ps} -> {cs}"));
    }
    let (pd, cd) = (
        endpoint(prev.dst, pp.map(|p| p.1)),
        endpoint(cur.dst, cp.map(|p| p.1)),
    );
    if pd != cd {
        v.push(format!("dst {pd} -> {cd}"));
    }
    if prev.echo_id() != cur.echo_id() {
        v.push(format!(
            "icmp id {:?} -> {:?}",
            prev.echo_id(),
            cur.echo_id()
        ));
    }
    if prev.ttl != cur.ttl {
        v.push(format!("ttl {} -> {}", prev.ttl, cur.ttl));
    }
    if prev.len != cur.len {
        v.push(format!("len {} -> {}", prev.len, cur.len));
    }
    (!v.is_empty()).then(|| v.join(", "))
}

fn render(
    hops: &[&Seen],
    tcp: Option<(&mut RelSeq, bool)>,
    owner: &HashMap<IpAddr, String>,
) -> Packet {
    let mut tcp = tcp;
    let mut out: Vec<Hop> = Vec::new();
    let mut prev: Option<Summary> = None;
    for h in hops {
        let s = match tcp.as_mut() {
            Some((rel, fwd)) => rel.rel(&h.s, *fwd),
            None => h.s.clone(),
        };
        out.push(Hop {
            at: h.at.clone(),
            hdr: hdr_text(&s),
            changed: prev.as_ref().and_then(|p| changes(p, &s)),
        });
        prev = Some(s);
    }
    let first = &hops[0].s;
    let last = hops.last().expect("a chain has a frame");
    let end = match owner.get(&last.s.dst) {
        Some(h) if *h == last.host && !last.outgoing => format!("delivered to {h}"),
        _ => format!("last seen at {}", last.at),
    };
    let kind = match &first.l4 {
        L4::Tcp { flags, .. } => format!("tcp {}", wire::flags_text(*flags)),
        L4::Icmp { ty, .. } => format!("{} type {ty}", first.proto_name()),
        _ => first.proto_name().to_string(),
    };
    let pl = first.payload.len();
    Packet {
        packet: format!(
            "{kind} {} > {}{}",
            endpoint(first.src, first.ports().map(|p| p.0)),
            endpoint(first.dst, first.ports().map(|p| p.1)),
            if pl > 0 {
                format!(" ({pl} B payload)")
            } else {
                String::new()
            }
        ),
        hops: out,
        end,
    }
}

impl Trace {
    /// The trace as YAML: the snapshot text.
    pub fn to_yaml(&self) -> String {
        serde_yaml::to_string(self).expect("a trace always serialises")
    }

    pub fn from_yaml(text: &str) -> Result<Trace, serde_yaml::Error> {
        serde_yaml::from_str(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::PacketBuilder;

    const SC: &str = "version: 1
hosts:
  client: {}
  node:
    bridges: {br0: {addr: [10.1.0.1/24]}}
  pod: {}
links:
  - a: {host: client, ifname: eth0, addr: [192.0.2.2/24]}
    b: {host: node, ifname: eth0, addr: [192.0.2.1/24]}
  - a: {host: node, ifname: p1, bridge: br0}
    b: {host: pod, ifname: eth0, addr: [10.1.0.10/24]}
traffic:
  - {name: t, from: client, proto: tcp, to: \"10.96.0.1:80\"}
";

    fn tcp(
        src: [u8; 4],
        dst: [u8; 4],
        sport: u16,
        dport: u16,
        ttl: u8,
        syn: bool,
        seq: u32,
    ) -> Vec<u8> {
        let b = PacketBuilder::ethernet2([2; 6], [4; 6])
            .ipv4(src, dst, ttl)
            .tcp(sport, dport, seq, 1000);
        // The SYN-ACK acknowledges the client's ISN 5000 + 1.
        let b = if syn { b.syn() } else { b.syn().ack(5001) };
        let mut v = Vec::new();
        b.write(&mut v, &[]).unwrap();
        v
    }

    fn frame(ts: u64, at: &str, out: bool, data: Vec<u8>) -> Captured {
        let (host, ifname) = at.split_once('/').unwrap();
        Captured {
            ts_ns: ts,
            host: host.into(),
            ifname: ifname.into(),
            outgoing: out,
            data,
            link: DataLink::ETHERNET,
        }
    }

    /// A SYN DNATed on `node` and its SYN-ACK, with timestamps that tie on
    /// the bridge and its port and come in the wrong order across hosts.
    fn frames() -> Vec<Captured> {
        let (c, svc, pod) = ([192, 0, 2, 2], [10, 96, 0, 1], [10, 1, 0, 10]);
        let syn = |d, ttl| {
            tcp(
                c,
                d,
                40000,
                if d == svc { 80 } else { 3000 },
                ttl,
                true,
                5000,
            )
        };
        let synack = |s, ttl| {
            tcp(
                s,
                c,
                if s == svc { 80 } else { 3000 },
                40000,
                ttl,
                false,
                9000,
            )
        };
        vec![
            frame(10, "client/eth0", true, syn(svc, 64)),
            frame(11, "node/eth0", false, syn(svc, 64)),
            frame(12, "node/p1", true, syn(pod, 63)), // tie with br0 out: port sorts first by name
            frame(12, "node/br0", true, syn(pod, 63)),
            frame(12, "pod/eth0", false, syn(pod, 63)),
            frame(20, "pod/eth0", true, synack(pod, 64)),
            frame(21, "node/br0", false, synack(pod, 64)), // the bridge before the port, by timestamp
            frame(22, "node/p1", false, synack(pod, 64)),
            frame(23, "node/eth0", true, synack(svc, 63)),
            frame(24, "client/eth0", false, synack(svc, 63)),
        ]
    }

    #[test]
    fn hops_follow_the_wiring_not_the_timestamps() {
        let sc = crate::scenario::parse(Path::new("t.yaml"), "t", SC).unwrap();
        let t = build(&sc, &frames(), &[]);
        assert_eq!(t.flows[0].packets.len(), 2, "{}", t.to_yaml());
        let at = |p: usize| {
            t.flows[0].packets[p]
                .hops
                .iter()
                .map(|h| h.at.as_str())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            at(0),
            [
                "client/eth0 out",
                "node/eth0 in",
                "node/br0 out",
                "node/p1 out",
                "pod/eth0 in"
            ]
        );
        assert_eq!(
            at(1),
            [
                "pod/eth0 out",
                "node/p1 in",
                "node/br0 in",
                "node/eth0 out",
                "client/eth0 in"
            ]
        );
        assert!(t.other.is_empty());
    }

    #[test]
    fn nat_changes_and_relative_numbers_are_shown() {
        let sc = crate::scenario::parse(Path::new("t.yaml"), "t", SC).unwrap();
        let t = build(&sc, &frames(), &[]);
        let syn = &t.flows[0].packets[0];
        assert_eq!(
            syn.hops[0].hdr,
            "192.0.2.2:40000 > 10.96.0.1:80 tcp S seq=0 len=40 ttl=64"
        );
        assert_eq!(
            syn.hops[2].changed.as_deref(),
            Some("dst 10.96.0.1:80 -> 10.1.0.10:3000, ttl 64 -> 63")
        );
        assert_eq!(syn.end, "delivered to pod");
        let synack = &t.flows[0].packets[1];
        assert_eq!(
            synack.hops[0].hdr,
            "10.1.0.10:3000 > 192.0.2.2:40000 tcp S. seq=0 ack=1 len=40 ttl=64"
        );
        assert_eq!(
            synack.hops[3].changed.as_deref(),
            Some("src 10.1.0.10:3000 -> 10.96.0.1:80, ttl 64 -> 63")
        );
        assert_eq!(synack.end, "delivered to client");
    }

    #[test]
    fn a_packet_that_stops_is_last_seen_where_it_stopped() {
        let sc = crate::scenario::parse(Path::new("t.yaml"), "t", SC).unwrap();
        let t = build(&sc, &frames()[..2], &[]);
        assert_eq!(t.flows[0].packets[0].end, "last seen at node/eth0 in");
    }

    #[test]
    fn undecodable_frames_are_counted_not_fatal() {
        let sc = crate::scenario::parse(Path::new("t.yaml"), "t", SC).unwrap();
        let mut f = frames();
        f[1].data.truncate(20);
        let t = build(&sc, &f, &[]);
        assert_eq!(t.undecodable, 1);
    }
}
