//! Batched TUN I/O: one read of the TUN gives a batch of packets (with
//! offloads on, a TCP or UDP super-packet of up to 64 KiB is split into
//! its wire-sized segments, checksums completed); the packets a core
//! forwards back to the TUN are written together, and with offloads on,
//! segments of one flow that follow each other are coalesced again into a
//! super-packet (GRO), written with one system call.
//!
//! A batch is what one read (or one received datagram) gave: the shell
//! flushes it before the next read, so it only ever writes a super-packet
//! made of segments that arrived together, as one super-packet or one
//! GRO datagram. Wire-sized packets in give wire-sized packets out, which
//! keeps the harness's captures wire-sized (its veths carry one segment
//! per packet).
//!
//! It knows neither core: the caller rewrites each packet in place and
//! says which ones to write. The splitting and coalescing are tun-rs's
//! (a port of wireguard-go's TUN offload code).

use std::io;

use tun_rs::{ExpandBuffer, GROTable, SyncDevice, IDEAL_BATCH_SIZE, VIRTIO_NET_HDR_LEN};

/// Room in front of every packet for the virtio-net header.
pub const HEADROOM: usize = VIRTIO_NET_HDR_LEN;
/// The largest IP packet.
pub const MAX_PACKET: usize = 65535;
/// Packets a batch holds: the segments of the largest super-packet.
pub const SLOTS: usize = IDEAL_BATCH_SIZE;

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

/// A batch of packets: received into slots, rewritten in place by the
/// caller, the kept ones moved to the front and written together.
pub struct TunBatch {
    /// One read of the TUN: virtio-net header and super-packet.
    raw: Vec<u8>,
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
            raw: vec![0u8; HEADROOM + MAX_PACKET],
            slots: (0..SLOTS).map(|_| PacketBuf::new()).collect(),
            sizes: vec![0; SLOTS],
            filled: 0,
            queued: 0,
            gro: GROTable::default(),
        }
    }

    /// Reads one packet or super-packet from the TUN into the slots
    /// (dropping what was queued and not flushed); returns how many
    /// packets it gave. A read the device could not parse (a bad virtio
    /// header or GSO geometry) is an `InvalidInput`/`Other` error that
    /// consumed the read: the caller counts it and goes on.
    pub fn recv(&mut self, dev: &SyncDevice) -> io::Result<usize> {
        self.clear();
        for s in &mut self.slots {
            s.reset();
        }
        let n = dev.recv_multiple(&mut self.raw, &mut self.slots, &mut self.sizes, HEADROOM)?;
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
    /// place.
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
}
