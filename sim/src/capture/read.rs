//! Reading a capture back: pcapng (hoplab's own or any tool's) and classic
//! pcap, into frames with their `host/ifname` and direction; and the IP
//! packet inside a frame by its link type (Ethernet, raw IP, BSD loopback,
//! Linux cooked). It knows file formats and link layers; it does not know
//! scenarios, flows or hops.

use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use hoplab_dataplane::wire::{self, Summary};
use pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketOption;
use pcap_file::pcapng::blocks::interface_description::InterfaceDescriptionOption;
use pcap_file::pcapng::{Block, PcapNgReader};
use pcap_file::DataLink;

/// A frame read back from a pcapng.
#[derive(Debug, Clone)]
pub struct Captured {
    pub ts_ns: u64,
    pub host: String,
    pub ifname: String,
    pub outgoing: bool,
    pub data: Vec<u8>,
    pub link: DataLink,
}

/// Why a capture file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{path}: {source}")]
    Open {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a readable pcapng or pcap file: {source}")]
    Pcap {
        path: String,
        #[source]
        source: pcap_file::PcapError,
    },
    #[error("{path}: not a capture (neither pcapng nor pcap: the file starts with {magic})")]
    NotACapture { path: String, magic: String },
    #[error("{path}: packet refers to interface {id}, which is not declared")]
    NoInterface { path: String, id: u32 },
}

/// Host name given to interfaces of a capture that does not name them
/// `host/ifname` (a pcap file, or a pcapng written by another tool).
pub const UNNAMED_HOST: &str = "capture";

/// Read every frame of a capture with its interface name and direction:
/// a pcapng (hoplab's own, or any other: interfaces not named
/// `host/ifname` belong to host [`UNNAMED_HOST`]; timestamps scaled by each
/// interface's declared resolution) or a classic pcap file (one interface,
/// `capture/if0`). Directions come from the pcapng flags word or, for
/// Linux cooked captures (`tcpdump -i any`), the packet type.
pub fn read_capture(path: &Path) -> Result<Vec<Captured>, ReadError> {
    use std::io::Read;
    let p = path.display().to_string();
    let open = || {
        File::open(path).map_err(|source| ReadError::Open {
            path: p.clone(),
            source,
        })
    };
    let mut magic = [0u8; 4];
    let n = open()?.read(&mut magic).map_err(|source| ReadError::Open {
        path: p.clone(),
        source,
    })?;
    let magic = &magic[..n];
    let pcap_err = |source| ReadError::Pcap {
        path: p.clone(),
        source,
    };
    let mut out = Vec::new();
    if magic == [0x0a, 0x0d, 0x0d, 0x0a] {
        read_ng(&p, BufReader::new(open()?), &mut out)?;
    } else if matches!(
        magic,
        [0xa1, 0xb2, 0xc3, 0xd4]
            | [0xd4, 0xc3, 0xb2, 0xa1]
            | [0xa1, 0xb2, 0x3c, 0x4d]
            | [0x4d, 0x3c, 0xb2, 0xa1]
    ) {
        let mut r = pcap_file::pcap::PcapReader::new(BufReader::new(open()?)).map_err(pcap_err)?;
        let link = r.header().datalink;
        while let Some(pkt) = r.next_packet() {
            let pkt = pkt.map_err(pcap_err)?;
            out.push(Captured {
                ts_ns: pkt.timestamp.as_nanos() as u64,
                host: UNNAMED_HOST.into(),
                ifname: "if0".into(),
                outgoing: cooked_outgoing(link, &pkt.data),
                data: pkt.data.to_vec(),
                link,
            });
        }
    } else {
        return Err(ReadError::NotACapture {
            path: p,
            magic: magic.iter().map(|b| format!("{b:02x}")).collect(),
        });
    }
    Ok(out)
}

/// Whether a Linux cooked-capture frame was sent by the host.
pub(crate) fn cooked_outgoing(link: DataLink, data: &[u8]) -> bool {
    const PACKET_OUTGOING: u8 = 4;
    match link {
        DataLink::LINUX_SLL => data.get(1) == Some(&PACKET_OUTGOING),
        DataLink::LINUX_SLL2 => data.get(10) == Some(&PACKET_OUTGOING),
        _ => false,
    }
}

