//! Reading a capture back: pcapng (hoplab's own or any tool's: enhanced,
//! simple and obsolete packet blocks) and classic pcap, into frames with
//! their `host/ifname` and direction; and the IP packet inside a frame by
//! its link type (Ethernet, raw IP, BSD loopback, Linux cooked), or why it
//! has none ([`FrameError`]); and the TLS key log of a pcapng's
//! Decryption Secrets Blocks ([`CaptureFile::tls_keys`]). It knows file
//! formats and link layers; it does not know scenarios, flows or hops.
//!
//! A damaged file is read as far as it goes: the file is walked block by
//! block (record by record for pcap), each block's framing checked before
//! its content is parsed, and what is wrong is kept as [`Damage`] with the
//! byte offset of the block. A block whose framing is broken (cut short,
//! lengths that disagree) ends the reading, since nothing after it can be
//! located; a well-framed packet block whose content is bad (an option
//! string that is not UTF-8, an interface never declared) is skipped alone.
//! A damaged section header or interface description also ends the
//! reading: the interfaces of the packets after it would be unknown.

use std::path::Path;

use hoplab_dataplane::wire::{self, Summary};
use pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketOption;
use pcap_file::pcapng::blocks::interface_description::{
    InterfaceDescriptionBlock, InterfaceDescriptionOption,
};
use pcap_file::pcapng::blocks::packet::PacketOption;
use pcap_file::pcapng::{Block, PcapNgParser};
use pcap_file::{DataLink, Endianness, PcapError};

use super::pcapng::{DECRYPTION_SECRETS, TLS_KEY_LOG};
use serde::{Deserialize, Serialize};

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

/// A capture file read as far as it could be: every frame before the
/// damage, and the damage.
#[derive(Debug, Clone, Default)]
pub struct CaptureFile {
    pub frames: Vec<Captured>,
    /// What could not be read, in file order; empty for an intact file.
    pub damage: Vec<Damage>,
    /// The TLS key log of the file's Decryption Secrets Blocks (secrets
    /// type `TLSK`, in NSS key log format), one after the other; empty
    /// when it has none.
    pub tls_keys: Vec<u8>,
    /// The drop verdicts the run stored in the section header's comment
    /// (see [`super::verdicts::Verdicts::to_text`]); `None` when it holds
    /// none. Verdicts that do not read are one unavailable line saying so.
    pub verdicts: Option<super::verdicts::Verdicts>,
}

/// A block (pcapng) or record (pcap) that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Damage {
    /// Byte offset of the block or record in the file.
    pub offset: u64,
    /// What is wrong with it.
    pub reason: String,
    /// Reading stopped there, so nothing after it was read; otherwise
    /// only this block was skipped.
    pub stopped: bool,
}

impl std::fmt::Display for Damage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "byte {}: {}; ", self.offset, self.reason)?;
        f.write_str(if self.stopped {
            "nothing after it was read"
        } else {
            "that block was skipped"
        })
    }
}

/// Why a capture file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{path}: cannot be read")]
    Open {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a capture (neither pcapng nor pcap: the file starts with {magic})")]
    NotACapture { path: String, magic: String },
    #[error("{path}: damaged capture: {damage}")]
    Damaged { path: String, damage: Damage },
}

/// Host name given to interfaces of a capture that does not name them
/// `host/ifname` (a pcap file, or a pcapng written by another tool).
pub const UNNAMED_HOST: &str = "capture";

/// Read every frame of an intact capture (see [`read`]); any damage is an
/// error. For hoplab's own captures, which are never damaged.
pub fn read_capture(path: &Path) -> Result<Vec<Captured>, ReadError> {
    read_whole(path).map(|f| f.frames)
}

/// [`read_capture`], with what the capture holds besides its frames (key
/// log, drop verdicts).
pub fn read_whole(path: &Path) -> Result<CaptureFile, ReadError> {
    let mut file = read(path)?;
    match std::mem::take(&mut file.damage).into_iter().next() {
        None => Ok(file),
        Some(damage) => Err(ReadError::Damaged {
            path: path.display().to_string(),
            damage,
        }),
    }
}

