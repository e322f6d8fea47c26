use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;

use super::*;
use crate::netmanager::services::{Instance, ServiceIp, ServiceKind};
use crate::packet::IpPacket;
use crate::testutil::{self, build, checksums_full, icmp_error, mirror, L4};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

const NODE_A: &str = "192.168.0.1";
const NODE_B: &str = "192.168.0.2";

/// The client on node A.
const C_NS: &str = "10.18.0.2";
const C_IP: &str = "10.30.0.2";
const C_NS6: &str = "fd18:a::2";
const C_IP6: &str = "fdff::2";

/// Service S: instance 1 on A, instances 2 and 3 on B.
const RR: &str = "10.30.1.1";
const CLOSEST: &str = "10.30.1.2";
const RR6: &str = "fdff:2000::1";
const CLOSEST6: &str = "fdff:1000::1";

fn i_ns(n: u32) -> Ipv4Addr {
    match n {
        1 => Ipv4Addr::new(10, 18, 0, 3),
        n => Ipv4Addr::new(10, 18, 0, 64 + n as u8),
    }
}
fn i_ns6(n: u32) -> Ipv6Addr {
    match n {
        1 => "fd18:a::3".parse().unwrap(),
        n => Ipv6Addr::new(0xfd18, 0xb, 0, 0, 0, 0, 0, n as u16),
    }
}
fn i_ip(n: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 30, 0, 10 + n as u8))
}

fn instance(n: u32) -> Instance {
    let (node, x) = if n == 1 {
        (NODE_A, 0.0)
    } else {
        (NODE_B, 100.0)
    };
    Instance {
        ns_ip: i_ns(n),
        ns_ip6: Some(i_ns6(n)),
        node: ip(node),
        instance_number: n,
        coords: Coords::new(x, 0.0),
        service_ips: vec![
            ServiceIp {
                kind: ServiceKind::Instance,
                addr: i_ip(n),
            },
            ServiceIp {
                kind: ServiceKind::RoundRobin,
                addr: ip(RR),
            },
            ServiceIp {
                kind: ServiceKind::Closest,
                addr: ip(CLOSEST),
            },
        ],
    }
}

fn resolution(svc: &str) -> Resolution {
    let svc = ip(svc);
    let all: Vec<Instance> = (1..=3).map(instance).collect();
    let instances = if let Some(n) = (1..=3).find(|n| i_ip(*n) == svc) {
        vec![instance(n)]
    } else {
        all
    };
    Resolution::new(svc, instances)
}

fn node_a_cfg() -> Config {
    let mut cfg = Config::new(ip(NODE_A), (Ipv4Addr::new(10, 18, 0, 0), 26));
    cfg.subnet_v6 = Some(("fd18:a::".parse().unwrap(), 64));
    cfg.node_coords = Coords::new(0.0, 0.0);
    cfg.peers = vec![ip(NODE_B)];
    cfg
}

fn node_b_cfg() -> Config {
    let mut cfg = Config::new(ip(NODE_B), (Ipv4Addr::new(10, 18, 0, 64), 26));
    cfg.subnet_v6 = Some(("fd18:b::".parse().unwrap(), 64));
    cfg.node_coords = Coords::new(100.0, 0.0);
    // B resolves nothing: it knows A from the start.
    cfg.peers = vec![ip(NODE_A)];
    cfg
}

fn node_a() -> NetManagerCore {
    let mut a = NetManagerCore::new(node_a_cfg());
    a.add_local_instance(LocalInstance {
        ns_ip: C_NS.parse().unwrap(),
        ns_ip6: Some(C_NS6.parse().unwrap()),
        instance_ip: Some(C_IP.parse().unwrap()),
        instance_ip6: Some(C_IP6.parse().unwrap()),
    });
    a.add_local_instance(LocalInstance {
        ns_ip: i_ns(1),
        ns_ip6: Some(i_ns6(1)),
        instance_ip: match i_ip(1) {
            IpAddr::V4(a) => Some(a),
            _ => None,
        },
        instance_ip6: None,
    });
    a
}

fn node_b() -> NetManagerCore {
    NetManagerCore::new(node_b_cfg())
}

fn tcp(sp: u16, dp: u16, flags: u8) -> L4 {
    L4::Tcp { sp, dp, flags }
}

/// Sends `pkt` from the client on A to the TUN of A, answering the query
/// (if any) with the resolution of the destination; returns A's actions
/// after the resolution.
fn send_resolved(a: &mut NetManagerCore, now: Millis, mut pkt: Vec<u8>) -> Vec<Action> {
    let dst = IpPacket::new_checked(&mut pkt.clone()).unwrap().dst();
    let out = a.on_tun_packet(now, &mut pkt);
    if out == vec![Action::Query(dst)] {
        let res = resolution(&dst.to_string());
        a.on_resolution(now, dst, Ok(res))
    } else {
        out
    }
}

fn only_tun(out: &[Action]) -> Vec<u8> {
    match out {
        [Action::WriteTun(p)] => p.clone(),
        other => panic!("expected one WriteTun, got {other:?}"),
    }
}

fn only_tunnel(out: &[Action]) -> (IpAddr, Vec<u8>) {
    match out {
        [Action::SendTunnel {
            node,
            port,
            datagram,
        }] => {
            assert_eq!(*port, TUNNEL_PORT);
            (*node, datagram.clone())
        }
        other => panic!("expected one SendTunnel, got {other:?}"),
    }
}

fn dst_of(p: &[u8]) -> IpAddr {
    IpPacket::new_checked(&mut p.to_vec()).unwrap().dst()
}

#[test]
fn local_client_to_local_instance_and_back() {
    let mut a = node_a();
    let svc = i_ip(1);
    let orig = build(ip(C_NS), svc, tcp(40000, 80, testutil::SYN), b"");
    let mut p = orig.clone();
    assert_eq!(a.on_tun_packet(Millis(0), &mut p), vec![Action::Query(svc)]);
    assert_eq!(a.counters().queued, 1);
    let out = a.on_resolution(Millis(1), svc, Ok(resolution(&svc.to_string())));
    let fwd = only_tun(&out);
    assert_eq!(
        fwd,
        build(ip(C_IP), i_ns(1).into(), tcp(40000, 80, testutil::SYN), b"")
    );
    assert!(checksums_full(&fwd));
    // The instance answers; the client sees the service IP it dialled.
    let mut reply = mirror(&fwd);
    let back = only_tun(&a.on_tun_packet(Millis(2), &mut reply));
    assert_eq!(back, mirror(&orig));
    assert_eq!(a.counters().tun_out, 2);
    assert_eq!(a.counters().flows_created, 1);
}

