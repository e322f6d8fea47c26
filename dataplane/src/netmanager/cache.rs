//! The resolution cache: service IP → [`Resolution`], with the queries in
//! flight and the packets waiting for them.
//!
//! - A resolved entry lives for `ttl` after its *last use* (Oakestra drops
//!   an interest after 10 s unused); [`ResolutionCache::invalidate`] drops
//!   it at once (an instance was rescheduled).
//! - A miss registers the service IP as pending exactly once: the first
//!   [`ResolutionCache::lookup`] returns [`Lookup::Miss`] (the caller emits
//!   one query), later ones [`Lookup::Pending`] until the answer arrives.
//! - Packets for a pending service wait in a bounded queue per service;
//!   [`ResolutionCache::on_resolution`] hands them back, on success to be
//!   forwarded, on failure to be dropped and answered with ICMP errors.
//! - A pending entry older than `query_timeout` is failed by
//!   [`ResolutionCache::expire`], so a lost answer cannot hold packets
//!   forever.
//!
//! - A TTL of 0 means "not kept past the answer": the resolution serves
//!   the packets that waited for it and those of the same millisecond
//!   ([`MIN_TTL`]), so the released packets never query again: at most
//!   one query per service per in-flight window, whatever the TTL.
//!
//! [`ResolutionCache::next_deadline`] tells when an entry may next go
//! stale or time out: lowered as entries are added, recomputed exactly by
//! [`ResolutionCache::expire`]; never later than the first expiry.
//!
//! Nothing here blocks: a pending service only holds its own packets;
//! every other flow goes on.
//!
//! Invariant: a service IP is at most one of resolved or pending; the
//! number of entries of both sorts together never exceeds `max_entries`.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;

use super::services::Resolution;
use crate::time::{earliest, Millis};

/// The shortest life of a resolution, whatever the configured TTL: a
/// query's answer always serves the packets that waited for it. With a TTL
/// of 0 a service is queried once per in-flight window (from the first
/// packet that misses to the answer), never once per packet.
pub const MIN_TTL: Millis = Millis(1);

/// Why a query failed (reported by the shell that ran it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    #[error("no such service")]
    NotFound,
    #[error("query timed out")]
    Timeout,
    #[error("service manager unavailable: {0}")]
    Unavailable(String),
}

/// Sizes and times of the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheConfig {
    /// How long an unused resolution stays (default 10 s).
    pub ttl: Millis,
    /// How long a query may stay unanswered (default 5 s).
    pub query_timeout: Millis,
    /// Packets queued per pending service (default 64).
    pub queue_limit: usize,
    /// Resolved plus pending entries (default 4096).
    pub max_entries: usize,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            ttl: Millis(10_000),
            query_timeout: Millis(5_000),
            queue_limit: 64,
            max_entries: 4096,
        }
    }
}

/// The answer of [`ResolutionCache::lookup`].
#[derive(Debug, PartialEq)]
pub enum Lookup<'a> {
    /// A fresh resolution; its TTL restarts now.
    Hit(&'a Resolution),
    /// Unknown until now: registered as pending; the caller must query.
    Miss,
    /// A query is already in flight.
    Pending,
    /// Unknown, and the cache is full of entries that are neither stale
    /// nor removable: no query is registered.
    Full,
}

#[derive(Debug)]
enum Entry {
    Resolved {
        res: Resolution,
        last_used: Millis,
    },
    Pending {
        since: Millis,
        queue: VecDeque<Vec<u8>>,
    },
}

/// See the module documentation.
#[derive(Debug)]
pub struct ResolutionCache {
    cfg: CacheConfig,
    entries: HashMap<IpAddr, Entry>,
    /// Never later than the earliest deadline of an entry (see the module
    /// documentation); `None` when there is none.
    next_deadline: Option<Millis>,
}

/// Packets handed back when a query ends.
#[derive(Debug, Default, PartialEq)]
pub struct Released {
    pub packets: Vec<Vec<u8>>,
}

impl ResolutionCache {
    pub fn new(cfg: CacheConfig) -> ResolutionCache {
        ResolutionCache {
            cfg,
            entries: HashMap::new(),
            next_deadline: None,
        }
    }

