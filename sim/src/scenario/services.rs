//! The Oakestra sections of the scenario file as the user writes them:
//! `clusters` (worker nodes with coordinates), `services` (service IPs,
//! instances placed on nodes), `gateway` (its node, addresses, exposures)
//! `externals` (hosts behind the internet router), `underlay` (the
//! worker nodes' underlay address family) and `sites` (underlay networks
//! joined by routers).
//!
//! Only the text's shape; what they expand to is `crate::oakestra`'s.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};

use serde::Deserialize;

use super::process::Process;
use crate::l7::spec::FileSource;
use crate::values::{Echo, Expose};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cluster {
    pub name: String,
    pub nodes: Vec<Node>,
    /// How long the net managers of this cluster cache a resolution. 0
    /// keeps a resolution only for the packets that waited for its answer
    /// (and those of the same millisecond): every new flow queries again,
    /// but a service is never queried twice while a query is in flight.
    #[serde(default)]
    pub cache_ttl_ms: Option<u64>,
    /// How long after its first fragment a datagram may take to become
    /// whole at this cluster's net managers before its fragments are
    /// dropped (`frag_timeout`), 1 to 60000; default 30000.
    #[serde(default)]
    pub frag_timeout_ms: Option<u64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Node {
    pub name: String,
    /// `[x, y]`: where the node is, for closest IPs.
    #[serde(default)]
    pub coords: [f64; 2],
    /// The transmit queue length of the node's TUNs (`nm0`, and `gw0` on
    /// the gateway's node), 1 to 100000; default
    /// [`crate::lab::topology::TUN_TXQUEUELEN`]. A short one makes the
    /// kernel drop under load (its verdict `FULL_RING`).
    #[serde(default)]
    pub txqueuelen: Option<u32>,
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
    /// Files laid into each instance's working directory, as a host's.
    #[serde(default)]
    pub files: BTreeMap<String, FileSource>,
    /// Processes every instance runs besides `echo`, as a host's.
    #[serde(default)]
    pub processes: Vec<Process>,
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

/// The gateway's internal address (seed 000).
pub const DEFAULT_INTERNAL: Ipv4Addr = Ipv4Addr::new(10, 30, 255, 253);
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

/// The address family of the worker nodes' underlay.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UnderlayFamily {
    /// IPv4 addresses; the tunnel runs over IPv4.
    #[default]
    Ipv4,
    /// IPv6 addresses only; the tunnel runs over IPv6.
    Ipv6,
    /// IPv4 and IPv6 addresses; the tunnel runs over IPv6, and services'
    /// traffic to the internet is routed to the gateway in both families.
    Dual,
}

impl UnderlayFamily {
    /// The underlay carries IPv4.
    pub fn has_v4(self) -> bool {
        self != UnderlayFamily::Ipv6
    }
    /// The underlay carries IPv6.
    pub fn has_v6(self) -> bool {
        self != UnderlayFamily::Ipv4
    }
}

/// An underlay network of its own, behind a router: the worker nodes of
/// the clusters it lists and the nodes it names.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Site {
    /// The site's router (and switch) host.
    pub name: String,
    /// Clusters whose nodes are on this site (but those another site
    /// names).
    #[serde(default)]
    pub clusters: Vec<String>,
    /// Worker nodes on this site, whatever their cluster's site.
    #[serde(default)]
    pub nodes: Vec<String>,
}
