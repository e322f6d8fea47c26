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
//! Tunnels: the net manager carries whole IP packets between nodes as the
//! payload of UDP datagrams to or from port 50103 ([`TUNNEL_PORT`]). A
//! frame that is such a datagram, and whose payload parses as an IPv4/IPv6
//! packet, stands for that *inner* packet: its identity, TTL (for splitting
//! and ordering paths), addresses (for where a packet ended) and ports (for
//! the step it belongs to) are the inner packet's, and link chatter is
//! recognised on it. So a packet read from node A's TUN, tunnelled over
//! A's underlay, the switch and B's underlay, then written bare to B's TUN
//! and delivered to an instance is one packet with one path; the outer
//! TTL, which starts afresh at the tunnel, never splits it. Within one
//! inner TTL, a tunnel endpoint's bare frame comes before its encapsulated
//! one on the way out (TUN, then underlay) and after it on the way in. A
//! datagram on port 50103 whose payload is not IP is a plain UDP packet.
//!
//! An encapsulated hop's `hdr` is the inner header, then the outer one as
//! distinct keys, e.g. `10.30.1.11:40000 > 10.18.0.66:80 tcp S seq=0 len=60
//! ttl=63 | outer=udp outer.src=10.10.1.1:50103 outer.dst=10.10.1.2:50103
//! outer.len=88 outer.ttl=64` (so the inner packet reads the same on bare
//! and tunnelled hops, and a per-field snapshot diff names outer fields
//! apart from inner ones). `changed` says `encapsulated in udp SRC > DST`
//! or `decapsulated from udp SRC > DST` where the tunnel starts or ends,
//! `outer src/dst/ttl/len A -> B` between tunnelled hops, then the inner
//! packet's changes as on any hop.
//!
//! Normalisation, so that a trace is the same on every run: TCP sequence
//! and acknowledgement numbers are relative to each direction's first
//! sequence number; checksums, IP IDs, flow labels, MAC addresses and
//! timestamps are left out (of a tunnel's outer header too; its ports,
//! addresses, length and TTL are shown); ARP and IPv6
//! neighbour/multicast-listener chatter is left out.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::hash::{Hash, Hasher};
use std::io::BufReader;
use std::net::IpAddr;
use std::path::Path;

use hoplab_dataplane::netmanager::core::TUNNEL_PORT;
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
    /// The simulated service managers' answers, in order (scenarios with
    /// clusters): which manager was asked for which service IP, what it
    /// answered, and whether it asked the root.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub control_plane: Vec<String>,
    /// Counters read from the dataplane at the end of the traffic (the
    /// gateway's, with its firewall's), per `host/process`: only those
    /// that are not zero, and none that depend on timing (expiry).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub counters: BTreeMap<String, BTreeMap<String, u64>>,
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
    #[error("{path}: not a readable pcapng or pcap file: {source}")]
    Pcap {
        path: String,
        #[source]
        source: pcap_file::PcapError,
    },
    #[error("{path}: not a capture (neither pcapng nor pcap: the file starts with {magic})")]
    NotACapture { path: String, magic: String },
    #[error("{path}: packet refers to interface {id}, which is not declared")]
    NoInterface { path: String, id: u32 },
}

/// Host name given to interfaces of a capture that does not name them
/// `host/ifname` (a pcap file, or a pcapng written by another tool).
pub const UNNAMED_HOST: &str = "capture";

/// Read every frame of a capture with its interface name and direction:
/// a pcapng (hoplab's own, or any other: interfaces not named
/// `host/ifname` belong to host [`UNNAMED_HOST`]; timestamps scaled by each
/// interface's declared resolution) or a classic pcap file (one interface,
/// `capture/if0`). Directions come from the pcapng flags word or, for
/// Linux cooked captures (`tcpdump -i any`), the packet type.
pub fn read_capture(path: &Path) -> Result<Vec<Captured>, TraceError> {
    use std::io::Read;
    let p = path.display().to_string();
    let open = || {
        File::open(path).map_err(|source| TraceError::Open {
            path: p.clone(),
            source,
        })
    };
    let mut magic = [0u8; 4];
    let n = open()?
        .read(&mut magic)
        .map_err(|source| TraceError::Open {
            path: p.clone(),
            source,
        })?;
    let magic = &magic[..n];
    let pcap_err = |source| TraceError::Pcap {
        path: p.clone(),
        source,
    };
    let mut out = Vec::new();
    if magic == [0x0a, 0x0d, 0x0d, 0x0a] {
        read_ng(&p, BufReader::new(open()?), &mut out)?;
    } else if matches!(
        magic,
        [0xa1, 0xb2, 0xc3, 0xd4]
            | [0xd4, 0xc3, 0xb2, 0xa1]
            | [0xa1, 0xb2, 0x3c, 0x4d]
            | [0x4d, 0x3c, 0xb2, 0xa1]
    ) {
        let mut r = pcap_file::pcap::PcapReader::new(BufReader::new(open()?)).map_err(pcap_err)?;
        let link = r.header().datalink;
        while let Some(pkt) = r.next_packet() {
            let pkt = pkt.map_err(pcap_err)?;
            out.push(Captured {
                ts_ns: pkt.timestamp.as_nanos() as u64,
                host: UNNAMED_HOST.into(),
                ifname: "if0".into(),
                outgoing: cooked_outgoing(link, &pkt.data),
                data: pkt.data.to_vec(),
                link,
            });
        }
    } else {
        return Err(TraceError::NotACapture {
            path: p,
            magic: magic.iter().map(|b| format!("{b:02x}")).collect(),
        });
    }
    Ok(out)
}

