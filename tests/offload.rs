//! Segmentation offloads do not change what a scenario shows: the same
//! scenarios run with the dataplane binaries' offloads on and off
//! (`HOPLAB_OFFLOAD`, which the binaries read when `--offload` is not
//! given) give byte-identical per-hop traces. The harness's veths carry
//! wire-sized packets, and the binaries write back what one read gave, so
//! the captures stay wire-sized either way.

mod common;

use std::path::Path;

use common::*;

/// Scenarios through both binaries, the tunnel, IPv6, ICMP errors and
/// the tunnel's trust boundary.
const SCENARIOS: [&str; 5] = [
    "ext-to-svc-gateway-cluster",
    "ext-to-svc-gateway-cluster-v6",
    "svc-two-nodes",
    "svc-ipv6",
    "tunnel-injection-dropped",
];

/// Runs `name` with `HOPLAB_OFFLOAD=setting`; its trace, after checking
/// that every dataplane binary of the run reported that setting.
fn trace_with(name: &str, setting: &str) -> String {
    let out = out_dir(&format!("offload-{setting}-{name}"));
    let o = hoplab()
        .env("HOPLAB_OFFLOAD", setting)
        .args(["--quiet", "run"])
        .arg(scenario_path(name))
        .arg("--out")
        .arg(&out)
        .output()
        .expect("hoplab runs");
    assert!(
        o.status.success(),
        "{name} with offloads {setting}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let want = format!("offload={}", setting == "on");
    let ready = ready_lines(&out.join("logs"));
    assert!(!ready.is_empty(), "{name}: no dataplane binary ran");
    for l in &ready {
        assert!(l.contains(&want), "{name}: {l:?} lacks {want}");
    }
    std::fs::read_to_string(out.join("trace.yaml")).expect("trace.yaml written")
}

/// The "ready" lines of the net managers' and gateways' logs.
fn ready_lines(logs: &Path) -> Vec<String> {
    let mut lines = Vec::new();
    for e in std::fs::read_dir(logs).expect("logs").flatten() {
        let f = e.file_name().to_string_lossy().into_owned();
        if f.ends_with(".netmanager.log") || f.ends_with(".gateway.log") {
            let text = std::fs::read_to_string(e.path()).unwrap_or_default();
            lines.extend(
                text.lines()
                    .filter(|l| l.contains(" ready "))
                    .map(str::to_string),
            );
        }
    }
    lines
}

#[test]
fn offloads_on_and_off_give_the_same_per_hop_trace() {
    for name in SCENARIOS {
        let on = trace_with(name, "on");
        let off = trace_with(name, "off");
        assert_eq!(
            on, off,
            "{name}: the traces differ with offloads on and off"
        );
    }
}
