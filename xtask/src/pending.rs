//! Pending snapshots that `cargo insta review` / `cargo insta accept`
//! recognise (checked against cargo-insta 1.49.0, the version of the
//! `insta` crate in Cargo.lock).
//!
//! For a file snapshot `tests/snapshots/scenarios__NAME.snap`, insta
//! writes the new value beside it as `scenarios__NAME.snap.new`: the same
//! format as the `.snap` (a YAML metadata header between `---` lines, then
//! the value with trailing whitespace trimmed and one `\n`). No
//! `.pending-snap` JSON file is involved: that is only for inline
//! snapshots. The header is what `insta::assert_snapshot!(name, trace)` in
//! tests/scenarios.rs records: `source` (the test file, relative to the
//! workspace root) and `expression` (`trace`). insta also writes
//! `assertion_line` into a `.snap.new`, but it is optional (cargo-insta
//! shows it beside the source when reviewing, and drops it on accept), and
//! left out here so that editing tests/scenarios.rs does not make it stale.
//!
//! Accepting (`cargo insta accept`, or `a` in `cargo insta review`)
//! removes the `.snap.new` and writes its value to the `.snap` with the
//! header serialised again (without `assertion_line`), so the accepted
//! file equals
//! `hoplab_sim::snapshot::file_text(trace)` for a trace ending in one
//! newline (as `trace.yaml` does).
//!
//! cargo-insta finds `.snap.new` files although `.gitignore` lists
//! `*.snap.new`: its walker whitelists them. It looks for them under each
//! package's directory, or, when `INSTA_PENDING_DIR` is set (hermetic
//! builds), under that directory with the same path relative to the
//! workspace root; [`pending_path`] ignores that variable.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// The text of a pending snapshot (`.snap.new`) holding `trace_yaml`.
pub fn pending_snapshot_text(trace_yaml: &str) -> String {
    format!(
        "---\nsource: tests/scenarios.rs\nexpression: trace\n---\n{}\n",
        trace_yaml.trim_end()
    )
}

/// Where the pending snapshot for the reviewed snapshot `snap` goes:
/// beside it, with `.new` appended (`scenarios__NAME.snap.new`).
pub fn pending_path(snap: &Path) -> PathBuf {
    let mut name: OsString = snap
        .file_name()
        .expect("a snapshot path names a file")
        .to_owned();
    name.push(".new");
    snap.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: &str = "scenario: s\nflows:\n- step: a\n  sent: tcp\n  result: ok\n  packets: []\n";

    #[test]
    fn pending_text_is_the_snapshot_header_and_the_trimmed_trace() {
        let want = "---\nsource: tests/scenarios.rs\nexpression: trace\n---\nscenario: s\nflows:\n- step: a\n  sent: tcp\n  result: ok\n  packets: []\n";
        assert_eq!(pending_snapshot_text(T), want);
        assert_eq!(pending_snapshot_text(&format!("{T}\n\n  \n")), want);
        assert_eq!(pending_snapshot_text(T.trim_end()), want);
    }

    /// What `cargo insta accept` makes of the pending file is what
    /// `cargo xtask scenario --accept` writes.
    #[test]
    fn accepting_it_gives_the_reviewed_snapshot_format() {
        assert_eq!(pending_snapshot_text(T), hoplab_sim::snapshot::file_text(T));
        assert_eq!(
            hoplab_sim::snapshot::read_body(&pending_snapshot_text(T)),
            T
        );
    }

    #[test]
    fn pending_path_appends_new() {
        let root = Path::new("/w");
        let snap = hoplab_sim::snapshot::path(root, "routed-pair.v2");
        assert_eq!(
            pending_path(&snap),
            Path::new("/w/tests/snapshots/scenarios__routed-pair.v2.snap.new")
        );
    }
}
