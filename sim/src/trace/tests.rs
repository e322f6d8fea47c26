//! Traces built from synthetic frames.

use std::path::Path;

use hoplab_dataplane::netmanager::core::TUNNEL_PORT;
use pcap_file::DataLink;

use super::*;
use crate::capture::Captured;
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
    let sc = crate::oakestra::parse(Path::new("t.yaml"), "t", SC).unwrap();
    let t = build(&LabView::of(&sc), &frames(), &[]);
    assert_eq!(t.flows[0].packets.len(), 2, "{}", t.to_yaml());
    let at = |p: usize| {
        t.flows[0].packets[p]
            .hops
            .iter()
            .map(|h| h.at.to_string())
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
    let sc = crate::oakestra::parse(Path::new("t.yaml"), "t", SC).unwrap();
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
    let t = build(&LabView::of(&sc), &frames, &[]);
    let packets = &t.flows[0].packets;
    assert_eq!(packets.len(), 2, "{}", t.to_yaml());
    for p in packets {
        let at: Vec<String> = p.hops.iter().map(|h| h.at.to_string()).collect();
        assert_eq!(at, ["client/eth0 out", "node/eth0 in", "node/br0 out"]);
    }
    assert!(t.other.is_empty(), "{}", t.to_yaml());
}

#[test]
fn nat_changes_and_relative_numbers_are_shown() {
    let sc = crate::oakestra::parse(Path::new("t.yaml"), "t", SC).unwrap();
    let t = build(&LabView::of(&sc), &frames(), &[]);
    let syn = &t.flows[0].packets[0];
    assert_eq!(
        syn.hops[0].hdr.to_string(),
        "192.0.2.2:40000 > 10.96.0.1:80 tcp S seq=0 len=40 ttl=64"
    );
    assert_eq!(
        changed(&syn.hops[2]).as_deref(),
        Some("dst 10.96.0.1:80 -> 10.1.0.10:3000, ttl 64 -> 63")
    );
    assert_eq!(syn.end.to_string(), "delivered to pod");
    let synack = &t.flows[0].packets[1];
    assert_eq!(
        synack.hops[0].hdr.to_string(),
        "10.1.0.10:3000 > 192.0.2.2:40000 tcp S. seq=0 ack=1 len=40 ttl=64"
    );
    assert_eq!(
        changed(&synack.hops[3]).as_deref(),
        Some("src 10.1.0.10:3000 -> 10.96.0.1:80, ttl 64 -> 63")
    );
    assert_eq!(synack.end.to_string(), "delivered to client");
}

#[test]
fn a_packet_that_stops_is_last_seen_where_it_stopped() {
    let sc = crate::oakestra::parse(Path::new("t.yaml"), "t", SC).unwrap();
    let t = build(&LabView::of(&sc), &frames()[..2], &[]);
    assert_eq!(
        t.flows[0].packets[0].end.to_string(),
        "last seen at node/eth0 in"
    );
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
    let b =
        PacketBuilder::ipv4(src, dst, ttl).tcp(sport, dport, if syn { 5000 } else { 9000 }, 1000);
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

/// A hop's changes as text.
fn changed(h: &super::Hop) -> Option<String> {
    h.changed.as_ref().map(ToString::to_string)
}

type HopText = (String, String, Option<String>);

/// Expected hops, as their texts.
fn texts(v: &[(&str, &str, Option<&str>)]) -> Vec<HopText> {
    v.iter()
        .map(|(a, h, c)| (a.to_string(), h.to_string(), c.map(str::to_string)))
        .collect()
}

fn hops_of(p: &Packet) -> Vec<HopText> {
    p.hops
        .iter()
        .map(|h| (h.at.to_string(), h.hdr.to_string(), changed(h)))
        .collect()
}

#[test]
fn a_tunnelled_packet_is_one_packet_from_tun_to_tun() {
    let sc = crate::oakestra::parse(Path::new("t.yaml"), "t", TUNNEL_SC).unwrap();
    let t = build(&LabView::of(&sc), &tunnel_frames(), &[]);
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
            texts(&[
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
            ])
        );
    assert_eq!(syn.end.to_string(), "delivered to inst-b");

    // The reply: a packet of its own, in the same flow.
    let synack = &f.packets[1];
    assert_eq!(synack.packet, "tcp S. 10.18.0.66:80 > 10.30.1.11:40000");
    let at: Vec<String> = synack.hops.iter().map(|h| h.at.to_string()).collect();
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
    let h = |i: usize, hdr: &str, want: Option<&str>| {
        assert_eq!(synack.hops[i].hdr.to_string(), hdr, "hop {i}");
        assert_eq!(changed(&synack.hops[i]).as_deref(), want, "hop {i}");
    };
    h(
        4,
        "10.18.0.66:80 > 10.30.1.11:40000 tcp S. seq=0 ack=1 len=40 ttl=63 \
                 | outer=udp outer.src=10.10.1.2:50103 outer.dst=10.10.1.1:50103 \
                 outer.len=68 outer.ttl=64",
        Some("encapsulated in udp 10.10.1.2:50103 > 10.10.1.1:50103"),
    );
    h(
        7,
        "10.18.0.66:80 > 10.30.1.11:40000 tcp S. seq=0 ack=1 len=40 ttl=63 \
                 | outer=udp outer.src=10.10.1.2:50103 outer.dst=10.10.1.1:50103 \
                 outer.len=68 outer.ttl=63",
        Some("outer ttl 64 -> 63"),
    );
    h(
        8,
        "10.30.0.2:80 > 10.18.0.2:40000 tcp S. seq=0 ack=1 len=40 ttl=63",
        Some(
            "decapsulated from udp 10.10.1.2:50103 > 10.10.1.1:50103, \
                     src 10.18.0.66:80 -> 10.30.0.2:80, dst 10.30.1.11:40000 -> 10.18.0.2:40000",
        ),
    );
    assert_eq!(synack.end.to_string(), "delivered to inst-a");
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
    let sc = crate::oakestra::parse(Path::new("t.yaml"), "t", TUNNEL_SC).unwrap();
    let frames: Vec<Captured> = tunnel_frames()
        .into_iter()
        .filter(|f| f.ifname == "tun0" || f.ifname == "eth0" && f.host.starts_with("node"))
        .collect();
    let t = build(&LabView::of(&sc), &frames, &[]);
    // No hop on the step's host (inst-a): not attributed.
    assert!(t.flows[0].packets.is_empty(), "{}", t.to_yaml());
    let at = |p: &Packet| p.hops.iter().map(|h| h.at.to_string()).collect::<Vec<_>>();
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
    assert_eq!(t.other[0].end.to_string(), "last seen at node-b/tun0 in");
}

