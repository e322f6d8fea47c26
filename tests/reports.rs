//! The committed per-hop reports of the shipped scenarios
//! (`reports/scenarios/`) are what the reviewed snapshots give: a snapshot
//! accepted without regenerating them fails here.

use std::path::Path;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn committed_reports_match_the_reviewed_snapshots() {
    let files = hoplab_sim::report::committed(root()).expect("snapshots readable");
    assert!(files.len() > 2, "no snapshots found");
    let mut stale = Vec::new();
    for (rel, text) in &files {
        match std::fs::read_to_string(root().join(rel)) {
            Ok(t) if t == *text => {}
            Ok(_) => stale.push(format!("{} is stale", rel.display())),
            Err(_) => stale.push(format!("{} is missing", rel.display())),
        }
    }
    let dir = root().join(hoplab_sim::report::COMMITTED_DIR);
    for e in std::fs::read_dir(&dir)
        .expect("reports/scenarios exists")
        .flatten()
    {
        let rel = Path::new(hoplab_sim::report::COMMITTED_DIR).join(e.file_name());
        if !files.iter().any(|(r, _)| *r == rel) {
            stale.push(format!("{} belongs to no snapshot", rel.display()));
        }
    }
    assert!(
        stale.is_empty(),
        "{}\nregenerate them with: cargo xtask reports",
        stale.join("\n")
    );
}

/// The report of a scenario with a translation shows it: the committed
/// report of seed 000's scenario names the gateway's DNAT hop.
#[test]
fn the_seed_scenario_report_shows_the_gateway_rewrite() {
    let md =
        std::fs::read_to_string(root().join("reports/scenarios/ext-to-svc-gateway-cluster.md"))
            .expect("committed report");
    assert!(md.contains("| gw/gw0 out |"), "{md}");
    assert!(
        md.contains("dst 24.0.5.8:8080 -> 10.30.255.253:8080"),
        "{md}"
    );
}