/// Client on A, instance on B, through both cores.
fn remote_round_trip(a: &mut NetManagerCore, b: &mut NetManagerCore, orig: &[u8], now: Millis) {
    let out = send_resolved(a, now, orig.to_vec());
    let (node, mut dgram) = only_tunnel(&out);
    assert_eq!(node, ip(NODE_B));
    assert!(checksums_full(&dgram));
    let delivered = only_tun(&b.on_tunnel_datagram(now, ip(NODE_A), &mut dgram));
    assert_eq!(delivered, dgram, "B writes the packet unchanged");
    let mut reply = mirror(&delivered);
    let (node, mut back) = only_tunnel(&b.on_tun_packet(now, &mut reply));
    assert_eq!(node, ip(NODE_A));
    assert_eq!(back, reply, "B sends the reply raw");
    let to_client = only_tun(&a.on_tunnel_datagram(now, ip(NODE_B), &mut back));
    assert_eq!(to_client, mirror(orig));
}

#[test]
fn local_client_to_remote_instance_and_back() {
    let mut a = node_a();
    let mut b = node_b();
    let cases = [
        build(ip(C_NS), i_ip(2), tcp(40000, 80, testutil::SYN), b""),
        build(ip(C_NS), ip(RR), L4::Udp { sp: 5000, dp: 53 }, b"q"),
        build(
            ip(C_NS),
            ip(CLOSEST),
            L4::Echo {
                id: 77,
                seq: 1,
                request: true,
            },
            b"ping",
        ),
        build(ip(C_NS6), ip(RR6), tcp(40001, 443, testutil::SYN), b"hello"),
    ];
    // Round robin picks the local instance 1 first: use it up.
    send_resolved(
        &mut a,
        Millis(0),
        build(ip(C_NS), ip(RR), L4::Udp { sp: 1, dp: 1 }, b""),
    );
    send_resolved(
        &mut a,
        Millis(0),
        build(ip(C_NS6), ip(RR6), L4::Udp { sp: 1, dp: 1 }, b""),
    );
    for (i, c) in cases.iter().enumerate() {
        // Closest from A is instance 1 on A; make it remote by asking from
        // a node placed next to B.
        if i == 2 {
            a.cfg.node_coords = Coords::new(90.0, 0.0);
        }
        remote_round_trip(&mut a, &mut b, c, Millis(10));
    }
    assert_eq!(b.counters().flows_created, 4);
    assert_eq!(b.counters().drops_total(), 0);
    assert_eq!(a.counters().drops_total(), 0);
}

#[test]
fn round_robin_rotates_per_new_flow_and_sticks() {
    let mut a = node_a();
    let mut picks = Vec::new();
    for cp in 0..4u16 {
        let out = send_resolved(
            &mut a,
            Millis(0),
            build(
                ip(C_NS),
                ip(RR),
                L4::Udp {
                    sp: 1000 + cp,
                    dp: 53,
                },
                b"",
            ),
        );
        let p = match &out[..] {
            [Action::WriteTun(p)] | [Action::SendTunnel { datagram: p, .. }] => p.clone(),
            o => panic!("{o:?}"),
        };
        picks.push(dst_of(&p));
    }
    let expect: Vec<IpAddr> = [1, 2, 3, 1].iter().map(|n| i_ns(*n).into()).collect();
    assert_eq!(picks, expect);
    assert_eq!(a.counters().queries, 1, "one query, then cache hits");
    // Stickiness: more packets of the second flow go to instance 2.
    for t in 1..5 {
        let out = a.on_tun_packet(
            Millis(t),
            &mut build(ip(C_NS), ip(RR), L4::Udp { sp: 1001, dp: 53 }, b"x"),
        );
        assert_eq!(dst_of(&only_tunnel(&out).1), IpAddr::V4(i_ns(2)));
    }
    // IPv6 round robin has its own counter.
    let out = send_resolved(
        &mut a,
        Millis(5),
        build(ip(C_NS6), ip(RR6), L4::Udp { sp: 1, dp: 2 }, b""),
    );
    assert_eq!(dst_of(&only_tun(&out)), IpAddr::V6(i_ns6(1)));
}

#[test]
fn closest_with_ties_is_deterministic() {
    // From (50, 0), instances 2 and 3 on B (100, 0) and instance 1 on A
    // (0, 0) are all 50 away: lowest instance number wins.
    let mut a = node_a();
    a.cfg.node_coords = Coords::new(50.0, 0.0);
    let out = send_resolved(
        &mut a,
        Millis(0),
        build(ip(C_NS), ip(CLOSEST), L4::Udp { sp: 1, dp: 2 }, b""),
    );
    assert_eq!(dst_of(&only_tun(&out)), IpAddr::V4(i_ns(1)));
    // From B's side, instance 2 (same distance as 3, lower number).
    let mut a = node_a();
    a.cfg.node_coords = Coords::new(99.0, 0.0);
    let out = send_resolved(
        &mut a,
        Millis(0),
        build(ip(C_NS6), ip(CLOSEST6), L4::Udp { sp: 1, dp: 2 }, b""),
    );
    assert_eq!(dst_of(&only_tunnel(&out).1), IpAddr::V6(i_ns6(2)));
}

#[test]
fn ttl_expiry_and_invalidation_requery() {
    let mut a = node_a();
    let svc = ip(RR);
    let ttl = a.cfg.cache.ttl.as_u64();
    send_resolved(
        &mut a,
        Millis(0),
        build(ip(C_NS), svc, L4::Udp { sp: 1, dp: 2 }, b""),
    );
    // A new flow within the TTL: cache hit.
    let out = a.on_tun_packet(
        Millis(ttl - 1),
        &mut build(ip(C_NS), svc, L4::Udp { sp: 3, dp: 2 }, b""),
    );
    assert!(!out.contains(&Action::Query(svc)));
    // Unused for the TTL: queried again.
    let out = a.on_tun_packet(
        Millis(2 * ttl - 1),
        &mut build(ip(C_NS), svc, L4::Udp { sp: 4, dp: 2 }, b""),
    );
    assert_eq!(out, vec![Action::Query(svc)]);
    a.on_resolution(Millis(2 * ttl), svc, Ok(resolution(RR)));
    // Invalidation: queried again at once.
    assert!(a.invalidate(svc));
    let out = a.on_tun_packet(
        Millis(2 * ttl + 1),
        &mut build(ip(C_NS), svc, L4::Udp { sp: 5, dp: 2 }, b""),
    );
    assert_eq!(out, vec![Action::Query(svc)]);
    assert_eq!(a.counters().queries, 3);
}