    /// When `e` goes stale (resolved) or times out (pending), unless a
    /// lookup refreshes it.
    fn deadline(&self, e: &Entry) -> Millis {
        match e {
            Entry::Resolved { last_used, .. } => last_used.saturating_add(self.ttl()),
            Entry::Pending { since, .. } => since.saturating_add(self.cfg.query_timeout),
        }
    }

    /// Adds `e` at `ip`, lowering the next deadline to its own.
    fn insert(&mut self, ip: IpAddr, e: Entry) {
        self.next_deadline = earliest(self.next_deadline, Some(self.deadline(&e)));
        self.entries.insert(ip, e);
    }

    /// The earliest time at which an entry may go stale or a query time
    /// out, or `None` without entries: never later than the first expiry,
    /// exact after [`Self::expire`].
    pub fn next_deadline(&self) -> Option<Millis> {
        self.next_deadline
    }

    pub fn config(&self) -> &CacheConfig {
        &self.cfg
    }

    /// Entries, resolved and pending.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn is_pending(&self, ip: IpAddr) -> bool {
        matches!(self.entries.get(&ip), Some(Entry::Pending { .. }))
    }

    /// Packets waiting for `ip`.
    pub fn queued(&self, ip: IpAddr) -> usize {
        match self.entries.get(&ip) {
            Some(Entry::Pending { queue, .. }) => queue.len(),
            _ => 0,
        }
    }

    /// Whether a resolution last used at `last_used` still serves at
    /// `now`. A TTL of 0 counts as [`MIN_TTL`]: the answer serves the
    /// packets that waited for it (handed back at the instant it came)
    /// and those of the same millisecond, so no packet can send the query
    /// it just ended again.
    fn fresh(&self, now: Millis, last_used: Millis) -> bool {
        now.saturating_sub(last_used) < self.ttl()
    }

    /// The TTL in force: the configured one, at least [`MIN_TTL`].
    fn ttl(&self) -> Millis {
        self.cfg.ttl.max(MIN_TTL)
    }

    /// Looks `ip` up at `now` (see [`Lookup`]).
    pub fn lookup(&mut self, now: Millis, ip: IpAddr) -> Lookup<'_> {
        enum State {
            Fresh,
            Stale,
            Pending,
            Absent,
        }
        let state = match self.entries.get(&ip) {
            Some(Entry::Resolved { last_used, .. }) if self.fresh(now, *last_used) => State::Fresh,
            Some(Entry::Resolved { .. }) => State::Stale,
            Some(Entry::Pending { .. }) => State::Pending,
            None => State::Absent,
        };
        match state {
            State::Fresh => match self.entries.get_mut(&ip) {
                Some(Entry::Resolved { res, last_used }) => {
                    *last_used = now;
                    Lookup::Hit(res)
                }
                // Checked just above.
                _ => Lookup::Pending,
            },
            State::Pending => Lookup::Pending,
            State::Stale | State::Absent => {
                self.entries.remove(&ip);
                if self.entries.len() >= self.cfg.max_entries {
                    self.purge_stale(now);
                    if self.entries.len() >= self.cfg.max_entries {
                        return Lookup::Full;
                    }
                }
                self.insert(
                    ip,
                    Entry::Pending {
                        since: now,
                        queue: VecDeque::new(),
                    },
                );
                Lookup::Miss
            }
        }
    }

    fn purge_stale(&mut self, now: Millis) {
        let ttl = self.ttl();
        self.entries.retain(|_, e| match e {
            Entry::Resolved { last_used, .. } => now.saturating_sub(*last_used) < ttl,
            Entry::Pending { .. } => true,
        });
    }

    /// Queues `packet` for the pending service `ip`. Returns the packet
    /// back when the queue is full or `ip` is not pending.
    pub fn enqueue(&mut self, ip: IpAddr, packet: Vec<u8>) -> Result<(), Vec<u8>> {
        match self.entries.get_mut(&ip) {
            Some(Entry::Pending { queue, .. }) if queue.len() < self.cfg.queue_limit => {
                queue.push_back(packet);
                Ok(())
            }
            _ => Err(packet),
        }
    }

    /// Ends the query for `ip`. On success the resolution is stored (fresh
    /// from `now`), also when no query was pending (an update pushed by the
    /// service manager) if there is room. On failure the pending entry is
    /// removed; a resolved entry is left alone. Either way the packets that
    /// waited are returned in arrival order.
    pub fn on_resolution(
        &mut self,
        now: Millis,
        ip: IpAddr,
        result: Result<Resolution, ResolveError>,
    ) -> Released {
        let packets = match self.entries.get(&ip) {
            Some(Entry::Pending { .. }) => match self.entries.remove(&ip) {
                Some(Entry::Pending { queue, .. }) => Vec::from(queue),
                _ => Vec::new(),
            },
            _ => Vec::new(),
        };
        if let Ok(res) = result {
            if self.entries.contains_key(&ip) || self.entries.len() < self.cfg.max_entries {
                self.insert(
                    ip,
                    Entry::Resolved {
                        res,
                        last_used: now,
                    },
                );
            }
        }
        Released { packets }
    }

    /// Drops the resolution of `ip` (an instance was rescheduled); the next
    /// packet for it queries again. A pending query is left to finish.
    /// Returns whether a resolution was dropped.
    pub fn invalidate(&mut self, ip: IpAddr) -> bool {
        if let Some(Entry::Resolved { .. }) = self.entries.get(&ip) {
            self.entries.remove(&ip);
            true
        } else {
            false
        }
    }

    /// Drops resolutions unused for `ttl`, and fails queries unanswered for
    /// `query_timeout`, returning each failed service IP with the packets
    /// that waited for it. Recomputes [`Self::next_deadline`].
    pub fn expire(&mut self, now: Millis) -> Vec<(IpAddr, Released)> {
        self.purge_stale(now);
        let timeout = self.cfg.query_timeout;
        let timed_out: Vec<IpAddr> = self
            .entries
            .iter()
            .filter_map(|(ip, e)| match e {
                Entry::Pending { since, .. } if now.saturating_sub(*since) >= timeout => Some(*ip),
                _ => None,
            })
            .collect();
        let mut out = Vec::with_capacity(timed_out.len());
        for ip in timed_out {
            if let Some(Entry::Pending { queue, .. }) = self.entries.remove(&ip) {
                out.push((
                    ip,
                    Released {
                        packets: Vec::from(queue),
                    },
                ));
            }
        }
        // Deterministic order for callers and tests.
        out.sort_by_key(|(ip, _)| *ip);
        self.next_deadline = self.entries.values().map(|e| self.deadline(e)).min();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn res(s: &str) -> Resolution {
        Resolution::new(ip(s), vec![])
    }

    #[test]
    fn miss_once_then_pending_then_hit() {
        let mut c = ResolutionCache::new(CacheConfig::default());
        let a = ip("10.30.0.1");
        assert_eq!(c.lookup(Millis(0), a), Lookup::Miss);
        assert_eq!(c.lookup(Millis(1), a), Lookup::Pending);
        assert_eq!(c.lookup(Millis(2), a), Lookup::Pending);
        assert!(c.enqueue(a, vec![1]).is_ok());
        assert!(c.enqueue(a, vec![2]).is_ok());
        let r = c.on_resolution(Millis(3), a, Ok(res("10.30.0.1")));
        assert_eq!(r.packets, vec![vec![1], vec![2]]);
        assert_eq!(c.lookup(Millis(4), a), Lookup::Hit(&res("10.30.0.1")));
        // A query in flight for one service does not affect another.
        let b = ip("10.30.0.2");
        assert_eq!(c.lookup(Millis(5), b), Lookup::Miss);
        assert!(matches!(c.lookup(Millis(6), a), Lookup::Hit(_)));
    }

    #[test]
    fn ttl_counts_from_last_use() {
        let mut c = ResolutionCache::new(CacheConfig {
            ttl: Millis(100),
            ..Default::default()
        });
        let a = ip("10.30.0.1");
        assert_eq!(c.lookup(Millis(0), a), Lookup::Miss);
        c.on_resolution(Millis(0), a, Ok(res("10.30.0.1")));
        assert!(matches!(c.lookup(Millis(99), a), Lookup::Hit(_)));
        assert!(matches!(c.lookup(Millis(198), a), Lookup::Hit(_)));
        // Unused for exactly the TTL: gone.
        assert_eq!(c.lookup(Millis(298), a), Lookup::Miss);
        c.on_resolution(Millis(300), a, Ok(res("10.30.0.1")));
        assert!(c.expire(Millis(399)).is_empty());
        assert_eq!(c.len(), 1);
        assert!(c.expire(Millis(400)).is_empty());
        assert_eq!(c.len(), 0);
    }

    #[test]
    fn invalidate_forces_a_new_query() {
        let mut c = ResolutionCache::new(CacheConfig::default());
        let a = ip("fdff:2000::1");
        c.on_resolution(Millis(0), a, Ok(res("fdff:2000::1")));
        assert!(matches!(c.lookup(Millis(1), a), Lookup::Hit(_)));
        assert!(c.invalidate(a));
        assert!(!c.invalidate(a));
        assert_eq!(c.lookup(Millis(2), a), Lookup::Miss);
        // Invalidating a pending query leaves it pending.
        assert!(!c.invalidate(a));
        assert!(c.is_pending(a));
    }

    #[test]
    fn bounded_queue_and_failure() {
        let mut c = ResolutionCache::new(CacheConfig {
            queue_limit: 2,
            ..Default::default()
        });
        let a = ip("10.30.0.1");
        assert_eq!(c.enqueue(a, vec![0]), Err(vec![0]), "not pending");
        assert_eq!(c.lookup(Millis(0), a), Lookup::Miss);
        assert!(c.enqueue(a, vec![1]).is_ok());
        assert!(c.enqueue(a, vec![2]).is_ok());
        assert_eq!(c.enqueue(a, vec![3]), Err(vec![3]));
        assert_eq!(c.queued(a), 2);
        let r = c.on_resolution(Millis(1), a, Err(ResolveError::NotFound));
        assert_eq!(r.packets.len(), 2);
        assert!(c.is_empty());
        assert_eq!(
            c.lookup(Millis(2), a),
            Lookup::Miss,
            "a failure is not cached"
        );
    }

    #[test]
    fn query_timeout() {
        let mut c = ResolutionCache::new(CacheConfig {
            query_timeout: Millis(50),
            ..Default::default()
        });
        let a = ip("10.30.0.1");
        assert_eq!(c.lookup(Millis(10), a), Lookup::Miss);
        c.enqueue(a, vec![9]).unwrap();
        assert!(c.expire(Millis(59)).is_empty());
        let out = c.expire(Millis(60));
        assert_eq!(
            out,
            vec![(
                a,
                Released {
                    packets: vec![vec![9]]
                }
            )]
        );
        assert!(c.is_empty());
    }

    #[test]
    fn ttl_zero_serves_the_waiting_packets() {
        let mut c = ResolutionCache::new(CacheConfig {
            ttl: Millis(0),
            ..Default::default()
        });
        let a = ip("10.30.0.1");
        assert_eq!(c.lookup(Millis(0), a), Lookup::Miss);
        c.on_resolution(Millis(7), a, Ok(res("10.30.0.1")));
        // The packets handed back at the answer's instant hit.
        assert!(matches!(c.lookup(Millis(7), a), Lookup::Hit(_)));
        assert!(matches!(c.lookup(Millis(7), a), Lookup::Hit(_)));
        // A millisecond later it is gone: the next flow queries again.
        assert_eq!(c.lookup(Millis(8), a), Lookup::Miss);
    }

    #[test]
    fn bounded_entries() {
        let mut c = ResolutionCache::new(CacheConfig {
            max_entries: 2,
            ttl: Millis(10),
            ..Default::default()
        });
        assert_eq!(c.lookup(Millis(0), ip("10.30.0.1")), Lookup::Miss);
        c.on_resolution(Millis(0), ip("10.30.0.1"), Ok(res("10.30.0.1")));
        assert_eq!(c.lookup(Millis(0), ip("10.30.0.2")), Lookup::Miss);
        assert_eq!(c.lookup(Millis(5), ip("10.30.0.3")), Lookup::Full);
        // Once the resolved entry is stale it makes room.
        assert_eq!(c.lookup(Millis(10), ip("10.30.0.3")), Lookup::Miss);
    }
}
