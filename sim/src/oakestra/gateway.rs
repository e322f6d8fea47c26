//! The gateway of a scenario and the internet around it: the `gateway`
//! section (which worker node runs it, its public address, what it
//! exposes) and `externals` (hosts outside the Oakestra network).
//! [`expand`] turns them into an `internet` router, a link from each
//! external and from the gateway node to it, the gateway's TUN and routes,
//! and the gateway process beside the node's net manager.
//!
//! # Address plan (adds to [`super::cluster`]'s)
//!
//! | what                              | where                                        |
//! |-----------------------------------|----------------------------------------------|
//! | router                            | host `internet`, IP forwarding on            |
//! | gateway public (`pub`)            | `gateway.public`/24; router `.1` of that /24 (`.254` if taken) |
//! | external (`eth0`)                 | `addr`/24; router `.1` of that /24 (`.254` if taken); default route to it |
//! | router's port to each            | named after the node / the external          |
//! | gateway TUN `gw0`                 | route `internal/32` (MTU 1450)               |
//! | gateway node                      | default via the router; each other node's /26 (IPv6: /64) over the underlay ([`super::underlay::emit_gateway_routes`]) |
//! | other worker nodes                | default toward the gateway node's underlay address (IPv6 too on an IPv6 underlay with `public6`) |
//! | router                            | `10.0.0.0/8` via the gateway's public address (`fc00::/7` via `public6`) |
//! | IPv6 (`public6`, `addr6`)         | each on its /64; router `::1` (`::2` if taken); `gw0` route `internal6/128` |
//!
//! The router sends private destinations to the gateway, as a hostile
//! neighbour on its segment could: what keeps them out is the gateway's
//! firewall, which is what the negative scenarios show.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hoplab_dataplane::gateway::{ExposeError, Exposure, GatewayConfig, Proto as CoreProto};

use super::cluster::OVERLAY_MTU;
use super::plan::{cidr, prefix, sysctls, Plan};
pub use super::underlay::INTERNET_HOST;
use crate::lab::dataplane::GatewayArgs;
pub use crate::lab::dataplane::{GW_TUN, PUBLIC_IF};
use crate::lab::{End, Host, Lab, Link, Process, Route, RouteDst, Tun};
use crate::scenario::{External, Gateway, Scenario};
use crate::values::{bad, check_name_len, Expose, Invalid, Proto};

/// The gateway's internal IPv6 address: in the service range `fdff::/16`
/// (routed to every node's TUN), outside the three service IP kinds'.
pub const DEFAULT_INTERNAL6: Ipv6Addr = Ipv6Addr::new(0xfdff, 0x7fff, 0, 0, 0, 0, 0, 0xfffd);

fn in_private(a: Ipv4Addr) -> bool {
    a.octets()[0] == 10
}

/// `a`'s /24 and the router's address on it.
fn router_side(a: Ipv4Addr) -> (u32, Ipv4Addr) {
    let net = u32::from(a) & 0xffff_ff00;
    let last = if a.octets()[3] == 1 { 254 } else { 1 };
    (net, Ipv4Addr::from(net | last))
}

/// `a`'s /64 and the router's address on it (`::1`, `::2` if taken).
fn router_side6(a: Ipv6Addr) -> (u128, Ipv6Addr) {
    let net = u128::from(a) & !((1u128 << 64) - 1);
    let last = if u128::from(a) == net | 1 { 2 } else { 1 };
    (net, Ipv6Addr::from(net | last))
}

/// A link end with `addr`/24 and, if given, `addr6`/64.
fn end(host: &str, ifname: &str, addr: Option<Ipv4Addr>, addr6: Option<Ipv6Addr>) -> End {
    let addrs = addr
        .map(|a| cidr(a, 24))
        .into_iter()
        .chain(addr6.map(|a| cidr(a, 64)))
        .collect();
    End::new(host, ifname, addrs)
}

/// The router and the segments on it, each with the field that made it.
struct Internet {
    router: Host,
    nets: BTreeMap<u32, String>,
    nets6: BTreeMap<u128, String>,
}