/// `cache_ttl_ms: 0` once made the released SYN query again at every
/// answer: thousands of queries a second and the packet never delivered.
#[test]
fn ttl_zero_queries_once_per_in_flight_window() {
    let mut cfg = node_a_cfg();
    cfg.cache.ttl = Millis(0);
    let mut a = NetManagerCore::new(cfg);
    a.add_local_instance(LocalInstance {
        ns_ip: C_NS.parse().unwrap(),
        ns_ip6: None,
        instance_ip: Some(C_IP.parse().unwrap()),
        instance_ip6: None,
    });
    let svc = ip(RR);
    let syn = build(ip(C_NS), svc, tcp(40000, 80, testutil::SYN), b"");
    assert_eq!(
        a.on_tun_packet(Millis(0), &mut syn.clone()),
        vec![Action::Query(svc)]
    );
    // Retransmissions while the query is in flight only wait.
    assert!(a.on_tun_packet(Millis(3), &mut syn.clone()).is_empty());
    let out = a.on_resolution(Millis(5), svc, Ok(resolution(RR)));
    assert!(
        !out.iter().any(|x| matches!(x, Action::Query(_))),
        "{out:?}"
    );
    let sent = out
        .iter()
        .filter(|x| matches!(x, Action::SendTunnel { .. } | Action::WriteTun(_)))
        .count();
    assert_eq!(sent, 2, "both waiting packets go on: {out:?}");
    assert_eq!(a.counters().queries, 1);
    // The flow goes on by its conversion entry, with no query.
    let data = build(ip(C_NS), svc, tcp(40000, 80, testutil::ACK), b"x");
    let out = a.on_tun_packet(Millis(50), &mut data.clone());
    assert!(
        !out.iter().any(|x| matches!(x, Action::Query(_))),
        "{out:?}"
    );
    // A new flow later queries again: TTL 0 keeps nothing past the answer.
    let other = build(ip(C_NS), svc, tcp(40001, 80, testutil::SYN), b"");
    assert_eq!(
        a.on_tun_packet(Millis(60), &mut other.clone()),
        vec![Action::Query(svc)]
    );
    assert_eq!(a.counters().queries, 2);
}

#[test]
fn pending_queue_released_in_order_and_other_flows_go_on() {
    let mut a = node_a();
    // An established flow to instance 1.
    send_resolved(
        &mut a,
        Millis(0),
        build(ip(C_NS), i_ip(1), L4::Udp { sp: 9, dp: 9 }, b""),
    );
    let svc = ip(RR);
    let pkts: Vec<Vec<u8>> = (0..3)
        .map(|i| {
            build(
                ip(C_NS),
                svc,
                L4::Udp {
                    sp: 100 + i,
                    dp: 53,
                },
                &[i as u8],
            )
        })
        .collect();
    assert_eq!(
        a.on_tun_packet(Millis(1), &mut pkts[0].clone()),
        vec![Action::Query(svc)]
    );
    assert!(a.on_tun_packet(Millis(2), &mut pkts[1].clone()).is_empty());
    // Meanwhile the established flow is not blocked.
    let out = a.on_tun_packet(
        Millis(3),
        &mut build(ip(C_NS), i_ip(1), L4::Udp { sp: 9, dp: 9 }, b"x"),
    );
    assert_eq!(dst_of(&only_tun(&out)), IpAddr::V4(i_ns(1)));
    assert!(a.on_tun_packet(Millis(4), &mut pkts[2].clone()).is_empty());
    assert_eq!(a.counters().queries, 2);
    let out = a.on_resolution(Millis(5), svc, Ok(resolution(RR)));
    let dsts: Vec<IpAddr> = out
        .iter()
        .map(|x| match x {
            Action::WriteTun(p) | Action::SendTunnel { datagram: p, .. } => dst_of(p),
            o => panic!("{o:?}"),
        })
        .collect();
    assert_eq!(dsts, [1, 2, 3].map(|n| IpAddr::V4(i_ns(n))));
    // One for the established flow's first packet, three now.
    assert_eq!(a.counters().released, 4);
}

#[test]
fn failed_query_drops_and_answers_with_icmp_unreachable() {
    for (svc, client) in [(RR, C_NS), (RR6, C_NS6)] {
        let mut a = node_a();
        let svc = ip(svc);
        let pkts: Vec<Vec<u8>> = (0..2)
            .map(|i| build(ip(client), svc, tcp(100 + i, 80, testutil::SYN), b""))
            .collect();
        assert_eq!(
            a.on_tun_packet(Millis(0), &mut pkts[0].clone()),
            vec![Action::Query(svc)]
        );
        assert!(a.on_tun_packet(Millis(0), &mut pkts[1].clone()).is_empty());
        let out = a.on_resolution(Millis(1), svc, Err(ResolveError::NotFound));
        assert_eq!(out.len(), 4);
        for (i, pair) in out.chunks(2).enumerate() {
            let mut icmp = only_tun(&pair[..1]);
            // The queued packet, which the shell no longer holds, is
            // named by its quote.
            assert_eq!(
                pair[1],
                Action::DropHeld(Box::new(Held {
                    reason: DropReason::QueryFailed,
                    from: None,
                    quote: pkts[i][..if svc.is_ipv6() { 48 } else { 28 }].to_vec()
                }))
            );
            assert!(checksums_full(&icmp));
            let v = IpPacket::new_checked(&mut icmp).unwrap();
            assert_eq!(v.src(), svc);
            assert_eq!(v.dst(), ip(client));
            let tc = if svc.is_ipv6() { (1, 3) } else { (3, 1) };
            assert_eq!(v.icmp_type_code(), Some(tc));
            assert_eq!(v.quoted_src_port(), Some(100 + i as u16));
        }
        assert_eq!(a.counters().drop_query_failed, 2);
        assert_eq!(a.counters().icmp_unreachable_sent, 2);
        assert_eq!(a.counters().resolutions_failed, 1);
        // Failure is not cached: the next packet queries again.
        let out = a.on_tun_packet(Millis(2), &mut pkts[0].clone());
        assert_eq!(out, vec![Action::Query(svc)]);
    }
}

