//! libFuzzer entry of the `fragments` target; the body and its invariants are
//! `targets::fragments::fragments`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| hoplab_dataplane_fuzz::fragments::fragments(data));
