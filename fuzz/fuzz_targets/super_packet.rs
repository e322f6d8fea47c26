//! libFuzzer entry of the `super_packet` target; the body and its invariants are
//! `targets::batch::super_packet`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| hoplab_fuzz::batch::super_packet(data));
