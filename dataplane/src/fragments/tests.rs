use std::net::IpAddr;

use proptest::prelude::*;

use super::*;
use crate::packet::IpPacket;
use crate::testutil::{build, checksums_full, fix_ipv4_header_checksum, L4};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A UDP datagram of `len` payload bytes that may be fragmented.
fn datagram(v6: bool, len: usize) -> Vec<u8> {
    let payload: Vec<u8> = (0..len).map(|i| (i * 7 + i / 251) as u8).collect();
    let (s, d) = if v6 {
        (ip("fd18::2"), ip("fdff::1:1"))
    } else {
        (ip("10.18.0.2"), ip("10.30.1.1"))
    };
    let mut p = build(s, d, L4::Udp { sp: 40000, dp: 80 }, &payload);
    if !v6 {
        p[4..6].copy_from_slice(&0x1234u16.to_be_bytes());
        p[6] &= !0x40;
        fix_ipv4_header_checksum(&mut p);
    }
    p
}

fn table() -> FragmentTable {
    FragmentTable::new(FragmentConfig::default())
}

/// Feeds `frags` in order; returns the datagram made whole, if any.
fn feed(t: &mut FragmentTable, frags: &[Vec<u8>]) -> Option<Reassembled> {
    let mut whole = None;
    for f in frags {
        assert!(is_fragment(f));
        if let Some(w) = t.insert(Millis(0), None, f).unwrap() {
            assert!(whole.is_none());
            whole = Some(w);
        }
    }
    whole
}

#[test]
fn a_datagram_cut_and_reassembled_is_the_same_packet() {
    for v6 in [false, true] {
        let p = datagram(v6, 3000);
        let frags = fragment(&p, 1400, 77).unwrap();
        assert_eq!(frags.len(), 3);
        for f in &frags {
            assert!(f.len() <= 1400 + 48, "{}", f.len());
            if !v6 {
                assert_eq!(checksum::fold(checksum::sum_bytes(0, &f[..20])), 0xffff);
            }
        }
        let mut t = table();
        let whole = feed(&mut t, &frags).unwrap();
        assert_eq!(whole.packet, p);
        assert_eq!(whole.fragments, 3);
        assert_eq!(whole.shape.payload, 1400 & !7);
        assert!(checksums_full(&whole.packet));
        // Cut again as it came: the same fragments.
        assert_eq!(
            fragment(&whole.packet, whole.shape.payload, whole.shape.ident).unwrap(),
            frags
        );
        assert!(t.is_empty() && t.bytes() == 0 && t.next_deadline().is_none());
    }
}

#[test]
fn a_datagram_that_fits_is_not_cut_and_df_is_kept() {
    let p = datagram(false, 100);
    assert!(fragment(&p, 1400, 1).is_none());
    let mut df = datagram(false, 3000);
    df[6] |= 0x40;
    fix_ipv4_header_checksum(&mut df);
    assert!(fragment(&df, 1400, 1).is_none());
    assert!(!is_fragment(&p));
}

#[test]
fn later_ipv4_fragments_carry_only_copied_options() {
    // Header with a copied option (type 0x94, router alert, 4 bytes) and
    // a record-route option (type 7, not copied), 24 + 8 = 32 bytes.
    let body = datagram(false, 2000);
    let mut p = vec![0x48];
    p.extend_from_slice(&body[1..20]);
    p.extend_from_slice(&[0x94, 4, 0, 0, 7, 7, 4, 0, 0, 0, 0, 0]);
    p.extend_from_slice(&body[20..]);
    let total = u16::try_from(p.len()).unwrap();
    p[2..4].copy_from_slice(&total.to_be_bytes());
    fix_ipv4_header_checksum(&mut p);
    let frags = fragment(&p, 1000, 0).unwrap();
    assert_eq!(frags[0][0], 0x48);
    assert_eq!(frags[1][0], 0x46);
    assert_eq!(&frags[1][20..24], &[0x94, 4, 0, 0]);
    let whole = feed(&mut table(), &frags).unwrap();
    assert_eq!(whole.packet, p);
}

#[test]
fn overlaps_discard_the_datagram_duplicates_only_themselves() {
    let p = datagram(false, 3000);
    let frags = fragment(&p, 1000, 0).unwrap();
    let mut t = table();
    assert_eq!(t.insert(Millis(0), None, &frags[0]), Ok(None));
    assert_eq!(
        t.insert(Millis(0), None, &frags[0]),
        Err(Refused {
            why: Refusal::Duplicate,
            discarded: Discarded::default()
        })
    );
    // The second fragment moved 8 bytes back: overlaps the first.
    let mut overlapping = frags[1].clone();
    overlapping[6..8].copy_from_slice(&(0x2000u16 | (1000 / 8 - 1)).to_be_bytes());
    fix_ipv4_header_checksum(&mut overlapping);
    // The first fragment held is discarded with it, named by its quote.
    assert_eq!(
        t.insert(Millis(0), None, &overlapping),
        Err(Refused {
            why: Refusal::Overlap,
            discarded: Discarded {
                from: None,
                quotes: vec![frags[0][..28].to_vec()]
            }
        })
    );
    assert!(t.is_empty() && t.bytes() == 0);
    // A last fragment that ends before data held contradicts it.
    assert_eq!(t.insert(Millis(0), None, &frags[1]), Ok(None));
    let mut short_last = frags[0].clone();
    short_last[6..8].copy_from_slice(&0u16.to_be_bytes());
    short_last[6] = 0;
    short_last[7] = 1; // offset 8, last
    fix_ipv4_header_checksum(&mut short_last);
    assert_eq!(
        t.insert(Millis(0), None, &short_last).unwrap_err().why,
        Refusal::Overlap
    );
}

