//! The kernel's own drops (`skb:kfree_skb` and its `enum skb_drop_reason`),
//! recorded through BPF while the run captures, and turned into drop
//! records of [`Verdicts`] ([`Where::Kernel`]).
//!
//! Mechanism: `sim/bpf/kfree_skb.bpf.c`, compiled by `sim/build.rs`, is
//! loaded with aya, its offsets relocated against the running kernel's BTF
//! (`/sys/kernel/btf/vmlinux`), and attached to the BTF tracepoint
//! `kfree_skb`. It keeps the drops of IPv4 and IPv6 packets in the run's
//! network namespaces (a map of their inode numbers) and sends each one to
//! a ring buffer that a thread of the run reads: time, namespace,
//! interface index, reason and the packet's first bytes from its network
//! header. The reason's name is read from the kernel (the tracepoint's
//! format file lists the numbers and names); the interface's name from
//! the namespace, once the capture has ended.
//!
//! Where BPF is not permitted (a rootless run's user namespace) or the
//! program does not load, [`KernelDrops::start`] fails with why, and the
//! run lists it under `verdicts_unavailable`: no kernel drop is inferred.
//! Drops that found the ring buffer full are counted there too.
//!
//! What is not a drop here: a packet the kernel answered itself, a
//! `NO_SOCKET` segment or datagram followed in the capture by the host's
//! own TCP reset or ICMP error about it (the packet was delivered, and the
//! kernel said no); and the capture's own copies (a packet socket's).
//!
//! It knows namespaces, the BPF record and IP headers; it does not know
//! traces, flows or scenarios (the trace looks drops up by [`Key`] and the
//! TCP numbers).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use aya::maps::{Array, HashMap as BpfHashMap, MapData, RingBuf};
use aya::programs::BtfTracePoint;
use aya::{Btf, Ebpf};
use hoplab_dataplane::wire::{self, Summary, L4};

use super::verdicts::{Drop, Key, Verdicts, Where};
use super::{Frame, Iface};
use crate::lab::netns::NetNs;

/// The compiled BPF program (see `sim/build.rs`).
static PROGRAM: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/kfree_skb.bpf.o"));

/// The tracepoint's format file, where the kernel names its drop reasons.
const FORMATS: [&str; 2] = [
    "/sys/kernel/tracing/events/skb/kfree_skb/format",
    "/sys/kernel/debug/tracing/events/skb/kfree_skb/format",
];

/// What names the kernel in a drop: `dropped at HOST/IF by the kernel (R)`.
pub const BY: &str = "the kernel";

/// Bytes of each record: `struct event` of the BPF program (the header's
/// first bytes, then conntrack's tuple).
const HEAD_LEN: usize = 128;
const CT_AT: usize = 24 + HEAD_LEN;
const EVENT_LEN: usize = CT_AT + 40;

