//! The dataplane benchmark runs end to end (needs root): all six paths,
//! with both veth settings, carry data and report sane latencies, the
//! connection-rate paths report a rate, and (e) and (f) went where they
//! should by the gateway's and the baseline's counters. Nothing here
//! asserts a speed.

mod common;

use common::*;
use hoplab_sim::bench::dataplane::{BenchPath, Results, Veths};

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
    let r: Results = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("not the benchmark's JSON ({e}):\n{stdout}"));
    // Every path, with the harness's veths and with GSO veths.
    for veths in [Veths::Harness, Veths::Gso] {
        for path in BenchPath::ALL {
            let p = r.get(veths, path).unwrap_or_else(|| {
                panic!("no result for path {path:?}, {veths:?} veths in {r:#?}")
            });
            let m = &p.median;
            assert_eq!(p.rounds.len(), 1, "{p:?}");
            assert!(m.gbps > 0.0, "{p:?}");
            assert!(m.p50_us > 0.0 && m.p50_us <= m.p99_us, "{p:?}");
            // The new-connection rate: for (a), (e) and (f) only.
            if path.measures_connections() {
                assert!(m.conn_per_s.is_some_and(|c| c > 0.0), "{p:?}");
            } else {
                assert_eq!(m.conn_per_s, None, "{p:?}");
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
        assert!(r.netmanager_drops.contains_key(node), "{r:#?}");
    }
    // The gateway ran and dropped nothing; (e)'s connections all went
    // through it, (f)'s all through the kernel's DNAT on gw.
    assert!(!r.gateway_counters.is_empty(), "{r:#?}");
    assert_eq!(r.gateway_nonzero(true), Default::default(), "{r:#?}");
    let check = r.paths_check();
    let (e, f) = (check.e_connections, check.f_connections);
    assert!(e > 0 && f > 0, "{check:?}");
    assert_eq!(check.gateway_exposed_new, e, "{check:?}");
    assert_eq!(check.gateway_flows_created, e, "{check:?}");
    assert_eq!(check.baseline_dnat_new, f, "{check:?}");
    assert_eq!(check.baseline_forward_new, f, "{check:?}");
}
