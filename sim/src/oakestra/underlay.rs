//! The worker nodes' underlay: the network their tunnel runs over. By
//! default one shared switch (host `underlay`); with `sites`, one network
//! per site behind the site's router, the routers joined by a backbone
//! switch, and the tunnel routed between them. `underlay` picks the
//! family: IPv4 (default), IPv6 (the tunnel over IPv6), or both (`dual`:
//! the tunnel over IPv6; services' traffic to the internet routed to the
//! gateway node in both families).
//!
//! [`assign`] validates `underlay` and `sites` and allocates every node's
//! underlay addresses; [`emit`] adds the switches, routers, links and the
//! nodes' underlay routes; [`emit_gateway_routes`] adds what carries
//! services' traffic to and from the gateway node outside the tunnel.
//!
//! # Address plan (`k`: the node's index over all clusters in file order;
//! `s`: the site's index in file order; `j`: the node's index on its site)
//!
//! | what                          | IPv4                 | IPv6                   |
//! |-------------------------------|----------------------|------------------------|
//! | node `eth0`, shared switch    | `10.10.0.(k+1)/24`   | `fd10::(k+1)/64`       |
//! | node `eth0`, on site `s`      | `10.10.s.(j+1)/24`   | `fd10:0:0:s::(j+1)/64` |
//! | site router (bridge `br0`)    | `10.10.s.254/24`     | `fd10:0:0:s::fe/64`    |
//! | site router `backbone`        | `10.10.255.(s+1)/24` | `fd10:0:0:ff::(s+1)/64`|
//! | node on a site                | `10.10.0.0/16` via its router | `fd10::/16` via its router |
//! | site router                   | each other site's /24 (/64) via that site's router |
//!
//! A site's host is its router and its switch in one: the nodes' ports
//! (named after the nodes) are on its bridge `br0`, which holds the
//! router's address; its `backbone` interface is a port of the backbone
//! switch (host `backbone`, ports named after the sites). Routers are
//! plain hosts with forwarding on.
//!
//! Knows the address plan of the underlay and of the nodes' instance
//! subnets (for routes); not services, the gateway's own addresses or the
//! internet.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::plan::{cidr, prefix, sysctls, NodePlan, Plan, SitePlan};
use crate::lab::{Bridge, End, Host, Lab, Link, Route, RouteDst};
use crate::scenario::{Scenario, UnderlayFamily};
use crate::values::{bad, check_name_len, Invalid};

/// The shared underlay switch host (without sites).
pub const UNDERLAY_HOST: &str = "underlay";
/// The router between the externals and the gateway (a name the
/// underlay reserves too).
pub const INTERNET_HOST: &str = "internet";
/// The switch between the sites' routers (with sites), and each router's
/// interface to it.
pub const BACKBONE_HOST: &str = "backbone";
/// Host names a site may not take.
const RESERVED: &[&str] = &[UNDERLAY_HOST, BACKBONE_HOST, INTERNET_HOST];
/// Sites at most (the third octet of `10.10.s.0/24`, 255 being the
/// backbone's).
const MAX_SITES: usize = 200;

