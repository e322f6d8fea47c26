//! The page of one scenario's trace: summary chips, a summary per flow
//! (result, who answered, NAT and tunnel steps, drops), legend, a ladder
//! and hop tables (folded away) per flow, the packets of no flow, the
//! control plane's answers and the counters. It knows a [`Trace`]; not
//! runs, snapshots or other pages.

use std::fmt::Write;

use super::ladder::{ladder, ladder_of, Segment};
use super::{
    badges, changed_html, dropped_at, end_html, escape, hdr_marked, href, is_reply, page, plural,
    step_name,
};
use crate::report::glance;
use crate::trace::{Flow, Packet, StepResult, Trace};

fn hop_table(out: &mut String, p: &Packet, reply: bool, (title, id): (&str, &str)) {
    let _ = writeln!(
        out,
        "<h3 id=\"{}\">{} <span class=\"pk\">{}</span> · {}</h3>",
        escape(id),
        escape(title),
        escape(&p.packet),
        end_html(p)
    );
    if let Some(l7) = &p.l7 {
        let _ = writeln!(out, "<p class=\"l7 mono\">L7: {}</p>", escape(l7));
    }
    out.push_str(
        "<table class=\"hops\"><thead><tr><th>#</th><th>at</th><th>headers (rewritten fields marked)</th>\
         <th>step</th><th>changed</th></tr></thead><tbody>\n",
    );
    let dropped = dropped_at(p).is_some();
    for (i, h) in p.hops.iter().enumerate() {
        let last = i + 1 == p.hops.len();
        let mut step = badges(step_name(h.changed.as_ref(), reply).as_deref());
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
            escape(&h.at.to_string()),
            hdr_marked(h),
            step.trim(),
            changed_html(h.changed.as_ref())
        );
    }
    out.push_str("</tbody></table>\n");
}

/// The ladder of `packets`, then their hop tables one click away; `flow`:
/// they are a step's (replies get reverse translation names).
fn packets_block(out: &mut String, packets: &[Packet], anchor: &str, flow: bool) {
    if packets.is_empty() {
        out.push_str("<p class=\"muted\">No packet was captured for this step.</p>\n");
        return;
    }
    ladder(out, packets, anchor, flow);
    hop_tables(out, packets, anchor, flow);
}

/// The hop tables of `packets`, one click away.
fn hop_tables(out: &mut String, packets: &[Packet], anchor: &str, flow: bool) {
    let _ = writeln!(
        out,
        "<details><summary>Hops of each packet ({} packet{})</summary>",
        packets.len(),
        if packets.len() == 1 { "" } else { "s" }
    );
    for (i, p) in packets.iter().enumerate() {
        hop_table(
            out,
            p,
            flow && is_reply(packets, p),
            (&format!("P{}", i + 1), &format!("{anchor}{}", i + 1)),
        );
    }
    out.push_str("</details>\n");
}

fn flow_badge(f: &Flow) -> &'static str {
    if f.result.is_failed() {
        "<span class=\"badge b-bad\">FAILED</span>"
    } else if f.result.is_ok() {
        "<span class=\"badge b-ok\">ok</span>"
    } else if matches!(f.result, StepResult::Interrupted(_)) {
        "<span class=\"badge b-none\">interrupted</span>"
    } else {
        "<span class=\"badge b-none\">unknown</span>"
    }
}

const LEGEND: &str = "<div class=\"legend\">\
<span><span class=\"k\" style=\"background:var(--fwd)\"></span>packet from the step's client</span>\
<span><span class=\"k\" style=\"background:var(--rev)\"></span>reply</span>\
<span><span class=\"k\" style=\"background:var(--oth)\"></span>ICMP error, or other</span>\
<span><span class=\"k\" style=\"background:#99f6e4;height:10px\"></span>inside the tunnel</span>\
<span><span class=\"step s-dnat\">DNAT</span> destination rewritten</span>\
<span><span class=\"step s-snat\">SNAT</span> source rewritten</span>\
<span><span class=\"step s-undo\">un-DNAT</span> / <span class=\"step s-undo\">un-SNAT</span> reply translated back (the request's DNAT / SNAT reversed)</span>\
<span><span class=\"step s-tun\">tunnel: encapsulate</span> / <span class=\"step s-tun\">decapsulate</span> UDP tunnel starts / ends</span>\
<span><span class=\"step s-routed\">routed</span> only TTL changed</span>\
<span><span class=\"step s-drop\">✕ dropped</span> last seen here</span>\
</div>";

