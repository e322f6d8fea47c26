//! The canonical form of what TCP timing decides and the packets do not:
//! a pure ACK that the next segment of its direction repeats, and a
//! resend of a segment its receiver already had, are folded into the
//! segment that says the same.
//!
//! Whether a TCP endpoint sends a pure ACK before its next segment (a
//! delayed ACK that fires because the answer came late, a quick ACK of a
//! peer's first segment, an ACK of a peer's FIN before the endpoint's own
//! FIN), and whether a sender's retransmission timer fires before a
//! slow receiver acknowledges, depends on how fast the processes run, so
//! the same exchange gives a packet more or less from run to run. The
//! rules, applied to each direction of each TCP connection (a direction
//! is the sending socket: host, addresses and ports on a packet's first
//! hop), in the trace's order:
//!
//! **A. A resend that only says its receiver answered late.** A segment R
//! is folded into an earlier segment F of its direction when R repeats F
//! (the same sequence number, flags and payload bytes; R's
//! acknowledgement number may be later), F took the same path and was
//! delivered, and between F and R the receiver sent nothing that
//! acknowledges F, or the first acknowledgement of F it sent was still on
//! its way when R left (it reached R's sender after R left, and nothing
//! acknowledging F had reached it before: a tail loss probe or timeout
//! that fired while the ACK was held by a slow hop). A resend whose first
//! copy was lost, or whose acknowledgement was, stays.
//!
//! **C. A duplicate ACK that answers a folded resend.** The first packet
//! the resend's receiver sent after the resend arrived is folded into the
//! packet of its direction before it when it is a pure ACK that
//! acknowledges exactly what that packet did (no SACK block above it, a
//! window open): it says only that the copy was a duplicate.
//!
//! **D. A reset that answers such a duplicate ACK.** The first packet the
//! duplicate ACK's receiver sent after it arrived, when it is a bare reset
//! whose sequence number is the duplicate's acknowledgement (the
//! connection had closed on the first ACK in the meantime), is folded
//! into the packet of its direction before it.
//!
//! **B. A pure ACK that the next segment repeats.** A packet P is folded
//! into the next segment Q of its direction (the next one not itself
//! folded) when
//!
//! 1. P is a pure ACK: flags exactly ACK (no SYN, FIN, RST, PSH, URG), no
//!    payload;
//! 2. P is not the handshake's ACK (the segment of its direction right
//!    after a SYN without ACK, i.e. the connecting side's ACK of the
//!    SYN-ACK): that one the kernel sends at once;
//! 3. P carries no SACK block above its acknowledgement number (a loss
//!    reported; a D-SACK block, at or below it, reports only a duplicate),
//!    and neither advertises a zero window nor opens one (the segment of
//!    its direction before it did not advertise zero);
//! 4. Q repeats what P tells the peer: Q's sequence number equals P's (no
//!    byte was sent between them) and Q acknowledges at least as much
//!    (`Q.ack - P.ack`, modulo 2^32, is 0 or positive as a signed 32-bit
//!    number);
//! 5. P and Q took the same path (the same hops, `host/ifname dir`, in
//!    the same order) and ended alike.
//!
//! **E. A duplicate ACK that answers a folded pure ACK come late.** When
//! a pure ACK P that rule B folded into Q reached its receiver after Q
//! did (two CPUs' queues can swap them on a loaded machine), Q had
//! already moved the receiver past P's sequence number, and the receiver
//! answers the stale P with a duplicate ACK. The first pure ACK it sent
//! once P had arrived (past segments with data, SYN or FIN its socket
//! sent first: a socket busy sending handles P after) is folded, as in
//! rule C, into the packet of its direction before it when it
//! acknowledges exactly what that one did; a reset answering it, as in D.
//!
//! A folded packet is left out of the trace's packets (and so of the
//! snapshot and the reports); every one of its frames stays in the
//! capture, with a comment naming the frame it was folded into. The
//! window and options are read from the sender's own frame. It knows
//! frames and rendered packets; nothing of steps, legs or scenarios.

use std::collections::HashMap;
use std::net::IpAddr;

use hoplab_dataplane::wire::{tcp_flags, L4};

use super::decode::Seen;
use super::{End, Packet};
use crate::capture::Captured;

