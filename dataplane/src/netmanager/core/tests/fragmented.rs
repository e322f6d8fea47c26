//! Fragmented datagrams through the core: reassembled, translated, cut
//! again as they came, on every path; bounded and counted.

use super::*;
use crate::fragments::{fragment, FragmentTable};

/// A UDP datagram of `len` payload bytes (IPv4 without DF).
fn big_udp(src: IpAddr, dst: IpAddr, sp: u16, dp: u16, len: usize) -> Vec<u8> {
    let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
    let mut p = build(src, dst, L4::Udp { sp, dp }, &payload);
    if !src.is_ipv6() {
        p[4..6].copy_from_slice(&0x4242u16.to_be_bytes());
        p[6] &= !0x40;
        testutil::fix_ipv4_header_checksum(&mut p);
    }
    p
}

/// Reassembles what a list of actions carries (all to the same place).
fn whole_of(out: &[Action]) -> Vec<u8> {
    let mut t = FragmentTable::new(Default::default());
    let mut whole = None;
    for a in out {
        let p = match a {
            Action::WriteTun(p) => p,
            Action::SendTunnel { datagram, .. } => datagram,
            other => panic!("unexpected {other:?}"),
        };
        assert!(p.len() <= 1450, "a piece of {} bytes", p.len());
        if let Some(w) = t.insert(Millis(0), None, p).unwrap() {
            whole = Some(w.packet);
        }
    }
    whole.expect("the pieces make a whole datagram")
}

fn feed_tun(a: &mut NetManagerCore, now: Millis, frags: &[Vec<u8>]) -> Vec<Action> {
    let mut out = Vec::new();
    for f in frags {
        out.extend(a.on_tun_packet(now, &mut f.clone()));
    }
    out
}

fn feed_tunnel(b: &mut NetManagerCore, from: IpAddr, frags: &[Action]) -> Vec<Action> {
    let mut out = Vec::new();
    for f in frags {
        let Action::SendTunnel { datagram, .. } = f else {
            panic!("{f:?}");
        };
        out.extend(b.on_tunnel_datagram(Millis(5), from, &mut datagram.clone()));
    }
    out
}

#[test]
fn a_fragmented_datagram_crosses_both_cores_and_comes_back() {
    for (c_ns, svc, inst) in [
        (ip(C_NS), ip(RR), IpAddr::from(i_ns(2))),
        (ip(C_NS6), ip(RR6), IpAddr::from(i_ns6(2))),
    ] {
        let (mut a, mut b) = (node_a(), node_b());
        // Resolved first with a small packet (round robin: instance 1 on
        // A first, then 2 on B).
        let small = build(c_ns, svc, L4::Udp { sp: 1, dp: 80 }, b"x");
        send_resolved(&mut a, Millis(0), small);
        let orig = big_udp(c_ns, svc, 40000, 80, 3000);
        let frags = fragment(&orig, 1400, 7).unwrap();
        assert_eq!(frags.len(), 3);
        // Out of order: last, first, middle.
        let order = [frags[2].clone(), frags[0].clone(), frags[1].clone()];
        let out = feed_tun(&mut a, Millis(1), &order);
        assert_eq!(out.len(), 3, "{:?}", out.len());
        assert!(out
            .iter()
            .all(|x| matches!(x, Action::SendTunnel { node, .. } if *node == ip(NODE_B))));
        let sent = whole_of(&out);
        assert!(checksums_full(&sent));
        let mut v = sent.clone();
        let v = IpPacket::new_checked(&mut v).unwrap();
        assert_eq!(v.dst(), inst);
        assert_eq!(v.payload(), &orig[orig.len() - 3000..]);
        let c = a.counters();
        assert_eq!(
            (c.frag_in, c.frag_held, c.frag_reassembled, c.frag_out),
            (3, 3, 1, 3)
        );
        assert_eq!(c.tunnel_out, 3);
        // B: reassembles, writes the same fragments to its TUN.
        let delivered = feed_tunnel(&mut b, ip(NODE_A), &out);
        assert_eq!(delivered.len(), 3);
        assert_eq!(whole_of(&delivered), sent);
        // The instance answers with a fragmented reply; the client gets
        // it from the service IP, fragmented.
        let reply = mirror(&sent);
        let reply_frags = fragment(&reply, 1400, 8).unwrap();
        let back = feed_tun(&mut b, Millis(6), &reply_frags);
        assert_eq!(back.len(), 3);
        let at_a = feed_tunnel(&mut a, ip(NODE_B), &back);
        assert_eq!(at_a.len(), 3);
        assert!(at_a.iter().all(|x| matches!(x, Action::WriteTun(_))));
        let got = whole_of(&at_a);
        assert_eq!(got, mirror(&orig));
        assert!(checksums_full(&got));
    }
}