/// Whether a Linux cooked-capture frame was sent by the host.
fn cooked_outgoing(link: DataLink, data: &[u8]) -> bool {
    const PACKET_OUTGOING: u8 = 4;
    match link {
        DataLink::LINUX_SLL => data.get(1) == Some(&PACKET_OUTGOING),
        DataLink::LINUX_SLL2 => data.get(10) == Some(&PACKET_OUTGOING),
        _ => false,
    }
}

fn read_ng(p: &str, reader: BufReader<File>, out: &mut Vec<Captured>) -> Result<(), TraceError> {
    let pcap_err = |source| TraceError::Pcap {
        path: p.to_string(),
        source,
    };
    let mut r = PcapNgReader::new(reader).map_err(pcap_err)?;
    struct If {
        host: String,
        ifname: String,
        link: DataLink,
        /// Nanoseconds per timestamp unit, or units per nanosecond when
        /// finer than ns (`div`).
        mul: u64,
        div: u64,
    }
    let mut ifaces: Vec<If> = Vec::new();
    while let Some(b) = r.next_block() {
        match b.map_err(pcap_err)? {
            // A new section declares its interfaces afresh.
            Block::SectionHeader(_) => ifaces.clear(),
            Block::InterfaceDescription(idb) => {
                let mut name = None;
                let mut resol = 6u8; // the pcapng default: microseconds
                for o in &idb.options {
                    match o {
                        InterfaceDescriptionOption::IfName(n) => name = Some(n.to_string()),
                        InterfaceDescriptionOption::IfTsResol(r) => resol = *r,
                        _ => {}
                    }
                }
                let name = name.unwrap_or_else(|| format!("if{}", ifaces.len()));
                let (host, ifname) = match name.split_once('/') {
                    Some((h, i)) if !h.is_empty() && !i.is_empty() => {
                        (h.to_string(), i.to_string())
                    }
                    _ => (UNNAMED_HOST.to_string(), name),
                };
                // Units of 10^-n s, or of 2^-n s with the high bit set.
                let (mul, div) = if resol & 0x80 == 0 {
                    let n = u32::from(resol.min(19));
                    if n <= 9 {
                        (10u64.pow(9 - n), 1)
                    } else {
                        (1, 10u64.pow(n - 9))
                    }
                } else {
                    (1_000_000_000, 1u64 << u32::from((resol & 0x7f).min(63)))
                };
                ifaces.push(If {
                    host,
                    ifname,
                    link: idb.linktype,
                    mul,
                    div,
                });
            }
            Block::EnhancedPacket(epb) => {
                let Some(i) = ifaces.get(epb.interface_id as usize) else {
                    return Err(TraceError::NoInterface {
                        path: p.to_string(),
                        id: epb.interface_id,
                    });
                };
                let flags = epb.options.iter().find_map(|o| match o {
                    EnhancedPacketOption::Flags(f) => Some(*f),
                    _ => None,
                });
                let outgoing = match flags {
                    Some(f) if f & 3 != 0 => f & 3 == 2,
                    _ => cooked_outgoing(i.link, &epb.data),
                };
                let raw = epb.timestamp.as_nanos(); // the raw units, as read
                let ts_ns = (raw.saturating_mul(u128::from(i.mul)) / u128::from(i.div)) as u64;
                out.push(Captured {
                    ts_ns,
                    host: i.host.clone(),
                    ifname: i.ifname.clone(),
                    outgoing,
                    data: epb.data.to_vec(),
                    link: i.link,
                });
            }
            _ => {}
        }
    }
    Ok(())
}

