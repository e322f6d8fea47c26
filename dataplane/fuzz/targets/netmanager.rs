//! The net manager core: [`NetManagerCore::tun_packet_in_place`] and
//! [`NetManagerCore::tunnel_datagram_in_place`] on a sequence of packets
//! (see [`super::common::records`]).
//!
//! The node is `n1` of `scenarios/svc-two-nodes.yaml` for the TUN target
//! and `n2` for the tunnel target (the addresses of the packets in their
//! seeds); every service IP resolves to one instance on each node. Small
//! table bounds let the fuzzer reach the "full" paths.
//!
//! Invariants: two cores in lockstep, one fed through the in-place entry
//! point and one through the copying one, return the same actions
//! (the documented contract between them) and end with the same counters;
//! every packet ends in exactly one outcome (forwarded, queued, or one
//! drop; a fragment: held for reassembly or dropped, and its datagram,
//! once whole, has an outcome of its own); a dropped or queued packet is
//! left unchanged; a forwarded
//! packet keeps every checksum it had valid, and goes to the tunnel port
//! of another node; the ICMP errors the core builds are valid packets.
//! What comes out towards an instance or a peer is answered (addresses
//! and ports swapped), so replies and passthrough flows are exercised.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hoplab_dataplane::fragments::is_fragment;
use hoplab_dataplane::netmanager::{
    Action, Config, Coords, Forward, Instance, LocalInstance, NetManagerCore, Resolution,
    ResolveError, ServiceIp, ServiceKind,
};
use hoplab_dataplane::packet::IpPacket;
use hoplab_dataplane::Millis;

use super::common::{records, reply, Checks};

pub const N1: Ipv4Addr = Ipv4Addr::new(10, 10, 0, 1);
pub const N2: Ipv4Addr = Ipv4Addr::new(10, 10, 0, 2);

/// The net manager of node `n` (1 or 2), with one local instance
/// (`x.1` of the node's subnet).
pub fn core(n: u8) -> NetManagerCore {
    let (node, base, base6) = if n == 1 { (N1, 0, 0) } else { (N2, 64, 1) };
    let mut cfg = Config::new(node.into(), (Ipv4Addr::new(10, 18, 0, base), 26));
    cfg.subnet_v6 = Some((Ipv6Addr::new(0xfd18, 0, 0, base6, 0, 0, 0, 0), 64));
    // The other node is a known peer: its tunnel datagrams get past the
    // trust boundary into translation.
    cfg.peers = vec![if n == 1 { N2 } else { N1 }.into()];
    cfg.cache.queue_limit = 2;
    cfg.cache.max_entries = 4;
    cfg.conntrack.max_flows = 4;
    let mut core = NetManagerCore::new(cfg);
    core.add_local_instance(LocalInstance {
        ns_ip: Ipv4Addr::new(10, 18, 0, base + 1),
        ns_ip6: Some(Ipv6Addr::new(0xfd18, 0, 0, base6, 0, 0, 0, 1)),
        instance_ip: Some(Ipv4Addr::new(10, 30, 2, 10 + n)),
        instance_ip6: Some(Ipv6Addr::new(0xfdff, 0, 0, 0, 0, 0, 2, 0x10 + u16::from(n))),
    });
    core
}

/// Every service IP resolves to an instance on n1 (`10.18.0.2`) and one
/// on n2 (`10.18.0.65`, instance 0: round robin picks it first); a
/// service IP ending in `0xff` fails to resolve.
pub fn resolution(service: IpAddr) -> Result<Resolution, ResolveError> {
    let last = match service {
        IpAddr::V4(a) => a.octets()[3],
        IpAddr::V6(a) => a.octets()[15],
    };
    if last == 0xff {
        return Err(ResolveError::NotFound);
    }
    let inst = |node: Ipv4Addr, host: u8, subnet6: u16, x: f64| Instance {
        ns_ip: Ipv4Addr::new(10, 18, 0, host),
        ns_ip6: Some(Ipv6Addr::new(0xfd18, 0, 0, subnet6, 0, 0, 0, 1)),
        node: node.into(),
        instance_number: u32::from(node == N1),
        coords: Coords::new(x, 0.0),
        service_ips: vec![ServiceIp {
            kind: ServiceKind::RoundRobin,
            addr: service,
        }],
    };
    Ok(Resolution::new(
        service,
        vec![inst(N1, 2, 0, 10.0), inst(N2, 65, 1, 0.0)],
    ))
}

/// Where a packet enters a node.
#[derive(Clone, Copy)]
pub enum Entry {
    Tun,
    Tunnel(IpAddr),
}

/// Two cores fed the same packets, through the in-place and the copying
/// entry points.
pub struct Lockstep {
    in_place: NetManagerCore,
    copying: NetManagerCore,
    extra: Vec<Action>,
    now: Millis,
    /// Every action of the last packet (the forward's too).
    last: Vec<Action>,
}

impl Lockstep {
    pub fn new(n: u8) -> Lockstep {
        Lockstep {
            in_place: core(n),
            copying: core(n),
            extra: Vec::new(),
            now: Millis(0),
            last: Vec::new(),
        }
    }

