//! [`NetManagerCore`]: the per-node net manager as a sans-IO state machine.
//! Its shell feeds it packets read from the node's TUN, datagrams received
//! on the tunnel port, resolution answers and the time, and carries out the
//! [`Action`]s it returns.
//!
//! See the [module documentation of `netmanager`](super) for the tuple
//! transformations of every path.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::cache::{CacheConfig, Lookup, Millis, ResolutionCache, ResolveError};
use super::conntrack::{ConnTrack, ConntrackConfig, Dir, FlowKey, FlowKind, InsertError, NextHop};
use super::packet::{icmp_unreachable, IpPacket, ParseError, QuotedKind, Transport};
use super::services::{in_net, is_service_ip, Coords, Resolution};

/// Oakestra's tunnel port.
pub const TUNNEL_PORT: u16 = 50103;

/// The node's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// This node's underlay address (where its tunnel port listens);
    /// instances whose `node` equals it are local.
    pub node_addr: IpAddr,
    /// This node's coordinates, for "closest".
    pub node_coords: Coords,
    /// The subnet this node's instances get their IPv4 namespace addresses
    /// from (Oakestra: a /26 of 10.18.0.0/16).
    pub subnet_v4: (Ipv4Addr, u8),
    /// The same for IPv6, if the node has instances with IPv6.
    pub subnet_v6: Option<(Ipv6Addr, u8)>,
    /// The UDP port of the other nodes' tunnel (50103).
    pub tunnel_port: u16,
    pub cache: CacheConfig,
    pub conntrack: ConntrackConfig,
}

impl Config {
    /// Defaults: tunnel port 50103, cache TTL 10 s, query timeout 5 s,
    /// 64 queued packets per service, TCP idle 300 s, UDP/ICMP idle 30 s,
    /// TCP linger 5 s, 65536 flows.
    pub fn new(node_addr: IpAddr, subnet_v4: (Ipv4Addr, u8)) -> Config {
        Config {
            node_addr,
            node_coords: Coords::default(),
            subnet_v4,
            subnet_v6: None,
            tunnel_port: TUNNEL_PORT,
            cache: CacheConfig::default(),
            conntrack: ConntrackConfig::default(),
        }
    }
}

/// An instance running on this node: its namespace addresses and its own
/// instance IPs (the service IPs that name exactly it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalInstance {
    pub ns_ip: Ipv4Addr,
    pub ns_ip6: Option<Ipv6Addr>,
    pub instance_ip: Option<Ipv4Addr>,
    pub instance_ip6: Option<Ipv6Addr>,
}

impl LocalInstance {
    /// The instance IP of the family of `like`.
    fn instance_ip_like(&self, like: IpAddr) -> Option<IpAddr> {
        match like {
            IpAddr::V4(_) => self.instance_ip.map(IpAddr::V4),
            IpAddr::V6(_) => self.instance_ip6.map(IpAddr::V6),
        }
    }
}

/// Why a packet was dropped. Each reason has a counter of the same name
/// (prefixed `drop_`) in [`Counters`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// Empty, or the first nibble is neither 4 nor 6.
    NotIp,
    /// Failed [`IpPacket::new_checked`].
    Malformed,
    /// An IPv4 or IPv6 fragment.
    Fragment,
    /// Well-formed but not translatable: a protocol without ports, an ICMP
    /// message that is neither echo nor error, an IPv6 routing header.
    Unsupported,
    /// Not for a service IP, and not part of a known flow (also: an ICMP
    /// error about no known flow, a tunnel datagram that matches nothing).
    NoFlow,
    /// A tunnel datagram for an address that is not in this node's subnet.
    NotLocal,
    /// The service resolved to no instance usable for this packet.
    UnknownService,
    /// The query for the service failed or timed out.
    QueryFailed,
    /// The queue of the pending service was full.
    QueueFull,
    /// The resolution cache was full: no query could be registered.
    CacheFull,
    /// The conversion table was full.
    TableFull,
    /// The translated tuple is already used by another flow.
    TupleCollision,
}

