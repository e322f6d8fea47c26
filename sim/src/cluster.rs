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
//! | underlay switch              | host `underlay`, bridge `br0` |                     |
//! | node underlay (`eth0`)       | `10.10.0.(k+1)/24`            | (IPv4 only)         |
//! | node instance subnet         | `10.18.0.0/16` + `64k` as /26 | `fd18:0:0:k::/64`   |
//! | node bridge `br0`            | subnet + 62                   | subnet `::ff`       |
//! | instance `eth0` (ns IP)      | subnet + 1 + i                | subnet + 1 + i      |
//! | node TUN `nm0`               | routes `10.30.0.0/16`, `10.18.0.0/16` | `fdff::/16`, `fd18::/16` |
//!
//! Instance hosts are named `<service>-<n>` (`n`: the instance number, its
//! index in the service's list); on the node, the instance's veth end
//! carries the same name. On the underlay switch, a node's port is named
//! after the node.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hoplab_dataplane::netmanager::services::{
    CLOSEST_NET_V6, INSTANCE_NET_V6, ROUND_ROBIN_NET_V6, SERVICE_NET_V4,
};
use hoplab_dataplane::netmanager::{Coords, Instance, ServiceIp, ServiceKind};
use hoplab_dataplane::prefix::in_net;
use serde::Deserialize;

use crate::scenario::{
    check_name_len, Bridge, Cidr, Echo, End, Host, Invalid, Link, Process, Ready, Route, RouteDst,
    Scalar, Scenario, Tun,
};

/// The underlay switch host.
pub const UNDERLAY_HOST: &str = "underlay";
/// Each node's TUN device.
pub const TUN_NAME: &str = "nm0";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cluster {
    pub name: String,
    pub nodes: Vec<Node>,
    /// How long the net managers of this cluster cache a resolution.
    #[serde(default)]
    pub cache_ttl_ms: Option<u64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Node {
    pub name: String,
    /// `[x, y]`: where the node is, for closest IPs.
    #[serde(default)]
    pub coords: [f64; 2],
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    pub name: String,
    #[serde(default)]
    pub round_robin: Option<Ipv4Addr>,
    #[serde(default)]
    pub closest: Option<Ipv4Addr>,
    #[serde(default)]
    pub round_robin6: Option<Ipv6Addr>,
    #[serde(default)]
    pub closest6: Option<Ipv6Addr>,
    /// Give the instances IPv6 namespace addresses (implied by any IPv6
    /// service IP).
    #[serde(default)]
    pub ipv6: bool,
    /// The built-in echo server every instance runs.
    #[serde(default)]
    pub echo: Option<Echo>,
    pub instances: Vec<ServiceInstance>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceInstance {
    /// The worker node it runs on.
    pub node: String,
    /// Its instance IP.
    #[serde(default)]
    pub ip: Option<Ipv4Addr>,
    #[serde(default)]
    pub ip6: Option<Ipv6Addr>,
}

impl Service {
    pub fn has_v6(&self) -> bool {
        self.ipv6
            || self.round_robin6.is_some()
            || self.closest6.is_some()
            || self.instances.iter().any(|i| i.ip6.is_some())
    }
}

/// A node's place in the address plan.
#[derive(Debug, Clone)]
pub struct NodePlan {
    pub cluster: String,
    pub index: usize,
    pub coords: Coords,
    pub underlay: Ipv4Addr,
    pub subnet: Ipv4Addr,
    pub subnet6: Ipv6Addr,
    pub v6: bool,
    pub cache_ttl_ms: Option<u64>,
}

impl NodePlan {
    pub fn bridge_ip(&self) -> Ipv4Addr {
        add4(self.subnet, 62)
    }
    pub fn bridge_ip6(&self) -> Ipv6Addr {
        add6(self.subnet6, 0xff)
    }
}

fn add4(a: Ipv4Addr, n: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(a) + n)
}
fn add6(a: Ipv6Addr, n: u128) -> Ipv6Addr {
    Ipv6Addr::from(u128::from(a) + n)
}

/// The whole control-plane view of a scenario: nodes, and every service's
/// instances as the service managers describe them.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub nodes: BTreeMap<String, NodePlan>,
    /// Service name → (its cluster, its instances in instance-number order).
    pub services: BTreeMap<String, (String, Vec<Instance>)>,
}

