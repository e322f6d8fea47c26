//! Pure ACKs folded into the next segment of their direction
//! ([`super::fold`]), on synthetic captures of one TCP connection: the
//! same exchange with and without the ACKs that timing decides gives one
//! trace, and the ACKs that carry evidence stay.

use std::path::Path;

use etherparse::{PacketBuilder, TcpOptionElement};
use pcap_file::DataLink;

use super::*;
use crate::capture::Captured;

const SC: &str = "version: 1
hosts:
  client: {}
  server: {}
links:
  - a: {host: client, ifname: eth0, addr: [10.0.1.2/24]}
    b: {host: server, ifname: eth0, addr: [10.0.1.1/24]}
traffic:
  - {name: echo, from: client, proto: tcp, to: '10.0.1.1:7'}
";

const C: [u8; 4] = [10, 0, 1, 2];
const S: [u8; 4] = [10, 0, 1, 1];
const CPORT: u16 = 40000;

/// One TCP segment: who sends it, its flags (`S`, `A`, `P`, `F`), numbers,
/// payload, window and SACK block.
#[derive(Clone)]
pub(super) struct Seg {
    pub(super) client: bool,
    flags: &'static str,
    seq: u32,
    ack: u32,
    data: &'static [u8],
    window: u16,
    sack: Option<(u32, u32)>,
    /// Seen leaving its sender only.
    pub(super) lost: bool,
}

pub(super) fn seg(
    client: bool,
    flags: &'static str,
    seq: u32,
    ack: u32,
    data: &'static [u8],
) -> Seg {
    Seg {
        client,
        flags,
        seq,
        ack,
        data,
        window: 500,
        sack: None,
        lost: false,
    }
}

pub(super) fn bytes(s: &Seg, ident: u16) -> Vec<u8> {
    let (src, dst, sport, dport) = if s.client {
        (C, S, CPORT, 7)
    } else {
        (S, C, 7, CPORT)
    };
    let mut ip = etherparse::Ipv4Header::new(0, 64, etherparse::IpNumber::TCP, src, dst).unwrap();
    ip.identification = ident;
    let mut b = PacketBuilder::ethernet2([2; 6], [4; 6])
        .ip(etherparse::IpHeaders::Ipv4(ip, Default::default()))
        .tcp(sport, dport, s.seq, s.window);
    for f in s.flags.chars() {
        b = match f {
            'S' => b.syn(),
            'A' => b.ack(s.ack),
            'P' => b.psh(),
            'F' => b.fin(),
            'R' => b.rst(),
            _ => unreachable!("flag {f}"),
        };
    }
    if let Some(block) = s.sack {
        b = b
            .options(&[
                TcpOptionElement::Noop,
                TcpOptionElement::Noop,
                TcpOptionElement::SelectiveAcknowledgement(block, [None; 3]),
            ])
            .unwrap();
    }
    let mut v = Vec::new();
    b.write(&mut v, s.data).unwrap();
    v
}

/// Each segment leaves its sender and reaches its peer 1 µs later; the
/// next segment is 10 µs after.
fn capture(segs: &[Seg]) -> Vec<Captured> {
    let at = |i: usize| 10 * i as u64;
    let v: Vec<_> = (segs.iter().enumerate())
        .map(|(i, s)| (s.clone(), at(i), at(i) + 1))
        .collect();
    timed(&v)
}

pub(super) fn lab() -> LabView {
    LabView::of(&crate::oakestra::parse(Path::new("t.yaml"), "t", SC).unwrap())
}

/// The packets' first lines, e.g. `tcp . 10.0.1.1:7 > 10.0.1.2:40000`,
/// with their first hop's header.
pub(super) fn shown(t: &Trace) -> Vec<String> {
    t.flows[0]
        .packets
        .iter()
        .map(|p| p.hops[0].hdr.to_string())
        .collect()
}

