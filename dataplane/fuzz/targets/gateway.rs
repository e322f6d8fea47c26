//! The gateway core: [`GatewayCore::packet_in_place`] on a sequence of
//! packets (see [`super::common::records`]), with the exposures of
//! `scenarios/ext-to-svc-gateway-cluster.yaml` and its IPv6 variant (the
//! addresses of the packets in its seeds), ICMP echo exposed for the same
//! service addresses (`gateway-echo.yaml`'s seeds), a tiny Forward table
//! and NAPT range so the "full" paths are reached.
//!
//! Invariants: every packet ends as exactly one of request, reply or
//! drop (the counters agree); a dropped packet is unchanged; a rewritten
//! one keeps its length and every checksum it had valid; a request goes
//! from the gateway's internal address to an exposed service's address
//! and port (an echo: to a service with ICMP exposed), never anywhere else; a reply goes from the internal address
//! and an exposed port to a client outside the platform's networks.
//! Every service's answer to a request (addresses and ports swapped) is
//! fed back, so replies and closing flows are exercised.

use std::net::{Ipv6Addr, SocketAddr};

use hoplab_dataplane::gateway::{Exposure, GatewayConfig, GatewayCore, Proto, Verdict};
use hoplab_dataplane::packet::IpPacket;

use super::common::{addrs, records, reply, Checks};

pub fn core() -> GatewayCore {
    let mut core = GatewayCore::new(GatewayConfig {
        internal6: Some(Ipv6Addr::new(0xfdff, 0x7fff, 0, 0, 0, 0, 0, 0xfffd)),
        max_flows: 4,
        napt_ports: (60000, 60002),
        ..GatewayConfig::default()
    });
    for (proto, port, service) in [
        (Proto::Tcp, 8080, "10.30.30.30:80"),
        (Proto::Udp, 5353, "10.30.30.30:53"),
        (Proto::Tcp, 8080, "[fdff:2000::30]:80"),
    ] {
        let service = service.parse().expect("a socket address");
        core.expose(Exposure {
            proto,
            port,
            service,
        })
        .expect("a valid exposure");
    }
    for service in ["10.30.30.30", "fdff:2000::30"] {
        core.expose(Exposure::icmp(service.parse().expect("an address")))
            .expect("a valid ICMP exposure");
    }
    core
}

pub fn packet(data: &[u8]) {
    let mut core = core();
    let services: Vec<SocketAddr> = core.exposures().iter().map(|e| e.service).collect();
    let ports: Vec<u16> = core.exposures().iter().map(|e| e.port).collect();
    let mut now = hoplab_dataplane::Millis(0);
    for r in records(data) {
        if r.advance.0 > 0 {
            now = now + r.advance;
            core.expire(now);
        }
        let mut next = Some(r.bytes);
        while let Some(packet) = next.take() {
            let mut buf = packet.clone();
            let verdict = core.packet_in_place(now, &mut buf);
            let cfg = core.config();
            let (src, dst) = match verdict {
                Verdict::Drop(_) => {
                    assert_eq!(buf, packet, "a dropped packet was changed");
                    continue;
                }
                _ => addrs(&buf),
            };
            assert_eq!(buf.len(), packet.len());
            Checks::of(&packet).assert_kept(&Checks::of(&buf), "gateway rewrite");
            let mut view = buf.clone();
            let v = IpPacket::new_checked(&mut view).expect("a rewritten packet is valid");
            let Some((sp, dp)) = v.src_port().zip(v.dst_port()) else {
                // An ICMP error about a flow (see the `gateway_icmp` target).
                assert!(v.quote().is_some(), "rewritten: TCP, UDP or an ICMP error");
                continue;
            };
            assert_eq!(Some(src), cfg.internal(v.is_ipv6()));
            // An echo's identifier is no port: its exposure has port 0.
            let echo = v.icmp_type_code().is_some();
            if verdict == Verdict::Request {
                let dp = if echo { 0 } else { dp };
                assert!(
                    services.contains(&SocketAddr::new(dst, dp)),
                    "a request to {dst}:{dp}, not an exposed service"
                );
                next = reply(&buf);
            } else {
                let sp = if echo { 0 } else { sp };
                assert!(ports.contains(&sp), "a reply from port {sp}, not exposed");
                assert!(
                    !cfg.is_internal(dst),
                    "a reply to {dst}, inside the platform"
                );
            }
        }
    }
    let c = core.counters();
    assert_eq!(c.packets_in, c.requests + c.replies + c.drops_total());
}