/// Validate `underlay` and `sites` against the planned nodes, and allocate
/// each node's underlay addresses and site, and each site's router
/// addresses, into `plan`.
pub fn assign(sc: &Scenario, plan: &mut Plan) -> Result<(), Invalid> {
    if plan.nodes.is_empty() {
        if !sc.sites.is_empty() {
            return bad("sites", "sites need `clusters` with worker nodes");
        }
        if sc.underlay != UnderlayFamily::Ipv4 {
            return bad("underlay", "an underlay needs `clusters` with worker nodes");
        }
        return Ok(());
    }
    let site_of = sites_of_nodes(sc, plan)?;
    let fam = sc.underlay;
    plan.sites = sc
        .sites
        .iter()
        .enumerate()
        .map(|(s, site)| SitePlan {
            name: site.name.clone(),
            router4: fam.has_v4().then(|| Ipv4Addr::new(10, 10, s as u8, 254)),
            router6: fam
                .has_v6()
                .then(|| Ipv6Addr::new(0xfd10, 0, 0, s as u16, 0, 0, 0, 0xfe)),
            backbone4: fam
                .has_v4()
                .then(|| Ipv4Addr::new(10, 10, 255, s as u8 + 1)),
            backbone6: fam
                .has_v6()
                .then(|| Ipv6Addr::new(0xfd10, 0, 0, 0xff, 0, 0, 0, s as u16 + 1)),
        })
        .collect();
    let mut order: Vec<(usize, String)> = plan
        .nodes
        .iter()
        .map(|(name, n)| (n.index, name.clone()))
        .collect();
    order.sort();
    let mut on_site = vec![0usize; plan.sites.len()];
    for (k, name) in order {
        let site = site_of.get(&name).copied();
        let (net, j) = match site {
            None => (0, k),
            Some(s) => {
                on_site[s] += 1;
                (s, on_site[s] - 1)
            }
        };
        let n = plan.nodes.get_mut(&name).expect("listed above");
        n.site = site;
        n.underlay4 = fam
            .has_v4()
            .then(|| Ipv4Addr::new(10, 10, net as u8, j as u8 + 1));
        n.underlay6 = fam
            .has_v6()
            .then(|| Ipv6Addr::new(0xfd10, 0, 0, net as u16, 0, 0, 0, j as u16 + 1));
        n.underlay = match (n.underlay6, n.underlay4) {
            (Some(v6), _) => IpAddr::V6(v6),
            (None, Some(v4)) => IpAddr::V4(v4),
            (None, None) => unreachable!("an underlay has a family"),
        };
    }
    Ok(())
}

/// Validate `sites`: each node's site (by name, else by its cluster), or
/// none without sites.
fn sites_of_nodes(sc: &Scenario, plan: &Plan) -> Result<BTreeMap<String, usize>, Invalid> {
    let mut out = BTreeMap::new();
    if sc.sites.is_empty() {
        return Ok(out);
    }
    if sc.sites.len() > MAX_SITES {
        return bad("sites", format!("at most {MAX_SITES} sites"));
    }
    if sc.hosts.contains_key(BACKBONE_HOST) {
        return bad(
            format!("hosts.{BACKBONE_HOST}"),
            format!("`{BACKBONE_HOST}` is the sites' switch: pick another host name"),
        );
    }
    let mut by_cluster: BTreeMap<&str, (usize, String)> = BTreeMap::new();
    let mut by_node: BTreeMap<&str, (usize, String)> = BTreeMap::new();
    let mut names = std::collections::BTreeSet::new();
    for (i, site) in sc.sites.iter().enumerate() {
        let f = format!("sites[{i}]");
        check_name_len(format!("{f}.name"), &site.name, 15)?;
        if RESERVED.contains(&site.name.as_str())
            || sc.hosts.contains_key(&site.name)
            || plan.nodes.contains_key(&site.name)
            || !names.insert(site.name.as_str())
        {
            return bad(
                format!("{f}.name"),
                format!("host name `{}` is already taken", site.name),
            );
        }
        if site.clusters.is_empty() && site.nodes.is_empty() {
            return bad(f, "a site needs `clusters` or `nodes`");
        }
        for (j, c) in site.clusters.iter().enumerate() {
            let field = format!("{f}.clusters[{j}]");
            if !sc.clusters.iter().any(|x| &x.name == c) {
                return bad(field, format!("no cluster `{c}`"));
            }
            if let Some((_, prev)) = by_cluster.insert(c, (i, field.clone())) {
                return bad(field, format!("cluster `{c}` is also {prev}"));
            }
        }
        for (j, n) in site.nodes.iter().enumerate() {
            let field = format!("{f}.nodes[{j}]");
            if !plan.nodes.contains_key(n) {
                return bad(field, format!("undefined worker node `{n}`"));
            }
            if let Some((_, prev)) = by_node.insert(n, (i, field.clone())) {
                return bad(field, format!("node `{n}` is also {prev}"));
            }
        }
    }
    for (name, n) in &plan.nodes {
        let site = by_node
            .get(name.as_str())
            .or_else(|| by_cluster.get(n.cluster.as_str()));
        let Some((s, _)) = site else {
            return bad(
                "sites",
                format!(
                    "worker node `{name}` (cluster `{}`) is on no site: list it or its cluster",
                    n.cluster
                ),
            );
        };
        out.insert(name.clone(), *s);
    }
    Ok(out)
}

