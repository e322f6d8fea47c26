//! libFuzzer entry of the `gateway_icmp` target; the body and its invariants are
//! `targets::gateway_icmp::packet`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| hoplab_dataplane_fuzz::gateway_icmp::packet(data));
