//! The snapshot review page: the per-hop differences, then every flow and
//! packet that differs, reviewed snapshot and this run side by side with
//! the differing fields marked. It knows two traces and the difference
//! lines; it does not compute the difference itself.

use std::fmt::Write;

use super::{end_html, escape, hdr_html, page};
use crate::trace::{Flow, Header, Hop, Packet, Trace};

/// `hdr` with the tokens that `other` (the same hop on the other side)
/// does not have marked.
fn hdr_vs(hdr: &Header, other: Option<&Header>) -> String {
    let theirs = other.map(Header::fields).unwrap_or_default();
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
        format!("<b>{}</b>", escape(&h.at.to_string())),
    );
    let hdr = hdr_vs(&h.hdr, other.map(|o| &o.hdr));
    let chg = match (&h.changed, other.is_some_and(|o| o.changed != h.changed)) {
        (Some(c), d) => mark(d, format!("changed: {}", escape(&c.to_string()))),
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
/// [`crate::trace::diff`]), then every flow and packet that differs,
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
        flow_pair(&mut b, step, of, nf);
    }
    if old.other != new.other {
        b.push_str("<section class=\"card\">\n<h2>Packets of no flow</h2>\n");
        packets_pairs(&mut b, &old.other, &new.other);
        b.push_str("</section>\n");
    }
    if old.control_plane != new.control_plane {
        control_plane_pair(&mut b, &old.control_plane, &new.control_plane);
    }
    b.push_str("<footer>Written by hoplab.</footer>\n");
    page(&format!("hoplab · review {name}"), &b)
}

/// A flow that differs: its sent and result lines if they changed, then
/// every packet that differs, side by side.
fn flow_pair(b: &mut String, step: &str, of: Option<&Flow>, nf: Option<&Flow>) {
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
        b,
        "sent",
        of.map(|f| f.sent.as_str()),
        nf.map(|f| f.sent.as_str()),
    );
    field(
        b,
        "result",
        of.map(|f| f.result.to_string()).as_deref(),
        nf.map(|f| f.result.to_string()).as_deref(),
    );
    packets_pairs(
        b,
        of.map_or(&[], |f| f.packets.as_slice()),
        nf.map_or(&[], |f| f.packets.as_slice()),
    );
    b.push_str("</section>\n");
}

/// The control plane's answers, reviewed and new side by side.
fn control_plane_pair(b: &mut String, o: &[String], n: &[String]) {
    b.push_str(
        "<section class=\"card\">\n<h2>Control plane</h2>\n<table class=\"sbs\"><thead><tr><th></th>\
         <th class=\"side\">reviewed snapshot</th><th class=\"side\">this run</th></tr></thead><tbody>\n",
    );
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
