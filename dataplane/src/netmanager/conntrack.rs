//! The conversion table: one entry per flow, found from either direction by
//! the full 5-tuple (protocol, source address and port, destination address
//! and port) — never by port alone, unlike Oakestra's.
//!
//! Each [`Flow`] has two keys, each indexed:
//!
//! - `orig`: the tuple of the packets that opened the flow, as the core
//!   first saw them (for a local client: `proto, client ns-IP:port →
//!   service IP:port`; for a remote client: the tuple as it came out of
//!   the tunnel);
//! - `reply`: the tuple of the answers as the core will see them
//!   (`proto, instance ns-IP:port → client-side address:port`).
//!
//! For ICMP echo the identifier stands for both ports.
//!
//! Lifetime: a flow is refreshed by every packet of either direction.
//! TCP flows end [`ConntrackConfig::tcp_linger`] after a RST, or after a FIN
//! has been seen from both sides; otherwise any flow ends after its
//! protocol's idle timeout. Expired flows are removed lazily when met by a
//! lookup, and in bulk by [`ConnTrack::expire`]. A SYN (without ACK) on a
//! closing TCP flow reopens it: the same tuple is being reused.
//!
//! Bounds: at most `max_flows` flows; a new flow beyond that is refused
//! with [`InsertError::TableFull`] (after one sweep of expired flows per
//! millisecond at most, so a flood of new flows cannot make every insert
//! scan the table).
//!
//! Invariant: `index` holds exactly the `orig` and `reply` keys of the
//! flows in `flows`, and no two flows share a key.

use std::collections::HashMap;
use std::net::IpAddr;

use super::cache::Millis;
use super::packet::proto;

/// A directed 5-tuple.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowKey {
    pub proto: u8,
    pub src: IpAddr,
    pub sport: u16,
    pub dst: IpAddr,
    pub dport: u16,
}

impl FlowKey {
    pub fn new(proto: u8, src: IpAddr, sport: u16, dst: IpAddr, dport: u16) -> FlowKey {
        FlowKey {
            proto,
            src,
            sport,
            dst,
            dport,
        }
    }
    /// The tuple of the packets going the other way.
    pub fn reversed(&self) -> FlowKey {
        FlowKey {
            proto: self.proto,
            src: self.dst,
            sport: self.dport,
            dst: self.src,
            dport: self.sport,
        }
    }
}

/// Which way a packet goes within its flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    /// Same way as the packet that opened the flow.
    Orig,
    /// The answer.
    Reply,
}

/// Where a translated flow's packets go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextHop {
    /// The instance is on this node: back into the TUN.
    Local,
    /// The instance is on the node with this underlay address: the tunnel.
    Node(IpAddr),
}

/// What the core does with a flow's packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowKind {
    /// A local client dialled a service IP. Original-direction packets are
    /// rewritten from `orig` to (`client_src` → `instance_ns`); replies
    /// from `instance_ns` to `client_src` are rewritten back to
    /// (`service` → `client_ns`).
    Translated {
        client_ns: IpAddr,
        client_src: IpAddr,
        service: IpAddr,
        instance_ns: IpAddr,
        next_hop: NextHop,
    },
    /// A remote node's client reached a local instance through the tunnel.
    /// Nothing is rewritten here; replies go back raw to `peer`, the node
    /// that did the translation and holds the `Translated` flow.
    Passthrough { peer: IpAddr },
}

/// TCP teardown tracking.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TcpState {
    pub fin_orig: bool,
    pub fin_reply: bool,
    /// Set on RST, or when both FINs have been seen.
    pub closing_since: Option<Millis>,
}

/// One flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flow {
    pub orig: FlowKey,
    pub reply: FlowKey,
    pub kind: FlowKind,
    pub created: Millis,
    pub last_seen: Millis,
    pub tcp: TcpState,
}

/// Timeouts and bounds of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConntrackConfig {
    pub max_flows: usize,
    pub tcp_idle: Millis,
    pub udp_idle: Millis,
    /// ICMP echo and anything else.
    pub icmp_idle: Millis,
    pub tcp_linger: Millis,
}

impl Default for ConntrackConfig {
    fn default() -> Self {
        ConntrackConfig {
            max_flows: 65_536,
            tcp_idle: 300_000,
            udp_idle: 30_000,
            icmp_idle: 30_000,
            tcp_linger: 5_000,
        }
    }
}

/// Why a flow was not inserted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InsertError {
    #[error("conversion table full")]
    TableFull,
    /// One of the flow's keys belongs to a live flow: e.g. a client used
    /// the same source port towards two service IPs that chose the same
    /// instance, so both would look identical to the instance.
    #[error("tuple already in use by another flow")]
    Collision,
}

/// See the module documentation.
#[derive(Debug)]
pub struct ConnTrack {
    cfg: ConntrackConfig,
    flows: HashMap<u64, Flow>,
    index: HashMap<FlowKey, (u64, Dir)>,
    next_id: u64,
    last_sweep: Option<Millis>,
}

