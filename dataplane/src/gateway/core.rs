//! [`GatewayCore`]: the gateway as a sans-IO state machine. Its shell reads
//! packets from the gateway's TUN device, hands each to
//! [`GatewayCore::packet_in_place`] with the time, and writes back to the
//! TUN whatever comes out as [`Verdict::Request`] or [`Verdict::Reply`].
//!
//! See the [module documentation of `gateway`](super) for the tuple
//! transformations.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::proto::Proto;
use super::table::{space, Entry, InsertError, NewFlow, RequestKey, Table, Timeouts};
use crate::fragments::{self, Discarded, FragmentConfig, FragmentTable, Refusal, Shape};
use crate::held::Held;
use crate::netmanager::services::is_service_ip;
use crate::packet::{IpPacket, ParseError, Quote, QuotedKind, Transport};
use crate::prefix::in_net;
use crate::time::Millis;

/// A row of the Exposed Services table: `proto` packets arriving on the
/// gateway's port `port` go to `service`. Its family is the service's: an
/// IPv4 service is reached from IPv4 clients only, an IPv6 service from
/// IPv6 clients only. An ICMP exposure (echo requests to the public
/// address) has no ports: `port` and the service's port are 0
/// ([`Exposure::icmp`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exposure {
    pub proto: Proto,
    pub port: u16,
    pub service: SocketAddr,
}

impl Exposure {
    /// Echo requests to the gateway go to the service IP `service`.
    pub fn icmp(service: IpAddr) -> Exposure {
        Exposure {
            proto: Proto::Icmp,
            port: 0,
            service: SocketAddr::new(service, 0),
        }
    }

    pub fn is_ipv6(&self) -> bool {
        self.service.is_ipv6()
    }

    /// The key of this row: its protocol, port and family.
    pub fn exposed_port(&self) -> ExposedPort {
        ExposedPort::new(self.proto, self.port, self.is_ipv6())
    }
}

/// A port of the gateway as exposed to one family: the key of the Exposed
/// Services table (at most one service each), and of the firewall's sets.
/// Ordered by protocol, port, then family (IPv4 first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ExposedPort {
    pub proto: Proto,
    pub port: u16,
    /// The IPv6 exposure of the port (else the IPv4 one).
    pub v6: bool,
}

impl ExposedPort {
    pub fn new(proto: Proto, port: u16, v6: bool) -> ExposedPort {
        ExposedPort { proto, port, v6 }
    }
}

impl fmt::Display for Exposure {
    /// `tcp 8080 -> 10.30.30.30:80`, `udp 53 -> [fdff::1]:53`,
    /// `icmp -> 10.30.30.30`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.proto.has_ports() {
            write!(f, "{} {} -> {}", self.proto, self.port, self.service)
        } else {
            write!(f, "{} -> {}", self.proto, self.service.ip())
        }
    }
}

/// The gateway's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayConfig {
    /// The gateway's IPv4 address inside the platform (the nftables DNAT
    /// target, and the source of the requests it sends to services).
    pub internal4: Ipv4Addr,
    /// The same for IPv6; without it, IPv6 cannot be exposed and every
    /// IPv6 packet is dropped as [`DropReason::WrongDestination`].
    pub internal6: Option<Ipv6Addr>,
    /// The platform's own networks: no client can be inside them, so a
    /// request from one is spoofed (and a packet from one that is not the
    /// reply of a flow has no flow).
    pub internal_nets: Vec<(IpAddr, u8)>,
    /// Bound of the Forward table; new flows beyond it are refused.
    pub max_flows: usize,
    /// Internal ports handed out when a client's own port is taken,
    /// inclusive. `lo > hi` is an empty range.
    pub napt_ports: (u16, u16),
    /// Idle timeout of TCP entries that are not closed.
    pub tcp_established_ms: Millis,
    /// How long a closed TCP entry (RST, or FIN both ways) is kept.
    pub tcp_closing_ms: Millis,
    /// Idle timeout of UDP entries.
    pub udp_ms: Millis,
    /// The bounds of the fragment table (see [`crate::fragments`]).
    pub fragments: FragmentConfig,
    /// The TUN's MTU: a reassembled datagram is cut again to the size of
    /// its largest fragment, never above it.
    pub mtu: usize,
}