/// Checks `gateway` and `externals` and adds their hosts, links, routes
/// and the gateway process to `lab` (after [`super::cluster::expand`]).
pub fn expand(sc: &Scenario, plan: &Plan, lab: &mut Lab) -> Result<(), Invalid> {
    if sc.gateway.is_none() && sc.externals.is_empty() {
        return Ok(());
    }
    if lab.hosts.contains_key(INTERNET_HOST) || plan.nodes.contains_key(INTERNET_HOST) {
        return bad(
            format!("hosts.{INTERNET_HOST}"),
            format!("`{INTERNET_HOST}` is the externals' router: pick another host name"),
        );
    }
    let mut net = Internet {
        router: Host {
            sysctls: sysctls(&[
                ("net.ipv4.ip_forward", "1"),
                ("net.ipv4.conf.all.rp_filter", "0"),
            ]),
            ..Host::default()
        },
        nets: BTreeMap::new(),
        nets6: BTreeMap::new(),
    };
    if let Some(g) = &sc.gateway {
        let v6 = check_gateway(g, plan)?;
        emit_gateway(g, v6, plan, &mut net, lab);
    }
    let mut hosts = BTreeMap::new();
    for (i, x) in sc.externals.iter().enumerate() {
        let f = format!("externals[{i}]");
        check_name_len(format!("{f}.name"), &x.name, 15)?;
        if lab.hosts.contains_key(&x.name) || hosts.contains_key(&x.name) || x.name == INTERNET_HOST
        {
            return bad(
                format!("{f}.name"),
                format!("host name `{}` is already taken", x.name),
            );
        }
        let (host, link) = external(&f, x, &mut net)?;
        hosts.insert(x.name.clone(), host);
        lab.links.push(link);
    }
    lab.hosts.extend(hosts);
    lab.hosts.insert(INTERNET_HOST.to_string(), net.router);
    Ok(())
}

/// Is `ip` a service IP of the plan?
fn is_service_ip(plan: &Plan, ip: IpAddr) -> bool {
    plan.services.values().any(|(_, is)| {
        is.iter()
            .any(|i| i.service_ips.iter().any(|s| s.addr == ip))
    })
}

/// Validate the gateway: its node, addresses and exposures; its IPv6
/// (public, internal) addresses if it has any.
fn check_gateway(g: &Gateway, plan: &Plan) -> Result<Option<(Ipv6Addr, Ipv6Addr)>, Invalid> {
    if !plan.nodes.contains_key(&g.node) {
        return bad(
            "gateway.node",
            format!("undefined worker node `{}`", g.node),
        );
    }
    if g.max_flows == Some(0) {
        return bad(
            "gateway.max_flows",
            "0 would refuse every flow: give at least 1 (or leave it out for the gateway's default)",
        );
    }
    if in_private(g.public) || g.public.is_loopback() || g.public.is_unspecified() {
        return bad(
            "gateway.public",
            format!(
                "{} is not a public address (10.0.0.0/8 is the Oakestra network's)",
                g.public
            ),
        );
    }
    if g.internal.octets()[..2] != [10, 30] {
        return bad(
            "gateway.internal",
            format!("{} is not in the service range 10.30.0.0/16", g.internal),
        );
    }
    let internal = IpAddr::V4(g.internal);
    if is_service_ip(plan, internal) {
        return bad(
            "gateway.internal",
            format!("{internal} is a service IP: the gateway needs its own"),
        );
    }
    if g.internal6.is_some() && g.public6.is_none() {
        return bad(
            "gateway.internal6",
            "an internal IPv6 address needs `public6`",
        );
    }
    let v6 = match g.public6 {
        None => None,
        Some(p6) => {
            if (p6.segments()[0] & 0xfe00) == 0xfc00 || p6.is_loopback() || p6.is_unspecified() {
                return bad(
                    "gateway.public6",
                    format!("{p6} is not a public address (fc00::/7 is the network's)"),
                );
            }
            let i6 = g.internal6.unwrap_or(DEFAULT_INTERNAL6);
            if i6.segments()[0] != 0xfdff {
                return bad(
                    "gateway.internal6",
                    format!("{i6} is not in the service range fdff::/16"),
                );
            }
            if is_service_ip(plan, IpAddr::V6(i6)) {
                return bad(
                    "gateway.internal6",
                    format!("{i6} is a service IP: the gateway needs its own"),
                );
            }
            Some((p6, i6))
        }
    };
    let mut seen = BTreeMap::new();
    for (i, e) in g.expose.iter().enumerate() {
        check_expose(&format!("gateway.expose[{i}]"), e, g)?;
        if let Some(prev) = seen.insert((e.proto, e.port, e.service.is_ipv6()), i) {
            return bad(
                format!("gateway.expose[{i}].port"),
                format!("{} {} is also gateway.expose[{prev}]", e.proto, e.port),
            );
        }
    }
    Ok(v6)
}

