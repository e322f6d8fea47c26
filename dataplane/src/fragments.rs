//! IP fragments: reassembly into whole datagrams, and fragmentation of a
//! whole datagram again. Both cores use it: the net manager's
//! ([`crate::netmanager`]) and the gateway's ([`crate::gateway`]).
//!
//! Only a datagram's first fragment carries its ports, so a core cannot
//! match a later fragment to a flow by itself. It reassembles:
//! [`FragmentTable::insert`] keeps the fragments of each datagram (keyed
//! by where they came from — the TUN or a tunnel peer — and by source,
//! destination, protocol and identification, as RFC 791 and RFC 8200 key
//! them) until the datagram is whole, then hands it back as one packet,
//! which the core translates like any other. The core then cuts the
//! translated datagram again with [`fragment`], to the size of the largest
//! fragment it came in (never more than its MTU), keeping the IPv4
//! identification or the IPv6 fragment identification: what leaves is
//! fragmented as it arrived, so it fits wherever the original fragments
//! fit, and the receiving kernel reassembles it.
//!
//! Bounded in memory and time: at most [`FragmentConfig::max_datagrams`]
//! datagrams in reassembly and [`FragmentConfig::max_bytes`] bytes of
//! buffers between them (a fragment beyond either is refused, not
//! admitted at the cost of another datagram); a datagram not whole
//! [`FragmentConfig::timeout`] after its first fragment is discarded at
//! the core's `expire`, which [`FragmentTable::next_deadline`] schedules.
//!
//! A datagram discarded (timed out, or with an overlapping fragment) is
//! handed back as one [`Discarded`] quote per fragment held; a datagram
//! made whole keeps what names its fragments ([`Reassembled::pieces`]),
//! should the core drop it whole. A fragment's quote is its IP header
//! (the first-arrived fragment's fixed header, with this fragment's
//! offset, more-fragments flag and length; IPv6: a fragment header after
//! the fixed header) and its first 8 bytes of data, like an ICMP error's
//! quote: enough to name each fragment as it
//! arrived (addresses, identification or flow label, protocol, and the
//! first fragment's ports) without keeping its header: the table keeps one
//! fixed header per datagram, and builds quotes only when it discards.
//!
//! Refused, per RFC 5722 and as Linux does: a fragment overlapping one
//! already held (the whole datagram is discarded: overlaps are how
//! fragments are used to slip a different header past a filter), and a
//! fragment that contradicts the datagram's end. An exact duplicate (same
//! offset and length) is dropped alone. Malformed fragments (a non-last
//! fragment whose length is not a multiple of 8, an empty one, one ending
//! past 65535 bytes) are refused.
//!
//! It knows IP headers only: nothing of flows, services, exposures, peers'
//! trust or the translation; the core decides what happens to a whole
//! datagram.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::checksum;
use crate::time::Millis;

/// The largest IP datagram (IPv4 total length; IPv6 payload length).
const MAX_DATAGRAM: usize = 65535;
/// IPv6 extension headers walked before the fragment header, at most.
const MAX_EXTENSIONS: usize = 8;

/// The bounds of the fragment table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FragmentConfig {
    /// Datagrams in reassembly at once.
    pub max_datagrams: usize,
    /// Bytes of reassembly buffers at once (each datagram's buffer is as
    /// long as the furthest fragment received, plus its header).
    pub max_bytes: usize,
    /// How long after its first fragment a datagram may take to become
    /// whole.
    pub timeout: Millis,
}

impl Default for FragmentConfig {
    /// 256 datagrams, 4 MiB, 30 s (Linux's `ipfrag_time`).
    fn default() -> FragmentConfig {
        FragmentConfig {
            max_datagrams: 256,
            max_bytes: 4 << 20,
            timeout: Millis(30_000),
        }
    }
}

/// Why a fragment was not kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Not a valid fragment (lengths, offsets, header).
    Malformed,
    /// The table holds as many datagrams or bytes as it may.
    OverCap,
    /// It overlaps a fragment held, or contradicts the datagram's end: the
    /// datagram is discarded with it.
    Overlap,
    /// The same offset and length as a fragment held.
    Duplicate,
}