impl Default for GatewayConfig {
    /// Oakestra's addresses: internal 10.30.255.253, no IPv6; internal
    /// networks 10.30.0.0/16 (service IPs), 10.18.0.0/16 (instance
    /// namespaces), 10.10.0.0/16, fdff::/16 and fd18::/16; 16384 flows;
    /// NAPT ports 49152–65535; TCP 300 s established, 10 s closing; UDP
    /// 30 s; fragments as [`FragmentConfig::default`]; MTU 1450 (`gw0`'s,
    /// the overlay's).
    fn default() -> Self {
        let v4 = |a, b| IpAddr::V4(Ipv4Addr::new(a, b, 0, 0));
        let v6 = |a| IpAddr::V6(Ipv6Addr::new(a, 0, 0, 0, 0, 0, 0, 0));
        GatewayConfig {
            internal4: Ipv4Addr::new(10, 30, 255, 253),
            internal6: None,
            internal_nets: vec![
                (v4(10, 30), 16),
                (v4(10, 18), 16),
                (v4(10, 10), 16),
                (v6(0xfdff), 16),
                (v6(0xfd18), 16),
            ],
            max_flows: 16384,
            napt_ports: (49152, 65535),
            tcp_established_ms: Millis(300_000),
            tcp_closing_ms: Millis(10_000),
            udp_ms: Millis(30_000),
            fragments: FragmentConfig::default(),
            mtu: 1450,
        }
    }
}

impl GatewayConfig {
    /// The internal address of a family, if it has one.
    #[inline(always)]
    pub fn internal(&self, v6: bool) -> Option<IpAddr> {
        if v6 {
            self.internal6.map(IpAddr::V6)
        } else {
            Some(IpAddr::V4(self.internal4))
        }
    }

    /// Whether `e` may be exposed: the one rule for what a port may be
    /// mapped to, which [`GatewayCore::expose`] applies (so the control
    /// socket and the command line) and the scenario validator calls.
    /// The port is not 0; the service is a service IP of the Oakestra
    /// ranges ([`is_service_ip`]: 10.30.0.0/16; fdff::/21, fdff:1000::/21,
    /// fdff:2000::/21) with a port other than 0, and not one of the
    /// gateway's own internal addresses; its family has an internal
    /// address. Anything else would make the gateway a relay from the
    /// outside to any address it can reach (the underlay, the internet).
    /// An ICMP exposure has port 0 and a service port 0 (no ports).
    pub fn check_exposure(&self, e: &Exposure) -> Result<(), ExposeError> {
        let ports = e.proto.has_ports();
        if ports && e.port == 0 {
            return Err(ExposeError::PortZero);
        }
        if !ports && (e.port != 0 || e.service.port() != 0) {
            return Err(ExposeError::IcmpPort(e.clone()));
        }
        let ip = e.service.ip();
        if !is_service_ip(ip) {
            return Err(ExposeError::NotServiceIp(e.service));
        }
        if ports && e.service.port() == 0 {
            return Err(ExposeError::ServicePortZero(e.service));
        }
        match self.internal(e.is_ipv6()) {
            None => Err(ExposeError::NoInternalAddress(e.clone())),
            Some(own) if own == ip => Err(ExposeError::OwnAddress(e.service)),
            Some(_) => Ok(()),
        }
    }

    /// True if `ip` is inside one of [`Self::internal_nets`].
    pub fn is_internal(&self, ip: IpAddr) -> bool {
        self.internal_nets
            .iter()
            .any(|&(net, len)| in_net(ip, net, len))
    }
}

fn family(v6: &bool) -> &'static str {
    if *v6 {
        "IPv6"
    } else {
        "IPv4"
    }
}

/// ` 8080`, or nothing for port 0 (an ICMP exposure).
fn port_text(port: u16) -> String {
    if port == 0 {
        String::new()
    } else {
        format!(" {port}")
    }
}

/// Why an exposure was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExposeError {
    #[error("port 0 cannot be exposed")]
    PortZero,
    #[error("service {0} has port 0")]
    ServicePortZero(SocketAddr),
    /// An ICMP exposure with a port (ICMP has none).
    #[error("icmp has no ports: expose icmp to a service IP alone (got port {} -> {})", .0.port, .0.service)]
    IcmpPort(Exposure),
    /// Not a service IP of the Oakestra ranges: the gateway exposes
    /// services, it does not relay to other addresses.
    #[error(
        "{0} is not a service IP (10.30.0.0/16; fdff::/21, fdff:1000::/21, fdff:2000::/21): only services can be exposed"
    )]
    NotServiceIp(SocketAddr),
    /// The gateway's own internal address.
    #[error("{0} is the gateway's own internal address, not a service")]
    OwnAddress(SocketAddr),
    /// The same protocol, port and family is exposed to another service
    /// (unexpose it first).
    #[error("already exposed: {existing}")]
    AlreadyExposed { existing: Exposure },
    #[error("{proto}{} is not exposed over {}", port_text(*.port), family(.v6))]
    NotExposed { proto: Proto, port: u16, v6: bool },
    /// An IPv6 exposure while [`GatewayConfig::internal6`] is `None`.
    #[error("{0}: the gateway has no internal IPv6 address")]
    NoInternalAddress(Exposure),
}

