//! The Forward table: one [`Entry`] per flow, found from the request side
//! by its full client tuple and from the reply side by its internal port.
//!
//! # Layout
//!
//! The entries live in a slab (`crate::slab`: a `Vec` reused through a free list),
//! behind two indexes:
//!
//! - `requests`: [`RequestKey`] (protocol, family, client address, client
//!   port, exposed port) → slot. The key is packed into one `u128` and one
//!   `u64` before hashing, and hashed with [`ahash::RandomState`] (keys
//!   drawn from the OS for the process, varied per map): clients choose
//!   these keys, so the hash must be keyed against hash flooding, as in
//!   [`crate::netmanager::conntrack`].
//! - `replies`: per port space (protocol × family, six of them; an ICMP
//!   echo identifier is a port here), an array indexed by internal port
//!   holding `slot + 1` (0: the port is free). The reply key is 16 bits wide, so a direct table is a perfect hash:
//!   one indexed load, nothing to flood, and "is this port free?" for the
//!   NAPT allocator is the same load. The six arrays take 1.5 MiB of
//!   address space, allocated zeroed: pages that are never touched are
//!   never backed by memory.
//!
//! # NAPT
//!
//! A new flow's internal port is the client's own port when no other flow
//! of the same port space uses it. Otherwise it is the first free port of
//! the configured range at or above the space's cursor (wrapping); the
//! cursor then moves past it, so ports are handed out in turn rather than
//! the lowest free one over and over (a port just released is not reused
//! at once, and the choice depends only on the table's history). A count
//! of the range's ports in use per space makes an exhausted range a
//! constant-time refusal.
//!
//! # Lifetime
//!
//! Every packet of either direction refreshes its entry. A TCP entry is
//! *closed* by a RST from either side, or once both sides have sent a FIN;
//! it is then removed `tcp_closing` after that moment whatever follows. A
//! FIN from one side only makes it *closing* (half-closed), still under
//! the established idle timeout. A SYN without ACK from the client on a
//! closing or closed entry reopens it (the client reuses the port for a
//! new connection): its TCP state is reset, its internal port kept. UDP
//! and ICMP echo entries end after `udp` idle.
//!
//! [`Table::next_deadline`] is never later than the earliest expiry: it is
//! lowered, in constant time, when an entry is inserted or its TCP state
//! closes or reopens, and recomputed exactly by [`Table::expire`] (a
//! packet that only refreshes an entry moves its deadline later).
//!
//! Invariant: `requests` holds exactly the request keys of the entries in
//! `slots`, each mapped to its slot; `replies[s][p]` is `slot + 1` exactly
//! for the entries of space `s` whose internal port is `p`, and 0
//! elsewhere (so no two entries of a space share an internal port, and
//! none uses port 0); `napt_used[s]` is the number of entries of space `s`
//! whose internal port lies in the NAPT range.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;

use super::proto::Proto;
use crate::slab::Slab;
use crate::time::{earliest, Millis};
use crate::wire::tcp_flags::{ACK, FIN, RST, SYN};

/// Port spaces: TCP/IPv4, TCP/IPv6, UDP/IPv4, UDP/IPv6, ICMP echo
/// identifiers over IPv4 and IPv6.
pub(super) const SPACES: usize = 6;
const PORTS: usize = 1 << 16;

/// The port space of a protocol and family (see [`SPACES`]).
#[inline(always)]
pub(super) fn space(proto: Proto, v6: bool) -> usize {
    (proto as usize) << 1 | usize::from(v6)
}

/// The request side's key, packed: the client address as an integer (an
/// IPv4 address in the low 32 bits), and protocol, family and both ports in
/// one word, so that the packing is one-to-one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct RequestKey {
    client: u128,
    /// `proto | v6 << 8 | client port << 16 | exposed port << 32`.
    rest: u64,
}

impl RequestKey {
    #[inline(always)]
    pub(super) fn new(proto: Proto, client: IpAddr, client_port: u16, exposed_port: u16) -> Self {
        let (bits, v6) = match client {
            IpAddr::V4(a) => (u128::from(u32::from(a)), 0),
            IpAddr::V6(a) => (u128::from(a), 1),
        };
        RequestKey {
            client: bits,
            rest: proto as u64
                | v6 << 8
                | u64::from(client_port) << 16
                | u64::from(exposed_port) << 32,
        }
    }
}

