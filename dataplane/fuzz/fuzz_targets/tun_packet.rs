//! libFuzzer entry of the `tun_packet` target; the body and its invariants are
//! `targets::netmanager::tun_packet`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| hoplab_dataplane_fuzz::netmanager::tun_packet(data));
