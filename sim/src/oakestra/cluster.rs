//! The Oakestra vocabulary of a scenario: clusters of worker nodes,
//! services with their service IPs, instances placed on nodes. [`expand`]
//! turns it into plain hosts, bridges, TUNs, links, routes and processes,
//! so a user writes services and placement, not veth pairs.
//!
//! # Address plan (deterministic; `k` is the node's index over all
//! clusters in file order, `i` an instance's index on its node)
//!
//! | what                         | IPv4                          | IPv6                |
//! |------------------------------|-------------------------------|---------------------|
//! | node underlay (`eth0`)       | see [`super::underlay`]       |                     |
//! | node instance subnet         | `10.18.0.0/16` + `64k` as /26 | `fd18:0:0:k::/64`   |
//! | node bridge `br0`            | subnet + 62                   | subnet `::ff`       |
//! | instance `eth0` (ns IP)      | subnet + 1 + i                | subnet + 1 + i      |
//! | node TUN `nm0`               | routes `10.30.0.0/16`, `10.18.0.0/16` | `fdff::/16`, `fd18::/16` |
//!
//! Each node's net manager accepts tunnel datagrams from every other
//! worker node from the start (`--peer`, any cluster's nodes: the root
//! service manager lets any node resolve any service); its tunnel address
//! is its underlay address of the tunnel's family ([`super::underlay`]).
//!
//! Instance hosts are named `<service>-<n>` (`n`: the instance number, its
//! index in the service's list); on the node, the instance's veth end
//! carries the same name.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hoplab_dataplane::netmanager::services::{
    CLOSEST_NET_V6, INSTANCE_NET_V6, ROUND_ROBIN_NET_V6, SERVICE_NET_V4,
};
use hoplab_dataplane::netmanager::{Coords, Instance, ServiceIp, ServiceKind};
use hoplab_dataplane::prefix::in_net;

use super::plan::{add4, add6, cidr, prefix, sysctls, NodePlan, Plan};
use super::underlay::{self, BACKBONE_HOST};
use crate::lab::dataplane::NetManagerArgs;
pub use crate::lab::dataplane::TUN_NAME;
use crate::lab::{Bridge, End, Host, Lab, Link, Process, Ready, Route, RouteDst, Tun};
use crate::scenario::{Scenario, Service};
use crate::values::{bad, check_name_len, Invalid};

pub use super::underlay::UNDERLAY_HOST;

/// The MTU of instance links and TUNs: a tunnelled packet plus its outer
/// UDP header and IP header (IPv4: 28 bytes in all, IPv6: 48) must fit the
/// 1500-byte underlay without fragments; 1450 as in Oakestra leaves room
/// for the IPv6 outer header too (1498 bytes on an IPv6 underlay), so
/// both underlay families share it.
pub const OVERLAY_MTU: u32 = 1450;

/// An instance host to make: its name, its node, its service's index.
struct Placed {
    host: String,
    node: String,
    service: usize,
}

/// Checks `clusters` and `services`, allocates their addresses and adds
/// their hosts and links to `lab` (which holds the file's own hosts);
/// returns the plan the service managers serve.
pub fn expand(sc: &Scenario, lab: &mut Lab) -> Result<Plan, Invalid> {
    if sc.clusters.is_empty() {
        if !sc.services.is_empty() {
            return bad("services", "services need `clusters` with worker nodes");
        }
        let mut plan = Plan::default();
        underlay::assign(sc, &mut plan)?;
        return Ok(plan);
    }
    let mut plan = plan_nodes(sc)?;
    let mut claims = Claims::default();
    let placed = place_services(sc, &mut plan, &mut claims)?;
    auto_instance_ips(sc, &mut plan, &mut claims)?;
    emit_nodes(&plan, lab);
    emit_instances(sc, &plan, placed, lab);
    Ok(plan)
}