/// An echo: handshake, data, the echo, both FINs, the last ACK; `acks`
/// adds the pure ACKs that timing decides (the server's delayed ACK of
/// the data, the client's ACK of the echo before its FIN, the server's
/// ACK of the client's FIN before its own).
fn echo(acks: bool) -> Vec<Seg> {
    let mut v = vec![
        seg(true, "S", 1000, 0, b""),
        seg(false, "SA", 5000, 1001, b""),
        seg(true, "A", 1001, 5001, b""),
        seg(true, "PA", 1001, 5001, b"hello"),
    ];
    if acks {
        v.push(seg(false, "A", 5001, 1006, b""));
    }
    v.push(seg(false, "PA", 5001, 1006, b"hello"));
    if acks {
        v.push(seg(true, "A", 1006, 5006, b""));
    }
    v.push(seg(true, "FA", 1006, 5006, b""));
    if acks {
        v.push(seg(false, "A", 5006, 1007, b""));
    }
    v.push(seg(false, "FA", 5006, 1007, b""));
    v.push(seg(true, "A", 1007, 5007, b""));
    v
}

#[test]
fn timing_decided_acks_fold_into_the_segment_that_repeats_them() {
    let lab = lab();
    let with = build(&lab, &capture(&echo(true)), &[]);
    let without = build(&lab, &capture(&echo(false)), &[]);
    assert_eq!(with.to_yaml(), without.to_yaml());
    // The handshake's ACK and the last ACK stay.
    assert_eq!(
        shown(&with),
        [
            "10.0.1.2:40000 > 10.0.1.1:7 tcp S seq=0 len=40 ttl=64",
            "10.0.1.1:7 > 10.0.1.2:40000 tcp S. seq=0 ack=1 len=40 ttl=64",
            "10.0.1.2:40000 > 10.0.1.1:7 tcp . seq=1 ack=1 len=40 ttl=64",
            "10.0.1.2:40000 > 10.0.1.1:7 tcp P. seq=1 ack=1 len=45 ttl=64",
            "10.0.1.1:7 > 10.0.1.2:40000 tcp P. seq=1 ack=6 len=45 ttl=64",
            "10.0.1.2:40000 > 10.0.1.1:7 tcp F. seq=6 ack=6 len=40 ttl=64",
            "10.0.1.1:7 > 10.0.1.2:40000 tcp F. seq=6 ack=7 len=40 ttl=64",
            "10.0.1.2:40000 > 10.0.1.1:7 tcp . seq=7 ack=7 len=40 ttl=64",
        ]
    );
}

#[test]
fn a_folded_ack_keeps_its_frames_with_a_comment_naming_the_frame_it_joined() {
    let frames = capture(&echo(true));
    let (t, comments) = build_annotated(&lab(), &frames, &[]);
    assert_eq!(t.flows[0].packets.len(), 8);
    // Segment 5 (frames 9 and 10, 1-based) is the server's delayed ACK;
    // segment 6 (frames 11 and 12) the echo that repeats it.
    for (folded, into) in [(8, 11), (9, 12)] {
        let c = comments[folded].as_deref().unwrap();
        assert!(
            c.contains(&format!("folded into frame {into} ")),
            "frame {}: {c}",
            folded + 1
        );
    }
    // The kept packets are numbered as the trace shows them.
    let echo = comments[10].as_deref().unwrap();
    assert!(echo.starts_with("flow echo, packet 5 (tcp P."), "{echo}");
}

