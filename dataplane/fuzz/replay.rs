//! Replays a fuzz target's kept inputs on stable Rust: every file of
//! `FUZZ/corpus/NAME/` (which must hold some) and of
//! `FUZZ/regressions/NAME/` goes through the target's body. Included by
//! the `fuzz_corpus` tests of `dataplane` and `sim`; knows files, not
//! targets.

use std::fs;
use std::path::Path;

/// Runs `body` on every kept input of target `name` under `fuzz` (a
/// crate's `fuzz/` folder); fails naming the first input that fails.
pub fn replay(fuzz: &Path, name: &str, body: fn(&[u8])) {
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
