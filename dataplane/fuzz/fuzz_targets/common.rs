//! A node with one local client, one local and one remote instance behind
//! a round-robin service IP (IPv4 and IPv6), shared by the fuzz targets.

#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hoplab_dataplane::netmanager::{
    Action, Config, Coords, Instance, LocalInstance, NetManagerCore, Resolution, ServiceIp,
    ServiceKind,
};
use hoplab_dataplane::Millis;

pub const NODE: Ipv4Addr = Ipv4Addr::new(192, 168, 0, 1);
pub const PEER: Ipv4Addr = Ipv4Addr::new(192, 168, 0, 2);

pub fn core() -> NetManagerCore {
    let mut cfg = Config::new(NODE.into(), (Ipv4Addr::new(10, 18, 0, 0), 26));
    cfg.subnet_v6 = Some((Ipv6Addr::new(0xfc00, 0xa, 0, 0, 0, 0, 0, 0), 64));
    // Small bounds so the fuzzer reaches the "full" paths too.
    cfg.cache.queue_limit = 2;
    cfg.cache.max_entries = 4;
    cfg.conntrack.max_flows = 4;
    let mut core = NetManagerCore::new(cfg);
    core.add_local_instance(LocalInstance {
        ns_ip: Ipv4Addr::new(10, 18, 0, 2),
        ns_ip6: Some(Ipv6Addr::new(0xfc00, 0xa, 0, 0, 0, 0, 0, 2)),
        instance_ip: Some(Ipv4Addr::new(10, 30, 0, 2)),
        instance_ip6: Some(Ipv6Addr::new(0xfdff, 0, 0, 0, 0, 0, 0, 2)),
    });
    core
}

/// Any service IP resolves to two instances: 1 on this node, 2 on the peer.
pub fn resolution(service: IpAddr) -> Resolution {
    let inst = |n: u8, node: Ipv4Addr, x: f64| Instance {
        ns_ip: Ipv4Addr::new(10, 18, 0, 2 + n),
        ns_ip6: Some(Ipv6Addr::new(0xfc00, 0xa, 0, 0, 0, 0, 0, 2 + u16::from(n))),
        node: node.into(),
        instance_number: u32::from(n),
        coords: Coords::new(x, 0.0),
        service_ips: vec![ServiceIp {
            kind: ServiceKind::RoundRobin,
            addr: service,
        }],
    };
    Resolution::new(service, vec![inst(1, NODE, 0.0), inst(2, PEER, 10.0)])
}

/// Answers every query in `actions`, the first successfully and the rest
/// with a failure, feeding the answers back into the core.
pub fn answer(core: &mut NetManagerCore, now: Millis, actions: Vec<Action>) {
    let mut first = true;
    for a in actions {
        if let Action::Query(ip) = a {
            let result = if first {
                Ok(resolution(ip))
            } else {
                Err(hoplab_dataplane::netmanager::ResolveError::NotFound)
            };
            first = false;
            let _ = core.on_resolution(now, ip, result);
        }
    }
}

/// Splits the fuzzer's input into packets: each is one length byte followed
/// by that many bytes (the last one may be shorter).
pub fn packets(mut data: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    while let Some((&len, rest)) = data.split_first() {
        let n = usize::from(len).min(rest.len());
        out.push(&rest[..n]);
        data = &rest[n..];
    }
    out
}
