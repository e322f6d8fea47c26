//! The bodies of the harness's fuzz targets: the scenario loader and the
//! capture reader, each a function of the fuzzer's bytes that asserts
//! what it can besides "no panic".
//!
//! Included by the cargo-fuzz binaries in `fuzz_targets/` (nightly) and
//! by `sim/tests/fuzz_corpus.rs`, which replays `corpus/TARGET/` and
//! `regressions/TARGET/` on stable. Uses `hoplab-sim`'s public API only.

pub mod capture;
pub mod scenario;

/// Every target: its name (the cargo-fuzz binary and the corpus folder)
/// and its body.
/// A target's body: the fuzzer's bytes in, a panic on a broken invariant.
pub type Body = fn(&[u8]);

pub const TARGETS: &[(&str, Body)] = &[
    ("scenario_parse", scenario::parse),
    ("capture_read", capture::read),
];