/// Emit: the gateway node's public link to the router, the router's
/// routes to the Oakestra network, the node's TUN, routes and gateway
/// process, and every other node's default route through it.
fn emit_gateway(
    g: &Gateway,
    v6: Option<(Ipv6Addr, Ipv6Addr)>,
    plan: &Plan,
    net: &mut Internet,
    lab: &mut Lab,
) {
    let (pnet, raddr) = router_side(g.public);
    net.nets.insert(pnet, "gateway.public".into());
    let raddr6 = v6.map(|(p6, _)| {
        net.nets6
            .insert(router_side6(p6).0, "gateway.public6".to_string());
        net.router.ipv6 = true;
        net.router
            .sysctls
            .insert("net.ipv6.conf.all.forwarding".into(), "1".into());
        router_side6(p6).1
    });
    lab.links.push(Link {
        a: end(&g.node, PUBLIC_IF, Some(g.public), v6.map(|v| v.0)),
        b: end(INTERNET_HOST, &g.node, Some(raddr), raddr6),
        impair: None,
    });
    let r = &mut net.router.routes;
    r.push(Route::via(prefix(Ipv4Addr::new(10, 0, 0, 0), 8), g.public));
    if let Some((p6, _)) = v6 {
        r.push(Route::via(
            prefix(Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 0), 7),
            p6,
        ));
    }

    let host = lab.hosts.get_mut(&g.node).expect("cluster::expand made it");
    let tun = Tun {
        addr: vec![],
        mtu: Some(OVERLAY_MTU),
        txqueuelen: None,
    };
    host.tuns.insert(GW_TUN.to_string(), tun);
    host.routes.push(Route::dev(prefix(g.internal, 32), GW_TUN));
    host.routes.push(Route::via(RouteDst::Default, raddr));
    if let (Some((_, i6)), Some(r6)) = (v6, raddr6) {
        host.ipv6 = true;
        host.sysctls
            .insert("net.ipv6.conf.all.forwarding".into(), "1".into());
        host.routes.push(Route::dev(prefix(i6, 128), GW_TUN));
        host.routes.push(Route::via(RouteDst::Default, r6));
    }
    host.processes.push(Process {
        name: "gateway".into(),
        ready_timeout_ms: 5000,
        gateway: Some(GatewayArgs {
            node: g.node.clone(),
            public: g.public,
            internal: g.internal,
            v6,
            expose: g.expose.clone(),
            max_flows: g.max_flows,
        }),
        ..Process::default()
    });
    // Every other node's way out is the gateway; the gateway reaches
    // their instance subnets over the underlay.
    super::underlay::emit_gateway_routes(plan, &g.node, v6.is_some(), lab);
}

