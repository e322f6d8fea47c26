//! The body of the root crate's fuzz target: the shell's super-packet
//! code ([`hoplab::shell::batch`]). It takes the fuzzer's bytes, drives the
//! public API and asserts invariants (not only "no panic").
//!
//! Two builds include this module: the cargo-fuzz binary in
//! `fuzz_targets/` (nightly, libFuzzer) and `tests/fuzz_corpus.rs`, which
//! replays every file of `corpus/TARGET/` and `regressions/TARGET/` through
//! the same function on stable Rust. It knows nothing of libFuzzer, files
//! or the harness.

pub mod batch;

/// A target's body: the fuzzer's bytes in, a panic on a broken invariant.
pub type Body = fn(&[u8]);

/// Every target: its name (the cargo-fuzz binary and the corpus folder)
/// and its body.
pub const TARGETS: &[(&str, Body)] = &[("super_packet", batch::super_packet)];