#[test]
fn a_tunnelled_packet_belongs_to_its_step_by_its_inner_ports() {
    // The step runs on node-a itself and only the underlay is captured:
    // every hop is a UDP datagram, the step is TCP from port 40000.
    let sc = TUNNEL_SC.replace("from: inst-a", "from: node-a");
    let sc = crate::oakestra::parse(Path::new("t.yaml"), "t", &sc).unwrap();
    let frames: Vec<Captured> = tunnel_frames()
        .into_iter()
        .filter(|f| f.ifname == "eth0" && f.host.starts_with("node") || f.host == "switch")
        .collect();
    let t = build(&LabView::of(&sc), &frames, &[]);
    assert!(t.other.is_empty(), "{}", t.to_yaml());
    let p = &t.flows[0].packets;
    assert_eq!(p.len(), 2, "{}", t.to_yaml());
    assert_eq!(p[0].packet, "tcp S 10.30.1.11:40000 > 10.18.0.66:80");
    assert_eq!(p[0].hops.len(), 4);
    assert_eq!(p[1].packet, "tcp S. 10.18.0.66:80 > 10.30.1.11:40000");
    // Relative numbers: the SYN-ACK was taken as the reply.
    assert!(p[1].hops[0]
        .hdr
        .to_string()
        .starts_with("10.18.0.66:80 > 10.30.1.11:40000 tcp S. seq=0 ack=1 "));
}

#[test]
fn a_tunnel_port_datagram_without_ip_inside_is_plain_udp() {
    let sc = crate::oakestra::parse(Path::new("t.yaml"), "t", TUNNEL_SC).unwrap();
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
    let t = build(&LabView::of(&sc), &frames, &[]);
    assert!(t.flows[0].packets.is_empty(), "{}", t.to_yaml());
    assert_eq!(t.other.len(), 2, "{}", t.to_yaml());
    assert_eq!(
        t.other[0].packet,
        "udp 10.10.1.1:50103 > 10.10.1.2:50103 (5 B payload)"
    );
    assert_eq!(
        hops_of(&t.other[0]),
        texts(&[
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
        ])
    );
    assert_eq!(t.other[0].end.to_string(), "last seen at switch/pa in");
    assert_eq!(
        t.other[1].packet,
        "udp 10.10.1.1:40000 > 10.10.1.2:4789 (40 B payload)"
    );
    assert_eq!(
        t.other[1].hops[0].hdr.to_string(),
        "10.10.1.1:40000 > 10.10.1.2:4789 udp len=68 ttl=64"
    );
}

#[test]
fn undecodable_frames_are_counted_not_fatal() {
    let sc = crate::oakestra::parse(Path::new("t.yaml"), "t", SC).unwrap();
    let mut f = frames();
    f[1].data.truncate(20);
    let t = build(&LabView::of(&sc), &f, &[]);
    assert_eq!(t.undecodable, 1);
}

/// A kernel drop ends the packet it names (by its fields and TCP numbers
/// where it was last seen) as dropped by the kernel, at the device the
/// kernel named; another segment stays delivered; a drop recorded by
/// nftables is never replaced by the kernel's.
#[test]
fn a_kernel_drop_ends_its_packet_and_never_replaces_another_verdict() {
    use crate::capture::verdicts::{Drop, Key, Verdicts, Where};
    let sc = crate::oakestra::parse(Path::new("t.yaml"), "t", SC).unwrap();
    let fr = &frames()[..5];
    let last = hoplab_dataplane::wire::parse_ethernet(&fr[4].data)
        .unwrap()
        .unwrap();
    let key = Key::of(&last);
    let end = |drops: Verdicts| {
        let mut lab = LabView::of(&sc);
        lab.drops = drops;
        build(&lab, fr, &[]).flows[0].packets[0].end.to_string()
    };
    assert_eq!(end(Verdicts::default()), "delivered to pod");
    let kernel = |tcp| Drop {
        host: "pod".into(),
        at: Where::Kernel {
            iface: Some("eth0".into()),
            tcp: Some(tcp),
        },
        by: "the kernel".into(),
        why: "TCP_LISTEN_OVERFLOW".into(),
    };
    let mut v = Verdicts::default();
    v.add(key.clone(), kernel((5001, 0)));
    assert_eq!(end(v.clone()), "delivered to pod", "another segment's drop");
    v.add(key.clone(), kernel((5000, 0)));
    assert_eq!(
        end(v.clone()),
        "dropped at pod/eth0 by the kernel (TCP_LISTEN_OVERFLOW)"
    );
    let nft = Drop {
        host: "pod".into(),
        at: Where::Chain("input".into()),
        by: "nftables inet t".into(),
        why: "policy drop".into(),
    };
    v.add(key, nft);
    assert_eq!(
        end(v),
        "dropped at pod in input by nftables inet t (policy drop)"
    );
}