/// Why a packet was dropped. Each has a counter named `dropped_` + its
/// [`Display`](fmt::Display) name in [`Counters`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// Failed validation ([`IpPacket::new_checked`]): truncated, bad
    /// lengths, bad IPv4 header checksum, not IP; or the buffer is longer
    /// than the packet's IP length.
    Malformed,
    /// A fragment that is not valid (a non-last fragment whose length is
    /// not a multiple of 8, an empty one, one ending past 65535 bytes, a
    /// bad header), or a datagram made whole that is a fragment again.
    Fragment,
    /// A fragment beyond the fragment table's bounds (datagrams or
    /// bytes).
    FragmentOverCap,
    /// A fragment overlapping one held for the same datagram, or
    /// contradicting its end; the fragments held are dropped with it
    /// (each counted).
    FragmentOverlap,
    /// A fragment with the same offset and length as one held.
    FragmentDuplicate,
    /// A fragment of a datagram not whole in time (counted by `expire`,
    /// never a packet's verdict).
    FragmentTimeout,
    /// Neither TCP, UDP nor ICMP echo (other ICMP messages but the errors
    /// translated, an ICMP error quoting anything but TCP, UDP or an
    /// echo), or an
    /// IPv6 routing or authentication header.
    Unsupported,
    /// Not addressed to the gateway's internal address of the packet's
    /// family (or IPv6 without an internal IPv6 address).
    WrongDestination,
    /// A request from inside the internal networks, or from an address no
    /// client can have (unspecified, loopback, multicast, broadcast).
    Spoofed,
    /// A request for a port not exposed for its protocol and family (an
    /// echo request while ICMP is not exposed for its family).
    NotExposed,
    /// From inside the internal networks, to a port that is not exposed,
    /// and not the reply of a flow (no entry, expired, or from another
    /// source than the entry's service).
    NoFlow,
    /// A new flow while the Forward table holds `max_flows` entries.
    TableFull,
    /// A new flow whose client port is taken and whose NAPT range has no
    /// free port.
    PortsExhausted,
}

impl DropReason {
    pub fn name(self) -> &'static str {
        match self {
            DropReason::Malformed => "malformed",
            DropReason::Fragment => "fragment",
            DropReason::FragmentOverCap => "frag_over_cap",
            DropReason::FragmentOverlap => "frag_overlap",
            DropReason::FragmentDuplicate => "frag_duplicate",
            DropReason::FragmentTimeout => "frag_timeout",
            DropReason::Unsupported => "unsupported",
            DropReason::WrongDestination => "wrong_destination",
            DropReason::Spoofed => "spoofed",
            DropReason::NotExposed => "not_exposed",
            DropReason::NoFlow => "no_flow",
            DropReason::TableFull => "table_full",
            DropReason::PortsExhausted => "ports_exhausted",
        }
    }
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What became of a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// A client's request, rewritten in the buffer towards its service:
    /// write it back to the TUN.
    Request,
    /// A service's reply, rewritten in the buffer towards its client:
    /// write it back to the TUN.
    Reply,
    /// Dropped and counted; the buffer is unchanged.
    Drop(DropReason),
    /// A fragment kept until its datagram is whole: nothing to write; the
    /// buffer is unchanged.
    Held,
    /// A fragment that made its datagram whole, which was translated (a
    /// request or a reply) and cut again: write the packets of
    /// [`GatewayCore::take_out`] to the TUN, in order; the buffer is
    /// unchanged.
    Fragments,
}

/// A Forward table entry, for display.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowInfo {
    pub proto: Proto,
    pub client: SocketAddr,
    pub service: SocketAddr,
    pub exposed_port: u16,
    /// The source port of the requests sent to the service.
    pub internal_port: u16,
    /// "open"; "closing": a FIN seen from one side; "closed": a RST, or
    /// FINs from both sides (removed `tcp_closing_ms` later). UDP entries
    /// are always "open".
    pub state: &'static str,
    /// Time since the entry's last packet.
    pub idle_ms: Millis,
}

impl fmt::Display for FlowInfo {
    /// `tcp 93.6.1.78:51671 -> 8080 -> 10.30.30.30:80 port 51671 open idle 0 ms`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} -> {} -> {} port {} {} idle {} ms",
            self.proto,
            self.client,
            self.exposed_port,
            self.service,
            self.internal_port,
            self.state,
            self.idle_ms
        )
    }
}

