//! One request across the connections a proxy ends and re-opens: the
//! captured TCP packets grouped into connections (paths that share an
//! address/port 4-tuple on any hop, so NAT does not split one), each
//! connection read at L7 ([`super::l7`]), and each step's connection
//! followed on to the connections a proxy opened for it.
//!
//! Legs are joined by evidence read from the packets, never by timing
//! alone: the same ClientHello random (TLS passed through), the same
//! `X-Request-Id` (in plaintext or decrypted TLS), or, for requests
//! without an id, the same request line and Host. Timing only orders
//! candidates: a leg starts after the one before it. The proxy is the
//! host where one leg was delivered and the next one's SYN was sent; its
//! ephemeral source port is shown as `ephN` (numbered in trace order), so
//! the trace is the same on every run. A connection's packets are shown
//! under one flow only: a proxy that reuses its connection to a server
//! for a later request makes that flow's leg name the connection (joined
//! by a request id or ClientHello random only) with no packets of its
//! own. It knows paths, the lab view and the L7 reader; not rendering,
//! captures or reports.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use hoplab_dataplane::wire::{tcp_flags, L4};

use super::decode::Seen;
use super::hop::{Change, Endpoint, Port, Rewrite};
use super::l7::{self, Conv, Seg};
use super::view::LabView;
use super::Packet;

/// A path: packet `n` of step `k`, or packet `n` of no step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum At {
    Step(usize, usize),
    Other(usize),
}

/// A further leg of a step: how it joins, and its paths (indices into
/// the paths of no step, each with whether it goes client to server).
pub(super) struct LegPlan {
    pub(super) via: String,
    pub(super) joined_by: String,
    pub(super) changed: Vec<String>,
    pub(super) paths: Vec<(usize, bool)>,
}

/// What the L7 reading and stitching give the rendering.
#[derive(Default)]
pub(super) struct Stitched {
    /// Each path's L7 summary.
    pub(super) notes: HashMap<At, String>,
    /// Per step, its further legs.
    pub(super) legs: Vec<Vec<LegPlan>>,
    /// Paths of no step that became legs.
    pub(super) taken: HashSet<usize>,
    /// Proxies' ephemeral ports, numbered per connection.
    pub(super) eph: Eph,
    /// Paths of no flow in a connection opened by a host that runs
    /// processes: their connection (an index of its own) and whether they
    /// go client to server.
    pub(super) other_conn: HashMap<usize, (usize, bool)>,
    /// `random#XXXXXX`, a short digest of the ClientHello random, for the
    /// path that carries the ClientHello (for the pcapng's comments only:
    /// it differs on every run).
    pub(super) digests: HashMap<At, String>,
    /// Paths of no step that are the proxy legs of a load step's flows
    /// outside its sample: counted with their step, not listed.
    pub(super) load_legs: HashMap<usize, usize>,
}

type Tuple = (IpAddr, u16, IpAddr, u16);

fn tuple(s: &hoplab_dataplane::wire::Summary) -> Option<Tuple> {
    match s.l4 {
        L4::Tcp { sport, dport, .. } => Some((s.src, sport, s.dst, dport)),
        _ => None,
    }
}

/// The same 4-tuple whichever way the packet goes.
fn canon(t: Tuple) -> Tuple {
    if (t.0, t.1) <= (t.2, t.3) {
        t
    } else {
        (t.2, t.3, t.0, t.1)
    }
}

fn find(parent: &mut [usize], mut i: usize) -> usize {
    while parent[i] != i {
        parent[i] = parent[parent[i]];
        i = parent[i];
    }
    i
}

/// A TCP connection: its paths in time order and which go client to
/// server, and what it says at L7.
struct Conn {
    paths: Vec<usize>,
    fwd: Vec<bool>,
    start: u64,
    step: Option<usize>,
    /// The path of its SYN, if captured.
    syn: Option<usize>,
    conv: Conv,
}

fn is_syn(s: &hoplab_dataplane::wire::Summary) -> bool {
    matches!(s.l4, L4::Tcp { flags, .. } if flags & tcp_flags::SYN != 0 && flags & tcp_flags::ACK == 0)
}

