//! Replays every input of the fuzz corpus (`fuzz/corpus/TARGET/`) and of
//! the crash regressions (`fuzz/regressions/TARGET/`) through the same
//! target bodies cargo-fuzz runs (`fuzz/targets/`), on stable Rust.

#[allow(dead_code)]
#[path = "../fuzz/targets/mod.rs"]
mod targets;

use std::fs;
use std::path::Path;

/// Runs `body` on every file of `fuzz/corpus/NAME/` (which must hold
/// some) and `fuzz/regressions/NAME/`.
fn replay(name: &str, body: fn(&[u8])) {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut n = 0;
    for dir in ["corpus", "regressions"] {
        let Ok(entries) = fs::read_dir(fuzz.join(dir).join(name)) else {
            continue;
        };
        for e in entries {
            let path = e.expect("a directory entry").path();
            let data = fs::read(&path).expect("a corpus file");
            let run = std::panic::catch_unwind(|| body(&data));
            assert!(run.is_ok(), "{name}: {} fails", path.display());
            n += 1;
        }
    }
    assert!(n > 0, "{name}: the corpus is empty");
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
