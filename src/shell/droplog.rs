//! The drop log: each packet a core dropped, by its identity and the
//! core's reason, written to a file beside the counters
//! (`NAME.drops` for `NAME.txt`, [`DropLog::beside`]) for the harness to
//! turn into the trace's drop verdicts.
//!
//! A packet is identified by the fields no hop rewrites before the drop,
//! as it was read: source and destination address, IPv4 identification
//! (IPv6 flow label), protocol, and ports (ICMP echo: the identifier
//! twice). A fragment after the first has no ports: its protocol's number
//! stands for the protocol (IPv6: the fragment header's next header, the
//! extension headers before it walked). [`DropLog::packet`] takes the
//! packet itself, or only its headers and the 8 bytes after them: the
//! quote a core hands back when it drops a packet it held (queued behind
//! a query, a fragment of a datagram never made whole), which the shell no
//! longer holds; [`DropLog::unidentified`] a drop with no IP header to
//! name the packet by (what [`DropLog::packet`] records of bytes that are
//! not IP, or are cut short before the addresses).
//!
//! Each record is written at once (one `write` of one line, so a process
//! killed by SIGKILL loses none of them), appended: a restarted process
//! adds its own part. Bounded: at most [`MAX_RECORDS`] records and
//! [`MAX_BYTES`] bytes per process; past that a `full` line, then drops are
//! only counted, and the count is written at exit (`end overflow N`).
//!
//! The format, one record a line, fields separated by one space:
//!
//! ```text
//! start                                       a process opened the log
//! drop VIA REASON PROTO SRC DST IDENT PORTS   PORTS: SPORT:DPORT or -
//! unidentified REASON                         no IP header to name it by
//! full                                        later drops counted only
//! end overflow N                              the process exited
//! ```
//!
//! `VIA` is `tun:IFNAME` (read from the TUN) or `tunnel` (the payload of
//! a tunnel datagram). It knows IP headers; it does not know either core,
//! their reasons (any text without spaces) or the trace.

use std::fmt::Display;
use std::fs::File;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use hoplab_dataplane::held::v6_transport;
use tracing::warn;

/// Records per process, at most.
pub const MAX_RECORDS: usize = 4096;
/// Bytes per process, at most.
pub const MAX_BYTES: usize = 512 * 1024;

/// Where a dropped packet came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// Read from the TUN.
    Tun,
    /// The payload of a tunnel datagram.
    Tunnel,
}

/// A process's drop log (see the module documentation).
#[derive(Debug)]
pub struct DropLog {
    file: Option<File>,
    tun: String,
    records: usize,
    bytes: usize,
    overflow: u64,
}

/// The fields that identify a packet (see the module documentation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub src: IpAddr,
    pub dst: IpAddr,
    /// IPv4 identification; IPv6 flow label.
    pub ident: u32,
    /// `tcp`, `udp`, `icmp`, `icmpv6`, or the protocol's number.
    pub proto: String,
    /// Source and destination port; an ICMP echo's identifier twice.
    pub ports: Option<(u16, u16)>,
}

impl Identity {
    /// The identity of the IP packet starting `ip` (only its headers need
    /// be there: a quote of 28 bytes will do); `None` if it is not IPv4 or
    /// IPv6, or too short for its addresses.
    pub fn of(ip: &[u8]) -> Option<Identity> {
        let be16 = |b: &[u8], i: usize| b.get(i..i + 2).map(|s| u16::from_be_bytes([s[0], s[1]]));
        let (src, dst, ident, proto, l4, later_fragment): (IpAddr, IpAddr, u32, u8, usize, bool) =
            match ip.first()? >> 4 {
                4 => {
                    let h: [u8; 20] = ip.get(..20)?.try_into().ok()?;
                    let src = Ipv4Addr::from([h[12], h[13], h[14], h[15]]);
                    let dst = Ipv4Addr::from([h[16], h[17], h[18], h[19]]);
                    let frag = be16(&h, 6)? & 0x1fff != 0;
                    let ihl = usize::from(h[0] & 0x0f) * 4;
                    (src.into(), dst.into(), be16(&h, 4)?.into(), h[9], ihl, frag)
                }
                6 => {
                    let h: [u8; 40] = ip.get(..40)?.try_into().ok()?;
                    let a = |i: usize| -> [u8; 16] { h[i..i + 16].try_into().expect("16 bytes") };
                    let flow = u32::from_be_bytes([0, h[1] & 0x0f, h[2], h[3]]);
                    let src = Ipv6Addr::from(a(8));
                    let dst = Ipv6Addr::from(a(24));
                    let (next, l4, later) = v6_transport(ip);
                    (src.into(), dst.into(), flow, next, l4, later)
                }
                _ => return None,
            };
        let rest = ip.get(l4..).unwrap_or(&[]);
        let (name, ports) = match (proto, src.is_ipv6()) {
            // A fragment after the first: its protocol's number, no ports.
            (n, _) if later_fragment => (n.to_string(), None),
            (6, _) => ("tcp".to_string(), be16(rest, 0).zip(be16(rest, 2))),
            (17, _) => ("udp".to_string(), be16(rest, 0).zip(be16(rest, 2))),
            (1, false) => ("icmp".to_string(), echo_id(rest, [0, 8])),
            (58, true) => ("icmpv6".to_string(), echo_id(rest, [128, 129])),
            (n, _) => (n.to_string(), None),
        };
        Some(Identity {
            src,
            dst,
            ident,
            proto: name,
            ports,
        })
    }
}