#[test]
fn missing_pieces_time_out_at_the_deadline() {
    let frags = fragment(&datagram(true, 3000), 1200, 5).unwrap();
    let mut t = table();
    assert_eq!(t.insert(Millis(10), None, &frags[0]), Ok(None));
    assert_eq!(t.insert(Millis(20), None, &frags[2]), Ok(None));
    assert_eq!(t.next_deadline(), Some(Millis(30_010)));
    assert!(t.expire(Millis(30_009)).is_empty());
    let gone = t.expire(Millis(30_010));
    assert_eq!(gone.len(), 1);
    assert_eq!((gone[0].from, gone[0].len()), (None, 2));
    assert!(t.is_empty() && t.bytes() == 0 && t.next_deadline().is_none());
    // The same fragments from another place are another datagram.
    assert_eq!(
        t.insert(Millis(0), Some(ip("10.10.0.2")), &frags[0]),
        Ok(None)
    );
    assert_eq!(t.insert(Millis(0), None, &frags[1]), Ok(None));
    assert_eq!(t.len(), 2);
}

#[test]
fn the_caps_refuse_new_fragments() {
    let mut t = FragmentTable::new(FragmentConfig {
        max_datagrams: 2,
        max_bytes: 4300,
        timeout: Millis(1000),
    });
    let first = |id: u16| {
        let mut p = datagram(false, 3000);
        p[4..6].copy_from_slice(&id.to_be_bytes());
        fix_ipv4_header_checksum(&mut p);
        fragment(&p, 1400, 0).unwrap()
    };
    assert_eq!(t.insert(Millis(0), None, &first(1)[0]), Ok(None));
    assert_eq!(t.insert(Millis(0), None, &first(2)[0]), Ok(None));
    let over = t.insert(Millis(0), None, &first(3)[0]).unwrap_err();
    assert_eq!(over.why, Refusal::OverCap);
    // Bytes: the last piece of datagram 1 would take it past 4300.
    assert_eq!(t.insert(Millis(0), None, &first(1)[1]), Ok(None));
    let over = t.insert(Millis(0), None, &first(1)[2]).unwrap_err();
    assert_eq!(over.why, Refusal::OverCap);
    assert!(t.bytes() <= 4300);
}

#[test]
fn malformed_fragments_are_refused() {
    let frags = fragment(&datagram(false, 3000), 1400, 0).unwrap();
    // A non-last fragment not a multiple of 8 long.
    let mut odd = frags[0].clone();
    odd.truncate(odd.len() - 3);
    let total = u16::try_from(odd.len()).unwrap();
    odd[2..4].copy_from_slice(&total.to_be_bytes());
    fix_ipv4_header_checksum(&mut odd);
    // Past 65535 bytes.
    let mut far = frags[2].clone();
    far[6..8].copy_from_slice(&0x1fffu16.to_be_bytes());
    fix_ipv4_header_checksum(&mut far);
    let mut t = table();
    for bad in [odd, far, vec![0x45; 10], vec![]] {
        assert_eq!(
            t.insert(Millis(0), None, &bad).unwrap_err().why,
            Refusal::Malformed
        );
    }
    assert!(t.is_empty());
}

/// The fragments of a datagram cut at `size`, plus arbitrary bytes.
fn pieces(v6: bool) -> impl Strategy<Value = (Vec<u8>, Vec<Vec<u8>>)> {
    (1usize..4000, 8usize..1500).prop_map(move |(len, size)| {
        let p = datagram(v6, len);
        let frags = fragment(&p, size, 9).unwrap_or_else(|| vec![p.clone()]);
        (p, frags)
    })
}

