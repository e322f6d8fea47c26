//! Arbitrary bytes as datagrams received on the tunnel port: the core must
//! never panic and must account for every datagram.
#![no_main]

use hoplab_dataplane::Millis;
use libfuzzer_sys::fuzz_target;

mod common;

fuzz_target!(|data: &[u8]| {
    let mut core = common::core();
    for (i, chunk) in common::packets(data).into_iter().enumerate() {
        let now = Millis(i as u64 * 1000);
        let mut payload = chunk.to_vec();
        let out = core.on_tunnel_datagram(now, common::PEER.into(), &mut payload);
        assert_eq!(out.len(), 1, "one outcome per datagram");
        // A datagram written to the TUN may be answered by the instance:
        // feed the bytes back as if they were its reply.
        if let hoplab_dataplane::netmanager::Action::WriteTun(mut p) = out[0].clone() {
            let _ = core.on_tun_packet(now, &mut p);
        }
    }
    let _ = core.expire(Millis(u64::MAX / 2));
    let c = core.counters();
    assert!(c.drops_total() + c.tun_out + c.tunnel_out >= c.tunnel_in);
});
