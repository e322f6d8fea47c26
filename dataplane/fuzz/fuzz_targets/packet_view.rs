//! libFuzzer entry of the `packet_view` target; the body and its invariants are
//! `targets::packet::view`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| hoplab_dataplane_fuzz::packet::view(data));