const TCP_FIN: u8 = 0x01;
const TCP_SYN: u8 = 0x02;
const TCP_RST: u8 = 0x04;
const TCP_ACK: u8 = 0x10;

impl ConnTrack {
    pub fn new(cfg: ConntrackConfig) -> ConnTrack {
        ConnTrack {
            cfg,
            flows: HashMap::new(),
            index: HashMap::new(),
            next_id: 0,
            last_sweep: None,
        }
    }

    pub fn config(&self) -> &ConntrackConfig {
        &self.cfg
    }

    pub fn len(&self) -> usize {
        self.flows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }

    /// Every flow, in no particular order.
    pub fn flows(&self) -> impl Iterator<Item = &Flow> {
        self.flows.values()
    }

    fn expired(cfg: &ConntrackConfig, f: &Flow, now: Millis) -> bool {
        if let Some(t) = f.tcp.closing_since {
            return now.saturating_sub(t) >= cfg.tcp_linger;
        }
        let idle = match f.orig.proto {
            proto::TCP => cfg.tcp_idle,
            proto::UDP => cfg.udp_idle,
            _ => cfg.icmp_idle,
        };
        now.saturating_sub(f.last_seen) >= idle
    }

    fn remove_id(&mut self, id: u64) -> Option<Flow> {
        let f = self.flows.remove(&id)?;
        self.index.remove(&f.orig);
        self.index.remove(&f.reply);
        Some(f)
    }

    /// Finds the live flow `key` belongs to, without refreshing it. An
    /// expired flow met here is removed.
    pub fn get(&mut self, now: Millis, key: &FlowKey) -> Option<(Dir, Flow)> {
        let (id, dir) = *self.index.get(key)?;
        let f = *self.flows.get(&id)?;
        if Self::expired(&self.cfg, &f, now) {
            self.remove_id(id);
            return None;
        }
        Some((dir, f))
    }

    /// Finds the live flow `key` belongs to and records a packet on it at
    /// `now` (`tcp_flags`: the packet's TCP flags, if TCP). Returns the
    /// direction of the packet and the flow as updated.
    pub fn track(
        &mut self,
        now: Millis,
        key: &FlowKey,
        tcp_flags: Option<u8>,
    ) -> Option<(Dir, Flow)> {
        let (id, dir) = *self.index.get(key)?;
        let cfg = self.cfg;
        let f = self.flows.get_mut(&id)?;
        if Self::expired(&cfg, f, now) {
            self.remove_id(id);
            return None;
        }
        f.last_seen = now;
        if let Some(flags) = tcp_flags {
            if flags & TCP_SYN != 0 && flags & TCP_ACK == 0 && f.tcp.closing_since.is_some() {
                f.tcp = TcpState::default();
            }
            if flags & TCP_FIN != 0 {
                match dir {
                    Dir::Orig => f.tcp.fin_orig = true,
                    Dir::Reply => f.tcp.fin_reply = true,
                }
            }
            if f.tcp.closing_since.is_none()
                && (flags & TCP_RST != 0 || (f.tcp.fin_orig && f.tcp.fin_reply))
            {
                f.tcp.closing_since = Some(now);
            }
        }
        Some((dir, *f))
    }

    /// Inserts a new flow with keys `orig` and `reply`, seen first at
    /// `now` (the opening packet is recorded: pass its TCP flags).
    pub fn insert(
        &mut self,
        now: Millis,
        orig: FlowKey,
        reply: FlowKey,
        kind: FlowKind,
        tcp_flags: Option<u8>,
    ) -> Result<Flow, InsertError> {
        for k in [&orig, &reply] {
            if self.get(now, k).is_some() {
                return Err(InsertError::Collision);
            }
        }
        if orig == reply {
            return Err(InsertError::Collision);
        }
        if self.flows.len() >= self.cfg.max_flows {
            if self.last_sweep.is_none_or(|t| now > t) {
                self.last_sweep = Some(now);
                self.expire(now);
            }
            if self.flows.len() >= self.cfg.max_flows {
                return Err(InsertError::TableFull);
            }
        }
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        let f = Flow {
            orig,
            reply,
            kind,
            created: now,
            last_seen: now,
            tcp: TcpState::default(),
        };
        self.flows.insert(id, f);
        self.index.insert(orig, (id, Dir::Orig));
        self.index.insert(reply, (id, Dir::Reply));
        // Record the opening packet's flags (a RST-only flow closes at once).
        Ok(self
            .track(now, &orig, tcp_flags)
            .map(|(_, f)| f)
            .unwrap_or(f))
    }

    /// Removes every expired flow; returns how many.
    pub fn expire(&mut self, now: Millis) -> usize {
        let cfg = self.cfg;
        let dead: Vec<u64> = self
            .flows
            .iter()
            .filter(|(_, f)| Self::expired(&cfg, f, now))
            .map(|(id, _)| *id)
            .collect();
        for id in &dead {
            self.remove_id(*id);
        }
        dead.len()
    }

