//! A reader per direction in the net manager does not change what a
//! scenario shows: the same scenarios run with the net managers' tunnel
//! socket read on a thread of its own (`HOPLAB_READER_PER_DIRECTION=on`,
//! which the binary reads when `--reader-per-direction` is not given) and
//! with one task reading everything give byte-identical per-hop traces.

mod common;

use common::*;

/// Scenarios through the tunnel both ways, the gateway, IPv6, fragments,
/// and a net manager that crashes and comes back.
const SCENARIOS: [&str; 5] = [
    "ext-to-svc-gateway-cluster",
    "svc-two-nodes",
    "svc-ipv6",
    "svc-fragments",
    "svc-netmanager-crash",
];

/// Runs `name` with `HOPLAB_READER_PER_DIRECTION=setting`; its trace,
/// after checking that every net manager of the run reported that
/// setting.
fn trace_with(name: &str, setting: &str) -> String {
    let var = ("HOPLAB_READER_PER_DIRECTION", setting);
    trace_with_setting(name, var, "reader_per_direction", &[".netmanager.log"])
}

#[test]
fn a_reader_per_direction_gives_the_same_per_hop_trace() {
    for name in SCENARIOS {
        let on = trace_with(name, "on");
        let off = trace_with(name, "off");
        assert_eq!(
            on, off,
            "{name}: the traces differ with a reader per direction and with one"
        );
    }
}
