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
//! [`ConnTrack::next_deadline`] tells when the next flow may expire: it is
//! lowered, in constant time, when a flow is inserted or its TCP state
//! changes, and recomputed exactly by [`ConnTrack::expire`]; a packet that
//! only refreshes a flow moves its deadline later and leaves it alone, so
//! it is never later than the earliest expiry, and may be earlier.
//!
//! Bounds: at most `max_flows` flows; a new flow beyond that is refused
//! with [`InsertError::TableFull`] (after one sweep of expired flows per
//! millisecond at most, so a flood of new flows cannot make every insert
//! scan the table).
//!
//! # Layout
//!
//! The flows live in a slab (`crate::slab`: a `Vec` reused through a free list);
//! `index` maps each key to the flow's slot and the key's direction, so a
//! packet costs one hash lookup and one indexed load. Keys are packed into
//! fixed-width integers (`PackedKey`: two `u128` addresses and one `u64`)
//! before hashing: three hasher writes, and equality without matching on
//! `IpAddr`. The core builds the packed key of a packet directly from its
//! fields; the [`FlowKey`] API packs on the way in.
//!
//! The keys come from packets anyone on the path can send, so the index is
//! hashed with a keyed hash: [`ahash::RandomState`], whose keys are drawn
//! from the operating system's random source (`runtime-rng`) for the
//! process, and varied per map. Without the keys an attacker cannot choose
//! tuples that collide in the table, which is what a hash-flooding attack
//! needs (a fixed-key hash such as FxHash would let anyone who can send
//! packets degrade every lookup to a linear scan).
//!
//! Invariant: `index` holds exactly the `orig` and `reply` keys of the
//! flows in `slots`, each mapped to its flow's slot; no two flows share a
//! key.

use std::collections::HashMap;
use std::net::IpAddr;

use crate::packet::proto;
use crate::slab::Slab;
use crate::time::{earliest, Millis};
use crate::wire::tcp_flags;

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

/// A [`FlowKey`] as the index stores it: addresses as integers (an IPv4
/// address in the low 32 bits), and protocol, families and ports in one
/// word, so that the mapping is one-to-one (an IPv4 address and the IPv6
/// address with the same low bits differ by their family bit).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct PackedKey {
    src: u128,
    dst: u128,
    /// `proto | src is v6 << 8 | dst is v6 << 9 | sport << 16 | dport << 32`.
    rest: u64,
}

impl PackedKey {
    fn new(k: &FlowKey) -> PackedKey {
        PackedKey::of(k.proto, k.src, k.sport, k.dst, k.dport)
    }

    /// The packed form of `FlowKey::new(proto, src, sport, dst, dport)`.
    /// The core builds a packet's key with it straight from the packet's
    /// fields: building a `FlowKey` and packing that costs a stall per
    /// packet (the packing reads the key's odd-sized `IpAddr`s back in
    /// words right after they were stored in pieces).
    #[inline(always)]
    pub(super) fn of(proto: u8, src: IpAddr, sport: u16, dst: IpAddr, dport: u16) -> PackedKey {
        fn bits(a: IpAddr) -> (u128, u64) {
            match a {
                IpAddr::V4(a) => (u128::from(u32::from(a)), 0),
                IpAddr::V6(a) => (u128::from(a), 1),
            }
        }
        let (src, src_v6) = bits(src);
        let (dst, dst_v6) = bits(dst);
        PackedKey {
            src,
            dst,
            rest: u64::from(proto)
                | src_v6 << 8
                | dst_v6 << 9
                | u64::from(sport) << 16
                | u64::from(dport) << 32,
        }
    }
}