#[test]
fn acks_that_carry_evidence_stay() {
    let lab = lab();
    let base = || {
        vec![
            seg(true, "S", 1000, 0, b""),
            seg(false, "SA", 5000, 1001, b""),
            seg(true, "A", 1001, 5001, b""),
        ]
    };
    let count = |segs: &[Seg]| build(&lab, &capture(segs), &[]).flows[0].packets.len();
    // A duplicate ACK with a SACK block: a loss reported.
    let mut sack = base();
    sack.push(seg(true, "PA", 1001, 5001, b"ab"));
    let mut dup = seg(false, "A", 5001, 1001, b"");
    dup.sack = Some((1003, 1005));
    sack.push(dup);
    sack.push(seg(false, "PA", 5001, 1005, b"x"));
    assert_eq!(count(&sack), 6, "the SACK-carrying ACK stays");
    // A zero window, and the ACK that opens it again.
    let mut zero = base();
    zero.push(seg(true, "PA", 1001, 5001, b"ab"));
    let mut closed = seg(false, "A", 5001, 1003, b"");
    closed.window = 0;
    zero.push(closed);
    zero.push(seg(false, "A", 5001, 1003, b""));
    zero.push(seg(false, "PA", 5001, 1003, b"x"));
    assert_eq!(count(&zero), 7, "both window ACKs stay");
    // The next segment resends older data (its ACK was lost): it does not
    // repeat the ACK.
    let mut resend = base();
    resend.push(seg(false, "PA", 5001, 1001, b"x"));
    let mut lost = seg(true, "A", 1001, 5002, b"");
    lost.lost = true;
    resend.push(lost);
    resend.push(seg(false, "A", 5002, 1001, b""));
    resend.push(seg(false, "PA", 5001, 1001, b"x"));
    assert_eq!(count(&resend), 7, "an ACK before a resend stays");
    // A pure ACK that the next one acknowledges less than: not repeated.
    let mut less = base();
    less.push(seg(true, "PA", 1001, 5001, b"ab"));
    less.push(seg(false, "A", 5001, 1003, b""));
    less.push(seg(false, "PA", 5001, 1002, b"x"));
    assert_eq!(count(&less), 6, "an ACK of more than the next stays");
}

#[test]
fn a_run_of_acks_folds_into_the_first_segment_that_repeats_them_all() {
    // Two data segments acknowledged one by one (quick ACKs) or once
    // (a delayed ACK), then the answer: one trace.
    let lab = lab();
    let run = |each: bool| {
        let mut v = vec![
            seg(true, "S", 1000, 0, b""),
            seg(false, "SA", 5000, 1001, b""),
            seg(true, "A", 1001, 5001, b""),
            seg(true, "PA", 1001, 5001, b"ab"),
        ];
        if each {
            v.push(seg(false, "A", 5001, 1003, b""));
        }
        v.push(seg(true, "PA", 1003, 5001, b"cd"));
        v.push(seg(false, "A", 5001, 1005, b""));
        v.push(seg(false, "PA", 5001, 1005, b"abcd"));
        build(&lab, &capture(&v), &[]).to_yaml()
    };
    assert_eq!(run(true), run(false));
    assert!(!run(true).contains("tcp . seq=1 ack=3"), "{}", run(true));
}

/// The request of an exchange, resent after a retransmission timeout:
/// `slow` when the server had it and answered late (no ACK before the
/// resend), else as `how` says: the first copy lost, or the server's ACK.
fn resent(how: &str) -> Vec<Seg> {
    let mut v = vec![
        seg(true, "S", 1000, 0, b""),
        seg(false, "SA", 5000, 1001, b""),
        seg(true, "A", 1001, 5001, b""),
    ];
    let mut req = seg(true, "PA", 1001, 5001, b"hello");
    req.lost = how == "request lost";
    v.push(req.clone());
    match how {
        "slow" | "request lost" => {}
        "ack lost" => {
            let mut ack = seg(false, "A", 5001, 1006, b"");
            ack.lost = true;
            v.push(ack);
        }
        _ => unreachable!("{how}"),
    }
    req.lost = false;
    v.push(req);
    // The server reports the duplicate (D-SACK) where it had the first.
    let mut dsack = seg(false, "A", 5001, 1006, b"");
    if how != "request lost" {
        dsack.sack = Some((1001, 1006));
    }
    v.push(dsack);
    v.push(seg(false, "PA", 5001, 1006, b"hello"));
    v
}

#[test]
fn a_resend_its_receiver_had_and_answered_late_folds_into_the_first_copy() {
    let lab = lab();
    let mut plain = resent("slow");
    plain.retain(|s| s.sack.is_none());
    plain.remove(4); // the resend
    let frames = capture(&resent("slow"));
    let (t, comments) = build_annotated(&lab, &frames, &[]);
    assert_eq!(t.to_yaml(), build(&lab, &capture(&plain), &[]).to_yaml());
    assert_eq!(t.flows[0].packets.len(), 5, "{}", t.to_yaml());
    // Segment 5 (frames 9, 10) resends segment 4 (frames 7, 8).
    let c = comments[8].as_deref().unwrap();
    assert!(
        c.contains("resend") && c.contains("folded into frame 7 "),
        "{c}"
    );
}