/// Validate: clusters and their nodes; allocate: each node's place.
fn plan_nodes(sc: &Scenario) -> Result<Plan, Invalid> {
    let mut plan = Plan::default();
    let any_v6 = sc.services.iter().any(Service::has_v6);
    let mut names = std::collections::BTreeSet::new();
    let mut k = 0usize;
    for (ci, c) in sc.clusters.iter().enumerate() {
        let f = format!("clusters[{ci}]");
        check_name_len(format!("{f}.name"), &c.name, 32)?;
        if !names.insert(format!("cluster {}", c.name)) {
            return bad(
                format!("{f}.name"),
                format!("cluster `{}` defined twice", c.name),
            );
        }
        if c.nodes.is_empty() {
            return bad(format!("{f}.nodes"), "a cluster needs at least one node");
        }
        for (ni, n) in c.nodes.iter().enumerate() {
            let nf = format!("{f}.nodes[{ni}]");
            check_name_len(format!("{nf}.name"), &n.name, 15)?;
            if n.name == UNDERLAY_HOST
                || n.name == BACKBONE_HOST
                || sc.hosts.contains_key(&n.name)
                || plan.nodes.contains_key(&n.name)
            {
                return bad(
                    format!("{nf}.name"),
                    format!("host name `{}` is already taken", n.name),
                );
            }
            if !n.coords.iter().all(|v| v.is_finite()) {
                return bad(format!("{nf}.coords"), "coordinates must be finite numbers");
            }
            if k >= 250 {
                return bad(nf, "at most 250 worker nodes");
            }
            plan.nodes.insert(
                n.name.clone(),
                NodePlan {
                    cluster: c.name.clone(),
                    index: k,
                    coords: Coords::new(n.coords[0], n.coords[1]),
                    // Allocated by `underlay::assign` below.
                    underlay: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                    underlay4: None,
                    underlay6: None,
                    site: None,
                    subnet: add4(Ipv4Addr::new(10, 18, 0, 0), 64 * k as u32),
                    subnet6: Ipv6Addr::new(0xfd18, 0, 0, k as u16, 0, 0, 0, 0),
                    v6: any_v6,
                    cache_ttl_ms: c.cache_ttl_ms,
                    frag_timeout_ms: c.frag_timeout_ms,
                },
            );
            k += 1;
        }
    }
    if sc.hosts.contains_key(UNDERLAY_HOST) {
        return bad(
            format!("hosts.{UNDERLAY_HOST}"),
            format!("`{UNDERLAY_HOST}` is the worker nodes' switch: pick another host name"),
        );
    }
    underlay::assign(sc, &mut plan)?;
    Ok(plan)
}

/// Service and instance IPs given so far, each with the field that gave it.
#[derive(Default)]
struct Claims {
    used: BTreeMap<IpAddr, String>,
}

impl Claims {
    /// `ip` of `kind`, given at `field`: in its range and not given twice.
    fn claim(&mut self, field: String, ip: IpAddr, kind: ServiceKind) -> Result<(), Invalid> {
        let v4 = |(a, len): (Ipv4Addr, u8)| (IpAddr::V4(a), len);
        let v6 = |(a, len): (Ipv6Addr, u8)| (IpAddr::V6(a), len);
        let ((net, len), range) = match (ip, kind) {
            (IpAddr::V4(_), _) => (v4(SERVICE_NET_V4), "10.30.0.0/16"),
            (IpAddr::V6(_), ServiceKind::Instance) => (v6(INSTANCE_NET_V6), "fdff::/21"),
            (IpAddr::V6(_), ServiceKind::Closest) => (v6(CLOSEST_NET_V6), "fdff:1000::/21"),
            (IpAddr::V6(_), ServiceKind::RoundRobin) => (v6(ROUND_ROBIN_NET_V6), "fdff:2000::/21"),
        };
        if !in_net(ip, net, len) {
            return bad(field, format!("{ip} is not in the service range {range}"));
        }
        if let Some(prev) = self.used.insert(ip, field.clone()) {
            return bad(field, format!("{ip} is also {prev}"));
        }
        Ok(())
    }
}