#[test]
fn query_timeout_fails_like_an_error() {
    let mut a = node_a();
    let svc = ip(RR);
    a.on_tun_packet(
        Millis(0),
        &mut build(ip(C_NS), svc, L4::Udp { sp: 1, dp: 2 }, b""),
    );
    assert!(a.expire(Millis(4_999)).is_empty());
    let p = build(ip(C_NS), svc, L4::Udp { sp: 1, dp: 2 }, b"");
    let out = a.expire(Millis(5_000));
    assert_eq!(out.len(), 2);
    assert_eq!(
        out[1],
        Action::DropHeld(Box::new(Held {
            reason: DropReason::QueryFailed,
            from: None,
            quote: p[..28].to_vec()
        }))
    );
}

#[test]
fn next_deadline_is_the_first_expiry_never_later() {
    let mut a = node_a();
    assert_eq!(a.next_deadline(), None, "nothing to expire");
    let svc = ip(RR);
    // A query in flight times out 5 s after it was sent.
    let udp = build(ip(C_NS), svc, L4::Udp { sp: 1, dp: 2 }, b"");
    assert_eq!(
        a.on_tun_packet(Millis(100), &mut udp.clone()),
        vec![Action::Query(svc)]
    );
    assert_eq!(a.next_deadline(), Some(Millis(5_100)));
    // Answered at 200: the resolution goes stale at 200 + 10 s, the UDP
    // flow made of the queued packet at 200 + 30 s. The query's deadline
    // is left as it was: earlier than needed, never later.
    a.on_resolution(Millis(200), svc, Ok(resolution(RR)));
    assert_eq!(a.conntrack().len(), 1);
    assert_eq!(a.next_deadline(), Some(Millis(5_100)));
    // Expiring there finds nothing, and makes the deadline exact.
    assert!(a.expire(Millis(5_100)).is_empty());
    assert_eq!(a.next_deadline(), Some(Millis(10_200)));
    // Traffic moves the flow's expiry later, not the deadline.
    send_resolved(&mut a, Millis(9_000), udp.clone());
    assert_eq!(a.next_deadline(), Some(Millis(10_200)));
    // A new TCP flow uses (and refreshes) the resolution; a RST closes it:
    // it expires after the linger (5 s).
    let syn = build(ip(C_NS), svc, tcp(7, 80, testutil::SYN), b"");
    only_tunnel(&a.on_tun_packet(Millis(9_500), &mut syn.clone()));
    let rst = build(ip(C_NS), svc, tcp(7, 80, testutil::RST), b"");
    only_tunnel(&a.on_tun_packet(Millis(9_600), &mut rst.clone()));
    assert_eq!(a.next_deadline(), Some(Millis(10_200)));
    assert!(a.expire(Millis(10_200)).is_empty());
    assert_eq!((a.conntrack().len(), a.cache().len()), (2, 1));
    assert_eq!(a.next_deadline(), Some(Millis(9_600 + 5_000)));
    // At each deadline, expire has something to do; the next deadline is
    // always later than now.
    a.expire(Millis(14_600));
    assert_eq!(a.conntrack().len(), 1, "the RST flow is gone");
    assert_eq!(a.next_deadline(), Some(Millis(9_500 + 10_000)));
    a.expire(Millis(19_500));
    assert_eq!(a.cache().len(), 0);
    assert_eq!(a.next_deadline(), Some(Millis(9_000 + 30_000)));
    a.expire(Millis(39_000));
    assert_eq!(a.conntrack().len(), 0);
    assert_eq!(a.next_deadline(), None);
    assert_eq!(a.counters().flows_expired, 2);
}

#[test]
fn queue_full_is_counted() {
    let mut cfg = node_a_cfg();
    cfg.cache.queue_limit = 2;
    let mut a = NetManagerCore::new(cfg);
    let svc = ip(RR);
    for i in 0..3 {
        a.on_tun_packet(
            Millis(0),
            &mut build(ip(C_NS), svc, L4::Udp { sp: i, dp: 2 }, b""),
        );
    }
    assert_eq!(a.counters().queued, 2);
    assert_eq!(a.counters().drop_queue_full, 1);
}

#[test]
fn table_full_refuses_new_flows() {
    let mut cfg = node_a_cfg();
    cfg.conntrack.max_flows = 2;
    let mut a = NetManagerCore::new(cfg);
    for sp in 0..2 {
        send_resolved(
            &mut a,
            Millis(0),
            build(ip(C_NS), i_ip(1), L4::Udp { sp, dp: 2 }, b""),
        );
    }
    let out = a.on_tun_packet(
        Millis(1),
        &mut build(ip(C_NS), i_ip(1), L4::Udp { sp: 7, dp: 2 }, b""),
    );
    assert_eq!(out, vec![Action::Drop(DropReason::TableFull)]);
    assert_eq!(a.counters().drop_table_full, 1);
    // Existing flows still work.
    let out = a.on_tun_packet(
        Millis(1),
        &mut build(ip(C_NS), i_ip(1), L4::Udp { sp: 1, dp: 2 }, b""),
    );
    assert_eq!(out.len(), 1);
    // After the idle timeout there is room again.
    let idle = a.cfg.conntrack.udp_idle;
    assert!(a.expire(idle + Millis(1)).is_empty());
    assert_eq!(a.counters().flows_expired, 2);
    let out = a.on_tun_packet(
        idle + Millis(2),
        &mut build(ip(C_NS), i_ip(1), L4::Udp { sp: 7, dp: 2 }, b""),
    );
    assert!(matches!(
        out[..],
        [Action::WriteTun(_)] | [Action::Query(_)]
    ));
}