impl From<&PackedKey> for FlowKey {
    fn from(k: &PackedKey) -> FlowKey {
        fn addr(bits: u128, v6: u64) -> IpAddr {
            match v6 {
                0 => IpAddr::V4((bits as u32).into()),
                _ => IpAddr::V6(bits.into()),
            }
        }
        FlowKey {
            proto: k.rest as u8,
            src: addr(k.src, k.rest >> 8 & 1),
            sport: (k.rest >> 16) as u16,
            dst: addr(k.dst, k.rest >> 9 & 1),
            dport: (k.rest >> 32) as u16,
        }
    }
}

impl From<&FlowKey> for PackedKey {
    fn from(k: &FlowKey) -> PackedKey {
        PackedKey::new(k)
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
            tcp_idle: Millis(300_000),
            udp_idle: Millis(30_000),
            icmp_idle: Millis(30_000),
            tcp_linger: Millis(5_000),
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
    /// The flows.
    slots: Slab<Flow>,
    index: HashMap<PackedKey, (u32, Dir), ahash::RandomState>,
    last_sweep: Option<Millis>,
    /// Never later than the earliest deadline of a flow (see the module
    /// documentation); `None` when there is no flow to expire.
    next_deadline: Option<Millis>,
}

impl ConnTrack {
    pub fn new(cfg: ConntrackConfig) -> ConnTrack {
        ConnTrack {
            cfg,
            slots: Slab::default(),
            index: HashMap::with_hasher(ahash::RandomState::new()),
            last_sweep: None,
            next_deadline: None,
        }
    }

    pub fn config(&self) -> &ConntrackConfig {
        &self.cfg
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.len() == 0
    }

    /// Every flow, in no particular order.
    pub fn flows(&self) -> impl Iterator<Item = &Flow> {
        self.slots.iter().map(|(_, f)| f)
    }

    /// When `f` expires unless a packet refreshes it: `expired` is true
    /// from then on (time never goes backwards).
    fn deadline(cfg: &ConntrackConfig, f: &Flow) -> Millis {
        if let Some(t) = f.tcp.closing_since {
            return t.saturating_add(cfg.tcp_linger);
        }
        f.last_seen.saturating_add(Self::idle(cfg, f.orig.proto))
    }

    fn idle(cfg: &ConntrackConfig, proto: u8) -> Millis {
        match proto {
            proto::TCP => cfg.tcp_idle,
            proto::UDP => cfg.udp_idle,
            _ => cfg.icmp_idle,
        }
    }

    /// The earliest time at which a flow may expire, or `None` without
    /// flows: never later than the first flow's expiry, exact after
    /// [`Self::expire`] (see the module documentation).
    pub fn next_deadline(&self) -> Option<Millis> {
        self.next_deadline
    }

    fn expired(cfg: &ConntrackConfig, f: &Flow, now: Millis) -> bool {
        if let Some(t) = f.tcp.closing_since {
            return now.saturating_sub(t) >= cfg.tcp_linger;
        }
        now.saturating_sub(f.last_seen) >= Self::idle(cfg, f.orig.proto)
    }

    fn remove_slot(&mut self, slot: u32) -> Option<Flow> {
        let f = self.slots.remove(slot)?;
        self.index.remove(&PackedKey::new(&f.orig));
        self.index.remove(&PackedKey::new(&f.reply));
        Some(f)
    }

    /// The slot of the live flow `key` belongs to, and the key's
    /// direction. An expired flow met here is removed.
    #[inline]
    fn find(&mut self, now: Millis, key: &PackedKey) -> Option<(u32, Dir)> {
        let (slot, dir) = *self.index.get(key)?;
        let f = self.slots.get(slot)?;
        if Self::expired(&self.cfg, f, now) {
            self.remove_slot(slot);
            return None;
        }
        Some((slot, dir))
    }

    /// Finds the live flow `key` belongs to, without refreshing it. An
    /// expired flow met here is removed.
    pub fn get(&mut self, now: Millis, key: &FlowKey) -> Option<(Dir, &Flow)> {
        self.get_packed(now, &PackedKey::new(key))
    }