/// Group the TCP paths of `all` into connections.
fn group(all: &[(At, &[&Seen])]) -> Vec<Vec<usize>> {
    let mut parent: Vec<usize> = Vec::new();
    let mut of_tuple: HashMap<Tuple, usize> = HashMap::new();
    let mut path_set: Vec<Option<usize>> = vec![None; all.len()];
    for (pi, (_, hops)) in all.iter().enumerate() {
        let keys: Vec<Tuple> = hops.iter().filter_map(|h| tuple(&h.s)).map(canon).collect();
        if keys.is_empty() {
            continue;
        }
        let mut root = None;
        for k in &keys {
            if let Some(&c) = of_tuple.get(k) {
                let c = find(&mut parent, c);
                match root {
                    None => root = Some(c),
                    Some(r) if r != c => parent[c] = r,
                    Some(_) => {}
                }
            }
        }
        let root = root.unwrap_or_else(|| {
            parent.push(parent.len());
            parent.len() - 1
        });
        for k in keys {
            of_tuple.entry(k).or_insert(root);
        }
        path_set[pi] = Some(root);
    }
    let mut index: HashMap<usize, usize> = HashMap::new();
    let mut out: Vec<Vec<usize>> = Vec::new();
    for (pi, s) in path_set.iter().enumerate() {
        if let Some(s) = s {
            let r = find(&mut parent, *s);
            let i = *index.entry(r).or_insert_with(|| {
                out.push(Vec::new());
                out.len() - 1
            });
            out[i].push(pi);
        }
    }
    out
}

fn conn(lab: &LabView, all: &[(At, &[&Seen])], mut paths: Vec<usize>) -> Conn {
    paths.sort_by_key(|&p| all[p].1[0].ts_ns);
    let syn = paths.iter().copied().find(|&p| is_syn(&all[p].1[0].s));
    let first = syn.unwrap_or(paths[0]);
    let client: HashSet<Tuple> = all[first].1.iter().filter_map(|h| tuple(&h.s)).collect();
    let fwd: Vec<bool> = (paths.iter())
        .map(|&p| {
            all[p]
                .1
                .iter()
                .any(|h| tuple(&h.s).is_some_and(|t| client.contains(&t)))
        })
        .collect();
    let segs: Vec<Seg> = (paths.iter())
        .map(|&p| {
            let s = &all[p].1[0].s;
            let (seq, flags) = match s.l4 {
                L4::Tcp { seq, flags, .. } => (seq, flags),
                _ => (0, 0),
            };
            Seg {
                key: p,
                seq,
                syn: flags & tcp_flags::SYN != 0,
                payload: &s.payload,
            }
        })
        .collect();
    let (c, s): (Vec<_>, Vec<_>) = segs.iter().zip(&fwd).partition(|(_, f)| **f);
    let c: Vec<&Seg> = c.into_iter().map(|(s, _)| s).collect();
    let s: Vec<&Seg> = s.into_iter().map(|(s, _)| s).collect();
    let has_data = segs.iter().any(|s| !s.payload.is_empty());
    let conv = if has_data {
        l7::conversation(&lab.tls_keys, &c, &s)
    } else {
        Conv::default()
    };
    let step = paths.iter().find_map(|&p| match all[p].0 {
        At::Step(k, _) => Some(k),
        At::Other(_) => None,
    });
    Conn {
        start: all[paths[0]].1[0].ts_ns,
        paths,
        fwd,
        step,
        syn,
        conv,
    }
}

/// Legs a flow may have: enough for any chain of proxies in a lab.
const MAX_LEGS: usize = 16;

/// The connections of no step by the evidence they could be joined by,
/// so that finding a leg's next one costs what it shares, not a scan.
#[derive(Default)]
struct Index {
    random: HashMap<[u8; 32], Vec<usize>>,
    id: HashMap<String, Vec<usize>>,
    line: HashMap<(String, Option<String>), Vec<usize>>,
}

impl Index {
    fn of(conns: &[Conn]) -> Index {
        let mut ix = Index::default();
        for (j, c) in conns.iter().enumerate().filter(|(_, c)| c.step.is_none()) {
            if let Some(t) = &c.conv.tls {
                ix.random.entry(t.random).or_default().push(j);
            }
            for r in &c.conv.requests {
                match &r.id {
                    Some(id) => ix.id.entry(id.clone()).or_default().push(j),
                    None => (ix.line.entry((r.line.clone(), r.host.clone())).or_default()).push(j),
                }
            }
        }
        ix
    }

