//! The ladder diagram of a flow (inline SVG): hosts as columns in order of
//! first appearance, each hop a dot on its host's lifeline, a move between
//! hosts an arrow, tunnelled stretches under a band. A NAT or tunnel step
//! carries its rewrites with their values (`dst A → B`) beside its badge;
//! packets that took the same path with the same changes are drawn once,
//! their numbers and TCP numbers listed in the band. A stitched flow is
//! one ladder ([`ladder_of`]): its legs' hosts share the columns, so a
//! proxy is the one column where leg 1's arrows end and leg 2's start,
//! and each leg's packets follow in their own order under a heading (the
//! trace has no clock common to the legs). It knows a flow's packets and
//! their hops; not pages, CSS or the trace's YAML.

use std::fmt::Write;

use super::{dropped_at, escape, is_icmp_error, name_parts, step_name};
use crate::report::glance::{folds, rewrites};
use crate::trace::{End, Hop, Packet, Place};

/// Distance between two host columns.
const COLW: f64 = 180.0;
/// Height of one hop.
const ROW: f64 = 23.0;
/// Height of a packet's title band.
const BAND: f64 = 28.0;
/// Height of a line of rewrites over a hop's label.
const RW_LINE: f64 = 13.0;
/// Width of a character of a 10.5 px monospace rewrite line.
const RW_CW: f64 = 6.4;
/// Extra height of a folded band's second line (the packets it stands for).
const FOLD_LINE: f64 = 16.0;
/// Space after a packet.
const GAP: f64 = 10.0;
/// Height of the host header.
const HEAD: f64 = 44.0;
/// The host header is repeated before every this many packets.
const HEAD_EVERY: usize = 4;
/// Width of a character of an 11 px monospace label (a little generous).
const CW: f64 = 6.7;
/// Width of a character of a 10 px bold monospace badge.
const BCW: f64 = 6.2;
const PAD: f64 = 14.0;

/// What a hop shows beside its dot.
struct HopView<'a> {
    hop: &'a Hop,
    n: usize,
    x: f64,
    y: f64,
    /// Raised above the dot: a line leaves the dot on the label's side.
    raised: bool,
    text: String,
    badges: Vec<(&'static str, String)>,
    /// The rewrites with their values, a line each over the label.
    rewrites: Vec<String>,
    /// Where the label starts.
    lx: f64,
}

fn badge_w(text: &str) -> f64 {
    text.chars().count() as f64 * BCW + 10.0
}

struct PacketView<'a> {
    p: &'a Packet,
    title: String,
    /// Folded packets: each one's anchor and text (number and TCP
    /// numbers), on a second line.
    members: Option<Vec<(String, String)>>,
    /// Where it ended: class and text.
    end: (&'static str, String),
    anchor: String,
    class: &'static str,
    top: f64,
    hops: Vec<HopView<'a>>,
}

/// The columns and extent of a ladder, grown while its packets are laid
/// out.
struct Layout<'a> {
    /// Host columns, in order of first appearance.
    hosts: Vec<&'a str>,
    /// Where the host names are: on top, again every few packets and at
    /// the bottom of long ladders, so a column is named on every screen.
    heads: Vec<f64>,
    min_x: f64,
    max_x: f64,
    /// The next free row.
    y: f64,
}

fn xcol(c: usize) -> f64 {
    c as f64 * COLW
}

impl Layout<'_> {
    fn col(&self, at: &Place) -> usize {
        self.hosts
            .iter()
            .position(|h| *h == at.host)
            .unwrap_or_default()
    }
}

/// One connection's packets in a ladder: the packets, the prefix of
/// their anchors (`{anchor}{n}`), and the lines that head them when the
/// ladder is a stitched flow's (which leg, what joined it, what the proxy
/// changed); none for a flow of one connection.
pub(super) struct Segment<'a> {
    pub(super) packets: &'a [Packet],
    pub(super) anchor: String,
    pub(super) label: Vec<String>,
}

/// Height of a line of a leg's heading.
const LEG_LINE: f64 = 15.0;
/// Space around a leg's heading.
const LEG_GAP: f64 = 10.0;