    /// [`Self::get`] by the packed key.
    #[inline]
    pub(super) fn get_packed(&mut self, now: Millis, key: &PackedKey) -> Option<(Dir, &Flow)> {
        let (slot, dir) = self.find(now, key)?;
        Some((dir, self.slots.get(slot)?))
    }

    /// Finds the live flow `key` belongs to and records a packet on it at
    /// `now` (`tcp_flags`: the packet's TCP flags, if TCP). Returns the
    /// direction of the packet and the flow as updated.
    pub fn track(
        &mut self,
        now: Millis,
        key: &FlowKey,
        tcp_flags: Option<u8>,
    ) -> Option<(Dir, &Flow)> {
        self.track_packed(now, &PackedKey::new(key), tcp_flags)
    }

    /// [`Self::track`] by the packed key.
    #[inline]
    pub(super) fn track_packed(
        &mut self,
        now: Millis,
        key: &PackedKey,
        tcp_flags: Option<u8>,
    ) -> Option<(Dir, &Flow)> {
        let (slot, dir) = self.find(now, key)?;
        let f = self.slots.get_mut(slot)?;
        f.last_seen = now;
        if let Some(flags) = tcp_flags {
            let closing = f.tcp.closing_since;
            if flags & tcp_flags::SYN != 0
                && flags & tcp_flags::ACK == 0
                && f.tcp.closing_since.is_some()
            {
                f.tcp = TcpState::default();
            }
            if flags & tcp_flags::FIN != 0 {
                match dir {
                    Dir::Orig => f.tcp.fin_orig = true,
                    Dir::Reply => f.tcp.fin_reply = true,
                }
            }
            if f.tcp.closing_since.is_none()
                && (flags & tcp_flags::RST != 0 || (f.tcp.fin_orig && f.tcp.fin_reply))
            {
                f.tcp.closing_since = Some(now);
            }
            // Closed or reopened: the deadline may have moved earlier.
            if f.tcp.closing_since != closing {
                let d = Self::deadline(&self.cfg, f);
                self.next_deadline = earliest(self.next_deadline, Some(d));
            }
        }
        Some((dir, f))
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
            if self.find(now, &PackedKey::new(k)).is_some() {
                return Err(InsertError::Collision);
            }
        }
        if orig == reply {
            return Err(InsertError::Collision);
        }
        if self.slots.len() >= self.cfg.max_flows {
            if self.last_sweep.is_none_or(|t| now > t) {
                self.last_sweep = Some(now);
                self.expire(now);
            }
            if self.slots.len() >= self.cfg.max_flows {
                return Err(InsertError::TableFull);
            }
        }
        let f = Flow {
            orig,
            reply,
            kind,
            created: now,
            last_seen: now,
            tcp: TcpState::default(),
        };
        let slot = self.slots.insert(f).ok_or(InsertError::TableFull)?;
        self.index.insert(PackedKey::new(&orig), (slot, Dir::Orig));
        self.index
            .insert(PackedKey::new(&reply), (slot, Dir::Reply));
        self.next_deadline = earliest(self.next_deadline, Some(Self::deadline(&self.cfg, &f)));
        // Record the opening packet's flags (a RST-only flow closes at once).
        Ok(self
            .track(now, &orig, tcp_flags)
            .map(|(_, f)| *f)
            .unwrap_or(f))
    }

    /// Removes every expired flow; returns how many. Recomputes
    /// [`Self::next_deadline`] from the flows left.
    pub fn expire(&mut self, now: Millis) -> usize {
        let cfg = self.cfg;
        let n = self.remove_where(|f| Self::expired(&cfg, f, now));
        self.next_deadline = self.flows().map(|f| Self::deadline(&cfg, f)).min();
        n
    }

    /// Removes the flows `dead` selects; returns how many.
    fn remove_where(&mut self, dead: impl Fn(&Flow) -> bool) -> usize {
        let dead = self.slots.select(dead);
        for slot in &dead {
            self.remove_slot(*slot);
        }
        dead.len()
    }

