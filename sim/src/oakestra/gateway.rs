//! The gateway of a scenario and the internet around it: the `gateway`
//! section (which worker node runs it, its public address, what it
//! exposes) and `externals` (hosts outside the Oakestra network).
//! [`expand`] turns them into an `internet` router, a link from each
//! external and from the gateway node to it, the gateway's TUN and routes,
//! and the gateway process beside the node's net manager.
//!
//! # Address plan (adds to [`crate::oakestra::cluster`]'s)
//!
//! | what                              | where                                        |
//! |-----------------------------------|----------------------------------------------|
//! | router                            | host `internet`, IP forwarding on            |
//! | gateway public (`pub`)            | `gateway.public`/24; router `.1` of that /24 (`.254` if taken) |
//! | external (`eth0`)                 | `addr`/24; router `.1` of that /24 (`.254` if taken); default route to it |
//! | router's port to each            | named after the node / the external          |
//! | gateway TUN `gw0`                 | route `internal/32` (MTU 1450)               |
//! | gateway node                      | default via the router; each other node's /26 via that node's underlay address |
//! | other worker nodes                | default via the gateway node's underlay address |
//! | router                            | `10.0.0.0/8` via the gateway's public address (`fc00::/7` via `public6`) |
//! | IPv6 (`public6`, `addr6`)         | each on its /64; router `::1` (`::2` if taken); `gw0` route `internal6/128` |
//!
//! The router sends private destinations to the gateway, as a hostile
//! neighbour on its segment could: what keeps them out is the gateway's
//! firewall, which is what the negative scenarios show.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::oakestra::cluster::{Plan, OVERLAY_MTU};
use crate::scenario::{
    check_name_len, Cidr, Echo, End, Host, Invalid, Link, Process, Proto, Route, RouteDst, Scalar,
    Scenario, Tun,
};

/// The router between the externals and the gateway.
pub const INTERNET_HOST: &str = "internet";
/// The gateway's TUN device.
pub const GW_TUN: &str = "gw0";
/// The gateway node's public interface.
pub const PUBLIC_IF: &str = "pub";
/// The gateway's internal address (seed 000).
pub const DEFAULT_INTERNAL: Ipv4Addr = Ipv4Addr::new(10, 30, 255, 253);
/// The gateway's internal IPv6 address: in the service range `fdff::/16`
/// (routed to every node's TUN), outside the three service IP kinds'.
pub const DEFAULT_INTERNAL6: Ipv6Addr = Ipv6Addr::new(0xfdff, 0x7fff, 0, 0, 0, 0, 0, 0xfffd);

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Gateway {
    /// The worker node that runs the gateway.
    pub node: String,
    /// Its public address.
    pub public: Ipv4Addr,
    /// Its address inside the Oakestra network (default 10.30.255.253).
    #[serde(default = "default_internal")]
    pub internal: Ipv4Addr,
    /// Its public IPv6 address, to expose IPv6 services too.
    #[serde(default)]
    pub public6: Option<Ipv6Addr>,
    /// Its IPv6 address inside (default fdff:7fff::fffd, with `public6`).
    #[serde(default)]
    pub internal6: Option<Ipv6Addr>,
    /// The Exposed Services table at start.
    #[serde(default)]
    pub expose: Vec<Expose>,
    /// Forward table bound (the gateway's default when absent).
    #[serde(default)]
    pub max_flows: Option<usize>,
}

fn default_internal() -> Ipv4Addr {
    DEFAULT_INTERNAL
}

/// One Exposed Services entry: `proto` `port` on the public address leads
/// to `service` (a service IP and port).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expose {
    pub proto: Proto,
    pub port: u16,
    pub service: SocketAddr,
}

/// Removing an exposure: `proto` `port`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Unexpose {
    pub proto: Proto,
    pub port: u16,
    /// The IPv6 exposure of the port, not the IPv4 one.
    #[serde(default)]
    pub v6: bool,
}

/// A host outside the Oakestra network, on its own /24 behind the router.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct External {
    pub name: String,
    pub addr: Ipv4Addr,
    /// An IPv6 address too, on its own /64 behind the router.
    #[serde(default)]
    pub addr6: Option<Ipv6Addr>,
    /// The built-in echo server, for services that dial out.
    #[serde(default)]
    pub echo: Option<Echo>,
}