/// A fragment refused, and the fragments held for the same datagram that
/// were discarded with it (only for [`Refusal::Overlap`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub why: Refusal,
    pub discarded: Discarded,
}

/// The fragments of a datagram the table discarded: where they came from
/// (`None`: the TUN; a tunnel peer) and one quote per fragment held, in
/// the order of their offsets (see the module doc). Empty: none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Discarded {
    pub from: Option<IpAddr>,
    pub quotes: Vec<Vec<u8>>,
}

impl Discarded {
    /// How many fragments were discarded.
    pub fn len(&self) -> usize {
        self.quotes.len()
    }
    pub fn is_empty(&self) -> bool {
        self.quotes.is_empty()
    }
}

/// How a datagram arrived fragmented, to cut it the same way again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    /// Bytes of data of its largest fragment.
    pub payload: usize,
    /// The IPv6 fragment identification (IPv4 keeps its own in the
    /// header).
    pub ident: u32,
}

/// A datagram made whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reassembled {
    /// A whole IP packet: the first fragment's header (IPv6: without the
    /// fragment header), lengths and IPv4 header checksum set.
    pub packet: Vec<u8>,
    pub shape: Shape,
    /// How many fragments it was made of.
    pub fragments: u32,
    /// They, but the one that made it whole.
    pub pieces: Pieces,
}

/// Identifies a datagram: where its fragments came from (`None`: the TUN;
/// a tunnel peer's underlay address), addresses, protocol (IPv4 only) and
/// identification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct DatagramKey {
    from: Option<IpAddr>,
    src: IpAddr,
    dst: IpAddr,
    proto: u8,
    ident: u32,
}

/// One fragment, parsed.
struct Fragment<'a> {
    v6: bool,
    src: IpAddr,
    dst: IpAddr,
    /// IPv4: the protocol; IPv6: 0 (not part of the key).
    proto: u8,
    ident: u32,
    offset: usize,
    more: bool,
    /// IPv4: the header; IPv6: everything before the fragment header.
    header: &'a [u8],
    /// IPv6: where in `header` the next-header byte saying "fragment" is.
    nh_at: usize,
    /// IPv6: the fragment header's next header.
    next: u8,
    data: &'a [u8],
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// Whether `p` is an IPv4 fragment (MF or an offset) or an IPv6 packet
/// with a fragment header in its extension chain.
pub fn is_fragment(p: &[u8]) -> bool {
    parse(p).is_some()
}

fn parse(p: &[u8]) -> Option<Fragment<'_>> {
    match p.first()? >> 4 {
        4 => parse_v4(p),
        6 => parse_v6(p),
        _ => None,
    }
}

fn parse_v4(p: &[u8]) -> Option<Fragment<'_>> {
    if p.len() < 20 {
        return None;
    }
    let ihl = usize::from(p[0] & 0x0f) * 4;
    let total = usize::from(be16(p, 2));
    if ihl < 20 || total < ihl || total > p.len() {
        return None;
    }
    if checksum::fold(checksum::sum_bytes(0, &p[..ihl])) != 0xffff {
        return None;
    }
    let frag = be16(p, 6);
    let (more, offset) = (frag & 0x2000 != 0, usize::from(frag & 0x1fff) * 8);
    if !more && offset == 0 {
        return None;
    }
    let src = Ipv4Addr::new(p[12], p[13], p[14], p[15]);
    let dst = Ipv4Addr::new(p[16], p[17], p[18], p[19]);
    Some(Fragment {
        v6: false,
        src: src.into(),
        dst: dst.into(),
        proto: p[9],
        ident: u32::from(be16(p, 4)),
        offset,
        more,
        header: &p[..ihl],
        nh_at: 0,
        next: p[9],
        data: &p[ihl..total],
    })
}

