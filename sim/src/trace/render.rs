//! A chain of frames as the trace shows it: headers with TCP numbers
//! relative to each direction's first, the outer tunnel header beside the
//! inner packet, what changed from the hop before, and where the packet
//! ended (delivered, dropped as a recorded verdict says, or last seen on a
//! hop). It knows packets, not scenarios or captures.

use std::collections::HashMap;
use std::net::IpAddr;

use hoplab_dataplane::wire::{self, Summary, L4};

use super::decode::Seen;
use super::hop::{icmp_kind, Change, Changes, Dir, End, Endpoint, Header, Rewrite, Tunnel};
use super::{Hop, Packet};
use crate::capture::verdicts::{Key, Verdicts, Where};

/// Per-flow base sequence numbers, one per direction (client → server first).
#[derive(Default)]
pub(super) struct RelSeq {
    base: [Option<u32>; 2],
}

impl RelSeq {
    fn rel(&mut self, s: &Summary, from_client: bool) -> Summary {
        let mut s = s.clone();
        if let L4::Tcp {
            seq, ack, flags, ..
        } = &mut s.l4
        {
            let d = usize::from(!from_client);
            let base = *self.base[d].get_or_insert(*seq);
            *seq = seq.wrapping_sub(base);
            if *flags & wire::tcp_flags::ACK != 0 {
                // The peer's base; its SYN-ACK carries our ISN + 1 as ack.
                let peer = *self.base[1 - d].get_or_insert(ack.wrapping_sub(1));
                *ack = ack.wrapping_sub(peer);
            }
        }
        s
    }
}

/// What differs between two hops: the tunnel's start or end, or its outer
/// header's changes, then the (inner) packet's own.
fn changes(prev: &Shown, cur: &Shown) -> Option<Changes> {
    let mut v = Vec::new();
    match (&prev.outer, &cur.outer) {
        (None, Some(o)) => v.push(Change::Encapsulated(Tunnel::of(o))),
        (Some(o), None) => v.push(Change::Decapsulated(Tunnel::of(o))),
        (Some(p), Some(c)) => field_changes(p, c, true, &mut v),
        (None, None) => {}
    }
    field_changes(&prev.s, &cur.s, false, &mut v);
    (!v.is_empty()).then_some(Changes(v))
}

fn field_changes(prev: &Summary, cur: &Summary, outer: bool, v: &mut Vec<Change>) {
    let mut push = |field| v.push(Change::Rewritten { outer, field });
    let ((ps, pd), (cs, cd)) = (Endpoint::of(prev), Endpoint::of(cur));
    if ps != cs {
        push(Rewrite::Src(ps, cs));
    }
    if pd != cd {
        push(Rewrite::Dst(pd, cd));
    }
    if prev.echo_id() != cur.echo_id() {
        push(Rewrite::IcmpId(prev.echo_id(), cur.echo_id()));
    }
    if prev.ttl != cur.ttl {
        push(Rewrite::Ttl(prev.ttl, cur.ttl));
    }
    if prev.len != cur.len {
        push(Rewrite::Len(prev.len, cur.len));
    }
}

/// The recorded drop of the packet whose last hop is `last`: looked up in
/// the host it was last seen entering (or leaving: a drop in the output
/// path after the capture, or by the dataplane process reading the TUN),
/// by the fields it entered with. An nftables or impairment drop is of a
/// bare packet; a dataplane's drop of a packet read from an interface only
/// on that interface; a net manager's drop of a tunnel datagram's payload
/// only on an encapsulated hop (its key is the inner packet's).
fn drop_of(drops: &Verdicts, last: &Seen) -> Option<End> {
    if drops.is_empty() {
        return None;
    }
    recorded_drop(drops, last).or_else(|| kernel_drop(drops, last))
}

/// A drop of [`drop_of`] recorded by nftables, an impairment or a dataplane.
fn recorded_drop(drops: &Verdicts, last: &Seen) -> Option<End> {
    let d = drops.find(&last.at.host, &Key::of(&last.s))?;
    let (at, iface) = match (&d.at, last.outer.is_some()) {
        (Where::Chain(c), false) => (c.clone(), false),
        (Where::Iface(i), false) if *i == last.at.ifname => (i.clone(), true),
        (Where::Tunnel, true) => (last.at.ifname.clone(), true),
        _ => return None,
    };
    Some(End::Dropped {
        host: d.host.clone(),
        at,
        by: d.by.clone(),
        why: d.why.clone(),
        iface,
    })
}

/// One hop's headers as rendered: the packet (TCP numbers relative) and,
/// when tunnelled, the datagram that carries it.
struct Shown {
    s: Summary,
    outer: Option<Summary>,
}

