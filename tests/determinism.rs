//! A scenario gives a byte-identical trace (and reports) on every run, also
//! when two runs of it happen at once.

mod common;

use common::*;

/// The trace and both reports of one run, concatenated.
fn trace_of(name: &str, tag: &str) -> String {
    let out = out_dir(tag);
    let o = run(&scenario_path(name), &out);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    ["trace.yaml", "report.md", "report.html"]
        .iter()
        .map(|f| std::fs::read_to_string(out.join(f)).unwrap())
        .collect::<Vec<_>>()
        .join("\n---\n")
}

#[test]
fn ten_runs_give_byte_identical_traces() {
    let first = trace_of("kube-proxy-dnat", "det");
    for i in 1..10 {
        let t = trace_of("kube-proxy-dnat", "det");
        assert_eq!(first, t, "run {i} differs from run 0");
    }
}

/// The gateway flow has the most moving parts: a router, two clients, the
/// firewall, the gateway and two net managers, NAPT.
#[test]
fn five_runs_through_the_gateway_give_byte_identical_traces() {
    let first = trace_of("gateway-same-source-port", "det-gw");
    for i in 1..5 {
        let t = trace_of("gateway-same-source-port", "det-gw");
        assert_eq!(first, t, "run {i} differs from run 0");
    }
}

#[test]
fn two_runs_of_one_scenario_at_once_do_not_interfere() {
    let a = std::thread::spawn(|| trace_of("routed-pair", "par-a"));
    let b = std::thread::spawn(|| trace_of("routed-pair", "par-b"));
    let (a, b) = (a.join().unwrap(), b.join().unwrap());
    assert_eq!(a, b);
    assert!(a.contains("delivered to server"));
}
