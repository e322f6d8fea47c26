//! Fragments: the fragment table on its own and both net manager entry
//! points on a sequence of packets (see [`super::common::records`]).
//!
//! A record that is a fragment is fed as it is; a record that is a whole
//! packet is cut ([`fragment`]) into pieces of `8 × (1 + last byte % 64)`
//! bytes, fed in an order its second-to-last byte rotates, the first
//! piece repeated when that byte's top bit is set. The clock advances as
//! the records say (up to 31 s, past the table's timeout).
//!
//! Invariants: the table never holds more datagrams or bytes than its
//! bounds, and holds none once everything expired; a datagram it makes
//! whole is no fragment, its lengths (and IPv4 header checksum) agree
//! with its bytes; the pieces of a cut packet, in any order with
//! duplicates, give back exactly that packet in a fresh table. Through
//! the cores (n1's TUN, n2's tunnel, each in lockstep in place and
//! copying): every fragment is held or dropped, never forwarded in
//! place, every fragment the core cuts fits the MTU, and a datagram the
//! core cut again reassembles into a packet that keeps every checksum the
//! original had valid.

use hoplab_dataplane::fragments::{fragment, is_fragment, FragmentConfig, FragmentTable};
use hoplab_dataplane::netmanager::Action;
use hoplab_dataplane::packet::IpPacket;
use hoplab_dataplane::Millis;

use super::common::{records, Checks};
use super::netmanager::{Entry, Lockstep, N1};

const CFG: FragmentConfig = FragmentConfig {
    max_datagrams: 4,
    max_bytes: 16 << 10,
    timeout: Millis(30_000),
};

/// The packets a record stands for: itself if it is a fragment or not a
/// packet; else its pieces, in the order its last bytes choose.
pub fn pieces(bytes: &[u8]) -> (Vec<Vec<u8>>, bool) {
    let whole = {
        let mut copy = bytes.to_vec();
        IpPacket::new_checked(&mut copy).is_ok()
    };
    if !whole || bytes.len() < 2 {
        return (vec![bytes.to_vec()], false);
    }
    let (rot, size) = (bytes[bytes.len() - 2], bytes[bytes.len() - 1]);
    let payload = 8 * (1 + usize::from(size % 64));
    let Some(mut cut) = fragment(bytes, payload, u32::from(rot)) else {
        return (vec![bytes.to_vec()], false);
    };
    let n = cut.len();
    cut.rotate_left(usize::from(rot & 0x7f) % n);
    if rot & 0x80 != 0 {
        let first = cut[0].clone();
        cut.push(first);
    }
    (cut, true)
}

/// The IP length a whole packet's header gives.
fn ip_len(p: &[u8]) -> usize {
    if p[0] >> 4 == 6 {
        40 + usize::from(u16::from_be_bytes([p[4], p[5]]))
    } else {
        usize::from(u16::from_be_bytes([p[2], p[3]]))
    }
}

fn check_whole(p: &[u8]) {
    assert!(!is_fragment(p), "a reassembled datagram is a fragment");
    assert_eq!(ip_len(p), p.len(), "reassembled lengths disagree");
    assert_ne!(Checks::of(p).ipv4_header, Some(false), "reassembled header");
}

/// The pieces of a cut packet, fed to a fresh table, give it back.
fn round_trip(original: &[u8], cut: &[Vec<u8>]) {
    let mut t = FragmentTable::new(FragmentConfig::default());
    let mut got = None;
    for p in cut {
        if let Ok(Some(w)) = t.insert(Millis(0), None, p) {
            assert!(got.is_none(), "made whole twice");
            got = Some(w.packet);
        }
    }
    let got = got.expect("the pieces of a cut packet make it whole");
    assert_eq!(
        got,
        &original[..ip_len(original)],
        "reassembled differently"
    );
}

/// What the core sent of one record, reassembled, keeps the original's
/// valid checksums.
fn check_sent(original: &[u8], actions: &[Action]) {
    let mut t = FragmentTable::new(FragmentConfig::default());
    for a in actions {
        let (Action::WriteTun(p) | Action::SendTunnel { datagram: p, .. }) = a else {
            continue;
        };
        if !is_fragment(p) {
            continue;
        }
        if let Ok(Some(w)) = t.insert(Millis(0), None, p) {
            check_whole(&w.packet);
            Checks::of(original).assert_kept(&Checks::of(&w.packet), "cut again");
        }
    }
}

pub fn fragments(data: &[u8]) {
    let mut table = FragmentTable::new(CFG);
    let (mut n1, mut n2) = (Lockstep::new(1), Lockstep::new(2));
    let mut now = Millis(0);
    for r in records(data) {
        now = now + r.advance;
        table.expire(now);
        n1.advance(r.advance);
        n2.advance(r.advance);
        let (cut, was_cut) = pieces(&r.bytes);
        if was_cut {
            round_trip(&r.bytes, &cut);
        }
        let (mut sent1, mut sent2) = (Vec::new(), Vec::new());
        for p in &cut {
            if let Ok(Some(w)) = table.insert(now, None, p) {
                check_whole(&w.packet);
            }
            assert!(table.len() <= CFG.max_datagrams && table.bytes() <= CFG.max_bytes);
            n1.packet(Entry::Tun, p);
            sent1.extend_from_slice(n1.last_actions());
            n2.packet(Entry::Tunnel(N1.into()), p);
            sent2.extend_from_slice(n2.last_actions());
        }
        if was_cut {
            check_sent(&r.bytes, &sent1);
            check_sent(&r.bytes, &sent2);
        }
    }
    table.expire(Millis::MAX);
    assert!(
        table.is_empty() && table.bytes() == 0,
        "the table kept bytes"
    );
    n1.finish();
    n2.finish();
}
