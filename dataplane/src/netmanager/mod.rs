//! The net manager's sans-IO core, modelled on Oakestra's node-net-manager:
//! service IP resolution, balancing, address translation between service
//! IPs and instance namespace IPs, and the tunnel between nodes.
//!
//! No sockets, no clock, no threads: the time is passed in as milliseconds
//! since an arbitrary origin ([`crate::Millis`]); a shell reads the TUN and
//! the tunnel socket, runs the queries, carries out the [`core::Action`]s,
//! and calls [`NetManagerCore::expire`] when
//! [`NetManagerCore::next_deadline`] comes.
//!
//! Packets enter either way: the copying entry points
//! ([`NetManagerCore::on_tun_packet`], [`NetManagerCore::on_tunnel_datagram`])
//! return every action with the translated packet copied into it; the
//! in-place ones ([`NetManagerCore::tun_packet_in_place`],
//! [`NetManagerCore::tunnel_datagram_in_place`]), which a shell's hot path
//! uses, rewrite the packet in the caller's buffer, say where it goes
//! ([`Forward`]) and put the other actions in a vector the caller reuses.
//! Both run the same handlers and count the same; the copying results are
//! the in-place ones with the forward copied into an action.
//!
//! Packets are validated and rewritten with the crate's views
//! ([`crate::packet`]), whose setters keep the checksums right (including
//! ICMP errors' quotes).
//!
//! - [`services`]: service IP kinds, instances, balancing;
//! - [`cache`]: resolutions with TTL, queries in flight, queued packets;
//! - [`conntrack`]: the conversion table (flows by full 5-tuple, one
//!   keyed-hash lookup per packet);
//! - [`control`]: the line protocol to the service managers;
//! - [`fragments`](crate::fragments) (the crate's, shared with the gateway): reassembly of
//!   fragmented datagrams and cutting them again;
//! - [`core`]: [`NetManagerCore`], tying it together.
//!
//! # Tuple transformations
//!
//! Notation: the client instance has namespace address `c.ns` and, if it
//! has one, instance IP `c.ip` (when it has none, read `c.ip` as `c.ns`);
//! it dials service IP `svc` (instance, round-robin or closest) on port
//! `sp` from port `cp`; the chosen instance has namespace address `i.ns`.
//! Ports are never rewritten. Tuples are `src:port → dst:port`.
//!
//! ## Local client → local instance (one node, N)
//!
//! 1. The client sends `c.ns:cp → svc:sp`; the route for the service range
//!    leads to the TUN. N's core (`on_tun_packet`) resolves `svc`, chooses
//!    `i`, records the flow (original key `c.ns:cp → svc:sp`, reply key
//!    `i.ns:sp → c.ip:cp`), rewrites to **`c.ip:cp → i.ns:sp`** and writes
//!    it back to the TUN; the kernel delivers it through the bridge.
//! 2. The instance answers `i.ns:sp → c.ip:cp`; `c.ip` is in the service
//!    range, so the answer reaches the TUN. N's core finds the reply key,
//!    rewrites to **`svc:sp → c.ns:cp`** and writes it to the TUN: the
//!    client sees the address it dialled.
//!
//! ## Local client on node A → instance on node B
//!
//! 1. A's core, as above, rewrites `c.ns:cp → svc:sp` to
//!    **`c.ip:cp → i.ns:sp`**, and sends the whole IP packet as the payload
//!    of a UDP datagram to B's tunnel port (`SendTunnel`).
//! 2. B's core (`on_tunnel_datagram`, from A): no flow matches; `i.ns` is
//!    in B's subnet, so it records a *passthrough* flow (original key
//!    `c.ip:cp → i.ns:sp`, reply key `i.ns:sp → c.ip:cp`, peer A) and
//!    writes the packet **unchanged** to its TUN.
//! 3. The instance answers `i.ns:sp → c.ip:cp`; it reaches B's TUN. B's
//!    core finds the passthrough reply key and sends the packet
//!    **unchanged** back to A through the tunnel.
//! 4. A's core (`on_tunnel_datagram`) finds its flow's reply key
//!    `i.ns:sp → c.ip:cp`, rewrites to **`svc:sp → c.ns:cp`** and writes it
//!    to A's TUN.
//!
//! ### Why the receiving node keeps state (and does not translate)
//!
//! The only node that knows which service IP the client dialled is the one
//! that chose the instance, A; so A must be the one to translate the reply
//! back, and it must receive the reply exactly as it expects it. If B
//! treated the reply as a new outbound flow (as Oakestra does: `c.ip` is
//! an instance IP), it would rewrite the source to the instance's own
//! instance IP and the destination to `c.ns`, and need a resolution of
//! `c.ip` — a query on the reply path — while A would need a second key to
//! map it back. Keeping a passthrough entry on B costs one flow entry per
//! remote flow (same expiry rules as every flow) and buys: no query and no
//! rewrite on B, exact reply tuples at A, and a reply path that works when
//! the client has no instance IP (`c.ns`, or the gateway's internal
//! address) since B answers to the tunnel peer the flow came from. If B
//! loses its state, the next packet from A (any packet, not only a SYN)
//! recreates it.
//!
//! Shell requirement: the service ranges are routed to the TUN; if clients
//! without an instance IP talk to remote instances, the other nodes'
//! instance subnets must be routed to the TUN as well.
//!
//! ## Trust
//!
//! The tunnel port is reachable by whoever can reach the underlay, so a
//! datagram is accepted only when both hold, checked in this order before
//! any flow is looked up:
//!
//! 1. Its outer source is a known peer: a node given at start
//!    ([`Config::peers`]) or the node of an instance a service manager
//!    described in a resolution. Else [`DropReason::UnknownPeer`], before
//!    the payload is even parsed.
//! 2. Its inner packet fits a service flow, as the paths above spell them
//!    out (for an ICMP error: the flow it reports on). The source is
//!    `c.ip` (an instance IP, or the gateway's internal address: the
//!    service range 10.30.0.0/16, fdff::/16), `c.ns` or `i.ns` (an instance
//!    namespace address: [`Config::namespace_nets`], Oakestra's
//!    10.18.0.0/16 and fd18::/16); the destination is `i.ns` of this node
//!    (its subnet: a remote client's packet, or a reply to a local client
//!    without instance IP) or `c.ip` (the service range: a reply, which
//!    must then match a flow this node translated). Else
//!    [`DropReason::NotServiceFlow`]: an address outside these ranges
//!    (e.g. an external host) would make a local instance answer it.
//!
//! Both are counted; neither creates state. A known peer is trusted as
//! the nodes are in Oakestra: it may send any packet that fits a flow.
//!
//! ## ICMP
//!
//! Echo is a flow like any other, its identifier standing for both ports.
//! An ICMP error (unreachable, time exceeded, packet too big, parameter
//! problem) belongs to the flow of the packet it quotes, in the direction
//! it travels (the quoted tuple reversed); it is rewritten like the flow's
//! packets that way, with the quoted packet rewritten the opposite way
//! (see [`crate::packet`]). It never creates a flow.
//!
//! ## Fragments
//!
//! Only a datagram's first fragment carries its ports, so a fragment
//! cannot be matched to a flow by itself. The net manager reassembles
//! ([`fragments`](crate::fragments)): fragments out of the TUN, or out of the tunnel from a
//! known peer (the peer check comes first), are held per datagram (keyed
//! by where they came from, addresses, protocol and identification) until
//! the datagram is whole; the whole datagram then takes the path of any
//! packet from the same place (the trust check, the flow lookup, a new
//! flow's resolution, the rewrite above), and what is forwarded is cut
//! again ([`fragments::fragment`](crate::fragments::fragment)) as it came: fragments of the size of
//! the largest one received (never over [`Config::mtu`]), the IPv4
//! identification or IPv6 fragment identification kept. A datagram
//! released after a resolution (its first fragments' sizes are not kept
//! in the queue) is cut to the MTU. So the receiving node (which must
//! reassemble too, to find its passthrough flow) and the instance's kernel
//! get fragments no larger than those sent, and tuples are transformed
//! exactly as for a whole packet.
//!
//! Why reassemble rather than translate every fragment by its first
//! fragment's flow: fragments arrive in any order (a later one before the
//! first would have to be held anyway), a first fragment repeated with
//! other ports or overlapping pieces could make the translation of the
//! rest disagree with what the receiver reassembles (RFC 5722's attack),
//! and the trust checks at the tunnel judge the whole datagram's tuple.
//! The cost is a copy of each fragmented datagram and a bounded table.
//!
//! Bounds and counters: at most 256 datagrams and 4 MiB in reassembly, 30
//! s from a datagram's first fragment (through [`NetManagerCore::expire`],
//! which [`NetManagerCore::next_deadline`] schedules). `frag_in`
//! (fragments in), `frag_held` (kept: a fragment's outcome),
//! `frag_reassembled` (datagrams made whole), `frag_out` (fragments cut
//! again); drops `drop_frag_over_cap`, `drop_frag_overlap` (the fragment
//! and those held for its datagram), `drop_frag_duplicate`,
//! `drop_frag_timeout` (each fragment of a datagram not whole in time),
//! `drop_fragment` (a malformed fragment, or a fragment inside a
//! reassembled IPv6 datagram).
//!
//! ## Resolution
//!
//! A packet for a service IP with no flow looks the IP up in the cache. A
//! miss emits one `Query` and queues the packet; later packets for the
//! same service queue behind it (64 per service by default); packets for
//! other services and flows go on. On success the queued packets are
//! forwarded; on failure or timeout each is dropped, counted, and answered
//! with an ICMP destination unreachable (host unreachable; ICMPv6 address
//! unreachable). Errors are not rate-limited by the core: the queue bound
//! caps them per failed query, and a shell that needs RFC 1812/4443 rate
//! limiting applies it to the `WriteTun` actions carrying ICMP errors.

pub mod cache;
pub mod conntrack;
pub mod control;
pub mod core;
pub mod services;

pub use self::cache::ResolveError;
pub use self::core::{
    Action, BadInstanceSpec, Config, Counters, DropReason, Forward, LocalInstance, NetManagerCore,
    TUNNEL_PORT,
};
pub use self::services::{Coords, Instance, Resolution, ServiceIp, ServiceKind};
