//! Every shipped scenario against its reviewed snapshot.
//!
//! Update the snapshots with `cargo xtask scenario --accept` (or
//! `cargo insta review` after a failing `cargo test`).

mod common;

use common::*;
use hoplab_sim::trace::{Change, End, Endpoint, Rewrite};

#[test]
fn every_scenario_matches_its_snapshot() {
    let names = scenario_names();
    assert!(names.len() >= 2, "the shipped scenarios are missing");
    for name in names {
        let out = out_dir(&name);
        let o = run(&scenario_path(&name), &out);
        assert!(
            o.status.success(),
            "{name}: run failed ({}):\n{}",
            o.status,
            String::from_utf8_lossy(&o.stderr)
        );
        let trace = std::fs::read_to_string(out.join("trace.yaml")).expect("trace.yaml written");
        assert!(
            !trace.contains("FAILED"),
            "{name}: a step's expectation was not met"
        );
        insta::assert_snapshot!(name.as_str(), trace);
    }
}

/// A scenario without a snapshot would pass unreviewed; a snapshot without
/// a scenario is stale.
#[test]
fn every_scenario_has_a_snapshot_and_every_snapshot_a_scenario() {
    let names = scenario_names();
    let snaps = root().join("tests/snapshots");
    for n in &names {
        let p = hoplab_sim::snapshot::path(root(), n);
        assert!(
            p.exists(),
            "scenario {n} has no snapshot: run `cargo xtask scenario {n} --accept` and review it"
        );
    }
    for e in std::fs::read_dir(&snaps).unwrap().flatten() {
        let f = e.file_name().to_string_lossy().into_owned();
        if let Some(n) = f
            .strip_prefix("scenarios__")
            .and_then(|s| s.strip_suffix(".snap"))
        {
            assert!(names.iter().any(|x| x == n), "snapshot {f} has no scenario");
        }
    }
}

/// Each step's packets are all there: the DNAT scenario must show the
/// rewrite to the one-endpoint service's pod, spread the random picks over
/// the ready pods and never reach pod3 through the service.
#[test]
fn kube_proxy_dnat_shows_the_dnat_step_and_skips_the_unready_pod() {
    let out = out_dir("dnat-check");
    let o = run(&scenario_path("kube-proxy-dnat"), &out);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let t = hoplab_sim::trace::Trace::from_yaml(
        &std::fs::read_to_string(out.join("trace.yaml")).unwrap(),
    )
    .unwrap();
    // numgen random: judged by bounds, no connection's hops kept.
    let random = &t.flows[0];
    assert!(random.packets.is_empty(), "{}", random.step);
    let load = random.load.as_ref().expect("a load step");
    assert_eq!((load.flows, load.ok), (40, 40));
    assert!(
        random
            .result
            .to_string()
            .contains("each of pod1, pod2 at least 5 (chosen at random), never pod3"),
        "{}",
        random.result
    );
    // One endpoint: the same pick every time, its DNAT hop by hop.
    let one = &t.flows[1];
    let syn = &one.packets[0];
    assert!(syn.packet.starts_with("tcp S "), "{}", syn.packet);
    let service: Endpoint = "10.96.0.110:80".parse().unwrap();
    let dnat = syn.hops.iter().flat_map(|h| &h.changed).any(|c| {
        c.0.iter().any(|c| {
            matches!(c, Change::Rewritten { outer: false, field: Rewrite::Dst(old, _) } if *old == service)
        })
    });
    assert!(dnat, "flow {}: no DNAT hop", one.step);
    assert!(
        matches!(&syn.end, End::Delivered { host } if host == "pod2"),
        "{}",
        syn.end
    );
}

