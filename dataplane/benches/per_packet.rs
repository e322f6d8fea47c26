//! Nanoseconds per packet on the net manager's per-packet path: parse,
//! look up an existing flow, rewrite addresses, update checksums, and hand
//! the packet back.
//!
//! Ids start with `netmanager/` (the gateway's bench has `gateway/`, so
//! criterion keeps their results apart). `netmanager/forward/*`: a local
//! client's packet to a service IP whose flow exists (outbound
//! translation). `netmanager/reply/*`: the instance's answer (reverse
//! translation). Both go through `NetManagerCore::tun_packet_in_place` as
//! the shell calls it: the packet is rewritten in the receive buffer, and
//! one `extra` vector is reused across packets (no allocation, no copy).
//! `netmanager/forward_super/*_tcp`: a forward packet of the same flow
//! carrying ~60 KiB, as a TUN with segmentation offload hands over a TCP
//! super-packet: the core rewrites it in one call (its copy into the
//! buffer is not timed). `netmanager/forward_copy/*`,
//! `netmanager/reply_copy/*`: the same through
//! `on_tun_packet`, which returns a fresh `Vec<Action>` with the packet
//! copied into it (the API tests and the harness use). `packet_view/*`:
//! parse and rewrite only, without the table: the floor under the others.
//!
//! Every iteration first restores the packet into the buffer (a ~100-byte
//! `copy_from_slice`, included in every id).
//!
//! Comparing two versions of the code: with 16 codegen units, whether
//! `checksum::Delta::bytes` is inlined into the packet view's address
//! writer depends on how the crate happens to be partitioned, which any
//! edit may change; that alone moved the IPv4 ids (`packet_view/*`
//! included) by ~10 ns. The workspace's `[profile.bench]` has one codegen
//! unit, so benchmarks compare the code rather than the partition.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use etherparse::PacketBuilder;

use hoplab_dataplane::netmanager::{
    Action, Config, Coords, Forward, Instance, LocalInstance, NetManagerCore, Resolution,
    ServiceIp, ServiceKind,
};
use hoplab_dataplane::packet::IpPacket;
use hoplab_dataplane::Millis;

const PAYLOAD: [u8; 64] = [0x5a; 64];

/// Payload of a TCP super-packet, as a TUN with segmentation offload
/// hands it over (the core sees one IP packet of ~60 KiB).
const SUPER_PAYLOAD: usize = 60_000;

fn packet(v6: bool, tcp: bool, src: IpAddr, dst: IpAddr) -> Vec<u8> {
    packet_sized(v6, tcp, src, dst, &PAYLOAD)
}

fn packet_sized(v6: bool, tcp: bool, src: IpAddr, dst: IpAddr, payload: &[u8]) -> Vec<u8> {
    let ip = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) if !v6 => PacketBuilder::ipv4(s.octets(), d.octets(), 64),
        (IpAddr::V6(s), IpAddr::V6(d)) => PacketBuilder::ipv6(s.octets(), d.octets(), 64),
        _ => unreachable!(),
    };
    let mut out = Vec::new();
    if tcp {
        ip.tcp(40000, 80, 1, 4096)
            .ack(1)
            .write(&mut out, payload)
            .expect("build tcp");
    } else {
        ip.udp(40000, 80)
            .write(&mut out, payload)
            .expect("build udp");
    }
    out
}

struct Setup {
    core: NetManagerCore,
    forward: Vec<u8>,
    reply: Vec<u8>,
}

