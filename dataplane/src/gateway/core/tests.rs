//! Tests of the gateway core: the seed table step by step, NAPT, expiry,
//! exposures, what is dropped, and properties over arbitrary sequences of
//! packets (the table invariant, the counters adding up, checksums kept).

use std::net::{IpAddr, SocketAddr};

use etherparse::PacketBuilder;
use proptest::prelude::*;

use super::*;
use crate::checksum;
use crate::gateway::table::tests::check_invariant;
use crate::testutil::{self, mirror};
use crate::wire::tcp_flags::{ACK, FIN, RST, SYN};

const INTERNAL: &str = "10.30.255.253";
const INTERNAL6: &str = "fdff:7fff::fffd";
/// The seed table's client, exposed port and service.
const CLIENT: &str = "93.6.1.78:51671";
const EXPOSED: u16 = 8080;
const SERVICE: &str = "10.30.30.30:80";
/// Another client with the same source port.
const CLIENT_B: &str = "203.0.113.9:51671";
const CLIENT6: &str = "[2001:db8::7]:51671";
const SERVICE6: &str = "[fdff:30::30]:80";
const PAYLOAD: &[u8] = b"GET / HTTP/1.1\r\n\r\n";

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn at(ip: &str, port: u16) -> SocketAddr {
    SocketAddr::new(ip.parse().unwrap(), port)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum L4 {
    Tcp(u8),
    Udp,
    /// An ICMP echo, in the gateway's port model: a request goes to port
    /// 0 (the exposed and service "port") with the identifier as its
    /// source port; a reply comes from port 0 to the identifier.
    Echo,
}

/// A valid packet with every checksum computed in full (etherparse,
/// independent of the view under test), carrying [`PAYLOAD`].
fn build(src: SocketAddr, dst: SocketAddr, l4: L4) -> Vec<u8> {
    let (sp, dp) = (src.port(), dst.port());
    let l4 = match l4 {
        L4::Tcp(flags) => testutil::L4::Tcp { sp, dp, flags },
        L4::Udp => testutil::L4::Udp { sp, dp },
        L4::Echo if dp == 0 => testutil::L4::Echo {
            id: sp,
            seq: 7,
            request: true,
        },
        L4::Echo => testutil::L4::Echo {
            id: dp,
            seq: 7,
            request: false,
        },
    };
    testutil::build(src.ip(), dst.ip(), l4, PAYLOAD)
}

/// (source, destination) of a valid TCP/UDP packet, or of an echo in the
/// port model of [`L4::Echo`].
fn tuple(p: &[u8]) -> (SocketAddr, SocketAddr) {
    let mut c = p.to_vec();
    let v = IpPacket::new_checked(&mut c).unwrap();
    let (sp, dp) = match v.transport() {
        Transport::IcmpEcho { request: true } => (v.src_port().unwrap(), 0),
        Transport::IcmpEcho { request: false } => (0, v.dst_port().unwrap()),
        _ => (v.src_port().unwrap(), v.dst_port().unwrap()),
    };
    (SocketAddr::new(v.src(), sp), SocketAddr::new(v.dst(), dp))
}

/// True if the IPv4 header checksum and the TCP/UDP checksum verify
/// (RFC 1071 over the whole header and segment, pseudo-header
/// included). Packets without extension headers or IPv4 options.
fn checksums_ok(p: &[u8]) -> bool {
    let v6 = p[0] >> 4 == 6;
    let (l4, proto, src, dst): (usize, u8, IpAddr, IpAddr) = if v6 {
        (
            40,
            p[6],
            <[u8; 16]>::try_from(&p[8..24]).unwrap().into(),
            <[u8; 16]>::try_from(&p[24..40]).unwrap().into(),
        )
    } else {
        (
            usize::from(p[0] & 0xf) * 4,
            p[9],
            <[u8; 4]>::try_from(&p[12..16]).unwrap().into(),
            <[u8; 4]>::try_from(&p[16..20]).unwrap().into(),
        )
    };
    if !v6 && checksum::fold(checksum::sum_bytes(0, &p[..l4])) != 0xffff {
        return false;
    }
    let ph = checksum::pseudo_header_sum(src, dst, proto, (p.len() - l4) as u32);
    checksum::fold(checksum::sum_bytes(ph, &p[l4..])) == 0xffff
}

fn config() -> GatewayConfig {
    GatewayConfig {
        internal6: Some(INTERNAL6.parse().unwrap()),
        ..GatewayConfig::default()
    }
}

/// The seed exposure (tcp 8080 → 10.30.30.30:80) plus udp 5353 →
/// 10.30.30.31:53 and its IPv6 twins.
fn gateway_with(cfg: GatewayConfig) -> GatewayCore {
    let mut g = GatewayCore::new(cfg);
    for e in [
        (Proto::Tcp, EXPOSED, SERVICE),
        (Proto::Udp, 5353, "10.30.30.31:53"),
    ] {
        g.expose(Exposure {
            proto: e.0,
            port: e.1,
            service: sa(e.2),
        })
        .unwrap();
    }
    if g.config().internal6.is_some() {
        for e in [
            (Proto::Tcp, EXPOSED, SERVICE6),
            (Proto::Udp, 5353, "[fdff:30::31]:53"),
        ] {
            g.expose(Exposure {
                proto: e.0,
                port: e.1,
                service: sa(e.2),
            })
            .unwrap();
        }
    }
    g
}

fn gateway() -> GatewayCore {
    gateway_with(config())
}

/// Runs `pkt` through the core; checks the invariants that hold
/// whatever the packet: the table's, the counters' accounting, and a
/// dropped packet's buffer left unchanged.
fn run(g: &mut GatewayCore, pkt: &[u8], now: Millis) -> (Verdict, Vec<u8>) {
    let mut buf = pkt.to_vec();
    let v = g.packet_in_place(now, &mut buf);
    if let Verdict::Drop(_) = v {
        assert_eq!(buf, pkt, "a dropped packet is left unchanged");
    }
    assert_eq!(buf.len(), pkt.len());
    check(g);
    (v, buf)
}

fn check(g: &GatewayCore) {
    check_invariant(&g.table, false);
    let c = g.counters();
    // Each packet ends once (a fragment held too), each datagram made
    // whole once more; a held fragment discarded later (overlap,
    // timeout) counts in a drop as well.
    let ins = c.packets_in + c.frag_reassembled;
    let outs = c.requests + c.replies + c.drops_total() + c.frag_held;
    if c.dropped_frag_overlap + c.dropped_frag_timeout == 0 {
        assert_eq!(ins, outs, "{c}");
    } else {
        assert!(ins <= outs, "{c}");
    }
}

/// A request from `client` to the exposed `port`; must be translated.
fn request(g: &mut GatewayCore, client: SocketAddr, port: u16, l4: L4, now: Millis) -> Vec<u8> {
    let internal = g.config().internal(client.is_ipv6()).unwrap();
    let (v, out) = run(g, &build(client, SocketAddr::new(internal, port), l4), now);
    assert_eq!(v, Verdict::Request);
    out
}

/// The service's answer to a translated request `req`.
fn answer(g: &mut GatewayCore, req: &[u8], now: Millis) -> (Verdict, Vec<u8>) {
    run(g, &mirror(req), now)
}

fn reply_packet(from: SocketAddr, to_port: u16, l4: L4) -> Vec<u8> {
    build(from, at(INTERNAL, to_port), l4)
}

fn assert_drop(g: &mut GatewayCore, pkt: &[u8], now: Millis, d: DropReason) {
    let before = g.counters().dropped(d);
    assert_eq!(run(g, pkt, now).0, Verdict::Drop(d));
    assert_eq!(g.counters().dropped(d), before + 1);
}

// ---- the seed table ----

#[test]
fn seed_request_and_reply_are_translated_exactly() {
    for l4 in [L4::Tcp(SYN), L4::Udp] {
        let mut g = gateway();
        let port = if l4 == L4::Udp { 5353 } else { EXPOSED };
        let service = if l4 == L4::Udp {
            sa("10.30.30.31:53")
        } else {
            sa(SERVICE)
        };
        // 93.6.1.78:51671 > 10.30.255.253:8080, as nftables' DNAT left it.
        let req = build(sa(CLIENT), at(INTERNAL, port), l4);
        let (v, out) = run(&mut g, &req, Millis(0));
        assert_eq!(v, Verdict::Request);
        assert_eq!(tuple(&out), (at(INTERNAL, 51671), service));
        // Byte for byte what a sender of that tuple would have built:
        // checksums included (computed in full by etherparse).
        assert_eq!(out, build(at(INTERNAL, 51671), service, l4));
        assert!(checksums_ok(&out));

        // 10.30.30.30:80 > 10.30.255.253:51671, after the net manager.
        let rep_l4 = if l4 == L4::Udp {
            l4
        } else {
            L4::Tcp(SYN | ACK)
        };
        let rep = build(service, at(INTERNAL, 51671), rep_l4);
        let (v, back) = run(&mut g, &rep, Millis(1));
        assert_eq!(v, Verdict::Reply);
        assert_eq!(tuple(&back), (at(INTERNAL, port), sa(CLIENT)));
        assert_eq!(back, build(at(INTERNAL, port), sa(CLIENT), rep_l4));
        assert!(checksums_ok(&back));

        let f = g.flows(Millis(1));
        assert_eq!(
            f,
            vec![FlowInfo {
                proto: if l4 == L4::Udp {
                    Proto::Udp
                } else {
                    Proto::Tcp
                },
                client: sa(CLIENT),
                service,
                exposed_port: port,
                internal_port: 51671,
                state: "open",
                idle_ms: Millis(0),
            }]
        );
        let c = g.counters();
        assert_eq!((c.requests, c.replies, c.flows_created), (1, 1, 1));
        assert_eq!(c.flows_napt, 0);
    }
}

#[test]
fn ipv6_request_and_reply_are_translated_exactly() {
    for l4 in [L4::Tcp(SYN), L4::Udp] {
        let mut g = gateway();
        let port = if l4 == L4::Udp { 5353 } else { EXPOSED };
        let service = if l4 == L4::Udp {
            sa("[fdff:30::31]:53")
        } else {
            sa(SERVICE6)
        };
        let internal = |p| at(INTERNAL6, p);
        let (v, out) = run(&mut g, &build(sa(CLIENT6), internal(port), l4), Millis(0));
        assert_eq!(v, Verdict::Request);
        assert_eq!(out, build(internal(51671), service, l4));
        assert!(checksums_ok(&out));
        let (v, back) = run(&mut g, &build(service, internal(51671), l4), Millis(1));
        assert_eq!(v, Verdict::Reply);
        assert_eq!(back, build(internal(port), sa(CLIENT6), l4));
        assert!(checksums_ok(&back));
    }
}

#[test]
fn later_packets_use_the_entry() {
    let mut g = gateway();
    let req = request(&mut g, sa(CLIENT), EXPOSED, L4::Tcp(SYN), Millis(0));
    for t in 1..5 {
        let again = request(&mut g, sa(CLIENT), EXPOSED, L4::Tcp(ACK), Millis(t));
        assert_eq!(tuple(&again), tuple(&req));
        let (v, back) = answer(&mut g, &again, Millis(t));
        assert_eq!(v, Verdict::Reply);
        assert_eq!(
            back,
            mirror(&build(sa(CLIENT), at(INTERNAL, EXPOSED), L4::Tcp(ACK)))
        );
    }
    assert_eq!(g.counters().flows_created, 1);
    assert_eq!(g.flow_count(), 1);
}

// ---- NAPT ----

#[test]
fn same_source_port_gets_distinct_internal_ports() {
    let mut g = gateway();
    let a = request(&mut g, sa(CLIENT), EXPOSED, L4::Tcp(SYN), Millis(0));
    let b = request(&mut g, sa(CLIENT_B), EXPOSED, L4::Tcp(SYN), Millis(0));
    assert_eq!(tuple(&a).0, at(INTERNAL, 51671));
    assert_eq!(tuple(&b).0, at(INTERNAL, 49152), "first port of the range");
    assert!(checksums_ok(&b));
    assert_eq!(g.counters().flows_napt, 1);
    // Each reply goes back to its own client, from the exposed port.
    for (req, client) in [(&b, CLIENT_B), (&a, CLIENT)] {
        let (v, back) = answer(&mut g, req, Millis(1));
        assert_eq!(v, Verdict::Reply);
        assert_eq!(tuple(&back), (at(INTERNAL, EXPOSED), sa(client)));
        assert!(checksums_ok(&back));
    }
    // Later packets of B keep its internal port.
    let b2 = request(&mut g, sa(CLIENT_B), EXPOSED, L4::Tcp(ACK), Millis(2));
    assert_eq!(tuple(&b2).0, at(INTERNAL, 49152));
    // A third client with that port: the cursor has moved on.
    let c = request(
        &mut g,
        sa("198.51.100.3:51671"),
        EXPOSED,
        L4::Tcp(SYN),
        Millis(3),
    );
    assert_eq!(tuple(&c).0, at(INTERNAL, 49153));
    // Same client, same port, another exposed port: another flow.
    g.expose(Exposure {
        proto: Proto::Tcp,
        port: 8443,
        service: sa("10.30.30.30:443"),
    })
    .unwrap();
    let d = request(&mut g, sa(CLIENT), 8443, L4::Tcp(SYN), Millis(4));
    assert_eq!(tuple(&d), (at(INTERNAL, 49154), sa("10.30.30.30:443")));
    assert_eq!(g.flow_count(), 4);
}

#[test]
fn a_client_port_in_use_as_a_napt_port_is_not_kept() {
    let mut g = gateway();
    request(&mut g, sa(CLIENT), 5353, L4::Udp, Millis(0));
    request(&mut g, sa(CLIENT_B), 5353, L4::Udp, Millis(0)); // gets 49152
    let out = request(&mut g, sa("198.51.100.3:49152"), 5353, L4::Udp, Millis(0));
    assert_eq!(tuple(&out).0, at(INTERNAL, 49153));
    // TCP is another port space: 51671 and 49152 are free there.
    let out = request(&mut g, sa(CLIENT_B), EXPOSED, L4::Tcp(SYN), Millis(0));
    assert_eq!(tuple(&out).0, at(INTERNAL, 51671));
    assert_eq!(g.counters().flows_napt, 2);
}

#[test]
fn a_client_port_equal_to_the_exposed_port_does_not_capture_requests() {
    let mut g = gateway();
    let odd = sa("198.51.100.7:8080");
    let o = request(&mut g, odd, EXPOSED, L4::Tcp(SYN), Millis(0));
    assert_eq!(tuple(&o).0, at(INTERNAL, EXPOSED));
    // Other clients still reach the exposed port: the reply index
    // matches port 8080 but not the source.
    let a = request(&mut g, sa(CLIENT), EXPOSED, L4::Tcp(SYN), Millis(0));
    assert_eq!(tuple(&a).1, sa(SERVICE));
    let (v, back) = answer(&mut g, &o, Millis(1));
    assert_eq!(v, Verdict::Reply);
    assert_eq!(tuple(&back), (at(INTERNAL, EXPOSED), odd));
}

#[test]
fn ports_exhausted_is_refused_and_counted() {
    let mut g = gateway_with(GatewayConfig {
        napt_ports: (40000, 40001),
        ..config()
    });
    for (i, want) in [(1, 51671), (2, 40000), (3, 40001)] {
        let out = request(
            &mut g,
            at(&format!("198.51.100.{i}"), 51671),
            EXPOSED,
            L4::Tcp(SYN),
            Millis(0),
        );
        assert_eq!(tuple(&out).0.port(), want);
    }
    let late = build(
        at("198.51.100.4", 51671),
        at(INTERNAL, EXPOSED),
        L4::Tcp(SYN),
    );
    assert_drop(&mut g, &late, Millis(0), DropReason::PortsExhausted);
    assert_eq!(g.counters().flows_created, 3);
    // A client whose own port is free still gets in.
    request(
        &mut g,
        at("198.51.100.4", 1234),
        EXPOSED,
        L4::Tcp(SYN),
        Millis(0),
    );
    // One flow torn down and expired: room again.
    let rst = reply_packet(sa(SERVICE), 40000, L4::Tcp(RST));
    assert_eq!(run(&mut g, &rst, Millis(1)).0, Verdict::Reply);
    assert_eq!(g.expire(Millis(1 + 10_000)), 1);
    let out = request(
        &mut g,
        at("198.51.100.4", 51671),
        EXPOSED,
        L4::Tcp(SYN),
        Millis(10_001),
    );
    assert_eq!(tuple(&out).0.port(), 40000);
}

// ---- expiry ----

#[test]
fn rst_from_either_side_closes_then_expires() {
    for from_client in [false, true] {
        let mut g = gateway();
        let req = request(&mut g, sa(CLIENT), EXPOSED, L4::Tcp(SYN), Millis(0));
        if from_client {
            request(&mut g, sa(CLIENT), EXPOSED, L4::Tcp(RST), Millis(5));
        } else {
            let rst = reply_packet(sa(SERVICE), 51671, L4::Tcp(RST | ACK));
            assert_eq!(run(&mut g, &rst, Millis(5)).0, Verdict::Reply);
        }
        assert_eq!(g.flows(Millis(5))[0].state, "closed");
        // Packets after the RST do not extend the closing timeout.
        assert_eq!(answer(&mut g, &req, Millis(9_000)).0, Verdict::Reply);
        assert_eq!(g.expire(Millis(5 + 9_999)), 0);
        assert_eq!(g.expire(Millis(5 + 10_000)), 1);
        assert_eq!(g.flow_count(), 0);
        assert_eq!(g.counters().flows_expired, 1);
        assert_drop(&mut g, &mirror(&req), Millis(10_005), DropReason::NoFlow);
    }
}

#[test]
fn fin_both_ways_closes_then_expires() {
    let mut g = gateway();
    request(&mut g, sa(CLIENT), EXPOSED, L4::Tcp(SYN), Millis(0));
    request(&mut g, sa(CLIENT), EXPOSED, L4::Tcp(FIN | ACK), Millis(10));
    assert_eq!(g.flows(Millis(10))[0].state, "closing");
    // One FIN is not enough for the short timeout...
    assert_eq!(g.expire(Millis(10 + 10_000)), 0);
    let fin = reply_packet(sa(SERVICE), 51671, L4::Tcp(FIN | ACK));
    assert_eq!(run(&mut g, &fin, Millis(20)).0, Verdict::Reply);
    assert_eq!(g.flows(Millis(20))[0].state, "closed");
    request(&mut g, sa(CLIENT), EXPOSED, L4::Tcp(ACK), Millis(21));
    assert_eq!(g.expire(Millis(20 + 9_999)), 0);
    assert_eq!(g.expire(Millis(20 + 10_000)), 1);
}

#[test]
fn half_closed_flows_use_the_established_timeout() {
    let mut g = gateway();
    request(&mut g, sa(CLIENT), EXPOSED, L4::Tcp(SYN), Millis(0));
    let fin = reply_packet(sa(SERVICE), 51671, L4::Tcp(FIN | ACK));
    assert_eq!(run(&mut g, &fin, Millis(100)).0, Verdict::Reply);
    assert_eq!(g.expire(Millis(100 + 299_999)), 0);
    assert_eq!(g.flows(Millis(100 + 299_999))[0].state, "closing");
    assert_eq!(g.expire(Millis(100 + 300_000)), 1);
}

#[test]
fn idle_expiry_is_refreshed_by_either_direction() {
    let mut g = gateway();
    let req = request(&mut g, sa(CLIENT), 5353, L4::Udp, Millis(0));
    assert_eq!(answer(&mut g, &req, Millis(20_000)).0, Verdict::Reply);
    assert_eq!(g.flows(Millis(49_999))[0].idle_ms, Millis(29_999));
    assert_eq!(g.expire(Millis(49_999)), 0);
    assert!(g.flows(Millis(50_000)).is_empty(), "timed out: not listed");
    assert_eq!(g.flow_count(), 1, "but held until removed");
    assert_eq!(g.expire(Millis(50_000)), 1);

    let mut g = gateway();
    request(&mut g, sa(CLIENT), EXPOSED, L4::Tcp(SYN), Millis(0));
    request(&mut g, sa(CLIENT), EXPOSED, L4::Tcp(ACK), Millis(100));
    assert_eq!(g.expire(Millis(100 + 299_999)), 0);
    assert_eq!(g.expire(Millis(100 + 300_000)), 1);
}

#[test]
fn next_deadline_is_the_first_expiry_never_later() {
    let mut g = gateway();
    assert_eq!(g.next_deadline(), None, "nothing to expire");
    // A TCP flow at 0 (established: 300 s), a UDP flow at 100 (30 s).
    request(&mut g, sa(CLIENT), EXPOSED, L4::Tcp(SYN), Millis(0));
    assert_eq!(g.next_deadline(), Some(Millis(300_000)));
    let udp = request(&mut g, sa(CLIENT), 5353, L4::Udp, Millis(100));
    assert_eq!(g.next_deadline(), Some(Millis(30_100)));
    // A reply refreshes the UDP flow; the deadline stays: earlier than
    // needed, never later. Expiring there finds nothing and makes it
    // exact.
    assert_eq!(answer(&mut g, &udp, Millis(20_000)).0, Verdict::Reply);
    assert_eq!(g.next_deadline(), Some(Millis(30_100)));
    assert_eq!(g.expire(Millis(30_100)), 0);
    assert_eq!(g.next_deadline(), Some(Millis(50_000)));
    // A RST closes the TCP flow: it goes 10 s later, first.
    request(&mut g, sa(CLIENT), EXPOSED, L4::Tcp(RST), Millis(30_200));
    assert_eq!(g.next_deadline(), Some(Millis(40_200)));
    assert_eq!(g.expire(Millis(40_200)), 1);
    assert_eq!(g.next_deadline(), Some(Millis(50_000)));
    assert_eq!(g.expire(Millis(50_000)), 1);
    assert_eq!(g.next_deadline(), None);
    assert_eq!(g.counters().flows_expired, 2);
}

#[test]
fn timed_out_entries_met_by_a_packet_are_gone() {
    let mut g = gateway();
    let req = request(&mut g, sa(CLIENT), 5353, L4::Udp, Millis(0));
    // A reply after the timeout, before any sweep: no flow.
    assert_drop(&mut g, &mirror(&req), Millis(30_000), DropReason::NoFlow);
    assert_eq!(g.flow_count(), 0);
    assert_eq!(g.counters().flows_expired, 1);
    // A request after the timeout opens a new flow.
    request(&mut g, sa(CLIENT), 5353, L4::Udp, Millis(40_000));
    request(&mut g, sa(CLIENT), 5353, L4::Udp, Millis(70_000));
    let c = g.counters();
    assert_eq!((c.flows_created, c.flows_expired), (3, 2));
}

#[test]
fn a_client_syn_reopens_a_closing_or_closed_entry() {
    let mut g = gateway();
    // B has a NAPT port: reopening keeps it.
    request(&mut g, sa(CLIENT), EXPOSED, L4::Tcp(SYN), Millis(0));
    request(&mut g, sa(CLIENT_B), EXPOSED, L4::Tcp(SYN), Millis(0));
    let rst = reply_packet(sa(SERVICE), 49152, L4::Tcp(RST));
    assert_eq!(run(&mut g, &rst, Millis(5)).0, Verdict::Reply);
    let state = |g: &GatewayCore, t| {
        g.flows(t)
            .into_iter()
            .find(|f| f.client == sa(CLIENT_B))
            .map(|f| (f.state, f.internal_port))
    };
    assert_eq!(state(&g, Millis(5)), Some(("closed", 49152)));
    // A SYN+ACK from the client, or a SYN from the service, does not.
    request(&mut g, sa(CLIENT_B), EXPOSED, L4::Tcp(SYN | ACK), Millis(6));
    let syn = reply_packet(sa(SERVICE), 49152, L4::Tcp(SYN));
    assert_eq!(run(&mut g, &syn, Millis(6)).0, Verdict::Reply);
    assert_eq!(state(&g, Millis(6)), Some(("closed", 49152)));
    // The client's SYN does.
    let out = request(&mut g, sa(CLIENT_B), EXPOSED, L4::Tcp(SYN), Millis(7));
    assert_eq!(tuple(&out).0, at(INTERNAL, 49152));
    assert_eq!(state(&g, Millis(7)), Some(("open", 49152)));
    assert_eq!(g.expire(Millis(5 + 10_000)), 0);
    assert_eq!(g.counters().flows_created, 2);
    // From half-closed too.
    request(&mut g, sa(CLIENT_B), EXPOSED, L4::Tcp(FIN), Millis(8));
    assert_eq!(state(&g, Millis(8)), Some(("closing", 49152)));
    request(&mut g, sa(CLIENT_B), EXPOSED, L4::Tcp(SYN), Millis(9));
    assert_eq!(state(&g, Millis(9)), Some(("open", 49152)));
}

#[test]
fn the_table_is_bounded() {
    let mut g = gateway_with(GatewayConfig {
        max_flows: 2,
        ..config()
    });
    request(&mut g, at("198.51.100.1", 1000), 5353, L4::Udp, Millis(0));
    request(&mut g, at("198.51.100.2", 1000), 5353, L4::Udp, Millis(10));
    let third = build(at("198.51.100.3", 1000), at(INTERNAL, 5353), L4::Udp);
    assert_drop(&mut g, &third, Millis(20), DropReason::TableFull);
    // Known flows still pass.
    request(&mut g, at("198.51.100.1", 1000), 5353, L4::Udp, Millis(20));
    // Once one has timed out, the full table sweeps it and makes room.
    assert_eq!(run(&mut g, &third, Millis(30_010)).0, Verdict::Request);
    assert_eq!(g.flow_count(), 2);
    assert_eq!(g.counters().flows_expired, 1);
    assert_eq!(g.counters().dropped_table_full, 1);

    let mut g = gateway_with(GatewayConfig {
        max_flows: 0,
        ..config()
    });
    assert_drop(&mut g, &third, Millis(0), DropReason::TableFull);
}

// ---- exposures ----

#[test]
fn unexpose_removes_the_exposure_and_its_flows() {
    let mut g = gateway();
    let a = request(&mut g, sa(CLIENT), EXPOSED, L4::Tcp(SYN), Millis(0));
    request(&mut g, sa(CLIENT_B), EXPOSED, L4::Tcp(SYN), Millis(0));
    let u = request(&mut g, sa(CLIENT), 5353, L4::Udp, Millis(0));
    let v6 = request(&mut g, sa(CLIENT6), EXPOSED, L4::Tcp(SYN), Millis(0));
    assert_eq!(g.flow_count(), 4);
    let (removed, clients) = g.unexpose_flows(Proto::Tcp, EXPOSED, false).unwrap();
    // The clients of the flows removed, sorted: the shell ends their
    // connections.
    assert_eq!(clients, [sa(CLIENT), sa(CLIENT_B)]);
    assert_eq!(
        removed,
        Exposure {
            proto: Proto::Tcp,
            port: EXPOSED,
            service: sa(SERVICE)
        }
    );
    assert_eq!(g.counters().flows_removed, 2);
    assert_eq!(g.flow_count(), 2, "UDP and IPv6 flows stay");
    check(&g);
    assert_drop(&mut g, &mirror(&a), Millis(1), DropReason::NoFlow);
    let req = build(sa(CLIENT), at(INTERNAL, EXPOSED), L4::Tcp(ACK));
    assert_drop(&mut g, &req, Millis(1), DropReason::NotExposed);
    assert_eq!(answer(&mut g, &u, Millis(1)).0, Verdict::Reply);
    assert_eq!(answer(&mut g, &v6, Millis(1)).0, Verdict::Reply);
    assert_eq!(
        g.unexpose(Proto::Tcp, EXPOSED, false),
        Err(ExposeError::NotExposed {
            proto: Proto::Tcp,
            port: EXPOSED,
            v6: false
        })
    );
    // Exposed again, to another service: new flows go there.
    g.expose(Exposure {
        proto: Proto::Tcp,
        port: EXPOSED,
        service: sa("10.30.30.99:8000"),
    })
    .unwrap();
    let out = request(&mut g, sa(CLIENT), EXPOSED, L4::Tcp(SYN), Millis(2));
    assert_eq!(tuple(&out), (at(INTERNAL, 51671), sa("10.30.30.99:8000")));
}

#[test]
fn expose_checks_its_arguments() {
    let mut g = GatewayCore::new(GatewayConfig::default());
    let e = |proto, port, s: &str| Exposure {
        proto,
        port,
        service: sa(s),
    };
    assert_eq!(
        g.expose(e(Proto::Tcp, 0, SERVICE)),
        Err(ExposeError::PortZero)
    );
    assert_eq!(
        g.expose(e(Proto::Tcp, 80, "10.30.30.30:0")),
        Err(ExposeError::ServicePortZero(sa("10.30.30.30:0")))
    );
    assert_eq!(
        g.expose(e(Proto::Tcp, 80, SERVICE6)),
        Err(ExposeError::NoInternalAddress(e(Proto::Tcp, 80, SERVICE6)))
    );
    g.expose(e(Proto::Tcp, 80, SERVICE)).unwrap();
    // The same mapping again: fine, nothing changes.
    g.expose(e(Proto::Tcp, 80, SERVICE)).unwrap();
    let err = g.expose(e(Proto::Tcp, 80, "10.30.30.31:80")).unwrap_err();
    assert_eq!(
        err,
        ExposeError::AlreadyExposed {
            existing: e(Proto::Tcp, 80, SERVICE)
        }
    );
    assert_eq!(err.to_string(), "already exposed: tcp 80 -> 10.30.30.30:80");
    // Same port, other protocol or family: separate rows.
    g.expose(e(Proto::Udp, 80, "10.30.30.31:80")).unwrap();
    let mut g6 = GatewayCore::new(config());
    for x in [
        e(Proto::Udp, 53, "10.30.0.53:53"),
        e(Proto::Tcp, 80, SERVICE6),
        e(Proto::Tcp, 80, SERVICE),
        e(Proto::Tcp, 22, "10.30.0.22:22"),
    ] {
        g6.expose(x).unwrap();
    }
    let listed: Vec<String> = g6.exposures().iter().map(|x| x.to_string()).collect();
    assert_eq!(
        listed,
        [
            "tcp 22 -> 10.30.0.22:22",
            "tcp 80 -> 10.30.30.30:80",
            "tcp 80 -> [fdff:30::30]:80",
            "udp 53 -> 10.30.0.53:53",
        ]
    );
    assert_eq!(
        g6.unexpose(Proto::Tcp, 80, true).unwrap().to_string(),
        "tcp 80 -> [fdff:30::30]:80"
    );
    assert_eq!(
        g6.unexpose(Proto::Tcp, 80, true).unwrap_err().to_string(),
        "tcp 80 is not exposed over IPv6"
    );
    assert_eq!(g6.exposures().len(), 3);
}

// ---- what is dropped ----

#[test]
fn wrong_destination() {
    let mut g = gateway_with(GatewayConfig::default());
    for dst in ["10.30.255.254:8080", "24.0.5.8:8080", "10.30.30.30:80"] {
        let p = build(sa(CLIENT), sa(dst), L4::Tcp(SYN));
        assert_drop(&mut g, &p, Millis(0), DropReason::WrongDestination);
    }
    // No internal IPv6 address: any IPv6 packet.
    let p = build(sa(CLIENT6), at(INTERNAL6, EXPOSED), L4::Tcp(SYN));
    assert_drop(&mut g, &p, Millis(0), DropReason::WrongDestination);
    // With one, another IPv6 address is still wrong.
    let mut g = gateway();
    let p = build(sa(CLIENT6), sa("[fdff:7fff::fffe]:8080"), L4::Tcp(SYN));
    assert_drop(&mut g, &p, Millis(0), DropReason::WrongDestination);
    assert_eq!(g.flow_count(), 0);
}

#[test]
fn spoofed_sources() {
    let mut g = gateway();
    for src in [
        "10.18.0.5:1234",
        "10.30.30.30:80",
        "10.10.1.1:5",
        "10.30.255.253:51671",
        "127.0.0.1:5",
        "0.0.0.0:5",
        "224.0.0.9:5",
        "255.255.255.255:5",
    ] {
        let p = build(sa(src), at(INTERNAL, EXPOSED), L4::Tcp(SYN));
        assert_drop(&mut g, &p, Millis(0), DropReason::Spoofed);
    }
    for src in [
        "[fd18::5]:1234",
        "[fdff:30::30]:80",
        "[::1]:5",
        "[ff02::1]:5",
    ] {
        let p = build(sa(src), at(INTERNAL6, EXPOSED), L4::Tcp(SYN));
        assert_drop(&mut g, &p, Millis(0), DropReason::Spoofed);
    }
    // Configurable: with no internal networks, 10.18.0.5 is a client.
    let mut g = gateway_with(GatewayConfig {
        internal_nets: vec![],
        ..config()
    });
    request(
        &mut g,
        sa("10.18.0.5:1234"),
        EXPOSED,
        L4::Tcp(SYN),
        Millis(0),
    );
}

#[test]
fn not_exposed() {
    let mut g = gateway();
    for (dst, l4) in [
        (8081, L4::Tcp(SYN)),
        (EXPOSED, L4::Udp),
        (5353, L4::Tcp(SYN)),
    ] {
        let p = build(sa(CLIENT), at(INTERNAL, dst), l4);
        assert_drop(&mut g, &p, Millis(0), DropReason::NotExposed);
    }
    assert_eq!(g.flow_count(), 0);
}

#[test]
fn replies_must_come_from_the_entry_service() {
    let mut g = gateway();
    request(&mut g, sa(CLIENT), EXPOSED, L4::Tcp(SYN), Millis(0));
    for from in ["10.30.30.31:80", "10.30.30.30:81", "10.18.0.9:80"] {
        let p = reply_packet(sa(from), 51671, L4::Tcp(SYN | ACK));
        assert_drop(&mut g, &p, Millis(1), DropReason::NoFlow);
    }
    // To a port no flow uses.
    let p = reply_packet(sa(SERVICE), 51672, L4::Tcp(SYN | ACK));
    assert_drop(&mut g, &p, Millis(1), DropReason::NoFlow);
    // Another protocol on the same port.
    let p = reply_packet(sa(SERVICE), 51671, L4::Udp);
    assert_drop(&mut g, &p, Millis(1), DropReason::NoFlow);
    assert_eq!(g.flows(Millis(1))[0].state, "open", "untouched");
}

#[test]
fn only_service_ips_can_be_exposed_never_a_relay() {
    let mut g = GatewayCore::new(config());
    let e = |proto, port, s: &str| Exposure {
        proto,
        port,
        service: sa(s),
    };
    // The internet (an open relay), a node's tunnel port (injection into
    // the overlay), an instance's namespace address, an underlay node, an
    // IPv6 address outside the three service kinds' ranges.
    for (proto, s) in [
        (Proto::Tcp, "8.8.8.8:53"),
        (Proto::Udp, "10.10.0.1:50103"),
        (Proto::Tcp, "10.18.0.1:80"),
        (Proto::Udp, "192.0.2.10:9"),
        (Proto::Tcp, "127.0.0.1:22"),
        (Proto::Tcp, "[2001:db8::1]:80"),
        (Proto::Tcp, "[fdff:3000::1]:80"),
        (Proto::Tcp, "[fd18::1]:80"),
    ] {
        let x = e(proto, 9001, s);
        assert_eq!(
            g.expose(x.clone()),
            Err(ExposeError::NotServiceIp(sa(s))),
            "{s}"
        );
        assert_eq!(
            g.config().check_exposure(&x),
            Err(ExposeError::NotServiceIp(sa(s)))
        );
    }
    let msg = g
        .expose(e(Proto::Tcp, 9001, "8.8.8.8:53"))
        .unwrap_err()
        .to_string();
    assert!(
        msg.starts_with("8.8.8.8:53 is not a service IP (10.30.0.0/16"),
        "{msg}"
    );
    // Its own internal addresses are not services either.
    assert_eq!(
        g.expose(e(Proto::Tcp, 9001, "10.30.255.253:80")),
        Err(ExposeError::OwnAddress(sa("10.30.255.253:80")))
    );
    assert!(g.exposures().is_empty());
    // Nothing was exposed: a client's packet for the port is refused.
    let p = build(sa(CLIENT), at(INTERNAL, 9001), L4::Udp);
    assert_drop(&mut g, &p, Millis(0), DropReason::NotExposed);
    // Service IPs of every range are fine.
    for s in [
        "10.30.0.1:80",
        "[fdff::1]:80",
        "[fdff:1000::1]:80",
        "[fdff:2000::1]:80",
    ] {
        g.expose(e(Proto::Tcp, 9001, s)).unwrap();
        g.unexpose(Proto::Tcp, 9001, s.starts_with('[')).unwrap();
    }
}

#[test]
fn families_never_mix() {
    let mut g = GatewayCore::new(config());
    g.expose(Exposure {
        proto: Proto::Tcp,
        port: EXPOSED,
        service: sa(SERVICE),
    })
    .unwrap();
    // Only the IPv4 row: an IPv6 client is not served by it.
    let p6 = build(sa(CLIENT6), at(INTERNAL6, EXPOSED), L4::Tcp(SYN));
    assert_drop(&mut g, &p6, Millis(0), DropReason::NotExposed);
    g.expose(Exposure {
        proto: Proto::Tcp,
        port: EXPOSED,
        service: sa(SERVICE6),
    })
    .unwrap();
    // Both families use internal port 51671: separate port spaces.
    let r4 = request(&mut g, sa(CLIENT), EXPOSED, L4::Tcp(SYN), Millis(0));
    let r6 = request(&mut g, sa(CLIENT6), EXPOSED, L4::Tcp(SYN), Millis(0));
    assert_eq!(tuple(&r4), (at(INTERNAL, 51671), sa(SERVICE)));
    assert_eq!(tuple(&r6), (at(INTERNAL6, 51671), sa(SERVICE6)));
    assert_eq!(g.counters().flows_napt, 0);
    let (v, b6) = answer(&mut g, &r6, Millis(1));
    assert_eq!(v, Verdict::Reply);
    assert_eq!(tuple(&b6).1, sa(CLIENT6));
    // An IPv4 reply on a port only an IPv6 flow uses: no flow.
    let v6_only = request(
        &mut g,
        sa("[2001:db8::8]:4444"),
        EXPOSED,
        L4::Tcp(SYN),
        Millis(1),
    );
    assert_eq!(tuple(&v6_only).0.port(), 4444);
    let p = reply_packet(sa(SERVICE), 4444, L4::Tcp(ACK));
    assert_drop(&mut g, &p, Millis(1), DropReason::NoFlow);
    // The IPv6 service's address in an IPv4 request cannot exist; an
    // IPv6 reply from the IPv4 service cannot either: the entry's
    // family is the packet's by the port space.
    assert!(g
        .flows(Millis(1))
        .iter()
        .all(|f| f.client.is_ipv6() == f.service.is_ipv6()));
}

#[test]
fn malformed_fragments_icmp_and_other_protocols_are_dropped() {
    let mut g = gateway();
    // IPv4 fragments: a first one (MF) whose length is not a multiple of
    // 8 is malformed; a later one (offset, last) is held.
    for (frag, held) in [(0x2000u16, false), (0x0010, true)] {
        let mut p = build(sa(CLIENT), at(INTERNAL, 5353), L4::Udp);
        p[6..8].copy_from_slice(&frag.to_be_bytes());
        testutil::fix_ipv4_header_checksum(&mut p);
        if held {
            assert_eq!(run(&mut g, &p, Millis(0)).0, Verdict::Held);
        } else {
            assert_drop(&mut g, &p, Millis(0), DropReason::Fragment);
        }
    }
    // IPv6 fragment header (first fragment, more to come, 26 bytes).
    let mut p = build(sa(CLIENT6), at(INTERNAL6, 5353), L4::Udp);
    let plen = u16::from_be_bytes([p[4], p[5]]) + 8;
    p[4..6].copy_from_slice(&plen.to_be_bytes());
    p[6] = 44;
    p.splice(40..40, [17, 0, 0, 1, 0, 0, 0, 9]);
    assert_drop(&mut g, &p, Millis(0), DropReason::Fragment);
    // ICMP echo to the gateway, both families, ICMP not exposed.
    for (src, dst) in [
        (
            "93.6.1.78".parse::<IpAddr>().unwrap(),
            INTERNAL.parse().unwrap(),
        ),
        ("2001:db8::7".parse().unwrap(), INTERNAL6.parse().unwrap()),
    ] {
        let mut out = Vec::new();
        match (src, dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => PacketBuilder::ipv4(s.octets(), d.octets(), 64)
                .icmpv4_echo_request(1, 1)
                .write(&mut out, b"ping"),
            (IpAddr::V6(s), IpAddr::V6(d)) => PacketBuilder::ipv6(s.octets(), d.octets(), 64)
                .icmpv6_echo_request(1, 1)
                .write(&mut out, b"ping"),
            _ => unreachable!(),
        }
        .unwrap();
        assert_drop(&mut g, &out, Millis(0), DropReason::NotExposed);
    }
    // Other ICMP (timestamp request, type 13).
    let mut p = build(sa(CLIENT), at(INTERNAL, 0), L4::Echo);
    p[20] = 13;
    testutil::recompute(&mut p);
    assert_drop(&mut g, &p, Millis(0), DropReason::Unsupported);
    // GRE (47).
    let mut p = build(sa(CLIENT), at(INTERNAL, 5353), L4::Udp);
    p[9] = 47;
    testutil::fix_ipv4_header_checksum(&mut p);
    assert_drop(&mut g, &p, Millis(0), DropReason::Unsupported);
    assert_eq!(g.flow_count(), 0);
}

#[test]
fn malformed_packets() {
    let mut g = gateway();
    for l4 in [L4::Tcp(SYN), L4::Udp] {
        for (src, dst) in [
            (sa(CLIENT), at(INTERNAL, EXPOSED)),
            (sa(CLIENT6), at(INTERNAL6, EXPOSED)),
        ] {
            let p = build(src, dst, l4);
            // Every truncation.
            for n in 0..p.len() {
                assert_drop(&mut g, &p[..n], Millis(0), DropReason::Malformed);
            }
            // A byte past the packet.
            let mut longer = p.clone();
            longer.push(0);
            assert_drop(&mut g, &longer, Millis(0), DropReason::Malformed);
        }
    }
    // A bad IPv4 header checksum; a version of 5.
    let mut p = build(sa(CLIENT), at(INTERNAL, EXPOSED), L4::Udp);
    p[10] ^= 1;
    assert_drop(&mut g, &p, Millis(0), DropReason::Malformed);
    assert_drop(&mut g, &[0x50; 40], Millis(0), DropReason::Malformed);
    assert_eq!(g.flow_count(), 0);
    assert_eq!(g.counters().packets_in, g.counters().dropped_malformed);
}

// ---- reporting ----

#[test]
fn counters_are_listed_in_order_and_named_after_drops() {
    let names: Vec<&str> = Counters::default().iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        [
            "packets_in",
            "requests",
            "replies",
            "flows_created",
            "flows_napt",
            "flows_expired",
            "flows_removed",
            "icmp_errors_to_client",
            "icmp_errors_to_service",
            "icmp_errors_echo",
            "frag_in",
            "frag_held",
            "frag_reassembled",
            "frag_out",
            "dropped_malformed",
            "dropped_fragment",
            "dropped_frag_over_cap",
            "dropped_frag_overlap",
            "dropped_frag_duplicate",
            "dropped_frag_timeout",
            "dropped_unsupported",
            "dropped_wrong_destination",
            "dropped_spoofed",
            "dropped_not_exposed",
            "dropped_no_flow",
            "dropped_table_full",
            "dropped_ports_exhausted",
        ]
    );
    let all = [
        DropReason::Malformed,
        DropReason::Fragment,
        DropReason::FragmentOverCap,
        DropReason::FragmentOverlap,
        DropReason::FragmentDuplicate,
        DropReason::FragmentTimeout,
        DropReason::Unsupported,
        DropReason::WrongDestination,
        DropReason::Spoofed,
        DropReason::NotExposed,
        DropReason::NoFlow,
        DropReason::TableFull,
        DropReason::PortsExhausted,
    ];
    let mut c = Counters::default();
    for (i, d) in all.into_iter().enumerate() {
        *c.drop_counter(d) += i as u64 + 1;
    }
    for (i, d) in all.into_iter().enumerate() {
        assert_eq!(c.dropped(d), i as u64 + 1, "{d}");
        assert!(names.contains(&format!("dropped_{d}").as_str()));
    }
    assert_eq!(c.drops_total(), 91);

    let mut g = gateway();
    let req = request(&mut g, sa(CLIENT), EXPOSED, L4::Tcp(SYN), Millis(0));
    answer(&mut g, &req, Millis(0));
    assert_drop(&mut g, &[], Millis(0), DropReason::Malformed);
    let text = g.counters().to_string();
    assert!(
        text.starts_with("packets_in 3\nrequests 1\nreplies 1\nflows_created 1\nflows_napt 0\n")
    );
    assert!(text.ends_with("dropped_ports_exhausted 0\n"));
    assert_eq!(text.lines().count(), names.len());
    assert!(text.contains("\ndropped_malformed 1\n"));
}