/// Why the kernel's drops cannot be recorded.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the kernel's BTF does not read ({0})")]
    Btf(#[from] aya::BtfError),
    #[error("the BPF program does not load ({0})")]
    Load(#[from] aya::EbpfError),
    #[error("the BPF program is refused ({0})")]
    Program(#[from] aya::programs::ProgramError),
    #[error("a BPF map is refused ({0})")]
    Map(#[from] aya::maps::MapError),
    #[error("the BPF object has no {0}")]
    Missing(&'static str),
    #[error("a namespace's inode: {0}")]
    Namespace(std::io::Error),
    #[error("the ring buffer's reader: {0}")]
    Reader(std::io::Error),
    #[error("BPF is not permitted in a rootless run's user namespace")]
    Rootless,
}

/// Whether this process is in a user namespace other than the machine's
/// (a rootless run), where the kernel refuses to load BPF programs.
fn in_user_namespace() -> bool {
    std::fs::read_to_string("/proc/self/uid_map")
        .is_ok_and(|m| m.split_whitespace().collect::<Vec<_>>() != ["0", "0", "4294967295"])
}

/// One drop as the BPF program sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Monotonic time of the drop, ns.
    pub time_ns: u64,
    pub netns: u32,
    /// The device's index in that namespace; 0: no device.
    pub ifindex: u32,
    pub reason: u32,
    /// The skb's protocol (EtherType).
    pub protocol: u16,
    /// The first bytes from the network header (empty: not readable).
    pub head: Vec<u8>,
    /// Conntrack's tuple of the packet's own direction, when the skb held
    /// an entry of its own connection.
    pub ct: Option<Tuple>,
}

/// A conntrack tuple as the BPF program read it from the skb's entry: the
/// header the packet had when conntrack first saw it in this host, before
/// any NAT there rewrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tuple {
    pub src: IpAddr,
    pub dst: IpAddr,
    /// IP protocol number.
    pub proto: u8,
    /// TCP/UDP: the ports; ICMP: the echo identifier, then type and code.
    pub sport: u16,
    pub dport: u16,
}

/// The tuple at `b[CT_AT..]` (`ct_info`, `ct_proto`, `ct_l3num`, the
/// ports in network order, then both addresses), if the record has one.
fn parse_tuple(b: &[u8]) -> Option<Tuple> {
    let t = b.get(CT_AT..CT_AT + 40)?;
    if t[0] == 0 {
        return None;
    }
    let l3 = u16::from_ne_bytes([t[2], t[3]]);
    let addr = |a: &[u8]| -> Option<IpAddr> {
        let a: [u8; 16] = a.try_into().ok()?;
        match l3 {
            2 => Some(IpAddr::from([a[0], a[1], a[2], a[3]])),
            10 => Some(IpAddr::from(a)),
            _ => None,
        }
    };
    Some(Tuple {
        src: addr(&t[8..24])?,
        dst: addr(&t[24..40])?,
        proto: t[1],
        sport: u16::from_be_bytes([t[4], t[5]]),
        dport: u16::from_be_bytes([t[6], t[7]]),
    })
}

impl Record {
    /// A record of the BPF program's `struct event` (native byte order).
    pub fn parse(b: &[u8]) -> Option<Record> {
        if b.len() < EVENT_LEN {
            return None;
        }
        let u32_at = |i: usize| u32::from_ne_bytes(b[i..i + 4].try_into().expect("4 bytes"));
        let len = usize::from(u16::from_ne_bytes([b[22], b[23]])).min(HEAD_LEN);
        Some(Record {
            time_ns: u64::from_ne_bytes(b[0..8].try_into().expect("8 bytes")),
            netns: u32_at(8),
            ifindex: u32_at(12),
            reason: u32_at(16),
            protocol: u16::from_ne_bytes([b[20], b[21]]),
            head: b[24..24 + len].to_vec(),
            ct: parse_tuple(b),
        })
    }

    /// The key of the packet `s` (this record's) as conntrack's tuple says
    /// it entered the host, when that differs from its header (a NAT of
    /// this host rewrote it before the drop): the tuple's addresses and
    /// ports, the header's IP ID (no NAT rewrites it). Only a tuple of the
    /// packet's own protocol and family counts; an ICMP message only when
    /// it is an echo (its identifier is the tuple's).
    pub fn original(&self, s: &Summary) -> Option<Key> {
        let t = self.ct.as_ref()?;
        let header = Key::of(s);
        let proto = match s.l4 {
            L4::Tcp { .. } => 6,
            L4::Udp { .. } => 17,
            L4::Icmp { v6: false, .. } => 1,
            L4::Icmp { v6: true, .. } => 58,
            L4::Other { proto } => proto,
        };
        if t.proto != proto || t.src.is_ipv4() != s.src.is_ipv4() {
            return None;
        }
        let ports = match (&s.l4, header.ports) {
            (L4::Tcp { .. } | L4::Udp { .. }, _) => Some((t.sport, t.dport)),
            (L4::Icmp { .. }, Some(_)) => Some((t.sport, t.sport)),
            _ => None,
        };
        let key = Key {
            src: t.src,
            dst: t.dst,
            ports,
            ..header.clone()
        };
        (key != header).then_some(key)
    }

    /// The packet's header summary, read from its first bytes (lengths
    /// beyond them are not checked).
    pub fn summary(&self) -> Option<Summary> {
        let mut h = self.head.clone();
        // The copy is cut at HEAD_LEN: the length fields are made to say
        // so, then the usual reader reads it.
        let (l4, proto) = match h.first()? >> 4 {
            4 if h.len() >= 20 => {
                let total = u16::from_be_bytes([h[2], h[3]]);
                let n = (h.len() as u16).min(total);
                h[2..4].copy_from_slice(&n.to_be_bytes());
                h.truncate(usize::from(n));
                // The header checksum is not read by the summary.
                (usize::from(h[0] & 0x0f) * 4, h[9])
            }
            6 if h.len() >= 40 => {
                let pl = u16::from_be_bytes([h[4], h[5]]);
                let n = ((h.len() - 40) as u16).min(pl);
                h[4..6].copy_from_slice(&n.to_be_bytes());
                h.truncate(40 + usize::from(n));
                (40, h[6])
            }
            _ => return None,
        };
        // A UDP datagram's own length, cut the same way.
        if proto == 17 && h.len() >= l4 + 8 {
            let n = u16::from_be_bytes([h[l4 + 4], h[l4 + 5]]).min((h.len() - l4) as u16);
            h[l4 + 4..l4 + 6].copy_from_slice(&n.to_be_bytes());
        }
        wire::parse_ip(&h).ok()
    }
}

/// The running recorder of a run.
pub struct KernelDrops {
    /// Keeps the program attached and the maps open.
    ebpf: Ebpf,
    /// Namespace inode → host.
    hosts: BTreeMap<u32, String>,
    stop: Arc<AtomicBool>,
    reader: Option<JoinHandle<Vec<Record>>>,
}

/// The inode number of a namespace held by `ns`.
fn inode(ns: &NetNs) -> Result<u32, Error> {
    let m =
        std::fs::metadata(format!("/proc/self/fd/{}", ns.raw_fd())).map_err(Error::Namespace)?;
    Ok(m.ino() as u32)
}

impl KernelDrops {
    /// Load and attach the program, recording drops in the namespaces of
    /// `hosts` (name, namespace) from now on.
    pub fn start(hosts: &[(&str, &NetNs)]) -> Result<KernelDrops, Error> {
        if in_user_namespace() {
            return Err(Error::Rootless);
        }
        let btf = Btf::from_sys_fs()?;
        let mut ebpf = aya::EbpfLoader::new().btf(Some(&btf)).load(PROGRAM)?;
        let mut names = BTreeMap::new();
        {
            let map = ebpf.map_mut("netns").ok_or(Error::Missing("map netns"))?;
            let mut netns: BpfHashMap<&mut MapData, u32, u8> = BpfHashMap::try_from(map)?;
            for (h, ns) in hosts {
                let ino = inode(ns)?;
                netns.insert(ino, 1, 0)?;
                names.insert(ino, h.to_string());
            }
        }
        let ring = ebpf
            .take_map("events")
            .ok_or(Error::Missing("map events"))?;
        let ring: RingBuf<MapData> = RingBuf::try_from(ring)?;
        let prog: &mut BtfTracePoint = ebpf
            .program_mut("kfree_skb")
            .ok_or(Error::Missing("program kfree_skb"))?
            .try_into()?;
        prog.load("kfree_skb", &btf)?;
        prog.attach()?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let reader = std::thread::Builder::new()
            .name("kernel-drops".into())
            .spawn(move || read_ring(ring, &flag))
            .map_err(Error::Reader)?;
        Ok(KernelDrops {
            ebpf,
            hosts: names,
            stop,
            reader: Some(reader),
        })
    }

    /// Stop recording: detach the program, read what the ring buffer
    /// holds. Returns the records and the drops that found it full.
    pub fn finish(mut self) -> (Vec<Record>, u64) {
        let lost = (self.ebpf.map("lost"))
            .and_then(|m| Array::<_, u64>::try_from(m).ok())
            .and_then(|a| a.get(&0, 0).ok())
            .unwrap_or(0);
        (self.stop_reader(), lost)
    }

    fn stop_reader(&mut self) -> Vec<Record> {
        self.stop.store(true, Ordering::Relaxed);
        (self.reader.take())
            .and_then(|r| r.join().ok())
            .unwrap_or_default()
    }

    /// Namespace inode → host, as started.
    pub fn hosts(&self) -> &BTreeMap<u32, String> {
        &self.hosts
    }
}

impl std::ops::Drop for KernelDrops {
    /// A run that fails before [`KernelDrops::finish`] stops its reader;
    /// the program is detached with `ebpf`.
    fn drop(&mut self) {
        self.stop_reader();
    }
}

/// The ring buffer's records until `stop`, then what is left in it.
fn read_ring(mut ring: RingBuf<MapData>, stop: &AtomicBool) -> Vec<Record> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let mut out = Vec::new();
    loop {
        let done = stop.load(Ordering::Relaxed);
        while let Some(item) = ring.next() {
            if let Some(r) = Record::parse(&item) {
                out.push(r);
            }
        }
        if done {
            return out;
        }
        let mut fds = [PollFd::new(ring.as_fd(), PollFlags::POLLIN)];
        let _ = poll(&mut fds, PollTimeout::from(20u16));
    }
}

/// The clock of [`Record::time_ns`] (CLOCK_MONOTONIC, as
/// `bpf_ktime_get_ns`), now, in ns.
pub fn now() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).map_or(0, |t| {
        t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64
    })
}

