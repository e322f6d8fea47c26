//! Replays every input of the root crate's fuzz corpus
//! (`fuzz/corpus/TARGET/`) and of its crash regressions
//! (`fuzz/regressions/TARGET/`) through the same target bodies cargo-fuzz
//! runs (`fuzz/targets/`), on stable Rust: the invariants they assert hold
//! for every kept input on every test run.

#[allow(dead_code)]
#[path = "../fuzz/targets/mod.rs"]
mod targets;

#[path = "../dataplane/fuzz/replay.rs"]
mod kept;

use std::path::Path;

/// Replays target `name`'s corpus and regressions.
fn replay(name: &str, body: targets::Body) {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    kept::replay(&fuzz, name, body);
}

#[test]
fn super_packet_corpus() {
    replay("super_packet", targets::batch::super_packet);
}

#[test]
fn every_target_has_a_test() {
    let names: Vec<&str> = targets::TARGETS.iter().map(|t| t.0).collect();
    assert_eq!(names, ["super_packet"]);
}

/// The corpus reaches the checks, not only the refusals: its TCP
/// super-packet seeds are split into segments that the body checks.
#[test]
fn the_super_packet_seeds_are_split() {
    use hoplab::shell::batch::{Read, TunRead};
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/super_packet");
    let mut split = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let data = std::fs::read(e.unwrap().path()).unwrap();
        let mut r = TunRead::new();
        if let Ok(Read::Whole(n)) = r.load(&data[2..]) {
            if r.is_super() && r.wire_packets(n).unwrap() > 1 {
                split += 1;
            }
        }
    }
    assert!(split >= 2, "{split} seeds split");
}