/// Which rule folded a packet: what its frames' comments say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Rule {
    /// B: a pure ACK the next segment of its direction repeats.
    PureAck,
    /// A: a resend of a segment its receiver had.
    Resend,
    /// C: a duplicate ACK answering a folded resend.
    DupOfResend,
    /// E: a duplicate ACK answering a folded pure ACK that came late.
    DupOfLateAck,
    /// D: a reset answering such a duplicate ACK.
    Reset,
}

/// A folded packet: the kept packet it is folded into, and by which rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Folded {
    pub(super) into: usize,
    pub(super) rule: Rule,
}

/// A direction of a TCP connection: the sending socket's host, source and
/// destination (as on its first hop).
type Key = (String, IpAddr, u16, IpAddr, u16);

/// What one packet's first hop (its sender's frame) says at TCP level.
struct Seg {
    key: Key,
    /// The direction of the receiver's answers: the packet's last hop,
    /// turned around.
    peer: Key,
    seq: u32,
    /// The sequence number after it (payload, SYN and FIN counted).
    end_seq: u32,
    ack: u32,
    flags: u8,
    pure_ack: bool,
    /// Window and SACK blocks, from the raw header.
    raw: Option<RawTcp>,
}

/// The fields of a TCP header the summary does not hold.
#[derive(Clone, Copy)]
struct RawTcp {
    window: u16,
    /// A SACK block above the acknowledgement number: data received out
    /// of order, i.e. a loss reported (a D-SACK block lies at or below it).
    sack_above: bool,
}

fn seg(frames: &[Captured], hops: &[&Seen]) -> Option<Seg> {
    let (first, last) = (hops.first()?, hops.last()?);
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
    let (lsport, ldport) = last.s.ports()?;
    let raw = frames
        .get(first.frame)
        .and_then(|f| raw_tcp(&f.data, (sport, dport, seq, ack)));
    let syn_fin = u32::from(flags & tcp_flags::SYN != 0) + u32::from(flags & tcp_flags::FIN != 0);
    Some(Seg {
        key: (
            first.at.host.clone(),
            first.s.src,
            sport,
            first.s.dst,
            dport,
        ),
        peer: (last.at.host.clone(), last.s.dst, ldport, last.s.src, lsport),
        seq,
        end_seq: seq
            .wrapping_add(first.s.payload.len() as u32)
            .wrapping_add(syn_fin),
        ack,
        flags,
        pure_ack: flags == tcp_flags::ACK && first.s.payload.is_empty(),
        raw,
    })
}

/// `a` is at or after `b` in sequence space (modulo 2^32).
fn at_or_after(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) >= 0
}

/// The window and SACK blocks of the TCP header in `frame` that starts
/// with these ports, sequence and acknowledgement numbers (12 bytes that
/// find it under any link or tunnel header).
fn raw_tcp(frame: &[u8], (sport, dport, seq, ack): (u16, u16, u32, u32)) -> Option<RawTcp> {
    let mut pat = [0u8; 12];
    pat[..2].copy_from_slice(&sport.to_be_bytes());
    pat[2..4].copy_from_slice(&dport.to_be_bytes());
    pat[4..8].copy_from_slice(&seq.to_be_bytes());
    pat[8..].copy_from_slice(&ack.to_be_bytes());
    let at = frame.windows(12).position(|w| w == pat)?;
    let hdr = frame.get(at..)?;
    let doff = usize::from(*hdr.get(12)? >> 4) * 4;
    let window = u16::from_be_bytes([*hdr.get(14)?, *hdr.get(15)?]);
    let mut opts = hdr.get(20..doff)?;
    let mut sack_above = false;
    while let Some(&kind) = opts.first() {
        match kind {
            0 => break,
            1 => opts = &opts[1..],
            _ => {
                let len = usize::from(*opts.get(1)?).max(2);
                if kind == 5 {
                    for block in opts.get(2..len)?.chunks_exact(8) {
                        let left = u32::from_be_bytes(block[..4].try_into().ok()?);
                        sack_above |= at_or_after(left, ack) && left != ack;
                    }
                }
                opts = opts.get(len..)?;
            }
        }
    }
    Some(RawTcp { window, sack_above })
}