impl Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} {} {} ",
            self.proto, self.src, self.dst, self.ident
        )?;
        match self.ports {
            Some((s, d)) => write!(f, "{s}:{d}"),
            None => f.write_str("-"),
        }
    }
}

/// An ICMP echo's identifier, twice, if the message type is one of `echo`.
fn echo_id(icmp: &[u8], echo: [u8; 2]) -> Option<(u16, u16)> {
    let ty = *icmp.first()?;
    let id = icmp.get(4..6).map(|s| u16::from_be_bytes([s[0], s[1]]))?;
    echo.contains(&ty).then_some((id, id))
}

impl DropLog {
    /// The drop log's path beside the counters file `counters`: the same
    /// name with the extension `drops`.
    pub fn beside(counters: &Path) -> PathBuf {
        counters.with_extension("drops")
    }

    /// Opens (creating, appending to) the log at `path` of a process that
    /// reads the TUN `tun`, and writes `start`. A log that cannot be
    /// opened is warned of once, and records nothing.
    pub fn open(path: &Path, tun: &str) -> DropLog {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path);
        let mut log = DropLog {
            file: None,
            tun: tun.to_string(),
            records: 0,
            bytes: 0,
            overflow: 0,
        };
        match file {
            Ok(f) => {
                log.file = Some(f);
                log.line("start\n");
            }
            Err(e) => warn!("opening the drop log {}: {e}", path.display()),
        }
        log
    }

    /// A log that records nothing (and counts nothing).
    pub fn disabled() -> DropLog {
        DropLog {
            file: None,
            tun: String::new(),
            records: 0,
            bytes: 0,
            overflow: 0,
        }
    }

    /// Records that `packet` (read from `via`) was dropped for `reason`.
    pub fn packet(&mut self, via: Via, packet: &[u8], reason: impl Display) {
        match Identity::of(packet) {
            Some(id) => self.record(via, &id, reason),
            None => self.unidentified(reason),
        }
    }

    /// Records a drop, for `reason`, of a packet whose identity is not
    /// known.
    pub fn unidentified(&mut self, reason: impl Display) {
        self.bounded(format!("unidentified {}\n", word(reason)));
    }

    fn record(&mut self, via: Via, id: &Identity, reason: impl Display) {
        let via = match via {
            Via::Tun => format!("tun:{}", self.tun),
            Via::Tunnel => "tunnel".to_string(),
        };
        self.bounded(format!("drop {via} {} {id}\n", word(reason)));
    }

    /// Writes `line` if the bounds allow, else counts it (and marks the
    /// log full once).
    fn bounded(&mut self, line: String) {
        if self.file.is_none() {
            return;
        }
        if self.overflow > 0 || self.records >= MAX_RECORDS || self.bytes + line.len() > MAX_BYTES {
            if self.overflow == 0 {
                self.line("full\n");
            }
            self.overflow += 1;
            return;
        }
        self.records += 1;
        self.bytes += line.len();
        self.line(&line);
    }

    fn line(&mut self, line: &str) {
        if let Some(f) = self.file.as_mut() {
            if let Err(e) = f.write_all(line.as_bytes()) {
                warn!("writing the drop log: {e}; later drops are not recorded");
                self.file = None;
            }
        }
    }

    /// Drops counted past the bounds, not recorded.
    pub fn overflow(&self) -> u64 {
        self.overflow
    }

    /// Writes `end overflow N` (at exit, whatever ended the run).
    pub fn close(mut self) {
        let end = format!("end overflow {}\n", self.overflow);
        self.line(&end);
    }
}