/// The README's table of seed 000's six header states names, for each, the
/// hop of `ext-to-svc-gateway-cluster` where the captured packets show it:
/// the reviewed snapshot must have that header at that hop, on the SYN
/// (request rows) or the SYN-ACK (response rows). A table that drifts from
/// the snapshot fails here.
#[test]
fn readme_seed_table_matches_the_reviewed_snapshot() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let snap = std::fs::read_to_string(hoplab_sim::snapshot::path(
        root(),
        "ext-to-svc-gateway-cluster",
    ))
    .unwrap();
    let t = hoplab_sim::trace::Trace::from_yaml(hoplab_sim::snapshot::read_body(&snap)).unwrap();
    let packets = &t.flows[0].packets;
    let rows: Vec<Vec<String>> = readme
        .lines()
        .filter(|l| l.starts_with("| ") && l.contains("`gw/"))
        .map(|l| {
            l.replace("\\|", "¦")
                .split('|')
                .map(|c| c.trim().trim_matches('`').replace('¦', "|"))
                .collect()
        })
        .collect();
    assert_eq!(
        rows.len(),
        7,
        "the seed table has 7 rows (steps 1-6, step 1 twice)"
    );
    for r in &rows {
        // | step | seed | hop (note) | captured |
        let (seed, hop, captured) = (&r[2], &r[3], &r[4]);
        let at = hop.split(['`', ' ']).next().unwrap().to_string()
            + " "
            + hop.split_whitespace().nth(1).unwrap().trim_matches('`');
        assert!(
            captured.starts_with(seed.as_str()),
            "{r:?}: the captured header is not the seed's"
        );
        let syn = if captured.contains(" tcp S.") {
            &packets[1]
        } else {
            &packets[0]
        };
        let inner = captured.split(" |").next().unwrap();
        let h = syn
            .hops
            .iter()
            .find(|h| h.at.to_string() == at)
            .unwrap_or_else(|| panic!("{r:?}: no hop {at} on {}", syn.packet));
        assert!(
            h.hdr.to_string().starts_with(inner),
            "{r:?}: the snapshot has `{}` at {at}",
            h.hdr
        );
    }
}

/// In the reviewed traces, a rewrite on a reply (a packet going back to
/// the step's client) is named as the reverse translation it is
/// (`un-DNAT`, `un-SNAT`), never as a DNAT or SNAT of its own; the
/// gateway's reply path shows both; ICMP errors are named.
#[test]
fn replies_are_named_as_reverse_translations_and_icmp_by_name() {
    use hoplab_sim::report::html::{is_reply, step_name};
    let read = |name: &str| {
        let snap = std::fs::read_to_string(hoplab_sim::snapshot::path(root(), name)).unwrap();
        hoplab_sim::trace::Trace::from_yaml(hoplab_sim::snapshot::read_body(&snap)).unwrap()
    };
    let mut reverse = 0;
    for name in scenario_names() {
        for f in &read(&name).flows {
            for p in f.packets.iter().filter(|p| is_reply(&f.packets, p)) {
                for h in &p.hops {
                    let Some(n) = step_name(h.changed.as_ref(), true) else {
                        continue;
                    };
                    let forward = n
                        .split(" + ")
                        .any(|part| matches!(part, "DNAT" | "SNAT" | "NAT"));
                    assert!(!forward, "{name} {}: {} named {n}", f.step, h.at);
                    reverse += usize::from(n.contains("un-"));
                }
            }
        }
    }
    assert!(reverse > 0, "no reply was translated back");
    let gw = read("ext-to-svc-gateway-cluster");
    let s = hoplab_sim::report::glance::summary(&gw.flows[0]);
    assert!(
        s.steps.iter().any(|t| t == "un-DNAT + un-SNAT at gw"),
        "the gateway's reverse translation: {:?}",
        s.steps
    );
    let failure = read("svc-manager-failure");
    let icmp: Vec<&str> = failure
        .flows
        .iter()
        .flat_map(|f| &f.packets)
        .map(|p| p.packet.as_str())
        .filter(|p| p.starts_with("icmp"))
        .collect();
    assert!(!icmp.is_empty());
    for p in icmp {
        assert!(p.starts_with("icmp host unreachable "), "{p}");
    }
}
