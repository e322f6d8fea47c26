//! [`NetManagerCore`]: the per-node net manager as a sans-IO state machine.
//! Its shell feeds it packets read from the node's TUN, datagrams received
//! on the tunnel port, resolution answers and the time, and carries out the
//! [`Action`]s it returns.
//!
//! See the [module documentation of `netmanager`](super) for the tuple
//! transformations of every path.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::cache::{CacheConfig, Lookup, ResolutionCache, ResolveError};
use super::conntrack::{
    ConnTrack, ConntrackConfig, Dir, FlowKey, FlowKind, InsertError, NextHop, PackedKey,
};
use super::services::{
    in_service_range, is_service_ip, Coords, Resolution, NAMESPACE_NET_V4, NAMESPACE_NET_V6,
};
use crate::fragments::{self, Discarded, FragmentConfig, FragmentTable, Refusal, Shape};
use crate::held::{self, Held};
use crate::packet::{icmp_unreachable, IpPacket, Malformed, ParseError, QuotedKind, Transport};
use crate::prefix::in_net;
use crate::time::{earliest, Millis};

/// Oakestra's tunnel port: the UDP port every node's net manager listens
/// on for the other nodes' packets ([`Config::tunnel_port`]'s default).
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
    /// The underlay addresses of the nodes whose tunnel datagrams are
    /// accepted from the start (the nodes of resolved instances are added
    /// as they come): a node must accept a node that resolved one of its
    /// instances without having resolved anything itself.
    pub peers: Vec<IpAddr>,
    /// The instance namespace ranges of the whole platform: an inner
    /// packet out of the tunnel must come from one of them or from the
    /// service range (default: Oakestra's 10.18.0.0/16 and fd18::/16).
    pub namespace_nets: Vec<(IpAddr, u8)>,
    pub cache: CacheConfig,
    pub conntrack: ConntrackConfig,
    /// The bounds of the fragment table (see [`crate::fragments`]).
    pub fragments: FragmentConfig,
    /// The overlay MTU: the largest packet the core sends whole when it
    /// makes fragments (a reassembled datagram is cut to the size of its
    /// largest fragment, never above it). The shell sets the TUN's.
    pub mtu: usize,
}

