//! Progress lines: one per phase of a run (build, start, traffic, capture,
//! trace; `cargo xtask scenario` adds compare), with its duration, on
//! stderr. `--quiet` turns them off; they are not logs, so `RUST_LOG`
//! filters the logs without hiding them.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

static QUIET: AtomicBool = AtomicBool::new(false);

/// Turn progress lines off (`--quiet`) or on.
pub fn set_quiet(quiet: bool) {
    QUIET.store(quiet, Ordering::Relaxed);
}

pub fn quiet() -> bool {
    QUIET.load(Ordering::Relaxed)
}

/// The line for `phase` of `scenario`, e.g. `routed-pair  build      12 ms`.
pub fn line(scenario: &str, phase: &str, took: Duration, note: &str) -> String {
    let ms = took.as_secs_f64() * 1e3;
    let mut l = format!("{scenario}  {phase:<8} {ms:>7.0} ms");
    if !note.is_empty() {
        l.push_str("  ");
        l.push_str(note);
    }
    l
}

/// Print the progress line of `phase` unless quiet.
pub fn phase(scenario: &str, phase: &str, took: Duration) {
    if !quiet() {
        let _ = writeln!(std::io::stderr(), "{}", line(scenario, phase, took, ""));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_names_scenario_phase_and_time() {
        assert_eq!(
            line("routed-pair", "build", Duration::from_millis(12), ""),
            "routed-pair  build         12 ms"
        );
        assert!(line("s", "compare", Duration::ZERO, "ok").ends_with("0 ms  ok"));
    }
}
