//! Segmentation offloads do not change what a scenario shows: the same
//! scenarios run with the dataplane binaries' offloads on and off
//! (`HOPLAB_OFFLOAD`, which the binaries read when `--offload` is not
//! given) give byte-identical per-hop traces. The harness's veths carry
//! wire-sized packets, and the binaries write back what one read gave, so
//! the captures stay wire-sized either way.

mod common;

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
    let logs = [".netmanager.log", ".gateway.log"];
    trace_with_setting(name, ("HOPLAB_OFFLOAD", setting), "offload", &logs)
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
