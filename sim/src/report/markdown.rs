//! The per-hop report people read in a terminal or on a forge: one
//! Markdown table per packet, its L7 summary above the table, and a
//! flow's further legs (a proxy ended its connection and opened another)
//! after its own packets, each with where it started, the evidence that
//! joined it and what the proxy changed. It knows a [`Trace`]; not HTML
//! or files.

use std::fmt::Write;
use std::path::Path;

use crate::trace::Trace;

fn cell(s: &str) -> String {
    s.replace('|', "\\|")
}

/// The report of `trace`; `pcapng` is named by its file name only, so the
/// report is the same wherever the run wrote it.
pub fn markdown(trace: &Trace, pcapng: &Path) -> String {
    let mut m = String::new();
    let cap = pcapng
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    let _ = writeln!(m, "# Scenario `{}`: per-hop trace\n", trace.scenario);
    if let Some(i) = &trace.interrupted {
        let _ = writeln!(
            m,
            "**The run was {i}**: this trace holds what was captured until then.\n"
        );
    }
    let _ = writeln!(
        m,
        "Capture: `{cap}` (one interface per `host/ifname`; open it in Wireshark; for TCP \
         analysis without false retransmissions, `interfaces/HOST.IFNAME.pcapng`, one interface \
         each; `cargo xtask wireshark-profile` decodes the tunnel). \
         TCP sequence numbers are relative; checksums, IP IDs, MACs and timestamps are left out. \
         What TCP timing alone decides is folded: a pure ACK that the next segment of its \
         direction repeats (same sequence number, as much acknowledged), and a resend of a \
         segment its receiver had and had not yet acknowledged, are not listed; their frames \
         stay in the capture, each commented `folded into frame N`.\n"
    );
    let warnings = trace.skipped.warnings();
    if !warnings.is_empty() {
        let _ = writeln!(m, "Not in this trace:\n");
        for w in &warnings {
            let _ = writeln!(m, "- {w}");
        }
        m.push('\n');
    }
    if !trace.processes.is_empty() {
        let _ = writeln!(m, "## Processes\n");
        for l in &trace.processes {
            let _ = writeln!(m, "- {l}");
        }
        m.push('\n');
    }
    for f in &trace.flows {
        let _ = writeln!(m, "## Flow `{}`\n", f.step);
        let _ = writeln!(m, "- sent: {}\n- result: {}", f.sent, f.result);
        glance_lines(&mut m, f);
        if !f.legs.is_empty() {
            requests(&mut m, f);
            let _ = writeln!(m, "### Leg 1: the step's own connection\n");
        }
        for (i, p) in f.packets.iter().enumerate() {
            let reply = super::html::is_reply(&f.packets, p);
            packet(&mut m, &format!("Packet {}", i + 1), p, reply);
        }
        for (l, leg) in f.legs.iter().enumerate() {
            let _ = writeln!(m, "### Leg {}: {}\n", l + 2, leg.via);
            let _ = writeln!(m, "- joined by {}", leg.joined_by);
            for c in &leg.changed {
                let _ = writeln!(m, "- changed: {c}");
            }
            m.push('\n');
            for (i, p) in leg.packets.iter().enumerate() {
                let reply = super::html::is_reply(&leg.packets, p);
                packet(&mut m, &format!("Leg {} packet {}", l + 2, i + 1), p, reply);
            }
        }
    }
    if !trace.other.is_empty() {
        let _ = writeln!(m, "## Packets of no flow\n");
        for (i, p) in trace.other.iter().enumerate() {
            packet(&mut m, &format!("Other {}", i + 1), p, false);
        }
    }
    if trace.undecodable > 0 {
        let _ = writeln!(m, "{} frames could not be decoded.\n", trace.undecodable);
    }
    m
}