/// Reason number → name, from the tracepoint's format file
/// (`__print_symbolic(REC->reason, { 2, "NOT_SPECIFIED" }, ...)`).
pub fn reason_names() -> HashMap<u32, String> {
    FORMATS
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok())
        .map(|t| parse_reason_names(&t))
        .unwrap_or_default()
}

/// The reason names of a format file's text.
pub fn parse_reason_names(text: &str) -> HashMap<u32, String> {
    let Some(i) = text.find("__print_symbolic(REC->reason") else {
        return HashMap::new();
    };
    let mut m = HashMap::new();
    for part in text[i..].split('{').skip(1) {
        let Some((n, rest)) = part.split_once(',') else {
            continue;
        };
        let name = rest.split('"').nth(1);
        if let (Ok(n), Some(name)) = (n.trim().parse::<u32>(), name) {
            m.insert(n, name.to_string());
        }
    }
    m
}

/// What the host answered itself, from the capture: (host, protocol,
/// source, destination, ports) of each packet a host sent a TCP reset or
/// an ICMP error about (the packet as it came in).
type Answered = HashSet<(String, u8, IpAddr, IpAddr, u16, u16)>;

fn answered(ifs: &[Iface], frames: &[Frame]) -> Answered {
    let mut out = Answered::new();
    for f in frames.iter().filter(|f| f.outgoing) {
        let Some(i) = ifs.get(f.iface as usize) else {
            continue;
        };
        let s = match i.link {
            pcap_file::DataLink::RAW => wire::parse_ip(&f.data).ok(),
            _ => wire::parse_ethernet(&f.data).ok().flatten(),
        };
        let Some(s) = s else { continue };
        match s.l4 {
            L4::Tcp {
                sport,
                dport,
                flags,
                ..
            } if flags & wire::tcp_flags::RST != 0 => {
                out.insert((i.host.clone(), 6, s.dst, s.src, dport, sport));
            }
            L4::Icmp { .. } => {
                if let Some((p, sport, dport)) = s.quoted_ports() {
                    out.insert((i.host.clone(), p, s.dst, s.src, sport, dport));
                }
            }
            _ => {}
        }
    }
    out
}