impl DropReason {
    pub fn name(self) -> &'static str {
        match self {
            DropReason::NotIp => "not_ip",
            DropReason::Malformed => "malformed",
            DropReason::Fragment => "fragment",
            DropReason::Unsupported => "unsupported",
            DropReason::NoFlow => "no_flow",
            DropReason::NotLocal => "not_local",
            DropReason::UnknownService => "unknown_service",
            DropReason::QueryFailed => "query_failed",
            DropReason::QueueFull => "queue_full",
            DropReason::CacheFull => "cache_full",
            DropReason::TableFull => "table_full",
            DropReason::TupleCollision => "tuple_collision",
        }
    }
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

macro_rules! counters {
    ($($(#[$m:meta])* $name:ident),* $(,)?) => {
        /// What the core did, as plain counters. `Display` renders one
        /// `name value` line per counter, in declaration order.
        #[derive(Debug, Clone, Default, PartialEq, Eq)]
        pub struct Counters {
            $($(#[$m])* pub $name: u64,)*
        }
        impl Counters {
            /// (name, value) of every counter, in declaration order.
            pub fn iter(&self) -> impl Iterator<Item = (&'static str, u64)> {
                [$((stringify!($name), self.$name)),*].into_iter()
            }
        }
    };
}

counters! {
    /// Packets handed to `on_tun_packet` (queued packets re-run after a
    /// resolution count in `released`, not here).
    tun_in,
    /// `WriteTun` actions (translated packets, replies, ICMP errors).
    tun_out,
    /// Datagrams handed to `on_tunnel_datagram`.
    tunnel_in,
    /// `SendTunnel` actions.
    tunnel_out,
    /// `Query` actions.
    queries,
    resolutions_ok,
    resolutions_failed,
    /// Packets queued behind a query.
    queued,
    /// Queued packets re-run after a successful query.
    released,
    /// ICMP destination-unreachable errors built for senders.
    icmp_unreachable_sent,
    flows_created,
    /// Flows removed by `expire` (flows found expired by a lookup are
    /// removed too, without being counted here).
    flows_expired,
    drop_not_ip,
    drop_malformed,
    drop_fragment,
    drop_unsupported,
    drop_no_flow,
    drop_not_local,
    drop_unknown_service,
    drop_query_failed,
    drop_queue_full,
    drop_cache_full,
    drop_table_full,
    drop_tuple_collision,
}

impl Counters {
    fn drop_counter(&mut self, r: DropReason) -> &mut u64 {
        match r {
            DropReason::NotIp => &mut self.drop_not_ip,
            DropReason::Malformed => &mut self.drop_malformed,
            DropReason::Fragment => &mut self.drop_fragment,
            DropReason::Unsupported => &mut self.drop_unsupported,
            DropReason::NoFlow => &mut self.drop_no_flow,
            DropReason::NotLocal => &mut self.drop_not_local,
            DropReason::UnknownService => &mut self.drop_unknown_service,
            DropReason::QueryFailed => &mut self.drop_query_failed,
            DropReason::QueueFull => &mut self.drop_queue_full,
            DropReason::CacheFull => &mut self.drop_cache_full,
            DropReason::TableFull => &mut self.drop_table_full,
            DropReason::TupleCollision => &mut self.drop_tuple_collision,
        }
    }

    /// The value of the counter for `r`.
    pub fn dropped(&self, r: DropReason) -> u64 {
        self.iter()
            .find(|(n, _)| n.strip_prefix("drop_") == Some(r.name()))
            .map_or(0, |(_, v)| v)
    }

    /// All drops, whatever the reason.
    pub fn drops_total(&self) -> u64 {
        self.iter()
            .filter(|(n, _)| n.starts_with("drop_"))
            .map(|(_, v)| v)
            .sum()
    }
}

impl fmt::Display for Counters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (name, value) in self.iter() {
            writeln!(f, "{name} {value}")?;
        }
        Ok(())
    }
}

/// What the shell must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Write this IP packet to the node's TUN device.
    WriteTun(Vec<u8>),
    /// Send this IP packet as the whole payload of a UDP datagram to
    /// `node`:`port` (the tunnel).
    SendTunnel {
        node: IpAddr,
        port: u16,
        datagram: Vec<u8>,
    },
    /// Ask the service manager for the instances of this service IP; answer
    /// with [`NetManagerCore::on_resolution`].
    Query(IpAddr),
    /// A packet was dropped (already counted); for logging.
    Drop(DropReason),
}

/// The rewrite a flow applies to a packet going one way: new source and
/// destination addresses (ports are never rewritten by the net manager).
#[derive(Debug, Clone, Copy)]
struct Rewrite {
    src: IpAddr,
    dst: IpAddr,
}

/// Where a packet goes after its rewrite.
#[derive(Debug, Clone, Copy)]
enum Out {
    Tun,
    Tunnel(IpAddr),
}

/// The flow tuple of a packet, as the conversion table keys it, and
/// whether it is an ICMP error (whose tuple is that of the flow it reports
/// on, in the direction the error travels: the quoted tuple reversed).
fn packet_key(v: &IpPacket<'_>) -> Result<(FlowKey, bool), DropReason> {
    match v.transport() {
        Transport::Tcp | Transport::Udp | Transport::IcmpEcho { .. } => {
            let (sp, dp) = v
                .src_port()
                .zip(v.dst_port())
                .ok_or(DropReason::Unsupported)?;
            Ok((FlowKey::new(v.protocol(), v.src(), sp, v.dst(), dp), false))
        }
        Transport::IcmpError(q) if q.kind() != QuotedKind::Other => {
            let key = v
                .quoted_src()
                .zip(v.quoted_dst())
                .zip(v.quoted_src_port().zip(v.quoted_dst_port()))
                .map(|((s, d), (sp, dp))| FlowKey::new(q.protocol(), s, sp, d, dp))
                .ok_or(DropReason::Unsupported)?;
            Ok((key.reversed(), true))
        }
        _ => Err(DropReason::Unsupported),
    }
}

/// Applies `rw` to a packet whose (possibly reversed-quoted) tuple is
/// `key`. A plain packet gets `rw.src` → `rw.dst`. An ICMP error gets its
/// quoted packet rewritten the opposite way (quoted source = `rw.dst`,
/// quoted destination = `rw.src`) and its outer destination set to
/// `rw.dst`; its outer source becomes `rw.src` only if the error came from
/// the flow's endpoint itself (outer source = `key.src`); an error from a
/// router on the way keeps the router's address.
fn rewrite(v: &mut IpPacket<'_>, key: &FlowKey, is_error: bool, rw: Rewrite) {
    // Families match by construction: flows are single-family and the
    // packet's tuple matched one; errors are impossible here.
    if is_error {
        if v.src() == key.src {
            let _ = v.set_src(rw.src);
        }
        let _ = v.set_dst(rw.dst);
        let _ = v.set_quoted_src(rw.dst);
        let _ = v.set_quoted_dst(rw.src);
    } else {
        let _ = v.set_src(rw.src);
        let _ = v.set_dst(rw.dst);
    }
}

fn parse_error_reason(e: ParseError) -> DropReason {
    match e {
        ParseError::Malformed(_) => DropReason::Malformed,
        ParseError::Fragment => DropReason::Fragment,
        ParseError::Unsupported(_) => DropReason::Unsupported,
    }
}

/// See the module documentation.
#[derive(Debug)]
pub struct NetManagerCore {
    cfg: Config,
    /// Local instances by each of their namespace addresses.
    locals: HashMap<IpAddr, LocalInstance>,
    cache: ResolutionCache,
    conntrack: ConnTrack,
    /// Round-robin counters per service IP (kept across re-resolutions).
    rr: HashMap<IpAddr, u64>,
    counters: Counters,
}

impl NetManagerCore {
    pub fn new(cfg: Config) -> NetManagerCore {
        NetManagerCore {
            cache: ResolutionCache::new(cfg.cache),
            conntrack: ConnTrack::new(cfg.conntrack),
            cfg,
            locals: HashMap::new(),
            rr: HashMap::new(),
            counters: Counters::default(),
        }
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }
    pub fn counters(&self) -> &Counters {
        &self.counters
    }
    pub fn conntrack(&self) -> &ConnTrack {
        &self.conntrack
    }
    pub fn cache(&self) -> &ResolutionCache {
        &self.cache
    }

    /// Registers an instance running on this node.
    pub fn add_local_instance(&mut self, li: LocalInstance) {
        self.locals.insert(li.ns_ip.into(), li);
        if let Some(v6) = li.ns_ip6 {
            self.locals.insert(v6.into(), li);
        }
    }

    /// Forgets a local instance (by its IPv4 namespace address).
    pub fn remove_local_instance(&mut self, ns_ip: Ipv4Addr) -> Option<LocalInstance> {
        let li = self.locals.remove(&IpAddr::V4(ns_ip))?;
        if let Some(v6) = li.ns_ip6 {
            self.locals.remove(&IpAddr::V6(v6));
        }
        Some(li)
    }

    /// An instance of `service_ip` was rescheduled: forget its resolution.
    pub fn invalidate(&mut self, service_ip: IpAddr) -> bool {
        self.cache.invalidate(service_ip)
    }

    /// An instance is gone: forget the flows translated towards it (their
    /// next packets resolve and choose again). Returns how many.
    pub fn remove_instance_flows(&mut self, instance_ns: IpAddr) -> usize {
        self.conntrack.remove_instance(instance_ns)
    }

    fn is_local_ns(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(_) => in_net(ip, self.cfg.subnet_v4.0.into(), self.cfg.subnet_v4.1),
            IpAddr::V6(_) => self
                .cfg
                .subnet_v6
                .is_some_and(|(n, l)| in_net(ip, n.into(), l)),
        }
    }

    /// The common first step of both entry points: check the IP version
    /// nibble, validate the packet, key it, and look its flow up (tracking
    /// TCP state, except for ICMP errors, which only report on a flow).
    #[allow(clippy::type_complexity)]
    fn classify<'a>(
        &mut self,
        now: Millis,
        buf: &'a mut [u8],
    ) -> Result<
        (
            IpPacket<'a>,
            FlowKey,
            bool,
            Option<(Dir, super::conntrack::Flow)>,
        ),
        DropReason,
    > {
        if !matches!(buf.first().map(|b| b >> 4), Some(4 | 6)) {
            return Err(DropReason::NotIp);
        }
        let v = IpPacket::new_checked(buf).map_err(parse_error_reason)?;
        let (key, is_error) = packet_key(&v)?;
        let found = if is_error {
            self.conntrack.get(now, &key)
        } else {
            self.conntrack.track(now, &key, v.tcp_flags())
        };
        Ok((v, key, is_error, found))
    }

    fn drop(&mut self, out: &mut Vec<Action>, r: DropReason) {
        *self.counters.drop_counter(r) += 1;
        out.push(Action::Drop(r));
    }

    fn emit(&mut self, out: &mut Vec<Action>, to: Out, bytes: &[u8]) {
        match to {
            Out::Tun => {
                self.counters.tun_out += 1;
                out.push(Action::WriteTun(bytes.to_vec()));
            }
            Out::Tunnel(node) => {
                self.counters.tunnel_out += 1;
                out.push(Action::SendTunnel {
                    node,
                    port: self.cfg.tunnel_port,
                    datagram: bytes.to_vec(),
                });
            }
        }
    }

    fn next_hop_out(h: NextHop) -> Out {
        match h {
            NextHop::Local => Out::Tun,
            NextHop::Node(n) => Out::Tunnel(n),
        }
    }

    /// A packet read from the TUN: sent by a local instance (or the node)
    /// to a service IP, or a local instance's reply within a known flow.
    pub fn on_tun_packet(&mut self, now: Millis, packet: &mut [u8]) -> Vec<Action> {
        self.counters.tun_in += 1;
        let mut out = Vec::with_capacity(1);
        self.tun_packet(now, packet, &mut out);
        out
    }

    fn tun_packet(&mut self, now: Millis, packet: &mut [u8], out: &mut Vec<Action>) {
        let (mut v, key, is_error, found) = match self.classify(now, packet) {
            Ok(c) => c,
            Err(r) => return self.drop(out, r),
        };
        if let Some((dir, flow)) = found {
            match (dir, flow.kind) {
                (
                    Dir::Orig,
                    FlowKind::Translated {
                        client_src,
                        instance_ns,
                        next_hop,
                        ..
                    },
                ) => {
                    let rw = Rewrite {
                        src: client_src,
                        dst: instance_ns,
                    };
                    rewrite(&mut v, &key, is_error, rw);
                    return self.emit(out, Self::next_hop_out(next_hop), v.as_bytes());
                }
                (
                    Dir::Reply,
                    FlowKind::Translated {
                        client_ns, service, ..
                    },
                ) => {
                    let rw = Rewrite {
                        src: service,
                        dst: client_ns,
                    };
                    rewrite(&mut v, &key, is_error, rw);
                    return self.emit(out, Out::Tun, v.as_bytes());
                }
                (Dir::Reply, FlowKind::Passthrough { peer }) => {
                    return self.emit(out, Out::Tunnel(peer), v.as_bytes());
                }
                // A remote client's tuple coming out of the local TUN: not
                // a path the net manager knows.
                (Dir::Orig, FlowKind::Passthrough { .. }) => {
                    return self.drop(out, DropReason::NoFlow);
                }
            }
        }
        if is_error || !is_service_ip(key.dst) {
            return self.drop(out, DropReason::NoFlow);
        }
        self.new_flow(now, v, key, out);
    }

    /// First packet of a flow to a service IP.
    fn new_flow(&mut self, now: Millis, mut v: IpPacket<'_>, key: FlowKey, out: &mut Vec<Action>) {
        let service = key.dst;
        let chosen = match self.cache.lookup(now, service) {
            Lookup::Hit(res) => {
                let rr = self.rr.entry(service).or_insert(0);
                res.choose(self.cfg.node_coords, rr)
                    .and_then(|i| i.ns_addr_like(service).map(|ns| (ns, i.node)))
            }
            Lookup::Miss => {
                self.counters.queries += 1;
                out.push(Action::Query(service));
                return self.enqueue(service, v.as_bytes().to_vec(), out);
            }
            Lookup::Pending => return self.enqueue(service, v.as_bytes().to_vec(), out),
            Lookup::Full => return self.drop(out, DropReason::CacheFull),
        };
        let Some((instance_ns, node)) = chosen else {
            self.unreachable(v.as_bytes(), out);
            return self.drop(out, DropReason::UnknownService);
        };
        let client_src = self
            .locals
            .get(&key.src)
            .and_then(|li| li.instance_ip_like(key.src))
            .unwrap_or(key.src);
        let next_hop = if node == self.cfg.node_addr {
            NextHop::Local
        } else {
            NextHop::Node(node)
        };
        let reply = FlowKey::new(key.proto, instance_ns, key.dport, client_src, key.sport);
        let kind = FlowKind::Translated {
            client_ns: key.src,
            client_src,
            service,
            instance_ns,
            next_hop,
        };
        match self.conntrack.insert(now, key, reply, kind, v.tcp_flags()) {
            Ok(_) => self.counters.flows_created += 1,
            Err(InsertError::TableFull) => return self.drop(out, DropReason::TableFull),
            Err(InsertError::Collision) => return self.drop(out, DropReason::TupleCollision),
        }
        let rw = Rewrite {
            src: client_src,
            dst: instance_ns,
        };
        rewrite(&mut v, &key, false, rw);
        self.emit(out, Self::next_hop_out(next_hop), v.as_bytes());
    }

    fn enqueue(&mut self, service: IpAddr, packet: Vec<u8>, out: &mut Vec<Action>) {
        match self.cache.enqueue(service, packet) {
            Ok(()) => self.counters.queued += 1,
            Err(_) => self.drop(out, DropReason::QueueFull),
        }
    }

    /// Answers `original` (sent by a local sender) with an ICMP
    /// destination-unreachable written to the TUN.
    fn unreachable(&mut self, original: &[u8], out: &mut Vec<Action>) {
        if let Some(icmp) = icmp_unreachable(original) {
            self.counters.icmp_unreachable_sent += 1;
            self.emit(out, Out::Tun, &icmp);
        }
    }

    /// A datagram received on the tunnel port from the node at `from`
    /// (its underlay source address); `payload` is the datagram's payload,
    /// an IP packet. Replies to this node's translated flows are translated
    /// back; packets for local instances are written as they are, and the
    /// flow is remembered so that the instance's replies go back raw to
    /// `from`.
    pub fn on_tunnel_datagram(
        &mut self,
        now: Millis,
        from: IpAddr,
        payload: &mut [u8],
    ) -> Vec<Action> {
        self.counters.tunnel_in += 1;
        let mut out = Vec::with_capacity(1);
        self.tunnel_datagram(now, from, payload, &mut out);
        out
    }

    fn tunnel_datagram(
        &mut self,
        now: Millis,
        from: IpAddr,
        payload: &mut [u8],
        out: &mut Vec<Action>,
    ) {
        // The receiver tells IPv4 from IPv6 by the first nibble.
        let (mut v, key, is_error, found) = match self.classify(now, payload) {
            Ok(c) => c,
            Err(r) => return self.drop(out, r),
        };
        match found.map(|(d, f)| (d, f.kind)) {
            Some((
                Dir::Reply,
                FlowKind::Translated {
                    client_ns, service, ..
                },
            )) => {
                let rw = Rewrite {
                    src: service,
                    dst: client_ns,
                };
                rewrite(&mut v, &key, is_error, rw);
                return self.emit(out, Out::Tun, v.as_bytes());
            }
            Some((Dir::Orig, FlowKind::Passthrough { .. })) => {
                return self.emit(out, Out::Tun, v.as_bytes());
            }
            // Any other match is not a tunnel path: treat as unknown.
            Some(_) => return self.drop(out, DropReason::NoFlow),
            None => {}
        }
        if is_error {
            return self.drop(out, DropReason::NoFlow);
        }
        if !self.is_local_ns(key.dst) {
            return self.drop(out, DropReason::NotLocal);
        }
        match self.conntrack.insert(
            now,
            key,
            key.reversed(),
            FlowKind::Passthrough { peer: from },
            v.tcp_flags(),
        ) {
            Ok(_) => self.counters.flows_created += 1,
            Err(InsertError::TableFull) => return self.drop(out, DropReason::TableFull),
            Err(InsertError::Collision) => return self.drop(out, DropReason::TupleCollision),
        }
        self.emit(out, Out::Tun, v.as_bytes());
    }

    /// The answer to a [`Action::Query`] (or an update pushed by the
    /// service manager). On success the packets that waited are forwarded
    /// as if they had just arrived; on failure each is dropped and its
    /// sender gets an ICMP destination-unreachable.
    pub fn on_resolution(
        &mut self,
        now: Millis,
        service_ip: IpAddr,
        result: Result<Resolution, ResolveError>,
    ) -> Vec<Action> {
        let ok = result.is_ok();
        if ok {
            self.counters.resolutions_ok += 1;
        } else {
            self.counters.resolutions_failed += 1;
        }
        let released = self.cache.on_resolution(now, service_ip, result);
        let mut out = Vec::new();
        for mut p in released.packets {
            if ok {
                self.counters.released += 1;
                self.tun_packet(now, &mut p, &mut out);
            } else {
                self.unreachable(&p, &mut out);
                self.drop(&mut out, DropReason::QueryFailed);
            }
        }
        out
    }

    /// Expires flows and resolutions; fails queries unanswered for too
    /// long (their packets are answered like a failed query's).
    pub fn expire(&mut self, now: Millis) -> Vec<Action> {
        let n = self.conntrack.expire(now);
        self.counters.flows_expired += n as u64;
        let mut out = Vec::new();
        for (_, released) in self.cache.expire(now) {
            self.counters.resolutions_failed += 1;
            for p in released.packets {
                self.unreachable(&p, &mut out);
                self.drop(&mut out, DropReason::QueryFailed);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests;