#[test]
fn same_client_port_to_two_services_on_one_instance_collides() {
    let mut a = node_a();
    // RR picks instance 1 first; the instance IP of 1 is the same instance.
    send_resolved(
        &mut a,
        Millis(0),
        build(ip(C_NS), ip(RR), L4::Udp { sp: 5, dp: 53 }, b""),
    );
    let p = build(ip(C_NS), i_ip(1), L4::Udp { sp: 5, dp: 53 }, b"");
    let out = send_resolved(&mut a, Millis(0), p.clone());
    // Released from the query's queue: a held packet, named by its quote.
    assert_eq!(
        out,
        vec![Action::DropHeld(Box::new(Held {
            reason: DropReason::TupleCollision,
            from: None,
            quote: p.clone()
        }))]
    );
    // A different protocol with the same ports is a different flow.
    let out = send_resolved(
        &mut a,
        Millis(0),
        build(ip(C_NS), i_ip(1), tcp(5, 53, testutil::SYN), b""),
    );
    assert!(matches!(out[..], [Action::WriteTun(_)]));
}

#[test]
fn tcp_close_then_new_choice() {
    let mut a = node_a();
    let syn = build(ip(C_NS), ip(RR), tcp(7, 80, testutil::SYN), b"");
    let first = dst_of(&only_tun(&send_resolved(&mut a, Millis(0), syn.clone())));
    let fin = build(
        ip(C_NS),
        ip(RR),
        tcp(7, 80, testutil::FIN | testutil::ACK),
        b"",
    );
    let fwd = only_tun(&a.on_tun_packet(Millis(1), &mut fin.clone()));
    let mut reply_fin = mirror(&fwd);
    only_tun(&a.on_tun_packet(Millis(2), &mut reply_fin));
    let linger = a.cfg.conntrack.tcp_linger.as_u64();
    assert!(a.expire(Millis(2 + linger - 1)).is_empty());
    assert_eq!(a.conntrack().len(), 1);
    a.expire(Millis(2 + linger));
    assert_eq!(a.conntrack().len(), 0);
    // The same tuple again is a new flow: the rotation moves on.
    let out = a.on_tun_packet(Millis(3 + linger), &mut syn.clone());
    let second = dst_of(&only_tunnel(&out).1);
    assert_ne!(first, second);
}

#[test]
fn icmp_error_from_local_instance_is_translated_back() {
    let mut a = node_a();
    let orig = build(ip(C_NS), i_ip(1), L4::Udp { sp: 5000, dp: 9 }, b"data");
    let fwd = only_tun(&send_resolved(&mut a, Millis(0), orig.clone()));
    // The instance's kernel answers with port unreachable.
    let mut err = icmp_error(i_ns(1).into(), ip(C_IP), &fwd);
    let back = only_tun(&a.on_tun_packet(Millis(1), &mut err));
    assert_eq!(back, icmp_error(i_ip(1), ip(C_NS), &orig));
    // An error about an unknown flow is dropped.
    let other = build(ip(C_IP), i_ns(1).into(), L4::Udp { sp: 1, dp: 1 }, b"");
    let mut err = icmp_error(i_ns(1).into(), ip(C_IP), &other);
    assert_eq!(
        a.on_tun_packet(Millis(2), &mut err),
        vec![Action::Drop(DropReason::NoFlow)]
    );
}

#[test]
fn icmp_error_from_remote_instance_goes_back_through_both_cores() {
    let mut a = node_a();
    let mut b = node_b();
    let orig = build(ip(C_NS6), ip(RR6), L4::Udp { sp: 5000, dp: 9 }, b"data");
    // RR6 picks instance 1 (local) first; burn it with another flow.
    send_resolved(
        &mut a,
        Millis(0),
        build(ip(C_NS6), ip(RR6), L4::Udp { sp: 1, dp: 9 }, b""),
    );
    let (_, mut dgram) = only_tunnel(&send_resolved(&mut a, Millis(0), orig.clone()));
    let delivered = only_tun(&b.on_tunnel_datagram(Millis(0), ip(NODE_A), &mut dgram));
    let mut err = icmp_error(i_ns6(2).into(), ip(C_IP6), &delivered);
    let (node, mut raw) = only_tunnel(&b.on_tun_packet(Millis(1), &mut err));
    assert_eq!(node, ip(NODE_A));
    let back = only_tun(&a.on_tunnel_datagram(Millis(1), ip(NODE_B), &mut raw));
    assert_eq!(back, icmp_error(ip(RR6), ip(C_NS6), &orig));
}

#[test]
fn drops_are_typed_and_counted() {
    let mut a = node_a();
    assert_eq!(
        a.on_tun_packet(Millis(0), &mut []),
        vec![Action::Drop(DropReason::NotIp)]
    );
    assert_eq!(
        a.on_tun_packet(Millis(0), &mut [0x12; 30]),
        vec![Action::Drop(DropReason::NotIp)]
    );
    assert_eq!(
        a.on_tun_packet(Millis(0), &mut [0x45; 30]),
        vec![Action::Drop(DropReason::Malformed)]
    );
    let mut frag = build(ip(C_NS), ip(RR), L4::Udp { sp: 1, dp: 2 }, b"abc");
    frag[6] |= 0x20;
    testutil::recompute(&mut frag);
    assert_eq!(
        a.on_tun_packet(Millis(0), &mut frag),
        vec![Action::Drop(DropReason::Fragment)]
    );
    // Not a service IP and no flow.
    let mut p = build(ip(C_NS), ip("8.8.8.8"), L4::Udp { sp: 1, dp: 53 }, b"");
    assert_eq!(
        a.on_tun_packet(Millis(0), &mut p),
        vec![Action::Drop(DropReason::NoFlow)]
    );
    // A tunnel datagram for somebody else's subnet: no flow of this node
    // has that destination.
    let mut p = build(ip(C_IP), ip("10.18.0.70"), L4::Udp { sp: 1, dp: 53 }, b"");
    assert_eq!(
        a.on_tunnel_datagram(Millis(0), ip(NODE_B), &mut p),
        vec![Action::Drop(DropReason::NotServiceFlow)]
    );
    // For the service range, but the reply of no flow of this node.
    let mut p = build(i_ns(2).into(), ip(C_IP), L4::Udp { sp: 53, dp: 1 }, b"");
    assert_eq!(
        a.on_tunnel_datagram(Millis(0), ip(NODE_B), &mut p),
        vec![Action::Drop(DropReason::NotLocal)]
    );
    let c = a.counters();
    assert_eq!(
        (
            c.drop_not_ip,
            c.drop_malformed,
            c.drop_fragment,
            c.drop_no_flow,
            c.drop_not_local,
            c.drop_not_service_flow,
        ),
        (2, 1, 1, 1, 1, 1)
    );
    assert_eq!(c.dropped(DropReason::NotIp), 2);
    let text = c.to_string();
    assert!(text.contains("\ndrop_not_ip 2\n"));
    assert!(text.starts_with("tun_in 5\n"));
    assert!(text.lines().all(|l| l.split(' ').count() == 2));
}

