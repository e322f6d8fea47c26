//! Batched TUN I/O with segmentation offloads.
//!
//! [`TunRead`]: one read of the TUN. With offloads on, the kernel hands
//! over a TCP super-packet of up to 64 KiB (a virtio-net header in
//! front: segment size, where the checksum starts, `NEEDS_CSUM`); the
//! core rewrites it once, as one packet (its headers are those of every
//! segment). Under `CHECKSUM_PARTIAL` the TCP/UDP checksum field holds
//! only the pseudo-header's sum, the rest is summed when the kernel
//! segments: so after the core, the field is set to the sum read, moved
//! by the change of the addresses (RFC 1624), whatever the core's
//! setters wrote there (they keep full checksums, which a port change
//! also moves; the pseudo-header has no ports). The super-packet goes
//! back to the TUN as it came (one write, same header), or, for the
//! tunnel, is split into wire-sized packets with their checksums
//! completed ([`TunRead::wire_packets`]): split only where the path needs
//! it. A UDP super-packet (USO) is split on read.
//!
//! A single packet (not a super-packet) with a partial checksum gets its
//! checksum completed on read, so that a copy the core keeps (a packet
//! waiting for a resolution) is a packet of its own. A super-packet the
//! core keeps a copy of (when a connection's flow is unknown to the core
//! mid-transfer, after a restart or an expiry, and its service must be
//! resolved again) comes back as one TCP packet longer than the MTU,
//! without its virtio-net header: [`split_tcp`] cuts it into wire-sized
//! segments (checksums complete), written as a batch (coalesced again
//! where the device has offloads on) or sent as tunnel datagrams, so the
//! kernel delivers it instead of dropping it.
//!
//! [`coalesce_tcp`]: the datagrams of one `UDP_GRO` receive on the tunnel
//! (the segments a peer split one super-packet into), rewritten in place,
//! rebuilt into that super-packet in the receive buffer and written with
//! one system call ([`write_super`]).
//!
//! [`TunBatch`]: packets received separately (the tunnel's datagrams
//! that do not rebuild a super-packet, the segments of a split read),
//! rewritten in place by the caller; the ones kept are written together,
//! segments of one flow that follow each other coalesced into a
//! super-packet (tun-rs's GRO) where the device has offloads on.
//!
//! A batch is what one read (or one received datagram) gave: the shell
//! flushes it before the next read, so it only ever writes a super-packet
//! made of segments that arrived as one super-packet or one GRO datagram.
//! Wire-sized packets in give wire-sized packets out, which keeps the
//! harness's captures wire-sized (its veths carry one segment per packet).
//!
//! It knows neither core: the caller rewrites each packet in place and
//! says which ones to write. The splitting and coalescing are tun-rs's
//! (a port of wireguard-go's TUN offload code).

use std::io;

use tun_rs::{
    ExpandBuffer, GROTable, SyncDevice, VirtioNetHdr, IDEAL_BATCH_SIZE, VIRTIO_NET_HDR_GSO_TCPV4,
    VIRTIO_NET_HDR_GSO_TCPV6, VIRTIO_NET_HDR_GSO_UDP_L4, VIRTIO_NET_HDR_LEN,
};

/// Room in front of every packet for the virtio-net header.
pub const HEADROOM: usize = VIRTIO_NET_HDR_LEN;
/// The largest IP packet.
pub const MAX_PACKET: usize = 65535;
/// Packets a batch holds: the segments of the largest super-packet.
pub const SLOTS: usize = IDEAL_BATCH_SIZE;
/// `VIRTIO_NET_HDR_F_NEEDS_CSUM`: the checksum from `csum_start` on is
/// left to whoever takes the packet (`CHECKSUM_PARTIAL`).
const NEEDS_CSUM: u8 = 1;
/// `VIRTIO_NET_HDR_GSO_NONE`.
const GSO_NONE: u8 = 0;
/// `VIRTIO_NET_HDR_GSO_ECN`: a flag on the GSO type.
const GSO_ECN: u8 = 0x80;

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, what.to_string())
}

/// One packet buffer of fixed allocation whose length (headroom included)
/// is kept apart, so that shortening and lengthening it between reads
/// neither frees nor zeroes memory.
#[derive(Debug)]
pub struct PacketBuf {
    data: Vec<u8>,
    len: usize,
}

impl PacketBuf {
    /// A buffer for [`HEADROOM`] plus the largest IP packet, its length
    /// the whole allocation.
    pub fn new() -> PacketBuf {
        let data = vec![0u8; HEADROOM + MAX_PACKET];
        let len = data.len();
        PacketBuf { data, len }
    }

    /// The length back to the whole allocation, for a read.
    fn reset(&mut self) {
        self.len = self.data.len();
    }

    fn set_len(&mut self, len: usize) {
        if len > self.data.len() {
            self.data.resize(len, 0);
        }
        self.len = len;
    }
}

impl Default for PacketBuf {
    fn default() -> PacketBuf {
        PacketBuf::new()
    }
}

impl AsRef<[u8]> for PacketBuf {
    fn as_ref(&self) -> &[u8] {
        &self.data[..self.len]
    }
}

impl AsMut<[u8]> for PacketBuf {
    fn as_mut(&mut self) -> &mut [u8] {
        &mut self.data[..self.len]
    }
}

impl ExpandBuffer for PacketBuf {
    fn buf_capacity(&self) -> usize {
        self.data.len()
    }

    fn buf_resize(&mut self, new_len: usize, value: u8) {
        let old = self.len;
        self.set_len(new_len);
        if new_len > old {
            self.data[old..new_len].fill(value);
        }
    }

    fn buf_extend_from_slice(&mut self, src: &[u8]) {
        let old = self.len;
        self.set_len(old + src.len());
        self.data[old..old + src.len()].copy_from_slice(src);
    }
}

/// What one TUN read gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Read {
    /// One packet or TCP super-packet, `len` bytes: [`TunRead::packet_mut`].
    Whole(usize),
    /// A UDP super-packet split into `n` packets in [`TunRead::segments`].
    Split(usize),
}

