//! The dataplane benchmark runs end to end (needs root): all six paths,
//! with both veth settings, carry data and report sane latencies, the
//! connection-rate paths report a rate, and (e) and (f) went where they
//! should by the gateway's and the baseline's counters. Nothing here
//! asserts a speed.

mod common;

use common::*;

#[test]
fn dataplane_bench_measures_all_six_paths() {
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
        for path in ["a", "b", "c", "d", "e", "f"] {
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
            // The new-connection rate: for (a), (e) and (f) only.
            if ["a", "e", "f"].contains(&path) {
                assert!(field(line, "conn_per_s") > 0.0, "{line}");
            } else {
                assert!(!line.contains("conn_per_s="), "{line}");
            }
        }
    }
    // Every net manager ran and wrote its counters.
    for node in ["n1", "n2", "gw"] {
        assert!(
            out.join("counters")
                .join(format!("{node}.netmanager.txt"))
                .exists(),
            "{node}'s counters"
        );
        assert!(stdout.contains(&format!("netmanager={node} ")), "{stdout}");
    }
    // The gateway ran and dropped nothing; (e)'s connections all went
    // through it, (f)'s all through the kernel's DNAT on gw.
    assert!(stdout.contains("gateway=gw drops=none "), "{stdout}");
    let check = stdout
        .lines()
        .find(|l| l.starts_with("paths_check "))
        .unwrap_or_else(|| panic!("no paths_check line in:\n{stdout}"));
    let e = field(check, "e_connections");
    let f = field(check, "f_connections");
    assert!(e > 0.0 && f > 0.0, "{check}");
    assert_eq!(field(check, "gateway_exposed_new"), e, "{check}");
    assert_eq!(field(check, "gateway_flows_created"), e, "{check}");
    assert_eq!(field(check, "baseline_dnat_new"), f, "{check}");
    assert_eq!(field(check, "baseline_forward_new"), f, "{check}");
}