/// TCP teardown tracking.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) struct TcpState {
    pub fin_client: bool,
    pub fin_service: bool,
    /// When a RST was seen, or the second FIN.
    pub closed_at: Option<Millis>,
}

/// One flow: a Forward table row `[client ip, client port, service ip,
/// service port, exposed port]` and the internal port it was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Entry {
    pub proto: Proto,
    pub client_ip: IpAddr,
    pub client_port: u16,
    pub service_ip: IpAddr,
    pub service_port: u16,
    pub exposed_port: u16,
    pub internal_port: u16,
    pub last_seen: Millis,
    pub tcp: TcpState,
}

impl Entry {
    pub fn is_ipv6(&self) -> bool {
        self.client_ip.is_ipv6()
    }

    pub fn request_key(&self) -> RequestKey {
        RequestKey::new(
            self.proto,
            self.client_ip,
            self.client_port,
            self.exposed_port,
        )
    }

    /// "open", "closing" (one FIN seen) or "closed" (RST, or both FINs).
    pub fn state(&self) -> &'static str {
        if self.tcp.closed_at.is_some() {
            "closed"
        } else if self.tcp.fin_client || self.tcp.fin_service {
            "closing"
        } else {
            "open"
        }
    }

    /// Records a packet at `now`; `flags`: its TCP flags if TCP. True if
    /// the entry closed or reopened (its deadline may have moved earlier).
    #[inline]
    pub fn track(&mut self, now: Millis, flags: Option<u8>, from_client: bool) -> bool {
        self.last_seen = now;
        let Some(f) = flags else { return false };
        let closed_at = self.tcp.closed_at;
        if from_client && f & SYN != 0 && f & ACK == 0 && self.tcp != TcpState::default() {
            self.tcp = TcpState::default();
        }
        if f & FIN != 0 {
            if from_client {
                self.tcp.fin_client = true;
            } else {
                self.tcp.fin_service = true;
            }
        }
        if self.tcp.closed_at.is_none()
            && (f & RST != 0 || (self.tcp.fin_client && self.tcp.fin_service))
        {
            self.tcp.closed_at = Some(now);
        }
        self.tcp.closed_at != closed_at
    }
}

/// How long entries live (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Timeouts {
    pub tcp_established: Millis,
    pub tcp_closing: Millis,
    pub udp: Millis,
}

impl Timeouts {
    fn idle(&self, proto: Proto) -> Millis {
        match proto {
            Proto::Tcp => self.tcp_established,
            Proto::Udp | Proto::Icmp => self.udp,
        }
    }

    /// When `e` times out unless a packet refreshes it: [`Self::expired`]
    /// is true from then on (time never goes backwards).
    pub fn deadline(&self, e: &Entry) -> Millis {
        match e.tcp.closed_at {
            Some(t) => t.saturating_add(self.tcp_closing),
            None => e.last_seen.saturating_add(self.idle(e.proto)),
        }
    }

    /// True once `e` has timed out at `now`.
    #[inline]
    pub fn expired(&self, e: &Entry, now: Millis) -> bool {
        match e.tcp.closed_at {
            Some(t) => now.saturating_sub(t) >= self.tcp_closing,
            None => now.saturating_sub(e.last_seen) >= self.idle(e.proto),
        }
    }
}

/// Why a flow was not inserted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum InsertError {
    TableFull,
    PortsExhausted,
}

/// What a new flow is made of (its internal port is chosen on insert).
#[derive(Debug, Clone, Copy)]
pub(super) struct NewFlow {
    pub proto: Proto,
    pub client_ip: IpAddr,
    pub client_port: u16,
    pub service_ip: IpAddr,
    pub service_port: u16,
    pub exposed_port: u16,
}

/// See the module documentation.
pub(super) struct Table {
    timeouts: Timeouts,
    max_flows: usize,
    /// The NAPT range, inclusive; empty when `napt.0 > napt.1`.
    napt: (u16, u16),
    slots: Slab<Entry>,
    requests: HashMap<RequestKey, u32, ahash::RandomState>,
    replies: [Box<[u32; PORTS]>; SPACES],
    /// Per space: where the next NAPT scan starts.
    cursor: [u16; SPACES],
    /// Per space: entries whose internal port is in the NAPT range.
    napt_used: [u32; SPACES],
    last_sweep: Option<Millis>,
    /// Never later than the earliest deadline of an entry (see the module
    /// documentation); `None` without entries to expire.
    next_deadline: Option<Millis>,
}