/// A partial checksum to carry over the core's rewrite.
#[derive(Debug, Clone, Copy)]
struct Partial {
    /// Offset of the checksum field in the packet.
    at: usize,
    /// The field as read: the pseudo-header's sum.
    field: u16,
    /// The sum of the addresses as read.
    addrs: u16,
}

/// One read of the TUN, kept whole where it can be (see the module doc).
pub struct TunRead {
    /// Virtio-net header (with offloads on) and packet.
    raw: Vec<u8>,
    len: usize,
    /// Whether the device speaks the virtio-net header.
    vnet: bool,
    hdr: VirtioNetHdr,
    partial: Option<Partial>,
    /// Split reads, and the wire-sized packets of a super-packet.
    pub segments: TunBatch,
}

impl Default for TunRead {
    fn default() -> TunRead {
        TunRead::new()
    }
}

impl TunRead {
    pub fn new() -> TunRead {
        TunRead {
            raw: vec![0u8; HEADROOM + MAX_PACKET],
            len: 0,
            vnet: false,
            hdr: VirtioNetHdr::default(),
            partial: None,
            segments: TunBatch::new(),
        }
    }

    /// Reads one packet or super-packet. An `InvalidInput` error is a read
    /// whose virtio-net header or GSO geometry does not hold (the read is
    /// consumed; count it and go on).
    pub fn recv(&mut self, dev: &SyncDevice) -> io::Result<Read> {
        self.vnet = dev.tcp_gso();
        self.partial = None;
        self.segments.clear();
        if !self.vnet {
            self.len = dev.recv(&mut self.raw[HEADROOM..])?;
            self.hdr = VirtioNetHdr::default();
            return Ok(Read::Whole(self.len));
        }
        let n = dev.recv(&mut self.raw)?;
        self.accept(n)
    }

    /// Takes `raw` (a virtio-net header, then a packet or super-packet)
    /// as if read from a device with offloads on: what [`Self::recv`]
    /// does after the system call, for tests and fuzzing without a
    /// device. A `raw` longer than the read buffer is refused.
    pub fn load(&mut self, raw: &[u8]) -> io::Result<Read> {
        let n = raw.len();
        if n > self.raw.len() {
            return Err(invalid("read longer than the buffer"));
        }
        self.raw[..n].copy_from_slice(raw);
        self.accept(n)
    }

    /// Takes the first `n` bytes of the read buffer as a read from a
    /// device with the virtio-net header.
    fn accept(&mut self, n: usize) -> io::Result<Read> {
        self.vnet = true;
        self.partial = None;
        self.segments.clear();
        if n <= HEADROOM || n > self.raw.len() {
            return Err(invalid("TUN read shorter than its virtio-net header"));
        }
        self.len = n - HEADROOM;
        self.hdr = VirtioNetHdr::decode(&self.raw[..HEADROOM])?;
        match self.hdr.gso_type & !GSO_ECN {
            VIRTIO_NET_HDR_GSO_UDP_L4 => self.split_udp().map(Read::Split),
            GSO_NONE | VIRTIO_NET_HDR_GSO_TCPV4 | VIRTIO_NET_HDR_GSO_TCPV6 => {
                self.check_geometry()?;
                self.complete_single();
                self.partial = self.read_partial()?;
                Ok(Read::Whole(self.len))
            }
            _ => Err(invalid("GSO type neither TCP nor UDP L4")),
        }
    }

    /// The packet (or super-packet) of a [`Read::Whole`] read, to be
    /// rewritten in place.
    pub fn packet_mut(&mut self) -> &mut [u8] {
        &mut self.raw[HEADROOM..HEADROOM + self.len]
    }

    /// Whether the read is a super-packet (more than one segment).
    pub fn is_super(&self) -> bool {
        self.vnet && self.hdr.gso_type & !GSO_ECN != GSO_NONE
    }

    /// A TCP super-packet's geometry: a segment size, the checksum in the
    /// packet, and `hdr_len` taken from the TCP header (the kernel's may be
    /// the whole first packet on a forwarding path).
    fn check_geometry(&mut self) -> io::Result<()> {
        let h = self.hdr;
        let needs_csum = h.flags & NEEDS_CSUM != 0;
        let csum_end = usize::from(h.csum_start) + usize::from(h.csum_offset) + 2;
        if needs_csum && (h.csum_start < 20 || csum_end > self.len) {
            return Err(invalid("checksum offsets outside the packet"));
        }
        if h.gso_type & !GSO_ECN == GSO_NONE {
            return Ok(());
        }
        if !needs_csum || h.gso_size == 0 || h.csum_offset != 16 {
            return Err(invalid(
                "TCP super-packet without segment size or checksum offsets",
            ));
        }
        // The checksum starts right after the IP header, at a TCP header
        // of the family the GSO type says.
        let p = &self.raw[HEADROOM..HEADROOM + self.len];
        let (family, iph, proto) = match p[0] >> 4 {
            4 => (VIRTIO_NET_HDR_GSO_TCPV4, usize::from(p[0] & 15) * 4, p[9]),
            6 => (VIRTIO_NET_HDR_GSO_TCPV6, 40, p[6]),
            _ => return Err(invalid("super-packet neither IPv4 nor IPv6")),
        };
        if h.gso_type & !GSO_ECN != family || usize::from(h.csum_start) != iph || proto != 6 {
            return Err(invalid("super-packet headers do not match its GSO type"));
        }
        let start = usize::from(h.csum_start);
        let thlen = usize::from(self.raw[HEADROOM + start + 12] >> 4) * 4;
        if !(20..=60).contains(&thlen) || start + thlen > self.len {
            return Err(invalid("TCP header length outside the super-packet"));
        }
        self.hdr.hdr_len = u16::try_from(start + thlen).map_err(|_| invalid("header length"))?;
        Ok(())
    }

