//! Replays every input of the fuzz corpus (`fuzz/corpus/TARGET/`) and of
//! the crash regressions (`fuzz/regressions/TARGET/`) through the same
//! target bodies cargo-fuzz runs (`fuzz/targets/`), on stable Rust: the
//! invariants they assert hold for every kept input on every test run.

#[allow(dead_code)]
#[path = "../fuzz/targets/mod.rs"]
mod targets;

#[path = "../fuzz/replay.rs"]
mod kept;

use std::net::IpAddr;
use std::path::Path;

use hoplab_dataplane::netmanager::Action;
use hoplab_dataplane::Millis;
use targets::common::{fix_checksums, records, Checks};

/// Replays target `name`'s corpus and regressions.
fn replay(name: &str, body: targets::Body) {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    kept::replay(&fuzz, name, body);
}

#[test]
fn packet_view_corpus() {
    replay("packet_view", targets::packet::view);
}

#[test]
fn tun_packet_corpus() {
    replay("tun_packet", targets::netmanager::tun_packet);
}

#[test]
fn tunnel_datagram_corpus() {
    replay("tunnel_datagram", targets::netmanager::tunnel_datagram);
}

#[test]
fn gateway_packet_corpus() {
    replay("gateway_packet", targets::gateway::packet);
}

#[test]
fn fragments_corpus() {
    replay("fragments", targets::fragments::fragments);
}

#[test]
fn gateway_icmp_corpus() {
    replay("gateway_icmp", targets::gateway_icmp::packet);
}

#[test]
fn every_target_has_a_test() {
    let names: Vec<&str> = targets::TARGETS.iter().map(|t| t.0).collect();
    assert_eq!(
        names,
        [
            "packet_view",
            "tun_packet",
            "tunnel_datagram",
            "gateway_packet",
            "fragments",
            "gateway_icmp"
        ]
    );
}

/// A TCP SYN 10.18.0.1:40000 → 10.30.1.1:80 with wrong checksums.
const SYN: [u8; 40] = [
    0x45, 0, 0, 40, 0, 1, 0, 0, 64, 6, 0, 0, 10, 18, 0, 1, 10, 30, 1, 1, 0x9c, 0x40, 0, 80, 0, 0,
    0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0,
];

/// The checksum oracle the targets assert with can fail: it tells a
/// fixed-up packet from one with a byte changed.
#[test]
fn the_checksum_oracle_sees_a_broken_checksum() {
    let mut p = SYN.to_vec();
    assert_eq!(Checks::of(&p).transport, Some(false));
    fix_checksums(&mut p, 3);
    let fixed = Checks::of(&p);
    fixed.assert_valid("fixed SYN");
    assert_eq!(
        (fixed.ipv4_header, fixed.transport),
        (Some(true), Some(true))
    );
    p[39] ^= 1;
    let broken = Checks::of(&p);
    assert_eq!(broken.transport, Some(false));
    let kept = std::panic::catch_unwind(|| fixed.assert_kept(&broken, "test"));
    assert!(kept.is_err(), "a broken checksum passes the oracle");
}

/// A record's control byte fixes the checksums and advances the clock.
#[test]
fn records_fix_checksums_and_advance_time() {
    let mut input = vec![3 | (7 << 3), SYN.len() as u8];
    input.extend_from_slice(&SYN);
    input.extend_from_slice(&[0, 200, 0x45]);
    let r = records(&input);
    assert_eq!(r.len(), 2);
    assert_eq!(r[0].advance, Millis(7000));
    Checks::of(&r[0].bytes).assert_valid("record");
    assert_eq!(r[1].bytes, [0x45]);
}

/// n1's fixture resolves a service and sends a SYN on to n2: the targets
/// reach past the lookup, not only the drops.
#[test]
fn the_tun_fixture_forwards_a_syn_to_the_other_node() {
    let mut core = targets::netmanager::core(1);
    let mut p = SYN.to_vec();
    fix_checksums(&mut p, 3);
    let ip: IpAddr = "10.30.1.1".parse().unwrap();
    assert_eq!(core.on_tun_packet(Millis(0), &mut p), [Action::Query(ip)]);
    let out = core.on_resolution(Millis(0), ip, targets::netmanager::resolution(ip));
    let n2 = IpAddr::from(targets::netmanager::N2);
    assert!(
        matches!(&out[..], [Action::SendTunnel { node, .. }] if *node == n2),
        "{out:?}"
    );
}

