//! `cargo xtask fuzz --seed CAPTURE...`: seeds the dataplane targets'
//! corpus from real packets, the frames of captures written by scenario
//! runs (`target/scenarios/NAME/capture.pcapng`), and the loader's from
//! the shipped scenario files.
//!
//! Per capture and interface, one input of the record format the core
//! targets read (`dataplane/fuzz/targets/common.rs`: a control byte 0, a
//! length byte, the packet): the net managers' TUN frames (`nm0`) for
//! `tun_packet` (the first four also for `packet_view`), the gateway's
//! (`gw0`) for `gateway_packet`, the tunnel datagrams' payloads on the
//! nodes' `eth0` for `tunnel_datagram`. Knows interface names and link
//! layers, not what the targets assert.

use std::collections::BTreeMap;
use std::fs;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use hoplab_sim::capture::read_capture;
use pcap_file::DataLink;

use crate::root;

/// The UDP port of the net managers' tunnel.
const TUNNEL_PORT: u16 = 50103;

/// The IP packet of a frame, for the link types scenario runs capture.
fn ip_of(link: DataLink, data: &[u8]) -> Option<&[u8]> {
    match link {
        DataLink::RAW => Some(data),
        DataLink::ETHERNET if matches!(data.get(12..14)?, [0x08, 0x00] | [0x86, 0xdd]) => {
            data.get(14..)
        }
        _ => None,
    }
}

/// The payload of an IPv4 UDP datagram to the tunnel port.
fn tunnel_payload(ip: &[u8]) -> Option<&[u8]> {
    let ihl = usize::from(*ip.first()? & 0xf) * 4;
    let port = u16::from_be_bytes([*ip.get(ihl + 2)?, *ip.get(ihl + 3)?]);
    (ip[0] >> 4 == 4 && *ip.get(9)? == 17 && port == TUNNEL_PORT).then(|| ip.get(ihl + 8..))?
}

/// Packets as records (those that fit a length byte).
fn records<'a>(packets: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut out = Vec::new();
    for p in packets {
        if let Ok(len) = u8::try_from(p.len()) {
            out.extend_from_slice(&[0, len]);
            out.extend_from_slice(p);
        }
    }
    out
}

/// Writes `data` into the corpus folder `dir`, named by its hash, unless
/// an input there already holds it; returns whether it is new.
fn write(dir: &Path, data: &[u8]) -> Result<bool> {
    if data.is_empty() {
        return Ok(false);
    }
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for e in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        if fs::read(e?.path()).is_ok_and(|kept| kept == data) {
            return Ok(false);
        }
    }
    let mut h = DefaultHasher::new();
    data.hash(&mut h);
    let path = dir.join(format!("seed-{:016x}", h.finish()));
    if path.exists() {
        return Ok(false);
    }
    fs::write(&path, data).with_context(|| format!("writing {}", path.display()))?;
    Ok(true)
}

/// The packet view's input: control byte (fix nothing, run the address
/// and port setters), a port, a 16-byte address, the packet.
fn view_input(packet: &[u8]) -> Vec<u8> {
    let mut v = vec![0x30, 0x12, 0x34, 10, 30, 9, 9];
    v.extend_from_slice(&[0; 12]);
    v.extend_from_slice(packet);
    v
}

pub fn seed(captures: &[PathBuf]) -> Result<()> {
    let corpus = |krate: &str, target: &str| root().join(krate).join("fuzz/corpus").join(target);
    let mut added = 0;
    for cap in captures {
        let frames = read_capture(cap)?;
        let mut by_iface: BTreeMap<String, Vec<&[u8]>> = BTreeMap::new();
        for f in &frames {
            if let Some(ip) = ip_of(f.link, &f.data) {
                by_iface
                    .entry(format!("{}/{}", f.host, f.ifname))
                    .or_default()
                    .push(ip);
            }
        }
        for (iface, ips) in &by_iface {
            let n = |target, data: &[u8]| write(&corpus("dataplane", target), data);
            if iface.ends_with("/nm0") {
                added += usize::from(n("tun_packet", &records(ips.iter().copied()))?);
                for p in ips.iter().take(4) {
                    added += usize::from(n("packet_view", &view_input(p))?);
                }
            } else if iface.ends_with("/gw0") {
                added += usize::from(n("gateway_packet", &records(ips.iter().copied()))?);
            } else if iface.ends_with("/eth0") {
                let tunnel = records(ips.iter().filter_map(|p| tunnel_payload(p)));
                added += usize::from(n("tunnel_datagram", &tunnel)?);
            }
        }
    }
    for e in fs::read_dir(root().join("scenarios")).context("reading scenarios/")? {
        let p = e?.path();
        if p.extension().is_some_and(|x| x == "yaml") {
            let text = fs::read(&p).with_context(|| format!("reading {}", p.display()))?;
            added += usize::from(write(&corpus("sim", "scenario_parse"), &text)?);
        }
    }
    println!("fuzz: {added} new seeds");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tunnel_payloads_and_records() {
        // IPv4 UDP 10.10.0.1 -> 10.10.0.2, ports 50103, payload "ab".
        let mut ip = vec![
            0x45, 0, 0, 30, 0, 0, 0, 0, 64, 17, 0, 0, 10, 10, 0, 1, 10, 10, 0, 2,
        ];
        ip.extend_from_slice(&[0xc3, 0xb7, 0xc3, 0xb7, 0, 10, 0, 0, b'a', b'b']);
        assert_eq!(tunnel_payload(&ip), Some(&b"ab"[..]));
        ip[22] = 0;
        assert_eq!(tunnel_payload(&ip), None);
        let big = [0u8; 300];
        assert_eq!(
            records([&b"xy"[..], &big[..], &b"z"[..]]),
            [0, 2, b'x', b'y', 0, 1, b'z']
        );
        let mut eth = vec![0; 12];
        eth.extend_from_slice(&[0x08, 0x00, 0x45]);
        assert_eq!(ip_of(DataLink::ETHERNET, &eth), Some(&[0x45][..]));
        assert_eq!(ip_of(DataLink::RAW, &[0x60]), Some(&[0x60][..]));
    }
}