#[test]
fn flows_are_listed_sorted() {
    let mut g = gateway();
    request(&mut g, sa(CLIENT_B), EXPOSED, L4::Tcp(SYN), Millis(0));
    request(&mut g, sa(CLIENT), 5353, L4::Udp, Millis(0));
    request(&mut g, sa(CLIENT6), EXPOSED, L4::Tcp(SYN), Millis(0));
    request(&mut g, sa(CLIENT), EXPOSED, L4::Tcp(SYN), Millis(5));
    let f = g.flows(Millis(7));
    let rows: Vec<String> = f.iter().map(|f| f.to_string()).collect();
    assert_eq!(
        rows,
        [
            "tcp 93.6.1.78:51671 -> 8080 -> 10.30.30.30:80 port 49152 open idle 2 ms",
            "tcp 203.0.113.9:51671 -> 8080 -> 10.30.30.30:80 port 51671 open idle 7 ms",
            "tcp [2001:db8::7]:51671 -> 8080 -> [fdff:30::30]:80 port 51671 open idle 7 ms",
            "udp 93.6.1.78:51671 -> 5353 -> 10.30.30.31:53 port 51671 open idle 7 ms",
        ]
    );
}

// ---- properties ----

fn arb_l4() -> impl Strategy<Value = L4> {
    prop_oneof![
        Just(L4::Udp),
        Just(L4::Echo),
        prop_oneof![
            Just(SYN),
            Just(ACK),
            Just(FIN | ACK),
            Just(RST),
            Just(SYN | ACK)
        ]
        .prop_map(L4::Tcp),
    ]
}