/// A node with a local client and a local instance behind a round-robin
/// service IP; one flow established.
fn setup(v6: bool, tcp: bool) -> Setup {
    let node: IpAddr = Ipv4Addr::new(192, 168, 0, 1).into();
    let mut cfg = Config::new(node, (Ipv4Addr::new(10, 18, 0, 0), 26));
    cfg.subnet_v6 = Some(("fc00:a::".parse().expect("v6"), 64));
    let mut core = NetManagerCore::new(cfg);
    let c_ns = Ipv4Addr::new(10, 18, 0, 2);
    let c_ns6: Ipv6Addr = "fc00:a::2".parse().expect("v6");
    let c_ip = Ipv4Addr::new(10, 30, 0, 2);
    let c_ip6: Ipv6Addr = "fdff::2".parse().expect("v6");
    core.add_local_instance(LocalInstance {
        ns_ip: c_ns,
        ns_ip6: Some(c_ns6),
        instance_ip: Some(c_ip),
        instance_ip6: Some(c_ip6),
    });
    let i_ns = Ipv4Addr::new(10, 18, 0, 3);
    let i_ns6: Ipv6Addr = "fc00:a::3".parse().expect("v6");
    let svc: IpAddr = if v6 {
        "fdff:2000::1".parse::<Ipv6Addr>().expect("v6").into()
    } else {
        Ipv4Addr::new(10, 30, 1, 1).into()
    };
    let res = Resolution::new(
        svc,
        vec![Instance {
            ns_ip: i_ns,
            ns_ip6: Some(i_ns6),
            node,
            instance_number: 1,
            coords: Coords::default(),
            service_ips: vec![ServiceIp {
                kind: ServiceKind::RoundRobin,
                addr: svc,
            }],
        }],
    );
    let (c, c_src, inst): (IpAddr, IpAddr, IpAddr) = if v6 {
        (c_ns6.into(), c_ip6.into(), i_ns6.into())
    } else {
        (c_ns.into(), c_ip.into(), i_ns.into())
    };
    let forward = packet(v6, tcp, c, svc);
    let out = core.on_tun_packet(Millis(0), &mut forward.clone());
    assert_eq!(out, vec![Action::Query(svc)]);
    let out = core.on_resolution(Millis(0), svc, Ok(res));
    assert!(matches!(out[..], [Action::WriteTun(_)]), "{out:?}");
    // The instance's answer, as it reaches the TUN.
    let mut reply = packet(v6, tcp, inst, c_src);
    {
        let mut v = IpPacket::new_checked(&mut reply).expect("reply");
        v.set_src_port(80).expect("port");
        v.set_dst_port(40000).expect("port");
    }
    Setup {
        core,
        forward,
        reply,
    }
}

fn bench(c: &mut Criterion) {
    for v6 in [false, true] {
        for tcp in [true, false] {
            let name = format!(
                "{}_{}",
                if v6 { "ipv6" } else { "ipv4" },
                if tcp { "tcp" } else { "udp" }
            );
            let Setup {
                mut core,
                forward,
                reply,
            } = setup(v6, tcp);
            let mut extra = Vec::new();
            for (id, pkt) in [("forward", &forward), ("reply", &reply)] {
                let mut buf = pkt.clone();
                let fwd = core.tun_packet_in_place(Millis(1), &mut buf, &mut extra);
                assert_eq!(fwd, Some(Forward::Tun { len: pkt.len() }));
                assert!(extra.is_empty());
                c.bench_function(&format!("netmanager/{id}/{name}"), |b| {
                    b.iter(|| {
                        buf.copy_from_slice(pkt);
                        black_box(core.tun_packet_in_place(
                            Millis(1),
                            black_box(&mut buf),
                            &mut extra,
                        ))
                    })
                });
                c.bench_function(&format!("netmanager/{id}_copy/{name}"), |b| {
                    b.iter(|| {
                        buf.copy_from_slice(pkt);
                        black_box(core.on_tun_packet(Millis(1), black_box(&mut buf)))
                    })
                });
            }
            if tcp {
                // One super-packet of the same flow: one call rewrites it.
                let (src, dst) = {
                    let mut f = forward.clone();
                    let v = IpPacket::new_checked(&mut f).expect("valid");
                    (v.src(), v.dst())
                };
                let sup = packet_sized(v6, true, src, dst, &[0x5a; SUPER_PAYLOAD]);
                c.bench_function(&format!("netmanager/forward_super/{name}"), |b| {
                    b.iter_batched_ref(
                        || sup.clone(),
                        |buf| core.tun_packet_in_place(Millis(1), black_box(buf), &mut extra),
                        BatchSize::LargeInput,
                    )
                });
            }
            assert_eq!(core.counters().drops_total(), 0);
            let mut buf = forward.clone();
            let (a, d): (IpAddr, IpAddr) = if v6 {
                (
                    "fdff::9".parse::<Ipv6Addr>().expect("v6").into(),
                    "fc00:a::9".parse::<Ipv6Addr>().expect("v6").into(),
                )
            } else {
                (
                    Ipv4Addr::new(10, 30, 0, 9).into(),
                    Ipv4Addr::new(10, 18, 0, 9).into(),
                )
            };
            c.bench_function(&format!("packet_view/{name}"), |b| {
                b.iter(|| {
                    buf.copy_from_slice(&forward);
                    let mut v = IpPacket::new_checked(black_box(&mut buf)).expect("valid");
                    v.set_src(a).expect("family");
                    v.set_dst(d).expect("family");
                    black_box(v.len())
                })
            });
        }
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1))
        .sample_size(40);
    targets = bench
}
criterion_main!(benches);
