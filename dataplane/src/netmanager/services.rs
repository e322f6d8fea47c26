//! The service table: service IP kinds, the instances behind a service IP,
//! and how one of them is chosen for a new flow.
//!
//! Service IPs (Oakestra's semantic addresses):
//!
//! - IPv4: all in 10.30.0.0/16. The kind of an IPv4 service IP cannot be
//!   read off the address; it comes with the resolution (each instance
//!   lists the service IPs it answers to, with their kind).
//! - IPv6: the kind is in the prefix: instance IPs in fdff:0000::/21,
//!   closest IPs in fdff:1000::/21, round-robin IPs in fdff:2000::/21.
//!
//! Balancing, unlike Oakestra's (uniform random "round robin", no
//! "closest"), is deterministic:
//!
//! - round robin: a per-service counter advanced once per *new* flow picks
//!   the instances in order of instance number (flows go 1, 2, 3, 1, ...);
//!   a flow sticks to its instance through the conversion table;
//! - closest: the instance whose node is nearest (Euclidean distance on
//!   the node coordinates) to the sender's node; ties go to the lowest
//!   instance number;
//! - instance: the instance that owns the address.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::prefix::in_net;

/// The IPv4 service range, 10.30.0.0/16.
pub const SERVICE_NET_V4: (Ipv4Addr, u8) = (Ipv4Addr::new(10, 30, 0, 0), 16);
/// IPv6 instance IPs: fdff:0000::/21.
pub const INSTANCE_NET_V6: (Ipv6Addr, u8) = (Ipv6Addr::new(0xfdff, 0, 0, 0, 0, 0, 0, 0), 21);
/// IPv6 closest IPs: fdff:1000::/21.
pub const CLOSEST_NET_V6: (Ipv6Addr, u8) = (Ipv6Addr::new(0xfdff, 0x1000, 0, 0, 0, 0, 0, 0), 21);
/// IPv6 round-robin IPs: fdff:2000::/21.
pub const ROUND_ROBIN_NET_V6: (Ipv6Addr, u8) =
    (Ipv6Addr::new(0xfdff, 0x2000, 0, 0, 0, 0, 0, 0), 21);

/// The whole IPv6 service range, fdff::/16: the three kinds' ranges and
/// addresses outside them such as a gateway's internal IPv6 address.
pub const SERVICE_RANGE_V6: (Ipv6Addr, u8) = (Ipv6Addr::new(0xfdff, 0, 0, 0, 0, 0, 0, 0), 16);
/// Oakestra's instance namespace addresses (each node's subnet is a /26
/// of it): 10.18.0.0/16.
pub const NAMESPACE_NET_V4: (Ipv4Addr, u8) = (Ipv4Addr::new(10, 18, 0, 0), 16);
/// The same for IPv6 (a /64 per node): fd18::/16.
pub const NAMESPACE_NET_V6: (Ipv6Addr, u8) = (Ipv6Addr::new(0xfd18, 0, 0, 0, 0, 0, 0, 0), 16);

/// True if `ip` is in the service range of its family: 10.30.0.0/16 or
/// fdff::/16 (service IPs, instance IPs, a gateway's internal address).
pub fn in_service_range(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(_) => in_net(ip, SERVICE_NET_V4.0.into(), SERVICE_NET_V4.1),
        IpAddr::V6(_) => in_net(ip, SERVICE_RANGE_V6.0.into(), SERVICE_RANGE_V6.1),
    }
}

/// How a service IP picks an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ServiceKind {
    /// The address of exactly one instance.
    Instance,
    RoundRobin,
    Closest,
}

/// True if `ip` is in the IPv4 service range or one of the three IPv6
/// service ranges.
pub fn is_service_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(_) => in_net(ip, SERVICE_NET_V4.0.into(), SERVICE_NET_V4.1),
        IpAddr::V6(_) => kind_from_prefix(ip).is_some(),
    }
}

/// The kind of an IPv6 service IP, from its prefix. IPv4 addresses (whose
/// kind is not in the address) and non-service addresses give `None`.
pub fn kind_from_prefix(ip: IpAddr) -> Option<ServiceKind> {
    if !ip.is_ipv6() {
        return None;
    }
    [
        (INSTANCE_NET_V6, ServiceKind::Instance),
        (CLOSEST_NET_V6, ServiceKind::Closest),
        (ROUND_ROBIN_NET_V6, ServiceKind::RoundRobin),
    ]
    .into_iter()
    .find(|((net, len), _)| in_net(ip, (*net).into(), *len))
    .map(|(_, k)| k)
}

