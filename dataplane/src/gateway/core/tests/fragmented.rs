//! Fragments through the gateway core: a datagram in fragments, in any
//! order, is translated once and leaves cut as it came (never above the
//! MTU), both ways and both families; the bounds and the timeout.

use super::*;
use crate::fragments::{fragment, FragmentTable};

const UDP_PORT: u16 = 5353;
const UDP_SERVICE: &str = "10.30.30.31:53";
const UDP_SERVICE6: &str = "[fdff:30::31]:53";

fn payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 13 + i / 251) as u8).collect()
}

/// A UDP datagram of `len` payload bytes from `src` to `dst`, IPv4
/// identification `id`, DF clear.
fn datagram(src: SocketAddr, dst: SocketAddr, len: usize, id: u16) -> Vec<u8> {
    let l4 = testutil::L4::Udp {
        sp: src.port(),
        dp: dst.port(),
    };
    let mut p = testutil::build(src.ip(), dst.ip(), l4, &payload(len));
    if src.is_ipv4() {
        p[4..6].copy_from_slice(&id.to_be_bytes());
        p[6] &= !0x40;
        testutil::fix_ipv4_header_checksum(&mut p);
    }
    p
}

/// Feeds `frags` in order: every one but the last is held, the last makes
/// the datagram whole; returns the verdict of the last and the packets to
/// write.
fn feed(g: &mut GatewayCore, frags: &[Vec<u8>], now: Millis) -> (Verdict, Vec<Vec<u8>>) {
    let (last, rest) = frags.split_last().unwrap();
    for f in rest {
        assert_eq!(run(g, f, now).0, Verdict::Held);
        assert!(g.take_out().is_empty());
    }
    let v = run(g, last, now).0;
    (v, g.take_out())
}

/// The packets written, made whole again (by a table of their own, as the
/// kernel would).
fn whole(out: &[Vec<u8>]) -> Vec<u8> {
    if out.len() == 1 {
        return out[0].clone();
    }
    let mut t = FragmentTable::new(Default::default());
    let mut w = None;
    for f in out {
        if let Some(r) = t.insert(Millis(0), None, f).unwrap() {
            w = Some(r.packet);
        }
    }
    w.expect("the fragments written make a whole datagram")
}

fn ident(f: &[u8]) -> u32 {
    if f[0] >> 4 == 4 {
        u32::from(u16::from_be_bytes([f[4], f[5]]))
    } else {
        u32::from_be_bytes([f[44], f[45], f[46], f[47]])
    }
}

/// A request datagram of `len` bytes cut at `cut` data bytes, fed in
/// `order`, then the service's answer the same way: both come out whole
/// and translated exactly, cut no larger than they came nor than the MTU.
fn round_trip(g: &mut GatewayCore, v6: bool, len: usize, cut: usize, order: &[usize]) {
    let (client, internal, service) = if v6 {
        (sa(CLIENT6), at(INTERNAL6, UDP_PORT), sa(UDP_SERVICE6))
    } else {
        (sa(CLIENT), at(INTERNAL, UDP_PORT), sa(UDP_SERVICE))
    };
    let mtu = g.config().mtu;
    let p = datagram(client, internal, len, 0x4242);
    let mut frags = fragment(&p, cut, 0x0102_0304).unwrap();
    let n = frags.len();
    let mut shuffled: Vec<Vec<u8>> = order.iter().map(|&i| frags[i % n].clone()).collect();
    // Every fragment once, in the order given (the rest after).
    let mut seen = vec![false; n];
    shuffled.retain(|f| {
        let i = frags.iter().position(|x| x == f).unwrap();
        !std::mem::replace(&mut seen[i], true)
    });
    for (i, f) in frags.drain(..).enumerate() {
        if !seen[i] {
            shuffled.push(f);
        }
    }
    let largest = shuffled.iter().map(Vec::len).max().unwrap();
    let (v, out) = feed(g, &shuffled, Millis(1));
    assert_eq!(v, Verdict::Fragments);
    assert!(out.len() >= 2);
    for f in &out {
        assert!(f.len() <= largest.min(mtu), "{} > {largest}/{mtu}", f.len());
        assert_eq!(ident(f), ident(&shuffled[0]), "the identification is kept");
    }
    let req = whole(&out);
    let internal_ip = internal.ip();
    assert_eq!(
        tuple(&req),
        (SocketAddr::new(internal_ip, client.port()), service)
    );
    assert!(checksums_ok(&req));
    let hl = if v6 { 40 } else { 20 };
    assert_eq!(req[hl + 8..], payload(len)[..]);

    // The echo: as long, cut by the service's side at the same size.
    let answer = datagram(
        service,
        SocketAddr::new(internal_ip, client.port()),
        len,
        0x77,
    );
    let back = fragment(&answer, cut, 9).unwrap();
    let (v, out) = feed(g, &back, Millis(2));
    assert_eq!(v, Verdict::Fragments);
    let rep = whole(&out);
    assert_eq!(tuple(&rep), (internal, client));
    assert!(checksums_ok(&rep));
    assert_eq!(rep[hl + 8..], payload(len)[..]);
    assert_eq!(g.fragments_held(), (0, 0));
}

