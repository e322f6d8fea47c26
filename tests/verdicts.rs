//! Drop verdicts travel with the capture: a run stores them in its pcapng,
//! and `hoplab trace` on that capture alone ends each dropped packet where
//! the run did.

mod common;

use common::*;

/// `gateway-table-full` (a SYN the gateway drops for its full table) and
/// `gateway-firewall` (drops by the gateway's nftables): the trace of the
/// capture alone has the same flows, ends and unavailable verdicts as the
/// run's.
#[test]
fn tracing_the_capture_alone_gives_the_runs_drops() {
    for (name, drop) in [
        (
            "gateway-table-full",
            "end: dropped at gw/gw0 by the gateway (table_full)",
        ),
        (
            "gateway-firewall",
            "end: dropped at gw in input by nftables inet hoplab_gateway (not_exposed)",
        ),
    ] {
        let out = out_dir(name);
        let o = run(&scenario_path(name), &out);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let ran: serde_yaml::Value =
            serde_yaml::from_str(&std::fs::read_to_string(out.join("trace.yaml")).unwrap())
                .unwrap();
        let o = hoplab()
            .args(["--quiet", "trace"])
            .arg(out.join("capture.pcapng"))
            .args(["--scenario", name])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let text = String::from_utf8(o.stdout).unwrap();
        assert!(text.contains(drop), "{name}: {text}");
        let traced: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
        for key in ["other", "verdicts_unavailable"] {
            assert_eq!(traced.get(key), ran.get(key), "{name}: {key}");
        }
        // The steps' results are the run's only: compare what was seen.
        let packets = |t: &serde_yaml::Value| -> Vec<serde_yaml::Value> {
            let flows = t["flows"].as_sequence().unwrap();
            flows.iter().map(|f| f["packets"].clone()).collect()
        };
        assert_eq!(packets(&traced), packets(&ran), "{name}");
    }
}