/// The IP packet in `f`, by its link type: `Ok(None)` for frames that
/// carry no IP (ARP...), `Err` for what cannot be decoded.
fn parse_frame(f: &Captured) -> Result<Option<Summary>, String> {
    let ip = |d: &[u8]| wire::parse_ip(d).map(Some).map_err(|e| e.to_string());
    // Link types whose header ends with an EtherType: (header length,
    // offset of the EtherType).
    let cooked = match f.link {
        DataLink::ETHERNET => return wire::parse_ethernet(&f.data).map_err(|e| e.to_string()),
        DataLink::RAW | DataLink::IPV4 | DataLink::IPV6 => return ip(&f.data),
        // BSD loopback: a 4-byte address family, in either byte order.
        DataLink::NULL | DataLink::LOOP => {
            return match f.data.get(..4) {
                Some(fam) => match u32::from_le_bytes(fam.try_into().expect("4 bytes")) {
                    2 | 0x0200_0000 | 24 | 28 | 30 | 0x1800_0000 | 0x1c00_0000 | 0x1e00_0000 => {
                        ip(&f.data[4..])
                    }
                    _ => Ok(None),
                },
                None => Err("truncated loopback header".into()),
            }
        }
        DataLink::LINUX_SLL => (16, 14),
        DataLink::LINUX_SLL2 => (20, 0),
        other => return Err(format!("link type {other:?} is not supported")),
    };
    let (hlen, at) = cooked;
    let Some(et) = f.data.get(at..at + 2) else {
        return Err("truncated cooked-capture header".into());
    };
    match u16::from_be_bytes([et[0], et[1]]) {
        0x0800 | 0x86dd if f.data.len() >= hlen => ip(&f.data[hlen..]),
        0x0800 | 0x86dd => Err("truncated cooked-capture header".into()),
        _ => Ok(None),
    }
}

/// One frame decoded, with where it was seen.
struct Seen {
    /// Index of the frame in the capture.
    frame: usize,
    ts_ns: u64,
    at: String,
    host: String,
    ifname: String,
    outgoing: bool,
    /// The packet: for a tunnel datagram, the inner packet.
    s: Summary,
    /// The tunnel datagram's own headers, if `s` was seen encapsulated
    /// (its payload, the inner packet, dropped).
    outer: Option<Summary>,
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
        if a.outgoing == b.outgoing && a.outer.is_some() != b.outer.is_some() {
            // A tunnel endpoint: read from the TUN, then sent encapsulated;
            // received encapsulated, then written to the TUN.
            return a.outer.is_some() != a.outgoing;
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
            // An ICMP error about the step's own packet, on its way back.
            (Proto::Tcp | Proto::Udp, L4::Icmp { .. }) => {
                let want = if k.proto == Proto::Tcp { 6 } else { 17 };
                if s.quoted_ports()
                    .is_some_and(|(p, sport, _)| p == want && sport == k.port)
                    && !h.outgoing
                {
                    return Some(false);
                }
                false
            }
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
                    "unknown".into(),
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
            c.push_str(": ");
            c.push_str(ch);
        }
        if i + 1 == total {
            c.push_str("; ");
            c.push_str(&p.end);
        }
        comments[seen.frame] = Some(c);
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

fn hdr_text(s: &Summary, outer: Option<&Summary>) -> String {
    let full = s.to_string();
    // Drop the `ack=` of segments without the ACK flag: it means nothing.
    let full = match &s.l4 {
        L4::Tcp { flags, .. } if flags & wire::tcp_flags::ACK == 0 => full.replace(" ack=0", ""),
        _ => full,
    };
    match outer {
        // Only what the outer header's text has that is deterministic:
        // no IP ID, no checksum.
        Some(o) => {
            let ports = o.ports();
            format!(
                "{full} | outer={} outer.src={} outer.dst={} outer.len={} outer.ttl={}",
                o.proto_name(),
                endpoint(o.src, ports.map(|p| p.0)),
                endpoint(o.dst, ports.map(|p| p.1)),
                o.len,
                o.ttl
            )
        }
        None => full,
    }
}

/// `udp SRC > DST` of a tunnel datagram.
fn tunnel_text(o: &Summary) -> String {
    let ports = o.ports();
    format!(
        "{} {} > {}",
        o.proto_name(),
        endpoint(o.src, ports.map(|p| p.0)),
        endpoint(o.dst, ports.map(|p| p.1))
    )
}

fn endpoint(a: IpAddr, p: Option<u16>) -> String {
    match (a, p) {
        (IpAddr::V6(v6), Some(p)) => format!("[{v6}]:{p}"),
        (a, Some(p)) => format!("{a}:{p}"),
        (a, None) => a.to_string(),
    }
}

/// What differs between two hops: the tunnel's start or end, or its outer
/// header's changes, then the (inner) packet's own.
fn changes(prev: &Shown, cur: &Shown) -> Option<String> {
    let mut v = Vec::new();
    match (&prev.outer, &cur.outer) {
        (None, Some(o)) => v.push(format!("encapsulated in {}", tunnel_text(o))),
        (Some(o), None) => v.push(format!("decapsulated from {}", tunnel_text(o))),
        (Some(p), Some(c)) => field_changes(p, c, "outer ", &mut v),
        (None, None) => {}
    }
    field_changes(&prev.s, &cur.s, "", &mut v);
    (!v.is_empty()).then(|| v.join(", "))
}

fn field_changes(prev: &Summary, cur: &Summary, pre: &str, v: &mut Vec<String>) {
    let (pp, cp) = (prev.ports(), cur.ports());
    let (ps, cs) = (
        endpoint(prev.src, pp.map(|p| p.0)),
        endpoint(cur.src, cp.map(|p| p.0)),
    );
    if ps != cs {
        v.push(format!("{pre}src {ps} -> {cs}"));
    }
    let (pd, cd) = (
        endpoint(prev.dst, pp.map(|p| p.1)),
        endpoint(cur.dst, cp.map(|p| p.1)),
    );
    if pd != cd {
        v.push(format!("{pre}dst {pd} -> {cd}"));
    }
    if prev.echo_id() != cur.echo_id() {
        v.push(format!(
            "{pre}icmp id {:?} -> {:?}",
            prev.echo_id(),
            cur.echo_id()
        ));
    }
    if prev.ttl != cur.ttl {
        v.push(format!("{pre}ttl {} -> {}", prev.ttl, cur.ttl));
    }
    if prev.len != cur.len {
        v.push(format!("{pre}len {} -> {}", prev.len, cur.len));
    }
}

/// One field of a hop's `hdr` line: `src` (token 0), `>` (token 1),
/// `dst` (token 2), `proto`, `flags`, or the key of a `key=value` token;
/// `outer` for the tunnel's header after ` | ` (keys `outer`, `outer.src`,
/// ...). Tokens without a key of their own have an empty `key`.
pub struct HdrField<'a> {
    pub key: &'a str,
    /// The whole token, e.g. `ttl=63` or `10.0.0.1:80`.
    pub text: &'a str,
    pub outer: bool,
}

