//! libFuzzer entry of the `scenario_parse` target; the body and its invariants are
//! `targets::scenario::parse`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| hoplab_sim_fuzz::scenario::parse(data));