fn parse_v6(p: &[u8]) -> Option<Fragment<'_>> {
    if p.len() < 40 {
        return None;
    }
    let total = 40 + usize::from(be16(p, 4));
    if total > p.len() {
        return None;
    }
    let (mut nh, mut nh_at, mut off) = (p[6], 6, 40);
    for _ in 0..MAX_EXTENSIONS {
        match nh {
            // Hop-by-hop, routing, destination options: before the
            // fragment header.
            0 | 43 | 60 => {
                if off + 8 > total {
                    return None;
                }
                let len = (usize::from(p[off + 1]) + 1) * 8;
                if off + len > total {
                    return None;
                }
                (nh, nh_at, off) = (p[off], off, off + len);
            }
            44 => {
                if off + 8 > total {
                    return None;
                }
                let word = be16(p, off + 2);
                let mut a = [0u8; 16];
                a.copy_from_slice(&p[8..24]);
                let src = Ipv6Addr::from(a);
                a.copy_from_slice(&p[24..40]);
                let dst = Ipv6Addr::from(a);
                return Some(Fragment {
                    v6: true,
                    src: src.into(),
                    dst: dst.into(),
                    proto: 0,
                    ident: u32::from_be_bytes([p[off + 4], p[off + 5], p[off + 6], p[off + 7]]),
                    offset: usize::from(word & 0xfff8),
                    more: word & 1 != 0,
                    header: &p[..off],
                    nh_at,
                    next: p[off],
                    data: &p[off + 8..total],
                });
            }
            _ => return None,
        }
    }
    None
}

impl Fragment<'_> {
    /// The lengths hold: data present, a non-last fragment a multiple of
    /// 8 long, the datagram within 65535 bytes.
    fn valid(&self) -> bool {
        let end = self.offset + self.data.len();
        let limit = if self.v6 {
            MAX_DATAGRAM - (self.header.len() - 40)
        } else {
            MAX_DATAGRAM - self.header.len()
        };
        !self.data.is_empty() && (!self.more || self.data.len().is_multiple_of(8)) && end <= limit
    }
}

/// What the quote of each fragment of a datagram is built from: the
/// fixed header of its first-arrived fragment, (IPv6) that fragment's
/// next header, and the datagram's identification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Head {
    fixed: [u8; 40],
    frag_next: u8,
    v6: bool,
    ident: u32,
}

impl Head {
    /// The quote of the fragment of data bytes `s..e` (more after it if
    /// `more`), `data` the datagram's data (as far as held): the fixed
    /// header with the fragment's offset, flag and length, and its first
    /// 8 bytes of data.
    fn quote(&self, s: usize, e: usize, more: bool, data: &[u8]) -> Vec<u8> {
        let data = data.get(s..e.min(s + 8)).unwrap_or(&[]);
        let mut q = Vec::with_capacity(48 + data.len());
        if self.v6 {
            q.extend_from_slice(&self.fixed);
            q[6] = 44;
            let plen = u16::try_from(8 + e - s).unwrap_or(u16::MAX);
            q[4..6].copy_from_slice(&plen.to_be_bytes());
            let word = (u16::try_from(s).unwrap_or(0xfff8) & 0xfff8) | u16::from(more);
            q.extend_from_slice(&[self.frag_next, 0]);
            q.extend_from_slice(&word.to_be_bytes());
            q.extend_from_slice(&self.ident.to_be_bytes());
        } else {
            q.extend_from_slice(&self.fixed[..20]);
            q[0] = 0x45;
            let total = u16::try_from(20 + e - s).unwrap_or(u16::MAX);
            q[2..4].copy_from_slice(&total.to_be_bytes());
            let word = (u16::try_from(s / 8).unwrap_or(0x1fff) & 0x1fff)
                | if more { 0x2000 } else { 0 }
                | (be16(&self.fixed, 6) & 0x8000);
            q[6..8].copy_from_slice(&word.to_be_bytes());
            set_v4_checksum(&mut q);
        }
        q.extend_from_slice(data);
        q
    }
}