#[test]
fn every_truncation_is_dropped_not_panicking() {
    let mut a = node_a();
    let mut b = node_b();
    let mut samples = vec![
        build(ip(C_NS), ip(RR), tcp(1, 80, testutil::SYN), b"payload"),
        build(ip(C_NS6), ip(RR6), L4::Udp { sp: 1, dp: 53 }, b"payload"),
        build(
            ip(C_NS),
            ip(RR),
            L4::Echo {
                id: 1,
                seq: 1,
                request: true,
            },
            b"x",
        ),
    ];
    let inner = build(ip(C_IP), i_ns(2).into(), L4::Udp { sp: 1, dp: 53 }, b"q");
    samples.push(icmp_error(i_ns(2).into(), ip(C_IP), &inner));
    for s in &samples {
        for n in 0..s.len() {
            let out = a.on_tun_packet(Millis(0), &mut s[..n].to_vec());
            assert!(matches!(out[..], [Action::Drop(_)]), "tun cut {n}: {out:?}");
            let out = b.on_tunnel_datagram(Millis(0), ip(NODE_A), &mut s[..n].to_vec());
            assert!(
                matches!(out[..], [Action::Drop(_)]),
                "tunnel cut {n}: {out:?}"
            );
        }
    }
    assert_eq!(a.counters().drops_total(), a.counters().tun_in);
    assert_eq!(b.counters().drops_total(), b.counters().tunnel_in);
}

// ---- in-place entry points ----

/// Two cores built alike, one driven through the copying entry points and
/// one through the in-place ones; every input goes to both, and each step
/// checks that the in-place result, made actions, is exactly the copying
/// result, and that the counters and tables agree.
struct Twin {
    copying: NetManagerCore,
    in_place: NetManagerCore,
    extra: Vec<Action>,
}

impl Twin {
    fn new(make: fn() -> NetManagerCore) -> Twin {
        Twin {
            copying: make(),
            in_place: make(),
            // Stale contents: the entry points must clear it.
            extra: vec![Action::Drop(DropReason::NotIp)],
        }
    }

    fn tun(&mut self, now: Millis, pkt: &[u8]) -> Vec<Action> {
        let copied = self.copying.on_tun_packet(now, &mut pkt.to_vec());
        let mut buf = pkt.to_vec();
        let fwd = self
            .in_place
            .tun_packet_in_place(now, &mut buf, &mut self.extra);
        self.check(pkt, &buf, fwd, copied)
    }

    fn tunnel(&mut self, now: Millis, from: IpAddr, pkt: &[u8]) -> Vec<Action> {
        let copied = self
            .copying
            .on_tunnel_datagram(now, from, &mut pkt.to_vec());
        let mut buf = pkt.to_vec();
        let fwd = self
            .in_place
            .tunnel_datagram_in_place(now, from, &mut buf, &mut self.extra);
        self.check(pkt, &buf, fwd, copied)
    }

    /// Resolutions go through the one (copying) entry point of both cores.
    fn resolve(&mut self, now: Millis, svc: IpAddr, res: Resolution) -> Vec<Action> {
        let a = self.copying.on_resolution(now, svc, Ok(res.clone()));
        let b = self.in_place.on_resolution(now, svc, Ok(res));
        assert_eq!(a, b);
        self.same_state();
        a
    }

    fn check(
        &mut self,
        input: &[u8],
        buf: &[u8],
        fwd: Option<Forward>,
        copied: Vec<Action>,
    ) -> Vec<Action> {
        let mut rebuilt = self.extra.clone();
        match fwd {
            Some(f) => {
                assert!(
                    self.extra.is_empty(),
                    "a forward comes alone: {:?}",
                    self.extra
                );
                rebuilt.push(f.to_action(buf));
            }
            None => assert_eq!(buf, input, "not forwarded: left unchanged"),
        }
        assert_eq!(rebuilt, copied);
        self.same_state();
        // Stale contents again for the next call.
        self.extra.push(Action::Drop(DropReason::NotIp));
        copied
    }

    fn same_state(&self) {
        assert_eq!(self.copying.counters(), self.in_place.counters());
        assert_eq!(
            self.copying.conntrack().len(),
            self.in_place.conntrack().len()
        );
        assert_eq!(self.copying.cache().len(), self.in_place.cache().len());
    }
}