/// The ladder of `packets` (titled `P1`, `P2`, ... and linked to
/// `#{anchor}{n}`): hosts as columns in order of first appearance, each
/// hop a dot on its host's lifeline, a move between hosts an arrow; the
/// packets of a path drawn once. `flow`: the packets are a step's, so
/// those going back to its client are replies (`un-DNAT`, `un-SNAT`).
pub(super) fn ladder(out: &mut String, packets: &[Packet], anchor: &str, flow: bool) {
    let seg = Segment {
        packets,
        anchor: anchor.to_string(),
        label: Vec::new(),
    };
    ladder_of(out, &[seg], flow);
}

/// One ladder of several connections, e.g. a stitched flow's legs in path
/// order: their hosts' columns shared (a proxy is the one column where leg
/// 1's arrows end and leg 2's start), each segment's packets in its own
/// order under its heading, each segment's first host its client.
pub(super) fn ladder_of(out: &mut String, segs: &[Segment], flow: bool) {
    let mut hosts: Vec<&str> = Vec::new();
    for h in segs.iter().flat_map(|s| s.packets).flat_map(|p| &p.hops) {
        let host = h.at.host.as_str();
        if !hosts.contains(&host) {
            hosts.push(host);
        }
    }
    if hosts.is_empty() {
        return;
    }
    let mut l = Layout {
        min_x: -COLW / 2.0,
        max_x: xcol(hosts.len() - 1) + COLW / 2.0,
        hosts,
        heads: vec![6.0],
        y: HEAD + 6.0,
    };
    let mut views = Vec::new();
    // Each segment's heading: where it starts and its lines.
    let mut labels: Vec<(f64, &[String])> = Vec::new();
    let mut k = 0;
    for seg in segs {
        let packets = seg.packets;
        if !seg.label.is_empty() {
            labels.push((l.y, &seg.label));
            l.y += seg.label.len() as f64 * LEG_LINE + LEG_GAP;
        }
        let first_host = packets
            .first()
            .and_then(|p| p.hops.first())
            .map(|h| h.at.host.as_str());
        let last_host = packets
            .first()
            .and_then(|p| p.hops.last())
            .map(|h| h.at.host.as_str());
        let client = first_host;
        for group in folds(packets) {
            let i = group[0];
            let p = &packets[i];
            let start = p.hops.first().map(|h| h.at.host.as_str());
            let class = if is_icmp_error(p) {
                "oth"
            } else if start.is_some() && start == first_host {
                "fwd"
            } else if start.is_some() && start == last_host {
                "rev"
            } else {
                "oth"
            };
            if k > 0 && k % HEAD_EVERY == 0 {
                l.heads.push(l.y);
                l.y += HEAD - 6.0;
            }
            k += 1;
            let reply = flow && start != client;
            let v = packet_view(&mut l, packets, &group, (class, reply), &seg.anchor);
            views.push(v);
            l.y += GAP;
        }
    }
    if views.len() > 3 {
        l.heads.push(l.y);
        l.y += HEAD - 6.0;
    }
    let height = l.y;
    let min_x = l.min_x - PAD;
    let mut max_x = l.max_x + PAD;
    for v in &views {
        let chars = v.title.chars().count() + v.end.1.chars().count();
        max_x = max_x.max(min_x + 24.0 + chars as f64 * 7.2);
        if let Some(m) = &v.members {
            let chars: usize = m.iter().map(|(_, t)| t.chars().count() + 3).sum();
            max_x = max_x.max(min_x + 24.0 + chars as f64 * CW);
        }
    }
    for line in labels.iter().flat_map(|(_, lines)| lines.iter()) {
        max_x = max_x.max(min_x + 24.0 + line.chars().count() as f64 * 7.2);
    }
    let width = max_x - min_x;

    let _ = write!(
        out,
        "<div class=\"ladder\"><svg width=\"{width:.0}\" height=\"{height:.0}\" \
         viewBox=\"{min_x:.1} 0 {width:.1} {height:.1}\" role=\"img\" \
         aria-label=\"ladder diagram\">"
    );
    // Lifelines.
    for c in 0..l.hosts.len() {
        let _ = write!(
            out,
            "<line class=\"ll\" x1=\"{x:.1}\" y1=\"{HEAD:.1}\" x2=\"{x:.1}\" y2=\"{:.1}\"/>",
            l.heads.last().copied().unwrap_or(0.0).max(height - 12.0),
            x = xcol(c)
        );
    }
    for (top, lines) in &labels {
        leg_heading(out, *top, lines, min_x, width);
    }
    for v in &views {
        draw_packet(out, v, min_x, width);
    }
    host_names(out, &l.hosts, &l.heads);
    out.push_str("</svg></div>\n");
}

