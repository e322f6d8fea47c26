//! Reproducible link impairments: loss, delay with jitter, duplication,
//! reordering and rate, per direction, every decision taken from a seed.
//!
//! Mechanism: a userspace element between two veth pairs. This kernel has
//! no netem, so an impaired link `a — b` is built as `a — i{N}a` and
//! `i{N}b — b`, the inner ends in a namespace of their own (no lab host;
//! not captured), and one thread of the run moves frames between `i{N}a`
//! and `i{N}b` with AF_PACKET sockets. The lab's ends keep their names,
//! MACs and addresses, so the capture and the trace see an ordinary link.
//!
//! A frame's fate is a pure function of the link's seed, its direction and
//! its identity ([`Dir::decide`]): for IP packets, addresses, protocol,
//! length, ports, TCP flags and payload, and how many packets of that same
//! identity came before in that direction (so a retransmission is a new
//! draw). IP ID, TCP sequence numbers and checksums, which differ from run
//! to run, are left out; of a tunnel datagram (UDP port 50103 carrying an
//! IP packet, a generated underlay link), the same of the packet it
//! carries. Frames that are not IP (ARP) pass unimpaired and
//! undelayed. Delay and jitter hold frames in a queue ordered by due time
//! (ties by arrival); `reorder` lets a share of packets skip the delay;
//! `rate` spaces frames by their length. TCP and UDP checksums are
//! recomputed on the way through (a veth hands on locally sent packets
//! with the checksum left to the device).
//!
//! Any link of the lab can be impaired, the generated ones too: [`attach`]
//! gives the link named by one of its ends its impairments (the scenario's
//! top-level `impair` section).
//!
//! It knows frames, namespaces and the lab's links, not scenarios or
//! traces.

use std::collections::{BinaryHeap, HashMap};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use hoplab_dataplane::{checksum, wire};

use super::netns::NetNs;
use crate::values::Impairment;

/// Gives the link of `lab` that has the end `im.named` (`HOST/IFNAME`)
/// the impairments `im`, whose `a_to_b` leaves that end (the directions
/// turned if it is the link's `b`). `Err`: why not (no such end, or the
/// link is impaired already).
pub fn attach(lab: &mut super::Lab, mut im: crate::values::Impair) -> Result<(), String> {
    let named = im.named.clone().unwrap_or_default();
    let Some((host, ifname)) = named.split_once('/') else {
        return Err(format!("`{named}` is not HOST/IFNAME"));
    };
    let is = |e: &super::End| e.host == host && e.ifname == ifname;
    let Some(l) = lab.links.iter_mut().find(|l| is(&l.a) || is(&l.b)) else {
        return Err(format!(
            "no link has the end `{named}` (interface {ifname} of host {host})"
        ));
    };
    if l.impair.is_some() {
        return Err(format!("the link of `{named}` is impaired already"));
    }
    if is(&l.b) {
        std::mem::swap(&mut im.a_to_b, &mut im.b_to_a);
    }
    l.impair = Some(im);
    Ok(())
}

/// The inner ends of link `i`: (towards a, towards b).
pub fn inner_names(i: usize) -> (String, String) {
    (format!("i{i}a"), format!("i{i}b"))
}

/// FNV-1a, 64 bits: stable across builds and platforms.
fn fnv(h: u64, bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .fold(h, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3))
}

/// SplitMix64's finaliser: a well-mixed draw from `x`.
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Whether draw `d` falls within `percent`.
fn hit(d: u64, percent: f64) -> bool {
    percent > 0.0 && ((d % 1_000_000) as f64) < percent * 10_000.0
}

/// The identity of an Ethernet frame's IP packet, or `None` (not IP).
fn identity(frame: &[u8]) -> Option<u64> {
    let et = u16::from_be_bytes([*frame.get(12)?, *frame.get(13)?]);
    ip_identity(et, frame.get(14..)?)
}

