//! Arbitrary bytes into the gateway core, IPv4 and IPv6 exposures set, a
//! tiny Forward table and NAPT range so the "full" paths are reached: it
//! must never panic, and a rewritten packet keeps its length.

#![no_main]

use std::net::Ipv6Addr;

use hoplab_dataplane::gateway::{Exposure, GatewayConfig, GatewayCore, Proto, Verdict};
use hoplab_dataplane::Millis;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut core = GatewayCore::new(GatewayConfig {
        internal6: Some(Ipv6Addr::new(0xfdff, 0x7fff, 0, 0, 0, 0, 0, 0xfffd)),
        max_flows: 4,
        napt_ports: (60000, 60002),
        ..GatewayConfig::default()
    });
    for (proto, port, service) in [
        (Proto::Tcp, 8080, "10.30.30.30:80"),
        (Proto::Udp, 5353, "10.30.30.30:53"),
        (Proto::Tcp, 8080, "[fdff:2000::1]:80"),
    ] {
        core.expose(Exposure {
            proto,
            port,
            service: service.parse().unwrap(),
        })
        .unwrap();
    }
    // The input is a sequence of packets, each prefixed by one length byte.
    let mut rest = data;
    let mut now = Millis(0);
    while let Some((&n, tail)) = rest.split_first() {
        let n = usize::from(n).min(tail.len());
        let mut buf = tail[..n].to_vec();
        let verdict = core.packet_in_place(now, &mut buf);
        if matches!(verdict, Verdict::Request | Verdict::Reply) {
            assert_eq!(buf.len(), n);
        }
        now = now + Millis(500);
        core.expire(now);
        rest = &tail[n..];
    }
});
