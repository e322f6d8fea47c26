//! The gateway core: [`GatewayCore::packet_in_place`] on a sequence of
//! packets (see [`super::common::records`]), with the exposures of
//! `scenarios/ext-to-svc-gateway-cluster.yaml` and its IPv6 variant (the
//! addresses of the packets in its seeds), ICMP echo exposed for the same
//! service addresses (`gateway-echo.yaml`'s seeds), a tiny Forward table
//! and NAPT range so the "full" paths are reached.
//!
//! Invariants: every packet ends as exactly one of request, reply or
//! drop (the counters agree); a dropped packet is unchanged; a rewritten
//! one keeps its length and every checksum it had valid; a request goes
//! from the gateway's internal address to an exposed service's address
//! and port (an echo: to a service with ICMP exposed), never anywhere else; a reply goes from the internal address
//! and an exposed port to a client outside the platform's networks.
//! Every service's answer to a request (addresses and ports swapped) is
//! fed back, so replies and closing flows are exercised.
//!
//! Fragments: the input runs twice, on a fresh core each time: its
//! records as they are (a record may be a fragment), then every whole
//! packet cut into pieces as the `fragments` target cuts them (its size
//! and order chosen by its last bytes; answers cut too). A fragment is
//! held or dropped; when one makes its datagram whole and the core
//! translates it, the packets it writes are fragments no larger than the
//! MTU, which reassemble into a packet that passes the invariants above
//! against the datagram the fragments made (a table of the target's own,
//! fed the same fragments, gives it). Everything expires in the end:
//! nothing stays held, and each fragment dropped by a timeout is handed
//! back by `take_dropped`, named by a quote of its own header (its
//! addresses those of the datagram's first fragment held), as are those
//! discarded with an overlapping fragment or with the datagram they made.

use std::net::{Ipv6Addr, SocketAddr};

use hoplab_dataplane::fragments::{is_fragment, FragmentTable};
use hoplab_dataplane::gateway::{DropReason, Exposure, GatewayConfig, GatewayCore, Proto, Verdict};
use hoplab_dataplane::packet::IpPacket;
use hoplab_dataplane::Millis;

use super::common::{addrs, records, reply, Checks};
use super::fragments::pieces;

pub fn core() -> GatewayCore {
    let mut core = GatewayCore::new(GatewayConfig {
        internal6: Some(Ipv6Addr::new(0xfdff, 0x7fff, 0, 0, 0, 0, 0, 0xfffd)),
        max_flows: 4,
        napt_ports: (60000, 60002),
        ..GatewayConfig::default()
    });
    for (proto, port, service) in [
        (Proto::Tcp, 8080, "10.30.30.30:80"),
        (Proto::Udp, 5353, "10.30.30.30:53"),
        (Proto::Tcp, 8080, "[fdff:2000::30]:80"),
    ] {
        let service = service.parse().expect("a socket address");
        core.expose(Exposure {
            proto,
            port,
            service,
        })
        .expect("a valid exposure");
    }
    for service in ["10.30.30.30", "fdff:2000::30"] {
        core.expose(Exposure::icmp(service.parse().expect("an address")))
            .expect("a valid ICMP exposure");
    }
    core
}

pub fn packet(data: &[u8]) {
    run(data, false);
    run(data, true);
}

/// What the core is checked against: its exposures, and a reassembly
/// table fed the fragments the core took.
struct Fixture {
    core: GatewayCore,
    services: Vec<SocketAddr>,
    ports: Vec<u16>,
    shadow: FragmentTable,
}

fn run(data: &[u8], cut: bool) {
    let core = core();
    let mut f = Fixture {
        services: core.exposures().iter().map(|e| e.service).collect(),
        ports: core.exposures().iter().map(|e| e.port).collect(),
        shadow: FragmentTable::new(core.config().fragments),
        core,
    };
    let split = |p: Vec<u8>| if cut { pieces(&p).0 } else { vec![p] };
    let mut now = Millis(0);
    for r in records(data) {
        if r.advance.0 > 0 {
            now = now + r.advance;
            f.core.expire(now);
            f.shadow.expire(now);
        }
        let mut next = Some(r.bytes);
        while let Some(packet) = next.take() {
            for p in split(packet) {
                if let Some(answer) = f.one(now, p) {
                    next = Some(answer);
                }
            }
        }
    }
    f.core.expire(Millis::MAX);
    assert_eq!(f.core.fragments_held(), (0, 0), "fragments held forever");
    let held = f.core.take_dropped();
    let c = f.core.counters();
    let timeouts = held
        .iter()
        .filter(|h| h.reason == DropReason::FragmentTimeout)
        .inspect(|h| assert!((20..=56).contains(&h.quote.len()), "{h:?}"))
        .count();
    assert_eq!(timeouts as u64, c.dropped_frag_timeout, "timeouts unnamed");
    // The others: fragments discarded with an overlapping one (counted),
    // or of a datagram made whole and dropped (counted once, as it).
    let overlaps = held
        .iter()
        .filter(|h| h.reason == DropReason::FragmentOverlap)
        .count();
    assert!(
        overlaps as u64 <= c.dropped_frag_overlap,
        "overlaps uncounted"
    );
    let ins = c.packets_in + c.frag_reassembled;
    let outs = c.requests + c.replies + c.drops_total() + c.frag_held;
    assert!(ins <= outs, "packets unaccounted for:\n{c}");
    if c.dropped_frag_overlap + c.dropped_frag_timeout == 0 {
        assert_eq!(ins, outs, "counters disagree:\n{c}");
    }
}