#[test]
fn a_resend_after_a_loss_stays() {
    let lab = lab();
    let n = |how| {
        build(&lab, &capture(&resent(how)), &[]).flows[0]
            .packets
            .len()
    };
    // SYN, SYN-ACK, ACK, request (last seen), resend, reply (the ACK
    // before it folded).
    assert_eq!(n("request lost"), 6);
    // With the server's ACK lost before the resend, the resend stays,
    // and the lost ACK, which never reached the client's host, is the
    // flow's too: it was seen with the flow's addresses and ports.
    assert_eq!(n("ack lost"), 7);
    let t = build(&lab, &capture(&resent("ack lost")), &[]);
    assert!(t.other.is_empty(), "{}", t.to_yaml());
}

/// An echo whose server closes second, as HAProxy does after the
/// client's close: the server's FIN is resent (a tail loss probe) while
/// the client's ACK of it is still on its way (`crossed`); the client,
/// in TIME_WAIT, answers the resend with a duplicate ACK, which finds the
/// server's connection closed and is answered with a reset. `lost`: the
/// client's ACK is lost instead, so the resend and its answer are real.
fn late_ack(how: &str) -> Vec<(Seg, u64, u64)> {
    let mut v = timed_echo();
    v.push((seg(true, "FA", 1006, 5006, b""), 50, 55));
    v.push((seg(false, "FA", 5006, 1007, b""), 60, 65));
    let mut ack = seg(true, "A", 1007, 5007, b"");
    ack.lost = how == "lost";
    v.push((ack, 66, 110));
    match how {
        "plain" => {}
        "crossed" => {
            v.push((seg(false, "FA", 5006, 1007, b""), 100, 105));
            v.push((seg(true, "A", 1007, 5007, b""), 106, 120));
            v.push((seg(false, "R", 5007, 0, b""), 121, 125));
        }
        "lost" => {
            v.push((seg(false, "FA", 5006, 1007, b""), 100, 105));
            v.push((seg(true, "A", 1007, 5007, b""), 106, 120));
        }
        _ => unreachable!("{how}"),
    }
    v
}

#[test]
fn a_resend_that_crossed_its_ack_and_what_it_caused_fold_away() {
    let lab = lab();
    let plain = build(&lab, &timed(&late_ack("plain")), &[]);
    let frames = timed(&late_ack("crossed"));
    let (crossed, comments) = build_annotated(&lab, &frames, &[]);
    assert_eq!(plain.to_yaml(), crossed.to_yaml());
    // Frames 17, 18 (0-based 16, 17): the resend; 19, 20: the duplicate
    // ACK; 21, 22: the reset.
    let says = |i: usize, what: &str, into: usize| {
        let c = comments[i].as_deref().unwrap();
        assert!(
            c.contains(what) && c.contains(&format!("folded into frame {into} ")),
            "frame {}: {c}",
            i + 1
        );
    };
    says(16, "resend", 13);
    says(18, "duplicate ACK", 15);
    says(20, "reset", 13);
}

#[test]
fn a_resend_after_its_ack_was_lost_stays_with_its_answer() {
    let lab = lab();
    let t = build(&lab, &timed(&late_ack("lost")), &[]);
    let plain = build(&lab, &timed(&late_ack("plain")), &[]);
    let n = plain.flows[0].packets.len();
    assert_eq!(t.flows[0].packets.len(), n + 2, "{}", t.to_yaml());
}

/// The client's FIN resent while the server's FIN (which acknowledges it)
/// is on its way; the server, in LAST_ACK, answers the copy with a
/// duplicate ACK that crosses the client's last ACK (the soak's
/// `gateway-restart` flake): one trace, as without the resend.
#[test]
fn a_fin_resent_while_its_ack_was_on_its_way_folds_with_its_duplicate_ack() {
    let lab = lab();
    let run = |resent: bool| {
        let mut v = timed_echo();
        v.push((seg(true, "FA", 1006, 5006, b""), 60, 65));
        v.push((seg(false, "FA", 5006, 1007, b""), 70, 100));
        if resent {
            v.push((seg(true, "FA", 1006, 5006, b""), 90, 95));
            v.push((seg(false, "A", 5007, 1007, b""), 96, 130));
        }
        v.push((seg(true, "A", 1007, 5007, b""), 101, 120));
        build(&lab, &timed(&v), &[]).to_yaml()
    };
    assert_eq!(run(true), run(false));
}