/// One step of a random run: a client's request (and maybe the
/// service's answer), time passing, a sweep, or an exposure replaced.
#[derive(Debug, Clone)]
enum Op {
    Request {
        client: u8,
        port: u16,
        v6: bool,
        l4: L4,
        answer: Option<L4>,
    },
    Wait(u64),
    Expire,
    Reexpose {
        proto: Proto,
        v6: bool,
    },
}

/// The exposed port of the random runs' exposure of `l4`'s protocol (0:
/// ICMP has none).
fn run_port(l4: L4) -> u16 {
    match l4 {
        L4::Tcp(_) => EXPOSED,
        L4::Udp => 5353,
        L4::Echo => 0,
    }
}

fn l4_proto(l4: L4) -> Proto {
    match l4 {
        L4::Tcp(_) => Proto::Tcp,
        L4::Udp => Proto::Udp,
        L4::Echo => Proto::Icmp,
    }
}

fn arb_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..4u8, prop::sample::select(vec![1000u16, 1001, 8080, 40000, 40001]), any::<bool>(), arb_l4(), prop::option::of(arb_l4()))
            .prop_map(|(client, port, v6, l4, answer)| Op::Request { client, port, v6, l4, answer }),
        2 => (0..150u64).prop_map(Op::Wait),
        1 => Just(Op::Expire),
        1 => (prop::sample::select(vec![Proto::Tcp, Proto::Udp, Proto::Icmp]), any::<bool>()).prop_map(|(proto, v6)| Op::Reexpose { proto, v6 }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Random runs against a small table (4 flows, a 2-port NAPT range,
    /// short timeouts): the table's invariant holds after every step,
    /// every request reaches its exposure's service from the internal
    /// address, and the service's exact answer comes back to the
    /// client as the exact mirror of what it sent (ICMP echo included:
    /// identifiers are ports, every checksum right).
    #[test]
    fn random_runs_keep_the_table_exact(ops in proptest::collection::vec(arb_op(), 1..60)) {
        let mut g = gateway_with(GatewayConfig {
            max_flows: 4,
            napt_ports: (40000, 40001),
            tcp_established_ms: Millis(200),
            tcp_closing_ms: Millis(20),
            udp_ms: Millis(100),
            ..config()
        });
        g.expose(Exposure::icmp(ip("10.30.30.32"))).unwrap();
        g.expose(Exposure::icmp(ip("fdff:30::32"))).unwrap();
        let mut now = 0;
        for op in ops {
            match op {
                Op::Request { client, port, v6, l4, answer } => {
                    let (src, dst) = if v6 {
                        (at(&format!("2001:db8::{client}"), port), at(INTERNAL6, run_port(l4)))
                    } else {
                        (at(&format!("198.51.100.{client}"), port), at(INTERNAL, run_port(l4)))
                    };
                    let pkt = build(src, dst, l4);
                    let (v, out) = run(&mut g, &pkt, Millis(now));
                    match v {
                        Verdict::Request => {
                            let proto = l4_proto(l4);
                            let service = g.exposures.get(&ExposedPort::new(proto, dst.port(), v6)).copied().unwrap();
                            let (s, d) = tuple(&out);
                            prop_assert_eq!(d, service);
                            prop_assert_eq!(s.ip(), dst.ip());
                            prop_assert!(testutil::checksums_full(&out));
                            if let Some(a) = answer {
                                // Of the request's protocol.
                                let a = match (l4, a) {
                                    (L4::Tcp(_), L4::Tcp(f)) => L4::Tcp(f),
                                    (L4::Tcp(_), _) => L4::Tcp(ACK),
                                    (other, _) => other,
                                };
                                // The service answers with its own flags.
                                let mut ans = build(d, s, a);
                                let (v, back) = run(&mut g, &ans, Millis(now));
                                prop_assert_eq!(v, Verdict::Reply);
                                ans = build(dst, src, a);
                                prop_assert_eq!(back, ans);
                            }
                        }
                        Verdict::Drop(DropReason::TableFull) => prop_assert!(g.flow_count() >= 4),
                        Verdict::Drop(DropReason::PortsExhausted) => {}
                        other => prop_assert!(false, "unexpected {:?}", other),
                    }
                }
                Op::Wait(dt) => now += dt,
                Op::Expire => {
                    let deadline = g.next_deadline();
                    if g.expire(Millis(now)) > 0 {
                        prop_assert!(deadline.is_some_and(|d| d <= Millis(now)));
                    }
                    prop_assert!(g.flows(Millis(now)).len() == g.flow_count());
                    prop_assert!(g.next_deadline().is_none_or(|d| d > Millis(now)));
                }
                Op::Reexpose { proto, v6 } => {
                    let port = match proto {
                        Proto::Tcp => EXPOSED,
                        Proto::Udp => 5353,
                        Proto::Icmp => 0,
                    };
                    let old = g.unexpose(proto, port, v6).unwrap();
                    prop_assert!(g.flows(Millis(now)).iter().all(|f| !(f.proto == proto && f.exposed_port == port && f.client.is_ipv6() == v6)));
                    g.expose(old).unwrap();
                }
            }
            check(&g);
        }
        check_invariant(&g.table, true);
    }

    /// Arbitrary bytes: never a panic, exactly one outcome counted.
    #[test]
    fn arbitrary_bytes_never_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..120),
        first in prop_oneof![Just(0x45u8), Just(0x60), any::<u8>()],
    ) {
        let mut g = gateway();
        request(&mut g, sa(CLIENT), EXPOSED, L4::Tcp(SYN), Millis(0));
        let mut p = bytes;
        if let Some(f) = p.first_mut() {
            *f = first;
        }
        run(&mut g, &p, Millis(1));
        prop_assert_eq!(g.counters().packets_in, 2);
    }

    /// A valid request or reply with one byte changed (the IPv4 header
    /// checksum fixed up, so the change gets past validation): never a
    /// panic, and if the input's checksums verified, so do the
    /// output's.
    #[test]
    fn mutated_packets_never_panic(
        which in 0..6usize,
        at_ in any::<prop::sample::Index>(),
        byte in any::<u8>(),
        fix in any::<bool>(),
    ) {
        let mut g = gateway();
        let req4 = request(&mut g, sa(CLIENT), EXPOSED, L4::Tcp(SYN), Millis(0));
        let req6 = request(&mut g, sa(CLIENT6), 5353, L4::Udp, Millis(0));
        g.expose(Exposure::icmp(ip("fdff:30::40"))).unwrap();
        let echo6 = request(&mut g, sa(CLIENT6), 0, L4::Echo, Millis(0));
        let mut p = match which {
            0 => build(sa(CLIENT), at(INTERNAL, EXPOSED), L4::Tcp(ACK)),
            1 => mirror(&req4),
            2 => build(sa(CLIENT6), at(INTERNAL6, 5353), L4::Udp),
            3 => mirror(&req6),
            4 => build(sa(CLIENT6), at(INTERNAL6, 0), L4::Echo),
            _ => build(at("fdff:30::40", 0), at(INTERNAL6, tuple(&echo6).0.port()), L4::Echo),
        };
        let i = at_.index(p.len());
        p[i] = byte;
        if fix && p[0] == 0x45 {
            testutil::fix_ipv4_header_checksum(&mut p);
        }
        let (v, out) = run(&mut g, &p, Millis(1));
        if matches!(v, Verdict::Request | Verdict::Reply) && testutil::checksums_full(&p) {
            prop_assert!(testutil::checksums_full(&out));
        }
    }
}