crate::counters::counters! {
    drops: "dropped_";
    /// Packets handed to `packet_in_place`: each ends as exactly one of
    /// `requests`, `replies`, a `dropped_*` or `frag_held`; a datagram
    /// made whole (`frag_reassembled`) ends as one of the first three.
    packets_in,
    /// Packets rewritten as requests ([`Verdict::Request`]).
    requests,
    /// Packets rewritten as replies ([`Verdict::Reply`]).
    replies,
    flows_created,
    /// Flows created with an internal port other than the client's.
    flows_napt,
    /// Flows removed because they timed out: by `expire`, by the sweep of
    /// a full table, or when met by a packet.
    flows_expired,
    /// Flows removed by `unexpose`.
    flows_removed,
    /// ICMP errors about a flow translated towards its client (counted in
    /// `replies` too): an instance's or a router's error about a request.
    icmp_errors_to_client,
    /// ICMP errors about a flow translated towards its service (counted in
    /// `requests` too): a client's or an internet router's error about a
    /// reply.
    icmp_errors_to_service,
    /// ICMP errors quoting an echo of a flow (counted in
    /// `icmp_errors_to_client` or `icmp_errors_to_service` too).
    icmp_errors_echo,
    /// Fragments handed in (each also counts in `packets_in`).
    frag_in,
    /// Fragments kept for reassembly (a fragment's outcome; one dropped
    /// later counts in a `dropped_frag_*` too).
    frag_held,
    /// Datagrams made whole (each then translated or dropped like a
    /// packet).
    frag_reassembled,
    /// Fragments made by cutting a translated datagram again.
    frag_out,
    dropped_malformed,
    dropped_fragment,
    dropped_frag_over_cap,
    dropped_frag_overlap,
    dropped_frag_duplicate,
    dropped_frag_timeout,
    dropped_unsupported,
    dropped_wrong_destination,
    dropped_spoofed,
    dropped_not_exposed,
    dropped_no_flow,
    dropped_table_full,
    dropped_ports_exhausted,
}

impl Counters {
    fn drop_counter(&mut self, d: DropReason) -> &mut u64 {
        match d {
            DropReason::Malformed => &mut self.dropped_malformed,
            DropReason::Fragment => &mut self.dropped_fragment,
            DropReason::FragmentOverCap => &mut self.dropped_frag_over_cap,
            DropReason::FragmentOverlap => &mut self.dropped_frag_overlap,
            DropReason::FragmentDuplicate => &mut self.dropped_frag_duplicate,
            DropReason::FragmentTimeout => &mut self.dropped_frag_timeout,
            DropReason::Unsupported => &mut self.dropped_unsupported,
            DropReason::WrongDestination => &mut self.dropped_wrong_destination,
            DropReason::Spoofed => &mut self.dropped_spoofed,
            DropReason::NotExposed => &mut self.dropped_not_exposed,
            DropReason::NoFlow => &mut self.dropped_no_flow,
            DropReason::TableFull => &mut self.dropped_table_full,
            DropReason::PortsExhausted => &mut self.dropped_ports_exhausted,
        }
    }

    /// The value of the counter for `d`.
    pub fn dropped(&self, d: DropReason) -> u64 {
        self.dropped_named(d.name())
    }
}

fn parse_drop(e: ParseError) -> DropReason {
    match e {
        ParseError::Malformed(_) => DropReason::Malformed,
        ParseError::Fragment => DropReason::Fragment,
        ParseError::Unsupported(_) => DropReason::Unsupported,
    }
}

/// A source no client can have: unspecified, loopback, multicast, IPv4
/// broadcast.
fn is_martian(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => {
            a.is_unspecified() || a.is_loopback() || a.is_multicast() || a.is_broadcast()
        }
        IpAddr::V6(a) => a.is_unspecified() || a.is_loopback() || a.is_multicast(),
    }
}

/// Which way a handled packet went.
#[derive(Clone, Copy)]
enum Dir {
    Request,
    Reply,
}

/// See the module documentation.
#[derive(Debug)]
pub struct GatewayCore {
    cfg: GatewayConfig,
    /// Exposed Services: by protocol, exposed port and family, the service.
    exposures: BTreeMap<ExposedPort, SocketAddr>,
    table: Table,
    counters: Counters,
    /// Datagrams in reassembly.
    frags: FragmentTable,
    /// The fragments of the last datagram made whole and translated
    /// ([`Verdict::Fragments`]), until [`Self::take_out`].
    out: Vec<Vec<u8>>,
    /// Held fragments dropped (counted), until [`Self::take_dropped`].
    dropped: Vec<Held<DropReason>>,
}

impl GatewayCore {
    pub fn new(config: GatewayConfig) -> Self {
        let timeouts = Timeouts {
            tcp_established: config.tcp_established_ms,
            tcp_closing: config.tcp_closing_ms,
            udp: config.udp_ms,
        };
        GatewayCore {
            table: Table::new(timeouts, config.max_flows, config.napt_ports),
            frags: FragmentTable::new(config.fragments),
            out: Vec::new(),
            dropped: Vec::new(),
            cfg: config,
            exposures: BTreeMap::new(),
            counters: Counters::default(),
        }
    }

    pub fn config(&self) -> &GatewayConfig {
        &self.cfg
    }

    /// Adds a row to the Exposed Services table. Exposing exactly the same
    /// mapping again is a no-op; exposing the same protocol, port and
    /// family to another service is refused, as is anything
    /// [`GatewayConfig::check_exposure`] refuses.
    pub fn expose(&mut self, e: Exposure) -> Result<(), ExposeError> {
        self.cfg.check_exposure(&e)?;
        match self.exposures.get(&e.exposed_port()) {
            Some(s) if *s == e.service => Ok(()),
            Some(s) => Err(ExposeError::AlreadyExposed {
                existing: Exposure { service: *s, ..e },
            }),
            None => {
                self.exposures.insert(e.exposed_port(), e.service);
                Ok(())
            }
        }
    }