/// What the harness needs to start the gateway.
#[derive(Debug, Clone)]
pub struct GatewayArgs {
    pub node: String,
    pub public: Ipv4Addr,
    pub internal: Ipv4Addr,
    pub v6: Option<(Ipv6Addr, Ipv6Addr)>,
    pub expose: Vec<Expose>,
    pub max_flows: Option<usize>,
}

impl GatewayArgs {
    /// The control socket, under the run's `ctl/`.
    pub fn control(&self, ctl: &Path) -> PathBuf {
        ctl.join(format!("gw-{}.sock", self.node))
    }

    /// The command line, given where the binary is and where the control
    /// sockets and counter files go.
    pub fn argv(&self, bin: &str, ctl: &Path, counters: &Path) -> Vec<String> {
        let mut v = vec![
            bin.to_string(),
            "--tun".into(),
            GW_TUN.into(),
            "--public-if".into(),
            PUBLIC_IF.into(),
            "--public".into(),
            self.public.to_string(),
            "--internal".into(),
            self.internal.to_string(),
            "--control".into(),
            self.control(ctl).display().to_string(),
            "--counters".into(),
            counters
                .join(format!("{}.gateway.txt", self.node))
                .display()
                .to_string(),
        ];
        if let Some((p6, i6)) = self.v6 {
            v.extend([
                "--public6".into(),
                p6.to_string(),
                "--internal6".into(),
                i6.to_string(),
            ]);
        }
        if let Some(m) = self.max_flows {
            v.extend(["--max-flows".into(), m.to_string()]);
        }
        for e in &self.expose {
            v.extend(["--expose".into(), expose_arg(e)]);
        }
        v
    }
}

/// `tcp:8080=10.30.30.30:80`, the form `gateway --expose` takes.
pub fn expose_arg(e: &Expose) -> String {
    format!("{}:{}={}", e.proto, e.port, e.service)
}

fn bad<T>(field: impl Into<String>, msg: impl Into<String>) -> Result<T, Invalid> {
    Err((field.into(), msg.into()))
}

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
    End {
        host: host.to_string(),
        ifname: ifname.to_string(),
        addr: addr
            .map(|a| Cidr {
                addr: a.into(),
                prefix: 24,
            })
            .into_iter()
            .chain(addr6.map(|a| Cidr {
                addr: a.into(),
                prefix: 64,
            }))
            .collect(),
        mac: None,
        bridge: None,
        mtu: None,
    }
}

fn via(to: RouteDst, gw: impl Into<IpAddr>) -> Route {
    Route {
        to,
        via: Some(gw.into()),
        dev: None,
    }
}

fn prefix(addr: impl Into<IpAddr>, prefix: u8) -> RouteDst {
    RouteDst::Prefix(Cidr {
        addr: addr.into(),
        prefix,
    })
}