#[test]
fn a_fragmented_request_and_its_fragmented_reply_are_translated_once() {
    for v6 in [false, true] {
        let mut g = gateway();
        round_trip(&mut g, v6, 3000, 1400, &[0, 1, 2]);
        let c = g.counters();
        assert_eq!((c.requests, c.replies, c.flows_created), (1, 1, 1));
        assert_eq!((c.frag_in, c.frag_held, c.frag_reassembled), (6, 6, 2));
        assert_eq!(c.frag_out, 6);
        assert_eq!(c.packets_in, 6);
    }
}

#[test]
fn fragments_larger_than_the_mtu_are_cut_to_it() {
    let mut g = gateway_with(GatewayConfig {
        mtu: 600,
        ..config()
    });
    round_trip(&mut g, false, 3000, 1400, &[2, 0, 1]);
    assert!(g.counters().frag_out > 6);
}

#[test]
fn a_fragment_not_whole_in_time_is_dropped_by_expire() {
    let mut g = gateway();
    let p = datagram(sa(CLIENT), at(INTERNAL, UDP_PORT), 3000, 1);
    let frags = fragment(&p, 1400, 0).unwrap();
    assert_eq!(run(&mut g, &frags[0], Millis(10)).0, Verdict::Held);
    assert_eq!(run(&mut g, &frags[2], Millis(10)).0, Verdict::Held);
    assert_eq!(g.next_deadline(), Some(Millis(30_010)));
    g.expire(Millis(30_009));
    assert_eq!(g.fragments_held().0, 1);
    assert!(g.take_dropped().is_empty());
    g.expire(Millis(30_010));
    assert_eq!(g.fragments_held(), (0, 0));
    assert_eq!(g.counters().dropped_frag_timeout, 2);
    assert_eq!(g.next_deadline(), None);
    // One drop per fragment held, each named by its own header and its
    // first 8 bytes of data (the first one's ports among them).
    let quote = |f: &Vec<u8>| Held {
        reason: DropReason::FragmentTimeout,
        from: None,
        quote: f[..28].to_vec(),
    };
    assert_eq!(g.take_dropped(), vec![quote(&frags[0]), quote(&frags[2])]);
    assert!(g.take_dropped().is_empty());
    // The last fragment alone, later: held again, not translated.
    assert_eq!(run(&mut g, &frags[1], Millis(30_011)).0, Verdict::Held);
    assert_eq!(g.counters().requests, 0);
}

#[test]
fn overlaps_duplicates_and_caps_are_refused_and_counted() {
    let mut g = gateway_with(GatewayConfig {
        fragments: crate::fragments::FragmentConfig {
            max_datagrams: 1,
            ..Default::default()
        },
        ..config()
    });
    let p = datagram(sa(CLIENT), at(INTERNAL, UDP_PORT), 3000, 1);
    let frags = fragment(&p, 1400, 0).unwrap();
    assert_eq!(run(&mut g, &frags[0], Millis(0)).0, Verdict::Held);
    assert_drop(&mut g, &frags[0], Millis(0), DropReason::FragmentDuplicate);
    // Another datagram: over the cap of one.
    let q = datagram(sa(CLIENT_B), at(INTERNAL, UDP_PORT), 3000, 2);
    let qf = fragment(&q, 1400, 0).unwrap();
    assert_drop(&mut g, &qf[0], Millis(0), DropReason::FragmentOverCap);
    // Overlapping the first: it and the fragment held are dropped.
    let overlap = fragment(&p, 1000, 0).unwrap();
    assert_eq!(
        run(&mut g, &overlap[1], Millis(0)).0,
        Verdict::Drop(DropReason::FragmentOverlap)
    );
    assert_eq!(g.counters().dropped_frag_overlap, 2);
    // The one held is named by its quote; the one handed in is not there.
    assert_eq!(
        g.take_dropped(),
        vec![Held {
            reason: DropReason::FragmentOverlap,
            from: None,
            quote: frags[0][..28].to_vec()
        }]
    );
    assert_eq!(g.fragments_held(), (0, 0));
    assert_eq!(g.flow_count(), 0);
}

#[test]
fn a_datagram_to_a_port_not_exposed_is_dropped_once_whole() {
    let mut g = gateway();
    let p = datagram(sa(CLIENT), at(INTERNAL, 9999), 3000, 1);
    let frags = fragment(&p, 1400, 0).unwrap();
    let (v, out) = feed(&mut g, &frags, Millis(0));
    assert_eq!(v, Verdict::Drop(DropReason::NotExposed));
    assert!(out.is_empty());
    assert_eq!(g.counters().frag_reassembled, 1);
    // The fragment that made it whole is the verdict's; the two held
    // before it died with it, named by their quotes; the datagram counts
    // once.
    let quote = |f: &Vec<u8>| Held {
        reason: DropReason::NotExposed,
        from: None,
        quote: f[..28].to_vec(),
    };
    assert_eq!(g.take_dropped(), vec![quote(&frags[0]), quote(&frags[1])]);
    assert_eq!(g.counters().dropped_not_exposed, 1);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    /// Any length, any fragment size, any order, both families, any MTU:
    /// the request and the reply come out whole, translated exactly and
    /// cut no larger than they came nor than the MTU.
    #[test]
    fn fragments_in_any_order_translate_like_the_whole_datagram(
        v6 in any::<bool>(),
        len in 1200usize..9000,
        cut in 200usize..1200,
        mtu in 1280usize..1500,
        order in proptest::collection::vec(0usize..64, 0..64),
    ) {
        let mut g = gateway_with(GatewayConfig { mtu, ..config() });
        round_trip(&mut g, v6, len, cut, &order);
    }
}
