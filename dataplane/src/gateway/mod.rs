//! The gateway's sans-IO core, modelled on Oakestra's gateway: exposes
//! services of the platform on ports of a public address, translating
//! between external clients and service IPs.
//!
//! No sockets, no clock, no threads: the time is passed in as milliseconds
//! since an arbitrary origin ([`crate::Millis`]); a shell reads the
//! gateway's TUN device, hands every packet to
//! [`GatewayCore::packet_in_place`], writes back to the TUN what comes out
//! as [`Verdict::Request`] or [`Verdict::Reply`] (rewritten in its buffer,
//! same length), calls [`GatewayCore::expire`] when
//! [`GatewayCore::next_deadline`] comes, and changes the exposures with
//! [`GatewayCore::expose`] and [`GatewayCore::unexpose`].
//!
//! - [`core`]: [`GatewayCore`], the Exposed Services table,
//!   the per-packet path, [`Counters`];
//! - [`proto`]: [`Proto`], the protocols translated (below both others);
//! - `table`: the Forward table (flows in a slab behind a keyed-hash
//!   request index and a direct reply index by internal port), NAPT port
//!   allocation, expiry.
//!
//! Packets are validated and rewritten with the crate's packet views
//! ([`crate::packet::IpPacket`]), whose setters update the
//! IPv4, TCP and UDP checksums incrementally (RFC 1624).
//!
//! # Tuple transformations (the seed table)
//!
//! An external client `93.6.1.78:51671` dials the gateway's public address
//! `24.0.5.8:8080`; the gateway's internal address is `10.30.255.253`;
//! port 8080 is exposed as `tcp 8080 -> 10.30.30.30:80` (a service IP);
//! the service's instance has namespace address `10.18.0.1`. Tuples are
//! `src:port > dst:port`. **Bold**: what this core does (steps 2 and 5).
//!
//! | step | who | packet becomes |
//! |---|---|---|
//! | 1 | client; the gateway host's nftables DNAT it and route it into the TUN | `93.6.1.78:51671 > 10.30.255.253:8080` |
//! | **2** | **this core, request** | **`10.30.255.253:51671 > 10.30.30.30:80`** |
//! | 3 | net manager (service IP → instance) | `10.30.255.253:51671 > 10.18.0.1:80` |
//! | 4 | instance answers; net manager translates back | `10.30.30.30:80 > 10.30.255.253:51671` |
//! | **5** | **this core, reply** | **`10.30.255.253:8080 > 93.6.1.78:51671`** |
//! | 6 | kernel conntrack undoes the DNAT | `24.0.5.8:8080 > 93.6.1.78:51671` |
//!
//! 2. A request `client:cport > internal:eport`: the Exposed Services
//!    table, by (protocol, family, `eport`), gives the service
//!    `svc:sport`. The core records a Forward table entry `[client ip,
//!    cport, svc, sport, eport]` with an internal port `iport` (`cport`
//!    when free, see NAPT) and rewrites the packet to
//!    `internal:iport > svc:sport`. Later requests of the flow find the
//!    entry by (protocol, family, client ip, `cport`, `eport`). The shell
//!    writes the packet back to the TUN; the kernel routes the service
//!    range to the net manager, for which the gateway is a client without
//!    an instance IP (see [`crate::netmanager`]).
//! 5. A reply `svc:sport > internal:iport` is found by (protocol, family,
//!    `iport`), and only if its source is the entry's `svc:sport`; it is
//!    rewritten to `internal:eport > client:cport`, which is the reverse
//!    of what the kernel's DNAT produced at step 1, so the kernel's
//!    conntrack maps it back to the public address at step 6.
//!
//! Which one a packet is: a packet whose destination port is the internal
//! port of an entry and whose source is that entry's service is a reply;
//! any other packet is a request. A request from inside the internal
//! networks ([`GatewayConfig::internal_nets`]: the service, instance and
//! node ranges, where no client can be) is dropped as [`DropReason::Spoofed`]
//! when it is for an exposed port, as [`DropReason::NoFlow`] (a reply without an
//! entry, or from the wrong source) otherwise; so is a request from an
//! address no client can have (unspecified, loopback, multicast,
//! broadcast: [`DropReason::Spoofed`]). Every packet must be addressed to the
//! internal address of its family ([`DropReason::WrongDestination`]). Families
//! never mix: an IPv4 request only uses IPv4 exposures (which map to IPv4
//! services), an IPv6 request IPv6 ones; IPv6 needs
//! [`GatewayConfig::internal6`].
//!
//! # What may be exposed
//!
//! Only service IPs of the Oakestra ranges, with a port
//! ([`GatewayConfig::check_exposure`], the one rule: the control socket
//! and the command line reach it through [`GatewayCore::expose`], the
//! scenario validator calls it). `tcp 9001 -> 8.8.8.8:53` would make the
//! gateway an open relay to the internet, `udp 9001 -> 10.10.0.1:50103`
//! a way for any client to hand a node's net manager a crafted tunnel
//! datagram; both are refused ([`ExposeError::NotServiceIp`]), as are
//! instance namespace addresses (10.18.0.0/16) and the gateway's own
//! internal address.
//!
//! # NAPT
//!
//! Two clients may use the same source port towards the same exposed port
//! (`93.6.1.78:51671` and `203.0.113.9:51671`): both would become
//! `internal:51671 > svc:sport`, and their replies could not be told
//! apart. So the internal port is the client's port only while no other
//! entry of the same protocol and family uses it as internal port (and it
//! is not 0); otherwise it is allocated from [`GatewayConfig::napt_ports`] (default
//! 49152–65535), scanning upward from a cursor that moves past each port
//! handed out and wraps (deterministic: it depends only on the sequence
//! of packets). The second client above gets `internal:49152`, and the
//! reply to 49152 goes back to `203.0.113.9:51671`. When no port is free
//! the new flow is refused ([`DropReason::PortsExhausted`]); so is any new flow
//! while the table holds [`GatewayConfig::max_flows`] entries
//! ([`DropReason::TableFull`]), after one sweep of timed-out entries (at most one
//! sweep per millisecond).
//!
//! # Expiry
//!
//! Every packet refreshes its entry. A TCP entry is *closed* by a RST from
//! either side or once both sides have sent a FIN, and is removed
//! [`GatewayConfig::tcp_closing_ms`] after that moment; one FIN makes it
//! *closing* (half-closed), still under
//! [`GatewayConfig::tcp_established_ms`] of idleness like an open one. UDP
//! entries are removed after [`GatewayConfig::udp_ms`] idle. A SYN
//! without ACK from the client on a closing or closed entry reopens it
//! (state reset, same internal port). A timed-out entry is gone for
//! packets at once: a reply meeting it is [`DropReason::NoFlow`], a request
//! opens a new flow; [`GatewayCore::expire`] sweeps the rest (O(n)).
//! Removing an exposure ([`GatewayCore::unexpose`]) removes its flows.
//!
//! # ICMP errors
//!
//! Destination unreachable (IPv4 fragmentation needed included), time
//! exceeded, parameter problem and ICMPv6 packet too big about a flow are
//! translated both ways, by the flow the quoted packet belongs to; the
//! quote is rewritten back to what its sender sent (addresses, ports and
//! the quoted checksums, by the packet views' setters), the outer source
//! becomes the internal address, and the MTU of a "too big" is kept (the
//! gateway changes no length). An error neither creates nor refreshes a
//! flow.
//!
//! | error about | arrives (from) | quote | becomes |
//! |---|---|---|---|
//! | a request (the service's net manager: no instance; a router inside: too big, time exceeded) | `X > internal`, X inside the platform | `internal:iport > svc:sport` | `internal > client`, quote `client:cport > internal:eport` |
//! | a reply (the client: port closed; a router on the internet) | `Y > internal`, Y outside (conntrack has undone the public address in the quote) | `internal:eport > client:cport` | `internal > svc`, quote `svc:sport > internal:iport` |
//!
//! An error about an echo is translated the same way, by the echo
//! identifier in the ports' role (`icmp_errors_echo` counts them too): an
//! error from inside quoting the echo request `internal > svc`
//! (identifier `iport`) goes to the client quoting `client > internal`
//! with the client's identifier; an error from outside quoting the echo
//! reply `internal > client` (identifier `cport`) goes to the service
//! quoting `svc > internal` with `iport`; the quoted ICMP checksum
//! follows the identifier (and, over IPv6, the quoted addresses).
//!
//! The kernel's conntrack then finds the error RELATED to the client's
//! connection and restores the public address in the outer source and the
//! quote (step 6 for errors), so the client's socket gets the error. An
//! error about a request from outside the platform, or about a reply from
//! inside it, is [`DropReason::Spoofed`]; an error about no live flow is
//! [`DropReason::NoFlow`]. Counted in `requests`/`replies` and in
//! `icmp_errors_to_service`/`icmp_errors_to_client`.
//!
//! Where a "too big" is born: a client's packet larger than `gw0`'s MTU
//! (the overlay's, 1450) is refused by the gateway node's kernel when it
//! forwards it from `pub` to `gw0` (fragmentation needed / packet too big,
//! translated by conntrack, never reaching this core); a packet that fits
//! `gw0` fits the tunnel too, whose datagrams the kernel fragments on an
//! underlay narrower than overlay + 28 bytes. A "too big" from inside (a
//! router of the platform) comes through this core as above.
//!
//! # ICMP echo
//!
//! A user may expose ICMP for one service per family
//! ([`Exposure::icmp`]: `icmp -> 10.30.30.30`, no ports). An echo request
//! `client > internal` (identifier `id`) is then a request of the flow
//! keyed by (ICMP, family, client, `id`, exposed port 0): its internal
//! port is an identifier of the ICMP port space (`id` when free, else one
//! of the NAPT range, as for ports), and it becomes `internal > svc` with
//! that identifier. The echo reply `svc > internal` (identifier `iport`)
//! is found by the reply index like a port, and becomes `internal >
//! client` with the client's identifier, which the kernel's conntrack
//! (it keys ICMP by identifier too) maps back to the public address. The
//! ICMP checksum follows the identifier (and, over IPv6, the addresses of
//! the pseudo-header). Entries expire as UDP ones. An echo request while
//! ICMP is not exposed for its family is [`DropReason::NotExposed`]; an
//! echo reply that is no flow's is [`DropReason::NoFlow`].
//!
//! # Fragments
//!
//! Only a datagram's first fragment carries its ports, so the core
//! reassembles, with the net manager's code ([`crate::fragments`]): a
//! fragment is held ([`Verdict::Held`]) until its datagram is whole; the
//! datagram is then handled as one packet (a request, a reply, an ICMP
//! error, or dropped with the packet's reasons), and a translated one is
//! cut again to the size of the largest fragment it came in, never above
//! [`GatewayConfig::mtu`] (`gw0`'s, 1450), keeping the IPv4
//! identification or the IPv6 fragment identification
//! ([`Verdict::Fragments`]: the shell writes
//! [`GatewayCore::take_out`]'s packets). Bounds as the net manager's
//! ([`GatewayConfig::fragments`]: 256 datagrams, 4 MiB, 30 s; the expiry
//! is in [`GatewayCore::next_deadline`] and [`GatewayCore::expire`]).
//! Counters: `frag_in`, `frag_held` (a fragment's outcome),
//! `frag_reassembled`, `frag_out` (fragments written); drops
//! `dropped_frag_over_cap`, `dropped_frag_overlap` (the fragment and
//! those held for its datagram), `dropped_frag_duplicate`,
//! `dropped_frag_timeout` (each fragment of a datagram not whole in
//! time), `dropped_fragment` (a malformed fragment).
//!
//! What reaches `gw0` (seen in `gateway-fragments`' capture): the gateway
//! node's kernel has reassembled the client's fragments already, on
//! `pub` (nf_defrag, for conntrack and the DNAT), and cuts the datagram
//! again as it forwards it into `gw0`: IPv4 to the smaller of the largest
//! fragment's size and `gw0`'s MTU (a client's 1500-byte fragments of a
//! 3040-byte datagram arrive at `gw0` as 1444, 1444 and 220 bytes); IPv6
//! to the largest fragment's size, but a reassembled IPv6 datagram whose
//! fragments were larger than `gw0`'s MTU is not forwarded at all (the
//! kernel answers packet too big, as a router must not fragment IPv6), so
//! an IPv6 client first learns the path MTU (1450) and its fragments
//! arrive as it cut them (1448 and 296 bytes). Either way the core sees
//! fragments and must reassemble; what it writes back goes through the
//! same reassembly (conntrack) and cutting again before the net manager's
//! TUN or `pub`.
//!
//! # What it does not do
//!
//! - An ICMP error quoting anything but TCP, UDP or an echo is dropped
//!   as [`DropReason::Unsupported`], as is any ICMP message but echo and
//!   the errors above.
//! - Anything but TCP, UDP and ICMP is dropped ([`DropReason::Unsupported`]), as are
//!   malformed packets ([`DropReason::Malformed`]); no input makes the core
//!   panic, and a dropped packet's buffer is left unchanged.
//! - No I/O, no clock, no threads, no randomness in outcomes (the request
//!   index is hashed with random keys against flooding, which changes no
//!   result); the public-address DNAT and its reversal are the kernel's.

pub mod core;
pub mod proto;
mod table;

pub use self::core::{
    Counters, DropReason, ExposeError, ExposedPort, Exposure, FlowInfo, GatewayConfig, GatewayCore,
    Verdict,
};
pub use self::proto::{Proto, UnknownProto};
