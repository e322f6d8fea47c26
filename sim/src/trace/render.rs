//! A chain of frames as the trace shows it: headers with TCP numbers
//! relative to each direction's first, the outer tunnel header beside the
//! inner packet, what changed from the hop before, and where the packet
//! ended. It knows packets, not scenarios or captures.

use std::collections::HashMap;
use std::net::IpAddr;

use hoplab_dataplane::wire::{self, Summary, L4};

use super::build::Seen;
use super::{Hop, Packet};

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

fn hdr_text(s: &Summary, outer: Option<&Summary>) -> String {
    let full = s.to_string();
    // Drop the `ack=` of segments without the ACK flag: it means nothing.
    let full = match &s.l4 {
        L4::Tcp { flags, .. } if flags & wire::tcp_flags::ACK == 0 => full.replace(" ack=0", ""),
        _ => full,
    };
    match outer {
        // Only what the outer header's text has that is deterministic:
        // no IP ID, no checksum.
        Some(o) => {
            let ports = o.ports();
            format!(
                "{full} | outer={} outer.src={} outer.dst={} outer.len={} outer.ttl={}",
                o.proto_name(),
                endpoint(o.src, ports.map(|p| p.0)),
                endpoint(o.dst, ports.map(|p| p.1)),
                o.len,
                o.ttl
            )
        }
        None => full,
    }
}

/// `udp SRC > DST` of a tunnel datagram.
fn tunnel_text(o: &Summary) -> String {
    let ports = o.ports();
    format!(
        "{} {} > {}",
        o.proto_name(),
        endpoint(o.src, ports.map(|p| p.0)),
        endpoint(o.dst, ports.map(|p| p.1))
    )
}

fn endpoint(a: IpAddr, p: Option<u16>) -> String {
    match (a, p) {
        (IpAddr::V6(v6), Some(p)) => format!("[{v6}]:{p}"),
        (a, Some(p)) => format!("{a}:{p}"),
        (a, None) => a.to_string(),
    }
}

/// What differs between two hops: the tunnel's start or end, or its outer
/// header's changes, then the (inner) packet's own.
fn changes(prev: &Shown, cur: &Shown) -> Option<String> {
    let mut v = Vec::new();
    match (&prev.outer, &cur.outer) {
        (None, Some(o)) => v.push(format!("encapsulated in {}", tunnel_text(o))),
        (Some(o), None) => v.push(format!("decapsulated from {}", tunnel_text(o))),
        (Some(p), Some(c)) => field_changes(p, c, "outer ", &mut v),
        (None, None) => {}
    }
    field_changes(&prev.s, &cur.s, "", &mut v);
    (!v.is_empty()).then(|| v.join(", "))
}

fn field_changes(prev: &Summary, cur: &Summary, pre: &str, v: &mut Vec<String>) {
    let (pp, cp) = (prev.ports(), cur.ports());
    let (ps, cs) = (
        endpoint(prev.src, pp.map(|p| p.0)),
        endpoint(cur.src, cp.map(|p| p.0)),
    );
    if ps != cs {
        v.push(format!("{pre}src {ps} -> {cs}"));
    }
    let (pd, cd) = (
        endpoint(prev.dst, pp.map(|p| p.1)),
        endpoint(cur.dst, cp.map(|p| p.1)),
    );
    if pd != cd {
        v.push(format!("{pre}dst {pd} -> {cd}"));
    }
    if prev.echo_id() != cur.echo_id() {
        v.push(format!(
            "{pre}icmp id {:?} -> {:?}",
            prev.echo_id(),
            cur.echo_id()
        ));
    }
    if prev.ttl != cur.ttl {
        v.push(format!("{pre}ttl {} -> {}", prev.ttl, cur.ttl));
    }
    if prev.len != cur.len {
        v.push(format!("{pre}len {} -> {}", prev.len, cur.len));
    }
}

/// One field of a hop's `hdr` line: `src` (token 0), `>` (token 1),
/// `dst` (token 2), `proto`, `flags`, or the key of a `key=value` token;
/// `outer` for the tunnel's header after ` | ` (keys `outer`, `outer.src`,
/// ...). Tokens without a key of their own have an empty `key`.
pub struct HdrField<'a> {
    pub key: &'a str,
    /// The whole token, e.g. `ttl=63` or `10.0.0.1:80`.
    pub text: &'a str,
    pub outer: bool,
}

impl<'a> HdrField<'a> {
    /// The value: what follows `=`, or the whole token.
    pub fn value(&self) -> &'a str {
        self.text.split_once('=').map_or(self.text, |(_, v)| v)
    }
}

/// A hop's `hdr` ([`hdr_text`]'s form) split into its fields, in order.
pub fn hdr_fields(hdr: &str) -> Vec<HdrField<'_>> {
    let (inner, outer) = match hdr.split_once(" | ") {
        Some((i, o)) => (i, Some(o)),
        None => (hdr, None),
    };
    let mut v = Vec::new();
    for (i, text) in inner.split(' ').enumerate() {
        let key = match (text.split_once('='), i) {
            (Some((k, _)), _) => k,
            (None, 0) => "src",
            (None, 1) => ">",
            (None, 2) => "dst",
            (None, 3) => "proto",
            (None, 4) => "flags",
            (None, _) => "",
        };
        v.push(HdrField {
            key,
            text,
            outer: false,
        });
    }
    for text in outer.into_iter().flat_map(|o| o.split(' ')) {
        v.push(HdrField {
            key: text.split_once('=').map_or("", |(k, _)| k),
            text,
            outer: true,
        });
    }
    v
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
            hdr: hdr_text(&cur.s, cur.outer.as_ref()),
            changed: prev.as_ref().and_then(|p| changes(p, &cur)),
        });
        prev = Some(cur);
    }
    let first = &hops[0].s;
    let last = hops.last().expect("a chain has a frame");
    let end = match owner.get(&last.s.dst) {
        Some(h) if *h == last.host && !last.outgoing => format!("delivered to {h}"),
        _ => format!("last seen at {}", last.at),
    };
    let kind = match &first.l4 {
        L4::Tcp { flags, .. } => format!("tcp {}", wire::flags_text(*flags)),
        L4::Icmp { ty, .. } => format!("{} type {ty}", first.proto_name()),
        _ => first.proto_name().to_string(),
    };
    let pl = first.payload.len();
    Packet {
        packet: format!(
            "{kind} {} > {}{}",
            endpoint(first.src, first.ports().map(|p| p.0)),
            endpoint(first.dst, first.ports().map(|p| p.1)),
            if pl > 0 {
                format!(" ({pl} B payload)")
            } else {
                String::new()
            }
        ),
        hops: out,
        end,
    }
}