/// Why a freeing the kernel reports is not a drop of the packet, if so:
/// - `QUEUE_PURGE`, `SOCKET_CLOSE`: a socket had taken it (a queue emptied
///   at close);
/// - `NOT_SPECIFIED`: the kernel names no drop (it is also how TCP frees a
///   segment it processed, e.g. a FIN answered in TIME_WAIT);
/// - `OTHERHOST`: a frame for another host's MAC address (a bridge's flood,
///   a packet socket's copy), while the packet goes on to its own;
/// - `NO_SOCKET` of an ICMP message: its handler found no socket of its
///   own, but raw sockets see every ICMP message before it;
/// - `NO_SOCKET` of a segment or datagram the host `answered` (a TCP reset
///   or an ICMP error about it in the capture): the kernel said no.
fn not_a_drop(why: &str, s: &Summary, answered: impl Fn(u16, u16) -> bool) -> Option<&'static str> {
    match why {
        "QUEUE_PURGE" | "SOCKET_CLOSE" => Some("not a drop: a socket had taken it"),
        "NOT_SPECIFIED" => Some("not a drop: no reason named"),
        "OTHERHOST" => Some("not a drop: a copy for another host's address"),
        "NO_SOCKET" => match (&s.l4, s.ports()) {
            (L4::Icmp { .. }, _) => Some("not a drop: raw sockets see ICMP first"),
            (_, Some((sp, dp))) if answered(sp, dp) => Some("not a drop: the host answered"),
            _ => None,
        },
        _ => None,
    }
}

/// What turns records into drops: the hosts' names by namespace, each
/// host's interface names by index, the reasons' names, and the capture
/// (for what the kernel answered).
pub struct Names<'a> {
    pub hosts: &'a BTreeMap<u32, String>,
    pub ifnames: &'a HashMap<String, HashMap<u32, String>>,
    pub reasons: &'a HashMap<u32, String>,
    pub capture: (&'a [Iface], &'a [Frame]),
}