/// `eth0`'s addresses of a node.
fn node_addrs(n: &NodePlan) -> Vec<crate::values::Cidr> {
    n.underlay4
        .map(|a| cidr(a, 24))
        .into_iter()
        .chain(n.underlay6.map(|a| cidr(a, 64)))
        .collect()
}

/// A port of `switch`'s bridge `br0`, named `ifname`.
fn port(switch: &str, ifname: &str) -> End {
    let mut b = End::new(switch, ifname, vec![]);
    b.bridge = Some("br0".into());
    b
}

fn switch() -> Host {
    Host {
        bridges: [("br0".to_string(), Bridge::default())].into(),
        ..Host::default()
    }
}

/// Emit: the shared switch, or each site's router and the backbone; each
/// node's underlay link (its host is in `lab` already) and, on a site,
/// its routes to the other sites.
pub fn emit(plan: &Plan, lab: &mut Lab) {
    if plan.sites.is_empty() {
        lab.hosts.insert(UNDERLAY_HOST.to_string(), switch());
        for (name, n) in &plan.nodes {
            lab.links.push(Link {
                a: End::new(name, "eth0", node_addrs(n)),
                b: port(UNDERLAY_HOST, name),
                impair: None,
            });
            lab.hosts.get_mut(name).expect("made").ipv6 |= n.underlay6.is_some();
        }
        return;
    }
    lab.hosts.insert(BACKBONE_HOST.to_string(), switch());
    for (s, site) in plan.sites.iter().enumerate() {
        lab.hosts.insert(site.name.clone(), router(plan, s));
        let addrs = site
            .backbone4
            .map(|a| cidr(a, 24))
            .into_iter()
            .chain(site.backbone6.map(|a| cidr(a, 64)))
            .collect();
        lab.links.push(Link {
            a: End::new(&site.name, BACKBONE_HOST, addrs),
            b: port(BACKBONE_HOST, &site.name),
            impair: None,
        });
    }
    for (name, n) in &plan.nodes {
        let site = &plan.sites[n.site.expect("every node is on a site")];
        lab.links.push(Link {
            a: End::new(name, "eth0", node_addrs(n)),
            b: port(&site.name, name),
            impair: None,
        });
        let h = lab.hosts.get_mut(name).expect("made");
        h.ipv6 |= n.underlay6.is_some();
        if let Some(r) = site.router4 {
            h.routes
                .push(Route::via(prefix(Ipv4Addr::new(10, 10, 0, 0), 16), r));
        }
        if let Some(r) = site.router6 {
            h.routes.push(Route::via(
                prefix(Ipv6Addr::new(0xfd10, 0, 0, 0, 0, 0, 0, 0), 16),
                r,
            ));
        }
    }
}

/// Site `s`'s router: forwarding on, its address on its bridge, routes to
/// every other site's network through that site's router.
fn router(plan: &Plan, s: usize) -> Host {
    let site = &plan.sites[s];
    let v6 = site.router6.is_some();
    let mut sysctls = sysctls(&[
        ("net.ipv4.ip_forward", "1"),
        ("net.ipv4.conf.all.rp_filter", "0"),
        ("net.ipv4.conf.default.rp_filter", "0"),
    ]);
    if v6 {
        sysctls.insert("net.ipv6.conf.all.forwarding".into(), "1".into());
    }
    let addr = site
        .router4
        .map(|a| cidr(a, 24))
        .into_iter()
        .chain(site.router6.map(|a| cidr(a, 64)))
        .collect();
    let mut routes = Vec::new();
    for (t, other) in plan.sites.iter().enumerate() {
        if t == s {
            continue;
        }
        if let Some(b) = other.backbone4 {
            routes.push(Route::via(prefix(Ipv4Addr::new(10, 10, t as u8, 0), 24), b));
        }
        if let Some(b) = other.backbone6 {
            routes.push(Route::via(
                prefix(Ipv6Addr::new(0xfd10, 0, 0, t as u16, 0, 0, 0, 0), 64),
                b,
            ));
        }
    }
    Host {
        sysctls,
        ipv6: v6,
        bridges: [("br0".to_string(), Bridge { addr, mac: None })].into(),
        routes,
        ..Host::default()
    }
}

