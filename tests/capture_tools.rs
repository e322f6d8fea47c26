//! The pcapng a run writes is read by the real tools, with the right
//! interfaces, directions and timestamps.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use common::*;
use hoplab_sim::capture::Captured;
use hoplab_sim::trace::Trace;

fn now_s() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

fn tool(name: &str, args: &[&str]) -> String {
    let o = Command::new(name).args(args).output().unwrap_or_else(|e| {
        panic!("{name} is needed for this test (apt-get install tshark tcpdump): {e}")
    });
    assert!(
        o.status.success(),
        "{name} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn tshark_and_tcpdump_read_the_capture_with_correct_timestamps() {
    let out = out_dir("tools");
    let t0 = now_s();
    let o = run(&scenario_path("routed-pair"), &out);
    let t1 = now_s();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let pcap = out.join("capture.pcapng");
    let p = pcap.to_str().unwrap();
    let ours = hoplab_sim::capture::read_capture(&pcap).unwrap();

    // tshark: every frame, its interface name, its direction, its time.
    let text = tool(
        "tshark",
        &[
            "-r",
            p,
            "-T",
            "fields",
            "-E",
            "separator=|",
            "-e",
            "frame.interface_name",
            "-e",
            "frame.time_epoch",
            "-e",
            "frame.packet_flags_direction",
        ],
    );
    let rows: Vec<Vec<&str>> = text.lines().map(|l| l.split('|').collect()).collect();
    assert_eq!(
        rows.len(),
        ours.len(),
        "tshark and hoplab count different frames"
    );
    let mut ifaces: Vec<&str> = rows.iter().map(|r| r[0]).collect();
    ifaces.sort();
    ifaces.dedup();
    assert_eq!(
        ifaces,
        ["client/eth0", "router/eth0", "router/eth1", "server/eth0"]
    );
    for (r, f) in rows.iter().zip(&ours) {
        let ts: f64 = r[1].parse().unwrap();
        assert!(
            ts >= t0 - 0.001 && ts <= t1 + 0.001,
            "timestamp {ts} outside the run [{t0}, {t1}]"
        );
        // Nanosecond resolution: the same instant as hoplab read it.
        let ns = (r[1].split('.').nth(1).unwrap_or("")).len();
        assert_eq!(
            ns, 9,
            "tshark shows {ns} fractional digits, not nanoseconds"
        );
        assert!((ts - f.ts_ns as f64 / 1e9).abs() < 1e-6);
        let dir = if f.outgoing { "2" } else { "1" };
        assert!(
            r[2] == dir || r[2] == format!("0x{dir}") || r[2].ends_with(dir),
            "direction {} for {}",
            r[2],
            r[0]
        );
    }

    // tcpdump: same frames, nanosecond timestamps of the same second.
    let td = tool(
        "tcpdump",
        &["-r", p, "-nn", "--time-stamp-precision=nano", "-tt"],
    );
    let lines: Vec<&str> = td.lines().collect();
    assert_eq!(lines.len(), ours.len());
    let first: f64 = lines[0].split_whitespace().next().unwrap().parse().unwrap();
    assert!((first - ours[0].ts_ns as f64 / 1e9).abs() < 1e-6);
    assert!(
        td.contains("10.0.1.2.40000 > 10.0.2.2.7: Flags [S]"),
        "{td}"
    );
}

/// Wireshark sees each interface as `host/ifname` with a description, and
/// each frame's comment names its flow and hop: exactly the hops of the
/// trace, each on the frame of that interface and direction.
#[test]
fn tshark_shows_interface_names_descriptions_and_a_comment_per_hop() {
    let out = out_dir("annotated");
    let o = run(&scenario_path("kube-proxy-dnat"), &out);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let p = out.join("capture.pcapng");
    let text = tool(
        "tshark",
        &[
            "-r",
            p.to_str().unwrap(),
            "-T",
            "fields",
            "-E",
            "separator=\t",
            "-e",
            "frame.interface_name",
            "-e",
            "frame.interface_description",
            "-e",
            "frame.packet_flags_direction",
            "-e",
            "frame.comment",
        ],
    );
    let trace = hoplab_sim::trace::Trace::from_yaml(
        &std::fs::read_to_string(out.join("trace.yaml")).unwrap(),
    )
    .unwrap();
    let mut commented = Vec::new();
    let mut folded = Vec::new();
    let lines: Vec<&str> = text.lines().collect();
    for l in &lines {
        let r: Vec<&str> = l.split('\t').collect();
        let (name, desc, dir, comment) = (r[0], r[1], r[2], r.get(3).copied().unwrap_or(""));
        let (host, ifname) = name.split_once('/').expect("host/ifname");
        assert_eq!(desc, format!("interface {ifname} of host {host}"));
        assert!(!comment.is_empty(), "frame on {name} has no comment");
        if let Some((_, at)) = comment.split_once(" at ") {
            let at = at.split([':', ';']).next().unwrap();
            let out = dir.ends_with('2');
            assert_eq!(
                at,
                format!("{name} {}", if out { "out" } else { "in" }),
                "{comment}"
            );
            if comment.contains("folded into frame ") {
                folded.push(comment.to_string());
            } else {
                commented.push(comment.to_string());
            }
        }
    }
    folded_frames_name_a_traced_frame(&folded, &lines);
    // Every hop of every packet of the trace is one commented frame.
    let mut want = Vec::new();
    for f in &trace.flows {
        for (n, p) in f.packets.iter().enumerate() {
            for (i, h) in p.hops.iter().enumerate() {
                want.push(format!(
                    "flow {}, packet {} ({}), hop {}/{} at {}",
                    f.step,
                    n + 1,
                    p.packet,
                    i + 1,
                    p.hops.len(),
                    h.at
                ));
            }
        }
    }
    for (n, p) in trace.other.iter().enumerate() {
        for (i, h) in p.hops.iter().enumerate() {
            want.push(format!(
                "no flow, packet {} ({}), hop {}/{} at {}",
                n + 1,
                p.packet,
                i + 1,
                p.hops.len(),
                h.at
            ));
        }
    }
    assert!(want.len() > 10, "{}", trace.to_yaml());
    // Each comment up to the end of its `at HOST/IF DIR`.
    let mut got: Vec<String> = commented
        .iter()
        .map(|c| {
            let i = c.find(" at ").unwrap() + 4;
            let end = c[i..].find([':', ';']).map_or(c.len(), |e| i + e);
            c[..end].to_string()
        })
        .collect();
    got.sort();
    want.sort();
    assert_eq!(got, want);
    assert!(
        commented
            .iter()
            .any(|c| c.contains("dst 10.96.0.110:80 -> 10.244.1.11:3000")),
        "the DNAT hop's comment names the rewrite"
    );
}

/// A pure ACK folded out of the trace (see scenarios/README.md,
/// "Determinism") keeps its frames, each naming the frame of the trace's
/// packet it was folded into, at the same place (`lines`: tshark's, one
/// a frame).
fn folded_frames_name_a_traced_frame(folded: &[String], lines: &[&str]) {
    assert!(!folded.is_empty(), "the echo's ACKs are folded here");
    for c in folded {
        let n: usize = c
            .split("folded into frame ")
            .nth(1)
            .unwrap()
            .split(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        let into = lines[n - 1].split('\t').nth(3).unwrap_or("");
        assert!(into.contains(", packet "), "{c} -> {into}");
        let at = |c: &str| {
            c.split(" at ")
                .nth(1)
                .unwrap()
                .split([':', ';'])
                .next()
                .unwrap()
                .to_string()
        };
        assert_eq!(at(c), at(into), "{c} -> {into}");
    }
}

/// `hoplab trace` reads any capture: here a classic pcap written by
/// tcpdump from a run's pcapng, without the scenario: every packet is
/// listed on its own, on interface `capture/if0`.
#[test]
fn hoplab_traces_a_pcap_written_by_tcpdump_without_its_scenario() {
    let (out, pcap) = routed_pair_pcap("anycap", &["ip and host 10.0.1.2"]);
    let o = hoplab().arg("trace").arg(&pcap).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let t = hoplab_sim::trace::Trace::from_yaml(&String::from_utf8_lossy(&o.stdout)).unwrap();
    assert!(t.flows.is_empty());
    assert!(!t.other.is_empty(), "{}", t.to_yaml());
    assert!(t.other.iter().all(|p| p
        .hops
        .iter()
        .all(|h| h.at.host == "capture" && h.at.ifname == "if0")));
    assert!(
        t.other[0].packet.contains("10.0.1.2:40000 > 10.0.2.2:7"),
        "{}",
        t.to_yaml()
    );

    // Not a capture at all: one clear line naming the file.
    let bogus = out.join("bogus.pcap");
    std::fs::write(&bogus, b"hello, world").unwrap();
    let o = hoplab().arg("trace").arg(&bogus).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("bogus.pcap") && err.contains("not a capture"),
        "{err}"
    );
}

/// The blocks of a one-section pcapng: each block's offset, type and
/// length, walked by the lengths alone.
fn blocks(b: &[u8]) -> Vec<(usize, u32, usize)> {
    let little = b[8..12] == [0x4d, 0x3c, 0x2b, 0x1a];
    let word = |at: usize| {
        let w = b[at..at + 4].try_into().unwrap();
        if little {
            u32::from_le_bytes(w)
        } else {
            u32::from_be_bytes(w)
        }
    };
    let mut v = Vec::new();
    let mut at = 0;
    while at < b.len() {
        let len = word(at + 4) as usize;
        v.push((at, word(at), len));
        at += len;
    }
    v
}

/// Run routed-pair into a fresh directory and have tcpdump copy its
/// capture, through `filter`, to a classic pcap: the directory and the pcap.
fn routed_pair_pcap(tag: &str, filter: &[&str]) -> (PathBuf, PathBuf) {
    let out = out_dir(tag);
    let o = run(&scenario_path("routed-pair"), &out);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let pcap = out.join("capture.pcap");
    let pcapng = out.join("capture.pcapng");
    let mut args = vec!["-r", pcapng.to_str().unwrap(), "-w", pcap.to_str().unwrap()];
    args.extend(filter);
    tool("tcpdump", &args);
    (out, pcap)
}

/// `hoplab trace` of `bytes` written to `dir/name`, with `--scenario` if
/// given: its exit code, the trace and stderr.
fn trace_file(
    dir: &Path,
    name: &str,
    bytes: &[u8],
    scenario: Option<&Path>,
) -> (i32, Trace, String) {
    std::fs::create_dir_all(dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    let mut cmd = hoplab();
    cmd.arg("trace").arg(&p);
    if let Some(sc) = scenario {
        cmd.arg("--scenario").arg(sc);
    }
    let o = cmd.output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    let t = Trace::from_yaml(&String::from_utf8_lossy(&o.stdout))
        .unwrap_or_else(|e| panic!("{name}: no trace ({e}): {err}"));
    (o.status.code().unwrap(), t, err)
}

/// `hoplab trace` on a capture in `dir` holding `bytes`, for routed-pair.
fn trace_of(dir: &Path, name: &str, bytes: &[u8]) -> (i32, Trace, String) {
    trace_file(dir, name, bytes, Some(&scenario_path("routed-pair")))
}

/// The trace of `frames` captured in routed-pair, as `hoplab trace` builds it.
fn expected(frames: &[Captured]) -> Trace {
    let sc = hoplab_sim::oakestra::load(&scenario_path("routed-pair")).unwrap();
    hoplab_sim::trace::build(&hoplab_sim::trace::LabView::of(&sc), frames, &[])
}

/// A pcapng cut anywhere, or with one corrupt option string, is traced up
/// to the damage: the trace of every packet before it, the damaged block's
/// offset and what is wrong in the trace and in a warning, exit status 3.
/// A cut at a block boundary leaves a shorter capture that is whole.
#[test]
fn a_cut_or_corrupt_pcapng_is_traced_up_to_the_damage() {
    let out = out_dir("damaged");
    let o = run(&scenario_path("routed-pair"), &out);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let bytes = std::fs::read(out.join("capture.pcapng")).unwrap();
    let full = hoplab_sim::capture::read_capture(&out.join("capture.pcapng")).unwrap();
    let blocks = blocks(&bytes);
    assert!(blocks.len() > 20, "{blocks:?}");
    let mut packets = 0; // enhanced packet blocks before the current one
    for &(start, ty, len) in &blocks[1..] {
        // At the boundary: a whole, shorter capture.
        let (rc, t, err) = trace_of(&out, "cut.pcapng", &bytes[..start]);
        assert_eq!((rc, err.as_str()), (0, ""), "cut at {start}");
        assert_eq!(t, expected(&full[..packets]), "cut at {start}");
        // Inside the block: its header, its body, its trailer.
        for cut in [start + 3, start + 8, start + len / 2, start + len - 1] {
            let (rc, mut t, err) = trace_of(&out, "cut.pcapng", &bytes[..cut]);
            assert_eq!(rc, 3, "cut at {cut}: {err}");
            let d = std::mem::take(&mut t.skipped.damage);
            assert_eq!(d.len(), 1, "cut at {cut}: {d:?}");
            assert_eq!((d[0].offset, d[0].stopped), (start as u64, true));
            let why = format!("the file ends {} bytes into", cut - start);
            assert!(d[0].reason.starts_with(&why), "cut at {cut}: {d:?}");
            assert!(
                err.contains(&format!("byte {start}: {why}")) && err.contains("cut.pcapng"),
                "{err}"
            );
            assert_eq!(t, expected(&full[..packets]), "cut at {cut}");
        }
        packets += usize::from(ty == 6);
    }
    assert_eq!(packets, full.len());

    // One option string made not UTF-8: the section's comment and
    // application, an interface's name and description, a frame's comment.
    let epb = blocks.iter().position(|b| b.1 == 6).unwrap();
    let idb = blocks.iter().position(|b| b.1 == 1).unwrap();
    let commented = blocks
        .iter()
        .position(|&(s, ty, len)| ty == 6 && find(&bytes[s..s + len], b"flow ").is_some())
        .unwrap();
    let before = |k: usize| blocks[epb..k].iter().filter(|b| b.1 == 6).count();
    for (text, k, stopped) in [
        (&b"hoplab scenario"[..], 0, true),
        (b"hoplab 0", 0, true),
        (b"router/eth1", idb + 2, true),
        (b"interface eth0 of host client", idb, true),
        (b"flow ", commented, false),
    ] {
        let (s, _, len) = blocks[k];
        let mut bad = bytes.clone();
        let at = s + find(&bytes[s..s + len], text).unwrap_or_else(|| panic!("{text:?}"));
        bad[at + 1] = 0xff;
        let (rc, mut t, err) = trace_of(&out, "corrupt.pcapng", &bad);
        let name = String::from_utf8_lossy(text);
        assert_eq!(rc, 3, "{name}: {err}");
        let d = std::mem::take(&mut t.skipped.damage);
        assert_eq!(d.len(), 1, "{name}: {d:?}");
        assert_eq!((d[0].offset, d[0].stopped), (s as u64, stopped), "{name}");
        assert!(d[0].reason.contains("not UTF-8"), "{name}: {d:?}");
        assert!(err.contains(&format!("byte {s}: ")), "{name}: {err}");
        // Stopped: the packets before it; skipped: all but its own.
        let frames: Vec<Captured> = if stopped {
            full[..before(k.max(epb))].to_vec()
        } else {
            let n = before(k);
            [&full[..n], &full[n + 1..]].concat()
        };
        assert_eq!(t, expected(&frames), "{name}");
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A classic pcap cut anywhere is traced up to the cut record.
#[test]
fn a_cut_pcap_is_traced_up_to_the_damage() {
    let (out, pcap) = routed_pair_pcap("damaged-pcap", &[]);
    let bytes = std::fs::read(&pcap).unwrap();
    let full = hoplab_sim::capture::read_capture(&pcap).unwrap();
    let mut records = Vec::new();
    let mut at = 24;
    while at < bytes.len() {
        let len = u32::from_le_bytes(bytes[at + 8..at + 12].try_into().unwrap()) as usize;
        records.push((at, 16 + len));
        at += 16 + len;
    }
    assert_eq!(records.len(), full.len());
    for (k, &(start, len)) in records.iter().enumerate() {
        for cut in [start + 5, start + 16, start + len - 1] {
            let (rc, mut t, err) = trace_file(&out, "cut.pcap", &bytes[..cut], None);
            assert_eq!(rc, 3, "cut at {cut}: {err}");
            assert!(
                err.contains(&format!(
                    "byte {start}: the file ends {} bytes into",
                    cut - start
                )),
                "{err}"
            );
            assert_eq!(t.skipped.damage.len(), 1);
            t.skipped.damage.clear();
            let p = out.join("cut.pcap");
            let sc = hoplab_sim::oakestra::parse(&p, "cut", "version: 1\n").unwrap();
            let want =
                hoplab_sim::trace::build(&hoplab_sim::trace::LabView::of(&sc), &full[..k], &[]);
            assert_eq!(t, want, "cut at {cut}");
        }
    }
    // hoplab report: the reports are written, say where the damage is,
    // and the exit status is the same.
    let (start, len) = records[3];
    std::fs::write(out.join("cut.pcap"), &bytes[..start + len / 2]).unwrap();
    let o = hoplab()
        .arg("report")
        .arg(out.join("cut.pcap"))
        .arg("--out")
        .arg(out.join("report"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(3));
    let err = String::from_utf8_lossy(&o.stderr);
    let why = format!("byte {start}: the file ends {} bytes into", len / 2);
    assert!(err.contains(&why), "{err}");
    for f in ["report.md", "report.html"] {
        let text = std::fs::read_to_string(out.join("report").join(f)).unwrap();
        assert!(text.contains(&why), "{f}: {text}");
        assert!(text.contains("Not in this trace"), "{f}");
    }

    // Too short for the file header: nothing read, and said so.
    let (rc, t, err) = trace_file(&out, "cut.pcap", &bytes[..10], None);
    assert_eq!(rc, 3);
    assert!(t.other.is_empty());
    assert!(err.contains("byte 0: the file ends 10 bytes"), "{err}");
}

/// A classic pcap (little-endian, microseconds) of `frames` on `link`.
fn pcap_of(link: u32, frames: &[Vec<u8>]) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend(0xa1b2_c3d4u32.to_le_bytes());
    b.extend(2u16.to_le_bytes());
    b.extend(4u16.to_le_bytes());
    for w in [0, 0, 65535, link] {
        b.extend(u32::to_le_bytes(w));
    }
    for (i, f) in frames.iter().enumerate() {
        for w in [1_700_000_000, i as u32, f.len() as u32, f.len() as u32] {
            b.extend(w.to_le_bytes());
        }
        b.extend(f);
    }
    b
}

/// Frames of a link type hoplab does not decode are named, with their
/// count, in the trace and in a warning; so are frames that could not be
/// decoded, per reason. The capture is whole: exit status 0.
#[test]
fn skipped_link_types_and_undecodable_frames_are_named_and_counted() {
    use hoplab_sim::trace::{SkippedLink, Undecodable};
    let out = out_dir("skipped");
    for (link, name) in [(105, "IEEE802_11"), (4242, "4242")] {
        let wifi = pcap_of(link, &vec![vec![0x88; 40]; 12]);
        let (rc, t, err) = trace_file(&out, "wifi.pcap", &wifi, None);
        assert_eq!(rc, 0, "{err}");
        assert!(t.other.is_empty() && t.flows.is_empty());
        assert_eq!(t.undecodable, 12);
        let want = vec![SkippedLink {
            link: name.into(),
            frames: 12,
        }];
        assert_eq!(t.skipped.links, want);
        assert!(
            err.starts_with(&format!(
                "warning: {}: 12 frames of link type {name} skipped",
                out.join("wifi.pcap").display()
            )),
            "{err}"
        );
    }

    // Ethernet: one good frame, three with a cut IPv4 header, one too
    // short for Ethernet.
    let mut good = Vec::new();
    etherparse::PacketBuilder::ethernet2([2; 6], [4; 6])
        .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
        .udp(40000, 7)
        .write(&mut good, b"hi")
        .unwrap();
    let cut = good[..24].to_vec();
    let frames = vec![good, cut.clone(), cut.clone(), cut, vec![2; 5]];
    let (rc, t, err) = trace_file(&out, "eth.pcap", &pcap_of(1, &frames), None);
    assert_eq!(rc, 0, "{err}");
    assert_eq!(t.other.len(), 1, "{}", t.to_yaml());
    assert_eq!(t.undecodable, 4);
    assert!(t.skipped.links.is_empty() && t.skipped.damage.is_empty());
    let counts: Vec<usize> = t.skipped.undecodable.iter().map(|u| u.frames).collect();
    assert_eq!(
        counts.iter().sum::<usize>(),
        4,
        "{:?}",
        t.skipped.undecodable
    );
    assert!(counts.contains(&3) && counts.contains(&1));
    let short = t
        .skipped
        .undecodable
        .iter()
        .find(|u| u.frames == 1)
        .unwrap();
    assert_eq!(
        short,
        &Undecodable {
            reason: "malformed packet: 5-byte Ethernet frame".into(),
            frames: 1
        }
    );
    for u in &t.skipped.undecodable {
        let s = if u.frames == 1 { "" } else { "s" };
        let line = format!("{} frame{s} could not be decoded: {}", u.frames, u.reason);
        assert!(err.contains(&line), "{line} not in {err}");
    }
    // The trace reads back as written.
    assert_eq!(Trace::from_yaml(&t.to_yaml()).unwrap(), t);
    assert!(
        t.to_yaml().contains("skipped:\n  undecodable:\n"),
        "{}",
        t.to_yaml()
    );
}

/// A missing file, a directory, an empty file or one that is no capture:
/// one clear error naming the file, exit status 2, no trace.
#[test]
fn a_missing_or_non_capture_file_is_a_clear_error() {
    let out = out_dir("nocap");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("empty.pcap"), b"").unwrap();
    std::fs::write(out.join("text.pcapng"), b"no capture here").unwrap();
    for (name, why) in [
        (
            "missing.pcapng",
            "cannot be read: No such file or directory",
        ),
        ("", "cannot be read: Is a directory"),
        (
            "empty.pcap",
            "not a capture (neither pcapng nor pcap: the file starts with nothing: it is empty)",
        ),
        (
            "text.pcapng",
            "not a capture (neither pcapng nor pcap: the file starts with 6e6f2063)",
        ),
    ] {
        let p = out.join(name);
        // (`hoplab report DIR` reads a run's directory.)
        for cmd in ["trace", "report"]
            .into_iter()
            .filter(|c| *c == "trace" || !name.is_empty())
        {
            let o = hoplab().arg(cmd).arg(&p).output().unwrap();
            assert_eq!(o.status.code(), Some(2), "{cmd} {name}");
            assert!(o.stdout.is_empty(), "{cmd} {name}");
            let err = String::from_utf8_lossy(&o.stderr);
            let want = format!("{}: {why}", p.display());
            assert!(
                err.starts_with("error: ") && err.contains(&want),
                "{cmd} {name}: {err}"
            );
            assert_eq!(
                err.matches("No such file").count(),
                usize::from(name.starts_with("missing")),
                "{err}"
            );
        }
    }
    // The exit statuses are in the help.
    for cmd in ["trace", "report"] {
        let o = hoplab().arg(cmd).arg("--help").output().unwrap();
        let help = String::from_utf8_lossy(&o.stdout);
        assert!(
            help.contains("Exit status: 0") && help.contains("3, "),
            "{help}"
        );
    }
}