    /// A single packet (not a super-packet) with a partial checksum gets
    /// its checksum completed: the core may keep a copy of it (a packet
    /// waiting for a resolution), which must be a packet of its own.
    fn complete_single(&mut self) {
        let h = self.hdr;
        if h.gso_type & !GSO_ECN == GSO_NONE && h.flags & NEEDS_CSUM != 0 {
            let p = &mut self.raw[HEADROOM..HEADROOM + self.len];
            complete_checksum(p, h.csum_start, h.csum_offset);
            self.hdr.flags &= !NEEDS_CSUM;
        }
    }

    fn read_partial(&self) -> io::Result<Option<Partial>> {
        if self.hdr.flags & NEEDS_CSUM == 0 {
            return Ok(None);
        }
        let p = &self.raw[HEADROOM..HEADROOM + self.len];
        let at = usize::from(self.hdr.csum_start) + usize::from(self.hdr.csum_offset);
        let addrs = addr_sum(p).ok_or_else(|| invalid("partial checksum on a non-IP packet"))?;
        Ok(Some(Partial {
            at,
            field: u16::from_be_bytes([p[at], p[at + 1]]),
            addrs,
        }))
    }

    /// Sets a partial checksum for the addresses the core wrote (the
    /// core's setters treated the field as a full checksum).
    fn settle_partial(&mut self) {
        let Some(pt) = self.partial.take() else {
            return;
        };
        let p = &mut self.raw[HEADROOM..HEADROOM + self.len];
        let Some(new) = addr_sum(p) else {
            return;
        };
        // RFC 1624: the sum moves by new − old (one's complement).
        let field = fold(u32::from(pt.field) + u32::from(!pt.addrs) + u32::from(new));
        p[pt.at..pt.at + 2].copy_from_slice(&field.to_be_bytes());
    }

    fn split_udp(&mut self) -> io::Result<usize> {
        let h = &mut self.hdr;
        if h.flags & NEEDS_CSUM == 0 || h.gso_size == 0 || h.csum_offset != 6 {
            return Err(invalid(
                "UDP super-packet without segment size or checksum offsets",
            ));
        }
        h.hdr_len = h
            .csum_start
            .checked_add(8)
            .ok_or_else(|| invalid("UDP header length"))?;
        let hdr = *h;
        let v6 = self.raw.get(HEADROOM).is_some_and(|b| b >> 4 == 6);
        let input = &mut self.raw[HEADROOM..HEADROOM + self.len];
        self.segments.split_from(input, hdr, v6)
    }

    /// Writes the packet of a [`Read::Whole`] read, its first `len` bytes,
    /// back to the TUN: with its virtio-net header, so a super-packet goes
    /// back whole.
    pub fn write(&mut self, dev: &SyncDevice, len: usize) -> io::Result<usize> {
        self.settle_partial();
        let len = len.min(self.len);
        if !self.vnet {
            return dev.send(&self.raw[HEADROOM..HEADROOM + len]);
        }
        self.hdr.encode(&mut self.raw[..HEADROOM])?;
        dev.send(&self.raw[..HEADROOM + len])
    }

    /// The packet of a [`Read::Whole`] read, its first `len` bytes, as
    /// wire-sized packets with complete checksums, in [`TunRead::segments`]
    /// (for the tunnel); returns how many.
    pub fn wire_packets(&mut self, len: usize) -> io::Result<usize> {
        self.settle_partial();
        self.len = len.min(self.len);
        let hdr = self.hdr;
        let input = &mut self.raw[HEADROOM..HEADROOM + self.len];
        if self.vnet && hdr.gso_type & !GSO_ECN != GSO_NONE {
            let v6 = input.first().is_some_and(|b| b >> 4 == 6);
            return self.segments.split_from(input, hdr, v6);
        }
        if self.vnet && hdr.flags & NEEDS_CSUM != 0 {
            complete_checksum(input, hdr.csum_start, hdr.csum_offset);
        }
        Ok(self.segments.load_segments(input, 0))
    }
}

/// The one's complement sum of an IP packet's source and destination
/// addresses, folded; `None` if it is too short or not IP.
fn addr_sum(p: &[u8]) -> Option<u16> {
    let range = match p.first()? >> 4 {
        4 => 12..20,
        6 => 8..40,
        _ => return None,
    };
    let b = p.get(range)?;
    Some(fold(
        b.chunks(2)
            .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
            .sum(),
    ))
}