#[test]
fn in_place_matches_copying_on_every_path() {
    let mut a = Twin::new(node_a);
    let mut b = Twin::new(node_b);

    // Query and release: the first packets to a service queue behind one
    // query; the answer releases them.
    let svc = i_ip(1);
    let syn = build(ip(C_NS), svc, tcp(40000, 80, testutil::SYN), b"");
    assert_eq!(a.tun(Millis(0), &syn), vec![Action::Query(svc)]);
    assert!(a.tun(Millis(0), &syn).is_empty(), "queued behind the query");
    let out = a.resolve(Millis(1), svc, resolution(&svc.to_string()));
    assert_eq!(out.len(), 2);

    // Local client to local instance and back.
    let p = build(ip(C_NS), svc, tcp(40000, 80, testutil::ACK), b"data");
    let fwd = only_tun(&a.tun(Millis(2), &p));
    assert_eq!(dst_of(&fwd), IpAddr::V4(i_ns(1)));
    assert_eq!(only_tun(&a.tun(Millis(3), &mirror(&fwd))), mirror(&p));

    // An ICMP error from the local instance, translated back.
    let err = icmp_error(i_ns(1).into(), ip(C_IP), &fwd);
    assert_eq!(
        only_tun(&a.tun(Millis(4), &err)),
        icmp_error(svc, ip(C_NS), &p)
    );

    // Local client to an instance on B: out through the tunnel.
    let svc2 = i_ip(2);
    let q = build(ip(C_NS), svc2, L4::Udp { sp: 5000, dp: 53 }, b"q");
    assert_eq!(a.tun(Millis(5), &q), vec![Action::Query(svc2)]);
    let (node, _) = only_tunnel(&a.resolve(Millis(5), svc2, resolution(&svc2.to_string())));
    assert_eq!(node, ip(NODE_B));
    let (node, dgram) = only_tunnel(&a.tun(Millis(6), &q));
    assert_eq!(node, ip(NODE_B));

    // B: tunnel in, passthrough to the local instance. Bytes past the IP
    // total length are not part of the packet: the forward's `len` leaves
    // them out, as the copy does.
    let mut padded = dgram.clone();
    padded.extend_from_slice(&[0xee; 7]);
    assert_eq!(only_tun(&b.tunnel(Millis(6), ip(NODE_A), &padded)), dgram);
    // B: the instance's answer goes back raw through the tunnel...
    let (node, raw) = only_tunnel(&b.tun(Millis(7), &mirror(&dgram)));
    assert_eq!(node, ip(NODE_A));
    // ... and A translates it back for the client.
    assert_eq!(only_tun(&a.tunnel(Millis(8), ip(NODE_B), &raw)), mirror(&q));

    // A service that resolves to nothing usable: an ICMP error in `extra`
    // and a drop, no forward.
    let empty = ip(RR6);
    let e = build(ip(C_NS6), empty, L4::Udp { sp: 1, dp: 2 }, b"");
    assert_eq!(a.tun(Millis(9), &e), vec![Action::Query(empty)]);
    a.resolve(Millis(9), empty, Resolution::new(empty, vec![]));
    let e2 = build(ip(C_NS6), empty, L4::Udp { sp: 3, dp: 2 }, b"");
    let out = a.tun(Millis(10), &e2);
    assert!(
        matches!(
            &out[..],
            [
                Action::WriteTun(_),
                Action::Drop(DropReason::UnknownService)
            ]
        ),
        "{out:?}"
    );

    // Drops.
    let mut frag = build(ip(C_NS), ip(RR), L4::Udp { sp: 1, dp: 2 }, b"abc");
    frag[6] |= 0x20;
    testutil::recompute(&mut frag);
    for (bad, why) in [
        (vec![], DropReason::NotIp),
        (vec![0x12; 30], DropReason::NotIp),
        (vec![0x45; 30], DropReason::Malformed),
        (frag, DropReason::Fragment),
        (
            build(ip(C_NS), ip("8.8.8.8"), L4::Udp { sp: 1, dp: 53 }, b""),
            DropReason::NoFlow,
        ),
    ] {
        assert_eq!(a.tun(Millis(11), &bad), vec![Action::Drop(why)]);
        let out = b.tunnel(Millis(11), ip(NODE_A), &bad);
        assert!(matches!(out[..], [Action::Drop(_)]), "{out:?}");
    }
    let elsewhere = build(ip(C_IP), ip("10.18.0.70"), L4::Udp { sp: 1, dp: 53 }, b"");
    assert_eq!(
        a.tunnel(Millis(11), ip(NODE_B), &elsewhere),
        vec![Action::Drop(DropReason::NotServiceFlow)]
    );
    let no_reply = build(i_ns(2).into(), ip(C_IP), L4::Udp { sp: 53, dp: 9 }, b"");
    assert_eq!(
        a.tunnel(Millis(11), ip(NODE_B), &no_reply),
        vec![Action::Drop(DropReason::NotLocal)]
    );
    assert_eq!(
        a.tunnel(Millis(11), ip("192.168.0.99"), &no_reply),
        vec![Action::Drop(DropReason::UnknownPeer)]
    );
    assert!(a.in_place.counters().drops_total() > 0);
    assert!(a.in_place.counters().tunnel_out > 0);
}

// ---- property tests ----