    /// Removes a row of the Exposed Services table and every flow through
    /// it (counted in `flows_removed`); returns the row.
    pub fn unexpose(&mut self, proto: Proto, port: u16, v6: bool) -> Result<Exposure, ExposeError> {
        self.unexpose_flows(proto, port, v6).map(|(e, _)| e)
    }

    /// [`Self::unexpose`], also returning the client (address and port)
    /// of every flow removed, sorted: whom the shell tells that their
    /// connection is gone.
    pub fn unexpose_flows(
        &mut self,
        proto: Proto,
        port: u16,
        v6: bool,
    ) -> Result<(Exposure, Vec<SocketAddr>), ExposeError> {
        let service = self
            .exposures
            .remove(&ExposedPort::new(proto, port, v6))
            .ok_or(ExposeError::NotExposed { proto, port, v6 })?;
        let mut clients = Vec::new();
        let n = self.table.remove_where(|e| {
            let gone = e.proto == proto && e.exposed_port == port && e.is_ipv6() == v6;
            if gone {
                clients.push(SocketAddr::new(e.client_ip, e.client_port));
            }
            gone
        });
        clients.sort();
        self.counters.flows_removed += n as u64;
        let e = Exposure {
            proto,
            port,
            service,
        };
        Ok((e, clients))
    }

    /// The Exposed Services table, sorted by protocol, port, then family
    /// (IPv4 first).
    pub fn exposures(&self) -> Vec<Exposure> {
        self.exposures
            .iter()
            .map(|(&ExposedPort { proto, port, .. }, &service)| Exposure {
                proto,
                port,
                service,
            })
            .collect()
    }

    /// Handles one packet read from the TUN. `buf` must hold exactly one
    /// IP packet (a buffer longer than the packet's IP length is
    /// [`DropReason::Malformed`]). On [`Verdict::Request`] and
    /// [`Verdict::Reply`], `buf` has been rewritten in place (addresses,
    /// ports and checksums) and is to be written back to the TUN, same
    /// length; on [`Verdict::Drop`] it is unchanged.
    ///
    /// On a known flow: one validation, one indexed load (the reply index)
    /// and one hash lookup (the request index; skipped for a reply), the
    /// rewrites; no allocation.
    ///
    /// A fragment (IPv4 MF or offset, an IPv6 fragment header) goes to
    /// reassembly: [`Verdict::Held`] until its datagram is whole, then the
    /// datagram is translated as one packet and cut again as it came
    /// ([`Verdict::Fragments`], see [`Self::take_out`]).
    pub fn packet_in_place(&mut self, now: Millis, buf: &mut [u8]) -> Verdict {
        self.counters.packets_in += 1;
        match self.handle(now, buf) {
            // Only a fragment fails to parse as one.
            Err(DropReason::Fragment) => self.fragment(now, buf),
            r => self.outcome(r),
        }
    }

    #[inline(always)]
    fn outcome(&mut self, r: Result<Dir, DropReason>) -> Verdict {
        match r {
            Ok(Dir::Request) => {
                self.counters.requests += 1;
                Verdict::Request
            }
            Ok(Dir::Reply) => {
                self.counters.replies += 1;
                Verdict::Reply
            }
            Err(d) => {
                *self.counters.drop_counter(d) += 1;
                Verdict::Drop(d)
            }
        }
    }

    /// A fragment: kept until its datagram is whole; the whole datagram is
    /// then handled as a packet, and if it is translated, cut again to the
    /// size of its largest fragment (at most the MTU's) into
    /// [`Self::take_out`]'s packets.
    #[cold]
    #[inline(never)]
    fn fragment(&mut self, now: Millis, buf: &[u8]) -> Verdict {
        self.counters.frag_in += 1;
        let whole = match self.frags.insert(now, None, buf) {
            Ok(None) => {
                self.counters.frag_held += 1;
                return Verdict::Held;
            }
            Ok(Some(whole)) => whole,
            Err(refused) => {
                let d = match refused.why {
                    Refusal::Malformed => DropReason::Fragment,
                    Refusal::OverCap => DropReason::FragmentOverCap,
                    Refusal::Overlap => DropReason::FragmentOverlap,
                    Refusal::Duplicate => DropReason::FragmentDuplicate,
                };
                self.drop_discarded(d, refused.discarded);
                return self.outcome(Err(d));
            }
        };
        self.counters.frag_held += 1;
        self.counters.frag_reassembled += 1;
        let mut p = whole.packet;
        let r = if fragments::is_fragment(&p) {
            // A fragment inside a fragment (IPv6 allows the header
            // twice): refused, so reassembly never nests.
            Err(DropReason::Fragment)
        } else {
            self.handle(now, &mut p)
        };
        match self.outcome(r) {
            Verdict::Request | Verdict::Reply => {
                self.cut(p, whole.shape);
                Verdict::Fragments
            }
            Verdict::Drop(d) => {
                // Each fragment it was made of died with it: the one
                // handed in is the verdict's, the others were held (the
                // buffer of a dropped packet is unchanged: `p` is as it
                // was made whole).
                // They are not counted again: the datagram's drop counts
                // once.
                let held = whole.pieces.quotes(&p).into_iter().map(|quote| Held {
                    reason: d,
                    from: None,
                    quote,
                });
                self.dropped.extend(held);
                Verdict::Drop(d)
            }
            v => v,
        }
    }

