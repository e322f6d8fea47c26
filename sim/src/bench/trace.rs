//! The trace's own benchmark: a synthetic capture of a load step's TCP
//! flows (client → router → server, each packet seen on four interfaces,
//! a hundred flows interleaved at a time, ten packets a flow: handshake,
//! 64 bytes each way, close) built into a trace as a run builds it, timed,
//! with the process's peak memory. [`run`] makes a capture of about N
//! frames; `hoplab __bench-trace N` prints its [`TraceRun`] as JSON for
//! `cargo xtask bench trace`.
//!
//! It measures the trace only: no namespace, socket or file; the capture
//! is made in memory, as the capture reader would hand it over.

use std::path::Path;
use std::time::Instant;

use etherparse::PacketBuilder;
use pcap_file::DataLink;
use serde::{Deserialize, Serialize};

use crate::capture::Captured;
use crate::trace::{self, LabView, StepReport, StepResult};

/// Frames of one flow: ten packets, each seen on four interfaces.
pub const FRAMES_PER_FLOW: usize = 40;
/// Flows in flight at once in the synthetic capture.
const CONCURRENCY: usize = 100;

/// One measurement.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TraceRun {
    /// Frames in the capture.
    pub frames: usize,
    /// Flows (TCP connections) in it.
    pub flows: usize,
    /// Seconds to build the trace (decode, paths, attribution, rendering,
    /// the summary, a comment per frame).
    pub build_s: f64,
    /// Frames traced per second.
    pub frames_per_s: f64,
    /// Resident memory with the capture in memory, before the trace (KiB).
    pub before_kib: u64,
    /// The process's peak resident memory (KiB).
    pub peak_kib: u64,
    /// Packets the trace keeps hop by hop (the sample flow's).
    pub kept_packets: usize,
    /// The load step's result, as judged from the capture.
    pub result: String,
}

