//! libFuzzer entry of the `gateway_packet` target; the body and its invariants are
//! `targets::gateway::packet`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| hoplab_dataplane_fuzz::gateway::packet(data));