fn read_ng(p: &str, reader: BufReader<File>, out: &mut Vec<Captured>) -> Result<(), ReadError> {
    let pcap_err = |source| ReadError::Pcap {
        path: p.to_string(),
        source,
    };
    let mut r = PcapNgReader::new(reader).map_err(pcap_err)?;
    struct If {
        host: String,
        ifname: String,
        link: DataLink,
        /// Nanoseconds per timestamp unit, or units per nanosecond when
        /// finer than ns (`div`).
        mul: u64,
        div: u64,
    }
    let mut ifaces: Vec<If> = Vec::new();
    while let Some(b) = r.next_block() {
        match b.map_err(pcap_err)? {
            // A new section declares its interfaces afresh.
            Block::SectionHeader(_) => ifaces.clear(),
            Block::InterfaceDescription(idb) => {
                let mut name = None;
                let mut resol = 6u8; // the pcapng default: microseconds
                for o in &idb.options {
                    match o {
                        InterfaceDescriptionOption::IfName(n) => name = Some(n.to_string()),
                        InterfaceDescriptionOption::IfTsResol(r) => resol = *r,
                        _ => {}
                    }
                }
                let name = name.unwrap_or_else(|| format!("if{}", ifaces.len()));
                let (host, ifname) = match name.split_once('/') {
                    Some((h, i)) if !h.is_empty() && !i.is_empty() => {
                        (h.to_string(), i.to_string())
                    }
                    _ => (UNNAMED_HOST.to_string(), name),
                };
                // Units of 10^-n s, or of 2^-n s with the high bit set.
                let (mul, div) = if resol & 0x80 == 0 {
                    let n = u32::from(resol.min(19));
                    if n <= 9 {
                        (10u64.pow(9 - n), 1)
                    } else {
                        (1, 10u64.pow(n - 9))
                    }
                } else {
                    (1_000_000_000, 1u64 << u32::from((resol & 0x7f).min(63)))
                };
                ifaces.push(If {
                    host,
                    ifname,
                    link: idb.linktype,
                    mul,
                    div,
                });
            }
            Block::EnhancedPacket(epb) => {
                let Some(i) = ifaces.get(epb.interface_id as usize) else {
                    return Err(ReadError::NoInterface {
                        path: p.to_string(),
                        id: epb.interface_id,
                    });
                };
                let flags = epb.options.iter().find_map(|o| match o {
                    EnhancedPacketOption::Flags(f) => Some(*f),
                    _ => None,
                });
                let outgoing = match flags {
                    Some(f) if f & 3 != 0 => f & 3 == 2,
                    _ => cooked_outgoing(i.link, &epb.data),
                };
                let raw = epb.timestamp.as_nanos(); // the raw units, as read
                let ts_ns = (raw.saturating_mul(u128::from(i.mul)) / u128::from(i.div)) as u64;
                out.push(Captured {
                    ts_ns,
                    host: i.host.clone(),
                    ifname: i.ifname.clone(),
                    outgoing,
                    data: epb.data.to_vec(),
                    link: i.link,
                });
            }
            _ => {}
        }
    }
    Ok(())
}

/// The IP packet in `f`, by its link type: `Ok(None)` for frames that
/// carry no IP (ARP...), `Err` for what cannot be decoded.
pub fn parse_frame(f: &Captured) -> Result<Option<Summary>, String> {
    let ip = |d: &[u8]| wire::parse_ip(d).map(Some).map_err(|e| e.to_string());
    // Link types whose header ends with an EtherType: (header length,
    // offset of the EtherType).
    let cooked = match f.link {
        DataLink::ETHERNET => return wire::parse_ethernet(&f.data).map_err(|e| e.to_string()),
        DataLink::RAW | DataLink::IPV4 | DataLink::IPV6 => return ip(&f.data),
        // BSD loopback: a 4-byte address family, in either byte order.
        DataLink::NULL | DataLink::LOOP => {
            return match f.data.get(..4) {
                Some(fam) => match u32::from_le_bytes(fam.try_into().expect("4 bytes")) {
                    2 | 0x0200_0000 | 24 | 28 | 30 | 0x1800_0000 | 0x1c00_0000 | 0x1e00_0000 => {
                        ip(&f.data[4..])
                    }
                    _ => Ok(None),
                },
                None => Err("truncated loopback header".into()),
            }
        }
        DataLink::LINUX_SLL => (16, 14),
        DataLink::LINUX_SLL2 => (20, 0),
        other => return Err(format!("link type {other:?} is not supported")),
    };
    let (hlen, at) = cooked;
    let Some(et) = f.data.get(at..at + 2) else {
        return Err("truncated cooked-capture header".into());
    };
    match u16::from_be_bytes([et[0], et[1]]) {
        0x0800 | 0x86dd if f.data.len() >= hlen => ip(&f.data[hlen..]),
        0x0800 | 0x86dd => Err("truncated cooked-capture header".into()),
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use etherparse::PacketBuilder;

    use super::*;

    fn frame(at: &str, out: bool, data: Vec<u8>) -> Captured {
        let (host, ifname) = at.split_once('/').unwrap();
        Captured {
            ts_ns: 0,
            host: host.into(),
            ifname: ifname.into(),
            outgoing: out,
            data,
            link: DataLink::ETHERNET,
        }
    }

    /// Linux cooked captures (`tcpdump -i any`, SLL and SLL2) carry IP
    /// after their own header; the packet type gives the direction.
    #[test]
    fn cooked_captures_are_decoded_with_their_direction() {
        let ip = {
            let mut v = Vec::new();
            PacketBuilder::ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
                .tcp(40000, 80, 5000, 1000)
                .syn()
                .write(&mut v, &[])
                .unwrap();
            v
        };
        let mut sll = vec![0, 4, 0, 1, 0, 6, 2, 2, 2, 2, 2, 2, 0, 0, 0x08, 0x00];
        sll.extend(&ip);
        let mut sll2 = vec![
            0x08, 0x00, 0, 0, 0, 0, 0, 3, 0, 1, 0, 6, 2, 2, 2, 2, 2, 2, 0, 0,
        ];
        sll2.extend(&ip);
        for (link, data, out) in [
            (DataLink::LINUX_SLL, sll, true),
            (DataLink::LINUX_SLL2, sll2, false),
        ] {
            assert_eq!(cooked_outgoing(link, &data), out, "{link:?}");
            let f = Captured {
                link,
                ..frame("any/any", out, data)
            };
            let s = parse_frame(&f).unwrap().unwrap();
            assert_eq!(s.dst, IpAddr::from([10, 0, 0, 2]));
        }
        // An ARP frame in SLL: not IP; a link type hoplab cannot read: an error.
        let mut arp = vec![0u8; 16];
        arp[14..16].copy_from_slice(&[0x08, 0x06]);
        let arp = Captured {
            link: DataLink::LINUX_SLL,
            ..frame("any/any", false, arp)
        };
        assert!(parse_frame(&arp).unwrap().is_none());
        let odd = Captured {
            link: DataLink::IEEE802_11,
            ..frame("w/wlan0", false, vec![0; 40])
        };
        assert!(parse_frame(&odd).unwrap_err().contains("not supported"));
    }
}