/// Validate an external's addresses (one per segment) and emit its host
/// and its link to the router.
fn external(f: &str, x: &External, net: &mut Internet) -> Result<(Host, Link), Invalid> {
    if x.addr.is_loopback() || x.addr.is_unspecified() || x.addr.is_multicast() {
        return bad(
            format!("{f}.addr"),
            format!("{} is not a host address", x.addr),
        );
    }
    let (xnet, raddr) = router_side(x.addr);
    if let Some(prev) = net.nets.insert(xnet, format!("{f}.addr")) {
        return bad(
            format!("{f}.addr"),
            format!(
                "{}/24 is also {prev}'s network: one external (or gateway) per /24",
                Ipv4Addr::from(xnet)
            ),
        );
    }
    let raddr6 = match x.addr6 {
        None => None,
        Some(a6) => {
            let (net6, r6) = router_side6(a6);
            if let Some(prev) = net.nets6.insert(net6, format!("{f}.addr6")) {
                return bad(
                    format!("{f}.addr6"),
                    format!(
                        "{}/64 is also {prev}'s network: one external (or gateway) per /64",
                        Ipv6Addr::from(net6)
                    ),
                );
            }
            net.router.ipv6 = true;
            net.router
                .sysctls
                .insert("net.ipv6.conf.all.forwarding".into(), "1".into());
            Some(r6)
        }
    };
    let mut routes = vec![Route::via(RouteDst::Default, raddr)];
    routes.extend(raddr6.map(|r6| Route::via(RouteDst::Default, r6)));
    let host = Host {
        ipv6: x.addr6.is_some(),
        routes,
        processes: x.echo.iter().map(Process::echo).collect(),
        ..Host::default()
    };
    let link = Link {
        a: end(&x.name, "eth0", Some(x.addr), x.addr6),
        b: end(INTERNET_HOST, &x.name, Some(raddr), raddr6),
        impair: None,
    };
    Ok((host, link))
}

/// The gateway core's settings that decide what it may expose: its
/// internal addresses (IPv6 only with `public6`).
fn core_config(g: &Gateway) -> GatewayConfig {
    GatewayConfig {
        internal4: g.internal,
        internal6: g.public6.map(|_| g.internal6.unwrap_or(DEFAULT_INTERNAL6)),
        ..GatewayConfig::default()
    }
}