impl Plan {
    /// The instances behind `ip`, and the cluster that owns them.
    pub fn resolve(&self, ip: IpAddr) -> Option<(&str, Vec<Instance>)> {
        for (cluster, instances) in self.services.values() {
            let (named, all): (Vec<&Instance>, _) = (
                instances
                    .iter()
                    .filter(|i| {
                        i.service_ips
                            .iter()
                            .any(|s| s.addr == ip && s.kind == ServiceKind::Instance)
                    })
                    .collect(),
                instances,
            );
            if !named.is_empty() {
                return Some((cluster, named.into_iter().cloned().collect()));
            }
            if all
                .iter()
                .any(|i| i.service_ips.iter().any(|s| s.addr == ip))
            {
                return Some((cluster, all.clone()));
            }
        }
        None
    }
}

fn bad<T>(field: impl Into<String>, msg: impl Into<String>) -> Result<T, Invalid> {
    Err((field.into(), msg.into()))
}

/// Validates the vocabulary and adds its hosts and links to `sc`; returns
/// the plan the service managers serve.
pub fn expand(sc: &mut Scenario) -> Result<Plan, Invalid> {
    let mut plan = Plan::default();
    if sc.clusters.is_empty() {
        if !sc.services.is_empty() {
            return bad("services", "services need `clusters` with worker nodes");
        }
        return Ok(plan);
    }
    let any_v6 = sc.services.iter().any(Service::has_v6);
    let mut names = BTreeSet::new();
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
                    underlay: Ipv4Addr::new(10, 10, 0, k as u8 + 1),
                    subnet: add4(Ipv4Addr::new(10, 18, 0, 0), 64 * k as u32),
                    subnet6: Ipv6Addr::new(0xfd18, 0, 0, k as u16, 0, 0, 0, 0),
                    v6: any_v6,
                    cache_ttl_ms: c.cache_ttl_ms,
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

    // Services: addresses, kinds, placement.
    let mut used_ips: BTreeMap<IpAddr, String> = BTreeMap::new();
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
        let mut svc_ips = Vec::new();
        let mut claim = |field: String, ip: IpAddr, kind: ServiceKind| -> Result<(), Invalid> {
            let ok = match (ip, kind) {
                (IpAddr::V4(_), _) => in_net(ip, SERVICE_NET_V4.0.into(), SERVICE_NET_V4.1),
                (IpAddr::V6(_), ServiceKind::Instance) => {
                    in_net(ip, INSTANCE_NET_V6.0.into(), INSTANCE_NET_V6.1)
                }
                (IpAddr::V6(_), ServiceKind::Closest) => {
                    in_net(ip, CLOSEST_NET_V6.0.into(), CLOSEST_NET_V6.1)
                }
                (IpAddr::V6(_), ServiceKind::RoundRobin) => {
                    in_net(ip, ROUND_ROBIN_NET_V6.0.into(), ROUND_ROBIN_NET_V6.1)
                }
            };
            if !ok {
                let range = match (ip, kind) {
                    (IpAddr::V4(_), _) => "10.30.0.0/16",
                    (_, ServiceKind::Instance) => "fdff::/21",
                    (_, ServiceKind::Closest) => "fdff:1000::/21",
                    (_, ServiceKind::RoundRobin) => "fdff:2000::/21",
                };
                return bad(field, format!("{ip} is not in the service range {range}"));
            }
            if let Some(prev) = used_ips.insert(ip, field.clone()) {
                return bad(field, format!("{ip} is also {prev}"));
            }
            Ok(())
        };
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
                claim(format!("{f}.{field}"), ip, kind)?;
                svc_ips.push(ServiceIp { kind, addr: ip });
            }
        }
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
            if let Some(ip) = inst.ip {
                claim(format!("{f}.ip"), ip.into(), ServiceKind::Instance)?;
                ips.insert(
                    0,
                    ServiceIp {
                        kind: ServiceKind::Instance,
                        addr: ip.into(),
                    },
                );
            }
            if let Some(ip) = inst.ip6 {
                claim(format!("{f}.ip6"), ip.into(), ServiceKind::Instance)?;
                ips.insert(
                    0,
                    ServiceIp {
                        kind: ServiceKind::Instance,
                        addr: ip.into(),
                    },
                );
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
            if sc.hosts.contains_key(&host) || plan.nodes.contains_key(&host) {
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
                node: node.underlay.into(),
                instance_number: ii as u32,
                coords: node.coords,
                service_ips: ips,
            });
            placed.push((host, inst.node.clone(), si));
        }
        plan.services.insert(
            s.name.clone(),
            (
                cluster.expect("one instance at least").to_string(),
                instances,
            ),
        );
    }

    // Every instance has an instance IP (as in Oakestra): a reply must go
    // back through the TUN, and an instance's namespace IP is on its
    // node's bridge, where replies to it would bypass the net manager.
    // Those not given one get `10.30.(128+s).(n+1)` (IPv6 services also
    // `fdff::ff:s:n+1`), s being the service's index and n the instance's.
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
                if let Some(prev) = used_ips.get(&ip) {
                    return bad(
                        f,
                        format!("its automatic instance IP {ip} is taken by {prev}: give this instance an `ip`/`ip6`"),
                    );
                }
                used_ips.insert(ip, format!("{f} (automatic)"));
                instances[ii].service_ips.insert(
                    0,
                    ServiceIp {
                        kind: ServiceKind::Instance,
                        addr: ip,
                    },
                );
            }
        }
    }

    // Hosts and links.
    let underlay = Host {
        bridges: [("br0".to_string(), Bridge::default())].into(),
        ..Host::default()
    };
    sc.hosts.insert(UNDERLAY_HOST.to_string(), underlay);
    for (name, n) in &plan.nodes {
        let mut sysctls: BTreeMap<String, Scalar> = [
            ("net.ipv4.ip_forward", "1"),
            ("net.ipv4.conf.all.rp_filter", "0"),
            ("net.ipv4.conf.default.rp_filter", "0"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), Scalar(v.to_string())))
        .collect();
        let mut br_addr = vec![Cidr {
            addr: n.bridge_ip().into(),
            prefix: 26,
        }];
        let mut routes = vec![
            dev_route(Ipv4Addr::new(10, 30, 0, 0).into(), 16),
            dev_route(Ipv4Addr::new(10, 18, 0, 0).into(), 16),
        ];
        if n.v6 {
            sysctls.insert("net.ipv6.conf.all.forwarding".into(), Scalar("1".into()));
            br_addr.push(Cidr {
                addr: n.bridge_ip6().into(),
                prefix: 64,
            });
            routes.push(dev_route(
                Ipv6Addr::new(0xfdff, 0, 0, 0, 0, 0, 0, 0).into(),
                16,
            ));
            routes.push(dev_route(
                Ipv6Addr::new(0xfd18, 0, 0, 0, 0, 0, 0, 0).into(),
                16,
            ));
        }
        let locals: Vec<_> = plan
            .services
            .values()
            .flat_map(|(_, is)| is.iter())
            .filter(|i| i.node == IpAddr::V4(n.underlay))
            .cloned()
            .collect();
        let host = Host {
            sysctls,
            ipv6: n.v6,
            bridges: [(
                "br0".to_string(),
                Bridge {
                    addr: br_addr,
                    mac: None,
                },
            )]
            .into(),
            tuns: [(
                TUN_NAME.to_string(),
                Tun {
                    addr: vec![],
                    mtu: Some(OVERLAY_MTU),
                },
            )]
            .into(),
            routes,
            processes: vec![Process {
                name: "netmanager".into(),
                cmd: None,
                echo: None,
                ready: Some(Ready {
                    udp_bound: Some(hoplab_dataplane::netmanager::core::TUNNEL_PORT),
                    ..Ready::default()
                }),
                ready_timeout_ms: 5000,
                netmanager: Some(NetManagerArgs {
                    node: name.clone(),
                    cluster: n.cluster.clone(),
                    node_addr: n.underlay,
                    subnet: n.subnet,
                    subnet6: n.v6.then_some(n.subnet6),
                    coords: n.coords,
                    instances: locals,
                    cache_ttl_ms: n.cache_ttl_ms,
                }),
                gateway: None,
            }],
            ..Host::default()
        };
        sc.hosts.insert(name.clone(), host);
        sc.links.push(Link {
            a: end(
                name,
                "eth0",
                vec![Cidr {
                    addr: n.underlay.into(),
                    prefix: 24,
                }],
                None,
            ),
            b: end(UNDERLAY_HOST, name, vec![], Some("br0")),
        });
    }
    for (host, node, si) in placed {
        let s = &sc.services[si];
        let n = &plan.nodes[&node];
        let inst = plan.services[&s.name]
            .1
            .iter()
            .find(|i| format!("{}-{}", s.name, i.instance_number) == host)
            .expect("placed above");
        let mut addr = vec![Cidr {
            addr: inst.ns_ip.into(),
            prefix: 26,
        }];
        let mut routes = vec![Route {
            to: RouteDst::Default,
            via: Some(n.bridge_ip().into()),
            dev: None,
        }];
        if let Some(a6) = inst.ns_ip6 {
            addr.push(Cidr {
                addr: a6.into(),
                prefix: 64,
            });
            routes.push(Route {
                to: RouteDst::Default,
                via: Some(n.bridge_ip6().into()),
                dev: None,
            });
        }
        let processes = s
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
        sc.hosts.insert(
            host.clone(),
            Host {
                ipv6: inst.ns_ip6.is_some(),
                routes,
                processes,
                ..Host::default()
            },
        );
        let mut a = end(&host, "eth0", addr, None);
        let mut b = end(&node, &host, vec![], Some("br0"));
        (a.mtu, b.mtu) = (Some(OVERLAY_MTU), Some(OVERLAY_MTU));
        sc.links.push(Link { a, b });
    }
    Ok(plan)
}