impl fmt::Debug for Table {
    // The reply arrays are 256 Ki entries each: summarised, not printed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Table")
            .field("timeouts", &self.timeouts)
            .field("max_flows", &self.max_flows)
            .field("napt", &self.napt)
            .field("live", &self.slots.len())
            .field("slots", &self.slots.slots_allocated())
            .field("cursor", &self.cursor)
            .field("napt_used", &self.napt_used)
            .finish_non_exhaustive()
    }
}

fn zeroed_ports() -> Box<[u32; PORTS]> {
    // `vec!` of zeroes allocates zeroed memory (no page is written); the
    // conversion cannot fail, the length is PORTS.
    match vec![0u32; PORTS].into_boxed_slice().try_into() {
        Ok(b) => b,
        Err(_) => unreachable!("length is PORTS"),
    }
}

impl Table {
    pub fn new(timeouts: Timeouts, max_flows: usize, napt: (u16, u16)) -> Table {
        Table {
            timeouts,
            max_flows,
            napt,
            slots: Slab::default(),
            requests: HashMap::with_hasher(ahash::RandomState::new()),
            replies: std::array::from_fn(|_| zeroed_ports()),
            cursor: [napt.0; SPACES],
            napt_used: [0; SPACES],
            last_sweep: None,
            next_deadline: None,
        }
    }

    /// The earliest time at which an entry may time out, or `None`: never
    /// later than the first expiry, exact after [`Self::expire`].
    pub fn next_deadline(&self) -> Option<Millis> {
        self.next_deadline
    }

    /// Lowers the next deadline to `e`'s.
    fn note_deadline(&mut self, e: &Entry) {
        self.next_deadline = earliest(self.next_deadline, Some(self.timeouts.deadline(e)));
    }