impl<'a> HdrField<'a> {
    /// The value: what follows `=`, or the whole token.
    pub fn value(&self) -> &'a str {
        self.text.split_once('=').map_or(self.text, |(_, v)| v)
    }
}

/// A hop's `hdr` ([`hdr_text`]'s form) split into its fields, in order.
pub fn hdr_fields(hdr: &str) -> Vec<HdrField<'_>> {
    let (inner, outer) = match hdr.split_once(" | ") {
        Some((i, o)) => (i, Some(o)),
        None => (hdr, None),
    };
    let mut v = Vec::new();
    for (i, text) in inner.split(' ').enumerate() {
        let key = match (text.split_once('='), i) {
            (Some((k, _)), _) => k,
            (None, 0) => "src",
            (None, 1) => ">",
            (None, 2) => "dst",
            (None, 3) => "proto",
            (None, 4) => "flags",
            (None, _) => "",
        };
        v.push(HdrField {
            key,
            text,
            outer: false,
        });
    }
    for text in outer.into_iter().flat_map(|o| o.split(' ')) {
        v.push(HdrField {
            key: text.split_once('=').map_or("", |(k, _)| k),
            text,
            outer: true,
        });
    }
    v
}

/// One hop's headers as rendered: the packet (TCP numbers relative) and,
/// when tunnelled, the datagram that carries it.
struct Shown {
    s: Summary,
    outer: Option<Summary>,
}