/// The records as drops of `v` (each keyed by its packet's addresses,
/// ident, protocol and ports, in its namespace's host); records of no IP
/// packet that reads, and `NO_SOCKET` drops the host answered, are left
/// out (see [`not_a_drop`]). Returns the lines of the run's
/// `kernel-drops.txt`: every record of a packet, and whether it is a drop.
pub fn add(records: &[Record], names: &Names, v: &mut Verdicts) -> Vec<String> {
    let answered = answered(names.capture.0, names.capture.1);
    let mut lines = Vec::new();
    for r in records {
        let (Some(host), Some(s)) = (names.hosts.get(&r.netns), r.summary()) else {
            continue;
        };
        let why = (names.reasons.get(&r.reason).cloned())
            .unwrap_or_else(|| format!("reason {}", r.reason));
        let proto = match s.l4 {
            L4::Tcp { .. } => 6,
            L4::Udp { .. } => 17,
            _ => 0,
        };
        let not_drop = not_a_drop(&why, &s, |sp, dp| {
            answered.contains(&(host.clone(), proto, s.src, s.dst, sp, dp))
        });
        let iface = (r.ifindex != 0)
            .then(|| names.ifnames.get(host)?.get(&r.ifindex).cloned())
            .flatten();
        let tcp = match s.l4 {
            L4::Tcp { seq, ack, .. } => Some((seq, ack)),
            _ => None,
        };
        let key = Key::of(&s);
        let original = r.original(&s);
        lines.push(format!(
            "{}\t{host}\t{}\t{why}\t{}{}\t{}",
            r.time_ns,
            iface.as_deref().unwrap_or("-"),
            packet_text(&key),
            original.as_ref().map_or(String::new(), |k| format!(
                " (before NAT: {})",
                packet_text(k)
            )),
            not_drop.unwrap_or("drop")
        ));
        let flooded = why == "OTHERHOST";
        let drop = Drop {
            host: host.clone(),
            at: Where::Kernel { iface, tcp },
            by: BY.to_string(),
            why,
        };
        if flooded {
            v.add_flooded(key, drop);
            continue;
        }
        if not_drop.is_some() {
            continue;
        }
        if let Some(k) = original {
            v.add_kernel_original(k, drop.clone());
        }
        v.add(key, drop);
    }
    lines
}

/// A packet's key in `kernel-drops.txt`: `udp SRC > DST ident N ports A > B`.
fn packet_text(k: &Key) -> String {
    format!(
        "{} {} > {} ident {}{}",
        k.proto,
        k.src,
        k.dst,
        k.ident,
        k.ports
            .map_or(String::new(), |(a, b)| format!(" ports {a} > {b}"))
    )
}

/// Each host's interfaces by index, read inside its namespace.
pub fn interface_names(hosts: &[(&str, &NetNs)]) -> HashMap<String, HashMap<u32, String>> {
    let mut out = HashMap::new();
    for (h, ns) in hosts {
        let names = ns.run(|| {
            nix::net::if_::if_nameindex().map(|l| {
                l.iter()
                    .map(|i| (i.index(), i.name().to_string_lossy().into_owned()))
                    .collect::<HashMap<u32, String>>()
            })
        });
        if let Ok(Ok(m)) = names {
            out.insert(h.to_string(), m);
        }
    }
    out
}