/// The client's pure ACK and its FIN (the same numbers) swapped on their
/// way (two CPUs' queues on a loaded machine): the server, past the FIN,
/// answers the stale ACK with a duplicate ACK (the soak's
/// `ext-to-svc-gateway-cluster-v6` flake), right away or, its socket busy
/// sending its own FIN, after that. One trace, as when they kept their
/// order; every frame of the duplicate names the frame it joined.
#[test]
fn a_duplicate_ack_answering_a_pure_ack_overtaken_by_its_fin_folds_away() {
    let lab = lab();
    let run = |how: &str| {
        let mut v = timed_echo();
        // When the client's ACK arrives, when the server sends its FIN,
        // and when the duplicate ACK.
        let (ack_at, fin, dup_at) = match how {
            "in order" => (64, 67, None),
            "swapped" => (68, 67, Some(69)),
            "swapped, socket busy" => (68, 70, Some(71)),
            _ => unreachable!("{how}"),
        };
        v.push((seg(true, "A", 1006, 5006, b""), 60, ack_at));
        v.push((seg(true, "FA", 1006, 5006, b""), 61, 66));
        v.push((seg(false, "FA", 5006, 1007, b""), fin, fin + 5));
        if let Some(t) = dup_at {
            v.push((seg(false, "A", 5007, 1007, b""), t, t + 5));
        }
        v.push((seg(true, "A", 1007, 5007, b""), 80, 85));
        build_annotated(&lab, &timed(&v), &[])
    };
    let (plain, _) = run("in order");
    for how in ["swapped", "swapped, socket busy"] {
        let (t, comments) = run(how);
        assert_eq!(plain.to_yaml(), t.to_yaml(), "{how}");
        // Frames 17, 18 (0-based 16, 17): the duplicate ACK.
        for i in [16, 17] {
            let c = comments[i].as_deref().unwrap_or_default();
            assert!(
                c.contains("duplicate ACK") && c.contains("arrived after the segment repeating it"),
                "{how}, frame {}: {c}",
                i + 1
            );
        }
    }
}

/// Each segment leaves its sender at `sent` µs and reaches its peer at
/// `arrives` µs (never, when lost).
pub(super) fn timed(segs: &[(Seg, u64, u64)]) -> Vec<Captured> {
    let mut out = Vec::new();
    for (i, (s, sent, arrives)) in segs.iter().enumerate() {
        let (from, to) = if s.client {
            ("client", "server")
        } else {
            ("server", "client")
        };
        let data = bytes(s, i as u16 + 1);
        let hops = [(from, true, *sent), (to, false, *arrives)];
        for &(host, outgoing, t) in &hops[..if s.lost { 1 } else { 2 }] {
            out.push(Captured {
                ts_ns: 1_000_000 + t * 1_000,
                host: host.into(),
                ifname: "eth0".into(),
                outgoing,
                data: data.clone(),
                link: DataLink::ETHERNET,
            });
        }
    }
    out
}

/// Handshake and one echo of `hello` (client port 40000, sequence numbers
/// from 1000 and 5000), each segment 10 µs after the one before and 5 µs
/// on its way.
pub(super) fn timed_echo() -> Vec<(Seg, u64, u64)> {
    [
        seg(true, "S", 1000, 0, b""),
        seg(false, "SA", 5000, 1001, b""),
        seg(true, "A", 1001, 5001, b""),
        seg(true, "PA", 1001, 5001, b"hello"),
        seg(false, "PA", 5001, 1006, b"hello"),
    ]
    .into_iter()
    .enumerate()
    .map(|(i, s)| (s, 10 * i as u64, 10 * i as u64 + 5))
    .collect()
}