/// The `fragments` corpus reaches past reassembly: its first seed's
/// pieces make a datagram whole in n1's core, which resolves the service
/// and sends the datagram on to n2: whole after waiting for the
/// resolution (it fits the MTU), cut again as it came once resolved.
#[test]
fn the_fragments_seed_is_reassembled_and_cut_again() {
    use hoplab_dataplane::fragments::{fragment, is_fragment};
    let seed = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus/fragments/521ef23d64798b106c2ab6404f14805afd5b35e6");
    let data = std::fs::read(seed).unwrap();
    let mut packet = records(&data)[0].bytes.clone();
    let mut core = targets::netmanager::core(1);
    let feed = |core: &mut hoplab_dataplane::netmanager::NetManagerCore, p: &[u8]| {
        let pieces = fragment(p, 48, 0).unwrap();
        assert!(pieces.len() > 3);
        let mut out = Vec::new();
        for p in &pieces {
            out.extend(core.on_tun_packet(Millis(0), &mut p.clone()));
        }
        (pieces.len(), out)
    };
    let (_, out) = feed(&mut core, &packet);
    let ip: IpAddr = "10.30.1.1".parse().unwrap();
    assert_eq!(out, [Action::Query(ip)]);
    let out = core.on_resolution(Millis(0), ip, targets::netmanager::resolution(ip));
    assert!(
        matches!(&out[..], [Action::SendTunnel { datagram, .. }] if !is_fragment(datagram)),
        "{out:?}"
    );
    packet[5] ^= 1;
    let (n, out) = feed(&mut core, &packet);
    assert_eq!(out.len(), n, "{out:?}");
    assert!(out
        .iter()
        .all(|a| matches!(a, Action::SendTunnel { datagram, .. } if is_fragment(datagram))));
    assert_eq!(core.counters().frag_reassembled, 2);
}

/// The `gateway_icmp` target's errors reach past the lookups: an error
/// about a translated request is translated, not dropped.
#[test]
fn the_gateway_icmp_fixture_translates_an_error_about_a_request() {
    use hoplab_dataplane::gateway::Verdict;
    let mut core = targets::gateway::core();
    let mut p = SYN.to_vec();
    // 93.6.1.78:40000 > 10.30.255.253:8080.
    p[12..20].copy_from_slice(&[93, 6, 1, 78, 10, 30, 255, 253]);
    p[22..24].copy_from_slice(&8080u16.to_be_bytes());
    fix_checksums(&mut p, 3);
    assert_eq!(core.packet_in_place(Millis(0), &mut p), Verdict::Request);
    let (svc, internal): (IpAddr, IpAddr) = (
        "10.30.30.30".parse().unwrap(),
        "10.30.255.253".parse().unwrap(),
    );
    for pick in 0..3 {
        let mut e = targets::gateway_icmp::error(svc, internal, &p, pick);
        Checks::of(&e).assert_valid("generated error");
        assert_eq!(core.packet_in_place(Millis(0), &mut e), Verdict::Reply);
    }
    assert_eq!(core.counters().icmp_errors_to_client, 3);
}

/// The `gateway_packet` corpus reaches past reassembly: a seed of three
/// fragments (last first) makes a datagram whole in the gateway fixture,
/// which translates it to its service and writes it cut again; a seed's
/// whole packet cut the way the target cuts it does the same.
#[test]
fn the_gateway_fragment_seeds_are_reassembled_and_translated() {
    use hoplab_dataplane::fragments::is_fragment;
    use hoplab_dataplane::gateway::Verdict;
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/gateway_packet");
    let read = |name: &str| records(&std::fs::read(corpus.join(name)).unwrap());
    let mut core = targets::gateway::core();
    let verdicts: Vec<Verdict> = read("e05d3aeeb990c365a63b0d647b2c29a969b53b8e")
        .into_iter()
        .map(|r| core.packet_in_place(Millis(0), &mut r.bytes.clone()))
        .collect();
    assert_eq!(verdicts, [Verdict::Held, Verdict::Held, Verdict::Fragments]);
    let out = core.take_out();
    assert_eq!(out.len(), 3);
    assert!(out
        .iter()
        .all(|p| is_fragment(p) && p[16..20] == [10, 30, 30, 30]));

    let whole = &read("5a617148d2e1ae8fb74bda634b33f8b86cf54c70")[0].bytes;
    let (cut, was_cut) = targets::fragments::pieces(whole);
    assert!(was_cut && cut.len() > 3);
    let last = cut.len() - 1;
    for (i, p) in cut.iter().enumerate() {
        let v = core.packet_in_place(Millis(0), &mut p.clone());
        assert_eq!(
            v,
            if i == last {
                Verdict::Fragments
            } else {
                Verdict::Held
            }
        );
    }
    assert_eq!(core.take_out().len(), cut.len());
    assert_eq!(core.counters().requests, 2);
}

/// The `gateway_icmp` corpus reaches the errors about an echo: its echo
/// seeds (the second client NAPTed) are translated, and an error about
/// each translated request goes back to its client.
#[test]
fn the_gateway_icmp_echo_seeds_reach_errors_about_an_echo() {
    use hoplab_dataplane::gateway::Verdict;
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/gateway_icmp");
    let mut core = targets::gateway::core();
    let mut n = 0;
    for seed in [
        "5a6312b7a34f47d914c0d6a37f827bc25ccca621",
        "66e75a2e0ddd5eae9b98ead29b5ef48a3706077c",
    ] {
        for r in records(&std::fs::read(corpus.join(seed)).unwrap()) {
            let mut req = r.bytes.clone();
            assert_eq!(core.packet_in_place(Millis(0), &mut req), Verdict::Request);
            let (src, dst) = targets::common::addrs(&req);
            let mut e = targets::gateway_icmp::error(dst, src, &req, 0);
            assert_eq!(core.packet_in_place(Millis(0), &mut e), Verdict::Reply);
            assert_eq!(
                targets::common::addrs(&e).1,
                targets::common::addrs(&r.bytes).0
            );
            n += 1;
        }
    }
    assert_eq!(n, 3);
    assert_eq!(core.counters().flows_napt, 1);
    assert_eq!(core.counters().icmp_errors_echo, 3);
}