    /// Cuts the translated datagram `p` as it came (`shape`), never above
    /// the MTU, into [`Self::out`]; a datagram that cannot be cut goes
    /// whole.
    fn cut(&mut self, p: Vec<u8>, shape: Shape) {
        self.out.clear();
        let pieces = fragments::payload_for_mtu(&p, self.cfg.mtu)
            .and_then(|mtu| fragments::fragment(&p, shape.payload.min(mtu), shape.ident));
        match pieces {
            Some(pieces) => {
                self.counters.frag_out += pieces.len() as u64;
                self.out.extend(pieces);
            }
            None => self.out.push(p),
        }
    }

    /// The packets to write to the TUN after [`Verdict::Fragments`] (the
    /// fragments of the translated datagram, in order); empty otherwise.
    pub fn take_out(&mut self) -> Vec<Vec<u8>> {
        std::mem::take(&mut self.out)
    }

    /// The fragments the core held and dropped since the last call (a
    /// datagram discarded with an overlapping fragment, or made whole and
    /// dropped, at [`Verdict::Drop`]; or timed out, at [`Self::expire`]),
    /// each named by its quote (see [`crate::held`]). Each is counted
    /// already, in the drop counter of its reason, but the fragments of a
    /// datagram made whole and dropped, which count once, as the datagram
    /// (the verdict's drop). The packet handed in is never
    /// among them. Empty (and no allocation) when there were none.
    pub fn take_dropped(&mut self) -> Vec<Held<DropReason>> {
        std::mem::take(&mut self.dropped)
    }

    /// Counts the fragments of a datagram discarded for `reason` (by the
    /// fragment table, or with the datagram they made), keeping them for
    /// [`Self::take_dropped`].
    #[cold]
    fn drop_discarded(&mut self, reason: DropReason, gone: Discarded) {
        *self.counters.drop_counter(reason) += gone.len() as u64;
        self.dropped
            .extend(gone.quotes.into_iter().map(|quote| Held {
                reason,
                from: gone.from,
                quote,
            }));
    }

    /// Datagrams in reassembly, and the bytes their buffers hold.
    pub fn fragments_held(&self) -> (usize, usize) {
        (self.frags.len(), self.frags.bytes())
    }

