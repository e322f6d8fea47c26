//! Reviewed traces stored as insta snapshots (`tests/snapshots/`): where
//! a scenario's lives and the file's text. It knows the insta file format;
//! comparing two traces is [`crate::trace::diff`].

use std::path::{Path, PathBuf};

/// Where the reviewed trace of scenario `name` lives, below the workspace root.
pub fn path(root: &Path, name: &str) -> PathBuf {
    root.join("tests/snapshots")
        .join(format!("scenarios__{name}.snap"))
}

/// The body of an insta snapshot file (after its `---` header).
pub fn read_body(text: &str) -> &str {
    if let Some(rest) = text.strip_prefix("---\n") {
        if let Some(i) = rest.find("\n---\n") {
            return &rest[i + 5..];
        }
    }
    text
}

/// The snapshot file for a trace, in the format `insta` reads and writes.
pub fn file_text(trace_yaml: &str) -> String {
    format!(
        "---\nsource: tests/scenarios.rs\nexpression: trace\n---\n{}",
        trace_yaml
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: &str = "scenario: s\nflows:\n- step: a\n  sent: tcp\n  result: ok\n  packets:\n  - packet: tcp S 1.1.1.1:1 > 2.2.2.2:2\n    hops:\n    - at: c/eth0 out\n      hdr: 1.1.1.1:1 > 2.2.2.2:2 tcp S seq=0 len=60 ttl=64\n    end: delivered to s\n";

    #[test]
    fn snapshot_file_round_trips() {
        assert_eq!(read_body(&file_text(T)), T);
    }
}
