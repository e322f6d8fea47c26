//! `super_packet`: one TUN read with offloads on (virtio-net header and a
//! packet or super-packet, any bytes), rewritten as a core would, then
//! split for the tunnel, rebuilt from its segments, and split as a packet
//! released after a resolution.
//!
//! Input: byte 0 chooses the rewrite (bit 0: the source address, bit 1:
//! the destination, bit 2: the source port) and the MTU for
//! [`batch::split_tcp`] (`576 + 8 × byte 1`); the rest is the read.
//!
//! Invariants: a read is taken or refused, never a panic; a TCP
//! super-packet split for the tunnel gives segments no longer than its
//! headers plus its segment size, each with a valid IPv4 header checksum
//! and a valid TCP checksum (partial checksums completed, the rewrite's
//! address change carried over), carrying the payload in order; segments
//! that rebuild into one super-packet ([`batch::coalesce_tcp`]) give back
//! exactly their payloads, behind a header whose segment size is theirs;
//! a released packet split to an MTU gives segments within it, each with
//! valid checksums.

use std::cell::RefCell;
use std::net::IpAddr;

use hoplab::shell::batch::{self, Read, TunBatch, TunRead, HEADROOM};
use hoplab_dataplane::packet::IpPacket;

/// RFC 1071 sum, unfolded.
fn sum(mut s: u64, data: &[u8]) -> u64 {
    let mut c = data.chunks_exact(2);
    for w in &mut c {
        s += u64::from(u16::from_be_bytes([w[0], w[1]]));
    }
    if let [last] = c.remainder() {
        s += u64::from(*last) << 8;
    }
    s
}

fn fold(mut s: u64) -> u16 {
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

/// A whole TCP packet (IPv4 without options or IPv6 without extension
/// headers, lengths agreeing): its IP header length and TCP header
/// length.
fn tcp_layout(p: &[u8]) -> Option<(usize, usize)> {
    let (iph, proto, total) = match p.first()? >> 4 {
        4 if p.len() >= 20 => (
            usize::from(p[0] & 15) * 4,
            p[9],
            usize::from(u16::from_be_bytes([p[2], p[3]])),
        ),
        6 if p.len() >= 40 => (40, p[6], 40 + usize::from(u16::from_be_bytes([p[4], p[5]]))),
        _ => return None,
    };
    if proto != 6 || total != p.len() || iph < 20 || p.len() < iph + 20 {
        return None;
    }
    let thl = usize::from(p[iph + 12] >> 4) * 4;
    (thl >= 20 && iph + thl <= p.len()).then_some((iph, thl))
}

/// The IPv4 header checksum (if IPv4) and the TCP checksum verify.
fn tcp_checksums_ok(p: &[u8]) -> bool {
    let Some((iph, _)) = tcp_layout(p) else {
        return false;
    };
    let v6 = p[0] >> 4 == 6;
    if !v6 && fold(sum(0, &p[..iph])) != 0xffff {
        return false;
    }
    let (src, dst) = if v6 {
        (&p[8..24], &p[24..40])
    } else {
        (&p[12..16], &p[16..20])
    };
    let ph = sum(sum(sum(0, src), dst), &[0, 6]) + (p.len() - iph) as u64;
    fold(sum(ph, &p[iph..])) == 0xffff
}

/// What a core does to a packet: new addresses (and a port), through the
/// checksum-keeping setters.
fn rewrite(p: &mut [u8], how: u8) {
    let Ok(mut v) = IpPacket::new_checked(p) else {
        return;
    };
    let (src, dst): (IpAddr, IpAddr) = if v.is_ipv6() {
        ("fd18::9".parse().unwrap(), "fdff::1:9".parse().unwrap())
    } else {
        ("10.18.0.9".parse().unwrap(), "10.30.1.9".parse().unwrap())
    };
    if how & 1 != 0 {
        let _ = v.set_src(src);
    }
    if how & 2 != 0 {
        let _ = v.set_dst(dst);
    }
    if how & 4 != 0 {
        let _ = v.set_src_port(4242);
    }
}

thread_local! {
    /// The read and the batch, kept from one input to the next as the
    /// shell keeps them from one read to the next (a fresh pair is 17 MB
    /// of zeroed slots, which made each input cost milliseconds).
    static BUFFERS: RefCell<(TunRead, TunBatch)> = RefCell::new((TunRead::new(), TunBatch::new()));
}

pub fn super_packet(data: &[u8]) {
    BUFFERS.with_borrow_mut(|(r, segs)| one_read(data, r, segs));
}

fn one_read(data: &[u8], r: &mut TunRead, segs: &mut TunBatch) {
    let [how, mtu, raw @ ..] = data else {
        return;
    };
    let mtu = 576 + 8 * usize::from(*mtu);
    let n = match r.load(raw) {
        Ok(Read::Whole(n)) => n,
        Ok(Read::Split(n)) => {
            assert!(n <= batch::SLOTS);
            return;
        }
        Err(_) => return,
    };
    assert_eq!(n + HEADROOM, raw.len());
    let whole_tcp = tcp_layout(r.packet_mut()).is_some();
    let is_super = r.is_super();
    rewrite(r.packet_mut(), *how);
    let mut released = r.packet_mut().to_vec();
    let Ok(k) = r.wire_packets(n) else {
        return;
    };
    if is_super && whole_tcp {
        check_segments(&r.segments, k, &raw[HEADROOM..]);
    }
    if let Ok(Some(k)) = batch::split_tcp(&mut released, mtu, segs) {
        for i in 0..k {
            let s = segs.packet(i);
            assert!(s.len() <= mtu, "a released packet's segment over the MTU");
            assert!(tcp_checksums_ok(s), "a released packet's segment checksum");
        }
    }
}

/// The segments of a split super-packet: bounded, valid, the payload in
/// order; rebuilt, exactly their payloads.
fn check_segments(segs: &TunBatch, k: usize, original: &[u8]) {
    let Some((iph, thl)) = tcp_layout(original) else {
        return;
    };
    let mut payload = Vec::new();
    let mut back_to_back = Vec::new();
    let first = segs.packet(0).len();
    for i in 0..k {
        let s = segs.packet(i);
        assert!(s.len() <= first, "a segment longer than the first");
        assert!(tcp_checksums_ok(s), "segment {i}: checksum");
        payload.extend_from_slice(&s[iph + thl..]);
        back_to_back.extend_from_slice(s);
    }
    assert_eq!(payload, original[iph + thl..], "the payload, in order");
    if let Some((hdr, len)) = batch::coalesce_tcp(&mut back_to_back, first) {
        assert_eq!(usize::from(hdr.gso_size), first - iph - thl);
        assert_eq!(back_to_back[iph + thl..len], payload[..], "rebuilt payload");
    }
}