    #[inline(always)]
    fn handle(&mut self, now: Millis, buf: &mut [u8]) -> Result<Dir, DropReason> {
        let len = buf.len();
        let mut v = IpPacket::new_checked(buf).map_err(parse_drop)?;
        if v.len() != len {
            return Err(DropReason::Malformed);
        }
        let v6 = v.is_ipv6();
        // `echo`: an ICMP echo request (true) or reply (false).
        let (proto, echo) = match v.transport() {
            Transport::Tcp => (Proto::Tcp, None),
            Transport::Udp => (Proto::Udp, None),
            Transport::IcmpEcho { request } => (Proto::Icmp, Some(request)),
            Transport::IcmpError(q) => return self.icmp_error(now, &mut v, q),
            _ => return Err(DropReason::Unsupported),
        };
        let internal = self.cfg.internal(v6).ok_or(DropReason::WrongDestination)?;
        if v.dst() != internal {
            return Err(DropReason::WrongDestination);
        }
        // An echo's identifier is the client's port in a request and the
        // internal port in a reply; the exposed and service ports are 0.
        let (sp, dp) = match echo {
            None => (v.src_port(), v.dst_port()),
            Some(true) => (v.src_port(), Some(0)),
            Some(false) => (Some(0), v.dst_port()),
        };
        let (Some(sp), Some(dp)) = (sp, dp) else {
            // TCP, UDP and echo always have ports (or an identifier).
            return Err(DropReason::Unsupported);
        };
        let src = v.src();
        let flags = v.tcp_flags();
        let space = space(proto, v6);

        // A reply: to an internal port, from that entry's service.
        if let Some(slot) = self.table.reply_slot(space, dp) {
            if self
                .table
                .get(slot)
                .is_some_and(|e| e.service_ip == src && e.service_port == sp)
            {
                let e = match self.table.touch(now, slot, flags, false) {
                    Ok(e) => e,
                    Err(expired) => {
                        self.counters.flows_expired += u64::from(expired.is_some());
                        return Err(DropReason::NoFlow);
                    }
                };
                let (client, client_port, exposed_port) =
                    (e.client_ip, e.client_port, e.exposed_port);
                // Families match by construction (the entry's family is
                // the packet's): the setters cannot fail.
                let _ = v.set_src(internal);
                let _ = v.set_dst(client);
                if echo.is_some() {
                    // The identifier (both "ports") back to the client's.
                    let _ = v.set_dst_port(client_port);
                } else {
                    let _ = v.set_src_port(exposed_port);
                    let _ = v.set_dst_port(client_port);
                }
                return Ok(Dir::Reply);
            }
        }
        if echo == Some(false) {
            // An echo reply is never a request.
            return Err(DropReason::NoFlow);
        }

        // A request on a known flow.
        let key = RequestKey::new(proto, src, sp, dp);
        if let Some(slot) = self.table.request_slot(&key) {
            match self.table.touch(now, slot, flags, true) {
                Ok(e) => {
                    rewrite_request(&mut v, internal, e);
                    return Ok(Dir::Request);
                }
                // Timed out: removed; the packet opens a new flow.
                Err(expired) => self.counters.flows_expired += u64::from(expired.is_some()),
            }
        }

        // A new flow (no entry is ever created from an internal source, so
        // the request lookup above cannot have matched one).
        let exposed = self
            .exposures
            .get(&ExposedPort::new(proto, dp, v6))
            .copied();
        if self.cfg.is_internal(src) {
            return Err(if exposed.is_some() {
                DropReason::Spoofed
            } else {
                DropReason::NoFlow
            });
        }
        if is_martian(src) {
            return Err(DropReason::Spoofed);
        }
        let service = exposed.ok_or(DropReason::NotExposed)?;
        if self.table.is_full() && self.table.may_sweep(now) {
            self.counters.flows_expired += self.table.expire(now) as u64;
        }
        let slot = self
            .table
            .insert(
                now,
                NewFlow {
                    proto,
                    client_ip: src,
                    client_port: sp,
                    service_ip: service.ip(),
                    service_port: service.port(),
                    exposed_port: dp,
                },
            )
            .map_err(|e| match e {
                InsertError::TableFull => DropReason::TableFull,
                InsertError::PortsExhausted => DropReason::PortsExhausted,
            })?;
        self.counters.flows_created += 1;
        // Just inserted: it cannot have timed out.
        let Ok(e) = self.table.touch(now, slot, flags, true) else {
            return Err(DropReason::NoFlow);
        };
        if e.internal_port != sp {
            self.counters.flows_napt += 1;
        }
        rewrite_request(&mut v, internal, e);
        Ok(Dir::Request)
    }

    /// An ICMP error addressed to the internal address, quoting a TCP or
    /// UDP packet or an echo of a flow (see the module documentation,
    /// "ICMP errors"). It refreshes nothing and never creates a flow.
    fn icmp_error(
        &mut self,
        now: Millis,
        v: &mut IpPacket<'_>,
        q: Quote,
    ) -> Result<Dir, DropReason> {
        let proto = match q.kind() {
            QuotedKind::Tcp => Proto::Tcp,
            QuotedKind::Udp => Proto::Udp,
            QuotedKind::IcmpEcho => Proto::Icmp,
            QuotedKind::Other => return Err(DropReason::Unsupported),
        };
        let v6 = v.is_ipv6();
        let internal = self.cfg.internal(v6).ok_or(DropReason::WrongDestination)?;
        let quoted = v
            .quoted_src()
            .zip(v.quoted_dst())
            .zip(v.quoted_src_port().zip(v.quoted_dst_port()));
        // TCP and UDP quotes always carry their ports, an echo its
        // identifier.
        let Some(((qsrc, qdst), (mut qsp, mut qdp))) = quoted else {
            return Err(DropReason::Unsupported);
        };
        if proto == Proto::Icmp {
            // The identifier is the echo's "port" on the side that is not
            // the service's or the exposure's (port 0): the source of a
            // request `internal > svc`, the destination of a reply
            // `internal > client`.
            if self.cfg.is_internal(qdst) {
                qdp = 0;
            } else {
                qsp = 0;
            }
        }
        if v.dst() != internal || qsrc != internal {
            return Err(DropReason::WrongDestination);
        }
        let src = v.src();
        let t = self.table.timeouts();
        let (e, dir) = if self.cfg.is_internal(qdst) {
            // About a request `internal:iport > svc:sport`, from inside.
            if !self.cfg.is_internal(src) {
                return Err(DropReason::Spoofed);
            }
            let e = self
                .table
                .reply_slot(space(proto, v6), qsp)
                .and_then(|slot| self.table.get(slot))
                .filter(|e| e.service_ip == qdst && e.service_port == qdp && !t.expired(e, now))
                .ok_or(DropReason::NoFlow)?;
            (e, Dir::Reply)
        } else {
            // About a reply `internal:eport > client:cport`, from outside.
            if self.cfg.is_internal(src) || is_martian(src) {
                return Err(DropReason::Spoofed);
            }
            let e = self
                .table
                .request_slot(&RequestKey::new(proto, qdst, qdp, qsp))
                .and_then(|slot| self.table.get(slot))
                .filter(|e| !t.expired(e, now))
                .ok_or(DropReason::NoFlow)?;
            (e, Dir::Request)
        };
        rewrite_icmp_error(v, internal, e, dir);
        match dir {
            Dir::Reply => self.counters.icmp_errors_to_client += 1,
            Dir::Request => self.counters.icmp_errors_to_service += 1,
        }
        self.counters.icmp_errors_echo += u64::from(proto == Proto::Icmp);
        Ok(dir)
    }