/// A segment's heading across the ladder: a dashed rule, then its lines
/// (the first bold).
fn leg_heading(out: &mut String, top: f64, lines: &[String], min_x: f64, width: f64) {
    let _ = write!(
        out,
        "<line x1=\"{:.1}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\" \
         style=\"stroke:#64748b;stroke-width:1.5;stroke-dasharray:6 4\"/>",
        min_x + 4.0,
        top + 2.0,
        min_x + width - 4.0,
        top + 2.0
    );
    for (i, line) in lines.iter().enumerate() {
        let weight = if i == 0 { "bold" } else { "normal" };
        let _ = write!(
            out,
            "<text class=\"leg-h\" x=\"{:.1}\" y=\"{:.1}\" \
             style=\"font:{weight} 12px var(--mono);fill:#334155\">{}</text>",
            min_x + 12.0,
            top + 2.0 + (i + 1) as f64 * LEG_LINE,
            escape(line)
        );
    }
}

/// The packets of `group` (indices into `packets`, the same path) laid
/// out from row `l.y` on as one: the band, the first's hops' dots and
/// labels. `class`: the path's colour; `reply`: it goes back to the client.
fn packet_view<'a>(
    l: &mut Layout,
    packets: &'a [Packet],
    group: &[usize],
    (class, reply): (&'static str, bool),
    prefix: &str,
) -> PacketView<'a> {
    let p = &packets[group[0]];
    let anchor = format!("{prefix}{}", group[0] + 1);
    let top = l.y;
    let members = (group.len() > 1).then(|| {
        group
            .iter()
            .map(|&i| {
                (
                    format!("{prefix}{}", i + 1),
                    format!("P{} {}", i + 1, numbers(&packets[i])),
                )
            })
            .collect::<Vec<_>>()
    });
    l.y += BAND + if members.is_some() { FOLD_LINE } else { 0.0 };
    let mut hv: Vec<HopView> = Vec::new();
    let mut side = 1.0;
    for (j, h) in p.hops.iter().enumerate() {
        let c = l.col(&h.at);
        let x = xcol(c);
        let dir = |a: usize, b: usize| if b > a { 1.0 } else { -1.0 };
        let next = p.hops.get(j + 1).map(|n| l.col(&n.at)).filter(|&n| n != c);
        let prev = j
            .checked_sub(1)
            .map(|k| l.col(&p.hops[k].at))
            .filter(|&k| k != c);
        if let Some(n) = next {
            side = dir(c, n);
        } else if let Some(k) = prev {
            side = dir(k, c);
        }
        let mut badges: Vec<(&'static str, String)> = step_name(h.changed.as_ref(), reply)
            .as_deref()
            .map(name_parts)
            .unwrap_or_default()
            .into_iter()
            .map(|(c, t)| (c, t.to_string()))
            .collect();
        let last = j + 1 == p.hops.len();
        if last && dropped_at(p).is_some() {
            badges.push(("drop", "✕ dropped".into()));
        }
        let rewrites = rewrites(h.changed.as_ref());
        // The rewrites' lines go over the label: the row grows above the dot.
        l.y += rewrites.len() as f64 * RW_LINE;
        let text = format!("{} {}", j + 1, h.at.port());
        let mut w = text.chars().count() as f64 * CW;
        for (_, b) in &badges {
            w += 5.0 + badge_w(b);
        }
        if last && dropped_at(p).is_none() {
            w += 3.0 * CW;
        }
        for r in &rewrites {
            w = w.max(r.chars().count() as f64 * RW_CW);
        }
        let lx = if side > 0.0 { x + 11.0 } else { x - 11.0 - w };
        l.min_x = l.min_x.min(lx);
        l.max_x = l.max_x.max(lx + w);
        hv.push(HopView {
            hop: h,
            n: j + 1,
            x,
            y: l.y + ROW / 2.0,
            raised: next.is_some(),
            text,
            badges,
            rewrites,
            lx,
        });
        l.y += ROW;
    }
    let title = match group.len() {
        1 => format!("P{} {}", group[0] + 1, p.packet),
        n => {
            let (src, dst) = p
                .hops
                .first()
                .map(|h| (h.hdr.src.to_string(), h.hdr.dst.to_string()))
                .unwrap_or_default();
            let proto = p.hops.first().map(|h| h.hdr.transport.proto().to_string());
            format!(
                "{n} packets, one path: {} {src} > {dst}",
                proto.unwrap_or_default()
            )
        }
    };
    let end = match dropped_at(p) {
        Some(_) if matches!(p.end, End::Dropped { .. }) => ("e-bad", format!("  ✕ {}", p.end)),
        Some(at) => ("e-bad", format!("  ✕ dropped: last seen at {at}")),
        None => ("e-ok", format!("  → {}", p.end)),
    };
    PacketView {
        p,
        title,
        members,
        anchor,
        class,
        top,
        hops: hv,
        end,
    }
}