/// Validates `gateway` and `externals` and adds their hosts, links, routes
/// and the gateway process to `sc` (after [`crate::oakestra::cluster::expand`]).
pub fn expand(sc: &mut Scenario, plan: &Plan) -> Result<(), Invalid> {
    if sc.gateway.is_none() && sc.externals.is_empty() {
        return Ok(());
    }
    if sc.hosts.contains_key(INTERNET_HOST) || plan.nodes.contains_key(INTERNET_HOST) {
        return bad(
            format!("hosts.{INTERNET_HOST}"),
            format!("`{INTERNET_HOST}` is the externals' router: pick another host name"),
        );
    }
    let mut nets: BTreeMap<u32, String> = BTreeMap::new();
    let mut nets6: BTreeMap<u128, String> = BTreeMap::new();
    let mut router = Host {
        sysctls: [
            ("net.ipv4.ip_forward", "1"),
            ("net.ipv4.conf.all.rp_filter", "0"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), Scalar(v.to_string())))
        .collect(),
        ..Host::default()
    };
    let mut links = Vec::new();
    let mut hosts = BTreeMap::new();

    if let Some(g) = sc.gateway.clone() {
        let Some(node) = plan.nodes.get(&g.node) else {
            return bad(
                "gateway.node",
                format!("undefined worker node `{}`", g.node),
            );
        };
        if in_private(g.public) || g.public.is_loopback() || g.public.is_unspecified() {
            return bad(
                "gateway.public",
                format!(
                    "{} is not a public address (10.0.0.0/8 is the Oakestra network's)",
                    g.public
                ),
            );
        }
        let internal = IpAddr::V4(g.internal);
        if g.internal.octets()[..2] != [10, 30] {
            return bad(
                "gateway.internal",
                format!("{} is not in the service range 10.30.0.0/16", g.internal),
            );
        }
        if plan.services.values().any(|(_, is)| {
            is.iter()
                .any(|i| i.service_ips.iter().any(|s| s.addr == internal))
        }) {
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
                if (p6.segments()[0] & 0xfe00) == 0xfc00 || p6.is_loopback() || p6.is_unspecified()
                {
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
                if plan.services.values().any(|(_, is)| {
                    is.iter()
                        .any(|i| i.service_ips.iter().any(|s| s.addr == IpAddr::V6(i6)))
                }) {
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
            check_expose(&format!("gateway.expose[{i}]"), e, v6.is_some())?;
            if let Some(prev) = seen.insert((e.proto, e.port, e.service.is_ipv6()), i) {
                return bad(
                    format!("gateway.expose[{i}].port"),
                    format!("{} {} is also gateway.expose[{prev}]", e.proto, e.port),
                );
            }
        }
        let (net, raddr) = router_side(g.public);
        nets.insert(net, "gateway.public".into());
        let raddr6 = v6.map(|(p6, _)| {
            nets6.insert(router_side6(p6).0, "gateway.public6".to_string());
            router_side6(p6).1
        });
        links.push(Link {
            a: end(&g.node, PUBLIC_IF, Some(g.public), v6.map(|v| v.0)),
            b: end(INTERNET_HOST, &g.node, Some(raddr), raddr6),
        });
        router
            .routes
            .push(via(prefix(Ipv4Addr::new(10, 0, 0, 0), 8), g.public));
        if let Some((p6, _)) = v6 {
            router.routes.push(via(
                prefix(Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 0), 7),
                p6,
            ));
        }

        // The gateway node: its TUN, routes, the gateway process.
        let host = sc.hosts.get_mut(&g.node).expect("cluster::expand made it");
        host.tuns.insert(
            GW_TUN.to_string(),
            Tun {
                addr: vec![],
                mtu: Some(OVERLAY_MTU),
            },
        );
        host.routes.push(Route {
            to: prefix(g.internal, 32),
            via: None,
            dev: Some(GW_TUN.to_string()),
        });
        host.routes.push(via(RouteDst::Default, raddr));
        if let (Some((_, i6)), Some(r6)) = (v6, raddr6) {
            host.ipv6 = true;
            host.sysctls
                .insert("net.ipv6.conf.all.forwarding".into(), Scalar("1".into()));
            host.routes.push(Route {
                to: prefix(i6, 128),
                via: None,
                dev: Some(GW_TUN.to_string()),
            });
            host.routes.push(via(RouteDst::Default, r6));
        }
        for (name, n) in &plan.nodes {
            if *name != g.node {
                host.routes.push(via(prefix(n.subnet, 26), n.underlay));
            }
        }
        host.processes.push(Process {
            name: "gateway".into(),
            cmd: None,
            echo: None,
            ready: None,
            ready_timeout_ms: 5000,
            netmanager: None,
            gateway: Some(GatewayArgs {
                node: g.node.clone(),
                public: g.public,
                internal: g.internal,
                v6,
                expose: g.expose.clone(),
                max_flows: g.max_flows,
            }),
        });
        // Every other node's way out is the gateway.
        for name in plan.nodes.keys() {
            if *name != g.node {
                let h = sc.hosts.get_mut(name).expect("cluster::expand made it");
                h.routes.push(via(RouteDst::Default, node.underlay));
            }
        }
    }

    for (i, x) in sc.externals.iter().enumerate() {
        let f = format!("externals[{i}]");
        check_name_len(format!("{f}.name"), &x.name, 15)?;
        if sc.hosts.contains_key(&x.name) || hosts.contains_key(&x.name) || x.name == INTERNET_HOST
        {
            return bad(
                format!("{f}.name"),
                format!("host name `{}` is already taken", x.name),
            );
        }
        if x.addr.is_loopback() || x.addr.is_unspecified() || x.addr.is_multicast() {
            return bad(
                format!("{f}.addr"),
                format!("{} is not a host address", x.addr),
            );
        }
        let (net, raddr) = router_side(x.addr);
        if let Some(prev) = nets.insert(net, format!("{f}.addr")) {
            return bad(
                format!("{f}.addr"),
                format!(
                    "{}/24 is also {prev}'s network: one external (or gateway) per /24",
                    Ipv4Addr::from(net)
                ),
            );
        }
        let raddr6 = match x.addr6 {
            None => None,
            Some(a6) => {
                let (net6, r6) = router_side6(a6);
                if let Some(prev) = nets6.insert(net6, format!("{f}.addr6")) {
                    return bad(
                        format!("{f}.addr6"),
                        format!(
                            "{}/64 is also {prev}'s network: one external (or gateway) per /64",
                            Ipv6Addr::from(net6)
                        ),
                    );
                }
                router.ipv6 = true;
                router
                    .sysctls
                    .insert("net.ipv6.conf.all.forwarding".into(), Scalar("1".into()));
                Some(r6)
            }
        };
        let processes = x
            .echo
            .iter()
            .map(|e| Process {
                name: "echo".into(),
                cmd: None,
                echo: Some(e.clone()),
                ready: None,
                ready_timeout_ms: 5000,
                netmanager: None,
                gateway: None,
            })
            .collect();
        let mut routes = vec![via(RouteDst::Default, raddr)];
        routes.extend(raddr6.map(|r6| via(RouteDst::Default, r6)));
        hosts.insert(
            x.name.clone(),
            Host {
                ipv6: x.addr6.is_some(),
                routes,
                processes,
                ..Host::default()
            },
        );
        links.push(Link {
            a: end(&x.name, "eth0", Some(x.addr), x.addr6),
            b: end(INTERNET_HOST, &x.name, Some(raddr), raddr6),
        });
    }
    sc.hosts.extend(hosts);
    sc.hosts.insert(INTERNET_HOST.to_string(), router);
    sc.links.extend(links);
    Ok(())
}