/// Validate and allocate: each service's IPs, and its instances on their
/// nodes (namespace addresses, given instance IPs).
fn place_services(
    sc: &Scenario,
    plan: &mut Plan,
    claims: &mut Claims,
) -> Result<Vec<Placed>, Invalid> {
    let mut on_node: BTreeMap<String, u32> = BTreeMap::new();
    let mut placed = Vec::new();
    if sc.services.len() > 100 {
        return bad("services", "at most 100 services");
    }
    for (si, s) in sc.services.iter().enumerate() {
        let f = format!("services[{si}]");
        check_name_len(format!("{f}.name"), &s.name, 12)?;
        if plan.services.contains_key(&s.name) {
            return bad(
                format!("{f}.name"),
                format!("service `{}` defined twice", s.name),
            );
        }
        if s.instances.is_empty() {
            return bad(
                format!("{f}.instances"),
                "a service needs at least one instance",
            );
        }
        if s.instances.len() > 50 {
            return bad(format!("{f}.instances"), "at most 50 instances per service");
        }
        let svc_ips = service_ips(&f, s, claims)?;
        let mut cluster: Option<&str> = None;
        let mut instances = Vec::new();
        for (ii, inst) in s.instances.iter().enumerate() {
            let f = format!("{f}.instances[{ii}]");
            let Some(node) = plan.nodes.get(&inst.node) else {
                return bad(
                    format!("{f}.node"),
                    format!("undefined worker node `{}`", inst.node),
                );
            };
            match cluster {
                None => cluster = Some(&node.cluster),
                Some(c) if c != node.cluster => {
                    return bad(
                        format!("{f}.node"),
                        format!("node `{}` is in cluster `{}`, the service's other instances in `{c}`: a service lives in one cluster", inst.node, node.cluster),
                    )
                }
                Some(_) => {}
            }
            let mut ips = svc_ips.clone();
            for (field, ip) in [
                ("ip", inst.ip.map(IpAddr::V4)),
                ("ip6", inst.ip6.map(IpAddr::V6)),
            ] {
                if let Some(ip) = ip {
                    claims.claim(format!("{f}.{field}"), ip, ServiceKind::Instance)?;
                    ips.insert(0, instance_ip(ip));
                }
            }
            let slot = on_node.entry(inst.node.clone()).or_insert(0);
            *slot += 1;
            if *slot > 60 {
                return bad(
                    format!("{f}.node"),
                    "at most 60 instances per node (one /26)",
                );
            }
            let host = format!("{}-{ii}", s.name);
            if sc.hosts.contains_key(&host)
                || plan.nodes.contains_key(&host)
                || plan.sites.iter().any(|site| site.name == host)
            {
                return bad(
                    f.clone(),
                    format!(
                        "host name `{host}` (service name, dash, instance number) is already taken"
                    ),
                );
            }
            instances.push(Instance {
                ns_ip: add4(node.subnet, *slot),
                ns_ip6: s.has_v6().then(|| add6(node.subnet6, u128::from(*slot))),
                node: node.underlay,
                instance_number: ii as u32,
                coords: node.coords,
                service_ips: ips,
            });
            placed.push(Placed {
                host,
                node: inst.node.clone(),
                service: si,
            });
        }
        let cluster = cluster.expect("one instance at least").to_string();
        plan.services.insert(s.name.clone(), (cluster, instances));
    }
    Ok(placed)
}

fn instance_ip(addr: IpAddr) -> ServiceIp {
    ServiceIp {
        kind: ServiceKind::Instance,
        addr,
    }
}

/// A service's round-robin and closest IPs, claimed.
fn service_ips(f: &str, s: &Service, claims: &mut Claims) -> Result<Vec<ServiceIp>, Invalid> {
    let mut svc_ips = Vec::new();
    for (field, ip, kind) in [
        (
            "round_robin",
            s.round_robin.map(IpAddr::V4),
            ServiceKind::RoundRobin,
        ),
        ("closest", s.closest.map(IpAddr::V4), ServiceKind::Closest),
        (
            "round_robin6",
            s.round_robin6.map(IpAddr::V6),
            ServiceKind::RoundRobin,
        ),
        ("closest6", s.closest6.map(IpAddr::V6), ServiceKind::Closest),
    ] {
        if let Some(ip) = ip {
            claims.claim(format!("{f}.{field}"), ip, kind)?;
            svc_ips.push(ServiceIp { kind, addr: ip });
        }
    }
    Ok(svc_ips)
}

