//! The bodies of the dataplane's fuzz targets, one function per target:
//! each takes the fuzzer's bytes, drives a public entry point of
//! `hoplab-dataplane` and asserts its invariants (not only "no panic").
//!
//! Two builds include this module: the cargo-fuzz binaries in
//! `fuzz_targets/` (nightly, libFuzzer) and `dataplane/tests/fuzz_corpus.rs`,
//! which replays every file of `corpus/TARGET/` and `regressions/TARGET/`
//! through the same function on stable Rust. It knows only the crate's
//! public API; nothing of libFuzzer, files or the harness.

pub mod common;
pub mod fragments;
pub mod gateway;
pub mod gateway_icmp;
pub mod netmanager;
pub mod packet;

/// Every target: its name (the cargo-fuzz binary and the corpus folder)
/// and its body.
/// A target's body: the fuzzer's bytes in, a panic on a broken invariant.
pub type Body = fn(&[u8]);

pub const TARGETS: &[(&str, Body)] = &[
    ("packet_view", packet::view),
    ("tun_packet", netmanager::tun_packet),
    ("tunnel_datagram", netmanager::tunnel_datagram),
    ("gateway_packet", gateway::packet),
    ("fragments", fragments::fragments),
    ("gateway_icmp", gateway_icmp::packet),
];