fn arb_l4() -> impl Strategy<Value = L4> {
    prop_oneof![
        (1..u16::MAX, 1..u16::MAX).prop_map(|(sp, dp)| L4::Tcp {
            sp,
            dp,
            flags: testutil::SYN
        }),
        (1..u16::MAX, 1..u16::MAX).prop_map(|(sp, dp)| L4::Udp { sp, dp }),
        any::<u16>().prop_map(|id| L4::Echo {
            id,
            seq: 1,
            request: true
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Whatever the service kind, family, protocol and whether the chosen
    /// instance is local or remote, the client gets back exactly the
    /// mirror of what it sent, with checksums equal to a full
    /// recomputation at every hop.
    #[test]
    fn client_sees_exact_mirror(
        v6 in any::<bool>(),
        kind in 0..3usize,
        nth in 0..3usize,
        l4 in arb_l4(),
        payload in proptest::collection::vec(any::<u8>(), 0..48),
    ) {
        let mut a = node_a();
        let mut b = node_b();
        let (client, svc) = match (v6, kind) {
            (false, 0) => (ip(C_NS), ip(RR)),
            (false, 1) => (ip(C_NS), ip(CLOSEST)),
            (false, _) => (ip(C_NS), i_ip(2)),
            (true, 0) => (ip(C_NS6), ip(RR6)),
            (true, _) => (ip(C_NS6), ip(CLOSEST6)),
        };
        // Advance the rotation by `nth` unrelated flows.
        for i in 0..nth {
            send_resolved(&mut a, Millis(0), build(client, svc, L4::Udp { sp: 1, dp: 1 + i as u16 }, b""));
        }
        let orig = build(client, svc, l4, &payload);
        let out = send_resolved(&mut a, Millis(1), orig.clone());
        let back = match &out[..] {
            [Action::WriteTun(fwd)] => {
                prop_assert!(checksums_full(fwd));
                let mut reply = mirror(fwd);
                only_tun(&a.on_tun_packet(Millis(2), &mut reply))
            }
            [Action::SendTunnel { datagram, .. }] => {
                prop_assert!(checksums_full(datagram));
                let mut d = datagram.clone();
                let delivered = only_tun(&b.on_tunnel_datagram(Millis(2), ip(NODE_A), &mut d));
                let mut reply = mirror(&delivered);
                let (_, mut raw) = only_tunnel(&b.on_tun_packet(Millis(3), &mut reply));
                only_tun(&a.on_tunnel_datagram(Millis(4), ip(NODE_B), &mut raw))
            }
            other => panic!("{other:?}"),
        };
        prop_assert_eq!(back, mirror(&orig));
    }

    /// Arbitrary bytes through the in-place entry points give what the
    /// copying ones give, on a core with flows of every kind.
    #[test]
    fn in_place_matches_copying_on_arbitrary_input(
        bytes in proptest::collection::vec(any::<u8>(), 0..96),
        first in prop_oneof![Just(0x45u8), Just(0x60), any::<u8>()],
    ) {
        let mut a = Twin::new(node_a);
        a.tun(Millis(0), &build(ip(C_NS), ip(RR), L4::Udp { sp: 1, dp: 1 }, b""));
        a.resolve(Millis(0), ip(RR), resolution(RR));
        let mut p = bytes.clone();
        if let Some(f) = p.first_mut() { *f = first; }
        a.tun(Millis(1), &p);
        a.tunnel(Millis(1), ip(NODE_B), &p);
    }

    /// Arbitrary bytes into both entry points: never a panic, always
    /// exactly one drop or one forwarded packet, everything counted.
    #[test]
    fn arbitrary_input_never_panics(
        bytes in proptest::collection::vec(any::<u8>(), 0..96),
        first in prop_oneof![Just(0x45u8), Just(0x60), any::<u8>()],
    ) {
        let mut a = node_a();
        let mut p = bytes.clone();
        if let Some(f) = p.first_mut() { *f = first; }
        let mut q = p.clone();
        let out = a.on_tun_packet(Millis(0), &mut p);
        prop_assert!(out.len() <= 2);
        let out = a.on_tunnel_datagram(Millis(0), ip(NODE_B), &mut q);
        prop_assert_eq!(out.len(), 1);
    }
}

#[test]
fn the_tunnel_accepts_known_peers_and_service_flows_only() {
    // B knows no peer at start.
    let mut b = NetManagerCore::new(Config {
        peers: vec![],
        ..node_b_cfg()
    });
    let dgram = |src: &str, dst: IpAddr| build(ip(src), dst, L4::Udp { sp: 4000, dp: 80 }, b"x");
    let local = IpAddr::V4(i_ns(2));
    // The injection of the issue: from a host that is no node.
    let mut p = dgram("10.30.7.7", local);
    assert_eq!(
        b.on_tunnel_datagram(Millis(0), ip("10.10.0.99"), &mut p),
        vec![Action::Drop(DropReason::UnknownPeer)]
    );
    // Nor is A a peer yet; nor is the node itself.
    let mut p = dgram(C_IP, local);
    for from in [NODE_A, NODE_B] {
        assert_eq!(
            b.on_tunnel_datagram(Millis(0), ip(from), &mut p.clone()),
            vec![Action::Drop(DropReason::UnknownPeer)]
        );
    }
    assert_eq!(b.counters().drop_unknown_peer, 3);
    assert_eq!(b.conntrack().len(), 0);
    // A resolution naming instances on A makes A a peer (B never adds
    // itself).
    b.on_resolution(Millis(1), ip(RR), Ok(resolution(RR)));
    assert!(b.is_peer(ip(NODE_A)) && !b.is_peer(ip(NODE_B)));
    assert!(matches!(
        &b.on_tunnel_datagram(Millis(2), ip(NODE_A), &mut p)[..],
        [Action::WriteTun(_)]
    ));

    // From a known peer, inner addresses must fit a service flow: an
    // external source (the instance would answer it), an underlay or
    // loopback address, a destination that is no local instance nor
    // service range.
    for (src, dst) in [
        ("8.8.8.8", local),
        ("10.10.0.1", local),
        ("127.0.0.1", local),
        (C_IP, ip("8.8.8.8")),
        (C_IP, ip("10.10.0.2")),
        (C_IP, ip("10.18.0.2")),
        ("2001:db8::1", IpAddr::V6(i_ns6(2))),
        (C_IP6, ip("fd18:a::9")),
    ] {
        let mut p = dgram(src, dst);
        assert_eq!(
            b.on_tunnel_datagram(Millis(3), ip(NODE_A), &mut p),
            vec![Action::Drop(DropReason::NotServiceFlow)],
            "{src} > {dst}"
        );
    }
    assert_eq!(b.counters().drop_not_service_flow, 8);
    // Every source range of a flow: an instance IP, a namespace address, a
    // gateway's internal address (IPv4 and IPv6).
    for (n, src) in ["10.30.1.77", "10.18.0.9", "10.30.255.253"]
        .into_iter()
        .enumerate()
    {
        let mut p = build(
            ip(src),
            local,
            L4::Udp {
                sp: 5000 + n as u16,
                dp: 80,
            },
            b"x",
        );
        assert!(matches!(
            &b.on_tunnel_datagram(Millis(4), ip(NODE_A), &mut p)[..],
            [Action::WriteTun(_)]
        ));
    }
    let mut p = build(
        ip("fdff:7fff::fffd"),
        IpAddr::V6(i_ns6(2)),
        L4::Udp { sp: 5000, dp: 80 },
        b"x",
    );
    assert!(matches!(
        &b.on_tunnel_datagram(Millis(4), ip(NODE_A), &mut p)[..],
        [Action::WriteTun(_)]
    ));
    let c = b.counters();
    assert_eq!(c.tunnel_in, c.tun_out + c.drops_total(), "{c}");
}

#[test]
fn an_icmp_error_through_the_tunnel_is_judged_by_its_flow() {
    // A router on B's side (B's underlay address, no range of a flow)
    // reports on A's flow: accepted, because the flow it quotes fits.
    let (mut a, mut b) = (node_a(), node_b());
    let pkt = build(ip(C_NS), i_ip(2), L4::Udp { sp: 7000, dp: 80 }, b"x");
    let out = send_resolved(&mut a, Millis(0), pkt);
    let Some(Action::SendTunnel { datagram, .. }) = out.last() else {
        panic!("{out:?}")
    };
    let mut d = datagram.clone();
    assert!(matches!(
        &b.on_tunnel_datagram(Millis(1), ip(NODE_A), &mut d)[..],
        [Action::WriteTun(_)]
    ));
    let mut err = icmp_error(ip(NODE_B), ip(C_IP), &d);
    let back = b.on_tun_packet(Millis(2), &mut err);
    let Some(Action::SendTunnel { datagram, .. }) = back.last() else {
        panic!("{back:?}")
    };
    let mut raw = datagram.clone();
    let out = a.on_tunnel_datagram(Millis(3), ip(NODE_B), &mut raw);
    assert!(matches!(&out[..], [Action::WriteTun(_)]), "{out:?}");
    assert_eq!(a.counters().drop_not_service_flow, 0);
}

mod fragmented;
