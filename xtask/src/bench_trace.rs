//! `cargo xtask bench trace [--frames 10000,100000,1000000] [--debug]`:
//! the trace of a synthetic capture of each size, built by `hoplab
//! __bench-trace N` in a process of its own (so each size's peak memory is
//! its own); writes reports/bench-trace.md from its template.

use std::fmt::Write as _;
use std::process::Command;

use anyhow::{bail, Context, Result};
use hoplab_sim::bench::trace::TraceRun;

use crate::template::fill;
use crate::{build_hoplab, root};

const TEMPLATE: &str = include_str!("../templates/bench-trace.md");

/// Measure each size in turn; write reports/bench-trace.md.
pub fn run(sizes: &[usize], release: bool) -> Result<()> {
    let bin = build_hoplab(release)?;
    let mut rows = String::new();
    for &n in sizes {
        let out = Command::new(&bin)
            .args(["-q", "__bench-trace", &n.to_string()])
            .output()
            .with_context(|| format!("running {}", bin.display()))?;
        if !out.status.success() {
            bail!(
                "__bench-trace {n}: {}\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let r: TraceRun = serde_json::from_slice(&out.stdout).with_context(|| {
            format!(
                "the results of __bench-trace {n}: {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })?;
        let line = row(&r);
        print!("{line}");
        rows.push_str(&line);
    }
    let md = fill(
        TEMPLATE,
        &[
            ("rows", rows),
            ("build", if release { "release" } else { "debug" }.into()),
            ("cores", crate::bench::cores().to_string()),
            ("kernel", crate::bench::kernel()),
        ],
    )?;
    let path = root().join("reports/bench-trace.md");
    std::fs::write(&path, md).with_context(|| format!("writing {}", path.display()))?;
    println!("wrote {}", path.display());
    Ok(())
}

/// The table row of one measurement.
fn row(r: &TraceRun) -> String {
    let mib = |k: u64| k as f64 / 1024.0;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "| {} | {} | {:.2} | {:.0} | {:.0} | {:.0} | {:.0} | {} | {} |",
        r.frames,
        r.flows,
        r.build_s,
        r.frames_per_s,
        mib(r.before_kib),
        mib(r.peak_kib),
        mib(r.peak_kib.saturating_sub(r.before_kib)),
        r.kept_packets,
        r.result
    );
    s
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_row_has_every_column_and_the_template_fills() {
        let r = hoplab_sim::bench::trace::TraceRun {
            frames: 40000,
            flows: 1000,
            build_s: 0.5,
            frames_per_s: 80000.0,
            before_kib: 10240,
            peak_kib: 30720,
            kept_packets: 10,
            result: "ok: 1000 flows".into(),
        };
        let line = super::row(&r);
        assert_eq!(
            line,
            "| 40000 | 1000 | 0.50 | 80000 | 10 | 30 | 20 | 10 | ok: 1000 flows |\n"
        );
        let v = |s: &str| s.to_string();
        let md = crate::template::fill(
            super::TEMPLATE,
            &[
                ("rows", line),
                ("build", v("release")),
                ("cores", v("2")),
                ("kernel", v("6")),
            ],
        )
        .unwrap();
        assert!(md.contains("| 40000 |"));
    }
}