    /// One packet into both cores; returns what was forwarded, as the
    /// in-place core left it.
    pub fn packet(&mut self, entry: Entry, packet: &[u8]) -> Option<(Forward, Vec<u8>)> {
        let (now, mut buf, mut copy) = (self.now, packet.to_vec(), packet.to_vec());
        let c = self.in_place.counters().clone();
        let (drops, queued, frag_in, held) = (c.drops_total(), c.queued, c.frag_in, c.frag_held);
        let (fwd, copied) = match entry {
            Entry::Tun => (
                self.in_place
                    .tun_packet_in_place(now, &mut buf, &mut self.extra),
                self.copying.on_tun_packet(now, &mut copy),
            ),
            Entry::Tunnel(from) => (
                self.in_place
                    .tunnel_datagram_in_place(now, from, &mut buf, &mut self.extra),
                self.copying.on_tunnel_datagram(now, from, &mut copy),
            ),
        };
        let mut actions = self.extra.clone();
        actions.extend(fwd.map(|f| f.to_action(&buf)));
        assert_eq!(actions, copied, "in-place and copying entry points differ");
        self.last.clone_from(&actions);
        let c = self.in_place.counters();
        if c.frag_in > frag_in {
            // Held, or dropped (with the fragments held for its datagram,
            // on an overlap); once whole, the datagram's own outcome.
            assert!(fwd.is_none(), "a fragment forwarded in place");
            let outcome = (c.frag_held - held) + u64::from(c.drops_total() > drops);
            assert!(outcome >= 1, "a fragment without outcome: {actions:?}");
            for a in &actions {
                check_built(a, self.in_place.config());
            }
        } else {
            let outcomes =
                (c.drops_total() - drops) + (c.queued - queued) + u64::from(fwd.is_some());
            assert_eq!(outcomes, 1, "one outcome per packet: {actions:?}");
        }
        for a in &self.extra {
            check_built(a, self.in_place.config());
        }
        let Some(f) = fwd else {
            assert_eq!(buf, packet, "a packet not sent on was changed");
            self.answer(&actions);
            return None;
        };
        let len = match f {
            Forward::Tun { len } => len,
            Forward::Tunnel { node, port, len } => {
                let cfg = self.in_place.config();
                assert!(node != cfg.node_addr && port == cfg.tunnel_port);
                len
            }
        };
        assert!(len <= packet.len());
        Checks::of(packet).assert_kept(&Checks::of(&buf[..len]), "net manager forward");
        self.answer(&actions);
        buf.truncate(len);
        Some((f, buf))
    }

    /// Answers the queries among `actions`, in both cores.
    fn answer(&mut self, actions: &[Action]) {
        for a in actions {
            if let Action::Query(ip) = a {
                let a = self.in_place.on_resolution(self.now, *ip, resolution(*ip));
                let b = self.copying.on_resolution(self.now, *ip, resolution(*ip));
                assert_eq!(a, b, "the cores answer a resolution differently");
            }
        }
    }

    /// The in-place core (after [`Self::finish`]'s comparisons, the
    /// same as the copying one).
    pub fn core(&self) -> &NetManagerCore {
        &self.in_place
    }

    /// Every action of the last packet.
    pub fn last_actions(&self) -> &[Action] {
        &self.last
    }

    pub fn advance(&mut self, by: Millis) {
        if by == Millis(0) {
            return;
        }
        self.now = self.now + by;
        let mut a = debug_strings(self.in_place.expire(self.now));
        let mut b = debug_strings(self.copying.expire(self.now));
        a.sort();
        b.sort();
        assert_eq!(a, b, "the cores expire differently");
        assert_eq!(self.in_place.next_deadline(), self.copying.next_deadline());
    }

    pub fn finish(self) {
        assert_eq!(self.in_place.counters(), self.copying.counters());
    }
}

fn debug_strings(actions: Vec<Action>) -> Vec<String> {
    actions.iter().map(|a| format!("{a:?}")).collect()
}

/// A packet the core built itself (an ICMP error) is a valid packet; a
/// fragment it cut fits the MTU; what it sends to the tunnel goes to
/// another node's tunnel port.
fn check_built(a: &Action, cfg: &Config) {
    match a {
        Action::WriteTun(p) | Action::SendTunnel { datagram: p, .. } if is_fragment(p) => {
            assert!(p.len() <= cfg.mtu, "a fragment over the MTU");
            // Its transport checksum covers the whole datagram.
            assert_ne!(Checks::of(p).ipv4_header, Some(false), "fragment header");
        }
        Action::WriteTun(p) => {
            let mut p = p.clone();
            assert!(
                IpPacket::new_checked(&mut p).is_ok(),
                "built an invalid packet"
            );
            Checks::of(&p).assert_valid("built packet");
        }
        Action::SendTunnel { node, port, .. } => {
            assert!(*node != cfg.node_addr && *port == cfg.tunnel_port);
        }
        // A held packet dropped is named by a quote of its headers.
        Action::DropHeld(h) => assert!(!h.quote.is_empty(), "an empty quote"),
        Action::Query(_) | Action::Drop(_) => {}
    }
}

/// Packets read from n1's TUN (sent by its instance); what is sent on to
/// n2 is answered through the tunnel, what is written to the TUN is
/// answered by the instance.
pub fn tun_packet(data: &[u8]) {
    let mut cores = Lockstep::new(1);
    for r in records(data) {
        cores.advance(r.advance);
        match cores.packet(Entry::Tun, &r.bytes) {
            Some((Forward::Tunnel { node, .. }, out)) => {
                if let Some(back) = reply(&out) {
                    cores.packet(Entry::Tunnel(node), &back);
                }
            }
            Some((Forward::Tun { .. }, out)) => {
                if let Some(back) = reply(&out) {
                    cores.packet(Entry::Tun, &back);
                }
            }
            None => {}
        }
    }
    cores.finish();
}

/// Datagrams received by n2 from n1; what is written to n2's TUN is
/// answered by the local instance.
pub fn tunnel_datagram(data: &[u8]) {
    let mut cores = Lockstep::new(2);
    for r in records(data) {
        cores.advance(r.advance);
        if let Some((Forward::Tun { .. }, out)) = cores.packet(Entry::Tunnel(N1.into()), &r.bytes) {
            if let Some(back) = reply(&out) {
                cores.packet(Entry::Tun, &back);
            }
        }
    }
    cores.finish();
}
