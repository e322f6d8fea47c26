//! The per-hop report people read in a terminal or on a forge: one
//! Markdown table per packet. It knows a [`Trace`]; not HTML or files.

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
    let _ = writeln!(
        m,
        "Capture: `{cap}` (one interface per `host/ifname`; open it in Wireshark). \
         TCP sequence numbers are relative; checksums, IP IDs, MACs and timestamps are left out.\n"
    );
    let warnings = trace.skipped.warnings();
    if !warnings.is_empty() {
        let _ = writeln!(m, "Not in this trace:\n");
        for w in &warnings {
            let _ = writeln!(m, "- {w}");
        }
        m.push('\n');
    }
    for f in &trace.flows {
        let _ = writeln!(m, "## Flow `{}`\n", f.step);
        let _ = writeln!(m, "- sent: {}\n- result: {}\n", f.sent, f.result);
        for (i, p) in f.packets.iter().enumerate() {
            packet(&mut m, &format!("Packet {}", i + 1), p);
        }
    }
    if !trace.other.is_empty() {
        let _ = writeln!(m, "## Packets of no flow\n");
        for (i, p) in trace.other.iter().enumerate() {
            packet(&mut m, &format!("Other {}", i + 1), p);
        }
    }
    if trace.undecodable > 0 {
        let _ = writeln!(m, "{} frames could not be decoded.\n", trace.undecodable);
    }
    m
}

fn packet(m: &mut String, title: &str, p: &crate::trace::Packet) {
    let _ = writeln!(m, "### {title}: {} ({})\n", p.packet, p.end);
    let _ = writeln!(m, "| hop | where | headers | step | changed |");
    let _ = writeln!(m, "|---|---|---|---|---|");
    for (n, h) in p.hops.iter().enumerate() {
        let _ = writeln!(
            m,
            "| {} | {} | `{}` | {} | {} |",
            n + 1,
            cell(&h.at.to_string()),
            cell(&h.hdr.to_string()),
            super::html::step_name(h.changed.as_ref()).unwrap_or(""),
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
