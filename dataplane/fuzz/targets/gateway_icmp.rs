//! The gateway core's ICMP error paths: every packet of the input goes
//! through [`GatewayCore::packet_in_place`] (ICMP errors in the input
//! included), and every request it translates is answered three ways: the
//! service's reply (TCP/UDP, as in [`super::gateway`]; an echo reply to an
//! echo request), an ICMP error from
//! inside the platform about the translated request, and, once that
//! reply is translated, an ICMP error from the client about it. The kind
//! of error and how much of the packet it quotes come from the packet's
//! own bytes.
//!
//! Invariants: one outcome per packet (the counters agree); a dropped
//! packet is unchanged; a rewritten error keeps its length and every
//! checksum it had valid and comes from the internal address; an error
//! about a request reaches the client that sent it, quoting that request
//! as the client sent it (addresses and ports); an error about a reply
//! reaches the service that sent it, quoting the reply as the service
//! sent it (an echo's identifier being both "ports" of its quote); an
//! error the core rewrites never goes to the internal address, and one it
//! sends inward goes to an exposed service only. Fragments in the input
//! are held or dropped (their paths are the `gateway_packet` target's).

use std::net::IpAddr;

use hoplab_dataplane::gateway::{GatewayCore, Verdict};
use hoplab_dataplane::packet::{IpPacket, Transport};
use hoplab_dataplane::Millis;

use super::common::{addrs, records, reply, sum, Checks};
use super::gateway::core;

/// The addresses and ports of a TCP/UDP packet, or of the packet an ICMP
/// error quotes: (src, sport, dst, dport).
type Tuple = (IpAddr, u16, IpAddr, u16);

fn tuple(b: &[u8]) -> Option<Tuple> {
    let mut c = b.to_vec();
    let v = IpPacket::new_checked(&mut c).ok()?;
    Some((v.src(), v.src_port()?, v.dst(), v.dst_port()?))
}

fn quoted(b: &[u8]) -> Option<Tuple> {
    let mut c = b.to_vec();
    let v = IpPacket::new_checked(&mut c).ok()?;
    Some((
        v.quoted_src()?,
        v.quoted_src_port()?,
        v.quoted_dst()?,
        v.quoted_dst_port()?,
    ))
}

fn fold(mut s: u64) -> u16 {
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

/// An ICMP error from `src` to `dst` quoting the first bytes of `quote`
/// (at least its IP header and 8 bytes), every checksum computed in full.
/// `pick` chooses the kind (unreachable, too big, time exceeded) and the
/// quote's length.
pub fn error(src: IpAddr, dst: IpAddr, quote: &[u8], pick: u8) -> Vec<u8> {
    let v6 = src.is_ipv6();
    let min = if v6 { 48 } else { 28 };
    let n =
        (min + usize::from(pick) * 7 % (quote.len() + 1 - min.min(quote.len()))).min(quote.len());
    let (ty, code, mtu): (u8, u8, u32) = match (v6, pick % 3) {
        (false, 0) => (3, 1, 0),
        (false, 1) => (3, 4, 1400),
        (false, _) => (11, 0, 0),
        (true, 0) => (1, 3, 0),
        (true, 1) => (2, 0, 1400),
        (true, _) => (3, 0, 0),
    };
    let mut icmp = vec![ty, code, 0, 0];
    icmp.extend_from_slice(&mtu.to_be_bytes());
    icmp.extend_from_slice(&quote[..n]);
    let mut p = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let mut p = vec![0x45, 0];
            p.extend_from_slice(&((20 + icmp.len()) as u16).to_be_bytes());
            p.extend_from_slice(&[0, 0, 0, 0, 64, 1, 0, 0]);
            p.extend_from_slice(&s.octets());
            p.extend_from_slice(&d.octets());
            let c = !fold(sum(0, &p));
            p[10..12].copy_from_slice(&c.to_be_bytes());
            p
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let mut p = vec![0x60, 0, 0, 0];
            p.extend_from_slice(&(icmp.len() as u16).to_be_bytes());
            p.extend_from_slice(&[58, 64]);
            p.extend_from_slice(&s.octets());
            p.extend_from_slice(&d.octets());
            p
        }
        _ => unreachable!("one family"),
    };
    let ph = if v6 {
        sum(sum(sum(0, &p[8..24]), &p[24..40]), &[0, 58]) + icmp.len() as u64
    } else {
        0
    };
    let c = !fold(sum(ph, &icmp));
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    p.extend_from_slice(&icmp);
    p
}