/// What tells the packets of one path apart: TCP flags and relative
/// numbers (`S. seq=0 ack=1`), an echo's sequence, a length otherwise.
fn numbers(p: &Packet) -> String {
    let Some(h) = p.hops.first() else {
        return String::new();
    };
    h.hdr
        .fields()
        .into_iter()
        .filter(|f| !f.outer && matches!(f.key, "flags" | "seq" | "ack" | "len"))
        .map(|f| f.text)
        .collect::<Vec<_>>()
        .join(" ")
}

/// One packet of the ladder: its band, the tunnel under it, its path,
/// dots, labels, and a cross where it was dropped.
fn draw_packet(out: &mut String, v: &PacketView, min_x: f64, width: f64) {
    // The packet's band: number, headers as first seen, where it ended.
    let _ = write!(
        out,
        "<rect class=\"band\" x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" rx=\"4\"/>",
        min_x + 4.0,
        v.top + 3.0,
        width - 8.0,
        BAND - 6.0 + if v.members.is_some() { FOLD_LINE } else { 0.0 }
    );
    let (eclass, etext) = &v.end;
    let _ = write!(
        out,
        "<a href=\"#{}\"><text class=\"bt\" x=\"{:.1}\" y=\"{:.1}\">{}<tspan class=\"{eclass}\">{}</tspan></text></a>",
        escape(&v.anchor),
        min_x + 12.0,
        v.top + BAND / 2.0 + 4.0,
        escape(&v.title),
        escape(etext)
    );
    if let Some(m) = &v.members {
        // Each folded packet links to its own hop table.
        let links: Vec<String> = m
            .iter()
            .map(|(a, t)| format!("<a href=\"#{}\">{}</a>", escape(a), escape(t)))
            .collect();
        let _ = write!(
            out,
            "<text class=\"fold\" x=\"{:.1}\" y=\"{:.1}\">{}</text>",
            min_x + 12.0,
            v.top + BAND / 2.0 + 4.0 + FOLD_LINE,
            links.join(" · ")
        );
    }
    // The tunnel: a wide band under every stretch between two
    // tunnelled hops.
    for w in v.hops.windows(2) {
        if w[0].hop.hdr.outer.is_some() && w[1].hop.hdr.outer.is_some() {
            let _ = write!(
                out,
                "<line class=\"pipe\" x1=\"{:.1}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\"/>",
                w[0].x, w[0].y, w[1].x, w[1].y
            );
        }
    }
    // The path: down a lifeline within a host, an arrow between hosts.
    for w in v.hops.windows(2) {
        let (a, b) = (&w[0], &w[1]);
        if a.x == b.x {
            let _ = write!(
                out,
                "<line class=\"p {}\" x1=\"{:.1}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\"/>",
                v.class, a.x, a.y, b.x, b.y
            );
        } else {
            arrow(out, v.class, (a.x, a.y), (b.x, b.y));
        }
    }
    for h in &v.hops {
        dot(out, v.class, h);
    }
    for h in &v.hops {
        label(out, h);
    }
    // Where it ended.
    if let Some(h) = v.hops.last() {
        if dropped_at(v.p).is_some() {
            cross(out, h.x, h.y);
        }
    }
}

/// A hop's dot, coloured by what the hop did, with its headers as tooltip.
fn dot(out: &mut String, packet_class: &str, h: &HopView) {
    let kind = h.badges.first().map(|b| b.0).filter(|k| *k != "routed");
    let (class, r) = match kind {
        Some("drop") | None => (format!("dot {packet_class}"), 4.5),
        Some(k) => (format!("dot d-{k}"), 5.5),
    };
    let _ = write!(
        out,
        "<circle class=\"{class}\" cx=\"{:.1}\" cy=\"{:.1}\" r=\"{r}\" style=\"stroke-width:2\"><title>{}</title></circle>",
        h.x,
        h.y,
        escape(&format!(
            "{} {}\n{}{}",
            h.n,
            h.hop.at,
            h.hop.hdr,
            h.hop
                .changed
                .as_ref()
                .map(|c| format!("\nchanged: {c}"))
                .unwrap_or_default()
        ))
    );
}