fn render(
    hops: &[&Seen],
    tcp: Option<(&mut RelSeq, bool)>,
    owner: &HashMap<IpAddr, String>,
) -> Packet {
    let mut tcp = tcp;
    let mut out: Vec<Hop> = Vec::new();
    let mut prev: Option<Shown> = None;
    for h in hops {
        let s = match tcp.as_mut() {
            Some((rel, fwd)) => rel.rel(&h.s, *fwd),
            None => h.s.clone(),
        };
        let cur = Shown {
            s,
            outer: h.outer.clone(),
        };
        out.push(Hop {
            at: h.at.clone(),
            hdr: hdr_text(&cur.s, cur.outer.as_ref()),
            changed: prev.as_ref().and_then(|p| changes(p, &cur)),
        });
        prev = Some(cur);
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
    fn frames_captured_out_of_order_within_the_jitter_stay_one_packet() {
        // The forwarded copy (TTL 63) is stamped before the copies of the
        // hops that led to it (TTL 64), a few microseconds apart, as seen
        // across namespaces; then the SYN is resent a second later.
        let sc = crate::scenario::parse(Path::new("t.yaml"), "t", SC).unwrap();
        let (c, pod) = ([192, 0, 2, 2], [10, 1, 0, 10]);
        let syn = |ttl| tcp(c, pod, 40000, 3000, ttl, true, 5000);
        let us = 1_000;
        let s = 1_000_000_000;
        let frames = vec![
            frame(10 * us, "node/br0", true, syn(63)),
            frame(12 * us, "node/eth0", false, syn(64)),
            frame(15 * us, "client/eth0", true, syn(64)),
            frame(s + 10 * us, "client/eth0", true, syn(64)),
            frame(s + 11 * us, "node/eth0", false, syn(64)),
            frame(s + 12 * us, "node/br0", true, syn(63)),
        ];
        let t = build(&sc, &frames, &[]);
        let packets = &t.flows[0].packets;
        assert_eq!(packets.len(), 2, "{}", t.to_yaml());
        for p in packets {
            let at: Vec<&str> = p.hops.iter().map(|h| h.at.as_str()).collect();
            assert_eq!(at, ["client/eth0 out", "node/eth0 in", "node/br0 out"]);
        }
        assert!(t.other.is_empty(), "{}", t.to_yaml());
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

    /// Linux cooked captures (`tcpdump -i any`, SLL and SLL2) carry IP
    /// after their own header; the packet type gives the direction.
    #[test]
    fn cooked_captures_are_decoded_with_their_direction() {
        let ip = ip_tcp([10, 0, 0, 1], [10, 0, 0, 2], 40000, 80, 64, true);
        let mut sll = vec![0, 4, 0, 1, 0, 6, 2, 2, 2, 2, 2, 2, 0, 0, 0x08, 0x00];
        sll.extend(&ip);
        let mut sll2 = vec![
            0x08, 0x00, 0, 0, 0, 0, 0, 3, 0, 1, 0, 6, 2, 2, 2, 2, 2, 2, 0, 0,
        ];
        sll2.extend(&ip);
        for (link, data, out) in [
            (DataLink::LINUX_SLL, sll, true),
            (DataLink::LINUX_SLL2, sll2, false),
        ] {
            assert_eq!(cooked_outgoing(link, &data), out, "{link:?}");
            let f = Captured {
                link,
                ..frame(0, "any/any", out, data)
            };
            let s = parse_frame(&f).unwrap().unwrap();
            assert_eq!(s.dst, IpAddr::from([10, 0, 0, 2]));
        }
        // An ARP frame in SLL: not IP; a link type hoplab cannot read: an error.
        let mut arp = vec![0u8; 16];
        arp[14..16].copy_from_slice(&[0x08, 0x06]);
        let arp = Captured {
            link: DataLink::LINUX_SLL,
            ..frame(0, "any/any", false, arp)
        };
        assert!(parse_frame(&arp).unwrap().is_none());
        let odd = Captured {
            link: DataLink::IEEE802_11,
            ..frame(0, "w/wlan0", false, vec![0; 40])
        };
        assert!(parse_frame(&odd).unwrap_err().contains("not supported"));
    }

    #[test]
    fn a_packet_that_stops_is_last_seen_where_it_stopped() {
        let sc = crate::scenario::parse(Path::new("t.yaml"), "t", SC).unwrap();
        let t = build(&sc, &frames()[..2], &[]);
        assert_eq!(t.flows[0].packets[0].end, "last seen at node/eth0 in");
    }

    /// Two worker nodes joined by a switch; each has a TUN (`tun0`, not a
    /// link of the scenario) and a bridge with one instance.
    const TUNNEL_SC: &str = "version: 1
hosts:
  inst-a: {}
  node-a:
    bridges: {br0: {addr: [10.18.0.1/26]}}
  switch:
    bridges: {sw0: {}}
  node-b:
    bridges: {br0: {addr: [10.18.0.65/26]}}
  inst-b: {}
links:
  - a: {host: inst-a, ifname: eth0, addr: [10.18.0.2/26]}
    b: {host: node-a, ifname: veth-a, bridge: br0}
  - a: {host: node-a, ifname: eth0, addr: [10.10.1.1/24]}
    b: {host: switch, ifname: pa, bridge: sw0}
  - a: {host: node-b, ifname: eth0, addr: [10.10.1.2/24]}
    b: {host: switch, ifname: pb, bridge: sw0}
  - a: {host: node-b, ifname: veth-b, bridge: br0}
    b: {host: inst-b, ifname: eth0, addr: [10.18.0.66/26]}
traffic:
  - {name: t, from: inst-a, proto: tcp, to: \"10.30.0.2:80\"}
";

    /// A bare IPv4 TCP packet with IP ID 0x1234: a SYN (client ISN 5000) or
    /// the SYN-ACK to it (ISN 9000).
    fn ip_tcp(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, ttl: u8, syn: bool) -> Vec<u8> {
        let b = PacketBuilder::ipv4(src, dst, ttl).tcp(
            sport,
            dport,
            if syn { 5000 } else { 9000 },
            1000,
        );
        let b = if syn { b.syn() } else { b.syn().ack(5001) };
        let mut v = Vec::new();
        b.write(&mut v, &[]).unwrap();
        v[4..6].copy_from_slice(&0x1234u16.to_be_bytes());
        v
    }

    fn eth(ip: &[u8]) -> Vec<u8> {
        let mut v = vec![4; 6];
        v.extend([2; 6]);
        v.extend(if ip[0] >> 4 == 6 {
            [0x86, 0xdd]
        } else {
            [0x08, 0x00]
        });
        v.extend(ip);
        v
    }

    /// `inner` in a UDP datagram between the net managers' tunnel sockets
    /// (50103 to 50103), with an outer IP ID that must not show anywhere.
    fn udp(
        src: [u8; 4],
        dst: [u8; 4],
        sport: u16,
        dport: u16,
        ttl: u8,
        id: u16,
        payload: &[u8],
    ) -> Vec<u8> {
        let mut v = Vec::new();
        PacketBuilder::ipv4(src, dst, ttl)
            .udp(sport, dport)
            .write(&mut v, payload)
            .unwrap();
        v[4..6].copy_from_slice(&id.to_be_bytes());
        eth(&v)
    }

    fn encap(src: [u8; 4], dst: [u8; 4], ttl: u8, id: u16, inner: &[u8]) -> Vec<u8> {
        udp(src, dst, TUNNEL_PORT, TUNNEL_PORT, ttl, id, inner)
    }

    fn raw(ts: u64, at: &str, out: bool, data: Vec<u8>) -> Captured {
        Captured {
            link: DataLink::RAW,
            ..frame(ts, at, out, data)
        }
    }

    /// inst-a dials service 10.30.0.2:80; node-a's net manager sends it as
    /// 10.30.1.11 (inst-a's instance IP) to 10.18.0.66 (inst-b) through
    /// the tunnel; node-b writes it unchanged to its TUN. The SYN-ACK goes
    /// back the same way and node-a translates it back. Frames of a tunnel
    /// endpoint tie on timestamps in the wrong order (the wiring orders
    /// them), and the reply's outer TTL drops as if the underlay were routed.
    fn tunnel_frames() -> Vec<Captured> {
        let (c_ns, c_ip, svc, i_ns) = (
            [10, 18, 0, 2],
            [10, 30, 1, 11],
            [10, 30, 0, 2],
            [10, 18, 0, 66],
        );
        let (ua, ub) = ([10, 10, 1, 1], [10, 10, 1, 2]);
        let syn_c = |ttl| ip_tcp(c_ns, svc, 40000, 80, ttl, true);
        let syn_t = ip_tcp(c_ip, i_ns, 40000, 80, 63, true);
        let synack_t = |ttl| ip_tcp(i_ns, c_ip, 80, 40000, ttl, false);
        let synack_c = |ttl| ip_tcp(svc, c_ns, 80, 40000, ttl, false);
        vec![
            frame(10, "inst-a/eth0", true, eth(&syn_c(64))),
            frame(11, "node-a/veth-a", false, eth(&syn_c(64))),
            frame(11, "node-a/br0", false, eth(&syn_c(64))),
            frame(12, "node-a/eth0", true, encap(ua, ub, 64, 0xbeef, &syn_t)),
            raw(12, "node-a/tun0", true, syn_c(63)),
            frame(13, "switch/pa", false, encap(ua, ub, 64, 0xbeef, &syn_t)),
            frame(13, "switch/pb", true, encap(ua, ub, 64, 0xbeef, &syn_t)),
            raw(14, "node-b/tun0", false, syn_t.clone()),
            frame(14, "node-b/eth0", false, encap(ua, ub, 64, 0xbeef, &syn_t)),
            frame(
                15,
                "node-b/br0",
                true,
                eth(&ip_tcp(c_ip, i_ns, 40000, 80, 62, true)),
            ),
            frame(
                15,
                "node-b/veth-b",
                true,
                eth(&ip_tcp(c_ip, i_ns, 40000, 80, 62, true)),
            ),
            frame(
                16,
                "inst-b/eth0",
                false,
                eth(&ip_tcp(c_ip, i_ns, 40000, 80, 62, true)),
            ),
            frame(20, "inst-b/eth0", true, eth(&synack_t(64))),
            frame(21, "node-b/veth-b", false, eth(&synack_t(64))),
            frame(21, "node-b/br0", false, eth(&synack_t(64))),
            raw(22, "node-b/tun0", true, synack_t(63)),
            frame(
                23,
                "node-b/eth0",
                true,
                encap(ub, ua, 64, 0x0101, &synack_t(63)),
            ),
            frame(
                24,
                "switch/pb",
                false,
                encap(ub, ua, 64, 0x0101, &synack_t(63)),
            ),
            frame(
                24,
                "switch/pa",
                true,
                encap(ub, ua, 64, 0x0101, &synack_t(63)),
            ),
            frame(
                25,
                "node-a/eth0",
                false,
                encap(ub, ua, 63, 0x0101, &synack_t(63)),
            ),
            raw(26, "node-a/tun0", false, synack_c(63)),
            frame(27, "node-a/br0", true, eth(&synack_c(62))),
            frame(27, "node-a/veth-a", true, eth(&synack_c(62))),
            frame(28, "inst-a/eth0", false, eth(&synack_c(62))),
        ]
    }

    fn hops_of(p: &Packet) -> Vec<(&str, &str, Option<&str>)> {
        p.hops
            .iter()
            .map(|h| (h.at.as_str(), h.hdr.as_str(), h.changed.as_deref()))
            .collect()
    }

    #[test]
    fn a_tunnelled_packet_is_one_packet_from_tun_to_tun() {
        let sc = crate::scenario::parse(Path::new("t.yaml"), "t", TUNNEL_SC).unwrap();
        let t = build(&sc, &tunnel_frames(), &[]);
        assert!(t.other.is_empty(), "{}", t.to_yaml());
        assert_eq!(t.undecodable, 0);
        let f = &t.flows[0];
        assert_eq!(f.packets.len(), 2, "{}", t.to_yaml());

        let syn = &f.packets[0];
        assert_eq!(syn.packet, "tcp S 10.18.0.2:40000 > 10.30.0.2:80");
        let bare = "10.30.1.11:40000 > 10.18.0.66:80 tcp S seq=0 len=40 ttl=63";
        let tunnelled = "10.30.1.11:40000 > 10.18.0.66:80 tcp S seq=0 len=40 ttl=63 \
                         | outer=udp outer.src=10.10.1.1:50103 outer.dst=10.10.1.2:50103 \
                         outer.len=68 outer.ttl=64";
        assert_eq!(
            hops_of(syn),
            [
                ("inst-a/eth0 out", "10.18.0.2:40000 > 10.30.0.2:80 tcp S seq=0 len=40 ttl=64", None),
                ("node-a/veth-a in", "10.18.0.2:40000 > 10.30.0.2:80 tcp S seq=0 len=40 ttl=64", None),
                ("node-a/br0 in", "10.18.0.2:40000 > 10.30.0.2:80 tcp S seq=0 len=40 ttl=64", None),
                (
                    "node-a/tun0 out",
                    "10.18.0.2:40000 > 10.30.0.2:80 tcp S seq=0 len=40 ttl=63",
                    Some("ttl 64 -> 63")
                ),
                (
                    "node-a/eth0 out",
                    tunnelled,
                    Some(
                        "encapsulated in udp 10.10.1.1:50103 > 10.10.1.2:50103, \
                         src 10.18.0.2:40000 -> 10.30.1.11:40000, dst 10.30.0.2:80 -> 10.18.0.66:80"
                    )
                ),
                ("switch/pa in", tunnelled, None),
                ("switch/pb out", tunnelled, None),
                ("node-b/eth0 in", tunnelled, None),
                (
                    "node-b/tun0 in",
                    bare,
                    Some("decapsulated from udp 10.10.1.1:50103 > 10.10.1.2:50103")
                ),
                (
                    "node-b/br0 out",
                    "10.30.1.11:40000 > 10.18.0.66:80 tcp S seq=0 len=40 ttl=62",
                    Some("ttl 63 -> 62")
                ),
                (
                    "node-b/veth-b out",
                    "10.30.1.11:40000 > 10.18.0.66:80 tcp S seq=0 len=40 ttl=62",
                    None
                ),
                (
                    "inst-b/eth0 in",
                    "10.30.1.11:40000 > 10.18.0.66:80 tcp S seq=0 len=40 ttl=62",
                    None
                ),
            ]
        );
        assert_eq!(syn.end, "delivered to inst-b");

        // The reply: a packet of its own, in the same flow.
        let synack = &f.packets[1];
        assert_eq!(synack.packet, "tcp S. 10.18.0.66:80 > 10.30.1.11:40000");
        let at: Vec<&str> = synack.hops.iter().map(|h| h.at.as_str()).collect();
        assert_eq!(
            at,
            [
                "inst-b/eth0 out",
                "node-b/veth-b in",
                "node-b/br0 in",
                "node-b/tun0 out",
                "node-b/eth0 out",
                "switch/pb in",
                "switch/pa out",
                "node-a/eth0 in",
                "node-a/tun0 in",
                "node-a/br0 out",
                "node-a/veth-a out",
                "inst-a/eth0 in"
            ]
        );
        let h = |i: usize| {
            (
                synack.hops[i].hdr.as_str(),
                synack.hops[i].changed.as_deref(),
            )
        };
        assert_eq!(
            h(4),
            (
                "10.18.0.66:80 > 10.30.1.11:40000 tcp S. seq=0 ack=1 len=40 ttl=63 \
                 | outer=udp outer.src=10.10.1.2:50103 outer.dst=10.10.1.1:50103 \
                 outer.len=68 outer.ttl=64",
                Some("encapsulated in udp 10.10.1.2:50103 > 10.10.1.1:50103")
            )
        );
        assert_eq!(
            h(7),
            (
                "10.18.0.66:80 > 10.30.1.11:40000 tcp S. seq=0 ack=1 len=40 ttl=63 \
                 | outer=udp outer.src=10.10.1.2:50103 outer.dst=10.10.1.1:50103 \
                 outer.len=68 outer.ttl=63",
                Some("outer ttl 64 -> 63")
            )
        );
        assert_eq!(
            h(8),
            (
                "10.30.0.2:80 > 10.18.0.2:40000 tcp S. seq=0 ack=1 len=40 ttl=63",
                Some(
                    "decapsulated from udp 10.10.1.2:50103 > 10.10.1.1:50103, \
                     src 10.18.0.66:80 -> 10.30.0.2:80, dst 10.30.1.11:40000 -> 10.18.0.2:40000"
                )
            )
        );
        assert_eq!(synack.end, "delivered to inst-a");
        // Nothing of the outer IP IDs (0xbeef, 0x0101) in the text.
        let y = t.to_yaml();
        assert!(
            !y.contains("48879") && !y.contains("257") && !y.contains("beef"),
            "{y}"
        );
    }

    #[test]
    fn the_outer_ttl_never_splits_a_tunnelled_packet() {
        // Retransmission-free, yet the outer TTL (64) is above the TTL the
        // packet had on the TUN (63), and only the TUN hops and the
        // tunnel hops are captured: still one path per packet.
        let sc = crate::scenario::parse(Path::new("t.yaml"), "t", TUNNEL_SC).unwrap();
        let frames: Vec<Captured> = tunnel_frames()
            .into_iter()
            .filter(|f| f.ifname == "tun0" || f.ifname == "eth0" && f.host.starts_with("node"))
            .collect();
        let t = build(&sc, &frames, &[]);
        // No hop on the step's host (inst-a): not attributed.
        assert!(t.flows[0].packets.is_empty(), "{}", t.to_yaml());
        let at = |p: &Packet| p.hops.iter().map(|h| h.at.clone()).collect::<Vec<_>>();
        assert_eq!(t.other.len(), 2, "{}", t.to_yaml());
        assert_eq!(
            at(&t.other[0]),
            [
                "node-a/tun0 out",
                "node-a/eth0 out",
                "node-b/eth0 in",
                "node-b/tun0 in"
            ]
        );
        assert_eq!(
            at(&t.other[1]),
            [
                "node-b/tun0 out",
                "node-b/eth0 out",
                "node-a/eth0 in",
                "node-a/tun0 in"
            ]
        );
        assert_eq!(t.other[0].end, "last seen at node-b/tun0 in");
    }

    #[test]
    fn a_tunnelled_packet_belongs_to_its_step_by_its_inner_ports() {
        // The step runs on node-a itself and only the underlay is captured:
        // every hop is a UDP datagram, the step is TCP from port 40000.
        let sc = TUNNEL_SC.replace("from: inst-a", "from: node-a");
        let sc = crate::scenario::parse(Path::new("t.yaml"), "t", &sc).unwrap();
        let frames: Vec<Captured> = tunnel_frames()
            .into_iter()
            .filter(|f| f.ifname == "eth0" && f.host.starts_with("node") || f.host == "switch")
            .collect();
        let t = build(&sc, &frames, &[]);
        assert!(t.other.is_empty(), "{}", t.to_yaml());
        let p = &t.flows[0].packets;
        assert_eq!(p.len(), 2, "{}", t.to_yaml());
        assert_eq!(p[0].packet, "tcp S 10.30.1.11:40000 > 10.18.0.66:80");
        assert_eq!(p[0].hops.len(), 4);
        assert_eq!(p[1].packet, "tcp S. 10.18.0.66:80 > 10.30.1.11:40000");
        // Relative numbers: the SYN-ACK was taken as the reply.
        assert!(p[1].hops[0]
            .hdr
            .starts_with("10.18.0.66:80 > 10.30.1.11:40000 tcp S. seq=0 ack=1 "));
    }

    #[test]
    fn a_tunnel_port_datagram_without_ip_inside_is_plain_udp() {
        let sc = crate::scenario::parse(Path::new("t.yaml"), "t", TUNNEL_SC).unwrap();
        let (ua, ub) = ([10, 10, 1, 1], [10, 10, 1, 2]);
        // "hello" starts with 0x6, as IPv6 would; an IP packet on another
        // port is no tunnel either.
        let inner = ip_tcp([10, 30, 1, 11], [10, 18, 0, 66], 40000, 80, 63, true);
        let frames = vec![
            frame(10, "node-a/eth0", true, encap(ua, ub, 64, 7, b"hello")),
            frame(11, "switch/pa", false, encap(ua, ub, 64, 7, b"hello")),
            frame(
                20,
                "node-a/eth0",
                true,
                udp(ua, ub, 40000, 4789, 64, 8, &inner),
            ),
        ];
        let t = build(&sc, &frames, &[]);
        assert!(t.flows[0].packets.is_empty(), "{}", t.to_yaml());
        assert_eq!(t.other.len(), 2, "{}", t.to_yaml());
        assert_eq!(
            t.other[0].packet,
            "udp 10.10.1.1:50103 > 10.10.1.2:50103 (5 B payload)"
        );
        assert_eq!(
            hops_of(&t.other[0]),
            [
                (
                    "node-a/eth0 out",
                    "10.10.1.1:50103 > 10.10.1.2:50103 udp len=33 ttl=64",
                    None
                ),
                (
                    "switch/pa in",
                    "10.10.1.1:50103 > 10.10.1.2:50103 udp len=33 ttl=64",
                    None
                ),
            ]
        );
        assert_eq!(t.other[0].end, "last seen at switch/pa in");
        assert_eq!(
            t.other[1].packet,
            "udp 10.10.1.1:40000 > 10.10.1.2:4789 (40 B payload)"
        );
        assert_eq!(
            t.other[1].hops[0].hdr,
            "10.10.1.1:40000 > 10.10.1.2:4789 udp len=68 ttl=64"
        );
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