pub(super) fn render(
    hops: &[&Seen],
    tcp: Option<(&mut RelSeq, bool)>,
    owner: &HashMap<IpAddr, String>,
    drops: &Verdicts,
) -> Packet {
    let mut tcp = tcp;
    let mut out: Vec<Hop> = Vec::new();
    let mut prev: Option<Shown> = None;
    for h in hops {
        let s = match tcp.as_mut() {
            Some((rel, fwd)) => rel.rel(&h.s, *fwd),
            None => h.s.clone(),
        };
        let cur = Shown {
            s,
            outer: h.outer.clone(),
        };
        out.push(Hop {
            at: h.at.clone(),
            hdr: Header::of(&cur.s, cur.outer.as_ref()),
            changed: prev.as_ref().and_then(|p| changes(p, &cur)),
        });
        prev = Some(cur);
    }
    let first = &hops[0].s;
    let last = hops.last().expect("a chain has a frame");
    let end = match (drop_of(drops, last), owner.get(&last.s.dst)) {
        (Some(d), _) => d,
        (None, Some(h)) if *h == last.at.host && last.at.dir == Dir::In => {
            End::Delivered { host: h.clone() }
        }
        // A host's own loopback (captured where a scenario lists `HOST/lo`):
        // every host has 127.0.0.0/8, so no owner names it.
        (None, _)
            if last.at.ifname == "lo" && last.at.dir == Dir::In && last.s.dst.is_loopback() =>
        {
            End::Delivered {
                host: last.at.host.clone(),
            }
        }
        _ => flooded_drop(drops, hops, owner.get(&last.s.dst))
            .unwrap_or_else(|| End::LastSeen(last.at.clone())),
    };
    let kind = match &first.l4 {
        L4::Tcp { flags, .. } => format!("tcp {}", wire::flags_text(*flags)),
        L4::Icmp { v6, ty, code, .. } => icmp_kind(*v6, *ty, *code),
        _ => first.proto_name().to_string(),
    };
    let pl = first.payload.len();
    let (src, dst) = Endpoint::of(first);
    Packet {
        packet: format!(
            "{kind} {src} > {dst}{}",
            if pl > 0 {
                format!(" ({pl} B payload)")
            } else {
                String::new()
            }
        ),
        l7: None,
        hops: out,
        end,
    }
}

/// The kernel's drop of the packet whose last hop is `last` (see
/// [`crate::capture::kernel_drops`]): recorded in the host it was last seen
/// in, by the fields it had there (a tunnel datagram: the datagram's own,
/// the kernel knowing no inner packet), a TCP segment also by its sequence
/// and acknowledgement numbers. Shown at the device the kernel named
/// (`dropped at HOST/IFNAME by the kernel (REASON)`), else at the host
/// (`dropped at HOST by the kernel (REASON)`). The caller asks only when no
/// other mechanism recorded a drop of it.
fn kernel_drop(drops: &Verdicts, last: &Seen) -> Option<End> {
    let s = last.outer.as_ref().unwrap_or(&last.s);
    let tcp = match s.l4 {
        L4::Tcp { seq, ack, .. } => Some((seq, ack)),
        _ => None,
    };
    let d = drops.find_kernel(&last.at.host, &Key::of(s), tcp)?;
    let Where::Kernel { iface, .. } = &d.at else {
        return None;
    };
    Some(End::Dropped {
        host: d.host.clone(),
        at: iface.clone().unwrap_or_default(),
        by: d.by.clone(),
        why: d.why.clone(),
        iface: iface.is_some(),
    })
}

/// The end of a packet no copy of which reached its destination's owner,
/// whose last hop's host freed it as a copy for another host's MAC
/// address (`OTHERHOST`: a bridge flooded it, and no port had the owner):
/// `dropped at HOST/IFNAME by the kernel (OTHERHOST)`. While a copy
/// reaches the owner, a flooded copy's free is no drop.
fn flooded_drop(drops: &Verdicts, hops: &[&Seen], owner: Option<&String>) -> Option<End> {
    if hops.iter().any(|h| Some(&h.at.host) == owner) {
        return None;
    }
    let last = hops.last()?;
    let s = last.outer.as_ref().unwrap_or(&last.s);
    let tcp = match s.l4 {
        L4::Tcp { seq, ack, .. } => Some((seq, ack)),
        _ => None,
    };
    let d = drops.find_flooded(&last.at.host, &Key::of(s), tcp)?;
    let Where::Kernel {
        iface: Some(iface), ..
    } = &d.at
    else {
        return None;
    };
    (*iface == last.at.ifname).then(|| End::Dropped {
        host: d.host.clone(),
        at: iface.clone(),
        by: d.by.clone(),
        why: d.why.clone(),
        iface: true,
    })
}