/// A service IP an instance answers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ServiceIp {
    pub kind: ServiceKind,
    pub addr: IpAddr,
}

/// A node's position, for "closest".
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Coords {
    pub x: f64,
    pub y: f64,
}

impl Coords {
    pub fn new(x: f64, y: f64) -> Coords {
        Coords { x, y }
    }
    /// Squared Euclidean distance (ordering is all "closest" needs).
    pub fn dist2(self, other: Coords) -> f64 {
        let (dx, dy) = (self.x - other.x, self.y - other.y);
        dx * dx + dy * dy
    }
}

/// One instance of a service, as the service manager describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct Instance {
    /// The instance's namespace IPv4 address (from its node's subnet).
    pub ns_ip: Ipv4Addr,
    /// Its namespace IPv6 address, if it has one.
    pub ns_ip6: Option<Ipv6Addr>,
    /// The underlay address of its node (where tunnel port 50103 listens).
    pub node: IpAddr,
    pub instance_number: u32,
    /// Its node's coordinates.
    pub coords: Coords,
    /// The service IPs this instance answers to: its instance IP(s), and
    /// its service's round-robin and closest IPs.
    pub service_ips: Vec<ServiceIp>,
}

impl Instance {
    /// The namespace address of the family of `like`.
    pub fn ns_addr_like(&self, like: IpAddr) -> Option<IpAddr> {
        match like {
            IpAddr::V4(_) => Some(self.ns_ip.into()),
            IpAddr::V6(_) => self.ns_ip6.map(IpAddr::V6),
        }
    }
}

/// Service IP → the instances behind it.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolution {
    pub service_ip: IpAddr,
    pub instances: Vec<Instance>,
}

impl Resolution {
    pub fn new(service_ip: IpAddr, instances: Vec<Instance>) -> Resolution {
        Resolution {
            service_ip,
            instances,
        }
    }

    /// The kind of the service IP: as listed by an instance that answers to
    /// it; else from the IPv6 prefix; else `Instance` for a single instance
    /// and `RoundRobin` otherwise.
    pub fn kind(&self) -> ServiceKind {
        self.instances
            .iter()
            .flat_map(|i| i.service_ips.iter())
            .find(|s| s.addr == self.service_ip)
            .map(|s| s.kind)
            .or_else(|| kind_from_prefix(self.service_ip))
            .unwrap_or(if self.instances.len() == 1 {
                ServiceKind::Instance
            } else {
                ServiceKind::RoundRobin
            })
    }