fn dev_route(addr: IpAddr, prefix: u8) -> Route {
    Route {
        to: RouteDst::Prefix(Cidr { addr, prefix }),
        via: None,
        dev: Some(TUN_NAME.to_string()),
    }
}

fn end(host: &str, ifname: &str, addr: Vec<Cidr>, bridge: Option<&str>) -> End {
    End {
        host: host.to_string(),
        ifname: ifname.to_string(),
        addr,
        mac: None,
        bridge: bridge.map(str::to_string),
        mtu: None,
    }
}

/// The MTU of instance links and TUNs: a tunnelled packet plus its outer
/// IPv4 and UDP headers (28 bytes) must fit the 1500-byte underlay without
/// fragments; 1450 as in Oakestra leaves room for IPv6 outer headers too.
pub const OVERLAY_MTU: u32 = 1450;

/// What the harness needs to start a node's net manager.
#[derive(Debug, Clone)]
pub struct NetManagerArgs {
    pub node: String,
    pub cluster: String,
    pub node_addr: Ipv4Addr,
    pub subnet: Ipv4Addr,
    pub subnet6: Option<Ipv6Addr>,
    pub coords: Coords,
    pub instances: Vec<Instance>,
    pub cache_ttl_ms: Option<u64>,
}

impl NetManagerArgs {
    /// The command line, given where the binary is and where the control
    /// sockets and counter files go.
    pub fn argv(
        &self,
        bin: &str,
        ctl: &std::path::Path,
        counters: &std::path::Path,
    ) -> Vec<String> {
        let mut v = vec![
            bin.to_string(),
            "--tun".into(),
            TUN_NAME.into(),
            "--node-addr".into(),
            self.node_addr.to_string(),
            "--subnet".into(),
            format!("{}/26", self.subnet),
            format!("--coords={},{}", self.coords.x, self.coords.y),
            "--manager".into(),
            ctl.join(format!("{}.sock", self.cluster))
                .display()
                .to_string(),
            "--control".into(),
            ctl.join(format!("nm-{}.sock", self.node))
                .display()
                .to_string(),
            "--counters".into(),
            counters
                .join(format!("{}.netmanager.txt", self.node))
                .display()
                .to_string(),
        ];
        if let Some(s6) = self.subnet6 {
            v.extend(["--subnet6".into(), format!("{s6}/64")]);
        }
        if let Some(t) = self.cache_ttl_ms {
            v.extend(["--cache-ttl-ms".into(), t.to_string()]);
        }
        for i in &self.instances {
            let mut s = format!("ns={}", i.ns_ip);
            let own = |v6: bool| {
                i.service_ips
                    .iter()
                    .find(|ip| ip.kind == ServiceKind::Instance && ip.addr.is_ipv6() == v6)
                    .map(|ip| ip.addr)
            };
            if let Some(a) = own(false) {
                s.push_str(&format!(",ip={a}"));
            }
            if let Some(a6) = i.ns_ip6 {
                s.push_str(&format!(",ns6={a6}"));
            }
            if let Some(a) = own(true) {
                s.push_str(&format!(",ip6={a}"));
            }
            v.extend(["--instance".into(), s]);
        }
        v
    }
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

    fn err(text: &str) -> ScenarioError {
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
