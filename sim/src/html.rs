//! The pages people look at first: one self-contained HTML page per
//! scenario ([`report`]: a ladder diagram per flow, then every packet's
//! hops with the rewritten fields marked), the index of a run ([`index`])
//! and the snapshot review page ([`diff_page`]).
//!
//! Every page is a single file: inline CSS and inline SVG, no script,
//! nothing fetched (no URL but the relative links to its neighbours: the
//! capture, the reports, the diff). The same input gives the same bytes:
//! no timestamps, no random ids. Everything taken from a trace is escaped.

use std::fmt::Write;

use crate::trace::{hdr_fields, Flow, HdrField, Hop, Packet, Trace};

/// `s` escaped for HTML text and attribute values.
pub fn escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

/// A relative link to `path`: every byte but unreserved ones and `/`
/// percent-encoded (so no scheme, query or fragment can sneak in).
fn href(path: &str) -> String {
    let mut o = String::with_capacity(path.len());
    for b in path.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            o.push(char::from(b));
        } else {
            let _ = write!(o, "%{b:02X}");
        }
    }
    o
}

/// The name of what a hop did to its packet, from its `changed` text:
/// `DNAT` (destination rewritten), `SNAT` (source), `DNAT + SNAT`, `NAT`
/// (only the ICMP echo identifier), each possibly after
/// `tunnel: encapsulate` / `tunnel: decapsulate`; `tunnel: outer
/// rewritten` (the tunnel's own addresses); `routed` (only TTLs);
/// `resized` (only lengths); `None` when nothing changed (bridged, or the
/// same frame seen again).
pub fn step_name(changed: Option<&str>) -> Option<&'static str> {
    const NAMES: [[&str; 5]; 3] = [
        ["", "DNAT", "SNAT", "DNAT + SNAT", "NAT"],
        [
            "tunnel: encapsulate",
            "tunnel: encapsulate + DNAT",
            "tunnel: encapsulate + SNAT",
            "tunnel: encapsulate + DNAT + SNAT",
            "tunnel: encapsulate + NAT",
        ],
        [
            "tunnel: decapsulate",
            "tunnel: decapsulate + DNAT",
            "tunnel: decapsulate + SNAT",
            "tunnel: decapsulate + DNAT + SNAT",
            "tunnel: decapsulate + NAT",
        ],
    ];
    let changed = changed?;
    let (mut tunnel, mut src, mut dst, mut id) = (0, false, false, false);
    let (mut outer_addr, mut ttl, mut len, mut other) = (false, false, false, false);
    for part in changed.split(", ").map(str::trim).filter(|p| !p.is_empty()) {
        if part.starts_with("encapsulated in ") {
            tunnel = 1;
        } else if part.starts_with("decapsulated from ") {
            tunnel = 2;
        } else if let Some(rest) = part.strip_prefix("outer ") {
            if rest.starts_with("src ") || rest.starts_with("dst ") {
                outer_addr = true;
            } else if rest.starts_with("ttl ") {
                ttl = true;
            } else if rest.starts_with("len ") {
                len = true;
            } else {
                other = true;
            }
        } else if part.starts_with("src ") {
            src = true;
        } else if part.starts_with("dst ") {
            dst = true;
        } else if part.starts_with("icmp id ") {
            id = true;
        } else if part.starts_with("ttl ") {
            ttl = true;
        } else if part.starts_with("len ") {
            len = true;
        } else {
            other = true;
        }
    }
    let nat = match (dst, src, id) {
        (true, true, _) => 3,
        (true, false, _) => 1,
        (false, true, _) => 2,
        (false, false, true) => 4,
        (false, false, false) => 0,
    };
    if tunnel != 0 || nat != 0 {
        return Some(NAMES[tunnel][nat]);
    }
    if outer_addr {
        Some("tunnel: outer rewritten")
    } else if ttl {
        Some("routed")
    } else if len {
        Some("resized")
    } else if other {
        Some("changed")
    } else {
        None
    }
}

/// The parts of a step name as (CSS class suffix, text): `tunnel:
/// encapsulate + DNAT` is a tunnel badge and a DNAT badge.
fn name_parts(name: &str) -> Vec<(&'static str, &str)> {
    name.split(" + ")
        .map(|p| {
            let class = match p {
                _ if p.starts_with("tunnel") => "tun",
                "DNAT" | "NAT" => "dnat",
                "SNAT" => "snat",
                "routed" => "routed",
                _ => "misc",
            };
            (class, p)
        })
        .collect()
}

fn badges(name: Option<&str>) -> String {
    let mut o = String::new();
    for (class, text) in name.map(name_parts).unwrap_or_default() {
        let _ = write!(o, "<span class=\"step s-{class}\">{}</span> ", escape(text));
    }
    o.trim_end().to_string()
}

/// Which fields of `hdr` a hop's `changed` rewrote: the keys of
/// [`hdr_fields`], and whether the whole outer header is new (encapsulated).
fn changed_keys(changed: Option<&str>) -> (Vec<String>, bool) {
    let mut keys = Vec::new();
    let mut all_outer = false;
    for part in changed.unwrap_or("").split(", ").map(str::trim) {
        if part.starts_with("encapsulated in ") {
            all_outer = true;
            continue;
        }
        let (prefix, rest) = match part.strip_prefix("outer ") {
            Some(r) => ("outer.", r),
            None => ("", part),
        };
        let field = if rest.starts_with("icmp id ") {
            "id"
        } else {
            match rest.split(' ').next() {
                Some(f @ ("src" | "dst" | "ttl" | "len")) => f,
                _ => continue,
            }
        };
        keys.push(format!("{prefix}{field}"));
    }
    (keys, all_outer)
}

/// `hdr` as HTML, each token for which `marked` holds inside `<mark>`,
/// the outer header (if any) on a line of its own.
fn hdr_html(hdr: &str, marked: impl Fn(&HdrField) -> bool) -> String {
    let toks = hdr_fields(hdr);
    let mut o = String::new();
    let mut in_outer = false;
    for (i, t) in toks.iter().enumerate() {
        if t.outer && !in_outer {
            in_outer = true;
            o.push_str("<br><span class=\"outer\">| ");
        } else if i > 0 {
            o.push(' ');
        }
        if marked(t) {
            let _ = write!(o, "<mark>{}</mark>", escape(t.text));
        } else {
            o.push_str(&escape(t.text));
        }
    }
    if in_outer {
        o.push_str("</span>");
    }
    o
}

/// `hdr` with the fields its hop rewrote marked.
fn hdr_marked(h: &Hop) -> String {
    let (keys, all_outer) = changed_keys(h.changed.as_deref());
    hdr_html(&h.hdr, |t| {
        (t.outer && all_outer) || (!t.key.is_empty() && keys.iter().any(|k| k == t.key))
    })
}

/// `changed` as HTML, one change per line.
fn changed_html(changed: Option<&str>) -> String {
    changed
        .map(|c| c.split(", ").map(escape).collect::<Vec<_>>().join("<br>"))
        .unwrap_or_default()
}

/// `what` with an `s` unless there is one.
fn plural(n: usize, what: &str) -> String {
    if n == 1 {
        what.to_string()
    } else {
        format!("{what}s")
    }
}

fn host_of(at: &str) -> &str {
    at.split_once('/').map_or(at, |(h, _)| h)
}

