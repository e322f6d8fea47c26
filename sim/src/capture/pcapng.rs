//! The pcapng hoplab writes: one interface block per `host/ifname`
//! (nanosecond resolution), one enhanced packet block per frame with its
//! direction and, where the trace gives one, a comment naming the frame's
//! flow and hop; before the first packet, the run's TLS key log as a
//! Decryption Secrets Block (so Wireshark, tshark and `hoplab trace` read
//! the HTTP inside TLS with no settings); the run's drop verdicts as a
//! second section comment ([`Verdicts::to_text`], read back by
//! [`super::read`], so `hoplab trace` on the capture alone places the same
//! drops as the run); and beside it one file per
//! interface ([`write_per_interface`]), in which Wireshark's TCP analysis
//! sees each packet once (in the merged file, every copy of a packet on the
//! next interface reads as a retransmission). It knows the frame format of
//! a live capture; it does not know how a trace is built, only the comments
//! and secrets it is handed.

use std::fs::File;
use std::io::BufWriter;
use std::path::Path;
use std::time::Duration;

use pcap_file::pcapng::blocks::enhanced_packet::{EnhancedPacketBlock, EnhancedPacketOption};
use pcap_file::pcapng::blocks::interface_description::{
    InterfaceDescriptionBlock, InterfaceDescriptionOption,
};
use pcap_file::pcapng::blocks::section_header::SectionHeaderBlock;
use pcap_file::pcapng::blocks::unknown::UnknownBlock;
use pcap_file::pcapng::PcapNgWriter;

use super::verdicts::Verdicts;
use super::{Frame, Iface, SNAPLEN};

/// The folder, beside the merged capture, of the per-interface captures.
pub const PER_INTERFACE_DIR: &str = "interfaces";

/// The section comment: the scenario, and how to read the capture right.
fn section_comment(scenario: &str) -> String {
    format!(
        "hoplab scenario {scenario}. Every interface of the run is in this one file, so \
         Wireshark's TCP analysis takes each copy of a packet on the next interface for a \
         retransmission: analyse TCP in {PER_INTERFACE_DIR}/HOST.IFNAME.pcapng beside it (one \
         interface each). The tunnel (UDP port 50103) decodes as IP with the hoplab profile \
         (cargo xtask wireshark-profile, then Edit > Configuration Profiles > hoplab, or \
         tshark -C hoplab), or with -d udp.port==50103,ip."
    )
}

/// The file name of interface `i`'s own capture: `HOST.IFNAME.pcapng`.
pub fn per_interface_name(i: &Iface) -> String {
    format!("{}.{}.pcapng", i.host, i.ifname)
}

/// Write one pcapng per interface that has frames into `dir` (created),
/// named [`per_interface_name`]: the same frames and comments as the
/// merged capture, that interface's only, and the same key log. Files of
/// an earlier run in `dir` are removed first.
pub fn write_per_interface(
    dir: &Path,
    scenario: &str,
    ifaces: &[Iface],
    frames: &[Frame],
    comments: &[Option<String>],
    (tls_keys, verdicts): (&[u8], Option<&Verdicts>),
) -> Result<(), pcap_file::PcapError> {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).map_err(pcap_file::PcapError::IoError)?;
    for (k, iface) in ifaces.iter().enumerate() {
        let mut own = Vec::new();
        let mut own_comments = Vec::new();
        for (i, f) in frames.iter().enumerate() {
            if f.iface as usize == k {
                own.push(Frame {
                    iface: 0,
                    ..f.clone()
                });
                own_comments.push(comments.get(i).cloned().flatten());
            }
        }
        if own.is_empty() {
            continue;
        }
        write_pcapng_with(
            &dir.join(per_interface_name(iface)),
            scenario,
            std::slice::from_ref(iface),
            &own,
            &own_comments,
            (tls_keys, verdicts),
        )?;
    }
    Ok(())
}

