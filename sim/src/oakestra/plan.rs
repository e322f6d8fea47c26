//! The output of expanding the Oakestra sections: each worker node's and
//! each site's place in the address plan, and every service's instances as the simulated
//! service managers describe them ([`Plan`]); small helpers for addresses.
//!
//! Knows the address arithmetic, not the file's fields.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hoplab_dataplane::netmanager::{Coords, Instance, ServiceKind};

use crate::values::{Cidr, RouteDst};

/// A node's place in the address plan.
#[derive(Debug, Clone)]
pub struct NodePlan {
    pub cluster: String,
    pub index: usize,
    pub coords: Coords,
    /// The tunnel's address: `underlay4`, or `underlay6` on an IPv6
    /// underlay.
    pub underlay: IpAddr,
    /// Its address on an IPv4 underlay (`eth0`).
    pub underlay4: Option<Ipv4Addr>,
    /// Its address on an IPv6 underlay (`eth0`).
    pub underlay6: Option<Ipv6Addr>,
    /// Its site's index in [`Plan::sites`] (none: the one shared switch).
    pub site: Option<usize>,
    pub subnet: Ipv4Addr,
    pub subnet6: Ipv6Addr,
    pub v6: bool,
    pub cache_ttl_ms: Option<u64>,
    pub frag_timeout_ms: Option<u64>,
}

impl NodePlan {
    pub fn bridge_ip(&self) -> Ipv4Addr {
        add4(self.subnet, 62)
    }
    pub fn bridge_ip6(&self) -> Ipv6Addr {
        add6(self.subnet6, 0xff)
    }
    /// Its underlay address of one family.
    pub fn underlay_addr(&self, v6: bool) -> Option<IpAddr> {
        if v6 {
            self.underlay6.map(IpAddr::V6)
        } else {
            self.underlay4.map(IpAddr::V4)
        }
    }
}

/// A site's place in the address plan: its router's addresses on the
/// site's network and on the backbone, per family the underlay has.
#[derive(Debug, Clone)]
pub struct SitePlan {
    pub name: String,
    pub router4: Option<Ipv4Addr>,
    pub router6: Option<Ipv6Addr>,
    pub backbone4: Option<Ipv4Addr>,
    pub backbone6: Option<Ipv6Addr>,
}

impl SitePlan {
    /// The router's address on the site's network, of one family.
    pub fn router(&self, v6: bool) -> Option<IpAddr> {
        if v6 {
            self.router6.map(IpAddr::V6)
        } else {
            self.router4.map(IpAddr::V4)
        }
    }
    /// The router's address on the backbone, of one family.
    pub fn backbone(&self, v6: bool) -> Option<IpAddr> {
        if v6 {
            self.backbone6.map(IpAddr::V6)
        } else {
            self.backbone4.map(IpAddr::V4)
        }
    }
}

pub(crate) fn add4(a: Ipv4Addr, n: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(a) + n)
}
pub(crate) fn add6(a: Ipv6Addr, n: u128) -> Ipv6Addr {
    Ipv6Addr::from(u128::from(a) + n)
}

/// The whole control-plane view of a scenario: nodes, and every service's
/// instances as the service managers describe them.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub nodes: BTreeMap<String, NodePlan>,
    /// Service name → (its cluster, its instances in instance-number order).
    pub services: BTreeMap<String, (String, Vec<Instance>)>,
    /// The underlay's sites, in file order (empty: one shared switch).
    pub sites: Vec<SitePlan>,
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

/// `addr/prefix`.
pub(crate) fn cidr(addr: impl Into<IpAddr>, prefix: u8) -> Cidr {
    Cidr {
        addr: addr.into(),
        prefix,
    }
}

/// The route destination `addr/prefix`.
pub(crate) fn prefix(addr: impl Into<IpAddr>, prefix: u8) -> RouteDst {
    RouteDst::Prefix(cidr(addr, prefix))
}

/// Sysctls from `(key, value)` pairs.
pub(crate) fn sysctls(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
    kv.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}