impl Fixture {
    /// One packet through the core, its outcome checked; the service's
    /// answer to a request.
    fn one(&mut self, now: Millis, packet: Vec<u8>) -> Option<Vec<u8>> {
        let mut buf = packet.clone();
        let (frag_in, requests) = (self.core.counters().frag_in, self.core.counters().requests);
        let verdict = self.core.packet_in_place(now, &mut buf);
        // The datagram the fragments made, as the core's table made it.
        let mut made = None;
        if self.core.counters().frag_in > frag_in {
            if let Ok(Some(w)) = self.shadow.insert(now, None, &packet) {
                made = Some(w.packet);
            }
        }
        match verdict {
            Verdict::Drop(_) | Verdict::Held => {
                assert_eq!(buf, packet, "a dropped or held packet was changed");
                assert!(self.core.take_out().is_empty());
                None
            }
            Verdict::Fragments => {
                let original = made.expect("the core made a datagram whole");
                let out = self.core.take_out();
                let whole = self.written(&out);
                let dir = if self.core.counters().requests > requests {
                    Verdict::Request
                } else {
                    Verdict::Reply
                };
                self.check(dir, &original, &whole)
            }
            Verdict::Request | Verdict::Reply => self.check(verdict, &packet, &buf),
        }
    }

    /// The packets written after [`Verdict::Fragments`]: fragments of one
    /// identification within the MTU (or the datagram whole, if it could
    /// not be cut), made whole again.
    fn written(&self, out: &[Vec<u8>]) -> Vec<u8> {
        assert!(!out.is_empty(), "a translated datagram wrote nothing");
        if out.len() == 1 && !is_fragment(&out[0]) {
            return out[0].clone();
        }
        let mtu = self.core.config().mtu;
        let mut t = FragmentTable::new(Default::default());
        let mut whole = None;
        for p in out {
            assert!(is_fragment(p), "a piece is not a fragment");
            assert!(
                p.len() <= mtu,
                "a fragment of {} bytes over the MTU",
                p.len()
            );
            assert_ne!(
                Checks::of(p).ipv4_header,
                Some(false),
                "a fragment's header"
            );
            match t.insert(Millis(0), None, p) {
                Ok(Some(w)) => whole = Some(w.packet),
                Ok(None) => {}
                Err(e) => panic!("the fragments written do not fit together: {e:?}"),
            }
        }
        assert!(t.is_empty(), "fragments written that make no datagram");
        whole.expect("the fragments written make the datagram whole")
    }

    /// The invariants of a translated packet `buf` (from `packet`).
    fn check(&self, verdict: Verdict, packet: &[u8], buf: &[u8]) -> Option<Vec<u8>> {
        let cfg = self.core.config();
        let (src, dst) = addrs(buf);
        assert_eq!(buf.len(), packet.len());
        Checks::of(packet).assert_kept(&Checks::of(buf), "gateway rewrite");
        let mut view = buf.to_vec();
        let v = IpPacket::new_checked(&mut view).expect("a rewritten packet is valid");
        let Some((sp, dp)) = v.src_port().zip(v.dst_port()) else {
            // An ICMP error about a flow (see the `gateway_icmp` target).
            assert!(v.quote().is_some(), "rewritten: TCP, UDP or an ICMP error");
            return None;
        };
        assert_eq!(Some(src), cfg.internal(v.is_ipv6()));
        // An echo's identifier is no port: its exposure has port 0.
        let echo = v.icmp_type_code().is_some();
        if verdict == Verdict::Reply {
            let sp = if echo { 0 } else { sp };
            assert!(
                self.ports.contains(&sp),
                "a reply from port {sp}, not exposed"
            );
            assert!(
                !cfg.is_internal(dst),
                "a reply to {dst}, inside the platform"
            );
            return None;
        }
        let dp = if echo { 0 } else { dp };
        assert!(
            self.services.contains(&SocketAddr::new(dst, dp)),
            "a request to {dst}:{dp}, not an exposed service"
        );
        reply(buf)
    }
}