/// Runs `packet` through the core and checks what holds for any packet;
/// returns the verdict and the buffer.
fn run(core: &mut GatewayCore, now: Millis, packet: &[u8]) -> (Verdict, Vec<u8>) {
    let mut buf = packet.to_vec();
    let verdict = core.packet_in_place(now, &mut buf);
    if let Verdict::Drop(_) | Verdict::Held | Verdict::Fragments = verdict {
        assert_eq!(buf, packet, "a dropped or held packet was changed");
        core.take_out();
        return (verdict, buf);
    }
    assert_eq!(buf.len(), packet.len());
    Checks::of(packet).assert_kept(&Checks::of(&buf), "gateway rewrite");
    let mut c = buf.clone();
    let v = IpPacket::new_checked(&mut c).expect("a rewritten packet is valid");
    let cfg = core.config();
    assert_eq!(Some(v.src()), cfg.internal(v.is_ipv6()));
    if let Transport::IcmpError(_) = v.transport() {
        let services: Vec<IpAddr> = core.exposures().iter().map(|e| e.service.ip()).collect();
        match verdict {
            Verdict::Reply => assert!(!cfg.is_internal(v.dst()), "an error to {}", v.dst()),
            _ => assert!(services.contains(&v.dst()), "an error to {}", v.dst()),
        }
    }
    (verdict, buf)
}

pub fn packet(data: &[u8]) {
    let mut core = core();
    let mut now = Millis(0);
    for r in records(data) {
        if r.advance.0 > 0 {
            now = now + r.advance;
            core.expire(now);
        }
        let (verdict, req) = run(&mut core, now, &r.bytes);
        let (Verdict::Request, Some(sent)) = (verdict, tuple(&r.bytes)) else {
            continue;
        };
        let Some((internal, iport, svc, sport)) = tuple(&req) else {
            continue;
        };
        let pick = r.bytes.iter().fold(r.fix, |a, b| a.wrapping_add(*b));
        // The service's net manager (or a router inside) about the request.
        let about_req = error(svc, internal, &req, pick);
        let (v, out) = run(&mut core, now, &about_req);
        assert_eq!(v, Verdict::Reply, "an error about a live request");
        assert_eq!(addrs(&out).1, sent.0, "the error goes to the client");
        assert_eq!(
            quoted(&out),
            Some(sent),
            "the quote is what the client sent"
        );
        // The service answers; then the client's error about the reply.
        let Some(answer) = reply(&req).or_else(|| echo_reply(&req)) else {
            continue;
        };
        let (v, back) = run(&mut core, now, &answer);
        if v != Verdict::Reply {
            continue;
        }
        let about_reply = error(sent.0, internal, &back, pick.wrapping_add(1));
        let (v, out) = run(&mut core, now, &about_reply);
        assert_eq!(v, Verdict::Request, "an error about a live reply");
        assert_eq!(addrs(&out).1, svc, "the error goes to the service");
        let as_sent = (svc, sport, internal, iport);
        assert_eq!(
            quoted(&out),
            Some(as_sent),
            "the quote is what the service sent"
        );
    }
    let c = core.counters();
    let (ins, outs) = (
        c.packets_in + c.frag_reassembled,
        c.requests + c.replies + c.drops_total() + c.frag_held,
    );
    assert!(ins <= outs, "packets unaccounted for:\n{c}");
    if c.dropped_frag_overlap + c.dropped_frag_timeout == 0 {
        assert_eq!(ins, outs, "counters disagree:\n{c}");
    }
}

/// The echo reply a service sends to the echo request `req`: addresses
/// swapped, the type a reply's, the identifier kept, checksums computed
/// in full.
fn echo_reply(req: &[u8]) -> Option<Vec<u8>> {
    let mut c = req.to_vec();
    let v = IpPacket::new_checked(&mut c).ok()?;
    let Transport::IcmpEcho { request: true } = v.transport() else {
        return None;
    };
    let (v6, l4) = (v.is_ipv6(), v.transport_offset());
    let mut out = req.to_vec();
    let (s, d, n) = if v6 { (8, 24, 16) } else { (12, 16, 4) };
    let src = out[s..s + n].to_vec();
    out.copy_within(d..d + n, s);
    out[d..d + n].copy_from_slice(&src);
    out[l4] = if v6 { 129 } else { 0 };
    out[l4 + 2..l4 + 4].fill(0);
    let ph = if v6 {
        sum(sum(sum(0, &out[8..24]), &out[24..40]), &[0, 58]) + (out.len() - l4) as u64
    } else {
        0
    };
    let sum = !fold(sum(ph, &out[l4..]));
    out[l4 + 2..l4 + 4].copy_from_slice(&sum.to_be_bytes());
    Some(out)
}
