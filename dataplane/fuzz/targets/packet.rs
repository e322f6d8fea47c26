//! The packet views: [`IpPacket::new_checked`] on arbitrary bytes, then
//! every getter and every setter on what it accepts.
//!
//! Input: a control byte (bits 0-2: checksum fix-ups as in
//! [`super::common::Record`]; bit 3: the new addresses are IPv6; bits 4-7:
//! which of the setter pairs run), a port (2 bytes), an address (16 bytes;
//! IPv4 takes the first 4), then the packet.
//!
//! Invariants: no getter or setter panics on an accepted buffer (the
//! module's panic contract); a setter given the wrong family or a packet
//! without ports fails and leaves the bytes as they were; a getter reads
//! back what its setter wrote; a checksum that was valid stays valid; the
//! rewritten packet is accepted again, with the same length and transport.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hoplab_dataplane::packet::IpPacket;

use super::common::{fix_checksums, Checks};

pub fn view(data: &[u8]) {
    let [ctl, p0, p1, rest @ ..] = data else {
        return;
    };
    let Some((addr, packet)) = rest.split_first_chunk::<16>() else {
        return;
    };
    let port = u16::from_be_bytes([*p0, *p1]);
    let addr = if ctl & 8 != 0 {
        IpAddr::V6(Ipv6Addr::from(*addr))
    } else {
        IpAddr::V4(Ipv4Addr::new(addr[0], addr[1], addr[2], addr[3]))
    };
    let mut buf = packet.to_vec();
    fix_checksums(&mut buf, *ctl);
    let Ok(v) = IpPacket::new_checked(&mut buf) else {
        return;
    };
    read_all(&v);
    let (len, transport) = (v.len(), v.transport());
    let before = Checks::of(v.as_bytes());
    let mut v = IpPacket::new_checked(&mut buf).expect("accepted once, accepted again");
    let ops = ctl >> 4;
    if ops & 1 != 0 {
        set(&mut v, |v| v.set_src(addr), |v| Some(v.src()) == Some(addr));
        set(&mut v, |v| v.set_dst(addr), |v| Some(v.dst()) == Some(addr));
    }
    if ops & 2 != 0 {
        set(
            &mut v,
            |v| v.set_src_port(port),
            |v| v.src_port() == Some(port),
        );
        set(
            &mut v,
            |v| v.set_dst_port(port),
            |v| v.dst_port() == Some(port),
        );
    }
    if ops & 4 != 0 {
        set(
            &mut v,
            |v| v.set_quoted_src(addr),
            |v| v.quoted_src() == Some(addr),
        );
        set(
            &mut v,
            |v| v.set_quoted_dst(addr),
            |v| v.quoted_dst() == Some(addr),
        );
    }
    if ops & 8 != 0 {
        let q = |v: &IpPacket<'_>| v.quoted_src_port() == Some(port);
        set(&mut v, |v| v.set_quoted_src_port(port), q);
        let q = |v: &IpPacket<'_>| v.quoted_dst_port() == Some(port);
        set(&mut v, |v| v.set_quoted_dst_port(port), q);
    }
    read_all(&v);
    before.assert_kept(&Checks::of(v.as_bytes()), "packet view");
    let again = IpPacket::new_checked(&mut buf).expect("a rewritten packet is accepted again");
    assert_eq!((again.len(), again.transport()), (len, transport));
}

/// Runs one setter: on success the getter reads the value back, on
/// failure the packet is unchanged.
fn set<E>(
    v: &mut IpPacket<'_>,
    setter: impl FnOnce(&mut IpPacket<'_>) -> Result<(), E>,
    reads_back: impl FnOnce(&IpPacket<'_>) -> bool,
) {
    let old = v.as_bytes().to_vec();
    if setter(v).is_ok() {
        assert!(reads_back(v), "a getter does not read back its setter");
    } else {
        assert_eq!(v.as_bytes(), &old[..], "a failed setter changed the packet");
    }
}

/// Every getter, with the consistency between them that the view
/// promises.
fn read_all(v: &IpPacket<'_>) {
    assert_eq!(v.as_bytes().len(), v.len());
    assert!(!v.is_empty());
    assert!(v.transport_offset() <= v.len());
    assert!(v.payload().len() <= v.len() - v.transport_offset());
    assert_eq!(v.src().is_ipv6(), v.is_ipv6());
    assert_eq!(v.dst().is_ipv6(), v.is_ipv6());
    let _ = (v.protocol(), v.ttl(), v.tcp_flags(), v.icmp_type_code());
    assert_eq!(v.src_port().is_some(), v.dst_port().is_some());
    match v.quote() {
        Some(q) => {
            let _ = (q.kind(), q.protocol());
            assert!(v.quoted_src().is_some() && v.quoted_dst().is_some());
        }
        None => assert!(v.quoted_src().is_none() && v.quoted_src_port().is_none()),
    }
    let _ = (v.quoted_dst_port(), v.quoted_src_port());
}
