//! Nanoseconds per packet on the gateway's per-packet path:
//! `GatewayCore::packet_in_place` as the shell calls it, the packet
//! rewritten in the receive buffer.
//!
//! Ids start with `gateway/` (the net manager's bench has `netmanager/`).
//! `gateway/request/*`: an external client's packet to the exposed port, its flow
//! existing (parse, reply-index probe, request-index lookup, four
//! rewrites). `reply/*`: the service's answer (parse, reply-index lookup,
//! four rewrites). Every iteration first restores the packet into the
//! buffer (a ~100-byte `copy_from_slice`, included).
//!
//! `gateway/request_super/*_tcp`: a request of the same flow carrying
//! ~60 KiB, as a TUN with segmentation offload hands over a TCP
//! super-packet: one call rewrites it (its copy into the buffer is not
//! timed).
//!
//! `gateway/new_flow/*`: time per new flow, creating 1024 flows in a fresh core
//! (its construction is not timed): `client_ports` from one client with
//! distinct source ports (each keeps its port), `napt` from distinct
//! clients with the same source port (all but the first get a NAPT port).
//! Includes the growth of the request index and of the slab.

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use etherparse::PacketBuilder;

use hoplab_dataplane::gateway::{Exposure, GatewayConfig, GatewayCore, Proto, Verdict};
use hoplab_dataplane::Millis;

const PAYLOAD: [u8; 64] = [0x5a; 64];
const INTERNAL6: &str = "fdff:7fff::fffd";

/// Payload of a TCP super-packet, as a TUN with segmentation offload
/// hands it over (the core sees one IP packet of ~60 KiB).
const SUPER_PAYLOAD: usize = 60_000;

fn packet(src: SocketAddr, dst: SocketAddr, tcp: bool) -> Vec<u8> {
    packet_sized(src, dst, tcp, &PAYLOAD)
}

fn packet_sized(src: SocketAddr, dst: SocketAddr, tcp: bool, payload: &[u8]) -> Vec<u8> {
    let ip = match (src, dst) {
        (SocketAddr::V4(s), SocketAddr::V4(d)) => {
            PacketBuilder::ipv4(s.ip().octets(), d.ip().octets(), 64)
        }
        (SocketAddr::V6(s), SocketAddr::V6(d)) => {
            PacketBuilder::ipv6(s.ip().octets(), d.ip().octets(), 64)
        }
        _ => unreachable!("mixed families"),
    };
    let mut out = Vec::new();
    if tcp {
        ip.tcp(src.port(), dst.port(), 1, 4096)
            .ack(1)
            .write(&mut out, payload)
            .expect("build tcp");
    } else {
        ip.udp(src.port(), dst.port())
            .write(&mut out, payload)
            .expect("build udp");
    }
    out
}

fn sa(s: &str) -> SocketAddr {
    s.parse().expect("socket address")
}

/// A gateway exposing port 8080 (TCP and UDP, both families).
fn gateway() -> GatewayCore {
    let mut core = GatewayCore::new(GatewayConfig {
        internal6: Some(INTERNAL6.parse().expect("v6")),
        ..GatewayConfig::default()
    });
    for proto in [Proto::Tcp, Proto::Udp] {
        for service in ["10.30.30.30:80", "[fdff:30::30]:80"] {
            core.expose(Exposure {
                proto,
                port: 8080,
                service: sa(service),
            })
            .expect("expose");
        }
    }
    core
}

fn internal(v6: bool, port: u16) -> SocketAddr {
    if v6 {
        SocketAddr::new(INTERNAL6.parse().expect("v6"), port)
    } else {
        sa(&format!("10.30.255.253:{port}"))
    }
}

/// A gateway with one flow; its request and its reply packets.
fn setup(v6: bool, tcp: bool) -> (GatewayCore, Vec<u8>, Vec<u8>) {
    let mut core = gateway();
    let (client, service) = if v6 {
        (sa("[2001:db8::7]:51671"), sa("[fdff:30::30]:80"))
    } else {
        (sa("93.6.1.78:51671"), sa("10.30.30.30:80"))
    };
    let request = packet(client, internal(v6, 8080), tcp);
    let reply = packet(service, internal(v6, 51671), tcp);
    let mut buf = request.clone();
    assert_eq!(core.packet_in_place(Millis(0), &mut buf), Verdict::Request);
    (core, request, reply)
}

const N: u64 = 1024;

fn bench(c: &mut Criterion) {
    for (v6, tcp) in [(false, true), (false, false), (true, true), (true, false)] {
        let name = format!(
            "{}_{}",
            if v6 { "ipv6" } else { "ipv4" },
            if tcp { "tcp" } else { "udp" }
        );
        let (mut core, request, reply) = setup(v6, tcp);
        for (id, pkt, want) in [
            ("request", &request, Verdict::Request),
            ("reply", &reply, Verdict::Reply),
        ] {
            let mut buf = pkt.clone();
            assert_eq!(core.packet_in_place(Millis(1), &mut buf), want);
            c.bench_function(&format!("gateway/{id}/{name}"), |b| {
                b.iter(|| {
                    buf.copy_from_slice(pkt);
                    black_box(core.packet_in_place(Millis(1), black_box(&mut buf)))
                })
            });
        }
        if tcp {
            // One super-packet of the flow: one call rewrites it.
            let client = if v6 {
                sa("[2001:db8::7]:51671")
            } else {
                sa("93.6.1.78:51671")
            };
            let sup = packet_sized(client, internal(v6, 8080), true, &[0x5a; SUPER_PAYLOAD]);
            c.bench_function(&format!("gateway/request_super/{name}"), |b| {
                b.iter_batched_ref(
                    || sup.clone(),
                    |buf| core.packet_in_place(Millis(1), black_box(buf)),
                    BatchSize::LargeInput,
                )
            });
        }
        let drops = core.counters().drops_total();
        assert_eq!(drops, 0, "{name}: {}", core.counters());
    }

    // New flows: N packets, each opening a flow, into a fresh core.
    let client_ports: Vec<Vec<u8>> = (0..N as u16)
        .map(|i| {
            packet(
                sa(&format!("93.6.1.78:{}", 10000 + i)),
                internal(false, 8080),
                true,
            )
        })
        .collect();
    let napt: Vec<Vec<u8>> = (0..N as u16)
        .map(|i| {
            packet(
                sa(&format!("100.64.{}.{}:51671", i / 256, i % 256)),
                internal(false, 8080),
                true,
            )
        })
        .collect();
    for (id, pkts) in [("client_ports", &client_ports), ("napt", &napt)] {
        // Every packet opens a flow.
        let mut core = gateway();
        let mut buf = pkts[0].clone();
        for p in pkts {
            buf.copy_from_slice(p);
            assert_eq!(core.packet_in_place(Millis(0), &mut buf), Verdict::Request);
        }
        assert_eq!(core.counters().flows_created, N);
        c.bench_function(&format!("gateway/new_flow/{id}"), |b| {
            // One iteration: one new flow.
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                let mut done = 0;
                while done < iters {
                    let n = (iters - done).min(N) as usize;
                    let mut core = gateway();
                    let start = Instant::now();
                    for p in &pkts[..n] {
                        buf.copy_from_slice(p);
                        black_box(core.packet_in_place(Millis(0), black_box(&mut buf)));
                    }
                    total += start.elapsed();
                    done += n as u64;
                }
                total
            })
        });
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);
