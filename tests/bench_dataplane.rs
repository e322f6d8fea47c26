//! The dataplane benchmark runs end to end (needs root): all four paths,
//! with both veth settings, carry data and report sane latencies. Nothing
//! here asserts a speed.

mod common;

use common::*;

#[test]
fn dataplane_bench_measures_all_four_paths() {
    let out = out_dir("bench-dataplane");
    let o = hoplab()
        .args(["--quiet", "__bench-dataplane", "--out"])
        .arg(&out)
        .args(["--secs", "0.2", "--round-trips", "50", "--rounds", "1"])
        .output()
        .expect("hoplab runs");
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "exit {}\nstdout:\n{stdout}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    let field = |line: &str, k: &str| -> f64 {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{k}=")))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no number {k}= in {line:?}"))
    };
    // Every path, with the harness's veths and with GSO veths.
    for veths in ["harness", "gso"] {
        for path in ["a", "b", "c", "d"] {
            let line = stdout
                .lines()
                .find(|l| l.starts_with(&format!("path={path} veths={veths} ")))
                .unwrap_or_else(|| panic!("no line for path {path}, {veths} veths in:\n{stdout}"));
            let (gbps, p50, p99) = (
                field(line, "gbps"),
                field(line, "p50_us"),
                field(line, "p99_us"),
            );
            assert!(gbps > 0.0, "{line}");
            assert!(p50 > 0.0 && p50 <= p99, "{line}");
        }
    }
    // Both net managers ran and wrote their counters.
    for node in ["n1", "n2"] {
        assert!(
            out.join("counters")
                .join(format!("{node}.netmanager.txt"))
                .exists(),
            "{node}'s counters"
        );
        assert!(stdout.contains(&format!("netmanager={node} ")), "{stdout}");
    }
}