// ---- ICMP errors ----

/// The kinds of ICMP error the gateway translates.
#[derive(Debug, Clone, Copy)]
enum IcmpKind {
    /// IPv4 host / IPv6 address unreachable.
    Unreachable,
    /// IPv4 fragmentation needed / IPv6 packet too big, MTU 1400.
    TooBig,
    TimeExceeded,
}

/// An ICMP error from `src` to `dst` quoting `quote`, every checksum
/// computed in full.
fn icmp_error(kind: IcmpKind, src: IpAddr, dst: IpAddr, quote: &[u8]) -> Vec<u8> {
    let v6 = src.is_ipv6();
    let (ty, code, rest): (u8, u8, u32) = match (v6, kind) {
        (false, IcmpKind::Unreachable) => (3, 1, 0),
        (false, IcmpKind::TooBig) => (3, 4, 1400),
        (false, IcmpKind::TimeExceeded) => (11, 0, 0),
        (true, IcmpKind::Unreachable) => (1, 3, 0),
        (true, IcmpKind::TooBig) => (2, 0, 1400),
        (true, IcmpKind::TimeExceeded) => (3, 0, 0),
    };
    let mut icmp = vec![ty, code, 0, 0];
    icmp.extend_from_slice(&rest.to_be_bytes());
    icmp.extend_from_slice(quote);
    let mut p = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let len = (20 + icmp.len()) as u16;
            let mut p = vec![0x45, 0];
            p.extend_from_slice(&len.to_be_bytes());
            p.extend_from_slice(&[0, 0, 0, 0, 64, 1, 0, 0]);
            p.extend_from_slice(&s.octets());
            p.extend_from_slice(&d.octets());
            p
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let mut p = vec![0x60, 0, 0, 0];
            p.extend_from_slice(&(icmp.len() as u16).to_be_bytes());
            p.extend_from_slice(&[58, 64]);
            p.extend_from_slice(&s.octets());
            p.extend_from_slice(&d.octets());
            p
        }
        _ => unreachable!("one family"),
    };
    p.extend_from_slice(&icmp);
    testutil::recompute(&mut p);
    p
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn an_error_about_a_request_goes_back_to_the_client_quoting_what_it_sent() {
    let mut g = gateway();
    let sent = build(sa(CLIENT), at(INTERNAL, EXPOSED), L4::Tcp(SYN));
    let (v, req) = run(&mut g, &sent, Millis(0));
    assert_eq!(v, Verdict::Request);
    // The service's net manager: no instance, host unreachable from the
    // service IP; a router inside: fragmentation needed.
    for (from, kind) in [
        (ip("10.30.30.30"), IcmpKind::Unreachable),
        (ip("10.10.0.2"), IcmpKind::TooBig),
        (ip("10.18.0.1"), IcmpKind::TimeExceeded),
    ] {
        let err = icmp_error(kind, from, ip(INTERNAL), &req);
        let (v, out) = run(&mut g, &err, Millis(1));
        assert_eq!(v, Verdict::Reply);
        assert_eq!(out, icmp_error(kind, ip(INTERNAL), sa(CLIENT).ip(), &sent));
        assert!(testutil::checksums_full(&out));
    }
    assert_eq!(g.counters().icmp_errors_to_client, 3);
    assert_eq!(g.counters().replies, 3);
    // Nothing refreshed or created by an error.
    assert_eq!(g.flow_count(), 1);
}