    /// Removes the translated flows to the instance at `ns` (rescheduled or
    /// gone); returns how many.
    pub fn remove_instance(&mut self, ns: IpAddr) -> usize {
        let dead: Vec<u64> = self
            .flows
            .iter()
            .filter(|(_, f)| matches!(f.kind, FlowKind::Translated { instance_ns, .. } if instance_ns == ns))
            .map(|(id, _)| *id)
            .collect();
        for id in &dead {
            self.remove_id(*id);
        }
        dead.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn keys(proto: u8, cport: u16) -> (FlowKey, FlowKey, FlowKind) {
        let orig = FlowKey::new(proto, ip("10.18.0.2"), cport, ip("10.30.0.9"), 80);
        let reply = FlowKey::new(proto, ip("10.18.1.5"), 80, ip("10.30.0.2"), cport);
        let kind = FlowKind::Translated {
            client_ns: ip("10.18.0.2"),
            client_src: ip("10.30.0.2"),
            service: ip("10.30.0.9"),
            instance_ns: ip("10.18.1.5"),
            next_hop: NextHop::Local,
        };
        (orig, reply, kind)
    }

    fn small() -> ConnTrack {
        ConnTrack::new(ConntrackConfig {
            max_flows: 2,
            tcp_idle: 1000,
            udp_idle: 100,
            icmp_idle: 50,
            tcp_linger: 10,
        })
    }

    #[test]
    fn both_directions_and_full_tuple() {
        let mut t = small();
        let (o, r, k) = keys(proto::UDP, 5000);
        t.insert(0, o, r, k, None).unwrap();
        assert_eq!(t.track(1, &o, None).unwrap().0, Dir::Orig);
        assert_eq!(t.track(2, &r, None).unwrap().0, Dir::Reply);
        // Same ports, other protocol or other address: no match.
        let mut other = r;
        other.proto = proto::TCP;
        assert!(t.get(2, &other).is_none());
        let mut other = r;
        other.dst = ip("10.30.0.3");
        assert!(t.get(2, &other).is_none());
        assert!(t.get(2, &o.reversed()).is_none());
    }

    #[test]
    fn idle_expiry_is_refreshed_by_traffic() {
        let mut t = small();
        let (o, r, k) = keys(proto::UDP, 5000);
        t.insert(0, o, r, k, None).unwrap();
        assert!(t.track(99, &r, None).is_some());
        assert!(t.track(198, &o, None).is_some());
        assert_eq!(t.expire(297), 0);
        assert!(t.get(298, &o).is_none());
        assert!(t.is_empty(), "lazily removed");
    }

    #[test]
    fn tcp_fin_both_sides_then_linger() {
        let mut t = small();
        let (o, r, k) = keys(proto::TCP, 5000);
        t.insert(0, o, r, k, Some(TCP_SYN)).unwrap();
        t.track(1, &o, Some(TCP_FIN | TCP_ACK)).unwrap();
        assert_eq!(t.get(500, &o).unwrap().1.tcp.closing_since, None);
        t.track(500, &r, Some(TCP_FIN | TCP_ACK)).unwrap();
        t.track(505, &o, Some(TCP_ACK)).unwrap();
        assert_eq!(t.expire(509), 0);
        assert_eq!(t.expire(510), 1);
    }

    #[test]
    fn tcp_rst_and_reuse() {
        let mut t = small();
        let (o, r, k) = keys(proto::TCP, 5000);
        t.insert(0, o, r, k, Some(TCP_SYN)).unwrap();
        t.track(3, &r, Some(TCP_RST)).unwrap();
        // A new SYN on the same tuple during the linger reopens the flow.
        let (_, f) = t.track(5, &o, Some(TCP_SYN)).unwrap();
        assert_eq!(f.tcp, TcpState::default());
        assert!(t.get(100, &o).is_some());
        t.track(100, &o, Some(TCP_RST | TCP_ACK)).unwrap();
        assert!(t.get(110, &o).is_none());
    }

    #[test]
    fn table_full_and_collision() {
        let mut t = small();
        let (o1, r1, k) = keys(proto::UDP, 1);
        let (o2, r2, _) = keys(proto::UDP, 2);
        let (o3, r3, _) = keys(proto::UDP, 3);
        t.insert(0, o1, r1, k, None).unwrap();
        assert_eq!(t.insert(0, o1, r3, k, None), Err(InsertError::Collision));
        let mut o1b = o1;
        o1b.dst = ip("10.30.0.10");
        assert_eq!(t.insert(0, o1b, r1, k, None), Err(InsertError::Collision));
        t.insert(0, o2, r2, k, None).unwrap();
        assert_eq!(t.insert(1, o3, r3, k, None), Err(InsertError::TableFull));
        // Once the others have expired there is room again.
        assert!(t.insert(100, o3, r3, k, None).is_ok());
        assert_eq!(t.len(), 1);
        assert_eq!(t.remove_instance(ip("10.18.1.5")), 1);
        assert!(t.is_empty());
    }
}
