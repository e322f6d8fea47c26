//! The pages people look at first: one self-contained HTML page per
//! scenario ([`report`]: a ladder diagram per flow, then every packet's
//! hops with the rewritten fields marked), the index of a run ([`index()`])
//! and the snapshot review page ([`diff_page`]).
//!
//! Every page is a single file: inline CSS and inline SVG, no script,
//! nothing fetched (no URL but the relative links to its neighbours: the
//! capture, the reports, the diff). The same input gives the same bytes:
//! no timestamps, no random ids. Everything taken from a trace is escaped.
//!
//! This module holds what the pages share (escaping, links, step names and
//! badges, marked headers, the page frame with `style.css`); `ladder`,
//! `scenario`, `index` and `diff` are the SVG ladder and the three
//! pages. They read the typed trace ([`crate::trace`]), never its text,
//! and know nothing of runs, files or how a trace was built.

mod diff;
mod index;
mod ladder;
mod scenario;
#[cfg(test)]
mod tests;

use std::fmt::Write;

use crate::trace::{Change, Changes, End, Field, Header, Hop, Packet, Place};

pub use diff::diff_page;
pub use index::{index, IndexEntry, IndexStatus};
pub use scenario::report;

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

/// The name of what a hop did to its packet ([`Changes::step_name`]);
/// `reply`: the packet goes back to the step's client, so its rewrites are
/// reverse translations (`un-DNAT`, `un-SNAT`).
pub fn step_name(changed: Option<&Changes>, reply: bool) -> Option<String> {
    changed?.step_name(reply)
}

/// Whether packet `p` of `packets` (a flow's, in order) goes back to the
/// step's client: it starts on another host than the flow's first packet.
pub fn is_reply(packets: &[Packet], p: &Packet) -> bool {
    let host = |p: &Packet| p.hops.first().map(|h| h.at.host.clone());
    match packets.first() {
        Some(first) => host(first) != host(p),
        None => false,
    }
}

/// Whether `p` is an ICMP error (drawn and named as one, not as a reply).
pub fn is_icmp_error(p: &Packet) -> bool {
    p.hops
        .first()
        .is_some_and(|h| h.hdr.transport.is_icmp_error())
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
                "un-DNAT" | "un-SNAT" | "un-NAT" => "undo",
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

/// Which fields of a header a hop's changes rewrote: the keys of its
/// [`Field`]s, and whether the whole outer header is new (encapsulated).
fn changed_keys(changed: Option<&Changes>) -> (Vec<String>, bool) {
    let mut keys = Vec::new();
    let mut all_outer = false;
    for c in changed.map_or(&[][..], |c| &c.0) {
        match c {
            Change::Encapsulated(_) => all_outer = true,
            Change::Decapsulated(_) => {}
            Change::Rewritten { outer, field } => keys.push(format!(
                "{}{}",
                if *outer { "outer." } else { "" },
                field.key()
            )),
        }
    }
    (keys, all_outer)
}

/// `hdr` as HTML, each field for which `marked` holds inside `<mark>`,
/// the outer header (if any) on a line of its own.
fn hdr_html(hdr: &Header, marked: impl Fn(&Field) -> bool) -> String {
    let mut o = String::new();
    let mut in_outer = false;
    for (i, t) in hdr.fields().iter().enumerate() {
        if t.outer && !in_outer {
            in_outer = true;
            o.push_str("<br><span class=\"outer\">| ");
        } else if i > 0 {
            o.push(' ');
        }
        if marked(t) {
            let _ = write!(o, "<mark>{}</mark>", escape(&t.text));
        } else {
            o.push_str(&escape(&t.text));
        }
    }
    if in_outer {
        o.push_str("</span>");
    }
    o
}

/// `hdr` with the fields its hop rewrote marked.
fn hdr_marked(h: &Hop) -> String {
    let (keys, all_outer) = changed_keys(h.changed.as_ref());
    hdr_html(&h.hdr, |t| {
        (t.outer && all_outer) || (!t.key.is_empty() && keys.iter().any(|k| k == t.key))
    })
}

/// The changes as HTML, one per line.
fn changed_html(changed: Option<&Changes>) -> String {
    changed
        .map(|c| {
            c.0.iter()
                .map(|c| escape(&c.to_string()))
                .collect::<Vec<_>>()
                .join("<br>")
        })
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

/// Where `p` was last seen, if it was not delivered (a recorded drop:
/// its last hop).
fn dropped_at(p: &Packet) -> Option<&Place> {
    match &p.end {
        End::LastSeen(at) => Some(at),
        End::Dropped { .. } => p.hops.last().map(|h| &h.at),
        End::Delivered { .. } => None,
    }
}

/// The style sheet of every page.
const CSS: &str = include_str!("style.css");

fn page(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <link rel=\"icon\" href=\"data:,\">\n<title>{}</title>\n<style>{CSS}</style>\n\
         </head>\n<body>\n<main>\n{body}</main>\n</body>\n</html>\n",
        escape(title)
    )
}

fn end_html(p: &Packet) -> String {
    match dropped_at(p) {
        Some(_) if matches!(p.end, End::Dropped { .. }) => format!(
            "<span class=\"end-bad\">✕ {}</span>",
            escape(&p.end.to_string())
        ),
        Some(at) => format!(
            "<span class=\"end-bad\">✕ dropped: last seen at {}</span>",
            escape(&at.to_string())
        ),
        None => format!(
            "<span class=\"end-ok\">{}</span>",
            escape(&p.end.to_string())
        ),
    }
}