/// The page of one scenario's trace; `capture_file` is linked relatively
/// (the page sits beside the capture).
pub fn report(trace: &Trace, capture_file: &str) -> String {
    let mut b = String::new();
    head(&mut b, trace, capture_file);
    let warnings = trace.skipped.warnings();
    if !warnings.is_empty() {
        b.push_str("<section class=\"card\" id=\"skipped\">\n<h2>Not in this trace</h2>\n<ul>\n");
        for w in &warnings {
            let _ = writeln!(b, "<li class=\"end-bad\">{}</li>", escape(w));
        }
        b.push_str("</ul>\n</section>\n");
    }
    for (i, f) in trace.flows.iter().enumerate() {
        flow_section(&mut b, i, f);
    }
    if !trace.other.is_empty() {
        b.push_str("<section class=\"card flow\" id=\"other\">\n<h2>Packets of no flow</h2>\n");
        b.push_str("<p class=\"muted\">IP packets that belong to no traffic step.</p>\n");
        packets_block(&mut b, &trace.other, "op", false);
        b.push_str("</section>\n");
    }
    if !trace.processes.is_empty() {
        b.push_str(
            "<section class=\"card\" id=\"processes\">\n<h2>Processes</h2>\n\
             <p class=\"muted\">Fault steps and processes that died, in order.</p>\n<ol class=\"cp\">\n",
        );
        for l in &trace.processes {
            let _ = writeln!(b, "<li>{}</li>", escape(l));
        }
        b.push_str("</ol>\n</section>\n");
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
        counters_section(&mut b, trace);
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

/// The page's header: title, capture link, counts, table of contents,
/// legend.
fn head(b: &mut String, trace: &Trace, capture_file: &str) {
    let all: Vec<&Packet> = trace
        .flows
        .iter()
        .flat_map(|f| &f.packets)
        .chain(&trace.other)
        .collect();
    let dropped = all.iter().filter(|p| dropped_at(p).is_some()).count();
    let failed = trace.flows.iter().filter(|f| f.result.is_failed()).count();
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
         per <code>host/ifname</code>, direction flags set; for TCP analysis without false \
         retransmissions, <code>interfaces/HOST.IFNAME.pcapng</code> beside it, one interface \
         each; <code>cargo xtask wireshark-profile</code> installs a profile that decodes the \
         tunnel). TCP sequence numbers are relative; checksums, IP IDs, MACs and timestamps are \
         left out.</p>",
        escape(&href(capture_file)),
        escape(capture_file)
    );
    if let Some(i) = &trace.interrupted {
        let _ = writeln!(
            b,
            "<p class=\"end-bad\" id=\"interrupted\"><b>The run was {}</b>: this trace holds \
             what was captured until then.</p>",
            escape(&i.to_string())
        );
    }
    b.push_str("<div class=\"chips\">");
    let chip = |b: &mut String, n: usize, what: String, class: &str| {
        let _ = write!(b, "<span class=\"chip {class}\"><b>{n}</b> {what}</span>");
    };
    chip(b, trace.flows.len(), plural(trace.flows.len(), "flow"), "");
    chip(b, all.len(), plural(all.len(), "packet"), "");
    chip(b, hops, plural(hops, "hop"), "");
    if dropped > 0 {
        chip(b, dropped, "dropped".into(), "end-bad");
    }
    if failed > 0 {
        chip(b, failed, plural(failed, "failed flow"), "end-bad");
    }
    if trace.interrupted.is_some() {
        b.push_str("<span class=\"chip end-bad\">interrupted</span>");
    }
    if !trace.other.is_empty() {
        chip(b, trace.other.len(), "of no flow".into(), "");
    }
    b.push_str("</div>\n");
    if !trace.flows.is_empty() {
        summary_table(b, trace);
    }
    if !trace.other.is_empty() {
        b.push_str("<p><a href=\"#other\">packets of no flow</a></p>\n");
    }
    b.push_str(LEGEND);
    b.push_str("\n</header>\n");
}