/// Allocate: every instance has an instance IP (as in Oakestra): a reply
/// must go back through the TUN, and an instance's namespace IP is on its
/// node's bridge, where replies to it would bypass the net manager. Those
/// not given one get `10.30.(128+s).(n+1)` (IPv6 services also
/// `fdff::ff:s:n+1`), s being the service's index and n the instance's.
fn auto_instance_ips(sc: &Scenario, plan: &mut Plan, claims: &mut Claims) -> Result<(), Invalid> {
    for (si, s) in sc.services.iter().enumerate() {
        let instances = &mut plan.services.get_mut(&s.name).expect("added above").1;
        for (ii, inst) in s.instances.iter().enumerate() {
            let f = format!("services[{si}].instances[{ii}]");
            let mut auto = Vec::new();
            if inst.ip.is_none() {
                auto.push(IpAddr::V4(Ipv4Addr::new(
                    10,
                    30,
                    128 + si as u8,
                    ii as u8 + 1,
                )));
            }
            if inst.ip6.is_none() && s.has_v6() {
                auto.push(IpAddr::V6(Ipv6Addr::new(
                    0xfdff,
                    0,
                    0,
                    0,
                    0,
                    0xff,
                    si as u16,
                    ii as u16 + 1,
                )));
            }
            for ip in auto {
                if let Some(prev) = claims.used.get(&ip) {
                    return bad(
                        f,
                        format!("its automatic instance IP {ip} is taken by {prev}: give this instance an `ip`/`ip6`"),
                    );
                }
                claims.used.insert(ip, format!("{f} (automatic)"));
                instances[ii].service_ips.insert(0, instance_ip(ip));
            }
        }
    }
    Ok(())
}

/// Emit: each node with its bridge, TUN, routes and net manager, and the
/// underlay they are on ([`underlay::emit`]).
fn emit_nodes(plan: &Plan, lab: &mut Lab) {
    for (name, n) in &plan.nodes {
        lab.hosts.insert(name.clone(), node_host(name, n, plan));
    }
    underlay::emit(plan, lab);
}

fn node_host(name: &str, n: &NodePlan, plan: &Plan) -> Host {
    let mut sysctls = sysctls(&[
        ("net.ipv4.ip_forward", "1"),
        ("net.ipv4.conf.all.rp_filter", "0"),
        ("net.ipv4.conf.default.rp_filter", "0"),
    ]);
    let mut br_addr = vec![cidr(n.bridge_ip(), 26)];
    let mut routes = vec![
        Route::dev(prefix(Ipv4Addr::new(10, 30, 0, 0), 16), TUN_NAME),
        Route::dev(prefix(Ipv4Addr::new(10, 18, 0, 0), 16), TUN_NAME),
    ];
    if n.v6 {
        sysctls.insert("net.ipv6.conf.all.forwarding".into(), "1".into());
        br_addr.push(cidr(n.bridge_ip6(), 64));
        for net in [0xfdff, 0xfd18] {
            routes.push(Route::dev(
                prefix(Ipv6Addr::new(net, 0, 0, 0, 0, 0, 0, 0), 16),
                TUN_NAME,
            ));
        }
    }
    let locals: Vec<_> = plan
        .services
        .values()
        .flat_map(|(_, is)| is.iter())
        .filter(|i| i.node == n.underlay)
        .cloned()
        .collect();
    let tun = Tun {
        addr: vec![],
        mtu: Some(OVERLAY_MTU),
        txqueuelen: None,
    };
    let bridge = Bridge {
        addr: br_addr,
        mac: None,
    };
    Host {
        sysctls,
        ipv6: n.v6,
        bridges: [("br0".to_string(), bridge)].into(),
        tuns: [(TUN_NAME.to_string(), tun)].into(),
        routes,
        processes: vec![Process {
            name: "netmanager".into(),
            ready: Some(Ready::UdpBound(
                hoplab_dataplane::netmanager::core::TUNNEL_PORT,
            )),
            ready_timeout_ms: 5000,
            netmanager: Some(NetManagerArgs {
                node: name.to_string(),
                cluster: n.cluster.clone(),
                node_addr: n.underlay,
                subnet: n.subnet,
                subnet6: n.v6.then_some(n.subnet6),
                coords: n.coords,
                instances: locals,
                cache_ttl_ms: n.cache_ttl_ms,
                frag_timeout_ms: n.frag_timeout_ms,
                // Every other worker node, of any cluster (the gateway
                // node among them): any may have resolved an instance
                // here and send its flows without this node knowing.
                peers: plan
                    .nodes
                    .values()
                    .map(|o| o.underlay)
                    .filter(|&u| u != n.underlay)
                    .collect(),
            }),
            ..Process::default()
        }],
        ..Host::default()
    }
}