    /// The connections that share some evidence with `c`.
    fn candidates(&self, c: &Conv) -> Vec<usize> {
        let mut v: Vec<usize> = Vec::new();
        if let Some(t) = &c.tls {
            v.extend(self.random.get(&t.random).into_iter().flatten());
        }
        for r in &c.requests {
            let hit = match &r.id {
                Some(id) => self.id.get(id),
                None => self.line.get(&(r.line.clone(), r.host.clone())),
            };
            v.extend(hit.into_iter().flatten());
        }
        v.sort_unstable();
        v.dedup();
        v
    }
}

/// Why one connection carries on another's request.
struct Evidence {
    /// The lowest wins: ClientHello random, request id, request line.
    rank: u8,
    why: String,
    /// The requests matched (indices into each connection's requests).
    matched: Option<(usize, usize)>,
}

/// Why `b` carries on `a`'s request (only request `only` of `a`, when
/// given: the one the chain follows), if it does.
fn evidence(a: &Conv, only: Option<usize>, b: &Conv) -> Option<Evidence> {
    let mine = |i: usize| only.is_none_or(|o| o == i);
    let ev = |rank, why, matched| Some(Evidence { rank, why, matched });
    if let (Some(x), Some(y)) = (&a.tls, &b.tls) {
        if x.random == y.random {
            let i = only.unwrap_or(0);
            let m = (i < a.requests.len() && i < b.requests.len()).then_some((i, i));
            return ev(0, "the same ClientHello random".into(), m);
        }
    }
    let decrypted = [a, b]
        .iter()
        .any(|c| c.tls.as_ref().is_some_and(|t| t.decrypted));
    let inside = if decrypted {
        " (read in decrypted TLS)"
    } else {
        ""
    };
    for (i, r) in a.requests.iter().enumerate().filter(|(i, _)| mine(*i)) {
        let Some(id) = &r.id else { continue };
        if let Some(j) = b.requests.iter().position(|q| q.id.as_ref() == Some(id)) {
            return ev(
                1,
                format!("the same X-Request-Id {id}{inside}"),
                Some((i, j)),
            );
        }
    }
    for (i, r) in a
        .requests
        .iter()
        .enumerate()
        .filter(|(i, r)| mine(*i) && r.id.is_none())
    {
        if let Some(j) = (b.requests.iter()).position(|q| q.line == r.line && q.host == r.host) {
            let host = r
                .host
                .as_ref()
                .map(|h| format!(" host={h}"))
                .unwrap_or_default();
            let why = format!("the same request line {}{host}{inside}", r.line);
            return ev(2, why, Some((i, j)));
        }
    }
    None
}

/// What the proxy changed from leg `a` to leg `b`.
fn changes(a: &Conv, b: &Conv, matched: Option<(usize, usize)>) -> Vec<String> {
    let mut v = Vec::new();
    match (&a.tls, &b.tls) {
        (Some(x), Some(y)) if x.random == y.random => {
            v.push("TLS passed through (one session on both legs)".to_string())
        }
        (Some(_), Some(_)) => {
            v.push("TLS ended; a new TLS session started (another ClientHello random)".into())
        }
        (Some(_), None) => v.push("TLS ended".into()),
        (None, Some(_)) => v.push("TLS started".into()),
        (None, None) => {}
    }
    let Some((i, j)) = matched else { return v };
    let (ra, rb) = (&a.requests[i], &b.requests[j]);
    if ra.line != rb.line {
        v.push(format!("request line {} -> {}", ra.line, rb.line));
    }
    let get =
        |h: &[(String, String)], n: &str| h.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    for (n, val) in &rb.headers {
        match get(&ra.headers, n) {
            None => v.push(format!("header added: {n}: {val}")),
            Some(old) if old != *val => v.push(format!("header changed: {n}: {old} -> {val}")),
            Some(_) => {}
        }
    }
    for (n, _) in &ra.headers {
        if get(&rb.headers, n).is_none() {
            v.push(format!("header removed: {n}"));
        }
    }
    v
}