/// [`identity`] of the IP packet `ip` of ethertype `et`.
fn ip_identity(et: u16, ip: &[u8]) -> Option<u64> {
    let mut h = 0xcbf2_9ce4_8422_2325;
    let (proto, l4) = match et {
        0x0800 => {
            let ihl = usize::from(ip.first()? & 0x0f) * 4;
            h = fnv(h, ip.get(2..4)?); // total length
            h = fnv(h, ip.get(9..10)?); // protocol
            h = fnv(h, ip.get(12..20)?); // addresses
            (ip[9], ip.get(ihl..)?)
        }
        0x86dd => {
            h = fnv(h, ip.get(4..7)?); // payload length, next header
            h = fnv(h, ip.get(8..40)?); // addresses
            (ip[6], ip.get(40..)?)
        }
        _ => return None,
    };
    match proto {
        6 => {
            let off = usize::from(l4.get(12)? >> 4) * 4;
            h = fnv(h, l4.get(0..4)?); // ports
            h = fnv(h, l4.get(13..14)?); // flags
            h = fnv(h, l4.get(off..)?);
        }
        17 => {
            h = fnv(h, l4.get(0..4)?);
            let ports = [l4.get(0..2)?, l4.get(2..4)?];
            let tunnel = hoplab_dataplane::netmanager::TUNNEL_PORT.to_be_bytes();
            let payload = l4.get(8..)?;
            // A tunnel datagram: its inner packet's identity (the inner IP
            // ID and TCP numbers left out like the outer ones).
            let inner = match payload.first().map(|b| b >> 4) {
                Some(4) if ports.contains(&&tunnel[..]) => ip_identity(0x0800, payload),
                Some(6) if ports.contains(&&tunnel[..]) => ip_identity(0x86dd, payload),
                _ => None,
            };
            match inner {
                Some(i) => h = fnv(h, &i.to_le_bytes()),
                None => h = fnv(h, payload),
            }
        }
        _ => h = fnv(h, l4),
    }
    Some(h)
}

/// What happens to one frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fate {
    /// Dropped: no copy leaves.
    pub lost: bool,
    /// Copies that leave (1, or 2 when duplicated).
    pub copies: u8,
    /// How long it is held (before any rate spacing).
    pub delay: Duration,
}

/// One direction of an impaired link: its settings and the identities it
/// has seen.
pub struct Dir {
    im: Impairment,
    seed: u64,
    seen: HashMap<u64, u64>,
    /// When the rate lets the next frame leave.
    free_at: Option<Instant>,
}

impl Dir {
    /// Direction `which` (0: a to b, 1: b to a) of a link seeded `seed`.
    pub fn new(im: Impairment, seed: u64, which: u64) -> Dir {
        Dir {
            im,
            seed: mix(seed ^ mix(which + 1)),
            seen: HashMap::new(),
            free_at: None,
        }
    }

    /// The fate of `frame`: a function of the seed, the frame's identity
    /// and how often that identity was seen before.
    pub fn decide(&mut self, frame: &[u8]) -> Fate {
        let base = Duration::from_millis(self.im.delay_ms.into());
        let Some(id) = identity(frame) else {
            return Fate {
                lost: false,
                copies: 1,
                delay: Duration::ZERO,
            };
        };
        let n = self.seen.entry(id).or_insert(0);
        *n += 1;
        let d = mix(self.seed ^ mix(id ^ mix(*n)));
        let draw = |k: u64| mix(d ^ k);
        let lost = hit(draw(1), self.im.loss);
        let copies = if hit(draw(2), self.im.duplicate) {
            2
        } else {
            1
        };
        let j = u64::from(self.im.jitter_ms);
        let mut delay = base;
        if j > 0 {
            let off = draw(3) % (2 * j + 1);
            delay = Duration::from_millis(u64::from(self.im.delay_ms) + off - j);
        }
        if hit(draw(4), self.im.reorder) {
            delay = Duration::ZERO;
        }
        Fate {
            lost,
            copies,
            delay,
        }
    }

    /// When a frame of `len` bytes due at `due` leaves, given the rate.
    fn depart(&mut self, due: Instant, len: usize) -> Instant {
        let Some(kbit) = self.im.rate_kbit else {
            return due;
        };
        let start = self.free_at.map_or(due, |f| f.max(due));
        let tx = Duration::from_micros(len as u64 * 8 * 1000 / u64::from(kbit.max(1)));
        self.free_at = Some(start + tx);
        start + tx
    }
}