/// The cross of a dropped packet, on its last dot.
fn cross(out: &mut String, x: f64, y: f64) {
    let _ = write!(
        out,
        "<g><circle class=\"xc\" cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"9\"/>\
         <line class=\"x\" x1=\"{:.1}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\"/>\
         <line class=\"x\" x1=\"{:.1}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\"/></g>",
        x - 4.0,
        y - 4.0,
        x + 4.0,
        y + 4.0,
        x - 4.0,
        y + 4.0,
        x + 4.0,
        y - 4.0,
    );
}

/// The host names over their columns, at every `heads` row.
fn host_names(out: &mut String, hosts: &[&str], heads: &[f64]) {
    for &top in heads {
        for (c, host) in hosts.iter().enumerate() {
            let w = (host.chars().count() as f64 * 7.6 + 22.0).max(80.0);
            let x = xcol(c);
            let _ = write!(
                out,
                "<rect class=\"hb\" x=\"{:.1}\" y=\"{top:.1}\" width=\"{w:.1}\" height=\"28\" rx=\"6\"/>\
                 <text class=\"ht\" x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
                x - w / 2.0,
                top + 18.5,
                escape(host)
            );
        }
    }
}

/// An arrow from `a` to `b`, starting and ending short of the dots.
fn arrow(out: &mut String, class: &str, a: (f64, f64), b: (f64, f64)) {
    let (dx, dy) = (b.0 - a.0, b.1 - a.1);
    let len = (dx * dx + dy * dy).sqrt().max(1.0);
    let (ux, uy) = (dx / len, dy / len);
    let (sx, sy) = (a.0 + ux * 6.0, a.1 + uy * 6.0);
    let (tx, ty) = (b.0 - ux * 7.0, b.1 - uy * 7.0);
    let (bx, by) = (tx - ux * 10.0, ty - uy * 10.0);
    let (nx, ny) = (-uy * 4.5, ux * 4.5);
    let _ = write!(
        out,
        "<line class=\"p {class}\" x1=\"{sx:.1}\" y1=\"{sy:.1}\" x2=\"{bx:.1}\" y2=\"{by:.1}\"/>\
         <polygon class=\"ah {class}\" points=\"{tx:.1},{ty:.1} {:.1},{:.1} {:.1},{:.1}\"/>",
        bx + nx,
        by + ny,
        bx - nx,
        by - ny
    );
}

/// A hop's label: number, interface and direction, then its step badges.
fn label(out: &mut String, h: &HopView) {
    let base = if h.raised { h.y - 2.5 } else { h.y + 4.0 };
    let (num, rest) = h.text.split_once(' ').unwrap_or((&h.text, ""));
    let _ = write!(
        out,
        "<text class=\"lbl\" x=\"{:.1}\" y=\"{base:.1}\"><tspan class=\"n\">{}</tspan> {}</text>",
        h.lx,
        escape(num),
        escape(rest)
    );
    let mut x = h.lx + h.text.chars().count() as f64 * CW + 5.0;
    for (class, text) in &h.badges {
        let w = badge_w(text);
        let _ = write!(
            out,
            "<rect class=\"bg bg-{class}\" x=\"{x:.1}\" y=\"{:.1}\" width=\"{w:.1}\" height=\"15\" rx=\"4\"/>\
             <text class=\"tx tx-{class}\" x=\"{:.1}\" y=\"{:.1}\">{}</text>",
            base - 11.0,
            x + 5.0,
            base - 0.5,
            escape(text)
        );
        x += w + 5.0;
    }
    let top = if h.raised { base - 14.0 } else { base - 15.0 };
    let n = h.rewrites.len();
    for (i, r) in h.rewrites.iter().enumerate() {
        let _ = write!(
            out,
            "<text class=\"lbl rw\" x=\"{:.1}\" y=\"{:.1}\">{}</text>",
            h.lx,
            top - (n - 1 - i) as f64 * RW_LINE,
            escape(r)
        );
    }
}
