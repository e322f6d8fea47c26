//! The per-hop report people read: one Markdown table per packet.

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
            cell(&h.at),
            cell(&h.hdr),
            crate::html::step_name(h.changed.as_deref()).unwrap_or(""),
            cell(h.changed.as_deref().unwrap_or(""))
        );
    }
    m.push('\n');
}

/// The folder, below the workspace root, of the committed reports of the
/// shipped scenarios.
pub const COMMITTED_DIR: &str = "reports/scenarios";

/// Every committed report as it must read, generated from the reviewed
/// snapshots under `root`: `reports/scenarios/NAME.md` per snapshot and
/// `reports/scenarios/README.md` listing them. Paths are relative to
/// `root`. `cargo xtask reports` writes them; a test checks them.
pub fn committed(root: &Path) -> Result<Vec<(std::path::PathBuf, String)>, crate::Error> {
    let io = |what: String| move |source| crate::Error::Io { what, source };
    let dir = root.join("tests/snapshots");
    let mut names = Vec::new();
    for e in std::fs::read_dir(&dir).map_err(io(format!("reading {}", dir.display())))? {
        let e = e.map_err(io(format!("reading {}", dir.display())))?;
        let f = e.file_name().to_string_lossy().into_owned();
        if let Some(n) = f
            .strip_prefix("scenarios__")
            .and_then(|s| s.strip_suffix(".snap"))
        {
            names.push(n.to_string());
        }
    }
    names.sort();
    let mut out = Vec::new();
    let mut index = String::from(
        "# Per-hop reports of the shipped scenarios\n\n\
         Generated from the reviewed snapshots in `tests/snapshots/` by `cargo xtask reports` \
         (and by `cargo xtask scenario --accept`); a test fails when they are stale. \
         A run writes the same report, with an HTML ladder beside it, to \
         `target/scenarios/NAME/`.\n\n\
         | scenario | flows | packets | packets that did not arrive |\n|---|---:|---:|---:|\n",
    );
    for n in &names {
        let p = crate::snapshot::path(root, n);
        let text = std::fs::read_to_string(&p).map_err(io(format!("reading {}", p.display())))?;
        let trace = Trace::from_yaml(crate::snapshot::read_body(&text))
            .map_err(|e| crate::Error::Failed(format!("{}: not a trace: {e}", p.display())))?;
        let packets: Vec<_> = trace.flows.iter().flat_map(|f| &f.packets).collect();
        let lost = packets
            .iter()
            .filter(|p| p.end.starts_with("last seen"))
            .count();
        let _ = writeln!(
            index,
            "| [`{n}`]({n}.md) | {} | {} | {lost} |",
            trace.flows.len(),
            packets.len()
        );
        out.push((
            Path::new(COMMITTED_DIR).join(format!("{n}.md")),
            markdown(&trace, Path::new("capture.pcapng")),
        ));
    }
    out.push((Path::new(COMMITTED_DIR).join("README.md"), index));
    Ok(out)
}