    /// When [`Self::expire`] next has something to do: the earliest time
    /// at which a Forward table entry may time out; `None` without
    /// entries. Never later than the first expiry (a shell that calls
    /// `expire` then misses none), exact right after `expire`; packets
    /// that refresh entries can leave it earlier than needed, and the
    /// `expire` it causes then finds nothing.
    /// The fragment table's first deadline counts too.
    pub fn next_deadline(&self) -> Option<Millis> {
        match (self.table.next_deadline(), self.frags.next_deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Removes the entries timed out at `now` (counted in
    /// `flows_expired`); returns how many. Discards the datagrams not
    /// whole in time (each fragment held counted in
    /// `dropped_frag_timeout`, and handed to [`Self::take_dropped`]).
    pub fn expire(&mut self, now: Millis) -> usize {
        let n = self.table.expire(now);
        self.counters.flows_expired += n as u64;
        for gone in self.frags.expire(now) {
            self.drop_discarded(DropReason::FragmentTimeout, gone);
        }
        n
    }

    /// The entries alive at `now` (entries timed out but not yet removed
    /// are left out), sorted by protocol, client, exposed port.
    pub fn flows(&self, now: Millis) -> Vec<FlowInfo> {
        let t = self.table.timeouts();
        let mut v: Vec<FlowInfo> = self
            .table
            .iter()
            .filter(|e| !t.expired(e, now))
            .map(|e| flow_info(e, now))
            .collect();
        v.sort_by_key(|f| {
            (
                f.proto,
                f.client,
                f.exposed_port,
                f.service,
                f.internal_port,
            )
        });
        v
    }

    /// Entries held, including timed-out ones not yet removed (by
    /// [`Self::expire`], or by a packet meeting them).
    pub fn flow_count(&self) -> usize {
        self.table.len()
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }
}

/// Client → service: `client:cport > internal:exposed` becomes
/// `internal:iport > service:sport`; an echo request `client > internal`
/// (identifier `cport`) becomes `internal > service` (identifier
/// `iport`).
#[inline(always)]
fn rewrite_request(v: &mut IpPacket<'_>, internal: IpAddr, e: &Entry) {
    // Families match by construction: the setters cannot fail.
    let _ = v.set_dst(e.service_ip);
    if e.proto.has_ports() {
        let _ = v.set_dst_port(e.service_port);
    }
    let _ = v.set_src(internal);
    if e.internal_port != e.client_port {
        let _ = v.set_src_port(e.internal_port);
    }
}

/// An ICMP error about flow `e`, sent on towards the client (`to` is
/// [`Dir::Reply`]: its quote becomes the request as the kernel's DNAT left
/// it, `client:cport > internal:eport`) or towards the service
/// ([`Dir::Request`]: the quote becomes the reply as the service sent it,
/// `svc:sport > internal:iport`). The outer packet goes from the internal
/// address to the quote's source; the checksums follow each change.
fn rewrite_icmp_error(v: &mut IpPacket<'_>, internal: IpAddr, e: &Entry, to: Dir) {
    let (peer, peer_port, own_port) = match to {
        Dir::Reply => (e.client_ip, e.client_port, e.exposed_port),
        Dir::Request => (e.service_ip, e.service_port, e.internal_port),
    };
    // Families match by construction: the setters cannot fail.
    let _ = v.set_src(internal);
    let _ = v.set_dst(peer);
    let _ = v.set_quoted_src(peer);
    let _ = v.set_quoted_dst(internal);
    if e.proto.has_ports() {
        let _ = v.set_quoted_src_port(peer_port);
        let _ = v.set_quoted_dst_port(own_port);
    } else {
        // An echo's one identifier: the client's in the request it sent,
        // the internal one in the reply the service sent.
        let id = match to {
            Dir::Reply => e.client_port,
            Dir::Request => e.internal_port,
        };
        let _ = v.set_quoted_src_port(id);
    }
}

fn flow_info(e: &Entry, now: Millis) -> FlowInfo {
    FlowInfo {
        proto: e.proto,
        client: SocketAddr::new(e.client_ip, e.client_port),
        service: SocketAddr::new(e.service_ip, e.service_port),
        exposed_port: e.exposed_port,
        internal_port: e.internal_port,
        state: e.state(),
        idle_ms: now.saturating_sub(e.last_seen),
    }
}

#[cfg(test)]
mod tests;