/// The fragments a datagram was made whole from, to name them if the
/// whole datagram is dropped: [`Pieces::quotes`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pieces {
    head: Head,
    /// Each fragment's data bytes, by offset.
    have: Vec<(usize, usize)>,
    /// The fragment that made the datagram whole (the one handed in).
    last: (usize, usize),
}

impl Pieces {
    /// One quote per fragment of the datagram `packet` (as it was made
    /// whole, its data unchanged) but the one that made it whole, in the
    /// order of their offsets (see the module doc).
    pub fn quotes(&self, packet: &[u8]) -> Vec<Vec<u8>> {
        let end = self.have.last().map_or(0, |&(_, e)| e);
        let data = packet
            .get(packet.len().saturating_sub(end)..)
            .unwrap_or(&[]);
        self.have
            .iter()
            .filter(|&&r| r != self.last)
            .map(|&(s, e)| self.head.quote(s, e, e != end, data))
            .collect()
    }
}

/// A datagram in reassembly.
#[derive(Debug)]
struct Pending {
    /// The first fragment's header (IPv6: with `nh_at` and `next`), once
    /// it came.
    header: Option<Vec<u8>>,
    nh_at: usize,
    next: u8,
    data: Vec<u8>,
    /// Byte ranges held, sorted, disjoint.
    have: Vec<(usize, usize)>,
    /// The datagram's data length, once the last fragment came.
    end: Option<usize>,
    held: u32,
    max_payload: usize,
    /// Bytes accounted to this datagram.
    bytes: usize,
    /// When it times out, and its place in the table's order.
    due: (Millis, u64),
    /// The fixed header (IPv4: 20 bytes; IPv6: 40) of the first fragment
    /// that arrived, and (IPv6) its fragment header's next header: what
    /// [`Pending::quotes`] rebuild each fragment's header from.
    fixed: [u8; 40],
    frag_next: u8,
}

impl Pending {
    /// One quote per fragment held (see the module doc).
    fn quotes(&self, v6: bool, ident: u32) -> Vec<Vec<u8>> {
        let head = Head {
            fixed: self.fixed,
            frag_next: self.frag_next,
            v6,
            ident,
        };
        self.have
            .iter()
            .map(|&(s, e)| head.quote(s, e, self.end != Some(e), &self.data))
            .collect()
    }

    fn complete(&self) -> bool {
        match (self.header.as_ref(), self.end) {
            (Some(_), Some(end)) => {
                let mut at = 0;
                for &(s, e) in &self.have {
                    if s != at {
                        return false;
                    }
                    at = e;
                }
                at == end
            }
            _ => false,
        }
    }
}

/// The datagrams in reassembly (see the module doc).
#[derive(Debug)]
pub struct FragmentTable {
    cfg: FragmentConfig,
    pending: HashMap<DatagramKey, Pending>,
    /// Datagrams by deadline (and arrival, to keep keys unique).
    order: BTreeMap<(Millis, u64), DatagramKey>,
    seq: u64,
    bytes: usize,
}

impl FragmentTable {
    pub fn new(cfg: FragmentConfig) -> FragmentTable {
        FragmentTable {
            cfg,
            pending: HashMap::new(),
            order: BTreeMap::new(),
            seq: 0,
            bytes: 0,
        }
    }

