//! The canonical order of a TCP connection's packets: causal, and the
//! same whatever the timing, so that two packets that cross in flight
//! (each sent before the other arrived) are listed the same way on every
//! run.
//!
//! Packets come out of [`super::path`] in the order their first frames
//! were captured, which for two packets of one connection going opposite
//! ways is the order they were sent: a race when neither could have caused
//! the other. The rule, for the packets of each TCP connection (the two
//! directions joined by where each packet was delivered; a new SYN with
//! another sequence number from the same socket starts a new connection):
//!
//! 1. Each direction keeps its own order (the order its socket sent them).
//! 2. A packet comes after every packet of the other direction it
//!    acknowledges: a packet that carries sequence space (data, SYN, FIN),
//!    was delivered and is not a resend of bytes delivered before, is
//!    acknowledged by a packet whose acknowledgement number covers its end.
//!    A packet is never moved after a later resend of bytes it
//!    acknowledged: the first delivered copy is what it answers.
//! 3. Of two packets that rules 1 and 2 both allow next, the one that
//!    answers goes first: it acknowledges more of the other direction's
//!    bytes than its own direction had acknowledged so far. If both or
//!    neither answer, the packet of the connection's initiator (the
//!    direction that sent the SYN, else the one seen first) goes first.
//!
//! The connection's packets are put back into the places they had in the
//! list, so packets of other connections and of other protocols keep their
//! places and their capture order. When rule 2 cannot be met (a capture
//! whose acknowledgements contradict each other), the packet captured
//! first goes next. Linear in the packets.
//!
//! It knows frames, their TCP numbers and where each packet was delivered
//! ([`LabView::owner`]); nothing of steps, rendering or folding (a packet
//! that [`super::fold`] later leaves out is ordered like any other).

use std::collections::HashMap;
use std::net::IpAddr;

use hoplab_dataplane::wire::{tcp_flags, L4};

use super::decode::Seen;
use super::view::LabView;
use super::Dir;

/// The socket that sends a direction: host, source and destination on the
/// packet's first hop.
type Key = (String, IpAddr, u16, IpAddr, u16);

/// What the order reads of one TCP packet (its first hop, as sent).
struct Tcp {
    key: Key,
    /// The receiving socket's own key, when the packet was delivered.
    peer: Option<Key>,
    seq: u32,
    /// The sequence number after it (payload, SYN and FIN counted).
    end: u32,
    /// The acknowledgement number, when the ACK flag is set.
    ack: Option<u32>,
    /// A SYN without ACK: a connection's first packet.
    syn: bool,
}

fn tcp(lab: &LabView, seen: &[Seen], chain: &[usize]) -> Option<Tcp> {
    let (first, last) = (&seen[*chain.first()?], &seen[*chain.last()?]);
    let L4::Tcp {
        sport,
        dport,
        seq,
        ack,
        flags,
    } = first.s.l4
    else {
        return None;
    };
    let delivered = last.at.dir == Dir::In && lab.owner.get(&last.s.dst) == Some(&last.at.host);
    let peer = match (delivered, last.s.ports()) {
        (true, Some((lsport, ldport))) => {
            Some((last.at.host.clone(), last.s.dst, ldport, last.s.src, lsport))
        }
        _ => None,
    };
    let count = |f: u8| u32::from(flags & f != 0);
    Some(Tcp {
        key: (
            first.at.host.clone(),
            first.s.src,
            sport,
            first.s.dst,
            dport,
        ),
        peer,
        seq,
        end: seq
            .wrapping_add(first.s.payload.len() as u32)
            .wrapping_add(count(tcp_flags::SYN) + count(tcp_flags::FIN)),
        ack: (flags & tcp_flags::ACK != 0).then_some(ack),
        syn: flags & (tcp_flags::SYN | tcp_flags::ACK) == tcp_flags::SYN,
    })
}

