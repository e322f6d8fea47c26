//! Arbitrary bytes as packets read from the TUN: the core must never panic,
//! and every packet must end in exactly one outcome.
#![no_main]

use hoplab_dataplane::Millis;
use libfuzzer_sys::fuzz_target;

mod common;

fuzz_target!(|data: &[u8]| {
    let mut core = common::core();
    // Several packets per run, so one run can open a flow and then hit it.
    for (i, chunk) in common::packets(data).into_iter().enumerate() {
        let now = Millis(i as u64 * 1000);
        let mut packet = chunk.to_vec();
        let out = core.on_tun_packet(now, &mut packet);
        common::answer(&mut core, now, out.clone());
        // Whatever came out to the TUN is fed back in, as the kernel
        // would route a reply-shaped packet.
        for a in out {
            if let hoplab_dataplane::netmanager::Action::WriteTun(mut p) = a {
                let _ = core.on_tun_packet(now, &mut p);
            }
        }
    }
    let _ = core.expire(Millis(u64::MAX / 2));
    let c = core.counters();
    assert!(c.drops_total() + c.tun_out + c.tunnel_out + c.queued >= c.tun_in);
});
