//! The canonical form of what TCP timing decides and the packets do not:
//! a pure ACK that the next segment of its direction repeats is folded
//! into that segment.
//!
//! Whether a TCP endpoint sends a pure ACK before its next segment (a
//! delayed ACK that fires because the answer came late, a quick ACK of a
//! peer's first segment, an ACK of a peer's FIN before the endpoint's own
//! FIN) depends on how fast the application answers, so the same
//! exchange gives one packet more or less from run to run. The rule:
//!
//! A TCP packet P is **folded into** the next segment Q that the same
//! socket sends (the same host, addresses and ports on the first hop; the
//! next one in the trace's order that is not itself folded) when
//!
//! 1. P is a pure ACK: flags exactly ACK (no SYN, FIN, RST, PSH, URG), no
//!    payload;
//! 2. P is not the handshake's ACK (the segment of its direction right
//!    after a SYN without ACK, i.e. the connecting side's ACK of the
//!    SYN-ACK): that one the kernel sends at once;
//! 3. P carries no SACK block (a duplicate ACK reporting a loss is
//!    evidence) and neither advertises a zero window nor opens one (the
//!    segment of its direction before it did not advertise zero);
//! 4. Q repeats what P tells the peer: Q's sequence number equals P's (no
//!    byte was sent between them) and Q acknowledges at least as much
//!    (`Q.ack - P.ack`, modulo 2^32, is 0 or positive as a signed 32-bit
//!    number);
//! 5. P and Q took the same path (the same hops, `host/ifname dir`, in
//!    the same order) and ended alike.
//!
//! A folded packet is left out of the trace's packets (and so of the
//! snapshot and the reports); every one of its frames stays in the
//! capture, with a comment naming the frame of Q it was folded into. The
//! window and options are read from the sender's own frame. It knows
//! frames and rendered packets; nothing of steps, legs or scenarios.

use std::collections::HashMap;
use std::net::IpAddr;

use hoplab_dataplane::wire::{tcp_flags, L4};

use super::decode::Seen;
use super::Packet;
use crate::capture::Captured;

/// What one packet's first hop (its sender's frame) says at TCP level.
struct Seg {
    /// The sending socket: host, source and destination on the first hop.
    key: (String, IpAddr, u16, IpAddr, u16),
    seq: u32,
    ack: u32,
    flags: u8,
    pure_ack: bool,
    /// Window and whether a SACK option is present, from the raw header.
    raw: Option<RawTcp>,
}

/// The fields of a TCP header the summary does not hold.
#[derive(Clone, Copy)]
struct RawTcp {
    window: u16,
    sack: bool,
}

fn seg(frames: &[Captured], hops: &[&Seen]) -> Option<Seg> {
    let first = hops.first()?;
    let L4::Tcp {
        sport,
        dport,
        seq,
        ack,
        flags,
    } = first.s.l4
    else {
        return None;
    };
    let raw = frames
        .get(first.frame)
        .and_then(|f| raw_tcp(&f.data, (sport, dport, seq, ack)));
    Some(Seg {
        key: (
            first.at.host.clone(),
            first.s.src,
            sport,
            first.s.dst,
            dport,
        ),
        seq,
        ack,
        flags,
        pure_ack: flags == tcp_flags::ACK && first.s.payload.is_empty(),
        raw,
    })
}

/// The window and SACK presence of the TCP header in `frame` that starts
/// with these ports, sequence and acknowledgement numbers (12 bytes that
/// find it under any link or tunnel header).
fn raw_tcp(frame: &[u8], (sport, dport, seq, ack): (u16, u16, u32, u32)) -> Option<RawTcp> {
    let mut pat = [0u8; 12];
    pat[..2].copy_from_slice(&sport.to_be_bytes());
    pat[2..4].copy_from_slice(&dport.to_be_bytes());
    pat[4..8].copy_from_slice(&seq.to_be_bytes());
    pat[8..].copy_from_slice(&ack.to_be_bytes());
    let at = frame.windows(12).position(|w| w == pat)?;
    let hdr = frame.get(at..)?;
    let doff = usize::from(*hdr.get(12)? >> 4) * 4;
    let window = u16::from_be_bytes([*hdr.get(14)?, *hdr.get(15)?]);
    let mut opts = hdr.get(20..doff)?;
    let mut sack = false;
    while let Some(&kind) = opts.first() {
        match kind {
            0 => break,
            1 => opts = &opts[1..],
            _ => {
                let len = usize::from(*opts.get(1)?).max(2);
                sack |= kind == 5;
                opts = opts.get(len..)?;
            }
        }
    }
    Some(RawTcp { window, sack })
}

/// For each packet (`paths[i]` rendered as `packets[i]`, in trace order),
/// the index of the packet it is folded into, or `None` if it is kept.
/// A folded packet always names a kept one.
pub(super) fn fold(
    frames: &[Captured],
    paths: &[&[&Seen]],
    packets: &[Packet],
) -> Vec<Option<usize>> {
    let segs: Vec<Option<Seg>> = paths.iter().map(|h| seg(frames, h)).collect();
    // Rules 1 to 3, which need only P and the segment of its direction
    // before it.
    let mut candidate = vec![false; segs.len()];
    let mut before: HashMap<&(String, IpAddr, u16, IpAddr, u16), &Seg> = HashMap::new();
    for (i, s) in segs.iter().enumerate() {
        let Some(s) = s else { continue };
        let prev = before.insert(&s.key, s);
        let after_syn =
            prev.is_some_and(|p| p.flags & (tcp_flags::SYN | tcp_flags::ACK) == tcp_flags::SYN);
        let zero = |r: Option<RawTcp>| r.is_some_and(|r| r.window == 0);
        candidate[i] = s.pure_ack
            && !after_syn
            && s.raw.is_some_and(|r| !r.sack)
            && !zero(s.raw)
            && !prev.is_some_and(|p| zero(p.raw));
    }
    // Rules 4 and 5, against the next kept segment of the direction.
    let mut into = vec![None; segs.len()];
    let mut next: HashMap<&(String, IpAddr, u16, IpAddr, u16), usize> = HashMap::new();
    for i in (0..segs.len()).rev() {
        let Some(p) = &segs[i] else { continue };
        let q = next.get(&p.key).copied();
        let repeated = q.is_some_and(|q| {
            let qs = segs[q].as_ref().expect("a kept segment");
            qs.seq == p.seq
                && (qs.ack.wrapping_sub(p.ack) as i32) >= 0
                && same_path(&packets[i], &packets[q])
        });
        if candidate[i] && repeated {
            into[i] = q;
        } else {
            next.insert(&p.key, i);
        }
    }
    into
}

fn same_path(a: &Packet, b: &Packet) -> bool {
    a.end == b.end
        && a.hops.len() == b.hops.len()
        && a.hops.iter().zip(&b.hops).all(|(x, y)| x.at == y.at)
}

/// The comment of each frame of a folded packet: the frame (1-based, as
/// Wireshark numbers them) of the packet it was folded into at the same
/// hop.
pub(super) fn comment(
    comments: &mut [Option<String>],
    flow: &str,
    folded: &[&Seen],
    into: &[&Seen],
) {
    for (i, (f, q)) in folded.iter().zip(into).enumerate() {
        comments[f.frame] = Some(format!(
            "{flow}, pure ACK, hop {}/{} at {}: folded into frame {} (the next segment of its \
             direction repeats its sequence and acknowledgement numbers; not in the trace)",
            i + 1,
            folded.len(),
            f.at,
            q.frame + 1
        ));
    }
}