/// Read every TCP connection at L7 and follow each step's on through
/// proxies. `per_step[k]` are step `k`'s paths, `other` those of no step.
pub(super) fn stitch(
    lab: &LabView,
    per_step: &[Vec<(Vec<&Seen>, bool)>],
    other: &[Vec<&Seen>],
) -> Stitched {
    let mut all: Vec<(At, &[&Seen])> = Vec::new();
    for (k, paths) in per_step.iter().enumerate() {
        for (n, (hops, _)) in paths.iter().enumerate() {
            all.push((At::Step(k, n), hops));
        }
    }
    for (n, hops) in other.iter().enumerate() {
        all.push((At::Other(n), hops));
    }
    let mut conns: Vec<Conn> = (group(&all).into_iter())
        .map(|paths| conn(lab, &all, paths))
        .collect();
    conns.sort_by_key(|c| c.start);
    let mut out = Stitched {
        legs: (0..per_step.len()).map(|_| Vec::new()).collect(),
        ..Stitched::default()
    };
    for c in &mut conns {
        for (key, text) in std::mem::take(&mut c.conv.notes) {
            if let (true, Some(t)) = (text.starts_with("TLS ClientHello"), &c.conv.tls) {
                let d = ring::digest::digest(&ring::digest::SHA256, &t.random);
                let hex: String = d.as_ref()[..3].iter().map(|b| format!("{b:02x}")).collect();
                out.digests.insert(all[key].0, format!("random#{hex}"));
            }
            out.notes.insert(all[key].0, text);
        }
    }
    let index = Index::of(&conns);
    // Where each connection already is a leg: (step, leg number).
    let mut used: Vec<Option<(usize, usize)>> = vec![None; conns.len()];
    for ci in 0..conns.len() {
        let Some(k) = conns[ci].step else { continue };
        let (mut cur, mut only) = (ci, None);
        let mut chain = vec![ci];
        // A load step's flow outside its sample: its legs are followed (so
        // that they are no packets of no flow) but not listed.
        let shown = sampled(&lab.steps[k], &all, &conns[ci]);
        let mut hidden = 0;
        while (if shown { out.legs[k].len() } else { hidden }) < MAX_LEGS {
            let Some((j, e)) = next_leg(&conns, &index, &used, &chain, (cur, only)) else {
                break;
            };
            chain.push(j);
            let via = via(lab, &all, &conns[cur], &conns[j], &mut out.eph);
            let changed = changes(&conns[cur].conv, &conns[j].conv, e.matched);
            let leg = out.legs[k].len() + 2;
            let (joined_by, paths) = match used[j] {
                // A connection the proxy reused: its packets are shown once.
                Some((k0, l0)) => {
                    let why = format!(
                        "{} (a reused connection: its packets are under flow {}, leg {l0})",
                        e.why, lab.steps[k0].name
                    );
                    (why, Vec::new())
                }
                None => {
                    used[j] = Some((k, leg));
                    let paths = (conns[j].paths.iter().zip(&conns[j].fwd))
                        .filter_map(|(&p, &f)| match all[p].0 {
                            At::Other(n) => Some((n, f)),
                            At::Step(..) => None,
                        })
                        .collect::<Vec<_>>();
                    out.taken.extend(paths.iter().map(|(n, _)| *n));
                    (e.why, paths)
                }
            };
            if shown {
                out.legs[k].push(LegPlan {
                    via,
                    joined_by,
                    changed,
                    paths,
                });
            } else {
                hidden += 1;
                out.load_legs.extend(paths.iter().map(|&(n, _)| (n, k)));
            }
            (cur, only) = (j, e.matched.map(|m| m.1));
        }
    }
    // Connections of no flow opened by a host that runs processes (a
    // proxy's health check, say): their port, chosen by the system, shown
    // as `ephN` too, and their numbers relative to their own start. Other
    // packets of no flow are shown as captured.
    for (ci, c) in conns.iter().enumerate() {
        if c.step.is_some() || used[ci].is_some() {
            continue;
        }
        let Some(first) = c.syn.map(|p| all[p].1[0]) else {
            continue;
        };
        let Some((sport, _)) = first.s.ports() else {
            continue;
        };
        if !lab.processes.contains_key(&first.at.host) {
            continue;
        }
        if let (Some(syn), Some(dport)) = (c.syn, first.s.ports().map(|p| p.1)) {
            let end = (first.s.src, sport, first.s.dst, dport);
            out.eph.number(end, all[syn].1);
        }
        for (&p, &f) in c.paths.iter().zip(&c.fwd) {
            if let At::Other(n) = all[p].0 {
                out.other_conn.insert(n, (ci, f));
            }
        }
    }
    out
}