#[test]
fn an_error_about_a_reply_goes_to_the_service_quoting_what_it_sent() {
    let mut g = gateway();
    let req = request(&mut g, sa(CLIENT6), 5353, L4::Udp, Millis(0));
    let answer_sent = mirror(&req);
    let (v, back) = run(&mut g, &answer_sent, Millis(0));
    assert_eq!(v, Verdict::Reply);
    // The client's port is closed by now; conntrack has undone the public
    // address in the quote already.
    for (from, kind) in [
        (sa(CLIENT6).ip(), IcmpKind::Unreachable),
        (ip("2001:db8:ff::1"), IcmpKind::TooBig),
    ] {
        let err = icmp_error(kind, from, ip(INTERNAL6), &back);
        let (v, out) = run(&mut g, &err, Millis(1));
        assert_eq!(v, Verdict::Request);
        let svc = ip("fdff:30::31");
        assert_eq!(out, icmp_error(kind, ip(INTERNAL6), svc, &answer_sent));
        assert!(testutil::checksums_full(&out));
    }
    assert_eq!(g.counters().icmp_errors_to_service, 2);
}

#[test]
fn errors_about_no_flow_or_from_the_wrong_side_are_dropped() {
    let mut g = gateway();
    let sent = build(sa(CLIENT), at(INTERNAL, EXPOSED), L4::Tcp(SYN));
    let (_, req) = run(&mut g, &sent, Millis(0));
    let back = run(&mut g, &mirror(&req), Millis(0)).1;
    let internal = ip(INTERNAL);
    // About a request, but from outside the platform: spoofed.
    let e = icmp_error(IcmpKind::Unreachable, ip("198.51.100.1"), internal, &req);
    assert_drop(&mut g, &e, Millis(1), DropReason::Spoofed);
    // About a reply, but from inside: spoofed.
    let e = icmp_error(IcmpKind::Unreachable, ip("10.10.0.2"), internal, &back);
    assert_drop(&mut g, &e, Millis(1), DropReason::Spoofed);
    // About a flow the table does not hold (another internal port, another
    // client port, another service).
    let mut other = req.clone();
    IpPacket::new_checked(&mut other)
        .unwrap()
        .set_src_port(999)
        .unwrap();
    let e = icmp_error(IcmpKind::Unreachable, ip("10.30.30.30"), internal, &other);
    assert_drop(&mut g, &e, Millis(1), DropReason::NoFlow);
    let mut other = back.clone();
    IpPacket::new_checked(&mut other)
        .unwrap()
        .set_dst_port(999)
        .unwrap();
    let e = icmp_error(IcmpKind::Unreachable, sa(CLIENT).ip(), internal, &other);
    assert_drop(&mut g, &e, Millis(1), DropReason::NoFlow);
    let mut other = req.clone();
    IpPacket::new_checked(&mut other)
        .unwrap()
        .set_dst(ip("10.30.30.99"))
        .unwrap();
    let e = icmp_error(IcmpKind::Unreachable, ip("10.30.30.30"), internal, &other);
    assert_drop(&mut g, &e, Millis(1), DropReason::NoFlow);
    // Not to the internal address, or quoting a packet not from it.
    let e = icmp_error(
        IcmpKind::Unreachable,
        ip("10.30.30.30"),
        ip("10.30.255.1"),
        &req,
    );
    assert_drop(&mut g, &e, Millis(1), DropReason::WrongDestination);
    let e = icmp_error(IcmpKind::Unreachable, ip("10.30.30.30"), internal, &sent);
    assert_drop(&mut g, &e, Millis(1), DropReason::WrongDestination);
    // Timed out: no flow.
    let late = Millis(1) + g.config().tcp_established_ms;
    let e = icmp_error(IcmpKind::Unreachable, ip("10.30.30.30"), internal, &req);
    assert_drop(&mut g, &e, late, DropReason::NoFlow);
    // An error quoting an echo request of no flow.
    let mut ping = Vec::new();
    PacketBuilder::ipv4([10, 30, 255, 253], [10, 30, 30, 30], 64)
        .icmpv4_echo_request(1, 1)
        .write(&mut ping, b"ping")
        .unwrap();
    let e = icmp_error(IcmpKind::Unreachable, ip("10.30.30.30"), internal, &ping);
    assert_drop(&mut g, &e, Millis(1), DropReason::NoFlow);
    assert_eq!(g.counters().icmp_errors_to_client, 0);
}