#[test]
fn the_first_datagram_of_a_flow_waits_for_its_resolution_whole() {
    let mut a = node_a();
    let svc = i_ip(2);
    let orig = big_udp(ip(C_NS), svc, 40000, 80, 5000);
    let frags = fragment(&orig, 1400, 0).unwrap();
    let out = feed_tun(&mut a, Millis(0), &frags);
    assert_eq!(out, vec![Action::Query(svc)]);
    assert_eq!(a.counters().queued, 1);
    let out = a.on_resolution(Millis(1), svc, Ok(resolution(&svc.to_string())));
    assert_eq!(out.len(), 4, "cut to the MTU");
    let sent = whole_of(&out);
    let mut v = sent.clone();
    assert_eq!(
        IpPacket::new_checked(&mut v).unwrap().dst(),
        IpAddr::from(i_ns(2))
    );
    assert!(checksums_full(&sent));
    assert_eq!(a.counters().frag_out, 4);
}

#[test]
fn incomplete_datagrams_time_out_through_expire_and_overlaps_are_counted() {
    let mut a = node_a();
    let orig = big_udp(ip(C_NS), ip(RR), 40000, 80, 3000);
    let frags = fragment(&orig, 1400, 0).unwrap();
    assert!(a
        .on_tun_packet(Millis(100), &mut frags[0].clone())
        .is_empty());
    assert!(a
        .on_tun_packet(Millis(100), &mut frags[1].clone())
        .is_empty());
    let due = a.config().fragments.timeout.saturating_add(Millis(100));
    assert_eq!(a.next_deadline(), Some(due));
    assert!(a.expire(Millis(due.0 - 1)).is_empty());
    // One drop per fragment held, each named by its own header.
    let held = |reason, f: &Vec<u8>| {
        Action::DropHeld(Box::new(Held {
            reason,
            from: None,
            quote: f[..28].to_vec(),
        }))
    };
    assert_eq!(
        a.expire(due),
        vec![
            held(DropReason::FragmentTimeout, &frags[0]),
            held(DropReason::FragmentTimeout, &frags[1])
        ]
    );
    assert_eq!(a.counters().drop_frag_timeout, 2);
    assert_eq!(a.next_deadline(), None);
    // An overlapping piece drops the datagram with it.
    assert!(a
        .on_tun_packet(Millis(200), &mut frags[0].clone())
        .is_empty());
    let mut over = frags[1].clone();
    over[6..8].copy_from_slice(&(0x2000u16 | 100).to_be_bytes());
    testutil::fix_ipv4_header_checksum(&mut over);
    assert_eq!(
        a.on_tun_packet(Millis(200), &mut over),
        vec![
            held(DropReason::FragmentOverlap, &frags[0]),
            Action::Drop(DropReason::FragmentOverlap)
        ]
    );
    assert_eq!(a.on_tun_packet(Millis(200), &mut frags[2].clone()), vec![]);
    let c = a.counters();
    assert_eq!(
        (c.drop_frag_overlap, c.frag_held, c.frag_reassembled),
        (2, 4, 0)
    );
    let text = c.to_string();
    for name in [
        "frag_reassembled 0",
        "drop_frag_over_cap 0",
        "drop_frag_duplicate 0",
    ] {
        assert!(text.contains(name), "{text}");
    }
}

#[test]
fn fragments_from_unknown_peers_are_never_held() {
    let mut b = node_b();
    let orig = big_udp(ip(C_IP), i_ns(2).into(), 40000, 80, 3000);
    let frags = fragment(&orig, 1400, 0).unwrap();
    for f in &frags {
        assert_eq!(
            b.on_tunnel_datagram(Millis(0), ip("192.168.0.99"), &mut f.clone()),
            vec![Action::Drop(DropReason::UnknownPeer)]
        );
    }
    assert!(b.fragments().is_empty());
    // From a peer, but not a service flow once whole: dropped as such.
    let outside = big_udp(ip("8.8.8.8"), i_ns(2).into(), 53, 80, 3000);
    let mut out = Vec::new();
    for f in fragment(&outside, 1400, 0).unwrap() {
        out.extend(b.on_tunnel_datagram(Millis(0), ip(NODE_A), &mut f.clone()));
    }
    // Dropped once whole: the fragment that made it whole is the drop's;
    // the two held before it are named by their quotes, and the datagram
    // counts once.
    let frags = fragment(&outside, 1400, 0).unwrap();
    let held = |f: &Vec<u8>| {
        Action::DropHeld(Box::new(Held {
            reason: DropReason::NotServiceFlow,
            from: Some(ip(NODE_A)),
            quote: f[..28].to_vec(),
        }))
    };
    assert_eq!(
        out,
        vec![
            Action::Drop(DropReason::NotServiceFlow),
            held(&frags[0]),
            held(&frags[1])
        ]
    );
    assert_eq!(b.counters().drop_not_service_flow, 1);
}