/// Is connection `c` of step `step` one whose legs the trace lists: any
/// connection of a single-flow step, a load step's sample flows only
/// (those from its first `sample` ports)?
fn sampled(step: &super::view::Step, all: &[(At, &[&Seen])], c: &Conn) -> bool {
    let Some((sample, _)) = &step.load else {
        return true;
    };
    let first = c.syn.unwrap_or(c.paths[0]);
    let port = (all[first].1.iter())
        .filter(|h| h.at.host == step.host)
        .find_map(|h| {
            h.s.ports()
                .map(|(sp, dp)| if h.outgoing() { sp } else { dp })
        });
    port.is_some_and(|p| step.has_port(p) && u32::from(p - step.port) < *sample)
}

/// The connection that carries on `cur`'s request, and why: the best
/// evidence, then the earliest start. A connection not yet a leg must
/// start after `cur`; one already a leg (a proxy reusing its connection
/// to the server) is taken again only on a request id or ClientHello
/// random, never on a request line. A connection already in this flow's
/// `chain` is never taken again (the request id a proxy forwards is on
/// every leg of the chain).
fn next_leg(
    conns: &[Conn],
    index: &Index,
    used: &[Option<(usize, usize)>],
    chain: &[usize],
    (cur, only): (usize, Option<usize>),
) -> Option<(usize, Evidence)> {
    (index.candidates(&conns[cur].conv).into_iter())
        .filter(|&j| !chain.contains(&j))
        .filter(|&j| used[j].is_some() || conns[j].start > conns[cur].start)
        .filter_map(|j| {
            let e = evidence(&conns[cur].conv, only, &conns[j].conv)?;
            (used[j].is_none() || e.rank < 2).then_some(((e.rank, conns[j].start, j), e))
        })
        .min_by_key(|x| x.0)
        .map(|((_, _, j), e)| (j, e))
}

/// `ended at HOST (PROCESSES), re-opened SRC > DST`.
fn via(lab: &LabView, all: &[(At, &[&Seen])], a: &Conn, b: &Conn, eph: &mut Eph) -> String {
    let procs = |h: &str| match lab.processes.get(h) {
        Some(p) => format!("{h} ({})", p.join(", ")),
        None => h.to_string(),
    };
    // Where the leg before was delivered: the last hop of its first packet
    // towards the server, if that host owns the destination.
    let ended = (a.paths.iter().zip(&a.fwd))
        .find(|(_, f)| **f)
        .and_then(|(&p, _)| {
            let last = all[p].1.last()?;
            (lab.owner.get(&last.s.dst) == Some(&last.at.host) && !last.outgoing())
                .then(|| last.at.host.clone())
        });
    let first = all[b.syn.unwrap_or(b.paths[0])].1[0];
    let opened = first.at.host.clone();
    // The host that opened the leg before opens another for the same
    // request: a proxy retrying it (on another server, or the same).
    let opened_before = &all[a.syn.unwrap_or(a.paths[0])].1[0].at.host;
    let (mut src, dst) = Endpoint::of(&first.s);
    if let (Some(syn), Some(Port::Num(p)), Some(Port::Num(q))) = (b.syn, src.port, dst.port) {
        let n = eph.number((src.addr, p, dst.addr, q), all[syn].1);
        src.port = Some(Port::Eph(n));
    }
    if *opened_before == opened && lab.processes.contains_key(&opened) {
        let to = ended.map(|h| format!(" (the attempt before ended at {h})"));
        return format!(
            "retried by {}: {src} > {dst}{}",
            procs(&opened),
            to.unwrap_or_default()
        );
    }
    match ended {
        Some(h) if h == opened => format!("ended at {}, re-opened {src} > {dst}", procs(&h)),
        Some(h) => format!(
            "ended at {h}, re-opened at {}: {src} > {dst}",
            procs(&opened)
        ),
        None => format!("re-opened at {}: {src} > {dst}", procs(&opened)),
    }
}