fn arb_kind() -> impl Strategy<Value = IcmpKind> {
    prop_oneof![
        Just(IcmpKind::Unreachable),
        Just(IcmpKind::TooBig),
        Just(IcmpKind::TimeExceeded)
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Any flow, any error kind, a quote cut anywhere from the 8 bytes of
    /// transport header the views require to the whole packet: an error
    /// about a request reaches the client quoting exactly (a prefix of)
    /// what the client sent, an error about a reply reaches the service
    /// quoting exactly what it sent, every checksum right; the flow's
    /// translation is unchanged afterwards.
    #[test]
    fn icmp_errors_translate_exactly_both_ways(
        client in 0..4u8,
        cport in prop::sample::select(vec![1000u16, 8080, 40000, 51671]),
        v6 in any::<bool>(),
        tcp in any::<bool>(),
        kind in arb_kind(),
        cut in any::<prop::sample::Index>(),
        about_reply in any::<bool>(),
    ) {
        let mut g = gateway();
        let (cl, internal, router) = if v6 {
            (at(&format!("2001:db8::{client}"), cport), ip(INTERNAL6), ip("fd18::9"))
        } else {
            (at(&format!("198.51.100.{client}"), cport), ip(INTERNAL), ip("10.10.0.9"))
        };
        let (l4, port) = if tcp { (L4::Tcp(SYN), EXPOSED) } else { (L4::Udp, 5353) };
        // A first flow from another client on the same port takes the
        // internal port, so this one is NAPTed at times.
        if client % 2 == 1 {
            let other = if v6 { at("2001:db8::ff", cport) } else { at("198.51.100.255", cport) };
            request(&mut g, other, port, l4, Millis(0));
        }
        let sent = build(cl, SocketAddr::new(internal, port), l4);
        let (v, req) = run(&mut g, &sent, Millis(0));
        prop_assert_eq!(v, Verdict::Request);
        let answer = mirror(&req);
        let (v, back) = run(&mut g, &answer, Millis(0));
        prop_assert_eq!(v, Verdict::Reply);
        let min = if v6 { 48 } else { 28 };
        let mut n = min + cut.index(sent.len() - min + 1);
        if tcp && n == min + 9 {
            // A quote ending inside the TCP checksum field keeps the
            // half it has (the views update a quoted TCP checksum only
            // when it is whole); no ICMP sender cuts there.
            n += 1;
        }
        let (err, want) = if about_reply {
            (
                icmp_error(kind, cl.ip(), internal, &back[..n]),
                icmp_error(kind, internal, tuple(&req).1.ip(), &answer[..n]),
            )
        } else {
            (
                icmp_error(kind, router, internal, &req[..n]),
                icmp_error(kind, internal, cl.ip(), &sent[..n]),
            )
        };
        let (v, out) = run(&mut g, &err, Millis(1));
        prop_assert_eq!(v, if about_reply { Verdict::Request } else { Verdict::Reply });
        prop_assert_eq!(&out, &want);
        prop_assert!(testutil::checksums_full(&out));
        // The flow still translates as before.
        prop_assert_eq!(run(&mut g, &sent, Millis(2)).1, req);
        prop_assert_eq!(run(&mut g, &answer, Millis(2)).1, back);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// The same for an echo: an error about an echo request the gateway
    /// translated (from inside: the net manager's unreachable, a router's
    /// time exceeded) reaches the client quoting exactly what it sent,
    /// identifier included; an error about an echo reply (from outside)
    /// reaches the service quoting exactly the reply it sent; every
    /// checksum right, NAPTed identifiers too.
    #[test]
    fn icmp_errors_about_an_echo_translate_exactly_both_ways(
        client in 0..4u8,
        id in prop::sample::select(vec![1u16, 4242, 49152, 65535]),
        v6 in any::<bool>(),
        kind in arb_kind(),
        cut in any::<prop::sample::Index>(),
        about_reply in any::<bool>(),
    ) {
        let mut g = gateway();
        g.expose(Exposure::icmp(ip("10.30.30.40"))).unwrap();
        g.expose(Exposure::icmp(ip("fdff:30::40"))).unwrap();
        let (cl, internal, router, svc) = if v6 {
            (at(&format!("2001:db8::{client}"), id), ip(INTERNAL6), ip("fd18::9"), ip("fdff:30::40"))
        } else {
            (at(&format!("198.51.100.{client}"), id), ip(INTERNAL), ip("10.10.0.9"), ip("10.30.30.40"))
        };
        if client % 2 == 1 {
            let other = if v6 { at("2001:db8::ff", id) } else { at("198.51.100.255", id) };
            request(&mut g, other, 0, L4::Echo, Millis(0));
        }
        let sent = build(cl, SocketAddr::new(internal, 0), L4::Echo);
        let (v, req) = run(&mut g, &sent, Millis(0));
        prop_assert_eq!(v, Verdict::Request);
        let answer = mirror(&req);
        let (v, back) = run(&mut g, &answer, Millis(0));
        prop_assert_eq!(v, Verdict::Reply);
        let min = if v6 { 48 } else { 28 };
        let n = min + cut.index(sent.len() - min + 1);
        let (err, want) = if about_reply {
            (
                icmp_error(kind, cl.ip(), internal, &back[..n]),
                icmp_error(kind, internal, svc, &answer[..n]),
            )
        } else {
            (
                icmp_error(kind, router, internal, &req[..n]),
                icmp_error(kind, internal, cl.ip(), &sent[..n]),
            )
        };
        let before = g.counters().icmp_errors_echo;
        let (v, out) = run(&mut g, &err, Millis(1));
        prop_assert_eq!(v, if about_reply { Verdict::Request } else { Verdict::Reply });
        prop_assert_eq!(&out, &want);
        prop_assert!(testutil::checksums_full(&out));
        prop_assert_eq!(g.counters().icmp_errors_echo, before + 1);
        // The flow still translates as before.
        prop_assert_eq!(run(&mut g, &sent, Millis(2)).1, req);
        prop_assert_eq!(run(&mut g, &answer, Millis(2)).1, back);
    }
}

// ---- ICMP echo ----

#[test]
fn echo_to_an_exposed_service_is_translated_both_ways() {
    let mut g = gateway();
    g.expose(Exposure::icmp(ip("10.30.30.40"))).unwrap();
    g.expose(Exposure::icmp(ip("fdff:30::40"))).unwrap();
    for (client, internal, service) in [
        (at("93.6.1.78", 4242), INTERNAL, "10.30.30.40"),
        (at("2001:db8::7", 4242), INTERNAL6, "fdff:30::40"),
    ] {
        let req = build(client, at(internal, 0), L4::Echo);
        let (v, out) = run(&mut g, &req, Millis(0));
        assert_eq!(v, Verdict::Request);
        // `internal > service`, identifier kept (free), payload kept.
        assert_eq!(out, build(at(internal, 4242), at(service, 0), L4::Echo));
        // The instance's reply (through its net manager) comes back as
        // `internal > client` with the client's identifier.
        let (v, back) = run(
            &mut g,
            &build(at(service, 0), at(internal, 4242), L4::Echo),
            Millis(1),
        );
        assert_eq!(v, Verdict::Reply);
        assert_eq!(back, build(at(internal, 0), client, L4::Echo));
    }
    // A second client with the same identifier gets another one (NAPT).
    let b = at("203.0.113.9", 4242);
    let (v, out) = run(&mut g, &build(b, at(INTERNAL, 0), L4::Echo), Millis(2));
    assert_eq!(v, Verdict::Request);
    assert_eq!(
        out,
        build(at(INTERNAL, 49152), at("10.30.30.40", 0), L4::Echo)
    );
    let (_, back) = run(
        &mut g,
        &build(at("10.30.30.40", 0), at(INTERNAL, 49152), L4::Echo),
        Millis(2),
    );
    assert_eq!(back, build(at(INTERNAL, 0), b, L4::Echo));
    assert_eq!(g.counters().flows_napt, 1);
    let f: Vec<String> = g.flows(Millis(2)).iter().map(|f| f.to_string()).collect();
    assert!(
        f.contains(
            &"icmp 203.0.113.9:4242 -> 0 -> 10.30.30.40:0 port 49152 open idle 0 ms".to_string()
        ),
        "{f:?}"
    );
    // A reply from another source, or to an identifier without a flow,
    // or an echo reply from a client: no flow.
    assert_drop(
        &mut g,
        &build(at("10.30.30.41", 0), at(INTERNAL, 4242), L4::Echo),
        Millis(3),
        DropReason::NoFlow,
    );
    assert_drop(
        &mut g,
        &build(at("10.30.30.40", 0), at(INTERNAL, 7), L4::Echo),
        Millis(3),
        DropReason::NoFlow,
    );
    let client_reply = build(at("93.6.1.78", 0), at(INTERNAL, 4242), L4::Echo);
    assert_drop(&mut g, &client_reply, Millis(3), DropReason::NoFlow);
    // A request from inside is spoofed; to another address, wrong.
    assert_drop(
        &mut g,
        &build(at("10.18.0.5", 9), at(INTERNAL, 0), L4::Echo),
        Millis(3),
        DropReason::Spoofed,
    );
    assert_drop(
        &mut g,
        &build(at("93.6.1.78", 9), at("10.30.255.254", 0), L4::Echo),
        Millis(3),
        DropReason::WrongDestination,
    );
    // Expiry as UDP (30 s idle): the identifier's entry is gone after.
    assert_eq!(g.expire(Millis(30_002)), 3);
    assert_drop(
        &mut g,
        &build(at("10.30.30.40", 0), at(INTERNAL, 4242), L4::Echo),
        Millis(30_003),
        DropReason::NoFlow,
    );
    // Unexposing ICMP removes its flows; echo requests are then refused.
    run(
        &mut g,
        &build(at("93.6.1.78", 4242), at(INTERNAL, 0), L4::Echo),
        Millis(30_004),
    );
    let (e, clients) = g.unexpose_flows(Proto::Icmp, 0, false).unwrap();
    assert_eq!(e.to_string(), "icmp -> 10.30.30.40");
    assert_eq!(clients, vec![at("93.6.1.78", 4242)]);
    assert_drop(
        &mut g,
        &build(at("93.6.1.78", 4242), at(INTERNAL, 0), L4::Echo),
        Millis(30_005),
        DropReason::NotExposed,
    );
    // TCP and UDP flows never meet echo ones: port spaces are apart.
    request(&mut g, at("93.6.1.78", 4242), 5353, L4::Udp, Millis(30_006));
    assert_eq!(
        g.unexpose(Proto::Icmp, 0, false).unwrap_err().to_string(),
        "icmp is not exposed over IPv4"
    );
}

#[test]
fn icmp_exposures_have_no_ports() {
    let mut g = gateway();
    let with_port = Exposure {
        proto: Proto::Icmp,
        port: 8,
        service: sa("10.30.30.40:0"),
    };
    let err = g.expose(with_port).unwrap_err();
    assert!(matches!(err, ExposeError::IcmpPort(_)));
    assert!(err.to_string().contains("icmp has no ports"), "{err}");
    let svc_port = Exposure {
        service: sa("10.30.30.40:80"),
        port: 0,
        ..Exposure::icmp(ip("10.30.30.40"))
    };
    assert!(matches!(g.expose(svc_port), Err(ExposeError::IcmpPort(_))));
    assert!(matches!(
        g.expose(Exposure::icmp(ip("8.8.8.8"))),
        Err(ExposeError::NotServiceIp(_))
    ));
    g.expose(Exposure::icmp(ip("10.30.30.40"))).unwrap();
    g.expose(Exposure::icmp(ip("10.30.30.40"))).unwrap();
    assert!(matches!(
        g.expose(Exposure::icmp(ip("10.30.30.41"))),
        Err(ExposeError::AlreadyExposed { .. })
    ));
    assert!(g
        .exposures()
        .iter()
        .any(|e| e.to_string() == "icmp -> 10.30.30.40"));
}

mod fragmented;
