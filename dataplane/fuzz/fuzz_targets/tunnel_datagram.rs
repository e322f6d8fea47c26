//! libFuzzer entry of the `tunnel_datagram` target; the body and its invariants are
//! `targets::netmanager::tunnel_datagram`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| hoplab_dataplane_fuzz::netmanager::tunnel_datagram(data));