    pub fn timeouts(&self) -> &Timeouts {
        &self.timeouts
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_full(&self) -> bool {
        self.slots.len() >= self.max_flows
    }

    /// True at most once per millisecond: whether a full table may sweep
    /// its expired entries before refusing a new flow (so a flood of new
    /// flows cannot make every one of them scan the table).
    pub fn may_sweep(&mut self, now: Millis) -> bool {
        if self.last_sweep.is_none_or(|t| now > t) {
            self.last_sweep = Some(now);
            true
        } else {
            false
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = &Entry> {
        self.slots.iter().map(|(_, e)| e)
    }

    #[inline(always)]
    pub fn get(&self, slot: u32) -> Option<&Entry> {
        self.slots.get(slot)
    }

    /// The slot of the entry of `space` with internal port `port`.
    #[inline(always)]
    pub fn reply_slot(&self, space: usize, port: u16) -> Option<u32> {
        let s = self.replies[space][usize::from(port)];
        s.checked_sub(1)
    }

    /// The slot of the entry with request key `key`.
    #[inline(always)]
    pub fn request_slot(&self, key: &RequestKey) -> Option<u32> {
        self.requests.get(key).copied()
    }

    /// Records a packet on the entry in `slot` (see [`Entry::track`]) and
    /// returns it; if the entry had timed out, removes it instead and
    /// returns `Err` with it.
    #[inline(always)]
    pub fn touch(
        &mut self,
        now: Millis,
        slot: u32,
        flags: Option<u8>,
        from_client: bool,
    ) -> Result<&Entry, Option<Entry>> {
        let e = self.get(slot).ok_or(None)?;
        if self.timeouts.expired(e, now) {
            return Err(self.remove(slot));
        }
        let e = self.slots.get_mut(slot).ok_or(None)?;
        if e.track(now, flags, from_client) {
            self.next_deadline = earliest(self.next_deadline, Some(self.timeouts.deadline(e)));
        }
        Ok(e)
    }

    fn in_napt(&self, port: u16) -> bool {
        (self.napt.0..=self.napt.1).contains(&port)
    }

    /// The internal port for a new flow of `space` from `client_port`.
    fn alloc_port(&mut self, space: usize, client_port: u16) -> Option<u16> {
        let used = &self.replies[space];
        if client_port != 0 && used[usize::from(client_port)] == 0 {
            return Some(client_port);
        }
        let (lo, hi) = self.napt;
        if lo > hi {
            return None;
        }
        let size = u32::from(hi - lo) + 1;
        if self.napt_used[space] >= size {
            return None;
        }
        let mut p = self.cursor[space].clamp(lo, hi);
        for _ in 0..size {
            let candidate = p;
            p = if p == hi { lo } else { p + 1 };
            if candidate != 0 && used[usize::from(candidate)] == 0 {
                self.cursor[space] = p;
                return Some(candidate);
            }
        }
        None
    }

    /// Inserts a flow seen first at `now`, giving it an internal port.
    /// The caller has checked that no entry has its request key, and
    /// records the opening packet on it afterwards.
    pub fn insert(&mut self, now: Millis, f: NewFlow) -> Result<u32, InsertError> {
        if self.is_full() {
            return Err(InsertError::TableFull);
        }
        let v6 = f.client_ip.is_ipv6();
        let sp = space(f.proto, v6);
        let port = self
            .alloc_port(sp, f.client_port)
            .ok_or(InsertError::PortsExhausted)?;
        let e = Entry {
            proto: f.proto,
            client_ip: f.client_ip,
            client_port: f.client_port,
            service_ip: f.service_ip,
            service_port: f.service_port,
            exposed_port: f.exposed_port,
            internal_port: port,
            last_seen: now,
            tcp: TcpState::default(),
        };
        self.note_deadline(&e);
        let key = e.request_key();
        // Slots are below u32::MAX: `slot + 1` cannot overflow.
        let slot = self.slots.insert(e).ok_or(InsertError::TableFull)?;
        self.requests.insert(key, slot);
        self.replies[sp][usize::from(port)] = slot + 1;
        if self.in_napt(port) {
            self.napt_used[sp] += 1;
        }
        Ok(slot)
    }

    /// Removes the entry in `slot`.
    pub fn remove(&mut self, slot: u32) -> Option<Entry> {
        let e = self.slots.remove(slot)?;
        self.requests.remove(&e.request_key());
        let sp = space(e.proto, e.is_ipv6());
        self.replies[sp][usize::from(e.internal_port)] = 0;
        if self.in_napt(e.internal_port) {
            self.napt_used[sp] -= 1;
        }
        Some(e)
    }

    /// Removes the entries `dead` selects; returns how many.
    pub fn remove_where(&mut self, dead: impl FnMut(&Entry) -> bool) -> usize {
        let dead = self.slots.select(dead);
        for slot in &dead {
            self.remove(*slot);
        }
        dead.len()
    }

    /// Removes every entry timed out at `now`; returns how many.
    /// Recomputes [`Self::next_deadline`] from the entries left.
    pub fn expire(&mut self, now: Millis) -> usize {
        let t = self.timeouts;
        let n = self.remove_where(|e| t.expired(e, now));
        self.next_deadline = self.iter().map(|e| t.deadline(e)).min();
        n
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// The module invariant, checked from the outside in. `full`: also
    /// scan the whole reply index for stale entries (6 × 64 Ki loads).
    pub(in crate::gateway) fn check_invariant(t: &Table, full: bool) {
        t.slots.check_invariant();
        assert_eq!(t.requests.len(), t.len());
        let mut napt_used = [0u32; SPACES];
        for (slot, e) in t.slots.iter() {
            assert_eq!(t.requests[&e.request_key()], slot);
            let sp = space(e.proto, e.is_ipv6());
            assert_ne!(e.internal_port, 0);
            assert_eq!(t.replies[sp][usize::from(e.internal_port)], slot + 1);
            assert_eq!(e.client_ip.is_ipv6(), e.service_ip.is_ipv6());
            if t.in_napt(e.internal_port) {
                napt_used[sp] += 1;
            }
        }
        assert_eq!(napt_used, t.napt_used);
        // The next deadline is never later than the first expiry.
        if let Some(first) = t.iter().map(|e| t.timeouts.deadline(e)).min() {
            assert!(t.next_deadline.is_some_and(|d| d <= first));
        }
        if !full {
            return;
        }
        let used: usize = t
            .replies
            .iter()
            .map(|r| r.iter().filter(|s| **s != 0).count())
            .sum();
        assert_eq!(used, t.len(), "no stale reply index entries");
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn flow(client: &str, cport: u16) -> NewFlow {
        let client_ip = ip(client);
        NewFlow {
            proto: Proto::Udp,
            client_ip,
            client_port: cport,
            service_ip: ip(if client_ip.is_ipv6() {
                "fdff:30::30"
            } else {
                "10.30.30.30"
            }),
            service_port: 80,
            exposed_port: 8080,
        }
    }

    fn table(max: usize, napt: (u16, u16)) -> Table {
        Table::new(
            Timeouts {
                tcp_established: Millis(1000),
                tcp_closing: Millis(10),
                udp: Millis(100),
            },
            max,
            napt,
        )
    }

    #[test]
    fn request_keys_do_not_alias() {
        let a = RequestKey::new(Proto::Tcp, ip("10.0.0.1"), 1, 2);
        assert_ne!(a, RequestKey::new(Proto::Udp, ip("10.0.0.1"), 1, 2));
        assert_ne!(a, RequestKey::new(Proto::Tcp, ip("::a00:1"), 1, 2));
        assert_ne!(a, RequestKey::new(Proto::Tcp, ip("10.0.0.1"), 2, 1));
        assert_eq!(a, RequestKey::new(Proto::Tcp, ip("10.0.0.1"), 1, 2));
    }

    #[test]
    fn napt_cursor_advances_wraps_and_skips_used_ports() {
        let mut t = table(100, (100, 102));
        let port = |t: &Table, s: u32| t.get(s).unwrap().internal_port;
        // Client ports are kept while free.
        let s = t.insert(Millis(0), flow("1.1.1.1", 101)).unwrap();
        assert_eq!(port(&t, s), 101);
        // 101 is taken: the scan starts at the bottom of the range...
        let s100 = t.insert(Millis(0), flow("1.1.1.2", 101)).unwrap();
        assert_eq!(port(&t, s100), 100);
        // ...and moves on: 100 freed is not reused at once, 101 is skipped.
        t.remove(s100);
        let s = t.insert(Millis(0), flow("1.1.1.3", 101)).unwrap();
        assert_eq!(port(&t, s), 102);
        // Then it wraps to 100.
        let s = t.insert(Millis(0), flow("1.1.1.4", 101)).unwrap();
        assert_eq!(port(&t, s), 100);
        check_invariant(&t, true);
        assert_eq!(
            t.insert(Millis(0), flow("1.1.1.9", 101)),
            Err(InsertError::PortsExhausted)
        );
        // Port 0 is never kept: it takes a range port, and there is none.
        assert_eq!(
            t.insert(Millis(0), flow("1.1.1.9", 0)),
            Err(InsertError::PortsExhausted)
        );
        // A free client port outside the range is still kept.
        let s = t.insert(Millis(0), flow("1.1.1.9", 7)).unwrap();
        assert_eq!(port(&t, s), 7);
        // Other port spaces are separate.
        let s = t.insert(Millis(0), flow("::1:1", 101)).unwrap();
        assert_eq!(port(&t, s), 101);
        check_invariant(&t, true);
    }

    #[test]
    fn empty_napt_range_only_keeps_client_ports() {
        let mut t = table(100, (10, 9));
        t.insert(Millis(0), flow("1.1.1.1", 5)).unwrap();
        assert_eq!(
            t.insert(Millis(0), flow("1.1.1.2", 5)),
            Err(InsertError::PortsExhausted)
        );
        check_invariant(&t, true);
    }

    #[test]
    fn slots_are_reused_and_the_indexes_stay_exact() {
        let mut t = table(8, (60000, 60007));
        for round in 0..20u16 {
            let now = Millis(u64::from(round) * 1000);
            for i in 0..8 {
                // Same client port for all: NAPT after the first.
                t.insert(now, flow(&format!("1.2.{round}.{i}"), 4000))
                    .unwrap();
                check_invariant(&t, true);
            }
            assert_eq!(
                t.insert(now, flow("9.9.9.9", 1)),
                Err(InsertError::TableFull)
            );
            assert_eq!(t.expire(now + Millis(100)), 8);
            check_invariant(&t, true);
        }
        assert_eq!(t.slots.slots_allocated(), 8);
    }
}