/// The lab of the synthetic capture, with a load step of `flows` flows.
fn lab(flows: usize) -> Result<LabView, String> {
    let text = format!(
        "version: 1
hosts:
  client: {{routes: [{{to: default, via: 10.0.1.1}}]}}
  router: {{sysctls: {{net.ipv4.ip_forward: 1}}}}
  server: {{routes: [{{to: default, via: 10.0.2.1}}]}}
links:
  - {{a: {{host: client, ifname: eth0, addr: [10.0.1.2/24]}}, b: {{host: router, ifname: eth0, addr: [10.0.1.1/24]}}}}
  - {{a: {{host: router, ifname: eth1, addr: [10.0.2.1/24]}}, b: {{host: server, ifname: eth0, addr: [10.0.2.2/24]}}}}
traffic:
  - {{name: load, from: client, proto: tcp, to: \"10.0.2.2:7\", load: {{flows: {flows}, concurrency: 100, sport_base: 5000}}}}
"
    );
    let sc = crate::oakestra::parse(Path::new("bench-trace.yaml"), "bench-trace", &text)
        .map_err(|e| e.to_string())?;
    Ok(LabView::of(&sc))
}

/// One packet of flow `f` seen on its four interfaces: `k`th of the flow.
fn frames_of(f: usize, k: usize, ts: &mut u64, out: &mut Vec<Captured>) {
    let port = 5000 + f as u16;
    let (cseq, sseq) = (1_000_000 + 7 * f as u32, 9_000_000 + 13 * f as u32);
    let data = crate::load::payload(f as u32, 64);
    // (from the client, flags, seq, ack, payload)
    let (fwd, flags, seq, ack, body): (bool, &str, u32, u32, &[u8]) = match k {
        0 => (true, "S", cseq, 0, &[]),
        1 => (false, "S.", sseq, cseq + 1, &[]),
        2 => (true, ".", cseq + 1, sseq + 1, &[]),
        3 => (true, "P.", cseq + 1, sseq + 1, &data),
        4 => (false, ".", sseq + 1, cseq + 65, &[]),
        5 => (false, "P.", sseq + 1, cseq + 65, &data),
        6 => (true, ".", cseq + 65, sseq + 65, &[]),
        7 => (true, "F.", cseq + 65, sseq + 65, &[]),
        8 => (false, "F.", sseq + 65, cseq + 66, &[]),
        _ => (true, ".", cseq + 66, sseq + 66, &[]),
    };
    let (c, s) = (([10, 0, 1, 2], port), ([10, 0, 2, 2], 7u16));
    let ((src, sp), (dst, dp)) = if fwd { (c, s) } else { (s, c) };
    let places: [(&str, &str, bool, u8); 4] = if fwd {
        [
            ("client", "eth0", true, 64),
            ("router", "eth0", false, 64),
            ("router", "eth1", true, 63),
            ("server", "eth0", false, 63),
        ]
    } else {
        [
            ("server", "eth0", true, 64),
            ("router", "eth1", false, 64),
            ("router", "eth0", true, 63),
            ("client", "eth0", false, 63),
        ]
    };
    for (host, ifname, outgoing, ttl) in places {
        let b = PacketBuilder::ethernet2([2; 6], [4; 6])
            .ipv4(src, dst, ttl)
            .tcp(sp, dp, seq, 64000);
        let b = if flags.contains('S') { b.syn() } else { b };
        let b = if flags.contains('F') { b.fin() } else { b };
        let b = if flags.contains('.') { b.ack(ack) } else { b };
        let b = if flags.contains('P') { b.psh() } else { b };
        let mut v = Vec::with_capacity(b.size(body.len()));
        b.write(&mut v, body).expect("writing to a Vec");
        *ts += 2_000;
        out.push(Captured {
            ts_ns: *ts,
            host: host.into(),
            ifname: ifname.into(),
            outgoing,
            data: v,
            link: DataLink::ETHERNET,
        });
    }
}

/// A capture of `flows` flows, [`CONCURRENCY`] interleaved at a time.
pub fn capture(flows: usize) -> Vec<Captured> {
    let mut out = Vec::with_capacity(flows * FRAMES_PER_FLOW);
    let mut ts = 1_000_000_000;
    for start in (0..flows).step_by(CONCURRENCY) {
        for k in 0..10 {
            for f in start..(start + CONCURRENCY).min(flows) {
                frames_of(f, k, &mut ts, &mut out);
            }
        }
    }
    out
}

/// A field of `/proc/self/status` in KiB (`VmRSS`, `VmHWM`); 0 if absent.
fn status_kib(field: &str) -> u64 {
    let text = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Build the trace of a synthetic capture of about `frames` frames.
pub fn run(frames: usize) -> Result<TraceRun, String> {
    let flows = (frames / FRAMES_PER_FLOW).clamp(1, crate::load::MAX_FLOWS as usize);
    let lab = lab(flows)?;
    let cap = capture(flows);
    let before_kib = status_kib("VmRSS");
    // What the run's clients would report: every flow verified.
    let seen = crate::load::LoadSummary {
        flows: flows as u64,
        ok: flows as u64,
        bytes_verified: 64 * flows as u64,
        ..Default::default()
    };
    let reports = [StepReport {
        sent: format!("{flows} flows"),
        result: StepResult::Unknown,
        load: Some(seen),
    }];
    let t = Instant::now();
    let tr = trace::build(&lab, &cap, &reports);
    let build_s = t.elapsed().as_secs_f64();
    let flow = tr.flows.first().ok_or("the trace has no flow")?;
    Ok(TraceRun {
        frames: cap.len(),
        flows,
        build_s,
        frames_per_s: cap.len() as f64 / build_s.max(1e-9),
        before_kib,
        peak_kib: status_kib("VmHWM"),
        kept_packets: flow.packets.len(),
        result: flow.result.to_string(),
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_small_synthetic_capture_is_traced_whole() {
        let r = super::run(4000).unwrap();
        assert_eq!((r.frames, r.flows), (4000, 100));
        // The sample flow's packets only, less the two pure ACKs (4 and
        // 6) that the next segment of their direction repeats.
        assert_eq!(r.kept_packets, 8, "the sample flow's packets only");
        assert!(
            r.result.starts_with("ok: 100 flows: 100 ok"),
            "{}",
            r.result
        );
        let tr = super::trace::build(&super::lab(100).unwrap(), &super::capture(100), &[]);
        let l = tr.flows[0].load.as_ref().unwrap();
        assert_eq!(l.answered_by.get("server"), Some(&100));
        assert_eq!(l.retransmissions, 0);
        assert!(l.drops.is_empty(), "{:?}", l.drops);
    }

    /// Flow 1's SYN dies after the router's way in, and its resend a
    /// second later arrives: the summary counts one drop where it was
    /// last seen and one retransmission, and the flow as answered by the
    /// server all the same.
    #[test]
    fn a_lost_syn_is_a_drop_and_its_resend_a_retransmission() {
        let mut cap = super::capture(3);
        // Frames 4..8 are flow 1's SYN: client out, router in, router out,
        // server in. The last two never happen.
        cap.drain(6..8);
        let mut ts = cap.last().unwrap().ts_ns + 1_000_000_000;
        super::frames_of(1, 0, &mut ts, &mut cap);
        let tr = super::trace::build(&super::lab(3).unwrap(), &cap, &[]);
        let l = tr.flows[0].load.as_ref().unwrap();
        let drops: Vec<(&str, u64)> = l.drops.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        assert_eq!(drops, [("last seen at router/eth0 in", 1)]);
        assert_eq!(l.retransmissions, 1);
        assert_eq!(l.answered_by.get("server"), Some(&3));
    }
}