    /// Datagrams in reassembly.
    pub fn len(&self) -> usize {
        self.pending.len()
    }
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }
    /// Bytes of reassembly buffers held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// When the first datagram in reassembly times out.
    pub fn next_deadline(&self) -> Option<Millis> {
        self.order.keys().next().map(|&(t, _)| t)
    }

    /// Discards the datagrams whose time is up; returns the fragments
    /// they held, a [`Discarded`] per datagram in the order of their
    /// deadlines.
    pub fn expire(&mut self, now: Millis) -> Vec<Discarded> {
        let mut gone = Vec::new();
        while let Some(entry) = self.order.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let key = entry.remove();
            if let Some(p) = self.pending.remove(&key) {
                self.bytes -= p.bytes;
                gone.push(discarded(&key, &p));
            }
        }
        gone
    }

    fn discard(&mut self, key: &DatagramKey) -> Discarded {
        match self.pending.remove(key) {
            Some(p) => {
                self.bytes -= p.bytes;
                self.order.remove(&p.due);
                discarded(key, &p)
            }
            None => Discarded::default(),
        }
    }

    /// Takes one fragment (`packet`, an IP packet that [`is_fragment`]),
    /// received from the TUN (`from` = `None`) or from a tunnel peer.
    /// Returns the whole datagram when this fragment completed it,
    /// `Ok(None)` when it is held, or why it was refused.
    pub fn insert(
        &mut self,
        now: Millis,
        from: Option<IpAddr>,
        packet: &[u8],
    ) -> Result<Option<Reassembled>, Refused> {
        let refuse = |why| Refused {
            why,
            discarded: Discarded::default(),
        };
        let f = parse(packet).ok_or(refuse(Refusal::Malformed))?;
        if !f.valid() {
            return Err(refuse(Refusal::Malformed));
        }
        let key = DatagramKey {
            from,
            src: f.src,
            dst: f.dst,
            proto: f.proto,
            ident: f.ident,
        };
        let (start, end) = (f.offset, f.offset + f.data.len());
        if let Some(p) = self.pending.get(&key) {
            if let Some(why) = conflict(p, &f, start, end) {
                let discarded = match why {
                    Refusal::Overlap => self.discard(&key),
                    _ => Discarded::default(),
                };
                return Err(Refused { why, discarded });
            }
        } else if self.pending.len() >= self.cfg.max_datagrams {
            return Err(refuse(Refusal::OverCap));
        }
        let (have_data, have_bytes) = self
            .pending
            .get(&key)
            .map_or((0, 0), |p| (p.data.len(), p.bytes));
        let header = if start == 0 { f.header.len() } else { 0 };
        let grow = end.saturating_sub(have_data) + header;
        if self.bytes + grow > self.cfg.max_bytes {
            return Err(refuse(Refusal::OverCap));
        }
        let p = match self.pending.entry(key) {
            std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => {
                let due = (now.saturating_add(self.cfg.timeout), self.seq);
                self.seq += 1;
                self.order.insert(due, key);
                let fixed_len = if f.v6 { 40 } else { 20 };
                let mut fixed = [0u8; 40];
                fixed[..fixed_len].copy_from_slice(&packet[..fixed_len]);
                v.insert(Pending {
                    fixed,
                    frag_next: f.next,
                    header: None,
                    nh_at: 0,
                    next: 0,
                    data: Vec::new(),
                    have: Vec::new(),
                    end: None,
                    held: 0,
                    max_payload: 0,
                    bytes: 0,
                    due,
                })
            }
        };
        debug_assert_eq!(have_bytes, p.bytes);
        if p.data.len() < end {
            p.data.resize(end, 0);
        }
        p.data[start..end].copy_from_slice(f.data);
        let at = p.have.partition_point(|&(s, _)| s < start);
        p.have.insert(at, (start, end));
        if start == 0 {
            p.header = Some(f.header.to_vec());
            (p.nh_at, p.next) = (f.nh_at, f.next);
        }
        if !f.more {
            p.end = Some(end);
        }
        p.held += 1;
        p.max_payload = p.max_payload.max(f.data.len());
        p.bytes += grow;
        self.bytes += grow;
        if !p.complete() {
            return Ok(None);
        }
        let p = self.pending.remove(&key).expect("the entry just updated");
        self.order.remove(&p.due);
        self.bytes -= p.bytes;
        Ok(build(p, f.v6, f.ident, (start, end)))
    }
}

/// The fragments `p` (the datagram `key`) held, as quotes.
fn discarded(key: &DatagramKey, p: &Pending) -> Discarded {
    Discarded {
        from: key.from,
        quotes: p.quotes(key.src.is_ipv6(), key.ident),
    }
}