/// An exposure's own checks, `field` being its path: the gateway core's
/// rule ([`GatewayConfig::check_exposure`]: a service IP of the Oakestra
/// ranges with a port, not the gateway's own address, of a family it has),
/// so that the file refuses exactly what the running gateway refuses.
pub fn check_expose(field: &str, e: &Expose, g: &Gateway) -> Result<(), Invalid> {
    let proto = match e.proto {
        Proto::Tcp => CoreProto::Tcp,
        Proto::Udp => CoreProto::Udp,
        Proto::Icmp => CoreProto::Icmp,
    };
    let x = Exposure {
        proto,
        port: e.port,
        service: e.service,
    };
    match core_config(g).check_exposure(&x) {
        Ok(()) => Ok(()),
        Err(ExposeError::PortZero) => bad(
            format!("{field}.port"),
            "port 0 cannot be exposed (a tcp or udp exposure needs `port`)",
        ),
        Err(ExposeError::IcmpPort(x)) if x.port != 0 => bad(
            format!("{field}.port"),
            "icmp has no ports: expose it with `service` (an IP) alone",
        ),
        Err(ExposeError::IcmpPort(_)) => bad(
            format!("{field}.service"),
            "icmp has no ports: the service is an IP alone",
        ),
        Err(ExposeError::NoInternalAddress(_)) => bad(
            format!("{field}.service"),
            "an IPv6 service needs the gateway's `public6`",
        ),
        Err(err) => bad(format!("{field}.service"), err.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::oakestra::parse;
    use crate::scenario::ScenarioErrors;

    use super::*;

    const OK: &str = "version: 1
clusters:
  - name: c1
    nodes:
      - {name: n1}
      - {name: gw}
services:
  - name: api
    round_robin: 10.30.30.30
    echo: {tcp: [80]}
    instances:
      - {node: n1}
gateway:
  node: gw
  public: 24.0.5.8
  expose:
    - {proto: tcp, port: 8080, service: \"10.30.30.30:80\"}
externals:
  - {name: client, addr: 93.6.1.78}
traffic:
  - {name: get, from: client, proto: tcp, to: \"24.0.5.8:8080\", sport: 51671}
";

    fn err(text: &str) -> ScenarioErrors {
        parse(Path::new("s.yaml"), "s", text).unwrap_err()
    }

    #[test]
    fn expands_router_links_routes_and_process() {
        let sc = parse(Path::new("s.yaml"), "s", OK).unwrap();
        assert!(sc.hosts.contains_key(INTERNET_HOST));
        let gw = &sc.hosts["gw"];
        assert!(gw.tuns.contains_key(GW_TUN));
        let p = gw.processes.iter().find(|p| p.gateway.is_some()).unwrap();
        let argv = p
            .gateway
            .as_ref()
            .unwrap()
            .argv("gateway", Path::new("/o/ctl"), Path::new("/o/c"))
            .join(" ");
        assert!(
            argv.contains("--public 24.0.5.8 --internal 10.30.255.253"),
            "{argv}"
        );
        assert!(argv.contains("--expose tcp:8080=10.30.30.30:80"), "{argv}");
        assert!(argv.contains("--control /o/ctl/gw-gw.sock"), "{argv}");
        // The net manager starts first: the gateway hands it packets.
        assert!(gw.processes[0].netmanager.is_some());
        // Each net manager accepts the tunnel datagrams of every other
        // node from the start, the gateway node's among them.
        let nm_argv = |h: &str| {
            sc.hosts[h].processes[0]
                .netmanager
                .as_ref()
                .unwrap()
                .argv("netmanager", Path::new("/o/ctl"), Path::new("/o/c"))
                .join(" ")
        };
        let (n1, gw) = (nm_argv("n1"), nm_argv("gw"));
        assert!(
            n1.contains("--peer 10.10.0.2") && !n1.contains("--peer 10.10.0.1"),
            "{n1}"
        );
        assert!(
            gw.contains("--peer 10.10.0.1") && !gw.contains("--peer 10.10.0.2"),
            "{gw}"
        );
        // n1 leaves through the gateway; the gateway reaches n1's subnet
        // through the underlay.
        let r = |h: &str| {
            sc.hosts[h]
                .routes
                .iter()
                .map(|r| format!("{:?} {:?}", r.to, r.via))
                .collect::<Vec<_>>()
                .join("; ")
        };
        assert!(r("n1").contains("Default Some(10.10.0.2)"), "{}", r("n1"));
        assert!(r("gw").contains("10.18.0.0"), "{}", r("gw"));
        assert!(
            r("client").contains("Default Some(93.6.1.1)"),
            "{}",
            r("client")
        );
        assert!(sc
            .capture_interfaces()
            .contains(&("gw".to_string(), "pub".to_string())));
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            ("node: gw", "node: gx", "gateway.node", "undefined worker node"),
            ("public: 24.0.5.8", "public: 10.1.2.3", "gateway.public", "not a public"),
            (
                "public: 24.0.5.8",
                "public: 24.0.5.8\n  internal: 10.31.0.1",
                "gateway.internal",
                "service range",
            ),
            (
                "public: 24.0.5.8",
                "public: 24.0.5.8\n  internal: 10.30.30.30",
                "gateway.internal",
                "is a service IP",
            ),
            (
                "port: 8080, service: \"10.30.30.30:80\"}",
                "port: 8080, service: \"10.30.30.30:80\"}\n    - {proto: tcp, port: 8080, service: \"10.30.1.1:80\"}",
                "gateway.expose[1].port",
                "also gateway.expose[0]",
            ),
            ("proto: tcp, port: 8080", "proto: icmp, port: 8080", "gateway.expose[0].port", "icmp has no ports"),
            ("proto: tcp, port: 8080, service: \"10.30.30.30:80\"", "proto: icmp, service: \"10.30.30.30:80\"", "gateway.expose[0].service", "icmp has no ports"),
            ("proto: tcp, port: 8080, service: \"10.30.30.30:80\"", "proto: tcp, service: \"10.30.30.30:80\"", "gateway.expose[0].port", "needs `port`"),
            ("service: \"10.30.30.30:80\"", "service: \"10.30.30.30:80:1\"", "gateway.expose[0]", "is not IP:PORT"),
            ("service: \"10.30.30.30:80\"", "service: \"192.0.2.1:80\"", "gateway.expose[0].service", "not a service IP"),
            // The gateway core's rule: no relay to the underlay, the
            // internet or the gateway itself, at start or in a step.
            ("service: \"10.30.30.30:80\"", "service: \"10.10.0.1:50103\"", "gateway.expose[0].service", "not a service IP"),
            ("service: \"10.30.30.30:80\"", "service: \"10.30.255.253:80\"", "gateway.expose[0].service", "own internal address"),
            (
                "sport: 51671}",
                "sport: 51671, expose: [{proto: tcp, port: 9001, service: \"8.8.8.8:53\"}]}",
                "traffic[0].expose[0].service",
                "8.8.8.8:53 is not a service IP",
            ),
            (
                "sport: 51671}",
                "sport: 51671, expose_refused: [{proto: tcp, port: 9001, service: \"10.30.30.30:80\"}]}",
                "traffic[0].expose_refused[0]",
                "the gateway accepts tcp 9001 -> 10.30.30.30:80",
            ),
            ("addr: 93.6.1.78", "addr: 24.0.5.9", "externals[0].addr", "gateway.public"),
            ("name: client", "name: n1", "externals[0].name", "already taken"),
            (
                "service: \"10.30.30.30:80\"",
                "service: \"[fdff:2000::1]:80\"",
                "gateway.expose[0].service",
                "needs the gateway's `public6`",
            ),
            (
                "public: 24.0.5.8",
                "public: 24.0.5.8\n  public6: fd00::8",
                "gateway.public6",
                "not a public address",
            ),
            (
                "public: 24.0.5.8",
                "public: 24.0.5.8\n  internal6: fdff:7fff::1",
                "gateway.internal6",
                "needs `public6`",
            ),
            (
                "addr: 93.6.1.78}",
                "addr: 93.6.1.78, addr6: \"2001:db8::1\"}\n  - {name: c2, addr: 93.6.2.1, addr6: \"2001:db8::2\"}",
                "externals[1].addr6",
                "one external (or gateway) per /64",
            ),
        ];
        for (from, to, field, msg) in cases {
            let text = OK.replace(from, to);
            assert_ne!(text, OK, "{from}");
            let e = err(&text);
            assert_eq!(e.field, field, "{e}");
            assert!(e.message.contains(msg), "{e}");
        }
    }

    #[test]
    fn router_takes_the_other_end_when_dot_one_is_taken() {
        assert_eq!(
            router_side(Ipv4Addr::new(198, 51, 100, 1)).1,
            Ipv4Addr::new(198, 51, 100, 254)
        );
        assert_eq!(
            router_side(Ipv4Addr::new(93, 6, 1, 78)).1,
            Ipv4Addr::new(93, 6, 1, 1)
        );
    }

    /// Unexposing follows the exposures in order: the gateway's own, then
    /// each step's (unexpose before expose).
    #[test]
    fn unexposing_what_is_not_exposed_is_refused() {
        let steps = "  - {name: off, from: client, proto: tcp, to: \"24.0.5.8:8080\", unexpose: [{proto: tcp, port: 8080}], expect: silence}
  - {name: again, from: client, proto: tcp, to: \"24.0.5.8:8080\", unexpose: [{proto: tcp, port: 8080}], expect: silence}
  - {name: on, from: client, proto: tcp, to: \"24.0.5.8:9090\", expose: [{proto: tcp, port: 9090, service: \"10.30.30.30:80\"}]}
  - {name: v6, from: client, proto: tcp, to: \"24.0.5.8:9090\", unexpose: [{proto: tcp, port: 9090, v6: true}, {proto: tcp, port: 9090}], expect: silence}
";
        let e = err(&format!("{OK}{steps}"));
        let got = crate::oakestra::tests::places(&e);
        assert_eq!(
            got,
            [
                ("traffic[2].unexpose[0]", 23),
                ("traffic[4].unexpose[0]", 25)
            ],
            "{e}"
        );
        assert!(e.message.contains("tcp port 8080 is not exposed"), "{e}");
        assert!(e.errors()[1].message.contains("9090 (IPv6)"), "{e}");
    }
}