/// A row per flow: its result, who answered, where the client's packet
/// went, the NAT and tunnel steps taken and the drops.
fn summary_table(b: &mut String, trace: &Trace) {
    b.push_str(
        "<table class=\"summary\"><thead><tr><th>flow</th><th>result</th><th>answered by</th>\
         <th>client's packet</th><th>NAT and tunnel steps</th><th>dropped</th></tr></thead><tbody>\n",
    );
    for (i, f) in trace.flows.iter().enumerate() {
        let s = glance::summary(f);
        let _ = writeln!(
            b,
            "<tr><td><a href=\"#f{}\"><b>{}</b></a></td><td>{} <span class=\"muted\">{}</span></td>\
             <td class=\"who\">{}</td><td>{}</td><td>{}</td><td class=\"end-bad\">{}</td></tr>",
            i + 1,
            escape(&f.step),
            flow_badge(f),
            escape(&f.result.to_string()),
            escape(s.answered.as_deref().unwrap_or("—")),
            escape(s.reached.as_deref().unwrap_or("—")),
            s.steps
                .iter()
                .map(|t| escape(t))
                .collect::<Vec<_>>()
                .join("<br>"),
            s.drops
                .iter()
                .map(|t| escape(t))
                .collect::<Vec<_>>()
                .join("<br>"),
        );
    }
    b.push_str("</tbody></table>\n");
}

/// Flow `i`: what was sent and came back, its ladder and hop tables.
fn flow_section(b: &mut String, i: usize, f: &Flow) {
    let _ = writeln!(
        b,
        "<section class=\"card flow{}\" id=\"f{}\">",
        if f.result.is_failed() { " failed" } else { "" },
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
        if f.result.is_failed() {
            " class=\"end-bad\""
        } else {
            ""
        },
        escape(&f.result.to_string())
    );
    if let Some(l) = &f.load {
        b.push_str("<ul class=\"load\">");
        for line in glance::load_lines(l) {
            let _ = write!(b, "<li>{}</li>", escape(&line));
        }
        b.push_str("</ul>\n");
    }
    if !f.legs.is_empty() {
        let _ = writeln!(
            b,
            "<p>The request crossed {} connections; leg 1 is the step's own.</p>",
            f.legs.len() + 1
        );
    }
    if f.legs.is_empty() {
        packets_block(b, &f.packets, &format!("f{}p", i + 1), true);
    } else {
        stitched_ladder(b, i, f);
        if f.packets.is_empty() {
            b.push_str("<p class=\"muted\">No packet was captured for this step.</p>\n");
        } else {
            hop_tables(b, &f.packets, &format!("f{}p", i + 1), true);
        }
    }
    // Where each leg started, what joined it and what the proxy changed
    // are said once, in the ladder's heading of the leg; its hop tables
    // are only numbered.
    for (l, leg) in f.legs.iter().enumerate() {
        if !leg.packets.is_empty() {
            let _ = writeln!(b, "<h3 class=\"leg\">Leg {}, hop by hop</h3>", l + 2);
            hop_tables(b, &leg.packets, &format!("f{}l{}p", i + 1, l + 2), true);
        }
    }
    b.push_str("</section>\n");
}

/// The one ladder of flow `i`, stitched from legs: leg 1 (the step's own
/// connection) and each further leg under a heading naming where it
/// started, what joined it and what the proxy changed; the proxy is the
/// column both legs share.
fn stitched_ladder(b: &mut String, i: usize, f: &Flow) {
    let mut segs = vec![Segment {
        packets: &f.packets,
        anchor: format!("f{}p", i + 1),
        label: vec!["Leg 1: the step's own connection".to_string()],
    }];
    for (l, leg) in f.legs.iter().enumerate() {
        let mut label = vec![
            format!("Leg {}: {}", l + 2, leg.via),
            format!("joined by {}", leg.joined_by),
        ];
        label.extend(leg.changed.iter().map(|c| format!("changed: {c}")));
        segs.push(Segment {
            packets: &leg.packets,
            anchor: format!("f{}l{}p", i + 1, l + 2),
            label,
        });
    }
    ladder_of(b, &segs, true);
}

/// The dataplane's counters, a table per `host/process`.
fn counters_section(b: &mut String, trace: &Trace) {
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