/// An exposure's own checks: `field` is its path; `v6`: the gateway has
/// IPv6 addresses.
pub fn check_expose(field: &str, e: &Expose, v6: bool) -> Result<(), Invalid> {
    if e.proto == Proto::Icmp {
        return bad(format!("{field}.proto"), "exposures are tcp or udp");
    }
    if e.port == 0 {
        return bad(format!("{field}.port"), "port 0 cannot be exposed");
    }
    match e.service {
        SocketAddr::V4(s) if s.ip().octets()[..2] == [10, 30] && s.port() != 0 => Ok(()),
        SocketAddr::V6(s) if s.ip().segments()[0] == 0xfdff && s.port() != 0 => {
            if v6 {
                Ok(())
            } else {
                bad(
                    format!("{field}.service"),
                    "an IPv6 service needs the gateway's `public6`",
                )
            }
        }
        _ => bad(
            format!("{field}.service"),
            format!(
                "{} is not a service IP (10.30.0.0/16, fdff::/16) with a port",
                e.service
            ),
        ),
    }
}

/// Sends one control line to a gateway and returns its answer: one line,
/// or for `counters`, `flows` and `exposures` every line up to the empty
/// one that ends it. An answer starting with `error` is an error.
pub fn control(socket: &Path, line: &str) -> std::io::Result<String> {
    let mut s = UnixStream::connect(socket)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(format!("{line}\n").as_bytes())?;
    let multi = matches!(line.trim(), "counters" | "flows" | "exposures");
    let mut r = BufReader::new(s);
    let mut out = String::new();
    loop {
        let mut l = String::new();
        if r.read_line(&mut l)? == 0 {
            break;
        }
        if multi && l.trim().is_empty() {
            break;
        }
        out.push_str(&l);
        if !multi {
            break;
        }
    }
    if let Some(rest) = out.strip_prefix("error") {
        return Err(std::io::Error::other(format!(
            "gateway: {}",
            rest.trim_start_matches([' ', ':']).trim_end()
        )));
    }
    Ok(out)
}

/// Parses `name value` lines (a `counters` answer).
pub fn parse_counters(text: &str) -> BTreeMap<String, u64> {
    text.lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(' ')?;
            Some((k.to_string(), v.trim().parse().ok()?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::scenario::{parse, ScenarioError};

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

    fn err(text: &str) -> ScenarioError {
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
            ("proto: tcp, port: 8080", "proto: icmp, port: 8080", "gateway.expose[0].proto", "tcp or udp"),
            ("service: \"10.30.30.30:80\"", "service: \"192.0.2.1:80\"", "gateway.expose[0].service", "not a service IP"),
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
}