/// Every acknowledgement number a host sent, per direction, with when
/// (its frame leaving the host) and the IP ID: what rule A asks of the
/// receiver, also for packets the trace puts elsewhere (a lost ACK, which
/// never reaches the step's client, is in no flow); and every one that
/// entered a host, keyed as the socket it is for (host, its own address
/// and port, the peer's): whether it reached the sender in time.
#[derive(Default)]
pub(super) struct Acks {
    sent: HashMap<Key, Vec<(u64, u32, u32)>>,
    arrived: HashMap<Key, Vec<(u64, u32, u32)>>,
}

impl Acks {
    pub(super) fn of(seen: &[Seen]) -> Acks {
        let mut a = Acks::default();
        for f in seen {
            if let L4::Tcp {
                sport,
                dport,
                ack,
                flags,
                ..
            } = f.s.l4
            {
                if flags & tcp_flags::ACK == 0 {
                    continue;
                }
                let rec = (f.ts_ns, ack, f.s.ident);
                if f.outgoing() {
                    let key = (f.at.host.clone(), f.s.src, sport, f.s.dst, dport);
                    a.sent.entry(key).or_default().push(rec);
                } else {
                    let key = (f.at.host.clone(), f.s.dst, dport, f.s.src, sport);
                    a.arrived.entry(key).or_default().push(rec);
                }
            }
        }
        a
    }

    /// Did direction `key` acknowledge `seq` (or beyond) before `ts`?
    fn before(&self, key: &Key, seq: u32, ts: u64) -> bool {
        self.sent
            .get(key)
            .is_some_and(|v| v.iter().any(|&(t, a, _)| t < ts && at_or_after(a, seq)))
    }

    /// Did the acknowledgement of `seq` that `peer` sent first, before
    /// `ts`, cross a resend leaving `key` at `ts`: no acknowledgement of
    /// `seq` had reached `key`'s host by then, and that one reached it
    /// after (it was neither lost nor answered by the resend)?
    fn crossed(&self, peer: &Key, key: &Key, seq: u32, ts: u64) -> bool {
        let first = (self.sent.get(peer).into_iter().flatten())
            .filter(|&&(t, a, _)| t < ts && at_or_after(a, seq))
            .min_by_key(|&&(t, ..)| t);
        let Some(&(_, ack, id)) = first else {
            return false;
        };
        let arrived = self.arrived.get(key).map_or(&[][..], |v| &v[..]);
        !arrived
            .iter()
            .any(|&(t, a, _)| t < ts && at_or_after(a, seq))
            && arrived
                .iter()
                .any(|&(t, a, i)| t >= ts && a == ack && i == id)
    }
}

/// For each packet (`paths[i]` rendered as `packets[i]`, in trace order),
/// the packet it is folded into and by which rule, or `None` if it is
/// kept. A folded packet always names a kept one.
pub(super) fn fold(
    (frames, acks): (&[Captured], &Acks),
    paths: &[&[&Seen]],
    packets: &[&Packet],
) -> Vec<Option<Folded>> {
    let segs: Vec<Option<Seg>> = paths.iter().map(|h| seg(frames, h)).collect();
    let mut into = resends(&segs, acks, paths, packets);
    let answers = Answers::of(&segs, paths);
    // Rules C and D: what the resends drew.
    let resent: Vec<usize> = (0..segs.len()).filter(|&i| into[i].is_some()).collect();
    for r in resent {
        answers.fold_duplicates(r, Rule::DupOfResend, &segs, packets, &mut into);
    }
    // Rule B, 1 to 3: P and the segment of its direction before it.
    let mut candidate = vec![false; segs.len()];
    let mut before: HashMap<&Key, &Seg> = HashMap::new();
    for (i, s) in segs.iter().enumerate() {
        let Some(s) = s.as_ref().filter(|_| into[i].is_none()) else {
            continue;
        };
        let prev = before.insert(&s.key, s);
        let after_syn =
            prev.is_some_and(|p| p.flags & (tcp_flags::SYN | tcp_flags::ACK) == tcp_flags::SYN);
        let zero = |r: Option<RawTcp>| r.is_some_and(|r| r.window == 0);
        candidate[i] = s.pure_ack
            && !after_syn
            && s.raw.is_some_and(|r| !r.sack_above)
            && !zero(s.raw)
            && !prev.is_some_and(|p| zero(p.raw));
    }
    // Rule B, 4 and 5: against the next kept segment of the direction.
    let mut next: HashMap<&Key, usize> = HashMap::new();
    let mut late = Vec::new();
    for i in (0..segs.len()).rev() {
        let Some(p) = segs[i].as_ref().filter(|_| into[i].is_none()) else {
            continue;
        };
        let q = next.get(&p.key).copied();
        let repeated = q.is_some_and(|q| {
            let qs = segs[q].as_ref().expect("a kept segment");
            qs.seq == p.seq && at_or_after(qs.ack, p.ack) && same_path(packets[i], packets[q])
        });
        match q {
            Some(q) if candidate[i] && repeated => {
                into[i] = Some(Folded {
                    into: q,
                    rule: Rule::PureAck,
                });
                if answers.arrived(i) > answers.arrived(q) {
                    late.push(i);
                }
            }
            _ => {
                next.insert(&p.key, i);
            }
        }
    }
    // Rule E: what the folded pure ACKs that came late drew, in trace
    // order.
    for &p in late.iter().rev() {
        answers.fold_duplicates(p, Rule::DupOfLateAck, &segs, packets, &mut into);
    }
    // A packet folded into one folded further: name the kept one.
    for i in 0..into.len() {
        let Some(mut f) = into[i] else { continue };
        let mut hops = 0;
        while let Some(k) = into[f.into] {
            f.into = k.into;
            hops += 1;
            if hops > into.len() {
                break;
            }
        }
        into[i] = Some(f);
    }
    into
}