proptest! {
    /// Any order, with duplicates: the datagram comes back whole, once,
    /// exactly as it was cut.
    #[test]
    fn any_order_with_duplicates_reassembles(
        v6 in any::<bool>(),
        (p, frags) in pieces(false),
        order in proptest::collection::vec(any::<prop::sample::Index>(), 0..80),
    ) {
        let (p, frags) = if v6 {
            let p6 = datagram(true, p.len() - 28);
            let f = fragment(&p6, 1000, 9).unwrap_or_else(|| vec![p6.clone()]);
            (p6, f)
        } else {
            (p, frags)
        };
        if frags.len() == 1 {
            // Fits in one piece: not a fragment.
            return Ok(());
        }
        let mut seq: Vec<usize> = order.iter().map(|i| i.index(frags.len())).collect();
        seq.extend(0..frags.len());
        let mut t = table();
        let mut whole = Vec::new();
        for i in seq {
            match t.insert(Millis(0), None, &frags[i]) {
                Ok(Some(w)) => whole.push(w),
                Ok(None) => {}
                Err(r) => prop_assert_eq!(r.why, Refusal::Duplicate),
            }
        }
        // Completed once; later copies start a datagram that never ends.
        prop_assert!(!whole.is_empty());
        prop_assert_eq!(&whole[0].packet, &p);
        let mut copy = whole[0].packet.clone();
        prop_assert!(IpPacket::new_checked(&mut copy).is_ok());
    }

    /// A datagram missing a fragment times out into one quote per
    /// fragment held, each exactly that fragment's header and first 8
    /// bytes of data, in the order of their offsets, and from where they
    /// came.
    #[test]
    fn a_timed_out_datagram_quotes_each_fragment_held(
        v6 in any::<bool>(),
        len in 1000usize..4000,
        size in 8usize..1000,
        missing in any::<prop::sample::Index>(),
        order in any::<prop::sample::Index>(),
        tunnel in any::<bool>(),
    ) {
        let p = datagram(v6, len);
        let frags = fragment(&p, size, 9).unwrap();
        let missing = missing.index(frags.len());
        let mut held: Vec<usize> = (0..frags.len()).filter(|&i| i != missing).collect();
        // Any arrival order: a rotation of the offsets' order.
        let r = order.index(held.len());
        held.rotate_left(r);
        let from = tunnel.then(|| ip("10.10.0.2"));
        let mut t = table();
        for &i in &held {
            prop_assert_eq!(t.insert(Millis(0), from, &frags[i]), Ok(None));
        }
        let gone = t.expire(Millis(30_000));
        prop_assert_eq!(gone.len(), 1);
        prop_assert_eq!(gone[0].from, from);
        held.sort_unstable();
        let hdr = if v6 { 48 } else { 20 };
        let want: Vec<Vec<u8>> = held
            .iter()
            .map(|&i| frags[i][..(hdr + 8).min(frags[i].len())].to_vec())
            .collect();
        prop_assert_eq!(&gone[0].quotes, &want);
        prop_assert!(t.is_empty() && t.bytes() == 0);
    }

    /// Fragments of any offsets, lengths and flags, over one datagram's
    /// identity: never a panic; a datagram made whole is a valid packet
    /// of the length its fragments said; the table stays in its bounds
    /// and its byte count returns to zero when emptied.
    #[test]
    fn arbitrary_fragments_give_a_whole_datagram_or_a_refusal(
        v6 in any::<bool>(),
        frags in proptest::collection::vec((0u16..400, 1usize..300, any::<bool>(), any::<u8>()), 1..40),
    ) {
        let base = datagram(v6, 4000);
        let cfg = FragmentConfig { max_datagrams: 4, max_bytes: 20_000, timeout: Millis(100) };
        let mut t = FragmentTable::new(cfg);
        for (i, (off8, len, more, fill)) in frags.into_iter().enumerate() {
            let f = forge(&base, v6, usize::from(off8) * 8, len, more, fill);
            if let Ok(Some(w)) = t.insert(Millis(i as u64 * 10), None, &f) {
                let mut copy = w.packet.clone();
                let v = IpPacket::new_checked(&mut copy);
                prop_assert!(!matches!(v, Err(crate::packet::ParseError::Fragment)));
                prop_assert!(w.fragments >= 1);
            }
            prop_assert!(t.len() <= cfg.max_datagrams && t.bytes() <= cfg.max_bytes);
            t.expire(Millis(i as u64 * 10));
        }
        t.expire(Millis::MAX);
        prop_assert!(t.is_empty());
        prop_assert_eq!(t.bytes(), 0);
    }
}

/// A fragment of `base`'s identity at `off` with `len` bytes of `fill`.
fn forge(base: &[u8], v6: bool, off: usize, len: usize, more: bool, fill: u8) -> Vec<u8> {
    if v6 {
        let mut f = base[..40].to_vec();
        f[6] = 44;
        let word = u16::try_from(off).unwrap_or(0xfff8) & 0xfff8 | u16::from(more);
        f.extend_from_slice(&[17, 0]);
        f.extend_from_slice(&word.to_be_bytes());
        f.extend_from_slice(&[0, 0, 0, 9]);
        f.extend(std::iter::repeat_n(fill, len));
        let plen = u16::try_from(f.len() - 40).unwrap();
        f[4..6].copy_from_slice(&plen.to_be_bytes());
        f
    } else {
        let mut f = base[..20].to_vec();
        f.extend(std::iter::repeat_n(fill, len));
        let total = u16::try_from(f.len()).unwrap();
        f[2..4].copy_from_slice(&total.to_be_bytes());
        let word =
            u16::try_from(off / 8).unwrap_or(0x1fff) & 0x1fff | if more { 0x2000 } else { 0 };
        f[6..8].copy_from_slice(&word.to_be_bytes());
        fix_ipv4_header_checksum(&mut f);
        f
    }
}