/// The next hop from node `from` toward node `to`'s underlay address in
/// one family: `to` itself on the same network, else `from`'s site router;
/// `None` if the underlay has no such family.
pub fn next_hop(plan: &Plan, from: &NodePlan, to: &NodePlan, v6: bool) -> Option<IpAddr> {
    match from.site {
        s if s == to.site => to.underlay_addr(v6),
        Some(s) => plan.sites[s].router(v6),
        None => None,
    }
}

/// Emit the routes that carry services' traffic to the internet to the
/// gateway node `gw`, and the replies back, outside the tunnel: each
/// other node's default route toward it; on `gw`, each other node's
/// instance subnet toward that node; on each site's router, every node's
/// instance subnet and the default toward `gw`. IPv4 where the underlay
/// has it; IPv6 where it has it, the nodes have IPv6 instances and `v6`
/// (the gateway has a public IPv6 address).
pub fn emit_gateway_routes(plan: &Plan, gw: &str, v6: bool, lab: &mut Lab) {
    let g = &plan.nodes[gw];
    for fam6 in [false, true] {
        if fam6 && !(v6 && g.v6) {
            continue;
        }
        let subnet = |n: &NodePlan| {
            if fam6 {
                prefix(n.subnet6, 64)
            } else {
                prefix(n.subnet, 26)
            }
        };
        for (name, n) in &plan.nodes {
            if name == gw {
                continue;
            }
            if let Some(hop) = next_hop(plan, g, n, fam6) {
                let h = lab.hosts.get_mut(gw).expect("made");
                h.routes.push(Route::via(subnet(n), hop));
            }
            if let Some(hop) = next_hop(plan, n, g, fam6) {
                let h = lab.hosts.get_mut(name).expect("made");
                h.routes.push(Route::via(RouteDst::Default, hop));
            }
        }
        for (s, site) in plan.sites.iter().enumerate() {
            let toward = |n: &NodePlan| {
                if n.site == Some(s) {
                    n.underlay_addr(fam6)
                } else {
                    plan.sites[n.site.expect("on a site")].backbone(fam6)
                }
            };
            let mut routes: Vec<Route> = plan
                .nodes
                .values()
                .filter_map(|n| Some(Route::via(subnet(n), toward(n)?)))
                .collect();
            routes.extend(toward(g).map(|hop| Route::via(RouteDst::Default, hop)));
            let h = lab.hosts.get_mut(&site.name).expect("made");
            h.routes.extend(routes);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::oakestra::parse;

    use super::*;

    const SITES: &str = "version: 1
underlay: dual
clusters:
  - name: c1
    nodes:
      - {name: gw}
      - {name: n1}
  - name: c2
    nodes:
      - {name: n2}
      - {name: n3}
sites:
  - {name: edge, clusters: [c1]}
  - {name: east, clusters: [c2]}
  - {name: west, nodes: [n3]}
services:
  - name: api
    ipv6: true
    instances:
      - {node: n2}
gateway:
  node: gw
  public: 24.0.5.8
  public6: 2001:db8:5::8
";

    fn routes(x: &crate::oakestra::Expanded, h: &str) -> String {
        x.hosts[h]
            .routes
            .iter()
            .map(|r| format!("{:?} {:?}", r.to, r.via))
            .collect::<Vec<_>>()
            .join("; ")
    }

    #[test]
    fn sites_get_a_network_each_and_routes_between_them() {
        let x = parse(Path::new("s.yaml"), "s", SITES).unwrap();
        let n = &x.plan.nodes;
        assert_eq!(n["gw"].underlay4, Some(Ipv4Addr::new(10, 10, 0, 1)));
        assert_eq!(n["n1"].underlay4, Some(Ipv4Addr::new(10, 10, 0, 2)));
        assert_eq!(n["n2"].underlay4, Some(Ipv4Addr::new(10, 10, 1, 1)));
        // n3 is named by `west`, over its cluster's site.
        assert_eq!(n["n3"].site, Some(2));
        assert_eq!(n["n3"].underlay, "fd10:0:0:2::1".parse::<IpAddr>().unwrap());
        assert!(x.hosts.contains_key(BACKBONE_HOST) && !x.hosts.contains_key(UNDERLAY_HOST));
        // The tunnel's peers are IPv6 on a dual underlay.
        let nm = x.hosts["n2"].processes[0].netmanager.clone().unwrap();
        let argv = nm.argv("nm", Path::new("/c"), Path::new("/o")).join(" ");
        assert!(argv.contains("--node-addr fd10:0:0:1::1"), "{argv}");
        assert!(argv.contains("--peer fd10::1"), "{argv}");
        // n2 reaches the other sites through its router, and leaves
        // through it toward the gateway node.
        let r = routes(&x, "n2");
        assert!(
            r.contains("10.10.0.0") && r.contains("Some(10.10.1.254)"),
            "{r}"
        );
        assert!(r.contains("Default Some(fd10:0:0:1::fe)"), "{r}");
        // The gateway reaches n1's subnet on its own network, n2's through
        // its router.
        let r = routes(&x, "gw");
        assert!(
            r.contains("10.18.0.64") && r.contains("Some(10.10.0.2)"),
            "{r}"
        );
        assert!(
            r.contains("10.18.0.128") && r.contains("Some(10.10.0.254)"),
            "{r}"
        );
        // east's router: west's network over the backbone, n2's subnet on
        // its own, the default toward the gateway site's router.
        let r = routes(&x, "east");
        assert!(r.contains("Some(10.10.255.3)"), "{r}");
        assert!(r.contains("Default Some(10.10.255.1)"), "{r}");
        assert!(r.contains("Default Some(fd10:0:0:ff::1)"), "{r}");
        let r = routes(&x, "edge");
        assert!(r.contains("Default Some(10.10.0.1)"), "{r}");
    }

    #[test]
    fn sites_and_underlay_need_clusters() {
        for (text, field) in [
            ("version: 1\nsites: [{name: a, nodes: [n1]}]\n", "sites"),
            ("version: 1\nunderlay: ipv6\n", "underlay"),
        ] {
            let e = parse(Path::new("s.yaml"), "s", text).unwrap_err();
            assert_eq!(e.field, field, "{e}");
        }
    }

    #[test]
    fn one_shared_switch_without_sites() {
        let text = SITES
            .replace("underlay: dual\n", "")
            .replace(
                "sites:\n  - {name: edge, clusters: [c1]}\n  - {name: east, clusters: [c2]}\n  - {name: west, nodes: [n3]}\n",
                "",
            );
        let x = parse(Path::new("s.yaml"), "s", &text).unwrap();
        let n = &x.plan.nodes;
        assert_eq!(n["n3"].underlay, Ipv4Addr::new(10, 10, 0, 4));
        assert_eq!(n["n3"].underlay6, None);
        assert!(x.hosts.contains_key(UNDERLAY_HOST));
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (
                "clusters: [c2]",
                "clusters: [c9]",
                "sites[1].clusters[0]",
                "no cluster `c9`",
            ),
            (
                "nodes: [n3]",
                "nodes: [n9]",
                "sites[2].nodes[0]",
                "undefined worker node `n9`",
            ),
            (
                "clusters: [c2]",
                "clusters: [c1]",
                "sites[1].clusters[0]",
                "also sites[0].clusters[0]",
            ),
            (
                "name: west, nodes: [n3]",
                "name: west, nodes: [n3, n3]",
                "sites[2].nodes[1]",
                "also sites[2].nodes[0]",
            ),
            ("name: east", "name: n1", "sites[1].name", "already taken"),
            (
                "name: east",
                "name: backbone",
                "sites[1].name",
                "already taken",
            ),
            (
                "{name: east, clusters: [c2]}",
                "{name: east}",
                "sites[1]",
                "`clusters` or `nodes`",
            ),
            (
                "{name: east, clusters: [c2]}",
                "{name: east, nodes: [n1]}",
                "sites",
                "worker node `n2` (cluster `c2`) is on no site",
            ),
            (
                "underlay: dual",
                "underlay: ipv5",
                "underlay",
                "unknown variant",
            ),
        ];
        for (from, to, field, msg) in cases {
            let text = SITES.replace(from, to);
            assert_ne!(text, SITES, "{from}");
            let e = parse(Path::new("s.yaml"), "s", &text).unwrap_err();
            assert_eq!(e.field, field, "{e}");
            assert!(e.message.contains(msg), "{e}");
        }
    }
}