/// Emit: each instance host with its address, default routes, echo server
/// and its link to its node's bridge.
fn emit_instances(sc: &Scenario, plan: &Plan, placed: Vec<Placed>, lab: &mut Lab) {
    for Placed {
        host,
        node,
        service,
    } in placed
    {
        let s = &sc.services[service];
        let n = &plan.nodes[&node];
        let inst = plan.services[&s.name]
            .1
            .iter()
            .find(|i| format!("{}-{}", s.name, i.instance_number) == host)
            .expect("placed above");
        let mut addr = vec![cidr(inst.ns_ip, 26)];
        let mut routes = vec![Route::via(RouteDst::Default, n.bridge_ip())];
        if let Some(a6) = inst.ns_ip6 {
            addr.push(cidr(a6, 64));
            routes.push(Route::via(RouteDst::Default, n.bridge_ip6()));
        }
        lab.hosts.insert(
            host.clone(),
            Host {
                ipv6: inst.ns_ip6.is_some(),
                routes,
                files: super::plain::files(&s.files, &sc.dir),
                processes: s
                    .echo
                    .iter()
                    .map(Process::echo)
                    .chain(s.processes.iter().map(super::plain::process))
                    .collect(),
                origin: Some(format!("services[{service}]")),
                ..Host::default()
            },
        );
        let mut a = End::new(&host, "eth0", addr);
        let mut b = End::new(&node, &host, vec![]);
        b.bridge = Some("br0".into());
        (a.mtu, b.mtu) = (Some(OVERLAY_MTU), Some(OVERLAY_MTU));
        lab.links.push(Link { a, b, impair: None });
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::oakestra::parse;
    use crate::scenario::ScenarioErrors;

    use super::*;
    use hoplab_dataplane::netmanager::Coords;

    const OK: &str = "version: 1
clusters:
  - name: c1
    nodes:
      - {name: n1, coords: [0, 0]}
      - {name: n2, coords: [3, 4]}
  - name: c2
    nodes:
      - {name: n3}
services:
  - name: api
    round_robin: 10.30.1.1
    closest6: fdff:1000::1:2
    echo: {tcp: [80]}
    instances:
      - {node: n1, ip: 10.30.1.11}
      - {node: n2}
  - name: web
    instances:
      - {node: n3}
traffic:
  - {name: call, from: web-0, proto: tcp, to: \"10.30.1.1:80\"}
";

    fn err(text: &str) -> ScenarioErrors {
        parse(Path::new("s.yaml"), "s", text).unwrap_err()
    }

    #[test]
    fn expands_into_hosts_links_and_a_plan() {
        let sc = parse(Path::new("s.yaml"), "s", OK).unwrap();
        let hosts: Vec<&str> = sc.hosts.keys().map(|s| s.as_str()).collect();
        assert_eq!(
            hosts,
            ["api-0", "api-1", "n1", "n2", "n3", "underlay", "web-0"]
        );
        // One underlay port per node, one veth per instance.
        assert_eq!(sc.links.len(), 6);
        let n2 = &sc.plan.nodes["n2"];
        assert_eq!(n2.underlay, Ipv4Addr::new(10, 10, 0, 2));
        assert_eq!(n2.subnet, Ipv4Addr::new(10, 18, 0, 64));
        assert_eq!(n2.bridge_ip(), Ipv4Addr::new(10, 18, 0, 126));
        let (cluster, api) = &sc.plan.services["api"];
        assert_eq!(cluster, "c1");
        assert_eq!(api[1].ns_ip, Ipv4Addr::new(10, 18, 0, 65));
        assert_eq!(api[1].ns_ip6, Some("fd18:0:0:1::1".parse().unwrap()));
        assert_eq!(api[1].coords, Coords::new(3.0, 4.0));
        // The instance IP names one instance; the round-robin IP both.
        let (c, one) = sc.plan.resolve("10.30.1.11".parse().unwrap()).unwrap();
        assert_eq!((c, one.len(), one[0].instance_number), ("c1", 1, 0));
        assert_eq!(
            sc.plan
                .resolve("10.30.1.1".parse().unwrap())
                .unwrap()
                .1
                .len(),
            2
        );
        assert!(sc.plan.resolve("10.30.9.9".parse().unwrap()).is_none());
        // The net manager of n1 knows its local instance and its manager.
        let nm = sc.hosts["n1"].processes[0].netmanager.clone().unwrap();
        let argv = nm.argv("netmanager", Path::new("/o/ctl"), Path::new("/o/counters"));
        let line = argv.join(" ");
        assert!(line.contains("--manager /o/ctl/c1.sock"), "{line}");
        assert!(
            line.contains("--instance ns=10.18.0.1,ip=10.30.1.11,ns6=fd18::1,ip6=fdff::ff:0:1"),
            "{line}"
        );
        assert!(sc
            .capture_interfaces()
            .contains(&("n1".to_string(), "nm0".to_string())));
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (
                "{node: n2}",
                "{node: n9}",
                "services[0].instances[1].node",
                "undefined worker node `n9`",
            ),
            (
                "round_robin: 10.30.1.1",
                "round_robin: 10.31.1.1",
                "services[0].round_robin",
                "not in the service range",
            ),
            (
                "closest6: fdff:1000::1:2",
                "closest6: fdff:2000::1:2",
                "services[0].closest6",
                "fdff:1000::/21",
            ),
            (
                "{node: n2}",
                "{node: n2, ip: 10.30.1.1}",
                "services[0].instances[1].ip",
                "is also services[0].round_robin",
            ),
            (
                "{node: n3}",
                "{node: n3}\n      - {node: n1}",
                "services[1].instances[1].node",
                "one cluster",
            ),
            (
                "{name: n3}",
                "{name: n1}",
                "clusters[1].nodes[0].name",
                "already taken",
            ),
            (
                "name: web",
                "name: a-very-long-svc",
                "services[1].name",
                "1-12",
            ),
            (
                "coords: [3, 4]",
                "coords: [3, .nan]",
                "clusters[0].nodes[1].coords",
                "finite",
            ),
            (
                "proto: tcp,",
                "proto: tcp, fail_manager: c9,",
                "traffic[0].fail_manager",
                "no cluster `c9`",
            ),
        ];
        for (from, to, field, msg) in cases {
            let e = err(&OK.replace(from, to));
            assert_eq!(e.field, field, "{e}");
            assert!(e.message.contains(msg), "{e}");
            assert!(e.line > 1, "{e}");
        }
    }

    #[test]
    fn services_need_clusters() {
        let e = err("version: 1\nservices:\n  - {name: a, instances: [{node: n1}]}\n");
        assert_eq!(e.field, "services");
    }
}
