//! The reports of a trace: [`markdown`] (report.md), [`html`] (report.html,
//! a run's index, the snapshot review page), and the committed reports of
//! the shipped scenarios (`reports/scenarios/`, from the snapshots). It
//! knows traces and snapshot files; not how a trace is built.

pub mod glance;
pub mod html;
mod markdown;

use std::fmt::Write;
use std::path::Path;

pub use markdown::markdown;

use crate::trace::Trace;
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
        let lost = packets.iter().filter(|p| p.end.is_lost()).count();
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