/// The proxies' ephemeral endpoints, shown as `ephN` so that the trace
/// is the same on every run. Numbered per connection, never per
/// address and port alone: a kernel may open two connections from one
/// source port towards different servers, and each is its own `ephN`.
#[derive(Default)]
pub(super) struct Eph {
    /// `(ephemeral address, port, peer address, port)` at each hop of a
    /// connection's SYN → N of `ephN`.
    by_conn: HashMap<Tuple, u32>,
    /// Every ephemeral `(address, port)` numbered: the next number is one
    /// past their count, so numbers follow trace order as they are read.
    ends: HashSet<(IpAddr, u16)>,
    last: u32,
}

impl Eph {
    /// The number of the connection whose SYN left `end` (its first hop's
    /// source and destination) and took `hops`: a new one unless that
    /// connection is numbered already. The source of every hop of the SYN
    /// is the same `ephN`, also where a NAT on the way rewrote it (a net
    /// manager's instance IP, a masquerade).
    fn number(&mut self, end: Tuple, hops: &[&Seen]) -> u32 {
        if let Some(&n) = self.by_conn.get(&end) {
            return n;
        }
        let n = (self.ends.len() as u32 + 1).max(self.last + 1);
        self.last = n;
        self.by_conn.insert(end, n);
        self.ends.insert((end.0, end.1));
        for h in hops {
            if let Some(t) = tuple(&h.s) {
                self.by_conn.entry(t).or_insert(n);
                self.ends.insert((t.0, t.1));
            }
        }
        n
    }

    /// `end` as `ephN` if it is the ephemeral end of a numbered
    /// connection whose other end is `peer`.
    fn show(&self, end: &mut Endpoint, peer: Endpoint) -> bool {
        let (Some(Port::Num(p)), Some(Port::Num(q))) = (end.port, peer.port) else {
            return false;
        };
        match self.by_conn.get(&(end.addr, p, peer.addr, q)) {
            Some(&n) => {
                end.port = Some(Port::Eph(n));
                true
            }
            None => false,
        }
    }
}

/// `p` with the proxies' ephemeral ports shown as `ephN`: an endpoint is
/// looked up with the other end of its header at that hop (for a
/// rewrite, the header before it or after it).
pub(super) fn normalise(p: &mut Packet, eph: &Eph) {
    if eph.by_conn.is_empty() || p.hops.is_empty() {
        return;
    }
    let ends: Vec<(Endpoint, Endpoint)> = p.hops.iter().map(|h| (h.hdr.src, h.hdr.dst)).collect();
    let mut any = false;
    for (i, h) in p.hops.iter_mut().enumerate() {
        let (src, dst) = ends[i];
        let (before_src, before_dst) = ends[i.saturating_sub(1)];
        any |= eph.show(&mut h.hdr.src, dst);
        any |= eph.show(&mut h.hdr.dst, src);
        for c in h.changed.iter_mut().flat_map(|c| c.0.iter_mut()) {
            match c {
                Change::Rewritten {
                    outer: false,
                    field: Rewrite::Src(a, b),
                } => {
                    any |= eph.show(a, before_dst);
                    any |= eph.show(b, dst);
                }
                Change::Rewritten {
                    outer: false,
                    field: Rewrite::Dst(a, b),
                } => {
                    any |= eph.show(a, before_src);
                    any |= eph.show(b, src);
                }
                _ => {}
            }
        }
    }
    // The packet's line names the first hop's endpoints.
    if !any {
        return;
    }
    let (first, shown) = (ends[0], (p.hops[0].hdr.src, p.hops[0].hdr.dst));
    p.packet = (p.packet.split(' '))
        .map(|t| match t.parse::<Endpoint>() {
            Ok(e) if e == first.0 => shown.0.to_string(),
            Ok(e) if e == first.1 => shown.1.to_string(),
            _ => t.to_string(),
        })
        .collect::<Vec<_>>()
        .join(" ");
}
