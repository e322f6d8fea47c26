//! Replays every input of the fuzz corpus (`fuzz/corpus/TARGET/`) and of
//! the crash regressions (`fuzz/regressions/TARGET/`) through the same
//! target bodies cargo-fuzz runs (`fuzz/targets/`), on stable Rust.

#[allow(dead_code)]
#[path = "../fuzz/targets/mod.rs"]
mod targets;

#[path = "../../dataplane/fuzz/replay.rs"]
mod kept;

use std::path::Path;

/// Replays target `name`'s corpus and regressions.
fn replay(name: &str, body: targets::Body) {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    kept::replay(&fuzz, name, body);
}

#[test]
fn scenario_parse_corpus() {
    replay("scenario_parse", targets::scenario::parse);
}

#[test]
fn capture_read_corpus() {
    replay("capture_read", targets::capture::read);
}

#[test]
fn every_target_has_a_test() {
    let names: Vec<&str> = targets::TARGETS.iter().map(|t| t.0).collect();
    assert_eq!(names, ["scenario_parse", "capture_read"]);
}