    /// Removes the translated flows to the instance at `ns` (rescheduled or
    /// gone); returns how many.
    pub fn remove_instance(&mut self, ns: IpAddr) -> usize {
        self.remove_where(
            |f| matches!(f.kind, FlowKind::Translated { instance_ns, .. } if instance_ns == ns),
        )
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
            tcp_idle: Millis(1000),
            udp_idle: Millis(100),
            icmp_idle: Millis(50),
            tcp_linger: Millis(10),
        })
    }

    #[test]
    fn both_directions_and_full_tuple() {
        let mut t = small();
        let (o, r, k) = keys(proto::UDP, 5000);
        t.insert(Millis(0), o, r, k, None).unwrap();
        assert_eq!(t.track(Millis(1), &o, None).unwrap().0, Dir::Orig);
        assert_eq!(t.track(Millis(2), &r, None).unwrap().0, Dir::Reply);
        // Same ports, other protocol or other address: no match.
        let mut other = r;
        other.proto = proto::TCP;
        assert!(t.get(Millis(2), &other).is_none());
        let mut other = r;
        other.dst = ip("10.30.0.3");
        assert!(t.get(Millis(2), &other).is_none());
        assert!(t.get(Millis(2), &o.reversed()).is_none());
    }

    #[test]
    fn idle_expiry_is_refreshed_by_traffic() {
        let mut t = small();
        let (o, r, k) = keys(proto::UDP, 5000);
        t.insert(Millis(0), o, r, k, None).unwrap();
        assert!(t.track(Millis(99), &r, None).is_some());
        assert!(t.track(Millis(198), &o, None).is_some());
        assert_eq!(t.expire(Millis(297)), 0);
        assert!(t.get(Millis(298), &o).is_none());
        assert!(t.is_empty(), "lazily removed");
    }

    #[test]
    fn tcp_fin_both_sides_then_linger() {
        let mut t = small();
        let (o, r, k) = keys(proto::TCP, 5000);
        t.insert(Millis(0), o, r, k, Some(tcp_flags::SYN)).unwrap();
        t.track(Millis(1), &o, Some(tcp_flags::FIN | tcp_flags::ACK))
            .unwrap();
        assert_eq!(t.get(Millis(500), &o).unwrap().1.tcp.closing_since, None);
        t.track(Millis(500), &r, Some(tcp_flags::FIN | tcp_flags::ACK))
            .unwrap();
        t.track(Millis(505), &o, Some(tcp_flags::ACK)).unwrap();
        assert_eq!(t.expire(Millis(509)), 0);
        assert_eq!(t.expire(Millis(510)), 1);
    }

    #[test]
    fn tcp_rst_and_reuse() {
        let mut t = small();
        let (o, r, k) = keys(proto::TCP, 5000);
        t.insert(Millis(0), o, r, k, Some(tcp_flags::SYN)).unwrap();
        t.track(Millis(3), &r, Some(tcp_flags::RST)).unwrap();
        // A new SYN on the same tuple during the linger reopens the flow.
        let (_, f) = t.track(Millis(5), &o, Some(tcp_flags::SYN)).unwrap();
        assert_eq!(f.tcp, TcpState::default());
        assert!(t.get(Millis(100), &o).is_some());
        t.track(Millis(100), &o, Some(tcp_flags::RST | tcp_flags::ACK))
            .unwrap();
        assert!(t.get(Millis(110), &o).is_none());
    }

    /// The module invariant, checked from the outside in.
    fn check_invariant(t: &ConnTrack) {
        t.slots.check_invariant();
        assert_eq!(t.index.len(), 2 * t.len());
        for (slot, f) in t.slots.iter() {
            assert_eq!(t.index[&PackedKey::new(&f.orig)], (slot, Dir::Orig));
            assert_eq!(t.index[&PackedKey::new(&f.reply)], (slot, Dir::Reply));
        }
        // The next deadline is never later than the first expiry.
        if let Some(first) = t.flows().map(|f| ConnTrack::deadline(&t.cfg, f)).min() {
            assert!(t.next_deadline.is_some_and(|d| d <= first));
        }
    }

    #[test]
    fn slots_are_reused_and_the_index_stays_exact() {
        let mut t = ConnTrack::new(ConntrackConfig {
            max_flows: 8,
            ..small().cfg
        });
        for round in 0..20u16 {
            let now = Millis(u64::from(round) * 1000);
            for cport in 0..8 {
                let (o, r, k) = keys(proto::UDP, round * 100 + cport);
                t.insert(now, o, r, k, None).unwrap();
                check_invariant(&t);
            }
            // Every other one removed by a lookup after its expiry, the
            // rest by the sweep the next round's first insert makes.
            for cport in (0..8).step_by(2) {
                let (o, _, _) = keys(proto::UDP, round * 100 + cport);
                assert!(t.get(now + Millis(500), &o).is_none());
            }
            check_invariant(&t);
            assert_eq!(t.len(), 4);
        }
        assert_eq!(
            t.slots.slots_allocated(),
            8,
            "slots are reused, never past max_flows"
        );
        assert_eq!(t.remove_instance(ip("10.18.1.5")), 4);
        check_invariant(&t);
        assert!(t.is_empty());
    }

    #[test]
    fn packed_keys_unpack_to_what_they_pack() {
        for (s, d) in [
            ("10.18.0.2", "10.30.0.9"),
            ("fc00:a::2", "fdff::1"),
            ("::a12:2", "::"),
        ] {
            let k = FlowKey::new(proto::TCP, ip(s), 65535, ip(d), 1);
            assert_eq!(FlowKey::from(&PackedKey::from(&k)), k);
            assert_eq!(
                PackedKey::from(&k),
                PackedKey::of(k.proto, k.src, 65535, k.dst, 1)
            );
        }
    }

    #[test]
    fn families_do_not_alias() {
        // The IPv6 addresses whose low 32 bits are the IPv4 ones.
        let mut t = small();
        let (o, r, k) = keys(proto::UDP, 7);
        t.insert(Millis(0), o, r, k, None).unwrap();
        let mut o6 = o;
        o6.src = ip("::a12:2");
        o6.dst = ip("::a1e:9");
        assert_ne!(PackedKey::new(&o), PackedKey::new(&o6));
        assert!(t.get(Millis(0), &o6).is_none());
        let mut mixed = o;
        mixed.dst = ip("::a1e:9");
        assert!(t.get(Millis(0), &mixed).is_none());
        assert_eq!(t.get(Millis(0), &o).unwrap().0, Dir::Orig);
    }

    #[test]
    fn table_full_and_collision() {
        let mut t = small();
        let (o1, r1, k) = keys(proto::UDP, 1);
        let (o2, r2, _) = keys(proto::UDP, 2);
        let (o3, r3, _) = keys(proto::UDP, 3);
        t.insert(Millis(0), o1, r1, k, None).unwrap();
        assert_eq!(
            t.insert(Millis(0), o1, r3, k, None),
            Err(InsertError::Collision)
        );
        let mut o1b = o1;
        o1b.dst = ip("10.30.0.10");
        assert_eq!(
            t.insert(Millis(0), o1b, r1, k, None),
            Err(InsertError::Collision)
        );
        t.insert(Millis(0), o2, r2, k, None).unwrap();
        assert_eq!(
            t.insert(Millis(1), o3, r3, k, None),
            Err(InsertError::TableFull)
        );
        // Once the others have expired there is room again.
        assert!(t.insert(Millis(100), o3, r3, k, None).is_ok());
        assert_eq!(t.len(), 1);
        assert_eq!(t.remove_instance(ip("10.18.1.5")), 1);
        assert!(t.is_empty());
    }
}