/// Recompute the TCP or UDP checksum of an Ethernet frame's IP packet.
fn fix_checksum(frame: &mut [u8]) {
    let Some(et) = frame.get(12..14).map(|b| u16::from_be_bytes([b[0], b[1]])) else {
        return;
    };
    let ip = &mut frame[14..];
    let (src, dst, proto, l4_start, l4_len) = match et {
        0x0800 if ip.len() >= 20 => {
            let ihl = usize::from(ip[0] & 0x0f) * 4;
            let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
            if ip[6] & 0x3f != 0 || ip[7] != 0 || total > ip.len() || total < ihl {
                return; // a fragment, or truncated
            }
            let s: [u8; 4] = ip[12..16].try_into().expect("4 bytes");
            let d: [u8; 4] = ip[16..20].try_into().expect("4 bytes");
            (s.into(), d.into(), ip[9], ihl, total - ihl)
        }
        0x86dd if ip.len() >= 40 => {
            let plen = usize::from(u16::from_be_bytes([ip[4], ip[5]]));
            if 40 + plen > ip.len() {
                return;
            }
            let s: [u8; 16] = ip[8..24].try_into().expect("16 bytes");
            let d: [u8; 16] = ip[24..40].try_into().expect("16 bytes");
            (
                std::net::IpAddr::from(s),
                std::net::IpAddr::from(d),
                ip[6],
                40,
                plen,
            )
        }
        _ => return,
    };
    let at = match proto {
        6 if l4_len >= 20 => 16,
        17 if l4_len >= 8 => 6,
        _ => return,
    };
    let l4 = &mut ip[l4_start..l4_start + l4_len];
    if proto == 17 && et == 0x0800 && l4[6] == 0 && l4[7] == 0 {
        return; // UDP over IPv4 without a checksum
    }
    l4[at] = 0;
    l4[at + 1] = 0;
    let pseudo = checksum::pseudo_header_sum(src, dst, proto, l4_len as u32);
    let mut c = checksum::checksum(pseudo, l4);
    if proto == 17 && c == 0 {
        c = 0xffff;
    }
    l4[at..at + 2].copy_from_slice(&c.to_be_bytes());
}