/// `eth0 out` of `host/eth0 out`.
fn port_of(at: &str) -> &str {
    at.split_once('/').map_or(at, |(_, p)| p)
}

fn dropped_at(p: &Packet) -> Option<&str> {
    p.end.strip_prefix("last seen at ")
}

fn flow_failed(f: &Flow) -> bool {
    f.result.starts_with("FAILED")
}

fn flow_ok(f: &Flow) -> bool {
    f.result.starts_with("ok")
}

const CSS: &str = r#"
:root{--mono:ui-monospace,"SFMono-Regular","DejaVu Sans Mono","Liberation Mono",Menlo,Consolas,monospace;
--sans:system-ui,-apple-system,"Segoe UI",Roboto,"Noto Sans","DejaVu Sans",Helvetica,Arial,sans-serif;
--fg:#1f2937;--muted:#6b7280;--line:#e5e7eb;--ok:#15803d;--bad:#b91c1c;--warn:#b45309;
--fwd:#2563eb;--rev:#059669;--oth:#c026d3}
*{box-sizing:border-box}
html{-webkit-print-color-adjust:exact;print-color-adjust:exact}
body{margin:0;font:14px/1.45 var(--sans);color:var(--fg);background:#f3f4f6}
main{max-width:1380px;margin:0 auto;padding:22px 18px 40px}
h1{font-size:23px;margin:0 0 6px;letter-spacing:-.01em}
h2{font-size:18px;margin:0 0 4px}
h3{font-size:14px;margin:18px 0 6px}
a{color:#1d4ed8;text-decoration:none}a:hover{text-decoration:underline}
code,.mono{font-family:var(--mono);font-size:12.5px}
.muted{color:var(--muted)}
.card{background:#fff;border:1px solid var(--line);border-radius:10px;padding:14px 18px;margin:14px 0}
.head p{margin:4px 0}
.chips{display:flex;flex-wrap:wrap;gap:8px;margin:10px 0 2px}
.chip{background:#f9fafb;border:1px solid var(--line);border-radius:8px;padding:3px 10px;font-size:13px}
.chip b{font-size:15px}
.badge{display:inline-block;padding:1px 8px;border-radius:999px;font:600 12px/1.5 var(--sans);border:1px solid transparent;white-space:nowrap;vertical-align:1px}
.b-ok{background:#dcfce7;color:#166534;border-color:#86efac}
.b-bad{background:#fee2e2;color:#991b1b;border-color:#fca5a5}
.b-warn{background:#fef3c7;color:#92400e;border-color:#fcd34d}
.b-info{background:#dbeafe;color:#1e40af;border-color:#93c5fd}
.b-none{background:#f3f4f6;color:#374151;border-color:#d1d5db}
.step{display:inline-block;font:600 11px/1.6 var(--mono);padding:0 6px;border-radius:5px;border:1px solid transparent;white-space:nowrap;margin:1px 0}
.s-tun{background:#ccfbf1;color:#115e59;border-color:#5eead4}
.s-dnat{background:#ffedd5;color:#9a3412;border-color:#fdba74}
.s-snat{background:#ede9fe;color:#5b21b6;border-color:#c4b5fd}
.s-routed{background:#f3f4f6;color:#4b5563;border-color:#e5e7eb;font-weight:400}
.s-misc{background:#fef9c3;color:#854d0e;border-color:#fde047}
.s-drop{background:#fee2e2;color:#991b1b;border-color:#fca5a5}
.toc{margin:6px 0 0;padding-left:20px}.toc li{margin:2px 0}
.legend{display:flex;flex-wrap:wrap;gap:6px 18px;font-size:12.5px;color:#374151;margin-top:8px}
.legend span.k{display:inline-block;width:22px;height:3px;vertical-align:middle;margin-right:5px;border-radius:2px}
.flow.failed{border-color:#fca5a5;box-shadow:inset 4px 0 0 var(--bad)}
.flow dl{display:grid;grid-template-columns:max-content 1fr;gap:2px 12px;margin:8px 0 4px}
.flow dt{color:var(--muted)}.flow dd{margin:0;font-family:var(--mono);font-size:12.5px}
.ladder{overflow-x:auto;background:#fff;border:1px solid var(--line);border-radius:8px;margin:10px 0 6px}
.ladder svg{display:block;margin:0 auto}
.ladder text{font-family:var(--mono);font-size:11px;fill:#111827}
.ladder .ll{stroke:#d1d5db;stroke-width:1.5}
.ladder .hb{fill:#1f2937}
.ladder .ht{fill:#fff;font-weight:700;font-size:12px}
.ladder .band{fill:#f8fafc;stroke:#e5e7eb}
.ladder .bt{font-weight:700;font-size:11.5px}
.ladder .bt .e-ok{fill:var(--ok)}.ladder .bt .e-bad{fill:var(--bad)}
.ladder .p{fill:none;stroke-width:2.2;stroke-linecap:round}
.ladder .fwd{stroke:var(--fwd)}.ladder .rev{stroke:var(--rev)}.ladder .oth{stroke:var(--oth)}
.ladder .ah.fwd{fill:var(--fwd);stroke:none}.ladder .ah.rev{fill:var(--rev);stroke:none}.ladder .ah.oth{fill:var(--oth);stroke:none}
.ladder .pipe{stroke:#14b8a6;stroke-opacity:.2;stroke-width:12;stroke-linecap:round;fill:none}
.ladder .dot{fill:#fff;stroke-width:2}
.ladder .d-tun{fill:#14b8a6;stroke:#0f766e}.ladder .d-dnat{fill:#f97316;stroke:#c2410c}
.ladder .d-snat{fill:#8b5cf6;stroke:#6d28d9}.ladder .d-misc{fill:#eab308;stroke:#a16207}
.ladder .lbl{paint-order:stroke;stroke:#fff;stroke-width:4px;stroke-linejoin:round}
.ladder .lbl .n{fill:#9ca3af}
.ladder .bg{stroke-width:1}
.ladder .bg-tun{fill:#ccfbf1;stroke:#5eead4}.ladder .tx-tun{fill:#115e59}
.ladder .bg-dnat{fill:#ffedd5;stroke:#fdba74}.ladder .tx-dnat{fill:#9a3412}
.ladder .bg-snat{fill:#ede9fe;stroke:#c4b5fd}.ladder .tx-snat{fill:#5b21b6}
.ladder .bg-routed{fill:#f3f4f6;stroke:#e5e7eb}.ladder .tx-routed{fill:#6b7280}
.ladder .bg-misc{fill:#fef9c3;stroke:#fde047}.ladder .tx-misc{fill:#854d0e}
.ladder .bg-drop{fill:#dc2626;stroke:#991b1b}.ladder .tx-drop{fill:#fff}
.ladder .tx{font-size:10px;font-weight:700}
.ladder .xc{fill:#dc2626;stroke:#fff;stroke-width:2}.ladder .x{stroke:#fff;stroke-width:2.4;stroke-linecap:round}
.ladder .ok{fill:var(--ok);font-weight:700}
details{margin-top:6px}summary{cursor:pointer;color:#374151;font-weight:600;font-size:13px}
table{border-collapse:collapse;width:100%;background:#fff}
th,td{border-bottom:1px solid var(--line);padding:4px 8px;text-align:left;vertical-align:top}
th{font-size:12px;color:var(--muted);font-weight:600;background:#f9fafb}
.hops{table-layout:fixed}.hops th:nth-child(1){width:3em}.hops th:nth-child(2){width:150px}
.hops th:nth-child(4){width:190px}.hops th:nth-child(5){width:24%}
.hops td.n{color:var(--muted);text-align:right}
.hops td.at{font-family:var(--mono);font-size:12px;overflow-wrap:anywhere}
.hops td.hdr{font-family:var(--mono);font-size:12px;overflow-wrap:anywhere}
.hops td.chg{font-family:var(--mono);font-size:11.5px;color:#4b5563;overflow-wrap:anywhere}
.hops td.st{white-space:normal}
.outer{color:var(--muted)}
mark{background:#fde68a;color:#111827;border-radius:3px;padding:0 2px;box-shadow:0 0 0 1px #f59e0b inset}
tr.drop td{background:#fef2f2}tr.drop td.n{box-shadow:inset 3px 0 0 var(--bad)}
.pk{font-family:var(--mono);font-size:12.5px}
.end-ok{color:var(--ok);font-weight:600}.end-bad{color:var(--bad);font-weight:700}
ol.cp{margin:4px 0;padding-left:28px;font-family:var(--mono);font-size:12.5px}
.counters{display:flex;flex-wrap:wrap;gap:14px}
.counters table{width:auto;min-width:280px;border:1px solid var(--line)}
.counters caption{text-align:left;font-family:var(--mono);font-weight:700;padding:4px 0}
.counters td.v{text-align:right;font-family:var(--mono)}
.index td.name{font-family:var(--mono);font-weight:600}
.index tr.st-failed td{background:#fef2f2}.index tr.st-diff td{background:#fffbeb}
.difflines{font-family:var(--mono);font-size:12.5px;margin:4px 0;padding-left:34px}
.difflines li{margin:1px 0;overflow-wrap:anywhere}
.accept{background:#eff6ff;border:1px solid #bfdbfe;border-radius:8px;padding:10px 14px}
.sbs td{font-family:var(--mono);font-size:11.5px;overflow-wrap:anywhere;width:47%}
.sbs td.n{width:auto;color:var(--muted);text-align:right}
.sbs td .chg{color:#4b5563;display:block;margin-top:2px}
.sbs th.side{font-size:13px;color:#111827}
.sbs mark{background:#fecaca;box-shadow:0 0 0 1px #ef4444 inset}
.sbs td.none{color:var(--muted);background:#f9fafb}
.sbs tr.same td{color:#6b7280}.sbs tr.chg td{background:#fffbeb}.sbs tr.chg td.none{background:#f3f4f6}
footer{color:var(--muted);font-size:12px;margin-top:24px}
@media print{body{background:#fff;font-size:11px}main{max-width:none;padding:0}
.card{border:none;padding:6px 0;margin:8px 0}.ladder{overflow:visible;border:none}
.ladder svg{max-width:100%;height:auto}tr{break-inside:avoid}h2,h3{break-after:avoid}
a{color:inherit}}
"#;

fn page(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <link rel=\"icon\" href=\"data:,\">\n<title>{}</title>\n<style>{CSS}</style>\n\
         </head>\n<body>\n<main>\n{body}</main>\n</body>\n</html>\n",
        escape(title)
    )
}

// ---------------------------------------------------------------------------
// The ladder diagram.

/// Distance between two host columns.
const COLW: f64 = 180.0;
/// Height of one hop.
const ROW: f64 = 23.0;
/// Height of a packet's title band.
const BAND: f64 = 28.0;
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
    /// Where the label starts.
    lx: f64,
}

fn badge_w(text: &str) -> f64 {
    text.chars().count() as f64 * BCW + 10.0
}

struct PacketView<'a> {
    p: &'a Packet,
    title: String,
    /// Where it ended: class and text.
    end: (&'static str, String),
    anchor: String,
    class: &'static str,
    top: f64,
    hops: Vec<HopView<'a>>,
}

/// The ladder of `packets` (titled `P1`, `P2`, ... and linked to
/// `#{anchor}{n}`): hosts as columns in order of first appearance, each
/// hop a dot on its host's lifeline, a move between hosts an arrow.
fn ladder(out: &mut String, packets: &[Packet], anchor: &str) {
    let mut hosts: Vec<&str> = Vec::new();
    for h in packets.iter().flat_map(|p| &p.hops) {
        let host = host_of(&h.at);
        if !hosts.contains(&host) {
            hosts.push(host);
        }
    }
    if hosts.is_empty() {
        return;
    }
    let col = |at: &str| {
        hosts
            .iter()
            .position(|h| *h == host_of(at))
            .unwrap_or_default()
    };
    let xcol = |c: usize| c as f64 * COLW;
    let first_host = packets
        .first()
        .and_then(|p| p.hops.first())
        .map(|h| host_of(&h.at));
    let last_host = packets
        .first()
        .and_then(|p| p.hops.last())
        .map(|h| host_of(&h.at));

    // Layout.
    let mut views = Vec::new();
    let mut y = HEAD + 6.0;
    // Where the host names are: on top, again every few packets and at
    // the bottom of long ladders, so a column is named on every screen.
    let mut heads = vec![6.0];
    let (mut min_x, mut max_x) = (-COLW / 2.0, xcol(hosts.len() - 1) + COLW / 2.0);
    for (i, p) in packets.iter().enumerate() {
        let start = p.hops.first().map(|h| host_of(&h.at));
        let class = if start.is_some() && start == first_host {
            "fwd"
        } else if start.is_some() && start == last_host {
            "rev"
        } else {
            "oth"
        };
        if i > 0 && i % HEAD_EVERY == 0 {
            heads.push(y);
            y += HEAD - 6.0;
        }
        let top = y;
        y += BAND;
        let mut hv: Vec<HopView> = Vec::new();
        let mut side = 1.0;
        for (j, h) in p.hops.iter().enumerate() {
            let c = col(&h.at);
            let x = xcol(c);
            let dir = |a: usize, b: usize| if b > a { 1.0 } else { -1.0 };
            let next = p.hops.get(j + 1).map(|n| col(&n.at)).filter(|&n| n != c);
            let prev = j
                .checked_sub(1)
                .map(|k| col(&p.hops[k].at))
                .filter(|&k| k != c);
            if let Some(n) = next {
                side = dir(c, n);
            } else if let Some(k) = prev {
                side = dir(k, c);
            }
            let mut badges: Vec<(&'static str, String)> = step_name(h.changed.as_deref())
                .map(name_parts)
                .unwrap_or_default()
                .into_iter()
                .map(|(c, t)| (c, t.to_string()))
                .collect();
            let last = j + 1 == p.hops.len();
            if last && dropped_at(p).is_some() {
                badges.push(("drop", "✕ dropped".into()));
            }
            let text = format!("{} {}", j + 1, port_of(&h.at));
            let mut w = text.chars().count() as f64 * CW;
            for (_, b) in &badges {
                w += 5.0 + badge_w(b);
            }
            if last && dropped_at(p).is_none() {
                w += 3.0 * CW;
            }
            let lx = if side > 0.0 { x + 11.0 } else { x - 11.0 - w };
            min_x = min_x.min(lx);
            max_x = max_x.max(lx + w);
            hv.push(HopView {
                hop: h,
                n: j + 1,
                x,
                y: y + ROW / 2.0,
                raised: next.is_some(),
                text,
                badges,
                lx,
            });
            y += ROW;
        }
        let title = format!("P{} {}", i + 1, p.packet);
        let end = match dropped_at(p) {
            Some(at) => ("e-bad", format!("  ✕ dropped: last seen at {at}")),
            None => ("e-ok", format!("  → {}", p.end)),
        };
        views.push(PacketView {
            p,
            title,
            end,
            anchor: format!("{anchor}{}", i + 1),
            class,
            top,
            hops: hv,
        });
        y += GAP;
    }
    if packets.len() > 3 {
        heads.push(y);
        y += HEAD - 6.0;
    }
    let height = y;
    min_x -= PAD;
    max_x += PAD;
    for v in &views {
        let chars = v.title.chars().count() + v.end.1.chars().count();
        max_x = max_x.max(min_x + 24.0 + chars as f64 * 7.2);
    }
    let width = max_x - min_x;

    let _ = write!(
        out,
        "<div class=\"ladder\"><svg width=\"{width:.0}\" height=\"{height:.0}\" \
         viewBox=\"{min_x:.1} 0 {width:.1} {height:.1}\" role=\"img\" \
         aria-label=\"ladder diagram\">"
    );
    // Lifelines.
    for c in 0..hosts.len() {
        let _ = write!(
            out,
            "<line class=\"ll\" x1=\"{x:.1}\" y1=\"{HEAD:.1}\" x2=\"{x:.1}\" y2=\"{:.1}\"/>",
            heads.last().copied().unwrap_or(0.0).max(height - 12.0),
            x = xcol(c)
        );
    }
    for v in &views {
        // The packet's band: number, headers as first seen, where it ended.
        let _ = write!(
            out,
            "<rect class=\"band\" x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" rx=\"4\"/>",
            min_x + 4.0,
            v.top + 3.0,
            width - 8.0,
            BAND - 6.0
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
        // The tunnel: a wide band under every stretch between two
        // tunnelled hops.
        for w in v.hops.windows(2) {
            if w[0].hop.hdr.contains(" | outer=") && w[1].hop.hdr.contains(" | outer=") {
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
        // Dots.
        for h in &v.hops {
            let kind = h.badges.first().map(|b| b.0).filter(|k| *k != "routed");
            let (class, r) = match kind {
                Some("drop") | None => (format!("dot {}", v.class), 4.5),
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
                        .as_deref()
                        .map(|c| format!("\nchanged: {c}"))
                        .unwrap_or_default()
                ))
            );
        }
        // Labels.
        for h in &v.hops {
            label(out, h);
        }
        // Where it ended.
        if let Some(h) = v.hops.last() {
            if dropped_at(v.p).is_some() {
                let _ = write!(
                    out,
                    "<g><circle class=\"xc\" cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"9\"/>\
                     <line class=\"x\" x1=\"{:.1}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\"/>\
                     <line class=\"x\" x1=\"{:.1}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\"/></g>",
                    h.x - 4.0,
                    h.y - 4.0,
                    h.x + 4.0,
                    h.y + 4.0,
                    h.x - 4.0,
                    h.y + 4.0,
                    h.x + 4.0,
                    h.y - 4.0,
                    x = h.x,
                    y = h.y
                );
            }
        }
    }
    // Host names.
    for top in heads {
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
    out.push_str("</svg></div>\n");
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
}

// ---------------------------------------------------------------------------
// The report.

fn end_html(p: &Packet) -> String {
    match dropped_at(p) {
        Some(at) => format!(
            "<span class=\"end-bad\">✕ dropped: last seen at {}</span>",
            escape(at)
        ),
        None => format!("<span class=\"end-ok\">{}</span>", escape(&p.end)),
    }
}

fn hop_table(out: &mut String, p: &Packet, title: &str, id: &str) {
    let _ = writeln!(
        out,
        "<h3 id=\"{}\">{} <span class=\"pk\">{}</span> · {}</h3>",
        escape(id),
        escape(title),
        escape(&p.packet),
        end_html(p)
    );
    out.push_str(
        "<table class=\"hops\"><thead><tr><th>#</th><th>at</th><th>headers (rewritten fields marked)</th>\
         <th>step</th><th>changed</th></tr></thead><tbody>\n",
    );
    let dropped = dropped_at(p).is_some();
    for (i, h) in p.hops.iter().enumerate() {
        let last = i + 1 == p.hops.len();
        let mut step = badges(step_name(h.changed.as_deref()));
        if last && dropped {
            step.push_str(" <span class=\"step s-drop\">✕ dropped after this hop</span>");
        }
        let _ = writeln!(
            out,
            "<tr{}><td class=\"n\">{}</td><td class=\"at\">{}</td><td class=\"hdr\">{}</td>\
             <td class=\"st\">{}</td><td class=\"chg\">{}</td></tr>",
            if last && dropped {
                " class=\"drop\""
            } else {
                ""
            },
            i + 1,
            escape(&h.at),
            hdr_marked(h),
            step.trim(),
            changed_html(h.changed.as_deref())
        );
    }
    out.push_str("</tbody></table>\n");
}

fn packets_block(out: &mut String, packets: &[Packet], anchor: &str) {
    if packets.is_empty() {
        out.push_str("<p class=\"muted\">No packet was captured for this step.</p>\n");
        return;
    }
    ladder(out, packets, anchor);
    let _ = writeln!(
        out,
        "<details open><summary>Hops of each packet ({} packet{})</summary>",
        packets.len(),
        if packets.len() == 1 { "" } else { "s" }
    );
    for (i, p) in packets.iter().enumerate() {
        hop_table(
            out,
            p,
            &format!("P{}", i + 1),
            &format!("{anchor}{}", i + 1),
        );
    }
    out.push_str("</details>\n");
}

fn flow_badge(f: &Flow) -> &'static str {
    if flow_failed(f) {
        "<span class=\"badge b-bad\">FAILED</span>"
    } else if flow_ok(f) {
        "<span class=\"badge b-ok\">ok</span>"
    } else {
        "<span class=\"badge b-none\">unknown</span>"
    }
}

const LEGEND: &str = "<div class=\"legend\">\
<span><span class=\"k\" style=\"background:var(--fwd)\"></span>packet from the step's client</span>\
<span><span class=\"k\" style=\"background:var(--rev)\"></span>reply</span>\
<span><span class=\"k\" style=\"background:var(--oth)\"></span>other (e.g. ICMP error)</span>\
<span><span class=\"k\" style=\"background:#99f6e4;height:10px\"></span>inside the tunnel</span>\
<span><span class=\"step s-dnat\">DNAT</span> destination rewritten</span>\
<span><span class=\"step s-snat\">SNAT</span> source rewritten</span>\
<span><span class=\"step s-tun\">tunnel: encapsulate</span> / <span class=\"step s-tun\">decapsulate</span> UDP tunnel starts / ends</span>\
<span><span class=\"step s-routed\">routed</span> only TTL changed</span>\
<span><span class=\"step s-drop\">✕ dropped</span> last seen here</span>\
</div>";

/// The page of one scenario's trace; `capture_file` is linked relatively
/// (the page sits beside the capture).
pub fn report(trace: &Trace, capture_file: &str) -> String {
    let mut b = String::new();
    let all: Vec<&Packet> = trace
        .flows
        .iter()
        .flat_map(|f| &f.packets)
        .chain(&trace.other)
        .collect();
    let dropped = all.iter().filter(|p| dropped_at(p).is_some()).count();
    let failed = trace.flows.iter().filter(|f| flow_failed(f)).count();
    let hops: usize = all.iter().map(|p| p.hops.len()).sum();

    b.push_str("<header class=\"card head\">\n");
    let _ = writeln!(
        b,
        "<h1>Scenario <span class=\"mono\" style=\"font-size:22px\">{}</span>: per-hop trace</h1>",
        escape(&trace.scenario)
    );
    let _ = writeln!(
        b,
        "<p>Capture: <a href=\"{}\"><code>{}</code></a> — open it in Wireshark (one interface \
         per <code>host/ifname</code>, direction flags set). TCP sequence numbers are relative; \
         checksums, IP IDs, MACs and timestamps are left out.</p>",
        escape(&href(capture_file)),
        escape(capture_file)
    );
    b.push_str("<div class=\"chips\">");
    let chip = |b: &mut String, n: usize, what: String, class: &str| {
        let _ = write!(b, "<span class=\"chip {class}\"><b>{n}</b> {what}</span>");
    };
    chip(
        &mut b,
        trace.flows.len(),
        plural(trace.flows.len(), "flow"),
        "",
    );
    chip(&mut b, all.len(), plural(all.len(), "packet"), "");
    chip(&mut b, hops, plural(hops, "hop"), "");
    if dropped > 0 {
        chip(&mut b, dropped, "dropped".into(), "end-bad");
    }
    if failed > 0 {
        chip(&mut b, failed, plural(failed, "failed flow"), "end-bad");
    }
    if !trace.other.is_empty() {
        chip(&mut b, trace.other.len(), "of no flow".into(), "");
    }
    b.push_str("</div>\n");
    if !trace.flows.is_empty() || !trace.other.is_empty() {
        b.push_str("<ol class=\"toc\">\n");
        for (i, f) in trace.flows.iter().enumerate() {
            let _ = writeln!(
                b,
                "<li><a href=\"#f{}\"><b>{}</b></a> {} <span class=\"muted\">{}</span> — {}</li>",
                i + 1,
                escape(&f.step),
                flow_badge(f),
                escape(&f.sent),
                escape(&f.result)
            );
        }
        if !trace.other.is_empty() {
            b.push_str("<li><a href=\"#other\">packets of no flow</a></li>\n");
        }
        b.push_str("</ol>\n");
    }
    b.push_str(LEGEND);
    b.push_str("\n</header>\n");

    for (i, f) in trace.flows.iter().enumerate() {
        let _ = writeln!(
            b,
            "<section class=\"card flow{}\" id=\"f{}\">",
            if flow_failed(f) { " failed" } else { "" },
            i + 1
        );
        let _ = writeln!(
            b,
            "<h2>Flow {}: <span class=\"mono\" style=\"font-size:16px\">{}</span> {}</h2>",
            i + 1,
            escape(&f.step),
            flow_badge(f)
        );
        let _ = writeln!(
            b,
            "<dl><dt>sent</dt><dd>{}</dd><dt>result</dt><dd{}>{}</dd></dl>",
            escape(&f.sent),
            if flow_failed(f) {
                " class=\"end-bad\""
            } else {
                ""
            },
            escape(&f.result)
        );
        packets_block(&mut b, &f.packets, &format!("f{}p", i + 1));
        b.push_str("</section>\n");
    }
    if !trace.other.is_empty() {
        b.push_str("<section class=\"card flow\" id=\"other\">\n<h2>Packets of no flow</h2>\n");
        b.push_str("<p class=\"muted\">IP packets that belong to no traffic step.</p>\n");
        packets_block(&mut b, &trace.other, "op");
        b.push_str("</section>\n");
    }
    if !trace.control_plane.is_empty() {
        b.push_str(
            "<section class=\"card\" id=\"control-plane\">\n<h2>Control plane</h2>\n\
             <p class=\"muted\">The simulated service managers' answers, in order.</p>\n<ol class=\"cp\">\n",
        );
        for l in &trace.control_plane {
            let _ = writeln!(b, "<li>{}</li>", escape(l));
        }
        b.push_str("</ol>\n</section>\n");
    }
    if !trace.counters.is_empty() {
        b.push_str(
            "<section class=\"card\" id=\"counters\">\n<h2>Counters</h2>\n\
             <p class=\"muted\">Read from the dataplane at the end of the traffic (not zero, not timing-dependent).</p>\n\
             <div class=\"counters\">\n",
        );
        for (who, m) in &trace.counters {
            let _ = writeln!(
                b,
                "<table><caption>{}</caption><thead><tr><th>counter</th><th>value</th></tr></thead><tbody>",
                escape(who)
            );
            for (k, v) in m {
                let _ = writeln!(
                    b,
                    "<tr><td class=\"mono\">{}</td><td class=\"v\">{v}</td></tr>",
                    escape(k)
                );
            }
            b.push_str("</tbody></table>\n");
        }
        b.push_str("</div>\n</section>\n");
    }
    if trace.undecodable > 0 {
        let _ = writeln!(
            b,
            "<section class=\"card\"><p class=\"end-bad\">{} frame{} could not be decoded (counted, not shown).</p></section>",
            trace.undecodable,
            if trace.undecodable == 1 { "" } else { "s" }
        );
    }
    b.push_str("<footer>Written by hoplab from the scenario's trace.</footer>\n");
    page(&format!("hoplab · {}", trace.scenario), &b)
}

// ---------------------------------------------------------------------------
// The index of a run.

/// What became of one scenario in a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndexStatus {
    /// Same as the reviewed snapshot.
    Ok,
    /// Differs from the reviewed snapshot.
    Diff,
    /// The run failed or an expectation was not met.
    Failed,
    /// The new trace was accepted as the snapshot.
    Accepted,
    /// There is no reviewed snapshot yet.
    NoSnapshot,
}

impl IndexStatus {
    fn label(self) -> &'static str {
        match self {
            IndexStatus::Ok => "ok",
            IndexStatus::Diff => "differs",
            IndexStatus::Failed => "FAILED",
            IndexStatus::Accepted => "accepted",
            IndexStatus::NoSnapshot => "no snapshot",
        }
    }

    fn class(self) -> (&'static str, &'static str) {
        match self {
            IndexStatus::Ok => ("b-ok", "st-ok"),
            IndexStatus::Diff => ("b-warn", "st-diff"),
            IndexStatus::Failed => ("b-bad", "st-failed"),
            IndexStatus::Accepted => ("b-info", "st-accepted"),
            IndexStatus::NoSnapshot => ("b-none", "st-none"),
        }
    }
}

/// One scenario's line in [`index`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexEntry {
    pub name: String,
    pub status: IndexStatus,
    pub detail: String,
    /// `NAME/diff.html` was written.
    pub has_diff: bool,
}

/// The page of a whole run: every scenario with its status and links to
/// `NAME/report.html` (and `NAME/diff.html`).
pub fn index(title: &str, entries: &[IndexEntry]) -> String {
    let mut b = String::new();
    let _ = writeln!(
        b,
        "<header class=\"card head\">\n<h1>{}</h1>",
        escape(title)
    );
    b.push_str("<div class=\"chips\">");
    let _ = write!(
        b,
        "<span class=\"chip\"><b>{}</b> scenarios</span>",
        entries.len()
    );
    for st in [
        IndexStatus::Ok,
        IndexStatus::Accepted,
        IndexStatus::Diff,
        IndexStatus::NoSnapshot,
        IndexStatus::Failed,
    ] {
        let n = entries.iter().filter(|e| e.status == st).count();
        if n > 0 {
            let _ = write!(
                b,
                "<span class=\"chip\"><b>{n}</b> <span class=\"badge {}\">{}</span></span>",
                st.class().0,
                st.label()
            );
        }
    }
    b.push_str("</div>\n</header>\n<section class=\"card\">\n");
    b.push_str(
        "<table class=\"index\"><thead><tr><th>scenario</th><th>status</th><th>detail</th>\
         <th>pages</th></tr></thead><tbody>\n",
    );
    for e in entries {
        let (badge, row) = e.status.class();
        let report = format!("{}/report.html", href(&e.name));
        let mut links = format!("<a href=\"{}\">report</a>", escape(&report));
        if e.has_diff {
            let _ = write!(
                links,
                " · <a href=\"{}\">diff</a>",
                escape(&format!("{}/diff.html", href(&e.name)))
            );
        }
        let _ = writeln!(
            b,
            "<tr class=\"{row}\"><td class=\"name\"><a href=\"{}\">{}</a></td>\
             <td><span class=\"badge {badge}\">{}</span></td><td>{}</td><td>{links}</td></tr>",
            escape(&report),
            escape(&e.name),
            e.status.label(),
            escape(&e.detail)
        );
    }
    b.push_str("</tbody></table>\n</section>\n");
    b.push_str("<footer>Written by hoplab.</footer>\n");
    page(title, &b)
}

// ---------------------------------------------------------------------------
// The snapshot review page.

/// `hdr` with the tokens that `other` (the same hop on the other side)
/// does not have marked.
fn hdr_vs(hdr: &str, other: Option<&str>) -> String {
    let theirs = other.map(hdr_fields).unwrap_or_default();
    hdr_html(hdr, |t| {
        other.is_some() && !theirs.iter().any(|o| o.key == t.key && o.text == t.text)
    })
}

fn side_cell(h: Option<&Hop>, other: Option<&Hop>) -> String {
    let Some(h) = h else {
        return "<td class=\"none\">(no such hop)</td>".into();
    };
    let mark = |differs: bool, s: String| {
        if differs {
            format!("<mark>{s}</mark>")
        } else {
            s
        }
    };
    let at = mark(
        other.is_some_and(|o| o.at != h.at),
        format!("<b>{}</b>", escape(&h.at)),
    );
    let hdr = hdr_vs(&h.hdr, other.map(|o| o.hdr.as_str()));
    let chg = match (&h.changed, other.is_some_and(|o| o.changed != h.changed)) {
        (Some(c), d) => mark(d, format!("changed: {}", escape(c))),
        (None, true) => mark(true, "changed: nothing".into()),
        (None, false) => String::new(),
    };
    format!("<td>{at}<br>{hdr}<span class=\"chg\">{chg}</span></td>")
}

fn packet_pair(b: &mut String, n: usize, old: Option<&Packet>, new: Option<&Packet>) {
    let title = |p: Option<&Packet>| match p {
        Some(p) => format!(
            "<span class=\"pk\">{}</span><br>{}",
            escape(&p.packet),
            end_html(p)
        ),
        None => "<span class=\"muted\">(no such packet)</span>".into(),
    };
    let _ = writeln!(
        b,
        "<h3>Packet {n}</h3>\n<table class=\"sbs\"><thead><tr><th></th>\
         <th class=\"side\">reviewed snapshot<br>{}</th><th class=\"side\">this run<br>{}</th></tr></thead><tbody>",
        title(old),
        title(new)
    );
    let (oh, nh): (&[Hop], &[Hop]) = (
        old.map_or(&[], |p| p.hops.as_slice()),
        new.map_or(&[], |p| p.hops.as_slice()),
    );
    for i in 0..oh.len().max(nh.len()) {
        let (o, n) = (oh.get(i), nh.get(i));
        let _ = writeln!(
            b,
            "<tr{}><td class=\"n\">{}</td>{}{}</tr>",
            if o == n {
                " class=\"same\""
            } else {
                " class=\"chg\""
            },
            i + 1,
            side_cell(o, n),
            side_cell(n, o)
        );
    }
    b.push_str("</tbody></table>\n");
}

fn packets_pairs(b: &mut String, old: &[Packet], new: &[Packet]) {
    for i in 0..old.len().max(new.len()) {
        let (o, n) = (old.get(i), new.get(i));
        if o != n {
            packet_pair(b, i + 1, o, n);
        }
    }
}

/// The review page of a run whose trace differs from its reviewed
/// snapshot: the per-hop differences `lines` (from
/// [`crate::snapshot::diff`]), then every flow and packet that differs,
/// old and new side by side with the differing fields marked.
pub fn diff_page(name: &str, old: &Trace, new: &Trace, lines: &[String]) -> String {
    let mut b = String::new();
    let _ = writeln!(
        b,
        "<header class=\"card head\">\n<h1>Snapshot review: <span class=\"mono\" style=\"font-size:22px\">{}</span></h1>",
        escape(name)
    );
    let _ = writeln!(
        b,
        "<p>This run's trace differs from the reviewed snapshot \
         <code>tests/snapshots/scenarios__{}.snap</code>. See the <a href=\"report.html\">full report</a> \
         of this run.</p>",
        escape(name)
    );
    let _ = writeln!(
        b,
        "<div class=\"accept\">If the new trace is right, accept it: \
         <code>cargo xtask scenario {0} --accept</code>, or <code>cargo insta review</code> \
         (the run left the new trace as the pending snapshot \
         <code>tests/snapshots/scenarios__{0}.snap.new</code>). Otherwise the difference is a \
         regression to fix.</div>",
        escape(name)
    );
    b.push_str("</header>\n<section class=\"card\">\n");
    let _ = writeln!(
        b,
        "<h2>{} difference{}</h2>\n<ol class=\"difflines\">",
        lines.len(),
        if lines.len() == 1 { "" } else { "s" }
    );
    for l in lines {
        let _ = writeln!(b, "<li>{}</li>", escape(l));
    }
    b.push_str("</ol>\n</section>\n");

    let mut steps: Vec<&str> = new.flows.iter().map(|f| f.step.as_str()).collect();
    for f in &old.flows {
        if !steps.contains(&f.step.as_str()) {
            steps.push(&f.step);
        }
    }
    for step in steps {
        let of = old.flows.iter().find(|f| f.step == step);
        let nf = new.flows.iter().find(|f| f.step == step);
        if of == nf {
            continue;
        }
        let _ = writeln!(
            b,
            "<section class=\"card\">\n<h2>Flow <span class=\"mono\" style=\"font-size:16px\">{}</span>{}</h2>",
            escape(step),
            match (of, nf) {
                (None, _) => " <span class=\"badge b-info\">new</span>",
                (_, None) => " <span class=\"badge b-bad\">gone</span>",
                _ => "",
            }
        );
        let field = |b: &mut String, what: &str, o: Option<&str>, n: Option<&str>| {
            if o != n {
                let _ = writeln!(
                    b,
                    "<p><b>{what}</b>: <code>{}</code> → <code><mark>{}</mark></code></p>",
                    escape(o.unwrap_or("(none)")),
                    escape(n.unwrap_or("(none)"))
                );
            }
        };
        field(
            &mut b,
            "sent",
            of.map(|f| f.sent.as_str()),
            nf.map(|f| f.sent.as_str()),
        );
        field(
            &mut b,
            "result",
            of.map(|f| f.result.as_str()),
            nf.map(|f| f.result.as_str()),
        );
        packets_pairs(
            &mut b,
            of.map_or(&[], |f| f.packets.as_slice()),
            nf.map_or(&[], |f| f.packets.as_slice()),
        );
        b.push_str("</section>\n");
    }
    if old.other != new.other {
        b.push_str("<section class=\"card\">\n<h2>Packets of no flow</h2>\n");
        packets_pairs(&mut b, &old.other, &new.other);
        b.push_str("</section>\n");
    }
    if old.control_plane != new.control_plane {
        b.push_str(
            "<section class=\"card\">\n<h2>Control plane</h2>\n<table class=\"sbs\"><thead><tr><th></th>\
             <th class=\"side\">reviewed snapshot</th><th class=\"side\">this run</th></tr></thead><tbody>\n",
        );
        let (o, n) = (&old.control_plane, &new.control_plane);
        for i in 0..o.len().max(n.len()) {
            let cell = |x: Option<&String>, differs: bool| match x {
                None => "<td class=\"none\">(none)</td>".to_string(),
                Some(s) if differs => format!("<td><mark>{}</mark></td>", escape(s)),
                Some(s) => format!("<td>{}</td>", escape(s)),
            };
            let differs = o.get(i) != n.get(i);
            let _ = writeln!(
                b,
                "<tr><td class=\"n\">{}</td>{}{}</tr>",
                i + 1,
                cell(o.get(i), differs),
                cell(n.get(i), differs)
            );
        }
        b.push_str("</tbody></table>\n</section>\n");
    }
    b.push_str("<footer>Written by hoplab.</footer>\n");
    page(&format!("hoplab · review {name}"), &b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::Trace;

    const T: &str = "scenario: s
flows:
- step: get
  sent: tcp from client port 40000 to 24.0.5.8:8080
  result: 'ok: reply'
  packets:
  - packet: tcp S 93.6.1.78:40000 > 24.0.5.8:8080
    hops:
    - at: client/eth0 out
      hdr: 93.6.1.78:40000 > 24.0.5.8:8080 tcp S seq=0 len=60 ttl=64
    - at: gw/pub in
      hdr: 93.6.1.78:40000 > 24.0.5.8:8080 tcp S seq=0 len=60 ttl=64
    - at: gw/gw0 out
      hdr: 93.6.1.78:40000 > 10.30.255.253:8080 tcp S seq=0 len=60 ttl=63
      changed: dst 24.0.5.8:8080 -> 10.30.255.253:8080, ttl 64 -> 63
    - at: gw/eth0 out
      hdr: 93.6.1.78:40000 > 10.18.0.1:80 tcp S seq=0 len=60 ttl=63 | outer=udp outer.src=10.10.0.2:50103 outer.dst=10.10.0.1:50103 outer.len=88 outer.ttl=64
      changed: encapsulated in udp 10.10.0.2:50103 > 10.10.0.1:50103, dst 10.30.255.253:8080 -> 10.18.0.1:80
    - at: n1/eth0 in
      hdr: 93.6.1.78:40000 > 10.18.0.1:80 tcp S seq=0 len=60 ttl=63 | outer=udp outer.src=10.10.0.2:50103 outer.dst=10.10.0.1:50103 outer.len=88 outer.ttl=64
    end: last seen at n1/eth0 in
- step: fails
  sent: udp
  result: 'FAILED: expected a reply, got none'
  packets: []
";

    fn trace() -> Trace {
        Trace::from_yaml(T).unwrap()
    }

    #[test]
    fn step_names() {
        assert_eq!(step_name(None), None);
        assert_eq!(step_name(Some("")), None);
        assert_eq!(step_name(Some("ttl 64 -> 63")), Some("routed"));
        assert_eq!(
            step_name(Some("dst 10.96.0.1:80 -> 10.1.0.10:3000, ttl 64 -> 63")),
            Some("DNAT")
        );
        assert_eq!(step_name(Some("src 1.1.1.1:1 -> 2.2.2.2:1")), Some("SNAT"));
        assert_eq!(
            step_name(Some(
                "src 1.1.1.1:1 -> 2.2.2.2:1, dst 3.3.3.3:3 -> 4.4.4.4:4"
            )),
            Some("DNAT + SNAT")
        );
        assert_eq!(
            step_name(Some(
                "encapsulated in udp 10.10.1.1:50103 > 10.10.1.2:50103"
            )),
            Some("tunnel: encapsulate")
        );
        assert_eq!(
            step_name(Some(
                "encapsulated in udp 10.10.1.1:50103 > 10.10.1.2:50103, src [fd18::2]:1 -> [fdff::1]:1, dst [fdff::2]:80 -> [fd18::1]:80"
            )),
            Some("tunnel: encapsulate + DNAT + SNAT")
        );
        assert_eq!(
            step_name(Some(
                "decapsulated from udp 10.10.1.1:50103 > 10.10.1.2:50103"
            )),
            Some("tunnel: decapsulate")
        );
        assert_eq!(
            step_name(Some(
                "decapsulated from udp a > b, src 10.18.0.1:80 -> 10.30.30.30:80"
            )),
            Some("tunnel: decapsulate + SNAT")
        );
        assert_eq!(step_name(Some("outer ttl 64 -> 63")), Some("routed"));
        assert_eq!(
            step_name(Some("outer src 10.0.0.1:50103 -> 10.0.0.9:50103")),
            Some("tunnel: outer rewritten")
        );
        assert_eq!(step_name(Some("icmp id Some(1) -> Some(7)")), Some("NAT"));
        assert_eq!(
            step_name(Some("src 1.1.1.1 -> 2.2.2.2, icmp id Some(1) -> Some(7)")),
            Some("SNAT")
        );
        assert_eq!(step_name(Some("len 60 -> 88")), Some("resized"));
    }

    #[test]
    fn the_rewritten_fields_are_marked() {
        let t = trace();
        let hops = &t.flows[0].packets[0].hops;
        let dnat = hdr_marked(&hops[2]);
        assert!(
            dnat.contains("&gt; <mark>10.30.255.253:8080</mark> tcp"),
            "{dnat}"
        );
        assert!(dnat.contains("<mark>ttl=63</mark>"), "{dnat}");
        assert!(!dnat.contains("<mark>93.6.1.78:40000</mark>"), "{dnat}");
        assert!(!dnat.contains("<mark>len=60</mark>"), "{dnat}");
        let encap = hdr_marked(&hops[3]);
        assert!(encap.contains("<mark>10.18.0.1:80</mark>"), "{encap}");
        assert!(
            encap.contains("<mark>outer.src=10.10.0.2:50103</mark>"),
            "{encap}"
        );
        assert!(encap.contains("<mark>outer=udp</mark>"), "{encap}");
        assert!(!encap.contains("<mark>ttl=63</mark>"), "{encap}");
        // Nothing marked where nothing changed.
        assert!(!hdr_marked(&hops[4]).contains("<mark>"));
        // In the page: the DNAT hop's destination is marked.
        let html = report(&t, "capture.pcapng");
        assert!(
            html.contains("&gt; <mark>10.30.255.253:8080</mark>"),
            "{html}"
        );
        assert!(html.contains("<span class=\"step s-dnat\">DNAT</span>"));
    }

    #[test]
    fn outer_changes_mark_outer_fields() {
        let h = Hop {
            at: "sw/pb out".into(),
            hdr: "1.1.1.1:1 > 2.2.2.2:2 udp len=30 ttl=63 | outer=udp outer.src=9.9.9.9:50103 outer.dst=8.8.8.8:50103 outer.len=58 outer.ttl=63".into(),
            changed: Some("outer ttl 64 -> 63".into()),
        };
        let m = hdr_marked(&h);
        assert!(m.contains("<mark>outer.ttl=63</mark>"), "{m}");
        assert!(!m.contains("<mark>ttl=63</mark>"), "{m}");
    }

    #[test]
    fn a_dropped_packet_gets_the_marker() {
        let html = report(&trace(), "capture.pcapng");
        assert!(
            html.contains("✕ dropped: last seen at n1/eth0 in"),
            "{html}"
        );
        assert!(
            html.contains("<tr class=\"drop\"><td class=\"n\">5</td>"),
            "{html}"
        );
        // The red cross on the ladder, at the last hop.
        assert!(html.contains("<circle class=\"xc\""), "{html}");
        assert!(html.contains("✕ dropped</text>"), "{html}");
        // A delivered packet has none.
        let ok = T.replace("end: last seen at n1/eth0 in", "end: delivered to n1");
        let html = report(&Trace::from_yaml(&ok).unwrap(), "capture.pcapng");
        assert!(!html.contains("<circle class=\"xc\""), "{html}");
        assert!(!html.contains("class=\"drop\""), "{html}");
    }

    #[test]
    fn a_failed_flow_is_shown_failed() {
        let html = report(&trace(), "capture.pcapng");
        assert!(html.contains("<section class=\"card flow failed\" id=\"f2\">"));
        assert!(html.contains("<span class=\"badge b-bad\">FAILED</span>"));
    }

    #[test]
    fn everything_from_the_trace_is_escaped() {
        let evil = "<script>alert(1)</script>";
        let mut t = trace();
        t.scenario = evil.into();
        t.flows[0].step = evil.into();
        t.flows[0].result = evil.into();
        t.flows[0].packets[0].hops[2].at = format!("gw/{evil} out");
        t.flows[0].packets[0].hops[2].changed = Some(format!("dst a -> b, {evil}"));
        t.control_plane.push(evil.into());
        t.counters
            .entry(evil.into())
            .or_default()
            .insert(evil.into(), 1);
        let pages = [
            report(&t, "<script>.pcapng"),
            index(
                evil,
                &[IndexEntry {
                    name: evil.into(),
                    status: IndexStatus::Failed,
                    detail: evil.into(),
                    has_diff: true,
                }],
            ),
            diff_page(evil, &trace(), &t, &[evil.to_string()]),
        ];
        for p in pages {
            assert!(!p.contains("<script"), "{p}");
            assert!(p.contains("&lt;script&gt;"), "{p}");
        }
        // A step name is derived, never taken from the trace; but the raw
        // `changed` text shows escaped.
        let html = report(&t, "capture.pcapng");
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;</td>"));
        // The step's name, in the table of contents and its heading.
        assert!(
            html.contains("<b>&lt;script&gt;alert(1)&lt;/script&gt;</b>"),
            "{html}"
        );
        assert!(
            html.contains("font-size:16px\">&lt;script&gt;alert(1)&lt;/script&gt;</span>"),
            "{html}"
        );
    }

    #[test]
    fn links_are_relative_and_encoded() {
        assert_eq!(href("a b/report.html"), "a%20b/report.html");
        assert_eq!(href("javascript:x()"), "javascript%3Ax%28%29");
        let html = report(&trace(), "capture.pcapng");
        assert!(html.contains("<a href=\"capture.pcapng\"><code>capture.pcapng</code></a>"));
    }

    fn all_pages() -> Vec<String> {
        let t = trace();
        let mut n = trace();
        n.flows[0].packets[0].hops[2].hdr = n.flows[0].packets[0].hops[2]
            .hdr
            .replace("10.30.255.253:8080", "10.30.255.253:8081");
        n.control_plane.push("c1: x -> y".into());
        let lines = crate::snapshot::diff(&t.to_yaml(), &n.to_yaml());
        let entries: Vec<IndexEntry> = [
            IndexStatus::Ok,
            IndexStatus::Diff,
            IndexStatus::Failed,
            IndexStatus::Accepted,
            IndexStatus::NoSnapshot,
        ]
        .into_iter()
        .enumerate()
        .map(|(i, status)| IndexEntry {
            name: format!("scenario-{i}"),
            status,
            detail: "d".into(),
            has_diff: status == IndexStatus::Diff,
        })
        .collect();
        vec![
            report(&t, "capture.pcapng"),
            index("hoplab scenarios", &entries),
            diff_page("s", &t, &n, &lines),
        ]
    }

    #[test]
    fn pages_fetch_nothing() {
        for p in all_pages() {
            for bad in [
                "http://", "https://", "src=\"//", "<script", "url(", "@import",
            ] {
                assert!(!p.contains(bad), "{bad} in {p}");
            }
            assert!(p.starts_with("<!DOCTYPE html>"));
            assert!(p.ends_with("</html>\n"));
        }
    }

    #[test]
    fn pages_are_deterministic() {
        assert_eq!(all_pages(), all_pages());
    }

    #[test]
    fn the_index_links_reports_and_diffs() {
        let p = &all_pages()[1];
        assert!(p.contains("<a href=\"scenario-1/report.html\">"), "{p}");
        assert!(
            p.contains("<a href=\"scenario-1/diff.html\">diff</a>"),
            "{p}"
        );
        assert!(!p.contains("scenario-0/diff.html"), "{p}");
        assert!(
            p.contains("<span class=\"badge b-bad\">FAILED</span>"),
            "{p}"
        );
    }

    #[test]
    fn the_diff_page_marks_the_changed_field() {
        let p = &all_pages()[2];
        assert!(p.contains("<mark>10.30.255.253:8081</mark>"), "{p}");
        assert!(p.contains("<mark>10.30.255.253:8080</mark>"), "{p}");
        assert!(p.contains("cargo xtask scenario s --accept"), "{p}");
        assert!(p.contains("<mark>c1: x -&gt; y</mark>"), "{p}");
        // The unchanged hops are there, not marked.
        assert!(
            p.contains("<tr class=\"same\"><td class=\"n\">1</td>"),
            "{p}"
        );
    }
}