/// Union-find over direction keys: the two directions of a connection.
#[derive(Default)]
struct Joined {
    ids: HashMap<Key, usize>,
    parent: Vec<usize>,
}

impl Joined {
    fn id(&mut self, k: &Key) -> usize {
        if let Some(&i) = self.ids.get(k) {
            return i;
        }
        let i = self.parent.len();
        self.parent.push(i);
        self.ids.insert(k.clone(), i);
        i
    }

    fn root(&mut self, mut i: usize) -> usize {
        while self.parent[i] != i {
            self.parent[i] = self.parent[self.parent[i]];
            i = self.parent[i];
        }
        i
    }

    fn join(&mut self, a: usize, b: usize) {
        let (a, b) = (self.root(a), self.root(b));
        if a != b {
            self.parent[a.max(b)] = a.min(b);
        }
    }
}

/// Put the packets (`chains`, in capture order of their first frames) of
/// every TCP connection into the canonical order, in the places they had.
pub(super) fn canonical(lab: &LabView, seen: &[Seen], chains: &mut [Vec<usize>]) {
    let segs: Vec<Option<Tcp>> = chains.iter().map(|c| tcp(lab, seen, c)).collect();
    let mut joined = Joined::default();
    for s in segs.iter().flatten() {
        let a = joined.id(&s.key);
        if let Some(p) = &s.peer {
            let b = joined.id(p);
            joined.join(a, b);
        }
    }
    // Each connection's packets, in list order.
    let mut conns: HashMap<usize, Vec<usize>> = HashMap::new();
    let mut order: Vec<usize> = Vec::new();
    for (i, s) in segs.iter().enumerate() {
        let Some(s) = s else { continue };
        let id = joined.id(&s.key);
        let r = joined.root(id);
        let v = conns.entry(r).or_default();
        if v.is_empty() {
            order.push(r);
        }
        v.push(i);
    }
    let mut placed: Vec<usize> = Vec::new();
    for r in order {
        for conn in instances(&segs, &conns[&r]) {
            placed.clear();
            merge(&segs, &conn, &mut placed);
            if placed.iter().zip(&conn).any(|(a, b)| a != b) {
                let moved: Vec<Vec<usize>> = placed
                    .iter()
                    .map(|&i| std::mem::take(&mut chains[i]))
                    .collect();
                for (&slot, c) in conn.iter().zip(moved) {
                    chains[slot] = c;
                }
            }
        }
    }
}

/// One socket pair's packets split where a new connection starts: a SYN
/// with a sequence number other than the current connection's SYN.
fn instances(segs: &[Option<Tcp>], all: &[usize]) -> Vec<Vec<usize>> {
    let mut out: Vec<Vec<usize>> = Vec::new();
    let mut syn: Option<(&Key, u32)> = None;
    for &i in all {
        let s = segs[i].as_ref().expect("a TCP packet");
        if s.syn && syn.is_some_and(|(k, q)| (k, q) != (&s.key, s.seq)) {
            out.push(Vec::new());
        }
        if s.syn {
            syn = Some((&s.key, s.seq));
        }
        match out.last_mut() {
            Some(v) => v.push(i),
            None => out.push(vec![i]),
        }
    }
    out
}

/// `v` relative to `base`, as a signed distance in sequence space.
fn rel(v: u32, base: u32) -> i64 {
    i64::from(v.wrapping_sub(base) as i32)
}

/// One direction of a connection, for the merge.
struct Side {
    /// Its packets (indices into `segs`), in order.
    list: Vec<usize>,
    /// Where its sequence space starts.
    base: u32,
    /// For each position, the least end (relative to `base`) of the
    /// packets from there on that the other direction's acknowledgements
    /// answer: delivered, carrying sequence space, and not a resend of
    /// bytes delivered before.
    pending: Vec<i64>,
    /// The next packet to place.
    at: usize,
    /// The most of the other direction this one has acknowledged so far.
    acked: Option<i64>,
}