/// Each direction's packets in list order, and when each packet was first
/// and last seen: who answered what.
struct Answers<'a> {
    of: HashMap<&'a Key, Vec<usize>>,
    first: Vec<u64>,
    last: Vec<u64>,
}

impl<'a> Answers<'a> {
    fn of(segs: &'a [Option<Seg>], paths: &[&[&Seen]]) -> Answers<'a> {
        let mut of: HashMap<&Key, Vec<usize>> = HashMap::new();
        for (i, s) in segs.iter().enumerate() {
            if let Some(s) = s {
                of.entry(&s.key).or_default().push(i);
            }
        }
        let ts = |f: Option<&&Seen>| f.map_or(0, |f| f.ts_ns);
        Answers {
            of,
            first: paths.iter().map(|p| ts(p.first())).collect(),
            last: paths.iter().map(|p| ts(p.last())).collect(),
        }
    }

    /// When packet `i` reached its last hop.
    fn arrived(&self, i: usize) -> u64 {
        self.last[i]
    }

    /// The first packet of direction `key` sent once `i` had arrived (with
    /// `past_segments`, the first pure ACK, past segments that carry data,
    /// SYN or FIN), and the one of its direction before it.
    fn answer(
        &self,
        (key, i): (&Key, usize),
        segs: &[Option<Seg>],
        past_segments: bool,
    ) -> Option<(usize, usize)> {
        let list = self.of.get(key)?;
        let mut n = list.iter().position(|&j| self.first[j] >= self.last[i])?;
        let carries = |j: usize| segs[j].as_ref().is_some_and(|s| s.end_seq != s.seq);
        if past_segments {
            n += list[n..].iter().take_while(|&&j| carries(j)).count();
        }
        Some((*list.get(n)?, *list.get(n.checked_sub(1)?)?))
    }

    /// Rules C, D and E: the duplicate ACK that packet `r` (a folded
    /// segment its receiver had no use for) drew from its receiver,
    /// acknowledging nothing its direction had not, folded by `rule` into
    /// the packet of its direction before it; and the reset that
    /// duplicate met when the connection had closed, folded by rule D.
    fn fold_duplicates(
        &self,
        r: usize,
        rule: Rule,
        segs: &[Option<Seg>],
        packets: &[&Packet],
        into: &mut [Option<Folded>],
    ) {
        let Some(rs) = &segs[r] else { return };
        if !matches!(packets[r].end, End::Delivered { .. }) {
            return;
        }
        // The receiver's socket may be busy sending when `r` arrives (a FIN
        // of its own) and answer it only once that is sent.
        let late_ack = rule == Rule::DupOfLateAck;
        let Some((d, prev)) = self.answer((&rs.peer, r), segs, late_ack) else {
            return;
        };
        let (Some(ds), Some(ps)) = (&segs[d], &segs[prev]) else {
            return;
        };
        let dup = ds.pure_ack
            && ds.ack == ps.ack
            && ds.raw.is_some_and(|r| !r.sack_above && r.window != 0)
            && into[d].is_none();
        if !dup {
            return;
        }
        into[d] = Some(Folded { into: prev, rule });
        // D: the reset it met, from a connection already closed.
        if !matches!(packets[d].end, End::Delivered { .. }) {
            return;
        }
        let Some((x, before)) = self.answer((&ds.peer, d), segs, false) else {
            return;
        };
        let Some(xs) = &segs[x] else { return };
        let reset = xs.flags & !tcp_flags::ACK == tcp_flags::RST
            && xs.end_seq == xs.seq
            && xs.seq == ds.ack
            && into[x].is_none();
        if reset {
            into[x] = Some(Folded {
                into: before,
                rule: Rule::Reset,
            });
        }
    }
}

/// Rule A: for each segment, the earlier copy it is a resend of, when its
/// receiver had that copy and had not acknowledged it yet.
fn resends(
    segs: &[Option<Seg>],
    acks: &Acks,
    paths: &[&[&Seen]],
    packets: &[&Packet],
) -> Vec<Option<Folded>> {
    let mut into = vec![None; segs.len()];
    // (direction, seq, flags) -> the first copy seen.
    let mut first: HashMap<(&Key, u32, u8), usize> = HashMap::new();
    for (i, s) in segs.iter().enumerate() {
        let Some(s) = s else { continue };
        if s.end_seq == s.seq {
            continue; // carries nothing to resend
        }
        match first.get(&(&s.key, s.seq, s.flags)).copied() {
            Some(f) => {
                let fs = segs[f].as_ref().expect("a segment");
                let delivered = matches!(packets[f].end, End::Delivered { .. });
                let ts = paths[i][0].ts_ns;
                if delivered
                    && (!acks.before(&fs.peer, fs.end_seq, ts)
                        || acks.crossed(&fs.peer, &fs.key, fs.end_seq, ts))
                    && at_or_after(s.ack, fs.ack)
                    && paths[f][0].s.payload == paths[i][0].s.payload
                    && same_path(packets[f], packets[i])
                {
                    into[i] = Some(Folded {
                        into: f,
                        rule: Rule::Resend,
                    });
                }
            }
            None => {
                first.insert((&s.key, s.seq, s.flags), i);
            }
        }
    }
    into
}

fn same_path(a: &Packet, b: &Packet) -> bool {
    a.end == b.end
        && a.hops.len() == b.hops.len()
        && a.hops.iter().zip(&b.hops).all(|(x, y)| x.at == y.at)
}

/// The comment of each frame of a packet folded by `rule`: the frame
/// (1-based, as Wireshark numbers them) of the packet it was folded into
/// at the same hop.
pub(super) fn comment(
    comments: &mut [Option<String>],
    (flow, rule): (&str, Rule),
    folded: &[&Seen],
    into: &[&Seen],
) {
    let (what, why) = match rule {
        Rule::Reset => (
            "reset",
            "it answers a duplicate ACK that answered a folded packet and found the connection closed",
        ),
        Rule::DupOfResend => (
            "duplicate ACK",
            "it answers a folded resend and acknowledges nothing new",
        ),
        Rule::DupOfLateAck => (
            "duplicate ACK",
            "it answers a folded pure ACK that arrived after the segment repeating it and acknowledges nothing new",
        ),
        Rule::Resend => (
            "resend",
            "its receiver had the first copy and had not acknowledged it yet, or its acknowledgement was on its way",
        ),
        Rule::PureAck => (
            "pure ACK",
            "the next segment of its direction repeats its sequence and acknowledgement numbers",
        ),
    };
    for (i, (f, q)) in folded.iter().zip(into).enumerate() {
        comments[f.frame] = Some(format!(
            "{flow}, {what}, hop {}/{} at {}: folded into frame {} ({why}; not in the trace)",
            i + 1,
            folded.len(),
            f.at,
            q.frame + 1
        ));
    }
}