/// Write the records' lines to `path` (`<out>/kernel-drops.txt`).
pub fn write(path: &Path, lines: &[String]) -> std::io::Result<()> {
    let mut text = String::from("# time_ns\thost\tinterface\treason\tpacket\tverdict\n");
    for l in lines {
        text.push_str(l);
        text.push('\n');
    }
    std::fs::write(path, text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::PacketBuilder;

    /// The BPF program's record of `ip`, cut at HEAD_LEN, without a
    /// conntrack tuple.
    fn event(netns: u32, ifindex: u32, reason: u32, ip: &[u8]) -> Vec<u8> {
        let mut b = event_head(netns, ifindex, reason, ip);
        b.resize(EVENT_LEN, 0);
        b
    }

    /// The same with conntrack's tuple (`info`: ctinfo + 1) of an IPv4
    /// packet.
    fn event_ct(
        ip: &[u8],
        info: u8,
        proto: u8,
        src: [u8; 4],
        dst: [u8; 4],
        ports: (u16, u16),
    ) -> Vec<u8> {
        let mut b = event_head(11, 2, 3, ip);
        b.extend([info, proto]);
        b.extend(2u16.to_ne_bytes());
        b.extend(ports.0.to_be_bytes());
        b.extend(ports.1.to_be_bytes());
        for a in [src, dst] {
            b.extend(a);
            b.extend([0; 12]);
        }
        b
    }

    fn event_head(netns: u32, ifindex: u32, reason: u32, ip: &[u8]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend(7u64.to_ne_bytes());
        b.extend(netns.to_ne_bytes());
        b.extend(ifindex.to_ne_bytes());
        b.extend(reason.to_ne_bytes());
        b.extend(0x0800u16.to_ne_bytes());
        let n = ip.len().min(HEAD_LEN);
        b.extend((n as u16).to_ne_bytes());
        let mut head = ip[..n].to_vec();
        head.resize(HEAD_LEN, 0);
        b.extend(head);
        b
    }

    fn udp(src: [u8; 4], dst: [u8; 4], dport: u16, len: usize) -> Vec<u8> {
        let mut v = Vec::new();
        PacketBuilder::ipv4(src, dst, 64)
            .udp(40001, dport)
            .write(&mut v, &vec![b'x'; len])
            .unwrap();
        v[4..6].copy_from_slice(&77u16.to_be_bytes());
        v
    }

    fn tcp(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, rst: bool) -> Vec<u8> {
        let b = PacketBuilder::ipv4(src, dst, 64).tcp(sport, dport, 5000, 1000);
        let b = if rst { b.rst().ack(6001) } else { b.ack(9001) };
        let mut v = Vec::new();
        b.write(&mut v, b"data").unwrap();
        v
    }

    #[test]
    fn a_record_reads_back_its_packet_cut_at_its_head() {
        let ip = udp([10, 0, 1, 2], [10, 0, 2, 2], 9, 1000);
        let r = Record::parse(&event(4026531999, 3, 3, &ip)).unwrap();
        assert_eq!(
            (r.netns, r.ifindex, r.reason, r.protocol),
            (4026531999, 3, 3, 0x0800)
        );
        assert_eq!(r.head.len(), HEAD_LEN);
        let s = r.summary().unwrap();
        let k = Key::of(&s);
        assert_eq!(k.ports, Some((40001, 9)));
        assert_eq!(k.ident, 77);
        assert_eq!(k.dst, "10.0.2.2".parse::<IpAddr>().unwrap());
        assert!(Record::parse(&[0; 10]).is_none());
        // Not an IP packet: no summary, no drop.
        let r = Record::parse(&event(1, 1, 3, &[0u8; 60])).unwrap();
        assert!(r.summary().is_none());
    }

    /// A drop after a NAT of its host: found by its header, and by the
    /// header conntrack says it entered with (its tuple; the IP ID from the
    /// header); a related entry's tuple, one of another protocol, or one
    /// equal to the header adds nothing.
    #[test]
    fn a_drop_after_nat_is_found_by_conntrack_s_tuple() {
        let (client, public, internal) = ([93, 6, 1, 78], [24, 0, 5, 8], [10, 30, 255, 253]);
        let natted = udp(client, internal, 5353, 1400);
        let entered = udp(client, public, 5353, 1400);
        let r = Record::parse(&event_ct(&natted, 1, 17, client, public, (40001, 5353))).unwrap();
        let t = r.ct.clone().unwrap();
        assert_eq!((t.proto, t.sport, t.dport), (17, 40001, 5353));
        let s = r.summary().unwrap();
        let key = |p: &[u8]| Key::of(&wire::parse_ip(p).unwrap());
        assert_eq!(r.original(&s), Some(key(&entered)));
        // Related (no tuple sent), another protocol, no NAT: nothing.
        let related = Record::parse(&event(11, 2, 3, &natted)).unwrap();
        assert_eq!((&related.ct, related.original(&s)), (&None, None));
        let tcp_ct =
            Record::parse(&event_ct(&natted, 1, 6, client, public, (40001, 5353))).unwrap();
        assert_eq!(tcp_ct.original(&s), None);
        let same =
            Record::parse(&event_ct(&natted, 1, 17, client, internal, (40001, 5353))).unwrap();
        assert_eq!(same.original(&s), None);

        let hosts = BTreeMap::from([(11, "gw".to_string())]);
        let ifnames = HashMap::from([("gw".to_string(), HashMap::from([(2, "pub".to_string())]))]);
        let reasons = HashMap::from([(3, "PKT_TOO_BIG".to_string())]);
        let names = Names {
            hosts: &hosts,
            ifnames: &ifnames,
            reasons: &reasons,
            capture: (&[], &[]),
        };
        let mut v = Verdicts::default();
        let lines = add(&[r], &names, &mut v);
        assert!(
            lines[0].contains("udp 93.6.1.78 > 10.30.255.253 ident 77 ports 40001 > 5353 (before NAT: udp 93.6.1.78 > 24.0.5.8 ident 77 ports 40001 > 5353)"),
            "{lines:?}"
        );
        let d = v.find_kernel("gw", &key(&entered), None).unwrap();
        assert_eq!(d.why, "PKT_TOO_BIG");
        assert!(v.find_kernel("gw", &key(&natted), None).is_some());
        assert!(v.find_kernel("n1", &key(&entered), None).is_none());
        assert_eq!(v.len(), 1);
        // The verdicts' text keeps both ways of finding it.
        let back = Verdicts::from_text(&v.to_text()).unwrap().unwrap();
        assert_eq!(back.to_text(), v.to_text());
        assert_eq!(back.find_kernel("gw", &key(&entered), None), Some(d));
    }

    /// The header comes first: a drop whose own header is the packet's
    /// wins over one whose conntrack tuple is.
    #[test]
    fn a_header_match_comes_before_a_tuple_match() {
        let (a, b, c) = ([10, 0, 1, 2], [10, 0, 2, 2], [10, 0, 3, 3]);
        let p = udp(a, b, 9, 10);
        let key = Key::of(&wire::parse_ip(&p).unwrap());
        let drop = |why: &str| Drop {
            host: "h".into(),
            at: Where::Kernel {
                iface: None,
                tcp: None,
            },
            by: BY.into(),
            why: why.into(),
        };
        let mut v = Verdicts::default();
        v.add_kernel_original(key.clone(), drop("BY_TUPLE"));
        assert_eq!(v.find_kernel("h", &key, None).unwrap().why, "BY_TUPLE");
        v.add(key.clone(), drop("BY_HEADER"));
        assert_eq!(v.find_kernel("h", &key, None).unwrap().why, "BY_HEADER");
        let other = Key::of(&wire::parse_ip(&udp(a, c, 9, 10)).unwrap());
        assert!(v.find_kernel("h", &other, None).is_none());
        // Only kernel drops are found by a tuple.
        let mut w = Verdicts::default();
        let nft = Drop {
            at: Where::Chain("input".into()),
            ..drop("x")
        };
        w.add_kernel_original(key.clone(), nft);
        assert!(w.is_empty());
    }

    /// A copy freed for another host's MAC address (a bridge's flood) is
    /// no drop, but is kept apart for a packet no copy of which reached
    /// its owner; it travels in the verdicts' text.
    #[test]
    fn a_flooded_copy_is_kept_apart() {
        let seg = tcp([10, 30, 129, 2], [10, 18, 0, 1], 41000, 80, false);
        let r = Record::parse(&event(11, 2, 9, &seg)).unwrap();
        let hosts = BTreeMap::from([(11, "web-0".to_string())]);
        let ifnames = HashMap::from([(
            "web-0".to_string(),
            HashMap::from([(2, "eth0".to_string())]),
        )]);
        let reasons = HashMap::from([(9, "OTHERHOST".to_string())]);
        let names = Names {
            hosts: &hosts,
            ifnames: &ifnames,
            reasons: &reasons,
            capture: (&[], &[]),
        };
        let mut v = Verdicts::default();
        let lines = add(&[r], &names, &mut v);
        assert!(lines[0].ends_with("not a drop: a copy for another host's address"));
        let key = Key::of(&wire::parse_ip(&seg).unwrap());
        assert!(v.find_kernel("web-0", &key, Some((5000, 9001))).is_none());
        assert_eq!(v.len(), 0);
        let d = v.find_flooded("web-0", &key, Some((5000, 9001))).unwrap();
        assert_eq!(d.why, "OTHERHOST");
        assert!(v.find_flooded("web-0", &key, Some((5001, 9001))).is_none());
        let back = Verdicts::from_text(&v.to_text()).unwrap().unwrap();
        assert_eq!(
            back.find_flooded("web-0", &key, Some((5000, 9001))),
            Some(d)
        );
    }

    /// Freeings the kernel reports that are no drop of the packet.
    #[test]
    fn a_socket_s_packets_and_answered_ones_are_not_drops() {
        let s = wire::parse_ip(&udp([10, 0, 1, 2], [10, 0, 2, 2], 9, 4)).unwrap();
        let never = |_: u16, _: u16| false;
        assert!(not_a_drop("QUEUE_PURGE", &s, never).is_some());
        assert!(not_a_drop("SOCKET_CLOSE", &s, never).is_some());
        assert!(not_a_drop("NOT_SPECIFIED", &s, never).is_some());
        assert!(not_a_drop("OTHERHOST", &s, never).is_some());
        assert_eq!(not_a_drop("NO_SOCKET", &s, never), None);
        assert!(not_a_drop("NO_SOCKET", &s, |a, b| (a, b) == (40001, 9)).is_some());
        assert_eq!(not_a_drop("IP_INNOROUTES", &s, |_, _| true), None);
        let mut ping = Vec::new();
        PacketBuilder::ipv4([10, 0, 2, 2], [10, 0, 1, 2], 64)
            .icmpv4_echo_reply(1, 1)
            .write(&mut ping, b"x")
            .unwrap();
        let ping = wire::parse_ip(&ping).unwrap();
        assert!(not_a_drop("NO_SOCKET", &ping, never).is_some());
    }

    #[test]
    fn reason_names_come_from_the_format_file() {
        let text = "print fmt: \"skbaddr=%p reason: %s\", REC->skbaddr, \
                    __print_symbolic(REC->reason, { 2, \"NOT_SPECIFIED\" }, { 3, \"NO_SOCKET\" }, \
                    { 12, \"NETFILTER_DROP\" })\n";
        let m = parse_reason_names(text);
        assert_eq!(m.len(), 3);
        assert_eq!(m[&3], "NO_SOCKET");
        assert_eq!(m[&12], "NETFILTER_DROP");
        assert!(parse_reason_names("no reasons here").is_empty());
    }

    /// A segment the host answered with a reset is no drop; one it did not
    /// answer, and a datagram, are, keyed and placed; an unknown reason
    /// shows its number.
    #[test]
    fn records_become_drops_unless_the_kernel_answered() {
        let (c, s) = ([10, 0, 1, 2], [10, 0, 2, 2]);
        let seg = tcp(c, s, 40002, 23, false);
        let other = tcp(c, s, 40003, 24, false);
        let dgram = udp(c, s, 9, 20);
        let records: Vec<Record> = [
            event(11, 2, 3, &seg),
            event(11, 2, 3, &other),
            event(11, 0, 999, &dgram),
            event(12, 2, 3, &dgram),
        ]
        .iter()
        .map(|e| Record::parse(e).unwrap())
        .collect();
        let hosts = BTreeMap::from([(11, "server".to_string())]);
        let ifnames = HashMap::from([(
            "server".to_string(),
            HashMap::from([(2, "eth0".to_string())]),
        )]);
        let reasons = HashMap::from([(3, "NO_SOCKET".to_string())]);
        let ifs = [Iface {
            host: "server".into(),
            ifname: "eth0".into(),
            link: pcap_file::DataLink::RAW,
        }];
        // The server's reset to the first segment only.
        let frames = [Frame {
            ts_ns: 1,
            iface: 0,
            outgoing: true,
            data: tcp(s, c, 23, 40002, true),
        }];
        let names = Names {
            hosts: &hosts,
            ifnames: &ifnames,
            reasons: &reasons,
            capture: (&ifs, &frames),
        };
        let mut v = Verdicts::default();
        let lines = add(&records, &names, &mut v);
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert!(
            lines[0].ends_with("\tnot a drop: the host answered"),
            "{lines:?}"
        );
        assert!(lines[1].ends_with("\tdrop"), "{lines:?}");
        assert_eq!(v.len(), 2);
        let key = |p: &[u8]| Key::of(&wire::parse_ip(p).unwrap());
        assert!(v
            .find_kernel("server", &key(&seg), Some((5000, 9001)))
            .is_none());
        let d = v
            .find_kernel("server", &key(&other), Some((5000, 9001)))
            .unwrap();
        assert_eq!(
            d.at,
            Where::Kernel {
                iface: Some("eth0".into()),
                tcp: Some((5000, 9001))
            }
        );
        assert_eq!((d.by.as_str(), d.why.as_str()), (BY, "NO_SOCKET"));
        // Another segment with the same key is not this one.
        assert!(v
            .find_kernel("server", &key(&other), Some((5004, 9001)))
            .is_none());
        let d = v.find_kernel("server", &key(&dgram), None).unwrap();
        assert_eq!(
            (&d.at, d.why.as_str()),
            (
                &Where::Kernel {
                    iface: None,
                    tcp: None
                },
                "reason 999"
            )
        );
        // Kernel drops are apart from the others, and travel in the text.
        assert!(v.find("server", &key(&dgram)).is_none());
        let back = Verdicts::from_text(&v.to_text()).unwrap().unwrap();
        assert_eq!(back.to_text(), v.to_text());
        assert_eq!(back.find_kernel("server", &key(&dgram), None), Some(d));
    }
}