/// Read every frame of a capture with its interface name and direction,
/// up to the damage if the file is damaged: a pcapng (hoplab's own, or any
/// other: interfaces not named `host/ifname` belong to host
/// [`UNNAMED_HOST`]; timestamps scaled by each interface's declared
/// resolution) or a classic pcap file (one interface, `capture/if0`).
/// Directions come from the pcapng flags word or, for Linux cooked
/// captures (`tcpdump -i any`), the packet type. Errors only when the file
/// cannot be read or is not a capture at all.
pub fn read(path: &Path) -> Result<CaptureFile, ReadError> {
    let p = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|source| ReadError::Open {
        path: p.clone(),
        source,
    })?;
    read_bytes(&bytes).ok_or_else(|| ReadError::NotACapture {
        path: p,
        magic: if bytes.is_empty() {
            "nothing: it is empty".into()
        } else {
            bytes.iter().take(4).map(|b| format!("{b:02x}")).collect()
        },
    })
}

/// The frames of a capture in memory, as [`read`] reads a file; `None`
/// when the bytes start with neither the pcapng nor a pcap magic number.
pub fn read_bytes(bytes: &[u8]) -> Option<CaptureFile> {
    let mut out = CaptureFile::default();
    match bytes.get(..4)? {
        [0x0a, 0x0d, 0x0d, 0x0a] => read_ng(bytes, &mut out),
        [0xa1, 0xb2, 0xc3, 0xd4]
        | [0xd4, 0xc3, 0xb2, 0xa1]
        | [0xa1, 0xb2, 0x3c, 0x4d]
        | [0x4d, 0x3c, 0xb2, 0xa1] => read_pcap(bytes, &mut out),
        _ => return None,
    }
    Some(out)
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

/// The 32-bit word at `at` of `b` in the given byte order, if `b` has it.
fn word(b: &[u8], at: usize, little: bool) -> Option<u32> {
    let w: [u8; 4] = b.get(at..at.checked_add(4)?)?.try_into().ok()?;
    Some(if little {
        u32::from_le_bytes(w)
    } else {
        u32::from_be_bytes(w)
    })
}

/// A classic pcap: the file header, then records of a 16-byte header and
/// the frame. A record that is cut short or claims an implausible length
/// ends the reading (a pcap has no other way to find the next record).
fn read_pcap(bytes: &[u8], out: &mut CaptureFile) {
    let stop = |out: &mut CaptureFile, offset: usize, reason: String| {
        out.damage.push(Damage {
            offset: offset as u64,
            reason,
            stopped: true,
        })
    };
    let (mut rest, parser) = match pcap_file::pcap::PcapParser::new(bytes) {
        Ok(p) => p,
        Err(e) => {
            let reason = match e {
                PcapError::IncompleteBuffer => format!(
                    "the file ends {} bytes into the 24-byte pcap file header",
                    bytes.len()
                ),
                e => format!("pcap file header: {}", describe(&e)),
            };
            return stop(out, 0, reason);
        }
    };
    let header = parser.header();
    let little = header.endianness == Endianness::Little;
    let nano = header.ts_resolution == pcap_file::TsResolution::NanoSecond;
    // libpcap's own bound on a record, or the file's snapshot length if larger.
    let most = header.snaplen.max(262_144);
    while !rest.is_empty() {
        let offset = bytes.len() - rest.len();
        let Some(len) = word(rest, 8, little) else {
            let n = rest.len();
            return stop(
                out,
                offset,
                format!("the file ends {n} bytes into the 16-byte header of this record"),
            );
        };
        if len > most {
            return stop(
                out,
                offset,
                format!(
                    "record length {len} is more than a frame can be (snapshot length {})",
                    header.snaplen
                ),
            );
        }
        let (next, raw) = match parser.next_raw_packet(rest) {
            Ok(r) => r,
            Err(_) => {
                let (n, len) = (rest.len(), u64::from(len) + 16);
                return stop(
                    out,
                    offset,
                    format!("the file ends {n} bytes into this {len}-byte record"),
                );
            }
        };
        let frac = u64::from(raw.ts_frac) * if nano { 1 } else { 1000 };
        out.frames.push(Captured {
            ts_ns: u64::from(raw.ts_sec) * 1_000_000_000 + frac,
            host: UNNAMED_HOST.into(),
            ifname: "if0".into(),
            outgoing: cooked_outgoing(header.datalink, &raw.data),
            data: raw.data.to_vec(),
            link: header.datalink,
        });
        rest = next;
    }
}

/// An interface of a pcapng section, as its packets need it.
struct If {
    host: String,
    ifname: String,
    link: DataLink,
    /// Bytes kept of a frame; 0: no limit.
    snaplen: u32,
    /// Nanoseconds per timestamp unit, or units per nanosecond when finer
    /// than ns (`div`).
    mul: u64,
    div: u64,
}

impl If {
    /// Interface number `n` of its section, as `idb` declares it.
    fn of(idb: &InterfaceDescriptionBlock, n: usize) -> If {
        let mut name = None;
        let mut resol = 6u8; // the pcapng default: microseconds
        for o in &idb.options {
            match o {
                InterfaceDescriptionOption::IfName(n) => name = Some(n.to_string()),
                InterfaceDescriptionOption::IfTsResol(r) => resol = *r,
                _ => {}
            }
        }
        let name = name.unwrap_or_else(|| format!("if{n}"));
        let (host, ifname) = match name.split_once('/') {
            Some((h, i)) if !h.is_empty() && !i.is_empty() => (h.to_string(), i.to_string()),
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
        If {
            host,
            ifname,
            link: idb.linktype,
            snaplen: idb.snaplen,
            mul,
            div,
        }
    }

    /// A frame of this interface: `raw_ts` in the interface's units, the
    /// direction from the flags word if it gives one.
    fn frame(&self, raw_ts: u128, data: &[u8], flags: Option<u32>) -> Captured {
        let outgoing = match flags {
            Some(f) if f & 3 != 0 => f & 3 == 2,
            _ => cooked_outgoing(self.link, data),
        };
        Captured {
            ts_ns: (raw_ts.saturating_mul(u128::from(self.mul)) / u128::from(self.div)) as u64,
            host: self.host.clone(),
            ifname: self.ifname.clone(),
            outgoing,
            data: data.to_vec(),
            link: self.link,
        }
    }
}

const SECTION_HEADER: u32 = 0x0A0D_0D0A;
const INTERFACE_DESCRIPTION: u32 = 1;

/// What a pcapng block of type `ty` is called, for a reason.
fn block_name(ty: u32) -> String {
    match ty {
        SECTION_HEADER => "section header block".into(),
        INTERFACE_DESCRIPTION => "interface description block".into(),
        2 => "packet block".into(),
        3 => "simple packet block".into(),
        4 => "name resolution block".into(),
        5 => "interface statistics block".into(),
        6 => "enhanced packet block".into(),
        DECRYPTION_SECRETS => "decryption secrets block".into(),
        ty => format!("block of type {ty:#x}"),
    }
}

/// What is wrong, in words, from the parser's error.
fn describe(e: &PcapError) -> String {
    match e {
        PcapError::IncompleteBuffer => "its content is cut short".into(),
        PcapError::InvalidField(f) => format!("invalid field ({f})"),
        PcapError::Utf8Error(e) => format!("a text option is not UTF-8 ({e})"),
        PcapError::FromUtf8Error(e) => format!("a text option is not UTF-8 ({})", e.utf8_error()),
        PcapError::InvalidInterfaceId(id) => format!("interface {id} is not declared"),
        PcapError::IoError(e) => e.to_string(),
    }
}

/// The length of the well-framed pcapng block at the start of `rest`
/// (in a section of the given byte order), or why it is not one: cut
/// short, a length that is no block's, or a trailing length that differs.
fn block_len(rest: &[u8], little: bool) -> Result<usize, String> {
    let n = rest.len();
    let cut = |what: &str| format!("the file ends {n} bytes into {what}");
    let Some(ty) = word(rest, 0, little) else {
        return Err(cut("a block header"));
    };
    let kind = block_name(ty);
    // A section header declares its own byte order.
    let little = match (ty, word(rest, 8, false)) {
        (SECTION_HEADER, Some(0x1A2B_3C4D)) => false,
        (SECTION_HEADER, Some(0x4D3C_2B1A)) => true,
        (SECTION_HEADER, Some(m)) => {
            return Err(format!("{kind} with an unknown byte-order magic {m:#010x}"))
        }
        (SECTION_HEADER, None) => return Err(cut(&format!("the header of this {kind}"))),
        _ => little,
    };
    let Some(len) = word(rest, 4, little) else {
        return Err(cut(&format!("the header of this {kind}")));
    };
    if len < 12 || len % 4 != 0 {
        return Err(format!(
            "{kind} of length {len}, which is not a multiple of 4 of at least 12"
        ));
    }
    let len = len as usize;
    if len > n {
        return Err(cut(&format!("this {len}-byte {kind}")));
    }
    match word(rest, len - 4, little) {
        Some(t) if t as usize == len => Ok(len),
        t => Err(format!(
            "{kind} of length {len} ends with length {}",
            t.unwrap_or_default()
        )),
    }
}

/// A pcapng, block by block; see the module's doc for what damage does.
fn read_ng(bytes: &[u8], out: &mut CaptureFile) {
    let mut rest = bytes;
    let mut parser: Option<PcapNgParser> = None;
    let mut ifaces: Vec<If> = Vec::new();
    while !rest.is_empty() {
        let offset = (bytes.len() - rest.len()) as u64;
        let little = parser
            .as_ref()
            .is_some_and(|p| p.section().endianness == Endianness::Little);
        let mut damage = |reason: String, stopped: bool| {
            out.damage.push(Damage {
                offset,
                reason,
                stopped,
            })
        };
        let len = match block_len(rest, little) {
            Ok(len) => len,
            Err(reason) => return damage(reason, true),
        };
        let (block, next) = rest.split_at(len);
        rest = next;
        let ty = word(block, 0, little).unwrap_or_default();
        let parsed = match parser.as_mut() {
            Some(p) => p.next_block(block).map(|(_, b)| Some(b)),
            None => PcapNgParser::new(block).map(|(_, p)| {
                out.verdicts = section_verdicts(p.section());
                parser = Some(p);
                None
            }),
        };
        let skipped = match parsed {
            Ok(Some(Block::Unknown(b))) if b.type_ == DECRYPTION_SECRETS => {
                secrets(&b.value, little, &mut out.tls_keys).err()
            }
            Ok(Some(b)) => take(b, &mut ifaces, &mut out.frames).err(),
            Ok(None) => None,
            // Without its interfaces, no packet after it can be placed.
            Err(e) if matches!(ty, SECTION_HEADER | INTERFACE_DESCRIPTION) => {
                return damage(format!("{}: {}", block_name(ty), describe(&e)), true)
            }
            Err(e) => Some(format!("{}: {}", block_name(ty), describe(&e))),
        };
        if let Some(reason) = skipped {
            damage(reason, false);
        }
    }
}

/// The verdicts among a section header's comments, if one holds them.
fn section_verdicts(
    shb: &pcap_file::pcapng::blocks::section_header::SectionHeaderBlock,
) -> Option<super::verdicts::Verdicts> {
    use super::verdicts::Verdicts;
    use pcap_file::pcapng::blocks::section_header::SectionHeaderOption;
    let comments = shb.options.iter().filter_map(|o| match o {
        SectionHeaderOption::Comment(c) => Some(c.as_ref()),
        _ => None,
    });
    Verdicts::from_comments(comments).map(|r| {
        r.unwrap_or_else(|e| {
            let mut v = Verdicts::default();
            v.unavailable
                .push(format!("the capture's drop verdicts do not read: {e}"));
            v
        })
    })
}

/// The secrets of a Decryption Secrets Block's body (in a section of the
/// given byte order) onto `keys`, if they are a TLS key log; other kinds
/// of secrets are left out. `Err`: why the block was skipped.
fn secrets(body: &[u8], little: bool, keys: &mut Vec<u8>) -> Result<(), String> {
    let (Some(ty), Some(len)) = (word(body, 0, little), word(body, 4, little)) else {
        return Err("decryption secrets block: its content is cut short".into());
    };
    let Some(data) = body.get(8..8 + len as usize) else {
        return Err(format!(
            "decryption secrets block: {len} bytes of secrets in a body of {}",
            body.len()
        ));
    };
    if ty == TLS_KEY_LOG {
        keys.extend_from_slice(data);
        if !keys.ends_with(b"\n") {
            keys.push(b'\n');
        }
    }
    Ok(())
}

/// Take in one parsed block: a new section, an interface, or a packet
/// (its frame onto `frames`). `Err`: why the block was skipped.
fn take(block: Block, ifaces: &mut Vec<If>, frames: &mut Vec<Captured>) -> Result<(), String> {
    let iface = |id: u32, kind: &str| {
        ifaces
            .get(id as usize)
            .ok_or_else(|| format!("{kind} on interface {id}, which is not declared"))
    };
    match block {
        // A new section declares its interfaces afresh.
        Block::SectionHeader(_) => ifaces.clear(),
        Block::InterfaceDescription(idb) => ifaces.push(If::of(&idb, ifaces.len())),
        Block::EnhancedPacket(epb) => {
            let i = iface(epb.interface_id, "enhanced packet block")?;
            let flags = epb.options.iter().find_map(|o| match o {
                EnhancedPacketOption::Flags(f) => Some(*f),
                _ => None,
            });
            // The raw units, as read.
            frames.push(i.frame(epb.timestamp.as_nanos(), &epb.data, flags));
        }
        Block::Packet(pb) => {
            let i = iface(u32::from(pb.interface_id), "packet block")?;
            let flags = pb.options.iter().find_map(|o| match o {
                PacketOption::Flags(f) => Some(*f),
                _ => None,
            });
            frames.push(i.frame(u128::from(pb.timestamp), &pb.data, flags));
        }
        // No timestamp, interface 0; the data padded to 32 bits.
        Block::SimplePacket(spb) => {
            let i = iface(0, "simple packet block")?;
            let mut n = (spb.original_len as usize).min(spb.data.len());
            if i.snaplen > 0 {
                n = n.min(i.snaplen as usize);
            }
            frames.push(i.frame(0, &spb.data[..n], None));
        }
        _ => {}
    }
    Ok(())
}

/// Why the packet in a frame could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// A link type hoplab does not decode.
    #[error("link type {} is not supported", link_name(*.0))]
    Unsupported(DataLink),
    /// Not a well-formed frame of its link type.
    #[error("{0}")]
    Malformed(String),
}

/// The link types [`parse_frame`] decodes, in words.
pub const DECODED_LINKS: &str =
    "Ethernet, raw IP, BSD loopback and Linux cooked (SLL, SLL2) frames";

/// A link type's name, e.g. `IEEE802_11`; its number if it has none.
pub fn link_name(link: DataLink) -> String {
    match link {
        DataLink::Unknown(n) => n.to_string(),
        l => format!("{l:?}"),
    }
}

/// The IP packet in `f`, by its link type: `Ok(None)` for frames that
/// carry no IP (ARP...), `Err` for what cannot be decoded.
pub fn parse_frame(f: &Captured) -> Result<Option<Summary>, FrameError> {
    let bad = |e: wire::WireError| FrameError::Malformed(e.to_string());
    let truncated = |what: &str| Err(FrameError::Malformed(format!("truncated {what} header")));
    let ip = |d: &[u8]| wire::parse_ip(d).map(Some).map_err(bad);
    // Link types whose header ends with an EtherType: (header length,
    // offset of the EtherType).
    let cooked = match f.link {
        DataLink::ETHERNET => return wire::parse_ethernet(&f.data).map_err(bad),
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
                None => truncated("loopback"),
            }
        }
        DataLink::LINUX_SLL => (16, 14),
        DataLink::LINUX_SLL2 => (20, 0),
        other => return Err(FrameError::Unsupported(other)),
    };
    let (hlen, at) = cooked;
    let Some(et) = f.data.get(at..at + 2) else {
        return truncated("cooked-capture");
    };
    match u16::from_be_bytes([et[0], et[1]]) {
        0x0800 | 0x86dd if f.data.len() >= hlen => ip(&f.data[hlen..]),
        0x0800 | 0x86dd => truncated("cooked-capture"),
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
        let e = parse_frame(&odd).unwrap_err();
        assert_eq!(e, FrameError::Unsupported(DataLink::IEEE802_11));
        assert_eq!(e.to_string(), "link type IEEE802_11 is not supported");
        assert_eq!(link_name(DataLink::from(4242)), "4242");
    }

    /// hoplab's own pcapng of a few frames on two interfaces, as bytes,
    /// and the offset of each block.
    fn written(tag: &str) -> (Vec<u8>, Vec<usize>) {
        use crate::capture::{write_pcapng, Frame, Iface};
        let ifaces: Vec<Iface> = ["a/eth0", "b/eth0"]
            .iter()
            .map(|l| {
                let (host, ifname) = l.split_once('/').unwrap();
                Iface {
                    host: host.into(),
                    ifname: ifname.into(),
                    link: DataLink::ETHERNET,
                }
            })
            .collect();
        let frames: Vec<Frame> = (0..6u8)
            .map(|i| Frame {
                ts_ns: 1_000 + u64::from(i),
                iface: u32::from(i % 2),
                outgoing: i % 3 == 0,
                data: vec![i; 14 + usize::from(i)],
            })
            .collect();
        let comments: Vec<Option<String>> = (0..6).map(|i| Some(format!("frame {i}"))).collect();
        let path =
            std::env::temp_dir().join(format!("hoplab-read-{tag}-{}.pcapng", std::process::id()));
        write_pcapng(&path, "t", &ifaces, &frames, &comments, &[]).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        let mut starts = Vec::new();
        let mut at = 0;
        while at < bytes.len() {
            starts.push(at);
            at += word(&bytes, at + 4, false).unwrap() as usize;
        }
        (bytes, starts)
    }

    /// Cut after any byte: every frame of a whole block before the cut,
    /// the damage at the start of the cut block; never a panic.
    #[test]
    fn a_pcapng_cut_anywhere_keeps_the_frames_before_the_cut() {
        let (bytes, starts) = written("cut");
        let full = read_bytes(&bytes).unwrap();
        assert!(full.damage.is_empty());
        assert_eq!(full.frames.len(), 6);
        assert_eq!(full.frames[1].host, "b");
        for n in 4..bytes.len() {
            let got = read_bytes(&bytes[..n]).unwrap();
            // Blocks 0..k are whole; block k is cut, or the cut is at its start.
            let k = starts.iter().filter(|&&s| s <= n).count() - 1;
            let block = starts[k];
            // The blocks: section header, two interfaces, then the frames.
            let kept = k.saturating_sub(3);
            assert_eq!(got.frames.len(), kept, "cut at {n}");
            for (a, b) in got.frames.iter().zip(&full.frames) {
                assert_eq!((a.ts_ns, &a.data), (b.ts_ns, &b.data));
            }
            if n == block {
                assert!(got.damage.is_empty(), "cut at {n}: {:?}", got.damage);
            } else {
                assert_eq!(got.damage.len(), 1, "cut at {n}");
                let d = &got.damage[0];
                assert_eq!((d.offset, d.stopped), (block as u64, true), "cut at {n}");
                let why = format!("the file ends {} bytes into ", n - block);
                assert!(d.reason.starts_with(&why), "cut at {n}: {}", d.reason);
            }
        }
        assert!(read_bytes(&bytes[..3]).is_none());
    }

    /// Any one byte changed: no panic, and damage, if any, is named at the
    /// start of a block.
    #[test]
    fn a_pcapng_with_any_byte_changed_is_read_without_panic() {
        let (bytes, starts) = written("changed");
        for i in 0..bytes.len() {
            for x in [0xff, 0x80, 0x01] {
                let mut bad = bytes.clone();
                bad[i] ^= x;
                let Some(got) = read_bytes(&bad) else {
                    assert!(i < 4);
                    continue;
                };
                assert!(got.frames.len() <= 6);
                for d in &got.damage {
                    assert!(
                        starts.contains(&(d.offset as usize)),
                        "byte {i} ^ {x:#x}: {d}"
                    );
                }
            }
        }
    }

    /// A packet on an interface never declared is skipped alone.
    #[test]
    fn a_packet_on_an_undeclared_interface_is_skipped_alone() {
        let (mut bytes, starts) = written("iface");
        // The third packet block's interface id (big-endian, after type and length).
        let at = starts[5] + 8;
        bytes[at..at + 4].copy_from_slice(&7u32.to_be_bytes());
        let got = read_bytes(&bytes).unwrap();
        assert_eq!(got.frames.len(), 5);
        assert_eq!(
            got.damage,
            [Damage {
                offset: starts[5] as u64,
                reason: "enhanced packet block on interface 7, which is not declared".into(),
                stopped: false,
            }]
        );
        assert_eq!(
            got.damage[0].to_string(),
            format!(
                "byte {}: enhanced packet block on interface 7, which is not declared; \
                 that block was skipped",
                starts[5]
            )
        );
    }

    /// A big-endian pcap in microseconds: timestamps scaled; a record
    /// that claims more than any frame ends the reading there.
    #[test]
    fn a_pcap_record_of_implausible_length_ends_the_reading() {
        let mut b = vec![0xa1, 0xb2, 0xc3, 0xd4, 0, 2, 0, 4];
        for w in [0u32, 0, 65535, 1] {
            b.extend(w.to_be_bytes());
        }
        for (len, data) in [(14u32, vec![7u8; 14]), (0x7fff_ffff, vec![7; 40])] {
            for w in [5u32, 250_000, len, len] {
                b.extend(w.to_be_bytes());
            }
            b.extend(data);
        }
        let got = read_bytes(&b).unwrap();
        assert_eq!(got.frames.len(), 1);
        assert_eq!(got.frames[0].ts_ns, 5_250_000_000);
        assert_eq!(
            (got.frames[0].host.as_str(), got.frames[0].link),
            ("capture", DataLink::ETHERNET)
        );
        assert_eq!(
            got.damage,
            [Damage {
                offset: 24 + 16 + 14,
                reason:
                    "record length 2147483647 is more than a frame can be (snapshot length 65535)"
                        .into(),
                stopped: true,
            }]
        );
    }

    /// Simple and (obsolete) packet blocks are read too: the simple one on
    /// interface 0 without its padding, the other with its interface,
    /// timestamp and direction.
    #[test]
    fn simple_and_obsolete_packet_blocks_are_read() {
        use pcap_file::pcapng::blocks::packet::PacketBlock;
        use pcap_file::pcapng::blocks::simple_packet::SimplePacketBlock;
        use pcap_file::pcapng::PcapNgWriter;
        let mut w = PcapNgWriter::new(Vec::new()).unwrap();
        for name in ["a/eth0", "b/eth0"] {
            w.write_pcapng_block(InterfaceDescriptionBlock {
                linktype: DataLink::ETHERNET,
                snaplen: 0,
                options: vec![InterfaceDescriptionOption::IfName(name.into())],
            })
            .unwrap();
        }
        w.write_pcapng_block(SimplePacketBlock {
            original_len: 15,
            data: vec![1u8; 15].into(),
        })
        .unwrap();
        w.write_pcapng_block(PacketBlock {
            interface_id: 1,
            drop_count: 0,
            timestamp: 3,
            captured_len: 14,
            original_len: 14,
            data: vec![2u8; 14].into(),
            options: vec![PacketOption::Flags(2)],
        })
        .unwrap();
        let got = read_bytes(&w.into_inner()).unwrap();
        assert!(got.damage.is_empty(), "{:?}", got.damage);
        let seen: Vec<_> = (got.frames.iter())
            .map(|f| (f.host.as_str(), f.ts_ns, f.outgoing, f.data.clone()))
            .collect();
        assert_eq!(
            seen,
            [
                ("a", 0, false, vec![1; 15]),
                ("b", 3_000, true, vec![2; 14])
            ]
        );
    }
}