/// Whether fragment `f` at `start..end` may join `p`: `None`, or why not.
fn conflict(p: &Pending, f: &Fragment<'_>, start: usize, end: usize) -> Option<Refusal> {
    if p.have.contains(&(start, end)) {
        return Some(Refusal::Duplicate);
    }
    if p.have.iter().any(|&(s, e)| s < end && start < e) {
        return Some(Refusal::Overlap);
    }
    // The end: a last fragment must agree with the one known and hold
    // everything received; a non-last one must end before it.
    let contradicts = match (f.more, p.end) {
        (false, Some(known)) => known != end,
        (false, None) => p.have.last().is_some_and(|&(_, e)| e > end),
        (true, Some(known)) => end >= known,
        (true, None) => false,
    };
    contradicts.then_some(Refusal::Overlap)
}

/// The whole datagram of a complete `p`; `None` if it would be over 65535
/// bytes (already excluded by [`Fragment::valid`]).
fn build(p: Pending, v6: bool, ident: u32, last: (usize, usize)) -> Option<Reassembled> {
    let pieces = Pieces {
        head: Head {
            fixed: p.fixed,
            frag_next: p.frag_next,
            v6,
            ident,
        },
        have: p.have,
        last,
    };
    let mut packet = p.header?;
    let hlen = packet.len();
    if v6 {
        let plen = u16::try_from(hlen - 40 + p.data.len()).ok()?;
        packet[4..6].copy_from_slice(&plen.to_be_bytes());
        packet[p.nh_at] = p.next;
    } else {
        let total = u16::try_from(hlen + p.data.len()).ok()?;
        packet[2..4].copy_from_slice(&total.to_be_bytes());
        // Offset 0, MF clear; DF and the reserved bit as they were.
        packet[6] &= 0x40 | 0x80;
        packet[7] = 0;
        set_v4_checksum(&mut packet);
    }
    packet.extend_from_slice(&p.data);
    Some(Reassembled {
        packet,
        shape: Shape {
            payload: p.max_payload,
            ident,
        },
        fragments: p.held,
        pieces,
    })
}

fn set_v4_checksum(h: &mut [u8]) {
    let ihl = usize::from(h[0] & 0x0f) * 4;
    h[10..12].fill(0);
    let c = checksum::checksum(0, &h[..ihl]);
    h[10..12].copy_from_slice(&c.to_be_bytes());
}

/// The IPv4 options a later fragment carries: those with the "copied"
/// flag, padded to a multiple of 4 bytes. Malformed options give none.
fn copied_options(opts: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < opts.len() {
        match opts[i] {
            0 => break,
            1 => i += 1,
            ty => {
                let Some(&len) = opts.get(i + 1) else {
                    return Vec::new();
                };
                let len = usize::from(len);
                if len < 2 || i + len > opts.len() {
                    return Vec::new();
                }
                if ty & 0x80 != 0 {
                    out.extend_from_slice(&opts[i..i + len]);
                }
                i += len;
            }
        }
    }
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
    out
}

/// The IPv6 part that every fragment repeats (RFC 8200 4.5: the IPv6
/// header and a hop-by-hop header) and where its last next-header byte
/// is.
fn v6_unfragmentable(p: &[u8]) -> Option<(usize, usize)> {
    let (mut nh_at, mut off) = (6, 40);
    if p[6] == 0 {
        let len = (usize::from(*p.get(41)?) + 1) * 8;
        if off + len > p.len() {
            return None;
        }
        (nh_at, off) = (40, 40 + len);
    }
    Some((off, nh_at))
}

/// Data bytes per fragment for a packet (header `header` bytes) to fit
/// in `mtu`: a multiple of 8.
pub fn payload_for_mtu(packet: &[u8], mtu: usize) -> Option<usize> {
    let header = match packet.first()? >> 4 {
        4 => usize::from(packet[0] & 0x0f) * 4,
        6 => v6_unfragmentable(packet)?.0 + 8,
        _ => return None,
    };
    let room = mtu.checked_sub(header)? & !7;
    (room >= 8).then_some(room)
}