/// A packet socket bound to `ifname` in the calling thread's namespace.
fn open(ifname: &str) -> io::Result<OwnedFd> {
    use nix::sys::socket::{self, AddressFamily, SockFlag, SockType};
    let cname = std::ffi::CString::new(ifname).map_err(|_| io::Error::other("NUL in ifname"))?;
    let fd = socket::socket(
        AddressFamily::Packet,
        SockType::Raw,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    let ifindex = nix::net::if_::if_nametoindex(cname.as_c_str())?;
    crate::capture::bind_packet(&fd, ifindex)?;
    Ok(fd)
}

/// One impaired link: the sockets of its inner ends and its two directions.
pub struct Spec {
    /// The link's index in the lab.
    pub link: usize,
    /// The inner ends' names: towards a, towards b.
    pub ends: (String, String),
    pub seed: u64,
    pub a_to_b: Option<Impairment>,
    pub b_to_a: Option<Impairment>,
}

struct Wire {
    link: usize,
    /// Sockets on the inner ends: towards a, towards b.
    fds: [OwnedFd; 2],
    /// Direction 0 (a to b: read at end 0, sent at end 1) and 1.
    dirs: [Dir; 2],
}

/// A frame waiting for its time.
struct Pending {
    due: Instant,
    order: u64,
    wire: usize,
    /// The end it leaves by (0 or 1).
    out: usize,
    frame: Vec<u8>,
}

impl PartialEq for Pending {
    fn eq(&self, o: &Self) -> bool {
        (self.due, self.order) == (o.due, o.order)
    }
}
impl Eq for Pending {}
impl PartialOrd for Pending {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Pending {
    /// Earliest first in a max-heap.
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (o.due, o.order).cmp(&(self.due, self.order))
    }
}

/// An IP packet the element dropped (`loss`).
#[derive(Debug, Clone)]
pub struct Lost {
    /// The link's index in the lab.
    pub link: usize,
    /// Its direction: from end a to end b, else b to a.
    pub a_to_b: bool,
    pub packet: wire::Summary,
}

/// The running element. Dropping it stops the thread.
pub struct Element {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    lost: Arc<Mutex<Vec<Lost>>>,
}

impl Element {
    /// Open the inner ends' sockets in `ns` and start moving frames.
    pub fn start(ns: &NetNs, specs: Vec<Spec>) -> io::Result<Element> {
        let mut wires = Vec::new();
        for s in specs {
            let (a, b) = (s.ends.0.clone(), s.ends.1.clone());
            let fa = ns.run(|| open(&a))??;
            let fb = ns.run(|| open(&b))??;
            wires.push(Wire {
                link: s.link,
                fds: [fa, fb],
                dirs: [
                    Dir::new(s.a_to_b.unwrap_or_default(), s.seed, 0),
                    Dir::new(s.b_to_a.unwrap_or_default(), s.seed, 1),
                ],
            });
        }
        let stop = Arc::new(AtomicBool::new(false));
        let lost = Arc::new(Mutex::new(Vec::new()));
        let (flag, sink) = (stop.clone(), lost.clone());
        let thread = std::thread::spawn(move || run(wires, &flag, &sink));
        Ok(Element {
            stop,
            thread: Some(thread),
            lost,
        })
    }

    /// The IP packets dropped so far, in order.
    pub fn lost(&self) -> Vec<Lost> {
        self.lost.lock().expect("lost lock").clone()
    }
}

impl Drop for Element {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Read every frame waiting on `fd` (not those the element itself sent).
fn read_all(fd: &OwnedFd, buf: &mut [u8], out: &mut Vec<Vec<u8>>) {
    use nix::sys::socket::{recvmsg, LinkAddr, MsgFlags};
    loop {
        let mut iov = [io::IoSliceMut::new(buf)];
        let Ok(msg) = recvmsg::<LinkAddr>(fd.as_raw_fd(), &mut iov, None, MsgFlags::empty()) else {
            return;
        };
        let outgoing = msg
            .address
            .is_some_and(|a| a.pkttype() == libc::PACKET_OUTGOING);
        let n = msg.bytes;
        if !outgoing {
            out.push(buf[..n].to_vec());
        }
    }
}

fn run(mut wires: Vec<Wire>, stop: &AtomicBool, lost: &Mutex<Vec<Lost>>) {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let mut heap: BinaryHeap<Pending> = BinaryHeap::new();
    let mut order = 0u64;
    let mut buf = vec![0u8; 65536];
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        while heap.peek().is_some_and(|p| p.due <= now) {
            let p = heap.pop().expect("peeked");
            let fd = &wires[p.wire].fds[p.out];
            let _ = nix::sys::socket::send(
                fd.as_raw_fd(),
                &p.frame,
                nix::sys::socket::MsgFlags::empty(),
            );
        }
        let wait = heap
            .peek()
            .map_or(Duration::from_millis(50), |p| {
                p.due.saturating_duration_since(now)
            })
            .min(Duration::from_millis(50));
        let ready: Vec<(usize, usize)> = {
            let mut fds = Vec::new();
            for w in &wires {
                for fd in &w.fds {
                    fds.push(PollFd::new(std::os::fd::AsFd::as_fd(fd), PollFlags::POLLIN));
                }
            }
            let ms = u16::try_from(wait.as_millis().max(1)).unwrap_or(50);
            if poll(&mut fds, PollTimeout::from(ms)).unwrap_or(0) <= 0 {
                continue;
            }
            (fds.iter().enumerate())
                .filter(|(_, f)| f.revents().is_some_and(|r| r.contains(PollFlags::POLLIN)))
                .map(|(k, _)| (k / 2, k % 2))
                .collect()
        };
        for (w, from) in ready {
            let mut frames = Vec::new();
            read_all(&wires[w].fds[from], &mut buf, &mut frames);
            let now = Instant::now();
            for mut f in frames {
                let dir = &mut wires[w].dirs[from];
                let fate = dir.decide(&f);
                if fate.lost {
                    if let Ok(Some(packet)) = wire::parse_ethernet(&f) {
                        lost.lock().expect("lost lock").push(Lost {
                            link: wires[w].link,
                            a_to_b: from == 0,
                            packet,
                        });
                    }
                    continue;
                }
                fix_checksum(&mut f);
                for _ in 0..fate.copies {
                    let due = dir.depart(now + fate.delay, f.len());
                    order += 1;
                    heap.push(Pending {
                        due,
                        order,
                        wire: w,
                        out: 1 - from,
                        frame: f.clone(),
                    });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp_frame(sport: u16, payload: &[u8], ipid: u16, seq: u32) -> Vec<u8> {
        let mut f = vec![0u8; 14];
        f[12] = 0x08;
        let total = 20 + 20 + payload.len();
        let mut ip = vec![
            0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
        ];
        ip[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        ip[4..6].copy_from_slice(&ipid.to_be_bytes());
        f.extend(ip);
        let mut tcp = vec![0u8; 20];
        tcp[0..2].copy_from_slice(&sport.to_be_bytes());
        tcp[2..4].copy_from_slice(&7u16.to_be_bytes());
        tcp[4..8].copy_from_slice(&seq.to_be_bytes());
        tcp[12] = 5 << 4;
        tcp[13] = 0x18;
        f.extend(tcp);
        f.extend_from_slice(payload);
        f
    }

    fn lossy() -> Impairment {
        Impairment {
            loss: 50.0,
            ..Impairment::default()
        }
    }

    #[test]
    fn the_same_seed_decides_the_same_packets_whatever_the_ip_id_and_sequence() {
        let fates = |seed, salt: u32| {
            let mut d = Dir::new(lossy(), seed, 0);
            (0..64u16)
                .map(|i| {
                    let f = tcp_frame(
                        40000 + i % 8,
                        &[i as u8; 5],
                        i.wrapping_mul(977) ^ salt as u16,
                        salt.wrapping_add(u32::from(i)),
                    );
                    d.decide(&f).lost
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(fates(7, 0), fates(7, 12345));
        assert_ne!(fates(7, 0), fates(8, 0));
        let lost = fates(7, 0).iter().filter(|l| **l).count();
        assert!((16..=48).contains(&lost), "{lost} of 64 at 50%");
    }

    /// A tunnel datagram (UDP 50103) carrying `inner` (an Ethernet frame's
    /// IP packet), with outer IP ID `ipid`.
    fn tunnelled(inner: &[u8], ipid: u16) -> Vec<u8> {
        let ip = &inner[14..];
        let mut f = vec![0u8; 14];
        f[12] = 0x08;
        let total = 20 + 8 + ip.len();
        let mut outer = vec![
            0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0, 10, 10, 0, 1, 10, 10, 0, 2,
        ];
        outer[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        outer[4..6].copy_from_slice(&ipid.to_be_bytes());
        f.extend(outer);
        let mut udp = vec![0xc3, 0xb7, 0xc3, 0xb7, 0, 0, 0, 0];
        udp[4..6].copy_from_slice(&((8 + ip.len()) as u16).to_be_bytes());
        f.extend(udp);
        f.extend_from_slice(ip);
        f
    }

    /// Through the tunnel, the inner packet's identity decides: its IP ID
    /// and TCP numbers, which differ run to run, are left out.
    #[test]
    fn a_tunnel_datagram_is_decided_by_the_packet_it_carries() {
        let a = tunnelled(&tcp_frame(40000, b"data", 17, 1000), 5);
        let b = tunnelled(&tcp_frame(40000, b"data", 4242, 99_999), 6);
        let c = tunnelled(&tcp_frame(40001, b"data", 17, 1000), 5);
        assert_eq!(identity(&a), identity(&b));
        assert_ne!(identity(&a), identity(&c));
    }

    #[test]
    fn a_retransmission_is_a_new_draw_and_arp_passes() {
        let mut d = Dir::new(lossy(), 1, 0);
        let f = tcp_frame(40000, b"hello", 1, 1);
        let draws: Vec<bool> = (0..32).map(|_| d.decide(&f).lost).collect();
        assert!(draws.iter().any(|l| *l) && draws.iter().any(|l| !*l));
        let mut arp = vec![0u8; 42];
        arp[12] = 0x08;
        arp[13] = 0x06;
        let all = Impairment {
            loss: 100.0,
            delay_ms: 100,
            ..Impairment::default()
        };
        let fate = Dir::new(all, 1, 0).decide(&arp);
        assert!(!fate.lost && fate.delay.is_zero());
    }

    #[test]
    fn jitter_stays_within_its_bounds_and_checksums_are_right() {
        let im = Impairment {
            delay_ms: 20,
            jitter_ms: 5,
            ..Impairment::default()
        };
        let mut d = Dir::new(im, 3, 1);
        for i in 0..50u16 {
            let ms = d.decide(&tcp_frame(i, b"x", 0, 0)).delay.as_millis();
            assert!((15..=25).contains(&ms), "{ms}");
        }
        let mut f = tcp_frame(1, b"abc", 0, 9);
        fix_checksum(&mut f);
        assert!(hoplab_dataplane::wire::parse_ip(&f[14..]).is_ok());
        // The sum over pseudo-header and segment with its checksum is 0.
        let pseudo = checksum::pseudo_header_sum(
            [10, 0, 0, 1].into(),
            [10, 0, 0, 2].into(),
            6,
            (f.len() - 34) as u32,
        );
        assert_eq!(checksum::checksum(pseudo, &f[34..]), 0);
    }
}