/// `reason` as one word (spaces replaced), so a line splits on spaces.
fn word(reason: impl Display) -> String {
    let r = reason.to_string();
    if r.is_empty() {
        return "-".into();
    }
    r.replace(|c: char| c.is_whitespace(), "_")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4_tcp() -> Vec<u8> {
        let mut p = vec![0u8; 40];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&40u16.to_be_bytes());
        p[4..6].copy_from_slice(&4242u16.to_be_bytes());
        p[8] = 64;
        p[9] = 6;
        p[12..16].copy_from_slice(&[203, 0, 113, 9]);
        p[16..20].copy_from_slice(&[10, 30, 255, 253]);
        p[20..22].copy_from_slice(&40001u16.to_be_bytes());
        p[22..24].copy_from_slice(&8080u16.to_be_bytes());
        p
    }

    #[test]
    fn a_tcp_packet_is_identified_by_addresses_id_and_ports() {
        let id = Identity::of(&v4_tcp()).unwrap();
        assert_eq!(
            id.to_string(),
            "tcp 203.0.113.9 10.30.255.253 4242 40001:8080"
        );
    }

    #[test]
    fn fragments_are_identified_the_first_by_its_ports() {
        // IPv4: the first fragment of a TCP datagram (MF set) has its
        // ports; a later one (an offset) only its protocol's number.
        let mut first = v4_tcp();
        first[6] = 0x20;
        assert_eq!(
            Identity::of(&first).unwrap().to_string(),
            "tcp 203.0.113.9 10.30.255.253 4242 40001:8080"
        );
        let mut later = v4_tcp();
        later[7] = 0xb9;
        assert_eq!(
            Identity::of(&later).unwrap().to_string(),
            "6 203.0.113.9 10.30.255.253 4242 -"
        );
        // IPv6: the fragment header (after a destination-options header)
        // is walked to the transport; the flow label identifies.
        let mut p = vec![0u8; 40];
        p[0] = 0x60;
        p[3] = 9;
        p[6] = 60;
        p[23] = 1;
        p[39] = 2;
        p.extend_from_slice(&[44, 0, 1, 4, 0, 0, 0, 0]);
        p.extend_from_slice(&[17, 0, 0, 1, 0, 0, 0, 5]);
        p.extend_from_slice(&[0x9c, 0x40, 0, 80, 0, 0, 0, 0]);
        assert_eq!(
            Identity::of(&p).unwrap().to_string(),
            "udp ::1 ::2 9 40000:80"
        );
        p[50..52].copy_from_slice(&(1400u16 | 1).to_be_bytes());
        assert_eq!(Identity::of(&p).unwrap().to_string(), "17 ::1 ::2 9 -");
    }

    #[test]
    fn ipv6_echo_is_identified_by_flow_label_and_identifier() {
        let mut p = vec![0u8; 48];
        p[0] = 0x60;
        p[1] = 0x0a;
        p[2] = 0xbc;
        p[3] = 0xde;
        p[6] = 58;
        p[8] = 0x20;
        p[9] = 0x01;
        p[24] = 0x20;
        p[25] = 0x01;
        p[39] = 2;
        p[40] = 128;
        p[44..46].copy_from_slice(&7u16.to_be_bytes());
        assert_eq!(
            Identity::of(&p).unwrap().to_string(),
            format!("icmpv6 2001:: 2001::2 {} 7:7", 0xabcde)
        );
    }

    #[test]
    fn the_log_is_bounded_and_counts_what_it_leaves_out() {
        let dir = std::env::temp_dir().join(format!("hoplab-droplog-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = DropLog::beside(&dir.join("gw.gateway.txt"));
        assert_eq!(path, dir.join("gw.gateway.drops"));
        let _ = std::fs::remove_file(&path);
        let mut log = DropLog::open(&path, "gw0");
        for _ in 0..MAX_RECORDS + 3 {
            log.packet(Via::Tun, &v4_tcp(), "table_full");
        }
        log.unidentified("query failed");
        assert_eq!(log.overflow(), 4);
        log.close();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 1 + MAX_RECORDS + 2);
        assert_eq!(lines[0], "start");
        assert_eq!(
            lines[1],
            "drop tun:gw0 table_full tcp 203.0.113.9 10.30.255.253 4242 40001:8080"
        );
        assert_eq!(lines[MAX_RECORDS + 1], "full");
        assert_eq!(lines[MAX_RECORDS + 2], "end overflow 4");
        // A restarted process appends its own part.
        let mut again = DropLog::open(&path, "gw0");
        again.unidentified("x");
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.ends_with("end overflow 4\nstart\nunidentified x\n"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