/// Write one pcapng: a section comment naming the scenario (and how to
/// read the capture without false retransmissions, the tunnel decoded), an interface
/// block per `host/ifname` (name `host/ifname`, description `interface
/// IFNAME of host HOST`) with nanosecond resolution declared, an enhanced
/// packet block per frame with its direction in the flags word and, where
/// `comments` has one for it (same index as `frames`), a comment: the
/// frame's flow and hop (see [`crate::trace::build_annotated`]). A
/// non-empty `tls_keys` (an NSS key log's text) goes in a Decryption
/// Secrets Block of type `TLSK` after the interfaces, before any packet.
pub fn write_pcapng(
    path: &Path,
    scenario: &str,
    ifaces: &[Iface],
    frames: &[Frame],
    comments: &[Option<String>],
    tls_keys: &[u8],
) -> Result<(), pcap_file::PcapError> {
    write_pcapng_with(path, scenario, ifaces, frames, comments, (tls_keys, None))
}

/// [`write_pcapng`], with the run's drop verdicts, if given, as further
/// comments of the section header ([`Verdicts::to_comments`]: as many as
/// a pcapng option's 65535 bytes make them).
pub fn write_pcapng_with(
    path: &Path,
    scenario: &str,
    ifaces: &[Iface],
    frames: &[Frame],
    comments: &[Option<String>],
    (tls_keys, verdicts): (&[u8], Option<&Verdicts>),
) -> Result<(), pcap_file::PcapError> {
    use pcap_file::pcapng::blocks::section_header::SectionHeaderOption;
    let file = File::create(path).map_err(pcap_file::PcapError::IoError)?;
    let mut options = vec![SectionHeaderOption::Comment(
        section_comment(scenario).into(),
    )];
    if let Some(v) = verdicts {
        for part in v.to_comments() {
            options.push(SectionHeaderOption::Comment(part.into()));
        }
    }
    options.push(SectionHeaderOption::UserApplication(
        format!("hoplab {}", env!("CARGO_PKG_VERSION")).into(),
    ));
    let shb = SectionHeaderBlock {
        options,
        ..Default::default()
    };
    let mut w = PcapNgWriter::with_section_header(BufWriter::new(file), shb)?;
    for i in ifaces {
        w.write_pcapng_block(InterfaceDescriptionBlock {
            linktype: i.link,
            snaplen: SNAPLEN as u32,
            options: vec![
                InterfaceDescriptionOption::IfName(i.label().into()),
                InterfaceDescriptionOption::IfDescription(
                    format!("interface {} of host {}", i.ifname, i.host).into(),
                ),
                InterfaceDescriptionOption::IfTsResol(9),
            ],
        })?;
    }
    if !tls_keys.is_empty() {
        w.write_pcapng_block(secrets_block(tls_keys))?;
    }
    for (i, f) in frames.iter().enumerate() {
        let mut options = vec![EnhancedPacketOption::Flags(if f.outgoing { 2 } else { 1 })];
        if let Some(Some(c)) = comments.get(i) {
            options.push(EnhancedPacketOption::Comment(c.as_str().into()));
        }
        w.write_pcapng_block(EnhancedPacketBlock {
            interface_id: f.iface,
            timestamp: Duration::from_nanos(f.ts_ns),
            original_len: f.data.len() as u32,
            data: f.data.as_slice().into(),
            options,
        })?;
    }
    use std::io::Write;
    w.into_inner()
        .flush()
        .map_err(pcap_file::PcapError::IoError)?;
    Ok(())
}

/// The pcapng block type of a Decryption Secrets Block.
pub(crate) const DECRYPTION_SECRETS: u32 = 0x0000_000A;
/// Its secrets type for an NSS key log: `TLSK`.
pub(crate) const TLS_KEY_LOG: u32 = 0x544c_534b;

/// A Decryption Secrets Block holding `keys`: the secrets type and length
/// (big-endian, the byte order of the section hoplab writes), the secrets,
/// padded to 32 bits by the writer.
fn secrets_block(keys: &[u8]) -> UnknownBlock<'_> {
    let mut body = Vec::with_capacity(8 + keys.len());
    body.extend(TLS_KEY_LOG.to_be_bytes());
    body.extend((keys.len() as u32).to_be_bytes());
    body.extend(keys);
    let len = (12 + body.len()).div_ceil(4) * 4;
    UnknownBlock {
        type_: DECRYPTION_SECRETS,
        length: len as u32,
        value: body.into(),
    }
}