fn fold(mut s: u32) -> u16 {
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

/// Completes a `CHECKSUM_PARTIAL` checksum: the field holds the
/// pseudo-header's sum; the result covers everything from `start` on.
fn complete_checksum(p: &mut [u8], start: u16, offset: u16) {
    let (start, at) = (usize::from(start), usize::from(start) + usize::from(offset));
    let initial = u16::from_be_bytes([p[at], p[at + 1]]);
    p[at..at + 2].fill(0);
    let sum = !tun_rs::checksum(&p[start..], u64::from(initial));
    // UDP (its field at offset 6) sends a zero sum as 0xffff: 0 is "none".
    let sum = if offset == 6 && sum == 0 { 0xffff } else { sum };
    p[at..at + 2].copy_from_slice(&sum.to_be_bytes());
}

/// Rebuilds, in place, the TCP super-packet that `n` wire-sized segments
/// lying back to back in `buf` were split from (the datagrams of one
/// `UDP_GRO` receive, each `segment` bytes but the last, after the core
/// rewrote them): the first segment's headers, then every payload in
/// order; IP length (and IPv4 header checksum) set, the TCP checksum field
/// the pseudo-header's sum (`CHECKSUM_PARTIAL`). Returns the virtio-net
/// header to write it with and its length, or `None` (nothing moved) if
/// the segments are not one flow's consecutive, equal-sized TCP segments
/// with the same headers (the ACK, options and window included), the last
/// possibly shorter and alone carrying PSH or FIN.
pub fn coalesce_tcp(buf: &mut [u8], segment: usize) -> Option<(VirtioNetHdr, usize)> {
    if segment == 0 || buf.len() <= segment {
        return None;
    }
    let v6 = buf[0] >> 4 == 6;
    let (iph, fixed): (usize, &[std::ops::Range<usize>]) = if v6 {
        (40, &[0..4, 6..40])
    } else {
        (20, &[0..2, 6..10, 12..20])
    };
    let first = &buf[..segment];
    let thl = tcp_segment(first, v6)?;
    let hdr_len = iph + thl;
    let mss = segment - hdr_len;
    let k = buf.len().div_ceil(segment);
    let mut seq = u32::from_be_bytes(first[iph + 4..iph + 8].try_into().ok()?);
    for i in 0..k {
        let s = &buf[i * segment..buf.len().min((i + 1) * segment)];
        let last = i + 1 == k;
        if tcp_segment(s, v6)? != thl || s.len() <= hdr_len || (!last && s.len() != segment) {
            return None;
        }
        let same = |r: &std::ops::Range<usize>| s[r.clone()] == first[r.clone()];
        // Ports, ACK, header length, window; options; IP fields.
        let tcp_same = [0..4, 8..12, 14..16, 20..thl].iter().all(|r| {
            let r = iph + r.start..iph + r.end;
            same(&r)
        });
        if !fixed.iter().all(same) || !tcp_same || s[iph + 12] != first[iph + 12] {
            return None;
        }
        let flags = s[iph + 13];
        let allowed = if last { 0x10 | 0x08 | 0x01 } else { 0x10 };
        if flags & 0x10 == 0 || flags & !allowed != 0 {
            return None;
        }
        if u32::from_be_bytes(s[iph + 4..iph + 8].try_into().ok()?) != seq {
            return None;
        }
        seq = seq.wrapping_add((s.len() - hdr_len) as u32);
    }
    // Every check passed: move the payloads together.
    let last_flags = buf[(k - 1) * segment + iph + 13];
    let mut end = segment;
    for i in 1..k {
        let from = i * segment + hdr_len..buf.len().min((i + 1) * segment);
        let n = from.len();
        buf.copy_within(from, end);
        end += n;
    }
    buf[iph + 13] = last_flags;
    let total = u16::try_from(end).ok()?;
    if v6 {
        buf[4..6].copy_from_slice(&(total - 40).to_be_bytes());
    } else {
        buf[2..4].copy_from_slice(&total.to_be_bytes());
        buf[10..12].fill(0);
        let c = !fold(
            buf[..20]
                .chunks(2)
                .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
                .sum(),
        );
        buf[10..12].copy_from_slice(&c.to_be_bytes());
    }
    let l4 = u32::from(total) - iph as u32;
    let partial = fold(u32::from(addr_sum(buf)?) + 6 + l4);
    buf[iph + 16..iph + 18].copy_from_slice(&partial.to_be_bytes());
    let hdr = VirtioNetHdr {
        flags: NEEDS_CSUM,
        gso_type: if v6 {
            VIRTIO_NET_HDR_GSO_TCPV6
        } else {
            VIRTIO_NET_HDR_GSO_TCPV4
        },
        hdr_len: u16::try_from(hdr_len).ok()?,
        gso_size: u16::try_from(mss).ok()?,
        csum_start: iph as u16,
        csum_offset: 16,
    };
    Some((hdr, end))
}

/// The TCP header length of `s` if it is one whole IPv4 (no options, not
/// a fragment) or IPv6 (no extension header) TCP packet.
fn tcp_segment(s: &[u8], v6: bool) -> Option<usize> {
    let iph = if v6 { 40 } else { 20 };
    if s.len() < iph + 20 {
        return None;
    }
    let ok = if v6 {
        s[0] >> 4 == 6 && s[6] == 6 && usize::from(u16::from_be_bytes([s[4], s[5]])) + 40 == s.len()
    } else {
        s[0] == 0x45
            && s[9] == 6
            && usize::from(u16::from_be_bytes([s[2], s[3]])) == s.len()
            && u16::from_be_bytes([s[6], s[7]]) & 0x3fff == 0
    };
    let thl = usize::from(s[iph + 12] >> 4) * 4;
    (ok && thl >= 20 && iph + thl <= s.len()).then_some(thl)
}

/// A TCP packet longer than `mtu` that is no read's super-packet (a copy
/// the core kept while its service was resolved, released whole): its
/// segments of at most `mtu` bytes, each with the headers of the packet
/// (sequence numbers advanced, FIN and PSH on the last) and a complete
/// checksum, into `segs`; returns how many. `Ok(None)`: `packet` is not
/// such a packet (it fits, is not TCP, or its headers leave no room for
/// data in `mtu`); an error: its lengths do not hold.
pub fn split_tcp(packet: &mut [u8], mtu: usize, segs: &mut TunBatch) -> io::Result<Option<usize>> {
    if packet.len() <= mtu {
        return Ok(None);
    }
    let (v6, iph) = match packet[0] >> 4 {
        4 if packet.len() >= 20 && packet[9] == 6 => (false, usize::from(packet[0] & 15) * 4),
        6 if packet.len() >= 40 && packet[6] == 6 => (true, 40),
        _ => return Ok(None),
    };
    if iph < 20 || packet.len() < iph + 20 {
        return Err(invalid("TCP packet shorter than its headers"));
    }
    let thl = usize::from(packet[iph + 12] >> 4) * 4;
    if thl < 20 || iph + thl > packet.len() {
        return Err(invalid("TCP header length outside the packet"));
    }
    let Some(mss) = mtu.checked_sub(iph + thl).filter(|m| *m > 0) else {
        return Ok(None);
    };
    let short = |_| invalid("TCP packet geometry");
    let hdr = VirtioNetHdr {
        flags: NEEDS_CSUM,
        gso_type: if v6 {
            VIRTIO_NET_HDR_GSO_TCPV6
        } else {
            VIRTIO_NET_HDR_GSO_TCPV4
        },
        hdr_len: u16::try_from(iph + thl).map_err(short)?,
        gso_size: u16::try_from(mss).map_err(short)?,
        csum_start: u16::try_from(iph).map_err(short)?,
        csum_offset: 16,
    };
    segs.split_from(packet, hdr, v6).map(Some)
}

/// Writes a super-packet behind its virtio-net header.
pub fn write_super(dev: &SyncDevice, hdr: VirtioNetHdr, packet: &[u8]) -> io::Result<usize> {
    let mut h = [0u8; HEADROOM];
    hdr.encode(&mut h)?;
    dev.send_vectored(&[io::IoSlice::new(&h), io::IoSlice::new(packet)])
}

/// A batch of packets: received into slots, rewritten in place by the
/// caller, the kept ones moved to the front and written together.
pub struct TunBatch {
    slots: Vec<PacketBuf>,
    sizes: Vec<usize>,
    /// Slots filled by the last read or load.
    filled: usize,
    /// Slots at the front queued for writing.
    queued: usize,
    gro: GROTable,
}

impl Default for TunBatch {
    fn default() -> TunBatch {
        TunBatch::new()
    }
}

impl TunBatch {
    pub fn new() -> TunBatch {
        TunBatch {
            slots: (0..SLOTS).map(|_| PacketBuf::new()).collect(),
            sizes: vec![0; SLOTS],
            filled: 0,
            queued: 0,
            gro: GROTable::default(),
        }
    }

    /// Splits a super-packet (its header's geometry checked) into the
    /// slots, checksums completed; returns how many packets.
    fn split_from(&mut self, input: &mut [u8], hdr: VirtioNetHdr, v6: bool) -> io::Result<usize> {
        self.clear();
        for s in &mut self.slots {
            s.reset();
        }
        let n = tun_rs::gso_split(input, hdr, &mut self.slots, &mut self.sizes, HEADROOM, v6)?;
        self.filled = n;
        Ok(n)
    }

    /// Loads `data` cut into datagrams of `segment` bytes (the last may be
    /// shorter; `segment` 0 means one datagram) into the slots, as many as
    /// fit; returns how many.
    pub fn load_segments(&mut self, data: &[u8], segment: usize) -> usize {
        self.clear();
        let segment = if segment == 0 {
            data.len().max(1)
        } else {
            segment
        };
        for chunk in data.chunks(segment).take(SLOTS) {
            let s = &mut self.slots[self.filled];
            s.set_len(HEADROOM + chunk.len());
            s.data[HEADROOM..HEADROOM + chunk.len()].copy_from_slice(chunk);
            self.sizes[self.filled] = chunk.len();
            self.filled += 1;
        }
        self.filled
    }

    /// Packet `i` of the batch (after the headroom), to be rewritten in
    /// place, or read.
    pub fn packet_mut(&mut self, i: usize) -> &mut [u8] {
        let n = self.sizes[i];
        &mut self.slots[i].data[HEADROOM..HEADROOM + n]
    }

    /// The first `len` bytes of packet `i` are to be written to the TUN.
    /// Packets are queued in the order they are kept; `i` must not be
    /// below a packet kept before.
    pub fn keep(&mut self, i: usize, len: usize) {
        debug_assert!(i >= self.queued && i < self.filled);
        self.slots.swap(self.queued, i);
        self.sizes.swap(self.queued, i);
        let len = len.min(self.sizes[self.queued]);
        self.sizes[self.queued] = len;
        self.slots[self.queued].set_len(HEADROOM + len);
        self.queued += 1;
    }

    /// Packets queued for writing.
    pub fn queued(&self) -> usize {
        self.queued
    }

    /// Queues a copy of `packet` for writing (after what is queued),
    /// if a slot is free; returns whether it was.
    pub fn push(&mut self, packet: &[u8]) -> bool {
        if self.queued >= SLOTS || packet.len() > MAX_PACKET {
            return false;
        }
        let q = self.queued;
        let s = &mut self.slots[q];
        s.set_len(HEADROOM + packet.len());
        s.data[HEADROOM..HEADROOM + packet.len()].copy_from_slice(packet);
        self.sizes[q] = packet.len();
        self.queued += 1;
        self.filled = self.filled.max(self.queued);
        true
    }

    /// Packet `i` of the batch (after the headroom).
    pub fn packet(&self, i: usize) -> &[u8] {
        let n = self.sizes[i];
        &self.slots[i].data[HEADROOM..HEADROOM + n]
    }

    /// Packets in the batch.
    pub fn filled(&self) -> usize {
        self.filled
    }

    /// Queues every packet of the batch for writing, in order.
    pub fn keep_all(&mut self) {
        for i in self.queued..self.filled {
            let len = self.sizes[i];
            self.keep(i, len);
        }
    }

    /// Writes the queued packets to the TUN (coalesced where the device
    /// has offloads on) and empties the batch. Returns the number of
    /// packets queued; an error is the first write that failed (the others
    /// were still written).
    pub fn flush(&mut self, dev: &SyncDevice) -> io::Result<usize> {
        let n = self.queued;
        if n == 0 {
            self.clear();
            return Ok(0);
        }
        let r = dev.send_multiple(&mut self.gro, &mut self.slots[..n], HEADROOM);
        self.clear();
        r.map(|_| n)
    }

    fn clear(&mut self) {
        self.filled = 0;
        self.queued = 0;
    }
}

/// Writes one packet outside a batch (an ICMP error, a packet released
/// after a resolution): behind an empty virtio-net header if the device
/// has offloads on.
pub fn write_one(dev: &SyncDevice, packet: &[u8]) -> io::Result<usize> {
    if dev.tcp_gso() {
        let hdr = [0u8; HEADROOM];
        dev.send_vectored(&[io::IoSlice::new(&hdr), io::IoSlice::new(packet)])
    } else {
        dev.send(packet)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_packet_buffer_grows_and_shrinks_without_losing_bytes() {
        let mut b = PacketBuf::new();
        b.buf_resize(HEADROOM + 3, 0);
        b.as_mut()[HEADROOM..].copy_from_slice(&[1, 2, 3]);
        b.buf_extend_from_slice(&[4, 5]);
        assert_eq!(&b.as_ref()[HEADROOM..], &[1, 2, 3, 4, 5]);
        b.buf_resize(HEADROOM + 7, 9);
        assert_eq!(&b.as_ref()[HEADROOM..], &[1, 2, 3, 4, 5, 9, 9]);
        b.buf_resize(HEADROOM + 1, 0);
        assert_eq!(&b.as_ref()[HEADROOM..], &[1]);
        assert_eq!(b.buf_capacity(), HEADROOM + MAX_PACKET);
    }

    #[test]
    fn segments_are_loaded_at_their_boundaries() {
        let data: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
        let mut b = TunBatch::new();
        assert_eq!(b.load_segments(&data, 300), 4);
        assert_eq!(b.packet_mut(0), &data[..300]);
        assert_eq!(b.packet_mut(3), &data[900..]);
        assert_eq!(b.load_segments(&data, 0), 1);
        assert_eq!(b.packet_mut(0), &data[..]);
    }

    #[test]
    fn kept_packets_move_to_the_front_in_order_with_their_new_length() {
        let data: Vec<u8> = (0..40u8).collect();
        let mut b = TunBatch::new();
        assert_eq!(b.load_segments(&data, 10), 4);
        b.keep(1, 10);
        b.keep(3, 4);
        assert_eq!(b.queued(), 2);
        assert_eq!(b.slots[0].as_ref()[HEADROOM..], data[10..20]);
        assert_eq!(b.slots[1].as_ref()[HEADROOM..], data[30..34]);
    }

    use std::net::IpAddr;

    use hoplab_dataplane::packet::IpPacket;
    use proptest::prelude::*;

    /// The one's complement sum of `b` (16-bit big-endian words, an odd
    /// last byte padded), folded.
    fn sum(b: &[u8], initial: u32) -> u16 {
        let mut s = initial;
        for w in b.chunks(2) {
            s += u32::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)]));
            s = (s & 0xffff) + (s >> 16);
        }
        fold(s)
    }

    /// The pseudo-header's sum of IP packet `p` for its transport length.
    fn pseudo(p: &[u8]) -> u16 {
        let (addrs, proto, l4) = if p[0] >> 4 == 4 {
            let ihl = usize::from(p[0] & 15) * 4;
            (&p[12..20], p[9], p.len() - ihl)
        } else {
            (&p[8..40], p[6], p.len() - 40)
        };
        sum(addrs, u32::from(proto) + l4 as u32)
    }

    /// Whether the TCP checksum of IP packet `p` (and its IPv4 header's)
    /// verifies.
    fn checksums_ok(p: &[u8]) -> bool {
        let start = if p[0] >> 4 == 4 {
            let ihl = usize::from(p[0] & 15) * 4;
            if sum(&p[..ihl], 0) != 0xffff {
                return false;
            }
            ihl
        } else {
            40
        };
        sum(&p[start..], u32::from(pseudo(p))) == 0xffff
    }

    /// A TCP super-packet as the kernel hands it with TSO on: the virtio
    /// header in front, the checksum field holding the pseudo-header sum.
    fn super_packet(v6: bool, payload: &[u8], mss: u16) -> Vec<u8> {
        let b = if v6 {
            etherparse::PacketBuilder::ipv6([0xfd; 16], [0xfe; 16], 64)
        } else {
            etherparse::PacketBuilder::ipv4([10, 30, 3, 11], [10, 30, 1, 1], 64)
        }
        .tcp(40000, 5001, 1000, 64000)
        .ack(1);
        let mut p = Vec::new();
        b.write(&mut p, payload).unwrap();
        let start: u16 = if v6 { 40 } else { 20 };
        let at = usize::from(start) + 16;
        let partial = pseudo(&p);
        p[at..at + 2].copy_from_slice(&partial.to_be_bytes());
        let hdr = VirtioNetHdr {
            flags: NEEDS_CSUM,
            gso_type: if v6 {
                VIRTIO_NET_HDR_GSO_TCPV6
            } else {
                VIRTIO_NET_HDR_GSO_TCPV4
            },
            hdr_len: start + 20,
            gso_size: mss,
            csum_start: start,
            csum_offset: 16,
        };
        let mut raw = vec![0u8; HEADROOM];
        hdr.encode(&mut raw).unwrap();
        raw.extend_from_slice(&p);
        raw
    }

    /// A TCP super-packet the core kept while its service was resolved
    /// comes back without its virtio-net header, longer than the MTU:
    /// written whole, the kernel would drop it. Split, every segment fits
    /// the MTU with a right checksum and the payload in order.
    #[test]
    fn a_released_super_packet_is_split_into_wire_sized_segments() {
        for v6 in [false, true] {
            let payload: Vec<u8> = (0..20_000u32).map(|i| (i % 253) as u8).collect();
            let raw = super_packet(v6, &payload, 1398);
            let mut packet = raw[HEADROOM..].to_vec();
            let mut segs = TunBatch::new();
            let n = split_tcp(&mut packet, 1450, &mut segs).unwrap().unwrap();
            let iph = if v6 { 40 } else { 20 };
            assert_eq!(n, payload.len().div_ceil(1450 - iph - 20));
            let mut got = Vec::new();
            for i in 0..n {
                let s = segs.packet(i);
                assert!(s.len() <= 1450, "{}", s.len());
                assert!(checksums_ok(s), "segment {i}");
                got.extend_from_slice(&s[iph + 20..]);
            }
            assert_eq!(got, payload);
            segs.keep_all();
            assert_eq!(segs.queued(), n);
            // What fits, and what is not TCP, is left alone.
            let mut small = raw[HEADROOM..HEADROOM + 1000].to_vec();
            assert!(split_tcp(&mut small, 1450, &mut segs).unwrap().is_none());
            let mut udp = packet.clone();
            udp[if v6 { 6 } else { 9 }] = 17;
            assert!(split_tcp(&mut udp, 1450, &mut segs).unwrap().is_none());
        }
    }

    /// The gap end to end: a TCP super-packet read from the TUN whose
    /// flow the core does not know (after a restart) waits for a
    /// resolution and is released as one action longer than the MTU (the
    /// kernel would drop it written whole); split, it goes as segments
    /// within the MTU with right checksums, the payload in order.
    #[test]
    fn a_super_packet_released_by_the_core_is_split() {
        use hoplab_dataplane::netmanager::{
            Action, Config, Coords, Instance, NetManagerCore, Resolution, ServiceIp, ServiceKind,
        };
        use hoplab_dataplane::Millis;
        let mut core = NetManagerCore::new(Config::new(
            "10.10.0.1".parse().unwrap(),
            ("10.18.0.0".parse().unwrap(), 26),
        ));
        let payload: Vec<u8> = (0..20_000u32).map(|i| (i % 249) as u8).collect();
        let mut r = TunRead::new();
        let Read::Whole(n) = load(&mut r, &super_packet(false, &payload, 1398)).unwrap() else {
            panic!("a TCP super-packet is read whole");
        };
        let svc = "10.30.1.1".parse().unwrap();
        assert_eq!(
            core.on_tun_packet(Millis(0), &mut r.packet_mut()[..n]),
            [Action::Query(svc)]
        );
        let instance = Instance {
            ns_ip: "10.18.0.65".parse().unwrap(),
            ns_ip6: None,
            node: "10.10.0.2".parse().unwrap(),
            instance_number: 0,
            coords: Coords::new(0.0, 0.0),
            service_ips: vec![ServiceIp {
                kind: ServiceKind::RoundRobin,
                addr: svc,
            }],
        };
        let out = core.on_resolution(Millis(1), svc, Ok(Resolution::new(svc, vec![instance])));
        let [Action::SendTunnel { datagram, .. }] = &out[..] else {
            panic!("{out:?}");
        };
        assert!(datagram.len() > 1450, "released whole: {}", datagram.len());
        let mut released = datagram.clone();
        let mut segs = TunBatch::new();
        let k = split_tcp(&mut released, 1450, &mut segs).unwrap().unwrap();
        let mut got = Vec::new();
        for i in 0..k {
            let s = segs.packet(i);
            assert!(s.len() <= 1450 && checksums_ok(s), "segment {i}");
            assert_eq!(&s[16..20], &[10, 18, 0, 65], "translated");
            got.extend_from_slice(&s[40..]);
        }
        assert_eq!(got, payload);
    }

    proptest! {
        /// Any bytes as a released packet: split or refused, never a
        /// panic; what is split fits the MTU.
        #[test]
        fn splitting_any_released_packet_is_safe(
            mut p in proptest::collection::vec(any::<u8>(), 0..3000),
            mtu in 1usize..2000,
            proto_tcp in any::<bool>(),
        ) {
            if proto_tcp && p.len() > 40 {
                p[9] = 6;
                p[6] = 6;
            }
            let mut segs = TunBatch::new();
            if let Ok(Some(n)) = split_tcp(&mut p, mtu, &mut segs) {
                for i in 0..n {
                    prop_assert!(segs.packet(i).len() <= mtu);
                }
            }
        }
    }

    fn load(r: &mut TunRead, raw: &[u8]) -> io::Result<Read> {
        r.raw[..raw.len()].copy_from_slice(raw);
        r.accept(raw.len())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// A super-packet rewritten once by the core's setters (addresses
        /// and ports) keeps a right partial checksum, and split for the
        /// tunnel it gives wire-sized segments at the segment size, with
        /// right checksums, carrying the payload in order.
        #[test]
        fn a_rewritten_super_packet_keeps_its_checksums_and_segment_boundaries(
            v6 in any::<bool>(),
            len in 1usize..9000,
            mss in 536u16..1460,
            new_src in any::<[u8; 16]>(),
            new_dst in any::<[u8; 16]>(),
            ports in any::<(u16, u16)>(),
        ) {
            let payload: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
            let raw = super_packet(v6, &payload, mss);
            let mut r = TunRead::new();
            prop_assert_eq!(load(&mut r, &raw).unwrap(), Read::Whole(raw.len() - HEADROOM));
            let (src, dst): (IpAddr, IpAddr) = if v6 {
                (new_src.into(), new_dst.into())
            } else {
                (
                    <[u8; 4]>::try_from(&new_src[..4]).unwrap().into(),
                    <[u8; 4]>::try_from(&new_dst[..4]).unwrap().into(),
                )
            };
            {
                let mut v = IpPacket::new_checked(r.packet_mut()).unwrap();
                v.set_src(src).unwrap();
                v.set_dst(dst).unwrap();
                v.set_src_port(ports.0).unwrap();
                v.set_dst_port(ports.1).unwrap();
            }
            let n = raw.len() - HEADROOM;
            // Written back whole: the partial sum is the new pseudo-header's.
            r.settle_partial();
            let mut whole = r.raw[HEADROOM..HEADROOM + n].to_vec();
            let (start, at) = (if v6 { 40 } else { 20 }, if v6 { 56 } else { 36 });
            prop_assert_eq!(u16::from_be_bytes([whole[at], whole[at + 1]]), pseudo(&whole));
            complete_checksum(&mut whole, start, 16);
            prop_assert!(checksums_ok(&whole));
            // Split for the tunnel.
            let k = r.wire_packets(n).unwrap();
            prop_assert_eq!(k, len.div_ceil(usize::from(mss)));
            let mut carried = Vec::new();
            for i in 0..k {
                let seg = r.segments.packet_mut(i).to_vec();
                let v = IpPacket::new_checked(&mut seg.clone()).unwrap().src();
                prop_assert_eq!(v, src);
                prop_assert!(checksums_ok(&seg), "segment {} of {}", i, k);
                let data = &seg[usize::from(start) + 20..];
                prop_assert!(data.len() <= usize::from(mss));
                if i + 1 < k {
                    prop_assert_eq!(data.len(), usize::from(mss));
                }
                carried.extend_from_slice(data);
            }
            prop_assert_eq!(carried, payload);
        }

        /// Whatever a read holds (truncated headers, any geometry), taking
        /// it is an error or a packet, never a panic; and what it gives can
        /// be split.
        #[test]
        fn any_read_is_taken_or_refused(
            hdr in any::<[u8; 10]>(),
            body in proptest::collection::vec(any::<u8>(), 0..200),
            cut in 0usize..220,
        ) {
            let mut raw = hdr.to_vec();
            raw.extend_from_slice(&body);
            raw.truncate(cut.min(raw.len()));
            let mut r = TunRead::new();
            match load(&mut r, &raw) {
                Ok(Read::Whole(len)) => {
                    prop_assert_eq!(len, raw.len() - HEADROOM);
                    let _ = r.wire_packets(len);
                }
                Ok(Read::Split(n)) => prop_assert!(n <= SLOTS),
                Err(e) => prop_assert!(e.raw_os_error().is_none()),
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Reads with virtio-net headers of every kind (TCP and UDP
        /// segmentation, partial checksums, any geometry) in front of a
        /// real packet cut anywhere: taken or refused, never a panic; what
        /// is taken can be rewritten, settled, written back or split.
        #[test]
        fn any_virtio_geometry_over_a_cut_packet_is_taken_or_refused(
            v6 in any::<bool>(),
            len in 1usize..4000,
            flags in 0u8..4,
            gso_type in prop::sample::select(vec![0u8, 1, 3, 4, 5, 0x81, 0x84, 7]),
            gso_size in prop::sample::select(vec![0u16, 1, 7, 536, 1400, 65535]),
            csum_start in 0u16..80,
            csum_offset in prop::sample::select(vec![0u16, 6, 16, 200]),
            cut in 0usize..5000,
        ) {
            let payload = vec![0x5au8; len];
            let mut raw = super_packet(v6, &payload, 1000);
            let hdr = VirtioNetHdr { flags, gso_type, hdr_len: 0, gso_size, csum_start, csum_offset };
            hdr.encode(&mut raw[..HEADROOM]).unwrap();
            raw.truncate(cut.max(1).min(raw.len()));
            let mut r = TunRead::new();
            match load(&mut r, &raw) {
                Ok(Read::Whole(n)) => {
                    if let Ok(mut v) = IpPacket::new_checked(r.packet_mut()) {
                        let _ = v.set_src_port(1);
                    }
                    let _ = r.wire_packets(n);
                }
                Ok(Read::Split(n)) => prop_assert!(n <= SLOTS),
                Err(e) => prop_assert!(e.raw_os_error().is_none()),
            }
        }

        /// Any bytes and segment size: coalesced or left alone, never a
        /// panic; left alone means untouched.
        #[test]
        fn coalescing_any_bytes_is_safe(
            buf in proptest::collection::vec(any::<u8>(), 0..3000),
            segment in 0usize..1600,
        ) {
            let mut b = buf.clone();
            if coalesce_tcp(&mut b, segment).is_none() {
                prop_assert_eq!(b, buf);
            }
        }
    }

    #[test]
    fn a_read_shorter_than_the_virtio_header_is_refused() {
        let mut r = TunRead::new();
        for n in 0..=HEADROOM {
            assert!(load(&mut r, &vec![0u8; n]).is_err());
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// The segments a super-packet was split into, back to back as one
        /// UDP GRO receive gives them, rebuild the super-packet: the same
        /// headers and payload, a partial checksum that completes right,
        /// and the same segments when split again.
        #[test]
        fn split_segments_coalesce_back_into_their_super_packet(
            v6 in any::<bool>(),
            len in 1usize..9000,
            mss in 536u16..1460,
        ) {
            let payload: Vec<u8> = (0..len).map(|i| (i * 13 + 1) as u8).collect();
            let raw = super_packet(v6, &payload, mss);
            let mut r = TunRead::new();
            load(&mut r, &raw).unwrap();
            let n = raw.len() - HEADROOM;
            let k = r.wire_packets(n).unwrap();
            let mut buf = Vec::new();
            for i in 0..k {
                buf.extend_from_slice(r.segments.packet(i));
            }
            let segs = buf.clone();
            let seg_len = r.segments.packet(0).len();
            let got = coalesce_tcp(&mut buf, seg_len);
            if k == 1 {
                prop_assert!(got.is_none());
                prop_assert_eq!(buf, segs);
                return Ok(());
            }
            let (hdr, total) = got.unwrap();
            prop_assert_eq!(total, n);
            let start = if v6 { 40 } else { 20 };
            prop_assert_eq!(&buf[start + 20..total], &payload[..]);
            prop_assert_eq!(hdr.gso_size, mss);
            let mut whole = buf[..total].to_vec();
            complete_checksum(&mut whole, start as u16, 16);
            prop_assert!(checksums_ok(&whole));
            // Split again: the same segments.
            let mut again = TunBatch::new();
            let m = again.split_from(&mut buf[..total], hdr, v6).unwrap();
            prop_assert_eq!(m, k);
            let mut resplit = Vec::new();
            for i in 0..m {
                resplit.extend_from_slice(again.packet(i));
            }
            prop_assert_eq!(resplit, segs);
        }
    }

    #[test]
    fn segments_of_another_flow_or_out_of_order_are_left_alone() {
        let payload: Vec<u8> = (0..3000).map(|i| i as u8).collect();
        let raw = super_packet(false, &payload, 1000);
        let mut r = TunRead::new();
        load(&mut r, &raw).unwrap();
        let k = r.wire_packets(raw.len() - HEADROOM).unwrap();
        assert_eq!(k, 3);
        let seg: Vec<Vec<u8>> = (0..k).map(|i| r.segments.packet(i).to_vec()).collect();
        let l = seg[0].len();
        // Out of order.
        let mut buf = [seg[1].clone(), seg[0].clone(), seg[2].clone()].concat();
        let before = buf.clone();
        assert!(coalesce_tcp(&mut buf, l).is_none());
        assert_eq!(buf, before);
        // Another port in the middle one.
        let mut other = seg[1].clone();
        other[20 + 1] ^= 1;
        let mut buf = [seg[0].clone(), other, seg[2].clone()].concat();
        assert!(coalesce_tcp(&mut buf, l).is_none());
        // PSH on a middle one.
        let mut psh = seg[1].clone();
        psh[20 + 13] |= 0x08;
        let mut buf = [seg[0].clone(), psh, seg[2].clone()].concat();
        assert!(coalesce_tcp(&mut buf, l).is_none());
    }
}
