//! libFuzzer entry of the `capture_read` target; the body and its invariants are
//! `targets::capture::read`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| hoplab_sim_fuzz::capture::read(data));
