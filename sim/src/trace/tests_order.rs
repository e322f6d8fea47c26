//! The canonical order of a connection's packets ([`super::order`]), on
//! synthetic captures of one TCP connection where two packets cross in
//! flight: whichever was sent first, the trace is the same, and a packet
//! that answers another comes after it.

use super::tests_fold::{lab, seg, shown, timed, timed_echo, Seg};
use super::*;

/// [`timed_echo`], then `close`, timed as given.
fn echo_then(close: &[(Seg, u64, u64)]) -> Trace {
    let mut v = timed_echo();
    v.extend_from_slice(close);
    build(&lab(), &timed(&v), &[])
}

/// The two ACKs of a close crossing: the client's ACK of the server's FIN,
/// and the server's duplicate ACK answering the client's FIN sent again.
/// Both orders of sending give one trace, the client's ACK (which answers
/// the server's FIN) first.
#[test]
fn two_acks_that_cross_in_flight_are_listed_the_same_whichever_left_first() {
    let close = |client_first: bool| {
        let (c, s) = if client_first { (100, 102) } else { (102, 100) };
        echo_then(&[
            (seg(true, "FA", 1006, 5006, b""), 60, 65),
            (seg(false, "FA", 5006, 1007, b""), 70, 75),
            (seg(true, "A", 1007, 5007, b""), c, c + 20),
            (seg(false, "A", 5007, 1007, b""), s, s + 20),
        ])
    };
    let (a, b) = (close(true), close(false));
    assert_eq!(a.to_yaml(), b.to_yaml());
    let last: Vec<String> = shown(&b).split_off(7);
    assert_eq!(
        last,
        [
            "10.0.1.2:40000 > 10.0.1.1:7 tcp . seq=7 ack=7 len=40 ttl=64",
            "10.0.1.1:7 > 10.0.1.2:40000 tcp . seq=7 ack=7 len=40 ttl=64",
        ]
    );
}

/// A simultaneous close: both FINs cross, then both ACKs. Neither FIN
/// answers the other: the initiator's comes first, and so its ACK.
#[test]
fn a_simultaneous_close_lists_the_initiators_side_first_each_time() {
    let close = |fins: [u64; 2], acks: [u64; 2]| {
        echo_then(&[
            (seg(true, "FA", 1006, 5006, b""), fins[0], fins[0] + 20),
            (seg(false, "FA", 5006, 1006, b""), fins[1], fins[1] + 20),
            (seg(true, "A", 1007, 5007, b""), acks[0], acks[0] + 20),
            (seg(false, "A", 5007, 1007, b""), acks[1], acks[1] + 20),
        ])
    };
    let all = [
        close([60, 62], [90, 92]),
        close([62, 60], [90, 92]),
        close([60, 62], [92, 90]),
        close([62, 60], [92, 90]),
    ];
    for t in &all[1..] {
        assert_eq!(all[0].to_yaml(), t.to_yaml());
    }
    let from_client: Vec<bool> = (all[0].flows[0].packets[5..].iter())
        .map(|p| p.packet.contains("10.0.1.2:40000 >"))
        .collect();
    assert_eq!(from_client, [true, false, true, false]);
}

/// The server's ACK of the client's first data and the client's second
/// data cross: the ACK answers (it acknowledges bytes the server had not
/// acknowledged), the data does not, so the ACK comes first either way.
/// Without the ACK's answer arriving, the second data was sent anyway: no
/// causal order between them, one listed order.
#[test]
fn an_answer_goes_before_a_packet_that_crossed_it() {
    let run = |ack_first: bool| {
        let (a, d) = if ack_first { (40, 42) } else { (42, 40) };
        let v = vec![
            (seg(true, "S", 1000, 0, b""), 0, 5),
            (seg(false, "SA", 5000, 1001, b""), 10, 15),
            (seg(true, "A", 1001, 5001, b""), 20, 25),
            (seg(true, "PA", 1001, 5001, b"ab"), 30, 35),
            (seg(false, "A", 5001, 1003, b""), a, a + 20),
            (seg(true, "PA", 1003, 5001, b"cd"), d, d + 20),
        ];
        build(&lab(), &timed(&v), &[])
    };
    let (a, b) = (run(true), run(false));
    assert_eq!(a.to_yaml(), b.to_yaml());
    assert_eq!(
        shown(&b)[4..],
        [
            "10.0.1.1:7 > 10.0.1.2:40000 tcp . seq=1 ack=3 len=40 ttl=64",
            "10.0.1.2:40000 > 10.0.1.1:7 tcp P. seq=3 ack=1 len=42 ttl=64",
        ]
    );
}

/// A packet never goes before one it acknowledges, and each direction
/// keeps its own order: the echo is listed after the data it answers even
/// when a frame of the data was captured later (a slow capture socket).
#[test]
fn a_packet_stays_after_what_it_acknowledges_and_its_direction_keeps_its_order() {
    let t = echo_then(&[
        (seg(true, "FA", 1006, 5006, b""), 60, 65),
        (seg(false, "FA", 5006, 1007, b""), 70, 75),
        (seg(true, "A", 1007, 5007, b""), 80, 85),
    ]);
    let flags: Vec<String> = (t.flows[0].packets.iter())
        .map(|p| p.packet.split(' ').take(2).collect::<Vec<_>>().join(" "))
        .collect();
    assert_eq!(
        flags,
        ["tcp S", "tcp S.", "tcp .", "tcp P.", "tcp P.", "tcp F.", "tcp F.", "tcp ."]
    );
}

/// A lost ACK and the resend it caused: the ACK answers the first copy,
/// so it stays before the resend (not after the copy it also covers).
#[test]
fn a_lost_ack_stays_before_the_resend_it_caused() {
    let mut lost = seg(false, "A", 5001, 1006, b"");
    lost.lost = true;
    let v = vec![
        (seg(true, "S", 1000, 0, b""), 0, 5),
        (seg(false, "SA", 5000, 1001, b""), 10, 15),
        (seg(true, "A", 1001, 5001, b""), 20, 25),
        (seg(true, "PA", 1001, 5001, b"hello"), 30, 35),
        (lost, 40, 0),
        (seg(true, "PA", 1001, 5001, b"hello"), 300, 305),
        (seg(false, "A", 5001, 1006, b""), 310, 315),
    ];
    let frames = timed(&v);
    let mut comments = vec![None; frames.len()];
    let (seen, _) = super::decode::decode(&frames, &mut comments);
    // Each packet by its segment's number (its IP ID).
    let order: Vec<u16> = (super::path::paths(&lab(), &seen).iter())
        .map(|c| seen[c[0]].s.ident as u16)
        .collect();
    assert_eq!(order, [1, 2, 3, 4, 5, 6, 7]);
}