impl Config {
    /// Defaults: tunnel port 50103, no peers, Oakestra's namespace
    /// ranges, cache TTL 10 s, query timeout 5 s,
    /// 64 queued packets per service, TCP idle 300 s, UDP/ICMP idle 30 s,
    /// TCP linger 5 s, 65536 flows; fragments as
    /// [`FragmentConfig::default`], MTU 1450 (Oakestra's overlay MTU).
    pub fn new(node_addr: IpAddr, subnet_v4: (Ipv4Addr, u8)) -> Config {
        Config {
            node_addr,
            node_coords: Coords::default(),
            subnet_v4,
            subnet_v6: None,
            tunnel_port: TUNNEL_PORT,
            peers: Vec::new(),
            namespace_nets: vec![
                (NAMESPACE_NET_V4.0.into(), NAMESPACE_NET_V4.1),
                (NAMESPACE_NET_V6.0.into(), NAMESPACE_NET_V6.1),
            ],
            cache: CacheConfig::default(),
            conntrack: ConntrackConfig::default(),
            fragments: FragmentConfig::default(),
            mtu: 1450,
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

/// The text of a [`LocalInstance`]: `ns=IPV4[,ip=IPV4][,ns6=IPV6][,ip6=IPV6]`
/// (the net manager's `--instance` and its control socket's `instance
/// add`), what was wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{spec:?}: {what}")]
pub struct BadInstanceSpec {
    pub spec: String,
    pub what: String,
}

impl fmt::Display for LocalInstance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ns={}", self.ns_ip)?;
        if let Some(a) = self.instance_ip {
            write!(f, ",ip={a}")?;
        }
        if let Some(a) = self.ns_ip6 {
            write!(f, ",ns6={a}")?;
        }
        if let Some(a) = self.instance_ip6 {
            write!(f, ",ip6={a}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for LocalInstance {
    type Err = BadInstanceSpec;

    fn from_str(s: &str) -> Result<LocalInstance, BadInstanceSpec> {
        fn set<T: std::str::FromStr>(slot: &mut Option<T>, k: &str, v: &str) -> Result<(), String> {
            if slot.is_some() {
                return Err(format!("{k} given twice"));
            }
            *slot = Some(v.parse().map_err(|_| format!("bad {k} {v:?}"))?);
            Ok(())
        }
        let bad = |what: String| BadInstanceSpec {
            spec: s.to_string(),
            what,
        };
        let (mut ns, mut ip, mut ns6, mut ip6) = (None, None, None, None);
        for field in s.split(',') {
            match field.split_once('=') {
                Some(("ns", v)) => set(&mut ns, "ns", v),
                Some(("ip", v)) => set(&mut ip, "ip", v),
                Some(("ns6", v)) => set(&mut ns6, "ns6", v),
                Some(("ip6", v)) => set(&mut ip6, "ip6", v),
                _ => Err(format!("unknown field {field:?} (ns, ip, ns6, ip6)")),
            }
            .map_err(bad)?;
        }
        Ok(LocalInstance {
            ns_ip: ns.ok_or_else(|| bad("ns=IPV4 is required".into()))?,
            ns_ip6: ns6,
            instance_ip: ip,
            instance_ip6: ip6,
        })
    }
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
    /// A fragment that is not valid: a non-last fragment whose length is
    /// not a multiple of 8, an empty one, one ending past 65535 bytes.
    Fragment,
    /// A fragment beyond the fragment table's bounds (datagrams or
    /// bytes in reassembly).
    FragmentOverCap,
    /// A fragment overlapping one held for the same datagram, or
    /// contradicting its end; the fragments held are dropped with it.
    FragmentOverlap,
    /// A fragment with the same offset and length as one held.
    FragmentDuplicate,
    /// A fragment of a datagram not whole in time.
    FragmentTimeout,
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
    /// A tunnel datagram from an underlay address that is not a known
    /// peer ([`Config::peers`], the nodes of resolved instances).
    UnknownPeer,
    /// A tunnel datagram whose inner addresses fit no service flow (see
    /// the module documentation, "Trust").
    NotServiceFlow,
}

impl DropReason {
    /// The drops of the tunnel's trust boundary: zero unless something
    /// that is no node, or a node's packet that fits no service flow,
    /// reached the tunnel port.
    pub const TRUST_BOUNDARY: [DropReason; 2] =
        [DropReason::UnknownPeer, DropReason::NotServiceFlow];

    pub fn name(self) -> &'static str {
        match self {
            DropReason::NotIp => "not_ip",
            DropReason::Malformed => "malformed",
            DropReason::Fragment => "fragment",
            DropReason::FragmentOverCap => "frag_over_cap",
            DropReason::FragmentOverlap => "frag_overlap",
            DropReason::FragmentDuplicate => "frag_duplicate",
            DropReason::FragmentTimeout => "frag_timeout",
            DropReason::Unsupported => "unsupported",
            DropReason::NoFlow => "no_flow",
            DropReason::NotLocal => "not_local",
            DropReason::UnknownService => "unknown_service",
            DropReason::QueryFailed => "query_failed",
            DropReason::QueueFull => "queue_full",
            DropReason::CacheFull => "cache_full",
            DropReason::TableFull => "table_full",
            DropReason::TupleCollision => "tuple_collision",
            DropReason::UnknownPeer => "unknown_peer",
            DropReason::NotServiceFlow => "not_service_flow",
        }
    }
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

crate::counters::counters! {
    drops: "drop_";
    /// Packets handed to `on_tun_packet` or `tun_packet_in_place` (queued
    /// packets re-run after a resolution count in `released`, not here).
    tun_in,
    /// Packets for the TUN: `WriteTun` actions and `Forward::Tun`s
    /// (translated packets, replies, ICMP errors).
    tun_out,
    /// Datagrams handed to `on_tunnel_datagram` or
    /// `tunnel_datagram_in_place`.
    tunnel_in,
    /// Packets for the tunnel: `SendTunnel` actions and
    /// `Forward::Tunnel`s.
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
    /// Fragments handed in (either entry point; each also counts in
    /// `tun_in` or `tunnel_in`).
    frag_in,
    /// Fragments kept for reassembly (a fragment's outcome, as `queued`
    /// is a packet's; one dropped later counts in a `drop_frag_*` too).
    frag_held,
    /// Datagrams made whole (each then translated, queued or dropped like
    /// a packet).
    frag_reassembled,
    /// Fragments made by cutting a translated datagram again (each also
    /// counts in `tun_out` or `tunnel_out`).
    frag_out,
    drop_not_ip,
    drop_malformed,
    drop_fragment,
    drop_frag_over_cap,
    drop_frag_overlap,
    drop_frag_duplicate,
    drop_frag_timeout,
    drop_unsupported,
    drop_no_flow,
    drop_not_local,
    drop_unknown_service,
    drop_query_failed,
    drop_queue_full,
    drop_cache_full,
    drop_table_full,
    drop_tuple_collision,
    drop_unknown_peer,
    drop_not_service_flow,
}

impl Counters {
    fn drop_counter(&mut self, r: DropReason) -> &mut u64 {
        match r {
            DropReason::NotIp => &mut self.drop_not_ip,
            DropReason::Malformed => &mut self.drop_malformed,
            DropReason::Fragment => &mut self.drop_fragment,
            DropReason::FragmentOverCap => &mut self.drop_frag_over_cap,
            DropReason::FragmentOverlap => &mut self.drop_frag_overlap,
            DropReason::FragmentDuplicate => &mut self.drop_frag_duplicate,
            DropReason::FragmentTimeout => &mut self.drop_frag_timeout,
            DropReason::Unsupported => &mut self.drop_unsupported,
            DropReason::NoFlow => &mut self.drop_no_flow,
            DropReason::NotLocal => &mut self.drop_not_local,
            DropReason::UnknownService => &mut self.drop_unknown_service,
            DropReason::QueryFailed => &mut self.drop_query_failed,
            DropReason::QueueFull => &mut self.drop_queue_full,
            DropReason::CacheFull => &mut self.drop_cache_full,
            DropReason::TableFull => &mut self.drop_table_full,
            DropReason::TupleCollision => &mut self.drop_tuple_collision,
            DropReason::UnknownPeer => &mut self.drop_unknown_peer,
            DropReason::NotServiceFlow => &mut self.drop_not_service_flow,
        }
    }

    /// The value of the counter for `r`.
    pub fn dropped(&self, r: DropReason) -> u64 {
        self.dropped_named(r.name())
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
    /// The packet handed in was dropped (already counted); for logging.
    /// A packet handed back by [`NetManagerCore::on_resolution`] or
    /// [`NetManagerCore::expire`] is never dropped this way: it is a
    /// held packet's ([`Action::DropHeld`]).
    Drop(DropReason),
    /// A packet the core held (queued behind a query, a fragment waiting
    /// for its datagram), not the one handed in, was dropped (already
    /// counted; the fragments of a datagram made whole and dropped count
    /// once, as the datagram); for logging, with the packet's quote (see
    /// [`crate::held`]).
    ///
    /// Boxed: drops are rare, and the action stays as small as the
    /// others.
    DropHeld(Box<Held<DropReason>>),
}

/// Where the packet handed to an in-place entry point
/// ([`NetManagerCore::tun_packet_in_place`],
/// [`NetManagerCore::tunnel_datagram_in_place`]) goes. It was rewritten in
/// the caller's buffer; its first `len` bytes are the packet to send (the
/// IP total length: bytes of the buffer past it are not part of the
/// packet, and are dropped exactly as the copying entry points drop them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forward {
    /// Write `buf[..len]` to the node's TUN device: what
    /// [`Action::WriteTun`] carries.
    Tun { len: usize },
    /// Send `buf[..len]` as the whole payload of a UDP datagram to
    /// `node`:`port`: what [`Action::SendTunnel`] carries.
    Tunnel { node: IpAddr, port: u16, len: usize },
}

impl Forward {
    /// The action the copying entry points return for the same packet:
    /// `packet[..len]` copied into [`Action::WriteTun`] or
    /// [`Action::SendTunnel`]. `packet` is the buffer the in-place entry
    /// point rewrote.
    ///
    /// # Panics
    ///
    /// If `packet` is shorter than `len` (not the buffer the core saw).
    pub fn to_action(&self, packet: &[u8]) -> Action {
        match *self {
            Forward::Tun { len } => Action::WriteTun(packet[..len].to_vec()),
            Forward::Tunnel { node, port, len } => Action::SendTunnel {
                node,
                port,
                datagram: packet[..len].to_vec(),
            },
        }
    }
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
enum Hop {
    Tun,
    Tunnel(IpAddr),
}

/// The flow tuple of a packet, as the conversion table indexes it: built
/// from the packet's fields straight into the packed form the lookup
/// hashes (see [`PackedKey::of`]); the [`FlowKey`] is unpacked from it
/// only off the per-packet path.
struct Key {
    packed: PackedKey,
    /// An ICMP error: its tuple is that of the flow it reports on, in the
    /// direction the error travels (the quoted tuple reversed).
    is_error: bool,
}

impl Key {
    fn tuple(&self) -> FlowKey {
        FlowKey::from(&self.packed)
    }
}

/// The [`Key`] of a packet.
#[inline(always)]
fn packet_key(v: &IpPacket<'_>) -> Result<Key, DropReason> {
    match v.transport() {
        Transport::Tcp | Transport::Udp | Transport::IcmpEcho { .. } => {
            let (sp, dp) = v
                .src_port()
                .zip(v.dst_port())
                .ok_or(DropReason::Unsupported)?;
            Ok(Key {
                packed: PackedKey::of(v.protocol(), v.src(), sp, v.dst(), dp),
                is_error: false,
            })
        }
        Transport::IcmpError(q) if q.kind() != QuotedKind::Other => {
            let tuple = v
                .quoted_src()
                .zip(v.quoted_dst())
                .zip(v.quoted_src_port().zip(v.quoted_dst_port()))
                .map(|((s, d), (sp, dp))| FlowKey::new(q.protocol(), s, sp, d, dp).reversed())
                .ok_or(DropReason::Unsupported)?;
            Ok(Key {
                packed: PackedKey::from(&tuple),
                is_error: true,
            })
        }
        _ => Err(DropReason::Unsupported),
    }
}

/// Applies `rw` to a packet whose (possibly reversed-quoted) tuple is
/// `key`. A plain packet gets `rw.src` → `rw.dst`. An ICMP error gets its
/// quoted packet rewritten the opposite way (quoted source = `rw.dst`,
/// quoted destination = `rw.src`) and its outer destination set to
/// `rw.dst`; its outer source becomes `rw.src` only if the error came from
/// the flow's endpoint itself (outer source = the key's source); an error
/// from a router on the way keeps the router's address.
fn rewrite(v: &mut IpPacket<'_>, key: &Key, rw: Rewrite) {
    // Families match by construction: flows are single-family and the
    // packet's tuple matched one; errors are impossible here.
    if key.is_error {
        if v.src() == key.tuple().src {
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

/// Whether `p` (a whole IP packet) is TCP, by its IPv4 protocol or the
/// IPv6 header's next header.
fn is_tcp(p: &[u8]) -> bool {
    match p.first().map(|b| b >> 4) {
        Some(4) => p.get(9) == Some(&6),
        Some(6) => p.get(6) == Some(&6),
        _ => false,
    }
}

fn parse_error_reason(e: ParseError) -> DropReason {
    match e {
        // An empty buffer, or a first nibble neither 4 nor 6.
        ParseError::Malformed(Malformed::Empty | Malformed::Version(_)) => DropReason::NotIp,
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
    /// The underlay addresses tunnel datagrams are accepted from.
    peers: HashSet<IpAddr>,
    /// Datagrams in reassembly.
    frags: FragmentTable,
    /// The last IPv6 fragment identification the core chose (for a
    /// released datagram cut to the MTU).
    frag_ident: u32,
    counters: Counters,
}

impl NetManagerCore {
    pub fn new(cfg: Config) -> NetManagerCore {
        NetManagerCore {
            cache: ResolutionCache::new(cfg.cache),
            conntrack: ConnTrack::new(cfg.conntrack),
            peers: cfg.peers.iter().copied().collect(),
            frags: FragmentTable::new(cfg.fragments),
            frag_ident: 0,
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
    pub fn fragments(&self) -> &FragmentTable {
        &self.frags
    }

    /// Sets the overlay MTU ([`Config::mtu`]), e.g. once the shell knows
    /// the TUN's.
    pub fn set_mtu(&mut self, mtu: usize) {
        self.cfg.mtu = mtu;
    }

    /// Registers an instance running on this node.
    pub fn add_local_instance(&mut self, li: LocalInstance) {
        self.locals.insert(li.ns_ip.into(), li);
        if let Some(v6) = li.ns_ip6 {
            self.locals.insert(v6.into(), li);
        }
    }

    /// Accepts tunnel datagrams from the node at `addr` from now on.
    pub fn add_peer(&mut self, addr: IpAddr) {
        if addr != self.cfg.node_addr {
            self.peers.insert(addr);
        }
    }

    /// True if tunnel datagrams from `addr` are accepted.
    pub fn is_peer(&self, addr: IpAddr) -> bool {
        self.peers.contains(&addr)
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

    /// The inner packet of a tunnel datagram fits a service flow (`src`,
    /// `dst`: its flow's tuple; for an ICMP error, the flow it reports
    /// on): from the service range or an instance namespace range, to an
    /// instance namespace address of this node or the service range (a
    /// reply, which must then match a flow of this node).
    #[inline(always)]
    fn fits_service_flow(&self, src: IpAddr, dst: IpAddr) -> bool {
        let src_ok = in_service_range(src)
            || self
                .cfg
                .namespace_nets
                .iter()
                .any(|&(net, len)| in_net(src, net, len));
        src_ok && (self.is_local_ns(dst) || in_service_range(dst))
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

    /// The translation of a packet of a known flow, shared by both entry
    /// points (`from_tunnel`: the packet came out of the tunnel, else out
    /// of the TUN): looks the flow up (recording the packet on it, except
    /// for an ICMP error, which only reports on a flow), rewrites `v` in
    /// place as the flow says, and returns where it goes. `None`: no flow;
    /// `Some(Err(_))`: a flow, but not one this path may use.
    ///
    /// The rewrite reads the flow where it lies in the table: nothing but
    /// the two addresses written is copied out of it.
    #[inline(always)]
    fn known_flow(
        &mut self,
        now: Millis,
        v: &mut IpPacket<'_>,
        key: &Key,
        from_tunnel: bool,
    ) -> Option<Result<Hop, DropReason>> {
        let (dir, flow) = if key.is_error {
            self.conntrack.get_packed(now, &key.packed)?
        } else {
            self.conntrack
                .track_packed(now, &key.packed, v.tcp_flags())?
        };
        let (rw, hop) = match (from_tunnel, dir, &flow.kind) {
            // A local client's packet: translated to the instance.
            (
                false,
                Dir::Orig,
                FlowKind::Translated {
                    client_src,
                    instance_ns,
                    next_hop,
                    ..
                },
            ) => {
                let rw = Rewrite {
                    src: *client_src,
                    dst: *instance_ns,
                };
                (Some(rw), Self::next_hop(*next_hop))
            }
            // The answer, from a local instance or through the tunnel:
            // translated back to what the client dialled.
            (
                _,
                Dir::Reply,
                FlowKind::Translated {
                    client_ns, service, ..
                },
            ) => {
                let rw = Rewrite {
                    src: *service,
                    dst: *client_ns,
                };
                (Some(rw), Hop::Tun)
            }
            // A local instance answers a remote client: raw to its node.
            (false, Dir::Reply, FlowKind::Passthrough { peer }) => (None, Hop::Tunnel(*peer)),
            // A remote client's packet: raw to the local instance.
            (true, Dir::Orig, FlowKind::Passthrough { .. }) => (None, Hop::Tun),
            // A remote client's tuple coming out of the local TUN, a local
            // client's tuple or a local instance's answer out of the
            // tunnel: not paths the net manager knows.
            (_, Dir::Orig, _) | (true, Dir::Reply, FlowKind::Passthrough { .. }) => {
                return Some(Err(DropReason::NoFlow))
            }
        };
        if let Some(rw) = rw {
            rewrite(v, key, rw);
        }
        Some(Ok(hop))
    }

    /// Counts a drop and reports it; returns `None` (no forward) for the
    /// handlers' `return self.drop(..)`.
    fn drop(&mut self, out: &mut Vec<Action>, r: DropReason) -> Option<Forward> {
        *self.counters.drop_counter(r) += 1;
        out.push(Action::Drop(r));
        None
    }

    /// Counts and reports the drop of a held packet: `from` and `quote`
    /// as in [`Held`].
    fn drop_held(
        &mut self,
        out: &mut Vec<Action>,
        reason: DropReason,
        from: Option<IpAddr>,
        quote: Vec<u8>,
    ) {
        *self.counters.drop_counter(reason) += 1;
        out.push(Action::DropHeld(Box::new(Held {
            reason,
            from,
            quote,
        })));
    }

    /// Counts and reports the drop of each fragment of a datagram the
    /// fragment table discarded.
    #[cold]
    fn drop_discarded(&mut self, out: &mut Vec<Action>, r: DropReason, d: Discarded) {
        for q in d.quotes {
            self.drop_held(out, r, d.from, q);
        }
    }

    /// A packet handed back to the core (released from a query's queue),
    /// `p`, was handled into `out` from index `from` on: its drops there
    /// (each made before any rewrite, so `p` is as it was queued) are a
    /// held packet's, named by its quote.
    fn held_drops(out: &mut [Action], from: usize, p: &[u8]) {
        for a in &mut out[from..] {
            if let Action::Drop(reason) = *a {
                *a = Action::DropHeld(Box::new(Held {
                    reason,
                    from: None,
                    quote: held::quote(p),
                }));
            }
        }
    }

    /// The packet being handled, `v`, rewritten in place, goes to `to`:
    /// counts it and returns the [`Forward`] the handlers return. Every
    /// handled packet leaves the core here; the copying entry points make
    /// the forward an action ([`Self::copy_forward`]).
    fn forward(&mut self, to: Hop, v: &IpPacket<'_>) -> Option<Forward> {
        let len = v.len();
        Some(match to {
            Hop::Tun => {
                self.counters.tun_out += 1;
                Forward::Tun { len }
            }
            Hop::Tunnel(node) => {
                self.counters.tunnel_out += 1;
                Forward::Tunnel {
                    node,
                    port: self.cfg.tunnel_port,
                    len,
                }
            }
        })
    }

    /// A fragment, out of the TUN (`from` = `None`) or the tunnel: kept
    /// until its datagram is whole; the whole datagram is then handled as
    /// a packet from the same place, and what is forwarded of it is cut
    /// again the way it came ([`Self::emit`]). Always `None`: the
    /// fragments made are actions.
    #[cold]
    #[inline(never)]
    fn fragment(
        &mut self,
        now: Millis,
        from: Option<IpAddr>,
        packet: &[u8],
        out: &mut Vec<Action>,
    ) -> Option<Forward> {
        self.counters.frag_in += 1;
        let whole = match self.frags.insert(now, from, packet) {
            Ok(None) => {
                self.counters.frag_held += 1;
                return None;
            }
            Ok(Some(whole)) => whole,
            Err(refused) => {
                let r = match refused.why {
                    Refusal::Malformed => DropReason::Fragment,
                    Refusal::OverCap => DropReason::FragmentOverCap,
                    Refusal::Overlap => DropReason::FragmentOverlap,
                    Refusal::Duplicate => DropReason::FragmentDuplicate,
                };
                self.drop_discarded(out, r, refused.discarded);
                return self.drop(out, r);
            }
        };
        self.counters.frag_held += 1;
        self.counters.frag_reassembled += 1;
        let mut p = whole.packet;
        let mark = out.len();
        if fragments::is_fragment(&p) {
            // A fragment inside a fragment (IPv6 allows the header
            // twice): refused, so reassembly never nests.
            self.drop(out, DropReason::Fragment);
            self.drop_pieces(out, mark, from, &whole.pieces, &p);
            return None;
        }
        let fwd = match from {
            None => self.tun_packet(now, &mut p, out),
            Some(peer) => self.tunnel_datagram(now, peer, &mut p, out),
        };
        self.drop_pieces(out, mark, from, &whole.pieces, &p);
        self.emit(fwd, &p, Some(whole.shape), out);
        None
    }

    /// A datagram made whole, `p`, was handled into `out` from index
    /// `mark` on: if it was dropped there (before any rewrite, so `p` is
    /// as it was made), each fragment it was made of died with it. The
    /// one handed in is the drop's own packet; the others, which the core
    /// held, are reported as held packets, by their quotes, and not
    /// counted again: the datagram's drop counts once.
    #[cold]
    fn drop_pieces(
        &mut self,
        out: &mut Vec<Action>,
        mark: usize,
        from: Option<IpAddr>,
        pieces: &fragments::Pieces,
        p: &[u8],
    ) {
        let dropped = out[mark..].iter().find_map(|a| match a {
            Action::Drop(r) => Some(*r),
            _ => None,
        });
        if let Some(reason) = dropped {
            for quote in pieces.quotes(p) {
                out.push(Action::DropHeld(Box::new(Held {
                    reason,
                    from,
                    quote,
                })));
            }
        }
    }

    /// What the copying paths (fragments, packets released after a
    /// resolution) do with a forward: the packet copied out of `packet`
    /// into an action, or, if it is larger than the MTU and may be cut
    /// (not TCP: a TCP super-packet is the shell's to segment), into
    /// fragments: of the size it came in (`shape`, a reassembled
    /// datagram), at most the MTU's.
    fn emit(
        &mut self,
        fwd: Option<Forward>,
        packet: &[u8],
        shape: Option<Shape>,
        out: &mut Vec<Action>,
    ) {
        let Some(fwd) = fwd else {
            return;
        };
        let (Forward::Tun { len } | Forward::Tunnel { len, .. }) = fwd;
        let Some(pieces) = self.cut(&packet[..len], shape) else {
            out.push(fwd.to_action(packet));
            return;
        };
        let n = pieces.len() as u64;
        self.counters.frag_out += n;
        for piece in pieces {
            out.push(match fwd {
                Forward::Tun { .. } => Action::WriteTun(piece),
                Forward::Tunnel { node, port, .. } => Action::SendTunnel {
                    node,
                    port,
                    datagram: piece,
                },
            });
        }
        // `forward` counted the datagram as one packet.
        match fwd {
            Forward::Tun { .. } => self.counters.tun_out += n - 1,
            Forward::Tunnel { .. } => self.counters.tunnel_out += n - 1,
        }
    }

    /// The fragments `p` is to be sent as, if any (see [`Self::emit`]).
    fn cut(&mut self, p: &[u8], shape: Option<Shape>) -> Option<Vec<Vec<u8>>> {
        let mtu_payload = fragments::payload_for_mtu(p, self.cfg.mtu)?;
        match shape {
            Some(s) => fragments::fragment(p, s.payload.min(mtu_payload), s.ident),
            None if p.len() > self.cfg.mtu && !is_tcp(p) => {
                self.frag_ident = self.frag_ident.wrapping_add(1);
                fragments::fragment(p, mtu_payload, self.frag_ident)
            }
            None => None,
        }
    }

    /// What the copying entry points do with a handler's forward: append
    /// it to the actions, the packet copied out of `packet`.
    fn copy_forward(fwd: Option<Forward>, packet: &[u8], actions: &mut Vec<Action>) {
        if let Some(fwd) = fwd {
            actions.push(fwd.to_action(packet));
        }
    }

    fn next_hop(h: NextHop) -> Hop {
        match h {
            NextHop::Local => Hop::Tun,
            NextHop::Node(n) => Hop::Tunnel(n),
        }
    }

    /// A packet read from the TUN: sent by a local instance (or the node)
    /// to a service IP, or a local instance's reply within a known flow.
    ///
    /// Returns every action, the translated packet copied into a
    /// [`Action::WriteTun`] or [`Action::SendTunnel`] (`packet` is
    /// rewritten too, and may be reused by the caller afterwards). The hot
    /// path of a shell is [`Self::tun_packet_in_place`], which skips the
    /// copy and the allocation.
    pub fn on_tun_packet(&mut self, now: Millis, packet: &mut [u8]) -> Vec<Action> {
        self.counters.tun_in += 1;
        let mut actions = Vec::with_capacity(1);
        let fwd = self.tun_packet(now, packet, &mut actions);
        Self::copy_forward(fwd, packet, &mut actions);
        actions
    }

    /// [`Self::on_tun_packet`] without copying the packet: the same
    /// translation, the same counters, but when the packet is to be sent
    /// on, it is left rewritten in `packet` and the return value says
    /// where to send its first `len` bytes ([`Forward`]). `extra` is
    /// **cleared** by this call, then receives the other actions (`Query`,
    /// `Drop`, ICMP errors written to the TUN): pass the same vector every
    /// time to reuse its allocation. When `None` is returned, the packet
    /// was not sent on (queued behind a query, or dropped) and `packet` is
    /// left unchanged.
    ///
    /// The copying entry point's actions are exactly `extra` followed by
    /// the forward made an action ([`Forward::to_action`]).
    pub fn tun_packet_in_place(
        &mut self,
        now: Millis,
        packet: &mut [u8],
        extra: &mut Vec<Action>,
    ) -> Option<Forward> {
        self.counters.tun_in += 1;
        extra.clear();
        self.tun_packet(now, packet, extra)
    }

    /// The handler behind both TUN entry points: pushes to `out` every
    /// action but the forward of `packet`, which it returns.
    fn tun_packet(
        &mut self,
        now: Millis,
        packet: &mut [u8],
        out: &mut Vec<Action>,
    ) -> Option<Forward> {
        self.handle(now, packet, None, out, |core, v, key, out| {
            core.new_flow(now, v, key, out)
        })
    }

    /// What both handlers do first: validates `packet` and keys it, and
    /// translates it if it belongs to a known flow (`from`: the tunnel
    /// peer it came from, `None` for the TUN). A packet without a flow
    /// that is not an ICMP error goes to `first`, the handler's own rule
    /// for a flow's first packet. A fragment goes to reassembly
    /// ([`Self::fragment`]).
    #[inline(always)]
    fn handle(
        &mut self,
        now: Millis,
        packet: &mut [u8],
        from: Option<IpAddr>,
        out: &mut Vec<Action>,
        first: impl FnOnce(&mut Self, &mut IpPacket<'_>, &Key, &mut Vec<Action>) -> Option<Forward>,
    ) -> Option<Forward> {
        // The view and the key are used where they were built, inside
        // their `Result`s: moving them out would cost a copy per packet
        // (and a stalled one, so soon after the stores that built them).
        // `new_checked` tells IPv4 from IPv6 by the first nibble.
        let from_tunnel = from.is_some();
        let mut parsed = IpPacket::new_checked(packet);
        let v = match parsed.as_mut() {
            Ok(v) => v,
            Err(ParseError::Fragment) => return self.fragment(now, from, packet, out),
            Err(e) => return self.drop(out, parse_error_reason(*e)),
        };
        let keyed = packet_key(v);
        let key = match &keyed {
            Ok(key) => key,
            Err(r) => return self.drop(out, *r),
        };
        if from_tunnel {
            let t = key.tuple();
            if !self.fits_service_flow(t.src, t.dst) {
                return self.drop(out, DropReason::NotServiceFlow);
            }
        }
        match self.known_flow(now, v, key, from_tunnel) {
            Some(Ok(hop)) => return self.forward(hop, v),
            Some(Err(r)) => return self.drop(out, r),
            None => {}
        }
        if key.is_error {
            return self.drop(out, DropReason::NoFlow);
        }
        first(self, v, key, out)
    }

    /// First packet of a flow, if it is to a service IP.
    fn new_flow(
        &mut self,
        now: Millis,
        v: &mut IpPacket<'_>,
        k: &Key,
        out: &mut Vec<Action>,
    ) -> Option<Forward> {
        let key = k.tuple();
        if !is_service_ip(key.dst) {
            return self.drop(out, DropReason::NoFlow);
        }
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
        rewrite(v, k, rw);
        self.forward(Self::next_hop(next_hop), v)
    }

    /// Queues a copy of the packet behind the query for `service`.
    fn enqueue(
        &mut self,
        service: IpAddr,
        packet: Vec<u8>,
        out: &mut Vec<Action>,
    ) -> Option<Forward> {
        match self.cache.enqueue(service, packet) {
            Ok(()) => {
                self.counters.queued += 1;
                None
            }
            Err(_) => self.drop(out, DropReason::QueueFull),
        }
    }

    /// Answers `original` (sent by a local sender) with an ICMP
    /// destination-unreachable written to the TUN.
    fn unreachable(&mut self, original: &[u8], out: &mut Vec<Action>) {
        if let Some(icmp) = icmp_unreachable(original) {
            self.counters.icmp_unreachable_sent += 1;
            self.counters.tun_out += 1;
            out.push(Action::WriteTun(icmp));
        }
    }

    /// A datagram received on the tunnel port from the node at `from`
    /// (its underlay source address); `payload` is the datagram's payload,
    /// an IP packet. Datagrams from unknown peers and inner packets that
    /// fit no service flow are dropped (see the module documentation of
    /// `netmanager`, "Trust"). Replies to this node's translated flows are translated
    /// back; packets for local instances are written as they are, and the
    /// flow is remembered so that the instance's replies go back raw to
    /// `from`.
    ///
    /// Like [`Self::on_tun_packet`], this copies the packet into its
    /// action; [`Self::tunnel_datagram_in_place`] does not.
    pub fn on_tunnel_datagram(
        &mut self,
        now: Millis,
        from: IpAddr,
        payload: &mut [u8],
    ) -> Vec<Action> {
        self.counters.tunnel_in += 1;
        let mut actions = Vec::with_capacity(1);
        let fwd = self.tunnel_datagram(now, from, payload, &mut actions);
        Self::copy_forward(fwd, payload, &mut actions);
        actions
    }

    /// [`Self::on_tunnel_datagram`] without copying the packet, with the
    /// contract of [`Self::tun_packet_in_place`]: `extra` is cleared, then
    /// receives the actions other than the forward; `Some` means `payload`
    /// was rewritten in place (or left as it is, for a passthrough) and
    /// its first `len` bytes are to be sent as the [`Forward`] says.
    pub fn tunnel_datagram_in_place(
        &mut self,
        now: Millis,
        from: IpAddr,
        payload: &mut [u8],
        extra: &mut Vec<Action>,
    ) -> Option<Forward> {
        self.counters.tunnel_in += 1;
        extra.clear();
        self.tunnel_datagram(now, from, payload, extra)
    }

    /// The handler behind both tunnel entry points, like
    /// [`Self::tun_packet`].
    fn tunnel_datagram(
        &mut self,
        now: Millis,
        from: IpAddr,
        payload: &mut [u8],
        out: &mut Vec<Action>,
    ) -> Option<Forward> {
        if !self.peers.contains(&from) {
            return self.drop(out, DropReason::UnknownPeer);
        }
        self.handle(now, payload, Some(from), out, |core, v, key, out| {
            core.passthrough(now, from, v, key, out)
        })
    }

    /// First packet of a flow out of the tunnel: for a local instance, it
    /// is remembered (replies go back raw to `from`) and written as it is.
    fn passthrough(
        &mut self,
        now: Millis,
        from: IpAddr,
        v: &mut IpPacket<'_>,
        key: &Key,
        out: &mut Vec<Action>,
    ) -> Option<Forward> {
        let key = key.tuple();
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
        self.forward(Hop::Tun, v)
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
        if let Ok(res) = &result {
            for i in &res.instances {
                self.add_peer(i.node);
            }
        }
        if ok {
            self.counters.resolutions_ok += 1;
        } else {
            self.counters.resolutions_failed += 1;
        }
        let released = self.cache.on_resolution(now, service_ip, result);
        let mut actions = Vec::new();
        for mut p in released.packets {
            if ok {
                self.counters.released += 1;
                let mark = actions.len();
                let fwd = self.tun_packet(now, &mut p, &mut actions);
                Self::held_drops(&mut actions, mark, &p);
                self.emit(fwd, &p, None, &mut actions);
            } else {
                self.unreachable(&p, &mut actions);
                self.drop_held(&mut actions, DropReason::QueryFailed, None, held::quote(&p));
            }
        }
        actions
    }

    /// When [`Self::expire`] next has something to do: the earliest time
    /// at which a flow may expire, a resolution go stale or a query time
    /// out; `None` when nothing can. Never later than the first of them
    /// (a shell that calls `expire` then misses none), exact right after
    /// `expire`; traffic that refreshes state can leave it earlier than
    /// needed, and the `expire` it causes then finds nothing.
    pub fn next_deadline(&self) -> Option<Millis> {
        earliest(
            earliest(self.conntrack.next_deadline(), self.cache.next_deadline()),
            self.frags.next_deadline(),
        )
    }

    /// Expires flows and resolutions; fails queries unanswered for too
    /// long (their packets are answered like a failed query's); drops the
    /// fragments of datagrams not whole in time.
    pub fn expire(&mut self, now: Millis) -> Vec<Action> {
        let n = self.conntrack.expire(now);
        self.counters.flows_expired += n as u64;
        let mut actions = Vec::new();
        for gone in self.frags.expire(now) {
            self.drop_discarded(&mut actions, DropReason::FragmentTimeout, gone);
        }
        for (_, released) in self.cache.expire(now) {
            self.counters.resolutions_failed += 1;
            for p in released.packets {
                self.unreachable(&p, &mut actions);
                self.drop_held(&mut actions, DropReason::QueryFailed, None, held::quote(&p));
            }
        }
        actions
    }
}

#[cfg(test)]
mod tests;