impl Side {
    fn new(segs: &[Option<Tcp>], list: Vec<usize>, delivered: &dyn Fn(usize) -> bool) -> Side {
        let seg = |i: usize| segs[i].as_ref().expect("a TCP packet");
        let base = list
            .iter()
            .find(|&&i| seg(i).syn)
            .or(list.first())
            .map_or(0, |&i| seg(i).seq);
        let mut target = vec![i64::MAX; list.len()];
        let mut frontier: Option<i64> = None;
        for (n, &i) in list.iter().enumerate() {
            let s = seg(i);
            let end = rel(s.end, base);
            if s.end != s.seq && delivered(i) && frontier.is_none_or(|f| end > f) {
                target[n] = end;
                frontier = Some(end);
            }
        }
        let mut pending = vec![i64::MAX; list.len() + 1];
        for n in (0..list.len()).rev() {
            pending[n] = pending[n + 1].min(target[n]);
        }
        Side {
            list,
            base,
            pending,
            at: 0,
            acked: None,
        }
    }

    fn head(&self) -> Option<usize> {
        self.list.get(self.at).copied()
    }
}

/// Does `s` (of one side) wait for a packet of `other` not placed yet?
fn waits(s: &Tcp, other: &Side) -> bool {
    s.ack
        .is_some_and(|a| rel(a, other.base) >= other.pending[other.at])
}

/// Does `s` (of `own`) acknowledge more of `other` than `own` did so far?
fn answers(s: &Tcp, own: &Side, other: &Side) -> bool {
    s.ack
        .is_some_and(|a| own.acked.is_none_or(|m| rel(a, other.base) > m))
}

/// The packets of one connection (`conn`, in list order) in canonical
/// order, into `out`.
fn merge(segs: &[Option<Tcp>], conn: &[usize], out: &mut Vec<usize>) {
    let seg = |i: usize| segs[i].as_ref().expect("a TCP packet");
    let first = conn
        .iter()
        .find(|&&i| seg(i).syn)
        .or(conn.first())
        .map(|&i| &seg(i).key);
    let Some(first) = first else { return };
    let (mine, theirs): (Vec<usize>, Vec<usize>) =
        conn.iter().partition(|&&i| &seg(i).key == first);
    if theirs.is_empty() {
        out.extend_from_slice(conn);
        return;
    }
    // Delivered: the receiver is the other side's sending socket.
    let delivered = |i: usize| seg(i).peer.is_some();
    let mut sides = [
        Side::new(segs, mine, &delivered),
        Side::new(segs, theirs, &delivered),
    ];
    // Position in the list, for when the acknowledgements contradict.
    let pos: HashMap<usize, usize> = conn.iter().enumerate().map(|(n, &i)| (i, n)).collect();
    while out.len() < conn.len() {
        let heads = [sides[0].head(), sides[1].head()];
        let ready = |d: usize| heads[d].is_some_and(|i| !waits(seg(i), &sides[1 - d]));
        let pick = match (ready(0), ready(1)) {
            (true, true) => {
                let ans =
                    |d: usize| answers(seg(heads[d].expect("ready")), &sides[d], &sides[1 - d]);
                usize::from(ans(1) && !ans(0))
            }
            (true, false) => 0,
            (false, true) => 1,
            // Contradictory acknowledgements: the one captured first.
            (false, false) => match heads {
                [Some(a), Some(b)] => usize::from(pos[&b] < pos[&a]),
                [Some(_), None] => 0,
                _ => 1,
            },
        };
        let i = heads[pick].expect("a head picked");
        let other_base = sides[1 - pick].base;
        let side = &mut sides[pick];
        if let Some(a) = seg(i).ack {
            let a = rel(a, other_base);
            side.acked = Some(side.acked.map_or(a, |m| m.max(a)));
        }
        side.at += 1;
        out.push(i);
    }
}