proptest! {
    /// The fragments of a datagram to a service, in any order, some
    /// repeated, some moved to overlap, some missing, with time passing:
    /// never a panic; each fragment is held or a counted drop; the
    /// datagram is made whole at most once (only if every piece came and
    /// none overlapped), and then leaves cut to the MTU; what expires is
    /// counted; the table ends empty. Every drop counted is one drop
    /// action, and every fragment dropped after it was held is named by a
    /// quote of its own header and first 8 bytes of data.
    #[test]
    fn any_fragments_give_a_whole_datagram_or_counted_drops(
        v6 in any::<bool>(),
        len in 1usize..6000,
        size in 8usize..1400,
        picks in proptest::collection::vec((any::<prop::sample::Index>(), 0u8..8), 0..30),
    ) {
        let mut a = node_a();
        let (c_ns, svc) = if v6 { (ip(C_NS6), ip(RR6)) } else { (ip(C_NS), ip(RR)) };
        send_resolved(&mut a, Millis(0), build(c_ns, svc, L4::Udp { sp: 1, dp: 80 }, b"x"));
        let orig = big_udp(c_ns, svc, 40000, 80, len);
        let Some(frags) = fragment(&orig, size, 3) else {
            return Ok(());
        };
        let mut now = Millis(1);
        let mut sent = Vec::new();
        let mut fed: Vec<Vec<u8>> = Vec::new();
        let mut drop_actions = 0u64;
        let drops0 = a.counters().drops_total();
        // `fragment_in`: the actions of a fragment handed in, where a held
        // drop of another reason than an overlap is a fragment of the
        // datagram it made whole and that was dropped, which counts once,
        // as the datagram.
        let mut check = |acts: &[Action], fed: &[Vec<u8>], fragment_in: bool| -> Result<(), TestCaseError> {
            let datagram_dropped = acts.iter().any(|x| matches!(x, Action::Drop(_)));
            for x in acts {
                match x {
                    Action::Drop(_) => drop_actions += 1,
                    Action::DropHeld(h) => {
                        let piece = fragment_in && h.reason != DropReason::FragmentOverlap;
                        if piece {
                            prop_assert!(datagram_dropped, "{:?}", acts);
                        } else {
                            drop_actions += 1;
                        }
                        if piece || matches!(h.reason, DropReason::FragmentTimeout | DropReason::FragmentOverlap) {
                            prop_assert!(
                                fed.iter().any(|f| f.starts_with(&h.quote)),
                                "{:?} quotes no fragment fed", h
                            );
                        }
                    }
                    _ => {}
                }
            }
            Ok(())
        };
        for (pick, what) in picks {
            let mut f = frags[pick.index(frags.len())].clone();
            if what == 7 && !v6 {
                // Moved 8 bytes on: overlaps its neighbours.
                let w = u16::from_be_bytes([f[6], f[7]]).wrapping_add(1);
                f[6..8].copy_from_slice(&w.to_be_bytes());
                testutil::fix_ipv4_header_checksum(&mut f);
            }
            if what == 6 {
                now = now.saturating_add(Millis(20_000));
                let out = a.expire(now);
                for x in &out {
                    prop_assert!(
                        matches!(x, Action::DropHeld(h) if h.reason == DropReason::FragmentTimeout),
                        "{:?}", x
                    );
                }
                check(&out, &fed, false)?;
            }
            fed.push(f.clone());
            let c0 = a.counters().clone();
            let mut out = a.on_tun_packet(now, &mut f);
            let c = a.counters().clone();
            check(&out, &fed, true)?;
            if let Some(&Action::Query(q)) = out.iter().find(|x| matches!(x, Action::Query(_))) {
                // The resolution went stale meanwhile: answered at once.
                let res = a.on_resolution(now, q, Ok(resolution(&q.to_string())));
                check(&res, &fed, false)?;
                out.extend(res);
            }
            prop_assert_eq!(c.frag_in, c0.frag_in + 1);
            let held = c.frag_held - c0.frag_held;
            let dropped = c.drops_total() - c0.drops_total();
            prop_assert!(held + u64::from(dropped > 0) >= 1, "{:?}", out);
            sent.extend(out.into_iter().filter_map(|x| match x {
                Action::SendTunnel { datagram: p, .. } | Action::WriteTun(p) => Some(p),
                _ => None,
            }));
        }
        let c = a.counters();
        prop_assert!(c.frag_reassembled <= c.frag_held);
        if c.frag_reassembled > 0 {
            prop_assert!(!sent.is_empty(), "{}", c);
            for p in &sent {
                prop_assert!(p.len() <= a.config().mtu);
            }
        }
        let out = a.expire(Millis::MAX);
        check(&out, &fed, false)?;
        prop_assert_eq!(drop_actions, a.counters().drops_total() - drops0);
        prop_assert!(a.fragments().is_empty());
        prop_assert_eq!(a.fragments().bytes(), 0);
    }
}