    /// Chooses the instance for a new flow from a sender on a node at
    /// `from`. `rr` is the service's round-robin counter, advanced only for
    /// a round-robin choice that succeeds. Instances without a namespace
    /// address of the service IP's family are skipped. `None` when no
    /// instance fits.
    pub fn choose(&self, from: Coords, rr: &mut u64) -> Option<&Instance> {
        let fam = self.service_ip;
        let mut candidates: Vec<&Instance> = self
            .instances
            .iter()
            .filter(|i| i.ns_addr_like(fam).is_some())
            .collect();
        if candidates.is_empty() {
            return None;
        }
        candidates.sort_by_key(|i| i.instance_number);
        match self.kind() {
            ServiceKind::Instance => Some(
                candidates
                    .iter()
                    .find(|i| i.service_ips.iter().any(|s| s.addr == fam))
                    .copied()
                    .unwrap_or(candidates[0]),
            ),
            ServiceKind::RoundRobin => {
                let n = candidates.len() as u64;
                let pick = candidates[(*rr % n) as usize];
                *rr = rr.wrapping_add(1);
                Some(pick)
            }
            ServiceKind::Closest => candidates.into_iter().min_by(|a, b| {
                a.coords
                    .dist2(from)
                    .total_cmp(&b.coords.dist2(from))
                    .then(a.instance_number.cmp(&b.instance_number))
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    pub(crate) fn inst(
        n: u32,
        node: &str,
        x: f64,
        y: f64,
        svc: &[(ServiceKind, &str)],
    ) -> Instance {
        Instance {
            ns_ip: Ipv4Addr::new(10, 18, n as u8, 2),
            ns_ip6: Some(Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, n as u16, 2)),
            node: ip(node),
            instance_number: n,
            coords: Coords::new(x, y),
            service_ips: svc
                .iter()
                .map(|(k, a)| ServiceIp {
                    kind: *k,
                    addr: ip(a),
                })
                .collect(),
        }
    }

    #[test]
    fn classify() {
        assert!(is_service_ip(ip("10.30.0.1")));
        assert!(is_service_ip(ip("10.30.255.253")));
        assert!(!is_service_ip(ip("10.31.0.1")));
        assert!(!is_service_ip(ip("10.18.0.1")));
        assert_eq!(kind_from_prefix(ip("fdff::1")), Some(ServiceKind::Instance));
        assert_eq!(
            kind_from_prefix(ip("fdff:7ff::1")),
            Some(ServiceKind::Instance)
        );
        assert_eq!(kind_from_prefix(ip("fdff:800::1")), None);
        assert_eq!(
            kind_from_prefix(ip("fdff:1000::1")),
            Some(ServiceKind::Closest)
        );
        assert_eq!(
            kind_from_prefix(ip("fdff:17ff::1")),
            Some(ServiceKind::Closest)
        );
        assert_eq!(
            kind_from_prefix(ip("fdff:2000::1")),
            Some(ServiceKind::RoundRobin)
        );
        assert_eq!(kind_from_prefix(ip("fdff:2800::1")), None);
        assert_eq!(kind_from_prefix(ip("10.30.0.1")), None);
        assert!(!is_service_ip(ip("fc00::1")));
    }

    #[test]
    fn round_robin_rotates_in_instance_order() {
        let rr_ip = "10.30.0.9";
        // Listed out of order: the rotation follows instance numbers.
        let r = Resolution::new(
            ip(rr_ip),
            vec![
                inst(
                    3,
                    "192.168.0.3",
                    0.0,
                    0.0,
                    &[(ServiceKind::RoundRobin, rr_ip)],
                ),
                inst(
                    1,
                    "192.168.0.1",
                    0.0,
                    0.0,
                    &[(ServiceKind::RoundRobin, rr_ip)],
                ),
                inst(
                    2,
                    "192.168.0.2",
                    0.0,
                    0.0,
                    &[(ServiceKind::RoundRobin, rr_ip)],
                ),
            ],
        );
        assert_eq!(r.kind(), ServiceKind::RoundRobin);
        let mut c = 0;
        let picks: Vec<u32> = (0..4)
            .map(|_| r.choose(Coords::default(), &mut c).unwrap().instance_number)
            .collect();
        assert_eq!(picks, [1, 2, 3, 1]);
    }

    #[test]
    fn closest_and_ties() {
        let c_ip = "fdff:1000::5";
        let r = Resolution::new(
            ip(c_ip),
            vec![
                inst(4, "192.168.0.4", 10.0, 0.0, &[]),
                inst(2, "192.168.0.2", 0.0, 10.0, &[]),
                inst(7, "192.168.0.7", 50.0, 50.0, &[]),
            ],
        );
        assert_eq!(r.kind(), ServiceKind::Closest);
        let mut c = 0;
        // Equidistant from the origin: lowest instance number wins.
        assert_eq!(
            r.choose(Coords::new(0.0, 0.0), &mut c)
                .unwrap()
                .instance_number,
            2
        );
        assert_eq!(
            r.choose(Coords::new(9.0, 0.0), &mut c)
                .unwrap()
                .instance_number,
            4
        );
        assert_eq!(
            r.choose(Coords::new(40.0, 60.0), &mut c)
                .unwrap()
                .instance_number,
            7
        );
        assert_eq!(c, 0, "closest does not touch the round-robin counter");
    }

    #[test]
    fn instance_kind_and_family() {
        let a = "10.30.0.1";
        let r = Resolution::new(
            ip(a),
            vec![
                inst(
                    1,
                    "192.168.0.1",
                    0.0,
                    0.0,
                    &[(ServiceKind::RoundRobin, "10.30.0.9")],
                ),
                inst(2, "192.168.0.2", 0.0, 0.0, &[(ServiceKind::Instance, a)]),
            ],
        );
        assert_eq!(r.kind(), ServiceKind::Instance);
        let mut c = 0;
        assert_eq!(
            r.choose(Coords::default(), &mut c).unwrap().instance_number,
            2
        );

        // An IPv6 service with instances lacking IPv6 addresses: no choice.
        let mut i = inst(1, "192.168.0.1", 0.0, 0.0, &[]);
        i.ns_ip6 = None;
        let r6 = Resolution::new(ip("fdff:2000::1"), vec![i]);
        assert!(r6.choose(Coords::default(), &mut c).is_none());
        let empty = Resolution::new(ip("10.30.0.2"), vec![]);
        assert!(empty.choose(Coords::default(), &mut c).is_none());
    }
}