/// Who answered, the NAT and tunnel steps and the drops of `f`, then a
/// blank line.
fn glance_lines(m: &mut String, f: &crate::trace::Flow) {
    if let Some(l) = &f.load {
        let _ = writeln!(m, "- load:");
        for line in super::glance::load_lines(l) {
            let _ = writeln!(m, "  - {line}");
        }
    }
    let s = super::glance::summary(f);
    let _ = writeln!(
        m,
        "- answered by: {}",
        s.answered.as_deref().unwrap_or("nobody")
    );
    if !s.steps.is_empty() {
        let _ = writeln!(m, "- NAT and tunnel steps: {}", s.steps.join("; "));
    }
    if !s.drops.is_empty() {
        let _ = writeln!(m, "- dropped: {}", s.drops.join("; "));
    }
    m.push('\n');
}

/// A flow's request across its legs: one line per leg with what the
/// proxy before it changed.
fn requests(m: &mut String, f: &crate::trace::Flow) {
    let _ = writeln!(m, "The request crossed {} connections:\n", f.legs.len() + 1);
    let _ = writeln!(m, "1. the step's own connection");
    for (l, leg) in f.legs.iter().enumerate() {
        let changed = match leg.changed.is_empty() {
            true => "nothing seen changed".to_string(),
            false => leg.changed.join("; "),
        };
        let _ = writeln!(
            m,
            "{}. {} (joined by {}): {}",
            l + 2,
            cell(&leg.via),
            leg.joined_by,
            cell(&changed)
        );
    }
    m.push('\n');
}

fn packet(m: &mut String, title: &str, p: &crate::trace::Packet, reply: bool) {
    let _ = writeln!(m, "### {title}: {} ({})\n", p.packet, p.end);
    if let Some(l7) = &p.l7 {
        let _ = writeln!(m, "L7: `{}`\n", l7.replace('`', "'"));
    }
    let _ = writeln!(m, "| hop | where | headers | step | changed |");
    let _ = writeln!(m, "|---|---|---|---|---|");
    for (n, h) in p.hops.iter().enumerate() {
        let _ = writeln!(
            m,
            "| {} | {} | `{}` | {} | {} |",
            n + 1,
            cell(&h.at.to_string()),
            cell(&h.hdr.to_string()),
            super::html::step_name(h.changed.as_ref(), reply).unwrap_or_default(),
            cell(
                &h.changed
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or_default()
            )
        );
    }
    m.push('\n');
}

#[cfg(test)]
mod tests {
    use crate::trace::{Interrupted, Trace};

    const INTERRUPTED: &str = "scenario: s\nflows:\n- step: slow\n  sent: udp from a\n  \
        result: 'interrupted: no reply so far'\n  packets: []\ninterrupted:\n  signal: SIGTERM\n  \
        during: traffic[0] slow\n  after_ms: 312\n";

    #[test]
    fn an_interrupted_run_says_so_at_the_top() {
        let t = Trace::from_yaml(INTERRUPTED).unwrap();
        assert_eq!(
            t.interrupted,
            Some(Interrupted {
                signal: "SIGTERM".into(),
                during: "traffic[0] slow".into(),
                after_ms: 312
            })
        );
        // Read and written back the same, the field last.
        assert_eq!(t.to_yaml(), INTERRUPTED);
        let md = super::markdown(&t, std::path::Path::new("capture.pcapng"));
        let third = md.lines().nth(2).unwrap();
        assert_eq!(
            third,
            "**The run was interrupted by SIGTERM during traffic[0] slow, 312 ms into the \
             run**: this trace holds what was captured until then."
        );
        assert!(
            md.contains("- result: interrupted: no reply so far"),
            "{md}"
        );
        let html = crate::report::html::report(&t, "capture.pcapng");
        let head = &html[..html.find("</header>").unwrap()];
        assert!(head.contains("<span class=\"chip end-bad\">interrupted</span>"));
        assert!(head.contains("The run was interrupted by SIGTERM during traffic[0] slow"));
        assert!(head.contains("<span class=\"badge b-none\">interrupted</span>"));
    }

    #[test]
    fn a_complete_run_says_nothing_of_interrupts() {
        let t = Trace::from_yaml("scenario: s\nflows: []\n").unwrap();
        assert_eq!(t.interrupted, None);
        assert_eq!(t.to_yaml(), "scenario: s\nflows: []\n");
        let md = super::markdown(&t, std::path::Path::new("capture.pcapng"));
        assert!(!md.contains("interrupted"), "{md}");
    }
}