/// Cuts `packet`, a whole IPv4 or IPv6 packet whose data is longer than
/// `payload` bytes, into fragments of at most `payload` data bytes each
/// (rounded down to a multiple of 8, at least 8): IPv4 keeps its identification, and later fragments carry only the
/// options marked copied; IPv6 gets a fragment header with `ident` after
/// its unfragmentable part. `None` when it fits in one piece or cannot be
/// cut (not IP, an IPv4 header asking not to be fragmented or already a
/// fragment, lengths that do not hold).
pub fn fragment(packet: &[u8], payload: usize, ident: u32) -> Option<Vec<Vec<u8>>> {
    match packet.first()? >> 4 {
        4 => fragment_v4(packet, payload),
        6 => fragment_v6(packet, payload, ident),
        _ => None,
    }
}

fn fragment_v4(p: &[u8], payload: usize) -> Option<Vec<Vec<u8>>> {
    if p.len() < 20 {
        return None;
    }
    let ihl = usize::from(p[0] & 0x0f) * 4;
    let total = usize::from(be16(p, 2));
    // DF, MF or an offset: not to be cut here.
    if ihl < 20 || total < ihl || total > p.len() || be16(p, 6) & 0x7fff != 0 {
        return None;
    }
    let data = &p[ihl..total];
    if data.len() <= payload {
        return None;
    }
    let payload = (payload & !7).max(8);
    let later = copied_options(&p[20..ihl]);
    let mut out = Vec::with_capacity(data.len().div_ceil(payload));
    for (i, chunk) in data.chunks(payload).enumerate() {
        let offset = i * payload;
        let more = offset + chunk.len() < data.len();
        let mut f = Vec::with_capacity(ihl + chunk.len());
        if i == 0 {
            f.extend_from_slice(&p[..ihl]);
        } else {
            f.extend_from_slice(&p[..20]);
            f.extend_from_slice(&later);
            f[0] = 0x40 | ((20 + later.len()) / 4) as u8;
        }
        let len = u16::try_from(f.len() + chunk.len()).ok()?;
        f[2..4].copy_from_slice(&len.to_be_bytes());
        let word = u16::try_from(offset / 8).ok()? | if more { 0x2000 } else { 0 };
        f[6..8].copy_from_slice(&(word | (be16(p, 6) & 0x8000)).to_be_bytes());
        set_v4_checksum(&mut f);
        f.extend_from_slice(chunk);
        out.push(f);
    }
    Some(out)
}

fn fragment_v6(p: &[u8], payload: usize, ident: u32) -> Option<Vec<Vec<u8>>> {
    if p.len() < 40 {
        return None;
    }
    let total = 40 + usize::from(be16(p, 4));
    if total > p.len() {
        return None;
    }
    let p = &p[..total];
    let (unfrag, nh_at) = v6_unfragmentable(p)?;
    let data = &p[unfrag..];
    if data.len() <= payload {
        return None;
    }
    let payload = (payload & !7).max(8);
    let next = p[nh_at];
    let mut out = Vec::with_capacity(data.len().div_ceil(payload));
    for (i, chunk) in data.chunks(payload).enumerate() {
        let offset = i * payload;
        let more = offset + chunk.len() < data.len();
        let mut f = Vec::with_capacity(unfrag + 8 + chunk.len());
        f.extend_from_slice(&p[..unfrag]);
        f[nh_at] = 44;
        let word = u16::try_from(offset).ok()? | u16::from(more);
        f.extend_from_slice(&[next, 0]);
        f.extend_from_slice(&word.to_be_bytes());
        f.extend_from_slice(&ident.to_be_bytes());
        f.extend_from_slice(chunk);
        let plen = u16::try_from(f.len() - 40).ok()?;
        f[4..6].copy_from_slice(&plen.to_be_bytes());
        out.push(f);
    }
    Some(out)
}

#[cfg(test)]
mod tests;
